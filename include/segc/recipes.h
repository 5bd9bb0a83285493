/* Composer-style efficiency recipes, each an independent switch under
 * recipe.* that works for every model family:
 *
 *   EMA     recipe.ema.half_life / update_interval (durations): every
 *           update_interval iterations the EMA of every tensor of the parameter
 *           store (weights and BN statistics) becomes
 *           s * ema + (1 - s) * weights, s = 0.5^(update_interval / half_life)
 *           (Composer's EMA). Evaluation and best.safetensors use the EMA
 *           weights; checkpoints hold them ("ema.<name>" in the state file).
 *   SAM     recipe.sam.rho / interval / epsilon: on iterations with
 *           (iter + 1) % interval == 0 the gradient g at w is computed, the
 *           trainable weights move to w + rho * g / (||g|| + epsilon), the
 *           gradient there is computed, the weights are restored (copied back,
 *           bitwise) and the optimizer steps with the second gradient
 *           (Composer's SAMOptimizer; its loss is the first pass's).
 *   MixUp   recipe.mixup.alpha: z ~ Beta(alpha, alpha), m = min(z, 1 - z) and a
 *           permutation of the batch, both drawn from a Philox stream keyed by
 *           train.seed and the iteration (resume-exact); images
 *           (1 - m) * x + m * x[perm], loss (1 - m) * L(y) + m * L(y[perm])
 *           (Composer's MixUp with interpolated loss, for label maps).
 *   grad_accum  recipe.grad_accum: N micro-batches of batch_size / N, each
 *           loss scaled by 1 / N and the gradients summed into params.grad
 *           (identical to the full batch for per-sample losses without
 *           batch-coupled layers such as BatchNorm), or auto: the largest
 *           micro-batch (a divisor of the batch) whose measured step peak fits
 *           train.memory_limit, halved again on an allocation failure.
 *
 * segc_recipe_step is the whole forward/backward of one training iteration;
 * when it returns, params.grad holds the batch's gradient (the one place a
 * data-parallel all-reduce hooks in, before the optimizer step). */
#ifndef SEGC_RECIPES_H
#define SEGC_RECIPES_H
#include "segc/checkpoint.h"
#include "segc/config.h"
#include "segc/loader.h"
#include "segc/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "8GiB", "512MiB", "1.5GB", "1000000" (bytes) */
bool segc_parse_bytes(const char *s, int64_t *bytes);
/* micro-batches of recipe.grad_accum (0: auto); false when it is malformed */
bool segc_recipe_grad_accum(const segc_config *c, int *n);

/* ---- EMA (ema.c) ---- */
typedef struct segc_ema {
    float *w;              /* flat, the parameter store's layout */
    int64_t total;
    double smoothing;
    int64_t interval;
} segc_ema;

double segc_ema_smoothing(int64_t half_life, int64_t update_interval);
/* copies p's current values; false + message on a bad half-life/interval or no memory */
bool segc_ema_init(segc_ema *e, const segc_params *p, int64_t half_life, int64_t update_interval, char *err, size_t n);
/* after `iters` completed iterations: one update when iters % interval == 0 */
void segc_ema_update(segc_ema *e, const segc_params *p, int64_t iters);
/* one unconditional update: ema = ema * s + (1 - s) * p (f32, as torch's mul_/add_) */
void segc_ema_apply(segc_ema *e, const segc_params *p);
/* exchanges the model's values and the EMA's (twice: back to the start) */
void segc_ema_swap(segc_ema *e, segc_params *p);
void segc_ema_save(const segc_ema *e, const segc_params *p, segc_st_writer *w, const char *prefix);
/* every "<prefix><name>" present with its tensor's shape, or none (then
 * *found is false and the EMA is left as it is); else false + message naming
 * the first missing or mismatching tensor, changing nothing */
bool segc_ema_load(segc_ema *e, const segc_params *p, const segc_st_file *f, const char *prefix, bool *found,
                   char *err, size_t n);
void segc_ema_free(segc_ema *e);

/* ---- SAM (sam.c) ---- */
typedef struct segc_sam {
    double rho, epsilon;
    int64_t interval;
    float *backup;         /* trainable weights before the perturbation */
} segc_sam;

bool segc_sam_init(segc_sam *s, const segc_params *p, double rho, double epsilon, int64_t interval, char *err, size_t n);
/* iteration iter (from 0) takes the two-pass step */
bool segc_sam_due(const segc_sam *s, int64_t iter);
/* saves the trainable weights, then w += g * (rho / (||g|| + epsilon)) with
 * the scale in f32 (Composer); returns ||g|| (f64 sum) */
double segc_sam_perturb(segc_sam *s, segc_params *p);
/* the saved trainable weights back, bitwise (buffers such as BN statistics keep
 * what the second pass wrote, as in Composer) */
void segc_sam_restore(segc_sam *s, segc_params *p);
void segc_sam_free(segc_sam *s);

/* ---- MixUp (mixup.c) ---- */
/* Beta(a, b) from r (Marsaglia-Tsang gammas) */
double segc_rng_beta(segc_rng *r, double a, double b);
/* m = min(z, 1 - z), z ~ Beta(alpha, alpha), and perm (n entries, Fisher-Yates)
 * for iteration iter of a run seeded seed */
double segc_mixup_draw(uint64_t seed, int64_t iter, double alpha, int n, int *perm);
/* out[i] = (1 - m) * x[i] + m * x[perm[i]] per sample of `per` floats (f32 ops) */
void segc_mixup_images(const float *x, float *out, int n, int64_t per, const int *perm, float m);
/* out[i] = y[perm[i]], per sample of `bytes` bytes */
void segc_mixup_permute(const void *y, void *out, int n, size_t bytes, const int *perm);
/* (1 - m) * la + m * lb (recorded on the tape) */
segc_tensor *segc_mixup_loss(segc_ctx *ctx, segc_tensor *la, segc_tensor *lb, float m);

/* ---- the training step (recipe_step.c) ---- */
typedef struct segc_recipe segc_recipe;

/* From a configuration whose durations are resolved; m must outlive it. */
segc_recipe *segc_recipe_new(const segc_config *c, segc_model *m, char *err, size_t n);
void segc_recipe_free(segc_recipe *r);
/* Forward + backward of iteration iter on b (zeroes the gradients first);
 * params.grad holds the batch's gradient and *loss its loss (the first pass's
 * under SAM). false + message on a model error (or, under grad_accum auto, when
 * even one sample does not fit train.memory_limit). */
bool segc_recipe_step(segc_recipe *r, segc_ctx *ctx, const segc_batch *b, segc_dtype dt, int64_t iter, double *loss,
                      char *err, size_t n);
/* after the optimizer step of iteration iters - 1 (EMA update) */
void segc_recipe_after_step(segc_recipe *r, int64_t iters);
/* true: the model holds the EMA weights (for evaluation and best checkpoints);
 * false: the training weights again. No-op without EMA. */
void segc_recipe_use_ema(segc_recipe *r, bool on);
bool segc_recipe_has_ema(const segc_recipe *r);
/* micro-batch size in use (grad_accum auto: once measured) */
int segc_recipe_micro_batch(const segc_recipe *r);
/* grad_accum auto: probing passes retried smaller because step memory could not grow */
int segc_recipe_oom_retries(const segc_recipe *r);
/* checkpoint hooks (EMA tensors); a NULL recipe gives empty hooks */
segc_ckpt_extra segc_recipe_ckpt_extra(segc_recipe *r);
/* one line describing the active recipes ("" when none) */
const char *segc_recipe_describe(const segc_recipe *r);

#ifdef __cplusplus
}
#endif
#endif
