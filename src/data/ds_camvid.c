/* CamVid in the SegNet layout: ROOT/SPLIT/ *.png images and ROOT/SPLITannot/
 * labels of the same name; 11 classes, value 11 (Unlabelled) -> 255 ignore. */
#include <stdlib.h>

#include "ds_internal.h"

static const char *const camvid_names[11] = {"Sky",  "Building", "Pole", "Road",       "Pavement",  "Tree",
                                             "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"};
static const uint8_t camvid_palette[11][3] = {{128, 128, 128}, {128, 0, 0},   {192, 192, 128}, {128, 64, 128},
                                              {60, 40, 222},   {128, 128, 0}, {192, 128, 128}, {64, 64, 128},
                                              {64, 0, 128},    {64, 64, 0},   {0, 128, 192}};

static char *same_name(const char *img_name, const void *user) {
    (void)user;
    return ds_strdup(img_name);
}

static bool is_png(const char *name, const void *user) {
    (void)user;
    return ds_has_suffix(name, ".png");
}

segc_dataset *ds_open_camvid(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n) {
    if (!split) split = "train";
    char *img_dir = ds_join(root, split);
    char annot[256];
    snprintf(annot, sizeof annot, "%sannot", split);
    char *lbl_dir = ds_join(root, annot);
    segc_dataset *ds = ds_new("camvid", root, o);
    bool ok = img_dir && lbl_dir && ds;
    if (ok && (!ds_is_dir(img_dir) || !ds_is_dir(lbl_dir))) {
        char avail[256];
        ds_available_dirs(root, avail, sizeof avail);
        ok = segc_errorf(err, n, "camvid: split '%s' needs %s and %s (found: %s)", split, img_dir, lbl_dir, avail);
    } else if (!ok) {
        segc_errorf(err, n, "camvid: out of memory");
    }
    if (ok) {
        ds->vt = &ds_pair_vtable;
        ok = ds_set_classes(ds, 11, camvid_names, camvid_palette) &&
             ds_pairs_from_dir(ds, img_dir, is_png, lbl_dir, same_name, NULL, err, n);
    }
    if (ok) {
        ds_lut_identity(ds);
        ds->lut[11] = 255;   /* Unlabelled */
    }
    free(img_dir);
    free(lbl_dir);
    if (!ok) {
        segc_dataset_close(ds);
        return NULL;
    }
    return ds;
}
