/* core: arena, RNG, bf16 conversion, safetensors round trip, autograd plumbing. */
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/ops.h"
#include "segc/params.h"

static void test_arena_consolidates(void **state) {
    segc_arena a;
    segc_arena_init(&a, 1024);
    for (int i = 0; i < 100; i++) {
        unsigned char *p = segc_arena_alloc(&a, 1000);
        assert_true(((uintptr_t)p % SEGC_ALIGN) == 0);
        memset(p, i, 1000);
    }
    assert_true(a.n_chunks > 1);
    size_t hw = a.high_water;
    segc_arena_reset(&a);
    assert_int_equal(a.n_chunks, 1);
    for (int i = 0; i < 100; i++) segc_arena_alloc(&a, 1000);
    assert_int_equal(a.n_chunks, 1);   /* same workload fits: no new chunk */
    assert_int_equal(a.high_water, hw);
    segc_arena_free(&a);
}

/* a rewind drops what came after the mark (chunks grown since included), the high-water mark
 * keeps the peak, and the next step fits in one block of that size without growing */
static void test_arena_rewind(void **state) {
    segc_arena a;
    segc_arena_init(&a, 4096);
    void *kept = segc_arena_alloc(&a, 1000);
    segc_arena_mark m = segc_arena_get_mark(&a);
    for (int i = 0; i < 20; i++) memset(segc_arena_alloc(&a, 3000), i, 3000);   /* grows chunks */
    assert_true(a.n_chunks > 1);
    size_t peak = a.high_water;
    segc_arena_rewind(&a, m);
    assert_int_equal(a.n_chunks, 1);
    assert_int_equal(a.used_total, 1024);   /* 1000 rounded up to the 64-byte alignment */
    assert_int_equal(a.high_water, peak);
    assert_ptr_equal(segc_arena_alloc(&a, 10), (unsigned char *)kept + 1024);   /* bumps on from the mark */
    segc_arena_reset(&a);                   /* consolidates to the peak although one chunk is left */
    assert_int_equal(a.n_chunks, 1);
    segc_arena_alloc(&a, 1000);
    m = segc_arena_get_mark(&a);
    for (int i = 0; i < 20; i++) segc_arena_alloc(&a, 3000);
    assert_int_equal(a.n_chunks, 1);        /* the same step no longer grows */
    segc_arena_rewind(&a, m);
    assert_int_equal(a.used_total, 1024);
    segc_arena_free(&a);
}

static void test_rng_counter_based(void **state) {
    segc_rng r;
    segc_rng_init(&r, 42);
    float a[10], b[10];
    segc_rng_fill_uniform(&r, a, 10, 0, 1);
    segc_rng saved = r;
    segc_rng_fill_uniform(&r, b, 10, 0, 1);
    float c[10];
    r = saved;
    segc_rng_fill_uniform(&r, c, 10, 0, 1);
    assert_memory_equal(b, c, sizeof b);
    for (int i = 0; i < 10; i++) assert_true(a[i] >= 0 && a[i] < 1 && a[i] != b[i]);
    /* statistics of normal draws */
    int n = 20000;
    float *x = malloc(n * sizeof *x);
    segc_rng_fill_normal(&r, x, n, 0, 1);
    double m = 0, v = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m /= n;
    for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    v /= n;
    assert_true(fabs(m) < 0.03 && fabs(v - 1) < 0.05);
    free(x);
    /* Philox-4x32-10 known-answer vector (Random123 kat_vectors: ctr=0, key=0) */
    uint32_t o[4];
    segc_philox(0, 0, o);
    assert_int_equal(o[0], 0x6627e8d5u);
    assert_int_equal(o[1], 0xe169c58du);
    assert_int_equal(o[2], 0xbc57ac4cu);
    assert_int_equal(o[3], 0x9b00dbd8u);
}

static void test_bf16_rounding(void **state) {
    assert_int_equal(segc_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0 */
    assert_int_equal(segc_f32_to_bf16(1.00390625f), 0x3f80);
    assert_int_equal(segc_f32_to_bf16(1.01171875f), 0x3f82);
    assert_true(isnan(segc_bf16_to_f32(segc_f32_to_bf16(NAN))));
    assert_true(isinf(segc_bf16_to_f32(segc_f32_to_bf16(INFINITY))));
}

static void test_safetensors_roundtrip(void **state) {
    char path[] = "/tmp/segc_st_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    segc_st_writer *w = segc_st_writer_new();
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3f80, 0x4000, 0x4040};
    int64_t l[2] = {-1, 7};
    segc_st_writer_add(w, "a.weight", SEGC_F32, 2, SHAPE(2, 3), a);
    segc_st_writer_add(w, "b", SEGC_BF16, 1, SHAPE(3), b);
    segc_st_writer_add(w, "labels", SEGC_I64, 1, SHAPE(2), l);
    segc_st_writer_meta(w, "format", "pt");
    char err[256];
    assert_true(segc_st_writer_save(w, path, err, sizeof err));
    segc_st_writer_free(w);
    segc_st_file *f = segc_st_open(path, err, sizeof err);
    assert_non_null(f);
    assert_int_equal(segc_st_count(f), 3);
    const segc_st_entry *e = segc_st_get(f, "a.weight");
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[1], 3);
    assert_memory_equal(e->data, a, sizeof a);
    assert_memory_equal(segc_st_get(f, "b")->data, b, sizeof b);
    assert_memory_equal(segc_st_get(f, "labels")->data, l, sizeof l);
    assert_string_equal(segc_st_meta(f, "format"), "pt");
    segc_st_close(f);
    /* truncated file: clear error naming the file */
    FILE *fp = fopen(path, "r+b");
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fclose(fp);
    assert_int_equal(truncate(path, sz - 5), 0);
    f = segc_st_open(path, err, sizeof err);
    assert_null(f);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "data_offsets"));
    /* garbage header length */
    fp = fopen(path, "wb");
    fwrite("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 1, 10, fp);
    fclose(fp);
    f = segc_st_open(path, err, sizeof err);
    assert_null(f);
    assert_non_null(strstr(err, "header length"));
    unlink(path);
    assert_null(segc_st_open("/nonexistent/x.safetensors", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/x.safetensors"));
}

static segc_tensor *cast_roundtrip(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    return segc_cast(ctx, segc_cast(ctx, ins[0], SEGC_BF16), SEGC_F32);
}

static void test_cast_grad_and_errors(void **state) {
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = t_randn(ctx, 2, SHAPE(3, 5), 1, true);
    /* the bf16 round trip is piecewise constant: check the pass-through analytically */
    segc_tensor *y = cast_roundtrip(ctx, &x, 1, NULL);
    float g[15];
    for (int i = 0; i < 15; i++) g[i] = (float)i;
    assert_true(segc_backward_from(ctx, y, g));
    for (int i = 0; i < 15; i++) assert_float_equal(x->grad[i], (float)i, 0);
    segc_tensor *lab = segc_tensor_new(ctx, SEGC_I64, 1, SHAPE(4));
    assert_null(segc_cast(ctx, lab, SEGC_BF16));
    assert_non_null(strstr(segc_last_error(ctx), "cast: input must be f32 or bf16, found i64"));
    /* NULL propagation keeps the first error */
    assert_null(segc_cast(ctx, NULL, SEGC_F32));
    assert_non_null(strstr(segc_last_error(ctx), "i64"));
    segc_ctx_free(ctx);
}

static void test_params_flat(void **state) {
    segc_params p;
    segc_params_init(&p);
    segc_tensor *w = segc_params_add(&p, "conv.weight", 4, SHAPE(8, 3, 3, 3), true);
    segc_tensor *rm = segc_params_add(&p, "bn.running_mean", 1, SHAPE(8), false);
    segc_params_finalize(&p);
    assert_ptr_equal(segc_params_find(&p, "conv.weight"), w);
    assert_true(((uintptr_t)rm->data % 64) == 0);
    assert_true((float *)rm->data >= p.data && (float *)rm->data < p.data + p.total);
    assert_int_equal(segc_params_count(&p, true), 216);
    assert_false(rm->requires_grad);
    segc_params_free(&p);
}

/* SEGC_ARENA_POISON=1: every allocation arrives filled with NaN (0xFF bytes),
 * also memory handed out again after a reset; calloc still zeroes */
static void test_arena_poison(void **state) {
    setenv("SEGC_ARENA_POISON", "1", 1);
    segc_arena a;
    segc_arena_init(&a, 1 << 12);
    unsetenv("SEGC_ARENA_POISON");
    assert_true(a.poison);
    for (int round = 0; round < 2; round++) {
        float *x = segc_arena_alloc(&a, 100 * sizeof(float));
        for (int i = 0; i < 100; i++) assert_true(isnan(x[i]));
        for (int i = 0; i < 100; i++) x[i] = 1.0f;   /* leftovers a later step must not see */
        float *z = segc_arena_calloc(&a, 8 * sizeof(float));
        for (int i = 0; i < 8; i++) assert_true(z[i] == 0.0f);
        segc_arena_reset(&a);
    }
    segc_arena_free(&a);
    segc_arena b;
    segc_arena_init(&b, 0);
    assert_false(b.poison);   /* off unless asked for */
    segc_arena_free(&b);
}

/* An arena that cannot grow stops with a message saying how much it needed
 * (in a child process: it aborts by design, callers never see NULL). */
static void test_arena_oom_message(void **state) {
#if defined(__SANITIZE_ADDRESS__)
    SKIP_ALLOWED("AddressSanitizer aborts on the impossible allocation itself, before segc's message");
#else
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        segc_arena a;
        segc_arena_init(&a, 0);
        segc_arena_alloc(&a, (size_t)1 << 50);   /* 1 PiB: no machine has it */
        _exit(0);
    }
    close(fds[1]);
    char buf[1024] = "";
    size_t n = 0;
    for (ssize_t k; n < sizeof buf - 1 && (k = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0;) n += (size_t)k;
    buf[n] = 0;
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    print_message("  child said: %s", buf);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    if (!strstr(buf, "could not grow by 1125899906842624 bytes")) fail_msg("message lacks the size: %s", buf);
#endif
}

/* With a cap and a jmp_buf, growth past the cap jumps back instead of aborting: the arena is left
 * as it was (nothing half-added), says how much it needed, and serves what fits afterwards. Also
 * what a failed malloc does (the 1 PiB case), which runs where the sanitizer allows it. */
static void test_arena_cap_longjmp(void **state) {
    segc_arena a;
    segc_arena_init(&a, 4096);
    a.limit = 10000;
    jmp_buf jb;
    volatile int jumped = 0;
    void *p = segc_arena_alloc(&a, 3000);
    if (setjmp(jb) == 0) {
        a.oom_jmp = &jb;
        segc_arena_alloc(&a, 4000);   /* a new chunk, cut from 8192 to the 5904 left under the cap */
        segc_arena_alloc(&a, 5000);   /* 5056 more: only 1872 left in it, none under the cap */
        fail_msg("no jump");
    } else {
        jumped = 1;
    }
    a.oom_jmp = NULL;
    assert_int_equal(jumped, 1);
    assert_int_equal(a.failed_need, 5056);
    assert_int_equal(a.cap_total, 10000);
    assert_int_equal(a.n_chunks, 2);
    assert_non_null(segc_arena_alloc(&a, 1000));   /* 1024: fits in what is left of the chunk */
    assert_non_null(p);
    segc_arena_reset(&a);
    assert_true(a.n_chunks == 1 && a.cap_total == a.high_water);
#if !defined(__SANITIZE_ADDRESS__)
    a.limit = 0;
    jumped = 0;
    if (setjmp(jb) == 0) {
        a.oom_jmp = &jb;
        segc_arena_alloc(&a, (size_t)1 << 50);   /* malloc fails */
    } else {
        jumped = 1;
    }
    a.oom_jmp = NULL;
    assert_int_equal(jumped, 1);
#endif
    segc_arena_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_cap_longjmp),
        cmocka_unit_test(test_arena_consolidates), cmocka_unit_test(test_arena_rewind),   cmocka_unit_test(test_rng_counter_based),
        cmocka_unit_test(test_bf16_rounding),        cmocka_unit_test(test_safetensors_roundtrip),
        cmocka_unit_test(test_cast_grad_and_errors), cmocka_unit_test(test_params_flat),
        cmocka_unit_test(test_arena_poison),       cmocka_unit_test(test_arena_oom_message),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
