/* segc tune:
 *  - grid and random sampling reproducible from the seed (ranges, grid crossing)
 *  - ASHA (stop) and ASHA promotion decisions on synthetic learning curves
 *    against references computed here; PBT exploit/explore decisions and lineage
 *  - a real tiny tune on CamVid end to end (tune.jsonl, tune.csv, best.yaml,
 *    tune.html naming every trial, stopped trials' checkpoints removed)
 *  - the tuner SIGKILLed mid-search and resumed ends with the same decisions and
 *    metrics as an uninterrupted search
 *  - bad input: a space key that is no config key (did-you-mean), lo >= hi, a
 *    metric the evaluator does not report, an unknown scheduler, a resume
 *    directory of another spec. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/tune.h"

static char camvid[1024];
static char tmp_root[256];
static char g_cli[1024];   /* BUILD/segc, next to BUILD/tests */

#define NEED_DATA() do { if (!*camvid) fail_msg("CamVid not found: the tune tests need ../shared/data/camvid (set SEGC_DATA)"); } while (0)

static void spec_from(segc_tune_spec *s, const char *yaml) {
    char err[1024];
    segc_tune_spec_defaults(s);
    if (!segc_tune_spec_load_string(s, yaml, "test.yaml", ".", err, sizeof err)) fail_msg("%s", err);
}

static void finish(segc_tune_spec *s, segc_config *base) {
    char err[1024];
    if (!segc_tune_spec_finish(s, base, err, sizeof err)) fail_msg("%s", err);
}

/* ---- sampling ---- */
static void test_sampling(void **state) {
    segc_tune_spec s;
    spec_from(&s, "space:\n"
                  "  optimizer.lr: {loguniform: [1.0e-5, 1.0e-2]}\n"
                  "  optimizer.weight_decay: {uniform: [0.0, 0.1]}\n"
                  "  data.batch_size: {grid: [2, 4]}\n"
                  "  optimizer.type: {choice: [adamw, sgd]}\n"
                  "  train.seed: {randint: [0, 5]}\n"
                  "  optimizer.momentum: {quniform: [0.5, 0.9, 0.1]}\n"
                  "tune: {num_samples: 3, seed: 7, max_t: 10}\n");
    assert_int_equal(segc_tune_n_trials(&s), 6);
    char a[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE], b[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE];
    int differ = 0;
    for (int i = 0; i < 6; i++) {
        segc_tune_sample(&s, i, a);
        segc_tune_sample(&s, i, b);
        for (int j = 0; j < s.n_params; j++) assert_string_equal(a[j], b[j]);
        double lr = atof(a[0]), wd = atof(a[1]);
        assert_true(lr >= 1e-5 && lr <= 1e-2);
        assert_true(wd >= 0 && wd <= 0.1);
        assert_string_equal(a[2], i % 2 ? "4" : "2");   /* the grid key is crossed with every sample */
        assert_true(!strcmp(a[3], "adamw") || !strcmp(a[3], "sgd"));
        int seed = atoi(a[4]);
        assert_true(seed >= 0 && seed < 5 && !strchr(a[4], '.'));
        double m = atof(a[5]);
        assert_true(m >= 0.5 - 1e-9 && m <= 0.9 + 1e-9 && fabs(m * 10 - round(m * 10)) < 1e-9);
        if (i % 2) {   /* the two grid cells of one sample share its random draws */
            segc_tune_sample(&s, i - 1, b);
            assert_string_equal(a[0], b[0]);
        }
        if (i >= 2) {
            segc_tune_sample(&s, i - 2, b);
            differ += strcmp(a[0], b[0]) != 0;
        }
    }
    assert_true(differ >= 3);
    /* another seed, other values */
    segc_tune_spec s2 = s;
    s2.seed = 8;
    segc_tune_sample(&s, 0, a);
    segc_tune_sample(&s2, 0, b);
    assert_string_not_equal(a[0], b[0]);
    /* tied keys: one list of values for several keys */
    segc_config c;
    segc_config_defaults(&c);
    char err[512];
    assert_true(segc_tune_apply(&c, "optimizer.lr,data.crop_size", "[0.5, [64, 96]]", err, sizeof err));
    assert_true(c.optimizer.lr == 0.5 && c.data.crop_size[0] == 64 && c.data.crop_size[1] == 96);
    assert_false(segc_tune_apply(&c, "optimizer.lr,data.crop_size", "[0.5]", err, sizeof err));
    assert_non_null(strstr(err, "fewer entries"));
    /* grid search enumerates choice keys too */
    spec_from(&s, "space:\n  optimizer.type: {choice: [adamw, sgd]}\n  data.batch_size: {grid: [2, 4, 8]}\n"
                  "tune: {search: grid}\n");
    assert_int_equal(segc_tune_n_trials(&s), 6);
    segc_tune_sample(&s, 5, a);
    assert_string_equal(a[0], "sgd");
    assert_string_equal(a[1], "8");
}

/* ---- ASHA ---- */
static double curve(int i, int64_t t) {   /* saturating curves with trial-specific level and speed */
    double level = 0.3 + 0.6 * fmod(i * 0.618034, 1.0), speed = 20 + 15 * (i % 4);
    return level * (1 - exp(-(double)t / speed));
}

static double ref_percentile(const double *x, int n, double q) {   /* numpy's linear interpolation */
    double v[256];
    for (int i = 0; i < n; i++) {
        int j = i;
        while (j > 0 && v[j - 1] > x[i]) v[j] = v[j - 1], j--;
        v[j] = x[i];
    }
    double pos = q / 100 * (n - 1);
    int lo = (int)pos;
    return lo + 1 < n ? v[lo] + (v[lo + 1] - v[lo]) * (pos - lo) : v[lo];
}

static void test_asha_stop(void **state) {
    const int N = 12;
    const int64_t grace = 5, max_t = 100;
    const double rf = 3;
    segc_tune_spec s;
    spec_from(&s, "space:\n  optimizer.lr: {uniform: [0.0, 1.0]}\n"
                  "tune: {num_samples: 12, scheduler: asha, max_t: 100, grace_period: 5, reduction_factor: 3}\n");
    s.max_t = max_t, s.grace_period = grace, s.report_interval = grace;
    segc_tune_sched t;
    char err[256];
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    assert_int_equal(t.n_rungs[0], 3);   /* 5, 15, 45 */
    assert_int_equal(t.milestones[0][2], 45);
    /* reference: Ray's AsyncHyperBand on the same sequence (one trial at a time) */
    double rec[3][64];
    int nrec[3] = {0}, ref_stop[64];
    int64_t ms[3] = {5, 15, 45};
    for (int i = 0; i < N; i++) {
        ref_stop[i] = -1;
        bool done[3] = {0};
        for (int64_t it = grace; it <= max_t && ref_stop[i] < 0; it += grace) {
            double v = curve(i, it);
            for (int k = 2; k >= 0; k--) {
                if (it < ms[k] || done[k]) continue;
                if (nrec[k] && v < ref_percentile(rec[k], nrec[k], (1 - 1 / rf) * 100)) ref_stop[i] = (int)it;
                rec[k][nrec[k]++] = v;
                done[k] = true;
                break;
            }
        }
    }
    int stops = 0;
    for (int n = 0; n < N; n++) {
        int trial;
        int64_t target;
        bool fin;
        assert_true(segc_tune_sched_next(&t, 0, &trial, &target, &fin));
        assert_int_equal(trial, n);
        assert_int_equal(target, max_t);
        int stopped = -1;
        for (int64_t it = grace; it <= max_t; it += grace) {
            segc_tune_action a = segc_tune_sched_result(&t, trial, it, curve(trial, it));
            if (a == SEGC_TUNE_STOP) { stopped = (int)it; break; }
            assert_int_equal(a, SEGC_TUNE_CONTINUE);
        }
        if (stopped != ref_stop[n]) fail_msg("trial %d: stopped at %d, reference %d", n, stopped, ref_stop[n]);
        stops += stopped > 0;
        segc_tune_sched_ended(&t, trial, stopped > 0 ? SEGC_TRIAL_STOPPED : SEGC_TRIAL_DONE, NULL);
    }
    assert_true(stops >= 4 && stops < N);   /* the curves make ASHA decide */
    int trial;
    int64_t target;
    bool fin;
    assert_false(segc_tune_sched_next(&t, 0, &trial, &target, &fin));
    assert_true(fin);
    /* brackets: bracket s starts at grace * rf^s; a trial's bracket is drawn from (seed, trial) */
    segc_tune_spec sb = s;
    sb.brackets = 3;
    segc_tune_sched tb, tb2;
    assert_true(segc_tune_sched_init(&tb, &sb, err, sizeof err));
    assert_true(segc_tune_sched_init(&tb2, &sb, err, sizeof err));
    assert_int_equal(tb.n_brackets, 3);
    assert_int_equal(tb.milestones[1][0], 15);
    assert_int_equal(tb.milestones[2][0], 45);
    assert_int_equal(tb.n_rungs[2], 1);
    int per[3] = {0};
    for (int n = 0; n < N; n++) {
        int a1 = segc_tune_sched_add(&tb), a2 = segc_tune_sched_add(&tb2);
        assert_int_equal(tb.trials[a1].bracket, tb2.trials[a2].bracket);
        per[tb.trials[a1].bracket]++;
    }
    assert_true(per[0] > per[2]);   /* p ~ e^rungs: 3 rungs vs 1 */
    segc_tune_sched_free(&tb);
    segc_tune_sched_free(&tb2);
    /* mode min: the same decisions on the negated metric */
    s.maximize = false;
    segc_tune_sched t2;
    assert_true(segc_tune_sched_init(&t2, &s, err, sizeof err));
    for (int n = 0; n < N; n++) {
        assert_true(segc_tune_sched_next(&t2, 0, &trial, &target, &fin));
        int stopped = -1;
        for (int64_t it = grace; it <= max_t && stopped < 0; it += grace)
            if (segc_tune_sched_result(&t2, trial, it, -curve(trial, it)) == SEGC_TUNE_STOP) stopped = (int)it;
        assert_int_equal(stopped, ref_stop[n]);
        segc_tune_sched_ended(&t2, trial, stopped > 0 ? SEGC_TRIAL_STOPPED : SEGC_TRIAL_DONE, NULL);
    }
    segc_tune_sched_free(&t2);
    segc_tune_sched_free(&t);
}

/* ASHA promotion on one worker against the paper's get_job written out here */
static void test_asha_promotion(void **state) {
    const int N = 9;
    segc_tune_spec s;
    spec_from(&s, "space:\n  optimizer.lr: {uniform: [0.0, 1.0]}\n"
                  "tune: {num_samples: 9, scheduler: asha, promotion: true, max_t: 27, grace_period: 1, reduction_factor: 3}\n");
    s.max_t = 27, s.grace_period = 1, s.report_interval = 1;
    segc_tune_sched t;
    char err[256];
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    assert_int_equal(t.n_rungs[0], 3);   /* 1, 3, 9; then max_t 27 */
    /* reference */
    const int64_t ms[4] = {1, 3, 9, 27};
    int ref_jobs[64][2], n_ref = 0, made = 0;
    double sc[64][3];
    bool has[64][3] = {{0}}, prom[64][3] = {{0}};
    for (;;) {
        int job = -1, rung = -1;
        for (int k = 2; k >= 0 && job < 0; k--) {
            int ids[64], n = 0;
            for (int i = 0; i < made; i++)
                if (has[i][k]) ids[n++] = i;
            for (int a = 0; a < n; a++)   /* rank by score, then id */
                for (int b = a + 1; b < n; b++)
                    if (sc[ids[b]][k] > sc[ids[a]][k] || (sc[ids[b]][k] == sc[ids[a]][k] && ids[b] < ids[a])) {
                        int x = ids[a];
                        ids[a] = ids[b], ids[b] = x;
                    }
            for (int r = 0; r < n / 3 && job < 0; r++)
                if (!prom[ids[r]][k]) job = ids[r], rung = k + 1, prom[ids[r]][k] = true;
        }
        if (job < 0 && made < N) job = made++, rung = 0;
        if (job < 0) break;
        ref_jobs[n_ref][0] = job, ref_jobs[n_ref][1] = rung, n_ref++;
        if (rung < 3) sc[job][rung] = curve(job, ms[rung]), has[job][rung] = true;
    }
    /* the scheduler, results every iteration */
    int n_jobs = 0;
    for (;;) {
        int trial;
        int64_t target;
        bool fin;
        if (!segc_tune_sched_next(&t, 0, &trial, &target, &fin)) { assert_true(fin); break; }
        assert_true(n_jobs < n_ref);
        if (trial != ref_jobs[n_jobs][0] || target != ms[ref_jobs[n_jobs][1]])
            fail_msg("job %d: trial %d to %lld, reference trial %d to %lld", n_jobs, trial, (long long)target,
                     ref_jobs[n_jobs][0], (long long)ms[ref_jobs[n_jobs][1]]);
        n_jobs++;
        segc_tune_action a = SEGC_TUNE_CONTINUE;
        for (int64_t it = t.trials[trial].iter + 1; it <= target && a == SEGC_TUNE_CONTINUE; it++)
            a = segc_tune_sched_result(&t, trial, it, curve(trial, it));
        assert_int_equal(a, target < 27 ? SEGC_TUNE_PAUSE : SEGC_TUNE_CONTINUE);
        segc_tune_sched_ended(&t, trial, target < 27 ? SEGC_TRIAL_PAUSED : SEGC_TRIAL_DONE, NULL);
    }
    assert_int_equal(n_jobs, n_ref);
    /* 9 trials at rung 1, the top 3 at rung 3, the top 1 at rung 9; one result at the top
     * rung promotes nobody (floor(1/3) = 0), so every trial ends stopped */
    int at[4] = {0};
    for (int i = 0; i < N; i++) {
        assert_int_equal(t.trials[i].state, SEGC_TRIAL_STOPPED);
        for (int k = 0; k < 3; k++) at[k] += !isnan(t.trials[i].rung_score[k]);
    }
    assert_int_equal(at[0], 9);
    assert_int_equal(at[1], 3);
    assert_int_equal(at[2], 1);
    segc_tune_sched_free(&t);
}

/* ---- PBT ---- */
static double pbt_metric(const char *lr, int64_t it) { return -fabs(log10(atof(lr)) + 3) + 0.001 * (double)it; }

static void test_pbt(void **state) {
    segc_tune_spec s;
    spec_from(&s, "space:\n  optimizer.lr: {loguniform: [1.0e-5, 1.0e-1]}\n  optimizer.type: {choice: [adamw, sgd, adamw]}\n"
                  "tune: {num_samples: 4, scheduler: pbt, max_t: 40, perturbation_interval: 10, quantile_fraction: 0.25, "
                  "resample_probability: 0.0, seed: 3}\n");
    s.max_t = 40, s.perturbation_interval = 10, s.report_interval = 10;
    segc_tune_sched t;
    char err[256];
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    int exploits = 0;
    for (int steps = 0;; steps++) {
        assert_true(steps < 100);
        int trial;
        int64_t target;
        bool fin;
        if (!segc_tune_sched_next(&t, 0, &trial, &target, &fin)) { assert_true(fin); break; }
        segc_tune_trial *tr = &t.trials[trial];
        assert_int_equal(target, (tr->iter / 10 + 1) * 10);
        for (int i = 0; i < t.n_trials; i++)   /* the least advanced trial runs first */
            if (t.trials[i].state == SEGC_TRIAL_PAUSED || t.trials[i].state == SEGC_TRIAL_PENDING) assert_true(t.trials[i].iter >= tr->iter);
        double m = pbt_metric(tr->values[0], target);
        segc_tune_action a = segc_tune_sched_result(&t, trial, target, m);
        if (target == 40) {
            assert_int_equal(a, SEGC_TUNE_CONTINUE);
            segc_tune_sched_ended(&t, trial, SEGC_TRIAL_DONE, NULL);
            continue;
        }
        assert_int_equal(a, SEGC_TUNE_PAUSE);
        /* reference: the latest scores; bottom ceil(n/4) (at most n/2) exploit the top as many */
        int ids[8], n = 0;
        for (int i = 0; i < t.n_trials; i++)
            if (!isnan(t.trials[i].score)) ids[n++] = i;
        int worst = ids[0], bestt = ids[0];
        for (int k = 1; k < n; k++) {
            const segc_tune_trial *x = &t.trials[ids[k]];
            if (x->score < t.trials[worst].score || (x->score == t.trials[worst].score && ids[k] > worst)) worst = ids[k];
            if (x->score > t.trials[bestt].score) bestt = ids[k];
        }
        int nq = (int)ceil(n * 0.25);
        if (nq > n / 2) nq = n / 2;
        bool expect = nq >= 1 && worst == trial;
        if (expect != (tr->exploit_source >= 0)) fail_msg("trial %d at %lld: exploit %d, reference %s", trial,
                                                          (long long)target, tr->exploit_source, expect ? "yes" : "no");
        if (expect) {
            assert_int_equal(tr->exploit_source, bestt);   /* nq = 1: the best trial */
            char src_lr[SEGC_TUNE_VALUE], src_type[SEGC_TUNE_VALUE];
            snprintf(src_lr, sizeof src_lr, "%s", t.trials[bestt].values[0]);
            snprintf(src_type, sizeof src_type, "%s", t.trials[bestt].values[1]);
            segc_tune_sched_exploited(&t, trial);
            exploits++;
            assert_int_equal(tr->parent, bestt);
            assert_int_equal(tr->exploit_source, -1);
            double r = atof(tr->values[0]) / atof(src_lr);
            if (fabs(r - 1.2) > 1e-4 && fabs(r - 0.8) > 1e-4 && atof(tr->values[0]) != 1e-5 && atof(tr->values[0]) != 0.1)
                fail_msg("perturbed lr %s from %s: factor %g", tr->values[0], src_lr, r);
            /* a choice moves to a neighbouring entry */
            assert_true(!strcmp(tr->values[1], "adamw") || !strcmp(tr->values[1], "sgd"));
        }
        segc_tune_sched_ended(&t, trial, SEGC_TRIAL_PAUSED, NULL);
    }
    assert_true(exploits >= 2);
    for (int i = 0; i < 4; i++) assert_int_equal(t.trials[i].state, SEGC_TRIAL_DONE);
    segc_tune_sched_free(&t);
}

/* ---- real tunes on CamVid ---- */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = 0;
    fclose(f);
    return s;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)); p++) n++;
    return n;
}

static void tiny_spec(segc_tune_spec *s, const char *dir, const char *tune_extra) {
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "config:\n  model.hidden: [8, 16, 16, 16]\n  model.depths: [1, 1, 1, 1]\n  model.heads: [1, 1, 1, 1]\n"
             "  model.decoder_hidden: 16\n  data.root: \"%s\"\n  data.batch_size: 2\n  data.num_workers: 1\n"
             "  data.scale: [120, 90]\n  data.crop_size: [32, 48]\n  data.test_scale: [120, 90]\n"
             "  train.val_max_samples: 2\n  train.report_samples: 0\n  train.log_interval: 2\n  schedule.warmup_iters: 1\n"
             "space:\n  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n  model.drop_path_rate: {choice: [0.0, 0.1]}\n"
             "tune: {metric: mIoU, num_samples: 3, scheduler: asha, max_t: 6, grace_period: 2, reduction_factor: 2, "
             "threads: 1, dir: \"%s\"%s}\n", camvid, dir, tune_extra);
    spec_from(s, yaml);
}

/* every trial tune.csv lists as stopped keeps no iteration checkpoint */
static void assert_stopped_have_no_checkpoints(const char *dir) {
    char p[700];
    snprintf(p, sizeof p, "%s/tune.csv", dir);
    char *csv = read_text(p);
    assert_non_null(csv);
    for (const char *l = strstr(csv, "\ntrial_"); l; l = strstr(l + 1, "\ntrial_")) {
        int id = atoi(l + 7);
        if (strncmp(l + 11, ",stopped,", 9)) continue;
        snprintf(p, sizeof p, "%s/trial_%04d/checkpoints/latest", dir, id);
        if (access(p, F_OK) == 0) fail_msg("stopped trial_%04d keeps its checkpoints", id);
    }
    free(csv);
}

static void test_tiny_tune_camvid(void **state) {
    NEED_DATA();
    char dir[512], p[700], err[1024];
    snprintf(dir, sizeof dir, "%s/e2e", tmp_root);
    segc_tune_spec s;
    segc_config base;
    tiny_spec(&s, dir, "");
    finish(&s, &base);
    segc_tune_opts o = {.quiet = true};
    if (!segc_tune_run(&s, &base, &o, err, sizeof err)) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/tune.jsonl", dir);
    char *log = read_text(p);
    assert_non_null(log);
    assert_int_equal(count(log, "\"event\":\"trial\""), 3);
    assert_true(count(log, "\"event\":\"result\"") >= 5);
    free(log);
    snprintf(p, sizeof p, "%s/tune.csv", dir);
    char *csv = read_text(p);
    assert_non_null(csv);
    assert_int_equal(count(csv, "\n"), 4);
    assert_non_null(strstr(csv, "trial,state,iter,mIoU,best,optimizer.lr,model.drop_path_rate"));
    free(csv);
    /* best.yaml is a ready-to-run config */
    snprintf(p, sizeof p, "%s/best.yaml", dir);
    segc_config c;
    segc_config_defaults(&c);
    if (!segc_config_load(&c, p, err, sizeof err) || !segc_config_finish(&c, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(c.train.max_iters, 6);
    /* tune.html: self-contained, names every trial, balanced svg */
    snprintf(p, sizeof p, "%s/tune.html", dir);
    char *html = read_text(p);
    assert_non_null(html);
    assert_true(!strncmp(html, "<!DOCTYPE html>", 15));
    assert_non_null(strstr(html, "</html>"));
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "trial_%04d", i);
        if (!strstr(html, name)) fail_msg("tune.html does not name %s", name);
    }
    assert_int_equal(count(html, "<svg"), 2);
    assert_int_equal(count(html, "</svg>"), 2);
    assert_int_equal(count(html, "<table"), count(html, "</table>"));
    assert_true(count(html, "<polyline") >= 6);
    assert_null(strstr(html, "src=\"http"));
    assert_null(strstr(html, "href=\"http"));
    free(html);
    /* trials' run dirs; a stopped trial keeps no iteration checkpoint */
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/trial_%04d/config.yaml", dir, i);
        assert_int_equal(access(p, F_OK), 0);
        snprintf(p, sizeof p, "%s/trial_%04d/metrics.jsonl", dir, i);
        assert_int_equal(access(p, F_OK), 0);
    }
    assert_stopped_have_no_checkpoints(dir);
    /* a fresh search over it is refused */
    assert_false(segc_tune_run(&s, &base, &o, err, sizeof err));
    assert_non_null(strstr(err, "--resume"));
}

/* trials as processes: the tuner SIGKILLed, its trials die with it, --resume finishes every trial */
static void test_resume_processes_camvid(void **state) {
    NEED_DATA();
    char dir[512], p[700], err[1024];
    snprintf(dir, sizeof dir, "%s/killed2", tmp_root);
    segc_tune_spec s;
    segc_config base;
    tiny_spec(&s, dir, ", concurrent: 2, num_samples: 4");
    finish(&s, &base);
    snprintf(p, sizeof p, "%s/tune.jsonl", dir);
    segc_tune_opts o = {.quiet = true};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char e2[1024];
        _exit(segc_tune_run(&s, &base, &o, e2, sizeof e2) ? 0 : 1);
    }
    for (int waited = 0; waited < 600; waited++) {
        char *log = read_text(p);
        int n = count(log, "\"event\":\"result\"");
        free(log);
        if (n >= 3) break;
        usleep(100000);
    }
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    usleep(300000);
    segc_tune_opts ro = {.resume = true, .quiet = true};
    if (!segc_tune_run(&s, &base, &ro, err, sizeof err)) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/tune.csv", dir);
    char *csv = read_text(p);
    assert_non_null(csv);
    assert_int_equal(count(csv, "\ntrial_"), 4);
    if (count(csv, ",done,6,") + count(csv, ",stopped,") != 4 || count(csv, ",done,6,") < 1) fail_msg("unfinished trials:\n%s", csv);
    free(csv);
    assert_stopped_have_no_checkpoints(dir);
}

/* a trial whose loss becomes NaN fails with its error; the search goes on */
static void test_failed_trial_camvid(void **state) {
    NEED_DATA();
    char dir[512], p[700], err[1024], yaml[4096];
    snprintf(dir, sizeof dir, "%s/nan", tmp_root);
    snprintf(yaml, sizeof yaml,
             "config:\n  model.hidden: [8, 16, 16, 16]\n  model.depths: [1, 1, 1, 1]\n  model.heads: [1, 1, 1, 1]\n"
             "  model.decoder_hidden: 16\n  data.root: \"%s\"\n  data.batch_size: 2\n  data.num_workers: 0\n"
             "  data.scale: [120, 90]\n  data.crop_size: [32, 48]\n  data.test_scale: [120, 90]\n"
             "  train.val_max_samples: 1\n  train.report_samples: 0\n  schedule.warmup_iters: 1\n"
             "space:\n  train.debug_nan_at: {grid: [3, -1]}\n"
             "tune: {metric: loss, max_t: 4, report_interval: 2, threads: 1, dir: \"%s\"}\n", camvid, dir);
    segc_tune_spec s;
    segc_config base;
    spec_from(&s, yaml);
    finish(&s, &base);
    segc_tune_opts o = {.quiet = true};
    if (!segc_tune_run(&s, &base, &o, err, sizeof err)) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/tune.csv", dir);
    char *csv = read_text(p);
    assert_non_null(csv);
    if (!strstr(csv, "trial_0000,failed,2,") || !strstr(csv, "NaN") || !strstr(csv, "trial_0001,done,4,"))
        fail_msg("unexpected tune.csv:\n%s", csv);
    free(csv);
}

/* trials as local processes (tune.concurrent 2), PBT copying checkpoints between them */
static void test_pbt_processes_camvid(void **state) {
    NEED_DATA();
    char dir[512], p[700], err[1024];
    snprintf(dir, sizeof dir, "%s/pbt", tmp_root);
    segc_tune_spec s;
    segc_config base;
    tiny_spec(&s, dir, ", scheduler: pbt, perturbation_interval: 2, quantile_fraction: 0.5, concurrent: 2, num_samples: 4");
    finish(&s, &base);
    segc_tune_opts o = {.quiet = true};
    if (!segc_tune_run(&s, &base, &o, err, sizeof err)) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/tune.csv", dir);
    char *csv = read_text(p);
    assert_non_null(csv);
    assert_int_equal(count(csv, ",done,6,"), 4);
    free(csv);
    snprintf(p, sizeof p, "%s/tune.jsonl", dir);
    char *log = read_text(p);
    int exploits = count(log, "\"event\":\"exploit\"");
    free(log);
    if (exploits < 1) fail_msg("no trial exploited another");
    snprintf(p, sizeof p, "%s/tune.html", dir);
    char *html = read_text(p);
    assert_non_null(strstr(html, "from trial_"));   /* the lineage */
    free(html);
}


/* the "result" events of a log, "time_s" removed */
static char *results_only(const char *log) {
    char *out = calloc(strlen(log) + 1, 1);
    size_t n = 0;
    for (const char *l = log; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l + 1) : strlen(l);
        if (strstr(l, "\"event\":\"result\"") && strstr(l, "\"event\":\"result\"") < l + len) {
            const char *t = strstr(l, ",\"time_s\":");
            size_t keep = t && t < l + len ? (size_t)(t - l) : len;
            memcpy(out + n, l, keep);
            n += keep;
            if (t && t < l + len) {   /* skip the number */
                const char *r = t + 10;
                while (*r && *r != ',' && *r != '}') r++;
                size_t rest = (size_t)(l + len - r);
                memcpy(out + n, r, rest);
                n += rest;
            }
        }
        l += len;
    }
    return out;
}

static void test_resume_after_sigkill(void **state) {
    NEED_DATA();
    char ref[512], dir[512], p[700], err[1024];
    snprintf(ref, sizeof ref, "%s/ref", tmp_root);
    snprintf(dir, sizeof dir, "%s/killed", tmp_root);
    const char *extra = ", promotion: true, num_samples: 4";
    segc_tune_spec s;
    segc_config base;
    tiny_spec(&s, ref, extra);
    finish(&s, &base);
    segc_tune_opts o = {.quiet = true};
    if (!segc_tune_run(&s, &base, &o, err, sizeof err)) fail_msg("%s", err);
    /* the same search, its tuner killed after a few decisions */
    tiny_spec(&s, dir, extra);
    finish(&s, &base);
    snprintf(p, sizeof p, "%s/tune.jsonl", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char e2[1024];
        _exit(segc_tune_run(&s, &base, &o, e2, sizeof e2) ? 0 : 1);
    }
    for (int waited = 0; waited < 600; waited++) {   /* up to 60 s */
        char *log = read_text(p);
        int n = count(log, "\"event\":\"result\"");
        free(log);
        if (n >= 4) break;
        usleep(100000);
    }
    kill(pid, SIGKILL);
    char *cut = read_text(p), rp[700];
    snprintf(rp, sizeof rp, "%s/tune.jsonl", ref);
    char *full = read_text(rp);
    int n_cut = count(cut, "\"event\":\"result\""), n_full = count(full, "\"event\":\"result\"");
    free(cut);
    free(full);
    if (n_cut >= n_full) fail_msg("the search finished (%d results) before the kill", n_cut);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFSIGNALED(st));
    usleep(200000);   /* its trial dies with it (PR_SET_PDEATHSIG) */
    segc_tune_opts ro = {.resume = true, .quiet = true};
    if (!segc_tune_run(&s, &base, &ro, err, sizeof err)) fail_msg("%s", err);
    /* the same decisions in the same order: every result line, without its time */
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/tune.jsonl", ref);
    snprintf(b, sizeof b, "%s/tune.jsonl", dir);
    char *la = read_text(a), *lb = read_text(b);
    char *ra = results_only(la), *rb = results_only(lb);
    if (strcmp(ra, rb)) fail_msg("resumed decisions differ:\n%s\nvs uninterrupted:\n%s", rb, ra);
    free(la), free(lb), free(ra), free(rb);
    snprintf(a, sizeof a, "%s/tune.csv", ref);
    snprintf(b, sizeof b, "%s/tune.csv", dir);
    char *ca = read_text(a), *cb = read_text(b);
    assert_non_null(ca);
    assert_non_null(cb);
    if (strcmp(ca, cb)) fail_msg("resumed search differs:\n%s\nvs uninterrupted:\n%s", cb, ca);
    free(ca);
    free(cb);
    assert_stopped_have_no_checkpoints(dir);
    assert_stopped_have_no_checkpoints(ref);
    /* a resume with another spec is refused */
    segc_tune_spec other;
    tiny_spec(&other, dir, ", promotion: true, num_samples: 5");
    finish(&other, &base);
    assert_false(segc_tune_run(&other, &base, &ro, err, sizeof err));
    if (!strstr(err, "another spec") || !strstr(err, "num_samples")) fail_msg("unexpected message: %s", err);
}

/* ---- bad input ---- */
static void expect_error(const char *yaml, bool at_finish, const char *const *needles) {
    segc_tune_spec s;
    segc_config base;
    char err[1024];
    segc_tune_spec_defaults(&s);
    bool ok = segc_tune_spec_load_string(&s, yaml, "bad.yaml", ".", err, sizeof err);
    if (ok && at_finish) ok = segc_tune_spec_finish(&s, &base, err, sizeof err);
    if (ok) fail_msg("accepted: %s", yaml);
    assert_null(strchr(err, '\n'));
    for (const char *const *n = needles; *n; n++)
        if (!strstr(err, *n)) fail_msg("message '%s' lacks '%s'", err, *n);
}

static void test_bad_input(void **state) {
    NEED_DATA();
    char cfg[1400];
    snprintf(cfg, sizeof cfg, "config: {data.root: \"%s\"}\n", camvid);
    char y[2048];
    snprintf(y, sizeof y, "%sspace:\n  optimizer.lrr: {uniform: [0.1, 0.2]}\n", cfg);
    expect_error(y, true, (const char *const[]){"optimizer.lrr", "did you mean 'optimizer.lr'", NULL});
    snprintf(y, sizeof y, "%sspace:\n  model.drop_path: {uniform: [0.0, 0.1]}\n", cfg);
    expect_error(y, true, (const char *const[]){"drop_path", NULL});
    expect_error("space:\n  optimizer.lr: {loguniform: [0.1, 0.01]}\n", false,
                 (const char *const[]){"bad.yaml:2", "optimizer.lr", "lo < hi", NULL});
    expect_error("space:\n  optimizer.lr: {loguniform: [0.0, 0.01]}\n", false, (const char *const[]){"lo > 0", NULL});
    expect_error("space:\n  optimizer.lr: {lognormal: [0.1, 0.2]}\n", false,
                 (const char *const[]){"unknown distribution", "loguniform", NULL});
    snprintf(y, sizeof y, "%stune: {metric: mIoUU}\n", cfg);
    expect_error(y, true, (const char *const[]){"tune.metric", "does not report 'mIoUU'", "did you mean 'mIoU'", NULL});
    snprintf(y, sizeof y, "%stune: {metric: IoU.Nothing}\n", cfg);
    expect_error(y, true, (const char *const[]){"does not report 'IoU.Nothing'", NULL});
    snprintf(y, sizeof y, "config: {data.root: \"%s\", data.val_split: \"\"}\ntune: {metric: mIoU}\n", camvid);
    expect_error(y, true, (const char *const[]){"tune.metric", "data.val_split is empty", NULL});
    expect_error("tune: {scheduler: hyperband}\n", false, (const char *const[]){"tune.scheduler", "fifo, asha, pbt", "hyperband", NULL});
    expect_error("tune: {shceduler: asha}\n", false, (const char *const[]){"did you mean 'tune.scheduler'", NULL});
    snprintf(y, sizeof y, "%stune: {scheduler: asha, max_t: 10, grace_period: 10}\n", cfg);
    expect_error(y, true, (const char *const[]){"tune.grace_period", NULL});
    expect_error("spcae: {}\n", false, (const char *const[]){"did you mean 'space'", NULL});
    /* the metric IoU.<class> of the dataset is fine */
    segc_tune_spec s;
    segc_config base;
    snprintf(y, sizeof y, "%stune: {metric: IoU.Road, max_t: 10}\n", cfg);
    spec_from(&s, y);
    finish(&s, &base);
    assert_true(s.maximize);
    snprintf(y, sizeof y, "%stune: {metric: loss, max_t: 10}\n", cfg);
    spec_from(&s, y);
    finish(&s, &base);
    assert_false(s.maximize);
    /* config overrides, nested or dotted, custom_keys maps whole */
    spec_from(&s, "config:\n  optimizer:\n    lr: 0.5\n    paramwise:\n      custom_keys: {norm: {decay_mult: 0.0}, head: {lr_mult: 10}}\n"
                  "  train.max_iters: 7\n  schedule.warmup_iters: 1\n");
    finish(&s, &base);
    assert_true(base.optimizer.lr == 0.5 && base.train.max_iters == 7);
    assert_int_equal(base.optimizer.n_custom_keys, 2);
    assert_string_equal(base.optimizer.custom_keys[1].key, "head");
    assert_true(base.optimizer.custom_keys[1].lr_mult.set && base.optimizer.custom_keys[1].lr_mult.value == 10);
    assert_int_equal(s.max_t, 7);   /* max_t: the base's max_iters when not given */
    /* durations in epochs: CamVid's 367 training images at batch 8 are 46 iterations */
    snprintf(y, sizeof y, "%stune: {max_t: 2ep, scheduler: asha, grace_period: 1ep}\n", cfg);
    spec_from(&s, y);
    finish(&s, &base);
    assert_int_equal(s.max_t, 92);
    assert_int_equal(s.grace_period, 46);
    /* spec YAML round-trips */
    char *t1 = segc_tune_spec_to_yaml(&s, false);
    segc_tune_spec s2;
    spec_from(&s2, t1);
    finish(&s2, &base);
    char *t2 = segc_tune_spec_to_yaml(&s2, false);
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);
}

static int setup(void **state) {
    segc_config c;
    segc_config_defaults(&c);
    char err[512];
    if (!segc_config_data_root(&c, camvid, sizeof camvid, err, sizeof err)) camvid[0] = 0;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/segc_tune_test_XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    return system(cmd) == 0 ? 0 : -1;
}

/* the shipped specs load, validate and size as documented */
static void test_shipped_specs(void **state) {
    NEED_DATA();
    segc_tune_spec s;
    segc_config base;
    char err[1024];
    segc_tune_spec_defaults(&s);
    if (!segc_tune_spec_load(&s, "configs/tune/camvid_segformer_asha.yaml", err, sizeof err)) fail_msg("%s", err);
    finish(&s, &base);
    assert_int_equal(segc_tune_n_trials(&s), 16);
    assert_int_equal(s.scheduler, SEGC_SCHED_ASHA);
    assert_true(s.promotion);
    segc_tune_sched t;
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    /* the documented budget: 16 x 50 + 4 x 150 + 1 x 600 iterations */
    int64_t budget = 16 * t.milestones[0][0] + 4 * (t.milestones[0][1] - t.milestones[0][0]) + (s.max_t - t.milestones[0][1]);
    assert_int_equal(t.n_rungs[0], 2);
    assert_int_equal(budget, 2000);
    segc_tune_sched_free(&t);
    segc_tune_spec_defaults(&s);
    if (!segc_tune_spec_load(&s, "configs/tune/segmenter_gaudi_asha.yaml", err, sizeof err)) fail_msg("%s", err);
    finish(&s, &base);
    assert_int_equal(segc_tune_n_trials(&s), 8);   /* encoder x pretrained x decoder */
    assert_int_equal(s.max_t, 5000);
    assert_int_equal(s.grace_period, 20);
    char v[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE];
    segc_tune_sample(&s, 7, v);
    segc_config c;
    if (!segc_tune_trial_config(&s, &base, v, "/tmp/x", 1, &c, err, sizeof err)) fail_msg("%s", err);
    assert_string_equal(c.model.variant, "vit-l");
    assert_string_equal(c.model.type, "segmenter");
}

/* the command line: one error line, exit status 1 */
static void test_cli_errors(void **state) {
    if (access(g_cli, X_OK) != 0) fail_msg("%s not found (make builds it)", g_cli);
    char yaml[700];
    snprintf(yaml, sizeof yaml, "%s/bad.yaml", tmp_root);
    FILE *f = fopen(yaml, "w");
    fprintf(f, "space:\n  optimizer.lr: {uniform: [0.2, 0.1]}\n");
    fclose(f);
    const char *cases[][2] = {
        {"", "uniform: expected lo < hi"},
        {" tune.scheduler=hyperband", "expected one of fifo, asha, pbt"},
    };
    for (int i = 0; i < 2; i++) {
        char cmd[2400], out[2048] = "";
        snprintf(cmd, sizeof cmd, "%s tune %s%s 2>&1; echo rc=$?", g_cli, yaml, cases[i][0]);
        if (i == 1) {   /* a valid file for the override case */
            f = fopen(yaml, "w");
            fprintf(f, "space:\n  optimizer.lr: {uniform: [0.1, 0.2]}\n");
            fclose(f);
        }
        FILE *p = popen(cmd, "r");
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        pclose(p);
        if (!strstr(out, cases[i][1]) || !strstr(out, "rc=1") || count(out, "\n") != 2)
            fail_msg("%s -> %s", cmd, out);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    snprintf(g_cli, sizeof g_cli, "%s", argv[0]);
    char *slash = strrchr(g_cli, '/');
    if (slash) *slash = 0;
    else snprintf(g_cli, sizeof g_cli, ".");
    strncat(g_cli, "/../segc", sizeof g_cli - strlen(g_cli) - 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_asha_stop),
        cmocka_unit_test(test_asha_promotion),
        cmocka_unit_test(test_pbt),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_shipped_specs),
        cmocka_unit_test(test_pbt_processes_camvid),   /* first: forks before this process runs a trial */
        cmocka_unit_test(test_resume_processes_camvid),
        cmocka_unit_test(test_tiny_tune_camvid),
        cmocka_unit_test(test_failed_trial_camvid),
        cmocka_unit_test(test_resume_after_sigkill),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
