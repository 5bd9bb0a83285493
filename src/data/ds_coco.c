/* COCO detection: annotations/instances_SPLIT.json (cJSON) with images in
 * ROOT/SPLIT/. Boxes xywh -> x1y1x2y2, category ids remapped to 0..K-1 in
 * sorted id order, iscrowd kept; boxes mmdet drops (w or h < 1, area <= 0,
 * no overlap with the image) are dropped. Images in file-name order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ds_internal.h"
#include "segc/coco_eval.h"

typedef struct id_pos {
    int64_t id;
    int64_t pos;
} id_pos;

static int cmp_id_pos(const void *a, const void *b) {
    const id_pos *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static const id_pos *find_id(const id_pos *v, int64_t n, int64_t id) {
    int64_t lo = 0, hi = n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v[mid].id == id) return &v[mid];
        if (v[mid].id < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

/* integer-valued JSON number within +-2^53 */
static bool json_int(const cJSON *o, const char *key, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(fabs(d) <= 9007199254740992.0) || d != floor(d)) return false;
    *out = (int64_t)d;
    return true;
}

void ds_coco_free(ds_coco_index *c) {
    if (!c) return;
    ds_free_strv(c->file_names, c->n_images);
    ds_free_strv(c->class_names, c->n_classes);
    free(c->image_ids);
    free(c->cat_ids);
    free(c->heights);
    free(c->widths);
    free(c->box_start);
    free(c->boxes);
    free(c->labels);
    free(c->crowd);
    free(c->ev_image);
    free(c->ev_label);
    free(c->ev_bbox);
    free(c->ev_area);
    free(c->ev_crowd);
    free(c->ev_id);
    memset(c, 0, sizeof *c);
}

typedef struct img_rec {
    const char *file;
    int64_t id;
    int h, w;
} img_rec;

static int cmp_img(const void *a, const void *b) {
    const img_rec *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : (x->id < y->id ? -1 : x->id > y->id);
}

static void line_col(const char *json, size_t len, const char *at, int *line, int *col) {
    *line = 1, *col = 1;
    if (!at || at < json || at > json + len) return;
    for (const char *p = json; p < at; p++) {
        if (*p == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

/* Why annotation an is bad input ("" and false when it is fine): missing or non-integer ids, a bbox
 * that is not 4 finite numbers, an unknown image or category id, zero area (w, h or the "area"
 * field <= 0) or a box entirely outside its image. Fills the parsed fields. */
static bool ann_problem(const cJSON *an, const id_pos *img_ids, int64_t ni, const id_pos *cat_ids, int nc,
                        const img_rec *imgs, double v[4], int64_t *img_id, int64_t *cat_id, int64_t *crowd,
                        const id_pos **ip, const id_pos **cp, char *why, size_t n) {
    const cJSON *bb = cJSON_GetObjectItemCaseSensitive(an, "bbox");
    const cJSON *area = cJSON_GetObjectItemCaseSensitive(an, "area");
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(an, "iscrowd");
    why[0] = 0;
    if (!json_int(an, "image_id", img_id) || !json_int(an, "category_id", cat_id) || !cJSON_IsArray(bb) ||
        cJSON_GetArraySize(bb) != 4 || (cr && !json_int(an, "iscrowd", crowd)) || (area && !cJSON_IsNumber(area)))
        return snprintf(why, n, "expected integer image_id, category_id, iscrowd, a number area and a 4-number bbox"),
               true;
    for (int q = 0; q < 4; q++) {
        const cJSON *x = cJSON_GetArrayItem(bb, q);
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
            return snprintf(why, n, "bbox entries must be finite numbers"), true;
        v[q] = x->valuedouble;
    }
    if (!(*ip = find_id(img_ids, ni, *img_id)))
        return snprintf(why, n, "unknown image id %lld (not in \"images\")", (long long)*img_id), true;
    if (!(*cp = find_id(cat_ids, nc, *cat_id)))
        return snprintf(why, n, "unknown category id %lld (not in \"categories\")", (long long)*cat_id), true;
    if (v[2] <= 0 || v[3] <= 0 || (area && area->valuedouble <= 0))
        return snprintf(why, n, "zero area: bbox [%g, %g, %g, %g], area %g", v[0], v[1], v[2], v[3],
                        area ? area->valuedouble : v[2] * v[3]),
               true;
    const img_rec *r = &imgs[(*ip)->pos];
    double iw = fmin(v[0] + v[2], r->w) - fmax(v[0], 0), ih = fmin(v[1] + v[3], r->h) - fmax(v[1], 0);
    if (iw <= 0 || ih <= 0)
        return snprintf(why, n, "bbox [%g, %g, %g, %g] lies outside its %dx%d image (image_id %lld)", v[0], v[1], v[2],
                        v[3], r->w, r->h, (long long)*img_id),
               true;
    return false;
}

bool ds_coco_parse(const char *json, size_t len, const char *what, ds_coco_index *out, char *err, size_t errlen) {
    return ds_coco_parse_opts(json, len, what, false, out, err, errlen);
}

bool ds_coco_parse_opts(const char *json, size_t len, const char *what, bool skip_bad, ds_coco_index *out, char *err,
                        size_t errlen) {
    memset(out, 0, sizeof *out);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        int line, col;
        line_col(json, len, end, &line, &col);
        return segc_errorf(err, errlen, "%s: malformed JSON at line %d column %d", what, line, col);
    }
    bool ok = true;
    img_rec *imgs = NULL;
    id_pos *img_ids = NULL, *cat_ids = NULL;
    int64_t *counts = NULL;
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(root, "images");
    const cJSON *anns = cJSON_GetObjectItemCaseSensitive(root, "annotations");
    const cJSON *cats = cJSON_GetObjectItemCaseSensitive(root, "categories");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(images) || !cJSON_IsArray(cats) || (anns && !cJSON_IsArray(anns))) {
        ok = segc_errorf(err, errlen, "%s: expected an object with \"images\" and \"categories\" arrays (and \"annotations\")",
                         what);
        goto done;
    }
    /* categories, sorted by id */
    int nc = cJSON_GetArraySize(cats);
    if (nc < 1 || nc > 255) {
        ok = segc_errorf(err, errlen, "%s: expected 1..255 categories, found %d", what, nc);
        goto done;
    }
    cat_ids = malloc((size_t)nc * sizeof *cat_ids);
    if (!cat_ids) goto oom;
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cats) {
        int64_t id;
        if (!json_int(c, "id", &id) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "name"))) {
            ok = segc_errorf(err, errlen, "%s: category %d lacks an integer \"id\" or a string \"name\"", what, k);
            goto done;
        }
        cat_ids[k] = (id_pos){id, k}, k++;
    }
    qsort(cat_ids, (size_t)nc, sizeof *cat_ids, cmp_id_pos);
    out->n_classes = nc;
    out->class_names = calloc((size_t)nc, sizeof *out->class_names);
    out->cat_ids = malloc((size_t)nc * sizeof *out->cat_ids);
    if (!out->class_names || !out->cat_ids) goto oom;
    for (int j = 0; j < nc; j++) {
        if (j && cat_ids[j].id == cat_ids[j - 1].id) {
            ok = segc_errorf(err, errlen, "%s: duplicate category id %lld", what, (long long)cat_ids[j].id);
            goto done;
        }
        const cJSON *cj = cJSON_GetArrayItem(cats, (int)cat_ids[j].pos);
        out->class_names[j] = ds_strdup(cJSON_GetObjectItemCaseSensitive(cj, "name")->valuestring);
        if (!out->class_names[j]) goto oom;
        out->cat_ids[j] = cat_ids[j].id;
        cat_ids[j].pos = j;   /* now: contiguous label */
    }
    /* images, sorted by file name */
    int64_t ni = cJSON_GetArraySize(images);
    imgs = calloc((size_t)(ni ? ni : 1), sizeof *imgs);
    img_ids = malloc((size_t)(ni ? ni : 1) * sizeof *img_ids);
    counts = calloc((size_t)(ni ? ni : 1), sizeof *counts);
    if (!imgs || !img_ids || !counts) goto oom;
    int64_t i = 0;
    const cJSON *im;
    cJSON_ArrayForEach(im, images) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(im, "file_name");
        int64_t id, w, h;
        if (!json_int(im, "id", &id) || !json_int(im, "width", &w) || !json_int(im, "height", &h) ||
            !cJSON_IsString(fn)) {
            ok = segc_errorf(err, errlen, "%s: image %lld lacks integer \"id\", \"width\", \"height\" or string \"file_name\"",
                             what, (long long)i);
            goto done;
        }
        const char *f = fn->valuestring;
        if (w < 1 || h < 1 || w > 1000000 || h > 1000000) {
            ok = segc_errorf(err, errlen, "%s: image %s has size %lldx%lld", what, f, (long long)w, (long long)h);
            goto done;
        }
        if (!f[0] || f[0] == '/' || strstr(f, "..")) {
            ok = segc_errorf(err, errlen, "%s: image file_name '%s' must be a relative path inside the image folder", what, f);
            goto done;
        }
        imgs[i] = (img_rec){f, id, (int)h, (int)w};
        i++;
    }
    qsort(imgs, (size_t)ni, sizeof *imgs, cmp_img);
    for (i = 0; i < ni; i++) img_ids[i] = (id_pos){imgs[i].id, i};
    qsort(img_ids, (size_t)ni, sizeof *img_ids, cmp_id_pos);
    for (i = 1; i < ni; i++)
        if (img_ids[i].id == img_ids[i - 1].id) {
            ok = segc_errorf(err, errlen, "%s: duplicate image id %lld", what, (long long)img_ids[i].id);
            goto done;
        }
    /* annotations: two passes (count per image, then fill in JSON order); a bad one (see
     * ann_problem) fails naming its id, or with skip_bad is warned about (first pass), counted, skipped */
    for (int pass = 0; pass < 2; pass++) {
        int64_t a = 0, entry = -1;
        const cJSON *an;
        cJSON_ArrayForEach(an, anns) {
            entry++;
            int64_t img_id = 0, cat_id = 0, crowd = 0, ann_id;
            const cJSON *area = cJSON_GetObjectItemCaseSensitive(an, "area");
            double v[4] = {0, 0, 0, 0};
            const id_pos *ip = NULL, *cp = NULL;
            char why[160];
            if (ann_problem(an, img_ids, ni, cat_ids, nc, imgs, v, &img_id, &cat_id, &crowd, &ip, &cp, why, sizeof why)) {
                char idtext[48];
                if (json_int(an, "id", &ann_id)) snprintf(idtext, sizeof idtext, "annotation id %lld", (long long)ann_id);
                else snprintf(idtext, sizeof idtext, "annotation %lld (no id)", (long long)entry);
                if (!skip_bad) {
                    ok = segc_errorf(err, errlen, "%s: %s: %s (data.skip_bad=true skips such annotations)", what,
                                     idtext, why);
                    goto done;
                }
                if (pass == 0) {
                    if (out->n_skipped < 10) fprintf(stderr, "warning: %s: %s: %s (skipped)\n", what, idtext, why);
                    out->n_skipped++;
                }
                continue;
            }
            if (pass == 1) {
                int64_t id;
                out->ev_image[a] = ip->pos, out->ev_label[a] = (int32_t)cp->pos, out->ev_crowd[a] = crowd != 0;
                memcpy(out->ev_bbox + 4 * a, v, sizeof v);
                out->ev_area[a] = area ? area->valuedouble : v[2] * v[3];
                out->ev_id[a] = json_int(an, "id", &id) ? id : a + 1;
            }
            a++;
            if (v[2] < 1 || v[3] < 1) continue;   /* mmdet drops these from training (evaluation keeps them) */
            if (pass == 0) {
                counts[ip->pos]++;
                continue;
            }
            int64_t b = out->box_start[ip->pos] + counts[ip->pos]++;
            out->boxes[4 * b] = (float)v[0], out->boxes[4 * b + 1] = (float)v[1];
            out->boxes[4 * b + 2] = (float)(v[0] + v[2]), out->boxes[4 * b + 3] = (float)(v[1] + v[3]);
            out->labels[b] = (int32_t)cp->pos;
            out->crowd[b] = crowd != 0;
        }
        if (pass == 0) {
            out->box_start = malloc((size_t)(ni + 1) * sizeof *out->box_start);
            if (!out->box_start) goto oom;
            out->box_start[0] = 0;
            for (i = 0; i < ni; i++) out->box_start[i + 1] = out->box_start[i] + counts[i], counts[i] = 0;
            out->n_boxes = out->box_start[ni];
            size_t nb = (size_t)(out->n_boxes ? out->n_boxes : 1);
            out->boxes = malloc(nb * 4 * sizeof *out->boxes);
            out->labels = malloc(nb * sizeof *out->labels);
            out->crowd = malloc(nb);
            if (!out->boxes || !out->labels || !out->crowd) goto oom;
            out->ev_n = a;
            if (out->n_skipped)
                fprintf(stderr, "warning: %s: %lld bad annotation%s skipped (data.skip_bad)\n", what,
                        (long long)out->n_skipped, out->n_skipped == 1 ? "" : "s");
            size_t ne = (size_t)(a ? a : 1);
            out->ev_image = malloc(ne * sizeof *out->ev_image);
            out->ev_label = malloc(ne * sizeof *out->ev_label);
            out->ev_bbox = malloc(ne * 4 * sizeof *out->ev_bbox);
            out->ev_area = malloc(ne * sizeof *out->ev_area);
            out->ev_crowd = malloc(ne);
            out->ev_id = malloc(ne * sizeof *out->ev_id);
            if (!out->ev_image || !out->ev_label || !out->ev_bbox || !out->ev_area || !out->ev_crowd || !out->ev_id)
                goto oom;
        }
    }
    out->n_images = ni;
    out->file_names = calloc((size_t)(ni ? ni : 1), sizeof *out->file_names);
    out->image_ids = malloc((size_t)(ni ? ni : 1) * sizeof *out->image_ids);
    out->heights = malloc((size_t)(ni ? ni : 1) * sizeof *out->heights);
    out->widths = malloc((size_t)(ni ? ni : 1) * sizeof *out->widths);
    if (!out->file_names || !out->image_ids || !out->heights || !out->widths) goto oom;
    for (i = 0; i < ni; i++) {
        if (!(out->file_names[i] = ds_strdup(imgs[i].file))) goto oom;
        out->image_ids[i] = imgs[i].id, out->heights[i] = imgs[i].h, out->widths[i] = imgs[i].w;
    }
    goto done;
oom:
    ok = segc_errorf(err, errlen, "%s: out of memory", what);
done:
    free(imgs);
    free(img_ids);
    free(cat_ids);
    free(counts);
    cJSON_Delete(root);
    if (!ok) ds_coco_free(out);
    return ok;
}

/* ------------------------------------------------------------------ dataset */

static bool coco_load(const segc_dataset *ds, int64_t i, segc_sample *out, char *err, size_t errlen) {
    const ds_coco_index *c = ds->priv;
    const char *path = ds->img_paths[i];
    segc_read_mode mode = ds->image_channels == 1 ? SEGC_READ_GRAY : SEGC_READ_RGB;
    if (!segc_image_read(path, mode, &out->img, err, errlen)) return false;
    if (out->img.h != c->heights[i] || out->img.w != c->widths[i])
        return segc_errorf(err, errlen, "%s: image is %dx%d (HxW) but the annotations say %dx%d", path, out->img.h,
                           out->img.w, c->heights[i], c->widths[i]);
    int64_t b0 = c->box_start[i], nb = c->box_start[i + 1] - b0;
    out->n_boxes = (int)nb;
    if (nb) {
        out->boxes = malloc((size_t)nb * 4 * sizeof *out->boxes);
        out->box_labels = malloc((size_t)nb * sizeof *out->box_labels);
        out->box_crowd = malloc((size_t)nb);
        if (!out->boxes || !out->box_labels || !out->box_crowd) return segc_errorf(err, errlen, "%s: out of memory", path);
        memcpy(out->boxes, c->boxes + 4 * b0, (size_t)nb * 4 * sizeof *out->boxes);
        memcpy(out->box_labels, c->labels + b0, (size_t)nb * sizeof *out->box_labels);
        memcpy(out->box_crowd, c->crowd + b0, (size_t)nb);
    }
    return true;
}

int segc_dataset_n_boxes(const segc_dataset *ds, int64_t i, bool include_crowd) {
    if (!ds || strcmp(ds->name, "coco") != 0 || !ds->priv || i < 0 || i >= ds->n) return -1;
    const ds_coco_index *c = ds->priv;
    int n = 0;
    for (int64_t b = c->box_start[i]; b < c->box_start[i + 1]; b++) n += include_crowd || !c->crowd[b];
    return n;
}

static void coco_close(segc_dataset *ds) {
    ds_coco_free(ds->priv);
    free(ds->priv);
    ds->priv = NULL;
}

static const segc_ds_vtable coco_vtable = {coco_load, NULL, coco_close};

segc_dataset *ds_open_coco(const char *root, const char *split, const segc_dataset_opts *o, char *err, size_t n) {
    char *json_path = NULL, *img_dir = NULL;
    if (ds_is_file(root)) {   /* ROOT/annotations/instances_X.json given directly: images in ROOT/X */
        const char *base = strrchr(root, '/');
        base = base ? base + 1 : root;
        if (strncmp(base, "instances_", 10) || !ds_has_suffix(base, ".json")) {
            segc_errorf(err, n, "coco: %s is not an instances_SPLIT.json file", root);
            return NULL;
        }
        char name[512], dir[4096];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(base) - 15), base + 10);
        snprintf(dir, sizeof dir, "%.*s..", (int)(base - root), root);
        json_path = ds_strdup(root);
        img_dir = ds_join(dir, name);   /* ROOT/annotations/../NAME */
    } else {
        const char *sp = split ? split : "train2017";
        char name[512];
        snprintf(name, sizeof name, "annotations/instances_%s.json", sp);
        json_path = ds_join(root, name);
        if (json_path && !ds_is_file(json_path)) {   /* "train" -> "train2017" */
            snprintf(name, sizeof name, "annotations/instances_%s2017.json", sp);
            char *alt = ds_join(root, name);
            if (ds_is_file(alt)) {
                free(json_path);
                json_path = alt;
                snprintf(name, sizeof name, "%s2017", sp);
                img_dir = ds_join(root, name);
            } else
                free(alt);
        }
        if (!img_dir) img_dir = ds_join(root, sp);
    }
    segc_dataset *ds = ds_new("coco", root, o);
    ds_coco_index *c = calloc(1, sizeof *c);
    void *buf = NULL;
    size_t len = 0;
    bool ok = json_path && img_dir && ds && c;
    if (!ok) segc_errorf(err, n, "coco: out of memory");
    if (ok && !ds_is_file(json_path))
        ok = segc_errorf(err, n, "coco: annotation file %s not found", json_path);
    if (ok)
        ok = segc_read_file(json_path, &buf, &len, err, n) &&
             ds_coco_parse_opts(buf, len, json_path, o && o->skip_bad, c, err, n);
    if (ok && !ds_is_dir(img_dir)) ok = segc_errorf(err, n, "coco: image folder %s not found", img_dir);
    if (ok && c->n_images == 0) ok = segc_errorf(err, n, "%s: no images", json_path);
    if (ok) {
        ds->vt = &coco_vtable;
        ds->priv = c;
        c = NULL;
        const ds_coco_index *ci = ds->priv;
        ds->img_paths = calloc((size_t)ci->n_images, sizeof *ds->img_paths);
        ok = ds->img_paths && ds_set_classes(ds, ci->n_classes, (const char *const *)ci->class_names, NULL);
        if (ok) ds->n = ci->n_images;
        for (int64_t i = 0; ok && i < ci->n_images; i++) ok = (ds->img_paths[i] = ds_join(img_dir, ci->file_names[i])) != NULL;
        if (!ok) segc_errorf(err, n, "coco: out of memory");
    }
    if (c) {
        ds_coco_free(c);
        free(c);
    }
    free(buf);
    free(json_path);
    free(img_dir);
    if (!ok) {
        segc_dataset_close(ds);
        return NULL;
    }
    return ds;
}

int64_t segc_dataset_coco_image_id(const segc_dataset *ds, int64_t i) {
    if (!segc_dataset_is_detection(ds) || i < 0 || i >= ds->n) return -1;
    return ((const ds_coco_index *)ds->priv)->image_ids[i];
}

int64_t segc_dataset_coco_category_id(const segc_dataset *ds, int k) {
    if (!segc_dataset_is_detection(ds) || k < 0 || k >= ds->n_classes) return -1;
    return ((const ds_coco_index *)ds->priv)->cat_ids[k];
}

bool segc_dataset_coco_gt(const segc_dataset *ds, segc_coco_gt *gt) {
    if (!segc_dataset_is_detection(ds) || !ds->priv) return false;
    const ds_coco_index *c = ds->priv;
    *gt = (segc_coco_gt){.n_images = c->n_images,
                         .image_ids = c->image_ids,
                         .n_classes = c->n_classes,
                         .cat_ids = c->cat_ids,
                         .class_names = (const char *const *)c->class_names,
                         .n_anns = c->ev_n,
                         .ann_image = c->ev_image,
                         .ann_label = c->ev_label,
                         .ann_bbox = c->ev_bbox,
                         .ann_area = c->ev_area,
                         .ann_crowd = c->ev_crowd,
                         .ann_id = c->ev_id};
    return true;
}
