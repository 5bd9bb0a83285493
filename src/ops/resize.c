/* Spatial resampling of [N, C, H, W] tensors with exactly PyTorch's
 * F.interpolate index/weight arithmetic (size given, no scale factors):
 * bilinear (align_corners true/false), nearest and nearest-exact.
 *
 * Both axes are separable, so each call builds one index/weight table per
 * axis. Forward: every output row blends two horizontally interpolated input
 * rows (cached while consecutive output rows reuse them), vectorised along W.
 * Backward is the transposed map written as a gather: each input row sums its
 * contributing gradient rows (vertical pass, vectorised), then each input
 * column sums its contributing columns. Every input element is written by one
 * thread in a fixed order, so gradients are bitwise reproducible. */
#include <math.h>
#include <omp.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "segc/ops.h"
#include "segc/profile.h"

#define VW 8 /* floats per AVX2 vector; tables are padded to a multiple */
#define STREAM_MIN_BYTES ((size_t)16 << 20) /* outputs this large bypass the caches */

typedef struct {
    int64_t in, out, out_pad;
    int ntaps;           /* 2 for linear, 1 for nearest */
    int32_t *i0, *i1;    /* per output index (padded entries repeat the last) */
    float *w0, *w1;
    int32_t *base;       /* per VW-output block: first input index it reads */
    int32_t *rel0, *rel1; /* i0/i1 - base, valid when fits[block] */
    uint8_t *fits;       /* every tap of the block lies in [base, base + VW) */
    int32_t *bptr, *bidx; /* transpose, CSR over input indices: output index, weight */
    float *bw;
    /* the transpose again as dense bands for VW input indices at a time:
     * block q covers inputs [q*VW, q*VW+VW), reads outputs [bs[q], bs[q]+bl[q])
     * with weights bm[bo[q] + l*VW + j] (zero where output l skips input j) */
    int32_t *bs, *bl;
    int64_t *bo;
    float *bm;
} axis_tab;

static axis_tab *axis_alloc(segc_ctx *ctx, int64_t in, int64_t out, int ntaps) {
    axis_tab *t = segc_arena_calloc(&ctx->arena, sizeof *t);
    t->in = in;
    t->out = out;
    t->out_pad = (out + VW - 1) / VW * VW;
    t->ntaps = ntaps;
    size_t np = (size_t)t->out_pad;
    t->i0 = segc_arena_alloc(&ctx->arena, np * sizeof(int32_t));
    t->i1 = segc_arena_alloc(&ctx->arena, np * sizeof(int32_t));
    t->w0 = segc_arena_alloc(&ctx->arena, np * sizeof(float));
    t->w1 = segc_arena_alloc(&ctx->arena, np * sizeof(float));
    return t;
}

/* Pads the tables, derives the vector fast-path info and the CSR transpose. */
static void axis_finish(segc_ctx *ctx, axis_tab *t) {
    for (int64_t o = t->out; o < t->out_pad; o++) {
        t->i0[o] = t->i0[t->out - 1];
        t->i1[o] = t->i1[t->out - 1];
        t->w0[o] = t->w1[o] = 0.0f;
    }
    int64_t nb = t->out_pad / VW;
    t->base = segc_arena_alloc(&ctx->arena, (size_t)nb * sizeof(int32_t));
    t->fits = segc_arena_alloc(&ctx->arena, (size_t)nb);
    t->rel0 = segc_arena_alloc(&ctx->arena, (size_t)t->out_pad * sizeof(int32_t));
    t->rel1 = segc_arena_alloc(&ctx->arena, (size_t)t->out_pad * sizeof(int32_t));
    for (int64_t b = 0; b < nb; b++) {
        int32_t lo = t->i0[b * VW], hi = lo;
        for (int k = 0; k < VW; k++) {
            int32_t a = t->i0[b * VW + k], c = t->i1[b * VW + k];
            lo = a < lo ? a : lo;
            hi = (a > hi ? a : hi) > c ? (a > hi ? a : hi) : c;
        }
        t->base[b] = lo;
        t->fits[b] = hi - lo < VW;
        for (int k = 0; k < VW; k++) {
            t->rel0[b * VW + k] = t->i0[b * VW + k] - lo;
            t->rel1[b * VW + k] = t->i1[b * VW + k] - lo;
        }
    }
    int64_t ne = t->out * t->ntaps;
    t->bptr = segc_arena_calloc(&ctx->arena, (size_t)(t->in + 1) * sizeof(int32_t));
    t->bidx = segc_arena_alloc(&ctx->arena, (size_t)(ne ? ne : 1) * sizeof(int32_t));
    t->bw = segc_arena_alloc(&ctx->arena, (size_t)(ne ? ne : 1) * sizeof(float));
    for (int64_t o = 0; o < t->out; o++) {
        t->bptr[t->i0[o] + 1]++;
        if (t->ntaps == 2) t->bptr[t->i1[o] + 1]++;
    }
    for (int64_t i = 0; i < t->in; i++) t->bptr[i + 1] += t->bptr[i];
    int32_t *fill = segc_arena_alloc(&ctx->arena, (size_t)(t->in ? t->in : 1) * sizeof(int32_t));
    memcpy(fill, t->bptr, (size_t)t->in * sizeof(int32_t));
    for (int64_t o = 0; o < t->out; o++) { /* ascending output order: a fixed summation order */
        int32_t k = fill[t->i0[o]]++;
        t->bidx[k] = (int32_t)o;
        t->bw[k] = t->w0[o];
        if (t->ntaps == 2) {
            k = fill[t->i1[o]]++;
            t->bidx[k] = (int32_t)o;
            t->bw[k] = t->w1[o];
        }
    }
    int64_t nb_in = t->in / VW, total = 0;
    t->bs = segc_arena_alloc(&ctx->arena, (size_t)(nb_in + 1) * sizeof(int32_t));
    t->bl = segc_arena_alloc(&ctx->arena, (size_t)(nb_in + 1) * sizeof(int32_t));
    t->bo = segc_arena_alloc(&ctx->arena, (size_t)(nb_in + 1) * sizeof(int64_t));
    for (int64_t q = 0; q < nb_in; q++) {
        int32_t lo = INT32_MAX, hi = -1;
        for (int64_t i = q * VW; i < q * VW + VW; i++)
            if (t->bptr[i + 1] > t->bptr[i]) {
                lo = t->bidx[t->bptr[i]] < lo ? t->bidx[t->bptr[i]] : lo;
                hi = t->bidx[t->bptr[i + 1] - 1] > hi ? t->bidx[t->bptr[i + 1] - 1] : hi;
            }
        t->bs[q] = hi < 0 ? 0 : lo;
        t->bl[q] = hi < 0 ? 0 : hi - lo + 1;
        t->bo[q] = total;
        total += (int64_t)t->bl[q] * VW;
    }
    t->bm = segc_arena_calloc(&ctx->arena, (size_t)(total ? total : 1) * sizeof(float));
    for (int64_t q = 0; q < nb_in; q++)
        for (int64_t j = 0; j < VW; j++) {
            int64_t i = q * VW + j;
            for (int32_t k = t->bptr[i]; k < t->bptr[i + 1]; k++)
                t->bm[t->bo[q] + (int64_t)(t->bidx[k] - t->bs[q]) * VW + j] += t->bw[k];
        }
}

/* Horizontal part of the backward: g[c] += sum over the outputs reading input
 * column c of weight * t[output], in ascending output order. The vector path
 * runs each block's dense band (zero weights where an output skips a column;
 * they change no finite sum). */
static void hgather(const axis_tab *tw, const float *t, float *g) {
    int64_t c = 0;
#ifdef __AVX2__
    /* blocks two at a time: two independent add chains hide the add latency
     * while each block still sums in its own fixed order */
    int64_t nb = tw->in / VW, q = 0;
    for (; q + 2 <= nb; q += 2, c += 2 * VW) {
        const float *m0 = tw->bm + tw->bo[q], *t0 = t + tw->bs[q];
        const float *m1 = tw->bm + tw->bo[q + 1], *t1 = t + tw->bs[q + 1];
        int32_t n0 = tw->bl[q], n1 = tw->bl[q + 1], l = 0;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (; l < n0 && l < n1; l++) {
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_broadcast_ss(t0 + l), _mm256_loadu_ps(m0 + (int64_t)l * VW)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_broadcast_ss(t1 + l), _mm256_loadu_ps(m1 + (int64_t)l * VW)));
        }
        for (int32_t k = l; k < n0; k++)
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_broadcast_ss(t0 + k), _mm256_loadu_ps(m0 + (int64_t)k * VW)));
        for (int32_t k = l; k < n1; k++)
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_broadcast_ss(t1 + k), _mm256_loadu_ps(m1 + (int64_t)k * VW)));
        _mm256_storeu_ps(g + c, _mm256_add_ps(_mm256_loadu_ps(g + c), a0));
        _mm256_storeu_ps(g + c + VW, _mm256_add_ps(_mm256_loadu_ps(g + c + VW), a1));
    }
    for (; q < nb; q++, c += VW) {
        const float *m = tw->bm + tw->bo[q], *tp = t + tw->bs[q];
        __m256 acc = _mm256_setzero_ps();
        for (int32_t l = 0; l < tw->bl[q]; l++)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_broadcast_ss(tp + l), _mm256_loadu_ps(m + (int64_t)l * VW)));
        _mm256_storeu_ps(g + c, _mm256_add_ps(_mm256_loadu_ps(g + c), acc));
    }
#endif
    for (; c < tw->in; c++) {
        float acc = 0.0f;
        for (int32_t k = tw->bptr[c]; k < tw->bptr[c + 1]; k++) acc += t[tw->bidx[k]] * tw->bw[k];
        g[c] += acc;
    }
}

/* PyTorch upsample linear: area_pixel_compute_scale / _source_index and
 * guard_index_and_lambda, all in float. */
static axis_tab *linear_axis(segc_ctx *ctx, int64_t in, int64_t out, bool align_corners) {
    axis_tab *t = axis_alloc(ctx, in, out, 2);
    float scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f) : (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        if (in == out) {
            t->i0[o] = t->i1[o] = (int32_t)o;
            t->w0[o] = 1.0f;
            t->w1[o] = 0.0f;
            continue;
        }
        float src = align_corners ? scale * (float)o : scale * ((float)o + 0.5f) - 0.5f;
        if (!align_corners && src < 0) src = 0;
        int64_t i = (int64_t)floorf(src);
        if (i > in - 1) i = in - 1;
        float l = src - (float)i;
        l = l < 0 ? 0 : l > 1 ? 1 : l;
        t->i0[o] = (int32_t)i;
        t->i1[o] = (int32_t)(i + (i < in - 1));
        t->w0[o] = 1.0f - l;
        t->w1[o] = l;
    }
    axis_finish(ctx, t);
    return t;
}

/* PyTorch nearest_idx / nearest_exact_idx (the exact variant computes
 * (dst + 0.5) * scale in double before floorf, as the C++ does). */
static axis_tab *nearest_axis(segc_ctx *ctx, int64_t in, int64_t out, bool exact) {
    axis_tab *t = axis_alloc(ctx, in, out, 1);
    float scale = (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        int64_t i;
        if (exact) i = (int64_t)floorf((float)(((double)o + 0.5) * (double)scale));
        else if (out == in) i = o;
        else if (out == 2 * in) i = o >> 1;
        else i = (int64_t)floorf((float)o * scale);
        if (i > in - 1) i = in - 1;
        t->i0[o] = t->i1[o] = (int32_t)i;
        t->w0[o] = 1.0f;
        t->w1[o] = 0.0f;
    }
    axis_finish(ctx, t);
    return t;
}

/* ------------------------------------------------------------ row kernels */

/* f32 view of input row (bf16 rows converted into buf) */
static const float *row_f32(const void *plane, segc_dtype dt, int64_t w, int64_t r, float *buf) {
    if (dt == SEGC_F32) return (const float *)plane + r * w;
    const uint16_t *s = (const uint16_t *)plane + r * w;
    for (int64_t i = 0; i < w; i++) buf[i] = segc_bf16_to_f32(s[i]);
    return buf;
}

/* dst[o] = w0[o] * src[i0[o]] + w1[o] * src[i1[o]] for o < out_pad */
static void hinterp(const axis_tab *t, const float *src, float *dst) {
#ifdef __AVX2__
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t b = 0; b < t->out_pad / VW; b++) {
        int64_t o = b * VW;
        __m256 a, c;
        if (t->fits[b]) { /* the block reads at most VW consecutive inputs: one load, two in-register permutes */
            int64_t base = t->base[b], left = t->in - base;
            __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < VW ? left : VW)), lane);
            __m256 v = _mm256_maskload_ps(src + base, m);
            a = _mm256_permutevar8x32_ps(v, _mm256_loadu_si256((const __m256i *)(t->rel0 + o)));
            c = _mm256_permutevar8x32_ps(v, _mm256_loadu_si256((const __m256i *)(t->rel1 + o)));
        } else {
            a = _mm256_i32gather_ps(src, _mm256_loadu_si256((const __m256i *)(t->i0 + o)), 4);
            c = _mm256_i32gather_ps(src, _mm256_loadu_si256((const __m256i *)(t->i1 + o)), 4);
        }
        __m256 r = _mm256_add_ps(_mm256_mul_ps(a, _mm256_loadu_ps(t->w0 + o)), _mm256_mul_ps(c, _mm256_loadu_ps(t->w1 + o)));
        _mm256_storeu_ps(dst + o, r);
    }
#else
    for (int64_t o = 0; o < t->out_pad; o++) dst[o] = src[t->i0[o]] * t->w0[o] + src[t->i1[o]] * t->w1[o];
#endif
}


/* out row = wa * A + wb * B, stored as dt. stream: non-temporal stores, for
 * outputs far larger than the caches (the x4 logits upsample), where they
 * save the read-for-ownership of every output line. */
static void vblend(const float *A, const float *B, float wa, float wb, int64_t n, void *out, segc_dtype dt, bool stream) {
    int64_t i = 0;
    if (dt == SEGC_F32) {
        float *restrict d = out;
#ifdef __AVX2__
        if (stream) {
            __m256 va = _mm256_set1_ps(wa), vb = _mm256_set1_ps(wb);
            for (; i < n && ((uintptr_t)(d + i) & 31); i++) d[i] = A[i] * wa + B[i] * wb;
            for (; i + VW <= n; i += VW)
                _mm256_stream_ps(d + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(A + i), va),
                                                      _mm256_mul_ps(_mm256_loadu_ps(B + i), vb)));
        }
#endif
        for (; i < n; i++) d[i] = A[i] * wa + B[i] * wb;
        return;
    }
    uint16_t *d = out;
#ifdef __AVX2__
    __m256 va = _mm256_set1_ps(wa), vb = _mm256_set1_ps(wb);
    if (stream)
        for (; i < n && ((uintptr_t)(d + i) & 15); i++) d[i] = segc_f32_to_bf16(A[i] * wa + B[i] * wb);
    for (; i + VW <= n; i += VW) {
        __m256 r = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(A + i), va), _mm256_mul_ps(_mm256_loadu_ps(B + i), vb));
        if (stream) _mm_stream_si128((__m128i *)(d + i), segc_ew_bf16x8_pack(r));
        else _mm_storeu_si128((__m128i *)(d + i), segc_ew_bf16x8_pack(r));
    }
#endif
    for (; i < n; i++) d[i] = segc_f32_to_bf16(A[i] * wa + B[i] * wb);
}

/* Work split: (plane, row chunk) items, enough of them to keep every thread
 * busy when there are few planes. */
static int64_t row_chunks(int64_t planes, int64_t rows) {
    int64_t want = 4 * (int64_t)omp_get_max_threads(), c = planes >= want ? 1 : (want + planes - 1) / planes;
    return c > rows ? (rows > 0 ? rows : 1) : c;
}

/* ---------------------------------------------------------------- forward */

static void bilinear_forward(segc_ctx *ctx, const segc_tensor *x, segc_tensor *y, const axis_tab *th, const axis_tab *tw) {
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    size_t es = segc_dtype_size(x->dtype);
    int nthr = omp_get_max_threads();
    /* per thread: two horizontally interpolated rows + one converted input row */
    int64_t per = 2 * tw->out_pad + (iw + VW - 1) / VW * VW;
    float *scratch = segc_arena_alloc(&ctx->arena, (size_t)(nthr * per) * sizeof(float));
    int64_t nchunk = row_chunks(planes, oh), rows_per = (oh + nchunk - 1) / nchunk;
    bool stream = segc_nbytes(y) >= STREAM_MIN_BYTES;
#pragma omp parallel for schedule(static)
    for (int64_t it = 0; it < planes * nchunk; it++) {
        int64_t p = it / nchunk, r0 = it % nchunk * rows_per, r1 = r0 + rows_per < oh ? r0 + rows_per : oh;
        float *buf = scratch + omp_get_thread_num() * per, *rowA = buf, *rowB = buf + tw->out_pad, *cvt = rowB + tw->out_pad;
        const char *src = (const char *)x->data + p * ih * iw * (int64_t)es;
        char *dst = (char *)y->data + p * oh * ow * (int64_t)es;
        int64_t idA = -1, idB = -1;
        for (int64_t r = r0; r < r1; r++) {
            int64_t h0 = th->i0[r], h1 = th->i1[r];
            if (h0 == idB) { /* moving down: last row's second source is this row's first */
                float *t = rowA; rowA = rowB; rowB = t;
                int64_t ti = idA; idA = idB; idB = ti;
            }
            if (h0 != idA) { hinterp(tw, row_f32(src, x->dtype, iw, h0, cvt), rowA); idA = h0; }
            const float *B = rowA;
            if (h1 != h0) {
                if (h1 != idB) { hinterp(tw, row_f32(src, x->dtype, iw, h1, cvt), rowB); idB = h1; }
                B = rowB;
            }
            vblend(rowA, B, th->w0[r], th->w1[r], ow, dst + r * ow * (int64_t)es, y->dtype, stream);
        }
#ifdef __AVX2__
        if (stream) _mm_sfence(); /* streamed lines visible before the region ends */
#endif
    }
}

static void nearest_forward(const segc_tensor *x, segc_tensor *y, const axis_tab *th, const axis_tab *tw) {
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    size_t es = segc_dtype_size(x->dtype);
    int64_t nchunk = row_chunks(planes, oh), rows_per = (oh + nchunk - 1) / nchunk;
    const int32_t *ix = tw->i0;
#pragma omp parallel for schedule(static)
    for (int64_t it = 0; it < planes * nchunk; it++) {
        int64_t p = it / nchunk, r0 = it % nchunk * rows_per, r1 = r0 + rows_per < oh ? r0 + rows_per : oh;
        const char *src = (const char *)x->data + p * ih * iw * (int64_t)es;
        char *dst = (char *)y->data + p * oh * ow * (int64_t)es;
        for (int64_t r = r0; r < r1; r++) {
            char *d = dst + r * ow * (int64_t)es;
            if (r > r0 && th->i0[r] == th->i0[r - 1]) { /* same source row: copy the row just made */
                memcpy(d, d - ow * (int64_t)es, (size_t)ow * es);
                continue;
            }
            const char *s = src + th->i0[r] * iw * (int64_t)es;
            switch (es) {
            case 1: for (int64_t j = 0; j < ow; j++) d[j] = s[ix[j]]; break;
            case 2: for (int64_t j = 0; j < ow; j++) ((uint16_t *)d)[j] = ((const uint16_t *)s)[ix[j]]; break;
            case 4: for (int64_t j = 0; j < ow; j++) ((uint32_t *)d)[j] = ((const uint32_t *)s)[ix[j]]; break;
            default: for (int64_t j = 0; j < ow; j++) ((uint64_t *)d)[j] = ((const uint64_t *)s)[ix[j]]; break;
            }
        }
    }
}

/* --------------------------------------------------------------- backward */

typedef struct { const axis_tab *th, *tw; } resize_saved;

static void resize_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *y = nd->out;
    if (!x->requires_grad) return;
    const resize_saved *sv = nd->saved;
    const axis_tab *th = sv->th, *tw = sv->tw;
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    float *gx = segc_grad(ctx, x);
    const float *go = y->grad;
    int nthr = omp_get_max_threads();
    int64_t per = (ow + VW - 1) / VW * VW;
    float *scratch = segc_arena_alloc(&ctx->arena, (size_t)(nthr * per) * sizeof(float));
    int64_t nchunk = row_chunks(planes, ih), rows_per = (ih + nchunk - 1) / nchunk;
#pragma omp parallel for schedule(static)
    for (int64_t it = 0; it < planes * nchunk; it++) {
        int64_t p = it / nchunk, r0 = it % nchunk * rows_per, r1 = r0 + rows_per < ih ? r0 + rows_per : ih;
        float *restrict t = scratch + omp_get_thread_num() * per;
        const float *gp = go + p * oh * ow;
        for (int64_t r = r0; r < r1; r++) {
            int32_t k0 = th->bptr[r], k1 = th->bptr[r + 1];
            if (k0 == k1) continue; /* no output row reads this input row */
            /* vertical gather: t = sum of the weighted gradient rows that read row r */
            {
                const float *g = gp + (int64_t)th->bidx[k0] * ow;
                float w = th->bw[k0];
                for (int64_t j = 0; j < ow; j++) t[j] = g[j] * w;
            }
            for (int32_t k = k0 + 1; k < k1; k++) {
                const float *restrict g = gp + (int64_t)th->bidx[k] * ow;
                float w = th->bw[k];
                for (int64_t j = 0; j < ow; j++) t[j] += g[j] * w;
            }
            hgather(tw, t, gx + (p * ih + r) * iw);
        }
    }
}

/* ---------------------------------------------------------------- entries */

static bool resize_check(segc_ctx *ctx, const char *op, const segc_tensor *x, int out_h, int out_w, bool float_only) {
    if (!segc_check_ndim(ctx, op, "input", x, 4)) return false;
    if (float_only && !segc_check_float(ctx, op, "input", x)) return false;
    char b[96];
    if (out_h < 1 || out_w < 1 || x->shape[2] < 1 || x->shape[3] < 1) {
        segc_set_error(ctx, "%s: input %s to output %dx%d: expected input and output spatial sizes >= 1", op,
                       segc_shape_str(x, b, sizeof b), out_h, out_w);
        return false;
    }
    if (x->shape[2] > INT32_MAX || x->shape[3] > INT32_MAX) {
        segc_set_error(ctx, "%s: input %s: spatial sizes must fit in 32 bits", op, segc_shape_str(x, b, sizeof b));
        return false;
    }
    return true;
}

static segc_tensor *resize_out(segc_ctx *ctx, const segc_tensor *x, int out_h, int out_w) {
    return segc_tensor_new(ctx, x->dtype, 4, (const int64_t[]){x->shape[0], x->shape[1], out_h, out_w});
}

static void resize_record(segc_ctx *ctx, const char *op, segc_tensor *x, segc_tensor *y, const axis_tab *th,
                          const axis_tab *tw) {
    if ((x->dtype != SEGC_F32 && x->dtype != SEGC_BF16) || !segc_needs_grad(ctx, &x, 1)) return;
    resize_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    sv->th = th;
    sv->tw = tw;
    segc_record(ctx, op, resize_backward, y, &x, 1, sv);
}

segc_tensor *segc_resize_bilinear(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w, bool align_corners) {
    SEGC_PROF_OP(ctx, "resize_bilinear");
    if (!x) return NULL;
    if (!resize_check(ctx, "resize_bilinear", x, out_h, out_w, true)) return NULL;
    segc_tensor *y = resize_out(ctx, x, out_h, out_w);
    if (!y) return NULL;
    const axis_tab *th = linear_axis(ctx, x->shape[2], out_h, align_corners);
    const axis_tab *tw = linear_axis(ctx, x->shape[3], out_w, align_corners);
    if (segc_numel(y) > 0) bilinear_forward(ctx, x, y, th, tw);
    resize_record(ctx, "resize_bilinear", x, y, th, tw);
    return y;
}

static segc_tensor *nearest_impl(segc_ctx *ctx, const char *op, segc_tensor *x, int out_h, int out_w, bool exact) {
    SEGC_PROF_OP(ctx, op);
    if (!x) return NULL;
    if (!resize_check(ctx, op, x, out_h, out_w, false)) return NULL;
    segc_tensor *y = resize_out(ctx, x, out_h, out_w);
    if (!y) return NULL;
    const axis_tab *th = nearest_axis(ctx, x->shape[2], out_h, exact);
    const axis_tab *tw = nearest_axis(ctx, x->shape[3], out_w, exact);
    if (segc_numel(y) > 0) nearest_forward(x, y, th, tw);
    resize_record(ctx, op, x, y, th, tw);
    return y;
}

segc_tensor *segc_resize_nearest(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w) {
    return nearest_impl(ctx, "resize_nearest", x, out_h, out_w, false);
}

segc_tensor *segc_resize_nearest_exact(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w) {
    return nearest_impl(ctx, "resize_nearest_exact", x, out_h, out_w, true);
}
