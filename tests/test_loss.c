/* loss: cross_entropy, dice_loss, bce_with_logits, smooth_l1.
 * PyTorch parity (f32 + bf16 logits), finite-difference gradients,
 * thread-count independence, error messages. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/harness.h"
#include "segc/ops.h"

static segc_tensor *opt_in(segc_tensor **ins, int n, int k) { return k < n ? ins[k] : NULL; }

/* ---------------- PyTorch parity ---------------- */
static segc_tensor *fx_ce(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    segc_ce_opts o = segc_ce_opts_default();
    o.ignore_index = (int)fx_param_int(f, cas, "ignore_index", -100);
    o.reduction = (segc_loss_reduction)fx_param_int(f, cas, "reduction", 0);
    o.label_smoothing = (float)fx_param_double(f, cas, "label_smoothing", 0);
    o.weight = fx_param_int(f, cas, "weighted", 0) ? ins[2] : NULL;
    return segc_cross_entropy(ctx, ins[0], ins[1], &o);
}

static segc_tensor *fx_dice(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    segc_dice_opts o = segc_dice_opts_default();
    o.ignore_index = (int)fx_param_int(f, cas, "ignore_index", 255);
    o.reduction = (segc_loss_reduction)fx_param_int(f, cas, "reduction", 0);
    o.smooth = (float)fx_param_double(f, cas, "smooth", 1);
    o.exponent = (int)fx_param_int(f, cas, "exponent", 2);
    o.class_weight = fx_param_int(f, cas, "weighted", 0) ? ins[2] : NULL;
    return segc_dice_loss(ctx, ins[0], ins[1], &o);
}

static segc_tensor *fx_bce(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    int k = 2;
    segc_tensor *w = fx_param_int(f, cas, "has_weight", 0) ? opt_in(ins, n, k++) : NULL;
    segc_tensor *pw = fx_param_int(f, cas, "has_pos_weight", 0) ? opt_in(ins, n, k++) : NULL;
    return segc_bce_with_logits(ctx, ins[0], ins[1], w, pw, (segc_loss_reduction)fx_param_int(f, cas, "reduction", 0));
}

static segc_tensor *fx_smooth_l1(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_smooth_l1(ctx, ins[0], ins[1], (float)fx_param_double(f, cas, "beta", 1),
                          (segc_loss_reduction)fx_param_int(f, cas, "reduction", 0));
}

static void test_parity(void **state) {
    segc_st_file *f = fx_open("loss.safetensors");
    /* the loss is f32 for bf16 logits too (and the reference float64): f32 tolerance throughout */
    assert_int_equal(fx_check_all(f, "cross_entropy_", fx_ce, 1e-5, 1e-5), 18);
    /* dice gradients cancel: rounding the float64 reference's softmax to f32 alone
     * moves them by up to 1.7e-5 on these cases (PyTorch's own f32 reaches 3.5e-5;
     * segc's, with its polynomial exp, 7e-5) */
    assert_int_equal(fx_check_all(f, "dice_", fx_dice, 2e-4, 2e-4), 10);
    assert_int_equal(fx_check_all(f, "bce_", fx_bce, 1e-5, 1e-5), 10);
    assert_int_equal(fx_check_all(f, "smooth_l1_", fx_smooth_l1, 1e-5, 1e-5), 8);
    segc_st_close(f);
}

/* ---------------- finite differences ---------------- */
typedef struct {
    int kind;   /* 0 ce, 1 dice, 2 bce, 3 smooth_l1 */
    segc_tensor *target, *weight, *pos_weight;
    segc_ce_opts ce;
    segc_dice_opts dice;
    segc_loss_reduction red;
    float beta;
} gc_cfg;

static segc_tensor *gc_loss(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    const gc_cfg *c = user;
    switch (c->kind) {
    case 0: return segc_cross_entropy(ctx, ins[0], c->target, &c->ce);
    case 1: return segc_dice_loss(ctx, ins[0], c->target, &c->dice);
    case 2: return segc_bce_with_logits(ctx, ins[0], ins[1], c->weight, c->pos_weight, c->red);
    default: return segc_smooth_l1(ctx, ins[0], ins[1], c->beta, c->red);
    }
}

static segc_tensor *rand_labels(segc_ctx *ctx, int ndim, const int64_t *shape, int C, int ignore, float frac) {
    segc_tensor *t = segc_tensor_new(ctx, SEGC_I64, ndim, shape);
    for (int64_t i = 0; i < segc_numel(t); i++) {
        int64_t v = segc_rng_u32(&ctx->rng) % (uint32_t)C;
        ((int64_t *)t->data)[i] = segc_rng_uniform(&ctx->rng) < frac ? ignore : v;
    }
    return t;
}

static void test_gradcheck(void **state) {
    segc_ctx *ctx = segc_ctx_new(17);
    bool ok = true;
    gc_opts go = gc_default();
    go.atol = 1e-4;   /* mean-reduced losses have small gradients: a tighter floor than the default */
    /* cross entropy: weighted + smoothing + ignored pixels, each reduction */
    for (int red = 0; red < 3; red++) {
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 5, 3, 2), 1.5f, true);
        gc_cfg c = {.kind = 0, .target = rand_labels(ctx, 3, SHAPE(2, 3, 2), 5, 255, 0.2f), .ce = segc_ce_opts_default()};
        c.ce.ignore_index = 255;
        c.ce.reduction = (segc_loss_reduction)red;
        c.ce.label_smoothing = 0.1f;
        c.ce.weight = t_uniform(ctx, 1, SHAPE(5), 0.3f, 2.0f, false);
        char name[64];
        snprintf(name, sizeof name, "cross_entropy red %d", red);
        ok &= gradcheck(ctx, name, gc_loss, &x, 1, &c, go);
    }
    {
        segc_tensor *x = t_randn(ctx, 2, SHAPE(4, 3), 1.0f, true);   /* [N, C] classification */
        gc_cfg c = {.kind = 0, .target = rand_labels(ctx, 1, SHAPE(4), 3, -100, 0), .ce = segc_ce_opts_default()};
        ok &= gradcheck(ctx, "cross_entropy [4,3]", gc_loss, &x, 1, &c, go);
    }
    /* dice: exponents 1, 2, 3, with ignored pixels and class weights */
    for (int e = 1; e <= 3; e++) {
        segc_tensor *x = t_randn(ctx, 3, SHAPE(2, 4, 7), 1.5f, true);
        gc_cfg c = {.kind = 1, .target = rand_labels(ctx, 2, SHAPE(2, 7), 4, 255, 0.2f), .dice = segc_dice_opts_default()};
        c.dice.exponent = e;
        c.dice.class_weight = e == 2 ? t_uniform(ctx, 1, SHAPE(4), 0.3f, 2.0f, false) : NULL;
        c.dice.reduction = e == 3 ? SEGC_LOSS_NONE : SEGC_LOSS_MEAN;
        char name[64];
        snprintf(name, sizeof name, "dice exponent %d", e);
        ok &= gradcheck(ctx, name, gc_loss, &x, 1, &c, go);
    }
    /* bce: weight [C], pos_weight [C]; gradients to logits and target */
    {
        segc_tensor *ins[2] = {t_randn(ctx, 2, SHAPE(3, 4), 2.0f, true), t_uniform(ctx, 2, SHAPE(3, 4), 0, 1, true)};
        gc_cfg c = {.kind = 2, .weight = t_uniform(ctx, 1, SHAPE(4), 0.3f, 2, false),
                    .pos_weight = t_uniform(ctx, 1, SHAPE(4), 0.5f, 3, false), .red = SEGC_LOSS_MEAN};
        ok &= gradcheck(ctx, "bce_with_logits", gc_loss, ins, 2, &c, go);
        c.red = SEGC_LOSS_NONE;
        c.weight = NULL;
        ins[0]->grad = ins[1]->grad = NULL;   /* fresh gradients and tape for the second check */
        ctx->tape = NULL;
        ok &= gradcheck(ctx, "bce_with_logits none", gc_loss, ins, 2, &c, go);
    }
    /* smooth L1: differences kept away from the kinks at +-beta (and 0 for beta 0) */
    for (int b = 0; b < 2; b++) {
        segc_tensor *ins[2] = {t_randn(ctx, 3, SHAPE(2, 3, 4), 1.0f, true), t_randn(ctx, 3, SHAPE(2, 3, 4), 1.0f, true)};
        gc_cfg c = {.kind = 3, .beta = b ? 0.7f : 0.f, .red = b ? SEGC_LOSS_SUM : SEGC_LOSS_MEAN};
        float *x = segc_f32(ins[0]), *y = segc_f32(ins[1]);
        for (int i = 0; i < 24; i++) {
            float d = fabsf(x[i] - y[i]);
            if (fabsf(d - c.beta) < 0.05f || d < 0.05f) x[i] += 0.2f;
        }
        ok &= gradcheck(ctx, b ? "smooth_l1 beta 0.7" : "smooth_l1 beta 0", gc_loss, ins, 2, &c, go);
    }
    assert_true(ok);
    segc_ctx_free(ctx);
}

/* ---------------- bitwise identical for 1 and 2 threads ---------------- */
static void test_thread_independent(void **state) {
    const int64_t shape[4] = {2, 19, 40, 36}, tshape[3] = {2, 40, 36};   /* 2880 pixels: several blocks */
    float loss[2][4], *grads[2][4];
    segc_ctx *ctxs[2];
    int64_t n = 2 * 19 * 40 * 36;
    for (int t = 0; t < 2; t++) {
        segc_ctx *ctx = ctxs[t] = segc_ctx_new(8);
        segc_set_num_threads(ctx, t + 1);
        segc_tensor *x = t_randn(ctx, 4, shape, 2.0f, true);
        segc_tensor *xb = segc_cast(ctx, x, SEGC_BF16);
        segc_tensor *lab = rand_labels(ctx, 3, tshape, 19, 255, 0.1f);
        segc_tensor *y = t_uniform(ctx, 4, shape, 0, 1, false);
        segc_ce_opts o = segc_ce_opts_default();
        o.ignore_index = 255;
        o.label_smoothing = 0.1f;
        segc_tensor *outs[4] = {segc_cross_entropy(ctx, x, lab, &o), segc_dice_loss(ctx, xb, lab, NULL),
                                segc_bce_with_logits(ctx, x, y, NULL, NULL, SEGC_LOSS_MEAN),
                                segc_smooth_l1(ctx, x, y, 1.0f, SEGC_LOSS_SUM)};
        for (int k = 0; k < 4; k++) {
            assert_non_null(outs[k]);
            loss[t][k] = segc_f32(outs[k])[0];
            segc_grad(ctx, outs[k])[0] = 1.0f + (float)k;
        }
        assert_true(segc_backward_from(ctx, outs[3], (float[]){0.f}));
        grads[t][0] = x->grad;
        assert_non_null(x->grad);
        (void)grads;
    }
    assert_memory_equal(loss[0], loss[1], sizeof loss[0]);
    assert_memory_equal(grads[0][0], grads[1][0], (size_t)n * sizeof(float));
    segc_set_num_threads(NULL, 2);
    segc_ctx_free(ctxs[0]);
    segc_ctx_free(ctxs[1]);
}

/* ---------------- behaviour details ---------------- */
static void test_semantics(void **state) {
    segc_ctx *ctx = segc_ctx_new(4);
    /* uniform logits: CE = log C exactly, gradient p - onehot */
    segc_tensor *x = segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 4, 1, 2));
    x->requires_grad = true;
    segc_tensor *lab = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(1, 1, 2));
    ((uint8_t *)lab->data)[0] = 2;
    ((uint8_t *)lab->data)[1] = 255;
    segc_ce_opts o = segc_ce_opts_default();
    o.ignore_index = 255;
    segc_tensor *l = segc_cross_entropy(ctx, x, lab, &o);
    assert_int_equal(l->ndim, 0);
    assert_float_equal(segc_f32(l)[0], logf(4.f), 1e-6);
    assert_true(segc_backward(ctx, l));
    assert_float_equal(x->grad[0 * 2], 0.25f, 1e-6);
    assert_float_equal(x->grad[2 * 2], -0.75f, 1e-6);
    assert_float_equal(x->grad[2 * 2 + 1], 0.f, 0);   /* ignored pixel */
    /* no gradient recorded for a target-only graph; the loss still computes */
    segc_tensor *x2 = segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 4, 1, 2));
    segc_tensor *l2 = segc_cross_entropy(ctx, x2, lab, &o);
    assert_false(l2->requires_grad);
    /* dice: perfect prediction of a one-class image with smooth 0 -> loss 1 - 1 for that class, 1 for the absent ones */
    segc_tensor *x3 = segc_tensor_zeros(ctx, SEGC_F32, 3, SHAPE(1, 2, 3));
    for (int s = 0; s < 3; s++) segc_f32(x3)[s] = 40.f;   /* class 0 everywhere */
    segc_tensor *lab3 = segc_tensor_zeros(ctx, SEGC_I64, 2, SHAPE(1, 3));
    segc_dice_opts d = segc_dice_opts_default();
    d.smooth = 0.f;
    segc_tensor *l3 = segc_dice_loss(ctx, x3, lab3, &d);
    /* class 0 dice 0; class 1: num 0, den = sum p^2 ~ 0 -> 1 - 0/tiny = 1; mean over 2 classes = 0.5 */
    assert_float_equal(segc_f32(l3)[0], 0.5f, 1e-5);
    segc_ctx_free(ctx);
}

/* ---------------- errors ---------------- */
static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, 4, 5), 1, false);
    segc_tensor *lab = segc_tensor_zeros(ctx, SEGC_I64, 3, SHAPE(2, 4, 5));
    segc_tensor *badshape = segc_tensor_zeros(ctx, SEGC_I64, 3, SHAPE(2, 5, 4));
    segc_tensor *flt = segc_tensor_zeros(ctx, SEGC_F32, 3, SHAPE(2, 4, 5));
    segc_ce_opts o = segc_ce_opts_default();
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, x, badshape, &o), "cross_entropy: target shape must be the logits' [2, 3, 4, 5] without dim 1, found [2, 5, 4]");
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, x, flt, &o), "cross_entropy: target must be i64, i32 or u8");
    ((int64_t *)lab->data)[1 * 20 + 2 * 5 + 3] = 7;
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, x, lab, &o), "cross_entropy: target value 7 at [1, 2, 3] is outside [0, 3) and is not ignore_index -100");
    ((int64_t *)lab->data)[1 * 20 + 2 * 5 + 3] = -1;
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, x, lab, &o), "target value -1 at [1, 2, 3]");
    ((int64_t *)lab->data)[1 * 20 + 2 * 5 + 3] = 0;
    o.weight = t_randn(ctx, 1, SHAPE(4), 1, false);
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, x, lab, &o), "cross_entropy: weight must have shape [3], found [4]");
    o = segc_ce_opts_default();
    o.label_smoothing = 1.5f;
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, x, lab, &o), "cross_entropy: label_smoothing must be in [0, 1]");
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, lab, lab, NULL), "cross_entropy: logits must be f32 or bf16");
    EXPECT_ERR(ctx, segc_cross_entropy(ctx, t_randn(ctx, 1, SHAPE(3), 1, false), lab, NULL), "cross_entropy: logits must be [N, C, ...]");
    /* dice */
    EXPECT_ERR(ctx, segc_dice_loss(ctx, x, badshape, NULL), "dice_loss: target shape must be the logits'");
    segc_tensor *u8 = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(2, 4, 5));
    ((uint8_t *)u8->data)[5] = 3;
    EXPECT_ERR(ctx, segc_dice_loss(ctx, x, u8, NULL), "dice_loss: target value 3 at [0, 1, 0] is outside [0, 3) and is not ignore_index 255");
    ((uint8_t *)u8->data)[5] = 255;
    assert_non_null(segc_dice_loss(ctx, x, u8, NULL));
    segc_dice_opts d = segc_dice_opts_default();
    d.exponent = 0;
    EXPECT_ERR(ctx, segc_dice_loss(ctx, x, u8, &d), "dice_loss: need exponent in [1, 8]");
    d = segc_dice_opts_default();
    d.class_weight = t_randn(ctx, 1, SHAPE(2), 1, false);
    EXPECT_ERR(ctx, segc_dice_loss(ctx, x, u8, &d), "dice_loss: class_weight must have shape [3], found [2]");
    /* bce / smooth l1 */
    segc_tensor *y = t_uniform(ctx, 4, SHAPE(2, 3, 4, 5), 0, 1, false);
    EXPECT_ERR(ctx, segc_bce_with_logits(ctx, x, flt, NULL, NULL, SEGC_LOSS_MEAN), "bce_with_logits: target must have the shape of logits [2, 3, 4, 5], found [2, 4, 5]");
    EXPECT_ERR(ctx, segc_bce_with_logits(ctx, x, y, t_randn(ctx, 1, SHAPE(4), 1, false), NULL, SEGC_LOSS_MEAN),
               "bce_with_logits: weight of shape [4] does not broadcast to [2, 3, 4, 5]");
    EXPECT_ERR(ctx, segc_bce_with_logits(ctx, x, y, NULL, t_randn(ctx, 2, SHAPE(3, 2), 1, false), SEGC_LOSS_MEAN),
               "bce_with_logits: pos_weight of shape [3, 2] does not broadcast");
    EXPECT_ERR(ctx, segc_bce_with_logits(ctx, x, lab, NULL, NULL, SEGC_LOSS_MEAN), "bce_with_logits: target must be f32 or bf16");
    EXPECT_ERR(ctx, segc_smooth_l1(ctx, x, flt, 1.f, SEGC_LOSS_MEAN), "smooth_l1: target must have the shape of pred");
    EXPECT_ERR(ctx, segc_smooth_l1(ctx, x, y, -1.f, SEGC_LOSS_MEAN), "smooth_l1: beta must be >= 0");
    EXPECT_ERR(ctx, segc_smooth_l1(ctx, x, y, 1.f, (segc_loss_reduction)7), "smooth_l1: unknown reduction 7");
    /* NULL inputs keep the first error */
    segc_clear_error(ctx);
    segc_set_error(ctx, "earlier failure");
    assert_null(segc_cross_entropy(ctx, NULL, lab, NULL));
    assert_null(segc_dice_loss(ctx, x, NULL, NULL));
    assert_null(segc_bce_with_logits(ctx, NULL, y, NULL, NULL, SEGC_LOSS_MEAN));
    assert_null(segc_smooth_l1(ctx, x, NULL, 1.f, SEGC_LOSS_MEAN));
    assert_string_equal(segc_last_error(ctx), "earlier failure");
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity),    cmocka_unit_test(test_gradcheck), cmocka_unit_test(test_thread_independent),
        cmocka_unit_test(test_semantics), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("loss", tests, NULL, NULL);
}
