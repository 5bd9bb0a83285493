/* Configured losses (losses.h): focal, Lovasz-softmax and OHEM parity with
 * mmseg-semantics references (tests/fixtures/gen_losses.py), whole configured
 * heads (resize + sampler + weighted terms), finite differences, thread-count
 * independence, class_weight auto on a synthetic split, sums of parts,
 * validation loss == training loss in eval mode, the config section and its
 * error messages. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/config.h"
#include "segc/image_io.h"
#include "segc/losses_train.h"
#include "segc/model.h"
#include "segc/ops.h"
#include "segc/predict.h"
#include "segc/task.h"
#include "segc/trainer.h"

/* class_weight list of a case as floats (NULL when empty) */
static float *case_weights(segc_ctx *ctx, const segc_st_file *f, const char *cas, int *n) {
    cJSON *j = cJSON_Parse(segc_st_meta(f, cas)), *cw = j ? cJSON_GetObjectItem(j, "class_weight") : NULL;
    int k = cJSON_IsArray(cw) ? cJSON_GetArraySize(cw) : 0;
    float *w = k ? segc_arena_alloc(&ctx->arena, (size_t)k * sizeof(float)) : NULL;
    for (int i = 0; i < k; i++) w[i] = (float)cJSON_GetArrayItem(cw, i)->valuedouble;
    cJSON_Delete(j);
    if (n) *n = k;
    return w;
}

static segc_tensor *fx_focal(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_sigmoid_focal(ctx, ins[0], ins[1], (float)fx_param_double(f, cas, "gamma", 2),
                              (float)fx_param_double(f, cas, "alpha", 0.5), case_weights(ctx, f, cas, NULL), 255);
}

static segc_tensor *fx_lovasz(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_lovasz_softmax(ctx, ins[0], ins[1], fx_param_int(f, cas, "per_image", 0),
                               fx_param_int(f, cas, "all_classes", 0), case_weights(ctx, f, cas, NULL), 255);
}

/* a case's metadata ({"ce": {...}, "dice": {...}, "ohem": {thresh, min_kept}}) as a loss config,
 * through the config parser */
static void cfg_from_json(const char *js, segc_loss_cfg *c) {
    segc_loss_cfg_defaults(c);
    cJSON *j = cJSON_Parse(js);
    assert_non_null(j);
    char err[512], path[128], vals[SEGC_LOSS_MAX_CLASSES][40];
    const char *items[SEGC_LOSS_MAX_CLASSES];
    for (cJSON *t = j->child; t; t = t->next) {
        bool ohem = !strcmp(t->string, "ohem");
        snprintf(path, sizeof path, ohem ? "sampler" : "decode.%s", t->string);
        if (!t->child && !segc_loss_cfg_set(c, path, NULL, 0, err, sizeof err)) fail_msg("%s: %s", path, err);
        for (cJSON *k = t->child; k; k = k->next) {
            snprintf(path, sizeof path, ohem ? "sampler.%s" : "decode.%s.%s", ohem ? k->string : t->string, k->string);
            int n = -1;
            if (cJSON_IsArray(k)) {
                n = 0;
                for (cJSON *v = k->child; v; v = v->next, n++) snprintf(vals[n], sizeof vals[n], "%.17g", v->valuedouble);
            } else if (cJSON_IsNumber(k)) snprintf(vals[0], sizeof vals[0], "%.17g", k->valuedouble);
            else if (cJSON_IsBool(k)) snprintf(vals[0], sizeof vals[0], "%s", cJSON_IsTrue(k) ? "true" : "false");
            else if (cJSON_IsNull(k)) snprintf(vals[0], sizeof vals[0], "null");
            else snprintf(vals[0], sizeof vals[0], "%s", k->valuestring);
            for (int i = 0; i < (n < 0 ? 1 : n); i++) items[i] = vals[i];
            if (!segc_loss_cfg_set(c, path, items, n, err, sizeof err)) fail_msg("%s: %s", path, err);
        }
    }
    cJSON_Delete(j);
}

static segc_tensor *fx_head(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    segc_loss_cfg *c = segc_arena_alloc(&ctx->arena, sizeof *c);
    cfg_from_json(segc_st_meta(f, cas), c);
    return segc_loss_head_fwd(ctx, c, &c->decode, ins[0], ins[1], 255, false, true);
}

static void test_parity(void **state) {
    segc_st_file *f = fx_open("losses.safetensors");
    /* float64 references; segc computes in f32 (bf16 logits: rounded inputs, f32 compute) */
    assert_int_equal(fx_check_all(f, "focal_", fx_focal, 1e-5, 1e-5), 6);
    assert_int_equal(fx_check_all(f, "lovasz_", fx_lovasz, 1e-5, 1e-5), 8);
    /* heads sum several terms through resize / CE / dice kernels (vectorised per ISA level): 1e-4,
     * 1.8e-5 seen at the development machine's level */
    assert_int_equal(fx_check_all(f, "head_", fx_head, 1e-4, 1e-4), 6);
    /* OHEM: the selected pixels exactly */
    int ran = 0;
    for (int i = 0;; i++) {
        char cas[32];
        snprintf(cas, sizeof cas, "ohem_%d", i);
        segc_ctx *ctx = segc_ctx_new(0);
        segc_tensor *x = fx_tensor(ctx, f, cas, "in0");
        if (!x) { segc_ctx_free(ctx); break; }
        segc_tensor *t = fx_tensor(ctx, f, cas, "in1"), *want = fx_tensor(ctx, f, cas, "out");
        double thresh = fx_param_double(f, cas, "thresh", -1);
        segc_tensor *pl = NULL;
        if (thresh < 0) {
            segc_ce_opts o = segc_ce_opts_default();
            o.ignore_index = 255;
            o.reduction = SEGC_LOSS_NONE;
            int k;
            float *w = case_weights(ctx, f, cas, &k);
            if (w) o.weight = segc_tensor_wrap(ctx, SEGC_F32, 1, SHAPE(k), w);
            pl = segc_cross_entropy(ctx, x, t, &o);
        }
        segc_tensor *got = segc_ohem_weights(ctx, x, t, pl, thresh, fx_param_int(f, cas, "min_kept", 1), 255);
        if (!got) fail_msg("%s: %s", cas, segc_last_error(ctx));
        int64_t kept = 0;
        for (int64_t q = 0; q < segc_numel(want); q++) kept += segc_f32(want)[q] > 0;
        print_message("  %s: %lld of %lld pixels kept\n", cas, (long long)kept, (long long)segc_numel(want));
        assert_memory_equal(got->data, want->data, segc_nbytes(want));
        segc_ctx_free(ctx);
        ran++;
    }
    assert_int_equal(ran, 4);
    segc_st_close(f);
}

/* ---- finite differences ---- */
typedef struct {
    int kind;   /* 0 focal, 1 lovasz, 2 head */
    segc_tensor *target;
    float gamma, alpha;
    const float *w;
    bool per_image, all;
    const segc_loss_cfg *cfg;
} gc_cfg;

static segc_tensor *gc_loss(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    const gc_cfg *c = user;
    if (c->kind == 0) return segc_sigmoid_focal(ctx, ins[0], c->target, c->gamma, c->alpha, c->w, 255);
    if (c->kind == 1) return segc_lovasz_softmax(ctx, ins[0], c->target, c->per_image, c->all, c->w, 255);
    return segc_loss_head_fwd(ctx, c->cfg, &c->cfg->decode, ins[0], c->target, 255, false, true);
}

static segc_tensor *rand_labels(segc_ctx *ctx, const int64_t *shape, int C, float frac) {
    segc_tensor *t = segc_tensor_new(ctx, SEGC_U8, 3, shape);
    for (int64_t i = 0; i < segc_numel(t); i++) {
        uint8_t v = (uint8_t)(segc_rng_u32(&ctx->rng) % (uint32_t)C);
        ((uint8_t *)t->data)[i] = segc_rng_uniform(&ctx->rng) < frac ? 255 : v;
    }
    return t;
}

static void test_gradcheck(void **state) {
    segc_ctx *ctx = segc_ctx_new(5);
    bool ok = true;
    gc_opts go = gc_default();
    go.atol = 1e-4;
    const float w4[4] = {0.5f, 1.5f, 1.0f, 2.0f};
    for (int g = 0; g < 3; g++) {
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 4, 3, 3), 1.5f, true);
        gc_cfg c = {.kind = 0, .target = rand_labels(ctx, SHAPE(2, 3, 3), 4, 0.2f), .gamma = g == 0 ? 2.f : g == 1 ? 1.5f : 0.f,
                    .alpha = 0.25f, .w = g == 1 ? w4 : NULL};
        char name[48];
        snprintf(name, sizeof name, "sigmoid_focal gamma %g", (double)c.gamma);
        ok &= gradcheck(ctx, name, gc_loss, &x, 1, &c, go);
    }
    /* Lovasz is piecewise linear in the sorted errors: a small step keeps the order */
    gc_opts gl = go;
    gl.eps = 1e-3;
    for (int v = 0; v < 3; v++) {
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 4, 3, 3), 1.5f, true);
        gc_cfg c = {.kind = 1, .target = rand_labels(ctx, SHAPE(2, 3, 3), 4, 0.2f), .per_image = v == 1, .all = v == 2,
                    .w = v == 2 ? w4 : NULL};
        char name[48];
        snprintf(name, sizeof name, "lovasz_softmax variant %d", v);
        ok &= gradcheck(ctx, name, gc_loss, &x, 1, &c, gl);
    }
    /* a whole head: resize, CE (weights, smoothing) + dice + focal, every valid pixel sampled (thresh 1) */
    segc_loss_cfg cfg;
    cfg_from_json("{\"ce\": {\"loss_weight\": 0.375, \"class_weight\": [0.5, 1.5, 1.0, 2.0], \"label_smoothing\": 0.1},"
                  " \"dice\": {\"loss_weight\": 1.125}, \"focal\": {\"loss_weight\": 2.0},"
                  " \"ohem\": {\"thresh\": 1.0, \"min_kept\": 2}}", &cfg);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 4, 3, 4), 1.5f, true);
    gc_cfg c = {.kind = 2, .target = rand_labels(ctx, SHAPE(2, 6, 7), 4, 0.2f), .cfg = &cfg};
    ok &= gradcheck(ctx, "configured head", gc_loss, &x, 1, &c, go);
    assert_true(ok);
    segc_ctx_free(ctx);
}

/* Results do not depend on the thread count (bitwise). */
static void test_threads(void **state) {
    segc_loss_cfg cfg;
    cfg_from_json("{\"ce\": {\"class_weight\": [0.5, 1.5, 1.0, 2.0, 1.0]}, \"lovasz\": {}, \"focal\": {},"
                  " \"ohem\": {\"thresh\": 0.7, \"min_kept\": 500}}", &cfg);
    float loss[2], *grad[2];
    for (int r = 0; r < 2; r++) {
        segc_ctx *ctx = segc_ctx_new(3);
        segc_set_num_threads(ctx, r ? 4 : 1);
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 5, 40, 50), 2.f, true);
        segc_tensor *t = rand_labels(ctx, SHAPE(2, 80, 100), 5, 0.1f);
        segc_tensor *l = segc_loss_head_fwd(ctx, &cfg, &cfg.decode, x, t, 255, false, true);
        if (!l || !segc_backward(ctx, l)) fail_msg("%s", segc_last_error(ctx));
        loss[r] = segc_f32(l)[0];
        grad[r] = malloc((size_t)segc_numel(x) * sizeof(float));
        memcpy(grad[r], x->grad, (size_t)segc_numel(x) * sizeof(float));
        segc_ctx_free(ctx);
    }
    assert_memory_equal(&loss[0], &loss[1], sizeof(float));
    assert_memory_equal(grad[0], grad[1], 2 * 5 * 40 * 50 * sizeof(float));
    free(grad[0]), free(grad[1]);
}

/* CE x 0.375 + Dice x 1.125 == 0.375 CE + 1.125 Dice, values and gradients */
static void test_sum_of_parts(void **state) {
    segc_loss_cfg both, ce, dice;
    cfg_from_json("{\"ce\": {\"loss_weight\": 0.375, \"avg_non_ignore\": true}, \"dice\": {\"loss_weight\": 1.125}}", &both);
    cfg_from_json("{\"ce\": {\"avg_non_ignore\": true}}", &ce);
    cfg_from_json("{\"dice\": {}}", &dice);
    segc_ctx *ctx = segc_ctx_new(9);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 6, 8, 10), 2.f, true), *t = rand_labels(ctx, SHAPE(2, 16, 20), 6, 0.1f);
    const int64_t n = segc_numel(x);
    float v[3], *g[3];
    const segc_loss_cfg *cs[3] = {&both, &ce, &dice};
    for (int i = 0; i < 3; i++) {
        x->grad = NULL;
        ctx->tape = NULL;
        segc_tensor *l = segc_loss_head_fwd(ctx, cs[i], &cs[i]->decode, x, t, 255, false, true);
        if (!l || !segc_backward(ctx, l)) fail_msg("%s", segc_last_error(ctx));
        v[i] = segc_f32(l)[0];
        g[i] = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof(float));
        memcpy(g[i], x->grad, (size_t)n * sizeof(float));
    }
    print_message("  sum %.7f = 0.375 x %.7f + 1.125 x %.7f\n", (double)v[0], (double)v[1], (double)v[2]);
    assert_true(fabs(v[0] - (0.375 * v[1] + 1.125 * v[2])) < 1e-6 * fabs(v[0]));
    double err = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs(g[0][i] - (0.375 * g[1][i] + 1.125 * g[2][i])));
        scale = fmax(scale, fabs(g[0][i]));
    }
    assert_true(err <= 1e-6 * scale);
    /* the plain-CE fast path (fused resize + CE) equals the general path: label smoothing 0 vs a tiny one */
    segc_loss_cfg plain;
    cfg_from_json("{\"ce\": {}}", &plain);
    segc_tensor *a = segc_loss_head_fwd(ctx, &plain, &plain.decode, x, t, 255, false, true);
    plain.sampler.on = true;   /* forces the general path (every pixel kept) */
    plain.sampler.thresh = 1.0;
    plain.sampler.min_kept = 1;
    segc_tensor *b = segc_loss_head_fwd(ctx, &plain, &plain.decode, x, t, 255, false, true);
    assert_true(a && b);
    assert_true(fabs(segc_f32(a)[0] - segc_f32(b)[0]) < 1e-5 * segc_f32(b)[0]);
    segc_ctx_free(ctx);
}

/* ---- class_weight: auto ---- */
static void write_png(const char *path, int h, int w, int c, const uint8_t *px) {
    segc_image im = {h, w, c, SEGC_U8, (void *)px};
    char err[256];
    if (!segc_png_write(path, &im, NULL, 0, err, sizeof err)) fail_msg("%s", err);
}

static void test_class_weight_auto(void **state) {
    /* the rules on known counts */
    const int64_t hist[3] = {600, 300, 100}, pp[3] = {1000, 1000, 200};
    double w[3];
    char err[512];
    assert_true(segc_loss_auto_weights("enet", hist, pp, 3, w, err, sizeof err));
    for (int k = 0; k < 3; k++) assert_true(fabs(w[k] - 1 / log(1.02 + hist[k] / 1000.0)) < 1e-12);
    assert_true(segc_loss_auto_weights("median_freq", hist, pp, 3, w, err, sizeof err));
    /* f = 0.6, 0.3, 0.5 -> median 0.5 */
    assert_true(fabs(w[0] - 0.5 / 0.6) < 1e-12 && fabs(w[1] - 0.5 / 0.3) < 1e-12 && fabs(w[2] - 1.0) < 1e-12);
    EXPECT_FAIL(segc_loss_auto_weights("inverse", hist, pp, 3, w, err, sizeof err), err, "enet or median_freq", "inverse");

    /* a synthetic split: 3 images of 8x10 with known class pixels (3 classes + ignored pixels) */
    char root[] = "/tmp/segc_losses_XXXXXX", p[512];
    assert_non_null(mkdtemp(root));
    snprintf(p, sizeof p, "%s/train", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train/images", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train/masks", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/classes.txt", root);
    FILE *cf = fopen(p, "w");
    fputs("road\ncar\nsign\n", cf);
    fclose(cf);
    /* image i: counts[i][k] pixels of class k, the rest (80 - sum) ignored */
    const int counts[3][3] = {{50, 20, 0}, {40, 30, 10}, {70, 0, 0}};
    int64_t want_h[3] = {0}, want_pp[3] = {0};
    uint8_t img[80 * 3], lab[80];
    memset(img, 100, sizeof img);
    for (int i = 0; i < 3; i++) {
        int q = 0;
        for (int k = 0; k < 3; k++)
            for (int j = 0; j < counts[i][k]; j++) lab[q++] = (uint8_t)k;
        while (q < 80) lab[q++] = 255;
        int tot = counts[i][0] + counts[i][1] + counts[i][2];
        for (int k = 0; k < 3; k++) {
            want_h[k] += counts[i][k];
            if (counts[i][k]) want_pp[k] += tot;
        }
        snprintf(p, sizeof p, "%s/train/images/im%d.png", root, i);
        write_png(p, 8, 10, 3, img);
        snprintf(p, sizeof p, "%s/train/masks/im%d.png", root, i);
        write_png(p, 8, 10, 1, lab);
    }
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    segc_dataset *ds = segc_dataset_open("folder", root, "train", &o, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    int64_t h[3], pr[3];
    assert_true(segc_loss_split_histogram(ds, 3, h, pr, err, sizeof err));
    for (int k = 0; k < 3; k++) assert_true(h[k] == want_h[k] && pr[k] == want_pp[k]);
    /* resolve: fills the auto terms, writes class_weights.json */
    segc_config c;
    segc_config_defaults(&c);
    assert_true(segc_config_load_string(&c, "loss:\n  decode:\n    ce: {class_weight: auto}\n    dice: {}\n"
                                        "  class_weight_rule: median_freq\n", "test", err, sizeof err));
    assert_true(segc_loss_cfg_needs_auto(&c.loss));
    assert_true(segc_loss_resolve_auto(&c.loss, ds, 3, root, NULL, err, sizeof err));
    assert_false(segc_loss_cfg_needs_auto(&c.loss));
    /* f = 160/220, 50/150, 10/80: the median is class 1's */
    const segc_loss_term *ce = &c.loss.decode.terms[SEGC_LOSS_CE];
    assert_int_equal(ce->n_class_weight, 3);
    assert_true(want_h[0] == 160 && want_pp[0] == 220 && want_pp[1] == 150 && want_pp[2] == 80);
    const double f[3] = {160.0 / 220, 50.0 / 150, 10.0 / 80};
    for (int k = 0; k < 3; k++) assert_true(fabs(ce->class_weight[k] - f[1] / f[k]) < 1e-12);
    assert_int_equal(c.loss.decode.terms[SEGC_LOSS_DICE].n_class_weight, 0);
    snprintf(p, sizeof p, "%s/class_weights.json", root);
    assert_int_equal(access(p, R_OK), 0);
    /* the resolved section saves the values and loads back to the same */
    char *y = segc_config_to_yaml(&c);
    segc_config back;
    segc_config_defaults(&back);
    assert_true(segc_config_load_string(&back, y, "resolved", err, sizeof err));
    char diff[256];
    assert_int_equal(segc_config_diff(&c, &back, diff, sizeof diff), 0);
    free(y);
    segc_dataset_close(ds);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

/* data.holdout: a contiguous run of train held out as split "holdout" (the selection split of the CamVid ablation) */
static void test_holdout(void **state) {
    char root[] = "/tmp/segc_holdout_XXXXXX", p[512], err[512];
    assert_non_null(mkdtemp(root));
    snprintf(p, sizeof p, "%s/train", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train/images", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/train/masks", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/classes.txt", root);
    FILE *cf = fopen(p, "w");
    fputs("a\nb\n", cf);
    fclose(cf);
    uint8_t img[4 * 4 * 3] = {0}, lab[16] = {0};
    for (int i = 0; i < 10; i++) {
        snprintf(p, sizeof p, "%s/train/images/f%02d.png", root, i);
        write_png(p, 4, 4, 3, img);
        snprintf(p, sizeof p, "%s/train/masks/f%02d.png", root, i);
        write_png(p, 4, 4, 1, lab);
    }
    segc_config c;
    segc_config_defaults(&c);
    snprintf(c.data.dataset, sizeof c.data.dataset, "folder");
    snprintf(c.data.root, sizeof c.data.root, "%s", root);
    assert_true(segc_config_override(&c, "data.holdout=0.2", err, sizeof err));
    assert_true(segc_config_override(&c, "data.holdout_fold=1", err, sizeof err));
    assert_true(segc_config_finish(&c, err, sizeof err));
    segc_dataset *tr = segc_config_open_dataset(&c, NULL, err, sizeof err), *ho = segc_config_open_dataset(&c, "holdout", err, sizeof err);
    if (!tr || !ho) fail_msg("%s", err);
    assert_int_equal(segc_dataset_len(tr), 8);
    assert_int_equal(segc_dataset_len(ho), 2);
    assert_non_null(strstr(segc_dataset_image_path(ho, 0), "f02.png"));
    assert_non_null(strstr(segc_dataset_image_path(ho, 1), "f03.png"));
    assert_non_null(strstr(segc_dataset_image_path(tr, 2), "f04.png"));
    segc_dataset_close(tr);
    segc_dataset_close(ho);
    assert_true(segc_config_override(&c, "data.holdout_fold=5", err, sizeof err));
    EXPECT_FAIL(segc_config_open_dataset(&c, "holdout", err, sizeof err) != NULL, err, "data.holdout", "fold below 5");
    EXPECT_FAIL(segc_config_override(&c, "data.holdout=0.7", err, sizeof err) && segc_config_finish(&c, err, sizeof err),
                err, "data.holdout", "[0, 0.5]");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

/* ---- validation loss == training loss on the same batch in eval mode ---- */
static void test_val_loss(void **state) {
    char err[512];
    segc_config c;
    segc_config_defaults(&c);
    assert_true(segc_config_load_string(&c, "model: {type: segformer, variant: b0, hidden: [8, 16, 24, 32], "
                                        "depths: [1, 1, 1, 1], heads: [1, 1, 1, 1], decoder_hidden: 16}\n"
                                        "loss: {decode: {ce: {loss_weight: 0.5, class_weight: [1, 2, 0.5, 1]}, "
                                        "dice: {loss_weight: 1.5}}}\n", "test", err, sizeof err));
    segc_model_spec s = segc_config_model_spec(&c, 4, 3);
    segc_model *m = segc_model_new(&s, err, sizeof err);
    if (!m) fail_msg("%s", err);
    segc_model_init(m, 3);
    assert_non_null(m->loss);
    segc_ctx *ctx = segc_ctx_new(1), *work = segc_ctx_new(0);
    const int N = 2, H = 32, W = 40;
    segc_tensor *x = t_randn(ctx, 4, SHAPE(N, 3, H, W), 1.f, false);
    segc_tensor *lab = rand_labels(ctx, SHAPE(N, H, W), 4, 0.1f);
    /* the training loss with ctx in eval mode */
    ctx->training = false;
    bool ge = segc_set_grad_enabled(ctx, false);
    segc_model_out out;
    segc_targets tg = {.labels = lab, .ignore_index = 255};
    assert_true(segc_model_forward(ctx, m, x, &out));
    segc_tensor *l = segc_model_loss(ctx, m, &out, &tg);
    if (!l) fail_msg("%s", segc_last_error(ctx));
    const double want = segc_f32(l)[0];
    segc_set_grad_enabled(ctx, ge);
    ctx->training = true;
    /* the evaluation loop on that batch: whole mode (the prediction's forward), then slide (one more forward) */
    for (int mode = 0; mode < 2; mode++) {
        segc_eval_spec es = {.task = SEGC_TASK_SEGMENTATION, .num_classes = 4, .ignore_index = 255};
        snprintf(es.primary, sizeof es.primary, "val_loss");
        segc_evaluator *ev = segc_evaluator_new(&es, err, sizeof err);
        if (!ev) fail_msg("%s", err);
        int ih[2] = {H, H}, iw[2] = {W, W};
        int64_t idx[2] = {0, 1};
        segc_batch b = {.n = N, .c = 3, .h = H, .w = W, .images = segc_f32(x), .label_h = H, .label_w = W,
                        .label_dtype = SEGC_U8, .labels = lab->data, .img_h = ih, .img_w = iw, .label_hs = ih,
                        .label_ws = iw, .index = idx};
        segc_eval_opts eo;
        segc_eval_opts_default(&eo);
        eo.model = m;
        eo.loss = true;
        if (mode) {
            eo.infer.mode = SEGC_INFER_SLIDE;
            eo.infer.crop_h = eo.infer.crop_w = 32;
            eo.infer.stride_h = eo.infer.stride_w = 16;
        }
        if (!segc_eval_batch(ctx, work, segc_model_logits_fn, m, &b, &eo, NULL, ev, NULL))
            fail_msg("%s", segc_last_error(ctx));
        segc_eval_result r;
        assert_true(segc_evaluator_result(ev, &r, err, sizeof err));
        print_message("  mode %d: validation loss %.7f, training loss in eval mode %.7f\n", mode, r.primary_value, want);
        assert_string_equal(r.primary, "val_loss");
        assert_true(fabs(r.primary_value - want) <= 1e-6 * want);
        assert_true(segc_metric_lower_is_better(r.primary));
        char *js = segc_eval_result_json(&r, NULL);
        assert_non_null(strstr(js, "\"val_loss\":"));
        free(js);
        segc_eval_result_free(&r);
        segc_evaluator_free(ev);
    }
    segc_ctx_free(work);
    segc_ctx_free(ctx);
    segc_model_free(m);
    /* train.best_metric: val_loss is accepted */
    segc_config_defaults(&c);
    assert_true(segc_config_override(&c, "train.best_metric=val_loss", err, sizeof err));
    assert_true(segc_config_finish(&c, err, sizeof err));
}

/* ---- families: the loss hook builds the configured heads (DeepLabV3+'s aux head, UNet2D's deep supervision) ---- */
static double head_value(segc_ctx *ctx, const segc_loss_cfg *c, const segc_loss_head *h, segc_tensor *x, segc_tensor *t,
                         bool sampler) {
    segc_tensor *l = segc_loss_head_fwd(ctx, c, h, x, t, 255, false, sampler);
    if (!l) fail_msg("%s", segc_last_error(ctx));
    return segc_f32(l)[0];
}

static void test_families(void **state) {
    static const char *const yaml[2] = {
        "model: {type: deeplabv3plus, variant: r18, stem_channels: 8, base_channels: 2, channels: 8, c1_channels: 4, "
        "aux_channels: 4, dropout: 0}\n"
        "loss: {decode: {ce: {loss_weight: 0.375}, dice: {loss_weight: 1.125}}, aux: {ce: {loss_weight: 0.4}, "
        "lovasz: {loss_weight: 0.1}}, sampler: {thresh: 0.8, min_kept: 50}}\n",
        "model: {type: unet2d, variant: \"\", filters: [4, 8, 16], deep_supr_num: 1}\n"
        "loss: {decode: {ce: {avg_non_ignore: true}, dice: {}}, sampler: {thresh: 0.8, min_kept: 50}}\n"};
    for (int fam = 0; fam < 2; fam++) {
        char err[512];
        segc_config c;
        segc_config_defaults(&c);
        if (!segc_config_load_string(&c, yaml[fam], "test", err, sizeof err)) fail_msg("%s", err);
        segc_model_spec s = segc_config_model_spec(&c, 4, 3);
        segc_model *m = segc_model_new(&s, err, sizeof err);
        if (!m) fail_msg("%s", err);
        segc_model_init(m, 5);
        segc_ctx *ctx = segc_ctx_new(2);
        ctx->training = true;
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, 32, 32), 1.f, false), *t = rand_labels(ctx, SHAPE(2, 32, 32), 4, 0.1f);
        segc_model_out out;
        segc_targets tg = {.labels = t, .ignore_index = 255};
        assert_true(segc_model_forward(ctx, m, x, &out));
        assert_int_equal(out.n_maps, 2);
        segc_tensor *l = segc_model_loss(ctx, m, &out, &tg);
        if (!l) fail_msg("%s", segc_last_error(ctx));
        const segc_loss_cfg *lc = m->loss;
        double want = fam == 0 ? head_value(ctx, lc, &lc->decode, out.maps[0], t, true) +
                                     head_value(ctx, lc, &lc->aux, out.maps[1], t, false)
                               : (1.0 * head_value(ctx, lc, &lc->decode, out.maps[0], t, true) +
                                  0.5 * head_value(ctx, lc, &lc->decode, out.maps[1], t, false)) / 1.5;
        print_message("  %s: configured loss %.7f, heads by hand %.7f\n", m->family->type, (double)segc_f32(l)[0], want);
        assert_true(fabs(segc_f32(l)[0] - want) <= 1e-6 * fabs(want));
        assert_true(segc_backward(ctx, l));
        segc_ctx_free(ctx);
        segc_model_free(m);
    }
}

/* ---- the config section ---- */
static void test_config(void **state) {
    char err[512];
    segc_config c;
    segc_config_defaults(&c);
    assert_false(segc_loss_cfg_given(&c.loss));
    assert_true(segc_config_load_string(&c,
        "loss:\n"
        "  decode:\n"
        "    CrossEntropyLoss: {loss_weight: 0.375, avg_non_ignore: true, class_weight: [1, 2, 3]}\n"
        "    dice: {loss_weight: 1.125, smooth: 0.5, exponent: 1}\n"
        "  aux:\n"
        "    ce: {loss_weight: 0.4}\n"
        "  sampler: {type: ohem, thresh: 0.7, min_kept: 1000}\n", "test.yaml", err, sizeof err));
    const segc_loss_term *ce = &c.loss.decode.terms[SEGC_LOSS_CE], *di = &c.loss.decode.terms[SEGC_LOSS_DICE];
    assert_true(c.loss.decode.given && c.loss.aux.given && ce->on && di->on);
    assert_true(ce->loss_weight == 0.375 && ce->avg_non_ignore && ce->n_class_weight == 3 && ce->class_weight[2] == 3);
    assert_true(di->smooth == 0.5 && di->exponent == 1 && c.loss.aux.terms[SEGC_LOSS_CE].loss_weight == 0.4);
    assert_true(c.loss.sampler.on && c.loss.sampler.thresh == 0.7 && c.loss.sampler.min_kept == 1000);
    /* overrides: a new term, a term switched off, the sampler's thresh to none */
    assert_true(segc_config_override(&c, "loss.decode.lovasz.per_image=true", err, sizeof err));
    assert_true(segc_config_override(&c, "loss.decode.dice=null", err, sizeof err));
    assert_true(segc_config_override(&c, "loss.sampler.thresh=null", err, sizeof err));
    assert_true(c.loss.decode.terms[SEGC_LOSS_LOVASZ].on && c.loss.decode.terms[SEGC_LOSS_LOVASZ].per_image);
    assert_false(c.loss.decode.terms[SEGC_LOSS_DICE].on);
    assert_true(c.loss.sampler.thresh < 0);
    assert_true(segc_config_finish(&c, err, sizeof err));
    /* round trip */
    char *y = segc_config_to_yaml(&c), diff[256];
    segc_config back;
    segc_config_defaults(&back);
    if (!segc_config_load_string(&back, y, "resolved", err, sizeof err)) fail_msg("%s\n%s", err, y);
    assert_int_equal(segc_config_diff(&c, &back, diff, sizeof diff), 0);
    free(y);
    /* the shipped candidate recipe */
    segc_config_defaults(&c);
    if (!segc_config_load(&c, "configs/segformer/camvid_cpu_best.yaml", err, sizeof err) ||
        !segc_config_finish(&c, err, sizeof err))
        fail_msg("%s", err);
    assert_true(c.loss.decode.terms[SEGC_LOSS_CE].class_weight_auto && c.loss.decode.terms[SEGC_LOSS_LOVASZ].on);
    /* a spec without the loss section keeps the family's loss */
    segc_config plain;
    segc_config_defaults(&plain);
    assert_null(segc_config_model_spec(&plain, 3, 3).loss);

    /* ---- bad input: one clear line each ---- */
    segc_config_defaults(&c);
    EXPECT_FAIL(segc_config_override(&c, "loss.decode.boundary.loss_weight=1", err, sizeof err), err,
                "unknown loss type 'boundary'", "ce|dice|focal|lovasz");
    EXPECT_FAIL(segc_config_override(&c, "loss.decode.ce.loss_weight=-1", err, sizeof err), err,
                "loss.decode.ce.loss_weight", ">= 0", "-1");
    EXPECT_FAIL(segc_config_override(&c, "loss.decode.ce.class_weight=[1, -0.5]", err, sizeof err), err,
                "loss.decode.ce.class_weight[1]", ">= 0", "-0.5");
    EXPECT_FAIL(segc_config_override(&c, "loss.decode.dice.smoth=1", err, sizeof err), err, "loss.decode.dice.smoth",
                "did you mean 'smooth'");
    EXPECT_FAIL(segc_config_override(&c, "loss.decod.ce.loss_weight=1", err, sizeof err), err, "loss.decod",
                "did you mean 'loss.decode'");
    EXPECT_FAIL(segc_config_load_string(&c, "loss:\n  decode:\n    ce: {class_weight: autos}\n", "bad.yaml", err,
                                        sizeof err), err, "bad.yaml:3", "list of per-class weights or auto");
    /* OHEM min_kept larger than a crop's pixels (data.crop_size 360x480) */
    segc_config_defaults(&c);
    assert_true(segc_config_override(&c, "loss.decode.ce={}", err, sizeof err));
    assert_true(segc_config_override(&c, "loss.sampler.min_kept=200000", err, sizeof err));
    EXPECT_FAIL(segc_config_finish(&c, err, sizeof err), err, "loss.sampler.min_kept", "200000", "172800");
    /* ... and than a batch's pixels at run time */
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, 4, 5), 1.f, false), *t = rand_labels(ctx, SHAPE(2, 4, 5), 3, 0);
    EXPECT_ERR(ctx, segc_ohem_weights(ctx, x, t, NULL, 0.7, 21, 255), "loss.sampler.min_kept", "21", "40");
    /* class_weight of the wrong length: both lengths named, at model build */
    segc_config_defaults(&c);
    assert_true(segc_config_override(&c, "loss.decode.ce.class_weight=[1, 2, 3, 4]", err, sizeof err));
    assert_true(segc_config_finish(&c, err, sizeof err));   /* classes not known yet */
    segc_model_spec s = segc_config_model_spec(&c, 5, 3);
    segc_model *m = segc_model_new(&s, err, sizeof err);
    EXPECT_FAIL(m != NULL, err, "loss.decode.ce.class_weight", "expected 5 entries", "found 4");
    segc_model_free(m);
    /* an aux head the family does not have */
    segc_config_defaults(&c);
    assert_true(segc_config_override(&c, "loss.aux.ce={}", err, sizeof err));
    s = segc_config_model_spec(&c, 5, 3);
    m = segc_model_new(&s, err, sizeof err);
    EXPECT_FAIL(m != NULL, err, "loss.aux", "segformer has no auxiliary head");
    segc_model_free(m);
    /* the op-level checks */
    EXPECT_ERR(ctx, segc_sigmoid_focal(ctx, x, t, -1.f, 0.5f, NULL, 255), "sigmoid_focal", "gamma");
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity),      cmocka_unit_test(test_gradcheck), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_sum_of_parts), cmocka_unit_test(test_class_weight_auto),
        cmocka_unit_test(test_holdout), cmocka_unit_test(test_val_loss),
        cmocka_unit_test(test_families),    cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
