/* Detection models over a dataset split (predict.h): forward, the family's
 * detect hook (decode + NMS, boxes in original-image pixels), COCO mAP
 * through the task evaluator, COCO results files and images with the boxes
 * and class names drawn. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segc/coco_eval.h"
#include "segc/image_io.h"
#include "segc/predict.h"
#include "segc/profile.h"

/* Fallbacks for the contract functions of detection.h until the detection
 * family's file (src/tasks/detection_nms.c) defines them; its strong
 * definitions replace these. */
__attribute__((weak)) void segc_detections_free(segc_detections *d) {
    if (!d) return;
    free(d->off);
    free(d->det);
    memset(d, 0, sizeof *d);
}
__attribute__((weak)) void segc_detect_opts_default(segc_detect_opts *o) {
    *o = (segc_detect_opts){.score_thresh = 0.05f, .max_candidates = 200, .nms_iou = 0.5f, .max_per_image = 200};
}

/* ---- drawing ---- */

/* A 3x5 font of our own: 5 rows of 3 bits (MSB = left column) per glyph; letters are drawn as capitals. */
static const char *const glyph_chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-_?";
static const uint8_t glyphs[][5] = {
    {2, 5, 7, 5, 5}, {6, 5, 6, 5, 6}, {3, 4, 4, 4, 3}, {6, 5, 5, 5, 6}, {7, 4, 6, 4, 7}, {7, 4, 6, 4, 4},
    {3, 4, 5, 5, 3}, {5, 5, 7, 5, 5}, {7, 2, 2, 2, 7}, {1, 1, 1, 5, 2}, {5, 5, 6, 5, 5}, {4, 4, 4, 4, 7},
    {5, 7, 7, 5, 5}, {6, 5, 5, 5, 5}, {2, 5, 5, 5, 2}, {6, 5, 6, 4, 4}, {2, 5, 5, 6, 3}, {6, 5, 6, 5, 5},
    {3, 4, 2, 1, 6}, {7, 2, 2, 2, 2}, {5, 5, 5, 5, 7}, {5, 5, 5, 5, 2}, {5, 5, 7, 7, 5}, {5, 5, 2, 5, 5},
    {5, 5, 2, 2, 2}, {7, 1, 2, 4, 7}, {7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {6, 1, 2, 4, 7}, {6, 1, 2, 1, 6},
    {5, 5, 7, 1, 1}, {7, 4, 6, 1, 6}, {3, 4, 7, 5, 7}, {7, 1, 2, 2, 2}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 6},
    {0, 0, 0, 0, 2}, {0, 2, 0, 2, 0}, {0, 0, 7, 0, 0}, {0, 0, 0, 0, 7}, {6, 1, 2, 0, 2}};

static void put_px(segc_image *im, int x, int y, const uint8_t c[3]) {
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return;
    uint8_t *p = (uint8_t *)im->data + ((size_t)y * im->w + x) * 3;
    p[0] = c[0], p[1] = c[1], p[2] = c[2];
}

static void fill_rect(segc_image *im, int x0, int y0, int x1, int y1, const uint8_t c[3]) {
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > im->w) x1 = im->w;
    if (y1 > im->h) y1 = im->h;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) put_px(im, x, y, c);
}

int segc_draw_text_width(const char *text, int scale) { return (int)strlen(text) * 4 * scale; }

void segc_draw_text(segc_image *im, int x, int y, const char *text, const uint8_t fg[3], int scale) {
    if (!im || im->dtype != SEGC_U8 || im->c != 3 || !text) return;
    for (const char *s = text; *s; s++, x += 4 * scale) {
        char ch = (char)(*s >= 'a' && *s <= 'z' ? *s - 32 : *s);
        if (ch == ' ') continue;
        const char *at = strchr(glyph_chars, ch);
        const uint8_t *g = glyphs[at && ch ? at - glyph_chars : (int)strlen(glyph_chars) - 1];
        for (int r = 0; r < 5; r++)
            for (int q = 0; q < 3; q++)
                if (g[r] & (4 >> q)) fill_rect(im, x + q * scale, y + r * scale, x + (q + 1) * scale, y + (r + 1) * scale, fg);
    }
}

void segc_draw_box(segc_image *im, float x1, float y1, float x2, float y2, const uint8_t rgb[3], int thickness) {
    if (!im || im->dtype != SEGC_U8 || im->c != 3 || !(x2 >= x1) || !(y2 >= y1)) return;
    const float big = 1e6f;
    int a = (int)lrintf(fmaxf(-big, fminf(big, x1))), b = (int)lrintf(fmaxf(-big, fminf(big, y1)));
    int c = (int)lrintf(fmaxf(-big, fminf(big, x2))), d = (int)lrintf(fmaxf(-big, fminf(big, y2)));
    fill_rect(im, a, b, c + 1, b + thickness, rgb);
    fill_rect(im, a, d - thickness + 1, c + 1, d + 1, rgb);
    fill_rect(im, a, b, a + thickness, d + 1, rgb);
    fill_rect(im, c - thickness + 1, b, c + 1, d + 1, rgb);
}

void segc_draw_detections(segc_image *im, const segc_detection *det, int64_t n, const char *const *class_names,
                          int n_classes, const uint8_t *palette, float min_score) {
    if (!im || im->dtype != SEGC_U8 || im->c != 3) return;
    const int scale = im->w >= 480 ? 2 : 1, th = im->w >= 480 ? 2 : 1;
    static const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0};
    for (int64_t i = n - 1; i >= 0; i--) {   /* lowest scores first: the best boxes end on top */
        const segc_detection *d = &det[i];
        if (d->score < min_score) continue;
        uint8_t c[3] = {230, 60, 60};
        if (palette && d->label >= 0 && d->label < n_classes) memcpy(c, palette + 3 * d->label, 3);
        if (c[0] + c[1] + c[2] < 90) c[0] = c[1] = c[2] = 200;   /* keep black palette entries visible */
        segc_draw_box(im, d->box[0], d->box[1], d->box[2], d->box[3], c, th);
        char text[96];
        const char *name = class_names && d->label >= 0 && d->label < n_classes ? class_names[d->label] : NULL;
        if (name) snprintf(text, sizeof text, "%.80s %.2f", name, d->score);
        else snprintf(text, sizeof text, "%d %.2f", (int)d->label, d->score);
        int x = (int)fmaxf(0.f, fminf((float)im->w - 1, d->box[0])), y = (int)fmaxf(0.f, d->box[1]) - 7 * scale;
        if (y < 0) y = (int)fmaxf(0.f, d->box[1]) + th;
        fill_rect(im, x, y, x + segc_draw_text_width(text, scale) + scale, y + 7 * scale, c);
        segc_draw_text(im, x + scale, y + scale, text, c[0] * 3 + c[1] * 6 + c[2] > 1200 ? black : white, scale);
    }
}

/* ---- the loop ---- */

static bool take_err(segc_ctx *ctx, const char *what, char *err, size_t errlen) {
    snprintf(err, errlen, "%s: %s", what, ctx->has_err ? segc_last_error(ctx) : "failed");
    segc_clear_error(ctx);
    return false;
}

/* the U8 RGB image of dataset sample i with dets (NULL: its ground truth boxes) drawn; false: not drawable */
static bool drawn_sample(const segc_dataset *ds, int64_t i, const segc_detection *det, int64_t n, const char **names,
                         int k, const uint8_t *palette, float min_score, segc_image *out) {
    segc_sample smp;
    memset(&smp, 0, sizeof smp);
    char e[256];
    memset(out, 0, sizeof *out);
    if (!segc_dataset_load(ds, i, &smp, e, sizeof e)) return false;
    bool ok = smp.img.dtype == SEGC_U8 && (smp.img.c == 3 || smp.img.c == 1) &&
              segc_image_alloc(out, smp.img.h, smp.img.w, 3, SEGC_U8);
    if (ok) {
        const uint8_t *s = smp.img.data;
        uint8_t *d = out->data;
        for (int64_t p = 0; p < (int64_t)smp.img.h * smp.img.w; p++)
            for (int q = 0; q < 3; q++) d[3 * p + q] = s[p * smp.img.c + (smp.img.c == 3 ? q : 0)];
        if (det) segc_draw_detections(out, det, n, names, k, palette, min_score);
        else
            for (int b = 0; b < smp.n_boxes; b++) {
                segc_detection g = {{smp.boxes[4 * b], smp.boxes[4 * b + 1], smp.boxes[4 * b + 2], smp.boxes[4 * b + 3]},
                                    1.f, smp.box_labels[b]};
                segc_draw_detections(out, &g, 1, names, k, palette, 0.f);
            }
    }
    segc_sample_free(&smp);
    return ok;
}

static int64_t keep_at(int kept, int64_t total, int keep) { return (int64_t)((2 * (int64_t)kept + 1) * total / (2 * keep)); }

bool segc_detect_dataset(segc_ctx *ctx, segc_model *m, const segc_dataset *ds, const segc_eval_opts *o,
                         const segc_detect_opts *dopts, segc_evaluator *ev, segc_detect_sink sink, void *user,
                         char *err, size_t errlen) {
    if (o->n_kept) *o->n_kept = 0;
    if (!m || !m->family || m->family->task != SEGC_TASK_DETECTION)
        return segc_errorf(err, errlen, "eval: the model is not a detection model");
    if (o->dtype != SEGC_F32 && o->dtype != SEGC_BF16)
        return segc_errorf(err, errlen, "eval: dtype must be f32 or bf16, found %s", segc_dtype_name(o->dtype));
    segc_detect_opts dflt;
    segc_detect_opts_default(&dflt);
    if (!dopts) dopts = &dflt;
    segc_pipeline normalize_only = {.n = 1, .t = {segc_aug_default(SEGC_AUG_NORMALIZE)}};
    segc_loader_opts lo;
    segc_loader_opts_default(&lo);
    lo.batch_size = o->batch_size;
    lo.num_workers = o->num_workers;
    lo.sampler = SEGC_SAMPLER_SEQUENTIAL;
    lo.shuffle = false;
    lo.rank = o->rank;
    lo.world_size = o->world_size;
    lo.channels = o->channels;
    lo.quiet = o->quiet;
    segc_loader *l = segc_loader_new(segc_dataset_source(ds), o->pipeline ? o->pipeline : &normalize_only, &lo, err, errlen);
    if (!l) return false;
    int64_t total = segc_loader_samples_per_epoch(l);
    if (o->max_samples > 0 && o->max_samples < total) total = o->max_samples;
    FILE *pf = o->quiet ? NULL : o->progress ? o->progress : stderr;
    bool tty = pf && isatty(fileno(pf));
    const int k = m->num_classes;
    const char *names[256];
    uint8_t palette[256 * 3];
    segc_predict_default_palette(palette, k < 256 ? k : 256);
    for (int j = 0; j < k && j < 256; j++) {
        names[j] = j < segc_dataset_num_classes(ds) ? segc_dataset_class_name(ds, j) : NULL;
        if (j < segc_dataset_num_classes(ds)) memcpy(palette + 3 * j, segc_dataset_palette(ds, j), 3);
    }
    int64_t done = 0, next_report = 0, n_batches = 0;
    int kept = 0;
    double t0 = segc_now_s();
    bool ok = true, saved_grad = ctx->grad_enabled, saved_train = ctx->training;
    ctx->grad_enabled = false, ctx->training = false;
    while (ok && done < total) {
        if (o->profile_batches) segc_profiler_iter(++n_batches);
        segc_prof_span pd = segc_prof_begin("loader_next", SEGC_PROF_DATA);
        const segc_batch *b = segc_loader_next(l, err, errlen);
        segc_prof_end(&pd, 0);
        if (!b) {
            ok = err[0] == 0;
            break;
        }
        int n = b->n;
        if (done + n > total) n = (int)(total - done);
        for (int i = 0; ok && i < n;) {   /* runs of one image size go through together */
            int j = i + 1;
            while (j < n && b->img_h[j] == b->img_h[i] && b->img_w[j] == b->img_w[i]) j++;
            const int cnt = j - i, ih = b->img_h[i], iw = b->img_w[i];
            segc_ctx_step_begin(ctx);
            segc_clear_error(ctx);
            const size_t plane = (size_t)b->h * b->w;
            segc_tensor *x = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){cnt, b->c, ih, iw});
            if (x) {
                const float *f = b->images + (size_t)i * b->c * plane;
                float *g = x->data;
                for (int p = 0; p < cnt * b->c; p++)
                    for (int y = 0; y < ih; y++)
                        memcpy(g + ((size_t)p * ih + y) * iw, f + (size_t)p * plane + (size_t)y * b->w, (size_t)iw * 4);
                if (o->dtype == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
            }
            segc_model_out out;
            segc_detections d = {0};
            const char *what = segc_dataset_image_path(ds, b->index[i]);
            if (!x || !segc_model_forward(ctx, m, x, &out) ||
                !segc_model_detect(ctx, m, &out, ih, iw, b->ori_h + i, b->ori_w + i, dopts, &d)) {
                ok = take_err(ctx, what ? what : "eval", err, errlen);
                segc_detections_free(&d);
                break;
            }
            if (d.n_images != cnt) {
                ok = segc_errorf(err, errlen, "%s: detect returned %d images for a batch of %d", what ? what : "eval",
                                 d.n_images, cnt);
                segc_detections_free(&d);
                break;
            }
            const int64_t *idx = b->index + i;
            if (ev) ok = segc_evaluator_add_detections(ev, &d, idx, err, errlen);
            if (ok && sink) ok = sink(user, b, &d, idx, err, errlen);
            for (int q = 0; ok && q < cnt && o->samples && kept < o->keep; q++) {
                if (done + i + q < keep_at(kept, total, o->keep)) continue;
                segc_eval_sample *s = &o->samples[kept];
                memset(s, 0, sizeof *s);
                const segc_detection *dq = d.det + d.off[q];
                int64_t nq = d.off[q + 1] - d.off[q];
                if (drawn_sample(ds, idx[q], dq, nq, names, k, palette, 0.3f, &s->pred) &&
                    drawn_sample(ds, idx[q], NULL, 0, names, k, palette, 0.f, &s->gt) &&
                    drawn_sample(ds, idx[q], dq, 0, names, k, palette, 1.f, &s->img)) {
                    const char *p = segc_dataset_image_path(ds, idx[q]), *base = p ? strrchr(p, '/') : NULL;
                    snprintf(s->name, sizeof s->name, "%s", base ? base + 1 : p ? p : "");
                    kept++;
                } else
                    segc_eval_sample_free(s);
            }
            segc_detections_free(&d);
            i = j;
        }
        done += n;
        if (ok && pf && (tty || done >= next_report || done == total)) {
            double el = segc_now_s() - t0;
            fprintf(pf, "%seval %lld/%lld  %.1f img/s%s", tty ? "\r" : "", (long long)done, (long long)total,
                    (double)done / (el > 0 ? el : 1), tty && done < total ? "" : "\n");
            fflush(pf);
            next_report = done + (total > 20 ? total / 10 : 1);
        }
    }
    ctx->grad_enabled = saved_grad, ctx->training = saved_train;
    segc_loader_free(l);
    if (ok && done == 0) ok = segc_errorf(err, errlen, "eval: the split has no samples");
    if (!ok)
        for (int i = 0; i < kept; i++) segc_eval_sample_free(&o->samples[i]);
    if (o->n_kept) *o->n_kept = ok ? kept : 0;
    return ok;
}

/* ---- segc predict over a split ---- */

typedef struct pred_sink {
    const segc_dataset *ds;
    const segc_coco_gt *gt;
    segc_coco_results_writer w;
    const char *out_dir;
    bool draw;
    float min_score;
    const char *names[256];
    uint8_t palette[256 * 3];
    int k;
    int n_written;
} pred_sink;

static bool predict_sink(void *user, const segc_batch *b, const segc_detections *d, const int64_t *idx, char *err,
                         size_t errlen) {
    pred_sink *s = user;
    if (!segc_coco_results_add(&s->w, s->gt, d, idx, err, errlen)) return false;
    for (int i = 0; i < d->n_images; i++) {
        if (s->draw) {
            segc_image im;
            const int64_t nd = d->off[i + 1] - d->off[i];
            if (!drawn_sample(s->ds, idx[i], d->det + d->off[i], nd, s->names, s->k, s->palette, s->min_score, &im))
                return segc_errorf(err, errlen, "%s: cannot draw the detections", segc_dataset_image_path(s->ds, idx[i]));
            const char *p = segc_dataset_image_path(s->ds, idx[i]), *base = strrchr(p, '/');
            char stem[1024], path[4096];
            snprintf(stem, sizeof stem, "%s", base ? base + 1 : p);
            char *dot = strrchr(stem, '.');
            if (dot) *dot = 0;
            snprintf(path, sizeof path, "%s/%s_det.png", s->out_dir, stem);
            bool ok = segc_png_write(path, &im, NULL, 0, err, errlen);
            segc_image_free(&im);
            if (!ok) return false;
        }
        s->n_written++;
    }
    return true;
}

bool segc_predict_detections(segc_ctx *ctx, segc_model *m, const segc_dataset *ds, const segc_eval_opts *o,
                             const segc_detect_opts *dopts, const char *out_dir, bool draw, float min_score,
                             segc_evaluator *ev, int *n_written, char *err, size_t errlen) {
    if (n_written) *n_written = 0;
    pred_sink *s = calloc(1, sizeof *s);
    if (!s) return segc_errorf(err, errlen, "predict: out of memory");
    segc_coco_gt gt;
    if (!segc_dataset_coco_gt(ds, &gt)) {
        free(s);
        return segc_errorf(err, errlen, "predict: detection results need a COCO dataset, found '%s'", segc_dataset_name(ds));
    }
    s->ds = ds, s->gt = &gt, s->out_dir = out_dir, s->draw = draw, s->min_score = min_score;
    s->k = m->num_classes < 256 ? m->num_classes : 256;
    segc_predict_default_palette(s->palette, s->k);
    for (int j = 0; j < s->k && j < segc_dataset_num_classes(ds); j++) {
        s->names[j] = segc_dataset_class_name(ds, j);
        memcpy(s->palette + 3 * j, segc_dataset_palette(ds, j), 3);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/detections.json", out_dir);
    bool ok = segc_predict_make_dirs(out_dir, err, errlen) && segc_coco_results_begin(&s->w, path, err, errlen);
    if (ok) {
        ok = segc_detect_dataset(ctx, m, ds, o, dopts, ev, predict_sink, s, err, errlen);
        if (ok) ok = segc_coco_results_end(&s->w, err, errlen);
        else segc_coco_results_abort(&s->w);
    }
    if (n_written) *n_written = s->n_written;
    free(s);
    return ok;
}

/* ---- segc predict on image files ---- */

static int64_t image_id_of(const char *stem, int64_t fallback) {
    if (!*stem || strlen(stem) > 18) return fallback;
    for (const char *p = stem; *p; p++)
        if (*p < '0' || *p > '9') return fallback;
    return strtoll(stem, NULL, 10);
}

static bool detect_one(segc_ctx *ctx, segc_model *m, const char *path, int64_t number, const char *out_dir,
                       const segc_predict_opts *o, const segc_detect_opts *dopts, const int64_t *cat_ids,
                       const char *const *names, const uint8_t *palette, float min_score, segc_arena *scratch,
                       char *err, size_t errlen) {
    segc_image im = {0};
    if (!segc_image_read(path, o->channels == 1 ? SEGC_READ_GRAY : SEGC_READ_RGB, &im, err, errlen)) return false;
    segc_sample s = {.img = im};
    segc_aug_state st;
    segc_pipeline normalize_only = {.n = 1, .t = {segc_aug_default(SEGC_AUG_NORMALIZE)}};
    segc_arena_reset(scratch);
    bool ok = segc_pipeline_run(o->pipeline ? o->pipeline : &normalize_only, &s, 0, scratch, &st, err, errlen);
    segc_detections d = {0};
    if (ok) {
        int h, w;
        segc_aug_out_size(&st, &h, &w);
        segc_tensor *x = segc_tensor_new(ctx, SEGC_F32, 4, (int64_t[]){1, st.c, h, w});
        if (x) segc_aug_write_image(&st, x->data, h, w);
        if (x && o->dtype == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
        segc_model_out out;
        if (!x || !segc_model_forward(ctx, m, x, &out) ||
            !segc_model_detect(ctx, m, &out, h, w, &im.h, &im.w, dopts, &d) || d.n_images != 1)
            ok = take_err(ctx, path, err, errlen);
    }
    char stem[1024], out_path[4096];
    const char *base = strrchr(path, '/');
    snprintf(stem, sizeof stem, "%s", base ? base + 1 : path);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = 0;
    if (ok) {   /* DIR/<stem>.json: this image's detections in COCO results format */
        int64_t iid = image_id_of(stem, number), zero = 0;
        int64_t *cats = malloc((size_t)m->num_classes * sizeof *cats);
        ok = cats != NULL;
        for (int k = 0; ok && k < m->num_classes; k++) cats[k] = cat_ids ? cat_ids[k] : k + 1;
        segc_coco_gt g = {.n_images = 1, .image_ids = &iid, .n_classes = m->num_classes, .cat_ids = cats};
        segc_coco_results_writer w;
        snprintf(out_path, sizeof out_path, "%s/%s.json", out_dir, stem);
        if (ok && segc_coco_results_begin(&w, out_path, err, errlen)) {
            if (segc_coco_results_add(&w, &g, &d, &zero, err, errlen)) ok = segc_coco_results_end(&w, err, errlen);
            else segc_coco_results_abort(&w), ok = false;
        } else
            ok = false;
        free(cats);
    }
    if (ok && im.dtype == SEGC_U8) {   /* DIR/<stem>_det.png */
        segc_image rgb;
        ok = segc_image_alloc(&rgb, im.h, im.w, 3, SEGC_U8);
        if (ok) {
            const uint8_t *p = im.data;
            uint8_t *q = rgb.data;
            for (int64_t i = 0; i < (int64_t)im.h * im.w; i++)
                for (int c = 0; c < 3; c++) q[3 * i + c] = p[i * im.c + (im.c == 3 ? c : 0)];
            segc_draw_detections(&rgb, d.det, d.off[1], names, m->num_classes, palette, min_score);
            snprintf(out_path, sizeof out_path, "%s/%s_det.png", out_dir, stem);
            ok = segc_png_write(out_path, &rgb, NULL, 0, err, errlen);
            segc_image_free(&rgb);
        } else
            snprintf(err, errlen, "%s: out of memory", path);
    }
    segc_detections_free(&d);
    segc_image_free(&im);
    return ok;
}

bool segc_predict_detect_paths(segc_ctx *ctx, segc_model *m, const char *const *inputs, int n_inputs,
                               const char *out_dir, const segc_predict_opts *o, const segc_detect_opts *dopts,
                               const int64_t *cat_ids, const char *const *class_names, float min_score,
                               int *n_written, char *err, size_t errlen) {
    if (n_written) *n_written = 0;
    if (!m || m->family->task != SEGC_TASK_DETECTION)
        return segc_errorf(err, errlen, "predict: the model is not a detection model");
    if (o->dtype != SEGC_F32 && o->dtype != SEGC_BF16)
        return segc_errorf(err, errlen, "predict: dtype must be f32 or bf16, found %s", segc_dtype_name(o->dtype));
    if (o->pipeline && !segc_pipeline_validate(o->pipeline, err, errlen)) return false;
    segc_detect_opts dflt;
    segc_detect_opts_default(&dflt);
    char **paths;
    int n;
    if (!segc_predict_list_inputs(inputs, n_inputs, &paths, &n, err, errlen)) return false;
    if (!segc_predict_make_dirs(out_dir, err, errlen)) {
        segc_predict_free_list(paths, n);
        return false;
    }
    uint8_t palette[256 * 3];
    segc_predict_default_palette(palette, 256);
    if (o->palette) memcpy(palette, o->palette, 3 * (size_t)(o->n_colors < 256 ? o->n_colors : 256));
    segc_arena scratch;
    segc_arena_init(&scratch, 0);
    bool ok = true, sg = ctx->grad_enabled, st = ctx->training;
    ctx->grad_enabled = false, ctx->training = false;
    for (int i = 0; i < n && ok; i++) {
        segc_ctx_step_begin(ctx);
        segc_clear_error(ctx);
        double t0 = segc_now_s();
        ok = detect_one(ctx, m, paths[i], i, out_dir, o, dopts ? dopts : &dflt, cat_ids, class_names, palette,
                        min_score, &scratch, err, errlen);
        if (ok && n_written) (*n_written)++;
        if (ok && !o->quiet)
            fprintf(stderr, "predict: [%d/%d] %s (%.0f ms)\n", i + 1, n, paths[i], 1e3 * (segc_now_s() - t0));
    }
    ctx->grad_enabled = sg, ctx->training = st;
    segc_arena_free(&scratch);
    segc_predict_free_list(paths, n);
    return ok;
}
