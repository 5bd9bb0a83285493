/* UNet2D losses (nnU-Net's definitions), composed from segc ops: the
 * differentiable parts are softmax/sigmoid, mul, sum and the existing cross
 * entropy / BCE; only the constant targets (one-hot or region masks, the
 * ignore mask and the per-class label counts) are built here in plain C. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "segc/unet2d.h"

#define DICE_SMOOTH 1e-5f   /* nnU-Net MemoryEfficientSoftDiceLoss smooth */

static int64_t label_at(const segc_tensor *t, int64_t i) {
    switch (t->dtype) {
    case SEGC_U8: return ((const uint8_t *)t->data)[i];
    case SEGC_I32: return ((const int32_t *)t->data)[i];
    default: return ((const int64_t *)t->data)[i];
    }
}

static bool check_pair(segc_ctx *ctx, const char *op, const segc_tensor *logits, const segc_tensor *labels) {
    char a[96], b[96];
    if (logits->ndim != 4 || labels->ndim != 3 || labels->shape[0] != logits->shape[0] ||
        labels->shape[1] != logits->shape[2] || labels->shape[2] != logits->shape[3] ||
        (labels->dtype != SEGC_U8 && labels->dtype != SEGC_I32 && labels->dtype != SEGC_I64)) {
        segc_set_error(ctx, "%s: logits [N, K, H, W] need labels [N, H, W] (u8/i32/i64) of the same N, H, W; found "
                       "logits %s, labels %s %s", op, segc_shape_str(logits, a, sizeof a),
                       segc_dtype_name(labels->dtype), segc_shape_str(labels, b, sizeof b));
        return false;
    }
    return segc_check_float(ctx, op, "logits", logits);
}

/* Constant targets of one batch: y [N, K, H, W] (one-hot or region membership, zero on ignored
 * pixels), mask [N, 1, H, W] (1 where not ignored), gt [K] = per-channel sums of y. region_of
 * maps a label to its K-bit membership; NULL means one-hot. false on a label outside [0, n_labels). */
typedef unsigned (*membership_fn)(int64_t label);
typedef struct { segc_tensor *y, *mask, *gt; int64_t valid; } targets;

static bool build_targets(segc_ctx *ctx, const char *op, const segc_tensor *labels, int K, int n_labels,
                          int ignore_index, membership_fn region_of, targets *t) {
    const int64_t N = labels->shape[0], HW = labels->shape[1] * labels->shape[2];
    t->y = segc_tensor_zeros(ctx, SEGC_F32, 4, (int64_t[]){N, K, labels->shape[1], labels->shape[2]});
    t->mask = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){N, 1, labels->shape[1], labels->shape[2]});
    t->gt = segc_tensor_new(ctx, SEGC_F32, 1, (int64_t[]){K});
    if (!t->y || !t->mask || !t->gt) return false;
    float *y = segc_f32(t->y), *mk = segc_f32(t->mask);
    double gt[64] = {0};   /* K <= 64 is checked by the callers */
    int64_t valid = 0;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t i = 0; i < HW; i++) {
            int64_t lab = label_at(labels, n * HW + i);
            if (lab == ignore_index) { mk[n * HW + i] = 0.0f; continue; }
            if (lab < 0 || lab >= n_labels) {
                segc_set_error(ctx, "%s: label %lld at sample %lld pixel %lld is outside [0, %d) and not the ignore "
                               "index %d", op, (long long)lab, (long long)n, (long long)i, n_labels, ignore_index);
                return false;
            }
            mk[n * HW + i] = 1.0f;
            valid++;
            unsigned bits = region_of ? region_of(lab) : 1u << lab;
            for (int k = 0; k < K; k++)
                if (bits >> k & 1u) { y[(n * K + k) * HW + i] = 1.0f; gt[k] += 1.0; }
        }
    }
    for (int k = 0; k < K; k++) segc_f32(t->gt)[k] = (float)gt[k];
    t->valid = valid;
    return true;
}

/* mean over channels [c0, K) of (2 I + s) / (P + G + s), batch dice: I, P, G summed over N, H, W.
 * p: probabilities [N, K, H, W] f32. */
static segc_tensor *batch_soft_dice(segc_ctx *ctx, segc_tensor *p, const targets *t, int c0) {
    static const int axes[3] = {0, 2, 3};
    const int K = (int)p->shape[1];
    segc_tensor *I = segc_sum(ctx, segc_mul(ctx, p, t->y), axes, 3, false);
    /* the prediction sum covers non-ignored pixels only; skip the mask product when nothing is ignored */
    segc_tensor *pm = t->valid == segc_numel(t->mask) ? p : segc_mul(ctx, p, t->mask);
    segc_tensor *P = segc_sum(ctx, pm, axes, 3, false);
    segc_tensor *num = segc_add_scalar(ctx, segc_mul_scalar(ctx, I, 2.0f), DICE_SMOOTH);
    /* nnU-Net clips the denominator at 1e-8; it is >= smooth = 1e-5 here, so the clip never acts */
    segc_tensor *den = segc_add_scalar(ctx, segc_add(ctx, P, t->gt), DICE_SMOOTH);
    segc_tensor *dc = segc_div(ctx, num, den);
    if (c0 > 0) dc = segc_slice(ctx, dc, 0, c0, K, 1);
    return segc_mean(ctx, dc, NULL, 0, false);
}

static segc_tensor *as_f32(segc_ctx *ctx, segc_tensor *x) { return x->dtype == SEGC_F32 ? x : segc_cast(ctx, x, SEGC_F32); }

segc_tensor *segc_unet2d_dice_ce(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index) {
    static const char *op = "unet2d dice_ce loss";
    if (!logits || !labels) return NULL;
    if (!check_pair(ctx, op, logits, labels)) return NULL;
    const int K = (int)logits->shape[1];
    if (K < 2 || K > 64) {
        segc_set_error(ctx, "%s: needs 2..64 classes (Dice over the foreground classes), found %d", op, K);
        return NULL;
    }
    targets t;
    if (!build_targets(ctx, op, labels, K, K, ignore_index, NULL, &t)) return NULL;
    segc_tensor *lf = as_f32(ctx, logits);
    segc_ce_opts co = segc_ce_opts_default();
    co.ignore_index = ignore_index;
    segc_tensor *ce = segc_cross_entropy(ctx, lf, labels, &co);   /* 0 when every pixel is ignored, as nnU-Net */
    segc_tensor *dc = batch_soft_dice(ctx, segc_softmax(ctx, lf, 1), &t, 1);
    return segc_sub(ctx, ce, dc);
}

/* BraTS-2015 labels: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing ->
 * bit 0 whole tumour {1,2,3,4}, bit 1 tumour core {1,3,4}, bit 2 enhancing {4} */
static unsigned brats_regions(int64_t lab) {
    static const unsigned bits[5] = {0u, 3u, 1u, 3u, 7u};
    return bits[lab];
}

segc_tensor *segc_unet2d_region_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index) {
    static const char *op = "unet2d regions loss";
    if (!logits || !labels) return NULL;
    if (!check_pair(ctx, op, logits, labels)) return NULL;
    if (logits->shape[1] != 3) {
        segc_set_error(ctx, "%s: needs 3 region channels (whole tumour, tumour core, enhancing), found %lld", op,
                       (long long)logits->shape[1]);
        return NULL;
    }
    targets t;
    if (!build_targets(ctx, op, labels, 3, 5, ignore_index, brats_regions, &t)) return NULL;
    segc_tensor *lf = as_f32(ctx, logits);
    bool masked = t.valid != segc_numel(t.mask);
    segc_tensor *bce = segc_bce_with_logits(ctx, lf, t.y, masked ? t.mask : NULL, NULL, SEGC_LOSS_SUM);
    double denom = (double)t.valid * 3.0;
    bce = segc_mul_scalar(ctx, bce, (float)(1.0 / (denom > 0 ? denom : 1.0)));
    segc_tensor *dc = batch_soft_dice(ctx, segc_sigmoid(ctx, lf), &t, 0);
    return segc_sub(ctx, bce, dc);
}

segc_tensor *segc_unet2d_loss(segc_ctx *ctx, segc_unet2d_loss_kind kind, segc_tensor *const *maps, int n_maps,
                              segc_tensor *labels, int ignore_index) {
    if (n_maps < 1) {
        segc_set_error(ctx, "unet2d loss: no output maps");
        return NULL;
    }
    /* nnU-Net deep-supervision weights 1, 1/2, 1/4, ... normalised to sum 1 */
    double wsum = 0;
    for (int i = 0; i < n_maps; i++) wsum += ldexp(1.0, -i);
    segc_tensor *total = NULL;
    for (int i = 0; i < n_maps; i++) {
        segc_tensor *l = kind == SEGC_UNET2D_LOSS_REGIONS ? segc_unet2d_region_loss(ctx, maps[i], labels, ignore_index)
                                                          : segc_unet2d_dice_ce(ctx, maps[i], labels, ignore_index);
        if (!l) return NULL;
        if (n_maps > 1) l = segc_mul_scalar(ctx, l, (float)(ldexp(1.0, -i) / wsum));
        total = total ? segc_add(ctx, total, l) : l;
    }
    return total;
}

void segc_unet2d_regions_to_labels(const segc_tensor *probs, segc_tensor *labels) {
    const int64_t N = probs->shape[0], HW = probs->shape[2] * probs->shape[3];
    const float *p = segc_f32(probs);
    uint8_t *o = labels->data;
    for (int64_t n = 0; n < N; n++) {
        const float *wt = p + n * 3 * HW, *tc = wt + HW, *et = tc + HW;
        for (int64_t i = 0; i < HW; i++)
            o[n * HW + i] = et[i] > 0.5f ? 4 : tc[i] > 0.5f ? 1 : wt[i] > 0.5f ? 2 : 0;
    }
}
