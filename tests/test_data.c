/* Datasets on the real shared data (../shared/data, or $SEGC_DATA): counts,
 * classes, label remapping at pixels checked independently with Pillow/numpy/
 * nibabel; synthetic VOC/folder/MSD trees; corrupt copies; `segc data check`. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <nifti1.h>

#include "common/harness.h"
#include "segc/image_io.h"

/* paths and shell snippets are built with snprintf into fixed buffers far larger
 * than the short paths involved; a truncation would only make a test fail */
#pragma GCC diagnostic ignored "-Wformat-truncation"

static char g_data[1024];   /* shared data root */
static char g_cli[1024];    /* build dir's segc binary */

/* ---------------------------------------------------------------- helpers */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = s ? strlen(s) : 0, b = strlen(suffix);
    return s && a >= b && !strcmp(s + a - b, suffix);
}

static void data_path(char *buf, size_t n, const char *sub) {
    if (sub[0] == '/') snprintf(buf, n, "%s", sub);
    else snprintf(buf, n, "%s/%s", g_data, sub);
}

static segc_dataset *open_ok(const char *name, const char *sub, const char *split, const segc_dataset_opts *o) {
    char root[2048], err[512] = "";
    data_path(root, sizeof root, sub);
    segc_dataset *ds = segc_dataset_open(name, root, split, o, err, sizeof err);
    if (!ds) fail_msg("open %s %s: %s", name, root, err);
    return ds;
}

static void open_fails(const char *name, const char *sub, const char *split, const segc_dataset_opts *o,
                       const char *want) {
    char root[2048], err[512] = "";
    data_path(root, sizeof root, sub);
    segc_dataset *ds = segc_dataset_open(name, root, split, o, err, sizeof err);
    if (ds) {
        segc_dataset_close(ds);
        fail_msg("open %s %s succeeded, expected '%s'", name, root, want);
    }
    if (!strstr(err, want)) fail_msg("open %s: expected '%s' in '%s'", name, want, err);
}

static void load_ok(const segc_dataset *ds, int64_t i, segc_sample *s) {
    char err[512] = "";
    if (!segc_dataset_load(ds, i, s, err, sizeof err)) fail_msg("load %lld: %s", (long long)i, err);
    assert_int_equal(s->index, i);
}

static void load_fails(const segc_dataset *ds, int64_t i, const char *want) {
    char err[512] = "";
    segc_sample s;
    if (segc_dataset_load(ds, i, &s, err, sizeof err)) {
        segc_sample_free(&s);
        fail_msg("load %lld succeeded", (long long)i);
    }
    assert_null(s.img.data);
    if (!strstr(err, want)) fail_msg("load %lld: expected '%s' in '%s'", (long long)i, want, err);
}

static int px(const segc_image *im, int y, int x, int c) {
    return ((const uint8_t *)im->data)[((size_t)y * im->w + x) * im->c + c];
}

static float pxf(const segc_image *im, int y, int x, int c) {
    return ((const float *)im->data)[((size_t)y * im->w + x) * im->c + c];
}

static void rm_rf(const char *dir) {
    char cmd[1200];
    if (strncmp(dir, "/tmp/segc_", 10)) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", dir);
}

static int run_capture(const char *cmd, char *out, size_t n) {
    char full[4200];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void voc_color(int k, uint8_t rgb[3]) {
    int r = 0, g = 0, b = 0;
    for (int j = 0; j < 8; j++, k >>= 3) {
        r |= ((k >> 0) & 1) << (7 - j), g |= ((k >> 1) & 1) << (7 - j), b |= ((k >> 2) & 1) << (7 - j);
    }
    rgb[0] = (uint8_t)r, rgb[1] = (uint8_t)g, rgb[2] = (uint8_t)b;
}

/* h x w label with four quadrant values (tl, tr, bl, br) as an indexed PNG */
static void write_label(const char *base, const char *rel, int h, int w, const int q[4], const uint8_t *pal) {
    segc_image m;
    char path[1024], err[256];
    assert_true(segc_image_alloc(&m, h, w, 1, SEGC_U8));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) ((uint8_t *)m.data)[y * w + x] = (uint8_t)q[(y >= h / 2) * 2 + (x >= w / 2)];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    if (!segc_png_write(path, &m, pal, 256, err, sizeof err)) fail_msg("%s", err);
    segc_image_free(&m);
}

/* f32 NIfTI-1 (.nii, or gzip'd), nt > 1 as a 4-D volume */
static void write_nifti(const char *path, int nx, int ny, int nz, int nt, const float *data, bool gz) {
    nifti_1_header h;
    memset(&h, 0, sizeof h);
    h.sizeof_hdr = 348;
    h.dim[0] = (short)(nt > 1 ? 4 : 3), h.dim[1] = (short)nx, h.dim[2] = (short)ny, h.dim[3] = (short)nz;
    h.dim[4] = (short)nt, h.dim[5] = h.dim[6] = h.dim[7] = 1;
    h.datatype = DT_FLOAT32, h.bitpix = 32, h.vox_offset = 352, h.scl_slope = 1.f;
    memcpy(h.magic, "n+1", 4);
    uint8_t pad[4] = {0};
    size_t nb = (size_t)nx * ny * nz * nt * sizeof(float);
    gzFile f = gzopen(path, gz ? "wb" : "wbT");
    assert_non_null(f);
    assert_true(gzwrite(f, &h, sizeof h) == (int)sizeof h && gzwrite(f, pad, 4) == 4 && gzwrite(f, data, (unsigned)nb) == (int)nb);
    assert_int_equal(gzclose(f), Z_OK);
}

/* camvid-layout copy of val with one good pair and seven broken ones */
static void make_broken_camvid(const char *tmp) {
    char cmd[8192], a[1024], b[1024], err[256];
    const char *v = "camvid/val/0016E5_07959.png", *l = "camvid/valannot/0016E5_07959.png";
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; mkdir -p val valannot; D=%s; "
             "ln -s $D/%s val/0_ok.png; ln -s $D/%s valannot/0_ok.png; "
             "head -c 20000 $D/%s > val/a_truncated.png; ln -s $D/%s valannot/a_truncated.png; "
             "cp $D/%s val/b_flipped.png; chmod u+w val/b_flipped.png; "
             "printf '\\x00\\x00\\x00\\x00' | dd of=val/b_flipped.png bs=1 seek=60000 conv=notrunc status=none; "
             "ln -s $D/%s valannot/b_flipped.png; "
             "ln -s $D/%s val/c_nolabel.png; ln -s $D/%s val/d_size.png; ln -s $D/%s val/e_badvalue.png; "
             "touch val/f_empty.png; ln -s $D/%s valannot/f_empty.png; "
             "echo 'not an image' > val/g_text.png; ln -s $D/%s valannot/g_text.png",
             tmp, g_data, v, l, v, l, v, l, v, v, v, l, l);
    assert_int_equal(system(cmd), 0);
    segc_image m;
    snprintf(a, sizeof a, "%s/%s", g_data, l);
    assert_true(segc_image_read(a, SEGC_READ_LABEL, &m, err, sizeof err));
    ((uint8_t *)m.data)[3] = 12;
    snprintf(b, sizeof b, "%s/valannot/e_badvalue.png", tmp);
    assert_true(segc_png_write(b, &m, NULL, 0, err, sizeof err));
    segc_image_free(&m);
    assert_true(segc_image_alloc(&m, 10, 10, 1, SEGC_U8));
    memset(m.data, 1, 100);
    snprintf(b, sizeof b, "%s/valannot/d_size.png", tmp);
    assert_true(segc_png_write(b, &m, NULL, 0, err, sizeof err));
    segc_image_free(&m);
}

/* COCO JSON variants: each bad one gives a message naming the problem */
static void coco_parse_cases(void) {
    static const struct { const char *json, *want; } bad[] = {
        {"[1,2]", "expected an object"},
        {"{\"images\":[],\"categories\":[]}", "expected 1..255 categories"},
        {"{\"images\":[],\"categories\":[{\"id\":1,\"name\":\"a\"},{\"id\":1,\"name\":\"b\"}]}", "duplicate category id 1"},
        {"{\"images\":[{\"id\":1,\"file_name\":\"a.jpg\",\"width\":4}],\"categories\":[{\"id\":3,\"name\":\"a\"}]}",
         "image 0 lacks"},
        {"{\"images\":[{\"id\":1,\"file_name\":\"../x.jpg\",\"width\":4,\"height\":4}],\"categories\":[{\"id\":3,\"name\":\"a\"}]}",
         "relative path"},
        {"{\"images\":[{\"id\":1,\"file_name\":\"a.jpg\",\"width\":4,\"height\":4}],\"categories\":[{\"id\":3,\"name\":\"a\"}],"
         "\"annotations\":[{\"image_id\":1,\"category_id\":4,\"bbox\":[0,0,1,1]}]}", "unknown category id 4"},
        {"{\"images\":[{\"id\":1,\"file_name\":\"a.jpg\",\"width\":4,\"height\":4}],\"categories\":[{\"id\":3,\"name\":\"a\"}],"
         "\"annotations\":[{\"image_id\":2,\"category_id\":3,\"bbox\":[0,0,1,1]}]}", "unknown image id 2"},
        {"{\"images\":[{\"id\":1,\"file_name\":\"a.jpg\",\"width\":4,\"height\":4}],\"categories\":[{\"id\":3,\"name\":\"a\"}],"
         "\"annotations\":[{\"image_id\":1,\"category_id\":3,\"bbox\":[0,0,1]}]}", "4-number bbox"},
        {"{\"images\":[{\"id\":1,\"file_name\":\"a.jpg\",\"width\":4,\"height\":4}],\n\"categories\":[{\"id\":3,\"name\":\"a\"}],,",
         "malformed JSON at line 2"},
    };
    char tmp[] = "/tmp/segc_cj_XXXXXX", path[1024], err[512];
    assert_non_null(mkdtemp(tmp));
    snprintf(path, sizeof path, "%s/x", tmp);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/annotations", tmp);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/annotations/instances_x.json", tmp);
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        FILE *f = fopen(path, "w");
        fputs(bad[k].json, f);
        fclose(f);
        segc_dataset *ds = segc_dataset_open("coco", tmp, "x", NULL, err, sizeof err);
        if (ds) {
            segc_dataset_close(ds);
            fail_msg("case %zu opened", k);
        }
        if (!strstr(err, bad[k].want) || !strstr(err, "instances_x.json")) fail_msg("case %zu: '%s'", k, err);
    }
    /* degenerate boxes (w < 1) are dropped (boxes outside the image are bad input: test_coco_eval.c);
     * the json file itself can be the root */
    FILE *f = fopen(path, "w");
    fputs("{\"images\":[{\"id\":7,\"file_name\":\"a.png\",\"width\":4,\"height\":3}],\"categories\":[{\"id\":9,\"name\":\"a\"},"
          "{\"id\":2,\"name\":\"b\"}],\"annotations\":[{\"image_id\":7,\"category_id\":9,\"bbox\":[1,1,2,1.5],\"iscrowd\":1},"
          "{\"image_id\":7,\"category_id\":2,\"bbox\":[0,0,0.5,2]}]}", f);
    fclose(f);
    segc_image im;
    assert_true(segc_image_alloc(&im, 3, 4, 3, SEGC_U8));
    memset(im.data, 0, 36);
    char ip[1024];
    snprintf(ip, sizeof ip, "%s/x/a.png", tmp);
    assert_true(segc_png_write(ip, &im, NULL, 0, err, sizeof err));
    segc_image_free(&im);
    segc_dataset *ds = segc_dataset_open("coco", path, NULL, NULL, err, sizeof err);
    if (!ds) fail_msg("%s", err);
    assert_string_equal(segc_dataset_class_name(ds, 0), "b");   /* sorted by id: 2, 9 */
    segc_sample s;
    load_ok(ds, 0, &s);
    assert_int_equal(s.n_boxes, 1);
    assert_int_equal(s.box_labels[0], 1), assert_int_equal(s.box_crowd[0], 1);
    assert_true(s.boxes[0] == 1.f && s.boxes[1] == 1.f && s.boxes[2] == 3.f && s.boxes[3] == 2.5f);
    segc_sample_free(&s);
    segc_dataset_close(ds);
    /* annotations disagreeing with the image size */
    f = fopen(path, "w");
    fputs("{\"images\":[{\"id\":7,\"file_name\":\"a.png\",\"width\":5,\"height\":3}],\"categories\":[{\"id\":9,\"name\":\"a\"}]}", f);
    fclose(f);
    ds = segc_dataset_open("coco", tmp, "x", NULL, err, sizeof err);
    assert_non_null(ds);
    load_fails(ds, 0, "a.png: image is 3x4 (HxW) but the annotations say 3x5");
    segc_dataset_close(ds);
    rm_rf(tmp);
}

/* The shared data must be there (CI always has it): a missing dataset fails
 * the test, naming the path, instead of skipping it. */
static bool have_data(const char *sub) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", g_data, sub);
    struct stat st;
    if (stat(p, &st) != 0) fail_msg("%s not found: this test needs the shared data (set SEGC_DATA)", p);
    return true;
}

static void test_camvid(void **state) {
    (void)state;
    have_data("camvid");
    segc_dataset *tr = open_ok("camvid", "camvid", NULL, NULL);
    segc_dataset *va = open_ok("camvid", "camvid", "val", NULL);
    assert_int_equal(segc_dataset_len(tr), 367);
    assert_int_equal(segc_dataset_len(va), 101);
    assert_int_equal(segc_dataset_num_classes(tr), 11);
    assert_string_equal(segc_dataset_class_name(tr, 0), "Sky");
    assert_string_equal(segc_dataset_class_name(tr, 10), "Bicyclist");
    assert_memory_equal(segc_dataset_palette(tr, 4), ((uint8_t[]){60, 40, 222}), 3);
    assert_null(segc_dataset_class_name(tr, 11));
    assert_true(ends_with(segc_dataset_image_path(tr, 0), "/train/0001TP_006690.png"));
    assert_true(ends_with(segc_dataset_label_path(tr, 0), "/trainannot/0001TP_006690.png"));
    assert_true(ends_with(segc_dataset_image_path(va, 0), "/val/0016E5_07959.png"));
    assert_true(ends_with(segc_dataset_image_path(va, 100), "/val/0016E5_08159.png"));
    segc_sample s;
    load_ok(tr, 0, &s);
    assert_int_equal(s.index, 0);
    assert_int_equal(s.img.h, 360), assert_int_equal(s.img.w, 480), assert_int_equal(s.img.c, 3);
    assert_int_equal(s.img.dtype, SEGC_U8);
    assert_int_equal(s.label.h, 360), assert_int_equal(s.label.w, 480), assert_int_equal(s.label.c, 1);
    assert_int_equal(px(&s.img, 0, 0, 0), 16);
    assert_int_equal(px(&s.img, 36, 392, 0), 153), assert_int_equal(px(&s.img, 36, 392, 2), 187);
    assert_int_equal(px(&s.label, 36, 392, 0), 255);   /* raw 11 Unlabelled -> ignore */
    assert_int_equal(px(&s.label, 359, 479, 0), 255);
    assert_int_equal(px(&s.label, 300, 240, 0), 8);
    assert_int_equal(px(&s.label, 50, 400, 0), 1);
    segc_sample_free(&s);
    /* gray decoding */
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.image_channels = 1;
    segc_dataset *g = open_ok("camvid", "camvid", "val", &o);
    load_ok(g, 0, &s);
    assert_int_equal(s.img.c, 1);
    segc_sample_free(&s);
    segc_dataset_close(g);
    /* unknown split names the folders present */
    open_fails("camvid", "camvid", "test", NULL, "split 'test'");
    segc_dataset_close(tr);
    segc_dataset_close(va);
}

static void test_ade20k(void **state) {
    (void)state;
    have_data("ade20k-samples");
    segc_dataset *tr = open_ok("ade20k", "ade20k-samples", NULL, NULL);
    segc_dataset *va = open_ok("ade20k", "ade20k-samples/ADEChallengeData2016", "val", NULL);
    assert_int_equal(segc_dataset_len(tr), 1);
    assert_int_equal(segc_dataset_len(va), 3);
    assert_int_equal(segc_dataset_num_classes(va), 150);
    assert_string_equal(segc_dataset_class_name(va, 0), "wall");
    assert_string_equal(segc_dataset_class_name(va, 7), "bed");
    assert_string_equal(segc_dataset_class_name(va, 149), "flag");
    assert_memory_equal(segc_dataset_palette(va, 149), ((uint8_t[]){92, 0, 255}), 3);
    assert_true(ends_with(segc_dataset_image_path(va, 0), "images/validation/ADE_val_00000001.jpg"));
    assert_true(ends_with(segc_dataset_label_path(va, 2), "annotations/validation/ADE_val_00000003.png"));
    segc_sample s;
    load_ok(va, 0, &s);
    assert_int_equal(s.img.h, 512), assert_int_equal(s.img.w, 683);
    /* reduce_zero_label: raw 3 -> 2, raw 0 -> 255, raw 2 -> 1 */
    assert_int_equal(px(&s.label, 0, 0, 0), 2);
    assert_int_equal(px(&s.label, 511, 682, 0), 255);
    assert_int_equal(px(&s.label, 300, 300, 0), 1);
    assert_int_equal(px(&s.label, 0, 234, 0), 255);
    /* JPEG pixels as Pillow decodes them (same libjpeg-turbo integer IDCT) */
    assert_true(abs(px(&s.img, 0, 0, 0) - 86) <= 1 && abs(px(&s.img, 0, 0, 1) - 138) <= 1);
    assert_true(abs(px(&s.img, 300, 300, 2) - 64) <= 1 && abs(px(&s.img, 100, 500, 2) - 214) <= 1);
    segc_sample_free(&s);
    /* explicit no-reduce keeps 0 ("other") as class 0 of 151 */
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.use_default_reduce = false, o.reduce_zero_label = false;
    segc_dataset *nr = open_ok("ade20k", "ade20k-samples", "validation", &o);
    assert_int_equal(segc_dataset_num_classes(nr), 151);
    assert_string_equal(segc_dataset_class_name(nr, 1), "wall");
    load_ok(nr, 0, &s);
    assert_int_equal(px(&s.label, 0, 0, 0), 3);
    assert_int_equal(px(&s.label, 511, 682, 0), 0);
    segc_sample_free(&s);
    segc_dataset_close(nr);
    segc_dataset_close(tr);
    segc_dataset_close(va);
}

static void test_cityscapes(void **state) {
    (void)state;
    have_data("cityscapes-sample");
    segc_dataset *ds = open_ok("cityscapes", "cityscapes-sample", "val", NULL);
    assert_int_equal(segc_dataset_len(ds), 1);
    assert_int_equal(segc_dataset_num_classes(ds), 19);
    assert_string_equal(segc_dataset_class_name(ds, 18), "bicycle");
    assert_true(ends_with(segc_dataset_label_path(ds, 0), "frankfurt_000000_000294_gtFine_labelTrainIds.png"));
    segc_sample s;
    load_ok(ds, 0, &s);
    assert_int_equal(s.img.h, 128), assert_int_equal(s.img.w, 256);
    assert_int_equal(px(&s.label, 0, 0, 0), 255);
    assert_int_equal(px(&s.label, 64, 128, 0), 0);
    int64_t hist[256] = {0};
    for (int i = 0; i < 128 * 256; i++) hist[((uint8_t *)s.label.data)[i]]++;
    assert_int_equal(hist[0], 9737), assert_int_equal(hist[2], 12748), assert_int_equal(hist[13], 1799);
    assert_int_equal(hist[255], 3869);
    /* labelIds only (no labelTrainIds): the official table gives the same train ids */
    char tmp[] = "/tmp/segc_cs_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/leftImg8bit/val/frankfurt %s/gtFine/val/frankfurt && "
             "cp %s/cityscapes-sample/leftImg8bit/val/frankfurt/*.png %s/leftImg8bit/val/frankfurt/ && "
             "cp %s/cityscapes-sample/gtFine/val/frankfurt/*_labelIds.png %s/gtFine/val/frankfurt/",
             tmp, tmp, g_data, tmp, g_data, tmp);
    assert_int_equal(system(cmd), 0);
    char err[512];
    segc_dataset *ids = segc_dataset_open("cityscapes", tmp, "val", NULL, err, sizeof err);
    if (!ids) fail_msg("%s", err);
    assert_true(ends_with(segc_dataset_label_path(ids, 0), "_gtFine_labelIds.png"));
    /* (this sample's two label files were downsampled separately: 77 edge pixels differ) */
    segc_sample t;
    load_ok(ids, 0, &t);
    int64_t th[256] = {0}, same = 0;
    for (int i = 0; i < 128 * 256; i++) {
        th[((uint8_t *)t.label.data)[i]]++;
        same += ((uint8_t *)t.label.data)[i] == ((uint8_t *)s.label.data)[i];
    }
    assert_int_equal(same, 128 * 256 - 77);
    static const int64_t want[][2] = {{0, 9740}, {1, 2628}, {2, 12744}, {4, 44},  {5, 396},  {7, 188},
                                      {8, 664},  {10, 581}, {11, 107},  {13, 1802}, {255, 3874}};
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) assert_int_equal(th[want[k][0]], want[k][1]);
    segc_sample_free(&t);
    segc_dataset_close(ids);
    rm_rf(tmp);
    segc_sample_free(&s);
    segc_dataset_close(ds);
}

static void test_voc_synthetic(void **state) {
    (void)state;
    have_data("ade20k-samples");
    char tmp[] = "/tmp/segc_voc_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char base[512], cmd[4096];
    snprintf(base, sizeof base, "%s/VOCdevkit/VOC2012", tmp);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/JPEGImages %s/SegmentationClass %s/ImageSets/Segmentation && "
             "cp %s/ade20k-samples/ADEChallengeData2016/images/validation/ADE_val_00000002.jpg %s/JPEGImages/2008_000002.jpg && "
             "cp %s/ade20k-samples/ADEChallengeData2016/images/validation/ADE_val_00000003.jpg %s/JPEGImages/2008_000003.jpg && "
             "printf '2008_000002\\n2008_000003\\n' > %s/ImageSets/Segmentation/train.txt && "
             "printf '2008_000003\\r\\n' > %s/ImageSets/Segmentation/val.txt",
             base, base, base, g_data, base, g_data, base, base, base);
    assert_int_equal(system(cmd), 0);
    /* palette label maps with VOC's 256-colour map: indices 0, 15, 20 and 255 borders */
    uint8_t pal[256 * 3];
    for (int k = 0; k < 256; k++) voc_color(k, pal + 3 * k);
    write_label(base, "SegmentationClass/2008_000002.png", 364, 500, (const int[]){0, 15, 255, 20}, pal);
    write_label(base, "SegmentationClass/2008_000003.png", 300, 400, (const int[]){0, 21, 255, 1}, pal);
    segc_dataset *ds = open_ok("voc", tmp, NULL, NULL);   /* finds VOCdevkit/VOC2012 */
    assert_int_equal(segc_dataset_len(ds), 2);
    assert_int_equal(segc_dataset_num_classes(ds), 21);
    assert_string_equal(segc_dataset_class_name(ds, 20), "tvmonitor");
    assert_memory_equal(segc_dataset_palette(ds, 1), ((uint8_t[]){128, 0, 0}), 3);
    assert_memory_equal(segc_dataset_palette(ds, 15), ((uint8_t[]){192, 128, 128}), 3);
    segc_sample s;
    load_ok(ds, 0, &s);
    assert_int_equal(s.img.h, 364), assert_int_equal(s.img.w, 500);
    assert_int_equal(px(&s.label, 0, 0, 0), 0);
    assert_int_equal(px(&s.label, 0, 499, 0), 15);
    assert_int_equal(px(&s.label, 363, 0, 0), 255);   /* border kept as ignore */
    assert_int_equal(px(&s.label, 363, 499, 0), 20);
    segc_sample_free(&s);
    /* 21 is not a VOC class: a clear error naming the file */
    load_fails(ds, 1, "2008_000003.png: label value 21");
    segc_sample_check chk;
    char err[512];
    assert_true(segc_dataset_check_sample(ds, 1, &chk, err, sizeof err));
    assert_int_equal(chk.first_invalid, 21);
    assert_int_equal(chk.n_invalid, 150 * 200);
    segc_dataset_close(ds);
    segc_dataset *va = open_ok("voc", base, "val", NULL);
    assert_int_equal(segc_dataset_len(va), 1);
    segc_dataset_close(va);
    open_fails("voc", base, "trainaug", NULL, "trainaug.txt");
    rm_rf(tmp);
}

static void test_folder(void **state) {
    (void)state;
    have_data("isbi-membranes");
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.value_map = "255:1";
    o.image_channels = 1;
    segc_dataset *ds = open_ok("folder", "isbi-membranes", NULL, &o);
    assert_int_equal(segc_dataset_len(ds), 30);
    assert_int_equal(segc_dataset_num_classes(ds), 2);
    assert_true(ends_with(segc_dataset_image_path(ds, 0), "image/0.png"));
    assert_true(ends_with(segc_dataset_label_path(ds, 0), "label/0.png"));
    assert_true(ends_with(segc_dataset_image_path(ds, 2), "image/10.png"));   /* sorted by name */
    int64_t hist[256] = {0};
    for (int64_t i = 0; i < 30; i++) {
        segc_sample s;
        load_ok(ds, i, &s);
        assert_int_equal(s.img.c, 1);
        if (ends_with(segc_dataset_image_path(ds, i), "/0.png"))
            assert_true(px(&s.img, 0, 0, 0) == 126 && px(&s.img, 100, 200, 0) == 188 && px(&s.img, 511, 511, 0) == 171);
        for (int p = 0; p < 512 * 512; p++) hist[((uint8_t *)s.label.data)[p]]++;
        segc_sample_free(&s);
    }
    assert_int_equal(hist[0], 1727250);
    assert_int_equal(hist[1], 6137070);
    segc_dataset_close(ds);
    /* without a value map or class list the classes are unknown */
    open_fails("folder", "isbi-membranes", NULL, NULL, "no class list");
    o.value_map = "255:x";
    open_fails("folder", "isbi-membranes", NULL, &o, "value map");

    /* synthetic: class file with colours, RGB colour masks, a missing mask */
    char tmp[] = "/tmp/segc_folder_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char cmd[2048], path[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/train/images %s/train/masks && printf '# name r g b\\nsky 0 0 255\\n"
             "tree top 0 255 0\\n\\nroad 128 64 128\\n' > %s/classes.txt", tmp, tmp, tmp);
    assert_int_equal(system(cmd), 0);
    segc_image im, m;
    char err[512];
    assert_true(segc_image_alloc(&im, 4, 6, 3, SEGC_U8) && segc_image_alloc(&m, 4, 6, 3, SEGC_U8));
    memset(im.data, 9, 72);
    const uint8_t cols[3][3] = {{0, 0, 255}, {0, 255, 0}, {128, 64, 128}};
    for (int p = 0; p < 24; p++) memcpy((uint8_t *)m.data + 3 * p, cols[p % 3], 3);
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/train/images/img%d.png", tmp, k);
        assert_true(segc_png_write(path, &im, NULL, 0, err, sizeof err));
    }
    snprintf(path, sizeof path, "%s/train/masks/img0.png", tmp);
    assert_true(segc_png_write(path, &m, NULL, 0, err, sizeof err));
    ((uint8_t *)m.data)[5] = 7;   /* a colour that is no class */
    snprintf(path, sizeof path, "%s/train/masks/img1.png", tmp);
    assert_true(segc_png_write(path, &m, NULL, 0, err, sizeof err));
    segc_dataset *sy = open_ok("folder", tmp, "train", NULL);
    assert_int_equal(segc_dataset_len(sy), 3);
    assert_int_equal(segc_dataset_num_classes(sy), 3);
    assert_string_equal(segc_dataset_class_name(sy, 1), "tree top");
    assert_memory_equal(segc_dataset_palette(sy, 2), ((uint8_t[]){128, 64, 128}), 3);
    segc_sample s;
    load_ok(sy, 0, &s);
    for (int p = 0; p < 24; p++) assert_int_equal(((uint8_t *)s.label.data)[p], p % 3);
    segc_sample_free(&s);
    load_fails(sy, 1, "not in the class palette");
    load_fails(sy, 2, "img2.png: label file missing");
    segc_dataset_close(sy);
    snprintf(cmd, sizeof cmd, "printf 'a 1 2 3\\nb\\n' > %s/bad.txt", tmp);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/bad.txt", tmp);
    segc_dataset_opts_default(&o);
    o.class_file = path;
    open_fails("folder", tmp, "train", &o, "bad.txt: 1 of 2 classes have");
    segc_image_free(&im);
    segc_image_free(&m);
    rm_rf(tmp);
}

static void test_coco(void **state) {
    (void)state;
    have_data("coco-mini");
    segc_dataset *tr = open_ok("coco", "coco-mini", "train", NULL);
    segc_dataset *va = open_ok("coco", "coco-mini", "val2017", NULL);
    assert_int_equal(segc_dataset_len(tr), 80);
    assert_int_equal(segc_dataset_len(va), 79);
    assert_true(segc_dataset_is_detection(va));
    assert_int_equal(segc_dataset_num_classes(va), 80);
    assert_string_equal(segc_dataset_class_name(va, 0), "person");
    assert_string_equal(segc_dataset_class_name(va, 79), "toothbrush");
    assert_int_equal(segc_dataset_coco_category_id(va, 79), 90);
    assert_int_equal(segc_dataset_coco_image_id(va, 0), 139);
    assert_true(ends_with(segc_dataset_image_path(va, 0), "val2017/000000000139.jpg"));
    segc_sample s;
    load_ok(va, 0, &s);
    assert_int_equal(s.img.h, 426), assert_int_equal(s.img.w, 640), assert_int_equal(s.img.c, 3);
    assert_null(s.label.data);
    assert_int_equal(s.n_boxes, 20);
    assert_true(fabsf(s.boxes[0] - 236.98f) < 1e-3f && fabsf(s.boxes[1] - 142.51f) < 1e-3f);
    assert_true(fabsf(s.boxes[2] - 261.68f) < 1e-3f && fabsf(s.boxes[3] - 212.01f) < 1e-3f);
    assert_int_equal(s.box_labels[0], 58), assert_int_equal(s.box_labels[1], 62);
    assert_true(fabsf(s.boxes[8] - 557.21f) < 1e-3f && fabsf(s.boxes[10] - 638.56f) < 1e-3f);
    assert_true(abs(px(&s.img, 0, 0, 0) - 170) <= 1 && abs(px(&s.img, 100, 200, 2) - 66) <= 1);
    segc_sample_free(&s);
    load_ok(va, 6, &s);   /* 000000034417.jpg: box 20 is a crowd of class 54 */
    assert_int_equal(s.box_crowd[20], 1), assert_int_equal(s.box_labels[20], 54);
    assert_true(s.boxes[0 + 4 * 20] == 100.f && s.boxes[2 + 4 * 20] == 495.f && s.boxes[3 + 4 * 20] == 179.f);
    segc_sample_free(&s);
    int64_t boxes = 0, crowd = 0;
    for (int64_t i = 0; i < 80; i++) {
        load_ok(tr, i, &s);
        boxes += s.n_boxes;
        for (int b = 0; b < s.n_boxes; b++) crowd += s.box_crowd[b];
        segc_sample_free(&s);
    }
    assert_int_equal(boxes, 739), assert_int_equal(crowd, 8);
    segc_dataset_close(tr);
    segc_dataset_close(va);
    coco_parse_cases();
    /* malformed JSON on disk names the file and the place */
    char tmp[] = "/tmp/segc_coco_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/annotations %s/val2017 && head -c 3000 %s/coco-mini/annotations/instances_val2017.json "
             "> %s/annotations/instances_val2017.json",
             tmp, tmp, g_data, tmp);
    assert_int_equal(system(cmd), 0);
    char err[512];
    assert_null(segc_dataset_open("coco", tmp, "val2017", NULL, err, sizeof err));
    assert_non_null(strstr(err, "instances_val2017.json: malformed JSON at line"));
    rm_rf(tmp);
}

static void test_brats(void **state) {
    (void)state;
    have_data("brats-mini");
    segc_dataset *tr = open_ok("brats", "brats-mini", NULL, NULL);
    assert_int_equal(segc_dataset_len(tr), 2 * 155);
    assert_int_equal(segc_dataset_num_classes(tr), 5);
    assert_string_equal(segc_dataset_class_name(tr, 4), "enhancing tumour");
    assert_true(strstr(segc_dataset_image_path(tr, 77), "brats_2013_pat0005_1/Flair_subtrMeanDivStd.nii.gz@z=77"));
    segc_sample s;
    load_ok(tr, 77, &s);   /* case pat0005, z = 77: channels Flair, T1c z-scored over the brain mask */
    assert_int_equal(s.img.h, 240), assert_int_equal(s.img.w, 240), assert_int_equal(s.img.c, 2);
    assert_int_equal(s.img.dtype, SEGC_F32);
    assert_true(fabsf(pxf(&s.img, 120, 120, 0) - -0.84566822f) < 1e-4f);
    assert_true(fabsf(pxf(&s.img, 120, 120, 1) - 0.16180490f) < 1e-4f);
    assert_true(pxf(&s.img, 0, 0, 0) == 0.f);   /* outside the brain */
    segc_sample_free(&s);
    load_ok(tr, 60, &s);
    assert_true(fabsf(pxf(&s.img, 140, 100, 0) - 0.78424961f) < 1e-4f);
    segc_sample_free(&s);
    load_ok(tr, 71, &s);
    assert_int_equal(px(&s.label, 149, 53, 0), 4);
    segc_sample_free(&s);
    segc_dataset_close(tr);
    /* validation, only slices with brain */
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.brain_slices_only = true;
    segc_dataset *va = open_ok("brats", "brats-mini", "validation", &o);
    assert_int_equal(segc_dataset_len(va), 140 + 130);
    assert_true(strstr(segc_dataset_image_path(va, 0), "brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz@z=7"));
    segc_dataset_close(va);
    /* sagittal slices, decoded per load (no cache) */
    setenv("SEGC_MEDICAL_CACHE_MB", "0", 1);
    o.brain_slices_only = false, o.slice_axis = 0;
    segc_dataset *sag = open_ok("brats", "brats-mini", "train", &o);
    unsetenv("SEGC_MEDICAL_CACHE_MB");
    assert_int_equal(segc_dataset_len(sag), 2 * 240);
    load_ok(sag, 120, &s);   /* x = 120: rows z, columns y */
    assert_int_equal(s.img.h, 155), assert_int_equal(s.img.w, 240);
    assert_true(fabsf(pxf(&s.img, 77, 120, 0) - -0.84566822f) < 1e-4f);
    segc_sample_free(&s);
    load_ok(sag, 53, &s);
    assert_int_equal(px(&s.label, 71, 149, 0), 4);
    segc_sample_free(&s);
    segc_dataset_close(sag);
    o.slice_axis = 3;
    open_fails("brats", "brats-mini", NULL, &o, "slice_axis");
}

static void test_msd_synthetic(void **state) {
    (void)state;
    char tmp[] = "/tmp/segc_msd_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char cmd[2048], p[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/imagesTr %s/labelsTr && printf '{\"labels\": {\"0\": \"background\", \"1\": \"edema\", "
             "\"2\": \"tumour\"}, \"modality\": {\"0\": \"FLAIR\", \"1\": \"T1\"}}' > %s/dataset.json",
             tmp, tmp, tmp);
    assert_int_equal(system(cmd), 0);
    /* 4x3x2 volumes with 2 modalities: image value = 100*t + voxel index; label = index % 3 */
    const int nx = 4, ny = 3, nz = 2, nv = nx * ny * nz;
    float img[2 * 24], lab[24];
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < nv; i++) img[t * nv + i] = (float)(100 * t + i + 1);
    for (int i = 0; i < nv; i++) lab[i] = (float)(i % 3);
    snprintf(p, sizeof p, "%s/imagesTr/case_001.nii.gz", tmp);
    write_nifti(p, nx, ny, nz, 2, img, true);
    snprintf(p, sizeof p, "%s/labelsTr/case_001.nii.gz", tmp);
    write_nifti(p, nx, ny, nz, 1, lab, true);
    snprintf(p, sizeof p, "%s/imagesTr/case_002.nii", tmp);
    write_nifti(p, nx, ny, nz, 2, img, false);
    lab[5] = 7;   /* not a class */
    snprintf(p, sizeof p, "%s/labelsTr/case_002.nii", tmp);
    write_nifti(p, nx, ny, nz, 1, lab, false);
    setenv("SEGC_MEDICAL_CACHE_MB", "0", 1);   /* case 2's bad label shows at load time */
    segc_dataset *ds = open_ok("msd", tmp, NULL, NULL);
    unsetenv("SEGC_MEDICAL_CACHE_MB");
    assert_int_equal(segc_dataset_len(ds), 2 * nz);
    assert_int_equal(segc_dataset_num_classes(ds), 3);
    assert_string_equal(segc_dataset_class_name(ds, 2), "tumour");
    segc_sample s;
    load_ok(ds, 1, &s);   /* case 1, z = 1 */
    assert_int_equal(s.img.h, ny), assert_int_equal(s.img.w, nx), assert_int_equal(s.img.c, 2);
    /* z-score over all (nonzero) voxels: channel t has mean 100t + 12.5, std sqrt((24^2-1)/12) */
    float sd = sqrtf((24.f * 24.f - 1.f) / 12.f);
    int i = (1 * ny + 2) * nx + 3;   /* x=3, y=2, z=1 */
    assert_true(fabsf(pxf(&s.img, 2, 3, 0) - (i + 1 - 12.5f) / sd) < 1e-5f);
    assert_true(fabsf(pxf(&s.img, 2, 3, 1) - (i + 1 - 12.5f) / sd) < 1e-5f);
    assert_int_equal(px(&s.label, 2, 3, 0), i % 3);
    segc_sample_free(&s);
    load_fails(ds, 2, "case_002.nii: label value 7 at voxel (1,1,0)");
    segc_dataset_close(ds);
    /* with the cache the bad label fails the open, naming the file */
    open_fails("msd", tmp, NULL, NULL, "labelsTr/case_002.nii: label value 7");
    rm_rf(tmp);
}

static void test_corrupt_files(void **state) {
    (void)state;
    have_data("camvid");
    have_data("brats-mini");
    char tmp[] = "/tmp/segc_bad_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    make_broken_camvid(tmp);
    segc_dataset *ds = open_ok("camvid", tmp, "val", NULL);
    assert_int_equal(segc_dataset_len(ds), 8);
    segc_sample s;
    load_ok(ds, 0, &s);
    segc_sample_free(&s);
    load_fails(ds, 1, "a_truncated.png: png: corrupt or truncated");
    load_fails(ds, 2, "b_flipped.png: png:");
    load_fails(ds, 3, "c_nolabel.png: label file missing");
    load_fails(ds, 4, "does not match image");
    load_fails(ds, 5, "e_badvalue.png: label value 12 at x=3 y=0 is not a camvid class id");
    load_fails(ds, 6, "f_empty.png: empty file");
    load_fails(ds, 7, "g_text.png: unknown image format");
    segc_dataset_close(ds);
    /* JPEG cut short */
    char path[1024], cmd[4096];
    snprintf(path, sizeof path, "%s/cut.jpg", tmp);
    snprintf(cmd, sizeof cmd, "head -c 20000 %s/ade20k-samples/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg > %s",
             g_data, path);
    assert_int_equal(system(cmd), 0);
    segc_image im;
    char err[512];
    assert_false(segc_image_read(path, SEGC_READ_RGB, &im, err, sizeof err));
    assert_non_null(strstr(err, "cut.jpg: jpeg: Premature end of JPEG file"));
    /* a case whose label is truncated: the dataset names the file */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/br/train/case1 && cp %s/brats-mini/train/brats_2013_pat0005_1/*.nii.gz %s/br/train/case1/ && "
             "chmod u+w %s/br/train/case1/* && head -c 30000 %s/brats-mini/train/brats_2013_pat0005_1/OTMultiClass.nii.gz > %s/br/train/case1/OTMultiClass.nii.gz",
             tmp, g_data, tmp, tmp, g_data, tmp);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/br", tmp);
    assert_null(segc_dataset_open("brats", path, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "case1/OTMultiClass.nii.gz: nifti: voxel data truncated"));
    rm_rf(tmp);
}

static void test_errors_and_threads(void **state) {
    (void)state;
    char err[512];
    assert_null(segc_dataset_open("kitti", "/tmp", NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "unknown dataset 'kitti'"));
    assert_null(segc_dataset_open("camvid", "/nonexistent/root", NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/root"));
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    o.image_channels = 2;
    assert_null(segc_dataset_open("camvid", "/tmp", NULL, &o, err, sizeof err));
    assert_non_null(strstr(err, "image_channels"));
    have_data("camvid");
    segc_dataset *ds = open_ok("camvid", "camvid", "val", NULL);
    segc_sample s;
    assert_false(segc_dataset_load(ds, 101, &s, err, sizeof err));
    assert_non_null(strstr(err, "index 101 out of range"));
    assert_false(segc_dataset_load(ds, -1, &s, err, sizeof err));
    /* concurrent loads give exactly the serial results */
    enum { N = 8 };
    segc_sample ref[N], par[N];
    for (int i = 0; i < N; i++) load_ok(ds, i * 12, &ref[i]);
    bool ok[N];
#pragma omp parallel for num_threads(2) schedule(dynamic, 1)
    for (int i = 0; i < N; i++) ok[i] = segc_dataset_load(ds, i * 12, &par[i], NULL, 0);
    for (int i = 0; i < N; i++) {
        assert_true(ok[i]);
        assert_memory_equal(ref[i].img.data, par[i].img.data, 360 * 480 * 3);
        assert_memory_equal(ref[i].label.data, par[i].label.data, 360 * 480);
        segc_sample_free(&ref[i]);
        segc_sample_free(&par[i]);
    }
    segc_dataset_close(ds);
}

static void test_cli_check(void **state) {
    (void)state;
    have_data("camvid");
    if (access(g_cli, X_OK) != 0) fail_msg("%s not built (make test builds it)", g_cli);
    char cmd[4096], out[1 << 16];
    snprintf(cmd, sizeof cmd, "%s data check camvid --root %s/camvid --split val --threads 2", g_cli, g_data);
    int rc = run_capture(cmd, out, sizeof out);
    if (rc != 0) fail_msg("check on real camvid exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "OK: 0 of 101 samples have problems"));
    assert_non_null(strstr(out, "{\"verb\":\"check\",\"dataset\":\"camvid\",\"split\":\"val\",\"samples\":101"));
    snprintf(cmd, sizeof cmd, "%s data stats camvid --root %s/camvid --split val", g_cli, g_data);
    assert_int_equal(run_capture(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"mean\":["));
    char tmp[] = "/tmp/segc_cli_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    make_broken_camvid(tmp);
    snprintf(cmd, sizeof cmd, "%s data check camvid --root %s --split val", g_cli, tmp);
    rc = run_capture(cmd, out, sizeof out);
    if (rc != 1) fail_msg("check on a broken copy exited %d:\n%s", rc, out);
    assert_non_null(strstr(out, "PROBLEMS: 7 of 8 samples have problems"));
    assert_non_null(strstr(out, "a_truncated.png: png: corrupt or truncated"));
    assert_non_null(strstr(out, "e_badvalue.png: 1 label pixels outside the class set (first raw value 12)"));
    assert_non_null(strstr(out, "\"ok\":false"));
    snprintf(cmd, sizeof cmd, "%s data check nosuch --root %s", g_cli, tmp);
    assert_int_equal(run_capture(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "unknown dataset"));
    snprintf(cmd, sizeof cmd, "%s data check camvid", g_cli);
    assert_int_equal(run_capture(cmd, out, sizeof out), 2);
    rm_rf(tmp);
}

int main(int argc, char **argv) {
    const char *env = getenv("SEGC_DATA");
    snprintf(g_data, sizeof g_data, "%s", env && *env ? env : "../shared/data");
    char *abs = realpath(g_data, NULL);   /* shell snippets below change directory */
    if (abs) snprintf(g_data, sizeof g_data, "%s", abs);
    free(abs);
    /* the CLI sits next to the tests directory: BUILD/tests/test_data -> BUILD/segc */
    snprintf(g_cli, sizeof g_cli, "%s", argv[0]);
    char *slash = strrchr(g_cli, '/');
    if (slash) *slash = 0;
    else snprintf(g_cli, sizeof g_cli, ".");
    strncat(g_cli, "/../segc", sizeof g_cli - strlen(g_cli) - 1);
    (void)argc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_camvid),        cmocka_unit_test(test_ade20k),
        cmocka_unit_test(test_cityscapes),    cmocka_unit_test(test_voc_synthetic),
        cmocka_unit_test(test_folder),        cmocka_unit_test(test_coco),
        cmocka_unit_test(test_brats),         cmocka_unit_test(test_msd_synthetic),
        cmocka_unit_test(test_corrupt_files), cmocka_unit_test(test_errors_and_threads),
        cmocka_unit_test(test_cli_check),
    };
    return cmocka_run_group_tests_name("data", tests, NULL, NULL);
}
