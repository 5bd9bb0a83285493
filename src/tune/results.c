/* segc tune results: tune.csv, best.yaml and a self-contained tune.html
 * (inline SVG: the metric of every trial against iterations, stopped trials
 * ending where they stopped, and a parallel-coordinates plot of the
 * hyper-parameters against each trial's best metric). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/safetensors.h"
#include "segc/strbuf.h"
#include "segc/tune.h"

static void sb_csv(segc_strbuf *b, const char *s) {
    if (!strpbrk(s, ",\"\n")) { segc_sb_printf(b, "%s", s); return; }
    segc_sb_put(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"') segc_sb_put(b, "\"", 1);
        segc_sb_put(b, s, 1);
    }
    segc_sb_put(b, "\"", 1);
}

static bool write_text(const char *path, const segc_strbuf *b, char *err, size_t errlen) {
    if (b->oom || !b->p) return segc_errorf(err, errlen, "%s: out of memory", path);
    const void *parts[1] = {b->p};
    size_t sizes[1] = {b->len};
    return segc_write_file_atomic(path, parts, sizes, 1, err, errlen);
}

/* ---- curves from tune.jsonl ---- */
typedef struct curve { int n, cap; int64_t *it; double *v; } curve;

static void curve_add(curve *c, int64_t it, double v) {
    if (c->n == c->cap) {
        int nc = c->cap ? 2 * c->cap : 16;
        int64_t *ni = realloc(c->it, (size_t)nc * sizeof *ni);
        if (!ni) return;
        c->it = ni;
        double *nv = realloc(c->v, (size_t)nc * sizeof *nv);
        if (!nv) return;
        c->v = nv, c->cap = nc;
    }
    /* a replayed iteration (resume, PBT exploit) replaces the later points */
    while (c->n && c->it[c->n - 1] >= it) c->n--;
    c->it[c->n] = it, c->v[c->n] = v, c->n++;
}

static void read_curves(const char *path, curve *cv, int n) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = malloc(1 << 16);
    while (line && fgets(line, 1 << 16, f)) {
        cJSON *j = cJSON_Parse(line);
        const char *ev = j ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "event")) : NULL;
        const cJSON *t = j ? cJSON_GetObjectItem(j, "trial") : NULL, *m = j ? cJSON_GetObjectItem(j, "metric") : NULL;
        if (ev && cJSON_IsNumber(t) && t->valueint >= 0 && t->valueint < n) {
            int64_t it = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "iter"));
            if (!strcmp(ev, "result") && cJSON_IsNumber(m)) curve_add(&cv[t->valueint], it, m->valuedouble);
            if (!strcmp(ev, "exploit")) {   /* the copied weights: the curve continues from the source's point */
                curve *c = &cv[t->valueint];
                while (c->n && c->it[c->n - 1] > it) c->n--;
            }
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
}

static int best_trial(const segc_tune_spec *s, const segc_tune_sched *t) {
    int best = -1;
    for (int i = 0; i < t->n_trials; i++) {
        double v = t->trials[i].best;
        if (isnan(v)) continue;
        if (best < 0 || (s->maximize ? v > t->trials[best].best : v < t->trials[best].best)) best = i;
    }
    return best;
}

static void color(int i, int n, char *buf, size_t len) {
    snprintf(buf, len, "hsl(%d,70%%,45%%)", n ? (int)(360.0 * i / n) : 0);
}

static void svg_curves(segc_strbuf *b, const segc_tune_spec *s, const segc_tune_sched *t, curve *cv) {
    const int W = 760, H = 340, L = 60, R = 20, T = 20, B = 40;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < t->n_trials; i++)
        for (int k = 0; k < cv[i].n; k++) lo = fmin(lo, cv[i].v[k]), hi = fmax(hi, cv[i].v[k]);
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
    double xmax = (double)s->max_t;
    segc_sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", W, H, W, H);
    segc_sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", L, T, W - L - R, H - T - B);
    for (int g = 0; g <= 4; g++) {
        double v = lo + (hi - lo) * g / 4;
        double y = T + (H - T - B) * (1 - (double)g / 4);
        segc_sb_printf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.4g</text>\n", L - 4, y + 4, v);
        double xv = xmax * g / 4, x = L + (W - L - R) * (double)g / 4;
        segc_sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%lld</text>\n", x, H - B + 16, (long long)xv);
    }
    segc_sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">iteration</text>\n", (L + W - R) / 2, H - 6);
    for (int i = 0; i < t->n_trials; i++) {
        const curve *c = &cv[i];
        if (!c->n) continue;
        char col[40];
        color(i, t->n_trials, col, sizeof col);
        segc_sb_printf(b, "<g><title>trial_%04d (%s)</title><polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", i,
            segc_trial_state_name(t->trials[i].state), col);
        double x = 0, y = 0;
        for (int k = 0; k < c->n; k++) {
            x = L + (W - L - R) * (double)c->it[k] / xmax;
            y = T + (H - T - B) * (1 - (c->v[k] - lo) / (hi - lo));
            segc_sb_printf(b, "%.1f,%.1f ", x, y);
        }
        segc_sb_printf(b, "\"/>");
        if (t->trials[i].state == SEGC_TRIAL_STOPPED || t->trials[i].state == SEGC_TRIAL_FAILED)
            segc_sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", x, y, col);
        segc_sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\" fill=\"%s\">%d</text></g>\n", x + 3, y - 3, col, i);
    }
    segc_sb_printf(b, "</svg>\n");
}

/* parallel coordinates: one axis per parameter, then the best metric */
static void svg_parallel(segc_strbuf *b, const segc_tune_spec *s, const segc_tune_sched *t) {
    int na = s->n_params + 1;
    const int W = 160 * na + 80 > 760 ? 160 * na + 80 : 760, H = 320, T = 30, B = 40, L = 60;
    double step = na > 1 ? (double)(W - 2 * L) / (na - 1) : 0;
    double lo[SEGC_TUNE_MAX_PARAMS + 1], hi[SEGC_TUNE_MAX_PARAMS + 1];
    bool logsc[SEGC_TUNE_MAX_PARAMS + 1] = {0}, cat[SEGC_TUNE_MAX_PARAMS + 1] = {0};
    for (int a = 0; a < na; a++) {
        lo[a] = INFINITY, hi[a] = -INFINITY;
        if (a < s->n_params) {
            const segc_tune_param *q = &s->params[a];
            logsc[a] = q->dist == SEGC_DIST_LOGUNIFORM;
            cat[a] = q->n_values > 0;
            if (cat[a]) { lo[a] = 0, hi[a] = q->n_values - 1; continue; }
            lo[a] = logsc[a] ? log10(q->lo) : q->lo, hi[a] = logsc[a] ? log10(q->hi) : q->hi;
        } else {
            for (int i = 0; i < t->n_trials; i++)
                if (!isnan(t->trials[i].best)) lo[a] = fmin(lo[a], t->trials[i].best), hi[a] = fmax(hi[a], t->trials[i].best);
            if (!(lo[a] <= hi[a])) lo[a] = 0, hi[a] = 1;
        }
        if (hi[a] - lo[a] < 1e-12) lo[a] -= 0.5, hi[a] += 0.5;
    }
    segc_sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n", W, H, W, H);
    for (int a = 0; a < na; a++) {
        double x = L + step * a;
        segc_sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#888\"/>\n", x, T, x, H - B);
        segc_sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">", x, H - B + 16);
        segc_sb_html(b, a < s->n_params ? s->params[a].key : s->metric);
        segc_sb_printf(b, "%s</text>\n", a < s->n_params ? "" : " (best)");
        if (a < s->n_params && cat[a]) {
            for (int v = 0; v < s->params[a].n_values; v++) {
                double y = T + (H - T - B) * (1 - (v - lo[a]) / (hi[a] - lo[a]));
                segc_sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">", x + 4, y + 3);
                segc_sb_html(b, s->params[a].values[v]);
                segc_sb_printf(b, "</text>\n");
            }
        } else {
            segc_sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\">%.3g</text><text x=\"%.1f\" y=\"%d\" font-size=\"10\">%.3g</text>\n",
                x + 4, T + 4, logsc[a] ? pow(10, hi[a]) : hi[a], x + 4, H - B, logsc[a] ? pow(10, lo[a]) : lo[a]);
        }
    }
    double mlo = lo[na - 1], mhi = hi[na - 1];
    for (int i = 0; i < t->n_trials; i++) {
        const segc_tune_trial *tr = &t->trials[i];
        double m = tr->best;
        int hue = isnan(m) ? 0 : (int)(240 * (s->maximize ? (mhi - m) : (m - mlo)) / (mhi - mlo));
        segc_sb_printf(b, "<g><title>trial_%04d</title><polyline fill=\"none\" stroke=\"hsl(%d,75%%,45%%)\" stroke-width=\"1.5\"%s points=\"",
            i, hue, isnan(m) ? " stroke-dasharray=\"4 3\"" : "");
        for (int a = 0; a < na; a++) {
            double v;
            if (a == na - 1) {
                if (isnan(m)) break;
                v = m;
            } else if (cat[a]) {
                v = 0;
                for (int k = 0; k < s->params[a].n_values; k++)
                    if (!strcmp(s->params[a].values[k], tr->values[a])) v = k;
            } else {
                v = strtod(tr->values[a], NULL);
                if (logsc[a]) v = log10(v > 0 ? v : 1e-300);
            }
            double y = T + (H - T - B) * (1 - (v - lo[a]) / (hi[a] - lo[a]));
            segc_sb_printf(b, "%.1f,%.1f ", L + step * a, y);
        }
        segc_sb_printf(b, "\"/></g>\n");
    }
    segc_sb_printf(b, "</svg>\n");
}

static bool write_html(const char *path, const segc_tune_spec *s, const segc_tune_sched *t, curve *cv, int best,
                       char *err, size_t errlen) {
    segc_strbuf b = {0};
    static const char *const sched[] = {"FIFO", "ASHA", "PBT"};
    segc_sb_printf(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>segc tune ");
    segc_sb_html(&b, s->name);
    segc_sb_printf(&b, "</title>\n<style>body{font-family:sans-serif;margin:20px}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}.l{text-align:left}</style>\n"
            "</head><body>\n<h1>segc tune: ");
    segc_sb_html(&b, s->name);
    segc_sb_printf(&b, "</h1>\n<p>%d trials, %s%s, %s %s (%s), max_t %lld iterations.",
        t->n_trials, sched[s->scheduler], s->scheduler == SEGC_SCHED_ASHA && s->promotion ? " (promotion)" : "", "metric",
        s->metric, s->maximize ? "max" : "min", (long long)s->max_t);
    if (best >= 0) segc_sb_printf(&b, " Best: trial_%04d, %s %.4g (best.yaml).", best, s->metric, t->trials[best].best);
    segc_sb_printf(&b, "</p>\n<h2>%s against iterations</h2>\n", s->metric);
    svg_curves(&b, s, t, cv);
    segc_sb_printf(&b, "<h2>Hyper-parameters against the best %s</h2>\n", s->metric);
    svg_parallel(&b, s, t);
    segc_sb_printf(&b, "<h2>Trials</h2>\n<table>\n<tr><th>trial</th><th>state</th><th>iteration</th><th>%s</th><th>best</th>", s->metric);
    for (int j = 0; j < s->n_params; j++) {
        segc_sb_printf(&b, "<th>");
        segc_sb_html(&b, s->params[j].key);
        segc_sb_printf(&b, "</th>");
    }
    segc_sb_printf(&b, "<th>lineage</th><th class=\"l\">error</th></tr>\n");
    for (int i = 0; i < t->n_trials; i++) {
        const segc_tune_trial *tr = &t->trials[i];
        segc_sb_printf(&b, "<tr><td class=\"l\">trial_%04d%s</td><td class=\"l\">%s</td><td>%lld</td><td>%.4g</td><td>%.4g</td>", i,
            i == best ? " (best)" : "", segc_trial_state_name(tr->state), (long long)tr->iter, tr->last, tr->best);
        for (int j = 0; j < s->n_params; j++) {
            segc_sb_printf(&b, "<td>");
            segc_sb_html(&b, tr->values[j]);
            segc_sb_printf(&b, "</td>");
        }
        if (tr->parent >= 0) segc_sb_printf(&b, "<td>from trial_%04d (%d exploits)</td>", tr->parent, tr->n_exploits);
        else segc_sb_printf(&b, "<td></td>");
        segc_sb_printf(&b, "<td class=\"l\">");
        segc_sb_html(&b, tr->error);
        segc_sb_printf(&b, "</td></tr>\n");
    }
    segc_sb_printf(&b, "</table>\n</body></html>\n");
    bool ok = write_text(path, &b, err, errlen);
    free(b.p);
    return ok;
}

bool segc_tune_write_results(const segc_tune_spec *s, const segc_config *base, const segc_tune_sched *t, char *err,
                             size_t errlen) {
    char path[SEGC_CFG_PATH + 64];
    /* tune.csv */
    segc_strbuf b = {0};
    segc_sb_printf(&b, "trial,state,iter,%s,best", s->metric);
    for (int j = 0; j < s->n_params; j++) segc_sb_printf(&b, ",%s", s->params[j].key);
    segc_sb_printf(&b, ",parent,error\n");
    for (int i = 0; i < t->n_trials; i++) {
        const segc_tune_trial *tr = &t->trials[i];
        segc_sb_printf(&b, "trial_%04d,%s,%lld,%.10g,%.10g", i, segc_trial_state_name(tr->state), (long long)tr->iter, tr->last, tr->best);
        for (int j = 0; j < s->n_params; j++) {
            segc_sb_printf(&b, ",");
            sb_csv(&b, tr->values[j]);
        }
        if (tr->parent >= 0) segc_sb_printf(&b, ",trial_%04d,", tr->parent);
        else segc_sb_printf(&b, ",,");
        sb_csv(&b, tr->error);
        segc_sb_printf(&b, "\n");
    }
    snprintf(path, sizeof path, "%s/tune.csv", s->dir);
    bool ok = write_text(path, &b, err, errlen);
    free(b.p);
    if (!ok) return false;
    /* best.yaml: the base with the best trial's values, ready for segc train */
    int best = best_trial(s, t);
    if (best >= 0) {
        segc_config c = *base;
        char e2[768];
        for (int j = 0; j < s->n_params; j++)
            if (!segc_tune_apply(&c, s->params[j].key, t->trials[best].values[j], e2, sizeof e2))
                return segc_errorf(err, errlen, "best.yaml: %s", e2);
        c.train.max_iters = s->max_t;
        snprintf(c.name, sizeof c.name, "%.40s_best", s->name);
        c.train.work_dir[0] = 0;
        snprintf(path, sizeof path, "%s/best.yaml", s->dir);
        if (!segc_config_save(&c, path, err, errlen)) return false;
    }
    /* tune.html */
    curve *cv = calloc((size_t)t->n_trials + 1, sizeof *cv);
    if (!cv) return segc_errorf(err, errlen, "tune.html: out of memory");
    snprintf(path, sizeof path, "%s/tune.jsonl", s->dir);
    read_curves(path, cv, t->n_trials);
    snprintf(path, sizeof path, "%s/tune.html", s->dir);
    ok = write_html(path, s, t, cv, best, err, errlen);
    for (int i = 0; i < t->n_trials; i++) free(cv[i].it), free(cv[i].v);
    free(cv);
    return ok;
}
