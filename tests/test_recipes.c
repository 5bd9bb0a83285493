/* recipes: durations in ba/ep, recipe overlays and their errors, DecoupledSGDW,
 * EMA, SAM and MixUp against reference computations (gen_recipes.py),
 * accumulated vs full-batch gradients, grad_accum auto, bitwise resume with
 * EMA + SAM + MixUp + accumulation active, EMA weights in best.safetensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "common/train_check.h"
#include "segc/ops_conv.h"
#include "segc/ops_elementwise.h"
#include "segc/ops_loss.h"
#include "segc/recipes.h"
#include "segc/trainer.h"

/* ---- fixture access ---- */
static const float *fxf(const segc_st_file *f, const char *name, int64_t n) {
    const segc_st_entry *e = segc_st_get(f, name);
    if (!e) fail_msg("fixture tensor '%s' missing (make fixtures)", name);
    if ((int64_t)e->nbytes != n * 4) fail_msg("fixture tensor '%s': %zu bytes, expected %lld", name, e->nbytes, (long long)n * 4);
    return e->data;
}

static const char *const NAMES[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"};

/* ---- a tiny model family: conv3x3 3->4 + ReLU + conv1x1 4->3, cross-entropy (ignore 255) ---- */
static bool tiny_forward(segc_ctx *ctx, segc_model *m, segc_tensor *x, segc_model_out *out) {
    segc_params *p = &m->params;
    segc_conv_params c3 = segc_conv_params_default(), c1 = segc_conv_params_default();
    c3.pad[0] = c3.pad[1] = 1;
    segc_tensor *h = segc_relu(ctx, segc_conv2d(ctx, x, p->t[0], p->t[1], &c3));
    out->n_maps = 1;
    out->maps[0] = segc_conv2d(ctx, h, p->t[2], p->t[3], &c1);
    return out->maps[0] != NULL;
}

static segc_tensor *tiny_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t) {
    segc_ce_opts o = segc_ce_opts_default();
    o.ignore_index = t->ignore_index;
    return segc_cross_entropy(ctx, out->maps[0], t->labels, &o);
}

static const segc_model_family tiny_family = {.type = "tiny_test", .forward = tiny_forward, .loss = tiny_loss};

static segc_model *tiny_model(const segc_st_file *f) {
    segc_model *m = calloc(1, sizeof *m);
    m->family = &tiny_family;
    m->num_classes = m->num_outputs = 3;
    m->in_channels = 3;
    segc_params_init(&m->params);
    const int64_t shapes[4][4] = {{4, 3, 3, 3}, {4}, {3, 4, 1, 1}, {3}};
    const int nd[4] = {4, 1, 4, 1};
    for (int i = 0; i < 4; i++) assert_non_null(segc_params_add(&m->params, NAMES[i], nd[i], shapes[i], true));
    assert_true(segc_params_finalize(&m->params));
    char name[128];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "model/%s", NAMES[i]);
        int64_t n = segc_numel(m->params.t[i]);
        memcpy(m->params.data + m->params.offset[i], fxf(f, name, n), (size_t)n * 4);
    }
    return m;
}

static void tiny_free(segc_model *m) {
    segc_params_free(&m->params);
    free(m);
}

/* batch of 4 from the fixture (labels "y" or "y_ign") */
typedef struct { float img[4 * 3 * 36]; uint8_t lab[4 * 36]; segc_batch b; } tiny_batch;
static void tiny_batch_init(tiny_batch *tb, const segc_st_file *f, const char *labels) {
    memcpy(tb->img, fxf(f, "x", 4 * 3 * 36), sizeof tb->img);
    const segc_st_entry *e = segc_st_get(f, labels);
    assert_non_null(e);
    memcpy(tb->lab, e->data, sizeof tb->lab);
    memset(&tb->b, 0, sizeof tb->b);
    tb->b.n = 4, tb->b.c = 3, tb->b.h = 6, tb->b.w = 6, tb->b.label_h = 6, tb->b.label_w = 6;
    tb->b.label_dtype = SEGC_U8;
    tb->b.images = tb->img;
    tb->b.labels = tb->lab;
}

static void recipe_config(segc_config *c, const char *const *ov, int n) {
    char err[512];
    segc_config_defaults(c);
    c->data.batch_size = 4;
    for (int i = 0; i < n; i++)
        if (!segc_config_override(c, ov[i], err, sizeof err)) fail_msg("%s: %s", ov[i], err);
}

/* gradient of one recipe step on the tiny model */
static int g_oom_retries;   /* of the last tiny_step */

static double tiny_step(const segc_st_file *f, const char *const *ov, int n, const char *labels, int64_t iter, float *grad,
                        int *micro) {
    segc_config c;
    recipe_config(&c, ov, n);
    segc_model *m = tiny_model(f);
    char err[512];
    segc_recipe *r = segc_recipe_new(&c, m, err, sizeof err);
    if (!r) fail_msg("%s", err);
    segc_ctx *ctx = segc_ctx_new(1);
    ctx->training = true;
    tiny_batch tb;
    tiny_batch_init(&tb, f, labels);
    double loss = 0;
    if (!segc_recipe_step(r, ctx, &tb.b, SEGC_F32, iter, &loss, err, sizeof err)) fail_msg("%s", err);
    memcpy(grad, m->params.grad, (size_t)m->params.total * 4);
    if (micro) *micro = segc_recipe_micro_batch(r);
    g_oom_retries = segc_recipe_oom_retries(r);
    segc_recipe_free(r);
    segc_ctx_free(ctx);
    tiny_free(m);
    return loss;
}

static void check_grads(const segc_st_file *f, const char *prefix, const float *grad, double tol) {
    segc_model *m = tiny_model(f);
    char name[128];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s/%s", prefix, NAMES[i]);
        int64_t n = segc_numel(m->params.t[i]);
        assert_true(fx_close_norm(name, grad + m->params.offset[i], fxf(f, name, n), n, 1e-6, tol));
    }
    tiny_free(m);
}

/* ---- durations ---- */
static void test_durations(void **state) {
    int64_t v;
    bool ep;
    assert_true(segc_parse_duration("80000ba", &v, &ep) && v == 80000 && !ep);
    assert_true(segc_parse_duration("80000", &v, &ep) && v == 80000 && !ep);
    assert_true(segc_parse_duration("128ep", &v, &ep) && v == 128 && ep);
    static const char *const bad[] = {"", "ep", "12xx", "-5", "1.5ep", "12 ep", "12ba3", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) assert_false(segc_parse_duration(bad[i], &v, &ep));

    segc_config c;
    const char *ov[] = {"train.max_duration=128ep", "schedule.warmup_iters=2ep", "train.val_interval=1ep",
                        "train.checkpoint_interval=500ba", "recipe.ema.half_life=1ep", "recipe.ema.update_interval=10"};
    recipe_config(&c, ov, 6);
    c.data.batch_size = 16;
    char err[512];
    if (!segc_config_finish(&c, err, sizeof err)) fail_msg("%s", err);
    char *y = segc_config_to_yaml(&c);
    assert_non_null(strstr(y, "max_iters: 128ep"));
    assert_non_null(strstr(y, "warmup_iters: 2ep"));
    segc_config back;
    segc_config_defaults(&back);
    if (!segc_config_load_string(&back, y, "resolved", err, sizeof err)) fail_msg("%s", err);
    char diff[512];
    assert_int_equal(segc_config_diff(&c, &back, diff, sizeof diff), 0);
    free(y);
    /* ADE20K: 20210 images at batch 16 -> 1263 iterations per epoch */
    if (!segc_config_resolve_durations(&c, 20210, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(c.train.max_iters, 128 * 1263);
    assert_int_equal(c.schedule.warmup_iters, 2 * 1263);
    assert_int_equal(c.train.val_interval, 1263);
    assert_int_equal(c.train.checkpoint_interval, 500);
    assert_int_equal(c.recipe.ema.half_life, 1263);
    assert_int_equal(c.recipe.ema.update_interval, 10);
    assert_int_equal(c.in_epochs, 0);
    /* fewer samples than a batch: one iteration per epoch */
    recipe_config(&c, ov, 2);
    c.data.batch_size = 16;
    if (!segc_config_finish(&c, err, sizeof err) || !segc_config_resolve_durations(&c, 5, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(c.train.max_iters, 128);
    /* warm-up longer than training once resolved */
    const char *ov2[] = {"train.max_iters=10ep", "schedule.warmup_iters=2000"};
    recipe_config(&c, ov2, 2);
    if (!segc_config_finish(&c, err, sizeof err)) fail_msg("%s", err);
    EXPECT_FAIL(segc_config_resolve_durations(&c, 400, err, sizeof err), err, "schedule.warmup_iters", "1000");
    /* a bad duration string */
    segc_config_defaults(&c);
    EXPECT_FAIL(segc_config_override(&c, "train.max_iters=12 epochs", err, sizeof err), err, "train.max_iters",
                "expected an integer", "'12 epochs'", "128ep");
    EXPECT_FAIL(segc_config_override(&c, "recipe.ema.half_life=1.5ep", err, sizeof err), err, "recipe.ema.half_life", "'1.5ep'");
}

/* ---- recipe overlays and bad input ---- */
static void test_recipe_overlays_and_errors(void **state) {
    segc_config c;
    char err[512];
    segc_config_defaults(&c);
    if (!segc_config_override(&c, "recipe=mild", err, sizeof err)) fail_msg("%s", err);
    assert_string_equal(c.recipe.name, "mild");
    assert_int_equal(c.recipe.ema.half_life, 1000);
    assert_int_equal(c.recipe.ema.update_interval, 10);
    assert_int_equal(c.train.max_iters, 25);
    assert_true(c.in_epochs & (1u << SEGC_DUR_MAX_ITERS));
    assert_true(c.recipe.sam.rho == 0 && c.recipe.mixup.alpha == 0);
    if (!segc_config_override(&c, "recipe=hot", err, sizeof err) ||
        !segc_config_override(&c, "recipe.mixup.alpha=0.1", err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(c.recipe.ema.half_life, 2000);
    assert_int_equal(c.recipe.ema.update_interval, 1);
    assert_true(c.recipe.sam.rho == 0.3 && c.recipe.sam.interval == 1);
    assert_true(c.recipe.mixup.alpha == 0.1);   /* later keys win */
    assert_int_equal(c.train.max_iters, 240);
    assert_string_equal(c.schedule.policy, "cosine");
    segc_config m;
    segc_config_defaults(&m);
    if (!segc_config_load_string(&m, "recipe: medium\noptimizer: {type: decoupled_sgdw, lr: 0.08, momentum: 0.9}\n", "m.yaml",
                                 err, sizeof err))
        fail_msg("%s", err);
    assert_true(m.recipe.sam.rho == 0.3 && m.recipe.sam.interval == 2 && m.recipe.mixup.alpha == 0.2);
    assert_int_equal(m.train.max_iters, 90);
    if (!segc_config_finish(&m, err, sizeof err)) fail_msg("%s", err);

    segc_config_defaults(&c);
    EXPECT_FAIL(segc_config_override(&c, "recipe=spicy", err, sizeof err), err, "recipe", "mild, medium, hot", "'spicy'");
    EXPECT_FAIL(segc_config_load_string(&c, "recipe: warm\n", "w.yaml", err, sizeof err), err, "w.yaml:1", "mild, medium, hot");
    static const struct { const char *ov, *needle; } bad[] = {
        {"recipe.sam.rho=-0.1", "recipe.sam.rho: expected a finite number >= 0"},
        {"recipe.sam.interval=0", "recipe.sam.interval: expected >= 1"},
        {"recipe.sam.epsilon=-1", "recipe.sam.epsilon"},
        {"recipe.mixup.alpha=-0.2", "recipe.mixup.alpha: expected a finite number >= 0"},
        {"recipe.grad_accum=3", "recipe.grad_accum: expected auto or a divisor of data.batch_size (8), found '3'"},
        {"recipe.grad_accum=many", "found 'many'"},
        {"train.memory_limit=lots", "train.memory_limit: expected a size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        segc_config_defaults(&c);
        if (!segc_config_override(&c, bad[i].ov, err, sizeof err)) fail_msg("%s: %s", bad[i].ov, err);
        EXPECT_FAIL(segc_config_finish(&c, err, sizeof err), err, bad[i].needle);
    }
    segc_config_defaults(&c);
    EXPECT_FAIL(segc_config_override(&c, "recipe.mixup.alpha=lots", err, sizeof err), err, "recipe.mixup.alpha", "a number");
    EXPECT_FAIL(segc_config_override(&c, "recipe.ema.half_life=-1", err, sizeof err), err, "recipe.ema.half_life", "'-1'");
    c.recipe.ema.half_life = -1;   /* set directly: the range check */
    EXPECT_FAIL(segc_config_finish(&c, err, sizeof err), err, "recipe.ema.half_life: expected >= 0");
    /* every switch in range passes */
    const char *ok[] = {"recipe.ema.half_life=100", "recipe.sam.rho=0.05", "recipe.mixup.alpha=0.2",
                        "recipe.grad_accum=auto", "train.memory_limit=2GiB", "optimizer.type=decoupled_sgdw",
                        "schedule.policy=multistep", "schedule.milestones=[100, 200]", "schedule.warmup_iters=10"};
    recipe_config(&c, ok, 9);
    if (!segc_config_finish(&c, err, sizeof err)) fail_msg("%s", err);
    segc_schedule s;
    assert_true(segc_config_schedule(&c, &s, err, sizeof err));
    double lr0 = segc_schedule_lr(&s, 1.0, 50), lr1 = segc_schedule_lr(&s, 1.0, 150), lr2 = segc_schedule_lr(&s, 1.0, 250);
    assert_true(fabs(lr0 - 1) < 1e-12 && fabs(lr1 - 0.1) < 1e-12 && fabs(lr2 - 0.01) < 1e-12);
}

/* the shipped Composer configs load, pass the checks and resolve as the recipes say */
static void test_shipped_configs(void **state) {
    static const struct { const char *name; int64_t ep, hl, ui; double rho; int64_t sam_int; double alpha; } want[] = {
        {"baseline", 128, 0, 1, 0, 1, 0}, {"mild", 25, 1000, 10, 0, 1, 0},
        {"medium", 90, 1000, 10, 0.3, 2, 0.2}, {"hot", 240, 2000, 1, 0.3, 1, 0.5}};
    for (int i = 0; i < 4; i++) {
        char path[128], err[512];
        snprintf(path, sizeof path, "configs/deeplabv3plus/ade20k_r101_%s.yaml", want[i].name);
        segc_config c;
        segc_config_defaults(&c);
        if (!segc_config_load(&c, path, err, sizeof err) || !segc_config_finish(&c, err, sizeof err)) fail_msg("%s", err);
        assert_string_equal(c.optimizer.type, "decoupled_sgdw");
        assert_true(c.optimizer.lr == 0.08 && c.optimizer.momentum == 0.9 && c.optimizer.weight_decay == 5e-5);
        assert_int_equal(c.data.batch_size, 128);
        assert_string_equal(c.schedule.policy, "cosine");
        assert_string_equal(c.recipe.grad_accum, "auto");
        assert_string_equal(c.recipe.name, i ? want[i].name : "");
        /* ADE20K's 20210 training images at batch 128: 157 iterations per epoch */
        if (!segc_config_resolve_durations(&c, 20210, err, sizeof err)) fail_msg("%s: %s", path, err);
        assert_int_equal(c.train.max_iters, want[i].ep * 157);
        assert_int_equal(c.train.val_interval, 8 * 157);
        assert_int_equal(c.train.checkpoint_interval, 157);
        assert_int_equal(c.recipe.ema.half_life, want[i].hl);
        assert_int_equal(c.recipe.ema.update_interval, want[i].ui);
        assert_true(c.recipe.sam.rho == want[i].rho && c.recipe.sam.interval == want[i].sam_int);
        assert_true(c.recipe.mixup.alpha == want[i].alpha);
    }
}

/* ---- DecoupledSGDW vs Composer's update ---- */
static void test_decoupled_sgdw(void **state) {
    segc_st_file *f = fx_open("recipes.safetensors");
    static const char *const names[] = {"a.weight", "a.bias", "head.weight"};
    const int64_t shapes[3][2] = {{3, 4}, {3, 0}, {2, 3}};
    const int nd[3] = {2, 1, 2};
    segc_params p;
    segc_params_init(&p);
    for (int i = 0; i < 3; i++) segc_params_add(&p, names[i], nd[i], shapes[i], true);
    assert_true(segc_params_finalize(&p));
    char name[128], err[256];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "sgdw/init/%s", names[i]);
        int64_t n = segc_numel(p.t[i]);
        memcpy(p.data + p.offset[i], fxf(f, name, n), (size_t)n * 4);
    }
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_DECOUPLED_SGDW, 0.08);
    oc.momentum = 0.9;
    oc.weight_decay = 0.01;
    segc_custom_key keys[] = {{"head", SEGC_MULT(10), {false, 0}}, {"bias", {false, 0}, SEGC_MULT(0)}};
    oc.paramwise.custom_keys = keys;
    oc.paramwise.n_custom_keys = 2;
    segc_optimizer *o = segc_optimizer_new(&p, &oc, err, sizeof err);
    if (!o) fail_msg("%s", err);
    segc_schedule s;
    segc_schedule_init(&s);
    assert_true(segc_schedule_add(&s, segc_sched_cosine(0, 0, 0, 6), err, sizeof err));
    for (int it = 0; it < 6; it++) {
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "sgdw/grad/%d/%s", it, names[i]);
            int64_t n = segc_numel(p.t[i]);
            memcpy(p.grad + p.offset[i], fxf(f, name, n), (size_t)n * 4);
        }
        assert_false(isnan(segc_optimizer_step_scheduled(o, &s, it)));
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "sgdw/after/%d/%s", it, names[i]);
            int64_t n = segc_numel(p.t[i]);
            assert_true(fx_close_norm(name, p.data + p.offset[i], fxf(f, name, n), n, 1e-6, 1e-6));
        }
    }
    /* state round trip keeps the kind */
    segc_st_writer *w = segc_st_writer_new();
    segc_optimizer_save(o, w, "opt.");
    char path[] = "/tmp/segc_sgdw_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    assert_true(segc_st_writer_save(w, path, err, sizeof err));
    segc_st_writer_free(w);
    segc_st_file *sf = segc_st_open(path, err, sizeof err);
    assert_non_null(sf);
    assert_non_null(strstr(segc_st_meta(sf, "opt.optimizer"), "decoupled_sgdw"));
    segc_optim_cfg sgd = segc_optim_defaults(SEGC_OPT_SGD, 0.08);
    sgd.momentum = 0.9;
    segc_optimizer *o2 = segc_optimizer_new(&p, &sgd, err, sizeof err);
    EXPECT_FAIL(segc_optimizer_load(o2, sf, "opt.", err, sizeof err), err, "decoupled_sgdw", "sgd");
    segc_optimizer_free(o2);
    segc_st_close(sf);
    unlink(path);
    segc_optimizer_free(o);
    segc_params_free(&p);
    segc_st_close(f);
}

/* ---- EMA ---- */
static void test_ema(void **state) {
    segc_st_file *f = fx_open("recipes.safetensors");
    assert_true(fabs(segc_ema_smoothing(4, 2) - sqrt(0.5)) < 1e-15);
    assert_true(fabs(segc_ema_smoothing(1000, 10) - pow(0.5, 0.01)) < 1e-15);
    segc_params p;
    segc_params_init(&p);
    segc_params_add(&p, "w", 1, (int64_t[]){32}, true);   /* 32 + 5: contiguous in the flat store */
    segc_params_add(&p, "bn.running_mean", 1, (int64_t[]){5}, false);
    assert_true(segc_params_finalize(&p));
    char err[256], name[32];
    memcpy(p.data, fxf(f, "ema/p0", 37), 37 * 4);
    segc_ema e;
    assert_true(segc_ema_init(&e, &p, 4, 2, err, sizeof err));
    for (int k = 1; k <= 5; k++) {
        snprintf(name, sizeof name, "ema/p%d", k);
        memcpy(p.data, fxf(f, name, 37), 37 * 4);
        /* iterations 2k-1 (no update) and 2k (update) */
        segc_ema_update(&e, &p, 2 * k - 1);
        segc_ema_update(&e, &p, 2 * k);
    }
    const float *want = fxf(f, "ema/result", 37);
    for (int i = 0; i < 37; i++)
        if (e.w[i] != want[i]) fail_msg("ema[%d] = %.9g, torch %.9g", i, e.w[i], want[i]);
    /* swap twice: back to the start; once: the EMA is in the model */
    float before[37];
    memcpy(before, p.data, sizeof before);
    segc_ema_swap(&e, &p);
    assert_memory_equal(p.data, want, sizeof before);
    segc_ema_swap(&e, &p);
    assert_memory_equal(p.data, before, sizeof before);
    /* save / load */
    segc_st_writer *w = segc_st_writer_new();
    segc_ema_save(&e, &p, w, "ema.");
    char path[] = "/tmp/segc_ema_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    assert_true(segc_st_writer_save(w, path, err, sizeof err));
    segc_st_writer_free(w);
    segc_st_file *sf = segc_st_open(path, err, sizeof err);
    segc_ema e2;
    assert_true(segc_ema_init(&e2, &p, 4, 2, err, sizeof err));
    bool found;
    assert_true(segc_ema_load(&e2, &p, sf, "ema.", &found, err, sizeof err) && found);
    assert_memory_equal(e2.w, e.w, 37 * 4);
    assert_true(segc_ema_load(&e2, &p, sf, "none.", &found, err, sizeof err) && !found);
    segc_params q;   /* another model: the message names the tensor */
    segc_params_init(&q);
    segc_params_add(&q, "w", 1, (int64_t[]){31}, true);
    segc_params_add(&q, "bn.running_mean", 1, (int64_t[]){5}, false);
    assert_true(segc_params_finalize(&q));
    segc_ema e3;
    assert_true(segc_ema_init(&e3, &q, 4, 2, err, sizeof err));
    EXPECT_FAIL(segc_ema_load(&e3, &q, sf, "ema.", &found, err, sizeof err), err, "ema.w");
    segc_ema_free(&e3);
    EXPECT_FAIL(segc_ema_init(&e3, &q, 0, 2, err, sizeof err), err, "recipe.ema.half_life");
    segc_ema_free(&e3);
    segc_params_free(&q);
    segc_st_close(sf);
    unlink(path);
    segc_ema_free(&e);
    segc_ema_free(&e2);
    segc_params_free(&p);
    segc_st_close(f);
}

/* ---- the tiny model, accumulation, SAM ---- */
static void test_full_and_accumulated_gradients(void **state) {
    segc_st_file *f = fx_open("recipes.safetensors");
    float full[256], acc[256];
    int micro;
    double l1 = tiny_step(f, NULL, 0, "y", 0, full, &micro);
    assert_int_equal(micro, 4);
    check_grads(f, "full/grad", full, 1e-5);
    static const char *const accs[] = {"recipe.grad_accum=2", "recipe.grad_accum=4"};
    for (int k = 0; k < 2; k++) {
        double l2 = tiny_step(f, &accs[k], 1, "y", 0, acc, &micro);
        assert_int_equal(micro, k ? 1 : 2);
        assert_true(fabs(l2 - l1) <= 1e-6 * fabs(l1));
        assert_true(fx_close_norm(accs[k], acc, full, 152, 1e-6, 1e-6));
        check_grads(f, "full/grad", acc, 1e-5);
    }
    segc_st_close(f);
}

static void test_grad_accum_auto(void **state) {
    segc_st_file *f = fx_open("recipes.safetensors");
    float full[256], acc[256];
    int micro;
    tiny_step(f, NULL, 0, "y", 0, full, NULL);
    const char *big[] = {"recipe.grad_accum=auto"};   /* the machine's memory: the whole batch */
    tiny_step(f, big, 1, "y", 0, acc, &micro);
    assert_int_equal(micro, 4);
    assert_true(fx_close_norm("auto", acc, full, 152, 1e-6, 1e-6));
    /* a budget below the whole batch's step memory (about 10 KiB per 6x6 sample here): fewer samples
     * per micro-batch, the same gradient, and the same choice in every run */
    const char *tight[] = {"recipe.grad_accum=auto", "train.memory_limit=40KiB"};
    int micro2;
    float acc2[256];
    tiny_step(f, tight, 2, "y", 0, acc, &micro);
    tiny_step(f, tight, 2, "y", 0, acc2, &micro2);
    assert_true(micro >= 1 && micro < 4 && micro2 == micro);
    assert_memory_equal(acc, acc2, 152 * 4);
    assert_true(fx_close_norm("auto (tight)", acc, full, 152, 1e-6, 1e-6));
    /* the machine runs out before the budget does: step memory that cannot grow past 40 KiB
     * (SEGC_ARENA_MAX: growth fails as a failed malloc would) cuts the whole-batch pass short,
     * which is undone and retried smaller, with the same gradient */
    setenv("SEGC_ARENA_MAX", "40960", 1);
    tiny_step(f, big, 1, "y", 0, acc, &micro);
    int retries = g_oom_retries;
    tiny_step(f, big, 1, "y", 0, acc2, &micro2);
    unsetenv("SEGC_ARENA_MAX");
    assert_true(retries >= 1 && micro >= 1 && micro < 4 && micro2 == micro);
    assert_memory_equal(acc, acc2, 152 * 4);
    assert_true(fx_close_norm("auto (allocation failure)", acc, full, 152, 1e-6, 1e-6));
    /* below one sample: the error says what one sample needs */
    segc_config c;
    const char *tiny[] = {"recipe.grad_accum=auto", "train.memory_limit=1KiB"};
    recipe_config(&c, tiny, 2);
    segc_model *m = tiny_model(f);
    char err[512];
    segc_recipe *r = segc_recipe_new(&c, m, err, sizeof err);
    assert_non_null(r);
    segc_ctx *ctx = segc_ctx_new(1);
    tiny_batch tb;
    tiny_batch_init(&tb, f, "y");
    double loss;
    EXPECT_FAIL(segc_recipe_step(r, ctx, &tb.b, SEGC_F32, 0, &loss, err, sizeof err), err, "train.memory_limit: 1.0 KiB",
                "below what one sample needs", "step memory for one sample");
    segc_recipe_free(r);
    segc_ctx_free(ctx);
    /* not even one sample's step memory can be had: the same error, saying where it stopped */
    const char *auto_only[] = {"recipe.grad_accum=auto"};
    recipe_config(&c, auto_only, 1);
    assert_non_null(r = segc_recipe_new(&c, m, err, sizeof err));
    setenv("SEGC_ARENA_MAX", "4096", 1);
    ctx = segc_ctx_new(1);
    unsetenv("SEGC_ARENA_MAX");
    EXPECT_FAIL(segc_recipe_step(r, ctx, &tb.b, SEGC_F32, 0, &loss, err, sizeof err), err,
                "recipe.grad_accum auto: one sample of 6x6 does not fit", "could not grow past 4.0 KiB");
    segc_recipe_free(r);
    segc_ctx_free(ctx);
    tiny_free(m);
    segc_st_close(f);
}

static void test_sam(void **state) {
    segc_st_file *f = fx_open("recipes.safetensors");
    segc_config c;
    const char *ov[] = {"recipe.sam.rho=0.3", "recipe.sam.epsilon=1e-12", "recipe.sam.interval=1"};
    recipe_config(&c, ov, 3);
    segc_model *m = tiny_model(f);
    char err[512];
    segc_recipe *r = segc_recipe_new(&c, m, err, sizeof err);
    if (!r) fail_msg("%s", err);
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_SGD, 0.1);
    oc.momentum = 0.9;
    segc_optimizer *o = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    segc_ctx *ctx = segc_ctx_new(1);
    tiny_batch tb;
    tiny_batch_init(&tb, f, "y");
    for (int it = 0; it < 2; it++) {
        float w0[256];
        memcpy(w0, m->params.data, (size_t)m->params.total * 4);
        double loss;
        if (!segc_recipe_step(r, ctx, &tb.b, SEGC_F32, it, &loss, err, sizeof err)) fail_msg("%s", err);
        /* the weights are back where they were, bitwise; the gradient is the second pass's */
        assert_memory_equal(m->params.data, w0, (size_t)m->params.total * 4);
        if (it == 0) check_grads(f, "sam/grad2", m->params.grad, 1e-5);
        segc_optimizer_step(o, 0.1);
    }
    check_grads(f, "sam/after", m->params.data, 1e-5);
    /* interval 2: iteration 0 is a plain step (its gradient the full-batch one), 1 a SAM step */
    float g[256];
    const char *ov2[] = {"recipe.sam.rho=0.3", "recipe.sam.interval=2"};
    tiny_step(f, ov2, 2, "y", 0, g, NULL);
    check_grads(f, "full/grad", g, 1e-5);
    tiny_step(f, ov2, 2, "y", 1, g, NULL);
    check_grads(f, "sam/grad2", g, 1e-5);
    segc_optimizer_free(o);
    segc_recipe_free(r);
    segc_ctx_free(ctx);
    tiny_free(m);
    segc_st_close(f);
}

/* ---- MixUp ---- */
static void test_mixup(void **state) {
    segc_st_file *f = fx_open("recipes.safetensors");
    /* the primitives with the generator's m and permutation */
    const int perm[4] = {2, 0, 3, 1};
    const float mix = 0.3f;
    tiny_batch tb;
    tiny_batch_init(&tb, f, "y_ign");
    float xm[4 * 3 * 36];
    uint8_t yp[4 * 36];
    segc_mixup_images(tb.img, xm, 4, 3 * 36, perm, mix);
    assert_true(fx_close_norm("x_mix", xm, fxf(f, "mixup/x_mix", 4 * 3 * 36), 4 * 3 * 36, 1e-6, 1e-6));
    segc_mixup_permute(tb.lab, yp, 4, 36, perm);
    segc_model *m = tiny_model(f);
    segc_ctx *ctx = segc_ctx_new(1);
    segc_ctx_step_begin(ctx);
    segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){4, 3, 6, 6}, xm);
    segc_model_out out;
    assert_true(segc_model_forward(ctx, m, x, &out));
    segc_targets ta = {.labels = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){4, 6, 6}, tb.lab), .ignore_index = 255};
    segc_targets tp = {.labels = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){4, 6, 6}, yp), .ignore_index = 255};
    segc_tensor *l = segc_mixup_loss(ctx, segc_model_loss(ctx, m, &out, &ta), segc_model_loss(ctx, m, &out, &tp), mix);
    assert_non_null(l);
    float want_loss = fxf(f, "mixup/loss", 1)[0];
    assert_true(fabsf(segc_f32(l)[0] - want_loss) <= 1e-6f * fabsf(want_loss));
    segc_params_zero_grad(&m->params);
    assert_true(segc_backward(ctx, l));
    check_grads(f, "mixup/grad", m->params.grad, 1e-5);
    tiny_free(m);
    segc_ctx_free(ctx);

    /* the draws: a permutation and m <= 0.5, a function of (seed, iteration) only */
    int p1[8], p2[8];
    double a = segc_mixup_draw(7, 3, 0.2, 8, p1), b = segc_mixup_draw(7, 3, 0.2, 8, p2);
    assert_true(a == b && a >= 0 && a <= 0.5);
    assert_memory_equal(p1, p2, sizeof p1);
    int seen = 0;
    for (int i = 0; i < 8; i++) seen |= 1 << p1[i];
    assert_int_equal(seen, 255);
    double differ = 0;
    for (int it = 0; it < 8; it++) differ += segc_mixup_draw(7, it, 0.2, 8, p2) != a;
    assert_true(differ >= 6);
    assert_true(segc_mixup_draw(7, 0, 0, 8, p2) == 0);   /* alpha 0: no mixing */
    /* Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1)) */
    static const double alphas[] = {0.2, 0.5, 2.0};
    for (int k = 0; k < 3; k++) {
        segc_rng r;
        segc_rng_init(&r, 11 + k);
        double s = 0, s2 = 0;
        const int n = 20000;
        for (int i = 0; i < n; i++) {
            double z = segc_rng_beta(&r, alphas[k], alphas[k]);
            assert_true(z >= 0 && z <= 1);
            s += z;
            s2 += z * z;
        }
        double mean = s / n, var = s2 / n - mean * mean, want = 1 / (4 * (2 * alphas[k] + 1));
        if (fabs(mean - 0.5) > 0.015 || fabs(var - want) > 0.1 * want)
            fail_msg("Beta(%g): mean %g var %g (want 0.5, %g)", alphas[k], mean, var, want);
    }
    /* through the training step: deterministic, and the primitives with the step's draw */
    const char *ov[] = {"recipe.mixup.alpha=0.5", "train.seed=5"};
    float g1[256], g2[256], g3[256];
    double l1 = tiny_step(f, ov, 2, "y_ign", 4, g1, NULL), l2 = tiny_step(f, ov, 2, "y_ign", 4, g2, NULL);
    assert_true(l1 == l2);
    assert_memory_equal(g1, g2, 152 * 4);
    const char *ov3[] = {"recipe.mixup.alpha=0.5", "train.seed=5", "recipe.grad_accum=2"};
    double l3 = tiny_step(f, ov3, 3, "y_ign", 4, g3, NULL);
    (void)l3;   /* ignored pixels differ per micro-batch: the mean is not split exactly */
    float g0[256];
    double l0 = tiny_step(f, NULL, 0, "y_ign", 4, g0, NULL);
    assert_true(l0 != l1);
    segc_st_close(f);
}

/* ---- training runs ---- */
/* UNet2D with EMA, SAM (every 2nd step), MixUp, 2 micro-batches and
 * DecoupledSGDW: stopped and resumed after iterations 1..3, bitwise the
 * uninterrupted run's weights, optimizer state and EMA tensors. */
static void test_resume_exact_with_recipes(void **state) {
    const char *ov[] = {"model.type=unet2d", "model.variant=", "model.filters=[4, 8, 16]", "model.deep_supr_num=1",
                        "data.dataset=brats", "data.train_split=train", "data.val_split=", "data.pipeline=nnunet",
                        "data.crop_size=[32, 32]", "data.batch_size=2", "data.num_workers=1",
                        "optimizer.type=decoupled_sgdw", "optimizer.lr=0.01", "optimizer.momentum=0.9",
                        "optimizer.weight_decay=0.01", "optimizer.paramwise.custom_keys={}", "schedule.warmup_iters=0",
                        "schedule.policy=cosine", "train.checkpoint_interval=2", "train.log_interval=1", "train.threads=2",
                        "recipe.ema.half_life=3ba", "recipe.ema.update_interval=1", "recipe.sam.rho=0.05",
                        "recipe.sam.interval=2", "recipe.mixup.alpha=0.4", "recipe.grad_accum=2"};
    tc_resume_exact(ov, (int)(sizeof ov / sizeof *ov), "brats-mini", 3, 5);
}

/* EMA on: the evaluation and best.safetensors use the EMA weights, which the state file holds too */
static void test_ema_best_checkpoint(void **state) {
    char root[] = "/tmp/segc_recipes_XXXXXX", err[1024], p[256];
    assert_non_null(mkdtemp(root));
    const char *ov[] = {"name=tiny", "model.hidden=[8,16,16,16]", "model.depths=[1,1,1,1]", "model.heads=[1,1,1,1]",
                        "model.decoder_hidden=16", "data.batch_size=2", "data.num_workers=1", "data.scale=[120,90]",
                        "data.crop_size=[32,48]", "data.test_scale=[120,90]", "train.max_iters=4",
                        "train.checkpoint_interval=4", "train.val_interval=0", "train.val_max_samples=2",
                        "train.report_samples=0", "schedule.warmup_iters=0", "optimizer.lr=1e-3", "train.threads=2",
                        "recipe.ema.half_life=2", "recipe.ema.update_interval=1"};
    segc_config c;
    tc_config(&c, ov, (int)(sizeof ov / sizeof *ov), "camvid", root, false);
    segc_train_opts o = {.quiet = true};
    if (segc_train(&c, &o, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/checkpoints/best.safetensors", root);
    segc_st_file *best = segc_st_open(p, err, sizeof err);
    snprintf(p, sizeof p, "%s/checkpoints/iter_0000004.state.safetensors", root);
    segc_st_file *st = segc_st_open(p, err, sizeof err);
    snprintf(p, sizeof p, "%s/checkpoints/iter_0000004.safetensors", root);
    segc_st_file *wt = segc_st_open(p, err, sizeof err);
    if (!best || !st || !wt) fail_msg("%s", err);
    int n = 0, differ = 0;
    for (int i = 0; i < segc_st_count(best); i++) {
        const segc_st_entry *e = segc_st_at(best, i), *w = segc_st_get(wt, e->name);
        char name[300];
        snprintf(name, sizeof name, "ema.%s", e->name);
        const segc_st_entry *x = segc_st_get(st, name);
        if (!x || !w) fail_msg("%s: no %s", x ? "weights" : "state", e->name);
        if (e->dtype != SEGC_F32) continue;   /* integer buffers (num_batches_tracked) are stored as such */
        assert_int_equal(x->nbytes, e->nbytes);
        if (memcmp(x->data, e->data, e->nbytes)) fail_msg("best.safetensors %s is not the EMA's", e->name);
        differ += memcmp(w->data, e->data, e->nbytes) != 0;
        n++;
    }
    assert_true(n > 10 && differ > 0);   /* the EMA is not the training weights */
    segc_st_close(best);
    segc_st_close(st);
    segc_st_close(wt);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_recipe_overlays_and_errors),
        cmocka_unit_test(test_shipped_configs),
        cmocka_unit_test(test_decoupled_sgdw),
        cmocka_unit_test(test_ema),
        cmocka_unit_test(test_full_and_accumulated_gradients),
        cmocka_unit_test(test_grad_accum_auto),
        cmocka_unit_test(test_sam),
        cmocka_unit_test(test_mixup),
        cmocka_unit_test(test_resume_exact_with_recipes),
        cmocka_unit_test(test_ema_best_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
