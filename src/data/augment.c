/* Pipeline description, random draws and the per-sample runner.
 *
 * The runner keeps the image (and label) as a source plus a *pending* resize
 * target, materialising only when a transform needs pixels: RandomResize
 * followed by RandomCrop then resizes just the crop window (the class-ratio
 * retries read the label through the nearest-neighbour index maps), which is
 * bitwise what resizing everything and cropping would give. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "augment_internal.h"

static const float IMAGENET_MEAN[3] = {123.675f, 116.28f, 103.53f};
static const float IMAGENET_STD[3] = {58.395f, 57.12f, 57.375f};

/* ---------------------------------------------------------------------------
 * Description
 * ------------------------------------------------------------------------- */
const char *segc_aug_kind_name(segc_aug_kind kind) {
    static const char *names[SEGC_AUG_NKINDS] = {"resize",       "random_resize", "random_crop",
                                                 "random_flip",  "photometric",   "expand",
                                                 "min_iou_crop", "normalize",     "pad",
                                                 "fg_crop",      "spatial",       "noise",
                                                 "blur",         "brightness",    "contrast",
                                                 "gamma",        "mirror",        "low_res"};
    return (unsigned)kind < SEGC_AUG_NKINDS ? names[kind] : "unknown";
}

segc_aug_transform segc_aug_default(segc_aug_kind kind) {
    segc_aug_transform t;
    memset(&t, 0, sizeof t);
    t.kind = kind;
    switch (kind) {
    case SEGC_AUG_RESIZE: t.p.resize = (segc_aug_resize){2048, 512, true, true}; break;
    case SEGC_AUG_RANDOM_RESIZE: t.p.random_resize = (segc_aug_random_resize){2048, 512, 0.5, 2.0, true}; break;
    case SEGC_AUG_RANDOM_CROP: t.p.random_crop = (segc_aug_random_crop){512, 512, 0.75, 255}; break;
    case SEGC_AUG_RANDOM_FLIP: t.p.random_flip.prob = 0.5; break;
    case SEGC_AUG_PHOTOMETRIC: t.p.photometric = (segc_aug_photometric){32, 0.5, 1.5, 0.5, 1.5, 18}; break;
    case SEGC_AUG_EXPAND:
        memcpy(t.p.expand.mean, IMAGENET_MEAN, sizeof IMAGENET_MEAN);
        t.p.expand.ratio_lo = 1.0;
        t.p.expand.ratio_hi = 4.0;
        t.p.expand.prob = 0.5;
        break;
    case SEGC_AUG_MIN_IOU_CROP: {
        static const float ious[5] = {0.1f, 0.3f, 0.5f, 0.7f, 0.9f};
        memcpy(t.p.min_iou_crop.min_ious, ious, sizeof ious);
        t.p.min_iou_crop.n_ious = 5;
        t.p.min_iou_crop.min_crop_size = 0.3;
        break;
    }
    case SEGC_AUG_NORMALIZE:
        memcpy(t.p.normalize.mean, IMAGENET_MEAN, sizeof IMAGENET_MEAN);
        memcpy(t.p.normalize.std, IMAGENET_STD, sizeof IMAGENET_STD);
        t.p.normalize.mean[3] = 0.f;
        t.p.normalize.std[3] = 1.f;
        t.p.normalize.to_rgb = true;
        break;
    case SEGC_AUG_PAD: t.p.pad = (segc_aug_pad){512, 512, 0.f, 255}; break;
    default: segc_nn_default(&t); break;
    }
    return t;
}

bool segc_pipeline_add(segc_pipeline *p, segc_aug_transform t, char *err, size_t errlen) {
    if (p->n >= SEGC_PIPELINE_MAX) {
        snprintf(err, errlen, "pipeline: too many transforms (at most %d), adding %s", SEGC_PIPELINE_MAX,
                 segc_aug_kind_name(t.kind));
        return false;
    }
    p->t[p->n++] = t;
    return true;
}

#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return false; } while (0)

static bool validate_one(const segc_aug_transform *t, int i, char *err, size_t errlen) {
    const char *nm = segc_aug_kind_name(t->kind);
    switch (t->kind) {
    case SEGC_AUG_RESIZE:
        if (t->p.resize.scale_w <= 0 || t->p.resize.scale_h <= 0)
            BAD("pipeline[%d] %s: scale expected > 0, found %dx%d", i, nm, t->p.resize.scale_w, t->p.resize.scale_h);
        break;
    case SEGC_AUG_RANDOM_RESIZE: {
        const segc_aug_random_resize *r = &t->p.random_resize;
        if (r->scale_w <= 0 || r->scale_h <= 0)
            BAD("pipeline[%d] %s: scale expected > 0, found %dx%d", i, nm, r->scale_w, r->scale_h);
        if (!(r->ratio_lo > 0 && r->ratio_lo <= r->ratio_hi))
            BAD("pipeline[%d] %s: ratio_range expected 0 < lo <= hi, found (%g, %g)", i, nm, r->ratio_lo,
                r->ratio_hi);
        break;
    }
    case SEGC_AUG_RANDOM_CROP: {
        const segc_aug_random_crop *c = &t->p.random_crop;
        if (c->crop_h <= 0 || c->crop_w <= 0)
            BAD("pipeline[%d] %s: crop_size expected > 0, found %dx%d", i, nm, c->crop_h, c->crop_w);
        if (!(c->cat_max_ratio > 0 && c->cat_max_ratio <= 1))
            BAD("pipeline[%d] %s: cat_max_ratio expected in (0, 1], found %g", i, nm, c->cat_max_ratio);
        break;
    }
    case SEGC_AUG_RANDOM_FLIP:
        if (!(t->p.random_flip.prob >= 0 && t->p.random_flip.prob <= 1))
            BAD("pipeline[%d] %s: prob expected in [0, 1], found %g", i, nm, t->p.random_flip.prob);
        break;
    case SEGC_AUG_PHOTOMETRIC: {
        const segc_aug_photometric *q = &t->p.photometric;
        if (q->brightness_delta < 0 || q->hue_delta < 0 || q->hue_delta > 180)
            BAD("pipeline[%d] %s: brightness_delta >= 0 and hue_delta in [0, 180] expected, found %d and %d", i, nm,
                q->brightness_delta, q->hue_delta);
        if (!(q->contrast_lo >= 0 && q->contrast_lo <= q->contrast_hi && q->saturation_lo >= 0 &&
              q->saturation_lo <= q->saturation_hi))
            BAD("pipeline[%d] %s: ranges expected 0 <= lo <= hi, found contrast (%g, %g) saturation (%g, %g)", i, nm,
                q->contrast_lo, q->contrast_hi, q->saturation_lo, q->saturation_hi);
        break;
    }
    case SEGC_AUG_EXPAND: {
        const segc_aug_expand *e = &t->p.expand;
        if (!(e->ratio_lo >= 1 && e->ratio_lo <= e->ratio_hi && e->ratio_hi <= 16))
            BAD("pipeline[%d] %s: ratio_range expected 1 <= lo <= hi <= 16, found (%g, %g)", i, nm, e->ratio_lo,
                e->ratio_hi);
        if (!(e->prob >= 0 && e->prob <= 1)) BAD("pipeline[%d] %s: prob expected in [0, 1], found %g", i, nm, e->prob);
        break;
    }
    case SEGC_AUG_MIN_IOU_CROP: {
        const segc_aug_min_iou_crop *m = &t->p.min_iou_crop;
        if (m->n_ious < 1 || m->n_ious > SEGC_AUG_MAX_IOUS)
            BAD("pipeline[%d] %s: min_ious count expected 1..%d, found %d", i, nm, SEGC_AUG_MAX_IOUS, m->n_ious);
        if (!(m->min_crop_size > 0 && m->min_crop_size <= 1))
            BAD("pipeline[%d] %s: min_crop_size expected in (0, 1], found %g", i, nm, m->min_crop_size);
        break;
    }
    case SEGC_AUG_NORMALIZE:
        for (int k = 0; k < 4; k++)
            if (t->p.normalize.std[k] == 0.f || !isfinite(t->p.normalize.std[k]))
                BAD("pipeline[%d] %s: std[%d] expected finite and non-zero, found %g", i, nm, k,
                    (double)t->p.normalize.std[k]);
        break;
    case SEGC_AUG_PAD:
        if (t->p.pad.h <= 0 || t->p.pad.w <= 0 || t->p.pad.seg_pad_val < 0 || t->p.pad.seg_pad_val > 255)
            BAD("pipeline[%d] %s: size > 0 and seg_pad_val in 0..255 expected, found %dx%d and %d", i, nm, t->p.pad.h,
                t->p.pad.w, t->p.pad.seg_pad_val);
        break;
    default:
        if (segc_nn_is_kind(t->kind)) return segc_nn_validate(t, i, nm, err, errlen);
        BAD("pipeline[%d]: unknown transform kind %d", i, (int)t->kind);
    }
    return true;
}

bool segc_pipeline_validate(const segc_pipeline *p, char *err, size_t errlen) {
    if (p->n < 0 || p->n > SEGC_PIPELINE_MAX) BAD("pipeline: %d transforms, expected 0..%d", p->n, SEGC_PIPELINE_MAX);
    for (int i = 0; i < p->n; i++)
        if (!validate_one(&p->t[i], i, err, errlen)) return false;
    return true;
}

static void add_quiet(segc_pipeline *p, segc_aug_transform t) {
    if (p->n < SEGC_PIPELINE_MAX) p->t[p->n++] = t;
}

void segc_pipeline_seg_train(segc_pipeline *p, int scale_w, int scale_h, double ratio_lo, double ratio_hi,
                             int crop_h, int crop_w, double cat_max_ratio) {
    p->n = 0;
    segc_aug_transform t = segc_aug_default(SEGC_AUG_RANDOM_RESIZE);
    t.p.random_resize = (segc_aug_random_resize){scale_w, scale_h, ratio_lo, ratio_hi, true};
    add_quiet(p, t);
    t = segc_aug_default(SEGC_AUG_RANDOM_CROP);
    t.p.random_crop = (segc_aug_random_crop){crop_h, crop_w, cat_max_ratio, 255};
    add_quiet(p, t);
    add_quiet(p, segc_aug_default(SEGC_AUG_RANDOM_FLIP));
    add_quiet(p, segc_aug_default(SEGC_AUG_PHOTOMETRIC));
    add_quiet(p, segc_aug_default(SEGC_AUG_NORMALIZE));
    t = segc_aug_default(SEGC_AUG_PAD);
    t.p.pad = (segc_aug_pad){crop_h, crop_w, 0.f, 255};
    add_quiet(p, t);
}

void segc_pipeline_seg_eval(segc_pipeline *p, int scale_w, int scale_h) {
    p->n = 0;
    segc_aug_transform t = segc_aug_default(SEGC_AUG_RESIZE);
    t.p.resize = (segc_aug_resize){scale_w, scale_h, true, false};
    add_quiet(p, t);
    add_quiet(p, segc_aug_default(SEGC_AUG_NORMALIZE));
}

static segc_aug_transform ssd_normalize(void) {
    segc_aug_transform t = segc_aug_default(SEGC_AUG_NORMALIZE);
    for (int k = 0; k < 4; k++) t.p.normalize.std[k] = 1.f;   /* mmdet ssd300: std 1 */
    return t;
}

void segc_pipeline_ssd_train(segc_pipeline *p, int size) {
    p->n = 0;
    add_quiet(p, segc_aug_default(SEGC_AUG_PHOTOMETRIC));
    add_quiet(p, segc_aug_default(SEGC_AUG_EXPAND));
    add_quiet(p, segc_aug_default(SEGC_AUG_MIN_IOU_CROP));
    segc_aug_transform t = segc_aug_default(SEGC_AUG_RESIZE);
    t.p.resize = (segc_aug_resize){size, size, false, true};
    add_quiet(p, t);
    add_quiet(p, segc_aug_default(SEGC_AUG_RANDOM_FLIP));
    add_quiet(p, ssd_normalize());
}

void segc_pipeline_ssd_eval(segc_pipeline *p, int size) {
    p->n = 0;
    segc_aug_transform t = segc_aug_default(SEGC_AUG_RESIZE);
    t.p.resize = (segc_aug_resize){size, size, false, true};
    add_quiet(p, t);
    add_quiet(p, ssd_normalize());
}

bool segc_pipeline_fixed_size(const segc_pipeline *p, int *h, int *w, bool *label_fixed) {
    bool fixed = false, lfixed = false;
    int fh = 0, fw = 0;
    for (int i = 0; i < p->n; i++) {
        const segc_aug_transform *t = &p->t[i];
        switch (t->kind) {
        case SEGC_AUG_RESIZE:
            fixed = !t->p.resize.keep_ratio;
            fh = t->p.resize.scale_h;
            fw = t->p.resize.scale_w;
            if (t->p.resize.resize_label) lfixed = fixed;
            break;
        case SEGC_AUG_RANDOM_RESIZE:
        case SEGC_AUG_RANDOM_CROP:
        case SEGC_AUG_EXPAND:
        case SEGC_AUG_MIN_IOU_CROP: fixed = lfixed = false; break;
        case SEGC_AUG_PAD:
            fixed = lfixed = true;
            fh = t->p.pad.h;
            fw = t->p.pad.w;
            break;
        case SEGC_AUG_FG_CROP:   /* pads a smaller slice: always exactly the patch */
            fixed = lfixed = true;
            fh = t->p.fg_crop.h;
            fw = t->p.fg_crop.w;
            break;
        default: break;
        }
    }
    if (h) *h = fh;
    if (w) *w = fw;
    if (label_fixed) *label_fixed = lfixed;
    return fixed;
}

/* ---------------------------------------------------------------------------
 * Random draws
 * ------------------------------------------------------------------------- */
static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t segc_aug_seed(uint64_t seed, int64_t epoch, int64_t index, int attempt) {
    uint64_t x = splitmix64(seed ^ 0x6a09e667f3bcc909ull);
    x = splitmix64(x ^ (uint64_t)epoch);
    x = splitmix64(x ^ (uint64_t)index);
    return splitmix64(x ^ (uint64_t)(uint32_t)attempt);
}

/* one Philox block per draw: draws stay aligned whatever came before */
static inline void draw_block(segc_rng *r, uint32_t o[4]) {
    uint64_t base = segc_rng_reserve(r, 4);
    segc_philox(r->seed, base >> 2, o);
}

double segc_aug_uniform(segc_rng *r, double lo, double hi) {
    /* 53 random bits, like numpy's random_sample */
    uint32_t o[4];
    draw_block(r, o);
    double u = (double)(((uint64_t)(o[0] >> 5) << 26) | (o[1] >> 6)) * (1.0 / 9007199254740992.0);
    return lo + (hi - lo) * u;
}

int segc_aug_randint(segc_rng *r, int lo, int hi) {
    if (hi <= lo) return lo;
    uint32_t o[4];
    draw_block(r, o);
    uint64_t n = (uint64_t)((int64_t)hi - lo);
    return lo + (int)(((uint64_t)o[0] * n) >> 32);
}

void segc_random_resize_draw(const segc_aug_random_resize *t, segc_rng *r, int *scale_w, int *scale_h) {
    double ratio = segc_aug_uniform(r, t->ratio_lo, t->ratio_hi);
    *scale_w = (int)((double)t->scale_w * ratio);
    *scale_h = (int)((double)t->scale_h * ratio);
}

void segc_crop_offset_draw(segc_rng *r, int h, int w, int crop_h, int crop_w, int *y0, int *x0) {
    int mh = h - crop_h > 0 ? h - crop_h : 0, mw = w - crop_w > 0 ? w - crop_w : 0;
    *y0 = segc_aug_randint(r, 0, mh + 1);
    *x0 = segc_aug_randint(r, 0, mw + 1);
}

bool segc_flip_draw(const segc_aug_random_flip *t, segc_rng *r) { return segc_aug_uniform(r, 0, 1) < t->prob; }

void segc_photometric_draw(const segc_aug_photometric *t, segc_rng *r, segc_photometric_params *pp) {
    memset(pp, 0, sizeof *pp);
    pp->do_brightness = segc_aug_randint(r, 0, 2);
    if (pp->do_brightness) pp->beta = (float)segc_aug_uniform(r, -t->brightness_delta, t->brightness_delta);
    pp->mode = segc_aug_randint(r, 0, 2);
    if (pp->mode == 1) {
        pp->do_contrast = segc_aug_randint(r, 0, 2);
        if (pp->do_contrast) pp->alpha = (float)segc_aug_uniform(r, t->contrast_lo, t->contrast_hi);
    }
    pp->do_saturation = segc_aug_randint(r, 0, 2);
    if (pp->do_saturation) pp->saturation = (float)segc_aug_uniform(r, t->saturation_lo, t->saturation_hi);
    pp->do_hue = segc_aug_randint(r, 0, 2);
    if (pp->do_hue) pp->hue = segc_aug_randint(r, -t->hue_delta, t->hue_delta);
    if (pp->mode == 0) {
        pp->do_contrast = segc_aug_randint(r, 0, 2);
        if (pp->do_contrast) pp->alpha = (float)segc_aug_uniform(r, t->contrast_lo, t->contrast_hi);
    }
}

bool segc_expand_draw(const segc_aug_expand *t, segc_rng *r, int h, int w, int *eh, int *ew, int *top, int *left) {
    if (segc_aug_uniform(r, 0, 1) > t->prob) return false;
    double ratio = segc_aug_uniform(r, t->ratio_lo, t->ratio_hi);
    *eh = (int)((double)h * ratio);
    *ew = (int)((double)w * ratio);
    *left = (int)segc_aug_uniform(r, 0, (double)w * ratio - w);
    *top = (int)segc_aug_uniform(r, 0, (double)h * ratio - h);
    if (*left + w > *ew) *left = *ew - w;   /* float rounding guard; cannot trigger for exact ratios */
    if (*top + h > *eh) *top = *eh - h;
    return true;
}

bool segc_min_iou_crop_draw(const segc_aug_min_iou_crop *t, segc_rng *r, int h, int w, const float *boxes, int n,
                            int patch[4]) {
    int n_modes = t->n_ious + 2;   /* mmdet: (1, *min_ious, 0); 1 keeps the image whole */
    float iou_buf[256];
    /* mmdet loops until it succeeds; the cap only guards degenerate images */
    for (int round = 0; round < 1000; round++) {
        int m = segc_aug_randint(r, 0, n_modes);
        if (m == 0) return false;
        float min_iou = m == n_modes - 1 ? 0.f : t->min_ious[m - 1];
        for (int it = 0; it < 50; it++) {
            double new_w = segc_aug_uniform(r, t->min_crop_size * w, w);
            double new_h = segc_aug_uniform(r, t->min_crop_size * h, h);
            if (new_h / new_w < 0.5 || new_h / new_w > 2) continue;
            /* mmdet calls random.uniform(w - new_w), i.e. low = w - new_w, high = 1 */
            double left = segc_aug_uniform(r, w - new_w, 1.0);
            double top = segc_aug_uniform(r, h - new_h, 1.0);
            int pt[4] = {(int)left, (int)top, (int)(left + new_w), (int)(top + new_h)};
            if (pt[2] == pt[0] || pt[3] == pt[1]) continue;
            if (pt[2] > w) pt[2] = w;
            if (pt[3] > h) pt[3] = h;
            if (n > 0) {
                float pf[4] = {(float)pt[0], (float)pt[1], (float)pt[2], (float)pt[3]};
                bool ok = true;
                for (int s = 0; s < n && ok; s += 256) {
                    int k = n - s < 256 ? n - s : 256;
                    segc_boxes_iou_patch(boxes + 4 * s, k, pf, iou_buf);
                    for (int q = 0; q < k; q++)
                        if (iou_buf[q] < min_iou) { ok = false; break; }
                }
                if (!ok) continue;
                if (!segc_boxes_any_centre_inside(boxes, n, pt)) continue;
            }
            memcpy(patch, pt, sizeof pt);
            return true;
        }
    }
    return false;
}
