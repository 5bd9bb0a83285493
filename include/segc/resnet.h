/* ResNet-18/34/50/101 backbones (He et al. 2016) returning the four stage
 * outputs, for dense prediction (DeepLabV3+) and detection (SSD). Independent
 * of any head: a model registers the backbone's parameters under a prefix
 * ("backbone." in mmseg models) and adds its own after them.
 *
 * Parameter names are mmsegmentation's ResNet / ResNetV1c under the prefix:
 *   plain stem:  conv1.weight, bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
 *   V1c stem:    stem.{0,3,6}.weight (3x3 convs 3->32->32->64), stem.{1,4,7}.* (BN)
 *   blocks:      layer{1..4}.{j}.conv{1,2[,3]}.weight, .bn{1,2[,3]}.*,
 *                layer{s}.0.downsample.0.weight (1x1 conv), .downsample.1.* (BN)
 * in state_dict order. torchvision's resnet* uses the plain-stem names
 * without a prefix (plus fc.*, the classifier), so a torchvision or a bare
 * mmseg ResNet checkpoint maps onto the model by adding the prefix
 * (segc_resnet_name_from_torchvision / segc_resnet_load).
 *
 * Structure (mmseg, style "pytorch"): a bottleneck block strides on its 3x3
 * conv; a basic block dilates only its first 3x3 conv (mmseg's BasicBlock:
 * the second keeps padding 1, dilation 1). The first block of a stage gets a
 * 1x1-conv + BN downsample when it strides or changes the width. Dilation per
 * stage with contract_dilation (first block of a dilated stage uses
 * dilation / 2) or, on the last stage, multi-grid: block j uses
 * multi_grid[j] as its dilation (mmseg uses the multi-grid value itself, not
 * multiplied by the stage dilation). Output stride 8: strides 1,2,1,1 and
 * dilations 1,1,2,4; output stride 16: strides 1,2,2,1, dilations 1,1,1,2;
 * 32: strides 1,2,2,2, no dilation (classification). */
#ifndef SEGC_RESNET_H
#define SEGC_RESNET_H
#include "segc/nn.h"

#define SEGC_RESNET_MAX_GRID 8

typedef enum { SEGC_RESNET_STEM_PLAIN = 0, SEGC_RESNET_STEM_V1C = 1 } segc_resnet_stem;

typedef struct segc_resnet_config {
    int depth;                 /* 18, 34 (basic blocks), 50, 101 (bottlenecks) */
    int in_channels;
    segc_resnet_stem stem;
    int stem_channels;         /* 64: V1c convs go to stem_channels/2, stem_channels/2, stem_channels */
    int base_channels;         /* 64: stage i has base * 2^i planes (x4 out for bottlenecks) */
    int strides[4], dilations[4];
    bool contract_dilation;
    int multi_grid[SEGC_RESNET_MAX_GRID];   /* last stage's per-block dilations; n_multi_grid = 0: none */
    int n_multi_grid;
    bool zero_init_residual;   /* init: last BN weight of each block 0 (mmseg's default) */
    float bn_eps, bn_momentum; /* 1e-5, 0.1 */
    int num_stages;            /* 4 (0 reads as 4); 3: no layer4 (SSD's trunk), outs[3] stays NULL */
    bool channels_last;        /* the conv stack runs on channels-last (NHWC) activations; outs come back NCHW */
} segc_resnet_config;

/* depth, in_channels, V1c stem, 64/64 channels, output stride 8 with contract_dilation, zero-init residual */
void segc_resnet_config_default(segc_resnet_config *c, int depth, int in_channels);
/* strides/dilations for output stride 8, 16 or 32; false for another value */
bool segc_resnet_set_output_stride(segc_resnet_config *c, int output_stride);
/* depth, channel counts, strides/dilations, multi-grid length (== blocks of the last stage) */
bool segc_resnet_check_config(const segc_resnet_config *c, char *err, size_t errlen);
/* channels of stage s's output (0..3) */
int segc_resnet_stage_channels(const segc_resnet_config *c, int s);

typedef struct segc_resnet_block {
    segc_conv_layer conv1, conv2, conv3;      /* conv3: bottlenecks only */
    segc_batchnorm_layer bn1, bn2, bn3;
    bool has_down;
    segc_conv_layer down;                     /* downsample.0 */
    segc_batchnorm_layer down_bn;             /* downsample.1 */
} segc_resnet_block;

typedef struct segc_resnet {
    segc_resnet_config cfg;
    bool bottleneck;
    int n_blocks[4];
    int n_stem;                               /* 1 (plain 7x7) or 3 (V1c) */
    segc_conv_layer stem_conv[3];
    segc_batchnorm_layer stem_bn[3];
    segc_resnet_block *blocks[4];
    segc_params *params;                      /* borrowed */
    char prefix[64];
} segc_resnet;

/* Registers the backbone's parameters and BN buffers into p under prefix
 * ("backbone." or ""), in mmseg's state_dict order; does not finalize p (the
 * caller adds its head, then finalizes). NULL + err on a bad config. */
segc_resnet *segc_resnet_new(const segc_resnet_config *c, segc_params *p, const char *prefix, char *err,
                             size_t errlen);
/* After p is finalized: BN weights 1 (so an uninitialised net is well defined). */
void segc_resnet_reset_bn(segc_resnet *r);
/* mmseg / torchvision initialisation: conv weights Kaiming normal with fan_out
 * (std = sqrt(2 / (out * kh * kw))), BN weight 1 bias 0, running stats 0 / 1,
 * and with zero_init_residual the last BN weight of each block 0. */
void segc_resnet_init(segc_resnet *r, segc_rng *rng);
void segc_resnet_free(segc_resnet *r);

/* x [N, in_channels, H, W] (f32/bf16, any H, W >= 1). outs[s] = output of
 * layer s+1 (strides 4, 8, 8|16, 8|16|32 for the usual configurations).
 * ctx->training: batch statistics, running stats updated. false with ctx's
 * error set. */
bool segc_resnet_forward(segc_ctx *ctx, const segc_resnet *r, segc_tensor *x, segc_tensor *outs[4]);

/* ---- names ---- */
/* torchvision resnet name (or a bare mmseg ResNet name) -> model name (prefix
 * + name). false for the classifier (fc.*), which a backbone has no place for. */
bool segc_resnet_name_from_torchvision(const char *tv, const char *prefix, char *out, size_t n);
/* model name -> torchvision name: strips prefix; false for names outside the
 * prefix and for the V1c stem (stem.*), which torchvision's 7x7 stem lacks. */
bool segc_resnet_name_to_torchvision(const char *name, const char *prefix, char *out, size_t n);

/* Loads backbone weights from a safetensors file in any of three namings:
 * torchvision (conv1.weight, layer1.0.conv1.weight, fc.*), a bare mmseg
 * ResNet (stem.0.weight, ...) or a whole mmseg model (backbone.*, of which only
 * the prefix's tensors are taken). Tensors that map to nothing (fc.*, heads)
 * count as unexpected; num_batches_tracked is optional. strict: every backbone
 * tensor must be present with its shape, else one error line naming the first
 * mismatching (or else missing) tensor; unexpected tensors never fail. */
bool segc_resnet_load(segc_params *p, const char *prefix, const char *path, bool strict, segc_load_report *rep,
                      char *err, size_t errlen);
#endif
