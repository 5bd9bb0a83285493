/* segc ops: losses (see ops.h for conventions).
 *
 * Logits/predictions are f32 or bf16 (computed in f32); the loss is an f32
 * tensor: a scalar (0-D, one element) for mean/sum, the per-element losses for
 * SEGC_LOSS_NONE. Gradients flow to the logits (and to float targets where
 * noted); class weights are constants. Results are bitwise identical for any
 * thread count. */
#ifndef SEGC_OPS_LOSS_H
#define SEGC_OPS_LOSS_H
#include "segc/core.h"

typedef enum { SEGC_LOSS_MEAN = 0, SEGC_LOSS_SUM, SEGC_LOSS_NONE } segc_loss_reduction;

/* ---- cross entropy ---- */
typedef struct {
    int ignore_index;               /* target value that contributes nothing (default -100) */
    segc_loss_reduction reduction;  /* default mean */
    segc_tensor *weight;            /* class weights [C] (f32 or bf16) or NULL */
    float label_smoothing;          /* in [0, 1], default 0 */
} segc_ce_opts;
segc_ce_opts segc_ce_opts_default(void);

/* PyTorch F.cross_entropy with class-index targets: logits [N, C, ...] (or
 * [N, C]); target [N, ...] as i64, i32 or u8. Weighted mean divides by the
 * sum of the target weights of the non-ignored elements (their count without
 * weights); label smoothing mixes in eps/C * sum_c w_c * (-log p_c) over the
 * non-ignored elements, under the same denominator.
 * One deviation: where PyTorch's mean divides by zero (every target ignored,
 * or zero total weight) and returns NaN, this returns 0 with zero gradients,
 * so an all-ignored crop cannot poison training. A target outside [0, C)
 * that is not ignore_index is an error naming the value and its position.
 * o may be NULL (defaults). reduction none returns [N, ...] (0 where ignored). */
segc_tensor *segc_cross_entropy(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, const segc_ce_opts *o);

/* ---- soft Dice (mmseg 0.x DiceLoss) ---- */
typedef struct {
    int ignore_index;               /* default 255; ignored pixels take no part in any sum */
    float smooth;                   /* default 1 */
    int exponent;                   /* integer power of the probabilities in the denominator, default 2 */
    segc_tensor *class_weight;      /* [C] or NULL */
    segc_loss_reduction reduction;  /* over the batch; default mean */
} segc_dice_opts;
segc_dice_opts segc_dice_opts_default(void);

/* p = softmax(logits) over dim 1, t = one-hot(target). For each sample n and
 * class c (c != ignore_index), over the sample's valid (non-ignored) pixels:
 *   dice_nc = 1 - (2 * sum(p*t) + smooth) / (sum(p^exponent) + sum(t) + smooth)
 * loss_n = sum_c w_c * dice_nc / C (C counts every class, as in mmseg), then
 * reduced over n (mean, sum, or none: [N]). Unlike mmseg 0.x, ignored pixels
 * are excluded from the denominator too (mmseg masks only the numerator and
 * counts a clamped one-hot of the ignore label there). logits [N, C, ...],
 * target [N, ...] (i64, i32 or u8); a label outside [0, C) that is not
 * ignore_index is an error. o may be NULL (defaults). */
segc_tensor *segc_dice_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, const segc_dice_opts *o);

/* ---- elementwise losses (PyTorch semantics) ---- */
/* F.binary_cross_entropy_with_logits: target float, same shape as logits;
 * weight and pos_weight (or NULL) broadcast to the logits' shape (pos_weight
 * typically [C] over the last dim). Gradients to logits and target. */
segc_tensor *segc_bce_with_logits(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, segc_tensor *weight,
                                  segc_tensor *pos_weight, segc_loss_reduction reduction);
/* F.smooth_l1_loss: 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta
 * (beta = 0: L1). pred and target float of the same shape; gradients to both. */
segc_tensor *segc_smooth_l1(segc_ctx *ctx, segc_tensor *pred, segc_tensor *target, float beta,
                            segc_loss_reduction reduction);

#endif
