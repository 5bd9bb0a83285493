/* Internal to src/ops: the softmax row kernels compiled for AVX512-BF16
 * (softmax_avx512bf16.c). Call them only when segc_cpu_isa() >= SEGC_ISA_AVX512_BF16. */
#ifndef SEGC_SOFTMAX_KERNELS_H
#define SEGC_SOFTMAX_KERNELS_H
#include <stdbool.h>
#include <stdint.h>

/* softmax (or log_softmax) of one bf16 row of D into y; scratch: 2*D floats; the row max
 * and log(sum exp(x - max)) go to *max_out / *lsum_out (the baseline's saved stats) */
void segc_softmax_row_fwd_bf16_avx512bf16(const uint16_t *x, uint16_t *y, int64_t D, bool log, float *scratch,
                                          float *max_out, float *lsum_out);
/* backward of one bf16 row from x and the saved stats (p = exp((x - max) - lsum) in f32):
 * softmax gx (+)= p * (g - sum(g p)), log_softmax gx (+)= g - p * sum(g); scratch: D floats.
 * stream (with !acc): write gx with non-temporal stores where aligned (a gradient larger than
 * the caches); each thread that wrote calls segc_stream_fence before the data is read */
void segc_softmax_row_bwd_bf16_avx512bf16(const uint16_t *x, float max, float lsum, bool log, const float *g,
                                          float *gx, bool acc, bool stream, float *scratch, int64_t D);
/* the same with bf16 gradients g and gx (f32 arithmetic, gx rounded once); scratch: 2*D floats.
 * y non-NULL (softmax, not log): p is the bf16 output y instead of being recomputed from x */
void segc_softmax_row_bwd_bf16g_avx512bf16(const uint16_t *x, const uint16_t *y, float max, float lsum, bool log,
                                           const uint16_t *g, uint16_t *gx, bool acc, bool stream, float *scratch,
                                           int64_t D);
/* after rows written with stream (non-temporal stores), before anything reads them */
void segc_stream_fence(void);
/* attention: softmax of the f32 scores scale * s (s overwritten with exp) rounded to bf16 into pb */
void segc_attn_softmax_row_avx512bf16(float *s, int64_t n, float scale, uint16_t *pb);
/* attention backward: ds = bf16(scale * p * (dp - sum(p * dp))) for bf16 probabilities p */
void segc_attn_dsoftmax_row_avx512bf16(const uint16_t *p, const float *dp, float scale, uint16_t *ds, int64_t n);
#endif
