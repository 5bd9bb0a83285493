/* segc_pipeline_run: applies a pipeline to one sample.
 *
 * Resizes are lazy: a resize only records the target size; the next
 * transform that needs pixels materialises it, and the crops materialise just
 * their window straight from the unresized source (the cat_max_ratio retries
 * read the label through the nearest-neighbour index maps). Every output
 * pixel depends only on its own coordinates, so this equals resize-then-crop
 * bit for bit while resizing a fraction of the pixels. */
#include <stdio.h>
#include <string.h>

#include "augment_internal.h"

typedef struct {
    segc_arena *ar;
    const uint8_t *img;     /* source pixels (input sample or arena) */
    int h, w, c;
    bool img_owned;         /* writable arena copy */
    bool img_pending;       /* logical image = source resized to ph x pw */
    int ph, pw;
    const uint8_t *lab;     /* NULL when the sample has no label */
    int lh, lw;
    bool lab_owned, lab_pending;
    int lph, lpw;
    int n;
    float *boxes;
    int32_t *box_labels;
    uint8_t *box_crowd;
    float *f;               /* float image (F32 input or after an nnU-Net transform); img unused then */
} run_t;

static int img_h(const run_t *r) { return r->img_pending ? r->ph : r->h; }
static int img_w(const run_t *r) { return r->img_pending ? r->pw : r->w; }
static int lab_h(const run_t *r) { return r->lab_pending ? r->lph : r->lh; }
static int lab_w(const run_t *r) { return r->lab_pending ? r->lpw : r->lw; }

static void *arena_bytes(run_t *r, size_t n) { return segc_arena_alloc(r->ar, n ? n : 1); }

static void materialize_img(run_t *r) {
    if (!r->img_pending) return;
    uint8_t *d = arena_bytes(r, (size_t)r->ph * r->pw * r->c);
    segc_resize_bilinear_u8(r->img, r->h, r->w, r->c, r->ph, r->pw, 0, 0, r->ph, r->pw, d, r->ar);
    r->img = d;
    r->h = r->ph;
    r->w = r->pw;
    r->img_owned = true;
    r->img_pending = false;
}

static void materialize_lab(run_t *r) {
    if (!r->lab || !r->lab_pending) return;
    uint8_t *d = arena_bytes(r, (size_t)r->lph * r->lpw);
    segc_resize_nearest_u8(r->lab, r->lh, r->lw, 1, r->lph, r->lpw, 0, 0, r->lph, r->lpw, d, r->ar);
    r->lab = d;
    r->lh = r->lph;
    r->lw = r->lpw;
    r->lab_owned = true;
    r->lab_pending = false;
}

static uint8_t *own_img(run_t *r) {
    materialize_img(r);
    if (!r->img_owned) {
        size_t n = (size_t)r->h * r->w * r->c;
        uint8_t *d = arena_bytes(r, n);
        memcpy(d, r->img, n);
        r->img = d;
        r->img_owned = true;
    }
    return (uint8_t *)r->img;
}

static uint8_t *own_lab(run_t *r) {
    materialize_lab(r);
    if (!r->lab_owned) {
        size_t n = (size_t)r->lh * r->lw;
        uint8_t *d = arena_bytes(r, n);
        memcpy(d, r->lab, n);
        r->lab = d;
        r->lab_owned = true;
    }
    return (uint8_t *)r->lab;
}

/* Window rows y0..y0+oh-1, cols x0..x0+ow-1 of the logical image / label. */
static void window_img(run_t *r, int y0, int x0, int oh, int ow) {
    uint8_t *d = arena_bytes(r, (size_t)oh * ow * r->c);
    if (r->img_pending) {
        segc_resize_bilinear_u8(r->img, r->h, r->w, r->c, r->ph, r->pw, y0, x0, oh, ow, d, r->ar);
    } else {
        int hh, ww;
        segc_crop_u8(r->img, r->h, r->w, r->c, y0, x0, oh, ow, d, &hh, &ww);
    }
    r->img = d;
    r->h = oh;
    r->w = ow;
    r->img_owned = true;
    r->img_pending = false;
}

static void window_lab(run_t *r, int y0, int x0, int oh, int ow) {
    if (!r->lab) return;
    uint8_t *d = arena_bytes(r, (size_t)oh * ow);
    if (r->lab_pending) {
        segc_resize_nearest_u8(r->lab, r->lh, r->lw, 1, r->lph, r->lpw, y0, x0, oh, ow, d, r->ar);
    } else {
        int hh, ww;
        segc_crop_u8(r->lab, r->lh, r->lw, 1, y0, x0, oh, ow, d, &hh, &ww);
    }
    r->lab = d;
    r->lh = oh;
    r->lw = ow;
    r->lab_owned = true;
    r->lab_pending = false;
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return false; } while (0)

/* nnU-Net transforms: the image as floats (U8 converted once, values kept),
 * the label materialised and writable, then the transform itself */
static bool do_nnunet(run_t *r, const segc_aug_transform *t, segc_rng *rng, bool *flipped, char *err, size_t errlen) {
    const char *nm = segc_aug_kind_name(t->kind);
    if (r->n > 0) FAIL("augment: %s: detection samples (boxes) are not supported", nm);
    if (!r->f) {
        materialize_img(r);
        size_t n = (size_t)r->h * r->w * r->c;
        r->f = arena_bytes(r, n * sizeof(float));
        for (size_t i = 0; i < n; i++) r->f[i] = r->img[i];
        r->img = NULL;
    }
    if (r->lab) {
        own_lab(r);
        if (r->lh != r->h || r->lw != r->w)
            FAIL("augment: %s: label %dx%d differs from image %dx%d", nm, r->lh, r->lw, r->h, r->w);
    }
    segc_fimg im = {r->f, r->h, r->w, r->c, (uint8_t *)r->lab, *flipped};
    if (!segc_nn_apply(t, rng, r->ar, &im, err, errlen)) return false;
    r->f = im.x;
    r->h = im.h;
    r->w = im.w;
    if (r->lab) {
        r->lab = im.lab;
        r->lh = im.h;
        r->lw = im.w;
        r->lab_owned = true;
    }
    *flipped = im.flipped;
    return true;
}

static bool do_resize(run_t *r, int scale_w, int scale_h, bool keep_ratio, bool resize_label, const char *nm,
                      char *err, size_t errlen) {
    int H = img_h(r), W = img_w(r), nh, nw;
    if (keep_ratio) segc_rescale_size(H, W, scale_w, scale_h, &nh, &nw);
    else nh = scale_h, nw = scale_w;
    if (nh < 1 || nw < 1) FAIL("augment: %s: %dx%d image would shrink to %dx%d", nm, H, W, nh, nw);
    materialize_img(r);   /* two resizes in a row compose pixel-wise, not as one */
    if (nh != r->h || nw != r->w) {
        r->img_pending = true;
        r->ph = nh;
        r->pw = nw;
    }
    if (r->lab && resize_label) {
        materialize_lab(r);
        int lnh = nh, lnw = nw;
        if (r->lh != H || r->lw != W) {   /* a label kept at another size rescales on its own */
            if (keep_ratio) segc_rescale_size(r->lh, r->lw, scale_w, scale_h, &lnh, &lnw);
        }
        if (lnh != r->lh || lnw != r->lw) {
            r->lab_pending = true;
            r->lph = lnh;
            r->lpw = lnw;
        }
    }
    if (r->n > 0) segc_boxes_rescale(r->boxes, r->n, (float)((double)nw / W), (float)((double)nh / H), nw, nh);
    return true;
}

static bool do_random_crop(run_t *r, const segc_aug_random_crop *t, segc_rng *rng, char *err, size_t errlen) {
    int H = img_h(r), W = img_w(r);
    if (r->lab && (lab_h(r) != H || lab_w(r) != W))
        FAIL("augment: random_crop: label %dx%d differs from image %dx%d", lab_h(r), lab_w(r), H, W);
    int y0, x0;
    segc_crop_offset_draw(rng, H, W, t->crop_h, t->crop_w, &y0, &x0);
    if (t->cat_max_ratio < 1.0 && r->lab) {
        const int *ym = NULL, *xm = NULL;
        if (r->lab_pending) {
            int *a = arena_bytes(r, sizeof(int) * (size_t)H), *b = arena_bytes(r, sizeof(int) * (size_t)W);
            segc_nearest_map(r->lh, H, 0, H, a);
            segc_nearest_map(r->lw, W, 0, W, b);
            ym = a;
            xm = b;
        }
        for (int k = 0; k < 10; k++) {
            int oh = (y0 + t->crop_h < H ? y0 + t->crop_h : H) - y0;
            int ow = (x0 + t->crop_w < W ? x0 + t->crop_w : W) - x0;
            if (segc_crop_class_ok_mapped(r->lab, r->lw, ym, xm, y0, x0, oh, ow, t->cat_max_ratio,
                                          t->ignore_index))
                break;
            segc_crop_offset_draw(rng, H, W, t->crop_h, t->crop_w, &y0, &x0);
        }
    }
    int oh = (y0 + t->crop_h < H ? y0 + t->crop_h : H) - y0, ow = (x0 + t->crop_w < W ? x0 + t->crop_w : W) - x0;
    window_img(r, y0, x0, oh, ow);
    window_lab(r, y0, x0, oh, ow);
    if (r->n > 0) {
        int patch[4] = {x0, y0, x0 + ow, y0 + oh};
        r->n = segc_boxes_crop(r->boxes, r->box_labels, r->box_crowd, r->n, patch);
    }
    return true;
}

static bool do_expand(run_t *r, const segc_aug_expand *t, segc_rng *rng) {
    int H = img_h(r), W = img_w(r), eh, ew, top, left;
    if (!segc_expand_draw(t, rng, H, W, &eh, &ew, &top, &left)) return true;
    materialize_img(r);
    materialize_lab(r);
    uint8_t fill[4];
    for (int k = 0; k < r->c && k < 4; k++) {
        float m = t->mean[k < 3 ? k : 2];
        fill[k] = (uint8_t)(m < 0 ? 0 : m > 255 ? 255 : m);   /* numpy full(..., dtype=uint8) truncates */
    }
    uint8_t *d = arena_bytes(r, (size_t)eh * ew * r->c);
    segc_expand_u8(r->img, r->h, r->w, r->c, fill, eh, ew, top, left, d);
    r->img = d;
    r->h = eh;
    r->w = ew;
    r->img_owned = true;
    if (r->lab && r->lh == H && r->lw == W) {
        uint8_t ign = 255;
        uint8_t *l = arena_bytes(r, (size_t)eh * ew);
        segc_expand_u8(r->lab, r->lh, r->lw, 1, &ign, eh, ew, top, left, l);
        r->lab = l;
        r->lh = eh;
        r->lw = ew;
        r->lab_owned = true;
    }
    if (r->n > 0) segc_boxes_translate(r->boxes, r->n, (float)left, (float)top);
    return true;
}

static void do_min_iou_crop(run_t *r, const segc_aug_min_iou_crop *t, segc_rng *rng) {
    int H = img_h(r), W = img_w(r), patch[4];
    if (!segc_min_iou_crop_draw(t, rng, H, W, r->boxes, r->n, patch)) return;
    int oh = patch[3] - patch[1], ow = patch[2] - patch[0];
    bool lab_same = r->lab && lab_h(r) == H && lab_w(r) == W;
    window_img(r, patch[1], patch[0], oh, ow);
    if (lab_same) window_lab(r, patch[1], patch[0], oh, ow);
    if (r->n > 0) r->n = segc_boxes_crop(r->boxes, r->box_labels, r->box_crowd, r->n, patch);
}

bool segc_pipeline_run(const segc_pipeline *p, const segc_sample *in, uint64_t seed, segc_arena *scratch,
                       segc_aug_state *st, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    const segc_image *im = &in->img;
    bool f32 = im->dtype == SEGC_F32;
    if (!im->data || !(im->dtype == SEGC_U8 || f32) || im->c < 1 || im->c > (f32 ? SEGC_AUG_MAX_F32_CHANNELS : 4) ||
        im->h < 1 || im->w < 1)
        FAIL("augment: image expected U8 with 1..4 channels or F32 with 1..%d, found %s %dx%dx%d%s",
             SEGC_AUG_MAX_F32_CHANNELS, segc_dtype_name(im->dtype), im->h, im->w, im->c, im->data ? "" : " (no data)");
    const segc_image *lb = &in->label;
    if (lb->data && (lb->dtype != SEGC_U8 || lb->c != 1 || lb->h != im->h || lb->w != im->w))
        FAIL("augment: label expected U8 %dx%dx1 like the image, found %s %dx%dx%d", im->h, im->w,
             segc_dtype_name(lb->dtype), lb->h, lb->w, lb->c);
    if (in->n_boxes < 0 || (in->n_boxes > 0 && !in->boxes))
        FAIL("augment: sample has %d boxes but no box data", in->n_boxes);
    /* an F32 image must meet a float transform before any U8-only one */
    for (int i = 0; f32 && i < p->n && !segc_nn_is_kind(p->t[i].kind); i++)
        if (p->t[i].kind != SEGC_AUG_NORMALIZE && p->t[i].kind != SEGC_AUG_PAD)
            FAIL("augment: image expected U8 for %s (pipeline[%d]), found F32 %dx%dx%d", segc_aug_kind_name(p->t[i].kind),
                 i, im->h, im->w, im->c);
    run_t r = {.ar = scratch, .img = f32 ? NULL : im->data, .h = im->h, .w = im->w, .c = im->c};
    if (f32) {   /* a writable copy: the float transforms work in place */
        r.f = arena_bytes(&r, sizeof(float) * (size_t)im->h * im->w * im->c);
        memcpy(r.f, im->data, sizeof(float) * (size_t)im->h * im->w * im->c);
    }
    if (lb->data) {
        r.lab = lb->data;
        r.lh = lb->h;
        r.lw = lb->w;
    }
    r.n = in->n_boxes;
    if (r.n > 0) {
        r.boxes = arena_bytes(&r, sizeof(float) * 4 * (size_t)r.n);
        memcpy(r.boxes, in->boxes, sizeof(float) * 4 * (size_t)r.n);
        r.box_labels = arena_bytes(&r, sizeof(int32_t) * (size_t)r.n);
        r.box_crowd = arena_bytes(&r, (size_t)r.n);
        for (int i = 0; i < r.n; i++) {
            r.box_labels[i] = in->box_labels ? in->box_labels[i] : 0;
            r.box_crowd[i] = in->box_crowd ? in->box_crowd[i] : 0;
        }
    }
    st->ori_h = im->h;
    st->ori_w = im->w;
    st->seg_pad_val = 255;
    segc_rng rng;
    segc_rng_init(&rng, seed);
    for (int i = 0; i < p->n; i++) {
        const segc_aug_transform *t = &p->t[i];
        if (segc_nn_is_kind(t->kind)) {
            if (!do_nnunet(&r, t, &rng, &st->flipped, err, errlen)) return false;
            continue;
        }
        if (r.f && t->kind != SEGC_AUG_NORMALIZE && t->kind != SEGC_AUG_PAD)
            FAIL("augment: %s: needs a U8 image, found float (F32 slices and the nnU-Net transforms work on floats)",
                 segc_aug_kind_name(t->kind));
        switch (t->kind) {
        case SEGC_AUG_RESIZE:
            if (!do_resize(&r, t->p.resize.scale_w, t->p.resize.scale_h, t->p.resize.keep_ratio,
                           t->p.resize.resize_label, "resize", err, errlen))
                return false;
            break;
        case SEGC_AUG_RANDOM_RESIZE: {
            int sw, sh;
            segc_random_resize_draw(&t->p.random_resize, &rng, &sw, &sh);
            if (!do_resize(&r, sw, sh, t->p.random_resize.keep_ratio, true, "random_resize", err, errlen))
                return false;
            break;
        }
        case SEGC_AUG_RANDOM_CROP:
            if (!do_random_crop(&r, &t->p.random_crop, &rng, err, errlen)) return false;
            break;
        case SEGC_AUG_RANDOM_FLIP:
            if (segc_flip_draw(&t->p.random_flip, &rng)) {
                /* own_* first: materialising a pending resize changes the size read next */
                uint8_t *im = own_img(&r);
                segc_flip_u8(im, r.h, r.w, r.c);
                if (r.lab) {
                    uint8_t *lb = own_lab(&r);
                    segc_flip_u8(lb, r.lh, r.lw, 1);
                }
                if (r.n > 0) segc_boxes_flip(r.boxes, r.n, r.w);
                st->flipped = !st->flipped;
            }
            break;
        case SEGC_AUG_PHOTOMETRIC: {
            if (r.c != 3) FAIL("augment: photometric: image expected 3 channels, found %d", r.c);
            segc_photometric_params pp;
            segc_photometric_draw(&t->p.photometric, &rng, &pp);
            if (pp.do_brightness || pp.do_contrast || pp.do_saturation || pp.do_hue) {
                uint8_t *im = own_img(&r);   /* first: it may change r.h, r.w */
                segc_photometric_apply(im, r.h, r.w, &pp);
            }
            break;
        }
        case SEGC_AUG_EXPAND: do_expand(&r, &t->p.expand, &rng); break;
        case SEGC_AUG_MIN_IOU_CROP: do_min_iou_crop(&r, &t->p.min_iou_crop, &rng); break;
        case SEGC_AUG_NORMALIZE:
            st->normalize = true;
            memcpy(st->mean, t->p.normalize.mean, sizeof st->mean);
            memcpy(st->std, t->p.normalize.std, sizeof st->std);
            st->swap_rb = !t->p.normalize.to_rgb && r.c == 3;
            break;
        case SEGC_AUG_PAD:
            st->pad = true;
            st->pad_h = t->p.pad.h;
            st->pad_w = t->p.pad.w;
            st->pad_val = t->p.pad.pad_val;
            st->seg_pad_val = (uint8_t)t->p.pad.seg_pad_val;
            break;
        default: FAIL("augment: pipeline[%d]: unknown transform kind %d", i, (int)t->kind);
        }
    }
    materialize_img(&r);
    materialize_lab(&r);
    if (st->pad && (r.h > st->pad_h || r.w > st->pad_w || (r.lab && (r.lh > st->pad_h || r.lw > st->pad_w))))
        FAIL("augment: pad: image %dx%d larger than the pad size %dx%d", r.h, r.w, st->pad_h, st->pad_w);
    st->h = r.h;
    st->w = r.w;
    st->c = r.c;
    st->img = r.f ? NULL : r.img;
    st->img_f32 = r.f;
    st->label = r.lab;
    st->label_h = r.lab ? r.lh : 0;
    st->label_w = r.lab ? r.lw : 0;
    st->n_boxes = r.n;
    st->boxes = r.boxes;
    st->box_labels = r.box_labels;
    st->box_crowd = r.box_crowd;
    return true;
}
