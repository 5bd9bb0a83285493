/* Photometric apply steps and the output stage: mmseg PhotoMetricDistortion
 * on uint8 RGB with cv2's integer RGB->HSV and float HSV->RGB, and the fused
 * normalise + HWC->CHW + pad writer. */
#include <math.h>
#include <string.h>

#include "augment_internal.h"

#define HSV_SHIFT 12

typedef struct { int sdiv[256], hdiv[256]; } hsv_tables;

/* cv2's RGB2HSV_b reciprocal tables (hrange 180), rounded with cvRound */
static void hsv_tables_init(hsv_tables *t) {
    t->sdiv[0] = t->hdiv[0] = 0;
    for (int i = 1; i < 256; i++) {
        t->sdiv[i] = (int)lrint((double)(255 << HSV_SHIFT) / (1. * i));
        t->hdiv[i] = (int)lrint((double)(180 << HSV_SHIFT) / (6. * i));
    }
}

static inline void rgb2hsv_px(const hsv_tables *t, int r, int g, int b, uint8_t *hsv) {
    int v = b, vmin = b;
    if (g > v) v = g;
    if (r > v) v = r;
    if (g < vmin) vmin = g;
    if (r < vmin) vmin = r;
    int diff = v - vmin;
    int vr = v == r ? -1 : 0, vg = v == g ? -1 : 0;
    int s = (diff * t->sdiv[v] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    int h = (vr & (g - b)) + (~vr & ((vg & (b - r + 2 * diff)) + ((~vg) & (r - g + 4 * diff))));
    h = (h * t->hdiv[diff] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    h += h < 0 ? 180 : 0;
    hsv[0] = (uint8_t)(h < 0 ? 0 : h > 255 ? 255 : h);
    hsv[1] = (uint8_t)s;
    hsv[2] = (uint8_t)v;
}

static inline uint8_t to_u8(float x, bool round) {
    int r = round ? (int)lrintf(x) : (int)x;
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

/* cv2's HSV2RGB_b: H as float, S and V scaled to [0,1], tab entries with
 * 1 - s*h as one fused multiply-add, result * 255. cv2 converts each row in
 * blocks of 32 pixels with a vector kernel that truncates; the last w % 32
 * pixels of a row go through its scalar code, which rounds. Reproduced
 * bit-exactly (opencv-python 5.0 on x86-64). */
#define CV_HSV_BLOCK 32
static inline void hsv2rgb_px(int hh, int ss, int vv, bool round, uint8_t *rgb) {
    static const int sector_data[6][3] = {{1, 3, 0}, {1, 0, 2}, {3, 0, 1}, {0, 2, 1}, {0, 1, 3}, {2, 1, 0}};
    float h = (float)hh * (6.0f / 180.0f), s = (float)ss * (1.0f / 255.0f), v = (float)vv * (1.0f / 255.0f);
    int sector = (int)h;
    h -= (float)sector;
    sector -= (sector / 6) * 6;
    float tab[4] = {v, v * (1.f - s), v * fmaf(-s, h, 1.f), v * fmaf(-s, 1.f - h, 1.f)};
    rgb[0] = to_u8(tab[sector_data[sector][2]] * 255.f, round);
    rgb[1] = to_u8(tab[sector_data[sector][1]] * 255.f, round);
    rgb[2] = to_u8(tab[sector_data[sector][0]] * 255.f, round);
}

void segc_rgb_to_hsv_u8(const uint8_t *rgb, uint8_t *hsv, int64_t n) {
    hsv_tables t;
    hsv_tables_init(&t);
    for (int64_t i = 0; i < n; i++) rgb2hsv_px(&t, rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], hsv + 3 * i);
}

void segc_hsv_to_rgb_u8(const uint8_t *hsv, uint8_t *rgb, int h, int w) {
    int vec_end = w - w % CV_HSV_BLOCK;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = 3 * ((size_t)y * w + x);
            hsv2rgb_px(hsv[i], hsv[i + 1], hsv[i + 2], x >= vec_end, rgb + i);
        }
}

/* mmseg's convert(): float32 x * alpha + beta, clipped, truncated to uint8 */
static void convert_lut(uint8_t *lut, float alpha, float beta) {
    for (int x = 0; x < 256; x++) {
        float v = (float)x * alpha + beta;
        v = v < 0.f ? 0.f : v > 255.f ? 255.f : v;
        lut[x] = (uint8_t)v;
    }
}

/* ---- blocked, vectorisable HSV round trip (same arithmetic as the
 * per-pixel functions above, on planar int32/float lanes) ---- */
#define PM_BLOCK 256

static void rgb2hsv_lanes(const int32_t *restrict sdiv, const int32_t *restrict hdiv, const int32_t *restrict R,
                          const int32_t *restrict G, const int32_t *restrict B, int32_t *restrict H,
                          int32_t *restrict S, int32_t *restrict V, int n) {
    for (int i = 0; i < n; i++) {
        int r = R[i], g = G[i], b = B[i];
        int v = b > g ? b : g;
        v = v > r ? v : r;
        int vmin = b < g ? b : g;
        vmin = vmin < r ? vmin : r;
        int diff = v - vmin;
        int vr = -(v == r), vg = -(v == g);
        int h = (vr & (g - b)) + (~vr & ((vg & (b - r + 2 * diff)) + ((~vg) & (r - g + 4 * diff))));
        h = (h * hdiv[diff] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
        H[i] = h + (180 & -(h < 0));
        S[i] = (diff * sdiv[v] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
        V[i] = v;
    }
}

/* cv2's sector table as selects: (b, g, r) = tab[sector_data[sector]];
 * 255 * channel, before cv2's final truncation or rounding. */
static inline void hsv2rgb_lane(int32_t hh, int32_t ss, int32_t vv, float *r, float *g, float *b) {
    float h = (float)hh * (6.0f / 180.0f), s = (float)ss * (1.0f / 255.0f), v = (float)vv * (1.0f / 255.0f);
    int sector = (int)h;
    h -= (float)sector;
    sector -= 6 & -(sector >= 6);
    float t0 = v, t1 = v * (1.f - s), t2 = v * fmaf(-s, h, 1.f), t3 = v * fmaf(-s, 1.f - h, 1.f);
    float bb = t2, gg = t1, rr = t3;
    bb = sector <= 4 ? t0 : bb;
    bb = sector == 2 ? t3 : bb;
    bb = sector <= 1 ? t1 : bb;
    gg = sector == 3 ? t2 : gg;
    gg = sector <= 2 ? t0 : gg;
    gg = sector == 0 ? t3 : gg;
    rr = sector <= 3 ? t1 : rr;
    rr = sector == 1 ? t2 : rr;
    rr = (sector == 0) | (sector == 5) ? t0 : rr;
    *r = rr * 255.f;
    *g = gg * 255.f;
    *b = bb * 255.f;
}

static void hsv2rgb_lanes(const int32_t *restrict H, const int32_t *restrict S, const int32_t *restrict V,
                          int32_t *restrict R, int32_t *restrict G, int32_t *restrict B, int n, int split) {
    for (int i = 0; i < split; i++) {   /* cv2's vector kernel: truncate */
        float r, g, b;
        hsv2rgb_lane(H[i], S[i], V[i], &r, &g, &b);
        int ri = (int)r, gi = (int)g, bi = (int)b;
        R[i] = ri > 255 ? 255 : ri;
        G[i] = gi > 255 ? 255 : gi;
        B[i] = bi > 255 ? 255 : bi;
    }
    for (int i = split; i < n; i++) {   /* cv2's scalar tail: round */
        float r, g, b;
        hsv2rgb_lane(H[i], S[i], V[i], &r, &g, &b);
        R[i] = to_u8(r, true);
        G[i] = to_u8(g, true);
        B[i] = to_u8(b, true);
    }
}

void segc_photometric_apply(uint8_t *rgb, int h, int w, const segc_photometric_params *pp) {
    /* brightness and a leading contrast act per channel value: one LUT */
    uint8_t pre[256], post[256], tmp[256], sat8[256];
    for (int x = 0; x < 256; x++) pre[x] = post[x] = (uint8_t)x;
    if (pp->do_brightness) convert_lut(pre, 1.f, pp->beta);
    if (pp->do_contrast) {
        convert_lut(tmp, pp->alpha, 0.f);
        if (pp->mode == 1)
            for (int x = 0; x < 256; x++) pre[x] = tmp[pre[x]];
        else
            memcpy(post, tmp, sizeof post);
    }
    bool do_sat = pp->do_saturation, do_hue = pp->do_hue;
    if (!do_sat && !do_hue) {
        int32_t lut[256];   /* int32 so the lookup vectorises as a gather */
        for (int x = 0; x < 256; x++) lut[x] = post[pre[x]];
        for (int64_t i = 0; i < (int64_t)h * w * 3; i++) rgb[i] = (uint8_t)lut[rgb[i]];
        return;
    }
    int32_t sat[256], pre32[256], post32[256];   /* int32 tables: the lookups vectorise as gathers */
    if (do_sat) convert_lut(sat8, pp->saturation, 0.f);
    for (int x = 0; x < 256; x++) {
        sat[x] = do_sat ? sat8[x] : x;
        pre32[x] = pre[x];
        post32[x] = post[x];
    }
    int hue = ((pp->hue % 180) + 180) % 180;
    hsv_tables t;
    hsv_tables_init(&t);
    int vec_end = w - w % CV_HSV_BLOCK;
    int32_t R[PM_BLOCK], G[PM_BLOCK], B[PM_BLOCK], H[PM_BLOCK], S[PM_BLOCK], V[PM_BLOCK];
    for (int y = 0; y < h; y++) {
        uint8_t *row = rgb + (size_t)y * w * 3;
        for (int x0 = 0; x0 < w; x0 += PM_BLOCK) {
            int n = w - x0 < PM_BLOCK ? w - x0 : PM_BLOCK;
            int split = vec_end - x0 < 0 ? 0 : vec_end - x0 > n ? n : vec_end - x0;
            uint8_t *p = row + 3 * (size_t)x0;
            for (int i = 0; i < n; i++) {
                R[i] = pre32[p[3 * i]];
                G[i] = pre32[p[3 * i + 1]];
                B[i] = pre32[p[3 * i + 2]];
            }
            if (do_sat) {
                rgb2hsv_lanes(t.sdiv, t.hdiv, R, G, B, H, S, V, n);
                for (int i = 0; i < n; i++) S[i] = sat[S[i]];
                hsv2rgb_lanes(H, S, V, R, G, B, n, split);
            }
            if (do_hue) {
                rgb2hsv_lanes(t.sdiv, t.hdiv, R, G, B, H, S, V, n);
                for (int i = 0; i < n; i++) {
                    int hh = H[i] + hue;
                    H[i] = hh >= 180 ? hh - 180 : hh;
                }
                hsv2rgb_lanes(H, S, V, R, G, B, n, split);
            }
            for (int i = 0; i < n; i++) {
                p[3 * i] = (uint8_t)post32[R[i]];
                p[3 * i + 1] = (uint8_t)post32[G[i]];
                p[3 * i + 2] = (uint8_t)post32[B[i]];
            }
        }
    }
}

/* ---- output stage ---- */
void segc_normalize_chw(const uint8_t *img, int h, int w, int c, const float *mean, const float *std, bool swap_rb,
                        float *dst, int dst_h, int dst_w, float pad_val) {
    size_t plane = (size_t)dst_h * dst_w;
    if (c == 3) {   /* one pass per row writing all three planes: the u8 row is read once */
        /* input channel k goes to output plane q[k] with that plane's mean/std */
        int q[3] = {swap_rb ? 2 : 0, 1, swap_rb ? 0 : 2};
        float m[3], d[3];
        for (int k = 0; k < 3; k++) {
            m[k] = mean ? mean[q[k]] : 0.f;
            d[k] = std ? std[q[k]] : 1.f;
        }
        for (int i = 0; i < dst_h; i++) {
            float *restrict a = dst + (size_t)q[0] * plane + (size_t)i * dst_w;
            float *restrict b = dst + plane + (size_t)i * dst_w;
            float *restrict e = dst + (size_t)q[2] * plane + (size_t)i * dst_w;
            int valid = i < h ? w : 0;
            const uint8_t *restrict row = img + (size_t)i * w * 3;
            /* (x - mean) / std in float32, as mmseg's data preprocessor */
            for (int j = 0; j < valid; j++) {
                a[j] = ((float)row[3 * j] - m[0]) / d[0];
                b[j] = ((float)row[3 * j + 1] - m[1]) / d[1];
                e[j] = ((float)row[3 * j + 2] - m[2]) / d[2];
            }
            for (int j = valid; j < dst_w; j++) a[j] = b[j] = e[j] = pad_val;
        }
        return;
    }
    for (int k = 0; k < c; k++) {
        int sk = (swap_rb && c == 3) ? 2 - k : k;
        float m = mean ? mean[k] : 0.f, s = std ? std[k] : 1.f;
        float *out = dst + (size_t)k * plane;
        for (int i = 0; i < h; i++) {
            const uint8_t *row = img + (size_t)i * w * c + sk;
            float *o = out + (size_t)i * dst_w;
            /* (x - mean) / std in float32, as mmseg's data preprocessor */
            for (int j = 0; j < w; j++) o[j] = ((float)row[(size_t)j * c] - m) / s;
            for (int j = w; j < dst_w; j++) o[j] = pad_val;
        }
        for (int i = h; i < dst_h; i++)
            for (int j = 0; j < dst_w; j++) out[(size_t)i * dst_w + j] = pad_val;
    }
}

void segc_aug_out_size(const segc_aug_state *st, int *h, int *w) {
    *h = st->pad && st->pad_h > st->h ? st->pad_h : st->h;
    *w = st->pad && st->pad_w > st->w ? st->pad_w : st->w;
}

void segc_aug_label_out_size(const segc_aug_state *st, int *h, int *w) {
    *h = st->pad && st->pad_h > st->label_h ? st->pad_h : st->label_h;
    *w = st->pad && st->pad_w > st->label_w ? st->pad_w : st->label_w;
}

void segc_aug_write_image(const segc_aug_state *st, float *dst, int dst_h, int dst_w) {
    if (st->img_f32) {   /* float HWC -> CHW; Normalize's statistics cover the first 4 channels */
        size_t plane = (size_t)dst_h * dst_w;
        for (int k = 0; k < st->c; k++) {
            float m = st->normalize && k < 4 ? st->mean[k] : 0.f, s = st->normalize && k < 4 ? st->std[k] : 1.f;
            float *o = dst + (size_t)k * plane;
            for (int i = 0; i < dst_h; i++)
                for (int j = 0; j < dst_w; j++)
                    o[(size_t)i * dst_w + j] =
                        i < st->h && j < st->w ? (st->img_f32[((size_t)i * st->w + j) * st->c + k] - m) / s : st->pad_val;
        }
        return;
    }
    segc_normalize_chw(st->img, st->h, st->w, st->c, st->normalize ? st->mean : NULL,
                       st->normalize ? st->std : NULL, st->swap_rb, dst, dst_h, dst_w, st->pad_val);
}

void segc_aug_write_label(const segc_aug_state *st, void *dst, segc_dtype dt, int dst_h, int dst_w) {
    int h = st->label ? st->label_h : 0, w = st->label ? st->label_w : 0;
    uint8_t pad = st->seg_pad_val;
    if (dt == SEGC_U8) {
        uint8_t *o = dst;
        for (int i = 0; i < h; i++) {
            memcpy(o + (size_t)i * dst_w, st->label + (size_t)i * w, (size_t)w);
            memset(o + (size_t)i * dst_w + w, pad, (size_t)(dst_w - w));
        }
        memset(o + (size_t)h * dst_w, pad, (size_t)(dst_h - h) * dst_w);
    } else {
        int64_t *o = dst;
        for (int i = 0; i < h; i++) {
            const uint8_t *row = st->label + (size_t)i * w;
            int64_t *orow = o + (size_t)i * dst_w;
            for (int j = 0; j < w; j++) orow[j] = row[j];
            for (int j = w; j < dst_w; j++) orow[j] = pad;
        }
        for (size_t k = (size_t)h * dst_w; k < (size_t)dst_h * dst_w; k++) o[k] = pad;
    }
}
