/* Training loop, checkpoints and exact resume on a tiny SegFormer over real
 * CamVid images at small crops:
 *  - same seed + thread count -> bitwise identical weights and optimizer state
 *  - a run SIGKILLed at random moments and resumed ends with weights bitwise
 *    equal to an uninterrupted run (the training runs in child processes: this
 *    binary re-executed with --train-child DIR)
 *  - run directory contents (metrics.jsonl, report.html, config.yaml,
 *    keep-last-K + best), time limit, bf16 smoke run
 *  - failures: NaN loss keeps the last good checkpoint, a full disk while
 *    saving (RLIMIT_FSIZE) leaves no partial checkpoint as the latest, another
 *    model's checkpoint is refused naming the first mismatching tensor,
 *    unreadable checkpoints, a missing dataset root, a fresh run over an
 *    existing one. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/harness.h"
#include "common/train_check.h"
#include "segc/trainer.h"

static char camvid[1024];
static char tmp_root[256];

static void tiny_config(segc_config *c, const char *work_dir, const char *const *extra, int n_extra) {
    segc_config_defaults(c);
    const char *ov[] = {"name=tiny", "model.hidden=[8,16,16,16]", "model.depths=[1,1,1,1]", "model.heads=[1,1,1,1]",
                        "model.decoder_hidden=16", "data.batch_size=2", "data.num_workers=1", "data.scale=[120,90]",
                        "data.crop_size=[32,48]", "data.test_scale=[120,90]", "train.max_iters=12",
                        "train.checkpoint_interval=3", "train.val_interval=6", "train.log_interval=3",
                        "train.val_max_samples=2", "train.report_samples=2", "train.keep_last=2",
                        "schedule.warmup_iters=2", "optimizer.lr=1e-3", "train.threads=2"};
    char err[512];
    for (size_t i = 0; i < sizeof ov / sizeof *ov; i++)
        if (!segc_config_override(c, ov[i], err, sizeof err)) fail_msg("%s", err);
    for (int i = 0; i < n_extra; i++)
        if (!segc_config_override(c, extra[i], err, sizeof err)) fail_msg("%s", err);
    snprintf(c->data.root, sizeof c->data.root, "%s", camvid);
    snprintf(c->train.work_dir, sizeof c->train.work_dir, "%s", work_dir);
    if (!segc_config_finish(c, err, sizeof err)) fail_msg("%s", err);
}

static void run_dir(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmp_root, name); }

static segc_train_status train_tiny(const char *dir, const char *const *extra, int n_extra, bool resume, char *err,
                                    size_t errlen) {
    segc_config c;
    tiny_config(&c, dir, extra, n_extra);
    segc_train_opts o = {.resume = resume, .quiet = true};
    return segc_train(&c, &o, err, errlen);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t k = fread(s, 1, (size_t)n, f);
    s[k] = 0;
    fclose(f);
    return s;
}

/* every tensor of a and b bitwise equal (names and shapes too) */
static bool exists(const char *p) { return access(p, F_OK) == 0; }

static int count_files(const char *dir, const char *needle) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, needle) != NULL;
    closedir(d);
    return n;
}

static int setup(void **state) {
    segc_config c;
    segc_config_defaults(&c);
    char err[512];
    if (!segc_config_data_root(&c, camvid, sizeof camvid, err, sizeof err)) {
        fprintf(stderr, "CamVid not found (%s): every training test fails (set SEGC_DATA)\n", err);
        camvid[0] = 0;
    }
    snprintf(tmp_root, sizeof tmp_root, "/tmp/segc_train_test_XXXXXX");
    if (!mkdtemp(tmp_root)) return -1;
    return 0;
}

static int teardown(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    return system(cmd) == 0 ? 0 : -1;
}

/* a missing dataset fails the test (CI always has the shared data) */
#define NEED_DATA() do { if (!*camvid) fail_msg("CamVid not found: the training tests need ../shared/data/camvid (set SEGC_DATA)"); } while (0)

static void test_deterministic_and_outputs(void **state) {
    NEED_DATA();
    char a[512], b[512], err[1024], p[900], q[1024];
    run_dir(a, sizeof a, "det_a");
    run_dir(b, sizeof b, "det_b");
    if (train_tiny(a, NULL, 0, false, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    if (train_tiny(b, NULL, 0, false, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/checkpoints/iter_0000012.safetensors", a);
    snprintf(q, sizeof q, "%s/checkpoints/iter_0000012.safetensors", b);
    tc_assert_same_tensors(p, q);
    snprintf(p, sizeof p, "%s/checkpoints/iter_0000012.state.safetensors", a);
    snprintf(q, sizeof q, "%s/checkpoints/iter_0000012.state.safetensors", b);
    tc_assert_same_tensors(p, q);
    /* run directory */
    snprintf(p, sizeof p, "%s/checkpoints/latest", a);
    char *latest = read_text(p);
    assert_non_null(latest);
    assert_string_equal(latest, "iter_0000012\n");
    free(latest);
    snprintf(p, sizeof p, "%s/checkpoints", a);
    assert_int_equal(count_files(p, ".state.safetensors"), 2);   /* keep_last 2: iterations 9 and 12 */
    snprintf(q, sizeof q, "%s/iter_0000009.state.safetensors", p);
    assert_true(exists(q));
    snprintf(q, sizeof q, "%s/best.safetensors", p);
    assert_true(exists(q));
    assert_int_equal(count_files(p, ".tmp."), 0);
    snprintf(p, sizeof p, "%s/metrics.jsonl", a);
    char *m = read_text(p);
    assert_non_null(m);
    int evals = 0, losses = 0;
    for (const char *s = m; (s = strstr(s, "\"eval\":")); s++) evals++;
    for (const char *s = m; (s = strstr(s, "\"loss\":")); s++) losses++;
    assert_int_equal(evals, 2);    /* iterations 6 and 12 */
    assert_int_equal(losses, 4);   /* every 3 iterations */
    assert_non_null(strstr(m, "\"mIoU\":"));
    free(m);
    snprintf(p, sizeof p, "%s/report.html", a);
    char *html = read_text(p);
    assert_non_null(html);
    assert_non_null(strstr(html, "<svg"));
    assert_non_null(strstr(html, "<polyline"));
    assert_non_null(strstr(html, "data:image/png;base64,"));
    assert_non_null(strstr(html, "Bicyclist"));
    assert_null(strstr(html, "src=\"http"));   /* self-contained: nothing fetched */
    assert_null(strstr(html, "href=\"http"));
    /* the periodic evaluation says what it covered: 2 images (train.val_max_samples) of the val split */
    if (!strstr(html, "after iteration 12, 2 of ") || !strstr(html, " images of the val split (a subset"))
        fail_msg("the report does not say what the latest evaluation covered");
    free(html);
    /* a final evaluation (what segc eval adds) goes into the report, replacing an earlier one */
    double iou[11], acc[11];
    for (int k = 0; k < 11; k++) iou[k] = acc[k] = 0.01 * k;
    segc_metrics fm = {.num_classes = 11, .aAcc = 0.5, .mIoU = 0.123456, .mAcc = 0.25, .iou = iou, .acc = acc};
    segc_report fr = {.metrics = &fm, .n_classes = 11, .split = "val", .eval_images = 101, .split_images = 101};
    for (int round = 0; round < 2; round++)
        if (!segc_report_add_final(a, &fr, "best.safetensors", err, sizeof err)) fail_msg("%s", err);
    html = read_text(p);
    const char *fin = strstr(html, "Final evaluation");
    if (!fin || strstr(fin + 1, "Final evaluation") || !strstr(html, "101 of 101 images of the val split") ||
        !strstr(html, "12.35") || !strstr(html, "Latest evaluation during training"))
        fail_msg("the final evaluation is not in the report exactly once");
    free(html);
    /* the resolved config (classes and channels as built) reloads to the same values */
    segc_config c, d;
    tiny_config(&c, a, NULL, 0);
    c.model.num_classes = 11;
    c.model.in_channels = 3;
    segc_config_defaults(&d);
    snprintf(p, sizeof p, "%s/config.yaml", a);
    if (!segc_config_load(&d, p, err, sizeof err)) fail_msg("%s", err);
    char diff[512];
    if (segc_config_diff(&c, &d, diff, sizeof diff)) fail_msg("saved config differs: %s", diff);
    /* the weights carry their config: what `segc eval` without CONFIG relies on */
    snprintf(p, sizeof p, "%s/checkpoints/best.safetensors", a);
    char *y = segc_checkpoint_config(p, err, sizeof err);
    assert_non_null(y);
    free(y);
    /* a finished run resumed again does nothing */
    if (train_tiny(a, NULL, 0, true, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    /* a fresh run over it is refused without --force */
    assert_int_equal(train_tiny(a, NULL, 0, false, err, sizeof err), SEGC_TRAIN_FAILED);
    assert_non_null(strstr(err, "--resume"));
    /* --force starts over: nothing of the earlier run is left */
    segc_config f;
    tiny_config(&f, a, (const char *const[]){"train.max_iters=3", "schedule.warmup_iters=1"}, 2);
    segc_train_opts fo = {.force = true, .quiet = true};
    if (segc_train(&f, &fo, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/checkpoints", a);
    assert_int_equal(count_files(p, "iter_"), 2);   /* iteration 3's pair only */
    snprintf(p, sizeof p, "%s/metrics.jsonl", a);
    m = read_text(p);
    assert_null(strstr(m, "\"iter\":6"));
    free(m);
}

/* Runs the tiny training in a child process. kill_after_s > 0: SIGKILL it that
 * long after it starts. With after_progress, kill_after_s (>= 0) is a fraction
 * instead: the child is killed that fraction of half the time it took to its
 * first new checkpoint after that checkpoint lands -- well before the end
 * however fast or slow this machine is today (a cold reference run can take
 * three times a warm one). Returns the exit status or -signal. */
static int run_child(const char *dir, double kill_after_s, bool after_progress) {
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = 0;
    char *before = after_progress ? tc_latest(dir) : NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(exe, exe, "--train-child", dir, camvid, "train.max_iters=18", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    double t_start = segc_now_s();
    if (kill_after_s > 0 || after_progress) {
        bool exited = false;
        while (after_progress && !exited) {   /* poll until a new checkpoint lands */
            char *now = tc_latest(dir);
            bool moved = now && (!before || strcmp(now, before) != 0);
            free(now);
            if (moved) break;
            exited = waitpid(pid, &status, WNOHANG) == pid;
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
        free(before);
        if (exited) return WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
        if (after_progress) kill_after_s *= 0.5 * (segc_now_s() - t_start);
        struct timespec ts = {(time_t)kill_after_s, (long)((kill_after_s - (double)(time_t)kill_after_s) * 1e9)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
    }
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* iteration named by DIR/checkpoints/latest ("iter_0000012" -> 12), 0 when none */
static long latest_iter(const char *dir) {
    char *l = tc_latest(dir);
    long it = l && !strncmp(l, "iter_", 5) ? atol(l + 5) : 0;
    free(l);
    return it;
}

/* Where the last child run in DIR started: N from its "resumed ... at
 * iteration N" line, 0 when it started fresh, -1 when its log is missing. */
static long child_start_iter(const char *dir) {
    char p[1100];
    snprintf(p, sizeof p, "%s.log", dir);
    char *log = read_text(p);
    if (!log) return -1;
    const char *r = strstr(log, "resumed "), *at = r ? strstr(r, " at iteration ") : NULL;
    long it = at ? atol(at + strlen(" at iteration ")) : 0;
    free(log);
    return it;
}

static void test_sigkill_resume_exact(void **state) {
    NEED_DATA();
    char ref[512], dir[512], p[900], q[900];
    run_dir(ref, sizeof ref, "kill_ref");
    run_dir(dir, sizeof dir, "kill_run");
    double t0 = segc_now_s();
    assert_int_equal(run_child(ref, 0, false), 0);
    double t_ref = segc_now_s() - t0;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    int killed = 0;
    /* round 0 at a random moment of the whole run; later rounds at a random
     * moment within the checkpoint interval after the resumed run's next checkpoint */
    /* (rounds 3..5 only while no run has been killed yet: right after a checkpoint) */
    int round = 0;
    for (; round < 3 || (killed == 0 && round < 6); round++) {
        double u = round < 3 ? rand() / (double)RAND_MAX : 0;
        double at = round == 0 ? t_ref * (0.05 + 0.9 * u) : u;
        if (killed == 0 && latest_iter(dir) >= 18) {   /* finished before any kill: start over, so one can land */
            char cmd[1200];
            snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", dir, dir);
            assert_int_equal(system(cmd), 0);
        }
        long ckpt = latest_iter(dir);   /* where this run must resume */
        int rc = run_child(dir, at, round > 0);
        killed += rc == -SIGKILL;
        if (rc != -SIGKILL) assert_int_equal(rc, 0);
        /* a "resume" that silently restarted from iteration 0 would still end
         * bitwise equal (training is deterministic): check where it started */
        long started = child_start_iter(dir);
        if (ckpt > 0 && ckpt < 18 && started != ckpt)   /* (at 18 the run is complete: nothing to resume) */
            fail_msg("round %d: the checkpoint was at iteration %ld but the run started at %ld", round, ckpt, started);
        char *l = tc_latest(dir);
        printf("  kill round %d, %.3f %s (reference run %.3f s, seed %u): %s, resumed at %ld, latest %s", round, at,
               round ? "of the run-up to a checkpoint after it" : "s after start", t_ref, seed,
               rc == -SIGKILL ? "killed" : "had finished", started, l ? l : "none\n");
        free(l);
    }
    long ckpt = latest_iter(dir);
    assert_int_equal(run_child(dir, 0, false), 0);   /* resume to the end */
    printf("  %d of %d runs killed mid-way; the last run resumed at iteration %ld\n", killed, round, ckpt);
    /* the test is about resuming after SIGKILL: at least one run must have died
     * mid-way, and the final run must have resumed from a checkpoint, not from 0 */
    if (killed == 0) fail_msg("no run was killed mid-way (every child finished first): nothing was resumed");
    if (ckpt < 18) {
        assert_true(ckpt > 0);
        assert_int_equal(child_start_iter(dir), ckpt);
    }
    snprintf(p, sizeof p, "%s/checkpoints/iter_0000018.safetensors", ref);
    snprintf(q, sizeof q, "%s/checkpoints/iter_0000018.safetensors", dir);
    tc_assert_same_tensors(p, q);
    snprintf(p, sizeof p, "%s/checkpoints/iter_0000018.state.safetensors", ref);
    snprintf(q, sizeof q, "%s/checkpoints/iter_0000018.state.safetensors", dir);
    tc_assert_same_tensors(p, q);
    snprintf(p, sizeof p, "%s/checkpoints", dir);
    assert_int_equal(count_files(p, ".tmp."), 0);
    /* metrics.jsonl of the resumed run: each record once, in order */
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    char *m = read_text(p);
    assert_non_null(m);
    long last = 0;
    int n = 0;
    for (const char *s = m; (s = strstr(s, "\"loss\":")); s++) {
        const char *it = s;
        while (it > m && strncmp(it, "\"iter\":", 7)) it--;
        long v = atol(it + 7);
        assert_true(v > last);
        last = v;
        n++;
    }
    assert_int_equal(n, 6);
    free(m);
}

/* UNet2D on brats-mini: stopped after 1, 2 and 3 iterations, each time
 * resumed, then run to the end: bitwise the weights and optimizer state of an
 * uninterrupted run. The nnU-Net pipeline's crops and augmentations and the
 * SGD momentum all pass through the checkpoints. */
static void test_unet2d_resume_exact(void **state) {
    const char *ov[] = {"model.type=unet2d", "model.variant=", "model.filters=[4, 8, 16]", "model.deep_supr_num=1",
                        "data.dataset=brats", "data.train_split=train", "data.val_split=", "data.pipeline=nnunet",
                        "data.crop_size=[32, 32]", "data.batch_size=2", "data.num_workers=1", "optimizer.type=sgd",
                        "optimizer.lr=0.01", "optimizer.momentum=0.99", "optimizer.nesterov=true",
                        "optimizer.paramwise.custom_keys={}", "schedule.warmup_iters=0", "schedule.power=0.9",
                        "train.checkpoint_interval=2", "train.log_interval=1", "train.threads=2"};
    tc_resume_exact(ov, (int)(sizeof ov / sizeof *ov), "brats-mini", 3, 6);
}

static void test_nan_loss_keeps_checkpoint(void **state) {
    NEED_DATA();
    char dir[512], err[1024], p[700];
    run_dir(dir, sizeof dir, "nan");
    const char *ov[] = {"train.debug_nan_at=5"};
    assert_int_equal(train_tiny(dir, ov, 1, false, err, sizeof err), SEGC_TRAIN_NONFINITE);
    if (!strstr(err, "NaN") || !strstr(err, "iteration 5") || !strstr(err, "iteration 3")) fail_msg("message: %s", err);
    snprintf(p, sizeof p, "%s/checkpoints/latest", dir);
    char *l = read_text(p);
    assert_non_null(l);
    assert_string_equal(l, "iter_0000003\n");
    free(l);
    /* the kept checkpoint is intact and resumable */
    char w[700], s[700], ck[700];
    snprintf(ck, sizeof ck, "%s/checkpoints", dir);
    assert_true(segc_checkpoint_latest(ck, w, sizeof w, s, sizeof s, err, sizeof err));
    segc_config c;
    tiny_config(&c, dir, NULL, 0);
    segc_model *m = segc_config_model(&c, 11, err, sizeof err);
    segc_train_state st;
    if (!segc_checkpoint_load(w, s, &m->params, NULL, &st, NULL, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(st.iter, 3);
    segc_model_free(m);
    /* resuming without the fault finishes */
    if (train_tiny(dir, NULL, 0, true, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
}

static void test_time_limit_and_bf16(void **state) {
    NEED_DATA();
    char dir[512], err[1024], p[700];
    run_dir(dir, sizeof dir, "timed");
    const char *ov[] = {"train.max_time_min=0.00001", "train.dtype=bf16"};
    if (train_tiny(dir, ov, 2, false, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/checkpoints/latest", dir);
    char *l = read_text(p);
    assert_non_null(l);
    assert_string_equal(l, "iter_0000001\n");   /* stopped after the first iteration, checkpointed */
    free(l);
    snprintf(p, sizeof p, "%s/report.html", dir);
    assert_true(exists(p));
}

/* full disk: RLIMIT_FSIZE makes write() fail with EFBIG part-way through a file */
static void test_full_disk_keeps_latest(void **state) {
    NEED_DATA();
    char dir[512], err[1024], p[700];
    run_dir(dir, sizeof dir, "fulldisk");
    mkdir(dir, 0755);
    segc_config c;
    tiny_config(&c, dir, NULL, 0);
    segc_model *m = segc_config_model(&c, 11, err, sizeof err);
    assert_non_null(m);
    segc_model_init(m, 1);
    segc_custom_key keys[SEGC_CFG_MAX_CUSTOM_KEYS];
    segc_optim_cfg oc = segc_config_optim(&c, keys);
    segc_optimizer *opt = segc_optimizer_new(&m->params, &oc, err, sizeof err);
    assert_non_null(opt);
    segc_train_state st = {.iter = 3, .best_metric = -1, .best_iter = -1};
    if (!segc_checkpoint_save(dir, &m->params, opt, &st, "name: x\n", 3, err, sizeof err)) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/iter_0000003.safetensors", dir);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    size_t weights_size = (size_t)sb.st_size;

    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    /* 1: nothing fits; 2: the weights fit, the state does not */
    const rlim_t limits[2] = {4096, (rlim_t)weights_size + 1024};
    for (int k = 0; k < 2; k++) {
        lim = old;
        lim.rlim_cur = limits[k];
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
        segc_init_const(m->params.t[0], 0.5f);   /* different weights */
        st.iter = 6 + k;
        bool ok = segc_checkpoint_save(dir, &m->params, opt, &st, "name: x\n", 3, err, sizeof err);
        setrlimit(RLIMIT_FSIZE, &old);
        assert_false(ok);
        if (!strstr(err, "previous checkpoint kept")) fail_msg("message: %s", err);
        snprintf(p, sizeof p, "%s/latest", dir);
        char *l = read_text(p);
        assert_string_equal(l, "iter_0000003\n");
        free(l);
        snprintf(p, sizeof p, "%s/iter_%07d.safetensors", dir, 6 + k);
        assert_false(exists(p));
        snprintf(p, sizeof p, "%s/iter_%07d.state.safetensors", dir, 6 + k);
        assert_false(exists(p));
        assert_int_equal(count_files(dir, ".tmp."), 0);
        lim.rlim_cur = 4096;
        setrlimit(RLIMIT_FSIZE, &lim);
        ok = segc_checkpoint_save_best(dir, &m->params, 6, 0.5, NULL, err, sizeof err);
        setrlimit(RLIMIT_FSIZE, &old);
        assert_false(ok);
    }
    signal(SIGXFSZ, prev);
    /* the latest checkpoint still loads, with its own weights */
    char w[700], s[700];
    assert_true(segc_checkpoint_latest(dir, w, sizeof w, s, sizeof s, err, sizeof err));
    segc_train_state back;
    if (!segc_checkpoint_load(w, s, &m->params, opt, &back, NULL, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(back.iter, 3);
    assert_true(segc_f32(m->params.t[0])[0] != 0.5f);
    segc_optimizer_free(opt);
    segc_model_free(m);
}

static void test_bad_checkpoints(void **state) {
    NEED_DATA();
    char dir[512], err[1024], p[700], w[700], s[700];
    run_dir(dir, sizeof dir, "badckpt");
    mkdir(dir, 0755);
    segc_config c;
    tiny_config(&c, dir, NULL, 0);
    segc_model *m = segc_config_model(&c, 11, err, sizeof err);
    segc_model_init(m, 3);
    segc_train_state st = {.iter = 5, .best_metric = -1, .best_iter = -1};
    if (!segc_checkpoint_save(dir, &m->params, NULL, &st, NULL, 2, err, sizeof err)) fail_msg("%s", err);
    assert_true(segc_checkpoint_latest(dir, w, sizeof w, s, sizeof s, err, sizeof err));
    /* another model: refused, naming the first mismatching tensor; the model is unchanged */
    const char *wider[] = {"model.hidden=[16,16,16,16]"};
    segc_config c2;
    tiny_config(&c2, dir, wider, 1);
    segc_model *m2 = segc_config_model(&c2, 11, err, sizeof err);
    float before = segc_f32(m2->params.t[1])[0];
    assert_false(segc_checkpoint_load(w, NULL, &m2->params, NULL, NULL, NULL, err, sizeof err));
    if (!strstr(err, "segformer.encoder.patch_embeddings.0.proj.weight") || !strstr(err, "[16, 3, 7, 7]"))
        fail_msg("message: %s", err);
    assert_true(segc_f32(m2->params.t[1])[0] == before);
    segc_model_free(m2);
    /* another number of classes */
    segc_model *m3 = segc_config_model(&c, 5, err, sizeof err);
    assert_false(segc_checkpoint_load(w, s, &m3->params, NULL, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "decode_head.classifier"));
    segc_model_free(m3);
    /* unreadable: missing, garbage, truncated */
    snprintf(p, sizeof p, "%s/missing.safetensors", dir);
    assert_false(segc_checkpoint_load(p, NULL, &m->params, NULL, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "missing.safetensors"));
    snprintf(p, sizeof p, "%s/garbage.safetensors", dir);
    FILE *f = fopen(p, "wb");
    fputs("this is not a safetensors file at all", f);
    fclose(f);
    assert_false(segc_checkpoint_load(p, NULL, &m->params, NULL, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "garbage.safetensors"));
    assert_false(segc_checkpoint_load(w, p, &m->params, NULL, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "garbage.safetensors"));
    /* a state that belongs to other weights */
    segc_model_init(m, 4);
    st.iter = 6;
    if (!segc_checkpoint_save(dir, &m->params, NULL, &st, NULL, 2, err, sizeof err)) fail_msg("%s", err);
    snprintf(p, sizeof p, "%s/iter_0000006.state.safetensors", dir);
    assert_false(segc_checkpoint_load(w, p, &m->params, NULL, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "does not belong"));
    /* `latest` naming missing files, or garbage */
    snprintf(p, sizeof p, "%s/latest", dir);
    f = fopen(p, "w");
    fputs("iter_0000099\n", f);
    fclose(f);
    assert_false(segc_checkpoint_latest(dir, w, sizeof w, s, sizeof s, err, sizeof err));
    assert_non_null(strstr(err, "iter_0000099"));
    f = fopen(p, "w");
    fputs("rubbish\n", f);
    fclose(f);
    assert_false(segc_checkpoint_latest(dir, w, sizeof w, s, sizeof s, err, sizeof err));
    assert_non_null(strstr(err, "does not name a checkpoint"));
    /* no checkpoint at all: false with an empty message */
    snprintf(p, sizeof p, "%s/empty", dir);
    mkdir(p, 0755);
    assert_false(segc_checkpoint_latest(p, w, sizeof w, s, sizeof s, err, sizeof err));
    assert_string_equal(err, "");
    segc_model_free(m);
}

static void test_training_errors(void **state) {
    NEED_DATA();
    char dir[512], err[1024];
    /* missing dataset root */
    run_dir(dir, sizeof dir, "noroot");
    segc_config c;
    tiny_config(&c, dir, NULL, 0);
    snprintf(c.data.root, sizeof c.data.root, "/nonexistent/camvid_root");
    segc_train_opts o = {.quiet = true};
    assert_int_equal(segc_train(&c, &o, err, sizeof err), SEGC_TRAIN_FAILED);
    if (!strstr(err, "data.root") || !strstr(err, "/nonexistent/camvid_root")) fail_msg("message: %s", err);
    /* a detection-only pipeline for a segmentation family */
    run_dir(dir, sizeof dir, "resizepipe");
    tiny_config(&c, dir, NULL, 0);
    snprintf(c.data.pipeline, sizeof c.data.pipeline, "resize");
    assert_int_equal(segc_train(&c, &o, err, sizeof err), SEGC_TRAIN_FAILED);
    if (!strstr(err, "data.pipeline") || !strstr(err, "detection")) fail_msg("message: %s", err);
    /* resuming a run with a different model: the checkpoint is refused */
    run_dir(dir, sizeof dir, "othermodel");
    const char *short_run[] = {"train.max_iters=3", "schedule.warmup_iters=1"};
    if (train_tiny(dir, short_run, 2, false, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    const char *other[] = {"train.max_iters=6", "schedule.warmup_iters=1", "model.decoder_hidden=8"};
    assert_int_equal(train_tiny(dir, other, 3, true, err, sizeof err), SEGC_TRAIN_FAILED);
    if (!strstr(err, "decode_head.linear_c.0.proj.weight")) fail_msg("message: %s", err);
    /* a failing checkpoint write stops training with the previous one kept */
    const char *more[] = {"train.max_iters=6", "schedule.warmup_iters=1"};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 16384;
    setrlimit(RLIMIT_FSIZE, &lim);
    segc_train_status st = train_tiny(dir, more, 2, true, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    assert_int_equal(st, SEGC_TRAIN_FAILED);
    if (!strstr(err, "kept")) fail_msg("message: %s", err);
    char p[700];
    snprintf(p, sizeof p, "%s/checkpoints/latest", dir);
    char *l = read_text(p);
    assert_string_equal(l, "iter_0000003\n");
    free(l);
}

/* child mode: train the tiny config in DIR, resuming when possible */
static int train_child(const char *dir, const char *root, const char *const *extra, int n_extra) {
    snprintf(camvid, sizeof camvid, "%s", root);
    segc_config c;
    tiny_config(&c, dir, extra, n_extra);
    /* progress goes to DIR.log, so the parent can read where this run started
     * ("resumed ... at iteration N"); notes are flushed line by line, so a
     * SIGKILL loses none of them */
    char log[1100];
    snprintf(log, sizeof log, "%s.log", dir);
    FILE *lf = fopen(log, "w");
    segc_train_opts o = {.resume = true, .quiet = lf == NULL, .progress = lf};
    char err[1024];
    segc_train_status st = segc_train(&c, &o, err, sizeof err);
    if (st != SEGC_TRAIN_DONE) fprintf(stderr, "child: %s\n", err);
    if (lf) fclose(lf);
    return (int)st;
}

int main(int argc, char **argv) {
    /* poisoned step arenas (NaN fill): a kernel reading memory it never wrote
     * cannot hide behind identical leftovers of the previous step; set before
     * any context exists (and inherited by child processes) */
    setenv("SEGC_ARENA_POISON", "1", 1);
    if (argc >= 4 && !strcmp(argv[1], "--train-child"))
        return train_child(argv[2], argv[3], (const char *const *)argv + 4, argc - 4);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic_and_outputs), cmocka_unit_test(test_sigkill_resume_exact),
        cmocka_unit_test(test_nan_loss_keeps_checkpoint), cmocka_unit_test(test_time_limit_and_bf16),
        cmocka_unit_test(test_full_disk_keeps_latest),    cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_training_errors),           cmocka_unit_test(test_unet2d_resume_exact),
    };
    return cmocka_run_group_tests_name("train", tests, setup, teardown);
}
