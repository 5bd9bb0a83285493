/* SSD300-ResNet against MLPerf's reference (fixtures from tests/fixtures/gen_ssd.py): the 8732
 * default boxes, parameter names and shapes of the full-size model (torchvision resnet34 trunk),
 * a narrow twin's outputs, matching, regression targets, hard negatives, loss and every gradient,
 * the loss op alone (values, gradients, finite differences, thread independence), box coding
 * round trip, the detect hook (softmax, decode, thresholds, NMS, scaling), config and input
 * errors, and a bitwise resume of a short training run on coco-mini. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "common/train_check.h"
#include "segc/model.h"
#include "segc/ssd.h"
#include "segc/trainer.h"

static segc_st_file *fx;

static int setup(void **state) { fx = fx_open("ssd.safetensors"); return fx ? 0 : -1; }
static int teardown(void **state) { segc_st_close(fx); return 0; }

static const segc_st_entry *need(const char *key) {
    const segc_st_entry *e = segc_st_get(fx, key);
    if (!e) fail_msg("fixture lacks %s", key);
    return e;
}

/* a fixture tensor's data copied to aligned memory (entries after u8 ones are not 4-byte aligned);
 * freed with the context */
static void *fx_copy(segc_ctx *ctx, const char *key) {
    const segc_st_entry *e = need(key);
    void *p = segc_arena_alloc(&ctx->arena, e->nbytes + 8);
    memcpy(p, e->data, e->nbytes);
    return p;
}

/* a model through the registry; opts are key/value pairs, NULL-terminated */
static segc_model *ssd_model(int num_classes, char *err, size_t n, ...) {
    segc_model_opt opts[SEGC_MODEL_MAX_OPTS];
    int n_opts = 0;
    va_list ap;
    va_start(ap, n);
    for (const char *k; (k = va_arg(ap, const char *)) != NULL && n_opts < SEGC_MODEL_MAX_OPTS; n_opts++) {
        snprintf(opts[n_opts].key, sizeof opts[n_opts].key, "%s", k);
        snprintf(opts[n_opts].value, sizeof opts[n_opts].value, "%s", va_arg(ap, const char *));
    }
    va_end(ap);
    segc_model_spec s = {.type = "ssd", .variant = "r34", .num_classes = num_classes, .in_channels = 3, .opts = opts,
                         .n_opts = n_opts};
    return segc_model_new(&s, err, n);
}

/* the generator's narrow twin: 3 classes + background */
static segc_model *narrow_model(void) {
    char err[512];
    segc_model *m = ssd_model(3, err, sizeof err, "stem_channels", "8", "base_channels", "2", "extra_channels",
                              "[16, 8, 8, 8, 8]", "extra_mid_channels", "[8, 8, 4, 4, 4]", NULL);
    if (!m) fail_msg("narrow model: %s", err);
    return m;
}

/* x[n,c,h,w] = sin(0.031h + 0.017w + 0.9c + 1.7n), as the generator computes it */
static segc_tensor *formula_input(segc_ctx *ctx, int N, int S) {
    segc_tensor *x = segc_tensor_new(ctx, SEGC_F32, 4, SHAPE(N, 3, S, S));
    float *p = segc_f32(x);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < 3; c++)
            for (int h = 0; h < S; h++)
                for (int w = 0; w < S; w++) *p++ = (float)sin(0.031 * h + 0.017 * w + 0.9 * c + 1.7 * n);
    return x;
}

static void test_default_boxes(void **state) {
    segc_ssd_anchor_config c;
    segc_ssd_anchor_config_mlperf(&c);
    const int feat[6] = {38, 19, 10, 5, 3, 1}, starts[7] = {0, 5776, 7942, 8542, 8692, 8728, 8732};
    for (int l = 0; l < 6; l++) assert_int_equal(c.feat[l], feat[l]);
    segc_ssd_anchors a;
    char err[256];
    if (!segc_ssd_anchors_build(&c, &a, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(a.n, 8732);
    for (int l = 0; l <= 6; l++) assert_int_equal(a.level_start[l], starts[l]);
    const segc_st_entry *e = need("boxes300/xywh");
    assert_int_equal(e->shape[0], 8732);
    float *want = malloc(e->nbytes);
    memcpy(want, e->data, e->nbytes);
    int bad = 0;
    for (int i = 0; i < 8732 * 4; i++) bad += a.xywh[i] != want[i];
    free(want);
    if (bad) fail_msg("%d default-box coordinates differ from MLPerf's", bad);
    for (int l = 0; l < 6; l++) {   /* first and last box of every level, as a log */
        const float *f = a.xywh + 4 * starts[l], *z = a.xywh + 4 * (starts[l + 1] - 1);
        print_message("  level %d (%dx%d): first (%.5f %.5f %.5f %.5f) last (%.5f %.5f %.5f %.5f)\n", l, feat[l],
                      feat[l], f[0], f[1], f[2], f[3], z[0], z[1], z[2], z[3]);
    }
    for (int i = 0; i < a.n; i++) {
        const float *b = a.xywh + 4 * i, *o = a.ltrb + 4 * i;
        assert_true(o[0] == b[0] - 0.5f * b[2] && o[3] == b[1] + 0.5f * b[3]);
    }
    segc_ssd_anchors_free(&a);
    int fs[6];
    assert_true(segc_ssd_feature_sizes(257, fs));
    assert_int_equal(fs[5], 1);
    assert_false(segc_ssd_feature_sizes(256, fs));
}

/* parameter names and shapes of the full-size SSD300-R34 (81 outputs), in the twin's order */
static void test_full_size_names(void **state) {
    char err[512];
    segc_model *m = ssd_model(80, err, sizeof err, NULL);
    if (!m) fail_msg("%s", err);
    cJSON *meta = cJSON_Parse(segc_st_meta(fx, "full"));
    cJSON *names = cJSON_GetObjectItemCaseSensitive(meta, "names"), *shapes = cJSON_GetObjectItemCaseSensitive(meta, "shapes");
    int i = 0;
    for (cJSON *it = names->child, *sh = shapes->child; it && sh; it = it->next, sh = sh->next, i++) {
        if (i >= m->params.n) fail_msg("the reference has more tensors than segc (%s)", it->valuestring);
        const segc_tensor *t = m->params.t[i];
        if (strcmp(t->name, it->valuestring) != 0) fail_msg("tensor %d: segc %s, reference %s", i, t->name, it->valuestring);
        int d = 0;
        for (cJSON *v = sh->child; v; v = v->next, d++)
            if (d >= t->ndim || t->shape[d] != (int64_t)v->valuedouble) fail_msg("%s: shape differs at dim %d", t->name, d);
        assert_int_equal(d, t->ndim);
    }
    assert_int_equal(i, m->params.n);
    print_message("  SSD300-R34, 80 classes: %lld parameters in %d tensors\n",
                  (long long)segc_params_count(&m->params, true), m->params.n);
    assert_int_equal(m->num_outputs, 81);
    assert_int_equal(m->family->task, SEGC_TASK_DETECTION);
    cJSON_Delete(meta);
    segc_model_free(m);
}

/* per-anchor cross entropy of scores [C, A] for labels [A] (double) */
static void anchor_ce(const float *x, const int32_t *lab, int C, int A, float *con) {
    for (int a = 0; a < A; a++) {
        double mx = x[a], s = 0;
        for (int c = 1; c < C; c++) mx = fmax(mx, x[(int64_t)c * A + a]);
        for (int c = 0; c < C; c++) s += exp(x[(int64_t)c * A + a] - mx);
        con[a] = (float)(mx + log(s) - x[(int64_t)lab[a] * A + a]);
    }
}

static void test_network_parity(void **state) {
    segc_model *m = narrow_model();
    cJSON *meta = cJSON_Parse(segc_st_meta(fx, "net"));
    int i = 0;
    for (cJSON *it = cJSON_GetObjectItemCaseSensitive(meta, "names")->child; it; it = it->next, i++)
        if (i >= m->params.n || strcmp(m->params.t[i]->name, it->valuestring) != 0)
            fail_msg("tensor %d: segc %s, twin %s", i, i < m->params.n ? m->params.t[i]->name : "-", it->valuestring);
    assert_int_equal(i, m->params.n);
    cJSON_Delete(meta);
    char key[300];
    for (i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        snprintf(key, sizeof key, "net/param/%s", t->name);
        const segc_st_entry *e = need(key);
        if (e->dtype == SEGC_I64) { int64_t v; memcpy(&v, e->data, 8); segc_f32(t)[0] = (float)v; }
        else memcpy(t->data, e->data, e->nbytes);
    }
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    const int N = 2, A = 8732;
    segc_model_out out;
    if (!segc_model_forward(ctx, m, formula_input(ctx, N, 300), &out)) fail_msg("forward: %s", segc_last_error(ctx));
    assert_int_equal(out.scores->shape[1], 4);
    assert_int_equal(out.scores->shape[2], A);
    /* outputs at anchors 0, 7, 14, ... */
    bool ok = true;
    const segc_tensor *outs[2] = {out.scores, out.boxes};
    const char *keys[2] = {"net/scores_sub", "net/boxes_sub"};
    for (int k = 0; k < 2; k++) {
        const segc_st_entry *e = need(keys[k]);
        const int64_t C = outs[k]->shape[1], S = e->shape[2];
        float *sub = malloc((size_t)N * C * S * sizeof(float));
        for (int64_t q = 0; q < N * C; q++)
            for (int64_t s = 0; s < S; s++) sub[q * S + s] = segc_f32(outs[k])[q * A + 7 * s];
        ok &= fx_close_norm(keys[k], sub, fx_copy(ctx, keys[k]), N * C * S, 0, 1e-4);
        free(sub);
    }
    /* matching and regression targets, image by image, as the loss hook builds them */
    segc_ssd_anchors an;
    segc_ssd_anchor_config ac;
    segc_ssd_anchor_config_mlperf(&ac);
    char err[256];
    assert_true(segc_ssd_anchors_build(&ac, &an, err, sizeof err));
    const segc_st_entry *gb = need("net/gt_boxes"), *gc = need("net/gt_crowd"), *wl = need("net/glabel"), *pv = need("net/pos_vec"),
                        *wn = need("net/neg_mask");
    const int M = (int)gb->shape[0];
    const float *gbv = fx_copy(ctx, "net/gt_boxes"), *pvv = fx_copy(ctx, "net/pos_vec");
    const int32_t *glv = fx_copy(ctx, "net/gt_labels"), *giv = fx_copy(ctx, "net/gt_img");
    int nb[2] = {0, 0};
    float *boxes[2];
    int32_t *labels[2];
    uint8_t *crowd[2];
    for (int n = 0; n < N; n++) {
        boxes[n] = malloc((size_t)M * 4 * sizeof(float));
        labels[n] = malloc((size_t)M * sizeof(int32_t));
        crowd[n] = malloc((size_t)M);
    }
    for (int b = 0; b < M; b++) {
        const int n = giv[b], k = nb[n]++;
        memcpy(boxes[n] + 4 * k, gbv + 4 * b, 4 * sizeof(float));
        labels[n][k] = glv[b];
        crowd[n][k] = ((const uint8_t *)gc->data)[b];
    }
    int32_t *glab = malloc((size_t)N * A * sizeof(int32_t));
    float *xywh = malloc((size_t)A * 4 * sizeof(float)), *vec = malloc((size_t)A * 4 * sizeof(float));
    float *con = malloc((size_t)A * sizeof(float));
    uint8_t *sel = malloc((size_t)A);
    int p = 0, label_bad = 0, neg_bad = 0;
    double vec_err = 0;
    for (int n = 0; n < N; n++) {
        float g[64];
        int32_t l[16];
        int k = 0;
        for (int b = 0; b < nb[n]; b++) {
            if (crowd[n][b]) continue;
            for (int q = 0; q < 4; q++) g[4 * k + q] = boxes[n][4 * b + q] / 300.f;
            l[k++] = labels[n][b] + 1;
        }
        int pos = segc_ssd_match(&an, g, l, k, 0.5f, glab + n * A, xywh);
        segc_ssd_encode(&an, xywh, vec);
        int want_pos = 0;
        for (int a = 0; a < A; a++) {
            const int w = ((const uint8_t *)wl->data)[n * A + a];
            label_bad += glab[n * A + a] != w;
            want_pos += w > 0;
            if (w > 0 && p < pv->shape[0]) {
                for (int q = 0; q < 4; q++)
                    vec_err = fmax(vec_err, fabs(vec[q * A + a] - pvv[4 * p + q]));
                p++;
            }
        }
        assert_int_equal(pos, want_pos);
        anchor_ce(segc_f32(out.scores) + (int64_t)n * 4 * A, glab + n * A, 4, A, con);
        assert_int_equal(segc_ssd_hard_negatives(con, glab + n * A, A, 3, sel), 3 * pos);
        for (int a = 0; a < A; a++) neg_bad += sel[a] != ((const uint8_t *)wn->data)[n * A + a];
        print_message("  image %d: %d positives\n", n, pos);
    }
    assert_int_equal(p, pv->shape[0]);
    if (label_bad) fail_msg("%d matched labels differ from MLPerf's encoder", label_bad);
    if (neg_bad) fail_msg("%d hard-negative selections differ", neg_bad);
    if (vec_err > 1e-5) fail_msg("regression targets differ by %g", vec_err);
    /* the loss through the family hook (crowd boxes given, and skipped there), then every gradient */
    segc_targets tg = {.n_images = N, .n_boxes = nb, .boxes = boxes, .box_labels = labels, .box_crowd = crowd,
                       .img_h = 300, .img_w = 300};
    segc_tensor *loss = segc_model_loss(ctx, m, &out, &tg);
    if (!loss) fail_msg("loss: %s", segc_last_error(ctx));
    ok &= fx_close("loss", loss, fx_tensor(ctx, fx, "net", "loss"), 1e-5);
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, loss)) fail_msg("backward: %s", segc_last_error(ctx));
    double max_norm = 0;
    for (i = 0; i < m->params.n; i++)
        if (m->params.trainable[i]) {
            snprintf(key, sizeof key, "net/grad/%s", m->params.t[i]->name);
            max_norm = fmax(max_norm, fx_norm(fx_copy(ctx, key), segc_numel(m->params.t[i])));
        }
    for (i = 0; i < m->params.n; i++) {
        if (!m->params.trainable[i]) continue;
        segc_tensor *t = m->params.t[i];
        snprintf(key, sizeof key, "net/grad/%s", t->name);
        ok &= fx_close_norm(key, t->grad, fx_copy(ctx, key), segc_numel(t), 1e-2 * max_norm, 3e-3);
    }
    for (int n = 0; n < N; n++) free(boxes[n]), free(labels[n]), free(crowd[n]);
    free(glab), free(xywh), free(vec), free(con), free(sel);
    segc_ssd_anchors_free(&an);
    segc_ctx_free(ctx);
    segc_model_free(m);
    assert_true(ok);
}

static segc_tensor *fixture_in(segc_ctx *ctx, const char *key, bool grad) {
    const segc_st_entry *e = need(key);
    segc_tensor *t = segc_tensor_new(ctx, e->dtype, e->ndim, e->shape);
    memcpy(t->data, e->data, e->nbytes);
    t->requires_grad = grad;
    return t;
}

static void test_loss_op(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *ploc = fixture_in(ctx, "loss/ploc", true), *plabel = fixture_in(ctx, "loss/plabel", true);
    segc_tensor *gvec = fixture_in(ctx, "loss/gvec", false), *glabel = fixture_in(ctx, "loss/glabel", false);
    segc_tensor *loss = segc_ssd_loss(ctx, ploc, plabel, gvec, glabel, 3);
    if (!loss) fail_msg("%s", segc_last_error(ctx));
    bool ok = fx_close("loss", loss, fx_tensor(ctx, fx, "loss", "loss"), 1e-6);
    assert_true(segc_backward(ctx, loss));
    ok &= fx_close_f32("grad ploc", ploc->grad, fx_tensor(ctx, fx, "loss", "grad_ploc"), 1e-5);
    ok &= fx_close_f32("grad plabel", plabel->grad, fx_tensor(ctx, fx, "loss", "grad_plabel"), 1e-5);
    const int N = (int)ploc->shape[0], C = (int)plabel->shape[1], A = (int)ploc->shape[2];
    float *con = malloc((size_t)A * sizeof(float));
    uint8_t *sel = malloc((size_t)A);
    const uint8_t *want = need("loss/neg_mask")->data;
    for (int n = 0; n < N; n++) {
        anchor_ce(segc_f32(plabel) + (int64_t)n * C * A, (int32_t *)glabel->data + n * A, C, A, con);
        segc_ssd_hard_negatives(con, (int32_t *)glabel->data + n * A, A, 3, sel);
        for (int a = 0; a < A; a++)
            if (sel[a] != want[n * A + a]) fail_msg("image %d anchor %d: hard negative %d, reference %d", n, a, sel[a], want[n * A + a]);
    }
    free(con), free(sel);
    /* the same value and gradients on one thread and on two, bf16 inputs close */
    segc_set_num_threads(ctx, 1);
    segc_tensor *l1 = segc_ssd_loss(ctx, ploc, plabel, gvec, glabel, 3);
    segc_set_num_threads(ctx, 2);
    assert_memory_equal(l1->data, loss->data, 4);
    segc_tensor *pb = segc_cast(ctx, plabel, SEGC_BF16), *lb = segc_cast(ctx, ploc, SEGC_BF16);
    segc_tensor *l2 = segc_ssd_loss(ctx, lb, pb, gvec, glabel, 3);
    assert_non_null(l2);
    assert_true(fabsf(segc_f32(l2)[0] - segc_f32(loss)[0]) < 1e-2f * segc_f32(loss)[0]);
    segc_ctx_free(ctx);
    assert_true(ok);
}

typedef struct { segc_tensor *gvec, *glabel; } gc_user;
static segc_tensor *gc_ssd(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    gc_user *u = user;
    return segc_ssd_loss(ctx, ins[0], ins[1], u->gvec, u->glabel, 3);
}

static void test_loss_gradcheck(void **state) {
    segc_ctx *ctx = segc_ctx_new(11);
    const int N = 2, C = 3, A = 30;
    segc_tensor *ploc = t_randn(ctx, 3, SHAPE(N, 4, A), 1.2f, true), *plabel = t_randn(ctx, 3, SHAPE(N, C, A), 1.f, true);
    gc_user u = {.gvec = t_randn(ctx, 3, SHAPE(N, 4, A), 1.f, false),
                 .glabel = segc_tensor_new(ctx, SEGC_I32, 2, SHAPE(N, A))};
    int32_t *g = u.glabel->data;
    for (int i = 0; i < N * A; i++) g[i] = i % 7 == 0 ? 1 + i % (C - 1) : 0;
    segc_tensor *ins[2] = {ploc, plabel};
    gc_opts o = gc_default();
    assert_true(gradcheck(ctx, "ssd_loss", gc_ssd, ins, 2, &u, o));
    segc_ctx_free(ctx);
}

static void test_encode_decode_roundtrip(void **state) {
    segc_ssd_anchor_config c;
    segc_ssd_anchor_config_mlperf(&c);
    segc_ssd_anchors a;
    char err[128];
    assert_true(segc_ssd_anchors_build(&c, &a, err, sizeof err));
    const float gt[] = {0.1f, 0.2f, 0.4f, 0.9f, 0.5f, 0.05f, 0.95f, 0.5f, 0.02f, 0.6f, 0.1f, 0.7f, 0.0f, 0.0f, 1.0f, 1.0f};
    const int32_t lab[] = {3, 1, 2, 5};
    int32_t *labels = malloc((size_t)a.n * sizeof(int32_t));
    float *xywh = malloc((size_t)a.n * 16), *vec = malloc((size_t)a.n * 16), *back = malloc((size_t)a.n * 16);
    int pos = segc_ssd_match(&a, gt, lab, 4, 0.5f, labels, xywh);
    assert_true(pos >= 4);
    segc_ssd_encode(&a, xywh, vec);
    segc_ssd_decode(&a, vec, back);
    int seen[6] = {0};
    double worst = 0;
    for (int d = 0; d < a.n; d++) {
        /* every default box decodes its own target back: gt boxes for positives, itself for the rest */
        const float *t = xywh + 4 * d, *b = back + 4 * d;
        const float want[4] = {t[0] - 0.5f * t[2], t[1] - 0.5f * t[3], t[0] + 0.5f * t[2], t[1] + 0.5f * t[3]};
        for (int q = 0; q < 4; q++) worst = fmax(worst, fabs(b[q] - want[q]));
        seen[labels[d]]++;
    }
    print_message("  %d positives, worst round-trip error %.2e\n", pos, worst);
    assert_true(worst < 2e-6);
    for (int k = 0; k < 4; k++) assert_true(seen[lab[k]] >= 1);   /* every gt has its forced box */
    /* no ground truth: all background */
    assert_int_equal(segc_ssd_match(&a, gt, lab, 0, 0.5f, labels, xywh), 0);
    for (int d = 0; d < a.n; d++) assert_int_equal(labels[d], 0);
    free(labels), free(xywh), free(vec), free(back);
    segc_ssd_anchors_free(&a);
}

/* the generator's detect_outputs: hashed class logits, sine regressions */
static uint32_t logit_hash(uint32_t a, uint32_t c, uint32_t n, uint32_t salt) {
    uint32_t h = (a * 8u + c + n * 131072u + salt) * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return h;
}

static void test_detect(void **state) {
    segc_model *m = narrow_model();
    segc_ctx *ctx = segc_ctx_new(0);
    const int N = 2, C = 4, A = 8732;
    cJSON *meta = cJSON_Parse(segc_st_meta(fx, "detect"));
    const uint32_t salt = (uint32_t)cJSON_GetObjectItemCaseSensitive(meta, "salt")->valuedouble;
    cJSON_Delete(meta);
    segc_model_out out = {0};
    out.scores = segc_tensor_new(ctx, SEGC_F32, 3, SHAPE(N, C, A));
    out.boxes = segc_tensor_new(ctx, SEGC_F32, 3, SHAPE(N, 4, A));
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int a = 0; a < A; a++)
                segc_f32(out.scores)[((int64_t)n * C + c) * A + a] =
                    (float)((double)(logit_hash((uint32_t)a, (uint32_t)c, (uint32_t)n, salt) >> 8) * 0x1p-21 - 4.0);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < 4; k++)
            for (int a = 0; a < A; a++)
                segc_f32(out.boxes)[((int64_t)n * 4 + k) * A + a] = (float)(0.8 * sin(0.23 * a + 0.9 * k + 0.3 * n));
    const int ori_h[2] = {480, 200}, ori_w[2] = {640, 300};
    segc_detect_opts o;
    segc_detect_opts_default(&o);
    segc_detections d = {0};
    if (!segc_model_detect(ctx, m, &out, 300, 300, ori_h, ori_w, &o, &d)) fail_msg("%s", segc_last_error(ctx));
    const int32_t *count = fx_copy(ctx, "detect/count");
    const float *want = fx_copy(ctx, "detect/dets");
    assert_int_equal(d.n_images, 2);
    /* the same detections (scores equal to f32 rounding may come in either order), by decreasing score */
    int64_t base = 0;
    for (int n = 0; n < N; n++) {
        assert_int_equal(d.off[n + 1] - d.off[n], count[n]);
        bool *used = calloc((size_t)count[n], 1);
        for (int64_t j = d.off[n]; j < d.off[n + 1]; j++) {
            const segc_detection *g = &d.det[j];
            if (j > d.off[n]) assert_true(g->score <= d.det[j - 1].score);
            int hit = -1;
            for (int q = 0; q < count[n] && hit < 0; q++) {
                const float *w = want + 6 * (base + q);
                bool same = !used[q] && g->label == (int)w[5] && fabsf(g->score - w[4]) <= 1e-6f;
                for (int k = 0; k < 4 && same; k++) same = fabsf(g->box[k] - w[k]) <= 1e-3f;
                if (same) hit = q;
            }
            if (hit < 0)
                fail_msg("image %d detection %lld (label %d score %.7f box %.3f %.3f %.3f %.3f) not in the reference", n,
                         (long long)(j - d.off[n]), g->label, g->score, g->box[0], g->box[1], g->box[2], g->box[3]);
            used[hit] = true;
        }
        free(used);
        base += count[n];
    }
    print_message("  %d + %d detections as the reference\n", count[0], count[1]);
    /* the buffers are reused by a second call; threshold 1 leaves nothing */
    o.score_thresh = 1.f;
    assert_true(segc_model_detect(ctx, m, &out, 300, 300, ori_h, ori_w, &o, &d));
    assert_int_equal(d.off[2], 0);
    segc_detections_free(&d);
    segc_ctx_free(ctx);
    segc_model_free(m);
}

static void test_errors(void **state) {
    char err[512];
    assert_null(ssd_model(80, err, sizeof err, "image_size", "256", NULL));
    print_message("  %s\n", err);
    assert_non_null(strstr(err, "model.image_size"));
    assert_null(ssd_model(80, err, sizeof err, "extra_channels", "[512, 512]", NULL));
    assert_non_null(strstr(err, "model.extra_channels"));
    assert_null(ssd_model(80, err, sizeof err, "scales", "[21, 45, 99, 153, 207, 261]", NULL));
    assert_non_null(strstr(err, "model.scales"));
    assert_null(ssd_model(80, err, sizeof err, "match_iou", "1.5", NULL));
    assert_non_null(strstr(err, "model.match_iou"));
    assert_null(ssd_model(80, err, sizeof err, "neg_raito", "3", NULL));
    assert_non_null(strstr(err, "did you mean 'model.neg_ratio'"));
    segc_model_spec s = {.type = "ssd", .variant = "r50", .num_classes = 80, .in_channels = 3};
    assert_null(segc_model_new(&s, err, sizeof err));
    assert_non_null(strstr(err, "model.variant"));
    /* a 300x300 model given another size; segmentation targets; a label outside the classes */
    segc_model *m = narrow_model();
    segc_ctx *ctx = segc_ctx_new(0);
    segc_set_grad_enabled(ctx, false);
    segc_model_out out;
    assert_false(segc_model_forward(ctx, m, segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 3, 320, 320)), &out));
    print_message("  %s\n", segc_last_error(ctx));
    assert_non_null(strstr(segc_last_error(ctx), "model.image_size"));
    segc_clear_error(ctx);
    assert_true(segc_model_forward(ctx, m, segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 3, 300, 300)), &out));
    /* no logits map for the segmentation paths */
    EXPECT_ERR(ctx, segc_model_logits_fn(ctx, m, segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 3, 300, 300))),
               "detection model has no logits map");
    assert_true(segc_model_forward(ctx, m, segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 3, 300, 300)), &out));
    segc_targets seg = {.labels = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(1, 300, 300)), .ignore_index = 255};
    EXPECT_ERR(ctx, segc_model_loss(ctx, m, &out, &seg), "ssd loss", "label map");
    int nb = 1;
    float box[4] = {1, 2, 30, 40}, *bp = box;
    int32_t lab = 3, *lp = &lab;
    segc_targets tg = {.n_images = 1, .n_boxes = &nb, .boxes = &bp, .box_labels = &lp, .img_h = 300, .img_w = 300};
    EXPECT_ERR(ctx, segc_model_loss(ctx, m, &out, &tg), "label 3 outside 0..2");
    /* zero-area boxes are no regression target; an image without boxes adds no loss */
    lab = 1;
    box[2] = box[0];
    segc_tensor *l = segc_model_loss(ctx, m, &out, &tg);
    assert_non_null(l);
    assert_true(segc_f32(l)[0] == 0.f);
    segc_ctx_free(ctx);
    segc_model_free(m);
}

/* stopped after iterations 1..3 and resumed: bit for bit the uninterrupted run's weights and state
 * (the narrow network at 300x300 on coco-mini, SSD augmentation, images without boxes skipped) */
/* data.pipeline: resize (fitting, fine-tuning): resize to crop_size, flip, normalise; the default
 * is SSD's chain (photometric, expand, min-IoU crop, resize, flip, normalise) */
static void test_train_pipelines(void **state) {
    segc_config c;
    segc_config_defaults(&c);
    snprintf(c.model.type, sizeof c.model.type, "ssd");
    c.data.crop_size[0] = c.data.crop_size[1] = 300;
    segc_pipeline p;
    segc_config_train_pipeline(&c, &p);
    assert_int_equal(p.n, 6);
    assert_int_equal(p.t[1].kind, SEGC_AUG_EXPAND);
    snprintf(c.data.pipeline, sizeof c.data.pipeline, "resize");
    c.data.flip_prob = 0.25;
    segc_config_train_pipeline(&c, &p);
    assert_int_equal(p.n, 3);
    assert_int_equal(p.t[0].kind, SEGC_AUG_RESIZE);
    assert_int_equal(p.t[0].p.resize.scale_w, 300);
    assert_int_equal(p.t[1].kind, SEGC_AUG_RANDOM_FLIP);
    assert_true(p.t[1].p.random_flip.prob == 0.25);
    assert_int_equal(p.t[2].kind, SEGC_AUG_NORMALIZE);
    assert_true(p.t[2].p.normalize.std[0] == (float)c.data.std[0]);
}

static void test_resume_exact(void **state) {
    const char *ov[] = {"model.type=ssd", "model.variant=r34", "model.stem_channels=8", "model.base_channels=2",
                        "model.extra_channels=[16, 8, 8, 8, 8]", "model.extra_mid_channels=[8, 8, 4, 4, 4]",
                        "data.dataset=coco", "data.train_split=train2017", "data.val_split=", "data.batch_size=2",
                        "data.num_workers=1", "data.crop_size=[300, 300]", "optimizer.type=sgd", "optimizer.lr=0.01",
                        "optimizer.momentum=0.9", "optimizer.weight_decay=5e-4", "optimizer.paramwise.custom_keys={}",
                        "schedule.warmup_iters=2", "schedule.warmup_start_factor=0.1", "schedule.policy=multistep",
                        "schedule.milestones=[3]", "train.checkpoint_interval=2", "train.log_interval=1",
                        "train.threads=2"};
    tc_resume_exact(ov, (int)(sizeof ov / sizeof *ov), "coco-mini", 3, 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_boxes),
        cmocka_unit_test(test_full_size_names),
        cmocka_unit_test(test_network_parity),
        cmocka_unit_test(test_loss_op),
        cmocka_unit_test(test_loss_gradcheck),
        cmocka_unit_test(test_encode_decode_roundtrip),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_train_pipelines),
        cmocka_unit_test(test_resume_exact),
    };
    return cmocka_run_group_tests_name("ssd", tests, setup, teardown);
}
