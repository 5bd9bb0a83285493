/* Resource bounds that long or unusual runs hit: the oneDNN primitive cache
 * stays bounded over many input sizes (LRU) and keys on the thread count, the
 * backend's one-thread rule is enforced, and gradient-buffer recycling keeps
 * working past thousands of live gradient blocks. */
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/backend.h"
#include "segc/ops.h"
#include "segc/ops_conv.h"
#include "segc/ops_matmul.h"

#define CACHE_LIMIT 64   /* set in main before the backend starts */

static segc_tensor *rand_tensor(segc_ctx *ctx, int ndim, const int64_t *shape) {
    segc_tensor *t = segc_tensor_new(ctx, SEGC_F32, ndim, shape);
    segc_rng_fill_uniform(&ctx->rng, segc_f32(t), segc_numel(t), -1.0f, 1.0f);
    return t;
}

static double rss_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE) / (1 << 20);
}

/* what `segc predict` over a folder of differently sized images does to the cache: every size
 * makes new convolution, reorder and GEMM primitives */
static void test_cache_bounded_over_200_sizes(void **state) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_dnnl_cache_stats st0 = segc_dnnl_cache_info();
    assert_int_equal(st0.limit, CACHE_LIMIT);
    double rss_warm = 0;
    for (int i = 0; i < 200; i++) {
        segc_ctx_step_begin(ctx);
        const int64_t h = 8 + i % 20, w = 8 + i / 20;   /* 200 distinct sizes */
        segc_tensor *x = rand_tensor(ctx, 4, (const int64_t[]){1, 3, h, w});
        segc_tensor *k = rand_tensor(ctx, 4, (const int64_t[]){4, 3, 3, 3});
        segc_conv_params cp = segc_conv_params_default();
        cp.pad[0] = cp.pad[1] = 1;
        segc_tensor *y = segc_conv2d(ctx, x, k, NULL, &cp);
        assert_non_null(y);
        segc_tensor *flat = segc_tensor_wrap(ctx, SEGC_F32, 2, (const int64_t[]){4 * h, w}, y->data);
        segc_tensor *proj = rand_tensor(ctx, 2, (const int64_t[]){5, w});
        assert_non_null(segc_matmul(ctx, flat, proj, false, true));
        segc_dnnl_cache_stats st = segc_dnnl_cache_info();
        if (st.entries > st.limit) fail_msg("size %d: %zu cached primitives, limit %zu", i, st.entries, st.limit);
        if (i == 99) rss_warm = rss_mib();
    }
    segc_dnnl_cache_stats st = segc_dnnl_cache_info();
    assert_true(st.created - st0.created >= 200);
    assert_true(st.evicted > 0);
    double rss_end = rss_mib();
    print_message("200 sizes: %llu primitives created, %llu evicted, %zu cached; RSS %.1f -> %.1f MiB\n",
                  (unsigned long long)(st.created - st0.created), (unsigned long long)st.evicted, st.entries,
                  rss_warm, rss_end);
#ifndef __SANITIZE_ADDRESS__   /* ASan's quarantine keeps freed memory resident on purpose */
    /* the second hundred sizes create as many primitives as the first; with both caches bounded
     * they replace, not add (unbounded, this grew by tens of MiB) */
    if (rss_end - rss_warm > 16.0) fail_msg("RSS grew %.1f MiB over the last 100 sizes", rss_end - rss_warm);
#endif
    segc_ctx_free(ctx);
}

/* the same GEMM under another thread count is another primitive */
static void test_gemm_key_has_thread_count(void **state) {
    segc_ctx *ctx = segc_ctx_new(2);
    const int saved = omp_get_max_threads();
    uint64_t created[3];
    const int threads[3] = {1, 2, 2};
    for (int r = 0; r < 3; r++) {
        omp_set_num_threads(threads[r]);
        segc_ctx_step_begin(ctx);
        segc_tensor *a = rand_tensor(ctx, 2, (const int64_t[]){13, 17});
        segc_tensor *b = rand_tensor(ctx, 2, (const int64_t[]){17, 19});
        assert_non_null(segc_matmul(ctx, a, b, false, false));
        created[r] = segc_dnnl_cache_info().created;
    }
    omp_set_num_threads(saved);
    assert_int_equal(created[1], created[0] + 1);   /* 2 threads: a new primitive */
    assert_int_equal(created[2], created[1]);       /* 2 again: the cached one */
    segc_ctx_free(ctx);
}

/* ---- one thread at a time ---- */
typedef struct { bool ok; char err[512]; } thread_result;

static void *matmul_in_thread(void *arg) {
    thread_result *r = arg;
    segc_ctx *ctx = segc_ctx_new(3);
    segc_tensor *a = rand_tensor(ctx, 2, (const int64_t[]){4, 6});
    segc_tensor *b = rand_tensor(ctx, 2, (const int64_t[]){6, 3});
    r->ok = segc_matmul(ctx, a, b, false, false) != NULL;
    snprintf(r->err, sizeof r->err, "%s", segc_last_error(ctx));
    segc_ctx_free(ctx);
    return NULL;
}
static thread_result run_thread(void) {
    pthread_t th;
    thread_result r = {false, ""};
    assert_int_equal(pthread_create(&th, NULL, matmul_in_thread, &r), 0);
    pthread_join(th, NULL);
    return r;
}

static void test_one_thread_rule(void **state) {
    segc_ctx *ctx = segc_ctx_new(4);
    segc_tensor *a = rand_tensor(ctx, 2, (const int64_t[]){4, 6});
    segc_tensor *b = rand_tensor(ctx, 2, (const int64_t[]){6, 3});
    assert_non_null(segc_matmul(ctx, a, b, false, false));
    /* this thread's context is alive: another thread's op is refused, with the rule named */
    thread_result r = run_thread();
    assert_false(r.ok);
    assert_non_null(strstr(r.err, "another thread is using segc's oneDNN backend"));
    /* the refusal left this thread's backend working */
    assert_non_null(segc_matmul(ctx, a, b, false, false));
    segc_ctx_free(ctx);
    /* every context freed: the next thread takes over, and then this one can again */
    r = run_thread();
    if (!r.ok) fail_msg("after all contexts were freed, a new thread failed: %s", r.err);
    ctx = segc_ctx_new(5);
    a = rand_tensor(ctx, 2, (const int64_t[]){4, 6});
    b = rand_tensor(ctx, 2, (const int64_t[]){6, 3});
    assert_non_null(segc_matmul(ctx, a, b, false, false));
    segc_ctx_free(ctx);
}

/* ---- gradient-buffer recycling past 4096 blocks ----
 * x -> y_i = x (N copies) -> s = sum_i y_i -> z_i = s (N copies) -> loss = sum_i z_i.
 * Backward holds N gradients at once twice over (the z's, then the y's); the y's can only reuse
 * the z's buffers if all N were tracked. */
enum { FAN = 4500, K = 16 };   /* 16 floats: one 64-byte arena block per gradient */
typedef struct { segc_tensor **parts; int n; } fan_saved;

static void copy_backward(segc_ctx *ctx, segc_node *nd) {
    float *gx = segc_grad(ctx, nd->in[0]);
    for (int k = 0; k < K; k++) gx[k] += nd->out->grad[k];
}
static void sum_backward(segc_ctx *ctx, segc_node *nd) {
    const fan_saved *fs = nd->saved;
    for (int i = 0; i < fs->n; i++) {
        float *g = segc_grad(ctx, fs->parts[i]);
        for (int k = 0; k < K; k++) g[k] += nd->out->grad[k];
    }
}
static segc_tensor *fan_out_sum(segc_ctx *ctx, segc_tensor *x) {
    fan_saved *fs = segc_arena_alloc(&ctx->arena, sizeof *fs);
    fs->parts = segc_arena_alloc(&ctx->arena, FAN * sizeof *fs->parts);
    fs->n = FAN;
    segc_tensor *s = segc_tensor_zeros(ctx, SEGC_F32, 1, (const int64_t[]){K});
    for (int i = 0; i < FAN; i++) {
        segc_tensor *y = segc_tensor_like(ctx, x);
        memcpy(y->data, x->data, K * sizeof(float));
        segc_record(ctx, "copy", copy_backward, y, &x, 1, NULL);
        fs->parts[i] = y;
        for (int k = 0; k < K; k++) segc_f32(s)[k] += segc_f32(y)[k];
    }
    segc_record(ctx, "sum", sum_backward, s, fs->parts, 1, fs);
    return s;
}

static void test_grad_recycling_past_4096_blocks(void **state) {
    segc_ctx *ctx = segc_ctx_new(6);
    for (int rep = 0; rep < 2; rep++) {   /* the second step runs in the grown table */
        segc_ctx_step_begin(ctx);
        segc_tensor *x = segc_tensor_zeros(ctx, SEGC_F32, 1, (const int64_t[]){K});
        x->requires_grad = true;
        segc_tensor *loss = fan_out_sum(ctx, fan_out_sum(ctx, x));
        float seed[K];
        for (int k = 0; k < K; k++) seed[k] = 1.0f;
        const size_t before = ctx->arena.used_total;
        assert_true(segc_backward_from(ctx, loss, seed));
        const size_t grown = ctx->arena.used_total - before;
        /* the z's N blocks + s's, then the y's and x's reuse them (untracked blocks past a fixed
         * table would add FAN - 4096 more) */
        if (grown > (size_t)(FAN + 2) * 64)
            fail_msg("step %d: backward took %zu bytes of arena for %d live gradients of 64 bytes (at most %d expected)",
                     rep, grown, FAN, (FAN + 2) * 64);
        assert_true(ctx->n_grad_blocks >= FAN && ctx->n_grad_blocks <= FAN + 2);
        for (int k = 0; k < K; k++) assert_true(x->grad[k] == (float)FAN * (float)FAN);
    }
    segc_ctx_free(ctx);
}

int main(void) {
    setenv("SEGC_PRIMITIVE_CACHE", "64", 1);   /* read once, when the backend starts */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_bounded_over_200_sizes),
        cmocka_unit_test(test_gemm_key_has_thread_count),
        cmocka_unit_test(test_one_thread_rule),
        cmocka_unit_test(test_grad_recycling_past_4096_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
