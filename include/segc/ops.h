/* segc ops: every differentiable operation, forward and backward side by side.
 * Device-neutral interface: callers see tensors only; the CPU backend (oneDNN,
 * OpenBLAS, vectorised C + OpenMP) is chosen inside each op. */
#ifndef SEGC_OPS_H
#define SEGC_OPS_H
#include "segc/core.h"

/* dtype cast with a pass-through gradient: the bf16 path casts f32 master
 * weights to bf16 each step and gets f32 gradients back. */
segc_tensor *segc_cast(segc_ctx *ctx, segc_tensor *x, segc_dtype to);

/* Depthwise KxK conv (stride 1, same padding, odd K) on channels-last tokens x [B, H*W, C] with a
 * PyTorch depthwise weight [C, 1, K, K] and bias [C] or NULL: equals transposing to [B, C, H, W],
 * Conv2d(groups=C), and transposing back, without the transposes. */
segc_tensor *segc_dwconv2d_tokens(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *b, int64_t H,
                                  int64_t W);

/* Cross-entropy of bilinearly upsampled logits (align_corners=False) against a full-resolution
 * target, mean over pixels whose target is not ignore_index (0 when none is): equals
 * segc_cross_entropy(segc_resize_bilinear(logits, H, W, false), target) without materialising
 * the upsampled logits or their gradient. logits [N, C, h, w] f32/bf16, target [N, H, W] u8/i32/i64;
 * returns a 1-element f32 loss. */
segc_tensor *segc_resize_cross_entropy(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, int ignore_index);

#include "segc/ops_elementwise.h"
#include "segc/ops_shape.h"
#include "segc/ops_conv.h"
#include "segc/ops_matmul.h"
#include "segc/ops_norm.h"
#include "segc/ops_loss.h"
#endif
