/* SegFormer forward (encoder + all-MLP head) on segc ops; backward comes from the tape. */
#include "segc/segformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool segc_segformer_preset(segc_segformer_config *c, const char *name, int num_labels) {
    static const struct { const char *name; int hidden[4], depths[4], dec; } presets[] = {
        {"b0", {32, 64, 160, 256}, {2, 2, 2, 2}, 256},  {"b1", {64, 128, 320, 512}, {2, 2, 2, 2}, 256},
        {"b2", {64, 128, 320, 512}, {3, 4, 6, 3}, 768}, {"b3", {64, 128, 320, 512}, {3, 4, 18, 3}, 768},
        {"b4", {64, 128, 320, 512}, {3, 8, 27, 3}, 768}, {"b5", {64, 128, 320, 512}, {3, 6, 40, 3}, 768},
    };
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++) {
        if (strcmp(presets[i].name, name) != 0) continue;
        memset(c, 0, sizeof *c);
        c->num_channels = 3;
        static const int heads_base[4] = {1, 2, 5, 8}, sr[4] = {8, 4, 2, 1}, patch[4] = {7, 3, 3, 3},
                         stride[4] = {4, 2, 2, 2};
        for (int s = 0; s < 4; s++) {
            c->hidden[s] = presets[i].hidden[s];
            c->depths[s] = presets[i].depths[s];
            c->heads[s] = heads_base[s];
            c->sr[s] = sr[s];
            c->patch[s] = patch[s];
            c->stride[s] = stride[s];
            c->mlp_ratio[s] = 4;
        }
        c->decoder_hidden = presets[i].dec;
        c->num_labels = num_labels;
        c->drop_path_rate = 0.1f;
        c->classifier_dropout = 0.1f;
        c->ln_eps = 1e-5f;
        c->bn_eps = 1e-5f;
        c->bn_momentum = 0.1f;
        return true;
    }
    return false;
}

static bool check_config(const segc_segformer_config *c, char *err, size_t n) {
    if (c->num_channels < 1 || c->num_labels < 1 || c->decoder_hidden < 1) {
        snprintf(err, n, "segformer: num_channels, num_labels and decoder_hidden must be >= 1 (found %d, %d, %d)",
                 c->num_channels, c->num_labels, c->decoder_hidden);
        return false;
    }
    for (int s = 0; s < SEGC_SEGFORMER_STAGES; s++) {
        if (c->hidden[s] < 1 || c->depths[s] < 0 || c->heads[s] < 1 || c->hidden[s] % c->heads[s] || c->sr[s] < 1 ||
            c->patch[s] < 1 || c->stride[s] < 1 || c->mlp_ratio[s] < 1) {
            snprintf(err, n, "segformer: stage %d: hidden %d must be a positive multiple of heads %d; sr, patch, "
                     "stride, mlp_ratio >= 1 (found %d, %d, %d, %d)", s, c->hidden[s], c->heads[s], c->sr[s],
                     c->patch[s], c->stride[s], c->mlp_ratio[s]);
            return false;
        }
    }
    return true;
}

segc_segformer *segc_segformer_new(const segc_segformer_config *cfg, char *err, size_t errlen) {
    if (!check_config(cfg, err, errlen)) return NULL;
    segc_segformer *m = calloc(1, sizeof *m);
    if (!m) return segc_errorf(err, errlen, "segformer: out of memory"), NULL;
    m->cfg = *cfg;
    segc_params *p = &m->params;
    segc_params_init(p);
    int total = 0;
    for (int s = 0; s < SEGC_SEGFORMER_STAGES; s++) total += cfg->depths[s];
    m->n_blocks = total;
    m->blocks = calloc((size_t)(total ? total : 1), sizeof *m->blocks);
    if (!m->blocks) {
        free(m);
        return segc_errorf(err, errlen, "segformer: out of memory for %d blocks", total), NULL;
    }
    char name[192];
    int in_ch = cfg->num_channels, bi = 0;
    for (int s = 0; s < SEGC_SEGFORMER_STAGES; s++) {
        int C = cfg->hidden[s];
        snprintf(name, sizeof name, "segformer.encoder.patch_embeddings.%d.proj", s);
        segc_conv_layer_init(&m->patch_proj[s], p, name, in_ch, C, cfg->patch[s], cfg->stride[s], cfg->patch[s] / 2, 1,
                             true);
        snprintf(name, sizeof name, "segformer.encoder.patch_embeddings.%d.layer_norm", s);
        segc_layernorm_layer_init(&m->patch_ln[s], p, name, C, cfg->ln_eps);
        for (int j = 0; j < cfg->depths[s]; j++, bi++) {
            segc_segformer_block *b = &m->blocks[bi];
            char pre[128];
            snprintf(pre, sizeof pre, "segformer.encoder.block.%d.%d", s, j);
            b->heads = cfg->heads[s];
            b->sr_ratio = cfg->sr[s];
            b->drop_path = total > 1 ? cfg->drop_path_rate * (float)bi / (float)(total - 1) : 0.0f;
#define NAME(leaf) (snprintf(name, sizeof name, "%s.%s", pre, leaf), name)
            segc_layernorm_layer_init(&b->ln1, p, NAME("layer_norm_1"), C, cfg->ln_eps);
            segc_linear_layer_init(&b->q, p, NAME("attention.self.query"), C, C, true);
            segc_linear_layer_init(&b->k, p, NAME("attention.self.key"), C, C, true);
            segc_linear_layer_init(&b->v, p, NAME("attention.self.value"), C, C, true);
            if (b->sr_ratio > 1) {
                segc_conv_layer_init(&b->sr, p, NAME("attention.self.sr"), C, C, b->sr_ratio, b->sr_ratio, 0, 1, true);
                segc_layernorm_layer_init(&b->sr_ln, p, NAME("attention.self.layer_norm"), C, cfg->ln_eps);
            }
            segc_linear_layer_init(&b->proj, p, NAME("attention.output.dense"), C, C, true);
            segc_layernorm_layer_init(&b->ln2, p, NAME("layer_norm_2"), C, cfg->ln_eps);
            int hid = C * cfg->mlp_ratio[s];
            segc_linear_layer_init(&b->fc1, p, NAME("mlp.dense1"), C, hid, true);
            segc_conv_layer_init(&b->dwconv, p, NAME("mlp.dwconv.dwconv"), hid, hid, 3, 1, 1, hid, true);
            segc_linear_layer_init(&b->fc2, p, NAME("mlp.dense2"), hid, C, true);
#undef NAME
        }
        snprintf(name, sizeof name, "segformer.encoder.layer_norm.%d", s);
        segc_layernorm_layer_init(&m->stage_ln[s], p, name, C, cfg->ln_eps);
        in_ch = C;
    }
    int D = cfg->decoder_hidden;
    for (int s = 0; s < SEGC_SEGFORMER_STAGES; s++) {
        snprintf(name, sizeof name, "decode_head.linear_c.%d.proj", s);
        segc_linear_layer_init(&m->head_proj[s], p, name, cfg->hidden[s], D, true);
    }
    segc_conv_layer_init(&m->head_fuse, p, "decode_head.linear_fuse", D * SEGC_SEGFORMER_STAGES, D, 1, 1, 0, 1, false);
    segc_batchnorm_layer_init(&m->head_bn, p, "decode_head.batch_norm", D, cfg->bn_eps, cfg->bn_momentum);
    segc_conv_layer_init(&m->head_cls, p, "decode_head.classifier", D, cfg->num_labels, 1, 1, 0, 1, true);
    /* a failed add (out of memory) surfaces here: one check covers them all */
    if (!segc_params_finalize(p)) {
        segc_errorf(err, errlen, "segformer: %s", p->error);
        segc_segformer_free(m);
        return NULL;
    }
    /* identity defaults so an uninitialised model is well defined */
    for (int i = 0; i < p->n; i++) {
        const char *nm = p->t[i]->name;
        size_t L = strlen(nm);
        if (L > 7 && !strcmp(nm + L - 7, ".weight") && p->t[i]->ndim == 1) segc_init_const(p->t[i], 1.0f);
        if (strstr(nm, "running_var")) segc_init_const(p->t[i], 1.0f);
    }
    return m;
}

void segc_segformer_init(segc_segformer *m, uint64_t seed) {
    segc_rng rng;
    segc_rng_init(&rng, seed);
    segc_params *p = &m->params;
    for (int i = 0; i < p->n; i++) {
        segc_tensor *t = p->t[i];
        const char *nm = t->name;
        size_t L = strlen(nm);
        bool is_weight = L > 7 && !strcmp(nm + L - 7, ".weight");
        if (strstr(nm, "running_var")) segc_init_const(t, 1.0f);
        else if (!is_weight) segc_init_const(t, 0.0f);               /* biases, running_mean, counters */
        else if (t->ndim == 1) segc_init_const(t, 1.0f);             /* norms */
        else if (t->ndim == 2) segc_init_trunc_normal(t, &rng, 0.02f);
        else if (strstr(nm, "decode_head.classifier")) segc_init_normal(t, &rng, 0.0f, 0.01f);
        else {
            /* conv: fan_out = k*k*out/groups; weight [out, in/groups, k, k] */
            bool depthwise = strstr(nm, "dwconv") != NULL;
            double fan_out = (double)t->shape[0] * (double)t->shape[2] * (double)t->shape[3];
            if (depthwise) fan_out /= (double)t->shape[0];
            segc_init_normal(t, &rng, 0.0f, (float)sqrt(2.0 / fan_out));
        }
    }
}

void segc_segformer_free(segc_segformer *m) {
    if (!m) return;
    segc_params_free(&m->params);
    free(m->blocks);
    free(m);
}

/* [B, C, H, W] -> [B, H*W, C] */
static segc_tensor *nchw_to_tokens(segc_ctx *ctx, segc_tensor *x) {
    if (!x) return NULL;
    segc_tensor *f = segc_reshape(ctx, x, 3, (int64_t[]){x->shape[0], x->shape[1], x->shape[2] * x->shape[3]});
    return segc_transpose(ctx, f, 1, 2);
}
/* [B, H*W, C] -> [B, C, H, W] */
static segc_tensor *tokens_to_nchw(segc_ctx *ctx, segc_tensor *t, int64_t H, int64_t W) {
    if (!t) return NULL;
    segc_tensor *tr = segc_transpose(ctx, t, 1, 2);
    return segc_reshape(ctx, tr, 4, (int64_t[]){t->shape[0], t->shape[2], H, W});
}

static segc_tensor *block_forward(segc_ctx *ctx, const segc_segformer_block *b, segc_tensor *x, int64_t H, int64_t W) {
    segc_tensor *h = segc_layernorm_layer_fwd(ctx, &b->ln1, x);
    segc_tensor *q = segc_linear_layer_fwd(ctx, &b->q, h);
    segc_tensor *kv_in = h;
    if (b->sr_ratio > 1) {
        segc_tensor *r = segc_conv_layer_fwd(ctx, &b->sr, tokens_to_nchw(ctx, h, H, W));
        kv_in = segc_layernorm_layer_fwd(ctx, &b->sr_ln, nchw_to_tokens(ctx, r));
    }
    segc_tensor *k = segc_linear_layer_fwd(ctx, &b->k, kv_in);
    segc_tensor *v = segc_linear_layer_fwd(ctx, &b->v, kv_in);
    if (!q || !k || !v) return NULL;
    int64_t C = q->shape[2];
    float scale = 1.0f / sqrtf((float)(C / b->heads));
    segc_tensor *a = segc_linear_layer_fwd(ctx, &b->proj, segc_attention(ctx, q, k, v, b->heads, scale));
    segc_tensor *x2 = NULL;
    segc_tensor *h2 = segc_add_layer_norm(ctx, segc_drop_path_(ctx, a, b->drop_path), x,
                                          segc_param_as(ctx, b->ln2.weight, x->dtype),
                                          segc_param_as(ctx, b->ln2.bias, x->dtype), b->ln2.eps, &x2);
    segc_tensor *m = segc_linear_layer_fwd(ctx, &b->fc1, h2);
    if (!m) return NULL;
    /* Mix-FFN's depthwise 3x3 runs on the tokens directly: no transposes of the widest tensor */
    m = segc_dwconv2d_tokens(ctx, m, segc_param_as(ctx, b->dwconv.weight, m->dtype),
                             segc_param_as(ctx, b->dwconv.bias, m->dtype), H, W);
    m = segc_linear_layer_fwd(ctx, &b->fc2, segc_gelu(ctx, m));   /* unfused: recomputing GELU costs SegFormer ~2.5 % */
    return segc_add(ctx, segc_drop_path_(ctx, m, b->drop_path), x2);
}

/* The all-MLP head computes fuse(concat_s up_s(proj_s(tokens_s)))  (HF/mmseg: per-stage linear,
 * bilinear upsample to 1/4, concat in stage order 4..1, 1x1 conv without bias). The upsample and
 * the 1x1 conv are both linear and commute, so with F_s stage s's [D, D] slice of the fuse weight
 * this equals  sum_s up_s(tokens_s (F_s W_s)^T + F_s b_s):  one small linear per stage at the
 * stage's own resolution. Same function and gradients up to rounding, with the 4D-channel
 * concat never built: at 512x512 the 4D -> D conv at 1/4 resolution alone was about half of a B0
 * training step's FLOPs, and its 4D x H/4 x W/4 input map is gone too. */
static segc_tensor *head_fused_sum(segc_ctx *ctx, const segc_segformer *m, segc_tensor *const *tokens,
                                   const int64_t *Hs, const int64_t *Ws) {
    const int S = SEGC_SEGFORMER_STAGES;
    const int64_t D = m->cfg.decoder_hidden;
    segc_dtype dt = tokens[0]->dtype;
    segc_tensor *fuse = segc_reshape(ctx, segc_param_as(ctx, m->head_fuse.weight, dt), 2, (int64_t[]){D, S * D});
    segc_tensor *sum = NULL;
    for (int s = S - 1; s >= 0; s--) {   /* coarsest first: the concat's channel order */
        int64_t slot = S - 1 - s;
        segc_tensor *Fs = segc_slice(ctx, fuse, 1, slot * D, (slot + 1) * D, 1);
        segc_tensor *w = segc_matmul(ctx, Fs, segc_param_as(ctx, m->head_proj[s].weight, dt), false, false);
        segc_tensor *b = segc_param_as(ctx, m->head_proj[s].bias, dt);
        b = segc_reshape(ctx, segc_matmul(ctx, Fs, segc_reshape(ctx, b, 2, (int64_t[]){D, 1}), false, false), 1,
                         (int64_t[]){D});
        segc_tensor *pj = tokens_to_nchw(ctx, segc_linear(ctx, tokens[s], w, b), Hs[s], Ws[s]);
        if (!pj) return NULL;
        if (Hs[s] != Hs[0] || Ws[s] != Ws[0]) pj = segc_resize_bilinear(ctx, pj, (int)Hs[0], (int)Ws[0], false);
        sum = sum ? segc_add(ctx, sum, pj) : pj;
    }
    return sum;
}

segc_tensor *segc_segformer_forward(segc_ctx *ctx, segc_segformer *m, segc_tensor *images) {
    if (!images) return NULL;
    const segc_segformer_config *c = &m->cfg;
    char sb[96];
    if (images->ndim != 4 || images->shape[1] != c->num_channels) {
        segc_set_error(ctx, "segformer: images must be [N, %d, H, W], found %s", c->num_channels,
                       segc_shape_str(images, sb, sizeof sb));
        return NULL;
    }
    segc_tensor *x = images, *tokens[SEGC_SEGFORMER_STAGES];
    int64_t Hs[SEGC_SEGFORMER_STAGES], Ws[SEGC_SEGFORMER_STAGES];
    int bi = 0;
    for (int s = 0; s < SEGC_SEGFORMER_STAGES; s++) {
        segc_tensor *e = segc_conv_layer_fwd(ctx, &m->patch_proj[s], x);
        if (!e) return NULL;
        int64_t H = e->shape[2], W = e->shape[3];
        segc_tensor *t = segc_layernorm_layer_fwd(ctx, &m->patch_ln[s], nchw_to_tokens(ctx, e));
        for (int j = 0; j < c->depths[s]; j++, bi++) t = block_forward(ctx, &m->blocks[bi], t, H, W);
        t = segc_layernorm_layer_fwd(ctx, &m->stage_ln[s], t);
        if (!t) return NULL;
        tokens[s] = t;
        Hs[s] = H;
        Ws[s] = W;
        if (s + 1 < SEGC_SEGFORMER_STAGES) x = tokens_to_nchw(ctx, t, H, W);
    }
    segc_tensor *f = head_fused_sum(ctx, m, tokens, Hs, Ws);
    f = segc_batchnorm_relu_layer_fwd(ctx, &m->head_bn, f);
    f = segc_dropout(ctx, f, c->classifier_dropout);
    return segc_conv_layer_fwd(ctx, &m->head_cls, f);
}

segc_tensor *segc_segformer_loss(segc_ctx *ctx, segc_tensor *logits, segc_tensor *labels, int ignore_index) {
    if (!logits || !labels) return NULL;
    if (labels->ndim != 3 || labels->shape[0] != logits->shape[0]) {
        char a[96], b[96];
        segc_set_error(ctx, "segformer loss: labels must be [N, H, W] with N = %lld, found %s (logits %s)",
                       (long long)logits->shape[0], segc_shape_str(labels, a, sizeof a),
                       segc_shape_str(logits, b, sizeof b));
        return NULL;
    }
    /* fused: the full-resolution logits and their gradient are never materialised */
    return segc_resize_cross_entropy(ctx, logits, labels, ignore_index);
}
