/* MLPerf's SSD loss as one fused op (ssd.h): smooth-L1 on the positives'
 * regressions, cross entropy on the positives and the hardest negatives,
 * normalised per image by its positives, mean over the batch. Images are
 * independent (one OpenMP iteration each) and their sums are combined in
 * order, so the result does not depend on the thread count. The negative
 * selection is a constant of the step (no gradient flows through the
 * ranking), as in PyTorch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "segc/ops.h"
#include "segc/profile.h"
#include "segc/ssd.h"

typedef struct ranked {
    float v;
    int i;
} ranked;

/* loss descending, then index ascending (a stable descending sort) */
static int by_loss_desc(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static int rank_negatives(const float *con, const int32_t *labels, int A, int neg_ratio, uint8_t *sel, ranked *r) {
    int pos = 0;
    for (int a = 0; a < A; a++) pos += labels[a] > 0;
    if (A <= 0) return 0;
    memset(sel, 0, (size_t)A);
    const int64_t want = (int64_t)neg_ratio * pos;
    const int n_neg = want < A ? (int)want : A;
    if (n_neg == 0) return 0;
    for (int a = 0; a < A; a++) r[a] = (ranked){labels[a] > 0 ? 0.f : con[a], a};
    qsort(r, (size_t)A, sizeof *r, by_loss_desc);
    for (int k = 0; k < n_neg; k++) sel[r[k].i] = 1;
    return n_neg;
}

int segc_ssd_hard_negatives(const float *con, const int32_t *labels, int n_anchors, int neg_ratio, uint8_t *sel) {
    ranked *r = malloc((size_t)(n_anchors > 0 ? n_anchors : 1) * sizeof *r);
    if (!r) return -1;
    int n = rank_negatives(con, labels, n_anchors, neg_ratio, sel, r);
    free(r);
    return n;
}

typedef struct ssd_loss_saved {
    int N, C, A;
    const float *loc, *cls, *gvec;
    const int32_t *glabel;
    float *lse;        /* [N, A] log-sum-exp of the class logits */
    uint8_t *mult;     /* [N, A] cross-entropy multiplicity: positive + selected negative (0, 1 or 2) */
    float *w;          /* [N] (positives > 0) / positives / N */
    float *scratch;    /* [N, A] */
} ssd_loss_saved;

static inline float smooth_l1(float d) {
    const float z = fabsf(d);
    return z < 1.f ? 0.5f * z * z : z - 0.5f;
}

static void ssd_loss_backward(segc_ctx *ctx, segc_node *nd) {
    const ssd_loss_saved *s = nd->saved;
    segc_tensor *ploc = nd->in[0], *plabel = nd->in[1];
    const float g = nd->out->grad[0];
    const int N = s->N, C = s->C, A = s->A;
    float *gl = ploc->requires_grad ? segc_grad(ctx, ploc) : NULL;
    float *gc = plabel->requires_grad ? segc_grad(ctx, plabel) : NULL;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float w = s->w[n] * g;
        if (w == 0.f) continue;
        const int32_t *lab = s->glabel + (int64_t)n * A;
        const uint8_t *mult = s->mult + (int64_t)n * A;
        if (gl)
            for (int k = 0; k < 4; k++) {
                const int64_t o = ((int64_t)n * 4 + k) * A;
                for (int a = 0; a < A; a++) {
                    if (lab[a] <= 0) continue;
                    const float d = s->loc[o + a] - s->gvec[o + a];
                    gl[o + a] += w * (d > 1.f ? 1.f : d < -1.f ? -1.f : d);
                }
            }
        if (gc) {
            /* the target class's p - 1 as minus the other classes' probabilities: no cancellation */
            const float *lse = s->lse + (int64_t)n * A;
            float *others = s->scratch + (int64_t)n * A;
            for (int a = 0; a < A; a++) others[a] = 0.f;
            for (int c = 0; c < C; c++) {
                const int64_t o = ((int64_t)n * C + c) * A;
                for (int a = 0; a < A; a++) {
                    if (!mult[a] || c == lab[a]) continue;
                    const float p = expf(s->cls[o + a] - lse[a]);
                    gc[o + a] += w * (float)mult[a] * p;
                    others[a] += p;
                }
            }
            for (int a = 0; a < A; a++)
                if (mult[a]) gc[((int64_t)n * C + lab[a]) * A + a] -= w * (float)mult[a] * others[a];
        }
    }
}

static bool check_shape3(segc_ctx *ctx, const char *what, const segc_tensor *t, int64_t d0, int64_t d1, int64_t d2) {
    char b[96];
    if (t->ndim != 3 || t->shape[0] != d0 || (d1 >= 0 && t->shape[1] != d1) || t->shape[2] != d2) {
        segc_set_error(ctx, "ssd_loss: %s: expected [%lld, %lld, %lld], found %s", what, (long long)d0,
                       (long long)d1, (long long)d2, segc_shape_str(t, b, sizeof b));
        return false;
    }
    return true;
}

segc_tensor *segc_ssd_loss(segc_ctx *ctx, segc_tensor *ploc, segc_tensor *plabel, segc_tensor *gvec,
                           segc_tensor *glabel, int neg_ratio) {
    static const char *op = "ssd_loss";
    SEGC_PROF_OP(ctx, op);
    if (!ploc || !plabel || !gvec || !glabel || ctx->has_err) return NULL;
    if (!segc_check_float(ctx, op, "ploc", ploc) || !segc_check_float(ctx, op, "plabel", plabel) ||
        !segc_check_dtype(ctx, op, "gvec", gvec, SEGC_F32) || !segc_check_dtype(ctx, op, "glabel", glabel, SEGC_I32))
        return NULL;
    char b[96];
    if (ploc->ndim != 3 || ploc->shape[1] != 4) {
        segc_set_error(ctx, "%s: ploc: expected [N, 4, A], found %s", op, segc_shape_str(ploc, b, sizeof b));
        return NULL;
    }
    const int N = (int)ploc->shape[0], A = (int)ploc->shape[2];
    if (!check_shape3(ctx, "plabel", plabel, N, -1, A) || !check_shape3(ctx, "gvec", gvec, N, 4, A)) return NULL;
    const int C = (int)plabel->shape[1];
    if (C < 2) {
        segc_set_error(ctx, "%s: plabel: expected >= 2 classes (background first), found %d", op, C);
        return NULL;
    }
    if (glabel->ndim != 2 || glabel->shape[0] != N || glabel->shape[1] != A) {
        segc_set_error(ctx, "%s: glabel: expected [%d, %d], found %s", op, N, A, segc_shape_str(glabel, b, sizeof b));
        return NULL;
    }
    if (neg_ratio < 0) {
        segc_set_error(ctx, "%s: neg_ratio must be >= 0, found %d", op, neg_ratio);
        return NULL;
    }
    const int32_t *lab = glabel->data;
    for (int64_t i = 0; i < (int64_t)N * A; i++)
        if (lab[i] < 0 || lab[i] >= C) {
            segc_set_error(ctx, "%s: glabel[%lld, %lld] = %d outside [0, %d)", op, (long long)(i / A),
                           (long long)(i % A), lab[i], C);
            return NULL;
        }
    ssd_loss_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
    const size_t NA = (size_t)N * (size_t)A;
    *s = (ssd_loss_saved){.N = N, .C = C, .A = A, .loc = segc_as_f32(ctx, ploc), .cls = segc_as_f32(ctx, plabel),
                          .gvec = segc_f32(gvec), .glabel = lab};
    s->lse = segc_arena_alloc(&ctx->arena, NA * sizeof(float) + 64);
    s->mult = segc_arena_alloc(&ctx->arena, NA + 64);
    s->w = segc_arena_alloc(&ctx->arena, (size_t)N * sizeof(float) + 64);
    double *img_loss = segc_arena_alloc(&ctx->arena, (size_t)N * sizeof(double) + 64);
    float *con = segc_arena_alloc(&ctx->arena, NA * sizeof(float) + 64);
    s->scratch = con;   /* free once the forward is done: the backward's per-anchor sums */
    ranked *rk = segc_arena_alloc(&ctx->arena, NA * sizeof(ranked) + 64);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const int32_t *ln = lab + (int64_t)n * A;
        float *lse = s->lse + (int64_t)n * A, *cn = con + (int64_t)n * A;
        uint8_t *mult = s->mult + (int64_t)n * A;
        const float *x = s->cls + (int64_t)n * C * A;
        /* log-sum-exp over classes, class-major so the inner loop is contiguous */
        for (int a = 0; a < A; a++) lse[a] = x[a];
        for (int c = 1; c < C; c++)
            for (int a = 0; a < A; a++) lse[a] = fmaxf(lse[a], x[(int64_t)c * A + a]);
        for (int a = 0; a < A; a++) cn[a] = 0.f;   /* sum of exp, then the CE */
        for (int c = 0; c < C; c++)
            for (int a = 0; a < A; a++) cn[a] += expf(x[(int64_t)c * A + a] - lse[a]);
        for (int a = 0; a < A; a++) {
            lse[a] += logf(cn[a]);
            cn[a] = lse[a] - x[(int64_t)ln[a] * A + a];
        }
        int pos = 0;
        double sl1 = 0, closs = 0;
        for (int a = 0; a < A; a++) pos += ln[a] > 0;
        for (int k = 0; k < 4; k++) {
            const int64_t o = ((int64_t)n * 4 + k) * A;
            for (int a = 0; a < A; a++)
                if (ln[a] > 0) sl1 += smooth_l1(s->loc[o + a] - s->gvec[o + a]);
        }
        rank_negatives(cn, ln, A, neg_ratio, mult, rk + (int64_t)n * A);
        for (int a = 0; a < A; a++) {
            mult[a] = (uint8_t)(mult[a] + (ln[a] > 0));
            if (mult[a]) closs += (double)mult[a] * cn[a];
        }
        s->w[n] = pos > 0 ? (float)(1.0 / ((double)pos * N)) : 0.f;
        img_loss[n] = pos > 0 ? (sl1 + closs) / pos : 0.0;
    }
    double total = 0;
    for (int n = 0; n < N; n++) total += img_loss[n];
    segc_tensor *out = segc_tensor_new(ctx, SEGC_F32, 0, NULL);
    if (!out) return NULL;
    segc_f32(out)[0] = (float)(total / (N > 0 ? N : 1));
    segc_tensor *ins[2] = {ploc, plabel};
    if (segc_needs_grad(ctx, ins, 2)) segc_record(ctx, op, ssd_loss_backward, out, ins, 2, s);
    if (!segc_check_finite_out(ctx, op, out)) return NULL;
    return out;
}
