/* segc semantic-segmentation metrics with mmsegmentation's definitions
 * (mmseg IoUMetric / intersect_and_union / total_area_to_metrics).
 *
 * Per class k, over every pixel whose label is not ignore_index:
 *   pred_area[k]  = pixels predicted k        label_area[k] = pixels labelled k
 *   intersect[k]  = pixels predicted k and labelled k
 *   union[k]      = pred_area[k] + label_area[k] - intersect[k]
 * accumulated as exact int64 counts over a whole split. Values outside
 * [0, num_classes) (that are not ignore_index) fall out of the histograms like
 * torch.histc drops them: a pixel labelled 200 in a 150-class problem adds
 * its prediction to pred_area but nothing to label_area or intersect.
 * Then IoU[k] = intersect/union (NaN when union is 0), Acc[k] =
 * intersect/label_area (NaN when label_area is 0), aAcc = sum(intersect) /
 * sum(label_area), and mIoU / mAcc are NaN-skipping means (numpy nanmean).
 * Classes absent from both labels and predictions therefore do not count. */
#ifndef SEGC_METRICS_H
#define SEGC_METRICS_H
#include <stdio.h>

#include "segc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The accumulator. All four count arrays live in one contiguous block
 * (counts, 4 * num_classes int64: intersect | union | pred_area |
 * label_area), so combining ranks is one MPI_Allreduce(MPI_INT64_T, SUM) of
 * counts followed by adding n_images; segc_confusion_merge does the same
 * in-process. */
typedef struct segc_confusion {
    int num_classes;
    int ignore_index;
    int64_t *counts;                                    /* heap, 4 * num_classes */
    int64_t *intersect, *area_union, *pred_area, *label_area;   /* views into counts */
    int64_t n_images;                                   /* label maps added so far */
} segc_confusion;

/* num_classes >= 1. ignore_index is usually 255; any value (even negative,
 * for I64 labels) is allowed. false (message in err) on bad arguments or
 * allocation failure. */
bool segc_confusion_init(segc_confusion *c, int num_classes, int ignore_index, char *err, size_t errlen);
void segc_confusion_free(segc_confusion *c);
void segc_confusion_reset(segc_confusion *c);

/* Add a batch: pred and label are [N, H, W] (or [H, W]) of the same shape,
 * each U8, I32 or I64. On a shape or dtype error it sets ctx's error
 * ("confusion_add: ...") and returns false, leaving c unchanged. Threads:
 * ctx's OpenMP threads; scratch comes from ctx's step arena. */
bool segc_confusion_add(segc_ctx *ctx, segc_confusion *c, const segc_tensor *pred, const segc_tensor *label);
/* dst += src; false (message) if num_classes or ignore_index differ. */
bool segc_confusion_merge(segc_confusion *dst, const segc_confusion *src, char *err, size_t errlen);

/* Results as fractions in [0, 1] (mmseg reports them x100). */
typedef struct segc_metrics {
    int num_classes;
    double aAcc, mIoU, mAcc;       /* NaN when nothing defines them (no labelled pixel) */
    double *iou, *acc;             /* heap, num_classes each; NaN where undefined */
} segc_metrics;

/* false (message) on allocation failure. */
bool segc_metrics_compute(const segc_confusion *c, segc_metrics *m, char *err, size_t errlen);
void segc_metrics_free(segc_metrics *m);

/* mmseg's rounding of a reported value: fraction -> percent with two
 * decimals, numpy.round(x * 100, 2) (NaN stays NaN). */
double segc_metric_percent(double fraction);

/* A fraction as mmseg prints it: percent with two decimals, "nan" when undefined. */
void segc_metric_percent_str(char *buf, size_t n, double fraction);

/* prettytable's layout (as mmseg's logs): rows x ncol cells, row-major, the
 * header row first; columns sized to their widest cell, text centred. */
#define SEGC_TABLE_CELL 48
#define SEGC_TABLE_MAX_COLS 8
void segc_print_table(FILE *out, char (*cells)[SEGC_TABLE_CELL], int rows, int ncol);

/* mmseg's "per class results" table (prettytable layout: Class | IoU | Acc,
 * percent with two decimals, "nan" for undefined) followed by the summary
 * line "aAcc: .. mIoU: .. mAcc: ..". class_names may be NULL (classes are
 * then named by their index). */
void segc_metrics_print(FILE *out, const segc_metrics *m, const char *const *class_names);

/* The JSON object {"mIoU":..,"mAcc":..,"aAcc":..,"IoU":{"<class>":..,...},
 * "Acc":{...}} with mmseg's reported values (percent, two decimals) and NaN
 * written as null. class_names may be NULL (index names). Returns a malloc'd
 * string (free it) or NULL on allocation failure. */
char *segc_metrics_json(const segc_metrics *m, const char *const *class_names);
/* The same JSON written to path (atomically: temporary file + rename). */
bool segc_metrics_write_json(const char *path, const segc_metrics *m, const char *const *class_names, char *err,
                             size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
