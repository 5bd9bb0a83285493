/* segc tune search and schedulers, no training:
 *  - grid and random sampling reproducible from the seed (ranges, grid crossing, tied keys)
 *  - ASHA (stop, brackets, mode min) and ASHA promotion decisions on synthetic learning
 *    curves against references computed here
 *  - PBT exploit/explore decisions (bottom quantile copies the top; x1.2/x0.8; a choice
 *    moves to a neighbour) and lineage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/harness.h"
#include "segc/tune.h"

static void spec_from(segc_tune_spec *s, const char *yaml) {
    char err[1024];
    segc_tune_spec_defaults(s);
    if (!segc_tune_spec_load_string(s, yaml, "test.yaml", ".", err, sizeof err)) fail_msg("%s", err);
}
/* ---- sampling ---- */
static void test_sampling(void **state) {
    segc_tune_spec s;
    spec_from(&s, "space:\n"
                  "  optimizer.lr: {loguniform: [1.0e-5, 1.0e-2]}\n"
                  "  optimizer.weight_decay: {uniform: [0.0, 0.1]}\n"
                  "  data.batch_size: {grid: [2, 4]}\n"
                  "  optimizer.type: {choice: [adamw, sgd]}\n"
                  "  train.seed: {randint: [0, 5]}\n"
                  "  optimizer.momentum: {quniform: [0.5, 0.9, 0.1]}\n"
                  "tune: {num_samples: 3, seed: 7, max_t: 10}\n");
    assert_int_equal(segc_tune_n_trials(&s), 6);
    char a[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE], b[SEGC_TUNE_MAX_PARAMS][SEGC_TUNE_VALUE];
    int differ = 0;
    for (int i = 0; i < 6; i++) {
        segc_tune_sample(&s, i, a);
        segc_tune_sample(&s, i, b);
        for (int j = 0; j < s.n_params; j++) assert_string_equal(a[j], b[j]);
        double lr = atof(a[0]), wd = atof(a[1]);
        assert_true(lr >= 1e-5 && lr <= 1e-2);
        assert_true(wd >= 0 && wd <= 0.1);
        assert_string_equal(a[2], i % 2 ? "4" : "2");   /* the grid key is crossed with every sample */
        assert_true(!strcmp(a[3], "adamw") || !strcmp(a[3], "sgd"));
        int seed = atoi(a[4]);
        assert_true(seed >= 0 && seed < 5 && !strchr(a[4], '.'));
        double m = atof(a[5]);
        assert_true(m >= 0.5 - 1e-9 && m <= 0.9 + 1e-9 && fabs(m * 10 - round(m * 10)) < 1e-9);
        if (i % 2) {   /* the two grid cells of one sample share its random draws */
            segc_tune_sample(&s, i - 1, b);
            assert_string_equal(a[0], b[0]);
        }
        if (i >= 2) {
            segc_tune_sample(&s, i - 2, b);
            differ += strcmp(a[0], b[0]) != 0;
        }
    }
    assert_true(differ >= 3);
    /* another seed, other values */
    segc_tune_spec s2 = s;
    s2.seed = 8;
    segc_tune_sample(&s, 0, a);
    segc_tune_sample(&s2, 0, b);
    assert_string_not_equal(a[0], b[0]);
    /* tied keys: one list of values for several keys */
    segc_config c;
    segc_config_defaults(&c);
    char err[512];
    assert_true(segc_tune_apply(&c, "optimizer.lr,data.crop_size", "[0.5, [64, 96]]", err, sizeof err));
    assert_true(c.optimizer.lr == 0.5 && c.data.crop_size[0] == 64 && c.data.crop_size[1] == 96);
    assert_false(segc_tune_apply(&c, "optimizer.lr,data.crop_size", "[0.5]", err, sizeof err));
    assert_non_null(strstr(err, "fewer entries"));
    /* grid search enumerates choice keys too */
    spec_from(&s, "space:\n  optimizer.type: {choice: [adamw, sgd]}\n  data.batch_size: {grid: [2, 4, 8]}\n"
                  "tune: {search: grid}\n");
    assert_int_equal(segc_tune_n_trials(&s), 6);
    segc_tune_sample(&s, 5, a);
    assert_string_equal(a[0], "sgd");
    assert_string_equal(a[1], "8");
}

/* ---- ASHA ---- */
static double curve(int i, int64_t t) {   /* saturating curves with trial-specific level and speed */
    double level = 0.3 + 0.6 * fmod(i * 0.618034, 1.0), speed = 20 + 15 * (i % 4);
    return level * (1 - exp(-(double)t / speed));
}

static double ref_percentile(const double *x, int n, double q) {   /* numpy's linear interpolation */
    double v[256];
    for (int i = 0; i < n; i++) {
        int j = i;
        while (j > 0 && v[j - 1] > x[i]) v[j] = v[j - 1], j--;
        v[j] = x[i];
    }
    double pos = q / 100 * (n - 1);
    int lo = (int)pos;
    return lo + 1 < n ? v[lo] + (v[lo + 1] - v[lo]) * (pos - lo) : v[lo];
}

static void test_asha_stop(void **state) {
    const int N = 12;
    const int64_t grace = 5, max_t = 100;
    const double rf = 3;
    segc_tune_spec s;
    spec_from(&s, "space:\n  optimizer.lr: {uniform: [0.0, 1.0]}\n"
                  "tune: {num_samples: 12, scheduler: asha, max_t: 100, grace_period: 5, reduction_factor: 3}\n");
    s.max_t = max_t, s.grace_period = grace, s.report_interval = grace;
    segc_tune_sched t;
    char err[256];
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    assert_int_equal(t.n_rungs[0], 3);   /* 5, 15, 45 */
    assert_int_equal(t.milestones[0][2], 45);
    /* reference: Ray's AsyncHyperBand on the same sequence (one trial at a time) */
    double rec[3][64];
    int nrec[3] = {0}, ref_stop[64];
    int64_t ms[3] = {5, 15, 45};
    for (int i = 0; i < N; i++) {
        ref_stop[i] = -1;
        bool done[3] = {0};
        for (int64_t it = grace; it <= max_t && ref_stop[i] < 0; it += grace) {
            double v = curve(i, it);
            for (int k = 2; k >= 0; k--) {
                if (it < ms[k] || done[k]) continue;
                if (nrec[k] && v < ref_percentile(rec[k], nrec[k], (1 - 1 / rf) * 100)) ref_stop[i] = (int)it;
                rec[k][nrec[k]++] = v;
                done[k] = true;
                break;
            }
        }
    }
    int stops = 0;
    for (int n = 0; n < N; n++) {
        int trial;
        int64_t target;
        bool fin;
        assert_true(segc_tune_sched_next(&t, 0, &trial, &target, &fin));
        assert_int_equal(trial, n);
        assert_int_equal(target, max_t);
        int stopped = -1;
        for (int64_t it = grace; it <= max_t; it += grace) {
            segc_tune_action a = segc_tune_sched_result(&t, trial, it, curve(trial, it));
            if (a == SEGC_TUNE_STOP) { stopped = (int)it; break; }
            assert_int_equal(a, SEGC_TUNE_CONTINUE);
        }
        if (stopped != ref_stop[n]) fail_msg("trial %d: stopped at %d, reference %d", n, stopped, ref_stop[n]);
        stops += stopped > 0;
        segc_tune_sched_ended(&t, trial, stopped > 0 ? SEGC_TRIAL_STOPPED : SEGC_TRIAL_DONE, NULL);
    }
    assert_true(stops >= 4 && stops < N);   /* the curves make ASHA decide */
    int trial;
    int64_t target;
    bool fin;
    assert_false(segc_tune_sched_next(&t, 0, &trial, &target, &fin));
    assert_true(fin);
    /* brackets: bracket s starts at grace * rf^s; a trial's bracket is drawn from (seed, trial) */
    segc_tune_spec sb = s;
    sb.brackets = 3;
    segc_tune_sched tb, tb2;
    assert_true(segc_tune_sched_init(&tb, &sb, err, sizeof err));
    assert_true(segc_tune_sched_init(&tb2, &sb, err, sizeof err));
    assert_int_equal(tb.n_brackets, 3);
    assert_int_equal(tb.milestones[1][0], 15);
    assert_int_equal(tb.milestones[2][0], 45);
    assert_int_equal(tb.n_rungs[2], 1);
    int per[3] = {0};
    for (int n = 0; n < N; n++) {
        int a1 = segc_tune_sched_add(&tb), a2 = segc_tune_sched_add(&tb2);
        assert_int_equal(tb.trials[a1].bracket, tb2.trials[a2].bracket);
        per[tb.trials[a1].bracket]++;
    }
    assert_true(per[0] > per[2]);   /* p ~ e^rungs: 3 rungs vs 1 */
    segc_tune_sched_free(&tb);
    segc_tune_sched_free(&tb2);
    /* mode min: the same decisions on the negated metric */
    s.maximize = false;
    segc_tune_sched t2;
    assert_true(segc_tune_sched_init(&t2, &s, err, sizeof err));
    for (int n = 0; n < N; n++) {
        assert_true(segc_tune_sched_next(&t2, 0, &trial, &target, &fin));
        int stopped = -1;
        for (int64_t it = grace; it <= max_t && stopped < 0; it += grace)
            if (segc_tune_sched_result(&t2, trial, it, -curve(trial, it)) == SEGC_TUNE_STOP) stopped = (int)it;
        assert_int_equal(stopped, ref_stop[n]);
        segc_tune_sched_ended(&t2, trial, stopped > 0 ? SEGC_TRIAL_STOPPED : SEGC_TRIAL_DONE, NULL);
    }
    segc_tune_sched_free(&t2);
    segc_tune_sched_free(&t);
}

/* ASHA promotion on one worker against the paper's get_job written out here */
static void test_asha_promotion(void **state) {
    const int N = 9;
    segc_tune_spec s;
    spec_from(&s, "space:\n  optimizer.lr: {uniform: [0.0, 1.0]}\n"
                  "tune: {num_samples: 9, scheduler: asha, promotion: true, max_t: 27, grace_period: 1, reduction_factor: 3}\n");
    s.max_t = 27, s.grace_period = 1, s.report_interval = 1;
    segc_tune_sched t;
    char err[256];
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    assert_int_equal(t.n_rungs[0], 3);   /* 1, 3, 9; then max_t 27 */
    /* reference */
    const int64_t ms[4] = {1, 3, 9, 27};
    int ref_jobs[64][2], n_ref = 0, made = 0;
    double sc[64][3];
    bool has[64][3] = {{0}}, prom[64][3] = {{0}};
    for (;;) {
        int job = -1, rung = -1;
        for (int k = 2; k >= 0 && job < 0; k--) {
            int ids[64], n = 0;
            for (int i = 0; i < made; i++)
                if (has[i][k]) ids[n++] = i;
            for (int a = 0; a < n; a++)   /* rank by score, then id */
                for (int b = a + 1; b < n; b++)
                    if (sc[ids[b]][k] > sc[ids[a]][k] || (sc[ids[b]][k] == sc[ids[a]][k] && ids[b] < ids[a])) {
                        int x = ids[a];
                        ids[a] = ids[b], ids[b] = x;
                    }
            for (int r = 0; r < n / 3 && job < 0; r++)
                if (!prom[ids[r]][k]) job = ids[r], rung = k + 1, prom[ids[r]][k] = true;
        }
        if (job < 0 && made < N) job = made++, rung = 0;
        if (job < 0) break;
        ref_jobs[n_ref][0] = job, ref_jobs[n_ref][1] = rung, n_ref++;
        if (rung < 3) sc[job][rung] = curve(job, ms[rung]), has[job][rung] = true;
    }
    /* the scheduler, results every iteration */
    int n_jobs = 0;
    for (;;) {
        int trial;
        int64_t target;
        bool fin;
        if (!segc_tune_sched_next(&t, 0, &trial, &target, &fin)) { assert_true(fin); break; }
        assert_true(n_jobs < n_ref);
        if (trial != ref_jobs[n_jobs][0] || target != ms[ref_jobs[n_jobs][1]])
            fail_msg("job %d: trial %d to %lld, reference trial %d to %lld", n_jobs, trial, (long long)target,
                     ref_jobs[n_jobs][0], (long long)ms[ref_jobs[n_jobs][1]]);
        n_jobs++;
        segc_tune_action a = SEGC_TUNE_CONTINUE;
        for (int64_t it = t.trials[trial].iter + 1; it <= target && a == SEGC_TUNE_CONTINUE; it++)
            a = segc_tune_sched_result(&t, trial, it, curve(trial, it));
        assert_int_equal(a, target < 27 ? SEGC_TUNE_PAUSE : SEGC_TUNE_CONTINUE);
        segc_tune_sched_ended(&t, trial, target < 27 ? SEGC_TRIAL_PAUSED : SEGC_TRIAL_DONE, NULL);
    }
    assert_int_equal(n_jobs, n_ref);
    /* 9 trials at rung 1, the top 3 at rung 3, the top 1 at rung 9; one result at the top
     * rung promotes nobody (floor(1/3) = 0), so every trial ends stopped */
    int at[4] = {0};
    for (int i = 0; i < N; i++) {
        assert_int_equal(t.trials[i].state, SEGC_TRIAL_STOPPED);
        for (int k = 0; k < 3; k++) at[k] += !isnan(t.trials[i].rung_score[k]);
    }
    assert_int_equal(at[0], 9);
    assert_int_equal(at[1], 3);
    assert_int_equal(at[2], 1);
    segc_tune_sched_free(&t);
}

/* ---- PBT ---- */
static double pbt_metric(const char *lr, int64_t it) { return -fabs(log10(atof(lr)) + 3) + 0.001 * (double)it; }

static void test_pbt(void **state) {
    segc_tune_spec s;
    spec_from(&s, "space:\n  optimizer.lr: {loguniform: [1.0e-5, 1.0e-1]}\n  optimizer.type: {choice: [adamw, sgd, adamw]}\n"
                  "tune: {num_samples: 4, scheduler: pbt, max_t: 40, perturbation_interval: 10, quantile_fraction: 0.25, "
                  "resample_probability: 0.0, seed: 3}\n");
    s.max_t = 40, s.perturbation_interval = 10, s.report_interval = 10;
    segc_tune_sched t;
    char err[256];
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    int exploits = 0;
    for (int steps = 0;; steps++) {
        assert_true(steps < 100);
        int trial;
        int64_t target;
        bool fin;
        if (!segc_tune_sched_next(&t, 0, &trial, &target, &fin)) { assert_true(fin); break; }
        segc_tune_trial *tr = &t.trials[trial];
        assert_int_equal(target, (tr->iter / 10 + 1) * 10);
        for (int i = 0; i < t.n_trials; i++)   /* the least advanced trial runs first */
            if (t.trials[i].state == SEGC_TRIAL_PAUSED || t.trials[i].state == SEGC_TRIAL_PENDING) assert_true(t.trials[i].iter >= tr->iter);
        double m = pbt_metric(tr->values[0], target);
        segc_tune_action a = segc_tune_sched_result(&t, trial, target, m);
        if (target == 40) {
            assert_int_equal(a, SEGC_TUNE_CONTINUE);
            segc_tune_sched_ended(&t, trial, SEGC_TRIAL_DONE, NULL);
            continue;
        }
        assert_int_equal(a, SEGC_TUNE_PAUSE);
        /* reference: the latest scores; bottom ceil(n/4) (at most n/2) exploit the top as many */
        int ids[8], n = 0;
        for (int i = 0; i < t.n_trials; i++)
            if (!isnan(t.trials[i].score)) ids[n++] = i;
        int worst = ids[0], bestt = ids[0];
        for (int k = 1; k < n; k++) {
            const segc_tune_trial *x = &t.trials[ids[k]];
            if (x->score < t.trials[worst].score || (x->score == t.trials[worst].score && ids[k] > worst)) worst = ids[k];
            if (x->score > t.trials[bestt].score) bestt = ids[k];
        }
        int nq = (int)ceil(n * 0.25);
        if (nq > n / 2) nq = n / 2;
        /* ... from a trial at least as far as this one (never back to an older checkpoint) */
        bool expect = nq >= 1 && worst == trial && t.trials[bestt].iter >= tr->iter;
        if (expect != (tr->exploit_source >= 0)) fail_msg("trial %d at %lld: exploit %d, reference %s", trial,
                                                          (long long)target, tr->exploit_source, expect ? "yes" : "no");
        if (expect) {
            assert_int_equal(tr->exploit_source, bestt);   /* nq = 1: the best trial */
            char src_lr[SEGC_TUNE_VALUE], src_type[SEGC_TUNE_VALUE];
            snprintf(src_lr, sizeof src_lr, "%s", t.trials[bestt].values[0]);
            snprintf(src_type, sizeof src_type, "%s", t.trials[bestt].values[1]);
            segc_tune_sched_exploited(&t, trial);
            exploits++;
            assert_int_equal(tr->parent, bestt);
            assert_int_equal(tr->exploit_source, -1);
            double r = atof(tr->values[0]) / atof(src_lr);
            if (fabs(r - 1.2) > 1e-4 && fabs(r - 0.8) > 1e-4 && atof(tr->values[0]) != 1e-5 && atof(tr->values[0]) != 0.1)
                fail_msg("perturbed lr %s from %s: factor %g", tr->values[0], src_lr, r);
            /* a choice moves to a neighbouring entry */
            assert_true(!strcmp(tr->values[1], "adamw") || !strcmp(tr->values[1], "sgd"));
        }
        segc_tune_sched_ended(&t, trial, SEGC_TRIAL_PAUSED, NULL);
    }
    assert_true(exploits >= 2);
    for (int i = 0; i < 4; i++) assert_int_equal(t.trials[i].state, SEGC_TRIAL_DONE);
    segc_tune_sched_free(&t);
}

/* a fast trial in the bottom quantile must not copy a slower one's older checkpoint: that moved
 * it back, and two trials copying each other's older checkpoints never finished */
static void test_pbt_never_moves_back(void **state) {
    segc_tune_spec s;
    spec_from(&s, "space:\n  optimizer.lr: {loguniform: [1.0e-5, 1.0e-1]}\n"
                  "tune: {num_samples: 4, scheduler: pbt, max_t: 8, perturbation_interval: 2, quantile_fraction: 0.25, "
                  "resample_probability: 0.0, seed: 5}\n");
    s.max_t = 8, s.perturbation_interval = 2, s.report_interval = 2, s.quantile_fraction = 0.25;
    segc_tune_sched t;
    char err[256];
    assert_true(segc_tune_sched_init(&t, &s, err, sizeof err));
    int trial, slow, fast;
    int64_t target;
    bool fin;
    for (int k = 0; k < 4; k++) {   /* every trial to iteration 2, one at a time; trial 0 the best */
        assert_true(segc_tune_sched_next(&t, 0, &trial, &target, &fin));
        assert_int_equal(target, 2);
        t.trials[trial].state = SEGC_TRIAL_RUNNING;
        segc_tune_sched_result(&t, trial, 2, -(double)trial);
        if (t.trials[trial].exploit_source >= 0) segc_tune_sched_exploited(&t, trial);
        segc_tune_sched_ended(&t, trial, SEGC_TRIAL_PAUSED, NULL);
    }
    assert_true(segc_tune_sched_next(&t, 0, &slow, &target, &fin));   /* runs 2 -> 4, slowly */
    t.trials[slow].state = SEGC_TRIAL_RUNNING;
    assert_true(segc_tune_sched_next(&t, 1, &fast, &target, &fin));
    assert_int_not_equal(fast, slow);
    t.trials[fast].state = SEGC_TRIAL_RUNNING;
    /* the fast one reaches 4 the worst, while the best score is the slow one's at 2 */
    for (int i = 0; i < 4; i++) t.trials[i].score = i == slow ? 1.0 : 0.0;
    assert_int_equal(segc_tune_sched_result(&t, fast, 4, -100.0), SEGC_TUNE_PAUSE);
    int src = t.trials[fast].exploit_source;
    if (src >= 0 && t.trials[src].iter < 4)
        fail_msg("trial %d at 4 copies trial %d's checkpoint at %lld", fast, src, (long long)t.trials[src].iter);
    if (src >= 0) segc_tune_sched_exploited(&t, fast);
    assert_int_equal(t.trials[fast].iter, 4);
    segc_tune_sched_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_asha_stop),
        cmocka_unit_test(test_asha_promotion),
        cmocka_unit_test(test_pbt),
        cmocka_unit_test(test_pbt_never_moves_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
