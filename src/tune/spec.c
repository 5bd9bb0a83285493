/* segc tune spec: YAML parsing (libyaml document API), key=value overrides,
 * validation against the training config schema and the evaluator, and the
 * canonical YAML a run directory keeps (what --resume compares). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "segc/task.h"
#include "segc/trainer.h"
#include "segc/tune.h"

static const char *const dist_names[] = {"grid", "choice", "uniform", "loguniform", "randint", "quniform"};
static const char *const tune_keys[] = {"metric", "mode", "num_samples", "search", "seed", "scheduler", "max_t",
                                        "grace_period", "reduction_factor", "brackets", "promotion",
                                        "perturbation_interval", "quantile_fraction", "resample_probability",
                                        "report_interval", "concurrent", "threads", "keep_checkpoints", "dir"};
#define N_TUNE_KEYS ((int)(sizeof tune_keys / sizeof *tune_keys))

void segc_tune_spec_defaults(segc_tune_spec *s) {
    memset(s, 0, sizeof *s);
    strcpy(s->name, "tune");
    strcpy(s->metric, "mIoU");
    s->maximize = true;
    s->num_samples = 1;
    s->scheduler = SEGC_SCHED_FIFO;
    strcpy(s->grace_text, "1");
    s->reduction_factor = 4;
    s->brackets = 1;
    strcpy(s->perturb_text, "0");
    strcpy(s->report_text, "0");
    s->quantile_fraction = 0.25;
    s->resample_probability = 0.25;
    s->concurrent = 1;
    s->keep_checkpoints = 1;
}

/* ---- YAML helpers ---- */
typedef struct pctx {
    yaml_document_t *doc;
    const char *origin, *spec_dir;
    char *err;
    size_t errlen;
    bool mode_set;
} pctx;

static bool perr(pctx *p, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool perr(pctx *p, const yaml_node_t *n, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n) return segc_errorf(p->err, p->errlen, "%s:%zu: %s", p->origin, n->start_mark.line + 1, msg);
    return segc_errorf(p->err, p->errlen, "%s: %s", p->origin, msg);
}

/* a scalar's text, a flow list "[a, b]" of scalars or nested lists; false when it holds a mapping */
static bool node_text(pctx *p, const yaml_node_t *n, char *buf, size_t len) {
    if (n->type == YAML_SCALAR_NODE) {
        const char *v = (const char *)n->data.scalar.value;
        bool quoted = n->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                      n->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
        if (quoted || strpbrk(v, ",[]{}:#")) snprintf(buf, len, "\"%s\"", v);
        else snprintf(buf, len, "%s", v);
        return strlen(buf) + 1 < len;
    }
    if (n->type == YAML_MAPPING_NODE) {   /* flow mapping: {k: v, ...} */
        size_t used = (size_t)snprintf(buf, len, "{");
        for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
            char k[256], v[256];
            yaml_node_t *kn = yaml_document_get_node(p->doc, pr->key), *vn = yaml_document_get_node(p->doc, pr->value);
            if (!kn || !vn || !node_text(p, kn, k, sizeof k) || !node_text(p, vn, v, sizeof v)) return false;
            if (used < len) used += (size_t)snprintf(buf + used, len - used, "%s%s: %s", pr > n->data.mapping.pairs.start ? ", " : "", k, v);
        }
        if (used < len) used += (size_t)snprintf(buf + used, len - used, "}");
        return used + 1 < len;
    }
    if (n->type != YAML_SEQUENCE_NODE) return false;
    size_t used = (size_t)snprintf(buf, len, "[");
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        char sub[256];
        yaml_node_t *c = yaml_document_get_node(p->doc, *it);
        if (!c || !node_text(p, c, sub, sizeof sub)) return false;
        if (used < len) used += (size_t)snprintf(buf + used, len - used, "%s%s", it > n->data.sequence.items.start ? ", " : "", sub);
    }
    if (used < len) used += (size_t)snprintf(buf + used, len - used, "]");
    return used + 1 < len;
}

static bool parse_num(const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno == ERANGE || !isfinite(x)) return false;
    *out = x;
    return true;
}

static bool parse_int(const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) return false;
    *out = x;
    return true;
}

static const char *closest(const char *word, const char *const *names, int n, int limit) {
    const char *best = NULL;
    int bd = limit + 1;
    for (int i = 0; i < n; i++) {
        int d = segc_edit_distance(word, names[i]);
        if (d < bd) bd = d, best = names[i];
    }
    return best;
}

/* a duration: N or Nba (iterations) or Nep (epochs) */
static bool duration_ok(const char *v) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || errno || x < 0) return false;
    return !*end || !strcmp(end, "ba") || !strcmp(end, "ep");
}

/* ---- tune.* settings (shared by the file and tune.KEY=value overrides) ---- */
static bool set_tune(segc_tune_spec *s, const char *key, const char *v, pctx *p, const yaml_node_t *n) {
    int64_t i;
    double d;
    if (!strcmp(key, "metric")) {
        if (!*v || strlen(v) >= sizeof s->metric) return perr(p, n, "tune.metric: expected a metric name, found '%.60s'", v);
        strcpy(s->metric, v);
        if (!p->mode_set) s->maximize = !segc_metric_lower_is_better(v);
    } else if (!strcmp(key, "mode")) {
        if (strcmp(v, "max") && strcmp(v, "min")) return perr(p, n, "tune.mode: expected max or min, found '%.60s'", v);
        s->maximize = !strcmp(v, "max");
        p->mode_set = true;
    } else if (!strcmp(key, "num_samples")) {
        if (!parse_int(v, 1, SEGC_TUNE_MAX_TRIALS, &i))
            return perr(p, n, "tune.num_samples: expected an integer 1..%d, found '%.60s'", SEGC_TUNE_MAX_TRIALS, v);
        s->num_samples = (int)i;
    } else if (!strcmp(key, "search")) {
        if (strcmp(v, "grid") && strcmp(v, "random")) return perr(p, n, "tune.search: expected one of grid, random, found '%.60s'", v);
        s->grid_search = !strcmp(v, "grid");
    } else if (!strcmp(key, "seed")) {
        if (!parse_int(v, 0, INT64_MAX, &i)) return perr(p, n, "tune.seed: expected a non-negative integer, found '%.60s'", v);
        s->seed = (uint64_t)i;
    } else if (!strcmp(key, "scheduler")) {
        if (!strcmp(v, "fifo")) s->scheduler = SEGC_SCHED_FIFO;
        else if (!strcmp(v, "asha")) s->scheduler = SEGC_SCHED_ASHA;
        else if (!strcmp(v, "pbt")) s->scheduler = SEGC_SCHED_PBT;
        else return perr(p, n, "tune.scheduler: expected one of fifo, asha, pbt, found '%.60s'", v);
    } else if (!strcmp(key, "max_t") || !strcmp(key, "grace_period") || !strcmp(key, "perturbation_interval") ||
               !strcmp(key, "report_interval")) {
        char *dst = key[0] == 'm' ? s->max_t_text : key[0] == 'g' ? s->grace_text : key[0] == 'p' ? s->perturb_text : s->report_text;
        if (!duration_ok(v) || strlen(v) >= 32)
            return perr(p, n, "tune.%s: expected iterations (N or Nba) or epochs (Nep), found '%.60s'", key, v);
        strcpy(dst, v);
    } else if (!strcmp(key, "reduction_factor")) {
        if (!parse_num(v, &d) || d < 1.5 || d > 100) return perr(p, n, "tune.reduction_factor: expected a number in [1.5, 100], found '%.60s'", v);
        s->reduction_factor = d;
    } else if (!strcmp(key, "brackets")) {
        if (!parse_int(v, 1, SEGC_TUNE_MAX_BRACKETS, &i))
            return perr(p, n, "tune.brackets: expected an integer 1..%d, found '%.60s'", SEGC_TUNE_MAX_BRACKETS, v);
        s->brackets = (int)i;
    } else if (!strcmp(key, "promotion")) {
        if (!strcmp(v, "true") || !strcmp(v, "yes")) s->promotion = true;
        else if (!strcmp(v, "false") || !strcmp(v, "no")) s->promotion = false;
        else return perr(p, n, "tune.promotion: expected true or false, found '%.60s'", v);
    } else if (!strcmp(key, "quantile_fraction")) {
        if (!parse_num(v, &d) || !(d > 0 && d <= 0.5)) return perr(p, n, "tune.quantile_fraction: expected a number in (0, 0.5], found '%.60s'", v);
        s->quantile_fraction = d;
    } else if (!strcmp(key, "resample_probability")) {
        if (!parse_num(v, &d) || !(d >= 0 && d <= 1)) return perr(p, n, "tune.resample_probability: expected a number in [0, 1], found '%.60s'", v);
        s->resample_probability = d;
    } else if (!strcmp(key, "concurrent")) {
        if (!parse_int(v, 1, 64, &i)) return perr(p, n, "tune.concurrent: expected an integer 1..64, found '%.60s'", v);
        s->concurrent = (int)i;
    } else if (!strcmp(key, "threads")) {
        if (!parse_int(v, 0, 4096, &i)) return perr(p, n, "tune.threads: expected an integer >= 0, found '%.60s'", v);
        s->threads = (int)i;
    } else if (!strcmp(key, "keep_checkpoints")) {
        if (!parse_int(v, 1, 1000, &i)) return perr(p, n, "tune.keep_checkpoints: expected an integer >= 1, found '%.60s'", v);
        s->keep_checkpoints = (int)i;
    } else if (!strcmp(key, "dir")) {
        if (strlen(v) >= sizeof s->dir) return perr(p, n, "tune.dir: path too long");
        strcpy(s->dir, v);
    } else {
        const char *h = closest(key, tune_keys, N_TUNE_KEYS, strlen(key) >= 8 ? 3 : 2);
        if (h) return perr(p, n, "unknown tune key 'tune.%.60s'; did you mean 'tune.%s'?", key, h);
        return perr(p, n, "unknown tune key 'tune.%.60s' (tune keys: metric, mode, num_samples, search, seed, scheduler, "
                    "max_t, grace_period, reduction_factor, brackets, promotion, perturbation_interval, quantile_fraction, "
                    "resample_probability, report_interval, concurrent, threads, keep_checkpoints, dir)", key);
    }
    return true;
}

/* ---- space ---- */
static bool parse_param(segc_tune_spec *s, pctx *p, const char *key, const yaml_node_t *dn, const char *dist,
                        const yaml_node_t *vn) {
    if (s->n_params == SEGC_TUNE_MAX_PARAMS) return perr(p, dn, "space: more than %d keys", SEGC_TUNE_MAX_PARAMS);
    for (int i = 0; i < s->n_params; i++)
        if (!strcmp(s->params[i].key, key)) return perr(p, dn, "space.%s: given twice", key);
    segc_tune_param *q = &s->params[s->n_params];
    memset(q, 0, sizeof *q);
    if (strlen(key) >= sizeof q->key) return perr(p, dn, "space: key too long");
    strcpy(q->key, key);
    q->line = (int)dn->start_mark.line + 1;
    int k = 0;
    while (k < 6 && strcmp(dist, dist_names[k])) k++;
    if (k == 6) {
        const char *h = closest(dist, dist_names, 6, 3);
        return perr(p, dn, "space.%s: unknown distribution '%.40s'%s%s%s (expected grid, choice, uniform, loguniform, randint or quniform)",
                    key, dist, h ? "; did you mean '" : "", h ? h : "", h ? "'?" : "");
    }
    q->dist = (segc_tune_dist)k;
    if (vn->type != YAML_SEQUENCE_NODE) return perr(p, vn, "space.%s.%s: expected a list, found a %s", key, dist,
                                                    vn->type == YAML_MAPPING_NODE ? "mapping" : "scalar");
    int n = (int)(vn->data.sequence.items.top - vn->data.sequence.items.start);
    if (q->dist == SEGC_DIST_GRID || q->dist == SEGC_DIST_CHOICE) {
        if (n < 1 || n > SEGC_TUNE_MAX_VALUES) return perr(p, vn, "space.%s.%s: expected 1..%d values, found %d", key, dist, SEGC_TUNE_MAX_VALUES, n);
        for (int i = 0; i < n; i++) {
            yaml_node_t *it = yaml_document_get_node(p->doc, vn->data.sequence.items.start[i]);
            if (!it || !node_text(p, it, q->values[i], sizeof q->values[i]))
                return perr(p, it ? it : vn, "space.%s.%s[%d]: expected a scalar or a list (at most %d characters)", key, dist, i, SEGC_TUNE_VALUE - 1);
        }
        q->n_values = n;
    } else {
        int want = q->dist == SEGC_DIST_QUNIFORM ? 3 : 2;
        if (n != want) return perr(p, vn, "space.%s.%s: expected [lo, hi%s], found a list of %d", key, dist, want == 3 ? ", q" : "", n);
        double x[3];
        for (int i = 0; i < n; i++) {
            yaml_node_t *it = yaml_document_get_node(p->doc, vn->data.sequence.items.start[i]);
            if (!it || it->type != YAML_SCALAR_NODE || !parse_num((const char *)it->data.scalar.value, &x[i]))
                return perr(p, it ? it : vn, "space.%s.%s[%d]: expected a number", key, dist, i);
        }
        q->lo = x[0], q->hi = x[1], q->q = n == 3 ? x[2] : 0;
        if (!(q->lo < q->hi)) return perr(p, vn, "space.%s.%s: expected lo < hi, found lo %g >= hi %g", key, dist, q->lo, q->hi);
        if (q->dist == SEGC_DIST_LOGUNIFORM && q->lo <= 0)
            return perr(p, vn, "space.%s.loguniform: expected lo > 0, found %g", key, q->lo);
        if (q->dist == SEGC_DIST_RANDINT && (q->lo != floor(q->lo) || q->hi != floor(q->hi)))
            return perr(p, vn, "space.%s.randint: expected integers [lo, hi), found [%g, %g]", key, q->lo, q->hi);
        if (q->dist == SEGC_DIST_QUNIFORM && !(q->q > 0)) return perr(p, vn, "space.%s.quniform: expected q > 0, found %g", key, q->q);
    }
    s->n_params++;
    return true;
}

static bool parse_space(segc_tune_spec *s, pctx *p, const char *prefix, const yaml_node_t *n) {
    if (n->type != YAML_MAPPING_NODE) return perr(p, n, "space%s%s: expected a mapping of config key -> {distribution: [...]}", *prefix ? "." : "", prefix);
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(p->doc, pr->key), *vn = yaml_document_get_node(p->doc, pr->value);
        if (!kn || !vn || kn->type != YAML_SCALAR_NODE) return perr(p, kn, "space: expected scalar keys");
        char key[SEGC_TUNE_KEY + 64];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", (const char *)kn->data.scalar.value);
        if (vn->type != YAML_MAPPING_NODE) return perr(p, vn, "space.%s: expected {distribution: [...]} (e.g. {choice: [1, 2]})", key);
        bool is_dist = vn->data.mapping.pairs.top - vn->data.mapping.pairs.start == 1;
        yaml_node_t *dk = is_dist ? yaml_document_get_node(p->doc, vn->data.mapping.pairs.start[0].key) : NULL;
        yaml_node_t *dv = is_dist ? yaml_document_get_node(p->doc, vn->data.mapping.pairs.start[0].value) : NULL;
        if (dk && dk->type == YAML_SCALAR_NODE && dv && dv->type == YAML_SEQUENCE_NODE) {
            if (!parse_param(s, p, key, dk, (const char *)dk->data.scalar.value, dv)) return false;
        } else if (!parse_space(s, p, key, vn)) {
            return false;
        }
    }
    return true;
}

/* config: nested or dotted keys -> "key=value" overrides */
static bool parse_config(segc_tune_spec *s, pctx *p, const char *prefix, const yaml_node_t *n) {
    if (n->type != YAML_MAPPING_NODE) return perr(p, n, "config%s%s: expected a mapping of config keys", *prefix ? "." : "", prefix);
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(p->doc, pr->key), *vn = yaml_document_get_node(p->doc, pr->value);
        if (!kn || !vn || kn->type != YAML_SCALAR_NODE) return perr(p, kn, "config: expected scalar keys");
        char key[200];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", (const char *)kn->data.scalar.value);
        if (vn->type == YAML_MAPPING_NODE && strstr(key, "custom_keys") == NULL) {
            if (!parse_config(s, p, key, vn)) return false;
            continue;
        }
        char text[200];   /* custom_keys maps are one value (a flow mapping) */
        if (!node_text(p, vn, text, sizeof text)) return perr(p, vn, "config.%s: value too long", key);
        if (s->n_overrides == SEGC_TUNE_MAX_OVERRIDES) return perr(p, vn, "config: more than %d keys", SEGC_TUNE_MAX_OVERRIDES);
        if (strlen(key) + strlen(text) + 2 > sizeof s->overrides[0]) return perr(p, vn, "config.%s: value too long", key);
        char *dst = s->overrides[s->n_overrides++];
        strcpy(dst, key);
        strcat(dst, "=");
        strcat(dst, text);
    }
    return true;
}

bool segc_tune_spec_load_string(segc_tune_spec *s, const char *yaml, const char *origin, const char *spec_dir,
                                char *err, size_t errlen) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return segc_errorf(err, errlen, "%s: cannot initialise the YAML parser", origin);
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, strlen(yaml));
    if (!yaml_parser_load(&parser, &doc)) {
        segc_errorf(err, errlen, "%s:%zu:%zu: YAML error: %s", origin, parser.problem_mark.line + 1,
                    parser.problem_mark.column + 1, parser.problem ? parser.problem : "malformed");
        yaml_parser_delete(&parser);
        return false;
    }
    pctx p = {&doc, origin, spec_dir, err, errlen, false};
    segc_tune_spec tmp = *s;
    bool ok = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) ok = perr(&p, root, "expected a mapping with base, config, space and tune");
    for (yaml_node_pair_t *pr = ok ? root->data.mapping.pairs.start : NULL; ok && pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(&doc, pr->key), *vn = yaml_document_get_node(&doc, pr->value);
        const char *k = kn && kn->type == YAML_SCALAR_NODE ? (const char *)kn->data.scalar.value : "";
        if (!strcmp(k, "base") || !strcmp(k, "name")) {
            if (vn->type != YAML_SCALAR_NODE) { ok = perr(&p, vn, "%s: expected a string", k); break; }
            const char *v = (const char *)vn->data.scalar.value;
            if (!strcmp(k, "name")) {
                if (!*v || strlen(v) >= sizeof tmp.name) { ok = perr(&p, vn, "name: expected 1..%d characters", (int)sizeof tmp.name - 1); break; }
                strcpy(tmp.name, v);
                continue;
            }
            char cand[2 * SEGC_CFG_PATH + 2];
            if (v[0] != '/' && spec_dir && *spec_dir) snprintf(cand, sizeof cand, "%s/%s", spec_dir, v);
            else snprintf(cand, sizeof cand, "%s", v);
            const char *use = !*v ? "" : access(cand, R_OK) == 0 ? cand : access(v, R_OK) == 0 ? v : NULL;
            if (!use) { ok = perr(&p, vn, "base: cannot read config '%s' (tried %s and %s)", v, cand, v); break; }
            char *abs = *use ? realpath(use, NULL) : NULL;
            const char *res = abs ? abs : use;
            if (strlen(res) >= sizeof tmp.base) { free(abs); ok = perr(&p, vn, "base: path too long"); break; }
            strcpy(tmp.base, res);
            free(abs);
        } else if (!strcmp(k, "config")) {
            ok = parse_config(&tmp, &p, "", vn);
        } else if (!strcmp(k, "space")) {
            ok = parse_space(&tmp, &p, "", vn);
        } else if (!strcmp(k, "tune")) {
            if (vn->type != YAML_MAPPING_NODE) { ok = perr(&p, vn, "tune: expected a mapping"); break; }
            for (yaml_node_pair_t *q = vn->data.mapping.pairs.start; ok && q < vn->data.mapping.pairs.top; q++) {
                yaml_node_t *tk = yaml_document_get_node(&doc, q->key), *tv = yaml_document_get_node(&doc, q->value);
                char text[SEGC_CFG_PATH];
                if (!tk || tk->type != YAML_SCALAR_NODE || !tv || tv->type != YAML_SCALAR_NODE ||
                    !node_text(&p, tv, text, sizeof text)) {
                    ok = perr(&p, tv ? tv : vn, "tune: expected KEY: scalar");
                    break;
                }
                ok = set_tune(&tmp, (const char *)tk->data.scalar.value, (const char *)tv->data.scalar.value, &p, tv);
            }
        } else {
            static const char *const top[] = {"base", "name", "config", "space", "tune"};
            const char *h = closest(k, top, 5, 2);
            ok = perr(&p, kn, "unknown spec key '%.60s'%s%s%s (expected base, name, config, space, tune)", k,
                      h ? "; did you mean '" : "", h ? h : "", h ? "'?" : "");
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (ok) *s = tmp;
    return ok;
}

bool segc_tune_spec_load(segc_tune_spec *s, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return segc_errorf(err, errlen, "%s: cannot open tune spec: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (1 << 22)) { fclose(f); return segc_errorf(err, errlen, "%s: not a tune spec (size)", path); }
    char *buf = malloc((size_t)n + 1);
    size_t k = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf) return segc_errorf(err, errlen, "%s: out of memory", path);
    buf[k] = 0;
    char dir[SEGC_CFG_PATH];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else strcpy(dir, ".");
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    segc_tune_spec tmp = *s;
    snprintf(tmp.name, sizeof tmp.name, "%.*s", (int)strcspn(base, "."), base);
    bool ok = segc_tune_spec_load_string(&tmp, buf, path, dir, err, errlen);
    free(buf);
    if (ok) *s = tmp;
    return ok;
}

bool segc_tune_spec_override(segc_tune_spec *s, const char *a, char *err, size_t errlen) {
    const char *eq = strchr(a, '=');
    if (!eq || eq == a) return segc_errorf(err, errlen, "override '%s': expected key=value (e.g. tune.concurrent=2 or optimizer.lr=1e-4)", a);
    pctx p = {NULL, "override", NULL, err, errlen, true};
    if (!strncmp(a, "tune.", 5)) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - a - 5), a + 5);
        return set_tune(s, key, eq + 1, &p, NULL);
    }
    if (s->n_overrides == SEGC_TUNE_MAX_OVERRIDES || strlen(a) >= sizeof s->overrides[0])
        return segc_errorf(err, errlen, "override '%.60s': too many or too long", a);
    snprintf(s->overrides[s->n_overrides++], sizeof s->overrides[0], "%s", a);
    return true;
}

/* ---- finish ---- */
static bool resolve_duration(const char *text, const char *key, int64_t iters_per_epoch, int64_t *out, char *err,
                             size_t errlen) {
    char *end;
    long long x = strtoll(text, &end, 10);
    if (!strcmp(end, "ep")) {
        if (iters_per_epoch <= 0) return segc_errorf(err, errlen, "tune.%s: %s needs the training split's size (the dataset cannot be opened)", key, text);
        x *= iters_per_epoch;
    }
    *out = x;
    return true;
}

static const char *strip_origin(const char *e) {
    return !strncmp(e, "override: ", 10) ? e + 10 : e;
}

bool segc_tune_spec_finish(segc_tune_spec *s, segc_config *base, char *err, size_t errlen) {
    char e2[1024];
    segc_config_defaults(base);
    if (*s->base && !segc_config_load(base, s->base, e2, sizeof e2)) return segc_errorf(err, errlen, "base: %s", e2);
    for (int i = 0; i < s->n_overrides; i++)
        if (!segc_config_override(base, s->overrides[i], e2, sizeof e2))
            return segc_errorf(err, errlen, "config: %s", strip_origin(e2));
    segc_config chk = *base;
    if (!segc_config_finish(&chk, e2, sizeof e2)) return segc_errorf(err, errlen, "config: %s", e2);
    /* every space key takes the values the search can give it */
    for (int j = 0; j < s->n_params; j++) {
        const segc_tune_param *q = &s->params[j];
        if (!strcmp(q->key, "train.work_dir") || !strcmp(q->key, "train.max_iters"))
            return segc_errorf(err, errlen, "space.%s:%d: %s is set by the tuner (use tune.dir / tune.max_t)", q->key, q->line, q->key);
        int nv = q->n_values ? q->n_values : 2;
        for (int v = 0; v < nv; v++) {
            char val[SEGC_TUNE_VALUE];
            if (q->n_values) snprintf(val, sizeof val, "%s", q->values[v]);
            else segc_tune_draw(q, v ? 0.999999 : 0.0, val, sizeof val);
            segc_config c = *base;
            if (strchr(q->key, ',') && !q->n_values)
                return segc_errorf(err, errlen, "space.%s (line %d): tied keys take grid or choice lists", q->key, q->line);
            if (!segc_tune_apply(&c, q->key, val, e2, sizeof e2) || !segc_config_finish(&c, e2, sizeof e2))
                return segc_errorf(err, errlen, "space (line %d): %s", q->line, strip_origin(e2));
        }
        if (s->grid_search && q->dist != SEGC_DIST_GRID && q->dist != SEGC_DIST_CHOICE)
            return segc_errorf(err, errlen, "space.%s: a %s distribution cannot be enumerated by tune.search: grid (use grid/choice, or search: random)",
                               q->key, dist_names[q->dist]);
    }
    if (segc_tune_n_trials(s) > SEGC_TUNE_MAX_TRIALS)
        return segc_errorf(err, errlen, "tune: %d trials, more than %d", segc_tune_n_trials(s), SEGC_TUNE_MAX_TRIALS);
    /* the metric: the training loss, or one the evaluator reports for this model and dataset */
    segc_dataset *ds = segc_config_open_dataset(&chk, NULL, e2, sizeof e2);
    int64_t ipe = ds ? (segc_dataset_len(ds) + chk.data.batch_size - 1) / chk.data.batch_size : 0;
    if (strcmp(s->metric, "loss") != 0 && !*chk.data.val_split) {
        segc_dataset_close(ds);
        return segc_errorf(err, errlen, "tune.metric: %s needs evaluations, but data.val_split is empty (set it, or tune loss)", s->metric);
    }
    const segc_model_family *fam = segc_model_family_find(chk.model.type);
    /* segc_eval_spec_knows lists the segmentation evaluator's names; another task's metric is
     * checked when its first result arrives (a metric it lacks fails the trial, naming it) */
    if (strcmp(s->metric, "loss") != 0 && (!fam || fam->task == SEGC_TASK_SEGMENTATION)) {
        segc_eval_spec es;
        memset(&es, 0, sizeof es);
        es.task = fam ? fam->task : SEGC_TASK_SEGMENTATION;
        es.num_classes = chk.model.num_classes ? chk.model.num_classes : ds ? segc_dataset_num_classes(ds) : 1;
        const char *names[256] = {0};
        int nd = ds ? segc_dataset_num_classes(ds) : 0;
        for (int k = 0; k < nd && k < 256; k++) names[k] = segc_dataset_class_name(ds, k);
        es.class_names = nd >= es.num_classes ? names : NULL;
        es.per_volume = chk.test.per_volume;
        if (!strcmp(chk.test.regions, "brats") || !strcmp(chk.test.regions, "msd_brats")) segc_eval_spec_brats_regions(&es);
        if (!segc_eval_spec_knows(&es, s->metric)) {
            static const char *const common[] = {"mIoU", "mAcc", "aAcc", "mDice", "loss", "Dice_WT", "Dice_TC", "Dice_ET"};
            const char *h = closest(s->metric, common, 8, 2);
            segc_errorf(err, errlen, "tune.metric: the evaluator does not report '%s'%s%s%s (it reports mIoU, mAcc, aAcc, mDice, "
                        "IoU.<class>, Acc.<class>, Dice.<class>%s; or loss, the training loss)", s->metric,
                        h ? "; did you mean '" : "", h ? h : "", h ? "'?" : "", es.per_volume ? ", Dice_<region>" : "");
            segc_dataset_close(ds);
            return false;
        }
    }
    segc_dataset_close(ds);
    if (!*s->max_t_text) snprintf(s->max_t_text, sizeof s->max_t_text, "%lld", (long long)chk.train.max_iters);
    if (!resolve_duration(s->max_t_text, "max_t", ipe, &s->max_t, err, errlen) ||
        !resolve_duration(s->grace_text, "grace_period", ipe, &s->grace_period, err, errlen) ||
        !resolve_duration(s->perturb_text, "perturbation_interval", ipe, &s->perturbation_interval, err, errlen) ||
        !resolve_duration(s->report_text, "report_interval", ipe, &s->report_interval, err, errlen))
        return false;
    if (s->max_t < 1) return segc_errorf(err, errlen, "tune.max_t: expected at least 1 iteration, found %s", s->max_t_text);
    if (s->scheduler == SEGC_SCHED_ASHA && !(s->grace_period >= 1 && s->grace_period < s->max_t))
        return segc_errorf(err, errlen, "tune.grace_period: expected 1 <= grace_period < max_t (%lld), found %lld",
                           (long long)s->max_t, (long long)s->grace_period);
    if (s->scheduler == SEGC_SCHED_PBT) {
        if (!(s->perturbation_interval >= 1 && s->perturbation_interval < s->max_t))
            return segc_errorf(err, errlen, "tune.perturbation_interval: expected 1 <= perturbation_interval < max_t (%lld), found %lld",
                               (long long)s->max_t, (long long)s->perturbation_interval);
        if (segc_tune_n_trials(s) < 2) return segc_errorf(err, errlen, "tune.num_samples: PBT needs a population of at least 2 trials");
    }
    if (s->report_interval <= 0) {
        s->report_interval = s->scheduler == SEGC_SCHED_ASHA ? s->grace_period
                             : s->scheduler == SEGC_SCHED_PBT ? s->perturbation_interval
                             : chk.train.val_interval > 0 && chk.train.val_interval < s->max_t ? chk.train.val_interval : s->max_t;
    }
    if (!*s->dir) snprintf(s->dir, sizeof s->dir, "runs/tune/%s", s->name);
    return true;
}

/* ---- canonical YAML ---- */
typedef struct sb { char *p; size_t n, cap; } sb;
static void sbf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbf(sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->n + (size_t)k + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) return;
        b->p = np, b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

char *segc_tune_spec_to_yaml(const segc_tune_spec *s, bool identity_only) {
    sb b = {0};
    sbf(&b, "# segc tune spec (resolved)\nname: %s\nbase: \"%s\"\nconfig:\n", s->name, s->base);
    if (!s->n_overrides) sbf(&b, "  {}\n");
    for (int i = 0; i < s->n_overrides; i++) {
        const char *eq = strchr(s->overrides[i], '=');
        sbf(&b, "  %.*s: %s\n", (int)(eq - s->overrides[i]), s->overrides[i], *(eq + 1) ? eq + 1 : "\"\"");
    }
    sbf(&b, "space:\n");
    if (!s->n_params) sbf(&b, "  {}\n");
    for (int j = 0; j < s->n_params; j++) {
        const segc_tune_param *q = &s->params[j];
        sbf(&b, "  %s: {%s: [", q->key, dist_names[q->dist]);
        if (q->n_values)
            for (int v = 0; v < q->n_values; v++) sbf(&b, "%s%s", v ? ", " : "", q->values[v]);
        else if (q->dist == SEGC_DIST_QUNIFORM) sbf(&b, "%.17g, %.17g, %.17g", q->lo, q->hi, q->q);
        else sbf(&b, "%.17g, %.17g", q->lo, q->hi);
        sbf(&b, "]}\n");
    }
    static const char *const sched[] = {"fifo", "asha", "pbt"};
    sbf(&b, "tune:\n  metric: %s\n  mode: %s\n  num_samples: %d\n  search: %s\n  seed: %llu\n  scheduler: %s\n"
            "  max_t: %s\n  grace_period: %s\n  reduction_factor: %.17g\n  brackets: %d\n  promotion: %s\n"
            "  perturbation_interval: %s\n  quantile_fraction: %.17g\n  resample_probability: %.17g\n  report_interval: %s\n",
        s->metric, s->maximize ? "max" : "min", s->num_samples, s->grid_search ? "grid" : "random",
        (unsigned long long)s->seed, sched[s->scheduler], s->max_t_text, s->grace_text, s->reduction_factor, s->brackets,
        s->promotion ? "true" : "false", s->perturb_text, s->quantile_fraction, s->resample_probability, s->report_text);
    if (!identity_only)
        sbf(&b, "  concurrent: %d\n  threads: %d\n  keep_checkpoints: %d\n  dir: \"%s\"\n", s->concurrent, s->threads,
            s->keep_checkpoints, s->dir);
    return b.p;
}
