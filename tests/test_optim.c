/* optim: parameter groups, SGD/AdamW parity with torch.optim, gradient
 * clipping, LR schedules vs mmengine's recursion, exact resume, errors. */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/optim.h"

static cJSON *meta_json(const segc_st_file *f, const char *key) {
    const char *js = segc_st_meta(f, key);
    if (!js) fail_msg("fixture metadata '%s' missing", key);
    cJSON *j = cJSON_Parse(js);
    assert_non_null(j);
    return j;
}

static double jnum(const cJSON *j, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static segc_sched_item item_from_json(const cJSON *it) {
    const char *k = cJSON_GetObjectItemCaseSensitive(it, "kind")->valuestring;
    int64_t b = (int64_t)jnum(it, "begin", 0), e = (int64_t)jnum(it, "end", (double)SEGC_SCHED_INF);
    if (!strcmp(k, "linear")) return segc_sched_linear(jnum(it, "start_factor", 0), jnum(it, "end_factor", 1), b, e);
    if (!strcmp(k, "constant")) return segc_sched_constant(jnum(it, "factor", 0), b, e);
    if (!strcmp(k, "poly")) return segc_sched_poly(jnum(it, "power", 1), jnum(it, "eta_min", 0), b, e);
    if (!strcmp(k, "cosine")) return segc_sched_cosine((int64_t)jnum(it, "t_max", 0), jnum(it, "eta_min", 0), b, e);
    if (!strcmp(k, "step")) return segc_sched_step((int64_t)jnum(it, "step_size", 0), jnum(it, "gamma", 0), b, e);
    if (!strcmp(k, "exp")) return segc_sched_exp(jnum(it, "gamma", 0), b, e);
    assert_string_equal(k, "multistep");
    int64_t ms[SEGC_SCHED_MAX_MILESTONES];
    int n = 0;
    for (const cJSON *m = cJSON_GetObjectItemCaseSensitive(it, "milestones")->child; m; m = m->next)
        ms[n++] = (int64_t)m->valuedouble;
    return segc_sched_multistep(ms, n, jnum(it, "gamma", 0), b, e);
}

static segc_schedule sched_from_json(const cJSON *items) {
    segc_schedule s;
    segc_schedule_init(&s);
    char err[256];
    for (const cJSON *it = items ? items->child : NULL; it; it = it->next)
        if (!segc_schedule_add(&s, item_from_json(it), err, sizeof err)) fail_msg("%s", err);
    return s;
}

static bool lr_close(double got, double want, double base) {
    return fabs(got - want) <= 1e-6 * fabs(want) + 1e-12 * base;
}

/* ---- schedules: closed form vs mmengine's recursive updates ---- */
static void test_schedules_vs_mmengine(void **state) {
    static const char *cases[] = {"none", "linear", "linear_down", "constant", "constant_late", "poly", "poly0",
                                  "cosine", "cosine_default", "multistep", "step", "exp", "segformer",
                                  "warmup_multistep", "warmup_cosine", "gaps", "overlap_mult"};
    segc_st_file *f = fx_open("optim.safetensors");
    int checked = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char key[64];
        snprintf(key, sizeof key, "sched_%s", cases[c]);
        cJSON *j = meta_json(f, key);
        segc_schedule s = sched_from_json(cJSON_GetObjectItemCaseSensitive(j, "items"));
        segc_schedule sf = segc_schedule_segformer(1500, 160000);
        const cJSON *bases = cJSON_GetObjectItemCaseSensitive(j, "base_lrs"), *lrs = cJSON_GetObjectItemCaseSensitive(j, "lrs");
        const cJSON *iters = cJSON_GetObjectItemCaseSensitive(j, "iters");
        int g = 0;
        for (const cJSON *b = bases->child, *row = lrs->child; b; b = b->next, row = row->next, g++) {
            const cJSON *t = iters->child, *v = row->child;
            for (; t && v; t = t->next, v = v->next) {
                int64_t it = (int64_t)t->valuedouble;
                double got = segc_schedule_lr(&s, b->valuedouble, it);
                if (!lr_close(got, v->valuedouble, b->valuedouble))
                    fail_msg("schedule %s group %d iter %lld: got %.17g want %.17g", cases[c], g, (long long)it, got,
                             v->valuedouble);
                if (!strcmp(cases[c], "segformer"))
                    assert_true(lr_close(segc_schedule_lr(&sf, b->valuedouble, it), v->valuedouble, b->valuedouble));
                checked++;
            }
        }
        cJSON_Delete(j);
    }
    assert_true(checked > 1000);
    segc_st_close(f);
}

/* ---- parameter-group rules ---- */
static bool head_is_norm(const char *name, void *user) {
    (void)user;
    return strstr(name, "layers.0.2.") != NULL;
}

static void test_param_group_rules(void **state) {
    segc_params p;
    segc_params_init(&p);
    const char *names[] = {"backbone.layers.0.1.0.attn.q.weight", "backbone.layers.0.1.0.attn.q.bias",
                           "backbone.layers.0.1.0.norm1.weight", "backbone.layers.0.1.0.norm1.bias",
                           "backbone.layers.0.2.weight", "backbone.layers.0.2.bias", "decode_head.conv_seg.weight",
                           "decode_head.conv_seg.bias", "decode_head.fusion.bn.weight", "decode_head.abcd_head.weight",
                           "backbone.subnet.bias", "backbone.ln_f.weight", "backbone.pos_block.scale"};
    int n = (int)(sizeof names / sizeof names[0]);
    for (int i = 0; i < n; i++) segc_params_add(&p, names[i], 1, SHAPE(3), true);
    segc_params_add(&p, "backbone.conv.weight", 4, SHAPE(2, 2, 1, 1), true);
    segc_params_add(&p, "decode_head.bn.running_mean", 1, SHAPE(3), false);
    segc_params_finalize(&p);
    double lr[16], dec[16];
    char err[256];
    /* equal-length keys "abcd" and "head": alphabetical first wins; "conv_seg" (longer) beats "head" */
    segc_custom_key keys[] = {{"head", SEGC_MULT(10), {0}},
                              {"abcd", SEGC_MULT(3), SEGC_MULT(0.5)},
                              {"conv_seg", {0}, SEGC_MULT(0.25)},
                              {"pos_block", {0}, SEGC_MULT(0)}};
    segc_paramwise_cfg cfg = {.custom_keys = keys, .n_custom_keys = 4, .bias_lr_mult = SEGC_MULT(2),
                              .bias_decay_mult = SEGC_MULT(0.1), .norm_decay_mult = SEGC_MULT(0),
                              .flat_decay_mult = SEGC_MULT(0.7)};
    assert_true(segc_param_groups(&p, &cfg, lr, dec, err, sizeof err));
    const double want_lr[] = {1, 2, 1, 1, 1, 2, 1, 1, 10, 3, 2, 1, 1, 1, 1};
    const double want_dec[] = {0.7, 0.1, 0, 0, 0.7, 0.1, 0.25, 0.25, 1, 0.5, 0.1, 0, 0, 1, 1};
    for (int i = 0; i < p.n; i++)
        if (lr[i] != want_lr[i] || dec[i] != want_dec[i])
            fail_msg("%s: lr_mult %g decay_mult %g, expected %g %g", p.t[i]->name, lr[i], dec[i], want_lr[i], want_dec[i]);
    /* a caller predicate replaces the name keys: layers.0.2 is a norm, norm1 is not */
    cfg.is_norm = head_is_norm;
    assert_true(segc_param_groups(&p, &cfg, lr, dec, err, sizeof err));
    assert_true(dec[2] == 0.7 && lr[3] == 2 && dec[3] == 0.1);   /* norm1.* now plain */
    assert_true(dec[4] == 0 && lr[5] == 1 && dec[5] == 0);       /* layers.0.2.* norm */
    /* explicit keys; an empty list marks nothing */
    const char *const mine[] = {"norm", NULL}, *const nothing[] = {NULL};
    cfg.is_norm = NULL;
    cfg.norm_keys = mine;
    assert_true(segc_param_is_norm(&cfg, "a.norm1.weight") && !segc_param_is_norm(&cfg, "a.bn.weight"));
    cfg.norm_keys = nothing;
    assert_false(segc_param_is_norm(&cfg, "a.norm1.weight"));
    /* default keys match at the module name's start or after '_' */
    assert_true(segc_param_is_norm(NULL, "x.layer_norm.weight") && segc_param_is_norm(NULL, "bn.bias"));
    assert_false(segc_param_is_norm(NULL, "x.align.weight") || segc_param_is_norm(NULL, "x.subnet.bias") ||
                 segc_param_is_norm(NULL, "norm") || segc_param_is_norm(NULL, "x.norm_scale"));
    /* nothing set: all ones */
    assert_true(segc_param_groups(&p, NULL, lr, dec, err, sizeof err));
    for (int i = 0; i < p.n; i++) assert_true(lr[i] == 1 && dec[i] == 1);
    /* bad configs */
    segc_custom_key bad[] = {{"head", SEGC_MULT(-1), {0}}};
    segc_paramwise_cfg bc = {.custom_keys = bad, .n_custom_keys = 1};
    assert_false(segc_param_groups(&p, &bc, lr, dec, err, sizeof err));
    assert_non_null(strstr(err, "param_groups: custom key 'head'"));
    segc_custom_key dup[] = {{"head", {0}, {0}}, {"head", {0}, {0}}};
    bc.custom_keys = dup;
    bc.n_custom_keys = 2;
    assert_false(segc_param_groups(&p, &bc, lr, dec, err, sizeof err));
    assert_non_null(strstr(err, "twice"));
    segc_paramwise_cfg nan_cfg = {.norm_decay_mult = SEGC_MULT(NAN)};
    assert_false(segc_param_groups(&p, &nan_cfg, lr, dec, err, sizeof err));
    assert_non_null(strstr(err, "norm_decay_mult"));
    segc_params_free(&p);
}

/* ---- parity with torch.optim over 20 steps ---- */
static void load_model(const segc_st_file *f, segc_params *p) {
    segc_params_init(p);
    cJSON *m = meta_json(f, "model");
    for (const cJSON *e = m->child; e; e = e->next) {
        const cJSON *shape = cJSON_GetArrayItem(e, 1);
        int64_t sh[SEGC_MAX_DIMS];
        int nd = 0;
        for (const cJSON *d = shape->child; d; d = d->next) sh[nd++] = (int64_t)d->valuedouble;
        segc_params_add(p, cJSON_GetArrayItem(e, 0)->valuestring, nd, sh, cJSON_IsTrue(cJSON_GetArrayItem(e, 2)));
    }
    cJSON_Delete(m);
    segc_params_finalize(p);
}

/* concatenated trainable tensors <-> flat params */
static void scatter(segc_params *p, const float *src, float *dst_base) {
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        int64_t n = segc_numel(p->t[i]);
        memcpy(dst_base + p->offset[i], src, (size_t)n * sizeof(float));
        src += n;
    }
}
static void gather(const segc_params *p, float *dst) {
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        int64_t n = segc_numel(p->t[i]);
        memcpy(dst, p->data + p->offset[i], (size_t)n * sizeof(float));
        dst += n;
    }
}
static const float *entry_f32(const segc_st_file *f, const char *name) {
    const segc_st_entry *e = segc_st_get(f, name);
    if (!e) fail_msg("fixture tensor '%s' missing", name);
    return e->data;
}

static void run_parity(const char *cas, const segc_paramwise_cfg *pw, bool scheduled_per_group) {
    segc_st_file *f = fx_open("optim.safetensors");
    segc_ctx *ctx = segc_ctx_new(1);
    segc_params p;
    load_model(f, &p);
    cJSON *j = meta_json(f, cas);
    const char *kind = cJSON_GetObjectItemCaseSensitive(j, "kind")->valuestring;
    segc_optim_cfg oc = segc_optim_defaults(strcmp(kind, "adamw") ? SEGC_OPT_SGD : SEGC_OPT_ADAMW, jnum(j, "lr", 0));
    oc.weight_decay = jnum(j, "weight_decay", 0);
    oc.beta1 = jnum(j, "beta1", oc.beta1);
    oc.beta2 = jnum(j, "beta2", oc.beta2);
    oc.eps = jnum(j, "eps", oc.eps);
    oc.momentum = jnum(j, "momentum", 0);
    oc.dampening = jnum(j, "dampening", 0);
    oc.nesterov = jnum(j, "nesterov", 0) != 0;
    oc.max_grad_norm = jnum(j, "max_grad_norm", 0);
    if (pw) oc.paramwise = *pw;
    char err[256];
    segc_optimizer *o = segc_optimizer_new(&p, &oc, err, sizeof err);
    if (!o) fail_msg("%s", err);
    /* multipliers as mmengine's constructor assigns them */
    const cJSON *lm = cJSON_GetObjectItemCaseSensitive(j, "lr_mult"), *dm = cJSON_GetObjectItemCaseSensitive(j, "decay_mult");
    for (int i = 0; i < p.n; i++) {
        if (!p.trainable[i]) continue;
        double wl = cJSON_GetObjectItemCaseSensitive(lm, p.t[i]->name)->valuedouble;
        double wdm = cJSON_GetObjectItemCaseSensitive(dm, p.t[i]->name)->valuedouble;
        if (o->lr_mult[i] != wl || o->decay_mult[i] != wdm)
            fail_msg("%s: %s multipliers %g %g, mmengine %g %g", cas, p.t[i]->name, o->lr_mult[i], o->decay_mult[i], wl, wdm);
    }
    segc_schedule s = sched_from_json(cJSON_GetObjectItemCaseSensitive(j, "sched"));
    const cJSON *norms = cJSON_GetObjectItemCaseSensitive(j, "norms"), *nv = norms->child;
    scatter(&p, entry_f32(f, "init"), p.data);
    /* running statistics are not trainable: they must stay untouched */
    float *rm = p.t[p.n - 1]->data;
    for (int k = 0; k < 7; k++) rm[k] = (float)k;
    int64_t n_train = segc_params_count(&p, true);
    float *got = malloc((size_t)n_train * sizeof *got);
    for (int it = 0; it < 20; it++) {
        char name[64];
        snprintf(name, sizeof name, "grads/%d", it);
        scatter(&p, entry_f32(f, name), p.grad);
        double norm = scheduled_per_group ? segc_optimizer_step_scheduled(o, &s, it)
                                          : segc_optimizer_step(o, segc_schedule_lr(&s, oc.lr, it));
        if (oc.max_grad_norm > 0) {
            assert_non_null(nv);
            if (fabs(norm - nv->valuedouble) > 1e-5 * nv->valuedouble)
                fail_msg("%s step %d: grad norm %.9g, torch %.9g", cas, it, norm, nv->valuedouble);
            nv = nv->next;
        } else {
            assert_true(norm == -1);
        }
        gather(&p, got);
        snprintf(name, sizeof name, "%d", it);
        segc_tensor *want = fx_tensor(ctx, f, cas, name);
        char what[64];
        snprintf(what, sizeof what, "%s step %d", cas, it);
        assert_true(fx_close_f32(what, got, want, 1e-5));
    }
    for (int k = 0; k < 7; k++) assert_true(rm[k] == (float)k);
    assert_int_equal(o->step, 20);
    free(got);
    cJSON_Delete(j);
    segc_optimizer_free(o);
    segc_params_free(&p);
    segc_ctx_free(ctx);
    segc_st_close(f);
}

static void test_adamw_parity(void **state) {
    segc_custom_key keys[] = {{"head", SEGC_MULT(10), {0}}, {"linear_c", SEGC_MULT(5), SEGC_MULT(0.5)}};
    segc_paramwise_cfg pw = {.custom_keys = keys, .n_custom_keys = 2, .norm_decay_mult = SEGC_MULT(0),
                             .bias_decay_mult = SEGC_MULT(0), .bias_lr_mult = SEGC_MULT(2)};
    run_parity("adamw", &pw, true);     /* warmup + poly(eta_min) per group, clipping */
    run_parity("adamw_lowbeta", NULL, false);   /* beta1 < 0.5: the other lerp branch */
}

static void test_sgd_parity(void **state) {
    run_parity("sgd", NULL, false);
    segc_paramwise_cfg pw = {.flat_decay_mult = SEGC_MULT(0)};
    run_parity("sgd_nesterov", &pw, true);   /* cosine with restarts, clipping */
}

/* ---- exact resume and thread-count independence ---- */
static void make_params(segc_params *p) {
    segc_params_init(p);
    segc_params_add(p, "backbone.big.weight", 2, SHAPE(150, 131), true);   /* several work blocks */
    segc_params_add(p, "backbone.norm.weight", 1, SHAPE(131), true);
    segc_params_add(p, "backbone.norm.running_var", 1, SHAPE(131), false);
    segc_params_add(p, "decode_head.cls.weight", 4, SHAPE(5, 3, 1, 1), true);
    segc_params_add(p, "decode_head.cls.bias", 1, SHAPE(5), true);
    segc_params_finalize(p);
    segc_rng r;
    segc_rng_init(&r, 7);
    segc_rng_fill_normal(&r, p->data, p->total, 0, 1);
}

static void fill_grads(segc_params *p, int it) {
    segc_rng r;
    segc_rng_init(&r, 1000 + (uint64_t)it);
    segc_rng_fill_normal(&r, p->grad, p->total, 0, it % 2 ? 0.02f : 0.001f);
}

static void run_steps(segc_optimizer *o, const segc_schedule *s, int from, int to) {
    for (int it = from; it < to; it++) {
        fill_grads(o->p, it);
        double r = segc_optimizer_step_scheduled(o, s, it);
        assert_false(isnan(r));
    }
}

static void save_all(const segc_optimizer *o, const char *path) {
    segc_st_writer *w = segc_st_writer_new();
    const segc_params *p = o->p;
    for (int i = 0; i < p->n; i++) segc_st_writer_add(w, p->t[i]->name, SEGC_F32, p->t[i]->ndim, p->t[i]->shape, p->t[i]->data);
    segc_optimizer_save(o, w, "optimizer.");
    char err[256];
    assert_true(segc_st_writer_save(w, path, err, sizeof err));
    segc_st_writer_free(w);
}

static segc_optim_cfg resume_cfg(segc_opt_kind kind) {
    segc_optim_cfg oc = segc_optim_defaults(kind, kind == SEGC_OPT_ADAMW ? 1e-3 : 0.01);
    oc.max_grad_norm = 0.5;
    if (kind == SEGC_OPT_SGD) {
        oc.momentum = 0.9;
        oc.nesterov = true;
        oc.weight_decay = 1e-3;
    }
    return oc;
}

static void check_resume(segc_opt_kind kind) {
    segc_custom_key keys[] = {{"head", SEGC_MULT(10), {0}}};
    segc_schedule s = segc_schedule_segformer(3, 30);
    char path[] = "/tmp/segc_optim_XXXXXX", err[256];
    close(mkstemp(path));
    /* uninterrupted: 13 steps */
    segc_params a;
    make_params(&a);
    segc_optim_cfg oc = resume_cfg(kind);
    oc.paramwise.custom_keys = keys;
    oc.paramwise.n_custom_keys = 1;
    oc.paramwise.norm_decay_mult = SEGC_MULT(0);
    segc_optimizer *oa = segc_optimizer_new(&a, &oc, err, sizeof err);
    assert_non_null(oa);
    run_steps(oa, &s, 0, 7);
    save_all(oa, path);
    run_steps(oa, &s, 7, 13);
    /* resumed: fresh params from the file, an optimizer created with other
     * hyper-parameters and no param-wise rules; load restores them all */
    segc_params b;
    make_params(&b);
    segc_st_file *f = segc_st_open(path, err, sizeof err);
    assert_non_null(f);
    for (int i = 0; i < b.n; i++) memcpy(b.t[i]->data, segc_st_get(f, b.t[i]->name)->data, segc_nbytes(b.t[i]));
    segc_optim_cfg other = segc_optim_defaults(kind, 5.0);
    segc_optimizer *ob = segc_optimizer_new(&b, &other, err, sizeof err);
    assert_non_null(ob);
    if (!segc_optimizer_load(ob, f, "optimizer.", err, sizeof err)) fail_msg("%s", err);
    segc_st_close(f);
    assert_int_equal(ob->step, 7);
    assert_true(ob->hp.lr == oc.lr && ob->hp.max_grad_norm == 0.5 && ob->hp.nesterov == oc.nesterov);
    assert_true(ob->lr_mult[4] == 10 && ob->decay_mult[1] == 0);
    run_steps(ob, &s, 7, 13);
    assert_memory_equal(a.data, b.data, (size_t)a.total * sizeof(float));
    assert_memory_equal(oa->exp_avg, ob->exp_avg, (size_t)a.total * sizeof(float));
    /* AdamW's second moment must survive the round trip too (SGD has none) */
    assert_true((oa->exp_avg_sq == NULL) == (ob->exp_avg_sq == NULL));
    if (oa->exp_avg_sq) assert_memory_equal(oa->exp_avg_sq, ob->exp_avg_sq, (size_t)a.total * sizeof(float));
    unlink(path);
    segc_optimizer_free(oa);
    segc_optimizer_free(ob);
    segc_params_free(&a);
    segc_params_free(&b);
}

static void test_resume_bitwise(void **state) {
    check_resume(SEGC_OPT_ADAMW);
    check_resume(SEGC_OPT_SGD);
}

static void test_thread_count_independent(void **state) {
    segc_schedule s = segc_schedule_segformer(2, 20);
    float *ref = NULL;
    double ref_norm = 0;
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        segc_params p;
        make_params(&p);
        char err[256];
        segc_optim_cfg oc = resume_cfg(SEGC_OPT_ADAMW);
        segc_optimizer *o = segc_optimizer_new(&p, &oc, err, sizeof err);
        run_steps(o, &s, 0, 5);
        fill_grads(&p, 99);
        double norm = segc_grad_norm(&p);
        if (!ref) {
            ref = malloc((size_t)p.total * sizeof *ref);
            memcpy(ref, p.data, (size_t)p.total * sizeof *ref);
            ref_norm = norm;
        } else {
            assert_memory_equal(ref, p.data, (size_t)p.total * sizeof *ref);
            assert_true(norm == ref_norm);
        }
        segc_optimizer_free(o);
        segc_params_free(&p);
    }
    omp_set_num_threads(2);
    free(ref);
}

/* ---- gradient helpers ---- */
static void test_grad_norm_and_scale(void **state) {
    segc_params p;
    make_params(&p);
    fill_grads(&p, 1);
    p.t[2]->grad[0] = 1e6f;   /* non-trainable: excluded from the norm */
    double want = 0;
    for (int i = 0; i < p.n; i++)
        if (p.trainable[i])
            for (int64_t k = 0; k < segc_numel(p.t[i]); k++) want += (double)p.t[i]->grad[k] * p.t[i]->grad[k];
    want = sqrt(want);
    double got = segc_grad_norm(&p);
    assert_true(fabs(got - want) <= 1e-12 * want);
    segc_optimizer_scale_grads(&p, 0.25f);
    assert_true(fabs(segc_grad_norm(&p) - 0.25 * want) <= 1e-12 * want);
    /* clipping: after a clipped SGD step (lr 1, no momentum) the update has norm max_norm */
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_SGD, 1.0);
    oc.max_grad_norm = 0.01;
    char err[256];
    segc_optimizer *o = segc_optimizer_new(&p, &oc, err, sizeof err);
    float *before = malloc((size_t)p.total * sizeof *before);
    memcpy(before, p.data, (size_t)p.total * sizeof *before);
    double n = segc_optimizer_step(o, 1.0);
    assert_true(fabs(n - 0.25 * want) <= 1e-12 * want && o->last_grad_norm == n);
    double upd = 0;
    for (int i = 0; i < p.n; i++)
        if (p.trainable[i])
            for (int64_t k = 0; k < segc_numel(p.t[i]); k++) {
                double d = (double)p.data[p.offset[i] + k] - before[p.offset[i] + k];
                upd += d * d;
            }
    assert_true(fabs(sqrt(upd) - 0.01) < 1e-4);
    assert_true(p.t[2]->grad[0] == 0.25e6f);   /* gradients are read, not rewritten */
    free(before);
    segc_optimizer_free(o);
    segc_params_free(&p);
}

/* ---- errors ---- */
static void expect_cfg_error(segc_params *p, segc_optim_cfg oc, const char *what) {
    char err[256] = "";
    assert_null(segc_optimizer_new(p, &oc, err, sizeof err));
    if (!strstr(err, "optimizer") || !strstr(err, what)) fail_msg("expected '%s' in: %s", what, err);
}

static void test_errors(void **state) {
    segc_params p;
    make_params(&p);
    segc_optim_cfg a = segc_optim_defaults(SEGC_OPT_ADAMW, 1e-3), s = segc_optim_defaults(SEGC_OPT_SGD, 0.1), c;
    c = a; c.lr = -0.1; expect_cfg_error(&p, c, "lr expected finite >= 0, found -0.1");
    c = a; c.lr = NAN; expect_cfg_error(&p, c, "lr expected");
    c = a; c.beta1 = 1.0; expect_cfg_error(&p, c, "beta1 expected in [0, 1), found 1");
    c = a; c.beta2 = -0.5; expect_cfg_error(&p, c, "beta2");
    c = a; c.eps = -1; expect_cfg_error(&p, c, "eps");
    c = a; c.weight_decay = -1; expect_cfg_error(&p, c, "weight_decay");
    c = a; c.max_grad_norm = -1; expect_cfg_error(&p, c, "max_grad_norm");
    c = a; c.kind = (segc_opt_kind)7; expect_cfg_error(&p, c, "unknown optimizer kind");
    c = s; c.momentum = -0.9; expect_cfg_error(&p, c, "momentum");
    c = s; c.nesterov = true; expect_cfg_error(&p, c, "nesterov expects momentum > 0");
    c = s; c.nesterov = true; c.momentum = 0.9; c.dampening = 0.1; expect_cfg_error(&p, c, "dampening 0.1");
    c = s; c.dampening = 2; expect_cfg_error(&p, c, "dampening expected in [0, 1]");
    segc_custom_key empty[] = {{"", {0}, {0}}};
    c = s; c.paramwise.custom_keys = empty; c.paramwise.n_custom_keys = 1;
    char err[256];
    assert_null(segc_optimizer_new(&p, &c, err, sizeof err));
    assert_non_null(strstr(err, "param_groups: custom key 0 is empty"));
    segc_params unfin;
    segc_params_init(&unfin);
    assert_null(segc_optimizer_new(&unfin, &a, err, sizeof err));
    assert_non_null(strstr(err, "finalized"));

    /* step: bad lr or schedule changes nothing */
    segc_optimizer *o = segc_optimizer_new(&p, &a, err, sizeof err);
    float first = p.data[0];
    fill_grads(&p, 0);
    assert_true(isnan(segc_optimizer_step(o, -1.0)));
    assert_non_null(strstr(o->err, "optimizer_step: lr expected finite >= 0, found -1"));
    segc_schedule bad;
    segc_schedule_init(&bad);
    bad.n = 1;
    bad.item[0] = segc_sched_linear(2.0, 1.0, 0, 10);
    assert_true(isnan(segc_optimizer_step_scheduled(o, &bad, 0)));
    assert_non_null(strstr(o->err, "schedule: item 0 (linear): start_factor expected in (0, 1], found 2"));
    segc_schedule good = segc_schedule_segformer(2, 10);
    assert_true(isnan(segc_optimizer_step_scheduled(o, &good, -1)));
    assert_true(p.data[0] == first && o->step == 0);

    /* load: another kind, another parameter set, a wrong shape, extra state */
    char path[] = "/tmp/segc_optim_err_XXXXXX";
    close(mkstemp(path));
    segc_optimizer_step(o, 1e-3);
    save_all(o, path);
    segc_st_file *f = segc_st_open(path, err, sizeof err);
    segc_optimizer *os = segc_optimizer_new(&p, &s, err, sizeof err);
    assert_false(segc_optimizer_load(os, f, "optimizer.", err, sizeof err));
    assert_non_null(strstr(err, "state is for optimizer 'adamw', this optimizer is 'sgd'"));
    assert_false(segc_optimizer_load(o, f, "nothing.", err, sizeof err));
    assert_non_null(strstr(err, "no 'nothing.optimizer' metadata"));
    segc_params q;   /* one tensor renamed, one reshaped */
    segc_params_init(&q);
    segc_params_add(&q, "backbone.big.weight", 2, SHAPE(131, 150), true);
    segc_params_add(&q, "backbone.norm.weight", 1, SHAPE(131), true);
    segc_params_finalize(&q);
    segc_optimizer *oq = segc_optimizer_new(&q, &a, err, sizeof err);
    assert_false(segc_optimizer_load(oq, f, "optimizer.", err, sizeof err));
    assert_non_null(strstr(err, "state tensor 'optimizer.exp_avg.backbone.big.weight' is F32 [150, 131], parameter "
                                "'backbone.big.weight' is f32 [131, 150]"));
    segc_optimizer_free(oq);
    segc_params_free(&q);
    segc_params_init(&q);   /* subset of the saved parameters: the extra state is reported */
    segc_params_add(&q, "backbone.big.weight", 2, SHAPE(150, 131), true);
    segc_params_add(&q, "backbone.norm.weight", 1, SHAPE(131), true);
    segc_params_add(&q, "decode_head.cls.weight", 4, SHAPE(5, 3, 1, 1), true);
    segc_params_finalize(&q);
    oq = segc_optimizer_new(&q, &a, err, sizeof err);
    assert_false(segc_optimizer_load(oq, f, "optimizer.", err, sizeof err));
    assert_non_null(strstr(err, "'optimizer.exp_avg.decode_head.cls.bias' matches no trainable parameter"));
    assert_int_equal(oq->step, 0);
    segc_optimizer_free(oq);
    segc_params_free(&q);
    segc_params_init(&q);   /* a parameter the file lacks */
    segc_params_add(&q, "backbone.big.weight", 2, SHAPE(150, 131), true);
    segc_params_add(&q, "backbone.extra.weight", 1, SHAPE(4), true);
    segc_params_finalize(&q);
    oq = segc_optimizer_new(&q, &a, err, sizeof err);
    assert_false(segc_optimizer_load(oq, f, "optimizer.", err, sizeof err));
    assert_non_null(strstr(err, "no state tensor 'optimizer.exp_avg.backbone.extra.weight' for parameter "
                                "'backbone.extra.weight'"));
    segc_optimizer_free(oq);
    segc_params_free(&q);
    segc_st_close(f);
    unlink(path);
    segc_optimizer_free(os);
    segc_optimizer_free(o);
    segc_params_free(&p);

    /* schedules */
    segc_schedule sc;
    segc_schedule_init(&sc);
    assert_false(segc_schedule_add(&sc, segc_sched_poly(1, 0, 10, 10), err, sizeof err));
    assert_non_null(strstr(err, "schedule: item 0 (poly): expected 0 <= begin < end, found begin 10 end 10"));
    assert_false(segc_schedule_add(&sc, segc_sched_constant(1.5, 0, 10), err, sizeof err));
    assert_non_null(strstr(err, "factor expected in (0, 1]"));
    assert_false(segc_schedule_add(&sc, segc_sched_step(0, 0.1, 0, 10), err, sizeof err));
    assert_non_null(strstr(err, "step_size"));
    assert_false(segc_schedule_add(&sc, segc_sched_cosine(5, -1, 0, 10), err, sizeof err));
    assert_non_null(strstr(err, "eta_min"));
    assert_true(segc_schedule_add(&sc, segc_sched_linear(0.1, 1, 0, 10), err, sizeof err));
    assert_false(segc_schedule_add(&sc, segc_sched_poly(1, 1e-5, 5, 20), err, sizeof err));
    assert_non_null(strstr(err, "item 1 (poly, [5, 20)) overlaps item 0 (linear, [0, 10))"));
    assert_true(segc_schedule_add(&sc, segc_sched_poly(1, 0, 5, 20), err, sizeof err));   /* multiplicative: fine */
    assert_int_equal(sc.n, 2);
    assert_true(isnan(segc_schedule_lr(&sc, 0.1, -1)));
    assert_true(isnan(segc_schedule_lr(NULL, 0.1, 0)));
}

int main(void) {
    omp_set_num_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules_vs_mmengine), cmocka_unit_test(test_param_group_rules),
        cmocka_unit_test(test_adamw_parity),          cmocka_unit_test(test_sgd_parity),
        cmocka_unit_test(test_resume_bitwise),        cmocka_unit_test(test_thread_count_independent),
        cmocka_unit_test(test_grad_norm_and_scale),   cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
