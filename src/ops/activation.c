/* Activations: relu, leaky_relu, gelu (exact), sigmoid, tanh.
 *
 * All math is plain C written for the auto-vectoriser (no libm calls in the
 * loops): exp from segc_vexpf, and own polynomial fits for erfc and tanh,
 * each accurate to about 1e-7 relative in f32. bf16 tensors are converted in
 * stack blocks and computed in f32; the smooth kinds (gelu, sigmoid, tanh)
 * instead look the result up in tables over all 65536 bf16 inputs, filled
 * once by those same f32 loops, so the numbers are the same at a fraction
 * of the cost (the polynomials are compute-bound, the lookups are not). */
/* FP exception flags are never read: let GCC if-convert selects next to
 * float arithmetic (the clamps in segc_vexpf, activation selects), which
 * -ftrapping-math would keep as branches and so unvectorised. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "segc/cpu.h"
#include "segc/ops.h"
#include "segc/profile.h"
#include "activation_internal.h"

#define PAR_MIN 16384
#define BLOCK 2048     /* elements per work block */
#define BF16_BLOCK 512 /* bf16 forward conversion buffer */

typedef enum { ACT_RELU, ACT_LEAKY, ACT_GELU, ACT_SIGMOID, ACT_TANH } act_kind;

/* Compiled twice: as itself for the baseline, and by activation_avx512.c with AVX-512 enabled
 * (512-bit vectorisation of the polynomial loops; GELU is a visible share of a SegFormer step).
 * activation() picks the variant from segc_cpu_isa(); the backward it records is its own
 * variant's. Both are deterministic; they agree to float rounding, not bitwise. */
#ifdef SEGC_ISA_VARIANT_AVX512
#define ACT_ENTRY_LINKAGE
#define activation segc_activation_avx512
#else
#define ACT_ENTRY_LINKAGE static
#endif
segc_tensor *segc_activation_avx512(segc_ctx *ctx, act_kind k, segc_tensor *x, float slope);
static const char *const act_names[] = {"relu", "leaky_relu", "gelu", "sigmoid", "tanh"};

/* erfc(t) for t >= 0 as exp(-t^2) * u * Q(u), u = 2.5 / (2.5 + t): Q is
 * smooth on u in [0, 1] (all t >= 0), fitted by a degree-10 polynomial with
 * relative error < 1e-8. exp(-t^2) takes t^2 as an exact sum sq_hi + sq_lo
 * (passed in, so callers can form it from an unrounded argument). Also returns
 * exp(-t^2) in *gauss. */
static inline float erfc_pos(float t, float sq_hi, float sq_lo, float *gauss) {
    float u = 2.5f / (2.5f + t);
    float q = -2.921547860e-02f;
    q = __builtin_fmaf(q, u, 1.404485399e-01f);
    q = __builtin_fmaf(q, u, -2.355311731e-01f);
    q = __builtin_fmaf(q, u, 1.375660787e-01f);
    q = __builtin_fmaf(q, u, -4.689853833e-02f);
    q = __builtin_fmaf(q, u, 8.391790510e-02f);
    q = __builtin_fmaf(q, u, 1.190078941e-01f);
    q = __builtin_fmaf(q, u, 1.717393462e-01f);
    q = __builtin_fmaf(q, u, 2.076137248e-01f);
    q = __builtin_fmaf(q, u, 2.256758602e-01f);
    q = __builtin_fmaf(q, u, 2.256758348e-01f);
    float g = segc_vexpf(-sq_hi) * (1.0f - sq_lo); /* exp(-hi - lo) to first order in lo */
    *gauss = g;
    return g * u * q;
}

/* GELU pieces: Phi(x) = P(X <= x) for a standard normal, and exp(-x^2/2).
 * x/sqrt(2) is only used for the slowly varying u; the Gaussian factor comes
 * from x^2/2 directly so large |x| keep their relative accuracy. */
static inline float gelu_phi(float x, float *gauss) {
    float xc = fabsf(x) > 30.0f ? copysignf(30.0f, x) : x; /* erfc(21) underflows anyway; keeps lo finite */
    float t = fabsf(xc) * 0.70710678118654752f;
    float sq = xc * xc;
    float lo = __builtin_fmaf(xc, xc, -sq);
    float c = erfc_pos(t, 0.5f * sq, 0.5f * lo, gauss);
    return xc >= 0.0f ? 1.0f - 0.5f * c : 0.5f * c;
}

/* tanh: odd polynomial near 0 (no cancellation), 1 - 2/(e^{2|x|}+1) beyond */
static inline float tanh_f(float x) {
    float ax = fabsf(x), z = x * x;
    float p = 2.340636803e-03f;
    p = __builtin_fmaf(p, z, -8.365316675e-03f);
    p = __builtin_fmaf(p, z, 2.176667111e-02f);
    p = __builtin_fmaf(p, z, -5.395714743e-02f);
    p = __builtin_fmaf(p, z, 1.333327564e-01f);
    p = __builtin_fmaf(p, z, -3.333333220e-01f);
    float small = __builtin_fmaf(x * z, p, x);
    float big = 1.0f - 2.0f / (segc_vexpf(2.0f * ax) + 1.0f);
    return ax < 0.5625f ? small : copysignf(big, x);
}

static inline float sigmoid_f(float x) { return 1.0f / (1.0f + segc_vexpf(-x)); }

/* One loop per kind; LD(i) reads x[i] as f32 and ST(i, v) writes the result,
 * so the bf16 conversions fuse into the same vector loop. */
#define ACT_FWD_CASES(LD, ST)                                                                  \
    switch (k) {                                                                               \
    case ACT_RELU: /* NaN passes through, as PyTorch's */                                     \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float v = LD(i);                                                                   \
            ST(i, v < 0.0f ? 0.0f : v);                                                        \
        }                                                                                      \
        break;                                                                                 \
    case ACT_LEAKY:                                                                            \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float v = LD(i), neg = v * slope;                                                  \
            ST(i, v > 0.0f ? v : neg);                                                         \
        }                                                                                      \
        break;                                                                                 \
    case ACT_GELU:                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float v = LD(i), g;                                                                \
            ST(i, v * gelu_phi(v, &g));                                                        \
        }                                                                                      \
        break;                                                                                 \
    case ACT_SIGMOID:                                                                          \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) ST(i, sigmoid_f(LD(i)));           \
        break;                                                                                 \
    case ACT_TANH:                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) ST(i, tanh_f(LD(i)));              \
        break;                                                                                 \
    }

#define LD_F32(i) x[i]
#define LD_BF16(i) segc_bf16_to_f32(x[i])
#define ST_F32(i, v) (y[i] = (v))

static void act_fwd_f32(act_kind k, float slope, const float *x, float *y, int64_t n) { ACT_FWD_CASES(LD_F32, ST_F32) }
/* bf16 goes through an f32 stack block: converting inside the math loop
 * makes the vectoriser work in 16-bit lane counts and spill (measured slower) */
static void act_fwd_bf16(act_kind k, float slope, const uint16_t *x, uint16_t *y, int64_t n) {
    float buf[BF16_BLOCK];
    for (int64_t off = 0; off < n; off += BF16_BLOCK) {
        int64_t m = n - off < BF16_BLOCK ? n - off : BF16_BLOCK;
        segc_ew_load_bf16(x + off, buf, m);
        act_fwd_f32(k, slope, buf, buf, m);
        segc_ew_store_bf16(buf, y + off, m);
    }
}

/* ---- bf16 lookup tables for the smooth kinds ----
 * fwd[h] = bf16(f(x)) and dfdx[h] = f'(x) in f32 for x = bf16 bits h: what the
 * f32 loops give for that input (backward multiplies go by f'(x) either way).
 * All three are built together on the first bf16 use (1.2 MB). */
#define N_BF16 65536
typedef struct {
    uint16_t *fwd;
    float *dfdx;
} act_table;
static const act_kind table_kinds[3] = {ACT_GELU, ACT_SIGMOID, ACT_TANH};
static act_table act_tables[3];
static pthread_once_t act_tables_once = PTHREAD_ONCE_INIT;

static void act_bwd_f32(act_kind k, float slope, const float *x, const float *go, float *gx, bool acc, int64_t n);
static void tables_init(void) {
    float *x = malloc(N_BF16 * sizeof *x), *y = malloc(N_BF16 * sizeof *y), *ones = malloc(N_BF16 * sizeof *ones);
    for (int t = 0; t < 3 && x && y && ones; t++) {
        uint16_t *fwd = malloc(N_BF16 * sizeof *fwd);
        float *dfdx = malloc(N_BF16 * sizeof *dfdx);
        if (!fwd || !dfdx) {   /* no table: the converting loops serve */
            free(fwd);
            free(dfdx);
            continue;
        }
        for (int h = 0; h < N_BF16; h++) {
            x[h] = segc_bf16_to_f32((uint16_t)h);
            ones[h] = 1.0f;
        }
        act_fwd_f32(table_kinds[t], 0.0f, x, y, N_BF16);
        segc_ew_store_bf16(y, fwd, N_BF16);
        act_bwd_f32(table_kinds[t], 0.0f, x, ones, dfdx, false, N_BF16);
        act_tables[t] = (act_table){fwd, dfdx};
    }
    free(x);
    free(y);
    free(ones);
}
/* the kind's table (NULL for kinds without one, or without memory) */
static const act_table *bf16_table(act_kind k) {
    for (int t = 0; t < 3; t++) {
        if (table_kinds[t] != k) continue;
        pthread_once(&act_tables_once, tables_init);
        return act_tables[t].fwd ? &act_tables[t] : NULL;
    }
    return NULL;
}

/* y[i] = fwd[x[i]], four lookups per 64-bit load and store (little-endian: x[i] is the low
 * half): 1.5 memory operations per element instead of 3, and a loop body long enough that its
 * speed no longer depends on where the linker places it (the one-element loop ran 1.35 or 2.35 ms on 8.4 M elements on
 * Zen 4 depending on the binary it was linked into) */
static void table_fwd(const uint16_t *restrict fwd, const uint16_t *restrict x, uint16_t *restrict y, int64_t m) {
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) {
        uint64_t h, r;
        memcpy(&h, x + i, sizeof h);
        r = (uint64_t)fwd[h & 0xffff] | (uint64_t)fwd[(h >> 16) & 0xffff] << 16 |
            (uint64_t)fwd[(h >> 32) & 0xffff] << 32 | (uint64_t)fwd[h >> 48] << 48;
        memcpy(y + i, &r, sizeof r);
    }
    for (; i < m; i++) y[i] = fwd[x[i]];
}

/* gx (+)= go * f'(x), from x alone: the sigmoid/tanh derivatives written
 * as s(1-s) or 1-y^2 from the output would cancel badly where the output
 * nears +-1 (and bf16 outputs are rounded). OUT(i, v) stores or adds. */
#define ACT_BWD_CASES(LD, OUT)                                                                 \
    switch (k) {                                                                               \
    case ACT_RELU:                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float v = LD(i);                                                                   \
            OUT(i, v > 0.0f ? go[i] : 0.0f);                                                   \
        }                                                                                      \
        break;                                                                                 \
    case ACT_LEAKY:                                                                            \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float v = LD(i), neg = go[i] * slope;                                              \
            OUT(i, v > 0.0f ? go[i] : neg);                                                    \
        }                                                                                      \
        break;                                                                                 \
    case ACT_GELU: /* Phi(x) + x phi(x) */                                                     \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float v = LD(i), g, phi = gelu_phi(v, &g);                                         \
            OUT(i, go[i] * __builtin_fmaf(v * 0.39894228040143268f, g, phi));                  \
        }                                                                                      \
        break;                                                                                 \
    case ACT_SIGMOID: /* s(1-s) = e/(1+e)^2 with e = exp(-|x|): no cancellation in 1 - s */   \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float e = segc_vexpf(-fabsf(LD(i))), q = 1.0f + e;                                 \
            OUT(i, go[i] * (e / (q * q)));                                                     \
        }                                                                                      \
        break;                                                                                 \
    case ACT_TANH: /* 1 - tanh^2 = 4e/(1+e)^2 with e = exp(-2|x|) */                         \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                  \
            float e = segc_vexpf(-2.0f * fabsf(LD(i))), q = 1.0f + e;                          \
            OUT(i, go[i] * (4.0f * e / (q * q)));                                              \
        }                                                                                      \
        break;                                                                                 \
    }

#define OUT_SET(i, v) (gx[i] = (v))
#define OUT_ADD(i, v) (gx[i] += (v))

static void act_bwd_f32(act_kind k, float slope, const float *x, const float *go, float *gx, bool acc, int64_t n) {
    if (acc) ACT_BWD_CASES(LD_F32, OUT_ADD) else ACT_BWD_CASES(LD_F32, OUT_SET)
}
static void act_bwd_bf16(act_kind k, float slope, const uint16_t *x, const float *go, float *gx, bool acc, int64_t n) {
    if (acc) ACT_BWD_CASES(LD_BF16, OUT_ADD) else ACT_BWD_CASES(LD_BF16, OUT_SET)
}

typedef struct {
    act_kind kind;
    float slope;
} act_saved;

/* gx (+)= go * f'(x) over one block of x (at most BLOCK elements; fresh: gx is written, not added
 * to); tab: the kind's table for a bf16 x (NULL: computed) */
static void act_bwd_block(act_kind k, float slope, const act_table *tab, const segc_tensor *x, const float *go,
                          float *gx, bool fresh) {
    int64_t m = segc_numel(x);
    if (x->dtype == SEGC_BF16) {
        if (tab) {
            const uint16_t *xb = segc_bf16p(x);
            if (fresh) for (int64_t i = 0; i < m; i++) gx[i] = go[i] * tab->dfdx[xb[i]];
            else for (int64_t i = 0; i < m; i++) gx[i] += go[i] * tab->dfdx[xb[i]];
        } else {
            act_bwd_bf16(k, slope, segc_bf16p(x), go, gx, !fresh, m);
        }
    } else {
        act_bwd_f32(k, slope, segc_f32(x), go, gx, !fresh, m);
    }
}

/* gx (+)= g * dfdx[x] with bf16 g and gx, rounded once: lookups 16 at a time (x read four per
 * 64-bit load), then the widen, multiply and round in vectors */
static void table_bwd_bf16(const float *restrict dfdx, const uint16_t *restrict x, const uint16_t *restrict g,
                           uint16_t *restrict gx, bool acc, int64_t m) {
    int64_t i = 0;
    for (; i + 16 <= m; i += 16) {
        float t[16], v[16];
        for (int j = 0; j < 16; j += 4) {
            uint64_t h;
            memcpy(&h, x + i + j, sizeof h);
            t[j] = dfdx[h & 0xffff];
            t[j + 1] = dfdx[(h >> 16) & 0xffff];
            t[j + 2] = dfdx[(h >> 32) & 0xffff];
            t[j + 3] = dfdx[h >> 48];
        }
        if (acc) {
#pragma omp simd
            for (int j = 0; j < 16; j++) v[j] = segc_bf16_to_f32(g[i + j]) * t[j] + segc_bf16_to_f32(gx[i + j]);
        } else {
#pragma omp simd
            for (int j = 0; j < 16; j++) v[j] = segc_bf16_to_f32(g[i + j]) * t[j];
        }
#pragma omp simd
        for (int j = 0; j < 16; j++) gx[i + j] = segc_f32_to_bf16(v[j]);
    }
    for (; i < m; i++) {
        float v = segc_bf16_to_f32(g[i]) * dfdx[x[i]];
        gx[i] = segc_f32_to_bf16(acc ? v + segc_bf16_to_f32(gx[i]) : v);
    }
}

/* gx (+)= go * f'(x) over the whole tensor x (fresh: gx is written, not added to). With bf16
 * gradients (ctx->bf16_grads) go16 and/or gx16 replace go / gx: each block is widened into f32,
 * runs the f32-gradient kernel and is rounded once into gx16 (bf16 in and out with a table: one
 * fused pass) */
static void act_bwd_tensor(act_kind k, float slope, const segc_tensor *x, const float *go, const uint16_t *go16,
                           float *gx, uint16_t *gx16, bool fresh) {
    int64_t n = segc_numel(x), nblk = (n + BLOCK - 1) / BLOCK;
    const act_table *tab = x->dtype == SEGC_BF16 ? bf16_table(k) : NULL;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t off = b * BLOCK, m = n - off < BLOCK ? n - off : BLOCK;
        if (tab && go16 && gx16) {   /* one pass: a block-wide widen pass waits on memory that this one overlaps */
            table_bwd_bf16(tab->dfdx, segc_bf16p(x) + off, go16 + off, gx16 + off, !fresh, m);
            continue;
        }
        float gbuf[BLOCK], obuf[BLOCK];
        const float *g = go16 ? (segc_ew_load_bf16(go16 + off, gbuf, m), gbuf) : go + off;
        segc_tensor xb = *x;   /* the block of x as a 1-D tensor */
        xb.ndim = 1;
        xb.shape[0] = m;
        xb.data = (char *)x->data + (size_t)off * segc_dtype_size(x->dtype);
        if (!gx16) {
            act_bwd_block(k, slope, tab, &xb, g, gx + off, fresh);
            continue;
        }
        act_bwd_block(k, slope, tab, &xb, g, obuf, true);
        segc_ew_put_grad_bf16(obuf, gx16 + off, m, fresh);
    }
}

static void act_backward(segc_ctx *ctx, segc_node *nd) {
    const act_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0];
    bool fresh;
    const uint16_t *go16 = nd->out->grad_bf16;
    uint16_t *gx16 = segc_grad_bf16_dst(ctx, x, &fresh);
    float *gx = gx16 ? NULL : segc_ew_grad_dst(ctx, x, &fresh);
    act_bwd_tensor(sv->kind, sv->slope, x, nd->out->grad, go16, gx, gx16, fresh);
}

/* y = f(x) over the whole tensor x, y of x's dtype and size */
static void act_fwd_tensor(act_kind k, float slope, const segc_tensor *x, void *y) {
    int64_t n = segc_numel(x), nblk = (n + BLOCK - 1) / BLOCK;
    bool bf16 = x->dtype == SEGC_BF16;
    const act_table *tab = bf16 ? bf16_table(k) : NULL;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t off = b * BLOCK, m = n - off < BLOCK ? n - off : BLOCK;
        if (tab) {
            table_fwd(tab->fwd, segc_bf16p(x) + off, (uint16_t *)y + off, m);
        } else if (bf16) {
            act_fwd_bf16(k, slope, segc_bf16p(x) + off, (uint16_t *)y + off, m);
        } else {
            act_fwd_f32(k, slope, segc_f32(x) + off, (float *)y + off, m);
        }
    }
}

/* the GELU kernels for ops that recompute it (activation_internal.h) */
#ifdef SEGC_ISA_VARIANT_AVX512
void segc_gelu_fwd_raw_avx512(const segc_tensor *x, void *y) { act_fwd_tensor(ACT_GELU, 0.0f, x, y); }
void segc_gelu_bwd_raw_avx512(const segc_tensor *x, const float *go, float *gx, bool fresh) {
    act_bwd_tensor(ACT_GELU, 0.0f, x, go, NULL, gx, NULL, fresh);
}
#else
void segc_gelu_fwd_raw_avx512(const segc_tensor *x, void *y);
void segc_gelu_bwd_raw_avx512(const segc_tensor *x, const float *go, float *gx, bool fresh);
void segc_gelu_fwd_raw(const segc_tensor *x, void *y) {
    if (segc_cpu_isa() >= SEGC_ISA_AVX512) segc_gelu_fwd_raw_avx512(x, y);
    else act_fwd_tensor(ACT_GELU, 0.0f, x, y);
}
void segc_gelu_bwd_raw(const segc_tensor *x, const float *go, float *gx, bool fresh) {
    if (segc_cpu_isa() >= SEGC_ISA_AVX512) segc_gelu_bwd_raw_avx512(x, go, gx, fresh);
    else act_bwd_tensor(ACT_GELU, 0.0f, x, go, NULL, gx, NULL, fresh);
}
#endif

ACT_ENTRY_LINKAGE segc_tensor *activation(segc_ctx *ctx, act_kind k, segc_tensor *x, float slope) {
    if (!x) return NULL;
#ifndef SEGC_ISA_VARIANT_AVX512
    if (segc_cpu_isa() >= SEGC_ISA_AVX512) return segc_activation_avx512(ctx, k, x, slope);
#endif
    const char *name = act_names[k];
    SEGC_PROF_OP(ctx, name);
    if (!segc_check_float(ctx, name, "x", x)) return NULL;
    if (k == ACT_LEAKY && !isfinite(slope)) {
        segc_set_error(ctx, "leaky_relu: slope must be finite, found %g", (double)slope);
        return NULL;
    }
    segc_tensor *y = segc_tensor_like(ctx, x);
    if (!y) return NULL;
    act_fwd_tensor(k, slope, x, y->data);
    if (!segc_check_finite_out(ctx, name, y)) return NULL;
    if (segc_needs_grad(ctx, &x, 1)) {
        act_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        sv->kind = k;
        sv->slope = slope;
        segc_node_reads_bf16_grad(segc_record(ctx, name, act_backward, y, &x, 1, sv));
    }
    return y;
}

#ifndef SEGC_ISA_VARIANT_AVX512   /* the public entry points: once, in the baseline object */
/* in-place relu: y shares x's storage; its gradient masks with y, and when x has no gradient
 * yet it reuses y's gradient buffer (masked where it is) */
static void relu_inplace_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *y = nd->out;
    float *go = y->grad;
    int64_t n = segc_numel(y);
    bool alias = segc_ew_grad_alias(ctx, x, go), fresh = false;
    float *gx = alias ? go : segc_ew_grad_dst(ctx, x, &fresh);
    /* one loop per case, each with pointers that cannot overlap: with go == gx in one loop the
     * compiler falls back to a scalar, branching loop (7x slower on random signs) */
    if (y->dtype == SEGC_BF16) {
        const uint16_t *yb = segc_bf16p(y);
        if (alias) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
            for (int64_t i = 0; i < n; i++) go[i] = (yb[i] & 0x7fff) && !(yb[i] & 0x8000) ? go[i] : 0.0f;
        } else {
            float *restrict d = gx;
            const float *restrict s = go;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
            for (int64_t i = 0; i < n; i++) {
                float g = (yb[i] & 0x7fff) && !(yb[i] & 0x8000) ? s[i] : 0.0f;
                d[i] = fresh ? g : d[i] + g;
            }
        }
    } else {
        const float *yf = segc_f32(y);
        if (alias) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
            for (int64_t i = 0; i < n; i++) go[i] = yf[i] > 0.0f ? go[i] : 0.0f;
        } else {
            float *restrict d = gx;
            const float *restrict s = go;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
            for (int64_t i = 0; i < n; i++) {
                float g = yf[i] > 0.0f ? s[i] : 0.0f;
                d[i] = fresh ? g : d[i] + g;
            }
        }
    }
}

segc_tensor *segc_relu_(segc_ctx *ctx, segc_tensor *x) {
    if (!x) return NULL;
    SEGC_PROF_OP(ctx, "relu");
    if (!segc_check_float(ctx, "relu", "x", x)) return NULL;
    segc_tensor *y = segc_tensor_wrap(ctx, x->dtype, x->ndim, x->shape, x->data);
    if (!y) return NULL;
    int64_t n = segc_numel(x);
    if (x->dtype == SEGC_BF16) {
        uint16_t *v = segc_bf16p(y);
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) v[i] = v[i] & 0x8000 ? 0 : v[i];
    } else {
        float *v = segc_f32(y);
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) v[i] = v[i] > 0.0f ? v[i] : 0.0f;
    }
    if (!segc_check_finite_out(ctx, "relu", y)) return NULL;
    if (segc_needs_grad(ctx, &x, 1)) segc_record(ctx, "relu", relu_inplace_backward, y, &x, 1, NULL);
    return y;
}

segc_tensor *segc_relu(segc_ctx *ctx, segc_tensor *x) { return activation(ctx, ACT_RELU, x, 0.0f); }
segc_tensor *segc_leaky_relu(segc_ctx *ctx, segc_tensor *x, float slope) { return activation(ctx, ACT_LEAKY, x, slope); }
segc_tensor *segc_gelu(segc_ctx *ctx, segc_tensor *x) { return activation(ctx, ACT_GELU, x, 0.0f); }
segc_tensor *segc_sigmoid(segc_ctx *ctx, segc_tensor *x) { return activation(ctx, ACT_SIGMOID, x, 0.0f); }
segc_tensor *segc_tanh(segc_ctx *ctx, segc_tensor *x) { return activation(ctx, ACT_TANH, x, 0.0f); }
#endif
