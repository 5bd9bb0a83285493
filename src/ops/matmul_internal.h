/* Internal to src/ops: the strided GEMM operands and gradient destinations shared by the
 * backward passes of matmul (matmul.c) and linear / gelu_linear (linear.c). */
#ifndef SEGC_MATMUL_INTERNAL_H
#define SEGC_MATMUL_INTERNAL_H
#include "segc/ops.h"

/* a strided matrix operand: (row, col) at p[i*bs + row*rs + col*cs] */
typedef struct {
    const void *p;
    segc_dtype dt;
    int64_t bs, rs, cs;
} segc_mm_view;

static inline segc_mm_view segc_mm_t(segc_mm_view v) { return (segc_mm_view){v.p, v.dt, v.bs, v.cs, v.rs}; }

/* C = A B over views (C f32 or bf16 with row stride c_rs, batch stride c_bs; acc: C +=) */
bool segc_mm_views_dt(segc_ctx *ctx, const char *op, int64_t batch, int64_t M, int64_t N, int64_t K, segc_mm_view a,
                      segc_mm_view b, void *c, segc_dtype c_dt, int64_t c_bs, int64_t c_rs, bool acc);
bool segc_mm_views(segc_ctx *ctx, const char *op, int64_t batch, int64_t M, int64_t N, int64_t K, segc_mm_view a,
                   segc_mm_view b, float *c, int64_t c_bs, int64_t c_rs, bool acc);
/* n bf16 values widened into a new arena buffer */
float *segc_mm_widen(segc_ctx *ctx, const void *p, int64_t n);
/* The upstream gradient of out as a backward GEMM operand: a bf16 gradient as it is when bf16
 * GEMMs are native (else widened: the same values), an f32 gradient of a bf16 op rounded
 * (segc_gemm_round_grad), an f32 one of an f32 op as it is. n: its element count. */
const void *segc_mm_dy(segc_ctx *ctx, const segc_tensor *out, bool bf16_op, int64_t n, segc_dtype *dt);

/* Where a backward GEMM puts the gradient of t: t's bf16 gradient when it takes one (the GEMM
 * rounds its f32 result once; a gradient already holding values gets the result through an f32
 * temporary, added in and rounded), else t's f32 gradient (written when fresh, else added to). */
typedef struct {
    float *f;          /* f32 gradient, or NULL */
    uint16_t *h;       /* bf16 gradient, or NULL */
    bool fresh;
    float *tmp;        /* bf16 gradient with values: the GEMM's f32 result */
} segc_mm_grad_dst;
/* before the caller's arena mark: gradient buffers outlive the backward */
segc_mm_grad_dst segc_mm_grad_dst_of(segc_ctx *ctx, segc_tensor *t);
/* the GEMM's C (after the mark: the temporary is the backward's own): pointer, dtype and
 * whether it accumulates */
void *segc_mm_grad_dst_c(segc_ctx *ctx, segc_mm_grad_dst *d, int64_t n, segc_dtype *dt, bool *acc);
/* after the GEMM: a temporary result added into the bf16 gradient, rounded once */
void segc_mm_grad_dst_finish(segc_mm_grad_dst *d, int64_t n);
#endif
