/* Depthwise convolution (groups == in channels == out channels) as direct
 * loops over plain NCHW planes. oneDNN's depthwise kernels need blocked
 * layouts, and the two reorders around them cost more than the convolution
 * itself (2x256x64x64 3x3: 6 ms conv + 6.5 ms reorders vs about 2 ms here).
 *
 * One plane (n, c) is one unit of work: forward and input-gradient threads
 * own whole planes, weight/bias-gradient threads own whole channels and loop
 * over the batch in order, so results do not depend on the thread count.
 * Inner loops run along an output row (contiguous for stride 1). */
#include <omp.h>
#include <string.h>

#include "conv_internal.h"
#include "segc/ops.h"

typedef float v8f __attribute__((vector_size(32)));

float segc_conv_sum(const float *a, int64_t n) {
    v8f acc = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f x;
        memcpy(&x, a + i, sizeof x);
        acc += x;
    }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i];
    return s;
}

float segc_conv_dot(const float *a, const float *b, int64_t n) {
    v8f acc = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f x, y;
        memcpy(&x, a + i, sizeof x);
        memcpy(&y, b + i, sizeof y);
        acc += x * y;
    }
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* b read with a stride (stride-2 convolutions) */
static float dot_strided(const float *a, const float *b, int64_t stride, int64_t n) {
    float s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) s[l] += a[i + l] * b[(i + l) * stride];
    float r = (s[0] + s[2]) + (s[1] + s[3]);
    for (; i < n; i++) r += a[i] * b[i * stride];
    return r;
}

bool segc_conv_dw_supported(const conv_key *k) {
    return !k->transposed && k->groups == k->ic && k->oc == k->ic;
}

/* Valid outputs [lo, hi) of one kernel tap along an axis: the input index
 * o*stride + off must lie in [0, in). */
typedef struct { int64_t off, lo, hi; } tap;

static tap *taps(segc_ctx *ctx, int64_t ksz, int64_t dil, int64_t pad, int64_t stride, int64_t in, int64_t out) {
    tap *t = segc_arena_alloc(&ctx->arena, (size_t)ksz * sizeof *t);
    for (int64_t j = 0; j < ksz; j++) {
        int64_t off = j * dil - pad;
        int64_t lo = off < 0 ? (-off + stride - 1) / stride : 0;
        int64_t hi = in - 1 - off >= 0 ? (in - 1 - off) / stride + 1 : 0;
        if (hi > out) hi = out;
        if (lo > hi) lo = hi;
        t[j] = (tap){off, lo, hi};
    }
    return t;
}

/* f32 view of a plane: the data itself, or converted into buf */
static const float *plane_f32(const segc_tensor *t, int64_t plane, int64_t size, float *buf) {
    if (t->dtype == SEGC_F32) return segc_f32(t) + plane * size;
    segc_bf16_to_f32_n(segc_bf16p(t) + plane * size, buf, size);
    return buf;
}

static const float *weights_f32(segc_ctx *ctx, const segc_tensor *w) {
    return w->dtype == SEGC_F32 ? segc_f32(w) : segc_as_f32(ctx, w);
}

void segc_conv_dw_forward(segc_ctx *ctx, const conv_key *k, const segc_tensor *x, const segc_tensor *w,
                          const segc_tensor *b, segc_tensor *y) {
    const int64_t H = k->ih, W = k->iw, OH = k->oh, OW = k->ow, KH = k->kh, KW = k->kw, C = k->ic;
    const int64_t sh = k->stride[0], sw = k->stride[1];
    const tap *th = taps(ctx, KH, k->dil[0], k->pad_l[0], sh, H, OH);
    const tap *tw = taps(ctx, KW, k->dil[1], k->pad_l[1], sw, W, OW);
    const float *wf = weights_f32(ctx, w), *bf = b ? (b->dtype == SEGC_F32 ? segc_f32(b) : segc_as_f32(ctx, b)) : NULL;
    const bool bf16 = x->dtype == SEGC_BF16;
    const float slope = k->act == SEGC_ACT_LEAKY_RELU ? k->alpha : 0.0f;
    int nthr = omp_get_max_threads();
    size_t per = bf16 ? ((size_t)(H * W + OH * OW) + 15) & ~(size_t)15 : 0;   /* 64-byte multiples */
    float *scratch = bf16 ? segc_arena_alloc(&ctx->arena, (size_t)nthr * per * sizeof(float)) : NULL;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < k->n * C; pl++) {
        int64_t c = pl % C;
        float *buf = bf16 ? scratch + (size_t)omp_get_thread_num() * per : NULL;
        const float *xp = plane_f32(x, pl, H * W, buf);
        float *yp = bf16 ? buf + H * W : segc_f32(y) + pl * OH * OW;
        const float *wc = wf + c * KH * KW;
        float bias = bf ? bf[c] : 0.0f;
        for (int64_t oh = 0; oh < OH; oh++) {
            float *restrict acc = yp + oh * OW;
            for (int64_t ow = 0; ow < OW; ow++) acc[ow] = bias;
            for (int64_t i = 0; i < KH; i++) {
                int64_t ih = oh * sh + th[i].off;
                if (oh < th[i].lo || oh >= th[i].hi) continue;
                const float *row = xp + ih * W;
                for (int64_t j = 0; j < KW; j++) {
                    const float wv = wc[i * KW + j];
                    const float *restrict r = row + tw[j].off;
                    if (sw == 1)
                        for (int64_t ow = tw[j].lo; ow < tw[j].hi; ow++) acc[ow] += wv * r[ow];
                    else
                        for (int64_t ow = tw[j].lo; ow < tw[j].hi; ow++) acc[ow] += wv * r[ow * sw];
                }
            }
            if (k->act != SEGC_ACT_NONE)
                for (int64_t ow = 0; ow < OW; ow++) acc[ow] = acc[ow] > 0 ? acc[ow] : acc[ow] * slope;
        }
        if (bf16) segc_f32_to_bf16_n(yp, segc_bf16p(y) + pl * OH * OW, OH * OW);
    }
}

void segc_conv_dw_backward(segc_ctx *ctx, segc_node *nd) {
    const conv_saved *s = nd->saved;
    const conv_key *k = &s->k;
    segc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    const int64_t H = k->ih, W = k->iw, OH = k->oh, OW = k->ow, KH = k->kh, KW = k->kw, C = k->ic, N = k->n;
    const int64_t sh = k->stride[0], sw = k->stride[1];
    const float *g = segc_conv_act_backward(ctx, k, nd->out, nd->out->grad);
    const tap *th = taps(ctx, KH, k->dil[0], k->pad_l[0], sh, H, OH);
    const tap *tw = taps(ctx, KW, k->dil[1], k->pad_l[1], sw, W, OW);

    if (x->requires_grad) {
        const float *wf = weights_f32(ctx, w);
        float *gx = segc_grad(ctx, x);
#pragma omp parallel for schedule(static)
        for (int64_t pl = 0; pl < N * C; pl++) {
            const float *gp = g + pl * OH * OW, *wc = wf + (pl % C) * KH * KW;
            float *dx = gx + pl * H * W;
            for (int64_t oh = 0; oh < OH; oh++) {
                const float *restrict grow = gp + oh * OW;
                for (int64_t i = 0; i < KH; i++) {
                    if (oh < th[i].lo || oh >= th[i].hi) continue;
                    float *drow = dx + (oh * sh + th[i].off) * W;
                    for (int64_t j = 0; j < KW; j++) {
                        const float wv = wc[i * KW + j];
                        float *restrict d = drow + tw[j].off;
                        if (sw == 1)
                            for (int64_t ow = tw[j].lo; ow < tw[j].hi; ow++) d[ow] += wv * grow[ow];
                        else
                            for (int64_t ow = tw[j].lo; ow < tw[j].hi; ow++) d[ow * sw] += wv * grow[ow];
                    }
                }
            }
        }
    }

    bool need_dw = w->requires_grad, need_db = b && b->requires_grad;
    if (!need_dw && !need_db) return;
    float *gw = need_dw ? segc_grad(ctx, w) : NULL, *gb = need_db ? segc_grad(ctx, b) : NULL;
    const bool bf16 = x->dtype == SEGC_BF16;
    int nthr = omp_get_max_threads();
    size_t per = ((size_t)(KH * KW) * 2 + (bf16 ? (size_t)(H * W) : 0) + 15) & ~(size_t)15;
    float *scratch = segc_arena_alloc(&ctx->arena, (size_t)nthr * per * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double *acc = (double *)(scratch + (size_t)omp_get_thread_num() * per);   /* KH*KW doubles */
        float *buf = (float *)(acc + KH * KW);
        double bsum = 0;
        for (int64_t t = 0; t < KH * KW; t++) acc[t] = 0;
        for (int64_t n = 0; n < N; n++) {
            const float *gp = g + (n * C + c) * OH * OW;
            if (need_db) bsum += segc_conv_sum(gp, OH * OW);
            if (!need_dw) continue;
            const float *xp = plane_f32(x, n * C + c, H * W, buf);
            for (int64_t i = 0; i < KH; i++)
                for (int64_t oh = th[i].lo; oh < th[i].hi; oh++) {
                    const float *grow = gp + oh * OW, *xrow = xp + (oh * sh + th[i].off) * W;
                    for (int64_t j = 0; j < KW; j++) {
                        int64_t lo = tw[j].lo, len = tw[j].hi - lo;
                        const float *xr = xrow + tw[j].off + lo * sw;
                        acc[i * KW + j] += sw == 1 ? segc_conv_dot(grow + lo, xr, len)
                                                   : dot_strided(grow + lo, xr, sw, len);
                    }
                }
        }
        if (need_dw)
            for (int64_t t = 0; t < KH * KW; t++) gw[c * KH * KW + t] += (float)acc[t];
        if (need_db) gb[c] += (float)bsum;
    }
}
