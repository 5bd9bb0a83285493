/* Exponential moving average of the parameter store (Composer's EMA):
 * every update_interval iterations ema = ema * s + (1 - s) * weights with
 * s = 0.5^(update_interval / half_life), over every tensor (weights and
 * buffers such as BN statistics: Composer averages buffers too). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/recipes.h"

double segc_ema_smoothing(int64_t half_life, int64_t update_interval) {
    return pow(0.5, (double)update_interval / (double)half_life);
}

bool segc_ema_init(segc_ema *e, const segc_params *p, int64_t half_life, int64_t update_interval, char *err, size_t n) {
    memset(e, 0, sizeof *e);
    if (half_life < 1) return segc_errorf(err, n, "recipe.ema.half_life: expected >= 1 iteration, found %lld", (long long)half_life);
    if (update_interval < 1)
        return segc_errorf(err, n, "recipe.ema.update_interval: expected >= 1 iteration, found %lld", (long long)update_interval);
    size_t bytes = (size_t)(p->total ? p->total : 16) * sizeof(float);
    e->w = aligned_alloc(SEGC_ALIGN, (bytes + SEGC_ALIGN - 1) / SEGC_ALIGN * SEGC_ALIGN);
    if (!e->w) return segc_errorf(err, n, "recipe.ema: out of memory for %lld values", (long long)p->total);
    memcpy(e->w, p->data, (size_t)p->total * sizeof(float));
    e->total = p->total;
    e->smoothing = segc_ema_smoothing(half_life, update_interval);
    e->interval = update_interval;
    return true;
}

void segc_ema_apply(segc_ema *e, const segc_params *p) {
    /* torch: ema.mul_(s).add_(w, alpha=1-s), scalars rounded to f32; its vectorised
     * add with alpha is a fused multiply-add, so fmaf agrees with it bitwise */
    const float s = (float)e->smoothing, a = (float)(1.0 - e->smoothing);
    float *restrict w = e->w;
    const float *restrict x = p->data;
    int64_t n = e->total;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float t = w[i] * s;
        w[i] = fmaf(a, x[i], t);
    }
}

void segc_ema_update(segc_ema *e, const segc_params *p, int64_t iters) {
    if (e->w && iters > 0 && iters % e->interval == 0) segc_ema_apply(e, p);
}

void segc_ema_swap(segc_ema *e, segc_params *p) {
    if (!e->w) return;
    float *restrict w = e->w, *restrict x = p->data;
    int64_t n = e->total;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float t = w[i];
        w[i] = x[i];
        x[i] = t;
    }
}

void segc_ema_save(const segc_ema *e, const segc_params *p, segc_st_writer *w, const char *prefix) {
    if (!e->w) return;
    char name[512];
    for (int i = 0; i < p->n; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, p->t[i]->name);
        segc_st_writer_add(w, name, SEGC_F32, p->t[i]->ndim, p->t[i]->shape, e->w + p->offset[i]);
    }
}

bool segc_ema_load(segc_ema *e, const segc_params *p, const segc_st_file *f, const char *prefix, bool *found,
                   char *err, size_t n) {
    *found = false;
    size_t pl = strlen(prefix);
    int present = 0;
    for (int k = 0; k < segc_st_count(f); k++) present += !strncmp(segc_st_at(f, k)->name, prefix, pl);
    if (!present) return true;
    char name[512];
    for (int i = 0; i < p->n; i++) {
        const segc_tensor *t = p->t[i];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        const segc_st_entry *s = segc_st_get(f, name);
        if (!s) return segc_errorf(err, n, "%s: no EMA tensor '%s'", segc_st_path(f), name);
        bool ok = s->dtype_known && s->dtype == SEGC_F32 && s->ndim == t->ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = s->shape[d] == t->shape[d];
        if (!ok) return segc_errorf(err, n, "%s: EMA tensor '%s' is not f32 of its parameter's shape", segc_st_path(f), name);
    }
    if (present != p->n)
        return segc_errorf(err, n, "%s: %d EMA tensors, the model has %d", segc_st_path(f), present, p->n);
    for (int i = 0; i < p->n; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, p->t[i]->name);
        const segc_st_entry *s = segc_st_get(f, name);
        memcpy(e->w + p->offset[i], s->data, s->nbytes);
    }
    *found = true;
    return true;
}

void segc_ema_free(segc_ema *e) {
    free(e->w);
    memset(e, 0, sizeof *e);
}
