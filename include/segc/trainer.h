/* segc training loop, evaluation and run reports (what `segc train` and
 * `segc eval` run).
 *
 * A run directory (train.work_dir, default runs/NAME) holds:
 *   config.yaml      the resolved configuration
 *   metrics.jsonl    one JSON object per line: {"iter", "loss", "lr", "img_s",
 *                    "time_s", "rss_mb"} every train.log_interval iterations and
 *                    {"iter", "eval": {mIoU, mAcc, aAcc, mDice, IoU, Acc, Dice, ...}}
 *                    per evaluation (the task evaluator's JSON, task.h)
 *   report.html      self-contained report (curves, metrics, predictions)
 *   checkpoints/     see checkpoint.h (iter_N pairs, latest, best.safetensors)
 *
 * Determinism: with the same configuration (seed) and thread count, training
 * is bitwise reproducible, and a run interrupted at any moment (even SIGKILL)
 * and resumed from its latest checkpoint ends with the same weights as an
 * uninterrupted one: the checkpoint holds everything the trajectory depends
 * on (weights and BN statistics, optimizer moments and step, the iteration,
 * the RNG stream of dropout/drop-path, the sampler position; augmentations
 * are seeded per sample and the LR schedule is a closed form). */
#ifndef SEGC_TRAINER_H
#define SEGC_TRAINER_H
#include <stdio.h>

#include "segc/checkpoint.h"
#include "segc/config.h"
#include "segc/infer.h"
#include "segc/metrics.h"
#include "segc/model.h"
#include "segc/predict.h"
#include "segc/task.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- building blocks from a configuration ---- */
/* Opens data.dataset at the resolved data.root (split NULL: train_split). */
segc_dataset *segc_config_open_dataset(const segc_config *c, const char *split, char *err, size_t errlen);
/* The training augmentation of data.pipeline: mmseg (RandomResize,
 * RandomCrop (cat_max_ratio), RandomFlip, PhotoMetricDistortion, Normalize,
 * Pad: mmseg's SegFormer pipeline) or nnunet (nnU-Net's 2-D pipeline on
 * z-scored medical slices, patch = data.crop_size). */
void segc_config_train_pipeline(const segc_config *c, segc_pipeline *p);
/* [Resize keep_ratio to data.test_scale (labels untouched)], Normalize (mmseg);
 * nothing for nnunet (slices are z-scored by the dataset). */
void segc_config_eval_pipeline(const segc_config *c, segc_pipeline *p);
void segc_config_infer_opts(const segc_config *c, segc_infer_opts *o);
/* The model a configuration describes (num_classes: the dataset's when the
 * config leaves model.num_classes at 0; input channels model.in_channels,
 * else 3). Zero-initialised parameters; built through the model registry. */
segc_model *segc_config_model(const segc_config *c, int num_classes, char *err, size_t errlen);
/* The same with classes and input channels taken from the dataset. */
segc_model *segc_config_model_for(const segc_config *c, const segc_dataset *ds, char *err, size_t errlen);
/* Image channels of the dataset's samples (sample 0), 0 + message on failure. */
int segc_dataset_channels(const segc_dataset *ds, char *err, size_t errlen);
segc_dtype segc_config_dtype(const segc_config *c);
/* ctx->bf16_grads for a training context: train.bf16_grads where bf16 GEMMs are native (without
 * them, as under AVX2, every bf16 gradient would be widened again for its GEMMs: conversions
 * instead of saved traffic). Only bf16 tensors ever take them, so f32 training is unaffected. */
bool segc_config_bf16_grads(const segc_config *c);
/* The evaluator specification of a configuration for a model on a dataset
 * (classes, ignore 255, primary metric = train.best_metric, per-volume and
 * region Dice from test.*). class_names must hold 256 entries. */
void segc_config_eval_spec(const segc_config *c, const segc_model *m, const segc_dataset *ds, const char **class_names,
                           segc_eval_spec *s);
/* The model type a checkpoint's stored configuration names ("" when it has
 * none); false + message when the file cannot be read. */
bool segc_checkpoint_model_type(const char *path, char *type, size_t n, char *err, size_t errlen);
/* Loads checkpoint weights into m strictly, first refusing a checkpoint of
 * another model family with a message naming both. */
bool segc_model_load_checkpoint(segc_model *m, const char *path, char *err, size_t errlen);

/* ---- detection training (src/train/train_detection.c) ---- */
/* The task of the configuration's model family (segmentation when unknown). */
segc_task_kind segc_config_task(const segc_config *c);
/* The training samples of a detection dataset that have a non-crowd box
 * (MLPerf skips the others); *state owns the index (free with
 * segc_detection_train_source_free), *skipped counts the images left out. */
bool segc_detection_train_source(const segc_dataset *ds, segc_sample_source *src, void **state, int64_t *skipped,
                                 char *err, size_t errlen);
void segc_detection_train_source_free(void *state);
/* A batch's boxes as the loss's targets (pixels of the network input). */
segc_targets segc_detection_targets(const segc_batch *b);
/* Fixed synthetic boxes (4 per image, one crowd) for n images of h x w and K classes (segc bench);
 * *state owns them (segc_detection_synthetic_targets_free). false on out-of-memory. */
bool segc_detection_synthetic_targets(int n, int h, int w, int num_classes, segc_targets *t, void **state);
void segc_detection_synthetic_targets_free(void *state);

/* ---- evaluation ---- */
typedef struct segc_evaluate_opts {
    int64_t max_samples;          /* 0: the whole split */
    int keep;                     /* predictions to keep in samples[] */
    segc_eval_sample *samples;    /* keep entries (out) */
    int n_kept;                   /* (out) */
    FILE *progress;               /* NULL: silent */
    segc_ctx *ctx, *work;         /* contexts to reuse (NULL: made for this call) */
    bool profile_images;          /* announce each batch to the profiler as an iteration (segc eval --profile) */
} segc_evaluate_opts;

/* Runs the model over ds with the configuration's test settings (mode,
 * flip, scales, Gaussian windows) through the one evaluation loop
 * (segc_eval_dataset) and the task evaluator; fills result
 * (segc_eval_result_free). */
bool segc_evaluate(segc_model *m, const segc_config *c, const segc_dataset *ds, segc_evaluate_opts *o,
                   segc_eval_result *result, char *err, size_t errlen);

/* ---- training ---- */
typedef struct segc_train_opts {
    bool resume;         /* continue from the latest checkpoint in c->train.work_dir (fresh start when none) */
    bool force;          /* a fresh run may discard the checkpoints already in work_dir */
    bool quiet;          /* no progress output (errors are still returned) */
    FILE *progress;      /* progress stream (NULL: stderr) */
    /* when it becomes non-zero (e.g. set by a SIGINT handler), training stops
     * after the current iteration with a checkpoint and a report */
    const volatile int *stop;
    /* --profile: a Chrome/Perfetto trace of iterations profile_first..profile_last
     * (as logged, from 1) written to profile_path, and a per-op summary on the
     * progress stream at the end (NULL: off) */
    const char *profile_path;
    int64_t profile_first, profile_last;
    /* segc tune: called after every evaluation (r: its result, NULL without a validation
     * split; train_loss: the smoothed training loss); non-zero stops the run after this
     * iteration's checkpoint (SEGC_TRAIN_DONE; --resume continues it) */
    int (*on_eval)(void *user, int64_t iter, const segc_eval_result *r, double train_loss);
    void *on_eval_user;
} segc_train_opts;

typedef enum {
    SEGC_TRAIN_DONE = 0,       /* reached train.max_iters or train.max_time_min, or stopped on request */
    SEGC_TRAIN_FAILED = 1,     /* setup, data, checkpoint write, ...: message in err */
    SEGC_TRAIN_NONFINITE = 3,  /* loss or gradient became NaN/Inf; the last good checkpoint is kept */
} segc_train_status;

segc_train_status segc_train(const segc_config *c, const segc_train_opts *o, char *err, size_t errlen);

/* ---- report ---- */
typedef struct segc_report {
    const char *title;
    const char *status;                /* one line, e.g. "iteration 400 / 4000" */
    const char *config_yaml;
    const segc_metrics *metrics;       /* latest evaluation (NULL: none yet) */
    const char *primary;               /* metric plotted from metrics.jsonl (NULL: mIoU) */
    int n_extra;                       /* further metrics shown beside mIoU (e.g. mDice, Dice_WT) */
    const char *extra_names[8];
    double extra_values[8];
    const char *const *class_names;
    const uint8_t *palette;            /* n_classes rgb triplets */
    int n_classes;
    const segc_eval_sample *samples;
    int n_samples;
    /* what the evaluation covered, shown with it (a 24-image periodic check
     * must not read like the whole split) */
    const char *split;                 /* "val" (NULL: not shown) */
    int64_t eval_iter;                 /* the iteration it followed (0: not shown) */
    int64_t eval_images;               /* images it used */
    int64_t split_images;              /* images in the split (0: unknown) */
} segc_report;

/* rep's extras (mDice, Dice_*, a non-mIoU primary metric) from an evaluation result */
void segc_report_set_extras(segc_report *rep, const segc_eval_result *r);

/* RUN_DIR/report.html from r and RUN_DIR/metrics.jsonl: inline SVG curves of
 * loss, lr and the primary metric, the per-class table, and image | ground truth |
 * prediction rows as inline base64 PNGs. Self-contained, written atomically. */
bool segc_report_write(const char *run_dir, const segc_report *r, char *err, size_t errlen);
/* The final evaluation (`segc eval` of a run's checkpoint, typically on the
 * whole split): written as RUN_DIR/final_eval.html and put into
 * RUN_DIR/report.html (replacing an earlier one), where later report writes
 * keep it. Uses r's metrics, extras, classes, split and image counts;
 * checkpoint names the weights. Training removes it when it starts or resumes
 * (the weights change). */
bool segc_report_add_final(const char *run_dir, const segc_report *r, const char *checkpoint, char *err, size_t errlen);

/* Peak resident memory of the process in MiB. */
double segc_peak_rss_mb(void);

#ifdef __cplusplus
}
#endif
#endif
