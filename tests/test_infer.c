/* infer: whole / sliding-window inference and TTA against mmseg's algorithms run in PyTorch
 * (tests/fixtures/gen_metrics.py, model = conv1x1(avg_pool2d(x, 2))), exactness of sliding vs whole
 * for a translation-equivariant model, window geometry and count maps, flip TTA, the work context,
 * errors; predict writing label / overlay PNGs; nnU-Net Gaussian window weighting (reference values
 * from tests/fixtures/gen_nnunet.py), sigmoid probabilities and probabilities without labels.
 * (Evaluation over a dataset is in test_metrics.c.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/image_io.h"
#include "segc/infer.h"
#include "segc/model.h"
#include "segc/ops.h"
#include "segc/predict.h"
#include "segc/model.h"

static segc_st_file *fx;

/* The test model: logits = conv1x1(x) (translation-equivariant) or conv1x1(avg_pool2d(x, 2)) (pool);
 * records how often it ran and the largest crop it saw. */
typedef struct test_model {
    segc_tensor *w, *b;
    bool pool;
    int calls, max_h, max_w;
} test_model;

static segc_tensor *test_model_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    test_model *m = model;
    m->calls++;
    if (x->shape[2] > m->max_h) m->max_h = (int)x->shape[2];
    if (x->shape[3] > m->max_w) m->max_w = (int)x->shape[3];
    segc_tensor *h = m->pool ? segc_avg_pool2d(ctx, x, 2, 2, 2, 2, 0, 0, false, true) : x;
    segc_tensor *w = x->dtype == SEGC_BF16 ? segc_cast(ctx, m->w, SEGC_BF16) : m->w;
    return segc_conv2d(ctx, h, w, m->b, NULL);
}

static int setup(void **state) {
    fx = fx_open("metrics.safetensors");
    return 0;
}
static int teardown(void **state) {
    segc_st_close(fx);
    return 0;
}

static void load_opts(const char *cas, segc_infer_opts *o, int *out_h, int *out_w, segc_ctx *ctx) {
    segc_infer_opts_default(o);
    char mode[16];
    fx_param_str(fx, cas, "mode", "whole", mode, sizeof mode);
    o->mode = strcmp(mode, "slide") ? SEGC_INFER_WHOLE : SEGC_INFER_SLIDE;
    long crop[2], stride[2], out[2];
    fx_param_ints(fx, cas, "crop", crop, 2);
    fx_param_ints(fx, cas, "stride", stride, 2);
    fx_param_ints(fx, cas, "out", out, 2);
    o->crop_h = (int)crop[0], o->crop_w = (int)crop[1];
    o->stride_h = (int)stride[0], o->stride_w = (int)stride[1];
    o->flip = fx_param_int(fx, cas, "flip", 0) != 0;
    o->threshold = (float)fx_param_double(fx, cas, "threshold", 0.3);
    segc_tensor *r = fx_tensor(ctx, fx, cas, "ratios");
    if (r) {
        o->n_ratios = (int)segc_numel(r);
        for (int i = 0; i < o->n_ratios; i++) o->ratios[i] = segc_f32(r)[i];
    }
    *out_h = (int)out[0], *out_w = (int)out[1];
}

/* labels may differ from the reference only where the reference itself is nearly tied */
static void check_labels(const char *cas, const segc_tensor *got, const segc_tensor *want, const segc_tensor *probs,
                         float threshold, double margin) {
    assert_true(segc_same_shape(got, want));
    const int64_t n = want->shape[0], p = want->shape[1] * want->shape[2], k = probs->shape[1];
    const uint8_t *g = got->data, *w = want->data;
    const float *pr = segc_f32(probs);
    int64_t mismatches = 0;
    for (int64_t img = 0; img < n; img++) {
        for (int64_t q = 0; q < p; q++) {
            if (g[img * p + q] == w[img * p + q]) continue;
            double gap;
            if (k == 1) {
                gap = fabs(pr[img * p + q] - threshold);
            } else {
                double b1 = -1, b2 = -1;
                for (int64_t c = 0; c < k; c++) {
                    double v = pr[(img * k + c) * p + q];
                    if (v > b1) b2 = b1, b1 = v;
                    else if (v > b2) b2 = v;
                }
                gap = b1 - b2;
            }
            if (gap > margin)
                fail_msg("%s: label at image %lld pixel %lld is %d, expected %d (reference margin %.3g)", cas,
                         (long long)img, (long long)q, g[img * p + q], w[img * p + q], gap);
            mismatches++;
        }
    }
    if (mismatches) printf("%s: %lld near-tie label differences\n", cas, (long long)mismatches);
}

static void run_case(const char *cas, segc_ctx *ctx, segc_ctx *work, segc_tensor **labels, segc_tensor **probs,
                     segc_tensor **logits) {
    test_model m = {.w = fx_tensor(ctx, fx, cas, "weight"), .b = fx_tensor(ctx, fx, cas, "bias"), .pool = true};
    segc_tensor *images = fx_tensor(ctx, fx, cas, "images");
    segc_infer_opts o;
    int oh, ow;
    load_opts(cas, &o, &oh, &ow, ctx);
    *logits = segc_infer_logits(ctx, work, test_model_forward, &m, images, &o);
    assert_non_null(*logits);
    *labels = segc_infer(ctx, work, test_model_forward, &m, images, oh, ow, &o, probs);
    if (!*labels) fail_msg("%s: %s", cas, segc_last_error(ctx));
    assert_non_null(*probs);
}

static void check_fixture_case(const char *cas) {
    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    const bool bf16 = fx_param_int(fx, cas, "bf16", 0) != 0;
    const double tol = bf16 ? 2e-2 : 1e-5;
    segc_tensor *labels, *probs, *logits;
    run_case(cas, ctx, work, &labels, &probs, &logits);
    /* logits: norm-wise (conv and resize rounding on values that nearly cancel); probabilities and
     * labels element-wise */
    segc_tensor *want_logits = fx_tensor(ctx, fx, cas, "logits");
    assert_true(segc_same_shape(logits, want_logits));
    assert_true(fx_close_norm(cas, segc_f32(logits), segc_f32(want_logits), segc_numel(logits), 1e-6, tol));
    segc_tensor *want_probs = fx_tensor(ctx, fx, cas, "probs");
    assert_true(fx_close(cas, probs, want_probs, tol));
    check_labels(cas, labels, fx_tensor(ctx, fx, cas, "labels"), want_probs,
                 (float)fx_param_double(fx, cas, "threshold", 0.3), bf16 ? 0.1 : 1e-4);
    /* mmseg's count map (slide cases) from the window list */
    segc_tensor *count = fx_tensor(ctx, fx, cas, "count");
    if (count) {
        segc_infer_opts o;
        int oh, ow;
        load_opts(cas, &o, &oh, &ow, ctx);
        const int h = (int)count->shape[0], w = (int)count->shape[1];
        int y1[64], y2[64], x1[64], x2[64];
        int nw = segc_infer_slide_windows(h, w, o.crop_h, o.crop_w, o.stride_h, o.stride_w, y1, y2, x1, x2, 64);
        assert_true(nw >= 1 && nw <= 64);
        float *cnt = calloc((size_t)h * w, sizeof *cnt);
        for (int i = 0; i < nw; i++)
            for (int y = y1[i]; y < y2[i]; y++)
                for (int x = x1[i]; x < x2[i]; x++) cnt[y * w + x] += 1;
        assert_memory_equal(cnt, count->data, (size_t)h * w * sizeof(float));
        free(cnt);
    }
    /* one context for everything gives bitwise the same results */
    segc_ctx *solo = segc_ctx_new(0);
    segc_tensor *l2, *p2, *g2;
    run_case(cas, solo, NULL, &l2, &p2, &g2);
    assert_memory_equal(l2->data, labels->data, segc_nbytes(labels));
    assert_memory_equal(p2->data, probs->data, segc_nbytes(probs));
    assert_memory_equal(g2->data, logits->data, segc_nbytes(logits));
    segc_ctx_free(solo);
    segc_ctx_free(work);
    segc_ctx_free(ctx);
}

static void test_whole(void **state) {
    check_fixture_case("i_whole");
    check_fixture_case("i_whole_out");
}
static void test_slide(void **state) {
    check_fixture_case("i_slide");
    check_fixture_case("i_slide_small");
}
/* a crop larger than the image is clamped to it (mmseg): one window, the whole image */
static void test_slide_crop_larger(void **state) { check_fixture_case("i_slide_big"); }
static void test_flip(void **state) { check_fixture_case("i_flip"); }
static void test_tta_multiscale(void **state) {
    check_fixture_case("i_tta_ms");
    check_fixture_case("i_tta_whole");
}
static void test_binary(void **state) {
    check_fixture_case("i_binary");
    check_fixture_case("i_binary_tta");
}
static void test_bf16(void **state) { check_fixture_case("i_bf16"); }

/* A 1x1 conv is translation-equivariant: sliding windows reproduce the whole-image logits exactly
 * wherever the count is a power of two (the division is then exact). */
static void test_slide_equals_whole(void **state) {
    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    test_model m = {.w = t_randn(ctx, 4, SHAPE(4, 3, 1, 1), 1.f, false), .b = t_randn(ctx, 1, SHAPE(4), 1.f, false)};
    const int geo[][6] = {/* h, w, crop_h, crop_w, stride_h, stride_w: counts 1, 2, 4 only */
                          {16, 16, 8, 8, 4, 4}, {16, 16, 8, 8, 6, 6}, {16, 21, 8, 16, 4, 5},
                          {1, 1, 4, 4, 2, 2},   {5, 9, 5, 9, 3, 3},   {3, 12, 2, 4, 2, 4}};
    for (size_t g = 0; g < sizeof geo / sizeof geo[0]; g++) {
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, geo[g][0], geo[g][1]), 1.f, false);
        segc_infer_opts whole, slide;
        segc_infer_opts_default(&whole);
        slide = whole;
        slide.mode = SEGC_INFER_SLIDE;
        slide.crop_h = geo[g][2], slide.crop_w = geo[g][3], slide.stride_h = geo[g][4], slide.stride_w = geo[g][5];
        segc_tensor *a = segc_infer_logits(ctx, work, test_model_forward, &m, x, &whole);
        m.calls = m.max_h = m.max_w = 0;
        segc_tensor *b = segc_infer_logits(ctx, work, test_model_forward, &m, x, &slide);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(m.calls, segc_infer_slide_windows(geo[g][0], geo[g][1], slide.crop_h, slide.crop_w,
                                                           slide.stride_h, slide.stride_w, NULL, NULL, NULL, NULL, 0));
        /* every crop the model saw is the window size clamped to the image */
        assert_int_equal(m.max_h, geo[g][2] < geo[g][0] ? geo[g][2] : geo[g][0]);
        assert_int_equal(m.max_w, geo[g][3] < geo[g][1] ? geo[g][3] : geo[g][1]);
        assert_memory_equal(a->data, b->data, segc_nbytes(a));
        segc_tensor *la = segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &whole, NULL);
        segc_tensor *lb = segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &slide, NULL);
        assert_memory_equal(la->data, lb->data, segc_nbytes(la));
    }
    segc_ctx_free(work);
    segc_ctx_free(ctx);
}

static void test_slide_windows(void **state) {
    int y1[8], y2[8], x1[8], x2[8];
    /* 10 x 7, crop 4 x 5, stride 3: rows [0,4) [3,7) [6,10); columns [0,5) and the last one pulled back to [2,7) */
    assert_int_equal(segc_infer_slide_windows(10, 7, 4, 5, 3, 3, y1, y2, x1, x2, 8), 6);
    const int ey1[6] = {0, 0, 3, 3, 6, 6}, ey2[6] = {4, 4, 7, 7, 10, 10}, ex1[6] = {0, 2, 0, 2, 0, 2},
              ex2[6] = {5, 7, 5, 7, 5, 7};
    assert_memory_equal(y1, ey1, sizeof ey1);
    assert_memory_equal(y2, ey2, sizeof ey2);
    assert_memory_equal(x1, ex1, sizeof ex1);
    assert_memory_equal(x2, ex2, sizeof ex2);
    /* crop larger than the image: one window, clamped */
    assert_int_equal(segc_infer_slide_windows(3, 2, 8, 8, 4, 4, y1, y2, x1, x2, 8), 1);
    assert_true(y1[0] == 0 && y2[0] == 3 && x1[0] == 0 && x2[0] == 2);
    /* count only; bad arguments give 0 */
    assert_int_equal(segc_infer_slide_windows(512, 2048, 512, 512, 341, 341, NULL, NULL, NULL, NULL, 0), 6);
    assert_int_equal(segc_infer_slide_windows(10, 10, 4, 4, 0, 3, y1, y2, x1, x2, 8), 0);
    assert_int_equal(segc_infer_slide_windows(0, 10, 4, 4, 2, 3, y1, y2, x1, x2, 8), 0);
    /* random geometries: windows inside the image, of the clamped crop size, covering every pixel */
    segc_rng r;
    segc_rng_init(&r, 3);
    for (int it = 0; it < 200; it++) {
        int h = 1 + (int)(segc_rng_u32(&r) % 40), w = 1 + (int)(segc_rng_u32(&r) % 40);
        int ch = 1 + (int)(segc_rng_u32(&r) % 20), cw = 1 + (int)(segc_rng_u32(&r) % 20);
        int sh = 1 + (int)(segc_rng_u32(&r) % ch), sw = 1 + (int)(segc_rng_u32(&r) % cw);
        int n = segc_infer_slide_windows(h, w, ch, cw, sh, sw, NULL, NULL, NULL, NULL, 0);
        int *v = malloc(4 * (size_t)n * sizeof *v);
        assert_int_equal(segc_infer_slide_windows(h, w, ch, cw, sh, sw, v, v + n, v + 2 * n, v + 3 * n, n), n);
        unsigned char *cov = calloc((size_t)h * w, 1);
        for (int i = 0; i < n; i++) {
            assert_true(v[i] >= 0 && v[n + i] <= h && v[2 * n + i] >= 0 && v[3 * n + i] <= w);
            assert_int_equal(v[n + i] - v[i], ch < h ? ch : h);
            assert_int_equal(v[3 * n + i] - v[2 * n + i], cw < w ? cw : w);
            for (int y = v[i]; y < v[n + i]; y++)
                for (int x = v[2 * n + i]; x < v[3 * n + i]; x++) cov[y * w + x] = 1;
        }
        for (int q = 0; q < h * w; q++) assert_int_equal(cov[q], 1);
        free(cov);
        free(v);
    }
}

static void test_ratio_size(void **state) {
    /* expected values from mmcv's _scale_size + rescale_size (computed in Python) */
    const int cases[][4] = {{512, 683, 384, 512}, {512, 683, 896, 1195}, {13, 17, 20, 26},
                            {13, 17, 10, 13},     {1024, 2048, 512, 1024}, {7, 3, 9, 4}};
    const double ratios[] = {0.75, 1.75, 1.5, 0.75, 0.5, 1.25};
    for (int i = 0; i < 6; i++) {
        int nh, nw;
        segc_infer_ratio_size(cases[i][0], cases[i][1], ratios[i], &nh, &nw);
        assert_int_equal(nh, cases[i][2]);
        assert_int_equal(nw, cases[i][3]);
    }
}

/* Flip TTA on a pointwise model: averaging the flipped-back pass with the plain one must give the
 * plain probabilities (a missing or wrong flip-back would mirror half of them) on an asymmetric image. */
static void test_flip_pointwise(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    test_model m = {.w = t_randn(ctx, 4, SHAPE(5, 3, 1, 1), 1.f, false), .b = t_randn(ctx, 1, SHAPE(5), 1.f, false)};
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 6, 9), 1.f, false);
    for (int i = 0; i < 6 * 9; i++) segc_f32(x)[i] += (float)(i % 9) * 0.7f;   /* left-right ramp */
    segc_infer_opts o;
    segc_infer_opts_default(&o);
    segc_tensor *p0, *p1;
    segc_tensor *l0 = segc_infer(ctx, NULL, test_model_forward, &m, x, 0, 0, &o, &p0);
    o.flip = true;
    segc_tensor *l1 = segc_infer(ctx, NULL, test_model_forward, &m, x, 0, 0, &o, &p1);
    assert_non_null(l0);
    assert_non_null(l1);
    assert_true(fx_close_f32("flip probs", segc_f32(p1), p0, 1e-6));
    assert_memory_equal(l0->data, l1->data, segc_nbytes(l0));
    /* the argmax over logits and over probabilities agree here */
    int64_t p = 6 * 9;
    for (int64_t q = 0; q < p; q++) {
        int best = 0;
        for (int c = 1; c < 5; c++)
            if (segc_f32(p0)[c * p + q] > segc_f32(p0)[best * p + q]) best = c;
        assert_int_equal(((uint8_t *)l0->data)[q], best);
    }
    segc_ctx_free(ctx);
}

/* steady state: the work context stops growing; repeated runs are bitwise identical */
static void test_work_steady_state(void **state) {
    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    test_model m = {.w = t_randn(ctx, 4, SHAPE(3, 3, 1, 1), 1.f, false), .b = t_randn(ctx, 1, SHAPE(3), 1.f, false),
                    .pool = true};
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 40, 52), 1.f, false);
    segc_infer_opts o;
    segc_infer_opts_default(&o);
    o.mode = SEGC_INFER_SLIDE;
    o.crop_h = o.crop_w = 24;
    o.stride_h = o.stride_w = 16;
    o.flip = true;
    o.n_ratios = 2;
    o.ratios[0] = 1.0f;
    o.ratios[1] = 1.25f;
    segc_tensor *p1, *p2;
    segc_tensor *l1 = segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &o, &p1);
    segc_tensor *l2 = segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &o, &p2);
    size_t hw = work->arena.high_water;
    assert_int_equal(work->arena.n_chunks, 1);
    segc_tensor *l3 = segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &o, NULL);
    assert_int_equal(work->arena.n_chunks, 1);
    assert_int_equal(work->arena.high_water, hw);
    assert_memory_equal(l1->data, l2->data, segc_nbytes(l1));
    assert_memory_equal(l1->data, l3->data, segc_nbytes(l1));
    assert_memory_equal(p1->data, p2->data, segc_nbytes(p1));
    segc_ctx_free(work);
    segc_ctx_free(ctx);
}

static void test_image_tensor(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    uint8_t px[2 * 3 * 3];
    for (int i = 0; i < 18; i++) px[i] = (uint8_t)(i * 13);
    segc_image im = {.h = 2, .w = 3, .c = 3, .dtype = SEGC_U8, .data = px};
    const float mean[3] = SEGC_IMAGENET_MEAN, std[3] = SEGC_IMAGENET_STD;
    segc_tensor *t = segc_infer_image_tensor(ctx, &im, mean, std, SEGC_F32);
    assert_non_null(t);
    assert_true(t->ndim == 4 && t->shape[0] == 1 && t->shape[1] == 3 && t->shape[2] == 2 && t->shape[3] == 3);
    for (int c = 0; c < 3; c++)
        for (int q = 0; q < 6; q++) {
            float want = ((float)px[q * 3 + c] - mean[c]) / std[c];
            assert_true(fabsf(segc_f32(t)[c * 6 + q] - want) < 1e-6f);
        }
    segc_tensor *b = segc_infer_image_tensor(ctx, &im, mean, std, SEGC_BF16);
    assert_int_equal(b->dtype, SEGC_BF16);
    for (int i = 0; i < 18; i++) assert_int_equal(segc_bf16p(b)[i], segc_f32_to_bf16(segc_f32(t)[i]));
    /* errors */
    segc_image bad = im;
    bad.c = 4;
    assert_null(segc_infer_image_tensor(ctx, &bad, mean, std, SEGC_F32));
    assert_non_null(strstr(segc_last_error(ctx), "infer_image_tensor"));
    segc_clear_error(ctx);
    assert_null(segc_infer_image_tensor(ctx, &im, mean, std, SEGC_U8));
    assert_non_null(strstr(segc_last_error(ctx), "infer_image_tensor"));
    segc_ctx_free(ctx);
}

static segc_tensor *failing_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    segc_set_error(ctx, "model: broken layer");
    return NULL;
}
static const uint8_t pal_dummy[3] = {1, 2, 3};
static segc_tensor *wrong_batch_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    return segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(x->shape[0] + 1, 2, 3, 3));
}
static segc_tensor *many_classes_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    return segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(x->shape[0], 300, 2, 2));
}

static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    test_model m = {.w = t_randn(ctx, 4, SHAPE(2, 3, 1, 1), 1.f, false), .b = NULL};
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 8, 8), 1.f, false);
    segc_infer_opts o;
    segc_infer_opts_default(&o);
    char err[256];
    /* stride 0 */
    o.mode = SEGC_INFER_SLIDE;
    o.crop_h = o.crop_w = 4;
    o.stride_h = 0, o.stride_w = 2;
    assert_false(segc_infer_opts_validate(&o, err, sizeof err));
    assert_non_null(strstr(err, "stride"));
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &o, NULL), "infer: slide mode needs");
    EXPECT_ERR(ctx, segc_infer_logits(ctx, work, test_model_forward, &m, x, &o), "stride");
    segc_infer_opts_default(&o);
    /* bad TTA ratios */
    o.n_ratios = 1;
    o.ratios[0] = 0.f;
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &o, NULL), "ratio");
    o.ratios[0] = 0.01f;   /* 8x8 -> 0x0 */
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &o, NULL), "infer: TTA ratio");
    o.n_ratios = SEGC_INFER_MAX_RATIOS + 1;
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, &o, NULL), "n_ratios");
    segc_infer_opts_default(&o);
    /* images of the wrong rank / dtype, bad output size, missing options */
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, t_randn(ctx, 3, SHAPE(3, 8, 8), 1.f, false), 0,
                                 0, &o, NULL),
                 "infer: images must be");
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, segc_tensor_zeros(ctx, SEGC_U8, 4, SHAPE(1, 3, 2, 2)),
                                 0, 0, &o, NULL),
                 "infer");
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, x, -1, 4, &o, NULL), "infer: output size");
    EXPECT_ERR(ctx, segc_infer(ctx, work, test_model_forward, &m, x, 0, 0, NULL, NULL), "infer: options");
    /* forward failures: the model's own message comes through, work is clean afterwards */
    EXPECT_ERR(ctx, segc_infer(ctx, work, failing_forward, NULL, x, 0, 0, &o, NULL), "infer: forward: model: broken");
    assert_false(work->has_err);
    EXPECT_ERR(ctx, segc_infer(ctx, NULL, failing_forward, NULL, x, 0, 0, &o, NULL), "model: broken layer");
    EXPECT_ERR(ctx, segc_infer(ctx, work, wrong_batch_forward, NULL, x, 0, 0, &o, NULL), "infer: forward on images");
    EXPECT_ERR(ctx, segc_infer(ctx, work, many_classes_forward, NULL, x, 0, 0, &o, NULL), "300 classes");
    /* the logits themselves have no class limit */
    assert_non_null(segc_infer_logits(ctx, work, many_classes_forward, NULL, x, &o));
    assert_null(segc_infer(ctx, work, test_model_forward, &m, NULL, 0, 0, &o, NULL));
    assert_false(ctx->has_err);   /* NULL input: no message, like ops */
    /* flags restored after success and failure */
    assert_true(ctx->grad_enabled && ctx->training && work->grad_enabled && work->training);
    segc_ctx_free(work);
    segc_ctx_free(ctx);
}


/* The real model through the registry: logits [N, K, H/4, W/4] resized to the input, slide + TTA run. */
static void test_segformer_adapter(void **state) {
    char err[256];
    segc_model_spec spec = {"segformer", "b0", 5, 3, NULL, 0, NULL};
    segc_model *net = segc_model_new(&spec, err, sizeof err);
    if (!net) fail_msg("%s", err);
    segc_model_init(net, 11);
    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 37, 45), 1.f, false);
    segc_infer_opts o;
    segc_infer_opts_default(&o);
    segc_tensor *lg = segc_infer_logits(ctx, work, segc_model_logits_fn, net, x, &o);
    if (!lg) fail_msg("%s", segc_last_error(ctx));
    assert_true(lg->shape[0] == 1 && lg->shape[1] == 5 && lg->shape[2] == 37 && lg->shape[3] == 45);
    /* the same as forward + bilinear resize by hand */
    ctx->training = false;
    bool prev = segc_set_grad_enabled(ctx, false);
    segc_model_out out;
    assert_true(segc_model_forward(ctx, net, x, &out));
    segc_tensor *y = out.maps[0];
    assert_true(y->shape[2] == 10 && y->shape[3] == 12);
    segc_tensor *want = segc_resize_bilinear(ctx, y, 37, 45, false);
    segc_set_grad_enabled(ctx, prev);
    ctx->training = true;
    assert_memory_equal(lg->data, want->data, segc_nbytes(want));
    o.mode = SEGC_INFER_SLIDE;
    o.crop_h = o.crop_w = 48;   /* stage 1 reduces keys by 8 at H/4: crops of at least 32 */
    o.stride_h = o.stride_w = 32;
    o.flip = true;
    o.n_ratios = 2;
    o.ratios[0] = 0.75f, o.ratios[1] = 1.0f;
    segc_tensor *probs, *x2 = t_randn(ctx, 4, SHAPE(1, 3, 64, 72), 1.f, false);
    segc_tensor *lab = segc_infer(ctx, work, segc_model_logits_fn, net, x2, 50, 60, &o, &probs);
    if (!lab) fail_msg("%s", segc_last_error(ctx));
    assert_true(lab->shape[0] == 1 && lab->shape[1] == 50 && lab->shape[2] == 60);
    for (int64_t q = 0; q < 50 * 60; q++) {
        assert_true(((uint8_t *)lab->data)[q] < 5);
        double s = 0;
        for (int c = 0; c < 5; c++) s += segc_f32(probs)[c * 3000 + q];
        assert_true(fabs(s - 1) < 1e-5);
    }
    segc_ctx_free(work);
    segc_ctx_free(ctx);
    segc_model_free(net);
}

/* ---- predict: label and overlay PNGs ---- */

/* identity 1x1 conv: the class of a pixel is its largest normalised channel */
static test_model identity_model(segc_ctx *ctx) {
    test_model m = {.w = segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(3, 3, 1, 1)), .b = NULL};
    for (int c = 0; c < 3; c++) segc_f32(m.w)[c * 3 + c] = 10.f;
    return m;
}

static int expected_class(const uint8_t *rgb) {
    const float mean[3] = SEGC_IMAGENET_MEAN, std[3] = SEGC_IMAGENET_STD;
    int best = 0;
    for (int c = 1; c < 3; c++)
        if ((rgb[c] - mean[c]) / std[c] > (rgb[best] - mean[best]) / std[best]) best = c;
    return best;
}

static void write_test_image(const char *path, int h, int w, uint32_t seed) {
    segc_image im;
    char err[256];
    assert_true(segc_image_alloc(&im, h, w, 3, SEGC_U8));
    segc_rng r;
    segc_rng_init(&r, seed);
    for (int i = 0; i < h * w * 3; i++) ((uint8_t *)im.data)[i] = (uint8_t)(segc_rng_u32(&r) % 256);
    assert_true(segc_png_write(path, &im, NULL, 0, err, sizeof err));
    segc_image_free(&im);
}

static void check_prediction(const char *dir, const char *stem, const char *input, bool overlay) {
    char path[1024], err[256];
    segc_image img, lab, ov;
    assert_true(segc_image_read(input, SEGC_READ_RGB, &img, err, sizeof err));
    snprintf(path, sizeof path, "%s/%s.png", dir, stem);
    if (!segc_image_read(path, SEGC_READ_LABEL, &lab, err, sizeof err)) fail_msg("%s", err);
    assert_true(lab.c == 1 && lab.dtype == SEGC_U8 && lab.h == img.h && lab.w == img.w);
    uint8_t pal[256 * 3];
    segc_predict_default_palette(pal, 256);
    const uint8_t *px = img.data, *ids = lab.data;
    for (int q = 0; q < img.h * img.w; q++) assert_int_equal(ids[q], expected_class(px + 3 * q));
    snprintf(path, sizeof path, "%s/%s_overlay.png", dir, stem);
    if (!overlay) {
        assert_false(segc_image_read(path, SEGC_READ_RGB, &ov, err, sizeof err));
    } else {
        assert_true(segc_image_read(path, SEGC_READ_RGB, &ov, err, sizeof err));
        assert_true(ov.h == img.h && ov.w == img.w && ov.c == 3);
        for (int q = 0; q < img.h * img.w; q++)
            for (int c = 0; c < 3; c++)   /* 0.5 blend, rounded half up */
                assert_int_equal(((uint8_t *)ov.data)[3 * q + c], (px[3 * q + c] + pal[3 * ids[q] + c] + 1) >> 1);
        segc_image_free(&ov);
    }
    segc_image_free(&img);
    segc_image_free(&lab);
}

static void test_predict_files(void **state) {
    char tmp[] = "/tmp/segc_predict_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char cmd[512], in_dir[128], file_c[128], out_dir[160], p[256];
    snprintf(in_dir, sizeof in_dir, "%s/in", tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && echo x > %s/notes.txt", in_dir, in_dir);
    assert_int_equal(system(cmd), 0);
    snprintf(p, sizeof p, "%s/b.png", in_dir);
    write_test_image(p, 5, 7, 1);
    snprintf(p, sizeof p, "%s/a.PNG", in_dir);
    write_test_image(p, 6, 4, 2);
    snprintf(file_c, sizeof file_c, "%s/c.png", tmp);
    write_test_image(file_c, 1, 1, 3);

    /* listing: folder entries sorted, non-images skipped, input order kept */
    const char *inputs[2] = {in_dir, file_c};
    char **paths, err[512];
    int n;
    assert_true(segc_predict_list_inputs(inputs, 2, &paths, &n, err, sizeof err));
    assert_int_equal(n, 3);
    assert_non_null(strstr(paths[0], "in/a.PNG"));
    assert_non_null(strstr(paths[1], "in/b.png"));
    assert_string_equal(paths[2], file_c);
    segc_predict_free_list(paths, n);

    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    segc_ctx *mctx = segc_ctx_new(0);   /* holds the weights: ctx is reset per image */
    test_model m = identity_model(mctx);
    segc_predict_opts o;
    segc_predict_opts_default(&o);
    o.quiet = true;
    snprintf(out_dir, sizeof out_dir, "%s/out/nested", tmp);
    int written = 0;
    if (!segc_predict_paths(ctx, work, test_model_forward, &m, inputs, 2, out_dir, &o, &written, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(written, 3);
    snprintf(p, sizeof p, "%s/a.PNG", in_dir);
    check_prediction(out_dir, "a", p, true);
    snprintf(p, sizeof p, "%s/b.png", in_dir);
    check_prediction(out_dir, "b", p, true);
    check_prediction(out_dir, "c", file_c, true);

    /* with a test pipeline (keep-ratio resize x2, normalise) and flip TTA the maps still come back at the
     * original size; the pointwise model keeps the same ids wherever the upsampled image keeps the winner */
    segc_pipeline pl;
    segc_pipeline_seg_eval(&pl, 14, 10);
    o.pipeline = &pl;
    o.infer.flip = true;
    o.write_overlay = false;
    snprintf(out_dir, sizeof out_dir, "%s/out2", tmp);
    const char *one[1] = {file_c};
    assert_true(segc_predict_paths(ctx, work, test_model_forward, &m, one, 1, out_dir, &o, &written, err, sizeof err));
    assert_int_equal(written, 1);
    check_prediction(out_dir, "c", file_c, false);   /* a 1x1 image resizes to a constant one */

    /* errors: a stem clash, a missing input, a bad palette, an unreadable image */
    const char *clash[2] = {in_dir, p};
    assert_false(segc_predict_paths(ctx, work, test_model_forward, &m, clash, 2, out_dir, &o, &written, err, sizeof err));
    assert_non_null(strstr(err, "share the name b"));
    const char *missing[1] = {"/nonexistent/x.png"};
    assert_false(segc_predict_list_inputs(missing, 1, &paths, &n, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/x.png"));
    o.palette = pal_dummy;
    o.n_colors = 300;
    assert_false(segc_predict_paths(ctx, work, test_model_forward, &m, one, 1, out_dir, &o, &written, err, sizeof err));
    assert_non_null(strstr(err, "palette"));
    o.palette = NULL;
    snprintf(p, sizeof p, "%s/in/notes.txt", tmp);
    const char *txt[1] = {p};
    assert_false(segc_predict_paths(ctx, work, test_model_forward, &m, txt, 1, out_dir, &o, &written, err, sizeof err));
    assert_non_null(strstr(err, "notes.txt"));
    assert_int_equal(written, 0);
    o.channels = 2;
    assert_false(segc_predict_paths(ctx, work, test_model_forward, &m, one, 1, out_dir, &o, &written, err, sizeof err));
    assert_non_null(strstr(err, "channels"));
    o.channels = 3;
    /* a model failure names the image and leaves ctx usable */
    assert_false(segc_predict_paths(ctx, work, failing_forward, NULL, one, 1, out_dir, &o, &written, err, sizeof err));
    assert_non_null(strstr(err, "c.png"));
    assert_non_null(strstr(err, "broken layer"));
    assert_false(ctx->has_err);

    segc_ctx_free(mctx);
    segc_ctx_free(work);
    segc_ctx_free(ctx);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    assert_int_equal(system(cmd), 0);
}

static void test_predict_write_and_palette(void **state) {
    uint8_t pal[9 * 3];
    segc_predict_default_palette(pal, 9);
    const uint8_t want[9][3] = {{0, 0, 0},   {128, 0, 0},   {0, 128, 0}, {128, 128, 0}, {0, 0, 128},
                                {128, 0, 128}, {0, 128, 128}, {128, 128, 128}, {64, 0, 0}};
    assert_memory_equal(pal, want, sizeof want);
    char tmp[] = "/tmp/segc_pw_XXXXXX", err[256], path[256];
    assert_non_null(mkdtemp(tmp));
    uint8_t ids[6] = {0, 1, 2, 255, 8, 3};
    segc_image lab = {.h = 2, .w = 3, .c = 1, .dtype = SEGC_U8, .data = ids};
    /* label only (no image) */
    assert_true(segc_predict_write(tmp, "x", &lab, NULL, pal, 9, 0.5f, err, sizeof err));
    segc_image back;
    snprintf(path, sizeof path, "%s/x.png", tmp);
    assert_true(segc_image_read(path, SEGC_READ_LABEL, &back, err, sizeof err));
    assert_memory_equal(back.data, ids, 6);
    segc_image_free(&back);
    snprintf(path, sizeof path, "%s/x_overlay.png", tmp);
    assert_false(segc_image_read(path, SEGC_READ_RGB, &back, err, sizeof err));
    /* overlay: id 255 has no colour and keeps the image */
    uint8_t gray[6] = {10, 20, 30, 40, 50, 60};
    segc_image img = {.h = 2, .w = 3, .c = 1, .dtype = SEGC_U8, .data = gray};
    assert_true(segc_predict_write(tmp, "x", &lab, &img, pal, 9, 0.5f, err, sizeof err));
    assert_true(segc_image_read(path, SEGC_READ_RGB, &back, err, sizeof err));
    for (int q = 0; q < 6; q++)
        for (int c = 0; c < 3; c++) {
            int v = ids[q] < 9 ? (gray[q] + pal[3 * ids[q] + c] + 1) >> 1 : gray[q];
            assert_int_equal(((uint8_t *)back.data)[3 * q + c], v);
        }
    segc_image_free(&back);
    /* errors */
    segc_image bad = lab;
    bad.c = 3;
    assert_false(segc_predict_write(tmp, "y", &bad, NULL, pal, 9, 0.5f, err, sizeof err));
    assert_non_null(strstr(err, "predict"));
    segc_image small = {.h = 1, .w = 3, .c = 1, .dtype = SEGC_U8, .data = gray};
    assert_false(segc_predict_write(tmp, "y", &lab, &small, pal, 9, 0.5f, err, sizeof err));
    assert_false(segc_predict_write("/nonexistent-dir", "y", &lab, NULL, pal, 9, 0.5f, err, sizeof err));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    assert_int_equal(system(cmd), 0);
}

/* ---- nnU-Net Gaussian slide weighting, sigmoid probabilities, probs only ---- */

/* per-class constant logits 0.5 * (c + 1) at the input size */
static segc_tensor *constant_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    segc_tensor *y = segc_tensor_new(ctx, SEGC_F32, 4, SHAPE(x->shape[0], 3, x->shape[2], x->shape[3]));
    int64_t plane = x->shape[2] * x->shape[3];
    for (int64_t i = 0; i < segc_numel(y); i++) segc_f32(y)[i] = 0.5f * (float)((i / plane) % 3 + 1);
    return y;
}

static void test_gaussian_map(void **state) {
    /* tests/fixtures/gen_nnunet.py: nnU-Net compute_gaussian(tile, 1/8) */
    static const float want65[30] = {
        2.00473232e-06f, 9.32711264e-05f, 0.000335462624f, 9.32711264e-05f, 2.00473232e-06f, 0.000170708081f,
        0.00794227514f,  0.0285654999f,   0.00794227514f,  0.000170708081f, 0.00245681638f,  0.11430455f,
        0.411112279f,    0.11430455f,     0.00245681638f,  0.00597602269f,  0.27803731f,     1.f,
        0.27803731f,     0.00597602269f,  0.00245681638f,  0.11430455f,     0.411112279f,    0.11430455f,
        0.00245681638f,  0.000170708081f, 0.00794227514f,  0.0285654999f,   0.00794227514f,  0.000170708081f};
    static const float want49[36] = {
        6.032177e-07f,  9.58265809e-06f, 6.90798915e-05f, 0.000225980533f, 0.000335462624f, 0.000225980533f,
        6.90798915e-05f, 9.58265809e-06f, 6.032177e-07f,  0.000243355389f, 0.00386592024f,  0.0278688166f,
        0.0911670476f,  0.135335281f,    0.0911670476f,   0.0278688166f,   0.00386592024f,  0.000243355389f,
        0.00179816666f, 0.0285654999f,   0.205924243f,    0.673638463f,    1.f,             0.673638463f,
        0.205924243f,   0.0285654999f,   0.00179816666f,  0.000243355389f, 0.00386592024f,  0.0278688166f,
        0.0911670476f,  0.135335281f,    0.0911670476f,   0.0278688166f,   0.00386592024f,  0.000243355389f};
    float got[36];
    segc_infer_gaussian_map(6, 5, got);
    for (int i = 0; i < 30; i++) assert_true(fabsf(got[i] - want65[i]) <= 1e-6f * want65[i] + 1e-12f);
    segc_infer_gaussian_map(4, 9, got);
    for (int i = 0; i < 36; i++) assert_true(fabsf(got[i] - want49[i]) <= 1e-6f * want49[i] + 1e-12f);
}

static void test_gaussian_slide(void **state) {
    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    segc_infer_opts o;
    segc_infer_opts_default(&o);
    o.mode = SEGC_INFER_SLIDE;
    o.gaussian = true;
    o.crop_h = o.crop_w = 8;
    o.stride_h = o.stride_w = 4;   /* nnU-Net's overlap 0.5 */
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, 19, 13), 1.f, false);
    /* constant logits: any weighted average of them is the constant */
    segc_tensor *y = segc_infer_logits(ctx, work, constant_forward, NULL, x, &o);
    assert_non_null(y);
    for (int64_t i = 0; i < segc_numel(y); i++)
        assert_true(fabsf(segc_f32(y)[i] - 0.5f * (float)((i / (19 * 13)) % 3 + 1)) < 1e-6f);
    /* a pointwise model: every window agrees, so weighting changes nothing */
    test_model m = {.w = t_randn(ctx, 4, SHAPE(4, 3, 1, 1), 1.f, false), .b = t_randn(ctx, 1, SHAPE(4), 1.f, false)};
    segc_infer_opts whole;
    segc_infer_opts_default(&whole);
    segc_tensor *a = segc_infer_logits(ctx, work, test_model_forward, &m, x, &whole);
    segc_tensor *b = segc_infer_logits(ctx, work, test_model_forward, &m, x, &o);
    assert_true(fx_close("gaussian slide vs whole", b, a, 1e-5));
    segc_ctx_free(work);
    segc_ctx_free(ctx);
}

static void test_sigmoid_and_probs_only(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    test_model m = {.w = t_randn(ctx, 4, SHAPE(4, 3, 1, 1), 1.f, false), .b = t_randn(ctx, 1, SHAPE(4), 1.f, false)};
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 6, 7), 1.f, false);
    segc_infer_opts o;
    segc_infer_opts_default(&o);
    o.probs = SEGC_PROBS_SIGMOID;
    segc_tensor *lg = segc_infer_logits(ctx, NULL, test_model_forward, &m, x, &o);
    segc_tensor *p0;
    segc_tensor *l0 = segc_infer(ctx, NULL, test_model_forward, &m, x, 0, 0, &o, &p0);
    assert_non_null(l0);
    for (int64_t i = 0; i < segc_numel(lg); i++)
        assert_true(fabsf(segc_f32(p0)[i] - 1.f / (1.f + expf(-segc_f32(lg)[i]))) < 1e-6f);
    /* probabilities only: the same values, no label map */
    segc_tensor *q = segc_infer_probs(ctx, NULL, test_model_forward, &m, x, 0, 0, &o);
    assert_non_null(q);
    assert_memory_equal(q->data, p0->data, segc_nbytes(p0));
    /* flip TTA averages sigmoids: a pointwise model gives the same */
    o.flip = true;
    segc_tensor *q1 = segc_infer_probs(ctx, NULL, test_model_forward, &m, x, 0, 0, &o);
    assert_true(fx_close("sigmoid flip", q1, p0, 1e-6));
    /* softmax default unchanged, and more classes than a u8 label holds are fine without labels */
    o.probs = SEGC_PROBS_SOFTMAX;
    o.flip = false;
    segc_tensor *big = segc_infer_probs(ctx, NULL, many_classes_forward, NULL, x, 4, 4, &o);
    assert_non_null(big);
    assert_int_equal(big->shape[1], 300);
    assert_true(fabsf(segc_f32(big)[0] - 1.f / 300.f) < 1e-6f);
    o.probs = 2;
    assert_null(segc_infer_probs(ctx, NULL, test_model_forward, &m, x, 0, 0, &o));
    assert_non_null(strstr(segc_last_error(ctx), "probs must be softmax (0) or sigmoid (1), found 2"));
    segc_clear_error(ctx);
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole),
        cmocka_unit_test(test_slide),
        cmocka_unit_test(test_slide_crop_larger),
        cmocka_unit_test(test_flip),
        cmocka_unit_test(test_tta_multiscale),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_slide_equals_whole),
        cmocka_unit_test(test_slide_windows),
        cmocka_unit_test(test_ratio_size),
        cmocka_unit_test(test_flip_pointwise),
        cmocka_unit_test(test_work_steady_state),
        cmocka_unit_test(test_image_tensor),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_segformer_adapter),
        cmocka_unit_test(test_predict_files),
        cmocka_unit_test(test_predict_write_and_palette),
        cmocka_unit_test(test_gaussian_map),
        cmocka_unit_test(test_gaussian_slide),
        cmocka_unit_test(test_sigmoid_and_probs_only),
    };
    return cmocka_run_group_tests_name("infer", tests, setup, teardown);
}
