/* Helpers shared by the augment_*.c files (not public API). */
#ifndef SEGC_AUGMENT_INTERNAL_H
#define SEGC_AUGMENT_INTERNAL_H
#include "segc/augment.h"

/* cat_max_ratio check on label[ym[y], xm[x]] for window rows y0..y0+oh-1,
 * columns x0..x0+ow-1 of the (possibly resized) label; NULL maps = identity. */
bool segc_crop_class_ok_mapped(const uint8_t *label, int lw, const int *ym, const int *xm, int y0, int x0, int oh,
                               int ow, double cat_max_ratio, int ignore_index);
bool segc_boxes_any_centre_inside(const float *boxes, int n, const int *patch);

#endif
