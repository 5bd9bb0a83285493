/* segc tune under an MPI launcher: `mpirun -np 3 segc tune SPEC` (rank 0
 * schedules, ranks 1 and 2 run one trial each at a time) on tiny CamVid tunes:
 *  - FIFO: every trial finishes and every result (metric and loss, as logged
 *    to 17 digits) equals the same search run in one process (tune.concurrent
 *    1): per-trial training is deterministic and sees a world of 1
 *  - ASHA: every trial ends done or stopped, decisions fit the rungs and the
 *    results logged, each result equals the one-process search's result of
 *    that trial and iteration, stopped trials keep no checkpoints
 *  - PBT (exploits copy checkpoints between trials run by different ranks) and
 *    ASHA with promotion (paused trials resume on whichever rank is free): every
 *    trial finishes
 *  - with dist.timeout_s: 1, a worker that waits longer than that for its next
 *    trial (or for the end of the search) is not ended by the watchdog
 *  - a NaN trial is reported failed while the other finishes; the job exits 0
 *  - --resume under mpirun continues a search cut short (rank 0 replays tune.jsonl) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/config.h"

static char camvid[1024], root[256], segc_bin[1024];

#define NEED_DATA() do { if (!*camvid) fail_msg("CamVid not found: the tune tests need ../shared/data/camvid (set SEGC_DATA)"); } while (0)
#define MPIRUN "timeout 300 mpirun -np 3 --oversubscribe --allow-run-as-root"

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

/* runs a shell command, output to LOG; the exit status (-1: killed); the log is printed on failure */
static int sh(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(const char *log, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && n < (int)sizeof cmd - 600);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " >%s 2>&1", log);
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rc != 0) {
        char *t = read_text(log);
        printf("  | %s\n", t ? t : "(no output)");
        free(t);
    }
    return rc;
}

/* NAME.yaml under root: the tiny model on CamVid, the space and TUNE ("key: value, ..." of tune:) */
static void write_spec(const char *name, const char *space, const char *tune, char *path, size_t n) {
    snprintf(path, n, "%s/%s.yaml", root, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "config:\n  model.hidden: [8, 16, 16, 16]\n  model.depths: [1, 1, 1, 1]\n  model.heads: [1, 1, 1, 1]\n"
               "  model.decoder_hidden: 16\n  data.root: \"%s\"\n  data.batch_size: 2\n  data.num_workers: 1\n"
               "  data.scale: [120, 90]\n  data.crop_size: [32, 48]\n  data.test_scale: [120, 90]\n"
               "  train.val_max_samples: 2\n  train.report_samples: 0\n  train.log_interval: 2\n  schedule.warmup_iters: 1\n"
               "space:\n%s\ntune: {threads: 1, %s}\n", camvid, space, tune);
    fclose(f);
}

/* runs SPEC into DIR: with mpirun -np 3 (mpi) or as one process (tune.concurrent 1) */
static void tune(const char *spec, const char *dir, bool mpi, const char *extra) {
    char log[600];
    snprintf(log, sizeof log, "%s.log", dir);
    int rc = mpi ? sh(log, MPIRUN " %s tune %s tune.dir=%s %s", segc_bin, spec, dir, extra)
                 : sh(log, "%s tune %s tune.dir=%s tune.concurrent=1 %s", segc_bin, spec, dir, extra);
    if (rc != 0) fail_msg("segc tune %s (%s) exited with %d", spec, mpi ? "mpirun -np 3" : "one process", rc);
}

/* the "result" lines of DIR/tune.jsonl: trial, iter, the metric and loss text, the action */
typedef struct result { int trial; long iter; char metric[40], loss[40], action[16]; } result;

static int results(const char *dir, result *r, int cap) {
    char p[700];
    snprintf(p, sizeof p, "%s/tune.jsonl", dir);
    char *log = read_text(p);
    if (!log) fail_msg("%s is missing", p);
    int n = 0;
    for (char *l = strstr(log, "{\"event\":\"result\""); l && n < cap; l = strstr(l + 1, "{\"event\":\"result\"")) {
        result *x = &r[n++];
        memset(x, 0, sizeof *x);
        if (sscanf(l, "{\"event\":\"result\",\"trial\":%d,\"iter\":%ld,\"metric\":%39[^,],\"loss\":%39[^,],\"action\":\"%15[^\"]",
                   &x->trial, &x->iter, x->metric, x->loss, x->action) != 5)
            fail_msg("%s: unexpected result line %.200s", p, l);
    }
    free(log);
    return n;
}

static const result *find(const result *r, int n, int trial, long iter) {
    for (int i = 0; i < n; i++)
        if (r[i].trial == trial && r[i].iter == iter) return &r[i];
    return NULL;
}

/* every result of a (in any order) is b's of the same trial and iteration, bit for bit */
static void assert_results_match(const result *a, int na, const result *b, int nb) {
    for (int i = 0; i < na; i++) {
        const result *o = find(b, nb, a[i].trial, a[i].iter);
        if (!o) continue;
        if (strcmp(a[i].metric, o->metric) || strcmp(a[i].loss, o->loss))
            fail_msg("trial_%04d iteration %ld: metric %s loss %s under mpirun, %s %s in one process", a[i].trial,
                     a[i].iter, a[i].metric, a[i].loss, o->metric, o->loss);
    }
}

static char *csv_of(const char *dir) {
    char p[700];
    snprintf(p, sizeof p, "%s/tune.csv", dir);
    char *csv = read_text(p);
    if (!csv) fail_msg("%s is missing", p);
    return csv;
}

static void test_fifo_equals_one_process(void **state) {
    NEED_DATA();
    char spec[600], a[400], b[400];
    write_spec("fifo", "  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n  model.drop_path_rate: {choice: [0.0, 0.1]}",
               "metric: mIoU, num_samples: 4, scheduler: fifo, max_t: 4, report_interval: 2", spec, sizeof spec);
    snprintf(a, sizeof a, "%s/fifo_mpi", root);
    snprintf(b, sizeof b, "%s/fifo_one", root);
    tune(spec, a, true, "");
    tune(spec, b, false, "");
    result ra[64], rb[64];
    int na = results(a, ra, 64), nb = results(b, rb, 64);
    assert_int_equal(na, 8);   /* 4 trials x iterations 2 and 4 */
    assert_int_equal(nb, 8);
    for (int i = 0; i < nb; i++)
        if (!find(ra, na, rb[i].trial, rb[i].iter)) fail_msg("trial_%04d has no result at %ld under mpirun", rb[i].trial, rb[i].iter);
    assert_results_match(ra, na, rb, nb);
    char *csv = csv_of(a);
    assert_int_equal(count(csv, ",done,4,"), 4);
    free(csv);
    /* the search event names the workers: 2 at a time */
    char p[700];
    snprintf(p, sizeof p, "%s/tune.jsonl", a);
    char *log = read_text(p);
    assert_non_null(strstr(log, "\"concurrent\":2"));
    free(log);
}

static void test_asha_consistent(void **state) {
    NEED_DATA();
    char spec[600], a[400], b[400];
    write_spec("asha", "  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n  model.drop_path_rate: {choice: [0.0, 0.1]}",
               "metric: mIoU, num_samples: 5, scheduler: asha, max_t: 6, grace_period: 2, reduction_factor: 2",
               spec, sizeof spec);
    snprintf(a, sizeof a, "%s/asha_mpi", root);
    snprintf(b, sizeof b, "%s/asha_one", root);
    tune(spec, a, true, "");
    tune(spec, b, false, "");
    result ra[64], rb[64];
    int na = results(a, ra, 64), nb = results(b, rb, 64);
    assert_results_match(ra, na, rb, nb);
    char *csv = csv_of(a);
    int done = count(csv, ",done,6,"), stopped = count(csv, ",stopped,");
    if (done < 1 || done + stopped != 5) fail_msg("every trial should end done or stopped:\n%s", csv);
    for (int t = 0; t < 5; t++) {
        /* every trial reports at the grace period; stops only at a rung (2, 4); a trial whose last
         * decision was stop is stopped, one that reached max_t is done */
        if (!find(ra, na, t, 2)) fail_msg("trial_%04d has no result at the grace period", t);
        const result *last = NULL;
        for (int i = 0; i < na; i++)
            if (ra[i].trial == t) {
                if (!strcmp(ra[i].action, "stop") && ra[i].iter != 2 && ra[i].iter != 4)
                    fail_msg("trial_%04d stopped at iteration %ld, not a rung", t, ra[i].iter);
                last = &ra[i];
            }
        char row[64], p[700];
        snprintf(row, sizeof row, "trial_%04d,%s,", t, !strcmp(last->action, "stop") ? "stopped" : "done");
        if (!strstr(csv, row)) fail_msg("trial_%04d: last decision %s at %ld, but tune.csv:\n%s", t, last->action, last->iter, csv);
        snprintf(p, sizeof p, "%s/trial_%04d/checkpoints/latest", a, t);
        if (!strcmp(last->action, "stop") && access(p, F_OK) == 0) fail_msg("stopped trial_%04d keeps its checkpoints", t);
    }
    free(csv);
}

static void test_pbt_and_promotion(void **state) {
    NEED_DATA();
    const char *space = "  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n  model.drop_path_rate: {choice: [0.0, 0.1]}";
    char spec[600], a[400], p[700];
    write_spec("pbt", space, "metric: mIoU, num_samples: 4, scheduler: pbt, max_t: 6, perturbation_interval: 2, "
               "quantile_fraction: 0.5", spec, sizeof spec);
    snprintf(a, sizeof a, "%s/pbt_mpi", root);
    tune(spec, a, true, "");
    char *csv = csv_of(a);
    if (count(csv, ",done,6,") != 4) fail_msg("every PBT trial should finish:\n%s", csv);
    free(csv);
    snprintf(p, sizeof p, "%s/tune.jsonl", a);
    char *log = read_text(p);
    int exploits = count(log, "\"event\":\"exploit\"");
    free(log);
    if (exploits < 1) fail_msg("no trial exploited another");
    write_spec("promo", space, "metric: mIoU, num_samples: 4, scheduler: asha, max_t: 6, grace_period: 2, "
               "reduction_factor: 2, promotion: true", spec, sizeof spec);
    snprintf(a, sizeof a, "%s/promo_mpi", root);
    tune(spec, a, true, "");
    csv = csv_of(a);
    int done = count(csv, ",done,6,"), stopped = count(csv, ",stopped,");
    if (done < 1 || done + stopped != 4) fail_msg("every trial should end done or stopped:\n%s", csv);
    free(csv);
}

static void test_long_wait(void **state) {
    NEED_DATA();
    char spec[600], a[400];
    write_spec("wait", "  optimizer.lr: {grid: [1.0e-3, 2.0e-3, 3.0e-3]}",
               "metric: loss, num_samples: 1, scheduler: fifo, max_t: 160, report_interval: 160", spec, sizeof spec);
    snprintf(a, sizeof a, "%s/wait_mpi", root);
    double t0 = segc_now_s();
    tune(spec, a, true, "dist.timeout_s=1");
    double took = segc_now_s() - t0;
    char *csv = csv_of(a);
    if (count(csv, ",done,160,") != 3) fail_msg("every trial should finish:\n%s", csv);
    free(csv);
    printf("3 trials on 2 workers took %.1f s (dist.timeout_s 1)\n", took);
}

static void test_failed_trial(void **state) {
    NEED_DATA();
    char spec[600], a[400];
    write_spec("nan", "  train.debug_nan_at: {grid: [3, -1]}", "metric: loss, max_t: 4, report_interval: 2", spec, sizeof spec);
    snprintf(a, sizeof a, "%s/nan_mpi", root);
    tune(spec, a, true, "");
    char *csv = csv_of(a);
    if (!strstr(csv, "trial_0000,failed,2,") || !strstr(csv, "NaN") || !strstr(csv, "trial_0001,done,4,"))
        fail_msg("unexpected tune.csv:\n%s", csv);
    free(csv);
}

/* a one-process search cut short after trial 0's last result (trials 1..3 never started),
 * continued with mpirun -np 3 --resume: every trial finishes with the uninterrupted results */
static void test_resume_under_mpirun(void **state) {
    NEED_DATA();
    char spec[600], b[400], c[400], p[700], log[700];
    snprintf(spec, sizeof spec, "%s/fifo.yaml", root);
    snprintf(b, sizeof b, "%s/fifo_one", root);
    snprintf(c, sizeof c, "%s/fifo_cut", root);
    if (access(b, F_OK) != 0) fail_msg("%s: run test_fifo_equals_one_process first", b);
    snprintf(log, sizeof log, "%s.log", c);
    assert_int_equal(sh(log, "cp -r %s %s && rm -rf %s/trial_0001 %s/trial_0002 %s/trial_0003", b, c, c, c, c), 0);
    snprintf(p, sizeof p, "%s/tune.jsonl", c);
    char *full = read_text(p);
    assert_non_null(full);
    char *cut = strstr(full, "{\"event\":\"end\"");
    assert_non_null(cut);
    FILE *f = fopen(p, "w");
    fwrite(full, 1, (size_t)(cut - full), f);
    fclose(f);
    free(full);
    assert_int_equal(sh(log, MPIRUN " %s tune --resume %s", segc_bin, c), 0);
    result rb[64], rc[64];
    int nb = results(b, rb, 64), nc = results(c, rc, 64);
    for (int t = 1; t < 4; t++)
        for (long it = 2; it <= 4; it += 2)
            if (!find(rc, nc, t, it)) fail_msg("resumed: trial_%04d has no result at %ld", t, it);
    assert_results_match(rc, nc, rb, nb);
    char *csv = csv_of(c);
    assert_int_equal(count(csv, ",done,4,"), 4);
    free(csv);
}

static int setup(void **state) {
    segc_config cfg;
    segc_config_defaults(&cfg);
    char err[512];
    if (!segc_config_data_root(&cfg, camvid, sizeof camvid, err, sizeof err)) camvid[0] = 0;
    snprintf(root, sizeof root, "/tmp/segc_tune_mpi_XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[300];
    if (getenv("SEGC_TEST_KEEP")) return printf("kept %s\n", root), 0;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    (void)argc;
    /* build/tests/test_tune_mpi -> build/segc */
    snprintf(segc_bin, sizeof segc_bin, "%s", argv[0]);
    char *slash = strrchr(segc_bin, '/');
    if (slash) *slash = 0;
    else snprintf(segc_bin, sizeof segc_bin, ".");
    strncat(segc_bin, "/../segc", sizeof segc_bin - strlen(segc_bin) - 1);
    char *abs = realpath(segc_bin, NULL);
    if (!abs) { fprintf(stderr, "test_tune_mpi: %s not built\n", segc_bin); return 1; }
    snprintf(segc_bin, sizeof segc_bin, "%s", abs);
    free(abs);
    /* as test_dist: Open MPI as root, oversubscribed; LSan told about Open MPI's own allocations */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    setenv("OMPI_MCA_btl", "self,vader,tcp", 0);
    setenv("OMP_NUM_THREADS", "1", 1);
    char supp[1200];
    char *cwd = getcwd(NULL, 0);
    snprintf(supp, sizeof supp, "suppressions=%s/tests/lsan_mpi.supp:print_suppressions=0:fast_unwind_on_malloc=0", cwd ? cwd : ".");
    free(cwd);
    setenv("LSAN_OPTIONS", supp, 1);
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    setenv("PMIX_MCA_mca_base_component_disable_dlclose", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_equals_one_process),
        cmocka_unit_test(test_asha_consistent),
        cmocka_unit_test(test_pbt_and_promotion),
        cmocka_unit_test(test_long_wait),
        cmocka_unit_test(test_failed_trial),
        cmocka_unit_test(test_resume_under_mpirun),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
