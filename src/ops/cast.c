/* dtype cast (f32 <-> bf16) with pass-through gradient. */
#include <string.h>

#include "segc/ops.h"
#include "segc/profile.h"

static void cast_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0];
    if (!x->requires_grad) return;
    float *gx = segc_grad(ctx, x);
    const float *go = nd->out->grad;
    int64_t n = segc_numel(x);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) gx[i] += go[i];
}

segc_tensor *segc_cast(segc_ctx *ctx, segc_tensor *x, segc_dtype to) {
    SEGC_PROF_OP(ctx, "cast");
    if (!x) return NULL;
    if (!segc_check_float(ctx, "cast", "input", x)) return NULL;
    if (to != SEGC_F32 && to != SEGC_BF16) {
        segc_set_error(ctx, "cast: target dtype must be f32 or bf16, found %s", segc_dtype_name(to));
        return NULL;
    }
    segc_tensor *y = segc_tensor_new(ctx, to, x->ndim, x->shape);
    int64_t n = segc_numel(x);
    if (x->dtype == to) memcpy(y->data, x->data, segc_nbytes(x));
    else if (to == SEGC_BF16) segc_f32_to_bf16_n(segc_f32(x), segc_bf16p(y), n);
    else segc_bf16_to_f32_n(segc_bf16p(x), segc_f32(y), n);
    if (segc_needs_grad(ctx, &x, 1)) segc_record(ctx, "cast", cast_backward, y, &x, 1, NULL);
    return y;
}
