/* The `loss` config section (losses.h): parsing of dotted paths and values,
 * validation, the resolved YAML, and class_weight: auto from the training
 * split's pixel histogram. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_schema.h"
#include "segc/losses.h"
#include "segc/losses_train.h"
#include "segc/safetensors.h"

static const struct { const char *name, *alias; } types[SEGC_LOSS_N_TYPES] = {
    {"ce", "CrossEntropyLoss"}, {"dice", "DiceLoss"}, {"focal", "FocalLoss"}, {"lovasz", "LovaszLoss"}};
/* keys each type takes */
static const char *const term_keys[SEGC_LOSS_N_TYPES] = {
    "loss_weight|class_weight|avg_non_ignore|label_smoothing",
    "loss_weight|class_weight|smooth|exponent|ignore_index",
    "loss_weight|class_weight|gamma|alpha",
    "loss_weight|class_weight|classes|per_image",
};

static void term_defaults(segc_loss_term *t) {
    memset(t, 0, sizeof *t);
    t->loss_weight = 1.0;
    t->smooth = 1.0;
    t->exponent = 2;
    t->ignore_index = 255;
    t->gamma = 2.0;
    t->alpha = 0.5;
}

void segc_loss_cfg_defaults(segc_loss_cfg *c) {
    memset(c, 0, sizeof *c);
    for (int t = 0; t < SEGC_LOSS_N_TYPES; t++) {
        term_defaults(&c->decode.terms[t]);
        term_defaults(&c->aux.terms[t]);
    }
    c->sampler.thresh = -1;
    c->sampler.min_kept = 100000;
    strcpy(c->class_weight_rule, "enet");
}

bool segc_loss_cfg_given(const segc_loss_cfg *c) { return c && (c->decode.given || c->aux.given); }

static bool is_nullish(const char *v) { return !*v || !strcmp(v, "~") || !strcasecmp(v, "null"); }

static bool parse_num(const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno == ERANGE || !isfinite(x)) return false;
    *out = x;
    return true;
}

static bool parse_boolv(const char *v, bool *out) {
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) return *out = true, true;
    if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) return *out = false, true;
    return false;
}

static int find_type(const char *name) {
    for (int t = 0; t < SEGC_LOSS_N_TYPES; t++)
        if (!strcmp(name, types[t].name) || !strcmp(name, types[t].alias)) return t;
    return -1;
}

static bool in_list(const char *list, const char *k) {
    size_t n = strlen(k);
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, k, n)) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

/* closest entry of a "a|b|c" list within 3 edits, or NULL */
static const char *closest(const char *list, const char *k, char *buf, size_t n) {
    int best = 4;
    const char *res = NULL;
    for (const char *p = list; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        char cand[64];
        snprintf(cand, sizeof cand, "%.*s", (int)len, p);
        int d = segc_edit_distance(k, cand);
        if (d < best) best = d, snprintf(buf, n, "%s", cand), res = buf;
        if (!bar) break;
        p = bar + 1;
    }
    return res;
}

static bool scalar_of(const char *path, const char *const *items, int n_items, const char **v, char *err, size_t errlen) {
    if (n_items != -1) return segc_errorf(err, errlen, "loss.%s: expected a single value, found a list or mapping", path);
    *v = items[0];
    return true;
}

static bool set_class_weight(segc_loss_term *tm, const char *path, const char *const *items, int n_items, char *err,
                             size_t errlen) {
    if (n_items == -1) {
        if (is_nullish(items[0])) { tm->class_weight_auto = false; tm->n_class_weight = 0; return true; }
        if (!strcmp(items[0], "auto")) { tm->class_weight_auto = true; tm->n_class_weight = 0; return true; }
        return segc_errorf(err, errlen, "loss.%s: expected a list of per-class weights or auto, found '%.60s'", path,
                           items[0]);
    }
    if (n_items < 1 || n_items > SEGC_LOSS_MAX_CLASSES)
        return segc_errorf(err, errlen, "loss.%s: expected a list of 1 to %d weights or auto, found %d entries", path,
                           SEGC_LOSS_MAX_CLASSES, n_items);
    for (int i = 0; i < n_items; i++) {
        double v;
        if (!parse_num(items[i], &v))
            return segc_errorf(err, errlen, "loss.%s[%d]: expected a number, found '%.60s'", path, i, items[i]);
        if (v < 0) return segc_errorf(err, errlen, "loss.%s[%d]: expected a weight >= 0, found %g", path, i, v);
        tm->class_weight[i] = v;
    }
    tm->n_class_weight = n_items;
    tm->class_weight_auto = false;
    return true;
}

static bool set_term_key(segc_loss_term *tm, int type, const char *key, const char *path, const char *const *items,
                         int n_items, char *err, size_t errlen) {
    if (!in_list(term_keys[type], key)) {
        char b[64];
        const char *hint = closest(term_keys[type], key, b, sizeof b);
        return segc_errorf(err, errlen, "unknown config key 'loss.%s'%s%s%s (%s takes %s)", path, hint ? "; did you mean '" : "",
                           hint ? hint : "", hint ? "'?" : "", types[type].name, term_keys[type]);
    }
    if (!strcmp(key, "class_weight")) return set_class_weight(tm, path, items, n_items, err, errlen);
    const char *v = NULL;
    if (!scalar_of(path, items, n_items, &v, err, errlen)) return false;
    double d;
    bool bv;
    if (!strcmp(key, "avg_non_ignore") || !strcmp(key, "per_image")) {
        if (!parse_boolv(v, &bv)) return segc_errorf(err, errlen, "loss.%s: expected true or false, found '%.60s'", path, v);
        if (key[0] == 'a') tm->avg_non_ignore = bv;
        else tm->per_image = bv;
        return true;
    }
    if (!strcmp(key, "classes")) {
        if (strcmp(v, "present") && strcmp(v, "all"))
            return segc_errorf(err, errlen, "loss.%s: expected present or all, found '%.60s'", path, v);
        tm->all_classes = !strcmp(v, "all");
        return true;
    }
    if (!parse_num(v, &d)) return segc_errorf(err, errlen, "loss.%s: expected a number, found '%.60s'", path, v);
    if (!strcmp(key, "loss_weight")) {
        if (d < 0) return segc_errorf(err, errlen, "loss.%s: expected a weight >= 0, found %g", path, d);
        tm->loss_weight = d;
    } else if (!strcmp(key, "label_smoothing")) {
        if (!(d >= 0 && d <= 1)) return segc_errorf(err, errlen, "loss.%s: expected [0, 1], found %g", path, d);
        tm->label_smoothing = d;
    } else if (!strcmp(key, "smooth")) {
        if (d < 0) return segc_errorf(err, errlen, "loss.%s: expected >= 0, found %g", path, d);
        tm->smooth = d;
    } else if (!strcmp(key, "exponent")) {
        if (d != floor(d) || d < 1 || d > 8) return segc_errorf(err, errlen, "loss.%s: expected an integer 1..8, found %g", path, d);
        tm->exponent = (int)d;
    } else if (!strcmp(key, "ignore_index")) {
        if (d != floor(d) || d < -1 || d > 255) return segc_errorf(err, errlen, "loss.%s: expected an integer -1..255, found %g", path, d);
        tm->ignore_index = (int)d;
    } else if (!strcmp(key, "gamma")) {
        if (d < 0) return segc_errorf(err, errlen, "loss.%s: expected >= 0, found %g", path, d);
        tm->gamma = d;
    } else if (!strcmp(key, "alpha")) {
        if (!(d >= 0 && d <= 1)) return segc_errorf(err, errlen, "loss.%s: expected [0, 1], found %g", path, d);
        tm->alpha = d;
    }
    return true;
}

static void head_clear(segc_loss_head *h) {
    h->given = false;
    for (int t = 0; t < SEGC_LOSS_N_TYPES; t++) term_defaults(&h->terms[t]);
}

static bool set_sampler(segc_loss_cfg *c, const char *key, const char *path, const char *const *items, int n_items,
                        char *err, size_t errlen) {
    if (!*key) {   /* the sampler itself: {} on, null off */
        if (n_items == -1 && is_nullish(items[0])) { c->sampler.on = false; return true; }
        if (n_items != 0) return segc_errorf(err, errlen, "loss.sampler: expected a mapping {type: ohem, thresh, min_kept} or null");
        c->sampler.on = true;
        return true;
    }
    const char *v = NULL;
    if (strcmp(key, "type") && strcmp(key, "thresh") && strcmp(key, "min_kept")) {
        char b[64];
        const char *hint = closest("type|thresh|min_kept", key, b, sizeof b);
        return segc_errorf(err, errlen, "unknown config key 'loss.%s'%s%s%s (the sampler takes type, thresh, min_kept)", path,
                           hint ? "; did you mean '" : "", hint ? hint : "", hint ? "'?" : "");
    }
    if (!scalar_of(path, items, n_items, &v, err, errlen)) return false;
    c->sampler.on = true;
    double d;
    if (!strcmp(key, "type")) {
        if (strcmp(v, "ohem") && strcmp(v, "OHEMPixelSampler"))
            return segc_errorf(err, errlen, "loss.sampler.type: expected ohem (OHEMPixelSampler), found '%.60s'", v);
    } else if (!strcmp(key, "thresh")) {
        if (is_nullish(v)) { c->sampler.thresh = -1; return true; }
        if (!parse_num(v, &d) || !(d >= 0 && d <= 1))
            return segc_errorf(err, errlen, "loss.sampler.thresh: expected a probability in [0, 1] or null, found '%.60s'", v);
        c->sampler.thresh = d;
    } else {
        if (!parse_num(v, &d) || d != floor(d) || d < 1 || d > 1e12)
            return segc_errorf(err, errlen, "loss.sampler.min_kept: expected a positive integer, found '%.60s'", v);
        c->sampler.min_kept = (int64_t)d;
    }
    return true;
}

bool segc_loss_cfg_set(segc_loss_cfg *c, const char *path, const char *const *items, int n_items, char *err,
                       size_t errlen) {
    char head[32] = "", type[64] = "", key[64] = "";
    const char *p = path, *dot = strchr(p, '.');
    snprintf(head, sizeof head, "%.*s", (int)(dot ? dot - p : (long)strlen(p)), p);
    if (dot) {
        p = dot + 1;
        dot = strchr(p, '.');
        snprintf(type, sizeof type, "%.*s", (int)(dot ? dot - p : (long)strlen(p)), p);
        if (dot) snprintf(key, sizeof key, "%s", dot + 1);
    }
    if (!strcmp(head, "class_weight_rule")) {
        const char *v = NULL;
        if (*type) return segc_errorf(err, errlen, "unknown config key 'loss.%s'", path);
        if (!scalar_of(path, items, n_items, &v, err, errlen)) return false;
        if (strcmp(v, "enet") && strcmp(v, "median_freq"))
            return segc_errorf(err, errlen, "loss.class_weight_rule: expected enet or median_freq, found '%.60s'", v);
        snprintf(c->class_weight_rule, sizeof c->class_weight_rule, "%s", v);
        return true;
    }
    if (!strcmp(head, "sampler")) {
        if (*key) return segc_errorf(err, errlen, "unknown config key 'loss.%s'", path);
        return set_sampler(c, type, path, items, n_items, err, errlen);
    }
    if (strcmp(head, "decode") && strcmp(head, "aux")) {
        char b[64];
        const char *hint = closest("decode|aux|sampler|class_weight_rule", head, b, sizeof b);
        return segc_errorf(err, errlen, "unknown config key 'loss.%s'%s%s%s (loss takes decode, aux, sampler, "
                           "class_weight_rule)", path, hint ? "; did you mean 'loss." : "", hint ? hint : "", hint ? "'?" : "");
    }
    segc_loss_head *h = head[0] == 'd' ? &c->decode : &c->aux;
    bool nul = n_items == -1 && is_nullish(items[0]);
    if (!*type) {   /* the head: null clears it, {} leaves it as it is */
        if (nul) head_clear(h);
        else if (n_items != 0) return segc_errorf(err, errlen, "loss.%s: expected a mapping of loss type -> settings "
                                                  "(types: %s)", path, SEGC_LOSS_TYPES);
        return true;
    }
    int t = find_type(type);
    if (t < 0)
        return segc_errorf(err, errlen, "loss.%s.%s: unknown loss type '%s' (valid: %s, or mmseg's CrossEntropyLoss, "
                           "DiceLoss, FocalLoss, LovaszLoss)", head, type, type, SEGC_LOSS_TYPES);
    segc_loss_term *tm = &h->terms[t];
    if (!*key) {
        if (nul) {   /* term: null switches it off */
            term_defaults(tm);
            h->given = false;
            for (int u = 0; u < SEGC_LOSS_N_TYPES; u++) h->given = h->given || h->terms[u].on;
            return true;
        }
        if (n_items != 0) return segc_errorf(err, errlen, "loss.%s: expected a mapping of settings (%s), {} for the defaults",
                                             path, term_keys[t]);
        tm->on = h->given = true;
        return true;
    }
    if (!set_term_key(tm, t, key, path, items, n_items, err, errlen)) return false;
    tm->on = h->given = true;
    return true;
}

bool segc_loss_cfg_check(const segc_loss_cfg *c, int64_t crop_pixels, char *err, size_t errlen) {
    if (c->sampler.on && !c->decode.given)
        return segc_errorf(err, errlen, "loss.sampler: the OHEM sampler weights the decode head's loss; configure "
                           "loss.decode (e.g. loss.decode.ce={})");
    if (c->sampler.on && crop_pixels > 0 && c->sampler.min_kept > crop_pixels)
        return segc_errorf(err, errlen, "loss.sampler.min_kept: %lld is more than the %lld pixels of a training crop "
                           "(data.crop_size)", (long long)c->sampler.min_kept, (long long)crop_pixels);
    return true;
}

/* ---- YAML ---- */
typedef segc_cfg_sbuf ybuf;
#define yb segc_cfg_sb_printf
static const char *dbl(double v, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

static void emit_head(ybuf *b, const char *name, const segc_loss_head *h, int ind) {
    if (!h->given) return;
    yb(b, "%*s%s:\n", ind + 2, "", name);
    char d[40];
    for (int t = 0; t < SEGC_LOSS_N_TYPES; t++) {
        const segc_loss_term *tm = &h->terms[t];
        if (!tm->on) continue;
        yb(b, "%*s%s: {loss_weight: %s", ind + 4, "", types[t].name, dbl(tm->loss_weight, d, sizeof d));
        if (tm->n_class_weight) {
            yb(b, ", class_weight: [");
            for (int i = 0; i < tm->n_class_weight; i++) yb(b, "%s%s", i ? ", " : "", dbl(tm->class_weight[i], d, sizeof d));
            yb(b, "]");
        } else if (tm->class_weight_auto) {
            yb(b, ", class_weight: auto");
        }
        switch (t) {
        case SEGC_LOSS_CE:
            yb(b, ", avg_non_ignore: %s, label_smoothing: %s", tm->avg_non_ignore ? "true" : "false",
               dbl(tm->label_smoothing, d, sizeof d));
            break;
        case SEGC_LOSS_DICE:
            yb(b, ", smooth: %s, exponent: %d, ignore_index: %d", dbl(tm->smooth, d, sizeof d), tm->exponent, tm->ignore_index);
            break;
        case SEGC_LOSS_FOCAL: {
            char d2[40];
            yb(b, ", gamma: %s, alpha: %s", dbl(tm->gamma, d, sizeof d), dbl(tm->alpha, d2, sizeof d2));
            break;
        }
        default:
            yb(b, ", classes: %s, per_image: %s", tm->all_classes ? "all" : "present", tm->per_image ? "true" : "false");
        }
        yb(b, "}\n");
    }
}

char *segc_loss_cfg_yaml(const segc_loss_cfg *c, int ind) {
    ybuf b = {0};
    if (!segc_loss_cfg_given(c) && !c->sampler.on) {
        yb(&b, "%*sloss: {}\n", ind, "");
        return b.p;
    }
    yb(&b, "%*sloss:\n", ind, "");
    emit_head(&b, "decode", &c->decode, ind);
    emit_head(&b, "aux", &c->aux, ind);
    if (c->sampler.on) {
        char d[40];
        yb(&b, "%*ssampler: {type: ohem, thresh: %s, min_kept: %lld}\n", ind + 2, "",
           c->sampler.thresh < 0 ? "null" : dbl(c->sampler.thresh, d, sizeof d), (long long)c->sampler.min_kept);
    }
    yb(&b, "%*sclass_weight_rule: %s\n", ind + 2, "", c->class_weight_rule);
    return b.p;
}

/* ---- class_weight: auto ---- */
static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

bool segc_loss_auto_weights(const char *rule, const int64_t *hist, const int64_t *present_px, int K, double *w,
                            char *err, size_t errlen) {
    double total = 0;
    for (int k = 0; k < K; k++) total += (double)hist[k];
    if (total <= 0) return segc_errorf(err, errlen, "loss: class_weight auto: the training split has no labelled pixel");
    if (!strcmp(rule, "enet")) {
        for (int k = 0; k < K; k++) w[k] = 1.0 / log(1.02 + (double)hist[k] / total);
        return true;
    }
    if (strcmp(rule, "median_freq") != 0)
        return segc_errorf(err, errlen, "loss.class_weight_rule: expected enet or median_freq, found '%s'", rule);
    double f[SEGC_LOSS_MAX_CLASSES], s[SEGC_LOSS_MAX_CLASSES];
    int n = 0;
    for (int k = 0; k < K; k++) {
        f[k] = hist[k] > 0 && present_px[k] > 0 ? (double)hist[k] / (double)present_px[k] : 0;
        if (f[k] > 0) s[n++] = f[k];
    }
    qsort(s, (size_t)n, sizeof *s, cmp_dbl);
    const double med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    for (int k = 0; k < K; k++) w[k] = f[k] > 0 ? med / f[k] : 0;
    return true;
}

bool segc_loss_cfg_needs_auto(const segc_loss_cfg *c) {
    const segc_loss_head *hs[2] = {&c->decode, &c->aux};
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < SEGC_LOSS_N_TYPES; t++)
            if (hs[h]->terms[t].on && hs[h]->terms[t].class_weight_auto && !hs[h]->terms[t].n_class_weight) return true;
    return false;
}

void segc_loss_cfg_fill_auto(segc_loss_cfg *c, const double *w, int K) {
    segc_loss_head *hs[2] = {&c->decode, &c->aux};
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < SEGC_LOSS_N_TYPES; t++) {
            segc_loss_term *tm = &hs[h]->terms[t];
            if (!tm->on || !tm->class_weight_auto || tm->n_class_weight) continue;
            memcpy(tm->class_weight, w, (size_t)K * sizeof *w);
            tm->n_class_weight = K;
        }
}

bool segc_loss_split_histogram(const segc_dataset *ds, int K, int64_t *hist, int64_t *present_px, char *err,
                               size_t errlen) {
    const int64_t n = segc_dataset_len(ds);
    memset(hist, 0, (size_t)K * sizeof *hist);
    memset(present_px, 0, (size_t)K * sizeof *present_px);
    int64_t bad = -1;
    char e1[512] = "";
#pragma omp parallel
    {
        int64_t h[SEGC_LOSS_MAX_CLASSES] = {0}, pp[SEGC_LOSS_MAX_CLASSES] = {0};
        segc_sample_check sc;
        char e2[512];
#pragma omp for schedule(dynamic, 4)
        for (int64_t i = 0; i < n; i++) {
            if (!segc_dataset_check_sample(ds, i, &sc, e2, sizeof e2)) {
#pragma omp critical(segc_loss_hist)
                if (bad < 0 || i < bad) { bad = i; snprintf(e1, sizeof e1, "%s", e2); }
                continue;
            }
            int64_t img = 0;
            for (int k = 0; k < K; k++) img += sc.hist[k];
            for (int k = 0; k < K; k++) {
                h[k] += sc.hist[k];
                if (sc.hist[k]) pp[k] += img;
            }
        }
#pragma omp critical(segc_loss_hist)
        for (int k = 0; k < K; k++) { hist[k] += h[k]; present_px[k] += pp[k]; }   /* integer sums: any order */
    }
    if (bad >= 0) return segc_errorf(err, errlen, "loss: class_weight auto: %s", e1);
    return true;
}

bool segc_loss_resolve_auto(segc_loss_cfg *c, const segc_dataset *ds, int K, const char *run_dir, FILE *progress,
                            char *err, size_t errlen) {
    if (!segc_loss_cfg_needs_auto(c)) return true;
    if (K < 1 || K > SEGC_LOSS_MAX_CLASSES) return segc_errorf(err, errlen, "loss: class_weight auto: %d classes", K);
    int64_t hist[SEGC_LOSS_MAX_CLASSES], pp[SEGC_LOSS_MAX_CLASSES];
    double w[SEGC_LOSS_MAX_CLASSES];
    if (!segc_loss_split_histogram(ds, K, hist, pp, err, errlen)) return false;
    if (!segc_loss_auto_weights(c->class_weight_rule, hist, pp, K, w, err, errlen)) return false;
    segc_loss_cfg_fill_auto(c, w, K);
    char d[40];
    if (progress) {
        fprintf(progress, "class_weight auto (%s, %lld training images):", c->class_weight_rule, (long long)segc_dataset_len(ds));
        for (int k = 0; k < K; k++) {
            const char *nm = segc_dataset_class_name(ds, k);
            fprintf(progress, " %s %.4g", nm ? nm : "?", w[k]);
        }
        fputc('\n', progress);
        fflush(progress);
    }
    if (run_dir && *run_dir) {
        ybuf b = {0};
        yb(&b, "{\"rule\":\"%s\",\"images\":%lld,\"classes\":[", c->class_weight_rule, (long long)segc_dataset_len(ds));
        for (int k = 0; k < K; k++) {
            const char *nm = segc_dataset_class_name(ds, k);
            yb(&b, "%s{\"class\":\"%s\",\"pixels\":%lld,\"weight\":%s}", k ? "," : "", nm ? nm : "?", (long long)hist[k],
               dbl(w[k], d, sizeof d));
        }
        yb(&b, "]}\n");
        char path[4096];
        snprintf(path, sizeof path, "%s/class_weights.json", run_dir);
        const void *parts[1] = {b.p};
        size_t sizes[1] = {b.len};
        bool ok = b.p && segc_write_file_atomic(path, parts, sizes, 1, err, errlen);
        free(b.p);
        if (!ok) return false;
    }
    return true;
}
