/* COCO results files (coco_eval.h): [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}],
 * the format pycocotools' COCO.loadRes reads. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "segc/coco_eval.h"
#include "segc/core.h"
#include "segc/image_io.h"

/* shortest %.Ng that reads back as the same double */
static void fmt_double(char *buf, size_t n, double v) {
    for (int p = 9; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

bool segc_coco_results_begin(segc_coco_results_writer *w, const char *path, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    if (snprintf(w->path, sizeof w->path, "%s", path) >= (int)sizeof w->path) {
        snprintf(err, errlen, "%s: path too long", path);
        return false;
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    w->f = fopen(tmp, "w");
    if (!w->f) {
        snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        return false;
    }
    fputc('[', w->f);
    return true;
}

bool segc_coco_results_add(segc_coco_results_writer *w, const segc_coco_gt *gt, const segc_detections *d,
                           const int64_t *image_index, char *err, size_t errlen) {
    for (int i = 0; i < d->n_images; i++) {
        int64_t img = image_index[i];
        if (img < 0 || img >= gt->n_images) {
            snprintf(err, errlen, "%s: image index %lld outside 0..%lld", w->path, (long long)img,
                     (long long)gt->n_images - 1);
            return false;
        }
        for (int64_t j = d->off[i]; j < d->off[i + 1]; j++) {
            const segc_detection *x = &d->det[j];
            if (x->label < 0 || x->label >= gt->n_classes) {
                snprintf(err, errlen, "%s: detection label %d outside 0..%d", w->path, (int)x->label,
                         gt->n_classes - 1);
                return false;
            }
            double v[5] = {x->box[0], x->box[1], (double)x->box[2] - (double)x->box[0],
                           (double)x->box[3] - (double)x->box[1], x->score};
            char s[5][32];
            for (int q = 0; q < 5; q++) fmt_double(s[q], sizeof s[q], v[q]);
            fprintf(w->f, "%s{\"image_id\":%lld,\"category_id\":%lld,\"bbox\":[%s,%s,%s,%s],\"score\":%s}",
                    w->n ? ",\n" : "\n", (long long)gt->image_ids[img], (long long)gt->cat_ids[x->label], s[0], s[1],
                    s[2], s[3], s[4]);
            w->n++;
        }
    }
    if (ferror(w->f)) {
        snprintf(err, errlen, "%s: write failed", w->path);
        return false;
    }
    return true;
}

bool segc_coco_results_end(segc_coco_results_writer *w, char *err, size_t errlen) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", w->path);
    fputs(w->n ? "\n]\n" : "]\n", w->f);
    bool ok = !ferror(w->f);
    ok = (fclose(w->f) == 0) && ok;
    w->f = NULL;
    if (!ok || rename(tmp, w->path) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", w->path, strerror(errno));
        unlink(tmp);
        return false;
    }
    return true;
}

void segc_coco_results_abort(segc_coco_results_writer *w) {
    if (!w->f) return;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", w->path);
    fclose(w->f);
    w->f = NULL;
    unlink(tmp);
}

/* ---- reading ---- */

typedef struct id_ix {
    int64_t id, ix;
} id_ix;

static int cmp_id_ix(const void *a, const void *b) {
    const id_ix *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int64_t lookup(const id_ix *v, int64_t n, int64_t id) {
    int64_t lo = 0, hi = n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (v[mid].id == id) return v[mid].ix;
        if (v[mid].id < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static bool json_id(const cJSON *o, const char *key, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(fabs(d) <= 9007199254740992.0) || d != floor(d)) return false;
    *out = (int64_t)d;
    return true;
}

/* one entry -> its fields, or a message (without the file / entry prefix) */
static bool parse_entry(const cJSON *r, const id_ix *imgs, int64_t ni, const id_ix *cats, int nc, int64_t *img,
                        int32_t *label, double b[4], double *score, char *msg, size_t n) {
    int64_t iid, cid;
    const cJSON *bb = cJSON_GetObjectItemCaseSensitive(r, "bbox"), *sc = cJSON_GetObjectItemCaseSensitive(r, "score");
    if (!cJSON_IsObject(r)) return snprintf(msg, n, "expected an object"), false;
    if (!json_id(r, "image_id", &iid)) return snprintf(msg, n, "expected an integer \"image_id\""), false;
    if (!json_id(r, "category_id", &cid)) return snprintf(msg, n, "expected an integer \"category_id\""), false;
    if (!cJSON_IsArray(bb) || cJSON_GetArraySize(bb) != 4)
        return snprintf(msg, n, "expected \"bbox\": [x, y, w, h] (4 numbers)"), false;
    for (int q = 0; q < 4; q++) {
        const cJSON *x = cJSON_GetArrayItem(bb, q);
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
            return snprintf(msg, n, "bbox entry %d is not a finite number", q), false;
        b[q] = x->valuedouble;
    }
    if (!cJSON_IsNumber(sc) || !isfinite(sc->valuedouble))
        return snprintf(msg, n, "expected a finite number \"score\""), false;
    *score = sc->valuedouble;
    if ((*img = lookup(imgs, ni, iid)) < 0)
        return snprintf(msg, n, "image_id %lld is not an image of the ground truth", (long long)iid), false;
    int64_t k = lookup(cats, nc, cid);
    if (k < 0) return snprintf(msg, n, "category_id %lld is not a category of the ground truth", (long long)cid), false;
    *label = (int32_t)k;
    return true;
}

bool segc_coco_results_read(segc_coco_eval *e, const char *path, bool skip_bad, int64_t *n_read, int64_t *n_skipped,
                            char *err, size_t errlen) {
    const segc_coco_gt *g = segc_coco_eval_gt(e);
    void *buf = NULL;
    size_t len = 0;
    if (n_read) *n_read = 0;
    if (n_skipped) *n_skipped = 0;
    if (!segc_read_file(path, &buf, &len, err, errlen)) return false;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        int line = 1, col = 1;
        for (const char *p = buf; end && p < end && p < (const char *)buf + len; p++) {
            if (*p == '\n') line++, col = 1;
            else col++;
        }
        snprintf(err, errlen, "%s: malformed JSON at line %d column %d", path, line, col);
        free(buf);
        return false;
    }
    free(buf);
    bool ok = true;
    id_ix *imgs = malloc((size_t)(g->n_images ? g->n_images : 1) * sizeof *imgs);
    id_ix *cats = malloc((size_t)g->n_classes * sizeof *cats);
    if (!imgs || !cats) {
        ok = false;
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    for (int64_t i = 0; i < g->n_images; i++) imgs[i] = (id_ix){g->image_ids[i], i};
    qsort(imgs, (size_t)g->n_images, sizeof *imgs, cmp_id_ix);
    for (int k = 0; k < g->n_classes; k++) cats[k] = (id_ix){g->cat_ids[k], k};
    if (!cJSON_IsArray(root)) {
        ok = false;
        snprintf(err, errlen, "%s: expected a JSON array of {image_id, category_id, bbox, score}", path);
        goto done;
    }
    int64_t i = 0, skipped = 0, added = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, root) {
        int64_t img;
        int32_t label;
        double b[4], score;
        char msg[200];
        if (!parse_entry(r, imgs, g->n_images, cats, g->n_classes, &img, &label, b, &score, msg, sizeof msg)) {
            if (!skip_bad) {
                ok = false;
                snprintf(err, errlen, "%s: entry %lld: %s", path, (long long)i, msg);
                goto done;
            }
            if (skipped < 10) fprintf(stderr, "warning: %s: entry %lld: %s (skipped)\n", path, (long long)i, msg);
            skipped++;
        } else {
            if (!(ok = segc_coco_eval_add(e, img, label, b, score, err, errlen))) goto done;
            added++;
        }
        i++;
    }
    if (skipped)
        fprintf(stderr, "warning: %s: %lld of %lld entries skipped (skip_bad)\n", path, (long long)skipped,
                (long long)i);
    if (n_read) *n_read = added;
    if (n_skipped) *n_skipped = skipped;
done:
    free(imgs);
    free(cats);
    cJSON_Delete(root);
    return ok;
}
