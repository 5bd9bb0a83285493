/* SSD default boxes, matching and box coding (ssd.h), as MLPerf's
 * DefaultBoxes / Encoder / Loss._loc_vec compute them: the default boxes in
 * double, rounded to f32 (torch.tensor of Python floats), everything else in
 * f32 with PyTorch's operation order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "segc/ssd.h"

void segc_ssd_anchor_config_mlperf(segc_ssd_anchor_config *c) {
    static const int steps[SEGC_SSD_LEVELS] = {8, 16, 32, 64, 100, 300};
    static const int scales[SEGC_SSD_LEVELS + 1] = {21, 45, 99, 153, 207, 261, 315};
    static const int n_ratios[SEGC_SSD_LEVELS] = {1, 2, 2, 2, 1, 1};
    memset(c, 0, sizeof *c);
    c->image_size = 300;
    segc_ssd_feature_sizes(300, c->feat);
    memcpy(c->steps, steps, sizeof steps);
    memcpy(c->scales, scales, sizeof scales);
    memcpy(c->n_ratios, n_ratios, sizeof n_ratios);
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) {
        c->ratios[l][0] = 2;
        c->ratios[l][1] = 3;
    }
    c->scale_xy = 0.1f;
    c->scale_wh = 0.2f;
}

bool segc_ssd_feature_sizes(int s, int feat[SEGC_SSD_LEVELS]) {
    if (s < 1) return false;
    int f = s;
    for (int i = 0; i < 3; i++) f = (f + 1) / 2;   /* 7x7/2 stem conv, 3x3/2 max-pool, layer 2's stride */
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) {
        if (l > 0) f = l <= 3 ? (f + 1) / 2 : f - 2;
        feat[l] = f;
    }
    return feat[SEGC_SSD_LEVELS - 1] >= 1;
}

int segc_ssd_boxes_per_location(const segc_ssd_anchor_config *c, int level) { return 2 + 2 * c->n_ratios[level]; }

void segc_ssd_anchors_free(segc_ssd_anchors *a) {
    if (!a) return;
    free(a->xywh);
    free(a->ltrb);
    memset(a, 0, sizeof *a);
}

static float clamp01(double v) {
    float f = (float)v;
    return f < 0.f ? 0.f : f > 1.f ? 1.f : f;
}

bool segc_ssd_anchors_build(const segc_ssd_anchor_config *c, segc_ssd_anchors *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    if (c->image_size < 1) return segc_errorf(err, errlen, "ssd: image_size must be >= 1, found %d", c->image_size);
    int n = 0;
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) {
        if (c->feat[l] < 1 || c->feat[l] > 4096 || c->steps[l] < 1 || c->scales[l] < 1 || c->n_ratios[l] < 0 ||
            c->n_ratios[l] > SEGC_SSD_MAX_RATIOS)
            return segc_errorf(err, errlen, "ssd: default boxes of level %d: feature size %d, step %d, scale %d, %d "
                               "aspect ratios (expected >= 1, >= 1, >= 1, 0..%d)", l, c->feat[l], c->steps[l],
                               c->scales[l], c->n_ratios[l], SEGC_SSD_MAX_RATIOS);
        for (int r = 0; r < c->n_ratios[l]; r++)
            if (c->ratios[l][r] < 1)
                return segc_errorf(err, errlen, "ssd: aspect ratio %d of level %d must be >= 1", c->ratios[l][r], l);
        a->level_start[l] = n;
        n += segc_ssd_boxes_per_location(c, l) * c->feat[l] * c->feat[l];
    }
    if (c->scales[SEGC_SSD_LEVELS] < 1) return segc_errorf(err, errlen, "ssd: the last scale must be >= 1");
    a->level_start[SEGC_SSD_LEVELS] = n;
    a->n = n;
    a->scale_xy = c->scale_xy;
    a->scale_wh = c->scale_wh;
    a->xywh = malloc((size_t)n * 4 * sizeof(float));
    a->ltrb = malloc((size_t)n * 4 * sizeof(float));
    if (!a->xywh || !a->ltrb) {
        segc_ssd_anchors_free(a);
        return segc_errorf(err, errlen, "ssd: out of memory for %d default boxes", n);
    }
    const double fig = c->image_size;
    int k = 0;
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) {
        const double fk = fig / c->steps[l];
        const double sk1 = c->scales[l] / fig, sk2 = c->scales[l + 1] / fig, sk3 = sqrt(sk1 * sk2);
        double sizes[2 + 2 * SEGC_SSD_MAX_RATIOS][2] = {{sk1, sk1}, {sk3, sk3}};
        int ns = 2;
        for (int r = 0; r < c->n_ratios[l]; r++) {
            const double w = sk1 * sqrt((double)c->ratios[l][r]), h = sk1 / sqrt((double)c->ratios[l][r]);
            sizes[ns][0] = w, sizes[ns++][1] = h;
            sizes[ns][0] = h, sizes[ns++][1] = w;
        }
        const int f = c->feat[l];
        for (int s = 0; s < ns; s++)
            for (int i = 0; i < f; i++)
                for (int j = 0; j < f; j++, k++) {
                    float *b = a->xywh + 4 * (int64_t)k;
                    b[0] = clamp01((j + 0.5) / fk);
                    b[1] = clamp01((i + 0.5) / fk);
                    b[2] = clamp01(sizes[s][0]);
                    b[3] = clamp01(sizes[s][1]);
                }
    }
    for (int i = 0; i < n; i++) {
        const float *b = a->xywh + 4 * (int64_t)i;
        float *o = a->ltrb + 4 * (int64_t)i;
        o[0] = b[0] - 0.5f * b[2];
        o[1] = b[1] - 0.5f * b[3];
        o[2] = b[0] + 0.5f * b[2];
        o[3] = b[1] + 0.5f * b[3];
    }
    return true;
}

/* calc_iou_tensor's arithmetic for one pair: box1 = gt, box2 = default box */
static float iou_f32(const float *g, const float *d) {
    const float lx = g[0] > d[0] ? g[0] : d[0], ly = g[1] > d[1] ? g[1] : d[1];
    const float rx = g[2] < d[2] ? g[2] : d[2], ry = g[3] < d[3] ? g[3] : d[3];
    float dx = rx - lx, dy = ry - ly;
    if (dx < 0.f) dx = 0.f;
    if (dy < 0.f) dy = 0.f;
    const float inter = dx * dy;
    const float a1 = (g[2] - g[0]) * (g[3] - g[1]), a2 = (d[2] - d[0]) * (d[3] - d[1]);
    return inter / (a1 + a2 - inter);
}

int segc_ssd_match(const segc_ssd_anchors *a, const float *gt, const int32_t *gt_labels, int n_gt, float iou_thresh,
                   int32_t *labels, float *target_xywh) {
    const int A = a->n;
    /* per default box, its best IoU and gt, kept in the last two target slots until the targets are
     * written (no allocation: the training step makes none) */
#define BEST_IOU(d) target_xywh[4 * (int64_t)(d) + 2]
#define BEST_GT(d) target_xywh[4 * (int64_t)(d) + 3]
    for (int d = 0; d < A; d++) BEST_IOU(d) = -1.f, BEST_GT(d) = 0.f;
    /* ious.max(dim=0): per default box, its best gt (first maximum). Default boxes have a
     * positive area, so no IoU is NaN. */
    for (int g = 0; g < n_gt; g++) {
        const float *gb = gt + 4 * (int64_t)g;
        int best_d = 0;
        float best_v = -1.f;
        for (int d = 0; d < A; d++) {
            const float v = iou_f32(gb, a->ltrb + 4 * (int64_t)d);
            if (v > BEST_IOU(d)) BEST_IOU(d) = v, BEST_GT(d) = (float)g;
            if (v > best_v) best_v = v, best_d = d;   /* ious.max(dim=1): per gt, its best default box */
        }
        /* index_fill(2.0) then best_dbox_idx[best_bbox_idx[g]] = g, in gt order: a later gt wins */
        BEST_IOU(best_d) = 2.f;
        BEST_GT(best_d) = (float)g;
    }
    int n_pos = 0;
    for (int d = 0; d < A; d++) {
        const float *src = a->ltrb + 4 * (int64_t)d;
        labels[d] = 0;
        if (n_gt > 0 && BEST_IOU(d) > iou_thresh) {
            const int g = (int)BEST_GT(d);
            labels[d] = gt_labels[g];
            src = gt + 4 * (int64_t)g;
            n_pos++;
        }
        float *t = target_xywh + 4 * (int64_t)d;
        const float x1 = src[0], y1 = src[1], x2 = src[2], y2 = src[3];
        t[0] = 0.5f * (x1 + x2);
        t[1] = 0.5f * (y1 + y2);
        t[2] = -x1 + x2;
        t[3] = -y1 + y2;
    }
#undef BEST_IOU
#undef BEST_GT
    return n_pos;
}

void segc_ssd_encode(const segc_ssd_anchors *a, const float *target_xywh, float *vec) {
    const int A = a->n;
    /* Python's 1.0 / 0.1 and 1.0 / 0.2 in double, used as f32 scalars */
    const float sxy = (float)(1.0 / (double)a->scale_xy), swh = (float)(1.0 / (double)a->scale_wh);
    for (int d = 0; d < A; d++) {
        const float *t = target_xywh + 4 * (int64_t)d, *db = a->xywh + 4 * (int64_t)d;
        vec[0 * (int64_t)A + d] = sxy * (t[0] - db[0]) / db[2];
        vec[1 * (int64_t)A + d] = sxy * (t[1] - db[1]) / db[3];
        vec[2 * (int64_t)A + d] = swh * logf(t[2] / db[2]);
        vec[3 * (int64_t)A + d] = swh * logf(t[3] / db[3]);
    }
}

void segc_ssd_decode(const segc_ssd_anchors *a, const float *vec, float *ltrb) {
    const int A = a->n;
    const float sxy = a->scale_xy, swh = a->scale_wh;
    for (int d = 0; d < A; d++) {
        const float *db = a->xywh + 4 * (int64_t)d;
        const float x = sxy * vec[d] * db[2] + db[0];
        const float y = sxy * vec[(int64_t)A + d] * db[3] + db[1];
        const float w = expf(swh * vec[2 * (int64_t)A + d]) * db[2];
        const float h = expf(swh * vec[3 * (int64_t)A + d]) * db[3];
        float *o = ltrb + 4 * (int64_t)d;
        o[0] = x - 0.5f * w;
        o[1] = y - 0.5f * h;
        o[2] = x + 0.5f * w;
        o[3] = y + 0.5f * h;
    }
}
