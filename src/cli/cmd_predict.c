/* `segc predict --checkpoint FILE [--config CONFIG] INPUT... --out DIR`:
 * label PNGs (class ids) and colour overlays for image files and folders. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "segc/predict.h"
#include "segc/safetensors.h"
#include "segc/trainer.h"

static void predict_usage(FILE *f) {
    fprintf(f,
            "usage: segc predict --checkpoint FILE [--config CONFIG] INPUT... --out DIR [key=value ...]\n"
            "       segc predict --checkpoint FILE [--config CONFIG] --split SPLIT --out DIR [key=value ...]\n"
            "  INPUT            image files (.png/.jpg) or folders of them\n"
            "  --split SPLIT    medical datasets (brats, msd): every volume of the config's dataset split, written as\n"
            "                   DIR/<case>.nii.gz (uint8 labels, the case's own affine); detection models (COCO):\n"
            "                   DIR/detections.json (COCO results of the split) and DIR/<stem>_det.png\n"
            "  --checkpoint F   weights; a segc checkpoint carries its config, others need --config\n"
            "  --out DIR        writes DIR/<stem>.png (class ids) and DIR/<stem>_overlay.png; detection models:\n"
            "                   DIR/<stem>.json (COCO results: image_id, category_id, bbox [x, y, w, h], score) and\n"
            "                   DIR/<stem>_det.png (boxes scored >= --draw-threshold with class names)\n"
            "  --no-overlay     label maps only (detection: no drawn images)\n"
            "  --draw-threshold T  detection: lowest score of a drawn box, 0..1 (default 0.3; the JSON keeps all)\n"
            "  key=value        config overrides, e.g. test.mode=slide test.flip=true\n");
}

/* detection models: --split S -> OUT/detections.json (the split, COCO results) + OUT/<stem>_det.png;
 * image files -> OUT/<stem>.json + OUT/<stem>_det.png (predict_detect.c) */
static bool predict_detection(const segc_config *c, segc_model *m, const segc_dataset *ds, const char *split,
                              const segc_pipeline *pipe, const char *const *inputs, int n_in, const char *out,
                              bool draw, float draw_thr, const uint8_t *palette, segc_ctx *ctx, int *written, char *err,
                              size_t n) {
    if (split) {
        segc_eval_opts eo;
        segc_eval_opts_default(&eo);
        eo.dtype = segc_config_dtype(c);
        eo.model = m;
        eo.pipeline = pipe;
        eo.channels = m->in_channels;
        eo.num_workers = c->data.num_workers > 0 ? c->data.num_workers : 1;
        return segc_predict_detections(ctx, m, ds, &eo, NULL, out, draw, draw_thr, NULL, written, err, n);
    }
    segc_predict_opts po;
    segc_predict_opts_default(&po);
    po.dtype = segc_config_dtype(c);
    po.pipeline = pipe;
    po.palette = palette;
    po.n_colors = m->num_classes < 256 ? m->num_classes : 256;
    po.channels = 3;
    int64_t cats[256];
    const char *names[256];
    bool coco = ds && segc_dataset_is_detection(ds) && segc_dataset_num_classes(ds) >= m->num_classes;
    for (int k = 0; k < m->num_classes && k < 256; k++) {
        cats[k] = coco ? segc_dataset_coco_category_id(ds, k) : k + 1;
        names[k] = coco ? segc_dataset_class_name(ds, k) : NULL;
    }
    return segc_predict_detect_paths(ctx, m, inputs, n_in, out, &po, NULL, cats, coco ? names : NULL, draw_thr, written,
                                     err, n);
}

int segc_cmd_predict(int argc, char **argv) {
    const char *config = NULL, *ckpt = NULL, *out = NULL, *split = NULL;
    char **ov = calloc((size_t)argc + 1, sizeof *ov), **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    int n_ov = 0, n_in = 0, rc = 2;
    bool overlay = true;
    float draw_thr = 0.3f;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        bool needs = !strcmp(s, "--checkpoint") || !strcmp(s, "--config") || !strcmp(s, "--out") || !strcmp(s, "--split") ||
                     !strcmp(s, "--draw-threshold");
        if (needs && i + 1 >= argc) { fprintf(stderr, "segc predict: %s needs a value\n", s); goto done; }
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) { predict_usage(stdout); rc = 0; goto done; }
        else if (!strcmp(s, "--checkpoint")) ckpt = argv[++i];
        else if (!strcmp(s, "--config")) config = argv[++i];
        else if (!strcmp(s, "--out")) out = argv[++i];
        else if (!strcmp(s, "--split")) split = argv[++i];
        else if (!strcmp(s, "--no-overlay")) overlay = false;
        else if (!strcmp(s, "--draw-threshold")) {
            char *end;
            double v = strtod(argv[++i], &end);
            if (end == argv[i] || *end || !(v >= 0 && v <= 1)) {
                fprintf(stderr, "segc predict: --draw-threshold: expected a score in 0..1, found '%s'\n", argv[i]);
                goto done;
            }
            draw_thr = (float)v;
        }
        else if (s[0] == '-') { fprintf(stderr, "segc predict: unknown option %s\n", s); predict_usage(stderr); goto done; }
        else if (strchr(s, '=')) ov[n_ov++] = argv[i];
        else inputs[n_in++] = argv[i];
    }
    if (!ckpt || !out || (!n_in && !split) || (n_in && split)) { predict_usage(stderr); goto done; }
    rc = 1;
    segc_config c;
    char err[1024];
    segc_model *m = NULL;
    segc_dataset *ds = NULL;
    segc_ctx *ctx = NULL, *work = NULL;
    if (!segc_cli_config_for(&c, config, ckpt, ov, n_ov, err, sizeof err)) goto fail;
    if (c.train.threads > 0) segc_set_num_threads(NULL, c.train.threads);
    segc_config_apply_conv_algo(&c);
    int K = c.model.num_classes;   /* segc checkpoints store the resolved count */
    /* the dataset, when at hand, supplies the palette */
    char e2[900];
    ds = segc_config_open_dataset(&c, split ? split : *c.data.val_split ? c.data.val_split : NULL, e2, sizeof e2);
    if (split && !ds) { snprintf(err, sizeof err, "--split %s: %s", split, e2); goto fail; }
    if (!K && ds) K = segc_dataset_num_classes(ds);
    if (K < 1) { snprintf(err, sizeof err, "%s: cannot tell the number of classes (set model.num_classes)", ckpt); goto fail; }
    int ch = c.model.in_channels ? c.model.in_channels : ds ? segc_dataset_channels(ds, e2, sizeof e2) : 3;
    segc_model_spec spec = segc_config_model_spec(&c, K, ch ? ch : 3);
    m = segc_model_new(&spec, err, sizeof err);
    if (!m || !segc_model_load_checkpoint(m, ckpt, err, sizeof err)) goto fail;
    uint8_t palette[256 * 3];
    segc_predict_default_palette(palette, K);
    if (ds)
        for (int k = 0; k < K && k < segc_dataset_num_classes(ds); k++) memcpy(palette + 3 * k, segc_dataset_palette(ds, k), 3);
    segc_pipeline pipe;
    segc_config_eval_pipeline(&c, &pipe);
    if (m->family->task == SEGC_TASK_DETECTION) {   /* COCO results JSON + images with the boxes drawn */
        if (!(ctx = segc_ctx_new(0))) { snprintf(err, sizeof err, "out of memory"); goto fail; }
        int written = 0;
        if (!predict_detection(&c, m, ds, split, &pipe, (const char *const *)inputs, n_in, out, overlay, draw_thr, palette, ctx,
                               &written, err, sizeof err))
            goto fail;
        fprintf(stderr, "wrote detections of %d image%s to %s\n", written, written == 1 ? "" : "s", out);
        rc = 0;
        goto cleanup;
    }
    if (split) {   /* whole volumes of a medical split */
        segc_eval_opts eo;
        segc_eval_opts_default(&eo);
        segc_config_infer_opts(&c, &eo.infer);
        eo.dtype = segc_config_dtype(&c);
        eo.model = m;
        eo.pipeline = &pipe;
        eo.channels = m->in_channels;
        ctx = segc_ctx_new(0);
        work = segc_ctx_new(0);
        int nv = 0;
        if (segc_dataset_n_volumes(ds) < 1 || !ctx || !work) { snprintf(err, sizeof err, "--split %s: no volumes", split); goto fail; }
        if (!segc_predict_volumes(ctx, work, segc_model_logits_fn, m, ds, &eo, out, &nv, err, sizeof err)) goto fail;
        fprintf(stderr, "wrote %d volume%s to %s\n", nv, nv == 1 ? "" : "s", out);
        rc = 0;
        goto cleanup;
    }
    segc_predict_opts po;
    segc_predict_opts_default(&po);
    segc_config_infer_opts(&c, &po.infer);
    po.dtype = segc_config_dtype(&c);
    po.pipeline = &pipe;
    po.palette = palette;
    po.n_colors = K;
    po.write_overlay = overlay;
    ctx = segc_ctx_new(0);
    work = segc_ctx_new(0);
    int written = 0;
    po.channels = m->in_channels == 1 ? 1 : 3;
    if (!segc_predict_paths(ctx, work, segc_model_logits_fn, m, (const char *const *)inputs, n_in, out, &po,
                            &written, err, sizeof err))
        goto fail;
    fprintf(stderr, "wrote %d prediction%s to %s\n", written, written == 1 ? "" : "s", out);
    rc = 0;
    goto cleanup;
fail:
    fprintf(stderr, "segc predict: %s\n", err);
cleanup:
    segc_ctx_free(ctx);
    segc_ctx_free(work);
    segc_model_free(m);
    segc_dataset_close(ds);
done:
    free(ov);
    free(inputs);
    return rc;
}
