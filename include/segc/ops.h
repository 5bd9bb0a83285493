/* segc ops: every differentiable operation, forward and backward side by side.
 * Device-neutral interface: callers see tensors only; the CPU backend (oneDNN,
 * OpenBLAS, vectorised C + OpenMP) is chosen inside each op. */
#ifndef SEGC_OPS_H
#define SEGC_OPS_H
#include "segc/core.h"

/* dtype cast with a pass-through gradient: the bf16 path casts f32 master
 * weights to bf16 each step and gets f32 gradients back. */
segc_tensor *segc_cast(segc_ctx *ctx, segc_tensor *x, segc_dtype to);

#include "segc/ops_elementwise.h"
#include "segc/ops_shape.h"
#include "segc/ops_conv.h"
#include "segc/ops_matmul.h"
#include "segc/ops_norm.h"
#include "segc/ops_loss.h"
#endif
