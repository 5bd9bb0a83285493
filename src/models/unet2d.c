/* UNet2D (nnU-Net 2-D, MONAI DynUNet names): layers, init, forward on segc
 * ops; backward comes from the tape. Losses are in unet2d_loss.c. */
#include "segc/unet2d.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void segc_unet2d_config_default(segc_unet2d_config *c, int in_channels, int out_channels) {
    static const int nnunet_2d[6] = {32, 64, 128, 256, 512, 512};
    memset(c, 0, sizeof *c);
    c->in_channels = in_channels;
    c->out_channels = out_channels;
    c->depth = 6;
    for (int l = 0; l < 6; l++) c->filters[l] = nnunet_2d[l];
    c->deep_supervision = true;
    c->deep_supr_num = 2;
    c->negative_slope = 0.01f;
    c->norm_eps = 1e-5f;
}

bool segc_unet2d_check_config(const segc_unet2d_config *c, char *err, size_t n) {
    if (c->in_channels < 1 || c->out_channels < 1)
        return segc_errorf(err, n, "unet2d: in_channels and the number of outputs must be >= 1 (found %d, %d)",
                           c->in_channels, c->out_channels);
    if (c->depth < 2 || c->depth > SEGC_UNET2D_MAX_LEVELS)
        return segc_errorf(err, n, "model.filters: unet2d needs 2..%d levels (one filter count each), found %d",
                           SEGC_UNET2D_MAX_LEVELS, c->depth);
    for (int l = 0; l < c->depth; l++)
        if (c->filters[l] < 1)
            return segc_errorf(err, n, "model.filters: level %d has %d filters; every level needs >= 1", l,
                               c->filters[l]);
    if (c->deep_supervision) {
        /* heads sit on decoder levels 1..D; level depth-1 is the bottleneck, which has no decoder
         * output, so D <= depth-2 (MONAI: deep_supr_num < number of up-sampling layers) */
        if (c->deep_supr_num >= c->depth - 1)
            return segc_errorf(err, n,
                               "model.deep_supr_num: %d deep-supervision heads need more than %d levels, but "
                               "model.filters gives %d (at most %d heads here)",
                               c->deep_supr_num, c->deep_supr_num + 1, c->depth, c->depth - 2);
        if (c->deep_supr_num < 1)
            return segc_errorf(err, n, "model.deep_supr_num: must be >= 1 with deep supervision on (found %d)",
                               c->deep_supr_num);
    }
    if (!(c->negative_slope >= 0.0f) || !isfinite(c->negative_slope))
        return segc_errorf(err, n, "model.negative_slope: must be a finite value >= 0 (found %g)",
                           (double)c->negative_slope);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return segc_errorf(err, n, "model.norm_eps: must be > 0 (found %g)", (double)c->norm_eps);
    return true;
}

/* MONAI UnetBasicBlock: named_parameters order is conv1, conv2, norm1, norm2 */
static void block_init(segc_unet2d_block *b, segc_params *p, const char *prefix, int in, int out, int stride) {
    char name[160];
    snprintf(name, sizeof name, "%s.conv1.conv", prefix);
    segc_conv_layer_init(&b->conv1, p, name, in, out, 3, stride, 1, 1, false);
    snprintf(name, sizeof name, "%s.conv2.conv", prefix);
    segc_conv_layer_init(&b->conv2, p, name, out, out, 3, 1, 1, 1, false);
    snprintf(name, sizeof name, "%s.norm1.weight", prefix);
    b->norm1_w = segc_params_add(p, name, 1, (int64_t[]){out}, true);
    snprintf(name, sizeof name, "%s.norm1.bias", prefix);
    b->norm1_b = segc_params_add(p, name, 1, (int64_t[]){out}, true);
    snprintf(name, sizeof name, "%s.norm2.weight", prefix);
    b->norm2_w = segc_params_add(p, name, 1, (int64_t[]){out}, true);
    snprintf(name, sizeof name, "%s.norm2.bias", prefix);
    b->norm2_b = segc_params_add(p, name, 1, (int64_t[]){out}, true);
}

segc_unet2d *segc_unet2d_new(const segc_unet2d_config *cfg, segc_params *p, char *err, size_t errlen) {
    if (!segc_unet2d_check_config(cfg, err, errlen)) return NULL;
    segc_unet2d *m = calloc(1, sizeof *m);
    if (!m) {
        segc_errorf(err, errlen, "unet2d: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    m->params = p;
    const int L = cfg->depth;
    const int *f = cfg->filters;
    char name[160];
    /* encoder: input_block, downsamples.0..L-3, bottleneck (the registration order of DynUNet) */
    block_init(&m->enc[0], p, "input_block", cfg->in_channels, f[0], 1);
    for (int l = 1; l < L - 1; l++) {
        snprintf(name, sizeof name, "downsamples.%d", l - 1);
        block_init(&m->enc[l], p, name, f[l - 1], f[l], 2);
    }
    block_init(&m->enc[L - 1], p, "bottleneck", f[L - 2], f[L - 1], 2);
    /* decoder: upsamples.j takes level L-1-j up to level L-2-j */
    for (int j = 0; j < L - 1; j++) {
        int lo = L - 2 - j;   /* output level */
        snprintf(name, sizeof name, "upsamples.%d.transp_conv.conv.weight", j);
        m->up_w[j] = segc_params_add(p, name, 4, (int64_t[]){f[lo + 1], f[lo], 2, 2}, true);
        snprintf(name, sizeof name, "upsamples.%d.conv_block", j);
        block_init(&m->dec[j], p, name, 2 * f[lo], f[lo], 1);
    }
    segc_conv_layer_init(&m->out, p, "output_block.conv.conv", f[0], cfg->out_channels, 1, 1, 0, 1, true);
    int n_heads = cfg->deep_supervision ? cfg->deep_supr_num : 0;
    for (int i = 0; i < n_heads; i++) {
        snprintf(name, sizeof name, "deep_supervision_heads.%d.conv.conv", i);
        segc_conv_layer_init(&m->heads[i], p, name, f[i + 1], cfg->out_channels, 1, 1, 0, 1, true);
    }
    if (!segc_params_finalize(p)) {   /* a failed add (out of memory) surfaces here */
        segc_errorf(err, errlen, "unet2d: %s", p->error);
        free(m);
        return NULL;
    }
    /* identity norms, so an uninitialised model is well defined */
    for (int i = 0; i < p->n; i++)
        if (strstr(p->t[i]->name, ".norm") && strstr(p->t[i]->name, ".weight")) segc_init_const(p->t[i], 1.0f);
    return m;
}

void segc_unet2d_init(segc_unet2d *m, uint64_t seed) {
    segc_rng rng;
    segc_rng_init(&rng, seed);
    segc_params *p = m->params;
    /* PyTorch's kaiming_normal_(a) with mode fan_in and leaky_relu gain: std = sqrt(2 / (1 + a^2)) / sqrt(fan_in),
     * fan_in = size(1) * receptive field; for ConvTranspose2d ([in, out, k, k]) that is out * k * k, as in torch */
    const double a = 0.01;
    for (int i = 0; i < p->n; i++) {
        segc_tensor *t = p->t[i];
        if (t->ndim == 4) {
            double fan_in = (double)t->shape[1] * (double)t->shape[2] * (double)t->shape[3];
            segc_init_normal(t, &rng, 0.0f, (float)(sqrt(2.0 / (1.0 + a * a)) / sqrt(fan_in)));
        } else if (strstr(t->name, ".norm") && strstr(t->name, ".weight")) {
            segc_init_const(t, 1.0f);
        } else {
            segc_init_const(t, 0.0f);   /* norm and head biases */
        }
    }
}

void segc_unet2d_free(segc_unet2d *m) { free(m); }

/* conv -> InstanceNorm(affine) -> LeakyReLU */
static segc_tensor *conv_norm_act(segc_ctx *ctx, const segc_unet2d *m, const segc_conv_layer *c, segc_tensor *nw,
                                  segc_tensor *nb, segc_tensor *x) {
    segc_tensor *y = segc_conv_layer_fwd(ctx, c, x);
    if (!y) return NULL;
    /* fused: the normalised tensor before the activation is never stored */
    return segc_instance_norm_lrelu(ctx, y, segc_param_as(ctx, nw, y->dtype), segc_param_as(ctx, nb, y->dtype),
                                    m->cfg.norm_eps, m->cfg.negative_slope);
}

static segc_tensor *block_fwd(segc_ctx *ctx, const segc_unet2d *m, const segc_unet2d_block *b, segc_tensor *x) {
    x = conv_norm_act(ctx, m, &b->conv1, b->norm1_w, b->norm1_b, x);
    return conv_norm_act(ctx, m, &b->conv2, b->norm2_w, b->norm2_b, x);
}

int segc_unet2d_forward(segc_ctx *ctx, const segc_unet2d *m, segc_tensor *images, segc_tensor **maps) {
    if (!images) return 0;
    const segc_unet2d_config *c = &m->cfg;
    const int L = c->depth;
    const int64_t mult = (int64_t)1 << (L - 1);
    char sb[96];
    if (images->ndim != 4 || images->shape[1] != c->in_channels || images->shape[2] % mult || images->shape[3] % mult) {
        segc_set_error(ctx, "unet2d: images must be [N, %d, H, W] with H and W multiples of %lld (%d levels), found %s",
                       c->in_channels, (long long)mult, L, segc_shape_str(images, sb, sizeof sb));
        return 0;
    }
    segc_tensor *skips[SEGC_UNET2D_MAX_LEVELS], *x = images;
    for (int l = 0; l < L; l++) {
        x = block_fwd(ctx, m, &m->enc[l], x);
        skips[l] = x;
    }
    const bool ds = ctx->training && c->deep_supervision;
    segc_tensor *head_in[SEGC_UNET2D_MAX_LEVELS] = {0};
    segc_conv_params up = segc_conv_params_default();
    up.stride[0] = up.stride[1] = 2;
    for (int j = 0; j < L - 1; j++) {
        int lo = L - 2 - j;
        if (!x) return 0;
        segc_tensor *u = segc_conv_transpose2d(ctx, x, segc_param_as(ctx, m->up_w[j], x->dtype), NULL, &up);
        segc_tensor *cat[2] = {u, skips[lo]};   /* MONAI UnetUpBlock: cat((upsampled, skip), dim=1) */
        x = block_fwd(ctx, m, &m->dec[j], u ? segc_concat(ctx, cat, 2, 1) : NULL);
        if (ds && lo >= 1 && lo <= c->deep_supr_num) head_in[lo] = x;
    }
    maps[0] = segc_conv_layer_fwd(ctx, &m->out, x);
    if (!maps[0]) return 0;
    if (!ds) return 1;
    const int H = (int)maps[0]->shape[2], W = (int)maps[0]->shape[3];
    for (int i = 0; i < c->deep_supr_num; i++) {
        segc_tensor *h = segc_conv_layer_fwd(ctx, &m->heads[i], head_in[i + 1]);
        /* MONAI: interpolate(feature_map, out.shape[2:]) with the default mode, nearest */
        maps[1 + i] = h ? segc_resize_nearest(ctx, h, H, W) : NULL;
        if (!maps[1 + i]) return 0;
    }
    return 1 + c->deep_supr_num;
}
