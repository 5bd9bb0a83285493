/* Multi-head scaled dot-product attention on the [B, N, heads*D] layout.
 *
 * The work is split into items of (batch entry, head, query chunk), the chunk
 * sized so its scores stay in L2 next to the GEMM operands. One OpenMP region
 * runs all items; each thread works through its share with single-threaded
 * GEMMs (segc_gemm_plan), so there is no fork/join per chunk:
 *   S = Q K^T           (GEMM)
 *   P = softmax(scale S) (in place, f32; the scale is applied in the row pass:
 *                        oneDNN 2.6's bf16 GEMM with an output scale runs a
 *                        slow scalar loop, 7-13x the GEMM itself)
 *   O = P V             (GEMM, written straight into its head's columns)
 * Heads are strided views of q/k/v/out, so no permute copies exist. An f32 P
 * is not kept: backward recomputes each item's S and P with the same GEMM and
 * softmax code, so P is bitwise the forward's (as flash attention does;
 * keeping P cost B*H*Nq*Nk floats per layer, 50 MB for ViT-S at 512x512 batch
 * 2, and its write and read from DRAM took longer than the extra GEMM in
 * cache: Segmenter ViT-S trains 4 % faster at 0.68x the peak memory). A bf16 P
 * is kept: there the GEMMs run on AMX and the recomputation costs more than
 * it saves (SegFormer-B0 bf16 2 %, Segmenter ViT-S bf16 3 % slower).
 * Backward per item: dV += P^T dO, dP = dO V^T, dS = scale P (dP - rowsum(P dP)),
 * dQ = dS K, dK += dS^T Q; dK/dV sum over items into per-thread
 * buffers that are added in thread order at the end (deterministic for a
 * thread count).
 *
 * bf16: GEMM operands are bf16 with f32 accumulation (native where the CPU
 * has it, widened to f32 otherwise); softmax runs in f32 and its result, the
 * upstream gradient and dS are rounded to bf16 before they feed a GEMM, so
 * both paths give the same numbers. On AVX512-BF16 CPUs the rows of P and dS
 * of native bf16 GEMMs come from softmax_avx512bf16.c (the same to rounding). */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "segc/cpu.h"
#include "segc/ops.h"
#include "segc/profile.h"
#include "matmul_internal.h"
#include "softmax_kernels.h"

/* Compiled twice: as itself for the baseline, and by attention_avx512.c with AVX-512 enabled
 * (512-bit vectorisation of the softmax and dS rows, ~15 % of the op in AVX2). segc_attention
 * picks the variant from segc_cpu_isa(); the backward it records is its own variant's. Both
 * are deterministic; they agree to float rounding, not bitwise. */
#ifdef SEGC_ISA_VARIANT_AVX512
#define segc_attention segc_attention_avx512
#endif
segc_tensor *segc_attention_avx512(segc_ctx *ctx, segc_tensor *q, segc_tensor *k, segc_tensor *v, int heads,
                                   float scale);

/* exp(x) for x <= ~0 (softmax arguments after the max is subtracted):
 * Cody-Waite reduction to r in [-ln2/2, ln2/2] and a degree-6 Taylor
 * polynomial (< 2 ulp), written so the loops calling it vectorise. */
static inline float exp_le0(float x) {
    union { float f; uint32_t u; int32_t i; } xv, t, scale;
    /* clamp at -87 in the unsigned bit order (larger = more negative for
     * negative floats): an integer min vectorises where a float clamp does not */
    xv.f = x;
    xv.u = xv.u < 0xC2AE0000u ? xv.u : 0xC2AE0000u;
    x = xv.f;
    t.f = x * 1.44269504088896341f + 12582912.0f; /* round-to-nearest via 1.5*2^23 */
    float n = t.f - 12582912.0f;
    scale.u = (uint32_t)(t.i - 0x4B400000 + 127) << 23;   /* unsigned: no signed-shift overflow */
    float r = fmaf(n, -0.693145751953125f, x);
    r = fmaf(n, -1.428606765330187e-06f, r);
    float p = 1.0f / 720.0f;
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    return p * scale.f;
}

static inline float round_bf16(float x) { return segc_bf16_to_f32(segc_f32_to_bf16(x)); }

/* softmax of one row of scores c * s in place; with to_bf16 the probabilities
 * are also rounded to bf16 (and stored there as bf16 when pb is not NULL) */
static void softmax_row(float *s, int64_t n, float c, bool to_bf16, uint16_t *pb) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; j++) m = s[j] * c > m ? s[j] * c : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        float e = exp_le0(s[j] * c - m);
        s[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    if (pb) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) pb[j] = segc_f32_to_bf16(s[j] * inv);
    } else if (to_bf16) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) s[j] = round_bf16(s[j] * inv);
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) s[j] *= inv;
    }
}

typedef struct {
    int64_t B, Nq, Nk, H, D, Dv, qc, ld;   /* qc: query rows per work item; ld: row stride of S, P, dP, dS */
    float scale;
    bool bf16, native;      /* bf16 inputs; native bf16 GEMMs */
    const void *q, *k, *v;  /* GEMM operands: the inputs, or f32 widenings of bf16 inputs */
    segc_dtype gdt;         /* dtype of those operands and of P */
    uint16_t *p;            /* kept bf16 probabilities [B, H, Nq, ld], or NULL: recomputed */
} attn_saved;

static size_t esz(segc_dtype dt) { return segc_dtype_size(dt); }
static const void *offp(const void *p, segc_dtype dt, int64_t elems) { return (const char *)p + elems * (int64_t)esz(dt); }

/* f32 scores per item: 256 KiB; in the AVX-512 build (CPUs with 1-2 MiB of L2 per core) up to
 * 1 MiB while that stays within 256 query rows: on Sapphire Rapids 2-3 % faster for ViT-S/B at
 * 512x512 (1025 keys), while more rows slowed SegFormer's 256-key backward by 20 %. The
 * baseline build keeps 256 KiB (Zen3: 512 KiB of L2). */
static int64_t scores_rows(int64_t Nk) {
    int64_t rows = ((int64_t)1 << 16) / Nk;
#ifdef SEGC_ISA_VARIANT_AVX512
    int64_t big = ((int64_t)1 << 18) / Nk;
    if (rows < 256) rows = big < 256 ? big : 256;
#endif
    return rows;
}

/* query rows per item: scores_rows, and at least 4 items per thread where the shape allows */
static int64_t chunk_rows(int64_t BH, int64_t Nq, int64_t Nk, int nthr) {
    int64_t rows = scores_rows(Nk);
    if (rows < 16) rows = 16;
    int64_t per_bh = (4 * nthr + BH - 1) / BH, cap = (Nq + per_bh - 1) / per_bh;
    if (rows > cap) rows = cap;
    if (rows < 1) rows = 1;
    return rows < Nq ? rows : Nq;
}

/* plans for one GEMM of an item: full chunks and the last, shorter one; the
 * chunk length is M (q_is_k false) or K (true) */
typedef struct {
    segc_gemm_plan *full, *tail;
    int64_t qc;
} plan2;

static bool plan2_new(segc_ctx *ctx, plan2 *p, segc_gemm g, bool q_is_k, int64_t qc, int64_t tail, int nthr) {
    p->qc = qc;
    *(q_is_k ? &g.K : &g.M) = qc;
    p->full = segc_gemm_plan_new(ctx, "attention", &g, nthr);
    p->tail = NULL;
    if (tail) {
        *(q_is_k ? &g.K : &g.M) = tail;
        p->tail = segc_gemm_plan_new(ctx, "attention", &g, nthr);
    }
    return p->full && (!tail || p->tail);
}

static bool plan2_run(const plan2 *p, int64_t rows, int t, const void *a, const void *b, void *c) {
    return segc_gemm_plan_run(rows == p->qc ? p->full : p->tail, t, a, b, c);
}

static segc_gemm gshape(int64_t M, int64_t N, int64_t K, segc_dtype adt, int64_t a_rs, int64_t a_cs, segc_dtype bdt,
                        int64_t b_rs, int64_t b_cs, segc_dtype cdt, int64_t c_rs, float alpha, bool acc) {
    return (segc_gemm){.batch = 1, .M = M, .N = N, .K = K, .a_dtype = adt, .a_rs = a_rs, .a_cs = a_cs,
                       .b_dtype = bdt, .b_rs = b_rs, .b_cs = b_cs, .c_dtype = cdt, .c_rs = c_rs,
                       .alpha = alpha, .accumulate = acc};
}

/* the plans of S = Q K^T for the item chunks (the scale is applied in the softmax rows) */
static bool scores_plan(segc_ctx *ctx, plan2 *ps, const attn_saved *s, int nthr) {
    int64_t C = s->H * s->D;
    return plan2_new(ctx, ps, gshape(0, s->Nk, s->D, s->gdt, C, 1, s->gdt, 1, C, SEGC_F32, s->ld, 1.0f, false),
                     false, s->qc, s->Nq % s->qc, nthr);
}

/* P of one item (batch entry b, head h, query rows q0..q0+rows): S into sch (f32), softmax
 * in place; P is sch, or pch when P is bf16. Forward and backward both compute P here, so
 * backward's P is bitwise the forward's. */
static bool probs_chunk(const attn_saved *s, const plan2 *ps, int t, int64_t b, int64_t h, int64_t q0,
                        int64_t rows, float *sch, uint16_t *pch, bool k512) {
    int64_t C = s->H * s->D, Nk = s->Nk, ld = s->ld;
    bool ok = plan2_run(ps, rows, t, offp(s->q, s->gdt, (b * s->Nq + q0) * C + h * s->D),
                        offp(s->k, s->gdt, b * Nk * C + h * s->D), sch);
    for (int64_t r = 0; r < rows; r++) {
        if (k512) segc_attn_softmax_row_avx512bf16(sch + r * ld, Nk, s->scale, pch + r * ld);
        else softmax_row(sch + r * ld, Nk, s->scale, s->bf16, pch ? pch + r * ld : NULL);
    }
    return ok;
}

static void attention_backward(segc_ctx *ctx, segc_node *nd) {
    const attn_saved *s = nd->saved;
    segc_tensor *tq = nd->in[0], *tk = nd->in[1], *tv = nd->in[2];
    int64_t B = s->B, Nq = s->Nq, Nk = s->Nk, H = s->H, D = s->D, Dv = s->Dv, C = H * D, Cv = H * Dv, qc = s->qc, ld = s->ld;
    segc_dtype gdt = s->gdt, pdt = s->gdt, dsdt = s->native ? SEGC_BF16 : SEGC_F32;
    /* each item writes its own rows of dQ once: a fresh buffer is written, not zeroed and added to */
    bool fresh_q = false;
    float *gq = tq->requires_grad ? segc_ew_grad_dst(ctx, tq, &fresh_q) : NULL;
    float *gk = tk->requires_grad ? segc_grad(ctx, tk) : NULL;
    float *gv = tv->requires_grad ? segc_grad(ctx, tv) : NULL;
    /* everything below is scratch of this node: rewound at the end (the per-thread dK/dV sums
     * alone are 2 * threads * B*Nk*C floats, 13 MB per ViT-B layer, kept to the step's end before) */
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    /* dO as the GEMMs take it: a bf16 gradient (ctx->bf16_grads) as it is, an f32 one rounded */
    segc_dtype godt = SEGC_F32;
    const void *go = segc_mm_dy(ctx, nd->out, s->bf16, B * Nq * Cv, &godt);
    bool need_ds = gq || gk;
    /* dV = P^T dO, dP = dO V^T (for dS), dQ = dS K, dK = dS^T Q */
    segc_flops_add(2 * B * H * Nq * Nk * (Dv * ((gv != NULL) + need_ds) + D * ((gq != NULL) + (gk != NULL))));
    int nthr = omp_get_max_threads();
    int64_t nch = (Nq + qc - 1) / qc, tail = Nq % qc, items = B * H * nch;
    /* per-thread dK/dV sums (a single thread accumulates in place) */
    float *gkp = gk && nthr > 1 ? segc_arena_calloc(&ctx->arena, (size_t)(nthr * B * Nk * C) * sizeof(float)) : gk;
    float *gvp = gv && nthr > 1 ? segc_arena_calloc(&ctx->arena, (size_t)(nthr * B * Nk * Cv) * sizeof(float)) : gv;
    int64_t kstride = nthr > 1 ? B * Nk * C : 0, vstride = nthr > 1 ? B * Nk * Cv : 0;
    float *dpb = need_ds ? segc_arena_alloc(&ctx->arena, (size_t)(nthr * qc * ld) * sizeof(float)) : NULL;
    uint16_t *dsb = need_ds && s->native ? segc_arena_alloc(&ctx->arena, (size_t)(nthr * qc * ld) * 2) : NULL;
    /* per-thread scores and (bf16) probabilities of the recomputed P */
    float *sbuf = s->p ? NULL : segc_arena_alloc(&ctx->arena, (size_t)(nthr * qc * ld) * sizeof(float));
    uint16_t *pbuf = !s->p && pdt == SEGC_BF16 ? segc_arena_alloc(&ctx->arena, (size_t)(nthr * qc * ld) * 2) : NULL;
    if (!s->p) segc_flops_add(2 * B * H * Nq * Nk * D);   /* the recomputed S */
    plan2 ps, pdv, pdp, pdq, pdk;
    bool ok = s->p || scores_plan(ctx, &ps, s, nthr);
    if (gv) ok &= plan2_new(ctx, &pdv, gshape(Nk, Dv, 0, pdt, 1, ld, godt, Cv, 1, SEGC_F32, Cv, 1.0f, true), true, qc, tail, nthr);
    if (need_ds) ok &= plan2_new(ctx, &pdp, gshape(0, Nk, Dv, godt, Cv, 1, gdt, 1, Cv, SEGC_F32, ld, 1.0f, false), false, qc, tail, nthr);
    if (gq) ok &= plan2_new(ctx, &pdq, gshape(0, D, Nk, dsdt, ld, 1, gdt, C, 1, SEGC_F32, C, 1.0f, !fresh_q), false, qc, tail, nthr);
    if (gk) ok &= plan2_new(ctx, &pdk, gshape(Nk, D, 0, dsdt, 1, ld, gdt, C, 1, SEGC_F32, C, 1.0f, true), true, qc, tail, nthr);
    if (!ok) {
        segc_arena_rewind(&ctx->arena, mark);
        return;
    }
    const float sc = s->scale;
    bool fail = false, bf16 = s->bf16, k512 = pdt == SEGC_BF16 && segc_cpu_isa() >= SEGC_ISA_AVX512_BF16;
#pragma omp parallel num_threads(nthr) reduction(|| : fail)
    {
        int t = omp_get_thread_num();
        float *dp = dpb ? dpb + t * qc * ld : NULL;
        uint16_t *dso = dsb ? dsb + t * qc * ld : NULL, *pbt = pbuf ? pbuf + t * qc * ld : NULL;
        float *sbt = sbuf ? sbuf + t * qc * ld : NULL;
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            int64_t b = it / (H * nch), h = (it / nch) % H, q0 = (it % nch) * qc;
            int64_t rows = Nq - q0 < qc ? Nq - q0 : qc;
            const void *pch = s->p ? (const void *)(s->p + ((b * H + h) * Nq + q0) * ld)
                              : pbt ? (const void *)pbt : (const void *)sbt;
            if (!s->p) fail |= !probs_chunk(s, &ps, t, b, h, q0, rows, sbt, pbt, k512);
            const void *goch = offp(go, godt, (b * Nq + q0) * Cv + h * Dv);
            if (gv) fail |= !plan2_run(&pdv, rows, t, pch, goch, gvp + t * vstride + b * Nk * Cv + h * Dv);
            if (!need_ds) continue;
            fail |= !plan2_run(&pdp, rows, t, goch, offp(s->v, gdt, b * Nk * Cv + h * Dv), dp);
            for (int64_t r = 0; r < rows; r++) {
                float *d = dp + r * ld, delta = 0.0f;
                if (k512) {
                    segc_attn_dsoftmax_row_avx512bf16((const uint16_t *)pch + r * ld, d, sc, dso + r * ld, Nk);
                } else if (pdt == SEGC_BF16) {
                    const uint16_t *p = (const uint16_t *)pch + r * ld;
                    uint16_t *o = dso + r * ld;
#pragma omp simd reduction(+ : delta)
                    for (int64_t j = 0; j < Nk; j++) delta += segc_bf16_to_f32(p[j]) * d[j];
#pragma omp simd
                    for (int64_t j = 0; j < Nk; j++) o[j] = segc_f32_to_bf16(segc_bf16_to_f32(p[j]) * (d[j] - delta) * sc);
                } else {
                    const float *p = (const float *)pch + r * ld;
#pragma omp simd reduction(+ : delta)
                    for (int64_t j = 0; j < Nk; j++) delta += p[j] * d[j];
                    if (bf16) {
#pragma omp simd
                        for (int64_t j = 0; j < Nk; j++) d[j] = round_bf16(p[j] * (d[j] - delta) * sc);
                    } else {
#pragma omp simd
                        for (int64_t j = 0; j < Nk; j++) d[j] = p[j] * (d[j] - delta) * sc;
                    }
                }
            }
            const void *ds = dso ? (const void *)dso : (const void *)dp;
            if (gq)
                fail |= !plan2_run(&pdq, rows, t, ds, offp(s->k, gdt, b * Nk * C + h * D), gq + (b * Nq + q0) * C + h * D);
            if (gk)
                fail |= !plan2_run(&pdk, rows, t, ds, offp(s->q, gdt, (b * Nq + q0) * C + h * D),
                                   gkp + t * kstride + b * Nk * C + h * D);
        }
    }
    if (fail) {
        segc_set_error(ctx, "attention: oneDNN execution failed in backward");
        segc_arena_rewind(&ctx->arena, mark);
        return;
    }
    /* add the per-thread sums in thread order */
    for (int g = 0; g < 2 && nthr > 1; g++) {
        float *dst = g ? gv : gk, *part = g ? gvp : gkp;
        int64_t n = B * Nk * (g ? Cv : C);
        if (!dst) continue;
#pragma omp parallel for schedule(static) if (n > 16384)
        for (int64_t i = 0; i < n; i++) {
            float acc = dst[i];
            for (int t = 0; t < nthr; t++) acc += part[t * n + i];
            dst[i] = acc;
        }
    }
    segc_arena_rewind(&ctx->arena, mark);
}

segc_tensor *segc_attention(segc_ctx *ctx, segc_tensor *q, segc_tensor *k, segc_tensor *v, int heads, float scale) {
#ifndef SEGC_ISA_VARIANT_AVX512
    if (segc_cpu_isa() >= SEGC_ISA_AVX512) return segc_attention_avx512(ctx, q, k, v, heads, scale);
#endif
    SEGC_PROF_OP(ctx, "attention");
    if (!q || !k || !v) return NULL;
    if (!segc_check_float(ctx, "attention", "q", q) || !segc_check_float(ctx, "attention", "k", k) ||
        !segc_check_float(ctx, "attention", "v", v))
        return NULL;
    char sq[96], sk[96], sv[96];
    segc_shape_str(q, sq, sizeof sq);
    segc_shape_str(k, sk, sizeof sk);
    segc_shape_str(v, sv, sizeof sv);
    if (k->dtype != q->dtype || v->dtype != q->dtype) {
        segc_set_error(ctx, "attention: q, k, v expected one dtype, found %s, %s, %s", segc_dtype_name(q->dtype),
                       segc_dtype_name(k->dtype), segc_dtype_name(v->dtype));
        return NULL;
    }
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] ||
        k->shape[2] != q->shape[2] || v->shape[1] != k->shape[1] || k->shape[1] < 1) {
        segc_set_error(ctx, "attention: expected q [B, Nq, H*D], k [B, Nk, H*D], v [B, Nk, H*Dv] with Nk >= 1; "
                       "found q %s, k %s, v %s", sq, sk, sv);
        return NULL;
    }
    if (heads < 1 || q->shape[2] < heads || q->shape[2] % heads != 0 || v->shape[2] % heads != 0 || !isfinite(scale)) {
        segc_set_error(ctx, "attention: heads %d expected to divide the q/k channels %lld (at least one per head) and "
                       "v channels %lld (scale %g expected finite); q %s, v %s", heads, (long long)q->shape[2],
                       (long long)v->shape[2], (double)scale, sq, sv);
        return NULL;
    }
    attn_saved s = {.B = q->shape[0], .Nq = q->shape[1], .Nk = k->shape[1], .H = heads,
                    .D = q->shape[2] / heads, .Dv = v->shape[2] / heads, .scale = scale,
                    .bf16 = q->dtype == SEGC_BF16};
    s.native = s.bf16 && segc_gemm_native_bf16();
    int nthr = omp_get_max_threads();
    s.qc = chunk_rows(s.B * s.H, s.Nq, s.Nk, nthr);
    s.ld = (s.Nk + 15) / 16 * 16;   /* aligned rows (Nk is 1025 with a class token) */
    int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, D = s.D, Dv = s.Dv, Cv = H * Dv, qc = s.qc, ld = s.ld;
    segc_tensor *y = segc_tensor_new(ctx, q->dtype, 3, (int64_t[]){B, Nq, Cv});
    if (!y) return NULL;
    if (B == 0 || Nq == 0 || Cv == 0) return y;
    /* GEMM operands: bf16 inputs are widened once here when there is no native bf16 GEMM */
    s.gdt = s.native || !s.bf16 ? q->dtype : SEGC_F32;
    s.q = q->data, s.k = k->data, s.v = v->data;
    if (s.bf16 && !s.native) {
        s.q = segc_as_f32(ctx, q);
        s.k = segc_as_f32(ctx, k);
        s.v = segc_as_f32(ctx, v);
    }
    segc_tensor *ins[3] = {q, k, v};
    bool save = segc_needs_grad(ctx, ins, 3);
    segc_dtype pdt = s.gdt, gdt = s.gdt;
    int64_t nch = (Nq + qc - 1) / qc, tail = Nq % qc, items = B * H * nch;
    if (save && pdt == SEGC_BF16) s.p = segc_arena_alloc(&ctx->arena, (size_t)(B * H * Nq * ld) * 2);
    /* scratch from here to the end of the forward: per-thread f32 scores, bf16 probabilities when
     * P is bf16 and not kept, f32 output rows, the GEMM plans */
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    float *sb = segc_arena_alloc(&ctx->arena, (size_t)(nthr * qc * ld) * sizeof(float));
    uint16_t *pb = pdt == SEGC_BF16 && !s.p ? segc_arena_alloc(&ctx->arena, (size_t)(nthr * qc * ld) * 2) : NULL;
    /* a bf16 output without native bf16 GEMMs goes through per-thread f32 rows */
    bool o_direct = y->dtype == SEGC_F32 || s.native;
    float *ob = o_direct ? NULL : segc_arena_alloc(&ctx->arena, (size_t)(nthr * qc * Dv) * sizeof(float));
    plan2 ps, po;
    if (!scores_plan(ctx, &ps, &s, nthr) ||
        !plan2_new(ctx, &po, gshape(0, Dv, Nk, pdt, ld, 1, gdt, Cv, 1, o_direct ? y->dtype : SEGC_F32, o_direct ? Cv : Dv,
                                    1.0f, false), false, qc, tail, nthr)) {
        segc_arena_rewind(&ctx->arena, mark);
        return NULL;
    }
    segc_flops_add(2 * B * H * Nq * Nk * (D + Dv));   /* S = Q K^T, O = P V */
    bool fail = false, k512 = pdt == SEGC_BF16 && segc_cpu_isa() >= SEGC_ISA_AVX512_BF16;
#pragma omp parallel num_threads(nthr) reduction(|| : fail)
    {
        int t = omp_get_thread_num();
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            int64_t b = it / (H * nch), h = (it / nch) % H, q0 = (it % nch) * qc;
            int64_t rows = Nq - q0 < qc ? Nq - q0 : qc;
            uint16_t *pbt = s.p ? s.p + ((b * H + h) * Nq + q0) * ld : pb ? pb + t * qc * ld : NULL;
            const void *pch = pbt ? (const void *)pbt : (const void *)(sb + t * qc * ld);
            fail |= !probs_chunk(&s, &ps, t, b, h, q0, rows, sb + t * qc * ld, pbt, k512);
            int64_t ooff = (b * Nq + q0) * Cv + h * Dv;
            void *och = o_direct ? (char *)y->data + ooff * (int64_t)esz(y->dtype) : (void *)(ob + t * qc * Dv);
            fail |= !plan2_run(&po, rows, t, pch, offp(s.v, gdt, b * Nk * Cv + h * Dv), och);
            if (!o_direct)
                for (int64_t r = 0; r < rows; r++)
                    segc_ew_store_bf16(ob + t * qc * Dv + r * Dv, segc_bf16p(y) + ooff + r * Cv, Dv);
        }
    }
    segc_arena_rewind(&ctx->arena, mark);
    if (fail) {
        segc_set_error(ctx, "attention: oneDNN execution failed in forward");
        return NULL;
    }
    if (save) {
        attn_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        *sv = s;
        segc_node_reads_bf16_grad(segc_record(ctx, "attention", attention_backward, y, ins, 3, sv));
    }
    return y;
}
