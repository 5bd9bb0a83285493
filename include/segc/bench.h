/* segc benchmark of a configured model (what `segc bench` runs): training
 * throughput (forward, loss, backward, optimizer step) and inference
 * throughput (no grad, batch 1 and the training batch) on synthetic batches
 * or real ones from the configured dataset, with FLOPs per image from the
 * FLOP counter (profile.h), achieved GFLOP/s and its fraction of the
 * machine's peak, which is measured by timing a large GEMM through the same
 * GEMM path the ops use (segc_gemm_run).
 *
 * Steps are numbered from 1 in the order they run, warm-up included:
 * training steps 1 .. warmup+steps, then batch-1 inference (1 warm-up +
 * steps), then training-batch inference (1 warm-up + steps, only when the
 * batch is > 1). A profiling window names these numbers. */
#ifndef SEGC_BENCH_H
#define SEGC_BENCH_H
#include <stdio.h>

#include "segc/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct segc_bench_opts {
    int warmup;                 /* untimed training steps (default 2: primitive caches, arena growth) */
    int steps;                  /* timed steps per measurement (default 10) */
    bool train, infer;          /* what to measure (default both) */
    bool real;                  /* batches from the configured dataset (default: synthetic) */
    int peak_n;                 /* M = N = K of the peak GEMM (default 2048; 0: do not measure the peak) */
    const char *trace_path;     /* profile into this trace file (NULL: no profiling) */
    int64_t profile_first, profile_last;   /* step window; first < 0: the timed training steps
                                            * (the timed batch-1 inference steps without training) */
    FILE *profile_summary;      /* per-op table at the end of a profiled run (NULL: none) */
    FILE *progress;             /* one line per phase (NULL: silent) */
} segc_bench_opts;

void segc_bench_opts_default(segc_bench_opts *o);

typedef struct segc_bench_result {
    char model[128];            /* "segformer b0" */
    char cpu[128];              /* /proc/cpuinfo model name */
    char dtype[8];
    bool synthetic;
    int batch, crop_h, crop_w, in_channels, num_classes, threads, steps;
    int64_t params;
    /* training (0 when not measured) */
    double train_step_ms;       /* median over the timed steps */
    double train_step_ms_min;
    double train_img_s;         /* batch / median step time */
    double data_wait_ms;        /* mean loader wait per step (real batches; not in the step time) */
    double train_flops_per_img; /* forward + backward FLOPs per image */
    double train_gflops;        /* achieved: FLOPs per step / median step time */
    /* inference */
    double infer_ms_b1, infer_img_s_b1;
    double infer_ms_batch, infer_img_s_batch;   /* at the training batch (== b1 when batch is 1) */
    double infer_flops_per_img;
    double infer_gflops;        /* batch-1 */
    /* machine */
    double peak_gflops_f32, peak_gflops_bf16;  /* 0 when not measured */
    double train_peak_frac, infer_peak_frac;   /* achieved / peak of the run's dtype (0: unknown) */
    double peak_rss_mib;
} segc_bench_result;

/* Builds the model the configuration describes (registry, model.h), runs the
 * measurements and fills r. false + one-line message. With o->trace_path the
 * profiler is started and stopped here (it must not be running already). */
bool segc_bench_run(const segc_config *c, const segc_bench_opts *o, segc_bench_result *r, char *err, size_t errlen);

/* GFLOP/s of the best of a few n x n x n GEMMs of dtype dt (f32 or bf16
 * operands, f32 output) through segc_gemm_run. 0 + message on failure. */
double segc_bench_peak_gflops(segc_dtype dt, int n, char *err, size_t errlen);

/* "model name" of the first processor in /proc/cpuinfo ("unknown" when absent). */
void segc_cpu_model_name(char *buf, size_t n);

/* Human-readable table (NULL: none) and one JSON object on one line (NULL: none). */
void segc_bench_print(const segc_bench_result *r, FILE *table, FILE *json);

#ifdef __cplusplus
}
#endif
#endif
