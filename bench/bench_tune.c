/* segc tune overhead (not a test): N trials (default 100) of a trivial objective
 * (2 iterations of a tiny SegFormer on CamVid at 32x48, evaluated on 1 image), FIFO,
 * one at a time, against the same N trainings run back to back through
 * segc_train; plus the scheduler's own decision time on synthetic ASHA curves.
 *   build/bench/bench_tune [N]
 * Prints one JSON line:
 *   {"trials": N, "tune_wall_s": .., "direct_wall_s": .., "overhead_ms_per_trial": ..,
 *    "tuner_own_ms_per_trial": .., "scheduler_us_per_trial": ..}
 * overhead_ms_per_trial: (tune wall - direct wall) / N (noisy on a shared machine);
 * tuner_own_ms_per_trial: the tune's wall time outside segc_train / N (its summary event). 
 * Data root: ../shared/data/camvid or $SEGC_DATA. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segc/trainer.h"
#include "segc/tune.h"

static double scheduler_only(int n) {
    segc_tune_spec s;
    segc_tune_spec_defaults(&s);
    char err[512], yaml[512];
    snprintf(yaml, sizeof yaml, "space:\n  optimizer.lr: {loguniform: [1.0e-5, 1.0e-2]}\n"
                                "tune: {num_samples: %d, scheduler: asha, reduction_factor: 3}\n", n);
    if (!segc_tune_spec_load_string(&s, yaml, "bench", ".", err, sizeof err)) { fprintf(stderr, "%s\n", err); exit(1); }
    s.max_t = 100, s.grace_period = 1, s.report_interval = 1;
    double t0 = segc_now_s();
    segc_tune_sched t;
    segc_tune_sched_init(&t, &s, err, sizeof err);
    int trial;
    int64_t target;
    bool fin;
    while (segc_tune_sched_next(&t, 0, &trial, &target, &fin)) {
        double lvl = atof(t.trials[trial].values[0]);
        segc_tune_action a = SEGC_TUNE_CONTINUE;
        int64_t it = 1;
        for (; it <= target && a == SEGC_TUNE_CONTINUE; it++) a = segc_tune_sched_result(&t, trial, it, -fabs(log10(lvl) + 3) * (1 - exp(-(double)it / 10)));
        segc_tune_sched_ended(&t, trial, a == SEGC_TUNE_STOP ? SEGC_TRIAL_STOPPED : SEGC_TRIAL_DONE, NULL);
    }
    segc_tune_sched_free(&t);
    return (segc_now_s() - t0) / n * 1e6;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    if (n < 1) n = 1;
    segc_config c;
    segc_config_defaults(&c);
    char camvid[1024], err[1024];
    if (!segc_config_data_root(&c, camvid, sizeof camvid, err, sizeof err)) { fprintf(stderr, "bench_tune: %s\n", err); return 1; }
    char root[] = "/tmp/segc_bench_tune_XXXXXX";
    if (!mkdtemp(root)) return 1;
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "config:\n  model.hidden: [8, 16, 16, 16]\n  model.depths: [1, 1, 1, 1]\n  model.heads: [1, 1, 1, 1]\n"
             "  model.decoder_hidden: 16\n  data.root: \"%s\"\n  data.batch_size: 2\n  data.num_workers: 0\n"
             "  data.scale: [120, 90]\n  data.crop_size: [32, 48]\n  data.test_scale: [120, 90]\n"
             "  train.val_max_samples: 1\n  train.report_samples: 0\n  train.log_interval: 2\n  schedule.warmup_iters: 1\n"
             "space:\n  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
             "tune: {num_samples: %d, scheduler: fifo, max_t: 2, threads: 1, dir: \"%s/tune\"}\n", camvid, n, root);
    segc_tune_spec s;
    segc_config base;
    segc_tune_spec_defaults(&s);
    if (!segc_tune_spec_load_string(&s, yaml, "bench", ".", err, sizeof err) || !segc_tune_spec_finish(&s, &base, err, sizeof err)) {
        fprintf(stderr, "bench_tune: %s\n", err);
        return 1;
    }
    segc_tune_opts to = {.quiet = true};
    double t0 = segc_now_s();
    if (!segc_tune_run(&s, &base, &to, err, sizeof err)) { fprintf(stderr, "bench_tune: %s\n", err); return 1; }
    double tuned = segc_now_s() - t0;
    /* the tuner's own time around the training calls, as it logs it */
    char lp[300], line[1024];
    double own = NAN;
    snprintf(lp, sizeof lp, "%s/tune/tune.jsonl", root);
    FILE *lf = fopen(lp, "r");
    while (lf && fgets(line, sizeof line, lf)) {
        const char *q = strstr(line, "\"overhead_ms_per_run\":");
        if (q) own = atof(q + 22);
    }
    if (lf) fclose(lf);
    /* the same trainings back to back, in this process (after the tune: its children are forked from a
     * process that has not started OpenMP threads) */
    t0 = segc_now_s();
    for (int i = 0; i < n; i++) {
        char vals[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE], dir[256];
        segc_tune_sample(&s, i, vals);
        snprintf(dir, sizeof dir, "%s/direct/trial_%04d", root, i);
        segc_config tc;
        segc_train_opts o = {.quiet = true};
        if (!segc_tune_trial_config(&s, &base, vals, dir, 1, &tc, err, sizeof err) ||
            segc_train(&tc, &o, err, sizeof err) != SEGC_TRAIN_DONE) {
            fprintf(stderr, "bench_tune: %s\n", err);
            return 1;
        }
    }
    double direct = segc_now_s() - t0;
    printf("{\"trials\": %d, \"tune_wall_s\": %.3f, \"direct_wall_s\": %.3f, \"overhead_ms_per_trial\": %.2f, "
           "\"tuner_own_ms_per_trial\": %.3f, \"scheduler_us_per_trial\": %.2f}\n", n, tuned, direct,
           (tuned - direct) / n * 1e3, own, scheduler_only(n));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : 1;
}
