/* Parameters and buffers in one flat f32 allocation (llm.c style), so that a
 * single fused optimizer pass and a single all-reduce can cover them all. */
#ifndef SEGC_PARAMS_H
#define SEGC_PARAMS_H
#include "segc/core.h"

typedef struct segc_params {
    int n, cap;
    segc_tensor **t;      /* individually allocated: pointers stay valid */
    int64_t *offset;      /* element offset of each tensor in data/grad */
    bool *trainable;      /* false for buffers such as running statistics */
    int64_t total;        /* elements in all tensors */
    float *data;          /* flat master weights (f32) */
    float *grad;          /* flat gradients (f32), same layout */
    bool finalized;
    char error[200];      /* first failure of add/finalize ("" when none): models report it */
} segc_params;

void segc_params_init(segc_params *p);
/* Declare a tensor; returns it (data/grad bound at finalize). Names are copied.
 * NULL (and p->error set) when out of memory, after finalize, or for a bad
 * shape; finalize then fails too, so a model constructor only checks that. */
segc_tensor *segc_params_add(segc_params *p, const char *name, int ndim, const int64_t *shape, bool trainable);
/* One zeroed allocation for all; false with p->error when an add failed or
 * the buffers cannot be allocated (the message says how many bytes). */
bool segc_params_finalize(segc_params *p);
segc_tensor *segc_params_find(const segc_params *p, const char *name);
int segc_params_index(const segc_params *p, const char *name);
void segc_params_zero_grad(segc_params *p);
int64_t segc_params_count(const segc_params *p, bool trainable_only);
void segc_params_free(segc_params *p);

#endif
