/* The unet2d model family (model.h): config keys, validation, and the glue
 * from segc_model to the UNet2D network and its losses (unet2d.h). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/model.h"
#include "segc/unet2d.h"

static const segc_model_key unet2d_keys[] = {
    {"filters", SEGC_KEY_INTS, "[32, 64, 128, 256, 512, 512]", NULL,
     "channels per level, finest first; depth = number of entries (nnU-Net 2-D: 6 levels)"},
    {"deep_supervision", SEGC_KEY_BOOL, "true", NULL, "deep-supervision heads on the next-coarser decoder levels"},
    {"deep_supr_num", SEGC_KEY_INT, "2", NULL, "number of deep-supervision heads (< number of levels - 1)"},
    {"loss", SEGC_KEY_STRING, "dice_ce", "dice_ce|regions",
     "dice_ce: softmax Dice (foreground, batch) + CE; regions: BraTS WT/TC/ET sigmoid Dice + BCE"},
    {"negative_slope", SEGC_KEY_DOUBLE, "0.01", NULL, "LeakyReLU negative slope"},
    {"norm_eps", SEGC_KEY_DOUBLE, "1e-5", NULL, "InstanceNorm epsilon"},
};
#define N_KEYS ((int)(sizeof unet2d_keys / sizeof *unet2d_keys))

/* spec -> network config and loss kind; false + message naming the key */
static bool read_spec(const segc_model_spec *s, segc_unet2d_config *c, segc_unet2d_loss_kind *loss, char *err,
                      size_t n) {
    char lv[32];
    segc_spec_str(s, "loss", lv, sizeof lv);
    bool regions = !strcmp(lv, "regions");
    if (!regions && strcmp(lv, "dice_ce") != 0)
        return segc_errorf(err, n, "model.loss: unknown value '%s' (choices: dice_ce|regions)", lv);
    if (regions && s->num_classes && s->num_classes != 5)
        return segc_errorf(err, n, "model.loss: regions expects BraTS labels 0..4 (5 classes), found %d classes",
                           s->num_classes);
    if (!regions && s->num_classes == 1)
        return segc_errorf(err, n, "model.loss: dice_ce needs >= 2 classes (Dice over the foreground), found %d",
                           s->num_classes);
    /* classes / channels not known yet (config check): stand-ins that pass */
    segc_unet2d_config_default(c, s->in_channels ? s->in_channels : 1, regions ? 3 : s->num_classes ? s->num_classes : 2);
    int f[SEGC_UNET2D_MAX_LEVELS + 1];
    int depth = segc_spec_ints(s, "filters", f, SEGC_UNET2D_MAX_LEVELS + 1);
    if (depth < 2 || depth > SEGC_UNET2D_MAX_LEVELS)
        return segc_errorf(err, n, "model.filters: unet2d needs 2..%d levels (one filter count each), found %d",
                           SEGC_UNET2D_MAX_LEVELS, depth);
    c->depth = depth;
    for (int l = 0; l < depth; l++) c->filters[l] = f[l];
    c->deep_supervision = segc_spec_bool(s, "deep_supervision");
    c->deep_supr_num = segc_spec_int(s, "deep_supr_num");
    c->negative_slope = (float)segc_spec_double(s, "negative_slope");
    c->norm_eps = (float)segc_spec_double(s, "norm_eps");
    *loss = regions ? SEGC_UNET2D_LOSS_REGIONS : SEGC_UNET2D_LOSS_DICE_CE;
    return segc_unet2d_check_config(c, err, n);
}

static bool unet2d_validate(const segc_model_spec *s, char *err, size_t n) {
    segc_unet2d_config c;
    segc_unet2d_loss_kind k;
    return read_spec(s, &c, &k, err, n);
}

typedef struct unet2d_impl {
    segc_unet2d *net;
    segc_unet2d_loss_kind loss;
} unet2d_impl;

static bool unet2d_create(segc_model *m, const segc_model_spec *s, char *err, size_t n) {
    segc_unet2d_config c;
    segc_unet2d_loss_kind loss;
    if (!read_spec(s, &c, &loss, err, n)) return false;
    if (s->loss && s->loss->aux.given)
        return segc_errorf(err, n, "loss.aux: unet2d has no auxiliary head (its deep-supervision outputs take loss.decode "
                           "with nnU-Net's weights)");
    if (s->loss && loss == SEGC_UNET2D_LOSS_REGIONS)
        return segc_errorf(err, n, "loss: model.loss=regions (sigmoid region outputs) takes no loss section; use "
                           "model.loss=dice_ce or remove loss.*");
    unet2d_impl *im = calloc(1, sizeof *im);
    if (!im) return segc_errorf(err, n, "unet2d: out of memory");
    if (m->params.n == 0 && !m->params.finalized) segc_params_init(&m->params);
    im->net = segc_unet2d_new(&c, &m->params, err, n);
    if (!im->net) {
        free(im);
        return false;
    }
    im->loss = loss;
    m->impl = im;
    m->in_channels = s->in_channels;
    m->num_classes = s->num_classes;
    m->num_outputs = c.out_channels;
    m->probs = loss == SEGC_UNET2D_LOSS_REGIONS ? SEGC_PROBS_SIGMOID : SEGC_PROBS_SOFTMAX;
    return true;
}

static void unet2d_init(segc_model *m, uint64_t seed) { segc_unet2d_init(((unet2d_impl *)m->impl)->net, seed); }

static void unet2d_destroy(segc_model *m) {
    unet2d_impl *im = m->impl;
    if (!im) return;
    segc_unet2d_free(im->net);
    free(im);
    m->impl = NULL;
}

static bool unet2d_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out) {
    memset(out, 0, sizeof *out);
    out->n_maps = segc_unet2d_forward(ctx, ((unet2d_impl *)m->impl)->net, images, out->maps);
    return out->n_maps > 0;
}

static segc_tensor *unet2d_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t) {
    if (m->loss && m->loss->decode.given) {   /* the `loss` section on every output, nnU-Net's deep-supervision weights */
        double wsum = 0;
        for (int i = 0; i < out->n_maps; i++) wsum += ldexp(1.0, -i);
        segc_tensor *total = NULL;
        for (int i = 0; i < out->n_maps; i++) {
            segc_tensor *l = segc_loss_head_fwd(ctx, m->loss, &m->loss->decode, out->maps[i], t->labels, t->ignore_index,
                                                false, i == 0);
            if (!l) return NULL;
            if (out->n_maps > 1) l = segc_mul_scalar(ctx, l, (float)(ldexp(1.0, -i) / wsum));
            total = total ? segc_add(ctx, total, l) : l;
        }
        return total;
    }
    return segc_unet2d_loss(ctx, ((unet2d_impl *)m->impl)->loss, out->maps, out->n_maps, t->labels, t->ignore_index);
}

static bool unet2d_postprocess(segc_ctx *ctx, const segc_model *m, const segc_tensor *probs, segc_tensor *labels) {
    const int64_t N = probs->shape[0], K = probs->shape[1], HW = probs->shape[2] * probs->shape[3];
    if (((const unet2d_impl *)m->impl)->loss == SEGC_UNET2D_LOSS_REGIONS) {
        segc_unet2d_regions_to_labels(probs, labels);
        return true;
    }
    /* softmax outputs: argmax over classes, first maximum wins (torch.argmax) */
    const float *p = segc_f32(probs);
    uint8_t *o = labels->data;
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < HW; i++) {
            const float *q = p + n * K * HW + i;
            int64_t best = 0;
            for (int64_t k = 1; k < K; k++)
                if (q[k * HW] > q[best * HW]) best = k;
            o[n * HW + i] = (uint8_t)best;
        }
    return true;
}

const segc_model_family segc_family_unet2d = {
    .type = "unet2d",
    .summary = "nnU-Net 2-D U-Net (MONAI DynUNet names): instance norm, LeakyReLU, deep supervision, Dice+CE / "
               "BraTS regions",
    .task = SEGC_TASK_SEGMENTATION,
    .variants = NULL,
    .default_variant = NULL,
    .keys = unet2d_keys,
    .n_keys = N_KEYS,
    .validate = unet2d_validate,
    .create = unet2d_create,
    .init = unet2d_init,
    .destroy = unet2d_destroy,
    .forward = unet2d_forward,
    .loss = unet2d_loss,
    .postprocess = unet2d_postprocess,
};
