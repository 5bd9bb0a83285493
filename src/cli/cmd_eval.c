/* `segc eval CONFIG --checkpoint FILE [key=value ...]`: evaluate weights on a
 * split (data.split, else data.val_split) with the configuration's test
 * settings; prints mmseg's per-class table and, as the last line, one JSON
 * object with mIoU, mAcc, aAcc and the per-class values. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "segc/dist.h"
#include "segc/profile.h"
#include "segc/trainer.h"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: segc eval [CONFIG.yaml] --checkpoint FILE [key=value ...] [--quiet]\n"
            "       segc eval CONFIG.yaml --results FILE [key=value ...]   (detection: score a COCO results file)\n"
            "  CONFIG           training config (default: the one stored in the checkpoint)\n"
            "  --checkpoint F   weights (safetensors, HF names), e.g. RUN/checkpoints/best.safetensors\n"
            "  key=value        overrides, e.g. data.split=test test.mode=slide test.crop_size=[512,512]\n"
            "                   test.stride=[341,341] test.flip=true test.scales=[0.5,1.0,1.5]\n"
            "  --profile [A:B]  trace of the evaluation (images A..B, default all) in ./trace.json + per-op table\n"
            "  --trace FILE     where --profile writes the trace\n"
            "  --report DIR     put this evaluation into DIR/report.html as the final evaluation (default: the run\n"
            "                   directory when the checkpoint is RUN/checkpoints/FILE and RUN/report.html exists)\n"
            "  --no-report      leave the run's report alone\n"
            "  --quiet          no progress output\n"
            "  --results FILE   COCO results ([{image_id, category_id, bbox, score}]) scored against the split's\n"
            "                   annotations, no model (data.skip_bad=true skips bad entries)\n"
            "output: per-class table, then one JSON line {\"mIoU\",\"mAcc\",\"aAcc\",\"IoU\",\"Acc\"}; detection:\n"
            "        pycocotools' summary table, per-category AP, then {\"bbox_mAP\",\"bbox_mAP_50\",...,\"bbox_AP\"}\n");
}

/* The run directory a checkpoint belongs to: RUN for RUN/checkpoints/FILE when
 * RUN/report.html exists (a training run), else false. */
static bool run_dir_of(const char *ckpt, char *dir, size_t n) {
    const char *slash = strrchr(ckpt, '/');
    const char *tail = "/checkpoints";
    size_t tl = strlen(tail);
    if (!slash || (size_t)(slash - ckpt) < tl || strncmp(slash - tl, tail, tl) != 0) return false;
    int len = (int)(slash - tl - ckpt);
    snprintf(dir, n, "%.*s", len > 0 ? len : 1, len > 0 ? ckpt : "/");
    char rp[4200];
    snprintf(rp, sizeof rp, "%s/report.html", dir);
    return access(rp, F_OK) == 0;
}

/* Configuration from CONFIG or, without one, from the checkpoint's metadata. */
bool segc_cli_config_for(segc_config *c, const char *config, const char *checkpoint, char **ov, int n_ov, char *err,
                         size_t errlen) {
    if (config) return segc_cli_config(c, config, ov, n_ov, NULL, err, errlen);
    char *yaml = segc_checkpoint_config(checkpoint, err, errlen);
    if (!yaml) return false;
    segc_config_defaults(c);
    bool ok = segc_config_load_string(c, yaml, checkpoint, err, errlen);
    free(yaml);
    for (int i = 0; ok && i < n_ov; i++) ok = segc_config_override(c, ov[i], err, errlen);
    return ok && segc_config_finish(c, err, errlen);
}

/* --results FILE: scores an existing COCO results file against the config's split (no model) */
static int eval_results(const char *config, const char *results, char **ov, int n_ov, bool quiet) {
    segc_config c;
    char err[1024];
    segc_dataset *ds = NULL;
    segc_evaluator *ev = NULL;
    int rc = 1;
    if (!config) {
        fprintf(stderr, "segc eval: --results needs the CONFIG that names the dataset and split\n");
        return 2;
    }
    if (!segc_cli_config(&c, config, ov, n_ov, NULL, err, sizeof err)) goto fail;
    const char *split = *c.data.split ? c.data.split : c.data.val_split;
    if (!(ds = segc_config_open_dataset(&c, split, err, sizeof err))) goto fail;
    segc_eval_spec spec = {.task = SEGC_TASK_DETECTION, .num_classes = segc_dataset_num_classes(ds), .dataset = ds};
    snprintf(spec.primary, sizeof spec.primary, "%.31s", c.train.best_metric);
    if (!(ev = segc_evaluator_new(&spec, err, sizeof err))) goto fail;
    int64_t n_read = 0, n_skipped = 0;
    if (!segc_evaluator_add_results_file(ev, results, c.data.skip_bad, &n_read, &n_skipped, err, sizeof err)) goto fail;
    if (!quiet)
        fprintf(stderr, "scoring %s on %s/%s: %lld detections, %lld images\n", results, c.data.dataset, split,
                (long long)n_read, (long long)segc_dataset_len(ds));
    segc_eval_result r;
    if (!segc_evaluator_result(ev, &r, err, sizeof err)) goto fail;
    segc_eval_result_print(stdout, &r, NULL);
    char *js = segc_eval_result_json(&r, NULL);
    printf("%s\n", js ? js : "{}");
    free(js);
    segc_eval_result_free(&r);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "segc eval: %s\n", err);
out:
    segc_evaluator_free(ev);
    segc_dataset_close(ds);
    return rc;
}

int segc_cmd_eval(int argc, char **argv) {
    const char *config = NULL, *ckpt = NULL, *results = NULL;
    char **ov = calloc((size_t)argc + 1, sizeof *ov);
    int n_ov = 0, rc = 2;
    bool quiet = false, profile = false;
    int64_t pf = 0, pl = INT64_MAX;
    const char *trace = "trace.json", *report_dir = NULL;
    bool no_report = false;
    int p;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) { eval_usage(stdout); rc = 0; goto done; }
        else if (!strcmp(s, "--checkpoint")) {
            if (i + 1 >= argc) { fprintf(stderr, "segc eval: --checkpoint needs a file\n"); goto done; }
            ckpt = argv[++i];
        } else if (!strcmp(s, "--results")) {
            if (i + 1 >= argc) { fprintf(stderr, "segc eval: --results needs a file\n"); goto done; }
            results = argv[++i];
        } else if (!strcmp(s, "--quiet")) quiet = true;
        else if (!strcmp(s, "--no-report")) no_report = true;
        else if (!strcmp(s, "--report")) {
            if (i + 1 >= argc) { fprintf(stderr, "segc eval: --report needs a run directory\n"); goto done; }
            report_dir = argv[++i];
        }
        else if (!strcmp(s, "--trace") && i + 1 < argc) trace = argv[++i];
        else if ((p = segc_cli_profile_opt(argc, argv, &i, "eval", &profile, &pf, &pl))) {
            if (p < 0) goto done;
        }
        else if (s[0] == '-') { fprintf(stderr, "segc eval: unknown option %s\n", s); eval_usage(stderr); goto done; }
        else if (strchr(s, '=')) ov[n_ov++] = argv[i];
        else if (!config) config = s;
        else { fprintf(stderr, "segc eval: unexpected argument %s\n", s); goto done; }
    }
    if (results) { rc = eval_results(config, results, ov, n_ov, quiet); goto done; }
    if (!ckpt) { eval_usage(stderr); goto done; }
    rc = 1;
    segc_config c;
    char err[1024];
    segc_model *m = NULL;
    segc_dataset *ds = NULL;
    if (!segc_cli_config_for(&c, config, ckpt, ov, n_ov, err, sizeof err)) goto fail;
    if (c.train.threads > 0) segc_set_num_threads(NULL, c.train.threads);
    segc_config_apply_conv_algo(&c);
    const char *split = *c.data.split ? c.data.split : c.data.val_split;
    ds = segc_config_open_dataset(&c, split, err, sizeof err);
    if (!ds) goto fail;
    m = segc_config_model_for(&c, ds, err, sizeof err);
    if (!m || !segc_model_load_checkpoint(m, ckpt, err, sizeof err)) goto fail;
    if (!quiet)
        fprintf(stderr, "evaluating %s on %s/%s (%lld images, mode %s%s)\n", ckpt, c.data.dataset, split,
                (long long)segc_dataset_len(ds), c.test.mode, c.test.flip ? ", flip" : "");
    segc_evaluate_opts eo = {0};
    eo.progress = quiet ? NULL : stderr;
    segc_eval_result met;
    if (profile && segc_profiler_start(trace)) {
        if (pl != INT64_MAX) segc_profiler_set_window(pf, pl);
        eo.profile_images = true;
    }
    bool eval_ok = segc_evaluate(m, &c, ds, &eo, &met, err, sizeof err);
    if (profile) {
        char pe[512];
        segc_profiler_pause();
        if (!segc_profiler_stop_and_write(quiet ? NULL : stderr, pe, sizeof pe)) fprintf(stderr, "segc eval: --profile: %s\n", pe);
        else if (!quiet) fprintf(stderr, "profile: %s (open in ui.perfetto.dev or chrome://tracing)\n", trace);
    }
    if (!eval_ok) goto fail;
    const char *names[256];
    int K = m->num_classes, nd = segc_dataset_num_classes(ds);
    for (int k = 0; k < K && k < 256; k++) names[k] = k < nd ? segc_dataset_class_name(ds, k) : NULL;
    bool named = nd >= K;
    segc_eval_result_print(stdout, &met, named ? names : NULL);
    char *js = segc_eval_result_json(&met, named ? names : NULL);
    printf("%s\n", js ? js : "{}");
    free(js);
    char rdir[4096];
    if (!no_report && segc_dist_is_writer() && (report_dir ? snprintf(rdir, sizeof rdir, "%s", report_dir) > 0 : run_dir_of(ckpt, rdir, sizeof rdir))) {
        /* the run's report gets this evaluation as its final one, saying how
         * many images it used (the periodic ones during training use a subset) */
        uint8_t palette[256 * 3];
        for (int k = 0; k < K && k < 256; k++) {
            const uint8_t *pc = k < nd ? segc_dataset_palette(ds, k) : NULL;
            for (int j = 0; j < 3; j++) palette[3 * k + j] = pc ? pc[j] : (uint8_t)((k * 97 + j * 57) & 255);
        }
        segc_report rep = {0};
        rep.metrics = &met.pixel;
        segc_report_set_extras(&rep, &met);
        rep.class_names = named ? names : NULL;
        rep.palette = palette;
        rep.n_classes = K < 256 ? K : 256;
        rep.split = split;
        rep.eval_images = met.n_images;
        rep.split_images = segc_dataset_len(ds);
        char re[1024];
        if (!segc_report_add_final(rdir, &rep, ckpt, re, sizeof re)) fprintf(stderr, "segc eval: report: %s\n", re);
        else if (!quiet) fprintf(stderr, "report: %s/report.html (final evaluation added)\n", rdir);
    }
    segc_eval_result_free(&met);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "segc eval: %s\n", err);
out:
    segc_model_free(m);
    segc_dataset_close(ds);
done:
    free(ov);
    return rc;
}
