/* DeepLabV3+ as a registered model family (model.type: deeplabv3plus). The
 * network is deeplabv3plus.c on resnet.c; this file maps config keys to its
 * configuration and the generic model calls to its functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/deeplabv3plus.h"
#include "segc/model.h"

static const segc_model_key keys[] = {
    {"output_stride", SEGC_KEY_INT, "8", NULL, "backbone output stride: 8 (strides 1,2,1,1, dilations 1,1,2,4) or 16 (1,2,2,1 / 1,1,1,2)"},
    {"stem", SEGC_KEY_STRING, "v1c", "v1c|plain", "v1c: mmseg ResNetV1c deep stem (three 3x3 convs); plain: torchvision 7x7"},
    {"multi_grid", SEGC_KEY_INTS, "[]", NULL, "last-stage block dilations, e.g. [1, 2, 4] (mmseg mg124); []: none"},
    {"contract_dilation", SEGC_KEY_BOOL, "true", NULL, "first block of a dilated stage uses half the dilation"},
    {"stem_channels", SEGC_KEY_INT, "64", NULL, "stem width (V1c: convs to half, half, all of it)"},
    {"base_channels", SEGC_KEY_INT, "64", NULL, "planes of the first stage (doubling per stage)"},
    {"channels", SEGC_KEY_INT, "0", NULL, "ASPP / bottleneck / separable conv width (0: 512, or 128 for r18/r34)"},
    {"c1_channels", SEGC_KEY_INT, "0", NULL, "low-level (layer 1) branch width (0: 48, or 12 for r18/r34)"},
    {"dilations", SEGC_KEY_INTS, "[]", NULL, "separable ASPP dilations ([]: 12, 24, 36 at OS8; 6, 12, 18 at OS16)"},
    {"dropout", SEGC_KEY_DOUBLE, "0.1", NULL, "Dropout2d before each classifier"},
    {"aux_head", SEGC_KEY_BOOL, "true", NULL, "auxiliary FCN head on layer 3 (training loss only)"},
    {"aux_channels", SEGC_KEY_INT, "0", NULL, "auxiliary head width (0: 256, or 64 for r18/r34)"},
    {"aux_weight", SEGC_KEY_DOUBLE, "0.4", NULL, "weight of the auxiliary head's loss"},
    {"align_corners", SEGC_KEY_BOOL, "false", NULL, "align_corners of every bilinear resize"},
    {"avg_non_ignore", SEGC_KEY_BOOL, "false", NULL, "CE mean over non-ignored pixels only (mmseg's default false: over all)"},
    {"sync_bn", SEGC_KEY_BOOL, "false", NULL, "batch-norm statistics across data-parallel ranks (SyncBN)"},
    {"channels_last", SEGC_KEY_BOOL, "false", NULL,
     "backbone on channels-last (NHWC) activations: oneDNN's convolutions without layout reorders"},
    {"backbone_pretrained", SEGC_KEY_STRING, "", NULL,
     "ResNet weights (safetensors; torchvision, mmseg ResNet or mmseg model names), checked at build, loaded at init"},
};
#define N_KEYS ((int)(sizeof keys / sizeof *keys))

static int variant_depth(const char *v) {
    if (!v || !*v) return 50;
    return !strcmp(v, "r18") ? 18 : !strcmp(v, "r34") ? 34 : !strcmp(v, "r50") ? 50 : !strcmp(v, "r101") ? 101 : 0;
}

/* spec -> network config; false + message naming the key */
static bool read_spec(const segc_model_spec *s, segc_deeplab_config *c, char *err, size_t n) {
    int depth = variant_depth(s->variant);
    if (!depth) return segc_errorf(err, n, "model.variant: expected r18|r34|r50|r101, found '%s'", s->variant);
    int os = segc_spec_int(s, "output_stride");
    if (os != 8 && os != 16) return segc_errorf(err, n, "model.output_stride: expected 8 or 16, found %d", os);
    /* classes / channels not known yet (config check): stand-ins that pass */
    segc_deeplab_config_default(c, depth, os, s->in_channels ? s->in_channels : 3, s->num_classes ? s->num_classes : 2);
    char stem[16];
    segc_spec_str(s, "stem", stem, sizeof stem);
    c->backbone.stem = !strcmp(stem, "plain") ? SEGC_RESNET_STEM_PLAIN : SEGC_RESNET_STEM_V1C;
    c->backbone.stem_channels = segc_spec_int(s, "stem_channels");
    c->backbone.base_channels = segc_spec_int(s, "base_channels");
    c->backbone.contract_dilation = segc_spec_bool(s, "contract_dilation");
    int grid[SEGC_RESNET_MAX_GRID + 1];
    int ng = segc_spec_ints(s, "multi_grid", grid, SEGC_RESNET_MAX_GRID + 1);
    if (ng > SEGC_RESNET_MAX_GRID)
        return segc_errorf(err, n, "model.multi_grid: at most %d dilations, found %d", SEGC_RESNET_MAX_GRID, ng);
    c->backbone.n_multi_grid = ng;
    for (int i = 0; i < ng; i++) c->backbone.multi_grid[i] = grid[i];
    int v;
    if ((v = segc_spec_int(s, "channels")) != 0) c->channels = v;
    if ((v = segc_spec_int(s, "c1_channels")) != 0) c->c1_channels = v;
    if ((v = segc_spec_int(s, "aux_channels")) != 0) c->aux_channels = v;
    int dil[4];
    int nd = segc_spec_ints(s, "dilations", dil, 4);
    if (nd != 0 && nd != 3)
        return segc_errorf(err, n, "model.dilations: expected 3 ASPP dilations (or [] for the output stride's), found %d", nd);
    for (int i = 0; i < nd; i++) c->dilations[i] = dil[i];
    c->dropout = (float)segc_spec_double(s, "dropout");
    c->aux_head = segc_spec_bool(s, "aux_head");
    c->aux_weight = (float)segc_spec_double(s, "aux_weight");
    c->align_corners = segc_spec_bool(s, "align_corners");
    c->avg_non_ignore = segc_spec_bool(s, "avg_non_ignore");
    c->sync_bn = segc_spec_bool(s, "sync_bn");
    c->backbone.channels_last = segc_spec_bool(s, "channels_last");
    return segc_deeplab_check_config(c, err, n);
}

static bool deeplab_validate(const segc_model_spec *s, char *err, size_t n) {
    segc_deeplab_config c;
    return read_spec(s, &c, err, n);
}

typedef struct deeplab_impl {
    segc_deeplab *net;
    char pretrained[SEGC_MODEL_OPT_VALUE];
} deeplab_impl;

static bool deeplab_create(segc_model *m, const segc_model_spec *s, char *err, size_t n) {
    segc_deeplab_config c;
    if (!read_spec(s, &c, err, n)) return false;
    if (!segc_loss_cfg_check_model(s->loss, "deeplabv3plus", s->num_classes, c.aux_head, err, n)) return false;
    deeplab_impl *im = calloc(1, sizeof *im);
    if (!im) return segc_errorf(err, n, "deeplabv3plus: out of memory");
    im->net = segc_deeplab_new(&c, &m->params, err, n);
    if (!im->net) {
        free(im);
        return false;
    }
    segc_spec_str(s, "backbone_pretrained", im->pretrained, sizeof im->pretrained);
    /* a backbone checkpoint with other names or shapes fails here, naming the tensor, not at init */
    char e2[512];
    if (*im->pretrained && !segc_resnet_load(&m->params, "backbone.", im->pretrained, true, NULL, e2, sizeof e2)) {
        segc_deeplab_free(im->net);
        free(im);
        return segc_errorf(err, n, "model.backbone_pretrained: %s", e2);
    }
    m->impl = im;
    m->num_outputs = c.num_classes;
    m->probs = SEGC_PROBS_SOFTMAX;
    return true;
}

static void deeplab_init(segc_model *m, uint64_t seed) {
    deeplab_impl *im = m->impl;
    segc_deeplab_init(im->net, seed);
    if (!*im->pretrained) return;
    /* checked at create; only a file changed since then can fail here */
    char err[512];
    segc_load_report rep;
    if (!segc_resnet_load(&m->params, "backbone.", im->pretrained, true, &rep, err, sizeof err))
        fprintf(stderr, "deeplabv3plus: model.backbone_pretrained: %s\n", err);
}

static void deeplab_destroy(segc_model *m) {
    deeplab_impl *im = m->impl;
    if (!im) return;
    segc_deeplab_free(im->net);
    free(im);
    m->impl = NULL;
}

static bool deeplab_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out) {
    out->n_maps = segc_deeplab_forward(ctx, ((deeplab_impl *)m->impl)->net, images, out->maps);
    return out->n_maps > 0;
}

static segc_tensor *deeplab_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t) {
    const segc_deeplab *net = ((deeplab_impl *)m->impl)->net;
    const segc_loss_cfg *lc = m->loss;
    if (!lc) return segc_deeplab_loss(ctx, net, out->maps, out->n_maps, t->labels, t->ignore_index);
    /* the `loss` section: loss.decode on the main map, loss.aux on the FCN head's (each absent: mmseg's CE, the
     * auxiliary one x model.aux_weight) */
    const bool ac = net->cfg.align_corners;
    segc_tensor *l = lc->decode.given
                         ? segc_loss_head_fwd(ctx, lc, &lc->decode, out->maps[0], t->labels, t->ignore_index, ac, true)
                         : segc_deeplab_loss(ctx, net, out->maps, 1, t->labels, t->ignore_index);
    if (!l || out->n_maps < 2 || !out->maps[1]) return l;
    segc_tensor *aux = lc->aux.given
                           ? segc_loss_head_fwd(ctx, lc, &lc->aux, out->maps[1], t->labels, t->ignore_index, ac, false)
                           : segc_deeplab_loss(ctx, net, out->maps + 1, 1, t->labels, t->ignore_index);
    if (aux && !lc->aux.given) aux = segc_mul_scalar(ctx, aux, net->cfg.aux_weight);
    return aux ? segc_add(ctx, l, aux) : NULL;
}

const segc_model_family segc_family_deeplabv3plus = {
    .type = "deeplabv3plus",
    .summary = "DeepLabV3+ (dilated ResNet-18..101 V1c/plain, separable ASPP, low-level decoder, aux FCN head); "
               "mmseg names",
    .task = SEGC_TASK_SEGMENTATION,
    .variants = "r18|r34|r50|r101",
    .default_variant = "r50",
    .keys = keys,
    .n_keys = N_KEYS,
    .validate = deeplab_validate,
    .create = deeplab_create,
    .init = deeplab_init,
    .destroy = deeplab_destroy,
    .forward = deeplab_forward,
    .loss = deeplab_loss,
    .postprocess = NULL,
};
