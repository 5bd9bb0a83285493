/* Data pipeline throughput (not a test): decode + mmseg train augmentation
 * through the threaded loader, for CamVid PNGs and ADE20K JPEGs, at 1 and 2
 * worker threads. Prints one JSON line per case:
 *   {"pipeline": ..., "threads": N, "segc_samples_per_s": X}
 * Data root: $SEGC_DATA_ROOT (default ../shared/data, relative to the repo). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/loader.h"

/* The ADE20K sample set is tiny: repeat its images to a longer epoch. */
typedef struct {
    const segc_dataset *ds;
    int64_t n_real;
} repeat_src;

static bool repeat_load(void *user, int64_t i, segc_sample *out, char *err, size_t errlen) {
    repeat_src *r = user;
    return segc_dataset_load(r->ds, i % r->n_real, out, err, errlen);
}

static const char *repeat_name(void *user, int64_t i) {
    repeat_src *r = user;
    return segc_dataset_image_path(r->ds, i % r->n_real);
}

static double measure(segc_sample_source src, const segc_pipeline *p, int threads, int batch, double min_s) {
    segc_loader_opts o;
    segc_loader_opts_default(&o);
    o.batch_size = batch;
    o.num_workers = threads;
    o.prefetch = 2;
    o.seed = 1;
    char err[512];
    segc_loader *l = segc_loader_new(src, p, &o, err, sizeof err);
    if (!l) {
        fprintf(stderr, "bench_data: %s\n", err);
        return -1;
    }
    double rate = -1;
    for (int w = 0; w < 2; w++)   /* warm-up: threads started, buffers and arenas grown */
        if (!segc_loader_next(l, err, sizeof err)) goto fail;
    double t0 = segc_now_s(), t = t0;
    int64_t samples = 0;
    int batches = 0;
    while (t - t0 < min_s || batches < 4) {
        const segc_batch *b = segc_loader_next(l, err, sizeof err);
        if (!b) goto fail;
        samples += b->n;
        batches++;
        t = segc_now_s();
    }
    rate = (double)samples / (t - t0);
    segc_loader_free(l);
    return rate;
fail:
    fprintf(stderr, "bench_data: %s\n", err);
    segc_loader_free(l);
    return -1;
}

int main(int argc, char **argv) {
    const char *root = getenv("SEGC_DATA_ROOT");
    if (!root) root = "../shared/data";
    double min_s = argc > 1 ? atof(argv[1]) : 2.0;
    char path[512], err[512];
    segc_dataset_opts dopt;
    segc_dataset_opts_default(&dopt);

    /* (a) CamVid: RandomResize((480, 360), 0.5-2.0), crop 360x480, flip, photometric, normalise */
    snprintf(path, sizeof path, "%s/camvid", root);
    segc_dataset *cam = segc_dataset_open("camvid", path, "train", &dopt, err, sizeof err);
    if (!cam) {
        fprintf(stderr, "bench_data: %s\n", err);
    } else {
        segc_pipeline p;
        segc_pipeline_seg_train(&p, 480, 360, 0.5, 2.0, 360, 480, 0.75);
        for (int th = 1; th <= 2; th++) {
            double r = measure(segc_dataset_source(cam), &p, th, 4, min_s);
            if (r > 0) printf("{\"pipeline\": \"camvid_png_crop360x480\", \"threads\": %d, \"segc_samples_per_s\": %.2f}\n", th, r);
            fflush(stdout);
        }
        segc_dataset_close(cam);
    }

    /* (b) ADE20K JPEGs: RandomResize((2048, 512), 0.5-2.0), 512x512 cat_max_ratio crop, flip, photometric, normalise */
    snprintf(path, sizeof path, "%s/ade20k-samples/ADEChallengeData2016", root);
    segc_dataset *ade = segc_dataset_open("ade20k", path, "validation", &dopt, err, sizeof err);
    if (!ade) {
        fprintf(stderr, "bench_data: %s\n", err);
    } else {
        repeat_src rs = {ade, segc_dataset_len(ade)};
        segc_sample_source src = {&rs, 256, repeat_load, repeat_name};
        segc_pipeline p;
        segc_pipeline_seg_train(&p, 2048, 512, 0.5, 2.0, 512, 512, 0.75);
        for (int th = 1; th <= 2; th++) {
            double r = measure(src, &p, th, 4, min_s);
            if (r > 0) printf("{\"pipeline\": \"ade20k_jpg_crop512x512\", \"threads\": %d, \"segc_samples_per_s\": %.2f}\n", th, r);
            fflush(stdout);
        }
        segc_dataset_close(ade);
    }
    return 0;
}
