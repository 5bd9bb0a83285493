/* segc ops: normalisation layers (see ops.h for conventions).
 *
 * All take f32 or bf16 activations and return the same dtype; statistics are
 * computed in f32. gamma/beta (and any affine parameter) may be f32 or bf16
 * whatever the activation dtype, and may be NULL (no scale / no shift).
 * Gradients flow to x, gamma and beta. Results are bitwise identical for any
 * thread count. */
#ifndef SEGC_OPS_NORM_H
#define SEGC_OPS_NORM_H
#include "segc/core.h"

/* PyTorch LayerNorm over the last dim: x[..., C], gamma/beta [C] or NULL. */
segc_tensor *segc_layer_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta, float eps);

/* The transformer residual pattern in one pass over memory: returns
 * LayerNorm(x + residual) and stores x + residual (same dtype as x, rounded
 * to bf16 before normalising when bf16) in *sum_out when sum_out is not NULL.
 * Both results are differentiable. x and residual have the same shape. */
segc_tensor *segc_add_layer_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *residual, segc_tensor *gamma,
                                 segc_tensor *beta, float eps, segc_tensor **sum_out);

/* PyTorch BatchNorm over x[N, C, ...] (any number of spatial dims, incl. none).
 * ctx->training: normalises with the batch statistics (biased variance) and,
 * when running_mean/running_var are given, updates them in place:
 * r = (1 - momentum) * r + momentum * batch_stat, with the unbiased variance.
 * Not training: normalises with running_mean/running_var; when those are NULL
 * the batch statistics are used (PyTorch's track_running_stats=False).
 * running_* are f32 [C] buffers (never differentiated). Training needs more
 * than one value per channel. */
segc_tensor *segc_batch_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta,
                             segc_tensor *running_mean, segc_tensor *running_var, float momentum, float eps);
/* segc_batch_norm then ReLU as one op, without a pass of its own for the relu in either
 * direction (backward recomputes the mask from x and the statistics). f32: the same values and
 * gradients bit for bit as segc_batch_norm + segc_relu_. */
segc_tensor *segc_batch_norm_relu(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta,
                                  segc_tensor *running_mean, segc_tensor *running_var, float momentum, float eps);

/* relu_(add(batch_norm(x), id)) as one op: a residual block's end. The normalised values are not
 * kept (only the output, which the next block reads anyway); the same values and gradients bit
 * for bit as the three ops, f32 and bf16. id: x's shape and dtype. */
segc_tensor *segc_batch_norm_add_relu(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta,
                                      segc_tensor *running_mean, segc_tensor *running_var, float momentum, float eps,
                                      segc_tensor *id);

/* PyTorch GroupNorm: x[N, C, ...], groups divides C, gamma/beta [C] or NULL. */
segc_tensor *segc_group_norm(segc_ctx *ctx, segc_tensor *x, int groups, segc_tensor *gamma, segc_tensor *beta,
                             float eps);

/* PyTorch InstanceNorm{1,2,3}d without running statistics: x[N, C, spatial...]
 * (at least one spatial dim), per-(sample, channel) statistics; gamma/beta [C]
 * or NULL (affine=False). */
segc_tensor *segc_instance_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta, float eps);
/* segc_instance_norm then LeakyReLU(negative_slope >= 0) as one op, without
 * the normalised tensor between them (backward masks the gradient by the
 * output's sign). f32: the same values and gradients bit for bit as the two
 * ops; bf16 rounds once instead of twice. */
segc_tensor *segc_instance_norm_lrelu(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta, float eps,
                                      float negative_slope);

#endif
