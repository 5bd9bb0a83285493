/* Samplers: mmengine-style InfiniteSampler (a fresh seeded permutation per
 * pass, endless) and a sequential one-pass sampler, both sharded by
 * interleaving the global stream across ranks (rank r takes r, r+W, ...). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/loader.h"

static inline uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void segc_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm) {
    uint64_t key = mix64(mix64(seed ^ 0xbb67ae8584caa73bull) ^ (uint64_t)epoch);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    /* Fisher-Yates from the top; draw i depends only on (key, i) */
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t o[4];
        segc_philox(key, (uint64_t)i, o);
        uint64_t r = ((uint64_t)o[0] << 32) | o[1];
        int64_t j = (int64_t)(r % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

bool segc_sampler_init(segc_sampler *s, segc_sampler_kind kind, int64_t n, bool shuffle, uint64_t seed, int rank,
                       int world, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    if (kind != SEGC_SAMPLER_INFINITE && kind != SEGC_SAMPLER_SEQUENTIAL) {
        snprintf(err, errlen, "sampler: unknown kind %d", (int)kind);
        return false;
    }
    if (n < 1) {
        snprintf(err, errlen, "sampler: dataset has %lld samples, expected at least 1", (long long)n);
        return false;
    }
    if (world < 1 || rank < 0 || rank >= world) {
        snprintf(err, errlen, "sampler: rank %d of world size %d, expected 0 <= rank < world", rank, world);
        return false;
    }
    s->kind = kind;
    s->shuffle = shuffle;
    s->n = n;
    s->rank = rank;
    s->world = world;
    s->st = (segc_sampler_state){seed, 0, rank};
    /* infinite: rank r's first sample is global stream position r, which may lie past epoch 0 */
    if (kind == SEGC_SAMPLER_INFINITE) {
        s->st.epoch = rank / n;
        s->st.position = rank % n;
    }
    s->perm_epoch = -1;
    if (shuffle) {
        s->perm = malloc(sizeof(int64_t) * (size_t)n);
        if (!s->perm) {
            snprintf(err, errlen, "sampler: out of memory for a permutation of %lld", (long long)n);
            return false;
        }
    }
    return true;
}

void segc_sampler_free(segc_sampler *s) {
    free(s->perm);
    s->perm = NULL;
}

static int64_t index_at(segc_sampler *s, int64_t epoch, int64_t pos) {
    if (!s->shuffle) return pos;
    if (s->perm_epoch != epoch) {
        segc_permutation(s->st.seed, epoch, s->n, s->perm);
        s->perm_epoch = epoch;
    }
    return s->perm[pos];
}

bool segc_sampler_next(segc_sampler *s, int64_t *index, int64_t *epoch) {
    if (s->kind == SEGC_SAMPLER_SEQUENTIAL) {
        if (s->st.position >= s->n) return false;
        *index = index_at(s, s->st.epoch, s->st.position);
        *epoch = s->st.epoch;
        s->st.position += s->world;
        return true;
    }
    *index = index_at(s, s->st.epoch, s->st.position);
    *epoch = s->st.epoch;
    s->st.position += s->world;
    s->st.epoch += s->st.position / s->n;
    s->st.position %= s->n;
    return true;
}

segc_sampler_state segc_sampler_get_state(const segc_sampler *s) { return s->st; }

bool segc_sampler_set_state(segc_sampler *s, const segc_sampler_state *st, char *err, size_t errlen) {
    if (st->epoch < 0 || st->position < 0) {
        snprintf(err, errlen, "sampler: state epoch %lld position %lld, expected both >= 0", (long long)st->epoch,
                 (long long)st->position);
        return false;
    }
    if (s->kind == SEGC_SAMPLER_INFINITE) {
        if (st->position >= s->n) {
            snprintf(err, errlen, "sampler: state position %lld outside a dataset of %lld samples",
                     (long long)st->position, (long long)s->n);
            return false;
        }
        /* this rank only ever stands on global positions congruent to its rank */
        int64_t w = s->world, g = ((st->epoch % w) * (s->n % w) + st->position % w + w - s->rank) % w;
        if (g != 0) {
            snprintf(err, errlen, "sampler: state (epoch %lld, position %lld) does not belong to rank %d of %d",
                     (long long)st->epoch, (long long)st->position, s->rank, s->world);
            return false;
        }
    } else if ((st->position - s->rank) % s->world != 0) {
        snprintf(err, errlen, "sampler: state position %lld does not belong to rank %d of %d",
                 (long long)st->position, s->rank, s->world);
        return false;
    }
    s->st = *st;
    return true;
}
