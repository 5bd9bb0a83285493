/* loader: samplers (shuffle, sharding, resume), batches bitwise identical for
 * any worker count, resume continuity, skip_bad, sequential eval passes with
 * variable-size batches, detection boxes, option errors, a real dataset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "segc/loader.h"

/* ---- synthetic source: sample i is a deterministic pattern of size
 * depending on i; indices in bad[] fail to load ---- */
typedef struct {
    int64_t n;
    int bad[4], n_bad;
    bool boxes;
    int channels;
    char names[64][32];
} synth_t;

static bool synth_load(void *user, int64_t i, segc_sample *out, char *err, size_t errlen) {
    synth_t *s = user;
    for (int k = 0; k < s->n_bad; k++)
        if (s->bad[k] == i) {
            snprintf(err, errlen, "png: %s: truncated file", s->names[i % 64]);
            return false;
        }
    int h = 20 + (int)(i * 7 % 13), w = 24 + (int)(i * 5 % 11), c = s->channels;
    memset(out, 0, sizeof *out);
    if (!segc_image_alloc(&out->img, h, w, c, SEGC_U8)) return false;
    uint8_t *p = out->img.data;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) p[(y * w + x) * c + k] = (uint8_t)((x * 9 + y * 5 + k * 70 + i * 31) % 256);
    if (s->boxes) {
        out->n_boxes = 2;
        out->boxes = malloc(sizeof(float) * 8);
        out->box_labels = malloc(sizeof(int32_t) * 2);
        float b[8] = {2, 3, w / 2.f, h / 2.f, w / 3.f, h / 3.f, w - 1.f, h - 2.f};
        memcpy(out->boxes, b, sizeof b);
        out->box_labels[0] = (int32_t)(i % 5);
        out->box_labels[1] = 7;
    } else {
        if (!segc_image_alloc(&out->label, h, w, 1, SEGC_U8)) return false;
        uint8_t *l = out->label.data;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) l[y * w + x] = (uint8_t)(x < w / 2 ? i % 3 : y < h / 3 ? 255 : 4);
    }
    out->index = i;
    return true;
}

static const char *synth_name(void *user, int64_t i) { return ((synth_t *)user)->names[i % 64]; }

static synth_t *synth_new(int64_t n) {
    synth_t *s = calloc(1, sizeof *s);
    s->n = n;
    s->channels = 3;
    for (int i = 0; i < 64; i++) snprintf(s->names[i], sizeof s->names[i], "img_%d.png", i);
    return s;
}
static segc_sample_source synth_source(synth_t *s) { return (segc_sample_source){s, s->n, synth_load, synth_name}; }

static void small_train_pipeline(segc_pipeline *p) { segc_pipeline_seg_train(p, 40, 24, 0.5, 2.0, 16, 20, 0.75); }

/* ---- samplers ---- */
static void test_permutation_and_shuffle(void **state) {
    int64_t n = 37, a[37], b[37], seen[37];
    segc_permutation(5, 0, n, a);
    segc_permutation(5, 1, n, b);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < n; i++) seen[a[i]]++;
    for (int i = 0; i < n; i++) assert_int_equal(seen[i], 1);
    assert_true(memcmp(a, b, sizeof a) != 0);
    int64_t c[37];
    segc_permutation(5, 0, n, c);
    assert_memory_equal(a, c, sizeof a);
    /* infinite sampler: successive epochs are successive permutations */
    segc_sampler s;
    char err[256];
    assert_true(segc_sampler_init(&s, SEGC_SAMPLER_INFINITE, n, true, 5, 0, 1, err, sizeof err));
    for (int e = 0; e < 3; e++) {
        segc_permutation(5, e, n, c);
        for (int i = 0; i < n; i++) {
            int64_t idx, ep;
            assert_true(segc_sampler_next(&s, &idx, &ep));
            assert_int_equal(idx, c[i]);
            assert_int_equal(ep, e);
        }
    }
    segc_sampler_free(&s);
    /* no shuffle: identity order */
    assert_true(segc_sampler_init(&s, SEGC_SAMPLER_INFINITE, 4, false, 5, 0, 1, err, sizeof err));
    for (int i = 0; i < 10; i++) {
        int64_t idx, ep;
        segc_sampler_next(&s, &idx, &ep);
        assert_int_equal(idx, i % 4);
        assert_int_equal(ep, i / 4);
    }
    segc_sampler_free(&s);
}

static void test_sharding(void **state) {
    char err[256];
    for (int n = 7; n <= 12; n++) {
        int W = 3;
        /* global stream from a single rank */
        segc_sampler g;
        assert_true(segc_sampler_init(&g, SEGC_SAMPLER_INFINITE, n, true, 9, 0, 1, err, sizeof err));
        int64_t stream[200], ep_stream[200];
        for (int i = 0; i < 200; i++) segc_sampler_next(&g, &stream[i], &ep_stream[i]);
        segc_sampler_free(&g);
        int count[3][12] = {{0}};   /* per epoch: how often each index was drawn across ranks */
        for (int r = 0; r < W; r++) {
            segc_sampler s;
            assert_true(segc_sampler_init(&s, SEGC_SAMPLER_INFINITE, n, true, 9, r, W, err, sizeof err));
            for (int k = 0; r + k * W < 200; k++) {
                int64_t idx, ep;
                segc_sampler_next(&s, &idx, &ep);
                assert_int_equal(idx, stream[r + k * W]);
                assert_int_equal(ep, ep_stream[r + k * W]);
                if (ep < 3) count[ep][idx]++;
            }
            segc_sampler_free(&s);
        }
        for (int e = 0; e < 3; e++)
            for (int i = 0; i < n; i++) assert_int_equal(count[e][i], 1);   /* each epoch once across ranks */
        /* sequential eval passes: disjoint, covering, ranks interleaved */
        int seen[12] = {0};
        for (int r = 0; r < W; r++) {
            segc_sampler s;
            assert_true(segc_sampler_init(&s, SEGC_SAMPLER_SEQUENTIAL, n, false, 0, r, W, err, sizeof err));
            int64_t idx, ep, expect = r;
            while (segc_sampler_next(&s, &idx, &ep)) {
                assert_int_equal(idx, expect);
                expect += W;
                seen[idx]++;
            }
            segc_sampler_free(&s);
        }
        for (int i = 0; i < n; i++) assert_int_equal(seen[i], 1);
    }
    segc_sampler s;
    assert_false(segc_sampler_init(&s, SEGC_SAMPLER_INFINITE, 10, true, 0, 3, 3, err, sizeof err));
    assert_non_null(strstr(err, "sampler"));
    assert_false(segc_sampler_init(&s, SEGC_SAMPLER_INFINITE, 0, true, 0, 0, 1, err, sizeof err));
}

static void test_sampler_resume(void **state) {
    char err[256];
    segc_sampler a, b;
    assert_true(segc_sampler_init(&a, SEGC_SAMPLER_INFINITE, 11, true, 77, 1, 2, err, sizeof err));
    int64_t idx, ep;
    for (int i = 0; i < 13; i++) segc_sampler_next(&a, &idx, &ep);
    segc_sampler_state st = segc_sampler_get_state(&a);
    assert_true(segc_sampler_init(&b, SEGC_SAMPLER_INFINITE, 11, true, 77, 1, 2, err, sizeof err));
    assert_true(segc_sampler_set_state(&b, &st, err, sizeof err));
    for (int i = 0; i < 30; i++) {
        int64_t i1, e1, i2, e2;
        segc_sampler_next(&a, &i1, &e1);
        segc_sampler_next(&b, &i2, &e2);
        assert_true(i1 == i2 && e1 == e2);
    }
    /* a state of rank 1 is refused by rank 0 */
    segc_sampler c;
    assert_true(segc_sampler_init(&c, SEGC_SAMPLER_INFINITE, 11, true, 77, 0, 2, err, sizeof err));
    st = segc_sampler_get_state(&a);
    assert_false(segc_sampler_set_state(&c, &st, err, sizeof err));
    assert_non_null(strstr(err, "rank 0"));
    segc_sampler_free(&a);
    segc_sampler_free(&b);
    segc_sampler_free(&c);
}

/* ---- loader ---- */
typedef struct {
    int n;
    size_t img_bytes, lab_bytes;
    unsigned char *img, *lab;
    int64_t index[8];
    bool flipped[8];
} batch_copy;

static batch_copy copy_batch(const segc_batch *b) {
    batch_copy c = {.n = b->n};
    c.img_bytes = sizeof(float) * (size_t)b->n * b->c * b->h * b->w;
    c.lab_bytes = (b->label_dtype == SEGC_I64 ? 8 : 1) * (size_t)b->n * b->label_h * b->label_w;
    c.img = malloc(c.img_bytes);
    memcpy(c.img, b->images, c.img_bytes);
    c.lab = malloc(c.lab_bytes + 1);
    if (c.lab_bytes) memcpy(c.lab, b->labels, c.lab_bytes);
    for (int i = 0; i < b->n; i++) c.index[i] = b->index[i], c.flipped[i] = b->flipped[i];
    return c;
}

static void assert_same_batch(const batch_copy *a, const batch_copy *b) {
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->img_bytes, b->img_bytes);
    assert_int_equal(a->lab_bytes, b->lab_bytes);
    assert_memory_equal(a->img, b->img, a->img_bytes);
    if (a->lab_bytes) assert_memory_equal(a->lab, b->lab, a->lab_bytes);
    assert_memory_equal(a->index, b->index, sizeof(int64_t) * a->n);
    assert_memory_equal(a->flipped, b->flipped, sizeof(bool) * a->n);
}

static void free_copies(batch_copy *c, int n) {
    for (int i = 0; i < n; i++) free(c[i].img), free(c[i].lab);
}

static void run_loader(segc_sample_source src, const segc_pipeline *p, segc_loader_opts o, int nb, batch_copy *out,
                       segc_sampler_state *states) {
    char err[512];
    segc_loader *l = segc_loader_new(src, p, &o, err, sizeof err);
    if (!l) fail_msg("%s", err);
    for (int i = 0; i < nb; i++) {
        const segc_batch *b = segc_loader_next(l, err, sizeof err);
        if (!b) fail_msg("batch %d: %s", i, err);
        assert_int_equal(b->seq, i);
        out[i] = copy_batch(b);
        if (states) states[i] = b->resume_state;
    }
    segc_loader_free(l);
}

static void test_workers_identical(void **state) {
    synth_t *s = synth_new(13);
    segc_pipeline p;
    small_train_pipeline(&p);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.batch_size = 3;
    o.seed = 2024;
    o.label_dtype = SEGC_I64;
    enum { NB = 10 };
    batch_copy ref[NB], got[NB];
    o.num_workers = 0;
    run_loader(synth_source(s), &p, o, NB, ref, NULL);
    assert_int_equal(ref[0].img_bytes, sizeof(float) * 3 * 3 * 16 * 20);
    int workers[3] = {1, 2, 4};
    for (int k = 0; k < 3; k++) {
        o.num_workers = workers[k];
        o.prefetch = k + 1;
        run_loader(synth_source(s), &p, o, NB, got, NULL);
        for (int i = 0; i < NB; i++) assert_same_batch(&ref[i], &got[i]);
        free_copies(got, NB);
    }
    /* another seed changes the batches */
    o.seed = 2025;
    run_loader(synth_source(s), &p, o, 1, got, NULL);
    assert_true(memcmp(got[0].img, ref[0].img, ref[0].img_bytes) != 0);
    free_copies(got, 1);
    free_copies(ref, NB);
    free(s);
}

static void test_resume_continues(void **state) {
    synth_t *s = synth_new(9);
    segc_pipeline p;
    small_train_pipeline(&p);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.batch_size = 4;
    o.seed = 7;
    o.num_workers = 2;
    enum { NB = 8 };
    batch_copy ref[NB], got[NB];
    segc_sampler_state states[NB];
    run_loader(synth_source(s), &p, o, NB, ref, states);
    for (int cut = 0; cut < 5; cut += 2) {
        o.resume = &states[cut];
        o.seed = 12345;   /* the saved state's seed wins */
        run_loader(synth_source(s), &p, o, NB - cut - 1, got, NULL);
        for (int i = 0; i < NB - cut - 1; i++) assert_same_batch(&ref[cut + 1 + i], &got[i]);
        free_copies(got, NB - cut - 1);
    }
    free_copies(ref, NB);
    free(s);
}

static void test_skip_bad(void **state) {
    synth_t *s = synth_new(6);
    s->bad[0] = 2;
    s->bad[1] = 3;
    s->n_bad = 2;
    segc_pipeline p;
    small_train_pipeline(&p);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.sampler = SEGC_SAMPLER_SEQUENTIAL;
    o.shuffle = false;
    o.batch_size = 3;
    o.skip_bad = true;
    o.quiet = true;
    char err[512];
    segc_loader *l = segc_loader_new(synth_source(s), &p, &o, err, sizeof err);
    assert_non_null(l);
    const segc_batch *b = segc_loader_next(l, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(b->n, 3);
    assert_int_equal(b->index[0], 0);
    assert_int_equal(b->index[1], 1);
    assert_int_equal(b->index[2], 4);   /* 2 and 3 fail: replaced by the next readable index */
    assert_int_equal(b->n_skipped, 2);
    b = segc_loader_next(l, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(b->index[0], 4);   /* 3 -> 4 */
    assert_int_equal(b->n_skipped, 1);
    assert_int_equal(segc_loader_skipped(l), 3);
    assert_null(segc_loader_next(l, err, sizeof err));
    assert_string_equal(err, "");
    segc_loader_free(l);
    /* without skip_bad the consumer gets the error, naming the file */
    o.skip_bad = false;
    o.num_workers = 3;
    l = segc_loader_new(synth_source(s), &p, &o, err, sizeof err);
    assert_non_null(l);
    assert_null(segc_loader_next(l, err, sizeof err));
    assert_non_null(strstr(err, "img_2.png"));
    assert_null(segc_loader_next(l, err, sizeof err));   /* stays failed */
    assert_non_null(strstr(err, "img_2.png"));
    segc_loader_free(l);
    /* all samples bad */
    synth_t *all = synth_new(2);
    all->bad[0] = 0;
    all->bad[1] = 1;
    all->n_bad = 2;
    o.skip_bad = true;
    l = segc_loader_new(synth_source(all), &p, &o, err, sizeof err);
    assert_null(segc_loader_next(l, err, sizeof err));
    assert_non_null(strstr(err, "no sample"));
    segc_loader_free(l);
    free(all);
    free(s);
}

static void test_eval_pass(void **state) {
    synth_t *s = synth_new(5);
    segc_pipeline p;
    segc_pipeline_seg_eval(&p, 60, 30);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.sampler = SEGC_SAMPLER_SEQUENTIAL;
    o.shuffle = false;
    o.batch_size = 2;
    o.num_workers = 2;
    o.label_dtype = SEGC_I64;
    char err[512];
    segc_loader *l = segc_loader_new(synth_source(s), &p, &o, err, sizeof err);
    assert_non_null(l);
    assert_int_equal(segc_loader_samples_per_epoch(l), 5);
    int total = 0;
    for (int k = 0; k < 3; k++) {
        const segc_batch *b = segc_loader_next(l, err, sizeof err);
        assert_non_null(b);
        assert_int_equal(b->n, k < 2 ? 2 : 1);
        for (int i = 0; i < b->n; i++) {
            int64_t idx = b->index[i];
            assert_int_equal(idx, 2 * k + i);
            int oh = 20 + (int)(idx * 7 % 13), ow = 24 + (int)(idx * 5 % 11), nh, nw;
            segc_rescale_size(oh, ow, 60, 30, &nh, &nw);
            assert_true(b->img_h[i] == nh && b->img_w[i] == nw && b->h >= nh && b->w >= nw);
            assert_true(b->label_hs[i] == oh && b->label_ws[i] == ow);   /* eval labels stay original */
            assert_true(b->ori_h[i] == oh && b->ori_w[i] == ow);
            const int64_t *lab = (const int64_t *)b->labels + (size_t)i * b->label_h * b->label_w;
            assert_int_equal(lab[0], idx % 3);
            if (ow < b->label_w) assert_int_equal(lab[ow], 255);   /* padding */
            const float *img = b->images + (size_t)i * b->c * b->h * b->w;
            if (nw < b->w) assert_true(img[nw] == 0.f);
        }
        total += b->n;
    }
    assert_int_equal(total, 5);
    assert_null(segc_loader_next(l, err, sizeof err));
    assert_string_equal(err, "");
    assert_null(segc_loader_next(l, err, sizeof err));
    segc_loader_free(l);
    /* rank 1 of 2, drop_last */
    o.rank = 1;
    o.world_size = 2;
    o.drop_last = true;
    l = segc_loader_new(synth_source(s), &p, &o, err, sizeof err);
    const segc_batch *b = segc_loader_next(l, err, sizeof err);
    assert_non_null(b);
    assert_true(b->n == 2 && b->index[0] == 1 && b->index[1] == 3);
    assert_null(segc_loader_next(l, err, sizeof err));
    segc_loader_free(l);
    free(s);
}

static void test_detection_batches(void **state) {
    synth_t *s = synth_new(7);
    s->boxes = true;
    segc_pipeline p;
    segc_pipeline_ssd_train(&p, 64);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.batch_size = 4;
    o.num_workers = 3;
    char err[512];
    segc_loader *l = segc_loader_new(synth_source(s), &p, &o, err, sizeof err);
    assert_non_null(l);
    for (int k = 0; k < 5; k++) {
        const segc_batch *b = segc_loader_next(l, err, sizeof err);
        assert_non_null(b);
        assert_true(b->h == 64 && b->w == 64 && b->c == 3 && b->label_h == 0 && b->labels == NULL);
        for (int i = 0; i < b->n; i++) {
            assert_true(b->n_boxes[i] >= 1 && b->n_boxes[i] <= 2);
            for (int j = 0; j < b->n_boxes[i]; j++) {
                const float *bx = b->boxes[i] + 4 * j;
                assert_true(bx[0] >= 0 && bx[2] <= 64 && bx[1] >= 0 && bx[3] <= 64);
                assert_true(b->box_labels[i][j] == 7 || b->box_labels[i][j] == b->index[i] % 5);
            }
        }
    }
    segc_loader_free(l);
    free(s);
}

static void test_loader_errors(void **state) {
    synth_t *s = synth_new(4);
    segc_pipeline p;
    small_train_pipeline(&p);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    char err[512];
    o.batch_size = 0;
    assert_null(segc_loader_new(synth_source(s), &p, &o, err, sizeof err));
    assert_non_null(strstr(err, "loader"));
    o.batch_size = 2;
    o.label_dtype = SEGC_F32;
    assert_null(segc_loader_new(synth_source(s), &p, &o, err, sizeof err));
    assert_non_null(strstr(err, "label dtype"));
    o.label_dtype = SEGC_U8;
    segc_pipeline bad = p;
    bad.t[1].p.random_crop.crop_w = -1;
    assert_null(segc_loader_new(synth_source(s), &bad, &o, err, sizeof err));
    assert_non_null(strstr(err, "random_crop"));
    segc_sampler_state wrong = {7, 0, 1};   /* rank 1's position given to rank 0 of 2 */
    o.world_size = 2;
    o.resume = &wrong;
    assert_null(segc_loader_new(synth_source(s), &p, &o, err, sizeof err));
    assert_non_null(strstr(err, "sampler"));
    o.world_size = 1;
    o.resume = NULL;
    /* the pipeline cannot produce the channels asked for: reported with the file */
    s->channels = 1;
    segc_pipeline gray;
    segc_pipeline_seg_eval(&gray, 40, 20);
    segc_loader *l = segc_loader_new(synth_source(s), &gray, &o, err, sizeof err);
    assert_non_null(l);
    assert_null(segc_loader_next(l, err, sizeof err));
    assert_non_null(strstr(err, "channels"));
    assert_non_null(strstr(err, ".png"));
    segc_loader_free(l);
    free(s);
}

/* ---- a real dataset (the shared data must be there: CI always has it) ---- */
static void test_real_camvid(void **state) {
    char root[1100];
    need_data(root, sizeof root, "camvid");   /* $SEGC_DATA/camvid or ../shared/data/camvid; fails when missing */
    char err[512];
    segc_dataset_opts dopt;
    segc_dataset_opts_default(&dopt);
    segc_dataset *ds = segc_dataset_open("camvid", root, "train", &dopt, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    segc_pipeline p;
    segc_pipeline_seg_train(&p, 480, 360, 0.5, 2.0, 360, 480, 0.75);
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.batch_size = 2;
    o.num_workers = 2;
    o.seed = 3;
    batch_copy a[2], b[2];
    run_loader(segc_dataset_source(ds), &p, o, 2, a, NULL);
    o.num_workers = 0;
    run_loader(segc_dataset_source(ds), &p, o, 2, b, NULL);
    for (int i = 0; i < 2; i++) assert_same_batch(&a[i], &b[i]);
    assert_int_equal(a[0].img_bytes, sizeof(float) * 2 * 3 * 360 * 480);
    free_copies(a, 2);
    free_copies(b, 2);
    segc_dataset_close(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permutation_and_shuffle), cmocka_unit_test(test_sharding),
        cmocka_unit_test(test_sampler_resume),          cmocka_unit_test(test_workers_identical),
        cmocka_unit_test(test_resume_continues),        cmocka_unit_test(test_skip_bad),
        cmocka_unit_test(test_eval_pass),               cmocka_unit_test(test_detection_batches),
        cmocka_unit_test(test_loader_errors),           cmocka_unit_test(test_real_camvid),
    };
    return cmocka_run_group_tests_name("loader", tests, NULL, NULL);
}
