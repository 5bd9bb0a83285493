/* The timing protocol every op benchmark uses: 2 warm-up runs, then runs until at least
 * 300 ms and 3 runs have passed (at most 1000), reporting the median in ms; and one run of
 * an op case, timed the same way in every group. */
#ifndef SEGC_BENCH_COMMON_H
#define SEGC_BENCH_COMMON_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "segc/bench.h"
#include "segc/core.h"
#include "segc/profile.h"

typedef double (*bench_run_fn)(void *user);   /* one timed run, in ms */

static inline double bench_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;   /* Linux: KiB */
}

/* The work a model row carries besides its times: GFLOP per step as the ops execute it
 * (convolution and GEMM work, src/core/profile.h: recomputed attention scores included) and
 * the machine's GEMM peak for the row's dtype, measured with the kernels the ops use. With
 * them a row says how close to the hardware both sides run, and what a target ratio would
 * need (scripts/bench_train.sh adds the reference's fraction on segc's FLOP count). */
typedef struct {
    int64_t flops0;
    double gflop_step, peak_gflop_s;
    double rss_mib;   /* peak RSS read before the peak GEMM's buffers existed */
} bench_work;
static bench_work bench_row_work;
/* call when the timed steps begin */
static inline void bench_work_begin(void) { bench_row_work.flops0 = segc_flops_read(); }
/* after the `steps` timed steps: FLOPs per step, and the GEMM peak (2048^3) of dtype dt */
static inline void bench_work_end(segc_dtype dt, int steps) {
    bench_row_work.rss_mib = bench_peak_rss_mib();
    if (steps > 0) bench_row_work.gflop_step = (double)(segc_flops_read() - bench_row_work.flops0) / steps / 1e9;
    char err[256];
    double peak = segc_bench_peak_gflops(dt, 2048, err, sizeof err);
    if (peak > 0) bench_row_work.peak_gflop_s = peak;
    else fprintf(stderr, "bench: %s\n", err);
}

/* bf16 activation gradients where `segc train` uses them (train.bf16_grads, default on, on CPUs
 * with native bf16 GEMMs); SEGC_BF16_GRADS=0 times the f32-gradient mode instead */
static inline bool bench_bf16_grads(void) {
    const char *e = getenv("SEGC_BF16_GRADS");
    return !(e && !strcmp(e, "0")) && segc_gemm_native_bf16();
}

/* The JSON row of the model benchmarks (bench_train, bench_unet2d, bench_segmenter,
 * bench_deeplab, bench_ssd), the keys scripts/bench_train.sh joins with the PyTorch twins':
 * training: mean (and best) step time and img/s; inference (batch 1): mean and best ms; with
 * bench_work_end: GFLOP per step, achieved GFLOP/s and the fraction of the GEMM peak. */
static inline void bench_print_model_row(const char *model, bool train, int h, int w, int batch, const char *dtype,
                                         int threads, double mean_s, double best_s) {
    const bench_work *wk = &bench_row_work;
    double rss = wk->rss_mib > 0 ? wk->rss_mib : bench_peak_rss_mib();
    if (train)
        printf("{\"model\": \"%s\", \"mode\": \"train\", \"shape\": \"%dx%d\", \"batch\": %d, \"dtype\": \"%s\", "
               "\"threads\": %d, \"segc_step_s\": %.4f, \"segc_best_step_s\": %.4f, \"segc_img_s\": %.3f, "
               "\"segc_peak_rss_mib\": %.0f",
               model, h, w, batch, dtype, threads, mean_s, best_s, batch / mean_s, rss);
    else
        printf("{\"model\": \"%s\", \"mode\": \"infer\", \"shape\": \"%dx%d\", \"batch\": 1, \"dtype\": \"%s\", "
               "\"threads\": %d, \"segc_ms\": %.1f, \"segc_best_ms\": %.1f, \"segc_peak_rss_mib\": %.0f",
               model, h, w, dtype, threads, 1e3 * mean_s, 1e3 * best_s, rss);
    if (wk->gflop_step > 0 && wk->peak_gflop_s > 0 && mean_s > 0)
        printf(", \"gflop_step\": %.2f, \"segc_gflop_s\": %.1f, \"peak_gflop_s\": %.1f, \"segc_peak_frac\": %.3f",
               wk->gflop_step, wk->gflop_step / mean_s, wk->peak_gflop_s, wk->gflop_step / mean_s / wk->peak_gflop_s);
    printf("}\n");
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

/* n f32 values rounded to bf16 in a new malloc'd buffer (an op case's bf16 upstream gradient) */
static inline uint16_t *bench_bf16_copy(const float *g, int64_t n) {
    uint16_t *h = malloc((size_t)(n > 0 ? n : 1) * sizeof *h);
    if (h) segc_f32_to_bf16_n(g, h, n);
    return h;
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
    /* the same values in bf16: the upstream gradient when ctx->bf16_grads is on and the op's
     * backward reads bf16 gradients, as a bf16 training graph hands it one (else gout) */
    const uint16_t *gout_bf16;
} bench_op;

/* a fresh step, the forward, and for bwd the backward: only the measured pass is timed */
static inline double bench_op_once(void *u) {
    const bench_op *op = u;
    segc_ctx_step_begin(op->ctx);
    for (int i = 0; i < 4; i++)
        if (op->reset[i]) op->reset[i]->grad = NULL, op->reset[i]->grad_bf16 = NULL;
    double t0 = segc_now_s();
    segc_tensor *y = op->build(op->ctx, op->user);
    double t1 = segc_now_s();
    bool ok = y != NULL;
    if (ok && op->bwd) {
        t0 = segc_now_s();
        bool g16 = op->gout_bf16 && op->ctx->bf16_grads && y->producer && y->producer->reads_bf16_grad;
        ok = g16 ? segc_backward_from_bf16(op->ctx, y, op->gout_bf16) : segc_backward_from(op->ctx, y, op->gout);
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
