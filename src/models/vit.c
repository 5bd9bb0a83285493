/* ViT encoder on segc ops (backward from the tape), timm <-> mmseg name maps
 * and the checkpoint loader that resizes position embeddings. */
#include "segc/vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/safetensors.h"

bool segc_vit_preset(segc_vit_config *c, const char *variant) {
    static const struct { const char *name; int dim, depth, heads; } presets[] = {
        {"vit-t", 192, 12, 3}, {"vit-s", 384, 12, 6}, {"vit-b", 768, 12, 12}, {"vit-l", 1024, 24, 16}};
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++) {
        if (strcmp(presets[i].name, variant) != 0) continue;
        memset(c, 0, sizeof *c);
        c->in_channels = 3;
        c->patch_size = 16;
        c->img_size[0] = c->img_size[1] = 512;
        c->embed_dim = presets[i].dim;
        c->depth = presets[i].depth;
        c->heads = presets[i].heads;
        c->mlp_ratio = 4;
        c->ln_eps = 1e-6f;
        c->drop_path_rate = 0.1f;
        return true;
    }
    return false;
}

/* ---- blocks ---- */

/* leaf names of one block: timm Block, mmseg TransformerEncoderLayer */
static const char *const LEAF[2][6] = {
    {"norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"},
    {"ln1", NULL, "attn.attn.out_proj", "ln2", "ffn.layers.0.0", "ffn.layers.1"},
};

void segc_vit_block_init(segc_vit_block *b, segc_params *p, const char *prefix, segc_vit_names names, int dim,
                         int heads, int hidden, float eps, float drop_path) {
    char n[256];
    int k = names == SEGC_VIT_NAMES_MMSEG;
#define NM(i) (snprintf(n, sizeof n, "%s.%s", prefix, LEAF[k][i]), n)
    segc_layernorm_layer_init(&b->ln1, p, NM(0), dim, eps);
    if (k) {
        /* nn.MultiheadAttention packs q, k, v like timm's qkv but names them in_proj_* */
        snprintf(n, sizeof n, "%s.attn.attn.in_proj_weight", prefix);
        b->qkv.weight = segc_params_add(p, n, 2, (int64_t[]){3 * dim, dim}, true);
        snprintf(n, sizeof n, "%s.attn.attn.in_proj_bias", prefix);
        b->qkv.bias = segc_params_add(p, n, 1, (int64_t[]){3 * dim}, true);
    } else {
        segc_linear_layer_init(&b->qkv, p, NM(1), dim, 3 * dim, true);
    }
    segc_linear_layer_init(&b->proj, p, NM(2), dim, dim, true);
    segc_layernorm_layer_init(&b->ln2, p, NM(3), dim, eps);
    segc_linear_layer_init(&b->fc1, p, NM(4), dim, hidden, true);
    segc_linear_layer_init(&b->fc2, p, NM(5), hidden, dim, true);
#undef NM
    b->heads = heads;
    b->drop_path = drop_path;
}

segc_tensor *segc_vit_block_fwd(segc_ctx *ctx, const segc_vit_block *b, segc_tensor *x) {
    if (!x) return NULL;
    segc_dtype dt = x->dtype;
    int64_t D = x->shape[2];
    segc_tensor *h = segc_layernorm_layer_fwd(ctx, &b->ln1, x);
    /* q, k, v from row slices of the packed [3D, D] weight: three GEMMs straight into the
     * [B, N, heads*hd] layout attention takes, no split of the (larger) activation */
    segc_tensor *w = segc_param_as(ctx, b->qkv.weight, dt), *bias = segc_param_as(ctx, b->qkv.bias, dt);
    segc_tensor *qkv[3];
    for (int i = 0; i < 3; i++)
        qkv[i] = segc_linear(ctx, h, segc_slice(ctx, w, 0, i * D, (i + 1) * D, 1),
                             segc_slice(ctx, bias, 0, i * D, (i + 1) * D, 1));
    if (!qkv[0] || !qkv[1] || !qkv[2]) return NULL;
    float scale = 1.0f / sqrtf((float)(D / b->heads));
    segc_tensor *a = segc_linear_layer_fwd(ctx, &b->proj, segc_attention(ctx, qkv[0], qkv[1], qkv[2], b->heads, scale));
    segc_tensor *x2 = NULL;
    segc_tensor *h2 = segc_add_layer_norm(ctx, segc_drop_path_(ctx, a, b->drop_path), x,
                                          segc_param_as(ctx, b->ln2.weight, dt), segc_param_as(ctx, b->ln2.bias, dt),
                                          b->ln2.eps, &x2);
    segc_tensor *m = segc_gelu_linear_layer_fwd(ctx, &b->fc2, segc_linear_layer_fwd(ctx, &b->fc1, h2));
    if (!m || !x2) return NULL;
    return segc_add(ctx, segc_drop_path_(ctx, m, b->drop_path), x2);
}

/* ---- encoder ---- */

bool segc_vit_init_layers(segc_vit *v, segc_params *p, const segc_vit_config *c, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    if (c->in_channels < 1 || c->patch_size < 1 || c->embed_dim < 1 || c->depth < 0 || c->heads < 1 ||
        c->embed_dim % c->heads || c->mlp_ratio < 1)
        return segc_errorf(err, errlen, "vit: embed_dim %d must be a positive multiple of heads %d; in_channels, "
                           "patch_size, mlp_ratio >= 1, depth >= 0 (found %d, %d, %d, %d)", c->embed_dim, c->heads,
                           c->in_channels, c->patch_size, c->mlp_ratio, c->depth);
    if (c->img_size[0] < c->patch_size || c->img_size[1] < c->patch_size || c->img_size[0] % c->patch_size ||
        c->img_size[1] % c->patch_size)
        return segc_errorf(err, errlen, "vit: img_size %dx%d must be a multiple of the patch size %d", c->img_size[0],
                           c->img_size[1], c->patch_size);
    v->cfg = *c;
    v->grid_h = c->img_size[0] / c->patch_size;
    v->grid_w = c->img_size[1] / c->patch_size;
    int D = c->embed_dim;
    v->cls_token = segc_params_add(p, "cls_token", 3, (int64_t[]){1, 1, D}, true);
    v->pos_embed = segc_params_add(p, "pos_embed", 3, (int64_t[]){1, 1 + (int64_t)v->grid_h * v->grid_w, D}, true);
    segc_conv_layer_init(&v->patch, p, "patch_embed.proj", c->in_channels, D, c->patch_size, c->patch_size, 0, 1, true);
    v->blocks = calloc((size_t)(c->depth ? c->depth : 1), sizeof *v->blocks);
    char pre[64];
    for (int i = 0; i < c->depth; i++) {
        snprintf(pre, sizeof pre, "blocks.%d", i);
        /* timm / mmseg: torch.linspace(0, rate, depth) */
        float dp = c->depth > 1 ? c->drop_path_rate * (float)i / (float)(c->depth - 1) : 0.0f;
        segc_vit_block_init(&v->blocks[i], p, pre, SEGC_VIT_NAMES_TIMM, D, c->heads, D * c->mlp_ratio, c->ln_eps, dp);
    }
    segc_layernorm_layer_init(&v->norm, p, "norm", D, c->ln_eps);
    return true;
}

void segc_vit_free_layers(segc_vit *v) {
    free(v->blocks);
    v->blocks = NULL;
}

static void init_linear(segc_linear_layer *l, segc_rng *rng) {
    segc_init_trunc_normal(l->weight, rng, 0.02f);
    if (l->bias) segc_init_const(l->bias, 0.0f);
}

static void init_ln(segc_layernorm_layer *l) {
    segc_init_const(l->weight, 1.0f);
    segc_init_const(l->bias, 0.0f);
}

void segc_vit_init_weights(segc_vit *v, segc_rng *rng) {
    segc_init_trunc_normal(v->pos_embed, rng, 0.02f);
    segc_init_trunc_normal(v->cls_token, rng, 0.02f);
    const segc_tensor *w = v->patch.weight;
    double fan_in = (double)w->shape[1] * (double)w->shape[2] * (double)w->shape[3];
    segc_init_normal(v->patch.weight, rng, 0.0f, (float)sqrt(2.0 / fan_in));
    segc_init_const(v->patch.bias, 0.0f);
    for (int i = 0; i < v->cfg.depth; i++) {
        segc_vit_block *b = &v->blocks[i];
        init_ln(&b->ln1);
        init_ln(&b->ln2);
        init_linear(&b->qkv, rng);
        init_linear(&b->proj, rng);
        init_linear(&b->fc1, rng);
        init_linear(&b->fc2, rng);
    }
    init_ln(&v->norm);
}

segc_tensor *segc_vit_resize_pos_embed(segc_ctx *ctx, segc_tensor *pos, int old_h, int old_w, int new_h, int new_w) {
    if (!pos) return NULL;
    if (old_h == new_h && old_w == new_w) return pos;
    int64_t D = pos->shape[2];
    segc_tensor *cls = segc_slice(ctx, pos, 1, 0, 1, 1);
    segc_tensor *grid = segc_slice(ctx, pos, 1, 1, INT64_MAX, 1);                    /* [1, h*w, D] */
    grid = segc_reshape(ctx, segc_transpose(ctx, grid, 1, 2), 4, (int64_t[]){1, D, old_h, old_w});
    grid = segc_resize_bicubic(ctx, grid, new_h, new_w, false);
    grid = segc_transpose(ctx, segc_reshape(ctx, grid, 3, (int64_t[]){1, D, (int64_t)new_h * new_w}), 1, 2);
    return segc_concat(ctx, (segc_tensor *[]){cls, grid}, 2, 1);
}

segc_tensor *segc_vit_forward(segc_ctx *ctx, const segc_vit *v, segc_tensor *images, int64_t *gh, int64_t *gw) {
    if (!images) return NULL;
    const segc_vit_config *c = &v->cfg;
    segc_tensor *e = segc_conv_layer_fwd(ctx, &v->patch, images);
    if (!e) return NULL;
    int64_t B = e->shape[0], D = e->shape[1], H = e->shape[2], W = e->shape[3];
    segc_dtype dt = e->dtype;
    segc_tensor *tok = segc_transpose(ctx, segc_reshape(ctx, e, 3, (int64_t[]){B, D, H * W}), 1, 2);
    segc_tensor *pos = segc_vit_resize_pos_embed(ctx, segc_param_as(ctx, v->pos_embed, dt), v->grid_h, v->grid_w,
                                                 (int)H, (int)W);
    /* class token + its position entry, broadcast over the batch (zeros + x: a differentiable expand) */
    segc_tensor *cls = segc_add(ctx, segc_param_as(ctx, v->cls_token, dt), segc_slice(ctx, pos, 1, 0, 1, 1));
    cls = segc_add(ctx, segc_fill(ctx, dt, 3, (int64_t[]){B, 1, D}, 0.0f), cls);
    tok = segc_add(ctx, tok, segc_slice(ctx, pos, 1, 1, INT64_MAX, 1));
    segc_tensor *x = segc_concat(ctx, (segc_tensor *[]){cls, tok}, 2, 1);
    for (int i = 0; i < c->depth; i++) x = segc_vit_block_fwd(ctx, &v->blocks[i], x);
    /* the final norm is per token: dropping the class token first is the same and cheaper */
    x = segc_layernorm_layer_fwd(ctx, &v->norm, segc_slice(ctx, x, 1, 1, INT64_MAX, 1));
    *gh = H;
    *gw = W;
    return x;
}

/* ---- names ---- */

static const char *const TOP[][2] = {   /* timm, mmseg (after "backbone.") */
    {"cls_token", "cls_token"}, {"pos_embed", "pos_embed"}, {"patch_embed.proj.", "patch_embed.projection."},
    {"norm.", "ln1."}};
static const char *const BLK[][2] = {
    {"norm1.", "ln1."}, {"norm2.", "ln2."}, {"attn.qkv.weight", "attn.attn.in_proj_weight"},
    {"attn.qkv.bias", "attn.attn.in_proj_bias"}, {"attn.proj.", "attn.attn.out_proj."},
    {"mlp.fc1.", "ffn.layers.0.0."}, {"mlp.fc2.", "ffn.layers.1."}};

/* rest is "weight" / "bias" after a prefix entry (ending in '.'), "" after a whole name */
static bool leaf_ok(const char *pat, const char *rest) {
    size_t L = strlen(pat);
    if (pat[L - 1] == '.') return !strcmp(rest, "weight") || !strcmp(rest, "bias");
    return !*rest;
}

static bool map_name(const char *in, char *out, size_t n, int from, const char *blocks_from, const char *blocks_to,
                     const char *out_prefix) {
    for (size_t i = 0; i < sizeof TOP / sizeof *TOP; i++) {
        size_t L = strlen(TOP[i][from]);
        if (!strncmp(in, TOP[i][from], L) && leaf_ok(TOP[i][from], in + L)) {
            snprintf(out, n, "%s%s%s", out_prefix, TOP[i][!from], in + L);
            return true;
        }
    }
    size_t bl = strlen(blocks_from);
    if (strncmp(in, blocks_from, bl) != 0) return false;
    char *end;
    long idx = strtol(in + bl, &end, 10);
    if (end == in + bl || *end != '.' || idx < 0) return false;
    const char *leaf = end + 1;
    for (size_t i = 0; i < sizeof BLK / sizeof *BLK; i++) {
        size_t L = strlen(BLK[i][from]);
        if (!strncmp(leaf, BLK[i][from], L) && leaf_ok(BLK[i][from], leaf + L)) {
            snprintf(out, n, "%s%s%ld.%s%s", out_prefix, blocks_to, idx, BLK[i][!from], leaf + L);
            return true;
        }
    }
    return false;
}

bool segc_vit_name_mmseg_to_timm(const char *mmseg, char *out, size_t n) {
    if (!strncmp(mmseg, "backbone.", 9)) mmseg += 9;
    return map_name(mmseg, out, n, 1, "layers.", "blocks.", "");
}

bool segc_vit_name_timm_to_mmseg(const char *timm, char *out, size_t n) {
    return map_name(timm, out, n, 0, "blocks.", "layers.", "backbone.");
}

/* ---- loading ---- */

static void shape_text(int ndim, const int64_t *s, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* the store's index for a file name: as is, mmseg -> timm, or "backbone." + timm */
static int native_index(const segc_params *p, const char *name) {
    int idx = segc_params_index(p, name);
    if (idx >= 0) return idx;
    char m[256];
    if (segc_vit_name_mmseg_to_timm(name, m, sizeof m) && (idx = segc_params_index(p, m)) >= 0) return idx;
    if (!strncmp(name, "backbone.", 9)) return segc_params_index(p, name + 9);
    return -1;
}

/* pos_embed of another square grid -> the model's grid, into dst */
static bool resize_loaded_pos(const segc_vit *v, const float *src, int64_t n_tok, float *dst) {
    int64_t g = (int64_t)llround(sqrt((double)(n_tok - 1)));
    if (g < 1 || g * g != n_tok - 1) return false;
    segc_ctx *ctx = segc_ctx_new(0);
    if (!ctx) return false;
    segc_set_grad_enabled(ctx, false);
    int64_t D = v->cfg.embed_dim;
    segc_tensor *t = segc_tensor_wrap(ctx, SEGC_F32, 3, (int64_t[]){1, n_tok, D}, (void *)src);
    segc_tensor *r = segc_vit_resize_pos_embed(ctx, t, (int)g, (int)g, v->grid_h, v->grid_w);
    bool ok = r != NULL;
    if (ok) memcpy(dst, r->data, (size_t)segc_numel(r) * sizeof(float));
    segc_ctx_free(ctx);
    return ok;
}

bool segc_vit_load(segc_params *p, const segc_vit *v, const char *path, bool strict, segc_load_report *rep, char *err,
                   size_t errlen) {
    segc_load_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    segc_st_file *f = segc_st_open(path, err, errlen);
    if (!f) return false;
    bool *seen = calloc((size_t)p->n + 1, 1);
    for (int i = 0; i < segc_st_count(f); i++) {
        const segc_st_entry *e = segc_st_at(f, i);
        int idx = native_index(p, e->name);
        if (idx < 0 || seen[idx]) {
            if (!rep->unexpected++) snprintf(rep->first_unexpected, sizeof rep->first_unexpected, "%s", e->name);
            continue;
        }
        segc_tensor *t = p->t[idx];
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        bool same = e->ndim == t->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = e->shape[d] == t->shape[d];
        bool dtype_ok = e->dtype_known && (e->dtype == SEGC_F32 || e->dtype == SEGC_BF16 ||
                                           (e->dtype == SEGC_I64 && numel == 1));
        bool is_pos = t == v->pos_embed && dtype_ok && e->dtype != SEGC_I64 && e->ndim == 3 && e->shape[0] == 1 &&
                      e->shape[2] == t->shape[2];
        float *dst = segc_f32(t);
        if (!same && is_pos) {
            float *src = malloc((size_t)numel * sizeof(float));
            if (e->dtype == SEGC_F32) memcpy(src, e->data, e->nbytes);
            else segc_bf16_to_f32_n(e->data, src, numel);
            bool ok = resize_loaded_pos(v, src, e->shape[1], dst);
            free(src);
            if (ok) {
                seen[idx] = true;
                rep->loaded++;
                continue;
            }
        }
        if (!same || !dtype_ok) {
            if (!rep->mismatched++) {
                char a[96], b[96];
                shape_text(e->ndim, e->shape, a, sizeof a);
                shape_text(t->ndim, t->shape, b, sizeof b);
                snprintf(rep->first_mismatch, sizeof rep->first_mismatch, "%s: file has %s %s, model expects f32 %s",
                         e->name, e->dtype_str, a, b);
            }
            continue;
        }
        if (e->dtype == SEGC_F32) memcpy(dst, e->data, e->nbytes);
        else if (e->dtype == SEGC_BF16) segc_bf16_to_f32_n(e->data, dst, numel);
        else { int64_t iv; memcpy(&iv, e->data, 8); dst[0] = (float)iv; }
        seen[idx] = true;
        rep->loaded++;
    }
    for (int i = 0; i < p->n; i++)
        if (!seen[i] && !rep->missing++) snprintf(rep->first_missing, sizeof rep->first_missing, "%s", p->t[i]->name);
    bool ok = true;
    if (strict && (rep->missing || rep->unexpected || rep->mismatched)) {
        if (rep->mismatched)
            snprintf(err, errlen, "%s: tensor %s (%d mismatched: the checkpoint's embedding dim, depth or head "
                     "layout differs from the model's)", path, rep->first_mismatch, rep->mismatched);
        else if (rep->missing)
            snprintf(err, errlen, "%s: missing tensor '%s' (%d missing, %d unexpected)", path, rep->first_missing,
                     rep->missing, rep->unexpected);
        else
            snprintf(err, errlen, "%s: unexpected tensor '%s' (%d unexpected)", path, rep->first_unexpected,
                     rep->unexpected);
        ok = false;
    }
    free(seen);
    segc_st_close(f);
    return ok;
}
