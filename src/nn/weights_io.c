/* Loading and saving parameter stores as safetensors with PyTorch/HF names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/nn.h"
#include "segc/safetensors.h"

static bool is_counter(const char *name) {
    size_t n = strlen(name), k = strlen("num_batches_tracked");
    return n >= k && strcmp(name + n - k, "num_batches_tracked") == 0;
}

static void shape_str(int ndim, const int64_t *s, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

bool segc_params_load(segc_params *p, const char *path, bool strict, segc_load_report *rep, char *err, size_t errlen) {
    segc_load_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    segc_st_file *f = segc_st_open(path, err, errlen);
    if (!f) return false;
    bool *seen = calloc((size_t)p->n + 1, 1);
    bool ok = true;
    for (int i = 0; i < segc_st_count(f); i++) {
        const segc_st_entry *e = segc_st_at(f, i);
        int idx = segc_params_index(p, e->name);
        if (idx < 0) {
            if (!rep->unexpected++) snprintf(rep->first_unexpected, sizeof rep->first_unexpected, "%s", e->name);
            continue;
        }
        segc_tensor *t = p->t[idx];
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        bool same = e->ndim == t->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = e->shape[d] == t->shape[d];
        bool dtype_ok = e->dtype_known && (e->dtype == SEGC_F32 || e->dtype == SEGC_BF16 ||
                                           (e->dtype == SEGC_I64 && numel == 1));
        if (!same || !dtype_ok) {
            if (!rep->mismatched++) {
                char a[96], b[96];
                shape_str(e->ndim, e->shape, a, sizeof a);
                shape_str(t->ndim, t->shape, b, sizeof b);
                snprintf(rep->first_mismatch, sizeof rep->first_mismatch, "%s: file has %s %s, model expects f32 %s",
                         e->name, e->dtype_str, a, b);
            }
            continue;
        }
        float *dst = segc_f32(t);
        if (e->dtype == SEGC_F32) memcpy(dst, e->data, e->nbytes);
        else if (e->dtype == SEGC_BF16) segc_bf16_to_f32_n(e->data, dst, numel);
        else { int64_t v; memcpy(&v, e->data, 8); dst[0] = (float)v; }
        seen[idx] = true;
        rep->loaded++;
    }
    for (int i = 0; i < p->n; i++)
        if (!seen[i] && !rep->missing++) snprintf(rep->first_missing, sizeof rep->first_missing, "%s", p->t[i]->name);
    if (strict && (rep->missing || rep->unexpected || rep->mismatched)) {
        if (rep->mismatched)
            snprintf(err, errlen, "%s: tensor %s (%d mismatched)", path, rep->first_mismatch, rep->mismatched);
        else if (rep->missing)
            snprintf(err, errlen, "%s: missing tensor '%s' (%d missing, %d unexpected)", path, rep->first_missing,
                     rep->missing, rep->unexpected);
        else
            snprintf(err, errlen, "%s: unexpected tensor '%s' (%d unexpected)", path, rep->first_unexpected,
                     rep->unexpected);
        ok = false;
    }
    free(seen);
    segc_st_close(f);
    return ok;
}

bool segc_params_save(const segc_params *p, const char *path, const char *const *meta_kv, int n_meta, char *err,
                      size_t errlen) {
    segc_st_writer *w = segc_st_writer_new();
    for (int i = 0; i < p->n; i++) {
        const segc_tensor *t = p->t[i];
        if (is_counter(t->name) && segc_numel(t) == 1) {
            int64_t v = (int64_t)segc_f32(t)[0];
            segc_st_writer_add(w, t->name, SEGC_I64, t->ndim, t->shape, &v);
        } else {
            segc_st_writer_add(w, t->name, SEGC_F32, t->ndim, t->shape, t->data);
        }
    }
    segc_st_writer_meta(w, "format", "pt");
    for (int i = 0; i + 1 < 2 * n_meta; i += 2) segc_st_writer_meta(w, meta_kv[i], meta_kv[i + 1]);
    bool ok = segc_st_writer_save(w, path, err, errlen);
    segc_st_writer_free(w);
    return ok;
}

void segc_load_report_print(const segc_load_report *r, const char *path) {
    fprintf(stderr, "weights %s: %d loaded, %d missing, %d unexpected, %d shape-mismatched\n", path, r->loaded,
            r->missing, r->unexpected, r->mismatched);
    if (r->missing) fprintf(stderr, "  first missing: %s\n", r->first_missing);
    if (r->unexpected) fprintf(stderr, "  first unexpected: %s\n", r->first_unexpected);
    if (r->mismatched) fprintf(stderr, "  first mismatch: %s\n", r->first_mismatch);
}
