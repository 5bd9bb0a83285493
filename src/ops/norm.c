/* LayerNorm over the last dim, and the fused residual add + LayerNorm.
 * One row (C values) at a time, held in L1: mean, centred variance, output in
 * three vectorised sweeps; per-row mean/rstd are saved for backward, which
 * recomputes x-hat instead of storing it. */
#include <math.h>

#include "normloss_util.h"
#include "segc/ops.h"
#include "segc/profile.h"

typedef struct {
    float eps;
    int64_t rows, C;
    float *mean, *mean_lo, *rstd;   /* per row; mean + mean_lo is the mean to ~48 bits */
} ln_saved;

#define LN_PAR_MIN 32768   /* elements below which threading costs more than it saves */

/* Per-row reductions. Rows are short (C = 32..1024 in practice), so the
 * horizontal sum ending each reduction costs as much as its loop; with AVX2
 * (also present on AVX-512 machines, so results match across them) they are
 * written with 256-bit intrinsics: two accumulators, a masked tail and a
 * shuffle tree. Otherwise the compiler vectorises the plain loops. Either way
 * each sum has a fixed order. */
#ifdef __AVX2__
#include <immintrin.h>
static inline __m256i ln_mask(int64_t n) {   /* lanes [0, n), n < 8 */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline float ln_hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}
static inline float ln_sum(const float *restrict x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + j));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + j + 8));
    }
    if (j + 8 <= n) { a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + j)); j += 8; }
    if (j < n) a1 = _mm256_add_ps(a1, _mm256_maskload_ps(x + j, ln_mask(n - j)));
    return ln_hsum(_mm256_add_ps(a0, a1));
}
/* sum (x - m) and sum (x - m)^2 */
static inline void ln_centered(const float *restrict x, int64_t n, float m, float *r, float *v) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + j), vm), d1 = _mm256_sub_ps(_mm256_loadu_ps(x + j + 8), vm);
        a0 = _mm256_add_ps(a0, d0);
        a1 = _mm256_add_ps(a1, d1);
        b0 = _mm256_fmadd_ps(d0, d0, b0);
        b1 = _mm256_fmadd_ps(d1, d1, b1);
    }
    if (j + 8 <= n) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j), vm);
        a0 = _mm256_add_ps(a0, d);
        b0 = _mm256_fmadd_ps(d, d, b0);
        j += 8;
    }
    if (j < n) {
        const __m256i k = ln_mask(n - j);
        const __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + j, k), vm), _mm256_castsi256_ps(k));
        a1 = _mm256_add_ps(a1, d);
        b1 = _mm256_fmadd_ps(d, d, b1);
    }
    *r = ln_hsum(_mm256_add_ps(a0, a1));
    *v = ln_hsum(_mm256_add_ps(b0, b1));
}
/* s1 = sum dy*g, s2 = sum dy*g*xh with xh = ((x - m) - ml) * rs, and the
 * gamma/beta partials pg += dy*xh, pb += dy, in one sweep */
static inline void ln_bwd_row(const float *restrict dy, const float *restrict g, const float *restrict x, int64_t n,
                              float m, float ml, float rs, float *restrict pg, float *restrict pb, float *s1, float *s2) {
    const __m256 vm = _mm256_set1_ps(m), vl = _mm256_set1_ps(ml), vr = _mm256_set1_ps(rs);
    __m256 a = _mm256_setzero_ps(), b = a;
    for (int64_t j = 0; j < n; j += 8) {
        const bool full = j + 8 <= n;
        const __m256i k = full ? _mm256_set1_epi32(-1) : ln_mask(n - j);
        const __m256 vdy = full ? _mm256_loadu_ps(dy + j) : _mm256_maskload_ps(dy + j, k);
        const __m256 vx = full ? _mm256_loadu_ps(x + j) : _mm256_maskload_ps(x + j, k);
        const __m256 vg = full ? _mm256_loadu_ps(g + j) : _mm256_maskload_ps(g + j, k);
        const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(vx, vm), vl), vr), gd = _mm256_mul_ps(vdy, vg);
        a = _mm256_add_ps(a, gd);   /* masked lanes: dy = 0 */
        b = _mm256_fmadd_ps(gd, xh, b);
        if (full) {
            _mm256_storeu_ps(pg + j, _mm256_fmadd_ps(vdy, xh, _mm256_loadu_ps(pg + j)));
            _mm256_storeu_ps(pb + j, _mm256_add_ps(vdy, _mm256_loadu_ps(pb + j)));
        } else {
            _mm256_maskstore_ps(pg + j, k, _mm256_fmadd_ps(vdy, xh, _mm256_maskload_ps(pg + j, k)));
            _mm256_maskstore_ps(pb + j, k, _mm256_add_ps(vdy, _mm256_maskload_ps(pb + j, k)));
        }
    }
    *s1 = ln_hsum(a);
    *s2 = ln_hsum(b);
}
#else
static inline float ln_sum(const float *restrict x, int64_t n) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += x[j];
    return s;
}
static inline void ln_centered(const float *restrict x, int64_t n, float m, float *r, float *v) {
    float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
    for (int64_t j = 0; j < n; j++) {
        const float d = x[j] - m;
        a += d;
        b += d * d;
    }
    *r = a;
    *v = b;
}
static inline void ln_bwd_row(const float *restrict dy, const float *restrict g, const float *restrict x, int64_t n,
                              float m, float ml, float rs, float *restrict pg, float *restrict pb, float *s1, float *s2) {
    float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
    for (int64_t j = 0; j < n; j++) {
        const float xh = ((x[j] - m) - ml) * rs, gd = dy[j] * g[j];
        a += gd;
        b += gd * xh;
        pg[j] += dy[j] * xh;
        pb[j] += dy[j];
    }
    *s1 = a;
    *s2 = b;
}
#endif

/* Row statistics in f32, to ~double accuracy where it matters: the second
 * pass sums both (x - m) and (x - m)^2 about the rounded mean m; the first
 * sum is m's rounding error times C (kept as mean_lo, so outputs near zero do
 * not inherit m's rounding) and corrects the variance (the corrected
 * two-pass algorithm). */
static inline void ln_row_stats(const float *restrict x, int64_t C, float invC, float eps, float *mean,
                                float *mean_lo, float *rstd) {
    const float m = ln_sum(x, C) * invC;
    float r, v;
    ln_centered(x, C, m, &r, &v);
    const float ml = r * invC, var = (v - r * ml) * invC;
    *mean = m;
    *mean_lo = ml;
    *rstd = 1.0f / __builtin_sqrtf((var > 0.f ? var : 0.f) + eps);   /* argument >= 0: no errno path */
}

/* ln_row_stats of two rows, interleaved */
static inline void ln_row_stats2(const float *restrict x0, const float *restrict x1, int64_t C, float invC, float eps,
                                 float *m0, float *ml0, float *rs0, float *m1, float *ml1, float *rs1) {
    const float a0 = ln_sum(x0, C) * invC, a1 = ln_sum(x1, C) * invC;
    float r0, v0, r1, v1;
    ln_centered(x0, C, a0, &r0, &v0);
    ln_centered(x1, C, a1, &r1, &v1);
    const float l0 = r0 * invC, var0 = (v0 - r0 * l0) * invC, l1 = r1 * invC, var1 = (v1 - r1 * l1) * invC;
    *m0 = a0, *ml0 = l0, *rs0 = 1.0f / __builtin_sqrtf((var0 > 0.f ? var0 : 0.f) + eps);
    *m1 = a1, *ml1 = l1, *rs1 = 1.0f / __builtin_sqrtf((var1 > 0.f ? var1 : 0.f) + eps);
}

/* y row from x row and its statistics */
static inline void ln_out_row(const float *restrict xr, int64_t C, float m, float ml, float rs, const float *g,
                              const float *bt, float *restrict yr) {
    if (g && bt) {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) yr[j] = fmaf(((xr[j] - m) - ml) * rs, g[j], bt[j]);
    } else if (g) {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) yr[j] = ((xr[j] - m) - ml) * rs * g[j];
    } else if (bt) {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) yr[j] = fmaf((xr[j] - m) - ml, rs, bt[j]);
    } else {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) yr[j] = ((xr[j] - m) - ml) * rs;
    }
}

/* ln_out_row narrowed straight to bf16 (no f32 row in between); whole 16-lane blocks only */
static inline bool ln_out_row_bf16(const float *restrict xr, int64_t C, float m, float ml, float rs, const float *g,
                                   const float *bt, uint16_t *restrict yb) {
#ifdef __AVX2__
    if (C % 16 || !g || !bt) return false;
    const __m256 vm = _mm256_set1_ps(m), vl = _mm256_set1_ps(ml), vr = _mm256_set1_ps(rs);
    for (int64_t j = 0; j < C; j += 16) {
        const __m256 h0 = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j), vm), vl), vr);
        const __m256 h1 = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + j + 8), vm), vl), vr);
        segc_ew_bf16x16_store(yb + j, _mm256_fmadd_ps(h0, _mm256_loadu_ps(g + j), _mm256_loadu_ps(bt + j)),
                              _mm256_fmadd_ps(h1, _mm256_loadu_ps(g + j + 8), _mm256_loadu_ps(bt + j + 8)));
    }
    return true;
#else
    return false;
#endif
}

/* y's row `row` from x row xr and its statistics: bf16 narrowed straight from registers where
 * ln_out_row_bf16 can, else through tmp (C floats, not xr) as ln_out_row + nl_store */
static inline void ln_emit_row(segc_tensor *y, int64_t row, const float *xr, int64_t C, float m, float ml, float rs,
                               const float *g, const float *bt, float *tmp) {
    if (y->dtype == SEGC_BF16 && ln_out_row_bf16(xr, C, m, ml, rs, g, bt, segc_bf16p(y) + row * C)) return;
    float *yr = nl_dst(y, row * C, tmp);
    ln_out_row(xr, C, m, ml, rs, g, bt, yr);
    nl_store(y, row * C, C, yr);
}

#ifdef __AVX2__
/* [sum(a[0]), ..., sum(a[7])]: eight horizontal sums at once (an 8x8 transpose-add) */
static inline __m256 ln_hsum8(const __m256 a[8]) {
    const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}
/* ln_row_stats of eight rows (C % 8 == 0), the per-row tails of the reductions
 * (horizontal sums, sqrt, divide) done once for all eight in vector lanes;
 * the same formulas as ln_row_stats */
static inline void ln_row_stats8(const float *const xr[8], int64_t C, float invC, float eps, float *mean,
                                 float *mean_lo, float *rstd) {
    __m256 a[8], b[8];
    for (int r = 0; r < 8; r++) {
        __m256 s0 = _mm256_loadu_ps(xr[r]), s1 = _mm256_setzero_ps();
        for (int64_t j = 8; j < C; j += 8) {
            if (j & 8) s1 = _mm256_add_ps(s1, _mm256_loadu_ps(xr[r] + j));
            else s0 = _mm256_add_ps(s0, _mm256_loadu_ps(xr[r] + j));
        }
        a[r] = _mm256_add_ps(s0, s1);
    }
    const __m256 vinv = _mm256_set1_ps(invC), m8 = _mm256_mul_ps(ln_hsum8(a), vinv);
    float m[8];
    _mm256_storeu_ps(m, m8);
    for (int r = 0; r < 8; r++) {
        const __m256 vm = _mm256_set1_ps(m[r]);
        __m256 ra = _mm256_setzero_ps(), vb = ra;
        for (int64_t j = 0; j < C; j += 8) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xr[r] + j), vm);
            ra = _mm256_add_ps(ra, d);
            vb = _mm256_fmadd_ps(d, d, vb);
        }
        a[r] = ra;
        b[r] = vb;
    }
    const __m256 r8 = ln_hsum8(a), v8 = ln_hsum8(b), ml8 = _mm256_mul_ps(r8, vinv);
    __m256 var = _mm256_mul_ps(_mm256_sub_ps(v8, _mm256_mul_ps(r8, ml8)), vinv);
    var = _mm256_max_ps(var, _mm256_setzero_ps());   /* also maps NaN to 0, as the scalar (var > 0 ? var : 0) */
    const __m256 rs8 = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_sqrt_ps(_mm256_add_ps(var, _mm256_set1_ps(eps))));
    _mm256_storeu_ps(mean, m8);
    _mm256_storeu_ps(mean_lo, ml8);
    _mm256_storeu_ps(rstd, rs8);
}
#endif

/* Without residual, two rows at a time: a row's reductions are a chain of dependent adds and
 * horizontal sums, so two independent rows side by side keep the core busy (short rows, C = 32..256
 * in SegFormer, are latency bound). Same operations per row as one at a time. Where C % 8 == 0,
 * blocks of eight rows go first (ln_row_stats8); the pairs take the rest. scratch: 9*C floats per
 * thread for bf16 (eight input rows and an output row), else unused. */
static void ln_forward_pairs(ln_saved *sv, const segc_tensor *x, segc_tensor *y, const float *g, const float *bt,
                             float invC, float *scratch) {
    const int64_t rows = sv->rows, C = sv->C;
    int64_t first = 0;   /* rows before it go in blocks of eight */
#ifdef __AVX2__
    if (C % 8 == 0) {
        const int64_t blocks = rows / 8;
        first = blocks * 8;
#pragma omp parallel for schedule(static) if (rows * C >= LN_PAR_MIN)
        for (int64_t bk = 0; bk < blocks; bk++) {
            float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 9 * C : NULL;
            const int64_t r0 = 8 * bk;
            const float *xr[8];
            for (int r = 0; r < 8; r++) xr[r] = nl_load(x, (r0 + r) * C, C, sc ? sc + r * C : NULL);
            ln_row_stats8(xr, C, invC, sv->eps, sv->mean + r0, sv->mean_lo + r0, sv->rstd + r0);
            for (int r = 0; r < 8; r++)
                ln_emit_row(y, r0 + r, xr[r], C, sv->mean[r0 + r], sv->mean_lo[r0 + r], sv->rstd[r0 + r], g, bt,
                            sc ? sc + 8 * C : NULL);
        }
    }
#endif
    const int64_t pairs = (rows - first + 1) / 2;
#pragma omp parallel for schedule(static) if ((rows - first) * C >= LN_PAR_MIN)
    for (int64_t pr = 0; pr < pairs; pr++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 9 * C : NULL;
        const int64_t r0 = first + 2 * pr, r1 = r0 + 1 < rows ? r0 + 1 : r0;   /* odd tail: row twice */
        const float *x0 = nl_load(x, r0 * C, C, sc), *x1 = nl_load(x, r1 * C, C, sc ? sc + C : NULL);
        float m0, ml0, rs0, m1, ml1, rs1;
        ln_row_stats2(x0, x1, C, invC, sv->eps, &m0, &ml0, &rs0, &m1, &ml1, &rs1);
        sv->mean[r0] = m0, sv->mean_lo[r0] = ml0, sv->rstd[r0] = rs0;
        sv->mean[r1] = m1, sv->mean_lo[r1] = ml1, sv->rstd[r1] = rs1;
        ln_emit_row(y, r0, x0, C, m0, ml0, rs0, g, bt, sc ? sc + 2 * C : NULL);
        ln_emit_row(y, r1, x1, C, m1, ml1, rs1, g, bt, sc ? sc + 2 * C : NULL);
    }
}

/* dx row = rstd * (dy*g - mean(dy*g) - xhat * mean(dy*g*xhat)), c1 and c2 the two means times rstd */
static inline void ln_dx_row(const float *restrict dyr, const float *restrict g, const float *restrict xr, int64_t C,
                             float m, float ml, float rs, float c1, float c2, int overwrite, float *restrict dxr) {
    if (overwrite) {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) dxr[j] = (rs * (dyr[j] * g[j]) - c1) - (((xr[j] - m) - ml) * rs) * c2;
    } else {
#pragma omp simd
        for (int64_t j = 0; j < C; j++) dxr[j] += (rs * (dyr[j] * g[j]) - c1) - (((xr[j] - m) - ml) * rs) * c2;
    }
}

static void ln_backward(segc_ctx *ctx, segc_node *nd) {
    const ln_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *gamma = nd->in[1], *beta = nd->in[2];
    const int64_t rows = sv->rows, C = sv->C;
    const float *dy = nd->out->grad;
    /* bf16 gradients (ctx->bf16_grads): dy16 rows widened, dx16 rows computed in f32 and rounded once */
    const uint16_t *dy16 = nd->out->grad_bf16;
    bool need_g = gamma && gamma->requires_grad, need_b = beta && beta->requires_grad;
    int ow = 0;
    bool fresh16 = false;
    uint16_t *dx16 = x->requires_grad ? segc_grad_bf16_dst(ctx, x, &fresh16) : NULL;
    float *dx = x->requires_grad && !dx16 ? nl_grad_buf(ctx, x, &ow) : NULL;
    const bool rows16 = dy16 || dx16;   /* the per-row path with widened / rounded rows */
    const float *g = nl_param_f32(ctx, gamma);
    if (!g) {
        float *ones = segc_arena_alloc(&ctx->arena, (size_t)C * sizeof(float));
        for (int64_t j = 0; j < C; j++) ones[j] = 1.f;
        g = ones;
    }
    int64_t K = nl_chunks(rows, 64, 64);
    float *pg = need_g ? segc_arena_calloc(&ctx->arena, (size_t)(K * C) * sizeof(float)) : NULL;
    float *pb = need_b ? segc_arena_calloc(&ctx->arena, (size_t)(K * C) * sizeof(float)) : NULL;
    const int64_t per = rows16 ? 3 * C : C;   /* x row, dy row, dx row */
    float *scratch = x->dtype == SEGC_F32 && !rows16
                         ? NULL
                         : segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * per) * sizeof(float));
    const float invC = 1.0f / (float)C;
#pragma omp parallel for schedule(static) if (rows * C >= LN_PAR_MIN)
    for (int64_t k = 0; k < K; k++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * per : NULL;
        float *pgk = pg ? pg + k * C : NULL, *pbk = pb ? pb + k * C : NULL;
        int64_t r = nl_chunk_begin(rows, K, k);
        const int64_t r_end = nl_chunk_begin(rows, K, k + 1);
        if (x->dtype == SEGC_F32 && pgk && pbk && dx && !rows16) {
            /* two rows side by side (latency, as in forward); the partials take row r, then r + 1 */
            for (; r + 1 < r_end; r += 2) {
                const float *x0 = segc_f32(x) + r * C, *x1 = x0 + C, *dy0 = dy + r * C, *dy1 = dy0 + C;
                const float m0 = sv->mean[r], ml0 = sv->mean_lo[r], rs0 = sv->rstd[r];
                const float m1 = sv->mean[r + 1], ml1 = sv->mean_lo[r + 1], rs1 = sv->rstd[r + 1];
                float s10, s20, s11, s21;
                ln_bwd_row(dy0, g, x0, C, m0, ml0, rs0, pgk, pbk, &s10, &s20);
                ln_bwd_row(dy1, g, x1, C, m1, ml1, rs1, pgk, pbk, &s11, &s21);
                ln_dx_row(dy0, g, x0, C, m0, ml0, rs0, rs0 * s10 * invC, rs0 * s20 * invC, ow, dx + r * C);
                ln_dx_row(dy1, g, x1, C, m1, ml1, rs1, rs1 * s11 * invC, rs1 * s21 * invC, ow, dx + (r + 1) * C);
            }
        }
        for (; r < r_end; r++) {
            const float *xr = nl_load(x, r * C, C, sc), *dyr = dy16 ? sc + C : dy + r * C;
            if (dy16) segc_ew_load_bf16(dy16 + r * C, sc + C, C);
            const float m = sv->mean[r], ml = sv->mean_lo[r], rs = sv->rstd[r];
            /* one sweep for the row sums and the gamma/beta partials, one for dx */
            float s1 = 0.f, s2 = 0.f;
            if (pgk && pbk) {
                ln_bwd_row(dyr, g, xr, C, m, ml, rs, pgk, pbk, &s1, &s2);
            } else {
                if (pgk) {
#pragma omp simd
                    for (int64_t j = 0; j < C; j++) pgk[j] += dyr[j] * (((xr[j] - m) - ml) * rs);
                }
                if (pbk) {
#pragma omp simd
                    for (int64_t j = 0; j < C; j++) pbk[j] += dyr[j];
                }
                if (dx || dx16) {
#pragma omp simd reduction(+ : s1, s2)
                    for (int64_t j = 0; j < C; j++) {
                        const float gd = dyr[j] * g[j];
                        s1 += gd;
                        s2 += gd * (((xr[j] - m) - ml) * rs);
                    }
                }
            }
            if (dx16) {
                float *o = sc + 2 * C;
                ln_dx_row(dyr, g, xr, C, m, ml, rs, rs * s1 * invC, rs * s2 * invC, 1, o);
                segc_ew_put_grad_bf16(o, dx16 + r * C, C, fresh16);
                continue;
            }
            if (!dx) continue;
            /* dx = rstd * (dy*g - mean(dy*g) - xhat * mean(dy*g*xhat)) */
            ln_dx_row(dyr, g, xr, C, m, ml, rs, rs * s1 * invC, rs * s2 * invC, ow, dx + r * C);
        }
    }
    /* chunk partials summed in chunk order: independent of the thread count */
    for (int p = 0; p < 2; p++) {
        const float *part = p ? pb : pg;
        if (!part) continue;
        float *dst = segc_grad(ctx, p ? beta : gamma);
        for (int64_t j = 0; j < C; j++) {
            float s = 0.f;
            for (int64_t k = 0; k < K; k++) s += part[k * C + j];
            dst[j] += s;
        }
    }
}

/* gradient of sum = x + residual: passes straight through to both */
static void add_backward(segc_ctx *ctx, segc_node *nd) {
    const float *gs = nd->out->grad;
    const uint16_t *gs16 = nd->out->grad_bf16;   /* ctx->bf16_grads: instead of gs */
    int64_t n = segc_numel(nd->out);
    for (int i = 0; i < 2; i++) {
        segc_tensor *t = nd->in[i];
        if (!t->requires_grad) continue;
        bool fresh;
        uint16_t *g16 = segc_grad_bf16_dst(ctx, t, &fresh);   /* NULL unless ctx->bf16_grads allows */
        if (g16 || gs16) {
            float *gf = g16 ? NULL : segc_grad(ctx, t);   /* bf16 in, f32 out: added in */
#pragma omp parallel for simd schedule(static) if (n >= LN_PAR_MIN)
            for (int64_t j = 0; j < n; j++) {
                float v = gs16 ? segc_bf16_to_f32(gs16[j]) : gs[j];
                if (gf) gf[j] += v;
                else g16[j] = fresh && gs16 ? gs16[j] : segc_f32_to_bf16(fresh ? v : v + segc_bf16_to_f32(g16[j]));
            }
            continue;
        }
        int ow = 0;
        float *gt = nl_grad_buf(ctx, t, &ow);
        if (ow) memcpy(gt, gs, (size_t)n * sizeof(float));
        else {
#pragma omp parallel for simd schedule(static) if (n >= LN_PAR_MIN)
            for (int64_t j = 0; j < n; j++) gt[j] += gs[j];
        }
    }
}

static segc_tensor *ln_forward(segc_ctx *ctx, const char *op, segc_tensor *x, segc_tensor *res, segc_tensor *gamma,
                               segc_tensor *beta, float eps, segc_tensor **sum_out) {
    SEGC_PROF_OP(ctx, op);
    char a[96], b[96];
    if (!segc_check_float(ctx, op, "x", x)) return NULL;
    if (x->ndim < 1) { segc_set_error(ctx, "%s: x must have at least 1 dim, found a scalar", op); return NULL; }
    const int64_t C = x->shape[x->ndim - 1];
    if (C < 1) { segc_set_error(ctx, "%s: normalised (last) dim of x %s must be >= 1", op, segc_shape_str(x, a, sizeof a)); return NULL; }
    if (res && (res->dtype != x->dtype || !segc_same_shape(x, res))) {
        segc_set_error(ctx, "%s: residual must match x (%s %s), found %s %s", op, segc_dtype_name(x->dtype),
                       segc_shape_str(x, a, sizeof a), segc_dtype_name(res->dtype), segc_shape_str(res, b, sizeof b));
        return NULL;
    }
    if (!nl_check_vec(ctx, op, "gamma", gamma, C) || !nl_check_vec(ctx, op, "beta", beta, C)) return NULL;
    if (!(eps >= 0.f)) { segc_set_error(ctx, "%s: eps must be >= 0, found %g", op, (double)eps); return NULL; }

    const int64_t rows = segc_numel(x) / C;
    segc_tensor *y = segc_tensor_like(ctx, x), *sum = res ? segc_tensor_like(ctx, x) : NULL;
    ln_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (ln_saved){.eps = eps, .rows = rows, .C = C};
    sv->mean = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(rows) * sizeof(float));
    sv->mean_lo = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(rows) * sizeof(float));
    sv->rstd = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(rows) * sizeof(float));
    const float *g = nl_param_f32(ctx, gamma), *bt = nl_param_f32(ctx, beta);
    const bool bf = x->dtype == SEGC_BF16;
    float *scratch = bf || res ? segc_arena_alloc(&ctx->arena, (size_t)(omp_get_max_threads() * 9 * C) * sizeof(float)) : NULL;
    const float invC = 1.0f / (float)C;

    if (!res) ln_forward_pairs(sv, x, y, g, bt, invC, scratch);
    else
#pragma omp parallel for schedule(static) if (rows * C >= LN_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *sc = scratch ? scratch + (int64_t)omp_get_thread_num() * 3 * C : NULL;
        const float *xr = nl_load(x, r * C, C, sc);
        if (res) {
            /* sum row, rounded to the storage dtype first so that forward and
             * backward (which reloads the stored sum) see the same values */
            const float *rr = nl_load(res, r * C, C, sc + C);
            float *sr = nl_dst(sum, r * C, sc + 2 * C);
#pragma omp simd
            for (int64_t j = 0; j < C; j++) sr[j] = xr[j] + rr[j];
            if (bf) {
                nl_store(sum, r * C, C, sr);
                segc_ew_load_bf16(segc_bf16p(sum) + r * C, sr, C);
            }
            xr = sr;
        }
        float m, ml, rs;
        ln_row_stats(xr, C, invC, eps, &m, &ml, &rs);
        sv->mean[r] = m;
        sv->mean_lo[r] = ml;
        sv->rstd[r] = rs;
        ln_emit_row(y, r, xr, C, m, ml, rs, g, bt, sc + C);   /* bf16: the residual row is no longer needed */
    }

    segc_tensor *xin = x;
    if (res) {
        segc_tensor *pair[2] = {x, res};
        if (segc_needs_grad(ctx, pair, 2))
            segc_node_reads_bf16_grad(segc_record(ctx, "add_layer_norm.sum", add_backward, sum, pair, 2, NULL));
        if (sum_out) *sum_out = sum;
        xin = sum;
    }
    segc_tensor *ins[3] = {xin, gamma, beta};
    if (segc_needs_grad(ctx, ins, 3)) segc_node_reads_bf16_grad(segc_record(ctx, op, ln_backward, y, ins, 3, sv));
    if (!segc_check_finite_out(ctx, op, y)) return NULL;
    return y;
}

segc_tensor *segc_layer_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *gamma, segc_tensor *beta, float eps) {
    if (!x) return NULL;
    return ln_forward(ctx, "layer_norm", x, NULL, gamma, beta, eps, NULL);
}

segc_tensor *segc_add_layer_norm(segc_ctx *ctx, segc_tensor *x, segc_tensor *residual, segc_tensor *gamma,
                                 segc_tensor *beta, float eps, segc_tensor **sum_out) {
    if (sum_out) *sum_out = NULL;
    if (!x || !residual) return NULL;
    return ln_forward(ctx, "add_layer_norm", x, residual, gamma, beta, eps, sum_out);
}
