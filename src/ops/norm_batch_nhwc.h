/* Internal to the batch-norm ops (norm_batch.c, norm_batch_nhwc.c): the state the forward saves
 * for backward and refill, the per-channel constants both layouts share, and the channels-last
 * (NHWC) kernels that norm_batch.c calls when x->nhwc. */
#ifndef SEGC_NORM_BATCH_NHWC_H
#define SEGC_NORM_BATCH_NHWC_H

#include <math.h>

#include "normloss_util.h"

#define BN_PAR_MIN 32768   /* values below which a pass runs on one thread */

typedef struct {
    int64_t N, C, S;
    double M;             /* values per channel the statistics cover (all processes with sum_hook) */
    bool batch_stats;     /* normalised with batch statistics: gradient flows through them */
    bool sync;            /* SyncBatchNorm: the backward sums go through ctx->sum_hook too */
    float *mean, *mean_lo, *rstd;   /* per channel, the statistics used (mean + mean_lo: ~48 bits) */
    float *ka, *kb;       /* batch_norm_relu: the forward's scale and shift, to recompute the relu mask */
} bn_saved;

static inline float round_bf16(float v) { return segc_bf16_to_f32(segc_f32_to_bf16(v)); }

/* channel constants from its mean and biased variance: the output is fmaf((x - m) - ml, ka, kb);
 * one definition, so both layouts normalise with the same bits */
static inline void bn_channel_consts(double mean, double var, float eps, float gc, float bc, float *m, float *ml,
                                     float *rs, float *ka, float *kb) {
    const double rsd = 1.0 / sqrt(var + eps);
    *m = (float)mean;
    *ml = (float)(mean - (double)*m);
    *rs = (float)rsd;
    *ka = (float)(rsd * gc);
    *kb = bc;
}

/* a channel's mean and biased variance: SyncBatchNorm's global ones (gsum), the batch's from its
 * sums s1, s2 of x - shift (batch), else the running ones; var_unbiased[c] is set for the first two
 * (the running-stat update). One definition for both layouts. */
static inline void bn_channel_stats(int64_t c, int64_t C, const double *gsum, bool batch, double s1, double s2,
                                    float shift, double M, const float *rm, const float *rv, float *var_unbiased,
                                    double *mean, double *var) {
    if (gsum) {
        *mean = gsum[c];
        *var = gsum[C + c];
    } else if (batch) {
        const double dm = s1 / M, v = s2 / M - dm * dm;
        *mean = shift + dm;
        *var = v > 0 ? v : 0;
    } else {
        *mean = rm[c];
        *var = rv[c];
        return;
    }
    var_unbiased[c] = (float)(*var * M / (M - 1));
}

/* SyncBatchNorm statistics of an NHWC x (as bn_sync_stats): out[c] = mean, out[C + c] = biased
 * variance over every process, *M = the global count; out holds 2C + 1 doubles */
void bn_nhwc_sync_stats(segc_ctx *ctx, const segc_tensor *x, int64_t C, double *out, double *M);
/* statistics (batch: from x; else running), sv's per-channel constants, and y (x's layout);
 * gsum: SyncBatchNorm's global mean/variance, or NULL; var_unbiased: for the running-stat update */
void bn_nhwc_forward(segc_ctx *ctx, const segc_tensor *x, segc_tensor *y, const segc_tensor *id, bn_saved *sv,
                     const float *g, const float *bt, const float *rm, const float *rv, const double *gsum, float eps,
                     float *var_unbiased);
/* bn_backward_dy for an NHWC x: dx (written when ow, else added to), dgamma and dbeta added to */
void bn_nhwc_backward_dy(segc_ctx *ctx, segc_node *nd, const float *dy, float *dx, int ow, float *dg, float *db);
/* batch_norm_relu's NHWC output again, bit for bit (segc_release_recompute) */
void bn_nhwc_relu_refill(segc_ctx *ctx, segc_node *nd);

#endif
