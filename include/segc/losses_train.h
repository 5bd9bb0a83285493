/* class_weight: auto from a training split (src/train/losses_config.c). */
#ifndef SEGC_LOSSES_TRAIN_H
#define SEGC_LOSSES_TRAIN_H
#include <stdio.h>

#include "segc/data.h"
#include "segc/losses.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-class labelled pixels of the split (hist[k], ignore excluded) and, per
 * class, the labelled pixels of the images that contain it (present_px[k]),
 * over every sample (decoded in parallel; integer sums, so exact). */
bool segc_loss_split_histogram(const segc_dataset *ds, int K, int64_t *hist, int64_t *present_px, char *err,
                               size_t errlen);
/* When some term says class_weight: auto: the split's histogram, the weights
 * of c->class_weight_rule filled into those terms, a line listing them on
 * progress (may be NULL) and RUN_DIR/class_weights.json (run_dir NULL: not
 * written). No-op otherwise. */
bool segc_loss_resolve_auto(segc_loss_cfg *c, const segc_dataset *ds, int K, const char *run_dir, FILE *progress,
                            char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
