/* ADE20K (SceneParsing, ADEChallengeData2016): images/SPLIT/ *.jpg and
 * annotations/SPLIT/ *.png, 150 classes, reduce_zero_label by default
 * (0 "other" -> 255, k -> k-1). ROOT may be ADEChallengeData2016 or its parent. */
#include <stdlib.h>
#include <string.h>

#include "ds_internal.h"

/* class names and palette as in mmsegmentation's ADE20KDataset */
static const char *const ade_names[150] = {
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag"};

static const uint8_t ade_palette[150][3] = {
    {120, 120, 120}, {180, 120, 120}, {6, 230, 230},   {80, 50, 50},    {4, 200, 3},     {120, 120, 80},
    {140, 140, 140}, {204, 5, 255},   {230, 230, 230}, {4, 250, 7},     {224, 5, 255},   {235, 255, 7},
    {150, 5, 61},    {120, 120, 70},  {8, 255, 51},    {255, 6, 82},    {143, 255, 140}, {204, 255, 4},
    {255, 51, 7},    {204, 70, 3},    {0, 102, 200},   {61, 230, 250},  {255, 6, 51},    {11, 102, 255},
    {255, 7, 71},    {255, 9, 224},   {9, 7, 230},     {220, 220, 220}, {255, 9, 92},    {112, 9, 255},
    {8, 255, 214},   {7, 255, 224},   {255, 184, 6},   {10, 255, 71},   {255, 41, 10},   {7, 255, 255},
    {224, 255, 8},   {102, 8, 255},   {255, 61, 6},    {255, 194, 7},   {255, 122, 8},   {0, 255, 20},
    {255, 8, 41},    {255, 5, 153},   {6, 51, 255},    {235, 12, 255},  {160, 150, 20},  {0, 163, 255},
    {140, 140, 140}, {250, 10, 15},   {20, 255, 0},    {31, 255, 0},    {255, 31, 0},    {255, 224, 0},
    {153, 255, 0},   {0, 0, 255},     {255, 71, 0},    {0, 235, 255},   {0, 173, 255},   {31, 0, 255},
    {11, 200, 200},  {255, 82, 0},    {0, 255, 245},   {0, 61, 255},    {0, 255, 112},   {0, 255, 133},
    {255, 0, 0},     {255, 163, 0},   {255, 102, 0},   {194, 255, 0},   {0, 143, 255},   {51, 255, 0},
    {0, 82, 255},    {0, 255, 41},    {0, 255, 173},   {10, 0, 255},    {173, 255, 0},   {0, 255, 153},
    {255, 92, 0},    {255, 0, 255},   {255, 0, 245},   {255, 0, 102},   {255, 173, 0},   {255, 0, 20},
    {255, 184, 184}, {0, 31, 255},    {0, 255, 61},    {0, 71, 255},    {255, 0, 204},   {0, 255, 194},
    {0, 255, 82},    {0, 10, 255},    {0, 112, 255},   {51, 0, 255},    {0, 194, 255},   {0, 122, 255},
    {0, 255, 163},   {255, 153, 0},   {0, 255, 10},    {255, 112, 0},   {143, 255, 0},   {82, 0, 255},
    {163, 255, 0},   {255, 235, 0},   {8, 184, 170},   {133, 0, 255},   {0, 255, 92},    {184, 0, 255},
    {255, 0, 31},    {0, 184, 255},   {0, 214, 255},   {255, 0, 112},   {92, 255, 0},    {0, 224, 255},
    {112, 224, 255}, {70, 184, 160},  {163, 0, 255},   {153, 0, 255},   {71, 255, 0},    {255, 0, 163},
    {255, 204, 0},   {255, 0, 143},   {0, 255, 235},   {133, 255, 0},   {255, 0, 235},   {245, 0, 255},
    {255, 0, 122},   {255, 245, 0},   {10, 190, 212},  {214, 255, 0},   {0, 204, 255},   {20, 0, 255},
    {255, 255, 0},   {0, 153, 255},   {0, 41, 255},    {0, 255, 204},   {41, 0, 255},    {41, 255, 0},
    {173, 0, 255},   {0, 245, 255},   {71, 0, 255},    {122, 0, 255},   {0, 255, 184},   {0, 92, 255},
    {184, 255, 0},   {0, 133, 255},   {255, 214, 0},   {25, 194, 194},  {102, 255, 0},   {92, 0, 255}};

static char *png_of(const char *img_name, const void *user) {
    (void)user;
    char *stem = ds_stem(img_name);
    if (!stem) return NULL;
    char *r = malloc(strlen(stem) + 5);
    if (r) strcpy(r, stem), strcat(r, ".png");
    free(stem);
    return r;
}

segc_dataset *ds_open_ade20k(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n) {
    if (!split || !strcmp(split, "train")) split = "training";
    else if (!strcmp(split, "val")) split = "validation";
    char *base = ds_join(root, "ADEChallengeData2016");
    if (base && !ds_is_dir(base)) {
        free(base);
        base = ds_strdup(root);
    }
    char *img_dir = base ? ds_join3(base, "images", split) : NULL;
    char *lbl_dir = base ? ds_join3(base, "annotations", split) : NULL;
    segc_dataset *ds = ds_new("ade20k", root, o);
    bool ok = img_dir && lbl_dir && ds;
    if (!ok) segc_errorf(err, n, "ade20k: out of memory");
    else if (!ds_is_dir(img_dir) || !ds_is_dir(lbl_dir))
        ok = segc_errorf(err, n, "ade20k: split '%s' needs %s and %s", split, img_dir, lbl_dir);
    if (ok) {
        ds->vt = &ds_pair_vtable;
        ok = ds_set_classes(ds, 150, ade_names, ade_palette) &&
             ds_pairs_from_dir(ds, img_dir, ds_has_image_ext, lbl_dir, png_of, NULL, err, n);
    }
    if (ok) {
        if (ds_want_reduce(&ds->opts, true)) ds_lut_reduce_zero(ds);
        else {   /* keep 0 as a class id: 151 ids, 0 named "other" */
            ds_free_strv(ds->class_names, ds->n_classes);
            free(ds->palette);
            ds->class_names = NULL, ds->palette = NULL;
            const char *names[151];
            uint8_t pal[151][3] = {{0, 0, 0}};
            names[0] = "other";
            for (int k = 0; k < 150; k++) names[k + 1] = ade_names[k], memcpy(pal[k + 1], ade_palette[k], 3);
            ok = ds_set_classes(ds, 151, names, (const uint8_t(*)[3])pal);
            if (ok) ds_lut_identity(ds);
        }
    }
    free(base);
    free(img_dir);
    free(lbl_dir);
    if (!ok) {
        segc_dataset_close(ds);
        return NULL;
    }
    return ds;
}
