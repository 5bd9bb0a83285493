/* softmax and log_softmax over any dim.
 *
 * x is viewed as [outer, D, inner] around the softmax dim. inner == 1 (last
 * dim) runs row by row over contiguous memory; otherwise a block of up to
 * IB neighbouring inner positions is processed together, stepping through
 * the D rows with stride inner, so every load is a contiguous vector and no
 * permuted copy is made (the channel dim of NCHW). Per (outer, inner)
 * position the row max m and log s, s = sum exp(x - m), are kept for
 * backward. f32 backward reads the f32 output; bf16 backward recomputes the
 * probabilities from x, m and log s in f32 rather than trusting the rounded
 * output (near-cancelling gradients would carry its 2^-9 error), except when
 * the upstream gradient itself is bf16 (ctx->bf16_grads), which carries an
 * error of that size already: then it reads the bf16 output, as PyTorch does. Sums are
 * taken in double (log s stays accurate when s is near 1). On AVX512-BF16
 * CPUs bf16 last-dim rows run the kernels of softmax_avx512bf16.c (f32 sums
 * over 32 lanes: the same results to float rounding). */
/* FP exception flags are never read: let GCC if-convert the selects in
 * segc_vexpf, which -ftrapping-math would keep as branches (unvectorised). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <omp.h>
#include <stdio.h>

#include "segc/cpu.h"
#include "segc/ops.h"
#include "segc/profile.h"
#include "softmax_kernels.h"

#define PAR_MIN 16384
#define IB 64    /* inner positions per block for a middle dim */
#define LANES 16 /* independent accumulators for contiguous row sums */

typedef struct {
    bool log;
    bool bf16k; /* bf16 rows through the AVX512-BF16 kernels */
    int64_t outer, D, inner;
    float *max, *lsum; /* [outer * inner]: row max and log(sum exp(x - max)) */
} sm_saved;

/* x row [off, off+n) as f32: the data itself for f32, converted into buf for bf16 */
static inline const float *row_f32(const segc_tensor *x, int64_t off, int64_t n, float *buf) {
    if (x->dtype == SEGC_F32) return segc_f32(x) + off;
    segc_ew_load_bf16(segc_bf16p(x) + off, buf, n);
    return buf;
}
static inline void store_row(segc_tensor *y, int64_t off, const float *v, int64_t n) {
    if (y->dtype == SEGC_F32) {
        if (segc_f32(y) + off != v) memcpy(segc_f32(y) + off, v, (size_t)n * sizeof(float));
    } else {
        segc_ew_store_bf16(v, segc_bf16p(y) + off, n);
    }
}

/* sum of v[0..n) in double with fixed lanes and a fixed pairwise finish */
static double lane_sum(const float *v, int64_t n) {
    double acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
#pragma omp simd
        for (int l = 0; l < LANES; l++) acc[l] += (double)v[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += (double)v[i];
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* ---------------------------------------------------------------- forward */

/* Last dim, one row. scratch: 2*D floats. */
static void row_forward(const sm_saved *sv, const segc_tensor *x, segc_tensor *y, float *scratch, int64_t r) {
    int64_t D = sv->D, off = r * D;
    float mx;
    const float *xr;
    if (sv->bf16k) {
        segc_softmax_row_fwd_bf16_avx512bf16(segc_bf16p(x) + off, segc_bf16p(y) + off, D, sv->log, scratch,
                                             &sv->max[r], &sv->lsum[r]);
        return;
    }
#ifdef __AVX2__
    if (x->dtype == SEGC_BF16 && D % 16 == 0) {   /* widen and take the max in one sweep */
        const uint16_t *xb = segc_bf16p(x) + off;
        __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
        for (int64_t j = 0; j < D; j += 16) {
            const __m256 v0 = segc_ew_bf16x8_load(xb + j), v1 = segc_ew_bf16x8_load(xb + j + 8);
            _mm256_storeu_ps(scratch + j, v0);
            _mm256_storeu_ps(scratch + j + 8, v1);
            m0 = _mm256_max_ps(v0, m0);   /* NaN in x propagates through exp either way */
            m1 = _mm256_max_ps(v1, m1);
        }
        float m[8];
        _mm256_storeu_ps(m, _mm256_max_ps(m0, m1));
        mx = m[0];
        for (int l = 1; l < 8; l++) mx = m[l] > mx ? m[l] : mx;
        xr = scratch;
    } else
#endif
    {
        xr = row_f32(x, off, D, scratch);
        float m[LANES];
        for (int l = 0; l < LANES; l++) m[l] = -INFINITY;
        int64_t i = 0;
        for (; i + LANES <= D; i += LANES)
#pragma omp simd
            for (int l = 0; l < LANES; l++) m[l] = xr[i + l] > m[l] ? xr[i + l] : m[l];
        for (int l = 0; i < D; i++, l++) m[l] = xr[i] > m[l] ? xr[i] : m[l];
        mx = m[0];
        for (int l = 1; l < LANES; l++) mx = m[l] > mx ? m[l] : mx;
    }
    if (mx == -INFINITY) mx = 0.0f; /* all -inf: exp(-inf) = 0, sum 0, outputs NaN/-inf as PyTorch */
    /* f32 works in the output row itself (it holds the exponentials, then the result) */
    float *e = y->dtype == SEGC_F32 ? segc_f32(y) + off : scratch + D;
#pragma omp simd
    for (int64_t j = 0; j < D; j++) e[j] = segc_vexpf(xr[j] - mx);
    double s = lane_sum(e, D);
    float ls = (float)log(s);
    sv->max[r] = mx;
    sv->lsum[r] = ls;
    if (sv->log) {
#pragma omp simd
        for (int64_t j = 0; j < D; j++) e[j] = (xr[j] - mx) - ls;
    } else {
        float inv = (float)(1.0 / s);
#ifdef __AVX2__
        if (y->dtype == SEGC_BF16 && D % 16 == 0) {   /* scale and narrow in one sweep */
            const __m256 vi = _mm256_set1_ps(inv);
            uint16_t *yb = segc_bf16p(y) + off;
            for (int64_t j = 0; j < D; j += 16)
                segc_ew_bf16x16_store(yb + j, _mm256_mul_ps(_mm256_loadu_ps(e + j), vi),
                                      _mm256_mul_ps(_mm256_loadu_ps(e + j + 8), vi));
            return;
        }
#endif
#pragma omp simd
        for (int64_t j = 0; j < D; j++) e[j] *= inv;
    }
    store_row(y, off, e, D);
}

/* Middle dim: positions [i0, i0+nb) of outer slice o. scratch: (D+1)*IB floats. */
static void block_forward(const sm_saved *sv, const segc_tensor *x, segc_tensor *y, float *scratch, int64_t o,
                          int64_t i0, int64_t nb) {
    int64_t D = sv->D, inner = sv->inner, base = o * D * inner + i0;
    bool keep_e_in_y = y->dtype == SEGC_F32 && !sv->log;
    float *xbuf = scratch, *e = scratch + IB; /* e: D rows of IB, for bf16 softmax */
    float mx[IB];
    double s[IB];
    for (int64_t i = 0; i < nb; i++) {
        mx[i] = -INFINITY;
        s[i] = 0.0;
    }
    for (int64_t d = 0; d < D; d++) {
        const float *xr = row_f32(x, base + d * inner, nb, xbuf);
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) mx[i] = xr[i] > mx[i] ? xr[i] : mx[i];
    }
    for (int64_t i = 0; i < nb; i++)
        if (mx[i] == -INFINITY) mx[i] = 0.0f;
    for (int64_t d = 0; d < D; d++) {
        int64_t off = base + d * inner;
        const float *xr = row_f32(x, off, nb, xbuf);
        float tmp[IB];
        float *er = keep_e_in_y ? segc_f32(y) + off : sv->log ? tmp : e + d * IB;
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) er[i] = segc_vexpf(xr[i] - mx[i]);
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) s[i] += (double)er[i];
    }
    float ls[IB], inv[IB];
    for (int64_t i = 0; i < nb; i++) {
        ls[i] = (float)log(s[i]);
        inv[i] = (float)(1.0 / s[i]);
        sv->max[o * inner + i0 + i] = mx[i];
        sv->lsum[o * inner + i0 + i] = ls[i];
    }
    for (int64_t d = 0; d < D; d++) {
        int64_t off = base + d * inner;
        float v[IB];
        if (sv->log) {
            const float *xr = row_f32(x, off, nb, xbuf);
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) v[i] = (xr[i] - mx[i]) - ls[i];
            store_row(y, off, v, nb);
        } else if (keep_e_in_y) {
            float *yr = segc_f32(y) + off;
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) yr[i] *= inv[i];
        } else {
            const float *er = e + d * IB;
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) v[i] = er[i] * inv[i];
            store_row(y, off, v, nb);
        }
    }
}

/* --------------------------------------------------------------- backward
 *   softmax:     gx = p * (g - sum_d g p)
 *   log_softmax: gx = g - p * sum_d g
 * The sums are accumulated in double. */

/* probabilities of n positions at off (one row, or one block row with per-position stats) */
static void probs(const sm_saved *sv, const segc_tensor *x, const segc_tensor *y, int64_t off, int64_t n,
                  const float *mx, const float *ls, bool per_pos, float *p) {
    if (x->dtype == SEGC_BF16) {
        const uint16_t *xv = segc_bf16p(x) + off;
        if (per_pos) {
#pragma omp simd
            for (int64_t i = 0; i < n; i++) p[i] = segc_vexpf((segc_bf16_to_f32(xv[i]) - mx[i]) - ls[i]);
        } else {
            float m = mx[0], l = ls[0];
#pragma omp simd
            for (int64_t i = 0; i < n; i++) p[i] = segc_vexpf((segc_bf16_to_f32(xv[i]) - m) - l);
        }
    } else if (sv->log) {
        const float *yv = segc_f32(y) + off;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) p[i] = segc_vexpf(yv[i]);
    } else {
        memcpy(p, segc_f32(y) + off, (size_t)n * sizeof(float));
    }
}

/* gx (+)= the gradient from p, g and the per-position sums dot. The sums are
 * split into f32 hi + lo: g - hi is exact where it cancels (Sterbenz) and an
 * fma keeps g - p*hi to one rounding, so f32 arithmetic stays accurate. */
static void grad_out(bool log, const float *g, const float *p, const double *dot, bool per_pos, float *gx, bool acc,
                     int64_t n) {
    float v[IB], hi[IB], lo[IB];
    float h0 = (float)dot[0], l0 = (float)(dot[0] - (double)h0);
    for (int64_t b = 0; b < n; b += IB) {
        int64_t m = n - b < IB ? n - b : IB;
        for (int64_t i = 0; i < m; i++) { /* hi/lo per position, or the row's pair repeated */
            hi[i] = per_pos ? (float)dot[b + i] : h0;
            lo[i] = per_pos ? (float)(dot[b + i] - (double)hi[i]) : l0;
        }
        const float *gb = g + b, *pb = p + b;
        if (log) {
#pragma omp simd
            for (int64_t i = 0; i < m; i++) v[i] = __builtin_fmaf(-pb[i], hi[i], gb[i]) - pb[i] * lo[i];
        } else {
#pragma omp simd
            for (int64_t i = 0; i < m; i++) v[i] = pb[i] * ((gb[i] - hi[i]) - lo[i]);
        }
        float *o = gx + b;
        if (acc) {
#pragma omp simd
            for (int64_t i = 0; i < m; i++) o[i] += v[i];
        } else {
            memcpy(o, v, (size_t)m * sizeof(float));
        }
    }
}

/* The upstream gradient (go, or bf16 go16) and the input's gradient (gx, or bf16 gx16): one of
 * each pair is set. bf16 rows are widened into scratch and the result rounded once. */
typedef struct {
    const float *go;
    const uint16_t *go16;
    float *gx;
    uint16_t *gx16;
    bool acc, stream;
    /* bf16 softmax with a bf16 upstream gradient: the probabilities are the bf16 output y, as
     * PyTorch reads them (their rounding is the size of the error g already carries), instead
     * of exponentials recomputed from x */
    bool from_y;
} sm_grads;

/* Last dim, one row. scratch: 3*D floats. */
static void row_backward(const sm_saved *sv, const segc_tensor *x, const segc_tensor *y, const sm_grads *gr,
                         float *scratch, int64_t r) {
    int64_t D = sv->D, off = r * D;
    if (sv->bf16k && !gr->go16 && !gr->gx16) {
        segc_softmax_row_bwd_bf16_avx512bf16(segc_bf16p(x) + off, sv->max[r], sv->lsum[r], sv->log, gr->go + off,
                                             gr->gx + off, gr->acc, gr->stream, scratch, D);
        return;
    }
    if (sv->bf16k && gr->go16 && gr->gx16) {
        segc_softmax_row_bwd_bf16g_avx512bf16(segc_bf16p(x) + off, gr->from_y ? segc_bf16p(y) + off : NULL, sv->max[r],
                                              sv->lsum[r], sv->log, gr->go16 + off, gr->gx16 + off, gr->acc, gr->stream,
                                              scratch, D);
        return;
    }
    const float *p = scratch;
    if (x->dtype == SEGC_F32 && !sv->log) p = segc_f32(y) + off;
    else if (gr->from_y) segc_ew_load_bf16(segc_bf16p(y) + off, scratch, D);
    else probs(sv, x, y, off, D, &sv->max[r], &sv->lsum[r], false, scratch);
    float *gbuf = scratch + D, *obuf = scratch + 2 * D;
    const float *g = gr->go16 ? (segc_ew_load_bf16(gr->go16 + off, gbuf, D), gbuf) : gr->go + off;
    double dot;
    if (sv->log) {
        dot = lane_sum(g, D);
    } else {
        double l16[LANES] = {0};
        int64_t d = 0;
        for (; d + LANES <= D; d += LANES)
#pragma omp simd
            for (int l = 0; l < LANES; l++) l16[l] += (double)(g[d + l] * p[d + l]);
        for (int l = 0; d < D; d++, l++) l16[l] += (double)(g[d] * p[d]);
        for (int w = LANES / 2; w > 0; w /= 2)
            for (int l = 0; l < w; l++) l16[l] += l16[l + w];
        dot = l16[0];
    }
    if (!gr->gx16) {
        grad_out(sv->log, g, p, &dot, false, gr->gx + off, gr->acc, D);
        return;
    }
    grad_out(sv->log, g, p, &dot, false, obuf, false, D);
    segc_ew_put_grad_bf16(obuf, gr->gx16 + off, D, !gr->acc);
}

/* Middle dim: positions [i0, i0+nb) of outer slice o. scratch: (2*D+1)*IB floats. */
static void block_backward(const sm_saved *sv, const segc_tensor *x, const segc_tensor *y, const sm_grads *gr,
                           float *pb, int64_t o, int64_t i0, int64_t nb) {
    int64_t D = sv->D, inner = sv->inner, base = o * D * inner + i0, st = o * inner + i0;
    float *gb = pb + D * IB, *ob = gb + D * IB;
    for (int64_t d = 0; d < D; d++) {
        if (gr->from_y) segc_ew_load_bf16(segc_bf16p(y) + base + d * inner, pb + d * IB, nb);
        else probs(sv, x, y, base + d * inner, nb, sv->max + st, sv->lsum + st, true, pb + d * IB);
    }
    if (gr->go16)
        for (int64_t d = 0; d < D; d++) segc_ew_load_bf16(gr->go16 + base + d * inner, gb + d * IB, nb);
    double dot[IB];
    for (int64_t i = 0; i < nb; i++) dot[i] = 0.0;
    for (int64_t d = 0; d < D; d++) {
        const float *g = gr->go16 ? gb + d * IB : gr->go + base + d * inner, *p = pb + d * IB;
        if (sv->log) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) dot[i] += (double)g[i];
        } else {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) dot[i] += (double)(g[i] * p[i]);
        }
    }
    for (int64_t d = 0; d < D; d++) {
        int64_t off = base + d * inner;
        const float *g = gr->go16 ? gb + d * IB : gr->go + off;
        if (!gr->gx16) {
            grad_out(sv->log, g, pb + d * IB, dot, true, gr->gx + off, gr->acc, nb);
        } else {
            grad_out(sv->log, g, pb + d * IB, dot, true, ob, false, nb);
            segc_ew_put_grad_bf16(ob, gr->gx16 + off, nb, !gr->acc);
        }
    }
}

static void softmax_backward(segc_ctx *ctx, segc_node *nd) {
    const sm_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *y = nd->out;
    bool fresh;
    sm_grads gr = {.go = y->grad, .go16 = y->grad_bf16};
    gr.gx16 = segc_grad_bf16_dst(ctx, x, &fresh);
    if (!gr.gx16) gr.gx = segc_ew_grad_dst(ctx, x, &fresh);
    gr.acc = !fresh;
    gr.from_y = gr.go16 && !sv->log;
    int64_t n = segc_numel(x);
    if (n == 0) return;
    int nt = omp_get_max_threads();
    bool rows = sv->inner == 1;
    size_t per = (size_t)(rows ? 3 * sv->D : (2 * sv->D + 1) * IB);
    float *scratch = segc_arena_alloc(&ctx->arena, (size_t)nt * per * sizeof(float));
    int64_t nib = rows ? 1 : (sv->inner + IB - 1) / IB, items = sv->outer * nib;
    /* a fresh gradient beyond the caches (4 MiB of bf16, 8 of f32) is streamed to memory by the
     * AVX512-BF16 rows */
    gr.stream = sv->bf16k && fresh && n >= ((int64_t)1 << 21);
#pragma omp parallel for schedule(static) if (n > PAR_MIN && items > 1)
    for (int64_t it = 0; it < items; it++) {
        float *sc = scratch + (size_t)omp_get_thread_num() * per;
        if (rows) {
            row_backward(sv, x, y, &gr, sc, it);
        } else {
            int64_t o = it / nib, i0 = (it % nib) * IB;
            block_backward(sv, x, y, &gr, sc, o, i0, sv->inner - i0 < IB ? sv->inner - i0 : IB);
        }
    }
    if (gr.stream && rows) {
#pragma omp parallel if (n > PAR_MIN && items > 1)
        segc_stream_fence();   /* each writer's non-temporal stores drain before gx is read */
    }
}

static segc_tensor *softmax_op(segc_ctx *ctx, const char *name, bool log, segc_tensor *x, int dim) {
    SEGC_PROF_OP(ctx, name);
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
    sv->bf16k = x->dtype == SEGC_BF16 && segc_cpu_isa() >= SEGC_ISA_AVX512_BF16;
    sv->outer = 1;
    sv->inner = 1;
    sv->D = x->ndim == 0 ? 1 : x->shape[d];
    for (int i = 0; i < x->ndim; i++) {
        if (i < d) sv->outer *= x->shape[i];
        if (i > d) sv->inner *= x->shape[i];
    }
    int64_t npos = sv->outer * sv->inner, n = segc_numel(x);
    sv->max = segc_arena_alloc(&ctx->arena, (size_t)npos * sizeof(float));
    sv->lsum = segc_arena_alloc(&ctx->arena, (size_t)npos * sizeof(float));
    if (n > 0) {
        int nt = omp_get_max_threads();
        bool rows = sv->inner == 1;
        size_t per = (size_t)(rows ? 2 * sv->D : (sv->D + 1) * IB);
        float *scratch = segc_arena_alloc(&ctx->arena, (size_t)nt * per * sizeof(float));
        int64_t nib = rows ? 1 : (sv->inner + IB - 1) / IB, items = sv->outer * nib;
#pragma omp parallel for schedule(static) if (n > PAR_MIN && items > 1)
        for (int64_t it = 0; it < items; it++) {
            float *sc = scratch + (size_t)omp_get_thread_num() * per;
            if (rows) {
                row_forward(sv, x, y, sc, it);
            } else {
                int64_t o = it / nib, i0 = (it % nib) * IB;
                block_forward(sv, x, y, sc, o, i0, sv->inner - i0 < IB ? sv->inner - i0 : IB);
            }
        }
    }
    if (!segc_check_finite_out(ctx, name, y)) return NULL;
    if (segc_needs_grad(ctx, &x, 1)) segc_node_reads_bf16_grad(segc_record(ctx, name, softmax_backward, y, &x, 1, sv));
    return y;
}

segc_tensor *segc_softmax(segc_ctx *ctx, segc_tensor *x, int dim) { return softmax_op(ctx, "softmax", false, x, dim); }
segc_tensor *segc_log_softmax(segc_ctx *ctx, segc_tensor *x, int dim) {
    return softmax_op(ctx, "log_softmax", true, x, dim);
}
