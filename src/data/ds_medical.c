/* Medical volumes as 2-D slice samples.
 *  brats: one folder per case (ROOT/SPLIT/CASE/ *.nii[.gz], brats-mini layout):
 *         modality files stacked as channels (sorted by their name less the
 *         case-name prefix), a label file (name with seg/label/OT/gt/truth),
 *         an optional brain mask (name containing "mask"). 5 classes (BraTS
 *         2015: 0 background .. 4 enhancing tumour).
 *  msd:   Medical Segmentation Decathlon: imagesTr/X.nii.gz (4-D, modalities
 *         along t) + labelsTr/X.nii.gz; classes from dataset.json.
 * Sample i is slice s of case c along slice_axis (cases x slices, or only
 * slices with brain). Each channel is z-scored over the brain mask (or the
 * voxels where any channel is nonzero when there is no mask), outside set to 0.
 * Volumes are decoded once at open and kept (read-only, so loading is
 * thread-safe) when they fit SEGC_MEDICAL_CACHE_MB (default 4096); otherwise
 * each load decodes its case again. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "ds_internal.h"

typedef struct med_files {
    char *name;         /* case name */
    char **chan;        /* brats: one file per channel; msd: chan[0] is the 4-D file */
    char *label, *mask; /* may be NULL */
} med_files;

typedef struct med_case {
    int64_t dim[3];
    float *img;         /* C planes of nx*ny*nz, normalised */
    uint8_t *label;     /* NULL when the case has none */
    uint8_t *has_brain; /* per slice along the dataset's axis */
} med_case;

typedef struct med_priv {
    bool msd;
    int C;
    int axis;
    int64_t n_cases;
    med_files *files;
    med_case *cache;    /* n_cases entries when preloaded, else NULL */
    int64_t *s_case;    /* per sample */
    int32_t *s_slice;
    int64_t *c_first, *c_count;   /* per case: its first sample and sample count */
} med_priv;

static void med_case_free(med_case *c) {
    free(c->img);
    free(c->label);
    free(c->has_brain);
    memset(c, 0, sizeof *c);
}

static bool same_dims(const segc_volume *v, const int64_t d[3]) {
    return v->dim[0] == d[0] && v->dim[1] == d[1] && v->dim[2] == d[2];
}

/* The file's voxel->world affine must equal the case's reference (first
 * modality) up to float rounding: a label or modality in another space
 * would silently train on misaligned voxels. One line: file, field,
 * expected vs found (the first differing row). */
static bool same_affine(const char *path, const char *ref, const double a[4][4], char *err, size_t n) {
    int64_t d[3];
    double b[4][4];
    if (!segc_nifti_read_geometry(path, d, b, NULL, NULL, err, n)) return false;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            if (fabs(a[r][c] - b[r][c]) > 1e-3 * (1 + fabs(a[r][c])))
                return segc_errorf(err, n, "%s: affine row %d is [%g %g %g %g], expected [%g %g %g %g] as in %s", path, r,
                                   b[r][0], b[r][1], b[r][2], b[r][3], a[r][0], a[r][1], a[r][2], a[r][3], ref);
    return true;
}

/* float label volume -> u8 class ids, validated */
static bool convert_label(const segc_volume *v, const char *path, int n_classes, uint8_t *dst, char *err, size_t n) {
    int64_t nvox = v->dim[0] * v->dim[1] * v->dim[2];
    for (int64_t i = 0; i < nvox; i++) {
        float x = v->data[i], r = nearbyintf(x);
        if (!(fabsf(x - r) < 1e-3f) || r < 0 || (r >= n_classes && r != 255)) {
            int64_t px = i % v->dim[0], py = i / v->dim[0] % v->dim[1], pz = i / (v->dim[0] * v->dim[1]);
            return segc_errorf(err, n, "%s: label value %g at voxel (%lld,%lld,%lld) is not a class id 0..%d", path, x,
                               (long long)px, (long long)py, (long long)pz, n_classes - 1);
        }
        dst[i] = (uint8_t)r;
    }
    return true;
}

static bool load_case(const segc_dataset *ds, int64_t c, med_case *out, char *err, size_t n) {
    const med_priv *p = ds->priv;
    const med_files *f = &p->files[c];
    memset(out, 0, sizeof *out);
    segc_volume v = {0};
    uint8_t *region = NULL;
    bool ok = true;
    int C = p->C;
    int64_t nvox = 0, gdim[3];
    double aff[4][4];
    ok = segc_nifti_read_geometry(f->chan[0], gdim, aff, NULL, NULL, err, n);
    /* channels */
    for (int ch = 0; ok && ch < (p->msd ? 1 : C); ch++) {
        if (ch > 0 && !same_affine(f->chan[ch], f->chan[0], aff, err, n)) { ok = false; break; }
        ok = segc_nifti_read(f->chan[ch], &v, err, n);
        if (!ok) break;
        int64_t vc = p->msd ? v.dim[3] : 1;
        if (ch == 0) {
            memcpy(out->dim, v.dim, sizeof out->dim);
            nvox = v.dim[0] * v.dim[1] * v.dim[2];
            out->img = malloc((size_t)nvox * C * sizeof(float));
            if (!out->img) ok = segc_errorf(err, n, "%s: out of memory", f->chan[ch]);
        }
        if (ok && (!same_dims(&v, out->dim) || vc != (p->msd ? C : 1)))
            ok = segc_errorf(err, n, "%s: shape %lldx%lldx%lldx%lld, expected %lldx%lldx%lldx%d (%s)", f->chan[ch],
                             (long long)v.dim[0], (long long)v.dim[1], (long long)v.dim[2], (long long)v.dim[3],
                             (long long)out->dim[0], (long long)out->dim[1], (long long)out->dim[2], p->msd ? C : 1,
                             p->msd ? "modalities along t as in the first case" : "as the case's first modality");
        if (ok) memcpy(out->img + (size_t)ch * nvox, v.data, (size_t)nvox * vc * sizeof(float));
        segc_volume_free(&v);
    }
    /* brain region: mask > 0.5, else any channel nonzero */
    if (ok) {
        region = malloc((size_t)nvox);
        if (!region) ok = segc_errorf(err, n, "%s: out of memory", f->name);
    }
    if (ok && f->mask) {
        ok = same_affine(f->mask, f->chan[0], aff, err, n) && segc_nifti_read(f->mask, &v, err, n);
        if (ok && (!same_dims(&v, out->dim) || v.dim[3] != 1))
            ok = segc_errorf(err, n, "%s: mask shape %lldx%lldx%lldx%lld, expected %lldx%lldx%lld", f->mask, (long long)v.dim[0],
                             (long long)v.dim[1], (long long)v.dim[2], (long long)v.dim[3], (long long)out->dim[0],
                             (long long)out->dim[1], (long long)out->dim[2]);
        for (int64_t i = 0; ok && i < nvox; i++) region[i] = v.data[i] > 0.5f;
        segc_volume_free(&v);
    } else if (ok) {
        for (int64_t i = 0; i < nvox; i++) {
            bool any = false;
            for (int ch = 0; ch < C; ch++) any |= out->img[(size_t)ch * nvox + i] != 0.f;
            region[i] = any;
        }
    }
    /* per-channel z-score over the region (double sums: deterministic, serial) */
    for (int ch = 0; ok && ch < C; ch++) {
        float *x = out->img + (size_t)ch * nvox;
        double s = 0, s2 = 0;
        int64_t cnt = 0;
        for (int64_t i = 0; i < nvox; i++)
            if (region[i]) s += x[i], s2 += (double)x[i] * x[i], cnt++;
        double mean = cnt ? s / cnt : 0, var = cnt ? s2 / cnt - mean * mean : 0;
        double inv = 1.0 / fmax(sqrt(fmax(var, 0)), 1e-8);
        for (int64_t i = 0; i < nvox; i++) x[i] = region[i] ? (float)((x[i] - mean) * inv) : 0.f;
    }
    /* label */
    if (ok && f->label) {
        ok = same_affine(f->label, f->chan[0], aff, err, n) && segc_nifti_read(f->label, &v, err, n);
        if (ok && (!same_dims(&v, out->dim) || v.dim[3] != 1))
            ok = segc_errorf(err, n, "%s: label shape %lldx%lldx%lldx%lld, expected %lldx%lldx%lld as the image", f->label, (long long)v.dim[0],
                             (long long)v.dim[1], (long long)v.dim[2], (long long)v.dim[3], (long long)out->dim[0],
                             (long long)out->dim[1], (long long)out->dim[2]);
        if (ok) {
            out->label = malloc((size_t)nvox);
            ok = out->label ? convert_label(&v, f->label, ds->n_classes, out->label, err, n)
                            : segc_errorf(err, n, "%s: out of memory", f->label);
        }
        segc_volume_free(&v);
    }
    /* slices with brain along the axis */
    if (ok) {
        int64_t ns = out->dim[p->axis];
        out->has_brain = calloc((size_t)ns, 1);
        if (!out->has_brain) ok = segc_errorf(err, n, "%s: out of memory", f->name);
        int64_t nx = out->dim[0], ny = out->dim[1];
        for (int64_t i = 0; ok && i < nvox; i++)
            if (region[i]) {
                int64_t co[3] = {i % nx, i / nx % ny, i / (nx * ny)};
                out->has_brain[co[p->axis]] = 1;
            }
    }
    free(region);
    if (!ok) med_case_free(out);
    return ok;
}

static void slice_dims(const int64_t dim[3], int axis, int *h, int *w) {
    *h = (int)(axis == 2 ? dim[1] : dim[2]);
    *w = (int)(axis == 0 ? dim[1] : dim[0]);
}

static bool extract_slice(const segc_dataset *ds, const med_case *mc, int s, segc_sample *out, char *err, size_t n) {
    const med_priv *p = ds->priv;
    int h, w, C = p->C, a = p->axis;
    slice_dims(mc->dim, a, &h, &w);
    int64_t nx = mc->dim[0], ny = mc->dim[1], nvox = nx * ny * mc->dim[2];
    if (!segc_image_alloc(&out->img, h, w, C, SEGC_F32) ||
        (mc->label && !segc_image_alloc(&out->label, h, w, 1, SEGC_U8)))
        return segc_errorf(err, n, "%s: out of memory", ds->name);
    float *img = out->img.data;
    uint8_t *lab = out->label.data;
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++) {
            int64_t x = a == 0 ? s : col, y = a == 0 ? col : a == 1 ? s : r, z = a == 2 ? s : r;
            int64_t src = (z * ny + y) * nx + x, dst = (int64_t)r * w + col;
            for (int ch = 0; ch < C; ch++) img[dst * C + ch] = mc->img[(size_t)ch * nvox + src];
            if (lab) lab[dst] = mc->label[src];
        }
    return true;
}

static bool med_load(const segc_dataset *ds, int64_t i, segc_sample *out, char *err, size_t n) {
    const med_priv *p = ds->priv;
    int64_t c = p->s_case[i];
    if (p->cache) return extract_slice(ds, &p->cache[c], p->s_slice[i], out, err, n);
    med_case mc;
    if (!load_case(ds, c, &mc, err, n)) return false;
    bool ok = extract_slice(ds, &mc, p->s_slice[i], out, err, n);
    med_case_free(&mc);
    return ok;
}

static void med_files_free(med_files *f, bool msd) {
    ds_free_strv(f->chan, f->chan ? (msd ? 1 : 16) : 0);
    free(f->name);
    free(f->label);
    free(f->mask);
    memset(f, 0, sizeof *f);
}

static void med_close(segc_dataset *ds) {
    med_priv *p = ds->priv;
    if (!p) return;
    for (int64_t c = 0; c < p->n_cases; c++) {
        med_files_free(&p->files[c], p->msd);
        if (p->cache) med_case_free(&p->cache[c]);
    }
    free(p->files);
    free(p->cache);
    free(p->s_case);
    free(p->s_slice);
    free(p->c_first);
    free(p->c_count);
    free(p);
    ds->priv = NULL;
}

static const segc_ds_vtable med_vtable = {med_load, NULL, med_close};

/* ------------------------------------------------------------------ discovery */

static bool is_nifti(const char *name, const void *user) {
    (void)user;
    return ds_has_suffix(name, ".nii") || ds_has_suffix(name, ".nii.gz");
}

/* lowercased name without .nii[.gz] and without a leading "CASE_" prefix */
static void modality_key(const char *file, const char *case_name, char *key, size_t n) {
    size_t len = strlen(file) - (ds_has_suffix(file, ".nii.gz") ? 7 : 4);
    size_t cl = strlen(case_name);
    const char *s = file;
    if (len > cl + 1 && !strncasecmp(file, case_name, cl) && strchr("_-.", file[cl])) s += cl + 1, len -= cl + 1;
    if (len >= n) len = n - 1;
    for (size_t i = 0; i < len; i++) key[i] = (char)tolower((unsigned char)s[i]);
    key[len] = 0;
}

static bool key_is_label(const char *key) {
    static const char *const toks[] = {"seg", "label", "labels", "ot", "otmulticlass", "gt", "truth", "groundtruth"};
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", key);
    for (char *t = strtok_r(buf, "_-.", &save); t; t = strtok_r(NULL, "_-.", &save))
        for (size_t i = 0; i < sizeof toks / sizeof *toks; i++)
            if (!strcmp(t, toks[i])) return true;
    return false;
}

static bool discover_brats(segc_dataset *ds, med_priv *p, const char *dir, char *err, size_t n) {
    char **cases;
    int64_t nc;
    if (!ds_list_dir(dir, true, NULL, NULL, &cases, &nc, err, n)) return false;
    bool ok = true;
    char first_keys[16][128];
    p->files = calloc((size_t)(nc ? nc : 1), sizeof *p->files);
    if (!p->files) ok = segc_errorf(err, n, "brats: out of memory");
    for (int64_t c = 0; ok && c < nc; c++) {
        char *cdir = ds_join(dir, cases[c]);
        char **files = NULL;
        int64_t nf = 0;
        ok = cdir && ds_list_dir(cdir, false, is_nifti, NULL, &files, &nf, err, n);
        if (ok && nf == 0) {   /* not a case folder */
            ds_free_strv(files, nf);
            free(cdir);
            continue;
        }
        med_files *f = &p->files[p->n_cases];
        f->name = ds_strdup(cases[c]);
        f->chan = calloc(16, sizeof *f->chan);
        int nch = 0;
        char keys[16][128];
        for (int64_t j = 0; ok && j < nf; j++) {
            char key[128];
            modality_key(files[j], cases[c], key, sizeof key);
            char *path = ds_join(cdir, files[j]);
            char **slot = NULL;
            if (strstr(key, "mask")) slot = &f->mask;
            else if (key_is_label(key)) slot = &f->label;
            if (slot && *slot) ok = segc_errorf(err, n, "%s: two %s files (%s and %s)", cdir, slot == &f->mask ? "mask" : "label", *slot, path);
            else if (slot) *slot = path, path = NULL;
            else if (nch == 16) ok = segc_errorf(err, n, "%s: more than 16 modality files", cdir);
            else {
                snprintf(keys[nch], sizeof keys[nch], "%s", key);
                f->chan[nch++] = path, path = NULL;
            }
            free(path);
        }
        /* modalities in key order, and the same keys in every case */
        for (int a = 0; ok && a < nch; a++)
            for (int b = a + 1; b < nch; b++)
                if (strcmp(keys[b], keys[a]) < 0) {
                    char t[128], *tp = f->chan[a];
                    memcpy(t, keys[a], 128), memcpy(keys[a], keys[b], 128), memcpy(keys[b], t, 128);
                    f->chan[a] = f->chan[b], f->chan[b] = tp;
                }
        if (ok && nch == 0) ok = segc_errorf(err, n, "%s: no modality files (only label/mask)", cdir);
        if (ok && p->n_cases == 0) {
            p->C = nch;
            memcpy(first_keys, keys, sizeof keys);
        } else if (ok) {
            bool same = nch == p->C;
            for (int k = 0; same && k < nch; k++) same = !strcmp(keys[k], first_keys[k]);
            if (!same) ok = segc_errorf(err, n, "%s: modalities differ from the first case's (%d files, first '%s')", cdir, nch, keys[0]);
        }
        if (!f->name || !f->chan) ok = segc_errorf(err, n, "brats: out of memory");
        p->n_cases++;   /* counted even on failure so close frees it */
        if (!ok && p->C == 0) p->C = nch;
        ds_free_strv(files, nf);
        free(cdir);
    }
    ds_free_strv(cases, nc);
    if (ok && p->n_cases == 0) ok = segc_errorf(err, n, "brats: no case folders with .nii/.nii.gz files in %s", dir);
    (void)ds;
    return ok;
}

static bool discover_msd(segc_dataset *ds, med_priv *p, const char *root, bool train, char *err, size_t n) {
    char *idir = ds_join(root, train ? "imagesTr" : "imagesTs"), *ldir = train ? ds_join(root, "labelsTr") : NULL;
    char **files = NULL;
    int64_t nf = 0;
    bool ok = idir && (!train || ldir);
    if (!ok) segc_errorf(err, n, "msd: out of memory");
    if (ok) ok = ds_list_dir(idir, false, is_nifti, NULL, &files, &nf, err, n);
    if (ok && nf == 0) ok = segc_errorf(err, n, "msd: no .nii/.nii.gz files in %s", idir);
    if (ok) p->files = calloc((size_t)nf, sizeof *p->files), ok = p->files != NULL;
    for (int64_t i = 0; ok && i < nf; i++) {
        med_files *f = &p->files[i];
        p->n_cases++;
        f->name = ds_strdup(files[i]);
        f->chan = calloc(1, sizeof *f->chan);
        ok = f->name && f->chan && (f->chan[0] = ds_join(idir, files[i]));
        if (ok && train) ok = (f->label = ds_join(ldir, files[i])) != NULL;
        if (!ok) segc_errorf(err, n, "msd: out of memory");
    }
    /* channel count from the first volume's 4th dimension */
    if (ok) {
        segc_nifti_info info;
        ok = segc_nifti_read_info(p->files[0].chan[0], &info, err, n);
        if (ok && info.dim[4] * info.dim[5] * info.dim[6] != 1)
            ok = segc_errorf(err, n, "%s: expected a 3-D or 4-D volume, found %d dims", p->files[0].chan[0], info.ndim);
        if (ok && info.dim[3] > 16) ok = segc_errorf(err, n, "%s: %lld channels (at most 16)", p->files[0].chan[0], (long long)info.dim[3]);
        if (ok) p->C = (int)info.dim[3];
    }
    ds_free_strv(files, nf);
    free(idir);
    free(ldir);
    (void)ds;
    return ok;
}

/* MSD dataset.json "labels": {"0": "background", ...} */
static bool msd_classes(segc_dataset *ds, const char *root, char *err, size_t n) {
    char *path = ds_join(root, "dataset.json");
    void *buf = NULL;
    size_t len;
    bool ok = path && segc_read_file(path, &buf, &len, err, n);
    cJSON *js = ok ? cJSON_ParseWithLength(buf, len) : NULL;
    if (ok && !js) ok = segc_errorf(err, n, "%s: malformed JSON", path);
    const cJSON *labels = js ? cJSON_GetObjectItemCaseSensitive(js, "labels") : NULL;
    if (ok && !cJSON_IsObject(labels)) ok = segc_errorf(err, n, "%s: no \"labels\" object", path);
    const char *names[255] = {0};
    int k = 0;
    const cJSON *it;
    if (ok) cJSON_ArrayForEach(it, labels) {
        char *end;
        long id = strtol(it->string, &end, 10);
        if (*end || id < 0 || id >= 255 || !cJSON_IsString(it) || names[id]) {
            ok = segc_errorf(err, n, "%s: labels entry \"%s\" must map a unique id 0..254 to a name", path, it->string);
            break;
        }
        names[id] = it->valuestring;
        if (id + 1 > k) k = (int)id + 1;
    }
    for (int i = 0; ok && i < k; i++)
        if (!names[i]) ok = segc_errorf(err, n, "%s: labels skip id %d", path, i);
    if (ok) ok = ds_set_classes(ds, k, names, NULL);
    cJSON_Delete(js);
    free(buf);
    free(path);
    return ok;
}

static const char *const brats_names[5] = {"background", "necrosis", "edema", "non-enhancing tumour",
                                           "enhancing tumour"};
static const uint8_t brats_palette[5][3] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 0}};

/* k-fold: keep the training cases of fold part `fold` (val) or of every
 * other part (train); see segc_dataset_opts. Cases arrive sorted by name. */
static bool select_fold(med_priv *p, int fold, int num_folds, bool val, const char *kind, char *err, size_t n) {
    int64_t nc = p->n_cases;
    if (nc < num_folds)
        return segc_errorf(err, n, "%s: data.num_folds %d exceeds the %lld training cases", kind, num_folds, (long long)nc);
    int64_t *perm = malloc(sizeof *perm * (size_t)nc);
    bool *keep = calloc((size_t)nc, sizeof *keep);
    if (!perm || !keep) {
        free(perm), free(keep);
        return segc_errorf(err, n, "%s: out of memory", kind);
    }
    segc_permutation(12345, 0, nc, perm);
    /* KFold sizes: the first nc % k parts get one extra case */
    int64_t start = 0;
    for (int k = 0; k < num_folds; k++) {
        int64_t size = nc / num_folds + (k < nc % num_folds);
        for (int64_t j = start; j < start + size; j++) keep[perm[j]] = (k == fold) == val;
        start += size;
    }
    int64_t m = 0;
    for (int64_t c = 0; c < nc; c++) {
        if (keep[c]) p->files[m++] = p->files[c];
        else med_files_free(&p->files[c], p->msd);
    }
    p->n_cases = m;
    free(perm);
    free(keep);
    return true;
}

segc_dataset *ds_open_medical(const char *kind, const char *root, const char *split, const segc_dataset_opts *o,
                              char *err, size_t n) {
    bool msd = !strcmp(kind, "msd");
    segc_dataset *ds = ds_new(kind, root, o);
    med_priv *p = calloc(1, sizeof *p);
    char *dir = NULL;
    bool ok = ds && p;
    if (!ok) {
        segc_errorf(err, n, "%s: out of memory", kind);
        free(p);
        segc_dataset_close(ds);
        return NULL;
    }
    ds->priv = p, ds->vt = &med_vtable;
    p->msd = msd;
    p->axis = o->slice_axis;
    if (p->axis < 0 || p->axis > 2) ok = segc_errorf(err, n, "%s: slice_axis must be 0, 1 or 2, found %d", kind, p->axis);
    bool folds = o->num_folds != 0, fold_val = false;
    if (ok && folds) {
        if (o->num_folds < 2)
            ok = segc_errorf(err, n, "%s: data.num_folds must be 0 (off) or >= 2, found %d", kind, o->num_folds);
        else if (o->fold < 0 || o->fold >= o->num_folds)
            ok = segc_errorf(err, n, "%s: data.fold %d out of range for data.num_folds %d (expected 0..%d)", kind,
                             o->fold, o->num_folds, o->num_folds - 1);
        else if (split && strcmp(split, "train") && strcmp(split, "val"))
            ok = segc_errorf(err, n, "%s: with data.num_folds the split must be train or val, found '%s'", kind, split);
        fold_val = split && !strcmp(split, "val");
        split = "train";   /* both fold sides come from the training cases */
    }
    if (ok && msd) {
        bool train = !split || !strcmp(split, "train") || !strcmp(split, "Tr");
        if (!train && strcmp(split, "test") && strcmp(split, "Ts"))
            ok = segc_errorf(err, n, "msd: split must be train (imagesTr) or test (imagesTs), found '%s'", split);
        if (ok) ok = msd_classes(ds, root, err, n) && discover_msd(ds, p, root, train, err, n);
    } else if (ok) {
        if (split) dir = ds_join(root, split);
        else {
            dir = ds_join(root, "train");
            if (dir && !ds_is_dir(dir)) free(dir), dir = ds_strdup(root);
        }
        if (!dir) ok = segc_errorf(err, n, "brats: out of memory");
        else if (!ds_is_dir(dir)) {
            char avail[256];
            ds_available_dirs(root, avail, sizeof avail);
            ok = segc_errorf(err, n, "brats: split folder %s not found (found: %s)", dir, avail);
        }
        if (ok) ok = ds_set_classes(ds, 5, brats_names, brats_palette) && discover_brats(ds, p, dir, err, n);
    }
    if (ok && folds) ok = select_fold(p, o->fold, o->num_folds, fold_val, kind, err, n);
    if (ok) ds_lut_identity(ds);
    /* preload when it fits the budget */
    int64_t budget = 4096;
    const char *env = getenv("SEGC_MEDICAL_CACHE_MB");
    if (env && *env) budget = atoll(env);
    int64_t total = 0;
    for (int64_t c = 0; ok && c < p->n_cases; c++) {
        segc_nifti_info info;
        ok = segc_nifti_read_info(p->files[c].chan[0], &info, err, n);
        if (ok) total += info.dim[0] * info.dim[1] * info.dim[2] * ((int64_t)p->C * 4 + 1);
    }
    if (ok && total <= budget * (1LL << 20)) {
        p->cache = calloc((size_t)p->n_cases, sizeof *p->cache);
        if (!p->cache) ok = segc_errorf(err, n, "%s: out of memory", kind);
    }
    /* sample index: (case, slice), optionally only slices with brain */
    int64_t cap = 0;
    if (ok) {
        p->c_first = calloc((size_t)p->n_cases, sizeof *p->c_first);
        p->c_count = calloc((size_t)p->n_cases, sizeof *p->c_count);
        if (!p->c_first || !p->c_count) ok = segc_errorf(err, n, "%s: out of memory", kind);
    }
    for (int64_t c = 0; ok && c < p->n_cases; c++) {
        p->c_first[c] = ds->n;
        med_case tmp = {0}, *mc = p->cache ? &p->cache[c] : &tmp;
        if (p->cache || o->brain_slices_only) ok = load_case(ds, c, mc, err, n);
        else {   /* slice count from the header; volumes decoded per load */
            segc_nifti_info info;
            ok = segc_nifti_read_info(p->files[c].chan[0], &info, err, n);
            memcpy(mc->dim, info.dim, sizeof mc->dim);
        }
        for (int64_t s = 0; ok && s < mc->dim[p->axis]; s++) {
            if (o->brain_slices_only && !mc->has_brain[s]) continue;
            if (ds->n == cap) {
                cap = cap ? 2 * cap : 1024;
                int64_t *a = realloc(p->s_case, cap * sizeof *a);
                if (a) p->s_case = a;
                int32_t *b = realloc(p->s_slice, cap * sizeof *b);
                if (b) p->s_slice = b;
                if (!a || !b) { ok = segc_errorf(err, n, "%s: out of memory", kind); break; }
            }
            p->s_case[ds->n] = c, p->s_slice[ds->n] = (int32_t)s, ds->n++;
        }
        if (ok) p->c_count[c] = ds->n - p->c_first[c];
        if (ok && !p->cache) med_case_free(mc);
    }
    if (ok && ds->n == 0) ok = segc_errorf(err, n, "%s: no slices (brain_slices_only with empty masks?)", kind);
    /* "FILE@z=S" names for messages */
    if (ok) {
        ds->img_paths = calloc((size_t)ds->n, sizeof *ds->img_paths);
        ds->lbl_paths = calloc((size_t)ds->n, sizeof *ds->lbl_paths);
        ok = ds->img_paths && ds->lbl_paths;
        for (int64_t i = 0; ok && i < ds->n; i++) {
            const med_files *f = &p->files[p->s_case[i]];
            char buf[4200];
            snprintf(buf, sizeof buf, "%s@%c=%d", f->chan[0], "xyz"[p->axis], p->s_slice[i]);
            ok = (ds->img_paths[i] = ds_strdup(buf)) != NULL;
            if (ok && f->label) {
                snprintf(buf, sizeof buf, "%s@%c=%d", f->label, "xyz"[p->axis], p->s_slice[i]);
                ok = (ds->lbl_paths[i] = ds_strdup(buf)) != NULL;
            }
        }
        if (!ok) segc_errorf(err, n, "%s: out of memory", kind);
    }
    free(dir);
    if (!ok) {
        segc_dataset_close(ds);
        return NULL;
    }
    return ds;
}

/* ---------------------------------------------------------------- volumes */

bool ds_medical_sample_volume(const segc_dataset *ds, int64_t i, int64_t *volume, int *slice) {
    const med_priv *p = ds->priv;
    if (volume) *volume = p->s_case[i];
    if (slice) *slice = p->s_slice[i];
    return true;
}

int64_t ds_medical_n_volumes(const segc_dataset *ds) { return ((const med_priv *)ds->priv)->n_cases; }

bool ds_medical_volume_info(const segc_dataset *ds, int64_t v, segc_volume_info *out, char *err, size_t n) {
    const med_priv *p = ds->priv;
    const med_files *f = &p->files[v];
    out->slice_axis = p->axis;
    out->first_sample = p->c_first[v];
    out->n_samples = p->c_count[v];
    out->name = f->name;
    out->image_path = f->chan[0];
    out->label_path = f->label;
    return segc_nifti_read_geometry(f->chan[0], out->dim, out->affine, &out->sform_code, &out->qform_code, err, n);
}
