/* Geometric apply steps on uint8 HWC images, reproducing cv2's arithmetic:
 * INTER_LINEAR with 11-bit fixed-point weights (cv2's resize for CV_8U) and
 * INTER_NEAREST with floor(dst * src/dst). Both can compute a sub-window of
 * the resized image, so a resize followed by a crop only pays for the crop. */
#include <math.h>
#include <string.h>

#include "augment_internal.h"

#define COEF_BITS 11
#define COEF_SCALE (1 << COEF_BITS)

static inline int16_t coef_round(float v) {
    long r = lrintf(v * (float)COEF_SCALE);   /* cvRound: nearest, ties to even */
    if (r > 32767) r = 32767;
    if (r < -32768) r = -32768;
    return (int16_t)r;
}

/* One resize axis: source index, next index (clamped) and the two weights
 * for destination positions o0 .. o0+n-1. Follows cv::resize's setup:
 * fx = (float)((d + 0.5) * scale - 0.5), scale = 1 / (dst / src). */
typedef struct { int i0, i1; int16_t a0, a1; } axis_tap;

static void linear_taps(int src, int dst, int o0, int n, bool clamp_weights, axis_tap *taps) {
    double scale = 1.0 / ((double)dst / (double)src);
    for (int k = 0; k < n; k++) {
        int d = o0 + k;
        float f = (float)((d + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        f -= (float)s;
        int i0 = s, i1 = s + 1;
        if (clamp_weights) {
            /* horizontal: cv2 zeroes the fraction at both borders */
            if (s < 0) { f = 0.f; i0 = i1 = 0; }
            if (s >= src - 1) { f = 0.f; i0 = i1 = src - 1; }
        } else {
            /* vertical: cv2 keeps the fraction and clamps the row indices */
            if (i0 < 0) i0 = 0;
            if (i0 > src - 1) i0 = src - 1;
            if (i1 < 0) i1 = 0;
            if (i1 > src - 1) i1 = src - 1;
        }
        if (i1 > src - 1) i1 = src - 1;
        taps[k].i0 = i0;
        taps[k].i1 = i1;
        taps[k].a0 = coef_round(1.f - f);
        taps[k].a1 = coef_round(f);
    }
}

/* horizontal pass of one source row into int32 (values up to 255 * 2048) */
static void hresize_row(const uint8_t *srow, int c, const axis_tap *xt, int ow, int32_t *out) {
    if (c == 3) {
        for (int j = 0; j < ow; j++) {
            const uint8_t *p0 = srow + 3 * xt[j].i0, *p1 = srow + 3 * xt[j].i1;
            int a0 = xt[j].a0, a1 = xt[j].a1;
            out[3 * j + 0] = p0[0] * a0 + p1[0] * a1;
            out[3 * j + 1] = p0[1] * a0 + p1[1] * a1;
            out[3 * j + 2] = p0[2] * a0 + p1[2] * a1;
        }
    } else if (c == 1) {
        for (int j = 0; j < ow; j++) out[j] = srow[xt[j].i0] * xt[j].a0 + srow[xt[j].i1] * xt[j].a1;
    } else {
        for (int j = 0; j < ow; j++)
            for (int k = 0; k < c; k++)
                out[c * j + k] = srow[c * xt[j].i0 + k] * xt[j].a0 + srow[c * xt[j].i1 + k] * xt[j].a1;
    }
}

/* Vertical pass as cv2's SIMD kernel for 8U computes it (the path that
 * produces nearly every pixel): (b * (row >> 4)) >> 16 per row, summed, then
 * rounded by 2 bits. */
static void vresize_row(const int32_t *r0, const int32_t *r1, int b0, int b1, int n, uint8_t *dst) {
    for (int k = 0; k < n; k++) {
        int v = ((b0 * (int16_t)(r0[k] >> 4)) >> 16) + ((b1 * (int16_t)(r1[k] >> 4)) >> 16);
        v = (v + 2) >> 2;
        dst[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

void segc_resize_bilinear_u8(const uint8_t *src, int sh, int sw, int c, int dh, int dw, int y0, int x0, int oh,
                             int ow, uint8_t *dst, segc_arena *scratch) {
    if (oh <= 0 || ow <= 0) return;
    axis_tap *xt = segc_arena_alloc(scratch, sizeof(axis_tap) * (size_t)ow);
    axis_tap *yt = segc_arena_alloc(scratch, sizeof(axis_tap) * (size_t)oh);
    linear_taps(sw, dw, x0, ow, true, xt);
    linear_taps(sh, dh, y0, oh, false, yt);
    size_t rowlen = (size_t)ow * (size_t)c;
    int32_t *buf[2] = {segc_arena_alloc(scratch, rowlen * sizeof(int32_t)),
                       segc_arena_alloc(scratch, rowlen * sizeof(int32_t))};
    int have[2] = {-1, -1};   /* source row held by each buffer */
    size_t sstride = (size_t)sw * (size_t)c;
    for (int i = 0; i < oh; i++) {
        int r0 = yt[i].i0, r1 = yt[i].i1;
        int32_t *use[2];
        for (int k = 0; k < 2; k++) {
            int r = k ? r1 : r0, keep = k ? r0 : r1;
            if (have[0] == r) { use[k] = buf[0]; continue; }
            if (have[1] == r) { use[k] = buf[1]; continue; }
            int slot = have[0] == keep ? 1 : 0;   /* never evict the other row this output needs */
            hresize_row(src + (size_t)r * sstride, c, xt, ow, buf[slot]);
            have[slot] = r;
            use[k] = buf[slot];
        }
        vresize_row(use[0], use[1], yt[i].a0, yt[i].a1, (int)rowlen, dst + (size_t)i * rowlen);
    }
}

void segc_nearest_map(int src, int dst, int o0, int n, int *map) {
    double inv = 1.0 / ((double)dst / (double)src);
    for (int k = 0; k < n; k++) {
        int s = (int)floor((double)(o0 + k) * inv);
        map[k] = s < src - 1 ? s : src - 1;
    }
}

void segc_resize_nearest_u8(const uint8_t *src, int sh, int sw, int c, int dh, int dw, int y0, int x0, int oh,
                            int ow, uint8_t *dst, segc_arena *scratch) {
    if (oh <= 0 || ow <= 0) return;
    int *xm = segc_arena_alloc(scratch, sizeof(int) * (size_t)ow);
    int *ym = segc_arena_alloc(scratch, sizeof(int) * (size_t)oh);
    segc_nearest_map(sw, dw, x0, ow, xm);
    segc_nearest_map(sh, dh, y0, oh, ym);
    size_t sstride = (size_t)sw * (size_t)c, dstride = (size_t)ow * (size_t)c;
    for (int i = 0; i < oh; i++) {
        const uint8_t *srow = src + (size_t)ym[i] * sstride;
        uint8_t *drow = dst + (size_t)i * dstride;
        if (i > 0 && ym[i] == ym[i - 1]) {   /* upsampling repeats rows */
            memcpy(drow, drow - dstride, dstride);
            continue;
        }
        if (c == 1)
            for (int j = 0; j < ow; j++) drow[j] = srow[xm[j]];
        else
            for (int j = 0; j < ow; j++) memcpy(drow + (size_t)j * c, srow + (size_t)xm[j] * c, (size_t)c);
    }
}

void segc_rescale_size(int h, int w, int scale_w, int scale_h, int *nh, int *nw) {
    double long_edge = scale_w > scale_h ? scale_w : scale_h, short_edge = scale_w > scale_h ? scale_h : scale_w;
    double f1 = long_edge / (double)(h > w ? h : w), f2 = short_edge / (double)(h < w ? h : w);
    double f = f1 < f2 ? f1 : f2;
    *nw = (int)((double)w * f + 0.5);
    *nh = (int)((double)h * f + 0.5);
}

void segc_crop_u8(const uint8_t *src, int h, int w, int c, int y0, int x0, int ch, int cw, uint8_t *dst,
                  int *out_h, int *out_w) {
    int y1 = y0 + ch < h ? y0 + ch : h, x1 = x0 + cw < w ? x0 + cw : w;
    int oh = y1 - y0, ow = x1 - x0;
    if (oh < 0) oh = 0;
    if (ow < 0) ow = 0;
    for (int i = 0; i < oh; i++)
        memcpy(dst + (size_t)i * ow * c, src + ((size_t)(y0 + i) * w + x0) * c, (size_t)ow * c);
    *out_h = oh;
    *out_w = ow;
}

void segc_flip_u8(uint8_t *img, int h, int w, int c) {
    uint8_t tmp[16384];   /* reversed row, so the common widths copy in vectorisable passes */
    size_t rowb = (size_t)w * c;
    for (int i = 0; i < h; i++) {
        uint8_t *row = img + (size_t)i * rowb;
        if (rowb <= sizeof tmp && (c == 1 || c == 3)) {
            if (c == 3) {
                for (int j = 0; j < w; j++) {
                    const uint8_t *s = row + 3 * (size_t)(w - 1 - j);
                    tmp[3 * j] = s[0];
                    tmp[3 * j + 1] = s[1];
                    tmp[3 * j + 2] = s[2];
                }
            } else {
                for (int j = 0; j < w; j++) tmp[j] = row[w - 1 - j];
            }
            memcpy(row, tmp, rowb);
            continue;
        }
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            for (int k = 0; k < c; k++) {
                uint8_t t = row[a * c + k];
                row[a * c + k] = row[b * c + k];
                row[b * c + k] = t;
            }
        }
    }
}

/* Class histogram of label[ym[i], xm[j]] over the window; ym/xm may be NULL
 * for the identity. Shared by the plain and the fused (resize+crop) path. */
bool segc_crop_class_ok_mapped(const uint8_t *label, int lw, const int *ym, const int *xm, int y0, int x0, int oh,
                               int ow, double cat_max_ratio, int ignore_index) {
    int64_t cnt[256] = {0};
    for (int i = 0; i < oh; i++) {
        const uint8_t *row = label + (size_t)(ym ? ym[y0 + i] : y0 + i) * lw;
        if (xm)
            for (int j = 0; j < ow; j++) cnt[row[xm[x0 + j]]]++;
        else
            for (int j = 0; j < ow; j++) cnt[row[x0 + j]]++;
    }
    int64_t total = 0, mx = 0;
    int classes = 0;
    for (int k = 0; k < 256; k++) {
        if (k == ignore_index || cnt[k] == 0) continue;
        classes++;
        total += cnt[k];
        if (cnt[k] > mx) mx = cnt[k];
    }
    return classes > 1 && (double)mx / (double)total < cat_max_ratio;
}

bool segc_crop_class_ok(const uint8_t *label, int h, int w, int y0, int x0, int crop_h, int crop_w,
                        double cat_max_ratio, int ignore_index) {
    int oh = (y0 + crop_h < h ? y0 + crop_h : h) - y0, ow = (x0 + crop_w < w ? x0 + crop_w : w) - x0;
    if (oh <= 0 || ow <= 0) return false;
    return segc_crop_class_ok_mapped(label, w, NULL, NULL, y0, x0, oh, ow, cat_max_ratio, ignore_index);
}

int segc_crop_choose(const uint8_t *label, int h, int w, int crop_h, int crop_w, double cat_max_ratio,
                     int ignore_index, const int *cand_y, const int *cand_x, int n) {
    if (cat_max_ratio >= 1.0 || n <= 1) return 0;
    for (int k = 0; k < n - 1; k++)
        if (segc_crop_class_ok(label, h, w, cand_y[k], cand_x[k], crop_h, crop_w, cat_max_ratio, ignore_index))
            return k;
    return n - 1;
}

void segc_expand_u8(const uint8_t *src, int h, int w, int c, const uint8_t *fill, int eh, int ew, int top, int left,
                    uint8_t *dst) {
    size_t estride = (size_t)ew * c;
    /* first canvas row filled pixel by pixel, the rest copied from it */
    for (int j = 0; j < ew; j++) memcpy(dst + (size_t)j * c, fill, (size_t)c);
    for (int i = 1; i < eh; i++) memcpy(dst + (size_t)i * estride, dst, estride);
    for (int i = 0; i < h; i++)
        memcpy(dst + (size_t)(top + i) * estride + (size_t)left * c, src + (size_t)i * w * c, (size_t)w * c);
}

/* ---- boxes ---- */
void segc_boxes_translate(float *boxes, int n, float dx, float dy) {
    for (int i = 0; i < n; i++) {
        boxes[4 * i + 0] += dx;
        boxes[4 * i + 1] += dy;
        boxes[4 * i + 2] += dx;
        boxes[4 * i + 3] += dy;
    }
}

void segc_boxes_flip(float *boxes, int n, int img_w) {
    for (int i = 0; i < n; i++) {
        float x1 = boxes[4 * i], x2 = boxes[4 * i + 2];
        boxes[4 * i] = (float)img_w - x2;
        boxes[4 * i + 2] = (float)img_w - x1;
    }
}

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

void segc_boxes_rescale(float *boxes, int n, float sx, float sy, int clip_w, int clip_h) {
    for (int i = 0; i < n; i++) {
        float *b = boxes + 4 * i;
        b[0] = clampf(b[0] * sx, 0.f, (float)clip_w);
        b[1] = clampf(b[1] * sy, 0.f, (float)clip_h);
        b[2] = clampf(b[2] * sx, 0.f, (float)clip_w);
        b[3] = clampf(b[3] * sy, 0.f, (float)clip_h);
    }
}

void segc_boxes_iou_patch(const float *boxes, int n, const float *patch, float *iou) {
    float pa = (patch[2] - patch[0]) * (patch[3] - patch[1]);
    for (int i = 0; i < n; i++) {
        const float *b = boxes + 4 * i;
        float ba = (b[2] - b[0]) * (b[3] - b[1]);
        float lx = fmaxf(patch[0], b[0]), ly = fmaxf(patch[1], b[1]);
        float rx = fminf(patch[2], b[2]), ry = fminf(patch[3], b[3]);
        float iw = fmaxf(rx - lx, 0.f), ih = fmaxf(ry - ly, 0.f);
        float inter = iw * ih;
        float uni = fmaxf(pa + ba - inter, 1e-6f);
        iou[i] = inter / uni;
    }
}

static inline bool centre_inside(const float *b, const int *patch) {
    float cx = (b[0] + b[2]) * 0.5f, cy = (b[1] + b[3]) * 0.5f;
    return cx > (float)patch[0] && cy > (float)patch[1] && cx < (float)patch[2] && cy < (float)patch[3];
}

bool segc_boxes_any_centre_inside(const float *boxes, int n, const int *patch) {
    for (int i = 0; i < n; i++)
        if (centre_inside(boxes + 4 * i, patch)) return true;
    return false;
}

int segc_boxes_crop(float *boxes, int32_t *labels, uint8_t *crowd, int n, const int *patch) {
    int kept = 0;
    float pw = (float)(patch[2] - patch[0]), ph = (float)(patch[3] - patch[1]);
    for (int i = 0; i < n; i++) {
        float b[4];
        memcpy(b, boxes + 4 * i, sizeof b);
        if (!centre_inside(b, patch)) continue;
        float *o = boxes + 4 * kept;
        o[0] = clampf(b[0] - (float)patch[0], 0.f, pw);
        o[1] = clampf(b[1] - (float)patch[1], 0.f, ph);
        o[2] = clampf(b[2] - (float)patch[0], 0.f, pw);
        o[3] = clampf(b[3] - (float)patch[1], 0.f, ph);
        if (labels) labels[kept] = labels[i];
        if (crowd) crowd[kept] = crowd[i];
        kept++;
    }
    return kept;
}
