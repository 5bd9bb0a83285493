/* Internal to src/ops: the exact GELU kernels of activation.c over a whole tensor, for ops that
 * recompute GELU instead of keeping its output (segc_gelu_linear). They pick the AVX-512 build
 * as segc_gelu does, so their numbers are segc_gelu's bit for bit. */
#ifndef SEGC_ACTIVATION_INTERNAL_H
#define SEGC_ACTIVATION_INTERNAL_H
#include <stdbool.h>

#include "segc/core.h"

/* y = gelu(x), y of x's dtype (f32 or bf16) and element count */
void segc_gelu_fwd_raw(const segc_tensor *x, void *y);
/* gx (+)= go * gelu'(x); fresh: written, not added to */
void segc_gelu_bwd_raw(const segc_tensor *x, const float *go, float *gx, bool fresh);
#endif
