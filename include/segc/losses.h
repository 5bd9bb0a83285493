/* segc configured losses: the `loss` config section (mmsegmentation's names
 * and semantics) and the model-agnostic loss a segmentation family builds
 * from it in its loss hook.
 *
 *   loss:
 *     decode:                       # the main head: terms summed, each x loss_weight
 *       ce: {loss_weight: 0.375, class_weight: auto, avg_non_ignore: true}
 *       dice: {loss_weight: 1.125, smooth: 1, exponent: 2}
 *     aux:                          # auxiliary heads (DeepLabV3+'s FCN head); absent: the family's default
 *       ce: {loss_weight: 0.4}
 *     sampler: {type: ohem, thresh: 0.7, min_kept: 100000}   # decode head only
 *     class_weight_rule: enet       # what class_weight: auto computes (enet | median_freq)
 *
 * Term types (mmseg type names accepted as aliases):
 *   ce (CrossEntropyLoss): class_weight (list | auto), avg_non_ignore (false:
 *       mmseg's mean over every pixel, ignored ones included; true: over the
 *       non-ignored ones), label_smoothing (PyTorch's, per pixel);
 *       loss = sum_p kept_p * l_p / (#pixels or #non-ignored pixels), l_p the
 *       PyTorch per-pixel CE with the class weights (mmseg: weighted pixels
 *       are NOT renormalised by the weights' sum).
 *   dice (DiceLoss, mmseg 0.x): smooth, exponent, class_weight, ignore_index
 *       (segc_dice_loss in ops_loss.h).
 *   focal (FocalLoss, mmseg's sigmoid focal loss): gamma, alpha,
 *       class_weight; mean over every pixel x class, ignored pixels 0.
 *   lovasz (LovaszLoss multi_class): classes (present | all), per_image,
 *       class_weight.
 * Every term has loss_weight (>= 0, default 1). The OHEM sampler
 * (OHEMPixelSampler) keeps, per batch, the valid pixels whose softmax
 * probability of the true class is below max(thresh, the (min_kept x N)-th
 * smallest such probability); without thresh (thresh < 0) the min_kept x N
 * pixels of largest CE. Its 0/1 pixel weights multiply the pixel-wise terms
 * (ce, focal); dice and lovasz see every valid pixel.
 * Logits are resized (bilinear, align_corners as the family's) to the labels'
 * size before any term, as mmseg's decode heads do. */
#ifndef SEGC_LOSSES_H
#define SEGC_LOSSES_H
#include "segc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SEGC_LOSS_MAX_CLASSES 256

typedef enum { SEGC_LOSS_CE = 0, SEGC_LOSS_DICE, SEGC_LOSS_FOCAL, SEGC_LOSS_LOVASZ, SEGC_LOSS_N_TYPES } segc_loss_type;

typedef struct segc_loss_term {
    bool on;                       /* given in the config */
    double loss_weight;            /* >= 0, default 1 */
    bool class_weight_auto;        /* class_weight: auto (resolved into class_weight by segc_loss_resolve_auto) */
    int n_class_weight;            /* 0: none */
    double class_weight[SEGC_LOSS_MAX_CLASSES];
    bool avg_non_ignore;           /* ce (default false, mmseg) */
    double label_smoothing;        /* ce, [0, 1] */
    double smooth;                 /* dice (1) */
    int exponent;                  /* dice (2) */
    int ignore_index;              /* dice (255: the targets' ignore index) */
    double gamma, alpha;           /* focal (2, 0.5) */
    bool per_image;                /* lovasz (false) */
    bool all_classes;              /* lovasz classes: all (false: present) */
} segc_loss_term;

typedef struct segc_loss_head {
    bool given;                    /* at least one term was configured */
    segc_loss_term terms[SEGC_LOSS_N_TYPES];
} segc_loss_head;

typedef struct segc_loss_cfg {
    segc_loss_head decode, aux;
    struct {
        bool on;
        double thresh;             /* < 0: none (loss-based selection) */
        int64_t min_kept;          /* per image (mmseg: x batch size) */
    } sampler;
    char class_weight_rule[16];    /* enet | median_freq */
} segc_loss_cfg;

/* "ce|dice|focal|lovasz" */
const char *segc_loss_type_name(segc_loss_type t);
#define SEGC_LOSS_TYPES "ce|dice|focal|lovasz"

/* ---- config (src/train/losses_config.c) ---- */
/* Defaults: nothing configured (families keep their own loss). */
void segc_loss_cfg_defaults(segc_loss_cfg *c);
/* Whether anything is configured (a family then builds its loss from c). */
bool segc_loss_cfg_given(const segc_loss_cfg *c);
/* One value at path (relative to "loss.", e.g. "decode.ce.loss_weight"): a
 * scalar (n_items == -1, items[0]) or a list of scalars; a path naming a
 * term ("decode.dice") with n_items == 0 and no items switches it on with
 * its defaults. false + one-line message naming loss.PATH. */
bool segc_loss_cfg_set(segc_loss_cfg *c, const char *path, const char *const *items, int n_items, char *err,
                       size_t errlen);
/* Cross-key checks (negative weights, ranges; crop_pixels > 0: OHEM min_kept
 * against a crop's pixels). false + one-line message. */
bool segc_loss_cfg_check(const segc_loss_cfg *c, int64_t crop_pixels, char *err, size_t errlen);
/* The section as YAML ("loss:" and its lines, or "loss: {}"), indented by `indent`; malloc'd. */
char *segc_loss_cfg_yaml(const segc_loss_cfg *c, int indent);

/* ---- class_weight: auto ----
 * From per-class pixel counts (hist[k], ignore excluded) and, for
 * median_freq, the summed pixel counts of the images containing each class
 * (present_px[k]):
 *   enet:        w_k = 1 / ln(1.02 + p_k), p_k = hist[k] / sum(hist)
 *   median_freq: w_k = median_j(f_j) / f_k, f_k = hist[k] / present_px[k]
 *                (median over classes that occur; 0 for a class that never occurs)
 * false + message for an unknown rule or an empty histogram. */
bool segc_loss_auto_weights(const char *rule, const int64_t *hist, const int64_t *present_px, int K, double *w,
                            char *err, size_t errlen);
/* Whether some term still says class_weight: auto without resolved values. */
bool segc_loss_cfg_needs_auto(const segc_loss_cfg *c);
/* Fills every class_weight: auto term with w[0..K). */
void segc_loss_cfg_fill_auto(segc_loss_cfg *c, const double *w, int K);

/* ---- building the loss (src/models/losses.c) ---- */
/* Checks c against a model: class_weight lengths == K (message names both
 * lengths), aux terms only when the model has an auxiliary head. */
bool segc_loss_cfg_check_model(const segc_loss_cfg *c, const char *family, int K, bool has_aux, char *err,
                               size_t errlen);
/* The loss of one head: logits [N, K, h, w] (f32/bf16; resized bilinearly
 * with align_corners to the labels' H x W when the sizes differ), labels
 * [N, H, W] u8/i32/i64. Sum of the head's terms x loss_weight; the OHEM
 * sampler acts when use_sampler (the decode head). Scalar f32, NULL + ctx error. */
segc_tensor *segc_loss_head_fwd(segc_ctx *ctx, const segc_loss_cfg *c, const segc_loss_head *h, segc_tensor *logits,
                                segc_tensor *labels, int ignore_index, bool align_corners, bool use_sampler);

/* ---- new loss ops (src/ops/loss_focal_lovasz.c) ---- */
/* mmseg sigmoid focal loss per pixel: logits [N, C, ...], target [N, ...];
 * returns f32 [N, ...] with sum_c w_c * a_c * (1 - pt_c)^gamma * BCE(x_c, y_c),
 * y = one-hot(target), a_c = alpha y + (1 - alpha)(1 - y), pt_c = p y + (1 - p)(1 - y),
 * 0 at ignored pixels. Gradients to the logits (through the focal factor too, as mmseg). */
segc_tensor *segc_sigmoid_focal(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, float gamma, float alpha,
                                const float *class_weight, int ignore_index);
/* Lovasz-softmax (Berman et al. 2018; mmseg LovaszLoss multi_class): softmax
 * over classes, ignored pixels dropped; per class c (present ones, or all),
 * errors |[t == c] - p_c| sorted descending (ties in pixel order) dotted with
 * the Lovasz extension's gradient of the Jaccard loss; mean over those
 * classes (x class_weight[c]), over the batch at once or per image then
 * averaged. Scalar f32; gradients to the logits. */
segc_tensor *segc_lovasz_softmax(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, bool per_image,
                                 bool all_classes, const float *class_weight, int ignore_index);
/* OHEM pixel selection (mmseg OHEMPixelSampler) -> f32 [N, ...] of 0/1 in
 * ctx's arena, no gradient. thresh >= 0: probabilities of the true class from
 * logits; thresh < 0: the min_kept * N pixels of largest pixel_loss [N, ...]
 * (ties: lower pixel index first). An error naming min_kept and the batch's
 * pixels when min_kept * N exceeds them. */
segc_tensor *segc_ohem_weights(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, const segc_tensor *pixel_loss,
                               double thresh, int64_t min_kept, int ignore_index);

#ifdef __cplusplus
}
#endif
#endif
