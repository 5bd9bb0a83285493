/* Segmenter forward (ViT encoder + linear or mask-transformer decoder) on segc
 * ops; backward comes from the tape, except the L2 normalisation below, a
 * small op of its own (segc has no sqrt op, and one pass is cheaper). */
#include "segc/segmenter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/profile.h"

/* ---- F.normalize(x, p=2, dim=-1, eps=1e-12) ---- */

#define L2_EPS 1e-12f

typedef struct { float *norm; } l2_saved;   /* per row: max(||x||, eps) */

static void l2_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *y = nd->out;
    if (!x->requires_grad) return;
    const l2_saved *sv = nd->saved;
    int64_t C = x->shape[x->ndim - 1], rows = segc_numel(x) / C;
    const float *xs = x->dtype == SEGC_F32 ? segc_f32(x) : segc_as_f32(ctx, x);
    float *gx = segc_grad(ctx, x);
    const float *gy = y->grad;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xs + r * C, *g = gy + r * C;
        float *o = gx + r * C;
        float d = sv->norm[r];
        if (d <= L2_EPS) {   /* clamped: y = x / eps is linear in x */
            for (int64_t c = 0; c < C; c++) o[c] += g[c] / L2_EPS;
            continue;
        }
        /* y = x / ||x||:  dx = (g - y (g . y)) / ||x|| */
        double gy_dot = 0;
        for (int64_t c = 0; c < C; c++) gy_dot += (double)g[c] * xr[c];
        float s = (float)(gy_dot / ((double)d * d));
        for (int64_t c = 0; c < C; c++) o[c] += (g[c] - xr[c] * s) / d;
    }
}

segc_tensor *segc_l2_normalize_lastdim(segc_ctx *ctx, segc_tensor *x) {
    SEGC_PROF_OP(ctx, "l2_normalize");
    if (!x) return NULL;
    if (!segc_check_float(ctx, "l2_normalize", "input", x)) return NULL;
    if (x->ndim < 1 || x->shape[x->ndim - 1] < 1) {
        segc_set_error(ctx, "l2_normalize: input needs a non-empty last dim");
        return NULL;
    }
    int64_t C = x->shape[x->ndim - 1], rows = segc_numel(x) / C;
    segc_tensor *y = segc_tensor_like(ctx, x);
    l2_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    sv->norm = segc_arena_alloc(&ctx->arena, (size_t)(rows ? rows : 1) * sizeof(float));
    const float *xs = x->dtype == SEGC_F32 ? segc_f32(x) : segc_as_f32(ctx, x);
    float *ys = x->dtype == SEGC_F32 ? segc_f32(y) : segc_arena_alloc(&ctx->arena, (size_t)(rows * C) * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)xs[r * C + c] * xs[r * C + c];
        float d = (float)sqrt(ss);
        d = d > L2_EPS ? d : L2_EPS;
        sv->norm[r] = d;
        for (int64_t c = 0; c < C; c++) ys[r * C + c] = xs[r * C + c] / d;
    }
    if (x->dtype != SEGC_F32) segc_store_f32(y, ys);
    if (segc_needs_grad(ctx, &x, 1)) segc_record(ctx, "l2_normalize", l2_backward, y, &x, 1, sv);
    return y;
}

/* ---- model ---- */

segc_segmenter *segc_segmenter_new(const segc_segmenter_config *c, char *err, size_t errlen) {
    if (c->num_classes < 1) {
        segc_errorf(err, errlen, "segmenter: num_classes must be >= 1 (found %d)", c->num_classes);
        return NULL;
    }
    segc_segmenter *m = calloc(1, sizeof *m);
    m->cfg = *c;
    segc_params *p = &m->params;
    segc_params_init(p);
    if (!segc_vit_init_layers(&m->vit, p, &c->vit, err, errlen)) {
        segc_params_free(p);
        free(m);
        return NULL;
    }
    int D = c->vit.embed_dim, K = c->num_classes;
    if (c->decoder == SEGC_SEGMENTER_LINEAR) {
        segc_conv_layer_init(&m->conv_seg, p, "decode_head.conv_seg", D, K, 1, 1, 0, 1, true);
    } else {
        int Dd = c->dec_dim ? c->dec_dim : D, Hd = c->dec_heads ? c->dec_heads : c->vit.heads;
        if (Dd % Hd || c->dec_layers < 0 || c->dec_mlp_ratio < 1) {
            segc_errorf(err, errlen, "segmenter: decoder dim %d must be a multiple of its heads %d; layers >= 0, "
                        "mlp_ratio >= 1 (found %d, %d)", Dd, Hd, c->dec_layers, c->dec_mlp_ratio);
            segc_segmenter_free(m);
            return NULL;
        }
        m->cfg.dec_dim = Dd;
        m->cfg.dec_heads = Hd;
        segc_linear_layer_init(&m->dec_proj, p, "decode_head.dec_proj", D, Dd, true);
        m->cls_emb = segc_params_add(p, "decode_head.cls_emb", 3, (int64_t[]){1, K, Dd}, true);
        m->dec_blocks = calloc((size_t)(c->dec_layers ? c->dec_layers : 1), sizeof *m->dec_blocks);
        char pre[64];
        for (int i = 0; i < c->dec_layers; i++) {
            snprintf(pre, sizeof pre, "decode_head.layers.%d", i);
            float dp = c->dec_layers > 1 ? c->dec_drop_path_rate * (float)i / (float)(c->dec_layers - 1) : 0.0f;
            segc_vit_block_init(&m->dec_blocks[i], p, pre, SEGC_VIT_NAMES_MMSEG, Dd, Hd, Dd * c->dec_mlp_ratio,
                                c->dec_ln_eps, dp);
        }
        segc_layernorm_layer_init(&m->dec_norm, p, "decode_head.decoder_norm", Dd, c->dec_ln_eps);
        segc_linear_layer_init(&m->patch_proj, p, "decode_head.patch_proj", Dd, Dd, false);
        segc_linear_layer_init(&m->classes_proj, p, "decode_head.classes_proj", Dd, Dd, false);
        segc_layernorm_layer_init(&m->mask_norm, p, "decode_head.mask_norm", K, c->dec_ln_eps);
    }
    if (!segc_params_finalize(p)) {   /* a failed add (out of memory) surfaces here */
        segc_errorf(err, errlen, "segmenter: %s", p->error);
        segc_segmenter_free(m);
        return NULL;
    }
    /* LayerNorms at identity, so an uninitialised model is well defined */
    for (int i = 0; i < p->n; i++) {
        const char *nm = p->t[i]->name;
        size_t L = strlen(nm);
        if (L > 7 && !strcmp(nm + L - 7, ".weight") && p->t[i]->ndim == 1) segc_init_const(p->t[i], 1.0f);
    }
    return m;
}

void segc_segmenter_init(segc_segmenter *m, uint64_t seed) {
    segc_rng rng;
    segc_rng_init(&rng, seed);
    segc_vit_init_weights(&m->vit, &rng);
    if (m->cfg.decoder == SEGC_SEGMENTER_LINEAR) {
        /* mmseg BaseDecodeHead: conv_seg normal(0, 0.01), bias 0 */
        segc_init_normal(m->conv_seg.weight, &rng, 0.0f, 0.01f);
        segc_init_const(m->conv_seg.bias, 0.0f);
        return;
    }
    /* mmseg SegmenterMaskTransformerHead.init_weights: trunc-normal 0.02 for cls_emb and
     * every Linear (biases 0), LayerNorms 1 / 0 */
    segc_init_trunc_normal(m->cls_emb, &rng, 0.02f);
    segc_linear_layer *lin[] = {&m->dec_proj, &m->patch_proj, &m->classes_proj};
    for (int i = 0; i < 3; i++) {
        segc_init_trunc_normal(lin[i]->weight, &rng, 0.02f);
        if (lin[i]->bias) segc_init_const(lin[i]->bias, 0.0f);
    }
    for (int i = 0; i < m->cfg.dec_layers; i++) {
        segc_vit_block *b = &m->dec_blocks[i];
        segc_linear_layer *bl[] = {&b->qkv, &b->proj, &b->fc1, &b->fc2};
        for (int k = 0; k < 4; k++) {
            segc_init_trunc_normal(bl[k]->weight, &rng, 0.02f);
            segc_init_const(bl[k]->bias, 0.0f);
        }
        segc_layernorm_layer *ln[] = {&b->ln1, &b->ln2};
        for (int k = 0; k < 2; k++) {
            segc_init_const(ln[k]->weight, 1.0f);
            segc_init_const(ln[k]->bias, 0.0f);
        }
    }
    segc_layernorm_layer *ln[] = {&m->dec_norm, &m->mask_norm};
    for (int k = 0; k < 2; k++) {
        segc_init_const(ln[k]->weight, 1.0f);
        segc_init_const(ln[k]->bias, 0.0f);
    }
}

void segc_segmenter_free(segc_segmenter *m) {
    if (!m) return;
    segc_params_free(&m->params);
    segc_vit_free_layers(&m->vit);
    free(m->dec_blocks);
    free(m);
}

/* [B, N, K] -> [B, K, gh, gw] */
static segc_tensor *tokens_to_map(segc_ctx *ctx, segc_tensor *t, int64_t gh, int64_t gw) {
    if (!t) return NULL;
    return segc_reshape(ctx, segc_transpose(ctx, t, 1, 2), 4, (int64_t[]){t->shape[0], t->shape[2], gh, gw});
}

static segc_tensor *mask_decoder(segc_ctx *ctx, const segc_segmenter *m, segc_tensor *tok, int64_t gh, int64_t gw) {
    const int64_t B = tok->shape[0], N = tok->shape[1], K = m->cfg.num_classes, Dd = m->cfg.dec_dim;
    segc_dtype dt = tok->dtype;
    segc_tensor *x = segc_linear_layer_fwd(ctx, &m->dec_proj, tok);
    segc_tensor *cls = segc_add(ctx, segc_fill(ctx, dt, 3, (int64_t[]){B, K, Dd}, 0.0f), segc_param_as(ctx, m->cls_emb, dt));
    x = segc_concat(ctx, (segc_tensor *[]){x, cls}, 2, 1);
    for (int i = 0; i < m->cfg.dec_layers; i++) x = segc_vit_block_fwd(ctx, &m->dec_blocks[i], x);
    x = segc_layernorm_layer_fwd(ctx, &m->dec_norm, x);
    segc_tensor *patches = segc_linear_layer_fwd(ctx, &m->patch_proj, segc_slice(ctx, x, 1, 0, N, 1));
    segc_tensor *classes = segc_linear_layer_fwd(ctx, &m->classes_proj, segc_slice(ctx, x, 1, N, N + K, 1));
    patches = segc_l2_normalize_lastdim(ctx, patches);
    classes = segc_l2_normalize_lastdim(ctx, classes);
    segc_tensor *masks = segc_matmul(ctx, patches, classes, false, true);   /* [B, N, K] */
    masks = segc_layernorm_layer_fwd(ctx, &m->mask_norm, masks);
    return tokens_to_map(ctx, masks, gh, gw);
}

segc_tensor *segc_segmenter_forward(segc_ctx *ctx, segc_segmenter *m, segc_tensor *images) {
    if (!images) return NULL;
    const segc_vit_config *vc = &m->cfg.vit;
    char sb[96];
    if (images->ndim != 4 || images->shape[1] != vc->in_channels) {
        segc_set_error(ctx, "segmenter: images must be [N, %d, H, W], found %s", vc->in_channels,
                       segc_shape_str(images, sb, sizeof sb));
        return NULL;
    }
    int P = vc->patch_size;
    if (images->shape[2] % P || images->shape[3] % P) {
        segc_set_error(ctx, "segmenter: input %lldx%lld is not a multiple of the patch size %d in whole-image mode: "
                       "use slide inference (test.mode=slide, test.crop_size a multiple of %d) or pad the input to "
                       "a multiple of %d", (long long)images->shape[2], (long long)images->shape[3], P, P, P);
        return NULL;
    }
    int64_t gh = 0, gw = 0;
    segc_tensor *tok = segc_vit_forward(ctx, &m->vit, images, &gh, &gw);
    if (!tok) return NULL;
    if (m->cfg.decoder == SEGC_SEGMENTER_MASK) return mask_decoder(ctx, m, tok, gh, gw);
    /* the 1x1 conv as a linear on the tokens: the same arithmetic without the NCHW round trip */
    segc_dtype dt = tok->dtype;
    const segc_tensor *w = m->conv_seg.weight;
    segc_tensor *w2 = segc_reshape(ctx, segc_param_as(ctx, m->conv_seg.weight, dt), 2, (int64_t[]){w->shape[0], w->shape[1]});
    return tokens_to_map(ctx, segc_linear(ctx, tok, w2, segc_param_as(ctx, m->conv_seg.bias, dt)), gh, gw);
}

segc_tensor *segc_segmenter_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index) {
    if (!logits || !labels) return NULL;
    if (labels->ndim != 3 || labels->shape[0] != logits->shape[0]) {
        char a[96], b[96];
        segc_set_error(ctx, "segmenter loss: labels must be [N, H, W] with N = %lld, found %s (logits %s)",
                       (long long)logits->shape[0], segc_shape_str(labels, a, sizeof a),
                       segc_shape_str(logits, b, sizeof b));
        return NULL;
    }
    /* mmseg: bilinear (align_corners=False) to the label size, then CE; fused */
    return segc_resize_cross_entropy(ctx, logits, labels, ignore_index);
}
