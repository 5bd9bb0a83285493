/* segc tune search: trial sampling (grid crossing, seeded random draws) and
 * the configuration of one trial. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/tune.h"

static uint64_t mix64(uint64_t x) {   /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

double segc_tune_uniform(uint64_t seed, uint64_t a, uint64_t b, uint64_t k) {
    uint32_t out[4];
    segc_philox(seed ^ 0x74756e6574756e65ull, mix64(a ^ mix64(b ^ mix64(k))), out);
    uint64_t bits = ((uint64_t)out[0] << 21) ^ (uint64_t)out[1];   /* 53 bits */
    return (double)(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

static bool is_grid(const segc_tune_spec *s, const segc_tune_param *q) {
    return q->dist == SEGC_DIST_GRID || (s->grid_search && q->dist == SEGC_DIST_CHOICE);
}

int segc_tune_n_trials(const segc_tune_spec *s) {
    int64_t g = 1;
    for (int j = 0; j < s->n_params; j++) {
        if (is_grid(s, &s->params[j])) g *= s->params[j].n_values;
        if (g > SEGC_TUNE_MAX_TRIALS) return SEGC_TUNE_MAX_TRIALS + 1;
    }
    int64_t n = g * s->num_samples;
    return n > SEGC_TUNE_MAX_TRIALS ? SEGC_TUNE_MAX_TRIALS + 1 : (int)n;
}

static void fmt_num(double v, int sig, char *out, size_t n) {
    snprintf(out, n, "%.*g", sig, v);
    if (!strchr(out, '.') && !strchr(out, 'e') && !strchr(out, 'n') && !strchr(out, 'i') && strlen(out) + 2 < n)
        strcat(out, ".0");   /* stays a float in YAML */
}

void segc_tune_draw(const segc_tune_param *p, double u, char *out, size_t n) {
    double x;
    switch (p->dist) {
    case SEGC_DIST_GRID: case SEGC_DIST_CHOICE: {
        int i = (int)(u * p->n_values);
        snprintf(out, n, "%s", p->values[i < p->n_values ? i : p->n_values - 1]);
        return;
    }
    case SEGC_DIST_UNIFORM: fmt_num(p->lo + u * (p->hi - p->lo), 6, out, n); return;
    case SEGC_DIST_LOGUNIFORM: fmt_num(exp(log(p->lo) + u * (log(p->hi) - log(p->lo))), 6, out, n); return;
    case SEGC_DIST_RANDINT:
        x = floor(p->lo + u * (p->hi - p->lo));
        if (x >= p->hi) x = p->hi - 1;
        snprintf(out, n, "%lld", (long long)x);
        return;
    case SEGC_DIST_QUNIFORM:
        x = round((p->lo + u * (p->hi - p->lo)) / p->q) * p->q;
        if (p->q == floor(p->q) && fabs(x) < 9e15) snprintf(out, n, "%lld", (long long)x);
        else fmt_num(x, 10, out, n);
        return;
    }
}

void segc_tune_sample(const segc_tune_spec *s, int trial, char values[][SEGC_TUNE_VALUE]) {
    int64_t g = 1;
    for (int j = 0; j < s->n_params; j++)
        if (is_grid(s, &s->params[j])) g *= s->params[j].n_values;
    int64_t sample = trial / g, cell = trial % g;
    /* grid keys: mixed radix over the grid cell, the last grid key fastest */
    for (int j = s->n_params - 1; j >= 0; j--) {
        const segc_tune_param *q = &s->params[j];
        if (!is_grid(s, q)) continue;
        snprintf(values[j], SEGC_TUNE_VALUE, "%s", q->values[cell % q->n_values]);
        cell /= q->n_values;
    }
    /* the rest: draw j of sample `sample` (the same draw for every grid cell of that sample) */
    for (int j = 0; j < s->n_params; j++)
        if (!is_grid(s, &s->params[j]))
            segc_tune_draw(&s->params[j], segc_tune_uniform(s->seed, (uint64_t)sample, 0x5a17, (uint64_t)j), values[j],
                           SEGC_TUNE_VALUE);
}

bool segc_tune_apply(segc_config *c, const char *key, const char *value, char *err, size_t errlen) {
    char a[512];
    if (!strchr(key, ',')) {
        snprintf(a, sizeof a, "%s=%s", key, value);
        return segc_config_override(c, a, err, errlen);
    }
    /* tied keys: value "[v1, v2, ...]", split at top-level commas */
    size_t vl = strlen(value);
    if (vl < 2 || value[0] != '[' || value[vl - 1] != ']')
        return segc_errorf(err, errlen, "space.%s: tied keys take lists of values, found '%s'", key, value);
    const char *k = key, *v = value + 1, *vend = value + vl - 1;
    int nk = 0;
    while (*k) {
        size_t kl = strcspn(k, ",");
        int depth = 0;
        const char *e = v;
        for (; e < vend && (depth || *e != ','); e++) depth += *e == '[' ? 1 : *e == ']' ? -1 : 0;
        if (v >= vend) return segc_errorf(err, errlen, "space.%s: value '%s' has fewer entries than keys", key, value);
        while (*v == ' ') v++;
        snprintf(a, sizeof a, "%.*s=%.*s", (int)kl, k, (int)(e - v), v);
        char e2[600];
        if (!segc_config_override(c, a, e2, sizeof e2)) return segc_errorf(err, errlen, "%s", e2);
        nk++;
        k += kl + (k[kl] == ',');
        v = e < vend ? e + 1 : vend;
    }
    if (v < vend) return segc_errorf(err, errlen, "space.%s: value '%s' has more entries than keys (%d)", key, value, nk);
    return true;
}

bool segc_tune_trial_config(const segc_tune_spec *s, const segc_config *base, char values[][SEGC_TUNE_VALUE],
                            const char *work_dir, int threads, segc_config *out, char *err, size_t errlen) {
    segc_config c = *base;
    char e2[768];
    for (int j = 0; j < s->n_params; j++)
        if (!segc_tune_apply(&c, s->params[j].key, values[j], e2, sizeof e2))
            return segc_errorf(err, errlen, "%s=%s: %s", s->params[j].key, values[j], e2);
    const char *slash = strrchr(work_dir, '/');
    snprintf(c.name, sizeof c.name, "%s", slash ? slash + 1 : work_dir);
    snprintf(c.train.work_dir, sizeof c.train.work_dir, "%s", work_dir);
    c.train.max_iters = s->max_t;
    c.train.val_interval = s->report_interval;
    c.train.checkpoint_interval = s->report_interval;
    if (c.train.log_interval > s->report_interval) c.train.log_interval = s->report_interval;
    c.train.keep_last = s->keep_checkpoints;
    c.train.threads = threads;
    c.train.max_time_min = 0;
    if (!segc_config_finish(&c, e2, sizeof e2)) return segc_errorf(err, errlen, "%s", e2);
    *out = c;
    return true;
}
