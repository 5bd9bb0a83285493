/* Segmenter (ViT encoder + linear / mask-transformer decoders) against timm's
 * VisionTransformer and twins of mmseg's heads (tests/fixtures/gen_segmenter.py):
 * logits, loss and every parameter gradient for both decoders at the stored
 * position-embedding grid and at a grid that forces the run-time resize; the
 * bicubic resize op (torch reference + finite differences); the position
 * embedding resize; timm <-> mmseg name maps; loading mmseg-named weights at
 * another grid; bad input messages; bitwise resume of a tiny Segmenter run on
 * CamVid (needs $SEGC_DATA/camvid or ../shared/data/camvid: missing data fails). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/harness.h"
#include "common/train_check.h"
#include "segc/segmenter.h"
#include "segc/trainer.h"

static segc_st_file *fx;

static int setup(void **state) { fx = fx_open("segmenter.safetensors"); return fx ? 0 : -1; }
static int teardown(void **state) { segc_st_close(fx); return 0; }

static segc_tensor *input(segc_ctx *ctx, const char *key) {
    const segc_st_entry *e = segc_st_get(fx, key);
    if (!e) fail_msg("fixture lacks %s", key);
    segc_tensor *t = segc_tensor_new(ctx, e->dtype, e->ndim, e->shape);
    memcpy(t->data, e->data, e->nbytes);
    return t;
}

static segc_segmenter_config fixture_config(segc_segmenter_decoder dec) {
    segc_segmenter_config c;
    memset(&c, 0, sizeof c);
    assert_true(segc_vit_preset(&c.vit, "vit-t"));
    c.vit.embed_dim = (int)fx_param_int(fx, "config", "embed_dims", 0);
    c.vit.depth = (int)fx_param_int(fx, "config", "depth", 0);
    c.vit.heads = (int)fx_param_int(fx, "config", "num_heads", 0);
    c.vit.patch_size = (int)fx_param_int(fx, "config", "patch_size", 0);
    c.vit.img_size[0] = c.vit.img_size[1] = (int)fx_param_int(fx, "config", "img_size", 0);
    c.vit.in_channels = (int)fx_param_int(fx, "config", "in_channels", 0);
    c.vit.drop_path_rate = 0;
    c.num_classes = (int)fx_param_int(fx, "config", "num_classes", 0);
    c.decoder = dec;
    c.dec_layers = (int)fx_param_int(fx, "config", "decoder_layers", 0);
    c.dec_mlp_ratio = 4;
    c.dec_ln_eps = 1e-5f;
    return c;
}

static segc_segmenter *fixture_model(segc_segmenter_decoder dec) {
    segc_segmenter_config c = fixture_config(dec);
    char err[256];
    segc_segmenter *m = segc_segmenter_new(&c, err, sizeof err);
    if (!m) fail_msg("%s", err);
    const char *dn = dec == SEGC_SEGMENTER_MASK ? "mask" : "linear";
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        char key[256];
        snprintf(key, sizeof key, "%s/param/%s", strncmp(t->name, "decode_head.", 12) ? "enc" : dn, t->name);
        const segc_st_entry *e = segc_st_get(fx, key);
        if (!e) fail_msg("fixture lacks %s", key);
        assert_int_equal(e->nbytes, segc_nbytes(t));
        memcpy(t->data, e->data, e->nbytes);
    }
    return m;
}

static void parity_case(segc_segmenter_decoder dec, const char *size) {
    const char *dn = dec == SEGC_SEGMENTER_MASK ? "mask" : "linear";
    char cas[64], key[320];
    snprintf(cas, sizeof cas, "%s_%s", dn, size);
    segc_segmenter *m = fixture_model(dec);
    segc_ctx *ctx = segc_ctx_new(0);
    ctx->training = true;
    snprintf(key, sizeof key, "%s/x", cas);
    segc_tensor *x = input(ctx, key);
    snprintf(key, sizeof key, "%s/labels", cas);
    segc_tensor *labels = input(ctx, key);
    segc_tensor *logits = segc_segmenter_forward(ctx, m, x);
    if (!logits) fail_msg("forward: %s", segc_last_error(ctx));
    segc_tensor *want = fx_tensor(ctx, fx, cas, "logits");
    assert_true(segc_same_shape(logits, want));
    char what[320];
    snprintf(what, sizeof what, "%s logits", cas);
    bool ok = fx_close_norm(what, segc_f32(logits), segc_f32(want), segc_numel(want), 0, 1e-5);
    segc_tensor *loss = segc_segmenter_loss(ctx, logits, labels, 255);
    assert_non_null(loss);
    snprintf(what, sizeof what, "%s loss", cas);
    ok &= fx_close(what, loss, fx_tensor(ctx, fx, cas, "loss"), 1e-5);
    segc_params_zero_grad(&m->params);
    if (!segc_backward(ctx, loss)) fail_msg("backward: %s", segc_last_error(ctx));
    double max_norm = 0;
    for (int i = 0; i < m->params.n; i++) {
        snprintf(key, sizeof key, "%s/grad/%s", cas, m->params.t[i]->name);
        const segc_st_entry *g = segc_st_get(fx, key);
        if (!g) fail_msg("fixture lacks %s", key);
        max_norm = fmax(max_norm, fx_norm(g->data, segc_numel(m->params.t[i])));
    }
    for (int i = 0; i < m->params.n; i++) {
        segc_tensor *t = m->params.t[i];
        snprintf(key, sizeof key, "%s/grad/%s", cas, t->name);
        const segc_st_entry *g = segc_st_get(fx, key);
        snprintf(what, sizeof what, "%s grad %s", cas, t->name);
        ok &= fx_close_norm(what, t->grad, g->data, segc_numel(t), 1e-3 * max_norm, 1e-4);
    }
    segc_ctx_free(ctx);
    segc_segmenter_free(m);
    assert_true(ok);
}

static void test_mask_stored_grid(void **state) { parity_case(SEGC_SEGMENTER_MASK, "s32"); }
static void test_mask_resized_grid(void **state) { parity_case(SEGC_SEGMENTER_MASK, "s48x64"); }
static void test_linear_stored_grid(void **state) { parity_case(SEGC_SEGMENTER_LINEAR, "s32"); }
static void test_linear_resized_grid(void **state) { parity_case(SEGC_SEGMENTER_LINEAR, "s48x64"); }

/* ---- bicubic resize ---- */

static segc_tensor *bicubic_fn(segc_ctx *ctx, segc_tensor **ins, int n, void *user) {
    const int *hw = user;
    return segc_resize_bicubic(ctx, ins[0], hw[0], hw[1], false);
}

static void test_bicubic_resize(void **state) {
    static const char *const cases[] = {"up", "down", "mixed"};
    bool ok = true;
    for (int c = 0; c < 3; c++) {
        segc_ctx *ctx = segc_ctx_new(0);
        char key[96];
        snprintf(key, sizeof key, "bicubic/%s/in", cases[c]);
        segc_tensor *x = input(ctx, key);
        x->requires_grad = true;
        snprintf(key, sizeof key, "bicubic/%s/out", cases[c]);
        segc_tensor *want = input(ctx, key);
        segc_tensor *y = segc_resize_bicubic(ctx, x, (int)want->shape[2], (int)want->shape[3], false);
        if (!y) fail_msg("%s", segc_last_error(ctx));
        ok &= fx_close(key, y, want, 1e-4);   /* PyTorch sums the 16 taps in another order: ~1e-6 absolute */
        snprintf(key, sizeof key, "bicubic/%s/gout", cases[c]);
        segc_tensor *gout = input(ctx, key);
        assert_true(segc_backward_from(ctx, y, segc_f32(gout)));
        snprintf(key, sizeof key, "bicubic/%s/grad", cases[c]);
        ok &= fx_close_f32(key, x->grad, input(ctx, key), 1e-5);
        /* finite differences, align_corners both ways */
        int hw[2] = {(int)want->shape[2], (int)want->shape[3]};
        segc_tensor *xs = t_randn(ctx, 4, x->shape, 1.0f, true);
        ok &= gradcheck(ctx, "bicubic fd", bicubic_fn, &xs, 1, hw, gc_default());
        /* bf16 storage: f32 arithmetic on the rounded values, output rounded */
        segc_tensor *xb = segc_cast(ctx, x, SEGC_BF16);
        segc_tensor *yb = segc_resize_bicubic(ctx, xb, hw[0], hw[1], false);
        assert_int_equal(yb->dtype, SEGC_BF16);
        ok &= fx_close_norm("bicubic bf16", segc_as_f32(ctx, yb), segc_f32(want), segc_numel(want), 0, 1e-2);
        segc_ctx_free(ctx);
    }
    /* same size: identity */
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *x = t_randn(ctx, 4, SHAPE(1, 2, 3, 5), 1.0f, false);
    segc_tensor *y = segc_resize_bicubic(ctx, x, 3, 5, false);
    assert_memory_equal(x->data, y->data, segc_nbytes(x));
    assert_null(segc_resize_bicubic(ctx, x, 0, 5, false));
    assert_non_null(strstr(segc_last_error(ctx), "resize_bicubic"));
    segc_ctx_free(ctx);
    assert_true(ok);
}

static void test_pos_embed_resize(void **state) {
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *pos = input(ctx, "posresize/in"), *want = input(ctx, "posresize/out");
    segc_tensor *r = segc_vit_resize_pos_embed(ctx, pos, 2, 2, 3, 4);
    if (!r) fail_msg("%s", segc_last_error(ctx));
    assert_true(segc_same_shape(r, want));
    bool ok = fx_close("pos_embed 2x2 -> 3x4", r, want, 1e-5);
    /* the class entry is kept exactly */
    assert_memory_equal(r->data, pos->data, (size_t)pos->shape[2] * sizeof(float));
    assert_ptr_equal(segc_vit_resize_pos_embed(ctx, pos, 2, 2, 2, 2), pos);
    segc_ctx_free(ctx);
    assert_true(ok);
}

/* ---- names and loading ---- */

static void test_name_maps(void **state) {
    static const char *const pairs[][2] = {
        {"cls_token", "backbone.cls_token"},
        {"pos_embed", "backbone.pos_embed"},
        {"patch_embed.proj.weight", "backbone.patch_embed.projection.weight"},
        {"blocks.11.norm1.bias", "backbone.layers.11.ln1.bias"},
        {"blocks.3.attn.qkv.weight", "backbone.layers.3.attn.attn.in_proj_weight"},
        {"blocks.3.attn.qkv.bias", "backbone.layers.3.attn.attn.in_proj_bias"},
        {"blocks.0.attn.proj.weight", "backbone.layers.0.attn.attn.out_proj.weight"},
        {"blocks.0.norm2.weight", "backbone.layers.0.ln2.weight"},
        {"blocks.5.mlp.fc1.bias", "backbone.layers.5.ffn.layers.0.0.bias"},
        {"blocks.5.mlp.fc2.weight", "backbone.layers.5.ffn.layers.1.weight"},
        {"norm.weight", "backbone.ln1.weight"},
    };
    char a[256], b[256];
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        assert_true(segc_vit_name_timm_to_mmseg(pairs[i][0], a, sizeof a));
        assert_string_equal(a, pairs[i][1]);
        assert_true(segc_vit_name_mmseg_to_timm(pairs[i][1], b, sizeof b));
        assert_string_equal(b, pairs[i][0]);
        assert_true(segc_vit_name_mmseg_to_timm(pairs[i][1] + 9, b, sizeof b));   /* without "backbone." */
        assert_string_equal(b, pairs[i][0]);
    }
    /* every parameter of a ViT-S store round-trips */
    segc_segmenter_config c;
    memset(&c, 0, sizeof c);
    assert_true(segc_vit_preset(&c.vit, "vit-s"));
    c.num_classes = 3;
    c.decoder = SEGC_SEGMENTER_LINEAR;
    char err[256];
    segc_segmenter *m = segc_segmenter_new(&c, err, sizeof err);
    assert_non_null(m);
    int mapped = 0;
    for (int i = 0; i < m->params.n; i++) {
        const char *n = m->params.t[i]->name;
        if (!strncmp(n, "decode_head.", 12)) {
            assert_false(segc_vit_name_timm_to_mmseg(n, a, sizeof a));
            continue;
        }
        assert_true(segc_vit_name_timm_to_mmseg(n, a, sizeof a));
        assert_true(segc_vit_name_mmseg_to_timm(a, b, sizeof b));
        assert_string_equal(b, n);
        mapped++;
    }
    assert_int_equal(mapped, 4 + 2 + 12 * 12);   /* cls, pos, patch w/b; final norm; 12 per block */
    segc_segmenter_free(m);
    /* not ViT encoder names */
    assert_false(segc_vit_name_mmseg_to_timm("decode_head.cls_emb", a, sizeof a));
    assert_false(segc_vit_name_mmseg_to_timm("backbone.layers.x.ln1.weight", a, sizeof a));
    assert_false(segc_vit_name_mmseg_to_timm("backbone.layers.1.ln1.running_mean", a, sizeof a));
    assert_false(segc_vit_name_timm_to_mmseg("head.weight", a, sizeof a));
}

/* The fixture's encoder under mmseg names (pos_embed at the 2x2 grid) and its mask head
 * into a model whose position embeddings are stored for 48x64 (3x4): resized on load. */
static void test_load_mmseg_names_other_grid(void **state) {
    segc_segmenter *src = fixture_model(SEGC_SEGMENTER_MASK);
    segc_st_writer *w = segc_st_writer_new();
    char name[256];
    for (int i = 0; i < src->params.n; i++) {
        segc_tensor *t = src->params.t[i];
        const char *n = t->name;
        if (segc_vit_name_timm_to_mmseg(n, name, sizeof name)) n = name;
        segc_st_writer_add(w, n, SEGC_F32, t->ndim, t->shape, t->data);
    }
    segc_st_writer_add(w, "decode_head.conv_seg.weight", SEGC_F32, 1, SHAPE(2), (float[]){1, 2});   /* unused in mmseg */
    char path[] = "/tmp/segc_segmenter_XXXXXX", err[512];
    close(mkstemp(path));
    if (!segc_st_writer_save(w, path, err, sizeof err)) fail_msg("%s", err);
    segc_st_writer_free(w);

    segc_segmenter_config c = fixture_config(SEGC_SEGMENTER_MASK);
    c.vit.img_size[0] = 48;
    c.vit.img_size[1] = 64;
    segc_segmenter *m = segc_segmenter_new(&c, err, sizeof err);
    assert_non_null(m);
    segc_load_report rep;
    assert_false(segc_vit_load(&m->params, &m->vit, path, true, &rep, err, sizeof err));   /* the extra tensor */
    assert_non_null(strstr(err, "decode_head.conv_seg.weight"));
    assert_true(segc_vit_load(&m->params, &m->vit, path, false, &rep, err, sizeof err));
    assert_int_equal(rep.loaded, m->params.n);
    assert_int_equal(rep.missing, 0);
    assert_int_equal(rep.unexpected, 1);
    assert_int_equal(rep.mismatched, 0);
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *want = input(ctx, "posresize/out");
    bool ok = fx_close_f32("pos_embed resized on load", segc_f32(m->vit.pos_embed), want, 1e-5);
    segc_tensor *blk = segc_params_find(&m->params, "blocks.1.attn.qkv.weight");
    assert_memory_equal(blk->data, segc_params_find(&src->params, "blocks.1.attn.qkv.weight")->data, segc_nbytes(blk));
    segc_ctx_free(ctx);
    segc_segmenter_free(m);

    /* another width: strict load names the tensor and both shapes */
    c = fixture_config(SEGC_SEGMENTER_MASK);
    c.vit.embed_dim = 48;
    c.dec_dim = 48;
    m = segc_segmenter_new(&c, err, sizeof err);
    assert_non_null(m);
    assert_false(segc_vit_load(&m->params, &m->vit, path, true, &rep, err, sizeof err));
    if (!strstr(err, "16]") || !strstr(err, "48]") || !strstr(err, "backbone.")) fail_msg("message: %s", err);
    segc_segmenter_free(m);
    /* another depth: the extra blocks are reported */
    c = fixture_config(SEGC_SEGMENTER_MASK);
    c.vit.depth = 1;
    m = segc_segmenter_new(&c, err, sizeof err);
    assert_false(segc_vit_load(&m->params, &m->vit, path, true, &rep, err, sizeof err));
    assert_true(rep.unexpected > 1);
    segc_segmenter_free(m);
    unlink(path);
    segc_segmenter_free(src);
    assert_true(ok);
}

/* ---- bad input ---- */

static void test_bad_input(void **state) {
    segc_segmenter *m = fixture_model(SEGC_SEGMENTER_LINEAR);
    segc_ctx *ctx = segc_ctx_new(0);
    segc_tensor *x = segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 3, 40, 32));
    assert_null(segc_segmenter_forward(ctx, m, x));
    const char *e = segc_last_error(ctx);
    if (!strstr(e, "40x32") || !strstr(e, "patch size 16") || !strstr(e, "slide") || !strstr(e, "pad"))
        fail_msg("message: %s", e);
    segc_clear_error(ctx);
    x = segc_tensor_zeros(ctx, SEGC_F32, 4, SHAPE(1, 1, 32, 32));
    assert_null(segc_segmenter_forward(ctx, m, x));
    assert_non_null(strstr(segc_last_error(ctx), "[N, 3, H, W], found [1, 1, 32, 32]"));
    segc_ctx_free(ctx);
    segc_segmenter_free(m);
    char err[512];
    segc_model_spec s = {"segmenter", "vit-h", 5, 3, NULL, 0, NULL};
    assert_null(segc_model_new(&s, err, sizeof err));
    if (!strstr(err, "vit-t|vit-s|vit-b|vit-l")) fail_msg("message: %s", err);
    segc_model_opt bad[] = {{"img_size", "[500, 512]"}};
    s.variant = "vit-t";
    s.opts = bad;
    s.n_opts = 1;
    assert_null(segc_model_new(&s, err, sizeof err));
    if (!strstr(err, "model.img_size")) fail_msg("message: %s", err);
    segc_model_opt bad2[] = {{"decoder", "conv"}};
    s.opts = bad2;
    assert_null(segc_model_new(&s, err, sizeof err));
    if (!strstr(err, "model.decoder")) fail_msg("message: %s", err);
}

/* ---- bitwise resume: stopped after iterations 1 and 2, resumed each time ---- */
static void test_segmenter_resume_exact(void **state) {
    const char *ov[] = {"model.type=segmenter", "model.variant=vit-t", "model.embed_dims=32", "model.depth=2",
                        "model.num_heads=2", "model.img_size=[32, 48]", "model.decoder=mask",
                        "model.decoder_layers=1", "data.dataset=camvid", "data.val_split=", "data.batch_size=2",
                        "data.num_workers=1", "data.scale=[120,90]", "data.crop_size=[32,48]",
                        "optimizer.type=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9",
                        "optimizer.weight_decay=0", "schedule.warmup_iters=0", "schedule.power=0.9",
                        "train.checkpoint_interval=2", "train.log_interval=1", "train.threads=2"};
    tc_resume_exact(ov, (int)(sizeof ov / sizeof *ov), "camvid", 2, 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mask_stored_grid),
        cmocka_unit_test(test_mask_resized_grid),
        cmocka_unit_test(test_linear_stored_grid),
        cmocka_unit_test(test_linear_resized_grid),
        cmocka_unit_test(test_bicubic_resize),
        cmocka_unit_test(test_pos_embed_resize),
        cmocka_unit_test(test_name_maps),
        cmocka_unit_test(test_load_mmseg_names_other_grid),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_segmenter_resume_exact),
    };
    return cmocka_run_group_tests_name("segmenter", tests, setup, teardown);
}
