/* Training checkpoints with exact resume.
 *
 * A checkpoint of iteration N in DIR is a pair of safetensors files:
 *   DIR/iter_000000N.safetensors        the weights, HF names (segc_params_save),
 *                                       metadata "segc_config" (resolved YAML)
 *                                       and "segc_iter"; loads anywhere weights do
 *   DIR/iter_000000N.state.safetensors  optimizer moments + metadata (segc_optimizer_save,
 *                                       prefix "optimizer."), "segc_train_state" (JSON:
 *                                       iteration, RNG, sampler position, best metric,
 *                                       elapsed time, a hash of the weights it belongs to)
 *                                       and "segc_config"
 * and DIR/latest names the newest complete pair ("iter_000000N"). Each file is
 * written atomically (temporary file, fsync, rename) and `latest` is replaced
 * only after both are on disk, so a crash or a failed write (full disk) at any
 * moment leaves `latest` pointing at the previous complete checkpoint. Older
 * pairs beyond keep_last are then deleted. DIR/best.safetensors holds the
 * weights of the best evaluation (metadata "segc_iter", "segc_best_metric"). */
#ifndef SEGC_CHECKPOINT_H
#define SEGC_CHECKPOINT_H
#include "segc/loader.h"
#include "segc/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct segc_train_state {
    int64_t iter;                  /* iterations completed */
    segc_rng rng;                  /* the training context's RNG (dropout, drop-path) */
    segc_sampler_state sampler;    /* loader position after iteration iter */
    double best_metric;            /* best mIoU so far (-1: none) */
    int64_t best_iter;
    double elapsed_s;              /* training wall time so far (for train.max_time_min) */
    double loss_ema;               /* smoothed loss shown by the progress bar */
} segc_train_state;

/* Writes the pair for st->iter, then `latest`, then prunes to keep_last.
 * config_yaml may be NULL. false + message (and `latest` untouched) on failure. */
bool segc_checkpoint_save(const char *dir, const segc_params *p, const segc_optimizer *opt, const segc_train_state *st,
                          const char *config_yaml, int keep_last, char *err, size_t errlen);
/* Paths of the checkpoint `latest` names. false with err "" when DIR has no
 * checkpoint yet; false with a message when `latest` is unreadable or names
 * missing files. */
bool segc_checkpoint_latest(const char *dir, char *weights, size_t wn, char *state, size_t sn, char *err, size_t errlen);
/* Loads weights (strict: another model's checkpoint is refused naming the
 * first mismatching tensor), optimizer state and st. opt may be NULL (weights
 * only); config_yaml (may be NULL) receives a malloc'd copy of the stored
 * configuration. Verifies the state belongs to those weights. */
bool segc_checkpoint_load(const char *weights, const char *state, segc_params *p, segc_optimizer *opt,
                          segc_train_state *st, char **config_yaml, char *err, size_t errlen);
/* Further state kept in the state file (e.g. EMA weights, segc/recipes.h):
 * save adds tensors/metadata; load checks and restores them (after the weights
 * and optimizer; a failure restores the weights and fails the load). */
typedef struct segc_ckpt_extra {
    void (*save)(void *user, segc_st_writer *w);
    bool (*load)(void *user, const segc_st_file *f, char *err, size_t errlen);
    void *user;
} segc_ckpt_extra;
bool segc_checkpoint_save_ex(const char *dir, const segc_params *p, const segc_optimizer *opt, const segc_train_state *st,
                             const char *config_yaml, int keep_last, const segc_ckpt_extra *extra, char *err, size_t errlen);
bool segc_checkpoint_load_ex(const char *weights, const char *state, segc_params *p, segc_optimizer *opt,
                             segc_train_state *st, char **config_yaml, const segc_ckpt_extra *extra, char *err,
                             size_t errlen);
/* DIR/best.safetensors: weights + iteration + metric, atomically. */
bool segc_checkpoint_save_best(const char *dir, const segc_params *p, int64_t iter, double metric,
                               const char *config_yaml, char *err, size_t errlen);
/* FNV-1a 64 over the parameter store's values (identifies a weights file's contents). */
uint64_t segc_params_hash(const segc_params *p);
/* "segc_config" metadata of a weights or state file (malloc'd), NULL when absent (err says why). */
char *segc_checkpoint_config(const char *path, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
