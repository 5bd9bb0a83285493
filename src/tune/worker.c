/* segc tune under an MPI launcher, ranks > 0: each is a worker that runs the
 * trials rank 0 (the scheduler, runner.c) sends it, one at a time, in this
 * process through segc_train, in local mode (segc_dist_set_local: the trainer
 * sees a world of 1, so its collectives do not reach the other trials). After
 * each evaluation the worker reports (iteration, metric) and waits for the
 * decision. Protocol: tune_int.h. Waiting for the next trial has no deadline. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segc/dist.h"
#include "tune_int.h"

/* ---- shared with the runner (tune_int.h) ---- */
void segc_tune_trial_dir(const segc_tune_spec *s, int trial, char *buf, size_t n) {
    snprintf(buf, n, "%s/trial_%04d", s->dir, trial);
}

int64_t segc_tune_latest_iter(const char *ckdir) {
    char p[SEGC_CFG_PATH + 96], line[64] = "";
    snprintf(p, sizeof p, "%s/latest", ckdir);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    fclose(f);
    return !strncmp(line, "iter_", 5) ? atoll(line + 5) : 0;
}

/* the searched metric from an evaluation (loss: the training loss); NaN and a message in why
 * when the evaluator does not report it */
double segc_tune_metric_of(const char *name, const segc_eval_result *r, double loss, char *why, size_t n) {
    if (!strcmp(name, "loss")) return loss;
    for (int i = 0; r && i < r->n; i++)
        if (!strcmp(r->names[i], name)) return r->values[i];
    snprintf(why, n, "the evaluator does not report '%s'%s%s%s", name, r && r->n ? " (it reports " : "",
             r && r->n ? r->names[0] : "", r && r->n ? ", ...)" : " (no validation split)");
    return NAN;
}

/* ---- the worker ---- */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...) {
    char b[SEGC_TUNE_MSG];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n >= (int)sizeof b) n = (int)sizeof b - 1;
    for (int i = 0; i < n; i++)
        if (b[i] == '\n') b[i] = ' ';
    segc_dist_send_bytes(0, SEGC_TUNE_TAG_REPORT, b, (size_t)n + 1);
}

int segc_tune_worker_threads(const segc_tune_spec *s) {
    if (s->threads > 0) return s->threads;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int t = (int)(cores / (segc_dist_local_size() > 0 ? segc_dist_local_size() : 1));
    return t > 0 ? t : 1;
}

typedef struct hook { const char *metric; } hook;

static int on_eval(void *user, int64_t iter, const segc_eval_result *r, double loss) {
    hook *h = user;
    char why[256] = "", c = 'S';
    double m = segc_tune_metric_of(h->metric, r, loss, why, sizeof why);
    if (*why) report("E %s", why);
    report("R %lld %.17g %.17g", (long long)iter, m, loss);
    segc_dist_recv_bytes(0, SEGC_TUNE_TAG_DECIDE, &c, 1, NULL, -1);
    return c != 'C';
}

static void run_trial(const segc_tune_spec *s, const segc_config *base, const segc_tune_opts *o, char *msg) {
    int trial = atoi(msg + 2);
    char values[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE];
    memset(values, 0, sizeof values);
    char *p = strchr(msg, '\n');
    for (int j = 0; j < s->n_params && p; j++) {
        char *q = strchr(p + 1, '\n');
        if (q) *q = 0;
        snprintf(values[j], SEGC_TUNE_VALUE, "%s", p + 1);
        p = q;
    }
    char dir[SEGC_CFG_PATH + 64], ck[SEGC_CFG_PATH + 96], e[1024] = "";
    segc_tune_trial_dir(s, trial, dir, sizeof dir);
    snprintf(ck, sizeof ck, "%s/checkpoints", dir);
    segc_config *c = malloc(sizeof *c);
    segc_train_status st = SEGC_TRAIN_FAILED;
    if (!c) {
        report("E out of memory");
    } else if (!segc_tune_trial_config(s, base, values, dir, segc_tune_worker_threads(s), c, e, sizeof e)) {
        report("E bad config: %s", e);
    } else {
        hook h = {s->metric};
        segc_train_opts to = {.resume = true, .quiet = true, .stop = o->stop, .on_eval = on_eval, .on_eval_user = &h};
        st = segc_train(c, &to, e, sizeof e);
        if (st != SEGC_TRAIN_DONE) report("E %s", *e ? e : "training failed");
    }
    free(c);
    report("D %lld %d", (long long)segc_tune_latest_iter(ck), (int)st);
}

void segc_tune_worker(const segc_tune_spec *s, const segc_config *base, const segc_tune_opts *o) {
    char *msg = malloc(SEGC_TUNE_MSG + 1);
    if (!msg) segc_dist_fail("tune worker: out of memory");
    for (;;) {
        int64_t n = segc_dist_recv_bytes(0, SEGC_TUNE_TAG_RUN, msg, SEGC_TUNE_MSG, NULL, -1);
        msg[n] = 0;
        if (msg[0] != 'T') break;   /* "Q": the search is over */
        run_trial(s, base, o, msg);
    }
    free(msg);
}
