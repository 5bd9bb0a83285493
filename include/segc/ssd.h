/* SSD300-ResNet34 (Liu et al. 2016; the MLPerf training reference,
 * single_stage_detector): default boxes, box coding, matching, the loss with
 * hard-negative mining, and the network (src/models/ssd*.c). The registered
 * family (model.type: ssd) is src/models/ssd_family.c.
 *
 * Layouts (MLPerf's): for a batch of N images, A default boxes and K + 1
 * classes (0 = background, then the dataset's classes 0..K-1 as 1..K):
 *   scores  [N, K + 1, A]  class logits per default box
 *   boxes   [N, 4, A]      regressions (dx, dy, dw, dh) per default box
 * Default boxes are in MLPerf's order: level by level (38, 19, 10, 5, 3, 1
 * at 300x300), within a level box shape by box shape (the two squares, then
 * the aspect-ratio pairs w x h, h x w), within a shape row-major over the
 * map; coordinates are normalised to [0, 1]. A head's 3x3 conv channel
 * c * nd + d is coordinate / class c of shape d (PyTorch's
 * view(N, 4 or K+1, -1) of the conv output). */
#ifndef SEGC_SSD_H
#define SEGC_SSD_H
#include "segc/resnet.h"

#define SEGC_SSD_LEVELS 6
#define SEGC_SSD_MAX_RATIOS 2

/* ---- default boxes ---- */
typedef struct segc_ssd_anchor_config {
    int image_size;                        /* 300: the square network input */
    int feat[SEGC_SSD_LEVELS];             /* feature map sizes: 38 19 10 5 3 1 */
    int steps[SEGC_SSD_LEVELS];            /* 8 16 32 64 100 300 */
    int scales[SEGC_SSD_LEVELS + 1];       /* 21 45 99 153 207 261 315 */
    int n_ratios[SEGC_SSD_LEVELS];         /* 1 2 2 2 1 1 */
    int ratios[SEGC_SSD_LEVELS][SEGC_SSD_MAX_RATIOS];   /* [2] [2,3] [2,3] [2,3] [2] [2] */
    float scale_xy, scale_wh;              /* box coding variances 0.1, 0.2 */
} segc_ssd_anchor_config;

/* MLPerf's SSD300 boxes (feature sizes of a 300x300 input). */
void segc_ssd_anchor_config_mlperf(segc_ssd_anchor_config *c);
/* Feature map sizes of SSD-ResNet's six levels for a square input: the trunk's
 * stride 8 (ceil at each halving), three stride-2 3x3 convs with padding 1,
 * two 3x3 convs without padding. false when the last level would be empty
 * (image_size < 257). */
bool segc_ssd_feature_sizes(int image_size, int feat[SEGC_SSD_LEVELS]);
/* default boxes per location of a level: 2 + 2 * n_ratios */
int segc_ssd_boxes_per_location(const segc_ssd_anchor_config *c, int level);

typedef struct segc_ssd_anchors {
    int n;                          /* 8732 for SSD300 */
    float *xywh;                    /* n x 4: cx cy w h, each clamped to [0, 1] */
    float *ltrb;                    /* n x 4: x1 y1 x2 y2 from the clamped xywh */
    int level_start[SEGC_SSD_LEVELS + 1];
    float scale_xy, scale_wh;
} segc_ssd_anchors;

/* false + message on a bad config or out of memory */
bool segc_ssd_anchors_build(const segc_ssd_anchor_config *c, segc_ssd_anchors *a, char *err, size_t errlen);
void segc_ssd_anchors_free(segc_ssd_anchors *a);

/* ---- matching and box coding (one image) ---- */
/* MLPerf's Encoder.encode: gt boxes (n_gt x 4, x1 y1 x2 y2 normalised) with
 * labels 1..K: IoU of every gt with every default box; each default box takes
 * its best gt (first on ties); each gt's best default box (first on ties) is
 * forced to it (a later gt wins a shared best box); a default box is positive
 * when its IoU with its gt is > iou_thresh or forced. Writes labels[A] (0 =
 * background) and target_xywh[A x 4] (the matched gt as cx cy w h; the
 * default box itself for background). n_gt may be 0. Returns the number of
 * positives; allocates nothing. */
int segc_ssd_match(const segc_ssd_anchors *a, const float *gt, const int32_t *gt_labels, int n_gt, float iou_thresh,
                   int32_t *labels, float *target_xywh);
/* MLPerf's Loss._loc_vec: target_xywh [A x 4] -> regression targets
 * vec [4 x A]: 10 (x - dx) / dw, 10 (y - dy) / dh, 5 log(w / dw), 5 log(h / dh)
 * (with variances 0.1 / 0.2). */
void segc_ssd_encode(const segc_ssd_anchors *a, const float *target_xywh, float *vec);
/* Inverse (MLPerf's scale_back_batch): regressions [4 x A] (f32) -> boxes
 * ltrb [A x 4], normalised. */
void segc_ssd_decode(const segc_ssd_anchors *a, const float *vec, float *ltrb);

/* ---- loss ---- */
/* MLPerf's Loss on a batch: ploc [N, 4, A] and plabel [N, C, A] (f32/bf16;
 * gradients flow to both), targets gvec [N, 4, A] f32 (segc_ssd_encode) and
 * glabel [N, A] i32 (0..C-1, 0 = background). Per image: smooth-L1 (beta 1)
 * of ploc - gvec summed over the positives' coordinates, plus cross entropy
 * over the positives and the neg_ratio * positives highest-loss negatives
 * (MLPerf's ranking: loss descending, ties by lower index; a positive ranked
 * among them counts twice, as there), divided by the image's positives
 * (images without positives add 0); the mean over images. A scalar f32. */
segc_tensor *segc_ssd_loss(segc_ctx *ctx, segc_tensor *ploc, segc_tensor *plabel, segc_tensor *gvec,
                           segc_tensor *glabel, int neg_ratio);
/* The hard negatives of one image: con[A] cross entropies, labels[A];
 * sel[a] = 1 for the n_neg = min(neg_ratio * positives, A) first anchors of
 * the ranking above (positives ranked with loss 0). Returns n_neg, -1 on
 * out-of-memory. */
int segc_ssd_hard_negatives(const float *con, const int32_t *labels, int n_anchors, int neg_ratio, uint8_t *sel);

/* ---- network ---- */
typedef struct segc_ssd_config {
    segc_resnet_config backbone;           /* plain stem, layers 1-3, layer 3 with stride 1 */
    int num_classes;                       /* K, without background */
    int extra_channels[SEGC_SSD_LEVELS - 1];      /* 512 512 256 256 256 */
    int extra_mid_channels[SEGC_SSD_LEVELS - 1];  /* 256 256 128 128 128 */
    segc_ssd_anchor_config anchors;
    float match_iou;                       /* 0.5 */
    int neg_ratio;                         /* 3 */
} segc_ssd_config;

/* MLPerf SSD300 on ResNet-depth (18 or 34), K classes. */
void segc_ssd_config_default(segc_ssd_config *c, int depth, int num_classes);
bool segc_ssd_check_config(const segc_ssd_config *c, char *err, size_t errlen);

typedef struct segc_ssd {
    segc_ssd_config cfg;
    segc_resnet *backbone;                 /* "backbone." + torchvision names */
    segc_conv_layer extra1[SEGC_SSD_LEVELS - 1], extra2[SEGC_SSD_LEVELS - 1];  /* additional_blocks.i.{0,2} */
    segc_conv_layer loc[SEGC_SSD_LEVELS], conf[SEGC_SSD_LEVELS];
    segc_ssd_anchors anchors;
    segc_params *params;                   /* borrowed */
} segc_ssd;

/* Registers backbone.*, additional_blocks.*, loc.*, conf.* (MLPerf's order) into p and finalizes it
 * (BN weights 1, everything else 0 until segc_ssd_init). */
segc_ssd *segc_ssd_new(const segc_ssd_config *c, segc_params *p, char *err, size_t errlen);
void segc_ssd_free(segc_ssd *m);
/* torchvision init for the trunk (Kaiming fan_out, BN 1/0); Xavier-uniform weights and PyTorch's
 * default uniform(+-1/sqrt(fan_in)) biases for the extra layers and heads (MLPerf's _init_weights). */
void segc_ssd_init(segc_ssd *m, uint64_t seed);
/* images [N, C, S, S] (S = anchors.image_size) -> scores [N, K+1, A], boxes [N, 4, A]. */
bool segc_ssd_forward(segc_ctx *ctx, const segc_ssd *m, segc_tensor *images, segc_tensor **scores,
                      segc_tensor **boxes);
#endif
