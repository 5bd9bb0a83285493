/* DeepLabV3+ (Chen et al. 2018) as mmsegmentation builds it: a dilated
 * ResNet (resnet.h) under backbone.*, DepthwiseSeparableASPPHead under
 * decode_head.*, and an optional FCNHead on layer 3 under auxiliary_head.*,
 * with mmseg's module names, so an mmseg state_dict loads without renaming:
 *
 *   decode_head.conv_seg.{weight,bias}               1x1 classifier (after Dropout2d)
 *   decode_head.image_pool.1.{conv.weight,bn.*}      global average pool -> 1x1 conv-BN-ReLU -> upsample
 *   decode_head.aspp_modules.0.{conv.weight,bn.*}    1x1 conv-BN-ReLU
 *   decode_head.aspp_modules.{1,2,3}.{depthwise_conv,pointwise_conv}.{conv.weight,bn.*}
 *                                                    separable 3x3 at the ASPP dilations
 *   decode_head.bottleneck.{conv.weight,bn.*}        3x3 conv-BN-ReLU on the 5-branch concat
 *   decode_head.c1_bottleneck.{conv.weight,bn.*}     1x1 conv-BN-ReLU on layer 1 (c1_channels)
 *   decode_head.sep_bottleneck.{0,1}.{depthwise_conv,pointwise_conv}.*
 *   auxiliary_head.conv_seg.*, auxiliary_head.convs.0.{conv.weight,bn.*}
 *
 * (a ConvModule with BN has no conv bias; a DepthwiseSeparableConvModule is a
 * depthwise 3x3 conv-BN-ReLU then a pointwise 1x1 conv-BN-ReLU). Forward:
 * ASPP on layer 4, bottleneck, bilinear upsample to layer 1's size, concat
 * with c1, two separable convs, Dropout2d, classifier: logits at 1/4 of the
 * input. Loss: cross entropy of the logits bilinearly upsampled to the label
 * size (ignore_index), plus aux_weight x the same for the auxiliary logits.
 * mmseg's CrossEntropyLoss averages over all pixels, ignored ones included
 * (avg_non_ignore=False), unless avg_non_ignore is set. */
#ifndef SEGC_DEEPLABV3PLUS_H
#define SEGC_DEEPLABV3PLUS_H
#include "segc/resnet.h"

typedef struct segc_deeplab_config {
    segc_resnet_config backbone;
    int num_classes;
    int channels;             /* ASPP branches, bottleneck, separable convs (mmseg: 512; 128 for R18/34) */
    int c1_channels;          /* low-level branch (48; 12 for R18/34) */
    int dilations[3];         /* separable ASPP branches: 12, 24, 36 (OS8) or 6, 12, 18 (OS16) */
    float dropout;            /* Dropout2d before each classifier, 0.1 */
    bool aux_head;            /* FCNHead on layer 3 (training only) */
    int aux_channels;         /* 256 (64 for R18/34) */
    float aux_weight;         /* 0.4 */
    bool align_corners;       /* every bilinear resize; false */
    bool avg_non_ignore;      /* loss mean over non-ignored pixels only (mmseg default false) */
    bool sync_bn;             /* recorded for data-parallel training: BN statistics across ranks */
} segc_deeplab_config;

/* mmseg's deeplabv3plus_r{depth}-d{os} configuration: V1c stem, ASPP
 * dilations for the output stride, widths for the depth, aux head on. */
void segc_deeplab_config_default(segc_deeplab_config *c, int depth, int output_stride, int in_channels,
                                 int num_classes);
bool segc_deeplab_check_config(const segc_deeplab_config *c, char *err, size_t errlen);

typedef struct { segc_conv_layer conv; segc_batchnorm_layer bn; } segc_conv_module;   /* conv-BN-ReLU */
typedef struct { segc_conv_module dw, pw; } segc_sep_module;

typedef struct segc_deeplab {
    segc_deeplab_config cfg;
    segc_params *params;       /* borrowed: the caller's store */
    segc_resnet *backbone;
    segc_conv_layer conv_seg;
    segc_conv_module image_pool, aspp0, bottleneck, c1;
    segc_sep_module aspp[3], sep[2];
    segc_conv_layer aux_seg;
    segc_conv_module aux_conv;
} segc_deeplab;

/* Registers every parameter and BN buffer (mmseg state_dict order: backbone,
 * decode head, auxiliary head) into p, freshly initialised, and finalizes it.
 * NULL + err on a bad config. */
segc_deeplab *segc_deeplab_new(const segc_deeplab_config *c, segc_params *p, char *err, size_t errlen);
/* mmseg's initialisation: backbone as segc_resnet_init; ConvModule convs
 * Kaiming normal fan_out (relu), BN weight 1 bias 0, classifiers normal(0,
 * 0.01) with bias 0. Deterministic from seed. */
void segc_deeplab_init(segc_deeplab *m, uint64_t seed);
void segc_deeplab_free(segc_deeplab *m);

/* images [N, C, H, W] f32/bf16. maps[0] = logits [N, K, ceil(H/4)-ish, ...]
 * (layer 1's size); when ctx->training and the aux head is on, maps[1] = the
 * auxiliary logits at layer 3's size. Returns the number of maps (0 with
 * ctx's error set). Training needs N >= 2 (the image-pool BN sees one value
 * per sample and channel, as in PyTorch). */
int segc_deeplab_forward(segc_ctx *ctx, const segc_deeplab *m, segc_tensor *images, segc_tensor **maps);
/* main CE + aux_weight * aux CE (when maps[1] is given), logits upsampled
 * bilinearly to labels [N, H, W] (u8/i32/i64). */
segc_tensor *segc_deeplab_loss(segc_ctx *ctx, const segc_deeplab *m, segc_tensor *const *maps, int n_maps,
                               segc_tensor *labels, int ignore_index);
/* mmseg's cls_seg dropout: nn.Dropout2d, one keep/drop draw per (sample,
 * channel) from ctx->rng, kept planes scaled by 1/(1-p); identity when not
 * training or p == 0. x [N, C, H, W]. */
segc_tensor *segc_deeplab_dropout2d(segc_ctx *ctx, segc_tensor *x, float p);
#endif
