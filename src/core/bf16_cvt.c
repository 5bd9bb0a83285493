/* bf16 <-> f32 array conversion, one kernel per ISA level (segc/cpu.h).
 *
 * Every kernel returns the bits of the scalar segc_f32_to_bf16 /
 * segc_bf16_to_f32 (round to nearest even, NaN kept and quieted, subnormals
 * rounded like any other value), so a run gives the same numbers on an AVX2
 * and an AMX machine. VCVTNE2PS2BF16 flushes subnormal inputs to zero where
 * the scalar rounding keeps them: blocks holding a subnormal take the integer
 * AVX-512 path instead. */
#include <immintrin.h>

#include "segc/core.h"
#include "segc/cpu.h"

#define CVT_CHUNK 16384   /* elements per parallel work item: 64 KiB of f32 */
#define CVT_PAR_MIN 65536 /* below this, threads cost more than they save */

/* baseline: the scalar loops, vectorised by the compiler at the build's ISA */
static void f2bf_base(const float *restrict src, uint16_t *restrict dst, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] = segc_f32_to_bf16(src[i]);
}
static void bf2f_base(const uint16_t *restrict src, float *restrict dst, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] = segc_bf16_to_f32(src[i]);
}

/* AVX-512 F/BW: the scalar rounding in 16 lanes, masked tail */
SEGC_TARGET_AVX512 static void f2bf_avx512(const float *restrict src, uint16_t *restrict dst, int64_t n) {
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512i u = _mm512_maskz_loadu_epi32(k, src + i);
        const __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(hi, one)), 16);
        /* |u| > inf as integers is NaN (both sides non-negative, so the signed compare is exact) */
        const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absmask), inf);
        r = _mm512_mask_or_epi32(r, nan, hi, quiet);
        _mm512_mask_cvtepi32_storeu_epi16(dst + i, k, r);   /* every lane holds <= 0xffff: truncation is exact */
    }
}
SEGC_TARGET_AVX512 static void bf2f_avx512(const uint16_t *restrict src, float *restrict dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, src + i));
        _mm512_mask_storeu_ps(dst + i, k, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
}

/* AVX512-BF16: one instruction converts 32 values; blocks with a subnormal go
 * through the integer kernel so the bits stay those of the scalar rounding */
SEGC_TARGET_AVX512_BF16 static void f2bf_avx512bf16(const float *restrict src, uint16_t *restrict dst, int64_t n) {
    const __m512i expmask = _mm512_set1_epi32(0x7f800000), mantmask = _mm512_set1_epi32(0x007fffff);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        const __m512i ul = _mm512_castps_si512(lo), uh = _mm512_castps_si512(hi);
        /* subnormal: exponent bits all zero, mantissa not */
        const __mmask16 sl = _mm512_mask_test_epi32_mask(_mm512_testn_epi32_mask(ul, expmask), ul, mantmask);
        const __mmask16 sh = _mm512_mask_test_epi32_mask(_mm512_testn_epi32_mask(uh, expmask), uh, mantmask);
        if (__builtin_expect((sl | sh) != 0, 0)) {
            f2bf_avx512(src + i, dst + i, 32);
            continue;
        }
        /* the second operand fills the low 16 results */
        _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (i < n) f2bf_avx512(src + i, dst + i, n - i);
}

typedef void (*f2bf_fn)(const float *restrict, uint16_t *restrict, int64_t);
typedef void (*bf2f_fn)(const uint16_t *restrict, float *restrict, int64_t);

static f2bf_fn pick_f2bf(void) {
    switch (segc_cpu_isa()) {
    case SEGC_ISA_AVX2: return f2bf_base;
    case SEGC_ISA_AVX512: return f2bf_avx512;
    default: return f2bf_avx512bf16;
    }
}
static bf2f_fn pick_bf2f(void) { return segc_cpu_isa() >= SEGC_ISA_AVX512 ? bf2f_avx512 : bf2f_base; }

void segc_f32_to_bf16_n(const float *src, uint16_t *dst, int64_t n) {
    const f2bf_fn fn = pick_f2bf();
    if (n <= CVT_PAR_MIN) {
        if (n > 0) fn(src, dst, n);
        return;
    }
    const int64_t nc = (n + CVT_CHUNK - 1) / CVT_CHUNK;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        const int64_t b = c * CVT_CHUNK, len = n - b < CVT_CHUNK ? n - b : CVT_CHUNK;
        fn(src + b, dst + b, len);
    }
}

void segc_bf16_to_f32_n(const uint16_t *src, float *dst, int64_t n) {
    const bf2f_fn fn = pick_bf2f();
    if (n <= CVT_PAR_MIN) {
        if (n > 0) fn(src, dst, n);
        return;
    }
    const int64_t nc = (n + CVT_CHUNK - 1) / CVT_CHUNK;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        const int64_t b = c * CVT_CHUNK, len = n - b < CVT_CHUNK ? n - b : CVT_CHUNK;
        fn(src + b, dst + b, len);
    }
}
