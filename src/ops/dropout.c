/* dropout and drop_path (stochastic depth).
 *
 * Masks come from ctx->rng through the Philox counter stream: element i of a
 * call uses value (base + i) of the range reserved for it, so a mask depends
 * only on (seed, offset) and never on how the work is split among threads.
 * An element is kept when its uniform u = (word >> 8) * 2^-24 satisfies
 * u >= p, i.e. word >> 8 >= ceil(p * 2^24): exactly segc_rng_uniform_at's
 * value compared with p. The Philox rounds are inlined here so the mask loop
 * vectorises (same function as segc_philox in core). */
/* FP exception flags are never read: let GCC if-convert selects next to
 * float arithmetic (the clamps in segc_vexpf, activation selects), which
 * -ftrapping-math would keep as branches and so unvectorised. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <omp.h>
#include <stdio.h>

#include "segc/ops.h"
#include "segc/profile.h"

#define PAR_MIN 16384
#define BLOCK 1024 /* elements per work block: 256 Philox blocks */

static inline void philox_words(uint64_t seed, uint64_t ctr, uint32_t *o0, uint32_t *o1, uint32_t *o2, uint32_t *o3) {
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    *o0 = c0;
    *o1 = c1;
    *o2 = c2;
    *o3 = c3;
}

/* keep[i] for values base + first .. base + first + n - 1 of the stream
 * (base % 4 == 0). Each Philox block yields the flags of its four values
 * packed into one 32-bit word (byte k = value k), so the loop vectorises. */
static void keep_mask(uint64_t seed, uint64_t base, int64_t first, int64_t n, uint32_t thr, uint8_t *keep) {
    uint32_t packed[BLOCK / 4 + 2];
    int64_t b0 = first / 4, b1 = (first + n + 3) / 4; /* Philox blocks covering the range */
    uint64_t ctr0 = base / 4;
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const int s0 = 24, s1 = 16, s2 = 8, s3 = 0;
#else
    const int s0 = 0, s1 = 8, s2 = 16, s3 = 24;
#endif
#pragma omp simd
    for (int64_t b = b0; b < b1; b++) {
        uint32_t w0, w1, w2, w3;
        philox_words(seed, ctr0 + (uint64_t)b, &w0, &w1, &w2, &w3);
        packed[b - b0] = (uint32_t)((w0 >> 8) >= thr) << s0 | (uint32_t)((w1 >> 8) >= thr) << s1 |
                         (uint32_t)((w2 >> 8) >= thr) << s2 | (uint32_t)((w3 >> 8) >= thr) << s3;
    }
    memcpy(keep, (const uint8_t *)packed + (first - b0 * 4), (size_t)n);
}

/* integer threshold on the 24-bit uniform: keep iff (word >> 8) >= thr */
static uint32_t keep_threshold(float p) { return (uint32_t)ceil((double)p * 16777216.0); }

static bool check_p(segc_ctx *ctx, const char *name, float p) {
    if (p >= 0.0f && p <= 1.0f) return true;
    segc_set_error(ctx, "%s: p must be in [0, 1], found %g", name, (double)p);
    return false;
}

/* ---------------------------------------------------------------- dropout */

typedef struct {
    float scale;
    uint8_t *keep; /* one byte per element */
} dropout_saved;

static void dropout_backward(segc_ctx *ctx, segc_node *nd) {
    const dropout_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0];
    bool fresh;
    float *gx = segc_ew_grad_dst(ctx, x, &fresh);
    const float *go = nd->out->grad;
    const uint8_t *keep = sv->keep;
    float scale = sv->scale;
    int64_t n = segc_numel(x);
    if (fresh) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) gx[i] = keep[i] ? go[i] * scale : 0.0f;
    } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) gx[i] += keep[i] ? go[i] * scale : 0.0f;
    }
}

segc_tensor *segc_dropout(segc_ctx *ctx, segc_tensor *x, float p) {
    SEGC_PROF_OP(ctx, "dropout");
    if (!x) return NULL;
    if (!segc_check_float(ctx, "dropout", "x", x) || !check_p(ctx, "dropout", p)) return NULL;
    if (!ctx->training || p == 0.0f) return x;
    int64_t n = segc_numel(x), nblk = (n + BLOCK - 1) / BLOCK;
    const bool sharded = segc_sharded(ctx);
    if (sharded && n % ctx->sample_count) {
        segc_set_error(ctx, "dropout: a batch shard of %lld samples needs the sample dim outermost, found %lld elements",
                       (long long)ctx->sample_count, (long long)n);
        return NULL;
    }
    segc_tensor *y = segc_tensor_like(ctx, x);
    uint8_t *keep = segc_arena_alloc(&ctx->arena, (size_t)n);
    uint64_t seed = ctx->rng.seed, base = segc_rng_reserve(&ctx->rng, (uint64_t)n * (sharded ? (uint64_t)ctx->sample_stride : 1));
    uint32_t thr = keep_threshold(p);
    if (sharded) {   /* each sample's mask from its place in the global batch's stream */
        const int64_t ns = ctx->sample_count, per = n / ns;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t j = 0; j < ns; j++) {
            uint64_t c0 = segc_sample_counter(ctx, 0, j, per);
            for (int64_t o = 0; o < per; o += BLOCK)
                keep_mask(seed, base, (int64_t)c0 + o, per - o < BLOCK ? per - o : BLOCK, thr, keep + j * per + o);
        }
    }
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    bool bf16 = x->dtype == SEGC_BF16;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t off = b * BLOCK, m = n - off < BLOCK ? n - off : BLOCK;
        uint8_t *k = keep + off;
        if (!sharded) keep_mask(seed, base, off, m, thr, k);
        if (bf16) {   /* through an f32 block: a loop mixing u8, u16 and f32 lanes vectorises poorly */
            float buf[BLOCK];
            segc_ew_load_bf16(segc_bf16p(x) + off, buf, m);
#pragma omp simd
            for (int64_t i = 0; i < m; i++) buf[i] = k[i] ? buf[i] * scale : 0.0f;
            segc_ew_store_bf16(buf, segc_bf16p(y) + off, m);
        } else {
            const float *xv = segc_f32(x) + off;
            float *yv = segc_f32(y) + off;
#pragma omp simd
            for (int64_t i = 0; i < m; i++) yv[i] = k[i] ? xv[i] * scale : 0.0f;
        }
    }
    if (segc_needs_grad(ctx, &x, 1)) {
        dropout_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        sv->scale = scale;
        sv->keep = keep;
        segc_record(ctx, "dropout", dropout_backward, y, &x, 1, sv);
    }
    return y;
}

/* -------------------------------------------------------------- drop_path */

typedef struct {
    float *factor; /* per sample: 1/(1-p) if kept, else 0 */
} drop_path_saved;

static void drop_path_backward(segc_ctx *ctx, segc_node *nd) {
    const drop_path_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0];
    bool fresh;
    /* bf16 gradients (ctx->bf16_grads) in and/or out: blocks widened, scaled in f32, rounded once */
    const uint16_t *go16 = nd->out->grad_bf16;
    uint16_t *gx16 = segc_grad_bf16_dst(ctx, x, &fresh);
    float *gx = gx16 ? NULL : segc_ew_grad_dst(ctx, x, &fresh);
    const float *go = nd->out->grad;
    int64_t N = x->shape[0], per = N ? segc_numel(x) / N : 0;
    if (go16 || gx16) {
        int64_t nblk = (per + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) collapse(2) if (N * per > PAR_MIN)
        for (int64_t s = 0; s < N; s++)
            for (int64_t b = 0; b < nblk; b++) {
                int64_t off = s * per + b * BLOCK, m = per - b * BLOCK < BLOCK ? per - b * BLOCK : BLOCK;
                float f = sv->factor[s], v[BLOCK];
                if (go16) segc_ew_load_bf16(go16 + off, v, m);
                else memcpy(v, go + off, (size_t)m * sizeof *v);
                if (gx16) {
                    const uint16_t *old = gx16 + off;
#pragma omp simd
                    for (int64_t i = 0; i < m; i++) v[i] = fresh ? v[i] * f : v[i] * f + segc_bf16_to_f32(old[i]);
                    segc_ew_store_bf16(v, gx16 + off, m);
                } else {
                    float *g = gx + off;
#pragma omp simd
                    for (int64_t i = 0; i < m; i++) g[i] = fresh ? v[i] * f : g[i] + v[i] * f;
                }
            }
        return;
    }
#pragma omp parallel for schedule(static) if (N * per > PAR_MIN && N > 1)
    for (int64_t s = 0; s < N; s++) {
        float f = sv->factor[s];
        float *g = gx + s * per;
        const float *o = go + s * per;
        if (fresh) {
#pragma omp simd
            for (int64_t i = 0; i < per; i++) g[i] = o[i] * f;
        } else {
#pragma omp simd
            for (int64_t i = 0; i < per; i++) g[i] += o[i] * f;
        }
    }
}

static segc_tensor *drop_path(segc_ctx *ctx, segc_tensor *x, float p, bool in_place) {
    SEGC_PROF_OP(ctx, "drop_path");
    if (!x) return NULL;
    if (!segc_check_float(ctx, "drop_path", "x", x) || !check_p(ctx, "drop_path", p)) return NULL;
    if (x->ndim < 1) {
        segc_set_error(ctx, "drop_path: x must have a sample dim (at least 1-D), found 0-D");
        return NULL;
    }
    if (!ctx->training || p == 0.0f) return x;
    int64_t N = x->shape[0], per = N ? segc_numel(x) / N : 0;
    segc_tensor *y = in_place ? segc_tensor_wrap(ctx, x->dtype, x->ndim, x->shape, x->data) : segc_tensor_like(ctx, x);
    if (!y) return NULL;
    drop_path_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    sv->factor = segc_arena_alloc(&ctx->arena, (size_t)(N > 0 ? N : 1) * sizeof(float));
    const bool sharded = segc_sharded(ctx);
    uint64_t seed = ctx->rng.seed, base = segc_rng_reserve(&ctx->rng, (uint64_t)N * (sharded ? (uint64_t)ctx->sample_stride : 1));
    uint32_t thr = keep_threshold(p);
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    if (sharded) {   /* row s of a sample-major [N, ...]: sample s / k, its row s % k */
        const int64_t k = N % ctx->sample_count ? 0 : N / ctx->sample_count;
        if (!k) {
            segc_set_error(ctx, "drop_path: a batch shard of %lld samples needs the sample dim outermost, found %lld rows",
                           (long long)ctx->sample_count, (long long)N);
            return NULL;
        }
        for (int64_t s = 0; s < N; s++) {
            uint8_t keep;
            keep_mask(seed, base, (int64_t)segc_sample_counter(ctx, 0, s / k, k) + s % k, 1, thr, &keep);
            sv->factor[s] = keep ? scale : 0.0f;
        }
    }
    for (int64_t s = 0; !sharded && s < N; s += BLOCK) {
        uint8_t keep[BLOCK];
        int64_t m = N - s < BLOCK ? N - s : BLOCK;
        keep_mask(seed, base, s, m, thr, keep);
        for (int64_t i = 0; i < m; i++) sv->factor[s + i] = keep[i] ? scale : 0.0f;
    }
    bool bf16 = x->dtype == SEGC_BF16;
#pragma omp parallel for schedule(static) if (N * per > PAR_MIN && N > 1)
    for (int64_t s = 0; s < N; s++) {
        float f = sv->factor[s];
        if (bf16) {
            const uint16_t *xv = segc_bf16p(x) + s * per;
            uint16_t *yv = segc_bf16p(y) + s * per;
#pragma omp simd
            for (int64_t i = 0; i < per; i++) yv[i] = segc_f32_to_bf16(segc_bf16_to_f32(xv[i]) * f);
        } else {
            const float *xv = segc_f32(x) + s * per;
            float *yv = segc_f32(y) + s * per;
#pragma omp simd
            for (int64_t i = 0; i < per; i++) yv[i] = xv[i] * f;
        }
    }
    if (segc_needs_grad(ctx, &x, 1))
        segc_node_reads_bf16_grad(segc_record(ctx, "drop_path", drop_path_backward, y, &x, 1, sv));
    return y;
}

segc_tensor *segc_drop_path(segc_ctx *ctx, segc_tensor *x, float p) { return drop_path(ctx, x, p, false); }
/* the backward reads only the per-sample factors, never x or y */
segc_tensor *segc_drop_path_(segc_ctx *ctx, segc_tensor *x, float p) { return drop_path(ctx, x, p, true); }
