/* SegFormer (Xie et al. 2021): Mix Transformer encoder MiT-B0..B5 and the
 * all-MLP decode head. Parameter names and shapes are those of HuggingFace
 * `SegformerForSemanticSegmentation` checkpoints on the hub
 * (segformer.encoder.block.0.0.attention.self.query.weight, ...), so a hub
 * model.safetensors loads directly. */
#ifndef SEGC_SEGFORMER_H
#define SEGC_SEGFORMER_H
#include "segc/nn.h"

#define SEGC_SEGFORMER_STAGES 4

typedef struct segc_segformer_config {
    int num_channels;
    int hidden[SEGC_SEGFORMER_STAGES], depths[SEGC_SEGFORMER_STAGES], heads[SEGC_SEGFORMER_STAGES];
    int sr[SEGC_SEGFORMER_STAGES], patch[SEGC_SEGFORMER_STAGES], stride[SEGC_SEGFORMER_STAGES];
    int mlp_ratio[SEGC_SEGFORMER_STAGES];
    int decoder_hidden;
    int num_labels;
    float drop_path_rate;      /* linearly increasing over all blocks (HF/mmseg) */
    float classifier_dropout;
    float ln_eps;              /* nn.LayerNorm default 1e-5 everywhere in HF SegFormer */
    float bn_eps, bn_momentum;
} segc_segformer_config;

/* name: "b0".."b5"; false if unknown. */
bool segc_segformer_preset(segc_segformer_config *c, const char *name, int num_labels);

typedef struct segc_segformer_block {
    segc_layernorm_layer ln1, ln2, sr_ln;
    segc_linear_layer q, k, v, proj, fc1, fc2;
    segc_conv_layer sr, dwconv;
    int heads, sr_ratio;
    float drop_path;
} segc_segformer_block;

typedef struct segc_segformer {
    segc_segformer_config cfg;
    segc_params params;
    segc_conv_layer patch_proj[SEGC_SEGFORMER_STAGES];
    segc_layernorm_layer patch_ln[SEGC_SEGFORMER_STAGES], stage_ln[SEGC_SEGFORMER_STAGES];
    segc_segformer_block *blocks;      /* all stages, in order */
    int n_blocks;
    segc_linear_layer head_proj[SEGC_SEGFORMER_STAGES];
    segc_conv_layer head_fuse, head_cls;
    segc_batchnorm_layer head_bn;
} segc_segformer;

/* Registers every parameter (zeroed) and finalizes the flat store. NULL + err on bad config. */
segc_segformer *segc_segformer_new(const segc_segformer_config *cfg, char *err, size_t errlen);
/* From-scratch init (mmseg MixVisionTransformer style): Linear trunc-normal 0.02, LayerNorm 1/0,
 * conv normal(0, sqrt(2/fan_out)), classifier normal 0.01, biases 0. */
void segc_segformer_init(segc_segformer *m, uint64_t seed);
void segc_segformer_free(segc_segformer *m);

/* images [N, C, H, W] (f32 or bf16) -> logits [N, num_labels, ceil(H/4), ceil(W/4)] in the input dtype. */
segc_tensor *segc_segformer_forward(segc_ctx *ctx, segc_segformer *m, segc_tensor *images);
/* logits upsampled (bilinear, align_corners=False) to the label size, then cross-entropy with ignore_index:
 * HF SegformerForSemanticSegmentation's loss. labels [N, H, W] (U8/I32/I64). */
segc_tensor *segc_segformer_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index);
#endif
