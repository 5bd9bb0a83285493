/* UNet2D: the nnU-Net 2-D U-Net (Isensee et al. 2021) with MONAI DynUNet's
 * parameter names, so weights move between segc safetensors and a MONAI
 * `DynUNet(spatial_dims=2, kernel_size=[3]*depth, strides=[1,2,2,...],
 * upsample_kernel_size=strides[1:], norm_name=("INSTANCE", {"affine": True}),
 * deep_supervision=True, deep_supr_num=D, res_block=False)` with no renaming:
 *
 *   input_block.conv1.conv.weight, input_block.norm1.weight, ...   level 0
 *   downsamples.{0..depth-3}.*                                    levels 1..depth-2
 *   bottleneck.*                                                  level depth-1
 *   upsamples.{0..depth-2}.transp_conv.conv.weight                 coarsest first
 *   upsamples.{j}.conv_block.{conv1,conv2,norm1,norm2}.*
 *   output_block.conv.conv.{weight,bias}
 *   deep_supervision_heads.{0..D-1}.conv.conv.{weight,bias}        levels 1..D
 *
 * (MONAI's state_dict also lists every encoder/decoder tensor a second time
 * under skip_layers.*, aliases of the same modules; segc stores each tensor
 * once, under the names of named_parameters(), so a MONAI state_dict loads
 * non-strictly with those aliases reported as unexpected.)
 *
 * Each level: two [3x3 conv (no bias) -> InstanceNorm(affine) -> LeakyReLU],
 * the first conv of levels >= 1 with stride 2. Decoder: 2x2 transposed conv
 * with stride 2 (no bias), concat [upsampled, skip], two conv-norm-lrelu.
 * Deep-supervision heads are 1x1 convs with bias on the decoder outputs of
 * levels 1..D; in training their logits are upsampled to the main output's
 * size with nearest-neighbour interpolation (MONAI's F.interpolate default). */
#ifndef SEGC_UNET2D_H
#define SEGC_UNET2D_H
#include "segc/nn.h"

#define SEGC_UNET2D_MAX_LEVELS 8

typedef enum { SEGC_UNET2D_LOSS_DICE_CE = 0, SEGC_UNET2D_LOSS_REGIONS = 1 } segc_unet2d_loss_kind;

typedef struct segc_unet2d_config {
    int in_channels;
    int out_channels;                        /* logit channels: classes, or 3 BraTS regions */
    int depth;                               /* levels = number of filters, 2..SEGC_UNET2D_MAX_LEVELS */
    int filters[SEGC_UNET2D_MAX_LEVELS];     /* channels per level, finest first */
    bool deep_supervision;
    int deep_supr_num;                       /* heads at levels 1..deep_supr_num; < depth - 1 */
    float negative_slope;                    /* LeakyReLU, 0.01 */
    float norm_eps;                          /* InstanceNorm, 1e-5 */
} segc_unet2d_config;

/* nnU-Net's 2-D defaults: filters 32, 64, 128, 256, 512, 512 (6 levels), deep
 * supervision with 2 heads, LeakyReLU 0.01, eps 1e-5. */
void segc_unet2d_config_default(segc_unet2d_config *c, int in_channels, int out_channels);
/* Ranges and the deep-supervision depth rule; false + one line naming the
 * config key (model.filters, model.deep_supr_num, ...). */
bool segc_unet2d_check_config(const segc_unet2d_config *c, char *err, size_t errlen);

typedef struct segc_unet2d_block {   /* MONAI UnetBasicBlock */
    segc_conv_layer conv1, conv2;
    segc_tensor *norm1_w, *norm1_b, *norm2_w, *norm2_b;
} segc_unet2d_block;

typedef struct segc_unet2d {
    segc_unet2d_config cfg;
    segc_params *params;                                 /* borrowed: the caller's store */
    segc_unet2d_block enc[SEGC_UNET2D_MAX_LEVELS];       /* level l (0: input_block, depth-1: bottleneck) */
    segc_tensor *up_w[SEGC_UNET2D_MAX_LEVELS];           /* upsamples.j.transp_conv: [C_{l+1}, C_l, 2, 2] */
    segc_unet2d_block dec[SEGC_UNET2D_MAX_LEVELS];       /* upsamples.j.conv_block */
    segc_conv_layer out;                                 /* output_block */
    segc_conv_layer heads[SEGC_UNET2D_MAX_LEVELS];       /* deep_supervision_heads.i (level i+1) */
} segc_unet2d;

/* Registers every parameter (zeroed; norm weights 1) into p, in MONAI's
 * named_parameters() order, and finalizes p (which must be freshly
 * initialised). The caller keeps owning p and frees it after the model.
 * NULL + err on a bad config. */
segc_unet2d *segc_unet2d_new(const segc_unet2d_config *cfg, segc_params *p, char *err, size_t errlen);
/* nnU-Net / MONAI initialisation: conv and transposed-conv weights Kaiming
 * normal (a = 0.01, fan_in = size(1) * kh * kw, PyTorch's rule for both),
 * biases 0, InstanceNorm weight 1 bias 0. Deterministic from seed. */
void segc_unet2d_init(segc_unet2d *m, uint64_t seed);
void segc_unet2d_free(segc_unet2d *m);

/* images [N, in_channels, H, W] f32 or bf16, H and W multiples of
 * 2^(depth-1). maps[0] = logits [N, out_channels, H, W] in the input dtype;
 * when ctx->training and deep supervision is on, maps[1..deep_supr_num] are
 * the heads' logits nearest-upsampled to H x W (MONAI's training output
 * order). Returns the number of maps (0 with ctx's error set). maps holds
 * at least 1 + deep_supr_num entries. */
int segc_unet2d_forward(segc_ctx *ctx, const segc_unet2d *m, segc_tensor *images, segc_tensor **maps);

/* nnU-Net DC_and_CE_loss (batch_dice, do_bg=False, smooth 1e-5, weights 1/1)
 * for one logits map [N, K, H, W] (K >= 2) against labels [N, H, W] (U8/I32/I64):
 *   ce + (-mean_{c >= 1} (2 I_c + 1e-5) / (P_c + G_c + 1e-5))
 * with p = softmax(logits), I_c = sum p_c y_c, P_c = sum p_c, G_c = sum y_c over
 * every non-ignored pixel of the batch, and ce the cross entropy averaged
 * over those pixels (0 when there are none). */
segc_tensor *segc_unet2d_dice_ce(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index);
/* nnU-Net region training (DC_and_BCE_loss, batch_dice, do_bg=True, smooth
 * 1e-5) on 3 sigmoid channels [N, 3, H, W] = BraTS whole tumour (labels 1-4),
 * tumour core (1, 3, 4), enhancing (4), labels 0..4 (BraTS-2015 numbering):
 *   bce + (-mean_r (2 I_r + 1e-5) / (P_r + G_r + 1e-5)),  p = sigmoid(logits)
 * bce averaged over the non-ignored pixels and the 3 channels (torch's
 * BCEWithLogitsLoss mean when nothing is ignored). */
segc_tensor *segc_unet2d_region_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index);
/* Deep-supervision sum: output i (main first) weighted 2^-i / sum_j 2^-j
 * (nnU-Net: 1, 0.5, 0.25 normalised), each against the full-size labels. */
segc_tensor *segc_unet2d_loss(segc_ctx *ctx, segc_unet2d_loss_kind kind, segc_tensor *const *maps, int n_maps,
                              segc_tensor *labels, int ignore_index);

/* Region probabilities [N, 3, H, W] f32 (sigmoid) -> BraTS labels U8 [N, H, W]:
 * enhancing > 0.5 -> 4, else core > 0.5 -> 1, else whole > 0.5 -> 2, else 0
 * (nnU-Net writes the regions in order, later ones overwriting). */
void segc_unet2d_regions_to_labels(const segc_tensor *probs, segc_tensor *labels);
#endif
