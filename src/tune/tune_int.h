/* Internal to src/tune: what the runner (rank 0, the scheduler) and the MPI
 * worker (worker.c, the other ranks) share. */
#ifndef SEGC_TUNE_INT_H
#define SEGC_TUNE_INT_H
#include "segc/trainer.h"
#include "segc/tune.h"

/* Message tags of `segc tune` under an MPI launcher (segc_dist_send_bytes / recv_bytes):
 *  RUN    rank 0 -> worker: "T TRIAL\nVALUE0\nVALUE1..." (run trial with these values, from its
 *         checkpoint if any) or "Q" (the search is over: return)
 *  REPORT worker -> rank 0: one line of the trial protocol: "R ITER METRIC LOSS" after each
 *         evaluation (then the worker waits for a DECIDE), "E MESSAGE" (failure),
 *         "D ITER STATUS" (the run ended: latest checkpoint, segc_train's status)
 *  DECIDE rank 0 -> worker: one byte, 'C' continue, 'S' stop, 'P' pause */
enum { SEGC_TUNE_TAG_RUN = 7101, SEGC_TUNE_TAG_REPORT = 7102, SEGC_TUNE_TAG_DECIDE = 7103 };
#define SEGC_TUNE_MSG 4096

void segc_tune_trial_dir(const segc_tune_spec *s, int trial, char *buf, size_t n);
/* the iteration of the checkpoint ckdir/latest names (0: none) */
int64_t segc_tune_latest_iter(const char *ckdir);
/* the searched metric of an evaluation (loss: the training loss); NaN + why when not reported */
double segc_tune_metric_of(const char *name, const segc_eval_result *r, double loss, char *why, size_t n);
/* compute threads of a trial on an MPI worker (tune.threads, or the host's cores / its ranks) */
int segc_tune_worker_threads(const segc_tune_spec *s);
/* the worker loop of ranks > 0: runs the trials rank 0 sends until it sends "Q" */
void segc_tune_worker(const segc_tune_spec *s, const segc_config *base, const segc_tune_opts *o);

#endif
