/* Internal to src/ops: the oneDNN CPU engine/stream and a primitive cache
 * keyed by the op's full shape/parameter description, so a training step
 * creates no primitive after its first iteration. The cache is bounded
 * (least recently used evicted, SEGC_PRIMITIVE_CACHE entries, default 1024):
 * a primitive pointer from it is valid for the rest of the op that got it,
 * not across ops. Keys must hold everything the primitive depends on,
 * including the thread count (oneDNN does not promise a primitive created
 * for one thread count works under another). */
#ifndef SEGC_DNNL_BACKEND_H
#define SEGC_DNNL_BACKEND_H
#include <oneapi/dnnl/dnnl.h>
#include <stddef.h>

#include "segc/core.h"

dnnl_engine_t segc_dnnl_engine(void);
dnnl_stream_t segc_dnnl_stream(void);

typedef struct segc_dnnl_prim {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    size_t scratch_bytes;
    /* memory objects created once per (primitive, arg) and re-pointed per call,
     * so executing a cached primitive makes no heap allocation */
    int n_mem;
    int mem_arg[12];
    dnnl_memory_t mem[12];
    /* per-thread memory objects of GEMM plans (matmul.c): thread t's SRC, WEIGHTS, DST,
     * SCRATCHPAD; they die with the primitive when the cache evicts it */
    dnnl_memory_t (*tmem)[4];
    int n_tmem;
    uint64_t last_use;   /* cache tick of the last lookup: least recently used goes first */
} segc_dnnl_prim;

#include "segc/backend.h"

/* Look up a cached primitive by key bytes (zero-initialise key structs so
 * padding is deterministic). */
segc_dnnl_prim *segc_dnnl_cache_get(const void *key, size_t keylen);
/* Create the primitive for pd (pd ownership moves to the cache) and store it.
 * Returns NULL (and sets ctx error naming op) if creation fails. */
segc_dnnl_prim *segc_dnnl_cache_put(segc_ctx *ctx, const char *op, const void *key, size_t keylen,
                                    dnnl_primitive_desc_t pd);
/* Execute with (DNNL_ARG_*, data pointer) pairs. Each pointer must hold data
 * in the layout the primitive descriptor reports for that arg (plain when the
 * op created it with plain memory descs). The scratchpad comes from the ctx
 * arena. */
bool segc_dnnl_run(segc_ctx *ctx, const char *op, segc_dnnl_prim *p, int nargs, const int *arg_ids,
                   void *const *ptrs);
/* memory object over caller-owned data with a plain (row-major) layout */
dnnl_memory_t segc_dnnl_mem(const dnnl_memory_desc_t *md, void *data);
/* plain row-major memory desc for dims/dtype */
dnnl_memory_desc_t segc_dnnl_md(int ndim, const int64_t *dims, dnnl_data_type_t dt);
dnnl_data_type_t segc_dnnl_dt(segc_dtype dt);
/* create a primitive attribute that uses a user scratchpad (the default for all cached primitives) */
dnnl_primitive_attr_t segc_dnnl_attr(void);
/* the first implementation oneDNN offers for op_desc whose name starts with want (NULL: any)
 * and not with skip (NULL: none); NULL when there is none. The caller owns the result. */
dnnl_primitive_desc_t segc_dnnl_pd_pick(const_dnnl_op_desc_t op_desc, const_dnnl_primitive_attr_t attr,
                                        const_dnnl_primitive_desc_t hint, const char *want, const char *skip);
#define SEGC_DNNL_CHECK(ctx, op, call)                                                               \
    do {                                                                                            \
        dnnl_status_t st_ = (call);                                                                 \
        if (st_ != dnnl_success) { segc_set_error((ctx), "%s: oneDNN %s failed (status %d)", (op), #call, (int)st_); } \
    } while (0)
#endif
