/* segc tune: hyper-parameter search over training configurations, with
 * FIFO, ASHA (stop or promotion) and PBT schedulers (src/tune/).
 *
 * A spec (YAML) names a base training config, overrides applied to it, a
 * search space over config keys and the tuner's settings:
 *
 *   base: ../segformer/camvid_b0_cpu.yaml    # relative to the spec file
 *   config: {train.max_iters: 400}           # overrides of the base (any config key)
 *   space:
 *     optimizer.lr: {loguniform: [1.0e-5, 1.0e-3]}
 *     optimizer.weight_decay: {choice: [0.0, 0.01, 0.05]}
 *     model.drop_path_rate: {uniform: [0.0, 0.2]}
 *     data.batch_size: {grid: [4, 8]}         # grid keys are crossed: num_samples x product(grid sizes) trials
 *     model.variant,model.patch_size: {grid: [[vit-b, 16], [vit-l, 32]]}   # tied keys: one value list each
 *   tune:
 *     metric: mIoU            # any metric the evaluator reports, or loss (the training loss)
 *     mode: max               # max | min
 *     num_samples: 16
 *     search: random          # random (grid keys crossed, the rest sampled) | grid (every key enumerated)
 *     seed: 0
 *     scheduler: asha         # fifo | asha | pbt
 *     max_t: 400              # iterations (or "Nep": epochs of the training split)
 *     grace_period: 50        # asha
 *     reduction_factor: 3     # asha
 *     brackets: 1             # asha
 *     promotion: false        # asha: pause at rungs, resume the most promising (one device: best first)
 *     perturbation_interval: 100   # pbt
 *     quantile_fraction: 0.25      # pbt
 *     resample_probability: 0.25   # pbt
 *     report_interval: 0      # evaluate every N iterations (0: grace_period / perturbation_interval / max_t)
 *     concurrent: 1           # trials at once, as local processes sharing the cores
 *                             # (under mpirun -np N: ignored, one trial per rank 1..N-1, rank 0 schedules)
 *     threads: 0              # compute threads per trial (0: cores / concurrent)
 *     keep_checkpoints: 1     # iteration checkpoints kept per trial (stopped trials keep none)
 *     dir: ""                 # run directory ("": runs/tune/NAME)
 *
 * Distributions: grid/choice: [v, ...] (any YAML scalars); uniform/loguniform:
 * [lo, hi] (lo < hi; loguniform lo > 0); randint: [lo, hi) integers;
 * quniform: [lo, hi, q] (a uniform rounded to a multiple of q).
 *
 * Determinism: trial i's hyper-parameters depend only on (seed, i); ASHA's
 * bracket draw and PBT's exploit/explore draws on (seed, trial, iteration).
 * With concurrent: 1 a whole search (decisions and weights) is reproducible;
 * with more, decisions depend on the order results arrive (asynchronous). */
#ifndef SEGC_TUNE_H
#define SEGC_TUNE_H
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "segc/config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SEGC_TUNE_MAX_PARAMS 16
#define SEGC_TUNE_MAX_VALUES 32
#define SEGC_TUNE_VALUE 64
#define SEGC_TUNE_KEY 128
#define SEGC_TUNE_MAX_OVERRIDES 64
#define SEGC_TUNE_MAX_TRIALS 4096
#define SEGC_TUNE_MAX_RUNGS 32
#define SEGC_TUNE_MAX_BRACKETS 8

typedef enum {
    SEGC_DIST_GRID, SEGC_DIST_CHOICE, SEGC_DIST_UNIFORM, SEGC_DIST_LOGUNIFORM, SEGC_DIST_RANDINT, SEGC_DIST_QUNIFORM
} segc_tune_dist;

typedef struct segc_tune_param {
    char key[SEGC_TUNE_KEY];             /* a config key, e.g. optimizer.lr or model.drop_path_rate */
    segc_tune_dist dist;
    double lo, hi, q;                    /* numeric distributions */
    char values[SEGC_TUNE_MAX_VALUES][SEGC_TUNE_VALUE];   /* grid / choice: each value's YAML text */
    int n_values;
    int line;                            /* in the spec file (messages) */
} segc_tune_param;

typedef enum { SEGC_SCHED_FIFO, SEGC_SCHED_ASHA, SEGC_SCHED_PBT } segc_tune_sched_kind;

typedef struct segc_tune_spec {
    char name[SEGC_CFG_NAME];            /* the spec file's stem */
    char base[SEGC_CFG_PATH];            /* base config (resolved path; "": the built-in defaults) */
    char overrides[SEGC_TUNE_MAX_OVERRIDES][256];   /* "key=value", applied to the base in order */
    int n_overrides;
    segc_tune_param params[SEGC_TUNE_MAX_PARAMS];
    int n_params;
    char metric[SEGC_CFG_NAME];
    bool maximize;
    int num_samples;
    bool grid_search;                    /* search: grid */
    uint64_t seed;
    segc_tune_sched_kind scheduler;
    /* durations as given ("400", "400ba", "2ep"), resolved by segc_tune_spec_finish */
    char max_t_text[32], grace_text[32], perturb_text[32], report_text[32];
    int64_t max_t, grace_period, report_interval;
    double reduction_factor;
    int brackets;
    bool promotion;
    int64_t perturbation_interval;
    double quantile_fraction, resample_probability;
    /* run settings (may change on --resume) */
    int concurrent, threads, keep_checkpoints;
    char dir[SEGC_CFG_PATH];
} segc_tune_spec;

void segc_tune_spec_defaults(segc_tune_spec *s);
/* Parses a spec file (YAML) on top of s. false + one line naming the file:line and key. */
bool segc_tune_spec_load(segc_tune_spec *s, const char *path, char *err, size_t errlen);
bool segc_tune_spec_load_string(segc_tune_spec *s, const char *yaml, const char *origin, const char *spec_dir,
                                char *err, size_t errlen);
/* "tune.KEY=value" sets a tuner setting; any other "key=value" is appended to the base overrides. */
bool segc_tune_spec_override(segc_tune_spec *s, const char *assignment, char *err, size_t errlen);
/* Cross-checks: every space key is a config key (did-you-mean) whose sampled values the
 * config accepts, the metric is one the evaluator reports, the scheduler's settings fit
 * (grace_period < max_t, ...); resolves max_t ("Nep") and the defaults that depend on the
 * base config. Loads the base config into *base (max_t and report settings not yet applied). */
bool segc_tune_spec_finish(segc_tune_spec *s, segc_config *base, char *err, size_t errlen);
/* The spec as YAML that loads back to the same spec (base as an absolute path). With
 * identity_only, the run settings (concurrent, threads, keep_checkpoints, dir) are left out:
 * two specs of the same search give the same text. malloc'd. */
char *segc_tune_spec_to_yaml(const segc_tune_spec *s, bool identity_only);

/* ---- search ---- */
/* Trials the search makes: num_samples x the product of the grid sizes. */
int segc_tune_n_trials(const segc_tune_spec *s);
/* Trial i's value of every parameter, as YAML text (values[j] for params[j]). */
void segc_tune_sample(const segc_tune_spec *s, int trial, char values[][SEGC_TUNE_VALUE]);
/* A value drawn afresh from param's distribution with the uniform u in [0, 1) (PBT resample). */
void segc_tune_draw(const segc_tune_param *p, double u, char *out, size_t n);
/* The uniform of draw k of (seed, a, b): what every random decision of the tuner uses. */
double segc_tune_uniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t k);
/* Sets a space key to a value on c: "key=value", or for tied keys ("k1,k2": a grid/choice
 * whose values are lists [v1, v2]) each key to its entry. false + message. */
bool segc_tune_apply(segc_config *c, const char *key, const char *value, char *err, size_t errlen);
/* The trial's configuration: base, the values, then the tuner's train.* settings for the
 * trial (work_dir, max_iters = max_t, val/checkpoint intervals, keep_last, threads). */
bool segc_tune_trial_config(const segc_tune_spec *s, const segc_config *base, char values[][SEGC_TUNE_VALUE],
                            const char *work_dir, int threads, segc_config *out, char *err, size_t errlen);

/* ---- schedulers: pure state machines over reported results ---- */
typedef enum {
    SEGC_TRIAL_PENDING, SEGC_TRIAL_RUNNING, SEGC_TRIAL_PAUSED, SEGC_TRIAL_STOPPED, SEGC_TRIAL_DONE, SEGC_TRIAL_FAILED
} segc_trial_state;
const char *segc_trial_state_name(segc_trial_state s);

typedef enum { SEGC_TUNE_CONTINUE, SEGC_TUNE_STOP, SEGC_TUNE_PAUSE } segc_tune_action;
const char *segc_tune_action_name(segc_tune_action a);

typedef struct segc_tune_trial {
    int id;
    segc_trial_state state;
    char values[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE];
    int bracket;                        /* ASHA */
    int64_t iter;                       /* last reported iteration (0: none) */
    int64_t target;                     /* the run pauses when it reports at or after this iteration */
    double last, best;                  /* metric as reported (NaN: none) */
    double score;                       /* last, higher is better (mode min: negated) */
    double rung_score[SEGC_TUNE_MAX_RUNGS];   /* ASHA: score recorded at rung k (NaN: none) */
    bool promoted[SEGC_TUNE_MAX_RUNGS];
    int64_t last_perturb;               /* PBT */
    int exploit_source;                 /* PBT: set by a decision, applied by the runner (-1: none) */
    int64_t exploit_iter;
    int parent;                         /* PBT lineage: latest source trial (-1: none) */
    int n_exploits;
    char error[256];
} segc_tune_trial;

typedef struct segc_tune_sched {
    const segc_tune_spec *spec;
    segc_tune_trial *trials;
    int n_trials, n_planned;
    int n_brackets;
    int n_rungs[SEGC_TUNE_MAX_BRACKETS];
    int64_t milestones[SEGC_TUNE_MAX_BRACKETS][SEGC_TUNE_MAX_RUNGS];   /* ascending, all < max_t */
} segc_tune_sched;

bool segc_tune_sched_init(segc_tune_sched *t, const segc_tune_spec *s, char *err, size_t errlen);
void segc_tune_sched_free(segc_tune_sched *t);
/* The next run to start when a worker is free: *trial (a new trial is created with
 * segc_tune_sample's values, state PENDING) and the iteration it pauses at (*target).
 * false when nothing can start now (wait for a running trial), or, with *finished set,
 * when the search is over (paused trials that can no longer be promoted are stopped). */
bool segc_tune_sched_next(segc_tune_sched *t, int n_running, int *trial, int64_t *target, bool *finished);
/* Creates the next trial (segc_tune_sample's values, its bracket): what next() does for a
 * new trial; --resume replays the log through it. Returns its id (-1: all planned exist). */
int segc_tune_sched_add(segc_tune_sched *t);
/* A result of trial at iteration iter (metric as the evaluator reports it). PBT decisions
 * set trial->exploit_source (the runner copies that trial's checkpoint and values, then
 * segc_tune_sched_exploited). */
segc_tune_action segc_tune_sched_result(segc_tune_sched *t, int trial, int64_t iter, double metric);
/* PBT explore: the values of trial after copying source's (perturbed x1.2/x0.8 or
 * resampled with resample_probability, draws from (seed, trial, iter)). */
void segc_tune_sched_exploited(segc_tune_sched *t, int trial);
/* the run of trial ended: done (reached max_t), paused (checkpoint kept), stopped, failed */
void segc_tune_sched_ended(segc_tune_sched *t, int trial, segc_trial_state state, const char *error);
/* ASHA's cutoff: the (1 - 1/rf) percentile (linear interpolation) of scores[0..n) */
double segc_tune_percentile(const double *scores, int n, double q);

/* ---- the search ---- */
typedef struct segc_tune_opts {
    bool resume;          /* continue the search in spec->dir */
    bool quiet;           /* no table on the terminal */
    FILE *progress;       /* NULL: stderr */
    const volatile int *stop;   /* non-zero: stop the trials (checkpointed) and return */
} segc_tune_opts;

/* Runs the search; writes DIR/tune.jsonl (every event; also the state --resume
 * continues from), tune.csv, best.yaml, tune.html and DIR/trial_NNNN/ run dirs.
 * Returns false + message on errors of the search itself (not of a trial). */
bool segc_tune_run(segc_tune_spec *s, const segc_config *base, const segc_tune_opts *o, char *err, size_t errlen);

/* Results from DIR/tune.jsonl: tune.csv, best.yaml and tune.html (also done at the end of a run). */
bool segc_tune_write_results(const segc_tune_spec *s, const segc_config *base, const segc_tune_sched *t,
                             char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
