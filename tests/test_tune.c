/* segc tune end to end (the schedulers alone: test_tune_sched.c):
 *  - real tiny tunes on CamVid: ASHA end to end (tune.jsonl, tune.csv, best.yaml,
 *    tune.html naming every trial, stopped trials' checkpoints removed), PBT with
 *    trials as processes copying checkpoints, a NaN trial failing while the search
 *    goes on
 *  - the tuner SIGKILLed mid-search and resumed ends with the same decisions and
 *    metrics as an uninterrupted search (one trial at a time), and finishes every
 *    trial with trials as processes
 *  - bad input: a space key that is no config key (did-you-mean), lo >= hi, a
 *    metric the evaluator does not report, an unknown scheduler, a resume
 *    directory of another spec; the command line; the shipped specs. */
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
