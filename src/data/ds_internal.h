/* Internal to src/data: the dataset object shared by the per-family ds_*.c
 * files, and small helpers (messages, paths, directory listings). */
#ifndef SEGC_DS_INTERNAL_H
#define SEGC_DS_INTERNAL_H
#include <stdarg.h>
#include <stdio.h>

#include "segc/data.h"
#include "segc/image_io.h"
#include "segc/loader.h"   /* segc_permutation for k-fold splits */

#define SEGC_LUT_INVALID 0xFFFFu   /* raw label value outside the class set */

typedef struct segc_ds_vtable {
    /* decode sample i; labels remapped */
    bool (*load)(const segc_dataset *ds, int64_t i, segc_sample *out, char *err, size_t errlen);
    /* optional: dataset-specific check of sample i (see segc_dataset_check_sample) */
    bool (*check)(const segc_dataset *ds, int64_t i, segc_sample_check *out, char *err, size_t errlen);
    void (*close)(segc_dataset *ds);   /* frees priv */
} segc_ds_vtable;

struct segc_dataset {
    const segc_ds_vtable *vt;
    char name[32];
    char *root;
    segc_dataset_opts opts;
    int64_t n;
    char **img_paths;          /* n entries (NULL for families that do not use files per sample) */
    char **lbl_paths;          /* n entries or NULL; an entry may be NULL (no label) */
    int n_classes;
    char **class_names;
    uint8_t (*palette)[3];
    uint16_t lut[65536];       /* raw label value -> train id (0..254, 255 ignore) or SEGC_LUT_INVALID */
    int image_channels;        /* 1 or 3 for photo datasets */
    bool label_is_color;       /* folder: colour masks mapped through the palette */
    void *priv;
};

char *ds_strdup(const char *s);
char *ds_join(const char *a, const char *b);                 /* a/b, malloc'd */
char *ds_join3(const char *a, const char *b, const char *c); /* a/b/c */
bool ds_is_dir(const char *p);
bool ds_is_file(const char *p);

/* Sorted (strcmp) names in dir (no "." entries), filtered by a predicate; *names
 * and each entry malloc'd. want_dirs: list directories instead of files. */
typedef bool (*ds_name_filter)(const char *name, const void *user);
bool ds_list_dir(const char *dir, bool want_dirs, ds_name_filter keep, const void *user, char ***names, int64_t *n,
                 char *err, size_t errlen);
void ds_free_strv(char **v, int64_t n);
bool ds_has_suffix(const char *s, const char *suffix);
bool ds_has_image_ext(const char *name, const void *user);   /* .png .jpg .jpeg (any case) */
/* name without its extension, malloc'd */
char *ds_stem(const char *name);

/* Allocation of the dataset object with a name, root and opts; lut all invalid. */
segc_dataset *ds_new(const char *name, const char *root, const segc_dataset_opts *o);
bool ds_set_classes(segc_dataset *ds, int n, const char *const *names, const uint8_t (*palette)[3]);
/* default distinct palette for class k (used when a dataset has none) */
void ds_default_color(int k, uint8_t rgb[3]);
/* lut: identity for 0..n_classes-1 plus 255 -> 255 */
void ds_lut_identity(segc_dataset *ds);
void ds_lut_reduce_zero(segc_dataset *ds);   /* 0 -> 255, k -> k-1 (1..n), 255 -> 255 */

/* Standard file-pair loader used by camvid/ade20k/cityscapes/voc/folder. */
bool ds_load_pair(const segc_dataset *ds, int64_t i, segc_sample *out, char *err, size_t errlen);
/* Map a decoded raw label through the dataset's lut into dst (U8). With
 * strict, the first invalid value fails with a message; otherwise invalid
 * pixels become 255 and are counted in *n_invalid (first one in *first_bad). */
bool ds_map_label(const segc_dataset *ds, const segc_image *raw, const char *path, uint8_t *dst, bool strict,
                  int64_t *n_invalid, int64_t *first_bad, char *err, size_t errlen);

extern const segc_ds_vtable ds_pair_vtable;   /* ds_load_pair, no private state */

/* Fill ds->img_paths/lbl_paths from the image files of img_dir (sorted); the
 * label path of image NAME is lbl_dir/label_name(NAME) (it need not exist:
 * loading reports a missing label). */
typedef char *(*ds_label_name_fn)(const char *img_name, const void *user);
bool ds_pairs_from_dir(segc_dataset *ds, const char *img_dir, ds_name_filter keep, const char *lbl_dir,
                       ds_label_name_fn label_name, const void *user, char *err, size_t errlen);
/* "SPLIT (available: a, b)" helper for messages: names of subdirectories of dir */
void ds_available_dirs(const char *dir, char *buf, size_t n);
/* true when the dataset wants reduce_zero_label, given the family default */
bool ds_want_reduce(const segc_dataset_opts *o, bool family_default);

/* COCO instances JSON (exposed for the fuzz target) */
typedef struct ds_coco_index {
    int64_t n_images;
    char **file_names;     /* relative to the image directory */
    int64_t *image_ids;    /* COCO image ids */
    int *heights, *widths;
    int64_t *box_start;    /* n_images + 1 offsets into the box arrays */
    int64_t n_boxes;
    float *boxes;          /* x1 y1 x2 y2 */
    int32_t *labels;       /* contiguous 0..K-1 */
    uint8_t *crowd;
    int n_classes;
    char **class_names;
    int64_t *cat_ids;      /* COCO category id of each contiguous label */
    /* every annotation as the file gives it, for COCO evaluation (coco_eval.h) */
    int64_t ev_n;
    int64_t *ev_image;     /* image index (file-name order) */
    int32_t *ev_label;
    double *ev_bbox;       /* x y w h */
    double *ev_area;       /* "area", else w * h */
    uint8_t *ev_crowd;
    int64_t *ev_id;        /* "id", else its position + 1 */
    int64_t n_skipped;     /* bad annotations left out (skip_bad) */
} ds_coco_index;
bool ds_coco_parse(const char *json, size_t len, const char *what, ds_coco_index *out, char *err, size_t errlen);
/* skip_bad: bad annotations are warned about on stderr, counted (n_skipped) and left out */
bool ds_coco_parse_opts(const char *json, size_t len, const char *what, bool skip_bad, ds_coco_index *out, char *err,
                        size_t errlen);
void ds_coco_free(ds_coco_index *c);

/* families */
segc_dataset *ds_open_camvid(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n);
segc_dataset *ds_open_ade20k(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n);
segc_dataset *ds_open_cityscapes(const char *root, const char *split, const segc_dataset_opts *o, char *err,
                                 size_t n);
segc_dataset *ds_open_voc(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n);
/* holdout (ds_holdout.c): ds reduced to its kept or held-out part; NULL + message (ds closed) */
segc_dataset *ds_apply_holdout(segc_dataset *ds, const segc_dataset_opts *o, char *err, size_t errlen);
segc_dataset *ds_open_folder(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n);
segc_dataset *ds_open_coco(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n);
/* medical volumes (ds_medical.c): i / v already range-checked */
bool ds_medical_sample_volume(const segc_dataset *ds, int64_t i, int64_t *volume, int *slice);
int64_t ds_medical_n_volumes(const segc_dataset *ds);
bool ds_medical_volume_info(const segc_dataset *ds, int64_t v, segc_volume_info *out, char *err, size_t n);
segc_dataset *ds_open_medical(const char *kind, const char *root, const char *split, const segc_dataset_opts *o,
                              char *err, size_t n);
#endif
