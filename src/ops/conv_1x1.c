/* 1x1 stride-1 convolutions as GEMMs on the tensors themselves: per image
 * y[n] (O x HW) = W (O x C) x[n] (C x HW) on NCHW, one y (NHW x O) = x (NHW x C) W^T on NHWC. oneDNN's convolutions want a blocked layout and
 * reorder x, y and both gradients in and out of it on every call (on SegFormer-B0's bf16
 * classifier, 256 -> 150 channels at 128x128, the reorders and backward-weights took ~40 ms a
 * step); the GEMMs need no copy and run on the same AMX/AVX-512 kernels. On channels-last they
 * also avoid oneDNN 2.6's NHWC 1x1 backward-weights kernels, 15-30 % slower than its blocked ones. */
#include <omp.h>

#include "conv_internal.h"
#include "segc/ops.h"
#include "segc/profile.h"

bool segc_conv_1x1_supported(const conv_key *k) {
    return !k->transposed && k->groups == 1 && k->kh == 1 && k->kw == 1 && k->stride[0] == 1 &&
           k->stride[1] == 1 && k->pad_l[0] == 0 && k->pad_l[1] == 0 && k->pad_r[0] == 0 && k->pad_r[1] == 0;
}

/* y[n, o, :] = act(acc[n, o, :] + b[o]), stored in y's dtype (f32 rounding first, as oneDNN) */
static inline float bias_at(const segc_tensor *b, int64_t o) {
    return !b ? 0.0f : b->dtype == SEGC_BF16 ? segc_bf16_to_f32(segc_bf16p(b)[o]) : segc_f32(b)[o];
}

static void finish_rows(const conv_key *k, const float *acc, const segc_tensor *b, segc_tensor *y) {
    /* NCHW: rows (n, o) of hw values, one bias each; NHWC: rows of O values, bias per column */
    const int64_t rows = k->nhwc ? k->n * k->oh * k->ow : k->n * k->oc, len = k->nhwc ? k->oc : k->oh * k->ow;
    const bool bf16 = y->dtype == SEGC_BF16;
    const float slope = k->act == SEGC_ACT_LEAKY_RELU ? k->alpha : 0.0f;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float bv = bias_at(b, r % k->oc);
        const float *src = acc + r * len;
        for (int64_t i = 0; i < len; i++) {
            float v = src[i] + (k->nhwc ? bias_at(b, i) : bv);
            if (k->act != SEGC_ACT_NONE) v = v > 0.0f ? v : v * slope;
            if (bf16) segc_bf16p(y)[r * len + i] = segc_f32_to_bf16(v);
            else segc_f32(y)[r * len + i] = v;
        }
    }
}

static void conv_1x1_backward(segc_ctx *ctx, segc_node *nd) {
    const conv_saved *s = nd->saved;
    const conv_key *k = &s->k;
    segc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    const int64_t N = k->n, C = k->ic, O = k->oc, HW = k->oh * k->ow;
    bool fresh_x = !x->grad && !x->grad_bf16 && !x->is_param, fresh_w = !w->grad && !w->grad_bf16 && !w->is_param;
    float *gx = NULL, *gw = NULL;
    if (x->requires_grad) gx = fresh_x ? (x->grad = segc_grad_buffer(ctx, N * C * HW, false)) : segc_grad(ctx, x);
    if (w->requires_grad) gw = fresh_w ? (w->grad = segc_grad_buffer(ctx, O * C, false)) : segc_grad(ctx, w);
    float *gb = b && b->requires_grad ? segc_grad(ctx, b) : NULL;
    segc_flops_add(segc_conv_flops(k) * ((gx != NULL) + (gw != NULL)));   /* as conv.c's backward counts */
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);   /* masked and rounded dY */
    const float *g = segc_conv_act_backward(ctx, k, nd->out, nd->out->grad);
    const void *gp = g;
    segc_dtype gdt = SEGC_F32;
    if (x->dtype == SEGC_BF16) gp = segc_gemm_round_grad(ctx, g, N * O * HW, &gdt);
    bool ok = true;
    if (k->nhwc) {
        const int64_t R = N * HW;
        if (gx) /* dx (R x C) = dy (R x O) W (O x C) */
            ok &= segc_gemm_run(ctx, "conv2d", &(segc_gemm){
                .batch = 1, .M = R, .N = C, .K = O, .a = gp, .a_dtype = gdt, .a_rs = O, .a_cs = 1,
                .b = w->data, .b_dtype = w->dtype, .b_rs = C, .b_cs = 1,
                .c = gx, .c_dtype = SEGC_F32, .c_rs = C, .alpha = 1.0f, .accumulate = !fresh_x});
        if (gw) /* dW (O x C) = dy^T (O x R) x (R x C) */
            ok &= segc_gemm_run(ctx, "conv2d", &(segc_gemm){
                .batch = 1, .M = O, .N = C, .K = R, .a = gp, .a_dtype = gdt, .a_rs = 1, .a_cs = O,
                .b = x->data, .b_dtype = x->dtype, .b_rs = C, .b_cs = 1,
                .c = gw, .c_dtype = SEGC_F32, .c_rs = C, .alpha = 1.0f, .accumulate = !fresh_w});
        if (gb) segc_conv_bias_grad(g, gb, N, O, HW, true);
        (void)ok;
        segc_arena_rewind(&ctx->arena, mark);
        return;
    }
    if (gx) /* dx[n] (C x HW) = W^T (C x O) dy[n] (O x HW) */
        ok &= segc_gemm_run(ctx, "conv2d", &(segc_gemm){
            .batch = N, .M = C, .N = HW, .K = O, .a = w->data, .a_dtype = w->dtype, .a_bs = 0, .a_rs = 1, .a_cs = C,
            .b = gp, .b_dtype = gdt, .b_bs = O * HW, .b_rs = HW, .b_cs = 1,
            .c = gx, .c_dtype = SEGC_F32, .c_bs = C * HW, .c_rs = HW, .alpha = 1.0f, .accumulate = !fresh_x});
    if (gw) /* dW (O x C) = sum_n dy[n] (O x HW) x[n]^T (HW x C) */
        ok &= segc_gemm_run(ctx, "conv2d", &(segc_gemm){
            .batch = N, .M = O, .N = C, .K = HW, .a = gp, .a_dtype = gdt, .a_bs = O * HW, .a_rs = HW, .a_cs = 1,
            .b = x->data, .b_dtype = x->dtype, .b_bs = C * HW, .b_rs = 1, .b_cs = HW,
            .c = gw, .c_dtype = SEGC_F32, .c_bs = 0, .c_rs = C, .alpha = 1.0f, .accumulate = !fresh_w});
    if (gb) segc_conv_bias_grad(g, gb, N, O, HW, false);
    (void)ok;   /* a failed GEMM has set the ctx error, which backward reports */
    segc_arena_rewind(&ctx->arena, mark);
}

bool segc_conv_1x1_forward(segc_ctx *ctx, const conv_key *k, segc_tensor *x, segc_tensor *w, segc_tensor *b,
                           segc_tensor *y, bool record) {
    const int64_t N = k->n, C = k->ic, O = k->oc, HW = k->oh * k->ow;
    /* straight into y when nothing follows the GEMM; else f32 rows, then bias and activation */
    const bool direct = !b && k->act == SEGC_ACT_NONE && y->dtype == SEGC_F32;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    float *acc = direct ? segc_f32(y) : segc_arena_alloc(&ctx->arena, (size_t)(N * O * HW) * sizeof(float));
    bool ok = k->nhwc
                  ? segc_gemm_run(ctx, "conv2d", &(segc_gemm){   /* y (NHW x O) = x (NHW x C) W^T */
                        .batch = 1, .M = N * HW, .N = O, .K = C, .a = x->data, .a_dtype = x->dtype, .a_rs = C, .a_cs = 1,
                        .b = w->data, .b_dtype = w->dtype, .b_rs = 1, .b_cs = C,
                        .c = acc, .c_dtype = SEGC_F32, .c_rs = O, .alpha = 1.0f})
                  : segc_gemm_run(ctx, "conv2d", &(segc_gemm){   /* y[n] (O x HW) = W x[n] (C x HW) */
                        .batch = N, .M = O, .N = HW, .K = C, .a = w->data, .a_dtype = w->dtype, .a_bs = 0, .a_rs = C,
                        .a_cs = 1, .b = x->data, .b_dtype = x->dtype, .b_bs = C * HW, .b_rs = HW, .b_cs = 1,
                        .c = acc, .c_dtype = SEGC_F32, .c_bs = O * HW, .c_rs = HW, .alpha = 1.0f});
    if (ok && !direct) finish_rows(k, acc, b, y);
    segc_arena_rewind(&ctx->arena, mark);
    if (!ok) return false;
    if (record) {
        conv_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
        *s = (conv_saved){.k = *k, .op = "conv2d"};
        segc_tensor *ins[3] = {x, w, b};
        segc_record(ctx, "conv2d", conv_1x1_backward, y, ins, b ? 3 : 2, s);
    }
    return true;
}
