/* segc tasks: one evaluator per task, used by training, `segc eval`,
 * `segc bench` and (later) `segc tune`.
 *
 * Segmentation evaluator (src/tasks/segmentation.c):
 *   - a confusion accumulator over every added pixel (metrics.h): mmseg's
 *     mIoU / mAcc / aAcc and per-class IoU / Acc, plus per-class Dice
 *     2*I / (P + L) over the whole split and mDice (NaN-skipping mean over
 *     classes, ignoring class 0 when `dice_skip_background`);
 *   - per-volume Dice (medical data): pixels added with the same volume id
 *     (add_volume) are one volume; for every region (a set of label values:
 *     BraTS whole tumour {1,2,3,4}, tumour core {1,3,4}, enhancing {4}) and
 *     every foreground label the Dice of that volume is computed, a volume
 *     where prediction and ground truth are both empty scoring 1, and the
 *     reported value is the mean over volumes. `mDice` is then the mean over
 *     regions (over foreground labels when no region is defined).
 * merge adds another evaluator's state (ranks, trials); result names every
 * metric and the primary metric (spec.primary, e.g. "mIoU", "mDice",
 * "Dice_WT"). */
#ifndef SEGC_TASK_H
#define SEGC_TASK_H
#include <stdio.h>

#include "segc/metrics.h"
#include "segc/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SEGC_TASK_MAX_REGIONS 8
#define SEGC_TASK_MAX_METRICS 600

typedef struct segc_region {
    char name[16];            /* "WT" -> metric "Dice_WT" */
    uint8_t labels[32];       /* label values in the region */
    int n_labels;
} segc_region;

typedef struct segc_eval_spec {
    segc_task_kind task;
    int num_classes;
    int ignore_index;                   /* 255 */
    const char *const *class_names;     /* may be NULL */
    char primary[32];                   /* primary metric, "" = the task's default (mIoU) */
    bool per_volume;                    /* Dice per volume (add_volume ids) */
    segc_region regions[SEGC_TASK_MAX_REGIONS];
    int n_regions;
} segc_eval_spec;

/* BraTS (2015 labels, 4 = enhancing tumour): WT {1,2,3,4}, TC {1,3,4}, ET {4}. */
void segc_eval_spec_brats_regions(segc_eval_spec *s);

typedef struct segc_evaluator segc_evaluator;

segc_evaluator *segc_evaluator_new(const segc_eval_spec *s, char *err, size_t errlen);
void segc_evaluator_free(segc_evaluator *e);
void segc_evaluator_reset(segc_evaluator *e);
/* One batch: pred and label [N, H, W] (U8/I32/I64), same shape. Pixels go to
 * the split-wide confusion; with per_volume, sample i's pixels go to volume
 * volume_ids[i] (volume_ids NULL: each sample is its own volume). false with
 * ctx's error on a shape/dtype mismatch. */
bool segc_evaluator_add(segc_evaluator *e, segc_ctx *ctx, const segc_tensor *pred, const segc_tensor *label,
                        const int64_t *volume_ids);
/* dst += src (same spec); false + message otherwise. */
bool segc_evaluator_merge(segc_evaluator *dst, const segc_evaluator *src, char *err, size_t errlen);

typedef struct segc_eval_result {
    int n;
    char names[SEGC_TASK_MAX_METRICS][48];   /* "mIoU", "mAcc", "aAcc", "mDice", "IoU.Road", "Dice_WT", ... */
    double values[SEGC_TASK_MAX_METRICS];    /* fractions in [0, 1]; NaN when undefined */
    char primary[32];
    double primary_value;
    segc_metrics pixel;                      /* the mmseg metrics (segc_metrics_free via segc_eval_result_free) */
    int64_t n_volumes, n_images;
} segc_eval_result;

bool segc_evaluator_result(const segc_evaluator *e, segc_eval_result *r, char *err, size_t errlen);
void segc_eval_result_free(segc_eval_result *r);
/* NaN when the result has no metric of that name */
double segc_eval_result_get(const segc_eval_result *r, const char *name);
/* Whether the named metric is minimised (loss-like) rather than maximised. */
bool segc_metric_lower_is_better(const char *name);
/* Names the task's evaluator can report (for checking train.best_metric): "mIoU|mAcc|aAcc|mDice|Dice_<region>" */
bool segc_eval_spec_knows(const segc_eval_spec *s, const char *metric);

/* The per-class table (mmseg layout, with Dice) and summary lines. */
void segc_eval_result_print(FILE *out, const segc_eval_result *r, const char *const *class_names);
/* One JSON object: {"mIoU":..,"mAcc":..,"aAcc":..,"mDice":..,"IoU":{..},"Acc":{..},"Dice":{..},
 * "Dice_WT":..,...}, percent with two decimals as mmseg, NaN as null. malloc'd. */
char *segc_eval_result_json(const segc_eval_result *r, const char *const *class_names);

#ifdef __cplusplus
}
#endif
#endif
