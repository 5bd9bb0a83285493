/* The model registry: families by model.type, validation of their config
 * keys (did-you-mean for unknown ones), key readers, and the generic model
 * calls that dispatch to a family. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/model.h"
#include "segc/ops.h"

extern const segc_model_family segc_family_segformer;
extern const segc_model_family segc_family_unet2d;
extern const segc_model_family segc_family_segmenter;
extern const segc_model_family segc_family_deeplabv3plus;


static const segc_model_family *const families[] = {
    &segc_family_segformer,
    &segc_family_unet2d,
    &segc_family_segmenter,
    &segc_family_deeplabv3plus,
};
#define N_FAMILIES ((int)(sizeof families / sizeof families[0]))

const char *segc_task_name(segc_task_kind t) { return t == SEGC_TASK_DETECTION ? "detection" : "segmentation"; }

int segc_model_n_families(void) { return N_FAMILIES; }
const segc_model_family *segc_model_family_at(int i) { return i >= 0 && i < N_FAMILIES ? families[i] : NULL; }

const segc_model_family *segc_model_family_find(const char *type) {
    for (int i = 0; type && i < N_FAMILIES; i++)
        if (!strcmp(families[i]->type, type)) return families[i];
    return NULL;
}

void segc_model_type_list(char *buf, size_t n) {
    size_t used = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < N_FAMILIES && used < n; i++) {
        int k = snprintf(buf + used, n - used, "%s%s", i ? "|" : "", families[i]->type);
        if (k > 0) used += (size_t)k;
    }
}

static bool in_choices(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && !strncmp(p, v, n)) return true;
        p += len + (p[len] == '|');
    }
    return false;
}

const segc_model_key *segc_model_family_key(const segc_model_family *f, const char *name) {
    for (int i = 0; f && i < f->n_keys; i++)
        if (!strcmp(f->keys[i].name, name)) return &f->keys[i];
    return NULL;
}

/* ---- value parsing (the YAML text the config stored) ---- */
static bool parse_int_text(const char *s, long long *out) {
    while (isspace((unsigned char)*s)) s++;
    if (!*s) return false;
    char *end;
    long long v = strtoll(s, &end, 0);
    while (isspace((unsigned char)*end)) end++;
    if (*end) return false;
    *out = v;
    return true;
}

static bool parse_double_text(const char *s, double *out) {
    while (isspace((unsigned char)*s)) s++;
    if (!*s) return false;
    char *end;
    double v = strtod(s, &end);
    while (isspace((unsigned char)*end)) end++;
    if (*end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_bool_text(const char *s, bool *out) {
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (!strcmp(s, yes[i])) { *out = true; return true; }
        if (!strcmp(s, no[i])) { *out = false; return true; }
    }
    return false;
}

/* "[a, b, c]" (or a single scalar): items copied into item[i] (at most max); count or -1 */
static int split_list(const char *s, char item[][64], int max) {
    while (isspace((unsigned char)*s)) s++;
    bool bracket = *s == '[';
    if (bracket) s++;
    int n = 0;
    for (;;) {
        while (isspace((unsigned char)*s)) s++;
        if (bracket && *s == ']') { s++; break; }
        if (!*s) { if (bracket) return -1; break; }
        size_t len = strcspn(s, ",]");
        size_t l = len;
        while (l && isspace((unsigned char)s[l - 1])) l--;
        if (!l || l >= 64) return -1;
        if (n < max) snprintf(item[n], 64, "%.*s", (int)l, s);
        n++;
        s += len;
        if (*s == ',') s++;
    }
    while (isspace((unsigned char)*s)) s++;
    return *s ? -1 : n;
}

#define MAX_LIST 32

bool segc_model_key_check(const segc_model_key *k, const char *value, char *err, size_t errlen) {
    long long iv;
    double dv;
    bool bv;
    switch (k->kind) {
    case SEGC_KEY_INT:
        if (!parse_int_text(value, &iv) || iv < -2147483647LL || iv > 2147483647LL)
            return segc_errorf(err, errlen, "model.%s: expected an integer, found '%s'", k->name, value);
        return true;
    case SEGC_KEY_DOUBLE:
        if (!parse_double_text(value, &dv)) return segc_errorf(err, errlen, "model.%s: expected a number, found '%s'", k->name, value);
        return true;
    case SEGC_KEY_BOOL:
        if (!parse_bool_text(value, &bv)) return segc_errorf(err, errlen, "model.%s: expected true or false, found '%s'", k->name, value);
        return true;
    case SEGC_KEY_STRING:
        if (k->choices && !in_choices(k->choices, value))
            return segc_errorf(err, errlen, "model.%s: expected one of %s, found '%s'", k->name, k->choices, value);
        return true;
    case SEGC_KEY_INTS: case SEGC_KEY_DOUBLES: {
        char items[MAX_LIST][64];
        int n = split_list(value, items, MAX_LIST);
        if (n < 0 || n > MAX_LIST)
            return segc_errorf(err, errlen, "model.%s: expected a list of at most %d numbers, found '%s'", k->name, MAX_LIST, value);
        for (int i = 0; i < n; i++) {
            bool ok = k->kind == SEGC_KEY_INTS ? parse_int_text(items[i], &iv) : parse_double_text(items[i], &dv);
            if (!ok)
                return segc_errorf(err, errlen, "model.%s: expected a list of %s, found '%s' at position %d", k->name,
                                   k->kind == SEGC_KEY_INTS ? "integers" : "numbers", items[i], i);
        }
        return true;
    }
    }
    return false;
}

bool segc_model_spec_validate(const segc_model_spec *s, char *err, size_t errlen) {
    const segc_model_family *f = segc_model_family_find(s->type);
    if (!f) {
        char list[256];
        segc_model_type_list(list, sizeof list);
        const char *best = NULL;
        int bd = 3;
        for (int i = 0; i < N_FAMILIES; i++) {
            int d = segc_edit_distance(s->type ? s->type : "", families[i]->type);
            if (d < bd) bd = d, best = families[i]->type;
        }
        if (best) return segc_errorf(err, errlen, "model.type: unknown model family '%s'; did you mean '%s'? (%s)", s->type ? s->type : "", best, list);
        return segc_errorf(err, errlen, "model.type: unknown model family '%s' (expected one of %s)", s->type ? s->type : "", list);
    }
    if (s->variant && *s->variant) {
        if (!f->variants) return segc_errorf(err, errlen, "model.variant: %s has no variants, found '%s'", f->type, s->variant);
        if (!in_choices(f->variants, s->variant))
            return segc_errorf(err, errlen, "model.variant: expected one of %s for %s, found '%s'", f->variants, f->type, s->variant);
    }
    /* 0: not known yet (a configuration checked before its dataset is opened) */
    if (s->num_classes < 0 || s->num_classes > 255)
        return segc_errorf(err, errlen, "model.num_classes: expected 1..255, found %d", s->num_classes);
    if (s->in_channels < 0 || s->in_channels > 64)
        return segc_errorf(err, errlen, "model.in_channels: expected 1..64, found %d", s->in_channels);
    for (int i = 0; i < s->n_opts; i++) {
        const segc_model_opt *o = &s->opts[i];
        const segc_model_key *k = segc_model_family_key(f, o->key);
        if (!k) {
            const char *best = NULL;
            int bd = 4;
            for (int j = 0; j < f->n_keys; j++) {
                int d = segc_edit_distance(o->key, f->keys[j].name);
                if (d < bd) bd = d, best = f->keys[j].name;
            }
            if (best) return segc_errorf(err, errlen, "unknown config key 'model.%s' for model.type %s; did you mean 'model.%s'?", o->key, f->type, best);
            return segc_errorf(err, errlen, "unknown config key 'model.%s' for model.type %s (see `segc models %s`)", o->key, f->type, f->type);
        }
        if (!segc_model_key_check(k, o->value, err, errlen)) return false;
    }
    if (s->loss && f->task != SEGC_TASK_SEGMENTATION)
        return segc_errorf(err, errlen, "loss: the loss section configures segmentation losses; model.type %s is a %s model",
                           f->type, segc_task_name(f->task));
    if (s->loss && !segc_loss_cfg_check_model(s->loss, f->type, s->num_classes, true, err, errlen)) return false;
    return !f->validate || f->validate(s, err, errlen);
}

/* ---- readers ---- */
const char *segc_spec_text(const segc_model_spec *s, const char *key) {
    for (int i = s->n_opts - 1; i >= 0; i--)
        if (!strcmp(s->opts[i].key, key)) return s->opts[i].value;
    const segc_model_key *k = segc_model_family_key(segc_model_family_find(s->type), key);
    return k ? k->dflt : NULL;
}

int segc_spec_int(const segc_model_spec *s, const char *key) {
    const char *t = segc_spec_text(s, key);
    long long v = 0;
    return t && parse_int_text(t, &v) ? (int)v : 0;
}

double segc_spec_double(const segc_model_spec *s, const char *key) {
    const char *t = segc_spec_text(s, key);
    double v = 0;
    return t && parse_double_text(t, &v) ? v : 0;
}

bool segc_spec_bool(const segc_model_spec *s, const char *key) {
    const char *t = segc_spec_text(s, key);
    bool v = false;
    return t && parse_bool_text(t, &v) && v;
}

const char *segc_spec_str(const segc_model_spec *s, const char *key, char *buf, size_t n) {
    const char *t = segc_spec_text(s, key);
    snprintf(buf, n, "%s", t ? t : "");
    return buf;
}

static int spec_list(const segc_model_spec *s, const char *key, bool ints, void *out, int max) {
    const char *t = segc_spec_text(s, key);
    char items[MAX_LIST][64];
    int n = t ? split_list(t, items, MAX_LIST) : 0;
    if (n < 0) return 0;
    if (n > max) n = max;
    for (int i = 0; i < n; i++) {
        long long iv = 0;
        double dv = 0;
        if (ints) ((int *)out)[i] = parse_int_text(items[i], &iv) ? (int)iv : 0;
        else ((double *)out)[i] = parse_double_text(items[i], &dv) ? dv : 0;
    }
    return n;
}
int segc_spec_ints(const segc_model_spec *s, const char *key, int *out, int max) { return spec_list(s, key, true, out, max); }
int segc_spec_doubles(const segc_model_spec *s, const char *key, double *out, int max) {
    return spec_list(s, key, false, out, max);
}

/* ---- models ---- */
segc_model *segc_model_new(const segc_model_spec *s, char *err, size_t errlen) {
    if (s->num_classes < 1) return segc_errorf(err, errlen, "model.num_classes: expected 1..255, found %d", s->num_classes), NULL;
    if (s->in_channels < 1) return segc_errorf(err, errlen, "model.in_channels: expected 1..64, found %d", s->in_channels), NULL;
    if (!segc_model_spec_validate(s, err, errlen)) return NULL;
    const segc_model_family *f = segc_model_family_find(s->type);
    segc_model *m = calloc(1, sizeof *m);
    if (!m) return segc_errorf(err, errlen, "model: out of memory"), NULL;
    m->family = f;
    snprintf(m->variant, sizeof m->variant, "%s", s->variant && *s->variant ? s->variant : f->default_variant ? f->default_variant : "");
    m->num_classes = m->num_outputs = s->num_classes;
    m->in_channels = s->in_channels;
    m->probs = SEGC_PROBS_SOFTMAX;
    if (s->loss) {
        m->loss = malloc(sizeof *m->loss);
        if (!m->loss) return free(m), segc_errorf(err, errlen, "model: out of memory"), NULL;
        *m->loss = *s->loss;
    }
    segc_params_init(&m->params);
    if (!f->create(m, s, err, errlen)) {
        segc_params_free(&m->params);
        free(m->loss);
        free(m);
        return NULL;
    }
    return m;
}

void segc_model_init(segc_model *m, uint64_t seed) {
    if (m && m->family->init) m->family->init(m, seed);
}

void segc_model_free(segc_model *m) {
    if (!m) return;
    if (m->family->destroy) m->family->destroy(m);
    segc_params_free(&m->params);
    free(m->loss);
    free(m);
}

bool segc_model_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out) {
    memset(out, 0, sizeof *out);
    if (!images || ctx->has_err) return false;
    if (images->ndim != 4 || images->shape[1] != m->in_channels) {
        segc_set_error(ctx, "%s: expected images [N, %d, H, W], found %d-D with %lld channels", m->family->type,
                       m->in_channels, images->ndim, images->ndim > 1 ? (long long)images->shape[1] : 0LL);
        return false;
    }
    return m->family->forward(ctx, m, images, out) && !ctx->has_err;
}

segc_tensor *segc_model_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t) {
    if (ctx->has_err) return NULL;
    return m->family->loss(ctx, m, out, t);
}

segc_tensor *segc_model_postprocess(segc_ctx *ctx, const segc_model *m, const segc_tensor *probs) {
    if (!m->family->postprocess) {
        segc_set_error(ctx, "postprocess: %s has none (its labels are the inference's argmax)", m->family->type);
        return NULL;
    }
    if (!probs || probs->ndim != 4 || probs->dtype != SEGC_F32) {
        segc_set_error(ctx, "postprocess: expected f32 probabilities [N, K, H, W]");
        return NULL;
    }
    segc_tensor *lab = segc_tensor_new(ctx, SEGC_U8, 3, (int64_t[]){probs->shape[0], probs->shape[2], probs->shape[3]});
    return lab && m->family->postprocess(ctx, m, probs, lab) ? lab : NULL;
}

bool segc_model_detect(segc_ctx *ctx, const segc_model *m, const segc_model_out *out, int in_h, int in_w,
                       const int *ori_h, const int *ori_w, const segc_detect_opts *o, segc_detections *dets) {
    if (ctx->has_err) return false;
    if (!m->family->detect) {
        segc_set_error(ctx, "detect: %s is a %s model without detection outputs", m->family->type,
                       segc_task_name(m->family->task));
        return false;
    }
    return m->family->detect(ctx, m, out, in_h, in_w, ori_h, ori_w, o, dets) && !ctx->has_err;
}

segc_tensor *segc_model_logits_fn(segc_ctx *ctx, void *model, segc_tensor *images) {
    segc_model_out out;
    if (!segc_model_forward(ctx, model, images, &out)) return NULL;
    return out.maps[0];
}

bool segc_model_load_pretrained(segc_model *m, const char *path, bool strict, segc_load_report *rep, char *err,
                                size_t errlen) {
    if (m->family->load_pretrained) return m->family->load_pretrained(m, path, strict, rep, err, errlen);
    return segc_params_load(&m->params, path, strict, rep, err, errlen);
}
