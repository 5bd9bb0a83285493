/* The configured loss of a segmentation head (losses.h): the `loss` section's
 * terms over one logits map, composed from the loss ops with mmseg's
 * reductions. Model-agnostic: every segmentation family calls
 * segc_loss_head_fwd from its loss hook when a `loss` section is given. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "segc/losses.h"
#include "segc/ops.h"

static const char *const type_names[SEGC_LOSS_N_TYPES] = {"ce", "dice", "focal", "lovasz"};

const char *segc_loss_type_name(segc_loss_type t) {
    return (unsigned)t < SEGC_LOSS_N_TYPES ? type_names[t] : "?";
}

bool segc_loss_cfg_check_model(const segc_loss_cfg *c, const char *family, int K, bool has_aux, char *err,
                               size_t errlen) {
    if (!c) return true;
    if (c->aux.given && !has_aux)
        return segc_errorf(err, errlen, "loss.aux: %s has no auxiliary head in this configuration (configure loss.decode "
                           "only)", family);
    const segc_loss_head *heads[2] = {&c->decode, &c->aux};
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < SEGC_LOSS_N_TYPES; t++) {
            const segc_loss_term *tm = &heads[h]->terms[t];
            if (tm->on && tm->n_class_weight && K > 0 && tm->n_class_weight != K)
                return segc_errorf(err, errlen, "loss.%s.%s.class_weight: expected %d entries (one per class of the model), "
                                   "found %d", h ? "aux" : "decode", type_names[t], K, tm->n_class_weight);
        }
    return true;
}

/* class weights of a term as f32 in ctx's arena (NULL: none); false when `auto` was never resolved */
static bool term_weights(segc_ctx *ctx, const segc_loss_term *tm, const char *head, segc_loss_type t, int64_t C,
                         float **out) {
    *out = NULL;
    if (tm->class_weight_auto && !tm->n_class_weight) {
        segc_set_error(ctx, "loss.%s.%s.class_weight: auto is resolved from the training split by `segc train` (run "
                       "directory's config.yaml holds the values); give a list here", head, type_names[t]);
        return false;
    }
    if (!tm->n_class_weight) return true;
    if (tm->n_class_weight != C) {
        segc_set_error(ctx, "loss.%s.%s.class_weight: expected %lld entries (one per class), found %d", head,
                       type_names[t], (long long)C, tm->n_class_weight);
        return false;
    }
    float *w = segc_arena_alloc(&ctx->arena, (size_t)C * sizeof(float));
    for (int64_t c = 0; c < C; c++) w[c] = (float)tm->class_weight[c];
    *out = w;
    return true;
}

static int64_t count_valid(const segc_tensor *labels, int ignore_index) {
    const int64_t n = segc_numel(labels);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t v = labels->dtype == SEGC_U8    ? ((const uint8_t *)labels->data)[i]
                    : labels->dtype == SEGC_I32 ? ((const int32_t *)labels->data)[i]
                                                : ((const int64_t *)labels->data)[i];
        k += v != ignore_index;
    }
    return k;
}

/* sum(x [* w]) / den as a scalar */
static segc_tensor *weighted_mean(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, double den) {
    if (w) x = segc_mul(ctx, x, w);
    segc_tensor *s = segc_sum(ctx, x, NULL, 0, false);
    return segc_mul_scalar(ctx, s, (float)(1.0 / (den > 0 ? den : 1.0)));
}

static segc_tensor *ce_pixels(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index, float *w,
                              double smoothing) {
    segc_ce_opts o = segc_ce_opts_default();
    o.ignore_index = ignore_index;
    o.reduction = SEGC_LOSS_NONE;
    o.label_smoothing = (float)smoothing;
    if (w) o.weight = segc_tensor_wrap(ctx, SEGC_F32, 1, (int64_t[]){logits->shape[1]}, w);
    return segc_cross_entropy(ctx, logits, labels, &o);
}

segc_tensor *segc_loss_head_fwd(segc_ctx *ctx, const segc_loss_cfg *c, const segc_loss_head *h, segc_tensor *logits,
                                segc_tensor *labels, int ignore_index, bool align_corners, bool use_sampler) {
    if (!logits || !labels || ctx->has_err) return NULL;
    const char *head = h == &c->aux ? "aux" : "decode";
    char a[96], b[96];
    if (logits->ndim != 4 || labels->ndim != 3 || labels->shape[0] != logits->shape[0]) {
        segc_set_error(ctx, "loss.%s: logits [N, K, h, w] need labels [N, H, W] of the same N; found logits %s, labels %s",
                       head, segc_shape_str(logits, a, sizeof a), segc_shape_str(labels, b, sizeof b));
        return NULL;
    }
    const int64_t C = logits->shape[1], H = labels->shape[1], W = labels->shape[2];
    const int64_t total = segc_numel(labels);
    const bool sampler = use_sampler && c->sampler.on;
    const segc_loss_term *ce = &h->terms[SEGC_LOSS_CE];
    float *cw[SEGC_LOSS_N_TYPES];
    for (int t = 0; t < SEGC_LOSS_N_TYPES; t++)
        if (!h->terms[t].on) cw[t] = NULL;
        else if (!term_weights(ctx, &h->terms[t], head, (segc_loss_type)t, C, &cw[t])) return NULL;
    /* CE alone, unweighted, unsampled: the fused resize + CE (no full-size logits) */
    bool only_plain_ce = !sampler && !align_corners && ce->on && !cw[SEGC_LOSS_CE] && ce->label_smoothing == 0;
    for (int t = 1; t < SEGC_LOSS_N_TYPES; t++) only_plain_ce = only_plain_ce && !h->terms[t].on;
    int64_t valid = -1;
    if (only_plain_ce) {
        segc_tensor *l = segc_resize_cross_entropy(ctx, logits, labels, ignore_index);
        if (!l) return NULL;
        if (!ce->avg_non_ignore) {   /* mmseg's default: the mean over every pixel, ignored ones included */
            valid = count_valid(labels, ignore_index);
            if (total) l = segc_mul_scalar(ctx, l, (float)((double)valid / (double)total));
        }
        return ce->loss_weight == 1.0 ? l : segc_mul_scalar(ctx, l, (float)ce->loss_weight);
    }
    segc_tensor *x = logits;
    if (logits->shape[2] != H || logits->shape[3] != W) x = segc_resize_bilinear(ctx, logits, (int)H, (int)W, align_corners);
    if (!x) return NULL;
    segc_tensor *sw = NULL;   /* OHEM pixel weights */
    if (sampler) {
        segc_tensor *pl = NULL;
        if (c->sampler.thresh < 0) {   /* loss-based: the per-pixel CE (the head's CE weights), no gradient */
            bool ge = ctx->grad_enabled;
            ctx->grad_enabled = false;
            pl = ce_pixels(ctx, x, labels, ignore_index, cw[SEGC_LOSS_CE], 0);
            ctx->grad_enabled = ge;
            if (!pl) return NULL;
        }
        sw = segc_ohem_weights(ctx, x, labels, pl, c->sampler.thresh, c->sampler.min_kept, ignore_index);
        if (!sw) return NULL;
    }
    segc_tensor *sum = NULL;
    for (int t = 0; t < SEGC_LOSS_N_TYPES; t++) {
        const segc_loss_term *tm = &h->terms[t];
        if (!tm->on) continue;
        segc_tensor *l = NULL;
        switch ((segc_loss_type)t) {
        case SEGC_LOSS_CE: {
            segc_tensor *px = ce_pixels(ctx, x, labels, ignore_index, cw[t], tm->label_smoothing);
            if (!px) return NULL;
            if (tm->avg_non_ignore && valid < 0) valid = count_valid(labels, ignore_index);
            l = weighted_mean(ctx, px, sw, tm->avg_non_ignore ? (double)valid : (double)total);
            break;
        }
        case SEGC_LOSS_DICE: {
            segc_dice_opts o = segc_dice_opts_default();
            o.ignore_index = tm->ignore_index;
            o.smooth = (float)tm->smooth;
            o.exponent = tm->exponent;
            if (cw[t]) o.class_weight = segc_tensor_wrap(ctx, SEGC_F32, 1, (int64_t[]){C}, cw[t]);
            l = segc_dice_loss(ctx, x, labels, &o);
            break;
        }
        case SEGC_LOSS_FOCAL: {
            segc_tensor *px = segc_sigmoid_focal(ctx, x, labels, (float)tm->gamma, (float)tm->alpha, cw[t], ignore_index);
            if (!px) return NULL;
            l = weighted_mean(ctx, px, sw, (double)total * (double)C);   /* mmseg: mean over pixels x classes */
            break;
        }
        case SEGC_LOSS_LOVASZ:
            l = segc_lovasz_softmax(ctx, x, labels, tm->per_image, tm->all_classes, cw[t], ignore_index);
            break;
        default: break;
        }
        if (!l) return NULL;
        if (tm->loss_weight != 1.0) l = segc_mul_scalar(ctx, l, (float)tm->loss_weight);
        sum = sum ? segc_add(ctx, sum, l) : l;
    }
    if (!sum) segc_set_error(ctx, "loss.%s: no loss term configured (valid types: %s)", head, SEGC_LOSS_TYPES);
    return sum;
}
