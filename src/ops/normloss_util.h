/* Private helpers shared by the normalisation and loss kernels (src/ops/norm*.c,
 * src/ops/loss*.c): bf16 row loads and stores, a polynomial exp/log that
 * the compiler turns into vector code (libm's expf is never vectorised without
 * -ffast-math), gradient buffers that can be written instead of accumulated,
 * and fixed work chunking so reductions do not depend on the thread count. */
#ifndef SEGC_NORMLOSS_UTIL_H
#define SEGC_NORMLOSS_UTIL_H
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "segc/ops.h"

/* count clamped to >= 1, for allocation sizes and divisors of empty shapes */
static inline int64_t nl_max1(int64_t v) { return v > 0 ? v : 1; }

static inline float nl_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t nl_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* n values of a float tensor from element off as f32: the tensor's own memory
 * for f32, else converted into scratch */
static inline const float *nl_load(const segc_tensor *t, int64_t off, int64_t n, float *scratch) {
    if (t->dtype == SEGC_F32) return segc_f32(t) + off;
    segc_ew_load_bf16(segc_bf16p(t) + off, scratch, n);
    return scratch;
}
/* f32 destination for n values at off: the tensor's memory for f32, else
 * scratch (then nl_store converts) */
static inline float *nl_dst(segc_tensor *t, int64_t off, float *scratch) {
    return t->dtype == SEGC_F32 ? segc_f32(t) + off : scratch;
}
static inline void nl_store(segc_tensor *t, int64_t off, int64_t n, const float *src) {
    if (t->dtype == SEGC_BF16) segc_ew_store_bf16(src, segc_bf16p(t) + off, n);
}

/* gamma/beta-like parameter: NULL, or a float vector of length C */
static inline bool nl_check_vec(segc_ctx *ctx, const char *op, const char *what, const segc_tensor *t, int64_t C) {
    if (!t) return true;
    if (!segc_check_float(ctx, op, what, t)) return false;
    if (t->ndim == 1 && t->shape[0] == C) return true;
    char b[96];
    segc_set_error(ctx, "%s: %s must have shape [%lld], found %s", op, what, (long long)C, segc_shape_str(t, b, sizeof b));
    return false;
}

/* Small f32 parameter vector (gamma, class weights ...) as f32 in the arena;
 * NULL stays NULL. */
static inline const float *nl_param_f32(segc_ctx *ctx, const segc_tensor *t) {
    return t ? segc_as_f32(ctx, t) : NULL;
}

/* Gradient buffer for an op that fully overwrites it when nobody has
 * accumulated into it yet: skips the zero fill and the read of a += .
 * *overwrite tells the kernel whether to store (=) or accumulate (+=). */
/* Shifted first and second moments of a contiguous run x[off, off+count): adds sum(x - shift)
 * and sum((x - shift)^2) into *s1, *s2, in double, block by block (block floats at a time through
 * nl_load's scratch sc), so the order of the sums depends only on the shapes. Norm statistics
 * take shift = the first value of the group, which avoids cancellation when |mean| >> std. */
static inline void nl_shifted_sums(const segc_tensor *x, int64_t off, int64_t count, float shift, float *sc,
                                   int64_t block, double *s1, double *s2) {
    for (int64_t s0 = 0; s0 < count; s0 += block) {
        int64_t len = count - s0 < block ? count - s0 : block;
        const float *xp = nl_load(x, off + s0, len, sc);
        double p1 = 0, p2 = 0;
#pragma omp simd reduction(+ : p1, p2)
        for (int64_t i = 0; i < len; i++) {
            double d = (double)xp[i] - shift;
            p1 += d;
            p2 += d * d;
        }
        *s1 += p1;
        *s2 += p2;
    }
}

/* One block of the normalisation input gradient: d = dy*kd + ((x - m) - ml)*k1 + k0, stored (ow)
 * or accumulated. */
static inline void nl_dx_block(const float *xp, const float *dyp, float *d, int64_t len, float m, float ml, float kd,
                               float k1, float k0, int ow) {
    if (ow) {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) d[i] = fmaf(dyp[i], kd, fmaf((xp[i] - m) - ml, k1, k0));
    } else {
#pragma omp simd
        for (int64_t i = 0; i < len; i++) d[i] += fmaf(dyp[i], kd, fmaf((xp[i] - m) - ml, k1, k0));
    }
}

/* Normalisation input gradient over a contiguous run [off, off+count), block by block. */
static inline void nl_apply_dx(const segc_tensor *x, const float *dy, float *dx, int64_t off, int64_t count,
                               int64_t block, float *sc, float m, float ml, float kd, float k1, float k0, int ow) {
    for (int64_t s0 = 0; s0 < count; s0 += block) {
        int64_t len = count - s0 < block ? count - s0 : block;
        nl_dx_block(nl_load(x, off + s0, len, sc), dy + off + s0, dx + off + s0, len, m, ml, kd, k1, k0, ow);
    }
}

static inline float *nl_grad_buf(segc_ctx *ctx, segc_tensor *t, int *overwrite) {
    if (!t->grad && !t->grad_bf16 && !t->is_param) {   /* a bf16 gradient: segc_grad widens it */
        t->grad = segc_grad_buffer(ctx, segc_numel(t), false);
        *overwrite = 1;
    } else {
        segc_grad(ctx, t);
        *overwrite = 0;
    }
    return t->grad;
}

/* Fixed chunking: the work is cut into a number of chunks that depends only
 * on its size, each reduction is summed per chunk and the chunks are combined
 * in order, so results are bitwise identical for any thread count. */
static inline int64_t nl_chunks(int64_t items, int64_t min_per_chunk, int64_t max_chunks) {
    int64_t k = items / (min_per_chunk > 0 ? min_per_chunk : 1);
    if (k > max_chunks) k = max_chunks;
    return k < 1 ? 1 : k;
}
static inline int64_t nl_chunk_begin(int64_t items, int64_t chunks, int64_t k) { return items * k / chunks; }

/* e^x for x in about [-87, 88] (clamped), ~2 ulp: Cody-Waite reduction by
 * ln 2 and a degree-6 polynomial, written so loops over it vectorise. */
static inline float nl_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float k = __builtin_floorf(fmaf(x, 1.44269504088896341f, 0.5f));
    float r = fmaf(k, -0.693359375f, x);
    r = fmaf(k, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;
    return p * nl_bits_f32((uint32_t)((int32_t)k + 127) << 23);
}

/* natural log for positive normal x, ~1 ulp (mantissa in [sqrt(.5), sqrt(2))
 * and a degree-9 polynomial); vectorises like nl_expf. */
static inline float nl_logf(float x) {
    const uint32_t u = nl_f32_bits(x);
    float e = (float)((int32_t)(u >> 23) - 127);
    float m = nl_bits_f32((u & 0x007fffffu) | 0x3f800000u);
    const int big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e = big ? e + 1.0f : e;
    const float f = m - 1.0f, z = f * f;
    float y = 7.0376836292e-2f;
    y = fmaf(y, f, -1.1514610310e-1f);
    y = fmaf(y, f, 1.1676998740e-1f);
    y = fmaf(y, f, -1.2420140846e-1f);
    y = fmaf(y, f, 1.4249322787e-1f);
    y = fmaf(y, f, -1.6668057665e-1f);
    y = fmaf(y, f, 2.0000714765e-1f);
    y = fmaf(y, f, -2.4999993993e-1f);
    y = fmaf(y, f, 3.3333331174e-1f);
    y = y * f * z;
    y = fmaf(e, -2.12194440e-4f, y);
    y = fmaf(z, -0.5f, y);
    return fmaf(e, 0.693359375f, f + y);
}

/* log(1 + u) for u >= 0, accurate for small u: log(w) * u / (w - 1) with
 * w = 1 + u rounded cancels w's rounding error */
static inline float nl_log1pf(float u) {
    const float w = 1.0f + u;
    return w == 1.0f ? u : nl_logf(w) * (u / (w - 1.0f));
}

/* ---- softmax over the class rows of a block of pixels (cross entropy, dice) ----
 * z: C rows of len (<= NL_BW) pixels, row stride zs. Per pixel: mx = max_c z,
 * lz = log(sum_c exp(z_c - mx)), so softmax p_c = exp((z_c - mx) - lz) and
 * log p_c = (z_c - mx) - lz. Keeping mx and lz apart (instead of one rounded
 * log-sum-exp) keeps p accurate to a few ulp. The sum leaves out the max's own
 * exp(0) = 1 (the count of ties at the max stands in for it) so log1p keeps
 * the relative accuracy of small losses. With w, wz = sum_c w_c * (z_c - mx)
 * (w NULL: no wz). */
#define NL_BW 128
static inline void nl_block_lse(const float *z, int64_t zs, int64_t C, int64_t len, float *restrict mx,
                                float *restrict lz, const float *w, float *restrict wz) {
    float se[NL_BW], ties[NL_BW];
#pragma omp simd
    for (int64_t p = 0; p < len; p++) mx[p] = z[p];
    for (int64_t c = 1; c < C; c++) {
        const float *zc = z + c * zs;
#pragma omp simd
        for (int64_t p = 0; p < len; p++) mx[p] = zc[p] > mx[p] ? zc[p] : mx[p];
    }
    for (int64_t p = 0; p < len; p++) se[p] = 0.f, ties[p] = -1.f;
    if (wz) for (int64_t p = 0; p < len; p++) wz[p] = 0.f;
    for (int64_t c = 0; c < C; c++) {
        const float *zc = z + c * zs;
        if (wz) {
            const float wc = w[c];
#pragma omp simd
            for (int64_t p = 0; p < len; p++) {
                const float d = zc[p] - mx[p];
                se[p] += d < 0.f ? nl_expf(d) : 0.f;
                ties[p] += d < 0.f ? 0.f : 1.f;
                wz[p] += wc * d;
            }
        } else {
#pragma omp simd
            for (int64_t p = 0; p < len; p++) {
                const float d = zc[p] - mx[p];
                se[p] += d < 0.f ? nl_expf(d) : 0.f;
                ties[p] += d < 0.f ? 0.f : 1.f;
            }
        }
    }
#pragma omp simd
    for (int64_t p = 0; p < len; p++) lz[p] = nl_log1pf(se[p] + ties[p]);
}

/* the stride-0 broadcast of t (numpy rules, trailing dims aligned) to shape,
 * as f32 in the arena; NULL with an error naming op when not broadcastable */
static inline float *nl_expand_f32(segc_ctx *ctx, const char *op, const char *what, const segc_tensor *t,
                                   int ndim, const int64_t *shape) {
    int64_t strides[SEGC_MAX_DIMS] = {0}, s = 1;
    if (t->ndim > ndim) goto bad;
    for (int i = t->ndim - 1, j = ndim - 1; i >= 0; i--, j--) {
        if (t->shape[i] != shape[j] && t->shape[i] != 1) goto bad;
        strides[j] = t->shape[i] == 1 ? 0 : s;
        s *= t->shape[i];
    }
    {
        const float *src = segc_as_f32(ctx, t);
        int64_t n = 1;
        for (int j = 0; j < ndim; j++) n *= shape[j];
        float *dst = segc_arena_alloc(&ctx->arena, (size_t)(n ? n : 1) * sizeof(float));
        int64_t idx[SEGC_MAX_DIMS] = {0}, off = 0;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = src[off];
            for (int j = ndim - 1; j >= 0; j--) {   /* odometer increment */
                off += strides[j];
                if (++idx[j] < shape[j]) break;
                off -= strides[j] * shape[j];
                idx[j] = 0;
            }
        }
        return dst;
    }
bad:;
    char a[96], b[96];
    segc_tensor tmp = {.ndim = ndim};
    for (int j = 0; j < ndim; j++) tmp.shape[j] = shape[j];
    segc_set_error(ctx, "%s: %s of shape %s does not broadcast to %s", op, what, segc_shape_str(t, a, sizeof a),
                   segc_shape_str(&tmp, b, sizeof b));
    return NULL;
}
/* ---- class-index targets (cross entropy, dice) ---- */

/* target [N, spatial...] for logits [N, C, spatial...]: an integer dtype and
 * the logits' shape without the class dim */
static inline bool nl_check_target(segc_ctx *ctx, const char *op, const segc_tensor *logits, const segc_tensor *target) {
    char a[96], b[96];
    if (target->dtype != SEGC_I64 && target->dtype != SEGC_I32 && target->dtype != SEGC_U8) {
        segc_set_error(ctx, "%s: target must be i64, i32 or u8 class indices, found %s", op, segc_dtype_name(target->dtype));
        return false;
    }
    bool ok = target->ndim == logits->ndim - 1 && target->shape[0] == logits->shape[0];
    for (int i = 1; ok && i < target->ndim; i++) ok = target->shape[i] == logits->shape[i + 1];
    if (!ok)
        segc_set_error(ctx, "%s: target shape must be the logits' %s without dim 1, found %s", op,
                       segc_shape_str(logits, a, sizeof a), segc_shape_str(target, b, sizeof b));
    return ok;
}

/* The shared prologue of the class losses: logits [N, C, ...] (f32/bf16, at least 2-D, C >= 1) and
 * a target of the matching shape; gives N, C and S (positions per sample). Sets the error on failure. */
static inline bool nl_check_class_logits(segc_ctx *ctx, const char *op, const segc_tensor *logits,
                                         const segc_tensor *target, int64_t *N, int64_t *C, int64_t *S) {
    char a[96];
    if (!segc_check_float(ctx, op, "logits", logits)) return false;
    if (logits->ndim < 2) {
        segc_set_error(ctx, "%s: logits must be [N, C, ...] (at least 2-D), found %s", op, segc_shape_str(logits, a, sizeof a));
        return false;
    }
    if (!nl_check_target(ctx, op, logits, target)) return false;
    *N = logits->shape[0];
    *C = logits->shape[1];
    *S = segc_numel(target) / nl_max1(*N);
    if (*C < 1) {
        segc_set_error(ctx, "%s: logits %s have no class", op, segc_shape_str(logits, a, sizeof a));
        return false;
    }
    return true;
}

/* len labels from flat index off as int32 (i64 values saturated, so an
 * out-of-range value stays out of range) */
static inline void nl_load_labels(const segc_tensor *t, int64_t off, int64_t len, int32_t *dst) {
    if (t->dtype == SEGC_U8) {
        const uint8_t *s = (const uint8_t *)t->data + off;
        for (int64_t i = 0; i < len; i++) dst[i] = s[i];
    } else if (t->dtype == SEGC_I32) {
        memcpy(dst, (const int32_t *)t->data + off, (size_t)len * sizeof(int32_t));
    } else {
        const int64_t *s = (const int64_t *)t->data + off;
        for (int64_t i = 0; i < len; i++) dst[i] = s[i] > INT32_MAX ? INT32_MAX : s[i] < INT32_MIN ? INT32_MIN : (int32_t)s[i];
    }
}
static inline int64_t nl_label_at(const segc_tensor *t, int64_t i) {
    switch (t->dtype) {
    case SEGC_U8: return ((const uint8_t *)t->data)[i];
    case SEGC_I32: return ((const int32_t *)t->data)[i];
    default: return ((const int64_t *)t->data)[i];
    }
}

/* the error for the label at flat index i, with its position in the target */
static inline void nl_bad_label(segc_ctx *ctx, const char *op, const segc_tensor *target, int64_t i, int64_t C,
                                int ignore_index) {
    char pos[128];
    size_t k = 0;
    int64_t rem = i, idx[SEGC_MAX_DIMS];
    for (int d = target->ndim - 1; d >= 0; d--) {
        idx[d] = target->shape[d] ? rem % target->shape[d] : 0;
        rem = target->shape[d] ? rem / target->shape[d] : 0;
    }
    for (int d = 0; d < target->ndim && k < sizeof pos; d++)
        k += (size_t)snprintf(pos + k, sizeof pos - k, "%s%lld", d ? ", " : "", (long long)idx[d]);
    segc_set_error(ctx, "%s: target value %lld at [%s] is outside [0, %lld) and is not ignore_index %d", op,
                   (long long)nl_label_at(target, i), pos, (long long)C, ignore_index);
}
#endif
