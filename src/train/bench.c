/* Benchmark of a configured model (see segc/bench.h). The model is reached
 * only through the registry (model.h) so every family is measured the same
 * way; timings are medians, so one preempted step on a shared machine does
 * not move the result. */
#include "segc/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "segc/loader.h"
#include "segc/model.h"
#include "segc/ops.h"
#include "segc/ops_matmul.h"
#include "segc/profile.h"
#include "segc/trainer.h"

void segc_bench_opts_default(segc_bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->warmup = 2;
    o->steps = 10;
    o->train = o->infer = true;
    o->peak_n = 2048;
    o->profile_first = o->profile_last = -1;
}

void segc_cpu_model_name(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        for (v++; *v == ' ' || *v == '\t'; v++) {}
        snprintf(buf, n, "%s", v);
        buf[strcspn(buf, "\n")] = 0;
        break;
    }
    fclose(f);
}

double segc_bench_peak_gflops(segc_dtype dt, int n, char *err, size_t errlen) {
    if (n < 16 || (dt != SEGC_F32 && dt != SEGC_BF16)) {
        segc_errorf(err, errlen, "bench: peak GEMM needs n >= 16 and f32 or bf16");
        return 0;
    }
    segc_ctx *ctx = segc_ctx_new(7);
    if (!ctx) { segc_errorf(err, errlen, "bench: out of memory"); return 0; }
    int64_t nn = (int64_t)n * n;
    segc_tensor *a = segc_tensor_new(ctx, dt, 2, (int64_t[]){n, n}), *b = segc_tensor_new(ctx, dt, 2, (int64_t[]){n, n});
    float *c = segc_arena_alloc(&ctx->arena, (size_t)nn * sizeof(float));
    float *tmp = malloc((size_t)nn * sizeof(float));
    if (!a || !b || !c || !tmp) {
        free(tmp);
        segc_ctx_free(ctx);
        segc_errorf(err, errlen, "bench: out of memory for the %dx%d peak GEMM", n, n);
        return 0;
    }
    segc_rng_fill_uniform(&ctx->rng, tmp, nn, -1, 1);
    segc_store_f32(a, tmp);
    segc_store_f32(b, tmp);
    free(tmp);
    /* C = A B^T: the weight-like layout linear uses */
    segc_gemm g = {.batch = 1, .M = n, .N = n, .K = n, .a = a->data, .a_dtype = dt, .a_rs = n, .a_cs = 1,
                   .b = b->data, .b_dtype = dt, .b_rs = 1, .b_cs = n, .c = c, .c_dtype = SEGC_F32, .c_rs = n,
                   .alpha = 1.0f};
    double best = INFINITY, spent = 0;
    /* the first run builds and caches the primitive; then the best of >= 3 runs and >= 0.3 s */
    for (int rep = 0; rep < 50 && (rep < 4 || spent < 0.3); rep++) {
        double t0 = segc_now_s();
        if (!segc_gemm_run(ctx, "bench_peak", &g)) {
            segc_errorf(err, errlen, "bench: %s", segc_last_error(ctx));
            segc_ctx_free(ctx);
            return 0;
        }
        double t = segc_now_s() - t0;
        if (rep > 0) { spent += t; if (t < best) best = t; }
    }
    segc_ctx_free(ctx);
    return 2.0 * (double)n * n * n / best / 1e9;
}

/* ---- the measured steps ---- */

typedef struct bench_run {
    const segc_config *c;
    const segc_bench_opts *o;
    segc_model *m;
    segc_optimizer *opt;
    segc_ctx *ctx;
    segc_dtype dt;
    int B, C, H, W, K;
    float *img;                  /* synthetic batch [B, C, H, W] */
    uint8_t *lab;                /* synthetic labels [B, H, W] */
    segc_loader *loader;         /* real batches */
    segc_dataset *ds;            /* what the loader reads */
    int64_t step;                /* bench step number (profiling window) */
    double wait_s;
    bool detection;              /* boxes as targets; inference includes the detect hook */
    segc_targets syn_boxes;      /* detection: synthetic boxes of the synthetic batch */
    void *syn_state;
    void *det_source;
    segc_detections dets;
} bench_run;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* the next batch's images and labels (pointers into bench_run or the loader) */
static bool next_batch(bench_run *r, const float **img, const uint8_t **lab, int *n, const segc_batch **batch,
                       char *err, size_t errlen) {
    *batch = NULL;
    if (!r->loader) {
        *img = r->img;
        *lab = r->lab;
        *n = r->B;
        return true;
    }
    char e2[512];
    segc_prof_span sp = segc_prof_begin("loader_next", SEGC_PROF_DATA);
    double t0 = segc_now_s();
    const segc_batch *b = segc_loader_next(r->loader, e2, sizeof e2);
    r->wait_s += segc_now_s() - t0;
    segc_prof_end(&sp, 0);
    if (!b) return segc_errorf(err, errlen, "bench: %s", e2);
    if (b->c != r->C || b->h != r->H || b->w != r->W || (!r->detection && (b->label_h != r->H || b->label_w != r->W)))
        return segc_errorf(err, errlen, "bench: the data pipeline gives %dx%dx%d batches with %dx%d labels, expected "
                           "%dx%dx%d (data.crop_size)", b->c, b->h, b->w, b->label_h, b->label_w, r->C, r->H, r->W);
    *img = b->images;
    *lab = b->labels;
    *n = b->n;
    *batch = b;
    return true;
}

static segc_tensor *input(bench_run *r, const float *img, int n) {
    segc_tensor *x = segc_tensor_wrap(r->ctx, SEGC_F32, 4, (int64_t[]){n, r->C, r->H, r->W}, (void *)img);
    return r->dt == SEGC_BF16 ? segc_cast(r->ctx, x, SEGC_BF16) : x;
}

/* one training step; *t_s: its compute time (the loader wait excluded) */
static bool train_step(bench_run *r, double *t_s, char *err, size_t errlen) {
    const float *img = NULL;
    const uint8_t *lab = NULL;
    const segc_batch *batch = NULL;
    int n = 0;
    segc_profiler_iter(++r->step);
    if (!next_batch(r, &img, &lab, &n, &batch, err, errlen)) return false;
    segc_ctx *ctx = r->ctx;
    double t0 = segc_now_s();
    segc_ctx_step_begin(ctx);
    segc_clear_error(ctx);
    ctx->training = true;
    ctx->free_activations = true;   /* as in training: nothing reads an activation after backward */
    segc_set_grad_enabled(ctx, true);
    segc_model_out out = {0};
    segc_targets t = r->detection ? (batch ? segc_detection_targets(batch) : r->syn_boxes) : (segc_targets){
        .labels = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){n, r->H, r->W}, (void *)lab), .ignore_index = 255};
    segc_tensor *loss = NULL;
    if (segc_model_forward(ctx, r->m, input(r, img, n), &out)) loss = segc_model_loss(ctx, r->m, &out, &t);
    segc_params_zero_grad(&r->m->params);
    if (!loss || !segc_backward(ctx, loss)) return segc_errorf(err, errlen, "bench: training step: %s", segc_last_error(ctx));
    segc_prof_span sp = segc_prof_begin("optimizer_step", SEGC_PROF_OPTIMIZER);
    segc_optimizer_step(r->opt, r->c->optimizer.lr);
    segc_prof_end(&sp, 0);
    *t_s = segc_now_s() - t0;
    return true;
}

static bool infer_step(bench_run *r, int n, double *t_s, char *err, size_t errlen) {
    segc_profiler_iter(++r->step);
    segc_ctx *ctx = r->ctx;
    double t0 = segc_now_s();
    segc_ctx_step_begin(ctx);
    segc_clear_error(ctx);
    ctx->training = false;
    segc_set_grad_enabled(ctx, false);
    segc_model_out out = {0};
    if (!segc_model_forward(ctx, r->m, input(r, r->img, n), &out) ||
        (r->detection && !segc_model_detect(ctx, r->m, &out, r->H, r->W, NULL, NULL, NULL, &r->dets)))
        return segc_errorf(err, errlen, "bench: inference (batch %d): %s", n, segc_last_error(ctx));
    *t_s = segc_now_s() - t0;
    return true;
}

/* warm-up + timed steps of one kind; median / min seconds and FLOPs per timed step */
static bool measure(bench_run *r, bool train, int n, int warmup, double *med, double *mn, double *flops, char *err,
                    size_t errlen) {
    int steps = r->o->steps;
    double *t = malloc((size_t)steps * sizeof *t), dummy;
    if (!t) return segc_errorf(err, errlen, "bench: out of memory");
    bool ok = true;
    for (int i = 0; i < warmup && ok; i++)
        ok = train ? train_step(r, &dummy, err, errlen) : infer_step(r, n, &dummy, err, errlen);
    int64_t f0 = segc_flops_read();
    for (int i = 0; i < steps && ok; i++)
        ok = train ? train_step(r, &t[i], err, errlen) : infer_step(r, n, &t[i], err, errlen);
    segc_profiler_pause();   /* the "step" slice ends with the last step, not at the next phase */
    if (ok) {
        *flops = (double)(segc_flops_read() - f0) / steps;
        double lo = t[0];
        for (int i = 1; i < steps; i++) lo = t[i] < lo ? t[i] : lo;
        *mn = lo;
        *med = median(t, steps);
    }
    free(t);
    return ok;
}

static bool setup(bench_run *r, segc_bench_result *res, char *err, size_t errlen) {
    const segc_config *c = r->c;
    char e2[512];
    r->dt = segc_config_dtype(c);
    r->B = c->data.batch_size;
    r->H = c->data.crop_size[0];
    r->W = c->data.crop_size[1];
    if (r->B < 1 || r->H < 1 || r->W < 1) return segc_errorf(err, errlen, "bench: batch and crop must be positive");
    /* classes and channels: the configuration's, else the dataset's (when it opens), else 150
     * classes (ADE20K's) and 3 channels for a synthetic run without the dataset */
    segc_dataset *ds = NULL;
    if (r->o->real || c->model.num_classes <= 0 || c->model.in_channels <= 0) {
        ds = segc_config_open_dataset(c, NULL, e2, sizeof e2);
        if (!ds && r->o->real) return segc_errorf(err, errlen, "bench: %s", e2);
    }
    r->m = ds ? segc_config_model_for(c, ds, e2, sizeof e2)
              : segc_config_model(c, c->model.num_classes > 0 ? c->model.num_classes : 150, e2, sizeof e2);
    if (!r->m) {
        if (ds) segc_dataset_close(ds);
        return segc_errorf(err, errlen, "bench: %s", e2);
    }
    r->K = r->m->num_classes;
    if (r->K < 1 || r->K > 255) {
        if (ds) segc_dataset_close(ds);
        return segc_errorf(err, errlen, "bench: %d classes do not fit the U8 labels", r->K);
    }
    if (r->m->loss && segc_loss_cfg_needs_auto(r->m->loss)) {   /* class_weight: auto is segc train's; the values */
        double w[SEGC_LOSS_MAX_CLASSES];                         /* do not change a step's cost: ones here */
        for (int k = 0; k < r->K; k++) w[k] = 1.0;
        segc_loss_cfg_fill_auto(r->m->loss, w, r->K);
    }
    segc_model_init(r->m, (uint64_t)c->train.seed);
    r->C = r->m->in_channels;
    r->detection = r->m->family->task == SEGC_TASK_DETECTION;
    if (r->detection && !segc_detection_synthetic_targets(r->B, r->H, r->W, r->K, &r->syn_boxes, &r->syn_state)) {
        if (ds) segc_dataset_close(ds);
        return segc_errorf(err, errlen, "bench: out of memory");
    }
    segc_custom_key keys[SEGC_CFG_MAX_CUSTOM_KEYS];
    segc_optim_cfg oc = segc_config_optim(c, keys);
    r->opt = segc_optimizer_new(&r->m->params, &oc, e2, sizeof e2);
    if (!r->opt) { if (ds) segc_dataset_close(ds); return segc_errorf(err, errlen, "bench: optimizer: %s", e2); }
    r->ctx = segc_ctx_new((uint64_t)c->train.seed);
    if (c->train.threads > 0) segc_set_num_threads(r->ctx, c->train.threads);
    if (r->ctx) r->ctx->bf16_grads = segc_config_bf16_grads(c);   /* as `segc train` */
    segc_config_apply_conv_algo(c);
    /* inference always runs on the synthetic batch; training too unless --real */
    int64_t npix = (int64_t)r->B * r->H * r->W;
    r->img = malloc((size_t)(npix * r->C) * sizeof(float));
    r->lab = malloc((size_t)npix);
    if (!r->ctx || !r->img || !r->lab) { if (ds) segc_dataset_close(ds); return segc_errorf(err, errlen, "bench: out of memory"); }
    segc_rng rng;
    segc_rng_init(&rng, (uint64_t)c->train.seed + 1);
    segc_rng_fill_normal(&rng, r->img, npix * r->C, 0, 1);   /* what Normalize produces */
    for (int64_t i = 0; i < npix; i++) r->lab[i] = (uint8_t)(segc_rng_u32(&rng) % (uint32_t)r->K);
    if (r->o->real && r->o->train) {
        segc_pipeline pipe;
        segc_config_train_pipeline(c, &pipe);
        segc_loader_opts lo;
        segc_loader_opts_default(&lo);
        lo.batch_size = r->B;
        lo.num_workers = c->data.num_workers;
        lo.seed = (uint64_t)c->train.seed;
        lo.channels = r->C;
        lo.quiet = true;
        segc_sample_source src = segc_dataset_source(ds);
        int64_t skipped;
        if (r->detection && !segc_detection_train_source(ds, &src, &r->det_source, &skipped, e2, sizeof e2)) {
            segc_dataset_close(ds);
            return segc_errorf(err, errlen, "bench: %s", e2);
        }
        r->loader = segc_loader_new(src, &pipe, &lo, e2, sizeof e2);
        if (!r->loader) { segc_dataset_close(ds); return segc_errorf(err, errlen, "bench: %s", e2); }
    }
    /* the loader keeps reading the dataset: it is freed with the run (bench_free) */
    res->synthetic = !r->loader;
    if (ds && !r->loader) segc_dataset_close(ds);
    else r->ds = ds;
    return true;
}

static void bench_free(bench_run *r) {
    segc_loader_free(r->loader);
    segc_detection_train_source_free(r->det_source);
    segc_detection_synthetic_targets_free(r->syn_state);
    segc_detections_free(&r->dets);
    if (r->ds) segc_dataset_close(r->ds);
    segc_optimizer_free(r->opt);
    if (r->ctx) segc_ctx_free(r->ctx);
    if (r->m) segc_model_free(r->m);
    free(r->img);
    free(r->lab);
}

static void note(const segc_bench_opts *o, const char *what, double ms, double img_s) {
    if (o->progress) fprintf(o->progress, "bench: %-28s %9.2f ms/step %9.2f img/s\n", what, ms, img_s);
}

static bool run_all(bench_run *r, segc_bench_result *res, char *err, size_t errlen) {
    const segc_bench_opts *o = r->o;
    double med, mn, flops;
    if (o->train) {
        if (!measure(r, true, r->B, o->warmup, &med, &mn, &flops, err, errlen)) return false;
        res->train_step_ms = 1e3 * med;
        res->train_step_ms_min = 1e3 * mn;
        res->train_img_s = r->B / med;
        res->data_wait_ms = 1e3 * r->wait_s / (o->warmup + o->steps);
        res->train_flops_per_img = flops / r->B;
        res->train_gflops = flops / med / 1e9;
        note(o, "train", res->train_step_ms, res->train_img_s);
    }
    if (o->infer) {
        if (!measure(r, false, 1, 1, &med, &mn, &flops, err, errlen)) return false;
        res->infer_ms_b1 = 1e3 * med;
        res->infer_img_s_b1 = 1 / med;
        res->infer_flops_per_img = flops;
        res->infer_gflops = flops / med / 1e9;
        note(o, "infer batch 1", res->infer_ms_b1, res->infer_img_s_b1);
        if (r->B > 1) {
            if (!measure(r, false, r->B, 1, &med, &mn, &flops, err, errlen)) return false;
            note(o, "infer batch", 1e3 * med, r->B / med);
        }
        res->infer_ms_batch = 1e3 * med;
        res->infer_img_s_batch = r->B / med;
    }
    return true;
}

bool segc_bench_run(const segc_config *c, const segc_bench_opts *o, segc_bench_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    if (o->steps < 1 || o->warmup < 0) return segc_errorf(err, errlen, "bench: steps must be >= 1 and warm-up >= 0");
    if (!o->train && !o->infer) return segc_errorf(err, errlen, "bench: nothing to measure (training and inference both off)");
    if (o->trace_path && segc_profiler_active()) return segc_errorf(err, errlen, "bench: the profiler is already running");
    bench_run r = {.c = c, .o = o};
    bool ok = setup(&r, res, err, errlen);
    if (ok) {
        snprintf(res->model, sizeof res->model, "%s%s%s", r.m->family->type, r.m->variant[0] ? " " : "", r.m->variant);
        snprintf(res->dtype, sizeof res->dtype, "%s", segc_dtype_name(r.dt));
        res->batch = r.B;
        res->crop_h = r.H;
        res->crop_w = r.W;
        res->in_channels = r.C;
        res->num_classes = r.K;
        res->threads = segc_get_num_threads();
        res->steps = o->steps;
        res->params = segc_params_count(&r.m->params, true);
        if (o->trace_path) {
            segc_profiler_start(o->trace_path);
            int64_t first = o->profile_first, last = o->profile_last;
            if (first < 0) {   /* the timed steps of the first measurement */
                first = (o->train ? o->warmup : 1) + 1;
                last = first + o->steps - 1;
            }
            segc_profiler_set_window(first, last);
        }
        ok = run_all(&r, res, err, errlen);
        if (o->trace_path) {
            char e2[512];
            /* the trace is written even after a failed step: it shows where the time went until then */
            if (!segc_profiler_stop_and_write(o->profile_summary, e2, sizeof e2) && ok)
                ok = segc_errorf(err, errlen, "bench: %s", e2);
        }
    }
    bench_free(&r);
    if (!ok) return false;
    segc_cpu_model_name(res->cpu, sizeof res->cpu);
    if (o->peak_n > 0) {
        char e2[256];
        res->peak_gflops_f32 = segc_bench_peak_gflops(SEGC_F32, o->peak_n, e2, sizeof e2);
        res->peak_gflops_bf16 = segc_bench_peak_gflops(SEGC_BF16, o->peak_n, e2, sizeof e2);
        double peak = strcmp(res->dtype, "bf16") ? res->peak_gflops_f32 : res->peak_gflops_bf16;
        if (peak > 0) {
            res->train_peak_frac = res->train_gflops / peak;
            res->infer_peak_frac = res->infer_gflops / peak;
        }
    }
    res->peak_rss_mib = segc_peak_rss_mb();
    return true;
}

/* "28.1%", or "-" when the peak was not measured */
static void peak_pct(char *buf, size_t n, const segc_bench_result *r, double frac) {
    if (r->peak_gflops_f32 > 0) snprintf(buf, n, "%.1f%%", 100 * frac);
    else snprintf(buf, n, "-");
}

void segc_bench_print(const segc_bench_result *r, FILE *t, FILE *j) {
    if (t) {
        fprintf(t, "model      %s, %lld parameters, %d classes, %d input channels\n", r->model, (long long)r->params,
                r->num_classes, r->in_channels);
        fprintf(t, "setup      %s, batch %d, crop %dx%d, %s batches, %d threads, %d timed steps (median)\n", r->dtype,
                r->batch, r->crop_h, r->crop_w, r->synthetic ? "synthetic" : "real", r->threads, r->steps);
        fprintf(t, "cpu        %s\n", r->cpu);
        fprintf(t, "%-22s %12s %10s %14s %10s %9s\n", "", "ms/step", "img/s", "GFLOP/img", "GFLOP/s", "of peak");
        char frac[16];
        if (r->train_step_ms > 0) {
            peak_pct(frac, sizeof frac, r, r->train_peak_frac);
            fprintf(t, "%-22s %12.2f %10.2f %14.3f %10.2f %9s\n", "train (fwd+bwd+opt)", r->train_step_ms, r->train_img_s,
                    r->train_flops_per_img / 1e9, r->train_gflops, frac);
        }
        if (r->infer_ms_b1 > 0) {
            peak_pct(frac, sizeof frac, r, r->infer_peak_frac);
            fprintf(t, "%-22s %12.2f %10.2f %14.3f %10.2f %9s\n", "infer batch 1", r->infer_ms_b1, r->infer_img_s_b1,
                    r->infer_flops_per_img / 1e9, r->infer_gflops, frac);
            if (r->batch > 1)
                fprintf(t, "%-22s %12.2f %10.2f\n", "infer batch", r->infer_ms_batch, r->infer_img_s_batch);
        }
        if (!r->synthetic) fprintf(t, "data wait  %.2f ms per training step (not in the step time)\n", r->data_wait_ms);
        if (r->peak_gflops_f32 > 0)
            fprintf(t, "peak GEMM  %.1f GFLOP/s f32, %.1f GFLOP/s bf16 (segc_gemm_run)\n", r->peak_gflops_f32,
                    r->peak_gflops_bf16);
        fprintf(t, "peak RSS   %.0f MiB\n", r->peak_rss_mib);
    }
    if (j) {
        fprintf(j, "{\"model\":\"%s\",\"dtype\":\"%s\",\"batch\":%d,\"crop\":[%d,%d],\"synthetic\":%s,\"threads\":%d,"
                   "\"steps\":%d,\"params\":%lld,\"train_img_s\":%.4g,\"train_step_ms\":%.4g,\"infer_img_s_b1\":%.4g,"
                   "\"infer_ms_b1\":%.4g,\"infer_img_s_batch\":%.4g,\"infer_ms_batch\":%.4g,\"train_gflop_per_img\":%.6g,"
                   "\"infer_gflop_per_img\":%.6g,\"train_gflop_s\":%.4g,\"infer_gflop_s\":%.4g,\"peak_gflop_s_f32\":%.4g,"
                   "\"peak_gflop_s_bf16\":%.4g,\"train_peak_frac\":%.4g,\"infer_peak_frac\":%.4g,\"data_wait_ms\":%.4g,"
                   "\"peak_rss_mib\":%.1f,\"cpu\":\"",
                r->model, r->dtype, r->batch, r->crop_h, r->crop_w, r->synthetic ? "true" : "false", r->threads,
                r->steps, (long long)r->params, r->train_img_s, r->train_step_ms, r->infer_img_s_b1, r->infer_ms_b1,
                r->infer_img_s_batch, r->infer_ms_batch, r->train_flops_per_img / 1e9, r->infer_flops_per_img / 1e9,
                r->train_gflops, r->infer_gflops, r->peak_gflops_f32, r->peak_gflops_bf16, r->train_peak_frac,
                r->infer_peak_frac, r->data_wait_ms, r->peak_rss_mib);
        for (const char *p = r->cpu; *p; p++)   /* the one free-text field: escaped */
            if (*p == '"' || *p == '\\') fprintf(j, "\\%c", *p);
            else if ((unsigned char)*p >= 0x20) fputc(*p, j);
        fprintf(j, "\"}\n");
    }
}
