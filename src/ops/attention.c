/* Multi-head scaled dot-product attention on the [B, N, heads*D] layout.
 *
 * Work goes head by head in query chunks sized so one chunk's scores stay in
 * cache; each chunk covers every batch entry (one batched GEMM per step):
 *   S = scale * Q K^T   (GEMM, scale folded in as the output scale)
 *   P = softmax(S)      (in place, f32)
 *   O = P V             (GEMM, written straight into its head's columns)
 * Heads are strided views of q/k/v/out, so no permute copies exist. P is kept
 * for backward (cheaper than recomputing S and exp here: one write and one
 * read of P against a third GEMM plus the exponentials).
 *
 * bf16: GEMM operands are bf16 with f32 accumulation (native where the CPU
 * has it, widened to f32 otherwise); softmax runs in f32 and its result, the
 * upstream gradient and dS are rounded to bf16 before they feed a GEMM, so
 * both paths give the same numbers. */
#include <math.h>
#include <string.h>

#include "segc/ops.h"

/* exp(x) for x <= ~0 (softmax arguments after the max is subtracted):
 * Cody-Waite reduction to r in [-ln2/2, ln2/2] and a degree-6 Taylor
 * polynomial (< 2 ulp), written so the loops calling it vectorise. */
static inline float exp_le0(float x) {
    x = x < -87.0f ? -87.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f; /* round-to-nearest via 1.5*2^23 */
    float n = t - 12582912.0f;
    int32_t ti;
    memcpy(&ti, &t, sizeof ti);
    int32_t bits = (ti - 0x4B400000 + 127) << 23;
    float r = fmaf(n, -0.693145751953125f, x);
    r = fmaf(n, -1.428606765330187e-06f, r);
    float p = 1.0f / 720.0f;
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float round_bf16(float x) { return segc_bf16_to_f32(segc_f32_to_bf16(x)); }

/* softmax of one row in place; with to_bf16 the probabilities are also
 * rounded to bf16 (and stored there as bf16 when pb is not NULL) */
static void softmax_row(float *s, int64_t n, bool to_bf16, uint16_t *pb) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        float e = exp_le0(s[j] - m);
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
    int64_t B, Nq, Nk, H, D, Dv, qc;
    float scale;
    bool bf16, native;      /* bf16 inputs; native bf16 GEMMs */
    const void *q, *k, *v;  /* GEMM operands: the inputs, or f32 widenings of bf16 inputs */
    segc_dtype gdt;         /* dtype of those operands and of P */
    void *p;                /* saved probabilities [B, H, Nq, Nk] */
} attn_saved;

static size_t esz(segc_dtype dt) { return segc_dtype_size(dt); }
static const void *offp(const void *p, segc_dtype dt, int64_t elems) { return (const char *)p + elems * (int64_t)esz(dt); }

/* query rows per chunk: one chunk's f32 scores (all batch entries) ~ 1 MiB */
static int64_t chunk_rows(int64_t B, int64_t Nq, int64_t Nk) {
    int64_t rows = ((int64_t)1 << 18) / (B * Nk);
    if (rows < 64) rows = 64;
    return rows < Nq ? rows : Nq;
}

static bool gemm(segc_ctx *ctx, int64_t batch, int64_t M, int64_t N, int64_t K, const void *a, segc_dtype adt,
                 int64_t a_bs, int64_t a_rs, int64_t a_cs, const void *b, segc_dtype bdt, int64_t b_bs, int64_t b_rs,
                 int64_t b_cs, void *c, segc_dtype cdt, int64_t c_bs, int64_t c_rs, float alpha, bool acc) {
    segc_gemm g = {.batch = batch, .M = M, .N = N, .K = K,
                   .a = a, .a_dtype = adt, .a_bs = a_bs, .a_rs = a_rs, .a_cs = a_cs,
                   .b = b, .b_dtype = bdt, .b_bs = b_bs, .b_rs = b_rs, .b_cs = b_cs,
                   .c = c, .c_dtype = cdt, .c_bs = c_bs, .c_rs = c_rs, .alpha = alpha, .accumulate = acc};
    return segc_gemm_run(ctx, "attention", &g);
}

static void attention_backward(segc_ctx *ctx, segc_node *nd) {
    const attn_saved *s = nd->saved;
    segc_tensor *tq = nd->in[0], *tk = nd->in[1], *tv = nd->in[2];
    int64_t B = s->B, Nq = s->Nq, Nk = s->Nk, H = s->H, D = s->D, Dv = s->Dv, C = H * D, Cv = H * Dv;
    segc_dtype gdt = s->gdt, pdt = s->gdt;
    float *gq = tq->requires_grad ? segc_grad(ctx, tq) : NULL;
    float *gk = tk->requires_grad ? segc_grad(ctx, tk) : NULL;
    float *gv = tv->requires_grad ? segc_grad(ctx, tv) : NULL;
    const void *go = nd->out->grad;
    segc_dtype godt = SEGC_F32;
    if (s->bf16) go = segc_gemm_round_grad(ctx, nd->out->grad, B * Nq * Cv, &godt);
    bool need_ds = gq || gk;
    int64_t qc_max = s->qc;
    float *dp = need_ds ? segc_arena_alloc(&ctx->arena, (size_t)(B * qc_max * Nk) * sizeof *dp) : NULL;
    uint16_t *dsb = need_ds && s->native ? segc_arena_alloc(&ctx->arena, (size_t)(B * qc_max * Nk) * 2) : NULL;
    for (int64_t h = 0; h < H; h++)
        for (int64_t q0 = 0; q0 < Nq; q0 += qc_max) {
            int64_t qc = Nq - q0 < qc_max ? Nq - q0 : qc_max;
            const void *pch = offp(s->p, pdt, (h * Nq + q0) * Nk);   /* batch stride H*Nq*Nk */
            const void *goch = offp(go, godt, q0 * Cv + h * Dv);     /* batch stride Nq*Cv */
            if (gv) /* dV += P^T dO */
                gemm(ctx, B, Nk, Dv, qc, pch, pdt, H * Nq * Nk, 1, Nk, goch, godt, Nq * Cv, Cv, 1,
                     gv + h * Dv, SEGC_F32, Nk * Cv, Cv, 1.0f, true);
            if (!need_ds) continue;
            /* dP = dO V^T */
            gemm(ctx, B, qc, Nk, Dv, goch, godt, Nq * Cv, Cv, 1, offp(s->v, gdt, h * Dv), gdt, Nk * Cv, 1, Cv,
                 dp, SEGC_F32, qc * Nk, Nk, 1.0f, false);
            if (ctx->has_err) return;
            /* dS = P * (dP - rowsum(P * dP)) */
            int64_t rows = B * qc;
            bool bf16 = s->bf16;
#pragma omp parallel for schedule(static) if (rows * Nk > 32768)
            for (int64_t r = 0; r < rows; r++) {
                int64_t poff = (r / qc) * H * Nq * Nk + (r % qc) * Nk;
                float *d = dp + r * Nk;
                float delta = 0.0f;
                if (pdt == SEGC_BF16) {
                    const uint16_t *p = (const uint16_t *)pch + poff;
#pragma omp simd reduction(+ : delta)
                    for (int64_t j = 0; j < Nk; j++) delta += segc_bf16_to_f32(p[j]) * d[j];
                    uint16_t *o = dsb + r * Nk;
#pragma omp simd
                    for (int64_t j = 0; j < Nk; j++) o[j] = segc_f32_to_bf16(segc_bf16_to_f32(p[j]) * (d[j] - delta));
                } else {
                    const float *p = (const float *)pch + poff;
#pragma omp simd reduction(+ : delta)
                    for (int64_t j = 0; j < Nk; j++) delta += p[j] * d[j];
                    if (bf16) {
#pragma omp simd
                        for (int64_t j = 0; j < Nk; j++) d[j] = round_bf16(p[j] * (d[j] - delta));
                    } else {
#pragma omp simd
                        for (int64_t j = 0; j < Nk; j++) d[j] = p[j] * (d[j] - delta);
                    }
                }
            }
            const void *ds = dsb ? (const void *)dsb : (const void *)dp;
            segc_dtype dsdt = dsb ? SEGC_BF16 : SEGC_F32;
            if (gq) /* dQ = scale * dS K */
                gemm(ctx, B, qc, D, Nk, ds, dsdt, qc * Nk, Nk, 1, offp(s->k, gdt, h * D), gdt, Nk * C, C, 1,
                     gq + q0 * C + h * D, SEGC_F32, Nq * C, C, s->scale, true);
            if (gk) /* dK += scale * dS^T Q */
                gemm(ctx, B, Nk, D, qc, ds, dsdt, qc * Nk, 1, Nk, offp(s->q, gdt, q0 * C + h * D), gdt, Nq * C, C, 1,
                     gk + h * D, SEGC_F32, Nk * C, C, s->scale, true);
            if (ctx->has_err) return;
        }
}

segc_tensor *segc_attention(segc_ctx *ctx, segc_tensor *q, segc_tensor *k, segc_tensor *v, int heads, float scale) {
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
    if (heads < 1 || q->shape[2] % heads != 0 || v->shape[2] % heads != 0 || !isfinite(scale)) {
        segc_set_error(ctx, "attention: heads %d expected to divide the q/k channels %lld and v channels %lld "
                       "(scale %g expected finite); q %s, v %s", heads, (long long)q->shape[2],
                       (long long)v->shape[2], (double)scale, sq, sv);
        return NULL;
    }
    attn_saved s = {.B = q->shape[0], .Nq = q->shape[1], .Nk = k->shape[1], .H = heads,
                    .D = q->shape[2] / heads, .Dv = v->shape[2] / heads, .scale = scale,
                    .bf16 = q->dtype == SEGC_BF16};
    s.native = s.bf16 && segc_gemm_native_bf16();
    s.qc = chunk_rows(s.B, s.Nq, s.Nk);
    int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, D = s.D, Dv = s.Dv, C = H * D, Cv = H * Dv;
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
    segc_dtype pdt = s.gdt;
    int64_t qc_max = s.qc;
    /* scores land in f32: in the saved P when it is f32, else in a chunk buffer */
    float *sbuf = save && pdt == SEGC_F32 ? NULL : segc_arena_alloc(&ctx->arena, (size_t)(B * qc_max * Nk) * sizeof(float));
    void *pbuf = NULL;
    if (save) s.p = segc_arena_alloc(&ctx->arena, (size_t)(B * H * Nq * Nk) * esz(pdt));
    else if (pdt == SEGC_BF16) pbuf = segc_arena_alloc(&ctx->arena, (size_t)(B * qc_max * Nk) * 2);
    for (int64_t h = 0; h < H; h++)
        for (int64_t q0 = 0; q0 < Nq; q0 += qc_max) {
            int64_t qc = Nq - q0 < qc_max ? Nq - q0 : qc_max;
            /* where this chunk's P goes: batch stride p_bs, row stride Nk */
            void *pch = save ? (char *)s.p + (h * Nq + q0) * Nk * (int64_t)esz(pdt) : pbuf ? pbuf : sbuf;
            int64_t p_bs = save ? H * Nq * Nk : qc * Nk;
            float *sch = sbuf ? sbuf : pch;
            int64_t s_bs = sbuf ? qc * Nk : p_bs;
            /* S = scale * Q K^T */
            if (!gemm(ctx, B, qc, Nk, D, offp(s.q, s.gdt, q0 * C + h * D), s.gdt, Nq * C, C, 1,
                      offp(s.k, s.gdt, h * D), s.gdt, Nk * C, 1, C, sch, SEGC_F32, s_bs, Nk, scale, false))
                return NULL;
            int64_t rows = B * qc;
            bool bf16 = s.bf16;
#pragma omp parallel for schedule(static) if (rows * Nk > 32768)
            for (int64_t r = 0; r < rows; r++) {
                float *srow = sch + (r / qc) * s_bs + (r % qc) * Nk;
                uint16_t *prow = pdt == SEGC_BF16 ? (uint16_t *)pch + (r / qc) * p_bs + (r % qc) * Nk : NULL;
                softmax_row(srow, Nk, bf16, prow);
            }
            /* O = P V into this head's output columns */
            if (!gemm(ctx, B, qc, Dv, Nk, pch, pdt, p_bs, Nk, 1, offp(s.v, s.gdt, h * Dv), s.gdt, Nk * Cv, Cv, 1,
                      (char *)y->data + (q0 * Cv + h * Dv) * (int64_t)esz(y->dtype), y->dtype, Nq * Cv, Cv, 1.0f,
                      false))
                return NULL;
        }
    if (save) {
        attn_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        *sv = s;
        segc_record(ctx, "attention", attention_backward, y, ins, 3, sv);
    }
    return y;
}
