/* DeepLabV3+ (deeplabv3plus.h): mmseg's DepthwiseSeparableASPPHead and
 * FCNHead on a ResNet backbone, forward on segc ops (backward from the tape),
 * and the mmseg cross-entropy losses. */
#include "segc/deeplabv3plus.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void segc_deeplab_config_default(segc_deeplab_config *c, int depth, int output_stride, int in_channels,
                                 int num_classes) {
    memset(c, 0, sizeof *c);
    segc_resnet_config_default(&c->backbone, depth, in_channels);
    segc_resnet_set_output_stride(&c->backbone, output_stride);
    c->num_classes = num_classes;
    const bool small = depth < 50;   /* mmseg's r18 configs: channels 128, c1 12, aux 64 */
    c->channels = small ? 128 : 512;
    c->c1_channels = small ? 12 : 48;
    c->aux_channels = small ? 64 : 256;
    const int d = output_stride == 16 ? 6 : 12;   /* OS8 doubles the ASPP rates: 12/24/36, OS16 6/12/18 */
    for (int i = 0; i < 3; i++) c->dilations[i] = d * (i + 1);
    c->dropout = 0.1f;
    c->aux_head = true;
    c->aux_weight = 0.4f;
}

bool segc_deeplab_check_config(const segc_deeplab_config *c, char *err, size_t n) {
    if (!segc_resnet_check_config(&c->backbone, err, n)) return false;
    if (c->num_classes < 1) return segc_errorf(err, n, "deeplabv3plus: num_classes must be >= 1, found %d", c->num_classes);
    if (c->channels < 1 || c->channels > 8192)
        return segc_errorf(err, n, "model.channels: expected 1..8192, found %d", c->channels);
    if (c->c1_channels < 1 || c->c1_channels > 8192)
        return segc_errorf(err, n, "model.c1_channels: expected 1..8192, found %d", c->c1_channels);
    if (c->aux_head && (c->aux_channels < 1 || c->aux_channels > 8192))
        return segc_errorf(err, n, "model.aux_channels: expected 1..8192, found %d", c->aux_channels);
    for (int i = 0; i < 3; i++)
        if (c->dilations[i] < 1 || c->dilations[i] > 256)
            return segc_errorf(err, n, "model.dilations: ASPP dilations must be 1..256, found %d at position %d",
                               c->dilations[i], i);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return segc_errorf(err, n, "model.dropout: expected [0, 1), found %g", (double)c->dropout);
    if (!(c->aux_weight >= 0) || !isfinite(c->aux_weight))
        return segc_errorf(err, n, "model.aux_weight: expected a finite value >= 0, found %g", (double)c->aux_weight);
    return true;
}

/* mmcv ConvModule(in, out, k, dilation, groups) with BN: conv without bias, "same" padding */
static void cm_init(segc_conv_module *cm, segc_params *p, const char *prefix, int in, int out, int k, int groups,
                    int dil, float eps, float mom) {
    char name[256];
    snprintf(name, sizeof name, "%s.conv", prefix);
    segc_conv_layer_init(&cm->conv, p, name, in, out, k, 1, dil * (k / 2), groups, false);
    cm->conv.p.dilation[0] = cm->conv.p.dilation[1] = dil;
    snprintf(name, sizeof name, "%s.bn", prefix);
    segc_batchnorm_layer_init(&cm->bn, p, name, out, eps, mom);
}

/* mmcv DepthwiseSeparableConvModule: depthwise 3x3 (groups = in) then pointwise 1x1, each conv-BN-ReLU */
static void sep_init(segc_sep_module *s, segc_params *p, const char *prefix, int in, int out, int dil, float eps,
                     float mom) {
    char name[224];
    snprintf(name, sizeof name, "%s.depthwise_conv", prefix);
    cm_init(&s->dw, p, name, in, in, 3, in, dil, eps, mom);
    snprintf(name, sizeof name, "%s.pointwise_conv", prefix);
    cm_init(&s->pw, p, name, in, out, 1, 1, 1, eps, mom);
}

segc_deeplab *segc_deeplab_new(const segc_deeplab_config *c, segc_params *p, char *err, size_t n) {
    if (!segc_deeplab_check_config(c, err, n)) return NULL;
    segc_deeplab *m = calloc(1, sizeof *m);
    if (!m) return segc_errorf(err, n, "deeplabv3plus: out of memory"), NULL;
    m->cfg = *c;
    m->params = p;
    m->backbone = segc_resnet_new(&c->backbone, p, "backbone.", err, n);
    if (!m->backbone) {
        free(m);
        return NULL;
    }
    const float eps = c->backbone.bn_eps, mom = c->backbone.bn_momentum;
    const int in4 = segc_resnet_stage_channels(&c->backbone, 3), in1 = segc_resnet_stage_channels(&c->backbone, 0),
              in3 = segc_resnet_stage_channels(&c->backbone, 2), ch = c->channels;
    char name[192];
    /* mmseg registration order: BaseDecodeHead's conv_seg, then ASPPHead's image_pool, aspp_modules,
     * bottleneck, then DepthwiseSeparableASPPHead's c1_bottleneck and sep_bottleneck (its replacement
     * aspp_modules keeps the original's place) */
    segc_conv_layer_init(&m->conv_seg, p, "decode_head.conv_seg", ch, c->num_classes, 1, 1, 0, 1, true);
    cm_init(&m->image_pool, p, "decode_head.image_pool.1", in4, ch, 1, 1, 1, eps, mom);
    cm_init(&m->aspp0, p, "decode_head.aspp_modules.0", in4, ch, 1, 1, 1, eps, mom);
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "decode_head.aspp_modules.%d", i + 1);
        sep_init(&m->aspp[i], p, name, in4, ch, c->dilations[i], eps, mom);
    }
    cm_init(&m->bottleneck, p, "decode_head.bottleneck", 5 * ch, ch, 3, 1, 1, eps, mom);
    cm_init(&m->c1, p, "decode_head.c1_bottleneck", in1, c->c1_channels, 1, 1, 1, eps, mom);
    sep_init(&m->sep[0], p, "decode_head.sep_bottleneck.0", ch + c->c1_channels, ch, 1, eps, mom);
    sep_init(&m->sep[1], p, "decode_head.sep_bottleneck.1", ch, ch, 1, eps, mom);
    if (c->aux_head) {
        segc_conv_layer_init(&m->aux_seg, p, "auxiliary_head.conv_seg", c->aux_channels, c->num_classes, 1, 1, 0, 1,
                             true);
        cm_init(&m->aux_conv, p, "auxiliary_head.convs.0", in3, c->aux_channels, 3, 1, 1, eps, mom);
    }
    if (!segc_params_finalize(p)) {   /* a failed add (out of memory) surfaces here */
        segc_errorf(err, n, "deeplabv3plus: %s", p->error);
        segc_deeplab_free(m);
        return NULL;
    }
    /* identity BNs (weight 1, running var 1), so an uninitialised model is well defined */
    for (int i = 0; i < p->n; i++) {
        const char *nm = p->t[i]->name;
        size_t l = strlen(nm);
        bool bn_w = l > 7 && !strcmp(nm + l - 7, ".weight") && p->t[i]->ndim == 1 && !strstr(nm, "conv_seg");
        if (bn_w || (l > 12 && !strcmp(nm + l - 12, ".running_var"))) segc_init_const(p->t[i], 1.0f);
    }
    return m;
}

void segc_deeplab_init(segc_deeplab *m, uint64_t seed) {
    segc_rng rng;
    segc_rng_init(&rng, seed);
    segc_resnet_init(m->backbone, &rng);
    segc_params *p = m->params;
    for (int i = 0; i < p->n; i++) {
        segc_tensor *t = p->t[i];
        const char *nm = t->name;
        if (!strncmp(nm, "backbone.", 9)) continue;
        size_t l = strlen(nm);
        if (t->ndim == 4 && strstr(nm, "conv_seg")) {
            segc_init_normal(t, &rng, 0.0f, 0.01f);   /* BaseDecodeHead: normal_init(conv_seg, std=0.01) */
        } else if (t->ndim == 4) {   /* mmcv kaiming_init: fan_out = out * kh * kw (torch's rule, groups ignored) */
            double fan_out = (double)t->shape[0] * (double)t->shape[2] * (double)t->shape[3];
            segc_init_normal(t, &rng, 0.0f, (float)sqrt(2.0 / fan_out));
        } else {
            bool one = (l > 7 && !strcmp(nm + l - 7, ".weight")) || (l > 12 && !strcmp(nm + l - 12, ".running_var"));
            segc_init_const(t, one ? 1.0f : 0.0f);
        }
    }
}

void segc_deeplab_free(segc_deeplab *m) {
    if (!m) return;
    segc_resnet_free(m->backbone);
    free(m);
}

static segc_tensor *cm_fwd(segc_ctx *ctx, const segc_conv_module *cm, segc_tensor *x) {
    return segc_batchnorm_relu_layer_fwd(ctx, &cm->bn, segc_conv_layer_fwd(ctx, &cm->conv, x));
}

/* With ctx->free_activations (core.h) the depthwise half's output, read by the pointwise conv
 * alone, is recomputed in backward instead of kept. */
static segc_tensor *sep_fwd(segc_ctx *ctx, const segc_sep_module *s, segc_tensor *x) {
    segc_tensor *d = cm_fwd(ctx, &s->dw, x), *y = cm_fwd(ctx, &s->pw, d);
    segc_release_recompute(ctx, d);
    return y;
}

/* concat of n tensors that nothing else reads; no backward reads them either (concat and the
 * producers here, resize and relu(bn(.)), need only gradients and their own inputs), so with
 * ctx->free_activations their memory goes back at once */
static segc_tensor *concat_consumed(segc_ctx *ctx, segc_tensor **parts, int n) {
    segc_tensor *y = segc_concat(ctx, parts, n, 1);
    for (int i = 0; i < n && y; i++) segc_release_dead(ctx, parts[i]);
    return y;
}

/* the classifier on dropout2d(x); x feeds nothing else */
static segc_tensor *classify(segc_ctx *ctx, const segc_conv_layer *seg, segc_tensor *x, float p) {
    segc_tensor *d = segc_deeplab_dropout2d(ctx, x, p), *y = d ? segc_conv_layer_fwd(ctx, seg, d) : NULL;
    /* dropout's product reads only its mask in backward; without dropout the conv reads x */
    if (d && d != x) segc_release_dead(ctx, x);
    else if (d) segc_release_recompute(ctx, x);
    return y;
}

segc_tensor *segc_deeplab_dropout2d(segc_ctx *ctx, segc_tensor *x, float p) {
    if (!x) return NULL;
    if (!(p >= 0.0f && p <= 1.0f)) {
        segc_set_error(ctx, "dropout2d: p must be in [0, 1], found %g", (double)p);
        return NULL;
    }
    if (!ctx->training || p == 0.0f) return x;
    if (x->ndim != 4 || !segc_check_float(ctx, "dropout2d", "x", x)) {
        if (!ctx->has_err) segc_set_error(ctx, "dropout2d: expected x [N, C, H, W], found %d-D", x->ndim);
        return NULL;
    }
    /* a [N, C, 1, 1] constant mask broadcast over the plane: the product's backward is the mask too.
     * Draws follow segc_dropout's rule (keep when the uniform >= p), one per (sample, channel). */
    const int64_t nc = x->shape[0] * x->shape[1];
    segc_tensor *mask = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){x->shape[0], x->shape[1], 1, 1});
    if (!mask) return NULL;
    /* a batch shard draws its samples' values of the global batch's stream (core.h) */
    const int64_t C = x->shape[1], stride = segc_sharded(ctx) ? ctx->sample_stride : 1;
    const uint64_t seed = ctx->rng.seed, base = segc_rng_reserve(&ctx->rng, (uint64_t)(nc * stride));
    const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    float *mv = segc_f32(mask);
    for (int64_t i = 0; i < nc; i++)
        mv[i] = segc_rng_uniform_at(seed, segc_sample_counter(ctx, base, i / C, C) + (uint64_t)(i % C)) >= p ? scale : 0.0f;
    if (x->dtype != SEGC_F32) mask = segc_cast(ctx, mask, x->dtype);
    return segc_mul(ctx, x, mask);
}

int segc_deeplab_forward(segc_ctx *ctx, const segc_deeplab *m, segc_tensor *images, segc_tensor **maps) {
    segc_tensor *f[4];
    if (!images) return 0;
    if (ctx->training && images->ndim == 4 && images->shape[0] < 2) {
        segc_set_error(ctx, "deeplabv3plus: training needs a batch of >= 2 images (the image-pool branch's batch norm "
                       "sees one value per image and channel, as in mmseg), found %lld", (long long)images->shape[0]);
        return 0;
    }
    if (!segc_resnet_forward(ctx, m->backbone, images, f)) return 0;
    const bool ac = m->cfg.align_corners;
    segc_tensor *x = f[3];
    const int h = (int)x->shape[2], w = (int)x->shape[3];
    segc_tensor *br[5];
    segc_tensor *pool = cm_fwd(ctx, &m->image_pool, segc_adaptive_avg_pool2d(ctx, x, 1, 1));
    br[0] = pool ? segc_resize_bilinear(ctx, pool, h, w, ac) : NULL;
    br[1] = cm_fwd(ctx, &m->aspp0, x);
    for (int i = 0; i < 3; i++) br[2 + i] = sep_fwd(ctx, &m->aspp[i], x);
    for (int i = 0; i < 5; i++)
        if (!br[i]) return 0;
    segc_tensor *y = cm_fwd(ctx, &m->bottleneck, concat_consumed(ctx, br, 5));
    segc_tensor *c1 = cm_fwd(ctx, &m->c1, f[0]);
    if (!y || !c1) return 0;
    segc_tensor *cat[2] = {segc_resize_bilinear(ctx, y, (int)c1->shape[2], (int)c1->shape[3], ac), c1};
    if (!cat[0]) return 0;
    segc_release_dead(ctx, y);   /* bilinear resize's backward reads no input */
    segc_tensor *s0 = sep_fwd(ctx, &m->sep[0], concat_consumed(ctx, cat, 2));
    y = sep_fwd(ctx, &m->sep[1], s0);
    segc_release_recompute(ctx, s0);
    maps[0] = classify(ctx, &m->conv_seg, y, m->cfg.dropout);
    if (!maps[0]) return 0;
    if (!ctx->training || !m->cfg.aux_head) return 1;
    maps[1] = classify(ctx, &m->aux_seg, cm_fwd(ctx, &m->aux_conv, f[2]), m->cfg.dropout);
    return maps[1] ? 2 : 0;
}

/* pixels whose label is not ignore_index */
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

/* mmseg decode-head loss: CE of the logits resized to the labels' size */
static segc_tensor *head_ce(segc_ctx *ctx, const segc_deeplab *m, segc_tensor *logits, segc_tensor *labels,
                            int ignore_index) {
    segc_tensor *l;
    if (!m->cfg.align_corners) {
        l = segc_resize_cross_entropy(ctx, logits, labels, ignore_index);   /* fused: no full-size logits */
    } else {
        segc_ce_opts o = segc_ce_opts_default();
        o.ignore_index = ignore_index;
        l = segc_cross_entropy(ctx, segc_resize_bilinear(ctx, logits, (int)labels->shape[1], (int)labels->shape[2], true),
                               labels, &o);
    }
    if (!l || m->cfg.avg_non_ignore) return l;
    /* avg_non_ignore=False: mmseg divides by every pixel, ignored ones included */
    const int64_t total = segc_numel(labels), valid = count_valid(labels, ignore_index);
    return total ? segc_mul_scalar(ctx, l, (float)((double)valid / (double)total)) : l;
}

segc_tensor *segc_deeplab_loss(segc_ctx *ctx, const segc_deeplab *m, segc_tensor *const *maps, int n_maps,
                               segc_tensor *labels, int ignore_index) {
    if (n_maps < 1 || !maps[0] || !labels) return NULL;
    char a[96];
    if (labels->ndim != 3 || labels->shape[0] != maps[0]->shape[0] ||
        (labels->dtype != SEGC_U8 && labels->dtype != SEGC_I32 && labels->dtype != SEGC_I64)) {
        segc_set_error(ctx, "deeplabv3plus loss: labels must be [N, H, W] u8/i32/i64 with N = %lld, found %s %s",
                       (long long)maps[0]->shape[0], segc_dtype_name(labels->dtype), segc_shape_str(labels, a, sizeof a));
        return NULL;
    }
    segc_tensor *loss = head_ce(ctx, m, maps[0], labels, ignore_index);
    if (n_maps > 1 && maps[1] && loss) {
        segc_tensor *aux = head_ce(ctx, m, maps[1], labels, ignore_index);
        loss = aux ? segc_add(ctx, loss, segc_mul_scalar(ctx, aux, m->cfg.aux_weight)) : NULL;
    }
    return loss;
}
