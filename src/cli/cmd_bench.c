/* `segc bench CONFIG [key=value ...] [options]`: training and inference
 * throughput of the configured model, FLOPs per image and the fraction of
 * the machine's GEMM peak (src/train/bench.c); a table, then one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "segc/bench.h"
#include "segc/profile.h"

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: segc bench CONFIG.yaml [key=value ...] [options]\n"
            "  key=value          override a config key (data.batch_size, data.crop_size, train.dtype, ...)\n"
            "  --steps N          timed steps per measurement (default 10; medians are reported)\n"
            "  --warmup N         untimed training steps first (default 2)\n"
            "  --train-only       measure training only\n"
            "  --infer-only       measure inference only (batch 1 and the training batch, no grad)\n"
            "  --synthetic        random images and labels (default)\n"
            "  --real             batches from the configured dataset through the training pipeline\n"
            "  --profile [A:B]    write a Chrome/Perfetto trace (trace.json) and a per-op table for bench steps\n"
            "                     A..B (steps count from 1 in run order: training warm-up, timed training,\n"
            "                     then inference warm-up + timed steps); default: the timed training steps\n"
            "  --out DIR          directory for trace.json (default: the current directory)\n"
            "  --peak-n N         size of the peak-measuring GEMM (default 2048; 0: skip the peak)\n"
            "The last line is one JSON object.\n");
}

int segc_cli_profile_opt(int argc, char **argv, int *i, const char *cmd, bool *on, int64_t *first, int64_t *last) {
    const char *s = argv[*i];
    if (strcmp(s, "--profile") && strncmp(s, "--profile=", 10)) return 0;
    *on = true;
    /* the window is optional: a following argument that starts with a digit is taken as one */
    const char *w = s[9] == '=' ? s + 10 : *i + 1 < argc && argv[*i + 1][0] >= '0' && argv[*i + 1][0] <= '9' ? argv[++*i] : NULL;
    if (w && !segc_profiler_parse_window(w, first, last)) {
        fprintf(stderr, "segc %s: --profile expects A:B with 0 <= A <= B, found '%s'\n", cmd, w);
        return -1;
    }
    return 1;
}

static bool int_arg(int argc, char **argv, int *i, int lo, int *out) {
    if (*i + 1 >= argc) { fprintf(stderr, "segc bench: %s needs a number\n", argv[*i]); return false; }
    char *end;
    long v = strtol(argv[*i + 1], &end, 10);
    if (*end || end == argv[*i + 1] || v < lo || v > 1000000) {
        fprintf(stderr, "segc bench: %s expects an integer >= %d, found '%s'\n", argv[*i], lo, argv[*i + 1]);
        return false;
    }
    *out = (int)v;
    (*i)++;
    return true;
}

int segc_cmd_bench(int argc, char **argv) {
    const char *config = NULL, *out_dir = NULL;
    char **ov = calloc((size_t)argc + 1, sizeof *ov);
    int n_ov = 0, rc = 2, p;
    bool profile = false;
    segc_bench_opts o;
    segc_bench_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) { bench_usage(stdout); rc = 0; goto done; }
        else if (!strcmp(s, "--steps")) { if (!int_arg(argc, argv, &i, 1, &o.steps)) goto done; }
        else if (!strcmp(s, "--warmup")) { if (!int_arg(argc, argv, &i, 0, &o.warmup)) goto done; }
        else if (!strcmp(s, "--peak-n")) { if (!int_arg(argc, argv, &i, 0, &o.peak_n)) goto done; }
        else if (!strcmp(s, "--train-only")) o.infer = false;
        else if (!strcmp(s, "--infer-only")) o.train = false;
        else if (!strcmp(s, "--synthetic")) o.real = false;
        else if (!strcmp(s, "--real")) o.real = true;
        else if (!strcmp(s, "--out")) {
            if (i + 1 >= argc) { fprintf(stderr, "segc bench: --out needs a directory\n"); goto done; }
            out_dir = argv[++i];
        } else if ((p = segc_cli_profile_opt(argc, argv, &i, "bench", &profile, &o.profile_first, &o.profile_last))) {
            if (p < 0) goto done;
        } else if (s[0] == '-') { fprintf(stderr, "segc bench: unknown option %s\n", s); bench_usage(stderr); goto done; }
        else if (strchr(s, '=')) ov[n_ov++] = argv[i];
        else if (!config) config = s;
        else { fprintf(stderr, "segc bench: unexpected argument %s (one CONFIG file)\n", s); goto done; }
    }
    if (!o.train && !o.infer) { fprintf(stderr, "segc bench: --train-only and --infer-only exclude each other\n"); goto done; }
    if (!config) { bench_usage(stderr); goto done; }
    segc_config c;
    char err[1024], trace[4096];
    rc = 1;
    if (!segc_cli_config(&c, config, ov, n_ov, NULL, err, sizeof err)) { fprintf(stderr, "segc bench: %s\n", err); goto done; }
    if (profile) {
        if (out_dir) mkdir(out_dir, 0777);   /* an existing directory is fine; a failure shows when writing */
        snprintf(trace, sizeof trace, "%s/trace.json", out_dir ? out_dir : ".");
        o.trace_path = trace;
        o.profile_summary = stdout;
    }
    o.progress = stderr;
    segc_bench_result r;
    if (!segc_bench_run(&c, &o, &r, err, sizeof err)) { fprintf(stderr, "segc %s\n", err); goto done; }
    if (profile) printf("trace: %s (open in ui.perfetto.dev or chrome://tracing)\n", trace);
    segc_bench_print(&r, stdout, stdout);
    rc = 0;
done:
    free(ov);
    return rc;
}
