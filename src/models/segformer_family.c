/* SegFormer as a registered model family (model.type: segformer). The
 * network itself is segformer.c; this file maps config keys to its
 * configuration and the generic model calls to its functions. */
#include <stdlib.h>
#include <string.h>

#include "segc/model.h"
#include "segc/segformer.h"

static const segc_model_key keys[] = {
    {"hidden", SEGC_KEY_INTS, "[0, 0, 0, 0]", NULL, "stage widths (all 0: the variant's)"},
    {"depths", SEGC_KEY_INTS, "[0, 0, 0, 0]", NULL, "blocks per stage (all 0: the variant's)"},
    {"heads", SEGC_KEY_INTS, "[0, 0, 0, 0]", NULL, "attention heads per stage (all 0: the variant's)"},
    {"decoder_hidden", SEGC_KEY_INT, "0", NULL, "decode head width (0: the variant's)"},
    {"drop_path_rate", SEGC_KEY_DOUBLE, "0.1", NULL, "stochastic depth, rising linearly over blocks"},
    {"classifier_dropout", SEGC_KEY_DOUBLE, "0.1", NULL, "dropout before the classifier"},
};

static bool all_zero(const int *v, int n) {
    for (int i = 0; i < n; i++)
        if (v[i]) return false;
    return true;
}

static bool segformer_validate(const segc_model_spec *s, char *err, size_t errlen) {
    static const struct { const char *k; int lo; } arrays[] = {{"hidden", 1}, {"depths", 0}, {"heads", 1}};
    for (int i = 0; i < 3; i++) {
        int v[8] = {0};
        int n = segc_spec_ints(s, arrays[i].k, v, 8);
        if (n != 4) return segc_errorf(err, errlen, "model.%s: expected 4 entries (one per stage), found %d", arrays[i].k, n);
        if (all_zero(v, 4)) continue;
        for (int st = 0; st < 4; st++)
            if (v[st] < arrays[i].lo)
                return segc_errorf(err, errlen, "model.%s: expected all 0 (the variant's) or every entry >= %d, found %d at stage %d",
                                   arrays[i].k, arrays[i].lo, v[st], st);
    }
    if (segc_spec_int(s, "decoder_hidden") < 0)
        return segc_errorf(err, errlen, "model.decoder_hidden: expected >= 0, found %d", segc_spec_int(s, "decoder_hidden"));
    double dp = segc_spec_double(s, "drop_path_rate"), cd = segc_spec_double(s, "classifier_dropout");
    if (!(dp >= 0 && dp < 1) || !(cd >= 0 && cd < 1))
        return segc_errorf(err, errlen, "model.drop_path_rate / classifier_dropout: expected [0, 1), found %g / %g", dp, cd);
    return true;
}

static bool segformer_create(segc_model *m, const segc_model_spec *s, char *err, size_t errlen) {
    if (!segc_loss_cfg_check_model(s->loss, "segformer", s->num_classes, false, err, errlen)) return false;
    segc_segformer_config mc;
    if (!segc_segformer_preset(&mc, m->variant, s->num_classes))
        return segc_errorf(err, errlen, "model.variant: unknown SegFormer variant '%s' (b0..b5)", m->variant);
    int hidden[4], depths[4], heads[4];
    segc_spec_ints(s, "hidden", hidden, 4);
    segc_spec_ints(s, "depths", depths, 4);
    segc_spec_ints(s, "heads", heads, 4);
    for (int st = 0; st < 4; st++) {
        if (!all_zero(hidden, 4)) mc.hidden[st] = hidden[st];
        if (!all_zero(depths, 4)) mc.depths[st] = depths[st];
        if (!all_zero(heads, 4)) mc.heads[st] = heads[st];
    }
    if (segc_spec_int(s, "decoder_hidden")) mc.decoder_hidden = segc_spec_int(s, "decoder_hidden");
    mc.drop_path_rate = (float)segc_spec_double(s, "drop_path_rate");
    mc.classifier_dropout = (float)segc_spec_double(s, "classifier_dropout");
    mc.num_channels = s->in_channels;
    segc_segformer *sf = segc_segformer_new(&mc, err, errlen);
    if (!sf) return false;
    /* the generic model owns the parameter store; the layers' tensor pointers stay valid */
    m->params = sf->params;
    segc_params_init(&sf->params);
    m->impl = sf;
    return true;
}

static void segformer_init(segc_model *m, uint64_t seed) {
    segc_segformer *sf = m->impl;
    sf->params = m->params;   /* the initialiser walks the store by name */
    segc_segformer_init(sf, seed);
    segc_params_init(&sf->params);
}

static void segformer_destroy(segc_model *m) { segc_segformer_free(m->impl); }

static bool segformer_forward(segc_ctx *ctx, segc_model *m, segc_tensor *images, segc_model_out *out) {
    out->maps[0] = segc_segformer_forward(ctx, m->impl, images);
    out->n_maps = out->maps[0] != NULL;
    return out->maps[0] != NULL;
}

static segc_tensor *segformer_loss(segc_ctx *ctx, segc_model *m, const segc_model_out *out, const segc_targets *t) {
    if (m->loss && m->loss->decode.given)   /* the `loss` section; otherwise HF's CE (mean over non-ignored pixels) */
        return segc_loss_head_fwd(ctx, m->loss, &m->loss->decode, out->maps[0], t->labels, t->ignore_index, false, true);
    return segc_segformer_loss(ctx, out->maps[0], t->labels, t->ignore_index);
}

const segc_model_family segc_family_segformer = {
    .type = "segformer",
    .summary = "SegFormer (MiT-B0..B5 encoder, all-MLP head); HF transformers parameter names",
    .task = SEGC_TASK_SEGMENTATION,
    .variants = "b0|b1|b2|b3|b4|b5",
    .default_variant = "b0",
    .keys = keys,
    .n_keys = (int)(sizeof keys / sizeof keys[0]),
    .validate = segformer_validate,
    .create = segformer_create,
    .init = segformer_init,
    .destroy = segformer_destroy,
    .forward = segformer_forward,
    .loss = segformer_loss,
    .postprocess = NULL,
};
