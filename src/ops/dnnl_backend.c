/* The oneDNN engine, its stream and the primitive cache.
 *
 * Threads: the stream, each cached primitive's memory objects and the cache's
 * eviction are shared by the whole process, so oneDNN-backed ops serve one
 * thread at a time (segc/backend.h states the rule). The first thread to use
 * the backend owns it until every context has been freed; another thread that
 * tries meanwhile gets an error instead of a data race. OpenMP workers inside
 * an op's parallel region act for the owner and are let through.
 *
 * Cache: open addressing keyed by the op's key bytes, bounded, least recently
 * used entry evicted. An op uses the pointers it got from the cache within
 * the call (none keeps one across ops), and a call touches at most a handful
 * of primitives, all recently used, so with at least CACHE_MIN entries the
 * entry evicted is never one a running op still holds. */
#include "dnnl_backend.h"

#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/backend.h"
#include "segc/cpu.h"

#define CACHE_DEFAULT 1024
#define CACHE_MIN 64

static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t g_limit = CACHE_DEFAULT;

/* oneDNN's own ISA names for segc's levels (segc/cpu.h) */
static dnnl_cpu_isa_t dnnl_isa(segc_isa l) {
    switch (l) {
    case SEGC_ISA_AVX2: return dnnl_cpu_isa_avx2;
    case SEGC_ISA_AVX512: return dnnl_cpu_isa_avx512_core;
    case SEGC_ISA_AVX512_BF16: return dnnl_cpu_isa_avx512_core_bf16;
    default: return dnnl_cpu_isa_all;
    }
}

static void init_engine(void) {
    /* SEGC_ISA caps oneDNN as well as segc's kernels, so a forced lower level runs what a CPU of
     * that level runs; this must precede oneDNN's first ISA query, hence the engine's creation */
    segc_isa forced = segc_cpu_isa_env();
    if (forced < SEGC_ISA_COUNT && forced < segc_cpu_detected() &&
        dnnl_set_max_cpu_isa(dnnl_isa(forced)) != dnnl_success)
        fprintf(stderr, "segc: oneDNN refused SEGC_ISA=%s (already initialised?)\n", segc_isa_name(forced));
    const char *env = getenv("SEGC_PRIMITIVE_CACHE");
    if (env && *env) {
        char *end;
        long long v = strtoll(env, &end, 10);
        if (*end || v < 1) fprintf(stderr, "segc: SEGC_PRIMITIVE_CACHE=%s is not a positive count; using %d\n", env, CACHE_DEFAULT);
        else g_limit = v < CACHE_MIN ? CACHE_MIN : (size_t)v;
    }
    /* oneDNN keeps a cache of its own beside ours; bound it the same way (unless the user did) */
    if (!getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY") && !getenv("DNNL_PRIMITIVE_CACHE_CAPACITY"))
        dnnl_set_primitive_cache_capacity(g_limit > INT_MAX ? INT_MAX : (int)g_limit);
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags) != dnnl_success) {
        g_engine = NULL;
        g_stream = NULL;
    }
}
dnnl_engine_t segc_dnnl_engine(void) { pthread_once(&g_once, init_engine); return g_engine; }
dnnl_stream_t segc_dnnl_stream(void) { pthread_once(&g_once, init_engine); return g_stream; }

/* ---- the one-thread rule (caller holds g_lock) ---- */
static pthread_t g_owner;
static bool g_owned;
static uint64_t g_owner_epoch;

static bool claim_locked(void) {
    if (omp_in_parallel()) return true;   /* a worker of an op's parallel region */
    const pthread_t self = pthread_self();
    const uint64_t epoch = segc_ctx_epoch();
    if (g_owned && g_owner_epoch == epoch && !pthread_equal(g_owner, self)) return false;
    g_owner = self, g_owned = true, g_owner_epoch = epoch;
    return true;
}
static const char k_thread_rule[] =
    "%s: another thread is using segc's oneDNN backend; ops run in one thread at a time until every context is "
    "freed (segc/backend.h)";

/* ---- the cache ---- */
typedef struct { uint64_t h; void *key; size_t keylen; segc_dnnl_prim *val; } slot;
static slot *g_tab;
static size_t g_cap, g_n;
static uint64_t g_tick, g_evictions, g_creations;

static uint64_t fnv(const void *k, size_t n) {
    const unsigned char *p = k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ull; }
    return h;
}
static slot *find(uint64_t h, const void *key, size_t keylen) {
    if (!g_cap) return NULL;
    for (size_t i = h & (g_cap - 1);; i = (i + 1) & (g_cap - 1)) {
        slot *s = &g_tab[i];
        if (!s->key) return s;
        if (s->h == h && s->keylen == keylen && !memcmp(s->key, key, keylen)) return s;
    }
}

static void prim_free(segc_dnnl_prim *p) {
    for (int i = 0; i < p->n_mem; i++) dnnl_memory_destroy(p->mem[i]);
    for (int t = 0; t < p->n_tmem; t++)
        for (int i = 0; i < 4; i++) if (p->tmem[t][i]) dnnl_memory_destroy(p->tmem[t][i]);
    free(p->tmem);
    dnnl_primitive_destroy(p->prim);
    dnnl_primitive_desc_destroy(p->pd);
    free(p);
}

/* drop the least recently used entry; linear probing deletes by shifting later members of the
 * probe run back, so lookups never need tombstones */
static void evict_lru_locked(void) {
    size_t victim = g_cap;
    for (size_t i = 0; i < g_cap; i++)
        if (g_tab[i].key && (victim == g_cap || g_tab[i].val->last_use < g_tab[victim].val->last_use)) victim = i;
    if (victim == g_cap) return;
    prim_free(g_tab[victim].val);
    free(g_tab[victim].key);
    g_n--;
    g_evictions++;
    size_t i = victim, mask = g_cap - 1;
    for (size_t j = (i + 1) & mask; g_tab[j].key; j = (j + 1) & mask) {
        size_t home = g_tab[j].h & mask;
        /* the entry at j may move to i unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        g_tab[i] = g_tab[j];
        i = j;
    }
    memset(&g_tab[i], 0, sizeof g_tab[i]);
}

segc_dnnl_prim *segc_dnnl_cache_get(const void *key, size_t keylen) {
    pthread_once(&g_once, init_engine);
    pthread_mutex_lock(&g_lock);
    segc_dnnl_prim *r = NULL;
    if (claim_locked()) {   /* refused: the caller's cache_put reports it */
        slot *s = find(fnv(key, keylen), key, keylen);
        r = s && s->key ? s->val : NULL;
        if (r) r->last_use = ++g_tick;
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}
segc_dnnl_prim *segc_dnnl_cache_put(segc_ctx *ctx, const char *op, const void *key, size_t keylen,
                                    dnnl_primitive_desc_t pd) {
    pthread_once(&g_once, init_engine);
    pthread_mutex_lock(&g_lock);
    bool mine = claim_locked();
    pthread_mutex_unlock(&g_lock);
    if (!mine) {
        segc_set_error(ctx, k_thread_rule, op);
        dnnl_primitive_desc_destroy(pd);
        return NULL;
    }
    segc_dnnl_prim *p = calloc(1, sizeof *p);
    void *kcopy = malloc(keylen);
    if (!p || !kcopy) {
        segc_set_error(ctx, "%s: out of memory caching a oneDNN primitive", op);
        dnnl_primitive_desc_destroy(pd);
        free(p);
        free(kcopy);
        return NULL;
    }
    memcpy(kcopy, key, keylen);
    p->pd = pd;
    if (dnnl_primitive_create(&p->prim, pd) != dnnl_success) {
        segc_set_error(ctx, "%s: oneDNN could not create the primitive", op);
        dnnl_primitive_desc_destroy(pd);
        free(p);
        free(kcopy);
        return NULL;
    }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    pthread_mutex_lock(&g_lock);
    if ((g_n + 1) * 2 > g_cap) {
        size_t oc = g_cap, nc = g_cap ? g_cap * 2 : 256;
        slot *nt = calloc(nc, sizeof *nt);
        if (!nt) {
            pthread_mutex_unlock(&g_lock);
            segc_set_error(ctx, "%s: out of memory growing the oneDNN primitive cache", op);
            prim_free(p);
            free(kcopy);
            return NULL;
        }
        slot *old = g_tab;
        g_tab = nt, g_cap = nc;
        for (size_t i = 0; i < oc; i++) if (old[i].key) *find(old[i].h, old[i].key, old[i].keylen) = old[i];
        free(old);
    }
    uint64_t h = fnv(key, keylen);
    slot *s = find(h, key, keylen);
    if (!s->key) {
        *s = (slot){h, kcopy, keylen, p};
        g_n++;
        g_creations++;
    } else { /* raced/duplicate: keep the first */
        prim_free(p);
        free(kcopy);
        p = s->val;
    }
    p->last_use = ++g_tick;
    while (g_n > g_limit) evict_lru_locked();   /* p is the newest: never the victim */
    pthread_mutex_unlock(&g_lock);
    return p;
}

segc_dnnl_cache_stats segc_dnnl_cache_info(void) {
    pthread_once(&g_once, init_engine);
    pthread_mutex_lock(&g_lock);
    segc_dnnl_cache_stats st = {g_n, g_limit, g_creations, g_evictions};
    pthread_mutex_unlock(&g_lock);
    return st;
}

dnnl_primitive_attr_t segc_dnnl_attr(void) {
    pthread_once(&g_once, init_engine);
    dnnl_primitive_attr_t a;
    dnnl_primitive_attr_create(&a);
    dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    return a;
}

dnnl_primitive_desc_t segc_dnnl_pd_pick(const_dnnl_op_desc_t op_desc, const_dnnl_primitive_attr_t attr,
                                        const_dnnl_primitive_desc_t hint, const char *want, const char *skip) {
    dnnl_primitive_desc_iterator_t it;
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_primitive_desc_iterator_create(&it, op_desc, attr, segc_dnnl_engine(), hint) != dnnl_success) return NULL;
    do {
        dnnl_primitive_desc_t c = dnnl_primitive_desc_iterator_fetch(it);
        const char *impl = NULL;
        if (c) dnnl_primitive_desc_query(c, dnnl_query_impl_info_str, 0, &impl);
        if (impl && (!want || !strncmp(impl, want, strlen(want))) && (!skip || strncmp(impl, skip, strlen(skip)))) {
            pd = c;
            break;
        }
        if (c) dnnl_primitive_desc_destroy(c);
    } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
    dnnl_primitive_desc_iterator_destroy(it);
    return pd;
}

static dnnl_memory_t arg_mem(segc_dnnl_prim *p, int arg) {
    for (int i = 0; i < p->n_mem; i++) if (p->mem_arg[i] == arg) return p->mem[i];
    if (p->n_mem == 12) return NULL;
    const dnnl_memory_desc_t *md = arg == DNNL_ARG_SCRATCHPAD
                                       ? dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0)
                                       : dnnl_primitive_desc_query_md(p->pd, dnnl_query_exec_arg_md, arg);
    dnnl_memory_t m = NULL;
    if (!md || dnnl_memory_create(&m, md, segc_dnnl_engine(), DNNL_MEMORY_NONE) != dnnl_success) return NULL;
    pthread_mutex_lock(&g_lock);
    p->mem_arg[p->n_mem] = arg;
    p->mem[p->n_mem++] = m;
    pthread_mutex_unlock(&g_lock);
    return m;
}

bool segc_dnnl_run(segc_ctx *ctx, const char *op, segc_dnnl_prim *p, int nargs, const int *arg_ids,
                   void *const *ptrs) {
    dnnl_exec_arg_t all[13];
    int n = 0;
    pthread_mutex_lock(&g_lock);
    bool mine = claim_locked();
    pthread_mutex_unlock(&g_lock);
    if (!mine) { segc_set_error(ctx, k_thread_rule, op); return false; }
    if (nargs > 11) { segc_set_error(ctx, "%s: too many oneDNN args (%d)", op, nargs); return false; }
    for (int i = 0; i < nargs; i++) {
        dnnl_memory_t m = arg_mem(p, arg_ids[i]);
        if (!m) { segc_set_error(ctx, "%s: oneDNN primitive has no memory for arg %d", op, arg_ids[i]); return false; }
        dnnl_memory_set_data_handle(m, ptrs[i]);
        all[n++] = (dnnl_exec_arg_t){arg_ids[i], m};
    }
    segc_arena_mark scratch_mark = segc_arena_get_mark(&ctx->arena);
    if (p->scratch_bytes) {
        dnnl_memory_t m = arg_mem(p, DNNL_ARG_SCRATCHPAD);
        dnnl_memory_set_data_handle(m, segc_arena_alloc(&ctx->arena, p->scratch_bytes));
        all[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m};
    }
    dnnl_status_t st = dnnl_primitive_execute(p->prim, segc_dnnl_stream(), n, all);
    if (st == dnnl_success) st = dnnl_stream_wait(segc_dnnl_stream());
    segc_arena_rewind(&ctx->arena, scratch_mark);   /* the scratchpad lives for this call only */
    if (st != dnnl_success) { segc_set_error(ctx, "%s: oneDNN execution failed (status %d)", op, (int)st); return false; }
    return true;
}

dnnl_memory_t segc_dnnl_mem(const dnnl_memory_desc_t *md, void *data) {
    dnnl_memory_t m;
    if (dnnl_memory_create(&m, md, segc_dnnl_engine(), data) != dnnl_success) return NULL;
    return m;
}

dnnl_memory_desc_t segc_dnnl_md(int ndim, const int64_t *dims, dnnl_data_type_t dt) {
    dnnl_memory_desc_t md;
    dnnl_dims_t d, strides;
    for (int i = 0; i < ndim; i++) d[i] = dims[i];
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) { strides[i] = s; s *= dims[i] > 0 ? dims[i] : 1; }
    dnnl_memory_desc_init_by_strides(&md, ndim, d, dt, strides);
    return md;
}

dnnl_data_type_t segc_dnnl_dt(segc_dtype dt) {
    switch (dt) {
    case SEGC_F32: return dnnl_f32;
    case SEGC_BF16: return dnnl_bf16;
    case SEGC_U8: return dnnl_u8;
    case SEGC_I32: return dnnl_s32;
    default: return dnnl_data_type_undef;
    }
}
