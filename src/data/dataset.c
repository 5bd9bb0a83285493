/* Dataset front end: open by family name, common accessors, the shared
 * image+label pair loader and label remapping, and helpers for the ds_*.c
 * families. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "ds_internal.h"

char *ds_strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

char *ds_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *d = malloc(na + nb + 2);
    if (!d) return NULL;
    memcpy(d, a, na);
    size_t k = na;
    if (na && a[na - 1] != '/') d[k++] = '/';
    memcpy(d + k, b, nb + 1);
    return d;
}

char *ds_join3(const char *a, const char *b, const char *c) {
    char *ab = ds_join(a, b);
    if (!ab) return NULL;
    char *abc = ds_join(ab, c);
    free(ab);
    return abc;
}

bool ds_is_dir(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

bool ds_is_file(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void ds_free_strv(char **v, int64_t n) {
    if (!v) return;
    for (int64_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

bool ds_list_dir(const char *dir, bool want_dirs, ds_name_filter keep, const void *user, char ***names, int64_t *n,
                 char *err, size_t errlen) {
    *names = NULL, *n = 0;
    DIR *d = opendir(dir);
    if (!d) return segc_errorf(err, errlen, "%s: cannot open directory: %s", dir, strerror(errno));
    int64_t cap = 64, cnt = 0;
    char **v = malloc(cap * sizeof *v);
    struct dirent *e;
    bool ok = v != NULL;
    while (ok && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *full = ds_join(dir, e->d_name);
        bool is_dir = ds_is_dir(full), is_file = !is_dir && ds_is_file(full);
        free(full);
        if (want_dirs ? !is_dir : !is_file) continue;
        if (keep && !keep(e->d_name, user)) continue;
        if (cnt == cap) {
            char **nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) { ok = false; break; }
            v = nv, cap *= 2;
        }
        if (!(v[cnt] = ds_strdup(e->d_name))) { ok = false; break; }
        cnt++;
    }
    closedir(d);
    if (!ok) {
        ds_free_strv(v, cnt);
        return segc_errorf(err, errlen, "%s: out of memory listing directory", dir);
    }
    qsort(v, (size_t)cnt, sizeof *v, cmp_str);
    *names = v, *n = cnt;
    return true;
}

bool ds_has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcasecmp(s + a - b, suffix);
}

bool ds_has_image_ext(const char *name, const void *user) {
    (void)user;
    return ds_has_suffix(name, ".png") || ds_has_suffix(name, ".jpg") || ds_has_suffix(name, ".jpeg");
}

char *ds_stem(const char *name) {
    char *s = ds_strdup(name);
    if (!s) return NULL;
    char *dot = strrchr(s, '.');
    if (dot && dot != s) *dot = 0;
    return s;
}

/* ------------------------------------------------------------------ object */

void segc_dataset_opts_default(segc_dataset_opts *o) {
    memset(o, 0, sizeof *o);
    o->use_default_reduce = true;
    o->slice_axis = 2;
}

segc_dataset *ds_new(const char *name, const char *root, const segc_dataset_opts *o) {
    segc_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return NULL;
    snprintf(ds->name, sizeof ds->name, "%s", name);
    ds->root = ds_strdup(root);
    if (o) ds->opts = *o;
    else segc_dataset_opts_default(&ds->opts);
    /* string options are not owned by the dataset; the open call consumes them */
    ds->opts.class_file = NULL, ds->opts.value_map = NULL;
    ds->image_channels = ds->opts.image_channels == 1 ? 1 : 3;
    for (int v = 0; v < 65536; v++) ds->lut[v] = SEGC_LUT_INVALID;
    return ds;
}

void ds_default_color(int k, uint8_t rgb[3]) {
    /* bit-interleaved colour map (as VOC's): distinct for every index */
    unsigned r = 0, g = 0, b = 0, c = (unsigned)k;
    for (int j = 0; j < 8; j++) {
        r |= ((c >> 0) & 1u) << (7 - j);
        g |= ((c >> 1) & 1u) << (7 - j);
        b |= ((c >> 2) & 1u) << (7 - j);
        c >>= 3;
    }
    rgb[0] = (uint8_t)r, rgb[1] = (uint8_t)g, rgb[2] = (uint8_t)b;
}

bool ds_set_classes(segc_dataset *ds, int n, const char *const *names, const uint8_t (*palette)[3]) {
    ds->n_classes = n;
    ds->class_names = calloc((size_t)(n ? n : 1), sizeof *ds->class_names);
    ds->palette = calloc((size_t)(n ? n : 1), sizeof *ds->palette);
    if (!ds->class_names || !ds->palette) return false;
    for (int k = 0; k < n; k++) {
        char buf[32];
        if (!names || !names[k]) snprintf(buf, sizeof buf, "class%d", k);
        if (!(ds->class_names[k] = ds_strdup(names && names[k] ? names[k] : buf))) return false;
        if (palette) memcpy(ds->palette[k], palette[k], 3);
        else ds_default_color(k + 1, ds->palette[k]);
    }
    return true;
}

void ds_lut_identity(segc_dataset *ds) {
    for (int k = 0; k < ds->n_classes && k < 255; k++) ds->lut[k] = (uint16_t)k;
    ds->lut[255] = 255;
}

void ds_lut_reduce_zero(segc_dataset *ds) {
    ds->lut[0] = 255;
    for (int k = 1; k <= ds->n_classes && k < 255; k++) ds->lut[k] = (uint16_t)(k - 1);
    ds->lut[255] = 255;
}

segc_dataset *segc_dataset_open(const char *name, const char *root, const char *split, const segc_dataset_opts *o,
                                char *err, size_t errlen) {
    if (!name || !root) {
        segc_errorf(err, errlen, "dataset open: name and root are required");
        return NULL;
    }
    if (!ds_is_dir(root) && !(!strcmp(name, "coco") && ds_is_file(root))) {
        segc_errorf(err, errlen, "%s: dataset root is not a directory", root);
        return NULL;
    }
    segc_dataset_opts def;
    if (!o) segc_dataset_opts_default(&def), o = &def;
    if (o->image_channels != 0 && o->image_channels != 1 && o->image_channels != 3) {
        segc_errorf(err, errlen, "dataset open: image_channels must be 0, 1 or 3, found %d", o->image_channels);
        return NULL;
    }
    if (o->holdout != 0) {   /* open the whole split, then cut it (ds_holdout.c) */
        segc_dataset_opts whole = *o;
        whole.holdout = 0;
        segc_dataset *ds = segc_dataset_open(name, root, split, &whole, err, errlen);
        return ds ? ds_apply_holdout(ds, o, err, errlen) : NULL;
    }
    bool medical = !strcmp(name, "brats") || !strcmp(name, "msd");
    if (o->num_folds != 0 && !medical) {   /* silently ignoring it would evaluate on training data */
        segc_errorf(err, errlen, "%s: data.num_folds %d: k-fold splits are supported for brats and msd only", name,
                    o->num_folds);
        return NULL;
    }
    if (!strcmp(name, "camvid")) return ds_open_camvid(root, split, o, err, errlen);
    if (!strcmp(name, "ade20k") || !strcmp(name, "ade")) return ds_open_ade20k(root, split, o, err, errlen);
    if (!strcmp(name, "cityscapes")) return ds_open_cityscapes(root, split, o, err, errlen);
    if (!strcmp(name, "voc")) return ds_open_voc(root, split, o, err, errlen);
    if (!strcmp(name, "folder")) return ds_open_folder(root, split, o, err, errlen);
    if (!strcmp(name, "coco")) return ds_open_coco(root, split, o, err, errlen);
    if (!strcmp(name, "brats") || !strcmp(name, "msd")) return ds_open_medical(name, root, split, o, err, errlen);
    segc_errorf(err, errlen, "unknown dataset '%s' (expected camvid, ade20k, cityscapes, voc, folder, coco, brats or msd)",
                name);
    return NULL;
}

int64_t segc_dataset_len(const segc_dataset *ds) { return ds ? ds->n : 0; }
int segc_dataset_num_classes(const segc_dataset *ds) { return ds ? ds->n_classes : 0; }
const char *segc_dataset_name(const segc_dataset *ds) { return ds ? ds->name : NULL; }
bool segc_dataset_is_detection(const segc_dataset *ds) { return ds && !strcmp(ds->name, "coco"); }

static bool is_medical(const segc_dataset *ds) { return !strcmp(ds->name, "brats") || !strcmp(ds->name, "msd"); }

bool segc_dataset_sample_volume(const segc_dataset *ds, int64_t i, int64_t *volume, int *slice) {
    if (!ds || i < 0 || i >= ds->n) return false;
    if (is_medical(ds)) return ds_medical_sample_volume(ds, i, volume, slice);
    if (volume) *volume = i;
    if (slice) *slice = 0;
    return true;
}

int64_t segc_dataset_n_volumes(const segc_dataset *ds) {
    if (!ds) return 0;
    return is_medical(ds) ? ds_medical_n_volumes(ds) : ds->n;
}

bool segc_dataset_volume_info(const segc_dataset *ds, int64_t v, segc_volume_info *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    for (int k = 0; k < 4; k++) out->affine[k][k] = 1;
    if (!ds || v < 0 || v >= segc_dataset_n_volumes(ds))
        return segc_errorf(err, errlen, "%s: volume %lld out of range (%lld volumes)", ds ? ds->name : "dataset",
                           (long long)v, (long long)segc_dataset_n_volumes(ds));
    if (is_medical(ds)) return ds_medical_volume_info(ds, v, out, err, errlen);
    /* a 2-D image is its own one-slice volume; its size is known once decoded */
    out->dim[2] = 1;
    out->slice_axis = 2;
    out->first_sample = v;
    out->n_samples = 1;
    out->name = out->image_path = ds->img_paths ? ds->img_paths[v] : ds->name;
    out->label_path = ds->lbl_paths ? ds->lbl_paths[v] : NULL;
    return true;
}

const char *segc_dataset_class_name(const segc_dataset *ds, int k) {
    return ds && k >= 0 && k < ds->n_classes ? ds->class_names[k] : NULL;
}

const uint8_t *segc_dataset_palette(const segc_dataset *ds, int k) {
    return ds && k >= 0 && k < ds->n_classes ? ds->palette[k] : NULL;
}

const char *segc_dataset_image_path(const segc_dataset *ds, int64_t i) {
    return ds && ds->img_paths && i >= 0 && i < ds->n ? ds->img_paths[i] : NULL;
}

const char *segc_dataset_label_path(const segc_dataset *ds, int64_t i) {
    return ds && ds->lbl_paths && i >= 0 && i < ds->n ? ds->lbl_paths[i] : NULL;
}

void segc_dataset_close(segc_dataset *ds) {
    if (!ds) return;
    if (ds->vt && ds->vt->close) ds->vt->close(ds);
    ds_free_strv(ds->img_paths, ds->n);
    ds_free_strv(ds->lbl_paths, ds->n);
    ds_free_strv(ds->class_names, ds->n_classes);
    free(ds->palette);
    free(ds->root);
    free(ds);
}

void segc_sample_free(segc_sample *s) {
    if (!s) return;
    segc_image_free(&s->img);
    segc_image_free(&s->label);
    free(s->boxes);
    free(s->box_labels);
    free(s->box_crowd);
    memset(s, 0, sizeof *s);
}

bool segc_dataset_load(const segc_dataset *ds, int64_t i, segc_sample *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!ds) return segc_errorf(err, errlen, "dataset load: no dataset");
    if (i < 0 || i >= ds->n)
        return segc_errorf(err, errlen, "%s: sample index %lld out of range 0..%lld", ds->name, (long long)i,
                           (long long)ds->n - 1);
    bool ok = ds->vt->load(ds, i, out, err, errlen);
    if (!ok) segc_sample_free(out);
    out->index = i;
    return ok;
}

/* ------------------------------------------------------------------ labels */

/* exact colour -> class index through the palette (colour masks of folder datasets) */
static bool map_color_label(const segc_dataset *ds, const segc_image *raw, const char *path, uint8_t *dst, bool strict,
                            int64_t *n_invalid, int64_t *first_bad, char *err, size_t errlen) {
    size_t n = (size_t)raw->h * raw->w;
    const uint8_t *s = raw->data;
    uint32_t last_rgb = 0xFFFFFFFFu;
    int last_k = -1;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = s + i * raw->c;
        uint32_t rgb = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        if (rgb != last_rgb) {
            last_rgb = rgb, last_k = -1;
            for (int k = 0; k < ds->n_classes; k++)
                if (ds->palette[k][0] == p[0] && ds->palette[k][1] == p[1] && ds->palette[k][2] == p[2]) {
                    last_k = k;
                    break;
                }
        }
        if (last_k >= 0) {
            dst[i] = (uint8_t)last_k;
            continue;
        }
        if (strict)
            return segc_errorf(err, errlen, "%s: label colour (%d,%d,%d) at x=%zu y=%zu is not in the class palette", path,
                               p[0], p[1], p[2], i % raw->w, i / raw->w);
        if (*n_invalid == 0) *first_bad = rgb;
        (*n_invalid)++;
        dst[i] = 255;
    }
    return true;
}

bool ds_map_label(const segc_dataset *ds, const segc_image *raw, const char *path, uint8_t *dst, bool strict,
                  int64_t *n_invalid, int64_t *first_bad, char *err, size_t errlen) {
    *n_invalid = 0, *first_bad = -1;
    if (raw->c >= 3 && raw->dtype == SEGC_U8 && ds->label_is_color)
        return map_color_label(ds, raw, path, dst, strict, n_invalid, first_bad, err, errlen);
    if (raw->c != 1)
        return segc_errorf(err, errlen,
                           "%s: label must be a single-channel (gray or palette) image, found %d channels%s", path, raw->c,
                           raw->c >= 3 ? " (colour masks need a class file with a palette)" : "");
    size_t n = (size_t)raw->h * raw->w;
    for (size_t i = 0; i < n; i++) {
        int64_t v = raw->dtype == SEGC_U8 ? ((const uint8_t *)raw->data)[i] : ((const int32_t *)raw->data)[i];
        uint16_t m = v >= 0 && v < 65536 ? ds->lut[v] : SEGC_LUT_INVALID;
        if (m != SEGC_LUT_INVALID) {
            dst[i] = (uint8_t)m;
            continue;
        }
        if (strict)
            return segc_errorf(err, errlen, "%s: label value %lld at x=%zu y=%zu is not a %s class id (0..%d) or ignore",
                               path, (long long)v, i % raw->w, i / raw->w, ds->name, ds->n_classes - 1);
        if (*n_invalid == 0) *first_bad = v;
        (*n_invalid)++;
        dst[i] = 255;
    }
    return true;
}

static bool load_pair(const segc_dataset *ds, int64_t i, segc_sample *out, bool strict, segc_sample_check *chk,
                      char *err, size_t errlen) {
    const char *ip = ds->img_paths[i], *lp = ds->lbl_paths ? ds->lbl_paths[i] : NULL;
    segc_read_mode mode = ds->image_channels == 1 ? SEGC_READ_GRAY : SEGC_READ_RGB;
    if (!segc_image_read(ip, mode, &out->img, err, errlen)) return false;
    if (!lp) return true;
    if (!ds_is_file(lp)) return segc_errorf(err, errlen, "%s: label file missing for image %s", lp, ip);
    segc_image raw;
    if (!segc_image_read(lp, SEGC_READ_LABEL, &raw, err, errlen)) return false;
    bool ok = false;
    if (raw.h != out->img.h || raw.w != out->img.w) {
        segc_errorf(err, errlen, "%s: label size %dx%d does not match image %s size %dx%d (HxW)", lp, raw.h, raw.w, ip,
                    out->img.h, out->img.w);
        goto done;
    }
    if (!segc_image_alloc(&out->label, raw.h, raw.w, 1, SEGC_U8)) {
        segc_errorf(err, errlen, "%s: out of memory", lp);
        goto done;
    }
    int64_t n_bad = 0, first_bad = -1;
    if (!ds_map_label(ds, &raw, lp, out->label.data, strict, &n_bad, &first_bad, err, errlen)) goto done;
    if (chk) chk->n_invalid = n_bad, chk->first_invalid = first_bad;
    ok = true;
done:
    segc_image_free(&raw);
    return ok;
}

bool ds_load_pair(const segc_dataset *ds, int64_t i, segc_sample *out, char *err, size_t errlen) {
    return load_pair(ds, i, out, true, NULL, err, errlen);
}

bool segc_dataset_check_sample(const segc_dataset *ds, int64_t i, segc_sample_check *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->first_invalid = -1;
    if (!ds) return segc_errorf(err, errlen, "dataset check: no dataset");
    if (i < 0 || i >= ds->n)
        return segc_errorf(err, errlen, "%s: sample index %lld out of range 0..%lld", ds->name, (long long)i,
                           (long long)ds->n - 1);
    if (ds->vt->check) return ds->vt->check(ds, i, out, err, errlen);
    segc_sample s;
    memset(&s, 0, sizeof s);
    bool ok = ds->vt->load == ds_load_pair ? load_pair(ds, i, &s, false, out, err, errlen)
                                           : ds->vt->load(ds, i, &s, err, errlen);
    if (ok) {
        out->h = s.img.h, out->w = s.img.w, out->c = s.img.c;
        if (s.label.data) {
            const uint8_t *l = s.label.data;
            size_t n = (size_t)s.label.h * s.label.w;
            for (size_t p = 0; p < n; p++) out->hist[l[p]]++;
        }
        for (int b = 0; b < s.n_boxes; b++) out->hist[(uint8_t)s.box_labels[b]]++;
    }
    segc_sample_free(&s);
    return ok;
}

/* ------------------------------------------------------------------ helpers for families */

const segc_ds_vtable ds_pair_vtable = {ds_load_pair, NULL, NULL};

bool ds_want_reduce(const segc_dataset_opts *o, bool family_default) {
    return o->use_default_reduce ? family_default : o->reduce_zero_label;
}

void ds_available_dirs(const char *dir, char *buf, size_t n) {
    char **names;
    int64_t cnt;
    buf[0] = 0;
    if (!ds_list_dir(dir, true, NULL, NULL, &names, &cnt, NULL, 0)) return;
    size_t used = 0;
    for (int64_t i = 0; i < cnt && used + 1 < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", names[i]);
    ds_free_strv(names, cnt);
}

bool ds_pairs_from_dir(segc_dataset *ds, const char *img_dir, ds_name_filter keep, const char *lbl_dir,
                       ds_label_name_fn label_name, const void *user, char *err, size_t errlen) {
    char **names;
    int64_t n;
    if (!ds_list_dir(img_dir, false, keep, user, &names, &n, err, errlen)) return false;
    if (n == 0) {
        ds_free_strv(names, n);
        return segc_errorf(err, errlen, "%s: no image files found", img_dir);
    }
    ds->img_paths = calloc((size_t)n, sizeof *ds->img_paths);
    ds->lbl_paths = lbl_dir ? calloc((size_t)n, sizeof *ds->lbl_paths) : NULL;
    bool ok = ds->img_paths && (!lbl_dir || ds->lbl_paths);
    for (int64_t i = 0; ok && i < n; i++) {
        ok = (ds->img_paths[i] = ds_join(img_dir, names[i])) != NULL;
        if (ok && lbl_dir) {
            char *ln = label_name(names[i], user);
            ok = ln && (ds->lbl_paths[i] = ds_join(lbl_dir, ln)) != NULL;
            free(ln);
        }
    }
    ds->n = n;   /* set even on failure so close frees what was filled */
    ds_free_strv(names, n);
    if (!ok) return segc_errorf(err, errlen, "%s: out of memory", img_dir);
    return true;
}
