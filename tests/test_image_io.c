/* image_io: PNG/JPEG decoding against Pillow references (every colour type and
 * bit depth, every read mode), PNG encode round trips, corrupt/truncated
 * inputs, label colouring, and NIfTI-1 decoding of every datatype. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <nifti1.h>

#include "common/harness.h"
#include "segc/image_io.h"

/* test paths are short; a truncated snprintf would only fail a test */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* ---------------------------------------------------------------- fixture decodes */

static const char *mode_name(segc_read_mode m) {
    static const char *const names[] = {"native", "rgb", "gray", "label"};
    return names[m];
}

static void check_against(const char *cas, segc_read_mode mode, const segc_image *got, const segc_st_entry *want,
                          long tol) {
    assert_int_equal(want->ndim, 3);
    if (got->h != want->shape[0] || got->w != want->shape[1] || got->c != want->shape[2]) {
        fail_msg("%s/%s: got %dx%dx%d, want %lldx%lldx%lld", cas, mode_name(mode), got->h, got->w, got->c,
                 (long long)want->shape[0], (long long)want->shape[1], (long long)want->shape[2]);
    }
    size_t n = (size_t)got->h * got->w * got->c;
    bool want_i32 = want->dtype == SEGC_I32;
    assert_int_equal(got->dtype, want_i32 ? SEGC_I32 : SEGC_U8);
    long worst = 0;
    for (size_t i = 0; i < n; i++) {
        long g = want_i32 ? ((const int32_t *)got->data)[i] : ((const uint8_t *)got->data)[i];
        long w = ((const uint8_t *)want->data)[i];
        if (want_i32) {   /* fixture tensors need not be aligned */
            int32_t v;
            memcpy(&v, (const uint8_t *)want->data + 4 * i, 4);
            w = v;
        }
        long d = labs(g - w);
        if (d > worst) worst = d;
        if (d > tol) fail_msg("%s/%s: element %zu is %ld, want %ld (tol %ld)", cas, mode_name(mode), i, g, w, tol);
    }
    (void)worst;
}

static void test_decode_fixtures(void **state) {
    (void)state;
    segc_st_file *f = fx_open("data.safetensors");
    int cases = 0, checks = 0;
    for (int e = 0; e < segc_st_count(f); e++) {
        const segc_st_entry *fe = segc_st_at(f, e);
        const char *slash = strrchr(fe->name, '/');
        if (!slash || strcmp(slash, "/file")) continue;
        char cas[64];
        snprintf(cas, sizeof cas, "%.*s", (int)(slash - fe->name), fe->name);
        long tol = fx_param_int(f, cas, "tol", 0);
        int h, w, c;
        char err[256];
        assert_true(segc_image_probe(fe->data, fe->nbytes, &h, &w, &c, err, sizeof err));
        for (int m = SEGC_READ_NATIVE; m <= SEGC_READ_LABEL; m++) {
            char key[96];
            snprintf(key, sizeof key, "%s/%s", cas, mode_name(m));
            const segc_st_entry *want = segc_st_get(f, key);
            if (!want) continue;
            segc_image im;
            if (!segc_image_decode(fe->data, fe->nbytes, m, &im, err, sizeof err)) fail_msg("%s: %s", key, err);
            assert_int_equal(im.h, h);
            assert_int_equal(im.w, w);
            check_against(cas, m, &im, want, tol);
            segc_image_free(&im);
            checks++;
        }
        cases++;
    }
    assert_true(cases >= 16 && checks >= 50);
    segc_st_close(f);
}

/* ---------------------------------------------------------------- corrupt inputs */

static const segc_st_entry *fixture_file(segc_st_file *f, const char *cas) {
    char key[64];
    snprintf(key, sizeof key, "%s/file", cas);
    const segc_st_entry *e = segc_st_get(f, key);
    assert_non_null(e);
    return e;
}

/* every truncation must fail cleanly (a PNG may still decode if only IEND is cut) */
static void test_truncated_and_flipped(void **state) {
    (void)state;
    segc_st_file *f = fx_open("data.safetensors");
    static const char *const cases[] = {"png_rgb", "png_p4", "png_gray16", "jpg_rgb", "jpg_progressive", "jpg_gray"};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const segc_st_entry *e = fixture_file(f, cases[k]);
        const uint8_t *src = e->data;
        size_t n = e->nbytes;
        uint8_t *buf = malloc(n);
        bool is_png = cases[k][0] == 'p';
        for (size_t cut = 0; cut < n; cut += (n / 37) + 1) {
            char err[256] = "";
            segc_image im;
            memcpy(buf, src, cut);
            bool ok = segc_image_decode(buf, cut, SEGC_READ_NATIVE, &im, err, sizeof err);
            /* the PNG's last 16 bytes are the IDAT CRC and IEND: the pixels are complete without them */
            if (ok && !(is_png && cut >= n - 16)) fail_msg("%s cut at %zu/%zu decoded", cases[k], cut, n);
            if (!ok) {
                assert_true(strlen(err) > 0);
                assert_null(im.data);
            }
            segc_image_free(&im);
        }
        /* bit flips anywhere: a clean error or an image, never a crash */
        segc_rng r;
        segc_rng_init(&r, 11 + k);
        for (int t = 0; t < 200; t++) {
            memcpy(buf, src, n);
            size_t pos = segc_rng_u32(&r) % n;
            buf[pos] ^= (uint8_t)(1u << (segc_rng_u32(&r) % 8));
            char err[256] = "";
            segc_image im;
            bool ok = segc_image_decode(buf, n, SEGC_READ_LABEL, &im, err, sizeof err);
            if (ok) assert_true(im.h > 0 && im.w > 0 && im.data);
            else assert_true(strlen(err) > 0);
            segc_image_free(&im);
        }
        free(buf);
    }
    /* garbage and empty input */
    char err[256];
    segc_image im;
    uint8_t junk[64];
    for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 5);
    assert_false(segc_image_decode(junk, sizeof junk, SEGC_READ_RGB, &im, err, sizeof err));
    assert_non_null(strstr(err, "unknown image format"));
    assert_false(segc_image_decode(junk, 0, SEGC_READ_RGB, &im, err, sizeof err));
    assert_false(segc_png_decode(junk, sizeof junk, SEGC_READ_RGB, &im, err, sizeof err));
    assert_non_null(strstr(err, "png"));
    assert_false(segc_jpeg_decode(junk, sizeof junk, SEGC_READ_RGB, &im, err, sizeof err));
    assert_non_null(strstr(err, "jpeg"));
    assert_false(segc_image_read("/nonexistent/x.png", SEGC_READ_RGB, &im, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/x.png"));
    segc_st_close(f);
}

/* ---------------------------------------------------------------- encoding */

static void roundtrip(const segc_image *src, const uint8_t *pal, int ncol, segc_read_mode mode, const segc_image *want) {
    void *png;
    size_t len;
    char err[256];
    if (!segc_png_encode(src, pal, ncol, &png, &len, err, sizeof err)) fail_msg("encode: %s", err);
    segc_image got;
    if (!segc_png_decode(png, len, mode, &got, err, sizeof err)) fail_msg("decode: %s", err);
    free(png);
    assert_int_equal(got.h, want->h);
    assert_int_equal(got.w, want->w);
    assert_int_equal(got.c, want->c);
    assert_int_equal(got.dtype, want->dtype);
    assert_memory_equal(got.data, want->data, (size_t)got.h * got.w * got.c * segc_dtype_size(got.dtype));
    segc_image_free(&got);
}

static void test_png_encode_roundtrip(void **state) {
    (void)state;
    segc_rng r;
    segc_rng_init(&r, 3);
    static const int sizes[][2] = {{1, 1}, {5, 7}, {17, 3}};
    for (size_t s = 0; s < 3; s++) {
        int h = sizes[s][0], w = sizes[s][1];
        for (int c = 1; c <= 4; c++) {
            segc_image im;
            assert_true(segc_image_alloc(&im, h, w, c, SEGC_U8));
            for (int i = 0; i < h * w * c; i++) ((uint8_t *)im.data)[i] = (uint8_t)segc_rng_u32(&r);
            roundtrip(&im, NULL, 0, SEGC_READ_NATIVE, &im);
            segc_image_free(&im);
        }
        /* label map with a palette: indices back in label mode, colours in rgb mode */
        uint8_t pal[19 * 3];
        for (int i = 0; i < 19 * 3; i++) pal[i] = (uint8_t)segc_rng_u32(&r);
        segc_image lab, col;
        assert_true(segc_image_alloc(&lab, h, w, 1, SEGC_U8));
        for (int i = 0; i < h * w; i++) ((uint8_t *)lab.data)[i] = (uint8_t)(segc_rng_u32(&r) % 19);
        roundtrip(&lab, pal, 19, SEGC_READ_LABEL, &lab);
        char err[256];
        assert_true(segc_label_colorize(&lab, pal, 19, &col, err, sizeof err));
        roundtrip(&lab, pal, 19, SEGC_READ_RGB, &col);
        segc_image_free(&col);
        segc_image_free(&lab);
        /* 16-bit gray from I32 */
        segc_image i32;
        assert_true(segc_image_alloc(&i32, h, w, 1, SEGC_I32));
        for (int i = 0; i < h * w; i++) ((int32_t *)i32.data)[i] = (int32_t)(segc_rng_u32(&r) % 65536);
        roundtrip(&i32, NULL, 0, SEGC_READ_LABEL, &i32);
        segc_image_free(&i32);
    }
    /* bad requests */
    char err[256];
    void *png;
    size_t len;
    segc_image im, f32;
    assert_true(segc_image_alloc(&im, 2, 2, 1, SEGC_U8));
    memset(im.data, 7, 4);
    uint8_t pal[6] = {0};
    assert_false(segc_png_encode(&im, pal, 2, &png, &len, err, sizeof err));   /* 7 outside a 2-colour palette */
    assert_non_null(strstr(err, "palette"));
    assert_true(segc_image_alloc(&f32, 2, 2, 1, SEGC_F32));
    assert_false(segc_png_encode(&f32, NULL, 0, &png, &len, err, sizeof err));
    assert_non_null(strstr(err, "png encode"));
    assert_false(segc_png_write("/nonexistent/dir/x.png", &im, NULL, 0, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/dir/x.png"));
    /* file round trip */
    char path[] = "/tmp/segc_imgio_XXXXXX.png";
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    close(fd);
    assert_true(segc_png_write(path, &im, NULL, 0, err, sizeof err));
    segc_image back;
    assert_true(segc_image_read(path, SEGC_READ_LABEL, &back, err, sizeof err));
    assert_memory_equal(back.data, im.data, 4);
    segc_image_free(&back);
    unlink(path);
    segc_image_free(&im);
    segc_image_free(&f32);
}

static void test_overlay(void **state) {
    (void)state;
    segc_image img, lab, out;
    char err[256];
    assert_true(segc_image_alloc(&img, 1, 3, 3, SEGC_U8));
    assert_true(segc_image_alloc(&lab, 1, 3, 1, SEGC_U8));
    uint8_t px[9] = {100, 100, 100, 0, 0, 0, 255, 255, 255}, lb[3] = {0, 1, 255};
    memcpy(img.data, px, 9), memcpy(lab.data, lb, 3);
    const uint8_t pal[6] = {200, 0, 0, 0, 0, 200};
    assert_true(segc_label_overlay(&img, &lab, pal, 2, 0.5f, &out, err, sizeof err));
    const uint8_t *o = out.data;
    assert_int_equal(o[0], 150), assert_int_equal(o[1], 50), assert_int_equal(o[2], 50);
    assert_int_equal(o[3], 0), assert_int_equal(o[5], 100);
    assert_int_equal(o[6], 255), assert_int_equal(o[8], 255);   /* ignore: image unchanged */
    segc_image_free(&out);
    segc_image bad;
    assert_true(segc_image_alloc(&bad, 2, 3, 1, SEGC_U8));
    assert_false(segc_label_overlay(&img, &bad, pal, 2, 0.5f, &out, err, sizeof err));
    assert_non_null(strstr(err, "label overlay"));
    assert_false(segc_label_colorize(&img, pal, 2, &out, err, sizeof err));
    assert_non_null(strstr(err, "label colorize"));
    segc_image_free(&bad);
    segc_image_free(&img);
    segc_image_free(&lab);
}

/* ---------------------------------------------------------------- NIfTI */

/* a single-file NIfTI-1 in memory: header + 4 pad bytes + data */
static uint8_t *make_nii(int nx, int ny, int nz, int nt, int dt, int bitpix, float slope, float inter,
                         const void *data, size_t data_bytes, bool swap, size_t *len) {
    *len = 352 + data_bytes;
    uint8_t *b = calloc(1, *len);
    nifti_1_header h;
    memset(&h, 0, sizeof h);
    h.sizeof_hdr = 348;
    h.dim[0] = (short)(nt > 1 ? 4 : 3), h.dim[1] = (short)nx, h.dim[2] = (short)ny, h.dim[3] = (short)nz;
    h.dim[4] = (short)nt;
    for (int i = 5; i < 8; i++) h.dim[i] = 1;
    h.datatype = (short)dt, h.bitpix = (short)bitpix;
    h.vox_offset = 352, h.scl_slope = slope, h.scl_inter = inter;
    memcpy(h.magic, "n+1", 4);
    memcpy(b, &h, sizeof h);
    memcpy(b + 352, data, data_bytes);
    if (swap) {   /* byte-swap the fields we set and every voxel */
        uint8_t *p = b;
        size_t esz = (size_t)bitpix / 8;
        for (size_t off = 0; off < data_bytes; off += esz)
            for (size_t k = 0; k < esz / 2; k++) {
                uint8_t t = p[352 + off + k];
                p[352 + off + k] = p[352 + off + esz - 1 - k], p[352 + off + esz - 1 - k] = t;
            }
        nifti_1_header s = h;
        s.sizeof_hdr = (int)__builtin_bswap32(348);
        for (int i = 0; i < 8; i++) s.dim[i] = (short)__builtin_bswap16((uint16_t)h.dim[i]);
        s.datatype = (short)__builtin_bswap16((uint16_t)h.datatype);
        s.bitpix = (short)__builtin_bswap16((uint16_t)h.bitpix);
        uint32_t u;
        memcpy(&u, &h.vox_offset, 4), u = __builtin_bswap32(u), memcpy(&s.vox_offset, &u, 4);
        memcpy(&u, &h.scl_slope, 4), u = __builtin_bswap32(u), memcpy(&s.scl_slope, &u, 4);
        memcpy(&u, &h.scl_inter, 4), u = __builtin_bswap32(u), memcpy(&s.scl_inter, &u, 4);
        memcpy(b, &s, sizeof s);
    }
    return b;
}

static void test_nifti_datatypes(void **state) {
    (void)state;
    const int nx = 3, ny = 2, nz = 1;
    char err[256];
    uint8_t u8[6] = {0, 1, 2, 3, 250, 255};
    int16_t i16[6] = {-32768, -1, 0, 1, 1000, 32767};
    int32_t i32[6] = {INT32_MIN, -7, 0, 7, 123456, INT32_MAX};
    uint16_t u16[6] = {0, 1, 2, 300, 40000, 65535};
    double f64[6] = {-1.5, 0, 0.25, 1e10, -3e-5, 7};
    int64_t i64[6] = {-5, 0, 5, 1LL << 40, -(1LL << 40), 9};
    int8_t i8[6] = {-128, -1, 0, 1, 2, 127};
    struct { int dt, bits; const void *d; } cases[] = {
        {DT_UINT8, 8, u8}, {DT_INT16, 16, i16}, {DT_INT32, 32, i32}, {DT_UINT16, 16, u16},
        {DT_FLOAT64, 64, f64}, {DT_INT64, 64, i64}, {DT_INT8, 8, i8}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        for (int swap = 0; swap < 2; swap++)
            for (int scaled = 0; scaled < 2; scaled++) {
                float slope = scaled ? 0.5f : 0.f, inter = scaled ? 3.f : 99.f;   /* slope 0: no scaling */
                size_t len;
                uint8_t *nii = make_nii(nx, ny, nz, 1, cases[k].dt, cases[k].bits, slope, inter, cases[k].d,
                                        6 * (size_t)cases[k].bits / 8, swap, &len);
                segc_volume v;
                if (!segc_nifti_decode(nii, len, &v, err, sizeof err)) fail_msg("dt %d: %s", cases[k].dt, err);
                assert_int_equal(v.dim[0], nx);
                assert_int_equal(v.dim[1], ny);
                assert_int_equal(v.dim[2], nz);
                assert_int_equal(v.dim[3], 1);
                for (int i = 0; i < 6; i++) {
                    double raw;
                    switch (cases[k].dt) {
                    case DT_UINT8: raw = u8[i]; break;
                    case DT_INT16: raw = i16[i]; break;
                    case DT_INT32: raw = i32[i]; break;
                    case DT_UINT16: raw = u16[i]; break;
                    case DT_FLOAT64: raw = f64[i]; break;
                    case DT_INT64: raw = (double)i64[i]; break;
                    default: raw = i8[i]; break;
                    }
                    float want = (float)(scaled ? raw * 0.5 + 3.0 : raw);
                    if (v.data[i] != want) fail_msg("dt %d swap %d scaled %d voxel %d: %g want %g", cases[k].dt, swap, scaled, i, v.data[i], want);
                }
                segc_volume_free(&v);
                free(nii);
            }
}

static void expect_nifti_error(uint8_t *nii, size_t len, const char *what) {
    segc_volume v;
    char err[256] = "";
    assert_false(segc_nifti_decode(nii, len, &v, err, sizeof err));
    assert_null(v.data);
    if (!strstr(err, what)) fail_msg("expected '%s' in '%s'", what, err);
    assert_non_null(strstr(err, "nifti"));
}

static void test_nifti_bad_headers(void **state) {
    (void)state;
    float d[8] = {0};
    size_t len;
    uint8_t *good = make_nii(2, 2, 2, 1, DT_FLOAT32, 32, 0, 0, d, sizeof d, false, &len);
    uint8_t *b = malloc(len);
    nifti_1_header h;
#define MUTATE(stmt, what)                     \
    do {                                       \
        memcpy(b, good, len);                  \
        memcpy(&h, b, sizeof h);               \
        stmt;                                  \
        memcpy(b, &h, sizeof h);               \
        expect_nifti_error(b, len, what);      \
    } while (0)
    MUTATE(h.sizeof_hdr = 540, "sizeof_hdr");
    MUTATE(memcpy(h.magic, "xy1", 4), "magic");
    MUTATE(h.dim[0] = 0, "dim[0]");
    MUTATE(h.dim[0] = 9, "dim[0]");
    MUTATE(h.dim[2] = -4, "dim[2]");
    MUTATE(h.datatype = DT_COMPLEX64, "unsupported datatype");
    MUTATE(h.datatype = 12345, "unsupported datatype");
    MUTATE(h.bitpix = 8, "bitpix");
    MUTATE(h.vox_offset = 100, "vox_offset");
    MUTATE(h.vox_offset = -1, "vox_offset");
    MUTATE(h.dim[1] = 30000; h.dim[2] = 30000; h.dim[3] = 30000, "voxels");
#undef MUTATE
    expect_nifti_error(good, 100, "truncated");
    expect_nifti_error(good, len - 1, "truncated");
    segc_nifti_info info;
    char err[256];
    assert_true(segc_nifti_parse_header(good, len, &info, err, sizeof err));
    assert_int_equal(info.ndim, 3);
    assert_int_equal(info.datatype, DT_FLOAT32);
    /* a .nii file with a broken header: message names the file */
    char path[] = "/tmp/segc_nii_XXXXXX.nii";
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    memcpy(b, good, len);
    b[344] = 'Q';
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
    segc_volume v;
    assert_false(segc_nifti_read(path, &v, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "magic"));
    /* the same file intact reads through nifticlib */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, good, len), (ssize_t)len);
    close(fd);
    if (!segc_nifti_read(path, &v, err, sizeof err)) fail_msg("%s: %s", path, err);
    assert_int_equal(v.dim[0] * v.dim[1] * v.dim[2], 8);
    segc_volume_free(&v);
    /* data cut short */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, good, len - 8), (ssize_t)(len - 8));
    close(fd);
    assert_false(segc_nifti_read(path, &v, err, sizeof err));
    assert_non_null(strstr(err, path));
    unlink(path);
    assert_false(segc_nifti_read("/nonexistent.nii.gz", &v, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent.nii.gz"));
    free(b);
    free(good);
}


/* real BraTS files: the int32 brain mask needs scl_slope/scl_inter; cut and
 * bit-flipped gzip copies give clean errors (nifticlib alone would zero-fill) */
static void test_nifti_real_files(void **state) {
    (void)state;
    const char *env = getenv("SEGC_DATA");
    char g_data[1024], tmp[] = "/tmp/segc_niireal_XXXXXX", path[2048], cmd[8192], err[512];
    snprintf(g_data, sizeof g_data, "%s", env && *env ? env : "../shared/data");
    snprintf(path, sizeof path, "%s/brats-mini/train/brats_2013_pat0005_1/brainmask.nii.gz", g_data);
    if (access(path, R_OK) != 0) fail_msg("%s not found: this test needs the shared data (set SEGC_DATA)", path);
    assert_non_null(mkdtemp(tmp));
    /* NIfTI: gzip cut short, and a bit flipped inside the compressed stream */
    snprintf(path, sizeof path, "%s/cut.nii.gz", tmp);
    snprintf(cmd, sizeof cmd, "head -c 100000 %s/brats-mini/train/brats_2013_pat0005_1/brainmask.nii.gz > %s", g_data, path);
    assert_int_equal(system(cmd), 0);
    segc_volume v;
    assert_false(segc_nifti_read(path, &v, err, sizeof err));
    assert_non_null(strstr(err, "cut.nii.gz: nifti: voxel data truncated"));
    snprintf(path, sizeof path, "%s/flip.nii.gz", tmp);
    snprintf(cmd, sizeof cmd, "cp %s/brats-mini/train/brats_2013_pat0005_1/OTMultiClass.nii.gz %s && chmod u+w %s && "
             "printf '\\x5a' | dd of=%s bs=1 seek=30000 conv=notrunc status=none", g_data, path, path, path);
    assert_int_equal(system(cmd), 0);
    assert_false(segc_nifti_read(path, &v, err, sizeof err));
    assert_non_null(strstr(err, "flip.nii.gz: nifti:"));
    /* the real mask: int32 with scl_slope/inter applied gives 0 and ~1 */
    snprintf(path, sizeof path, "%s/brats-mini/train/brats_2013_pat0005_1/brainmask.nii.gz", g_data);
    if (!segc_nifti_read(path, &v, err, sizeof err)) fail_msg("%s", err);
    int64_t nvox = v.dim[0] * v.dim[1] * v.dim[2], brain = 0;
    for (int64_t i = 0; i < nvox; i++) {
        assert_true(v.data[i] == 0.f || fabsf(v.data[i] - 1.f) < 1e-6f);
        brain += v.data[i] > 0.5f;
    }
    assert_int_equal(brain, 1523743);
    segc_volume_free(&v);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_fixtures),
        cmocka_unit_test(test_truncated_and_flipped),
        cmocka_unit_test(test_png_encode_roundtrip),
        cmocka_unit_test(test_overlay),
        cmocka_unit_test(test_nifti_datatypes),
        cmocka_unit_test(test_nifti_bad_headers),
        cmocka_unit_test(test_nifti_real_files),
    };
    return cmocka_run_group_tests_name("image_io", tests, NULL, NULL);
}
