/* segc detection: the contract between detection families (decode + NMS, in
 * src/models/) and the detection task (COCO mAP, src/tasks/detection.c).
 *
 * A detection family's `detect` hook (model.h) turns one forward's outputs
 * (class scores + box regressions per default box) into at most
 * max_per_image segc_detection per image, boxes in pixels of each image's
 * original size (before resize / augmentation), labels as the dataset's
 * contiguous class ids 0..K-1 (the background class, if the model has one,
 * never appears). The task evaluator maps labels back to COCO category ids
 * through the dataset. */
#ifndef SEGC_DETECTION_H
#define SEGC_DETECTION_H
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct segc_detection {
    float box[4];      /* x1, y1, x2, y2, pixels of the original image */
    float score;       /* in [0, 1] */
    int32_t label;     /* contiguous class id 0..K-1 */
} segc_detection;

/* The detections of a batch: image i's are det[off[i] .. off[i+1]). */
typedef struct segc_detections {
    int n_images;
    int64_t *off;          /* n_images + 1 */
    segc_detection *det;
    int64_t cap;           /* allocated entries of det (owner: segc_detections_free) */
} segc_detections;

void segc_detections_free(segc_detections *d);

/* Post-processing options (MLPerf SSD defaults). */
typedef struct segc_detect_opts {
    float score_thresh;    /* 0.05: candidates below are dropped per class */
    int max_candidates;    /* 200: per class, highest scores, before NMS */
    float nms_iou;         /* 0.5 */
    int max_per_image;     /* 200 */
} segc_detect_opts;
void segc_detect_opts_default(segc_detect_opts *o);

/* Class-aware NMS with torchvision.ops.batched_nms semantics: boxes of
 * different labels never suppress each other; within a label a box is
 * dropped when its IoU with a kept, higher-scoring box is > iou_thresh.
 * Equal scores: the lower index first (a stable sort). keep receives the
 * kept indices by decreasing score; returns their count (<= max_keep;
 * max_keep < 0: no limit). boxes: n x 4 (x1 y1 x2 y2). Allocates its own
 * scratch; -1 on out-of-memory. */
int segc_nms(const float *boxes, const float *scores, const int32_t *labels, int n, float iou_thresh, int max_keep,
             int *keep);

#ifdef __cplusplus
}
#endif
#endif
