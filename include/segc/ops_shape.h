/* segc ops: shape and resampling (see ops.h for conventions)
 *
 * Data-movement ops (reshape, permute, concat, split, slice, pad, nearest
 * resize) accept every dtype; gradients flow only through f32/bf16 tensors.
 * Dimension arguments may be negative (counted from the end, PyTorch-style).
 */
#ifndef SEGC_OPS_SHAPE_H
#define SEGC_OPS_SHAPE_H
#include "segc/core.h"

/* View x with a new shape (one entry may be -1, inferred). Shares x's data:
 * no copy. */
segc_tensor *segc_reshape(segc_ctx *ctx, segc_tensor *x, int ndim, const int64_t *shape);
/* Merge dims start_dim..end_dim (inclusive) into one; a view like reshape. */
segc_tensor *segc_flatten(segc_ctx *ctx, segc_tensor *x, int start_dim, int end_dim);

/* Output dim i is input dim perm[i] (perm has x->ndim entries). */
segc_tensor *segc_permute(segc_ctx *ctx, segc_tensor *x, const int *perm);
/* Channels-last (core.h: segc_tensor.nhwc): x [N, C, H, W] stored NHWC, and back; the shape is
 * unchanged, the data moves once, gradients flow through. A tensor already in the asked layout
 * is returned as it is. */
segc_tensor *segc_to_channels_last(segc_ctx *ctx, segc_tensor *x);
segc_tensor *segc_to_channels_first(segc_ctx *ctx, segc_tensor *x);
segc_tensor *segc_transpose(segc_ctx *ctx, segc_tensor *x, int d0, int d1);

/* Concatenate n tensors (same dtype, same shape except dim; pieces of size 0
 * along dim are allowed). */
segc_tensor *segc_concat(segc_ctx *ctx, segc_tensor *const *xs, int n, int dim);
/* Split x along dim into n pieces of the given sizes (summing to the dim's
 * size); writes outs[0..n-1] (each differentiable). Returns false on error
 * (outs then all NULL). */
bool segc_split(segc_ctx *ctx, segc_tensor *x, const int64_t *sizes, int n, int dim, segc_tensor **outs);
/* x[..., start:end:step, ...] along dim. Negative start/end count from the
 * end; end beyond the size is clamped (so INT64_MAX means "to the end");
 * start outside [-size, size] or step < 1 is an error. */
segc_tensor *segc_slice(segc_ctx *ctx, segc_tensor *x, int dim, int64_t start, int64_t end, int64_t step);

typedef enum { SEGC_PAD_CONSTANT = 0, SEGC_PAD_REFLECT, SEGC_PAD_REPLICATE } segc_pad_mode;
/* PyTorch F.pad: pads = (left, right) pairs from the last dim backwards
 * (n_pads even, n_pads/2 <= ndim). Negative pads crop. Reflect needs every
 * pad < the dim's size; replicate needs a non-empty dim. */
segc_tensor *segc_pad(segc_ctx *ctx, segc_tensor *x, const int *pads, int n_pads, segc_pad_mode mode, float value);

/* F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=...)
 * on x [N, C, H, W] (f32/bf16). */
segc_tensor *segc_resize_bilinear(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w, bool align_corners);
/* mode="bicubic" (antialias=False): cubic convolution, A = -0.75, taps
 * clamped at the border; f32/bf16, gradients for x. Meant for small maps
 * (a ViT's position-embedding grid). */
segc_tensor *segc_resize_bicubic(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w, bool align_corners);
/* mode="nearest" (src = floor(dst * in/out)) and mode="nearest-exact"
 * (src = floor((dst + 0.5) * in/out)); any dtype (labels too), gradients for
 * float inputs. */
segc_tensor *segc_resize_nearest(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w);
segc_tensor *segc_resize_nearest_exact(segc_ctx *ctx, segc_tensor *x, int out_h, int out_w);

#endif
