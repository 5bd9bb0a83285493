/* The segmentation evaluator (task.h) against tests/fixtures/gen_task.py: split-wide metrics equal
 * segc_metrics and per-class Dice equals numpy; per-volume region/label Dice on the real brats-mini
 * validation volumes (../shared/data or $SEGC_DATA; missing data fails) added slice batch by slice
 * batch in shuffled, interleaved order; empty volumes; merging halves; errors; print and JSON. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/harness.h"
#include "segc/image_io.h"
#include "segc/task.h"

static segc_st_file *fx;
static char g_data[2048];

static int setup(void **state) {
    fx = fx_open("task.safetensors");
    return 0;
}
static int teardown(void **state) {
    segc_st_close(fx);
    return 0;
}

/* F64 / I64 reference entry copied out (fixture data may be unaligned) */
static void *ref_raw(const char *key, int64_t *n, size_t es) {
    const segc_st_entry *e = segc_st_get(fx, key);
    if (!e) fail_msg("fixture entry %s missing (rerun tests/fixtures/gen_task.py)", key);
    *n = (int64_t)(e->nbytes / es);
    void *p = malloc(e->nbytes ? e->nbytes : 1);
    memcpy(p, e->data, e->nbytes);
    return p;
}

static void assert_same_double(double got, double want, double tol, const char *what) {
    if (isnan(want)) {
        if (!isnan(got)) fail_msg("%s: expected NaN, found %.17g", what, got);
        return;
    }
    if (!(fabs(got - want) <= tol)) fail_msg("%s: expected %.17g, found %.17g", what, want, got);
}

static double get(const segc_eval_result *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->names[i], name)) return r->values[i];
    fail_msg("result has no metric %s", name);
    return NAN;
}

static segc_evaluator *new_eval(const segc_eval_spec *s) {
    char err[256] = "";
    segc_evaluator *e = segc_evaluator_new(s, err, sizeof err);
    if (!e) fail_msg("evaluator_new: %s", err);
    return e;
}

static void result_ok(const segc_evaluator *e, segc_eval_result *r) {
    char err[256] = "";
    if (!segc_evaluator_result(e, r, err, sizeof err)) fail_msg("evaluator_result: %s", err);
}

static segc_eval_spec spec_of(int k, bool per_volume) {
    segc_eval_spec s;
    memset(&s, 0, sizeof s);
    s.task = SEGC_TASK_SEGMENTATION;
    s.num_classes = k;
    s.ignore_index = 255;
    s.per_volume = per_volume;
    return s;
}

/* ---- (1) split-wide metrics ---- */

static void feed_px(segc_ctx *ctx, segc_evaluator *e, segc_confusion *c) {
    int nb = (int)fx_param_int(fx, "px", "n_batches", 0);
    assert_true(nb > 0);
    for (int i = 0; i < nb; i++) {
        char kp[32], kl[32];
        snprintf(kp, sizeof kp, "pred%d", i);
        snprintf(kl, sizeof kl, "label%d", i);
        segc_tensor *p = fx_tensor(ctx, fx, "px", kp), *l = fx_tensor(ctx, fx, "px", kl);
        assert_non_null(p);
        assert_non_null(l);
        if (!segc_evaluator_add(e, ctx, p, l, NULL)) fail_msg("%s", segc_last_error(ctx));
        if (c) assert_true(segc_confusion_add(ctx, c, p, l));
    }
}

static void test_pixel_metrics(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    const int k = (int)fx_param_int(fx, "px", "num_classes", 0);
    char err[256], nm[64];
    segc_eval_spec s = spec_of(k, false);
    segc_evaluator *e = new_eval(&s);
    segc_confusion c;
    assert_true(segc_confusion_init(&c, k, 255, err, sizeof err));
    feed_px(ctx, e, &c);
    segc_metrics m;
    assert_true(segc_metrics_compute(&c, &m, err, sizeof err));
    segc_eval_result r;
    result_ok(e, &r);
    /* exactly the existing mmseg metrics */
    assert_same_double(get(&r, "mIoU"), m.mIoU, 0, "mIoU");
    assert_same_double(get(&r, "mAcc"), m.mAcc, 0, "mAcc");
    assert_same_double(get(&r, "aAcc"), m.aAcc, 0, "aAcc");
    assert_same_double(r.pixel.mIoU, m.mIoU, 0, "pixel.mIoU");
    int64_t n;
    double *dice = ref_raw("px/dice", &n, 8), *mdice = ref_raw("px/mdice", &n, 8);
    for (int j = 0; j < k; j++) {
        snprintf(nm, sizeof nm, "IoU.%d", j);
        assert_same_double(get(&r, nm), m.iou[j], 0, nm);
        snprintf(nm, sizeof nm, "Acc.%d", j);
        assert_same_double(get(&r, nm), m.acc[j], 0, nm);
        snprintf(nm, sizeof nm, "Dice.%d", j);
        assert_same_double(get(&r, nm), dice[j], 1e-15, nm);
    }
    assert_true(isnan(dice[k - 1]));   /* the fixture keeps one class absent */
    assert_same_double(get(&r, "mDice"), mdice[0], 1e-15, "mDice");
    assert_string_equal(r.primary, "mIoU");
    assert_same_double(r.primary_value, m.mIoU, 0, "primary");
    assert_int_equal(r.n_images, 5);
    assert_int_equal(r.n_volumes, 0);
    assert_true(isnan(segc_eval_result_get(&r, "Dice_WT")));
    segc_eval_result_free(&r);
    segc_evaluator_free(e);

    /* dice_skip_background, class names (copied: the caller's array may go away), a chosen primary */
    const char *names_src[6] = {"bg", "road", "sky", "car", "tree", "none"};
    const char **names = malloc(sizeof names_src);
    memcpy(names, names_src, sizeof names_src);
    s.dice_skip_background = true;
    s.class_names = names;
    snprintf(s.primary, sizeof s.primary, "Dice.road");
    e = new_eval(&s);
    free(names);
    feed_px(ctx, e, NULL);
    result_ok(e, &r);
    assert_same_double(get(&r, "mDice"), mdice[1], 1e-15, "mDice without background");
    assert_same_double(get(&r, "Dice.road"), dice[1], 1e-15, "Dice.road");
    assert_same_double(r.primary_value, dice[1], 1e-15, "primary Dice.road");
    segc_eval_result_free(&r);
    segc_evaluator_free(e);

    /* per_volume keeps the split-wide Dice as pixel_Dice / pixel_mDice */
    s = spec_of(k, true);
    e = new_eval(&s);
    feed_px(ctx, e, NULL);
    result_ok(e, &r);
    for (int j = 0; j < k; j++) {
        snprintf(nm, sizeof nm, "pixel_Dice.%d", j);
        assert_same_double(get(&r, nm), dice[j], 1e-15, nm);
    }
    assert_same_double(get(&r, "pixel_mDice"), mdice[0], 1e-15, "pixel_mDice");
    assert_same_double(get(&r, "mIoU"), m.mIoU, 0, "mIoU (per_volume)");
    assert_int_equal(r.n_volumes, 5);   /* no ids: every image its own volume */
    assert_string_equal(r.primary, "mDice");
    segc_eval_result_free(&r);
    segc_evaluator_free(e);
    free(dice), free(mdice);
    segc_metrics_free(&m);
    segc_confusion_free(&c);
    segc_ctx_free(ctx);
}

/* ---- (2) per-volume Dice on brats-mini ---- */

#define NVOL 2
#define BATCH 16
#define SHIFT 2
#define ERASE0 60
#define ERASE1 70

static segc_volume g_vol[NVOL];
static bool g_loaded;

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The validation label volumes, sorted by case name like the generator; missing data fails. */
static void load_volumes(void) {
    if (g_loaded) return;
    char dir[2300], path[2600], err[512];
    snprintf(dir, sizeof dir, "%s/brats-mini/validation", g_data);
    DIR *d = opendir(dir);
    if (!d) fail_msg("%s not found: the per-volume Dice test needs brats-mini (set SEGC_DATA)", dir);
    char *cases[16];
    int nc = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nc < 16)
        if (de->d_name[0] != '.') cases[nc++] = strdup(de->d_name);
    closedir(d);
    if (nc != NVOL) fail_msg("%s: expected %d cases, found %d", dir, NVOL, nc);
    qsort(cases, (size_t)nc, sizeof *cases, name_cmp);
    for (int v = 0; v < NVOL; v++) {
        snprintf(path, sizeof path, "%s/%s/OTMultiClass.nii.gz", dir, cases[v]);
        if (!segc_nifti_read(path, &g_vol[v], err, sizeof err)) fail_msg("%s", err);
        free(cases[v]);
    }
    /* the same files as the generator: per-label voxel counts */
    int64_t n;
    int64_t *hist = ref_raw("brats/label_hist", &n, 8);
    assert_int_equal(n, NVOL * 5);
    for (int v = 0; v < NVOL; v++) {
        int64_t h[5] = {0}, nvox = g_vol[v].dim[0] * g_vol[v].dim[1] * g_vol[v].dim[2];
        for (int64_t i = 0; i < nvox; i++) {
            long x = lrintf(g_vol[v].data[i]);
            assert_true(x >= 0 && x < 5);
            h[x]++;
        }
        for (int j = 0; j < 5; j++)
            if (h[j] != hist[v * 5 + j]) fail_msg("volume %d label %d: %lld voxels, generator saw %lld", v, j,
                                                  (long long)h[j], (long long)hist[v * 5 + j]);
    }
    free(hist);
    g_loaded = true;
}

static int label_at(const segc_volume *vl, int64_t x, int64_t y, int64_t z) {
    return (int)lrintf(vl->data[(z * vl->dim[1] + y) * vl->dim[0] + x]);
}

/* the generator's rule: shift by SHIFT along x, labels 1 <-> 3, slices [ERASE0, ERASE1) erased */
static int pred_at(const segc_volume *vl, int64_t x, int64_t y, int64_t z) {
    if (x < SHIFT || (z >= ERASE0 && z < ERASE1)) return 0;
    int l = label_at(vl, x - SHIFT, y, z);
    return l == 1 ? 3 : l == 3 ? 1 : l;
}

/* Slice order of a volume: volume 0 in order, volume 1 permuted (37 is coprime to 155). */
static int64_t slice_of(int v, int64_t i, int64_t nz) { return v == 0 ? i : (i * 37) % nz; }

/* Adds the slices i (in slice_of order) with i % mod == rem of every volume, BATCH at a time,
 * alternating between the volumes; volume 0 as u8/u8, volume 1 as i32 prediction / i64 label. */
static void feed_brats(segc_ctx *ctx, segc_evaluator *e, int mod, int rem) {
    const int64_t ids[NVOL] = {42, 7};   /* ids need not be ordered or dense */
    const int64_t nx = g_vol[0].dim[0], ny = g_vol[0].dim[1], hw = nx * ny;
    int64_t next[NVOL] = {rem, rem};
    uint8_t *p8 = malloc((size_t)(BATCH * hw)), *l8 = malloc((size_t)(BATCH * hw));
    int32_t *p32 = malloc((size_t)(BATCH * hw) * 4);
    int64_t *l64 = malloc((size_t)(BATCH * hw) * 8), vid[BATCH];
    for (bool more = true; more;) {
        more = false;
        for (int v = 0; v < NVOL; v++) {
            const segc_volume *vl = &g_vol[v];
            assert_true(vl->dim[0] == nx && vl->dim[1] == ny);
            int nb = 0;
            for (; nb < BATCH && next[v] < vl->dim[2]; nb++, next[v] += mod) {
                int64_t z = slice_of(v, next[v], vl->dim[2]);
                vid[nb] = ids[v];
                for (int64_t y = 0; y < ny; y++)
                    for (int64_t x = 0; x < nx; x++) {
                        int64_t o = nb * hw + y * nx + x;
                        int pv = pred_at(vl, x, y, z), lv = label_at(vl, x, y, z);
                        if (v == 0) p8[o] = (uint8_t)pv, l8[o] = (uint8_t)lv;
                        else p32[o] = pv, l64[o] = lv;
                    }
            }
            if (!nb) continue;
            more = true;
            segc_tensor *p = segc_tensor_wrap(ctx, v == 0 ? SEGC_U8 : SEGC_I32, 3, SHAPE(nb, ny, nx),
                                              v == 0 ? (void *)p8 : (void *)p32);
            segc_tensor *l = segc_tensor_wrap(ctx, v == 0 ? SEGC_U8 : SEGC_I64, 3, SHAPE(nb, ny, nx),
                                              v == 0 ? (void *)l8 : (void *)l64);
            if (!segc_evaluator_add(e, ctx, p, l, vid)) fail_msg("%s", segc_last_error(ctx));
            segc_ctx_step_begin(ctx);   /* the batch's scratch and wrappers go */
        }
    }
    free(p8), free(l8), free(p32), free(l64);
}

static segc_eval_spec brats_spec(void) {
    segc_eval_spec s = spec_of(5, false);
    segc_eval_spec_brats_regions(&s);
    return s;
}

static const char *const k_groups[7] = {"Dice_WT", "Dice_TC", "Dice_ET", "Dice.1", "Dice.2", "Dice.3", "Dice.4"};

static void test_brats_per_volume(void **state) {
    load_volumes();
    segc_ctx *ctx = segc_ctx_new(0);
    segc_eval_spec s = brats_spec();
    assert_true(s.per_volume && s.n_regions == 3);
    segc_evaluator *e = new_eval(&s);
    feed_brats(ctx, e, 1, 0);
    segc_eval_result r;
    result_ok(e, &r);
    int64_t n;
    double *want = ref_raw("brats/dice", &n, 8), *mdice = ref_raw("brats/mdice", &n, 8);
    for (int g = 0; g < 7; g++) assert_same_double(get(&r, k_groups[g]), want[g], 1e-14, k_groups[g]);
    assert_same_double(get(&r, "mDice"), mdice[0], 1e-14, "mDice");
    assert_string_equal(r.primary, "mDice");
    assert_same_double(r.primary_value, mdice[0], 1e-14, "primary");
    assert_int_equal(r.n_volumes, NVOL);
    assert_int_equal(r.n_images, NVOL * g_vol[0].dim[2]);
    /* no background label in the per-volume labels */
    assert_true(isnan(segc_eval_result_get(&r, "Dice.0")));
    assert_false(isnan(segc_eval_result_get(&r, "pixel_Dice.0")));
    free(want), free(mdice);

    /* print and JSON */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    segc_eval_result_print(f, &r, NULL);
    fclose(f);
    assert_non_null(strstr(buf, "| Class |  IoU  |  Acc  |  Dice |\n"));
    assert_non_null(strstr(buf, "|  Region |  Dice |\n"));
    assert_non_null(strstr(buf, "  pixel_mDice: "));
    assert_non_null(strstr(buf, "\nmDice: "));
    assert_non_null(strstr(buf, "per volume results (2 volumes):\n"));
    assert_true(strstr(buf, "|    WT   |") < strstr(buf, "| label 1 |"));   /* regions first */
    char line[64];
    snprintf(line, sizeof line, "|    ET   | %.2f |", segc_metric_percent(get(&r, "Dice_ET")));
    if (!strstr(buf, line)) fail_msg("no line \"%s\" in\n%s", line, buf);
    free(buf);
    char *js = segc_eval_result_json(&r, NULL);
    assert_non_null(js);
    cJSON *j = cJSON_Parse(js);
    assert_non_null(j);
    assert_int_equal(strncmp(js, "{\"mIoU\":", 8), 0);
    assert_true(fabs(cJSON_GetObjectItem(j, "Dice_WT")->valuedouble - segc_metric_percent(get(&r, "Dice_WT"))) < 1e-12);
    assert_true(fabs(cJSON_GetObjectItem(j, "mDice")->valuedouble - segc_metric_percent(get(&r, "mDice"))) < 1e-12);
    assert_true(fabs(cJSON_GetObjectItem(j, "mIoU")->valuedouble - segc_metric_percent(r.pixel.mIoU)) < 1e-12);
    cJSON *dice = cJSON_GetObjectItem(j, "Dice");
    assert_null(cJSON_GetObjectItem(dice, "0"));
    assert_true(fabs(cJSON_GetObjectItem(dice, "4")->valuedouble - segc_metric_percent(get(&r, "Dice.4"))) < 1e-12);
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "pixel_Dice"), "0"));
    assert_string_equal(cJSON_GetObjectItem(j, "primary")->valuestring, "mDice");
    assert_int_equal((int)cJSON_GetObjectItem(j, "n_volumes")->valuedouble, 2);
    cJSON_Delete(j);
    free(js);
    segc_eval_result_free(&r);
    segc_evaluator_free(e);
    segc_ctx_free(ctx);
}

/* ---- (4) merge: halves of every volume's slices on two evaluators ---- */

static void test_merge_halves(void **state) {
    load_volumes();
    segc_ctx *ctx = segc_ctx_new(0);
    segc_eval_spec s = brats_spec();
    segc_evaluator *all = new_eval(&s), *a = new_eval(&s), *b = new_eval(&s);
    feed_brats(ctx, all, 1, 0);
    feed_brats(ctx, a, 2, 0);
    feed_brats(ctx, b, 2, 1);
    char err[256];
    segc_eval_result ra, rb, rall;
    result_ok(a, &ra);
    assert_true(segc_evaluator_merge(a, b, err, sizeof err));
    result_ok(a, &rb);
    result_ok(all, &rall);
    assert_int_equal(rb.n, rall.n);
    for (int i = 0; i < rall.n; i++) {
        assert_string_equal(rb.names[i], rall.names[i]);
        /* bitwise: the same counts summed in the same (id) order */
        if (!(isnan(rall.values[i]) ? isnan(rb.values[i]) : rb.values[i] == rall.values[i]))
            fail_msg("%s: merged %.17g, single %.17g", rall.names[i], rb.values[i], rall.values[i]);
    }
    assert_int_equal(rb.n_volumes, 2);
    assert_int_equal(rb.n_images, rall.n_images);
    /* half the slices alone is a different result (the test can tell) */
    assert_true(ra.values[4 + 2 * 5] != rall.values[4 + 2 * 5] || get(&ra, "Dice_WT") != get(&rall, "Dice_WT"));
    segc_eval_result_free(&ra), segc_eval_result_free(&rb), segc_eval_result_free(&rall);
    /* reset empties everything */
    segc_evaluator_reset(a);
    result_ok(a, &ra);
    assert_int_equal(ra.n_volumes, 0);
    assert_int_equal(ra.n_images, 0);
    assert_true(isnan(get(&ra, "Dice_WT")) && isnan(get(&ra, "mDice")) && isnan(get(&ra, "mIoU")));
    segc_eval_result_free(&ra);
    segc_evaluator_free(all), segc_evaluator_free(a), segc_evaluator_free(b);
    segc_ctx_free(ctx);
}

/* ---- (3) empty volumes ---- */

static void add_u8(segc_ctx *ctx, segc_evaluator *e, int n, int h, int w, uint8_t *p, uint8_t *l, const int64_t *ids) {
    segc_tensor *tp = segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(n, h, w), p);
    segc_tensor *tl = segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(n, h, w), l);
    if (!segc_evaluator_add(e, ctx, tp, tl, ids)) fail_msg("%s", segc_last_error(ctx));
}

static void test_empty_volumes(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    segc_eval_spec s = brats_spec();
    segc_evaluator *e = new_eval(&s);
    /* volume 5: nothing predicted, nothing labelled (one tumour pixel predicted under an ignored
     * label does not count); volume 9: tumour labelled (2 and 4), nothing predicted */
    uint8_t p5[8] = {0, 0, 0, 4, 0, 0, 0, 0}, l5[8] = {0, 0, 0, 255, 0, 0, 0, 0};
    uint8_t p9[8] = {0}, l9[8] = {0, 2, 4, 0, 0, 0, 0, 0};
    add_u8(ctx, e, 1, 2, 4, p5, l5, (const int64_t[]){5});
    segc_eval_result r;
    result_ok(e, &r);
    for (int g = 0; g < 7; g++) assert_same_double(get(&r, k_groups[g]), 1.0, 0, k_groups[g]);
    assert_same_double(get(&r, "mDice"), 1.0, 0, "mDice");
    segc_eval_result_free(&r);
    add_u8(ctx, e, 1, 2, 4, p9, l9, (const int64_t[]){9});
    result_ok(e, &r);
    /* WT, TC, ET: (1 + 0) / 2; label 2 and 4: (1 + 0) / 2; labels 1 and 3 empty in both: 1 */
    const double want[7] = {0.5, 0.5, 0.5, 1.0, 0.5, 1.0, 0.5};
    for (int g = 0; g < 7; g++) assert_same_double(get(&r, k_groups[g]), want[g], 0, k_groups[g]);
    assert_same_double(get(&r, "mDice"), 0.5, 0, "mDice");
    segc_eval_result_free(&r);
    /* volume 9 again (a later slice), label 2 predicted right once: WT 2*1 / (1 + 3), label 2
     * 2*1 / (1 + 2), ET still 0 */
    uint8_t p9b[8] = {0, 2, 0, 0, 0, 0, 0, 0}, l9b[8] = {0, 2, 0, 0, 0, 0, 0, 0};
    add_u8(ctx, e, 1, 2, 4, p9b, l9b, (const int64_t[]){9});
    result_ok(e, &r);
    assert_same_double(get(&r, "Dice_WT"), (1.0 + 0.5) / 2, 1e-15, "Dice_WT after a second batch");
    assert_same_double(get(&r, "Dice.2"), (1.0 + 2.0 / 3.0) / 2, 1e-15, "Dice.2 after a second batch");
    assert_same_double(get(&r, "Dice_ET"), 0.5, 0, "Dice_ET after a second batch");
    segc_eval_result_free(&r);
    segc_evaluator_free(e);

    /* no regions: mDice is the mean over foreground labels */
    s = spec_of(3, true);
    e = new_eval(&s);
    uint8_t p[4] = {1, 1, 0, 0}, l[4] = {1, 0, 0, 0};
    add_u8(ctx, e, 1, 2, 2, p, l, NULL);
    result_ok(e, &r);
    assert_same_double(get(&r, "Dice.1"), 2.0 / 3.0, 1e-15, "Dice.1");
    assert_same_double(get(&r, "Dice.2"), 1.0, 0, "Dice.2");
    assert_same_double(get(&r, "mDice"), (2.0 / 3.0 + 1.0) / 2, 1e-15, "mDice over labels");
    segc_eval_result_free(&r);
    segc_evaluator_free(e);
    segc_ctx_free(ctx);
}

/* ---- (5) errors, names ---- */

static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    char err[256];
    segc_eval_spec s = brats_spec();
    segc_evaluator *e = new_eval(&s);
    segc_tensor *p = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(1, 4, 5));
    segc_tensor *l = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(1, 5, 4));
    assert_false(segc_evaluator_add(e, ctx, p, l, (const int64_t[]){1}));
    assert_non_null(strstr(segc_last_error(ctx), "evaluator_add"));
    assert_non_null(strstr(segc_last_error(ctx), "[1, 4, 5] and [1, 5, 4]"));
    segc_clear_error(ctx);
    segc_tensor *pf = segc_tensor_zeros(ctx, SEGC_F32, 3, SHAPE(1, 4, 5));
    assert_false(segc_evaluator_add(e, ctx, pf, p, NULL));
    assert_non_null(strstr(segc_last_error(ctx), "f32"));
    segc_clear_error(ctx);
    segc_eval_result r;
    result_ok(e, &r);   /* failures added nothing */
    assert_int_equal(r.n_volumes, 0);
    assert_int_equal(r.n_images, 0);
    segc_eval_result_free(&r);

    segc_eval_spec t = spec_of(4, true), bad = s;
    segc_evaluator *f = new_eval(&t);
    assert_false(segc_evaluator_merge(e, f, err, sizeof err));
    assert_non_null(strstr(err, "evaluator_merge"));
    segc_evaluator_free(f);
    bad.regions[2].labels[0] = 5;   /* outside 0..4 */
    assert_null(segc_evaluator_new(&bad, err, sizeof err));
    assert_non_null(strstr(err, "region ET: label 5"));
    bad = s;
    bad.per_volume = false;
    assert_null(segc_evaluator_new(&bad, err, sizeof err));
    assert_non_null(strstr(err, "per_volume"));
    bad = s;
    snprintf(bad.primary, sizeof bad.primary, "Dice_XX");
    assert_null(segc_evaluator_new(&bad, err, sizeof err));
    assert_non_null(strstr(err, "Dice_XX"));
    bad = s;
    bad.task = SEGC_TASK_DETECTION;
    assert_null(segc_evaluator_new(&bad, err, sizeof err));
    bad = spec_of(0, false);
    assert_null(segc_evaluator_new(&bad, err, sizeof err));

    assert_true(segc_eval_spec_knows(&s, "mDice"));
    assert_true(segc_eval_spec_knows(&s, "Dice_TC"));
    assert_true(segc_eval_spec_knows(&s, "IoU.3"));
    assert_false(segc_eval_spec_knows(&s, "Dice_XX"));
    assert_false(segc_eval_spec_knows(&t, "Dice_WT"));
    assert_true(segc_eval_spec_knows(&t, "mIoU"));
    assert_true(segc_metric_lower_is_better("loss"));
    assert_true(segc_metric_lower_is_better("val_loss_ce"));
    assert_false(segc_metric_lower_is_better("mIoU"));
    assert_false(segc_metric_lower_is_better("Dice_WT"));
    segc_evaluator_free(e);
    segc_ctx_free(ctx);
}

/* ---- table layout and JSON without per_volume ---- */

static void test_print_json_pixel(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    segc_eval_spec s = spec_of(3, false);
    segc_evaluator *e = new_eval(&s);
    /* segc_metrics' hand example: class 0 I 2 P 2 L 3, class 1 I 2 P 3 L 2, class 2 absent */
    uint8_t pred[6] = {0, 0, 1, 1, 1, 0}, lab[6] = {0, 0, 0, 1, 1, 255};
    add_u8(ctx, e, 1, 2, 3, pred, lab, NULL);
    segc_eval_result r;
    result_ok(e, &r);
    assert_same_double(get(&r, "Dice.0"), 0.8, 1e-15, "Dice.0");
    assert_same_double(get(&r, "Dice.1"), 0.8, 1e-15, "Dice.1");
    assert_true(isnan(get(&r, "Dice.2")));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    const char *names[3] = {"sky", "building", "car"};
    segc_eval_result_print(f, &r, names);
    fclose(f);
    assert_non_null(strstr(buf, "per class results:\n"));
    assert_non_null(strstr(buf, "+----------+-------+--------+-------+\n"));
    assert_non_null(strstr(buf, "|  Class   |  IoU  |  Acc   |  Dice |\n"));
    assert_non_null(strstr(buf, "| building | 66.67 | 100.00 | 80.00 |\n"));
    assert_non_null(strstr(buf, "|   car    |  nan  |  nan   |  nan  |\n"));
    assert_non_null(strstr(buf, "aAcc: 80.00  mIoU: 66.67  mAcc: 83.33  mDice: 80.00\n"));
    assert_null(strstr(buf, "per volume"));
    free(buf);
    char *js = segc_eval_result_json(&r, names);
    cJSON *j = cJSON_Parse(js);
    assert_non_null(j);
    assert_true(fabs(cJSON_GetObjectItem(j, "mAcc")->valuedouble - 83.33) < 1e-12);
    assert_true(fabs(cJSON_GetObjectItem(j, "mDice")->valuedouble - 80.0) < 1e-12);
    assert_true(fabs(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "Acc"), "building")->valuedouble - 100.0) < 1e-12);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "Dice"), "car")));
    assert_true(fabs(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "Dice"), "sky")->valuedouble - 80.0) < 1e-12);
    assert_null(cJSON_GetObjectItem(j, "n_volumes"));
    assert_string_equal(cJSON_GetObjectItem(j, "primary")->valuestring, "mIoU");
    cJSON_Delete(j);
    free(js);
    segc_eval_result_free(&r);
    segc_evaluator_free(e);
    segc_ctx_free(ctx);
}

int main(void) {
    const char *env = getenv("SEGC_DATA");
    snprintf(g_data, sizeof g_data, "%s", env && *env ? env : "../shared/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pixel_metrics),   cmocka_unit_test(test_brats_per_volume),
        cmocka_unit_test(test_merge_halves),    cmocka_unit_test(test_empty_volumes),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_print_json_pixel),
    };
    int rc = cmocka_run_group_tests_name("task", tests, setup, teardown);
    for (int v = 0; v < NVOL; v++) segc_volume_free(&g_vol[v]);
    return rc;
}
