/* Fused bilinear upsample + cross-entropy:
 *   loss = mean over non-ignored pixels of CE(resize_bilinear(logits, H, W, align_corners=False), target)
 * the loss of HF SegformerForSemanticSegmentation and mmseg's decode heads. The full-resolution
 * logits (and their gradient, e.g. 2x150x512x512 floats = 315 MB each) are never materialised:
 * each output row's logits are interpolated into a cache-sized [C, W] block, used and dropped;
 * backward recomputes them and scatters the gradient straight back to the low-resolution logits.
 * Memory beyond the logits' gradient: one float per output pixel and a few [C, W] rows per thread. */
#pragma GCC optimize("no-trapping-math")
#include <math.h>
#include <omp.h>
#include <string.h>

#include "segc/cpu.h"
#include "segc/ops.h"
#include "segc/profile.h"

/* Compiled twice: as itself for the baseline, and by resize_ce_avx512.c with AVX-512 enabled
 * (512-bit vectorisation of the interpolation and log-sum-exp loops); the entry point picks the
 * variant from segc_cpu_isa() and the backward it records is its own variant's. Both are
 * deterministic; they agree to float rounding, not bitwise. */
#ifdef SEGC_ISA_VARIANT_AVX512
#define segc_resize_cross_entropy segc_resize_cross_entropy_avx512
#endif
segc_tensor *segc_resize_cross_entropy_avx512(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, int ignore_index);

typedef struct {
    int64_t N, C, h, w, H, W;
    int ignore_index;
    int64_t valid;          /* non-ignored pixels */
    const float *lf;        /* logits as f32 [N, C, h, w] */
    float *lse;             /* per output pixel log-sum-exp (NaN-free; 0 where ignored) */
    int32_t *y0, *y1, *x0, *x1;
    float *ly, *lx;         /* weights of the second tap along each axis */
    int32_t *group;         /* output rows with y0 == r are [group[r], group[r + 1]) */
} rce_saved;

/* PyTorch's source index for align_corners=False: (dst + 0.5) * in/out - 0.5, clamped at 0 */
static void axis_table(int64_t in, int64_t out, int32_t *i0, int32_t *i1, float *l1) {
    float scale = (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        float s = scale * ((float)o + 0.5f) - 0.5f;
        if (s < 0) s = 0;
        int32_t a = (int32_t)s;
        if (a > in - 1) a = (int32_t)(in - 1);
        i0[o] = a;
        i1[o] = a + (a < in - 1 ? 1 : 0);
        float l = s - (float)a;
        l1[o] = l < 0 ? 0 : l > 1 ? 1 : l;
    }
}

static int64_t target_at(const segc_tensor *t, int64_t i) {
    switch (t->dtype) {
    case SEGC_U8: return ((const uint8_t *)t->data)[i];
    case SEGC_I32: return ((const int32_t *)t->data)[i];
    default: return ((const int64_t *)t->data)[i];
    }
}

/* X[c][:] = input row (n, iy) of every class upsampled along x: [C, W] */
static void upsample_row_x(const rce_saved *s, int64_t n, int64_t iy, float *X) {
    const int64_t C = s->C, h = s->h, w = s->w, W = s->W;
    for (int64_t c = 0; c < C; c++) {
        const float *in = s->lf + ((n * C + c) * h + iy) * w;
        float *out = X + c * W;
#pragma omp simd
        for (int64_t x = 0; x < W; x++) out[x] = in[s->x0[x]] + s->lx[x] * (in[s->x1[x]] - in[s->x0[x]]);
    }
}

/* Z = the interpolated logits [C, W] of output row yy, a blend of the x-upsampled rows X0, X1 */
static void blend_rows(const rce_saved *s, int64_t yy, const float *X0, const float *X1, float *Z) {
    const float a1 = s->ly[yy], a0 = 1.0f - a1;
    const int64_t n = s->C * s->W;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) Z[i] = a0 * X0[i] + a1 * X1[i];
}

static void target_row(const segc_tensor *t, int64_t off, int64_t W, int32_t *dst) {
    if (t->dtype == SEGC_U8) for (int64_t x = 0; x < W; x++) dst[x] = ((const uint8_t *)t->data)[off + x];
    else if (t->dtype == SEGC_I32) memcpy(dst, (const int32_t *)t->data + off, (size_t)W * sizeof(int32_t));
    else for (int64_t x = 0; x < W; x++) dst[x] = (int32_t)((const int64_t *)t->data)[off + x];
}

/* gl[n, c, iy, :] += D[c][:] scattered back along x */
static void scatter_row_x(const rce_saved *s, int64_t n, int64_t iy, const float *D, float *gl) {
    const int64_t C = s->C, h = s->h, w = s->w, W = s->W;
    for (int64_t c = 0; c < C; c++) {
        float *dst = gl + ((n * C + c) * h + iy) * w;
        const float *g = D + c * W;
        for (int64_t x = 0; x < W; x++) {
            float b1 = s->lx[x];
            dst[s->x0[x]] += g[x] - b1 * g[x];
            dst[s->x1[x]] += b1 * g[x];
        }
    }
}

/* Output rows are processed in groups sharing their first input row r (y0 == r), and groups in
 * fixed blocks of RCE_BLOCK input rows: inside a block each input row is upsampled along x once
 * and its gradient row scattered back once. A block writes gradient rows [first, last + 1], so
 * blocks of one parity never touch the same row; running the even blocks, then the odd ones,
 * fixes the order of every sum whatever the thread count. */
#define RCE_BLOCK 8

/* the x-upsampled input rows r and y1 of group r into *X0 / *X1, reusing the previous group's
 * second row (row *have) when it is row r; returns the second row (X0 itself where y1 == r, at
 * the bottom edge) */
static const float *group_rows(const rce_saved *s, int64_t n, int64_t r, float **X0, float **X1, int64_t *have) {
    const int64_t r1 = s->y1[s->group[r]];
    if (*have == r) {   /* swap it in */
        float *t = *X0;
        *X0 = *X1;
        *X1 = t;
    } else {
        upsample_row_x(s, n, r, *X0);
    }
    if (r1 == r) {
        *have = -1;
        return *X0;
    }
    upsample_row_x(s, n, r1, *X1);
    *have = r1;
    return *X1;
}

static void rce_backward(segc_ctx *ctx, segc_node *nd) {
    const rce_saved *s = nd->saved;
    segc_tensor *logits = nd->in[0], *target = nd->in[1];
    if (!logits->requires_grad || s->valid == 0) return;
    const int64_t N = s->N, C = s->C, h = s->h, H = s->H, W = s->W, CW = C * W;
    const float scale = nd->out->grad[0] / (float)s->valid;
    const int nt = omp_get_max_threads();
    const int64_t per = 5 * CW + W, nblk = (h + RCE_BLOCK - 1) / RCE_BLOCK;
    float *work = segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)per * sizeof(float));
    float *gl = segc_grad(ctx, logits);
    for (int parity = 0; parity < 2; parity++) {
        const int64_t blocks = (nblk + 1 - parity) / 2;
#pragma omp parallel
        {
            float *base = work + (int64_t)omp_get_thread_num() * per;
            float *Z = base + 2 * CW, *Dc = Z + CW, *Dn = Dc + CW;
            int32_t *tr = (int32_t *)(Dn + CW);
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < N * blocks; task++) {
                const int64_t n = task / blocks, b = 2 * (task % blocks) + parity;
                const int64_t r_end = (b + 1) * RCE_BLOCK < h ? (b + 1) * RCE_BLOCK : h;
                float *X0 = base, *X1 = base + CW;
                int64_t have = -1;
                /* Dc: gradient of input row r (x-upsampled); Dn: of row r + 1 */
                memset(Dc, 0, (size_t)CW * sizeof(float));
                memset(Dn, 0, (size_t)CW * sizeof(float));
                for (int64_t r = b * RCE_BLOCK; r < r_end; r++) {
                    if (s->group[r] < s->group[r + 1]) {
                        const float *Xb = group_rows(s, n, r, &X0, &X1, &have);
                        float *D1 = Xb == X0 ? Dc : Dn;
                        for (int64_t yy = s->group[r]; yy < s->group[r + 1]; yy++) {
                            blend_rows(s, yy, X0, Xb, Z);
                            target_row(target, (n * H + yy) * W, W, tr);
                            const float *lse = s->lse + (n * H + yy) * W;
                            /* G = (softmax - onehot) * scale, in place in Z; ignored pixels get 0 */
                            for (int64_t c = 0; c < C; c++) {
                                float *z = Z + c * W;
#pragma omp simd
                                for (int64_t x = 0; x < W; x++) z[x] = segc_vexpf(z[x] - lse[x]) * scale;
                            }
                            for (int64_t x = 0; x < W; x++) {
                                if (tr[x] == s->ignore_index) for (int64_t c = 0; c < C; c++) Z[c * W + x] = 0;
                                else Z[(int64_t)tr[x] * W + x] -= scale;
                            }
                            const float a1 = s->ly[yy], a0 = 1.0f - a1;
#pragma omp simd
                            for (int64_t i = 0; i < CW; i++) Dc[i] += a0 * Z[i];
#pragma omp simd
                            for (int64_t i = 0; i < CW; i++) D1[i] += a1 * Z[i];
                        }
                    }
                    scatter_row_x(s, n, r, Dc, gl);
                    float *t = Dc;
                    Dc = Dn;
                    Dn = t;
                    memset(Dn, 0, (size_t)CW * sizeof(float));
                }
                if (r_end < h) scatter_row_x(s, n, r_end, Dc, gl);   /* the last group's second row */
            }
        }
    }
}

/* log-sum-exp of each pixel of output row `row` (logits Z [C, W]) into s->lse; returns the
 * row's summed loss over non-ignored pixels. m: 3*W floats of scratch. */
static double row_forward(const rce_saved *s, const segc_tensor *target, int64_t row, const float *Z, float *m) {
    const int64_t C = s->C, W = s->W;
    float *sum = m + W;
    int32_t *tr = (int32_t *)(sum + W);
    for (int64_t x = 0; x < W; x++) { m[x] = -INFINITY; sum[x] = 0; }
    for (int64_t c = 0; c < C; c++) {
        const float *z = Z + c * W;
#pragma omp simd
        for (int64_t x = 0; x < W; x++) m[x] = z[x] > m[x] ? z[x] : m[x];
    }
    for (int64_t c = 0; c < C; c++) {
        const float *z = Z + c * W;
#pragma omp simd
        for (int64_t x = 0; x < W; x++) sum[x] += segc_vexpf(z[x] - m[x]);
    }
    float *lse = s->lse + row * W;
    target_row(target, row * W, W, tr);
    double acc = 0;
    for (int64_t x = 0; x < W; x++) {
        lse[x] = m[x] + logf(sum[x]);
        if (tr[x] != s->ignore_index) acc += (double)lse[x] - (double)Z[(int64_t)tr[x] * W + x];
    }
    return acc;
}

segc_tensor *segc_resize_cross_entropy(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, int ignore_index) {
#ifndef SEGC_ISA_VARIANT_AVX512
    if (segc_cpu_isa() >= SEGC_ISA_AVX512) return segc_resize_cross_entropy_avx512(ctx, logits, target, ignore_index);
#endif
    static const char *op = "resize_cross_entropy";
    SEGC_PROF_OP(ctx, op);
    if (!logits || !target) return NULL;
    char a[96], b[96];
    if (!segc_check_float(ctx, op, "logits", logits) || !segc_check_ndim(ctx, op, "logits", logits, 4) ||
        !segc_check_ndim(ctx, op, "target", target, 3))
        return NULL;
    if (target->dtype != SEGC_U8 && target->dtype != SEGC_I32 && target->dtype != SEGC_I64) {
        segc_set_error(ctx, "%s: target must be u8, i32 or i64, found %s", op, segc_dtype_name(target->dtype));
        return NULL;
    }
    const int64_t N = logits->shape[0], C = logits->shape[1], h = logits->shape[2], w = logits->shape[3];
    const int64_t H = target->shape[1], W = target->shape[2];
    if (target->shape[0] != N || N < 1 || C < 1 || h < 1 || w < 1 || H < 1 || W < 1) {
        segc_set_error(ctx, "%s: logits %s and target %s must be [N, C, h, w] and [N, H, W] with the same N, all sizes >= 1",
                       op, segc_shape_str(logits, a, sizeof a), segc_shape_str(target, b, sizeof b));
        return NULL;
    }
    int64_t valid = 0, npix = N * H * W;
    for (int64_t i = 0; i < npix; i++) {
        int64_t t = target_at(target, i);
        if (t == ignore_index) continue;
        if (t < 0 || t >= C) {
            segc_set_error(ctx, "%s: target value %lld at flat index %lld is outside [0, %lld) and is not ignore_index %d",
                           op, (long long)t, (long long)i, (long long)C, ignore_index);
            return NULL;
        }
        valid++;
    }
    rce_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
    *s = (rce_saved){.N = N, .C = C, .h = h, .w = w, .H = H, .W = W, .ignore_index = ignore_index, .valid = valid};
    s->lf = segc_as_f32(ctx, logits);
    s->lse = segc_arena_alloc(&ctx->arena, (size_t)npix * sizeof(float));
    s->y0 = segc_arena_alloc(&ctx->arena, (size_t)H * sizeof(int32_t));
    s->y1 = segc_arena_alloc(&ctx->arena, (size_t)H * sizeof(int32_t));
    s->x0 = segc_arena_alloc(&ctx->arena, (size_t)W * sizeof(int32_t));
    s->x1 = segc_arena_alloc(&ctx->arena, (size_t)W * sizeof(int32_t));
    s->ly = segc_arena_alloc(&ctx->arena, (size_t)H * sizeof(float));
    s->lx = segc_arena_alloc(&ctx->arena, (size_t)W * sizeof(float));
    axis_table(h, H, s->y0, s->y1, s->ly);
    axis_table(w, W, s->x0, s->x1, s->lx);
    s->group = segc_arena_alloc(&ctx->arena, (size_t)(h + 1) * sizeof(int32_t));
    for (int64_t r = 0, yy = 0; r <= h; r++) {   /* y0 never decreases along the output rows */
        while (yy < H && s->y0[yy] < r) yy++;
        s->group[r] = (int32_t)yy;
    }
    const int nt = omp_get_max_threads();
    const int64_t CW = C * W;
    const int64_t nblk = (h + RCE_BLOCK - 1) / RCE_BLOCK;
    float *work = segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)(3 * CW + 3 * W) * sizeof(float));
    double *row_loss = segc_arena_alloc(&ctx->arena, (size_t)(N * H) * sizeof(double));
#pragma omp parallel
    {
        float *base = work + (int64_t)omp_get_thread_num() * (3 * CW + 3 * W), *Z = base + 2 * CW, *m = Z + CW;
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < N * nblk; task++) {
            const int64_t n = task / nblk, b = task % nblk;
            const int64_t r_end = (b + 1) * RCE_BLOCK < h ? (b + 1) * RCE_BLOCK : h;
            float *X0 = base, *X1 = base + CW;
            int64_t have = -1;
            for (int64_t r = b * RCE_BLOCK; r < r_end; r++) {
                if (s->group[r] == s->group[r + 1]) continue;
                const float *Xb = group_rows(s, n, r, &X0, &X1, &have);
                for (int64_t yy = s->group[r]; yy < s->group[r + 1]; yy++) {
                    blend_rows(s, yy, X0, Xb, Z);
                    row_loss[n * H + yy] = row_forward(s, target, n * H + yy, Z, m);
                }
            }
        }
    }
    double total = 0;
    for (int64_t r = 0; r < N * H; r++) total += row_loss[r];   /* fixed order */
    segc_tensor *loss = segc_tensor_new(ctx, SEGC_F32, 1, (int64_t[]){1});
    segc_f32(loss)[0] = valid ? (float)(total / (double)valid) : 0.0f;
    segc_tensor *ins[2] = {logits, target};
    if (segc_needs_grad(ctx, ins, 1)) segc_record(ctx, op, rce_backward, loss, ins, 2, s);
    return loss;
}
