/* Plain Vision Transformer encoder (Dosovitskiy et al.) as Segmenter uses it:
 * patch embedding (a stride-P conv), class token, learned position
 * embeddings, pre-norm blocks (LayerNorm eps 1e-6, fused qkv with bias,
 * MLP ratio 4 with exact GELU, linearly increasing drop-path), final
 * LayerNorm. Variants vit-t / vit-s / vit-b / vit-l (192/12/3, 384/12/6,
 * 768/12/12, 1024/24/16: dim / layers / heads).
 *
 * Parameter names are timm's VisionTransformer state_dict names (cls_token,
 * pos_embed, patch_embed.proj.weight, blocks.N.attn.qkv.weight, norm.weight,
 * ...): the native store. mmseg's VisionTransformer names
 * (backbone.layers.N.attn.attn.in_proj_weight, backbone.ln1.weight, ...) map
 * onto them in C, so either checkpoint loads from safetensors.
 *
 * Position embeddings are stored for the grid of cfg.img_size / patch (the
 * pre-training grid). A different token grid at run time resizes the grid
 * part bicubically (align_corners=False, the class entry kept as is) inside
 * the graph, so the parameter's gradient flows through the resize; a
 * checkpoint stored at another grid is resized the same way when loaded. */
#ifndef SEGC_VIT_H
#define SEGC_VIT_H
#include "segc/nn.h"

typedef struct segc_vit_config {
    int in_channels;
    int patch_size;
    int img_size[2];          /* (h, w) the position embeddings are stored for */
    int embed_dim, depth, heads, mlp_ratio;
    float ln_eps;             /* 1e-6 (timm and mmseg Segmenter) */
    float drop_path_rate;     /* linearly increasing over the blocks, 0 for the first */
} segc_vit_config;

/* "vit-t" | "vit-s" | "vit-b" | "vit-l"; patch 16, 512x512, 3 channels, drop_path 0.1. false if unknown. */
bool segc_vit_preset(segc_vit_config *c, const char *variant);
#define SEGC_VIT_VARIANTS "vit-t|vit-s|vit-b|vit-l"

/* One pre-norm transformer block: x + dp(proj(attn(ln1(x)))), then x + dp(fc2(gelu(fc1(ln2(x))))). */
typedef struct segc_vit_block {
    segc_layernorm_layer ln1, ln2;
    segc_linear_layer qkv, proj, fc1, fc2;
    int heads;
    float drop_path;
} segc_vit_block;

typedef enum { SEGC_VIT_NAMES_TIMM = 0, SEGC_VIT_NAMES_MMSEG = 1 } segc_vit_names;
/* Registers a block's parameters under prefix (e.g. "blocks.3" with timm
 * names, "decode_head.layers.0" with mmseg's TransformerEncoderLayer names). */
void segc_vit_block_init(segc_vit_block *b, segc_params *p, const char *prefix, segc_vit_names names, int dim,
                         int heads, int hidden, float eps, float drop_path);
segc_tensor *segc_vit_block_fwd(segc_ctx *ctx, const segc_vit_block *b, segc_tensor *x);

typedef struct segc_vit {
    segc_vit_config cfg;
    int grid_h, grid_w;            /* the stored position-embedding grid */
    segc_tensor *cls_token;        /* [1, 1, D] */
    segc_tensor *pos_embed;        /* [1, 1 + grid_h * grid_w, D] */
    segc_conv_layer patch;
    segc_vit_block *blocks;
    segc_layernorm_layer norm;
} segc_vit;

/* Registers every encoder parameter in p (timm names, no prefix). false + message on a bad config. */
bool segc_vit_init_layers(segc_vit *v, segc_params *p, const segc_vit_config *c, char *err, size_t errlen);
void segc_vit_free_layers(segc_vit *v);
/* From scratch (mmseg VisionTransformer): pos_embed / cls_token / linears trunc-normal 0.02,
 * patch conv normal(0, sqrt(2 / fan_in)), biases 0, LayerNorms 1 / 0. */
void segc_vit_init_weights(segc_vit *v, segc_rng *rng);
/* images [N, C, H, W], H and W multiples of the patch size -> patch tokens after the final
 * norm, class token dropped: [N, H/P * W/P, D]; *gh, *gw = H/P, W/P. */
segc_tensor *segc_vit_forward(segc_ctx *ctx, const segc_vit *v, segc_tensor *images, int64_t *gh, int64_t *gw);

/* pos [1, 1 + old_h*old_w, D] -> [1, 1 + new_h*new_w, D]: class entry kept, the grid resized
 * bicubically (align_corners=False); differentiable. pos itself when the grid is unchanged. */
segc_tensor *segc_vit_resize_pos_embed(segc_ctx *ctx, segc_tensor *pos, int old_h, int old_w, int new_h, int new_w);

/* Name maps between mmseg (with or without the "backbone." prefix) and timm names. Return false
 * (out untouched) for names that are not ViT encoder names of the other convention. */
bool segc_vit_name_mmseg_to_timm(const char *mmseg, char *out, size_t n);
bool segc_vit_name_timm_to_mmseg(const char *timm, char *out, size_t n);

/* Loads a safetensors file into a store whose encoder uses timm names (decoder and other names
 * are matched as they are): timm names, mmseg names with or without "backbone.", and a
 * "backbone."-prefixed timm name are all accepted. A pos_embed stored for another square grid
 * (same width) is resized bicubically to the model's grid; a non-square one counts as mismatched.
 * Report and strictness as segc_params_load; a mismatch names the tensor and both shapes. */
bool segc_vit_load(segc_params *p, const segc_vit *v, const char *path, bool strict, segc_load_report *rep, char *err,
                   size_t errlen);
#endif
