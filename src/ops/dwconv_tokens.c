/* Depthwise KxK convolution (stride 1, "same" zero padding) on a channels-last token tensor
 * x [B, H*W, C] -> [B, H*W, C]. SegFormer's Mix-FFN applies its 3x3 depthwise conv to the tokens
 * that the linear layers produce; doing it in this layout removes the two largest transposes of
 * every block (PyTorch pays them). Weights keep PyTorch's depthwise Conv2d layout [C, 1, K, K]. */
#include <omp.h>
#include <string.h>

#include "segc/ops.h"
#include "segc/profile.h"

typedef struct { int64_t B, H, W, C; int K; } dw_saved;

/* Rows of W*C values as f32. An f32 tensor's rows are used in place; a bf16 tensor's are widened
 * into a small per-thread ring of K slots (a bf16 input is never converted whole: each row is
 * widened once per thread while the output rows that read it are computed). One output row
 * fetches at most K rows, and the ring evicts in insertion order, so a row it fetched stays valid
 * until the row is done. */
typedef struct {
    const float *f;      /* f32 source, or NULL */
    const uint16_t *h;   /* bf16 source */
    int64_t WC;
    int K, next;
    float *buf;          /* K slots of WC floats */
    int64_t key[16];     /* row held by each slot (-1: none) */
} row_src;

static void row_src_init(row_src *rs, const float *f, const uint16_t *h, int64_t WC, int K, float *buf) {
    *rs = (row_src){f, h, WC, K, 0, buf, {0}};
    for (int i = 0; i < K; i++) rs->key[i] = -1;
}
static const float *row_at(row_src *rs, int64_t row) {
    if (rs->f) return rs->f + row * rs->WC;
    for (int i = 0; i < rs->K; i++)
        if (rs->key[i] == row) return rs->buf + i * rs->WC;
    int s = rs->next;
    rs->next = (s + 1) % rs->K;
    rs->key[s] = row;
    segc_ew_load_bf16(rs->h + row * rs->WC, rs->buf + s * rs->WC, rs->WC);
    return rs->buf + s * rs->WC;
}

/* out[x, c] = bias[c] + sum_k w[k, c] * in[y + ky - r][x + kx - r, c] for output row y of sample bi */
static void dw_row(row_src *in, const float *wt /* [K*K][C] */, const float *bias, float *out, int64_t bi, int64_t y,
                   const dw_saved *s) {
    const int64_t W = s->W, C = s->C, H = s->H;
    const int K = s->K, r = K / 2;
    const float *rows[16];
    for (int ky = 0; ky < K; ky++) {
        int64_t iy = y + ky - r;
        rows[ky] = iy < 0 || iy >= H ? NULL : row_at(in, bi * H + iy);
    }
    for (int64_t x = 0; x < W; x++) {
        float *o = out + x * C;
        if (bias) memcpy(o, bias, (size_t)C * sizeof(float));
        else memset(o, 0, (size_t)C * sizeof(float));
        for (int ky = 0; ky < K; ky++) {
            if (!rows[ky]) continue;
            for (int kx = 0; kx < K; kx++) {
                int64_t ix = x + kx - r;
                if (ix < 0 || ix >= W) continue;
                const float *ip = rows[ky] + ix * C, *wp = wt + (int64_t)(ky * K + kx) * C;
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

/* per-thread scratch: a ring of K widened rows and two row buffers */
static float *thread_scratch(segc_ctx *ctx, const dw_saved *s, int nt) {
    return segc_arena_alloc(&ctx->arena, (size_t)nt * (size_t)(s->K + 2) * (size_t)(s->W * s->C) * sizeof(float));
}

static void dwconv_tokens_backward(segc_ctx *ctx, segc_node *nd) {
    const dw_saved *s = nd->saved;
    segc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    const int64_t B = s->B, H = s->H, W = s->W, C = s->C, WC = W * C;
    const int K = s->K, r = K / 2;
    const float *dy = nd->out->grad;
    const uint16_t *dy16 = nd->out->grad_bf16;   /* ctx->bf16_grads: instead of dy */
    segc_flops_add(2 * B * H * WC * K * K * (x->requires_grad + w->requires_grad));
    const int nt = omp_get_max_threads();
    float *scratch = thread_scratch(ctx, s, nt);
    const size_t per = (size_t)(K + 2) * (size_t)WC;
    if (x->requires_grad) {
        /* dx = correlation of dy with the flipped kernel: the same row kernel */
        bool fresh;
        uint16_t *dx16 = segc_grad_bf16_dst(ctx, x, &fresh);
        float *dx = dx16 ? NULL : segc_ew_grad_dst(ctx, x, &fresh);
        float *wflip = weights_kc(ctx, segc_as_f32(ctx, w), C, K, true);
#pragma omp parallel
        {
            float *sc = scratch + (size_t)omp_get_thread_num() * per, *orow = sc + (size_t)K * WC;
            row_src rs;
            row_src_init(&rs, dy, dy16, WC, K, sc);
#pragma omp for schedule(static) collapse(2)
            for (int64_t bi = 0; bi < B; bi++)
                for (int64_t y = 0; y < H; y++) {
                    int64_t off = (bi * H + y) * WC;
                    if (dx && fresh) {
                        dw_row(&rs, wflip, NULL, dx + off, bi, y, s);
                        continue;
                    }
                    dw_row(&rs, wflip, NULL, orow, bi, y, s);
                    if (dx) {
#pragma omp simd
                        for (int64_t i = 0; i < WC; i++) dx[off + i] += orow[i];
                    } else {
                        segc_ew_put_grad_bf16(orow, dx16 + off, WC, fresh);
                    }
                }
        }
    }
    bool need_w = w->requires_grad, need_b = b && b->requires_grad;
    if (!need_w && !need_b) return;
    const bool xbf = x->dtype == SEGC_BF16;
    /* per-thread partial sums over rows, combined in thread order: deterministic for a thread count */
    float *part = segc_arena_calloc(&ctx->arena, (size_t)nt * (size_t)(K * K + 1) * (size_t)C * sizeof(float));
#pragma omp parallel
    {
        int tid = omp_get_thread_num();
        float *pw = part + (int64_t)tid * (K * K + 1) * C, *pb = pw + (int64_t)K * K * C;
        float *sc = scratch + (size_t)tid * per, *grow = sc + (size_t)K * WC;
        row_src rs;
        row_src_init(&rs, xbf ? NULL : segc_f32(x), xbf ? segc_bf16p(x) : NULL, WC, K, sc);
#pragma omp for schedule(static) collapse(2)
        for (int64_t bi = 0; bi < B; bi++)
            for (int64_t y = 0; y < H; y++) {
                const float *grow_f = dy ? dy + (bi * H + y) * WC : grow;
                if (!dy) segc_ew_load_bf16(dy16 + (bi * H + y) * WC, grow, WC);
                const float *rows[16];
                for (int ky = 0; ky < K; ky++) {
                    int64_t iy = y + ky - r;
                    rows[ky] = iy < 0 || iy >= H || !need_w ? NULL : row_at(&rs, bi * H + iy);
                }
                for (int64_t xx = 0; xx < W; xx++) {
                    const float *g = grow_f + xx * C;
#pragma omp simd
                    for (int64_t c = 0; c < C; c++) pb[c] += g[c];
                    for (int ky = 0; ky < K; ky++) {
                        if (!rows[ky]) continue;
                        for (int kx = 0; kx < K; kx++) {
                            int64_t ix = xx + kx - r;
                            if (ix < 0 || ix >= W) continue;
                            const float *ip = rows[ky] + ix * C;
                            float *acc = pw + (int64_t)(ky * K + kx) * C;
#pragma omp simd
                            for (int64_t c = 0; c < C; c++) acc[c] += g[c] * ip[c];
                        }
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
    if (w->shape[0] != C || w->shape[1] != 1 || w->shape[3] != K || K % 2 == 0 || K > 15) {
        segc_set_error(ctx, "%s: weight must be [%lld, 1, K, K] with odd K <= 15, found %s", op, (long long)C,
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
    const bool bf16 = x->dtype == SEGC_BF16;
    float *wt = weights_kc(ctx, segc_as_f32(ctx, w), C, K, false);
    const float *bf = b ? segc_as_f32(ctx, b) : NULL;
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 3, x->shape);
    if (!y) return NULL;
    const int64_t WC = W * C;
    const int nt = omp_get_max_threads();
    float *scratch = bf16 ? thread_scratch(ctx, s, nt) : NULL;
#pragma omp parallel
    {
        float *sc = bf16 ? scratch + (size_t)omp_get_thread_num() * (size_t)(K + 2) * (size_t)WC : NULL;
        row_src rs;
        row_src_init(&rs, bf16 ? NULL : segc_f32(x), bf16 ? segc_bf16p(x) : NULL, WC, K, sc);
#pragma omp for schedule(static) collapse(2)
        for (int64_t bi = 0; bi < B; bi++)
            for (int64_t yy = 0; yy < H; yy++) {
                int64_t off = (bi * H + yy) * WC;
                if (!bf16) {
                    dw_row(&rs, wt, bf, segc_f32(y) + off, bi, yy, s);
                } else {   /* the row in f32, rounded once */
                    float *orow = sc + (size_t)K * WC;
                    dw_row(&rs, wt, bf, orow, bi, yy, s);
                    segc_ew_store_bf16(orow, segc_bf16p(y) + off, WC);
                }
            }
    }
    segc_tensor *ins[3] = {x, w, b};
    if (segc_needs_grad(ctx, ins, b ? 3 : 2))
        segc_node_reads_bf16_grad(segc_record(ctx, op, dwconv_tokens_backward, y, ins, b ? 3 : 2, s));
    return y;
}
