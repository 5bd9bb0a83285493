/* segc ops: matmul, linear, multi-head attention (see ops.h for conventions),
 * plus the strided GEMM they are built on. */
#ifndef SEGC_OPS_MATMUL_H
#define SEGC_OPS_MATMUL_H
#include "segc/core.h"

/* C = op(A) op(B), op = transpose when trans_*.
 * a: [..., M, K] ([..., K, M] when trans_a), at least 2-D.
 * b: [..., K, N] ([..., N, K] when trans_b) with the same leading dims as a,
 *    or 2-D and shared by every batch entry (its gradient sums over the batch).
 * Output [..., M, N] in the inputs' dtype; gradients for a and b. */
segc_tensor *segc_matmul(segc_ctx *ctx, segc_tensor *a, segc_tensor *b, bool trans_a, bool trans_b);

/* PyTorch Linear: y[..., out] = x[..., in] w[out, in]^T + bias[out].
 * One GEMM over all leading dims with the bias fused; bias may be NULL.
 * Gradients for x, w and bias. */
segc_tensor *segc_linear(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *bias);
/* linear(gelu(h), w, bias) with gelu(h) recomputed in backward instead of kept (a transformer
 * MLP's fc2 on the hidden activation); the same numbers as segc_linear(segc_gelu(h), ...) */
segc_tensor *segc_gelu_linear(segc_ctx *ctx, segc_tensor *h, segc_tensor *w, segc_tensor *bias);

/* Multi-head scaled dot-product attention on the [B, N, heads*D] layout that
 * linear projections produce (no permutes needed):
 *   q [B, Nq, H*D], k [B, Nk, H*D], v [B, Nk, H*Dv]  ->  out [B, Nq, H*Dv]
 *   out[:, :, h] = softmax(q_h k_h^T * scale) v_h  for each head h.
 * Nk may be far smaller than Nq (spatial-reduction attention). The softmax
 * probabilities are saved for backward (f32, or bf16 when the GEMMs run in
 * native bf16). Gradients for q, k and v. */
segc_tensor *segc_attention(segc_ctx *ctx, segc_tensor *q, segc_tensor *k, segc_tensor *v, int heads,
                            float scale);

/* ---- low level: strided batched GEMM on raw buffers ----
 * For i in [0, batch):  C_i = alpha * A_i B_i + bias  (C_i += ... when accumulate)
 * A_i is M x K with element (m, k) at a[i*a_bs + m*a_rs + k*a_cs]; B_i is
 * K x N likewise; C_i is M x N with element (m, n) at c[i*c_bs + m*c_rs + n].
 * A batch stride of 0 broadcasts that operand over the batch; a C batch
 * stride of 0 sums the batch into one C (e.g. the gradient of a shared
 * weight). For each of A and B one of its row/column strides must be 1 and
 * the other cover the other dim (any transpose is expressed by strides, never
 * copied). Operands are f32 or bf16 (dtype per operand);
 * two bf16 operands use a native bf16 GEMM with f32 accumulation when the
 * CPU has one, otherwise they are widened to f32 in the arena. bias: N values
 * of bias_dtype, or NULL; not combined with alpha != 1. accumulate needs an
 * f32 C. Runs through cached oneDNN matmul primitives (no heap allocation in
 * steady state). Returns false with the ctx error set (naming op) on bad
 * arguments or a backend failure. */
typedef struct segc_gemm {
    int64_t batch, M, N, K;
    const void *a;
    segc_dtype a_dtype;
    int64_t a_bs, a_rs, a_cs;
    const void *b;
    segc_dtype b_dtype;
    int64_t b_bs, b_rs, b_cs;
    void *c;
    segc_dtype c_dtype;
    int64_t c_bs, c_rs;
    const void *bias;
    segc_dtype bias_dtype;
    float alpha;
    bool accumulate;
} segc_gemm;
bool segc_gemm_run(segc_ctx *ctx, const char *op, const segc_gemm *g);
/* Per-thread GEMMs inside one OpenMP parallel region (many small GEMMs with
 * no fork/join between them). segc_gemm_plan_new, called outside the region,
 * fixes a batch-1 problem's sizes, strides, dtypes, alpha and accumulate (its
 * pointers are ignored) and prepares nthreads private executions in the ctx
 * arena; segc_gemm_plan_run then runs it single-threaded on thread index
 * `thread` with that call's operands. Operands must be f32, or bf16 when
 * segc_gemm_native_bf16(); no bias. One caller at a time per thread index
 * (the per-thread streams are shared by all plans). plan_run returns false only on a backend
 * failure (the caller reports it after the region). */
typedef struct segc_gemm_plan segc_gemm_plan;
segc_gemm_plan *segc_gemm_plan_new(segc_ctx *ctx, const char *op, const segc_gemm *g, int nthreads);
bool segc_gemm_plan_run(const segc_gemm_plan *p, int thread, const void *a, const void *b, void *c);
/* true when two bf16 operands run as a native bf16 GEMM (AVX512-BF16/AMX) */
bool segc_gemm_native_bf16(void);
/* the dtype gradients of a bf16 op are fed to its backward GEMMs in: bf16 when
 * native (the upstream f32 gradient is rounded, as PyTorch's bf16 autograd
 * does), else f32 holding the same bf16-rounded values. Returns the rounded
 * copy of n values in the arena. */
void *segc_gemm_round_grad(segc_ctx *ctx, const float *g, int64_t n, segc_dtype *dtype_out);

#endif
