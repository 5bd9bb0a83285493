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
/* The label value of pixels that count in no loss or metric, everywhere in
 * segc (datasets map void classes to it, crops and pads fill with it). */
#define SEGC_IGNORE_INDEX 255

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
    bool brain_slices_only;     /* medical: index only slices with brain (mask > 0.5, else nonzero voxels).
                                 * Default false = every slice of every case, case-major, slices in order:
                                 * what per-volume evaluation needs (training may set it true). */
    /* brats/msd k-fold cross-validation (num_folds 0 = off, the split names a
     * folder as before). With num_folds >= 2 the training cases (brats:
     * ROOT/train, msd: imagesTr) are sorted by name, permuted with a fixed
     * seed (segc_permutation(12345, 0, n): the same split on every run and
     * machine, not sklearn's KFold(shuffle=True, random_state=12345) order)
     * and cut into num_folds contiguous parts, the first n % num_folds one
     * case larger (KFold's sizes). split "train" = every part but `fold`,
     * split "val" = part `fold`. */
    int fold;
    int num_folds;
    /* COCO: annotations with a box outside the image or of zero area (w, h or area <= 0), an unknown
     * category or image id are an error naming the file and the annotation id; with skip_bad they are
     * warned about on stderr, counted and skipped */
    bool skip_bad;
    /* holding out part of a split (photo datasets; ds_holdout.c): with holdout in (0, 1),
     * the split's samples (sorted order) lose a contiguous run of round(holdout * n),
     * starting at holdout_fold * that count (wrapping); holdout_take keeps only that run */
    double holdout;
    int holdout_fold;
    bool holdout_take;
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
/* Detection: ground-truth boxes of sample i from the annotations (no image
 * decoded), crowd boxes counted only when include_crowd; -1 for other
 * datasets or i out of range. */
int segc_dataset_n_boxes(const segc_dataset *ds, int64_t i, bool include_crowd);
/* COCO: original image id of sample i / category id of class k (-1 otherwise),
 * for writing results in COCO's format */
int64_t segc_dataset_coco_image_id(const segc_dataset *ds, int64_t i);
int64_t segc_dataset_coco_category_id(const segc_dataset *ds, int k);
/* COCO: the split's ground truth for COCO evaluation (coco_eval.h: every
 * annotation as the file gives it, also boxes training drops); the arrays
 * belong to ds. false for other datasets. */
struct segc_coco_gt;
bool segc_dataset_coco_gt(const segc_dataset *ds, struct segc_coco_gt *gt);
/* dataset family name as given to segc_dataset_open */
const char *segc_dataset_name(const segc_dataset *ds);

/* ---- volumes (per-case evaluation and prediction writing) ----
 * Medical datasets: a volume is a case; sample i is slice *slice (index
 * along slice_axis) of volume *volume, and a volume's samples are contiguous
 * and in slice order. 2-D image datasets: volume = i, slice = 0.
 * false for i out of range. */
bool segc_dataset_sample_volume(const segc_dataset *ds, int64_t i, int64_t *volume, int *slice);
int64_t segc_dataset_n_volumes(const segc_dataset *ds);

typedef struct segc_volume_info {
    int64_t dim[3];           /* voxels along x, y, z (2-D datasets: 0 0 1, size unknown until decoded) */
    double affine[4][4];      /* voxel -> world (NIfTI sform when sform_code > 0, else qform; identity for 2-D) */
    int sform_code, qform_code;
    int slice_axis;           /* medical: the dataset's slice axis (2-D datasets: 2) */
    int64_t first_sample;     /* this volume's samples are first_sample .. first_sample + n_samples - 1 */
    int64_t n_samples;
    const char *name;         /* case name (2-D: the image path); owned by the dataset */
    const char *image_path;   /* first modality file (reference geometry for predictions) */
    const char *label_path;   /* NULL when the case has no label */
} segc_volume_info;
/* Reads the reference file's header for dims and affine; false with a
 * message naming the file (or the volume index when out of range). */
bool segc_dataset_volume_info(const segc_dataset *ds, int64_t v, segc_volume_info *out, char *err, size_t errlen);

/* ---- NIfTI geometry and label writing (nifti.c, nifti_write.c) ---- */
/* dims (x, y, z) and the voxel->world affine of a .nii/.nii.gz (sform when
 * sform_code > 0, else qform: nifticlib's qto_xyz, pixdim scaling when
 * qform_code is 0); codes may be NULL. */
bool segc_nifti_read_geometry(const char *path, int64_t dim[3], double affine[4][4], int *sform_code,
                              int *qform_code, char *err, size_t errlen);
/* Writes labels (x fastest, dim[0] x dim[1] x dim[2]) as a uint8 NIfTI-1
 * (.nii.gz compressed by the name's suffix), atomically: a temp file in the
 * same folder renamed over path. Geometry: with ref_path (the source image),
 * its qform and sform (codes, quaternion, srow, pixdim, units) are copied and
 * its dims must equal dim; otherwise affine (required then) becomes the sform
 * and, via nifticlib's decomposition, the qform (both code 1, scanner). */
bool segc_nifti_write_labels(const char *path, const uint8_t *labels, const int64_t dim[3], const char *ref_path,
                             const double affine[4][4], char *err, size_t errlen);

#endif
