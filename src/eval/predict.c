/* Running a model over image files (label + overlay PNGs) and over a dataset
 * split (mmseg metrics): the library side of `segc predict` / `segc eval`. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "segc/image_io.h"
#include "segc/ops.h"
#include "segc/predict.h"
#include "segc/profile.h"

void segc_predict_default_palette(uint8_t *rgb, int n_colors) {
    for (int i = 0; i < n_colors; i++) {
        int id = i, r = 0, g = 0, b = 0;
        for (int bit = 7; bit >= 0 && id; bit--, id >>= 3) {
            r |= (id & 1) << bit;
            g |= ((id >> 1) & 1) << bit;
            b |= ((id >> 2) & 1) << bit;
        }
        rgb[3 * i] = (uint8_t)r, rgb[3 * i + 1] = (uint8_t)g, rgb[3 * i + 2] = (uint8_t)b;
    }
}

/* mkdir -p */
bool segc_predict_make_dirs(const char *dir, char *err, size_t errlen) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        snprintf(err, errlen, "predict: output path too long: %.64s...", dir);
        return false;
    }
    for (char *p = buf + 1;; p++) {
        bool end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "predict: cannot create %s: %s", buf, strerror(errno));
                return false;
            }
            if (end) break;
            *p = '/';
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "predict: %s is not a directory", dir);
        return false;
    }
    return true;
}

bool segc_predict_write(const char *dir, const char *stem, const segc_image *label, const segc_image *img,
                        const uint8_t *palette, int n_colors, float alpha, char *err, size_t errlen) {
    if (!label || !label->data || label->dtype != SEGC_U8 || label->c != 1) {
        snprintf(err, errlen, "predict: label map for %s must be U8 with 1 channel", stem);
        return false;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.png", dir, stem);
    if (!segc_png_write(path, label, NULL, 0, err, errlen)) return false;
    if (!img) return true;
    segc_image ov;
    if (!segc_label_overlay(img, label, palette, n_colors, alpha, &ov, err, errlen)) return false;
    snprintf(path, sizeof path, "%s/%s_overlay.png", dir, stem);
    bool ok = segc_png_write(path, &ov, NULL, 0, err, errlen);
    segc_image_free(&ov);
    return ok;
}

/* ---- input listing ---- */

static bool is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* file name without directory and last extension, into buf */
static const char *stem_of(const char *path, char *buf, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(buf, n, "%s", base);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct str_list {
    char **v;
    int n, cap;
} str_list;

static bool list_push(str_list *l, const char *a, const char *b) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return false;
        l->v = v, l->cap = cap;
    }
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *s = malloc(la + lb + 2);
    if (!s) return false;
    memcpy(s, a, la);
    if (b) {
        s[la] = '/';
        memcpy(s + la + 1, b, lb + 1);
    } else {
        s[la] = 0;
    }
    l->v[l->n++] = s;
    return true;
}

void segc_predict_free_list(char **paths, int n_paths) {
    for (int i = 0; i < n_paths; i++) free(paths[i]);
    free(paths);
}

static bool add_folder(str_list *l, const char *dir, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "predict: cannot read folder %s: %s", dir, strerror(errno));
        return false;
    }
    int first = l->n;
    struct dirent *e;
    bool ok = true;
    while (ok && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        ok = list_push(l, dir, e->d_name);
    }
    closedir(d);
    if (!ok) {
        snprintf(err, errlen, "predict: out of memory listing %s", dir);
        return false;
    }
    qsort(l->v + first, (size_t)(l->n - first), sizeof *l->v, cmp_str);
    return true;
}

bool segc_predict_list_inputs(const char *const *inputs, int n_inputs, char ***paths, int *n_paths, char *err,
                              size_t errlen) {
    *paths = NULL;
    *n_paths = 0;
    str_list l = {0};
    for (int i = 0; i < n_inputs; i++) {
        struct stat st;
        if (stat(inputs[i], &st) != 0) {
            snprintf(err, errlen, "predict: cannot open input %s: %s", inputs[i], strerror(errno));
            segc_predict_free_list(l.v, l.n);
            return false;
        }
        bool ok = S_ISDIR(st.st_mode) ? add_folder(&l, inputs[i], err, errlen) : list_push(&l, inputs[i], NULL);
        if (!ok) {
            if (!S_ISDIR(st.st_mode)) snprintf(err, errlen, "predict: out of memory listing inputs");
            segc_predict_free_list(l.v, l.n);
            return false;
        }
    }
    /* stems must be unique: sort (stem, index) pairs and compare neighbours */
    char **stems = malloc((size_t)(l.n ? l.n : 1) * sizeof *stems);
    bool ok = stems != NULL;
    for (int i = 0; ok && i < l.n; i++) {
        char buf[1024];
        stems[i] = strdup(stem_of(l.v[i], buf, sizeof buf));
        if (!stems[i]) {
            segc_predict_free_list(stems, i);
            stems = NULL, ok = false;
        }
    }
    if (!ok) {
        snprintf(err, errlen, "predict: out of memory listing inputs");
        segc_predict_free_list(l.v, l.n);
        return false;
    }
    qsort(stems, (size_t)l.n, sizeof *stems, cmp_str);
    for (int i = 1; i < l.n && ok; i++) {
        if (!strcmp(stems[i - 1], stems[i])) {
            snprintf(err, errlen, "predict: two inputs share the name %s: their outputs would collide", stems[i]);
            ok = false;
        }
    }
    segc_predict_free_list(stems, l.n);
    if (!ok) {
        segc_predict_free_list(l.v, l.n);
        return false;
    }
    *paths = l.v;
    *n_paths = l.n;
    return true;
}

/* ---- predict over files ---- */

void segc_predict_opts_default(segc_predict_opts *o) {
    memset(o, 0, sizeof *o);
    segc_infer_opts_default(&o->infer);
    o->dtype = SEGC_F32;
    o->channels = 3;
    const float mean[3] = SEGC_IMAGENET_MEAN, std[3] = SEGC_IMAGENET_STD;
    memcpy(o->mean, mean, sizeof mean);
    memcpy(o->std, std, sizeof std);
    o->alpha = 0.5f;
    o->write_overlay = true;
}

/* f32 CHW buffer (c x h x w) as a [1, c, h, w] tensor of dtype in ctx */
static segc_tensor *image_from_f32(segc_ctx *ctx, float *f, int n, int c, int h, int w, segc_dtype dtype) {
    int64_t shape[4] = {n, c, h, w};
    if (dtype == SEGC_F32) return segc_tensor_wrap(ctx, SEGC_F32, 4, shape, f);
    segc_tensor *t = segc_tensor_new(ctx, SEGC_BF16, 4, shape);
    segc_f32_to_bf16_n(f, segc_bf16p(t), segc_numel(t));
    return t;
}

/* Moves ctx's error into err and clears it, so ctx stays usable. */
static bool take_ctx_error(segc_ctx *ctx, const char *what, char *err, size_t errlen) {
    snprintf(err, errlen, "%s: %s", what, ctx->has_err ? segc_last_error(ctx) : "failed");
    segc_clear_error(ctx);
    return false;
}

static bool predict_one(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const char *path,
                        const char *out_dir, const segc_predict_opts *o, const uint8_t *palette, int n_colors,
                        segc_arena *scratch, char *err, size_t errlen) {
    segc_image im = {0};
    if (!segc_image_read(path, o->channels == 1 ? SEGC_READ_GRAY : SEGC_READ_RGB, &im, err, errlen)) return false;
    segc_tensor *x;
    if (o->pipeline) {
        segc_sample s = {.img = im};
        segc_aug_state st;
        segc_arena_reset(scratch);
        if (!segc_pipeline_run(o->pipeline, &s, 0, scratch, &st, err, errlen)) {
            segc_image_free(&im);
            return false;
        }
        int h, w;
        segc_aug_out_size(&st, &h, &w);
        float *f = segc_arena_alloc(&ctx->arena, (size_t)st.c * h * w * sizeof(float));
        segc_aug_write_image(&st, f, h, w);
        x = image_from_f32(ctx, f, 1, st.c, h, w, o->dtype);
    } else {
        x = segc_infer_image_tensor(ctx, &im, o->mean, o->std, o->dtype);
    }
    segc_tensor *lab = segc_infer(ctx, work, forward, model, x, im.h, im.w, &o->infer, NULL);
    bool ok;
    if (!lab) {
        ok = take_ctx_error(ctx, path, err, errlen);
    } else {
        segc_image label = {.h = im.h, .w = im.w, .c = 1, .dtype = SEGC_U8, .data = lab->data};
        char stem[1024];
        stem_of(path, stem, sizeof stem);
        ok = segc_predict_write(out_dir, stem, &label, o->write_overlay ? &im : NULL, palette, n_colors, o->alpha,
                                err, errlen);
    }
    segc_image_free(&im);
    return ok;
}

bool segc_predict_paths(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model,
                        const char *const *inputs, int n_inputs, const char *out_dir, const segc_predict_opts *o,
                        int *n_written, char *err, size_t errlen) {
    if (n_written) *n_written = 0;
    if (o->channels != 1 && o->channels != 3) {
        snprintf(err, errlen, "predict: channels must be 1 or 3, found %d", o->channels);
        return false;
    }
    if (o->dtype != SEGC_F32 && o->dtype != SEGC_BF16) {
        snprintf(err, errlen, "predict: dtype must be f32 or bf16, found %s", segc_dtype_name(o->dtype));
        return false;
    }
    if (o->palette && (o->n_colors < 0 || o->n_colors > 256)) {
        snprintf(err, errlen, "predict: palette must have 0..256 colours, found %d", o->n_colors);
        return false;
    }
    if (!segc_infer_opts_validate(&o->infer, err, errlen)) return false;
    if (o->pipeline && !segc_pipeline_validate(o->pipeline, err, errlen)) return false;
    char **paths;
    int n;
    if (!segc_predict_list_inputs(inputs, n_inputs, &paths, &n, err, errlen)) return false;
    if (!segc_predict_make_dirs(out_dir, err, errlen)) {
        segc_predict_free_list(paths, n);
        return false;
    }
    uint8_t default_palette[256 * 3];
    const uint8_t *palette = o->palette;
    int n_colors = o->n_colors;
    if (!palette) {
        segc_predict_default_palette(default_palette, 256);
        palette = default_palette;
        n_colors = 255;   /* id 255 (ignore) is left uncoloured */
    }
    segc_arena scratch;
    segc_arena_init(&scratch, 0);
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        segc_ctx_step_begin(ctx);
        double t0 = segc_now_s();
        ok = predict_one(ctx, work, forward, model, paths[i], out_dir, o, palette, n_colors, &scratch, err, errlen);
        if (ok && n_written) (*n_written)++;
        if (ok && !o->quiet)
            fprintf(stderr, "predict: [%d/%d] %s (%.0f ms)\n", i + 1, n, paths[i], 1e3 * (segc_now_s() - t0));
    }
    segc_arena_free(&scratch);
    segc_predict_free_list(paths, n);
    return ok;
}

/* ---- evaluation ---- */

void segc_eval_sample_free(segc_eval_sample *s) {
    segc_image_free(&s->img);
    segc_image_free(&s->gt);
    segc_image_free(&s->pred);
}

/* position in the pass of kept sample j of k over total samples */
static int64_t keep_position(int j, int64_t total, int k) { return (2 * (int64_t)j + 1) * total / (2 * (int64_t)k); }

/* keeps image, ground truth and prediction of one evaluated sample (a
 * sample that cannot be shown is simply left out) */
static void keep_sample(const segc_dataset *ds, int64_t index, const uint8_t *gt, const uint8_t *pred, int h, int w,
                        segc_eval_sample *s) {
    memset(s, 0, sizeof *s);
    segc_sample smp;
    memset(&smp, 0, sizeof smp);
    char e[256];
    if (!segc_dataset_load(ds, index, &smp, e, sizeof e)) return;
    bool ok = smp.img.h == h && smp.img.w == w && (smp.img.dtype == SEGC_U8 || smp.img.dtype == SEGC_F32);
    if (ok) ok = segc_image_alloc(&s->img, h, w, 3, SEGC_U8);
    if (ok) {   /* channel 0 (gray) or RGB; float images (medical) are min-max scaled for display */
        uint8_t *d = s->img.data;
        int64_t n = (int64_t)h * w;
        int C = smp.img.c;
        if (smp.img.dtype == SEGC_U8) {
            const uint8_t *src = smp.img.data;
            for (int64_t i = 0; i < n; i++)
                for (int k = 0; k < 3; k++) d[3 * i + k] = src[i * C + (C == 3 ? k : 0)];
        } else {
            const float *src = smp.img.data;
            float lo = 0, hi = 0;
            for (int64_t i = 0; i < n; i++) {
                float v = src[i * C];
                if (i == 0 || v < lo) lo = v;
                if (i == 0 || v > hi) hi = v;
            }
            float sc = hi > lo ? 255.f / (hi - lo) : 0.f;
            for (int64_t i = 0; i < n; i++)
                for (int k = 0; k < 3; k++) d[3 * i + k] = (uint8_t)((src[i * C] - lo) * sc + 0.5f);
        }
    }
    ok = ok && segc_image_alloc(&s->gt, h, w, 1, SEGC_U8) && segc_image_alloc(&s->pred, h, w, 1, SEGC_U8);
    if (ok) {
        memcpy(s->gt.data, gt, (size_t)h * w);
        memcpy(s->pred.data, pred, (size_t)h * w);
    }
    const char *path = segc_dataset_image_path(ds, index), *base = path ? strrchr(path, '/') : NULL;
    snprintf(s->name, sizeof s->name, "%s", base ? base + 1 : path ? path : "?");
    segc_sample_free(&smp);
    if (!ok) segc_eval_sample_free(s);
}

/* [h, w] top-left region of a (full_h x full_w) map of element size es, into ctx */
static void *crop_map(segc_ctx *ctx, const void *src, int full_h, int full_w, int h, int w, size_t es) {
    if (h == full_h && w == full_w) return (void *)src;
    unsigned char *d = segc_arena_alloc(&ctx->arena, (size_t)h * w * es);
    for (int y = 0; y < h; y++) memcpy(d + (size_t)y * w * es, (const unsigned char *)src + (size_t)y * full_w * es,
                                       (size_t)w * es);
    return d;
}

/* labels of x: the model's probabilities and postprocess when it has one, else the
 * inference's own argmax / threshold */
segc_tensor *segc_predict_labels(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, segc_tensor *x,
                                 int lh, int lw, const segc_eval_opts *o) {
    const segc_model *m = o->model;
    segc_infer_opts io = o->infer;
    if (m) io.probs = m->probs;
    if (!m || !m->family->postprocess) return segc_infer(ctx, work, forward, model, x, lh, lw, &io, NULL);
    segc_tensor *probs = segc_infer_probs(ctx, work, forward, model, x, lh, lw, &io);
    return probs ? segc_model_postprocess(ctx, m, probs) : NULL;
}

/* Validation loss: a forward that, called on the group's own image tensor (whole mode, no resize), also
 * computes the model's loss on that output; later calls (flip, other scales, windows) are plain forwards. */
typedef struct loss_probe {
    segc_model *m;
    const segc_tensor *x;
    segc_tensor *labels;
    bool done;
    double value;
} loss_probe;

/* The loss of out; a loss the model cannot compute here (e.g. labels of another size than a
 * model's loss accepts) is NaN, which leaves the split's validation loss undefined, not the
 * evaluation failed. */
static void probe_loss(segc_ctx *ctx, loss_probe *p, const segc_model_out *out) {
    segc_targets tg = {.labels = p->labels, .ignore_index = SEGC_IGNORE_INDEX};
    segc_tensor *l = segc_model_loss(ctx, p->m, out, &tg);
    p->done = true;
    p->value = !l ? NAN : l->dtype == SEGC_BF16 ? segc_bf16_to_f32(segc_bf16p(l)[0]) : segc_f32(l)[0];
    if (!l) segc_clear_error(ctx);
}

static segc_tensor *probe_forward(segc_ctx *ctx, void *probe, segc_tensor *images) {
    loss_probe *p = probe;
    segc_model_out out;
    if (!segc_model_forward(ctx, p->m, images, &out)) return NULL;
    if (images == p->x && !p->done) probe_loss(ctx, p, &out);
    return out.maps[0];
}

static bool eval_group(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const segc_batch *b,
                       int first, int count, const segc_eval_opts *o, const segc_dataset *ds, segc_evaluator *ev,
                       uint8_t **preds) {
    const int ih = b->img_h[first], iw = b->img_w[first], lh = b->label_hs[first], lw = b->label_ws[first];
    const size_t plane = (size_t)b->h * b->w, les = segc_dtype_size(b->label_dtype);
    float *f = b->images + (size_t)first * b->c * plane;
    if (ih != b->h || iw != b->w) {   /* cut the unpadded image out of the padded slot */
        float *g = segc_arena_alloc(&ctx->arena, (size_t)count * b->c * ih * iw * sizeof(float));
        for (int p = 0; p < count * b->c; p++)
            for (int y = 0; y < ih; y++)
                memcpy(g + ((size_t)p * ih + y) * iw, f + (size_t)p * plane + (size_t)y * b->w, (size_t)iw * 4);
        f = g;
    }
    segc_tensor *x = image_from_f32(ctx, f, count, b->c, ih, iw, o->dtype);
    int64_t lshape[3] = {count, lh, lw};
    void *lab = (unsigned char *)b->labels + (size_t)first * b->label_h * b->label_w * les;
    if (lh != b->label_h || lw != b->label_w) {
        unsigned char *d = segc_arena_alloc(&ctx->arena, (size_t)count * lh * lw * les);
        for (int i = 0; i < count; i++)
            memcpy(d + (size_t)i * lh * lw * les,
                   crop_map(ctx, (unsigned char *)lab + (size_t)i * b->label_h * b->label_w * les, b->label_h,
                            b->label_w, lh, lw, les),
                   (size_t)lh * lw * les);
        lab = d;
    }
    segc_tensor *lt = segc_tensor_wrap(ctx, b->label_dtype, 3, lshape, lab);
    const bool want_loss = o->loss && o->model && forward == segc_model_logits_fn && model == (void *)o->model;
    loss_probe probe = {.m = model, .x = x, .labels = lt};
    segc_tensor *pred = segc_predict_labels(ctx, work, want_loss ? probe_forward : forward, want_loss ? (void *)&probe : model,
                                            x, lh, lw, o);
    if (!pred) return false;
    if (want_loss && !probe.done) {   /* slide windows / rescaled TTA: one whole-image forward in eval mode */
        const bool ge = ctx->grad_enabled, tr = ctx->training;
        ctx->grad_enabled = ctx->training = false;
        segc_model_out out;
        if (segc_model_forward(ctx, probe.m, x, &out)) probe_loss(ctx, &probe, &out);
        else segc_clear_error(ctx), probe.value = NAN;   /* a model that only takes windows of this image */
        ctx->grad_enabled = ge, ctx->training = tr;
    }
    if (want_loss) segc_evaluator_add_loss(ev, probe.value, count);
    int64_t *vol = segc_arena_alloc(&ctx->arena, (size_t)count * sizeof *vol);
    for (int i = 0; i < count; i++) {
        int slice = 0;
        vol[i] = b->index[first + i];
        if (ds) segc_dataset_sample_volume(ds, b->index[first + i], &vol[i], &slice);
        if (preds) preds[first + i] = (uint8_t *)pred->data + (size_t)i * lh * lw;
    }
    return segc_evaluator_add(ev, ctx, pred, lt, vol);
}

bool segc_eval_batch(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const segc_batch *b,
                     const segc_eval_opts *o, const segc_dataset *ds, segc_evaluator *ev, uint8_t **preds) {
    if (!b || !forward || !ev) return false;
    if (!b->labels || b->label_h < 1 || b->label_w < 1) {
        segc_set_error(ctx, "eval: batch of %d samples has no label maps", b->n);
        return false;
    }
    if (o->dtype != SEGC_F32 && o->dtype != SEGC_BF16) {
        segc_set_error(ctx, "eval: dtype must be f32 or bf16, found %s", segc_dtype_name(o->dtype));
        return false;
    }
    for (int i = 0; i < b->n;) {   /* runs of samples sharing image and label sizes go through together */
        int j = i + 1;
        while (j < b->n && b->img_h[j] == b->img_h[i] && b->img_w[j] == b->img_w[i] &&
               b->label_hs[j] == b->label_hs[i] && b->label_ws[j] == b->label_ws[i])
            j++;
        if (!eval_group(ctx, work, forward, model, b, i, j - i, o, ds, ev, preds)) return false;
        i = j;
    }
    return true;
}

void segc_eval_opts_default(segc_eval_opts *o) {
    memset(o, 0, sizeof *o);
    segc_infer_opts_default(&o->infer);
    o->dtype = SEGC_F32;
    o->channels = 3;
    o->batch_size = 1;
    o->num_workers = 1;
    o->world_size = 1;
}

bool segc_eval_dataset(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const segc_dataset *ds,
                       const segc_eval_opts *o, segc_evaluator *ev, char *err, size_t errlen) {
    if (o->n_kept) *o->n_kept = 0;
    if (o->model && o->model->family->task == SEGC_TASK_DETECTION)   /* predict_detect.c */
        return segc_detect_dataset(ctx, model, ds, o, NULL, ev, NULL, NULL, err, errlen);
    if (!segc_infer_opts_validate(&o->infer, err, errlen)) return false;
    segc_pipeline normalize_only = {.n = 1, .t = {segc_aug_default(SEGC_AUG_NORMALIZE)}};
    const segc_pipeline *p = o->pipeline ? o->pipeline : &normalize_only;
    segc_loader_opts lo;
    segc_loader_opts_default(&lo);
    lo.batch_size = o->batch_size;
    lo.num_workers = o->num_workers;
    lo.sampler = SEGC_SAMPLER_SEQUENTIAL;
    lo.shuffle = false;
    lo.rank = o->rank;
    lo.world_size = o->world_size;
    lo.label_dtype = SEGC_U8;
    lo.channels = o->channels;
    lo.quiet = o->quiet;
    segc_loader *l = segc_loader_new(segc_dataset_source(ds), p, &lo, err, errlen);
    if (!l) return false;
    int64_t total = segc_loader_samples_per_epoch(l);
    if (o->max_samples > 0 && o->max_samples < total) total = o->max_samples;
    int64_t done = 0, next_report = 0;
    FILE *pf = o->quiet ? NULL : o->progress ? o->progress : stderr;
    bool tty = pf && isatty(fileno(pf));
    int kept = 0;
    double t0 = segc_now_s();
    bool ok = true;
    uint8_t *preds[1024];
    int64_t n_batches = 0;
    while (ok && done < total) {
        if (o->profile_batches) segc_profiler_iter(++n_batches);
        segc_prof_span pd = segc_prof_begin("loader_next", SEGC_PROF_DATA);
        const segc_batch *b = segc_loader_next(l, err, errlen);
        segc_prof_end(&pd, 0);
        if (!b) {
            ok = err[0] == 0;   /* "" marks the end of the pass */
            break;
        }
        segc_ctx_step_begin(ctx);
        segc_clear_error(ctx);
        /* kept samples are spread evenly over the pass (sample j of K at the
         * middle of the j-th of K equal stretches), not the first K:
         * consecutive frames of one sequence would show one scene */
        int64_t next_at = o->keep > 0 ? keep_position(kept, total, o->keep) : 0;
        bool keep = o->samples && kept < o->keep && b->n <= 1024 && done + b->n > next_at;
        if (!segc_eval_batch(ctx, work, forward, model, b, o, ds, ev, keep ? preds : NULL)) {
            const char *name = segc_dataset_image_path(ds, b->index[0]);
            ok = take_ctx_error(ctx, name ? name : "eval", err, errlen);
            break;
        }
        for (int i = 0; keep && i < b->n && kept < o->keep; i++) {
            if (done + i < keep_position(kept, total, o->keep)) continue;
            const size_t les = segc_dtype_size(b->label_dtype);
            if (les != 1 || b->label_hs[i] != b->label_h || b->label_ws[i] != b->label_w) continue;
            keep_sample(ds, b->index[i], (const uint8_t *)b->labels + (size_t)i * b->label_h * b->label_w, preds[i],
                        b->label_hs[i], b->label_ws[i], &o->samples[kept]);
            if (o->samples[kept].img.data) kept++;
        }
        done += b->n;
        if (pf && (tty || done >= next_report || done == total)) {
            double el = segc_now_s() - t0;
            fprintf(pf, "%seval %lld/%lld  %.1f img/s%s", tty ? "\r" : "", (long long)done, (long long)total,
                    (double)done / (el > 0 ? el : 1), tty && done < total ? "" : "\n");
            fflush(pf);
            next_report = done + (total > 20 ? total / 10 : 1);
        }
    }
    segc_loader_free(l);
    if (ok && done == 0) ok = segc_errorf(err, errlen, "eval: the split has no samples");
    if (!ok)
        for (int i = 0; i < kept; i++) segc_eval_sample_free(&o->samples[i]);
    if (o->n_kept) *o->n_kept = ok ? kept : 0;
    return ok;
}
