/* Engine-level properties of a whole training step (tiny SegFormer + AdamW):
 *  - after the first steps, a training step makes zero heap allocations;
 *  - same seed and thread count give bitwise-identical weights (dropout and drop-path on);
 *  - gradient accumulation over micro-batches equals the full batch;
 *  - NaN/Inf checks name the op that produced the first non-finite value. */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/optim.h"
#include "segc/segformer.h"

#if defined(__SANITIZE_ADDRESS__)
#define SEGC_COUNT_ALLOCS 0   /* ASan owns malloc; the allocation test runs in the normal build */
#else
#define SEGC_COUNT_ALLOCS 1
/* Interpose the allocator for the whole process (oneDNN, OpenMP, libc included). */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
#include <dlfcn.h>
static volatile int g_counting;
static volatile long g_allocs;
static volatile long g_lib_allocs;
static void *g_callers[16];
/* The caller's address tells segc's own code (linked into this executable) from the shared
 * libraries it uses: oneDNN's C++ runtime allocates a little bookkeeping inside every
 * dnnl_primitive_execute (its argument map), which no caller can avoid. */
extern char __executable_start, etext;
#define NOTE_ALLOC()                                                                                  \
    do {                                                                                              \
        void *ra_ = __builtin_return_address(0);                                                      \
        if ((char *)ra_ >= &__executable_start && (char *)ra_ < &etext) {                             \
            long k_ = __atomic_fetch_add(&g_allocs, 1, __ATOMIC_RELAXED);                             \
            if (k_ < 16) g_callers[k_] = ra_;                                                         \
        } else                                                                                        \
            __atomic_add_fetch(&g_lib_allocs, 1, __ATOMIC_RELAXED);                                   \
    } while (0)
void *malloc(size_t n) { if (g_counting) NOTE_ALLOC(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { if (g_counting) NOTE_ALLOC(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (g_counting) NOTE_ALLOC(); return __libc_realloc(p, n); }
void *aligned_alloc(size_t al, size_t n) { if (g_counting) NOTE_ALLOC(); return __libc_memalign(al, n); }
void *memalign(size_t al, size_t n) { if (g_counting) NOTE_ALLOC(); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n) {
    if (g_counting) NOTE_ALLOC();
    *out = __libc_memalign(al, n);
    return *out ? 0 : 12;
}
#endif

static segc_segformer *tiny(float drop_path, float dropout) {
    segc_segformer_config c;
    segc_segformer_preset(&c, "b0", 4);
    int hidden[4] = {8, 16, 16, 16}, heads[4] = {1, 2, 2, 2};
    for (int s = 0; s < 4; s++) { c.hidden[s] = hidden[s]; c.depths[s] = 1; c.heads[s] = heads[s]; }
    c.decoder_hidden = 16;
    c.drop_path_rate = drop_path;
    c.classifier_dropout = dropout;
    char err[256];
    segc_segformer *m = segc_segformer_new(&c, err, sizeof err);
    assert_non_null(m);
    segc_segformer_init(m, 42);
    return m;
}

typedef struct {
    segc_segformer *m;
    segc_optimizer *opt;
    segc_schedule sched;
    segc_ctx *ctx;
    float *images;
    uint8_t *labels;
    int batch;
} trainer;

static void trainer_init(trainer *t, segc_segformer *m, uint64_t seed, int batch) {
    t->m = m;
    t->batch = batch;
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 6e-4);
    oc.weight_decay = 0.01;
    char err[256];
    t->opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    assert_non_null(t->opt);
    t->sched = segc_schedule_segformer(2, 20);
    t->ctx = segc_ctx_new(seed);
    segc_set_num_threads(t->ctx, 2);
    int64_t npix = (int64_t)batch * 32 * 32;
    t->images = malloc((size_t)npix * 3 * sizeof(float));
    t->labels = malloc((size_t)npix);
    segc_rng r;
    segc_rng_init(&r, 99);
    segc_rng_fill_normal(&r, t->images, npix * 3, 0, 1);
    /* the same number of ignored pixels in every sample, so per-sample mean losses weigh equally */
    for (int64_t i = 0; i < npix; i++) {
        int64_t k = (i % (32 * 32)) / 37 + i / (32 * 32);
        t->labels[i] = (uint8_t)((i % (32 * 32)) / 37 % 5 == 4 ? 255 : k % 4);
    }
}

/* one training step on samples [first, first+n) of the trainer's batch; returns the loss */
static float train_step(trainer *t, int first, int n, bool do_step, int64_t iter, float loss_scale) {
    segc_ctx *ctx = t->ctx;
    segc_ctx_step_begin(ctx);
    segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, SHAPE(n, 3, 32, 32), t->images + (size_t)first * 3 * 32 * 32);
    segc_tensor *y = segc_tensor_wrap(ctx, SEGC_U8, 3, SHAPE(n, 32, 32), t->labels + (size_t)first * 32 * 32);
    segc_tensor *loss = segc_segformer_loss(ctx, segc_segformer_forward(ctx, t->m, x), y, 255);
    if (!loss) fail_msg("step: %s", segc_last_error(ctx));
    if (loss_scale != 1.0f) loss = segc_mul_scalar(ctx, loss, loss_scale);
    assert_true(segc_backward(ctx, loss));
    if (do_step) {
        segc_optimizer_step_scheduled(t->opt, &t->sched, iter);
        segc_params_zero_grad(&t->m->params);
    }
    return segc_f32(loss)[0];
}

static void trainer_free(trainer *t) {
    segc_optimizer_free(t->opt);
    segc_ctx_free(t->ctx);
    free(t->images);
    free(t->labels);
}

static void test_steady_state_step_allocates_nothing(void **state) {
#if SEGC_COUNT_ALLOCS
    segc_segformer *m = tiny(0.1f, 0.1f);
    trainer t;
    trainer_init(&t, m, 7, 2);
    for (int it = 0; it < 3; it++) train_step(&t, 0, 2, true, it, 1.0f);   /* warm-up: caches, arena growth */
    g_allocs = 0;
    g_lib_allocs = 0;
    g_counting = 1;
    for (int it = 3; it < 6; it++) train_step(&t, 0, 2, true, it, 1.0f);
    g_counting = 0;
    print_message("  heap allocations by segc in 3 steady-state training steps: %ld (arena high water %.1f MiB); "
                  "inside shared libraries (oneDNN execute bookkeeping, OpenMP): %ld\n", g_allocs,
                  (double)t.ctx->arena.high_water / (1 << 20), g_lib_allocs);
    for (long i = 0; i < g_allocs && i < 16; i++) {
        Dl_info di;
        if (dladdr(g_callers[i], &di) && di.dli_sname) print_message("    allocation from %s\n", di.dli_sname);
        else print_message("    allocation from %p (addr2line -e %s)\n", g_callers[i], "build/tests/test_engine");
    }
    assert_int_equal(g_allocs, 0);
    /* the detector itself: an allocation by segc code is seen */
    g_counting = 1;
    segc_tensor *probe = segc_tensor_heap(SEGC_F32, 1, SHAPE(4));
    g_counting = 0;
    assert_true(g_allocs > 0);
    segc_tensor_free(probe);
    trainer_free(&t);
    segc_segformer_free(m);
#else
    SKIP_ALLOWED("allocation counting needs the plain allocator (not under AddressSanitizer)");
#endif
}

static void run_steps(float *out_params, int64_t n_params, uint64_t seed) {
    segc_segformer *m = tiny(0.2f, 0.1f);
    assert_int_equal(m->params.total, n_params);
    trainer t;
    trainer_init(&t, m, seed, 2);
    for (int it = 0; it < 4; it++) train_step(&t, 0, 2, true, it, 1.0f);
    memcpy(out_params, m->params.data, (size_t)n_params * sizeof(float));
    trainer_free(&t);
    segc_segformer_free(m);
}

static void test_training_is_bitwise_deterministic(void **state) {
    segc_segformer *probe = tiny(0, 0);
    int64_t n = probe->params.total;
    segc_segformer_free(probe);
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4), *c = malloc((size_t)n * 4);
    run_steps(a, n, 1);
    run_steps(b, n, 1);
    run_steps(c, n, 2);   /* another seed: dropout/drop-path masks differ */
    assert_memory_equal(a, b, (size_t)n * 4);
    assert_true(memcmp(a, c, (size_t)n * 4) != 0);
    free(a); free(b); free(c);
}

/* Without batch norm's batch statistics (eval-mode BN) and without dropout, the mean loss of a
 * batch of 2 equals the average of two micro-batches of 1, so the accumulated gradients must match. */
static void test_gradient_accumulation_matches_full_batch(void **state) {
    segc_segformer *m = tiny(0, 0);
    trainer t;
    trainer_init(&t, m, 3, 2);
    t.ctx->training = false;   /* BN uses running statistics; the graph is still recorded */
    train_step(&t, 0, 2, false, 0, 1.0f);
    int64_t n = m->params.total;
    float *full = malloc((size_t)n * 4);
    memcpy(full, m->params.grad, (size_t)n * 4);
    segc_params_zero_grad(&m->params);
    train_step(&t, 0, 1, false, 0, 0.5f);
    train_step(&t, 1, 1, false, 0, 0.5f);
    bool ok = fx_close_norm("accumulated vs full-batch gradients", m->params.grad, full, n, 0, 1e-5);
    free(full);
    trainer_free(&t);
    segc_segformer_free(m);
    assert_true(ok);
}

static void test_check_finite_names_the_op(void **state) {
    segc_ctx *ctx = segc_ctx_new(1);
    ctx->check_finite = true;
    segc_tensor *x = t_randn(ctx, 2, SHAPE(2, 3), 1, true);
    segc_f32(x)[4] = INFINITY;
    segc_tensor *y = segc_sub(ctx, x, x);   /* inf - inf = NaN */
    (void)y;
    assert_non_null(strstr(segc_last_error(ctx), "non-finite"));
    assert_non_null(strstr(segc_last_error(ctx), "sub"));
    segc_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_state_step_allocates_nothing),
        cmocka_unit_test(test_training_is_bitwise_deterministic),
        cmocka_unit_test(test_gradient_accumulation_matches_full_batch),
        cmocka_unit_test(test_check_finite_names_the_op),
    };
    return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
