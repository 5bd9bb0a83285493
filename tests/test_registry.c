/* The model registry: every family is listed (segc models), built from a
 * configuration with its defaults, runs forward + loss + backward through
 * the generic calls, reports its keys; bad types / keys / checkpoints of
 * another family get one clear line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/trainer.h"

static char segc_bin[1024];

static segc_model *model_from_config(const char *type, int classes, int channels, const char *const *ov, int n_ov) {
    segc_config c;
    char err[512], tov[96];
    segc_config_defaults(&c);
    snprintf(tov, sizeof tov, "model.type=%s", type);
    if (!segc_config_override(&c, tov, err, sizeof err)) fail_msg("%s", err);
    if (strcmp(type, "segformer") != 0 && !segc_config_override(&c, "model.variant=", err, sizeof err)) fail_msg("%s", err);
    for (int i = 0; i < n_ov; i++)
        if (!segc_config_override(&c, ov[i], err, sizeof err)) fail_msg("%s", err);
    if (!segc_config_finish(&c, err, sizeof err)) fail_msg("%s: %s", type, err);
    segc_model_spec s = segc_config_model_spec(&c, classes, channels);
    segc_model *m = segc_model_new(&s, err, sizeof err);
    if (!m) fail_msg("%s: %s", type, err);
    return m;
}

static void test_every_family_trains_and_predicts(void **state) {
    assert_true(segc_model_n_families() >= 2);
    for (int f = 0; f < segc_model_n_families(); f++) {
        const segc_model_family *fam = segc_model_family_at(f);
        assert_ptr_equal(segc_model_family_find(fam->type), fam);
        assert_non_null(fam->summary);
        for (int k = 0; k < fam->n_keys; k++) {   /* every default passes its own check */
            char err[256];
            if (!segc_model_key_check(&fam->keys[k], fam->keys[k].dflt, err, sizeof err)) fail_msg("%s: %s", fam->type, err);
        }
        if (fam->task != SEGC_TASK_SEGMENTATION) continue;
        segc_model *m = model_from_config(fam->type, 5, 2, NULL, 0);
        assert_true(segc_params_count(&m->params, true) > 0);
        segc_model_init(m, 7);
        segc_ctx *ctx = segc_ctx_new(1);
        ctx->training = true;
        segc_ctx_step_begin(ctx);
        segc_tensor *x = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){2, 2, 64, 64});
        segc_rng r;
        segc_rng_init(&r, 3);
        segc_rng_fill_normal(&r, segc_f32(x), 2 * 2 * 64 * 64, 0, 1);
        segc_tensor *lab = segc_tensor_new(ctx, SEGC_U8, 3, (int64_t[]){2, 64, 64});
        for (int i = 0; i < 2 * 64 * 64; i++) ((uint8_t *)lab->data)[i] = (uint8_t)(i % 7 == 0 ? 255 : (i / 64) % 5);
        segc_model_out out;
        if (!segc_model_forward(ctx, m, x, &out)) fail_msg("%s: %s", fam->type, segc_last_error(ctx));
        assert_true(out.n_maps >= 1 && out.maps[0]->shape[0] == 2 && out.maps[0]->shape[1] == m->num_outputs);
        segc_targets t = {.labels = lab, .ignore_index = 255};
        segc_tensor *loss = segc_model_loss(ctx, m, &out, &t);
        if (!loss) fail_msg("%s: %s", fam->type, segc_last_error(ctx));
        float lv = segc_f32(loss)[0];
        assert_true(isfinite(lv) && lv > 0);
        segc_params_zero_grad(&m->params);
        assert_true(segc_backward(ctx, loss));
        double g2 = 0;
        for (int64_t i = 0; i < m->params.total; i++) g2 += (double)m->params.grad[i] * m->params.grad[i];
        assert_true(isfinite(g2) && g2 > 0);
        /* inference: the main map only, labels through the family's postprocess */
        segc_ctx_step_begin(ctx);
        ctx->training = false;
        bool prev = segc_set_grad_enabled(ctx, false);
        x = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){1, 2, 64, 64});
        segc_rng_fill_normal(&r, segc_f32(x), 2 * 64 * 64, 0, 1);
        segc_tensor *lg = segc_model_logits_fn(ctx, m, x);
        if (!lg) fail_msg("%s: %s", fam->type, segc_last_error(ctx));
        assert_int_equal(lg->shape[1], m->num_outputs);
        segc_set_grad_enabled(ctx, prev);
        /* wrong channel count: one line naming the family and both counts */
        x = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){1, 3, 64, 64});
        assert_false(segc_model_forward(ctx, m, x, &out));
        assert_non_null(strstr(segc_last_error(ctx), fam->type));
        assert_non_null(strstr(segc_last_error(ctx), "[N, 2, H, W]"));
        segc_ctx_free(ctx);
        segc_model_free(m);
    }
}

/* one training step's loss and gradients (copied out) at 2 x C x S x S; detection: two boxes per image */
static float step_grads(segc_model *m, int C, int S, bool free_acts, float *grad) {
    segc_ctx *ctx = segc_ctx_new(5);
    ctx->training = true;
    ctx->free_activations = free_acts;
    segc_tensor *x = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){2, C, S, S});
    segc_rng r;
    segc_rng_init(&r, 3);
    segc_rng_fill_normal(&r, segc_f32(x), segc_numel(x), 0, 1);
    segc_tensor *lab = segc_tensor_new(ctx, SEGC_U8, 3, (int64_t[]){2, S, S});
    for (int64_t i = 0; i < segc_numel(lab); i++) ((uint8_t *)lab->data)[i] = (uint8_t)(i % 7 == 0 ? 255 : (i / S) % 5);
    static float bx[2][8];
    static int32_t bl[2][2] = {{0, 3}, {2, 4}};
    static const int nb[2] = {2, 2};
    for (int i = 0; i < 2; i++) {
        const float b[8] = {0.1f * S, 0.2f * S, 0.6f * S, 0.7f * S, 0.4f * S, 0.1f * S, 0.9f * S, 0.5f * S};
        memcpy(bx[i], b, sizeof b);
    }
    float *boxes[2] = {bx[0], bx[1]};
    int32_t *labels[2] = {bl[0], bl[1]};
    segc_targets t = m->family->task == SEGC_TASK_SEGMENTATION
                         ? (segc_targets){.labels = lab, .ignore_index = 255}
                         : (segc_targets){.n_images = 2, .n_boxes = nb, .boxes = boxes, .box_labels = labels,
                                          .img_h = S, .img_w = S};
    segc_model_out out;
    if (!segc_model_forward(ctx, m, x, &out)) fail_msg("%s: %s", m->family->type, segc_last_error(ctx));
    segc_tensor *loss = segc_model_loss(ctx, m, &out, &t);
    if (!loss) fail_msg("%s: %s", m->family->type, segc_last_error(ctx));
    float lv = segc_f32(loss)[0];
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, loss)) fail_msg("%s: %s", m->family->type, segc_last_error(ctx));
    memcpy(grad, m->params.grad, (size_t)m->params.total * sizeof(float));
    segc_ctx_free(ctx);
    return lv;
}

/* ctx->free_activations (the trainer's setting: activations released during backward, some
 * recomputed) changes no bit of any family's loss or gradients */
static void test_free_activations_change_nothing(void **state) {
    /* fresh and recycled memory arrive as NaN patterns: a read before write would show */
    setenv("SEGC_ARENA_POISON", "1", 1);
    for (int f = 0; f < segc_model_n_families(); f++) {
        const segc_model_family *fam = segc_model_family_at(f);
        const bool det = fam->task != SEGC_TASK_SEGMENTATION;
        const int C = det ? 3 : 2, S = det ? 300 : 128;
        segc_model *m = model_from_config(fam->type, 5, C, NULL, 0);
        segc_model_init(m, 7);
        float *init = malloc((size_t)m->params.total * sizeof(float));
        float *g0 = malloc((size_t)m->params.total * sizeof(float)), *g1 = malloc((size_t)m->params.total * sizeof(float));
        memcpy(init, m->params.data, (size_t)m->params.total * sizeof(float));
        float l0 = step_grads(m, C, S, false, g0);
        memcpy(m->params.data, init, (size_t)m->params.total * sizeof(float));   /* batch-norm statistics */
        float l1 = step_grads(m, C, S, true, g1);
        printf("  %s: loss %.6f kept, %.6f released\n", fam->type, l0, l1);
        if (l0 != l1 || memcmp(g0, g1, (size_t)m->params.total * sizeof(float)) != 0)
            fail_msg("%s: free_activations changed the loss or gradients", fam->type);
        assert_true(isfinite(l0));
        for (int64_t i = 0; i < m->params.total; i++)
            if (!isfinite(g0[i])) fail_msg("%s: gradient %lld not finite", fam->type, (long long)i);
        free(init), free(g0), free(g1);
        segc_model_free(m);
    }
    unsetenv("SEGC_ARENA_POISON");
}

/* model.channels_last: the families with a ResNet backbone run it on NHWC activations with the
 * NCHW run's loss and gradients within fp32 rounding; the others refuse the key */
static void test_channels_last_families(void **state) {
    int with = 0;
    for (int f = 0; f < segc_model_n_families(); f++) {
        const segc_model_family *fam = segc_model_family_at(f);
        bool has = false;
        for (int k = 0; k < fam->n_keys; k++) has |= !strcmp(fam->keys[k].name, "channels_last");
        if (!has) {
            segc_config c;
            char err[512], tov[96];
            segc_config_defaults(&c);
            snprintf(tov, sizeof tov, "model.type=%s", fam->type);
            bool ok = segc_config_override(&c, tov, err, sizeof err) &&
                      (!strcmp(fam->type, "segformer") || segc_config_override(&c, "model.variant=", err, sizeof err)) &&
                      segc_config_override(&c, "model.channels_last=true", err, sizeof err) &&
                      segc_config_finish(&c, err, sizeof err);
            if (ok) {
                segc_model_spec sp = segc_config_model_spec(&c, 5, 3);
                segc_model *m = segc_model_new(&sp, err, sizeof err);
                ok = m != NULL;
                segc_model_free(m);
            }
            assert_false(ok);
            printf("  %s: %s\n", fam->type, err);
            assert_non_null(strstr(err, "channels_last"));
            continue;
        }
        with++;
        const bool det = fam->task != SEGC_TASK_SEGMENTATION;
        const int C = det ? 3 : 2, S = det ? 300 : 128;
        const char *ov[2] = {"model.channels_last=false", "model.channels_last=true"};
        float loss[2], *g[2];
        int64_t n = 0;
        for (int cl = 0; cl < 2; cl++) {
            segc_model *m = model_from_config(fam->type, 5, C, &ov[cl], 1);
            segc_model_init(m, 7);
            n = m->params.total;
            g[cl] = malloc((size_t)n * sizeof(float));
            loss[cl] = step_grads(m, C, S, true, g[cl]);
            segc_model_free(m);
        }
        printf("  %s: loss %.7f NCHW, %.7f channels-last\n", fam->type, loss[0], loss[1]);
        assert_true(fabsf(loss[1] - loss[0]) <= 1e-5f * fabsf(loss[0]));
        /* the default-size nets at batch 2 (DeepLabV3+'s image-pool batch norm normalises 2 values)
         * amplify fp32 rounding in backward: ~5e-3 here; test_deeplab checks a small net to 1e-4 */
        assert_true(fx_close_norm("channels-last gradients vs NCHW", g[1], g[0], n, 0, 3e-2));
        free(g[0]), free(g[1]);
    }
    assert_true(with >= 2);   /* DeepLabV3+ and SSD */
}

static void test_segc_models_lists_every_family(void **state) {
    char cmd[1200], line[512], all[1 << 15] = "";
    snprintf(cmd, sizeof cmd, "%s models", segc_bin);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t used = 0;
    while (fgets(line, sizeof line, p) && used + strlen(line) < sizeof all) used += (size_t)snprintf(all + used, sizeof all - used, "%s", line);
    assert_int_equal(pclose(p), 0);
    snprintf(cmd, sizeof cmd, "%s train --keys", segc_bin);
    char keys[1 << 16] = "";
    p = popen(cmd, "r");
    assert_non_null(p);
    used = 0;
    while (fgets(line, sizeof line, p) && used + strlen(line) < sizeof keys) used += (size_t)snprintf(keys + used, sizeof keys - used, "%s", line);
    pclose(p);
    for (int f = 0; f < segc_model_n_families(); f++) {
        const segc_model_family *fam = segc_model_family_at(f);
        char want[96];
        snprintf(want, sizeof want, "model.type: %s", fam->type);
        if (!strstr(all, fam->type) || !strstr(keys, want)) fail_msg("%s missing from segc models / train --keys", fam->type);
        for (int k = 0; k < fam->n_keys; k++) {
            snprintf(want, sizeof want, "model.%s ", fam->keys[k].name);
            if (!strstr(all, want) || !strstr(keys, want)) fail_msg("%s missing from the listings", want);
        }
    }
}

static void test_checkpoint_of_another_family(void **state) {
    assert_true(segc_model_n_families() >= 2);
    const char *a = segc_model_family_at(0)->type, *b = segc_model_family_at(1)->type;
    segc_model *ma = model_from_config(a, 5, 2, NULL, 0), *mb = model_from_config(b, 5, 2, NULL, 0);
    segc_config c;
    segc_config_defaults(&c);
    snprintf(c.model.type, sizeof c.model.type, "%s", a);
    char *yaml = segc_config_to_yaml(&c), dir[] = "/tmp/segc_reg_XXXXXX", path[256], err[1024];
    assert_non_null(mkdtemp(dir));
    if (!segc_checkpoint_save_best(dir, &ma->params, 3, 0.5, yaml, err, sizeof err)) fail_msg("%s", err);
    snprintf(path, sizeof path, "%s/best.safetensors", dir);
    char type[64];
    assert_true(segc_checkpoint_model_type(path, type, sizeof type, err, sizeof err));
    assert_string_equal(type, a);
    assert_true(segc_model_load_checkpoint(ma, path, err, sizeof err));
    assert_false(segc_model_load_checkpoint(mb, path, err, sizeof err));
    char want[200];
    snprintf(want, sizeof want, "holds a %s model, but model.type is %s", a, b);
    if (!strstr(err, want)) fail_msg("unexpected message: %s", err);
    unlink(path);
    rmdir(dir);
    free(yaml);
    segc_model_free(ma);
    segc_model_free(mb);
}

static void test_spec_errors(void **state) {
    char err[512];
    segc_model_spec s = {"segformer", "b0", 5, 3, NULL, 0, NULL};
    segc_model_opt bad[2] = {{"depths", "[1, 1, 1]"}, {"heads", "[1, 1, 1, 1]"}};
    s.opts = bad;
    s.n_opts = 2;
    assert_null(segc_model_new(&s, err, sizeof err));
    assert_non_null(strstr(err, "model.depths: expected 4 entries"));
    s.n_opts = 0;
    s.num_classes = 0;
    assert_null(segc_model_new(&s, err, sizeof err));
    assert_non_null(strstr(err, "model.num_classes"));
    s.num_classes = 5;
    s.type = "nosuch";
    assert_null(segc_model_new(&s, err, sizeof err));
    assert_non_null(strstr(err, "model.type: unknown model family 'nosuch'"));
}

int main(int argc, char **argv) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", argv[0]);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    snprintf(segc_bin, sizeof segc_bin, "%.1000s/../segc", dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_family_trains_and_predicts),
        cmocka_unit_test(test_free_activations_change_nothing),
        cmocka_unit_test(test_channels_last_families),
        cmocka_unit_test(test_segc_models_lists_every_family),
        cmocka_unit_test(test_checkpoint_of_another_family),
        cmocka_unit_test(test_spec_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
