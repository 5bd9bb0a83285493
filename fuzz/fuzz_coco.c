/* libFuzzer target: COCO instances JSON parsing (cJSON + our validation). */
#include <stdlib.h>

#include "../src/data/ds_internal.h"
#include "segc/coco_eval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_coco_index idx;
    char err[256] = "";
    /* odd sizes parse with skip_bad (bad annotations skipped instead of failing) */
    if (!ds_coco_parse_opts((const char *)data, size, "fuzz.json", size & 1, &idx, err, sizeof err)) {
        if (!err[0]) __builtin_trap();
        return 0;
    }
    /* invariants the loader relies on */
    if (idx.box_start[0] != 0 || idx.box_start[idx.n_images] != idx.n_boxes) __builtin_trap();
    for (int64_t i = 0; i < idx.n_images; i++)
        if (idx.box_start[i + 1] < idx.box_start[i] || idx.heights[i] < 1 || idx.widths[i] < 1) __builtin_trap();
    for (int64_t b = 0; b < idx.n_boxes; b++)
        if (idx.labels[b] < 0 || idx.labels[b] >= idx.n_classes) __builtin_trap();
    /* the evaluation ground truth: every annotation kept, indices in range; COCO mAP of no detections */
    for (int64_t a = 0; a < idx.ev_n; a++)
        if (idx.ev_image[a] < 0 || idx.ev_image[a] >= idx.n_images || idx.ev_label[a] < 0 ||
            idx.ev_label[a] >= idx.n_classes)
            __builtin_trap();
    segc_coco_gt gt = {.n_images = idx.n_images, .image_ids = idx.image_ids, .n_classes = idx.n_classes,
                       .cat_ids = idx.cat_ids, .n_anns = idx.ev_n, .ann_image = idx.ev_image, .ann_label = idx.ev_label,
                       .ann_bbox = idx.ev_bbox, .ann_area = idx.ev_area, .ann_crowd = idx.ev_crowd, .ann_id = idx.ev_id};
    segc_coco_eval *e = segc_coco_eval_new(&gt, err, sizeof err);
    if (!e) __builtin_trap();
    segc_coco_summary sm;
    if (idx.n_images <= 64 && segc_coco_eval_run(e, &sm, err, sizeof err)) segc_coco_summary_free(&sm);
    segc_coco_eval_free(e);
    ds_coco_free(&idx);
    return 0;
}
