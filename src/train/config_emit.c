/* The resolved configuration as YAML (every key, the run's record), its diff against another,
 * and the model spec it names. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_schema.h"
#include "segc/safetensors.h"

#define schema segc_cfg_schema
#define N_FIELDS segc_cfg_n_fields

/* ---- resolved YAML ---- */
void segc_cfg_sb_printf(segc_cfg_sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->p && b->len + (size_t)k < b->cap) { b->len += (size_t)k; return; }
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + (size_t)k + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) return;
        b->p = np;
        b->cap = nc;
    }
}
#define sb_printf segc_cfg_sb_printf
typedef segc_cfg_sbuf sbuf;

static void fmt_double(double v, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
}

static void sb_quoted(sbuf *b, const char *s) {
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') sb_printf(b, "\\%c", ch);
        else if (ch < 0x20) sb_printf(b, "\\x%02x", ch);
        else sb_printf(b, "%c", ch);
    }
    sb_printf(b, "\"");
}

static void sb_mult(sbuf *b, segc_mult m) {
    if (!m.set) { sb_printf(b, "null"); return; }
    char d[32];
    fmt_double(m.value, d, sizeof d);
    sb_printf(b, "%s", d);
}

/* value of field f in YAML flow syntax */
static void emit_value(sbuf *b, const field *f, const segc_config *c) {
    const void *p = (const char *)c + f->off;
    char d[32];
    switch (f->kind) {
    case K_INT: sb_printf(b, "%d", *(const int *)p); break;
    case K_I64: sb_printf(b, "%lld", (long long)*(const int64_t *)p); break;
    case K_DBL: fmt_double(*(const double *)p, d, sizeof d); sb_printf(b, "%s", d); break;
    case K_BOOL: sb_printf(b, "%s", *(const bool *)p ? "true" : "false"); break;
    case K_STR: sb_quoted(b, (const char *)p); break;
    case K_MULT: sb_mult(b, *(const segc_mult *)p); break;
    case K_DUR: sb_printf(b, "%lld%s", (long long)*(const int64_t *)p, c->in_epochs & (1u << f->n) ? "ep" : ""); break;
    case K_INTS: case K_DBLS: {
        int n = f->count_off != NO_COUNT ? *(const int *)((const char *)c + f->count_off) : f->n;
        sb_printf(b, "[");
        for (int i = 0; i < n; i++) {
            if (f->kind == K_INTS) sb_printf(b, "%s%d", i ? ", " : "", ((const int *)p)[i]);
            else { fmt_double(((const double *)p)[i], d, sizeof d); sb_printf(b, "%s%s", i ? ", " : "", d); }
        }
        sb_printf(b, "]");
        break;
    }
    case K_CUSTOM:
        if (!c->optimizer.n_custom_keys) { sb_printf(b, "{}"); break; }
        sb_printf(b, "{");
        for (int i = 0; i < c->optimizer.n_custom_keys; i++) {
            const segc_cfg_custom_key *k = &c->optimizer.custom_keys[i];
            sb_printf(b, "%s", i ? ", " : "");
            sb_quoted(b, k->key);
            sb_printf(b, ": {lr_mult: ");
            sb_mult(b, k->lr_mult);
            sb_printf(b, ", decay_mult: ");
            sb_mult(b, k->decay_mult);
            sb_printf(b, "}");
        }
        sb_printf(b, "}");
        break;
    }
}

/* The family's keys, each with its given value or default (unknown family: the given ones). */
static int model_opt_names(const segc_config *c, const char **names, int max) {
    const segc_model_family *f = segc_model_family_find(c->model.type);
    int n = 0;
    for (int i = 0; f && i < f->n_keys && n < max; i++) names[n++] = f->keys[i].name;
    for (int i = 0; i < c->model.n_opts && n < max; i++) {
        bool seen = false;
        for (int j = 0; j < n && !seen; j++) seen = !strcmp(names[j], c->model.opts[i].key);
        if (!seen) names[n++] = c->model.opts[i].key;
    }
    return n;
}

static const char *model_opt_text(const segc_config *c, const char *name) {
    segc_model_spec s = segc_config_model_spec(c, 1, 1);
    const char *t = segc_spec_text(&s, name);
    return t ? t : "";
}

static void emit_model_opts(sbuf *b, const segc_config *c) {
    const char *names[2 * SEGC_MODEL_MAX_OPTS + 64];
    int n = model_opt_names(c, names, (int)(sizeof names / sizeof *names));
    for (int i = 0; i < n; i++) {
        const char *t = model_opt_text(c, names[i]);
        sb_printf(b, "  %s: ", names[i]);
        if (t[0] == '[') sb_printf(b, "%s", t);
        else if (!*t) sb_printf(b, "\"\"");
        else sb_printf(b, "%s", t);
        sb_printf(b, "\n");
    }
}

segc_model_spec segc_config_model_spec(const segc_config *c, int num_classes, int in_channels) {
    segc_model_spec s = {c->model.type, c->model.variant, c->model.num_classes ? c->model.num_classes : num_classes,
                         c->model.in_channels ? c->model.in_channels : in_channels, c->model.opts, c->model.n_opts,
                         segc_loss_cfg_given(&c->loss) ? &c->loss : NULL};
    return s;
}

char *segc_config_to_yaml(const segc_config *c) {
    sbuf b = {0};
    sb_printf(&b, "# segc resolved configuration\n");
    const char *prev = "";
    for (int i = 0; i < N_FIELDS; i++) {
        const char *k = schema[i].key;
        /* open the sections this key does not share with the previous one */
        int depth = 0;
        const char *a = k, *p = prev;
        for (;;) {
            const char *da = strchr(a, '.'), *dp = strchr(p, '.');
            if (!da || !dp || da - a != dp - p || strncmp(a, p, (size_t)(da - a)) != 0) break;
            a = da + 1, p = dp + 1, depth++;
        }
        for (const char *dot; (dot = strchr(a, '.')); a = dot + 1, depth++)
            sb_printf(&b, "%*s%.*s:\n", 2 * depth, "", (int)(dot - a), a);
        sb_printf(&b, "%*s%s: ", 2 * depth, "", a);
        emit_value(&b, &schema[i], c);
        sb_printf(&b, "\n");
        prev = k;
        if (!strncmp(k, "model.", 6) && (i + 1 == N_FIELDS || strncmp(schema[i + 1].key, "model.", 6) != 0))
            emit_model_opts(&b, c);
    }
    char *ly = segc_loss_cfg_yaml(&c->loss, 0);
    if (ly) sb_printf(&b, "%s", ly);
    free(ly);
    return b.p;
}

bool segc_config_save(const segc_config *c, const char *path, char *err, size_t errlen) {
    char *y = segc_config_to_yaml(c);
    if (!y) return segc_errorf(err, errlen, "%s: out of memory", path);
    const void *parts[1] = {y};
    size_t sizes[1] = {strlen(y)};
    bool ok = segc_write_file_atomic(path, parts, sizes, 1, err, errlen);
    free(y);
    return ok;
}

int segc_config_diff(const segc_config *a, const segc_config *b, char *buf, size_t n) {
    int nd = 0;
    size_t used = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < N_FIELDS; i++) {
        sbuf va = {0}, vb = {0};
        emit_value(&va, &schema[i], a);
        emit_value(&vb, &schema[i], b);
        if (va.p && vb.p && strcmp(va.p, vb.p) != 0) {
            if (used < n) {
                int k = snprintf(buf + used, n - used, "%s%s: %s -> %s", nd ? "; " : "", schema[i].key, va.p, vb.p);
                if (k > 0) used += (size_t)k;
            }
            nd++;
        }
        free(va.p);
        free(vb.p);
    }
    const char *names[2 * SEGC_MODEL_MAX_OPTS + 64];
    int nn = model_opt_names(a, names, (int)(sizeof names / sizeof *names));
    nn += model_opt_names(b, names + nn, (int)(sizeof names / sizeof *names) - nn);
    for (int i = 0; i < nn; i++) {
        bool dup = false;
        for (int j = 0; j < i && !dup; j++) dup = !strcmp(names[i], names[j]);
        const char *ta = model_opt_text(a, names[i]), *tb = model_opt_text(b, names[i]);
        if (dup || !strcmp(ta, tb)) continue;
        if (used < n) {
            int k = snprintf(buf + used, n - used, "%smodel.%s: %s -> %s", nd ? "; " : "", names[i], ta, tb);
            if (k > 0) used += (size_t)k;
        }
        nd++;
    }
    char *la = segc_loss_cfg_yaml(&a->loss, 0), *lb = segc_loss_cfg_yaml(&b->loss, 0);
    if (la && lb && strcmp(la, lb) != 0) {
        if (used < n) {
            int k = snprintf(buf + used, n - used, "%sloss section differs", nd ? "; " : "");
            if (k > 0) used += (size_t)k;
        }
        nd++;
    }
    free(la);
    free(lb);
    return nd;
}
