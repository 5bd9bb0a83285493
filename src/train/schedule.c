/* Iteration-based LR schedules with mmengine's chaining semantics, evaluated
 * in closed form so that resuming needs nothing but the iteration.
 *
 * mmengine steps every scheduler once per iteration, in list order; each one
 * active on [begin, end) transforms the current lr with a recursive rule.
 * Those rules telescope:
 *  - multiplicative ones scale the lr by F(k) over local steps 0..k, where
 *    LinearLR F = s + (e - s) k / T (T = end - begin - 1), ConstantLR
 *    F = factor until k = T, PolyLR (eta_min 0) F = ((T - k) / T)^p, cosine
 *    (eta_min 0, k <= T_max) F = (1 + cos(pi k / T_max)) / 2, StepLR,
 *    MultiStepLR and ExponentialLR powers of gamma. Products commute, so
 *    overlapping multiplicative items simply multiply.
 *  - PolyLR and CosineAnnealingLR with eta_min != 0 are affine in the lr at
 *    their begin (v0): eta + (v0 - eta) * shape(k). Past T_max the cosine
 *    recursion restarts from mmengine's base value (the group's initial lr),
 *    giving eta + (base - eta) * (1 + cos(pi k / T_max)) / 2. These may not
 *    overlap anything, so the lr at their begin is the product of every
 *    multiplicative item that ended before, applied to what the previous
 *    affine item left.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "segc/optim.h"

static const char *kind_name(segc_sched_kind k) {
    switch (k) {
    case SEGC_SCHED_LINEAR: return "linear";
    case SEGC_SCHED_CONSTANT: return "constant";
    case SEGC_SCHED_POLY: return "poly";
    case SEGC_SCHED_COSINE: return "cosine";
    case SEGC_SCHED_MULTISTEP: return "multistep";
    case SEGC_SCHED_STEP: return "step";
    case SEGC_SCHED_EXP: return "exp";
    }
    return "?";
}

static segc_sched_item base_item(segc_sched_kind kind, int64_t begin, int64_t end) {
    segc_sched_item it;
    memset(&it, 0, sizeof it);
    it.kind = kind;
    it.begin = begin;
    it.end = end;
    return it;
}

segc_sched_item segc_sched_linear(double start_factor, double end_factor, int64_t begin, int64_t end) {
    segc_sched_item it = base_item(SEGC_SCHED_LINEAR, begin, end);
    it.start_factor = start_factor;
    it.end_factor = end_factor;
    return it;
}
segc_sched_item segc_sched_constant(double factor, int64_t begin, int64_t end) {
    segc_sched_item it = base_item(SEGC_SCHED_CONSTANT, begin, end);
    it.factor = factor;
    return it;
}
segc_sched_item segc_sched_poly(double power, double eta_min, int64_t begin, int64_t end) {
    segc_sched_item it = base_item(SEGC_SCHED_POLY, begin, end);
    it.power = power;
    it.eta_min = eta_min;
    return it;
}
segc_sched_item segc_sched_cosine(int64_t t_max, double eta_min, int64_t begin, int64_t end) {
    segc_sched_item it = base_item(SEGC_SCHED_COSINE, begin, end);
    it.t_max = t_max;
    it.eta_min = eta_min;
    return it;
}
segc_sched_item segc_sched_multistep(const int64_t *milestones, int n, double gamma, int64_t begin, int64_t end) {
    segc_sched_item it = base_item(SEGC_SCHED_MULTISTEP, begin, end);
    it.gamma = gamma;
    it.n_milestones = n;
    for (int i = 0; i < n && i < SEGC_SCHED_MAX_MILESTONES; i++) it.milestones[i] = milestones[i];
    return it;
}
segc_sched_item segc_sched_step(int64_t step_size, double gamma, int64_t begin, int64_t end) {
    segc_sched_item it = base_item(SEGC_SCHED_STEP, begin, end);
    it.step_size = step_size;
    it.gamma = gamma;
    return it;
}
segc_sched_item segc_sched_exp(double gamma, int64_t begin, int64_t end) {
    segc_sched_item it = base_item(SEGC_SCHED_EXP, begin, end);
    it.gamma = gamma;
    return it;
}

void segc_schedule_init(segc_schedule *s) { memset(s, 0, sizeof *s); }

static int64_t cosine_period(const segc_sched_item *it) { return it->t_max > 0 ? it->t_max : it->end - it->begin; }

/* multiplicative items commute with each other and may overlap */
static bool is_multiplicative(const segc_sched_item *it) {
    if (it->kind == SEGC_SCHED_POLY) return it->eta_min == 0;
    if (it->kind == SEGC_SCHED_COSINE) return it->eta_min == 0 && it->end - it->begin - 1 <= cosine_period(it);
    return true;
}

#define FAIL(...) do { if (err && errlen) snprintf(err, errlen, __VA_ARGS__); return false; } while (0)

static bool check_item(const segc_sched_item *it, int idx, char *err, size_t errlen) {
    const char *k = kind_name(it->kind);
    if ((unsigned)it->kind > SEGC_SCHED_EXP) FAIL("schedule: item %d: unknown kind %d", idx, (int)it->kind);
    if (it->begin < 0 || it->end <= it->begin)
        FAIL("schedule: item %d (%s): expected 0 <= begin < end, found begin %lld end %lld", idx, k,
             (long long)it->begin, (long long)it->end);
    switch (it->kind) {
    case SEGC_SCHED_LINEAR:
        /* mmengine divides by start_factor in its recursion: 0 is unusable */
        if (!(it->start_factor > 0 && it->start_factor <= 1))
            FAIL("schedule: item %d (linear): start_factor expected in (0, 1], found %g", idx, it->start_factor);
        if (!(it->end_factor >= 0 && it->end_factor <= 1))
            FAIL("schedule: item %d (linear): end_factor expected in [0, 1], found %g", idx, it->end_factor);
        break;
    case SEGC_SCHED_CONSTANT:
        if (!(it->factor > 0 && it->factor <= 1))
            FAIL("schedule: item %d (constant): factor expected in (0, 1], found %g", idx, it->factor);
        break;
    case SEGC_SCHED_POLY:
        if (!(it->power >= 0 && isfinite(it->power)))
            FAIL("schedule: item %d (poly): power expected finite >= 0, found %g", idx, it->power);
        if (!(it->eta_min >= 0 && isfinite(it->eta_min)))
            FAIL("schedule: item %d (poly): eta_min expected finite >= 0, found %g", idx, it->eta_min);
        break;
    case SEGC_SCHED_COSINE:
        if (it->t_max < 0) FAIL("schedule: item %d (cosine): t_max expected >= 0, found %lld", idx, (long long)it->t_max);
        if (!(it->eta_min >= 0 && isfinite(it->eta_min)))
            FAIL("schedule: item %d (cosine): eta_min expected finite >= 0, found %g", idx, it->eta_min);
        break;
    case SEGC_SCHED_MULTISTEP:
        if (it->n_milestones < 0 || it->n_milestones > SEGC_SCHED_MAX_MILESTONES)
            FAIL("schedule: item %d (multistep): expected 0..%d milestones, found %d", idx, SEGC_SCHED_MAX_MILESTONES,
                 it->n_milestones);
        for (int i = 0; i < it->n_milestones; i++)
            if (it->milestones[i] < 0)
                FAIL("schedule: item %d (multistep): milestone %d expected >= 0, found %lld", idx, i,
                     (long long)it->milestones[i]);
        break;
    case SEGC_SCHED_STEP:
        if (it->step_size < 1)
            FAIL("schedule: item %d (step): step_size expected >= 1, found %lld", idx, (long long)it->step_size);
        break;
    case SEGC_SCHED_EXP: break;
    }
    if (it->kind >= SEGC_SCHED_MULTISTEP && !(it->gamma >= 0 && isfinite(it->gamma)))
        FAIL("schedule: item %d (%s): gamma expected finite >= 0, found %g", idx, k, it->gamma);
    return true;
}

static bool check_overlap(const segc_schedule *s, int j, char *err, size_t errlen) {
    const segc_sched_item *b = &s->item[j];
    for (int i = 0; i < j; i++) {
        const segc_sched_item *a = &s->item[i];
        bool overlap = (a->begin > b->begin ? a->begin : b->begin) < (a->end < b->end ? a->end : b->end);
        if (overlap && (!is_multiplicative(a) || !is_multiplicative(b)))
            FAIL("schedule: item %d (%s, [%lld, %lld)) overlaps item %d (%s, [%lld, %lld)); only multiplicative "
                 "items may overlap (poly/cosine need eta_min 0, cosine must end within t_max)",
                 j, kind_name(b->kind), (long long)b->begin, (long long)b->end, i, kind_name(a->kind),
                 (long long)a->begin, (long long)a->end);
    }
    return true;
}

bool segc_schedule_validate(const segc_schedule *s, char *err, size_t errlen) {
    if (!s) FAIL("schedule: NULL schedule");
    if (s->n < 0 || s->n > SEGC_SCHED_MAX_ITEMS)
        FAIL("schedule: expected 0..%d items, found %d", SEGC_SCHED_MAX_ITEMS, s->n);
    for (int j = 0; j < s->n; j++)
        if (!check_item(&s->item[j], j, err, errlen) || !check_overlap(s, j, err, errlen)) return false;
    return true;
}

bool segc_schedule_add(segc_schedule *s, segc_sched_item item, char *err, size_t errlen) {
    if (!s) FAIL("schedule: NULL schedule");
    if (s->n >= SEGC_SCHED_MAX_ITEMS) FAIL("schedule: at most %d items", SEGC_SCHED_MAX_ITEMS);
    s->item[s->n] = item;
    if (!check_item(&item, s->n, err, errlen) || !check_overlap(s, s->n, err, errlen)) return false;
    s->n++;
    return true;
}

segc_schedule segc_schedule_segformer(int64_t warmup_iters, int64_t max_iters) {
    segc_schedule s;
    segc_schedule_init(&s);
    if (warmup_iters > 0) s.item[s.n++] = segc_sched_linear(1e-6, 1.0, 0, warmup_iters);
    s.item[s.n++] = segc_sched_poly(1.0, 0.0, warmup_iters > 0 ? warmup_iters : 0, max_iters);
    return s;   /* max_iters <= warmup leaves an invalid item: lr is then NAN */
}

/* cumulative factor of a multiplicative item after its local steps 0..k */
static double mult_factor(const segc_sched_item *it, int64_t k) {
    int64_t T = it->end - it->begin - 1;
    switch (it->kind) {
    case SEGC_SCHED_LINEAR:
        if (T <= 0) return it->start_factor;
        return it->start_factor + (it->end_factor - it->start_factor) * (double)k / (double)T;
    case SEGC_SCHED_CONSTANT: return (k >= 1 && k == T) ? 1.0 : it->factor;
    case SEGC_SCHED_POLY: return T <= 0 ? 1.0 : pow((double)(T - k) / (double)T, it->power);
    case SEGC_SCHED_COSINE: return (1 + cos(M_PI * (double)k / (double)cosine_period(it))) / 2;
    case SEGC_SCHED_MULTISTEP: {
        int c = 0;
        for (int i = 0; i < it->n_milestones; i++) c += it->milestones[i] <= k;
        return pow(it->gamma, c);
    }
    case SEGC_SCHED_STEP: return pow(it->gamma, (double)(k / it->step_size));
    case SEGC_SCHED_EXP: return pow(it->gamma, (double)k);
    }
    return 1.0;
}

/* value of an affine item at local step k, starting from v0 at its begin */
static double affine_value(const segc_sched_item *it, double v0, double base, int64_t k) {
    double eta = it->eta_min;
    if (it->kind == SEGC_SCHED_POLY) {
        int64_t T = it->end - it->begin - 1;
        if (T <= 0) return v0;
        return eta + (v0 - eta) * pow((double)(T - k) / (double)T, it->power);
    }
    int64_t tm = cosine_period(it);
    double shape = (1 + cos(M_PI * (double)k / (double)tm)) / 2;
    return eta + ((k <= tm ? v0 : base) - eta) * shape;
}

static int64_t local_step(const segc_sched_item *it, int64_t t) { return (t < it->end ? t : it->end - 1) - it->begin; }

/* schedule already validated */
static double eval_schedule(const segc_schedule *s, double base, int64_t t) {
    bool applied[SEGC_SCHED_MAX_ITEMS] = {false};
    int order[SEGC_SCHED_MAX_ITEMS], n_aff = 0;
    for (int i = 0; i < s->n; i++) {
        if (is_multiplicative(&s->item[i])) continue;
        int j = n_aff++;   /* insertion sort by begin (affine items never overlap) */
        while (j > 0 && s->item[order[j - 1]].begin > s->item[i].begin) { order[j] = order[j - 1]; j--; }
        order[j] = i;
    }
    double v = base;
    for (int a = 0; a < n_aff; a++) {
        const segc_sched_item *A = &s->item[order[a]];
        if (t < A->begin) break;
        for (int i = 0; i < s->n; i++) {
            const segc_sched_item *M = &s->item[i];
            if (applied[i] || !is_multiplicative(M) || M->end > A->begin) continue;
            v *= mult_factor(M, M->end - 1 - M->begin);
            applied[i] = true;
        }
        v = affine_value(A, v, base, local_step(A, t));
        applied[order[a]] = true;
    }
    for (int i = 0; i < s->n; i++) {
        const segc_sched_item *M = &s->item[i];
        if (!applied[i] && is_multiplicative(M) && M->begin <= t) v *= mult_factor(M, local_step(M, t));
    }
    return v;
}

double segc_schedule_lr(const segc_schedule *s, double base_lr, int64_t iter) {
    if (!s || iter < 0 || !segc_schedule_validate(s, NULL, 0)) return NAN;
    return eval_schedule(s, base_lr, iter);
}

