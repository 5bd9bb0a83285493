/* bf16 activation gradients (ctx->bf16_grads): the ops that read and write them (softmax,
 * log_softmax, the activations, the broadcasting binary ops) against PyTorch's own bf16
 * gradients (tests/fixtures/gen_bf16_grads.py), at every ISA level this CPU has; the same ops on
 * large tensors against segc's f32 gradients; and the tape's conversions where bf16 and f32
 * gradients meet (a leaf reached by both, a producer that reads f32, the mode switched off). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/cpu.h"
#include "segc/ops.h"

static segc_tensor *run_op(segc_ctx *ctx, const char *op, segc_tensor **in, int dim, int64_t H, int64_t W) {
    if (!strcmp(op, "dwconv_tokens")) return segc_dwconv2d_tokens(ctx, in[0], in[1], in[2], H, W);
    if (!strcmp(op, "linear")) return segc_linear(ctx, in[0], in[1], in[2]);
    if (!strcmp(op, "attn_proj")) return segc_linear(ctx, segc_attention(ctx, in[0], in[1], in[2], 2, 0.25f), in[3], NULL);
    if (!strcmp(op, "permute")) return segc_permute(ctx, in[0], (const int[]){0, 2, 3, 1});
    if (!strcmp(op, "layer_norm")) return segc_layer_norm(ctx, in[0], in[1], in[2], 1e-6f);
    if (!strcmp(op, "add_layer_norm")) return segc_add_layer_norm(ctx, in[0], in[1], in[2], in[3], 1e-6f, NULL);
    if (!strcmp(op, "gelu_linear")) return segc_gelu_linear(ctx, in[0], in[1], in[2]);
    if (!strcmp(op, "matmul")) return segc_matmul(ctx, in[0], in[1], false, false);
    if (!strcmp(op, "linear_two_uses")) return segc_add(ctx, segc_linear(ctx, in[0], in[1], NULL), segc_gelu(ctx, in[0]));
    if (!strcmp(op, "mlp")) return segc_linear(ctx, segc_gelu(ctx, segc_linear(ctx, in[0], in[1], in[2])), in[3], in[4]);
    if (!strcmp(op, "softmax")) return segc_softmax(ctx, in[0], dim);
    if (!strcmp(op, "log_softmax")) return segc_log_softmax(ctx, in[0], dim);
    if (!strcmp(op, "gelu")) return segc_gelu(ctx, in[0]);
    if (!strcmp(op, "sigmoid")) return segc_sigmoid(ctx, in[0]);
    if (!strcmp(op, "tanh")) return segc_tanh(ctx, in[0]);
    if (!strcmp(op, "relu")) return segc_relu(ctx, in[0]);
    if (!strcmp(op, "leaky_relu")) return segc_leaky_relu(ctx, in[0], 0.01f);
    if (!strcmp(op, "add")) return segc_add(ctx, in[0], in[1]);
    if (!strcmp(op, "sub")) return segc_sub(ctx, in[0], in[1]);
    if (!strcmp(op, "mul")) return segc_mul(ctx, in[0], in[1]);
    if (!strcmp(op, "div")) {   /* b moved away from zero as the generator does: sign(b) * (0.5 + |b|) */
        segc_tensor *b = in[1];
        int64_t n = segc_numel(b);
        segc_tensor *d = segc_tensor_like(ctx, b);
        for (int64_t i = 0; i < n; i++) {
            float v = segc_bf16_to_f32(segc_bf16p(b)[i]);
            segc_bf16p(d)[i] = segc_f32_to_bf16((v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f) * (0.5f + fabsf(v)));
        }
        d->requires_grad = false;
        return segc_div(ctx, in[0], d);
    }
    if (!strcmp(op, "softmax_gelu")) return segc_softmax(ctx, segc_gelu(ctx, in[0]), -1);
    if (!strcmp(op, "two_uses")) return segc_add(ctx, segc_softmax(ctx, in[0], -1), segc_sigmoid(ctx, in[0]));
    if (!strcmp(op, "through_scalar")) return segc_softmax(ctx, segc_mul_scalar(ctx, in[0], 2.0f), -1);
    fail_msg("unknown op %s", op);
    return NULL;
}

/* the gradient segc left on a leaf, as f32 (from whichever of grad / grad_bf16 it has) */
static float *leaf_grad(const segc_tensor *t) {
    int64_t n = segc_numel(t);
    float *g = malloc((size_t)n * sizeof *g);
    assert_true(!(t->grad && t->grad_bf16));   /* a leaf ends with one gradient */
    if (t->grad_bf16) segc_bf16_to_f32_n(t->grad_bf16, g, n);
    else memcpy(g, t->grad, (size_t)n * sizeof *g);
    return g;
}

/* Each case at each level: the gradients reach the leaves in bf16 (except through an op that
 * keeps f32 ones) and match the float64 reference: element by element within a few bf16 steps
 * for the elementwise ops (one rounding), in norm for the softmax family and the chains (bf16
 * probabilities and intermediates round more than once; single elements can cancel); and
 * PyTorch's own bf16 gradients in norm (they round intermediates too, so the two sides differ
 * element by element by more than either differs from float64). */
static void test_fx_bf16_grads(void **state) {
    (void)state;
    segc_st_file *f = fx_open("bf16_grads.safetensors");
    const segc_isa start = segc_cpu_isa();
    int ran = 0;
    for (int l = 0; l <= (int)segc_cpu_detected(); l++) {
        assert_true(segc_cpu_set_isa((segc_isa)l));
        print_message("%s:\n", segc_isa_name((segc_isa)l));
        bool all = true;
        for (int i = 0; i < segc_st_count(f); i++) {
            const char *key = segc_st_at(f, i)->name;
            const char *slash = strchr(key, '/');
            if (!slash || strcmp(slash, "/out") != 0) continue;
            char cas[64], op[32], what[160], nm_t[32];
            snprintf(cas, sizeof cas, "%.*s", (int)(slash - key), key);
            fx_param_str(f, cas, "op", "", op, sizeof op);
            segc_ctx *ctx = segc_ctx_new(1);
            ctx->bf16_grads = true;
            int n = fx_n_inputs(f, cas);
            segc_tensor *in[5] = {0}, *want[5] = {0};
            for (int k = 0; k < n; k++) {
                char nm[16];
                snprintf(nm, sizeof nm, "in%d", k);
                in[k] = fx_tensor(ctx, f, cas, nm);
                snprintf(nm, sizeof nm, "grad%d", k);
                want[k] = fx_tensor(ctx, f, cas, nm);
                assert_int_equal(in[k]->dtype, SEGC_BF16);
                in[k]->requires_grad = true;
            }
            segc_tensor *y = run_op(ctx, op, in, (int)fx_param_int(f, cas, "dim", -1), fx_param_int(f, cas, "H", 0),
                                    fx_param_int(f, cas, "W", 0));
            assert_non_null(y);
            segc_tensor *gout = fx_tensor(ctx, f, cas, "gout");
            int64_t m = segc_numel(y);
            uint16_t *g16 = malloc((size_t)m * sizeof *g16);
            segc_f32_to_bf16_n(segc_f32(gout), g16, m);
            assert_true(segc_backward_from_bf16(ctx, y, g16));
            bool elementwise = !strncmp(cas, "act_", 4) || !strncmp(cas, "bin_", 4);
            for (int k = 0; k < n; k++) {
                if (!strcmp(op, "div") && k == 1) continue;   /* b reached through the C-side transform */
                /* f32: through mul_scalar, which reads f32 gradients, attention's q, k, v, and weights and biases */
                bool weights = (k > 0 && (!strcmp(op, "dwconv_tokens") || strstr(op, "linear") || !strcmp(op, "mlp") ||
                                          !strcmp(op, "layer_norm"))) ||
                               (k > 1 && !strcmp(op, "add_layer_norm"));
                if (!strcmp(op, "through_scalar") || !strcmp(op, "attn_proj") || weights) assert_non_null(in[k]->grad);
                else assert_non_null(in[k]->grad_bf16);   /* bf16 all the way to the leaf */
                float *g = leaf_grad(in[k]);
                int64_t ne = segc_numel(in[k]);
                snprintf(what, sizeof what, "%s grad%d vs float64", cas, k);
                /* the chains round their bf16 intermediates (as PyTorch does), float64 does not */
                bool chain = !strncmp(cas, "chain", 5) || strstr(cas, "two_uses") || !strcmp(op, "through_scalar") ||
                             !strcmp(op, "mlp") || !strcmp(op, "attn_proj");
                all &= elementwise ? fx_close_f32(what, g, want[k], 8e-3)
                                   : fx_close_norm(what, g, segc_f32(want[k]), ne, 1e-6, chain ? 1.5e-2 : 6e-3);
                snprintf(nm_t, sizeof nm_t, "torch_grad%d", k);
                segc_tensor *tg = fx_tensor(ctx, f, cas, nm_t);
                assert_non_null(tg);
                snprintf(what, sizeof what, "%s grad%d vs PyTorch bf16", cas, k);
                all &= fx_close_norm(what, g, segc_f32(tg), ne, 1e-6, 8e-3);
                free(g);
            }
            free(g16);
            segc_ctx_free(ctx);
            ran++;
        }
        assert_true(all);
    }
    assert_true(segc_cpu_set_isa(start));
    assert_true(ran >= 36);
    segc_st_close(f);
}

/* The same op with bf16 and with f32 gradients on one large tensor (8100 rows of D: with D = 272,
 * 2.2 M elements, the fresh bf16 gradient is streamed with non-temporal stores). With a
 * bf16-representable upstream gradient, log_softmax, gelu and add compute the same f32 values
 * either way, so the bf16 gradient must be exactly the f32 one rounded; softmax's bf16 path reads
 * the bf16 output instead of recomputing the probabilities, so it is judged against the f32 path
 * at bf16 accuracy, scaled per row. */
static void bf16_vs_f32(const char *op, int64_t D) {
    const segc_isa start = segc_cpu_isa();
    const int64_t R = 8100, n = R * D;
    float *xf = malloc((size_t)n * sizeof *xf), *g = malloc((size_t)n * sizeof *g);
    uint16_t *g16 = malloc((size_t)n * sizeof *g16);
    for (int64_t i = 0; i < n; i++) {
        xf[i] = (float)((i * 7919) % 4001) / 400.0f - 5.0f;
        g16[i] = segc_f32_to_bf16((float)((i * 104729) % 2001) / 1000.0f - 1.0f);
        g[i] = segc_bf16_to_f32(g16[i]);
    }
    /* softmax: bf16 probabilities; linear: oneDNN may block a bf16-output GEMM differently */
    bool add = !strcmp(op, "add"), exact = strcmp(op, "softmax") != 0 && strcmp(op, "linear") != 0;
    for (int l = 0; l <= (int)segc_cpu_detected(); l++) {
        assert_true(segc_cpu_set_isa((segc_isa)l));
        float *ref = malloc((size_t)n * sizeof *ref), *refb = malloc((size_t)D * sizeof *refb);
        uint16_t *got = malloc((size_t)n * sizeof *got), *gotb = malloc((size_t)D * sizeof *gotb);
        for (int mode = 0; mode < 2; mode++) {
            segc_ctx *ctx = segc_ctx_new(1);
            ctx->bf16_grads = mode == 1;
            /* drop_path: 90 samples, some dropped (grad 0) and some kept (grad g / 0.7) */
            bool dp = !strcmp(op, "drop_path");
            segc_tensor *x = segc_tensor_new(ctx, SEGC_BF16, 3, dp ? SHAPE(90, R / 90, D) : SHAPE(1, R, D));
            segc_tensor *b = segc_tensor_new(ctx, SEGC_BF16, 1, SHAPE(D));
            segc_f32_to_bf16_n(xf, segc_bf16p(x), n);
            segc_f32_to_bf16_n(xf, segc_bf16p(b), D);
            x->requires_grad = b->requires_grad = true;
            segc_tensor *w3 = segc_tensor_new(ctx, SEGC_BF16, 4, SHAPE(D, 1, 3, 3));
            for (int64_t i = 0; i < 9 * D; i++) segc_bf16p(w3)[i] = segc_f32_to_bf16((float)(i % 11) / 16.0f - 0.3f);
            segc_tensor *in[3] = {x, b, w3};
            segc_tensor *wl = segc_tensor_new(ctx, SEGC_BF16, 2, SHAPE(D, D));
            for (int64_t i = 0; i < D * D; i++) segc_bf16p(wl)[i] = segc_f32_to_bf16((float)(i % 13) / 64.0f - 0.09f);
            segc_tensor *y = !strcmp(op, "dwconv_tokens") ? segc_dwconv2d_tokens(ctx, x, w3, NULL, R / 90, 90)   /* 90 x 90 tokens */
                             : !strcmp(op, "linear")      ? segc_linear(ctx, x, wl, NULL)
                             : !strcmp(op, "drop_path")   ? segc_drop_path(ctx, x, 0.3f)
                             : !strcmp(op, "layer_norm")  ? segc_layer_norm(ctx, x, NULL, NULL, 1e-6f)
                             : !strcmp(op, "permute")     ? segc_permute(ctx, x, (const int[]){0, 2, 1})
                             : !strcmp(op, "add_f32_seed") ? segc_add(ctx, x, x)
                                                          : run_op(ctx, op, in, -1, 0, 0);
            assert_non_null(y);
            /* add_f32_seed: an f32 upstream gradient into a bf16 one (add's rounding pass) */
            assert_true(mode && strcmp(op, "add_f32_seed") ? segc_backward_from_bf16(ctx, y, g16)
                                                           : segc_backward_from(ctx, y, g));
            if (mode) {
                assert_non_null(x->grad_bf16);
                assert_null(x->grad);
                memcpy(got, x->grad_bf16, (size_t)n * sizeof *got);
                if (add) memcpy(gotb, b->grad_bf16, (size_t)D * sizeof *gotb);
            } else {
                assert_null(x->grad_bf16);
                memcpy(ref, x->grad, (size_t)n * sizeof *ref);
                if (add) memcpy(refb, b->grad, (size_t)D * sizeof *refb);
            }
            segc_ctx_free(ctx);
        }
        double worst = 0;
        for (int64_t r = 0; r < R; r++) {
            double scale = 0;
            for (int64_t j = 0; j < D; j++) scale = fmax(scale, fabs(ref[r * D + j]));
            for (int64_t j = 0; j < D; j++) {
                int64_t i = r * D + j;
                if (exact) {
                    if (got[i] != segc_f32_to_bf16(ref[i]))
                        fail_msg("%s D=%lld %s: element %lld: bf16 gradient %#x, f32 gradient rounded %#x", op,
                                 (long long)D, segc_isa_name((segc_isa)l), (long long)i, got[i],
                                 segc_f32_to_bf16(ref[i]));
                } else {
                    worst = fmax(worst, fabs(segc_bf16_to_f32(got[i]) - ref[i]) / fmax(scale, 1e-30));
                }
            }
        }
        if (add)
            for (int64_t j = 0; j < D; j++) assert_int_equal(gotb[j], segc_f32_to_bf16(refb[j]));
        int64_t nonzero = 0;
        for (int64_t i = 0; i < n; i++) nonzero += got[i] != 0;
        assert_true(nonzero > n / 4);   /* a gradient that is mostly there (drop_path keeps some samples) */
        print_message("%s D=%lld %s: %s (max error %.3g of the row's largest gradient)\n", op, (long long)D,
                      segc_isa_name((segc_isa)l), exact ? "bitwise the rounded f32 gradient" : "close", worst);
        assert_true(worst < 1.0 / 64);   /* bf16 probabilities and gradients: a few 2^-9 steps */
        free(ref), free(refb), free(got), free(gotb);
    }
    assert_true(segc_cpu_set_isa(start));
    free(xf), free(g), free(g16);
}

static void test_bf16_vs_f32_grads(void **state) {
    (void)state;
    const char *ops[] = {"softmax", "log_softmax", "gelu",   "sigmoid",     "add",       "dwconv_tokens",
                         "linear",  "drop_path",   "add_f32_seed", "layer_norm", "permute"};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        bf16_vs_f32(ops[o], 260);
        bf16_vs_f32(ops[o], 272);
    }
}

/* Where the two kinds meet. A leaf reached through an f32-gradient op (mul_scalar) and a bf16 one
 * (gelu) ends with one f32 gradient holding their sum, whichever backward runs first; with the
 * mode off, segc_backward_from_bf16 widens the seed and every gradient is f32. */
static void test_bf16_grads_meet_f32(void **state) {
    (void)state;
    const int64_t M = 8, K = 16;
    float xs[8 * 16];
    for (int i = 0; i < M * K; i++) xs[i] = segc_bf16_to_f32(segc_f32_to_bf16(3 * sinf((float)i)));
    uint16_t g16[8 * 16];
    for (int i = 0; i < M * K; i++) g16[i] = segc_f32_to_bf16(0.25f * (float)((i % 7) - 3));
    float ref[8 * 16];
    for (int order = 0; order < 2; order++) {
        for (int mode = 0; mode < 2; mode++) {
            segc_ctx *ctx = segc_ctx_new(1);
            ctx->bf16_grads = mode == 1;
            segc_tensor *x = segc_tensor_new(ctx, SEGC_BF16, 2, SHAPE(M, K));
            segc_f32_to_bf16_n(xs, segc_bf16p(x), M * K);
            x->requires_grad = true;
            segc_tensor *a, *b;   /* recorded in this order: backward runs b's producer first */
            if (order) a = segc_gelu(ctx, x), b = segc_mul_scalar(ctx, x, 0.75f);
            else a = segc_mul_scalar(ctx, x, 0.75f), b = segc_gelu(ctx, x);
            segc_tensor *y = segc_add(ctx, a, b);
            assert_non_null(y);
            assert_true(segc_backward_from_bf16(ctx, y, g16));
            assert_null(x->grad_bf16);
            assert_non_null(x->grad);
            if (!mode) {
                memcpy(ref, x->grad, sizeof ref);
            } else {
                /* gelu's part (|g f'(x)| <= 0.85 here) rounded to bf16 once, then summed in f32: at most
                 * 2^-9 * 0.85 apart; dropping either part would be off by far more */
                for (int i = 0; i < M * K; i++) {
                    if (!(fabsf(x->grad[i] - ref[i]) <= 2e-3f))
                        fail_msg("order %d element %d: %g vs f32 gradients %g", order, i, x->grad[i], ref[i]);
                }
            }
            segc_ctx_free(ctx);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fx_bf16_grads),
        cmocka_unit_test(test_bf16_vs_f32_grads),
        cmocka_unit_test(test_bf16_grads_meet_f32),
    };
    return cmocka_run_group_tests_name("bf16_grads", tests, NULL, NULL);
}
