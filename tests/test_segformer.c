/* SegFormer parity with HuggingFace transformers (fixtures from tests/fixtures/gen_segformer.py):
 * logits, loss, every parameter gradient and one AdamW step; weight loading by hub names. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/optim.h"
#include "segc/segformer.h"

static segc_st_file *fx;

static int setup(void **state) { fx = fx_open("segformer.safetensors"); return fx ? 0 : -1; }
static int teardown(void **state) { segc_st_close(fx); return 0; }

static const segc_st_entry *entry(const char *fmt, const char *name) {
    char key[320];
    snprintf(key, sizeof key, fmt, name);
    return segc_st_get(fx, key);
}

static segc_tensor *input(segc_ctx *ctx, const char *key) {
    const segc_st_entry *e = segc_st_get(fx, key);
    assert_non_null(e);
    segc_tensor *t = segc_tensor_new(ctx, e->dtype, e->ndim, e->shape);
    memcpy(t->data, e->data, e->nbytes);
    return t;
}

static segc_segformer *tiny_model(void) {
    segc_segformer_config c;
    assert_true(segc_segformer_preset(&c, "b0", 5));
    long v[4];
    fx_param_ints(fx, "tiny", "hidden", v, 4);
    for (int s = 0; s < 4; s++) c.hidden[s] = (int)v[s];
    fx_param_ints(fx, "tiny", "depths", v, 4);
    for (int s = 0; s < 4; s++) c.depths[s] = (int)v[s];
    fx_param_ints(fx, "tiny", "heads", v, 4);
    for (int s = 0; s < 4; s++) c.heads[s] = (int)v[s];
    c.decoder_hidden = (int)fx_param_int(fx, "tiny", "decoder_hidden", 0);
    c.drop_path_rate = 0;
    c.classifier_dropout = 0;
    char err[256];
    segc_segformer *m = segc_segformer_new(&c, err, sizeof err);
    assert_non_null(m);
    return m;
}

static void load_tiny_params(segc_segformer *m) {
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        const segc_st_entry *e = entry("tiny/param/%s", t->name);
        if (!e) fail_msg("fixture lacks tiny/param/%s", t->name);
        if (e->dtype == SEGC_I64) { int64_t v; memcpy(&v, e->data, 8); segc_f32(t)[0] = (float)v; }
        else { assert_int_equal(e->nbytes, segc_nbytes(t)); memcpy(t->data, e->data, e->nbytes); }
    }
}

static void test_tiny_forward_backward_adamw(void **state) {
    segc_segformer *m = tiny_model();
    load_tiny_params(m);
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *x = input(ctx, "tiny/x"), *labels = input(ctx, "tiny/labels");
    segc_tensor *logits = segc_segformer_forward(ctx, m, x);
    if (!logits) fail_msg("forward: %s", segc_last_error(ctx));
    bool ok = fx_close_norm("tiny logits", segc_f32(logits), segc_f32(fx_tensor(ctx, fx, "tiny", "logits")),
                            segc_numel(logits), 0, 1e-4);
    segc_tensor *loss = segc_segformer_loss(ctx, logits, labels, 255);
    assert_non_null(loss);
    ok &= fx_close("tiny loss", loss, fx_tensor(ctx, fx, "tiny", "loss"), 1e-5);
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, loss)) fail_msg("backward: %s", segc_last_error(ctx));
    int checked = 0;
    double max_norm = 0;
    for (int i = 0; i < m->params.n; i++) {
        const segc_st_entry *g = entry("tiny/grad/%s", m->params.t[i]->name);
        if (g) max_norm = fmax(max_norm, fx_norm(g->data, segc_numel(m->params.t[i])));
    }
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        const segc_st_entry *g = entry("tiny/grad/%s", t->name);
        if (!g) continue;   /* buffers */
        char what[200];
        snprintf(what, sizeof what, "grad %s", t->name);
        ok &= fx_close_norm(what, t->grad, g->data, segc_numel(t), 1e-2 * max_norm, 1e-4);
        checked++;
    }
    assert_true(checked > 50);
    /* running statistics after one training forward (momentum 0.1, unbiased variance) */
    segc_tensor *rv = segc_params_find(&m->params, "decode_head.batch_norm.running_var");
    const segc_st_entry *erv = entry("tiny/after_fwd/%s", "decode_head.batch_norm.running_var");
    segc_tensor want_rv = {.dtype = SEGC_F32, .ndim = 1, .shape = {erv->shape[0]}, .data = (void *)erv->data};
    ok &= fx_close("bn running_var", rv, &want_rv, 1e-5);
    /* one AdamW step, lr 1e-3, wd 0.01 on every trainable tensor (torch.optim.AdamW defaults otherwise),
     * from the reference gradients: a first Adam step is sign-like, so it would amplify f32 noise in
     * gradients that are zero in exact arithmetic (a key bias under softmax) */
    for (int i = 0; i < m->params.n; i++) {
        const segc_st_entry *g = entry("tiny/grad/%s", m->params.t[i]->name);
        if (g) memcpy(m->params.t[i]->grad, g->data, g->nbytes);
    }
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 1e-3);
    oc.weight_decay = 0.01;
    char err[256];
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    assert_non_null(opt);
    segc_optimizer_step(opt, 1e-3);
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        const segc_st_entry *a = entry("tiny/adamw/%s", t->name);
        if (!a) continue;
        segc_tensor want = {.dtype = SEGC_F32, .ndim = a->ndim, .data = (void *)a->data};
        memcpy(want.shape, a->shape, sizeof want.shape);
        char what[200];
        snprintf(what, sizeof what, "adamw %s", t->name);
        ok &= fx_close(what, t, &want, 1e-5);
    }
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    segc_segformer_free(m);
    assert_true(ok);
}

/* mirrors formula_value() in gen_segformer.py */
static void formula_fill(segc_tensor *t) {
    const char *name = t->name;
    long h = 0;
    for (size_t i = 0; name[i]; i++) h += (long)(i + 1) * (unsigned char)name[i];
    h %= 997;
    int64_t n = segc_numel(t);
    const char *leaf = strrchr(name, '.') + 1;
    float *d = segc_f32(t);
    int64_t fan_in = t->ndim ? n / t->shape[0] : 1;
    for (int64_t i = 0; i < n; i++) {
        double r = sin((double)i * 12.9898 + (double)h * 0.0782) * 43758.5453;
        double wave = 2.0 * (r - floor(r)) - 1.0, v;
        if (!strcmp(leaf, "running_var")) v = 1.0 + 0.25 * fabs(wave);
        else if (!strcmp(leaf, "running_mean") || !strcmp(leaf, "bias")) v = 0.02 * wave;
        else if (!strcmp(leaf, "num_batches_tracked")) v = 0;
        else if (t->ndim == 1) v = 1.0 + 0.1 * wave;
        else v = wave * sqrt(3.0 / (double)fan_in);
        d[i] = (float)v;
    }
}

static void test_b0_parity(void **state) {
    segc_segformer_config c;
    assert_true(segc_segformer_preset(&c, "b0", 150));
    c.drop_path_rate = 0;
    c.classifier_dropout = 0;
    char err[256];
    segc_segformer *m = segc_segformer_new(&c, err, sizeof err);
    assert_non_null(m);
    assert_int_equal(segc_params_count(&m->params, true), 3752694);   /* HF B0-ADE: 3,752,694 parameters */
    for (int i = 0; i < m->params.n; i++) formula_fill(m->params.t[i]);
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *x = input(ctx, "b0/x"), *labels = input(ctx, "b0/labels");
    segc_tensor *logits = segc_segformer_forward(ctx, m, x);
    if (!logits) fail_msg("forward: %s", segc_last_error(ctx));
    /* the fixture keeps the first classes' logits only */
    segc_tensor *want_logits = fx_tensor(ctx, fx, "b0", "logits");
    bool ok = fx_close_norm("b0 logits (first classes)", segc_f32(logits), segc_f32(want_logits),
                            segc_numel(want_logits), 0, 1e-4);
    segc_tensor *loss = segc_segformer_loss(ctx, logits, labels, 255);
    ok &= fx_close("b0 loss", loss, fx_tensor(ctx, fx, "b0", "loss"), 1e-5);
    segc_params_zero_grad(&m->params);
    assert_true(segc_backward(ctx, loss));
    int checked = 0;
    double worst_stat = 0, max_norm = 0;
    for (int i = 0; i < m->params.n; i++) {
        const segc_st_entry *gh = entry("b0/gradhead/%s", m->params.t[i]->name);
        if (gh) max_norm = fmax(max_norm, fx_norm(gh->data, gh->shape[0]));
    }
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        const segc_st_entry *gh = entry("b0/gradhead/%s", t->name), *gs = entry("b0/gradstat/%s", t->name);
        if (!gh) continue;
        char what[200];
        snprintf(what, sizeof what, "b0 grad[:64] %s", t->name);
        ok &= fx_close_norm(what, t->grad, gh->data, gh->shape[0], 1e-2 * max_norm, 1e-4);
        /* whole-tensor sum and absolute sum, relative to the absolute sum */
        const float *st = gs->data;
        double s = 0, a = 0;
        for (int64_t k = 0; k < segc_numel(t); k++) { s += t->grad[k]; a += fabs(t->grad[k]); }
        double scale = fmax(st[1], 1e-2 * max_norm);
        double e = fmax(fabs(a - st[1]), fabs(s - st[0])) / scale;
        if (e > 5e-4) print_message("  b0 grad sums %s: sum %.6g want %.6g, abs sum %.6g want %.6g\n", t->name, s, st[0], a, st[1]);
        worst_stat = fmax(worst_stat, e);
        checked++;
    }
    /* whole-tensor signed sums over up to 369k gradients cancel heavily, so they get a looser bar than
     * the element checks above (an -O1 sanitizer build sums in another order: ~1.5e-4) */
    print_message("  b0 gradient sums: worst relative error %.3g over %d tensors\n", worst_stat, checked);
    ok &= worst_stat < 5e-4;
    segc_ctx_free(ctx);
    segc_segformer_free(m);
    assert_true(ok);
}

static void test_weights_roundtrip_and_mismatch(void **state) {
    segc_segformer *m = tiny_model();
    load_tiny_params(m);
    char path[] = "/tmp/segc_sf_XXXXXX", err[512];
    close(mkstemp(path));
    assert_true(segc_params_save(&m->params, path, NULL, 0, err, sizeof err));
    segc_segformer *m2 = tiny_model();
    segc_load_report rep;
    assert_true(segc_params_load(&m2->params, path, true, &rep, err, sizeof err));
    assert_int_equal(rep.loaded, m->params.n);
    assert_memory_equal(m->params.data, m2->params.data, (size_t)m->params.total * 4);
    /* a different model (B0, 150 classes) is refused in strict mode naming the first mismatching tensor */
    segc_segformer_config c;
    segc_segformer_preset(&c, "b0", 150);
    segc_segformer *b0 = segc_segformer_new(&c, err, sizeof err);
    assert_false(segc_params_load(&b0->params, path, true, &rep, err, sizeof err));
    assert_non_null(strstr(err, "segformer.encoder.patch_embeddings.0.proj.weight"));
    assert_non_null(strstr(err, "[8, 3, 7, 7]"));
    /* non-strict: reports and loads what fits */
    assert_true(segc_params_load(&b0->params, path, false, &rep, err, sizeof err));
    assert_true(rep.mismatched > 0 && rep.missing > 0);
    unlink(path);
    assert_false(segc_params_load(&b0->params, "/nonexistent.safetensors", false, &rep, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent.safetensors"));
    segc_segformer_free(b0);
    segc_segformer_free(m);
    segc_segformer_free(m2);
}

static void test_bad_config_and_input(void **state) {
    segc_segformer_config c;
    assert_false(segc_segformer_preset(&c, "b9", 10));
    segc_segformer_preset(&c, "b0", 10);
    c.heads[1] = 3;   /* 64 not divisible by 3 */
    char err[256];
    assert_null(segc_segformer_new(&c, err, sizeof err));
    assert_non_null(strstr(err, "stage 1"));
    segc_segformer *m = tiny_model();
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *x = segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 1, 32, 32));
    assert_null(segc_segformer_forward(ctx, m, x));
    assert_non_null(strstr(segc_last_error(ctx), "[N, 3, H, W], found [1, 1, 32, 32]"));
    segc_ctx_free(ctx);
    segc_segformer_free(m);
}

int main(void) {
    /* poisoned step arenas (NaN fill): a kernel reading memory it never wrote
     * cannot hide behind identical leftovers of the previous step; set before
     * any context exists (and inherited by child processes) */
    setenv("SEGC_ARENA_POISON", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_forward_backward_adamw),
        cmocka_unit_test(test_b0_parity),
        cmocka_unit_test(test_weights_roundtrip_and_mismatch),
        cmocka_unit_test(test_bad_config_and_input),
    };
    return cmocka_run_group_tests_name("segformer", tests, setup, teardown);
}
