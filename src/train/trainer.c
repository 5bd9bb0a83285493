/* The iteration-based training loop: data, forward/backward, AdamW/SGD with
 * the configured schedule, progress, metrics.jsonl, periodic evaluation with
 * best-checkpoint tracking, checkpoints with exact resume, reports. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "segc/losses_train.h"
#include "segc/dist.h"
#include "segc/dist_train.h"
#include "segc/profile.h"
#include "segc/recipes.h"
#include "segc/trainer.h"

static bool mkdir_p(const char *path, char *err, size_t errlen) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return segc_errorf(err, errlen, "path too long: %.80s...", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char save = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return segc_errorf(err, errlen, "cannot create %s: %s", buf, strerror(errno));
            *p = save;
            if (!save) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return segc_errorf(err, errlen, "%s is not a directory", path);
    return true;
}

/* ---- progress display ---- */
typedef struct progress {
    FILE *f;
    bool tty, quiet;
    double last_draw;
    int last_len;
} progress;

static void fmt_hms(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

static void progress_draw(progress *pg, int64_t iter, int64_t total, double loss, double lr, double img_s, double eta,
                          bool force_line) {
    if (pg->quiet) return;
    double now = segc_now_s();
    if (pg->tty && !force_line && now - pg->last_draw < 0.25 && iter < total) return;
    pg->last_draw = now;
    char e[32], bar[24];
    fmt_hms(eta, e, sizeof e);
    int filled = (int)(20.0 * (double)iter / (double)total);
    for (int i = 0; i < 20; i++) bar[i] = i < filled ? '#' : '-';
    bar[20] = 0;
    char line[256];
    int len = snprintf(line, sizeof line, "iter %lld/%lld [%s] loss %.4f lr %.3e %.1f img/s ETA %s mem %.0f MiB",
                       (long long)iter, (long long)total, bar, loss, lr, img_s, e, segc_peak_rss_mb());
    if (pg->tty) {
        fprintf(pg->f, "\r%s%*s", line, pg->last_len > len ? pg->last_len - len : 0, "");
        pg->last_len = len;
        if (force_line) { fputc('\n', pg->f); pg->last_len = 0; }
    } else {
        fprintf(pg->f, "%s\n", line);
    }
    fflush(pg->f);
}

static void progress_note(progress *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress_note(progress *pg, const char *fmt, ...) {
    if (pg->quiet) return;
    if (pg->tty && pg->last_len) { fputc('\n', pg->f); pg->last_len = 0; }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(pg->f, fmt, ap);
    va_end(ap);
    fputc('\n', pg->f);
    fflush(pg->f);
}

/* Temporary files of atomic writes interrupted by a crash ("NAME.tmp.PID"). */
static void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char path[4096];
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.") && snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            unlink(path);
    closedir(d);
}

/* ---- metrics.jsonl ---- */
/* Keeps only records of iterations <= iter (the resumed run rewrites the rest). */
static bool truncate_metrics(const char *path, int64_t iter, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return true;
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap), line[1 << 16];
    bool ok = out != NULL;
    while (ok && fgets(line, sizeof line, f)) {
        long long it = -1;
        const char *p = strstr(line, "\"iter\":");
        if (p) it = atoll(p + 7);
        size_t l = strlen(line);
        if (it < 0 || it > iter || !l || line[l - 1] != '\n') continue;   /* later, or cut short by a crash */
        if (len + l + 1 > cap) {
            char *no = realloc(out, cap = 2 * (len + l + 1));
            if (!no) { ok = false; break; }
            out = no;
        }
        memcpy(out + len, line, l);
        len += l;
    }
    fclose(f);
    if (ok) {
        const void *parts[1] = {out};
        size_t sizes[1] = {len};
        ok = segc_write_file_atomic(path, parts, sizes, 1, err, errlen);
    } else {
        segc_errorf(err, errlen, "%s: out of memory", path);
    }
    free(out);
    return ok;
}

static void jsonl_write(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jsonl_write(FILE *f, const char *fmt, ...) {
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fflush(f);
}

static bool params_finite(const segc_params *p) {
    float acc = 0;
    for (int64_t i = 0; i < p->total; i++) acc += p->data[i] * 0.0f;   /* NaN/Inf propagate */
    return acc == 0.0f;
}

/* ---- the run ---- */
typedef struct run {
    const segc_config *c;
    segc_config resolved;         /* c with the model's classes and input channels filled in */
    char dir[SEGC_CFG_PATH + 64], ckdir[SEGC_CFG_PATH + 96], metrics_path[SEGC_CFG_PATH + 96];
    char *yaml;
    segc_dataset *train_ds, *val_ds;
    segc_model *model;
    segc_optimizer *opt;
    segc_schedule sched;
    segc_ctx *ctx, *eval_ctx, *eval_work;
    segc_loader *loader;
    FILE *jsonl;
    progress pg;
    segc_train_state st;
    int64_t saved_iter;           /* iteration of the latest checkpoint on disk (-1: none) */
    segc_eval_result last;        /* latest evaluation */
    bool have_last;
    segc_eval_sample *samples;
    int n_samples;
    segc_custom_key keys[SEGC_CFG_MAX_CUSTOM_KEYS];
    int64_t last_eval_iter;   /* iteration of the latest evaluation (report) */
    bool writer;              /* this process writes files (segc_dist_is_writer) */
    segc_sampler_state shard_state;   /* this rank's sampler position at resume */
    bool detection;           /* the model's task: boxes as targets, images without boxes skipped */
    void *det_source;         /* the detection training source's index */
    segc_recipe *recipe;      /* EMA, SAM, MixUp, gradient accumulation (segc/recipes.h) */
} run;

static void free_samples(run *r) {
    for (int i = 0; i < r->n_samples; i++) segc_eval_sample_free(&r->samples[i]);
    r->n_samples = 0;
}

static void write_report(run *r, const char *status) {
    const segc_dataset *ds = r->val_ds ? r->val_ds : r->train_ds;
    int K = r->model->num_classes, nd = segc_dataset_num_classes(ds);
    const char *names[256];
    uint8_t palette[256 * 3];
    for (int k = 0; k < K && k < 256; k++) {
        names[k] = k < nd ? segc_dataset_class_name(ds, k) : NULL;
        const uint8_t *pc = k < nd ? segc_dataset_palette(ds, k) : NULL;
        for (int j = 0; j < 3; j++) palette[3 * k + j] = pc ? pc[j] : (uint8_t)((k * 97 + j * 57) & 255);
    }
    segc_report rep = {0};
    rep.title = r->c->name;
    rep.status = status;
    rep.config_yaml = r->yaml;
    rep.metrics = r->have_last ? &r->last.pixel : NULL;
    rep.primary = r->have_last ? r->last.primary : NULL;
    if (r->have_last) segc_report_set_extras(&rep, &r->last);
    rep.split = r->val_ds ? r->c->data.val_split : NULL;
    rep.eval_iter = r->last_eval_iter;
    rep.eval_images = r->have_last ? r->last.n_images : 0;
    rep.split_images = r->val_ds ? segc_dataset_len(r->val_ds) : 0;
    rep.class_names = names;
    rep.palette = palette;
    rep.n_classes = K;
    rep.samples = r->samples;
    rep.n_samples = r->n_samples;
    char e[512];
    if (r->writer && !segc_report_write(r->dir, &rep, e, sizeof e)) progress_note(&r->pg, "warning: report not written: %s", e);
}

static bool evaluate_now(run *r, int64_t iter, char *err, size_t errlen) {
    if (!r->val_ds) return true;
    free_samples(r);
    if (r->have_last) segc_eval_result_free(&r->last);
    r->have_last = false;
    segc_evaluate_opts eo = {r->c->train.val_max_samples, r->c->train.report_samples, r->samples, 0,
                         r->pg.quiet ? NULL : r->pg.f, r->eval_ctx, r->eval_work, false};
    if (!r->pg.quiet && r->pg.tty && r->pg.last_len) { fputc('\n', r->pg.f); r->pg.last_len = 0; }
    segc_dist_average_buffers(&r->model->params, r->c->dist.sync_bn);
    segc_recipe_use_ema(r->recipe, true);   /* evaluation and the best checkpoint use the EMA weights */
    bool ok = segc_evaluate(r->model, r->c, r->val_ds, &eo, &r->last, err, errlen);
    if (!ok) segc_recipe_use_ema(r->recipe, false);
    if (!ok) return false;
    r->n_samples = eo.n_kept;
    r->have_last = true;
    r->last_eval_iter = iter;
    const char *names[256];
    int nd = segc_dataset_num_classes(r->val_ds);
    for (int k = 0; k < r->model->num_classes && k < 256; k++) names[k] = k < nd ? segc_dataset_class_name(r->val_ds, k) : NULL;
    char *js = segc_eval_result_json(&r->last, nd >= r->model->num_classes ? names : NULL);
    jsonl_write(r->jsonl, "{\"iter\":%lld,\"eval\":%s}\n", (long long)iter, js ? js : "null");
    free(js);
    /* best_metric is stored as "higher is better" (a loss-like metric is negated) */
    double v = r->last.primary_value, score = segc_metric_lower_is_better(r->last.primary) ? -v : v;
    bool best = isfinite(score) && (r->st.best_iter < 0 || score > r->st.best_metric);
    char extra[160] = "";
    double md = segc_eval_result_get(&r->last, "mDice");
    if (!isnan(md)) snprintf(extra, sizeof extra, " mDice %.2f", 100 * md);
    double vloss = segc_eval_result_get(&r->last, "val_loss");
    if (!isnan(vloss) && strcmp(r->last.primary, "val_loss"))
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " val_loss %.4f", vloss);
    if (strcmp(r->last.primary, "mIoU") && strcmp(r->last.primary, "mDice"))
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), segc_metric_lower_is_better(r->last.primary) ? " %s %.4g" : " %s %.2f", r->last.primary, segc_metric_lower_is_better(r->last.primary) ? v : 100 * v);
    if (r->model->family->task == SEGC_TASK_DETECTION)   /* COCO numbers, fractions as pycocotools prints them */
        progress_note(&r->pg, "eval @ %lld: bbox_mAP %.3f bbox_mAP_50 %.3f bbox_AR@100 %.3f%s", (long long)iter,
                      segc_eval_result_get(&r->last, "bbox_mAP"), segc_eval_result_get(&r->last, "bbox_mAP_50"),
                      segc_eval_result_get(&r->last, "bbox_AR@100"), best ? " (best)" : "");
    else
        progress_note(&r->pg, "eval @ %lld: mIoU %.2f mAcc %.2f aAcc %.2f%s%s", (long long)iter, 100 * r->last.pixel.mIoU,
                      100 * r->last.pixel.mAcc, 100 * r->last.pixel.aAcc, extra, best ? " (best)" : "");
    if (best) {
        r->st.best_metric = score;
        r->st.best_iter = iter;
        ok = !r->writer || segc_checkpoint_save_best(r->ckdir, &r->model->params, iter, v, r->yaml, err, errlen);
    }
    segc_recipe_use_ema(r->recipe, false);
    return ok;
}

static bool setup(run *r, const segc_train_opts *o, bool *resumed, char *err, size_t errlen) {
    const segc_config *c = r->c;
    char e2[700];
    snprintf(r->dir, sizeof r->dir, "%s", c->train.work_dir);
    snprintf(r->ckdir, sizeof r->ckdir, "%s/checkpoints", r->dir);
    snprintf(r->metrics_path, sizeof r->metrics_path, "%s/metrics.jsonl", r->dir);
    if (!mkdir_p(r->ckdir, e2, sizeof e2)) return segc_errorf(err, errlen, "train: work_dir: %s", e2);
    char wpath[SEGC_CFG_PATH + 160], spath[SEGC_CFG_PATH + 160];
    bool have_ckpt = segc_checkpoint_latest(r->ckdir, wpath, sizeof wpath, spath, sizeof spath, e2, sizeof e2);
    if (!have_ckpt && *e2) return segc_errorf(err, errlen, "train: %s", e2);
    if (have_ckpt && !o->resume && !o->force)
        return segc_errorf(err, errlen, "train: %s already holds checkpoints; continue it with --resume %s, or start over "
                           "with --force (or another train.work_dir)", r->dir, r->dir);
    if (o->force && !o->resume && r->writer) {   /* start over: drop every checkpoint of the earlier run */
        DIR *d = opendir(r->ckdir);
        char p[4096];
        for (struct dirent *e; d && (e = readdir(d));)
            if ((!strncmp(e->d_name, "iter_", 5) || !strcmp(e->d_name, "latest") ||
                 !strcmp(e->d_name, "best.safetensors")) &&
                snprintf(p, sizeof p, "%s/%s", r->ckdir, e->d_name) < (int)sizeof p)
                unlink(p);
        if (d) closedir(d);
        unlink(r->metrics_path);
        have_ckpt = false;
    }
    *resumed = have_ckpt && o->resume;
    /* a final evaluation belongs to the weights it measured, which change now */
    char fe[SEGC_CFG_PATH + 96];
    snprintf(fe, sizeof fe, "%s/final_eval.html", r->dir);
    if (r->writer) {
        unlink(fe);
        remove_stale_temps(r->dir);
        remove_stale_temps(r->ckdir);
    }
    r->train_ds = segc_config_open_dataset(c, c->data.train_split, e2, sizeof e2);
    if (!r->train_ds) return segc_errorf(err, errlen, "train: %s", e2);
    /* durations in epochs become iterations of this training split */
    r->resolved = *c;
    if (!segc_config_resolve_durations(&r->resolved, segc_dataset_len(r->train_ds), e2, sizeof e2))
        return segc_errorf(err, errlen, "train: %s", e2);
    r->c = c = &r->resolved;
    if (*c->data.val_split) {
        r->val_ds = segc_config_open_dataset(c, c->data.val_split, e2, sizeof e2);
        if (!r->val_ds) return segc_errorf(err, errlen, "train: validation split: %s", e2);
    }
    /* the saved configuration is resolved: classes, channels and class_weight: auto as built, so a
     * checkpoint alone rebuilds its model (segc eval / predict without a dataset) */
    int n_cls = c->model.num_classes ? c->model.num_classes : segc_dataset_num_classes(r->train_ds);
    if (!segc_loss_resolve_auto(&r->resolved.loss, r->train_ds, n_cls, r->dir, o->quiet ? NULL : r->pg.f, e2, sizeof e2))
        return segc_errorf(err, errlen, "train: %s", e2);
    r->model = segc_config_model_for(&r->resolved, r->train_ds, e2, sizeof e2);
    if (!r->model) return segc_errorf(err, errlen, "train: %s", e2);
    r->resolved.model.num_classes = r->model->num_classes;
    r->resolved.model.in_channels = r->model->in_channels;
    r->yaml = segc_config_to_yaml(&r->resolved);
    char cpath[SEGC_CFG_PATH + 96];
    snprintf(cpath, sizeof cpath, "%s/config.yaml", r->dir);
    if (!r->yaml || (r->writer && !segc_config_save(&r->resolved, cpath, e2, sizeof e2))) return segc_errorf(err, errlen, "train: %s", e2);
    uint64_t seed = (uint64_t)c->train.seed;
    segc_model_init(r->model, seed);
    if (*c->model.pretrained) {
        segc_load_report rep;
        if (!segc_model_load_pretrained(r->model, c->model.pretrained, false, &rep, e2, sizeof e2))
            return segc_errorf(err, errlen, "train: model.pretrained: %s", e2);
        if (!o->quiet) segc_load_report_print(&rep, c->model.pretrained);
    }
    segc_optim_cfg oc = segc_config_optim(c, r->keys);
    r->opt = segc_optimizer_new(&r->model->params, &oc, e2, sizeof e2);
    if (!r->opt) return segc_errorf(err, errlen, "train: optimizer: %s", e2);
    if (!segc_config_schedule(c, &r->sched, e2, sizeof e2)) return segc_errorf(err, errlen, "train: schedule: %s", e2);
    r->recipe = segc_recipe_new(c, r->model, e2, sizeof e2);
    if (!r->recipe) return segc_errorf(err, errlen, "train: %s", e2);
    segc_ckpt_extra extra = segc_recipe_ckpt_extra(r->recipe);

    r->ctx = segc_ctx_new(seed ^ 0x9e3779b97f4a7c15ull);
    r->eval_ctx = segc_ctx_new(0);
    r->eval_work = segc_ctx_new(0);
    if (!r->ctx || !r->eval_ctx || !r->eval_work) return segc_errorf(err, errlen, "train: out of memory");
    if (c->train.threads > 0) segc_set_num_threads(r->ctx, c->train.threads);
    else if (segc_dist_default_threads() > 0) segc_set_num_threads(r->ctx, segc_dist_default_threads());
    segc_config_apply_conv_algo(c);
    int local_batch = c->data.batch_size;
    if (!segc_dist_shard_batch(r->ctx, c->data.batch_size, &local_batch, e2, sizeof e2))
        return segc_errorf(err, errlen, "train: %s", e2);
    if (c->dist.sync_bn) segc_dist_sync_bn(r->ctx);
    r->ctx->training = true;
    r->ctx->bf16_grads = segc_config_bf16_grads(c);

    memset(&r->st, 0, sizeof r->st);
    r->st.rng = r->ctx->rng;
    r->st.best_metric = -1;
    r->st.best_iter = -1;
    r->st.sampler.seed = seed;
    r->saved_iter = -1;
    if (*resumed) {
        char *saved_yaml = NULL, type[64];
        if (!segc_checkpoint_model_type(wpath, type, sizeof type, e2, sizeof e2))
            return segc_errorf(err, errlen, "train: resume: %s", e2);
        if (*type && strcmp(type, r->model->family->type) != 0)
            return segc_errorf(err, errlen, "train: resume: checkpoint %s holds a %s model, but model.type is %s", wpath,
                               type, r->model->family->type);
        if (!segc_checkpoint_load_ex(wpath, spath, &r->model->params, r->opt, &r->st, &saved_yaml, &extra, e2, sizeof e2))
            return segc_errorf(err, errlen, "train: resume: %s", e2);
        segc_config saved;
        segc_config_defaults(&saved);
        char diff[1024];
        if (saved_yaml && segc_config_load_string(&saved, saved_yaml, "checkpoint config", e2, sizeof e2) &&
            segc_config_diff(&saved, &r->resolved, diff, sizeof diff) > 0)
            progress_note(&r->pg, "resume: configuration differs from the checkpoint's: %s", diff);
        free(saved_yaml);
        r->ctx->rng = r->st.rng;
        r->saved_iter = r->st.iter;
        /* the checkpoint holds the global stream position (rank 0's); this rank's is rank places on */
        int64_t nds = segc_dataset_len(r->train_ds), g = r->st.sampler.epoch * nds + r->st.sampler.position;
        r->shard_state = r->st.sampler;
        segc_dist_sampler_position(g, nds, &r->shard_state.epoch, &r->shard_state.position);
        if (r->writer && !truncate_metrics(r->metrics_path, r->st.iter, e2, sizeof e2)) return segc_errorf(err, errlen, "train: %s", e2);
        progress_note(&r->pg, "resumed %s at iteration %lld", wpath, (long long)r->st.iter);
    }
    else if (r->writer)
        unlink(r->metrics_path);   /* a fresh start: drop records of an earlier attempt */
    r->jsonl = r->writer ? fopen(r->metrics_path, "a") : NULL;
    if (r->writer && !r->jsonl) return segc_errorf(err, errlen, "train: cannot open %s: %s", r->metrics_path, strerror(errno));

    segc_pipeline pipe;
    segc_config_train_pipeline(c, &pipe);
    if (!segc_pipeline_validate(&pipe, e2, sizeof e2)) return segc_errorf(err, errlen, "train: data pipeline: %s", e2);
    segc_loader_opts lo;
    segc_loader_opts_default(&lo);
    lo.batch_size = local_batch;
    lo.num_workers = c->data.num_workers;
    lo.channels = r->model->in_channels;
    lo.seed = seed;
    segc_dist_loader_shard(&lo.rank, &lo.world_size);
    lo.resume = *resumed ? &r->shard_state : NULL;
    lo.quiet = o->quiet;
    segc_sample_source src = segc_dataset_source(r->train_ds);
    r->detection = r->model->family->task == SEGC_TASK_DETECTION;
    if (!r->detection && !strcmp(c->data.pipeline, "resize"))
        return segc_errorf(err, errlen, "data.pipeline: resize is for detection families, and model.type %s is not one "
                           "(expected mmseg or nnunet)", r->model->family->type);
    if (r->detection) {
        int64_t skipped = 0;
        if (!segc_detection_train_source(r->train_ds, &src, &r->det_source, &skipped, err, errlen)) return false;
        if (skipped) progress_note(&r->pg, "%lld training images without a (non-crowd) box skipped", (long long)skipped);
    }
    r->loader = segc_loader_new(src, &pipe, &lo, e2, sizeof e2);
    if (!r->loader) return segc_errorf(err, errlen, "train: %s", e2);
    r->samples = calloc((size_t)c->train.report_samples + 1, sizeof *r->samples);
    if (!r->samples) return segc_errorf(err, errlen, "train: out of memory");
    return true;
}

static void teardown(run *r) {
    free_samples(r);
    free(r->samples);
    if (r->have_last) segc_eval_result_free(&r->last);
    segc_loader_free(r->loader);
    segc_detection_train_source_free(r->det_source);
    if (r->jsonl) fclose(r->jsonl);
    segc_ctx_free(r->ctx);
    segc_ctx_free(r->eval_ctx);
    segc_ctx_free(r->eval_work);
    segc_optimizer_free(r->opt);
    segc_recipe_free(r->recipe);
    segc_model_free(r->model);
    segc_dataset_close(r->train_ds);
    segc_dataset_close(r->val_ds);
    free(r->yaml);
}

static bool save_checkpoint(run *r, char *err, size_t errlen) {
    segc_dist_average_buffers(&r->model->params, r->c->dist.sync_bn);
    if (!params_finite(&r->model->params))
        return segc_errorf(err, errlen, "train: weights hold NaN/Inf at iteration %lld; not saving them",
                           (long long)r->st.iter);
    if (!r->writer) {
        r->saved_iter = r->st.iter;
        return true;
    }
    segc_ckpt_extra extra = segc_recipe_ckpt_extra(r->recipe);
    if (!segc_checkpoint_save_ex(r->ckdir, &r->model->params, r->opt, &r->st, r->yaml, r->c->train.keep_last, &extra,
                                 err, errlen))
        return false;
    r->saved_iter = r->st.iter;
    return true;
}

segc_train_status segc_train(const segc_config *c, const segc_train_opts *o, char *err, size_t errlen) {
    segc_train_opts dflt = {0};
    if (!o) o = &dflt;
    run R, *r = &R;
    memset(r, 0, sizeof *r);
    r->c = c;
    r->pg.f = o->progress ? o->progress : stderr;
    r->pg.quiet = o->quiet;
    r->pg.tty = isatty(fileno(r->pg.f));
    r->writer = segc_dist_is_writer();
    if (!r->writer) r->pg.quiet = true;   /* one writer: rank 0 prints, logs and saves */
    segc_dist_configure(c->dist.bucket_mb, c->dist.timeout_s);
    bool resumed = false, collective = true;   /* collective: a failure every rank agreed on */
    segc_train_status status = SEGC_TRAIN_FAILED;
    bool setup_ok = setup(r, o, &resumed, err, errlen);
    if (!segc_dist_train_start(setup_ok, r->yaml, r->model ? &r->model->params : NULL, &r->st, err, errlen)) goto out;
    collective = false;
    c = r->c;   /* durations resolved */

    const int64_t max_iters = c->train.max_iters;
    const double time_limit = c->train.max_time_min * 60.0;
    const segc_dtype dt = segc_config_dtype(c);
    char e2[700], status_line[160];
    if (r->st.iter >= max_iters) {
        progress_note(&r->pg, "run %s is complete (iteration %lld of %lld)", r->dir, (long long)r->st.iter,
                      (long long)max_iters);
        status = SEGC_TRAIN_DONE;
        goto out;
    }
    progress_note(&r->pg, "training %s: %s%s%s, %lld parameters, %d classes, %d input channels, %s, batch %d, crop %dx%d, "
                  "%d threads -> %s", c->name, r->model->family->type, *r->model->variant ? " " : "", r->model->variant,
                  (long long)segc_params_count(&r->model->params, true), r->model->num_classes, r->model->in_channels,
                  c->train.dtype, c->data.batch_size, c->data.crop_size[0],
                  c->data.crop_size[1], segc_get_num_threads(), r->dir);
    if (*segc_recipe_describe(r->recipe)) progress_note(&r->pg, "recipes: %s", segc_recipe_describe(r->recipe));
    if (o->profile_path) {
        if (!segc_profiler_start(o->profile_path)) {
            segc_errorf(err, errlen, "train: --profile: a profiler is already running");
            goto out;
        }
        segc_profiler_set_window(o->profile_first, o->profile_last);
    }
    double t_session = segc_now_s(), t_window = t_session, elapsed0 = r->st.elapsed_s;
    double loss_sum = 0, img_s = 0, sec_per_iter = 0;
    int64_t window_iters = 0, window_imgs = 0;
    bool stop = false;
    for (int64_t it = r->st.iter; it < max_iters && !stop; it++) {
        if (o->profile_path) segc_profiler_iter(it + 1);
        segc_prof_span pd = segc_prof_begin("loader_next", SEGC_PROF_DATA);
        const segc_batch *b = segc_loader_next(r->loader, e2, sizeof e2);
        segc_prof_end(&pd, 0);
        if (!b) { segc_errorf(err, errlen, "train: %s", e2); goto out; }
        segc_ctx *ctx = r->ctx;
        double lv;   /* forward + backward (MixUp, micro-batches, SAM): params.grad holds the batch's gradient */
        if (!segc_recipe_step(r->recipe, ctx, b, dt, it, &lv, e2, sizeof e2)) {
            segc_errorf(err, errlen, "train: iteration %lld: %s", (long long)it, e2);
            goto out;
        }
        if (it + 1 == c->train.debug_nan_at) lv = NAN;   /* test hook, see config.h */
        lv = segc_dist_global_loss(lv);   /* the global batch's; NaN on every rank when any rank's is not finite */
        if (!isfinite(lv)) {
            segc_errorf(err, errlen, "train: loss is %s at iteration %lld; stopping. %s%s%s%lld%s; lower optimizer.lr, enable "
                        "optimizer.max_grad_norm or try train.dtype=f32", isnan(lv) ? "NaN" : "Inf", (long long)it + 1,
                        r->saved_iter >= 0 ? "The last good checkpoint is kept (" : "No checkpoint was written yet",
                        r->saved_iter >= 0 ? r->ckdir : "", r->saved_iter >= 0 ? "/latest, iteration " : " (", 
                        (long long)(r->saved_iter >= 0 ? r->saved_iter : it + 1), r->saved_iter >= 0 ? ")" : " iterations ran)");
            status = SEGC_TRAIN_NONFINITE;
            goto out;
        }
        segc_prof_span po = segc_prof_begin("optimizer_step", SEGC_PROF_OPTIMIZER);
        double gn = segc_optimizer_step_scheduled(r->opt, &r->sched, it);
        segc_prof_end(&po, 0);
        if (isnan(gn) || (c->optimizer.max_grad_norm > 0 && !isfinite(gn))) {
            segc_errorf(err, errlen, "train: gradient norm is not finite at iteration %lld; stopping (latest checkpoint: "
                        "%s/latest, iteration %lld)%s%s", (long long)it + 1, r->ckdir, (long long)r->saved_iter,
                        *r->opt->err ? ": " : "", r->opt->err);
            status = SEGC_TRAIN_NONFINITE;
            goto out;
        }
        r->st.iter = it + 1;
        segc_recipe_after_step(r->recipe, r->st.iter);   /* EMA */
        r->st.sampler = b->resume_state;
        r->st.rng = ctx->rng;
        r->st.loss_ema = it == 0 || r->st.loss_ema == 0 ? lv : 0.98 * r->st.loss_ema + 0.02 * lv;
        double now = segc_now_s();
        r->st.elapsed_s = elapsed0 + (now - t_session);
        loss_sum += lv;
        window_iters++;
        window_imgs += c->data.batch_size;   /* the global batch (b->n on each of the processes) */
        if (window_iters == 1 && it == 0) sec_per_iter = now - t_window;
        double lr = segc_schedule_lr(&r->sched, c->optimizer.lr, it);
        bool time_up = time_limit > 0 && r->st.elapsed_s >= time_limit;
        bool interrupted = o->stop && *o->stop;
        segc_dist_any(&time_up, &interrupted);   /* one decision for every rank */
        bool final = r->st.iter == max_iters || time_up || interrupted;
        if (r->st.iter % c->train.log_interval == 0 || final) {
            double span = now - t_window;
            img_s = span > 0 ? (double)window_imgs / span : 0;
            sec_per_iter = span / (double)window_iters;
            jsonl_write(r->jsonl, "{\"iter\":%lld,\"loss\":%.6g,\"lr\":%.6g,\"img_s\":%.4g,\"time_s\":%.2f,\"rss_mb\":%.1f}\n",
                        (long long)r->st.iter, loss_sum / (double)window_iters, lr, img_s, r->st.elapsed_s,
                        segc_peak_rss_mb());
            loss_sum = 0;
            window_iters = window_imgs = 0;
            t_window = now;
        }
        double eta = (double)(max_iters - r->st.iter) * sec_per_iter;
        if (time_limit > 0 && time_limit - r->st.elapsed_s < eta) eta = time_limit - r->st.elapsed_s;
        bool line = !r->pg.tty && (r->st.iter % c->train.log_interval == 0 || final);
        if (r->pg.tty || line) progress_draw(&r->pg, r->st.iter, max_iters, r->st.loss_ema, lr, img_s, eta, line);
        bool do_eval = (c->train.val_interval > 0 && r->st.iter % c->train.val_interval == 0) || final;
        if (do_eval) {
            segc_prof_span pe = segc_prof_begin("evaluate", SEGC_PROF_EVAL);
            bool eval_ok = evaluate_now(r, r->st.iter, err, errlen);
            segc_prof_end(&pe, 0);
            if (!eval_ok) goto out;
            const char *why = r->st.iter == max_iters ? " (done)" : interrupted ? " (stopped)" : " (time limit)";
            snprintf(status_line, sizeof status_line, "iteration %lld of %lld%s", (long long)r->st.iter,
                     (long long)max_iters, final ? why : "");
            write_report(r, status_line);
            /* evaluation time counts towards the time limit, not towards the speed window */
            double after = segc_now_s();
            t_window += after - now;
            r->st.elapsed_s = elapsed0 + (after - t_session);
        }
        bool hook_stop = do_eval && o->on_eval &&
                         o->on_eval(o->on_eval_user, r->st.iter, r->have_last ? &r->last : NULL, r->st.loss_ema) != 0;
        if (r->st.iter % c->train.checkpoint_interval == 0 || final || hook_stop) {
            double before = segc_now_s();
            if (!save_checkpoint(r, err, errlen)) {
                status = strstr(err, "NaN/Inf") ? SEGC_TRAIN_NONFINITE : SEGC_TRAIN_FAILED;
                goto out;
            }
            t_window += segc_now_s() - before;
        }
        if (hook_stop && !interrupted && r->st.iter < max_iters) {
            stop = true;
        } else if (interrupted && r->st.iter < max_iters) {
            progress_note(&r->pg, "stopped at iteration %lld; continue with: segc train --resume %s",
                          (long long)r->st.iter, r->dir);
            stop = true;
        } else if (time_up && r->st.iter < max_iters) {
            progress_note(&r->pg, "time limit of %.1f min reached at iteration %lld", c->train.max_time_min,
                          (long long)r->st.iter);
            stop = true;
        }
    }
    if (!r->val_ds) {
        snprintf(status_line, sizeof status_line, "iteration %lld of %lld", (long long)r->st.iter, (long long)max_iters);
        write_report(r, status_line);
    }
    status = SEGC_TRAIN_DONE;
out:
    if (status == SEGC_TRAIN_FAILED && !collective) segc_dist_end_on_failure(err);   /* no rank left waiting */
    if (o->profile_path && segc_profiler_active()) {
        char pe[512];
        segc_profiler_pause();
        if (!segc_profiler_stop_and_write(o->quiet ? NULL : r->pg.f, pe, sizeof pe))
            progress_note(&r->pg, "warning: --profile: %s", pe);
        else
            progress_note(&r->pg, "profile: %s (open in ui.perfetto.dev or chrome://tracing)", o->profile_path);
    }
    if (status == SEGC_TRAIN_DONE && r->have_last && !o->quiet && r->writer) {
        const char *names[256];
        int nd = segc_dataset_num_classes(r->val_ds);
        for (int k = 0; k < r->model->num_classes && k < 256; k++)
            names[k] = k < nd ? segc_dataset_class_name(r->val_ds, k) : "?";
        segc_eval_result_print(stdout, &r->last, names);
        if (r->st.best_iter >= 0) {
            bool neg = segc_metric_lower_is_better(r->last.primary);
            double b = neg ? -r->st.best_metric : r->st.best_metric;
            printf("best %s %.4g at iteration %lld: %s/best.safetensors\n", r->last.primary, neg ? b : 100 * b,
                   (long long)r->st.best_iter, r->ckdir);
        }
        fflush(stdout);
    }
    teardown(r);
    return status;
}
