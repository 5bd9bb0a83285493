/* pycocotools' COCOeval for boxes (coco_eval.h): evaluateImg, accumulate and
 * summarize with the same orders, ties and thresholds, in double precision. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "segc/coco_eval.h"

#define N_T 10      /* IoU thresholds .50:.05:.95 */
#define N_R 101     /* recall points */
#define N_A 4       /* area ranges */
#define N_M 3       /* maxDets */
#define MAX_DET 100

static const int max_dets[N_M] = {1, 10, 100};
static const double area_rng[N_A][2] = {{0.0, 1e10}, {0.0, 1024.0}, {1024.0, 9216.0}, {9216.0, 1e10}};

const char *const segc_coco_stat_names[SEGC_COCO_N_STATS] = {
    "bbox_mAP",  "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s",    "bbox_mAP_m",    "bbox_mAP_l",
    "bbox_AR@1", "bbox_AR@10",  "bbox_AR@100", "bbox_AR_s@100", "bbox_AR_m@100", "bbox_AR_l@100"};

typedef struct cdet {
    int64_t img, seq;
    int32_t label;
    double b[4], score;
} cdet;

struct segc_coco_eval {
    segc_coco_gt gt;          /* owned copies */
    char **names;
    int64_t *gstart;          /* (n_images * K + 1) offsets of the annotations sorted by (image, label, file order) */
    int64_t *gorder;          /* annotation indices in that order */
    int64_t *img_order;       /* image indices by increasing image id (pycocotools' imgIds) */
    uint8_t *seen;            /* images named by add_detections / merged / unpacked */
    int64_t n_seen;           /* 0: evaluate every image */
    cdet *d;
    int64_t n, cap, next_seq;
};

/* numpy.linspace(start, stop, num): i * step + start, the last = stop, without FMA contraction */
static void linspace(double start, double stop, int num, double *out) {
    const double step = (stop - start) / (num - 1);
    for (int i = 0; i < num; i++) {
        volatile double y = (double)i * step;
        out[i] = y + start;
    }
    out[num - 1] = stop;
}

/* image indices by increasing COCO id (ids are unique, so qsort's order is total) */
static _Thread_local const int64_t *sort_ctx_ids;
static int cmp_by_id(const void *a, const void *b) {
    int64_t x = sort_ctx_ids[*(const int64_t *)a], y = sort_ctx_ids[*(const int64_t *)b];
    return x < y ? -1 : x > y;
}

/* ---- lifetime ---- */

void segc_coco_eval_free(segc_coco_eval *e) {
    if (!e) return;
    free((void *)e->gt.image_ids);
    free((void *)e->gt.cat_ids);
    if (e->names)
        for (int k = 0; k < e->gt.n_classes; k++) free(e->names[k]);
    free(e->names);
    free((void *)e->gt.ann_image);
    free((void *)e->gt.ann_label);
    free((void *)e->gt.ann_bbox);
    free((void *)e->gt.ann_area);
    free((void *)e->gt.ann_crowd);
    free((void *)e->gt.ann_id);
    free(e->gstart);
    free(e->gorder);
    free(e->img_order);
    free(e->seen);
    free(e->d);
    free(e);
}

void segc_coco_eval_reset(segc_coco_eval *e) {
    e->n = 0, e->next_seq = 0, e->n_seen = 0;
    memset(e->seen, 0, (size_t)(e->gt.n_images ? e->gt.n_images : 1));
}

static void mark_seen(segc_coco_eval *e, int64_t img) {
    if (img >= 0 && img < e->gt.n_images && !e->seen[img]) e->seen[img] = 1, e->n_seen++;
}
const segc_coco_gt *segc_coco_eval_gt(const segc_coco_eval *e) { return &e->gt; }
int64_t segc_coco_eval_n_detections(const segc_coco_eval *e) { return e->n; }

static void *dup_mem(const void *p, size_t n) {
    void *q = malloc(n ? n : 1);
    if (q && n) memcpy(q, p, n);
    return q;
}

segc_coco_eval *segc_coco_eval_new(const segc_coco_gt *g, char *err, size_t errlen) {
    if (!g || g->n_images < 0 || g->n_classes < 1 || g->n_anns < 0 || !g->cat_ids ||
        (g->n_images && !g->image_ids) ||
        (g->n_anns && (!g->ann_image || !g->ann_label || !g->ann_bbox || !g->ann_area || !g->ann_crowd || !g->ann_id))) {
        snprintf(err, errlen, "coco_eval: incomplete ground truth (images, categories or annotation arrays missing)");
        return NULL;
    }
    for (int k = 1; k < g->n_classes; k++)
        if (g->cat_ids[k] <= g->cat_ids[k - 1]) {
            snprintf(err, errlen, "coco_eval: category ids must increase with the label, found %lld after %lld",
                     (long long)g->cat_ids[k], (long long)g->cat_ids[k - 1]);
            return NULL;
        }
    for (int64_t a = 0; a < g->n_anns; a++)
        if (g->ann_image[a] < 0 || g->ann_image[a] >= g->n_images || g->ann_label[a] < 0 ||
            g->ann_label[a] >= g->n_classes) {
            snprintf(err, errlen, "coco_eval: annotation %lld (id %lld): image index %lld or label %d out of range",
                     (long long)a, (long long)g->ann_id[a], (long long)g->ann_image[a], (int)g->ann_label[a]);
            return NULL;
        }
    segc_coco_eval *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    const int64_t ni = g->n_images, na = g->n_anns;
    const int k = g->n_classes;
    e->gt = *g;
    e->gt.image_ids = dup_mem(g->image_ids, (size_t)ni * sizeof *g->image_ids);
    e->gt.cat_ids = dup_mem(g->cat_ids, (size_t)k * sizeof *g->cat_ids);
    e->gt.ann_image = dup_mem(g->ann_image, (size_t)na * sizeof *g->ann_image);
    e->gt.ann_label = dup_mem(g->ann_label, (size_t)na * sizeof *g->ann_label);
    e->gt.ann_bbox = dup_mem(g->ann_bbox, (size_t)na * 4 * sizeof *g->ann_bbox);
    e->gt.ann_area = dup_mem(g->ann_area, (size_t)na * sizeof *g->ann_area);
    e->gt.ann_crowd = dup_mem(g->ann_crowd, (size_t)na);
    e->gt.ann_id = dup_mem(g->ann_id, (size_t)na * sizeof *g->ann_id);
    e->gt.class_names = NULL;
    if (!e->gt.image_ids || !e->gt.cat_ids || !e->gt.ann_image || !e->gt.ann_label || !e->gt.ann_bbox ||
        !e->gt.ann_area || !e->gt.ann_crowd || !e->gt.ann_id)
        goto oom;
    if (g->class_names) {
        if (!(e->names = calloc((size_t)k, sizeof *e->names))) goto oom;
        for (int j = 0; j < k; j++)
            if (g->class_names[j] && !(e->names[j] = strdup(g->class_names[j]))) goto oom;
        e->gt.class_names = (const char *const *)e->names;
    }
    /* annotations grouped by (image, label), file order kept within a group (counting sort) */
    e->gstart = calloc((size_t)(ni * k + 1), sizeof *e->gstart);
    e->gorder = malloc((size_t)(na ? na : 1) * sizeof *e->gorder);
    if (!e->gstart || !e->gorder) goto oom;
    for (int64_t a = 0; a < na; a++) e->gstart[g->ann_image[a] * k + g->ann_label[a] + 1]++;
    for (int64_t c = 0; c < ni * k; c++) e->gstart[c + 1] += e->gstart[c];
    {
        int64_t *fill = malloc((size_t)(ni * k + 1) * sizeof *fill);
        if (!fill) goto oom;
        memcpy(fill, e->gstart, (size_t)(ni * k + 1) * sizeof *fill);
        for (int64_t a = 0; a < na; a++) e->gorder[fill[g->ann_image[a] * k + g->ann_label[a]]++] = a;
        free(fill);
    }
    /* duplicate image ids would make the image order ambiguous */
    e->img_order = malloc((size_t)(ni ? ni : 1) * sizeof *e->img_order);
    e->seen = calloc((size_t)(ni ? ni : 1), 1);
    if (!e->img_order || !e->seen) goto oom;
    for (int64_t i = 0; i < ni; i++) e->img_order[i] = i;
    sort_ctx_ids = e->gt.image_ids;
    qsort(e->img_order, (size_t)ni, sizeof *e->img_order, cmp_by_id);
    for (int64_t i = 1; i < ni; i++)
        if (e->gt.image_ids[e->img_order[i]] == e->gt.image_ids[e->img_order[i - 1]]) {
            snprintf(err, errlen, "coco_eval: duplicate image id %lld", (long long)e->gt.image_ids[e->img_order[i]]);
            segc_coco_eval_free(e);
            return NULL;
        }
    return e;
oom:
    snprintf(err, errlen, "coco_eval: out of memory for %lld images, %lld annotations", (long long)g->n_images,
             (long long)g->n_anns);
    segc_coco_eval_free(e);
    return NULL;
}

/* ---- detections ---- */

static bool reserve(segc_coco_eval *e, int64_t extra) {
    if (e->n + extra <= e->cap) return true;
    int64_t cap = e->cap ? e->cap : 1024;
    while (cap < e->n + extra) cap *= 2;
    cdet *d = realloc(e->d, (size_t)cap * sizeof *d);
    if (!d) return false;
    e->d = d, e->cap = cap;
    return true;
}

bool segc_coco_eval_add(segc_coco_eval *e, int64_t img, int32_t label, const double xywh[4], double score, char *err,
                        size_t errlen) {
    if (img < 0 || img >= e->gt.n_images) {
        snprintf(err, errlen, "coco_eval: detection of image index %lld outside 0..%lld", (long long)img,
                 (long long)e->gt.n_images - 1);
        return false;
    }
    if (label < 0 || label >= e->gt.n_classes) {
        snprintf(err, errlen, "coco_eval: detection label %d outside 0..%d (image id %lld)", (int)label,
                 e->gt.n_classes - 1, (long long)e->gt.image_ids[img]);
        return false;
    }
    if (!isfinite(score) || !isfinite(xywh[0]) || !isfinite(xywh[1]) || !isfinite(xywh[2]) || !isfinite(xywh[3])) {
        snprintf(err, errlen, "coco_eval: detection of image id %lld has a non-finite box or score",
                 (long long)e->gt.image_ids[img]);
        return false;
    }
    if (!reserve(e, 1)) {
        snprintf(err, errlen, "coco_eval: out of memory for %lld detections", (long long)e->n + 1);
        return false;
    }
    cdet *d = &e->d[e->n++];
    d->img = img, d->label = label, d->score = score, d->seq = e->next_seq++;
    memcpy(d->b, xywh, sizeof d->b);
    return true;
}

bool segc_coco_eval_add_detections(segc_coco_eval *e, const segc_detections *d, const int64_t *image_index,
                                   char *err, size_t errlen) {
    if (!d || d->n_images < 0 || (d->n_images && (!d->off || !image_index))) {
        snprintf(err, errlen, "coco_eval: detections without offsets or image indices");
        return false;
    }
    for (int i = 0; i < d->n_images; i++)
        if (image_index[i] < 0 || image_index[i] >= e->gt.n_images) {
            snprintf(err, errlen, "coco_eval: detections of image index %lld outside 0..%lld", (long long)image_index[i],
                     (long long)e->gt.n_images - 1);
            return false;
        }
    for (int i = 0; i < d->n_images; i++) {
        mark_seen(e, image_index[i]);
        for (int64_t j = d->off[i]; j < d->off[i + 1]; j++) {
            const segc_detection *x = &d->det[j];
            double b[4] = {x->box[0], x->box[1], (double)x->box[2] - (double)x->box[0],
                           (double)x->box[3] - (double)x->box[1]};
            if (!segc_coco_eval_add(e, image_index[i], x->label, b, x->score, err, errlen)) return false;
        }
    }
    return true;
}

static bool same_gt(const segc_coco_gt *a, const segc_coco_gt *b) {
    return a->n_images == b->n_images && a->n_classes == b->n_classes && a->n_anns == b->n_anns &&
           !memcmp(a->image_ids, b->image_ids, (size_t)a->n_images * sizeof *a->image_ids) &&
           !memcmp(a->cat_ids, b->cat_ids, (size_t)a->n_classes * sizeof *a->cat_ids);
}

bool segc_coco_eval_merge(segc_coco_eval *dst, const segc_coco_eval *src, char *err, size_t errlen) {
    if (!dst || !src || !same_gt(&dst->gt, &src->gt)) {
        snprintf(err, errlen, "coco_eval merge: the evaluators have different ground truth (images, categories)");
        return false;
    }
    if (dst == src) {
        snprintf(err, errlen, "coco_eval merge: an evaluator cannot be merged into itself");
        return false;
    }
    if (!reserve(dst, src->n)) {
        snprintf(err, errlen, "coco_eval merge: out of memory for %lld detections", (long long)(dst->n + src->n));
        return false;
    }
    for (int64_t j = 0; j < src->n; j++) {
        dst->d[dst->n] = src->d[j];
        dst->d[dst->n++].seq = dst->next_seq++;
    }
    for (int64_t i = 0; i < src->gt.n_images; i++)
        if (src->seen[i]) mark_seen(dst, i);
    return true;
}

int64_t segc_coco_eval_pack(const segc_coco_eval *e, double **out) {
    *out = NULL;
    const int64_t total = e->n_seen + e->n;
    if (!total) return 0;
    double *p = calloc((size_t)total * SEGC_COCO_PACKED, sizeof *p);
    if (!p) return -1;
    int64_t r = 0;
    for (int64_t i = 0; i < e->gt.n_images; i++)   /* the images named by add_detections: label -1 */
        if (e->seen[i]) p[r * SEGC_COCO_PACKED] = (double)i, p[r * SEGC_COCO_PACKED + 1] = -1, r++;
    for (int64_t j = 0; j < e->n; j++) {
        const cdet *d = &e->d[j];
        double *q = p + (r + j) * SEGC_COCO_PACKED;
        q[0] = (double)d->img, q[1] = d->label, q[2] = d->b[0], q[3] = d->b[1], q[4] = d->b[2], q[5] = d->b[3];
        q[6] = d->score;
    }
    *out = p;
    return total;
}

bool segc_coco_eval_unpack(segc_coco_eval *e, const double *packed, int64_t n, char *err, size_t errlen) {
    for (int64_t j = 0; j < n; j++) {
        const double *q = packed + j * SEGC_COCO_PACKED;
        if (!(q[0] >= 0 && q[0] < (double)e->gt.n_images && q[0] == floor(q[0])) ||
            !(q[1] >= -1 && q[1] < e->gt.n_classes && q[1] == floor(q[1]))) {
            snprintf(err, errlen, "coco_eval unpack: detection %lld has image index %g / label %g out of range",
                     (long long)j, q[0], q[1]);
            return false;
        }
        if (q[1] == -1) mark_seen(e, (int64_t)q[0]);
        else if (!segc_coco_eval_add(e, (int64_t)q[0], (int32_t)q[1], q + 2, q[6], err, errlen)) return false;
    }
    return true;
}

/* ---- evaluation ---- */

static int cmp_det_group(const void *a, const void *b) {
    const cdet *x = a, *y = b;
    if (x->img != y->img) return x->img < y->img ? -1 : 1;
    if (x->label != y->label) return x->label < y->label ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* decreasing score, ties in the order added: numpy argsort(-score, kind='mergesort') */
static int cmp_det_score(const void *a, const void *b) {
    const cdet *x = *(const cdet *const *)a, *y = *(const cdet *const *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* pycocotools maskApi bbIou: crowd ground truth -> union = area(det) */
static double box_iou(const double *d, const double *g, bool crowd) {
    double w = fmin(d[2] + d[0], g[2] + g[0]) - fmax(d[0], g[0]);
    if (w <= 0) return 0;
    double h = fmin(d[3] + d[1], g[3] + g[1]) - fmax(d[1], g[1]);
    if (h <= 0) return 0;
    double i = w * h, da = d[2] * d[3], ga = g[2] * g[3];
    double u = crowd ? da : da + ga - i;
    return i / u;
}

/* one category's per-image results for one area range, concatenated in image-id order */
typedef struct acc_buf {
    double *score;
    int *pos;            /* rank of the detection within its image (for maxDets) */
    uint8_t *tp, *ig;    /* N_T per detection: matched (to a gt with id != 0), ignored */
    int64_t n, cap, npig;
} acc_buf;

static bool acc_reserve(acc_buf *b, int64_t extra) {
    if (b->n + extra <= b->cap) return true;
    int64_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    double *s = realloc(b->score, (size_t)cap * sizeof *s);
    if (s) b->score = s;
    int *p = realloc(b->pos, (size_t)cap * sizeof *p);
    if (p) b->pos = p;
    uint8_t *t = realloc(b->tp, (size_t)cap * N_T);
    if (t) b->tp = t;
    uint8_t *g = realloc(b->ig, (size_t)cap * N_T);
    if (g) b->ig = g;
    if (!s || !p || !t || !g) return false;
    b->cap = cap;
    return true;
}

typedef struct run_ws {
    const cdet **dts;    /* this (image, category)'s detections, sorted */
    double *ious;        /* D x G */
    int *gs;             /* gt order (not ignored first) */
    uint8_t *gig, *gtm;  /* G, N_T x G */
    int64_t *sel;        /* accumulate: selected detection indices */
    double *pr, *rc;
    int64_t cap_g, cap_sel;
} run_ws;

static bool ws_g(run_ws *w, int64_t g) {
    if (g <= w->cap_g) return true;
    free(w->ious), free(w->gs), free(w->gig), free(w->gtm);
    w->ious = malloc((size_t)(MAX_DET * g) * sizeof *w->ious);
    w->gs = malloc((size_t)g * sizeof *w->gs);
    w->gig = malloc((size_t)g);
    w->gtm = malloc((size_t)(N_T * g));
    w->cap_g = g;
    return w->ious && w->gs && w->gig && w->gtm;
}

static void ws_free(run_ws *w) {
    free(w->dts), free(w->ious), free(w->gs), free(w->gig), free(w->gtm), free(w->sel), free(w->pr), free(w->rc);
}

/* evaluateImg for one image, category and area range, appended to b */
static bool eval_img(const segc_coco_eval *e, const int64_t *ga, int G, const cdet *const *dt, int D,
                     const double *ious, const double *thr, int a, run_ws *w, acc_buf *b) {
    const segc_coco_gt *g = &e->gt;
    const double lo = area_rng[a][0], hi = area_rng[a][1];
    int ng = 0;
    for (int j = 0; j < G; j++) {
        double ar = g->ann_area[ga[j]];
        w->gig[j] = g->ann_crowd[ga[j]] || ar < lo || ar > hi;
    }
    for (int j = 0; j < G; j++)   /* stable: not ignored first */
        if (!w->gig[j]) w->gs[ng++] = j;
    b->npig += ng;
    for (int j = 0, q = ng; j < G; j++)
        if (w->gig[j]) w->gs[q++] = j;
    if (!acc_reserve(b, D)) return false;
    memset(w->gtm, 0, (size_t)(N_T * G));
    uint8_t *tp = D > 0 ? b->tp + b->n * N_T : NULL, *ig = D > 0 ? b->ig + b->n * N_T : NULL;
    if (D > 0) {   /* (the buffers are NULL until the first detection) */
        memset(tp, 0, (size_t)D * N_T);
        memset(ig, 0, (size_t)D * N_T);
    }
    for (int t = 0; t < N_T && G > 0; t++) {
        uint8_t *gtm = w->gtm + t * G;
        for (int d = 0; d < D; d++) {
            double iou = fmin(thr[t], 1 - 1e-10);
            int m = -1;
            for (int q = 0; q < G; q++) {
                int gj = w->gs[q];
                bool crowd = g->ann_crowd[ga[gj]];
                if (gtm[q] && !crowd) continue;
                if (m > -1 && !w->gig[w->gs[m]] && w->gig[gj]) break;
                double v = ious[d * G + gj];
                if (v < iou) continue;
                iou = v, m = q;
            }
            if (m == -1) continue;
            ig[d * N_T + t] = w->gig[w->gs[m]];
            tp[d * N_T + t] = g->ann_id[ga[w->gs[m]]] != 0;
            gtm[m] = 1;
        }
    }
    for (int d = 0; d < D; d++) {
        double ar = dt[d]->b[2] * dt[d]->b[3];
        bool out = ar < lo || ar > hi;
        for (int t = 0; t < N_T; t++)
            if (!tp[d * N_T + t] && out) ig[d * N_T + t] = 1;
        b->score[b->n + d] = dt[d]->score;
        b->pos[b->n + d] = d;
    }
    b->n += D;
    return true;
}

static int64_t P_at(int K, int t, int r, int k, int a, int m) {
    return ((((int64_t)t * N_R + r) * K + k) * N_A + a) * N_M + m;
}

static _Thread_local const double *sort_scores;
static int cmp_sel(const void *x, const void *y) {
    int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
    if (sort_scores[i] != sort_scores[j]) return sort_scores[i] > sort_scores[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* accumulate for one category, area range and maxDets */
static bool accumulate(const acc_buf *b, int K, int k, int a, int m, const double *rec_thr, run_ws *w, double *prec,
                       double *recall) {
    if (b->npig == 0) return true;
    if (b->n > w->cap_sel) {
        free(w->sel), free(w->pr), free(w->rc);
        w->sel = malloc((size_t)b->n * sizeof *w->sel);
        w->pr = malloc((size_t)b->n * sizeof *w->pr);
        w->rc = malloc((size_t)b->n * sizeof *w->rc);
        w->cap_sel = b->n;
        if (!w->sel || !w->pr || !w->rc) return false;
    }
    int64_t nd = 0;
    for (int64_t j = 0; j < b->n; j++)
        if (b->pos[j] < max_dets[m]) w->sel[nd++] = j;
    sort_scores = b->score;
    if (nd > 1) qsort(w->sel, (size_t)nd, sizeof *w->sel, cmp_sel);
    for (int t = 0; t < N_T; t++) {
        double tps = 0, fps = 0;
        for (int64_t q = 0; q < nd; q++) {
            int64_t j = w->sel[q];
            bool tp = b->tp[j * N_T + t], ig = b->ig[j * N_T + t];
            if (!ig) {
                if (tp) tps += 1;
                else fps += 1;
            }
            w->rc[q] = tps / (double)b->npig;
            w->pr[q] = tps / (fps + tps + DBL_EPSILON);
        }
        recall[(((int64_t)t * K + k) * N_A + a) * N_M + m] = nd ? w->rc[nd - 1] : 0;
        for (int64_t q = nd - 1; q > 0; q--)
            if (w->pr[q] > w->pr[q - 1]) w->pr[q - 1] = w->pr[q];
        int64_t q = 0;
        for (int r = 0; r < N_R; r++) {
            while (q < nd && w->rc[q] < rec_thr[r]) q++;   /* searchsorted(rc, thr, side='left') */
            prec[P_at(K, t, r, k, a, m)] = q < nd ? w->pr[q] : 0;
        }
    }
    return true;
}


bool segc_coco_eval_run(const segc_coco_eval *e, segc_coco_summary *s, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    const int K = e->gt.n_classes;
    const int64_t ni = e->gt.n_images;
    double thr[N_T], rec_thr[N_R];
    linspace(0.5, 0.95, N_T, thr);
    linspace(0.0, 1.0, N_R, rec_thr);
    cdet *d = dup_mem(e->d, (size_t)e->n * sizeof *d);
    int64_t *dstart = calloc((size_t)(ni * K + 1), sizeof *dstart);
    const int64_t np = (int64_t)N_T * N_R * K * N_A * N_M, nrec = (int64_t)N_T * K * N_A * N_M;
    double *prec = malloc((size_t)np * sizeof *prec), *recall = malloc((size_t)nrec * sizeof *recall);
    acc_buf buf[N_A];
    memset(buf, 0, sizeof buf);
    run_ws w;
    memset(&w, 0, sizeof w);
    w.dts = malloc((size_t)(e->n ? e->n : 1) * sizeof *w.dts);
    s->class_ap = malloc((size_t)K * sizeof *s->class_ap);
    bool ok = d && dstart && prec && recall && w.dts && s->class_ap;
    if (ok) {
        qsort(d, (size_t)e->n, sizeof *d, cmp_det_group);
        for (int64_t j = 0; j < e->n; j++) dstart[d[j].img * K + d[j].label + 1]++;
        for (int64_t c = 0; c < ni * K; c++) dstart[c + 1] += dstart[c];
        for (int64_t i = 0; i < np; i++) prec[i] = -1;
        for (int64_t i = 0; i < nrec; i++) recall[i] = -1;
    }
    for (int k = 0; ok && k < K; k++) {
        int64_t n_entries = 0;
        for (int a = 0; a < N_A; a++) buf[a].n = 0, buf[a].npig = 0;
        for (int64_t ii = 0; ok && ii < ni; ii++) {
            const int64_t i = e->img_order[ii], c = i * K + k;
            if (e->n_seen && !e->seen[i]) continue;   /* pycocotools' params.imgIds: the images evaluated */
            const int G = (int)(e->gstart[c + 1] - e->gstart[c]);
            const int64_t Dall = dstart[c + 1] - dstart[c];
            if (G == 0 && Dall == 0) continue;
            n_entries++;
            for (int64_t j = 0; j < Dall; j++) w.dts[j] = &d[dstart[c] + j];
            qsort(w.dts, (size_t)Dall, sizeof *w.dts, cmp_det_score);
            const int D = (int)(Dall < MAX_DET ? Dall : MAX_DET);
            const int64_t *ga = e->gorder + e->gstart[c];
            if (!(ok = ws_g(&w, G > 0 ? G : 1))) break;
            for (int q = 0; q < D; q++)
                for (int j = 0; j < G; j++)
                    w.ious[q * G + j] = box_iou(w.dts[q]->b, e->gt.ann_bbox + 4 * ga[j], e->gt.ann_crowd[ga[j]]);
            for (int a = 0; ok && a < N_A; a++) ok = eval_img(e, ga, G, w.dts, D, w.ious, thr, a, &w, &buf[a]);
        }
        if (!n_entries) continue;
        for (int a = 0; ok && a < N_A; a++)
            for (int m = 0; ok && m < N_M; m++) ok = accumulate(&buf[a], K, k, a, m, rec_thr, &w, prec, recall);
    }
    if (ok) {
        /* summarize: precision entries in numpy's (t, r, k) order of s[:, :, :, a, m] */
        int t75 = -1;
        for (int t = 0; t < N_T; t++)
            if (thr[t] == 0.75) t75 = t;
        struct { int ap, t, a, m; } q[SEGC_COCO_N_STATS] = {
            {1, -1, 0, 2}, {1, 0, 0, 2}, {1, -2, 0, 2}, {1, -1, 1, 2}, {1, -1, 2, 2}, {1, -1, 3, 2},
            {0, -1, 0, 0}, {0, -1, 0, 1}, {0, -1, 0, 2}, {0, -1, 1, 2}, {0, -1, 2, 2}, {0, -1, 3, 2}};
        for (int st = 0; st < SEGC_COCO_N_STATS; st++) {
            int t0 = 0, t1 = N_T;
            if (q[st].t == 0) t1 = 1;
            if (q[st].t == -2) t0 = t75, t1 = t75 + 1;
            double sum = 0;
            int64_t cnt = 0;
            for (int t = t0; t >= 0 && t < t1; t++) {
                if (q[st].ap) {
                    for (int r = 0; r < N_R; r++)
                        for (int k = 0; k < K; k++) {
                            double v = prec[P_at(K, t, r, k, q[st].a, q[st].m)];
                            if (v > -1) sum += v, cnt++;
                        }
                } else {
                    for (int k = 0; k < K; k++) {
                        double v = recall[(((int64_t)t * K + k) * N_A + q[st].a) * N_M + q[st].m];
                        if (v > -1) sum += v, cnt++;
                    }
                }
            }
            s->stats[st] = cnt ? sum / (double)cnt : -1;
        }
        for (int k = 0; k < K; k++) {
            double sum = 0;
            int64_t cnt = 0;
            for (int t = 0; t < N_T; t++)
                for (int r = 0; r < N_R; r++) {
                    double v = prec[P_at(K, t, r, k, 0, 2)];
                    if (v > -1) sum += v, cnt++;
                }
            s->class_ap[k] = cnt ? sum / (double)cnt : -1;
        }
        s->n_classes = K;
        s->n_images = e->n_seen ? e->n_seen : ni;
        s->n_dets = e->n;
    } else
        snprintf(err, errlen, "coco_eval: out of memory evaluating %lld detections", (long long)e->n);
    for (int a = 0; a < N_A; a++) free(buf[a].score), free(buf[a].pos), free(buf[a].tp), free(buf[a].ig);
    ws_free(&w);
    free(d), free(dstart), free(prec), free(recall);
    if (!ok) segc_coco_summary_free(s);
    return ok;
}

void segc_coco_summary_free(segc_coco_summary *s) {
    if (!s) return;
    free(s->class_ap);
    s->class_ap = NULL;
}

void segc_coco_print_stats(FILE *out, const double st[SEGC_COCO_N_STATS]) {
    static const struct { int ap; const char *iou, *area; int md; } l[SEGC_COCO_N_STATS] = {
        {1, "0.50:0.95", "all", 100}, {1, "0.50", "all", 100},      {1, "0.75", "all", 100},
        {1, "0.50:0.95", "small", 100}, {1, "0.50:0.95", "medium", 100}, {1, "0.50:0.95", "large", 100},
        {0, "0.50:0.95", "all", 1},   {0, "0.50:0.95", "all", 10},  {0, "0.50:0.95", "all", 100},
        {0, "0.50:0.95", "small", 100}, {0, "0.50:0.95", "medium", 100}, {0, "0.50:0.95", "large", 100}};
    for (int i = 0; i < SEGC_COCO_N_STATS; i++)
        fprintf(out, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
                l[i].ap ? "Average Precision" : "Average Recall", l[i].ap ? "(AP)" : "(AR)", l[i].iou, l[i].area,
                l[i].md, st[i]);
}
