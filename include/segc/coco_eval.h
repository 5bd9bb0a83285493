/* segc COCO box evaluation: pycocotools' COCOeval (iouType "bbox") in C,
 * and COCO results files.
 *
 * Semantics are pycocotools' exactly (the parity test compares all 12
 * summary numbers with COCOeval on ../shared/data/coco-mini to 1e-4):
 *   - images = every ground-truth image, in increasing image id; categories
 *     = every category of the annotation file, in increasing id (the
 *     dataset's contiguous labels 0..K-1);
 *   - per image and category: detections sorted by decreasing score
 *     (stable: ties keep the order they were added in), at most 100; IoU of
 *     [x, y, w, h] boxes, for a crowd ground truth intersection / area(det);
 *   - area ranges all [0, 1e10], small [0, 32^2], medium [32^2, 96^2],
 *     large [96^2, 1e10] (bounds inclusive) on the annotation's `area`
 *     field (w*h for detections); crowd ground truth and ground truth
 *     outside the range are ignored; greedy matching at IoU .50:.05:.95,
 *     a crowd ground truth matching any number of detections; unmatched
 *     detections outside the range are ignored;
 *   - detections of all images of a category concatenated in image-id
 *     order, truncated to maxDets 1 / 10 / 100 per image, stably sorted by
 *     score; precision at the 101 recall points .00:.01:1.00 after the
 *     monotone envelope, recall = the last recall;
 *   - 12 summary numbers (means over the entries > -1; -1 when none):
 *     AP, AP50, AP75, APs, APm, APl (maxDets 100), AR1, AR10, AR100, ARs,
 *     ARm, ARl (maxDets 100).
 * A detection whose image has no ground truth annotation still counts as a
 * false positive for its category (pycocotools does the same).
 *
 * Images evaluated: with segc_coco_eval_add only (results files), every
 * ground-truth image; once segc_coco_eval_add_detections has named images
 * (the evaluation loop: also images without detections), only those
 * (pycocotools' params.imgIds), so a partial pass (train.val_max_samples, a
 * rank before merging) is scored on its own images; merge and unpack carry
 * the named images along. */
#ifndef SEGC_COCO_EVAL_H
#define SEGC_COCO_EVAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "segc/detection.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SEGC_COCO_N_STATS 12

/* Ground truth of one split, as the COCO annotation file gives it (every
 * annotation, also those training drops). Images by index 0..n_images-1
 * (the dataset's sample order), categories by contiguous label. */
typedef struct segc_coco_gt {
    int64_t n_images;
    const int64_t *image_ids;       /* COCO id of image i */
    int n_classes;
    const int64_t *cat_ids;         /* COCO id of label k, increasing */
    const char *const *class_names; /* may be NULL */
    int64_t n_anns;
    const int64_t *ann_image;       /* image index */
    const int32_t *ann_label;
    const double *ann_bbox;         /* x y w h */
    const double *ann_area;
    const uint8_t *ann_crowd;
    const int64_t *ann_id;          /* COCO annotation id (a match with id 0 counts as none, as in pycocotools) */
} segc_coco_gt;

typedef struct segc_coco_eval segc_coco_eval;

/* Copies gt. NULL + message on a bad ground truth (sizes, labels or image
 * indices out of range, duplicate image ids, unsorted category ids). */
segc_coco_eval *segc_coco_eval_new(const segc_coco_gt *gt, char *err, size_t errlen);
void segc_coco_eval_free(segc_coco_eval *e);
void segc_coco_eval_reset(segc_coco_eval *e);
const segc_coco_gt *segc_coco_eval_gt(const segc_coco_eval *e);

/* One detection of image index img, label k, box [x, y, w, h]. false +
 * message on an image / label out of range or a non-finite value. */
bool segc_coco_eval_add(segc_coco_eval *e, int64_t img, int32_t label, const double xywh[4], double score, char *err,
                        size_t errlen);
/* A batch: image i of d is image index image_index[i]; boxes x1 y1 x2 y2
 * become x1, y1, x2 - x1, y2 - y1 (in double). */
bool segc_coco_eval_add_detections(segc_coco_eval *e, const segc_detections *d, const int64_t *image_index,
                                   char *err, size_t errlen);
int64_t segc_coco_eval_n_detections(const segc_coco_eval *e);
/* Appends src's detections to dst (same ground truth: false + message
 * otherwise). Detections of an image stay in the order they were added, dst's
 * before src's, so evaluators that saw disjoint images (ranks) give the same
 * result merged in any order. */
bool segc_coco_eval_merge(segc_coco_eval *dst, const segc_coco_eval *src, char *err, size_t errlen);

/* Detections as a flat array for sending between processes (MPI ranks):
 * SEGC_COCO_PACKED doubles per record: first one (image index, -1, 0...)
 * per image named by add_detections, then per detection (image index,
 * label, x, y, w, h, score) in the order added; *out is malloc'd (NULL when
 * there are none). Returns the number of records, -1 on OOM. unpack appends them to e
 * (as segc_coco_eval_add, so bad values fail the same way). */
#define SEGC_COCO_PACKED 7
int64_t segc_coco_eval_pack(const segc_coco_eval *e, double **out);
bool segc_coco_eval_unpack(segc_coco_eval *e, const double *packed, int64_t n, char *err, size_t errlen);

typedef struct segc_coco_summary {
    double stats[SEGC_COCO_N_STATS];   /* pycocotools' COCOeval.stats (-1: undefined) */
    double *class_ap;                  /* n_classes: AP@[.5:.95] of each category (-1: undefined) */
    int n_classes;
    int64_t n_images, n_dets;
} segc_coco_summary;
/* evaluate + accumulate + summarize; false + message on OOM. */
bool segc_coco_eval_run(const segc_coco_eval *e, segc_coco_summary *s, char *err, size_t errlen);
void segc_coco_summary_free(segc_coco_summary *s);
/* pycocotools' 12 summary lines (" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.123") */
void segc_coco_print_stats(FILE *out, const double stats[SEGC_COCO_N_STATS]);
/* names of the stats in segc_eval_result: bbox_mAP, bbox_mAP_50, bbox_mAP_75, bbox_mAP_s, bbox_mAP_m,
 * bbox_mAP_l, bbox_AR@1, bbox_AR@10, bbox_AR@100, bbox_AR_s@100, bbox_AR_m@100, bbox_AR_l@100 */
extern const char *const segc_coco_stat_names[SEGC_COCO_N_STATS];

/* ---- COCO results files: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}] ---- */
/* Writes the detections of images image_index[0..d->n_images) (or appends
 * to an open file: see segc_coco_results_begin/entry/end). Boxes x1y1x2y2 ->
 * xywh as segc_coco_eval_add_detections, numbers written to round-trip. */
typedef struct segc_coco_results_writer {
    FILE *f;
    int64_t n;
    char path[1024];
} segc_coco_results_writer;
bool segc_coco_results_begin(segc_coco_results_writer *w, const char *path, char *err, size_t errlen);
bool segc_coco_results_add(segc_coco_results_writer *w, const segc_coco_gt *gt, const segc_detections *d,
                           const int64_t *image_index, char *err, size_t errlen);
/* Closes the array and the file (atomically renamed into place); false + message. */
bool segc_coco_results_end(segc_coco_results_writer *w, char *err, size_t errlen);
void segc_coco_results_abort(segc_coco_results_writer *w);

/* Reads a results file into e (image ids and category ids mapped through
 * its ground truth). Bad input -> false + one line naming the file and the
 * entry: malformed JSON (line, column), an entry without a numeric
 * image_id / category_id / 4-number bbox / score, an image id not in the
 * ground truth, a category id not in it. skip_bad: such entries (not
 * malformed JSON) are warned about on stderr, counted in *n_skipped and
 * skipped. *n_read (may be NULL) = entries added. */
bool segc_coco_results_read(segc_coco_eval *e, const char *path, bool skip_bad, int64_t *n_read, int64_t *n_skipped,
                            char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
