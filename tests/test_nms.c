/* segc_nms against torchvision.ops.batched_nms (fixture tests/fixtures/gen_nms.py: random
 * boxes with duplicates, zero-area boxes and tied scores), plus its edge cases and the
 * detection helpers' defaults. */
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/detection.h"

static const char *const CASES[] = {"one", "small", "ties", "dense", "loose", "single_label"};

static const segc_st_entry *need(const segc_st_file *f, const char *cas, const char *key) {
    char name[128];
    snprintf(name, sizeof name, "%s/%s", cas, key);
    const segc_st_entry *e = segc_st_get(f, name);
    if (!e) fail_msg("fixture lacks %s", name);
    return e;
}

static void test_torchvision_parity(void **state) {
    segc_st_file *f = fx_open("nms.safetensors");
    for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
        const char *cas = CASES[c];
        const segc_st_entry *b = need(f, cas, "boxes"), *s = need(f, cas, "scores"), *l = need(f, cas, "labels"),
                            *k = need(f, cas, "keep");
        assert_int_equal(l->dtype, SEGC_I32);
        assert_int_equal(k->dtype, SEGC_I32);
        const int n = (int)b->shape[0], m = (int)k->shape[0];
        const float iou = (float)fx_param_double(f, cas, "iou", 0.5);
        int *keep = malloc((size_t)n * sizeof *keep);
        int got = segc_nms(b->data, s->data, l->data, n, iou, -1, keep);
        if (got != m) fail_msg("%s: kept %d boxes, torchvision %d", cas, got, m);
        const int32_t *want = k->data;
        for (int i = 0; i < m; i++)
            if (keep[i] != want[i]) fail_msg("%s: keep[%d] = %d, torchvision %d", cas, i, keep[i], want[i]);
        /* max_keep: the first ones of the same list */
        int cut = m / 2;
        assert_int_equal(segc_nms(b->data, s->data, l->data, n, iou, cut, keep), cut);
        for (int i = 0; i < cut; i++) assert_int_equal(keep[i], want[i]);
        free(keep);
    }
    segc_st_close(f);
}

static void test_semantics(void **state) {
    /* two identical boxes of different labels never suppress each other; same label: the
     * lower index wins a tie; no labels = one class */
    const float boxes[] = {0, 0, 10, 10, 0, 0, 10, 10, 0, 0, 10, 10, 20, 20, 30, 30};
    const float scores[] = {0.5f, 0.5f, 0.5f, 0.9f};
    const int32_t labels[] = {1, 0, 1, 1};
    int keep[4];
    assert_int_equal(segc_nms(boxes, scores, labels, 4, 0.5f, -1, keep), 3);
    assert_int_equal(keep[0], 3);
    assert_int_equal(keep[1], 0);
    assert_int_equal(keep[2], 1);
    assert_int_equal(segc_nms(boxes, scores, NULL, 4, 0.5f, -1, keep), 2);
    assert_int_equal(keep[0], 3);
    assert_int_equal(keep[1], 0);
    /* IoU exactly at the threshold is kept (suppression needs IoU > thresh): [0,10] vs [5,15]
     * in x, same y: 50 / 150 = 1/3 */
    const float half[] = {0, 0, 10, 10, 5, 0, 15, 10};
    const float sc2[] = {0.9f, 0.8f};
    assert_int_equal(segc_nms(half, sc2, NULL, 2, 1.f / 3.f, -1, keep), 2);
    assert_int_equal(segc_nms(half, sc2, NULL, 2, 0.33f, -1, keep), 1);
    /* empty input and max_keep 0 */
    assert_int_equal(segc_nms(boxes, scores, labels, 0, 0.5f, -1, keep), 0);
    assert_int_equal(segc_nms(boxes, scores, labels, 4, 0.5f, 0, keep), 0);
}

static void test_defaults_and_free(void **state) {
    segc_detect_opts o;
    segc_detect_opts_default(&o);
    assert_true(o.score_thresh == 0.05f);
    assert_int_equal(o.max_candidates, 200);
    assert_true(o.nms_iou == 0.5f);
    assert_int_equal(o.max_per_image, 200);
    segc_detections d = {.n_images = 1, .off = calloc(2, sizeof(int64_t)), .det = malloc(sizeof(segc_detection)),
                         .cap = 1};
    segc_detections_free(&d);
    assert_null(d.off);
    assert_null(d.det);
    assert_int_equal(d.cap, 0);
    segc_detections_free(&d);   /* twice: harmless */
    segc_detections_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torchvision_parity),
        cmocka_unit_test(test_semantics),
        cmocka_unit_test(test_defaults_and_free),
    };
    return cmocka_run_group_tests_name("nms", tests, NULL, NULL);
}
