/* mmseg's sigmoid focal loss, Lovasz-softmax and the OHEM pixel selection
 * (losses.h). Pixel-wise work runs over pixels in parallel with no shared
 * sums; Lovasz sorts each (group, class) on its own (a stable LSD radix sort,
 * ties in pixel order) and its per-class losses are combined in class order,
 * so results do not depend on the thread count. */
#include <math.h>
#include <omp.h>

#include "normloss_util.h"
#include "segc/losses.h"
#include "segc/ops.h"
#include "segc/profile.h"

#define FL_PAR_MIN 16384

/* ---- stable radix sort of 32-bit keys (ascending), carrying a 32-bit payload ---- */
static void radix_sort(uint32_t *key, uint32_t *idx, uint32_t *k2, uint32_t *i2, int64_t n) {
    static const int shift[3] = {0, 11, 22};
    for (int pass = 0; pass < 3; pass++) {
        int64_t cnt[2049] = {0};
        const int sh = shift[pass];
        for (int64_t i = 0; i < n; i++) cnt[((key[i] >> sh) & 2047u) + 1]++;
        for (int b = 0; b < 2048; b++) cnt[b + 1] += cnt[b];
        for (int64_t i = 0; i < n; i++) {
            int64_t d = cnt[(key[i] >> sh) & 2047u]++;
            k2[d] = key[i];
            i2[d] = idx[i];
        }
        uint32_t *tk = key; key = k2; k2 = tk;
        uint32_t *ti = idx; idx = i2; i2 = ti;
    }
    /* three passes (an odd count): the result is in the second buffers (the callers' k2, i2) */
}
/* order-preserving key of a non-negative float (descending: complement) */
static inline uint32_t fkey(float v, bool descending) {
    uint32_t u = nl_f32_bits(v > 0.f ? v : 0.f);
    return descending ? ~u : u;
}

/* ---------------- sigmoid focal loss ---------------- */
typedef struct {
    int64_t N, C, S;
    float gamma, alpha;
    const float *w;
    int ignore;
} focal_saved;

static inline float softplus(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }
static inline float sigmoidf(float x) { return x >= 0 ? 1.f / (1.f + expf(-x)) : expf(x) / (1.f + expf(x)); }

static void focal_backward(segc_ctx *ctx, segc_node *nd) {
    const focal_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0], *target = nd->in[1];
    if (!x->requires_grad) return;
    const int64_t N = sv->N, C = sv->C, S = sv->S;
    const float *gout = nd->out->grad, *z = segc_as_f32(ctx, x), gm = sv->gamma;
    float *gx = segc_grad(ctx, x);
#pragma omp parallel for schedule(static) if (N * C * S >= FL_PAR_MIN)
    for (int64_t q = 0; q < N * S; q++) {
        const int64_t n = q / S, s = q % S, t = nl_label_at(target, q);
        if (t == sv->ignore) continue;
        const float g = gout[q];
        for (int64_t c = 0; c < C; c++) {
            const float xv = z[(n * C + c) * S + s], p = sigmoidf(xv), y = t == c ? 1.f : 0.f;
            const float a = t == c ? sv->alpha : 1.f - sv->alpha, omp = t == c ? 1.f - p : p;
            const float bce = softplus(xv) - xv * y;
            float d = (p - y) * powf(omp, gm);
            if (gm != 0.f) {
                const float om1 = gm == 1.f ? 1.f : omp > 0.f ? powf(omp, gm - 1.f) : 0.f;
                d += bce * gm * om1 * p * (1.f - p) * (1.f - 2.f * y);
            }
            gx[(n * C + c) * S + s] += g * (sv->w ? sv->w[c] : 1.f) * a * d;
        }
    }
}

segc_tensor *segc_sigmoid_focal(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, float gamma, float alpha,
                                const float *class_weight, int ignore_index) {
    static const char *op = "sigmoid_focal";
    SEGC_PROF_OP(ctx, op);
    if (!logits || !target) return NULL;
    int64_t N, C, S;
    if (!nl_check_class_logits(ctx, op, logits, target, &N, &C, &S)) return NULL;
    if (!(gamma >= 0.f) || !(alpha >= 0.f && alpha <= 1.f)) {
        segc_set_error(ctx, "%s: need gamma >= 0 and alpha in [0, 1], found %g, %g", op, (double)gamma, (double)alpha);
        return NULL;
    }
    focal_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (focal_saved){.N = N, .C = C, .S = S, .gamma = gamma, .alpha = alpha, .ignore = ignore_index};
    if (class_weight) {
        float *w = segc_arena_alloc(&ctx->arena, (size_t)C * sizeof(float));
        memcpy(w, class_weight, (size_t)C * sizeof(float));
        sv->w = w;
    }
    segc_tensor *out = segc_tensor_new(ctx, SEGC_F32, target->ndim, target->shape);
    float *o = segc_f32(out);
    const float *z = segc_as_f32(ctx, logits);
    int64_t bad = -1;
#pragma omp parallel for schedule(static) if (N * C * S >= FL_PAR_MIN)
    for (int64_t q = 0; q < N * S; q++) {
        const int64_t n = q / S, s = q % S, t = nl_label_at(target, q);
        o[q] = 0.f;
        if (t == ignore_index) continue;
        if (t < 0 || t >= C) {
#pragma omp critical(segc_focal_bad)
            if (bad < 0 || q < bad) bad = q;
            continue;
        }
        float acc = 0.f;
        for (int64_t c = 0; c < C; c++) {
            const float xv = z[(n * C + c) * S + s], p = sigmoidf(xv), y = t == c ? 1.f : 0.f;
            const float a = t == c ? alpha : 1.f - alpha, omp = t == c ? 1.f - p : p;
            acc += (sv->w ? sv->w[c] : 1.f) * a * powf(omp, gamma) * (softplus(xv) - xv * y);
        }
        o[q] = acc;
    }
    if (bad >= 0) {
        nl_bad_label(ctx, op, target, bad, C, ignore_index);
        return NULL;
    }
    segc_tensor *ins[2] = {logits, target};
    if (segc_needs_grad(ctx, ins, 1)) segc_record(ctx, op, focal_backward, out, ins, 2, sv);
    if (!segc_check_finite_out(ctx, op, out)) return NULL;
    return out;
}

/* ---------------- Lovasz-softmax ---------------- */
typedef struct {
    int64_t N, C, S;
    float *prob;    /* [N, C, S] softmax */
    float *dp;      /* [N, C, S] d loss / d prob */
} lovasz_saved;

static void softmax_pixels(const float *z, float *p, int64_t N, int64_t C, int64_t S) {
#pragma omp parallel for schedule(static) if (N * C * S >= FL_PAR_MIN)
    for (int64_t q = 0; q < N * S; q++) {
        const int64_t n = q / S, s = q % S;
        const float *zc = z + n * C * S + s;
        float *pc = p + n * C * S + s;
        float mx = zc[0];
        for (int64_t c = 1; c < C; c++) mx = fmaxf(mx, zc[c * S]);
        double sum = 0;
        for (int64_t c = 0; c < C; c++) sum += (pc[c * S] = expf(zc[c * S] - mx));
        const float inv = (float)(1.0 / sum);
        for (int64_t c = 0; c < C; c++) pc[c * S] *= inv;
    }
}

static void lovasz_backward(segc_ctx *ctx, segc_node *nd) {
    const lovasz_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0];
    if (!x->requires_grad) return;
    const int64_t N = sv->N, C = sv->C, S = sv->S;
    const float g = nd->out->grad[0];
    float *gx = segc_grad(ctx, x);
#pragma omp parallel for schedule(static) if (N * C * S >= FL_PAR_MIN)
    for (int64_t q = 0; q < N * S; q++) {
        const int64_t n = q / S, s = q % S;
        const float *p = sv->prob + n * C * S + s, *d = sv->dp + n * C * S + s;
        double dot = 0;
        for (int64_t c = 0; c < C; c++) dot += (double)p[c * S] * d[c * S];
        for (int64_t c = 0; c < C; c++) gx[n * C * S + c * S + s] += g * p[c * S] * (float)(d[c * S] - dot);
    }
}

segc_tensor *segc_lovasz_softmax(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, bool per_image,
                                 bool all_classes, const float *class_weight, int ignore_index) {
    static const char *op = "lovasz_softmax";
    SEGC_PROF_OP(ctx, op);
    if (!logits || !target) return NULL;
    int64_t N, C, S;
    if (!nl_check_class_logits(ctx, op, logits, target, &N, &C, &S)) return NULL;
    if (N * S > INT32_MAX) {
        segc_set_error(ctx, "%s: at most %d pixels per call, found %lld", op, INT32_MAX, (long long)(N * S));
        return NULL;
    }
    lovasz_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    *sv = (lovasz_saved){.N = N, .C = C, .S = S};
    sv->prob = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * C * S) * sizeof(float));
    sv->dp = segc_arena_calloc(&ctx->arena, (size_t)nl_max1(N * C * S) * sizeof(float));
    softmax_pixels(segc_as_f32(ctx, logits), sv->prob, N, C, S);
    /* groups of pixels: one per image, or the whole batch; valid pixels of each, in order */
    const int64_t G = per_image ? N : 1, GS = per_image ? S : N * S;
    int32_t *valid = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * S) * sizeof(int32_t));
    int32_t *lab = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(N * S) * sizeof(int32_t));
    int64_t *vbeg = segc_arena_alloc(&ctx->arena, (size_t)(G + 1) * sizeof(int64_t));
    uint8_t *present = segc_arena_calloc(&ctx->arena, (size_t)(G * C));
    int64_t nv = 0, maxv = 0;
    for (int64_t g = 0; g < G; g++) {
        vbeg[g] = nv;
        for (int64_t q = g * GS; q < (g + 1) * GS; q++) {
            const int64_t t = nl_label_at(target, q);
            if (t == ignore_index) continue;
            if (t < 0 || t >= C) { nl_bad_label(ctx, op, target, q, C, ignore_index); return NULL; }
            valid[nv] = (int32_t)q;
            lab[nv++] = (int32_t)t;
            present[g * C + t] = 1;
        }
        if (nv - vbeg[g] > maxv) maxv = nv - vbeg[g];
    }
    vbeg[G] = nv;
    /* classes taking part per group and their count */
    int64_t *ncls = segc_arena_calloc(&ctx->arena, (size_t)G * sizeof(int64_t));
    for (int64_t g = 0; g < G; g++)
        for (int64_t c = 0; c < C; c++)
            if (vbeg[g + 1] > vbeg[g] && (all_classes || present[g * C + c])) ncls[g]++;
    double *lgc = segc_arena_calloc(&ctx->arena, (size_t)(G * C) * sizeof(double));
    const int nt = omp_get_max_threads();
    const size_t per = (size_t)nl_max1(maxv);
    uint32_t *kbuf = segc_arena_alloc(&ctx->arena, (size_t)nt * 2 * per * sizeof(uint32_t));
    uint32_t *pbuf = segc_arena_alloc(&ctx->arena, (size_t)nt * 2 * per * sizeof(uint32_t));
#pragma omp parallel for schedule(dynamic, 1) if (N * C * S >= FL_PAR_MIN)
    for (int64_t gc = 0; gc < G * C; gc++) {
        const int64_t g = gc / C, c = gc % C, v0 = vbeg[g], V = vbeg[g + 1] - v0;
        if (!V || !(all_classes || present[gc])) continue;
        const int th = omp_get_thread_num();
        uint32_t *key = kbuf + (size_t)th * 2 * per, *k2 = key + per;
        uint32_t *pay = pbuf + (size_t)th * 2 * per, *p2 = pay + per;
        /* the sort carries everything the sweep needs, so the sweep reads in order: the error is
         * the key itself, the payload holds the pixel (< 2^31) and the foreground bit */
        int64_t gts = 0;
        for (int64_t i = 0; i < V; i++) {
            const uint32_t q = (uint32_t)valid[v0 + i];
            const bool fg = lab[v0 + i] == c;
            const float e = fabsf((fg ? 1.f : 0.f) - sv->prob[(q / S * C + c) * S + q % S]);
            key[i] = fkey(e, true);
            pay[i] = q | (uint32_t)fg << 31;
            gts += fg;
        }
        radix_sort(key, pay, k2, p2, V);   /* sorted into k2 / p2 */
        const double wc = (class_weight ? class_weight[c] : 1.0) / (double)ncls[g] / (double)G;
        double cum_fg = 0, prev = 0, loss = 0;
        for (int64_t k = 0; k < V; k++) {
            const uint32_t q = p2[k] & 0x7fffffffu;
            const bool fg = p2[k] >> 31;
            const float e = nl_bits_f32(~k2[k]);
            cum_fg += fg;
            const double inter = (double)gts - cum_fg, uni = (double)gts + (double)(k + 1) - cum_fg;
            const double j = 1.0 - inter / uni, jac = j - prev;
            prev = j;
            loss += (double)e * jac;
            /* d|fg - p| / dp: -1 below the target (fg), +1 above; 0 where they are equal (PyTorch's
             * abs): p < 1 exactly when 1 - p > 0, p > 0 when |0 - p| > 0 */
            const float sg = e > 0.f ? (fg ? -1.f : 1.f) : 0.f;
            sv->dp[(q / S * C + c) * S + q % S] = (float)(wc * jac) * sg;
        }
        lgc[gc] = loss * (class_weight ? class_weight[c] : 1.0);
    }
    double total = 0;
    for (int64_t g = 0; g < G; g++) {
        double lg = 0;
        for (int64_t c = 0; c < C; c++) lg += lgc[g * C + c];
        if (ncls[g]) total += lg / (double)ncls[g];
    }
    segc_tensor *out = segc_tensor_new(ctx, SEGC_F32, 0, NULL);
    segc_f32(out)[0] = (float)(total / (double)G);
    segc_tensor *ins[2] = {logits, target};
    if (segc_needs_grad(ctx, ins, 1)) segc_record(ctx, op, lovasz_backward, out, ins, 2, sv);
    if (!segc_check_finite_out(ctx, op, out)) return NULL;
    return out;
}

/* ---------------- OHEM pixel selection ---------------- */
segc_tensor *segc_ohem_weights(segc_ctx *ctx, segc_tensor *logits, segc_tensor *target, const segc_tensor *pixel_loss,
                               double thresh, int64_t min_kept, int ignore_index) {
    static const char *op = "ohem";
    if (!logits || !target) return NULL;
    int64_t N, C, S;
    if (!nl_check_class_logits(ctx, op, logits, target, &N, &C, &S)) return NULL;
    const int64_t P = N * S, batch_kept = min_kept * N;
    if (min_kept < 1 || batch_kept > P) {
        segc_set_error(ctx, "loss.sampler.min_kept: expected 1 .. the %lld pixels of each image, found %lld (x %lld "
                       "images = %lld > the batch's %lld pixels)", (long long)S, (long long)min_kept, (long long)N,
                       (long long)batch_kept, (long long)P);
        return NULL;
    }
    if (thresh < 0 && (!pixel_loss || segc_numel(pixel_loss) != P || pixel_loss->dtype != SEGC_F32)) {
        segc_set_error(ctx, "%s: loss-based selection needs f32 per-pixel losses of %lld elements", op, (long long)P);
        return NULL;
    }
    segc_tensor *w = segc_tensor_zeros(ctx, SEGC_F32, target->ndim, target->shape);
    float *wv = segc_f32(w), *val = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(P) * sizeof(float));
    int32_t *pos = segc_arena_alloc(&ctx->arena, (size_t)nl_max1(P) * sizeof(int32_t));
    const float *z = thresh >= 0 ? segc_as_f32(ctx, logits) : NULL;
    int64_t V = 0;
    for (int64_t q = 0; q < P; q++) {
        const int64_t t = nl_label_at(target, q);
        if (t == ignore_index) continue;
        if (t < 0 || t >= C) { nl_bad_label(ctx, op, target, q, C, ignore_index); return NULL; }
        pos[V] = (int32_t)q;
        if (z) {   /* softmax probability of the true class */
            const float *zc = z + q / S * C * S + q % S;
            float mx = zc[0];
            for (int64_t c = 1; c < C; c++) mx = fmaxf(mx, zc[c * S]);
            double sum = 0;
            for (int64_t c = 0; c < C; c++) sum += expf(zc[c * S] - mx);
            val[V] = (float)(expf(zc[t * S] - mx) / sum);
        } else {
            val[V] = segc_f32(pixel_loss)[q];
        }
        V++;
    }
    if (!V) return w;
    uint32_t *key = segc_arena_alloc(&ctx->arena, (size_t)V * 2 * sizeof(uint32_t));
    uint32_t *idx = segc_arena_alloc(&ctx->arena, (size_t)V * 2 * sizeof(uint32_t));
    for (int64_t i = 0; i < V; i++) { key[i] = fkey(val[i], thresh < 0); idx[i] = (uint32_t)i; }
    radix_sort(key, idx, key + V, idx + V, V);
    if (thresh >= 0) {
        const float kth = val[idx[V + (batch_kept < V - 1 ? batch_kept : V - 1)]];
        const float th = kth > (float)thresh ? kth : (float)thresh;
        for (int64_t i = 0; i < V; i++)
            if (val[i] < th) wv[pos[i]] = 1.f;
    } else {
        for (int64_t k = 0; k < batch_kept && k < V; k++) wv[pos[idx[V + k]]] = 1.f;
    }
    return w;
}
