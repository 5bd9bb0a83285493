/* SSD as a registered model family (model.type: ssd, a detection task).
 * The network is ssd.c on resnet.c; this file maps config keys to its
 * configuration, turns the detection targets (segc_targets' boxes) into
 * matched default boxes for the loss, and implements the detect hook:
 * softmax, decode, per-class score threshold and top candidates, class-aware
 * NMS, the best max_per_image, boxes scaled to each original image. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/model.h"
#include "segc/ops.h"
#include "segc/ssd.h"

static const segc_model_key keys[] = {
    {"image_size", SEGC_KEY_INT, "300", NULL, "square network input (default boxes and feature sizes follow; >= 257)"},
    {"stem_channels", SEGC_KEY_INT, "64", NULL, "ResNet stem width"},
    {"base_channels", SEGC_KEY_INT, "64", NULL, "planes of ResNet layer 1 (doubling per stage; layer 3 feeds the heads)"},
    {"channels_last", SEGC_KEY_BOOL, "false", NULL,
     "ResNet trunk on channels-last (NHWC) activations: oneDNN's convolutions without layout reorders"},
    {"extra_channels", SEGC_KEY_INTS, "[512, 512, 256, 256, 256]", NULL, "output widths of the 5 extra blocks"},
    {"extra_mid_channels", SEGC_KEY_INTS, "[256, 256, 128, 128, 128]", NULL, "1x1-conv widths of the 5 extra blocks"},
    {"steps", SEGC_KEY_INTS, "[8, 16, 32, 64, 100, 300]", NULL, "default-box steps per level (pixels)"},
    {"scales", SEGC_KEY_INTS, "[21, 45, 99, 153, 207, 261, 315]", NULL, "default-box scales (pixels), one more than levels"},
    {"match_iou", SEGC_KEY_DOUBLE, "0.5", NULL, "a default box matches a ground truth above this IoU"},
    {"neg_ratio", SEGC_KEY_INT, "3", NULL, "hard negatives per positive in the classification loss"},
    {"backbone_pretrained", SEGC_KEY_STRING, "", NULL,
     "ResNet weights (safetensors, torchvision names, fc ignored), checked at build, loaded at init"},
};
#define N_KEYS ((int)(sizeof keys / sizeof *keys))

static bool read_spec(const segc_model_spec *s, segc_ssd_config *c, char *err, size_t n) {
    const char *v = s->variant && *s->variant ? s->variant : "r34";
    int depth = !strcmp(v, "r18") ? 18 : !strcmp(v, "r34") ? 34 : 0;
    if (!depth) return segc_errorf(err, n, "model.variant: expected r18|r34, found '%s'", v);
    segc_ssd_config_default(c, depth, s->num_classes ? s->num_classes : 1);
    c->backbone.in_channels = s->in_channels ? s->in_channels : 3;
    c->backbone.stem_channels = segc_spec_int(s, "stem_channels");
    c->backbone.base_channels = segc_spec_int(s, "base_channels");
    c->backbone.channels_last = segc_spec_bool(s, "channels_last");
    int list[SEGC_SSD_LEVELS + 2];
    const struct { const char *key; int *dst, want; } lists[] = {
        {"extra_channels", c->extra_channels, SEGC_SSD_LEVELS - 1},
        {"extra_mid_channels", c->extra_mid_channels, SEGC_SSD_LEVELS - 1},
        {"steps", c->anchors.steps, SEGC_SSD_LEVELS},
        {"scales", c->anchors.scales, SEGC_SSD_LEVELS + 1},
    };
    for (size_t k = 0; k < sizeof lists / sizeof *lists; k++) {
        int got = segc_spec_ints(s, lists[k].key, list, SEGC_SSD_LEVELS + 2);
        if (got != lists[k].want)
            return segc_errorf(err, n, "model.%s: expected %d values, found %d", lists[k].key, lists[k].want, got);
        for (int i = 0; i < got; i++) {
            if (list[i] < 1) return segc_errorf(err, n, "model.%s: values must be >= 1, found %d", lists[k].key, list[i]);
            lists[k].dst[i] = list[i];
        }
    }
    c->anchors.image_size = segc_spec_int(s, "image_size");
    if (c->anchors.image_size < 1 || c->anchors.image_size > 4096)
        return segc_errorf(err, n, "model.image_size: expected 257..4096, found %d", c->anchors.image_size);
    segc_ssd_feature_sizes(c->anchors.image_size, c->anchors.feat);   /* checked below */
    c->match_iou = (float)segc_spec_double(s, "match_iou");
    c->neg_ratio = segc_spec_int(s, "neg_ratio");
    return segc_ssd_check_config(c, err, n);
}

static bool ssd_validate(const segc_model_spec *s, char *err, size_t n) {
    segc_ssd_config c;
    return read_spec(s, &c, err, n);
}

typedef struct ssd_impl {
    segc_ssd *net;
    char pretrained[SEGC_MODEL_OPT_VALUE];
} ssd_impl;

static bool ssd_create(segc_model *m, const segc_model_spec *s, char *err, size_t n) {
    segc_ssd_config c;
    if (!read_spec(s, &c, err, n)) return false;
    ssd_impl *im = calloc(1, sizeof *im);
    if (!im) return segc_errorf(err, n, "ssd: out of memory");
    im->net = segc_ssd_new(&c, &m->params, err, n);
    if (!im->net) {
        free(im);
        return false;
    }
    segc_spec_str(s, "backbone_pretrained", im->pretrained, sizeof im->pretrained);
    char e2[512];
    if (*im->pretrained && !segc_resnet_load(&m->params, "backbone.", im->pretrained, true, NULL, e2, sizeof e2)) {
        segc_ssd_free(im->net);
        free(im);
        return segc_errorf(err, n, "model.backbone_pretrained: %s", e2);
    }
    m->impl = im;
    m->num_classes = c.num_classes;
    m->num_outputs = c.num_classes + 1;   /* background first */
    m->probs = SEGC_PROBS_SOFTMAX;
    return true;
}

static void ssd_init(segc_model *m, uint64_t seed) {
    ssd_impl *im = m->impl;
    segc_ssd_init(im->net, seed);
    if (!*im->pretrained) return;
    char err[512];
    segc_load_report rep;
    if (!segc_resnet_load(&m->params, "backbone.", im->pretrained, true, &rep, err, sizeof err))
        fprintf(stderr, "ssd: model.backbone_pretrained: %s\n", err);
}

static void ssd_destroy(segc_model *m) {
    ssd_impl *im = m->impl;
    if (!im) return;
    segc_ssd_free(im->net);
    free(im);
    m->impl = NULL;
}

static bool ssd_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out) {
    out->n_maps = 0;
    return segc_ssd_forward(ctx, ((ssd_impl *)m->impl)->net, images, &out->scores, &out->boxes);
}

/* One image's ground truth for matching: non-crowd boxes with a positive area, normalised by
 * the input size, labels shifted past the background. Returns the count. */
static int image_gt(const segc_targets *t, int i, float *gt, int32_t *lab) {
    int k = 0;
    const float sx = 1.f / (float)t->img_w, sy = 1.f / (float)t->img_h;
    for (int b = 0; b < t->n_boxes[i]; b++) {
        if (t->box_crowd && t->box_crowd[i] && t->box_crowd[i][b]) continue;
        const float *bx = t->boxes[i] + 4 * b;
        if (!(bx[2] > bx[0] && bx[3] > bx[1])) continue;   /* zero area: no regression target exists */
        gt[4 * k + 0] = bx[0] * sx;
        gt[4 * k + 1] = bx[1] * sy;
        gt[4 * k + 2] = bx[2] * sx;
        gt[4 * k + 3] = bx[3] * sy;
        lab[k++] = t->box_labels[i][b] + 1;
    }
    return k;
}

static segc_tensor *ssd_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t) {
    const segc_ssd *net = ((ssd_impl *)m->impl)->net;
    if (!out->boxes || !out->scores) {
        segc_set_error(ctx, "ssd loss: the outputs have no scores/boxes");
        return NULL;
    }
    const int N = (int)out->boxes->shape[0], A = net->anchors.n, K = m->num_classes;
    if (!t || t->n_images != N || !t->n_boxes || !t->boxes || !t->box_labels || t->img_w < 1 || t->img_h < 1) {
        segc_set_error(ctx, "ssd loss: expected detection targets (boxes per image) for %d images, found %s", N,
                       !t ? "none" : t->labels ? "a label map" : "an incomplete set");
        return NULL;
    }
    int max_gt = 0;
    for (int i = 0; i < N; i++) {
        if (t->n_boxes[i] < 0 || (t->n_boxes[i] > 0 && (!t->boxes[i] || !t->box_labels[i]))) {
            segc_set_error(ctx, "ssd loss: image %d: %d boxes without data", i, t->n_boxes[i]);
            return NULL;
        }
        for (int b = 0; b < t->n_boxes[i]; b++)
            if (t->box_labels[i][b] < 0 || t->box_labels[i][b] >= K) {
                segc_set_error(ctx, "ssd loss: image %d box %d: label %d outside 0..%d", i, b, t->box_labels[i][b],
                               K - 1);
                return NULL;
            }
        if (t->n_boxes[i] > max_gt) max_gt = t->n_boxes[i];
    }
    segc_tensor *glabel = segc_tensor_new(ctx, SEGC_I32, 2, (int64_t[]){N, A});
    segc_tensor *gvec = segc_tensor_new(ctx, SEGC_F32, 3, (int64_t[]){N, 4, A});
    float *xywh = segc_arena_alloc(&ctx->arena, (size_t)N * A * 4 * sizeof(float) + 64);
    float *gt = segc_arena_alloc(&ctx->arena, (size_t)N * (max_gt + 1) * 4 * sizeof(float));
    int32_t *gl = segc_arena_alloc(&ctx->arena, (size_t)N * (max_gt + 1) * sizeof(int32_t));
    if (!glabel || !gvec || !xywh || !gt || !gl) return NULL;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        float *g = gt + (int64_t)i * (max_gt + 1) * 4, *tx = xywh + (int64_t)i * A * 4;
        int32_t *l = gl + (int64_t)i * (max_gt + 1);
        int n_gt = image_gt(t, i, g, l);
        segc_ssd_match(&net->anchors, g, l, n_gt, net->cfg.match_iou, (int32_t *)glabel->data + (int64_t)i * A, tx);
        segc_ssd_encode(&net->anchors, tx, segc_f32(gvec) + (int64_t)i * 4 * A);
    }
    return segc_ssd_loss(ctx, out->boxes, out->scores, gvec, glabel, net->cfg.neg_ratio);
}

typedef struct cand {
    float p;
    int a;
} cand;

static int by_prob_desc(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->p != b->p) return a->p > b->p ? -1 : 1;
    return (a->a > b->a) - (a->a < b->a);
}

static bool grow(segc_detections *d, int64_t need) {
    if (need <= d->cap) return true;
    int64_t cap = d->cap ? d->cap : 256;
    while (cap < need) cap *= 2;
    segc_detection *p = realloc(d->det, (size_t)cap * sizeof *p);
    if (!p) return false;
    d->det = p;
    d->cap = cap;
    return true;
}

static bool ssd_detect(segc_ctx *ctx, const segc_model *m, const segc_model_out *out, int in_h, int in_w,
                       const int *ori_h, const int *ori_w, const segc_detect_opts *o, segc_detections *dets) {
    const segc_ssd *net = ((ssd_impl *)m->impl)->net;
    segc_detect_opts dflt;
    if (!o) segc_detect_opts_default(&dflt), o = &dflt;
    if (!out->scores || !out->boxes) {
        segc_set_error(ctx, "ssd detect: the outputs have no scores/boxes");
        return false;
    }
    const int N = (int)out->scores->shape[0], C = (int)out->scores->shape[1], A = (int)out->scores->shape[2];
    if (A != net->anchors.n || C != m->num_classes + 1 || out->boxes->shape[0] != N || out->boxes->shape[2] != A) {
        segc_set_error(ctx, "ssd detect: expected scores [N, %d, %d] and boxes [N, 4, %d]", m->num_classes + 1,
                       net->anchors.n, net->anchors.n);
        return false;
    }
    int64_t *off = realloc(dets->off, (size_t)(N + 1) * sizeof *off);
    if (!off) {
        segc_set_error(ctx, "ssd detect: out of memory");
        return false;
    }
    dets->off = off;
    dets->n_images = N;
    off[0] = 0;
    const float *sc = segc_as_f32(ctx, out->scores), *bx = segc_as_f32(ctx, out->boxes);
    const int per_class = o->max_candidates > 0 && o->max_candidates < A ? o->max_candidates : A;
    const int64_t max_cand = (int64_t)per_class * (C - 1);
    float *lse = segc_arena_alloc(&ctx->arena, (size_t)A * sizeof(float) + 64);
    float *ltrb = segc_arena_alloc(&ctx->arena, (size_t)A * 4 * sizeof(float) + 64);
    cand *cl = segc_arena_alloc(&ctx->arena, (size_t)A * sizeof(cand) + 64);
    float *cb = segc_arena_alloc(&ctx->arena, (size_t)max_cand * 4 * sizeof(float) + 64);
    float *cs = segc_arena_alloc(&ctx->arena, (size_t)max_cand * sizeof(float) + 64);
    int32_t *clab = segc_arena_alloc(&ctx->arena, (size_t)max_cand * sizeof(int32_t) + 64);
    int *keep = segc_arena_alloc(&ctx->arena, (size_t)max_cand * sizeof(int) + 64);
    if (!lse || !ltrb || !cl || !cb || !cs || !clab || !keep) return false;
    for (int i = 0; i < N; i++) {
        const float *x = sc + (int64_t)i * C * A;
        /* log-sum-exp per default box, in blocks of boxes (each box's sum runs over the classes
           in the same order whatever the thread count) */
#pragma omp parallel for schedule(static) if (A >= 4096)
        for (int a0 = 0; a0 < A; a0 += 512) {
            const int a1 = a0 + 512 < A ? a0 + 512 : A;
            float *s = ltrb + a0;   /* sum of exp (ltrb reused as scratch) */
            for (int a = a0; a < a1; a++) lse[a] = x[a];
            for (int c = 1; c < C; c++)
                for (int a = a0; a < a1; a++) lse[a] = fmaxf(lse[a], x[(int64_t)c * A + a]);
            for (int a = a0; a < a1; a++) s[a - a0] = 0.f;
            for (int c = 0; c < C; c++)
                for (int a = a0; a < a1; a++) s[a - a0] += expf(x[(int64_t)c * A + a] - lse[a]);
            for (int a = a0; a < a1; a++) lse[a] += logf(s[a - a0]);
        }
        segc_ssd_decode(&net->anchors, bx + (int64_t)i * 4 * A, ltrb);
        /* p = exp(x - lse) > thresh only where x - lse > log(thresh): the exp is taken (and the
           exact test made) just past that bound, not for all A x C scores */
        const bool prefilter = o->score_thresh > 0.f;
        const float log_thresh = prefilter ? logf(o->score_thresh) - 1e-3f : 0.f;
        int64_t nc = 0;
        for (int c = 1; c < C; c++) {
            int k = 0;
            for (int a = 0; a < A; a++) {
                const float d = x[(int64_t)c * A + a] - lse[a];
                if (prefilter && !(d > log_thresh)) continue;
                const float p = expf(d);
                if (p > o->score_thresh) cl[k++] = (cand){p, a};
            }
            if (k > per_class) {
                qsort(cl, (size_t)k, sizeof *cl, by_prob_desc);
                k = per_class;
            }
            for (int j = 0; j < k; j++, nc++) {
                memcpy(cb + 4 * nc, ltrb + 4 * (int64_t)cl[j].a, 4 * sizeof(float));
                cs[nc] = cl[j].p;
                clab[nc] = c - 1;
            }
        }
        const int n_keep = segc_nms(cb, cs, clab, (int)nc, o->nms_iou, o->max_per_image, keep);
        if (n_keep < 0 || !grow(dets, off[i] + n_keep)) {
            segc_set_error(ctx, "ssd detect: out of memory");
            return false;
        }
        const float W = (float)(ori_w ? ori_w[i] : in_w), H = (float)(ori_h ? ori_h[i] : in_h);
        for (int j = 0; j < n_keep; j++) {
            const int q = keep[j];
            segc_detection *d = &dets->det[off[i] + j];
            d->box[0] = cb[4 * q + 0] * W;
            d->box[1] = cb[4 * q + 1] * H;
            d->box[2] = cb[4 * q + 2] * W;
            d->box[3] = cb[4 * q + 3] * H;
            d->score = cs[q];
            d->label = clab[q];
        }
        off[i + 1] = off[i] + n_keep;
    }
    return true;
}

const segc_model_family segc_family_ssd = {
    .type = "ssd",
    .summary = "SSD300 (MLPerf SSD-ResNet34: ResNet-18/34 to layer 3 at stride 8, extra layers, 8732 default boxes, "
               "hard-negative loss, NMS); torchvision / MLPerf names",
    .task = SEGC_TASK_DETECTION,
    .variants = "r18|r34",
    .default_variant = "r34",
    .keys = keys,
    .n_keys = N_KEYS,
    .validate = ssd_validate,
    .create = ssd_create,
    .init = ssd_init,
    .destroy = ssd_destroy,
    .forward = ssd_forward,
    .loss = ssd_loss,
    .postprocess = NULL,
    .detect = ssd_detect,
};
