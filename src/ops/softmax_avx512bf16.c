/* Softmax row kernels for CPUs with AVX512-BF16 (Makefile: ISA_AVX512BF16_OBJ, compiled with
 * -mavx512bf16 on top of the AVX-512 flags). Nothing here runs unless a baseline file asked
 * segc_cpu_isa() first (softmax.c, attention.c): the bf16 last-dim softmax forward and backward
 * and attention's probability rows.
 *
 * Numerics are those of the baseline kernels up to float rounding: f32 exponentials (the
 * algorithm of segc_vexpf, 2^n applied by VSCALEFPS, which underflows gradually), sums in
 * f32 over 32 lanes instead of double, and rounding to bf16 by VCVTNEPS2BF16 (round to
 * nearest even; it flushes f32 subnormals, which no probability here depends on). */
#include <immintrin.h>
#include <math.h>

#include "softmax_kernels.h"

void segc_stream_fence(void) { _mm_sfence(); }

/* 16 bf16 values (k selects lanes; the others read as +0) widened to f32 */
static inline __m512 ld16(const uint16_t *p, __mmask16 k) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}
static inline void st16(uint16_t *p, __mmask16 k, __m512 v) {
    _mm256_mask_storeu_epi16(p, k, (__m256i)_mm512_cvtneps_pbh(v));
}
static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* exp(x): segc_vexpf's reduction and polynomial in 16 lanes */
static inline __m512 exp16(__m512 x) {
    const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504089f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145751953125f), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.381460763e-03f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.368710394e-03f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166838748e-02f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666652068e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.999999345e-01f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* e[j] = exp(c x[j] - m) for a row held in f32 (in place allowed); returns the sum */
static float exp_sum_row(const float *x, float *e, int64_t n, float c, float m) {
    const __m512 vm = _mm512_set1_ps(m), vc = _mm512_set1_ps(c);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m512 e0 = exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(x + j), vc), vm));
        const __m512 e1 = exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(x + j + 16), vc), vm));
        _mm512_storeu_ps(e + j, e0);
        _mm512_storeu_ps(e + j + 16, e1);
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
    }
    for (; j < n; j += 16) {
        const __mmask16 k = tail_mask(n - j);
        const __m512 ev = exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), vc), vm));
        _mm512_mask_storeu_ps(e + j, k, ev);
        s0 = _mm512_mask_add_ps(s0, k, s0, ev);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

void segc_softmax_row_fwd_bf16_avx512bf16(const uint16_t *x, uint16_t *y, int64_t D, bool log, float *scratch,
                                          float *max_out, float *lsum_out) {
    /* widen once into scratch, taking the max on the way */
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    int64_t j = 0;
    for (; j + 32 <= D; j += 32) {
        const __m512 v0 = ld16(x + j, 0xffff), v1 = ld16(x + j + 16, 0xffff);
        _mm512_storeu_ps(scratch + j, v0);
        _mm512_storeu_ps(scratch + j + 16, v1);
        m0 = _mm512_max_ps(m0, v0);
        m1 = _mm512_max_ps(m1, v1);
    }
    for (; j < D; j += 16) {
        const __mmask16 k = tail_mask(D - j);
        const __m512 v = ld16(x + j, k);
        _mm512_mask_storeu_ps(scratch + j, k, v);
        m0 = _mm512_mask_max_ps(m0, k, m0, v);
    }
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    if (mx == -INFINITY) mx = 0.0f;   /* all -inf: sum 0, outputs NaN / -inf as PyTorch */
    float *e = scratch + D;
    const float s = exp_sum_row(scratch, e, D, 1.0f, mx);
    const float ls = logf(s);
    *max_out = mx;
    *lsum_out = ls;
    if (log) {
        const __m512 vm = _mm512_set1_ps(mx), vl = _mm512_set1_ps(ls);
        for (j = 0; j < D; j += 16) {   /* (x - m) - ls, in the baseline's order */
            const __mmask16 k = tail_mask(D - j);
            st16(y + j, k, _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, scratch + j), vm), vl));
        }
        return;
    }
    const __m512 inv = _mm512_set1_ps(1.0f / s);
    for (j = 0; j < D; j += 16) {
        const __mmask16 k = tail_mask(D - j);
        st16(y + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, e + j), inv));
    }
}

void segc_softmax_row_bwd_bf16_avx512bf16(const uint16_t *x, float max, float lsum, bool log, const float *g,
                                          float *gx, bool acc, bool stream, float *scratch, int64_t D) {
    const __m512 vm = _mm512_set1_ps(max), vl = _mm512_set1_ps(lsum);
    __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= D; j += 32) {
        const __m512 p0 = exp16(_mm512_sub_ps(_mm512_sub_ps(ld16(x + j, 0xffff), vm), vl));
        const __m512 p1 = exp16(_mm512_sub_ps(_mm512_sub_ps(ld16(x + j + 16, 0xffff), vm), vl));
        _mm512_storeu_ps(scratch + j, p0);
        _mm512_storeu_ps(scratch + j + 16, p1);
        const __m512 g0 = _mm512_loadu_ps(g + j), g1 = _mm512_loadu_ps(g + j + 16);
        d0 = log ? _mm512_add_ps(d0, g0) : _mm512_fmadd_ps(p0, g0, d0);
        d1 = log ? _mm512_add_ps(d1, g1) : _mm512_fmadd_ps(p1, g1, d1);
    }
    for (; j < D; j += 16) {
        const __mmask16 k = tail_mask(D - j);
        const __m512 p0 = exp16(_mm512_sub_ps(_mm512_sub_ps(ld16(x + j, k), vm), vl));
        _mm512_mask_storeu_ps(scratch + j, k, p0);
        const __m512 g0 = _mm512_maskz_loadu_ps(k, g + j);
        d0 = log ? _mm512_add_ps(d0, g0) : _mm512_mask3_fmadd_ps(p0, g0, d0, k);
    }
    const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(d0, d1)));
    if (stream && !acc && D % 16 == 0 && ((uintptr_t)gx & 63) == 0) {
        /* a large fresh gradient: non-temporal stores skip reading the lines they overwrite */
        for (j = 0; j < D; j += 16) {
            const __m512 p = _mm512_loadu_ps(scratch + j), gv = _mm512_loadu_ps(g + j);
            _mm512_stream_ps(gx + j, log ? _mm512_fnmadd_ps(p, dot, gv) : _mm512_mul_ps(p, _mm512_sub_ps(gv, dot)));
        }
        return;
    }
    for (j = 0; j < D; j += 16) {
        const __mmask16 k = tail_mask(D - j);
        const __m512 p = _mm512_maskz_loadu_ps(k, scratch + j), gv = _mm512_maskz_loadu_ps(k, g + j);
        __m512 v = log ? _mm512_fnmadd_ps(p, dot, gv) : _mm512_mul_ps(p, _mm512_sub_ps(gv, dot));
        if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, gx + j));
        _mm512_mask_storeu_ps(gx + j, k, v);
    }
}

/* the same with bf16 gradients: g read and gx written in bf16 (sums and arithmetic in f32,
 * one rounding per stored value; acc adds the existing gx in f32 before that rounding). With
 * y (softmax only) the probabilities are the forward's bf16 output instead of exp recomputed
 * from x: no exponentials, and an error of the size the bf16 g already carries. gx is rounded by
 * VCVTNEPS2BF16 like this file's other outputs, so an f32-subnormal result becomes zero */
void segc_softmax_row_bwd_bf16g_avx512bf16(const uint16_t *x, const uint16_t *y, float max, float lsum, bool log,
                                           const uint16_t *g, uint16_t *gx, bool acc, bool stream, float *scratch,
                                           int64_t D) {
    const __m512 vm = _mm512_set1_ps(max), vl = _mm512_set1_ps(lsum);
    __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= D; j += 32) {   /* scratch: p in [0, D), g widened in [D, 2D) */
        const __m512 p0 = y ? ld16(y + j, 0xffff) : exp16(_mm512_sub_ps(_mm512_sub_ps(ld16(x + j, 0xffff), vm), vl));
        const __m512 p1 = y ? ld16(y + j + 16, 0xffff)
                            : exp16(_mm512_sub_ps(_mm512_sub_ps(ld16(x + j + 16, 0xffff), vm), vl));
        const __m512 g0 = ld16(g + j, 0xffff), g1 = ld16(g + j + 16, 0xffff);
        _mm512_storeu_ps(scratch + j, p0);
        _mm512_storeu_ps(scratch + j + 16, p1);
        _mm512_storeu_ps(scratch + D + j, g0);
        _mm512_storeu_ps(scratch + D + j + 16, g1);
        d0 = log ? _mm512_add_ps(d0, g0) : _mm512_fmadd_ps(p0, g0, d0);
        d1 = log ? _mm512_add_ps(d1, g1) : _mm512_fmadd_ps(p1, g1, d1);
    }
    for (; j < D; j += 16) {
        const __mmask16 k = tail_mask(D - j);
        const __m512 p0 = y ? ld16(y + j, k) : exp16(_mm512_sub_ps(_mm512_sub_ps(ld16(x + j, k), vm), vl));
        const __m512 g0 = ld16(g + j, k);
        _mm512_mask_storeu_ps(scratch + j, k, p0);
        _mm512_mask_storeu_ps(scratch + D + j, k, g0);
        d0 = log ? _mm512_add_ps(d0, g0) : _mm512_mask3_fmadd_ps(p0, g0, d0, k);
    }
    const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(d0, d1)));
    const float *gw = scratch + D;
    if (stream && !acc && D % 32 == 0 && ((uintptr_t)gx & 63) == 0) {
        /* a large fresh gradient: non-temporal stores of 32 values skip reading the lines */
        for (j = 0; j < D; j += 32) {
            const __m512 pa = _mm512_loadu_ps(scratch + j), ga = _mm512_loadu_ps(gw + j);
            const __m512 pb = _mm512_loadu_ps(scratch + j + 16), gb = _mm512_loadu_ps(gw + j + 16);
            const __m512 va = log ? _mm512_fnmadd_ps(pa, dot, ga) : _mm512_mul_ps(pa, _mm512_sub_ps(ga, dot));
            const __m512 vb = log ? _mm512_fnmadd_ps(pb, dot, gb) : _mm512_mul_ps(pb, _mm512_sub_ps(gb, dot));
            _mm512_stream_si512((void *)(gx + j), (__m512i)_mm512_cvtne2ps_pbh(vb, va));
        }
        return;
    }
    for (j = 0; j < D; j += 16) {
        const __mmask16 k = tail_mask(D - j);
        const __m512 p = _mm512_maskz_loadu_ps(k, scratch + j), gv = _mm512_maskz_loadu_ps(k, gw + j);
        __m512 v = log ? _mm512_fnmadd_ps(p, dot, gv) : _mm512_mul_ps(p, _mm512_sub_ps(gv, dot));
        if (acc) v = _mm512_add_ps(v, ld16(gx + j, k));
        st16(gx + j, k, v);
    }
}

void segc_attn_softmax_row_avx512bf16(float *s, int64_t n, float scale, uint16_t *pb) {
    const __m512 vc = _mm512_set1_ps(scale);
    __m512 m0 = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = tail_mask(n - j);
        m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + j), vc));
    }
    const float m = _mm512_reduce_max_ps(m0);
    const __m512 inv = _mm512_set1_ps(1.0f / exp_sum_row(s, s, n, scale, m));
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = tail_mask(n - j);
        st16(pb + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + j), inv));
    }
}

void segc_attn_dsoftmax_row_avx512bf16(const uint16_t *p, const float *dp, float scale, uint16_t *ds, int64_t n) {
    __m512 d0 = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = tail_mask(n - j);
        d0 = _mm512_fmadd_ps(ld16(p + j, k), _mm512_maskz_loadu_ps(k, dp + j), d0);
    }
    const __m512 delta = _mm512_set1_ps(_mm512_reduce_add_ps(d0)), vc = _mm512_set1_ps(scale);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 k = tail_mask(n - j);
        const __m512 g = _mm512_mul_ps(ld16(p + j, k), _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp + j), delta));
        st16(ds + j, k, _mm512_mul_ps(g, vc));
    }
}
