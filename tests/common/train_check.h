/* Training-test helpers shared by the family tests: a configuration from
 * overrides on a real dataset ($SEGC_DATA or ../shared/data; missing data
 * fails the test), bitwise comparison of checkpoint files, and the
 * stop-and-resume check every family ships. */
#ifndef SEGC_TEST_TRAIN_CHECK_H
#define SEGC_TEST_TRAIN_CHECK_H
#include "segc/trainer.h"

/* defaults + overrides, data.root = <data>/<dataset_dir>, train.work_dir =
 * work_dir; stop_each_iteration sets a time limit that has already run out, so
 * training stops (with a checkpoint) after every iteration. */
void tc_config(segc_config *c, const char *const *ov, int n_ov, const char *dataset_dir, const char *work_dir,
               bool stop_each_iteration);
/* every tensor of two safetensors files bitwise equal */
void tc_assert_same_tensors(const char *a, const char *b);
/* the run's checkpoints/latest (malloc'd), NULL when absent */
char *tc_latest(const char *run_dir);
/* Trains ov for max_iters uninterrupted in a fresh folder, then again stopped
 * after iterations 1..rounds (each stop checked, each run resumed), then
 * resumed to the end: the final weights and training state must equal the
 * uninterrupted run's bit for bit. */
void tc_resume_exact(const char *const *ov, int n_ov, const char *dataset_dir, int rounds, int max_iters);
#endif
