/* Sharpness-aware minimisation (Composer's SAMOptimizer): on a SAM iteration
 * the trainer's gradient g at w moves the trainable weights to
 * w + g * rho / (||g|| + epsilon); the gradient computed there drives the
 * optimizer step, taken from the original weights (restored bitwise here,
 * where Composer subtracts the perturbation again). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "segc/optim.h"
#include "segc/recipes.h"

bool segc_sam_init(segc_sam *s, const segc_params *p, double rho, double epsilon, int64_t interval, char *err, size_t n) {
    memset(s, 0, sizeof *s);
    if (!(isfinite(rho) && rho > 0)) return segc_errorf(err, n, "recipe.sam.rho: expected a finite number > 0, found %g", rho);
    if (!(isfinite(epsilon) && epsilon >= 0))
        return segc_errorf(err, n, "recipe.sam.epsilon: expected a finite number >= 0, found %g", epsilon);
    if (interval < 1) return segc_errorf(err, n, "recipe.sam.interval: expected >= 1, found %lld", (long long)interval);
    s->backup = malloc((size_t)(p->total ? p->total : 1) * sizeof(float));
    if (!s->backup) return segc_errorf(err, n, "recipe.sam: out of memory for %lld values", (long long)p->total);
    s->rho = rho;
    s->epsilon = epsilon;
    s->interval = interval;
    return true;
}

bool segc_sam_due(const segc_sam *s, int64_t iter) { return s->backup && (iter + 1) % s->interval == 0; }

double segc_sam_perturb(segc_sam *s, segc_params *p) {
    double norm = segc_grad_norm(p);
    /* Composer: scale = rho / (grad_norm + epsilon) as an f32 tensor, e_w = grad * scale */
    const float scale = (float)s->rho / ((float)norm + (float)s->epsilon);
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        int64_t off = p->offset[i], len = segc_numel(p->t[i]);
        float *restrict w = p->data + off, *restrict b = s->backup + off;
        const float *restrict g = p->grad + off;
        memcpy(b, w, (size_t)len * sizeof(float));
        for (int64_t j = 0; j < len; j++) {
            float e = g[j] * scale;
            w[j] = w[j] + e;
        }
    }
    return norm;
}

void segc_sam_restore(segc_sam *s, segc_params *p) {
    for (int i = 0; i < p->n; i++)
        if (p->trainable[i])
            memcpy(p->data + p->offset[i], s->backup + p->offset[i], (size_t)segc_numel(p->t[i]) * sizeof(float));
}

void segc_sam_free(segc_sam *s) {
    free(s->backup);
    memset(s, 0, sizeof *s);
}
