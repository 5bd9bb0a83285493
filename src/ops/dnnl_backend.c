#include "dnnl_backend.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static void init_engine(void) {
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags) != dnnl_success) {
        g_engine = NULL;
        g_stream = NULL;
    }
}
dnnl_engine_t segc_dnnl_engine(void) { pthread_once(&g_once, init_engine); return g_engine; }
dnnl_stream_t segc_dnnl_stream(void) { pthread_once(&g_once, init_engine); return g_stream; }

/* open-addressing hash table keyed by bytes (FNV-1a) */
typedef struct { uint64_t h; void *key; size_t keylen; segc_dnnl_prim *val; } slot;
static slot *g_tab;
static size_t g_cap, g_n;

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
segc_dnnl_prim *segc_dnnl_cache_get(const void *key, size_t keylen) {
    pthread_mutex_lock(&g_lock);
    slot *s = find(fnv(key, keylen), key, keylen);
    segc_dnnl_prim *r = s && s->key ? s->val : NULL;
    pthread_mutex_unlock(&g_lock);
    return r;
}
segc_dnnl_prim *segc_dnnl_cache_put(segc_ctx *ctx, const char *op, const void *key, size_t keylen,
                                    dnnl_primitive_desc_t pd) {
    segc_dnnl_prim *p = calloc(1, sizeof *p);
    p->pd = pd;
    if (dnnl_primitive_create(&p->prim, pd) != dnnl_success) {
        segc_set_error(ctx, "%s: oneDNN could not create the primitive", op);
        dnnl_primitive_desc_destroy(pd);
        free(p);
        return NULL;
    }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    pthread_mutex_lock(&g_lock);
    if ((g_n + 1) * 2 > g_cap) {
        size_t oc = g_cap;
        slot *old = g_tab;
        g_cap = g_cap ? g_cap * 2 : 256;
        g_tab = calloc(g_cap, sizeof *g_tab);
        for (size_t i = 0; i < oc; i++) if (old[i].key) *find(old[i].h, old[i].key, old[i].keylen) = old[i];
        free(old);
    }
    uint64_t h = fnv(key, keylen);
    slot *s = find(h, key, keylen);
    if (!s->key) {
        s->h = h;
        s->key = malloc(keylen);
        memcpy(s->key, key, keylen);
        s->keylen = keylen;
        s->val = p;
        g_n++;
    } else { /* raced/duplicate: keep the first */
        dnnl_primitive_destroy(p->prim);
        dnnl_primitive_desc_destroy(p->pd);
        free(p);
        p = s->val;
    }
    pthread_mutex_unlock(&g_lock);
    return p;
}

dnnl_primitive_attr_t segc_dnnl_attr(void) {
    dnnl_primitive_attr_t a;
    dnnl_primitive_attr_create(&a);
    dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    return a;
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
