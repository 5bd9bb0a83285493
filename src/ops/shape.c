/* Shape ops: reshape/flatten (views sharing storage), permute/transpose
 * (cache-blocked transposes), concat/split/slice and pad.
 *
 * Data movement is dtype-agnostic (element size only); gradients are f32 and
 * flow for f32/bf16 tensors. Every backward is a gather or a scatter whose
 * writers never collide across threads, so results are bitwise reproducible. */
#include <stdio.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "segc/ops.h"
#include "segc/profile.h"

#define PAR_MIN 32768 /* elements below which threading costs more than it saves */

static bool is_float(const segc_tensor *t) { return t->dtype == SEGC_F32 || t->dtype == SEGC_BF16; }

static const char *dims_str(const int64_t *d, int n, char *buf, size_t len) {
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < n && k < len; i++) k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
    return buf;
}

/* PyTorch-style dim wrapping; false (with an error) when out of range. */
static bool wrap_dim(segc_ctx *ctx, const char *op, const segc_tensor *x, int *dim) {
    int d = *dim < 0 ? *dim + x->ndim : *dim;
    if (d < 0 || d >= x->ndim) {
        char b[96];
        segc_set_error(ctx, "%s: dim %d out of range for %d-D input %s (expected %d..%d)", op, *dim, x->ndim,
                       segc_shape_str(x, b, sizeof b), -x->ndim, x->ndim - 1);
        return false;
    }
    *dim = d;
    return true;
}

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= s[i];
    return p;
}

static void add_f32(float *restrict dst, const float *restrict src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 4 * PAR_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* ------------------------------------------------------------------ reshape */

static void view_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0];
    if (!x->requires_grad || segc_ew_grad_alias(ctx, x, nd->out->grad)) return;   /* same layout: hand the buffer on */
    add_f32(segc_grad(ctx, x), nd->out->grad, segc_numel(x));
}

static segc_tensor *make_view(segc_ctx *ctx, const char *op, segc_tensor *x, int ndim, const int64_t *shape) {
    SEGC_PROF_OP(ctx, op);
    if (x->nhwc) {   /* its element order is not the shape's */
        segc_set_error(ctx, "%s: x is channels-last (NHWC); convert it with segc_to_channels_first first", op);
        return NULL;
    }
    segc_tensor *y = segc_tensor_wrap(ctx, x->dtype, ndim, shape, x->data);
    if (y && is_float(x) && segc_needs_grad(ctx, &x, 1)) segc_record(ctx, op, view_backward, y, &x, 1, NULL);
    return y;
}

segc_tensor *segc_reshape(segc_ctx *ctx, segc_tensor *x, int ndim, const int64_t *shape) {
    if (!x) return NULL;
    char b[96], c[96];
    if (ndim < 0 || ndim > SEGC_MAX_DIMS || (ndim > 0 && !shape)) {
        segc_set_error(ctx, "reshape: expected 0..%d target dims, found %d%s", SEGC_MAX_DIMS, ndim,
                       ndim > 0 && !shape ? " with a NULL shape" : "");
        return NULL;
    }
    int64_t s[SEGC_MAX_DIMS], known = 1, n = segc_numel(x);
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) { infer = i; continue; }
        if (s[i] < 0) {
            segc_set_error(ctx, "reshape: target %s of input %s: expected sizes >= 0 and at most one -1",
                           dims_str(shape, ndim, c, sizeof c), segc_shape_str(x, b, sizeof b));
            return NULL;
        }
        known *= s[i];
    }
    if (infer >= 0) {
        if (known == 0 || n % known != 0) {
            segc_set_error(ctx, "reshape: cannot infer -1 in %s for input %s (%lld elements)",
                           dims_str(shape, ndim, c, sizeof c), segc_shape_str(x, b, sizeof b), (long long)n);
            return NULL;
        }
        s[infer] = n / known;
        known = n;
    }
    if (known != n) {
        segc_set_error(ctx, "reshape: input %s has %lld elements, target %s has %lld", segc_shape_str(x, b, sizeof b),
                       (long long)n, dims_str(s, ndim, c, sizeof c), (long long)known);
        return NULL;
    }
    return make_view(ctx, "reshape", x, ndim, s);
}

segc_tensor *segc_flatten(segc_ctx *ctx, segc_tensor *x, int start_dim, int end_dim) {
    if (!x) return NULL;
    if (x->ndim == 0) {  /* PyTorch: a scalar flattens to one element */
        if ((start_dim != 0 && start_dim != -1) || (end_dim != 0 && end_dim != -1)) {
            segc_set_error(ctx, "flatten: 0-D input accepts dims 0 or -1, found start %d end %d", start_dim, end_dim);
            return NULL;
        }
        return make_view(ctx, "flatten", x, 1, (const int64_t[]){1});
    }
    if (!wrap_dim(ctx, "flatten", x, &start_dim) || !wrap_dim(ctx, "flatten", x, &end_dim)) return NULL;
    if (start_dim > end_dim) {
        char b[96];
        segc_set_error(ctx, "flatten: start_dim %d must not come after end_dim %d for input %s", start_dim, end_dim,
                       segc_shape_str(x, b, sizeof b));
        return NULL;
    }
    int64_t s[SEGC_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < start_dim; i++) s[k++] = x->shape[i];
    s[k++] = prod(x->shape, start_dim, end_dim + 1);
    for (int i = end_dim + 1; i < x->ndim; i++) s[k++] = x->shape[i];
    return make_view(ctx, "flatten", x, k, s);
}

/* ------------------------------------------------------------------ permute */

/* A permutation reduced to its essentials: size-1 dims dropped and input dims
 * that stay adjacent in the output merged. NCHW->NHWC becomes a batched 2-D
 * transpose [N, C, HW] -> [N, HW, C]. */
typedef struct {
    int nd;
    int64_t shape[SEGC_MAX_DIMS]; /* reduced input shape */
    int perm[SEGC_MAX_DIMS];      /* output dim i = reduced input dim perm[i] */
} perm_plan;

static void plan_permute(int ndim, const int64_t *shape, const int *perm, perm_plan *p) {
    int newidx[SEGC_MAX_DIMS], k = 0, q[SEGC_MAX_DIMS], m = 0;
    int64_t ks[SEGC_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        newidx[d] = shape[d] > 1 ? k : -1;
        if (shape[d] > 1) ks[k++] = shape[d];
    }
    for (int i = 0; i < ndim; i++)
        if (newidx[perm[i]] >= 0) q[m++] = newidx[perm[i]];
    int gs[SEGC_MAX_DIMS], ge[SEGC_MAX_DIMS], ng = 0; /* groups of input dims, in output order */
    for (int i = 0; i < m; i++) {
        if (ng > 0 && q[i] == ge[ng - 1] + 1) ge[ng - 1] = q[i];
        else { gs[ng] = ge[ng] = q[i]; ng++; }
    }
    p->nd = ng;
    for (int g = 0; g < ng; g++) {
        int rank = 0;
        for (int h = 0; h < ng; h++) rank += gs[h] < gs[g];
        int64_t s = 1;
        for (int d = gs[g]; d <= ge[g]; d++) s *= ks[d];
        p->shape[rank] = s;
        p->perm[g] = rank;
    }
}

static inline void move_elems(char *d, const char *s, int64_t n, size_t es, bool acc) {
    if (!acc) { memcpy(d, s, (size_t)n * es); return; }
    float *restrict df = (float *)d;
    const float *restrict sf = (const float *)s;
    for (int64_t i = 0; i < n; i++) df[i] += sf[i];
}

#ifdef __AVX2__
/* 8x8 transpose of 32-bit elements: d[j*dld + i] (+)= s[i*sld + j]. */
static inline void tr8x8_b32(const float *s, int64_t sld, float *d, int64_t dld, bool acc) {
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(s + i * sld);
    for (int p = 0; p < 4; p++) {
        t[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    /* u[4q+c], 128-bit lane L: column 4L+c of rows 4q..4q+3 */
    for (int q = 0; q < 2; q++) {
        u[4 * q] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
        u[4 * q + 1] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], 0xEE);
        u[4 * q + 2] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
        u[4 * q + 3] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        __m256 o[2] = {_mm256_permute2f128_ps(u[c], u[4 + c], 0x20), _mm256_permute2f128_ps(u[c], u[4 + c], 0x31)};
        for (int l = 0; l < 2; l++) {
            float *dr = d + (4 * l + c) * dld;
            _mm256_storeu_ps(dr, acc ? _mm256_add_ps(_mm256_loadu_ps(dr), o[l]) : o[l]);
        }
    }
}

/* 16x16 transpose of 16-bit elements: three in-lane unpack stages transpose
 * the 8x8 blocks inside 128-bit lanes, one lane exchange finishes. */
static inline void tr16x16_b16(const uint16_t *s, int64_t sld, uint16_t *d, int64_t dld) {
    __m256i a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = _mm256_loadu_si256((const __m256i *)(s + i * sld));
    for (int g = 0; g < 2; g++) { /* rows 8g..8g+7 */
        __m256i *r = a + 8 * g, *t = b + 8 * g;
        for (int p = 0; p < 4; p++) { /* t[2p], t[2p+1]: rows 2p,2p+1 interleaved, columns 0-3 / 4-7 of each lane */
            t[2 * p] = _mm256_unpacklo_epi16(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm256_unpackhi_epi16(r[2 * p], r[2 * p + 1]);
        }
        for (int h = 0; h < 2; h++) { /* r[4h+k]: columns 4h+{0,1} (k=0) / 4h+{2,3} (k=1) of rows 0-3, k=2,3 rows 4-7 */
            r[4 * h + 0] = _mm256_unpacklo_epi32(t[h], t[h + 2]);
            r[4 * h + 1] = _mm256_unpackhi_epi32(t[h], t[h + 2]);
            r[4 * h + 2] = _mm256_unpacklo_epi32(t[h + 4], t[h + 6]);
            r[4 * h + 3] = _mm256_unpackhi_epi32(t[h + 4], t[h + 6]);
        }
        for (int h = 0; h < 2; h++) { /* t[4h+k]: column 4h+k of rows 0-7 */
            t[4 * h + 0] = _mm256_unpacklo_epi64(r[4 * h], r[4 * h + 2]);
            t[4 * h + 1] = _mm256_unpackhi_epi64(r[4 * h], r[4 * h + 2]);
            t[4 * h + 2] = _mm256_unpacklo_epi64(r[4 * h + 1], r[4 * h + 3]);
            t[4 * h + 3] = _mm256_unpackhi_epi64(r[4 * h + 1], r[4 * h + 3]);
        }
    }
    /* b[8g+c], lane L: column 8L+c of rows 8g..8g+7 */
    for (int c = 0; c < 8; c++) {
        _mm256_storeu_si256((__m256i *)(d + c * dld), _mm256_permute2x128_si256(b[c], b[8 + c], 0x20));
        _mm256_storeu_si256((__m256i *)(d + (8 + c) * dld), _mm256_permute2x128_si256(b[c], b[8 + c], 0x31));
    }
}
#endif

/* Scalar transpose of the block rows [i0,i1) x cols [j0,j1). */
static void tr_scalar(const char *s, int64_t sld, char *d, int64_t dld, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                      size_t es, bool acc) {
    for (int64_t j = j0; j < j1; j++) {
        for (int64_t i = i0; i < i1; i++) {
            const char *sp = s + (i * sld + j) * (int64_t)es;
            char *dp = d + (j * dld + i) * (int64_t)es;
            switch (es) {
            case 1: *dp = *sp; break;
            case 2: memcpy(dp, sp, 2); break;
            case 4:
                if (acc) { float v; memcpy(&v, sp, 4); *(float *)dp += v; }
                else memcpy(dp, sp, 4);
                break;
            default: memcpy(dp, sp, 8); break;
            }
        }
    }
}

/* d[j*dld + i] (+)= s[i*sld + j] over rows [i0,i1) x cols [j0,j1): full
 * tiles through the vector kernels, the ragged edges scalar. */
static void tr_block(const char *s, int64_t sld, char *d, int64_t dld, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                     size_t es, bool acc) {
    int64_t ie = i0, je = j0;
#ifdef __AVX2__
    int64_t t = es == 4 ? 8 : es == 2 && !acc ? 16 : 0;
    if (t) {
        ie = i0 + (i1 - i0) / t * t;
        je = j0 + (j1 - j0) / t * t;
        for (int64_t i = i0; i < ie; i += t)
            for (int64_t j = j0; j < je; j += t) {
                if (es == 4) tr8x8_b32((const float *)s + i * sld + j, sld, (float *)d + j * dld + i, dld, acc);
                else tr16x16_b16((const uint16_t *)s + i * sld + j, sld, (uint16_t *)d + j * dld + i, dld);
            }
    }
#endif
    if (je < j1) tr_scalar(s, sld, d, dld, i0, ie, je, j1, es, acc);
    if (ie < i1) tr_scalar(s, sld, d, dld, ie, i1, j0, j1, es, acc);
}

/* dst (+)= permute(src); acc means f32 accumulation (the backward). */
static void permute_exec(const void *src, void *dst, size_t es, bool acc, const perm_plan *p) {
    int nd = p->nd;
    const int64_t *s = p->shape;
    const int *pm = p->perm;
    const char *sc = src;
    char *dc = dst;
    int64_t total = prod(s, 0, nd);
    if (total == 0) return;
    if (nd <= 1) { /* identity */
        if (acc) add_f32(dst, src, total);
        else memcpy(dst, src, (size_t)total * es);
        return;
    }
    int64_t istr[SEGC_MAX_DIMS], os[SEGC_MAX_DIMS], ostr[SEGC_MAX_DIMS];
    istr[nd - 1] = 1;
    for (int d = nd - 2; d >= 0; d--) istr[d] = istr[d + 1] * s[d + 1];
    for (int i = 0; i < nd; i++) os[i] = s[pm[i]];
    ostr[nd - 1] = 1;
    for (int i = nd - 2; i >= 0; i--) ostr[i] = ostr[i + 1] * os[i + 1];

    if (pm[nd - 1] == nd - 1) { /* innermost dim stays: contiguous blocks */
        int64_t blk = s[nd - 1], nblk = total / blk;
#pragma omp parallel for schedule(static) if (total > PAR_MIN)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t rem = b, off = 0;
            for (int i = nd - 2; i >= 0; i--) {
                off += rem % os[i] * istr[pm[i]];
                rem /= os[i];
            }
            move_elems(dc + b * blk * (int64_t)es, sc + off * (int64_t)es, blk, es, acc);
        }
        return;
    }
    /* transpose of input dim a (rows) with the innermost input dim (cols),
     * batched over the other dims */
    int a = pm[nd - 1], q = 0;
    while (pm[q] != nd - 1) q++;
    int64_t rows = s[a], cols = s[nd - 1], sld = istr[a], dld = ostr[q];
    int od[SEGC_MAX_DIMS], no = 0;
    for (int i = 0; i < nd - 1; i++)
        if (i != q) od[no++] = i;
    /* Work items are 64-byte-wide panels. The loop inside a panel walks the
     * side whose stride is smaller (input rows when sld <= dld, output rows
     * otherwise), so the strided accesses stay within pages and prefetchable. */
    bool col_panels = sld <= dld;
    int64_t nouter = total / (rows * cols), tw = 64 / (int64_t)es, span = col_panels ? cols : rows;
    int64_t npanel = (span + tw - 1) / tw;
#pragma omp parallel for schedule(static) if (total > PAR_MIN)
    for (int64_t it = 0; it < nouter * npanel; it++) {
        int64_t o = it / npanel, p0 = it % npanel * tw, p1 = p0 + tw < span ? p0 + tw : span;
        int64_t rem = o, soff = 0, doff = 0;
        for (int k = no - 1; k >= 0; k--) {
            int64_t c = rem % os[od[k]];
            rem /= os[od[k]];
            soff += c * istr[pm[od[k]]];
            doff += c * ostr[od[k]];
        }
        const char *sb = sc + soff * (int64_t)es;
        char *db = dc + doff * (int64_t)es;
        if (col_panels) tr_block(sb, sld, db, dld, 0, rows, p0, p1, es, acc);
        else tr_block(sb, sld, db, dld, p0, p1, 0, cols, es, acc);
    }
}

typedef struct { perm_plan inv; } permute_saved;

/* the inverse permutation of the output's gradient: written into a fresh gradient, added to an
 * existing one; bf16 gradients (ctx->bf16_grads) move as 16-bit values, other mixes go through f32 */
static void permute_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0];
    const permute_saved *sv = nd->saved;
    if (!x->requires_grad) return;
    const uint16_t *go16 = nd->out->grad_bf16;
    const int64_t n = segc_numel(x);
    bool fresh;
    uint16_t *gx16 = segc_grad_bf16_dst(ctx, x, &fresh);
    if (gx16 && go16 && fresh) {
        permute_exec(go16, gx16, 2, false, &sv->inv);
        return;
    }
    float *gx = gx16 ? NULL : segc_ew_grad_dst(ctx, x, &fresh);
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    const float *go = nd->out->grad;
    if (go16) {
        float *w = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof *w);
        segc_bf16_to_f32_n(go16, w, n);
        go = w;
    }
    if (gx) {
        permute_exec(go, gx, 4, !fresh, &sv->inv);
    } else {   /* into the bf16 gradient through an f32 temporary, rounded once */
        float *t = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof *t);
        permute_exec(go, t, 4, false, &sv->inv);
        segc_ew_put_grad_bf16_n(t, gx16, n, fresh);
    }
    segc_arena_rewind(&ctx->arena, mark);
}

segc_tensor *segc_permute(segc_ctx *ctx, segc_tensor *x, const int *perm) {
    SEGC_PROF_OP(ctx, "permute");
    if (!x) return NULL;
    if (x->nhwc) {
        segc_set_error(ctx, "permute: x is channels-last (NHWC); convert it with segc_to_channels_first first");
        return NULL;
    }
    char b[96];
    bool seen[SEGC_MAX_DIMS] = {false}, ok = perm != NULL || x->ndim == 0;
    for (int i = 0; ok && i < x->ndim; i++) {
        ok = perm[i] >= 0 && perm[i] < x->ndim && !seen[perm[i]];
        if (ok) seen[perm[i]] = true;
    }
    if (!ok) {
        char pb[64] = "(null)";
        if (perm) {
            int64_t pl[SEGC_MAX_DIMS];
            for (int i = 0; i < x->ndim; i++) pl[i] = perm[i];
            dims_str(pl, x->ndim, pb, sizeof pb);
        }
        segc_set_error(ctx, "permute: perm %s is not a permutation of 0..%d for input %s", pb, x->ndim - 1,
                       segc_shape_str(x, b, sizeof b));
        return NULL;
    }
    int64_t os[SEGC_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) os[i] = x->shape[perm[i]];
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, x->ndim, os);
    if (!y) return NULL;
    perm_plan plan;
    plan_permute(x->ndim, x->shape, perm, &plan);
    permute_exec(x->data, y->data, segc_dtype_size(x->dtype), false, &plan);
    if (is_float(x) && segc_needs_grad(ctx, &x, 1)) {
        permute_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        int inv[SEGC_MAX_DIMS];
        for (int i = 0; i < x->ndim; i++) inv[perm[i]] = i;
        plan_permute(y->ndim, y->shape, inv, &sv->inv);
        segc_node_reads_bf16_grad(segc_record(ctx, "permute", permute_backward, y, &x, 1, sv));
    }
    return y;
}

segc_tensor *segc_transpose(segc_ctx *ctx, segc_tensor *x, int d0, int d1) {
    if (!x) return NULL;
    if (!wrap_dim(ctx, "transpose", x, &d0) || !wrap_dim(ctx, "transpose", x, &d1)) return NULL;
    int perm[SEGC_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return segc_permute(ctx, x, perm);
}

/* ------------------------------------------------------------------- concat */

typedef struct { int n, dim; segc_tensor **xs; } concat_saved;

static void concat_backward(segc_ctx *ctx, segc_node *nd) {
    const concat_saved *sv = nd->saved;
    const segc_tensor *y = nd->out;
    int64_t outer = prod(y->shape, 0, sv->dim), inner = prod(y->shape, sv->dim + 1, y->ndim);
    int64_t ychunk = y->shape[sv->dim] * inner, off = 0;
    for (int k = 0; k < sv->n; k++) {
        segc_tensor *x = sv->xs[k];
        int64_t chunk = x->shape[sv->dim] * inner;
        if (x->requires_grad) {
            float *gx = segc_grad(ctx, x); /* even when empty: every input gets a gradient */
            const float *go = y->grad + off;
#pragma omp parallel for schedule(static) if (outer * chunk > PAR_MIN)
            for (int64_t o = 0; o < outer; o++) move_elems((char *)(gx + o * chunk), (const char *)(go + o * ychunk), chunk, 4, true);
        }
        off += chunk;
    }
}

segc_tensor *segc_concat(segc_ctx *ctx, segc_tensor *const *xs, int n, int dim) {
    SEGC_PROF_OP(ctx, "concat");
    if (!xs || n < 1) {
        segc_set_error(ctx, "concat: expected at least one input, found %d%s", n, xs ? "" : " (NULL list)");
        return NULL;
    }
    for (int k = 0; k < n; k++)
        if (!xs[k]) return NULL;
    const segc_tensor *x0 = xs[0];
    if (!wrap_dim(ctx, "concat", x0, &dim)) return NULL;
    int64_t os[SEGC_MAX_DIMS];
    memcpy(os, x0->shape, sizeof os);
    os[dim] = 0;
    for (int k = 0; k < n; k++) {
        const segc_tensor *x = xs[k];
        bool ok = x->dtype == x0->dtype && x->ndim == x0->ndim;
        for (int d = 0; ok && d < x->ndim; d++) ok = d == dim || x->shape[d] == x0->shape[d];
        if (!ok) {
            char a[96], b[96];
            segc_set_error(ctx, "concat: input %d is %s %s, expected %s with input 0's shape %s except in dim %d", k,
                           segc_dtype_name(x->dtype), segc_shape_str(x, a, sizeof a), segc_dtype_name(x0->dtype),
                           segc_shape_str(x0, b, sizeof b), dim);
            return NULL;
        }
        os[dim] += x->shape[dim];
    }
    segc_tensor *y = segc_tensor_new(ctx, x0->dtype, x0->ndim, os);
    if (!y) return NULL;
    size_t es = segc_dtype_size(y->dtype);
    int64_t outer = prod(os, 0, dim), inner = prod(os, dim + 1, y->ndim), ychunk = os[dim] * inner;
    int64_t *offs = segc_arena_alloc(&ctx->arena, (size_t)(n + 1) * sizeof *offs);
    offs[0] = 0;
    for (int k = 0; k < n; k++) offs[k + 1] = offs[k] + xs[k]->shape[dim] * inner;
    char *yd = y->data;
#pragma omp parallel for schedule(static) if (segc_numel(y) > PAR_MIN)
    for (int64_t it = 0; it < outer * n; it++) {
        int64_t o = it / n;
        int k = (int)(it % n);
        int64_t chunk = offs[k + 1] - offs[k];
        if (chunk > 0)
            memcpy(yd + (o * ychunk + offs[k]) * (int64_t)es, (const char *)xs[k]->data + o * chunk * (int64_t)es,
                   (size_t)chunk * es);
    }
    if (is_float(y) && segc_needs_grad(ctx, xs, n)) {
        concat_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        sv->n = n;
        sv->dim = dim;
        sv->xs = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof *sv->xs);
        memcpy(sv->xs, xs, (size_t)n * sizeof *sv->xs);
        segc_record(ctx, "concat", concat_backward, y, xs, n, sv);
    }
    return y;
}

/* ------------------------------------------------------------ slice / split */

typedef struct { int dim; int64_t start, step; } slice_saved;

/* Element run copy with a source stride (in elements). */
static void gather_strided(char *d, const char *s, int64_t n, int64_t stride, size_t es) {
    switch (es) {
    case 1: for (int64_t i = 0; i < n; i++) d[i] = s[i * stride]; break;
    case 2: for (int64_t i = 0; i < n; i++) ((uint16_t *)d)[i] = ((const uint16_t *)s)[i * stride]; break;
    case 4: for (int64_t i = 0; i < n; i++) ((uint32_t *)d)[i] = ((const uint32_t *)s)[i * stride]; break;
    default: for (int64_t i = 0; i < n; i++) ((uint64_t *)d)[i] = ((const uint64_t *)s)[i * stride]; break;
    }
}

static void slice_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *y = nd->out;
    const slice_saved *sv = nd->saved;
    if (!x->requires_grad) return;
    int64_t outer = prod(x->shape, 0, sv->dim), inner = prod(x->shape, sv->dim + 1, x->ndim);
    int64_t len = y->shape[sv->dim], xd = x->shape[sv->dim];
    float *gx = segc_grad(ctx, x);
    const float *go = y->grad;
#pragma omp parallel for schedule(static) if (segc_numel(y) > PAR_MIN)
    for (int64_t it = 0; it < outer * len; it++) {
        int64_t o = it / len, k = it % len;
        float *restrict dst = gx + (o * xd + sv->start + k * sv->step) * inner;
        const float *restrict src = go + it * inner;
        for (int64_t e = 0; e < inner; e++) dst[e] += src[e];
    }
}

/* x[.., start : start+len*step : step, ..] along a wrapped, validated dim */
static segc_tensor *narrow(segc_ctx *ctx, const char *op, segc_tensor *x, int dim, int64_t start, int64_t len, int64_t step) {
    SEGC_PROF_OP(ctx, op);
    int64_t os[SEGC_MAX_DIMS];
    memcpy(os, x->shape, sizeof os);
    os[dim] = len;
    size_t es = segc_dtype_size(x->dtype);
    int64_t outer = prod(x->shape, 0, dim), inner = prod(x->shape, dim + 1, x->ndim), xd = x->shape[dim];
    /* one contiguous run starting on an aligned address (e.g. ViT's q/k/v rows of the packed qkv
     * weight): a view, no copy; its gradient is added into x's at the offset like a copy's */
    size_t off = (size_t)(start * inner) * es;
    bool view = step == 1 && (outer == 1 || len == 0) && x->data && off % SEGC_ALIGN == 0;
    segc_tensor *y = view ? segc_tensor_wrap(ctx, x->dtype, x->ndim, os, (char *)x->data + off)
                          : segc_tensor_new(ctx, x->dtype, x->ndim, os);
    if (!y) return NULL;
    const char *xs = x->data;
    char *yd = y->data;
    if (view) {
        /* nothing to copy */
    } else if (step == 1 || inner * (int64_t)es >= 64) {
        int64_t run = step == 1 ? len * inner : inner, nrun = step == 1 ? outer : outer * len;
#pragma omp parallel for schedule(static) if (segc_numel(y) > PAR_MIN)
        for (int64_t it = 0; it < nrun; it++) {
            int64_t o = step == 1 ? it : it / len, k = step == 1 ? 0 : it % len;
            memcpy(yd + it * run * (int64_t)es, xs + ((o * xd + start + k * step) * inner) * (int64_t)es, (size_t)run * es);
        }
    } else if (inner == 1) {
#pragma omp parallel for schedule(static) if (segc_numel(y) > PAR_MIN)
        for (int64_t o = 0; o < outer; o++)
            gather_strided(yd + o * len * (int64_t)es, xs + (o * xd + start) * (int64_t)es, len, step, es);
    } else {
#pragma omp parallel for schedule(static) if (segc_numel(y) > PAR_MIN)
        for (int64_t it = 0; it < outer * len; it++) {
            int64_t o = it / len, k = it % len;
            memcpy(yd + it * inner * (int64_t)es, xs + ((o * xd + start + k * step) * inner) * (int64_t)es,
                   (size_t)inner * es);
        }
    }
    if (is_float(x) && segc_needs_grad(ctx, &x, 1)) {
        slice_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        *sv = (slice_saved){dim, start, step};
        segc_record(ctx, op, slice_backward, y, &x, 1, sv);
    }
    return y;
}

segc_tensor *segc_slice(segc_ctx *ctx, segc_tensor *x, int dim, int64_t start, int64_t end, int64_t step) {
    if (!x) return NULL;
    if (!wrap_dim(ctx, "slice", x, &dim)) return NULL;
    int64_t n = x->shape[dim], s = start < 0 ? start + n : start, e = end < 0 ? end + n : end;
    char b[96];
    if (step < 1 || s < 0 || s > n || e < 0) {
        segc_set_error(ctx, "slice: start %lld end %lld step %lld invalid for dim %d of size %lld in %s "
                       "(expected step >= 1, start in [-%lld, %lld], end >= -%lld)",
                       (long long)start, (long long)end, (long long)step, dim, (long long)n,
                       segc_shape_str(x, b, sizeof b), (long long)n, (long long)n, (long long)n);
        return NULL;
    }
    if (e > n) e = n;
    int64_t len = e > s ? (e - s + step - 1) / step : 0;
    return narrow(ctx, "slice", x, dim, s, len, step);
}

bool segc_split(segc_ctx *ctx, segc_tensor *x, const int64_t *sizes, int n, int dim, segc_tensor **outs) {
    if (outs)
        for (int k = 0; k < n; k++) outs[k] = NULL;
    if (!x) return false;
    if (!sizes || !outs || n < 1) {
        segc_set_error(ctx, "split: expected n >= 1 sizes and an output array, found n=%d%s%s", n,
                       sizes ? "" : ", NULL sizes", outs ? "" : ", NULL outs");
        return false;
    }
    if (!wrap_dim(ctx, "split", x, &dim)) return false;
    int64_t sum = 0;
    bool ok = true;
    for (int k = 0; k < n; k++) {
        ok &= sizes[k] >= 0;
        sum += sizes[k];
    }
    if (!ok || sum != x->shape[dim]) {
        char b[96], c[160];
        int m = n < 12 ? n : 12;
        dims_str(sizes, m, c, sizeof c);
        segc_set_error(ctx, "split: sizes %s%s must be >= 0 and sum to dim %d's size %lld of %s, found sum %lld", c,
                       m < n ? "..." : "", dim, (long long)x->shape[dim], segc_shape_str(x, b, sizeof b), (long long)sum);
        return false;
    }
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        outs[k] = narrow(ctx, "split", x, dim, off, sizes[k], 1);
        if (!outs[k]) {
            for (int j = 0; j < k; j++) outs[j] = NULL;
            return false;
        }
        off += sizes[k];
    }
    return true;
}

/* ---------------------------------------------------------------------- pad */

typedef struct {
    segc_pad_mode mode;
    int64_t lo[SEGC_MAX_DIMS]; /* left pad per dim (negative crops) */
    int64_t **map;             /* per dim: output coordinate -> input coordinate, -1 = constant */
} pad_saved;

static int64_t pad_src(int64_t o, int64_t lo, int64_t n, segc_pad_mode mode) {
    int64_t i = o - lo;
    if (i >= 0 && i < n) return i;
    if (mode == SEGC_PAD_CONSTANT) return -1;
    if (mode == SEGC_PAD_REPLICATE) return i < 0 ? 0 : n - 1;
    return i < 0 ? -i : 2 * (n - 1) - i; /* reflect (pad < n checked) */
}

/* last-dim output columns [ms, me) copy the input run starting at ms - lo */
static void pad_middle(int64_t lo, int64_t wi, int64_t wo, int64_t *ms, int64_t *me) {
    *ms = lo < 0 ? 0 : lo > wo ? wo : lo;
    int64_t e = lo + wi;
    *me = e < *ms ? *ms : e > wo ? wo : e;
}

static void fill_elems(char *d, int64_t n, const unsigned char *val, size_t es) {
    for (int64_t i = 0; i < n; i++) memcpy(d + i * (int64_t)es, val, es);
}

/* source row offset (in input rows) of output row r, or -1 for a constant row */
static int64_t pad_src_row(const segc_tensor *y, const segc_tensor *x, int64_t *const *map, int64_t r) {
    int64_t off = 0, stride = 1;
    for (int d = y->ndim - 2; d >= 0; d--) {
        int64_t c = map[d][r % y->shape[d]];
        r /= y->shape[d];
        if (c < 0) return -1;
        off += c * stride;
        stride *= x->shape[d];
    }
    return off;
}

/* gx (+)= the rows [r0, r1) of go */
static void pad_backward_rows(const segc_tensor *x, const segc_tensor *y, const pad_saved *sv, float *gx, int64_t r0,
                              int64_t r1) {
    int ld = y->ndim - 1;
    int64_t wo = y->shape[ld], wi = x->shape[ld], lo = sv->lo[ld];
    int64_t ms, me;
    pad_middle(lo, wi, wo, &ms, &me);
    const int64_t *mw = sv->map[ld];
    for (int64_t r = r0; r < r1; r++) {
        int64_t sr = pad_src_row(y, x, sv->map, r);
        if (sr < 0) continue;
        float *restrict g = gx + sr * wi;
        const float *restrict go = y->grad + r * wo;
        for (int side = 0; side < 2; side++)
            for (int64_t j = side ? me : 0; j < (side ? wo : ms); j++)
                if (mw[j] >= 0) g[mw[j]] += go[j];
        for (int64_t j = ms; j < me; j++) g[j - lo] += go[j];
    }
}

static void pad_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0], *y = nd->out;
    const pad_saved *sv = nd->saved;
    if (!x->requires_grad || y->ndim == 0) return;
    float *gx = segc_grad(ctx, x);
    int ld = y->ndim - 1;
    int64_t rows = prod(y->shape, 0, ld);
    /* Reflect/replicate send several output rows to one input row; those rows
     * differ only in padded dims, so blocks over the leading unpadded dims
     * never collide. Constant padding is injective: any row split works. */
    int p = 0;
    while (p < ld && sv->lo[p] == 0 && x->shape[p] == y->shape[p]) p++;
    int64_t per_block = sv->mode == SEGC_PAD_CONSTANT || p >= ld ? 1 : prod(y->shape, p, ld);
    int64_t nblocks = rows / (per_block ? per_block : 1);
#pragma omp parallel for schedule(static) if (segc_numel(y) > PAR_MIN)
    for (int64_t b = 0; b < nblocks; b++) pad_backward_rows(x, y, sv, gx, b * per_block, (b + 1) * per_block);
}

segc_tensor *segc_pad(segc_ctx *ctx, segc_tensor *x, const int *pads, int n_pads, segc_pad_mode mode, float value) {
    SEGC_PROF_OP(ctx, "pad");
    if (!x) return NULL;
    char b[96];
    if (n_pads < 0 || n_pads % 2 || n_pads / 2 > x->ndim || (n_pads > 0 && !pads)) {
        segc_set_error(ctx, "pad: expected an even number of pads <= 2*ndim = %d for input %s, found %d%s", 2 * x->ndim,
                       segc_shape_str(x, b, sizeof b), n_pads, n_pads > 0 && !pads ? " (NULL pads)" : "");
        return NULL;
    }
    if (mode != SEGC_PAD_CONSTANT && mode != SEGC_PAD_REFLECT && mode != SEGC_PAD_REPLICATE) {
        segc_set_error(ctx, "pad: unknown mode %d (expected constant, reflect or replicate)", (int)mode);
        return NULL;
    }
    pad_saved *sv = segc_arena_calloc(&ctx->arena, sizeof *sv);
    sv->mode = mode;
    int64_t os[SEGC_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        int k = x->ndim - 1 - d; /* pair index: last dim first */
        int64_t lo = k < n_pads / 2 ? pads[2 * k] : 0, hi = k < n_pads / 2 ? pads[2 * k + 1] : 0, n = x->shape[d];
        sv->lo[d] = lo;
        os[d] = n + lo + hi;
        const char *why = os[d] < 0 ? "output size would be negative"
                          : mode == SEGC_PAD_REFLECT && (lo >= n || hi >= n) && (lo > 0 || hi > 0)
                              ? "reflect pads must be smaller than the dim size"
                          : mode == SEGC_PAD_REPLICATE && n == 0 && (lo > 0 || hi > 0) ? "replicate needs a non-empty dim"
                                                                                        : NULL;
        if (why) {
            segc_set_error(ctx, "pad: pads (%lld, %lld) on dim %d of size %lld in %s: %s", (long long)lo, (long long)hi, d,
                           (long long)n, segc_shape_str(x, b, sizeof b), why);
            return NULL;
        }
    }
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, x->ndim, os);
    if (!y) return NULL;
    if (x->ndim == 0) {
        memcpy(y->data, x->data, segc_nbytes(x));
    } else {
        sv->map = segc_arena_alloc(&ctx->arena, (size_t)x->ndim * sizeof *sv->map);
        for (int d = 0; d < x->ndim; d++) {
            sv->map[d] = segc_arena_alloc(&ctx->arena, (size_t)(os[d] + 1) * sizeof(int64_t));
            for (int64_t o = 0; o < os[d]; o++) sv->map[d][o] = pad_src(o, sv->lo[d], x->shape[d], mode);
        }
        unsigned char val[8];
        switch (x->dtype) {
        case SEGC_F32: memcpy(val, &value, 4); break;
        case SEGC_BF16: { uint16_t h = segc_f32_to_bf16(value); memcpy(val, &h, 2); break; }
        case SEGC_U8: val[0] = (uint8_t)value; break;
        case SEGC_I32: { int32_t v = (int32_t)value; memcpy(val, &v, 4); break; }
        default: { int64_t v = (int64_t)value; memcpy(val, &v, 8); break; }
        }
        size_t es = segc_dtype_size(x->dtype);
        int ld = x->ndim - 1;
        int64_t wo = os[ld], wi = x->shape[ld], lo = sv->lo[ld], rows = prod(os, 0, ld);
        int64_t ms, me;
        pad_middle(lo, wi, wo, &ms, &me);
        const int64_t *mw = sv->map[ld];
        const char *xd = x->data;
        char *yd = y->data;
#pragma omp parallel for schedule(static) if (segc_numel(y) > PAR_MIN)
        for (int64_t r = 0; r < rows; r++) {
            char *dr = yd + r * wo * (int64_t)es;
            int64_t sr = pad_src_row(y, x, sv->map, r);
            if (sr < 0) { fill_elems(dr, wo, val, es); continue; }
            const char *srow = xd + sr * wi * (int64_t)es;
            for (int side = 0; side < 2; side++) /* the padded edges [0, ms) and [me, wo) */
                for (int64_t j = side ? me : 0; j < (side ? wo : ms); j++) {
                    if (mw[j] < 0) memcpy(dr + j * (int64_t)es, val, es);
                    else memcpy(dr + j * (int64_t)es, srow + mw[j] * (int64_t)es, es);
                }
            memcpy(dr + ms * (int64_t)es, srow + (ms - lo) * (int64_t)es, (size_t)(me - ms) * es);
        }
    }
    if (is_float(x) && segc_needs_grad(ctx, &x, 1)) segc_record(ctx, "pad", pad_backward, y, &x, 1, sv);
    return y;
}

/* ------------------------------------------------------------ channels-last */

/* y: x's data relabelled (shape, layout), its gradient handed back unchanged */
static segc_tensor *relabel(segc_ctx *ctx, const char *op, segc_tensor *x, const int64_t *shape, bool nhwc) {
    segc_tensor *y = segc_tensor_wrap(ctx, x->dtype, 4, shape, x->data);
    if (!y) return NULL;
    y->nhwc = nhwc;
    if (segc_needs_grad(ctx, &x, 1)) segc_record(ctx, op, view_backward, y, &x, 1, NULL);
    return y;
}

segc_tensor *segc_to_channels_last(segc_ctx *ctx, segc_tensor *x) {
    if (!x) return NULL;
    if (x->nhwc) return x;
    if (!segc_check_float(ctx, "to_channels_last", "x", x) || !segc_check_ndim(ctx, "to_channels_last", "x", x, 4))
        return NULL;
    segc_tensor *p = segc_permute(ctx, x, (const int[]){0, 2, 3, 1});
    return p ? relabel(ctx, "to_channels_last", p, x->shape, true) : NULL;
}

segc_tensor *segc_to_channels_first(segc_ctx *ctx, segc_tensor *x) {
    if (!x || !x->nhwc) return x;
    segc_tensor *v = relabel(ctx, "to_channels_first", x, (const int64_t[]){x->shape[0], x->shape[2], x->shape[3], x->shape[1]},
                             false);
    return v ? segc_permute(ctx, v, (const int[]){0, 3, 1, 2}) : NULL;
}
