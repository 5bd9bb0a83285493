/* SGD and AdamW over the flat parameter buffer, mmengine parameter groups,
 * gradient clipping and optimizer state (de)serialisation.
 *
 * The arithmetic mirrors torch.optim's single-tensor f32 code path operation
 * by operation (same scalar roundings, same association), so results agree
 * with PyTorch to float rounding. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <immintrin.h>

#include "segc/cpu.h"
#include "segc/optim.h"

#define OPT_BLOCK 8192   /* elements per work block: 32 KiB of each stream */

struct segc_opt_block {
    int tensor;
    int64_t begin, len;   /* flat offset into data/grad/state, element count */
};

/* ---------------------------------------------------------------------------
 * Parameter groups
 * --------------------------------------------------------------------------- */
static const char *const default_norm_keys[] = {"norm", "bn", "ln", "gn", NULL};

/* key at the start of the module name or right after an '_' */
static bool module_matches(const char *mod, size_t len, const char *key) {
    size_t kl = strlen(key);
    if (kl == 0 || kl > len) return false;
    for (size_t i = 0; i + kl <= len; i++)
        if ((i == 0 || mod[i - 1] == '_') && memcmp(mod + i, key, kl) == 0) return true;
    return false;
}

bool segc_param_is_norm(const segc_paramwise_cfg *cfg, const char *name) {
    if (!name) return false;
    if (cfg && cfg->is_norm) return cfg->is_norm(name, cfg->is_norm_user);
    const char *last = strrchr(name, '.');
    if (!last) return false;   /* a parameter of the root module has no module name */
    const char *mod = last;
    while (mod > name && mod[-1] != '.') mod--;
    const char *const *keys = cfg && cfg->norm_keys ? cfg->norm_keys : default_norm_keys;
    for (; *keys; keys++)
        if (module_matches(mod, (size_t)(last - mod), *keys)) return true;
    return false;
}

static bool is_bias(const char *name) {
    size_t n = strlen(name);
    return strcmp(name, "bias") == 0 || (n > 5 && strcmp(name + n - 5, ".bias") == 0);
}

static bool mult_ok(segc_mult m) { return !m.set || (isfinite(m.value) && m.value >= 0); }

/* mmengine: sorted(sorted(keys), key=len, reverse=True) - longest first, ties alphabetical */
static bool key_before(const segc_custom_key *a, const segc_custom_key *b) {
    size_t la = strlen(a->key), lb = strlen(b->key);
    return la != lb ? la > lb : strcmp(a->key, b->key) < 0;
}

bool segc_param_groups(const segc_params *p, const segc_paramwise_cfg *cfg, double *lr_mult, double *decay_mult,
                       char *err, size_t errlen) {
    static const segc_paramwise_cfg none;
    if (!cfg) cfg = &none;
    int nk = cfg->n_custom_keys;
    if (nk < 0 || (nk > 0 && !cfg->custom_keys))
        return segc_errorf(err, errlen, "param_groups: %d custom keys with %s array", nk, cfg->custom_keys ? "an" : "a NULL");
    for (int k = 0; k < nk; k++) {
        const segc_custom_key *ck = &cfg->custom_keys[k];
        if (!ck->key || !ck->key[0]) return segc_errorf(err, errlen, "param_groups: custom key %d is empty", k);
        if (!mult_ok(ck->lr_mult) || !mult_ok(ck->decay_mult))
            return segc_errorf(err, errlen, "param_groups: custom key '%s': multipliers expected finite >= 0, found "
                               "lr_mult %g decay_mult %g", ck->key, ck->lr_mult.value, ck->decay_mult.value);
        for (int j = 0; j < k; j++)
            if (strcmp(cfg->custom_keys[j].key, ck->key) == 0)
                return segc_errorf(err, errlen, "param_groups: custom key '%s' given twice", ck->key);
    }
    const struct { const char *name; segc_mult m; } rules[] = {
        {"bias_lr_mult", cfg->bias_lr_mult}, {"bias_decay_mult", cfg->bias_decay_mult},
        {"norm_decay_mult", cfg->norm_decay_mult}, {"flat_decay_mult", cfg->flat_decay_mult}};
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++)
        if (!mult_ok(rules[r].m))
            return segc_errorf(err, errlen, "param_groups: %s expected finite >= 0, found %g", rules[r].name, rules[r].m.value);

    int *order = malloc((size_t)(nk ? nk : 1) * sizeof *order);
    for (int k = 0; k < nk; k++) {
        int j = k;
        while (j > 0 && key_before(&cfg->custom_keys[k], &cfg->custom_keys[order[j - 1]])) { order[j] = order[j - 1]; j--; }
        order[j] = k;
    }
    for (int i = 0; i < p->n; i++) {
        double lr = 1.0, dec = 1.0;
        const char *name = p->t[i]->name;
        bool custom = false;
        for (int k = 0; p->trainable[i] && k < nk && !custom; k++) {
            const segc_custom_key *ck = &cfg->custom_keys[order[k]];
            if (!strstr(name, ck->key)) continue;
            custom = true;
            if (ck->lr_mult.set) lr = ck->lr_mult.value;
            if (ck->decay_mult.set) dec = ck->decay_mult.value;
        }
        if (p->trainable[i] && !custom) {
            bool bias = is_bias(name), norm = segc_param_is_norm(cfg, name);
            if (bias && !norm && cfg->bias_lr_mult.set) lr = cfg->bias_lr_mult.value;
            if (norm && cfg->norm_decay_mult.set) dec = cfg->norm_decay_mult.value;
            else if (bias && cfg->bias_decay_mult.set) dec = cfg->bias_decay_mult.value;
            else if (p->t[i]->ndim == 1 && cfg->flat_decay_mult.set) dec = cfg->flat_decay_mult.value;
        }
        lr_mult[i] = lr;
        decay_mult[i] = dec;
    }
    free(order);
    return true;
}

/* ---------------------------------------------------------------------------
 * Configuration and creation
 * --------------------------------------------------------------------------- */
segc_optim_cfg segc_optim_defaults(segc_opt_kind kind, double lr) {
    segc_optim_cfg c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = lr;
    if (kind == SEGC_OPT_ADAMW) {
        c.beta1 = 0.9;
        c.beta2 = 0.999;
        c.eps = 1e-8;
        c.weight_decay = 1e-2;
    }
    return c;
}

static const char *opt_kind_name(segc_opt_kind k) {
    return k == SEGC_OPT_SGD ? "sgd" : k == SEGC_OPT_ADAMW ? "adamw" : k == SEGC_OPT_DECOUPLED_SGDW ? "decoupled_sgdw" : "?";
}

static bool nonneg(double x) { return isfinite(x) && x >= 0; }

static bool check_cfg(const segc_optim_cfg *c, const char *op, char *err, size_t errlen) {
    if (c->kind != SEGC_OPT_SGD && c->kind != SEGC_OPT_ADAMW && c->kind != SEGC_OPT_DECOUPLED_SGDW)
        return segc_errorf(err, errlen, "%s: unknown optimizer kind %d", op, (int)c->kind);
    const char *k = opt_kind_name(c->kind);
    if (!nonneg(c->lr)) return segc_errorf(err, errlen, "%s (%s): lr expected finite >= 0, found %g", op, k, c->lr);
    if (!nonneg(c->weight_decay))
        return segc_errorf(err, errlen, "%s (%s): weight_decay expected finite >= 0, found %g", op, k, c->weight_decay);
    if (!nonneg(c->max_grad_norm))
        return segc_errorf(err, errlen, "%s (%s): max_grad_norm expected finite >= 0 (0: no clipping), found %g", op, k,
                           c->max_grad_norm);
    if (c->kind != SEGC_OPT_ADAMW) {
        if (!nonneg(c->momentum)) return segc_errorf(err, errlen, "%s (%s): momentum expected finite >= 0, found %g", op, k, c->momentum);
        if (!(c->dampening >= 0 && c->dampening <= 1))
            return segc_errorf(err, errlen, "%s (%s): dampening expected in [0, 1], found %g", op, k, c->dampening);
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return segc_errorf(err, errlen, "%s (%s): nesterov expects momentum > 0 and dampening 0, found momentum %g "
                               "dampening %g", op, k, c->momentum, c->dampening);
    } else {
        if (!(c->beta1 >= 0 && c->beta1 < 1)) return segc_errorf(err, errlen, "%s (adamw): beta1 expected in [0, 1), found %g", op, c->beta1);
        if (!(c->beta2 >= 0 && c->beta2 < 1)) return segc_errorf(err, errlen, "%s (adamw): beta2 expected in [0, 1), found %g", op, c->beta2);
        if (!nonneg(c->eps)) return segc_errorf(err, errlen, "%s (adamw): eps expected finite >= 0, found %g", op, c->eps);
    }
    return true;
}

static float *alloc_state(const segc_params *p) {
    size_t bytes = (size_t)(p->total ? p->total : 16) * sizeof(float);   /* total is a multiple of 16 */
    float *s = aligned_alloc(SEGC_ALIGN, bytes);
    if (s) memset(s, 0, bytes);
    return s;
}

/* blocks of at most OPT_BLOCK elements covering every trainable tensor */
static segc_opt_block *build_blocks(const segc_params *p, int *n_out) {
    int n = 0;
    for (int i = 0; i < p->n; i++)
        if (p->trainable[i]) n += (int)((segc_numel(p->t[i]) + OPT_BLOCK - 1) / OPT_BLOCK);
    segc_opt_block *b = malloc((size_t)(n ? n : 1) * sizeof *b);
    int k = 0;
    for (int i = 0; b && i < p->n; i++) {
        if (!p->trainable[i]) continue;
        int64_t numel = segc_numel(p->t[i]);
        for (int64_t s = 0; s < numel; s += OPT_BLOCK)
            b[k++] = (segc_opt_block){i, p->offset[i] + s, numel - s < OPT_BLOCK ? numel - s : OPT_BLOCK};
    }
    *n_out = n;
    return b;
}

segc_optimizer *segc_optimizer_new(segc_params *p, const segc_optim_cfg *cfg, char *err, size_t errlen) {
    if (!p || !cfg) { segc_errorf(err, errlen, "optimizer: NULL %s", p ? "config" : "params"); return NULL; }
    if (!p->finalized) { segc_errorf(err, errlen, "optimizer: params must be finalized first"); return NULL; }
    if (!check_cfg(cfg, "optimizer", err, errlen)) return NULL;
    segc_optimizer *o = calloc(1, sizeof *o);
    o->hp = *cfg;
    memset(&o->hp.paramwise, 0, sizeof o->hp.paramwise);   /* pointers are not kept */
    o->p = p;
    o->last_grad_norm = -1;
    int n = p->n ? p->n : 1;
    o->lr_mult = malloc((size_t)n * sizeof *o->lr_mult);
    o->decay_mult = malloc((size_t)n * sizeof *o->decay_mult);
    o->tensor_coef = malloc((size_t)n * 2 * sizeof *o->tensor_coef);
    o->tensor_lr = malloc((size_t)n * sizeof *o->tensor_lr);
    o->blocks = build_blocks(p, &o->n_blocks);
    o->block_sums = malloc((size_t)(o->n_blocks ? o->n_blocks : 1) * sizeof *o->block_sums);
    bool need_m = cfg->kind == SEGC_OPT_ADAMW || cfg->momentum > 0;
    if (need_m) o->exp_avg = alloc_state(p);
    if (cfg->kind == SEGC_OPT_ADAMW) o->exp_avg_sq = alloc_state(p);
    if (!o->lr_mult || !o->decay_mult || !o->tensor_coef || !o->tensor_lr || !o->blocks || !o->block_sums || (need_m && !o->exp_avg) ||
        (cfg->kind == SEGC_OPT_ADAMW && !o->exp_avg_sq)) {
        segc_errorf(err, errlen, "optimizer: out of memory for %lld parameters", (long long)p->total);
        segc_optimizer_free(o);
        return NULL;
    }
    if (!segc_param_groups(p, &cfg->paramwise, o->lr_mult, o->decay_mult, err, errlen)) {
        segc_optimizer_free(o);
        return NULL;
    }
    return o;
}

void segc_optimizer_free(segc_optimizer *o) {
    if (!o) return;
    free(o->lr_mult);
    free(o->decay_mult);
    free(o->tensor_coef);
    free(o->tensor_lr);
    free(o->blocks);
    free(o->block_sums);
    free(o->exp_avg);
    free(o->exp_avg_sq);
    free(o);
}

/* ---------------------------------------------------------------------------
 * Gradient norm and scaling
 * --------------------------------------------------------------------------- */
/* f64 sum of squares in 8 independent lanes (vectorisable), combined in a fixed order */
static double sum_squares(const float *g, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += (double)g[i + j] * (double)g[i + j];
    for (int j = 0; i < n; i++, j++) acc[j] += (double)g[i] * (double)g[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static double blocks_norm(const float *grad, const segc_opt_block *b, int n, double *sums) {
#pragma omp parallel for schedule(static)
    for (int k = 0; k < n; k++) sums[k] = sum_squares(grad + b[k].begin, b[k].len);
    double total = 0;
    for (int k = 0; k < n; k++) total += sums[k];
    return sqrt(total);
}

double segc_grad_norm(const segc_params *p) {
    if (!p || !p->finalized) return NAN;
    int n;
    segc_opt_block *b = build_blocks(p, &n);
    double *sums = malloc((size_t)(n ? n : 1) * sizeof *sums);
    double r = (b && sums) ? blocks_norm(p->grad, b, n, sums) : NAN;
    free(b);
    free(sums);
    return r;
}

void segc_optimizer_scale_grads(segc_params *p, float factor) {
    if (!p || !p->grad) return;
    float *g = p->grad;
    int64_t n = p->total;
    /* the whole flat buffer: non-trainable gradients are unused, padding is zero */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) g[i] *= factor;
}

/* ---------------------------------------------------------------------------
 * The fused update
 * --------------------------------------------------------------------------- */
typedef struct {
    float clip;                 /* clip_grad_norm_ coefficient (1 when off) */
    /* AdamW */
    bool lerp_small;            /* torch lerp: weight < 0.5 uses start + w*(end-start) */
    float lerp_w, beta2, one_minus_beta2, bc2_sqrt, eps;
    /* SGD */
    bool first, nesterov, has_buf, has_wd, decoupled;
    float momentum, one_minus_damp;
} step_consts;

/* coef = {1 - lr*wd, -lr/bias_correction1} as torch.optim.AdamW. One kernel
 * per ISA level (segc/cpu.h), chosen at run time. The vector kernels exist
 * because sqrtf's errno semantics keep GCC from vectorising the scalar loop;
 * all evaluate the same operations in the same order (no FMA contraction:
 * -std=c11 turns it off for the scalar code, the intrinsics never fuse), so
 * every level agrees bitwise with the scalar one and with each other. */
static void adamw_scalar(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                         const float *coef, const step_consts *c) {
    const float clip = c->clip, decay = coef[0], neg_step = coef[1];
    const float lw = c->lerp_small ? c->lerp_w : c->lerp_w - 1.0f;
    const float b2 = c->beta2, omb2 = c->one_minus_beta2, bc2s = c->bc2_sqrt, eps = c->eps;
    const bool small = c->lerp_small;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * clip, mo = m[i];
        float mi = (small ? mo : gi) + lw * (gi - mo);
        float vi = v[i] * b2 + omb2 * gi * gi;
        float den = sqrtf(vi) / bc2s + eps;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay + neg_step * mi / den;
    }
}

#ifdef __AVX2__
/* the baseline's kernel: 8 lanes, the scalar loop for the tail */
static void adamw_avx2(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                       const float *coef, const step_consts *c) {
    const __m256 clip = _mm256_set1_ps(c->clip), decay = _mm256_set1_ps(coef[0]), neg_step = _mm256_set1_ps(coef[1]);
    const __m256 lw = _mm256_set1_ps(c->lerp_small ? c->lerp_w : c->lerp_w - 1.0f);
    const __m256 b2 = _mm256_set1_ps(c->beta2), omb2 = _mm256_set1_ps(c->one_minus_beta2);
    const __m256 bc2s = _mm256_set1_ps(c->bc2_sqrt), eps = _mm256_set1_ps(c->eps);
    const bool small = c->lerp_small;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), clip);
        __m256 mo = _mm256_loadu_ps(m + i), vo = _mm256_loadu_ps(v + i), wo = _mm256_loadu_ps(w + i);
        __m256 mi = _mm256_add_ps(small ? mo : gi, _mm256_mul_ps(lw, _mm256_sub_ps(gi, mo)));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(vo, b2), _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2s), eps);
        __m256 wn = _mm256_add_ps(_mm256_mul_ps(wo, decay), _mm256_div_ps(_mm256_mul_ps(neg_step, mi), den));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(w + i, wn);
    }
    if (i < n) adamw_scalar(w + i, g + i, m + i, v + i, n - i, coef, c);
}
#else
#define adamw_avx2 adamw_scalar   /* a build below x86-64-v3 */
#endif

SEGC_TARGET_AVX512 static void adamw_avx512(float *restrict w, const float *restrict g, float *restrict m,
                                            float *restrict v, int64_t n, const float *coef, const step_consts *c) {
    const __m512 clip = _mm512_set1_ps(c->clip), decay = _mm512_set1_ps(coef[0]), neg_step = _mm512_set1_ps(coef[1]);
    const __m512 lw = _mm512_set1_ps(c->lerp_small ? c->lerp_w : c->lerp_w - 1.0f);
    const __m512 b2 = _mm512_set1_ps(c->beta2), omb2 = _mm512_set1_ps(c->one_minus_beta2);
    const __m512 bc2s = _mm512_set1_ps(c->bc2_sqrt), eps = _mm512_set1_ps(c->eps);
    const bool small = c->lerp_small;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, g + i), clip);
        __m512 mo = _mm512_maskz_loadu_ps(k, m + i), vo = _mm512_maskz_loadu_ps(k, v + i);
        __m512 wo = _mm512_maskz_loadu_ps(k, w + i);
        /* torch lerp: start + w*(end-start) for w < 0.5, else end + (w-1)*(end-start) */
        __m512 mi = _mm512_add_ps(small ? mo : gi, _mm512_mul_ps(lw, _mm512_sub_ps(gi, mo)));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(vo, b2), _mm512_mul_ps(_mm512_mul_ps(omb2, gi), gi));
        __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2s), eps);
        __m512 wn = _mm512_add_ps(_mm512_mul_ps(wo, decay), _mm512_div_ps(_mm512_mul_ps(neg_step, mi), den));
        _mm512_mask_storeu_ps(m + i, k, mi);
        _mm512_mask_storeu_ps(v + i, k, vi);
        _mm512_mask_storeu_ps(w + i, k, wn);
    }
}

typedef void (*adamw_fn)(float *restrict, const float *restrict, float *restrict, float *restrict, int64_t,
                         const float *, const step_consts *);
static adamw_fn adamw_kernel(void) { return segc_cpu_isa() >= SEGC_ISA_AVX512 ? adamw_avx512 : adamw_avx2; }

/* coef = {wd, -lr} as torch.optim.SGD (decay added to the gradient); decoupled
 * (DecoupledSGDW): coef[0] = 1 - (lr / initial_lr) * wd multiplies the weights
 * after the momentum update, before w += -lr * d (Composer's order) */
static void sgd_block(float *restrict w, const float *restrict g, float *restrict buf, int64_t n, const float *coef,
                      const step_consts *c) {
    const float clip = c->clip, wd = coef[0], neg_lr = coef[1], mom = c->momentum, omd = c->one_minus_damp;
    const bool use_wd = c->has_wd && wd != 0 && !c->decoupled, dec = c->decoupled && c->has_wd;
    if (!c->has_buf) {
        for (int64_t i = 0; i < n; i++) {
            float d = g[i] * clip;
            if (use_wd) d = d + wd * w[i];
            float wi = dec ? w[i] * wd : w[i];
            w[i] = wi + neg_lr * d;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] * clip;
        if (use_wd) d = d + wd * w[i];
        float b = c->first ? d : buf[i] * mom + omd * d;
        buf[i] = b;
        d = c->nesterov ? d + mom * b : b;
        float wi = dec ? w[i] * wd : w[i];
        w[i] = wi + neg_lr * d;
    }
}

static double step_impl(segc_optimizer *o, const segc_schedule *s, int64_t iter, double lr) {
    segc_params *p = o->p;
    o->err[0] = 0;
    if (s && !segc_schedule_validate(s, o->err, sizeof o->err)) return NAN;
    if (s && iter < 0) {
        segc_errorf(o->err, sizeof o->err, "optimizer_step: iteration expected >= 0, found %lld", (long long)iter);
        return NAN;
    }
    /* per-tensor learning rates first, so a bad one leaves everything untouched */
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        double lri = s ? segc_schedule_lr(s, o->hp.lr * o->lr_mult[i], iter) : lr * o->lr_mult[i];
        if (!nonneg(lri)) {
            segc_errorf(o->err, sizeof o->err, "optimizer_step: lr of '%s' expected finite >= 0, found %g", p->t[i]->name, lri);
            return NAN;
        }
        o->tensor_lr[i] = lri;
    }
    step_consts c;
    memset(&c, 0, sizeof c);
    c.clip = 1.0f;
    double norm = -1;
    if (o->hp.max_grad_norm > 0) {
        norm = blocks_norm(p->grad, o->blocks, o->n_blocks, o->block_sums);
        /* torch: clip_coef = max_norm / (total + 1e-6) in f32 (x / t is t.reciprocal() * x), clamped to 1 */
        float coef = (1.0f / ((float)norm + 1e-6f)) * (float)o->hp.max_grad_norm;
        c.clip = coef > 1.0f ? 1.0f : coef;   /* NaN propagates as in torch.clamp */
    }
    o->last_grad_norm = norm;
    o->step++;
    bool adamw = o->hp.kind == SEGC_OPT_ADAMW;
    if (adamw) {
        double bc1 = 1.0 - pow(o->hp.beta1, (double)o->step), bc2 = 1.0 - pow(o->hp.beta2, (double)o->step);
        c.lerp_w = (float)(1.0 - o->hp.beta1);
        c.lerp_small = fabsf(c.lerp_w) < 0.5f;
        c.beta2 = (float)o->hp.beta2;
        c.one_minus_beta2 = (float)(1.0 - o->hp.beta2);
        c.bc2_sqrt = (float)sqrt(bc2);
        c.eps = (float)o->hp.eps;
        for (int i = 0; i < p->n; i++) {
            if (!p->trainable[i]) continue;
            double lri = o->tensor_lr[i], wd = o->hp.weight_decay * o->decay_mult[i];
            o->tensor_coef[2 * i] = (float)(1.0 - lri * wd);
            o->tensor_coef[2 * i + 1] = (float)(-(lri / bc1));
        }
    } else {
        c.first = o->step == 1;
        c.nesterov = o->hp.nesterov;
        c.has_buf = o->hp.momentum != 0 && o->exp_avg;
        c.has_wd = o->hp.weight_decay != 0;
        c.decoupled = o->hp.kind == SEGC_OPT_DECOUPLED_SGDW;
        c.momentum = (float)o->hp.momentum;
        c.one_minus_damp = (float)(1.0 - o->hp.dampening);
        for (int i = 0; i < p->n; i++) {
            if (!p->trainable[i]) continue;
            double wd = o->hp.weight_decay * o->decay_mult[i], initial = o->hp.lr * o->lr_mult[i];
            /* Composer: decay_factor = lr / initial_lr (1 when initial_lr is 0) */
            double factor = initial != 0 ? o->tensor_lr[i] / initial : 1.0;
            o->tensor_coef[2 * i] = (float)(c.decoupled ? 1.0 - factor * wd : wd);
            o->tensor_coef[2 * i + 1] = (float)(-o->tensor_lr[i]);
        }
    }
    float *data = p->data, *grad = p->grad, *m = o->exp_avg, *v = o->exp_avg_sq;
    const segc_opt_block *blocks = o->blocks;
    const float *coef = o->tensor_coef;
    int nb = o->n_blocks;
    const adamw_fn adamw_block = adamw_kernel();
#pragma omp parallel for schedule(static)
    for (int k = 0; k < nb; k++) {
        const segc_opt_block *b = &blocks[k];
        const float *cf = coef + 2 * b->tensor;
        if (adamw) adamw_block(data + b->begin, grad + b->begin, m + b->begin, v + b->begin, b->len, cf, &c);
        else sgd_block(data + b->begin, grad + b->begin, m ? m + b->begin : NULL, b->len, cf, &c);
    }
    return norm;
}

double segc_optimizer_step(segc_optimizer *o, double lr) {
    if (!o) return NAN;
    if (!nonneg(lr)) {
        segc_errorf(o->err, sizeof o->err, "optimizer_step: lr expected finite >= 0, found %g", lr);
        return NAN;
    }
    return step_impl(o, NULL, 0, lr);
}

double segc_optimizer_step_scheduled(segc_optimizer *o, const segc_schedule *s, int64_t iter) {
    if (!o) return NAN;
    if (!s) {
        segc_errorf(o->err, sizeof o->err, "optimizer_step: NULL schedule");
        return NAN;
    }
    return step_impl(o, s, iter, 0);
}

/* ---------------------------------------------------------------------------
 * State serialisation
 * --------------------------------------------------------------------------- */
/* torch state names: AdamW exp_avg + exp_avg_sq, SGD momentum_buffer */
static int state_names(segc_opt_kind kind, double momentum, const char *names[2]) {
    if (kind == SEGC_OPT_ADAMW) {
        names[0] = "exp_avg";
        names[1] = "exp_avg_sq";
        return 2;
    }
    names[0] = "momentum_buffer";
    return momentum > 0 ? 1 : 0;
}

static char *join3(const char *a, const char *b, const char *c) {
    char *s = NULL;
    if (asprintf(&s, "%s%s%s", a, b, c) < 0) return NULL;
    return s;
}

void segc_optimizer_save(const segc_optimizer *o, segc_st_writer *w, const char *prefix) {
    if (!o || !w) return;
    if (!prefix) prefix = "";
    const segc_params *p = o->p;
    const char *names[2];
    int ns = state_names(o->hp.kind, o->hp.momentum, names);
    float *bufs[2] = {o->exp_avg, o->exp_avg_sq};
    cJSON *lr = cJSON_CreateArray(), *dec = cJSON_CreateArray();
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        for (int s = 0; s < ns; s++) {
            char *stem = join3(names[s], ".", ""), *name = stem ? join3(prefix, stem, p->t[i]->name) : NULL;
            if (name) segc_st_writer_add(w, name, SEGC_F32, p->t[i]->ndim, p->t[i]->shape, bufs[s] + p->offset[i]);
            free(stem);
            free(name);
        }
        cJSON_AddItemToArray(lr, cJSON_CreateNumber(o->lr_mult[i]));
        cJSON_AddItemToArray(dec, cJSON_CreateNumber(o->decay_mult[i]));
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "kind", opt_kind_name(o->hp.kind));
    cJSON_AddNumberToObject(j, "step", (double)o->step);
    cJSON_AddNumberToObject(j, "lr", o->hp.lr);
    cJSON_AddNumberToObject(j, "weight_decay", o->hp.weight_decay);
    cJSON_AddNumberToObject(j, "momentum", o->hp.momentum);
    cJSON_AddNumberToObject(j, "dampening", o->hp.dampening);
    cJSON_AddBoolToObject(j, "nesterov", o->hp.nesterov);
    cJSON_AddNumberToObject(j, "beta1", o->hp.beta1);
    cJSON_AddNumberToObject(j, "beta2", o->hp.beta2);
    cJSON_AddNumberToObject(j, "eps", o->hp.eps);
    cJSON_AddNumberToObject(j, "max_grad_norm", o->hp.max_grad_norm);
    cJSON_AddItemToObject(j, "lr_mult", lr);
    cJSON_AddItemToObject(j, "decay_mult", dec);
    char *js = cJSON_PrintUnformatted(j), *key = join3(prefix, "optimizer", "");
    if (js && key) segc_st_writer_meta(w, key, js);
    free(key);
    cJSON_free(js);
    cJSON_Delete(j);
}

static bool json_number(const cJSON *j, const char *key, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (cJSON_IsNumber(v)) *out = v->valuedouble;
    else if (cJSON_IsBool(v)) *out = cJSON_IsTrue(v);
    else return false;
    return true;
}

static const char *shape_of(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* every state tensor present with the parameter's shape, and nothing extra */
static bool check_state_tensors(const segc_optimizer *o, const segc_st_file *f, const char *prefix, const char **names,
                                int ns, char *err, size_t errlen) {
    const segc_params *p = o->p;
    const char *path = segc_st_path(f);
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        const segc_tensor *t = p->t[i];
        for (int s = 0; s < ns; s++) {
            char *stem = join3(prefix, names[s], "."), *name = stem ? join3(stem, t->name, "") : NULL;
            const segc_st_entry *e = name ? segc_st_get(f, name) : NULL;
            bool ok = e != NULL, shape_ok = e && e->dtype_known && e->dtype == SEGC_F32 && e->ndim == t->ndim;
            for (int d = 0; shape_ok && d < t->ndim; d++) shape_ok = e->shape[d] == t->shape[d];
            char a[96], b[96];
            if (!ok) segc_errorf(err, errlen, "optimizer_load: %s: no state tensor '%s' for parameter '%s'", path, name ? name : "?", t->name);
            else if (!shape_ok)
                segc_errorf(err, errlen, "optimizer_load: %s: state tensor '%s' is %s %s, parameter '%s' is f32 %s", path, name,
                            e->dtype_str ? e->dtype_str : "?", shape_of(e->ndim, e->shape, a, sizeof a), t->name,
                            shape_of(t->ndim, t->shape, b, sizeof b));
            free(stem);
            free(name);
            if (!ok || !shape_ok) return false;
        }
    }
    /* state for a parameter this optimizer does not train */
    static const char *const all_states[] = {"exp_avg", "exp_avg_sq", "momentum_buffer"};
    for (int k = 0; k < segc_st_count(f); k++) {
        const char *name = segc_st_at(f, k)->name;
        size_t pl = strlen(prefix);
        if (strncmp(name, prefix, pl) != 0) continue;
        for (size_t s = 0; s < sizeof all_states / sizeof all_states[0]; s++) {
            size_t sl = strlen(all_states[s]);
            if (strncmp(name + pl, all_states[s], sl) != 0 || name[pl + sl] != '.') continue;
            const char *pname = name + pl + sl + 1;
            int idx = segc_params_index(p, pname);
            bool listed = false;
            for (int q = 0; q < ns; q++) listed |= strcmp(names[q], all_states[s]) == 0;
            if (idx < 0 || !p->trainable[idx] || !listed)
                return segc_errorf(err, errlen, "optimizer_load: %s: state tensor '%s' matches no trainable parameter of this %s "
                                   "optimizer", path, name, opt_kind_name(o->hp.kind));
        }
    }
    return true;
}

bool segc_optimizer_load(segc_optimizer *o, const segc_st_file *f, const char *prefix, char *err, size_t errlen) {
    if (!o || !f) return segc_errorf(err, errlen, "optimizer_load: NULL %s", o ? "file" : "optimizer");
    if (!prefix) prefix = "";
    const char *path = segc_st_path(f);
    char *key = join3(prefix, "optimizer", "");
    const char *js = key ? segc_st_meta(f, key) : NULL;
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    bool ok = false;
    segc_optim_cfg hp = o->hp;
    const segc_params *p = o->p;
    int n_train = 0;
    for (int i = 0; i < p->n; i++) n_train += p->trainable[i];
    if (!js) { segc_errorf(err, errlen, "optimizer_load: %s: no '%s' metadata", path, key ? key : "optimizer"); goto done; }
    if (!cJSON_IsObject(j)) { segc_errorf(err, errlen, "optimizer_load: %s: '%s' metadata is not a JSON object", path, key); goto done; }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    if (!cJSON_IsString(kind) || strcmp(kind->valuestring, opt_kind_name(o->hp.kind)) != 0) {
        segc_errorf(err, errlen, "optimizer_load: %s: state is for optimizer '%s', this optimizer is '%s'", path,
                    cJSON_IsString(kind) ? kind->valuestring : "?", opt_kind_name(o->hp.kind));
        goto done;
    }
    double step, nesterov;
    struct { const char *k; double *v; } fields[] = {
        {"step", &step}, {"lr", &hp.lr}, {"weight_decay", &hp.weight_decay}, {"momentum", &hp.momentum},
        {"dampening", &hp.dampening}, {"nesterov", &nesterov}, {"beta1", &hp.beta1}, {"beta2", &hp.beta2},
        {"eps", &hp.eps}, {"max_grad_norm", &hp.max_grad_norm}};
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
        if (!json_number(j, fields[k].k, fields[k].v)) {
            segc_errorf(err, errlen, "optimizer_load: %s: metadata '%s' lacks number '%s'", path, key, fields[k].k);
            goto done;
        }
    hp.nesterov = nesterov != 0;
    if (!(step >= 0 && step < 9e15)) { segc_errorf(err, errlen, "optimizer_load: %s: bad step count %g", path, step); goto done; }
    if (!check_cfg(&hp, "optimizer_load", err, errlen)) goto done;
    const char *names[2];
    int ns = state_names(hp.kind, hp.momentum, names);
    if (!check_state_tensors(o, f, prefix, names, ns, err, errlen)) goto done;
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(j, "lr_mult"), *dec = cJSON_GetObjectItemCaseSensitive(j, "decay_mult");
    if (!cJSON_IsArray(lr) || !cJSON_IsArray(dec) || cJSON_GetArraySize(lr) != n_train || cJSON_GetArraySize(dec) != n_train) {
        segc_errorf(err, errlen, "optimizer_load: %s: expected lr_mult and decay_mult for %d trainable tensors, found %d and %d",
                    path, n_train, cJSON_GetArraySize(lr), cJSON_GetArraySize(dec));
        goto done;
    }
    for (const cJSON *a = lr->child, *b = dec->child; a && b; a = a->next, b = b->next)
        if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || !nonneg(a->valuedouble) || !nonneg(b->valuedouble)) {
            segc_errorf(err, errlen, "optimizer_load: %s: multipliers expected finite numbers >= 0", path);
            goto done;
        }
    /* SGD saved with momentum but created without: the buffer is needed now */
    if (ns > 0 && !o->exp_avg && !(o->exp_avg = alloc_state(p))) {
        segc_errorf(err, errlen, "optimizer_load: out of memory");
        goto done;
    }
    /* everything checked: commit */
    float *bufs[2] = {o->exp_avg, o->exp_avg_sq};
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        for (int s = 0; s < ns; s++) {
            char *stem = join3(prefix, names[s], "."), *name = stem ? join3(stem, p->t[i]->name, "") : NULL;
            const segc_st_entry *e = name ? segc_st_get(f, name) : NULL;
            if (e) memcpy(bufs[s] + p->offset[i], e->data, e->nbytes);
            free(stem);
            free(name);
        }
    }
    const cJSON *a = lr->child, *b = dec->child;
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        o->lr_mult[i] = a->valuedouble;
        o->decay_mult[i] = b->valuedouble;
        a = a->next;
        b = b->next;
    }
    o->hp = hp;
    o->step = (int64_t)step;
    ok = true;
done:
    cJSON_Delete(j);
    free(key);
    return ok;
}
