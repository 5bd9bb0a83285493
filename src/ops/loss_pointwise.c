/* Elementwise losses with PyTorch semantics: binary cross entropy with
 * logits (weight, pos_weight) and smooth L1. Sums are taken per fixed chunk
 * in double and combined in order. */
#include <math.h>

#include "normloss_util.h"
#include "segc/ops.h"
#include "segc/profile.h"

#define PW_PAR_MIN 32768

typedef struct {
    segc_loss_reduction red;
    const float *w, *pw;   /* expanded to the input shape, or NULL */
    float beta;            /* smooth L1 */
} pw_saved;

/* common checks: float inputs of one shape, a known reduction */
static bool pw_check(segc_ctx *ctx, const char *op, const char *an, const segc_tensor *x, const char *bn,
                     const segc_tensor *y, segc_loss_reduction red) {
    char a[96], b[96];
    if (!segc_check_float(ctx, op, an, x) || !segc_check_float(ctx, op, bn, y)) return false;
    if (!segc_same_shape(x, y)) {
        segc_set_error(ctx, "%s: %s must have the shape of %s %s, found %s", op, bn, an, segc_shape_str(x, a, sizeof a),
                       segc_shape_str(y, b, sizeof b));
        return false;
    }
    if ((unsigned)red > SEGC_LOSS_NONE) { segc_set_error(ctx, "%s: unknown reduction %d", op, (int)red); return false; }
    return true;
}

/* upstream gradient of element i given the reduction */
static inline float pw_gout(const float *gout, segc_loss_reduction red, int64_t i, float inv_n) {
    return red == SEGC_LOSS_NONE ? gout[i] : red == SEGC_LOSS_MEAN ? gout[0] * inv_n : gout[0];
}

/* the output tensor, then per-element losses written into it (none) or summed */
static segc_tensor *pw_reduce(segc_ctx *ctx, const segc_tensor *x, segc_loss_reduction red, const float *elem) {
    int64_t n = segc_numel(x);
    if (red == SEGC_LOSS_NONE) return segc_tensor_wrap(ctx, SEGC_F32, x->ndim, x->shape, (void *)elem);
    const int64_t K = nl_chunks(n, 4096, 64);
    double *part = segc_arena_alloc(&ctx->arena, (size_t)K * sizeof(double));
#pragma omp parallel for schedule(static) if (n >= PW_PAR_MIN)
    for (int64_t k = 0; k < K; k++) {
        double s = 0;
        for (int64_t i = nl_chunk_begin(n, K, k); i < nl_chunk_begin(n, K, k + 1); i++) s += elem[i];
        part[k] = s;
    }
    double s = 0;
    for (int64_t k = 0; k < K; k++) s += part[k];
    segc_tensor *out = segc_tensor_new(ctx, SEGC_F32, 0, NULL);
    /* PyTorch's mean over no element is NaN */
    segc_f32(out)[0] = (float)(red == SEGC_LOSS_MEAN ? (n ? s / (double)n : NAN) : s);
    return out;
}

/* ---------------- binary cross entropy with logits ---------------- */
/* softplus(-x) = log(1 + e^-x), computed without overflow */
static inline float softplus_neg(float x) { return log1pf(expf(-fabsf(x))) + (x < 0 ? -x : 0.f); }

static void bce_backward(segc_ctx *ctx, segc_node *nd) {
    const pw_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *y = nd->in[1];
    const int64_t n = segc_numel(x);
    const float *gout = nd->out->grad, inv_n = n ? 1.f / (float)n : 0.f;
    const float *xv = segc_as_f32(ctx, x), *yv = segc_as_f32(ctx, y);
    float *gx = x->requires_grad ? segc_grad(ctx, x) : NULL, *gy = y->requires_grad ? segc_grad(ctx, y) : NULL;
#pragma omp parallel for schedule(static) if (n >= PW_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float g = pw_gout(gout, sv->red, i, inv_n) * (sv->w ? sv->w[i] : 1.f);
        const float pw = sv->pw ? sv->pw[i] : 1.f, lw = 1.f + (pw - 1.f) * yv[i];
        /* sigmoid(-x) */
        const float sn = xv[i] >= 0 ? expf(-xv[i]) / (1.f + expf(-xv[i])) : 1.f / (1.f + expf(xv[i]));
        if (gx) gx[i] += g * ((1.f - yv[i]) - lw * sn);
        if (gy) gy[i] += g * ((pw - 1.f) * softplus_neg(xv[i]) - xv[i]);
    }
}

segc_tensor *segc_bce_with_logits(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, segc_tensor *weight,
                                  segc_tensor *pos_weight, segc_loss_reduction reduction) {
    static const char *op = "bce_with_logits";
    SEGC_PROF_OP(ctx, op);
    if (!logits || !target) return NULL;
    if (!pw_check(ctx, op, "logits", logits, "target", target, reduction)) return NULL;
    if ((weight && !segc_check_float(ctx, op, "weight", weight)) ||
        (pos_weight && !segc_check_float(ctx, op, "pos_weight", pos_weight)))
        return NULL;
    pw_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (pw_saved){.red = reduction};
    if (weight && !(sv->w = nl_expand_f32(ctx, op, "weight", weight, logits->ndim, logits->shape))) return NULL;
    if (pos_weight && !(sv->pw = nl_expand_f32(ctx, op, "pos_weight", pos_weight, logits->ndim, logits->shape))) return NULL;
    const int64_t n = segc_numel(logits);
    const float *xv = segc_as_f32(ctx, logits), *yv = segc_as_f32(ctx, target);
    float *elem = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(n) * sizeof(float));
#pragma omp parallel for schedule(static) if (n >= PW_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float lw = 1.f + ((sv->pw ? sv->pw[i] : 1.f) - 1.f) * yv[i];
        elem[i] = ((1.f - yv[i]) * xv[i] + lw * softplus_neg(xv[i])) * (sv->w ? sv->w[i] : 1.f);
    }
    segc_tensor *out = pw_reduce(ctx, logits, reduction, elem);
    segc_tensor *ins[2] = {logits, target};
    if (segc_needs_grad(ctx, ins, 2)) segc_record(ctx, op, bce_backward, out, ins, 2, sv);
    if (!segc_check_finite_out(ctx, op, out)) return NULL;
    return out;
}

/* ---------------- smooth L1 ---------------- */
static void smooth_l1_backward(segc_ctx *ctx, segc_node *nd) {
    const pw_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *y = nd->in[1];
    const int64_t n = segc_numel(x);
    const float *gout = nd->out->grad, inv_n = n ? 1.f / (float)n : 0.f, beta = sv->beta;
    const float *xv = segc_as_f32(ctx, x), *yv = segc_as_f32(ctx, y);
    float *gx = x->requires_grad ? segc_grad(ctx, x) : NULL, *gy = y->requires_grad ? segc_grad(ctx, y) : NULL;
#pragma omp parallel for schedule(static) if (n >= PW_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float d = xv[i] - yv[i];
        /* beta 0 is L1: gradient sign(d), 0 at d == 0 */
        const float dl = d > beta ? 1.f : d < -beta ? -1.f : beta > 0 ? d / beta : 0.f;
        const float g = pw_gout(gout, sv->red, i, inv_n) * dl;
        if (gx) gx[i] += g;
        if (gy) gy[i] -= g;
    }
}

segc_tensor *segc_smooth_l1(segc_ctx *ctx, segc_tensor *pred, segc_tensor *target, float beta,
                            segc_loss_reduction reduction) {
    static const char *op = "smooth_l1";
    SEGC_PROF_OP(ctx, op);
    if (!pred || !target) return NULL;
    if (!pw_check(ctx, op, "pred", pred, "target", target, reduction)) return NULL;
    if (!(beta >= 0.f)) { segc_set_error(ctx, "%s: beta must be >= 0, found %g", op, (double)beta); return NULL; }
    pw_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (pw_saved){.red = reduction, .beta = beta};
    const int64_t n = segc_numel(pred);
    const float *xv = segc_as_f32(ctx, pred), *yv = segc_as_f32(ctx, target);
    float *elem = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(n) * sizeof(float));
#pragma omp parallel for simd schedule(static) if (n >= PW_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float d = fabsf(xv[i] - yv[i]);
        elem[i] = d < beta ? 0.5f * d * d / beta : d - 0.5f * beta;
    }
    segc_tensor *out = pw_reduce(ctx, pred, reduction, elem);
    segc_tensor *ins[2] = {pred, target};
    if (segc_needs_grad(ctx, ins, 2)) segc_record(ctx, op, smooth_l1_backward, out, ins, 2, sv);
    if (!segc_check_finite_out(ctx, op, out)) return NULL;
    return out;
}
