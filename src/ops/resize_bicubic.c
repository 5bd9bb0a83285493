/* Bicubic resampling of [N, C, H, W] tensors with PyTorch's
 * F.interpolate(mode="bicubic", antialias=False) arithmetic (size given):
 * cubic convolution with A = -0.75, source index scale*(dst+0.5)-0.5
 * (align_corners=False, not clamped at 0, unlike linear) or
 * dst*(in-1)/(out-1) (align_corners=True), the four taps clamped to the
 * border, all in float.
 *
 * Its use is resizing a ViT's position-embedding grid (a few thousand
 * values), so this is plain per-plane code: per-axis tables of 4 taps, the
 * forward as a 4x4 weighted sum, the backward as the transposed scatter
 * within one plane. Planes run in parallel and each is written by one
 * thread in a fixed order, so gradients are bitwise reproducible. */
#include <math.h>
#include <string.h>

#include "segc/ops.h"
#include "segc/profile.h"

typedef struct {
    int32_t *idx;   /* [out][4] clamped input indices */
    float *w;       /* [out][4] weights */
} cubic_axis;

static float cc1(float x, float A) { return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f; }
static float cc2(float x, float A) { return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A; }

static cubic_axis cubic_table(segc_ctx *ctx, int64_t in, int64_t out, bool align_corners) {
    cubic_axis t;
    t.idx = segc_arena_alloc(&ctx->arena, (size_t)out * 4 * sizeof(int32_t));
    t.w = segc_arena_alloc(&ctx->arena, (size_t)out * 4 * sizeof(float));
    const float A = -0.75f;
    float scale = align_corners ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f) : (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        float src = align_corners ? scale * (float)o : scale * ((float)o + 0.5f) - 0.5f;
        float fl = floorf(src);
        int64_t i0 = (int64_t)fl;
        float tt = src - fl;
        float w4[4] = {cc2(tt + 1.0f, A), cc1(tt, A), cc1(1.0f - tt, A), cc2(2.0f - tt, A)};
        for (int k = 0; k < 4; k++) {
            int64_t i = i0 - 1 + k;
            i = i < 0 ? 0 : (i > in - 1 ? in - 1 : i);
            t.idx[o * 4 + k] = (int32_t)i;
            t.w[o * 4 + k] = w4[k];
        }
    }
    return t;
}

typedef struct { cubic_axis th, tw; } bicubic_saved;

static void bicubic_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *y = nd->out;
    if (!x->requires_grad) return;
    const bicubic_saved *sv = nd->saved;
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    float *gx = segc_grad(ctx, x);
    const float *go = y->grad;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        float *g = gx + p * ih * iw;
        const float *gp = go + p * oh * ow;
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++) {
                float v = gp[oy * ow + ox];
                for (int a = 0; a < 4; a++) {
                    float wy = sv->th.w[oy * 4 + a] * v;
                    float *row = g + (int64_t)sv->th.idx[oy * 4 + a] * iw;
                    for (int b = 0; b < 4; b++) row[sv->tw.idx[ox * 4 + b]] += wy * sv->tw.w[ox * 4 + b];
                }
            }
    }
}

segc_tensor *segc_resize_bicubic(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w, bool align_corners) {
    SEGC_PROF_OP(ctx, "resize_bicubic");
    if (!x) return NULL;
    if (!segc_check_ndim(ctx, "resize_bicubic", "input", x, 4) || !segc_check_float(ctx, "resize_bicubic", "input", x))
        return NULL;
    char b[96];
    if (out_h < 1 || out_w < 1 || x->shape[2] < 1 || x->shape[3] < 1 || x->shape[2] > INT32_MAX || x->shape[3] > INT32_MAX) {
        segc_set_error(ctx, "resize_bicubic: input %s to output %dx%d: expected spatial sizes >= 1 (and < 2^31)",
                       segc_shape_str(x, b, sizeof b), out_h, out_w);
        return NULL;
    }
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3];
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 4, (const int64_t[]){x->shape[0], x->shape[1], out_h, out_w});
    if (!y) return NULL;
    bicubic_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    sv->th = cubic_table(ctx, ih, out_h, align_corners);
    sv->tw = cubic_table(ctx, iw, out_w, align_corners);
    const float *xs = x->dtype == SEGC_F32 ? segc_f32(x) : segc_as_f32(ctx, x);
    float *ys = x->dtype == SEGC_F32 ? segc_f32(y)
                                     : segc_arena_alloc(&ctx->arena, (size_t)segc_numel(y) * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        const float *src = xs + p * ih * iw;
        float *dst = ys + p * (int64_t)out_h * out_w;
        for (int64_t oy = 0; oy < out_h; oy++)
            for (int64_t ox = 0; ox < out_w; ox++) {
                /* rows first, then across them: PyTorch's order of the two 1-D passes */
                float acc = 0.0f;
                for (int a = 0; a < 4; a++) {
                    const float *row = src + (int64_t)sv->th.idx[oy * 4 + a] * iw;
                    float r = 0.0f;
                    for (int c = 0; c < 4; c++) r += row[sv->tw.idx[ox * 4 + c]] * sv->tw.w[ox * 4 + c];
                    acc += r * sv->th.w[oy * 4 + a];
                }
                dst[oy * out_w + ox] = acc;
            }
    }
    if (x->dtype != SEGC_F32) segc_store_f32(y, ys);
    if (segc_needs_grad(ctx, &x, 1)) segc_record(ctx, "resize_bicubic", bicubic_backward, y, &x, 1, sv);
    return y;
}
