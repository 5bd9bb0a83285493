/* UNet2D parity with MONAI DynUNet (fixtures from tests/fixtures/gen_unet2d.py): parameter names,
 * training outputs (main + deep supervision), nnU-Net Dice+CE and region losses, every parameter
 * gradient, one nnU-Net SGD step; plus bf16, config errors, finite differences, init and postprocess.
 * The family is reached through its function pointers (segc_family_unet2d), as the registry does. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/model.h"
#include "segc/optim.h"
#include "segc/unet2d.h"

extern const segc_model_family segc_family_unet2d;

static segc_st_file *fx;

static int setup(void **state) { fx = fx_open("unet2d.safetensors"); return fx ? 0 : -1; }
static int teardown(void **state) { segc_st_close(fx); return 0; }

static const segc_st_entry *entry(const char *fmt, const char *name) {
    char key[320];
    snprintf(key, sizeof key, fmt, name);
    return segc_st_get(fx, key);
}

static segc_tensor *input(segc_ctx *ctx, const char *key) {
    const segc_st_entry *e = segc_st_get(fx, key);
    if (!e) fail_msg("fixture lacks %s", key);
    segc_tensor *t = segc_tensor_new(ctx, e->dtype, e->ndim, e->shape);
    memcpy(t->data, e->data, e->nbytes);
    return t;
}

static segc_tensor want_of(const segc_st_entry *e) {
    segc_tensor w = {.dtype = e->dtype, .ndim = e->ndim, .data = (void *)e->data};
    memcpy(w.shape, e->shape, sizeof w.shape);
    return w;
}

/* A model through the family interface; opts are key/value pairs, NULL-terminated. NULL + err on failure. */
static segc_model *family_model(int num_classes, int in_channels, char *err, size_t n, ...) {
    segc_model_opt opts[SEGC_MODEL_MAX_OPTS];
    int n_opts = 0;
    va_list ap;
    va_start(ap, n);
    for (const char *k; (k = va_arg(ap, const char *)) != NULL && n_opts < SEGC_MODEL_MAX_OPTS; n_opts++) {
        snprintf(opts[n_opts].key, sizeof opts[n_opts].key, "%s", k);
        snprintf(opts[n_opts].value, sizeof opts[n_opts].value, "%s", va_arg(ap, const char *));
    }
    va_end(ap);
    segc_model_spec s = {.type = "unet2d", .variant = "", .num_classes = num_classes, .in_channels = in_channels,
                         .opts = opts, .n_opts = n_opts};
    const segc_model_family *f = &segc_family_unet2d;
    if (!f->validate(&s, err, n)) return NULL;
    segc_model *m = calloc(1, sizeof *m);
    m->family = f;
    if (!f->create(m, &s, err, n)) { free(m); return NULL; }
    return m;
}

static void model_free(segc_model *m) {
    if (!m) return;
    m->family->destroy(m);
    segc_params_free(&m->params);
    free(m);
}

static segc_model *fixture_model(const char *loss) {
    char err[256];
    segc_model *m = family_model(5, 4, err, sizeof err, "filters", "[8, 16, 16, 16]", "loss", loss, NULL);
    if (!m) fail_msg("create: %s", err);
    return m;
}

/* fixture parameters: prefix first (e.g. regions/param/), then dice/param/ */
static void load_params(segc_model *m, const char *prefix) {
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        char key[320];
        snprintf(key, sizeof key, "%s%s", prefix, t->name);
        const segc_st_entry *e = segc_st_get(fx, key);
        if (!e) e = entry("dice/param/%s", t->name);
        if (!e) fail_msg("fixture lacks the parameter %s", t->name);
        assert_int_equal(e->nbytes, segc_nbytes(t));
        memcpy(t->data, e->data, e->nbytes);
    }
}

static void test_names_match_monai(void **state) {
    segc_model *m = fixture_model("dice_ce");
    cJSON *meta = cJSON_Parse(segc_st_meta(fx, "dice"));
    cJSON *names = cJSON_GetObjectItemCaseSensitive(meta, "names");
    assert_true(cJSON_IsArray(names));
    assert_int_equal(cJSON_GetArraySize(names), m->params.n);
    int i = 0;
    for (cJSON *it = names->child; it; it = it->next, i++) {
        segc_tensor *t = m->params.t[i];
        if (strcmp(t->name, it->valuestring) != 0) fail_msg("parameter %d: segc %s, MONAI %s", i, t->name, it->valuestring);
        const segc_st_entry *e = entry("dice/param/%s", t->name);
        assert_non_null(e);
        assert_int_equal(e->ndim, t->ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(e->shape[d], t->shape[d]);
    }
    assert_int_equal(m->num_outputs, 5);
    assert_int_equal(m->probs, SEGC_PROBS_SOFTMAX);
    cJSON_Delete(meta);
    model_free(m);
}

/* gradients of every parameter against the fixture's prefix/grad/NAME, norm-wise */
static bool check_grads(const segc_model *m, const char *prefix, double tol) {
    char fmt[64];
    snprintf(fmt, sizeof fmt, "%s/grad/%%s", prefix);
    double max_norm = 0;
    for (int i = 0; i < m->params.n; i++) {
        const segc_st_entry *g = entry(fmt, m->params.t[i]->name);
        if (!g) fail_msg("fixture lacks %s/grad/%s", prefix, m->params.t[i]->name);
        max_norm = fmax(max_norm, fx_norm(g->data, segc_numel(m->params.t[i])));
    }
    bool ok = true;
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        char what[200];
        snprintf(what, sizeof what, "%s grad %s", prefix, t->name);
        ok &= fx_close_norm(what, t->grad, entry(fmt, t->name)->data, segc_numel(t), 1e-2 * max_norm, tol);
    }
    return ok;
}

static void test_dice_ce_parity_and_sgd(void **state) {
    segc_model *m = fixture_model("dice_ce");
    load_params(m, "dice/param/");
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    segc_tensor *x = input(ctx, "dice/x");
    segc_targets tg = {.labels = input(ctx, "dice/labels"), .ignore_index = 255};
    segc_model_out out;
    if (!m->family->forward(ctx, m, x, &out)) fail_msg("forward: %s", segc_last_error(ctx));
    assert_int_equal(out.n_maps, 3);
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        char key[32], what[48];
        snprintf(key, sizeof key, "map%d", i);
        snprintf(what, sizeof what, "dice %s", key);
        segc_tensor *want = fx_tensor(ctx, fx, "dice", key);
        assert_true(segc_same_shape(out.maps[i], want));
        ok &= fx_close_norm(what, segc_f32(out.maps[i]), segc_f32(want), segc_numel(want), 0, 1e-5);
    }
    segc_tensor *loss = m->family->loss(ctx, m, &out, &tg);
    if (!loss) fail_msg("loss: %s", segc_last_error(ctx));
    ok &= fx_close("dice loss (3 outputs)", loss, fx_tensor(ctx, fx, "dice", "loss"), 1e-5);
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, loss)) fail_msg("backward: %s", segc_last_error(ctx));
    ok &= check_grads(m, "dice", 1e-4);

    /* eval mode: the main map alone, the same values */
    segc_ctx *ev = segc_ctx_new(0);
    ev->training = false;
    segc_set_grad_enabled(ev, false);
    segc_model_out eo;
    assert_true(m->family->forward(ev, m, input(ev, "dice/x"), &eo));
    assert_int_equal(eo.n_maps, 1);
    ok &= fx_close_norm("eval main map", segc_f32(eo.maps[0]), segc_f32(out.maps[0]), segc_numel(out.maps[0]), 0, 1e-6);
    segc_targets etg = {.labels = input(ev, "dice/labels"), .ignore_index = 255};
    ok &= fx_close("dice loss (main map)", m->family->loss(ev, m, &eo, &etg), fx_tensor(ev, fx, "dice", "loss_main"), 1e-5);
    segc_ctx_free(ev);

    /* one nnU-Net SGD step (lr 0.01, momentum 0.99, nesterov, wd 3e-5) from the reference gradients */
    for (int i = 0; i < m->params.n; i++) {
        const segc_st_entry *g = entry("dice/grad/%s", m->params.t[i]->name);
        memcpy(m->params.t[i]->grad, g->data, g->nbytes);
    }
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_SGD, 0.01);
    oc.momentum = 0.99;
    oc.nesterov = true;
    oc.weight_decay = 3e-5;
    char err[256];
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    if (!opt) fail_msg("optimizer: %s", err);
    segc_optimizer_step(opt, 0.01);
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        segc_tensor want = want_of(entry("dice/sgd/%s", t->name));
        char what[200];
        snprintf(what, sizeof what, "sgd %s", t->name);
        ok &= fx_close(what, t, &want, 1e-5);
    }
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    model_free(m);
    assert_true(ok);
}

static void test_regions_parity(void **state) {
    segc_model *m = fixture_model("regions");
    assert_int_equal(m->num_outputs, 3);
    assert_int_equal(m->num_classes, 5);
    assert_int_equal(m->probs, SEGC_PROBS_SIGMOID);
    load_params(m, "regions/param/");
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    segc_targets tg = {.labels = input(ctx, "dice/labels"), .ignore_index = 255};
    segc_model_out out;
    if (!m->family->forward(ctx, m, input(ctx, "dice/x"), &out)) fail_msg("forward: %s", segc_last_error(ctx));
    assert_int_equal(out.n_maps, 3);
    segc_tensor *want = fx_tensor(ctx, fx, "regions", "map0");
    bool ok = fx_close_norm("regions map0", segc_f32(out.maps[0]), segc_f32(want), segc_numel(want), 0, 1e-5);
    segc_tensor *loss = m->family->loss(ctx, m, &out, &tg);
    if (!loss) fail_msg("loss: %s", segc_last_error(ctx));
    ok &= fx_close("regions loss", loss, fx_tensor(ctx, fx, "regions", "loss"), 1e-5);
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, loss)) fail_msg("backward: %s", segc_last_error(ctx));
    ok &= check_grads(m, "regions", 1e-4);
    segc_ctx_free(ctx);
    model_free(m);
    assert_true(ok);
}

/* bf16 activations (weights cast per call, f32 statistics) stay close to f32 */
static void test_bf16_forward(void **state) {
    segc_model *m = fixture_model("dice_ce");
    load_params(m, "dice/param/");
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    segc_tensor *x = input(ctx, "dice/x");
    segc_model_out o32, o16;
    assert_true(m->family->forward(ctx, m, x, &o32));
    segc_tensor *xb = segc_cast(ctx, x, SEGC_BF16);
    if (!m->family->forward(ctx, m, xb, &o16)) fail_msg("bf16 forward: %s", segc_last_error(ctx));
    assert_int_equal(o16.n_maps, 3);
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o16.maps[i]->dtype, SEGC_BF16);
        segc_tensor *f = segc_cast(ctx, o16.maps[i], SEGC_F32);
        char what[48];
        snprintf(what, sizeof what, "bf16 map%d vs f32", i);
        ok &= fx_close_norm(what, segc_f32(f), segc_f32(o32.maps[i]), segc_numel(f), 0, 5e-2);
    }
    segc_targets tg = {.labels = input(ctx, "dice/labels"), .ignore_index = 255};
    segc_tensor *l32 = m->family->loss(ctx, m, &o32, &tg), *l16 = m->family->loss(ctx, m, &o16, &tg);
    assert_non_null(l16);
    ok &= fx_close("bf16 loss vs f32", l16, l32, 2e-2);
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, l16)) fail_msg("bf16 backward: %s", segc_last_error(ctx));
    for (int i = 0; i < m->params.n; i++)
        for (int64_t k = 0; k < segc_numel(m->params.t[i]); k++)
            if (!isfinite(m->params.t[i]->grad[k])) fail_msg("bf16 grad %s not finite", m->params.t[i]->name);
    segc_ctx_free(ctx);
    model_free(m);
    assert_true(ok);
}

static void test_config_errors(void **state) {
    char err[256];
    /* 4 levels allow 2 heads; 3 is one too deep */
    assert_null(family_model(5, 4, err, sizeof err, "filters", "[8, 16, 16, 16]", "deep_supr_num", "3", NULL));
    assert_non_null(strstr(err, "model.deep_supr_num"));
    assert_null(strchr(err, '\n'));
    print_message("  too deep: %s\n", err);
    /* the default 6 levels allow 4; deep supervision off lifts the limit */
    segc_model *m = family_model(5, 4, err, sizeof err, "deep_supr_num", "4", NULL);
    assert_non_null(m);
    model_free(m);
    assert_null(family_model(5, 4, err, sizeof err, "deep_supr_num", "5", NULL));
    assert_non_null(strstr(err, "model.deep_supr_num"));
    m = family_model(5, 4, err, sizeof err, "filters", "[4, 8]", "deep_supervision", "false", NULL);
    assert_non_null(m);
    model_free(m);
    assert_null(family_model(5, 4, err, sizeof err, "filters", "[8]", NULL));
    assert_non_null(strstr(err, "model.filters"));
    assert_null(family_model(4, 4, err, sizeof err, "loss", "regions", NULL));
    assert_non_null(strstr(err, "model.loss"));
    assert_null(family_model(5, 4, err, sizeof err, "norm_eps", "0", NULL));
    assert_non_null(strstr(err, "model.norm_eps"));
    /* the default network: nnU-Net 2-D filters, MONAI's parameter count for these shapes */
    m = family_model(4, 4, err, sizeof err, NULL);
    assert_non_null(m);
    assert_int_equal(segc_params_count(&m->params, true), 20612876);   /* MONAI DynUNet, 4 in, 4 out */
    assert_int_equal(segc_params_find(&m->params, "bottleneck.conv1.conv.weight")->shape[0], 512);
    assert_non_null(segc_params_find(&m->params, "deep_supervision_heads.1.conv.conv.bias"));
    assert_null(segc_params_find(&m->params, "deep_supervision_heads.2.conv.conv.bias"));
    /* a bad input size names the rule */
    segc_ctx *ctx = segc_ctx_new(0);
    segc_model_out out;
    assert_false(m->family->forward(ctx, m, segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 4, 40, 40)), &out));
    assert_non_null(strstr(segc_last_error(ctx), "multiples of 32"));
    segc_ctx_free(ctx);
    model_free(m);
}

/* finite differences through the whole network and loss on a tiny net: input and parameters */
typedef struct { segc_model *m; segc_tensor *labels; } gc_user;
static segc_tensor *gc_loss(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    gc_user *u = user;
    segc_model_out out;
    if (!u->m->family->forward(ctx, u->m, ins[0], &out)) return NULL;
    segc_targets tg = {.labels = u->labels, .ignore_index = 255};
    return u->m->family->loss(ctx, u->m, &out, &tg);
}

static void run_gradcheck(const char *loss_kind) {
    char err[256];
    segc_model *m = family_model(5, 2, err, sizeof err, "filters", "[3, 4, 4]", "deep_supr_num", "1", "loss",
                                 loss_kind, NULL);
    assert_non_null(m);
    m->family->init(m, 3);
    for (int i = 0; i < m->params.n; i++)   /* non-trivial norm affines and biases */
        if (m->params.t[i]->ndim == 1)
            for (int64_t k = 0; k < segc_numel(m->params.t[i]); k++)
                segc_f32(m->params.t[i])[k] += 0.1f * sinf((float)(7 * i + k));
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    segc_tensor *labels = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(2, 8, 8));
    for (int k = 0; k < 128; k++) ((uint8_t *)labels->data)[k] = k % 11 == 3 ? 255 : (uint8_t)((k * 7 + k / 8) % 5);
    gc_user u = {m, labels};
    segc_tensor *ins[5] = {
        t_randn(ctx, 4, SHAPE(2, 2, 8, 8), 1.0f, true),
        segc_params_find(&m->params, "input_block.conv1.conv.weight"),
        segc_params_find(&m->params, "upsamples.0.transp_conv.conv.weight"),
        segc_params_find(&m->params, "bottleneck.norm2.weight"),
        segc_params_find(&m->params, "deep_supervision_heads.0.conv.conv.bias"),
    };
    segc_params_zero_grad(&m->params);
    gc_opts o = gc_default();
    o.eps = 3e-4;   /* small: larger steps cross LeakyReLU kinks in the many tiny maps */
    o.atol = 1e-3;
    o.max_elems = 24;
    char name[64];
    snprintf(name, sizeof name, "unet2d %s (input + params)", loss_kind);
    assert_true(gradcheck(ctx, name, gc_loss, ins, 5, &u, o));
    segc_ctx_free(ctx);
    model_free(m);
}
static void test_gradcheck_dice_ce(void **state) { run_gradcheck("dice_ce"); }
static void test_gradcheck_regions(void **state) { run_gradcheck("regions"); }

/* init: Kaiming normal (a = 0.01, fan_in = size(1) * k * k), biases 0, norm weights 1; deterministic */
static void test_init(void **state) {
    char err[256];
    segc_model *m = family_model(4, 4, err, sizeof err, "filters", "[16, 32, 64, 64]", NULL);
    segc_model *m2 = family_model(4, 4, err, sizeof err, "filters", "[16, 32, 64, 64]", NULL);
    m->family->init(m, 42);
    m2->family->init(m2, 42);
    assert_memory_equal(m->params.data, m2->params.data, (size_t)m->params.total * sizeof(float));
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        const float *d = segc_f32(t);
        int64_t n = segc_numel(t);
        if (t->ndim == 4) {
            double ss = 0;
            for (int64_t k = 0; k < n; k++) ss += (double)d[k] * d[k];
            double want = sqrt(2.0 / (1.0 + 1e-4)) / sqrt((double)(t->shape[1] * t->shape[2] * t->shape[3]));
            double got = sqrt(ss / (double)n);
            if (n >= 1000 && fabs(got / want - 1) > 0.1) fail_msg("%s: std %.4g, want %.4g", t->name, got, want);
        } else {
            float v = strstr(t->name, ".norm") && strstr(t->name, ".weight") ? 1.0f : 0.0f;
            for (int64_t k = 0; k < n; k++) assert_true(d[k] == v);
        }
    }
    model_free(m);
    model_free(m2);
}

static void test_postprocess(void **state) {
    segc_model *m = fixture_model("regions");
    segc_ctx *ctx = segc_ctx_new(0);
    /* pixels: nothing, WT only, WT+TC, WT+TC+ET, ET alone (ET overrides) */
    static const float p[3][5] = {{0.1f, 0.9f, 0.9f, 0.9f, 0.2f}, {0.2f, 0.3f, 0.7f, 0.8f, 0.1f}, {0.3f, 0.1f, 0.4f, 0.6f, 0.7f}};
    segc_tensor *probs = segc_tensor_new(ctx, SEGC_F32, 4, SHAPE(1, 3, 1, 5));
    memcpy(probs->data, p, sizeof p);
    segc_tensor *lab = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(1, 1, 5));
    assert_true(m->family->postprocess(ctx, m, probs, lab));
    const uint8_t want[5] = {0, 2, 1, 4, 4};
    assert_memory_equal(lab->data, want, 5);
    model_free(m);
    /* softmax models: argmax over the classes */
    m = fixture_model("dice_ce");
    segc_tensor *pc = segc_tensor_new(ctx, SEGC_F32, 4, SHAPE(1, 5, 1, 2));
    static const float q[5][2] = {{0.1f, 0.5f}, {0.2f, 0.1f}, {0.4f, 0.1f}, {0.2f, 0.2f}, {0.1f, 0.1f}};
    memcpy(pc->data, q, sizeof q);
    segc_tensor *lc = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(1, 1, 2));
    assert_true(m->family->postprocess(ctx, m, pc, lc));
    assert_int_equal(((uint8_t *)lc->data)[0], 2);
    assert_int_equal(((uint8_t *)lc->data)[1], 0);
    /* a label outside the classes is an error naming it */
    segc_tensor *logits = t_randn(ctx, 4, SHAPE(1, 5, 2, 2), 1.0f, false);
    segc_tensor *bad = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(1, 2, 2));
    ((uint8_t *)bad->data)[3] = 7;
    assert_null(segc_unet2d_dice_ce(ctx, logits, bad, 255));
    assert_non_null(strstr(segc_last_error(ctx), "label 7"));
    segc_ctx_free(ctx);
    model_free(m);
}

/* segc safetensors round trip under the MONAI names; a different depth is refused naming the tensor */
static void test_weights_roundtrip(void **state) {
    segc_model *m = fixture_model("dice_ce");
    load_params(m, "dice/param/");
    char path[] = "/tmp/segc_unet2d_XXXXXX", err[512];
    close(mkstemp(path));
    assert_true(segc_params_save(&m->params, path, NULL, 0, err, sizeof err));
    segc_model *m2 = fixture_model("dice_ce");
    segc_load_report rep;
    if (!segc_params_load(&m2->params, path, true, &rep, err, sizeof err)) fail_msg("load: %s", err);
    assert_int_equal(rep.loaded, m->params.n);
    assert_memory_equal(m->params.data, m2->params.data, (size_t)m->params.total * sizeof(float));
    segc_model *m3 = family_model(5, 4, err, sizeof err, "filters", "[8, 16, 16]", "deep_supr_num", "1", NULL);
    assert_non_null(m3);
    assert_false(segc_params_load(&m3->params, path, true, &rep, err, sizeof err));
    print_message("  strict load of a deeper net: %s\n", err);
    assert_non_null(strstr(err, "upsamples.1.transp_conv.conv.weight"));
    unlink(path);
    model_free(m);
    model_free(m2);
    model_free(m3);
}

int main(void) {
    /* poisoned step arenas (NaN fill): a kernel reading memory it never wrote
     * cannot hide behind identical leftovers of the previous step; set before
     * any context exists (and inherited by child processes) */
    setenv("SEGC_ARENA_POISON", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_match_monai),
        cmocka_unit_test(test_dice_ce_parity_and_sgd),
        cmocka_unit_test(test_regions_parity),
        cmocka_unit_test(test_bf16_forward),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_gradcheck_dice_ce),
        cmocka_unit_test(test_gradcheck_regions),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_postprocess),
        cmocka_unit_test(test_weights_roundtrip),
    };
    return cmocka_run_group_tests_name("unet2d", tests, setup, teardown);
}
