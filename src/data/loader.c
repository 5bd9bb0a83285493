/* Threaded loader: the consumer schedules batches into a ring of slots (one
 * held by the consumer, `prefetch` in flight); worker threads take single
 * samples from the scheduled slots, decode + augment them and write straight
 * into the slot's batch buffers. Sample -> slot position is fixed at
 * scheduling time and augmentation is seeded per sample, so the bytes of a
 * batch do not depend on the number of workers or on their timing. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/loader.h"

typedef struct {
    void *p;
    size_t cap;   /* bytes */
} grow_buf;

/* 64-byte aligned, grows (never shrinks) so steady state allocates nothing */
static bool grow(grow_buf *b, size_t bytes) {
    if (bytes <= b->cap) return true;
    size_t cap = (bytes + SEGC_ALIGN - 1) / SEGC_ALIGN * SEGC_ALIGN;
    void *p = aligned_alloc(SEGC_ALIGN, cap);
    if (!p) return false;
    free(b->p);
    b->p = p;
    b->cap = cap;
    return true;
}

typedef struct {
    /* scheduling (under the loader mutex) */
    int64_t seq;
    int n, remaining, next_item;
    int64_t *idx, *epoch;
    segc_sampler_state state_after;
    bool failed;
    int err_item;
    char err[512];
    /* per-sample results (each written by the one task owning the sample) */
    int *img_h, *img_w, *lab_h, *lab_w, *ori_h, *ori_w, *stage_h, *stage_w, *stage_lh, *stage_lw, *n_boxes,
        *skipped;
    int64_t *loaded;
    bool *flipped, *has_label;
    float *pad_val;
    grow_buf *stage_img, *stage_lab, *boxes, *box_labels, *box_crowd;
    float **box_ptr;
    int32_t **box_label_ptr;
    uint8_t **box_crowd_ptr;
    /* batch buffers */
    grow_buf images, labels;
    segc_batch batch;
} slot_t;

struct segc_loader {
    segc_sample_source src;
    segc_pipeline pipe;
    segc_loader_opts o;
    int B, nslots;
    bool img_fixed, lab_fixed;
    int fh, fw;
    segc_sampler sampler;
    bool sampler_done;
    slot_t *slots;
    /* threads */
    pthread_t *threads;
    int n_threads;        /* started so far (consumer-side bookkeeping) */
    bool threaded;        /* fixed before any worker starts: workers exist */
    segc_arena *arenas;   /* one per worker, plus one for inline decoding */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    bool stop;
    int64_t sched_seq, task_seq, consumed_seq;
    bool holding, ended, failed, sync_ready;
    uint64_t seed;   /* augmentation seed (the sampler's, also after a resume) */
    char fail_msg[512];
    segc_sampler_state last_state;
    int64_t skipped_total;
};

void segc_loader_opts_default(segc_loader_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch_size = 2;
    o->num_workers = 2;
    o->prefetch = 2;
    o->sampler = SEGC_SAMPLER_INFINITE;
    o->shuffle = true;
    o->world_size = 1;
    o->label_dtype = SEGC_U8;
    o->channels = 3;
}

static bool ds_load(void *user, int64_t i, segc_sample *out, char *err, size_t errlen) {
    return segc_dataset_load(user, i, out, err, errlen);
}
static const char *ds_name(void *user, int64_t i) { return segc_dataset_image_path(user, i); }

segc_sample_source segc_dataset_source(const segc_dataset *ds) {
    return (segc_sample_source){(void *)ds, segc_dataset_len(ds), ds_load, ds_name};
}

/* ---- scheduling (mutex held) ---- */
static void schedule(segc_loader *l, slot_t *s, int64_t seq) {
    s->seq = seq;
    int n = 0;
    while (n < l->B && !l->sampler_done) {
        if (!segc_sampler_next(&l->sampler, &s->idx[n], &s->epoch[n])) {
            l->sampler_done = true;
            break;
        }
        n++;
    }
    if (n < l->B && l->o.drop_last) n = 0;
    s->n = s->remaining = n;
    s->next_item = 0;
    s->failed = false;
    s->err_item = INT_MAX;
    s->err[0] = 0;
    s->state_after = segc_sampler_get_state(&l->sampler);
    l->sched_seq = seq + 1;
}

static bool take_task(segc_loader *l, slot_t **out, int *item) {
    for (; l->task_seq < l->sched_seq; l->task_seq++) {
        slot_t *s = &l->slots[l->task_seq % l->nslots];
        if (s->seq == l->task_seq && s->next_item < s->n) {
            *out = s;
            *item = s->next_item++;
            return true;
        }
    }
    return false;
}

/* ---- one sample ---- */
static void record_error(segc_loader *l, slot_t *s, int b, const char *msg) {
    if (l->threaded) pthread_mutex_lock(&l->mu);
    if (b < s->err_item) {
        s->err_item = b;
        s->failed = true;
        snprintf(s->err, sizeof s->err, "%s", msg);
    }
    if (l->threaded) pthread_mutex_unlock(&l->mu);
}

static bool write_outputs(segc_loader *l, slot_t *s, int b, const segc_aug_state *st, char *err, size_t errlen) {
    int oh, ow, lh, lw, c = st->c;
    segc_aug_out_size(st, &oh, &ow);
    segc_aug_label_out_size(st, &lh, &lw);
    if (c != l->o.channels) {
        snprintf(err, errlen, "loader: image has %d channels after augmentation, expected %d", c, l->o.channels);
        return false;
    }
    if (l->img_fixed && (oh != l->fh || ow != l->fw)) {
        snprintf(err, errlen, "loader: augmented image is %dx%d, the pipeline's fixed size is %dx%d", oh, ow, l->fh,
                 l->fw);
        return false;
    }
    size_t esz = l->o.label_dtype == SEGC_I64 ? 8 : 1;
    if (l->img_fixed) {
        segc_aug_write_image(st, (float *)s->images.p + (size_t)b * c * l->fh * l->fw, l->fh, l->fw);
    } else {
        if (!grow(&s->stage_img[b], sizeof(float) * (size_t)c * oh * ow)) goto oom;
        segc_aug_write_image(st, s->stage_img[b].p, oh, ow);
    }
    s->has_label[b] = st->label != NULL;
    if (st->label) {
        if (l->lab_fixed) {
            segc_aug_write_label(st, (uint8_t *)s->labels.p + (size_t)b * l->fh * l->fw * esz, l->o.label_dtype, l->fh,
                                 l->fw);
        } else {
            if (!grow(&s->stage_lab[b], (size_t)lh * lw)) goto oom;
            segc_aug_write_label(st, s->stage_lab[b].p, SEGC_U8, lh, lw);
        }
    }
    s->img_h[b] = st->h;
    s->img_w[b] = st->w;
    s->lab_h[b] = st->label_h;
    s->lab_w[b] = st->label_w;
    s->stage_h[b] = oh;
    s->stage_w[b] = ow;
    s->stage_lh[b] = st->label ? lh : 0;
    s->stage_lw[b] = st->label ? lw : 0;
    s->ori_h[b] = st->ori_h;
    s->ori_w[b] = st->ori_w;
    s->flipped[b] = st->flipped;
    s->pad_val[b] = st->pad_val;
    int nb = st->n_boxes;
    if (!grow(&s->boxes[b], sizeof(float) * 4 * (size_t)(nb + 1)) ||
        !grow(&s->box_labels[b], sizeof(int32_t) * (size_t)(nb + 1)) || !grow(&s->box_crowd[b], (size_t)(nb + 1)))
        goto oom;
    if (nb) {
        memcpy(s->boxes[b].p, st->boxes, sizeof(float) * 4 * (size_t)nb);
        memcpy(s->box_labels[b].p, st->box_labels, sizeof(int32_t) * (size_t)nb);
        memcpy(s->box_crowd[b].p, st->box_crowd, (size_t)nb);
    }
    s->n_boxes[b] = nb;
    return true;
oom:
    snprintf(err, errlen, "loader: out of memory for a %dx%dx%d sample", oh, ow, c);
    return false;
}

static void process(segc_loader *l, slot_t *s, int b, segc_arena *arena) {
    int64_t n = l->src.n, idx = s->idx[b];
    char err[400], msg[512];
    s->skipped[b] = 0;
    for (int attempt = 0;; attempt++) {
        int64_t i = (idx + attempt) % n;
        segc_sample smp;
        memset(&smp, 0, sizeof smp);
        bool ok = l->src.load(l->src.user, i, &smp, err, sizeof err);
        if (ok) {
            segc_aug_state st;
            segc_arena_reset(arena);
            uint64_t seed = segc_aug_seed(l->seed, s->epoch[b], i, attempt);
            ok = segc_pipeline_run(&l->pipe, &smp, seed, arena, &st, err, sizeof err) &&
                 write_outputs(l, s, b, &st, err, sizeof err);
            if (!ok) {
                const char *nm = l->src.name ? l->src.name(l->src.user, i) : NULL;
                size_t len = strlen(err);
                snprintf(err + len, sizeof err - len, " (sample %lld%s%s)", (long long)i, nm ? ": " : "",
                         nm ? nm : "");
            }
        }
        segc_sample_free(&smp);
        if (ok) {
            s->loaded[b] = i;
            return;
        }
        if (!l->o.skip_bad) {
            record_error(l, s, b, err);
            return;
        }
        if (attempt + 1 >= n) {
            snprintf(msg, sizeof msg, "loader: no sample of %lld could be loaded; last error: %.380s", (long long)n, err);
            record_error(l, s, b, msg);
            return;
        }
        if (!l->o.quiet)
            fprintf(stderr, "segc loader: warning: skipping sample %lld, trying %lld instead: %s\n", (long long)i,
                    (long long)((i + 1) % n), err);
        s->skipped[b]++;
    }
}

static void *worker_main(void *arg) {
    segc_loader *l = ((void **)arg)[0];
    segc_arena *arena = ((void **)arg)[1];
    free(arg);
    pthread_mutex_lock(&l->mu);
    for (;;) {
        slot_t *s;
        int b;
        while (!l->stop && !take_task(l, &s, &b)) pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->stop) break;
        pthread_mutex_unlock(&l->mu);
        process(l, s, b, arena);
        pthread_mutex_lock(&l->mu);
        if (--s->remaining == 0) pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- consumer side ---- */
/* Variable-size outputs: stack the staged samples top-left into one padded
 * n x c x H x W batch (mmseg's stack_batch: image pad 0, label pad 255). */
static bool pack(segc_loader *l, slot_t *s, char *err, size_t errlen) {
    int c = l->o.channels, H = 0, W = 0, LH = 0, LW = 0;
    bool any_label = false;
    for (int b = 0; b < s->n; b++) {
        if (s->stage_h[b] > H) H = s->stage_h[b];
        if (s->stage_w[b] > W) W = s->stage_w[b];
        if (s->has_label[b]) {
            any_label = true;
            if (s->stage_lh[b] > LH) LH = s->stage_lh[b];
            if (s->stage_lw[b] > LW) LW = s->stage_lw[b];
        }
    }
    size_t esz = l->o.label_dtype == SEGC_I64 ? 8 : 1;
    if (!l->img_fixed) {
        if (!grow(&s->images, sizeof(float) * (size_t)s->n * c * H * W)) goto oom;
        for (int b = 0; b < s->n; b++) {
            const float *src = s->stage_img[b].p;
            int h = s->stage_h[b], w = s->stage_w[b];
            float pad = s->pad_val[b];
            for (int k = 0; k < c; k++) {
                float *dst = (float *)s->images.p + ((size_t)b * c + k) * H * W;
                for (int y = 0; y < H; y++) {
                    float *row = dst + (size_t)y * W;
                    int valid = y < h ? w : 0;
                    if (valid) memcpy(row, src + ((size_t)k * h + y) * w, sizeof(float) * (size_t)w);
                    for (int x = valid; x < W; x++) row[x] = pad;
                }
            }
        }
        s->batch.h = H;
        s->batch.w = W;
    }
    if (!l->lab_fixed) {
        s->batch.label_h = any_label ? LH : 0;
        s->batch.label_w = any_label ? LW : 0;
        if (any_label) {
            if (!grow(&s->labels, esz * (size_t)s->n * LH * LW)) goto oom;
            for (int b = 0; b < s->n; b++) {
                const uint8_t *src = s->stage_lab[b].p;
                int h = s->has_label[b] ? s->stage_lh[b] : 0, w = s->has_label[b] ? s->stage_lw[b] : 0;
                for (int y = 0; y < LH; y++)
                    for (int x = 0; x < LW; x++) {
                        uint8_t v = (y < h && x < w) ? src[(size_t)y * w + x] : 255;
                        size_t o = ((size_t)b * LH + y) * LW + x;
                        if (esz == 8) ((int64_t *)s->labels.p)[o] = v;
                        else ((uint8_t *)s->labels.p)[o] = v;
                    }
            }
        }
    }
    return true;
oom:
    snprintf(err, errlen, "loader: out of memory stacking a batch of %d samples", s->n);
    return false;
}

static void fill_batch(segc_loader *l, slot_t *s) {
    segc_batch *bt = &s->batch;
    bt->n = s->n;
    bt->c = l->o.channels;
    if (l->img_fixed) {
        bt->h = l->fh;
        bt->w = l->fw;
    }
    bool any_label = false;
    for (int b = 0; b < s->n; b++) any_label |= s->has_label[b];
    if (l->lab_fixed) {
        bt->label_h = any_label ? l->fh : 0;
        bt->label_w = any_label ? l->fw : 0;
    }
    bt->images = s->images.p;
    bt->labels = any_label ? s->labels.p : NULL;
    bt->label_dtype = l->o.label_dtype;
    bt->img_h = s->img_h;
    bt->img_w = s->img_w;
    bt->label_hs = s->lab_h;
    bt->label_ws = s->lab_w;
    bt->ori_h = s->ori_h;
    bt->ori_w = s->ori_w;
    bt->index = s->loaded;
    bt->epoch = s->epoch;
    bt->flipped = s->flipped;
    bt->n_boxes = s->n_boxes;
    for (int b = 0; b < s->n; b++) {
        s->box_ptr[b] = s->boxes[b].p;
        s->box_label_ptr[b] = s->box_labels[b].p;
        s->box_crowd_ptr[b] = s->box_crowd[b].p;
    }
    bt->boxes = s->box_ptr;
    bt->box_labels = s->box_label_ptr;
    bt->box_crowd = s->box_crowd_ptr;
    bt->seq = l->consumed_seq;
    bt->n_skipped = 0;
    for (int b = 0; b < s->n; b++) bt->n_skipped += s->skipped[b];
    bt->resume_state = s->state_after;
}

const segc_batch *segc_loader_next(segc_loader *l, char *err, size_t errlen) {
    if (errlen) err[0] = 0;
    if (l->failed) {
        snprintf(err, errlen, "%s", l->fail_msg);
        return NULL;
    }
    if (l->ended) return NULL;
    if (l->threaded) pthread_mutex_lock(&l->mu);
    if (l->holding) {   /* the batch handed out last time is free again: refill it */
        int64_t seq = l->consumed_seq - 1;
        schedule(l, &l->slots[seq % l->nslots], seq + l->nslots);
        l->holding = false;
        if (l->threaded) pthread_cond_broadcast(&l->cv_work);
    }
    slot_t *s = &l->slots[l->consumed_seq % l->nslots];
    if (l->threaded) {
        while (s->remaining > 0) pthread_cond_wait(&l->cv_done, &l->mu);
        pthread_mutex_unlock(&l->mu);
    } else {
        while (s->next_item < s->n) {
            int b = s->next_item++;
            process(l, s, b, &l->arenas[0]);
            s->remaining--;
        }
    }
    if (s->n == 0) {
        l->ended = true;
        return NULL;
    }
    if (s->failed || !pack(l, s, s->err, sizeof s->err)) {
        l->failed = true;
        snprintf(l->fail_msg, sizeof l->fail_msg, "%s", s->err);
        snprintf(err, errlen, "%s", l->fail_msg);
        return NULL;
    }
    fill_batch(l, s);
    l->consumed_seq++;
    l->holding = true;
    l->last_state = s->state_after;
    l->skipped_total += s->batch.n_skipped;
    return &s->batch;
}

segc_sampler_state segc_loader_state(const segc_loader *l) { return l->last_state; }
int64_t segc_loader_skipped(const segc_loader *l) { return l->skipped_total; }

int64_t segc_loader_samples_per_epoch(const segc_loader *l) {
    int64_t n = l->src.n, w = l->o.world_size, r = l->o.rank;
    return (n - r + w - 1) / w;
}

/* ---- lifetime ---- */
static bool slot_init(slot_t *s, int B) {
    memset(s, 0, sizeof *s);
    s->seq = -1;
#define ARR(field, type) if (!(s->field = calloc((size_t)B, sizeof(type)))) return false
    ARR(idx, int64_t);
    ARR(epoch, int64_t);
    ARR(loaded, int64_t);
    ARR(img_h, int); ARR(img_w, int); ARR(lab_h, int); ARR(lab_w, int); ARR(ori_h, int); ARR(ori_w, int);
    ARR(stage_h, int); ARR(stage_w, int); ARR(stage_lh, int); ARR(stage_lw, int); ARR(n_boxes, int);
    ARR(skipped, int);
    ARR(flipped, bool); ARR(has_label, bool);
    ARR(pad_val, float);
    ARR(stage_img, grow_buf); ARR(stage_lab, grow_buf);
    ARR(boxes, grow_buf); ARR(box_labels, grow_buf); ARR(box_crowd, grow_buf);
    ARR(box_ptr, float *); ARR(box_label_ptr, int32_t *); ARR(box_crowd_ptr, uint8_t *);
#undef ARR
    return true;
}

static void slot_free(slot_t *s, int B) {
    free(s->idx); free(s->epoch); free(s->loaded);
    free(s->img_h); free(s->img_w); free(s->lab_h); free(s->lab_w); free(s->ori_h); free(s->ori_w);
    free(s->stage_h); free(s->stage_w); free(s->stage_lh); free(s->stage_lw); free(s->n_boxes); free(s->skipped);
    free(s->flipped); free(s->has_label); free(s->pad_val);
    grow_buf *bufs[5] = {s->stage_img, s->stage_lab, s->boxes, s->box_labels, s->box_crowd};
    for (int k = 0; k < 5; k++) {
        if (!bufs[k]) continue;
        for (int b = 0; b < B; b++) free(bufs[k][b].p);
        free(bufs[k]);
    }
    free(s->box_ptr); free(s->box_label_ptr); free(s->box_crowd_ptr);
    free(s->images.p);
    free(s->labels.p);
}

segc_loader *segc_loader_new(segc_sample_source src, const segc_pipeline *p, const segc_loader_opts *o, char *err,
                             size_t errlen) {
    if (!src.load || src.n < 1) {
        snprintf(err, errlen, "loader: sample source has %lld samples%s, expected at least 1 and a load function",
                 (long long)src.n, src.load ? "" : " and no load function");
        return NULL;
    }
    if (o->batch_size < 1 || o->num_workers < 0 || o->num_workers > 256 || o->prefetch < 0 || o->prefetch > 64 ||
        o->channels < 1 || o->channels > 16 || (o->label_dtype != SEGC_U8 && o->label_dtype != SEGC_I64)) {
        snprintf(err, errlen,
                 "loader: options batch_size %d (>= 1), num_workers %d (0..256), prefetch %d (0..64), channels %d "
                 "(1..16), label dtype %s (u8 or i64) out of range",
                 o->batch_size, o->num_workers, o->prefetch, o->channels, segc_dtype_name(o->label_dtype));
        return NULL;
    }
    if (!segc_pipeline_validate(p, err, errlen)) return NULL;
    segc_loader *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "loader: out of memory");
        return NULL;
    }
    l->src = src;
    l->pipe = *p;
    l->o = *o;
    l->o.resume = NULL;
    l->B = o->batch_size;
    l->threaded = o->num_workers > 0;
    l->nslots = o->prefetch + 1;
    if (!segc_sampler_init(&l->sampler, o->sampler, src.n, o->shuffle, o->seed, o->rank, o->world_size, err,
                           errlen)) {
        free(l);
        return NULL;
    }
    if (o->resume && !segc_sampler_set_state(&l->sampler, o->resume, err, errlen)) {
        segc_sampler_free(&l->sampler);
        free(l);
        return NULL;
    }
    l->last_state = segc_sampler_get_state(&l->sampler);
    l->seed = l->last_state.seed;
    l->img_fixed = segc_pipeline_fixed_size(p, &l->fh, &l->fw, &l->lab_fixed);
    if (!l->img_fixed) l->lab_fixed = false;
    l->slots = calloc((size_t)l->nslots, sizeof(slot_t));
    l->arenas = calloc((size_t)o->num_workers + 1, sizeof(segc_arena));
    l->threads = calloc((size_t)o->num_workers + 1, sizeof(pthread_t));
    bool ok = l->slots && l->arenas && l->threads;
    size_t esz = o->label_dtype == SEGC_I64 ? 8 : 1;
    for (int k = 0; ok && k < l->nslots; k++) {
        ok = slot_init(&l->slots[k], l->B);
        if (ok && l->img_fixed) ok = grow(&l->slots[k].images, sizeof(float) * (size_t)l->B * o->channels * l->fh * l->fw);
        if (ok && l->lab_fixed) ok = grow(&l->slots[k].labels, esz * (size_t)l->B * l->fh * l->fw);
    }
    if (!ok) {
        snprintf(err, errlen, "loader: out of memory for %d batch buffers of %d samples", l->nslots, l->B);
        segc_loader_free(l);
        return NULL;
    }
    for (int k = 0; k <= o->num_workers; k++) segc_arena_init(&l->arenas[k], 0);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->sync_ready = true;
    for (int k = 0; k < l->nslots; k++) schedule(l, &l->slots[k], k);
    for (int k = 0; k < o->num_workers; k++) {
        void **arg = malloc(2 * sizeof(void *));
        if (!arg) break;
        arg[0] = l;
        arg[1] = &l->arenas[k + 1];
        if (pthread_create(&l->threads[k], NULL, worker_main, arg) != 0) {
            free(arg);
            break;
        }
        l->n_threads++;
    }
    if (l->n_threads < o->num_workers) {
        snprintf(err, errlen, "loader: could only start %d of %d worker threads", l->n_threads, o->num_workers);
        segc_loader_free(l);
        return NULL;
    }
    return l;
}

void segc_loader_free(segc_loader *l) {
    if (!l) return;
    if (l->threads && l->n_threads) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int k = 0; k < l->n_threads; k++) pthread_join(l->threads[k], NULL);
    }
    if (l->sync_ready) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_done);
        for (int k = 0; k <= l->o.num_workers; k++) segc_arena_free(&l->arenas[k]);
    }
    if (l->slots)
        for (int k = 0; k < l->nslots; k++) slot_free(&l->slots[k], l->B);
    free(l->slots);
    free(l->arenas);
    free(l->threads);
    segc_sampler_free(&l->sampler);
    free(l);
}
