/* Philox-4x32-10 (Salmon et al., SC'11): counter-based, so every element's
 * random value depends only on (seed, index), not on the thread that draws it. */
#include <math.h>

#include "segc/core.h"

void segc_philox(uint64_t seed, uint64_t ctr, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void segc_rng_init(segc_rng *r, uint64_t seed) { r->seed = seed; r->offset = 0; }

uint64_t segc_rng_reserve(segc_rng *r, uint64_t n) {
    uint64_t base = r->offset * 4;
    r->offset += (n + 3) / 4;
    return base;
}

static inline float u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

float segc_rng_uniform_at(uint64_t seed, uint64_t idx) {
    uint32_t o[4];
    segc_philox(seed, idx >> 2, o);
    return u32_to_unit(o[idx & 3]);
}

float segc_rng_normal_at(uint64_t seed, uint64_t idx) {
    /* Box-Muller on two words of the same block: idx selects the pair */
    uint32_t o[4];
    segc_philox(seed ^ 0x5bd1e995ull, idx >> 1, o);
    int k = (int)(idx & 1) * 2;
    float u1 = ((float)(o[k] >> 8) + 1.0f) * (1.0f / 16777217.0f);
    float u2 = u32_to_unit(o[k + 1]);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

float segc_rng_uniform(segc_rng *r) { return segc_rng_uniform_at(r->seed, segc_rng_reserve(r, 1)); }
float segc_rng_normal(segc_rng *r) { return segc_rng_normal_at(r->seed, segc_rng_reserve(r, 1)); }
uint32_t segc_rng_u32(segc_rng *r) {
    uint32_t o[4];
    segc_philox(r->seed, segc_rng_reserve(r, 1) >> 2, o);
    return o[0];
}

void segc_rng_fill_uniform(segc_rng *r, float *dst, int64_t n, float lo, float hi) {
    uint64_t base = segc_rng_reserve(r, (uint64_t)n);
    for (int64_t i = 0; i < n; i++) dst[i] = lo + (hi - lo) * segc_rng_uniform_at(r->seed, base + (uint64_t)i);
}

void segc_rng_fill_normal(segc_rng *r, float *dst, int64_t n, float mean, float std) {
    uint64_t base = segc_rng_reserve(r, (uint64_t)n);
    for (int64_t i = 0; i < n; i++) dst[i] = mean + std * segc_rng_normal_at(r->seed, base + (uint64_t)i);
}
