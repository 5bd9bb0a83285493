/* segc predict / evaluate: run a model (segc_forward_fn, see infer.h) over
 * image files and write label maps, or over a dataset split and accumulate
 * mmseg metrics. These are the library side of `segc predict` and `segc
 * eval`; the CLI parses options and calls them.
 *
 * Images are prepared like mmseg's test pipeline: decoded RGB (or gray),
 * passed through a segc_pipeline (typically segc_pipeline_seg_eval: keep-ratio
 * Resize that leaves the label alone, then Normalize), run through segc_infer
 * (mode + TTA from segc_infer_opts) and predicted at the original image /
 * label size (mmseg's ori_shape). */
#ifndef SEGC_PREDICT_H
#define SEGC_PREDICT_H
#include "segc/augment.h"
#include "segc/infer.h"
#include "segc/loader.h"
#include "segc/metrics.h"
#include "segc/model.h"
#include "segc/task.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- writing predictions ---- */

/* A palette for n_colors classes (rgb triplets): the PASCAL VOC colour map
 * (bits of the class id spread over the high bits of r, g, b), so class 0 is
 * black and neighbouring ids get distinct colours. */
void segc_predict_default_palette(uint8_t *rgb, int n_colors);

/* Writes DIR/STEM.png, the label map as an 8-bit gray PNG whose values are
 * the class ids, and, when img is not NULL, DIR/STEM_overlay.png, the RGB
 * image blended with the palette colours: (1-alpha)*image + alpha*colour on
 * pixels whose id is < n_colors, the image elsewhere. label: U8, C = 1; img:
 * U8 with 1 or 3 channels, same size as label. false + message naming the
 * file on failure. */
bool segc_predict_write(const char *dir, const char *stem, const segc_image *label, const segc_image *img,
                        const uint8_t *palette, int n_colors, float alpha, char *err, size_t errlen);

/* Expands inputs (image files and folders) into a list of image paths: a
 * file is kept as given; a folder contributes its .png/.jpg/.jpeg files
 * (case-insensitive extension, not recursive), sorted by name; the order of
 * the inputs is kept. Two entries with the same stem (file name without its
 * extension) are refused, as their outputs would collide. *paths is a
 * malloc'd array of malloc'd strings: free with segc_predict_free_list.
 * false + message on a missing input, an unreadable folder or a stem clash. */
bool segc_predict_list_inputs(const char *const *inputs, int n_inputs, char ***paths, int *n_paths, char *err,
                              size_t errlen);
void segc_predict_free_list(char **paths, int n_paths);

typedef struct segc_predict_opts {
    segc_infer_opts infer;
    segc_dtype dtype;                 /* images handed to the model: F32 (default) or BF16 */
    int channels;                     /* decode images as 3 = RGB (default) or 1 = gray */
    const segc_pipeline *pipeline;    /* test pipeline (copied per call); NULL: Normalize with mean/std only */
    float mean[3], std[3];            /* used when pipeline is NULL; default ImageNet (SEGC_IMAGENET_*) */
    const uint8_t *palette;           /* n_colors rgb triplets; NULL: segc_predict_default_palette(num classes) */
    int n_colors;
    float alpha;                      /* overlay blend weight of the colours (default 0.5) */
    bool write_overlay;               /* default true */
    bool quiet;                       /* default false: one progress line per image on stderr */
} segc_predict_opts;

void segc_predict_opts_default(segc_predict_opts *o);

/* Runs the model over every image of segc_predict_list_inputs(inputs) and
 * writes OUT_DIR/<stem>.png and OUT_DIR/<stem>_overlay.png (out_dir is
 * created when missing). ctx's step arena is reset for every image; work is
 * the forward context (see infer.h; NULL = ctx). *n_written (may be NULL)
 * counts the images done. false + message naming the file on the first
 * failure (images already written stay). */
bool segc_predict_paths(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model,
                        const char *const *inputs, int n_inputs, const char *out_dir, const segc_predict_opts *o,
                        int *n_written, char *err, size_t errlen);

/* ---- evaluation (the one evaluation loop: training, `segc eval`, bench) ---- */

/* A validation prediction kept for reports: U8 RGB image, ground truth and
 * prediction at the label's size (heap buffers; segc_eval_sample_free). */
typedef struct segc_eval_sample {
    segc_image img, gt, pred;
    char name[128];
} segc_eval_sample;
void segc_eval_sample_free(segc_eval_sample *s);

typedef struct segc_eval_opts {
    segc_infer_opts infer;
    segc_dtype dtype;                 /* F32 (default) or BF16 */
    const segc_model *model;          /* NULL: labels are the argmax of the forward's logits; else the
                                       * model's probabilities (softmax / sigmoid) and postprocess */
    const segc_pipeline *pipeline;    /* test pipeline; NULL: Normalize (ImageNet, RGB) only */
    int channels;                     /* image channels the pipeline produces (default 3) */
    int batch_size;                   /* default 1 (mmseg's val_dataloader) */
    int num_workers;                  /* decoding threads of the loader (default 1) */
    int rank, world_size;             /* this process's share of the split (default 0 of 1) */
    int64_t max_samples;              /* stop after this many samples of this rank (0 = all) */
    bool quiet;                       /* default false: progress on `progress` (NULL: stderr) */
    FILE *progress;
    int keep;                         /* predictions to keep for reports in samples[] (0: none) */
    segc_eval_sample *samples;        /* keep entries, evenly spaced over the pass, in order (out) */
    int *n_kept;                      /* (out, may be NULL) */
    bool profile_batches;             /* each batch is a profiler iteration (its index from 1), loader waits as "data" */
    bool loss;                        /* with model (and forward == segc_model_logits_fn on it): the model's loss in
                                       * eval mode on each batch (the unaugmented image at the test pipeline's size,
                                       * labels at theirs) goes to the evaluator (segc_evaluator_add_loss); whole mode
                                       * without resize reuses the prediction's forward, otherwise one more forward.
                                       * A loss the model cannot compute there (e.g. an input it only takes in
                                       * slide windows) adds NaN: the split's loss is then undefined (absent) */
} segc_eval_opts;

void segc_eval_opts_default(segc_eval_opts *o);

/* Predicts every sample of a loader batch at its label's size (label_hs[i] x
 * label_ws[i]: the original size in mmseg's test pipelines, where Resize
 * leaves the label alone) from its unpadded image (img_h[i] x img_w[i]) and
 * adds prediction vs label to the evaluator; ds (may be NULL) maps samples to
 * their volumes for per-volume metrics. Samples of one size are run as one
 * batch. Allocates in ctx's step arena (not reset here). false + ctx error.
 * preds (may be NULL) receives one U8 label map per sample (ctx's arena). */
bool segc_eval_batch(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const segc_batch *b,
                     const segc_eval_opts *o, const segc_dataset *ds, segc_evaluator *ev, uint8_t **preds);

/* Evaluates the split: a sequential loader over ds (this rank's share), one
 * segc_eval_batch per batch, ctx's step arena reset per batch. ev is added
 * to, so ranks and trials can merge their evaluators afterwards. false +
 * message (naming the failing sample) on error. */
bool segc_eval_dataset(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const segc_dataset *ds,
                       const segc_eval_opts *o, segc_evaluator *ev, char *err, size_t errlen);

/* The labels of images [N, C, H, W] at out_h x out_w (0: the images' size):
 * segc_infer with o's mode and TTA, then o->model's probabilities and
 * postprocess (argmax without a model). U8 [N, out_h, out_w] in ctx's arena. */
segc_tensor *segc_predict_labels(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, segc_tensor *images,
                                 int out_h, int out_w, const segc_eval_opts *o);

/* mkdir -p; false + message naming the folder. */
bool segc_predict_make_dirs(const char *dir, char *err, size_t errlen);

/* Medical volumes: predicts every slice of every volume of ds (a sequential
 * pass with o's pipeline, mode, TTA and model), reassembles the slices along
 * the dataset's slice axis and writes OUT_DIR/<case>.nii.gz, a uint8 label
 * volume with the case's image geometry (qform/sform copied from its first
 * modality), atomically. The volume's slices must all be in the split
 * (brain_slices_only off). *n_written (may be NULL) counts volumes. false +
 * message naming the case on failure. */
bool segc_predict_volumes(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const segc_dataset *ds,
                          const segc_eval_opts *o, const char *out_dir, int *n_written, char *err, size_t errlen);

/* ---- detection (src/eval/predict_detect.c) ----
 * segc_eval_dataset takes this path for a model whose family's task is
 * detection (o->model, and `model` must be that segc_model): per batch the
 * model's forward and detect hook (boxes in original-image pixels), the
 * detections added to the evaluator (COCO mAP, task.h). Kept samples
 * (o->keep) are U8 RGB: img, gt = the image with the ground-truth boxes,
 * pred = with the detections scored >= 0.3, each labelled with its class
 * name. */

/* Drawing on U8 RGB images (no-ops on other images); clipped to the image. */
void segc_draw_box(segc_image *img, float x1, float y1, float x2, float y2, const uint8_t rgb[3], int thickness);
/* ASCII text in segc's 3x5 pixel font times scale (letters as capitals); width 4*scale per character */
void segc_draw_text(segc_image *img, int x, int y, const char *text, const uint8_t rgb[3], int scale);
int segc_draw_text_width(const char *text, int scale);
/* Each detection scored >= min_score: a box in its class colour (palette: n_classes rgb triplets, may be
 * NULL) with "name score" above it (class_names may be NULL: the label id). */
void segc_draw_detections(segc_image *img, const segc_detection *det, int64_t n, const char *const *class_names,
                          int n_classes, const uint8_t *palette, float min_score);

/* Called once per forward with its detections and their dataset indices. */
typedef bool (*segc_detect_sink)(void *user, const segc_batch *b, const segc_detections *d, const int64_t *index,
                                 char *err, size_t errlen);
/* The detection loop over ds (this rank's share, o's pipeline / batch / dtype / keep): dopts NULL = MLPerf
 * defaults (segc_detect_opts_default); ev (may be NULL) gets every detection, sink (may be NULL) sees
 * every batch. false + message naming the image on failure. */
bool segc_detect_dataset(segc_ctx *ctx, segc_model *m, const segc_dataset *ds, const segc_eval_opts *o,
                         const segc_detect_opts *dopts, segc_evaluator *ev, segc_detect_sink sink, void *user,
                         char *err, size_t errlen);
/* `segc predict --split` for detection (a COCO dataset): OUT_DIR/detections.json, the split's detections
 * in COCO results format ([{image_id, category_id, bbox [x, y, w, h], score}], pycocotools' loadRes
 * reads it), and with draw OUT_DIR/<stem>_det.png, the image with the detections scored >= min_score
 * drawn and named. ev (may be NULL) is added to. */
bool segc_predict_detections(segc_ctx *ctx, segc_model *m, const segc_dataset *ds, const segc_eval_opts *o,
                             const segc_detect_opts *dopts, const char *out_dir, bool draw, float min_score,
                             segc_evaluator *ev, int *n_written, char *err, size_t errlen);
/* `segc predict INPUT...` for detection: per image OUT_DIR/<stem>.json, its detections in COCO results
 * format (image_id = the stem when it is a number, as COCO's file names, else the image's position in
 * the list; category_id = cat_ids[label], or label + 1 without cat_ids), and OUT_DIR/<stem>_det.png
 * with the detections scored >= min_score drawn and named (class_names may be NULL). o: pipeline,
 * dtype, channels, palette, quiet. */
bool segc_predict_detect_paths(segc_ctx *ctx, segc_model *m, const char *const *inputs, int n_inputs,
                               const char *out_dir, const segc_predict_opts *o, const segc_detect_opts *dopts,
                               const int64_t *cat_ids, const char *const *class_names, float min_score,
                               int *n_written, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
