/* The trainer's calls into data-parallel training (src/train/dist_train.c);
 * each is a no-op or trivially true in a plain process. */
#ifndef SEGC_DIST_TRAIN_H
#define SEGC_DIST_TRAIN_H
#include "segc/checkpoint.h"
#include "segc/config.h"
#include "segc/params.h"

/* A hash of this segc build (version, build time, struct layouts). */
uint64_t segc_dist_build_hash(void);
/* After setup on every rank: false on all when any rank failed (err: the
 * first failing rank's message), when builds or resolved configurations
 * differ, or when ranks resumed different iterations; then rank 0's
 * parameters and buffers on every rank. */
bool segc_dist_train_start(bool setup_ok, const char *config_yaml, segc_params *params, segc_train_state *st, char *err,
                           size_t errlen);
/* Non-trainable tensors (BN running statistics) averaged over ranks, before
 * evaluations and checkpoints; nothing when synced (SyncBatchNorm). */
void segc_dist_average_buffers(segc_params *p, bool synced);
/* The mean of every rank's loss (added in rank order), NaN on every rank
 * when any rank's is not finite; lv itself in a plain process. */
double segc_dist_global_loss(double lv);
/* Each flag true on every rank when it is true on any. */
void segc_dist_any(bool *a, bool *b);
/* A failure only this rank saw: ends the whole job naming rank and host
 * (returns in a plain process). */
void segc_dist_end_on_failure(const char *msg);
#endif
