/* The SSD300-ResNet network (ssd.h), as MLPerf's SSD300 / ResNet34 modules
 * build it: torchvision's ResNet up to layer 3 with layer 3's stride removed
 * (every block's conv1 and the downsample at stride 1), five extra blocks
 * (1x1 conv + ReLU, 3x3 conv + ReLU; the first three stride 2 with padding 1,
 * the last two without padding), and a 3x3 loc / conf conv pair per level. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/ssd.h"

void segc_ssd_config_default(segc_ssd_config *c, int depth, int num_classes) {
    static const int extra[SEGC_SSD_LEVELS - 1] = {512, 512, 256, 256, 256};
    static const int mid[SEGC_SSD_LEVELS - 1] = {256, 256, 128, 128, 128};
    memset(c, 0, sizeof *c);
    segc_resnet_config_default(&c->backbone, depth, 3);
    c->backbone.stem = SEGC_RESNET_STEM_PLAIN;
    c->backbone.zero_init_residual = false;   /* torchvision's default */
    c->backbone.num_stages = 3;
    segc_resnet_set_output_stride(&c->backbone, 8);
    for (int s = 0; s < 4; s++) c->backbone.dilations[s] = 1;   /* layer 3 at stride 1, undilated */
    c->backbone.contract_dilation = false;
    c->num_classes = num_classes;
    memcpy(c->extra_channels, extra, sizeof extra);
    memcpy(c->extra_mid_channels, mid, sizeof mid);
    segc_ssd_anchor_config_mlperf(&c->anchors);
    c->match_iou = 0.5f;
    c->neg_ratio = 3;
}

bool segc_ssd_check_config(const segc_ssd_config *c, char *err, size_t n) {
    if (c->backbone.depth != 18 && c->backbone.depth != 34)
        return segc_errorf(err, n, "ssd: the trunk is a basic-block ResNet (18 or 34), found depth %d", c->backbone.depth);
    if (!segc_resnet_check_config(&c->backbone, err, n)) return false;
    if (c->num_classes < 1 || c->num_classes > 254)
        return segc_errorf(err, n, "ssd: num_classes must be 1..254 (plus background), found %d", c->num_classes);
    for (int i = 0; i < SEGC_SSD_LEVELS - 1; i++) {
        if (c->extra_channels[i] < 1 || c->extra_channels[i] > 8192)
            return segc_errorf(err, n, "model.extra_channels: expected 5 widths in 1..8192, found %d at position %d",
                               c->extra_channels[i], i);
        if (c->extra_mid_channels[i] < 1 || c->extra_mid_channels[i] > 8192)
            return segc_errorf(err, n, "model.extra_mid_channels: expected 5 widths in 1..8192, found %d at position %d",
                               c->extra_mid_channels[i], i);
    }
    int feat[SEGC_SSD_LEVELS];
    if (!segc_ssd_feature_sizes(c->anchors.image_size, feat))
        return segc_errorf(err, n, "model.image_size: the last two extra layers (3x3, no padding) need a 5x5 map at "
                           "level 4, so image_size >= 257, found %d", c->anchors.image_size);
    for (int l = 0; l < SEGC_SSD_LEVELS; l++)
        if (feat[l] != c->anchors.feat[l])
            return segc_errorf(err, n, "ssd: default boxes for a %d-pixel map at level %d, but a %dx%d input gives %d",
                               c->anchors.feat[l], l, c->anchors.image_size, c->anchors.image_size, feat[l]);
    if (!(c->match_iou >= 0.f && c->match_iou <= 1.f))
        return segc_errorf(err, n, "model.match_iou: expected [0, 1], found %g", (double)c->match_iou);
    if (c->neg_ratio < 0 || c->neg_ratio > 1000)
        return segc_errorf(err, n, "model.neg_ratio: expected 0..1000, found %d", c->neg_ratio);
    return true;
}

segc_ssd *segc_ssd_new(const segc_ssd_config *c, segc_params *p, char *err, size_t n) {
    if (!segc_ssd_check_config(c, err, n)) return NULL;
    segc_ssd *m = calloc(1, sizeof *m);
    if (!m) return segc_errorf(err, n, "ssd: out of memory"), NULL;
    m->cfg = *c;
    m->params = p;
    if (!segc_ssd_anchors_build(&c->anchors, &m->anchors, err, n)) {
        free(m);
        return NULL;
    }
    m->backbone = segc_resnet_new(&c->backbone, p, "backbone.", err, n);
    if (!m->backbone) {
        segc_ssd_free(m);
        return NULL;
    }
    int ch[SEGC_SSD_LEVELS];
    ch[0] = segc_resnet_stage_channels(&c->backbone, 2);
    for (int i = 0; i < SEGC_SSD_LEVELS - 1; i++) ch[i + 1] = c->extra_channels[i];
    char name[96];
    for (int i = 0; i < SEGC_SSD_LEVELS - 1; i++) {
        const bool strided = i < 3;
        snprintf(name, sizeof name, "additional_blocks.%d.0", i);
        segc_conv_layer_init(&m->extra1[i], p, name, ch[i], c->extra_mid_channels[i], 1, 1, 0, 1, true);
        snprintf(name, sizeof name, "additional_blocks.%d.2", i);
        segc_conv_layer_init(&m->extra2[i], p, name, c->extra_mid_channels[i], ch[i + 1], 3, strided ? 2 : 1,
                             strided ? 1 : 0, 1, true);
        m->extra1[i].p.act = m->extra2[i].p.act = SEGC_ACT_RELU;
    }
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) {
        const int nd = segc_ssd_boxes_per_location(&c->anchors, l);
        snprintf(name, sizeof name, "loc.%d", l);
        segc_conv_layer_init(&m->loc[l], p, name, ch[l], nd * 4, 3, 1, 1, 1, true);
    }
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) {
        const int nd = segc_ssd_boxes_per_location(&c->anchors, l);
        snprintf(name, sizeof name, "conf.%d", l);
        segc_conv_layer_init(&m->conf[l], p, name, ch[l], nd * (c->num_classes + 1), 3, 1, 1, 1, true);
    }
    if (!segc_params_finalize(p)) {   /* a failed add (out of memory) surfaces here */
        segc_errorf(err, n, "ssd: %s", p->error);
        segc_ssd_free(m);
        return NULL;
    }
    segc_resnet_reset_bn(m->backbone);
    return m;
}

void segc_ssd_free(segc_ssd *m) {
    if (!m) return;
    segc_resnet_free(m->backbone);
    segc_ssd_anchors_free(&m->anchors);
    free(m);
}

/* nn.init.xavier_uniform_ on the weight; Conv2d's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
static void xavier_conv(segc_conv_layer *l, segc_rng *rng) {
    const segc_tensor *w = l->weight;
    const double rf = (double)w->shape[2] * (double)w->shape[3];
    const double fan_in = (double)w->shape[1] * rf, fan_out = (double)w->shape[0] * rf;
    const float a = (float)sqrt(6.0 / (fan_in + fan_out));
    segc_rng_fill_uniform(rng, segc_f32(l->weight), segc_numel(l->weight), -a, a);
    const float b = (float)(1.0 / sqrt(fan_in));
    if (l->bias) segc_rng_fill_uniform(rng, segc_f32(l->bias), segc_numel(l->bias), -b, b);
}

void segc_ssd_init(segc_ssd *m, uint64_t seed) {
    segc_rng rng;
    segc_rng_init(&rng, seed);
    segc_resnet_init(m->backbone, &rng);
    for (int i = 0; i < SEGC_SSD_LEVELS - 1; i++) {
        xavier_conv(&m->extra1[i], &rng);
        xavier_conv(&m->extra2[i], &rng);
    }
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) xavier_conv(&m->loc[l], &rng);
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) xavier_conv(&m->conf[l], &rng);
}

/* conv output [N, nd*k, H, W] viewed as [N, k, nd*H*W] (PyTorch's view(N, k, -1)) */
static segc_tensor *head_view(segc_ctx *ctx, segc_tensor *y, int k) {
    if (!y) return NULL;
    return segc_reshape(ctx, y, 3, (int64_t[]){y->shape[0], k, -1});
}

bool segc_ssd_forward(segc_ctx *ctx, const segc_ssd *m, segc_tensor *images, segc_tensor **scores,
                      segc_tensor **boxes) {
    *scores = *boxes = NULL;
    if (!images || ctx->has_err) return false;
    const int S = m->cfg.anchors.image_size;
    char b[96];
    if (images->ndim != 4 || images->shape[2] != S || images->shape[3] != S) {
        segc_set_error(ctx, "ssd: expected images [N, %d, %d, %d] (model.image_size), found %s",
                       m->cfg.backbone.in_channels, S, S, segc_shape_str(images, b, sizeof b));
        return false;
    }
    segc_tensor *outs[4];
    if (!segc_resnet_forward(ctx, m->backbone, images, outs)) return false;
    segc_tensor *feat[SEGC_SSD_LEVELS];
    feat[0] = outs[2];
    for (int i = 0; i < SEGC_SSD_LEVELS - 1; i++)
        feat[i + 1] = segc_conv_layer_fwd(ctx, &m->extra2[i], segc_conv_layer_fwd(ctx, &m->extra1[i], feat[i]));
    segc_tensor *locs[SEGC_SSD_LEVELS], *confs[SEGC_SSD_LEVELS];
    const int K1 = m->cfg.num_classes + 1;
    for (int l = 0; l < SEGC_SSD_LEVELS; l++) {
        locs[l] = head_view(ctx, segc_conv_layer_fwd(ctx, &m->loc[l], feat[l]), 4);
        confs[l] = head_view(ctx, segc_conv_layer_fwd(ctx, &m->conf[l], feat[l]), K1);
        if (!locs[l] || !confs[l]) return false;
        if (locs[l]->shape[2] != (int64_t)m->anchors.level_start[l + 1] - m->anchors.level_start[l]) {
            segc_set_error(ctx, "ssd: level %d has %lld boxes, the default boxes %d", l, (long long)locs[l]->shape[2],
                           m->anchors.level_start[l + 1] - m->anchors.level_start[l]);
            return false;
        }
    }
    *boxes = segc_concat(ctx, locs, SEGC_SSD_LEVELS, 2);
    *scores = segc_concat(ctx, confs, SEGC_SSD_LEVELS, 2);
    return *boxes && *scores && !ctx->has_err;
}
