/* segc inference: mmsegmentation's test-time behaviour for any model.
 *
 * A model is a callback `forward(ctx, model, images[N,C,h,w]) -> logits
 * [N,K,h',w']` (any h', w': the logits are resized bilinearly,
 * align_corners=False, to the size of the images given to that call, as
 * mmseg's decode_head.predict does). Inference runs without gradients and
 * with ctx->training = false; both flags are restored afterwards.
 *
 * Modes (mmseg test_cfg):
 *  - whole: one forward on the full image.
 *  - slide (EncoderDecoder.slide_inference): windows of crop_h x crop_w
 *    every stride_h / stride_w pixels, h_grids = max(H - crop_h + stride_h -
 *    1, 0) / stride_h + 1 (same for w); the last window is shifted back to
 *    end at the border and every window is clamped to the image (a crop
 *    larger than the image gives one window, the whole image). The logits of
 *    each window are added into a full-size buffer and divided by the count
 *    of windows covering each pixel. With opts.gaussian (nnU-Net), each
 *    window's logits are weighted by segc_infer_gaussian_map of the window
 *    and divided by the summed weights instead. nnU-Net's tile_step_size 0.5
 *    corresponds to stride = crop / 2 (its window positions are spread
 *    evenly where mmseg's are stride apart with the last one shifted back;
 *    both cover the image).
 * Test-time augmentation (mmseg SegTTAModel with TestTimeAug over
 * Resize(scale_factor=r, keep_ratio=True) x RandomFlip(prob 0 / 1)): for
 * each ratio r (outer loop) and flip off/on (inner), the images are resized
 * to segc_infer_ratio_size (bilinear, align_corners=False, on the normalised
 * float images: a model-agnostic stand-in for mmcv's cv2 resize of the uint8
 * image, equal up to that rounding), flipped, run through the mode, the
 * logits flipped back and resized to the output size; the softmax
 * probabilities (sigmoid for one-channel models) of all augmentations are
 * averaged and the label is their argmax. Without TTA the label is the argmax
 * of the logits, as in mmseg's postprocess_result.
 * opts.probs = SEGC_PROBS_SIGMOID (region / multi-label models): a sigmoid per
 * channel instead of the softmax, so TTA averages sigmoids and the returned
 * probabilities are sigmoids; the label is still their argmax (K == 1: >
 * threshold), which such models usually replace by their own postprocess
 * through segc_infer_probs.
 *
 * Memory: results and buffers that must survive several forwards live in
 * ctx's step arena; each forward runs in `work`, a second context whose step
 * arena is reset before every forward (segc_ctx_step_begin). With a separate
 * work context, memory stays bounded by one forward plus the outputs, and a
 * steady state (same image size) allocates nothing. work may be NULL or ctx
 * itself: everything then accumulates in ctx's arena (fine for small inputs).
 * Errors are reported in ctx ("infer: ..."), including a failed forward
 * (its message is carried over from work). */
#ifndef SEGC_INFER_H
#define SEGC_INFER_H
#include "segc/core.h"
#include "segc/data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A model's forward: images [N,C,h,w] in ctx's arena (f32 or bf16) ->
 * logits [N,K,h',w'] (f32 or bf16), NULL with ctx's error set on failure. */
typedef segc_tensor *(*segc_forward_fn)(segc_ctx *ctx, void *model, segc_tensor *images);


typedef enum { SEGC_INFER_WHOLE = 0, SEGC_INFER_SLIDE } segc_infer_mode;

#define SEGC_INFER_MAX_RATIOS 8

typedef struct segc_infer_opts {
    segc_infer_mode mode;
    int crop_h, crop_w;        /* slide window (mmseg test_cfg.crop_size); >= 1 */
    int stride_h, stride_w;    /* slide stride (test_cfg.stride); >= 1 */
    bool flip;                 /* horizontal-flip TTA */
    int n_ratios;              /* multi-scale TTA ratios; 0 = the input scale only */
    float ratios[SEGC_INFER_MAX_RATIOS];
    float threshold;           /* one-channel models: label = sigmoid(logit) > threshold (mmseg default 0.3) */
    bool gaussian;             /* slide: nnU-Net Gaussian importance weighting of each window (default false) */
    int probs;                 /* segc_probs_kind (model.h): SEGC_PROBS_SOFTMAX (0, default) or SEGC_PROBS_SIGMOID (1) */
} segc_infer_opts;

/* whole mode, no TTA, threshold 0.3 */
void segc_infer_opts_default(segc_infer_opts *o);
/* false (one-line message naming the field) for a bad slide geometry, a
 * ratio <= 0 or too many ratios. */
bool segc_infer_opts_validate(const segc_infer_opts *o, char *err, size_t errlen);

/* mmseg's default normalisation (ImageNet statistics, RGB order). */
#define SEGC_IMAGENET_MEAN {123.675f, 116.28f, 103.53f}
#define SEGC_IMAGENET_STD {58.395f, 57.12f, 57.375f}

/* U8 HWC image (C = 1 or 3) -> [1, C, H, W] tensor of dtype (f32/bf16) in
 * ctx's arena with (x - mean[c]) / std[c]. NULL + ctx error on bad input. */
segc_tensor *segc_infer_image_tensor(segc_ctx *ctx, const segc_image *img, const float *mean, const float *std,
                                     segc_dtype dtype);

/* The slide windows of an h x w image as [y1, y2) x [x1, x2), row-major over
 * the grid (mmseg's order). Writes at most max windows into y1/y2/x1/x2 (any
 * may be NULL) and returns the total count; 0 for bad arguments. */
int segc_infer_slide_windows(int h, int w, int crop_h, int crop_w, int stride_h, int stride_w, int *y1, int *y2,
                             int *x1, int *x2, int max);
/* mmcv Resize(scale_factor=ratio, keep_ratio=True) on an h x w image:
 * scale (int(w*r+0.5), int(h*r+0.5)), then rescale_size for that scale. */
void segc_infer_ratio_size(int h, int w, double ratio, int *nh, int *nw);

/* nnU-Net's Gaussian importance map of an h x w window into out (row-major):
 * a centred delta (at h/2, w/2) filtered with scipy's gaussian_filter
 * (sigma = size / 8 per axis, truncate 4, constant 0 outside), scaled to max
 * 1, and zeros (beyond the kernel's radius) replaced by the smallest nonzero
 * value so every pixel keeps some weight. */
void segc_infer_gaussian_map(int h, int w, float *out);

/* One pass of the mode, no TTA: f32 logits [N, K, H, W] at the images' size
 * (mmseg's `inference` result before the softmax), in ctx's arena. */
segc_tensor *segc_infer_logits(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model,
                               segc_tensor *images, const segc_infer_opts *o);

/* The full prediction: U8 label map [N, out_h, out_w] in ctx's arena (class
 * ids; K must be <= 255, one-channel models give 0/1). out_h/out_w is the
 * size to predict at (mmseg's ori_shape: the label's size); 0 means the
 * images' size. probs (may be NULL) receives f32 [N, K, out_h, out_w]: the
 * averaged probabilities with TTA, the softmax (sigmoid) of the logits
 * otherwise. */
segc_tensor *segc_infer(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, segc_tensor *images,
                        int out_h, int out_w, const segc_infer_opts *o, segc_tensor **probs);
/* The probabilities alone, for callers that decide the label themselves
 * (a model's postprocess): f32 [N, K, out_h, out_w] in ctx's arena, the same
 * values segc_infer returns in *probs (TTA average; softmax or sigmoid per
 * opts.probs), without computing a label map (no K <= 255 limit). */
segc_tensor *segc_infer_probs(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model,
                              segc_tensor *images, int out_h, int out_w, const segc_infer_opts *o);

#ifdef __cplusplus
}
#endif
#endif
