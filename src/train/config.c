/* YAML training configuration: schema, parsing (libyaml document API) and
 * dotted overrides; validation is in config_check.c, the resolved-config writer in config_emit.c. */
#include "segc/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "segc/ops_conv.h"
#include "segc/safetensors.h"

#include "config_schema.h"

/* ---- schema ---- */
#define M(m) offsetof(segc_config, m)
#define SZ(m) sizeof(((segc_config *)0)->m)
#define FI(k, m, h) {k, K_INT, M(m), 1, NO_COUNT, 0, NULL, h}
#define FL(k, m, h) {k, K_I64, M(m), 1, NO_COUNT, 0, NULL, h}
#define FD(k, m, h) {k, K_DBL, M(m), 1, NO_COUNT, 0, NULL, h}
#define FB(k, m, h) {k, K_BOOL, M(m), 1, NO_COUNT, 0, NULL, h}
#define FS(k, m, ch, h) {k, K_STR, M(m), 1, NO_COUNT, SZ(m), ch, h}
#define FIS(k, m, n, h) {k, K_INTS, M(m), n, NO_COUNT, 0, NULL, h}
#define FDS(k, m, n, h) {k, K_DBLS, M(m), n, NO_COUNT, 0, NULL, h}
#define FDV(k, m, n, cnt, h) {k, K_DBLS, M(m), n, M(cnt), 0, NULL, h}
#define FM(k, m, h) {k, K_MULT, M(m), 1, NO_COUNT, 0, NULL, h}
#define FIV(k, m, n, cnt, h) {k, K_INTS, M(m), n, M(cnt), 0, NULL, h}
/* a duration (int64 iterations, or epochs when bit `bit` of in_epochs is set) */
#define FDUR(k, m, bit, h) {k, K_DUR, M(m), bit, NO_COUNT, 0, NULL, h}

const field segc_cfg_schema[] = {
    FS("name", name, NULL, "run name (default: the config file's stem)"),
    FS("model.type", model.type, NULL, "model family (segc models); its own keys follow under model.*"),
    FS("model.variant", model.variant, NULL, "the family's variant (e.g. SegFormer b0..b5; empty: its default)"),
    FI("model.num_classes", model.num_classes, "classes (0: the dataset's)"),
    FI("model.in_channels", model.in_channels, "input channels (0: the dataset's)"),
    FS("model.pretrained", model.pretrained, NULL, "safetensors loaded non-strictly before training"),
    FS("data.dataset", data.dataset, "camvid|ade20k|cityscapes|voc|folder|coco|brats|msd", "dataset layout"),
    FS("data.root", data.root, NULL, "dataset root (relative: $SEGC_DATA/<last component> is tried first)"),
    FS("data.train_split", data.train_split, NULL, "training split"),
    FS("data.val_split", data.val_split, NULL, "validation split (periodic evaluation)"),
    FS("data.split", data.split, NULL, "split `segc eval` evaluates (empty: val_split)"),
    FS("data.reduce_zero_label", data.reduce_zero_label, "default|true|false", "label 0 -> ignore, k -> k-1"),
    FI("data.batch_size", data.batch_size, "training batch size"),
    FI("data.num_workers", data.num_workers, "loader threads (0: decode in the training thread)"),
    FIS("data.scale", data.scale, 2, "RandomResize scale (w, h)"),
    FDS("data.ratio_range", data.ratio_range, 2, "RandomResize ratio range"),
    FIS("data.crop_size", data.crop_size, 2, "RandomCrop size (h, w)"),
    FD("data.cat_max_ratio", data.cat_max_ratio, "RandomCrop: max share of one class (1: off)"),
    FD("data.flip_prob", data.flip_prob, "horizontal flip probability"),
    FB("data.photometric", data.photometric, "PhotoMetricDistortion"),
    FDS("data.mean", data.mean, 3, "normalisation mean (RGB, 0..255)"),
    FDS("data.std", data.std, 3, "normalisation std (RGB, 0..255)"),
    FIS("data.test_scale", data.test_scale, 2, "evaluation keep-ratio resize (w, h); 0 0: none"),
    FS("data.pipeline", data.pipeline, "mmseg|nnunet|resize",
       "training augmentation (nnunet: medical 2-D, crop_size = patch; detection: mmseg = SSD's chain, resize = resize + flip only)"),
    FD("data.fg_prob", data.fg_prob, "nnunet: probability of a foreground-centred crop"),
    FI("data.fold", data.fold, "k-fold: the validation fold (0..num_folds-1)"),
    FI("data.num_folds", data.num_folds, "k-fold splits of the training cases (0: off)"),
    FB("data.skip_bad", data.skip_bad, "COCO: boxes outside the image / of zero area, unknown categories or images in "
                                       "annotations and results files are warned about, counted and skipped (false: an error)"),
    FD("data.holdout", data.holdout, "fraction of train_split held out as split 'holdout' (contiguous frames; 0: off)"),
    FI("data.holdout_fold", data.holdout_fold, "which contiguous run of train_split is held out (0, 1, ...)"),
    FS("test.mode", test.mode, "whole|slide", "inference mode"),
    FIS("test.crop_size", test.crop_size, 2, "slide window (h, w)"),
    FIS("test.stride", test.stride, 2, "slide stride (h, w)"),
    FB("test.flip", test.flip, "horizontal-flip test-time augmentation"),
    FDV("test.scales", test.scales, SEGC_CFG_MAX_SCALES, test.n_scales, "multi-scale ratios"),
    FB("test.gaussian", test.gaussian, "slide: Gaussian-weighted window overlap (nnU-Net)"),
    FB("test.per_volume", test.per_volume, "medical: Dice per volume (slices reassembled)"),
    FS("test.regions", test.regions, "none|brats|msd_brats", "region Dice: brats (BraTS-2015 labels, 4 = enhancing) or msd_brats (MSD Task01, 3 = enhancing)"),
    FS("optimizer.type", optimizer.type, "adamw|sgd|decoupled_sgdw", "optimizer (decoupled_sgdw: Composer's DecoupledSGDW)"),
    FD("optimizer.lr", optimizer.lr, "base learning rate"),
    FD("optimizer.weight_decay", optimizer.weight_decay, "weight decay (decoupled for AdamW; decoupled_sgdw: scaled by lr / initial lr)"),
    FDS("optimizer.betas", optimizer.betas, 2, "AdamW betas"),
    FD("optimizer.eps", optimizer.eps, "AdamW epsilon"),
    FD("optimizer.momentum", optimizer.momentum, "SGD momentum"),
    FB("optimizer.nesterov", optimizer.nesterov, "SGD Nesterov momentum"),
    FD("optimizer.max_grad_norm", optimizer.max_grad_norm, "gradient clipping by global norm (0: off)"),
    {"optimizer.paramwise.custom_keys", K_CUSTOM, 0, 0, NO_COUNT, 0, NULL,
     "map: name substring -> {lr_mult, decay_mult}"},
    FM("optimizer.paramwise.bias_lr_mult", optimizer.bias_lr_mult, "lr multiplier of biases (null: unset)"),
    FM("optimizer.paramwise.bias_decay_mult", optimizer.bias_decay_mult, "decay multiplier of biases"),
    FM("optimizer.paramwise.norm_decay_mult", optimizer.norm_decay_mult, "decay multiplier of norm parameters"),
    FM("optimizer.paramwise.flat_decay_mult", optimizer.flat_decay_mult, "decay multiplier of 1-D parameters"),
    FDUR("schedule.warmup_iters", schedule.warmup_iters, SEGC_DUR_WARMUP, "linear warmup (duration: 1500, 1500ba, 2ep)"),
    FD("schedule.warmup_start_factor", schedule.warmup_start_factor, "warmup start factor"),
    FS("schedule.policy", schedule.policy, "poly|cosine|constant|multistep", "decay after warmup"),
    FD("schedule.power", schedule.power, "poly power"),
    FD("schedule.eta_min", schedule.eta_min, "final lr of poly/cosine"),
    FDV("schedule.milestones", schedule.milestones, SEGC_CFG_MAX_MILESTONES, schedule.n_milestones,
        "multistep: iterations where the lr is multiplied by gamma"),
    FD("schedule.gamma", schedule.gamma, "multistep decay factor"),
    FDUR("train.max_iters", train.max_iters, SEGC_DUR_MAX_ITERS, "training length (duration: 80000, 80000ba, 128ep; alias train.max_duration)"),
    FD("train.max_time_min", train.max_time_min, "stop after this many minutes (0: no limit)"),
    FDUR("train.val_interval", train.val_interval, SEGC_DUR_VAL_INTERVAL, "evaluate every N iterations or epochs (0: only at the end)"),
    FDUR("train.checkpoint_interval", train.checkpoint_interval, SEGC_DUR_CHECKPOINT_INTERVAL, "checkpoint every N iterations or epochs"),
    FL("train.log_interval", train.log_interval, "metrics.jsonl / plain progress line every N iterations"),
    FI("train.keep_last", train.keep_last, "iteration checkpoints kept"),
    FL("train.seed", train.seed, "seed of init, sampling, augmentation and dropout"),
    FI("train.threads", train.threads, "compute threads (0: OpenMP's default)"),
    FS("train.dtype", train.dtype, "f32|bf16", "compute dtype (bf16: f32 master weights)"),
    FB("train.bf16_grads", train.bf16_grads,
       "bf16 training on CPUs with native bf16 GEMMs: bf16 gradients for bf16 activations, as PyTorch keeps them "
       "(false: f32 gradients throughout)"),
    FS("train.conv_algo", train.conv_algo, "auto|direct|winograd",
       "3x3 stride-1 f32 convolutions: auto = Winograd where oneDNN has it (AVX-512), direct = as PyTorch"),
    FS("train.best_metric", train.best_metric, NULL, "metric selecting best.safetensors (mIoU, mDice, Dice_WT, ..., val_loss: minimised; empty: the task's)"),
    FS("train.work_dir", train.work_dir, NULL, "run directory (empty: runs/NAME)"),
    FL("train.val_max_samples", train.val_max_samples, "evaluate on the first N samples (0: all)"),
    FI("train.report_samples", train.report_samples, "validation predictions in report.html"),
    FL("train.debug_nan_at", train.debug_nan_at, "test hook: the loss of iteration N reads as NaN (-1: off)"),
    FD("dist.bucket_mb", dist.bucket_mb, "MPI: gradient all-reduce bucket size in MiB"),
    FD("dist.timeout_s", dist.timeout_s, "MPI: a collective waiting longer ends the whole job (a rank died or hangs)"),
    FB("dist.sync_bn", dist.sync_bn, "MPI: batch-norm statistics over the global batch (SyncBatchNorm)"),
    FB("dist.overlap", dist.overlap, "MPI: all-reduce gradient buckets during backward (false: after it; same bits)"),
    FS("train.memory_limit", train.memory_limit, NULL, "memory budget of recipe.grad_accum=auto (8GiB, 512MiB, bytes; empty: the machine's)"),
    FS("recipe.name", recipe.name, NULL, "bundled overlay applied by `recipe: mild|medium|hot` or recipe.use=NAME (records it)"),
    FDUR("recipe.ema.half_life", recipe.ema.half_life, SEGC_DUR_EMA_HALF_LIFE, "EMA of weights: half-life (1000ba, 2ep; 0: off)"),
    FDUR("recipe.ema.update_interval", recipe.ema.update_interval, SEGC_DUR_EMA_INTERVAL, "EMA update every N iterations or epochs"),
    FD("recipe.sam.rho", recipe.sam.rho, "SAM neighbourhood radius (0: off)"),
    FD("recipe.sam.epsilon", recipe.sam.epsilon, "SAM: added to the gradient norm"),
    FL("recipe.sam.interval", recipe.sam.interval, "SAM: every k-th iteration takes the two-pass step"),
    FD("recipe.mixup.alpha", recipe.mixup.alpha, "MixUp: Beta(alpha, alpha) mixing (0: off)"),
    FS("recipe.grad_accum", recipe.grad_accum, NULL, "micro-batches per step: N (divides data.batch_size) or auto (fits train.memory_limit)"),
};
const int segc_cfg_n_fields = (int)(sizeof segc_cfg_schema / sizeof segc_cfg_schema[0]);
#define schema segc_cfg_schema
#define N_FIELDS segc_cfg_n_fields

int segc_config_n_keys(void) { return N_FIELDS; }
const char *segc_config_key(int i) { return i >= 0 && i < N_FIELDS ? schema[i].key : NULL; }
const char *segc_config_key_help(int i) { return i >= 0 && i < N_FIELDS ? schema[i].help : NULL; }

void segc_config_defaults(segc_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->name, "run");
    strcpy(c->model.type, "segformer");
    strcpy(c->model.variant, "b0");
    strcpy(c->data.dataset, "camvid");
    strcpy(c->data.root, "../shared/data/camvid");
    strcpy(c->data.train_split, "train");
    strcpy(c->data.val_split, "val");
    strcpy(c->data.reduce_zero_label, "default");
    c->data.batch_size = 8;
    c->data.num_workers = 2;
    c->data.scale[0] = 480, c->data.scale[1] = 360;
    c->data.ratio_range[0] = 0.5, c->data.ratio_range[1] = 2.0;
    c->data.crop_size[0] = 360, c->data.crop_size[1] = 480;
    c->data.cat_max_ratio = 0.75;
    c->data.flip_prob = 0.5;
    c->data.photometric = true;
    strcpy(c->data.pipeline, "mmseg");
    c->data.fg_prob = 0.4;
    strcpy(c->test.regions, "none");
    const double mean[3] = {123.675, 116.28, 103.53}, std[3] = {58.395, 57.12, 57.375};
    memcpy(c->data.mean, mean, sizeof mean);
    memcpy(c->data.std, std, sizeof std);
    strcpy(c->test.mode, "whole");
    c->test.n_scales = 1;
    c->test.scales[0] = 1.0;
    strcpy(c->optimizer.type, "adamw");
    c->optimizer.lr = 6e-5;
    c->optimizer.weight_decay = 0.01;
    c->optimizer.betas[0] = 0.9, c->optimizer.betas[1] = 0.999;
    c->optimizer.eps = 1e-8;
    /* mmseg segformer: custom_keys pos_block/norm decay 0, head lr x10 */
    static const struct { const char *k; double lr, dec; } keys[] = {
        {"pos_block", NAN, 0.0}, {"norm", NAN, 0.0}, {"decode_head", 10.0, NAN}};
    for (int i = 0; i < 3; i++) {
        segc_cfg_custom_key *k = &c->optimizer.custom_keys[i];
        strcpy(k->key, keys[i].k);
        k->lr_mult = (segc_mult){!isnan(keys[i].lr), isnan(keys[i].lr) ? 0 : keys[i].lr};
        k->decay_mult = (segc_mult){!isnan(keys[i].dec), isnan(keys[i].dec) ? 0 : keys[i].dec};
    }
    c->optimizer.n_custom_keys = 3;
    c->schedule.warmup_iters = 1500;
    c->schedule.warmup_start_factor = 1e-6;
    strcpy(c->schedule.policy, "poly");
    c->schedule.power = 1.0;
    c->schedule.milestones[0] = 1;   /* multistep: set by the config */
    c->schedule.n_milestones = 1;
    c->schedule.gamma = 0.1;
    c->train.max_iters = 160000;
    c->train.val_interval = 16000;
    c->train.checkpoint_interval = 16000;
    c->train.log_interval = 50;
    c->train.keep_last = 3;
    strcpy(c->train.dtype, "f32");
    c->train.bf16_grads = true;
    strcpy(c->train.conv_algo, "auto");
    c->train.report_samples = 6;
    c->train.debug_nan_at = -1;
    segc_loss_cfg_defaults(&c->loss);
    c->dist.bucket_mb = 25;
    c->dist.timeout_s = 45;
    c->dist.overlap = true;
    c->recipe.ema.update_interval = 1;
    c->recipe.sam.epsilon = 1e-12;
    c->recipe.sam.interval = 1;
    strcpy(c->recipe.grad_accum, "1");
}

static const char *last_part(const char *k) {
    const char *d = strrchr(k, '.');
    return d ? d + 1 : k;
}

/* closest key or section to an unknown path, or NULL when nothing is close */
static const char *suggest(const char *path, char *buf, size_t n) {
    int best = 1 << 30;
    const char *best_key = NULL;
    size_t best_len = 0;
    for (int i = 0; i < N_FIELDS; i++) {
        const char *k = schema[i].key;
        /* the key itself and each of its section prefixes */
        for (const char *e = k;; e++) {
            if (*e == '.' || !*e) {
                size_t len = (size_t)(e - k);
                char pre[160];
                snprintf(pre, sizeof pre, "%.*s", (int)len, k);
                int d = segc_edit_distance(path, pre);
                const char *lp = last_part(path);
                int d2 = segc_edit_distance(lp, last_part(pre)) + 1;   /* right name, wrong section */
                if (d2 < d && strchr(pre, '.') && !strchr(path, '.')) d = d2;
                else if (d2 < d) d = d2 + 1;
                if (d < best) best = d, best_key = k, best_len = len;
            }
            if (!*e) break;
        }
    }
    size_t lp = strlen(last_part(path));
    int limit = lp >= 9 ? 3 : lp >= 5 ? 2 : 1;
    if (!best_key || best > limit) return NULL;
    snprintf(buf, n, "%.*s", (int)best_len, best_key);
    return buf;
}

static const field *find_field(const char *key) {
    if (!strcmp(key, "train.max_duration")) key = "train.max_iters";   /* Composer's name */
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(schema[i].key, key)) return &schema[i];
    return NULL;
}

static bool is_section(const char *path) {
    size_t n = strlen(path);
    for (int i = 0; i < N_FIELDS; i++)
        if (!strncmp(schema[i].key, path, n) && schema[i].key[n] == '.') return true;
    return false;
}

/* ---- applying YAML nodes ---- */
typedef struct apply_ctx {
    yaml_document_t *doc;
    const char *origin;   /* file name or "override" */
    char *err;
    size_t errlen;
    bool set_name;
} apply_ctx;

static bool where(const apply_ctx *a, const yaml_node_t *node, char *buf, size_t n) {
    if (node && strcmp(a->origin, "override") != 0)
        snprintf(buf, n, "%s:%zu: ", a->origin, node->start_mark.line + 1);
    else
        snprintf(buf, n, "%s: ", a->origin);
    return true;
}

static const char *node_desc(const yaml_node_t *node, char *buf, size_t n) {
    if (node->type == YAML_SEQUENCE_NODE) return "a list";
    if (node->type == YAML_MAPPING_NODE) return "a mapping";
    const char *v = (const char *)node->data.scalar.value;
    bool quoted = node->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                  node->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    snprintf(buf, n, "%s'%.60s'", quoted ? "string " : "", v);
    return buf;
}

static bool type_error(apply_ctx *a, const yaml_node_t *node, const char *key, const char *expected) {
    char w[300], d[96];
    where(a, node, w, sizeof w);
    return segc_errorf(a->err, a->errlen, "%s%s: expected %s, found %s", w, key, expected, node_desc(node, d, sizeof d));
}

static bool plain_scalar(const yaml_node_t *node) {
    return node->type == YAML_SCALAR_NODE && node->data.scalar.style != YAML_SINGLE_QUOTED_SCALAR_STYLE &&
           node->data.scalar.style != YAML_DOUBLE_QUOTED_SCALAR_STYLE;
}

static bool is_null(const yaml_node_t *node) {
    if (!plain_scalar(node)) return false;
    const char *v = (const char *)node->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static bool parse_i64(const yaml_node_t *node, int64_t lo, int64_t hi, int64_t *out) {
    if (!plain_scalar(node)) return false;
    const char *v = (const char *)node->data.scalar.value;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) return false;
    *out = x;
    return true;
}

static bool parse_dbl(const yaml_node_t *node, double *out) {
    if (!plain_scalar(node)) return false;
    const char *v = (const char *)node->data.scalar.value;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno == ERANGE || !isfinite(x) || isspace((unsigned char)*v)) return false;
    *out = x;
    return true;
}

static bool parse_bool(const yaml_node_t *node, bool *out) {
    if (!plain_scalar(node)) return false;
    const char *v = (const char *)node->data.scalar.value;
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (!strcasecmp(v, yes[i])) return *out = true, true;
        if (!strcasecmp(v, no[i])) return *out = false, true;
    }
    return false;
}

static bool choice_ok(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n)) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

/* one list element or scalar of a numeric field */
static bool number_at(apply_ctx *a, const field *f, const yaml_node_t *node, void *base, int i) {
    if (f->kind == K_INTS) {
        int64_t v;
        if (!parse_i64(node, INT_MIN, INT_MAX, &v)) return false;
        ((int *)((char *)base + f->off))[i] = (int)v;
    } else {
        double v;
        if (!parse_dbl(node, &v)) return false;
        ((double *)((char *)base + f->off))[i] = v;
    }
    return true;
}

static bool apply_list(apply_ctx *a, const field *f, const yaml_node_t *node, segc_config *c) {
    const char *what = f->kind == K_INTS ? "integer" : "number";
    char expect[96];
    bool variable = f->count_off != NO_COUNT;
    int min_n = f->kind == K_INTS ? 0 : 1;   /* variable integer lists (multistep milestones) may be empty */
    if (variable) snprintf(expect, sizeof expect, "a list of %d to %d %ss", min_n, f->n, what);
    else snprintf(expect, sizeof expect, "a list of %d %ss", f->n, what);
    if (node->type == YAML_SCALAR_NODE) {
        /* a single number: a one-element list, or both entries of a pair */
        if (!variable && f->n != 2) return type_error(a, node, f->key, expect);
        if (!number_at(a, f, node, c, 0)) return type_error(a, node, f->key, expect);
        if (variable) *(int *)((char *)c + f->count_off) = 1;
        else number_at(a, f, node, c, 1);
        return true;
    }
    if (node->type != YAML_SEQUENCE_NODE) return type_error(a, node, f->key, expect);
    int n = (int)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (variable ? (n < min_n || n > f->n) : n != f->n) {
        char w[300];
        where(a, node, w, sizeof w);
        return segc_errorf(a->err, a->errlen, "%s%s: expected %s, found a list of %d", w, f->key, expect, n);
    }
    for (int i = 0; i < n; i++) {
        const yaml_node_t *it = yaml_document_get_node(a->doc, node->data.sequence.items.start[i]);
        if (!it || !number_at(a, f, it, c, i)) {
            char w[300], d[96], e2[64];
            where(a, it ? it : node, w, sizeof w);
            snprintf(e2, sizeof e2, "an %s", f->kind == K_INTS ? "integer" : "number");
            return segc_errorf(a->err, a->errlen, "%s%s[%d]: expected %s, found %s", w, f->key, i,
                               f->kind == K_INTS ? "an integer" : "a number", it ? node_desc(it, d, sizeof d) : "nothing");
        }
    }
    if (variable) *(int *)((char *)c + f->count_off) = n;
    return true;
}

static bool apply_mult(apply_ctx *a, const char *key, const yaml_node_t *node, segc_mult *m) {
    if (is_null(node)) { *m = (segc_mult){false, 0}; return true; }
    double v;
    if (!parse_dbl(node, &v)) return type_error(a, node, key, "a number or null");
    *m = SEGC_MULT(v);
    return true;
}

static bool apply_leaf(apply_ctx *a, const field *f, const yaml_node_t *node, segc_config *c) {
    void *p = (char *)c + f->off;
    switch (f->kind) {
    case K_INT: case K_I64: {
        int64_t v;
        bool i32 = f->kind == K_INT;
        if (!parse_i64(node, i32 ? INT_MIN : INT64_MIN, i32 ? INT_MAX : INT64_MAX, &v))
            return type_error(a, node, f->key, "an integer");
        if (i32) *(int *)p = (int)v;
        else *(int64_t *)p = v;
        return true;
    }
    case K_DBL:
        if (!parse_dbl(node, (double *)p)) return type_error(a, node, f->key, "a number");
        return true;
    case K_BOOL:
        if (!parse_bool(node, (bool *)p)) return type_error(a, node, f->key, "true or false");
        return true;
    case K_STR: {
        if (node->type != YAML_SCALAR_NODE) return type_error(a, node, f->key, "a string");
        const char *v = is_null(node) ? "" : (const char *)node->data.scalar.value;
        char w[300];
        if (f->choices && !choice_ok(f->choices, v)) {
            where(a, node, w, sizeof w);
            return segc_errorf(a->err, a->errlen, "%s%s: expected one of %s, found '%.60s'", w, f->key, f->choices, v);
        }
        if (strlen(v) >= f->size) {
            where(a, node, w, sizeof w);
            return segc_errorf(a->err, a->errlen, "%s%s: expected at most %zu characters, found %zu", w, f->key,
                               f->size - 1, strlen(v));
        }
        strcpy((char *)p, v);
        if (!strcmp(f->key, "name")) a->set_name = true;
        return true;
    }
    case K_INTS: case K_DBLS:
        return apply_list(a, f, node, c);
    case K_MULT:
        return apply_mult(a, f->key, node, (segc_mult *)p);
    case K_DUR: {
        bool ep;
        if (!plain_scalar(node) || !segc_parse_duration((const char *)node->data.scalar.value, (int64_t *)p, &ep)) {
            char w[300], d[96];
            where(a, node, w, sizeof w);
            return segc_errorf(a->err, a->errlen, "%s%s: expected an integer, found %s (a duration: 80000 or 80000ba "
                               "iterations, 128ep epochs)", w, f->key, node_desc(node, d, sizeof d));
        }
        c->in_epochs = ep ? c->in_epochs | (1u << f->n) : c->in_epochs & ~(1u << f->n);
        return true;
    }
    case K_CUSTOM:
        break;
    }
    return false;
}

static segc_cfg_custom_key *custom_key(apply_ctx *a, segc_config *c, const char *name, const yaml_node_t *node) {
    for (int i = 0; i < c->optimizer.n_custom_keys; i++)
        if (!strcmp(c->optimizer.custom_keys[i].key, name)) return &c->optimizer.custom_keys[i];
    char w[300];
    where(a, node, w, sizeof w);
    if (!*name) return segc_errorf(a->err, a->errlen, "%soptimizer.paramwise.custom_keys: empty key", w), NULL;
    if (strlen(name) >= SEGC_CFG_NAME)
        return segc_errorf(a->err, a->errlen, "%soptimizer.paramwise.custom_keys: key '%.60s...' longer than %d characters",
                           w, name, SEGC_CFG_NAME - 1), NULL;
    if (c->optimizer.n_custom_keys == SEGC_CFG_MAX_CUSTOM_KEYS)
        return segc_errorf(a->err, a->errlen, "%soptimizer.paramwise.custom_keys: more than %d keys", w,
                           SEGC_CFG_MAX_CUSTOM_KEYS), NULL;
    segc_cfg_custom_key *k = &c->optimizer.custom_keys[c->optimizer.n_custom_keys++];
    memset(k, 0, sizeof *k);
    strcpy(k->key, name);
    return k;
}

/* custom_keys.NAME.FIELD = scalar */
static bool apply_custom_field(apply_ctx *a, segc_config *c, const char *name, const char *fld,
                               const yaml_node_t *node) {
    char full[256];
    snprintf(full, sizeof full, "optimizer.paramwise.custom_keys.%s.%s", name, fld);
    bool lr = !strcmp(fld, "lr_mult");
    if (!lr && strcmp(fld, "decay_mult") != 0) {
        char w[300];
        where(a, node, w, sizeof w);
        const char *hint = segc_edit_distance(fld, "lr_mult") < 3 ? "lr_mult" : segc_edit_distance(fld, "decay_mult") < 4 ? "decay_mult" : NULL;
        return segc_errorf(a->err, a->errlen, "%sunknown config key '%s'%s%s%s", w, full, hint ? "; did you mean '" : "",
                           hint ? hint : "", hint ? "'?" : " (custom keys take lr_mult and decay_mult)");
    }
    segc_cfg_custom_key *k = custom_key(a, c, name, node);
    if (!k) return false;
    return apply_mult(a, full, node, lr ? &k->lr_mult : &k->decay_mult);
}

/* custom_keys.NAME = {lr_mult: .., decay_mult: ..} (replaces that key's entry) */
static bool apply_custom_entry(apply_ctx *a, segc_config *c, const char *name, const yaml_node_t *node) {
    char full[256];
    snprintf(full, sizeof full, "optimizer.paramwise.custom_keys.%s", name);
    if (node->type != YAML_MAPPING_NODE && !is_null(node))
        return type_error(a, node, full, "a mapping such as {lr_mult: 10}");
    segc_cfg_custom_key *k = custom_key(a, c, name, node);
    if (!k) return false;
    k->lr_mult = k->decay_mult = (segc_mult){false, 0};
    if (node->type != YAML_MAPPING_NODE) return true;
    for (yaml_node_pair_t *pr = node->data.mapping.pairs.start; pr < node->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(a->doc, pr->key), *vn = yaml_document_get_node(a->doc, pr->value);
        if (kn->type != YAML_SCALAR_NODE) return type_error(a, kn, full, "scalar keys");
        if (!apply_custom_field(a, c, name, (const char *)kn->data.scalar.value, vn)) return false;
    }
    return true;
}

static bool apply_custom(apply_ctx *a, segc_config *c, const char *rest, const yaml_node_t *node) {
    if (!*rest) {   /* the whole map: replaces the set */
        if (node->type != YAML_MAPPING_NODE && !is_null(node))
            return type_error(a, node, "optimizer.paramwise.custom_keys", "a mapping of name -> {lr_mult, decay_mult}");
        c->optimizer.n_custom_keys = 0;
        if (node->type != YAML_MAPPING_NODE) return true;
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start; pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *kn = yaml_document_get_node(a->doc, pr->key), *vn = yaml_document_get_node(a->doc, pr->value);
            if (kn->type != YAML_SCALAR_NODE) return type_error(a, kn, "optimizer.paramwise.custom_keys", "scalar keys");
            if (!apply_custom_entry(a, c, (const char *)kn->data.scalar.value, vn)) return false;
        }
        return true;
    }
    /* NAME or NAME.lr_mult / NAME.decay_mult (NAME itself may contain dots) */
    const char *dot = strrchr(rest, '.');
    bool scalar_value = node->type == YAML_SCALAR_NODE && !is_null(node);
    if (dot && (scalar_value || !strcmp(dot + 1, "lr_mult") || !strcmp(dot + 1, "decay_mult"))) {
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(dot - rest), rest);
        return apply_custom_field(a, c, name, dot + 1, node);
    }
    return apply_custom_entry(a, c, rest, node);
}

static const char custom_path[] = "optimizer.paramwise.custom_keys";

static bool is_custom(const char *path) {
    size_t cl = sizeof custom_path - 1;
    return !strncmp(path, custom_path, cl) && (path[cl] == 0 || path[cl] == '.');
}

static bool unknown_key(apply_ctx *a, const char *path, const yaml_node_t *node) {
    char w[300], s[160];
    where(a, node, w, sizeof w);
    const char *hint = suggest(path, s, sizeof s);
    if (hint) return segc_errorf(a->err, a->errlen, "%sunknown config key '%s'; did you mean '%s'?", w, path, hint);
    return segc_errorf(a->err, a->errlen, "%sunknown config key '%s' (see `segc train --keys`)", w, path);
}

/* model.KEY that is not a generic model key: the family's own (checked at finish) */
static bool is_model_opt(const char *path) {
    return !strncmp(path, "model.", 6) && path[6] && !strchr(path + 6, '.') && !find_field(path);
}

/* stores the value's YAML text: a scalar as given, a list of scalars as "[a, b]" */
static bool apply_model_opt(apply_ctx *a, segc_config *c, const char *key, const yaml_node_t *node) {
    char text[SEGC_MODEL_OPT_VALUE], w[300];
    size_t used = 0;
    if (node->type == YAML_SCALAR_NODE) {
        used = (size_t)snprintf(text, sizeof text, "%s", (const char *)node->data.scalar.value);
    } else if (node->type == YAML_SEQUENCE_NODE) {
        used = (size_t)snprintf(text, sizeof text, "[");
        for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
            yaml_node_t *item = yaml_document_get_node(a->doc, *it);
            if (!item || item->type != YAML_SCALAR_NODE) return type_error(a, node, key - 6, "a list of scalars");
            if (used < sizeof text)
                used += (size_t)snprintf(text + used, sizeof text - used, "%s%s",
                                         it > node->data.sequence.items.start ? ", " : "", (const char *)item->data.scalar.value);
        }
        if (used < sizeof text) used += (size_t)snprintf(text + used, sizeof text - used, "]");
    } else {
        return type_error(a, node, key - 6, "a value or a list");
    }
    if (used >= sizeof text) {
        where(a, node, w, sizeof w);
        return segc_errorf(a->err, a->errlen, "%smodel.%s: value longer than %d characters", w, key, SEGC_MODEL_OPT_VALUE - 1);
    }
    if (strlen(key) >= SEGC_MODEL_OPT_KEY) {
        where(a, node, w, sizeof w);
        return segc_errorf(a->err, a->errlen, "%sunknown config key 'model.%.60s'", w, key);
    }
    int i = 0;
    while (i < c->model.n_opts && strcmp(c->model.opts[i].key, key) != 0) i++;
    if (i == c->model.n_opts) {
        if (i == SEGC_MODEL_MAX_OPTS) {
            where(a, node, w, sizeof w);
            return segc_errorf(a->err, a->errlen, "%smodel: more than %d family keys", w, SEGC_MODEL_MAX_OPTS);
        }
        c->model.n_opts++;
        snprintf(c->model.opts[i].key, sizeof c->model.opts[i].key, "%s", key);
    }
    snprintf(c->model.opts[i].value, sizeof c->model.opts[i].value, "%s", text);
    return true;
}

/* loss.*: flattened to (dotted path, scalar or list of scalars) for losses_config.c */
static bool is_loss(const char *path) { return !strncmp(path, "loss", 4) && (path[4] == 0 || path[4] == '.'); }

static bool apply_loss(apply_ctx *a, segc_config *c, const char *rel, const yaml_node_t *node) {
    char w[300], e[512];
    const char *items[SEGC_LOSS_MAX_CLASSES];
    int n = 0;
    if (node->type == YAML_MAPPING_NODE) {
        if (node->data.mapping.pairs.start == node->data.mapping.pairs.top)
            return !*rel || segc_loss_cfg_set(&c->loss, rel, NULL, 0, e, sizeof e) ? true
                   : (where(a, node, w, sizeof w), segc_errorf(a->err, a->errlen, "%s%s", w, e));
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start; pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *kn = yaml_document_get_node(a->doc, pr->key), *vn = yaml_document_get_node(a->doc, pr->value);
            if (!kn || !vn || kn->type != YAML_SCALAR_NODE) return type_error(a, node, "loss", "scalar keys");
            char sub[256];
            snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "." : "", (const char *)kn->data.scalar.value);
            if (!apply_loss(a, c, sub, vn)) return false;
        }
        return true;
    }
    if (node->type == YAML_SCALAR_NODE) {
        if (!*rel) {
            if (!is_null(node)) return type_error(a, node, "loss", "a mapping");
            segc_loss_cfg_defaults(&c->loss);
            return true;
        }
        items[0] = (const char *)node->data.scalar.value;
        n = -1;
    } else {
        for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
            yaml_node_t *item = yaml_document_get_node(a->doc, *it);
            if (!item || item->type != YAML_SCALAR_NODE || n == SEGC_LOSS_MAX_CLASSES)
                return type_error(a, node, *rel ? rel : "loss", "a list of at most 256 scalars");
            items[n++] = (const char *)item->data.scalar.value;
        }
    }
    if (segc_loss_cfg_set(&c->loss, rel, items, n, e, sizeof e)) return true;
    where(a, node, w, sizeof w);
    return segc_errorf(a->err, a->errlen, "%s%s", w, e);
}

static bool apply_text(segc_config *c, const char *text, size_t len, const char *origin, const char *path,
                       bool *set_name, char *err, size_t errlen);

/* `recipe: NAME`: the bundled overlay's keys, applied where the key stands (later keys win) */
static bool apply_recipe(apply_ctx *a, segc_config *c, const yaml_node_t *node) {
    const char *name = (const char *)node->data.scalar.value, *text = segc_recipe_overlay(name);
    char w[300], origin[96];
    if (!text) {
        where(a, node, w, sizeof w);
        return segc_errorf(a->err, a->errlen, "%srecipe: expected one of %s, found '%.60s'", w, segc_recipe_names(), name);
    }
    snprintf(origin, sizeof origin, "recipe %s", name);
    if (!apply_text(c, text, strlen(text), origin, "", NULL, a->err, a->errlen)) return false;
    snprintf(c->recipe.name, sizeof c->recipe.name, "%s", name);
    return true;
}

static bool apply_node(apply_ctx *a, segc_config *c, const char *path, const yaml_node_t *node) {
    size_t cl = sizeof custom_path - 1;
    /* `recipe: NAME`, or `recipe: {use: NAME, ...}` beside other recipe keys */
    if ((!strcmp(path, "recipe") || !strcmp(path, "recipe.use")) && node->type == YAML_SCALAR_NODE && !is_null(node))
        return apply_recipe(a, c, node);
    if (is_model_opt(path)) return apply_model_opt(a, c, path + 6, node);
    if (is_loss(path)) return apply_loss(a, c, path[4] ? path + 5 : "", node);
    if (is_custom(path))
        return apply_custom(a, c, path[cl] ? path + cl + 1 : "", node);
    const field *f = *path ? find_field(path) : NULL;
    if (f) return apply_leaf(a, f, node, c);
    if (!*path || is_section(path)) {
        if (node->type != YAML_MAPPING_NODE) {
            if (!*path && is_null(node)) return true;   /* empty document */
            return type_error(a, node, *path ? path : "(top level)", "a mapping");
        }
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start; pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *kn = yaml_document_get_node(a->doc, pr->key), *vn = yaml_document_get_node(a->doc, pr->value);
            if (!kn || !vn) return segc_errorf(a->err, a->errlen, "%s: malformed YAML document", a->origin);
            if (kn->type != YAML_SCALAR_NODE) return type_error(a, kn, *path ? path : "(top level)", "scalar keys");
            char sub[512];
            int len = snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", (const char *)kn->data.scalar.value);
            if (len < 0 || (size_t)len >= sizeof sub) return segc_errorf(a->err, a->errlen, "%s: key too long", a->origin);
            if (!is_custom(sub) && !find_field(sub) && !is_section(sub) && !is_model_opt(sub) && !is_loss(sub) &&
                strcmp(sub, "recipe.use"))
                return unknown_key(a, sub, kn);
            if (!apply_node(a, c, sub, vn)) return false;
        }
        return true;
    }
    return unknown_key(a, path, node);
}

/* Parse YAML text and apply it at path. */
static bool apply_text(segc_config *c, const char *text, size_t len, const char *origin, const char *path,
                       bool *set_name, char *err, size_t errlen) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return segc_errorf(err, errlen, "%s: cannot initialise the YAML parser", origin);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        segc_errorf(err, errlen, "%s:%zu:%zu: YAML error: %s%s%s", origin, parser.problem_mark.line + 1,
                    parser.problem_mark.column + 1, parser.problem ? parser.problem : "malformed",
                    parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return false;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    apply_ctx a = {&doc, origin, err, errlen, false};
    bool ok = true;
    if (root) ok = apply_node(&a, c, path, root);
    else if (*path) {   /* "key=" : an empty scalar */
        yaml_document_t d2;
        yaml_document_delete(&doc);
        yaml_document_initialize(&d2, NULL, NULL, NULL, 1, 1);
        int id = yaml_document_add_scalar(&d2, NULL, (yaml_char_t *)"", 0, YAML_PLAIN_SCALAR_STYLE);
        a.doc = &d2;
        ok = apply_node(&a, c, path, yaml_document_get_node(&d2, id));
        doc = d2;
    }
    if (set_name) *set_name = a.set_name;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return ok;
}

bool segc_config_load_string(segc_config *c, const char *yaml, const char *origin, char *err, size_t errlen) {
    segc_config tmp = *c;
    if (!apply_text(&tmp, yaml, strlen(yaml), origin ? origin : "config", "", NULL, err, errlen)) return false;
    *c = tmp;
    return true;
}

bool segc_config_load(segc_config *c, const char *path, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return segc_errorf(err, errlen, "%s: cannot open config: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(fp); return segc_errorf(err, errlen, "%s: out of memory", path); }
            buf = nb;
        }
        size_t k = fread(buf + len, 1, 4096, fp);
        len += k;
        if (k < 4096) break;
    }
    bool rd_err = ferror(fp);
    fclose(fp);
    if (rd_err) { free(buf); return segc_errorf(err, errlen, "%s: read error", path); }
    buf[len] = 0;
    segc_config tmp = *c;
    bool set_name = false;
    bool ok = apply_text(&tmp, buf, len, path, "", &set_name, err, errlen);
    free(buf);
    if (!ok) return false;
    if (!set_name) {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t n = strcspn(base, ".");
        if (n >= sizeof tmp.name) n = sizeof tmp.name - 1;
        if (n) snprintf(tmp.name, sizeof tmp.name, "%.*s", (int)n, base);
    }
    *c = tmp;
    return true;
}

bool segc_config_override(segc_config *c, const char *assignment, char *err, size_t errlen) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return segc_errorf(err, errlen, "override '%s': expected key=value (e.g. optimizer.lr=1e-4)", assignment);
    char key[512];
    if ((size_t)(eq - assignment) >= sizeof key) return segc_errorf(err, errlen, "override: key too long");
    snprintf(key, sizeof key, "%.*s", (int)(eq - assignment), assignment);
    segc_config tmp = *c;
    if (!apply_text(&tmp, eq + 1, strlen(eq + 1), "override", key, NULL, err, errlen)) return false;
    *c = tmp;
    return true;
}


void segc_config_apply_conv_algo(const segc_config *c) {
    segc_conv_algo a = SEGC_CONV_ALGO_AUTO;
    if (segc_conv_algo_parse(c->train.conv_algo, &a)) segc_conv_set_algo(a);   /* checked when loaded */
}
