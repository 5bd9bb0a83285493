/* mmseg IoUMetric: exact per-class pixel counts, IoU / Acc / aAcc, the
 * per-class table and the JSON summary. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "segc/metrics.h"
#include "segc/safetensors.h"

static void set_views(segc_confusion *c) {
    int k = c->num_classes;
    c->intersect = c->counts;
    c->area_union = c->counts + k;
    c->pred_area = c->counts + 2 * (int64_t)k;
    c->label_area = c->counts + 3 * (int64_t)k;
}

bool segc_confusion_init(segc_confusion *c, int num_classes, int ignore_index, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    if (num_classes < 1) {
        snprintf(err, errlen, "confusion_init: num_classes must be >= 1, found %d", num_classes);
        return false;
    }
    c->counts = calloc(4 * (size_t)num_classes, sizeof *c->counts);
    if (!c->counts) {
        snprintf(err, errlen, "confusion_init: out of memory for %d classes", num_classes);
        return false;
    }
    c->num_classes = num_classes;
    c->ignore_index = ignore_index;
    set_views(c);
    return true;
}

void segc_confusion_free(segc_confusion *c) {
    free(c->counts);
    memset(c, 0, sizeof *c);
}

void segc_confusion_reset(segc_confusion *c) {
    if (c->counts) memset(c->counts, 0, 4 * (size_t)c->num_classes * sizeof *c->counts);
    c->n_images = 0;
}

static bool label_dtype_ok(segc_dtype dt) { return dt == SEGC_U8 || dt == SEGC_I32 || dt == SEGC_I64; }

/* Histogram bins for len ids of p (dtype dt) from index i0: 0..k-1 for class
 * ids, k for values torch.histc drops (negative or >= k) and, for labels,
 * k+1 for ignore_index. One loop per dtype so each vectorises. */
#define TO_BINS(T)                                                                                   \
    do {                                                                                             \
        const T *src = (const T *)p + i0;                                                            \
        for (int i = 0; i < len; i++) {                                                              \
            int64_t v = (int64_t)src[i];                                                             \
            int32_t bin = (v >= 0 && v < k) ? (int32_t)v : k;                                        \
            out[i] = (is_label && v == ignore) ? k + 1 : bin;                                        \
        }                                                                                            \
    } while (0)

static void to_bins(const void *p, segc_dtype dt, int64_t i0, int len, int32_t k, int64_t ignore, bool is_label,
                    int32_t *out) {
    switch (dt) {
    case SEGC_U8: TO_BINS(uint8_t); break;
    case SEGC_I32: TO_BINS(int32_t); break;
    default: TO_BINS(int64_t); break;
    }
}

#define CONF_CHUNK 4096

bool segc_confusion_add(segc_ctx *ctx, segc_confusion *c, const segc_tensor *pred, const segc_tensor *label) {
    if (!pred || !label) return false;
    char b1[64], b2[64];
    if (!c->counts) {
        segc_set_error(ctx, "confusion_add: accumulator not initialised");
        return false;
    }
    if (!label_dtype_ok(pred->dtype) || !label_dtype_ok(label->dtype)) {
        segc_set_error(ctx, "confusion_add: prediction and label must be u8/i32/i64, found %s and %s",
                       segc_dtype_name(pred->dtype), segc_dtype_name(label->dtype));
        return false;
    }
    if (pred->ndim < 2 || pred->ndim > 3 || !segc_same_shape(pred, label)) {
        segc_set_error(ctx, "confusion_add: prediction and label must both be [N, H, W] (or [H, W]) of one shape, "
                            "found %s and %s",
                       segc_shape_str(pred, b1, sizeof b1), segc_shape_str(label, b2, sizeof b2));
        return false;
    }
    const int32_t k = c->num_classes;
    const int64_t ignore = c->ignore_index;
    const int64_t n = segc_numel(pred);
    const int64_t n_chunks = (n + CONF_CHUNK - 1) / CONF_CHUNK;
    int nt = omp_get_max_threads();
    if (nt > n_chunks) nt = n_chunks > 0 ? (int)n_chunks : 1;
    /* Per thread, branch-free histograms: label bins 0..k+1 (k dropped, k+1
     * ignored); pred bins offset by k+2 when the label is ignored; intersect
     * bins offset by k+2 when prediction and label differ. Only bins < k count. */
    const int64_t stride = 3 * (2 * (int64_t)k + 4);
    int64_t *hist = segc_arena_calloc(&ctx->arena, (size_t)(nt * stride) * sizeof *hist);
    int32_t *bufs = segc_arena_alloc(&ctx->arena, (size_t)nt * 2 * CONF_CHUNK * sizeof *bufs);
    const void *pp = pred->data, *lp = label->data;
    const segc_dtype pdt = pred->dtype, ldt = label->dtype;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num();
        int64_t *hl = hist + t * stride, *hp = hl + (2 * k + 4), *hi = hp + (2 * k + 4);
        int32_t *pb = bufs + (int64_t)t * 2 * CONF_CHUNK, *lb = pb + CONF_CHUNK;
#pragma omp for schedule(static)
        for (int64_t ch = 0; ch < n_chunks; ch++) {
            int64_t i0 = ch * CONF_CHUNK;
            int len = (int)(n - i0 < CONF_CHUNK ? n - i0 : CONF_CHUNK);
            to_bins(lp, ldt, i0, len, k, ignore, true, lb);
            to_bins(pp, pdt, i0, len, k, ignore, false, pb);
            for (int i = 0; i < len; i++) {
                int32_t l = lb[i], q = pb[i];
                hl[l]++;
                hp[q + (l == k + 1 ? k + 2 : 0)]++;
                hi[l + (q != l ? k + 2 : 0)]++;
            }
        }
    }
    for (int t = 0; t < nt; t++) {   /* integer sums: order does not matter, kept fixed anyway */
        const int64_t *hl = hist + t * stride, *hp = hl + (2 * k + 4), *hi = hp + (2 * k + 4);
        for (int j = 0; j < k; j++) {
            c->intersect[j] += hi[j];
            c->pred_area[j] += hp[j];
            c->label_area[j] += hl[j];
            c->area_union[j] += hp[j] + hl[j] - hi[j];
        }
    }
    c->n_images += pred->ndim == 3 ? pred->shape[0] : 1;
    return true;
}

bool segc_confusion_merge(segc_confusion *dst, const segc_confusion *src, char *err, size_t errlen) {
    if (dst->num_classes != src->num_classes || dst->ignore_index != src->ignore_index || !dst->counts ||
        !src->counts) {
        snprintf(err, errlen,
                 "confusion_merge: accumulators differ: %d classes (ignore %d) vs %d classes (ignore %d)",
                 dst->num_classes, dst->ignore_index, src->num_classes, src->ignore_index);
        return false;
    }
    for (int64_t i = 0; i < 4 * (int64_t)dst->num_classes; i++) dst->counts[i] += src->counts[i];
    dst->n_images += src->n_images;
    return true;
}

static double ratio_or_nan(int64_t num, int64_t den) { return den == 0 ? NAN : (double)num / (double)den; }

static double nanmean(const double *v, int n) {
    double s = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) s += v[i], cnt++;
    return cnt ? s / cnt : NAN;
}

bool segc_metrics_compute(const segc_confusion *c, segc_metrics *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    int k = c->num_classes;
    m->iou = malloc((size_t)(k > 0 ? k : 1) * sizeof *m->iou);
    m->acc = malloc((size_t)(k > 0 ? k : 1) * sizeof *m->acc);
    if (!m->iou || !m->acc || !c->counts) {
        segc_metrics_free(m);
        snprintf(err, errlen, "metrics_compute: %s", c->counts ? "out of memory" : "accumulator not initialised");
        return false;
    }
    m->num_classes = k;
    int64_t sum_inter = 0, sum_label = 0;
    for (int j = 0; j < k; j++) {
        m->iou[j] = ratio_or_nan(c->intersect[j], c->area_union[j]);
        m->acc[j] = ratio_or_nan(c->intersect[j], c->label_area[j]);
        sum_inter += c->intersect[j];
        sum_label += c->label_area[j];
    }
    m->aAcc = ratio_or_nan(sum_inter, sum_label);
    m->mIoU = nanmean(m->iou, k);
    m->mAcc = nanmean(m->acc, k);
    return true;
}

void segc_metrics_free(segc_metrics *m) {
    free(m->iou);
    free(m->acc);
    memset(m, 0, sizeof *m);
}

double segc_metric_percent(double fraction) {
    if (isnan(fraction)) return NAN;
    return nearbyint(fraction * 100.0 * 100.0) / 100.0;   /* numpy.round: half to even on the scaled value */
}

/* ---- printing ---- */

void segc_metric_percent_str(char *buf, size_t n, double fraction) {
    double p = segc_metric_percent(fraction);
    if (isnan(p)) snprintf(buf, n, "nan");
    else snprintf(buf, n, "%.2f", p);
}

static const char *class_label(const char *const *names, int j, char *buf, size_t n) {
    if (names && names[j]) return names[j];
    snprintf(buf, n, "%d", j);
    return buf;
}

/* prettytable's centring: odd leftover space goes right for odd-length text, left otherwise */
static void put_centered(FILE *out, const char *text, int width) {
    int len = (int)strlen(text), excess = width - len;
    int left = excess / 2, right = excess / 2;
    if (excess % 2) {
        if (len % 2) right++;
        else left++;
    }
    fprintf(out, " %*s%s%*s |", left, "", text, right, "");
}

static void put_rule(FILE *out, const int *w, int ncol) {
    fputc('+', out);
    for (int c = 0; c < ncol; c++) {
        for (int i = 0; i < w[c] + 2; i++) fputc('-', out);
        fputc('+', out);
    }
    fputc('\n', out);
}

void segc_print_table(FILE *out, char (*cells)[SEGC_TABLE_CELL], int rows, int ncol) {
    int w[SEGC_TABLE_MAX_COLS] = {0};
    if (ncol < 1 || ncol > SEGC_TABLE_MAX_COLS) return;
    for (int i = 0; i < rows * ncol; i++)
        if ((int)strlen(cells[i]) > w[i % ncol]) w[i % ncol] = (int)strlen(cells[i]);
    put_rule(out, w, ncol);
    for (int rw = 0; rw < rows; rw++) {
        fputc('|', out);
        for (int c = 0; c < ncol; c++) put_centered(out, cells[rw * ncol + c], w[c]);
        fputc('\n', out);
        if (rw == 0) put_rule(out, w, ncol);
    }
    put_rule(out, w, ncol);
}

void segc_metrics_print(FILE *out, const segc_metrics *m, const char *const *class_names) {
    char nb[32];
    char (*cells)[SEGC_TABLE_CELL] = calloc((size_t)(m->num_classes + 1) * 3, sizeof *cells);
    if (!cells) return;
    snprintf(cells[0], SEGC_TABLE_CELL, "Class"), snprintf(cells[1], SEGC_TABLE_CELL, "IoU");
    snprintf(cells[2], SEGC_TABLE_CELL, "Acc");
    for (int j = 0; j < m->num_classes; j++) {
        char(*row)[SEGC_TABLE_CELL] = cells + (j + 1) * 3;
        snprintf(row[0], SEGC_TABLE_CELL, "%s", class_label(class_names, j, nb, sizeof nb));
        segc_metric_percent_str(row[1], SEGC_TABLE_CELL, m->iou[j]);
        segc_metric_percent_str(row[2], SEGC_TABLE_CELL, m->acc[j]);
    }
    fprintf(out, "per class results:\n");
    segc_print_table(out, cells, m->num_classes + 1, 3);
    free(cells);
    char a[32], b[32], c[32];
    segc_metric_percent_str(a, sizeof a, m->aAcc);
    segc_metric_percent_str(b, sizeof b, m->mIoU);
    segc_metric_percent_str(c, sizeof c, m->mAcc);
    fprintf(out, "aAcc: %s  mIoU: %s  mAcc: %s\n", a, b, c);
}

/* ---- JSON ---- */

static cJSON *percent_number(double fraction) {
    double p = segc_metric_percent(fraction);
    return isnan(p) ? cJSON_CreateNull() : cJSON_CreateNumber(p);
}

char *segc_metrics_json(const segc_metrics *m, const char *const *class_names) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddItemToObject(root, "mIoU", percent_number(m->mIoU));
    cJSON_AddItemToObject(root, "mAcc", percent_number(m->mAcc));
    cJSON_AddItemToObject(root, "aAcc", percent_number(m->aAcc));
    cJSON *iou = cJSON_CreateObject(), *acc = cJSON_CreateObject();
    char nb[32];
    for (int j = 0; j < m->num_classes && iou && acc; j++) {
        const char *name = class_label(class_names, j, nb, sizeof nb);
        cJSON_AddItemToObject(iou, name, percent_number(m->iou[j]));
        cJSON_AddItemToObject(acc, name, percent_number(m->acc[j]));
    }
    cJSON_AddItemToObject(root, "IoU", iou);
    cJSON_AddItemToObject(root, "Acc", acc);
    char *s = iou && acc ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

bool segc_metrics_write_json(const char *path, const segc_metrics *m, const char *const *class_names, char *err,
                             size_t errlen) {
    char *s = segc_metrics_json(m, class_names);
    if (!s) {
        snprintf(err, errlen, "metrics_write_json: out of memory writing %s", path);
        return false;
    }
    const void *parts[2] = {s, "\n"};
    size_t sizes[2] = {strlen(s), 1};
    bool ok = segc_write_file_atomic(path, parts, sizes, 2, err, errlen);
    free(s);
    return ok;
}
