/* metrics: mmseg IoUMetric counts and metrics against tests/fixtures/gen_metrics.py (torch.histc +
 * numpy nanmean, as mmseg computes them), merging, the table printer, JSON output, errors; evaluation
 * of a model over a (synthetic folder) dataset. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/harness.h"
#include "segc/image_io.h"
#include "segc/metrics.h"
#include "segc/ops.h"
#include "segc/predict.h"

static segc_st_file *fx;

static int setup(void **state) {
    fx = fx_open("metrics.safetensors");
    return 0;
}
static int teardown(void **state) {
    segc_st_close(fx);
    return 0;
}

/* F64 / I64 reference entry copied out (fixture data may be unaligned) */
static void *ref_raw(const char *cas, const char *key, int64_t *n, size_t es) {
    char name[128];
    snprintf(name, sizeof name, "%s/%s", cas, key);
    const segc_st_entry *e = segc_st_get(fx, name);
    assert_non_null(e);
    *n = (int64_t)(e->nbytes / es);
    void *p = malloc(e->nbytes ? e->nbytes : 1);
    memcpy(p, e->data, e->nbytes);
    return p;
}

static void assert_same_double(double got, double want, double tol, const char *what, int i) {
    if (isnan(want)) {
        if (!isnan(got)) fail_msg("%s[%d]: expected NaN, found %.17g", what, i, got);
        return;
    }
    if (!(fabs(got - want) <= tol)) fail_msg("%s[%d]: expected %.17g, found %.17g", what, i, want, got);
}

static void accumulate_case(segc_ctx *ctx, const char *cas, segc_confusion *c, int first, int step) {
    int nb = (int)fx_param_int(fx, cas, "n_batches", 0);
    for (int i = first; i < nb; i += step) {
        char kp[32], kl[32];
        snprintf(kp, sizeof kp, "pred%d", i);
        snprintf(kl, sizeof kl, "label%d", i);
        segc_tensor *p = fx_tensor(ctx, fx, cas, kp), *l = fx_tensor(ctx, fx, cas, kl);
        assert_non_null(p);
        assert_non_null(l);
        assert_true(segc_confusion_add(ctx, c, p, l));
    }
}

static void check_case(const char *cas) {
    segc_ctx *ctx = segc_ctx_new(0);
    int k = (int)fx_param_int(fx, cas, "num_classes", 0);
    int ignore = (int)fx_param_int(fx, cas, "ignore_index", 255);
    char err[256];
    segc_confusion c;
    assert_true(segc_confusion_init(&c, k, ignore, err, sizeof err));
    accumulate_case(ctx, cas, &c, 0, 1);
    const char *keys[4] = {"intersect", "union", "pred_area", "label_area"};
    const int64_t *got[4] = {c.intersect, c.area_union, c.pred_area, c.label_area};
    for (int q = 0; q < 4; q++) {
        int64_t n;
        int64_t *want = ref_raw(cas, keys[q], &n, 8);
        assert_int_equal(n, k);
        for (int j = 0; j < k; j++)
            if (got[q][j] != want[j]) fail_msg("%s %s[%d]: expected %lld, found %lld", cas, keys[q], j,
                                               (long long)want[j], (long long)got[q][j]);
        free(want);
    }
    segc_metrics m;
    assert_true(segc_metrics_compute(&c, &m, err, sizeof err));
    int64_t n;
    double *iou = ref_raw(cas, "iou", &n, 8), *acc = ref_raw(cas, "acc", &n, 8);
    double *iou_pct = ref_raw(cas, "iou_pct", &n, 8), *acc_pct = ref_raw(cas, "acc_pct", &n, 8);
    double *sum = ref_raw(cas, "summary", &n, 8), *sum_pct = ref_raw(cas, "summary_pct", &n, 8);
    for (int j = 0; j < k; j++) {
        assert_same_double(m.iou[j], iou[j], 1e-15, "iou", j);
        assert_same_double(m.acc[j], acc[j], 1e-15, "acc", j);
        /* mmseg's reported numbers: exact, same rounding */
        assert_same_double(segc_metric_percent(m.iou[j]), iou_pct[j], 0, "iou %", j);
        assert_same_double(segc_metric_percent(m.acc[j]), acc_pct[j], 0, "acc %", j);
    }
    const double mine[3] = {m.aAcc, m.mIoU, m.mAcc};
    for (int j = 0; j < 3; j++) {
        assert_same_double(mine[j], sum[j], 1e-15, "aAcc/mIoU/mAcc", j);
        assert_same_double(segc_metric_percent(mine[j]), sum_pct[j], 0, "aAcc/mIoU/mAcc %", j);
    }
    free(iou), free(acc), free(iou_pct), free(acc_pct), free(sum), free(sum_pct);

    /* merging: odd and even batches accumulated separately give the same counts */
    segc_confusion a, b;
    assert_true(segc_confusion_init(&a, k, ignore, err, sizeof err));
    assert_true(segc_confusion_init(&b, k, ignore, err, sizeof err));
    accumulate_case(ctx, cas, &a, 0, 2);
    accumulate_case(ctx, cas, &b, 1, 2);
    assert_true(segc_confusion_merge(&a, &b, err, sizeof err));
    assert_memory_equal(a.counts, c.counts, 4 * (size_t)k * sizeof(int64_t));
    assert_int_equal(a.n_images, c.n_images);
    segc_confusion_reset(&a);
    for (int j = 0; j < 4 * k; j++) assert_int_equal(a.counts[j], 0);
    assert_int_equal(a.n_images, 0);

    segc_metrics_free(&m);
    segc_confusion_free(&a);
    segc_confusion_free(&b);
    segc_confusion_free(&c);
    segc_ctx_free(ctx);
}

static void test_fixture_basic(void **state) { check_case("m_basic"); }
static void test_fixture_i64(void **state) { check_case("m_i64"); }
static void test_fixture_city(void **state) { check_case("m_city"); }

/* hand-checkable example: classes 0..2, class 2 absent, one ignored pixel */
static void small_metrics(segc_confusion *c, segc_metrics *m) {
    segc_ctx *ctx = segc_ctx_new(0);
    char err[256];
    assert_true(segc_confusion_init(c, 3, 255, err, sizeof err));
    uint8_t pred[6] = {0, 0, 1, 1, 1, 0}, lab[6] = {0, 0, 0, 1, 1, 255};
    segc_tensor *p = segc_tensor_wrap(ctx, SEGC_U8, 2, SHAPE(2, 3), pred);
    segc_tensor *l = segc_tensor_wrap(ctx, SEGC_U8, 2, SHAPE(2, 3), lab);
    assert_true(segc_confusion_add(ctx, c, p, l));
    assert_int_equal(c->n_images, 1);
    assert_true(segc_metrics_compute(c, m, err, sizeof err));
    segc_ctx_free(ctx);
}

static void test_hand_example(void **state) {
    segc_confusion c;
    segc_metrics m;
    small_metrics(&c, &m);
    /* class 0: pred {0,1}, label {0,1,2} -> I 2, U 3; class 1: pred {2,3,4}, label {3,4} -> I 2, U 3 */
    assert_int_equal(c.intersect[0], 2);
    assert_int_equal(c.area_union[0], 3);
    assert_int_equal(c.pred_area[1], 3);
    assert_int_equal(c.label_area[1], 2);
    assert_true(fabs(m.iou[0] - 2.0 / 3) < 1e-15 && fabs(m.iou[1] - 2.0 / 3) < 1e-15 && isnan(m.iou[2]));
    assert_true(fabs(m.acc[0] - 2.0 / 3) < 1e-15 && fabs(m.acc[1] - 1.0) < 1e-15 && isnan(m.acc[2]));
    assert_true(fabs(m.aAcc - 0.8) < 1e-15);
    assert_true(fabs(m.mIoU - 2.0 / 3) < 1e-15);
    assert_true(fabs(m.mAcc - 5.0 / 6) < 1e-15);
    assert_true(fabs(segc_metric_percent(m.mAcc) - 83.33) < 1e-12);
    segc_metrics_free(&m);
    segc_confusion_free(&c);
}

static void test_print_table(void **state) {
    segc_confusion c;
    segc_metrics m;
    small_metrics(&c, &m);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    const char *names[3] = {"sky", "building", "car"};
    segc_metrics_print(f, &m, names);
    fclose(f);
    assert_int_equal(strncmp(buf, "per class results:\n", 19), 0);
    /* widths come from the longest cell: Acc column is 6 wide ("100.00") */
    assert_non_null(strstr(buf, "+----------+-------+--------+\n"));
    assert_non_null(strstr(buf, "|  Class   |  IoU  |  Acc   |\n"));
    assert_non_null(strstr(buf, "|   sky    | 66.67 | 66.67  |\n"));
    assert_non_null(strstr(buf, "| building | 66.67 | 100.00 |\n"));
    assert_non_null(strstr(buf, "|   car    |  nan  |  nan   |\n"));
    assert_non_null(strstr(buf, "aAcc: 80.00  mIoU: 66.67  mAcc: 83.33\n"));
    free(buf);
    /* no names: indices */
    f = open_memstream(&buf, &len);
    segc_metrics_print(f, &m, NULL);
    fclose(f);
    assert_non_null(strstr(buf, "|   2   |  nan  |  nan   |\n"));
    free(buf);
    segc_metrics_free(&m);
    segc_confusion_free(&c);
}

static void test_json(void **state) {
    segc_confusion c;
    segc_metrics m;
    small_metrics(&c, &m);
    const char *names[3] = {"sky", "building", "car"};
    char *s = segc_metrics_json(&m, names);
    assert_non_null(s);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    assert_true(fabs(cJSON_GetObjectItem(j, "mIoU")->valuedouble - 66.67) < 1e-12);
    assert_true(fabs(cJSON_GetObjectItem(j, "mAcc")->valuedouble - 83.33) < 1e-12);
    assert_true(fabs(cJSON_GetObjectItem(j, "aAcc")->valuedouble - 80.0) < 1e-12);
    cJSON *iou = cJSON_GetObjectItem(j, "IoU"), *acc = cJSON_GetObjectItem(j, "Acc");
    assert_true(fabs(cJSON_GetObjectItem(iou, "building")->valuedouble - 66.67) < 1e-12);
    assert_true(fabs(cJSON_GetObjectItem(acc, "building")->valuedouble - 100.0) < 1e-12);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(iou, "car")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(acc, "car")));
    assert_int_equal(strncmp(s, "{\"mIoU\":", 8), 0);   /* key order as documented */
    cJSON_Delete(j);
    free(s);

    char path[] = "/tmp/segc_metrics_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char err[256];
    assert_true(segc_metrics_write_json(path, &m, NULL, err, sizeof err));
    FILE *f = fopen(path, "r");
    char buf[1024] = {0};
    assert_true(fread(buf, 1, sizeof buf - 1, f) > 0);
    fclose(f);
    unlink(path);
    j = cJSON_Parse(buf);
    assert_non_null(j);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "IoU"), "2")));
    assert_true(fabs(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "IoU"), "0")->valuedouble - 66.67) < 1e-12);
    cJSON_Delete(j);
    assert_false(segc_metrics_write_json("/nonexistent-dir/x.json", &m, NULL, err, sizeof err));
    segc_metrics_free(&m);
    segc_confusion_free(&c);
}

/* no labelled pixel at all: everything NaN / null */
static void test_all_ignored(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    char err[256];
    segc_confusion c;
    assert_true(segc_confusion_init(&c, 2, 255, err, sizeof err));
    uint8_t pred[4] = {0, 1, 1, 0}, lab[4] = {255, 255, 255, 255};
    assert_true(segc_confusion_add(ctx, &c, segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(1, 2, 2), pred),
                                   segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(1, 2, 2), lab)));
    /* an empty batch is fine too */
    assert_true(segc_confusion_add(ctx, &c, segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(0, 2, 2), pred),
                                   segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(0, 2, 2), lab)));
    for (int j = 0; j < 8; j++) assert_int_equal(c.counts[j], 0);
    segc_metrics m;
    assert_true(segc_metrics_compute(&c, &m, err, sizeof err));
    assert_true(isnan(m.aAcc) && isnan(m.mIoU) && isnan(m.mAcc));
    char *s = segc_metrics_json(&m, NULL);
    assert_non_null(strstr(s, "\"mIoU\":null"));
    free(s);
    segc_metrics_free(&m);
    segc_confusion_free(&c);
    segc_ctx_free(ctx);
}

/* the same counts for any thread count, and mixed dtypes agree with u8 */
static void test_threads_and_dtypes(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    char err[256];
    const int64_t n = 3 * 97 * 131;
    segc_tensor *p8 = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(3, 97, 131));
    segc_tensor *l8 = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(3, 97, 131));
    segc_tensor *p32 = segc_tensor_new(ctx, SEGC_I32, 3, SHAPE(3, 97, 131));
    segc_tensor *l64 = segc_tensor_new(ctx, SEGC_I64, 3, SHAPE(3, 97, 131));
    segc_rng r;
    segc_rng_init(&r, 5);
    for (int64_t i = 0; i < n; i++) {
        uint32_t a = segc_rng_u32(&r) % 23, b = segc_rng_u32(&r) % 23;
        if (b == 21) b = 255;
        ((uint8_t *)p8->data)[i] = (uint8_t)a;
        ((uint8_t *)l8->data)[i] = (uint8_t)b;
        ((int32_t *)p32->data)[i] = (int32_t)a;
        ((int64_t *)l64->data)[i] = b;
    }
    segc_confusion c1, c2, c3;
    assert_true(segc_confusion_init(&c1, 20, 255, err, sizeof err));
    assert_true(segc_confusion_init(&c2, 20, 255, err, sizeof err));
    assert_true(segc_confusion_init(&c3, 20, 255, err, sizeof err));
    int saved = segc_get_num_threads();
    segc_set_num_threads(ctx, 1);
    assert_true(segc_confusion_add(ctx, &c1, p8, l8));
    segc_set_num_threads(ctx, 2);
    assert_true(segc_confusion_add(ctx, &c2, p8, l8));
    assert_true(segc_confusion_add(ctx, &c3, p32, l64));
    segc_set_num_threads(ctx, saved);
    assert_memory_equal(c1.counts, c2.counts, 80 * sizeof(int64_t));
    assert_memory_equal(c1.counts, c3.counts, 80 * sizeof(int64_t));
    /* brute force */
    int64_t la[20] = {0}, pa[20] = {0}, in[20] = {0};
    for (int64_t i = 0; i < n; i++) {
        int a = ((uint8_t *)p8->data)[i], b = ((uint8_t *)l8->data)[i];
        if (b == 255) continue;
        if (b < 20) la[b]++;
        if (a < 20) pa[a]++;
        if (a == b && a < 20) in[a]++;
    }
    for (int j = 0; j < 20; j++) {
        assert_int_equal(c1.label_area[j], la[j]);
        assert_int_equal(c1.pred_area[j], pa[j]);
        assert_int_equal(c1.intersect[j], in[j]);
        assert_int_equal(c1.area_union[j], la[j] + pa[j] - in[j]);
    }
    assert_int_equal(c1.n_images, 3);
    segc_confusion_free(&c1);
    segc_confusion_free(&c2);
    segc_confusion_free(&c3);
    segc_ctx_free(ctx);
}

static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    char err[256];
    segc_confusion c, d;
    assert_false(segc_confusion_init(&c, 0, 255, err, sizeof err));
    assert_non_null(strstr(err, "confusion_init"));
    assert_true(segc_confusion_init(&c, 4, 255, err, sizeof err));
    segc_tensor *p = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(1, 4, 5));
    segc_tensor *l = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(1, 5, 4));
    assert_false(segc_confusion_add(ctx, &c, p, l));   /* prediction/label size mismatch */
    assert_non_null(strstr(segc_last_error(ctx), "confusion_add"));
    assert_non_null(strstr(segc_last_error(ctx), "[1, 4, 5] and [1, 5, 4]"));
    segc_clear_error(ctx);
    segc_tensor *pf = segc_tensor_zeros(ctx, SEGC_F32, 3, SHAPE(1, 4, 5));
    assert_false(segc_confusion_add(ctx, &c, pf, p));   /* float predictions */
    assert_non_null(strstr(segc_last_error(ctx), "confusion_add"));
    segc_clear_error(ctx);
    segc_tensor *p4 = segc_tensor_zeros(ctx, SEGC_U8, 4, SHAPE(1, 1, 4, 5));
    assert_false(segc_confusion_add(ctx, &c, p4, p4));   /* 4-D */
    assert_non_null(strstr(segc_last_error(ctx), "confusion_add"));
    segc_clear_error(ctx);
    assert_false(segc_confusion_add(ctx, &c, NULL, l));
    for (int j = 0; j < 16; j++) assert_int_equal(c.counts[j], 0);   /* untouched by failures */
    segc_confusion z = {0};
    assert_false(segc_confusion_add(ctx, &z, p, p));
    assert_non_null(strstr(segc_last_error(ctx), "confusion_add"));
    segc_clear_error(ctx);
    assert_true(segc_confusion_init(&d, 5, 255, err, sizeof err));
    assert_false(segc_confusion_merge(&c, &d, err, sizeof err));
    assert_non_null(strstr(err, "confusion_merge"));
    segc_confusion_free(&d);
    assert_true(segc_confusion_init(&d, 4, 0, err, sizeof err));
    assert_false(segc_confusion_merge(&c, &d, err, sizeof err));
    segc_metrics m;
    assert_false(segc_metrics_compute(&z, &m, err, sizeof err));
    assert_non_null(strstr(err, "metrics_compute"));
    segc_confusion_free(&d);
    segc_confusion_free(&c);
    segc_ctx_free(ctx);
}

/* rough speed of the accumulator on a Cityscapes-sized batch (printed, not asserted) */
static void test_speed(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    char err[256];
    segc_confusion c;
    assert_true(segc_confusion_init(&c, 19, 255, err, sizeof err));
    segc_tensor *p = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(1, 1024, 2048));
    segc_tensor *l = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(1, 1024, 2048));
    for (int64_t i = 0; i < 1024 * 2048; i++) {
        ((uint8_t *)p->data)[i] = (uint8_t)(i % 19);
        ((uint8_t *)l->data)[i] = (uint8_t)((i / 7) % 21 == 20 ? 255 : (i / 7) % 19);
    }
    double t0 = segc_now_s();
    assert_true(segc_confusion_add(ctx, &c, p, l));
    printf("confusion_add 1x1024x2048 u8: %.2f ms\n", 1e3 * (segc_now_s() - t0));
    segc_confusion_free(&c);
    segc_ctx_free(ctx);
}


/* ---- evaluation over a dataset (segc_eval_dataset / segc_eval_batch) ---- */

/* identity 1x1 conv: the class of a pixel is its largest normalised channel */
static segc_tensor *identity_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    return segc_conv2d(ctx, x, (segc_tensor *)model, NULL, NULL);
}
static segc_tensor *failing_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    segc_set_error(ctx, "model: out of order");
    return NULL;
}

static int expected_class(const uint8_t *rgb) {
    const float mean[3] = SEGC_IMAGENET_MEAN, std[3] = SEGC_IMAGENET_STD;
    int best = 0;
    for (int c = 1; c < 3; c++)
        if ((rgb[c] - mean[c]) / std[c] > (rgb[best] - mean[best]) / std[best]) best = c;
    return best;
}

static void write_sample(const char *root, const char *stem, int h, int w, uint64_t seed) {
    segc_image im, lab;
    char path[512], err[256];
    assert_true(segc_image_alloc(&im, h, w, 3, SEGC_U8) && segc_image_alloc(&lab, h, w, 1, SEGC_U8));
    segc_rng r;
    segc_rng_init(&r, seed);
    for (int q = 0; q < h * w; q++) {
        for (int c = 0; c < 3; c++) ((uint8_t *)im.data)[3 * q + c] = (uint8_t)(segc_rng_u32(&r) % 256);
        /* labels agree with the model most of the time, some ignored */
        uint32_t u = segc_rng_u32(&r) % 10;
        int id = u < 6 ? expected_class((uint8_t *)im.data + 3 * q) : (u < 9 ? (int)(u % 3) : 255);
        ((uint8_t *)lab.data)[q] = (uint8_t)id;
    }
    snprintf(path, sizeof path, "%s/images/%s.png", root, stem);
    assert_true(segc_png_write(path, &im, NULL, 0, err, sizeof err));
    snprintf(path, sizeof path, "%s/masks/%s.png", root, stem);
    assert_true(segc_png_write(path, &lab, NULL, 0, err, sizeof err));
    segc_image_free(&im);
    segc_image_free(&lab);
}

/* the reference: predictions computed here from the files, counted with segc_confusion_add */
static void reference_confusion(const char *root, segc_confusion *c) {
    const char *stems[3] = {"a", "b", "c"};
    segc_ctx *ctx = segc_ctx_new(0);
    char path[512], err[256];
    for (int i = 0; i < 3; i++) {
        segc_image im, lab;
        snprintf(path, sizeof path, "%s/images/%s.png", root, stems[i]);
        assert_true(segc_image_read(path, SEGC_READ_RGB, &im, err, sizeof err));
        snprintf(path, sizeof path, "%s/masks/%s.png", root, stems[i]);
        assert_true(segc_image_read(path, SEGC_READ_LABEL, &lab, err, sizeof err));
        segc_tensor *p = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(1, im.h, im.w));
        for (int q = 0; q < im.h * im.w; q++) ((uint8_t *)p->data)[q] = (uint8_t)expected_class((uint8_t *)im.data + 3 * q);
        assert_true(segc_confusion_add(ctx, c, p, segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(1, im.h, im.w), lab.data)));
        segc_image_free(&im);
        segc_image_free(&lab);
    }
    segc_ctx_free(ctx);
}

static segc_evaluator *new_eval3(void) {
    char err[256];
    segc_eval_spec spec = {0};
    spec.num_classes = 3;
    spec.ignore_index = 255;
    segc_evaluator *e = segc_evaluator_new(&spec, err, sizeof err);
    if (!e) fail_msg("%s", err);
    return e;
}

/* the evaluator's pixel metrics are those of the reference counts, bit for bit */
static void expect_same_metrics(const segc_evaluator *e, const segc_confusion *want, int64_t n_images) {
    char err[256];
    segc_eval_result r;
    segc_metrics m;
    if (!segc_evaluator_result(e, &r, err, sizeof err)) fail_msg("%s", err);
    assert_true(segc_metrics_compute(want, &m, err, sizeof err));
    assert_memory_equal(r.pixel.iou, m.iou, 3 * sizeof(double));
    assert_memory_equal(r.pixel.acc, m.acc, 3 * sizeof(double));
    assert_memory_equal(&r.pixel.aAcc, &m.aAcc, sizeof(double));
    if (n_images >= 0) assert_int_equal(r.n_images, n_images);
    segc_metrics_free(&m);
    segc_eval_result_free(&r);
}

static void test_eval_dataset(void **state) {
    char root[] = "/tmp/segc_evalds_XXXXXX", cmd[256], err[512];
    assert_non_null(mkdtemp(root));
    snprintf(cmd, sizeof cmd, "mkdir -p %s/images %s/masks && printf 'x\\ny\\nz\\n' > %s/classes.txt", root, root, root);
    assert_int_equal(system(cmd), 0);
    write_sample(root, "a", 5, 7, 1);
    write_sample(root, "b", 6, 4, 2);   /* a different size: padded in a batch of 2 */
    write_sample(root, "c", 5, 7, 3);
    segc_dataset *ds = segc_dataset_open("folder", root, NULL, NULL, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_int_equal(segc_dataset_num_classes(ds), 3);

    segc_confusion want;
    assert_true(segc_confusion_init(&want, 3, 255, err, sizeof err));
    reference_confusion(root, &want);

    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    segc_tensor *w = segc_tensor_heap(SEGC_F32, 4, SHAPE(3, 3, 1, 1));
    memset(w->data, 0, segc_nbytes(w));
    for (int c = 0; c < 3; c++) segc_f32(w)[c * 3 + c] = 10.f;
    segc_eval_opts o;
    segc_eval_opts_default(&o);
    o.quiet = true;
    const int batch_sizes[2] = {1, 2};
    for (int bi = 0; bi < 2; bi++) {
        o.batch_size = batch_sizes[bi];
        segc_evaluator *got = new_eval3();
        if (!segc_eval_dataset(ctx, work, identity_forward, w, ds, &o, got, err, sizeof err)) fail_msg("%s", err);
        expect_same_metrics(got, &want, 3);
        segc_evaluator_free(got);
    }
    /* kept report samples are spread over the split (a and c of a, b, c), not the first ones */
    {
        segc_eval_sample kept[2];
        int n_kept = 0;
        memset(kept, 0, sizeof kept);
        o.batch_size = 1;
        o.keep = 2;
        o.samples = kept;
        o.n_kept = &n_kept;
        segc_evaluator *got = new_eval3();
        if (!segc_eval_dataset(ctx, work, identity_forward, w, ds, &o, got, err, sizeof err)) fail_msg("%s", err);
        segc_evaluator_free(got);
        assert_int_equal(n_kept, 2);
        print_message("  kept %s, %s\n", kept[0].name, kept[1].name);
        assert_true(kept[0].name[0] == 'a' && kept[0].name[1] == '.');   /* base names: a.png, c.png */
        assert_true(kept[1].name[0] == 'c' && kept[1].name[1] == '.');
        for (int i = 0; i < n_kept; i++) segc_eval_sample_free(&kept[i]);
        o.keep = 0;
        o.samples = NULL;
        o.n_kept = NULL;
    }
    /* two ranks, merged */
    o.batch_size = 1;
    o.world_size = 2;
    segc_evaluator *r0 = new_eval3(), *r1 = new_eval3();
    o.rank = 0;
    assert_true(segc_eval_dataset(ctx, NULL, identity_forward, w, ds, &o, r0, err, sizeof err));
    o.rank = 1;
    assert_true(segc_eval_dataset(ctx, NULL, identity_forward, w, ds, &o, r1, err, sizeof err));
    assert_true(segc_evaluator_merge(r0, r1, err, sizeof err));
    expect_same_metrics(r0, &want, 3);
    /* max_samples, a resizing test pipeline with slide + flip TTA: labels stay at their size */
    segc_pipeline pl;
    segc_pipeline_seg_eval(&pl, 20, 12);
    segc_eval_opts_default(&o);
    o.quiet = true;
    o.pipeline = &pl;
    o.max_samples = 2;
    o.infer.mode = SEGC_INFER_SLIDE;
    o.infer.crop_h = o.infer.crop_w = 6;
    o.infer.stride_h = o.infer.stride_w = 4;
    o.infer.flip = true;
    segc_evaluator_free(r0);
    r0 = new_eval3();
    assert_true(segc_eval_dataset(ctx, work, identity_forward, w, ds, &o, r0, err, sizeof err));
    segc_eval_result res;
    assert_true(segc_evaluator_result(r0, &res, err, sizeof err));
    assert_int_equal(res.n_images, 2);
    segc_confusion ab;   /* the label areas of samples a and b */
    assert_true(segc_confusion_init(&ab, 3, 255, err, sizeof err));
    segc_ctx *tmp = segc_ctx_new(0);
    for (int i = 0; i < 2; i++) {
        segc_sample s;
        assert_true(segc_dataset_load(ds, i, &s, err, sizeof err));
        segc_tensor *l = segc_tensor_wrap(tmp, SEGC_U8, 2, SHAPE(s.label.h, s.label.w), s.label.data);
        assert_true(segc_confusion_add(tmp, &ab, l, l));
        segc_sample_free(&s);
    }
    segc_ctx_free(tmp);
    /* the label areas of a and b: Acc denominators, seen through the per-class pixel totals */
    int64_t total = 0;
    for (int k = 0; k < 3; k++) total += ab.label_area[k];
    assert_true(total > 0);
    segc_metrics am;
    assert_true(segc_metrics_compute(&ab, &am, err, sizeof err));
    for (int k = 0; k < 3; k++) assert_true(isnan(am.acc[k]) == isnan(res.pixel.acc[k]));
    segc_metrics_free(&am);
    segc_eval_result_free(&res);
    segc_confusion_free(&ab);

    /* errors: a failing model names the sample; a batch without labels */
    segc_eval_opts_default(&o);
    o.quiet = true;
    assert_false(segc_eval_dataset(ctx, work, failing_forward, NULL, ds, &o, r0, err, sizeof err));
    assert_non_null(strstr(err, "a.png"));
    assert_non_null(strstr(err, "out of order"));
    assert_false(ctx->has_err);
    o.infer.mode = SEGC_INFER_SLIDE;   /* no crop/stride */
    assert_false(segc_eval_dataset(ctx, work, identity_forward, w, ds, &o, r0, err, sizeof err));
    assert_non_null(strstr(err, "slide"));
    float img[12] = {0};
    int hw[1] = {2};
    segc_batch b = {.n = 1, .c = 3, .h = 2, .w = 2, .images = img, .img_h = hw, .img_w = hw};
    segc_eval_opts_default(&o);
    assert_false(segc_eval_batch(ctx, work, identity_forward, w, &b, &o, NULL, r0, NULL));
    assert_non_null(strstr(segc_last_error(ctx), "eval: batch"));

    segc_evaluator_free(r0);
    segc_evaluator_free(r1);
    segc_confusion_free(&want);
    segc_tensor_free(w);
    segc_ctx_free(work);
    segc_ctx_free(ctx);
    segc_dataset_close(ds);
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_basic), cmocka_unit_test(test_fixture_i64),
        cmocka_unit_test(test_fixture_city),  cmocka_unit_test(test_hand_example),
        cmocka_unit_test(test_print_table),   cmocka_unit_test(test_json),
        cmocka_unit_test(test_all_ignored),   cmocka_unit_test(test_threads_and_dtypes),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_eval_dataset),
        cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests_name("metrics", tests, setup, teardown);
}
