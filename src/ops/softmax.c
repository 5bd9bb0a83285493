/* softmax and log_softmax over any dim.
 *
 * x is viewed as [outer, D, inner] around the softmax dim. inner == 1 (last
 * dim) runs row by row over contiguous memory; otherwise a block of up to
 * IB neighbouring inner positions is processed together, stepping through
 * the D rows with stride inner, so every load is a contiguous vector and no
 * permuted copy is made (the channel dim of NCHW). Per (outer, inner)
 * position the row max m and s = sum exp(x - m) are kept for backward. f32
 * backward reads the f32 output; bf16 backward recomputes the probabilities
 * from x, m and s in f32 rather than trusting the rounded output. */
#include <math.h>
#include <omp.h>
#include <stdio.h>

#include "segc/ops.h"

#define PAR_MIN 16384
#define IB 64 /* inner positions per block for a middle dim */

typedef struct {
    bool log;
    int64_t outer, D, inner;
    float *max, *lsum; /* [outer * inner]: row max and log(sum exp(x - max)) */
} sm_saved;

static inline float ld(const void *p, bool bf16, int64_t i) {
    return bf16 ? segc_ew_bf2f(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* max over one contiguous row with fixed lanes (max is exact: order is free) */
static float row_max(const void *x, bool bf16, int64_t D) {
    float m[16];
    for (int l = 0; l < 16; l++) m[l] = -INFINITY;
    int64_t i = 0;
    for (; i + 16 <= D; i += 16)
        for (int l = 0; l < 16; l++) {
            float v = ld(x, bf16, i + l);
            m[l] = v > m[l] ? v : m[l];
        }
    for (int l = 0; i < D; i++, l++) m[l] = ld(x, bf16, i) > m[l] ? ld(x, bf16, i) : m[l];
    float r = m[0];
    for (int l = 1; l < 16; l++) r = m[l] > r ? m[l] : r;
    return r;
}

/* Last dim: one row. e is scratch (D floats). */
static void row_forward(const sm_saved *sv, const void *x, void *y, bool bf16, float *e, int64_t row) {
    int64_t D = sv->D;
    float mx = row_max(x, bf16, D);
    if (mx == -INFINITY) mx = 0.0f; /* all -inf: keep exp finite (PyTorch yields NaN from inf - inf too) */
    double s[16] = {0}; /* double: log(sum) stays accurate when the sum is close to 1 */
    int64_t i = 0;
    for (; i + 16 <= D; i += 16)
#pragma omp simd
        for (int l = 0; l < 16; l++) {
            e[i + l] = segc_vexpf(ld(x, bf16, i + l) - mx);
            s[l] += (double)e[i + l];
        }
    for (int l = 0; i < D; i++, l++) {
        e[i] = segc_vexpf(ld(x, bf16, i) - mx);
        s[l] += (double)e[i];
    }
    for (int w = 8; w > 0; w /= 2)
        for (int l = 0; l < w; l++) s[l] += s[l + w];
    float ls = (float)log(s[0]), inv = (float)(1.0 / s[0]);
    sv->max[row] = mx;
    sv->lsum[row] = ls;
    if (sv->log) { /* (x - max) - log(sum), rounded like PyTorch's */
        if (bf16) {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) ((uint16_t *)y)[j] = segc_ew_f2bf((ld(x, true, j) - mx) - ls);
        } else {
#pragma omp simd
            for (int64_t j = 0; j < D; j++) ((float *)y)[j] = (((const float *)x)[j] - mx) - ls;
        }
    } else if (bf16) {
#pragma omp simd
        for (int64_t j = 0; j < D; j++) ((uint16_t *)y)[j] = segc_ew_f2bf(e[j] * inv);
    } else {
#pragma omp simd
        for (int64_t j = 0; j < D; j++) ((float *)y)[j] = e[j] * inv;
    }
}

/* Middle dim: positions [i0, i0+nb) of one outer slice. e is scratch (D*IB). */
static void block_forward(const sm_saved *sv, const void *x, void *y, bool bf16, float *e, int64_t o, int64_t i0,
                          int64_t nb) {
    int64_t D = sv->D, inner = sv->inner, base = o * D * inner + i0;
    float mx[IB];
    double s[IB];
    for (int64_t i = 0; i < nb; i++) {
        mx[i] = -INFINITY;
        s[i] = 0.0;
    }
    for (int64_t d = 0; d < D; d++)
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) {
            float v = ld(x, bf16, base + d * inner + i);
            mx[i] = v > mx[i] ? v : mx[i];
        }
    for (int64_t i = 0; i < nb; i++)
        if (mx[i] == -INFINITY) mx[i] = 0.0f;
    for (int64_t d = 0; d < D; d++) {
        float *ed = e + d * IB;
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) {
            ed[i] = segc_vexpf(ld(x, bf16, base + d * inner + i) - mx[i]);
            s[i] += (double)ed[i];
        }
    }
    float ls[IB], inv[IB];
    for (int64_t i = 0; i < nb; i++) {
        ls[i] = (float)log(s[i]);
        sv->max[o * inner + i0 + i] = mx[i];
        sv->lsum[o * inner + i0 + i] = ls[i];
        inv[i] = (float)(1.0 / s[i]);
    }
    for (int64_t d = 0; d < D; d++) {
        int64_t off = base + d * inner;
        const float *ed = e + d * IB;
        if (sv->log) {
            if (bf16) {
#pragma omp simd
                for (int64_t i = 0; i < nb; i++) ((uint16_t *)y)[off + i] = segc_ew_f2bf((ld(x, true, off + i) - mx[i]) - ls[i]);
            } else {
#pragma omp simd
                for (int64_t i = 0; i < nb; i++) ((float *)y)[off + i] = (((const float *)x)[off + i] - mx[i]) - ls[i];
            }
        } else if (bf16) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) ((uint16_t *)y)[off + i] = segc_ew_f2bf(ed[i] * inv[i]);
        } else {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) ((float *)y)[off + i] = ed[i] * inv[i];
        }
    }
}

/* Backward for positions [i0, i0+nb) of outer slice o (inner == 1: one row,
 * i0 = 0, nb = 1 and the loop over d is the contiguous one).
 *   softmax:     gx = p * (g - sum_d g p)
 *   log_softmax: gx = g - p * sum_d g
 * p is the f32 output (softmax, f32), exp of it (log_softmax, f32), or
 * recomputed from x (bf16); held in scratch pb [D * nb]. */
static void block_backward(const sm_saved *sv, const segc_tensor *x, const segc_tensor *y, const float *go, float *gx,
                           bool acc, float *pb, int64_t o, int64_t i0, int64_t nb) {
    int64_t D = sv->D, inner = sv->inner, base = o * D * inner + i0, st = o * inner + i0;
    bool bf16 = x->dtype == SEGC_BF16;
    /* probabilities into pb[d * nb + i] */
    for (int64_t d = 0; d < D; d++) {
        int64_t off = base + d * inner;
        float *p = pb + d * nb;
        if (bf16) {
            const uint16_t *xv = segc_bf16p(x);
#pragma omp simd
            for (int64_t i = 0; i < nb; i++)
                p[i] = segc_vexpf((segc_ew_bf2f(xv[off + i]) - sv->max[st + i]) - sv->lsum[st + i]);
        } else if (sv->log) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) p[i] = segc_vexpf(segc_f32(y)[off + i]);
        } else {
            memcpy(p, segc_f32(y) + off, (size_t)nb * sizeof(float));
        }
    }
    /* per-position dot (softmax) or gradient sum (log_softmax), in double */
    double dot[IB];
    for (int64_t i = 0; i < nb; i++) dot[i] = 0.0;
    if (inner == 1) { /* contiguous row: fixed lanes */
        double l16[16] = {0};
        int64_t d = 0;
        for (; d + 16 <= D; d += 16)
#pragma omp simd
            for (int l = 0; l < 16; l++) l16[l] += sv->log ? (double)go[base + d + l] : (double)(go[base + d + l] * pb[d + l]);
        for (int l = 0; d < D; d++, l++) l16[l] += sv->log ? (double)go[base + d] : (double)(go[base + d] * pb[d]);
        for (int w = 8; w > 0; w /= 2)
            for (int l = 0; l < w; l++) l16[l] += l16[l + w];
        dot[0] = l16[0];
    } else {
        for (int64_t d = 0; d < D; d++) {
            const float *g = go + base + d * inner, *p = pb + d * nb;
            if (sv->log) {
#pragma omp simd
                for (int64_t i = 0; i < nb; i++) dot[i] += (double)g[i];
            } else {
#pragma omp simd
                for (int64_t i = 0; i < nb; i++) dot[i] += (double)(g[i] * p[i]);
            }
        }
    }
    for (int64_t d = 0; d < D; d++) {
        int64_t off = base + d * inner;
        const float *g = go + off, *p = pb + d * nb;
        float *out = gx + off;
        float v[IB];
        /* the differences cancel where g is near the dot product: take them in double */
        if (sv->log) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) v[i] = (float)((double)g[i] - (double)p[i] * dot[i]);
        } else {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) v[i] = (float)((double)p[i] * ((double)g[i] - dot[i]));
        }
        if (acc) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) out[i] += v[i];
        } else {
            memcpy(out, v, (size_t)nb * sizeof(float));
        }
    }
}

static void softmax_backward(segc_ctx *ctx, segc_node *nd) {
    const sm_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *y = nd->out;
    bool fresh;
    float *gx = segc_ew_grad_dst(ctx, x, &fresh);
    const float *go = y->grad;
    int64_t nib = sv->inner == 1 ? 1 : (sv->inner + IB - 1) / IB, items = sv->outer * nib;
    int64_t width = sv->inner == 1 ? 1 : IB;
    int nt = omp_get_max_threads();
    float *scratch = segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)(sv->D * width) * sizeof(float));
    int64_t n = segc_numel(x);
#pragma omp parallel for schedule(static) if (n > PAR_MIN && items > 1)
    for (int64_t it = 0; it < items; it++) {
        float *pb = scratch + (size_t)omp_get_thread_num() * (size_t)(sv->D * width);
        int64_t o = it / nib, i0 = (it % nib) * IB;
        int64_t nb = sv->inner == 1 ? 1 : (sv->inner - i0 < IB ? sv->inner - i0 : IB);
        if (sv->inner == 1) i0 = 0;
        block_backward(sv, x, y, go, gx, !fresh, pb, o, i0, nb);
    }
}

static segc_tensor *softmax_op(segc_ctx *ctx, const char *name, bool log, segc_tensor *x, int dim) {
    if (!x) return NULL;
    if (!segc_check_float(ctx, name, "x", x)) return NULL;
    char sb[96];
    int nd = x->ndim == 0 ? 1 : x->ndim; /* a 0-dim tensor acts as one element along dim 0 or -1 */
    int d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= nd) {
        segc_set_error(ctx, "%s: dim %d out of range for %d-D input %s (expected %d..%d)", name, dim, x->ndim,
                       segc_shape_str(x, sb, sizeof sb), -nd, nd - 1);
        return NULL;
    }
    segc_tensor *y = segc_tensor_like(ctx, x);
    sm_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    sv->log = log;
    sv->outer = 1;
    sv->inner = 1;
    sv->D = x->ndim == 0 ? 1 : x->shape[d];
    for (int i = 0; i < x->ndim; i++) {
        if (i < d) sv->outer *= x->shape[i];
        if (i > d) sv->inner *= x->shape[i];
    }
    int64_t npos = sv->outer * sv->inner;
    sv->max = segc_arena_alloc(&ctx->arena, (size_t)npos * sizeof(float));
    sv->lsum = segc_arena_alloc(&ctx->arena, (size_t)npos * sizeof(float));
    bool bf16 = x->dtype == SEGC_BF16;
    int64_t n = segc_numel(x);
    if (n > 0) {
        int nt = omp_get_max_threads();
        int64_t width = sv->inner == 1 ? 1 : IB;
        float *scratch = segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)(sv->D * width) * sizeof(float));
        size_t es = segc_dtype_size(x->dtype);
        if (sv->inner == 1) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN && sv->outer > 1)
            for (int64_t r = 0; r < sv->outer; r++) {
                float *e = scratch + (size_t)omp_get_thread_num() * (size_t)sv->D;
                /* f32 softmax can hold exp values in the output itself */
                if (!bf16 && !log) e = segc_f32(y) + r * sv->D;
                row_forward(sv, (const char *)x->data + (size_t)(r * sv->D) * es, (char *)y->data + (size_t)(r * sv->D) * es,
                            bf16, e, r);
            }
        } else {
            int64_t nib = (sv->inner + IB - 1) / IB, items = sv->outer * nib;
#pragma omp parallel for schedule(static) if (n > PAR_MIN && items > 1)
            for (int64_t it = 0; it < items; it++) {
                float *e = scratch + (size_t)omp_get_thread_num() * (size_t)(sv->D * IB);
                int64_t o = it / nib, i0 = (it % nib) * IB;
                block_forward(sv, x->data, y->data, bf16, e, o, i0, sv->inner - i0 < IB ? sv->inner - i0 : IB);
            }
        }
    }
    if (!segc_check_finite_out(ctx, name, y)) return NULL;
    if (segc_needs_grad(ctx, &x, 1)) segc_record(ctx, name, softmax_backward, y, &x, 1, sv);
    return y;
}

segc_tensor *segc_softmax(segc_ctx *ctx, segc_tensor *x, int dim) { return softmax_op(ctx, "softmax", false, x, dim); }
segc_tensor *segc_log_softmax(segc_ctx *ctx, segc_tensor *x, int dim) {
    return softmax_op(ctx, "log_softmax", true, x, dim);
}
