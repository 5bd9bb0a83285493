/* segc tasks: one evaluator per task, used by training, `segc eval`,
 * `segc bench` and (later) `segc tune`.
 *
 * Segmentation evaluator (src/tasks/segmentation.c):
 *   - a confusion accumulator over every added pixel (metrics.h): mmseg's
 *     mIoU / mAcc / aAcc and per-class IoU / Acc, plus per-class Dice
 *     2*I / (P + L) over the whole split and mDice (NaN-skipping mean over
 *     classes, ignoring class 0 when `dice_skip_background`);
 *   - per-volume Dice (medical data): pixels added with the same volume id
 *     (segc_evaluator_add's volume_ids) are one volume; for every region (a set of label values:
 *     BraTS whole tumour {1,2,3,4}, tumour core {1,3,4}, enhancing {4}) and
 *     every foreground label the Dice of that volume is computed, a volume
 *     where prediction and ground truth are both empty scoring 1, and the
 *     reported value is the mean over volumes. `mDice` is then the mean over
 *     regions (over foreground labels when no region is defined).
 * merge adds another evaluator's state (ranks, trials); result names every
 * metric and the primary metric (spec.primary, e.g. "mIoU", "mDice",
 * "Dice_WT").
 *
 * Metric names (<class> is the class name, or its index without names):
 *   always:           mIoU, mAcc, aAcc, mDice, IoU.<class>, Acc.<class>
 *   without per_volume: Dice.<class> (split-wide, every class), mDice = their
 *                     NaN-skipping mean (mmseg's mDice); primary default mIoU
 *   validation loss:  val_loss (the model's training loss in eval mode, mean over
 *                     images; segc_evaluator_add_loss; NaN / absent from the JSON without it)
 *   with per_volume:  Dice_<region> and Dice.<class> for labels 1..K-1 (means
 *                     over volumes), mDice = mean over regions (over labels
 *                     1..K-1 without regions), and the split-wide Dice as
 *                     pixel_Dice.<class> / pixel_mDice; primary default mDice
 * Per-volume counts skip ignore_index pixels; predictions outside 0..K-1
 * are in no region and no label. Volumes sum in id order, so any order of
 * adds and merges gives bitwise the same result.
 *
 * Detection evaluator (src/tasks/detection.c, coco_eval.c): COCO box mAP,
 * pycocotools' COCOeval exactly (coco_eval.h), over detections added per
 * image (segc_evaluator_add_detections). Metric names are mmdet's
 * CocoMetric ones:
 *   bbox_mAP, bbox_mAP_50, bbox_mAP_75, bbox_mAP_s, bbox_mAP_m, bbox_mAP_l
 *   (AP@[.5:.95], @.5, @.75, small / medium / large, maxDets 100),
 *   bbox_AR@1, bbox_AR@10, bbox_AR@100, bbox_AR_s@100, bbox_AR_m@100,
 *   bbox_AR_l@100, and bbox_AP.<class> (AP@[.5:.95] of one category);
 * fractions in [0, 1], -1 where pycocotools gives -1 (no ground truth in
 * the range); primary default bbox_mAP. Merging appends the other
 * evaluator's detections: ranks that evaluated disjoint images give the
 * one-evaluator result in any merge order. */
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
    char primary[32];                   /* primary metric, "" = mIoU (mDice with per_volume) */
    bool per_volume;                    /* Dice per volume (volume ids of segc_evaluator_add) */
    segc_region regions[SEGC_TASK_MAX_REGIONS];   /* labels < num_classes; need per_volume */
    int n_regions;
    bool dice_skip_background;          /* split-wide mDice without class 0 (false: mmseg, every class) */
    /* detection: the split's ground truth (copied by segc_evaluator_new), or NULL and the dataset's
     * (a COCO dataset: segc_dataset_coco_gt); num_classes must equal its categories */
    const struct segc_coco_gt *coco_gt;
    const struct segc_dataset *dataset;
} segc_eval_spec;

/* BraTS (2015 labels, 4 = enhancing tumour): WT {1,2,3,4}, TC {1,3,4}, ET {4};
 * also sets per_volume (regions are per-volume metrics). */
void segc_eval_spec_brats_regions(segc_eval_spec *s);

typedef struct segc_evaluator segc_evaluator;

/* NULL + message on a bad spec (task other than segmentation, num_classes
 * outside 1..255, a region label >= num_classes, regions without per_volume,
 * unknown primary). The class names are copied. */
segc_evaluator *segc_evaluator_new(const segc_eval_spec *s, char *err, size_t errlen);
void segc_evaluator_free(segc_evaluator *e);
void segc_evaluator_reset(segc_evaluator *e);
/* One batch: pred and label [N, H, W] (U8/I32/I64), same shape. Pixels go to
 * the split-wide confusion; with per_volume, sample i's pixels go to volume
 * volume_ids[i] (volume_ids NULL: each sample is its own volume, never
 * combined with another, even by merge). Ids may come in any order and over
 * many calls (a volume's slices one batch at a time). false with ctx's error
 * ("evaluator_add: ...", naming both shapes) on a shape/dtype mismatch.
 * Scratch comes from ctx's step arena. */
bool segc_evaluator_add(segc_evaluator *e, segc_ctx *ctx, const segc_tensor *pred, const segc_tensor *label,
                        const int64_t *volume_ids);
/* Detection: one batch of detections (detection.h; labels = the dataset's contiguous ids), image i
 * of d being sample image_index[i] of the split. false + message naming the image on a label or
 * image index out of range, a non-finite box or score, or a segmentation evaluator. */
bool segc_evaluator_add_detections(segc_evaluator *e, const segc_detections *d, const int64_t *image_index,
                                   char *err, size_t errlen);
/* Detection: every entry of a COCO results file (coco_eval.h: segc_coco_results_read; bad entries
 * fail with the file and entry named, or with skip_bad are warned about, counted and skipped). */
bool segc_evaluator_add_results_file(segc_evaluator *e, const char *path, bool skip_bad, int64_t *n_read,
                                     int64_t *n_skipped, char *err, size_t errlen);
/* The detection evaluator's COCO state (NULL for segmentation): coco_eval.h's pack / unpack move
 * its detections between processes (merge them in rank order). */
struct segc_coco_eval *segc_evaluator_coco_eval(segc_evaluator *e);
/* The detection evaluator's COCO ground truth (NULL for segmentation). */
const struct segc_coco_gt *segc_evaluator_coco_gt(const segc_evaluator *e);

/* The validation loss of n_images images (their mean loss): the result's
 * "val_loss" is the image-weighted mean over every call (and merge); NaN when
 * none was added. "val_loss" may be the primary metric (lower is better). */
void segc_evaluator_add_loss(segc_evaluator *e, double loss, int64_t n_images);
/* dst += src (same spec); volumes with the same id are combined, so two
 * ranks each adding part of a volume's slices give the one-evaluator result.
 * false + message otherwise. */
bool segc_evaluator_merge(segc_evaluator *dst, const segc_evaluator *src, char *err, size_t errlen);

/* The evaluator's state as int64 words (malloc'd, *n words; NULL on OOM),
 * to move between processes, and dst += such a state (the same spec's;
 * false + message on a malformed or foreign buffer). Merging the words
 * equals segc_evaluator_merge of the evaluator they came from. */
int64_t *segc_evaluator_serialize(const segc_evaluator *e, int64_t *n);
bool segc_evaluator_merge_serialized(segc_evaluator *dst, const int64_t *w, int64_t n, char *err, size_t errlen);

typedef struct segc_eval_result {
    int n;
    char names[SEGC_TASK_MAX_METRICS][48];   /* "mIoU", "mAcc", "aAcc", "mDice", "IoU.Road", "Dice_WT", ... */
    double values[SEGC_TASK_MAX_METRICS];    /* fractions in [0, 1]; NaN when undefined */
    char primary[32];
    double primary_value;
    segc_metrics pixel;                      /* the mmseg metrics (segc_metrics_free via segc_eval_result_free) */
    int64_t n_volumes, n_images;
} segc_eval_result;

/* false + message when the names exceed SEGC_TASK_MAX_METRICS (per_volume
 * with more than ~115 classes) or on OOM. A per-volume value is NaN only
 * when no volume was added. */
bool segc_evaluator_result(const segc_evaluator *e, segc_eval_result *r, char *err, size_t errlen);
void segc_eval_result_free(segc_eval_result *r);
/* NaN when the result has no metric of that name */
double segc_eval_result_get(const segc_eval_result *r, const char *name);
/* Whether the named metric is minimised (loss-like) rather than maximised. */
bool segc_metric_lower_is_better(const char *name);
/* Whether the spec's evaluator reports that name (for checking
 * train.best_metric): any name listed above, e.g. mIoU, Dice_WT, IoU.Road. */
bool segc_eval_spec_knows(const segc_eval_spec *s, const char *metric);

/* The per-class table (mmseg layout: Class | IoU | Acc | Dice, the Dice
 * split-wide), "aAcc: .. mIoU: .. mAcc: .. mDice: .." (split-wide; the
 * last key reads pixel_mDice with per_volume), then with per_volume a
 * Region | Dice table (regions, then labels) and "mDice: ..". */
void segc_eval_result_print(FILE *out, const segc_eval_result *r, const char *const *class_names);
/* One JSON object: {"mIoU":..,"mAcc":..,"aAcc":..,"mDice":..,"IoU":{..},"Acc":{..},"Dice":{..},
 * "Dice_WT":..,..., ["pixel_mDice":..,"pixel_Dice":{..},"n_volumes":N,] "primary":"mIoU"},
 * the mIoU/mAcc/aAcc/IoU/Acc of segc_metrics_json, Dice as the names above,
 * percent with two decimals as mmseg, NaN as null. malloc'd. */
char *segc_eval_result_json(const segc_eval_result *r, const char *const *class_names);

#ifdef __cplusplus
}
#endif
#endif
