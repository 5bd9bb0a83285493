/* What training a detection model needs beyond the segmentation path
 * (trainer.h): the task a configuration's model family has, the training
 * source without images lacking a (non-crowd) box, as MLPerf's COCO loader
 * skips them, and a batch's boxes as the loss's targets. Nothing here names a
 * model family. */
#include <stdlib.h>
#include <string.h>

#include "segc/trainer.h"

segc_task_kind segc_config_task(const segc_config *c) {
    const segc_model_family *f = segc_model_family_find(c->model.type);
    return f ? f->task : SEGC_TASK_SEGMENTATION;
}

typedef struct subset_source {
    const segc_dataset *ds;
    int64_t *index;   /* source position -> dataset index */
} subset_source;

static bool subset_load(void *user, int64_t i, segc_sample *out, char *err, size_t errlen) {
    const subset_source *s = user;
    return segc_dataset_load(s->ds, s->index[i], out, err, errlen);
}

static const char *subset_name(void *user, int64_t i) {
    const subset_source *s = user;
    return segc_dataset_image_path(s->ds, s->index[i]);
}

bool segc_detection_train_source(const segc_dataset *ds, segc_sample_source *src, void **state, int64_t *skipped,
                                 char *err, size_t errlen) {
    *state = NULL;
    *skipped = 0;
    const int64_t n = segc_dataset_len(ds);
    subset_source *s = calloc(1, sizeof *s);
    if (s) s->index = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->index);
    if (!s || !s->index) {
        free(s);
        return segc_errorf(err, errlen, "train: out of memory");
    }
    s->ds = ds;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int nb = segc_dataset_n_boxes(ds, i, false);
        if (nb != 0) s->index[k++] = i;   /* -1 (count unknown): kept, the loss copes with no boxes */
    }
    if (k == 0) {
        free(s->index);
        free(s);
        return segc_errorf(err, errlen, "train: none of the %lld training images has a (non-crowd) box", (long long)n);
    }
    *skipped = n - k;
    *src = (segc_sample_source){s, k, subset_load, subset_name};
    *state = s;
    return true;
}

void segc_detection_train_source_free(void *state) {
    subset_source *s = state;
    if (!s) return;
    free(s->index);
    free(s);
}

segc_targets segc_detection_targets(const segc_batch *b) {
    return (segc_targets){.labels = NULL, .ignore_index = SEGC_IGNORE_INDEX, .n_images = b->n, .n_boxes = b->n_boxes,
                          .boxes = b->boxes, .box_labels = b->box_labels, .box_crowd = b->box_crowd,
                          .img_h = b->h, .img_w = b->w};
}

typedef struct synthetic_boxes {
    int *n_boxes;
    float **boxes;
    int32_t **labels;
    uint8_t **crowd;
    int n;
} synthetic_boxes;

void segc_detection_synthetic_targets_free(void *state) {
    synthetic_boxes *s = state;
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        if (s->boxes) free(s->boxes[i]);
        if (s->labels) free(s->labels[i]);
        if (s->crowd) free(s->crowd[i]);
    }
    free(s->n_boxes), free(s->boxes), free(s->labels), free(s->crowd), free(s);
}

bool segc_detection_synthetic_targets(int n, int h, int w, int num_classes, segc_targets *t, void **state) {
    /* x1 y1 x2 y2 as fractions of the image */
    static const float frac[4][4] = {{0.1f, 0.13f, 0.4f, 0.67f}, {0.5f, 0.07f, 0.97f, 0.47f},
                                     {0.03f, 0.03f, 0.2f, 0.17f}, {0.67f, 0.6f, 0.93f, 0.97f}};
    synthetic_boxes *s = calloc(1, sizeof *s);
    *state = s;
    if (!s) return false;
    s->n = n;
    s->n_boxes = calloc((size_t)n, sizeof *s->n_boxes);
    s->boxes = calloc((size_t)n, sizeof *s->boxes);
    s->labels = calloc((size_t)n, sizeof *s->labels);
    s->crowd = calloc((size_t)n, sizeof *s->crowd);
    bool ok = s->n_boxes && s->boxes && s->labels && s->crowd;
    for (int i = 0; ok && i < n; i++) {
        s->boxes[i] = malloc(16 * sizeof(float));
        s->labels[i] = malloc(4 * sizeof(int32_t));
        s->crowd[i] = calloc(4, 1);
        ok = s->boxes[i] && s->labels[i] && s->crowd[i];
        for (int k = 0; ok && k < 4; k++) {
            for (int q = 0; q < 4; q++) s->boxes[i][4 * k + q] = frac[k][q] * (float)(q % 2 ? h : w);
            s->labels[i][k] = (i * 7 + k * 13) % (num_classes > 0 ? num_classes : 1);
        }
        if (ok) s->crowd[i][2] = 1, s->n_boxes[i] = 4;
    }
    if (!ok) {
        segc_detection_synthetic_targets_free(s);
        *state = NULL;
        return false;
    }
    *t = (segc_targets){.ignore_index = SEGC_IGNORE_INDEX, .n_images = n, .n_boxes = s->n_boxes, .boxes = s->boxes,
                        .box_labels = s->labels, .box_crowd = s->crowd, .img_h = h, .img_w = w};
    return true;
}
