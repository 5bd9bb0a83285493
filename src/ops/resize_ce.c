/* Fused bilinear upsample + cross-entropy:
 *   loss = mean over non-ignored pixels of CE(resize_bilinear(logits, H, W, align_corners=False), target)
 * the loss of HF SegformerForSemanticSegmentation and mmseg's decode heads. The full-resolution
 * logits (and their gradient, e.g. 2x150x512x512 floats = 315 MB each) are never materialised:
 * each output row's logits are interpolated into a cache-sized [C, W] block, used and dropped;
 * backward recomputes them and scatters the gradient straight back to the low-resolution logits. */
#pragma GCC optimize("no-trapping-math")
#include <math.h>
#include <omp.h>
#include <string.h>

#include "segc/ops.h"

typedef struct {
    int64_t N, C, h, w, H, W;
    int ignore_index;
    int64_t valid;          /* non-ignored pixels */
    const float *lf;        /* logits as f32 [N, C, h, w] */
    float *hx;              /* logits upsampled along x only: [N, C, h, W] (1/H-th of the full size) */
    float *lse;             /* per output pixel log-sum-exp (NaN-free; 0 where ignored) */
    int32_t *y0, *y1, *x0, *x1;
    float *ly, *lx;         /* weights of the second tap along each axis */
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

/* along x: hx[n, c, iy, :] from lf[n, c, iy, :], for all rows (parallel, no conflicts) */
static void upsample_x(const rce_saved *s) {
    const int64_t rows = s->N * s->C * s->h, w = s->w, W = s->W;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *in = s->lf + r * w;
        float *out = s->hx + r * W;
#pragma omp simd
        for (int64_t x = 0; x < W; x++) out[x] = in[s->x0[x]] + s->lx[x] * (in[s->x1[x]] - in[s->x0[x]]);
    }
}

/* Z[c][x] = interpolated logits of output row (n, yy): a blend of two rows of hx */
static void interp_row(const rce_saved *s, int64_t n, int64_t yy, float *Z) {
    const int64_t C = s->C, h = s->h, W = s->W;
    const float a1 = s->ly[yy], a0 = 1.0f - a1;
    for (int64_t c = 0; c < C; c++) {
        const float *r0 = s->hx + ((n * C + c) * h + s->y0[yy]) * W, *r1 = s->hx + ((n * C + c) * h + s->y1[yy]) * W;
        float *z = Z + c * W;
#pragma omp simd
        for (int64_t x = 0; x < W; x++) z[x] = a0 * r0[x] + a1 * r1[x];
    }
}

static void target_row(const segc_tensor *t, int64_t off, int64_t W, int32_t *dst) {
    if (t->dtype == SEGC_U8) for (int64_t x = 0; x < W; x++) dst[x] = ((const uint8_t *)t->data)[off + x];
    else if (t->dtype == SEGC_I32) memcpy(dst, (const int32_t *)t->data + off, (size_t)W * sizeof(int32_t));
    else for (int64_t x = 0; x < W; x++) dst[x] = (int32_t)((const int64_t *)t->data)[off + x];
}

static void rce_backward(segc_ctx *ctx, segc_node *nd) {
    const rce_saved *s = nd->saved;
    segc_tensor *logits = nd->in[0], *target = nd->in[1];
    if (!logits->requires_grad || s->valid == 0) return;
    const int64_t N = s->N, C = s->C, h = s->h, w = s->w, H = s->H, W = s->W;
    const float scale = nd->out->grad[0] / (float)s->valid;
    const int nt = omp_get_max_threads();
    const int64_t hplane = N * C * h * W;
    /* per-thread gradients of hx (output rows of two threads can share an input row), summed in
     * thread order: deterministic for a thread count */
    float *part = segc_arena_calloc(&ctx->arena, (size_t)nt * (size_t)hplane * sizeof(float));
    float *Zall = segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)(C * W) * sizeof(float));
    int32_t *tall = segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)W * sizeof(int32_t));
#pragma omp parallel
    {
        int tid = omp_get_thread_num();
        float *Z = Zall + (int64_t)tid * C * W, *dh = part + (int64_t)tid * hplane;
        int32_t *tr = tall + (int64_t)tid * W;
#pragma omp for schedule(static)
        for (int64_t row = 0; row < N * H; row++) {
            int64_t n = row / H, yy = row % H;
            interp_row(s, n, yy, Z);
            target_row(target, row * W, W, tr);
            const float *lse = s->lse + row * W;
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
            for (int64_t c = 0; c < C; c++) {
                const float *g = Z + c * W;
                float *d0 = dh + ((n * C + c) * h + s->y0[yy]) * W, *d1 = dh + ((n * C + c) * h + s->y1[yy]) * W;
#pragma omp simd
                for (int64_t x = 0; x < W; x++) d0[x] += a0 * g[x];
#pragma omp simd
                for (int64_t x = 0; x < W; x++) d1[x] += a1 * g[x];
            }
        }
    }
    /* sum the parts and scatter along x back to the logits' width, one input row per task */
    float *gl = segc_grad(ctx, logits);
    const int64_t rows = N * C * h;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *dst = gl + r * w;
        for (int64_t x = 0; x < W; x++) {
            float g = 0;
            for (int t = 0; t < nt; t++) g += part[(int64_t)t * hplane + r * W + x];
            float b1 = s->lx[x];
            dst[s->x0[x]] += g - b1 * g;
            dst[s->x1[x]] += b1 * g;
        }
    }
}

segc_tensor *segc_resize_cross_entropy(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, int ignore_index) {
    static const char *op = "resize_cross_entropy";
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
    s->hx = segc_arena_alloc(&ctx->arena, (size_t)(N * C * h * W) * sizeof(float));
    upsample_x(s);
    const int nt = omp_get_max_threads();
    float *Zall = segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)(C * W + 3 * W) * sizeof(float));
    double *row_loss = segc_arena_alloc(&ctx->arena, (size_t)(N * H) * sizeof(double));
#pragma omp parallel
    {
        int tid = omp_get_thread_num();
        float *Z = Zall + (int64_t)tid * (C * W + 3 * W), *m = Z + C * W, *sum = m + W;
        int32_t *tr = (int32_t *)(sum + W);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < N * H; row++) {
            int64_t n = row / H, yy = row % H;
            interp_row(s, n, yy, Z);
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
            float *lse = s->lse + (n * H + yy) * W;
            target_row(target, row * W, W, tr);
            double acc = 0;
            for (int64_t x = 0; x < W; x++) {
                lse[x] = m[x] + logf(sum[x]);
                if (tr[x] != ignore_index) acc += (double)lse[x] - (double)Z[(int64_t)tr[x] * W + x];
            }
            row_loss[row] = acc;
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
