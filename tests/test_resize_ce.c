/* segc_resize_cross_entropy: PyTorch parity (interpolate + cross_entropy in float64), equality with the
 * composition of segc_resize_bilinear and segc_cross_entropy at SegFormer-like sizes, gradcheck,
 * bitwise independence of the thread count (up- and down-sampling), errors. */
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/ops.h"

static segc_tensor *fx_fn(segc_ctx *ctx, segc_tensor **in, int n, const segc_st_file *f, const char *cas) {
    return segc_resize_cross_entropy(ctx, in[0], in[1], 255);
}

static void test_parity(void **state) {
    segc_st_file *f = fx_open("resize_ce.safetensors");
    /* bf16 rows: the reference loss is stored rounded to bf16 (segc returns it in f32), so those rows
     * get the bf16 bar; their gradients are f32 and agree to ~2e-5 */
    assert_true(fx_check_all(f, "rce_", fx_fn, 1e-5, 2e-2) >= 10);
    segc_st_close(f);
}

static void test_equals_composition(void **state) {
    segc_ctx *ctx = segc_ctx_new(5);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 150, 24, 32), 2, true);
    segc_tensor *t = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(2, 96, 128));
    for (int64_t i = 0; i < segc_numel(t); i++) ((uint8_t *)t->data)[i] = (uint8_t)(i % 7 == 0 ? 255 : (i * 31) % 150);
    segc_tensor *fused = segc_resize_cross_entropy(ctx, x, t, 255);
    assert_true(segc_backward(ctx, fused));
    int64_t n = segc_numel(x);
    float *g_fused = malloc((size_t)n * 4);
    memcpy(g_fused, x->grad, (size_t)n * 4);
    memset(x->grad, 0, (size_t)n * 4);
    segc_ce_opts o = segc_ce_opts_default();
    o.ignore_index = 255;
    segc_tensor *ref = segc_cross_entropy(ctx, segc_resize_bilinear(ctx, x, 96, 128, false), t, &o);
    assert_true(segc_backward(ctx, ref));
    print_message("  fused loss %.7f, composed %.7f\n", segc_f32(fused)[0], segc_f32(ref)[0]);
    assert_float_equal(segc_f32(fused)[0], segc_f32(ref)[0], 2e-6 * segc_f32(ref)[0]);
    assert_true(fx_close_norm("fused vs composed gradient", g_fused, x->grad, n, 0, 1e-5));
    free(g_fused);
    segc_ctx_free(ctx);
}

static segc_tensor *rce_gc(segc_ctx *ctx, segc_tensor **in, int n, void *user) {
    return segc_resize_cross_entropy(ctx, in[0], user, 255);
}

static void test_gradcheck(void **state) {
    segc_ctx *ctx = segc_ctx_new(6);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 4, 3, 5), 1, true);
    segc_tensor *t = segc_tensor_new(ctx, SEGC_I64, 3, SHAPE(2, 7, 9));
    for (int64_t i = 0; i < segc_numel(t); i++) ((int64_t *)t->data)[i] = i % 5 == 0 ? 255 : (i * 3) % 4;
    segc_tensor *ins[1] = {x};
    assert_true(gradcheck(ctx, "resize_cross_entropy", rce_gc, ins, 1, t, gc_default()));
    segc_ctx_free(ctx);
}

/* loss and gradient for 1, 2 and 3 threads must be the same bits */
static void test_thread_independent(void **state) {
    const int64_t shapes[2][4] = {{13, 11, 50, 37}, {17, 19, 6, 8}};   /* h, w, H, W: up, then down */
    for (int k = 0; k < 2; k++) {
        const int64_t h = shapes[k][0], w = shapes[k][1], H = shapes[k][2], W = shapes[k][3];
        float loss[3], *grad[3];
        for (int t = 0; t < 3; t++) {
            segc_ctx *ctx = segc_ctx_new(9);
            segc_set_num_threads(ctx, t + 1);
            segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 5, h, w), 3, true);
            segc_tensor *y = segc_tensor_new(ctx, SEGC_U8, 3, SHAPE(2, H, W));
            for (int64_t i = 0; i < segc_numel(y); i++) ((uint8_t *)y->data)[i] = (uint8_t)(i % 11 == 0 ? 255 : (i * 7) % 5);
            segc_tensor *l = segc_resize_cross_entropy(ctx, x, y, 255);
            assert_true(segc_backward(ctx, l));
            loss[t] = segc_f32(l)[0];
            grad[t] = malloc((size_t)segc_numel(x) * 4);
            memcpy(grad[t], x->grad, (size_t)segc_numel(x) * 4);
            if (t == 2) {
                for (int u = 1; u < 3; u++) {
                    assert_memory_equal(&loss[0], &loss[u], sizeof(float));
                    assert_memory_equal(grad[0], grad[u], (size_t)segc_numel(x) * 4);
                }
            }
            segc_ctx_free(ctx);
        }
        for (int t = 0; t < 3; t++) free(grad[t]);
    }
    segc_set_num_threads(NULL, 2);
}

static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(6);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 2, 2), 1, true);
    segc_tensor *t = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(1, 4, 4));
    ((uint8_t *)t->data)[5] = 7;
    assert_null(segc_resize_cross_entropy(ctx, x, t, 255));
    assert_non_null(strstr(segc_last_error(ctx), "resize_cross_entropy: target value 7 at flat index 5"));
    segc_clear_error(ctx);
    segc_tensor *t2 = segc_tensor_zeros(ctx, SEGC_U8, 3, SHAPE(2, 4, 4));
    assert_null(segc_resize_cross_entropy(ctx, x, t2, 255));
    assert_non_null(strstr(segc_last_error(ctx), "same N"));
    segc_clear_error(ctx);
    segc_tensor *tf = segc_tensor_zeros(ctx, SEGC_F32, 3, SHAPE(1, 4, 4));
    assert_null(segc_resize_cross_entropy(ctx, x, tf, 255));
    assert_non_null(strstr(segc_last_error(ctx), "target must be u8, i32 or i64"));
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parity), cmocka_unit_test(test_equals_composition),
                                       cmocka_unit_test(test_gradcheck), cmocka_unit_test(test_thread_independent),
                                       cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests_name("resize_ce", tests, NULL, NULL);
}
