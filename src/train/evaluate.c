/* From a configuration to datasets, pipelines and models; evaluation of a
 * model over a split with the metrics and inference modules. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "segc/image_io.h"
#include "segc/trainer.h"

double segc_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_maxrss / 1024.0;   /* Linux: KiB */
}

segc_dataset *segc_config_open_dataset(const segc_config *c, const char *split, char *err, size_t errlen) {
    char root[SEGC_CFG_PATH + 64];
    if (!segc_config_data_root(c, root, sizeof root, err, errlen)) return NULL;
    segc_dataset_opts o;
    segc_dataset_opts_default(&o);
    if (strcmp(c->data.reduce_zero_label, "default") != 0) {
        o.use_default_reduce = false;
        o.reduce_zero_label = !strcmp(c->data.reduce_zero_label, "true");
    }
    return segc_dataset_open(c->data.dataset, root, split ? split : c->data.train_split, &o, err, errlen);
}

static segc_aug_transform normalize_of(const segc_config *c) {
    segc_aug_transform t = segc_aug_default(SEGC_AUG_NORMALIZE);
    for (int k = 0; k < 3; k++) {
        t.p.normalize.mean[k] = (float)c->data.mean[k];
        t.p.normalize.std[k] = (float)c->data.std[k];
    }
    t.p.normalize.to_rgb = true;
    return t;
}

void segc_config_train_pipeline(const segc_config *c, segc_pipeline *p) {
    char e[160];
    p->n = 0;
    segc_aug_transform t = segc_aug_default(SEGC_AUG_RANDOM_RESIZE);
    t.p.random_resize = (segc_aug_random_resize){c->data.scale[0], c->data.scale[1], c->data.ratio_range[0],
                                                 c->data.ratio_range[1], true};
    segc_pipeline_add(p, t, e, sizeof e);
    t = segc_aug_default(SEGC_AUG_RANDOM_CROP);
    t.p.random_crop = (segc_aug_random_crop){c->data.crop_size[0], c->data.crop_size[1], c->data.cat_max_ratio, 255};
    segc_pipeline_add(p, t, e, sizeof e);
    if (c->data.flip_prob > 0) {
        t = segc_aug_default(SEGC_AUG_RANDOM_FLIP);
        t.p.random_flip.prob = c->data.flip_prob;
        segc_pipeline_add(p, t, e, sizeof e);
    }
    if (c->data.photometric) segc_pipeline_add(p, segc_aug_default(SEGC_AUG_PHOTOMETRIC), e, sizeof e);
    segc_pipeline_add(p, normalize_of(c), e, sizeof e);
    t = segc_aug_default(SEGC_AUG_PAD);
    t.p.pad = (segc_aug_pad){c->data.crop_size[0], c->data.crop_size[1], 0.f, 255};
    segc_pipeline_add(p, t, e, sizeof e);
}

void segc_config_eval_pipeline(const segc_config *c, segc_pipeline *p) {
    char e[160];
    p->n = 0;
    if (c->data.test_scale[0] > 0) {
        segc_aug_transform t = segc_aug_default(SEGC_AUG_RESIZE);
        t.p.resize = (segc_aug_resize){c->data.test_scale[0], c->data.test_scale[1], true, false};
        segc_pipeline_add(p, t, e, sizeof e);
    }
    segc_pipeline_add(p, normalize_of(c), e, sizeof e);
}

void segc_config_infer_opts(const segc_config *c, segc_infer_opts *o) {
    segc_infer_opts_default(o);
    o->mode = strcmp(c->test.mode, "slide") ? SEGC_INFER_WHOLE : SEGC_INFER_SLIDE;
    if (o->mode == SEGC_INFER_SLIDE) {
        o->crop_h = c->test.crop_size[0], o->crop_w = c->test.crop_size[1];
        o->stride_h = c->test.stride[0], o->stride_w = c->test.stride[1];
    }
    o->flip = c->test.flip;
    o->n_ratios = 0;
    if (!(c->test.n_scales == 1 && c->test.scales[0] == 1.0)) {
        o->n_ratios = c->test.n_scales < SEGC_INFER_MAX_RATIOS ? c->test.n_scales : SEGC_INFER_MAX_RATIOS;
        for (int i = 0; i < o->n_ratios; i++) o->ratios[i] = (float)c->test.scales[i];
    }
}

segc_dtype segc_config_dtype(const segc_config *c) { return strcmp(c->train.dtype, "bf16") ? SEGC_F32 : SEGC_BF16; }

segc_segformer *segc_config_model(const segc_config *c, int num_classes, char *err, size_t errlen) {
    segc_segformer_config mc;
    int k = c->model.num_classes ? c->model.num_classes : num_classes;
    if (!segc_segformer_preset(&mc, c->model.variant, k)) {
        segc_errorf(err, errlen, "model.variant: unknown SegFormer variant '%s' (b0..b5)", c->model.variant);
        return NULL;
    }
    for (int s = 0; s < 4; s++) {
        if (c->model.hidden[0]) mc.hidden[s] = c->model.hidden[s];
        if (c->model.depths[0] || c->model.depths[1] || c->model.depths[2] || c->model.depths[3])
            mc.depths[s] = c->model.depths[s];
        if (c->model.heads[0]) mc.heads[s] = c->model.heads[s];
    }
    if (c->model.decoder_hidden) mc.decoder_hidden = c->model.decoder_hidden;
    mc.drop_path_rate = (float)c->model.drop_path_rate;
    mc.classifier_dropout = (float)c->model.classifier_dropout;
    return segc_segformer_new(&mc, err, errlen);
}

void segc_eval_sample_free(segc_eval_sample *s) {
    segc_image_free(&s->img);
    segc_image_free(&s->gt);
    segc_image_free(&s->pred);
}

/* keeps image, ground truth and prediction of one evaluated sample */
static bool keep_sample(const segc_dataset *ds, int64_t index, const uint8_t *gt, const uint8_t *pred, int h, int w,
                        segc_eval_sample *s, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    segc_sample smp;
    memset(&smp, 0, sizeof smp);
    if (!segc_dataset_load(ds, index, &smp, err, errlen)) return false;
    bool ok = smp.img.dtype == SEGC_U8 && smp.img.h == h && smp.img.w == w;
    if (ok) {
        s->img = smp.img;
        smp.img.data = NULL;
        if (s->img.c != 3) {   /* gray -> RGB for display */
            segc_image rgb;
            ok = segc_image_alloc(&rgb, h, w, 3, SEGC_U8);
            for (int64_t i = 0; ok && i < (int64_t)h * w; i++)
                for (int k = 0; k < 3; k++)
                    ((uint8_t *)rgb.data)[3 * i + k] = ((uint8_t *)s->img.data)[i * s->img.c];
            segc_image_free(&s->img);
            s->img = rgb;
        }
        ok = ok && segc_image_alloc(&s->gt, h, w, 1, SEGC_U8) && segc_image_alloc(&s->pred, h, w, 1, SEGC_U8);
        if (ok) {
            memcpy(s->gt.data, gt, (size_t)h * w);
            memcpy(s->pred.data, pred, (size_t)h * w);
        }
    }
    const char *path = segc_dataset_image_path(ds, index), *base = path ? strrchr(path, '/') : NULL;
    snprintf(s->name, sizeof s->name, "%s", base ? base + 1 : path ? path : "?");
    segc_sample_free(&smp);
    if (!ok) segc_eval_sample_free(s);
    return true;   /* a sample that cannot be shown is simply left out */
}

bool segc_evaluate(segc_segformer *m, const segc_config *c, const segc_dataset *ds, segc_evaluate_opts *o,
                   segc_metrics *metrics, char *err, size_t errlen) {
    memset(metrics, 0, sizeof *metrics);
    o->n_kept = 0;
    int K = m->cfg.num_labels;
    if (K > 255) return segc_errorf(err, errlen, "eval: %d classes, at most 255 supported", K);
    segc_infer_opts io;
    segc_config_infer_opts(c, &io);
    if (!segc_infer_opts_validate(&io, err, errlen)) return false;
    segc_confusion conf;
    if (!segc_confusion_init(&conf, K, 255, err, errlen)) return false;
    segc_pipeline pipe;
    segc_config_eval_pipeline(c, &pipe);
    segc_loader_opts lo;
    segc_loader_opts_default(&lo);
    lo.batch_size = 1;
    lo.num_workers = c->data.num_workers;
    lo.sampler = SEGC_SAMPLER_SEQUENTIAL;
    lo.shuffle = false;
    lo.seed = (uint64_t)c->train.seed;
    segc_loader *ld = segc_loader_new(segc_dataset_source(ds), &pipe, &lo, err, errlen);
    if (!ld) { segc_confusion_free(&conf); return false; }
    segc_ctx *ctx = o->ctx ? o->ctx : segc_ctx_new(0), *work = o->work ? o->work : segc_ctx_new(0);
    segc_dtype dt = segc_config_dtype(c);
    int64_t total = segc_dataset_len(ds), done = 0;
    if (o->max_samples > 0 && o->max_samples < total) total = o->max_samples;
    bool ok = true;
    double t0 = segc_now_s();
    while (done < total) {
        const segc_batch *b = segc_loader_next(ld, err, errlen);
        if (!b) { ok = !*err; break; }
        segc_ctx_step_begin(ctx);
        segc_clear_error(ctx);
        int h = b->img_h[0], w = b->img_w[0], lh = b->label_hs[0], lw = b->label_ws[0];
        segc_tensor *img = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){1, b->c, b->h, b->w}, b->images);
        if (h != b->h || w != b->w) { ok = segc_errorf(err, errlen, "eval: unexpected padded batch"); break; }
        if (dt == SEGC_BF16) img = segc_cast(ctx, img, SEGC_BF16);
        segc_tensor *pred = segc_infer(ctx, work, segc_segformer_forward_fn, m, img, lh, lw, &io, NULL);
        segc_tensor *lab = segc_tensor_wrap(ctx, SEGC_U8, 3, (int64_t[]){1, lh, lw}, b->labels);
        if (!pred || !segc_confusion_add(ctx, &conf, pred, lab)) {
            const char *nm = segc_dataset_image_path(ds, b->index[0]);
            ok = segc_errorf(err, errlen, "eval: %s (%s)", segc_last_error(ctx), nm ? nm : "?");
            break;
        }
        if (o->n_kept < o->keep && o->samples) {
            char e2[256];
            keep_sample(ds, b->index[0], b->labels, pred->data, lh, lw, &o->samples[o->n_kept], e2, sizeof e2);
            if (o->samples[o->n_kept].img.data) o->n_kept++;
        }
        done++;
        if (o->progress) {
            bool tty = isatty(fileno(o->progress));
            if (tty || done == total) {
                double el = segc_now_s() - t0;
                fprintf(o->progress, "%seval %lld/%lld  %.1f img/s%s", tty ? "\r" : "", (long long)done,
                        (long long)total, (double)done / (el > 0 ? el : 1), done == total ? "\n" : "");
                fflush(o->progress);
            }
        }
    }
    segc_loader_free(ld);
    if (!o->ctx) segc_ctx_free(ctx);
    if (!o->work) segc_ctx_free(work);
    if (ok && done == 0) ok = segc_errorf(err, errlen, "eval: the split has no samples");
    if (ok) ok = segc_metrics_compute(&conf, metrics, err, errlen);
    segc_confusion_free(&conf);
    if (!ok)
        for (int i = 0; i < o->n_kept; i++) segc_eval_sample_free(&o->samples[i]);
    if (!ok) o->n_kept = 0;
    return ok;
}
