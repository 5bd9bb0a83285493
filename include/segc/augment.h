/* segc augmentation: mmsegmentation-1.x / mmdetection style transforms on
 * segc_sample (U8 HWC RGB image + U8 label or boxes), and nnU-Net's 2-D
 * training transforms on float images (F32 medical slices, any channel
 * count), producing normalised float CHW images for the loader's batches.
 *
 * Every random transform is split in two: a *draw* that takes the random
 * parameters from a Philox stream (segc_rng) and a deterministic *apply* that
 * reproduces mmcv/cv2's arithmetic for given parameters. A pipeline run is
 * seeded per sample (segc_aug_seed: global seed, epoch, dataset index), so its
 * output does not depend on which worker thread produced it.
 *
 * Images are RGB (the decoders' order). mmseg keeps BGR and converts with
 * Normalize(to_rgb=True); here to_rgb=true keeps RGB and to_rgb=false hands
 * the model BGR, so an mmseg config means the same thing in both. */
#ifndef SEGC_AUGMENT_H
#define SEGC_AUGMENT_H
#include "segc/core.h"
#include "segc/data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * Pipeline description (plain data; the YAML config layer fills it in).
 * ------------------------------------------------------------------------- */
typedef enum {
    SEGC_AUG_RESIZE = 0,       /* fixed scale (mmcv Resize) */
    SEGC_AUG_RANDOM_RESIZE,    /* scale * U(ratio_lo, ratio_hi) then Resize (mmcv RandomResize) */
    SEGC_AUG_RANDOM_CROP,      /* mmseg RandomCrop with cat_max_ratio */
    SEGC_AUG_RANDOM_FLIP,      /* horizontal flip with probability prob */
    SEGC_AUG_PHOTOMETRIC,      /* mmseg PhotoMetricDistortion (uint8, cv2 HSV) */
    SEGC_AUG_EXPAND,           /* mmdet Expand: place the image on a mean-filled canvas */
    SEGC_AUG_MIN_IOU_CROP,     /* mmdet MinIoURandomCrop */
    SEGC_AUG_NORMALIZE,        /* (x - mean) / std, channel order per to_rgb */
    SEGC_AUG_PAD,              /* pad bottom/right to a fixed size */
    /* nnU-Net 2-D training transforms (batchgenerators semantics, see
     * segc_pipeline_nnunet_2d). They work on float images with any channel
     * count (medical F32 slices; a U8 image is converted to float 0..255 by
     * the first of them, after which the U8-only transforms above fail). */
    SEGC_AUG_FG_CROP,          /* patch crop, centred on foreground with probability fg_prob */
    SEGC_AUG_SPATIAL,          /* rotation + scaling about the patch centre (bilinear image, nearest label) */
    SEGC_AUG_NOISE,            /* additive Gaussian noise */
    SEGC_AUG_BLUR,             /* Gaussian blur per channel */
    SEGC_AUG_BRIGHTNESS,       /* multiplicative brightness per channel */
    SEGC_AUG_CONTRAST,         /* contrast about the channel mean, range preserved */
    SEGC_AUG_GAMMA,            /* gamma on the [min, max]-normalised channel, stats retained */
    SEGC_AUG_MIRROR,           /* flip rows and/or columns */
    SEGC_AUG_LOW_RES,          /* simulate low resolution: down (nearest) and back up (bilinear) per channel */
    SEGC_AUG_NKINDS
} segc_aug_kind;

typedef struct segc_aug_resize {
    int scale_w, scale_h;      /* mmcv scale=(w, h) */
    bool keep_ratio;           /* true: mmcv imrescale (long/short edge bounds); false: exactly w x h */
    bool resize_label;         /* false: leave the label at its original size (mmseg test pipelines) */
} segc_aug_resize;

typedef struct segc_aug_random_resize {
    int scale_w, scale_h;
    double ratio_lo, ratio_hi;
    bool keep_ratio;
} segc_aug_random_resize;

typedef struct segc_aug_random_crop {
    int crop_h, crop_w;
    double cat_max_ratio;      /* 1 disables the class-ratio retries */
    int ignore_index;
} segc_aug_random_crop;

typedef struct segc_aug_random_flip {
    double prob;
} segc_aug_random_flip;

typedef struct segc_aug_photometric {
    int brightness_delta;
    double contrast_lo, contrast_hi;
    double saturation_lo, saturation_hi;
    int hue_delta;
} segc_aug_photometric;

typedef struct segc_aug_expand {
    float mean[3];             /* RGB fill (truncated to uint8 as numpy does) */
    double ratio_lo, ratio_hi;
    double prob;
} segc_aug_expand;

#define SEGC_AUG_MAX_IOUS 8
typedef struct segc_aug_min_iou_crop {
    float min_ious[SEGC_AUG_MAX_IOUS];
    int n_ious;
    double min_crop_size;
} segc_aug_min_iou_crop;

typedef struct segc_aug_normalize {
    float mean[4], std[4];     /* in output channel order */
    bool to_rgb;               /* true: output RGB; false: output BGR (3-channel images) */
} segc_aug_normalize;

typedef struct segc_aug_pad {
    int h, w;
    float pad_val;             /* image value after normalisation */
    int seg_pad_val;
} segc_aug_pad;

/* nnU-Net DataLoader2D crop: with probability fg_prob (per sample; nnU-Net
 * forces foreground in oversample_foreground_percent = 0.33 of each batch)
 * a foreground class present in the slice (label 1..254, not ignore_index) is
 * drawn uniformly, then one of its pixels, and the h x w window is centred on
 * it (clamped so it stays over the image); otherwise the window is uniform.
 * A slice smaller than the patch is placed at a random offset inside it; the
 * rest is pad_val (image) / seg_pad_val (label: 0 = background, what nnU-Net's
 * -1 padding becomes after RemoveLabelTransform(-1, 0)). */
typedef struct segc_aug_fg_crop {
    int h, w;
    double fg_prob;            /* default 0.4 */
    float pad_val;             /* default 0 */
    int seg_pad_val;           /* default 0 */
    int ignore_index;          /* never chosen as foreground (default 255) */
} segc_aug_fg_crop;

/* batchgenerators SpatialTransform without elastic deformation: output pixel
 * p samples the input at c + R(angle) * s * (p - c), c the centre ((n-1)/2).
 * s < 1 therefore magnifies. Rotation with p_rot, angle U(rot_lo, rot_hi)
 * degrees; scaling with p_scale, s U(scale_lo, scale_hi). Image bilinear
 * (nnU-Net: cubic), label nearest, outside: pad_val / seg_pad_val. */
typedef struct segc_aug_spatial {
    double p_rot, rot_lo, rot_hi;       /* default 0.2, -180, 180 (nnU-Net 2-D, square patches) */
    double p_scale, scale_lo, scale_hi; /* default 0.2, 0.7, 1.4 */
    float pad_val;
    int seg_pad_val;
} segc_aug_spatial;

/* GaussianNoiseTransform(noise_variance=(lo, hi), p): v = U(lo, hi), then
 * every pixel of every channel gets N(0, v) noise where v is the standard
 * deviation: batchgenerators passes the drawn "variance" to np.random.normal
 * as its scale, and nnU-Net's augmentation strength is defined by that. */
typedef struct segc_aug_noise {
    double prob;               /* default 0.1 */
    double var_lo, var_hi;     /* default 0, 0.1 */
} segc_aug_noise;

/* GaussianBlurTransform((lo, hi), different_sigma_per_channel, p_per_sample,
 * p_per_channel): scipy gaussian_filter (truncate 4, mode reflect). */
typedef struct segc_aug_blur {
    double prob;               /* per sample, default 0.2 */
    double p_per_channel;      /* default 0.5 */
    double sigma_lo, sigma_hi; /* default 0.5, 1.0 */
} segc_aug_blur;

/* BrightnessMultiplicativeTransform (x *= U(lo, hi), per channel) and
 * ContrastAugmentationTransform (per channel: f = U(lo, 1) or U(max(lo, 1), hi)
 * with even odds, x = (x - mean) * f + mean clipped to the old [min, max]). */
typedef struct segc_aug_range {
    double prob;               /* default 0.15 */
    double lo, hi;             /* default 0.75, 1.25 */
} segc_aug_range;

/* GammaTransform(retain_stats=True, per_channel=True): per channel, gamma as
 * the contrast factor above from (lo, hi); x = ((x - min) / (max - min +
 * 1e-7))^gamma * (max - min) + min, then mean/std restored. invert: applied to
 * -x (nnU-Net uses an inverted one with p 0.1 and a plain one with p 0.3). */
typedef struct segc_aug_gamma {
    double prob;
    double lo, hi;             /* default 0.7, 1.5 */
    bool invert;
} segc_aug_gamma;

/* MirrorTransform(axes=(0, 1)): rows reversed with prob_y, columns with prob_x. */
typedef struct segc_aug_mirror {
    double prob_y, prob_x;     /* default 0.5, 0.5 */
} segc_aug_mirror;

/* SimulateLowResolutionTransform(zoom_range, per_channel=True,
 * p_per_channel, order_downsample=0, order_upsample=3, p_per_sample): per
 * channel with p_per_channel, zoom z = U(zoom_lo, zoom_hi), the channel is
 * resized to round(size * z) with nearest neighbour and back with bilinear
 * interpolation (half-pixel centres, edge clamped; nnU-Net's upsampling is
 * cubic). Labels untouched. */
typedef struct segc_aug_low_res {
    double prob;               /* per sample, default 0.25 */
    double p_per_channel;      /* default 0.5 */
    double zoom_lo, zoom_hi;   /* default 0.5, 1.0 */
} segc_aug_low_res;

typedef struct segc_aug_transform {
    segc_aug_kind kind;
    union {
        segc_aug_resize resize;
        segc_aug_random_resize random_resize;
        segc_aug_random_crop random_crop;
        segc_aug_random_flip random_flip;
        segc_aug_photometric photometric;
        segc_aug_expand expand;
        segc_aug_min_iou_crop min_iou_crop;
        segc_aug_normalize normalize;
        segc_aug_pad pad;
        segc_aug_fg_crop fg_crop;
        segc_aug_spatial spatial;
        segc_aug_noise noise;
        segc_aug_blur blur;
        segc_aug_range brightness;
        segc_aug_range contrast;
        segc_aug_gamma gamma;
        segc_aug_mirror mirror;
        segc_aug_low_res low_res;
    } p;
} segc_aug_transform;

#define SEGC_PIPELINE_MAX 16
typedef struct segc_pipeline {
    int n;
    segc_aug_transform t[SEGC_PIPELINE_MAX];
} segc_pipeline;

/* Defaults as in mmseg/mmdet configs (ImageNet mean/std, to_rgb). */
segc_aug_transform segc_aug_default(segc_aug_kind kind);
const char *segc_aug_kind_name(segc_aug_kind kind);
/* false (and a message) when the list is full */
bool segc_pipeline_add(segc_pipeline *p, segc_aug_transform t, char *err, size_t errlen);
/* Checks every transform's parameters; message names the transform. */
bool segc_pipeline_validate(const segc_pipeline *p, char *err, size_t errlen);

/* Ready-made pipelines. scale = (w, h) as in mmseg configs, crop = (h, w). */
void segc_pipeline_seg_train(segc_pipeline *p, int scale_w, int scale_h, double ratio_lo, double ratio_hi,
                             int crop_h, int crop_w, double cat_max_ratio);
void segc_pipeline_seg_eval(segc_pipeline *p, int scale_w, int scale_h);
void segc_pipeline_ssd_train(segc_pipeline *p, int size);
void segc_pipeline_ssd_eval(segc_pipeline *p, int size);
/* nnU-Net's 2-D training chain on a patch_h x patch_w patch: fg_crop
 * (fg_prob), spatial (rot p 0.2 +-180 deg, scale p 0.2 0.7..1.4), noise (p 0.1,
 * 0..0.1), blur (p 0.2, per channel 0.5, sigma 0.5..1), brightness (p 0.15,
 * 0.75..1.25), contrast (p 0.15, 0.75..1.25), low_res (p 0.25, per channel 0.5,
 * zoom 0.5..1), gamma inverted (p 0.1, 0.7..1.5), gamma (p 0.3, 0.7..1.5),
 * mirror (0.5 per axis): nnU-Net's order. No Normalize/Pad: medical slices are
 * already z-scored and the crop fixes the size. Adjust p->t[k] afterwards to
 * change a parameter. */
void segc_pipeline_nnunet_2d(segc_pipeline *p, int patch_h, int patch_w, double fg_prob);

/* When every output of the pipeline has the same size (it ends with Pad, or
 * with a fixed-size Resize), that size; false when it depends on the input. */
bool segc_pipeline_fixed_size(const segc_pipeline *p, int *h, int *w, bool *label_fixed);

/* ---------------------------------------------------------------------------
 * Running a pipeline on one sample.
 * ------------------------------------------------------------------------- */
/* Per-sample seed: splitmix64 mix of (seed, epoch, index, attempt). */
uint64_t segc_aug_seed(uint64_t seed, int64_t epoch, int64_t index, int attempt);

/* The augmented sample: u8 HWC image and label in the scratch arena (or
 * borrowed from the input sample), boxes, and what the output stage needs. */
typedef struct segc_aug_state {
    int h, w, c;
    const uint8_t *img;        /* NULL when the result is float (img_f32) */
    const float *img_f32;      /* HWC float result of F32 inputs / nnU-Net transforms */
    int label_h, label_w;
    const uint8_t *label;      /* NULL when the sample has none */
    int n_boxes;
    float *boxes;              /* x1 y1 x2 y2 pixels, in the arena */
    int32_t *box_labels;
    uint8_t *box_crowd;
    int ori_h, ori_w;          /* input size */
    bool flipped;
    bool normalize;
    float mean[4], std[4];
    bool swap_rb;              /* output BGR */
    bool pad;
    int pad_h, pad_w;
    float pad_val;
    uint8_t seg_pad_val;
} segc_aug_state;

/* Runs the pipeline. Intermediate images live in scratch (reset it between
 * samples); in is not modified. false with a message naming the transform. */
bool segc_pipeline_run(const segc_pipeline *p, const segc_sample *in, uint64_t seed, segc_arena *scratch,
                       segc_aug_state *st, char *err, size_t errlen);
/* Size of the output image / label (padded when the pipeline pads). */
void segc_aug_out_size(const segc_aug_state *st, int *h, int *w);
void segc_aug_label_out_size(const segc_aug_state *st, int *h, int *w);
/* Normalised float CHW into dst (c x dst_h x dst_w, dst_h/dst_w >= out size);
 * the area right of / below the image gets pad_val (0 without a Pad). Float
 * results are written as (x - mean) / std when the pipeline has a Normalize
 * (channels beyond the 4th unnormalised), as they are otherwise. */
void segc_aug_write_image(const segc_aug_state *st, float *dst, int dst_h, int dst_w);
/* Label as U8 or I64 into dst (dst_h x dst_w), padded with seg_pad_val (255). */
void segc_aug_write_label(const segc_aug_state *st, void *dst, segc_dtype dt, int dst_h, int dst_w);

/* ---------------------------------------------------------------------------
 * Deterministic apply steps (mmcv / cv2 arithmetic), exposed for tests.
 * Image buffers are U8 HWC; region variants compute only rows [y0, y0+oh)
 * and columns [x0, x0+ow) of the full (dh x dw) result.
 * ------------------------------------------------------------------------- */
/* mmcv rescale_size for scale=(scale_w, scale_h): factor = min(long/max(h,w),
 * short/min(h,w)); new edge = int(edge * factor + 0.5). */
void segc_rescale_size(int h, int w, int scale_w, int scale_h, int *nh, int *nw);
/* cv2.resize INTER_LINEAR for uint8 (half-pixel centres, 11-bit fixed-point weights). */
void segc_resize_bilinear_u8(const uint8_t *src, int sh, int sw, int c, int dh, int dw, int y0, int x0, int oh,
                             int ow, uint8_t *dst, segc_arena *scratch);
/* cv2.resize INTER_NEAREST: src = floor(dst * (src_size / dst_size)). */
void segc_resize_nearest_u8(const uint8_t *src, int sh, int sw, int c, int dh, int dw, int y0, int x0, int oh,
                            int ow, uint8_t *dst, segc_arena *scratch);
/* Source row/column of each output row/column under INTER_NEAREST. */
void segc_nearest_map(int src, int dst, int o0, int n, int *map);

/* mmseg RandomCrop's cat_max_ratio rule on label (h x w) for the crop window
 * at (y0, x0) of size crop_h x crop_w (clipped to the label): true when more
 * than one non-ignored class is present and none covers cat_max_ratio or more. */
bool segc_crop_class_ok(const uint8_t *label, int h, int w, int y0, int x0, int crop_h, int crop_w,
                        double cat_max_ratio, int ignore_index);
/* mmseg's choice among candidate offsets (cand_y/x[0..n-1], n = 11 for 10
 * retries): the first whose crop passes, checking at most n-1; else the last. */
int segc_crop_choose(const uint8_t *label, int h, int w, int crop_h, int crop_w, double cat_max_ratio,
                     int ignore_index, const int *cand_y, const int *cand_x, int n);
/* Copies rows [y0, y0+ch) x cols [x0, x0+cw) (clipped) of a HWC image. */
void segc_crop_u8(const uint8_t *src, int h, int w, int c, int y0, int x0, int ch, int cw, uint8_t *dst,
                  int *out_h, int *out_w);
void segc_flip_u8(uint8_t *img, int h, int w, int c);

/* mmseg PhotoMetricDistortion's random choices. */
typedef struct segc_photometric_params {
    bool do_brightness;
    float beta;                /* U(-delta, delta) */
    int mode;                  /* 1: contrast before the HSV steps, 0: after */
    bool do_contrast;
    float alpha;               /* U(contrast_lo, contrast_hi) */
    bool do_saturation;
    float saturation;          /* U(saturation_lo, saturation_hi) */
    bool do_hue;
    int hue;                   /* integer in [-hue_delta, hue_delta) */
} segc_photometric_params;
/* In place on an h x w RGB image (C == 3). */
void segc_photometric_apply(uint8_t *rgb, int h, int w, const segc_photometric_params *pp);
/* cv2 COLOR_RGB2HSV / COLOR_HSV2RGB for uint8 (H in [0, 180)); the reverse
 * conversion rounds like cv2 per row position (see augment_color.c). */
void segc_rgb_to_hsv_u8(const uint8_t *rgb, uint8_t *hsv, int64_t n);
void segc_hsv_to_rgb_u8(const uint8_t *hsv, uint8_t *rgb, int h, int w);

/* Normalise HWC u8 to CHW f32 into a dst_h x dst_w canvas, padding with pad_val.
 * mean/std NULL: plain conversion. swap_rb: emit channels 2,1,0. */
void segc_normalize_chw(const uint8_t *img, int h, int w, int c, const float *mean, const float *std, bool swap_rb,
                        float *dst, int dst_h, int dst_w, float pad_val);

/* nnU-Net float steps, exposed for tests. Gaussian blur of channel ch of an
 * HWC float image in place: scipy.ndimage.gaussian_filter(sigma, truncate=4,
 * mode='reflect'), separable; tmp holds max(h, w) floats. */
void segc_gaussian_blur_f32(float *img, int h, int w, int c, int ch, double sigma, float *tmp);
/* The nnU-Net crop window's top-left corner for an h x w label (may be NULL:
 * uniform) and a ph x pw patch (see segc_aug_fg_crop); *fg says whether a
 * foreground pixel was targeted. */
void segc_fg_crop_draw(const segc_aug_fg_crop *t, segc_rng *r, const uint8_t *label, int h, int w, int *y0, int *x0,
                       bool *fg);

/* Detection geometry (mmdet semantics). Boxes are x1 y1 x2 y2 float32. */
/* Place img on an (int(h*ratio) x int(w*ratio)) canvas filled with fill at (top, left). */
void segc_expand_u8(const uint8_t *src, int h, int w, int c, const uint8_t *fill, int eh, int ew, int top, int left,
                    uint8_t *dst);
void segc_boxes_translate(float *boxes, int n, float dx, float dy);
void segc_boxes_flip(float *boxes, int n, int img_w);
/* Multiply by (sx, sy) and clip to [0, clip_w] x [0, clip_h]. */
void segc_boxes_rescale(float *boxes, int n, float sx, float sy, int clip_w, int clip_h);
/* IoU of patch (x1 y1 x2 y2) with each box (mmdet bbox_overlaps, eps 1e-6). */
void segc_boxes_iou_patch(const float *boxes, int n, const float *patch, float *iou);
/* mmdet MinIoURandomCrop's box update for patch: keep boxes whose centre is
 * strictly inside, shift by -patch origin, clip to the patch; labels/crowd
 * (may be NULL) compacted alongside. Returns the number kept. */
int segc_boxes_crop(float *boxes, int32_t *labels, uint8_t *crowd, int n, const int *patch);

/* ---------------------------------------------------------------------------
 * Random draws (each transform's random part, in mmseg/mmdet's order).
 * ------------------------------------------------------------------------- */
/* uniform in [lo, hi) and integer in [lo, hi) (hi exclusive, like numpy randint) */
double segc_aug_uniform(segc_rng *r, double lo, double hi);
int segc_aug_randint(segc_rng *r, int lo, int hi);
void segc_random_resize_draw(const segc_aug_random_resize *t, segc_rng *r, int *scale_w, int *scale_h);
void segc_crop_offset_draw(segc_rng *r, int h, int w, int crop_h, int crop_w, int *y0, int *x0);
bool segc_flip_draw(const segc_aug_random_flip *t, segc_rng *r);
void segc_photometric_draw(const segc_aug_photometric *t, segc_rng *r, segc_photometric_params *pp);
/* Expand: false when skipped (prob); else ratio, canvas size and placement */
bool segc_expand_draw(const segc_aug_expand *t, segc_rng *r, int h, int w, int *eh, int *ew, int *top, int *left);
/* MinIoURandomCrop: false when the image stays whole (mode 1); else patch
 * (x1, y1, x2, y2) meeting the IoU / centre rules for the boxes. */
bool segc_min_iou_crop_draw(const segc_aug_min_iou_crop *t, segc_rng *r, int h, int w, const float *boxes, int n,
                            int patch[4]);

#ifdef __cplusplus
}
#endif
#endif
