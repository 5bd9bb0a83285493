/* shape ops and resampling: PyTorch parity fixtures, naive references for the
 * blocked permute kernels, views, integer dtypes, gradchecks, determinism and
 * error messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/ops.h"

static segc_st_file *g_fx;

static int setup(void **state) {
    g_fx = fx_open("shape.safetensors");
    return g_fx ? 0 : -1;
}
static int teardown(void **state) {
    segc_st_close(g_fx);
    return 0;
}

/* ------------------------------------------------------------ fixture ops */

static segc_tensor *fx_permute(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    long p[SEGC_MAX_DIMS];
    int k = fx_param_ints(f, cas, "perm", p, SEGC_MAX_DIMS), perm[SEGC_MAX_DIMS];
    for (int i = 0; i < k; i++) perm[i] = (int)p[i];
    return segc_permute(ctx, ins[0], perm);
}
static segc_tensor *fx_transpose(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_transpose(ctx, ins[0], (int)fx_param_int(f, cas, "d0", 0), (int)fx_param_int(f, cas, "d1", 0));
}
static segc_tensor *fx_concat(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_concat(ctx, ins, n, (int)fx_param_int(f, cas, "dim", 0));
}
static segc_tensor *fx_split(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    long s[8];
    int k = fx_param_ints(f, cas, "sizes", s, 8), dim = (int)fx_param_int(f, cas, "dim", 0);
    int64_t sizes[8];
    segc_tensor *outs[8], *rev[8];
    for (int i = 0; i < k; i++) sizes[i] = s[i];
    if (!segc_split(ctx, ins[0], sizes, k, dim, outs)) return NULL;
    for (int i = 0; i < k; i++) rev[i] = outs[k - 1 - i];
    return segc_concat(ctx, rev, k, dim);
}
static segc_tensor *fx_slice(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_slice(ctx, ins[0], (int)fx_param_int(f, cas, "dim", 0), fx_param_int(f, cas, "start", 0),
                      fx_param_int(f, cas, "end", 0), fx_param_int(f, cas, "step", 1));
}
static segc_tensor *fx_pad(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    long p[10];
    int k = fx_param_ints(f, cas, "pads", p, 10), pads[10];
    for (int i = 0; i < k; i++) pads[i] = (int)p[i];
    char mode[32];
    fx_param_str(f, cas, "mode", "constant", mode, sizeof mode);
    segc_pad_mode m = !strcmp(mode, "reflect") ? SEGC_PAD_REFLECT : !strcmp(mode, "replicate") ? SEGC_PAD_REPLICATE
                                                                                                : SEGC_PAD_CONSTANT;
    return segc_pad(ctx, ins[0], pads, k, m, (float)fx_param_double(f, cas, "value", 0));
}
static segc_tensor *fx_bilinear(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_resize_bilinear(ctx, ins[0], (int)fx_param_int(f, cas, "oh", 0), (int)fx_param_int(f, cas, "ow", 0),
                                fx_param_int(f, cas, "align_corners", 0) != 0);
}
static segc_tensor *fx_nearest(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_resize_nearest(ctx, ins[0], (int)fx_param_int(f, cas, "oh", 0), (int)fx_param_int(f, cas, "ow", 0));
}
static segc_tensor *fx_nearest_exact(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas) {
    return segc_resize_nearest_exact(ctx, ins[0], (int)fx_param_int(f, cas, "oh", 0), (int)fx_param_int(f, cas, "ow", 0));
}

static void test_fixtures_permute(void **state) {
    assert_true(fx_check_all(g_fx, "permute_", fx_permute, 1e-5, 2e-2) >= 18);
    assert_true(fx_check_all(g_fx, "transpose_", fx_transpose, 1e-5, 2e-2) >= 4);
}
static void test_fixtures_concat_split_slice(void **state) {
    assert_true(fx_check_all(g_fx, "concat_", fx_concat, 1e-5, 2e-2) >= 8);
    assert_true(fx_check_all(g_fx, "split_", fx_split, 1e-5, 2e-2) >= 6);
    assert_true(fx_check_all(g_fx, "slice_", fx_slice, 1e-5, 2e-2) >= 12);
}
static void test_fixtures_pad(void **state) { assert_true(fx_check_all(g_fx, "pad_", fx_pad, 1e-5, 2e-2) >= 18); }
static void test_fixtures_resize(void **state) {
    assert_true(fx_check_all(g_fx, "bilinear_", fx_bilinear, 1e-5, 2e-2) >= 24);
    assert_true(fx_check_all(g_fx, "nearest_", fx_nearest, 1e-5, 2e-2) >= 10);
    assert_true(fx_check_all(g_fx, "nearestexact_", fx_nearest_exact, 1e-5, 2e-2) >= 10);
}

/* ------------------------------------------------- permute vs naive reference */

/* element-size agnostic naive permute */
static void naive_permute(const segc_tensor *x, const int *perm, char *out) {
    size_t es = segc_dtype_size(x->dtype);
    int nd = x->ndim;
    int64_t istr[SEGC_MAX_DIMS], os[SEGC_MAX_DIMS], n = segc_numel(x);
    istr[nd - 1] = 1;
    for (int d = nd - 2; d >= 0; d--) istr[d] = istr[d + 1] * x->shape[d + 1];
    for (int i = 0; i < nd; i++) os[i] = x->shape[perm[i]];
    for (int64_t o = 0; o < n; o++) {
        int64_t rem = o, off = 0;
        for (int i = nd - 1; i >= 0; i--) {
            off += rem % os[i] * istr[perm[i]];
            rem /= os[i];
        }
        memcpy(out + o * (int64_t)es, (const char *)x->data + off * (int64_t)es, es);
    }
}

static void check_permute(segc_ctx *ctx, segc_dtype dt, int nd, const int64_t *shape, const int *perm) {
    segc_tensor *x = segc_tensor_new(ctx, dt, nd, shape);
    unsigned char *bytes = x->data;
    for (size_t i = 0; i < segc_nbytes(x); i++) bytes[i] = (unsigned char)(i * 131u + 7u);
    if (dt == SEGC_F32) /* keep values finite for the gradient part */
        for (int64_t i = 0; i < segc_numel(x); i++) segc_f32(x)[i] = (float)(i % 1000) * 0.5f - 3.0f;
    x->requires_grad = dt == SEGC_F32;
    segc_tensor *y = segc_permute(ctx, x, perm);
    assert_non_null(y);
    char *want = malloc(segc_nbytes(x) + 1);
    naive_permute(x, perm, want);
    if (memcmp(want, y->data, segc_nbytes(x)) != 0) {
        char b[96];
        fail_msg("permute %s %s perm %d%d%d%d%d mismatch", segc_dtype_name(dt), segc_shape_str(x, b, sizeof b), perm[0],
                 nd > 1 ? perm[1] : 0, nd > 2 ? perm[2] : 0, nd > 3 ? perm[3] : 0, nd > 4 ? perm[4] : 0);
    }
    if (dt == SEGC_F32) {
        /* backward accumulates the inverse permutation onto an existing gradient */
        int64_t n = segc_numel(x);
        float *g = malloc((size_t)n * sizeof(float)), *base = segc_grad(ctx, x);
        for (int64_t i = 0; i < n; i++) {
            g[i] = (float)((i * 7) % 13) - 6.0f;
            base[i] = 0.25f;
        }
        assert_true(segc_backward_from(ctx, y, g));
        segc_tensor *gt = segc_tensor_wrap(ctx, SEGC_F32, y->ndim, y->shape, g);
        int inv[SEGC_MAX_DIMS];
        for (int i = 0; i < nd; i++) inv[perm[i]] = i;
        float *back = malloc((size_t)n * sizeof(float));
        naive_permute(gt, inv, (char *)back);
        for (int64_t i = 0; i < n; i++) assert_float_equal(x->grad[i], back[i] + 0.25f, 0);
        free(back);
        free(g);
    }
    free(want);
}

static bool next_perm(int *p, int n) { /* lexicographic successor */
    int i = n - 2;
    while (i >= 0 && p[i] > p[i + 1]) i--;
    if (i < 0) return false;
    int j = n - 1;
    while (p[j] < p[i]) j--;
    int t = p[i]; p[i] = p[j]; p[j] = t;
    for (int a = i + 1, b = n - 1; a < b; a++, b--) { t = p[a]; p[a] = p[b]; p[b] = t; }
    return true;
}

static void test_permute_reference(void **state) {
    segc_ctx *ctx = segc_ctx_new(3);
    const segc_dtype dts[] = {SEGC_F32, SEGC_BF16, SEGC_U8, SEGC_I64};
    const int64_t shapes4[][4] = {{2, 35, 3, 37}, {1, 64, 8, 8}, {3, 1, 33, 5}, {2, 17, 1, 1}};
    for (size_t d = 0; d < 4; d++)
        for (size_t s = 0; s < 4; s++) {
            int p[4] = {0, 1, 2, 3};
            do {
                segc_ctx_step_begin(ctx);
                check_permute(ctx, dts[d], 4, shapes4[s], p);
            } while (next_perm(p, 4));
        }
    /* 2-D transposes spanning many full tiles, 3-D and 5-D */
    for (size_t d = 0; d < 4; d++) {
        segc_ctx_step_begin(ctx);
        check_permute(ctx, dts[d], 2, SHAPE(70, 97), (int[]){1, 0});
        check_permute(ctx, dts[d], 3, SHAPE(2, 300, 64), (int[]){0, 2, 1});
        check_permute(ctx, dts[d], 3, SHAPE(2, 64, 300), (int[]){0, 2, 1});
        int p[5] = {0, 1, 2, 3, 4};
        do check_permute(ctx, dts[d], 5, SHAPE(2, 3, 1, 4, 5), p);
        while (next_perm(p, 5));
    }
    segc_ctx_free(ctx);
}

/* ---------------------------------------------------------- reshape / views */

static void test_reshape_flatten_views(void **state) {
    segc_ctx *ctx = segc_ctx_new(4);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, 4, 5), 1, true);
    segc_tensor *y = segc_reshape(ctx, x, 3, SHAPE(6, -1, 5));
    assert_non_null(y);
    assert_ptr_equal(y->data, x->data);
    assert_int_equal(y->shape[1], 4);
    segc_tensor *z = segc_flatten(ctx, y, 1, -1);
    assert_int_equal(z->ndim, 2);
    assert_int_equal(z->shape[1], 20);
    assert_ptr_equal(z->data, x->data);
    segc_tensor *w = segc_flatten(ctx, x, 0, 0); /* no-op flatten */
    assert_int_equal(w->ndim, 4);
    segc_tensor *e = segc_reshape(ctx, segc_tensor_new(ctx, SEGC_F32, 2, SHAPE(0, 3)), 3, SHAPE(5, 0, -1));
    assert_null(e); /* -1 with a zero-size known part is ambiguous */
    segc_clear_error(ctx);
    e = segc_reshape(ctx, segc_tensor_new(ctx, SEGC_F32, 2, SHAPE(0, 3)), 2, SHAPE(3, 0));
    assert_non_null(e);
    /* gradient: two views of x used together accumulate into x's gradient */
    float g[240];
    for (int i = 0; i < 240; i++) g[i] = (float)i;
    segc_tensor *s = segc_concat(ctx, (segc_tensor *[]){z, segc_reshape(ctx, x, 2, SHAPE(6, 20))}, 2, 0);
    assert_true(segc_backward_from(ctx, segc_reshape(ctx, s, 1, SHAPE(240)), g));
    for (int i = 0; i < 120; i++) assert_float_equal(x->grad[i], (float)(i + i + 120), 0);
    /* 0-D flatten */
    segc_tensor *sc = segc_tensor_new(ctx, SEGC_F32, 0, NULL);
    segc_tensor *f1 = segc_flatten(ctx, sc, 0, -1);
    assert_int_equal(f1->ndim, 1);
    assert_int_equal(f1->shape[0], 1);
    segc_ctx_free(ctx);
}

/* ------------------------------------------------------------- int dtypes */

static segc_tensor *iota(segc_ctx *ctx, segc_dtype dt, int nd, const int64_t *shape, int mod) {
    segc_tensor *t = segc_tensor_new(ctx, dt, nd, shape);
    for (int64_t i = 0; i < segc_numel(t); i++) {
        int64_t v = (i * 37) % mod;
        if (dt == SEGC_U8) ((uint8_t *)t->data)[i] = (uint8_t)v;
        else if (dt == SEGC_I32) ((int32_t *)t->data)[i] = (int32_t)v - 3;
        else if (dt == SEGC_I64) ((int64_t *)t->data)[i] = v - 3;
        else segc_f32(t)[i] = (float)v;
    }
    return t;
}
static double at(const segc_tensor *t, int64_t i) {
    switch (t->dtype) {
    case SEGC_U8: return ((const uint8_t *)t->data)[i];
    case SEGC_I32: return ((const int32_t *)t->data)[i];
    case SEGC_I64: return (double)((const int64_t *)t->data)[i];
    case SEGC_BF16: return segc_bf16_to_f32(segc_bf16p(t)[i]);
    default: return segc_f32(t)[i];
    }
}

static void test_int_dtypes(void **state) {
    segc_ctx *ctx = segc_ctx_new(5);
    const segc_dtype dts[] = {SEGC_U8, SEGC_I32, SEGC_I64};
    for (int d = 0; d < 3; d++) {
        segc_dtype dt = dts[d];
        /* nearest resize of labels equals the f32 result on the same values */
        segc_tensor *lab = iota(ctx, dt, 4, SHAPE(2, 1, 13, 17), 150), *labf = segc_tensor_new(ctx, SEGC_F32, 4, lab->shape);
        for (int64_t i = 0; i < segc_numel(lab); i++) segc_f32(labf)[i] = (float)at(lab, i);
        for (int ex = 0; ex < 2; ex++) {
            for (int k = 0; k < 3; k++) {
                int oh = (int[]){40, 5, 26}[k], ow = (int[]){9, 51, 34}[k];
                segc_tensor *a = ex ? segc_resize_nearest_exact(ctx, lab, oh, ow) : segc_resize_nearest(ctx, lab, oh, ow);
                segc_tensor *b = ex ? segc_resize_nearest_exact(ctx, labf, oh, ow) : segc_resize_nearest(ctx, labf, oh, ow);
                assert_non_null(a);
                assert_int_equal(a->dtype, dt);
                for (int64_t i = 0; i < segc_numel(a); i++) assert_true(at(a, i) == at(b, i));
            }
        }
        /* pad (constant fill value converted to the dtype), slice, concat, permute */
        segc_tensor *x = iota(ctx, dt, 3, SHAPE(2, 3, 4), 100);
        segc_tensor *p = segc_pad(ctx, x, (const int[]){1, 2, 0, 1}, 4, SEGC_PAD_CONSTANT, 7);
        assert_int_equal(p->shape[1], 4);
        assert_int_equal(p->shape[2], 7);
        for (int64_t i = 0; i < 2; i++)
            for (int64_t r = 0; r < 4; r++)
                for (int64_t c = 0; c < 7; c++) {
                    double want = r < 3 && c >= 1 && c < 5 ? at(x, (i * 3 + r) * 4 + c - 1) : 7.0;
                    assert_true(at(p, (i * 4 + r) * 7 + c) == want);
                }
        segc_tensor *sl = segc_slice(ctx, x, -1, 1, 4, 2);
        assert_int_equal(sl->shape[2], 2);
        for (int64_t i = 0; i < 6; i++) {
            assert_true(at(sl, i * 2) == at(x, i * 4 + 1));
            assert_true(at(sl, i * 2 + 1) == at(x, i * 4 + 3));
        }
        segc_tensor *cc = segc_concat(ctx, (segc_tensor *[]){x, sl}, 2, 2);
        assert_int_equal(cc->shape[2], 6);
        assert_true(at(cc, 4) == at(x, 1) && at(cc, 6 + 5) == at(x, 4 + 3));
        segc_tensor *pr = segc_permute(ctx, x, (const int[]){2, 0, 1});
        assert_true(at(pr, 1) == at(x, 4)); /* pr[0][0][1] = x[0][1][0] */
        assert_false(pr->requires_grad);
    }
    segc_ctx_free(ctx);
}

/* -------------------------------------------------------------- gradchecks */

typedef struct { int i[10]; int n; } iparams;

static segc_tensor *gc_permute(segc_ctx *ctx, segc_tensor **ins, int n, void *u) { return segc_permute(ctx, ins[0], ((iparams *)u)->i); }
static segc_tensor *gc_concat(segc_ctx *ctx, segc_tensor **ins, int n, void *u) { return segc_concat(ctx, ins, n, ((iparams *)u)->i[0]); }
static segc_tensor *gc_split(segc_ctx *ctx, segc_tensor **ins, int n, void *u) {
    iparams *p = u;
    segc_tensor *o[4];
    int64_t sz[4];
    for (int k = 0; k < p->n; k++) sz[k] = p->i[1 + k];
    if (!segc_split(ctx, ins[0], sz, p->n, p->i[0], o)) return NULL;
    /* pieces weighted differently so each one's gradient is visible */
    segc_tensor *r[4];
    for (int k = 0; k < p->n; k++) r[k] = segc_slice(ctx, o[k], p->i[0], 0, 1000, k + 1);
    return segc_concat(ctx, r, p->n, p->i[0]);
}
static segc_tensor *gc_slice(segc_ctx *ctx, segc_tensor **ins, int n, void *u) {
    iparams *p = u;
    return segc_slice(ctx, ins[0], p->i[0], p->i[1], p->i[2], p->i[3]);
}
static segc_tensor *gc_pad(segc_ctx *ctx, segc_tensor **ins, int n, void *u) {
    iparams *p = u;
    return segc_pad(ctx, ins[0], p->i + 1, p->n, (segc_pad_mode)p->i[0], 0.5f);
}
static segc_tensor *gc_resize(segc_ctx *ctx, segc_tensor **ins, int n, void *u) {
    iparams *p = u;
    switch (p->i[0]) {
    case 0: return segc_resize_bilinear(ctx, ins[0], p->i[1], p->i[2], p->i[3]);
    case 1: return segc_resize_nearest(ctx, ins[0], p->i[1], p->i[2]);
    default: return segc_resize_nearest_exact(ctx, ins[0], p->i[1], p->i[2]);
    }
}
static segc_tensor *gc_views(segc_ctx *ctx, segc_tensor **ins, int n, void *u) {
    segc_tensor *r = segc_reshape(ctx, ins[0], 2, SHAPE(-1, 6));
    return segc_transpose(ctx, segc_flatten(ctx, segc_reshape(ctx, r, 3, SHAPE(2, 2, 6)), 0, 1), 0, 1);
}

static void test_gradchecks(void **state) {
    segc_ctx *ctx = segc_ctx_new(6);
    gc_opts o = gc_default();
    segc_tensor *x;
    x = t_randn(ctx, 4, SHAPE(2, 3, 4, 5), 1, true);
    assert_true(gradcheck(ctx, "permute 4d", gc_permute, &x, 1, &(iparams){.i = {0, 2, 3, 1}}, o));
    x = t_randn(ctx, 5, SHAPE(2, 1, 3, 2, 4), 1, true);
    assert_true(gradcheck(ctx, "permute 5d", gc_permute, &x, 1, &(iparams){.i = {4, 0, 3, 1, 2}}, o));
    x = t_randn(ctx, 3, SHAPE(2, 3, 4), 1, true);
    assert_true(gradcheck(ctx, "reshape/flatten/transpose", gc_views, &x, 1, NULL, o));
    segc_tensor *cs[3] = {t_randn(ctx, 3, SHAPE(2, 3, 4), 1, true), t_randn(ctx, 3, SHAPE(2, 0, 4), 1, true),
                          t_randn(ctx, 3, SHAPE(2, 2, 4), 1, true)};
    assert_true(gradcheck(ctx, "concat dim1", gc_concat, cs, 3, &(iparams){.i = {1}}, o));
    segc_tensor *cs2[2] = {t_randn(ctx, 2, SHAPE(1, 3), 1, true), t_randn(ctx, 2, SHAPE(4, 3), 1, true)};
    assert_true(gradcheck(ctx, "concat dim0", gc_concat, cs2, 2, &(iparams){.i = {-2}}, o));
    x = t_randn(ctx, 3, SHAPE(3, 7, 2), 1, true);
    assert_true(gradcheck(ctx, "split uneven", gc_split, &x, 1, &(iparams){.i = {1, 3, 0, 4}, .n = 3}, o));
    x = t_randn(ctx, 3, SHAPE(3, 7, 2), 1, true); /* fresh inputs: gradients accumulate across checks */
    assert_true(gradcheck(ctx, "slice step", gc_slice, &x, 1, &(iparams){.i = {1, -6, 7, 2}}, o));
    x = t_randn(ctx, 3, SHAPE(3, 7, 2), 1, true);
    assert_true(gradcheck(ctx, "slice last", gc_slice, &x, 1, &(iparams){.i = {-1, 1, 2, 1}}, o));
    x = t_randn(ctx, 4, SHAPE(1, 2, 4, 5), 1, true);
    assert_true(gradcheck(ctx, "pad constant", gc_pad, &x, 1, &(iparams){.i = {0, 2, -1, 1, 3}, .n = 4}, o));
    x = t_randn(ctx, 4, SHAPE(1, 2, 4, 5), 1, true);
    assert_true(gradcheck(ctx, "pad reflect", gc_pad, &x, 1, &(iparams){.i = {1, 3, 4, 2, -1}, .n = 4}, o));
    x = t_randn(ctx, 4, SHAPE(1, 2, 4, 5), 1, true);
    assert_true(gradcheck(ctx, "pad replicate", gc_pad, &x, 1, &(iparams){.i = {2, 1, 5, 0, 3, 1, 0}, .n = 6}, o));
    x = t_randn(ctx, 4, SHAPE(2, 2, 5, 7), 1, true);
    assert_true(gradcheck(ctx, "bilinear up", gc_resize, &x, 1, &(iparams){.i = {0, 13, 29, 0}}, o));
    x = t_randn(ctx, 4, SHAPE(2, 2, 5, 7), 1, true);
    assert_true(gradcheck(ctx, "bilinear up ac", gc_resize, &x, 1, &(iparams){.i = {0, 9, 20, 1}}, o));
    x = t_randn(ctx, 4, SHAPE(2, 2, 5, 7), 1, true);
    assert_true(gradcheck(ctx, "bilinear down", gc_resize, &x, 1, &(iparams){.i = {0, 2, 3, 0}}, o));
    x = t_randn(ctx, 4, SHAPE(2, 2, 5, 7), 1, true);
    assert_true(gradcheck(ctx, "bilinear to 1x1", gc_resize, &x, 1, &(iparams){.i = {0, 1, 1, 1}}, o));
    x = t_randn(ctx, 4, SHAPE(2, 2, 5, 7), 1, true);
    assert_true(gradcheck(ctx, "nearest", gc_resize, &x, 1, &(iparams){.i = {1, 11, 3}}, o));
    x = t_randn(ctx, 4, SHAPE(2, 2, 5, 7), 1, true);
    assert_true(gradcheck(ctx, "nearest exact", gc_resize, &x, 1, &(iparams){.i = {2, 3, 18}}, o));
    x = t_randn(ctx, 4, SHAPE(1, 1, 1, 1), 1, true);
    assert_true(gradcheck(ctx, "bilinear from 1x1", gc_resize, &x, 1, &(iparams){.i = {0, 3, 2, 0}}, o));
    segc_ctx_free(ctx);
}

/* ----------------------------------------------------- determinism / sizes */

/* forward + backward of f at 1 and 2 threads must agree bitwise */
static void run_twice(segc_tensor *(*f)(segc_ctx *, segc_tensor *), int nd, const int64_t *shape, segc_dtype dt) {
    float *res[2][2] = {{0}};
    int64_t nout = 0, nin = 0;
    for (int t = 0; t < 2; t++) {
        segc_ctx *ctx = segc_ctx_new(9);
        ctx->retain_grads = true;   /* gradients of cast outputs are compared */
        segc_set_num_threads(ctx, t + 1);
        segc_tensor *x = t_randn(ctx, nd, shape, 1, true);
        if (dt == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
        segc_tensor *y = f(ctx, x);
        assert_non_null(y);
        nout = segc_numel(y);
        nin = segc_numel(x);
        float *g = malloc((size_t)nout * sizeof(float));
        for (int64_t i = 0; i < nout; i++) g[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        assert_true(segc_backward_from(ctx, y, g));
        res[t][0] = malloc(segc_nbytes(y));
        memcpy(res[t][0], y->data, segc_nbytes(y));
        res[t][1] = malloc((size_t)nin * sizeof(float));
        memcpy(res[t][1], x->grad, (size_t)nin * sizeof(float));
        free(g);
        segc_ctx_free(ctx);
    }
    assert_memory_equal(res[0][0], res[1][0], (size_t)nout * segc_dtype_size(dt));
    assert_memory_equal(res[0][1], res[1][1], (size_t)nin * sizeof(float));
    for (int t = 0; t < 2; t++) { free(res[t][0]); free(res[t][1]); }
    segc_set_num_threads(NULL, 2);
}
static segc_tensor *det_bilinear(segc_ctx *c, segc_tensor *x) { return segc_resize_bilinear(c, x, 67, 131, false); }
static segc_tensor *det_bilinear_down(segc_ctx *c, segc_tensor *x) { return segc_resize_bilinear(c, x, 9, 14, true); }
static segc_tensor *det_nearest(segc_ctx *c, segc_tensor *x) { return segc_resize_nearest(c, x, 50, 21); }
static segc_tensor *det_pad(segc_ctx *c, segc_tensor *x) {
    return segc_pad(c, x, (const int[]){5, 3, 2, 7}, 4, SEGC_PAD_REFLECT, 0);
}
static segc_tensor *det_permute(segc_ctx *c, segc_tensor *x) { return segc_permute(c, x, (const int[]){0, 2, 3, 1}); }

static void test_determinism(void **state) {
    for (int d = 0; d < 2; d++) {
        segc_dtype dt = d ? SEGC_BF16 : SEGC_F32;
        run_twice(det_bilinear, 4, SHAPE(2, 3, 17, 33), dt);
        run_twice(det_bilinear_down, 4, SHAPE(1, 5, 40, 31), dt);
        run_twice(det_nearest, 4, SHAPE(1, 3, 20, 30), dt);
        run_twice(det_pad, 4, SHAPE(2, 3, 30, 40), dt);
        run_twice(det_permute, 4, SHAPE(2, 24, 20, 18), dt);
    }
}

/* big enough for the threaded and vectorised paths: agrees with a scalar
 * double-precision reference of the PyTorch formula */
static void test_bilinear_large_reference(void **state) {
    segc_ctx *ctx = segc_ctx_new(10);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, 24, 20), 1, false);
    for (int ac = 0; ac < 2; ac++) {
        int OH = 96, OW = 83;
        segc_tensor *y = segc_resize_bilinear(ctx, x, OH, OW, ac);
        assert_non_null(y);
        double worst = 0;
        for (int p = 0; p < 6; p++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = 0;
                    float sc[2] = {ac ? 23.0f / (OH - 1) : 24.0f / OH, ac ? 19.0f / (OW - 1) : 20.0f / OW};
                    int in[2] = {24, 20}, o[2] = {oh, ow}, i0[2], i1[2];
                    float l[2];
                    for (int a = 0; a < 2; a++) {
                        float s = ac ? sc[a] * o[a] : fmaxf(sc[a] * (o[a] + 0.5f) - 0.5f, 0);
                        i0[a] = (int)floorf(s) < in[a] - 1 ? (int)floorf(s) : in[a] - 1;
                        i1[a] = i0[a] + (i0[a] < in[a] - 1);
                        l[a] = fminf(fmaxf(s - i0[a], 0), 1);
                    }
                    const float *xp = segc_f32(x) + p * 480;
                    acc = (1 - l[0]) * ((1 - l[1]) * xp[i0[0] * 20 + i0[1]] + l[1] * xp[i0[0] * 20 + i1[1]]) +
                          l[0] * ((1 - l[1]) * xp[i1[0] * 20 + i0[1]] + l[1] * xp[i1[0] * 20 + i1[1]]);
                    worst = fmax(worst, fabs(acc - segc_f32(y)[(p * OH + oh) * OW + ow]));
                }
        assert_true(worst < 1e-5);
    }
    segc_ctx_free(ctx);
}

/* outputs past the streaming-store threshold (16 MiB, rows not 32-byte
 * aligned) equal the per-channel results made with ordinary stores */
static void test_resize_streaming(void **state) {
    segc_ctx *ctx = segc_ctx_new(12);
    for (int d = 0; d < 2; d++) {
        segc_tensor *x = t_randn(ctx, 4, SHAPE(1, d ? 9 : 5, 64, 64), 1, false);
        if (d) x = segc_cast(ctx, x, SEGC_BF16);
        segc_tensor *y = segc_resize_bilinear(ctx, x, 1024, 1021, false);
        assert_non_null(y);
        assert_true(segc_nbytes(y) > ((size_t)16 << 20));
        size_t plane = (size_t)1024 * 1021 * segc_dtype_size(y->dtype);
        for (int c = 0; c < x->shape[1]; c++) {
            segc_tensor *yc = segc_resize_bilinear(ctx, segc_slice(ctx, x, 1, c, c + 1, 1), 1024, 1021, false);
            assert_memory_equal((const char *)y->data + c * plane, yc->data, plane);
        }
    }
    segc_ctx_free(ctx);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(11);
    segc_tensor *x = t_randn(ctx, 3, SHAPE(2, 3, 4), 1, false), *y = t_randn(ctx, 3, SHAPE(2, 5, 5), 1, false);
    EXPECT_ERR(ctx, segc_reshape(ctx, x, 2, SHAPE(5, 5)), "reshape: input [2, 3, 4] has 24 elements, target [5, 5] has 25");
    EXPECT_ERR(ctx, segc_reshape(ctx, x, 2, SHAPE(-1, 5)), "reshape: cannot infer");
    EXPECT_ERR(ctx, segc_reshape(ctx, x, 3, SHAPE(-1, -1, 4)), "reshape:");
    EXPECT_ERR(ctx, segc_flatten(ctx, x, 2, 1), "flatten:");
    EXPECT_ERR(ctx, segc_flatten(ctx, x, 0, 3), "flatten: dim 3 out of range");
    EXPECT_ERR(ctx, segc_permute(ctx, x, (const int[]){0, 0, 1}), "permute: perm [0, 0, 1] is not a permutation");
    EXPECT_ERR(ctx, segc_permute(ctx, x, (const int[]){0, 3, 1}), "permute:");
    EXPECT_ERR(ctx, segc_transpose(ctx, x, 0, -4), "transpose: dim -4 out of range");
    EXPECT_ERR(ctx, segc_concat(ctx, (segc_tensor *[]){x, y}, 2, 1), "concat: input 1 is f32 [2, 5, 5]");
    EXPECT_ERR(ctx, segc_concat(ctx, (segc_tensor *[]){x, segc_cast(ctx, x, SEGC_BF16)}, 2, 0), "concat: input 1 is bf16");
    EXPECT_ERR(ctx, segc_concat(ctx, (segc_tensor *[]){x}, 0, 0), "concat: expected at least one input");
    EXPECT_ERR(ctx, segc_concat(ctx, (segc_tensor *[]){x}, 1, 3), "concat: dim 3 out of range");
    segc_tensor *outs[3];
    segc_clear_error(ctx);
    assert_false(segc_split(ctx, x, SHAPE(1, 1), 2, 1, outs));
    assert_null(outs[0]);
    assert_non_null(strstr(segc_last_error(ctx), "split: sizes [1, 1]"));
    segc_clear_error(ctx);
    assert_false(segc_split(ctx, x, SHAPE(5, -1), 2, 1, outs));
    assert_non_null(strstr(segc_last_error(ctx), "split:"));
    EXPECT_ERR(ctx, segc_slice(ctx, x, 1, 4, 5, 1), "slice: start 4 end 5 step 1 invalid for dim 1 of size 3");
    EXPECT_ERR(ctx, segc_slice(ctx, x, 1, -4, 2, 1), "slice:");
    EXPECT_ERR(ctx, segc_slice(ctx, x, 1, 0, 2, 0), "slice:");
    EXPECT_ERR(ctx, segc_slice(ctx, x, 2, 0, -5, 1), "slice:");
    EXPECT_ERR(ctx, segc_slice(ctx, x, 3, 0, 1, 1), "slice: dim 3 out of range");
    EXPECT_ERR(ctx, segc_pad(ctx, x, (const int[]){4, 0}, 2, SEGC_PAD_REFLECT, 0), "pad: pads (4, 0) on dim 2 of size 4");
    EXPECT_ERR(ctx, segc_pad(ctx, x, (const int[]){0, 1, 3, 3}, 4, SEGC_PAD_REFLECT, 0), "reflect pads must be smaller");
    EXPECT_ERR(ctx, segc_pad(ctx, x, (const int[]){1, 2, 3}, 3, SEGC_PAD_CONSTANT, 0), "pad: expected an even number");
    EXPECT_ERR(ctx, segc_pad(ctx, x, (const int[]){0, 0, 0, 0, 0, 0, 1, 1}, 8, SEGC_PAD_CONSTANT, 0), "pad:");
    EXPECT_ERR(ctx, segc_pad(ctx, x, (const int[]){-3, -2}, 2, SEGC_PAD_CONSTANT, 0), "output size would be negative");
    EXPECT_ERR(ctx, segc_pad(ctx, x, (const int[]){1, 1}, 2, (segc_pad_mode)7, 0), "pad: unknown mode 7");
    segc_tensor *img = t_randn(ctx, 4, SHAPE(1, 2, 3, 4), 1, false);
    EXPECT_ERR(ctx, segc_resize_bilinear(ctx, img, 0, 4, false), "resize_bilinear: input [1, 2, 3, 4] to output 0x4");
    EXPECT_ERR(ctx, segc_resize_bilinear(ctx, x, 4, 4, false), "resize_bilinear: input must be 4-D");
    EXPECT_ERR(ctx, segc_resize_bilinear(ctx, segc_tensor_new(ctx, SEGC_U8, 4, SHAPE(1, 1, 2, 2)), 4, 4, false),
               "resize_bilinear: input must be f32 or bf16");
    EXPECT_ERR(ctx, segc_resize_nearest(ctx, img, 3, -1), "resize_nearest: input [1, 2, 3, 4] to output 3x-1");
    EXPECT_ERR(ctx, segc_resize_nearest_exact(ctx, segc_tensor_new(ctx, SEGC_F32, 4, SHAPE(1, 1, 0, 2)), 3, 3),
               "resize_nearest_exact:");
    /* NULL inputs propagate without overwriting the first error */
    segc_clear_error(ctx);
    segc_set_error(ctx, "first");
    assert_null(segc_permute(ctx, NULL, (const int[]){0}));
    assert_null(segc_resize_bilinear(ctx, NULL, 2, 2, false));
    assert_null(segc_concat(ctx, (segc_tensor *[]){x, NULL}, 2, 0));
    assert_string_equal(segc_last_error(ctx), "first");
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_permute),      cmocka_unit_test(test_fixtures_concat_split_slice),
        cmocka_unit_test(test_fixtures_pad),          cmocka_unit_test(test_fixtures_resize),
        cmocka_unit_test(test_permute_reference),     cmocka_unit_test(test_reshape_flatten_views),
        cmocka_unit_test(test_int_dtypes),            cmocka_unit_test(test_gradchecks),
        cmocka_unit_test(test_determinism),           cmocka_unit_test(test_bilinear_large_reference),
        cmocka_unit_test(test_resize_streaming),      cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("shape", tests, setup, teardown);
}
