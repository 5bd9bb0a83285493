/* Flat parameter storage. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/params.h"

void segc_params_init(segc_params *p) { memset(p, 0, sizeof *p); }

/* records the first failure only: later ones are usually its consequences */
static void params_fail(segc_params *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void params_fail(segc_params *p, const char *fmt, ...) {
    if (p->error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error, sizeof p->error, fmt, ap);
    va_end(ap);
}

segc_tensor *segc_params_add(segc_params *p, const char *name, int ndim, const int64_t *shape, bool trainable) {
    if (p->finalized) return params_fail(p, "params: '%s' added after finalize", name), NULL;
    if (ndim < 0 || ndim > SEGC_MAX_DIMS) return params_fail(p, "params: '%s': %d dims, at most %d", name, ndim, SEGC_MAX_DIMS), NULL;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(numel, shape[i], &numel))
            return params_fail(p, "params: '%s': bad shape (dim %d negative or the size overflows)", name, i), NULL;
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        /* each array is replaced only once it was grown, so a failure leaves p consistent */
        segc_tensor **t = realloc(p->t, (size_t)cap * sizeof *p->t);
        if (t) p->t = t;
        int64_t *off = t ? realloc(p->offset, (size_t)cap * sizeof *p->offset) : NULL;
        if (off) p->offset = off;
        bool *tr = off ? realloc(p->trainable, (size_t)cap * sizeof *p->trainable) : NULL;
        if (tr) p->trainable = tr;
        if (!tr) return params_fail(p, "params: out of memory adding '%s' (%d tensors)", name, p->n), NULL;
        p->cap = cap;
    }
    segc_tensor *t = calloc(1, sizeof *t);
    char *nm = t ? strdup(name) : NULL;
    if (!nm) {
        free(t);
        return params_fail(p, "params: out of memory adding '%s' (%d tensors)", name, p->n), NULL;
    }
    t->dtype = SEGC_F32;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->name = nm;
    t->is_param = true;
    t->requires_grad = trainable;
    p->t[p->n] = t;
    p->offset[p->n] = p->total;
    p->trainable[p->n] = trainable;
    /* keep every tensor 64-byte aligned inside the flat buffer */
    p->total += (numel + 15) / 16 * 16;
    p->n++;
    return t;
}

bool segc_params_finalize(segc_params *p) {
    if (p->finalized) return true;
    if (p->error[0]) return false;
    size_t elems = (size_t)(p->total ? p->total : 16), bytes;
    if (__builtin_mul_overflow(elems, sizeof(float), &bytes) || bytes > SIZE_MAX / 2) {
        snprintf(p->error, sizeof p->error, "params: %lld parameters do not fit in memory", (long long)p->total);
        return false;
    }
    p->data = aligned_alloc(SEGC_ALIGN, bytes);
    p->grad = aligned_alloc(SEGC_ALIGN, bytes);
    if (!p->data || !p->grad) {
        free(p->data);
        free(p->grad);
        p->data = p->grad = NULL;
        snprintf(p->error, sizeof p->error,
                 "params: out of memory allocating 2 x %zu bytes (%.1f MiB) for %d tensors, %lld parameters (weights + "
                 "gradients)", bytes, 2.0 * bytes / 1048576.0, p->n, (long long)p->total);
        return false;
    }
    memset(p->data, 0, bytes);
    memset(p->grad, 0, bytes);
    for (int i = 0; i < p->n; i++) {
        p->t[i]->data = p->data + p->offset[i];
        p->t[i]->grad = p->grad + p->offset[i];
    }
    p->finalized = true;
    return true;
}

int segc_params_index(const segc_params *p, const char *name) {
    for (int i = 0; i < p->n; i++) if (strcmp(p->t[i]->name, name) == 0) return i;
    return -1;
}
segc_tensor *segc_params_find(const segc_params *p, const char *name) {
    int i = segc_params_index(p, name);
    return i < 0 ? NULL : p->t[i];
}
void segc_params_zero_grad(segc_params *p) {
    if (p->grad) memset(p->grad, 0, (size_t)p->total * sizeof(float));
}
int64_t segc_params_count(const segc_params *p, bool trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < p->n; i++) if (!trainable_only || p->trainable[i]) n += segc_numel(p->t[i]);
    return n;
}
void segc_params_free(segc_params *p) {
    for (int i = 0; i < p->n; i++) { free((char *)p->t[i]->name); free(p->t[i]); }
    free(p->t); free(p->offset); free(p->trainable); free(p->data); free(p->grad);
    memset(p, 0, sizeof *p);
}
