#include "harness.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segc/ops_conv.h"

segc_st_file *fx_open(const char *file) {
    /* the fixtures come from PyTorch, whose CPU convolutions are direct: parity holds to
       f32 rounding only against direct (Winograd: test_conv's own comparison) */
    segc_conv_set_algo(SEGC_CONV_ALGO_DIRECT);
    char path[512], err[512];
    snprintf(path, sizeof path, "tests/fixtures/data/%s", file);
    segc_st_file *f = segc_st_open(path, err, sizeof err);
    if (!f) fail_msg("fixture: %s (run `make fixtures` to regenerate)", err);
    return f;
}

segc_tensor *fx_tensor(segc_ctx *ctx, const segc_st_file *f, const char *cas, const char *key) {
    char name[256];
    snprintf(name, sizeof name, "%s/%s", cas, key);
    const segc_st_entry *e = segc_st_get(f, name);
    if (!e) return NULL;
    segc_tensor *t = segc_tensor_new(ctx, e->dtype, e->ndim, e->shape);
    memcpy(t->data, e->data, e->nbytes);
    return t;
}

int fx_n_inputs(const segc_st_file *f, const char *cas) {
    char name[256];
    int k = 0;
    for (;; k++) {
        snprintf(name, sizeof name, "%s/in%d", cas, k);
        if (!segc_st_get(f, name)) return k;
    }
}

static cJSON *case_params(const segc_st_file *f, const char *cas) {
    const char *js = segc_st_meta(f, cas);
    return js ? cJSON_Parse(js) : NULL;
}
long fx_param_int(const segc_st_file *f, const char *cas, const char *key, long dflt) {
    cJSON *j = case_params(f, cas), *v = j ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    long r = cJSON_IsNumber(v) ? (long)v->valuedouble : cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
    cJSON_Delete(j);
    return r;
}
double fx_param_double(const segc_st_file *f, const char *cas, const char *key, double dflt) {
    cJSON *j = case_params(f, cas), *v = j ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    double r = cJSON_IsNumber(v) ? v->valuedouble : dflt;
    cJSON_Delete(j);
    return r;
}
const char *fx_param_str(const segc_st_file *f, const char *cas, const char *key, const char *dflt, char *buf, size_t n) {
    cJSON *j = case_params(f, cas), *v = j ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    snprintf(buf, n, "%s", cJSON_IsString(v) ? v->valuestring : dflt ? dflt : "");
    cJSON_Delete(j);
    return (cJSON_IsString(v) || dflt) ? buf : NULL;
}
int fx_param_ints(const segc_st_file *f, const char *cas, const char *key, long *out, int max) {
    cJSON *j = case_params(f, cas), *v = j ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    int k = 0;
    if (cJSON_IsArray(v)) for (cJSON *it = v->child; it && k < max; it = it->next) out[k++] = (long)it->valuedouble;
    else if (cJSON_IsNumber(v) && max > 0) out[k++] = (long)v->valuedouble;
    cJSON_Delete(j);
    return k;
}

static double val_at(const segc_tensor *t, int64_t i) {
    switch (t->dtype) {
    case SEGC_F32: return segc_f32(t)[i];
    case SEGC_BF16: return segc_bf16_to_f32(segc_bf16p(t)[i]);
    case SEGC_U8: return ((const uint8_t *)t->data)[i];
    case SEGC_I32: return ((const int32_t *)t->data)[i];
    default: return (double)((const int64_t *)t->data)[i];
    }
}

static bool close_impl(const char *what, const segc_tensor *got, const float *gotf, const segc_tensor *want, double tol) {
    int64_t n = segc_numel(want);
    if (got && segc_numel(got) != n) {
        char a[96], b[96];
        print_message("  %-40s numel mismatch: got %s want %s\n", what, segc_shape_str(got, a, sizeof a),
                      segc_shape_str(want, b, sizeof b));
        return false;
    }
    double maxabs = 0;
    for (int64_t i = 0; i < n; i++) maxabs = fmax(maxabs, fabs(val_at(want, i)));
    double worst = 0, wa = n ? (got ? val_at(got, 0) : gotf[0]) : 0, wb = n ? val_at(want, 0) : 0;
    int64_t wi = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = got ? val_at(got, i) : gotf[i], b = val_at(want, i);
        double d = fabs(a - b) / fmax(fmax(fabs(b), 1e-3 * maxabs), 1e-12);
        if (!(d <= worst)) { worst = d; wi = i; wa = a; wb = b; }   /* NaN counts as worst */
        if (isnan(d)) break;
    }
    bool ok = worst <= tol;
    print_message("  %-40s %s max rel err %.3g (tol %.1g) at %lld: got %.7g want %.7g\n", what, ok ? "ok  " : "FAIL",
                  worst, tol, (long long)wi, wa, wb);
    return ok;
}
bool fx_close(const char *what, const segc_tensor *got, const segc_tensor *want, double tol) {
    return close_impl(what, got, NULL, want, tol);
}
bool fx_close_f32(const char *what, const float *got, const segc_tensor *want, double tol) {
    return close_impl(what, NULL, got, want, tol);
}

double fx_norm(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

bool fx_close_norm(const char *what, const float *got, const float *want, int64_t n, double floor, double tol) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
    double ref = fx_norm(want, n), err = sqrt(d) / fmax(fmax(ref, floor), 1e-30);
    bool ok = err <= tol;
    print_message("  %-60s %s norm rel err %.3g (tol %.1g, |want| %.3g)\n", what, ok ? "ok  " : "FAIL", err, tol, ref);
    return ok;
}

bool fx_check_case(const segc_st_file *f, const char *cas, fx_op_fn fn, double tol_out, double tol_grad) {
    segc_ctx *ctx = segc_ctx_new(1234);
    segc_tensor *ins[SEGC_MAX_INPUTS] = {0}, *grads[SEGC_MAX_INPUTS] = {0};
    int n = fx_n_inputs(f, cas);
    char key[32], what[160];
    for (int k = 0; k < n && k < SEGC_MAX_INPUTS; k++) {
        snprintf(key, sizeof key, "in%d", k);
        ins[k] = fx_tensor(ctx, f, cas, key);
        snprintf(key, sizeof key, "grad%d", k);
        grads[k] = fx_tensor(ctx, f, cas, key);
        ins[k]->requires_grad = grads[k] != NULL;
    }
    segc_tensor *out = fn(ctx, ins, n, f, cas);
    bool ok = true;
    if (!out) {
        print_message("  %s: op failed: %s\n", cas, segc_last_error(ctx));
        segc_ctx_free(ctx);
        return false;
    }
    snprintf(what, sizeof what, "%s out", cas);
    ok &= fx_close(what, out, fx_tensor(ctx, f, cas, "out"), tol_out);
    segc_tensor *gout = fx_tensor(ctx, f, cas, "gout");
    bool any_grad = false;
    for (int k = 0; k < n; k++) any_grad |= grads[k] != NULL;
    if (any_grad && gout) {
        if (!segc_backward_from(ctx, out, segc_f32(gout))) {
            print_message("  %s: backward failed: %s\n", cas, segc_last_error(ctx));
            ok = false;
        } else {
            for (int k = 0; k < n; k++) {
                if (!grads[k]) continue;
                snprintf(what, sizeof what, "%s grad%d", cas, k);
                if (!ins[k]->grad) { print_message("  %s: no gradient reached the input\n", what); ok = false; continue; }
                ok &= fx_close_f32(what, ins[k]->grad, grads[k], tol_grad);
            }
        }
    }
    segc_ctx_free(ctx);
    return ok;
}

int fx_check_all(const segc_st_file *f, const char *prefix, fx_op_fn fn, double tol_f32, double tol_bf16) {
    int ran = 0;
    bool all = true;
    size_t pl = strlen(prefix);
    for (int i = 0; i < segc_st_count(f); i++) {
        const segc_st_entry *e = segc_st_at(f, i);
        const char *slash = strrchr(e->name, '/');
        if (!slash || strcmp(slash, "/out") != 0 || strncmp(e->name, prefix, pl) != 0) continue;
        char cas[256];
        snprintf(cas, sizeof cas, "%.*s", (int)(slash - e->name), e->name);
        double tol = e->dtype == SEGC_BF16 ? tol_bf16 : tol_f32;
        all &= fx_check_case(f, cas, fn, tol, tol);
        ran++;
    }
    if (ran == 0) fail_msg("fixture has no case starting with '%s'", prefix);
    assert_true(all);
    return ran;
}

gc_opts gc_default(void) { return (gc_opts){.eps = 1e-2, .atol = 2e-3, .rtol = 2e-2, .max_elems = 48, .seed = 7}; }

static double weighted_sum(const segc_tensor *out, const float *r) {
    double s = 0;
    int64_t n = segc_numel(out);
    for (int64_t i = 0; i < n; i++) s += val_at(out, i) * (double)r[i];
    return s;
}

bool gradcheck(segc_ctx *ctx, const char *name, gc_fn fn, segc_tensor **ins, int n, void *user, gc_opts o) {
    segc_tensor *out = fn(ctx, ins, n, user);
    if (!out) { print_message("  gradcheck %s: forward failed: %s\n", name, segc_last_error(ctx)); return false; }
    int64_t no = segc_numel(out);
    float *r = malloc((size_t)no * sizeof(float));
    segc_rng rng;
    segc_rng_init(&rng, o.seed);
    segc_rng_fill_normal(&rng, r, no, 0, 1);
    if (!segc_backward_from(ctx, out, r)) {
        print_message("  gradcheck %s: backward failed: %s\n", name, segc_last_error(ctx));
        free(r);
        return false;
    }
    bool prev = segc_set_grad_enabled(ctx, false);
    bool ok = true;
    double worst = 0;
    for (int k = 0; k < n; k++) {
        segc_tensor *x = ins[k];
        if (!x || !x->requires_grad || x->dtype != SEGC_F32) continue;
        if (!x->grad) { print_message("  gradcheck %s: input %d got no gradient\n", name, k); ok = false; continue; }
        int64_t nx = segc_numel(x);
        int m = nx < o.max_elems ? (int)nx : o.max_elems;
        for (int j = 0; j < m; j++) {
            int64_t i = nx <= o.max_elems ? j : (int64_t)(segc_rng_u32(&rng) % (uint64_t)nx);
            float *xv = segc_f32(x), orig = xv[i];
            xv[i] = orig + (float)o.eps;
            double fp = weighted_sum(fn(ctx, ins, n, user), r);
            xv[i] = orig - (float)o.eps;
            double fm = weighted_sum(fn(ctx, ins, n, user), r);
            xv[i] = orig;
            double num = (fp - fm) / (2 * o.eps), ana = x->grad[i];
            double err = fabs(num - ana), lim = o.atol + o.rtol * fabs(num);
            if (err / lim > worst) worst = err / lim;
            if (!(err <= lim)) {
                if (ok) print_message("  gradcheck %s: input %d elem %lld: numeric %.6g analytic %.6g\n", name, k, (long long)i, num, ana);
                ok = false;
            }
        }
    }
    segc_set_grad_enabled(ctx, prev);
    print_message("  gradcheck %-36s %s (worst err/limit %.3f)\n", name, ok ? "ok" : "FAIL", worst);
    free(r);
    return ok;
}

segc_tensor *t_randn(segc_ctx *ctx, int ndim, const int64_t *shape, float scale, bool rg) {
    segc_tensor *t = segc_tensor_new(ctx, SEGC_F32, ndim, shape);
    segc_rng_fill_normal(&ctx->rng, segc_f32(t), segc_numel(t), 0, scale);
    t->requires_grad = rg;
    return t;
}
segc_tensor *t_uniform(segc_ctx *ctx, int ndim, const int64_t *shape, float lo, float hi, bool rg) {
    segc_tensor *t = segc_tensor_new(ctx, SEGC_F32, ndim, shape);
    segc_rng_fill_uniform(&ctx->rng, segc_f32(t), segc_numel(t), lo, hi);
    t->requires_grad = rg;
    return t;
}

void expect_msg_at(const char *file, int line, bool ok, const char *msg, ...) {
    if (ok) fail_msg("%s:%d: expected a failure, but the call succeeded", file, line);
    if (!msg) msg = "";
    print_message("  expected error: %s\n", msg);
    va_list ap;
    va_start(ap, msg);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(msg, needle)) {
            va_end(ap);
            fail_msg("%s:%d: error '%s' lacks '%s'", file, line, msg, needle);
        }
    va_end(ap);
}

const char *harness_data_root(void) {
    const char *env = getenv("SEGC_DATA");
    return env && *env ? env : "../shared/data";
}

const char *need_data(char *buf, size_t n, const char *sub) {
    snprintf(buf, n, "%s/%s", harness_data_root(), sub);
    if (access(buf, R_OK) != 0)
        fail_msg("%s not found: this test needs the shared data (../shared/data, or set SEGC_DATA)", buf);
    return buf;
}
