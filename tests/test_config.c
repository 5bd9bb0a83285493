/* YAML training configuration: shipped configs, overrides, round trip of the
 * resolved YAML, did-you-mean for unknown keys, type errors with file:line,
 * validation, schedule and param-wise groups built from a config. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/config.h"
#include "segc/segformer.h"

static void must(bool ok, const char *err) {
    if (!ok) fail_msg("unexpected error: %s", err);
}

static void test_defaults_round_trip(void **state) {
    segc_config c, d;
    char err[512];
    segc_config_defaults(&c);
    must(segc_config_finish(&c, err, sizeof err), err);
    assert_string_equal(c.train.work_dir, "runs/run");
    char *y = segc_config_to_yaml(&c);
    assert_non_null(y);
    segc_config_defaults(&d);
    must(segc_config_load_string(&d, y, "resolved", err, sizeof err), err);
    char diff[512];
    assert_int_equal(segc_config_diff(&c, &d, diff, sizeof diff), 0);
    /* awkward numbers and strings survive the round trip exactly */
    c.optimizer.lr = 0.1 + 0.2;
    c.optimizer.custom_keys[0].lr_mult = SEGC_MULT(1.0 / 3.0);
    strcpy(c.data.root, "/data/with \"quotes\" and \\ back: slash #");
    c.test.n_scales = 3;
    c.test.scales[0] = 0.5, c.test.scales[1] = 0.75, c.test.scales[2] = 1.75;
    free(y);
    y = segc_config_to_yaml(&c);
    segc_config_defaults(&d);
    must(segc_config_load_string(&d, y, "resolved", err, sizeof err), err);
    if (segc_config_diff(&c, &d, diff, sizeof diff)) fail_msg("round trip differs: %s", diff);
    assert_true(d.optimizer.lr == 0.1 + 0.2);
    free(y);
}

static void test_shipped_ade20k(void **state) {
    segc_config c;
    char err[512];
    segc_config_defaults(&c);
    must(segc_config_load(&c, "configs/segformer/ade20k_b0_512x512_160k.yaml", err, sizeof err), err);
    must(segc_config_finish(&c, err, sizeof err), err);
    assert_string_equal(c.name, "ade20k_b0_512x512_160k");
    assert_string_equal(c.train.work_dir, "runs/ade20k_b0_512x512_160k");
    assert_string_equal(c.data.dataset, "ade20k");
    assert_true(c.optimizer.lr == 6e-5 && c.optimizer.weight_decay == 0.01);
    assert_true(c.optimizer.betas[0] == 0.9 && c.optimizer.betas[1] == 0.999);
    assert_int_equal(c.data.batch_size, 16);
    assert_int_equal(c.data.crop_size[0], 512);
    assert_int_equal(c.data.scale[0], 2048);
    assert_int_equal(c.data.scale[1], 512);
    assert_true(c.data.cat_max_ratio == 0.75);
    assert_int_equal(c.train.max_iters, 160000);
    assert_int_equal(c.schedule.warmup_iters, 1500);
    /* mmseg's lr curve: 6e-5 * 1e-6 at iteration 0, 6e-5 after warmup, 0 at the end */
    segc_schedule s;
    must(segc_config_schedule(&c, &s, err, sizeof err), err);
    assert_true(fabs(segc_schedule_lr(&s, 6e-5, 0) - 6e-11) < 1e-16);
    assert_true(fabs(segc_schedule_lr(&s, 6e-5, 1500) - 6e-5) < 1e-12);
    assert_true(segc_schedule_lr(&s, 6e-5, 159999) < 1e-9);
    /* param-wise groups on a real SegFormer-B0: head lr x10, norms without decay */
    segc_segformer_config mc;
    assert_true(segc_segformer_preset(&mc, "b0", 150));
    segc_segformer *m = segc_segformer_new(&mc, err, sizeof err);
    assert_non_null(m);
    segc_custom_key keys[SEGC_CFG_MAX_CUSTOM_KEYS];
    segc_optim_cfg oc = segc_config_optim(&c, keys);
    double *lr = calloc((size_t)m->params.n, sizeof *lr), *dec = calloc((size_t)m->params.n, sizeof *dec);
    must(segc_param_groups(&m->params, &oc.paramwise, lr, dec, err, sizeof err), err);
    int i_head = segc_params_index(&m->params, "decode_head.linear_fuse.weight");
    int i_ln = segc_params_index(&m->params, "segformer.encoder.block.0.0.layer_norm_1.weight");
    int i_q = segc_params_index(&m->params, "segformer.encoder.block.0.0.attention.self.query.weight");
    assert_true(i_head >= 0 && i_ln >= 0 && i_q >= 0);
    assert_true(lr[i_head] == 10 && dec[i_head] == 1);
    assert_true(lr[i_ln] == 1 && dec[i_ln] == 0);
    assert_true(lr[i_q] == 1 && dec[i_q] == 1);
    free(lr);
    free(dec);
    segc_segformer_free(m);
}

static void test_shipped_camvid(void **state) {
    segc_config c;
    char err[512];
    segc_config_defaults(&c);
    must(segc_config_load(&c, "configs/segformer/camvid_b0_cpu.yaml", err, sizeof err), err);
    must(segc_config_override(&c, "train.dtype=bf16", err, sizeof err), err);
    must(segc_config_finish(&c, err, sizeof err), err);
    assert_string_equal(c.data.dataset, "camvid");
    assert_string_equal(c.train.dtype, "bf16");
    assert_true(c.data.batch_size >= 4 && c.data.batch_size <= 8);
    assert_true(c.schedule.warmup_iters > 0 && c.train.max_iters >= 1000);
}

static void test_overrides(void **state) {
    segc_config c;
    char err[512];
    segc_config_defaults(&c);
    const char *ov[] = {"optimizer.lr=1e-4", "data.crop_size=[64, 96]", "data.root=/x", "train.max_iters=100",
                        "test.scales=[0.5,1.0,1.5]", "optimizer.paramwise.custom_keys.decode_head.lr_mult=5",
                        "optimizer.paramwise.custom_keys.attention.self.decay_mult=0.5",
                        "optimizer.paramwise.norm_decay_mult=0", "model.hidden=[8,16,16,16]", "data.flip_prob=0",
                        "train.work_dir=", "schedule.warmup_iters=10", "data.test_scale=0"};
    for (size_t i = 0; i < sizeof ov / sizeof *ov; i++) must(segc_config_override(&c, ov[i], err, sizeof err), err);
    must(segc_config_finish(&c, err, sizeof err), err);
    assert_true(c.optimizer.lr == 1e-4);
    assert_int_equal(c.data.crop_size[0], 64);
    assert_int_equal(c.data.crop_size[1], 96);
    assert_string_equal(c.data.root, "/x");
    assert_int_equal(c.train.max_iters, 100);
    assert_int_equal(c.test.n_scales, 3);
    assert_true(c.test.scales[2] == 1.5);
    assert_int_equal(c.optimizer.n_custom_keys, 4);
    bool found_head = false, found_attn = false;
    for (int i = 0; i < c.optimizer.n_custom_keys; i++) {
        const segc_cfg_custom_key *k = &c.optimizer.custom_keys[i];
        if (!strcmp(k->key, "decode_head")) found_head = k->lr_mult.set && k->lr_mult.value == 5 && !k->decay_mult.set;
        if (!strcmp(k->key, "attention.self")) found_attn = k->decay_mult.set && k->decay_mult.value == 0.5;
    }
    assert_true(found_head && found_attn);
    assert_true(c.optimizer.norm_decay_mult.set && c.optimizer.norm_decay_mult.value == 0);
    must(segc_config_override(&c, "optimizer.paramwise.norm_decay_mult=null", err, sizeof err), err);
    assert_false(c.optimizer.norm_decay_mult.set);
    must(segc_config_override(&c, "optimizer.paramwise.custom_keys={}", err, sizeof err), err);
    assert_int_equal(c.optimizer.n_custom_keys, 0);
    segc_model_spec spec = segc_config_model_spec(&c, 11, 3);
    int hidden[4] = {0};
    assert_int_equal(segc_spec_ints(&spec, "hidden", hidden, 4), 4);
    assert_int_equal(hidden[3], 16);
    assert_int_equal(segc_spec_int(&spec, "decoder_hidden"), 0);   /* the family's default */
    assert_int_equal(c.data.test_scale[0], 0);
    /* a file's custom_keys map replaces the set; a section may be given as a flow mapping */
    segc_config_defaults(&c);
    must(segc_config_load_string(&c, "optimizer:\n  paramwise:\n    custom_keys:\n      head: {lr_mult: 10}\n"
                                     "data: {batch_size: 3}\nname: mine\n", "inline", err, sizeof err), err);
    assert_int_equal(c.optimizer.n_custom_keys, 1);
    assert_string_equal(c.optimizer.custom_keys[0].key, "head");
    assert_int_equal(c.data.batch_size, 3);
    assert_string_equal(c.name, "mine");
}

static void test_unknown_keys_suggest(void **state) {
    segc_config c;
    char err[512];
    segc_config_defaults(&c);
    EXPECT_FAIL(segc_config_override(&c, "optimizer.lrr=1", err, sizeof err), err,
                 "unknown config key 'optimizer.lrr'", "did you mean 'optimizer.lr'?");
    EXPECT_FAIL(segc_config_override(&c, "train.max_iter=5", err, sizeof err), err, "'train.max_iter'",
                 "did you mean 'train.max_iters'?");
    EXPECT_FAIL(segc_config_load_string(&c, "optimiser:\n  lr: 1\n", "a.yaml", err, sizeof err), err,
                 "a.yaml:1: unknown config key 'optimiser'", "did you mean 'optimizer'?");
    EXPECT_FAIL(segc_config_load_string(&c, "data:\n  batch_size: 2\n  crop_szie: [1, 2]\n", "b.yaml", err, sizeof err),
                 err, "b.yaml:3: unknown config key 'data.crop_szie'", "did you mean 'data.crop_size'?");
    /* right name in the wrong section */
    EXPECT_FAIL(segc_config_load_string(&c, "lr: 0.1\n", "c.yaml", err, sizeof err), err, "'lr'",
                 "did you mean 'optimizer.lr'?");
    EXPECT_FAIL(segc_config_override(&c, "completely.unrelated=1", err, sizeof err), err,
                 "unknown config key 'completely.unrelated'", NULL);
    assert_null(strstr(err, "did you mean"));
    EXPECT_FAIL(segc_config_override(&c, "optimizer.paramwise.custom_keys.head.lr_mul=3", err, sizeof err), err,
                 "custom_keys.head.lr_mul'", "did you mean 'lr_mult'?");
    /* a failed load changes nothing */
    segc_config before = c;
    EXPECT_FAIL(segc_config_load_string(&c, "data:\n  batch_size: 99\n  nope: 1\n", "d.yaml", err, sizeof err), err,
                 "data.nope", NULL);
    assert_memory_equal(&before, &c, sizeof c);
}

static void test_wrong_types(void **state) {
    segc_config c;
    char err[512];
    segc_config_defaults(&c);
    EXPECT_FAIL(segc_config_override(&c, "optimizer.lr=abc", err, sizeof err), err,
                 "optimizer.lr: expected a number, found 'abc'", NULL);
    EXPECT_FAIL(segc_config_override(&c, "data.batch_size=2.5", err, sizeof err), err,
                 "data.batch_size: expected an integer, found '2.5'", NULL);
    EXPECT_FAIL(segc_config_override(&c, "data.crop_size=[1,2,3]", err, sizeof err), err,
                 "data.crop_size: expected a list of 2 integers, found a list of 3", NULL);
    EXPECT_FAIL(segc_config_override(&c, "data.crop_size=[1,x]", err, sizeof err), err,
                 "data.crop_size[1]: expected an integer, found 'x'", NULL);
    EXPECT_FAIL(segc_config_override(&c, "data.photometric=maybe", err, sizeof err), err,
                 "data.photometric: expected true or false, found 'maybe'", NULL);
    EXPECT_FAIL(segc_config_override(&c, "optimizer=3", err, sizeof err), err, "optimizer: expected a mapping", NULL);
    EXPECT_FAIL(segc_config_override(&c, "data.root=[a, b]", err, sizeof err), err,
                 "data.root: expected a string, found a list", NULL);
    EXPECT_FAIL(segc_config_load_string(&c, "optimizer:\n  type: adamw\n  lr: '1e-4'\n", "q.yaml", err, sizeof err),
                 err, "q.yaml:3: optimizer.lr: expected a number, found string '1e-4'", NULL);
    EXPECT_FAIL(segc_config_load_string(&c, "train:\n  max_iters: 1e3\n", "r.yaml", err, sizeof err), err,
                 "r.yaml:2: train.max_iters: expected an integer, found '1e3'", NULL);
    EXPECT_FAIL(segc_config_override(&c, "noequals", err, sizeof err), err, "expected key=value", NULL);
    EXPECT_FAIL(segc_config_load_string(&c, "data: [1, 2\n", "bad.yaml", err, sizeof err), err, "bad.yaml:",
                 "YAML error");
    EXPECT_FAIL(segc_config_load(&c, "/nonexistent/x.yaml", err, sizeof err), err, "/nonexistent/x.yaml", NULL);
}

static void test_validation(void **state) {
    segc_config c;
    char err[512];
    const struct { const char *ov, *msg; } cases[] = {
        {"schedule.warmup_iters=200000", "schedule.warmup_iters"},
        {"data.batch_size=0", "data.batch_size"},
        {"data.ratio_range=[2, 1]", "data.ratio_range"},
        {"test.mode=slide", "test.crop_size"},
        {"optimizer.betas=[0.9, 1.5]", "optimizer"},
        {"optimizer.lr=-1", "optimizer"},
        {"train.keep_last=0", "keep_last"},
        {"model.hidden=[8, 0, 16, 16]", "model.hidden"},
        {"model.hidden=[8, 16]", "model.hidden: expected 4 entries"},
        {"model.variant=b9", "model.variant: expected one of b0|b1|b2|b3|b4|b5 for segformer, found 'b9'"},
        {"model.type=segfromer", "model.type: unknown model family 'segfromer'; did you mean 'segformer'?"},
        {"model.hiden=[8, 16, 16, 16]", "unknown config key 'model.hiden' for model.type segformer; did you mean 'model.hidden'?"},
        {"model.decoder_hidden=wide", "model.decoder_hidden: expected an integer, found 'wide'"},
        {"model.drop_path_rate=[0.1]", "model.drop_path_rate: expected a number"},
        {"model.in_channels=-1", "model.in_channels"},
        {"data.fold=2", "data.fold"},
        {"data.num_folds=1", "data.num_folds"},
        {"train.best_metric=mIOU", "train.best_metric"},
        {"train.best_metric=Dice_WT", "test.regions"},
        {"data.std=[1, 0, 1]", "data.std"},
        {"data.root=", "data.root"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        segc_config_defaults(&c);
        must(segc_config_override(&c, cases[i].ov, err, sizeof err), err);
        if (!strcmp(cases[i].ov, "data.fold=2")) must(segc_config_override(&c, "data.num_folds=2", err, sizeof err), err);
        EXPECT_FAIL(segc_config_finish(&c, err, sizeof err), err, cases[i].msg, NULL);
    }
}

static void test_diff_and_save(void **state) {
    segc_config a, b;
    char err[512], diff[512];
    segc_config_defaults(&a);
    b = a;
    b.optimizer.lr = 1e-3;
    b.data.batch_size = 3;
    assert_int_equal(segc_config_diff(&a, &b, diff, sizeof diff), 2);
    assert_non_null(strstr(diff, "optimizer.lr: 6e-05 -> 0.001"));
    assert_non_null(strstr(diff, "data.batch_size: 8 -> 3"));
    /* family keys take part in diffs and round-trip through the resolved YAML */
    must(segc_config_override(&b, "model.hidden=[8,16,16,16]", err, sizeof err), err);
    assert_int_equal(segc_config_diff(&a, &b, diff, sizeof diff), 3);
    assert_non_null(strstr(diff, "model.hidden: [0, 0, 0, 0] -> [8, 16, 16, 16]"));
    char *yaml = segc_config_to_yaml(&b);
    assert_non_null(strstr(yaml, "\nmodel:\n  type: \"segformer\"\n"));
    assert_non_null(strstr(yaml, "  hidden: [8, 16, 16, 16]\n"));
    assert_non_null(strstr(yaml, "  classifier_dropout: 0.1\n"));
    free(yaml);
    char path[] = "/tmp/segc_cfg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    must(segc_config_finish(&b, err, sizeof err), err);
    must(segc_config_save(&b, path, err, sizeof err), err);
    segc_config c;
    segc_config_defaults(&c);
    must(segc_config_load(&c, path, err, sizeof err), err);
    assert_int_equal(segc_config_diff(&b, &c, diff, sizeof diff), 0);
    unlink(path);
    for (int i = 0; i < segc_config_n_keys(); i++) assert_non_null(segc_config_key_help(i));
    assert_null(segc_config_key(segc_config_n_keys()));
}

static void test_data_root(void **state) {
    segc_config c;
    char err[512], root[2048];
    segc_config_defaults(&c);
    strcpy(c.data.root, "some/where/camvid");
    setenv("SEGC_DATA", "/work/shared/data", 1);
    bool ok = segc_config_data_root(&c, root, sizeof root, err, sizeof err);
    if (access("/work/shared/data/camvid", F_OK) == 0) {
        must(ok, err);
        assert_string_equal(root, "/work/shared/data/camvid");
    }
    setenv("SEGC_DATA", "/nonexistent_segc", 1);
    EXPECT_FAIL(segc_config_data_root(&c, root, sizeof root, err, sizeof err), err, "data.root",
                 "/nonexistent_segc/camvid");
    assert_non_null(strstr(err, "some/where/camvid"));
    unsetenv("SEGC_DATA");
    strcpy(c.data.root, "/definitely/missing");
    EXPECT_FAIL(segc_config_data_root(&c, root, sizeof root, err, sizeof err), err, "/definitely/missing", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_round_trip), cmocka_unit_test(test_shipped_ade20k),
        cmocka_unit_test(test_shipped_camvid),      cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_unknown_keys_suggest), cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_validation),          cmocka_unit_test(test_diff_and_save),
        cmocka_unit_test(test_data_root),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
