/* segc ops: elementwise arithmetic, activations, reductions, softmax, dropout
 * (see ops.h for conventions).
 *
 * Float ops take f32 or bf16 (all float inputs of one call share the dtype),
 * compute in f32 and return that dtype; gradients are f32. Results are
 * bitwise identical for any thread count (reductions run in an order fixed by
 * the shapes alone). */
#ifndef SEGC_OPS_ELEMENTWISE_H
#define SEGC_OPS_ELEMENTWISE_H
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "segc/core.h"

/* ---- broadcasting binary ops ----
 * NumPy/PyTorch broadcasting over up to 5 dims: shapes are right-aligned and
 * each pair of sizes must be equal or contain a 1. Gradients are summed over
 * the broadcast dims. Same-shape, per-channel ([N,C,H,W] op [1,C,1,1] or
 * [C,1,1]) and last-dim ([..., C] op [C]) patterns run as flat vector loops. */
segc_tensor *segc_add(segc_ctx *ctx, segc_tensor *a, segc_tensor *b);
segc_tensor *segc_sub(segc_ctx *ctx, segc_tensor *a, segc_tensor *b);
segc_tensor *segc_mul(segc_ctx *ctx, segc_tensor *a, segc_tensor *b);
segc_tensor *segc_div(segc_ctx *ctx, segc_tensor *a, segc_tensor *b);
segc_tensor *segc_add_scalar(segc_ctx *ctx, segc_tensor *x, float s);
segc_tensor *segc_mul_scalar(segc_ctx *ctx, segc_tensor *x, float s);

/* ---- activations ---- */
segc_tensor *segc_relu(segc_ctx *ctx, segc_tensor *x);
/* relu overwriting x's storage (PyTorch's inplace=True), for an x that nothing else reads
 * afterwards, forward or backward (a fresh batch_norm or add output): the step keeps one
 * activation instead of two. Backward masks with the output (y > 0 exactly where x > 0). */
segc_tensor *segc_relu_(segc_ctx *ctx, segc_tensor *x);
segc_tensor *segc_leaky_relu(segc_ctx *ctx, segc_tensor *x, float slope);
/* exact GELU, x * Phi(x) (PyTorch approximate='none') */
segc_tensor *segc_gelu(segc_ctx *ctx, segc_tensor *x);
segc_tensor *segc_sigmoid(segc_ctx *ctx, segc_tensor *x);
segc_tensor *segc_tanh(segc_ctx *ctx, segc_tensor *x);

/* ---- reductions ----
 * Sum / mean over dims (negative dims count from the end, each at most once).
 * n_dims == 0 reduces every element: a 0-dim tensor (one element), or all
 * ones with keepdim. Accumulation is in double. */
segc_tensor *segc_sum(segc_ctx *ctx, segc_tensor *x, const int *dims, int n_dims, bool keepdim);
segc_tensor *segc_mean(segc_ctx *ctx, segc_tensor *x, const int *dims, int n_dims, bool keepdim);

/* ---- softmax over any dim (negative counts from the end) ----
 * A middle dim (the channel dim of NCHW) is handled in place, no permute. */
segc_tensor *segc_softmax(segc_ctx *ctx, segc_tensor *x, int dim);
segc_tensor *segc_log_softmax(segc_ctx *ctx, segc_tensor *x, int dim);

/* ---- stochastic regularisation (active only when ctx->training) ----
 * dropout: zeroes each element with probability p, scales kept ones by
 * 1/(1-p); p == 1 gives zeros. Masks come from the counter-based ctx->rng,
 * so they do not depend on the thread count. When not training or p == 0 it
 * returns x itself. p must be in [0, 1]. */
segc_tensor *segc_dropout(segc_ctx *ctx, segc_tensor *x, float p);
/* drop_path (stochastic depth, timm semantics): one keep/drop draw per sample
 * along dim 0; kept samples are scaled by 1/(1-p). Identity (x itself) when
 * not training or p == 0. */
segc_tensor *segc_drop_path(segc_ctx *ctx, segc_tensor *x, float p);
/* segc_drop_path in place: the result shares x's storage (x is overwritten), so x's value must
 * not be needed afterwards, by the caller or by the backward of the op that made x (a linear's
 * output, as in a transformer block's residual branch). Saves one [N, ...] tensor per call. */
segc_tensor *segc_drop_path_(segc_ctx *ctx, segc_tensor *x, float p);

/* ---- copies and constants ---- */
/* differentiable copy (any dtype; gradient flows for f32/bf16) */
segc_tensor *segc_copy(segc_ctx *ctx, segc_tensor *x);
/* new tensor of any dtype filled with value (converted to the dtype); no grad */
segc_tensor *segc_fill(segc_ctx *ctx, segc_dtype dtype, int ndim, const int64_t *shape, float value);

/* =====================================================================
 * Kernel building blocks shared by the elementwise op files. They do no
 * validation and record nothing on the tape.
 * ===================================================================== */

/* exp(x) for f32 in plain C that compilers vectorise (no libm call): range
 * reduction by ln2 and a degree-6 polynomial, <= 2 ulp; overflow gives inf,
 * underflow 0 (with gradual denormals), NaN stays NaN. GCC vectorises loops
 * calling it only without -ftrapping-math (its clamps become branches):
 * put #pragma GCC optimize("no-trapping-math") at the top of the file. */
static inline float segc_vexpf(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer held in the mantissa */
    float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
    float nf = xc * 1.44269504089f + magic;
    uint32_t nb, mb;
    memcpy(&nb, &nf, 4);
    memcpy(&mb, &magic, 4);
    int32_t n = (int32_t)(nb - mb);
    nf -= magic;
    float r = __builtin_fmaf(nf, -0.693145751953125f, xc); /* ln2 split so n*hi is exact */
    r = __builtin_fmaf(nf, -1.428606765330187e-06f, r);
    float p = 1.381460763e-03f;
    p = __builtin_fmaf(p, r, 8.368710394e-03f);
    p = __builtin_fmaf(p, r, 4.166838748e-02f);
    p = __builtin_fmaf(p, r, 1.666652068e-01f);
    p = __builtin_fmaf(p, r, 4.999999345e-01f);
    p = __builtin_fmaf(p * r, r, r) + 1.0f;
    /* 2^n as two normal factors so n down to -150 underflows gradually */
    int32_t n1 = n >> 1, n2 = n - n1;
    uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    return p * s1 * s2;
}

/* bf16 <-> f32 blocks, with the rounding of segc_f32_to_bf16 */
#ifdef __AVX2__
/* 8 lanes at a time, the same bits as the scalar pair: widening is a shift;
 * narrowing rounds in 32-bit lanes, then packs (packus works within 128-bit
 * halves, so a 64-bit permute restores the order) */
static inline __m256 segc_ew_bf16x8_load(const uint16_t *src) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)src)), 16));
}
static inline __m256i segc_ew_f2bf_lanes(__m256 v) {   /* bf16 bits in the low half of each 32-bit lane */
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(rounded, quiet, nan);
}
static inline __m128i segc_ew_bf16x8_pack(__m256 v) {   /* 8 bf16 values, in order */
    const __m256i l = segc_ew_f2bf_lanes(v);
    return _mm_packus_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1));
}
static inline void segc_ew_bf16x16_store(uint16_t *dst, __m256 v0, __m256 v1) {
    const __m256i p = _mm256_packus_epi32(segc_ew_f2bf_lanes(v0), segc_ew_f2bf_lanes(v1));
    _mm256_storeu_si256((__m256i *)dst, _mm256_permute4x64_epi64(p, 0xD8));
}
#endif
static inline void segc_ew_load_bf16(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
#ifdef __AVX2__
    const int64_t nv = n - n % 8;
    for (; i < nv; i += 8) _mm256_storeu_ps(dst + i, segc_ew_bf16x8_load(src + i));
#endif
    for (; i < n; i++) dst[i] = segc_bf16_to_f32(src[i]);
}
static inline void segc_ew_store_bf16(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
#ifdef __AVX2__
    const int64_t nv = n - n % 16;
    for (; i < nv; i += 16) segc_ew_bf16x16_store(dst + i, _mm256_loadu_ps(src + i), _mm256_loadu_ps(src + i + 8));
#endif
    for (; i < n; i++) dst[i] = segc_f32_to_bf16(src[i]);
}

/* f32 results v[0..n) into a bf16 gradient g (ctx->bf16_grads): stored when fresh, else added to
 * the values g holds first; rounded once. v is overwritten. Serial: for rows inside a parallel
 * loop; segc_ew_put_grad_bf16_n does a whole tensor with threads. */
static inline void segc_ew_put_grad_bf16(float *v, uint16_t *g, int64_t n, bool fresh) {
    if (!fresh) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) v[i] += segc_bf16_to_f32(g[i]);
    }
    segc_ew_store_bf16(v, g, n);
}
void segc_ew_put_grad_bf16_n(float *v, uint16_t *g, int64_t n, bool fresh);

/* Gradient buffer a backward kernel will write every element of. When the
 * tensor has none yet (and is not a parameter) it is allocated without
 * zeroing and *fresh is set: the kernel then stores instead of adding. */
static inline float *segc_ew_grad_dst(segc_ctx *ctx, segc_tensor *t, bool *fresh) {
    *fresh = !t->grad && !t->grad_bf16 && !t->is_param;   /* a bf16 gradient: segc_grad widens it */
    if (*fresh) {
        t->grad = segc_grad_buffer(ctx, segc_numel(t), false);
        return t->grad;
    }
    return segc_grad(ctx, t);
}

/* Pass-through gradient (add, copy, ...): when t has no gradient yet and is
 * not a parameter, t's gradient becomes the output's gradient buffer g itself
 * rather than a copy. Safe because the tape never reads an output's gradient
 * again once the node that produced it has run; later accumulation into t's
 * gradient may then change that buffer. Returns false when the caller must
 * add g into the gradient itself: also when g is the caller's read-only
 * seed of segc_backward_from, and under retain_grads (each kept non-leaf
 * gradient must stay its own). */
static inline bool segc_ew_grad_alias(const segc_ctx *ctx, segc_tensor *t, const float *g) {
    if (t->grad || t->grad_bf16 || t->is_param || g == ctx->borrowed_grad || ctx->retain_grads) return false;
    t->grad = (float *)g;
    return true;
}

/* Iteration plan over a broadcast output: up to three operands (slot 0 the
 * full, contiguous output shape; slots 1 and 2 broadcast against it). Size-1
 * dims are dropped and neighbouring dims merged when every operand allows,
 * so the common patterns collapse to one or two dims. strides are in
 * elements, 0 along broadcast dims. */
typedef struct segc_bcast {
    int nd;                               /* >= 1 */
    int64_t shape[SEGC_MAX_DIMS];
    int64_t stride[3][SEGC_MAX_DIMS];
    int64_t numel;
} segc_bcast;

/* Broadcast shape of a and b; false when incompatible. */
bool segc_bcast_shape(int nda, const int64_t *sa, int ndb, const int64_t *sb, int *nd_out, int64_t *out);
/* Plan for out_shape with operands a and b (each broadcastable to it). */
void segc_bcast_plan(segc_bcast *p, int nd_out, const int64_t *out_shape, int nda, const int64_t *sa, int ndb,
                     const int64_t *sb);

/* dst (+)= scale * sum over the dims where dst broadcasts of v, where
 * v = src (w_mode NONE), src * w (MUL) or src / w (DIV); then, if div_sq is
 * given, divided by div_sq^2. src, w, dst and div_sq are f32 and use the
 * plan strides of slots src_slot, w_slot, dst_slot, dst_slot. Sums are taken
 * in double in a fixed order. dst is stored (not added to) unless accumulate. */
enum { SEGC_W_NONE = 0, SEGC_W_MUL, SEGC_W_DIV };
typedef struct segc_bcast_reduce_args {
    const float *src;
    const uint16_t *src16;   /* instead of src: a bf16 source (a bf16 gradient), widened as read */
    int src_slot;
    const float *w;
    int w_slot, w_mode;
    float *dst;
    int dst_slot;
    bool accumulate;
    double scale;
    const float *div_sq;
} segc_bcast_reduce_args;
void segc_bcast_reduce(segc_ctx *ctx, const segc_bcast *p, const segc_bcast_reduce_args *r);

#endif
