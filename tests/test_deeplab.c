/* DeepLabV3+ and ResNet parity with a PyTorch twin of mmseg's modules (fixtures from
 * tests/fixtures/gen_deeplab.py): parameter names and order, training-mode logits (main + aux),
 * mmseg's loss, every gradient, BN running statistics after the forward, one SGD step, at output
 * stride 8 (ResNet-18 V1c) and 16 (ResNet-50 V1c, multi-grid); a plain-stem backbone loaded from
 * torchvision names; the name map; bad backbone checkpoints; Dropout2d; config errors; bf16; and a
 * bitwise resume of a tiny run on CamVid. The family is reached through its function pointers. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "common/train_check.h"
#include "segc/deeplabv3plus.h"
#include "segc/model.h"
#include "segc/optim.h"
#include "segc/trainer.h"

extern const segc_model_family segc_family_deeplabv3plus;

#define BF16_EVAL_TOL 1e-2   /* measured 2.7e-3 */
#define BF16_LOSS_TOL 5e-3   /* measured 5.2e-4 */

static segc_st_file *fx;

static int setup(void **state) { fx = fx_open("deeplab.safetensors"); return fx ? 0 : -1; }
static int teardown(void **state) { segc_st_close(fx); return 0; }

static const segc_st_entry *entry(const char *cas, const char *kind, const char *name) {
    char key[400];
    snprintf(key, sizeof key, "%s/%s/%s", cas, kind, name);
    return segc_st_get(fx, key);
}

static segc_tensor *input(segc_ctx *ctx, const char *key) {
    const segc_st_entry *e = segc_st_get(fx, key);
    if (!e) fail_msg("fixture lacks %s", key);
    segc_tensor *t = segc_tensor_new(ctx, e->dtype, e->ndim, e->shape);
    memcpy(t->data, e->data, e->nbytes);
    return t;
}

/* entry values as f32 (I64 counters converted) */
static void entry_f32(const segc_st_entry *e, float *dst, int64_t n) {
    if (e->dtype == SEGC_I64) {
        int64_t v;
        memcpy(&v, e->data, 8);
        dst[0] = (float)v;
    } else {
        assert_int_equal(e->dtype, SEGC_F32);
        assert_int_equal((int64_t)e->nbytes, n * 4);
        memcpy(dst, e->data, e->nbytes);
    }
}

/* A model through the family interface; opts are key/value pairs, NULL-terminated. NULL + err on failure. */
static segc_model *family_model(const char *variant, int num_classes, char *err, size_t n, ...) {
    segc_model_opt opts[SEGC_MODEL_MAX_OPTS];
    int n_opts = 0;
    va_list ap;
    va_start(ap, n);
    for (const char *k; (k = va_arg(ap, const char *)) != NULL && n_opts < SEGC_MODEL_MAX_OPTS; n_opts++) {
        snprintf(opts[n_opts].key, sizeof opts[n_opts].key, "%s", k);
        snprintf(opts[n_opts].value, sizeof opts[n_opts].value, "%s", va_arg(ap, const char *));
    }
    va_end(ap);
    segc_model_spec s = {.type = "deeplabv3plus", .variant = variant, .num_classes = num_classes, .in_channels = 3,
                         .opts = opts, .n_opts = n_opts};
    return segc_model_new(&s, err, n);
}

/* the generator's CASES, as family keys */
static segc_model *case_model(const char *cas) {
    char err[512];
    segc_model *m = NULL;
    if (!strcmp(cas, "os8"))
        m = family_model("r18", 5, err, sizeof err, "output_stride", "8", "stem_channels", "8", "base_channels", "2",
                         "channels", "8", "c1_channels", "4", "aux_channels", "4", "dropout", "0", NULL);
    else if (!strcmp(cas, "os16"))
        m = family_model("r50", 5, err, sizeof err, "output_stride", "16", "multi_grid", "[1, 2, 4]", "stem_channels",
                         "8", "base_channels", "2", "channels", "8", "c1_channels", "4", "aux_channels", "4",
                         "dropout", "0", NULL);
    else
        m = family_model("r18", 5, err, sizeof err, "stem", "plain", "stem_channels", "8", "base_channels", "2",
                         "channels", "8", "c1_channels", "4", "aux_channels", "8", "dropout", "0", NULL);
    if (!m) fail_msg("create %s: %s", cas, err);
    return m;
}

static void load_case(segc_model *m, const char *cas) {
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        const segc_st_entry *e = entry(cas, "param", t->name);
        if (!e) fail_msg("fixture lacks %s/param/%s", cas, t->name);
        entry_f32(e, segc_f32(t), segc_numel(t));
    }
}

/* the state_dict keys of the twin, in order, are segc's parameter store */
static void check_names(const char *cas) {
    segc_model *m = case_model(cas);
    cJSON *meta = cJSON_Parse(segc_st_meta(fx, cas));
    cJSON *names = cJSON_GetObjectItemCaseSensitive(meta, "names");
    assert_true(cJSON_IsArray(names));
    int i = 0;
    for (cJSON *it = names->child; it; it = it->next, i++) {
        if (i >= m->params.n) fail_msg("%s: the twin has more tensors than segc (%s)", cas, it->valuestring);
        if (strcmp(m->params.t[i]->name, it->valuestring) != 0)
            fail_msg("%s tensor %d: segc %s, mmseg twin %s", cas, i, m->params.t[i]->name, it->valuestring);
    }
    assert_int_equal(i, m->params.n);
    cJSON_Delete(meta);
    segc_model_free(m);
}

static void test_names_match_mmseg(void **state) {
    check_names("os8");
    check_names("os16");
    check_names("plain");
}

/* one case: forward (train mode), loss, backward, BN buffers, SGD step */
static void run_parity(const char *cas) {
    segc_model *m = case_model(cas);
    load_case(m, cas);
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    segc_model_out out;
    if (!m->family->forward(ctx, m, input(ctx, "x"), &out)) fail_msg("%s forward: %s", cas, segc_last_error(ctx));
    assert_int_equal(out.n_maps, 2);
    bool ok = true;
    char what[300];
    const char *keys[2] = {"logits", "aux"};
    for (int i = 0; i < 2; i++) {
        segc_tensor *want = fx_tensor(ctx, fx, cas, keys[i]);
        assert_true(segc_same_shape(out.maps[i], want));
        snprintf(what, sizeof what, "%s %s", cas, keys[i]);
        ok &= fx_close_norm(what, segc_f32(out.maps[i]), segc_f32(want), segc_numel(want), 0, 3e-4);
    }
    segc_targets tg = {.labels = input(ctx, "labels"), .ignore_index = 255};
    segc_tensor *loss = m->family->loss(ctx, m, &out, &tg);
    if (!loss) fail_msg("%s loss: %s", cas, segc_last_error(ctx));
    snprintf(what, sizeof what, "%s loss", cas);
    ok &= fx_close(what, loss, fx_tensor(ctx, fx, cas, "loss"), 1e-5);
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, loss)) fail_msg("%s backward: %s", cas, segc_last_error(ctx));
    double max_norm = 0;
    for (int i = 0; i < m->params.n; i++)
        if (m->params.trainable[i]) {
            const segc_st_entry *g = entry(cas, "grad", m->params.t[i]->name);
            if (!g) fail_msg("fixture lacks %s/grad/%s", cas, m->params.t[i]->name);
            max_norm = fmax(max_norm, fx_norm(g->data, segc_numel(m->params.t[i])));
        }
    double worst = 0;
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        int64_t n = segc_numel(t);
        if (!m->params.trainable[i]) {   /* BN buffers after the training forward */
            const segc_st_entry *b = entry(cas, "bn", t->name);
            if (!b) fail_msg("fixture lacks %s/bn/%s", cas, t->name);
            float *want = malloc((size_t)n * sizeof(float));
            entry_f32(b, want, n);
            snprintf(what, sizeof what, "%s buffer %s", cas, t->name);
            ok &= fx_close_norm(what, segc_f32(t), want, n, 0, 1e-5);
            free(want);
            continue;
        }
        const float *g = entry(cas, "grad", t->name)->data;
        double d = 0, w = 0;
        for (int64_t k = 0; k < n; k++) d += ((double)t->grad[k] - g[k]) * ((double)t->grad[k] - g[k]), w += (double)g[k] * g[k];
        worst = fmax(worst, sqrt(d) / fmax(sqrt(w), 1e-2 * max_norm));
        snprintf(what, sizeof what, "%s grad %s", cas, t->name);
        ok &= fx_close_norm(what, t->grad, g, n, 1e-2 * max_norm, 3e-3);
    }
    print_message("  %s: worst norm-relative gradient error %.2e\n", cas, worst);
    /* one mmseg SGD step (lr 0.01, momentum 0.9, weight decay 5e-4) from the reference gradients */
    for (int i = 0; i < m->params.n; i++)
        if (m->params.trainable[i]) memcpy(m->params.t[i]->grad, entry(cas, "grad", m->params.t[i]->name)->data,
                                           (size_t)segc_numel(m->params.t[i]) * sizeof(float));
    load_case(m, cas);   /* parameters as before the forward (the buffers moved) */
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_SGD, 0.01);
    oc.momentum = 0.9;
    oc.weight_decay = 5e-4;
    char err[256];
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    if (!opt) fail_msg("optimizer: %s", err);
    segc_optimizer_step(opt, 0.01);
    for (int i = 0; i < m->params.n; i++) {
        if (!m->params.trainable[i]) continue;
        segc_tensor *t = m->params.t[i];
        const segc_st_entry *e = entry(cas, "sgd", t->name);
        snprintf(what, sizeof what, "%s sgd %s", cas, t->name);
        ok &= fx_close_norm(what, segc_f32(t), e->data, segc_numel(t), 0, 1e-6);
    }
    segc_optimizer_free(opt);
    segc_ctx_free(ctx);
    segc_model_free(m);
    assert_true(ok);
}

static void test_parity_os8_r18(void **state) { run_parity("os8"); }
static void test_parity_os16_r50_multigrid(void **state) { run_parity("os16"); }

/* writes the fixture's plain/tv/ backbone (torchvision names, fc included) to its own file;
 * edit (optional) changes one tensor's shape to make a bad checkpoint */
static void write_tv(const char *path, const char *drop_shape_of) {
    segc_st_writer *w = segc_st_writer_new();
    for (int i = 0; i < segc_st_count(fx); i++) {
        const segc_st_entry *e = segc_st_at(fx, i);
        if (strncmp(e->name, "plain/tv/", 9) != 0) continue;
        const char *nm = e->name + 9;
        if (drop_shape_of && !strcmp(nm, drop_shape_of)) {   /* one input channel fewer */
            int64_t shape[4] = {e->shape[0], e->shape[1] - 1, e->shape[2], e->shape[3]};
            segc_st_writer_add(w, nm, e->dtype, e->ndim, shape, e->data);
        } else {
            segc_st_writer_add(w, nm, e->dtype, e->ndim, e->shape, e->data);
        }
    }
    char err[512];
    if (!segc_st_writer_save(w, path, err, sizeof err)) fail_msg("%s", err);
    segc_st_writer_free(w);
}

static void test_plain_stem_from_torchvision(void **state) {
    segc_model *m = case_model("plain");
    char path[] = "/tmp/segc_tv_XXXXXX", err[512];
    close(mkstemp(path));
    write_tv(path, NULL);
    segc_load_report rep;
    if (!segc_resnet_load(&m->params, "backbone.", path, true, &rep, err, sizeof err)) fail_msg("load: %s", err);
    assert_int_equal(rep.unexpected, 2);   /* fc.weight, fc.bias */
    assert_int_equal(rep.missing, 0);
    assert_int_equal(rep.mismatched, 0);
    for (int i = 0; i < m->params.n; i++) {   /* the heads, in mmseg names */
        segc_tensor *t = m->params.t[i];
        if (strncmp(t->name, "backbone.", 9) == 0) continue;
        entry_f32(entry("plain", "param", t->name), segc_f32(t), segc_numel(t));
    }
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = false;
    segc_set_grad_enabled(ctx, false);
    segc_model_out out;
    if (!m->family->forward(ctx, m, input(ctx, "x"), &out)) fail_msg("forward: %s", segc_last_error(ctx));
    assert_int_equal(out.n_maps, 1);   /* no aux map in eval mode */
    segc_tensor *want = fx_tensor(ctx, fx, "plain", "logits");
    assert_true(fx_close_norm("plain eval logits", segc_f32(out.maps[0]), segc_f32(want), segc_numel(want), 0, 1e-4));
    /* the same file through the family key: checked at build, loaded at init over the random weights */
    segc_model *m2 = family_model("r18", 5, err, sizeof err, "stem", "plain", "stem_channels", "8", "base_channels", "2",
                                  "channels", "8", "c1_channels", "4", "backbone_pretrained", path, NULL);
    if (!m2) fail_msg("%s", err);
    m2->family->init(m2, 5);
    for (int i = 0; i < m2->params.n; i++) {
        segc_tensor *t = m2->params.t[i];
        if (strncmp(t->name, "backbone.", 9) != 0) continue;
        segc_tensor *t1 = segc_params_find(&m->params, t->name);
        if (memcmp(t->data, t1->data, segc_nbytes(t)) != 0) fail_msg("%s not loaded at init", t->name);
    }
    segc_model_free(m2);
    segc_ctx_free(ctx);
    unlink(path);
    segc_model_free(m);
}

static void test_name_map(void **state) {
    segc_model *m = case_model("plain"), *v = case_model("os8");
    char tv[200], back[200];
    int n = 0;
    for (int i = 0; i < m->params.n; i++) {
        const char *nm = m->params.t[i]->name;
        bool in_backbone = !strncmp(nm, "backbone.", 9);
        assert_int_equal(segc_resnet_name_to_torchvision(nm, "backbone.", tv, sizeof tv), in_backbone);
        if (!in_backbone) continue;
        assert_true(segc_resnet_name_from_torchvision(tv, "backbone.", back, sizeof back));
        assert_string_equal(back, nm);
        /* every plain-stem name is one the torchvision twin has */
        char key[260];
        snprintf(key, sizeof key, "plain/tv/%s", tv);
        if (!segc_st_get(fx, key)) fail_msg("%s -> %s: not a torchvision name", nm, tv);
        n++;
    }
    assert_true(n > 50);
    assert_true(segc_resnet_name_to_torchvision("backbone.layer1.0.downsample.1.running_var", "backbone.", tv, sizeof tv));
    assert_string_equal(tv, "layer1.0.downsample.1.running_var");
    assert_false(segc_resnet_name_from_torchvision("fc.weight", "backbone.", back, sizeof back));
    /* the V1c stem has no torchvision counterpart */
    assert_false(segc_resnet_name_to_torchvision("backbone.stem.3.weight", "backbone.", tv, sizeof tv));
    assert_non_null(segc_params_find(&v->params, "backbone.stem.3.weight"));
    assert_non_null(segc_params_find(&v->params, "backbone.stem.7.running_mean"));
    segc_model_free(m);
    segc_model_free(v);
}

static void test_bad_backbone_checkpoint(void **state) {
    char path[] = "/tmp/segc_tvbad_XXXXXX", err[512];
    close(mkstemp(path));
    write_tv(path, "layer2.0.conv1.weight");
    segc_model *m = case_model("plain");
    assert_false(segc_resnet_load(&m->params, "backbone.", path, true, NULL, err, sizeof err));
    print_message("  other shape: %s\n", err);
    assert_non_null(strstr(err, "layer2.0.conv1.weight"));
    assert_null(strchr(err, '\n'));
    /* through the family: the model is not built, the message names the key and the tensor */
    assert_null(family_model("r18", 5, err, sizeof err, "stem", "plain", "stem_channels", "8", "base_channels", "2",
                             "backbone_pretrained", path, NULL));
    assert_non_null(strstr(err, "model.backbone_pretrained"));
    assert_non_null(strstr(err, "layer2.0.conv1.weight"));
    /* a V1c model given torchvision's 7x7 stem */
    write_tv(path, NULL);
    segc_model *v = case_model("os8");
    assert_false(segc_resnet_load(&v->params, "backbone.", path, true, NULL, err, sizeof err));
    print_message("  v1c from torchvision: %s\n", err);
    assert_non_null(strstr(err, "backbone.stem.0.weight"));
    assert_non_null(strstr(err, "model.stem=plain"));
    /* another depth: ResNet-18 names in a ResNet-50 are mismatches, named */
    segc_model *r50 = family_model("r50", 5, err, sizeof err, "stem", "plain", "stem_channels", "8", "base_channels",
                                   "2", NULL);
    assert_non_null(r50);
    assert_false(segc_resnet_load(&r50->params, "backbone.", path, true, NULL, err, sizeof err));
    print_message("  r18 into r50: %s\n", err);
    assert_non_null(strstr(err, "layer1.0.conv1.weight"));
    /* non-strict: a report, no error */
    segc_load_report rep;
    assert_true(segc_resnet_load(&r50->params, "backbone.", path, false, &rep, err, sizeof err));
    assert_true(rep.mismatched > 0 && rep.missing > 0);
    assert_false(segc_resnet_load(&v->params, "backbone.", "/nonexistent/x.safetensors", false, NULL, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/x.safetensors"));
    segc_model_free(r50);
    segc_model_free(v);
    segc_model_free(m);
    unlink(path);
}

/* Dropout2d: whole planes kept (scaled 1/(1-p)) or zeroed, from ctx->rng; identity in eval */
static void test_dropout2d(void **state) {
    segc_ctx *ctx = segc_ctx_new(3);
    ctx->training = true;
    const int N = 4, C = 64, HW = 6;
    segc_tensor *x = t_uniform(ctx, 4, SHAPE(N, C, 2, 3), 0.5f, 1.5f, true);
    const segc_rng before = ctx->rng;
    segc_tensor *y = segc_deeplab_dropout2d(ctx, x, 0.25f);
    assert_non_null(y);
    int dropped = 0;
    for (int p = 0; p < N * C; p++) {
        const float *xv = segc_f32(x) + p * HW, *yv = segc_f32(y) + p * HW;
        bool zero = yv[0] == 0.0f;
        dropped += zero;
        for (int k = 0; k < HW; k++)
            if (zero ? yv[k] != 0.0f : fabsf(yv[k] - xv[k] / 0.75f) > 1e-6f) fail_msg("plane %d not whole", p);
    }
    assert_true(dropped > 30 && dropped < 100);   /* 64 expected of 256 */
    /* gradient: the same mask */
    segc_tensor *s = segc_sum(ctx, segc_mul(ctx, y, y), NULL, 0, false);
    assert_true(segc_backward(ctx, s));
    for (int i = 0; i < N * C * HW; i++) {
        float want = 2.0f * segc_f32(y)[i] * (segc_f32(y)[i] != 0.0f ? 1.0f / 0.75f : 0.0f);
        if (fabsf(x->grad[i] - want) > 1e-5f * fmaxf(1.0f, fabsf(want))) fail_msg("grad %d: %g vs %g", i, x->grad[i], want);
    }
    /* the same seed and offset give the same planes; the stream moves on */
    segc_ctx *c2 = segc_ctx_new(3);
    c2->training = true;
    c2->rng = before;
    segc_tensor *x2 = segc_tensor_new(c2, SEGC_F32, 4, SHAPE(N, C, 2, 3));
    memcpy(x2->data, x->data, segc_nbytes(x));
    segc_tensor *y2 = segc_deeplab_dropout2d(c2, x2, 0.25f);
    assert_memory_equal(y->data, y2->data, segc_nbytes(y));
    segc_tensor *y3 = segc_deeplab_dropout2d(c2, x2, 0.25f);
    assert_true(memcmp(y->data, y3->data, segc_nbytes(y)) != 0);
    c2->training = false;
    assert_ptr_equal(segc_deeplab_dropout2d(c2, x2, 0.25f), x2);
    assert_null(segc_deeplab_dropout2d(c2, x2, 1.5f));
    assert_non_null(strstr(segc_last_error(c2), "dropout2d"));
    segc_ctx_free(c2);
    segc_ctx_free(ctx);
}

static void test_config_errors(void **state) {
    char err[512];
    assert_null(family_model("r18", 5, err, sizeof err, "output_stride", "12", NULL));
    assert_non_null(strstr(err, "model.output_stride"));
    assert_null(family_model("r50", 5, err, sizeof err, "multi_grid", "[1, 2]", NULL));
    assert_non_null(strstr(err, "model.multi_grid"));
    print_message("  multi-grid: %s\n", err);
    assert_null(family_model("r50", 5, err, sizeof err, "dilations", "[6, 12]", NULL));
    assert_non_null(strstr(err, "model.dilations"));
    assert_null(family_model("r152", 5, err, sizeof err, NULL));
    assert_non_null(strstr(err, "model.variant"));
    assert_null(family_model("r18", 5, err, sizeof err, "stem", "deep", NULL));
    assert_non_null(strstr(err, "model.stem"));
    assert_null(family_model("r18", 5, err, sizeof err, "dropout", "1", NULL));
    assert_non_null(strstr(err, "model.dropout"));
    assert_null(family_model("r18", 5, err, sizeof err, "output_strid", "8", NULL));
    assert_non_null(strstr(err, "did you mean 'model.output_stride'"));
    /* mmseg's deeplabv3plus_r50-d8 and r18-d8: parameter counts of the whole model (19 classes) */
    segc_model *m = family_model("r50", 19, err, sizeof err, NULL);
    assert_non_null(m);
    print_message("  r50-d8, 19 classes: %lld parameters\n", (long long)segc_params_count(&m->params, true));
    assert_int_equal(segc_params_find(&m->params, "decode_head.bottleneck.conv.weight")->shape[1], 2560);
    assert_int_equal(segc_params_find(&m->params, "decode_head.sep_bottleneck.0.depthwise_conv.conv.weight")->shape[0], 560);
    assert_int_equal(segc_params_find(&m->params, "auxiliary_head.convs.0.conv.weight")->shape[1], 1024);
    assert_int_equal(segc_params_find(&m->params, "decode_head.aspp_modules.3.depthwise_conv.conv.weight")->shape[1], 1);
    assert_non_null(segc_params_find(&m->params, "backbone.layer4.2.bn3.num_batches_tracked"));
    segc_model_free(m);
    m = family_model("r18", 19, err, sizeof err, "aux_head", "false", "sync_bn", "true", NULL);
    assert_non_null(m);
    assert_null(segc_params_find(&m->params, "auxiliary_head.conv_seg.weight"));
    assert_int_equal(segc_params_find(&m->params, "decode_head.c1_bottleneck.conv.weight")->shape[0], 12);
    segc_model_free(m);
    /* one image cannot train the image-pool BN: a clear line, not a crash */
    m = case_model("os8");
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    segc_model_out out;
    assert_false(m->family->forward(ctx, m, segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 3, 32, 32)), &out));
    assert_non_null(strstr(segc_last_error(ctx), "batch of >= 2"));
    ctx->training = false;   /* inference on one image is fine */
    segc_clear_error(ctx);
    segc_set_grad_enabled(ctx, false);
    assert_true(m->family->forward(ctx, m, segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 3, 33, 47)), &out));
    assert_int_equal(out.maps[0]->shape[2], 9);   /* stem /2 -> 17, max-pool /2 -> 9: layer 1's size */
    assert_int_equal(out.maps[0]->shape[3], 12);
    segc_ctx_free(ctx);
    segc_model_free(m);
}

/* avg_non_ignore: the mean over non-ignored pixels is mmseg's all-pixel mean x total / valid;
 * align_corners=true takes the unfused resize + CE path */
static void test_loss_variants(void **state) {
    char err[512];
    double l[3];
    const char *variants[3][4] = {{"avg_non_ignore", "false", "align_corners", "false"},
                                  {"avg_non_ignore", "true", "align_corners", "false"},
                                  {"avg_non_ignore", "false", "align_corners", "true"}};
    for (int v = 0; v < 3; v++) {
        segc_model *m = family_model("r18", 5, err, sizeof err, "output_stride", "8", "stem_channels", "8",
                                     "base_channels", "2", "channels", "8", "c1_channels", "4", "dropout", "0",
                                     "aux_head", "false", variants[v][0], variants[v][1], variants[v][2],
                                     variants[v][3], NULL);
        if (!m) fail_msg("%s", err);
        load_case(m, "os8");
        segc_ctx *ctx = segc_ctx_new(0);
        ctx->training = true;
        segc_model_out out;
        assert_true(m->family->forward(ctx, m, input(ctx, "x"), &out));
        assert_int_equal(out.n_maps, 1);   /* aux head off */
        segc_targets tg = {.labels = input(ctx, "labels"), .ignore_index = 255};
        segc_tensor *loss = m->family->loss(ctx, m, &out, &tg);
        if (!loss) fail_msg("%s", segc_last_error(ctx));
        l[v] = segc_f32(loss)[0];
        int64_t valid = 0, n = segc_numel(tg.labels);
        for (int64_t i = 0; i < n; i++) valid += ((uint8_t *)tg.labels->data)[i] != 255;
        if (v == 1) assert_true(fabs(l[0] * (double)n / (double)valid - l[1]) <= 1e-5 * l[1]);
        segc_ctx_free(ctx);
        segc_model_free(m);
    }
    assert_true(isfinite(l[2]) && l[2] > 0 && l[2] != l[0]);
}

/* bf16 activations stay close to f32 (weights cast per call, f32 statistics): logits in eval mode
 * (running statistics); in training mode the loss (batch statistics over 2 images amplify the
 * rounding of these 4..32-channel layers) and finite gradients */
static void test_bf16_forward(void **state) {
    segc_model *m = case_model("os8");
    load_case(m, "os8");
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *x = input(ctx, "x");
    segc_model_out o32, o16;
    ctx->training = false;
    assert_true(m->family->forward(ctx, m, x, &o32));
    if (!m->family->forward(ctx, m, segc_cast(ctx, x, SEGC_BF16), &o16)) fail_msg("bf16: %s", segc_last_error(ctx));
    assert_int_equal(o16.maps[0]->dtype, SEGC_BF16);
    segc_tensor *f = segc_cast(ctx, o16.maps[0], SEGC_F32);
    bool ok = fx_close_norm("bf16 eval logits vs f32", segc_f32(f), segc_f32(o32.maps[0]), segc_numel(f), 0, BF16_EVAL_TOL);
    ctx->training = true;
    segc_targets tg = {.labels = input(ctx, "labels"), .ignore_index = 255};
    assert_true(m->family->forward(ctx, m, x, &o32));
    load_case(m, "os8");   /* the same running statistics for the second forward */
    if (!m->family->forward(ctx, m, segc_cast(ctx, x, SEGC_BF16), &o16)) fail_msg("bf16: %s", segc_last_error(ctx));
    f = segc_cast(ctx, o16.maps[0], SEGC_F32);
    fx_close_norm("bf16 train logits vs f32 (reported)", segc_f32(f), segc_f32(o32.maps[0]), segc_numel(f), 0, 1e9);
    segc_tensor *l32 = m->family->loss(ctx, m, &o32, &tg), *l16 = m->family->loss(ctx, m, &o16, &tg);
    assert_non_null(l16);
    ok &= fx_close("bf16 train loss vs f32", l16, l32, BF16_LOSS_TOL);
    segc_params_zero_grad(&m->params);
    assert_true(segc_backward(ctx, l16));
    for (int64_t k = 0; k < m->params.total; k++)
        if (!isfinite(m->params.grad[k])) fail_msg("bf16 gradient not finite");
    segc_ctx_free(ctx);
    segc_model_free(m);
    assert_true(ok);
}

/* ---- ctx->free_activations: released and recomputed activations change no bit ---- */
typedef struct { double loss; float *grad, *stats; size_t high; } step_result;

static step_result one_step(segc_model *m, const float *init, bool free_acts, segc_dtype dt) {
    memcpy(m->params.data, init, (size_t)m->params.total * sizeof(float));
    segc_ctx *ctx = segc_ctx_new(7);
    ctx->training = true;
    ctx->free_activations = free_acts;
    const int64_t N = 2, H = 160, W = 160;
    segc_tensor *x = segc_tensor_new(ctx, SEGC_F32, 4, SHAPE(N, 3, H, W));
    segc_tensor *lab = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(N, H, W));
    segc_rng r;
    segc_rng_init(&r, 11);
    segc_rng_fill_normal(&r, segc_f32(x), segc_numel(x), 0, 1);
    for (int64_t i = 0; i < segc_numel(lab); i++) ((uint8_t *)lab->data)[i] = (uint8_t)((i / 37) % 5);
    segc_model_out o;
    segc_targets tg = {.labels = lab, .ignore_index = 255};
    if (!m->family->forward(ctx, m, dt == SEGC_BF16 ? segc_cast(ctx, x, SEGC_BF16) : x, &o))
        fail_msg("forward: %s", segc_last_error(ctx));
    segc_tensor *l = m->family->loss(ctx, m, &o, &tg);
    assert_non_null(l);
    step_result res = {.loss = segc_f32(l)[0]};
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, l)) fail_msg("backward: %s", segc_last_error(ctx));
    res.grad = malloc((size_t)m->params.total * sizeof(float));
    res.stats = malloc((size_t)m->params.total * sizeof(float));
    memcpy(res.grad, m->params.grad, (size_t)m->params.total * sizeof(float));
    memcpy(res.stats, m->params.data, (size_t)m->params.total * sizeof(float));   /* running statistics */
    res.high = ctx->arena.high_water;
    segc_ctx_free(ctx);
    return res;
}

static void test_free_activations_exact(void **state) {
    const char *variants[2] = {"r18", "r50"};
    for (int v = 0; v < 2; v++)
        for (int d = 0; d < 2; d++) {
            const segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
            char err[512];
            segc_model *m = family_model(variants[v], 5, err, sizeof err, "output_stride", v ? "16" : "8",
                                         "stem_channels", "8", "base_channels", "4", "channels", "16",
                                         "c1_channels", "8", "aux_channels", "8", "dropout", "0.1", NULL);
            if (!m) fail_msg("%s", err);
            segc_model_init(m, 3);
            float *init = malloc((size_t)m->params.total * sizeof(float));
            memcpy(init, m->params.data, (size_t)m->params.total * sizeof(float));
            step_result kept = one_step(m, init, false, dt), freed = one_step(m, init, true, dt);
            printf("  %s %s: loss %.6f, step arena peak %.2f MiB kept, %.2f MiB with free_activations\n", variants[v],
                   segc_dtype_name(dt), kept.loss, kept.high / 1048576.0, freed.high / 1048576.0);
            assert_true(kept.loss == freed.loss);
            assert_memory_equal(kept.grad, freed.grad, (size_t)m->params.total * sizeof(float));
            assert_memory_equal(kept.stats, freed.stats, (size_t)m->params.total * sizeof(float));
            assert_true(freed.high < kept.high);
            free(kept.grad), free(kept.stats), free(freed.grad), free(freed.stats), free(init);
            segc_model_free(m);
        }
}

/* model.channels_last: the backbone on NHWC activations computes the NCHW step within fp32
 * rounding (bf16: within its own rounding), and releasing activations changes no bit of it */
static void test_channels_last(void **state) {
    for (int v = 0; v < 4; v++) {
        const int d = v & 1;
        const segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
        const char *variant = v < 2 ? "r50" : "r18", *stem = v < 2 ? "v1c" : "plain";
        step_result r[2][2];
        for (int cl = 0; cl < 2; cl++) {
            char err[512];
            segc_model *m = family_model(variant, 5, err, sizeof err, "stem", stem, "output_stride", "16", "stem_channels", "8",
                                         "base_channels", "4", "channels", "16", "c1_channels", "8", "aux_channels", "8",
                                         "dropout", "0.1", "channels_last", cl ? "true" : "false", NULL);
            if (!m) fail_msg("%s", err);
            segc_model_init(m, 3);
            float *init = malloc((size_t)m->params.total * sizeof(float));
            memcpy(init, m->params.data, (size_t)m->params.total * sizeof(float));
            r[cl][0] = one_step(m, init, false, dt);
            r[cl][1] = one_step(m, init, true, dt);
            assert_true(r[cl][0].loss == r[cl][1].loss);
            assert_memory_equal(r[cl][0].grad, r[cl][1].grad, (size_t)m->params.total * sizeof(float));
            if (cl) {
                const int64_t n = m->params.total;
                const double tol = d ? 2e-2 : 1e-5;
                printf("  %s %s stem %s: loss %.7f NCHW, %.7f channels-last\n", variant, segc_dtype_name(dt), stem,
                       r[0][0].loss, r[1][0].loss);
                assert_true(fabs(r[1][0].loss - r[0][0].loss) <= tol * fabs(r[0][0].loss));
                assert_true(fx_close_norm("channels-last gradients vs NCHW", r[1][0].grad, r[0][0].grad, n, 0, d ? 5e-2 : 1e-4));
                assert_true(fx_close_norm("channels-last BN statistics vs NCHW", r[1][0].stats, r[0][0].stats, n, 0, tol));
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++) free(r[a][b].grad), free(r[a][b].stats);
            }
            free(init);
            segc_model_free(m);
        }
    }
}

/* ---- bitwise resume of a tiny run on CamVid ---- */
/* stopped after 1, 2 and 3 iterations, each time resumed, then run to the end: bitwise the
 * weights, BN statistics and SGD momentum of an uninterrupted run (Dropout2d draws included) */
static void test_resume_exact(void **state) {
    const char *ov[] = {"model.type=deeplabv3plus", "model.variant=r18", "model.stem_channels=8", "model.base_channels=4",
                        "model.channels=8", "model.c1_channels=4", "model.aux_channels=4", "model.output_stride=8",
                        "data.dataset=camvid", "data.train_split=train", "data.val_split=", "data.batch_size=2",
                        "data.num_workers=1", "data.scale=[120, 90]", "data.crop_size=[32, 48]", "optimizer.type=sgd",
                        "optimizer.lr=0.01", "optimizer.momentum=0.9", "optimizer.weight_decay=5e-4",
                        "optimizer.paramwise.custom_keys={}", "schedule.warmup_iters=0", "schedule.power=0.9",
                        "train.checkpoint_interval=2", "train.log_interval=1", "train.threads=2"};
    tc_resume_exact(ov, (int)(sizeof ov / sizeof *ov), "camvid", 3, 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_match_mmseg),
        cmocka_unit_test(test_parity_os8_r18),
        cmocka_unit_test(test_parity_os16_r50_multigrid),
        cmocka_unit_test(test_plain_stem_from_torchvision),
        cmocka_unit_test(test_name_map),
        cmocka_unit_test(test_bad_backbone_checkpoint),
        cmocka_unit_test(test_dropout2d),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_loss_variants),
        cmocka_unit_test(test_bf16_forward),
        cmocka_unit_test(test_free_activations_exact),
        cmocka_unit_test(test_channels_last),
        cmocka_unit_test(test_resume_exact),
    };
    return cmocka_run_group_tests_name("deeplab", tests, setup, teardown);
}
