/* Optimizers (SGD, AdamW), mmengine-style parameter groups, global-norm
 * gradient clipping, iteration-based LR schedules and optimizer state
 * serialisation.
 *
 * All parameters live in one flat f32 buffer (segc_params), so optimizer
 * state is flat buffers of the same layout and one fused, multithreaded pass
 * updates every trainable tensor. Results do not depend on the thread count:
 * updates are elementwise and the gradient norm is summed over fixed blocks in
 * a fixed order.
 *
 * Typical training loop (SegFormer recipe):
 *   segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 6e-5);
 *   oc.weight_decay = 0.01;
 *   oc.paramwise.custom_keys = keys;  // {"head", .lr_mult = SEGC_MULT(10)}, ...
 *   segc_optimizer *opt = segc_optimizer_new(&params, &oc, err, sizeof err);
 *   segc_schedule s = segc_schedule_segformer(1500, 160000);
 *   for (it = start; it < 160000; it++) {
 *       ... forward, backward (grads accumulate in params.grad) ...
 *       segc_optimizer_step_scheduled(opt, &s, it);
 *       segc_params_zero_grad(&params);
 *   }
 */
#ifndef SEGC_OPTIM_H
#define SEGC_OPTIM_H
#include "segc/params.h"
#include "segc/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * Parameter groups (mmengine DefaultOptimWrapperConstructor.paramwise_cfg)
 *
 * For every trainable tensor, in this order of precedence:
 *  1. custom_keys: the keys are sorted by length, longest first (ties in
 *     alphabetical order); the first key that is a substring of the full
 *     parameter name wins and sets lr_mult / decay_mult (each 1 when unset).
 *     A matching key disables every rule below.
 *  2. otherwise lr_mult = bias_lr_mult for biases that are not norm biases;
 *     decay_mult = norm_decay_mult for norm parameters (weight and bias), else
 *     bias_decay_mult for biases, else flat_decay_mult for 1-D tensors. Rules
 *     whose multiplier is unset are skipped (mmengine's None); with nothing
 *     set both multipliers are 1.
 * A bias is a tensor whose name ends in ".bias" (or is "bias"). A norm
 * parameter is decided by is_norm(name, user) when given; otherwise by
 * norm_keys (NULL-terminated) matched against the owning module's name, the
 * component before the last '.': a key matches when that module name starts
 * with it or contains it right after a '_' ("norm1", "bn", "ln_f",
 * "layer_norm" all match "norm"/"bn"/"ln"; "subnet", "align" do not). When
 * norm_keys is NULL the defaults are {"norm", "bn", "ln", "gn"}; pass a list
 * holding only NULL to mark nothing as norm. Names like "layers.0.2.weight"
 * (a norm inside a ModuleList) need is_norm.
 * --------------------------------------------------------------------------- */
typedef struct segc_mult {
    bool set;
    double value;
} segc_mult;
#define SEGC_MULT(x) ((segc_mult){true, (x)})

typedef struct segc_custom_key {
    const char *key;
    segc_mult lr_mult, decay_mult;   /* unset: 1 */
} segc_custom_key;

typedef bool (*segc_is_norm_fn)(const char *name, void *user);

typedef struct segc_paramwise_cfg {
    const segc_custom_key *custom_keys;
    int n_custom_keys;
    segc_mult bias_lr_mult, bias_decay_mult, norm_decay_mult, flat_decay_mult;
    const char *const *norm_keys;
    segc_is_norm_fn is_norm;
    void *is_norm_user;
} segc_paramwise_cfg;

/* Fill lr_mult[i] and decay_mult[i] for each tensor i of p (1 for
 * non-trainable ones). false with a one-line message on a bad config. */
bool segc_param_groups(const segc_params *p, const segc_paramwise_cfg *cfg, double *lr_mult, double *decay_mult,
                       char *err, size_t errlen);
bool segc_param_is_norm(const segc_paramwise_cfg *cfg, const char *name);

/* ---------------------------------------------------------------------------
 * LR schedules (mmengine ParamScheduler semantics, iteration based).
 *
 * A schedule is a list of items, each active on iterations [begin, end),
 * applied as mmengine chains them: every item transforms the current lr on
 * each iteration it is active, in list order. The value returned for iter t
 * is the lr that training iteration t uses (mmengine: after construction and
 * t scheduler steps). Multiplicative items (linear, constant, step,
 * multistep, exp, poly with eta_min 0, cosine with eta_min 0 whose range
 * stays within T_max) may overlap freely; poly/cosine with eta_min != 0 (or a
 * cosine running past T_max) depend on the absolute lr and may not overlap
 * any other item. An empty schedule keeps the base lr (constant).
 * --------------------------------------------------------------------------- */
#define SEGC_SCHED_INF ((int64_t)1000000000)   /* mmengine's INF */
#define SEGC_SCHED_MAX_ITEMS 8
#define SEGC_SCHED_MAX_MILESTONES 16

typedef enum {
    SEGC_SCHED_LINEAR = 0,   /* LinearLR: start_factor -> end_factor over [begin, end-1] */
    SEGC_SCHED_CONSTANT,     /* ConstantLR: lr * factor on [begin, end-1), then restored */
    SEGC_SCHED_POLY,         /* PolyLR: eta_min + (lr0 - eta_min) * (1 - k/(end-begin-1))^power */
    SEGC_SCHED_COSINE,       /* CosineAnnealingLR: eta_min, t_max (0: end - begin) */
    SEGC_SCHED_MULTISTEP,    /* MultiStepLR: * gamma at each milestone (relative to begin) */
    SEGC_SCHED_STEP,         /* StepLR: * gamma every step_size iterations */
    SEGC_SCHED_EXP,          /* ExponentialLR: * gamma every iteration */
} segc_sched_kind;

typedef struct segc_sched_item {
    segc_sched_kind kind;
    int64_t begin, end;
    double start_factor, end_factor;   /* linear */
    double factor;                     /* constant */
    double eta_min, power;             /* poly (power), cosine (eta_min for both) */
    int64_t t_max;                     /* cosine */
    double gamma;                      /* step, multistep, exp */
    int64_t step_size;                 /* step */
    int64_t milestones[SEGC_SCHED_MAX_MILESTONES];
    int n_milestones;
} segc_sched_item;

typedef struct segc_schedule {
    int n;
    segc_sched_item item[SEGC_SCHED_MAX_ITEMS];
} segc_schedule;

segc_sched_item segc_sched_linear(double start_factor, double end_factor, int64_t begin, int64_t end);
segc_sched_item segc_sched_constant(double factor, int64_t begin, int64_t end);
segc_sched_item segc_sched_poly(double power, double eta_min, int64_t begin, int64_t end);
segc_sched_item segc_sched_cosine(int64_t t_max, double eta_min, int64_t begin, int64_t end);
segc_sched_item segc_sched_multistep(const int64_t *milestones, int n, double gamma, int64_t begin, int64_t end);
segc_sched_item segc_sched_step(int64_t step_size, double gamma, int64_t begin, int64_t end);
segc_sched_item segc_sched_exp(double gamma, int64_t begin, int64_t end);

void segc_schedule_init(segc_schedule *s);
/* Append an item after validating it and its overlaps; false + message. */
bool segc_schedule_add(segc_schedule *s, segc_sched_item item, char *err, size_t errlen);
bool segc_schedule_validate(const segc_schedule *s, char *err, size_t errlen);
/* LinearLR(1e-6, 0, warmup) then PolyLR(power 1, eta_min 0, warmup, max_iters). */
segc_schedule segc_schedule_segformer(int64_t warmup_iters, int64_t max_iters);
/* Closed form lr of iteration iter (>= 0) for a group whose initial lr is
 * base_lr. Pure: resuming only needs the iteration. NAN for an invalid
 * schedule or negative iter. */
double segc_schedule_lr(const segc_schedule *s, double base_lr, int64_t iter);

/* ---------------------------------------------------------------------------
 * Optimizers
 * --------------------------------------------------------------------------- */
/* SEGC_OPT_DECOUPLED_SGDW: Composer's DecoupledSGDW, SGD (momentum,
 * dampening, nesterov as torch) whose weight decay is not added to the
 * gradient but applied to the weights, scaled by lr / initial lr:
 *   w = w * (1 - (lr / initial_lr) * wd) - lr * d
 * with initial_lr the tensor's lr before any schedule (base lr x lr_mult). */
typedef enum { SEGC_OPT_SGD = 0, SEGC_OPT_ADAMW, SEGC_OPT_DECOUPLED_SGDW } segc_opt_kind;

typedef struct segc_optim_cfg {
    segc_opt_kind kind;
    double lr;             /* base lr; tensor i starts at lr * lr_mult[i] */
    double weight_decay;   /* tensor i uses weight_decay * decay_mult[i] */
    double momentum, dampening;   /* SGD (torch.optim.SGD, L2 decay added to the gradient) */
    bool nesterov;
    double beta1, beta2, eps;     /* AdamW (torch.optim.AdamW, decoupled decay) */
    double max_grad_norm;  /* > 0: clip_grad_norm_ before the update; 0: off */
    segc_paramwise_cfg paramwise;   /* read at creation only */
} segc_optim_cfg;

/* torch defaults: SGD momentum 0, weight_decay 0; AdamW betas (0.9, 0.999),
 * eps 1e-8, weight_decay 1e-2. No clipping, no param-wise rules. */
segc_optim_cfg segc_optim_defaults(segc_opt_kind kind, double lr);

typedef struct segc_opt_block segc_opt_block;

typedef struct segc_optimizer {
    segc_optim_cfg hp;     /* hyper-parameters (paramwise cleared) */
    segc_params *p;        /* borrowed; must outlive the optimizer */
    double *lr_mult, *decay_mult;   /* per tensor of p */
    float *exp_avg;        /* AdamW first moment / SGD momentum buffer (NULL if none) */
    float *exp_avg_sq;     /* AdamW second moment (NULL for SGD) */
    int64_t step;          /* optimizer steps taken */
    double last_grad_norm; /* pre-clip total norm of the last step (-1 when not clipping) */
    /* fixed work split: blocks never straddle tensors, so per-block norms
     * summed in block order are independent of the thread count */
    int n_blocks;
    segc_opt_block *blocks;
    double *block_sums;
    double *tensor_lr;     /* per-tensor lr of the current step */
    float *tensor_coef;    /* per-tensor scalars of the current step */
    char err[256];         /* why the last step was refused */
} segc_optimizer;

/* Validates cfg (lr >= 0, 0 <= beta < 1, eps >= 0, weight_decay >= 0,
 * momentum >= 0, 0 <= dampening <= 1, nesterov needs momentum > 0 and
 * dampening 0, max_grad_norm >= 0) and the param-wise rules; p must be
 * finalized. NULL with a one-line message in err on failure. */
segc_optimizer *segc_optimizer_new(segc_params *p, const segc_optim_cfg *cfg, char *err, size_t errlen);
void segc_optimizer_free(segc_optimizer *o);

/* One update of every trainable tensor with lr_i = lr * lr_mult[i] (torch:
 * clip_grad_norm_ if enabled, then optimizer.step()). Gradients are read,
 * never written: clipping is applied inside the fused pass. Returns the
 * pre-clip total gradient norm when clipping is on, -1 otherwise; NAN (and
 * no update, message in o->err) when lr is negative or not finite. */
double segc_optimizer_step(segc_optimizer *o, double lr);
/* Same, with each tensor's lr from the schedule: segc_schedule_lr(s,
 * o->hp.lr * lr_mult[i], iter), exactly mmengine's per-group values (eta_min
 * is absolute per group, so this differs from step(lr * mult) when
 * eta_min != 0). */
double segc_optimizer_step_scheduled(segc_optimizer *o, const segc_schedule *s, int64_t iter);

/* L2 norm over the gradients of all trainable tensors (f64 accumulation). */
double segc_grad_norm(const segc_params *p);
/* Multiply the gradients of all trainable tensors by factor, e.g. 1/k after
 * accumulating k micro-batches (gradients accumulate until zero_grad). */
void segc_optimizer_scale_grads(segc_params *p, float factor);

/* State for exact resume: tensors "<prefix>exp_avg.<name>",
 * "<prefix>exp_avg_sq.<name>" (AdamW) or "<prefix>momentum_buffer.<name>"
 * (SGD with momentum) for each trainable tensor, and metadata
 * "<prefix>optimizer" = JSON of the kind, step count, hyper-parameters and
 * per-tensor multipliers. Loading restores all of them (as torch's
 * load_state_dict does) and fails, changing nothing, when the file holds
 * another optimizer kind or another parameter set (the message names the
 * first mismatching tensor). */
void segc_optimizer_save(const segc_optimizer *o, segc_st_writer *w, const char *prefix);
bool segc_optimizer_load(segc_optimizer *o, const segc_st_file *f, const char *prefix, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
