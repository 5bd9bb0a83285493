/* Class-aware non-maximum suppression (detection.h): torchvision's
 * batched_nms semantics, the MLPerf SSD post-processing defaults, and the
 * detections' owner.
 *
 * Greedy NMS per label: candidates in decreasing score (equal scores: lower
 * index first, torchvision's stable sort), a candidate is kept unless its IoU
 * with an already kept box of its label is > iou_thresh. IoU as torchvision
 * computes it in f32: inter / (area_i + area_j - inter), areas (x2-x1)(y2-y1)
 * without +1, so degenerate boxes (zero area) give 0/0 = NaN and never
 * suppress (a NaN compares false). The kept boxes of every label are then
 * merged by the same (score, index) order. */
#include <stdlib.h>
#include <string.h>

#include "segc/detection.h"

void segc_detections_free(segc_detections *d) {
    if (!d) return;
    free(d->off);
    free(d->det);
    memset(d, 0, sizeof *d);
}

void segc_detect_opts_default(segc_detect_opts *o) {
    o->score_thresh = 0.05f;
    o->max_candidates = 200;
    o->nms_iou = 0.5f;
    o->max_per_image = 200;
}

typedef struct nms_sort_ctx {
    const float *scores;
    const int32_t *labels;
} nms_sort_ctx;

/* qsort has no user pointer in C11: a thread-local context for the comparator */
static _Thread_local nms_sort_ctx sort_ctx;

/* decreasing score, then increasing index; NaN scores last */
static int by_score(const void *pa, const void *pb) {
    const int a = *(const int *)pa, b = *(const int *)pb;
    const float sa = sort_ctx.scores[a], sb = sort_ctx.scores[b];
    const bool na = sa != sa, nb = sb != sb;
    if (na != nb) return na ? 1 : -1;
    if (!na && sa != sb) return sa > sb ? -1 : 1;
    return (a > b) - (a < b);
}

/* label first, then by_score */
static int by_label_score(const void *pa, const void *pb) {
    const int a = *(const int *)pa, b = *(const int *)pb;
    const int32_t la = sort_ctx.labels ? sort_ctx.labels[a] : 0, lb = sort_ctx.labels ? sort_ctx.labels[b] : 0;
    if (la != lb) return la < lb ? -1 : 1;
    return by_score(pa, pb);
}

static float box_iou(const float *a, const float *b) {
    const float xx1 = a[0] > b[0] ? a[0] : b[0], yy1 = a[1] > b[1] ? a[1] : b[1];
    const float xx2 = a[2] < b[2] ? a[2] : b[2], yy2 = a[3] < b[3] ? a[3] : b[3];
    const float w = xx2 - xx1 > 0.f ? xx2 - xx1 : 0.f, h = yy2 - yy1 > 0.f ? yy2 - yy1 : 0.f;
    const float inter = w * h;
    const float area_a = (a[2] - a[0]) * (a[3] - a[1]), area_b = (b[2] - b[0]) * (b[3] - b[1]);
    return inter / (area_a + area_b - inter);
}

int segc_nms(const float *boxes, const float *scores, const int32_t *labels, int n, float iou_thresh, int max_keep,
             int *keep) {
    if (n <= 0 || max_keep == 0) return 0;
    int *order = malloc((size_t)n * sizeof *order);
    int *kept = malloc((size_t)n * sizeof *kept);
    if (!order || !kept) {
        free(order);
        free(kept);
        return -1;
    }
    for (int i = 0; i < n; i++) order[i] = i;
    sort_ctx = (nms_sort_ctx){scores, labels};
    qsort(order, (size_t)n, sizeof *order, by_label_score);
    /* greedy NMS within each label's run of `order`; kept boxes of the run are compared against */
    int n_kept = 0;
    for (int start = 0; start < n;) {
        int end = labels ? start + 1 : n;
        while (end < n && labels[order[end]] == labels[order[start]]) end++;
        const int run_first = n_kept;
        for (int k = start; k < end; k++) {
            const int i = order[k];
            const float *bi = boxes + 4 * (int64_t)i;
            bool suppressed = false;
            for (int q = run_first; q < n_kept && !suppressed; q++)
                suppressed = box_iou(boxes + 4 * (int64_t)kept[q], bi) > iou_thresh;
            if (!suppressed) kept[n_kept++] = i;
        }
        start = end;
    }
    qsort(kept, (size_t)n_kept, sizeof *kept, by_score);
    const int n_out = max_keep >= 0 && max_keep < n_kept ? max_keep : n_kept;
    memcpy(keep, kept, (size_t)n_out * sizeof *keep);
    free(order);
    free(kept);
    return n_out;
}
