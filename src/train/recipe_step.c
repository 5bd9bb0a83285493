/* One training iteration's forward and backward with the recipes of
 * segc/recipes.h: MixUp on the batch, gradient accumulation over micro-batches
 * (fixed N or sized to a memory budget), SAM's second pass, and the EMA kept
 * beside the weights. */
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#include <unistd.h>

#include "segc/ops.h"
#include "segc/ops_elementwise.h"
#include "segc/dist.h"
#include "segc/recipes.h"

struct segc_recipe {
    segc_model *m;
    uint64_t seed;
    double alpha;                  /* MixUp (0: off) */
    bool has_ema, ema_in;
    segc_ema ema;
    bool has_sam;
    segc_sam sam;
    int accum;                     /* micro-batches per step (0: auto) */
    int micro;                     /* auto: micro-batch size in use (0: not measured yet) */
    bool settled;                  /* auto: a step ran within the budget */
    int oom_retries;               /* auto: passes cut short by a failed step-memory allocation */
    int64_t limit;                 /* auto: bytes */
    int64_t state_bytes;           /* auto: parameters, gradients, optimizer / EMA / SAM state */
    float *mix_img, *backup;
    size_t mix_img_cap;
    unsigned char *mix_lab;
    size_t mix_lab_cap;
    int *perm;
    int perm_cap;
    bool overlap;                  /* dist.overlap: the last micro-batch's backward all-reduces as it goes */
    char desc[256];
};

static double scalar_of(const segc_tensor *t) {
    return t->dtype == SEGC_BF16 ? segc_bf16_to_f32(segc_bf16p(t)[0]) : segc_f32(t)[0];
}

static int64_t machine_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (int64_t)pages * size : (int64_t)1 << 40;
}


segc_recipe *segc_recipe_new(const segc_config *c, segc_model *m, char *err, size_t n) {
    if (c->in_epochs) { segc_errorf(err, n, "recipe: durations in epochs are not resolved yet"); return NULL; }
    if (!segc_config_check_recipe(c, err, n)) return NULL;
    if (c->recipe.mixup.alpha > 0 && m->family->task == SEGC_TASK_DETECTION) {
        segc_errorf(err, n, "recipe.mixup.alpha: MixUp mixes label maps, and model.type %s is a detection family "
                    "(set recipe.mixup.alpha=0)", m->family->type);
        return NULL;
    }
    segc_recipe *r = calloc(1, sizeof *r);
    if (!r) { segc_errorf(err, n, "recipe: out of memory"); return NULL; }
    r->m = m;
    r->seed = (uint64_t)c->train.seed;
    r->alpha = c->recipe.mixup.alpha;
    r->overlap = c->dist.overlap;
    segc_recipe_grad_accum(c, &r->accum);
    r->limit = machine_bytes();
    if (*c->train.memory_limit) segc_parse_bytes(c->train.memory_limit, &r->limit);
    /* the budget is accounted, not sampled from the process (so the choice, and with it the
     * rounding of the summed gradients, is the same in every run): f32 weights and gradients,
     * the optimizer's moments, the EMA and SAM copies, then the batch and the step arena */
    int copies = 2 + (c->recipe.ema.half_life > 0) + (c->recipe.sam.rho > 0) +
                 (!strcmp(c->optimizer.type, "adamw") ? 2 : c->optimizer.momentum > 0 ? 1 : 0);
    r->state_bytes = (int64_t)m->params.total * 4 * copies;
    bool ok = true;
    if (c->recipe.ema.half_life > 0) {
        ok = segc_ema_init(&r->ema, &m->params, c->recipe.ema.half_life, c->recipe.ema.update_interval, err, n);
        r->has_ema = ok;
    }
    if (ok && c->recipe.sam.rho > 0) {
        ok = segc_sam_init(&r->sam, &m->params, c->recipe.sam.rho, c->recipe.sam.epsilon, c->recipe.sam.interval, err, n);
        r->has_sam = ok;
    }
    if (!ok) { segc_recipe_free(r); return NULL; }
    size_t k = 0;
    if (r->has_ema)
        k += (size_t)snprintf(r->desc + k, sizeof r->desc - k, "EMA (half-life %lld it, every %lld, smoothing %.6g) ",
                              (long long)c->recipe.ema.half_life, (long long)r->ema.interval, r->ema.smoothing);
    if (r->has_sam && k < sizeof r->desc)
        k += (size_t)snprintf(r->desc + k, sizeof r->desc - k, "SAM (rho %g, every %lld) ", r->sam.rho,
                              (long long)r->sam.interval);
    if (r->alpha > 0 && k < sizeof r->desc) k += (size_t)snprintf(r->desc + k, sizeof r->desc - k, "MixUp (alpha %g) ", r->alpha);
    if (r->accum != 1 && k < sizeof r->desc)
        k += (size_t)snprintf(r->desc + k, sizeof r->desc - k, "grad_accum %s ", c->recipe.grad_accum);
    if (k && k < sizeof r->desc) r->desc[k - 1] = 0;
    return r;
}

void segc_recipe_free(segc_recipe *r) {
    if (!r) return;
    segc_ema_free(&r->ema);
    segc_sam_free(&r->sam);
    free(r->mix_img);
    free(r->mix_lab);
    free(r->perm);
    free(r->backup);
    free(r);
}

const char *segc_recipe_describe(const segc_recipe *r) { return r ? r->desc : ""; }
bool segc_recipe_has_ema(const segc_recipe *r) { return r && r->has_ema; }
int segc_recipe_oom_retries(const segc_recipe *r) { return r ? r->oom_retries : 0; }

int segc_recipe_micro_batch(const segc_recipe *r) { return r ? r->micro : 0; }

static bool grow(void **p, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    void *np = realloc(*p, need);
    if (!np) return false;
    *p = np;
    *cap = need;
    return true;
}

/* the batch as the passes see it (MixUp applied) */
typedef struct view {
    int n, c, h, w, lh, lw;
    segc_dtype ldt;
    float *img;
    void *lab, *lab_perm;   /* lab_perm: MixUp's permuted labels (NULL: off) */
    float mix;
    const segc_batch *b;    /* detection targets */
} view;

/* forward + backward over [s, s + k) with the loss weighted k / n; *peak: the step arena's peak */
static bool micro_pass(segc_recipe *r, segc_ctx *ctx, const view *v, segc_dtype dt, int s, int k, double *loss,
                       size_t *peak, bool sync) {
    segc_ctx_step_begin(ctx);
    segc_clear_error(ctx);
    ctx->free_activations = true;   /* nothing below reads an activation after backward */
    size_t hw0 = ctx->arena.high_water;
    ctx->arena.high_water = 0;
    int64_t per = (int64_t)v->c * v->h * v->w;
    size_t lbytes = (size_t)v->lh * v->lw * segc_dtype_size(v->ldt);
    segc_tensor *img = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){k, v->c, v->h, v->w}, v->img + (int64_t)s * per);
    if (dt == SEGC_BF16) img = segc_cast(ctx, img, SEGC_BF16);
    segc_tensor *lab = v->lh ? segc_tensor_wrap(ctx, v->ldt, 3, (int64_t[]){k, v->lh, v->lw},
                                                (char *)v->lab + (size_t)s * lbytes) : NULL;
    segc_model_out out;
    segc_targets tg = {.labels = lab, .ignore_index = SEGC_IGNORE_INDEX};
    const segc_batch *b = v->b;
    if (b->n_boxes) {   /* detection: the micro-batch's ground truth */
        tg.n_images = k;
        tg.n_boxes = b->n_boxes + s;
        tg.boxes = b->boxes + s;
        tg.box_labels = b->box_labels + s;
        tg.box_crowd = b->box_crowd ? b->box_crowd + s : NULL;
        tg.img_h = v->h;
        tg.img_w = v->w;
    }
    segc_tensor *l = segc_model_forward(ctx, r->m, img, &out) ? segc_model_loss(ctx, r->m, &out, &tg) : NULL;
    if (l && v->lab_perm) {
        segc_targets tp = tg;
        tp.labels = segc_tensor_wrap(ctx, v->ldt, 3, (int64_t[]){k, v->lh, v->lw}, (char *)v->lab_perm + (size_t)s * lbytes);
        l = segc_mixup_loss(ctx, l, segc_model_loss(ctx, r->m, &out, &tp), v->mix);
    }
    bool ok = l != NULL;
    if (ok) {
        *loss += scalar_of(l) * ((double)k / v->n);
        if (k != v->n) l = segc_mul_scalar(ctx, l, (float)k / (float)v->n);
        if (l && sync) segc_dist_grads_begin(ctx, &r->m->params);   /* buckets all-reduced during backward */
        ok = l && segc_backward(ctx, l);
        if (ok && sync) segc_dist_grads_finish(ctx, &r->m->params);
    }
    *peak = ctx->arena.high_water;
    if (ctx->arena.high_water < hw0) ctx->arena.high_water = hw0;
    return ok;
}

/* the whole batch in micro-batches of mb; *peak: the largest micro-batch peak */
static bool pass(segc_recipe *r, segc_ctx *ctx, const view *v, segc_dtype dt, int mb, double *loss, size_t *peak,
                 bool sync, char *err, size_t n) {
    *loss = 0;
    *peak = 0;
    for (int s = 0; s < v->n; s += mb) {
        size_t pk;
        int k = v->n - s < mb ? v->n - s : mb;
        if (!micro_pass(r, ctx, v, dt, s, k, loss, &pk, sync && s + k == v->n))
            return segc_errorf(err, n, "%s", segc_last_error(ctx));
        if (pk > *peak) *peak = pk;
    }
    return true;
}

static const char *fmt_bytes(int64_t b, char *buf, size_t n) {
    if (b >= (int64_t)1 << 30) snprintf(buf, n, "%.2f GiB", b / 1073741824.0);
    else if (b >= (int64_t)1 << 20) snprintf(buf, n, "%.1f MiB", b / 1048576.0);
    else snprintf(buf, n, "%.1f KiB", b / 1024.0);
    return buf;
}

static int largest_divisor_at_most(int n, int cap) {
    for (int d = cap < n ? cap : n; d > 1; d--)
        if (n % d == 0) return d;
    return 1;
}

/* A probing pass whose step memory is capped (ctx->arena.limit): 1 done, 0 error (err set),
 * -1 the arena could not grow (ctx->arena.failed_need says by how much). A pass cut short leaves
 * partial gradients, running statistics and RNG draws, which the caller undoes. */
static int capped_pass(segc_recipe *r, segc_ctx *ctx, const view *v, segc_dtype dt, int mb, bool one_sample,
                       double *loss, size_t *peak, char *err, size_t n) {
    jmp_buf jb;
    ctx->arena.oom_jmp = &jb;
    if (setjmp(jb)) {
        ctx->arena.oom_jmp = NULL;
        segc_ctx_step_begin(ctx);   /* the tape and temporaries of the abandoned pass */
        segc_clear_error(ctx);
        return -1;
    }
    bool ok;
    if (one_sample) {
        view one = *v;
        *loss = 0;
        ok = micro_pass(r, ctx, &one, dt, 0, 1, loss, peak, false);
        if (!ok) segc_errorf(err, n, "%s", segc_last_error(ctx));
    } else {
        ok = pass(r, ctx, v, dt, mb, loss, peak, false, err, n);
    }
    ctx->arena.oom_jmp = NULL;
    return ok ? 1 : 0;
}

/* grad_accum auto: measure one sample, pick the largest divisor of the batch whose estimated
 * peak fits, and step down while a step does not: over budget when measured, or cut short when
 * its step memory could not grow (the arena is capped at the budget while probing, and a
 * failed allocation lands here too) */
static bool auto_step(segc_recipe *r, segc_ctx *ctx, const view *v, segc_dtype dt, double *loss, char *err, size_t n) {
    segc_params *p = &r->m->params;
    /* the batch (and MixUp's mixed copy) beside the accounted state */
    int64_t batch = (int64_t)v->n * ((int64_t)v->c * v->h * v->w * 4 + (int64_t)v->lh * v->lw * (int64_t)segc_dtype_size(v->ldt));
    int64_t fixed = r->state_bytes + batch * (v->lab_perm ? 2 : 1);
    size_t peak;
    if (r->settled && r->micro > 0) return pass(r, ctx, v, dt, r->micro, loss, &peak, false, err, n);
    /* probing: keep what a retried step must undo (RNG, weights and buffers) */
    if (!r->backup && !(r->backup = malloc((size_t)(p->total ? p->total : 1) * sizeof(float))))
        return segc_errorf(err, n, "recipe.grad_accum auto: out of memory");
    memcpy(r->backup, p->data, (size_t)p->total * sizeof(float));
    segc_rng rng0 = ctx->rng;
    char a[32], b[32], c[32], d[32];
    ctx->arena.limit = r->limit > fixed ? (size_t)(r->limit - fixed) : 1;
    if (!r->micro) {
        double l1 = 0;
        int rc = capped_pass(r, ctx, v, dt, 1, true, &l1, &peak, err, n);
        if (rc == 0) return ctx->arena.limit = 0, false;
        if (rc < 0 || fixed + (int64_t)peak > r->limit) {
            ctx->arena.limit = 0;
            if (rc < 0)
                return segc_errorf(err, n, "recipe.grad_accum auto: one sample of %dx%d does not fit: its step memory "
                                   "could not grow past %s (train.memory_limit %s, of which %s weights, gradients, "
                                   "optimizer/EMA/SAM state and the batch)", v->w, v->h,
                                   fmt_bytes((int64_t)ctx->arena.cap_total, d, sizeof d), fmt_bytes(r->limit, a, sizeof a),
                                   fmt_bytes(fixed, c, sizeof c));
            return segc_errorf(err, n, "train.memory_limit: %s is below what one sample needs: %s (%s weights, gradients, "
                               "optimizer/EMA/SAM state and the batch + %s step memory for one sample of %dx%d)", fmt_bytes(r->limit, a, sizeof a),
                               fmt_bytes(fixed + (int64_t)peak, b, sizeof b), fmt_bytes(fixed, c, sizeof c),
                               fmt_bytes((int64_t)peak, d, sizeof d), v->w, v->h);
        }
        int64_t fit = (r->limit - fixed) / (int64_t)(peak ? peak : 1);
        r->micro = largest_divisor_at_most(v->n, fit > v->n ? v->n : (int)(fit < 1 ? 1 : fit));
        memcpy(p->data, r->backup, (size_t)p->total * sizeof(float));
        segc_params_zero_grad(p);
        ctx->rng = rng0;
    }
    for (;;) {
        int rc = capped_pass(r, ctx, v, dt, r->micro, false, loss, &peak, err, n);
        if (rc == 0) return ctx->arena.limit = 0, false;
        if (rc > 0 && (fixed + (int64_t)peak <= r->limit || r->micro == 1)) break;
        if (rc < 0 && r->micro == 1) {
            ctx->arena.limit = 0;
            return segc_errorf(err, n, "recipe.grad_accum auto: a micro-batch of one sample ran out of step memory "
                               "(it could not grow by %s past %s; train.memory_limit %s)",
                               fmt_bytes((int64_t)ctx->arena.failed_need, a, sizeof a),
                               fmt_bytes((int64_t)ctx->arena.cap_total, b, sizeof b), fmt_bytes(r->limit, c, sizeof c));
        }
        /* over budget or out of step memory: undo and retry smaller */
        r->oom_retries += rc < 0;
        memcpy(p->data, r->backup, (size_t)p->total * sizeof(float));
        segc_params_zero_grad(p);
        ctx->rng = rng0;
        r->micro = largest_divisor_at_most(v->n, r->micro - 1 > r->micro / 2 ? r->micro / 2 : r->micro - 1);
    }
    ctx->arena.limit = 0;
    r->settled = true;
    free(r->backup);
    r->backup = NULL;
    return true;
}

/* The batch's gradient in params.grad, averaged over every rank's batch
 * (segc/dist.h; a no-op in one process): during the last micro-batch's
 * backward with dist.overlap, after the pass otherwise (and always for
 * grad_accum auto, whose probing passes may be undone). */
static bool forward_backward(segc_recipe *r, segc_ctx *ctx, const view *v, segc_dtype dt, double *loss, char *err,
                             size_t n) {
    segc_params *p = &r->m->params;
    segc_params_zero_grad(p);
    if (r->accum == 0) {
        if (!auto_step(r, ctx, v, dt, loss, err, n)) return false;
        segc_dist_allreduce_mean_f32(p->grad, p->total);
        return true;
    }
    if (v->n % r->accum)
        return segc_errorf(err, n, "recipe.grad_accum: %d micro-batches do not divide a batch of %d", r->accum, v->n);
    size_t peak;
    r->micro = v->n / r->accum;
    if (!pass(r, ctx, v, dt, r->micro, loss, &peak, r->overlap, err, n)) return false;
    if (!r->overlap) segc_dist_allreduce_mean_f32(p->grad, p->total);
    return true;
}

bool segc_recipe_step(segc_recipe *r, segc_ctx *ctx, const segc_batch *b, segc_dtype dt, int64_t iter, double *loss,
                      char *err, size_t n) {
    view v = {b->n, b->c, b->h, b->w, b->label_h, b->label_w, b->label_dtype, b->images, b->labels, NULL, 0, b};
    if (!b->labels) v.lh = v.lw = 0;
    if (r->alpha > 0 && v.lh) {
        int64_t per = (int64_t)v.c * v.h * v.w;
        size_t lbytes = (size_t)v.lh * v.lw * segc_dtype_size(v.ldt);
        if (!grow((void **)&r->mix_img, &r->mix_img_cap, (size_t)(v.n * per) * sizeof(float)) ||
            !grow((void **)&r->mix_lab, &r->mix_lab_cap, (size_t)v.n * lbytes) ||
            (r->perm_cap < v.n && !(r->perm = realloc(r->perm, (size_t)v.n * sizeof *r->perm))))
            return segc_errorf(err, n, "recipe.mixup: out of memory for a batch of %d", v.n);
        if (r->perm_cap < v.n) r->perm_cap = v.n;
        v.mix = (float)segc_mixup_draw(r->seed, iter, r->alpha, v.n, r->perm);
        segc_mixup_images(b->images, r->mix_img, v.n, per, r->perm, v.mix);
        segc_mixup_permute(b->labels, r->mix_lab, v.n, lbytes, r->perm);
        v.img = r->mix_img;
        v.lab_perm = r->mix_lab;
    }
    if (!forward_backward(r, ctx, &v, dt, loss, err, n)) return false;
    if (r->has_sam && segc_sam_due(&r->sam, iter)) {
        double second;
        segc_sam_perturb(&r->sam, &r->m->params);
        bool ok = forward_backward(r, ctx, &v, dt, &second, err, n);
        segc_sam_restore(&r->sam, &r->m->params);
        if (!ok) return false;
    }
    return true;
}

void segc_recipe_after_step(segc_recipe *r, int64_t iters) {
    if (r && r->has_ema) segc_ema_update(&r->ema, &r->m->params, iters);
}

void segc_recipe_use_ema(segc_recipe *r, bool on) {
    if (!r || !r->has_ema || r->ema_in == on) return;
    segc_ema_swap(&r->ema, &r->m->params);
    r->ema_in = on;
}

static void extra_save(void *user, segc_st_writer *w) {
    segc_recipe *r = user;
    if (r->has_ema) segc_ema_save(&r->ema, &r->m->params, w, "ema.");
    /* grad_accum auto: the micro-batch found, so a resumed run sums the same chunks (bitwise) */
    if (r->accum == 0 && r->settled) {
        char js[64];
        snprintf(js, sizeof js, "{\"micro_batch\":%d}", r->micro);
        segc_st_writer_meta(w, "segc_recipe", js);
    }
}

static bool extra_load(void *user, const segc_st_file *f, char *err, size_t n) {
    segc_recipe *r = user;
    const char *js = segc_st_meta(f, "segc_recipe");
    int micro = 0;
    if (r->accum == 0 && js && sscanf(js, "{\"micro_batch\":%d}", &micro) == 1 && micro > 0) {
        r->micro = micro;
        r->settled = true;
    }
    if (!r->has_ema) return true;
    bool found;
    if (!segc_ema_load(&r->ema, &r->m->params, f, "ema.", &found, err, n)) return false;
    /* EMA switched on for a run that had none: it starts from the loaded weights */
    if (!found) memcpy(r->ema.w, r->m->params.data, (size_t)r->ema.total * sizeof(float));
    return true;
}

segc_ckpt_extra segc_recipe_ckpt_extra(segc_recipe *r) {
    segc_ckpt_extra x = {NULL, NULL, NULL};
    if (r) x = (segc_ckpt_extra){extra_save, extra_load, r};
    return x;
}
