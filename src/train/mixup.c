/* MixUp for dense prediction (Composer's MixUp with interpolated loss):
 * m = min(z, 1 - z), z ~ Beta(alpha, alpha); images (1 - m) x + m x[perm];
 * loss (1 - m) L(y) + m L(y[perm]). The draws come from a Philox stream keyed
 * by the run's seed and the iteration, so a resumed run mixes identically. */
#include <math.h>
#include <string.h>

#include "segc/ops_elementwise.h"
#include "segc/recipes.h"

/* uniform in (0, 1): never exactly 0 (logs and powers below) */
static double uniform_open(segc_rng *r) {
    double u = segc_rng_uniform(r);
    return u > 0 ? u : 0x1p-25;
}

/* Marsaglia & Tsang (2000) for shape >= 1; shape < 1 via Gamma(a + 1) * U^(1/a) */
static double rng_gamma(segc_rng *r, double a) {
    if (a < 1) return rng_gamma(r, a + 1) * pow(uniform_open(r), 1.0 / a);
    const double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = segc_rng_normal(r), v = 1 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = uniform_open(r);
        if (u < 1 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1 - v + log(v))) return d * v;
    }
}

double segc_rng_beta(segc_rng *r, double a, double b) {
    double x = rng_gamma(r, a), y = rng_gamma(r, b);
    return x + y > 0 ? x / (x + y) : 0.5;
}

double segc_mixup_draw(uint64_t seed, int64_t iter, double alpha, int n, int *perm) {
    segc_rng r;
    /* one stream per iteration, apart from the training context's (dropout) stream */
    segc_rng_init(&r, seed ^ 0x6d69787570ull /* "mixup" */);
    r.offset = (uint64_t)iter << 24;
    double z = alpha > 0 ? segc_rng_beta(&r, alpha, alpha) : 0;
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(segc_rng_u32(&r) % (uint32_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return z < 1 - z ? z : 1 - z;
}

void segc_mixup_images(const float *x, float *out, int n, int64_t per, const int *perm, float m) {
    const float a = 1.0f - m;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (int64_t)i * per, *xp = x + (int64_t)perm[i] * per;
        float *o = out + (int64_t)i * per;
        for (int64_t j = 0; j < per; j++) {
            float t = a * xi[j];
            o[j] = t + m * xp[j];
        }
    }
}

void segc_mixup_permute(const void *y, void *out, int n, size_t bytes, const int *perm) {
    for (int i = 0; i < n; i++) memcpy((char *)out + (size_t)i * bytes, (const char *)y + (size_t)perm[i] * bytes, bytes);
}

segc_tensor *segc_mixup_loss(segc_ctx *ctx, segc_tensor *la, segc_tensor *lb, float m) {
    return segc_add(ctx, segc_mul_scalar(ctx, la, 1.0f - m), segc_mul_scalar(ctx, lb, m));
}
