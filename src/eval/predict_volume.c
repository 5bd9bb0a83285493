/* Prediction of medical volumes: every slice of a case predicted (with the
 * configured sliding window / TTA / model postprocess), the slices put back
 * along the dataset's slice axis, and the label volume written as NIfTI with
 * the case's own geometry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/predict.h"

/* slice s of a volume along axis a, pixel (r, col): the inverse of the
 * dataset's slice extraction (ds_medical.c) */
static void put_slice(uint8_t *vol, const int64_t dim[3], int axis, int s, const uint8_t *lab, int h, int w) {
    int64_t nx = dim[0], ny = dim[1];
    for (int r = 0; r < h; r++)
        for (int col = 0; col < w; col++) {
            int64_t x = axis == 0 ? s : col, y = axis == 0 ? col : axis == 1 ? s : r, z = axis == 2 ? s : r;
            vol[(z * ny + y) * nx + x] = lab[(int64_t)r * w + col];
        }
}

typedef struct open_volume {
    int64_t id, filled;
    segc_volume_info info;
    uint8_t *labels;
} open_volume;

static bool finish_volume(open_volume *v, const char *out_dir, int *n_written, bool quiet, char *err, size_t errlen) {
    if (!v->labels) return true;
    bool ok = true;
    if (v->filled != v->info.n_samples)
        ok = segc_errorf(err, errlen, "predict: %s: %lld of %lld slices predicted (the split must hold every slice)",
                         v->info.name, (long long)v->filled, (long long)v->info.n_samples);
    char path[4096], name[512];
    const char *base = strrchr(v->info.name, '/');
    snprintf(name, sizeof name, "%s", base ? base + 1 : v->info.name);
    char *dot = strstr(name, ".nii");
    if (dot) *dot = 0;
    snprintf(path, sizeof path, "%s/%s.nii.gz", out_dir, name);
    if (ok) ok = segc_nifti_write_labels(path, v->labels, v->info.dim, v->info.image_path, v->info.affine, err, errlen);
    if (ok && n_written) (*n_written)++;
    if (ok && !quiet) fprintf(stderr, "predict: %s (%lldx%lldx%lld)\n", path, (long long)v->info.dim[0],
                              (long long)v->info.dim[1], (long long)v->info.dim[2]);
    free(v->labels);
    v->labels = NULL;
    return ok;
}

bool segc_predict_volumes(segc_ctx *ctx, segc_ctx *work, segc_forward_fn forward, void *model, const segc_dataset *ds,
                          const segc_eval_opts *o, const char *out_dir, int *n_written, char *err, size_t errlen) {
    if (n_written) *n_written = 0;
    if (!segc_infer_opts_validate(&o->infer, err, errlen) || !segc_predict_make_dirs(out_dir, err, errlen)) return false;
    segc_pipeline none = {.n = 0};
    segc_loader_opts lo;
    segc_loader_opts_default(&lo);
    lo.batch_size = 1;
    lo.num_workers = o->num_workers;
    lo.sampler = SEGC_SAMPLER_SEQUENTIAL;
    lo.shuffle = false;
    lo.channels = o->channels;
    lo.quiet = o->quiet;
    segc_loader *l = segc_loader_new(segc_dataset_source(ds), o->pipeline ? o->pipeline : &none, &lo, err, errlen);
    if (!l) return false;
    open_volume v = {.id = -1};
    bool ok = true;
    while (ok) {
        const segc_batch *b = segc_loader_next(l, err, errlen);
        if (!b) {
            ok = err[0] == 0;
            break;
        }
        segc_ctx_step_begin(ctx);
        segc_clear_error(ctx);
        int64_t vol = 0;
        int slice = 0;
        if (!segc_dataset_sample_volume(ds, b->index[0], &vol, &slice)) {
            ok = segc_errorf(err, errlen, "predict: sample %lld has no volume", (long long)b->index[0]);
            break;
        }
        if (vol != v.id) {
            if (!finish_volume(&v, out_dir, n_written, o->quiet, err, errlen)) { ok = false; break; }
            v.id = vol;
            v.filled = 0;
            if (!segc_dataset_volume_info(ds, vol, &v.info, err, errlen)) { ok = false; break; }
            if (v.info.dim[0] < 1 || v.info.dim[1] < 1 || v.info.dim[2] < 1) {
                ok = segc_errorf(err, errlen, "predict: %s is not a volume (whole-volume prediction needs a medical "
                                 "dataset: brats, msd)", v.info.name);
                break;
            }
            v.labels = calloc((size_t)(v.info.dim[0] * v.info.dim[1] * v.info.dim[2]), 1);
            if (!v.labels) { ok = segc_errorf(err, errlen, "predict: out of memory for %s", v.info.name); break; }
        }
        int h = b->img_h[0], w = b->img_w[0];
        if (h != b->h || w != b->w) { ok = segc_errorf(err, errlen, "predict: unexpected padded batch"); break; }
        segc_tensor *x = segc_tensor_wrap(ctx, SEGC_F32, 4, (int64_t[]){1, b->c, h, w}, b->images);
        if (o->dtype == SEGC_BF16) x = segc_cast(ctx, x, SEGC_BF16);
        int oh = b->ori_h ? b->ori_h[0] : h, ow = b->ori_w ? b->ori_w[0] : w;
        segc_tensor *pred = segc_predict_labels(ctx, work, forward, model, x, oh, ow, o);
        if (!pred) {
            ok = segc_errorf(err, errlen, "predict: %s slice %d: %s", v.info.name, slice, segc_last_error(ctx));
            break;
        }
        int a = v.info.slice_axis;
        int eh = (int)(a == 2 ? v.info.dim[1] : v.info.dim[2]), ew = (int)(a == 0 ? v.info.dim[1] : v.info.dim[0]);
        if (oh != eh || ow != ew || slice < 0 || slice >= v.info.dim[a]) {
            ok = segc_errorf(err, errlen, "predict: %s slice %d: prediction %dx%d, expected %dx%d", v.info.name, slice, oh,
                             ow, eh, ew);
            break;
        }
        put_slice(v.labels, v.info.dim, a, slice, pred->data, oh, ow);
        v.filled++;
    }
    if (ok) ok = finish_volume(&v, out_dir, n_written, o->quiet, err, errlen);
    free(v.labels);
    segc_loader_free(l);
    return ok;
}
