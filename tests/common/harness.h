/* Test helpers: PyTorch fixture loading/comparison and finite-difference
 * gradient checks. Used by every tests/test_*.c (cmocka). */
#ifndef SEGC_TEST_HARNESS_H
#define SEGC_TEST_HARNESS_H
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "segc/core.h"
#include "segc/safetensors.h"

/* Open a fixture under tests/fixtures/data; fails the test if missing. */
segc_st_file *fx_open(const char *file);
/* "case/key" as a tensor copied into the ctx arena; NULL if absent. */
segc_tensor *fx_tensor(segc_ctx *ctx, const segc_st_file *f, const char *cas, const char *key);
/* number of inputs in0..inK-1 present for the case */
int fx_n_inputs(const segc_st_file *f, const char *cas);
/* integer / double / string parameter from the case's JSON metadata */
long fx_param_int(const segc_st_file *f, const char *cas, const char *key, long dflt);
double fx_param_double(const segc_st_file *f, const char *cas, const char *key, double dflt);
/* writes into buf; returns dflt if absent */
const char *fx_param_str(const segc_st_file *f, const char *cas, const char *key, const char *dflt, char *buf, size_t n);
/* list of ints (e.g. kernel sizes); returns count */
int fx_param_ints(const segc_st_file *f, const char *cas, const char *key, long *out, int max);

/* Max error of got (any float dtype) against the expected tensor, where each
 * element's error is |a-b| / max(|b|, 1e-3 * max|b|, 1e-12): relative, with a
 * floor so values near zero are judged against the tensor's scale. Prints the
 * worst element and returns true when within tol. */
bool fx_close(const char *what, const segc_tensor *got, const segc_tensor *want, double tol);
bool fx_close_f32(const char *what, const float *got, const segc_tensor *want, double tol);
/* Norm-wise relative error ||got - want||_2 / max(||want||_2, floor): the measure for whole-model
 * parity, where f32 summation order makes element-wise relative error meaningless for the many
 * near-zero entries (and for gradients that are zero in exact arithmetic, such as a key bias
 * under softmax, floor sets the scale they are judged against). */
bool fx_close_norm(const char *what, const float *got, const float *want, int64_t n, double floor, double tol);
double fx_norm(const float *x, int64_t n);

/* The standard op parity case: load inputs (those with a grad entry get
 * requires_grad), run fn, compare out, backward with gout, compare grads. */
typedef segc_tensor *(*fx_op_fn)(segc_ctx *ctx, segc_tensor **ins, int n, const segc_st_file *f, const char *cas);
bool fx_check_case(const segc_st_file *f, const char *cas, fx_op_fn fn, double tol_out, double tol_grad);
/* Run every case in the file whose name starts with prefix; returns number run (asserts each). */
int fx_check_all(const segc_st_file *f, const char *prefix, fx_op_fn fn, double tol_f32, double tol_bf16);

/* Finite-difference gradient check. fn builds an output from ins (all f32).
 * Compares analytic d(sum(out*R))/d(in) with central differences on up to
 * max_elems sampled elements per input (double accumulation).
 * |num - ana| <= atol + rtol*|num| for every checked element. */
typedef segc_tensor *(*gc_fn)(segc_ctx *ctx, segc_tensor **ins, int n, void *user);
typedef struct { double eps, atol, rtol; int max_elems; uint64_t seed; } gc_opts;
gc_opts gc_default(void);
bool gradcheck(segc_ctx *ctx, const char *name, gc_fn fn, segc_tensor **ins, int n, void *user, gc_opts o);

/* random f32 tensor in the ctx arena (normal(0, scale)), requires_grad set as asked */
segc_tensor *t_randn(segc_ctx *ctx, int ndim, const int64_t *shape, float scale, bool requires_grad);
segc_tensor *t_uniform(segc_ctx *ctx, int ndim, const int64_t *shape, float lo, float hi, bool requires_grad);

/* ---- expected errors ----
 * One checker for every "this must fail, and say why" case: fails the test
 * unless ok is false and msg contains each needle (a NULL-terminated list).
 * Prints the message so a log shows what users would read. */
void expect_msg_at(const char *file, int line, bool ok, const char *msg, ...);
#define EXPECT_FAIL(ok, msg, ...) expect_msg_at(__FILE__, __LINE__, (ok), (msg), __VA_ARGS__, (const char *)NULL)
/* An op or constructor that must return NULL with ctx's error naming each
 * needle. The error is cleared before the call (a stale error from an earlier
 * line must not satisfy the check) and after it (the next op starts clean). */
#define EXPECT_ERR(ctx, call, ...)                                                                         \
    do {                                                                                                   \
        segc_clear_error(ctx);                                                                             \
        bool expect_ok_ = (call) != NULL;                                                                  \
        expect_msg_at(__FILE__, __LINE__, expect_ok_, segc_last_error(ctx), __VA_ARGS__, (const char *)NULL); \
        segc_clear_error(ctx);                                                                             \
    } while (0)

/* ---- shared data ----
 * Tests that need ../shared/data (or $SEGC_DATA) never skip when it is
 * missing: CI always has it, so a skip there would hide a broken path. */
const char *harness_data_root(void);
/* root/sub into buf; fails the test, naming the path, when it does not exist. */
const char *need_data(char *buf, size_t n, const char *sub);
/* The only sanctioned skip (scripts/run_tests.sh fails on any other): prints
 * "allowed skip: REASON" first. For what the machine cannot run (an ISA the
 * CPU lacks, a check that cannot work under a sanitizer), never for data. */
#define SKIP_ALLOWED(...)                   \
    do {                                    \
        printf("  allowed skip: ");         \
        printf(__VA_ARGS__);                \
        printf("\n");                       \
        fflush(stdout);                     \
        skip();                             \
    } while (0)
/* a fixture case loop that ran no case tests nothing: fail instead */
#define EXPECT_CASES(n, what) do { if ((n) == 0) fail_msg("no '%s' cases in the fixture", (what)); } while (0)

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#endif
