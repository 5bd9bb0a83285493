/* segc tune runner: trials as forked local processes running the trainer
 * in-process (segc_train with an on_eval hook), talking to the scheduler over
 * a pipe pair; the event log DIR/tune.jsonl (also what --resume replays);
 * PBT checkpoint copies; bounded checkpoints; the live table.
 *
 * Child -> parent lines: "R ITER METRIC LOSS" after each evaluation (the child
 * then waits for one byte: 'C' continue, 'S' stop, 'P' pause), "E MESSAGE" on
 * failure, "D ITER" (the latest checkpoint's iteration) at exit.
 *
 * Under an MPI launcher (more than one rank) this process is rank 0 and only
 * schedules: every other rank is a worker (worker.c) running one trial at a
 * time in-process, speaking the same lines over MPI messages (tune_int.h);
 * tune.concurrent is the number of workers. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "segc/safetensors.h"
#include "segc/trainer.h"
#include "segc/dist.h"
#include "segc/tune.h"
#include "tune_int.h"

typedef struct kid {
    pid_t pid;
    int trial, rfd, wfd;
    int rank;            /* MPI worker rank running the trial (0: a forked process) */
    char buf[2048];
    size_t len;
    char error[512];
    int64_t final_iter;
    segc_tune_action last;
    int n_reports;
} kid;

typedef struct runner {
    segc_tune_spec *s;
    const segc_config *base;
    const segc_tune_opts *o;
    segc_tune_sched t;
    FILE *log, *out;
    bool tty;
    int table_lines;
    double last_draw, t0;
    kid *kids;
    int n_kids, threads;
    bool *announced;
    signed char *logged_state;   /* state of each trial's latest "end" event (-1: none) */
    bool final_table;
    double train_s;   /* wall time inside segc_train (in-process runs) */
    int runs;
    int conc;         /* runs at once: tune.concurrent, or the MPI workers */
    bool mpi;         /* trials on MPI worker ranks */
    bool stopping;
} runner;

static void trial_dir(const runner *R, int trial, char *buf, size_t n) { segc_tune_trial_dir(R->s, trial, buf, n); }

static bool mkdirs(const char *path) {
    char b[SEGC_CFG_PATH + 64];
    snprintf(b, sizeof b, "%s", path);
    for (char *p = b + 1;; p++)
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(b, 0755) != 0 && errno != EEXIST) return false;
            *p = c;
            if (!c) return true;
        }
}

/* ---- the event log ---- */
static void json_value(FILE *f, const char *v) {   /* a number as a number, anything else as a string */
    char *end;
    double x = strtod(v, &end);
    if (end != v && !*end && isfinite(x) && !strpbrk(v, "xX")) { fputs(v, f); return; }
    fputc('"', f);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f);
        if ((unsigned char)*p >= 0x20) fputc(*p, f);
    }
    fputc('"', f);
}

static void log_params(runner *R, const segc_tune_trial *tr) {
    fputs(",\"params\":{", R->log);
    for (int j = 0; j < R->s->n_params; j++) {
        fprintf(R->log, "%s\"%s\":", j ? "," : "", R->s->params[j].key);
        json_value(R->log, tr->values[j]);
    }
    fputc('}', R->log);
}

static void log_event(runner *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_event(runner *R, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(R->log, fmt, ap);
    va_end(ap);
}

static void log_end(runner *R) {
    fputs("}\n", R->log);
    fflush(R->log);
}

/* ---- terminal ---- */
static void draw_table(runner *R, bool force) {
    if (R->o->quiet || (!R->tty && !R->final_table)) return;   /* plain output: event lines, the table at the end */
    double now = segc_now_s();
    if (R->tty && !force && now - R->last_draw < 0.5) return;
    R->last_draw = now;
    FILE *f = R->out;
    if (R->tty && R->table_lines) fprintf(f, "\033[%dA\033[J", R->table_lines);
    int lines = 0;
    fprintf(f, "%-10s %-8s %7s %10s %10s", "trial", "state", "iter", R->s->metric, "best");
    for (int j = 0; j < R->s->n_params; j++) fprintf(f, "  %s", R->s->params[j].key);
    fprintf(f, "\n");
    lines++;
    int shown = 0;
    for (int i = 0; i < R->t.n_trials; i++) {
        const segc_tune_trial *tr = &R->t.trials[i];
        if (R->tty && R->t.n_trials > 30 && tr->state != SEGC_TRIAL_RUNNING && shown >= 20) continue;
        shown++;
        fprintf(f, "trial_%04d %-8s %7lld %10.4g %10.4g", i, segc_trial_state_name(tr->state), (long long)tr->iter, tr->last,
                tr->best);
        for (int j = 0; j < R->s->n_params; j++) fprintf(f, "  %s", tr->values[j]);
        if (tr->parent >= 0) fprintf(f, "  (from trial_%04d)", tr->parent);
        if (tr->state == SEGC_TRIAL_FAILED) fprintf(f, "  %.80s", tr->error);
        fprintf(f, "\n");
        lines++;
    }
    R->table_lines = R->tty ? lines : 0;
    fflush(f);
}

static void note(runner *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(runner *R, const char *fmt, ...) {
    if (R->o->quiet || R->tty) return;   /* a terminal shows the live table instead */
    va_list ap;
    va_start(ap, fmt);
    vfprintf(R->out, fmt, ap);
    va_end(ap);
    fputc('\n', R->out);
    fflush(R->out);
}

/* ---- checkpoints ---- */
static void remove_iter_checkpoints(const char *ckdir) {
    DIR *d = opendir(ckdir);
    if (!d) return;
    char p[SEGC_CFG_PATH + 320];
    for (struct dirent *e; (e = readdir(d));)
        if ((!strncmp(e->d_name, "iter_", 5) || !strcmp(e->d_name, "latest")) &&
            snprintf(p, sizeof p, "%s/%s", ckdir, e->d_name) < (int)sizeof p)
            unlink(p);
    closedir(d);
}

static bool copy_file(const char *from, const char *to, char *err, size_t errlen) {
    FILE *f = fopen(from, "rb");
    if (!f) return segc_errorf(err, errlen, "cannot open %s: %s", from, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    bool ok = b && fread(b, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    if (ok) {
        const void *parts[1] = {b};
        size_t sizes[1] = {(size_t)n};
        ok = segc_write_file_atomic(to, parts, sizes, 1, err, errlen);
    } else {
        segc_errorf(err, errlen, "cannot read %s", from);
    }
    free(b);
    return ok;
}

/* PBT exploit: the source's latest checkpoint pair becomes the trial's, then explore */
static void apply_exploit(runner *R, int trial) {
    segc_tune_trial *tr = &R->t.trials[trial];
    int src = tr->exploit_source;
    if (src < 0) return;
    char sd[SEGC_CFG_PATH + 64], dd[SEGC_CFG_PATH + 64], sck[SEGC_CFG_PATH + 96], dck[SEGC_CFG_PATH + 96];
    trial_dir(R, src, sd, sizeof sd);
    trial_dir(R, trial, dd, sizeof dd);
    snprintf(sck, sizeof sck, "%s/checkpoints", sd);
    snprintf(dck, sizeof dck, "%s/checkpoints", dd);
    char w[SEGC_CFG_PATH + 200], st[SEGC_CFG_PATH + 200], e[768] = "";
    int64_t it = segc_tune_latest_iter(sck);
    bool ok = segc_checkpoint_latest(sck, w, sizeof w, st, sizeof st, e, sizeof e);
    if (ok) {
        /* every file of that checkpoint (weights, optimizer and train state, and whatever else a
         * recipe stores as iter_N.*), then `latest` */
        remove_iter_checkpoints(dck);
        char prefix[64], from[SEGC_CFG_PATH + 400], to[SEGC_CFG_PATH + 400], lt[80];
        snprintf(prefix, sizeof prefix, "iter_%07lld.", (long long)it);
        DIR *d = opendir(sck);
        int copied = 0;
        for (struct dirent *de; ok && d && (de = readdir(d));) {
            if (strncmp(de->d_name, prefix, strlen(prefix)) || strstr(de->d_name, ".tmp.")) continue;
            snprintf(from, sizeof from, "%s/%s", sck, de->d_name);
            snprintf(to, sizeof to, "%s/%s", dck, de->d_name);
            ok = copy_file(from, to, e, sizeof e);
            copied++;
        }
        if (d) closedir(d);
        if (ok && copied < 2) ok = segc_errorf(e, sizeof e, "%s: checkpoint %s* is incomplete", sck, prefix);
        snprintf(lt, sizeof lt, "iter_%07lld\n", (long long)it);
        snprintf(to, sizeof to, "%s/latest", dck);
        const void *parts[1] = {lt};
        size_t sizes[1] = {strlen(lt)};
        ok = ok && segc_write_file_atomic(to, parts, sizes, 1, e, sizeof e);
    }
    if (!ok) {   /* the trial goes on with its own weights */
        note(R, "trial_%04d: exploit of trial_%04d skipped: %s", trial, src, e);
        tr->exploit_source = -1;
        return;
    }
    segc_tune_sched_exploited(&R->t, trial);
    tr->iter = it;
    log_event(R, "{\"event\":\"exploit\",\"trial\":%d,\"source\":%d,\"iter\":%lld", trial, src, (long long)it);
    log_params(R, tr);
    log_end(R);
    note(R, "trial_%04d exploits trial_%04d at iteration %lld", trial, src, (long long)it);
}

/* ---- the child ---- */
static volatile int child_stop;
static void on_child_signal(int sig) { child_stop = 1; (void)sig; }

typedef struct hook { int rfd, wfd; const char *metric; } hook;

static void say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int fd, const char *fmt, ...) {
    char b[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof b - 2) n = (int)sizeof b - 2;
    for (int i = 0; i < n; i++)
        if (b[i] == '\n') b[i] = ' ';
    b[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t k = write(fd, b + off, (size_t)(n - off));
        if (k <= 0) return;
        off += (int)k;
    }
}

static int child_on_eval(void *user, int64_t iter, const segc_eval_result *r, double loss) {
    hook *h = user;
    char why[256] = "";
    double m = segc_tune_metric_of(h->metric, r, loss, why, sizeof why);
    if (*why) say(h->wfd, "E %s", why);
    say(h->wfd, "R %lld %.17g %.17g", (long long)iter, m, loss);
    char c = 'S';
    while (read(h->rfd, &c, 1) < 0 && errno == EINTR) {}
    return c != 'C';
}

static void child_main(runner *R, int trial, int rfd, int wfd) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, on_child_signal);
    signal(SIGTERM, on_child_signal);
    char dir[SEGC_CFG_PATH + 64], lp[SEGC_CFG_PATH + 96], e[1024];
    trial_dir(R, trial, dir, sizeof dir);
    snprintf(lp, sizeof lp, "%s/train.log", dir);
    int lfd = open(lp, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (lfd >= 0) { dup2(lfd, 1); dup2(lfd, 2); close(lfd); }
    segc_config c;
    if (!segc_tune_trial_config(R->s, R->base, R->t.trials[trial].values, dir, R->threads, &c, e, sizeof e)) {
        say(wfd, "E bad config: %s", e);
        _exit(1);
    }
    hook h = {rfd, wfd, R->s->metric};
    segc_train_opts o = {.resume = true, .stop = &child_stop, .on_eval = child_on_eval, .on_eval_user = &h};
    o.progress = stderr;
    segc_train_status st = segc_train(&c, &o, e, sizeof e);
    fflush(NULL);
    if (st != SEGC_TRAIN_DONE) say(wfd, "E %s", e);
    char ck[SEGC_CFG_PATH + 96];
    snprintf(ck, sizeof ck, "%s/checkpoints", dir);
    say(wfd, "D %lld", (long long)segc_tune_latest_iter(ck));
    _exit(st == SEGC_TRAIN_DONE ? 0 : (int)st);
}

static void run_inprocess(runner *R, int trial);

/* the trial's run on the first idle worker rank: "T TRIAL" and its values */
static bool launch_mpi(runner *R, int trial) {
    int rank = 1;
    for (bool busy = true; busy && rank < segc_dist_job_world(); rank += busy) {
        busy = false;
        for (int k = 0; k < R->n_kids; k++) busy |= R->kids[k].rank == rank;
    }
    char msg[SEGC_TUNE_MSG];
    int n = snprintf(msg, sizeof msg, "T %d", trial);
    for (int j = 0; j < R->s->n_params && n < (int)sizeof msg; j++)
        n += snprintf(msg + n, sizeof msg - (size_t)n, "\n%s", R->t.trials[trial].values[j]);
    segc_dist_send_bytes(rank, SEGC_TUNE_TAG_RUN, msg, strlen(msg) + 1);
    kid *k = &R->kids[R->n_kids++];
    memset(k, 0, sizeof *k);
    k->trial = trial, k->rank = rank, k->rfd = k->wfd = -1, k->final_iter = -1;
    k->last = SEGC_TUNE_CONTINUE;
    return true;
}

static bool launch(runner *R, int trial, int64_t target, char *err, size_t errlen) {
    segc_tune_trial *tr = &R->t.trials[trial];
    char dir[SEGC_CFG_PATH + 64];
    trial_dir(R, trial, dir, sizeof dir);
    if (!mkdirs(dir)) return segc_errorf(err, errlen, "tune: cannot create %s: %s", dir, strerror(errno));
    if (!R->announced[trial]) {
        R->announced[trial] = true;
        log_event(R, "{\"event\":\"trial\",\"trial\":%d,\"bracket\":%d", trial, tr->bracket);
        log_params(R, tr);
        log_end(R);
    }
    log_event(R, "{\"event\":\"start\",\"trial\":%d,\"iter\":%lld,\"target\":%lld", trial, (long long)tr->iter,
              (long long)target);
    log_end(R);
    tr->state = SEGC_TRIAL_RUNNING;
    tr->target = target;
    note(R, "trial_%04d %s (iteration %lld -> %lld)", trial, tr->iter ? "resumes" : "starts", (long long)tr->iter,
         (long long)target);
    if (R->mpi) return launch_mpi(R, trial);
    if (R->s->concurrent == 1) {
        run_inprocess(R, trial);
        return true;
    }
    int up[2], down[2];
    if (pipe(up) != 0 || pipe(down) != 0) return segc_errorf(err, errlen, "tune: pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return segc_errorf(err, errlen, "tune: fork: %s", strerror(errno));
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        for (int k = 0; k < R->n_kids; k++) { close(R->kids[k].rfd); close(R->kids[k].wfd); }
        child_main(R, trial, down[0], up[1]);
    }
    close(up[1]);
    close(down[0]);
    kid *k = &R->kids[R->n_kids++];
    memset(k, 0, sizeof *k);
    k->pid = pid, k->trial = trial, k->rfd = up[0], k->wfd = down[1], k->final_iter = -1;
    k->last = SEGC_TUNE_CONTINUE;
    return true;
}

/* a result of a run: the scheduler's decision, logged */
static segc_tune_action on_report(runner *R, int trial, int64_t it, double m, double loss) {
    segc_tune_trial *tr = &R->t.trials[trial];
    bool fresh = it > tr->iter;
    segc_tune_action a = segc_tune_sched_result(&R->t, trial, it, m);
    if (fresh) {
        log_event(R, "{\"event\":\"result\",\"trial\":%d,\"iter\":%lld,\"metric\":", trial, (long long)it);
        if (isfinite(m)) log_event(R, "%.17g", m);
        else log_event(R, "null");
        if (isfinite(loss)) log_event(R, ",\"loss\":%.17g", loss);
        log_event(R, ",\"action\":\"%s\",\"time_s\":%.3f", segc_tune_action_name(a), segc_now_s() - R->t0);
        if (tr->exploit_source >= 0) log_event(R, ",\"exploit\":%d", tr->exploit_source);
        log_end(R);
        note(R, "trial_%04d iter %lld %s %.4g -> %s", trial, (long long)it, R->s->metric, m, segc_tune_action_name(a));
    }
    return a;
}

static void end_run(runner *R, int trial, int status, const char *run_error, int64_t final_iter, segc_tune_action last,
                    bool stopping);

static void handle_line(runner *R, kid *k, char *line) {
    if (line[0] == 'R') {
        char *end;
        long long it = strtoll(line + 2, &end, 10);
        double m = strtod(end, &end);
        double loss = strtod(end, &end);
        segc_tune_action a = on_report(R, k->trial, it, m, loss);
        k->last = a;
        k->n_reports++;
        char c = a == SEGC_TUNE_CONTINUE ? 'C' : a == SEGC_TUNE_STOP ? 'S' : 'P';
        if (k->rank > 0 && R->stopping && c == 'C') c = 'P';   /* a stop request: the worker pauses */
        if (k->rank > 0) segc_dist_send_bytes(k->rank, SEGC_TUNE_TAG_DECIDE, &c, 1);
        else if (write(k->wfd, &c, 1) != 1) {}
    } else if (line[0] == 'E') {
        snprintf(k->error, sizeof k->error, "%s", line + 2);
        snprintf(R->t.trials[k->trial].error, sizeof R->t.trials[k->trial].error, "%s", line + 2);
    } else if (line[0] == 'D') {
        char *end;
        k->final_iter = strtoll(line + 2, &end, 10);
        if (k->rank > 0) {   /* an MPI worker's run ended: its exit status in wait() form */
            int code = (int)strtol(end, NULL, 10);
            int idx = (int)(k - R->kids);
            bool stopping = R->stopping || (R->o->stop && *R->o->stop);   /* the signal reached both */
            end_run(R, k->trial, (code & 0xff) << 8, k->error, k->final_iter, k->last, stopping);
            R->kids[idx] = R->kids[--R->n_kids];
        }
    }
}

/* the run of trial ended (wait status, the run's error, its latest checkpoint, the last decision) */
static void end_run(runner *R, int trial, int status, const char *run_error, int64_t final_iter, segc_tune_action last,
                    bool stopping) {
    segc_tune_trial *tr = &R->t.trials[trial];
    const segc_tune_spec *s = R->s;
    segc_trial_state st;
    char err[600] = "";
    if (*tr->error) st = SEGC_TRIAL_FAILED, snprintf(err, sizeof err, "%s", tr->error);
    else if (*run_error) st = SEGC_TRIAL_FAILED, snprintf(err, sizeof err, "%s", run_error);
    else if (WIFSIGNALED(status)) st = SEGC_TRIAL_FAILED, snprintf(err, sizeof err, "killed by signal %d", WTERMSIG(status));
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) st = SEGC_TRIAL_FAILED, snprintf(err, sizeof err, "exit status %d", WEXITSTATUS(status));
    else if (last == SEGC_TUNE_STOP) st = SEGC_TRIAL_STOPPED;
    else if (final_iter >= s->max_t || tr->iter >= s->max_t) st = SEGC_TRIAL_DONE;
    else if (last == SEGC_TUNE_PAUSE || stopping) st = SEGC_TRIAL_PAUSED;
    else st = SEGC_TRIAL_FAILED, snprintf(err, sizeof err, "the run ended at iteration %lld of %lld without a decision",
                                          (long long)final_iter, (long long)s->max_t);
    if (st == SEGC_TRIAL_DONE && tr->iter < s->max_t) tr->iter = s->max_t;
    segc_tune_sched_ended(&R->t, trial, st, err);
    R->logged_state[trial] = (signed char)st;
    log_event(R, "{\"event\":\"end\",\"trial\":%d,\"iter\":%lld,\"state\":\"%s\"", trial, (long long)tr->iter,
              segc_trial_state_name(st));
    if (*err) {
        log_event(R, ",\"error\":");
        json_value(R->log, err);
    }
    log_end(R);
    note(R, "trial_%04d %s at iteration %lld%s%s", trial, segc_trial_state_name(st), (long long)tr->iter,
         *err ? ": " : "", err);
    if (st == SEGC_TRIAL_STOPPED || st == SEGC_TRIAL_FAILED) {   /* nothing will resume it: free the disk */
        char d[SEGC_CFG_PATH + 64], ck[SEGC_CFG_PATH + 96];
        trial_dir(R, trial, d, sizeof d);
        snprintf(ck, sizeof ck, "%s/checkpoints", d);
        remove_iter_checkpoints(ck);
    }
    if (st == SEGC_TRIAL_PAUSED && tr->exploit_source >= 0) apply_exploit(R, trial);
}

static void finish_kid(runner *R, int idx, bool stopping) {
    kid *k = &R->kids[idx];
    int status = 0;
    while (waitpid(k->pid, &status, 0) < 0 && errno == EINTR) {}
    close(k->rfd);
    close(k->wfd);
    end_run(R, k->trial, status, k->error, k->final_iter, k->last, stopping);
    R->kids[idx] = R->kids[--R->n_kids];
}

/* ---- one trial at a time: in this process, no fork ---- */
typedef struct inproc { runner *R; int trial; segc_tune_action last; } inproc;

static int inproc_on_eval(void *user, int64_t iter, const segc_eval_result *r, double loss) {
    inproc *h = user;
    char why[256] = "";
    double m = segc_tune_metric_of(h->R->s->metric, r, loss, why, sizeof why);
    segc_tune_trial *tr = &h->R->t.trials[h->trial];
    if (*why && !*tr->error) snprintf(tr->error, sizeof tr->error, "%s", why);
    h->last = on_report(h->R, h->trial, iter, m, loss);
    draw_table(h->R, true);
    return h->last != SEGC_TUNE_CONTINUE;
}

static void run_inprocess(runner *R, int trial) {
    char dir[SEGC_CFG_PATH + 64], ck[SEGC_CFG_PATH + 96], e[1024] = "";
    trial_dir(R, trial, dir, sizeof dir);
    snprintf(ck, sizeof ck, "%s/checkpoints", dir);
    segc_config c;
    inproc h = {R, trial, SEGC_TUNE_CONTINUE};
    if (segc_tune_trial_config(R->s, R->base, R->t.trials[trial].values, dir, R->threads, &c, e, sizeof e)) {
        segc_train_opts o = {.resume = true, .quiet = true, .stop = R->o->stop, .on_eval = inproc_on_eval, .on_eval_user = &h};
        double t0 = segc_now_s();
        if (segc_train(&c, &o, e, sizeof e) == SEGC_TRAIN_DONE) e[0] = 0;
        R->train_s += segc_now_s() - t0;
        R->runs++;
    } else {
        char e2[1100];
        snprintf(e2, sizeof e2, "bad config: %s", e);
        snprintf(e, sizeof e, "%.1000s", e2);
    }
    end_run(R, trial, 0, e, segc_tune_latest_iter(ck), h.last, R->o->stop && *R->o->stop);
}

/* ---- resume: replay DIR/tune.jsonl through the scheduler ---- */
static bool replay(runner *R, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return segc_errorf(err, errlen, "--resume: cannot open %s: %s", path, strerror(errno));
    char *line = malloc(1 << 16);
    int lineno = 0;
    long good = 0;   /* end of the last complete line */
    bool ok = line != NULL;
    while (ok && fgets(line, 1 << 16, f)) {
        lineno++;
        size_t l = strlen(line);
        if (!l || line[l - 1] != '\n') break;   /* cut short by a kill: dropped below */
        good = ftell(f);
        cJSON *j = cJSON_Parse(line);
        const char *ev = j ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "event")) : NULL;
        const cJSON *ti = j ? cJSON_GetObjectItem(j, "trial") : NULL;
        int trial = cJSON_IsNumber(ti) ? ti->valueint : -1;
        if (ev && (!strcmp(ev, "search") || !strcmp(ev, "summary"))) { cJSON_Delete(j); continue; }
        if (!ev || trial < 0 || trial >= R->t.n_planned) {
            cJSON_Delete(j);
            ok = segc_errorf(err, errlen, "--resume: %s:%d: not a tune event", path, lineno);
            break;
        }
        segc_tune_trial *tr = trial < R->t.n_trials ? &R->t.trials[trial] : NULL;
        double it = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "iter"));
        if (!strcmp(ev, "trial")) {
            while (R->t.n_trials <= trial) segc_tune_sched_add(&R->t);   /* PBT makes its population at once */
            R->announced[trial] = true;
        } else if (!tr) {
            ok = segc_errorf(err, errlen, "--resume: %s:%d: event of trial %d before the trial", path, lineno, trial);
        } else if (!strcmp(ev, "start")) {
            int64_t tg = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "target"));
            for (int k = 0; k < R->t.n_rungs[tr->bracket]; k++)
                if (R->t.milestones[tr->bracket][k] < tg && R->t.milestones[tr->bracket][k] <= tr->iter && tr->iter > 0)
                    tr->promoted[k] = true;
            tr->target = tg;
            tr->state = SEGC_TRIAL_RUNNING;
        } else if (!strcmp(ev, "result")) {
            const cJSON *m = cJSON_GetObjectItem(j, "metric");
            segc_tune_sched_result(&R->t, trial, (int64_t)it, cJSON_IsNumber(m) ? m->valuedouble : NAN);
        } else if (!strcmp(ev, "exploit")) {
            const cJSON *src = cJSON_GetObjectItem(j, "source"), *ps = cJSON_GetObjectItem(j, "params");
            if (tr->exploit_source < 0) tr->exploit_source = cJSON_IsNumber(src) ? src->valueint : 0;
            segc_tune_sched_exploited(&R->t, trial);
            for (int q = 0; q < R->s->n_params; q++) {   /* the values as logged */
                const cJSON *v = cJSON_GetObjectItem(ps, R->s->params[q].key);
                if (cJSON_IsString(v)) snprintf(tr->values[q], SEGC_TUNE_VALUE, "%s", v->valuestring);
                else if (cJSON_IsNumber(v)) {
                    char *txt = cJSON_PrintUnformatted(v);
                    if (txt) snprintf(tr->values[q], SEGC_TUNE_VALUE, "%s", txt);
                    free(txt);
                }
            }
            tr->iter = (int64_t)it;
        } else if (!strcmp(ev, "end")) {
            const char *stn = cJSON_GetStringValue(cJSON_GetObjectItem(j, "state"));
            const char *er = cJSON_GetStringValue(cJSON_GetObjectItem(j, "error"));
            segc_trial_state st = SEGC_TRIAL_PAUSED;
            for (int k = 0; k < 6; k++)
                if (stn && !strcmp(stn, segc_trial_state_name((segc_trial_state)k))) st = (segc_trial_state)k;
            if (st == SEGC_TRIAL_DONE && tr->iter < R->s->max_t) tr->iter = R->s->max_t;
            segc_tune_sched_ended(&R->t, trial, st, er);
            R->logged_state[trial] = (signed char)st;
        }
        cJSON_Delete(j);
    }
    free(line);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    if (!ok) return false;
    if (size > good && truncate(path, good) != 0)
        return segc_errorf(err, errlen, "--resume: cannot drop the cut-short last line of %s: %s", path, strerror(errno));
    /* runs cut short by the kill continue from their checkpoints */
    for (int i = 0; i < R->t.n_trials; i++)
        if (R->t.trials[i].state == SEGC_TRIAL_RUNNING) R->t.trials[i].state = SEGC_TRIAL_PAUSED;
    for (int i = 0; i < R->t.n_trials; i++)
        if (R->t.trials[i].state == SEGC_TRIAL_PAUSED && R->t.trials[i].exploit_source >= 0) apply_exploit(R, i);
    return true;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b) b[fread(b, 1, (size_t)n, f)] = 0;
    fclose(f);
    return b;
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static bool tune_run(segc_tune_spec *s, const segc_config *base, const segc_tune_opts *o, char *err, size_t errlen);

bool segc_tune_run(segc_tune_spec *s, const segc_config *base, const segc_tune_opts *o, char *err, size_t errlen) {
    segc_tune_opts dflt = {0};
    if (!o) o = &dflt;
    int world = segc_dist_job_world();
    if (world == 1) return tune_run(s, base, o, err, errlen);
    /* under an MPI launcher: rank 0 schedules, the others run trials; every rank's
     * training is a plain one-process run (local mode) */
    segc_dist_set_local(true);
    bool ok = true;
    if (segc_dist_job_rank() > 0) segc_tune_worker(s, base, o);
    else {
        ok = tune_run(s, base, o, err, errlen);
        for (int r = 1; r < world; r++) segc_dist_send_bytes(r, SEGC_TUNE_TAG_RUN, "Q", 2);
    }
    segc_dist_set_local(false);
    return ok;
}

static bool tune_run(segc_tune_spec *s, const segc_config *base, const segc_tune_opts *o, char *err, size_t errlen) {
    segc_tune_opts dflt = {0};
    if (!o) o = &dflt;
    runner R;
    memset(&R, 0, sizeof R);
    R.s = s, R.base = base, R.o = o;
    R.out = o->progress ? o->progress : stderr;
    R.tty = isatty(fileno(R.out));
    R.t0 = segc_now_s();
    R.mpi = segc_dist_job_world() > 1;
    R.conc = R.mpi ? segc_dist_job_world() - 1 : s->concurrent;
    R.threads = R.mpi ? segc_tune_worker_threads(s) : s->threads > 0 ? s->threads : online_cpus() / s->concurrent;
    if (R.threads < 1) R.threads = 1;
    char logp[SEGC_CFG_PATH + 64], specp[SEGC_CFG_PATH + 64];
    snprintf(logp, sizeof logp, "%s/tune.jsonl", s->dir);
    snprintf(specp, sizeof specp, "%s/spec.yaml", s->dir);
    if (!mkdirs(s->dir)) return segc_errorf(err, errlen, "tune: cannot create %s: %s", s->dir, strerror(errno));
    char *mine = segc_tune_spec_to_yaml(s, true);
    if (!mine) return segc_errorf(err, errlen, "tune: out of memory");
    bool have_log = access(logp, F_OK) == 0;
    if (o->resume) {
        if (!have_log) { free(mine); return segc_errorf(err, errlen, "--resume %s: no search there (%s is missing)", s->dir, logp); }
        char *theirs_full = read_all(specp);
        segc_tune_spec ts;
        segc_tune_spec_defaults(&ts);
        segc_config tb;
        char e2[1024];
        bool same = theirs_full && segc_tune_spec_load_string(&ts, theirs_full, specp, s->dir, e2, sizeof e2) &&
                    segc_tune_spec_finish(&ts, &tb, e2, sizeof e2);
        char *theirs = same ? segc_tune_spec_to_yaml(&ts, true) : NULL;
        free(theirs_full);
        if (!theirs || strcmp(theirs, mine) != 0) {
            const char *a = mine, *b = theirs ? theirs : "";
            while (*a && *a == *b) a++, b++;
            while (a > mine && a[-1] != '\n') a--, b--;
            while (*a == ' ') a++;
            while (*b == ' ') b++;
            segc_errorf(err, errlen, "--resume %s: the search there was made by another spec (this spec has '%.*s', "
                        "%s/spec.yaml '%.*s')", s->dir, (int)strcspn(a, "\n"), a, s->dir, (int)strcspn(b, "\n"), b);
            free(theirs);
            free(mine);
            return false;
        }
        free(theirs);
    } else if (have_log) {
        free(mine);
        return segc_errorf(err, errlen, "tune: %s already holds a search; continue it with --resume %s, or set tune.dir", s->dir, s->dir);
    }
    free(mine);
    char *full = segc_tune_spec_to_yaml(s, false);
    const void *parts[1] = {full};
    size_t sizes[1] = {full ? strlen(full) : 0};
    bool ok = full && segc_write_file_atomic(specp, parts, sizes, 1, err, errlen);
    free(full);
    if (!ok) return false;
    if (!segc_tune_sched_init(&R.t, s, err, errlen)) return false;
    R.kids = calloc((size_t)R.conc, sizeof *R.kids);
    R.announced = calloc((size_t)R.t.n_planned + 1, sizeof *R.announced);
    R.logged_state = malloc((size_t)R.t.n_planned + 1);
    if (R.logged_state) memset(R.logged_state, -1, (size_t)R.t.n_planned + 1);
    if (!R.kids || !R.announced || !R.logged_state) { ok = segc_errorf(err, errlen, "tune: out of memory"); goto out; }
    if (o->resume && !replay(&R, logp, err, errlen)) { ok = false; goto out; }
    R.log = fopen(logp, "a");
    if (!R.log) { ok = segc_errorf(err, errlen, "tune: cannot open %s: %s", logp, strerror(errno)); goto out; }
    log_event(&R, "{\"event\":\"search\",\"resume\":%s,\"trials\":%d,\"concurrent\":%d,\"threads\":%d", o->resume ? "true" : "false",
              R.t.n_planned, R.conc, R.threads);
    log_end(&R);
    if (!o->quiet && !R.tty)
        fprintf(R.out, "tune %s: %d trials, %s, %d at a time%s x %d threads -> %s\n", s->name, R.t.n_planned,
                s->scheduler == SEGC_SCHED_ASHA ? (s->promotion ? "ASHA (promotion)" : "ASHA") : s->scheduler == SEGC_SCHED_PBT ? "PBT" : "FIFO",
                R.conc, R.mpi ? " (MPI worker ranks)" : "", R.threads, s->dir);
    bool stopping = false;
    for (;;) {
        if (o->stop && *o->stop && !stopping) {
            stopping = R.stopping = true;
            for (int k = 0; k < R.n_kids; k++)
                if (R.kids[k].pid > 0) kill(R.kids[k].pid, SIGTERM);
        }
        bool finished = false;
        while (!stopping && !(o->stop && *o->stop) && R.n_kids < R.conc) {
            int trial;
            int64_t target;
            if (!segc_tune_sched_next(&R.t, R.n_kids, &trial, &target, &finished)) break;
            if (!launch(&R, trial, target, err, errlen)) { ok = false; stopping = true; break; }
        }
        draw_table(&R, false);
        if (!R.n_kids) break;
        if (R.mpi) {   /* the next line of any worker (the table is redrawn between) */
            char line[SEGC_TUNE_MSG + 1];
            int from = -1;
            int64_t n = segc_dist_recv_bytes(-1, SEGC_TUNE_TAG_REPORT, line, SEGC_TUNE_MSG, &from, 0.5);
            if (n < 0) continue;
            line[n] = 0;
            for (int k = 0; k < R.n_kids; k++)
                if (R.kids[k].rank == from) { handle_line(&R, &R.kids[k], line); break; }
            draw_table(&R, true);
            continue;
        }
        struct pollfd pf[64];
        int np = R.n_kids < 64 ? R.n_kids : 64;
        for (int k = 0; k < np; k++) pf[k] = (struct pollfd){R.kids[k].rfd, POLLIN, 0};
        int pr = poll(pf, (nfds_t)np, 500);
        if (pr < 0 && errno != EINTR) { ok = segc_errorf(err, errlen, "tune: poll: %s", strerror(errno)); break; }
        for (int k = np - 1; k >= 0 && pr > 0; k--) {
            if (!pf[k].revents) continue;
            kid *kd = &R.kids[k];
            ssize_t n = read(kd->rfd, kd->buf + kd->len, sizeof kd->buf - 1 - kd->len);
            if (n > 0) {
                kd->len += (size_t)n;
                kd->buf[kd->len] = 0;
                char *nl;
                while ((nl = memchr(kd->buf, '\n', kd->len))) {
                    *nl = 0;
                    handle_line(&R, kd, kd->buf);
                    size_t used = (size_t)(nl + 1 - kd->buf);
                    memmove(kd->buf, nl + 1, kd->len - used);
                    kd->len -= used;
                }
                if (kd->len == sizeof kd->buf - 1) kd->len = 0;   /* an over-long line: dropped */
                draw_table(&R, true);
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                finish_kid(&R, k, stopping);
                draw_table(&R, true);
            }
        }
    }
    stopping |= o->stop && *o->stop;
    /* paused trials the search ended without promoting: stopped, their checkpoints freed */
    for (int i = 0; ok && !stopping && i < R.t.n_trials; i++) {
        if (R.t.trials[i].state != SEGC_TRIAL_STOPPED || R.logged_state[i] == SEGC_TRIAL_STOPPED) continue;
        char d[SEGC_CFG_PATH + 64], ck[SEGC_CFG_PATH + 96];
        trial_dir(&R, i, d, sizeof d);
        snprintf(ck, sizeof ck, "%s/checkpoints", d);
        remove_iter_checkpoints(ck);
        log_event(&R, "{\"event\":\"end\",\"trial\":%d,\"iter\":%lld,\"state\":\"stopped\"", i,
                  (long long)R.t.trials[i].iter);
        log_end(&R);
        R.logged_state[i] = SEGC_TRIAL_STOPPED;
    }
    if (R.runs) {   /* what the tuner itself cost around the training calls (one trial at a time) */
        double wall = segc_now_s() - R.t0;
        log_event(&R, "{\"event\":\"summary\",\"runs\":%d,\"wall_s\":%.3f,\"train_s\":%.3f,\"overhead_ms_per_run\":%.3f",
                  R.runs, wall, R.train_s, (wall - R.train_s) / R.runs * 1e3);
        log_end(&R);
    }
    if (stopping && ok) note(&R, "tune stopped; continue with: segc tune --resume %s", s->dir);
    fclose(R.log);
    R.log = NULL;
    {
        char e2[1024];
        if (!segc_tune_write_results(s, base, &R.t, e2, sizeof e2)) {
            if (ok) ok = segc_errorf(err, errlen, "tune: %s", e2);
        }
    }
    if (!o->quiet && R.tty) draw_table(&R, true);
    else if (!o->quiet) {
        R.final_table = true;
        draw_table(&R, true);
    }
out:
    if (R.log) fclose(R.log);
    free(R.kids);
    free(R.announced);
    free(R.logged_state);
    segc_tune_sched_free(&R.t);
    return ok;
}
