/* 2-D convolution and transposed convolution on oneDNN, forward and backward.
 *
 * oneDNN picks the memory layouts (format "any": blocked nChw8c/nChw16c and
 * blocked weights); we reorder from/to our plain NCHW inside the op. Measured
 * on 8x64x128x128 3x3 -> 64 (2 threads, AVX2): 133 ms forward + 23 ms of
 * reorders vs 282 ms for oneDNN on plain NCHW (im2col + GEMM); backward 455 vs
 * 900 ms. The layouts chosen in forward are kept in the arena, so backward
 * reuses the blocked input/weights instead of reordering again. bf16 uses
 * oneDNN's bf16 primitives when the CPU has them; otherwise bf16 is converted
 * to f32 around the layout reorders and the primitive runs in f32.
 * train.conv_algo (segc_conv_set_algo) may put f32 3x3 stride-1 problems on
 * oneDNN's Winograd kernels; they fall back to direct where it has none.
 * Every primitive (convolutions and reorders) is cached under a key holding
 * the full problem description, so a steady-state step creates none. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_internal.h"
#include "dnnl_backend.h"
#include "segc/ops.h"
#include "segc/profile.h"

enum {
    K_FWD = 1, K_BWD_DATA, K_BWD_WEIGHTS,
    /* reorders, one slot per (from, to) pair of a problem */
    R_X_FWD, R_W_FWD, R_Y_FWD, R_G_BWD_DATA, R_G_BWD_WEIGHTS, R_W_BWD_DATA, R_X_BWD_WEIGHTS, R_DX, R_DW
};

#define WINO_MAX_SCRATCH ((size_t)64 << 20)   /* SSD300 batch 4: larger ones (heads) add 41 MiB of peak, no speed */
static int g_algo = SEGC_CONV_ALGO_AUTO, g_algo_env = -1;   /* -1: not read yet */

bool segc_conv_algo_parse(const char *name, segc_conv_algo *out) {
    static const char *const names[] = {"auto", "direct", "winograd"};
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, names[i])) return *out = (segc_conv_algo)i, true;
    return false;
}
void segc_conv_set_algo(segc_conv_algo a) { __atomic_store_n(&g_algo, (int)a, __ATOMIC_RELAXED); }
segc_conv_algo segc_conv_get_algo(void) {
    int env = __atomic_load_n(&g_algo_env, __ATOMIC_RELAXED);
    if (env == -1) {
        segc_conv_algo a;
        const char *s = getenv("SEGC_CONV_ALGO");
        env = s && *s && segc_conv_algo_parse(s, &a) ? (int)a : -2;   /* -2: none */
        if (env == -2 && s && *s)
            fprintf(stderr, "segc: SEGC_CONV_ALGO: expected auto, direct or winograd, found '%s' (ignored)\n", s);
        __atomic_store_n(&g_algo_env, env, __ATOMIC_RELAXED);
    }
    return (segc_conv_algo)(env >= 0 ? env : __atomic_load_n(&g_algo, __ATOMIC_RELAXED));
}

segc_conv_params segc_conv_params_default(void) {
    segc_conv_params p;
    memset(&p, 0, sizeof p);
    p.stride[0] = p.stride[1] = 1;
    p.dilation[0] = p.dilation[1] = 1;
    p.groups = 1;
    p.act = SEGC_ACT_NONE;
    return p;
}

/* ---- memory descriptors ---- */

static dnnl_memory_desc_t md_tag(int nd, const int64_t *dims, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
    dnnl_memory_desc_t md;
    dnnl_dims_t d;
    for (int i = 0; i < nd; i++) d[i] = dims[i];
    dnnl_memory_desc_init_by_tag(&md, nd, d, dt, tag);
    return md;
}
/* activations: NCHW (oneDNN picks its own layout for `any`, segc reorders), or channels-last,
 * which oneDNN's kernels take as it is (never `any`: that would bring the reorders back) */
static dnnl_format_tag_t act_tag(const conv_key *k, bool any) {
    if (any && k->wino) return dnnl_format_tag_any;   /* Winograd: its blocked layout, reordered from either */
    return k->nhwc ? dnnl_nhwc : any ? dnnl_format_tag_any : dnnl_nchw;
}
static dnnl_memory_desc_t src_md(const conv_key *k, dnnl_data_type_t dt, bool any) {
    return md_tag(4, (int64_t[]){k->n, k->ic, k->ih, k->iw}, dt, act_tag(k, any));
}
static dnnl_memory_desc_t dst_md(const conv_key *k, dnnl_data_type_t dt, bool any) {
    return md_tag(4, (int64_t[]){k->n, k->oc, k->oh, k->ow}, dt, act_tag(k, any));
}
/* oneDNN weight dims are (g,) oc/g, ic/g, kh, kw for both directions; PyTorch
 * stores conv weights o,i order and transposed-conv weights i,o order */
static dnnl_memory_desc_t wei_md(const conv_key *k, dnnl_data_type_t dt, bool any) {
    if (k->groups == 1)
        return md_tag(4, (int64_t[]){k->oc, k->ic, k->kh, k->kw}, dt,
                      any ? dnnl_format_tag_any : k->transposed ? dnnl_iohw : dnnl_oihw);
    return md_tag(5, (int64_t[]){k->groups, k->oc / k->groups, k->ic / k->groups, k->kh, k->kw}, dt,
                  any ? dnnl_format_tag_any : k->transposed ? dnnl_giohw : dnnl_goihw);
}
static dnnl_memory_desc_t bias_md(const conv_key *k, dnnl_data_type_t dt) {
    return md_tag(1, (int64_t[]){k->oc}, dt, dnnl_x);
}
static const dnnl_memory_desc_t *pd_md(const segc_dnnl_prim *p, dnnl_query_t q, int i) {
    return dnnl_primitive_desc_query_md(p->pd, q, i);
}

/* ---- primitive creation (cached) ---- */

/* oneDNN 2.6.3's AMX brgemm forward convolution ("brgconv:avx512_core_amx_bf16", not the 1x1
 * one) reads past the end of a heap array while it generates its kernels, for every problem
 * it takes: under Electric Fence (EF_ALIGNMENT=1) every creation faults at one instruction
 * of libdnnl.so.2 (+0x6bf1ef). Under glibc malloc the read lands in the heap and the kernels compute
 * correctly (the bf16 parity tests); under AddressSanitizer's allocator the array sometimes
 * ends a mapped region and the process dies (test_train, ~1 run in 30). Sanitized builds,
 * which test segc's code rather than oneDNN's, take oneDNN's next forward kernel instead
 * (jit:avx512_core_amx_bf16, which the backward passes use anyway). */
#if defined(__SANITIZE_ADDRESS__) && !defined(SEGC_SKIP_BRGCONV_AMX)
#define SEGC_SKIP_BRGCONV_AMX 1
#endif

static dnnl_status_t init_desc(dnnl_convolution_desc_t *d, const conv_key *k, dnnl_data_type_t cdt,
                               dnnl_data_type_t bias_dt, dnnl_data_type_t diff_src_dt) {
    dnnl_memory_desc_t src = src_md(k, k->kind == K_BWD_DATA ? diff_src_dt : cdt, true);
    dnnl_memory_desc_t dst = dst_md(k, cdt, true);
    dnnl_memory_desc_t wei = wei_md(k, k->kind == K_BWD_WEIGHTS ? dnnl_f32 : cdt, true);
    dnnl_memory_desc_t bias = bias_md(k, k->kind == K_BWD_WEIGHTS ? dnnl_f32 : bias_dt);
    const dnnl_memory_desc_t *bp = k->bias_dtype >= 0 ? &bias : NULL;
    dnnl_dims_t st = {k->stride[0], k->stride[1]}, dl = {k->dil[0] - 1, k->dil[1] - 1};
    dnnl_dims_t pl = {k->pad_l[0], k->pad_l[1]}, pr = {k->pad_r[0], k->pad_r[1]};
    if (!k->transposed) {
        const dnnl_alg_kind_t alg = k->wino ? dnnl_convolution_winograd : dnnl_convolution_direct;
        if (k->kind == K_FWD)
            return dnnl_dilated_convolution_forward_desc_init(d, dnnl_forward_training, alg, &src,
                                                              &wei, bp, &dst, st, dl, pl, pr);
        if (k->kind == K_BWD_DATA)
            return dnnl_dilated_convolution_backward_data_desc_init(d, alg, &src, &wei, &dst, st,
                                                                    dl, pl, pr);
        return dnnl_dilated_convolution_backward_weights_desc_init(d, alg, &src, &wei, bp, &dst,
                                                                   st, dl, pl, pr);
    }
    if (k->kind == K_FWD)
        return dnnl_dilated_deconvolution_forward_desc_init(d, dnnl_forward_training, dnnl_deconvolution_direct, &src,
                                                            &wei, bp, &dst, st, dl, pl, pr);
    if (k->kind == K_BWD_DATA)
        return dnnl_dilated_deconvolution_backward_data_desc_init(d, dnnl_deconvolution_direct, &src, &wei, &dst, st,
                                                                  dl, pl, pr);
    return dnnl_dilated_deconvolution_backward_weights_desc_init(d, dnnl_deconvolution_direct, &src, &wei, bp, &dst,
                                                                 st, dl, pl, pr);
}

static dnnl_primitive_desc_t try_pd(const conv_key *k, dnnl_data_type_t cdt, dnnl_data_type_t bias_dt,
                                    dnnl_data_type_t diff_src_dt, const_dnnl_primitive_desc_t hint) {
    dnnl_convolution_desc_t d;
    if (init_desc(&d, k, cdt, bias_dt, diff_src_dt) != dnnl_success) return NULL;
    dnnl_primitive_attr_t attr = segc_dnnl_attr();
    if (k->kind == K_FWD && k->act != SEGC_ACT_NONE) {
        dnnl_post_ops_t po;
        dnnl_post_ops_create(&po);
        dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, k->act == SEGC_ACT_RELU ? 0.0f : k->alpha, 0.0f);
        dnnl_primitive_attr_set_post_ops(attr, po);
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd = NULL;
#ifdef SEGC_SKIP_BRGCONV_AMX
    if (k->kind == K_FWD && !k->transposed) {
        pd = segc_dnnl_pd_pick(&d, attr, hint, NULL, "brgconv:avx512_core_amx");
        dnnl_primitive_attr_destroy(attr);
        return pd;
    }
#endif
    if (dnnl_primitive_desc_create(&pd, &d, attr, segc_dnnl_engine(), hint) != dnnl_success) pd = NULL;
    dnnl_primitive_attr_destroy(attr);
    return pd;
}

/* the descriptor of k's primitive with the algorithm k->wino names (NULL: oneDNN has none);
 * backward primitives take their forward primitive as the layout hint */
static dnnl_primitive_desc_t create_pd(const conv_key *k, const segc_dnnl_prim *fwd) {
    const dnnl_data_type_t sdt = segc_dnnl_dt((segc_dtype)k->dtype);
    dnnl_primitive_desc_t pd;
    if (!fwd) {
        /* the storage dtype first (native bf16 kernels); f32 compute otherwise */
        const dnnl_data_type_t bdt = k->bias_dtype >= 0 ? segc_dnnl_dt((segc_dtype)k->bias_dtype) : dnnl_f32;
        pd = try_pd(k, sdt, bdt, sdt, NULL);
        if (!pd && sdt != dnnl_f32) pd = try_pd(k, dnnl_f32, dnnl_f32, dnnl_f32, NULL);
        return pd;
    }
    const dnnl_data_type_t cdt = pd_md(fwd, dnnl_query_src_md, 0)->data_type;
    /* f32 diff_src straight from a bf16 primitive saves a conversion */
    pd = try_pd(k, cdt, dnnl_f32, dnnl_f32, fwd->pd);
    if (!pd && cdt != dnnl_f32) pd = try_pd(k, cdt, dnnl_f32, cdt, fwd->pd);
    return pd;
}

static segc_dnnl_prim *get_prim(segc_ctx *ctx, const char *op, conv_key k, int kind) {
    k.kind = kind;
    segc_dnnl_prim *p = segc_dnnl_cache_get(&k, sizeof k);
    if (p) return p;
    segc_dnnl_prim *fwd = NULL;
    if (kind != K_FWD && !(fwd = get_prim(ctx, op, k, K_FWD))) return NULL;
    dnnl_primitive_desc_t pd = create_pd(&k, fwd);
    if (pd && k.wino) {
        /* oneDNN's Winograd scratchpad (transformed tiles) grows with the problem; past this size
           the memory it adds to the step's peak outweighs the time it saves */
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (smd && dnnl_memory_desc_get_size(smd) > WINO_MAX_SCRATCH) dnnl_primitive_desc_destroy(pd), pd = NULL;
    }
    if (!pd && k.wino) {   /* no Winograd kernel for this ISA or shape: direct, cached under the same key */
        conv_key kd = k;
        kd.wino = 0;
        pd = create_pd(&kd, fwd);
    }
    if (!pd) {
        segc_set_error(ctx, "%s: oneDNN has no %s primitive for x [%lld, %lld, %lld, %lld] -> [%lld, %lld, %lld, %lld] "
                       "kernel %lldx%lld groups %lld (%s)", op,
                       kind == K_FWD ? "forward" : kind == K_BWD_DATA ? "backward-data" : "backward-weights",
                       (long long)k.n, (long long)k.ic, (long long)k.ih, (long long)k.iw, (long long)k.n,
                       (long long)k.oc, (long long)k.oh, (long long)k.ow, (long long)k.kh, (long long)k.kw,
                       (long long)k.groups, segc_dtype_name((segc_dtype)k.dtype));
        return NULL;
    }
    return segc_dnnl_cache_put(ctx, op, &k, sizeof k, pd);
}

/* Reorder src (layout `from`) into dst (layout `to`); with accumulate the
 * result is added to dst (sum post-op). */
static bool reorder(segc_ctx *ctx, const char *op, conv_key k, int slot, bool accumulate,
                    const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, const void *src, void *dst) {
    k.kind = slot;
    k.accumulate = accumulate;
    segc_dnnl_prim *p = segc_dnnl_cache_get(&k, sizeof k);
    if (!p) {
        dnnl_primitive_attr_t attr = segc_dnnl_attr();
        if (accumulate) {
            dnnl_post_ops_t po;
            dnnl_post_ops_create(&po);
            dnnl_post_ops_append_sum(po, 1.0f);
            dnnl_primitive_attr_set_post_ops(attr, po);
            dnnl_post_ops_destroy(po);
        }
        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, segc_dnnl_engine(), to, segc_dnnl_engine(), attr);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success) {
            segc_set_error(ctx, "%s: oneDNN could not create a layout reorder (status %d)", op, (int)st);
            return false;
        }
        p = segc_dnnl_cache_put(ctx, op, &k, sizeof k, pd);
        if (!p) return false;
    }
    return segc_dnnl_run(ctx, op, p, 2, (const int[]){DNNL_ARG_FROM, DNNL_ARG_TO}, (void *const[]){(void *)src, dst});
}

static int64_t md_numel(const dnnl_memory_desc_t *md) {
    int64_t n = 1;
    for (int i = 0; i < md->ndims; i++) n *= md->dims[i];
    return n;
}

/* Without AVX-512, oneDNN 2.6 converts bf16 <-> f32 in a generic reorder that
 * is ~30x slower than a layout reorder (2.2 s for 8x64x128x128), so the
 * conversion happens here in a vectorised pass and oneDNN only changes the
 * layout, f32 to f32. */
static bool split_bf16(const dnnl_memory_desc_t *bf16_side, const dnnl_memory_desc_t *f32_side) {
    return bf16_side->data_type == dnnl_bf16 && f32_side->data_type == dnnl_f32;
}

/* data in layout `to`: the plain buffer itself when the layouts agree, else a
 * reordered copy in the arena (NULL on error) */
static void *in_layout(segc_ctx *ctx, const char *op, const conv_key *k, int slot, const dnnl_memory_desc_t *plain,
                       const dnnl_memory_desc_t *to, const void *data) {
    if (dnnl_memory_desc_equal(plain, to)) return (void *)data;
    dnnl_memory_desc_t plain32 = *plain;
    if (split_bf16(plain, to)) {
        int64_t n = md_numel(plain);
        float *f = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof(float));
        segc_bf16_to_f32_n(data, f, n);
        plain32.data_type = dnnl_f32;
        if (dnnl_memory_desc_equal(&plain32, to)) return f;
        data = f;
    }
    void *buf = segc_arena_alloc(&ctx->arena, dnnl_memory_desc_get_size(to));
    return reorder(ctx, op, *k, slot, false, &plain32, to, data, buf) ? buf : NULL;
}

/* src (layout `from`) into the plain buffer dst (layout `plain`) */
static bool out_layout(segc_ctx *ctx, const char *op, const conv_key *k, int slot, const dnnl_memory_desc_t *from,
                       const dnnl_memory_desc_t *plain, const void *src, void *dst) {
    if (!split_bf16(plain, from)) return reorder(ctx, op, *k, slot, false, from, plain, src, dst);
    dnnl_memory_desc_t plain32 = *plain;
    plain32.data_type = dnnl_f32;
    int64_t n = md_numel(plain);
    float *f = (float *)src;
    if (!dnnl_memory_desc_equal(&plain32, from)) {
        f = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof(float));
        if (!reorder(ctx, op, *k, slot, false, from, &plain32, src, f)) return false;
    }
    segc_f32_to_bf16_n(f, dst, n);
    return true;
}

/* f32 gradient buffer of t: `fresh` when t had none yet (not a parameter),
 * so the op may overwrite it instead of accumulating (and skip zeroing). */
static float *grad_buffer(segc_ctx *ctx, segc_tensor *t, bool *fresh) {
    *fresh = !t->grad && !t->grad_bf16 && !t->is_param;   /* a bf16 gradient: segc_grad widens it */
    if (*fresh) t->grad = segc_grad_buffer(ctx, segc_numel(t), false);
    return segc_grad(ctx, t);
}

/* ---- validation ---- */

static bool fill_key(segc_ctx *ctx, const char *op, bool transposed, const segc_tensor *x, const segc_tensor *w,
                     const segc_tensor *b, const segc_conv_params *p, conv_key *k) {
    char bx[96], bw[96], bb[96];
    if (!segc_check_float_any_layout(ctx, op, "x", x) || !segc_check_ndim(ctx, op, "x", x, 4) ||
        !segc_check_ndim(ctx, op, "w", w, 4))
        return false;
    if (w->nhwc) {
        segc_set_error(ctx, "%s: w must be in PyTorch's layout, found a channels-last tensor", op);
        return false;
    }
    if (w->dtype != x->dtype) {
        segc_set_error(ctx, "%s: w must have x's dtype %s, found %s", op, segc_dtype_name(x->dtype),
                       segc_dtype_name(w->dtype));
        return false;
    }
    if (b && (b->ndim != 1 || (b->dtype != SEGC_F32 && b->dtype != x->dtype))) {
        segc_set_error(ctx, "%s: b must be 1-D f32%s, found %s %s", op, x->dtype == SEGC_BF16 ? " or bf16" : "",
                       segc_dtype_name(b->dtype), segc_shape_str(b, bb, sizeof bb));
        return false;
    }
    for (int i = 0; i < 2; i++) {
        if (p->stride[i] < 1 || p->dilation[i] < 1 || p->pad[i] < 0 || p->output_padding[i] < 0) {
            segc_set_error(ctx, "%s: expected stride >= 1, dilation >= 1, pad >= 0, output_padding >= 0, found "
                           "stride [%d, %d] dilation [%d, %d] pad [%d, %d] output_padding [%d, %d]", op,
                           p->stride[0], p->stride[1], p->dilation[0], p->dilation[1], p->pad[0], p->pad[1],
                           p->output_padding[0], p->output_padding[1]);
            return false;
        }
        if (!transposed && p->output_padding[i] != 0) {
            segc_set_error(ctx, "%s: output_padding applies to transposed convolution only, found [%d, %d]", op,
                           p->output_padding[0], p->output_padding[1]);
            return false;
        }
        if (transposed && p->output_padding[i] >= p->stride[i] && p->output_padding[i] >= p->dilation[i]) {
            segc_set_error(ctx, "%s: output_padding must be smaller than stride or dilation, found output_padding "
                           "[%d, %d] stride [%d, %d] dilation [%d, %d]", op, p->output_padding[0],
                           p->output_padding[1], p->stride[0], p->stride[1], p->dilation[0], p->dilation[1]);
            return false;
        }
    }
    if ((unsigned)p->act > SEGC_ACT_LEAKY_RELU ||
        (p->act == SEGC_ACT_LEAKY_RELU && !(p->act_alpha >= 0 && isfinite(p->act_alpha)))) {
        segc_set_error(ctx, "%s: act must be NONE, RELU or LEAKY_RELU with finite act_alpha >= 0, found act %d "
                       "alpha %g", op, (int)p->act, (double)p->act_alpha);
        return false;
    }
    int64_t g = p->groups;
    for (int i = 0; i < 4; i++)
        if (x->shape[i] < 1 || w->shape[i] < 1) {
            segc_set_error(ctx, "%s: x and w need sizes >= 1, found x %s w %s", op, segc_shape_str(x, bx, sizeof bx),
                           segc_shape_str(w, bw, sizeof bw));
            return false;
        }
    int64_t c = x->shape[1];
    if (g < 1 || c % g != 0 || (!transposed && w->shape[0] % g != 0)) {
        segc_set_error(ctx, "%s: groups must be >= 1 and divide the input channels%s, found groups %lld for x %s w %s",
                       op, transposed ? "" : " and the output channels", (long long)g,
                       segc_shape_str(x, bx, sizeof bx), segc_shape_str(w, bw, sizeof bw));
        return false;
    }
    if ((!transposed && w->shape[1] != c / g) || (transposed && w->shape[0] != c)) {
        segc_set_error(ctx, "%s: channel mismatch: w must be %s for x %s with groups %lld, found w %s", op,
                       transposed ? "[C, Cout/groups, kh, kw]" : "[O, C/groups, kh, kw]",
                       segc_shape_str(x, bx, sizeof bx), (long long)g, segc_shape_str(w, bw, sizeof bw));
        return false;
    }
    memset(k, 0, sizeof *k);
    memcpy(k->tag, "segcconv", sizeof k->tag);
    k->transposed = transposed;
    k->nthr = omp_get_max_threads();
    k->dtype = x->dtype;
    k->bias_dtype = b ? (int32_t)b->dtype : -1;
    k->act = p->act;
    k->alpha = p->act == SEGC_ACT_LEAKY_RELU ? p->act_alpha : 0.0f;
    k->n = x->shape[0];
    k->ic = c;
    k->ih = x->shape[2];
    k->iw = x->shape[3];
    k->oc = transposed ? w->shape[1] * g : w->shape[0];
    k->kh = w->shape[2];
    k->kw = w->shape[3];
    k->groups = g;
    int64_t in[2] = {k->ih, k->iw}, ks[2] = {k->kh, k->kw}, out[2];
    for (int i = 0; i < 2; i++) {
        int64_t span = (int64_t)p->dilation[i] * (ks[i] - 1) + 1;   /* effective kernel extent */
        k->stride[i] = p->stride[i];
        k->dil[i] = p->dilation[i];
        k->pad_l[i] = p->pad[i];
        if (!transposed) {
            if (span > in[i] + 2 * (int64_t)p->pad[i]) {
                segc_set_error(ctx, "%s: kernel larger than padded input: dilated kernel %lldx%lld, x %s with pad "
                               "[%d, %d]", op, (long long)((int64_t)p->dilation[0] * (k->kh - 1) + 1),
                               (long long)((int64_t)p->dilation[1] * (k->kw - 1) + 1),
                               segc_shape_str(x, bx, sizeof bx), p->pad[0], p->pad[1]);
                return false;
            }
            out[i] = (in[i] + 2 * (int64_t)p->pad[i] - span) / p->stride[i] + 1;
            /* oneDNN's right padding: whatever the last window actually uses */
            k->pad_r[i] = (out[i] - 1) * p->stride[i] + span - in[i] - p->pad[i];
        } else {
            out[i] = (in[i] - 1) * p->stride[i] - 2 * (int64_t)p->pad[i] + span + p->output_padding[i];
            k->pad_r[i] = p->pad[i] - p->output_padding[i];
            if (out[i] < 1) {
                segc_set_error(ctx, "%s: output would be empty: x %s w %s stride [%d, %d] pad [%d, %d]", op,
                               segc_shape_str(x, bx, sizeof bx), segc_shape_str(w, bw, sizeof bw), p->stride[0],
                               p->stride[1], p->pad[0], p->pad[1]);
                return false;
            }
        }
    }
    k->oh = out[0];
    k->ow = out[1];
    k->nhwc = x->nhwc;
    /* oneDNN's Winograd kernels take blocked layouts only: a channels-last 3x3 conv that takes one
     * reorders its input and output (ResNet-50 at 224, batch 8: 0.733 s a step with Winograd against
     * 0.766 s without; train.conv_algo=direct keeps every conv on NHWC) */
    k->wino = segc_conv_get_algo() != SEGC_CONV_ALGO_DIRECT && !transposed && g == 1 && k->kh == 3 && k->kw == 3 &&
              k->stride[0] == 1 && k->stride[1] == 1 && k->dil[0] == 1 && k->dil[1] == 1 && x->dtype == SEGC_F32;
    if (b && b->shape[0] != k->oc) {
        segc_set_error(ctx, "%s: b must be [%lld] (output channels), found %s", op, (long long)k->oc,
                       segc_shape_str(b, bb, sizeof bb));
        return false;
    }
    return true;
}

/* ---- backward ---- */

const float *segc_conv_act_backward(segc_ctx *ctx, const conv_key *k, const segc_tensor *y, const float *g) {
    if (k->act == SEGC_ACT_NONE) return g;
    int64_t n = segc_numel(y);
    float *r = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof(float));
    float slope = k->act == SEGC_ACT_RELU ? 0.0f : k->alpha;
    if (y->dtype == SEGC_F32) {
        const float *yv = segc_f32(y);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) r[i] = yv[i] > 0 ? g[i] : g[i] * slope;
    } else {
        const uint16_t *yv = segc_bf16p(y);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) r[i] = segc_bf16_to_f32(yv[i]) > 0 ? g[i] : g[i] * slope;
    }
    return r;
}

void segc_conv_bias_grad(const float *g, float *db, int64_t n, int64_t oc, int64_t hw, bool nhwc) {
    if (nhwc) {   /* channels-last: channel o every oc values */
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < oc; o++) {
            double acc = 0;
            for (int64_t r = 0; r < n * hw; r++) acc += g[r * oc + o];
            db[o] += (float)acc;
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < oc; o++) {
        double acc = 0;
        for (int64_t i = 0; i < n; i++) acc += segc_conv_sum(g + (i * oc + o) * hw, hw);
        db[o] += (float)acc;
    }
}

/* Gradient buffers are taken first; everything after the mark (layout copies of g and of the
 * results, the activation-masked g, scratchpads) is dropped when backward returns. */
static void conv_backward_temps(segc_ctx *ctx, segc_node *nd, float *gx, bool fresh_x, float *gwt, bool fresh_w,
                                float *gb, bool bfresh);

static void conv_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    bool fresh_x = false, fresh_w = false, bfresh = false;
    float *gx = x->requires_grad ? grad_buffer(ctx, x, &fresh_x) : NULL;
    float *gwt = w->requires_grad ? grad_buffer(ctx, w, &fresh_w) : NULL;
    float *gb = NULL;
    if (b && b->requires_grad) gb = gwt ? grad_buffer(ctx, b, &bfresh) : segc_grad(ctx, b);
    segc_flops_add(segc_conv_flops(&((conv_saved *)nd->saved)->k) * ((gx != NULL) + (gwt != NULL)));
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    conv_backward_temps(ctx, nd, gx, fresh_x, gwt, fresh_w, gb, bfresh);
    segc_arena_rewind(&ctx->arena, mark);
}

static void conv_backward_temps(segc_ctx *ctx, segc_node *nd, float *gx, bool fresh_x, float *gwt, bool fresh_w,
                                float *gb, bool bfresh) {
    conv_saved *s = nd->saved;
    const conv_key *k = &s->k;
    const char *op = s->op;
    segc_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    const float *g = segc_conv_act_backward(ctx, k, nd->out, nd->out->grad);
    segc_dnnl_prim *fwd = get_prim(ctx, op, *k, K_FWD);
    if (!fwd) return;
    dnnl_memory_desc_t g_plain = dst_md(k, dnnl_f32, false);
    dnnl_data_type_t sdt = segc_dnnl_dt((segc_dtype)k->dtype);
    void *gd = NULL;   /* g in the backward-data layout, shared with backward-weights when they agree */
    const dnnl_memory_desc_t *gd_md = NULL;

    if (gx) {
        segc_dnnl_prim *bd = get_prim(ctx, op, *k, K_BWD_DATA);
        if (!bd) return;
        gd_md = pd_md(bd, dnnl_query_diff_dst_md, 0);
        const dnnl_memory_desc_t *wmd = pd_md(bd, dnnl_query_weights_md, 0), *dxmd = pd_md(bd, dnnl_query_diff_src_md, 0);
        gd = in_layout(ctx, op, k, R_G_BWD_DATA, &g_plain, gd_md, g);
        dnnl_memory_desc_t w_plain = wei_md(k, sdt, false), x_plain = src_md(k, dnnl_f32, false);
        void *wb = dnnl_memory_desc_equal(wmd, pd_md(fwd, dnnl_query_weights_md, 0))
                       ? s->wb : in_layout(ctx, op, k, R_W_BWD_DATA, &w_plain, wmd, w->data);
        if (!gd || !wb) return;
        bool direct = fresh_x && dnnl_memory_desc_equal(dxmd, &x_plain);
        void *dx = direct ? (void *)gx : segc_arena_alloc(&ctx->arena, dnnl_memory_desc_get_size(dxmd));
        if (!segc_dnnl_run(ctx, op, bd, 3, (const int[]){DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC},
                           (void *const[]){gd, wb, dx}))
            return;
        if (!direct && !reorder(ctx, op, *k, R_DX, !fresh_x, dxmd, &x_plain, dx, gx)) return;
    }

    if (gwt) {
        segc_dnnl_prim *bw = get_prim(ctx, op, *k, K_BWD_WEIGHTS);
        if (!bw) return;
        const dnnl_memory_desc_t *xmd = pd_md(bw, dnnl_query_src_md, 0), *gmd = pd_md(bw, dnnl_query_diff_dst_md, 0);
        const dnnl_memory_desc_t *dwmd = pd_md(bw, dnnl_query_diff_weights_md, 0);
        dnnl_memory_desc_t x_plain = src_md(k, sdt, false), w_plain = wei_md(k, dnnl_f32, false);
        void *xb = s->xb && dnnl_memory_desc_equal(xmd, pd_md(fwd, dnnl_query_src_md, 0))
                       ? s->xb : in_layout(ctx, op, k, R_X_BWD_WEIGHTS, &x_plain, xmd, x->data);
        void *gw = gd && dnnl_memory_desc_equal(gmd, gd_md) ? gd : in_layout(ctx, op, k, R_G_BWD_WEIGHTS, &g_plain, gmd, g);
        if (!xb || !gw) return;
        bool direct = fresh_w && dnnl_memory_desc_equal(dwmd, &w_plain);
        void *dw = direct ? (void *)gwt : segc_arena_alloc(&ctx->arena, dnnl_memory_desc_get_size(dwmd));
        float *db = NULL;
        if (b) db = bfresh ? gb : segc_arena_alloc(&ctx->arena, (size_t)k->oc * sizeof(float));
        int ids[4] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS};
        void *ptrs[4] = {xb, gw, dw, db};
        if (!segc_dnnl_run(ctx, op, bw, b ? 4 : 3, ids, ptrs)) return;
        if (!direct && !reorder(ctx, op, *k, R_DW, !fresh_w, dwmd, &w_plain, dw, gwt)) return;
        if (gb && !bfresh)
            for (int64_t o = 0; o < k->oc; o++) gb[o] += db[o];
    } else if (gb) {
        segc_conv_bias_grad(g, gb, k->n, k->oc, k->oh * k->ow, k->nhwc);
    }
}

/* ---- forward ---- */

/* inputs whose oneDNN-layout copy is at most this large keep it for backward */
#define CONV_KEEP_INPUT_BYTES (2u << 20)

static segc_tensor *conv_forward(segc_ctx *ctx, const char *op, bool transposed, segc_tensor *x, segc_tensor *w,
                                 segc_tensor *b, const segc_conv_params *pp) {
    SEGC_PROF_OP(ctx, op);
    if (!x || !w) return NULL;
    segc_conv_params dflt = segc_conv_params_default();
    const segc_conv_params *p = pp ? pp : &dflt;
    conv_key k;
    if (!fill_key(ctx, op, transposed, x, w, b, p, &k)) return NULL;
    segc_flops_add(segc_conv_flops(&k));
    segc_tensor *ins[3] = {x, w, b};
    int n_in = b ? 3 : 2;
    bool grad = segc_needs_grad(ctx, ins, n_in);
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, 4, (int64_t[]){k.n, k.oc, k.oh, k.ow});
    if (!y) return NULL;
    y->nhwc = k.nhwc;

    if (segc_conv_1x1_supported(&k)) {
        /* a GEMM on the tensors as they are: no layout reorders (conv_1x1.c) */
        if (!segc_conv_1x1_forward(ctx, &k, x, w, b, y, grad)) return NULL;
        return y;
    }
    if (!transposed && !k.nhwc && segc_conv_dw_supported(&k)) {
        /* depthwise: a direct NCHW kernel beats oneDNN plus its reorders */
        segc_conv_dw_forward(ctx, &k, x, w, b, y);
        if (grad) {
            conv_saved *s = segc_arena_alloc(&ctx->arena, sizeof *s);
            *s = (conv_saved){.k = k, .op = op};
            segc_record(ctx, op, segc_conv_dw_backward, y, ins, n_in, s);
        }
        return y;
    }

    segc_dnnl_prim *fwd = get_prim(ctx, op, k, K_FWD);
    if (!fwd) return NULL;
    dnnl_data_type_t sdt = segc_dnnl_dt(x->dtype);
    dnnl_memory_desc_t x_plain = src_md(&k, sdt, false), w_plain = wei_md(&k, sdt, false), y_plain = dst_md(&k, sdt, false);
    const dnnl_memory_desc_t *xmd = pd_md(fwd, dnnl_query_src_md, 0), *wmd = pd_md(fwd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *ymd = pd_md(fwd, dnnl_query_dst_md, 0);
    conv_saved *s = grad ? segc_arena_alloc(&ctx->arena, sizeof *s) : NULL;
    /* w in oneDNN's layout stays for backward only where backward-data takes that same layout
     * (f32 usually wants another blocking, and reorders from w itself): a kept copy of every
     * weight would hold as much memory as the model's parameters for nothing */
    bool keep_wb = false;
    if (grad && x->requires_grad) {
        segc_dnnl_prim *bd = get_prim(ctx, op, k, K_BWD_DATA);
        if (!bd) return NULL;
        keep_wb = dnnl_memory_desc_equal(pd_md(bd, dnnl_query_weights_md, 0), wmd);
    }
    void *wb = keep_wb ? in_layout(ctx, op, &k, R_W_FWD, &w_plain, wmd, w->data) : NULL;
    /* x in oneDNN's layout is a copy as large as x. A large one is dropped after
     * the call and made again by backward-weights, so the conv keeps no second
     * copy of a big activation for the whole step (one reorder more, far cheaper
     * than the GEMM); a small one stays (its reorder costs more than it holds). */
    bool keep_xb = grad && dnnl_memory_desc_get_size(xmd) <= CONV_KEEP_INPUT_BYTES;
    void *xb = keep_xb ? in_layout(ctx, op, &k, R_X_FWD, &x_plain, xmd, x->data) : NULL;
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);   /* temporaries from here */
    if (!keep_wb) wb = in_layout(ctx, op, &k, R_W_FWD, &w_plain, wmd, w->data);
    if (!keep_xb) xb = in_layout(ctx, op, &k, R_X_FWD, &x_plain, xmd, x->data);
    if (!wb) return NULL;
    if (!xb) return NULL;
    bool direct = dnnl_memory_desc_equal(ymd, &y_plain);
    void *yb = direct ? y->data : segc_arena_alloc(&ctx->arena, dnnl_memory_desc_get_size(ymd));
    void *bias = NULL;
    if (b) {
        /* f32 compute takes an f32 bias even when b is bf16 */
        bias = pd_md(fwd, dnnl_query_weights_md, 1)->data_type == segc_dnnl_dt(b->dtype) ? b->data : segc_as_f32(ctx, b);
    }
    int ids[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
    void *ptrs[4] = {xb, wb, yb, bias};
    bool ok = segc_dnnl_run(ctx, op, fwd, b ? 4 : 3, ids, ptrs) &&
              (direct || out_layout(ctx, op, &k, R_Y_FWD, ymd, &y_plain, yb, y->data));
    segc_arena_rewind(&ctx->arena, mark);   /* the blocked input, output and weights, an f32 bias copy */
    if (!ok) return NULL;
    if (grad) {
        /* x->data itself is not kept: backward reads it from the input then (segc_release_recompute
         * may have moved it) */
        *s = (conv_saved){.k = k, .op = op, .xb = keep_xb && xb != x->data ? xb : NULL, .wb = keep_wb ? wb : NULL};
        segc_record(ctx, op, conv_backward, y, ins, n_in, s);
    }
    return y;
}

segc_tensor *segc_conv2d(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *b, const segc_conv_params *p) {
    return conv_forward(ctx, "conv2d", false, x, w, b, p);
}

segc_tensor *segc_conv_transpose2d(segc_ctx *ctx, segc_tensor *x, segc_tensor *w, segc_tensor *b,
                                   const segc_conv_params *p) {
    return conv_forward(ctx, "conv_transpose2d", true, x, w, b, p);
}
