/* Data-parallel training over Open MPI (segc/dist.h), driving
 * `mpirun -np 2 --oversubscribe build/segc train ...` on a tiny SegFormer over
 * a generated folder dataset (64x64 images, every pixel labelled, crops that
 * never pad, so each rank's mean loss has the same denominator and the mean
 * of the ranks' gradients is the global batch's):
 *  - np 2 == np 1 with the same global batch within fp32 rounding (SGD, SyncBN
 *    in the head, dropout and drop-path active), two np 2 runs bitwise equal
 *  - SyncBatchNorm (the sum hook) against BatchNorm on the concatenated batch,
 *    two "ranks" as threads, forward, backward and running statistics
 *  - distributed `segc eval` prints exactly the single-process result
 *  - SIGKILL of one rank: the job ends within 60 s, non-zero; --resume with 2
 *    ranks is bitwise the uninterrupted run, --resume with 1 rank runs on
 *  - bad input: a batch the world does not divide, ranks with different
 *    configurations -> one error, non-zero exit */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/harness.h"
#include "common/train_check.h"
#include "segc/image_io.h"
#include "segc/ops.h"
#include "segc/safetensors.h"
#include "segc/task.h"

static int count_lines_with(const char *path, const char *needle);
static char segc_bin[1024], root[256], cfg[300], data[300];

static void write_png(const char *path, int h, int w, int c, const uint8_t *px) {
    segc_image im = {h, w, c, SEGC_U8, (void *)px};
    char err[256];
    if (!segc_png_write(path, &im, NULL, 0, err, sizeof err)) fail_msg("%s", err);
}

/* DIR/{train,val}/{images,masks}, classes.txt: 4 classes, every pixel labelled */
static void make_dataset(const char *dir) {
    char p[600];
    uint8_t img[64 * 64 * 3], lab[64 * 64];
    uint32_t s = 12345;
    const char *splits[2] = {"train", "val"};
    for (int sp = 0; sp < 2; sp++) {
        snprintf(p, sizeof p, "%s/%s", dir, splits[sp]);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/%s/images", dir, splits[sp]);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/%s/masks", dir, splits[sp]);
        mkdir(p, 0755);
        for (int k = 0; k < (sp ? 6 : 12); k++) {
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++) {
                    int cls = ((x + 7 * k) / 16 + (y + 3 * k) / 21) % 4;
                    lab[y * 64 + x] = (uint8_t)cls;
                    for (int ch = 0; ch < 3; ch++) {
                        s = s * 1664525u + 1013904223u;
                        img[(y * 64 + x) * 3 + ch] = (uint8_t)(40 * cls + 30 * ch + (s >> 27));
                    }
                }
            snprintf(p, sizeof p, "%s/%s/images/im%02d.png", dir, splits[sp], k);
            write_png(p, 64, 64, 3, img);
            snprintf(p, sizeof p, "%s/%s/masks/im%02d.png", dir, splits[sp], k);
            write_png(p, 64, 64, 1, lab);
        }
    }
    snprintf(p, sizeof p, "%s/classes.txt", dir);
    FILE *f = fopen(p, "w");
    fputs("a\nb\nc\nd\n", f);
    fclose(f);
}

static void write_config(const char *path, const char *data_root) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "name: tiny\nmodel:\n  type: segformer\n  hidden: [8, 16, 16, 16]\n  depths: [1, 1, 1, 1]\n"
               "  heads: [1, 1, 1, 1]\n  decoder_hidden: 16\n  drop_path_rate: 0.1\n  classifier_dropout: 0.1\n"
               "data:\n  dataset: folder\n  root: %s\n  train_split: train\n  val_split: val\n  batch_size: 4\n"
               "  num_workers: 1\n  scale: [64, 64]\n  ratio_range: [1.0, 1.5]\n  crop_size: [32, 32]\n"
               "  cat_max_ratio: 1.0\noptimizer:\n  type: sgd\n  lr: 0.02\n  momentum: 0.9\n  weight_decay: 0.0001\n"
               "  max_grad_norm: 0\nschedule:\n  warmup_iters: 2\n  policy: constant\n"
               "train:\n  max_iters: 20\n  val_interval: 10\n  checkpoint_interval: 5\n  log_interval: 5\n"
               "  keep_last: 50\n  threads: 1\n  report_samples: 1\ndist:\n  sync_bn: true\n  timeout_s: 30\n",
            data_root);
    fclose(f);
}

/* runs a shell command, output to LOG; the exit status (-1: killed) */
static int sh(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(const char *log, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && n < (int)sizeof cmd - 40);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " >%s 2>&1", log);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define MPIRUN "mpirun --oversubscribe --allow-run-as-root"

static void dump(const char *log) {
    char *t = NULL;
    FILE *f = fopen(log, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) printf("  | %s", line);
    fclose(f);
    free(t);
}

static void train(int np, const char *dir, const char *extra) {
    char log[400];
    snprintf(log, sizeof log, "%s.log", dir);
    int rc = np > 1 ? sh(log, MPIRUN " -np %d %s train %s train.work_dir=%s --force %s", np, segc_bin, cfg, dir, extra)
                    : sh(log, "%s train %s train.work_dir=%s --force %s", segc_bin, cfg, dir, extra);
    if (rc != 0) {
        dump(log);
        fail_msg("np %d training into %s exited with %d", np, dir, rc);
    }
}

/* max over tensors of max|a - b| / max(max|a|, 1e-2) (f32 tensors) */
static double max_rel_diff(const char *a, const char *b) {
    char err[512];
    segc_st_file *fa = segc_st_open(a, err, sizeof err), *fb = fa ? segc_st_open(b, err, sizeof err) : NULL;
    if (!fa || !fb) fail_msg("%s", err);
    double worst = 0;
    for (int i = 0; i < segc_st_count(fa); i++) {
        const segc_st_entry *ea = segc_st_at(fa, i), *eb = segc_st_get(fb, ea->name);
        if (!eb || ea->nbytes != eb->nbytes) fail_msg("%s: %s missing or resized in %s", a, ea->name, b);
        if (ea->dtype != SEGC_F32) continue;
        const float *x = (const float *)ea->data, *y = (const float *)eb->data;
        size_t n = ea->nbytes / 4;
        /* the tensor's scale, floored at 1e-2: a bias in front of a BatchNorm has a gradient that is zero
         * in exact arithmetic and stays at rounding noise (~1e-8), which would read as a 100% difference */
        double mx = 1e-2, md = 0;
        for (size_t k = 0; k < n; k++) {
            mx = fmax(mx, fabs(x[k]));
            md = fmax(md, fabs((double)x[k] - y[k]));
        }
        if (md / mx > worst) worst = md / mx;
    }
    segc_st_close(fa);
    segc_st_close(fb);
    return worst;
}

static void ckpt(char *buf, size_t n, const char *dir, int iter, bool state) {
    snprintf(buf, n, "%s/checkpoints/iter_%07d.%ssafetensors", dir, iter, state ? "state." : "");
}

static void test_np2_equals_np1(void **state) {
    (void)state;
    char a[300], b[300], c[300], pa[400], pb[400], pc[400];
    snprintf(a, sizeof a, "%s/np1", root);
    snprintf(b, sizeof b, "%s/np2", root);
    snprintf(c, sizeof c, "%s/np2again", root);
    double t0 = segc_now_s();
    train(1, a, "");
    double t1 = segc_now_s();
    train(2, b, "");
    double t2 = segc_now_s();
    train(2, c, "");
    ckpt(pa, sizeof pa, a, 20, false);
    ckpt(pb, sizeof pb, b, 20, false);
    ckpt(pc, sizeof pc, c, 20, false);
    tc_assert_same_tensors(pb, pc);   /* deterministic: same world, seed, threads -> same bits */
    ckpt(pb, sizeof pb, b, 20, true);
    ckpt(pc, sizeof pc, c, 20, true);
    tc_assert_same_tensors(pb, pc);
    /* the all-reduce after backward, and overlapped in ~4 KiB buckets (dozens in flight): the same bits */
    const char *variants[2] = {"dist.overlap=false", "dist.bucket_mb=0.004"};
    for (int v = 0; v < 2; v++) {
        char dv[300], pv[400];
        snprintf(dv, sizeof dv, "%s/np2_variant%d", root, v);
        train(2, dv, variants[v]);
        ckpt(pb, sizeof pb, b, 20, true);
        ckpt(pv, sizeof pv, dv, 20, true);
        tc_assert_same_tensors(pb, pv);
        ckpt(pb, sizeof pb, b, 20, false);
        ckpt(pv, sizeof pv, dv, 20, false);
        tc_assert_same_tensors(pb, pv);
    }
    ckpt(pb, sizeof pb, b, 20, false);
    double d = max_rel_diff(pa, pb), d5;
    ckpt(pa, sizeof pa, a, 5, false);
    ckpt(pb, sizeof pb, b, 5, false);
    d5 = max_rel_diff(pa, pb);
    printf("np2 vs np1 after 20 SGD iterations (SyncBN head, dropout, drop-path): max relative weight difference %.3g "
           "(after 5: %.3g); np1 %.1f s, np2 %.1f s\n", d, d5, t1 - t0, t2 - t1);
    if (!(d < 1e-4)) fail_msg("np 2 differs from np 1 by %g (relative), more than fp32 rounding", d);
}

/* ---- SyncBatchNorm: two ranks as threads meeting in the sum hook ---- */
typedef struct {
    pthread_barrier_t bar;
    double *slot[2];
    int64_t n;
} meet;

typedef struct {
    meet *m;
    int rank;
} hook_user;

static void thread_sum(void *user, double *v, int64_t n) {
    hook_user *u = user;
    u->m->slot[u->rank] = v;
    u->m->n = n;
    pthread_barrier_wait(&u->m->bar);
    double *mine = malloc((size_t)n * sizeof *mine);
    for (int64_t i = 0; i < n; i++) mine[i] = u->m->slot[0][i] + u->m->slot[1][i];   /* rank order */
    pthread_barrier_wait(&u->m->bar);
    memcpy(v, mine, (size_t)n * sizeof *v);
    free(mine);
    pthread_barrier_wait(&u->m->bar);
}

enum { BN_N = 4, BN_C = 3, BN_S = 50 };
static float bn_x[BN_N * BN_C * BN_S], bn_dy[BN_N * BN_C * BN_S];

typedef struct {
    meet *m;
    int rank;              /* -1: one process over the whole batch */
    float y[BN_N * BN_C * BN_S], dx[BN_N * BN_C * BN_S], dg[BN_C], db[BN_C], rm[BN_C], rv[BN_C];
} bn_run;

static void *bn_thread(void *arg) {
    bn_run *r = arg;
    segc_ctx *ctx = segc_ctx_new(1);
    hook_user u = {r->m, r->rank};
    int64_t n = r->rank < 0 ? BN_N : BN_N / 2, off = r->rank < 0 ? 0 : r->rank * (BN_N / 2) * BN_C * BN_S;
    if (r->rank >= 0) {
        ctx->sum_hook = thread_sum;
        ctx->sum_hook_user = &u;
    }
    segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 3, (int64_t[]){n, BN_C, BN_S}, bn_x + off);
    x->requires_grad = true;
    segc_tensor *g = segc_tensor_heap(SEGC_F32, 1, (int64_t[]){BN_C}), *b = segc_tensor_heap(SEGC_F32, 1, (int64_t[]){BN_C});
    segc_tensor *rm = segc_tensor_heap(SEGC_F32, 1, (int64_t[]){BN_C}), *rv = segc_tensor_heap(SEGC_F32, 1, (int64_t[]){BN_C});
    g->grad = calloc(BN_C, sizeof(float));
    b->grad = calloc(BN_C, sizeof(float));
    for (int c = 0; c < BN_C; c++) {
        segc_f32(g)[c] = 1.0f + 0.25f * c, segc_f32(b)[c] = 0.1f * c, segc_f32(rm)[c] = 0, segc_f32(rv)[c] = 1;
    }
    g->requires_grad = b->requires_grad = g->is_param = b->is_param = true;
    segc_tensor *y = segc_batch_norm(ctx, x, g, b, rm, rv, 0.1f, 1e-5f);
    assert_non_null(y);
    int64_t ny = segc_numel(y);
    memcpy(r->y + off, segc_f32(y), (size_t)ny * sizeof(float));
    assert_true(segc_backward_from(ctx, y, bn_dy + off));
    memcpy(r->dx + off, x->grad, (size_t)ny * sizeof(float));
    memcpy(r->dg, g->grad, sizeof r->dg);
    memcpy(r->db, b->grad, sizeof r->db);
    memcpy(r->rm, segc_f32(rm), sizeof r->rm);
    memcpy(r->rv, segc_f32(rv), sizeof r->rv);
    free(g->grad), free(b->grad);
    g->grad = b->grad = NULL;
    segc_tensor_free(g), segc_tensor_free(b), segc_tensor_free(rm), segc_tensor_free(rv);
    segc_ctx_free(ctx);
    return NULL;
}

static void close_to(const char *what, const float *a, const float *b, int n, double tol) {
    for (int i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > tol * (1 + fabs((double)a[i])))
            fail_msg("SyncBN %s[%d]: %.8g (2 ranks) vs %.8g (one batch)", what, i, (double)b[i], (double)a[i]);
}

static void test_syncbn_parity(void **state) {
    (void)state;
    uint32_t s = 7;
    for (int i = 0; i < BN_N * BN_C * BN_S; i++) {
        s = s * 1664525u + 1013904223u;
        bn_x[i] = 3.0f + (float)(s >> 8) / 16777216.0f * (1 + i / (BN_C * BN_S));   /* samples differ in spread */
        s = s * 1664525u + 1013904223u;
        bn_dy[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    static bn_run one, two[2];
    one.rank = -1;
    bn_thread(&one);
    meet m;
    pthread_barrier_init(&m.bar, NULL, 2);
    static bn_run merged;
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        two[r].m = &m;
        two[r].rank = r;
        pthread_create(&th[r], NULL, bn_thread, &two[r]);
    }
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&m.bar);
    const int half = BN_N / 2 * BN_C * BN_S;
    memcpy(merged.y, two[0].y, half * sizeof(float));
    memcpy(merged.y + half, two[1].y + half, half * sizeof(float));
    memcpy(merged.dx, two[0].dx, half * sizeof(float));
    memcpy(merged.dx + half, two[1].dx + half, half * sizeof(float));
    for (int c = 0; c < BN_C; c++) {
        merged.dg[c] = two[0].dg[c] + two[1].dg[c];   /* the gradient all-reduce's sum */
        merged.db[c] = two[0].db[c] + two[1].db[c];
    }
    close_to("y", one.y, merged.y, 2 * half, 1e-5);
    close_to("dx", one.dx, merged.dx, 2 * half, 1e-4);
    close_to("dgamma", one.dg, merged.dg, BN_C, 1e-5);
    close_to("dbeta", one.db, merged.db, BN_C, 1e-5);
    for (int r = 0; r < 2; r++) {   /* running statistics: the global batch's, the same on both ranks */
        close_to("running_mean", one.rm, two[r].rm, BN_C, 1e-6);
        close_to("running_var", one.rv, two[r].rv, BN_C, 1e-6);
    }
    assert_memory_equal(two[0].rm, two[1].rm, sizeof two[0].rm);
    assert_memory_equal(two[0].rv, two[1].rv, sizeof two[0].rv);
}

/* ---- distributed evaluation ---- */
static char *last_line(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char line[65536], *last = NULL;
    while (fgets(line, sizeof line, f))
        if (line[0] == '{') { free(last); last = strdup(line); }
    fclose(f);
    return last;
}

static void test_dist_eval_equals_single(void **state) {
    (void)state;
    char dir[300], ck[400], l1[400], l2[400];
    snprintf(dir, sizeof dir, "%s/np2", root);
    ckpt(ck, sizeof ck, dir, 20, false);
    if (access(ck, F_OK) != 0) train(2, dir, "");
    snprintf(l1, sizeof l1, "%s/eval1.out", root);
    snprintf(l2, sizeof l2, "%s/eval2.out", root);
    int r1 = sh(l1, "%s eval %s --checkpoint %s --no-report", segc_bin, cfg, ck);
    int r2 = sh(l2, MPIRUN " -np 2 %s eval %s --checkpoint %s --no-report", segc_bin, cfg, ck);
    if (r1 || r2) { dump(l1); dump(l2); fail_msg("segc eval exited with %d (1 process) and %d (2 processes)", r1, r2); }
    char *a = last_line(l1), *b = last_line(l2);
    if (!a || !b) { dump(l1); dump(l2); fail_msg("segc eval printed no JSON result"); }
    if (strcmp(a, b)) fail_msg("distributed eval differs:\n 1: %s 2: %s", a, b);
    free(a);
    free(b);
}

/* ---- SIGKILL of one rank, then resume ---- */
static long latest_iter(const char *dir) {
    char *l = tc_latest(dir);
    long it = l && !strncmp(l, "iter_", 5) ? atol(l + 5) : -1;
    free(l);
    return it;
}

/* pid of the process with OMPI_COMM_WORLD_RANK=rank among mpirun's children (0: none) */
static pid_t rank_pid(pid_t mpirun, int rank) {
    DIR *d = opendir("/proc");
    pid_t found = 0;
    char want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        pid_t p = (pid_t)atoi(e->d_name);
        if (p <= 0) continue;
        char path[64], buf[8192];
        snprintf(path, sizeof path, "/proc/%d/stat", p);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        int ppid = 0;
        char comm[256];
        if (fscanf(f, "%*d (%255[^)]) %*c %d", comm, &ppid) != 2) ppid = 0;
        fclose(f);
        if (ppid != mpirun) continue;
        snprintf(path, sizeof path, "/proc/%d/environ", p);
        f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i += strlen(buf + i) + 1) {
            buf[n] = 0;
            if (!strcmp(buf + i, want)) found = p;
        }
    }
    if (d) closedir(d);
    return found;
}

/* mpirun -np 2 segc train (endless, a checkpoint every 2 iterations) in the background */
static pid_t start_job(const char *dir, const char *log, const char *extra) {
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(log, "w", stdout)) _exit(126);
        dup2(fileno(stdout), 2);
        char wd[400];
        snprintf(wd, sizeof wd, "train.work_dir=%s", dir);
        execlp("mpirun", "mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "2", segc_bin, "train", cfg, wd,
               "train.max_iters=100000", "train.checkpoint_interval=2", "--force", extra, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void test_kill_one_rank_then_resume(void **state) {
    (void)state;
    char dir[300], ref[300], one[300], log[400], a[400], b[400];
    snprintf(dir, sizeof dir, "%s/killed", root);
    snprintf(ref, sizeof ref, "%s/uninterrupted", root);
    snprintf(one, sizeof one, "%s/killed_np1", root);
    snprintf(log, sizeof log, "%s.log", dir);
    pid_t pid = start_job(dir, log, "dist.timeout_s=30");
    double t0 = segc_now_s();
    while (latest_iter(dir) < 4 && segc_now_s() - t0 < 60) usleep(20000);
    if (latest_iter(dir) < 4) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); dump(log); fail_msg("no checkpoint after 60 s"); }
    pid_t victim = rank_pid(pid, 1);
    if (!victim) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); fail_msg("rank 1 not found among mpirun's children"); }
    pid_t survivor = rank_pid(pid, 0);
    double tk = segc_now_s();
    kill(victim, SIGKILL);
    int st = 0;
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && segc_now_s() - tk < 60) usleep(20000);
    double took = segc_now_s() - tk;
    if (w == 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); fail_msg("the job still runs 60 s after rank 1 was killed"); }
    while (survivor && kill(survivor, 0) == 0 && segc_now_s() - tk < 60) usleep(20000);
    double gone = segc_now_s() - tk;
    bool left = survivor && kill(survivor, 0) == 0;
    printf("rank 1 SIGKILLed at checkpoint %ld: mpirun ended after %.1f s with %s %d; rank 0 %s after %.1f s\n",
           latest_iter(dir), took, WIFEXITED(st) ? "status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
           left ? "still alive" : "gone", gone);
    if (left) { kill(survivor, SIGKILL); fail_msg("rank 0 survived its partner's death"); }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) fail_msg("the killed job exited with status 0");
    /* resume with 2 ranks up to iteration K: bitwise the uninterrupted run (constant LR: max_iters does not matter) */
    long k = latest_iter(dir) + 4;
    char extra[200];
    snprintf(extra, sizeof extra, "train.max_iters=%ld train.checkpoint_interval=2", k);
    train(2, ref, extra);
    char cp[1000];
    snprintf(cp, sizeof cp, "cp -r %s %s", dir, one);
    assert_int_equal(system(cp), 0);
    char lg[400];
    snprintf(lg, sizeof lg, "%s.resume.log", dir);
    int rc = sh(lg, MPIRUN " -np 2 %s train %s train.work_dir=%s --resume %s %s", segc_bin, cfg, dir, dir, extra);
    if (rc) { dump(lg); fail_msg("resume with 2 ranks exited with %d", rc); }
    ckpt(a, sizeof a, ref, (int)k, false);
    ckpt(b, sizeof b, dir, (int)k, false);
    tc_assert_same_tensors(a, b);
    ckpt(a, sizeof a, ref, (int)k, true);
    ckpt(b, sizeof b, dir, (int)k, true);
    tc_assert_same_tensors(a, b);
    /* the same checkpoint continued by one process: runs to K, close to the 2-rank result */
    rc = sh(lg, "%s train %s train.work_dir=%s --resume %s %s", segc_bin, cfg, one, one, extra);
    if (rc) { dump(lg); fail_msg("resume with 1 rank exited with %d", rc); }
    ckpt(a, sizeof a, ref, (int)k, false);
    ckpt(b, sizeof b, one, (int)k, false);
    double d = max_rel_diff(a, b);
    printf("2-rank checkpoint resumed by 1 process to iteration %ld: max relative weight difference %.3g\n", k, d);
    assert_true(d < 1e-4);
}


/* a rank that hangs (SIGSTOP): the other's collective times out (dist.timeout_s), the job ends naming
 * the waiting rank and its host, within the timeout plus a few seconds */
static void test_hung_rank_watchdog(void **state) {
    (void)state;
    char dir[300], log[400];
    snprintf(dir, sizeof dir, "%s/hung", root);
    snprintf(log, sizeof log, "%s.log", dir);
    pid_t pid = start_job(dir, log, "dist.timeout_s=5");
    double t0 = segc_now_s();
    while (latest_iter(dir) < 2 && segc_now_s() - t0 < 60) usleep(20000);
    pid_t victim = rank_pid(pid, 1), survivor = rank_pid(pid, 0);
    if (latest_iter(dir) < 2 || !victim) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); dump(log); fail_msg("job did not start"); }
    double ts = segc_now_s();
    kill(victim, SIGSTOP);
    int st = 0;
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && segc_now_s() - ts < 60) usleep(20000);
    double took = segc_now_s() - ts;
    if (w == 0) { kill(victim, SIGKILL); kill(pid, SIGKILL); waitpid(pid, NULL, 0); fail_msg("job still runs 60 s after rank 1 hung"); }
    while ((kill(survivor, 0) == 0 || kill(victim, 0) == 0) && segc_now_s() - ts < 60) usleep(20000);
    bool left = kill(survivor, 0) == 0 || kill(victim, 0) == 0;
    if (left) { kill(victim, SIGKILL); kill(survivor, SIGKILL); }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char want[400];
    snprintf(want, sizeof want, "segc: rank 0 on %s: ", host);
    int named = count_lines_with(log, want) + count_lines_with(log, "no answer from the other ranks");
    printf("rank 1 SIGSTOPped: job ended after %.1f s (dist.timeout_s=5), %s %d\n", took,
           WIFEXITED(st) ? "status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    if (left) fail_msg("a rank survived the watchdog");
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) fail_msg("the hung job exited with status 0");
    if (named < 2) { dump(log); fail_msg("no watchdog message naming rank 0 and %s", host); }
}


/* kill -USR1 <mpirun>: mpirun forwards it to every rank, they agree to stop after the same
 * iteration, rank 0 writes the checkpoint, exit 0; --resume continues */
static void test_graceful_stop(void **state) {
    (void)state;
    char dir[300], log[400];
    snprintf(dir, sizeof dir, "%s/stopped", root);
    snprintf(log, sizeof log, "%s.log", dir);
    pid_t pid = start_job(dir, log, "train.checkpoint_interval=1000");
    double t0 = segc_now_s();
    char mj[400];
    snprintf(mj, sizeof mj, "%s/metrics.jsonl", dir);
    while (count_lines_with(mj, "\"loss\"") < 2 && segc_now_s() - t0 < 60) usleep(20000);
    kill(pid, SIGUSR1);
    int st = 0;
    pid_t w = 0;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && segc_now_s() - t0 < 90) usleep(20000);
    if (w == 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); dump(log); fail_msg("job did not stop on SIGUSR1"); }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { dump(log); fail_msg("stopped job: status %d, expected 0", st); }
    long it = latest_iter(dir);
    printf("SIGUSR1 to mpirun: both ranks stopped at iteration %ld with a checkpoint\n", it);
    assert_true(it > 0);
    assert_int_equal(count_lines_with(log, "stopped at iteration"), 1);
}

/* segc_evaluator_serialize + merge_serialized == segc_evaluator_merge (what ranks exchange) */
static void test_evaluator_state_words(void **state) {
    (void)state;
    segc_eval_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.task = SEGC_TASK_SEGMENTATION;
    spec.num_classes = 5;
    spec.ignore_index = 255;
    segc_eval_spec_brats_regions(&spec);
    char err[256];
    segc_evaluator *a = segc_evaluator_new(&spec, err, sizeof err), *b = segc_evaluator_new(&spec, err, sizeof err);
    segc_evaluator *m1 = segc_evaluator_new(&spec, err, sizeof err), *m2 = segc_evaluator_new(&spec, err, sizeof err);
    assert_true(a && b && m1 && m2);
    segc_ctx *ctx = segc_ctx_new(0);
    uint8_t pred[2 * 8 * 8], lab[2 * 8 * 8];
    for (int i = 0; i < 128; i++) pred[i] = (uint8_t)(i * 7 % 5), lab[i] = (uint8_t)(i % 9 == 0 ? 255 : i * 3 % 5);
    segc_tensor *tp = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){2, 8, 8}, pred);
    segc_tensor *tl = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){2, 8, 8}, lab);
    int64_t ids_a[2] = {3, 1}, ids_b[2] = {1, 7};
    assert_true(segc_evaluator_add(a, ctx, tp, tl, ids_a));
    assert_true(segc_evaluator_add(b, ctx, tl, tp, ids_b));
    assert_true(segc_evaluator_merge(m1, a, err, sizeof err) && segc_evaluator_merge(m1, b, err, sizeof err));
    int64_t na, nb;
    int64_t *wa = segc_evaluator_serialize(a, &na), *wb = segc_evaluator_serialize(b, &nb);
    assert_true(wa && wb);
    assert_true(segc_evaluator_merge_serialized(m2, wa, na, err, sizeof err));
    assert_true(segc_evaluator_merge_serialized(m2, wb, nb, err, sizeof err));
    assert_false(segc_evaluator_merge_serialized(m2, wb, nb - 1, err, sizeof err));   /* truncated: refused */
    segc_eval_result r1, r2;
    assert_true(segc_evaluator_result(m1, &r1, err, sizeof err) && segc_evaluator_result(m2, &r2, err, sizeof err));
    assert_int_equal(r1.n, r2.n);
    assert_memory_equal(r1.values, r2.values, (size_t)r1.n * sizeof(double));
    assert_int_equal(r1.n_volumes, r2.n_volumes);
    segc_eval_result_free(&r1);
    segc_eval_result_free(&r2);
    free(wa), free(wb);
    segc_evaluator_free(a), segc_evaluator_free(b), segc_evaluator_free(m1), segc_evaluator_free(m2);
    segc_ctx_free(ctx);
}


/* ---- two hosts: two network namespaces joined by a veth pair, Open MPI over TCP, its rsh agent
 * replaced by `ip netns exec`; same world, seed and threads as the one-host run -> the same bits ---- */
static void test_two_hosts(void **state) {
    (void)state;
    int id = (int)(getpid() % 250);
    char na[32], nb[32], va[16], vb[16], ipa[32], ipb[32], net[32], log[400], agent[400], dir[300], ref[300];
    snprintf(na, sizeof na, "segc%da", (int)getpid());
    snprintf(nb, sizeof nb, "segc%db", (int)getpid());
    snprintf(va, sizeof va, "sg%da", (int)(getpid() % 100000));
    snprintf(vb, sizeof vb, "sg%db", (int)(getpid() % 100000));
    snprintf(ipa, sizeof ipa, "10.77.%d.1", id);
    snprintf(ipb, sizeof ipb, "10.77.%d.2", id);
    snprintf(net, sizeof net, "10.77.%d.0/24", id);
    snprintf(log, sizeof log, "%s/netns.log", root);
    int rc = sh(log, "ip netns add %s && ip netns add %s && ip link add %s type veth peer name %s && "
                "ip link set %s netns %s && ip link set %s netns %s && ip -n %s addr add %s/24 dev %s && "
                "ip -n %s addr add %s/24 dev %s && ip -n %s link set %s up && ip -n %s link set %s up && "
                "ip -n %s link set lo up && ip -n %s link set lo up",
                na, nb, va, vb, va, na, vb, nb, na, ipa, va, nb, ipb, vb, na, va, nb, vb, na, nb);
    if (rc != 0) {
        sh("/dev/null", "ip netns del %s; ip netns del %s", na, nb);
        SKIP_ALLOWED("cannot create network namespaces here (ip netns: exit %d; needs CAP_SYS_ADMIN)", rc);
        return;
    }
    snprintf(agent, sizeof agent, "%s/netns_agent.sh", root);
    FILE *f = fopen(agent, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n# rsh agent: AGENT HOST COMMAND... runs COMMAND in the namespace of HOST\nhost=$1; shift\n"
               "case \"$host\" in %s) ns=%s;; %s) ns=%s;; *) echo \"unknown host $host\" >&2; exit 1;; esac\n"
               "exec ip netns exec \"$ns\" /bin/sh -c \"$*\"\n", ipa, na, ipb, nb);
    fclose(f);
    chmod(agent, 0755);
    snprintf(dir, sizeof dir, "%s/twohosts", root);
    snprintf(ref, sizeof ref, "%s/np2", root);
    char rl[400], ck[400], cr[400];
    ckpt(cr, sizeof cr, ref, 20, false);
    if (access(cr, F_OK) != 0) train(2, ref, "");
    snprintf(rl, sizeof rl, "%s.log", dir);
    double t0 = segc_now_s();
    rc = sh(rl, "ip netns exec %s mpirun --allow-run-as-root -H %s:1,%s:1 -np 2 --mca plm_rsh_agent %s --mca btl self,tcp "
            "--mca btl_tcp_if_include %s --mca oob_tcp_if_include %s %s train %s train.work_dir=%s --force",
            na, ipa, ipb, agent, net, net, segc_bin, cfg, dir);
    double took = segc_now_s() - t0;
    sh("/dev/null", "ip netns del %s; ip netns del %s", na, nb);   /* the veth pair goes with them */
    if (rc != 0) { dump(rl); fail_msg("two-host training exited with %d", rc); }
    for (int st = 0; st < 2; st++) {
        ckpt(ck, sizeof ck, dir, 20, st);
        ckpt(cr, sizeof cr, ref, 20, st);
        tc_assert_same_tensors(ck, cr);
    }
    printf("two hosts (network namespaces %s, %s; Open MPI over TCP): bitwise the one-host run, %.1f s\n", na, nb, took);
}

/* ---- bad input ---- */
static int count_lines_with(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    int n = 0;
    char line[4096];
    while (f && fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    if (f) fclose(f);
    return n;
}

static void test_bad_input(void **state) {
    (void)state;
    char dir[300], log[400];
    snprintf(dir, sizeof dir, "%s/bad", root);
    snprintf(log, sizeof log, "%s.log", dir);
    int rc = sh(log, MPIRUN " -np 2 %s train %s train.work_dir=%s --force data.batch_size=3", segc_bin, cfg, dir);
    if (rc == 0 || count_lines_with(log, "not divisible by the 2 processes") != 1) {
        dump(log);
        fail_msg("batch 3 over 2 ranks: exit %d, expected one 'not divisible' error and a non-zero exit", rc);
    }
    rc = sh(log, MPIRUN " -np 1 %s train %s train.work_dir=%s --force optimizer.lr=0.1 : -np 1 %s train %s "
            "train.work_dir=%s --force optimizer.lr=0.2", segc_bin, cfg, dir, segc_bin, cfg, dir);
    if (rc == 0 || count_lines_with(log, "another resolved configuration") != 1) {
        dump(log);
        fail_msg("ranks with different configurations: exit %d, expected one error naming the rank", rc);
    }
}

static int setup(void **state) {
    (void)state;
    snprintf(root, sizeof root, "/tmp/segc_dist_XXXXXX");
    if (!mkdtemp(root)) return -1;
    snprintf(data, sizeof data, "%s/data", root);
    mkdir(data, 0755);
    make_dataset(data);
    snprintf(cfg, sizeof cfg, "%s/tiny.yaml", root);
    write_config(cfg, data);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[400];
    if (getenv("SEGC_TEST_KEEP")) return printf("kept %s\n", root), 0;
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    /* build/tests/test_dist -> build/segc */
    snprintf(segc_bin, sizeof segc_bin, "%s", argv[0]);
    char *slash = strrchr(segc_bin, '/');
    if (slash) *slash = 0; else snprintf(segc_bin, sizeof segc_bin, ".");
    strncat(segc_bin, "/../segc", sizeof segc_bin - strlen(segc_bin) - 1);
    char *abs = realpath(segc_bin, NULL);
    if (!abs) { fprintf(stderr, "test_dist: %s not built\n", segc_bin); return 1; }
    snprintf(segc_bin, sizeof segc_bin, "%s", abs);
    free(abs);
    /* Open MPI as root on a 2-core machine; LSan: Open MPI's own allocations at exit only (the slow
     * unwinder walks through Open MPI's frame-pointer-less code to the library the suppressions name) */
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
    /* keep Open MPI's plugins loaded at exit so LeakSanitizer can name (and the suppressions match) them */
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    setenv("PMIX_MCA_mca_base_component_disable_dlclose", "1", 1);
    (void)argc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syncbn_parity),   cmocka_unit_test(test_np2_equals_np1),
        cmocka_unit_test(test_dist_eval_equals_single), cmocka_unit_test(test_kill_one_rank_then_resume),
        cmocka_unit_test(test_hung_rank_watchdog), cmocka_unit_test(test_graceful_stop),
        cmocka_unit_test(test_evaluator_state_words), cmocka_unit_test(test_two_hosts),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
