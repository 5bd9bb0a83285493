/* Segmenter (Strudel et al. 2021): a plain ViT encoder (vit.h) with either
 *  - the linear decoder: a 1x1 conv on the 1/P patch features (mmseg FCNHead
 *    with num_convs=0: decode_head.conv_seg.*), or
 *  - the mask transformer (mmseg SegmenterMaskTransformerHead, its parameter
 *    names): patch tokens projected (dec_proj), learned class embeddings
 *    (cls_emb) appended, transformer layers, decoder_norm, patch_proj /
 *    classes_proj (no bias), both L2-normalised, masks = patches . classes^T,
 *    LayerNorm over the classes (mask_norm), reshaped to [N, K, H/P, W/P].
 * The loss is cross-entropy on the logits bilinearly upsampled to the label
 * size (align_corners=False, ignore_index). */
#ifndef SEGC_SEGMENTER_H
#define SEGC_SEGMENTER_H
#include "segc/vit.h"

typedef enum { SEGC_SEGMENTER_LINEAR = 0, SEGC_SEGMENTER_MASK = 1 } segc_segmenter_decoder;

typedef struct segc_segmenter_config {
    segc_vit_config vit;
    segc_segmenter_decoder decoder;
    int num_classes;
    int dec_layers, dec_dim, dec_heads, dec_mlp_ratio;   /* mask decoder; dim/heads 0: the encoder's */
    float dec_drop_path_rate;                            /* mmseg default 0.1, linear over the layers */
    float dec_ln_eps;                                    /* nn.LayerNorm default 1e-5 */
} segc_segmenter_config;

typedef struct segc_segmenter {
    segc_segmenter_config cfg;
    segc_params params;
    segc_vit vit;
    segc_conv_layer conv_seg;                  /* linear decoder */
    segc_linear_layer dec_proj, patch_proj, classes_proj;
    segc_tensor *cls_emb;                      /* [1, K, Dd] */
    segc_vit_block *dec_blocks;
    segc_layernorm_layer dec_norm, mask_norm;
} segc_segmenter;

segc_segmenter *segc_segmenter_new(const segc_segmenter_config *c, char *err, size_t errlen);
void segc_segmenter_init(segc_segmenter *m, uint64_t seed);
void segc_segmenter_free(segc_segmenter *m);
/* images [N, C, H, W] (H, W multiples of the patch size) -> logits [N, K, H/P, W/P] */
segc_tensor *segc_segmenter_forward(segc_ctx *ctx, segc_segmenter *m, segc_tensor *images);
segc_tensor *segc_segmenter_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index);
/* y = x / max(||x||_2, 1e-12) over the last dim (F.normalize(p=2, dim=-1)); differentiable. */
segc_tensor *segc_l2_normalize_lastdim(segc_ctx *ctx, segc_tensor *x);
#endif
