/* Segmenter as a registered model family (model.type: segmenter): config
 * keys -> segc_segmenter_config, and the generic model calls. The network is
 * segmenter.c / vit.c. */
#include <stdlib.h>
#include <string.h>

#include "segc/model.h"
#include "segc/segmenter.h"

static const segc_model_key keys[] = {
    {"decoder", SEGC_KEY_STRING, "mask", "linear|mask",
     "linear: 1x1 conv on the patch features; mask: mmseg's mask transformer"},
    {"patch_size", SEGC_KEY_INT, "16", NULL, "ViT patch size (16 or 32 for the published models)"},
    {"img_size", SEGC_KEY_INTS, "[512, 512]", NULL,
     "(h, w) the position embeddings are stored for; other inputs resize them bicubically"},
    {"embed_dims", SEGC_KEY_INT, "0", NULL, "encoder width (0: the variant's)"},
    {"depth", SEGC_KEY_INT, "0", NULL, "encoder blocks (0: the variant's)"},
    {"num_heads", SEGC_KEY_INT, "0", NULL, "encoder attention heads (0: the variant's)"},
    {"mlp_ratio", SEGC_KEY_INT, "4", NULL, "MLP hidden width / embedding width"},
    {"drop_path_rate", SEGC_KEY_DOUBLE, "0.1", NULL, "encoder stochastic depth, rising linearly over blocks"},
    {"decoder_layers", SEGC_KEY_INT, "2", NULL, "mask decoder transformer layers"},
    {"decoder_dim", SEGC_KEY_INT, "0", NULL, "mask decoder width (0: the encoder's)"},
    {"decoder_heads", SEGC_KEY_INT, "0", NULL, "mask decoder heads (0: the encoder's)"},
    {"decoder_drop_path_rate", SEGC_KEY_DOUBLE, "0.1", NULL, "mask decoder stochastic depth (mmseg default 0.1)"},
};
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))

static bool read_spec(const segc_model_spec *s, const char *variant, segc_segmenter_config *c, char *err, size_t n) {
    memset(c, 0, sizeof *c);
    if (!segc_vit_preset(&c->vit, variant))
        return segc_errorf(err, n, "model.variant: unknown Segmenter variant '%s' (valid: %s)", variant,
                           SEGC_VIT_VARIANTS);
    char dec[16];
    segc_spec_str(s, "decoder", dec, sizeof dec);
    c->decoder = strcmp(dec, "linear") ? SEGC_SEGMENTER_MASK : SEGC_SEGMENTER_LINEAR;
    c->vit.in_channels = s->in_channels ? s->in_channels : 3;   /* not known yet at config check */
    c->num_classes = s->num_classes ? s->num_classes : 2;
    int P = segc_spec_int(s, "patch_size"), img[4] = {0};
    if (P < 1 || P > 1024) return segc_errorf(err, n, "model.patch_size: expected 1..1024, found %d", P);
    if (segc_spec_ints(s, "img_size", img, 4) != 2)
        return segc_errorf(err, n, "model.img_size: expected two entries (h, w)");
    if (img[0] < P || img[1] < P || img[0] % P || img[1] % P)
        return segc_errorf(err, n, "model.img_size: [%d, %d] must be positive multiples of model.patch_size %d",
                           img[0], img[1], P);
    c->vit.patch_size = P;
    c->vit.img_size[0] = img[0];
    c->vit.img_size[1] = img[1];
    static const char *const ov[] = {"embed_dims", "depth", "num_heads", "mlp_ratio", "decoder_layers", "decoder_dim",
                                     "decoder_heads"};
    int v[7];
    for (int i = 0; i < 7; i++) {
        v[i] = segc_spec_int(s, ov[i]);
        if (v[i] < 0) return segc_errorf(err, n, "model.%s: expected >= 0, found %d", ov[i], v[i]);
    }
    if (v[0]) c->vit.embed_dim = v[0];
    if (v[1]) c->vit.depth = v[1];
    if (v[2]) c->vit.heads = v[2];
    if (v[3] < 1) return segc_errorf(err, n, "model.mlp_ratio: expected >= 1, found %d", v[3]);
    c->vit.mlp_ratio = v[3];
    if (c->vit.embed_dim % c->vit.heads)
        return segc_errorf(err, n, "model.embed_dims %d is not a multiple of model.num_heads %d", c->vit.embed_dim,
                           c->vit.heads);
    c->dec_layers = v[4];
    c->dec_dim = v[5] ? v[5] : c->vit.embed_dim;
    c->dec_heads = v[6] ? v[6] : c->vit.heads;
    c->dec_mlp_ratio = 4;
    if (c->decoder == SEGC_SEGMENTER_MASK && c->dec_dim % c->dec_heads)
        return segc_errorf(err, n, "model.decoder_dim %d is not a multiple of model.decoder_heads %d", c->dec_dim,
                           c->dec_heads);
    double dp = segc_spec_double(s, "drop_path_rate"), ddp = segc_spec_double(s, "decoder_drop_path_rate");
    if (!(dp >= 0 && dp < 1) || !(ddp >= 0 && ddp < 1))
        return segc_errorf(err, n, "model.drop_path_rate / decoder_drop_path_rate: expected [0, 1), found %g / %g", dp,
                           ddp);
    c->vit.drop_path_rate = (float)dp;
    c->dec_drop_path_rate = (float)ddp;
    c->dec_ln_eps = 1e-5f;
    return true;
}

static bool segmenter_validate(const segc_model_spec *s, char *err, size_t n) {
    segc_segmenter_config c;
    return read_spec(s, s->variant && *s->variant ? s->variant : "vit-t", &c, err, n);
}

static bool segmenter_create(segc_model *m, const segc_model_spec *s, char *err, size_t errlen) {
    if (!segc_loss_cfg_check_model(s->loss, "segmenter", s->num_classes, false, err, errlen)) return false;
    segc_segmenter_config c;
    if (!read_spec(s, m->variant, &c, err, errlen)) return false;
    c.vit.in_channels = s->in_channels;
    c.num_classes = s->num_classes;
    segc_segmenter *sm = segc_segmenter_new(&c, err, errlen);
    if (!sm) return false;
    /* the generic model owns the parameter store; the layers' tensor pointers stay valid */
    m->params = sm->params;
    segc_params_init(&sm->params);
    m->impl = sm;
    return true;
}

static void segmenter_init(segc_model *m, uint64_t seed) { segc_segmenter_init(m->impl, seed); }

/* timm or mmseg ViT names, position embeddings of another grid resized */
static bool segmenter_load_pretrained(segc_model *m, const char *path, bool strict, segc_load_report *rep, char *err,
                                      size_t errlen) {
    segc_segmenter *sm = m->impl;
    return segc_vit_load(&m->params, &sm->vit, path, strict, rep, err, errlen);
}

static void segmenter_destroy(segc_model *m) { segc_segmenter_free(m->impl); }

static bool segmenter_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out) {
    out->maps[0] = segc_segmenter_forward(ctx, m->impl, images);
    out->n_maps = out->maps[0] != NULL;
    return out->maps[0] != NULL;
}

static segc_tensor *segmenter_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t) {
    if (m->loss && m->loss->decode.given)   /* the `loss` section; otherwise CE over non-ignored pixels */
        return segc_loss_head_fwd(ctx, m->loss, &m->loss->decode, out->maps[0], t->labels, t->ignore_index, false, true);
    return segc_segmenter_loss(ctx, out->maps[0], t->labels, t->ignore_index);
}

const segc_model_family segc_family_segmenter = {
    .type = "segmenter",
    .summary = "Segmenter (ViT-T/S/B/L encoder, linear or mask-transformer decoder); timm / mmseg parameter names",
    .task = SEGC_TASK_SEGMENTATION,
    .variants = SEGC_VIT_VARIANTS,
    .default_variant = "vit-t",
    .keys = keys,
    .n_keys = N_KEYS,
    .validate = segmenter_validate,
    .create = segmenter_create,
    .init = segmenter_init,
    .destroy = segmenter_destroy,
    .forward = segmenter_forward,
    .loss = segmenter_loss,
    .postprocess = NULL,
    .load_pretrained = segmenter_load_pretrained,
};
