/* Cityscapes: leftImg8bit/SPLIT/CITY/X_leftImg8bit.png with
 * gtFine/SPLIT/CITY/X_gtFine_labelTrainIds.png when every frame has one
 * (mmseg's converted layout), else X_gtFine_labelIds.png mapped through the
 * official id -> trainId table (19 classes, the rest -> 255). */
#include <stdlib.h>
#include <string.h>

#include "ds_internal.h"

static const char *const cs_names[19] = {"road",       "sidewalk", "building", "wall",         "fence",
                                         "pole",       "traffic light", "traffic sign", "vegetation", "terrain",
                                         "sky",        "person",   "rider",    "car",          "truck",
                                         "bus",        "train",    "motorcycle", "bicycle"};
static const uint8_t cs_palette[19][3] = {
    {128, 64, 128}, {244, 35, 232}, {70, 70, 70},   {102, 102, 156}, {190, 153, 153}, {153, 153, 153}, {250, 170, 30},
    {220, 220, 0},  {107, 142, 35}, {152, 251, 152}, {70, 130, 180}, {220, 20, 60},   {255, 0, 0},     {0, 0, 142},
    {0, 0, 70},     {0, 60, 100},   {0, 80, 100},   {0, 0, 230},     {119, 11, 32}};

/* official labelIds 0..33 -> trainId (cityscapesScripts labels.py) */
static const uint8_t cs_id_to_train[34] = {255, 255, 255, 255, 255, 255, 255, 0,   1,   255, 255, 2,
                                           3,   4,   255, 255, 255, 5,   255, 6,   7,   8,   9,   10,
                                           11,  12,  13,  14,  15,  255, 255, 16,  17,  18};

static const char IMG_SUFFIX[] = "_leftImg8bit.png";

static bool is_left_img(const char *name, const void *user) {
    (void)user;
    size_t a = strlen(name), b = sizeof IMG_SUFFIX - 1;
    return a > b && !strcmp(name + a - b, IMG_SUFFIX);
}

static char *label_for(const char *img_path, const char *gt_split_dir, const char *city, const char *kind) {
    const char *base = strrchr(img_path, '/');
    base = base ? base + 1 : img_path;
    size_t stem = strlen(base) - (sizeof IMG_SUFFIX - 1);
    char name[1024];
    snprintf(name, sizeof name, "%.*s_gtFine_%s.png", (int)stem, base, kind);
    return ds_join3(gt_split_dir, city, name);
}

segc_dataset *ds_open_cityscapes(const char *root, const char *split, const segc_dataset_opts *o, char *err,
                                 size_t n) {
    if (!split) split = "train";
    char *img_split = ds_join3(root, "leftImg8bit", split), *gt_split = ds_join3(root, "gtFine", split);
    segc_dataset *ds = ds_new("cityscapes", root, o);
    char **cities = NULL, **files = NULL;
    int64_t n_cities = 0, n_files = 0, cap = 0;
    char **lbl_ids = NULL, **lbl_train = NULL;
    bool ok = img_split && gt_split && ds;
    if (!ok) segc_errorf(err, n, "cityscapes: out of memory");
    else if (!ds_is_dir(img_split) || !ds_is_dir(gt_split))
        ok = segc_errorf(err, n, "cityscapes: split '%s' needs %s and %s", split, img_split, gt_split);
    if (ok) ok = ds_list_dir(img_split, true, NULL, NULL, &cities, &n_cities, err, n);
    bool all_train = true;
    for (int64_t c = 0; ok && c < n_cities; c++) {
        char *city_dir = ds_join(img_split, cities[c]);
        char **names = NULL;
        int64_t k = 0;
        bool listed = city_dir && ds_list_dir(city_dir, false, is_left_img, NULL, &names, &k, err, n);
        ok = listed;
        for (int64_t j = 0; ok && j < k; j++) {
            if (n_files == cap) {
                cap = cap ? 2 * cap : 256;
                char **f2 = realloc(files, cap * sizeof *files), **l2 = realloc(lbl_ids, cap * sizeof *lbl_ids),
                     **t2 = realloc(lbl_train, cap * sizeof *lbl_train);
                if (f2) files = f2;
                if (l2) lbl_ids = l2;
                if (t2) lbl_train = t2;
                if (!f2 || !l2 || !t2) { ok = segc_errorf(err, n, "cityscapes: out of memory"); break; }
            }
            files[n_files] = ds_join(city_dir, names[j]);
            lbl_ids[n_files] = files[n_files] ? label_for(files[n_files], gt_split, cities[c], "labelIds") : NULL;
            lbl_train[n_files] = files[n_files] ? label_for(files[n_files], gt_split, cities[c], "labelTrainIds") : NULL;
            n_files++;
            if (!files[n_files - 1] || !lbl_ids[n_files - 1] || !lbl_train[n_files - 1]) {
                ok = segc_errorf(err, n, "cityscapes: out of memory");
                break;
            }
            all_train = all_train && ds_is_file(lbl_train[n_files - 1]);
        }
        if (listed) ds_free_strv(names, k);
        free(city_dir);
    }
    if (ok && n_files == 0) ok = segc_errorf(err, n, "cityscapes: no *%s files under %s", IMG_SUFFIX, img_split);
    if (ok) {
        ds->vt = &ds_pair_vtable;
        ds->img_paths = files, ds->n = n_files;
        ds->lbl_paths = all_train ? lbl_train : lbl_ids;
        ds_free_strv(all_train ? lbl_ids : lbl_train, n_files);
        files = lbl_ids = lbl_train = NULL;
        ok = ds_set_classes(ds, 19, cs_names, cs_palette);
        if (ok && all_train) ds_lut_identity(ds);
        else if (ok)
            for (int v = 0; v < 34; v++) ds->lut[v] = cs_id_to_train[v];
        if (ok) ds->lut[255] = 255;   /* label id -1 (license plate) is stored as 255 by some tools */
    } else {
        ds_free_strv(files, n_files);
        ds_free_strv(lbl_ids, n_files);
        ds_free_strv(lbl_train, n_files);
    }
    ds_free_strv(cities, n_cities);
    free(img_split);
    free(gt_split);
    if (!ok) {
        segc_dataset_close(ds);
        return NULL;
    }
    return ds;
}
