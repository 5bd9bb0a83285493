/* Training configuration: cross-field validation and the builders that turn
 * a segc_config into optimizer / schedule settings and a dataset root. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "segc/config.h"

/* ---- validation ---- */
static bool known_metric(const char *m) {
    static const char *const names[] = {"mIoU", "mAcc", "aAcc", "mDice", "Dice_WT", "Dice_TC", "Dice_ET", "val_loss"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(m, names[i])) return true;
    return !strncmp(m, "IoU.", 4) || !strncmp(m, "Dice.", 5) || !strncmp(m, "Acc.", 4) ||
           !strncmp(m, "bbox_", 5);   /* detection (task.h); the evaluator checks the exact name */
}

bool segc_config_finish(segc_config *c, char *err, size_t errlen) {
    if (c->model.num_classes < 0 || c->model.num_classes > 255)
        return segc_errorf(err, errlen, "model.num_classes: expected 0 (dataset's) .. 255, found %d", c->model.num_classes);
    if (c->model.in_channels < 0 || c->model.in_channels > 64)
        return segc_errorf(err, errlen, "model.in_channels: expected 0 (dataset's) .. 64, found %d", c->model.in_channels);
    /* the family checks its own keys (placeholders for what the dataset decides later) */
    segc_model_spec spec = segc_config_model_spec(c, 0, 0);
    if (!segc_model_spec_validate(&spec, err, errlen)) return false;
    if (*c->train.best_metric && !known_metric(c->train.best_metric))
        return segc_errorf(err, errlen, "train.best_metric: expected mIoU, mAcc, aAcc, mDice, Dice_WT/TC/ET, IoU.<class>, "
                           "Dice.<class>, val_loss (minimised) or, for detection, bbox_mAP, bbox_mAP_50, ..., found '%s'",
                           c->train.best_metric);
    if (!strncmp(c->train.best_metric, "Dice_", 5) && !strcmp(c->test.regions, "none"))
        return segc_errorf(err, errlen, "train.best_metric: %s needs test.regions=brats (found '%s')", c->train.best_metric,
                           c->test.regions);
    if (!segc_loss_cfg_check(&c->loss, (int64_t)c->data.crop_size[0] * c->data.crop_size[1], err, errlen)) return false;
    if (c->data.num_folds < 0 || c->data.num_folds == 1 || c->data.num_folds > 100)
        return segc_errorf(err, errlen, "data.num_folds: expected 0 (off) or 2..100, found %d", c->data.num_folds);
    if (c->data.num_folds && (c->data.fold < 0 || c->data.fold >= c->data.num_folds))
        return segc_errorf(err, errlen, "data.fold: expected 0..%d (data.num_folds = %d), found %d", c->data.num_folds - 1,
                           c->data.num_folds, c->data.fold);
    if (!(c->data.holdout >= 0 && c->data.holdout <= 0.5) || c->data.holdout_fold < 0)
        return segc_errorf(err, errlen, "data.holdout / data.holdout_fold: expected a fraction in [0, 0.5] and a fold >= 0, "
                           "found %g / %d", c->data.holdout, c->data.holdout_fold);
    if (!(c->data.fg_prob >= 0 && c->data.fg_prob <= 1))
        return segc_errorf(err, errlen, "data.fg_prob: expected [0, 1], found %g", c->data.fg_prob);
    if (!*c->data.root) return segc_errorf(err, errlen, "data.root: expected a dataset directory, found an empty string");
    if (c->data.batch_size < 1 || c->data.num_workers < 0)
        return segc_errorf(err, errlen, "data.batch_size >= 1 and data.num_workers >= 0 expected, found %d and %d",
                           c->data.batch_size, c->data.num_workers);
    if (c->data.scale[0] < 1 || c->data.scale[1] < 1 || c->data.crop_size[0] < 1 || c->data.crop_size[1] < 1)
        return segc_errorf(err, errlen, "data.scale and data.crop_size: expected positive sizes, found [%d, %d] and [%d, %d]",
                           c->data.scale[0], c->data.scale[1], c->data.crop_size[0], c->data.crop_size[1]);
    if (!(c->data.ratio_range[0] > 0 && c->data.ratio_range[0] <= c->data.ratio_range[1]))
        return segc_errorf(err, errlen, "data.ratio_range: expected 0 < lo <= hi, found [%g, %g]", c->data.ratio_range[0],
                           c->data.ratio_range[1]);
    if (!(c->data.cat_max_ratio > 0 && c->data.cat_max_ratio <= 1))
        return segc_errorf(err, errlen, "data.cat_max_ratio: expected (0, 1], found %g", c->data.cat_max_ratio);
    if (!(c->data.flip_prob >= 0 && c->data.flip_prob <= 1))
        return segc_errorf(err, errlen, "data.flip_prob: expected [0, 1], found %g", c->data.flip_prob);
    for (int k = 0; k < 3; k++)
        if (!(c->data.std[k] > 0)) return segc_errorf(err, errlen, "data.std: expected positive values, found %g", c->data.std[k]);
    if (c->data.test_scale[0] < 0 || c->data.test_scale[1] < 0 || (!c->data.test_scale[0] != !c->data.test_scale[1]))
        return segc_errorf(err, errlen, "data.test_scale: expected [0, 0] or two positive sizes, found [%d, %d]",
                           c->data.test_scale[0], c->data.test_scale[1]);
    if (!strcmp(c->test.mode, "slide") && (c->test.crop_size[0] < 1 || c->test.crop_size[1] < 1 ||
                                            c->test.stride[0] < 1 || c->test.stride[1] < 1))
        return segc_errorf(err, errlen, "test.mode slide: expected positive test.crop_size and test.stride, found [%d, %d] and [%d, %d]",
                           c->test.crop_size[0], c->test.crop_size[1], c->test.stride[0], c->test.stride[1]);
    for (int k = 0; k < c->test.n_scales; k++)
        if (!(c->test.scales[k] > 0)) return segc_errorf(err, errlen, "test.scales: expected positive ratios, found %g", c->test.scales[k]);
    if (c->schedule.warmup_iters < 0 || (!c->in_epochs && c->schedule.warmup_iters >= c->train.max_iters))
        return segc_errorf(err, errlen, "schedule.warmup_iters: expected 0 <= warmup < train.max_iters (%lld), found %lld",
                           (long long)c->train.max_iters, (long long)c->schedule.warmup_iters);
    if (c->train.max_iters < 1) return segc_errorf(err, errlen, "train.max_iters: expected >= 1, found %lld", (long long)c->train.max_iters);
    if (c->train.val_interval < 0 || c->train.checkpoint_interval < 1 || c->train.log_interval < 1 || c->train.keep_last < 1)
        return segc_errorf(err, errlen, "train: expected val_interval >= 0, checkpoint_interval >= 1, log_interval >= 1, "
                           "keep_last >= 1, found %lld, %lld, %lld, %d", (long long)c->train.val_interval,
                           (long long)c->train.checkpoint_interval, (long long)c->train.log_interval, c->train.keep_last);
    if (!(c->train.max_time_min >= 0)) return segc_errorf(err, errlen, "train.max_time_min: expected >= 0, found %g", c->train.max_time_min);
    if (!(c->dist.bucket_mb > 0 && c->dist.bucket_mb <= 4096) || !(c->dist.timeout_s >= 1 && c->dist.timeout_s <= 86400))
        return segc_errorf(err, errlen, "dist.bucket_mb, dist.timeout_s: expected in (0, 4096] and [1, 86400], found %g, %g",
                           c->dist.bucket_mb, c->dist.timeout_s);
    if (c->train.threads < 0 || c->train.val_max_samples < 0 || c->train.report_samples < 0 || c->train.seed < 0)
        return segc_errorf(err, errlen, "train.threads, seed, val_max_samples, report_samples: expected >= 0, found %d, %lld, %lld, %d",
                           c->train.threads, (long long)c->train.seed, (long long)c->train.val_max_samples, c->train.report_samples);
    char e2[256];
    segc_custom_key keys[SEGC_CFG_MAX_CUSTOM_KEYS];
    segc_optim_cfg oc = segc_config_optim(c, keys);
    segc_params none;
    segc_params_init(&none);
    segc_params_finalize(&none);
    segc_optimizer *probe = segc_optimizer_new(&none, &oc, e2, sizeof e2);
    segc_params_free(&none);
    if (!probe) return segc_errorf(err, errlen, "optimizer: %s", e2);
    segc_optimizer_free(probe);
    segc_schedule s;
    /* iteration-count checks of epoch durations wait for segc_config_resolve_durations */
    if (!c->in_epochs && !segc_config_schedule(c, &s, e2, sizeof e2)) return segc_errorf(err, errlen, "schedule: %s", e2);
    if (!segc_config_check_recipe(c, err, errlen)) return false;
    if (!*c->train.work_dir) snprintf(c->train.work_dir, sizeof c->train.work_dir, "runs/%s", c->name);
    return true;
}

segc_optim_cfg segc_config_optim(const segc_config *c, segc_custom_key *keys) {
    segc_opt_kind kind = !strcmp(c->optimizer.type, "sgd") ? SEGC_OPT_SGD
                         : !strcmp(c->optimizer.type, "decoupled_sgdw") ? SEGC_OPT_DECOUPLED_SGDW : SEGC_OPT_ADAMW;
    segc_optim_cfg oc = segc_optim_defaults(kind, c->optimizer.lr);
    oc.weight_decay = c->optimizer.weight_decay;
    oc.beta1 = c->optimizer.betas[0];
    oc.beta2 = c->optimizer.betas[1];
    oc.eps = c->optimizer.eps;
    oc.momentum = c->optimizer.momentum;
    oc.nesterov = c->optimizer.nesterov;
    oc.max_grad_norm = c->optimizer.max_grad_norm;
    for (int i = 0; i < c->optimizer.n_custom_keys; i++)
        keys[i] = (segc_custom_key){c->optimizer.custom_keys[i].key, c->optimizer.custom_keys[i].lr_mult,
                                    c->optimizer.custom_keys[i].decay_mult};
    oc.paramwise.custom_keys = keys;
    oc.paramwise.n_custom_keys = c->optimizer.n_custom_keys;
    oc.paramwise.bias_lr_mult = c->optimizer.bias_lr_mult;
    oc.paramwise.bias_decay_mult = c->optimizer.bias_decay_mult;
    oc.paramwise.norm_decay_mult = c->optimizer.norm_decay_mult;
    oc.paramwise.flat_decay_mult = c->optimizer.flat_decay_mult;
    return oc;
}

bool segc_config_schedule(const segc_config *c, segc_schedule *s, char *err, size_t errlen) {
    segc_schedule_init(s);
    int64_t w = c->schedule.warmup_iters, end = c->train.max_iters;
    if (w > 0 && !segc_schedule_add(s, segc_sched_linear(c->schedule.warmup_start_factor, 1.0, 0, w), err, errlen))
        return false;
    if (!strcmp(c->schedule.policy, "poly"))
        return segc_schedule_add(s, segc_sched_poly(c->schedule.power, c->schedule.eta_min, w, end), err, errlen);
    if (!strcmp(c->schedule.policy, "cosine"))
        return segc_schedule_add(s, segc_sched_cosine(0, c->schedule.eta_min, w, end), err, errlen);
    if (!strcmp(c->schedule.policy, "multistep")) {   /* absolute iterations, from 0 (warmup multiplies) */
        int64_t ms[SEGC_CFG_MAX_MILESTONES];
        for (int i = 0; i < c->schedule.n_milestones; i++) {
            ms[i] = (int64_t)c->schedule.milestones[i];
            if (ms[i] != c->schedule.milestones[i] || ms[i] < 1 || (i && ms[i] <= ms[i - 1]))
                return segc_errorf(err, errlen, "schedule.milestones: expected increasing iterations >= 1, found %g at "
                                   "position %d", c->schedule.milestones[i], i);
        }
        if (!(c->schedule.gamma > 0))
            return segc_errorf(err, errlen, "schedule.gamma: expected > 0, found %g", c->schedule.gamma);
        return segc_schedule_add(s, segc_sched_multistep(ms, c->schedule.n_milestones, c->schedule.gamma, 0, end), err,
                                 errlen);
    }
    return true;   /* constant after warmup */
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

bool segc_config_data_root(const segc_config *c, char *out, size_t n, char *err, size_t errlen) {
    const char *root = c->data.root, *env = getenv("SEGC_DATA");
    char tried[2][SEGC_CFG_PATH + 64];
    int nt = 0;
    if (env && *env && root[0] != '/') {
        const char *base = root + strlen(root);
        while (base > root && base[-1] == '/') base--;
        const char *e = base;
        while (base > root && base[-1] != '/') base--;
        snprintf(tried[nt], sizeof tried[nt], "%s/%.*s", env, (int)(e - base), base);
        if (is_dir(tried[nt])) return snprintf(out, n, "%s", tried[nt]) < (int)n;
        nt++;
    }
    snprintf(tried[nt], sizeof tried[nt], "%s", root);
    if (is_dir(root)) return snprintf(out, n, "%s", root) < (int)n;
    nt++;
    return segc_errorf(err, errlen, "data.root: dataset directory not found: %s%s%s (set data.root=DIR or $SEGC_DATA)",
                tried[0], nt > 1 ? ", " : "", nt > 1 ? tried[1] : "");
}

