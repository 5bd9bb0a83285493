/* COCO box mAP (coco_eval.h) against pycocotools: tests/fixtures/gen_coco_eval.py ran COCOeval on
 * the real coco-mini val annotations (../shared/data or $SEGC_DATA; missing data fails) with
 * synthetic detection sets (crowd, empty images, missing categories, ties, maxDets truncation);
 * every one of the 12 summary numbers must agree to 1e-4. Also: hand-made cases without data,
 * results files (round trip, bad input), merging in either order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/harness.h"
#include "segc/coco_eval.h"
#include "segc/data.h"
#include "segc/image_io.h"

static cJSON *g_fx;
static segc_dataset *g_ds;
static segc_coco_gt g_gt;

static int setup(void **state) {
    char err[512] = "";
    void *buf = NULL;
    size_t len = 0;
    if (!segc_read_file("tests/fixtures/data/coco_eval.json", &buf, &len, err, sizeof err))
        fail_msg("fixture: %s (run tests/fixtures/gen_coco_eval.py)", err);
    g_fx = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!g_fx) fail_msg("fixture coco_eval.json: malformed JSON");
    return 0;
}
static int teardown(void **state) {
    cJSON_Delete(g_fx);
    segc_dataset_close(g_ds);
    return 0;
}

static const segc_coco_gt *real_gt(void) {
    if (g_ds) return &g_gt;
    char root[1024], err[512] = "";
    need_data(root, sizeof root, "coco-mini/annotations/instances_val2017.json");
    need_data(root, sizeof root, "coco-mini");
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    g_ds = segc_dataset_open("coco", root, "val2017", &o, err, sizeof err);
    if (!g_ds) fail_msg("coco-mini: %s", err);
    assert_true(segc_dataset_coco_gt(g_ds, &g_gt));
    return &g_gt;
}

static segc_coco_eval *new_eval(const segc_coco_gt *gt) {
    char err[256] = "";
    segc_coco_eval *e = segc_coco_eval_new(gt, err, sizeof err);
    if (!e) fail_msg("coco_eval_new: %s", err);
    return e;
}

static void run(const segc_coco_eval *e, double st[SEGC_COCO_N_STATS]) {
    char err[256] = "";
    segc_coco_summary s;
    if (!segc_coco_eval_run(e, &s, err, sizeof err)) fail_msg("coco_eval_run: %s", err);
    memcpy(st, s.stats, sizeof s.stats);
    segc_coco_summary_free(&s);
}

static int64_t index_of(const int64_t *ids, int64_t n, int64_t id) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] == id) return i;
    fail_msg("id %lld not in the ground truth", (long long)id);
    return -1;
}

/* adds the set's results whose image index % mod == rem (mod 1: all) */
static void add_results(segc_coco_eval *e, const cJSON *res, int mod, int rem) {
    const segc_coco_gt *g = segc_coco_eval_gt(e);
    const cJSON *r;
    char err[256] = "";
    cJSON_ArrayForEach(r, res) {
        int64_t img = index_of(g->image_ids, g->n_images, (int64_t)cJSON_GetObjectItem(r, "image_id")->valuedouble);
        int64_t k = index_of(g->cat_ids, g->n_classes, (int64_t)cJSON_GetObjectItem(r, "category_id")->valuedouble);
        if (img % mod != rem) continue;
        const cJSON *bb = cJSON_GetObjectItem(r, "bbox");
        double b[4];
        for (int q = 0; q < 4; q++) b[q] = cJSON_GetArrayItem(bb, q)->valuedouble;
        if (!segc_coco_eval_add(e, img, (int32_t)k, b, cJSON_GetObjectItem(r, "score")->valuedouble, err, sizeof err))
            fail_msg("add: %s", err);
    }
}

static void expect_stats(const char *what, const double *got, const double *want, double tol) {
    for (int i = 0; i < SEGC_COCO_N_STATS; i++)
        if (!(fabs(got[i] - want[i]) <= tol))
            fail_msg("%s: %s expected %.10f, found %.10f", what, segc_coco_stat_names[i], want[i], got[i]);
}

/* ---- pycocotools parity on coco-mini val ---- */

static void test_parity(void **state) {
    const segc_coco_gt *gt = real_gt();
    assert_int_equal(gt->n_images, 79);
    assert_int_equal(gt->n_classes, 80);
    assert_int_equal(gt->n_anns, 624);
    const cJSON *set;
    int n = 0;
    double worst = 0;
    cJSON_ArrayForEach(set, cJSON_GetObjectItem(g_fx, "sets")) {
        const char *name = cJSON_GetObjectItem(set, "name")->valuestring;
        const cJSON *st = cJSON_GetObjectItem(set, "stats");
        double want[SEGC_COCO_N_STATS], got[SEGC_COCO_N_STATS];
        for (int i = 0; i < SEGC_COCO_N_STATS; i++) want[i] = cJSON_GetArrayItem(st, i)->valuedouble;
        segc_coco_eval *e = new_eval(gt);
        const cJSON *ids = cJSON_GetObjectItem(set, "img_ids");
        if (ids) {   /* params.imgIds: name those images (no detections) the way the evaluation loop does */
            int n_ids = cJSON_GetArraySize(ids);
            int64_t *idx = malloc((size_t)n_ids * sizeof *idx), *off = calloc((size_t)n_ids + 1, sizeof *off);
            for (int i = 0; i < n_ids; i++)
                idx[i] = index_of(gt->image_ids, gt->n_images, (int64_t)cJSON_GetArrayItem(ids, i)->valuedouble);
            segc_detections none = {.n_images = n_ids, .off = off};
            char err[256] = "";
            assert_true(segc_coco_eval_add_detections(e, &none, idx, err, sizeof err));
            free(idx), free(off);
        }
        const cJSON *res = cJSON_GetObjectItem(set, "results"), *of = cJSON_GetObjectItem(set, "results_of"), *o2;
        if (of)
            cJSON_ArrayForEach(o2, cJSON_GetObjectItem(g_fx, "sets"))
                if (!strcmp(cJSON_GetObjectItem(o2, "name")->valuestring, of->valuestring)) res = cJSON_GetObjectItem(o2, "results");
        if (!res) fail_msg("set %s has no results", name);
        add_results(e, res, 1, 0);
        run(e, got);
        expect_stats(name, got, want, 1e-4);
        for (int i = 0; i < SEGC_COCO_N_STATS; i++) worst = fmax(worst, fabs(got[i] - want[i]));
        printf("  %-7s AP %.4f (pycocotools %.4f)  AR100 %.4f (%.4f)\n", name, got[0], want[0], got[8], want[8]);
        segc_coco_eval_free(e);
        n++;
    }
    EXPECT_CASES(n, "sets");
    printf("  max |C - pycocotools| over %d sets x 12 numbers: %.3g\n", n, worst);
}

/* two "ranks" (even / odd image indices) merged in either order == one evaluator, bitwise */
static void test_merge(void **state) {
    const segc_coco_gt *gt = real_gt();
    const cJSON *set = cJSON_GetArrayItem(cJSON_GetObjectItem(g_fx, "sets"), 0);
    const cJSON *res = cJSON_GetObjectItem(set, "results");
    double one[SEGC_COCO_N_STATS], ab[SEGC_COCO_N_STATS], ba[SEGC_COCO_N_STATS];
    segc_coco_eval *e = new_eval(gt), *a = new_eval(gt), *b = new_eval(gt), *a2 = new_eval(gt), *b2 = new_eval(gt);
    add_results(e, res, 1, 0);
    add_results(a, res, 2, 0), add_results(a2, res, 2, 0);
    add_results(b, res, 2, 1), add_results(b2, res, 2, 1);
    char err[256] = "";
    assert_true(segc_coco_eval_merge(a, b, err, sizeof err));
    assert_true(segc_coco_eval_merge(b2, a2, err, sizeof err));
    assert_int_equal(segc_coco_eval_n_detections(a), segc_coco_eval_n_detections(e));
    run(e, one), run(a, ab), run(b2, ba);
    assert_memory_equal(one, ab, sizeof one);
    assert_memory_equal(one, ba, sizeof one);
    EXPECT_FAIL(segc_coco_eval_merge(a, a, err, sizeof err), err, "itself");
    /* across processes: rank b's detections packed, sent, unpacked after rank a's */
    double *buf = NULL, from_packed[SEGC_COCO_N_STATS];
    segc_coco_eval *c = new_eval(gt);
    add_results(c, res, 2, 0);
    int64_t np = segc_coco_eval_pack(b, &buf);
    assert_true(np > 0);
    assert_true(segc_coco_eval_unpack(c, buf, np, err, sizeof err));
    run(c, from_packed);
    assert_memory_equal(one, from_packed, sizeof one);
    buf[0] = 79;
    EXPECT_FAIL(segc_coco_eval_unpack(c, buf, 1, err, sizeof err), err, "out of range");
    free(buf);
    segc_coco_eval_free(c);
    segc_coco_eval_free(e), segc_coco_eval_free(a), segc_coco_eval_free(b);
    segc_coco_eval_free(a2), segc_coco_eval_free(b2);
}

/* results file: write detections, read back == direct adds; bad entries */
static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_results_files(void **state) {
    const segc_coco_gt *gt = real_gt();
    char err[512] = "", path[64];
    snprintf(path, sizeof path, "/tmp/segc_coco_res_%d.json", (int)getpid());
    /* a few detections per image from the gt boxes, as a model would give them (float x1y1x2y2) */
    segc_detections d = {0};
    d.n_images = (int)gt->n_images;
    d.off = calloc((size_t)gt->n_images + 1, sizeof *d.off);
    d.det = calloc((size_t)gt->n_anns, sizeof *d.det);
    int64_t *idx = malloc((size_t)gt->n_images * sizeof *idx), n = 0;
    for (int64_t i = 0; i < gt->n_images; i++) {
        idx[i] = i;
        for (int64_t a = 0; a < gt->n_anns; a++) {
            if (gt->ann_image[a] != i || a % 3 == 0) continue;
            const double *b = gt->ann_bbox + 4 * a;
            d.det[n++] = (segc_detection){{(float)b[0] + 1.3f, (float)b[1], (float)(b[0] + b[2]), (float)(b[1] + b[3]) - 0.7f},
                                          (float)((a * 37) % 101) / 101.0f, gt->ann_label[a]};
        }
        d.off[i + 1] = n;
    }
    segc_coco_results_writer w;
    assert_true(segc_coco_results_begin(&w, path, err, sizeof err));
    assert_true(segc_coco_results_add(&w, gt, &d, idx, err, sizeof err));
    assert_true(segc_coco_results_end(&w, err, sizeof err));
    segc_coco_eval *e1 = new_eval(gt), *e2 = new_eval(gt);
    assert_true(segc_coco_eval_add_detections(e1, &d, idx, err, sizeof err));
    int64_t nr = 0, ns = 0;
    if (!segc_coco_results_read(e2, path, false, &nr, &ns, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(nr, n);
    double s1[SEGC_COCO_N_STATS], s2[SEGC_COCO_N_STATS];
    run(e1, s1), run(e2, s2);
    assert_memory_equal(s1, s2, sizeof s1);
    assert_true(s1[0] > 0.3 && s1[0] < 1);
    /* bad input: one line naming the file and the entry */
    segc_coco_eval_reset(e2);
    write_text(path, "[{\"image_id\": 139, \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5},\n"
                     " {\"image_id\": 5, \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}]");
    EXPECT_FAIL(segc_coco_results_read(e2, path, false, NULL, NULL, err, sizeof err), err, path, "entry 1",
                "image_id 5");
    segc_coco_eval_reset(e2);
    assert_true(segc_coco_results_read(e2, path, true, &nr, &ns, err, sizeof err));
    assert_int_equal(nr, 1), assert_int_equal(ns, 1);
    segc_coco_eval_reset(e2);
    write_text(path, "[{\"image_id\": 139, \"category_id\": 12, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}]");
    EXPECT_FAIL(segc_coco_results_read(e2, path, false, NULL, NULL, err, sizeof err), err, path, "entry 0",
                "category_id 12");
    write_text(path, "[{\"image_id\": 139, \"category_id\": 1, \"bbox\": [1, 2, 3], \"score\": 0.5}]");
    EXPECT_FAIL(segc_coco_results_read(e2, path, false, NULL, NULL, err, sizeof err), err, path, "entry 0", "bbox");
    write_text(path, "[{\"image_id\": 139,\n \"category_id\": 1, \"bbox\": [1, 2, 3, 4] \"score\": 0.5}]");
    EXPECT_FAIL(segc_coco_results_read(e2, path, true, NULL, NULL, err, sizeof err), err, path, "malformed JSON",
                "line 2");
    write_text(path, "{\"image_id\": 139}");
    EXPECT_FAIL(segc_coco_results_read(e2, path, false, NULL, NULL, err, sizeof err), err, path, "array");
    unlink(path);
    EXPECT_FAIL(segc_coco_results_read(e2, path, false, NULL, NULL, err, sizeof err), err, path);
    segc_coco_eval_free(e1), segc_coco_eval_free(e2);
    free(d.off), free(d.det), free(idx);
}

/* ---- hand-made cases (no data) ---- */

/* 2 images (ids 7, 3), categories 1 and 5; image 7: a small box (cat 1), a crowd region (cat 1),
 * image 3: a large box (cat 1). Category 5 has no ground truth. */
static const int64_t h_img_ids[2] = {7, 3}, h_cat_ids[2] = {1, 5};
static const int64_t h_ann_image[3] = {0, 0, 1}, h_ann_id[3] = {1, 2, 3};
static const int32_t h_ann_label[3] = {0, 0, 0};
static const double h_bbox[12] = {0, 0, 10, 10, 100, 100, 200, 200, 0, 0, 120, 100};
static const double h_area[3] = {100, 40000, 12000};
static const uint8_t h_crowd[3] = {0, 1, 0};

static segc_coco_gt hand_gt(void) {
    return (segc_coco_gt){.n_images = 2, .image_ids = h_img_ids, .n_classes = 2, .cat_ids = h_cat_ids, .n_anns = 3,
                          .ann_image = h_ann_image, .ann_label = h_ann_label, .ann_bbox = h_bbox, .ann_area = h_area,
                          .ann_crowd = h_crowd, .ann_id = h_ann_id};
}

static void add1(segc_coco_eval *e, int64_t img, int k, double x, double y, double w, double h, double s) {
    char err[256] = "";
    double b[4] = {x, y, w, h};
    if (!segc_coco_eval_add(e, img, k, b, s, err, sizeof err)) fail_msg("%s", err);
}

static void test_hand(void **state) {
    segc_coco_gt gt = hand_gt();
    segc_coco_eval *e = new_eval(&gt);
    double st[SEGC_COCO_N_STATS];
    /* nothing detected: AP 0 where there is ground truth (small, large), -1 for medium (none) */
    run(e, st);
    const double none[12] = {0, 0, 0, 0, -1, 0, 0, 0, 0, 0, -1, 0};
    expect_stats("no detections", st, none, 1e-12);
    /* both boxes exact: AP 1 */
    add1(e, 0, 0, 0, 0, 10, 10, 0.9);
    add1(e, 1, 0, 0, 0, 120, 100, 0.8);
    run(e, st);
    const double perfect[12] = {1, 1, 1, 1, -1, 1, 1, 1, 1, 1, -1, 1};
    expect_stats("exact", st, perfect, 1e-12);
    /* detections inside the crowd region (IoU = inter / area(det) = 1) are ignored, any number of them,
     * even with the highest scores; one on category 5 (no ground truth) changes nothing */
    add1(e, 0, 0, 110, 110, 20, 20, 0.99);
    add1(e, 0, 0, 150, 150, 20, 20, 0.98);
    add1(e, 0, 1, 0, 0, 10, 10, 0.97);
    run(e, st);
    /* ... except AR@1: image 7's first detection is now an ignored one */
    const double crowd[12] = {1, 1, 1, 1, -1, 1, 0.5, 1, 1, 1, -1, 1};
    expect_stats("crowd", st, crowd, 1e-12);
    /* a false positive of medium area on image 3, scored above its box: sorted over both images
     * (ignored .99 .98), FP .95, TP .9, TP .8: precision 0, .5, .667 -> envelope .667 at every
     * recall point; for the small and large ranges the unmatched medium box is ignored */
    add1(e, 1, 0, 300, 300, 50, 50, 0.95);
    run(e, st);
    const double fp[12] = {2.0 / 3, 2.0 / 3, 2.0 / 3, 1, -1, 1, 0, 1, 1, 1, -1, 1};   /* AR@1: both first boxes miss */
    expect_stats("false positive", st, fp, 1e-12);
    segc_coco_eval_free(e);
}

static void test_errors(void **state) {
    char err[256] = "";
    segc_coco_gt gt = hand_gt();
    int64_t dup[2] = {7, 7}, badcat[2] = {5, 1};
    segc_coco_gt g2 = gt;
    g2.image_ids = dup;
    EXPECT_FAIL(segc_coco_eval_new(&g2, err, sizeof err) != NULL, err, "duplicate image id 7");
    g2 = gt, g2.cat_ids = badcat;
    EXPECT_FAIL(segc_coco_eval_new(&g2, err, sizeof err) != NULL, err, "category ids");
    segc_coco_eval *e = new_eval(&gt);
    double b[4] = {0, 0, 1, 1};
    EXPECT_FAIL(segc_coco_eval_add(e, 2, 0, b, 0.5, err, sizeof err), err, "image index 2");
    EXPECT_FAIL(segc_coco_eval_add(e, 0, 2, b, 0.5, err, sizeof err), err, "label 2");
    EXPECT_FAIL(segc_coco_eval_add(e, 0, 0, b, NAN, err, sizeof err), err, "non-finite");
    segc_coco_gt g3 = gt;
    g3.n_images = 1;
    EXPECT_FAIL(segc_coco_eval_new(&g3, err, sizeof err) != NULL, err, "out of range");
    segc_coco_eval_free(e);
}

/* bad annotations in the COCO JSON: one line naming the file and the annotation id; skip_bad skips */
static void test_bad_annotations(void **state) {
    static const struct { const char *ann, *want1, *want2; } bad[] = {
        {"{\"id\":12,\"image_id\":7,\"category_id\":3,\"bbox\":[50,1,5,5]}", "annotation id 12", "outside its 40x30 image"},
        {"{\"id\":13,\"image_id\":7,\"category_id\":3,\"bbox\":[1,1,0,5]}", "annotation id 13", "zero area"},
        {"{\"id\":14,\"image_id\":7,\"category_id\":3,\"bbox\":[1,1,4,5],\"area\":0}", "annotation id 14", "zero area"},
        {"{\"id\":15,\"image_id\":7,\"category_id\":77,\"bbox\":[1,1,4,5]}", "annotation id 15", "unknown category id 77"},
        {"{\"id\":16,\"image_id\":8,\"category_id\":3,\"bbox\":[1,1,4,5]}", "annotation id 16", "unknown image id 8"},
        {"{\"image_id\":7,\"category_id\":3,\"bbox\":[1,1,\"a\",5]}", "annotation 1 (no id)", "finite numbers"},
    };
    char tmp[] = "/tmp/segc_cbad_XXXXXX", path[1024], err[512] = "", json[1024];
    assert_non_null(mkdtemp(tmp));
    snprintf(path, sizeof path, "mkdir -p %s/x %s/annotations", tmp, tmp);
    assert_int_equal(system(path), 0);
    snprintf(path, sizeof path, "%s/annotations/instances_x.json", tmp);
    const char *head = "{\"images\":[{\"id\":7,\"file_name\":\"a.png\",\"width\":40,\"height\":30}],"
                       "\"categories\":[{\"id\":3,\"name\":\"cat\"}],\"annotations\":["
                       "{\"id\":11,\"image_id\":7,\"category_id\":3,\"bbox\":[2,2,10,10],\"area\":100}";
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        snprintf(json, sizeof json, "%s,%s]}", head, bad[k].ann);
        write_text(path, json);
        o.skip_bad = false;
        segc_dataset *ds = segc_dataset_open("coco", tmp, "x", &o, err, sizeof err);
        EXPECT_FAIL(ds != NULL, err, "instances_x.json", bad[k].want1, bad[k].want2, "skip_bad");
        segc_dataset_close(ds);
        o.skip_bad = true;
        ds = segc_dataset_open("coco", tmp, "x", &o, err, sizeof err);
        if (!ds) fail_msg("skip_bad: %s", err);
        segc_coco_gt gt;
        assert_true(segc_dataset_coco_gt(ds, &gt));
        assert_int_equal(gt.n_anns, 1);
        assert_int_equal(gt.ann_id[0], 11);
        segc_dataset_close(ds);
    }
    /* every bad one at once: counted */
    snprintf(json, sizeof json, "%s", head);
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        strcat(json, ",");
        strcat(json, bad[k].ann);
    }
    strcat(json, "]}");
    write_text(path, json);
    segc_dataset *ds = segc_dataset_open("coco", tmp, "x", &o, err, sizeof err);
    assert_non_null(ds);
    segc_dataset_close(ds);
    write_text(path, "{\"images\": [],\n  \"categories\": [}");
    EXPECT_FAIL(segc_dataset_open("coco", tmp, "x", &o, err, sizeof err) != NULL, err, "instances_x.json",
                "malformed JSON at line 2");
    snprintf(path, sizeof path, "rm -rf %s", tmp);
    assert_int_equal(system(path), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand),   cmocka_unit_test(test_errors),        cmocka_unit_test(test_parity),
        cmocka_unit_test(test_merge),  cmocka_unit_test(test_results_files), cmocka_unit_test(test_bad_annotations),
    };
    return cmocka_run_group_tests_name("coco_eval", tests, setup, teardown);
}
