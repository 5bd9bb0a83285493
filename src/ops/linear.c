/* linear (y = x W^T + b) and gelu_linear (linear of gelu(h), gelu recomputed in backward): GEMMs
 * through segc_gemm_run, backward through the shared views of matmul_internal.h. */
#include <omp.h>
#include <string.h>

#include "activation_internal.h"
#include "matmul_internal.h"
#include "segc/ops.h"
#include "segc/profile.h"

typedef struct {
    int64_t rows, in, out;
} linear_saved;

/* column sums of a rows x cols f32 matrix into acc (+=), optionally rounding
 * each value to bf16 first. Fixed row chunks summed in order: the result does
 * not depend on the thread count. */
static void colsum_acc(segc_ctx *ctx, const float *x, int64_t rows, int64_t cols, bool round_bf16, float *acc) {
    int64_t chunk = rows / 64 > 256 ? (rows + 63) / 64 : 256;
    int64_t nch = (rows + chunk - 1) / chunk;
    float *part = segc_arena_alloc(&ctx->arena, (size_t)(nch * cols) * sizeof *part);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t c = 0; c < nch; c++) {
        float *p = part + c * cols;
        for (int64_t j = 0; j < cols; j++) p[j] = 0.0f;
        int64_t r1 = (c + 1) * chunk < rows ? (c + 1) * chunk : rows;
        for (int64_t r = c * chunk; r < r1; r++) {
            const float *xr = x + r * cols;
            if (round_bf16)
                for (int64_t j = 0; j < cols; j++) p[j] += segc_bf16_to_f32(segc_f32_to_bf16(xr[j]));
            else
                for (int64_t j = 0; j < cols; j++) p[j] += xr[j];
        }
    }
    for (int64_t c = 0; c < nch; c++)
        for (int64_t j = 0; j < cols; j++) acc[j] += part[c * cols + j];
}

/* bias gradient: column sums of dY (f32, rounded to bf16 first for a bf16 op, or the bf16
 * gradient itself widened: the same values) */
static void bias_grad(segc_ctx *ctx, const segc_tensor *out, const linear_saved *s, bool bf16, float *gbias) {
    const float *gy = out->grad;
    if (out->grad_bf16) gy = segc_mm_widen(ctx, out->grad_bf16, s->rows * s->out), bf16 = false;
    colsum_acc(ctx, gy, s->rows, s->out, bf16, gbias);
}

static void linear_backward(segc_ctx *ctx, segc_node *nd) {
    const linear_saved *s = nd->saved;
    segc_tensor *x = nd->in[0], *w = nd->in[1], *bias = nd->n_in > 2 ? nd->in[2] : NULL;
    bool bf16 = x->dtype == SEGC_BF16;
    segc_mm_grad_dst dx = segc_mm_grad_dst_of(ctx, x);   /* dX written, not added, when fresh: no zeroing */
    float *gw = w->requires_grad ? segc_grad(ctx, w) : NULL;
    float *gbias = bias && bias->requires_grad ? segc_grad(ctx, bias) : NULL;
    segc_flops_add(2 * s->rows * s->out * s->in * (x->requires_grad + (gw != NULL)));
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);   /* rounded dY, column-sum partials */
    segc_mm_view dy = {NULL, SEGC_F32, 0, s->out, 1};
    dy.p = segc_mm_dy(ctx, nd->out, bf16, s->rows * s->out, &dy.dt);
    if (x->requires_grad) { /* dX = dY W */
        segc_dtype cdt;
        bool acc;
        void *c = segc_mm_grad_dst_c(ctx, &dx, s->rows * s->in, &cdt, &acc);
        segc_mm_view wv = {w->data, w->dtype, 0, s->in, 1};
        segc_mm_views_dt(ctx, "linear", 1, s->rows, s->in, s->out, dy, wv, c, cdt, 0, s->in, acc);
        segc_mm_grad_dst_finish(&dx, s->rows * s->in);
    }
    if (gw) /* dW = dY^T X */
        segc_mm_views(ctx, "linear", 1, s->out, s->in, s->rows, segc_mm_t(dy),
                      (segc_mm_view){x->data, x->dtype, 0, s->in, 1}, gw, 0, s->in, true);
    if (gbias) bias_grad(ctx, nd->out, s, bf16, gbias);
    segc_arena_rewind(&ctx->arena, mark);
}

/* checks of linear's operands (named op in the messages) and its output tensor */
static segc_tensor *linear_setup(segc_ctx *ctx, const char *op, segc_tensor *x, segc_tensor *w, segc_tensor *bias,
                                 linear_saved *sp) {
    if (!x || !w) return NULL;
    if (!segc_check_float(ctx, op, "x", x) || !segc_check_float(ctx, op, "weight", w)) return NULL;
    if (bias && !segc_check_float(ctx, op, "bias", bias)) return NULL;
    char sx[96], sw[96], sb[96] = "none";
    segc_shape_str(x, sx, sizeof sx);
    segc_shape_str(w, sw, sizeof sw);
    if (bias) segc_shape_str(bias, sb, sizeof sb);
    if (w->dtype != x->dtype || (bias && bias->dtype != x->dtype)) {
        segc_set_error(ctx, "%s: x, weight and bias expected one dtype, found %s, %s, %s", op,
                       segc_dtype_name(x->dtype), segc_dtype_name(w->dtype),
                       bias ? segc_dtype_name(bias->dtype) : "none");
        return NULL;
    }
    if (x->ndim < 1 || w->ndim != 2 || w->shape[1] != x->shape[x->ndim - 1] ||
        (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))) {
        segc_set_error(ctx, "%s: expected x [..., in], weight [out, in], bias [out]; found x %s, weight %s, bias %s",
                       op, sx, sw, sb);
        return NULL;
    }
    linear_saved s = {.rows = 1, .in = w->shape[1], .out = w->shape[0]};
    for (int i = 0; i < x->ndim - 1; i++) s.rows *= x->shape[i];
    int64_t shape[SEGC_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = s.out;
    *sp = s;
    return segc_tensor_new(ctx, x->dtype, x->ndim, shape);
}

/* y = a w^T + bias with a [rows, in] of dtype dt at ap: w [out, in] read as an in x out matrix
 * through strides */
static bool linear_gemm(segc_ctx *ctx, const char *op, const linear_saved *s, const void *ap, segc_dtype dt,
                        const segc_tensor *w, const segc_tensor *bias, segc_tensor *y) {
    segc_gemm g = {.batch = 1, .M = s->rows, .N = s->out, .K = s->in,
                   .a = ap, .a_dtype = dt, .a_rs = s->in, .a_cs = 1,
                   .b = w->data, .b_dtype = w->dtype, .b_rs = 1, .b_cs = s->in,
                   .c = y->data, .c_dtype = y->dtype, .c_rs = s->out,
                   .bias = bias ? bias->data : NULL, .bias_dtype = dt, .alpha = 1.0f};
    if (!segc_gemm_run(ctx, op, &g)) return false;
    segc_flops_add(2 * s->rows * s->out * s->in);
    return true;
}

/* records y's backward (inputs x, w and the optional bias, sizes s) when a gradient is needed */
static segc_tensor *linear_record(segc_ctx *ctx, const char *op, segc_backward_fn backward,
                                  segc_tensor *y, segc_tensor *x, segc_tensor *w, segc_tensor *bias,
                                  const linear_saved *s) {
    segc_tensor *ins[3] = {x, w, bias};
    int n_in = bias ? 3 : 2;
    if (segc_needs_grad(ctx, ins, n_in)) {
        linear_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        *sv = *s;
        segc_node_reads_bf16_grad(segc_record(ctx, op, backward, y, ins, n_in, sv));
    }
    return y;
}

segc_tensor *segc_linear(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *bias) {
    SEGC_PROF_OP(ctx, "linear");
    linear_saved s;
    segc_tensor *y = linear_setup(ctx, "linear", x, w, bias, &s);
    if (!y || !linear_gemm(ctx, "linear", &s, x->data, x->dtype, w, bias, y)) return NULL;
    return linear_record(ctx, "linear", linear_backward, y, x, w, bias, &s);
}

/* linear(gelu(h)) without keeping gelu(h) for backward: it is recomputed there (one GELU pass,
 * ~1 % of a ViT step) instead of holding [rows, in] values to the step's end (12.6 MB per
 * ViT-B layer). The kernels and GEMMs are segc_gelu's and segc_linear's, so forward and
 * gradients are theirs bit for bit. */
static void gelu_linear_backward(segc_ctx *ctx, segc_node *nd) {
    const linear_saved *s = nd->saved;
    segc_tensor *h = nd->in[0], *w = nd->in[1], *bias = nd->n_in > 2 ? nd->in[2] : NULL;
    bool bf16 = h->dtype == SEGC_BF16;
    segc_mm_grad_dst dh = segc_mm_grad_dst_of(ctx, h);
    float *gw = w->requires_grad ? segc_grad(ctx, w) : NULL;
    float *gbias = bias && bias->requires_grad ? segc_grad(ctx, bias) : NULL;
    segc_flops_add(2 * s->rows * s->out * s->in * (h->requires_grad + (gw != NULL)));
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);   /* gelu(h), rounded dY, dA, partials */
    segc_mm_view dy = {NULL, SEGC_F32, 0, s->out, 1};
    dy.p = segc_mm_dy(ctx, nd->out, bf16, s->rows * s->out, &dy.dt);
    if (gw) {   /* dW = dY^T gelu(h) */
        void *a = segc_arena_alloc(&ctx->arena, (size_t)(s->rows * s->in) * segc_dtype_size(h->dtype));
        segc_gelu_fwd_raw(h, a);
        segc_mm_views(ctx, "gelu_linear", 1, s->out, s->in, s->rows, segc_mm_t(dy),
                      (segc_mm_view){a, h->dtype, 0, s->in, 1}, gw, 0, s->in, true);
    }
    if (gbias) bias_grad(ctx, nd->out, s, bf16, gbias);
    if (h->requires_grad) {   /* dA = dY W, then dh (+)= dA gelu'(h) */
        int64_t n = s->rows * s->in;
        float *da = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof *da);
        segc_mm_view wv = {w->data, w->dtype, 0, s->in, 1};
        segc_mm_views(ctx, "gelu_linear", 1, s->rows, s->in, s->out, dy, wv, da, 0, s->in, false);
        if (dh.f) {
            segc_gelu_bwd_raw(h, da, dh.f, dh.fresh);
        } else {   /* bf16 gradient: dA gelu'(h) in place, then rounded (added in when it holds values) */
            segc_gelu_bwd_raw(h, da, da, true);
            segc_ew_put_grad_bf16_n(da, dh.h, n, dh.fresh);
        }
    }
    segc_arena_rewind(&ctx->arena, mark);
}

segc_tensor *segc_gelu_linear(segc_ctx *ctx, segc_tensor *h, segc_tensor *w, segc_tensor *bias) {
    SEGC_PROF_OP(ctx, "gelu_linear");
    linear_saved s;
    segc_tensor *y = linear_setup(ctx, "gelu_linear", h, w, bias, &s);
    if (!y) return NULL;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);   /* gelu(h): only for this GEMM */
    void *a = segc_arena_alloc(&ctx->arena, (size_t)(s.rows * s.in) * segc_dtype_size(h->dtype));
    segc_gelu_fwd_raw(h, a);
    bool ok = linear_gemm(ctx, "gelu_linear", &s, a, h->dtype, w, bias, y);
    segc_arena_rewind(&ctx->arena, mark);
    if (!ok) return NULL;
    return linear_record(ctx, "gelu_linear", gelu_linear_backward, y, h, w, bias, &s);
}
