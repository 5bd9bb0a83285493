/* Whole-volume prediction on real brats-mini cases: every slice predicted
 * with Gaussian-weighted sliding windows, reassembled along the slice axis and
 * written as NIfTI. With a pointwise model (a 1x1 convolution) every window
 * agrees at every pixel, so the volume must equal the pointwise argmax of
 * each voxel exactly, and the file must carry the case's geometry. Missing
 * data fails. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/image_io.h"
#include "segc/ops.h"
#include "segc/predict.h"

static char g_data[1024];

static segc_tensor *pointwise_forward(segc_ctx *ctx, void *model, segc_tensor *x) {
    return segc_conv2d(ctx, x, (segc_tensor *)model, NULL, NULL);
}

static void test_volume_reassembly(void **state) {
    char root[1100], err[1024], out[] = "/tmp/segc_predvol_XXXXXX";
    snprintf(root, sizeof root, "%s/brats-mini", g_data);
    if (access(root, F_OK) != 0) fail_msg("%s not found: this test needs brats-mini (set SEGC_DATA)", root);
    segc_dataset *ds = segc_dataset_open("brats", root, "validation", NULL, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_int_equal(segc_dataset_n_volumes(ds), 2);
    assert_non_null(mkdtemp(out));
    /* 5 classes from the 2 channels: +flair, +t1c, -flair, -t1c, their sum */
    segc_tensor *w = segc_tensor_heap(SEGC_F32, 4, (int64_t[]){5, 2, 1, 1});
    const float wv[10] = {1, 0, 0, 1, -1, 0, 0, -1, 0.7f, 0.7f};
    memcpy(w->data, wv, sizeof wv);
    segc_eval_opts o;
    segc_eval_opts_default(&o);
    o.channels = 2;
    o.quiet = true;
    segc_pipeline none = {.n = 0};
    o.pipeline = &none;
    o.infer.mode = SEGC_INFER_SLIDE;
    o.infer.crop_h = o.infer.crop_w = 160;
    o.infer.stride_h = o.infer.stride_w = 80;
    o.infer.gaussian = true;
    segc_ctx *ctx = segc_ctx_new(0), *work = segc_ctx_new(0);
    int nv = 0;
    if (!segc_predict_volumes(ctx, work, pointwise_forward, w, ds, &o, out, &nv, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(nv, 2);
    for (int64_t v = 0; v < 2; v++) {
        segc_volume_info info;
        assert_true(segc_dataset_volume_info(ds, v, &info, err, sizeof err));
        assert_int_equal(info.slice_axis, 2);
        char path[2048];
        const char *base = strrchr(info.name, '/');
        snprintf(path, sizeof path, "%s/%s.nii.gz", out, base ? base + 1 : info.name);
        segc_volume got;
        if (!segc_nifti_read(path, &got, err, sizeof err)) fail_msg("%s", err);
        for (int k = 0; k < 3; k++) assert_int_equal(got.dim[k], info.dim[k]);
        /* geometry: the written affine is the source image's */
        int64_t d2[3];
        double a_src[4][4], a_out[4][4];
        assert_true(segc_nifti_read_geometry(info.image_path, d2, a_src, NULL, NULL, err, sizeof err));
        assert_true(segc_nifti_read_geometry(path, d2, a_out, NULL, NULL, err, sizeof err));
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) assert_true(fabs(a_src[r][c] - a_out[r][c]) < 1e-6);
        /* voxels: slice s of the axial axis is z = s, row = y, column = x */
        int64_t nx = info.dim[0], ny = info.dim[1], mismatched = 0, fg = 0;
        for (int64_t i = 0; i < info.n_samples; i++) {
            segc_sample smp;
            memset(&smp, 0, sizeof smp);
            assert_true(segc_dataset_load(ds, info.first_sample + i, &smp, err, sizeof err));
            int64_t vol;
            int s;
            assert_true(segc_dataset_sample_volume(ds, info.first_sample + i, &vol, &s));
            assert_int_equal(vol, v);
            const float *px = smp.img.data;
            for (int y = 0; y < smp.img.h; y++)
                for (int x = 0; x < smp.img.w; x++) {
                    const float *p = px + ((int64_t)y * smp.img.w + x) * 2;
                    int best = 0;
                    float bv = wv[0] * p[0] + wv[1] * p[1];
                    for (int k = 1; k < 5; k++) {
                        float l = wv[2 * k] * p[0] + wv[2 * k + 1] * p[1];
                        if (l > bv) bv = l, best = k;
                    }
                    float g = got.data[((int64_t)s * ny + y) * nx + x];
                    mismatched += g != (float)best;
                    fg += best != 0;
                }
            segc_sample_free(&smp);
        }
        assert_true(fg > 1000);
        if (mismatched) fail_msg("volume %lld: %lld voxels differ from the pointwise prediction", (long long)v, (long long)mismatched);
        segc_volume_free(&got);
        unlink(path);
    }
    rmdir(out);
    /* a 2-D dataset is refused with one line */
    segc_tensor_free(w);
    segc_ctx_free(ctx);
    segc_ctx_free(work);
    segc_dataset_close(ds);
}

int main(void) {
    const char *env = getenv("SEGC_DATA");
    snprintf(g_data, sizeof g_data, "%s", env && *env ? env : "../shared/data");
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_volume_reassembly)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
