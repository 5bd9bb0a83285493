/* segc training configuration: a YAML file (libyaml) plus dotted command-line
 * overrides, checked against a fixed schema.
 *
 *   segc_config c;
 *   segc_config_defaults(&c);
 *   if (!segc_config_load(&c, "configs/segformer/camvid_b0_cpu.yaml", err, sizeof err) ||
 *       !segc_config_override(&c, "optimizer.lr=1e-4", err, sizeof err) ||
 *       !segc_config_finish(&c, err, sizeof err)) { fprintf(stderr, "%s\n", err); ... }
 *
 * Every key has a type; an unknown key is refused with a did-you-mean
 * suggestion, a value of the wrong type with a one-line message naming the key
 * (and the file:line), expected vs found. An override's value is read as a
 * YAML scalar or flow sequence ("[512, 512]"); "null" resets a multiplier to
 * unset. segc_config_to_yaml writes the resolved configuration, which loads
 * back to the same values (numbers round-trip exactly).
 *
 * The optimizer's param-wise custom keys are a map of name -> {lr_mult,
 * decay_mult}, as in mmengine's paramwise_cfg:
 *   optimizer:
 *     paramwise:
 *       custom_keys:
 *         decode_head: {lr_mult: 10.0}
 *         norm: {decay_mult: 0.0}
 * and overridden as optimizer.paramwise.custom_keys.decode_head.lr_mult=5. */
#ifndef SEGC_CONFIG_H
#define SEGC_CONFIG_H
#include "segc/losses.h"
#include "segc/model.h"
#include "segc/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SEGC_CFG_PATH 1024
#define SEGC_CFG_NAME 64
#define SEGC_CFG_MAX_CUSTOM_KEYS 16
#define SEGC_CFG_MAX_SCALES 8
#define SEGC_CFG_MAX_MILESTONES 8

typedef struct segc_cfg_custom_key {
    char key[SEGC_CFG_NAME];
    segc_mult lr_mult, decay_mult;
} segc_cfg_custom_key;

typedef struct segc_config {
    char name[SEGC_CFG_NAME];          /* run name (default: the config file's stem) */
    struct {
        char type[SEGC_CFG_NAME];      /* a registered family (segc models): segformer | unet2d | ... */
        char variant[SEGC_CFG_NAME];   /* the family's variant ("": its default) */
        int num_classes;               /* 0: the dataset's */
        int in_channels;               /* 0: the dataset's image channels */
        char pretrained[SEGC_CFG_PATH];   /* weights loaded non-strictly before training ("": none) */
        /* the family's own keys (model.KEY: value), as YAML text; validated
         * by the family at segc_config_finish (segc_model_spec_validate) */
        segc_model_opt opts[SEGC_MODEL_MAX_OPTS];
        int n_opts;
    } model;
    struct {
        char dataset[SEGC_CFG_NAME];   /* camvid | ade20k | cityscapes | voc | folder | ... */
        char root[SEGC_CFG_PATH];      /* relative roots are tried as given, then under $SEGC_DATA */
        char train_split[SEGC_CFG_NAME], val_split[SEGC_CFG_NAME];
        char split[SEGC_CFG_NAME];     /* split for `segc eval` ("": val_split) */
        char reduce_zero_label[8];     /* "default" | "true" | "false" */
        int batch_size, num_workers;
        int scale[2];                  /* RandomResize base scale (w, h), as mmseg's scale=(2048, 512) */
        double ratio_range[2];
        int crop_size[2];              /* (h, w), as mmseg's crop_size */
        double cat_max_ratio;
        double flip_prob;
        bool photometric;
        double mean[3], std[3];        /* RGB, 0..255 scale */
        int test_scale[2];             /* keep-ratio resize for evaluation (w, h); 0 0: none */
        char pipeline[SEGC_CFG_NAME];  /* training augmentation: mmseg (photos) | nnunet (medical 2-D) */
        double fg_prob;                /* nnunet: probability of a foreground-centred crop */
        int fold, num_folds;           /* k-fold split of the training cases (num_folds 0: off) */
        bool skip_bad;                 /* COCO: bad annotations / results entries warned, counted, skipped */
        double holdout;                /* fraction of train_split held out as split "holdout" (0: off) */
        int holdout_fold;              /* which contiguous run is held out (0 .. 1/holdout - 1) */
    } data;
    struct {
        char mode[SEGC_CFG_NAME];      /* whole | slide */
        int crop_size[2], stride[2];   /* slide: (h, w) */
        bool flip;
        double scales[SEGC_CFG_MAX_SCALES];   /* multi-scale ratios; {1.0} by default */
        int n_scales;
        bool gaussian;                 /* slide: nnU-Net's Gaussian weighting of window logits */
        bool per_volume;               /* medical: Dice per volume (slices reassembled) */
        char regions[SEGC_CFG_NAME];   /* none | brats (WT/TC/ET Dice) */
    } test;
    struct {
        char type[SEGC_CFG_NAME];      /* adamw | sgd | decoupled_sgdw */
        double lr, weight_decay;
        double betas[2], eps;
        double momentum;
        bool nesterov;
        double max_grad_norm;          /* 0: no clipping */
        segc_cfg_custom_key custom_keys[SEGC_CFG_MAX_CUSTOM_KEYS];
        int n_custom_keys;
        segc_mult bias_lr_mult, bias_decay_mult, norm_decay_mult, flat_decay_mult;
    } optimizer;
    struct {
        int64_t warmup_iters;
        double warmup_start_factor;
        char policy[SEGC_CFG_NAME];    /* poly | cosine | constant | multistep */
        double power, eta_min;
        double milestones[SEGC_CFG_MAX_MILESTONES];   /* multistep: iterations where lr *= gamma */
        int n_milestones;
        double gamma;
    } schedule;
    struct {
        int64_t max_iters;
        double max_time_min;           /* 0: no time limit; else stop (checkpoint + eval) once exceeded */
        int64_t val_interval, checkpoint_interval, log_interval;
        int keep_last;                 /* iteration checkpoints kept (the best one is kept apart) */
        int64_t seed;
        int threads;                   /* 0: OpenMP's default */
        char dtype[8];                 /* f32 | bf16 */
        bool bf16_grads;               /* bf16 training: bf16 activation gradients (ctx->bf16_grads) */
        char conv_algo[16];            /* auto | direct | winograd (segc_conv_algo) */
        char best_metric[SEGC_CFG_NAME];   /* metric that selects best.safetensors ("": the task's primary) */
        char work_dir[SEGC_CFG_PATH];  /* "": runs/NAME */
        int64_t val_max_samples;       /* 0: the whole split */
        int report_samples;            /* validation predictions shown in report.html */
        int64_t debug_nan_at;          /* test hook: iteration N's loss reads as NaN (from 1, as logged; -1: off) */
        char memory_limit[SEGC_CFG_NAME];   /* budget of recipe.grad_accum=auto: "8GiB", "512MiB", bytes; "": the machine's memory */
    } train;
    segc_loss_cfg loss;                /* the `loss` section (losses.h; nothing given: the family's own loss) */
    struct {                           /* data-parallel training over MPI (segc/dist.h); unused in one process */
        double bucket_mb;              /* gradient all-reduce bucket size in MiB (default 25) */
        double timeout_s;              /* a collective waiting longer ends the job naming the rank (default 45) */
        bool sync_bn;                  /* batch-norm statistics over the global batch (SyncBatchNorm) */
        bool overlap;                  /* all-reduce buckets during backward (default true; false: after it) */
    } dist;
    /* Composer-style efficiency recipes (segc/recipes.h); each switch is off by default */
    struct {
        char name[SEGC_CFG_NAME];      /* overlay applied by `recipe: mild|medium|hot` (records it; setting it alone applies nothing) */
        struct {
            int64_t half_life;         /* duration (0: EMA off) */
            int64_t update_interval;   /* duration */
        } ema;
        struct {
            double rho;                /* 0: SAM off */
            double epsilon;
            int64_t interval;          /* every k-th iteration is a SAM step */
        } sam;
        struct {
            double alpha;              /* 0: MixUp off */
        } mixup;
        char grad_accum[16];           /* micro-batches per step: "1".."N" | "auto" */
    } recipe;
    /* Duration keys (SEGC_DUR_*) whose value is in epochs ("128ep") rather than
     * iterations; segc_config_resolve_durations converts them (bit k = key k). */
    uint32_t in_epochs;
} segc_config;

/* Keys that take a duration: "80000ba" or a plain integer (iterations), or "128ep" (epochs). */
enum {
    SEGC_DUR_MAX_ITERS = 0,      /* train.max_iters (alias train.max_duration) */
    SEGC_DUR_WARMUP,             /* schedule.warmup_iters */
    SEGC_DUR_VAL_INTERVAL,       /* train.val_interval */
    SEGC_DUR_CHECKPOINT_INTERVAL,/* train.checkpoint_interval */
    SEGC_DUR_EMA_HALF_LIFE,      /* recipe.ema.half_life */
    SEGC_DUR_EMA_INTERVAL,       /* recipe.ema.update_interval */
    SEGC_DUR_N
};

/* The built-in defaults (SegFormer-B0 on CamVid-sized crops, AdamW, warmup + poly). */
void segc_config_defaults(segc_config *c);
/* Apply a YAML file on top of c. Also sets c->name from the file's stem when
 * the file does not name the run. false + one-line message. */
bool segc_config_load(segc_config *c, const char *path, char *err, size_t errlen);
/* Apply YAML text (what a file would hold); origin names it in messages. */
bool segc_config_load_string(segc_config *c, const char *yaml, const char *origin, char *err, size_t errlen);
/* Apply one "dotted.key=value" override. */
bool segc_config_override(segc_config *c, const char *assignment, char *err, size_t errlen);
/* Cross-field checks (positive sizes, known enums, schedule within max_iters,
 * ...), then fills derived defaults (work_dir). Call after load + overrides. */
bool segc_config_finish(segc_config *c, char *err, size_t errlen);

/* Converts the duration keys given in epochs to iterations: epochs x
 * max(1, floor(train_samples / data.batch_size)) (the global batch; a short
 * final batch is not a step), then repeats the cross-field checks that compare
 * iteration counts. Iterations-only configs are unchanged. */
bool segc_config_resolve_durations(segc_config *c, int64_t train_samples, char *err, size_t errlen);
/* Parses a duration: "80000ba" or "80000" (iterations), "128ep" (epochs). */
bool segc_parse_duration(const char *s, int64_t *value, bool *epochs);
/* Ranges of the recipe.* keys (part of segc_config_finish). */
bool segc_config_check_recipe(const segc_config *c, char *err, size_t errlen);
/* The YAML text a bundled recipe applies (NULL for an unknown name), and the
 * valid names ("mild, medium, hot"). */
const char *segc_recipe_overlay(const char *name);
const char *segc_recipe_names(void);

/* Resolved YAML (malloc'd, NUL-terminated). */
char *segc_config_to_yaml(const segc_config *c);
/* train.conv_algo -> segc_conv_set_algo (process-wide; the environment's SEGC_CONV_ALGO wins) */
void segc_config_apply_conv_algo(const segc_config *c);

bool segc_config_save(const segc_config *c, const char *path, char *err, size_t errlen);
/* Keys whose values differ, as "key: old -> new" lines joined by "; " into buf
 * (empty when equal). Returns the number of differing keys. */
int segc_config_diff(const segc_config *a, const segc_config *b, char *buf, size_t n);

/* The model spec the configuration describes (num_classes / in_channels
 * resolved by the caller; points into c). */
segc_model_spec segc_config_model_spec(const segc_config *c, int num_classes, int in_channels);

/* Every key of the schema, in file order, for help texts and suggestions. */
int segc_config_n_keys(void);
const char *segc_config_key(int i);
const char *segc_config_key_help(int i);

/* Builders for the training stack. */
segc_optim_cfg segc_config_optim(const segc_config *c, segc_custom_key *keys /* SEGC_CFG_MAX_CUSTOM_KEYS */);
bool segc_config_schedule(const segc_config *c, segc_schedule *s, char *err, size_t errlen);
/* Resolve data.root: as given when it exists, else under $SEGC_DATA (by the
 * path itself and by its last component). false + message listing what was tried. */
bool segc_config_data_root(const segc_config *c, char *out, size_t n, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
