/* Helpers shared by the augment_*.c files (not public API). */
#ifndef SEGC_AUGMENT_INTERNAL_H
#define SEGC_AUGMENT_INTERNAL_H
#include "segc/augment.h"

/* cat_max_ratio check on label[ym[y], xm[x]] for window rows y0..y0+oh-1,
 * columns x0..x0+ow-1 of the (possibly resized) label; NULL maps = identity. */
bool segc_crop_class_ok_mapped(const uint8_t *label, int lw, const int *ym, const int *xm, int y0, int x0, int oh,
                               int ow, double cat_max_ratio, int ignore_index);
bool segc_boxes_any_centre_inside(const float *boxes, int n, const int *patch);

/* nnU-Net float transforms (augment_nnunet.c): an HWC float image with an
 * optional label of the same size, both writable (arena copies). */
#define SEGC_AUG_MAX_F32_CHANNELS 16
typedef struct segc_fimg {
    float *x;
    int h, w, c;
    uint8_t *lab;          /* NULL when the sample has no label */
    bool flipped;          /* columns mirrored (odd number of times) */
} segc_fimg;
bool segc_nn_is_kind(segc_aug_kind k);
void segc_nn_default(segc_aug_transform *t);
bool segc_nn_validate(const segc_aug_transform *t, int i, const char *nm, char *err, size_t errlen);
/* Draws and applies one nnU-Net transform; new buffers come from ar. */
bool segc_nn_apply(const segc_aug_transform *t, segc_rng *r, segc_arena *ar, segc_fimg *im, char *err,
                   size_t errlen);

#endif
