/* From a configuration to datasets, pipelines and models; evaluation of a
 * model over a split with the metrics and inference modules. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "segc/dist.h"
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
    o.fold = c->data.fold;
    o.num_folds = c->data.num_folds;
    o.skip_bad = c->data.skip_bad;
    if (!split) split = c->data.train_split;
    /* data.holdout: train_split without its held-out run; split "holdout" is that run */
    if (c->data.holdout > 0 && (!strcmp(split, "holdout") || !strcmp(split, c->data.train_split))) {
        o.holdout = c->data.holdout;
        o.holdout_fold = c->data.holdout_fold;
        o.holdout_take = !strcmp(split, "holdout");
        split = c->data.train_split;
    }
    return segc_dataset_open(c->data.dataset, root, split, &o, err, errlen);
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
    if (segc_config_task(c) == SEGC_TASK_DETECTION) {   /* mmdet's SSD chain to crop_size, normalised as configured */
        if (!strcmp(c->data.pipeline, "resize")) {   /* no crop, expand or colour jitter: fitting, fine-tuning */
            segc_pipeline_ssd_eval(p, c->data.crop_size[0]);
            p->t[p->n - 1] = segc_aug_default(SEGC_AUG_RANDOM_FLIP);
            p->t[p->n - 1].p.random_flip.prob = c->data.flip_prob;
            segc_pipeline_add(p, normalize_of(c), e, sizeof e);
            return;
        }
        segc_pipeline_ssd_train(p, c->data.crop_size[0]);
        p->t[p->n - 1] = normalize_of(c);
        return;
    }
    if (!strcmp(c->data.pipeline, "nnunet")) {
        segc_pipeline_nnunet_2d(p, c->data.crop_size[0], c->data.crop_size[1], c->data.fg_prob);
        return;
    }
    segc_aug_transform t = segc_aug_default(SEGC_AUG_RANDOM_RESIZE);
    t.p.random_resize = (segc_aug_random_resize){c->data.scale[0], c->data.scale[1], c->data.ratio_range[0],
                                                 c->data.ratio_range[1], true};
    segc_pipeline_add(p, t, e, sizeof e);
    t = segc_aug_default(SEGC_AUG_RANDOM_CROP);
    t.p.random_crop = (segc_aug_random_crop){c->data.crop_size[0], c->data.crop_size[1], c->data.cat_max_ratio, SEGC_IGNORE_INDEX};
    segc_pipeline_add(p, t, e, sizeof e);
    if (c->data.flip_prob > 0) {
        t = segc_aug_default(SEGC_AUG_RANDOM_FLIP);
        t.p.random_flip.prob = c->data.flip_prob;
        segc_pipeline_add(p, t, e, sizeof e);
    }
    if (c->data.photometric) segc_pipeline_add(p, segc_aug_default(SEGC_AUG_PHOTOMETRIC), e, sizeof e);
    segc_pipeline_add(p, normalize_of(c), e, sizeof e);
    t = segc_aug_default(SEGC_AUG_PAD);
    t.p.pad = (segc_aug_pad){c->data.crop_size[0], c->data.crop_size[1], 0.f, SEGC_IGNORE_INDEX};
    segc_pipeline_add(p, t, e, sizeof e);
}

void segc_config_eval_pipeline(const segc_config *c, segc_pipeline *p) {
    char e[160];
    p->n = 0;
    if (segc_config_task(c) == SEGC_TASK_DETECTION) {   /* resize to crop_size (boxes scaled back per image) */
        segc_pipeline_ssd_eval(p, c->data.crop_size[0]);
        p->t[p->n - 1] = normalize_of(c);
        return;
    }
    if (!strcmp(c->data.pipeline, "nnunet")) return;   /* medical slices come z-scored from the dataset */
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
    o->gaussian = c->test.gaussian;
    o->n_ratios = 0;
    if (!(c->test.n_scales == 1 && c->test.scales[0] == 1.0)) {
        o->n_ratios = c->test.n_scales < SEGC_INFER_MAX_RATIOS ? c->test.n_scales : SEGC_INFER_MAX_RATIOS;
        for (int i = 0; i < o->n_ratios; i++) o->ratios[i] = (float)c->test.scales[i];
    }
}

segc_dtype segc_config_dtype(const segc_config *c) { return strcmp(c->train.dtype, "bf16") ? SEGC_F32 : SEGC_BF16; }
bool segc_config_bf16_grads(const segc_config *c) { return c->train.bf16_grads && segc_gemm_native_bf16(); }

static segc_model *model_of(const segc_config *c, int num_classes, int in_channels, char *err, size_t errlen) {
    segc_model_spec s = segc_config_model_spec(c, num_classes, in_channels);
    return segc_model_new(&s, err, errlen);
}

segc_model *segc_config_model(const segc_config *c, int num_classes, char *err, size_t errlen) {
    return model_of(c, num_classes, 3, err, errlen);
}

int segc_dataset_channels(const segc_dataset *ds, char *err, size_t errlen) {
    if (segc_dataset_len(ds) < 1) return segc_errorf(err, errlen, "the dataset has no samples"), 0;
    segc_sample smp;
    memset(&smp, 0, sizeof smp);
    if (!segc_dataset_load(ds, 0, &smp, err, errlen)) return 0;
    int ch = smp.img.c;
    segc_sample_free(&smp);
    return ch;
}

segc_model *segc_config_model_for(const segc_config *c, const segc_dataset *ds, char *err, size_t errlen) {
    int ch = c->model.in_channels;
    if (!ch) {
        char e2[512];
        ch = segc_dataset_channels(ds, e2, sizeof e2);
        if (!ch) return segc_errorf(err, errlen, "model.in_channels: cannot read the dataset's channels: %s", e2), NULL;
    }
    return model_of(c, segc_dataset_num_classes(ds), ch, err, errlen);
}

void segc_config_eval_spec(const segc_config *c, const segc_model *m, const segc_dataset *ds, const char **class_names,
                           segc_eval_spec *s) {
    memset(s, 0, sizeof *s);
    s->task = m->family->task;
    s->num_classes = m->num_classes;
    s->ignore_index = SEGC_IGNORE_INDEX;
    int nd = ds ? segc_dataset_num_classes(ds) : 0;
    for (int k = 0; k < 256; k++) class_names[k] = k < nd && k < m->num_classes ? segc_dataset_class_name(ds, k) : NULL;
    s->class_names = nd >= m->num_classes ? class_names : NULL;
    snprintf(s->primary, sizeof s->primary, "%.31s", c->train.best_metric);
    s->per_volume = c->test.per_volume;
    s->dataset = ds;   /* detection: the split's COCO ground truth */
    if (!strcmp(c->test.regions, "brats")) segc_eval_spec_brats_regions(s);
    if (!strcmp(c->test.regions, "msd_brats")) {   /* MSD Task01: 1 edema, 2 non-enhancing, 3 enhancing */
        static const struct { const char *name; uint8_t labels[3]; int n; } r[3] = {
            {"WT", {1, 2, 3}, 3}, {"TC", {2, 3}, 2}, {"ET", {3}, 1}};
        s->per_volume = true;
        s->n_regions = 3;
        for (int i = 0; i < 3; i++) {
            snprintf(s->regions[i].name, sizeof s->regions[i].name, "%s", r[i].name);
            memcpy(s->regions[i].labels, r[i].labels, (size_t)r[i].n);
            s->regions[i].n_labels = r[i].n;
        }
    }
}

bool segc_checkpoint_model_type(const char *path, char *type, size_t n, char *err, size_t errlen) {
    if (n) type[0] = 0;
    char e2[512];
    char *yaml = segc_checkpoint_config(path, e2, sizeof e2);
    if (!yaml) {
        if (access(path, R_OK) != 0) return segc_errorf(err, errlen, "%s: %s", path, e2);
        return true;   /* weights without a stored configuration (e.g. a hub file) */
    }
    /* the model section's type: line of the resolved YAML segc wrote */
    const char *sec = strstr(yaml, "\nmodel:\n");
    const char *t = sec ? strstr(sec, "\n  type: ") : NULL;
    if (t) {
        t += 9;
        if (*t == '"') t++;
        size_t len = strcspn(t, "\"\n");
        snprintf(type, n, "%.*s", (int)len, t);
    }
    free(yaml);
    return true;
}

bool segc_model_load_checkpoint(segc_model *m, const char *path, char *err, size_t errlen) {
    char type[64], e2[900];
    if (!segc_checkpoint_model_type(path, type, sizeof type, err, errlen)) return false;
    if (*type && strcmp(type, m->family->type) != 0)
        return segc_errorf(err, errlen, "checkpoint %s holds a %s model, but model.type is %s", path, type, m->family->type);
    if (!segc_params_load(&m->params, path, true, NULL, e2, sizeof e2))
        return segc_errorf(err, errlen, "checkpoint %s", e2);
    return true;
}

bool segc_evaluate(segc_model *m, const segc_config *c, const segc_dataset *ds, segc_evaluate_opts *o,
                   segc_eval_result *result, char *err, size_t errlen) {
    memset(result, 0, sizeof *result);
    o->n_kept = 0;
    if (m->num_classes > 255) return segc_errorf(err, errlen, "eval: %d classes, at most 255 supported", m->num_classes);
    const char *names[256];
    segc_eval_spec spec;
    segc_config_eval_spec(c, m, ds, names, &spec);
    segc_evaluator *ev = segc_evaluator_new(&spec, err, errlen);
    if (!ev) return false;
    segc_pipeline pipe;
    segc_config_eval_pipeline(c, &pipe);
    segc_eval_opts eo;
    segc_eval_opts_default(&eo);
    segc_config_infer_opts(c, &eo.infer);
    eo.dtype = segc_config_dtype(c);
    eo.model = m;
    eo.pipeline = &pipe;
    eo.channels = m->in_channels;
    eo.num_workers = c->data.num_workers > 0 ? c->data.num_workers : 1;
    eo.max_samples = o->max_samples;
    segc_dist_eval_share(o->max_samples, &eo.rank, &eo.world_size, &eo.max_samples);   /* this rank's shard */
    eo.quiet = !o->progress;
    eo.progress = o->progress;
    eo.keep = o->keep;
    eo.samples = o->samples;
    eo.n_kept = &o->n_kept;
    eo.profile_batches = o->profile_images;
    /* validation loss beside the metrics (not while class_weight: auto is unresolved: no training split here) */
    eo.loss = m->family->task == SEGC_TASK_SEGMENTATION && !(m->loss && segc_loss_cfg_needs_auto(m->loss));
    segc_ctx *ctx = o->ctx ? o->ctx : segc_ctx_new(0), *work = o->work ? o->work : segc_ctx_new(0);
    bool ok = ctx && work && segc_eval_dataset(ctx, work, segc_model_logits_fn, m, ds, &eo, ev, err, errlen);
    if (segc_dist_agree(ok, err, errlen)) ok = segc_dist_merge_evaluator(ev, err, errlen);   /* every rank's counts */
    else ok = false;
    if (ok) ok = segc_evaluator_result(ev, result, err, errlen);
    if (!o->ctx) segc_ctx_free(ctx);
    if (!o->work) segc_ctx_free(work);
    segc_evaluator_free(ev);
    if (!ok) {
        for (int i = 0; i < o->n_kept; i++) segc_eval_sample_free(&o->samples[i]);
        o->n_kept = 0;
    }
    return ok;
}
