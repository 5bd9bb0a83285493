/* Flat parameter storage. */
#include <stdlib.h>
#include <string.h>

#include "segc/params.h"

void segc_params_init(segc_params *p) { memset(p, 0, sizeof *p); }

segc_tensor *segc_params_add(segc_params *p, const char *name, int ndim, const int64_t *shape, bool trainable) {
    if (p->finalized || ndim > SEGC_MAX_DIMS) return NULL;
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        p->t = realloc(p->t, (size_t)cap * sizeof *p->t);
        p->offset = realloc(p->offset, (size_t)cap * sizeof *p->offset);
        p->trainable = realloc(p->trainable, (size_t)cap * sizeof *p->trainable);
        p->cap = cap;
    }
    segc_tensor *t = calloc(1, sizeof *t);
    t->dtype = SEGC_F32;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->name = strdup(name);
    t->is_param = true;
    t->requires_grad = trainable;
    p->t[p->n] = t;
    p->offset[p->n] = p->total;
    p->trainable[p->n] = trainable;
    /* keep every tensor 64-byte aligned inside the flat buffer */
    p->total += (segc_numel(t) + 15) / 16 * 16;
    p->n++;
    return t;
}

void segc_params_finalize(segc_params *p) {
    if (p->finalized) return;
    size_t bytes = (size_t)(p->total ? p->total : 16) * sizeof(float);
    p->data = aligned_alloc(SEGC_ALIGN, bytes);
    p->grad = aligned_alloc(SEGC_ALIGN, bytes);
    memset(p->data, 0, bytes);
    memset(p->grad, 0, bytes);
    for (int i = 0; i < p->n; i++) {
        p->t[i]->data = p->data + p->offset[i];
        p->t[i]->grad = p->grad + p->offset[i];
    }
    p->finalized = true;
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
