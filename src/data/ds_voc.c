/* Pascal VOC 2012 segmentation: JPEGImages/ID.jpg, SegmentationClass/ID.png
 * (palette PNG read as index values), ImageSets/Segmentation/SPLIT.txt; 21
 * classes, 255 (object borders) kept as ignore. ROOT may be VOC2012, VOCdevkit
 * or their parent. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "ds_internal.h"

static const char *const voc_names[21] = {"background", "aeroplane", "bicycle", "bird",  "boat",        "bottle",
                                          "bus",        "car",       "cat",     "chair", "cow",         "diningtable",
                                          "dog",        "horse",     "motorbike", "person", "pottedplant", "sheep",
                                          "sofa",       "train",     "tvmonitor"};

static char *find_voc_base(const char *root) {
    static const char *const tries[] = {"", "VOC2012", "VOCdevkit/VOC2012"};
    for (size_t t = 0; t < sizeof tries / sizeof *tries; t++) {
        char *base = tries[t][0] ? ds_join(root, tries[t]) : ds_strdup(root);
        char *probe = base ? ds_join(base, "JPEGImages") : NULL;
        bool found = ds_is_dir(probe);
        free(probe);
        if (found) return base;
        free(base);
    }
    return NULL;
}

segc_dataset *ds_open_voc(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n) {
    if (!split) split = "train";
    char *base = find_voc_base(root);
    segc_dataset *ds = ds_new("voc", root, o);
    if (!base || !ds) {
        if (!base) segc_errorf(err, n, "voc: %s has no JPEGImages (looked in ROOT, ROOT/VOC2012, ROOT/VOCdevkit/VOC2012)", root);
        else segc_errorf(err, n, "voc: out of memory");
        free(base);
        segc_dataset_close(ds);
        return NULL;
    }
    char list_name[256];
    snprintf(list_name, sizeof list_name, "ImageSets/Segmentation/%s.txt", split);
    char *list = ds_join(base, list_name);
    void *buf = NULL;
    size_t len = 0;
    bool ok = list && segc_read_file(list, &buf, &len, err, n);
    int64_t cap = 0;
    char *line = buf;
    int lineno = 0;
    while (ok && line && *line) {
        char *end = strchr(line, '\n');
        if (end) *end = 0;
        lineno++;
        char *s = line, *e = line + strlen(line);
        while (*s && isspace((unsigned char)*s)) s++;
        while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
        if (*s) {
            if (strchr(s, '/') || strchr(s, ' ')) {
                ok = segc_errorf(err, n, "%s:%d: malformed image id '%s'", list, lineno, s);
                break;
            }
            if (ds->n == cap) {
                cap = cap ? 2 * cap : 256;
                char **a = realloc(ds->img_paths, cap * sizeof *a);
                if (a) ds->img_paths = a;
                char **b = realloc(ds->lbl_paths, cap * sizeof *b);
                if (b) ds->lbl_paths = b;
                if (!a || !b) { ok = segc_errorf(err, n, "voc: out of memory"); break; }
            }
            char jpg[512], png[512];
            snprintf(jpg, sizeof jpg, "JPEGImages/%s.jpg", s);
            snprintf(png, sizeof png, "SegmentationClass/%s.png", s);
            ds->img_paths[ds->n] = ds_join(base, jpg);
            ds->lbl_paths[ds->n] = ds_join(base, png);
            ds->n++;
            if (!ds->img_paths[ds->n - 1] || !ds->lbl_paths[ds->n - 1]) ok = segc_errorf(err, n, "voc: out of memory");
        }
        line = end ? end + 1 : NULL;
    }
    if (ok && ds->n == 0) ok = segc_errorf(err, n, "%s: no image ids", list);
    if (ok) {
        ds->vt = &ds_pair_vtable;
        ok = ds_set_classes(ds, 21, voc_names, NULL);
        if (ok) {   /* VOC's colour map is the bit-interleaved map, starting at index 0 (black) */
            for (int k = 0; k < 21; k++) ds_default_color(k, ds->palette[k]);
            ds_lut_identity(ds);
        }
    }
    free(buf);
    free(list);
    free(base);
    if (!ok) {
        segc_dataset_close(ds);
        return NULL;
    }
    return ds;
}
