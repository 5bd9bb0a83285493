/* Layer registration and forwards. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "segc/nn.h"

static segc_tensor *add_param(segc_params *p, const char *prefix, const char *leaf, int ndim, const int64_t *shape,
                              bool trainable) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", prefix, leaf);
    return segc_params_add(p, name, ndim, shape, trainable);
}

void segc_linear_layer_init(segc_linear_layer *l, segc_params *p, const char *prefix, int in, int out, bool bias) {
    l->weight = add_param(p, prefix, "weight", 2, (int64_t[]){out, in}, true);
    l->bias = bias ? add_param(p, prefix, "bias", 1, (int64_t[]){out}, true) : NULL;
}

void segc_conv_layer_init(segc_conv_layer *l, segc_params *p, const char *prefix, int in, int out, int k, int stride,
                          int pad, int groups, bool bias) {
    l->weight = add_param(p, prefix, "weight", 4, (int64_t[]){out, in / groups, k, k}, true);
    l->bias = bias ? add_param(p, prefix, "bias", 1, (int64_t[]){out}, true) : NULL;
    l->p = segc_conv_params_default();
    l->p.stride[0] = l->p.stride[1] = stride;
    l->p.pad[0] = l->p.pad[1] = pad;
    l->p.groups = groups;
}

void segc_layernorm_layer_init(segc_layernorm_layer *l, segc_params *p, const char *prefix, int dim, float eps) {
    l->weight = add_param(p, prefix, "weight", 1, (int64_t[]){dim}, true);
    l->bias = add_param(p, prefix, "bias", 1, (int64_t[]){dim}, true);
    l->eps = eps;
}

void segc_batchnorm_layer_init(segc_batchnorm_layer *l, segc_params *p, const char *prefix, int ch, float eps,
                               float momentum) {
    l->weight = add_param(p, prefix, "weight", 1, (int64_t[]){ch}, true);
    l->bias = add_param(p, prefix, "bias", 1, (int64_t[]){ch}, true);
    l->running_mean = add_param(p, prefix, "running_mean", 1, (int64_t[]){ch}, false);
    l->running_var = add_param(p, prefix, "running_var", 1, (int64_t[]){ch}, false);
    l->num_batches_tracked = add_param(p, prefix, "num_batches_tracked", 0, NULL, false);
    l->eps = eps;
    l->momentum = momentum;
}

segc_tensor *segc_param_as(segc_ctx *ctx, segc_tensor *param, segc_dtype dt) {
    if (!param || param->dtype == dt) return param;
    return segc_cast(ctx, param, dt);
}

segc_tensor *segc_linear_layer_fwd(segc_ctx *ctx, const segc_linear_layer *l, segc_tensor *x) {
    if (!x) return NULL;
    return segc_linear(ctx, x, segc_param_as(ctx, l->weight, x->dtype), segc_param_as(ctx, l->bias, x->dtype));
}

segc_tensor *segc_gelu_linear_layer_fwd(segc_ctx *ctx, const segc_linear_layer *l, segc_tensor *h) {
    if (!h) return NULL;
    return segc_gelu_linear(ctx, h, segc_param_as(ctx, l->weight, h->dtype), segc_param_as(ctx, l->bias, h->dtype));
}

segc_tensor *segc_conv_layer_fwd(segc_ctx *ctx, const segc_conv_layer *l, segc_tensor *x) {
    if (!x) return NULL;
    return segc_conv2d(ctx, x, segc_param_as(ctx, l->weight, x->dtype), segc_param_as(ctx, l->bias, x->dtype), &l->p);
}

segc_tensor *segc_layernorm_layer_fwd(segc_ctx *ctx, const segc_layernorm_layer *l, segc_tensor *x) {
    if (!x) return NULL;
    return segc_layer_norm(ctx, x, segc_param_as(ctx, l->weight, x->dtype), segc_param_as(ctx, l->bias, x->dtype), l->eps);
}

static segc_tensor *batchnorm_layer(segc_ctx *ctx, const segc_batchnorm_layer *l, segc_tensor *x, bool relu,
                                    segc_tensor *id) {
    if (!x) return NULL;
    segc_tensor *w = segc_param_as(ctx, l->weight, x->dtype), *b = segc_param_as(ctx, l->bias, x->dtype);
    segc_tensor *y = id ? segc_batch_norm_add_relu(ctx, x, w, b, l->running_mean, l->running_var, l->momentum, l->eps, id)
                        : (relu ? segc_batch_norm_relu : segc_batch_norm)(ctx, x, w, b, l->running_mean,
                                                                          l->running_var, l->momentum, l->eps);
    if (y && ctx->training && l->num_batches_tracked) segc_f32(l->num_batches_tracked)[0] += 1.0f;
    return y;
}

segc_tensor *segc_batchnorm_layer_fwd(segc_ctx *ctx, const segc_batchnorm_layer *l, segc_tensor *x) {
    return batchnorm_layer(ctx, l, x, false, NULL);
}

segc_tensor *segc_batchnorm_relu_layer_fwd(segc_ctx *ctx, const segc_batchnorm_layer *l, segc_tensor *x) {
    return batchnorm_layer(ctx, l, x, true, NULL);
}

segc_tensor *segc_batchnorm_add_relu_layer_fwd(segc_ctx *ctx, const segc_batchnorm_layer *l, segc_tensor *x,
                                               segc_tensor *id) {
    if (!id) return NULL;
    return batchnorm_layer(ctx, l, x, false, id);
}

void segc_init_normal(segc_tensor *t, segc_rng *rng, float mean, float std) {
    segc_rng_fill_normal(rng, segc_f32(t), segc_numel(t), mean, std);
}

void segc_init_trunc_normal(segc_tensor *t, segc_rng *rng, float std) {
    float *d = segc_f32(t);
    int64_t n = segc_numel(t);
    for (int64_t i = 0; i < n; i++) {
        float v;
        do v = segc_rng_normal(rng); while (fabsf(v) > 2.0f);
        d[i] = v * std;
    }
}

void segc_init_const(segc_tensor *t, float v) {
    float *d = segc_f32(t);
    int64_t n = segc_numel(t);
    for (int64_t i = 0; i < n; i++) d[i] = v;
}
