/* Generic folder dataset: ROOT[/SPLIT]/{images,image,img,imgs}/ and
 * {masks,mask,labels,label,annotations,gt}/ matched by file stem; classes from
 * a class file (one per line, "name" or "name r g b"; default ROOT/classes.txt)
 * and an optional value map ("255:1,0:0") applied to raw label values.
 * With a palette, RGB colour masks are mapped to class indices. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ds_internal.h"

static const char *const image_dirs[] = {"images", "image", "img", "imgs"};
static const char *const mask_dirs[] = {"masks", "mask", "labels", "label", "annotations", "gt"};

static char *first_dir(const char *base, const char *const *cands, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char *d = ds_join(base, cands[i]);
        if (ds_is_dir(d)) return d;
        free(d);
    }
    return NULL;
}

typedef struct stem_entry {
    const char *stem, *name;
} stem_entry;

typedef struct stem_index {
    char **names;       /* file names of the mask directory */
    char **stems;       /* their stems */
    stem_entry *by_stem; /* sorted by stem (ties: by name, so the choice is deterministic) */
    int64_t n;
} stem_index;

static int cmp_stem(const void *a, const void *b) {
    const stem_entry *x = a, *y = b;
    int c = strcmp(x->stem, y->stem);
    return c ? c : strcmp(x->name, y->name);
}

static int cmp_stem_key(const void *key, const void *e) { return strcmp(key, ((const stem_entry *)e)->stem); }

static char *label_by_stem(const char *img_name, const void *user) {
    const stem_index *si = user;
    char *stem = ds_stem(img_name);
    if (!stem) return NULL;
    const stem_entry *hit = si->n ? bsearch(stem, si->by_stem, (size_t)si->n, sizeof *hit, cmp_stem_key) : NULL;
    if (hit) {
        while (hit > si->by_stem && !strcmp(hit[-1].stem, stem)) hit--;   /* first of equal stems */
        free(stem);
        return ds_strdup(hit->name);
    }
    /* no mask with this stem: name the expected file so loading reports it */
    char *r = malloc(strlen(stem) + 5);
    if (r) strcpy(r, stem), strcat(r, ".png");
    free(stem);
    return r;
}

/* class file: "name" or "name r g b" per line; # comments and blank lines skipped */
static bool read_class_file(segc_dataset *ds, const char *path, char *err, size_t n) {
    void *buf;
    size_t len;
    if (!segc_read_file(path, &buf, &len, err, n)) return false;
    char *names[256];
    uint8_t pal[256][3];
    int k = 0, with_color = 0, lineno = 0;
    bool ok = true;
    for (char *line = buf; ok && line && *line;) {
        char *end = strchr(line, '\n');
        if (end) *end = 0;
        lineno++;
        char *s = line, *e = line + strlen(line);
        while (*s && isspace((unsigned char)*s)) s++;
        while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
        if (*s && *s != '#') {
            if (k == 255) { ok = segc_errorf(err, n, "%s:%d: more than 255 classes", path, lineno); break; }
            /* trailing "r g b" */
            int rgb[3], used = 0;
            char *p = e;
            for (int c = 2; c >= 0; c--) {
                while (p > s && isspace((unsigned char)p[-1])) p--;
                char *q = p;
                while (q > s && isdigit((unsigned char)q[-1])) q--;
                if (q == p || (q > s && !isspace((unsigned char)q[-1]))) break;
                rgb[c] = atoi(q);
                p = q, used++;
            }
            bool has_rgb = used == 3 && p > s;
            if (has_rgb) {
                for (int c = 0; c < 3; c++)
                    if (rgb[c] > 255) ok = segc_errorf(err, n, "%s:%d: colour component %d > 255", path, lineno, rgb[c]);
                while (p > s && isspace((unsigned char)p[-1])) p--;
                *p = 0;
                for (int c = 0; c < 3; c++) pal[k][c] = (uint8_t)rgb[c];
                with_color++;
            }
            names[k++] = s;
        }
        line = end ? end + 1 : NULL;
    }
    if (ok && k == 0) ok = segc_errorf(err, n, "%s: no class names", path);
    if (ok && with_color && with_color != k)
        ok = segc_errorf(err, n, "%s: %d of %d classes have an \"r g b\" colour; give one for all or none", path,
                         with_color, k);
    if (ok) ok = ds_set_classes(ds, k, (const char *const *)names, with_color ? (const uint8_t(*)[3])pal : NULL);
    if (ok) ds->label_is_color = with_color > 0;
    free(buf);
    return ok;
}

/* "raw:target,raw:target"; targets must be class ids or 255 */
static bool parse_value_map(const char *map, int *raw, int *tgt, int *count, char *err, size_t n) {
    *count = 0;
    const char *p = map;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char *e1, *e2;
        errno = 0;
        long a = strtol(p, &e1, 10);
        if (e1 == p || *e1 != ':') return segc_errorf(err, n, "value map '%s': expected RAW:TARGET at '%s'", map, p);
        long b = strtol(e1 + 1, &e2, 10);
        if (e2 == e1 + 1 || (*e2 && *e2 != ',' && *e2 != ' '))
            return segc_errorf(err, n, "value map '%s': expected RAW:TARGET at '%s'", map, p);
        if (a < 0 || a > 65535 || b < 0 || b > 255)
            return segc_errorf(err, n, "value map '%s': raw values must be 0..65535 and targets 0..255", map);
        if (*count == 4096) return segc_errorf(err, n, "value map '%s': too many entries", map);
        raw[*count] = (int)a, tgt[*count] = (int)b, (*count)++;
        p = e2;
    }
    if (*count == 0) return segc_errorf(err, n, "value map '%s': no entries", map);
    return true;
}

segc_dataset *ds_open_folder(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n) {
    char *base = split ? ds_join(root, split) : ds_strdup(root);
    segc_dataset *ds = ds_new("folder", root, o);
    char *img_dir = NULL, *lbl_dir = NULL, *class_path = NULL;
    stem_index si = {0};
    int *vraw = NULL, *vtgt = NULL, nmap = 0;
    bool ok = base && ds;
    if (!ok) segc_errorf(err, n, "folder: out of memory");
    else if (!ds_is_dir(base)) ok = segc_errorf(err, n, "folder: %s is not a directory", base);
    if (ok && !(img_dir = first_dir(base, image_dirs, sizeof image_dirs / sizeof *image_dirs)))
        ok = segc_errorf(err, n, "folder: %s has no images/ (or image/, img/, imgs/) directory", base);
    if (ok && !(lbl_dir = first_dir(base, mask_dirs, sizeof mask_dirs / sizeof *mask_dirs)))
        ok = segc_errorf(err, n, "folder: %s has no masks/ (or mask/, labels/, label/, annotations/, gt/) directory", base);
    if (ok && o->value_map) {
        vraw = malloc(4096 * sizeof *vraw), vtgt = malloc(4096 * sizeof *vtgt);
        ok = vraw && vtgt ? parse_value_map(o->value_map, vraw, vtgt, &nmap, err, n)
                          : segc_errorf(err, n, "folder: out of memory");
    }
    if (ok) {
        if (o->class_file) class_path = ds_strdup(o->class_file);
        else {
            char *c1 = ds_join(base, "classes.txt"), *c2 = ds_join(root, "classes.txt");
            class_path = ds_is_file(c1) ? c1 : ds_is_file(c2) ? c2 : NULL;
            if (class_path != c1) free(c1);
            if (class_path != c2) free(c2);
        }
        if (class_path) ok = read_class_file(ds, class_path, err, n);
        else if (nmap) {   /* classes implied by the value map's targets */
            int mx = 0;
            for (int i = 0; i < nmap; i++)
                if (vtgt[i] != 255 && vtgt[i] > mx) mx = vtgt[i];
            ok = ds_set_classes(ds, mx + 1, NULL, NULL);
        } else
            ok = segc_errorf(err, n, "folder: no class list: pass a class file, put classes.txt in %s, or give a value map",
                             base);
    }
    if (ok) {
        for (int i = 0; ok && i < nmap; i++)
            if (vtgt[i] != 255 && vtgt[i] >= ds->n_classes)
                ok = segc_errorf(err, n, "value map '%s': target %d is not a class id (0..%d) or 255", o->value_map, vtgt[i],
                                 ds->n_classes - 1);
    }
    if (ok) {
        if (ds_want_reduce(o, false)) ds_lut_reduce_zero(ds);
        else ds_lut_identity(ds);
        for (int i = 0; i < nmap; i++) ds->lut[vraw[i]] = (uint16_t)vtgt[i];
        ok = ds_list_dir(lbl_dir, false, ds_has_image_ext, NULL, &si.names, &si.n, err, n);
    }
    if (ok) {
        si.stems = calloc((size_t)(si.n ? si.n : 1), sizeof *si.stems);
        si.by_stem = calloc((size_t)(si.n ? si.n : 1), sizeof *si.by_stem);
        ok = si.stems && si.by_stem;
        for (int64_t i = 0; ok && i < si.n; i++) {
            ok = (si.stems[i] = ds_stem(si.names[i])) != NULL;
            si.by_stem[i] = (stem_entry){si.stems ? si.stems[i] : NULL, si.names[i]};
        }
        if (ok) qsort(si.by_stem, (size_t)si.n, sizeof *si.by_stem, cmp_stem);
        else segc_errorf(err, n, "folder: out of memory");
    }
    if (ok) {
        ds->vt = &ds_pair_vtable;
        ok = ds_pairs_from_dir(ds, img_dir, ds_has_image_ext, lbl_dir, label_by_stem, &si, err, n);
    }
    ds_free_strv(si.names, si.n);
    ds_free_strv(si.stems, si.stems ? si.n : 0);
    free(si.by_stem);
    free(vraw);
    free(vtgt);
    free(class_path);
    free(img_dir);
    free(lbl_dir);
    free(base);
    if (!ok) {
        segc_dataset_close(ds);
        return NULL;
    }
    return ds;
}
