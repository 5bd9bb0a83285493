/* ResNet backbones (resnet.h): layers under mmseg names, init, forward on
 * segc ops (backward from the tape), and the torchvision name map + loader. */
#include "segc/resnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/safetensors.h"

static const int stage_blocks[4][4] = {{2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}, {3, 4, 23, 3}};

static int n_stages(const segc_resnet_config *c) { return c->num_stages ? c->num_stages : 4; }

static int depth_index(int depth) {
    switch (depth) {
    case 18: return 0;
    case 34: return 1;
    case 50: return 2;
    case 101: return 3;
    default: return -1;
    }
}

void segc_resnet_config_default(segc_resnet_config *c, int depth, int in_channels) {
    memset(c, 0, sizeof *c);
    c->depth = depth;
    c->in_channels = in_channels;
    c->stem = SEGC_RESNET_STEM_V1C;
    c->stem_channels = 64;
    c->base_channels = 64;
    c->contract_dilation = true;
    c->zero_init_residual = true;
    c->bn_eps = 1e-5f;
    c->bn_momentum = 0.1f;
    c->num_stages = 4;
    segc_resnet_set_output_stride(c, 8);
}

bool segc_resnet_set_output_stride(segc_resnet_config *c, int os) {
    static const int s8[4] = {1, 2, 1, 1}, d8[4] = {1, 1, 2, 4}, s16[4] = {1, 2, 2, 1}, d16[4] = {1, 1, 1, 2},
                     s32[4] = {1, 2, 2, 2}, d32[4] = {1, 1, 1, 1};
    const int *s = os == 8 ? s8 : os == 16 ? s16 : os == 32 ? s32 : NULL;
    const int *d = os == 8 ? d8 : os == 16 ? d16 : d32;
    if (!s) return false;
    memcpy(c->strides, s, sizeof c->strides);
    memcpy(c->dilations, d, sizeof c->dilations);
    return true;
}

int segc_resnet_stage_channels(const segc_resnet_config *c, int s) {
    return (c->base_channels << s) * (c->depth >= 50 ? 4 : 1);
}

bool segc_resnet_check_config(const segc_resnet_config *c, char *err, size_t n) {
    int di = depth_index(c->depth);
    if (di < 0) return segc_errorf(err, n, "resnet: depth must be 18, 34, 50 or 101, found %d", c->depth);
    if (c->in_channels < 1) return segc_errorf(err, n, "resnet: in_channels must be >= 1, found %d", c->in_channels);
    if (c->base_channels < 1 || c->base_channels > 4096)
        return segc_errorf(err, n, "model.base_channels: expected 1..4096, found %d", c->base_channels);
    if (c->stem_channels < 1 || c->stem_channels > 4096 || (c->stem == SEGC_RESNET_STEM_V1C && c->stem_channels < 2))
        return segc_errorf(err, n, "model.stem_channels: expected 1..4096 (>= 2 for the V1c stem), found %d",
                           c->stem_channels);
    for (int s = 0; s < 4; s++)
        if (c->strides[s] < 1 || c->strides[s] > 2 || c->dilations[s] < 1 || c->dilations[s] > 64)
            return segc_errorf(err, n, "resnet: stage %d: stride must be 1 or 2 and dilation 1..64, found %d and %d", s,
                               c->strides[s], c->dilations[s]);
    if (n_stages(c) < 1 || n_stages(c) > 4)
        return segc_errorf(err, n, "resnet: num_stages must be 1..4, found %d", c->num_stages);
    if (c->n_multi_grid && n_stages(c) < 4)
        return segc_errorf(err, n, "model.multi_grid: applies to layer4, which a %d-stage ResNet lacks", n_stages(c));
    if (c->n_multi_grid) {
        int last = stage_blocks[di][3];
        if (c->n_multi_grid != last)
            return segc_errorf(err, n, "model.multi_grid: ResNet-%d's last stage has %d blocks, so multi-grid needs %d "
                               "dilations, found %d", c->depth, last, last, c->n_multi_grid);
        for (int i = 0; i < c->n_multi_grid; i++)
            if (c->multi_grid[i] < 1 || c->multi_grid[i] > 64)
                return segc_errorf(err, n, "model.multi_grid: dilations must be 1..64, found %d at position %d",
                                   c->multi_grid[i], i);
    }
    if (!(c->bn_eps > 0) || !(c->bn_momentum >= 0 && c->bn_momentum <= 1))
        return segc_errorf(err, n, "resnet: BN eps must be > 0 and momentum in [0, 1], found %g and %g",
                           (double)c->bn_eps, (double)c->bn_momentum);
    return true;
}

/* conv (no bias) with square kernel, stride, dilation; same-size padding for stride 1 */
static void conv_init(segc_conv_layer *l, segc_params *p, const char *name, int in, int out, int k, int stride,
                      int dil) {
    segc_conv_layer_init(l, p, name, in, out, k, stride, dil * (k / 2), 1, false);
    l->p.dilation[0] = l->p.dilation[1] = dil;
}

segc_resnet *segc_resnet_new(const segc_resnet_config *c, segc_params *p, const char *prefix, char *err, size_t n) {
    if (!segc_resnet_check_config(c, err, n)) return NULL;
    segc_resnet *r = calloc(1, sizeof *r);
    if (!r) return segc_errorf(err, n, "resnet: out of memory"), NULL;
    r->cfg = *c;
    r->params = p;
    snprintf(r->prefix, sizeof r->prefix, "%s", prefix ? prefix : "");
    r->bottleneck = c->depth >= 50;
    const int di = depth_index(c->depth), exp = r->bottleneck ? 4 : 1;
    const float eps = c->bn_eps, mom = c->bn_momentum;
    char name[192];
    const char *px = r->prefix;
    if (c->stem == SEGC_RESNET_STEM_V1C) {
        /* nn.Sequential(conv, BN, ReLU, conv, BN, ReLU, conv, BN, ReLU): indices 0/1, 3/4, 6/7 */
        const int ch[4] = {c->in_channels, c->stem_channels / 2, c->stem_channels / 2, c->stem_channels};
        r->n_stem = 3;
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "%sstem.%d", px, 3 * i);
            conv_init(&r->stem_conv[i], p, name, ch[i], ch[i + 1], 3, i == 0 ? 2 : 1, 1);
            snprintf(name, sizeof name, "%sstem.%d", px, 3 * i + 1);
            segc_batchnorm_layer_init(&r->stem_bn[i], p, name, ch[i + 1], eps, mom);
        }
    } else {
        r->n_stem = 1;
        snprintf(name, sizeof name, "%sconv1", px);
        segc_conv_layer_init(&r->stem_conv[0], p, name, c->in_channels, c->stem_channels, 7, 2, 3, 1, false);
        snprintf(name, sizeof name, "%sbn1", px);
        segc_batchnorm_layer_init(&r->stem_bn[0], p, name, c->stem_channels, eps, mom);
    }
    int inplanes = c->stem_channels;
    for (int s = 0; s < n_stages(c); s++) {
        const int nb = stage_blocks[di][s], planes = c->base_channels << s, dil = c->dilations[s];
        const bool grid = s == 3 && c->n_multi_grid > 0;
        r->n_blocks[s] = nb;
        r->blocks[s] = calloc((size_t)nb, sizeof(segc_resnet_block));
        if (!r->blocks[s]) {
            segc_resnet_free(r);
            return segc_errorf(err, n, "resnet: out of memory"), NULL;
        }
        for (int j = 0; j < nb; j++) {
            segc_resnet_block *b = &r->blocks[s][j];
            const int stride = j == 0 ? c->strides[s] : 1;
            int d = grid ? c->multi_grid[j] : dil;
            if (j == 0 && !grid && dil > 1 && c->contract_dilation) d = dil / 2;
            char bp[160];
            snprintf(bp, sizeof bp, "%slayer%d.%d", px, s + 1, j);
            /* registration order of mmseg's blocks: conv1, bn1, conv2, bn2[, conv3, bn3], downsample */
            if (r->bottleneck) {
                snprintf(name, sizeof name, "%s.conv1", bp);
                conv_init(&b->conv1, p, name, inplanes, planes, 1, 1, 1);
                snprintf(name, sizeof name, "%s.bn1", bp);
                segc_batchnorm_layer_init(&b->bn1, p, name, planes, eps, mom);
                snprintf(name, sizeof name, "%s.conv2", bp);
                conv_init(&b->conv2, p, name, planes, planes, 3, stride, d);
                snprintf(name, sizeof name, "%s.bn2", bp);
                segc_batchnorm_layer_init(&b->bn2, p, name, planes, eps, mom);
                snprintf(name, sizeof name, "%s.conv3", bp);
                conv_init(&b->conv3, p, name, planes, planes * exp, 1, 1, 1);
                snprintf(name, sizeof name, "%s.bn3", bp);
                segc_batchnorm_layer_init(&b->bn3, p, name, planes * exp, eps, mom);
            } else {
                snprintf(name, sizeof name, "%s.conv1", bp);
                conv_init(&b->conv1, p, name, inplanes, planes, 3, stride, d);
                snprintf(name, sizeof name, "%s.bn1", bp);
                segc_batchnorm_layer_init(&b->bn1, p, name, planes, eps, mom);
                snprintf(name, sizeof name, "%s.conv2", bp);
                conv_init(&b->conv2, p, name, planes, planes, 3, 1, 1);   /* mmseg: never dilated */
                snprintf(name, sizeof name, "%s.bn2", bp);
                segc_batchnorm_layer_init(&b->bn2, p, name, planes, eps, mom);
            }
            if (j == 0 && (stride != 1 || inplanes != planes * exp)) {
                b->has_down = true;
                snprintf(name, sizeof name, "%s.downsample.0", bp);
                conv_init(&b->down, p, name, inplanes, planes * exp, 1, stride, 1);
                snprintf(name, sizeof name, "%s.downsample.1", bp);
                segc_batchnorm_layer_init(&b->down_bn, p, name, planes * exp, eps, mom);
            }
            inplanes = planes * exp;
        }
    }
    return r;
}

/* every BN of the backbone, in a fixed order (stem, then blocks) */
static int collect_bns(segc_resnet *r, segc_batchnorm_layer **out, bool *last) {
    int k = 0;
    for (int i = 0; i < r->n_stem; i++) last[k] = false, out[k++] = &r->stem_bn[i];
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < r->n_blocks[s]; j++) {
            segc_resnet_block *b = &r->blocks[s][j];
            last[k] = false, out[k++] = &b->bn1;
            last[k] = !r->bottleneck, out[k++] = &b->bn2;
            if (r->bottleneck) last[k] = true, out[k++] = &b->bn3;
            if (b->has_down) last[k] = false, out[k++] = &b->down_bn;
        }
    return k;
}

static void reset_bns(segc_resnet *r, bool zero_last) {
    segc_batchnorm_layer *bns[3 + 4 * 23 * 4];
    bool last[3 + 4 * 23 * 4];
    int k = collect_bns(r, bns, last);
    for (int i = 0; i < k; i++) {
        segc_init_const(bns[i]->weight, zero_last && last[i] ? 0.0f : 1.0f);
        segc_init_const(bns[i]->bias, 0.0f);
        segc_init_const(bns[i]->running_mean, 0.0f);
        segc_init_const(bns[i]->running_var, 1.0f);
        segc_init_const(bns[i]->num_batches_tracked, 0.0f);
    }
}

void segc_resnet_reset_bn(segc_resnet *r) { reset_bns(r, false); }

static void kaiming_fan_out(segc_tensor *w, segc_rng *rng) {
    double fan_out = (double)w->shape[0] * (double)w->shape[2] * (double)w->shape[3];
    segc_init_normal(w, rng, 0.0f, (float)sqrt(2.0 / fan_out));
}

void segc_resnet_init(segc_resnet *r, segc_rng *rng) {
    for (int i = 0; i < r->n_stem; i++) kaiming_fan_out(r->stem_conv[i].weight, rng);
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < r->n_blocks[s]; j++) {
            segc_resnet_block *b = &r->blocks[s][j];
            kaiming_fan_out(b->conv1.weight, rng);
            kaiming_fan_out(b->conv2.weight, rng);
            if (r->bottleneck) kaiming_fan_out(b->conv3.weight, rng);
            if (b->has_down) kaiming_fan_out(b->down.weight, rng);
        }
    reset_bns(r, r->cfg.zero_init_residual);
}

void segc_resnet_free(segc_resnet *r) {
    if (!r) return;
    for (int s = 0; s < 4; s++) free(r->blocks[s]);
    free(r);
}

static segc_tensor *conv_bn(segc_ctx *ctx, const segc_conv_layer *c, const segc_batchnorm_layer *bn, segc_tensor *x,
                            bool relu) {
    return (relu ? segc_batchnorm_relu_layer_fwd : segc_batchnorm_layer_fwd)(ctx, bn, segc_conv_layer_fwd(ctx, c, x));
}

/* A block's inner relu(bn(.)) outputs feed one convolution each: with ctx->free_activations their
 * memory is released after it and recomputed in backward (core.h), which saves the step a copy of
 * every inner activation for one more elementwise pass. */
static segc_tensor *block_fwd(segc_ctx *ctx, const segc_resnet *r, const segc_resnet_block *b, segc_tensor *x) {
    segc_tensor *y = conv_bn(ctx, &b->conv1, &b->bn1, x, true);
    if (r->bottleneck) {
        segc_tensor *y1 = y;
        y = conv_bn(ctx, &b->conv2, &b->bn2, y1, true);
        segc_release_recompute(ctx, y1);
    }
    segc_tensor *id = b->has_down ? conv_bn(ctx, &b->down, &b->down_bn, x, false) : x;
    const segc_conv_layer *last = r->bottleneck ? &b->conv3 : &b->conv2;
    const segc_batchnorm_layer *last_bn = r->bottleneck ? &b->bn3 : &b->bn2;
    segc_tensor *c = segc_conv_layer_fwd(ctx, last, y);
    segc_release_recompute(ctx, y);
    /* relu(bn(conv(y)) + id) in one op: the normalised values are never stored */
    return segc_batchnorm_add_relu_layer_fwd(ctx, last_bn, c, id);
}

bool segc_resnet_forward(segc_ctx *ctx, const segc_resnet *r, segc_tensor *x, segc_tensor *outs[4]) {
    for (int s = 0; s < 4; s++) outs[s] = NULL;
    if (!x || ctx->has_err) return false;
    char sb[96];
    if (x->ndim != 4 || x->shape[1] != r->cfg.in_channels) {
        segc_set_error(ctx, "resnet: expected images [N, %d, H, W], found %s", r->cfg.in_channels,
                       segc_shape_str(x, sb, sizeof sb));
        return false;
    }
    /* channels-last: oneDNN's convolutions read and write NHWC directly, so no layer reorders */
    if (r->cfg.channels_last) x = segc_to_channels_last(ctx, x);
    for (int i = 0; i < r->n_stem && x; i++) {
        segc_tensor *in = x;
        x = conv_bn(ctx, &r->stem_conv[i], &r->stem_bn[i], in, true);
        if (i > 0) segc_release_recompute(ctx, in);   /* the deep stem's inner outputs, as in the blocks */
    }
    x = x ? segc_max_pool2d(ctx, x, 3, 3, 2, 2, 1, 1, false) : NULL;
    for (int s = 0; s < n_stages(&r->cfg); s++) {
        for (int j = 0; j < r->n_blocks[s] && x; j++) x = block_fwd(ctx, r, &r->blocks[s][j], x);
        outs[s] = segc_to_channels_first(ctx, x);
    }
    return x != NULL && !ctx->has_err;
}

/* ---- names and loading ---- */
bool segc_resnet_name_from_torchvision(const char *tv, const char *prefix, char *out, size_t n) {
    if (!strncmp(tv, "fc.", 3)) return false;
    return snprintf(out, n, "%s%s", prefix ? prefix : "", tv) < (int)n;
}

bool segc_resnet_name_to_torchvision(const char *name, const char *prefix, char *out, size_t n) {
    size_t lp = prefix ? strlen(prefix) : 0;
    if (lp && strncmp(name, prefix, lp) != 0) return false;
    if (!strncmp(name + lp, "stem.", 5)) return false;
    return snprintf(out, n, "%s", name + lp) < (int)n;
}

/* names a ResNet backbone has (relative to its prefix) */
static bool is_backbone_name(const char *nm) {
    return !strncmp(nm, "stem.", 5) || !strncmp(nm, "conv1.", 6) || !strncmp(nm, "bn1.", 4) || !strncmp(nm, "layer", 5);
}

static bool is_counter(const char *name) {
    size_t n = strlen(name), k = strlen("num_batches_tracked");
    return n >= k && !strcmp(name + n - k, "num_batches_tracked");
}

static void shape_text(int ndim, const int64_t *s, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

bool segc_resnet_load(segc_params *p, const char *prefix, const char *path, bool strict, segc_load_report *rep,
                      char *err, size_t errlen) {
    segc_load_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    const char *px = prefix ? prefix : "";
    const size_t lp = strlen(px);
    segc_st_file *f = segc_st_open(path, err, errlen);
    if (!f) return false;
    bool *seen = calloc((size_t)p->n + 1, 1);
    if (!seen) {
        segc_st_close(f);
        return segc_errorf(err, errlen, "%s: out of memory", path);
    }
    int n_foreign = 0;
    char first_foreign[160] = "";
    for (int i = 0; i < segc_st_count(f); i++) {
        const segc_st_entry *e = segc_st_at(f, i);
        char name[320];
        int idx = -1;
        /* a whole mmseg model keeps its prefix; other names are torchvision's / a bare ResNet's */
        if (lp && !strncmp(e->name, px, lp)) snprintf(name, sizeof name, "%s", e->name);
        else if (!segc_resnet_name_from_torchvision(e->name, px, name, sizeof name)) name[0] = 0;
        if (name[0] && !strncmp(name, px, lp)) idx = segc_params_index(p, name);
        if (idx < 0) {
            if (!rep->unexpected++) snprintf(rep->first_unexpected, sizeof rep->first_unexpected, "%s", e->name);
            /* a backbone-shaped name the model lacks (another depth or stem) is a mismatch, unlike fc.* or heads */
            if (name[0] && !strncmp(name, px, lp) && is_backbone_name(name + lp) && !n_foreign++)
                snprintf(first_foreign, sizeof first_foreign, "%s", e->name);
            continue;
        }
        segc_tensor *t = p->t[idx];
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        bool same = numel == segc_numel(t) && (e->ndim == t->ndim || (is_counter(name) && numel == 1));
        for (int d = 0; same && e->ndim == t->ndim && d < e->ndim; d++) same = e->shape[d] == t->shape[d];
        bool dtype_ok = e->dtype_known && (e->dtype == SEGC_F32 || e->dtype == SEGC_BF16 ||
                                           (e->dtype == SEGC_I64 && numel == 1));
        if (!same || !dtype_ok) {
            if (!rep->mismatched++) {
                char a[96], b[96];
                shape_text(e->ndim, e->shape, a, sizeof a);
                shape_text(t->ndim, t->shape, b, sizeof b);
                snprintf(rep->first_mismatch, sizeof rep->first_mismatch, "%s (as %s): file has %s %s, model expects %s",
                         e->name, name, e->dtype_str, a, b);
            }
            continue;
        }
        float *dst = segc_f32(t);
        if (e->dtype == SEGC_F32) memcpy(dst, e->data, e->nbytes);
        else if (e->dtype == SEGC_BF16) segc_bf16_to_f32_n(e->data, dst, numel);
        else { int64_t v; memcpy(&v, e->data, 8); dst[0] = (float)v; }
        seen[idx] = true;
        rep->loaded++;
    }
    /* the backbone's own tensors that the file did not provide */
    for (int i = 0; i < p->n; i++) {
        const char *nm = p->t[i]->name;
        if (seen[i] || strncmp(nm, px, lp) != 0 || is_counter(nm)) continue;
        if (!is_backbone_name(nm + lp)) continue;   /* no prefix: only backbone names count */
        if (!rep->missing++) snprintf(rep->first_missing, sizeof rep->first_missing, "%s", nm);
    }
    free(seen);
    segc_st_close(f);
    if (strict && rep->mismatched)
        return segc_errorf(err, errlen, "%s: backbone tensor %s (%d mismatched, %d missing)", path, rep->first_mismatch,
                           rep->mismatched, rep->missing);
    if (strict && rep->missing)
        return segc_errorf(err, errlen, "%s: backbone tensor '%s' missing (%d missing, %d loaded)%s", path,
                           rep->first_missing, rep->missing, rep->loaded,
                           strstr(rep->first_missing, "stem.") ? "; torchvision weights have a 7x7 stem: use model.stem=plain"
                                                               : "");
    if (strict && n_foreign)
        return segc_errorf(err, errlen, "%s: backbone tensor '%s' has no counterpart in the model (%d such: another "
                           "depth or stem?)", path, first_foreign, n_foreign);
    return true;
}
