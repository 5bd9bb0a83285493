/* segc model registry: the one interface every model family implements.
 *
 * Train, eval, predict and bench reach a model only through this header (and
 * the task evaluator, task.h): nothing above src/models/ names a family. A
 * family is registered by its `model.type` (src/models/registry.c) and
 * provides:
 *   - its config keys under `model.*` (segc_model_key: name, kind, default,
 *     help), validated here with a did-you-mean for unknown keys, plus an
 *     optional validate() for ranges and cross-key checks;
 *   - create / init / destroy, its parameter store (PyTorch / HF / MONAI
 *     names);
 *   - forward -> segc_model_out (one logits map, or a list of
 *     deep-supervision maps with the main map first, or detection outputs);
 *   - loss(outputs, targets) -> scalar tensor;
 *   - how logits become probabilities (softmax over classes, or a sigmoid
 *     per channel for region / multi-label outputs) and a prediction
 *     (postprocess; NULL: argmax, or threshold 0.5 for one channel).
 *
 * Family keys reach the family as text (segc_model_spec.opts, what the YAML
 * or an override gave, e.g. "filters" -> "[32, 64, 128]"); the family reads
 * them with segc_spec_int / segc_spec_ints / ... which fall back to the
 * key's default. segc_model_spec_validate checks every key and value before
 * a model is built, so these readers never see a bad value. */
#ifndef SEGC_MODEL_H
#define SEGC_MODEL_H
#include "segc/detection.h"
#include "segc/losses.h"
#include "segc/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SEGC_MODEL_MAX_OUTPUTS 8
#define SEGC_MODEL_MAX_OPTS 32
#define SEGC_MODEL_OPT_KEY 48
#define SEGC_MODEL_OPT_VALUE 192

typedef enum { SEGC_TASK_SEGMENTATION = 0, SEGC_TASK_DETECTION = 1 } segc_task_kind;
const char *segc_task_name(segc_task_kind t);

typedef enum { SEGC_KEY_INT, SEGC_KEY_DOUBLE, SEGC_KEY_BOOL, SEGC_KEY_STRING, SEGC_KEY_INTS, SEGC_KEY_DOUBLES } segc_key_kind;

/* One family config key, `model.NAME`. */
typedef struct segc_model_key {
    const char *name;      /* relative to "model.", e.g. "filters" */
    segc_key_kind kind;
    const char *dflt;      /* YAML text of the default: "0", "0.1", "true", "dice_ce", "[32, 64, 128]", "[]" */
    const char *choices;   /* strings: "a|b|c"; NULL: any */
    const char *help;
} segc_model_key;

/* A family key as given in the configuration (YAML scalar or flow sequence text). */
typedef struct segc_model_opt {
    char key[SEGC_MODEL_OPT_KEY];
    char value[SEGC_MODEL_OPT_VALUE];
} segc_model_opt;

/* What a model is built from: the generic model keys and the family's own. */
typedef struct segc_model_spec {
    const char *type;          /* model.type */
    const char *variant;       /* model.variant ("": the family's default) */
    int num_classes;           /* >= 1 (resolved from the dataset by the caller); 0 = not known yet: */
    int in_channels;           /* validation then skips what depends on it; segc_model_new needs >= 1 */
    const segc_model_opt *opts;
    int n_opts;
    const segc_loss_cfg *loss; /* the `loss` config section (losses.h); NULL: the family's own loss */
} segc_model_spec;

/* Outputs of one forward. Segmentation: maps[0] is the main logits map
 * [N, K, h, w] (any h, w: callers resize), maps[1..] deep-supervision maps
 * (training only; coarser decoder levels). Detection: scores [N, A, K] and
 * boxes [N, A, 4] (later issues). */
typedef struct segc_model_out {
    int n_maps;
    segc_tensor *maps[SEGC_MODEL_MAX_OUTPUTS];
    segc_tensor *scores, *boxes;
} segc_model_out;

/* Training / evaluation targets of one batch. */
typedef struct segc_targets {
    segc_tensor *labels;       /* segmentation: [N, H, W] U8 class ids at the image size */
    int ignore_index;          /* pixels with this label count in no loss or metric (255) */
    /* detection (labels NULL): per-sample ground truth in pixels of the network
     * input (the loader's segc_batch fields); crowd boxes take part in no matching */
    int n_images;
    const int *n_boxes;
    float *const *boxes;       /* x1 y1 x2 y2 */
    int32_t *const *box_labels;/* contiguous class ids 0..K-1 */
    uint8_t *const *box_crowd;
    int img_h, img_w;          /* the network input size the boxes are in */
} segc_targets;

typedef enum { SEGC_PROBS_SOFTMAX = 0, SEGC_PROBS_SIGMOID = 1 } segc_probs_kind;

typedef struct segc_model segc_model;

typedef struct segc_model_family {
    const char *type;            /* model.type */
    const char *summary;         /* one line for `segc models` */
    segc_task_kind task;
    const char *variants;        /* "b0|b1|..." (NULL: the family has no variants) */
    const char *default_variant;
    const segc_model_key *keys;
    int n_keys;
    /* ranges and cross-key checks beyond the key kinds (may be NULL) */
    bool (*validate)(const segc_model_spec *s, char *err, size_t errlen);
    /* builds the layers and registers every parameter (zeroed) in m->params,
     * sets m->impl, m->num_outputs, m->probs */
    bool (*create)(segc_model *m, const segc_model_spec *s, char *err, size_t errlen);
    void (*init)(segc_model *m, uint64_t seed);   /* from-scratch initialisation */
    void (*destroy)(segc_model *m);               /* frees impl (not params) */
    bool (*forward)(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out);
    segc_tensor *(*loss)(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t);
    /* probs f32 [N, K, H, W] (after m->probs) -> labels U8 [N, H, W], both in
     * ctx's arena; NULL: the inference's argmax (K > 1) or threshold (K == 1), infer.h */
    bool (*postprocess)(segc_ctx *ctx, const segc_model *m, const segc_tensor *probs, segc_tensor *labels);
    /* model.pretrained: loads weights published under other names or shapes (e.g. timm / mmseg
     * ViT names, position embeddings of another grid); NULL: segc_params_load by parameter name */
    bool (*load_pretrained)(segc_model *m, const char *path, bool strict, segc_load_report *rep, char *err,
                            size_t errlen);
    /* detection families: outputs -> per-image detections (decode, score threshold, NMS;
     * detection.h), boxes scaled from the network input (in_h x in_w) to each image's
     * original size ori_h[i] x ori_w[i]; NULL for segmentation families */
    bool (*detect)(segc_ctx *ctx, const segc_model *m, const segc_model_out *out, int in_h, int in_w,
                   const int *ori_h, const int *ori_w, const segc_detect_opts *o, segc_detections *dets);
} segc_model_family;

struct segc_model {
    const segc_model_family *family;
    segc_params params;         /* the flat parameter store */
    char variant[64];
    int num_classes;            /* label classes the prediction uses */
    int num_outputs;            /* channels of the main logits map (== num_classes unless outputs are regions) */
    int in_channels;
    segc_probs_kind probs;
    void *impl;                 /* the family's model */
    segc_loss_cfg *loss;        /* copy of spec->loss (NULL: none); the family's loss hook builds from it */
};

/* ---- registry ---- */
int segc_model_n_families(void);
const segc_model_family *segc_model_family_at(int i);
/* NULL when unknown */
const segc_model_family *segc_model_family_find(const char *type);
/* "segformer|unet2d|..." */
void segc_model_type_list(char *buf, size_t n);

/* Known type (did-you-mean otherwise), known variant, every opt a key of the
 * family (did-you-mean) whose value parses as its kind (and is one of its
 * choices), then the family's validate(). Messages name model.KEY. */
bool segc_model_spec_validate(const segc_model_spec *s, char *err, size_t errlen);
/* Checks one value against the key's kind / choices ("" ok; message names model.KEY). */
bool segc_model_key_check(const segc_model_key *k, const char *value, char *err, size_t errlen);
const segc_model_key *segc_model_family_key(const segc_model_family *f, const char *name);

/* ---- family key readers (value from spec->opts, else the key's default) ---- */
int segc_spec_int(const segc_model_spec *s, const char *key);
double segc_spec_double(const segc_model_spec *s, const char *key);
bool segc_spec_bool(const segc_model_spec *s, const char *key);
/* copies into buf and returns it */
const char *segc_spec_str(const segc_model_spec *s, const char *key, char *buf, size_t n);
/* list values; returns the count (<= max) */
int segc_spec_ints(const segc_model_spec *s, const char *key, int *out, int max);
int segc_spec_doubles(const segc_model_spec *s, const char *key, double *out, int max);
/* The text of a key's value (given or default); NULL when the key is not the family's. */
const char *segc_spec_text(const segc_model_spec *s, const char *key);

/* ---- models ---- */
/* Validates the spec and builds the model (zeroed parameters). NULL + message. */
segc_model *segc_model_new(const segc_model_spec *s, char *err, size_t errlen);
void segc_model_init(segc_model *m, uint64_t seed);
void segc_model_free(segc_model *m);
/* images [N, C, H, W] f32/bf16 in ctx's arena. false with ctx's error set. */
bool segc_model_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out);
segc_tensor *segc_model_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t);
/* probs [N, K, H, W] f32 -> labels U8 [N, H, W] through the family's postprocess (an
 * error for families without one: their labels come from segc_infer) */
segc_tensor *segc_model_postprocess(segc_ctx *ctx, const segc_model *m, const segc_tensor *probs);
/* model.pretrained: the family's load_pretrained, else segc_params_load (report as there). */
bool segc_model_load_pretrained(segc_model *m, const char *path, bool strict, segc_load_report *rep, char *err,
                                size_t errlen);
/* The family's detect hook (an error naming the family when it has none). */
bool segc_model_detect(segc_ctx *ctx, const segc_model *m, const segc_model_out *out, int in_h, int in_w,
                       const int *ori_h, const int *ori_w, const segc_detect_opts *o, segc_detections *dets);
/* The main logits map only, as a segc_forward_fn (infer.h): model is a segc_model *. */
segc_tensor *segc_model_logits_fn(segc_ctx *ctx, void *model, segc_tensor *images);

#ifdef __cplusplus
}
#endif
#endif
