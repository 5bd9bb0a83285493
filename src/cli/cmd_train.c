/* `segc train CONFIG.yaml [key=value ...] [--resume RUN_DIR] [--force]`:
 * resolve the configuration and run the training loop (src/train/trainer.c).
 * Exit 0 when done, 1 on errors, 2 on usage errors, 3 when the loss or the
 * gradients became NaN/Inf (the last good checkpoint is kept). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "segc/dist.h"
#include "segc/profile.h"
#include "segc/trainer.h"

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: segc train CONFIG.yaml [key=value ...] [options]\n"
            "       segc train --resume RUN_DIR [key=value ...]\n"
            "  key=value        override a config key, e.g. optimizer.lr=1e-4 data.root=/x train.max_iters=100\n"
            "  --resume RUN_DIR continue the run in RUN_DIR from its latest checkpoint (exactly: same weights as\n"
            "                   an uninterrupted run); without CONFIG, RUN_DIR/config.yaml is used\n"
            "  --force          start over in a work_dir that already holds checkpoints\n"
            "  --quiet          no progress output\n"
            "  --keys           list every config key (and each model family's own)\n"
            "  --profile [A:B]  Chrome/Perfetto trace of iterations A..B (default 2:4) in WORK_DIR/trace.json\n"
            "                   (one slice per op forward/backward, data waits, optimizer, eval) + per-op table\n"
            "Ctrl-C (SIGINT/SIGTERM) stops after the current iteration with a checkpoint; a second one aborts.\n"
            "exit status: 0 done, 1 error, 2 usage, 3 loss/gradients became NaN or Inf\n");
}

static void list_keys(void) {
    for (int i = 0; i < segc_config_n_keys(); i++) printf("  %-38s %s\n", segc_config_key(i), segc_config_key_help(i));
    /* each family's own keys, valid when model.type names it */
    for (int f = 0; f < segc_model_n_families(); f++) {
        const segc_model_family *fam = segc_model_family_at(f);
        printf("model.type: %s\n", fam->type);
        if (fam->variants) printf("  %-38s %s (default %s)\n", "model.variant", fam->variants, fam->default_variant);
        for (int k = 0; k < fam->n_keys; k++) {
            char key[96];
            snprintf(key, sizeof key, "model.%s", fam->keys[k].name);
            printf("  %-38s %s (default %s)\n", key, fam->keys[k].help, fam->keys[k].dflt);
        }
    }
}

/* Shared by train/eval/predict: defaults, file, overrides, finish. */
bool segc_cli_config(segc_config *c, const char *path, char **overrides, int n_overrides, const char *work_dir,
                     char *err, size_t errlen) {
    segc_config_defaults(c);
    if (path && !segc_config_load(c, path, err, errlen)) return false;
    for (int i = 0; i < n_overrides; i++)
        if (!segc_config_override(c, overrides[i], err, errlen)) return false;
    if (work_dir) {
        if (strlen(work_dir) >= sizeof c->train.work_dir) {
            snprintf(err, errlen, "--resume: path too long");
            return false;
        }
        snprintf(c->train.work_dir, sizeof c->train.work_dir, "%s", work_dir);
    }
    return segc_config_finish(c, err, errlen);
}

/* First SIGINT/SIGTERM/SIGUSR1: finish the iteration, checkpoint, stop. Second: default action. */
static volatile int stop_requested;
static void on_stop_signal(int sig) {
    stop_requested = 1;
    signal(sig, SIG_DFL);
}

int segc_cmd_train(int argc, char **argv) {
    const char *config = NULL, *resume = NULL;
    char **ov = calloc((size_t)argc + 1, sizeof *ov);
    int n_ov = 0;
    segc_train_opts o = {0};
    int rc = 2, p;
    bool profile = false;
    int64_t pf = SEGC_PROFILE_DEFAULT_FIRST, pl = SEGC_PROFILE_DEFAULT_LAST;
    char trace[4200];
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) { train_usage(stdout); rc = 0; goto done; }
        else if (!strcmp(s, "--keys")) { list_keys(); rc = 0; goto done; }
        else if (!strcmp(s, "--resume")) {
            if (i + 1 >= argc) { fprintf(stderr, "segc train: --resume needs a run directory\n"); goto done; }
            resume = argv[++i];
        } else if (!strcmp(s, "--force")) o.force = true;
        else if (!strcmp(s, "--quiet")) o.quiet = true;
        else if ((p = segc_cli_profile_opt(argc, argv, &i, "train", &profile, &pf, &pl))) {
            if (p < 0) goto done;
        }
        else if (s[0] == '-') { fprintf(stderr, "segc train: unknown option %s\n", s); train_usage(stderr); goto done; }
        else if (strchr(s, '=')) ov[n_ov++] = argv[i];
        else if (!config) config = s;
        else { fprintf(stderr, "segc train: unexpected argument %s (one CONFIG file)\n", s); goto done; }
    }
    char saved[4096];
    if (!config && resume) {
        snprintf(saved, sizeof saved, "%s/config.yaml", resume);
        config = saved;
    }
    if (!config) { train_usage(stderr); goto done; }
    o.resume = resume != NULL;
    segc_config c;
    char err[1024];
    if (!segc_cli_config(&c, config, ov, n_ov, resume, err, sizeof err)) {
        if (segc_dist_is_writer()) fprintf(stderr, "segc train: %s\n", err);   /* every rank failed alike */
        rc = 1;
        goto done;
    }
    if (profile) {
        snprintf(trace, sizeof trace, "%s/trace.json", c.train.work_dir);
        o.profile_path = trace;
        o.profile_first = pf;
        o.profile_last = pl;
    }
    o.stop = &stop_requested;
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    signal(SIGUSR1, on_stop_signal);   /* what mpirun forwards to every rank (kill -USR1 <mpirun>) */
    segc_train_status st = segc_train(&c, &o, err, sizeof err);
    if (st != SEGC_TRAIN_DONE && segc_dist_is_writer()) fprintf(stderr, "segc %s\n", err);   /* one error line */
    rc = (int)st;
done:
    free(ov);
    return rc;
}
