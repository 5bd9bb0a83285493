/* segc ops: convolution, transposed convolution and pooling (see ops.h for
 * conventions).
 *
 * All take NCHW tensors of f32 or bf16 and return the input's dtype;
 * gradients are f32. Semantics follow PyTorch (Conv2d, ConvTranspose2d,
 * MaxPool2d, AvgPool2d, AdaptiveAvgPool2d). Convolutions run on oneDNN
 * (layouts chosen by oneDNN, reordered from/to NCHW inside the op), except
 * stride-1 depthwise convolutions, which run on direct NCHW kernels; bf16
 * convolutions use oneDNN's bf16 kernels where the CPU has them and otherwise
 * compute in f32 from the bf16 values. Pooling runs on direct NCHW kernels.
 * Results are bitwise identical for the same inputs and thread count (the
 * direct kernels: for any thread count). */
#ifndef SEGC_OPS_CONV_H
#define SEGC_OPS_CONV_H
#include "segc/core.h"

/* activation fused after bias (oneDNN post-op); its backward uses the saved
 * output, so LEAKY_RELU needs act_alpha >= 0 */
typedef enum { SEGC_ACT_NONE = 0, SEGC_ACT_RELU, SEGC_ACT_LEAKY_RELU } segc_act;

typedef struct {
    int stride[2], pad[2], dilation[2], groups;   /* [0] = height, [1] = width */
    int output_padding[2];                        /* transposed conv only; 0 for conv2d */
    segc_act act;
    float act_alpha;                              /* leaky relu negative slope */
} segc_conv_params;

/* Convolution algorithm, process-wide. AUTO: oneDNN's Winograd F(4x4, 3x3) for
 * f32 3x3 stride-1 undilated ungrouped convolutions where oneDNN has a kernel
 * for it (AVX-512 CPUs; 2.25x fewer multiplies, results within ~1e-5 relative
 * of direct), direct otherwise. DIRECT: direct everywhere (bitwise what oneDNN's
 * direct kernels give, as PyTorch runs them). WINOGRAD: as AUTO (the name says
 * what was asked). The environment variable SEGC_CONV_ALGO=auto|direct|winograd
 * overrides what the program sets. */
typedef enum { SEGC_CONV_ALGO_AUTO = 0, SEGC_CONV_ALGO_DIRECT, SEGC_CONV_ALGO_WINOGRAD } segc_conv_algo;
void segc_conv_set_algo(segc_conv_algo a);
segc_conv_algo segc_conv_get_algo(void);   /* after the environment override */
bool segc_conv_algo_parse(const char *name, segc_conv_algo *out);   /* "auto" | "direct" | "winograd" */

/* stride 1, pad 0, dilation 1, groups 1, no output padding, no activation */
segc_conv_params segc_conv_params_default(void);

/* x [N,C,H,W], w [O,C/groups,kh,kw], b [O] or NULL; p NULL means defaults.
 * Output [N,O,OH,OW], OH = (H + 2*pad - dilation*(kh-1) - 1)/stride + 1.
 * Gradients for x, w and b. For bf16 x, w must be bf16 and b may be f32 or
 * bf16. */
segc_tensor *segc_conv2d(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *b,
                         const segc_conv_params *p);

/* x [N,Cin,H,W], w [Cin,Cout/groups,kh,kw], b [Cout] or NULL.
 * Output [N,Cout,OH,OW], OH = (H-1)*stride - 2*pad + dilation*(kh-1) +
 * output_padding + 1; output_padding must be smaller than stride or
 * dilation. */
segc_tensor *segc_conv_transpose2d(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *b,
                                   const segc_conv_params *p);

/* Pooling windows: kernel kh x kw, stride sh x sw, padding ph x pw (at most
 * half the kernel; padded cells never win a max and are averaged as zeros).
 * ceil_mode rounds the output size up, keeping only windows that start
 * inside the input or the left padding. */
segc_tensor *segc_max_pool2d(segc_ctx *ctx, segc_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw,
                             bool ceil_mode);
/* count_include_pad: divide by the window size clipped to the padded input
 * (PyTorch's rule) instead of by the number of real input elements. */
segc_tensor *segc_avg_pool2d(segc_ctx *ctx, segc_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw,
                             bool ceil_mode, bool count_include_pad);
/* output cell i averages rows floor(i*H/out_h) .. ceil((i+1)*H/out_h)-1
 * (same for columns) */
segc_tensor *segc_adaptive_avg_pool2d(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w);

#endif
