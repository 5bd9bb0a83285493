/* `segc tune SPEC.yaml [key=value ...]` / `segc tune --resume DIR [SPEC.yaml] [key=value ...]`:
 * hyper-parameter search (src/tune/). Exit 0 when the search ran (failed trials are
 * reported in the table and files), 1 on errors, 2 on usage errors. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "segc/dist.h"
#include "segc/tune.h"

static void tune_usage(FILE *f) {
    fprintf(f,
            "usage: segc tune SPEC.yaml [key=value ...] [--quiet]\n"
            "       segc tune --resume DIR [SPEC.yaml] [key=value ...]\n"
            "  SPEC.yaml        base config, config overrides, search space and tune settings (see configs/tune/)\n"
            "  tune.KEY=value   override a tune setting, e.g. tune.concurrent=2 tune.num_samples=8\n"
            "  key=value        override the base config, e.g. data.root=/x\n"
            "  --resume DIR     continue the search in DIR after a stop or a kill: unfinished trials go on from\n"
            "                   their last checkpoints and earlier decisions stand (with SPEC: checked against DIR's)\n"
            "  --quiet          no table on the terminal\n"
            "writes DIR/tune.jsonl (events), tune.csv, best.yaml, tune.html and DIR/trial_NNNN/ run directories.\n"
            "Ctrl-C stops every trial at its next iteration with a checkpoint; --resume continues.\n");
}

/* under mpirun every rank parses the same spec: rank 0 alone says what is wrong */
#define say_err(...) do { if (segc_dist_job_rank() == 0) fprintf(stderr, __VA_ARGS__); } while (0)

static volatile int stop_requested;
static void on_stop(int sig) {
    stop_requested = 1;
    signal(sig, SIG_DFL);
}

int segc_cmd_tune(int argc, char **argv) {
    const char *spec_path = NULL, *resume = NULL;
    char **ov = calloc((size_t)argc + 1, sizeof *ov);
    int n_ov = 0, rc = 2;
    segc_tune_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { tune_usage(stdout); rc = 0; goto done; }
        else if (!strcmp(a, "--resume")) {
            if (i + 1 >= argc) { say_err("segc tune: --resume needs a directory\n"); goto done; }
            resume = argv[++i];
        } else if (!strcmp(a, "--quiet")) o.quiet = true;
        else if (a[0] == '-') { say_err("segc tune: unknown option %s\n", a); tune_usage(stderr); goto done; }
        else if (strchr(a, '=')) ov[n_ov++] = argv[i];
        else if (!spec_path) spec_path = a;
        else { say_err("segc tune: unexpected argument %s (one SPEC file)\n", a); goto done; }
    }
    if (!spec_path && !resume) { tune_usage(stderr); goto done; }
    rc = 1;
    segc_tune_spec s;
    segc_tune_spec_defaults(&s);
    char err[1536], saved[4200];
    if (!spec_path) {
        snprintf(saved, sizeof saved, "%s/spec.yaml", resume);
        spec_path = saved;
    }
    if (!segc_tune_spec_load(&s, spec_path, err, sizeof err)) { say_err("segc tune: %s\n", err); goto done; }
    for (int i = 0; i < n_ov; i++)
        if (!segc_tune_spec_override(&s, ov[i], err, sizeof err)) { say_err("segc tune: %s\n", err); goto done; }
    if (resume) {
        if (strlen(resume) >= sizeof s.dir) { say_err("segc tune: --resume: path too long\n"); goto done; }
        snprintf(s.dir, sizeof s.dir, "%s", resume);
    }
    segc_config *base = malloc(sizeof *base);
    if (!base || !segc_tune_spec_finish(&s, base, err, sizeof err)) {
        say_err("segc tune: %s\n", base ? err : "out of memory");
        free(base);
        goto done;
    }
    o.resume = resume != NULL;
    o.stop = &stop_requested;
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGUSR1, on_stop);   /* what mpirun forwards to every rank (kill -USR1 <mpirun>) */
    bool ok = segc_tune_run(&s, base, &o, err, sizeof err);
    free(base);
    if (!ok) { say_err("segc tune: %s\n", err); goto done; }
    if (segc_dist_job_rank() == 0) printf("results: %s/tune.html, tune.csv, best.yaml\n", s.dir);
    rc = 0;
done:
    free(ov);
    return rc;
}
