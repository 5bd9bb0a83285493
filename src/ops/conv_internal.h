/* Internal to the convolution ops (conv.c, conv_dw.c): the problem key that
 * names every cached oneDNN primitive, and the direct depthwise kernels. */
#ifndef SEGC_CONV_INTERNAL_H
#define SEGC_CONV_INTERNAL_H
#include <stdint.h>

#include "segc/ops_conv.h"

/* Full description of one convolution problem. Zero-initialised before
 * filling (it is hashed as raw bytes); `kind` says which primitive of the
 * problem (forward, backward-data, ..., or one of its reorders) it names. */
typedef struct {
    char tag[8];          /* "segcconv": keeps these keys apart from other ops' in the shared cache */
    int32_t kind, transposed, dtype, bias_dtype /* -1: no bias */, act, accumulate;
    float alpha;          /* leaky relu slope (0 otherwise) */
    int32_t nthr;         /* OpenMP threads: oneDNN partitions work (and so rounding) by it */
    int32_t wino;         /* 1: oneDNN Winograd algorithm */
    int32_t nhwc;         /* 1: x, y and their gradients channels-last (oneDNN's nhwc, no reorders) */
    int64_t n, ic, ih, iw, oc, oh, ow, kh, kw, groups;
    int64_t stride[2], dil[2], pad_l[2], pad_r[2];
} conv_key;

/* multiply-adds x2 of one forward pass (a transposed convolution scatters each
 * input pixel through the kernel, so it is counted from the input side); the
 * input and the weight gradient each cost the same again */
static inline int64_t segc_conv_flops(const conv_key *k) {
    if (k->transposed) return 2 * k->n * k->ic * k->ih * k->iw * (k->oc / k->groups) * k->kh * k->kw;
    return 2 * k->n * k->oc * k->oh * k->ow * (k->ic / k->groups) * k->kh * k->kw;
}

/* what conv.c saves for backward */
typedef struct {
    conv_key k;
    const char *op;
    void *xb, *wb;   /* x and w in the forward primitive's layouts (may alias x->data, w->data) */
} conv_saved;

/* g * act'(pre-activation), read off the saved output y (g itself without
 * activation); result in the arena */
const float *segc_conv_act_backward(segc_ctx *ctx, const conv_key *k, const segc_tensor *y, const float *g);

/* Depthwise convolution (groups == C == O) on plain NCHW, no reorders. */
bool segc_conv_dw_supported(const conv_key *k);
void segc_conv_dw_forward(segc_ctx *ctx, const conv_key *k, const segc_tensor *x, const segc_tensor *w,
                          const segc_tensor *b, segc_tensor *y);
void segc_conv_dw_backward(segc_ctx *ctx, segc_node *nd);

/* db[o] += sum over n, h, w of g at (n, o, h, w), g in NCHW or channels-last order (nhwc) */
void segc_conv_bias_grad(const float *g, float *db, int64_t n, int64_t oc, int64_t hw, bool nhwc);

/* 1x1 stride-1 NCHW convolution as batched GEMMs on the tensors (conv_1x1.c): y must be the
 * output tensor; record: also record the backward node. false: ctx error set. */
bool segc_conv_1x1_supported(const conv_key *k);
bool segc_conv_1x1_forward(segc_ctx *ctx, const conv_key *k, segc_tensor *x, segc_tensor *w, segc_tensor *b,
                           segc_tensor *y, bool record);

/* deterministic 8-lane f32 sum (fixed lane order, any ISA) */
float segc_conv_sum(const float *a, int64_t n);
#endif
