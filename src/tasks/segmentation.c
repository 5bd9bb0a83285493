/* The segmentation evaluator (task.h): mmseg's split-wide pixel metrics
 * through segc_confusion, per-class Dice from the same counts, and
 * per-volume Dice over regions and foreground labels for medical data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "segc/task.h"
#include "task_internal.h"

/* One volume's counts: for every group (regions first, then foreground
 * labels 1..K-1) tp | pred | label, 3 * n_groups int64. */
typedef struct vol {
    int64_t id;
    int64_t *c;
} vol;

typedef struct vol_list {
    vol *v;
    int64_t n, cap;
} vol_list;

struct segc_evaluator {
    segc_eval_spec spec;
    char **names;            /* owned copy of spec.class_names (NULL when none given) */
    segc_confusion conf;
    int n_groups;            /* n_regions + num_classes - 1 */
    /* region membership per label bin, bit r = region r (bins 0..K-1) */
    uint8_t *region_mask;
    /* volumes with an id, sorted by id (so the mean over volumes sums in the
     * same order whatever order ids arrived or merged in), and anonymous
     * ones (volume_ids NULL: one volume per sample, never combined) */
    vol_list keyed, anon;
    /* validation loss x images in fixed point (2^-32 units): integer sums are the
     * same whatever order adds and merges (ranks, shards) come in */
    int64_t loss_sum;
    segc_coco_eval *det;     /* detection evaluators: everything is there (detection.c) */
    int64_t loss_n;
};

/* ---- specs ---- */

void segc_eval_spec_brats_regions(segc_eval_spec *s) {
    static const struct { const char *name; uint8_t labels[4]; int n; } r[3] = {
        {"WT", {1, 2, 3, 4}, 4}, {"TC", {1, 3, 4}, 3}, {"ET", {4}, 1}};
    memset(s->regions, 0, sizeof s->regions);
    for (int i = 0; i < 3; i++) {
        snprintf(s->regions[i].name, sizeof s->regions[i].name, "%s", r[i].name);
        memcpy(s->regions[i].labels, r[i].labels, (size_t)r[i].n);
        s->regions[i].n_labels = r[i].n;
    }
    s->n_regions = 3;
    s->per_volume = true;   /* the BraTS regions are per-volume metrics by definition */
}

static const char *class_label(const char *const *names, int j, char *buf, size_t n) {
    if (names && names[j]) return names[j];
    snprintf(buf, n, "%d", j);
    return buf;
}

/* Every metric name the spec yields, in result order; values left NaN.
 * One function so result, knows and the JSON agree on names. Returns false
 * when SEGC_TASK_MAX_METRICS is too small. */
static bool add_name(segc_eval_result *r, const char *fmt, const char *a, const char *b) {
    if (r->n >= SEGC_TASK_MAX_METRICS) return false;
    snprintf(r->names[r->n], sizeof r->names[r->n], fmt, a, b);
    r->values[r->n++] = NAN;
    return true;
}

static bool spec_names(const segc_eval_spec *s, segc_eval_result *r) {
    char nb[32];
    const int k = s->num_classes;
    r->n = 0;
    bool ok = add_name(r, "%s%s", "mIoU", "") && add_name(r, "%s%s", "mAcc", "") && add_name(r, "%s%s", "aAcc", "") &&
              add_name(r, "%s%s", "mDice", "");
    for (int j = 0; ok && j < k; j++) ok = add_name(r, "IoU.%s%s", class_label(s->class_names, j, nb, sizeof nb), "");
    for (int j = 0; ok && j < k; j++) ok = add_name(r, "Acc.%s%s", class_label(s->class_names, j, nb, sizeof nb), "");
    /* Dice.<class>: split-wide without per_volume, per-volume labels 1..K-1 with it */
    for (int j = s->per_volume ? 1 : 0; ok && j < k; j++)
        ok = add_name(r, "Dice.%s%s", class_label(s->class_names, j, nb, sizeof nb), "");
    if (s->per_volume) {
        for (int g = 0; ok && g < s->n_regions; g++) ok = add_name(r, "Dice_%s%s", s->regions[g].name, "");
        ok = ok && add_name(r, "%s%s", "pixel_mDice", "");
        for (int j = 0; ok && j < k; j++)
            ok = add_name(r, "pixel_Dice.%s%s", class_label(s->class_names, j, nb, sizeof nb), "");
    }
    return ok && add_name(r, "%s%s", "val_loss", "");   /* validation loss (NaN when none was added) */
}

static int find_name(const segc_eval_result *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->names[i], name)) return i;
    return -1;
}

bool segc_eval_spec_knows(const segc_eval_spec *s, const char *metric) {
    if (s && metric && s->task == SEGC_TASK_DETECTION) return det_spec_knows(s, metric);
    if (!s || !metric || s->task != SEGC_TASK_SEGMENTATION || s->num_classes < 1) return false;
    segc_eval_result *r = malloc(sizeof *r);
    if (!r) return false;
    bool ok = spec_names(s, r) && find_name(r, metric) >= 0;
    free(r);
    return ok;
}

bool segc_metric_lower_is_better(const char *name) { return name && strcasestr(name, "loss") != NULL; }

static const char *default_primary(const segc_eval_spec *s) { return s->per_volume ? "mDice" : "mIoU"; }

/* ---- evaluator lifetime ---- */

static void vols_clear(vol_list *l) {
    for (int64_t i = 0; i < l->n; i++) free(l->v[i].c);
    free(l->v);
    memset(l, 0, sizeof *l);
}

void segc_evaluator_free(segc_evaluator *e) {
    if (!e) return;
    segc_coco_eval_free(e->det);
    segc_confusion_free(&e->conf);
    if (e->names)
        for (int j = 0; j < e->spec.num_classes; j++) free(e->names[j]);
    free(e->names);
    free(e->region_mask);
    vols_clear(&e->keyed);
    vols_clear(&e->anon);
    free(e);
}

static bool check_spec(const segc_eval_spec *s, char *err, size_t errlen) {
    if (s->task != SEGC_TASK_SEGMENTATION) {
        snprintf(err, errlen, "evaluator_new: task %d has no evaluator (only segmentation)", (int)s->task);
        return false;
    }
    if (s->num_classes < 1 || s->num_classes > 255) {
        snprintf(err, errlen, "evaluator_new: num_classes must be in 1..255, found %d", s->num_classes);
        return false;
    }
    if (!memchr(s->primary, 0, sizeof s->primary)) {
        snprintf(err, errlen, "evaluator_new: primary metric name longer than %d characters",
                 (int)sizeof s->primary - 1);
        return false;
    }
    if (s->n_regions < 0 || s->n_regions > SEGC_TASK_MAX_REGIONS) {
        snprintf(err, errlen, "evaluator_new: n_regions must be in 0..%d, found %d", SEGC_TASK_MAX_REGIONS,
                 s->n_regions);
        return false;
    }
    if (s->n_regions > 0 && !s->per_volume) {
        snprintf(err, errlen, "evaluator_new: regions are per-volume metrics; set per_volume");
        return false;
    }
    for (int g = 0; g < s->n_regions; g++) {
        const segc_region *rg = &s->regions[g];
        if (!rg->name[0] || !memchr(rg->name, 0, sizeof rg->name) || rg->n_labels < 1 ||
            rg->n_labels > (int)sizeof rg->labels) {
            snprintf(err, errlen, "evaluator_new: region %d needs a name and 1..%d labels", g, (int)sizeof rg->labels);
            return false;
        }
        for (int i = 0; i < rg->n_labels; i++)
            if (rg->labels[i] >= s->num_classes) {
                snprintf(err, errlen, "evaluator_new: region %s: label %d outside 0..%d", rg->name, rg->labels[i],
                         s->num_classes - 1);
                return false;
            }
    }
    return true;
}

segc_evaluator *segc_evaluator_new(const segc_eval_spec *s, char *err, size_t errlen) {
    if (s && s->task == SEGC_TASK_DETECTION) {
        segc_evaluator *e = calloc(1, sizeof *e);
        if (!e) return snprintf(err, errlen, "evaluator_new: out of memory"), NULL;
        e->spec = *s;
        e->spec.coco_gt = NULL, e->spec.dataset = NULL, e->spec.class_names = NULL;   /* the copy holds them */
        if (!(e->det = det_eval_new(s, err, errlen))) return free(e), NULL;
        e->spec.class_names = segc_coco_eval_gt(e->det)->class_names;
        if (!s->primary[0]) snprintf(e->spec.primary, sizeof e->spec.primary, "bbox_mAP");
        return e;
    }
    if (!s || !check_spec(s, err, errlen)) {
        if (!s) snprintf(err, errlen, "evaluator_new: no spec");
        return NULL;
    }
    segc_evaluator *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    e->spec = *s;
    const int k = s->num_classes;
    /* the caller's class names need not outlive the evaluator */
    if (s->class_names) {
        e->names = calloc((size_t)k, sizeof *e->names);
        if (!e->names) goto oom;
        for (int j = 0; j < k; j++)
            if (s->class_names[j] && !(e->names[j] = strdup(s->class_names[j]))) goto oom;
        e->spec.class_names = (const char *const *)e->names;
    }
    if (!segc_confusion_init(&e->conf, k, s->ignore_index, err, errlen)) {
        segc_evaluator_free(e);
        return NULL;
    }
    e->n_groups = s->per_volume ? s->n_regions + k - 1 : 0;
    e->region_mask = calloc((size_t)k, 1);
    if (!e->region_mask) goto oom;
    for (int g = 0; g < s->n_regions; g++)
        for (int i = 0; i < s->regions[g].n_labels; i++) e->region_mask[s->regions[g].labels[i]] |= (uint8_t)(1u << g);
    if (s->primary[0] && !segc_eval_spec_knows(&e->spec, s->primary)) {
        snprintf(err, errlen, "evaluator_new: unknown primary metric \"%.31s\" (mIoU|mAcc|aAcc|mDice%s)", s->primary,
                 s->per_volume ? "|Dice_<region>|Dice.<class>" : "|IoU.<class>|Acc.<class>|Dice.<class>");
        segc_evaluator_free(e);
        return NULL;
    }
    if (!s->primary[0]) snprintf(e->spec.primary, sizeof e->spec.primary, "%s", default_primary(s));
    return e;
oom:
    snprintf(err, errlen, "evaluator_new: out of memory for %d classes", s->num_classes);
    segc_evaluator_free(e);
    return NULL;
}

void segc_evaluator_reset(segc_evaluator *e) {
    if (e->det) segc_coco_eval_reset(e->det);
    segc_confusion_reset(&e->conf);
    vols_clear(&e->keyed);
    vols_clear(&e->anon);
    e->loss_sum = 0;
    e->loss_n = 0;
}

#define LOSS_FIXED_SCALE 4294967296.0   /* 2^32 */

void segc_evaluator_add_loss(segc_evaluator *e, double loss, int64_t n_images) {
    /* NaN: the model could not take the whole image (slide-only input size): no loss for these images.
       The fixed-point sum holds |loss| < 2^31 / images; anything larger is not a usable loss either. */
    if (!isfinite(loss) || fabs(loss) * (double)n_images >= 1e6) return;
    e->loss_sum += llround(loss * (double)n_images * LOSS_FIXED_SCALE);
    e->loss_n += n_images;
}

/* ---- volumes ---- */

static vol *vols_insert_at(vol_list *l, int64_t at, int64_t id, int n_groups) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 16;
        vol *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return NULL;
        l->v = v, l->cap = cap;
    }
    int64_t *c = calloc(3 * (size_t)(n_groups > 0 ? n_groups : 1), sizeof *c);
    if (!c) return NULL;
    memmove(l->v + at + 1, l->v + at, (size_t)(l->n - at) * sizeof *l->v);
    l->v[at] = (vol){id, c};
    l->n++;
    return &l->v[at];
}

/* the keyed volume with this id, created (zero counts) when new; NULL on OOM */
static vol *vols_get(vol_list *l, int64_t id, int n_groups) {
    int64_t lo = 0, hi = l->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (l->v[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    if (lo < l->n && l->v[lo].id == id) return &l->v[lo];
    return vols_insert_at(l, lo, id, n_groups);
}

/* Label/prediction ids of len pixels from i0 as bins 0..k-1, k for
 * values outside the class set; for labels -1 marks ignore_index. One
 * loop per dtype so each vectorises. */
#define TO_BINS(T)                                                                       \
    do {                                                                                 \
        const T *src = (const T *)p + i0;                                                \
        for (int64_t i = 0; i < len; i++) {                                              \
            int64_t v = (int64_t)src[i];                                                 \
            int32_t b = (v >= 0 && v < k) ? (int32_t)v : k;                              \
            out[i] = (is_label && v == ignore) ? -1 : b;                                 \
        }                                                                                \
    } while (0)

static void to_bins(const void *p, segc_dtype dt, int64_t i0, int64_t len, int32_t k, int64_t ignore, bool is_label,
                    int32_t *out) {
    switch (dt) {
    case SEGC_U8: TO_BINS(uint8_t); break;
    case SEGC_I32: TO_BINS(int32_t); break;
    default: TO_BINS(int64_t); break;
    }
}

#define BIN_CHUNK 4096

/* Joint histogram hist[p * (k+1) + l] of one sample's non-ignored pixels. */
static void sample_hist(const segc_tensor *pred, const segc_tensor *label, int64_t i0, int64_t hw, int32_t k,
                        int64_t ignore, int32_t *pb, int32_t *lb, int64_t *hist) {
    for (int64_t c0 = 0; c0 < hw; c0 += BIN_CHUNK) {
        int64_t len = hw - c0 < BIN_CHUNK ? hw - c0 : BIN_CHUNK;
        to_bins(pred->data, pred->dtype, i0 + c0, len, k, ignore, false, pb);
        to_bins(label->data, label->dtype, i0 + c0, len, k, ignore, true, lb);
        for (int64_t i = 0; i < len; i++)
            if (lb[i] >= 0) hist[pb[i] * (k + 1) + lb[i]]++;
    }
}

/* Adds one sample's joint histogram to a volume's group counts. */
static void hist_to_groups(const segc_evaluator *e, const int64_t *hist, int64_t *c) {
    const int k = e->spec.num_classes, b = k + 1, nr = e->spec.n_regions;
    int64_t *tp = c, *pa = c + e->n_groups, *la = c + 2 * e->n_groups;
    for (int p = 0; p < k; p++)
        for (int l = 0; l < k; l++) {
            int64_t h = hist[p * b + l];
            if (!h) continue;
            unsigned mp = e->region_mask[p], ml = e->region_mask[l];
            for (int g = 0; g < nr; g++) {
                unsigned bit = 1u << g;
                if (mp & bit) pa[g] += h;
                if (ml & bit) la[g] += h;
                if (mp & ml & bit) tp[g] += h;
            }
        }
    /* pixels whose prediction (or label) is out of range still count for
     * the other side's area: predicted k over a label outside the set
     * is a false positive */
    for (int p = 0; p < k; p++)
        for (int g = 0; g < nr; g++)
            if (e->region_mask[p] & (1u << g)) pa[g] += hist[p * b + k];
    for (int l = 0; l < k; l++)
        for (int g = 0; g < nr; g++)
            if (e->region_mask[l] & (1u << g)) la[g] += hist[k * b + l];
    for (int j = 1; j < k; j++) {
        int g = nr + j - 1;
        tp[g] += hist[j * b + j];
        for (int q = 0; q <= k; q++) {
            pa[g] += hist[j * b + q];
            la[g] += hist[q * b + j];
        }
    }
}

bool segc_evaluator_add(segc_evaluator *e, segc_ctx *ctx, const segc_tensor *pred, const segc_tensor *label,
                        const int64_t *volume_ids) {
    char b1[64], b2[64];
    if (!e || !pred || !label || e->det) {
        segc_set_error(ctx, "evaluator_add: %s",
                       !e ? "no evaluator" : e->det ? "a detection evaluator takes detections (evaluator_add_detections)"
                                                    : "missing prediction or label");
        return false;
    }
    /* checked here (not only in confusion_add) so the message names the evaluator */
    if (pred->ndim < 2 || pred->ndim > 3 || !segc_same_shape(pred, label)) {
        segc_set_error(ctx, "evaluator_add: prediction and label must both be [N, H, W] (or [H, W]) of one shape, "
                            "found %s and %s",
                       segc_shape_str(pred, b1, sizeof b1), segc_shape_str(label, b2, sizeof b2));
        return false;
    }
    const bool dt_ok = (pred->dtype == SEGC_U8 || pred->dtype == SEGC_I32 || pred->dtype == SEGC_I64) &&
                       (label->dtype == SEGC_U8 || label->dtype == SEGC_I32 || label->dtype == SEGC_I64);
    if (!dt_ok) {
        segc_set_error(ctx, "evaluator_add: prediction and label must be u8/i32/i64, found %s and %s",
                       segc_dtype_name(pred->dtype), segc_dtype_name(label->dtype));
        return false;
    }
    if (!e->spec.per_volume) return segc_confusion_add(ctx, &e->conf, pred, label);

    const int32_t k = e->spec.num_classes;
    const int64_t n = pred->ndim == 3 ? pred->shape[0] : 1;
    const int64_t hw = pred->shape[pred->ndim - 2] * pred->shape[pred->ndim - 1];
    const int64_t hsz = (int64_t)(k + 1) * (k + 1);
    /* every allocation before any count changes, so a failure leaves e as it was */
    int64_t *hist = segc_arena_calloc(&ctx->arena, (size_t)(n * hsz + 1) * sizeof *hist);
    int32_t *bins = segc_arena_alloc(&ctx->arena, (size_t)(n * 2 * BIN_CHUNK + 1) * sizeof *bins);
    vol **dst = segc_arena_alloc(&ctx->arena, (size_t)(n + 1) * sizeof *dst);
    if (!hist || !bins || !dst) {
        segc_set_error(ctx, "evaluator_add: out of memory for a batch of %lld", (long long)n);
        return false;
    }
    /* create the batch's volumes first; pointers are taken only after the
     * last insertion, since inserting moves entries */
    const int64_t anon0 = e->anon.n;
    for (int64_t i = 0; i < n; i++) {
        bool ok = volume_ids ? vols_get(&e->keyed, volume_ids[i], e->n_groups) != NULL
                             : vols_insert_at(&e->anon, e->anon.n, e->anon.n, e->n_groups) != NULL;
        if (!ok) {
            /* anonymous volumes of this batch are dropped again; keyed ones
             * created before the failure stay with zero counts (OOM only) */
            while (e->anon.n > anon0) free(e->anon.v[--e->anon.n].c);
            segc_set_error(ctx, "evaluator_add: out of memory for volume counts");
            return false;
        }
    }
    /* confusion_add only fails on the shape/dtype errors excluded above */
    if (!segc_confusion_add(ctx, &e->conf, pred, label)) return false;
    for (int64_t i = 0; i < n; i++)
        dst[i] = volume_ids ? vols_get(&e->keyed, volume_ids[i], e->n_groups) : &e->anon.v[anon0 + i];
    const int64_t ignore = e->spec.ignore_index;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        sample_hist(pred, label, i * hw, hw, k, ignore, bins + i * 2 * BIN_CHUNK, bins + i * 2 * BIN_CHUNK + BIN_CHUNK,
                    hist + i * hsz);
    for (int64_t i = 0; i < n; i++) hist_to_groups(e, hist + i * hsz, dst[i]->c);
    return true;
}

bool segc_evaluator_add_detections(segc_evaluator *e, const segc_detections *d, const int64_t *image_index,
                                   char *err, size_t errlen) {
    if (!e || !e->det) return snprintf(err, errlen, "evaluator_add_detections: not a detection evaluator"), false;
    return segc_coco_eval_add_detections(e->det, d, image_index, err, errlen);
}

segc_coco_eval *det_of(segc_evaluator *e) { return e ? e->det : NULL; }
struct segc_coco_eval *segc_evaluator_coco_eval(segc_evaluator *e) { return det_of(e); }

const struct segc_coco_gt *segc_evaluator_coco_gt(const segc_evaluator *e) {
    return e && e->det ? segc_coco_eval_gt(e->det) : NULL;
}

bool segc_evaluator_merge(segc_evaluator *dst, const segc_evaluator *src, char *err, size_t errlen) {
    if (dst->det || src->det) {
        if (!dst->det || !src->det)
            return snprintf(err, errlen, "evaluator_merge: a detection and a segmentation evaluator"), false;
        return segc_coco_eval_merge(dst->det, src->det, err, errlen);
    }
    const segc_eval_spec *a = &dst->spec, *b = &src->spec;
    if (a->task != b->task || a->num_classes != b->num_classes || a->ignore_index != b->ignore_index ||
        a->per_volume != b->per_volume || a->n_regions != b->n_regions ||
        memcmp(a->regions, b->regions, (size_t)a->n_regions * sizeof *a->regions)) {
        snprintf(err, errlen,
                 "evaluator_merge: specs differ: %d classes (ignore %d, per_volume %d, %d regions) vs %d classes "
                 "(ignore %d, per_volume %d, %d regions)",
                 a->num_classes, a->ignore_index, (int)a->per_volume, a->n_regions, b->num_classes, b->ignore_index,
                 (int)b->per_volume, b->n_regions);
        return false;
    }
    if (dst == src) {
        snprintf(err, errlen, "evaluator_merge: an evaluator cannot be merged into itself");
        return false;
    }
    /* volumes first: they are the only step that can fail (OOM) */
    const int ng = dst->n_groups;
    for (int64_t i = 0; i < src->keyed.n; i++) {
        vol *v = vols_get(&dst->keyed, src->keyed.v[i].id, ng);
        if (!v) goto oom;
        for (int q = 0; q < 3 * ng; q++) v->c[q] += src->keyed.v[i].c[q];
    }
    for (int64_t i = 0; i < src->anon.n; i++) {
        vol *v = vols_insert_at(&dst->anon, dst->anon.n, dst->anon.n, ng);
        if (!v) goto oom;
        memcpy(v->c, src->anon.v[i].c, 3 * (size_t)ng * sizeof *v->c);
    }
    dst->loss_sum += src->loss_sum;
    dst->loss_n += src->loss_n;
    return segc_confusion_merge(&dst->conf, &src->conf, err, errlen);
oom:
    snprintf(err, errlen, "evaluator_merge: out of memory for volume counts");
    return false;
}

/* ---- state as words (segc_dist_merge_evaluator) ---- */

#define STATE_MAGIC 0x5345474556414c32ll   /* "SEGEVAL2": + validation loss */

#define DET_STATE_MAGIC 0x5345474445543131ll   /* "SEGDET11": detections as packed doubles */

/* detection evaluators: their detections (segc_coco_eval_pack) as words */
static int64_t *det_serialize(const segc_evaluator *e, int64_t *n) {
    double *packed = NULL;
    int64_t nd = segc_coco_eval_pack(e->det, &packed);
    if (nd < 0) return NULL;
    int64_t nwords = nd * SEGC_COCO_PACKED;   /* records of SEGC_COCO_PACKED doubles */
    int64_t *w = malloc((size_t)(nwords + 2) * sizeof *w);
    if (w) {
        w[0] = DET_STATE_MAGIC, w[1] = nd;
        if (nd) memcpy(w + 2, packed, (size_t)nwords * sizeof *packed);
        *n = nwords + 2;
    }
    free(packed);
    return w;
}

int64_t *segc_evaluator_serialize(const segc_evaluator *e, int64_t *n) {
    if (e->det) return det_serialize(e, n);
    const int K = e->spec.num_classes, ng = e->n_groups, vw = 3 * (ng > 0 ? ng : 1);
    int64_t words = 6 + 4 * (int64_t)K + 1 + e->keyed.n * (1 + vw) + 1 + e->anon.n * vw;
    int64_t *w = malloc((size_t)words * sizeof *w), *p = w;
    if (!w) return NULL;
    *p++ = STATE_MAGIC, *p++ = K, *p++ = ng, *p++ = e->conf.n_images, *p++ = e->loss_sum, *p++ = e->loss_n;
    memcpy(p, e->conf.counts, 4 * (size_t)K * sizeof *p), p += 4 * K;
    *p++ = e->keyed.n;
    for (int64_t i = 0; i < e->keyed.n; i++) *p++ = e->keyed.v[i].id, memcpy(p, e->keyed.v[i].c, (size_t)vw * sizeof *p), p += vw;
    *p++ = e->anon.n;
    for (int64_t i = 0; i < e->anon.n; i++) memcpy(p, e->anon.v[i].c, (size_t)vw * sizeof *p), p += vw;
    *n = words;
    return w;
}

bool segc_evaluator_merge_serialized(segc_evaluator *dst, const int64_t *w, int64_t n, char *err, size_t errlen) {
    if (dst->det) {
        if (n < 2 || w[0] != DET_STATE_MAGIC || w[1] < 0 || w[1] * SEGC_COCO_PACKED != n - 2) {
            snprintf(err, errlen, "evaluator_merge: a state of %lld words that is not a detection evaluator's", (long long)n);
            return false;
        }
        return segc_coco_eval_unpack(dst->det, (const double *)(w + 2), w[1], err, errlen);
    }
    const int K = dst->spec.num_classes, ng = dst->n_groups, vw = 3 * (ng > 0 ? ng : 1);
    if (n < 8 + 4 * (int64_t)K || w[0] != STATE_MAGIC || w[1] != K || w[2] != ng) {
        snprintf(err, errlen, "evaluator_merge: a state of %lld words that is not this evaluator's (%d classes)",
                 (long long)n, K);
        return false;
    }
    const int64_t *p = w + 6 + 4 * (int64_t)K, *end = w + n;
    int64_t nk = *p++;
    if (nk < 0 || nk > (end - p) / (1 + vw)) goto bad;
    const int64_t *keyed = p;
    p += nk * (1 + vw);
    if (p >= end) goto bad;
    int64_t na = *p++;
    if (na < 0 || na != (end - p) / vw || (end - p) % vw) goto bad;
    for (int64_t i = 0; i < nk; i++) {
        vol *v = vols_get(&dst->keyed, keyed[i * (1 + vw)], ng);
        if (!v) goto oom;
        for (int q = 0; q < vw; q++) v->c[q] += keyed[i * (1 + vw) + 1 + q];
    }
    for (int64_t i = 0; i < na; i++) {
        vol *v = vols_insert_at(&dst->anon, dst->anon.n, dst->anon.n, ng);
        if (!v) goto oom;
        memcpy(v->c, p + i * vw, (size_t)vw * sizeof *v->c);
    }
    for (int64_t i = 0; i < 4 * (int64_t)K; i++) dst->conf.counts[i] += w[6 + i];
    dst->conf.n_images += w[3];
    dst->loss_sum += w[4];
    dst->loss_n += w[5];
    return true;
bad:
    snprintf(err, errlen, "evaluator_merge: a malformed state of %lld words", (long long)n);
    return false;
oom:
    snprintf(err, errlen, "evaluator_merge: out of memory for volume counts");
    return false;
}

/* ---- results ---- */

static double nanmean(const double *v, int n) {
    double s = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) s += v[i], cnt++;
    return cnt ? s / cnt : NAN;
}

static double dice_of(int64_t tp, int64_t p, int64_t l, double empty) {
    return p + l == 0 ? empty : 2.0 * (double)tp / (double)(p + l);
}

static void mean_over(const vol_list *l, int ng, double *sum, int64_t *cnt) {
    for (int64_t i = 0; i < l->n; i++) {
        const int64_t *c = l->v[i].c;
        for (int g = 0; g < ng; g++) sum[g] += dice_of(c[g], c[ng + g], c[2 * ng + g], 1.0);
        (*cnt)++;
    }
}

/* Positions in spec_names' order, so print and JSON need not match names
 * (their class_names may differ from the spec's): pixel_Dice exists only
 * with per-volume results, which then own Dice.<class> for labels 1..K-1. */
static bool is_per_volume(const segc_eval_result *r) { return find_name(r, "pixel_mDice") >= 0; }

static double dice_at(const segc_eval_result *r, int j, bool pixel) {
    const int k = r->pixel.num_classes;
    if (!is_per_volume(r)) return r->values[4 + 2 * k + j];
    if (!pixel) return j >= 1 ? r->values[4 + 2 * k + j - 1] : NAN;
    int px = find_name(r, "pixel_mDice");
    return r->values[px + 1 + j];
}

static void set_value(segc_eval_result *r, const char *name, double v) {
    int i = find_name(r, name);
    if (i >= 0) r->values[i] = v;
}

bool segc_evaluator_result(const segc_evaluator *e, segc_eval_result *r, char *err, size_t errlen) {
    if (e->det) return det_eval_result(e->det, &e->spec, r, err, errlen);
    memset(r, 0, sizeof *r);
    const segc_eval_spec *s = &e->spec;
    const int k = s->num_classes, ng = e->n_groups, nr = s->n_regions;
    if (!spec_names(s, r)) {
        snprintf(err, errlen, "evaluator_result: %d classes give more than %d metrics", k, SEGC_TASK_MAX_METRICS);
        return false;
    }
    if (!segc_metrics_compute(&e->conf, &r->pixel, err, errlen)) return false;
    double *px_dice = malloc((size_t)k * sizeof *px_dice), *vd = calloc((size_t)ng + 1, sizeof *vd);
    if (!px_dice || !vd) {
        free(px_dice), free(vd);
        segc_metrics_free(&r->pixel);
        snprintf(err, errlen, "evaluator_result: out of memory");
        return false;
    }
    for (int j = 0; j < k; j++)
        px_dice[j] = dice_of(e->conf.intersect[j], e->conf.pred_area[j], e->conf.label_area[j], NAN);
    /* mmseg: nanmean over every class; dice_skip_background drops class 0 */
    const int skip = s->dice_skip_background && k > 1;
    double px_mdice = nanmean(px_dice + skip, k - skip);
    char nb[32], key[80];
    int i = 0;
    r->values[i++] = r->pixel.mIoU;
    r->values[i++] = r->pixel.mAcc;
    r->values[i++] = r->pixel.aAcc;
    i++;   /* mDice, below */
    for (int j = 0; j < k; j++) r->values[i++] = r->pixel.iou[j];
    for (int j = 0; j < k; j++) r->values[i++] = r->pixel.acc[j];
    if (!s->per_volume) {
        r->values[3] = px_mdice;
        for (int j = 0; j < k; j++) r->values[i++] = px_dice[j];
    } else {
        int64_t nv = 0;
        mean_over(&e->keyed, ng, vd, &nv);
        mean_over(&e->anon, ng, vd, &nv);
        for (int g = 0; g < ng; g++) vd[g] = nv ? vd[g] / (double)nv : NAN;
        r->n_volumes = nv;
        for (int g = 0; g < nr; g++) {
            snprintf(key, sizeof key, "Dice_%s", s->regions[g].name);
            set_value(r, key, vd[g]);
        }
        for (int j = 1; j < k; j++) {
            snprintf(key, sizeof key, "Dice.%s", class_label(s->class_names, j, nb, sizeof nb));
            set_value(r, key, vd[nr + j - 1]);
        }
        /* every per-volume value is defined once a volume exists, so a plain mean */
        r->values[3] = nr ? nanmean(vd, nr) : nanmean(vd + nr, k - 1);
        set_value(r, "pixel_mDice", px_mdice);
        for (int j = 0; j < k; j++) {
            snprintf(key, sizeof key, "pixel_Dice.%s", class_label(s->class_names, j, nb, sizeof nb));
            set_value(r, key, px_dice[j]);
        }
    }
    free(px_dice), free(vd);
    set_value(r, "val_loss", e->loss_n ? (double)e->loss_sum / LOSS_FIXED_SCALE / (double)e->loss_n : NAN);
    r->n_images = e->conf.n_images;
    snprintf(r->primary, sizeof r->primary, "%s", s->primary);
    r->primary_value = segc_eval_result_get(r, r->primary);
    return true;
}

void segc_eval_result_free(segc_eval_result *r) {
    if (r) segc_metrics_free(&r->pixel);
}

double segc_eval_result_get(const segc_eval_result *r, const char *name) {
    int i = name ? find_name(r, name) : -1;
    return i >= 0 ? r->values[i] : NAN;
}

/* ---- printing (prettytable layout, as segc_metrics_print) ---- */


void segc_eval_result_print(FILE *out, const segc_eval_result *r, const char *const *class_names) {
    if (det_result_is(r)) return det_result_print(out, r, class_names);
    const int k = r->pixel.num_classes;
    const bool pv = is_per_volume(r);
    char nb[32];
    char (*cells)[48] = calloc((size_t)(k + SEGC_TASK_MAX_REGIONS + 1) * SEGC_TABLE_MAX_COLS, sizeof *cells);
    if (!cells) return;
    /* mmseg's per-class table (IoUMetric with mIoU + mDice: IoU, Acc, Dice) */
    snprintf(cells[0], 48, "Class"), snprintf(cells[1], 48, "IoU"), snprintf(cells[2], 48, "Acc");
    snprintf(cells[3], 48, "Dice");
    for (int j = 0; j < k; j++) {
        char(*row)[48] = cells + (j + 1) * 4;
        const char *cn = class_label(class_names, j, nb, sizeof nb);
        snprintf(row[0], 48, "%s", cn);
        segc_metric_percent_str(row[1], 48, r->pixel.iou[j]);
        segc_metric_percent_str(row[2], 48, r->pixel.acc[j]);
        segc_metric_percent_str(row[3], 48, dice_at(r, j, true));   /* split-wide Dice */
    }
    fprintf(out, "per class results:\n");
    segc_print_table(out, cells, k + 1, 4);
    char a[32], b[32], c[32], d[32];
    segc_metric_percent_str(a, sizeof a, r->pixel.aAcc);
    segc_metric_percent_str(b, sizeof b, r->pixel.mIoU);
    segc_metric_percent_str(c, sizeof c, r->pixel.mAcc);
    segc_metric_percent_str(d, sizeof d, segc_eval_result_get(r, pv ? "pixel_mDice" : "mDice"));
    /* with per-volume results "mDice" is theirs: the split-wide one says so */
    fprintf(out, "aAcc: %s  mIoU: %s  mAcc: %s  %s: %s", a, b, c, pv ? "pixel_mDice" : "mDice", d);
    if (!isnan(segc_eval_result_get(r, "val_loss"))) fprintf(out, "  val_loss: %.4f", segc_eval_result_get(r, "val_loss"));
    fputc('\n', out);
    if (pv) {
        /* per-volume: regions, then foreground labels, then their mean */
        int rows = 1;
        snprintf(cells[0], 48, "Region"), snprintf(cells[1], 48, "Dice");
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < r->n && rows < k + SEGC_TASK_MAX_REGIONS + 1; i++) {
                const char *nm = r->names[i];
                if (pass == 0 && !strncmp(nm, "Dice_", 5)) snprintf(cells[rows * 2], 48, "%s", nm + 5);
                else if (pass == 1 && !strncmp(nm, "Dice.", 5)) snprintf(cells[rows * 2], 48, "label %.40s", nm + 5);
                else continue;
                segc_metric_percent_str(cells[rows * 2 + 1], 48, r->values[i]);
                rows++;
            }
        fprintf(out, "per volume results (%lld volumes):\n", (long long)r->n_volumes);
        segc_print_table(out, cells, rows, 2);
        segc_metric_percent_str(d, sizeof d, segc_eval_result_get(r, "mDice"));
        fprintf(out, "mDice: %s\n", d);
    }
    free(cells);
}

/* ---- JSON ---- */

static cJSON *percent_number(double fraction) {
    double p = segc_metric_percent(fraction);
    return isnan(p) ? cJSON_CreateNull() : cJSON_CreateNumber(p);
}

/* {"<class>": percent, ...} of the per-class Dice values */
static cJSON *dice_object(const segc_eval_result *r, const char *const *class_names, int j0, bool pixel) {
    cJSON *o = cJSON_CreateObject();
    char nb[32];
    for (int j = j0; o && j < r->pixel.num_classes; j++)
        cJSON_AddItemToObject(o, class_label(class_names, j, nb, sizeof nb), percent_number(dice_at(r, j, pixel)));
    return o;
}

char *segc_eval_result_json(const segc_eval_result *r, const char *const *class_names) {
    if (det_result_is(r)) return det_result_json(r, class_names);
    /* the mmseg keys come from segc_metrics_json so they keep its meaning */
    char *base = segc_metrics_json(&r->pixel, class_names);
    cJSON *px = base ? cJSON_Parse(base) : NULL, *root = cJSON_CreateObject();
    free(base);
    char *s = NULL;
    if (!px || !root) goto done;
    const bool pv = is_per_volume(r);
    cJSON_AddItemToObject(root, "mIoU", cJSON_DetachItemFromObject(px, "mIoU"));
    cJSON_AddItemToObject(root, "mAcc", cJSON_DetachItemFromObject(px, "mAcc"));
    cJSON_AddItemToObject(root, "aAcc", cJSON_DetachItemFromObject(px, "aAcc"));
    cJSON_AddItemToObject(root, "mDice", percent_number(segc_eval_result_get(r, "mDice")));
    cJSON_AddItemToObject(root, "IoU", cJSON_DetachItemFromObject(px, "IoU"));
    cJSON_AddItemToObject(root, "Acc", cJSON_DetachItemFromObject(px, "Acc"));
    cJSON_AddItemToObject(root, "Dice", dice_object(r, class_names, pv ? 1 : 0, !pv));
    if (pv) {
        for (int i = 0; i < r->n; i++)
            if (!strncmp(r->names[i], "Dice_", 5))
                cJSON_AddItemToObject(root, r->names[i], percent_number(r->values[i]));
        cJSON_AddItemToObject(root, "pixel_mDice", percent_number(segc_eval_result_get(r, "pixel_mDice")));
        cJSON_AddItemToObject(root, "pixel_Dice", dice_object(r, class_names, 0, true));
        cJSON_AddItemToObject(root, "n_volumes", cJSON_CreateNumber((double)r->n_volumes));
    }
    double vl = segc_eval_result_get(r, "val_loss");
    if (!isnan(vl)) cJSON_AddItemToObject(root, "val_loss", cJSON_CreateNumber(vl));
    cJSON_AddItemToObject(root, "primary", cJSON_CreateString(r->primary));
    s = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(px);
    cJSON_Delete(root);
    return s;
}
