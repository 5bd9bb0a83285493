/* Inference modes (whole / sliding window) and test-time augmentation with
 * mmseg's semantics, for any model given as a forward callback. */
#pragma GCC optimize("no-trapping-math")   /* lets GCC vectorise the exp/select loops */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "segc/augment.h"
#include "segc/infer.h"
#include "segc/ops.h"

void segc_infer_opts_default(segc_infer_opts *o) {
    memset(o, 0, sizeof *o);
    o->mode = SEGC_INFER_WHOLE;
    o->threshold = 0.3f;
}

bool segc_infer_opts_validate(const segc_infer_opts *o, char *err, size_t errlen) {
    if (o->mode != SEGC_INFER_WHOLE && o->mode != SEGC_INFER_SLIDE) {
        snprintf(err, errlen, "infer: mode must be whole or slide, found %d", (int)o->mode);
        return false;
    }
    if (o->mode == SEGC_INFER_SLIDE && (o->crop_h < 1 || o->crop_w < 1 || o->stride_h < 1 || o->stride_w < 1)) {
        snprintf(err, errlen, "infer: slide mode needs crop >= 1 and stride >= 1, found crop %dx%d stride %dx%d",
                 o->crop_h, o->crop_w, o->stride_h, o->stride_w);
        return false;
    }
    if (o->probs != 0 && o->probs != 1) {
        snprintf(err, errlen, "infer: probs must be softmax (0) or sigmoid (1), found %d", o->probs);
        return false;
    }
    if (o->n_ratios < 0 || o->n_ratios > SEGC_INFER_MAX_RATIOS) {
        snprintf(err, errlen, "infer: n_ratios must be in [0, %d], found %d", SEGC_INFER_MAX_RATIOS, o->n_ratios);
        return false;
    }
    for (int i = 0; i < o->n_ratios; i++) {
        if (!(o->ratios[i] > 0.f) || !isfinite(o->ratios[i])) {
            snprintf(err, errlen, "infer: TTA ratio %d must be finite and > 0, found %g", i, (double)o->ratios[i]);
            return false;
        }
    }
    return true;
}

int segc_infer_slide_windows(int h, int w, int crop_h, int crop_w, int stride_h, int stride_w, int *y1, int *y2,
                             int *x1, int *x2, int max) {
    if (h < 1 || w < 1 || crop_h < 1 || crop_w < 1 || stride_h < 1 || stride_w < 1) return 0;
    int h_grids = (h - crop_h + stride_h - 1 > 0 ? h - crop_h + stride_h - 1 : 0) / stride_h + 1;
    int w_grids = (w - crop_w + stride_w - 1 > 0 ? w - crop_w + stride_w - 1 : 0) / stride_w + 1;
    int n = 0;
    for (int hi = 0; hi < h_grids; hi++) {
        for (int wi = 0; wi < w_grids; wi++, n++) {
            if (n >= max) continue;
            int ya = hi * stride_h, xa = wi * stride_w;
            int yb = ya + crop_h < h ? ya + crop_h : h, xb = xa + crop_w < w ? xa + crop_w : w;
            ya = yb - crop_h > 0 ? yb - crop_h : 0;
            xa = xb - crop_w > 0 ? xb - crop_w : 0;
            if (y1) y1[n] = ya;
            if (y2) y2[n] = yb;
            if (x1) x1[n] = xa;
            if (x2) x2[n] = xb;
        }
    }
    return n;
}

void segc_infer_ratio_size(int h, int w, double ratio, int *nh, int *nw) {
    int sw = (int)((double)w * ratio + 0.5), sh = (int)((double)h * ratio + 0.5);
    if (sw < 1 || sh < 1) {   /* rescale_size would divide by a zero scale edge: report an empty image */
        *nh = sh, *nw = sw;
        return;
    }
    segc_rescale_size(h, w, sw, sh, nh, nw);
}

segc_tensor *segc_infer_image_tensor(segc_ctx *ctx, const segc_image *img, const float *mean, const float *std,
                                     segc_dtype dtype) {
    if (!img) return NULL;
    if (img->dtype != SEGC_U8 || (img->c != 1 && img->c != 3) || img->h < 1 || img->w < 1 || !img->data) {
        segc_set_error(ctx, "infer_image_tensor: expected a U8 image with 1 or 3 channels, found %s %dx%dx%d",
                       segc_dtype_name(img->dtype), img->h, img->w, img->c);
        return NULL;
    }
    if (dtype != SEGC_F32 && dtype != SEGC_BF16) {
        segc_set_error(ctx, "infer_image_tensor: dtype must be f32 or bf16, found %s", segc_dtype_name(dtype));
        return NULL;
    }
    int64_t shape[4] = {1, img->c, img->h, img->w};
    segc_tensor *t = segc_tensor_new(ctx, dtype, 4, shape);
    float *f = dtype == SEGC_F32 ? segc_f32(t)
                                 : segc_arena_alloc(&ctx->arena, (size_t)segc_numel(t) * sizeof(float));
    segc_normalize_chw(img->data, img->h, img->w, img->c, mean, std, false, f, img->h, img->w, 0.f);
    if (dtype == SEGC_BF16) segc_f32_to_bf16_n(f, segc_bf16p(t), segc_numel(t));
    return t;
}


/* ------------------------------------------------------------------------
 * Kernels. A "block" is up to PIX_BLOCK pixels of K channels, channel c of
 * pixel j at x[c * stride + j].
 * ---------------------------------------------------------------------- */
#define PIX_BLOCK 64

/* d = softmax over K (sigmoid for K == 1) of x, or d += it (accumulate).
 * x is scratch: it is overwritten with exp(x - max) on the way. */
static void softmax_block(float *x, int64_t xs, float *d, int64_t ds, int64_t k, int len, bool accumulate,
                          bool sigmoid) {
    if (k == 1 || sigmoid) {   /* independent channels: a sigmoid each */
        for (int64_t c = 0; c < k; c++) {
            const float *xc = x + c * xs;
            float *dc = d + c * ds;
            for (int j = 0; j < len; j++) {
                float s = 1.0f / (1.0f + segc_vexpf(-xc[j]));
                dc[j] = accumulate ? dc[j] + s : s;
            }
        }
        return;
    }
    float mx[PIX_BLOCK], inv[PIX_BLOCK];
    for (int j = 0; j < len; j++) mx[j] = x[j];
    for (int64_t c = 1; c < k; c++)
        for (int j = 0; j < len; j++) mx[j] = x[c * xs + j] > mx[j] ? x[c * xs + j] : mx[j];
    for (int j = 0; j < len; j++) inv[j] = 0.f;
    for (int64_t c = 0; c < k; c++) {
        float *xc = x + c * xs;
        for (int j = 0; j < len; j++) {
            xc[j] = segc_vexpf(xc[j] - mx[j]);
            inv[j] += xc[j];
        }
    }
    for (int j = 0; j < len; j++) inv[j] = 1.0f / inv[j];
    for (int64_t c = 0; c < k; c++) {
        const float *xc = x + c * xs;
        float *dc = d + c * ds;
        if (accumulate)
            for (int j = 0; j < len; j++) dc[j] += xc[j] * inv[j];
        else
            for (int j = 0; j < len; j++) dc[j] = xc[j] * inv[j];
    }
}

/* Label per pixel: argmax over K (first maximum wins, NaN counts as the
 * maximum like torch.argmax); K == 1: score > threshold, with the score the
 * sigmoid of x when x holds logits. */
static void argmax_block(const float *x, int64_t xs, uint8_t *lab, int64_t k, int len, bool logits,
                         float threshold) {
    if (k == 1) {
        for (int j = 0; j < len; j++) {
            float s = logits ? 1.0f / (1.0f + segc_vexpf(-x[j])) : x[j];
            lab[j] = s > threshold;
        }
        return;
    }
    float best[PIX_BLOCK];
    int32_t idx[PIX_BLOCK];   /* 32-bit lanes like best, so the select vectorises */
    for (int j = 0; j < len; j++) best[j] = x[j], idx[j] = 0;
    for (int32_t c = 1; c < (int32_t)k; c++) {
        const float *xc = x + c * xs;
        for (int j = 0; j < len; j++) {
            float v = xc[j], b = best[j];
            int take = (v > b) | ((v != v) & (b == b));
            best[j] = take ? v : b;
            idx[j] = take ? c : idx[j];
        }
    }
    for (int j = 0; j < len; j++) lab[j] = (uint8_t)idx[j];
}

/* Labels from averaged probabilities acc [N, K, P]. */
static void argmax_planes(const float *acc, uint8_t *lab, int64_t n, int64_t k, int64_t p, float threshold) {
    int64_t nblk = (p + PIX_BLOCK - 1) / PIX_BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n * nblk; t++) {
        int64_t img = t / nblk, p0 = (t % nblk) * PIX_BLOCK;
        int len = (int)(p - p0 < PIX_BLOCK ? p - p0 : PIX_BLOCK);
        argmax_block(acc + img * k * p + p0, p, lab + img * p + p0, k, len, false, threshold);
    }
}

/* Bilinear source taps of one axis (F.interpolate, align_corners=False, the
 * float arithmetic of segc_resize_bilinear). */
typedef struct axis_taps {
    int32_t *i0, *i1;
    float *w0, *w1;
} axis_taps;

static axis_taps taps_new(segc_ctx *ctx, int64_t in, int64_t out) {
    axis_taps t;
    t.i0 = segc_arena_alloc(&ctx->arena, (size_t)out * sizeof(int32_t));
    t.i1 = segc_arena_alloc(&ctx->arena, (size_t)out * sizeof(int32_t));
    t.w0 = segc_arena_alloc(&ctx->arena, (size_t)out * sizeof(float));
    t.w1 = segc_arena_alloc(&ctx->arena, (size_t)out * sizeof(float));
    const float scale = (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        int64_t i = o;
        float l = 0.f;
        if (in != out) {
            float src = scale * ((float)o + 0.5f) - 0.5f;
            if (src < 0) src = 0;
            i = (int64_t)floorf(src);
            if (i > in - 1) i = in - 1;
            l = src - (float)i;
            l = l < 0 ? 0 : l > 1 ? 1 : l;
        }
        t.i0[o] = (int32_t)i;
        t.i1[o] = (int32_t)(in != out && i < in - 1 ? i + 1 : i);
        t.w0[o] = 1.0f - l;
        t.w1[o] = l;
    }
    return t;
}

/* Mirror the taps: of the source (flip before resizing) or of the output (after). */
static void taps_flip(axis_taps *t, int64_t in, int64_t out, bool flip_src, bool flip_dst) {
    if (flip_src)
        for (int64_t o = 0; o < out; o++) t->i0[o] = (int32_t)(in - 1 - t->i0[o]), t->i1[o] = (int32_t)(in - 1 - t->i1[o]);
    if (flip_dst) {
        for (int64_t a = 0, b = out - 1; a < b; a++, b--) {
            int32_t ti = t->i0[a]; t->i0[a] = t->i0[b]; t->i0[b] = ti;
            ti = t->i1[a]; t->i1[a] = t->i1[b]; t->i1[b] = ti;
            float tw = t->w0[a]; t->w0[a] = t->w0[b]; t->w0[b] = tw;
            tw = t->w1[a]; t->w1[a] = t->w1[b]; t->w1[b] = tw;
        }
    }
}

/* What to make of logits once resized to the output size. */
typedef struct finish_spec {
    uint8_t *labels;   /* argmax of the logits (NULL: none) */
    float *probs;      /* softmax of the logits, stored or accumulated (NULL: none) */
    bool accumulate;
    bool sigmoid;      /* per-channel sigmoid instead of the softmax */
    float threshold;
} finish_spec;

/* resize(src [N, K, sh, sw]) to oh x ow, bilinear align_corners=False,
 * with src mirrored first (flip_src) or the result mirrored (flip_dst),
 * consumed row by row so the full-size logits never exist in memory. Each
 * thread takes a contiguous run of output rows and keeps the horizontally
 * interpolated source rows of all channels while consecutive output rows
 * read the same ones. */
static void finish_resized(segc_ctx *scratch, const float *src, int64_t n, int64_t k, int64_t sh, int64_t sw,
                           int64_t oh, int64_t ow, bool flip_src, bool flip_dst, const finish_spec *fs) {
    axis_taps ty = taps_new(scratch, sh, oh), tx = taps_new(scratch, sw, ow);
    taps_flip(&tx, sw, ow, flip_src, flip_dst);
    const int nthr = omp_get_max_threads();
    /* per thread: the output row and two interpolated source rows, K channels each */
    const int64_t per = 3 * k * ow;
    float *scratch_rows = segc_arena_alloc(&scratch->arena, (size_t)(nthr * per) * sizeof(float));
    const int64_t plane_in = sh * sw, plane_out = oh * ow, total = n * oh;
#pragma omp parallel num_threads(nthr)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float *row = scratch_rows + t * per, *ha = row + k * ow, *hb = ha + k * ow;
        int64_t id_a = -1, id_b = -1;   /* image * sh + source row held in ha / hb */
        const int64_t r0 = total * t / nt, r1 = total * (t + 1) / nt;
        for (int64_t r = r0; r < r1; r++) {
            const int64_t img = r / oh, y = r % oh;
            const int64_t want_a = img * sh + ty.i0[y], want_b = img * sh + ty.i1[y];
            if (want_a == id_b && want_a != id_a) {   /* moving down: the lower row becomes the upper one */
                float *tmp = ha; ha = hb; hb = tmp;
                id_a = id_b, id_b = -1;
            }
            for (int pass = 0; pass < 2; pass++) {
                const int64_t want = pass ? want_b : want_a;
                float *dst = pass ? hb : ha;
                if ((pass ? id_b : id_a) == want || (pass && want_b == want_a)) continue;
                const int64_t sy = want - img * sh;
                for (int64_t c = 0; c < k; c++) {
                    const float *s = src + (img * k + c) * plane_in + sy * sw;
                    float *o = dst + c * ow;
                    for (int64_t j = 0; j < ow; j++) o[j] = s[tx.i0[j]] * tx.w0[j] + s[tx.i1[j]] * tx.w1[j];
                }
                if (pass) id_b = want;
                else id_a = want;
            }
            const float wy0 = ty.w0[y], wy1 = ty.w1[y];
            const float *lower = want_b == want_a ? ha : hb;
            for (int64_t q = 0; q < k * ow; q++) row[q] = ha[q] * wy0 + lower[q] * wy1;
            for (int64_t j0 = 0; j0 < ow; j0 += PIX_BLOCK) {
                int len = (int)(ow - j0 < PIX_BLOCK ? ow - j0 : PIX_BLOCK);
                if (fs->labels) argmax_block(row + j0, ow, fs->labels + img * plane_out + y * ow + j0, k, len, true,
                                             fs->threshold);
                if (fs->probs) softmax_block(row + j0, ow, fs->probs + img * k * plane_out + y * ow + j0, plane_out,
                                             k, len, fs->accumulate, fs->sigmoid);
            }
        }
    }
}

/* dst rows = src rows mirrored (rows of w elements of size es). */
static void flip_rows(const void *src, void *dst, int64_t rows, int64_t w, size_t es) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        if (es == 4) {
            const float *s = (const float *)src + r * w;
            float *d = (float *)dst + r * w;
            for (int64_t j = 0; j < w; j++) d[j] = s[w - 1 - j];
        } else {
            const uint16_t *s = (const uint16_t *)src + r * w;
            uint16_t *d = (uint16_t *)dst + r * w;
            for (int64_t j = 0; j < w; j++) d[j] = s[w - 1 - j];
        }
    }
}

/* One axis of the map: scipy's kernel for sigma = n / 8 (radius
 * int(4 sigma + 0.5)) around n / 2, unnormalised (the max scaling divides
 * the kernel's normalisation out), 0 beyond the radius. */
static void gauss_axis(int n, double *g) {
    double sigma = n / 8.0;
    int c = n / 2, rad = (int)(4.0 * sigma + 0.5);
    for (int i = 0; i < n; i++) {
        int d = i - c;
        g[i] = abs(d) <= rad ? exp(-0.5 * d * d / (sigma * sigma)) : 0.0;
    }
}

void segc_infer_gaussian_map(int h, int w, float *out) {
    double gy[h > 0 ? h : 1], gx[w > 0 ? w : 1];
    gauss_axis(h, gy);
    gauss_axis(w, gx);
    float mn = INFINITY;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float v = (float)(gy[y] * gx[x]);
            out[(int64_t)y * w + x] = v;
            if (v > 0 && v < mn) mn = v;
        }
    for (int64_t q = 0; q < (int64_t)h * w; q++)
        if (out[q] == 0.f) out[q] = mn;
}

/* ------------------------------------------------------------------------
 * One inference run.
 * ---------------------------------------------------------------------- */
typedef struct infer_run {
    segc_ctx *ctx, *work;
    segc_forward_fn forward;
    void *model;
    const segc_infer_opts *o;
    int64_t n;
    int64_t k;               /* classes, 0 until the first forward */
    int64_t max_pixels;      /* largest h*w any pass of this run uses (slide buffers) */
    float *slide_sum;        /* ctx arena, n * k * max_pixels */
    float *slide_count;      /* ctx arena, max_pixels */
} infer_run;

/* Bring a failure inside work over to ctx (work is then clean for reuse). */
static void carry_error(infer_run *r, const char *what) {
    if (r->work != r->ctx && r->work->has_err) {
        segc_set_error(r->ctx, "infer: %s: %s", what, segc_last_error(r->work));
        segc_clear_error(r->work);
    } else if (!r->ctx->has_err) {
        segc_set_error(r->ctx, "infer: %s failed", what);
    }
}

static void begin_forward(infer_run *r) {
    if (r->work != r->ctx) segc_ctx_step_begin(r->work);
}

/* forward(x) checked and as f32 [N, K, h', w'] in work. */
static segc_tensor *run_forward(infer_run *r, segc_tensor *x) {
    segc_tensor *y = r->forward(r->work, r->model, x);
    if (!y) {
        carry_error(r, "forward");
        return NULL;
    }
    char b1[64], b2[64];
    if (y->ndim != 4 || y->shape[0] != r->n || y->shape[1] < 1 || (r->k && y->shape[1] != r->k) ||
        y->shape[2] < 1 || y->shape[3] < 1 || (y->dtype != SEGC_F32 && y->dtype != SEGC_BF16)) {
        segc_set_error(r->ctx, "infer: forward on images %s returned %s %s, expected f32/bf16 [%lld, %s, h, w]",
                       segc_shape_str(x, b1, sizeof b1), segc_dtype_name(y->dtype), segc_shape_str(y, b2, sizeof b2),
                       (long long)r->n, r->k ? "K" : "K >= 1");
        return NULL;
    }
    r->k = y->shape[1];
    if (y->dtype == SEGC_BF16) y = segc_tensor_wrap(r->work, SEGC_F32, 4, y->shape, segc_as_f32(r->work, y));
    return y;
}

/* t (f32 NCHW in work) at h x w: t itself when already that size. */
static segc_tensor *at_size(infer_run *r, segc_tensor *t, int64_t h, int64_t w) {
    if (t->shape[2] == h && t->shape[3] == w) return t;
    segc_tensor *y = segc_resize_bilinear(r->work, t, (int)h, (int)w, false);
    if (!y) carry_error(r, "resize");
    return y;
}

/* whole mode: the model's logits, resized to the input size when to_input */
static segc_tensor *whole_pass(infer_run *r, segc_tensor *x, bool to_input) {
    begin_forward(r);
    segc_tensor *y = run_forward(r, x);
    return y && to_input ? at_size(r, y, x->shape[2], x->shape[3]) : y;
}

static segc_tensor *slide_pass(infer_run *r, segc_tensor *x) {
    const segc_infer_opts *o = r->o;
    const int h = (int)x->shape[2], w = (int)x->shape[3];
    const int64_t c = x->shape[1], hw = (int64_t)h * w;
    int nwin = segc_infer_slide_windows(h, w, o->crop_h, o->crop_w, o->stride_h, o->stride_w, NULL, NULL, NULL,
                                        NULL, 0);
    int *win = segc_arena_alloc(&r->ctx->arena, (size_t)nwin * 4 * sizeof *win);
    segc_infer_slide_windows(h, w, o->crop_h, o->crop_w, o->stride_h, o->stride_w, win, win + nwin, win + 2 * nwin,
                             win + 3 * nwin, nwin);
    const size_t es = segc_dtype_size(x->dtype);
    float *sum = NULL, *count = r->slide_count;
    float *gmap = NULL;   /* Gaussian weights of the current window size */
    int gh = 0, gw = 0;
    for (int i = 0; i < nwin; i++) {
        const int y1 = win[i], y2 = win[nwin + i], x1 = win[2 * nwin + i], x2 = win[3 * nwin + i];
        const int ch = y2 - y1, cw = x2 - x1;
        begin_forward(r);
        int64_t cshape[4] = {r->n, c, ch, cw};
        segc_tensor *crop = segc_tensor_new(r->work, x->dtype, 4, cshape);
        const unsigned char *src = x->data;
        unsigned char *dst = crop->data;
#pragma omp parallel for schedule(static)
        for (int64_t row = 0; row < r->n * c * ch; row++) {
            int64_t plane = row / ch, yy = row % ch;
            memcpy(dst + (size_t)row * cw * es, src + ((size_t)(plane * h + y1 + yy) * w + x1) * es, (size_t)cw * es);
        }
        segc_tensor *y = run_forward(r, crop);
        if (y) y = at_size(r, y, ch, cw);
        if (!y) return NULL;
        if (!sum) {   /* first window: the class count is known now */
            if (!r->slide_sum) {
                r->slide_sum = segc_arena_alloc(&r->ctx->arena, (size_t)(r->n * r->k * r->max_pixels) * sizeof(float));
                r->slide_count = segc_arena_alloc(&r->ctx->arena, (size_t)r->max_pixels * sizeof(float));
            }
            sum = r->slide_sum;
            count = r->slide_count;
            memset(sum, 0, (size_t)(r->n * r->k * hw) * sizeof(float));
            memset(count, 0, (size_t)hw * sizeof(float));
        }
        const float *yl = segc_f32(y);
        const int64_t planes = r->n * r->k;
        if (o->gaussian && (gh != ch || gw != cw)) {   /* windows clamped to a small image are smaller */
            gmap = segc_arena_alloc(&r->ctx->arena, (size_t)ch * cw * sizeof(float));
            segc_infer_gaussian_map(ch, cw, gmap);
            gh = ch, gw = cw;
        }
        const float *gm = o->gaussian ? gmap : NULL;
#pragma omp parallel for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            for (int yy = 0; yy < ch; yy++) {
                float *d = sum + pl * hw + (int64_t)(y1 + yy) * w + x1;
                const float *s = yl + (pl * ch + yy) * cw;
                if (gm)
                    for (int xx = 0; xx < cw; xx++) d[xx] += s[xx] * gm[(int64_t)yy * cw + xx];
                else
                    for (int xx = 0; xx < cw; xx++) d[xx] += s[xx];
            }
        }
        for (int yy = y1; yy < y2; yy++)
            for (int xx = x1; xx < x2; xx++) count[(int64_t)yy * w + xx] += gm ? gm[(int64_t)(yy - y1) * cw + xx - x1] : 1.0f;
    }
    const int64_t planes = r->n * r->k;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        float *d = sum + pl * hw;
        for (int64_t q = 0; q < hw; q++) d[q] /= count[q];
    }
    int64_t shape[4] = {r->n, r->k, h, w};
    return segc_tensor_wrap(r->ctx, SEGC_F32, 4, shape, sum);
}

/* Logits of one pass of the mode: at the input size, except that whole mode
 * leaves them at the model's resolution unless to_input. */
static segc_tensor *mode_pass(infer_run *r, segc_tensor *x, bool to_input) {
    return r->o->mode == SEGC_INFER_SLIDE ? slide_pass(r, x) : whole_pass(r, x, to_input);
}

static bool check_images(segc_ctx *ctx, const char *op, segc_tensor *images, const segc_infer_opts *o) {
    char b[64];
    if (!segc_check_float(ctx, op, "images", images)) return false;
    if (images->ndim != 4 || images->shape[0] < 1 || images->shape[1] < 1 || images->shape[2] < 1 ||
        images->shape[3] < 1) {
        segc_set_error(ctx, "%s: images must be non-empty [N, C, H, W], found %s", op,
                       segc_shape_str(images, b, sizeof b));
        return false;
    }
    char err[256];
    if (!o) {
        segc_set_error(ctx, "%s: options missing", op);
        return false;
    }
    if (!segc_infer_opts_validate(o, err, sizeof err)) {
        segc_set_error(ctx, "%s", err);
        return false;
    }
    return true;
}

typedef struct saved_flags {
    bool ctx_grad, ctx_train, work_grad, work_train;
} saved_flags;

static saved_flags enter_eval(segc_ctx *ctx, segc_ctx *work) {
    saved_flags s = {ctx->grad_enabled, ctx->training, work->grad_enabled, work->training};
    ctx->grad_enabled = work->grad_enabled = false;
    ctx->training = work->training = false;
    return s;
}

static void leave_eval(segc_ctx *ctx, segc_ctx *work, saved_flags s) {
    work->grad_enabled = s.work_grad;
    work->training = s.work_train;
    ctx->grad_enabled = s.ctx_grad;
    ctx->training = s.ctx_train;
}

segc_tensor *segc_infer_logits(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model,
                               segc_tensor *images, const segc_infer_opts *o) {
    if (!images || !forward) return NULL;
    if (!check_images(ctx, "infer", images, o)) return NULL;
    if (!work) work = ctx;
    saved_flags fl = enter_eval(ctx, work);
    infer_run r = {.ctx = ctx, .work = work, .forward = forward, .model = model, .o = o, .n = images->shape[0],
                   .max_pixels = images->shape[2] * images->shape[3]};
    segc_tensor *y = mode_pass(&r, images, true);
    if (y && o->mode == SEGC_INFER_WHOLE && work != ctx) {   /* the result must outlive work's next step */
        segc_tensor *c = segc_tensor_new(ctx, SEGC_F32, 4, y->shape);
        memcpy(c->data, y->data, segc_nbytes(y));
        y = c;
    }
    leave_eval(ctx, work, fl);
    return y;
}

/* segc_infer and segc_infer_probs: labels (want_labels) and/or probs. On
 * success returns the labels, or (labels not wanted) *probs. */
static segc_tensor *infer_impl(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model,
                               segc_tensor *images, int out_h, int out_w, const segc_infer_opts *o, bool want_labels,
                               segc_tensor **probs) {
    if (probs) *probs = NULL;
    if (!images || !forward) return NULL;
    if (!check_images(ctx, "infer", images, o)) return NULL;
    if (out_h < 0 || out_w < 0) {
        segc_set_error(ctx, "infer: output size must be >= 0 (0 = input size), found %dx%d", out_h, out_w);
        return NULL;
    }
    const int64_t n = images->shape[0], h = images->shape[2], w = images->shape[3];
    const int64_t oh = out_h ? out_h : h, ow = out_w ? out_w : w;
    const int n_scales = o->n_ratios ? o->n_ratios : 1;
    const int n_aug = n_scales * (o->flip ? 2 : 1);
    int64_t rh[SEGC_INFER_MAX_RATIOS], rw[SEGC_INFER_MAX_RATIOS], max_pixels = 0;
    for (int s = 0; s < n_scales; s++) {
        int nh = (int)h, nw = (int)w;
        if (o->n_ratios) segc_infer_ratio_size((int)h, (int)w, o->ratios[s], &nh, &nw);
        if (nh < 1 || nw < 1) {
            segc_set_error(ctx, "infer: TTA ratio %g turns a %lldx%lld image into %dx%d", (double)o->ratios[s],
                           (long long)h, (long long)w, nh, nw);
            return NULL;
        }
        rh[s] = nh, rw[s] = nw;
        if ((int64_t)nh * nw > max_pixels) max_pixels = (int64_t)nh * nw;
    }
    if (!work) work = ctx;
    saved_flags fl = enter_eval(ctx, work);
    infer_run r = {.ctx = ctx, .work = work, .forward = forward, .model = model, .o = o, .n = n,
                   .max_pixels = max_pixels};
    int64_t lshape[3] = {n, oh, ow};
    segc_tensor *labels = want_labels ? segc_tensor_new(ctx, SEGC_U8, 3, lshape) : NULL;
    bool ok = want_labels ? labels != NULL : true;
    float *acc = NULL;   /* summed probabilities over augmentations */
    for (int s = 0; s < n_scales && ok; s++) {
        segc_tensor *img = images;
        if (rh[s] != h || rw[s] != w) {
            img = segc_resize_bilinear(ctx, images, (int)rh[s], (int)rw[s], false);
            if (!img) { ok = false; break; }
        }
        for (int f = 0; f < (o->flip ? 2 : 1); f++) {
            segc_tensor *in = img;
            if (f) {
                in = segc_tensor_like(ctx, img);
                flip_rows(img->data, in->data, n * img->shape[1] * rh[s], rw[s], segc_dtype_size(img->dtype));
            }
            segc_tensor *y = mode_pass(&r, in, false);
            if (y && want_labels && r.k > 255) {
                segc_set_error(ctx, "infer: %lld classes do not fit a u8 label map (at most 255)", (long long)r.k);
                y = NULL;
            }
            /* mmseg: logits resized to the pass's input (rh x rw), flipped back, resized to the output.
             * When the pass input already has the output size that is one resize followed by the flip;
             * otherwise the first resize (whole mode only) is done here and the flip goes before the
             * second. Either way the last resize streams into the argmax / softmax. */
            bool flip_src = false, flip_dst = false;
            if (y && rh[s] == oh && rw[s] == ow) {
                flip_dst = f;
            } else if (y) {
                y = at_size(&r, y, rh[s], rw[s]);
                flip_src = f;
            }
            if (!y) { ok = false; break; }
            finish_spec fs = {.threshold = o->threshold, .sigmoid = o->probs == 1};
            if (n_aug == 1) {
                fs.labels = labels ? labels->data : NULL;
                if (probs) {
                    int64_t pshape[4] = {n, r.k, oh, ow};
                    *probs = segc_tensor_new(ctx, SEGC_F32, 4, pshape);
                    fs.probs = segc_f32(*probs);
                }
            } else {
                if (!acc) acc = segc_arena_calloc(&ctx->arena, (size_t)(n * r.k * oh * ow) * sizeof(float));
                fs.probs = acc;
                fs.accumulate = true;
            }
            finish_resized(work, segc_f32(y), n, r.k, y->shape[2], y->shape[3], oh, ow, flip_src, flip_dst, &fs);
        }
    }
    if (ok && n_aug > 1) {
        const int64_t total = n * r.k * oh * ow;
        const float div = (float)n_aug;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < total; i++) acc[i] /= div;
        if (labels) argmax_planes(acc, labels->data, n, r.k, oh * ow, o->threshold);
        if (probs) {
            int64_t pshape[4] = {n, r.k, oh, ow};
            *probs = segc_tensor_wrap(ctx, SEGC_F32, 4, pshape, acc);
        }
    }
    if (!ok && probs) *probs = NULL;
    leave_eval(ctx, work, fl);
    if (!ok) return NULL;
    return want_labels ? labels : *probs;
}

segc_tensor *segc_infer(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, segc_tensor *images,
                        int out_h, int out_w, const segc_infer_opts *o, segc_tensor **probs) {
    return infer_impl(ctx, work, forward, model, images, out_h, out_w, o, true, probs);
}

segc_tensor *segc_infer_probs(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model,
                              segc_tensor *images, int out_h, int out_w, const segc_infer_opts *o) {
    segc_tensor *probs = NULL;
    return infer_impl(ctx, work, forward, model, images, out_h, out_w, o, false, &probs);
}
