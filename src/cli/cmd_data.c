/* `segc data check|stats NAME --root DIR [--split S] ...`: validate a dataset
 * in its native layout, or compute per-channel mean/std. Human-readable
 * report, then one JSON line. Exit 0 when clean, 1 with problems, 2 on usage. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "segc/data.h"

typedef struct data_args {
    const char *verb, *name, *root, *split;
    segc_dataset_opts opts;
    int threads;
    int max_problems;
} data_args;

static void data_usage(FILE *f) {
    fprintf(f,
            "usage: segc data check|stats NAME --root DIR [options]\n"
            "  NAME: camvid | ade20k | cityscapes | voc | folder | coco | brats | msd\n"
            "  --split S              split name (dataset default: train / training / train2017)\n"
            "  --classes FILE         folder: class names, one per line (\"name\" or \"name r g b\")\n"
            "  --value-map MAP        folder: raw label remapping, e.g. 255:1,0:0\n"
            "  --reduce-zero-label    label 0 -> 255 ignore, k -> k-1 (ADE20K's default)\n"
            "  --no-reduce-zero-label keep label 0 as a class\n"
            "  --gray                 decode images as 1 channel (default: 3, as mmseg)\n"
            "  --slice-axis N         brats/msd: slice along axis 0, 1 or 2 (default 2)\n"
            "  --brain-slices         brats/msd: only slices that contain brain\n"
            "  --threads N            worker threads (default: OpenMP's)\n"
            "  --max-problems N       problems listed in full (default 50)\n"
            "check: counts, unreadable/truncated files, missing labels, size mismatches, label values\n"
            "       outside the class set, per-class pixel histogram. Exit 0 when clean, 1 otherwise.\n"
            "stats: per-channel mean/std of the images (0..255 scale for photos).\n");
}

static int parse_args(int argc, char **argv, data_args *a) {
    memset(a, 0, sizeof *a);
    segc_dataset_opts_default(&a->opts);
    a->max_problems = 50;
    if (argc < 2) return 2;
    a->verb = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        static const char *const with_value[] = {"--root",    "--split",   "--classes",      "--value-map",
                                                 "--slice-axis", "--threads", "--max-problems"};
        const char *v = NULL;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
            if (!strcmp(s, with_value[k])) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "segc data: %s needs a value\n", s);
                    return 2;
                }
                v = argv[++i];
            }
        if (!strcmp(s, "--root")) a->root = v;
        else if (!strcmp(s, "--split")) a->split = v;
        else if (!strcmp(s, "--classes")) a->opts.class_file = v;
        else if (!strcmp(s, "--value-map")) a->opts.value_map = v;
        else if (!strcmp(s, "--slice-axis")) a->opts.slice_axis = atoi(v);
        else if (!strcmp(s, "--threads")) a->threads = atoi(v);
        else if (!strcmp(s, "--max-problems")) a->max_problems = atoi(v);
        else if (!strcmp(s, "--reduce-zero-label")) a->opts.use_default_reduce = false, a->opts.reduce_zero_label = true;
        else if (!strcmp(s, "--no-reduce-zero-label")) a->opts.use_default_reduce = false, a->opts.reduce_zero_label = false;
        else if (!strcmp(s, "--gray")) a->opts.image_channels = 1;
        else if (!strcmp(s, "--brain-slices")) a->opts.brain_slices_only = true;
        else if (!strcmp(s, "-h") || !strcmp(s, "--help")) return 3;
        else if (s[0] == '-') {
            fprintf(stderr, "segc data: unknown option %s\n", s);
            return 2;
        } else if (!a->name) a->name = s;
        else {
            fprintf(stderr, "segc data: unexpected argument %s\n", s);
            return 2;
        }
    }
    if (!a->name || !a->root) {
        fprintf(stderr, "segc data %s: NAME and --root DIR are required\n", a->verb);
        return 2;
    }
    return 0;
}

/* JSON string (quotes, backslashes and control characters escaped) */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

typedef struct sample_result {
    bool ok;
    char msg[480];
} sample_result;

static int report_open_failure(const data_args *a, const char *err) {
    printf("segc data %s %s: cannot open dataset\n  %s\n", a->verb, a->name, err);
    printf("{\"verb\":");
    json_str(stdout, a->verb);
    printf(",\"dataset\":");
    json_str(stdout, a->name);
    printf(",\"ok\":false,\"problems\":[");
    json_str(stdout, err);
    printf("]}\n");
    return 1;
}

/* problems: print the first max in full, then count */
static int64_t list_problems(const data_args *a, const sample_result *res, int64_t n) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (!res[i].ok) {
            if (bad < a->max_problems) printf("  problem: %s\n", res[i].msg);
            bad++;
        }
    if (bad > a->max_problems) printf("  ... and %lld more problems\n", (long long)(bad - a->max_problems));
    return bad;
}

static void json_problems(const data_args *a, const sample_result *res, int64_t n) {
    printf(",\"problem_list\":[");
    int64_t shown = 0;
    for (int64_t i = 0; i < n && shown < a->max_problems; i++)
        if (!res[i].ok) {
            if (shown++) putchar(',');
            json_str(stdout, res[i].msg);
        }
    putchar(']');
}

static int run_check(const data_args *a, segc_dataset *ds) {
    int64_t n = segc_dataset_len(ds);
    int K = segc_dataset_num_classes(ds);
    bool det = segc_dataset_is_detection(ds);
    sample_result *res = calloc((size_t)n, sizeof *res);
    int nthr = omp_get_max_threads();
    int64_t *hist_t = calloc((size_t)nthr * 256, sizeof *hist_t);
    if (!res || !hist_t) {
        fprintf(stderr, "segc data check: out of memory\n");
        free(res), free(hist_t);
        return 1;
    }
    double t0 = omp_get_wtime();
#pragma omp parallel
    {
        int64_t *hist = hist_t + 256 * omp_get_thread_num();
        segc_sample_check chk;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n; i++) {
            sample_result *r = &res[i];
            r->ok = segc_dataset_check_sample(ds, i, &chk, r->msg, sizeof r->msg);
            if (!r->ok) continue;
            for (int k = 0; k < 256; k++) hist[k] += chk.hist[k];
            if (chk.n_invalid) {
                r->ok = false;
                snprintf(r->msg, sizeof r->msg, "%s: %lld label pixels outside the class set (first raw value %lld)",
                         segc_dataset_label_path(ds, i) ? segc_dataset_label_path(ds, i) : segc_dataset_image_path(ds, i),
                         (long long)chk.n_invalid, (long long)chk.first_invalid);
            }
        }
    }
    double secs = omp_get_wtime() - t0;
    int64_t hist[256] = {0};   /* integer sums: the same whatever the thread split */
    for (int t = 0; t < nthr; t++)
        for (int k = 0; k < 256; k++) hist[k] += hist_t[256 * t + k];
    printf("segc data check %s: root %s, split %s\n", a->name, a->root, a->split ? a->split : "(default)");
    printf("samples: %lld, classes: %d, checked in %.2f s\n", (long long)n, K, secs);
    int64_t bad = list_problems(a, res, n);
    int64_t labelled = 0;
    for (int k = 0; k < 255; k++) labelled += hist[k];
    printf("per-class %s:\n", det ? "box counts" : "pixel counts");
    for (int k = 0; k < K; k++)
        printf("  %3d %-24s %12lld  %6.2f%%\n", k, segc_dataset_class_name(ds, k), (long long)hist[k],
               labelled ? 100.0 * hist[k] / labelled : 0.0);
    if (!det) printf("  255 %-24s %12lld\n", "(ignore)", (long long)hist[255]);
    int64_t stray = labelled;
    for (int k = 0; k < K && k < 255; k++) stray -= hist[k];
    printf("%s: %lld of %lld samples have problems\n", bad ? "PROBLEMS" : "OK", (long long)bad, (long long)n);
    printf("{\"verb\":\"check\",\"dataset\":");
    json_str(stdout, a->name);
    printf(",\"split\":");
    if (a->split) json_str(stdout, a->split);
    else printf("null");
    printf(",\"samples\":%lld,\"classes\":%d,\"bad_samples\":%lld,\"ok\":%s,\"%s\":[", (long long)n, K,
           (long long)bad, bad ? "false" : "true", det ? "boxes" : "pixels");
    for (int k = 0; k < K; k++) printf("%s%lld", k ? "," : "", (long long)hist[k]);
    printf("],\"ignore\":%lld,\"out_of_range\":%lld", (long long)hist[255], (long long)stray);
    json_problems(a, res, n);
    printf("}\n");
    free(res);
    free(hist_t);
    return bad ? 1 : 0;
}

typedef struct stat_acc {
    double sum[16], sumsq[16];
    int64_t count;
    int c;
} stat_acc;

static int run_stats(const data_args *a, segc_dataset *ds) {
    int64_t n = segc_dataset_len(ds);
    sample_result *res = calloc((size_t)n, sizeof *res);
    stat_acc *acc = calloc((size_t)n, sizeof *acc);
    if (!res || !acc) {
        fprintf(stderr, "segc data stats: out of memory\n");
        free(res), free(acc);
        return 1;
    }
    double t0 = omp_get_wtime();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) {
        segc_sample s;
        res[i].ok = segc_dataset_load(ds, i, &s, res[i].msg, sizeof res[i].msg);
        if (!res[i].ok) continue;
        int c = s.img.c < 16 ? s.img.c : 16;
        size_t npx = (size_t)s.img.h * s.img.w;
        stat_acc *st = &acc[i];
        st->c = c, st->count = (int64_t)npx;
        for (int ch = 0; ch < c; ch++) {
            double sm = 0, sq = 0;
            for (size_t p = 0; p < npx; p++) {
                double v = s.img.dtype == SEGC_U8 ? ((const uint8_t *)s.img.data)[p * s.img.c + ch]
                           : s.img.dtype == SEGC_F32 ? ((const float *)s.img.data)[p * s.img.c + ch]
                                                     : ((const int32_t *)s.img.data)[p * s.img.c + ch];
                sm += v, sq += v * v;
            }
            st->sum[ch] = sm, st->sumsq[ch] = sq;
        }
        segc_sample_free(&s);
    }
    double secs = omp_get_wtime() - t0;
    /* combine in sample order: deterministic */
    double sum[16] = {0}, sumsq[16] = {0};
    int64_t count = 0;
    int C = 0;
    bool mixed = false;
    for (int64_t i = 0; i < n; i++) {
        if (!res[i].ok) continue;
        if (C && acc[i].c != C) mixed = true;
        if (!C) C = acc[i].c;
        if (acc[i].c != C) continue;
        for (int ch = 0; ch < C; ch++) sum[ch] += acc[i].sum[ch], sumsq[ch] += acc[i].sumsq[ch];
        count += acc[i].count;
    }
    printf("segc data stats %s: root %s, split %s\n", a->name, a->root, a->split ? a->split : "(default)");
    printf("samples: %lld, pixels: %lld, channels: %d, in %.2f s\n", (long long)n, (long long)count, C, secs);
    int64_t bad = list_problems(a, res, n);
    if (mixed) printf("  note: samples with a channel count other than %d were left out\n", C);
    double mean[16], stdv[16];
    for (int ch = 0; ch < C; ch++) {
        mean[ch] = count ? sum[ch] / count : 0;
        stdv[ch] = count ? sqrt(fmax(sumsq[ch] / count - mean[ch] * mean[ch], 0)) : 0;
        printf("  channel %d: mean %.3f  std %.3f\n", ch, mean[ch], stdv[ch]);
    }
    printf("{\"verb\":\"stats\",\"dataset\":");
    json_str(stdout, a->name);
    printf(",\"split\":");
    if (a->split) json_str(stdout, a->split);
    else printf("null");
    printf(",\"samples\":%lld,\"bad_samples\":%lld,\"pixels\":%lld,\"mean\":[", (long long)n, (long long)bad,
           (long long)count);
    for (int ch = 0; ch < C; ch++) printf("%s%.4f", ch ? "," : "", mean[ch]);
    printf("],\"std\":[");
    for (int ch = 0; ch < C; ch++) printf("%s%.4f", ch ? "," : "", stdv[ch]);
    putchar(']');
    json_problems(a, res, n);
    printf("}\n");
    free(res);
    free(acc);
    return bad ? 1 : 0;
}

int segc_cmd_data(int argc, char **argv) {
    data_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == 3 || (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
        data_usage(stdout);
        return 0;
    }
    if (rc) {
        data_usage(stderr);
        return 2;
    }
    if (strcmp(a.verb, "check") && strcmp(a.verb, "stats")) {
        fprintf(stderr, "segc data: unknown verb '%s'\n", a.verb);
        data_usage(stderr);
        return 2;
    }
    if (a.threads > 0) omp_set_num_threads(a.threads);
    char err[512] = "";
    segc_dataset *ds = segc_dataset_open(a.name, a.root, a.split, &a.opts, err, sizeof err);
    if (!ds) return report_open_failure(&a, err);
    rc = !strcmp(a.verb, "check") ? run_check(&a, ds) : run_stats(&a, ds);
    segc_dataset_close(ds);
    fflush(stdout);
    return rc;
}
