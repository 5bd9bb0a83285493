/* Trace profiler and FLOP counter (segc/profile.h):
 *  - a conv forward + backward with the profiler on writes a trace that parses
 *    as JSON, with "conv2d" forward and backward complete events, thread_name
 *    metadata and the op in the summary table;
 *  - forward slices are recorded under no-grad too; nesting gives self times;
 *  - an iteration window records only its iterations;
 *  - with the profiler off (never started, or stopped) nothing is recorded;
 *  - FLOPs of conv2d / linear forward and backward match the formulas;
 *  - window parsing;
 *  - segc_bench_run on a tiny SegFormer (1 warm-up + 1 step, synthetic):
 *    positive throughput and FLOPs, and a profiled bench step in its trace. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/bench.h"
#include "segc/ops.h"
#include "segc/profile.h"

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static void trace_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/segc_test_profile_%d_%s.json", (int)getpid(), tag);
}

/* count of "X" events with this name and category (cat NULL: any) */
static int count_events(const cJSON *root, const char *name, const char *cat) {
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(root, "traceEvents");
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, evs) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *ph = cJSON_GetObjectItemCaseSensitive(e, "ph");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(e, "cat");
        if (!cJSON_IsString(nm) || !cJSON_IsString(ph) || strcmp(ph->valuestring, "X")) continue;
        if (strcmp(nm->valuestring, name)) continue;
        if (cat && (!cJSON_IsString(ct) || strcmp(ct->valuestring, cat))) continue;
        /* every complete event carries numbers for ts / dur and the pid / tid */
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "ts")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "dur")));
        assert_true(cJSON_GetObjectItemCaseSensitive(e, "dur")->valuedouble >= 0);
        assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "tid")));
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(e, "pid")->valueint, 1);
        n++;
    }
    return n;
}

static cJSON *load_trace(const char *path) {
    char *s = read_all(path);
    assert_non_null(s);
    cJSON *root = cJSON_Parse(s);
    if (!root) fail_msg("trace %s does not parse as JSON near: %.60s", path, cJSON_GetErrorPtr());
    free(s);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "traceEvents")));
    const cJSON *unit = cJSON_GetObjectItemCaseSensitive(root, "displayTimeUnit");
    assert_true(cJSON_IsString(unit) && !strcmp(unit->valuestring, "ms"));
    return root;
}

static segc_tensor *small_conv(segc_ctx *ctx, segc_tensor *x, segc_tensor *w) {
    segc_conv_params p = segc_conv_params_default();
    p.pad[0] = p.pad[1] = 1;
    return segc_conv2d(ctx, x, w, NULL, &p);
}

/* 1x1 stride-1 convolutions run as GEMMs (conv_1x1.c), both layouts: their backward counts
 * the input and weight gradients' work as every other convolution does */
static void test_flops_1x1_conv(void **state) {
    (void)state;
    for (int cl = 0; cl < 2; cl++) {
        segc_ctx *ctx = segc_ctx_new(1);
        segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 6, 5, 4), 1.0f, true);
        segc_tensor *w = t_randn(ctx, 4, SHAPE(7, 6, 1, 1), 0.1f, true);
        if (cl) x = segc_to_channels_last(ctx, x);
        int64_t f0 = segc_flops_read();
        segc_conv_params p = segc_conv_params_default();
        segc_tensor *y = segc_conv2d(ctx, x, w, NULL, &p);
        if (cl) y = segc_to_channels_first(ctx, y);
        segc_tensor *loss = segc_sum(ctx, y, NULL, 0, false);
        assert_non_null(loss);
        assert_true(segc_backward(ctx, loss));
        int64_t fwd = 2LL * 2 * 7 * 5 * 4 * 6;
        assert_int_equal(segc_flops_read() - f0, 3 * fwd);
        segc_ctx_free(ctx);
    }
}

static void test_trace_forward_backward(void **state) {
    (void)state;
    char path[256], err[256];
    trace_path(path, sizeof path, "fb");
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(2, 3, 8, 8), 1.0f, true);
    segc_tensor *w = t_randn(ctx, 4, SHAPE(4, 3, 3, 3), 0.1f, true);
    assert_true(segc_profiler_start(path));
    assert_true(segc_profiler_active());
    assert_false(segc_profiler_start(path));   /* one run at a time */
    segc_profiler_thread_name("test main");
    int64_t f0 = segc_flops_read();
    segc_tensor *y = small_conv(ctx, x, w);
    segc_tensor *loss = segc_sum(ctx, segc_relu(ctx, y), NULL, 0, false);
    assert_non_null(loss);
    assert_true(segc_backward(ctx, loss));
    /* conv forward 2*N*Cout*Ho*Wo*Cin*kh*kw, backward twice that (input and weight gradients) */
    int64_t fwd = 2LL * 2 * 4 * 8 * 8 * 3 * 3 * 3;
    assert_int_equal(segc_flops_read() - f0, 3 * fwd);
    assert_true(segc_profiler_event_count() >= 4);
    char *sum = NULL;
    size_t sum_len = 0;
    FILE *mem = open_memstream(&sum, &sum_len);
    assert_true(segc_profiler_stop_and_write(mem, err, sizeof err));
    fclose(mem);
    assert_false(segc_profiler_active());
    assert_non_null(strstr(sum, "conv2d"));
    assert_non_null(strstr(sum, "relu"));
    assert_non_null(strstr(sum, "fwd ms"));
    free(sum);

    cJSON *root = load_trace(path);
    assert_int_equal(count_events(root, "conv2d", SEGC_PROF_FORWARD), 1);
    assert_int_equal(count_events(root, "conv2d", SEGC_PROF_BACKWARD), 1);
    assert_int_equal(count_events(root, "relu", SEGC_PROF_BACKWARD), 1);
    assert_int_equal(count_events(root, "sum", SEGC_PROF_FORWARD), 1);
    /* the conv slices carry their FLOPs; the thread is named */
    bool named = false, flops = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "traceEvents")) {
        const char *nm = cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring;
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(e, "args");
        if (!strcmp(nm, "thread_name") && !strcmp(cJSON_GetObjectItemCaseSensitive(args, "name")->valuestring, "test main"))
            named = true;
        if (!strcmp(nm, "conv2d") && !strcmp(cJSON_GetObjectItemCaseSensitive(e, "cat")->valuestring, "forward")) {
            const cJSON *fl = cJSON_GetObjectItemCaseSensitive(args, "flops");
            flops = cJSON_IsNumber(fl) && (int64_t)fl->valuedouble == fwd;
            assert_true(cJSON_GetObjectItemCaseSensitive(args, "bytes")->valuedouble >= 2 * 4 * 8 * 8 * 4);
        }
    }
    assert_true(named);
    assert_true(flops);
    cJSON_Delete(root);
    remove(path);
    segc_ctx_free(ctx);
}

/* forward slices need no tape: inference under no-grad is profiled the same way;
 * an enclosing slice gets its self time (children subtracted) */
static void test_no_grad_and_nesting(void **state) {
    (void)state;
    char path[256], err[256];
    trace_path(path, sizeof path, "ng");
    segc_ctx *ctx = segc_ctx_new(1);
    segc_set_grad_enabled(ctx, false);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 8, 8), 1.0f, false);
    segc_tensor *w = t_randn(ctx, 4, SHAPE(4, 3, 3, 3), 0.1f, false);
    segc_tensor *lw = t_randn(ctx, 2, SHAPE(5, 8), 0.1f, false);
    assert_true(segc_profiler_start(path));
    segc_prof_span outer = segc_prof_begin("whole_eval", SEGC_PROF_EVAL);
    int64_t f0 = segc_flops_read();
    assert_non_null(small_conv(ctx, x, w));
    assert_non_null(segc_linear(ctx, x, lw, NULL));   /* [1,3,8,8] x [5,8]^T: 24 rows */
    assert_int_equal(segc_flops_read() - f0, 2LL * 4 * 8 * 8 * 3 * 9 + 2LL * 24 * 5 * 8);
    segc_prof_end(&outer, 0);
    int64_t t0 = segc_prof_now_ns();
    segc_prof_event("loader_next", SEGC_PROF_DATA, t0, t0 + 1000, 123);
    char *sum = NULL;
    size_t sum_len = 0;
    FILE *mem = open_memstream(&sum, &sum_len);
    assert_true(segc_profiler_stop_and_write(mem, err, sizeof err));
    fclose(mem);
    assert_non_null(strstr(sum, "[eval] whole_eval"));
    assert_non_null(strstr(sum, "[data] loader_next"));
    free(sum);
    cJSON *root = load_trace(path);
    assert_int_equal(count_events(root, "conv2d", SEGC_PROF_FORWARD), 1);
    assert_int_equal(count_events(root, "linear", SEGC_PROF_FORWARD), 1);
    assert_int_equal(count_events(root, "conv2d", SEGC_PROF_BACKWARD), 0);
    assert_int_equal(count_events(root, "loader_next", SEGC_PROF_DATA), 1);
    const cJSON *e;
    double outer_dur = -1, outer_self = -1, kids = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "traceEvents")) {
        const char *nm = cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring;
        const cJSON *dur = cJSON_GetObjectItemCaseSensitive(e, "dur");
        if (!strcmp(nm, "whole_eval")) {
            outer_dur = dur->valuedouble;
            outer_self = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "args"), "self_us")->valuedouble;
        }
        if (!strcmp(nm, "conv2d") || !strcmp(nm, "linear")) kids += dur->valuedouble;
    }
    assert_true(outer_dur > 0);
    assert_true(outer_self >= -0.01 && outer_self <= outer_dur - kids + 0.01);
    cJSON_Delete(root);
    remove(path);
    segc_ctx_free(ctx);
}

static void test_window(void **state) {
    (void)state;
    char path[256], err[256];
    trace_path(path, sizeof path, "win");
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 8, 8), 1.0f, false);
    segc_tensor *w = t_randn(ctx, 4, SHAPE(4, 3, 3, 3), 0.1f, false);
    assert_true(segc_profiler_start(path));
    segc_profiler_set_window(2, 3);
    assert_false(segc_profiler_recording());
    assert_non_null(small_conv(ctx, x, w));   /* before the window */
    for (int it = 1; it <= 5; it++) {
        assert_int_equal(segc_profiler_iter(it), it >= 2 && it <= 3);
        assert_non_null(small_conv(ctx, x, w));
    }
    assert_true(segc_profiler_stop_and_write(NULL, err, sizeof err));
    cJSON *root = load_trace(path);
    assert_int_equal(count_events(root, "conv2d", SEGC_PROF_FORWARD), 2);
    assert_int_equal(count_events(root, "step", SEGC_PROF_STEP), 2);
    const cJSON *e;
    int64_t iters = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "traceEvents"))
        if (!strcmp(cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring, "step"))
            iters += cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "args"), "iter")->valueint;
    assert_int_equal(iters, 2 + 3);
    cJSON_Delete(root);
    remove(path);
    segc_ctx_free(ctx);
}

static void test_off_records_nothing(void **state) {
    (void)state;
    char err[256];
    segc_ctx *ctx = segc_ctx_new(1);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 3, 8, 8), 1.0f, true);
    segc_tensor *w = t_randn(ctx, 4, SHAPE(4, 3, 3, 3), 0.1f, true);
    assert_false(segc_profiler_active());
    assert_false(segc_profiler_recording());
    assert_false(segc_profiler_iter(1));
    segc_tensor *loss = segc_sum(ctx, small_conv(ctx, x, w), NULL, 0, false);
    assert_true(segc_backward(ctx, loss));
    segc_prof_span s = segc_prof_begin("nothing", SEGC_PROF_DATA);
    segc_prof_end(&s, 0);
    assert_int_equal(segc_profiler_event_count(), 0);
    /* stopping when never started is harmless; after a stop nothing is recorded either */
    assert_true(segc_profiler_stop_and_write(NULL, err, sizeof err));
    assert_true(segc_profiler_start(NULL));
    assert_non_null(small_conv(ctx, x, w));
    assert_true(segc_profiler_event_count() > 0);
    segc_prof_span open = segc_prof_begin("left_open", SEGC_PROF_EVAL);
    assert_true(segc_profiler_stop_and_write(NULL, err, sizeof err));
    segc_prof_end(&open, 0);   /* a slice of a stopped run is dropped, not written anywhere */
    assert_non_null(small_conv(ctx, x, w));
    assert_int_equal(segc_profiler_event_count(), 0);
    segc_ctx_free(ctx);
}

static void test_unwritable_trace(void **state) {
    (void)state;
    char err[256] = "";
    assert_true(segc_profiler_start("/nonexistent-dir/x/trace.json"));
    assert_false(segc_profiler_stop_and_write(NULL, err, sizeof err));
    assert_non_null(strstr(err, "trace.json"));
}

static void test_parse_window(void **state) {
    (void)state;
    int64_t a = -1, b = -1;
    assert_true(segc_profiler_parse_window("50:53", &a, &b));
    assert_int_equal(a, 50);
    assert_int_equal(b, 53);
    assert_true(segc_profiler_parse_window("7", &a, &b));
    assert_int_equal(a, 7);
    assert_int_equal(b, 7);
    assert_false(segc_profiler_parse_window("5:3", &a, &b));
    assert_false(segc_profiler_parse_window("x", &a, &b));
    assert_false(segc_profiler_parse_window("3:", &a, &b));
    assert_false(segc_profiler_parse_window("-1:3", &a, &b));
    assert_false(segc_profiler_parse_window("", &a, &b));
}

static void tiny_config(segc_config *c) {
    segc_config_defaults(c);
    const char *ov[] = {"model.type=segformer", "model.hidden=[8,16,16,16]", "model.depths=[1,1,1,1]",
                        "model.heads=[1,1,1,1]", "model.decoder_hidden=16", "model.num_classes=5",
                        "model.in_channels=3", "data.batch_size=2", "data.crop_size=[32,32]"};
    char err[512];
    for (size_t i = 0; i < sizeof ov / sizeof *ov; i++)
        if (!segc_config_override(c, ov[i], err, sizeof err)) fail_msg("%s", err);
    if (!segc_config_finish(c, err, sizeof err)) fail_msg("%s", err);
}

static void test_bench_tiny(void **state) {
    (void)state;
    segc_config c;
    tiny_config(&c);
    char path[256], err[512];
    trace_path(path, sizeof path, "bench");
    segc_bench_opts o;
    segc_bench_opts_default(&o);
    o.warmup = 1;
    o.steps = 1;
    o.peak_n = 64;
    o.trace_path = path;   /* default window: the one timed training step (bench step 2) */
    segc_bench_result r;
    if (!segc_bench_run(&c, &o, &r, err, sizeof err)) fail_msg("%s", err);
    assert_true(r.train_img_s > 0 && r.train_step_ms > 0);
    assert_true(r.infer_img_s_b1 > 0 && r.infer_img_s_batch > 0);
    assert_true(r.train_flops_per_img > 0);
    assert_true(r.infer_flops_per_img > 0);
    /* forward + backward cost about three forwards (the first conv has no input gradient) */
    assert_true(r.train_flops_per_img > 2 * r.infer_flops_per_img && r.train_flops_per_img < 3.01 * r.infer_flops_per_img);
    assert_true(r.peak_gflops_f32 > 0 && r.peak_gflops_bf16 > 0 && r.train_peak_frac > 0);
    assert_true(r.peak_rss_mib > 0);
    assert_int_equal(r.batch, 2);
    assert_int_equal(r.num_classes, 5);
    assert_non_null(strstr(r.model, "segformer"));
    assert_true(strlen(r.cpu) > 0);
    assert_false(segc_profiler_active());
    cJSON *root = load_trace(path);
    assert_true(count_events(root, "conv2d", SEGC_PROF_FORWARD) > 0);
    assert_true(count_events(root, "conv2d", SEGC_PROF_BACKWARD) > 0);
    assert_int_equal(count_events(root, "optimizer_step", SEGC_PROF_OPTIMIZER), 1);
    assert_int_equal(count_events(root, "step", SEGC_PROF_STEP), 1);
    cJSON_Delete(root);
    remove(path);
    /* the table and the JSON line; the JSON parses */
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    segc_bench_print(&r, NULL, mem);
    fclose(mem);
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "train_img_s")->valuedouble > 0);
    cJSON_Delete(j);
    free(buf);
    /* bad options */
    o.trace_path = NULL;
    o.train = o.infer = false;
    assert_false(segc_bench_run(&c, &o, &r, err, sizeof err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trace_forward_backward), cmocka_unit_test(test_no_grad_and_nesting),
        cmocka_unit_test(test_window),                 cmocka_unit_test(test_off_records_nothing),
        cmocka_unit_test(test_unwritable_trace),       cmocka_unit_test(test_parse_window),
        cmocka_unit_test(test_bench_tiny),        cmocka_unit_test(test_flops_1x1_conv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
