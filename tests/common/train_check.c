/* See train_check.h. */
#include "train_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

void tc_config(segc_config *c, const char *const *ov, int n_ov, const char *dataset_dir, const char *work_dir,
               bool stop_each_iteration) {
    char err[512], root[1000];
    segc_config_defaults(c);
    for (int i = 0; i < n_ov; i++)
        if (!segc_config_override(c, ov[i], err, sizeof err)) fail_msg("%s: %s", ov[i], err);
    if (!segc_config_override(c, stop_each_iteration ? "train.max_time_min=1e-9" : "train.max_time_min=0", err,
                              sizeof err))
        fail_msg("%s", err);
    const char *env = getenv("SEGC_DATA");
    snprintf(root, sizeof root, "%.900s/%.90s", env && *env ? env : "../shared/data", dataset_dir);
    if (access(root, F_OK) != 0) fail_msg("%s not found: this test needs it (set SEGC_DATA)", root);
    snprintf(c->data.root, sizeof c->data.root, "%s", root);
    snprintf(c->train.work_dir, sizeof c->train.work_dir, "%s", work_dir);
    if (!segc_config_finish(c, err, sizeof err)) fail_msg("%s", err);
}

void tc_assert_same_tensors(const char *a, const char *b) {
    char err[512];
    segc_st_file *fa = segc_st_open(a, err, sizeof err), *fb = fa ? segc_st_open(b, err, sizeof err) : NULL;
    if (!fa || !fb) fail_msg("%s", err);
    assert_int_equal(segc_st_count(fa), segc_st_count(fb));
    for (int i = 0; i < segc_st_count(fa); i++) {
        const segc_st_entry *ea = segc_st_at(fa, i), *eb = segc_st_get(fb, ea->name);
        if (!eb) fail_msg("%s lacks %s", b, ea->name);
        assert_int_equal(ea->nbytes, eb->nbytes);
        if (memcmp(ea->data, eb->data, ea->nbytes) != 0) fail_msg("tensor %s differs between %s and %s", ea->name, a, b);
    }
    segc_st_close(fa);
    segc_st_close(fb);
}

char *tc_latest(const char *run_dir) {
    char p[1100];
    snprintf(p, sizeof p, "%.1000s/checkpoints/latest", run_dir);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    char *s = calloc(1, 64);
    if (s && !fgets(s, 64, f)) s[0] = 0;
    fclose(f);
    return s;
}

void tc_resume_exact(const char *const *ov, int n_ov, const char *dataset_dir, int rounds, int max_iters) {
    char root[] = "/tmp/segc_resume_XXXXXX", ref[64], dir[64], err[1024], p[200], q[200], iters[64];
    assert_non_null(mkdtemp(root));
    snprintf(ref, sizeof ref, "%s/ref", root);
    snprintf(dir, sizeof dir, "%s/run", root);
    snprintf(iters, sizeof iters, "train.max_iters=%d", max_iters);
    const char **all = calloc((size_t)n_ov + 1, sizeof *all);
    assert_non_null(all);
    for (int i = 0; i < n_ov; i++) all[i] = ov[i];
    all[n_ov] = iters;
    segc_config c;
    tc_config(&c, all, n_ov + 1, dataset_dir, ref, false);
    segc_train_opts o = {.quiet = true};
    if (segc_train(&c, &o, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    for (int round = 0; round < rounds; round++) {
        tc_config(&c, all, n_ov + 1, dataset_dir, dir, true);
        o.resume = round > 0;
        if (segc_train(&c, &o, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
        char *l = tc_latest(dir), want[32];
        snprintf(want, sizeof want, "iter_%07d", round + 1);
        if (!l || strncmp(l, want, strlen(want)) != 0) fail_msg("round %d stopped at %s, expected %s", round, l ? l : "none", want);
        free(l);
    }
    tc_config(&c, all, n_ov + 1, dataset_dir, dir, false);
    o.resume = true;
    if (segc_train(&c, &o, err, sizeof err) != SEGC_TRAIN_DONE) fail_msg("%s", err);
    const char *files[2] = {"safetensors", "state.safetensors"};
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/checkpoints/iter_%07d.%s", ref, max_iters, files[k]);
        snprintf(q, sizeof q, "%s/checkpoints/iter_%07d.%s", dir, max_iters, files[k]);
        tc_assert_same_tensors(p, q);
    }
    free(all);
    snprintf(p, sizeof p, "rm -rf '%s'", root);
    assert_int_equal(system(p), 0);
}
