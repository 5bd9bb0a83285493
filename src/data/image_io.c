/* Image decoding/encoding: PNG through libspng, JPEG through libjpeg-turbo
 * (setjmp error manager: corrupt data returns an error, never exits or
 * prints). Thread-safe: all state is per call. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jerror.h>
#include <jpeglib.h>
#include <spng.h>

#include "ds_internal.h"

bool segc_image_alloc(segc_image *im, int h, int w, int c, segc_dtype dt) {
    memset(im, 0, sizeof *im);
    if (h <= 0 || w <= 0 || c <= 0 || (int64_t)h * w > SEGC_IMAGE_MAX_PIXELS || c > 64) return false;
    size_t bytes = (size_t)h * w * c * segc_dtype_size(dt);
    if (!bytes) return false;
    im->data = malloc(bytes);
    if (!im->data) return false;
    im->h = h, im->w = w, im->c = c, im->dtype = dt;
    return true;
}

void segc_image_free(segc_image *im) {
    if (!im) return;
    free(im->data);
    memset(im, 0, sizeof *im);
}

bool segc_read_file(const char *path, void **buf, size_t *len, char *err, size_t errlen) {
    *buf = NULL, *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return segc_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return segc_errorf(err, errlen, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return segc_errorf(err, errlen, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(b, 1, n, f);
    bool io_err = ferror(f);
    fclose(f);
    if (io_err || got != n) {
        free(b);
        return segc_errorf(err, errlen, "%s: read error (%zu of %zu bytes)", path, got, n);
    }
    b[n] = 0;
    *buf = b, *len = n;
    return true;
}

segc_image_format segc_image_sniff(const void *buf, size_t len) {
    const uint8_t *p = buf;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    if (len >= 8 && !memcmp(p, png_sig, 8)) return SEGC_FMT_PNG;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return SEGC_FMT_JPEG;
    return SEGC_FMT_UNKNOWN;
}

/* ------------------------------------------------------------------ PNG */

static spng_ctx *png_open(const void *buf, size_t len, struct spng_ihdr *ihdr, char *err, size_t errlen) {
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        segc_errorf(err, errlen, "png: out of memory");
        return NULL;
    }
    /* bound what a hostile header can make us allocate */
    spng_set_image_limits(ctx, 1u << 20, 1u << 20);
    spng_set_chunk_limits(ctx, 64u << 20, 64u << 20);
    int rc = spng_set_png_buffer(ctx, buf, len);
    if (!rc) rc = spng_get_ihdr(ctx, ihdr);
    if (rc) {
        segc_errorf(err, errlen, "png: bad header: %s", spng_strerror(rc));
        spng_ctx_free(ctx);
        return NULL;
    }
    if ((int64_t)ihdr->width * ihdr->height > SEGC_IMAGE_MAX_PIXELS) {
        segc_errorf(err, errlen, "png: image %ux%u exceeds the %lld pixel limit", ihdr->width, ihdr->height,
                    (long long)SEGC_IMAGE_MAX_PIXELS);
        spng_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

static int png_stored_channels(int color_type) {
    switch (color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE: return 1;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: return 2;
    case SPNG_COLOR_TYPE_TRUECOLOR: return 3;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: return 4;
    case SPNG_COLOR_TYPE_INDEXED: return 1;
    }
    return 0;
}

static bool png_decode_fmt(spng_ctx *ctx, int fmt, int flags, void **raw, size_t *rawlen, char *err, size_t errlen) {
    size_t n = 0;
    int rc = spng_decoded_image_size(ctx, fmt, &n);
    if (rc) return segc_errorf(err, errlen, "png: %s", spng_strerror(rc));
    void *b = malloc(n ? n : 1);
    if (!b) return segc_errorf(err, errlen, "png: out of memory (%zu bytes)", n);
    rc = spng_decode_image(ctx, b, n, fmt, flags);
    if (rc) {
        free(b);
        return segc_errorf(err, errlen, "png: corrupt or truncated data: %s", spng_strerror(rc));
    }
    *raw = b, *rawlen = n;
    return true;
}

/* sub-byte samples (1/2/4 bit, packed MSB first, rows byte aligned) to one byte each */
static void png_unpack_bits(const uint8_t *src, int h, int w, int depth, uint8_t *dst) {
    size_t stride = ((size_t)w * depth + 7) / 8;
    int mask = (1 << depth) - 1;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = src + stride * y;
        for (int x = 0; x < w; x++) {
            size_t bit = (size_t)x * depth;
            int shift = 8 - depth - (int)(bit & 7);
            dst[(size_t)y * w + x] = (uint8_t)((row[bit >> 3] >> shift) & mask);
        }
    }
}

static void rgb_to_luma(const uint8_t *rgb, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        dst[i] = (uint8_t)((299u * rgb[3 * i] + 587u * rgb[3 * i + 1] + 114u * rgb[3 * i + 2] + 500u) / 1000u);
}

bool segc_png_decode(const void *buf, size_t len, segc_read_mode mode, segc_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    struct spng_ihdr ih;
    spng_ctx *ctx = png_open(buf, len, &ih, err, errlen);
    if (!ctx) return false;
    int h = (int)ih.height, w = (int)ih.width, ct = ih.color_type, depth = ih.bit_depth;
    size_t npx = (size_t)h * w;
    void *raw = NULL;
    size_t rawlen = 0;
    bool ok = false;
    int stored = png_stored_channels(ct);

    if (mode == SEGC_READ_RGB || mode == SEGC_READ_GRAY ||
        (mode == SEGC_READ_LABEL && (ct == SPNG_COLOR_TYPE_TRUECOLOR || ct == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA))) {
        if (!png_decode_fmt(ctx, SPNG_FMT_RGB8, 0, &raw, &rawlen, err, errlen)) goto done;
        if (mode == SEGC_READ_GRAY) {
            if (!segc_image_alloc(out, h, w, 1, SEGC_U8)) goto oom;
            rgb_to_luma(raw, npx, out->data);
        } else {
            out->h = h, out->w = w, out->c = 3, out->dtype = SEGC_U8, out->data = raw;
            raw = NULL;
        }
        ok = true;
        goto done;
    }
    if (depth == 16) {
        /* 16-bit: native layout, host-endian; exposed as I32 */
        if (!png_decode_fmt(ctx, SPNG_FMT_PNG, 0, &raw, &rawlen, err, errlen)) goto done;
        int c = mode == SEGC_READ_LABEL ? 1 : stored;
        if (!segc_image_alloc(out, h, w, c, SEGC_I32)) goto oom;
        const uint16_t *s = raw;
        int32_t *d = out->data;
        for (size_t i = 0; i < npx; i++)
            for (int k = 0; k < c; k++) d[i * c + k] = s[i * stored + k];
        ok = true;
        goto done;
    }
    if (ct == SPNG_COLOR_TYPE_INDEXED && mode == SEGC_READ_LABEL) {
        if (!png_decode_fmt(ctx, SPNG_FMT_PNG, 0, &raw, &rawlen, err, errlen)) goto done;
        if (!segc_image_alloc(out, h, w, 1, SEGC_U8)) goto oom;
        if (depth == 8) memcpy(out->data, raw, npx);
        else png_unpack_bits(raw, h, w, depth, out->data);
        ok = true;
        goto done;
    }
    if (ct == SPNG_COLOR_TYPE_INDEXED) {   /* colour expansion for images */
        struct spng_trns trns;
        bool has_trns = spng_get_trns(ctx, &trns) == 0;
        int fmt = has_trns ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
        if (!png_decode_fmt(ctx, fmt, has_trns ? SPNG_DECODE_TRNS : 0, &raw, &rawlen, err, errlen)) goto done;
        out->h = h, out->w = w, out->c = has_trns ? 4 : 3, out->dtype = SEGC_U8, out->data = raw;
        raw = NULL;
        ok = true;
        goto done;
    }
    if (ct == SPNG_COLOR_TYPE_GRAYSCALE && mode == SEGC_READ_LABEL && depth < 8) {
        /* labels keep their raw sample values (a 1-bit mask reads 0/1) */
        if (!png_decode_fmt(ctx, SPNG_FMT_PNG, 0, &raw, &rawlen, err, errlen)) goto done;
        if (!segc_image_alloc(out, h, w, 1, SEGC_U8)) goto oom;
        png_unpack_bits(raw, h, w, depth, out->data);
        ok = true;
        goto done;
    }
    {
        /* 8-bit gray, gray+alpha, RGB, RGBA as stored; sub-byte gray scaled to 8 bits */
        int c = stored, fmt = depth < 8 ? SPNG_FMT_G8 : SPNG_FMT_PNG;
        if (!png_decode_fmt(ctx, fmt, 0, &raw, &rawlen, err, errlen)) goto done;
        if (mode == SEGC_READ_LABEL && c == 2) {   /* gray+alpha label: the gray channel */
            if (!segc_image_alloc(out, h, w, 1, SEGC_U8)) goto oom;
            const uint8_t *s = raw;
            uint8_t *d = out->data;
            for (size_t i = 0; i < npx; i++) d[i] = s[2 * i];
        } else {
            out->h = h, out->w = w, out->c = c, out->dtype = SEGC_U8, out->data = raw;
            raw = NULL;
        }
        ok = true;
        goto done;
    }
oom:
    segc_errorf(err, errlen, "png: out of memory for %dx%d image", h, w);
done:
    free(raw);
    spng_ctx_free(ctx);
    if (!ok) segc_image_free(out);
    return ok;
}

/* ------------------------------------------------------------------ JPEG */

typedef struct jpeg_guard {
    struct jpeg_error_mgr mgr;
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_guard;

static void jpeg_fail(j_common_ptr cinfo) {
    jpeg_guard *g = (jpeg_guard *)cinfo->err;
    g->mgr.format_message(cinfo, g->msg);
    longjmp(g->jump, 1);
}

/* Warnings that mean the pixels are wrong (truncated or corrupt entropy data)
 * are errors; the rest (odd markers, unknown JFIF revision) are ignored. */
static void jpeg_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    int code = cinfo->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE || code == JWRN_MUST_RESYNC)
        jpeg_fail(cinfo);
}

static void jpeg_quiet(j_common_ptr cinfo) { (void)cinfo; }

/* progressive files with absurd scan counts make decoding quadratic */
static void jpeg_progress(j_common_ptr cinfo) {
    if (cinfo->is_decompressor) {
        j_decompress_ptr d = (j_decompress_ptr)cinfo;
        if (d->input_scan_number > 500) {
            jpeg_guard *g = (jpeg_guard *)cinfo->err;
            snprintf(g->msg, sizeof g->msg, "too many progressive scans (%d)", d->input_scan_number);
            longjmp(g->jump, 1);
        }
    }
}

static void jpeg_setup(struct jpeg_decompress_struct *ci, jpeg_guard *g) {
    ci->err = jpeg_std_error(&g->mgr);
    g->mgr.error_exit = jpeg_fail;
    g->mgr.emit_message = jpeg_message;
    g->mgr.output_message = jpeg_quiet;
    g->msg[0] = 0;
}

static bool jpeg_header(const void *buf, size_t len, int *h, int *w, int *c, char *err, size_t errlen) {
    struct jpeg_decompress_struct ci;
    jpeg_guard g;
    if (len == 0) return segc_errorf(err, errlen, "jpeg: empty input");
    jpeg_setup(&ci, &g);
    if (setjmp(g.jump)) {
        jpeg_destroy_decompress(&ci);
        return segc_errorf(err, errlen, "jpeg: %s", g.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, (const unsigned char *)buf, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    *h = (int)ci.image_height, *w = (int)ci.image_width, *c = ci.num_components;
    jpeg_destroy_decompress(&ci);
    return true;
}

bool segc_jpeg_decode(const void *buf, size_t len, segc_read_mode mode, segc_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (len == 0) return segc_errorf(err, errlen, "jpeg: empty input");
    struct jpeg_decompress_struct ci;
    jpeg_guard g;
    /* volatile: modified between setjmp and a possible longjmp */
    uint8_t *volatile cmyk = NULL;
    jpeg_setup(&ci, &g);
    if (setjmp(g.jump)) {
        jpeg_destroy_decompress(&ci);
        free(cmyk);
        segc_image_free(out);
        return segc_errorf(err, errlen, "jpeg: %s", g.msg);
    }
    jpeg_create_decompress(&ci);
    g.progress.progress_monitor = jpeg_progress;
    ci.progress = &g.progress;
    jpeg_mem_src(&ci, (const unsigned char *)buf, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    if ((int64_t)ci.image_width * ci.image_height > SEGC_IMAGE_MAX_PIXELS) {
        snprintf(g.msg, sizeof g.msg, "image %ux%u exceeds the pixel limit", ci.image_width, ci.image_height);
        longjmp(g.jump, 1);
    }
    bool is_cmyk = ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK;
    bool is_gray = ci.jpeg_color_space == JCS_GRAYSCALE;
    int want_c = mode == SEGC_READ_GRAY ? 1 : mode == SEGC_READ_RGB ? 3 : (is_gray ? 1 : 3);
    if (is_cmyk) ci.out_color_space = JCS_CMYK;   /* libjpeg cannot convert CMYK to RGB itself */
    else ci.out_color_space = want_c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&ci);
    int h = (int)ci.output_height, w = (int)ci.output_width;
    if (!segc_image_alloc(out, h, w, want_c, SEGC_U8)) {
        snprintf(g.msg, sizeof g.msg, "out of memory for %dx%d image", h, w);
        longjmp(g.jump, 1);
    }
    if (is_cmyk) {
        cmyk = malloc((size_t)w * 4);
        if (!cmyk) {
            snprintf(g.msg, sizeof g.msg, "out of memory");
            longjmp(g.jump, 1);
        }
    }
    uint8_t *dst = out->data;
    while (ci.output_scanline < ci.output_height) {
        size_t y = ci.output_scanline;
        if (!is_cmyk) {
            JSAMPROW row = dst + y * w * want_c;
            jpeg_read_scanlines(&ci, &row, 1);
            continue;
        }
        JSAMPROW row = cmyk;
        jpeg_read_scanlines(&ci, &row, 1);
        /* Adobe files store CMYK inverted (as most CMYK JPEGs in the wild do) */
        bool inv = ci.saw_Adobe_marker;
        uint8_t rgb[3];
        for (int x = 0; x < w; x++) {
            unsigned k = inv ? cmyk[4 * x + 3] : 255u - cmyk[4 * x + 3];
            for (int ch = 0; ch < 3; ch++) {
                unsigned v = inv ? cmyk[4 * x + ch] : 255u - cmyk[4 * x + ch];
                rgb[ch] = (uint8_t)((v * k + 127) / 255);
            }
            uint8_t *o = dst + (y * w + x) * want_c;
            if (want_c == 1) rgb_to_luma(rgb, 1, o);
            else memcpy(o, rgb, 3);
        }
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    free(cmyk);
    return true;
}

/* ------------------------------------------------------------------ generic */

bool segc_image_probe(const void *buf, size_t len, int *h, int *w, int *c, char *err, size_t errlen) {
    switch (segc_image_sniff(buf, len)) {
    case SEGC_FMT_PNG: {
        struct spng_ihdr ih;
        spng_ctx *ctx = png_open(buf, len, &ih, err, errlen);
        if (!ctx) return false;
        *h = (int)ih.height, *w = (int)ih.width, *c = png_stored_channels(ih.color_type);
        spng_ctx_free(ctx);
        return true;
    }
    case SEGC_FMT_JPEG: return jpeg_header(buf, len, h, w, c, err, errlen);
    default: return segc_errorf(err, errlen, "unknown image format (neither PNG nor JPEG signature)");
    }
}

bool segc_image_decode(const void *buf, size_t len, segc_read_mode mode, segc_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    switch (segc_image_sniff(buf, len)) {
    case SEGC_FMT_PNG: return segc_png_decode(buf, len, mode, out, err, errlen);
    case SEGC_FMT_JPEG: return segc_jpeg_decode(buf, len, mode, out, err, errlen);
    default:
        if (len == 0) return segc_errorf(err, errlen, "empty file");
        return segc_errorf(err, errlen, "unknown image format (neither PNG nor JPEG signature)");
    }
}

bool segc_image_read(const char *path, segc_read_mode mode, segc_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    void *buf;
    size_t len;
    if (!segc_read_file(path, &buf, &len, err, errlen)) return false;
    char msg[256] = "";
    bool ok = segc_image_decode(buf, len, mode, out, msg, sizeof msg);
    free(buf);
    if (!ok) return segc_errorf(err, errlen, "%s: %s", path, msg);
    return true;
}

/* ------------------------------------------------------------------ PNG encoding */

bool segc_png_encode(const segc_image *im, const uint8_t *palette, int n_colors, void **png, size_t *len, char *err,
                     size_t errlen) {
    *png = NULL, *len = 0;
    if (!im || !im->data || im->h <= 0 || im->w <= 0) return segc_errorf(err, errlen, "png encode: empty image");
    bool u8 = im->dtype == SEGC_U8, i32 = im->dtype == SEGC_I32;
    if (!(u8 && im->c >= 1 && im->c <= 4) && !(i32 && im->c == 1))
        return segc_errorf(err, errlen, "png encode: expected U8 with 1-4 channels or I32 with 1, found %s with %d",
                           segc_dtype_name(im->dtype), im->c);
    if (palette && (n_colors < 1 || n_colors > 256 || !u8 || im->c != 1))
        return segc_errorf(err, errlen, "png encode: a palette needs U8 C=1 and 1..256 colours, found %s C=%d, %d colours",
                           segc_dtype_name(im->dtype), im->c, n_colors);
    size_t npx = (size_t)im->h * im->w;
    struct spng_ihdr ih = {.width = (uint32_t)im->w, .height = (uint32_t)im->h, .bit_depth = 8};
    static const int ct_of_c[5] = {0, SPNG_COLOR_TYPE_GRAYSCALE, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA,
                                   SPNG_COLOR_TYPE_TRUECOLOR, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA};
    ih.color_type = palette ? SPNG_COLOR_TYPE_INDEXED : ct_of_c[im->c];
    const void *pix = im->data;
    size_t pixlen = npx * im->c;
    uint8_t *tmp = NULL;
    if (palette) {   /* an index beyond the palette would make an invalid PNG */
        const uint8_t *s = im->data;
        for (size_t i = 0; i < npx; i++)
            if (s[i] >= n_colors)
                return segc_errorf(err, errlen, "png encode: value %d at pixel %zu is outside the %d-colour palette", s[i], i,
                                   n_colors);
    }
    if (i32) {   /* 16-bit gray, big-endian as the PNG stores it */
        ih.bit_depth = 16;
        tmp = malloc(npx * 2);
        if (!tmp) return segc_errorf(err, errlen, "png encode: out of memory");
        const int32_t *s = im->data;
        for (size_t i = 0; i < npx; i++) {
            if (s[i] < 0 || s[i] > 65535) {
                free(tmp);
                return segc_errorf(err, errlen, "png encode: I32 value %d at pixel %zu outside 0..65535", s[i], i);
            }
            tmp[2 * i] = (uint8_t)(s[i] >> 8), tmp[2 * i + 1] = (uint8_t)s[i];
        }
        pix = tmp, pixlen = npx * 2;
    }
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx) {
        free(tmp);
        return segc_errorf(err, errlen, "png encode: out of memory");
    }
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    int rc = spng_set_ihdr(ctx, &ih);
    if (!rc && palette) {
        struct spng_plte pl = {.n_entries = (uint32_t)n_colors};
        for (int k = 0; k < n_colors; k++)
            pl.entries[k].red = palette[3 * k], pl.entries[k].green = palette[3 * k + 1],
            pl.entries[k].blue = palette[3 * k + 2];
        rc = spng_set_plte(ctx, &pl);
    }
    if (!rc) rc = spng_encode_image(ctx, pix, pixlen, SPNG_FMT_RAW, SPNG_ENCODE_FINALIZE);
    if (!rc) *png = spng_get_png_buffer(ctx, len, &rc);
    spng_ctx_free(ctx);
    free(tmp);
    if (rc || !*png) {
        free(*png);
        *png = NULL;
        return segc_errorf(err, errlen, "png encode: %s", spng_strerror(rc));
    }
    return true;
}

bool segc_png_write(const char *path, const segc_image *im, const uint8_t *palette, int n_colors, char *err,
                    size_t errlen) {
    void *png;
    size_t len;
    char msg[256] = "";
    if (!segc_png_encode(im, palette, n_colors, &png, &len, msg, sizeof msg))
        return segc_errorf(err, errlen, "%s: %s", path, msg);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(png);
        return segc_errorf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    }
    bool ok = fwrite(png, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    free(png);
    if (!ok) return segc_errorf(err, errlen, "%s: write error", path);
    return true;
}

bool segc_label_colorize(const segc_image *label, const uint8_t *palette, int n_colors, segc_image *out, char *err,
                         size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!label || !label->data || label->dtype != SEGC_U8 || label->c != 1)
        return segc_errorf(err, errlen, "label colorize: expected a U8 label map with 1 channel");
    if (!palette || n_colors < 0 || n_colors > 256)
        return segc_errorf(err, errlen, "label colorize: expected a palette of 0..256 colours, found %d", n_colors);
    if (!segc_image_alloc(out, label->h, label->w, 3, SEGC_U8))
        return segc_errorf(err, errlen, "label colorize: out of memory");
    uint8_t lut[256][3] = {{0}};
    memcpy(lut, palette, (size_t)n_colors * 3);
    const uint8_t *s = label->data;
    uint8_t *d = out->data;
    size_t n = (size_t)label->h * label->w;
    for (size_t i = 0; i < n; i++) memcpy(d + 3 * i, lut[s[i]], 3);
    return true;
}

bool segc_label_overlay(const segc_image *img, const segc_image *label, const uint8_t *palette, int n_colors,
                        float alpha, segc_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!img || !img->data || img->dtype != SEGC_U8 || (img->c != 1 && img->c != 3))
        return segc_errorf(err, errlen, "label overlay: expected a U8 image with 1 or 3 channels");
    if (!label || !label->data || label->dtype != SEGC_U8 || label->c != 1 || label->h != img->h ||
        label->w != img->w)
        return segc_errorf(err, errlen, "label overlay: label must be U8 C=1 of the image's size %dx%d", img->h, img->w);
    if (!palette || n_colors < 0 || n_colors > 256 || !(alpha >= 0.f && alpha <= 1.f))
        return segc_errorf(err, errlen, "label overlay: expected 0..256 colours and alpha in [0,1], found %d, %g",
                           n_colors, alpha);
    if (!segc_image_alloc(out, img->h, img->w, 3, SEGC_U8)) return segc_errorf(err, errlen, "label overlay: out of memory");
    const uint8_t *s = img->data, *l = label->data;
    uint8_t *d = out->data;
    size_t n = (size_t)img->h * img->w;
    int a = (int)(alpha * 256.f + 0.5f);   /* fixed point blend weight */
    for (size_t i = 0; i < n; i++) {
        for (int ch = 0; ch < 3; ch++) {
            int v = s[img->c == 3 ? 3 * i + ch : i];
            if (l[i] < n_colors) v = (v * (256 - a) + palette[3 * l[i] + ch] * a + 128) >> 8;
            d[3 * i + ch] = (uint8_t)v;
        }
    }
    return true;
}
