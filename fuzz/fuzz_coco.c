/* libFuzzer target: COCO instances JSON parsing (cJSON + our validation). */
#include <stdlib.h>

#include "../src/data/ds_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_coco_index idx;
    char err[256] = "";
    if (!ds_coco_parse((const char *)data, size, "fuzz.json", &idx, err, sizeof err)) {
        if (!err[0]) __builtin_trap();
        return 0;
    }
    /* invariants the loader relies on */
    if (idx.box_start[0] != 0 || idx.box_start[idx.n_images] != idx.n_boxes) __builtin_trap();
    for (int64_t i = 0; i < idx.n_images; i++)
        if (idx.box_start[i + 1] < idx.box_start[i] || idx.heights[i] < 1 || idx.widths[i] < 1) __builtin_trap();
    for (int64_t b = 0; b < idx.n_boxes; b++)
        if (idx.labels[b] < 0 || idx.labels[b] >= idx.n_classes) __builtin_trap();
    ds_coco_free(&idx);
    return 0;
}
