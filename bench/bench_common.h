/* The timing protocol every op benchmark uses: 2 warm-up runs, then runs until at least
 * 300 ms and 3 runs have passed (at most 1000), reporting the median in ms; and one run of
 * an op case, timed the same way in every group. */
#ifndef SEGC_BENCH_COMMON_H
#define SEGC_BENCH_COMMON_H
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "segc/core.h"

typedef double (*bench_run_fn)(void *user);   /* one timed run, in ms */

static inline double bench_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;   /* Linux: KiB */
}

/* The JSON row of the model benchmarks (bench_train, bench_unet2d, bench_segmenter,
 * bench_deeplab), the keys scripts/bench_train.sh joins with the PyTorch twins':
 * training: mean step time and img/s; inference (batch 1): mean and best ms. */
static inline void bench_print_model_row(const char *model, bool train, int h, int w, int batch, const char *dtype,
                                         int threads, double mean_s, double best_s) {
    if (train)
        printf("{\"model\": \"%s\", \"mode\": \"train\", \"shape\": \"%dx%d\", \"batch\": %d, \"dtype\": \"%s\", "
               "\"threads\": %d, \"segc_step_s\": %.4f, \"segc_img_s\": %.3f, \"segc_peak_rss_mib\": %.0f}\n",
               model, h, w, batch, dtype, threads, mean_s, batch / mean_s, bench_peak_rss_mib());
    else
        printf("{\"model\": \"%s\", \"mode\": \"infer\", \"shape\": \"%dx%d\", \"batch\": 1, \"dtype\": \"%s\", "
               "\"threads\": %d, \"segc_ms\": %.1f, \"segc_best_ms\": %.1f, \"segc_peak_rss_mib\": %.0f}\n",
               model, h, w, dtype, threads, 1e3 * mean_s, 1e3 * best_s, bench_peak_rss_mib());
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median_ms(bench_run_fn once, void *user) {
    static double t[1000];
    for (int i = 0; i < 2; i++) once(user);
    int runs = 0;
    double total = 0;
    while ((total < 300 || runs < 3) && runs < 1000) total += t[runs++] = once(user);
    qsort(t, (size_t)runs, sizeof *t, bench_cmp_double);
    return t[runs / 2];
}

/* One op case: build(ctx, user) runs the op's forward; reset lists the inputs whose
 * gradients live in the step arena (dropped before each run; parameters keep theirs).
 * bwd times the backward from gout (as training does, through segc_backward_from)
 * instead of the forward. */
typedef segc_tensor *(*bench_build_fn)(segc_ctx *ctx, void *user);
typedef struct {
    segc_ctx *ctx;
    bench_build_fn build;
    void *user;
    segc_tensor *reset[4];
    bool bwd;
    const float *gout;
} bench_op;

/* a fresh step, the forward, and for bwd the backward: only the measured pass is timed */
static inline double bench_op_once(void *u) {
    const bench_op *op = u;
    segc_ctx_step_begin(op->ctx);
    for (int i = 0; i < 4; i++)
        if (op->reset[i]) op->reset[i]->grad = NULL;
    double t0 = segc_now_s();
    segc_tensor *y = op->build(op->ctx, op->user);
    double t1 = segc_now_s();
    bool ok = y != NULL;
    if (ok && op->bwd) {
        t0 = segc_now_s();
        ok = segc_backward_from(op->ctx, y, op->gout);
        t1 = segc_now_s();
    }
    if (!ok) {
        fprintf(stderr, "bench: %s\n", segc_last_error(op->ctx));
        exit(1);
    }
    return (t1 - t0) * 1e3;
}
static inline double bench_op_ms(bench_op op) { return bench_median_ms(bench_op_once, &op); }
#endif
