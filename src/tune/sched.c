/* segc tune schedulers as state machines over reported results (no I/O):
 *  - FIFO: every trial runs to max_t.
 *  - ASHA (Ray Tune's AsyncHyperBand semantics): bracket s has rungs at
 *    grace * rf^(k+s) below max_t; the first result of a trial at or past a
 *    rung it has not recorded yet is compared with the results recorded there
 *    so far: below their (1 - 1/rf) percentile (linear interpolation), the
 *    trial stops; the result is recorded either way. A trial draws its bracket
 *    with probability proportional to e^(rungs of the bracket).
 *  - ASHA promotion (the ASHA paper's get_job): trials run to their bracket's
 *    first rung and pause; a free worker first promotes, from the highest rung
 *    down, a paused trial ranked in the top floor(n/rf) of the n results of
 *    its rung (resumed from its checkpoint up to the next rung, or max_t), and
 *    only then starts a new trial. When nothing can start and nothing runs,
 *    the paused trials are stopped.
 *  - PBT: every trial runs perturbation_interval iterations at a time, the
 *    least advanced first. At each boundary a trial in the bottom
 *    quantile_fraction of the latest scores (ceil(n*q), at most n/2) copies
 *    the checkpoint of a trial drawn from the top quantile (among those at
 *    least as far, so no trial moves back), then explores:
 *    each value is resampled with resample_probability, otherwise multiplied
 *    by 1.2 or 0.8 (clamped to the distribution's range; a choice moves to a
 *    neighbouring entry). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/tune.h"

const char *segc_trial_state_name(segc_trial_state s) {
    static const char *const n[] = {"pending", "running", "paused", "stopped", "done", "failed"};
    return (unsigned)s < 6 ? n[s] : "?";
}

const char *segc_tune_action_name(segc_tune_action a) {
    static const char *const n[] = {"continue", "stop", "pause"};
    return (unsigned)a < 3 ? n[a] : "?";
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double segc_tune_percentile(const double *scores, int n, double q) {
    if (n <= 0) return NAN;
    double *x = malloc((size_t)n * sizeof *x);
    if (!x) return NAN;
    memcpy(x, scores, (size_t)n * sizeof *x);
    qsort(x, (size_t)n, sizeof *x, cmp_dbl);
    double pos = q / 100.0 * (n - 1);
    int lo = (int)floor(pos);
    if (lo >= n - 1) lo = n - 1;
    double r = lo + 1 < n ? x[lo] + (x[lo + 1] - x[lo]) * (pos - lo) : x[lo];
    free(x);
    return r;
}

bool segc_tune_sched_init(segc_tune_sched *t, const segc_tune_spec *s, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    t->spec = s;
    t->n_planned = segc_tune_n_trials(s);
    t->trials = calloc((size_t)t->n_planned, sizeof *t->trials);
    if (!t->trials) return segc_errorf(err, errlen, "tune: out of memory");
    t->n_brackets = s->scheduler == SEGC_SCHED_ASHA ? s->brackets : 1;
    for (int b = 0; b < t->n_brackets && s->scheduler == SEGC_SCHED_ASHA; b++) {
        int k = 0;
        for (; k < SEGC_TUNE_MAX_RUNGS; k++) {
            int64_t m = llround((double)s->grace_period * pow(s->reduction_factor, k + b));
            if (m >= s->max_t) break;
            t->milestones[b][k] = m;
        }
        t->n_rungs[b] = k;
        if (!k && b) { t->n_brackets = b; break; }   /* brackets past max_t have no rung */
    }
    return true;
}

void segc_tune_sched_free(segc_tune_sched *t) {
    free(t->trials);
    memset(t, 0, sizeof *t);
}

static int create_trial(segc_tune_sched *t) {
    const segc_tune_spec *s = t->spec;
    int i = t->n_trials++;
    segc_tune_trial *tr = &t->trials[i];
    memset(tr, 0, sizeof *tr);
    tr->id = i;
    tr->state = SEGC_TRIAL_PENDING;
    segc_tune_sample(s, i, tr->values);
    tr->last = tr->best = tr->score = NAN;
    for (int k = 0; k < SEGC_TUNE_MAX_RUNGS; k++) tr->rung_score[k] = NAN;
    tr->exploit_source = tr->parent = -1;
    if (t->n_brackets > 1) {   /* Ray: p(bracket) ~ e^(rungs - max rungs) */
        double w[SEGC_TUNE_MAX_BRACKETS], sum = 0;
        for (int b = 0; b < t->n_brackets; b++) sum += w[b] = exp(t->n_rungs[b] - t->n_rungs[0]);
        double u = segc_tune_uniform(s->seed, (uint64_t)i, 0xb7ac, 0) * sum;
        int b = 0;
        while (b + 1 < t->n_brackets && u >= w[b]) u -= w[b++];
        tr->bracket = b;
    }
    tr->target = s->max_t;
    if (s->scheduler == SEGC_SCHED_ASHA && s->promotion && t->n_rungs[tr->bracket])
        tr->target = t->milestones[tr->bracket][0];
    if (s->scheduler == SEGC_SCHED_PBT)
        tr->target = s->perturbation_interval < s->max_t ? s->perturbation_interval : s->max_t;
    return i;
}

int segc_tune_sched_add(segc_tune_sched *t) { return t->n_trials < t->n_planned ? create_trial(t) : -1; }

static int cmp_rank(const void *a, const void *b) {   /* {score, id} by score descending, then id */
    const double *x = a, *y = b;
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* ASHA promotion: a paused trial in the top floor(n/rf) of its highest rung, highest rungs first */
static int promotable(segc_tune_sched *t, int64_t *target) {
    const segc_tune_spec *s = t->spec;
    double(*rank)[2] = malloc((size_t)(t->n_trials + 1) * sizeof *rank);
    if (!rank) return -1;
    int found = -1;
    for (int k = SEGC_TUNE_MAX_RUNGS - 1; k >= 0 && found < 0; k--) {
        for (int b = 0; b < t->n_brackets && found < 0; b++) {
            if (k >= t->n_rungs[b]) continue;
            int n = 0;
            for (int i = 0; i < t->n_trials; i++)
                if (t->trials[i].bracket == b && !isnan(t->trials[i].rung_score[k]))
                    rank[n][0] = t->trials[i].rung_score[k], rank[n][1] = i, n++;
            qsort(rank, (size_t)n, sizeof *rank, cmp_rank);
            int top = (int)floor(n / s->reduction_factor);
            for (int r = 0; r < top && found < 0; r++) {
                segc_tune_trial *tr = &t->trials[(int)rank[r][1]];
                if (tr->state == SEGC_TRIAL_PAUSED && !tr->promoted[k] && tr->iter >= t->milestones[b][k]) {
                    tr->promoted[k] = true;
                    *target = k + 1 < t->n_rungs[b] ? t->milestones[b][k + 1] : s->max_t;
                    found = tr->id;
                }
            }
        }
    }
    free(rank);
    return found;
}

bool segc_tune_sched_next(segc_tune_sched *t, int n_running, int *trial, int64_t *target, bool *finished) {
    const segc_tune_spec *s = t->spec;
    *finished = false;
    if (s->scheduler == SEGC_SCHED_PBT) {
        while (t->n_trials < t->n_planned) create_trial(t);
        int best = -1;
        for (int i = 0; i < t->n_trials; i++) {
            segc_tune_trial *tr = &t->trials[i];
            if ((tr->state == SEGC_TRIAL_PENDING || tr->state == SEGC_TRIAL_PAUSED) &&
                (best < 0 || tr->iter < t->trials[best].iter))
                best = i;
        }
        if (best < 0) { *finished = n_running == 0; return false; }
        segc_tune_trial *tr = &t->trials[best];
        int64_t next = (tr->iter / s->perturbation_interval + 1) * s->perturbation_interval;
        tr->target = next < s->max_t ? next : s->max_t;
        *trial = best, *target = tr->target;
        return true;
    }
    bool promo = s->scheduler == SEGC_SCHED_ASHA && s->promotion;
    /* runs interrupted before their target (a resumed search), then pending ones */
    for (int i = 0; i < t->n_trials; i++) {
        segc_tune_trial *tr = &t->trials[i];
        if (tr->state == SEGC_TRIAL_PENDING || (tr->state == SEGC_TRIAL_PAUSED && (!promo || tr->iter < tr->target))) {
            if (!promo) tr->target = s->max_t;
            *trial = i, *target = tr->target;
            return true;
        }
    }
    if (promo) {
        int64_t tg;
        int p = promotable(t, &tg);
        if (p >= 0) {
            t->trials[p].target = tg;
            *trial = p, *target = tg;
            return true;
        }
    }
    if (t->n_trials < t->n_planned) {
        int i = create_trial(t);
        *trial = i, *target = t->trials[i].target;
        return true;
    }
    if (n_running == 0) {
        *finished = true;
        for (int i = 0; i < t->n_trials; i++)
            if (t->trials[i].state == SEGC_TRIAL_PAUSED || t->trials[i].state == SEGC_TRIAL_PENDING)
                t->trials[i].state = SEGC_TRIAL_STOPPED;
    }
    return false;
}

static segc_tune_action asha_stop(segc_tune_sched *t, segc_tune_trial *tr) {
    const segc_tune_spec *s = t->spec;
    int b = tr->bracket;
    for (int k = t->n_rungs[b] - 1; k >= 0; k--) {
        if (tr->iter < t->milestones[b][k] || !isnan(tr->rung_score[k])) continue;
        double *rec = malloc((size_t)(t->n_trials + 1) * sizeof *rec);
        int n = 0;
        for (int i = 0; rec && i < t->n_trials; i++)
            if (t->trials[i].bracket == b && !isnan(t->trials[i].rung_score[k])) rec[n++] = t->trials[i].rung_score[k];
        double cutoff = n ? segc_tune_percentile(rec, n, (1 - 1 / s->reduction_factor) * 100) : NAN;
        free(rec);
        tr->rung_score[k] = tr->score;
        return n && tr->score < cutoff ? SEGC_TUNE_STOP : SEGC_TUNE_CONTINUE;
    }
    return SEGC_TUNE_CONTINUE;
}

static segc_tune_action pbt_decide(segc_tune_sched *t, segc_tune_trial *tr) {
    const segc_tune_spec *s = t->spec;
    tr->last_perturb = tr->iter;
    double(*rank)[2] = malloc((size_t)t->n_trials * sizeof *rank);
    if (!rank) return SEGC_TUNE_PAUSE;
    int n = 0;
    for (int i = 0; i < t->n_trials; i++)
        if (!isnan(t->trials[i].score) && t->trials[i].state != SEGC_TRIAL_FAILED)
            rank[n][0] = t->trials[i].score, rank[n][1] = i, n++;
    qsort(rank, (size_t)n, sizeof *rank, cmp_rank);   /* best first */
    int nq = (int)ceil(n * s->quantile_fraction);
    if (nq > n / 2) nq = n / 2;
    bool lower = false;
    for (int r = n - nq; r < n; r++) lower |= (int)rank[r][1] == tr->id;
    /* sources: top-quantile trials at least as far as this one, so an exploit never moves a trial
     * back (two trials copying each other's older checkpoints would otherwise never finish) */
    int ns = 0;   /* moved to the front of rank, best first */
    for (int r = 0; lower && r < nq; r++)
        if (t->trials[(int)rank[r][1]].iter >= tr->iter) rank[ns][0] = rank[r][0], rank[ns][1] = rank[r][1], ns++;
    if (ns > 0) {
        double u = segc_tune_uniform(s->seed, (uint64_t)tr->id, (uint64_t)tr->iter, 0xe7);
        int pick = (int)(u * ns);
        tr->exploit_source = (int)rank[pick < ns ? pick : ns - 1][1];
        tr->exploit_iter = tr->iter;
    }
    free(rank);
    return SEGC_TUNE_PAUSE;
}

segc_tune_action segc_tune_sched_result(segc_tune_sched *t, int trial, int64_t iter, double metric) {
    const segc_tune_spec *s = t->spec;
    segc_tune_trial *tr = &t->trials[trial];
    bool at_target = iter >= tr->target && tr->target < s->max_t;
    bool pausing = s->scheduler == SEGC_SCHED_PBT || (s->scheduler == SEGC_SCHED_ASHA && s->promotion);
    if (iter <= tr->iter) return at_target && pausing ? SEGC_TUNE_PAUSE : SEGC_TUNE_CONTINUE;   /* replayed after a resume */
    tr->iter = iter;
    if (!isfinite(metric)) {
        if (!*tr->error)
            snprintf(tr->error, sizeof tr->error, "%s is %s at iteration %lld", s->metric, isnan(metric) ? "NaN" : "infinite",
                 (long long)iter);
        return SEGC_TUNE_STOP;
    }
    tr->last = metric;
    tr->score = s->maximize ? metric : -metric;
    if (isnan(tr->best) || (s->maximize ? metric > tr->best : metric < tr->best)) tr->best = metric;
    switch (s->scheduler) {
    case SEGC_SCHED_FIFO: return SEGC_TUNE_CONTINUE;
    case SEGC_SCHED_ASHA:
        if (!s->promotion) return asha_stop(t, tr);
        for (int k = 0; k < t->n_rungs[tr->bracket]; k++)
            if (iter >= t->milestones[tr->bracket][k] && isnan(tr->rung_score[k])) tr->rung_score[k] = tr->score;
        return at_target ? SEGC_TUNE_PAUSE : SEGC_TUNE_CONTINUE;
    case SEGC_SCHED_PBT:
        return at_target ? pbt_decide(t, tr) : SEGC_TUNE_CONTINUE;
    }
    return SEGC_TUNE_CONTINUE;
}

static bool numeric(const char *v, double *x) {
    char *end;
    *x = strtod(v, &end);
    return end != v && !*end && isfinite(*x);
}

void segc_tune_sched_exploited(segc_tune_sched *t, int trial) {
    const segc_tune_spec *s = t->spec;
    segc_tune_trial *tr = &t->trials[trial];
    if (tr->exploit_source < 0) return;
    const segc_tune_trial *src = &t->trials[tr->exploit_source];
    for (int j = 0; j < s->n_params; j++) {
        const segc_tune_param *q = &s->params[j];
        double u0 = segc_tune_uniform(s->seed, (uint64_t)trial, (uint64_t)tr->exploit_iter, 2 * (uint64_t)j + 1);
        double u1 = segc_tune_uniform(s->seed, (uint64_t)trial, (uint64_t)tr->exploit_iter, 2 * (uint64_t)j + 2);
        const char *sv = src->values[j];
        char out[SEGC_TUNE_VALUE];
        double x;
        if (u0 < s->resample_probability) {
            segc_tune_draw(q, u1, out, sizeof out);
        } else if (q->n_values) {   /* grid / choice: a neighbouring entry */
            int idx = -1;
            for (int v = 0; v < q->n_values && idx < 0; v++)
                if (!strcmp(q->values[v], sv)) idx = v;
            if (idx < 0) idx = 0;
            idx += u1 < 0.5 ? -1 : 1;
            if (idx < 0) idx = 0;
            if (idx >= q->n_values) idx = q->n_values - 1;
            snprintf(out, sizeof out, "%s", q->values[idx]);
        } else if (numeric(sv, &x)) {
            x *= u1 < 0.5 ? 1.2 : 0.8;
            if (x < q->lo) x = q->lo;
            if (x > q->hi) x = q->hi;
            if (q->dist == SEGC_DIST_RANDINT) {
                x = round(x);
                if (x >= q->hi) x = q->hi - 1;
                snprintf(out, sizeof out, "%lld", (long long)x);
            } else if (q->dist == SEGC_DIST_QUNIFORM) {
                x = round(x / q->q) * q->q;
                snprintf(out, sizeof out, "%.10g", x);
            } else {
                snprintf(out, sizeof out, "%.6g", x);
                if (!strpbrk(out, ".e")) strcat(out, ".0");
            }
        } else {
            segc_tune_draw(q, u1, out, sizeof out);
        }
        snprintf(tr->values[j], SEGC_TUNE_VALUE, "%s", out);
    }
    tr->parent = src->id;
    tr->n_exploits++;
    tr->iter = tr->exploit_iter;   /* the source is at least as far (pbt_decide) */
    tr->last = src->last;
    tr->score = src->score;
    tr->exploit_source = -1;
}

void segc_tune_sched_ended(segc_tune_sched *t, int trial, segc_trial_state state, const char *error) {
    segc_tune_trial *tr = &t->trials[trial];
    tr->state = state;
    if (error && *error) snprintf(tr->error, sizeof tr->error, "%s", error);
}
