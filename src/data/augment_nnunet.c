/* nnU-Net 2-D training transforms on float HWC images (any channel count)
 * with an optional U8 label: batchgenerators' semantics (see the parameter
 * structs in augment.h), random parameters drawn from the per-sample Philox
 * stream one block per draw like the mmseg transforms, so a sample's result
 * depends only on its seed. Every transform draws its "apply?" coin first,
 * then, only when applying, its parameters in channel order. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "augment_internal.h"

#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return false; } while (0)

static double unif(segc_rng *r, double lo, double hi) { return segc_aug_uniform(r, lo, hi); }
static bool coin(segc_rng *r, double p) { return segc_aug_uniform(r, 0, 1) < p; }

bool segc_nn_is_kind(segc_aug_kind k) { return k >= SEGC_AUG_FG_CROP && k <= SEGC_AUG_LOW_RES; }

void segc_nn_default(segc_aug_transform *t) {
    switch (t->kind) {
    case SEGC_AUG_FG_CROP: t->p.fg_crop = (segc_aug_fg_crop){128, 128, 0.4, 0.f, 0, 255}; break;
    case SEGC_AUG_SPATIAL: t->p.spatial = (segc_aug_spatial){0.2, -180, 180, 0.2, 0.7, 1.4, 0.f, 0}; break;
    case SEGC_AUG_NOISE: t->p.noise = (segc_aug_noise){0.1, 0.0, 0.1}; break;
    case SEGC_AUG_BLUR: t->p.blur = (segc_aug_blur){0.2, 0.5, 0.5, 1.0}; break;
    case SEGC_AUG_BRIGHTNESS: t->p.brightness = (segc_aug_range){0.15, 0.75, 1.25}; break;
    case SEGC_AUG_CONTRAST: t->p.contrast = (segc_aug_range){0.15, 0.75, 1.25}; break;
    case SEGC_AUG_GAMMA: t->p.gamma = (segc_aug_gamma){0.3, 0.7, 1.5, false}; break;
    case SEGC_AUG_MIRROR: t->p.mirror = (segc_aug_mirror){0.5, 0.5}; break;
    case SEGC_AUG_LOW_RES: t->p.low_res = (segc_aug_low_res){0.25, 0.5, 0.5, 1.0}; break;
    default: break;
    }
}

static bool prob_ok(double p) { return p >= 0 && p <= 1; }

bool segc_nn_validate(const segc_aug_transform *t, int i, const char *nm, char *err, size_t errlen) {
    switch (t->kind) {
    case SEGC_AUG_FG_CROP: {
        const segc_aug_fg_crop *c = &t->p.fg_crop;
        if (c->h <= 0 || c->w <= 0) BAD("pipeline[%d] %s: patch size expected > 0, found %dx%d", i, nm, c->h, c->w);
        if (!prob_ok(c->fg_prob)) BAD("pipeline[%d] %s: fg_prob expected in [0, 1], found %g", i, nm, c->fg_prob);
        if (c->seg_pad_val < 0 || c->seg_pad_val > 255 || c->ignore_index < 0 || c->ignore_index > 255)
            BAD("pipeline[%d] %s: seg_pad_val and ignore_index expected in 0..255, found %d and %d", i, nm,
                c->seg_pad_val, c->ignore_index);
        if (!isfinite(c->pad_val)) BAD("pipeline[%d] %s: pad_val expected finite, found %g", i, nm, (double)c->pad_val);
        break;
    }
    case SEGC_AUG_SPATIAL: {
        const segc_aug_spatial *s = &t->p.spatial;
        if (!prob_ok(s->p_rot) || !prob_ok(s->p_scale))
            BAD("pipeline[%d] %s: p_rot and p_scale expected in [0, 1], found %g and %g", i, nm, s->p_rot, s->p_scale);
        if (!(isfinite(s->rot_lo) && isfinite(s->rot_hi) && s->rot_lo <= s->rot_hi))
            BAD("pipeline[%d] %s: rotation range expected finite lo <= hi (degrees), found (%g, %g)", i, nm,
                s->rot_lo, s->rot_hi);
        if (!(s->scale_lo > 0 && s->scale_lo <= s->scale_hi && s->scale_hi <= 100))
            BAD("pipeline[%d] %s: scale range expected 0 < lo <= hi <= 100, found (%g, %g)", i, nm, s->scale_lo,
                s->scale_hi);
        if (s->seg_pad_val < 0 || s->seg_pad_val > 255)
            BAD("pipeline[%d] %s: seg_pad_val expected in 0..255, found %d", i, nm, s->seg_pad_val);
        break;
    }
    case SEGC_AUG_NOISE: {
        const segc_aug_noise *q = &t->p.noise;
        if (!prob_ok(q->prob)) BAD("pipeline[%d] %s: prob expected in [0, 1], found %g", i, nm, q->prob);
        if (!(q->var_lo >= 0 && q->var_lo <= q->var_hi && isfinite(q->var_hi)))
            BAD("pipeline[%d] %s: noise_variance expected 0 <= lo <= hi, found (%g, %g)", i, nm, q->var_lo,
                q->var_hi);
        break;
    }
    case SEGC_AUG_BLUR: {
        const segc_aug_blur *b = &t->p.blur;
        if (!prob_ok(b->prob) || !prob_ok(b->p_per_channel))
            BAD("pipeline[%d] %s: prob and p_per_channel expected in [0, 1], found %g and %g", i, nm, b->prob,
                b->p_per_channel);
        if (!(b->sigma_lo > 0 && b->sigma_lo <= b->sigma_hi && b->sigma_hi <= 64))
            BAD("pipeline[%d] %s: sigma range expected 0 < lo <= hi <= 64, found (%g, %g)", i, nm, b->sigma_lo,
                b->sigma_hi);
        break;
    }
    case SEGC_AUG_BRIGHTNESS:
    case SEGC_AUG_CONTRAST: {
        const segc_aug_range *q = t->kind == SEGC_AUG_BRIGHTNESS ? &t->p.brightness : &t->p.contrast;
        if (!prob_ok(q->prob)) BAD("pipeline[%d] %s: prob expected in [0, 1], found %g", i, nm, q->prob);
        if (!(q->lo >= 0 && q->lo <= q->hi && isfinite(q->hi)))
            BAD("pipeline[%d] %s: range expected 0 <= lo <= hi, found (%g, %g)", i, nm, q->lo, q->hi);
        break;
    }
    case SEGC_AUG_GAMMA: {
        const segc_aug_gamma *g = &t->p.gamma;
        if (!prob_ok(g->prob)) BAD("pipeline[%d] %s: prob expected in [0, 1], found %g", i, nm, g->prob);
        if (!(g->lo > 0 && g->lo <= g->hi && g->hi <= 100))
            BAD("pipeline[%d] %s: gamma range expected 0 < lo <= hi <= 100, found (%g, %g)", i, nm, g->lo, g->hi);
        break;
    }
    case SEGC_AUG_MIRROR:
        if (!prob_ok(t->p.mirror.prob_y) || !prob_ok(t->p.mirror.prob_x))
            BAD("pipeline[%d] %s: prob_y and prob_x expected in [0, 1], found %g and %g", i, nm, t->p.mirror.prob_y,
                t->p.mirror.prob_x);
        break;
    case SEGC_AUG_LOW_RES: {
        const segc_aug_low_res *q = &t->p.low_res;
        if (!prob_ok(q->prob) || !prob_ok(q->p_per_channel))
            BAD("pipeline[%d] %s: prob and p_per_channel expected in [0, 1], found %g and %g", i, nm, q->prob,
                q->p_per_channel);
        if (!(q->zoom_lo > 0 && q->zoom_lo <= q->zoom_hi && q->zoom_hi <= 1))
            BAD("pipeline[%d] %s: zoom range expected 0 < lo <= hi <= 1, found (%g, %g)", i, nm, q->zoom_lo,
                q->zoom_hi);
        break;
    }
    default: BAD("pipeline[%d]: unknown transform kind %d", i, (int)t->kind);
    }
    return true;
}

/* ------------------------------------------------------------------ crop */

/* inclusive range of window starts: over the image, or (image smaller than
 * the patch) anywhere that keeps the whole image inside the window */
static void start_range(int n, int p, int *lo, int *hi) {
    *lo = n >= p ? 0 : n - p;
    *hi = n >= p ? n - p : 0;
}

void segc_fg_crop_draw(const segc_aug_fg_crop *t, segc_rng *r, const uint8_t *label, int h, int w, int *y0, int *x0,
                       bool *fg) {
    int ylo, yhi, xlo, xhi;
    start_range(h, t->h, &ylo, &yhi);
    start_range(w, t->w, &xlo, &xhi);
    *fg = false;
    if (coin(r, t->fg_prob) && label) {
        int64_t cnt[256] = {0};
        int64_t n = (int64_t)h * w;
        for (int64_t i = 0; i < n; i++) cnt[label[i]]++;
        int cls[256], nc = 0;
        for (int k = 1; k < 255; k++)
            if (k != t->ignore_index && cnt[k] > 0) cls[nc++] = k;
        if (nc > 0) {   /* nnU-Net: a random present class, then a random voxel of it */
            int k = cls[segc_aug_randint(r, 0, nc)];
            int64_t pick = segc_aug_randint(r, 0, (int)(cnt[k] < INT32_MAX ? cnt[k] : INT32_MAX)), i = 0;
            for (;; i++)
                if (label[i] == k && pick-- == 0) break;
            int cy = (int)(i / w), cx = (int)(i % w);
            int y = cy - t->h / 2, x = cx - t->w / 2;
            *y0 = y < ylo ? ylo : y > yhi ? yhi : y;
            *x0 = x < xlo ? xlo : x > xhi ? xhi : x;
            *fg = true;
            return;
        }
    }
    *y0 = segc_aug_randint(r, ylo, yhi + 1);   /* no foreground: uniform, as nnU-Net falls back to */
    *x0 = segc_aug_randint(r, xlo, xhi + 1);
}

static void do_fg_crop(const segc_aug_fg_crop *t, segc_rng *r, segc_arena *ar, segc_fimg *im) {
    int y0, x0;
    bool fg;
    segc_fg_crop_draw(t, r, im->lab, im->h, im->w, &y0, &x0, &fg);
    int ph = t->h, pw = t->w, c = im->c;
    float *o = segc_arena_alloc(ar, sizeof(float) * (size_t)ph * pw * c);
    uint8_t *ol = im->lab ? segc_arena_alloc(ar, (size_t)ph * pw) : NULL;
    for (int y = 0; y < ph; y++) {
        int sy = y0 + y;
        for (int x = 0; x < pw; x++) {
            int sx = x0 + x;
            bool in = sy >= 0 && sy < im->h && sx >= 0 && sx < im->w;
            float *d = o + ((size_t)y * pw + x) * c;
            if (in) memcpy(d, im->x + ((size_t)sy * im->w + sx) * c, sizeof(float) * c);
            else for (int k = 0; k < c; k++) d[k] = t->pad_val;
            if (ol) ol[(size_t)y * pw + x] = in ? im->lab[(size_t)sy * im->w + sx] : (uint8_t)t->seg_pad_val;
        }
    }
    im->x = o;
    im->lab = ol;
    im->h = ph;
    im->w = pw;
}

/* ------------------------------------------------------------------ spatial */

static void do_spatial(const segc_aug_spatial *t, segc_rng *r, segc_arena *ar, segc_fimg *im) {
    bool rot = coin(r, t->p_rot);
    double ang = rot ? unif(r, t->rot_lo, t->rot_hi) : 0;
    bool sc = coin(r, t->p_scale);
    double s = sc ? unif(r, t->scale_lo, t->scale_hi) : 1;
    if (!rot && !sc) return;
    int h = im->h, w = im->w, c = im->c;
    double a = ang * (M_PI / 180.0), ca = cos(a) * s, sa = sin(a) * s;
    double cy = (h - 1) * 0.5, cx = (w - 1) * 0.5;
    float *o = segc_arena_alloc(ar, sizeof(float) * (size_t)h * w * c);
    uint8_t *ol = im->lab ? segc_arena_alloc(ar, (size_t)h * w) : NULL;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double dy = y - cy, dx = x - cx;
            double sy = cy + ca * dy - sa * dx, sx = cx + sa * dy + ca * dx;
            float *d = o + ((size_t)y * w + x) * c;
            /* bilinear with out-of-image taps reading pad_val (map_coordinates, constant mode) */
            int iy = (int)floor(sy), ix = (int)floor(sx);
            double fy = sy - iy, fx = sx - ix;
            double wt[4] = {(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx};
            int ty[4] = {iy, iy, iy + 1, iy + 1}, tx[4] = {ix, ix + 1, ix, ix + 1};
            for (int k = 0; k < c; k++) {
                double v = 0;
                for (int q = 0; q < 4; q++) {
                    bool in = ty[q] >= 0 && ty[q] < h && tx[q] >= 0 && tx[q] < w;
                    v += wt[q] * (in ? im->x[((size_t)ty[q] * w + tx[q]) * c + k] : t->pad_val);
                }
                d[k] = (float)v;
            }
            if (ol) {
                int ny = (int)floor(sy + 0.5), nx = (int)floor(sx + 0.5);
                bool in = ny >= 0 && ny < h && nx >= 0 && nx < w;
                ol[(size_t)y * w + x] = in ? im->lab[(size_t)ny * w + nx] : (uint8_t)t->seg_pad_val;
            }
        }
    im->x = o;
    im->lab = ol;
}

/* ------------------------------------------------------------------ intensity */

static int reflect(int i, int n) {   /* scipy 'reflect': d c b a | a b c d | d c b a */
    if (n == 1) return 0;
    for (;;) {
        if (i < 0) i = -i - 1;
        else if (i >= n) i = 2 * n - i - 1;
        else return i;
    }
}

void segc_gaussian_blur_f32(float *img, int h, int w, int c, int ch, double sigma, float *tmp) {
    int rad = (int)(4.0 * sigma + 0.5);
    if (rad > 255) rad = 255;
    double k[511], sum = 0;
    for (int i = -rad; i <= rad; i++) sum += k[i + rad] = exp(-0.5 * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * rad; i++) k[i] /= sum;
    /* axis 0 (rows) first, then axis 1, as scipy's separable filter */
    for (int x = 0; x < w; x++) {
        for (int y = 0; y < h; y++) {
            double v = 0;
            for (int i = -rad; i <= rad; i++) v += k[i + rad] * img[((size_t)reflect(y + i, h) * w + x) * c + ch];
            tmp[y] = (float)v;
        }
        for (int y = 0; y < h; y++) img[((size_t)y * w + x) * c + ch] = tmp[y];
    }
    for (int y = 0; y < h; y++) {
        float *row = img + (size_t)y * w * c + ch;
        for (int x = 0; x < w; x++) {
            double v = 0;
            for (int i = -rad; i <= rad; i++) v += k[i + rad] * row[(size_t)reflect(x + i, w) * c];
            tmp[x] = (float)v;
        }
        for (int x = 0; x < w; x++) row[(size_t)x * c] = tmp[x];
    }
}

typedef struct { double mean, sd, mn, mx; } chan_stats;

static chan_stats stats(const float *x, int64_t n, int c, int ch) {
    chan_stats s = {0, 0, INFINITY, -INFINITY};
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i * c + ch];
        s1 += v;
        if (v < s.mn) s.mn = v;
        if (v > s.mx) s.mx = v;
    }
    s.mean = s1 / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i * c + ch] - s.mean;
        s2 += d * d;
    }
    s.sd = sqrt(s2 / (double)n);   /* numpy std: population */
    return s;
}

/* batchgenerators' factor for contrast and gamma: below 1 or above 1 with even odds */
static double split_factor(segc_rng *r, double lo, double hi) {
    if (coin(r, 0.5) && lo < 1) return unif(r, lo, 1);
    return unif(r, lo > 1 ? lo : 1, hi);
}

static void do_gamma(const segc_aug_gamma *t, segc_rng *r, segc_fimg *im) {
    int64_t n = (int64_t)im->h * im->w;
    int c = im->c;
    for (int ch = 0; ch < c; ch++) {
        float *x = im->x;
        if (t->invert)
            for (int64_t i = 0; i < n; i++) x[i * c + ch] = -x[i * c + ch];
        chan_stats s0 = stats(x, n, c, ch);
        double g = split_factor(r, t->lo, t->hi), rng = s0.mx - s0.mn;
        for (int64_t i = 0; i < n; i++)
            x[i * c + ch] = (float)(pow((x[i * c + ch] - s0.mn) / (rng + 1e-7), g) * rng + s0.mn);
        chan_stats s1 = stats(x, n, c, ch);   /* retain_stats: back to the old mean and std */
        for (int64_t i = 0; i < n; i++)
            x[i * c + ch] = (float)((x[i * c + ch] - s1.mean) / (s1.sd + 1e-8) * s0.sd + s0.mean);
        if (t->invert)
            for (int64_t i = 0; i < n; i++) x[i * c + ch] = -x[i * c + ch];
    }
}

static void flip_rows(void *p, int h, size_t row_bytes, uint8_t *tmp) {
    uint8_t *b = p;
    for (int y = 0; y < h / 2; y++) {
        memcpy(tmp, b + (size_t)y * row_bytes, row_bytes);
        memcpy(b + (size_t)y * row_bytes, b + (size_t)(h - 1 - y) * row_bytes, row_bytes);
        memcpy(b + (size_t)(h - 1 - y) * row_bytes, tmp, row_bytes);
    }
}

static void flip_cols(void *p, int h, int w, size_t px_bytes) {
    uint8_t *b = p, t[64 * sizeof(float)];
    for (int y = 0; y < h; y++) {
        uint8_t *row = b + (size_t)y * w * px_bytes;
        for (int x = 0; x < w / 2; x++) {
            memcpy(t, row + (size_t)x * px_bytes, px_bytes);
            memcpy(row + (size_t)x * px_bytes, row + (size_t)(w - 1 - x) * px_bytes, px_bytes);
            memcpy(row + (size_t)(w - 1 - x) * px_bytes, t, px_bytes);
        }
    }
}

/* channel ch of an h x w HWC image down to dh x dw (nearest, half-pixel
 * centres) and back up (bilinear, half-pixel centres, edges clamped) */
static void low_res_channel(float *x, int h, int w, int c, int ch, int dh, int dw, float *small) {
    for (int y = 0; y < dh; y++) {
        int sy = (int)((y + 0.5) * h / dh);
        if (sy > h - 1) sy = h - 1;
        for (int xx = 0; xx < dw; xx++) {
            int sx = (int)((xx + 0.5) * w / dw);
            if (sx > w - 1) sx = w - 1;
            small[y * dw + xx] = x[((size_t)sy * w + sx) * c + ch];
        }
    }
    for (int y = 0; y < h; y++) {
        double fy = (y + 0.5) * dh / h - 0.5;
        fy = fy < 0 ? 0 : fy > dh - 1 ? dh - 1 : fy;
        int y0 = (int)fy, y1 = y0 + 1 < dh ? y0 + 1 : y0;
        double ay = fy - y0;
        for (int xx = 0; xx < w; xx++) {
            double fx = (xx + 0.5) * dw / w - 0.5;
            fx = fx < 0 ? 0 : fx > dw - 1 ? dw - 1 : fx;
            int x0 = (int)fx, x1 = x0 + 1 < dw ? x0 + 1 : x0;
            double ax = fx - x0;
            double v = (1 - ay) * ((1 - ax) * small[y0 * dw + x0] + ax * small[y0 * dw + x1]) +
                       ay * ((1 - ax) * small[y1 * dw + x0] + ax * small[y1 * dw + x1]);
            x[((size_t)y * w + xx) * c + ch] = (float)v;
        }
    }
}

bool segc_nn_apply(const segc_aug_transform *t, segc_rng *r, segc_arena *ar, segc_fimg *im, char *err,
                   size_t errlen) {
    int64_t n = (int64_t)im->h * im->w;
    int c = im->c;
    float *x = im->x;
    switch (t->kind) {
    case SEGC_AUG_FG_CROP: do_fg_crop(&t->p.fg_crop, r, ar, im); break;
    case SEGC_AUG_SPATIAL: do_spatial(&t->p.spatial, r, ar, im); break;
    case SEGC_AUG_NOISE: {
        const segc_aug_noise *q = &t->p.noise;
        if (!coin(r, q->prob)) break;
        double sd = q->var_lo == q->var_hi ? q->var_lo : unif(r, q->var_lo, q->var_hi);
        float *z = segc_arena_alloc(ar, sizeof(float) * (size_t)(n * c > 0 ? n * c : 1));
        segc_rng_fill_normal(r, z, n * c, 0.f, (float)sd);
        for (int64_t i = 0; i < n * c; i++) x[i] += z[i];
        break;
    }
    case SEGC_AUG_BLUR: {
        const segc_aug_blur *b = &t->p.blur;
        if (!coin(r, b->prob)) break;
        float *tmp = segc_arena_alloc(ar, sizeof(float) * (size_t)(im->h > im->w ? im->h : im->w));
        for (int ch = 0; ch < c; ch++)
            if (coin(r, b->p_per_channel))
                segc_gaussian_blur_f32(x, im->h, im->w, c, ch, unif(r, b->sigma_lo, b->sigma_hi), tmp);
        break;
    }
    case SEGC_AUG_BRIGHTNESS: {
        const segc_aug_range *q = &t->p.brightness;
        if (!coin(r, q->prob)) break;
        for (int ch = 0; ch < c; ch++) {
            float m = (float)unif(r, q->lo, q->hi);
            for (int64_t i = 0; i < n; i++) x[i * c + ch] *= m;
        }
        break;
    }
    case SEGC_AUG_CONTRAST: {
        const segc_aug_range *q = &t->p.contrast;
        if (!coin(r, q->prob)) break;
        for (int ch = 0; ch < c; ch++) {
            double f = split_factor(r, q->lo, q->hi);
            chan_stats s = stats(x, n, c, ch);
            for (int64_t i = 0; i < n; i++) {
                double v = (x[i * c + ch] - s.mean) * f + s.mean;
                x[i * c + ch] = (float)(v < s.mn ? s.mn : v > s.mx ? s.mx : v);   /* preserve_range */
            }
        }
        break;
    }
    case SEGC_AUG_GAMMA:
        if (coin(r, t->p.gamma.prob)) do_gamma(&t->p.gamma, r, im);
        break;
    case SEGC_AUG_MIRROR: {
        bool fy = coin(r, t->p.mirror.prob_y), fx = coin(r, t->p.mirror.prob_x);
        size_t rb = sizeof(float) * (size_t)im->w * c;
        uint8_t *tmp = (fy ? segc_arena_alloc(ar, rb) : NULL);
        if (fy) {
            flip_rows(x, im->h, rb, tmp);
            if (im->lab) flip_rows(im->lab, im->h, (size_t)im->w, tmp);
        }
        if (fx) {
            flip_cols(x, im->h, im->w, sizeof(float) * c);
            if (im->lab) flip_cols(im->lab, im->h, im->w, 1);
            im->flipped = !im->flipped;
        }
        break;
    }
    case SEGC_AUG_LOW_RES: {
        const segc_aug_low_res *q = &t->p.low_res;
        if (!coin(r, q->prob)) break;
        float *small = NULL;
        for (int ch = 0; ch < c; ch++) {
            if (!coin(r, q->p_per_channel)) continue;
            double z = unif(r, q->zoom_lo, q->zoom_hi);
            int dh = (int)nearbyint(im->h * z), dw = (int)nearbyint(im->w * z);
            dh = dh < 1 ? 1 : dh, dw = dw < 1 ? 1 : dw;
            if (!small) small = segc_arena_alloc(ar, sizeof(float) * (size_t)n);   /* dh*dw <= h*w */
            low_res_channel(x, im->h, im->w, c, ch, dh, dw, small);
        }
        break;
    }
    default: BAD("augment: transform kind %d is not an nnU-Net transform", (int)t->kind);
    }
    return true;
}

void segc_pipeline_nnunet_2d(segc_pipeline *p, int patch_h, int patch_w, double fg_prob) {
    static const segc_aug_kind chain[] = {SEGC_AUG_FG_CROP, SEGC_AUG_SPATIAL,    SEGC_AUG_NOISE,
                                          SEGC_AUG_BLUR,    SEGC_AUG_BRIGHTNESS, SEGC_AUG_CONTRAST,
                                          SEGC_AUG_LOW_RES, SEGC_AUG_GAMMA,      SEGC_AUG_GAMMA,
                                          SEGC_AUG_MIRROR};
    bool first_gamma = true;
    p->n = 0;
    for (size_t k = 0; k < sizeof chain / sizeof *chain; k++) {
        segc_aug_transform t = segc_aug_default(chain[k]);
        if (chain[k] == SEGC_AUG_FG_CROP) {
            t.p.fg_crop.h = patch_h;
            t.p.fg_crop.w = patch_w;
            t.p.fg_crop.fg_prob = fg_prob;
        }
        if (chain[k] == SEGC_AUG_GAMMA && first_gamma) {   /* nnU-Net: inverted gamma p 0.1, then plain p 0.3 */
            t.p.gamma.invert = true;
            t.p.gamma.prob = 0.1;
            first_gamma = false;
        }
        p->t[p->n++] = t;
    }
}
