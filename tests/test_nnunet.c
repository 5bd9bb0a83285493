/* nnU-Net 2-D augmentation: each transform checked for what it claims, with
 * statistics over many per-sample seeds (foreground rate of the crop, noise
 * variance, mirror), labels untouched by intensity transforms, determinism,
 * parameter validation, and the whole chain through the loader. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nifti1.h>
#include <zlib.h>

#include "common/harness.h"
#include "segc/augment.h"
#include "segc/data.h"
#include "segc/image_io.h"
#include "segc/loader.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"   /* buffers sized for the short paths used */

static char g_data[1024];   /* shared data root (../shared/data or $SEGC_DATA) */

/* F32 HWC sample with c channels of smooth values and a label with a small
 * square of class cls at (oy, ox) (size sz; sz 0: all background). */
static segc_sample make_f32(int h, int w, int c, int oy, int ox, int sz, int cls) {
    segc_sample s;
    memset(&s, 0, sizeof s);
    assert_true(segc_image_alloc(&s.img, h, w, c, SEGC_F32));
    assert_true(segc_image_alloc(&s.label, h, w, 1, SEGC_U8));
    float *x = s.img.data;
    uint8_t *l = s.label.data;
    for (int y = 0; y < h; y++)
        for (int xx = 0; xx < w; xx++) {
            for (int k = 0; k < c; k++) x[((size_t)y * w + xx) * c + k] = sinf(0.1f * y + 0.3f * k) + 0.05f * xx;
            l[y * w + xx] = (y >= oy && y < oy + sz && xx >= ox && xx < ox + sz) ? (uint8_t)cls : 0;
        }
    return s;
}

static segc_pipeline one(segc_aug_kind k) {
    segc_pipeline p = {0};
    p.t[p.n++] = segc_aug_default(k);
    return p;
}

static bool run(const segc_pipeline *p, const segc_sample *s, uint64_t seed, segc_arena *ar, segc_aug_state *st) {
    char err[256];
    segc_arena_reset(ar);
    bool ok = segc_pipeline_run(p, s, seed, ar, st, err, sizeof err);
    if (!ok) print_error("%s\n", err);
    return ok;
}

static void test_fg_crop(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 1 << 20);
    segc_sample s = make_f32(160, 200, 2, 120, 30, 4, 3);   /* a 4x4 object in a 160x200 slice */
    segc_pipeline p = one(SEGC_AUG_FG_CROP);
    p.t[0].p.fg_crop.h = 48;
    p.t[0].p.fg_crop.w = 40;
    int with_fg = 0, N = 2000;
    for (int i = 0; i < N; i++) {
        segc_aug_state st;
        assert_true(run(&p, &s, segc_aug_seed(7, 0, i, 0), &ar, &st));
        assert_int_equal(st.h, 48);
        assert_int_equal(st.w, 40);
        assert_non_null(st.img_f32);
        assert_null(st.img);
        int n3 = 0;
        for (int k = 0; k < 48 * 40; k++) n3 += st.label[k] == 3;
        with_fg += n3 > 0;
    }
    /* 0.4 forced + the uniform crops that hit it by chance (~2%) */
    double rate = (double)with_fg / N;
    print_message("fg crop: %.3f of crops contain the object\n", rate);
    assert_true(rate > 0.38 && rate < 0.48);
    /* fg_prob 1: always; fg_prob 0: rare */
    p.t[0].p.fg_crop.fg_prob = 1.0;
    for (int i = 0; i < 200; i++) {
        segc_aug_state st;
        assert_true(run(&p, &s, segc_aug_seed(8, 0, i, 0), &ar, &st));
        int n3 = 0;
        for (int k = 0; k < 48 * 40; k++) n3 += st.label[k] == 3;
        assert_true(n3 > 0);
    }
    /* image and label cropped at the same window: compare against the source */
    {
        segc_rng r;
        segc_rng_init(&r, 99);
        int y0, x0;
        bool fg;
        segc_fg_crop_draw(&p.t[0].p.fg_crop, &r, s.label.data, 160, 200, &y0, &x0, &fg);
        assert_true(fg);
        assert_true(y0 <= 120 + 3 && y0 + 48 > 120 && x0 <= 33 && x0 + 40 > 30);
        segc_aug_state st;
        assert_true(run(&p, &s, 99, &ar, &st));
        const float *src = s.img.data;
        assert_true(st.img_f32[0] == src[((size_t)y0 * 200 + x0) * 2]);
        assert_true(st.img_f32[(47 * 40 + 39) * 2 + 1] == src[((size_t)(y0 + 47) * 200 + x0 + 39) * 2 + 1]);
    }
    /* smaller slice than the patch: padded with pad_val / seg_pad_val */
    segc_sample small = make_f32(20, 30, 1, 0, 0, 0, 0);
    p.t[0].p.fg_crop.pad_val = -7.f;
    p.t[0].p.fg_crop.seg_pad_val = 255;
    segc_aug_state st;
    assert_true(run(&p, &small, 3, &ar, &st));
    int npad = 0, nlpad = 0;
    for (int k = 0; k < 48 * 40; k++) npad += st.img_f32[k] == -7.f, nlpad += st.label[k] == 255;
    assert_int_equal(npad, 48 * 40 - 20 * 30);
    assert_int_equal(nlpad, 48 * 40 - 20 * 30);
    int fh, fw;
    bool lf;
    assert_true(segc_pipeline_fixed_size(&p, &fh, &fw, &lf) && fh == 48 && fw == 40 && lf);
    segc_sample_free(&small);
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

static void test_mirror_and_determinism(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 1 << 20);
    int h = 9, w = 7, c = 3;
    segc_sample s = make_f32(h, w, c, 2, 1, 3, 2);
    segc_pipeline p = one(SEGC_AUG_MIRROR);
    int counts[4] = {0};
    for (int i = 0; i < 1000; i++) {
        segc_aug_state st;
        assert_true(run(&p, &s, segc_aug_seed(1, 2, i, 0), &ar, &st));
        const float *a = s.img.data;
        const uint8_t *la = s.label.data;
        /* which flip happened: identify from pixel (0, 0) */
        int which = -1;
        for (int f = 0; f < 4 && which < 0; f++) {
            bool ok = true;
            for (int y = 0; y < h && ok; y++)
                for (int x = 0; x < w && ok; x++) {
                    int sy = f & 1 ? h - 1 - y : y, sx = f & 2 ? w - 1 - x : x;
                    for (int k = 0; k < c; k++) ok &= st.img_f32[(y * w + x) * c + k] == a[(sy * w + sx) * c + k];
                    ok &= st.label[y * w + x] == la[sy * w + sx];
                }
            if (ok) which = f;
        }
        assert_true(which >= 0);
        assert_int_equal(st.flipped, (which & 2) != 0);
        counts[which]++;
    }
    for (int f = 0; f < 4; f++) assert_true(counts[f] > 200 && counts[f] < 300);
    /* the whole chain: same seed, same bits */
    segc_sample big = make_f32(64, 64, 2, 20, 20, 6, 4);
    segc_pipeline nn;
    segc_pipeline_nnunet_2d(&nn, 32, 32, 0.4);
    char err[256];
    assert_true(segc_pipeline_validate(&nn, err, sizeof err));
    for (int k = 0; k < nn.n; k++) {   /* make everything fire */
        segc_aug_transform *t = &nn.t[k];
        if (t->kind == SEGC_AUG_SPATIAL) t->p.spatial.p_rot = t->p.spatial.p_scale = 1;
        if (t->kind == SEGC_AUG_NOISE) t->p.noise.prob = 1;
        if (t->kind == SEGC_AUG_BLUR) t->p.blur.prob = 1;
        if (t->kind == SEGC_AUG_BRIGHTNESS) t->p.brightness.prob = 1;
        if (t->kind == SEGC_AUG_CONTRAST) t->p.contrast.prob = 1;
        if (t->kind == SEGC_AUG_GAMMA) t->p.gamma.prob = 1;
        if (t->kind == SEGC_AUG_LOW_RES) t->p.low_res.prob = 1;
    }
    segc_arena ar2;
    segc_arena_init(&ar2, 1 << 20);
    for (int i = 0; i < 20; i++) {
        segc_aug_state a, b;
        assert_true(run(&nn, &big, segc_aug_seed(5, 1, i, 0), &ar, &a));
        assert_true(run(&nn, &big, segc_aug_seed(5, 1, i, 0), &ar2, &b));
        assert_memory_equal(a.img_f32, b.img_f32, sizeof(float) * 32 * 32 * 2);
        assert_memory_equal(a.label, b.label, 32 * 32);
        for (int k = 0; k < 32 * 32 * 2; k++) assert_true(isfinite(a.img_f32[k]));
        for (int k = 0; k < 32 * 32; k++) assert_true(a.label[k] == 0 || a.label[k] == 4);
    }
    segc_aug_state a, b;
    assert_true(run(&nn, &big, 11, &ar, &a));
    assert_true(run(&nn, &big, 12, &ar2, &b));
    assert_true(memcmp(a.img_f32, b.img_f32, sizeof(float) * 32 * 32 * 2) != 0);
    segc_arena_free(&ar2);
    segc_sample_free(&big);
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

static void test_noise_variance(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 1 << 20);
    segc_sample s;
    memset(&s, 0, sizeof s);
    assert_true(segc_image_alloc(&s.img, 32, 32, 2, SEGC_F32));
    memset(s.img.data, 0, sizeof(float) * 32 * 32 * 2);
    segc_pipeline p = one(SEGC_AUG_NOISE);
    /* fixed "variance" 0.1 is the noise's standard deviation (batchgenerators) */
    p.t[0].p.noise = (segc_aug_noise){1.0, 0.1, 0.1};
    double s2 = 0, s1 = 0;
    int n = 0;
    for (int i = 0; i < 50; i++) {
        segc_aug_state st;
        assert_true(run(&p, &s, segc_aug_seed(3, 0, i, 0), &ar, &st));
        for (int k = 0; k < 32 * 32 * 2; k++) s1 += st.img_f32[k], s2 += (double)st.img_f32[k] * st.img_f32[k], n++;
    }
    print_message("noise: mean %.5f var %.6f\n", s1 / n, s2 / n);
    assert_true(fabs(s1 / n) < 0.002);
    assert_true(fabs(s2 / n - 0.01) < 0.0005);
    /* default: applied to ~10% of samples, std U(0, 0.1): E[var] = 0.1^2 / 3 */
    p.t[0] = segc_aug_default(SEGC_AUG_NOISE);
    int applied = 0;
    double vs = 0;
    for (int i = 0; i < 3000; i++) {
        segc_aug_state st;
        assert_true(run(&p, &s, segc_aug_seed(4, 0, i, 0), &ar, &st));
        double v = 0;
        for (int k = 0; k < 32 * 32 * 2; k++) v += (double)st.img_f32[k] * st.img_f32[k];
        if (v > 0) applied++, vs += v / (32 * 32 * 2);
    }
    print_message("noise default: applied %d/3000, mean var %.5f\n", applied, vs / applied);
    assert_true(applied > 240 && applied < 360);
    assert_true(fabs(vs / applied - 0.01 / 3) < 0.0006);
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

/* intensity transforms: labels untouched, the claimed effect on the image */
static void test_intensity(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 1 << 20);
    segc_sample s = make_f32(24, 20, 2, 5, 5, 6, 1);
    const float *x0 = s.img.data;
    int n = 24 * 20;
    segc_aug_kind kinds[] = {SEGC_AUG_NOISE, SEGC_AUG_BLUR,  SEGC_AUG_BRIGHTNESS,
                             SEGC_AUG_CONTRAST, SEGC_AUG_GAMMA, SEGC_AUG_LOW_RES};
    for (size_t q = 0; q < sizeof kinds / sizeof *kinds; q++) {
        segc_pipeline p = one(kinds[q]);
        segc_aug_transform *t = &p.t[0];
        if (kinds[q] == SEGC_AUG_NOISE) t->p.noise.prob = 1;
        if (kinds[q] == SEGC_AUG_BLUR) t->p.blur.prob = 1, t->p.blur.p_per_channel = 1;
        if (kinds[q] == SEGC_AUG_BRIGHTNESS) t->p.brightness.prob = 1;
        if (kinds[q] == SEGC_AUG_CONTRAST) t->p.contrast.prob = 1;
        if (kinds[q] == SEGC_AUG_GAMMA) t->p.gamma.prob = 1;
        if (kinds[q] == SEGC_AUG_LOW_RES) t->p.low_res = (segc_aug_low_res){1, 1, 0.5, 0.5};
        for (int i = 0; i < 20; i++) {
            segc_aug_state st;
            assert_true(run(&p, &s, segc_aug_seed(9, 0, i, 0), &ar, &st));
            assert_memory_equal(st.label, s.label.data, (size_t)n);
            assert_int_equal(st.h, 24);
            for (int ch = 0; ch < 2; ch++) {
                double m0 = 0, m1 = 0, mn0 = 1e9, mx0 = -1e9, mn1 = 1e9, mx1 = -1e9, v0 = 0, v1 = 0;
                for (int k = 0; k < n; k++) {
                    double a = x0[k * 2 + ch], b = st.img_f32[k * 2 + ch];
                    m0 += a, m1 += b, mn0 = fmin(mn0, a), mx0 = fmax(mx0, a), mn1 = fmin(mn1, b), mx1 = fmax(mx1, b);
                }
                m0 /= n, m1 /= n;
                for (int k = 0; k < n; k++) {
                    double a = x0[k * 2 + ch] - m0, b = st.img_f32[k * 2 + ch] - m1;
                    v0 += a * a, v1 += b * b;
                }
                if (kinds[q] == SEGC_AUG_BRIGHTNESS) {   /* one factor in [0.75, 1.25] per channel */
                    double f = st.img_f32[10 * 2 + ch] / x0[10 * 2 + ch];   /* pixel (0, 10): nonzero */
                    assert_true(f >= 0.75 && f <= 1.25);
                    for (int k = 0; k < n; k++) assert_true(fabs(st.img_f32[k * 2 + ch] - f * x0[k * 2 + ch]) < 1e-5);
                }
                if (kinds[q] == SEGC_AUG_CONTRAST) assert_true(mn1 >= mn0 - 1e-5 && mx1 <= mx0 + 1e-5);
                if (kinds[q] == SEGC_AUG_GAMMA) {   /* retain_stats */
                    assert_true(fabs(m1 - m0) < 1e-4);
                    assert_true(fabs(sqrt(v1 / n) - sqrt(v0 / n)) < 1e-3);
                }
                if (kinds[q] == SEGC_AUG_BLUR) assert_true(v1 < v0);   /* smoothing lowers the variance */
                if (kinds[q] == SEGC_AUG_LOW_RES) {   /* smooth input: close to it, but changed, within range */
                    assert_true(mn1 >= mn0 - 1e-5 && mx1 <= mx0 + 1e-5);
                    double d = 0;
                    for (int k = 0; k < n; k++) d = fmax(d, fabs(st.img_f32[k * 2 + ch] - x0[k * 2 + ch]));
                    assert_true(d > 1e-3 && d < 0.3);
                }
            }
        }
    }
    /* blur: a delta keeps its mass and becomes scipy's Gaussian (sigma 1: radius 4) */
    float img[15 * 15] = {0}, tmp[15];
    img[7 * 15 + 7] = 1.f;
    segc_gaussian_blur_f32(img, 15, 15, 1, 0, 1.0, tmp);
    double sum = 0;
    for (int k = 0; k < 225; k++) sum += img[k];
    assert_true(fabs(sum - 1) < 1e-5);
    double g1 = exp(-0.5), gs = 0;
    for (int i = -4; i <= 4; i++) gs += exp(-0.5 * i * i);
    assert_true(fabs(img[7 * 15 + 8] - g1 / (gs * gs)) < 1e-6);
    assert_true(img[7 * 15 + 12] == 0.f);
    /* constant image: unchanged by blur, contrast and gamma */
    float cst[8 * 8];
    for (int k = 0; k < 64; k++) cst[k] = 2.5f;
    segc_gaussian_blur_f32(cst, 8, 8, 1, 0, 0.7, tmp);
    for (int k = 0; k < 64; k++) assert_true(fabs(cst[k] - 2.5f) < 1e-5);
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

static void test_spatial(void **state) {
    segc_arena ar;
    segc_arena_init(&ar, 1 << 20);
    segc_sample s = make_f32(33, 33, 1, 10, 10, 13, 2);
    segc_pipeline p = one(SEGC_AUG_SPATIAL);
    /* scale only, s fixed at 0.5: the centre 17x17 magnified twice */
    p.t[0].p.spatial = (segc_aug_spatial){0, 0, 0, 1, 0.5, 0.5, 0.f, 0};
    segc_aug_state st;
    assert_true(run(&p, &s, 1, &ar, &st));
    const float *x = s.img.data;
    /* output (y, x) samples 16 + 0.5 (y - 16): even offsets land on pixels */
    for (int y = 0; y < 33; y += 2)
        for (int xx = 0; xx < 33; xx += 2) {
            int sy = 16 + (y - 16) / 2, sx = 16 + (xx - 16) / 2;
            assert_true(fabsf(st.img_f32[y * 33 + xx] - x[sy * 33 + sx]) < 1e-5f);
        }
    /* rotation by 180 degrees = both mirrors */
    p.t[0].p.spatial = (segc_aug_spatial){1, 180, 180, 0, 1, 1, 0.f, 0};
    assert_true(run(&p, &s, 2, &ar, &st));
    const uint8_t *l = s.label.data;
    for (int y = 0; y < 33; y++)
        for (int xx = 0; xx < 33; xx++) {
            assert_true(fabsf(st.img_f32[y * 33 + xx] - x[(32 - y) * 33 + 32 - xx]) < 1e-4f);
            assert_int_equal(st.label[y * 33 + xx], l[(32 - y) * 33 + 32 - xx]);
        }
    /* zoom out (s = 2): the border reads outside -> pad values, labels stay in {0, 2} */
    p.t[0].p.spatial = (segc_aug_spatial){0, 0, 0, 1, 2, 2, -3.f, 7};
    assert_true(run(&p, &s, 3, &ar, &st));
    assert_true(st.img_f32[0] == -3.f && st.label[0] == 7 && st.label[16 * 33 + 16] == 2);
    segc_sample_free(&s);
    segc_arena_free(&ar);
}

static void test_validation_and_loader(void **state) {
    char err[256];
    segc_pipeline p = one(SEGC_AUG_FG_CROP);
    p.t[0].p.fg_crop.fg_prob = 1.5;
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "fg_crop: fg_prob expected in [0, 1], found 1.5"));
    p = one(SEGC_AUG_SPATIAL);
    p.t[0].p.spatial.scale_lo = 0;
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "spatial: scale range"));
    p = one(SEGC_AUG_BLUR);
    p.t[0].p.blur.sigma_lo = 2, p.t[0].p.blur.sigma_hi = 1;
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "blur: sigma range expected 0 < lo <= hi"));
    p = one(SEGC_AUG_NOISE);
    p.t[0].p.noise.var_lo = -1;
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "noise: noise_variance"));
    p = one(SEGC_AUG_GAMMA);
    p.t[0].p.gamma.prob = -0.1;
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    p = one(SEGC_AUG_MIRROR);
    p.t[0].p.mirror.prob_x = 2;
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "mirror: prob_y and prob_x"));
    p = one(SEGC_AUG_LOW_RES);
    p.t[0].p.low_res.zoom_hi = 1.5;
    assert_false(segc_pipeline_validate(&p, err, sizeof err));
    assert_non_null(strstr(err, "low_res: zoom range expected 0 < lo <= hi <= 1, found (0.5, 1.5)"));
    /* a U8-only transform after the float ones fails with a clear message */
    segc_arena ar;
    segc_arena_init(&ar, 1 << 16);
    segc_sample s = make_f32(8, 8, 2, 0, 0, 2, 1);
    p = one(SEGC_AUG_MIRROR);
    p.t[p.n++] = segc_aug_default(SEGC_AUG_PHOTOMETRIC);
    segc_aug_state st;
    assert_false(segc_pipeline_run(&p, &s, 1, &ar, &st, err, sizeof err));
    assert_non_null(strstr(err, "photometric: needs a U8 image"));
    segc_arena_free(&ar);
    segc_sample_free(&s);
}

/* the chain through the loader on an in-memory 2-channel source */
static bool src_load(void *user, int64_t i, segc_sample *out, char *err, size_t errlen) {
    *out = make_f32(50, 45, 2, (int)(i * 7 % 40), (int)(i * 3 % 35), 5, 1 + (int)(i % 4));
    out->index = i;
    return true;
}

static void test_loader(void **state) {
    segc_pipeline p;
    segc_pipeline_nnunet_2d(&p, 32, 24, 0.4);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.channels = 2;
    o.batch_size = 4;
    o.num_workers = 2;
    o.label_dtype = SEGC_I64;
    segc_sample_source src = {NULL, 16, src_load, NULL};
    char err[512];
    float *first = malloc(sizeof(float) * 4 * 2 * 32 * 24);
    for (int pass = 0; pass < 2; pass++) {
        o.num_workers = pass ? 0 : 2;
        segc_loader *l = segc_loader_new(src, &p, &o, err, sizeof err);
        if (!l) fail_msg("%s", err);
        const segc_batch *b = segc_loader_next(l, err, sizeof err);
        if (!b) fail_msg("%s", err);
        assert_int_equal(b->c, 2);
        assert_int_equal(b->h, 32);
        assert_int_equal(b->w, 24);
        assert_int_equal(b->label_h, 32);
        if (!pass) memcpy(first, b->images, sizeof(float) * 4 * 2 * 32 * 24);
        else assert_memory_equal(first, b->images, sizeof(float) * 4 * 2 * 32 * 24);   /* workers don't matter */
        segc_loader_free(l);
    }
    free(first);
}

/* ------------------------------------------------------------ volumes, folds */

static bool have_brats(char *root, size_t n) {
    snprintf(root, n, "%s/brats-mini", g_data);
    char p[1100];
    snprintf(p, sizeof p, "%s/train", root);
    FILE *f = fopen(p, "r");
    if (!f) fail_msg("%s not found: this test needs the shared data (set SEGC_DATA)", p);
    fclose(f);
    return true;
}

static segc_dataset *open_brats(const char *root, const char *split, int fold, int num_folds) {
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.fold = fold, o.num_folds = num_folds;
    char err[512];
    segc_dataset *ds = segc_dataset_open("brats", root, split, &o, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    return ds;
}

static void test_folds_and_volumes(void **state) {
    char root[1024], err[512];
    have_brats(root, sizeof root);
    setenv("SEGC_MEDICAL_CACHE_MB", "0", 1);   /* headers only: the folds need no voxels */
    const char *names[2][2];
    segc_dataset *keep[4];
    for (int fold = 0; fold < 2; fold++) {
        segc_dataset *tr = open_brats(root, "train", fold, 2), *va = open_brats(root, "val", fold, 2);
        keep[2 * fold] = tr, keep[2 * fold + 1] = va;
        assert_int_equal(segc_dataset_n_volumes(tr), 1);
        assert_int_equal(segc_dataset_n_volumes(va), 1);
        assert_int_equal(segc_dataset_len(tr), 155);
        segc_volume_info a, b;
        assert_true(segc_dataset_volume_info(tr, 0, &a, err, sizeof err));
        assert_true(segc_dataset_volume_info(va, 0, &b, err, sizeof err));
        assert_true(strcmp(a.name, b.name) != 0);   /* disjoint */
        names[fold][0] = a.name, names[fold][1] = b.name;
    }
    /* fold 0's validation case is fold 1's training case and vice versa */
    assert_string_equal(names[0][1], names[1][0]);
    assert_string_equal(names[1][1], names[0][0]);
    for (int k = 0; k < 4; k++) segc_dataset_close(keep[k]);
    /* out-of-range fold: one line naming data.fold and both numbers */
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.fold = 2, o.num_folds = 2;
    assert_null(segc_dataset_open("brats", root, "train", &o, err, sizeof err));
    assert_non_null(strstr(err, "data.fold 2 out of range for data.num_folds 2"));
    o.fold = -1;
    assert_null(segc_dataset_open("brats", root, "val", &o, err, sizeof err));
    assert_non_null(strstr(err, "data.fold -1"));
    o.fold = 0, o.num_folds = 3;   /* more folds than cases */
    assert_null(segc_dataset_open("brats", root, "train", &o, err, sizeof err));
    assert_non_null(strstr(err, "data.num_folds 3 exceeds the 2 training cases"));
    assert_null(segc_dataset_open("folder", root, "train", &o, err, sizeof err));
    assert_non_null(strstr(err, "k-fold splits are supported for brats and msd only"));
    /* volumes of the whole split: all slices, in order, case-major */
    segc_dataset *ds = open_brats(root, "train", 0, 0);
    assert_int_equal(segc_dataset_n_volumes(ds), 2);
    assert_int_equal(segc_dataset_len(ds), 310);
    int64_t v;
    int sl;
    assert_true(segc_dataset_sample_volume(ds, 154, &v, &sl) && v == 0 && sl == 154);
    assert_true(segc_dataset_sample_volume(ds, 155, &v, &sl) && v == 1 && sl == 0);
    assert_false(segc_dataset_sample_volume(ds, 310, &v, &sl));
    segc_volume_info vi;
    assert_true(segc_dataset_volume_info(ds, 1, &vi, err, sizeof err));
    assert_string_equal(vi.name, "brats_2013_pat0006_1");
    assert_true(vi.dim[0] == 240 && vi.dim[1] == 240 && vi.dim[2] == 155);
    assert_int_equal(vi.first_sample, 155);
    assert_int_equal(vi.n_samples, 155);
    assert_non_null(strstr(vi.label_path, "OTMultiClass.nii.gz"));
    assert_non_null(strstr(vi.image_path, "Flair"));
    assert_true(vi.affine[3][3] == 1.0);
    assert_false(segc_dataset_volume_info(ds, 2, &vi, err, sizeof err));
    assert_non_null(strstr(err, "volume 2 out of range (2 volumes)"));
    segc_dataset_close(ds);
    unsetenv("SEGC_MEDICAL_CACHE_MB");
}

/* f32 NIfTI-1 with an sform translated by (tx, 0, 0) and voxel size 1.5 */
static void write_nii(const char *path, int nx, int ny, int nz, int nt, const float *data, float tx) {
    nifti_1_header h;
    memset(&h, 0, sizeof h);
    h.sizeof_hdr = 348;
    h.dim[0] = (short)(nt > 1 ? 4 : 3), h.dim[1] = (short)nx, h.dim[2] = (short)ny, h.dim[3] = (short)nz;
    h.dim[4] = (short)nt, h.dim[5] = h.dim[6] = h.dim[7] = 1;
    h.pixdim[0] = 1, h.pixdim[1] = h.pixdim[2] = h.pixdim[3] = 1.5f, h.pixdim[4] = 1;
    h.datatype = DT_FLOAT32, h.bitpix = 32, h.vox_offset = 352, h.scl_slope = 1.f;
    h.sform_code = 1;
    h.srow_x[0] = 1.5f, h.srow_x[3] = tx;
    h.srow_y[1] = 1.5f, h.srow_y[3] = -20.f;
    h.srow_z[2] = 1.5f, h.srow_z[3] = 7.f;
    memcpy(h.magic, "n+1", 4);
    uint8_t pad[4] = {0};
    size_t nb = (size_t)nx * ny * nz * nt * sizeof(float);
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_true(gzwrite(f, &h, sizeof h) == (int)sizeof h && gzwrite(f, pad, 4) == 4 &&
                gzwrite(f, data, (unsigned)nb) == (int)nb);
    assert_int_equal(gzclose(f), Z_OK);
}

static void sh(const char *fmt, const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, fmt, dir, dir, dir, dir);
    assert_int_equal(system(cmd), 0);
}

/* one brats case in tmp/train/c1 from the given pieces; open must fail with want */
static void brats_bad(const char *tmp, int t1_nz, float t1_tx, int lab_nz, float lab_tx, float lab_val,
                      const char *want) {
    char p[1100], err[512];
    float img[4 * 3 * 3], lab[4 * 3 * 3];
    for (int i = 0; i < 36; i++) img[i] = 1.f + (float)i, lab[i] = (float)(i % 5);
    lab[7] = lab_val;
    sh("rm -rf %s/train && mkdir -p %s/train/c1", tmp);
    snprintf(p, sizeof p, "%s/train/c1/c1_flair.nii.gz", tmp);
    write_nii(p, 4, 3, 2, 1, img, 0);
    snprintf(p, sizeof p, "%s/train/c1/c1_t1.nii.gz", tmp);
    write_nii(p, 4, 3, t1_nz, 1, img, t1_tx);
    snprintf(p, sizeof p, "%s/train/c1/c1_seg.nii.gz", tmp);
    write_nii(p, 4, 3, lab_nz, 1, lab, lab_tx);
    segc_dataset *ds = segc_dataset_open("brats", tmp, "train", NULL, err, sizeof err);
    if (!want) {
        if (!ds) fail_msg("%s", err);
        segc_dataset_close(ds);
        return;
    }
    if (ds) {
        segc_dataset_close(ds);
        fail_msg("open succeeded, expected '%s'", want);
    }
    print_message("  %s\n", err);
    if (!strstr(err, want)) fail_msg("'%s' lacks '%s'", err, want);
    assert_null(strchr(err, '\n'));
}

static void test_bad_volumes(void **state) {
    char tmp[] = "/tmp/segc_nnunet_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    brats_bad(tmp, 2, 0, 2, 0, 1, NULL);   /* consistent: opens */
    brats_bad(tmp, 2, 0, 2, 3.f, 1, "c1_seg.nii.gz: affine row 0 is [1.5 0 0 3], expected [1.5 0 0 0] as in");
    brats_bad(tmp, 2, 4.5f, 2, 0, 1, "c1_t1.nii.gz: affine row 0 is [1.5 0 0 4.5], expected [1.5 0 0 0]");
    brats_bad(tmp, 3, 0, 2, 0, 1, "c1_t1.nii.gz: shape 4x3x3x1, expected 4x3x2x1");
    brats_bad(tmp, 2, 0, 3, 0, 1, "c1_seg.nii.gz: label shape 4x3x3x1, expected 4x3x2");
    brats_bad(tmp, 2, 0, 2, 0, 9, "c1_seg.nii.gz: label value 9 at voxel (3,1,0) is not a class id 0..4");
    /* msd: a case whose modality count (4th dim) differs from the first case's */
    char p[1100], err[512];
    float img[4 * 3 * 2 * 3] = {1}, lab[24] = {0};
    for (int i = 0; i < 72; i++) img[i] = (float)(i + 1);
    sh("mkdir -p %s/msd/imagesTr %s/msd/labelsTr && printf '{\"labels\": {\"0\": \"bg\", \"1\": \"fg\"}}' > "
       "%s/msd/dataset.json", tmp);
    snprintf(p, sizeof p, "%s/msd/imagesTr/a.nii.gz", tmp);
    write_nii(p, 4, 3, 2, 2, img, 0);
    snprintf(p, sizeof p, "%s/msd/labelsTr/a.nii.gz", tmp);
    write_nii(p, 4, 3, 2, 1, lab, 0);
    snprintf(p, sizeof p, "%s/msd/imagesTr/b.nii.gz", tmp);
    write_nii(p, 4, 3, 2, 3, img, 0);
    snprintf(p, sizeof p, "%s/msd/labelsTr/b.nii.gz", tmp);
    write_nii(p, 4, 3, 2, 1, lab, 0);
    snprintf(p, sizeof p, "%s/msd", tmp);
    assert_null(segc_dataset_open("msd", p, NULL, NULL, err, sizeof err));
    print_message("  %s\n", err);
    assert_non_null(strstr(err, "imagesTr/b.nii.gz: shape 4x3x2x3, expected 4x3x2x2 (modalities along t"));
    /* msd folds: 2 cases, 2 folds */
    snprintf(p, sizeof p, "%s/msd/imagesTr/b.nii.gz", tmp);
    write_nii(p, 4, 3, 2, 2, img, 0);
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.num_folds = 2;
    snprintf(p, sizeof p, "%s/msd", tmp);
    segc_dataset *va = segc_dataset_open("msd", p, "val", &o, err, sizeof err);
    if (!va) fail_msg("%s", err);
    assert_int_equal(segc_dataset_n_volumes(va), 1);
    assert_int_equal(segc_dataset_len(va), 2);
    segc_dataset_close(va);
    snprintf(p, sizeof p, "rm -rf '%s'", tmp);
    assert_int_equal(system(p), 0);
}

static void test_label_writer(void **state) {
    char tmp[] = "/tmp/segc_nnunet_XXXXXX", ref[1100], out[1100], err[512];
    assert_non_null(mkdtemp(tmp));
    float img[5 * 4 * 3];
    uint8_t lab[60];
    for (int i = 0; i < 60; i++) img[i] = (float)i, lab[i] = (uint8_t)(i * 7 % 5);
    snprintf(ref, sizeof ref, "%s/ref.nii.gz", tmp);
    write_nii(ref, 5, 4, 3, 1, img, 12.5f);
    snprintf(out, sizeof out, "%s/pred.nii.gz", tmp);
    const int64_t dim[3] = {5, 4, 3};
    assert_true(segc_nifti_write_labels(out, lab, dim, ref, NULL, err, sizeof err));
    segc_volume v;
    if (!segc_nifti_read(out, &v, err, sizeof err)) fail_msg("%s", err);
    assert_true(v.dim[0] == 5 && v.dim[1] == 4 && v.dim[2] == 3 && v.dim[3] == 1);
    for (int i = 0; i < 60; i++) assert_true(v.data[i] == lab[i]);
    segc_volume_free(&v);
    int64_t d0[3], d1[3];
    double a0[4][4], a1[4][4];
    int sc, qc;
    assert_true(segc_nifti_read_geometry(ref, d0, a0, NULL, NULL, err, sizeof err));
    assert_true(segc_nifti_read_geometry(out, d1, a1, &sc, &qc, err, sizeof err));
    assert_int_equal(sc, 1);
    assert_memory_equal(a0, a1, sizeof a0);
    assert_true(a1[0][3] == 12.5 && a1[1][1] == 1.5);
    /* uint8 on disk */
    segc_nifti_info info;
    assert_true(segc_nifti_read_info(out, &info, err, sizeof err));
    assert_int_equal(info.datatype, DT_UINT8);
    /* from an affine: sform and qform both carry it */
    double aff[4][4] = {{-2, 0, 0, 10}, {0, 3, 0, -4}, {0, 0, 4, 1}, {0, 0, 0, 1}};
    snprintf(out, sizeof out, "%s/pred2.nii", tmp);
    assert_true(segc_nifti_write_labels(out, lab, dim, NULL, aff, err, sizeof err));
    assert_true(segc_nifti_read_geometry(out, d1, a1, &sc, &qc, err, sizeof err));
    assert_true(sc == 1 && qc == 1);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) assert_true(fabs(a1[r][c] - aff[r][c]) < 1e-5);
    /* mismatching reference dims: refused, nothing written */
    const int64_t bad[3] = {5, 4, 2};
    snprintf(out, sizeof out, "%s/pred3.nii.gz", tmp);
    assert_false(segc_nifti_write_labels(out, lab, bad, ref, NULL, err, sizeof err));
    assert_non_null(strstr(err, "labels are 5x4x2 but the reference"));
    assert_null(fopen(out, "rb"));
    snprintf(out, sizeof out, "rm -rf '%s'", tmp);
    assert_int_equal(system(out), 0);
}

/* the chain on real BraTS slices (2 modalities) through a threaded loader */
static void test_brats_loader(void **state) {
    char root[1024], err[512];
    have_brats(root, sizeof root);
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.brain_slices_only = true;
    segc_dataset *ds = segc_dataset_open("brats", root, "train", &o, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    segc_pipeline p;
    segc_pipeline_nnunet_2d(&p, 128, 112, 1.0);   /* always foreground: every patch shows tumour */
    segc_loader_opts lo;
    segc_loader_opts_default(&lo);
    lo.channels = 2, lo.batch_size = 4, lo.num_workers = 2, lo.seed = 3;
    segc_loader *l = segc_loader_new(segc_dataset_source(ds), &p, &lo, err, sizeof err);
    if (!l) fail_msg("%s", err);
    int with_fg = 0, n = 0;
    for (int it = 0; it < 5; it++) {
        const segc_batch *b = segc_loader_next(l, err, sizeof err);
        if (!b) fail_msg("%s", err);
        assert_true(b->c == 2 && b->h == 128 && b->w == 112 && b->label_h == 128);
        for (int i = 0; i < b->n; i++, n++) {
            const uint8_t *lab = (const uint8_t *)b->labels + (size_t)i * 128 * 112;
            bool fg = false;
            for (int q = 0; q < 128 * 112; q++) {
                assert_true(lab[q] <= 4);
                fg |= lab[q] > 0;
            }
            with_fg += fg;
        }
        for (int64_t q = 0; q < (int64_t)b->n * 2 * 128 * 112; q++) assert_true(isfinite(b->images[q]));
    }
    /* slices without tumour exist among the brain slices: those fall back to uniform crops */
    print_message("  brats: %d of %d patches with tumour\n", with_fg, n);
    assert_true(with_fg >= n / 2);
    segc_loader_free(l);
    segc_dataset_close(ds);
}

int main(void) {
    const char *env = getenv("SEGC_DATA");
    snprintf(g_data, sizeof g_data, "%s", env && *env ? env : "../shared/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fg_crop),   cmocka_unit_test(test_mirror_and_determinism),
        cmocka_unit_test(test_noise_variance), cmocka_unit_test(test_intensity),
        cmocka_unit_test(test_spatial),   cmocka_unit_test(test_validation_and_loader),
        cmocka_unit_test(test_loader),    cmocka_unit_test(test_folds_and_volumes),
        cmocka_unit_test(test_bad_volumes), cmocka_unit_test(test_label_writer),
        cmocka_unit_test(test_brats_loader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
