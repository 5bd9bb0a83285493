/* segc nn: layers = parameters registered under checkpoint-compatible names
 * plus a forward that calls ops. Layers hold pointers into a segc_params
 * store; they own nothing. Parameters are f32 master weights; a layer given a
 * bf16 input casts its weights to bf16 for that call (gradients flow back to
 * the f32 masters through the cast). */
#ifndef SEGC_NN_H
#define SEGC_NN_H
#include "segc/ops.h"
#include "segc/params.h"

typedef struct { segc_tensor *weight, *bias; } segc_linear_layer;
typedef struct { segc_tensor *weight, *bias; segc_conv_params p; } segc_conv_layer;
typedef struct { segc_tensor *weight, *bias; float eps; } segc_layernorm_layer;
typedef struct {
    segc_tensor *weight, *bias, *running_mean, *running_var, *num_batches_tracked;
    float eps, momentum;
} segc_batchnorm_layer;

/* Registration: names are PREFIX.weight / PREFIX.bias (PyTorch state_dict naming). */
void segc_linear_layer_init(segc_linear_layer *l, segc_params *p, const char *prefix, int in, int out, bool bias);
void segc_conv_layer_init(segc_conv_layer *l, segc_params *p, const char *prefix, int in, int out, int k,
                          int stride, int pad, int groups, bool bias);
void segc_layernorm_layer_init(segc_layernorm_layer *l, segc_params *p, const char *prefix, int dim, float eps);
void segc_batchnorm_layer_init(segc_batchnorm_layer *l, segc_params *p, const char *prefix, int ch, float eps,
                               float momentum);

segc_tensor *segc_linear_layer_fwd(segc_ctx *ctx, const segc_linear_layer *l, segc_tensor *x);
/* the layer applied to gelu(h), gelu(h) recomputed in backward (segc_gelu_linear) */
segc_tensor *segc_gelu_linear_layer_fwd(segc_ctx *ctx, const segc_linear_layer *l, segc_tensor *h);
segc_tensor *segc_conv_layer_fwd(segc_ctx *ctx, const segc_conv_layer *l, segc_tensor *x);
segc_tensor *segc_layernorm_layer_fwd(segc_ctx *ctx, const segc_layernorm_layer *l, segc_tensor *x);
segc_tensor *segc_batchnorm_layer_fwd(segc_ctx *ctx, const segc_batchnorm_layer *l, segc_tensor *x);
/* the layer, then ReLU, as one op (segc_batch_norm_relu) */
segc_tensor *segc_batchnorm_relu_layer_fwd(segc_ctx *ctx, const segc_batchnorm_layer *l, segc_tensor *x);
/* relu(bn(x) + id), a residual block's end (segc_batch_norm_add_relu) */
segc_tensor *segc_batchnorm_add_relu_layer_fwd(segc_ctx *ctx, const segc_batchnorm_layer *l, segc_tensor *x,
                                               segc_tensor *id);

/* A parameter in the compute dtype of x: the tensor itself for f32, a
 * differentiable cast for bf16. */
segc_tensor *segc_param_as(segc_ctx *ctx, segc_tensor *param, segc_dtype dt);

/* Initialisers (deterministic from rng). */
void segc_init_normal(segc_tensor *t, segc_rng *rng, float mean, float std);
void segc_init_trunc_normal(segc_tensor *t, segc_rng *rng, float std);   /* truncated at +-2 std */
void segc_init_const(segc_tensor *t, float v);

/* Weights IO (safetensors, PyTorch/HF names). */
typedef struct segc_load_report {
    int loaded, missing, unexpected, mismatched;
    char first_missing[160], first_unexpected[160], first_mismatch[320];
} segc_load_report;
/* strict: any missing/unexpected/mismatched tensor is an error (message in err).
 * Non-strict: loads what matches and reports the rest, like PyTorch's
 * load_state_dict(strict=False). F32, BF16, F16-free; I64 accepted for
 * counters such as num_batches_tracked. */
bool segc_params_load(segc_params *p, const char *path, bool strict, segc_load_report *rep, char *err, size_t errlen);
/* Writes every parameter/buffer (num_batches_tracked as I64, the rest F32). */
bool segc_params_save(const segc_params *p, const char *path, const char *const *meta_kv, int n_meta, char *err,
                      size_t errlen);
void segc_load_report_print(const segc_load_report *r, const char *path);
#endif
