/* Depthwise KxK convolution (stride 1, "same" zero padding) on a channels-last token tensor
 * x [B, H*W, C] -> [B, H*W, C]. SegFormer's Mix-FFN applies its 3x3 depthwise conv to the tokens
 * that the linear layers produce; doing it in this layout removes the two largest transposes of
 * every block (PyTorch pays them). Weights keep PyTorch's depthwise Conv2d layout [C, 1, K, K]. */
#include <omp.h>
#include <string.h>

#include "segc/ops.h"
#include "segc/profile.h"

typedef struct { int64_t B, H, W, C; int K; } dw_saved;

/* out[p, c] (+)= sum_k w[c, k] * in[p + off_k, c], one output row at a time */
static void dw_row(const float *in, const float *wt /* [K*K][C] */, const float *bias, float *out, int64_t y,
                   const dw_saved *s) {
    const int64_t W = s->W, C = s->C, H = s->H;
    const int K = s->K, r = K / 2;
    for (int64_t x = 0; x < W; x++) {
        float *o = out + (y * W + x) * C;
        if (bias) memcpy(o, bias, (size_t)C * sizeof(float));
        else memset(o, 0, (size_t)C * sizeof(float));
        for (int ky = 0; ky < K; ky++) {
            int64_t iy = y + ky - r;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < K; kx++) {
                int64_t ix = x + kx - r;
                if (ix < 0 || ix >= W) continue;
                const float *ip = in + (iy * W + ix) * C, *wp = wt + (int64_t)(ky * K + kx) * C;
#pragma omp simd
                for (int64_t c = 0; c < C; c++) o[c] += wp[c] * ip[c];
            }
        }
    }
}

/* [C, 1, K, K] -> [K*K, C] so the inner loop runs over contiguous channels */
static float *weights_kc(segc_ctx *ctx, const float *w, int64_t C, int K, bool flip) {
    float *t = segc_arena_alloc(&ctx->arena, (size_t)(K * K * C) * sizeof(float));
    for (int64_t c = 0; c < C; c++)
        for (int k = 0; k < K * K; k++) t[(int64_t)(flip ? K * K - 1 - k : k) * C + c] = w[c * K * K + k];
    return t;
}

static void dwconv_tokens_backward(segc_ctx *ctx, segc_node *nd) {
    const dw_saved *s = nd->saved;
    segc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    const int64_t B = s->B, H = s->H, W = s->W, C = s->C, HW = H * W;
    const int K = s->K, r = K / 2;
    const float *dy = nd->out->grad;
    segc_flops_add(2 * B * HW * C * K * K * (x->requires_grad + w->requires_grad));
    if (x->requires_grad) {
        /* dx = correlation of dy with the flipped kernel: the same row kernel */
        float *dx = segc_grad(ctx, x);
        float *wflip = weights_kc(ctx, segc_as_f32(ctx, w), C, K, true);
        float *tmp = segc_arena_alloc(&ctx->arena, (size_t)(B * HW * C) * sizeof(float));
#pragma omp parallel for schedule(static) collapse(2)
        for (int64_t bi = 0; bi < B; bi++)
            for (int64_t y = 0; y < H; y++) dw_row(dy + bi * HW * C, wflip, NULL, tmp + bi * HW * C, y, s);
        int64_t n = B * HW * C;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) dx[i] += tmp[i];
    }
    bool need_w = w->requires_grad, need_b = b && b->requires_grad;
    if (!need_w && !need_b) return;
    const float *xf = segc_as_f32(ctx, x);
    int nt = omp_get_max_threads();
    /* per-thread partial sums over rows, combined in thread order: deterministic for a thread count */
    float *part = segc_arena_calloc(&ctx->arena, (size_t)nt * (size_t)(K * K + 1) * (size_t)C * sizeof(float));
#pragma omp parallel
    {
        int tid = omp_get_thread_num();
        float *pw = part + (int64_t)tid * (K * K + 1) * C, *pb = pw + (int64_t)K * K * C;
#pragma omp for schedule(static) collapse(2)
        for (int64_t bi = 0; bi < B; bi++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t xx = 0; xx < W; xx++) {
                    const float *g = dy + (bi * HW + y * W + xx) * C;
#pragma omp simd
                    for (int64_t c = 0; c < C; c++) pb[c] += g[c];
                    for (int ky = 0; ky < K; ky++) {
                        int64_t iy = y + ky - r;
                        if (iy < 0 || iy >= H) continue;
                        for (int kx = 0; kx < K; kx++) {
                            int64_t ix = xx + kx - r;
                            if (ix < 0 || ix >= W) continue;
                            const float *ip = xf + (bi * HW + iy * W + ix) * C;
                            float *acc = pw + (int64_t)(ky * K + kx) * C;
#pragma omp simd
                            for (int64_t c = 0; c < C; c++) acc[c] += g[c] * ip[c];
                        }
                    }
                }
    }
    float *gw = need_w ? segc_grad(ctx, w) : NULL, *gb = need_b ? segc_grad(ctx, b) : NULL;
    for (int t = 0; t < nt; t++) {
        const float *pw = part + (int64_t)t * (K * K + 1) * C, *pb = pw + (int64_t)K * K * C;
        for (int64_t c = 0; c < C; c++) {
            if (gw) for (int k = 0; k < K * K; k++) gw[c * K * K + k] += pw[(int64_t)k * C + c];
            if (gb) gb[c] += pb[c];
        }
    }
}

segc_tensor *segc_dwconv2d_tokens(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *b, int64_t H,
                                  int64_t W) {
    static const char *op = "dwconv2d_tokens";
    SEGC_PROF_OP(ctx, op);
    if (!x || !w) return NULL;
    char a[96], c2[96];
    if (!segc_check_float(ctx, op, "input", x) || !segc_check_ndim(ctx, op, "input", x, 3) ||
        !segc_check_float(ctx, op, "weight", w) || !segc_check_ndim(ctx, op, "weight", w, 4))
        return NULL;
    const int64_t B = x->shape[0], C = x->shape[2];
    if (x->shape[1] != H * W || H < 1 || W < 1) {
        segc_set_error(ctx, "%s: input %s must be [B, H*W, C] with H*W = %lld*%lld", op,
                       segc_shape_str(x, a, sizeof a), (long long)H, (long long)W);
        return NULL;
    }
    int K = (int)w->shape[2];
    if (w->shape[0] != C || w->shape[1] != 1 || w->shape[3] != K || K % 2 == 0) {
        segc_set_error(ctx, "%s: weight must be [%lld, 1, K, K] with odd K, found %s", op, (long long)C,
                       segc_shape_str(w, c2, sizeof c2));
        return NULL;
    }
    if (b && (b->ndim != 1 || b->shape[0] != C)) {
        segc_set_error(ctx, "%s: bias must be [%lld], found %s", op, (long long)C, segc_shape_str(b, c2, sizeof c2));
        return NULL;
    }
    if (w->dtype != x->dtype || (b && b->dtype != x->dtype)) {
        segc_set_error(ctx, "%s: input, weight and bias must share a dtype, found %s, %s, %s", op,
                       segc_dtype_name(x->dtype), segc_dtype_name(w->dtype), b ? segc_dtype_name(b->dtype) : "-");
        return NULL;
    }
    segc_flops_add(2 * B * H * W * C * K * K);
    dw_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
    *s = (dw_saved){B, H, W, C, K};
    const float *xf = segc_as_f32(ctx, x);
    float *wt = weights_kc(ctx, segc_as_f32(ctx, w), C, K, false);
    const float *bf = b ? segc_as_f32(ctx, b) : NULL;
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 3, x->shape);
    float *yf = x->dtype == SEGC_F32 ? segc_f32(y) : segc_arena_alloc(&ctx->arena, (size_t)segc_numel(y) * 4);
    const int64_t HW = H * W;
#pragma omp parallel for schedule(static) collapse(2)
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t yy = 0; yy < H; yy++) dw_row(xf + bi * HW * C, wt, bf, yf + bi * HW * C, yy, s);
    if (x->dtype != SEGC_F32) segc_store_f32(y, yf);
    segc_tensor *ins[3] = {x, w, b};
    if (segc_needs_grad(ctx, ins, b ? 3 : 2)) segc_record(ctx, op, dwconv_tokens_backward, y, ins, b ? 3 : 2, s);
    return y;
}
