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
