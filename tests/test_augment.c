/* augmentation: apply steps against cv2/mmseg/mmdet references
 * (tests/fixtures/gen_augment.py), the random draws' ranges and frequencies,
 * fused resize+crop equal to resize-then-crop, whole pipelines, errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/augment.h"

static segc_st_file *FX;
static void *copies[4096];
static int n_copies;

static int setup(void **state) {
    FX = fx_open("augment.safetensors");
    return FX ? 0 : -1;
}
static int teardown(void **state) {
    for (int i = 0; i < n_copies; i++) free(copies[i]);
    segc_st_close(FX);
    return 0;
}

/* Fixture entry copied to aligned memory (safetensors offsets need not be
 * aligned for the element type); copies are freed at teardown. */
static const void *fx_data(const char *cas, const char *key, int64_t *numel) {
    char name[128];
    snprintf(name, sizeof name, "%s/%s", cas, key);
    const segc_st_entry *e = segc_st_get(FX, name);
    if (!e) return NULL;
    if (numel) {
        *numel = 1;
        for (int d = 0; d < e->ndim; d++) *numel *= e->shape[d];
    }
    void *c = malloc(e->nbytes ? e->nbytes : 1);
    memcpy(c, e->data, e->nbytes);
    if (n_copies < 4096) copies[n_copies++] = c;
    return c;
}
#define P(cas, key) fx_param_int(FX, cas, key, -1)

/* max |a-b| over n bytes; counts the differing ones */
static int max_u8_diff(const uint8_t *a, const uint8_t *b, int64_t n, int64_t *ndiff) {
    int m = 0;
    *ndiff = 0;
    for (int64_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d) (*ndiff)++;
        if (d > m) m = d;
    }
    return m;
}

static segc_sample make_sample(int h, int w, int c, bool with_label, uint64_t seed) {
    segc_sample s;
    memset(&s, 0, sizeof s);
    assert_true(segc_image_alloc(&s.img, h, w, c, SEGC_U8));
    segc_rng r;
    segc_rng_init(&r, seed);
    uint8_t *p = s.img.data;
    for (int64_t i = 0; i < (int64_t)h * w * c; i++) {
        int y = (int)(i / ((int64_t)w * c)), x = (int)(i / c % w);
        p[i] = (uint8_t)((x * 7 + y * 3 + (int)(i % c) * 50) % 200 + (int)(segc_rng_uniform(&r) * 55));
    }
    if (with_label) {
        assert_true(segc_image_alloc(&s.label, h, w, 1, SEGC_U8));
        uint8_t *l = s.label.data;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) l[y * w + x] = (uint8_t)(x < w / 3 ? 0 : y < h / 2 ? 1 : (x + y) % 17 == 0 ? 255 : 2);
    }
    return s;
}

/* ---- resize ---- */
static void test_resize_against_cv2(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 0);
    int64_t total = 0, differing = 0;
    int i = 0;
    for (;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "resize%d", i);
        const uint8_t *img = fx_data(cas, "img", NULL);
        if (!img) break;
        int h = (int)P(cas, "h"), w = (int)P(cas, "w"), c = (int)P(cas, "c"), nh = (int)P(cas, "nh"),
            nw = (int)P(cas, "nw");
        const uint8_t *want = fx_data(cas, "out", NULL), *lab = fx_data(cas, "label", NULL),
                      *lwant = fx_data(cas, "label_out", NULL);
        size_t n = (size_t)nh * nw * c;
        uint8_t *got = malloc(n), *lgot = malloc((size_t)nh * nw), *win = malloc(n);
        segc_arena_reset(&ar);
        segc_resize_bilinear_u8(img, h, w, c, nh, nw, 0, 0, nh, nw, got, &ar);
        int64_t nd;
        int md = max_u8_diff(got, want, (int64_t)n, &nd);
        if (md > 1) fprintf(stderr, "%s: bilinear max diff %d (%lld of %zu differ)\n", cas, md, (long long)nd, n);
        assert_true(md <= 1);
        total += (int64_t)n;
        differing += nd;
        segc_resize_nearest_u8(lab, h, w, 1, nh, nw, 0, 0, nh, nw, lgot, &ar);
        assert_memory_equal(lgot, lwant, (size_t)nh * nw);
        /* any window of the resized image equals the same window of the full result */
        int y0 = nh / 3, x0 = nw / 4, oh = nh - y0 - (nh > 2), ow = nw - x0 - (nw > 3);
        segc_resize_bilinear_u8(img, h, w, c, nh, nw, y0, x0, oh, ow, win, &ar);
        for (int y = 0; y < oh; y++)
            assert_memory_equal(win + (size_t)y * ow * c, got + ((size_t)(y0 + y) * nw + x0) * c, (size_t)ow * c);
        segc_resize_nearest_u8(lab, h, w, 1, nh, nw, y0, x0, oh, ow, win, &ar);
        for (int y = 0; y < oh; y++) assert_memory_equal(win + (size_t)y * ow, lgot + (size_t)(y0 + y) * nw + x0, (size_t)ow);
        free(got);
        free(lgot);
        free(win);
    }
    EXPECT_CASES(i, "resize");
    printf("bilinear vs cv2: %lld of %lld values differ by 1\n", (long long)differing, (long long)total);
    assert_true(differing * 50 < total);   /* off-by-one is cv2's scalar tail, not the rule */
    segc_arena_free(&ar);
}

static void test_rescale_against_mmcv(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 0);
    int i = 0;
    for (;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "rescale%d", i);
        if (P(cas, "h") < 0) break;
        int h = (int)P(cas, "h"), w = (int)P(cas, "w"), sw = (int)P(cas, "scale_w"), sh = (int)P(cas, "scale_h");
        int nh, nw;
        segc_rescale_size(h, w, sw, sh, &nh, &nw);
        assert_int_equal(nh, P(cas, "nh"));
        assert_int_equal(nw, P(cas, "nw"));
        const uint8_t *img = fx_data(cas, "img", NULL);
        if (!img) continue;
        /* through the pipeline: Resize(scale, keep_ratio) on image + label */
        segc_sample s;
        memset(&s, 0, sizeof s);
        s.img = (segc_image){h, w, 3, SEGC_U8, (void *)img};
        s.label = (segc_image){h, w, 1, SEGC_U8, (void *)fx_data(cas, "label", NULL)};
        segc_pipeline p = {0};
        segc_aug_transform t = segc_aug_default(SEGC_AUG_RESIZE);
        t.p.resize = (segc_aug_resize){sw, sh, true, true};
        char err[256];
        assert_true(segc_pipeline_add(&p, t, err, sizeof err));
        segc_aug_state st;
        segc_arena_reset(&ar);
        assert_true(segc_pipeline_run(&p, &s, 1, &ar, &st, err, sizeof err));
        assert_int_equal(st.h, nh);
        assert_int_equal(st.w, nw);
        int64_t nd;
        assert_true(max_u8_diff(st.img, fx_data(cas, "out", NULL), (int64_t)nh * nw * 3, &nd) <= 1);
        assert_memory_equal(st.label, fx_data(cas, "label_out", NULL), (size_t)nh * nw);
    }
    EXPECT_CASES(i, "rescale");
    segc_arena_free(&ar);
}

/* ---- crop ---- */
static void test_crop_choice_mmseg(void **state) {
    int i = 0;
    for (;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "crop%d", i);
        const uint8_t *lab = fx_data(cas, "label", NULL);
        if (!lab) break;
        const int32_t *cand = fx_data(cas, "cand", NULL);
        int cy[11], cx[11];
        for (int k = 0; k < 11; k++) cy[k] = cand[2 * k], cx[k] = cand[2 * k + 1];
        int got = segc_crop_choose(lab, (int)P(cas, "h"), (int)P(cas, "w"), (int)P(cas, "crop_h"),
                                   (int)P(cas, "crop_w"), fx_param_double(FX, cas, "cat_max_ratio", 1), 255, cy, cx, 11);
        assert_int_equal(got, P(cas, "choice"));
    }
    EXPECT_CASES(i, "crop");
    /* window clipped to the image, copy semantics */
    uint8_t src[4 * 5 * 2], dst[40];
    for (int i = 0; i < 40; i++) src[i] = (uint8_t)i;
    int oh, ow;
    segc_crop_u8(src, 4, 5, 2, 2, 3, 9, 9, dst, &oh, &ow);
    assert_int_equal(oh, 2);
    assert_int_equal(ow, 2);
    assert_int_equal(dst[0], (2 * 5 + 3) * 2);
    assert_int_equal(dst[7], (3 * 5 + 4) * 2 + 1);
}

static void test_flip(void **state) {
    uint8_t img[2 * 3 * 3], orig[18];
    for (int i = 0; i < 18; i++) img[i] = orig[i] = (uint8_t)i;
    segc_flip_u8(img, 2, 3, 3);
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            for (int k = 0; k < 3; k++) assert_int_equal(img[(y * 3 + x) * 3 + k], orig[(y * 3 + 2 - x) * 3 + k]);
    segc_flip_u8(img, 2, 3, 3);
    assert_memory_equal(img, orig, 18);
    float boxes[4] = {1, 2, 5, 7};
    segc_boxes_flip(boxes, 1, 10);
    assert_true(boxes[0] == 5 && boxes[2] == 9 && boxes[1] == 2 && boxes[3] == 7);
}

/* ---- colour ---- */
static void test_hsv_against_cv2(void **state) {
    int64_t n = 0;
    const uint8_t *rgb = fx_data("hsv", "rgb", &n);
    n /= 3;
    uint8_t *hsv = malloc((size_t)n * 3), *back = malloc((size_t)n * 3);
    segc_rgb_to_hsv_u8(rgb, hsv, n);
    assert_memory_equal(hsv, fx_data("hsv", "hsv", NULL), (size_t)n * 3);
    segc_hsv_to_rgb_u8(fx_data("hsv", "hsv_in", NULL), back, 1, (int)n);
    int64_t nd;
    int md = max_u8_diff(back, fx_data("hsv", "rgb_out", NULL), n * 3, &nd);
    printf("hsv2rgb vs cv2: max diff %d, %lld of %lld differ\n", md, (long long)nd, (long long)n * 3);
    assert_true(md <= 1);
    free(hsv);
    free(back);
}

static void test_photometric_against_mmseg(void **state) {
    int i = 0;
    for (;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "photo%d", i);
        int64_t n;
        const uint8_t *img = fx_data(cas, "img", &n);
        if (!img) break;
        segc_photometric_params pp = {
            .do_brightness = P(cas, "do_brightness"), .beta = (float)fx_param_double(FX, cas, "beta", 0),
            .mode = (int)P(cas, "mode"), .do_contrast = P(cas, "do_contrast"),
            .alpha = (float)fx_param_double(FX, cas, "alpha", 1), .do_saturation = P(cas, "do_saturation"),
            .saturation = (float)fx_param_double(FX, cas, "saturation", 1), .do_hue = P(cas, "do_hue"),
            .hue = (int)fx_param_int(FX, cas, "hue", 0)};
        uint8_t *got = malloc((size_t)n);
        memcpy(got, img, (size_t)n);
        segc_photometric_apply(got, (int)P(cas, "h"), (int)P(cas, "w"), &pp);
        int64_t nd;
        int md = max_u8_diff(got, fx_data(cas, "out", NULL), n, &nd);
        if (md) fprintf(stderr, "%s: max diff %d (%lld differ)\n", cas, md, (long long)nd);
        assert_true(md <= 1);
        free(got);
    }
    EXPECT_CASES(i, "photo");
}

static void test_normalize_against_torch(void **state) {
    int i = 0;
    for (;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "norm%d", i);
        const uint8_t *img = fx_data(cas, "img", NULL);
        if (!img) break;
        int h = (int)P(cas, "h"), w = (int)P(cas, "w"), ph = (int)P(cas, "pad_h"), pw = (int)P(cas, "pad_w");
        const float *want = fx_data(cas, "out", NULL);
        float *got = malloc(sizeof(float) * 3 * ph * pw);
        segc_normalize_chw(img, h, w, 3, fx_data(cas, "mean", NULL), fx_data(cas, "std", NULL), !P(cas, "to_rgb"),
                           got, ph, pw, 0.f);
        for (int k = 0; k < 3 * ph * pw; k++) assert_true(fabsf(got[k] - want[k]) <= 1e-6f * (1 + fabsf(want[k])));
        free(got);
    }
    EXPECT_CASES(i, "norm");
}

/* ---- detection ---- */
static void test_expand_against_mmdet(void **state) {
    int i = 0;
    for (;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "expand%d", i);
        const uint8_t *img = fx_data(cas, "img", NULL);
        if (!img) break;
        int eh = (int)P(cas, "eh"), ew = (int)P(cas, "ew");
        uint8_t fill[3] = {123, 116, 103};
        uint8_t *got = malloc((size_t)eh * ew * 3);
        segc_expand_u8(img, (int)P(cas, "h"), (int)P(cas, "w"), 3, fill, eh, ew, (int)P(cas, "top"),
                       (int)P(cas, "left"), got);
        assert_memory_equal(got, fx_data(cas, "out", NULL), (size_t)eh * ew * 3);
        free(got);
    }
    EXPECT_CASES(i, "expand");
}

static void test_boxes_against_mmdet(void **state) {
    int i = 0;
    for (;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "boxcrop%d", i);
        const float *boxes = fx_data(cas, "boxes", NULL);
        if (!boxes) break;
        int n = (int)P(cas, "n");
        long pl[4];
        assert_int_equal(fx_param_ints(FX, cas, "patch", pl, 4), 4);
        int patch[4] = {(int)pl[0], (int)pl[1], (int)pl[2], (int)pl[3]};
        float pf[4] = {(float)pl[0], (float)pl[1], (float)pl[2], (float)pl[3]}, iou[16];
        segc_boxes_iou_patch(boxes, n, pf, iou);
        const float *want_iou = fx_data(cas, "iou", NULL);
        for (int k = 0; k < n; k++) assert_true(fabsf(iou[k] - want_iou[k]) <= 1e-6f);
        float b[64];
        int32_t lab[16];
        memcpy(b, boxes, sizeof(float) * 4 * n);
        memcpy(lab, fx_data(cas, "labels", NULL), sizeof(int32_t) * n);
        int64_t nk;
        const float *kept = fx_data(cas, "kept", &nk);
        int m = segc_boxes_crop(b, lab, NULL, n, patch);
        assert_int_equal(m * 4, nk);
        for (int k = 0; k < 4 * m; k++) assert_true(fabsf(b[k] - kept[k]) <= 1e-5f);
        if (m) assert_memory_equal(lab, fx_data(cas, "kept_labels", NULL), sizeof(int32_t) * m);
    }
    EXPECT_CASES(i, "boxcrop");
    /* fixed-size Resize through the pipeline rescales and clips boxes like mmdet */
    segc_arena ar;
    segc_arena_init(&ar, 0);
    for (int i = 0; i < 2; i++) {
        char cas[32], err[256];
        snprintf(cas, sizeof cas, "detresize%d", i);
        int h = (int)P(cas, "h"), w = (int)P(cas, "w");
        segc_sample s = make_sample(h, w, 3, false, 5);
        float b[20];
        memcpy(b, fx_data(cas, "boxes", NULL), sizeof b);
        int32_t lab[5] = {0, 1, 2, 3, 4};
        s.n_boxes = 5;
        s.boxes = b;
        s.box_labels = lab;
        segc_pipeline p;
        segc_pipeline_ssd_eval(&p, 300);
        segc_aug_state st;
        segc_arena_reset(&ar);
        assert_true(segc_pipeline_run(&p, &s, 3, &ar, &st, err, sizeof err));
        assert_int_equal(st.n_boxes, 5);
        const float *want = fx_data(cas, "boxes_out", NULL);
        for (int k = 0; k < 20; k++) assert_true(fabsf(st.boxes[k] - want[k]) <= 1e-4f);
        s.boxes = NULL;
        s.box_labels = NULL;
        s.n_boxes = 0;
        segc_sample_free(&s);
    }
    segc_arena_free(&ar);
}

/* ---- draws ---- */
static void test_draw_distributions(void **state) {
    segc_rng r;
    segc_rng_init(&r, 99);
    const int N = 4000;
    segc_aug_random_resize rr = {2048, 512, 0.5, 2.0, true};
    double sum = 0;
    int lo_hits = 0, hi_hits = 0;
    for (int i = 0; i < N; i++) {
        int sw, sh;
        segc_random_resize_draw(&rr, &r, &sw, &sh);
        assert_true(sw >= 1024 && sw < 4096 && sh >= 256 && sh < 1024);
        sum += sw / 2048.0;
        lo_hits += sw < 1100;
        hi_hits += sw > 4000;
    }
    assert_true(fabs(sum / N - 1.25) < 0.03);
    assert_true(lo_hits > 0 && hi_hits > 0);
    /* crop offsets: numpy randint(0, margin + 1) */
    int hist[6] = {0};
    for (int i = 0; i < N; i++) {
        int y, x;
        segc_crop_offset_draw(&r, 12, 3, 7, 5, &y, &x);
        assert_true(y >= 0 && y <= 5);
        assert_int_equal(x, 0);
        hist[y]++;
    }
    for (int k = 0; k < 6; k++) assert_true(abs(hist[k] - N / 6) < N / 20);
    /* flip probability */
    segc_aug_random_flip fl = {0.5};
    int flips = 0;
    for (int i = 0; i < N; i++) flips += segc_flip_draw(&fl, &r);
    assert_true(abs(flips - N / 2) < N / 20);
    fl.prob = 0;
    for (int i = 0; i < 100; i++) assert_false(segc_flip_draw(&fl, &r));
    /* photometric: every step on half the time, parameters in mmseg's ranges */
    segc_aug_photometric ph = {32, 0.5, 1.5, 0.5, 1.5, 18};
    int nb = 0, nc = 0, ns = 0, nh = 0, m1 = 0, hue_min = 99, hue_max = -99;
    for (int i = 0; i < N; i++) {
        segc_photometric_params pp;
        segc_photometric_draw(&ph, &r, &pp);
        nb += pp.do_brightness;
        nc += pp.do_contrast;
        ns += pp.do_saturation;
        nh += pp.do_hue;
        m1 += pp.mode;
        if (pp.do_brightness) assert_true(pp.beta >= -32 && pp.beta <= 32);
        if (pp.do_contrast) assert_true(pp.alpha >= 0.5f && pp.alpha <= 1.5f);
        if (pp.do_saturation) assert_true(pp.saturation >= 0.5f && pp.saturation <= 1.5f);
        if (pp.do_hue) {
            if (pp.hue < hue_min) hue_min = pp.hue;
            if (pp.hue > hue_max) hue_max = pp.hue;
        }
    }
    int cnt[5] = {nb, nc, ns, nh, m1};
    for (int k = 0; k < 5; k++) assert_true(abs(cnt[k] - N / 2) < N / 20);
    assert_int_equal(hue_min, -18);   /* numpy randint(-18, 18): 17 is the top */
    assert_int_equal(hue_max, 17);
    /* expand */
    segc_aug_expand ex = segc_aug_default(SEGC_AUG_EXPAND).p.expand;
    int nexp = 0;
    for (int i = 0; i < N; i++) {
        int eh, ew, top, left;
        if (!segc_expand_draw(&ex, &r, 30, 40, &eh, &ew, &top, &left)) continue;
        nexp++;
        assert_true(eh >= 30 && eh <= 120 && ew >= 40 && ew <= 160);
        assert_true(top >= 0 && left >= 0 && top + 30 <= eh && left + 40 <= ew);
    }
    assert_true(abs(nexp - N / 2) < N / 20);
}

static void test_min_iou_crop_rules(void **state) {
    segc_rng r;
    segc_rng_init(&r, 5);
    segc_aug_min_iou_crop m = segc_aug_default(SEGC_AUG_MIN_IOU_CROP).p.min_iou_crop;
    float boxes[12] = {10, 10, 60, 50, 70, 20, 95, 90, 30, 60, 50, 75};
    int whole = 0;
    for (int i = 0; i < 500; i++) {
        int patch[4];
        if (!segc_min_iou_crop_draw(&m, &r, 100, 120, boxes, 3, patch)) {
            whole++;
            continue;
        }
        int pw = patch[2] - patch[0], ph = patch[3] - patch[1];
        assert_true(patch[0] >= 0 && patch[1] >= 0 && patch[2] <= 120 && patch[3] <= 100 && pw > 0 && ph > 0);
        assert_true(pw >= 0.3 * 120 - 1 && ph >= 0.3 * 100 - 1);
        bool any = false;
        for (int k = 0; k < 3; k++) {
            float cx = (boxes[4 * k] + boxes[4 * k + 2]) / 2, cy = (boxes[4 * k + 1] + boxes[4 * k + 3]) / 2;
            any |= cx > patch[0] && cx < patch[2] && cy > patch[1] && cy < patch[3];
        }
        assert_true(any);
    }
    assert_true(whole > 30 && whole < 400);   /* unsatisfiable IoU modes are redrawn, raising mode 1's share */
    /* no boxes: every mode but 1 accepts its first valid patch, so 1 in 7 stays whole */
    int patch[4];
    whole = 0;
    for (int i = 0; i < 2000; i++) {
        if (!segc_min_iou_crop_draw(&m, &r, 10, 10, NULL, 0, patch)) {
            whole++;
            continue;
        }
        assert_true(patch[2] > patch[0] && patch[3] > patch[1] && patch[2] <= 10 && patch[3] <= 10);
    }
    assert_true(abs(whole - 2000 / 7) < 60);
}

/* ---- fused resize + crop == resize everything, then crop ---- */
static void test_fused_resize_crop(void **state) {
    segc_arena ar, ar2;
    segc_arena_init(&ar, 0);
    segc_arena_init(&ar2, 0);
    segc_sample s = make_sample(45, 61, 3, true, 11);
    segc_pipeline p = {0};
    char err[256];
    segc_aug_transform t = segc_aug_default(SEGC_AUG_RANDOM_RESIZE);
    t.p.random_resize = (segc_aug_random_resize){80, 40, 0.5, 2.0, true};
    assert_true(segc_pipeline_add(&p, t, err, sizeof err));
    t = segc_aug_default(SEGC_AUG_RANDOM_CROP);
    t.p.random_crop = (segc_aug_random_crop){32, 40, 0.75, 255};
    assert_true(segc_pipeline_add(&p, t, err, sizeof err));
    for (uint64_t seed = 0; seed < 40; seed++) {
        segc_aug_state st;
        segc_arena_reset(&ar);
        assert_true(segc_pipeline_run(&p, &s, seed, &ar, &st, err, sizeof err));
        /* replay the draws with the unfused apply steps */
        segc_rng r;
        segc_rng_init(&r, seed);
        int sw, sh, nh, nw;
        segc_random_resize_draw(&p.t[0].p.random_resize, &r, &sw, &sh);
        segc_rescale_size(45, 61, sw, sh, &nh, &nw);
        segc_arena_reset(&ar2);
        uint8_t *full = segc_arena_alloc(&ar2, (size_t)nh * nw * 3), *lfull = segc_arena_alloc(&ar2, (size_t)nh * nw);
        segc_resize_bilinear_u8(s.img.data, 45, 61, 3, nh, nw, 0, 0, nh, nw, full, &ar2);
        segc_resize_nearest_u8(s.label.data, 45, 61, 1, nh, nw, 0, 0, nh, nw, lfull, &ar2);
        int cy[11], cx[11];
        for (int k = 0; k < 11; k++) {
            segc_crop_offset_draw(&r, nh, nw, 32, 40, &cy[k], &cx[k]);
            if (k < 10 && segc_crop_class_ok(lfull, nh, nw, cy[k], cx[k], 32, 40, 0.75, 255)) {
                cy[10] = cy[k], cx[10] = cx[k];
                break;
            }
        }
        int y0 = cy[10], x0 = cx[10], oh, ow;
        uint8_t *crop = segc_arena_alloc(&ar2, (size_t)32 * 40 * 3), *lcrop = segc_arena_alloc(&ar2, 32 * 40);
        segc_crop_u8(full, nh, nw, 3, y0, x0, 32, 40, crop, &oh, &ow);
        assert_int_equal(st.h, oh);
        assert_int_equal(st.w, ow);
        assert_memory_equal(st.img, crop, (size_t)oh * ow * 3);
        segc_crop_u8(lfull, nh, nw, 1, y0, x0, 32, 40, lcrop, &oh, &ow);
        assert_memory_equal(st.label, lcrop, (size_t)oh * ow);
    }
    segc_sample_free(&s);
    segc_arena_free(&ar);
    segc_arena_free(&ar2);
}

/* ---- whole pipelines ---- */
static void test_seg_train_pipeline(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 0);
    segc_sample s = make_sample(60, 90, 3, true, 3);
    segc_pipeline p;
    segc_pipeline_seg_train(&p, 120, 40, 0.5, 2.0, 48, 64, 0.75);
    char err[256];
    assert_true(segc_pipeline_validate(&p, err, sizeof err));
    int fh, fw;
    bool lf;
    assert_true(segc_pipeline_fixed_size(&p, &fh, &fw, &lf));
    assert_true(fh == 48 && fw == 64 && lf);
    float *a = malloc(sizeof(float) * 3 * 48 * 64), *b = malloc(sizeof(float) * 3 * 48 * 64);
    int64_t *la = malloc(sizeof(int64_t) * 48 * 64);
    uint8_t *lb = malloc(48 * 64);
    int padded = 0, flips = 0;
    for (uint64_t seed = 0; seed < 30; seed++) {
        segc_aug_state st;
        segc_arena_reset(&ar);
        assert_true(segc_pipeline_run(&p, &s, seed, &ar, &st, err, sizeof err));
        int oh, ow;
        segc_aug_out_size(&st, &oh, &ow);
        assert_true(oh == 48 && ow == 64 && st.h <= 48 && st.w <= 64);
        flips += st.flipped;
        segc_aug_write_image(&st, a, 48, 64);
        segc_aug_write_label(&st, la, SEGC_I64, 48, 64);
        segc_aug_write_label(&st, lb, SEGC_U8, 48, 64);
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 64; x++) {
                bool in = y < st.h && x < st.w;
                assert_int_equal(la[y * 64 + x], lb[y * 64 + x]);
                if (!in) {
                    assert_int_equal(lb[y * 64 + x], 255);
                    for (int k = 0; k < 3; k++) assert_true(a[(k * 48 + y) * 64 + x] == 0.f);
                    padded++;
                } else {
                    float v = a[y * 64 + x];
                    assert_true(v > -2.2f && v < 2.7f);   /* (0..255 - mean) / std */
                }
            }
        /* same seed, same bits */
        segc_arena_reset(&ar);
        assert_true(segc_pipeline_run(&p, &s, seed, &ar, &st, err, sizeof err));
        segc_aug_write_image(&st, b, 48, 64);
        assert_memory_equal(a, b, sizeof(float) * 3 * 48 * 64);
    }
    assert_true(padded > 0);          /* ratio 0.5 makes some images smaller than the crop */
    assert_true(flips > 3 && flips < 27);
    free(a);
    free(b);
    free(la);
    free(lb);
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

static void test_eval_and_ssd_pipelines(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 0);
    char err[256];
    segc_sample s = make_sample(50, 70, 3, true, 4);
    segc_pipeline p;
    segc_pipeline_seg_eval(&p, 140, 40);
    assert_false(segc_pipeline_fixed_size(&p, NULL, NULL, NULL));
    segc_aug_state st;
    assert_true(segc_pipeline_run(&p, &s, 0, &ar, &st, err, sizeof err));
    int nh, nw;
    segc_rescale_size(50, 70, 140, 40, &nh, &nw);
    assert_true(st.h == nh && st.w == nw);
    assert_true(st.label_h == 50 && st.label_w == 70);   /* label stays at the original size */
    segc_sample_free(&s);

    s = make_sample(80, 100, 3, false, 6);
    float boxes[8] = {10, 10, 40, 50, 60, 5, 99, 79};
    int32_t labels[2] = {3, 7};
    s.boxes = boxes;
    s.box_labels = labels;
    s.n_boxes = 2;
    segc_pipeline_ssd_train(&p, 300);
    assert_true(segc_pipeline_validate(&p, err, sizeof err));
    int fh, fw;
    assert_true(segc_pipeline_fixed_size(&p, &fh, &fw, NULL) && fh == 300 && fw == 300);
    int kept_total = 0;
    for (uint64_t seed = 0; seed < 30; seed++) {
        segc_arena_reset(&ar);
        assert_true(segc_pipeline_run(&p, &s, seed, &ar, &st, err, sizeof err));
        assert_true(st.h == 300 && st.w == 300);
        assert_true(st.n_boxes >= 1 && st.n_boxes <= 2);
        kept_total += st.n_boxes;
        for (int k = 0; k < st.n_boxes; k++) {
            const float *b = st.boxes + 4 * k;
            assert_true(b[0] >= 0 && b[1] >= 0 && b[2] <= 300 && b[3] <= 300 && b[0] <= b[2] && b[1] <= b[3]);
            assert_true(st.box_labels[k] == 3 || st.box_labels[k] == 7);
        }
    }
    assert_true(kept_total > 30);
    s.boxes = NULL;
    s.box_labels = NULL;
    s.n_boxes = 0;
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

static void test_errors(void **state) {
    char err[256] = "";
    segc_pipeline p;
    segc_pipeline_seg_train(&p, 100, 50, 2.0, 0.5, 32, 32, 0.75);   /* lo > hi */
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "random_resize"));
    segc_pipeline_seg_train(&p, 100, 50, 0.5, 2.0, 0, 32, 0.75);
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "random_crop"));
    p.n = SEGC_PIPELINE_MAX;
    assert_false(segc_pipeline_add(&p, segc_aug_default(SEGC_AUG_PAD), err, sizeof err));
    assert_non_null(strstr(err, "pipeline"));

    segc_arena ar;
    segc_arena_init(&ar, 0);
    segc_aug_state st;
    segc_sample s = make_sample(10, 12, 1, true, 1);
    segc_pipeline_seg_train(&p, 24, 20, 1.0, 1.0, 8, 8, 0.75);
    assert_false(segc_pipeline_run(&p, &s, 0, &ar, &st, err, sizeof err));   /* gray image into photometric */
    assert_non_null(strstr(err, "photometric"));
    segc_sample_free(&s);

    s = make_sample(10, 12, 3, true, 1);
    s.label.w = 11;   /* label size disagrees with the image */
    assert_false(segc_pipeline_run(&p, &s, 0, &ar, &st, err, sizeof err));
    assert_non_null(strstr(err, "label"));
    s.label.w = 12;
    s.img.dtype = SEGC_F32;
    assert_false(segc_pipeline_run(&p, &s, 0, &ar, &st, err, sizeof err));
    assert_non_null(strstr(err, "augment: image"));
    s.img.dtype = SEGC_U8;
    segc_pipeline q = {0};
    segc_aug_transform t = segc_aug_default(SEGC_AUG_PAD);
    t.p.pad = (segc_aug_pad){8, 8, 0.f, 255};
    assert_true(segc_pipeline_add(&q, t, err, sizeof err));
    assert_false(segc_pipeline_run(&q, &s, 0, &ar, &st, err, sizeof err));
    assert_non_null(strstr(err, "pad"));
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_against_cv2),     cmocka_unit_test(test_rescale_against_mmcv),
        cmocka_unit_test(test_crop_choice_mmseg),      cmocka_unit_test(test_flip),
        cmocka_unit_test(test_hsv_against_cv2),        cmocka_unit_test(test_photometric_against_mmseg),
        cmocka_unit_test(test_normalize_against_torch), cmocka_unit_test(test_expand_against_mmdet),
        cmocka_unit_test(test_boxes_against_mmdet),    cmocka_unit_test(test_draw_distributions),
        cmocka_unit_test(test_min_iou_crop_rules),     cmocka_unit_test(test_fused_resize_crop),
        cmocka_unit_test(test_seg_train_pipeline),     cmocka_unit_test(test_eval_and_ssd_pipelines),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("augment", tests, setup, teardown);
}
