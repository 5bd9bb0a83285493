/* The small parameter store (three tensors, one of them a buffer) and AdamW
 * optimizer the checkpoint fuzz target loads states into; make_seeds saves a
 * real checkpoint of the same store as the seed, so mutations start from a
 * state whose weights hash matches and reach the optimizer-state reader. */
#ifndef SEGC_FUZZ_CKPT_MODEL_H
#define SEGC_FUZZ_CKPT_MODEL_H
#include "segc/checkpoint.h"
#include "segc/optim.h"
#include "segc/params.h"

static inline void fuzz_ckpt_params(segc_params *p) {
    segc_params_init(p);
    segc_params_add(p, "backbone.a.weight", 2, (const int64_t[]){4, 3}, true);
    segc_params_add(p, "backbone.a.bias", 1, (const int64_t[]){4}, true);
    segc_params_add(p, "decode_head.bn.running_mean", 1, (const int64_t[]){4}, false);
    segc_params_finalize(p);
    for (int64_t i = 0; i < p->total; i++) p->data[i] = 0.25f * (float)(i % 7) - 0.5f;
}
#endif
