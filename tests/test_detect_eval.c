/* The detection evaluation loop (predict.h: segc_eval_dataset / segc_detect_dataset /
 * segc_predict_detections) with a detection family made up here: its detect hook returns the
 * ground-truth boxes of each image (in original pixels), jittered, plus a false positive, and
 * records them. On the real coco-mini val split (../shared/data or $SEGC_DATA; missing data
 * fails): the task evaluator's numbers equal the COCO evaluator fed the recorded detections
 * directly (bitwise), the input size and original size reach the hook, kept samples, print and
 * JSON, COCO results + drawn images from predict, and the evaluator's errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/harness.h"
#include "segc/image_io.h"
#include "segc/coco_eval.h"
#include "segc/predict.h"
#include "segc/task.h"
#include "segc/trainer.h"

static segc_dataset *g_ds;
static segc_coco_gt g_gt;
static int64_t g_next;             /* dataset index of the next image the hook sees (sequential pass) */
static segc_detections g_rec;      /* every detection the hook returned, image by image */
static int64_t g_rec_cap;
static int g_bad_size;

static bool fake_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out) {
    out->scores = segc_tensor_new(ctx, SEGC_F32, 3, (int64_t[]){images->shape[0], 1, 1});
    out->boxes = segc_tensor_new(ctx, SEGC_F32, 3, (int64_t[]){images->shape[0], 1, 4});
    return out->scores && out->boxes;
}

static void rec_push(const segc_detection *d) {
    int64_t *end = &g_rec.off[g_rec.n_images + 1];   /* the image being recorded */
    if (*end + 1 > g_rec_cap) {
        g_rec_cap = g_rec_cap ? 2 * g_rec_cap : 256;
        g_rec.det = realloc(g_rec.det, (size_t)g_rec_cap * sizeof *g_rec.det);
    }
    g_rec.det[(*end)++] = *d;
}

static bool fake_detect(segc_ctx *ctx, const segc_model *m, const segc_model_out *out, int in_h, int in_w,
                        const int *ori_h, const int *ori_w, const segc_detect_opts *o, segc_detections *d) {
    const int n = (int)out->scores->shape[0];
    d->n_images = n;
    d->off = calloc((size_t)n + 1, sizeof *d->off);
    d->det = malloc(64 * (size_t)n * sizeof *d->det);
    d->cap = 64 * n;
    for (int i = 0; i < n; i++, g_next++) {
        segc_sample smp;
        memset(&smp, 0, sizeof smp);
        char e[256];
        if (!segc_dataset_load(g_ds, g_next, &smp, e, sizeof e)) return false;
        if (smp.img.h != ori_h[i] || smp.img.w != ori_w[i] || in_h != ori_h[i] || in_w != ori_w[i]) g_bad_size++;
        segc_sample_free(&smp);
        int64_t c = d->off[i];
        for (int64_t a = 0; a < g_gt.n_anns && c < d->off[i] + 63; a++) {
            if (g_gt.ann_image[a] != g_next || g_gt.ann_crowd[a] || a % 4 == 1) continue;
            const double *b = g_gt.ann_bbox + 4 * a;
            float j = (float)((a * 7) % 11) - 5.f;
            d->det[c++] = (segc_detection){{(float)b[0] + j, (float)b[1] - j / 2, (float)(b[0] + b[2]) + j / 3,
                                            (float)(b[1] + b[3])},
                                           (float)((a * 13) % 97) / 97.f, g_gt.ann_label[a]};
        }
        d->det[c++] = (segc_detection){{10, 10, 60, 90}, 0.5f, (int32_t)(g_next % 80)};
        d->off[i + 1] = c;
        g_rec.off = realloc(g_rec.off, (size_t)(g_rec.n_images + 2) * sizeof *g_rec.off);
        g_rec.off[g_rec.n_images + 1] = g_rec.off[g_rec.n_images];
        for (int64_t q = d->off[i]; q < c; q++) rec_push(&d->det[q]);
        g_rec.n_images++;
    }
    return true;
}

static const segc_model_family fake_family = {.type = "fakedet", .summary = "test only",
                                              .task = SEGC_TASK_DETECTION, .forward = fake_forward,
                                              .detect = fake_detect};

static void rec_reset(void) {
    free(g_rec.off), free(g_rec.det);
    memset(&g_rec, 0, sizeof g_rec);
    g_rec.off = calloc(1, sizeof *g_rec.off);
    g_rec_cap = 0, g_next = 0, g_bad_size = 0;
}

static int setup(void **state) {
    char root[1024], err[512] = "";
    need_data(root, sizeof root, "coco-mini");
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    g_ds = segc_dataset_open("coco", root, "val2017", &o, err, sizeof err);
    if (!g_ds) fail_msg("coco-mini: %s", err);
    assert_true(segc_dataset_coco_gt(g_ds, &g_gt));
    return 0;
}
static int teardown(void **state) {
    segc_dataset_close(g_ds);
    free(g_rec.off), free(g_rec.det);
    return 0;
}

/* the recorded detections scored directly: through add_detections (only the images they name are
 * evaluated), or one by one with segc_coco_eval_add as a results file would (every image) */
static void direct_stats_of(double st[SEGC_COCO_N_STATS], bool named_images_only) {
    char err[256] = "";
    segc_coco_eval *e = segc_coco_eval_new(&g_gt, err, sizeof err);
    assert_non_null(e);
    int64_t *idx = malloc((size_t)g_rec.n_images * sizeof *idx);
    for (int i = 0; i < g_rec.n_images; i++) idx[i] = i;
    if (named_images_only) assert_true(segc_coco_eval_add_detections(e, &g_rec, idx, err, sizeof err));
    else
        for (int i = 0; i < g_rec.n_images; i++)
            for (int64_t j = g_rec.off[i]; j < g_rec.off[i + 1]; j++) {
                const segc_detection *x = &g_rec.det[j];
                double b[4] = {x->box[0], x->box[1], (double)x->box[2] - (double)x->box[0],
                               (double)x->box[3] - (double)x->box[1]};
                assert_true(segc_coco_eval_add(e, i, x->label, b, x->score, err, sizeof err));
            }
    segc_coco_summary s;
    assert_true(segc_coco_eval_run(e, &s, err, sizeof err));
    memcpy(st, s.stats, sizeof s.stats);
    segc_coco_summary_free(&s);
    segc_coco_eval_free(e);
    free(idx);
}
static void direct_stats(double st[SEGC_COCO_N_STATS]) { direct_stats_of(st, true); }

static void test_eval_loop(void **state) {
    segc_model m = {.family = &fake_family, .num_classes = 80, .in_channels = 3};
    segc_eval_spec spec = {.task = SEGC_TASK_DETECTION, .num_classes = 80, .dataset = g_ds};
    char err[512] = "";
    segc_evaluator *ev = segc_evaluator_new(&spec, err, sizeof err);
    if (!ev) fail_msg("%s", err);
    segc_eval_opts o;
    segc_eval_opts_default(&o);
    o.model = &m;
    o.batch_size = 3;
    o.quiet = true;
    segc_eval_sample kept[2];
    int n_kept = 0;
    o.keep = 2, o.samples = kept, o.n_kept = &n_kept;
    segc_ctx *ctx = segc_ctx_new(0);
    rec_reset();
    if (!segc_eval_dataset(ctx, ctx, segc_model_logits_fn, &m, g_ds, &o, ev, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(g_rec.n_images, 79);
    assert_int_equal(g_bad_size, 0);
    assert_int_equal(n_kept, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kept[i].pred.c, 3);
        assert_int_equal(kept[i].gt.h, kept[i].img.h);
        assert_true(memcmp(kept[i].gt.data, kept[i].img.data, (size_t)kept[i].img.h * kept[i].img.w * 3) != 0);
    }
    segc_eval_result r;
    if (!segc_evaluator_result(ev, &r, err, sizeof err)) fail_msg("%s", err);
    /* the HTML report: COCO numbers, drawn validation images, the bbox_mAP curve from metrics.jsonl */
    {
        char dir[64], p[128];
        snprintf(dir, sizeof dir, "/tmp/segc_detrep_%d", (int)getpid());
        assert_int_equal(mkdir(dir, 0755), 0);
        snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
        FILE *jf = fopen(p, "w");
        char *js0 = segc_eval_result_json(&r, NULL);
        fprintf(jf, "{\"iter\":10,\"loss\":2.0}\n{\"iter\":10,\"eval\":%s}\n{\"iter\":20,\"eval\":%s}\n", js0, js0);
        fclose(jf);
        free(js0);
        segc_report rep = {.title = "det", .status = "done", .metrics = &r.pixel, .primary = r.primary,
                           .samples = kept, .n_samples = 2, .n_classes = 80, .split = "val2017", .eval_images = 79};
        segc_report_set_extras(&rep, &r);
        assert_int_equal(rep.n_extra, 6);
        assert_string_equal(rep.extra_names[0], "bbox_mAP");
        if (!segc_report_write(dir, &rep, err, sizeof err)) fail_msg("%s", err);
        snprintf(p, sizeof p, "%s/report.html", dir);
        void *html = NULL;
        size_t hl = 0;
        assert_true(segc_read_file(p, &html, &hl, err, sizeof err));
        html = realloc(html, hl + 1);
        ((char *)html)[hl] = 0;
        assert_non_null(strstr(html, "bbox_mAP <b>"));
        assert_non_null(strstr(html, "validation bbox_mAP"));
        assert_non_null(strstr(html, "data:image/png;base64"));
        assert_null(strstr(html, "mIoU"));
        free(html);
        unlink(p);
        snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
        unlink(p);
        rmdir(dir);
    }
    for (int i = 0; i < 2; i++) segc_eval_sample_free(&kept[i]);
    double want[SEGC_COCO_N_STATS];
    direct_stats(want);
    for (int i = 0; i < SEGC_COCO_N_STATS; i++) {
        assert_string_equal(r.names[i], segc_coco_stat_names[i]);
        assert_memory_equal(&r.values[i], &want[i], sizeof want[i]);
    }
    printf("  bbox_mAP %.4f  bbox_mAP_50 %.4f  bbox_AR@100 %.4f over %lld images\n", want[0], want[1], want[8],
           (long long)r.n_images);
    assert_true(want[0] > 0.2 && want[0] < 0.95);
    assert_string_equal(r.primary, "bbox_mAP");
    assert_memory_equal(&r.primary_value, &want[0], sizeof want[0]);
    assert_true(segc_eval_result_get(&r, "bbox_AP.person") > 0);
    /* the table and the JSON line */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    segc_eval_result_print(f, &r, NULL);
    fclose(f);
    assert_non_null(strstr(buf, " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = "));
    assert_non_null(strstr(buf, " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = "));
    assert_non_null(strstr(buf, "person"));
    free(buf);
    char *js = segc_eval_result_json(&r, NULL);
    cJSON *j = cJSON_Parse(js);
    assert_non_null(j);
    assert_true(fabs(cJSON_GetObjectItem(j, "bbox_mAP")->valuedouble - want[0]) < 1e-4);
    assert_string_equal(cJSON_GetObjectItem(j, "primary")->valuestring, "bbox_mAP");
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "bbox_AP"), "person"));
    cJSON_Delete(j);
    free(js);
    segc_eval_result_free(&r);
    /* merging a second evaluator of the same split (another rank's images: none here) keeps the result */
    segc_evaluator *ev2 = segc_evaluator_new(&spec, err, sizeof err);
    assert_true(segc_evaluator_merge(ev2, ev, err, sizeof err));
    assert_true(segc_evaluator_result(ev2, &r, err, sizeof err));
    assert_memory_equal(r.values, want, sizeof want);
    segc_eval_result_free(&r);
    segc_evaluator_free(ev2);
    segc_evaluator_free(ev);
    segc_ctx_free(ctx);
}

static void test_predict(void **state) {
    segc_model m = {.family = &fake_family, .num_classes = 80, .in_channels = 3};
    segc_eval_opts o;
    segc_eval_opts_default(&o);
    o.model = &m;
    o.quiet = true;
    o.max_samples = 5;
    char dir[64], path[128], err[512] = "";
    snprintf(dir, sizeof dir, "/tmp/segc_detpred_%d", (int)getpid());
    segc_ctx *ctx = segc_ctx_new(0);
    rec_reset();
    int n = 0;
    if (!segc_predict_detections(ctx, &m, g_ds, &o, NULL, dir, true, 0.3f, NULL, &n, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(n, 5);
    /* the results file scores like the detections themselves */
    snprintf(path, sizeof path, "%s/detections.json", dir);
    segc_coco_eval *e = segc_coco_eval_new(&g_gt, err, sizeof err);
    int64_t nr = 0;
    if (!segc_coco_results_read(e, path, false, &nr, NULL, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(nr, g_rec.off[g_rec.n_images]);
    segc_coco_summary s;
    assert_true(segc_coco_eval_run(e, &s, err, sizeof err));
    double want[SEGC_COCO_N_STATS], part[SEGC_COCO_N_STATS];
    direct_stats_of(want, false);   /* a results file scores every image of the split */
    assert_memory_equal(s.stats, want, sizeof want);
    assert_int_equal(s.n_images, 79);
    /* the evaluation loop on 5 images scores those 5 (pycocotools' imgIds), not the split */
    direct_stats_of(part, true);
    assert_true(part[0] > want[0] + 0.05);
    segc_coco_summary_free(&s);
    segc_coco_eval_free(e);
    unlink(path);
    for (int i = 0; i < 5; i++) {
        const char *p = segc_dataset_image_path(g_ds, i), *base = strrchr(p, '/') + 1;
        char png[256];
        snprintf(png, sizeof png, "%s/%.*s_det.png", dir, (int)(strlen(base) - 4), base);
        struct stat st;
        if (stat(png, &st) != 0) fail_msg("%s was not written", png);
        if (!getenv("SEGC_KEEP_PNG")) unlink(png);
    }
    rmdir(dir);
    segc_ctx_free(ctx);
}

static void test_errors(void **state) {
    char err[512] = "";
    segc_eval_spec spec = {.task = SEGC_TASK_DETECTION, .num_classes = 80};
    EXPECT_FAIL(segc_evaluator_new(&spec, err, sizeof err) != NULL, err, "ground truth");
    spec.dataset = g_ds, spec.num_classes = 21;
    EXPECT_FAIL(segc_evaluator_new(&spec, err, sizeof err) != NULL, err, "21 classes", "80 categories");
    spec.num_classes = 80;
    snprintf(spec.primary, sizeof spec.primary, "mIoU");
    EXPECT_FAIL(segc_evaluator_new(&spec, err, sizeof err) != NULL, err, "unknown primary metric", "mIoU");
    snprintf(spec.primary, sizeof spec.primary, "bbox_mAP_75");
    assert_true(segc_eval_spec_knows(&spec, "bbox_AR_s@100"));
    assert_true(segc_eval_spec_knows(&spec, "bbox_AP.zebra"));
    assert_false(segc_eval_spec_knows(&spec, "mIoU"));
    segc_evaluator *ev = segc_evaluator_new(&spec, err, sizeof err);
    assert_non_null(ev);
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *t = segc_tensor_new(ctx, SEGC_U8, 3, (int64_t[]){1, 2, 2});
    assert_false(segc_evaluator_add(ev, ctx, t, t, NULL));
    assert_non_null(strstr(segc_last_error(ctx), "detection evaluator"));
    segc_eval_spec seg = {.task = SEGC_TASK_SEGMENTATION, .num_classes = 3, .ignore_index = 255};
    segc_evaluator *sv = segc_evaluator_new(&seg, err, sizeof err);
    EXPECT_FAIL(segc_evaluator_merge(ev, sv, err, sizeof err), err, "detection and a segmentation");
    segc_detections d = {0};
    EXPECT_FAIL(segc_evaluator_add_detections(sv, &d, NULL, err, sizeof err), err, "not a detection evaluator");
    int64_t off[2] = {0, 1}, bad = 79;
    segc_detection det = {{0, 0, 1, 1}, 0.5f, 3};
    d = (segc_detections){.n_images = 1, .off = off, .det = &det};
    EXPECT_FAIL(segc_evaluator_add_detections(ev, &d, &bad, err, sizeof err), err, "image index 79");
    det.label = 80, bad = 0;
    EXPECT_FAIL(segc_evaluator_add_detections(ev, &d, &bad, err, sizeof err), err, "label 80");
    segc_evaluator_free(sv);
    segc_evaluator_free(ev);
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_loop),
        cmocka_unit_test(test_predict),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("detect_eval", tests, setup, teardown);
}
