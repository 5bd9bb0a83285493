/* segc data layer: images, samples and datasets in their native layouts.
 * Knows no model; depends on core only. */
#ifndef SEGC_DATA_H
#define SEGC_DATA_H
#include "segc/core.h"

/* An image or label map, interleaved HWC. Photos are U8; medical volumes'
 * slices are F32; 16-bit PNGs decode to I32. Labels are U8 with C == 1. */
typedef struct segc_image {
    int h, w, c;
    segc_dtype dtype;   /* SEGC_U8, SEGC_F32 or SEGC_I32 */
    void *data;         /* malloc'd, h*w*c elements; NULL when absent */
} segc_image;

bool segc_image_alloc(segc_image *im, int h, int w, int c, segc_dtype dt);
void segc_image_free(segc_image *im);

/* One training/eval sample. Segmentation fills img + label; detection fills
 * img + boxes. Owns its buffers (segc_sample_free). */
typedef struct segc_sample {
    segc_image img;
    segc_image label;        /* U8, C == 1, same h/w as img; 255 = ignore */
    int n_boxes;
    float *boxes;            /* n_boxes * 4: x1, y1, x2, y2 in pixels */
    int32_t *box_labels;     /* contiguous class ids 0..K-1 */
    uint8_t *box_crowd;      /* COCO iscrowd */
    int64_t index;           /* index in its dataset */
} segc_sample;

void segc_sample_free(segc_sample *s);

typedef struct segc_dataset segc_dataset;

typedef struct segc_dataset_opts {
    bool reduce_zero_label;     /* -1 = dataset default is expressed by use_default_reduce */
    bool use_default_reduce;    /* true: take the dataset's convention (ADE20K: reduce) */
    const char *class_file;     /* generic folder: class names (one per line, optional "name r g b") */
    const char *value_map;      /* generic folder: "255:1,0:0" label value remapping */
    int slice_axis;             /* medical: axis for 2-D slices (default 2 = axial) */
    int image_channels;         /* 0: dataset default (3 for photos, mmseg's colour loading); 1: gray; 3: RGB */
    bool brain_slices_only;     /* medical: index only slices with brain (mask > 0.5, else nonzero voxels) */
} segc_dataset_opts;

void segc_dataset_opts_default(segc_dataset_opts *o);
/* name: camvid | ade20k | cityscapes | voc | folder | coco | brats | msd.
 * NULL with a one-line message (naming the root/file) in err on failure. */
segc_dataset *segc_dataset_open(const char *name, const char *root, const char *split, const segc_dataset_opts *o,
                                char *err, size_t errlen);
int64_t segc_dataset_len(const segc_dataset *ds);
/* Thread-safe: decode sample i (labels already remapped to train ids).
 * false with a message naming the file on a bad/corrupt sample. */
bool segc_dataset_load(const segc_dataset *ds, int64_t i, segc_sample *out, char *err, size_t errlen);
int segc_dataset_num_classes(const segc_dataset *ds);
const char *segc_dataset_class_name(const segc_dataset *ds, int k);
const uint8_t *segc_dataset_palette(const segc_dataset *ds, int k);   /* rgb */
/* path of sample i's image (and label, may be NULL) for messages */
const char *segc_dataset_image_path(const segc_dataset *ds, int64_t i);
const char *segc_dataset_label_path(const segc_dataset *ds, int64_t i);
void segc_dataset_close(segc_dataset *ds);
/* TEMP until the data branch lands */
bool segc_dataset_sample_volume(const segc_dataset *ds, int64_t i, int64_t *volume, int *slice);

/* `segc data check` support: decode sample i like segc_dataset_load, but
 * count label values outside the class set instead of failing on them.
 * false (message naming the file) for unreadable/truncated files, a missing
 * label or an image/label size mismatch. */
typedef struct segc_sample_check {
    int h, w, c;              /* image size and channels */
    int64_t hist[256];        /* labelled pixels per train id ([255] = ignore); detection: boxes per class */
    int64_t n_invalid;        /* label pixels whose raw value is outside the class set (+ignore) */
    int64_t first_invalid;    /* raw value of the first such pixel */
} segc_sample_check;
bool segc_dataset_check_sample(const segc_dataset *ds, int64_t i, segc_sample_check *out, char *err, size_t errlen);
/* true for detection datasets (boxes, no label map) */
bool segc_dataset_is_detection(const segc_dataset *ds);
/* COCO: original image id of sample i / category id of class k (-1 otherwise),
 * for writing results in COCO's format */
int64_t segc_dataset_coco_image_id(const segc_dataset *ds, int64_t i);
int64_t segc_dataset_coco_category_id(const segc_dataset *ds, int k);
/* dataset family name as given to segc_dataset_open */
const char *segc_dataset_name(const segc_dataset *ds);

#endif
