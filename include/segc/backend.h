/* Process-wide state of the compute backend (oneDNN): the primitive cache's
 * bound and counters, and the threading rule.
 *
 * Threading rule: the oneDNN backend (its stream, the cached primitives'
 * memory objects, the cache itself) is shared by the process, so ops that use
 * it (convolution, matmul/linear, attention, layout reorders) run in one
 * thread at a time. Any number of contexts may exist, but while any context
 * is alive, only the thread that first ran such an op may run them; another
 * thread's op fails with an error naming this rule instead of racing. Once
 * every context is freed, the next thread to run an op takes over. Element-
 * wise, normalisation, loss and data ops do not touch the backend and may run
 * in any thread with that thread's own context.
 *
 * Primitive cache: one entry per distinct op shape (and dtype, thread count,
 * ...), least recently used evicted past SEGC_PRIMITIVE_CACHE entries
 * (default 1024, at least 64), so `segc predict` over images of many sizes
 * keeps a bounded set. oneDNN's own cache is bounded to the same count
 * unless ONEDNN_PRIMITIVE_CACHE_CAPACITY is set. */
#ifndef SEGC_BACKEND_H
#define SEGC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct segc_dnnl_cache_stats {
    size_t entries, limit;
    uint64_t created, evicted;   /* since the process started */
} segc_dnnl_cache_stats;

segc_dnnl_cache_stats segc_dnnl_cache_info(void);

#ifdef __cplusplus
}
#endif
#endif
