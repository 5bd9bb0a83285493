/* Broadcast reduction engine (sums over the dims where the destination
 * broadcasts) and the sum / mean ops built on it.
 *
 * The engine serves two needs: gradients of broadcasting binary ops (reduce
 * grad * other back to an input's shape) and sum/mean forward; with a
 * destination as large as the iteration space (nothing to reduce) it also
 * does the broadcast-expand of sum/mean backward. Work is split into units
 * fixed by the shapes alone (destination blocks x chunks of the reduced
 * range), each summed in double in a fixed order, and chunk partials are
 * added in chunk order: results are identical for any thread count. */
/* FP exception flags are never read: let GCC if-convert selects next to
 * float arithmetic (the clamps in segc_vexpf, activation selects), which
 * -ftrapping-math would keep as branches and so unvectorised. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <omp.h>
#include <stdio.h>

#include "segc/ops.h"
#include "segc/profile.h"

#define PAR_MIN 32768 /* elements below which threads cost more than they save */
#define COLS 256      /* destination columns per unit when the innermost dim is kept */
#define LANES 16      /* independent double accumulators for contiguous sums */

/* v[c] = s[c*ss] (op w[c*sw]) for c < n, strides in {0, 1} */
#define VALUE_LOOPS(EXPR)                                                                   \
    do {                                                                                    \
        if (ss && sw) {                                                                     \
            _Pragma("omp simd") for (int64_t c = 0; c < n; c++) {                           \
                float x = s[c], y = w[c];                                                   \
                v[c] = (EXPR);                                                              \
            }                                                                               \
        } else if (ss) {                                                                    \
            float y = w[0];                                                                 \
            _Pragma("omp simd") for (int64_t c = 0; c < n; c++) {                           \
                float x = s[c];                                                             \
                v[c] = (EXPR);                                                              \
            }                                                                               \
        } else if (sw) {                                                                    \
            float x = s[0];                                                                 \
            _Pragma("omp simd") for (int64_t c = 0; c < n; c++) {                           \
                float y = w[c];                                                             \
                v[c] = (EXPR);                                                              \
            }                                                                               \
        } else {                                                                            \
            float x = s[0], y = w[0], val = (EXPR);                                         \
            for (int64_t c = 0; c < n; c++) v[c] = val;                                     \
        }                                                                                   \
    } while (0)

static void values(int mode, const float *s, int64_t ss, const float *w, int64_t sw, float *v, int64_t n) {
    if (mode == SEGC_W_NONE) {
        if (ss) memcpy(v, s, (size_t)n * sizeof(float));
        else for (int64_t c = 0; c < n; c++) v[c] = s[0];
    } else if (mode == SEGC_W_MUL) {
        VALUE_LOOPS(x * y);
    } else {
        VALUE_LOOPS(x / y);
    }
}

/* acc[l] += v[c] for c = l (mod LANES), v from contiguous s (and w) as values() */
static void lanes_add(int mode, const float *s, const float *w, int64_t n, double *acc) {
    int64_t c = 0;
    if (mode == SEGC_W_NONE) {
        for (; c + LANES <= n; c += LANES)
#pragma omp simd
            for (int l = 0; l < LANES; l++) acc[l] += (double)s[c + l];
    } else if (mode == SEGC_W_MUL) {
        for (; c + LANES <= n; c += LANES)
#pragma omp simd
            for (int l = 0; l < LANES; l++) acc[l] += (double)(s[c + l] * w[c + l]);
    } else {
        for (; c + LANES <= n; c += LANES)
#pragma omp simd
            for (int l = 0; l < LANES; l++) acc[l] += (double)(s[c + l] / w[c + l]);
    }
    for (int l = 0; c < n; c++, l++) {
        float v = mode == SEGC_W_NONE ? s[c] : mode == SEGC_W_MUL ? s[c] * w[c] : s[c] / w[c];
        acc[l] += (double)v;
    }
}

/* acc[c] += v[c] for one row of contiguous s (and w) */
static void row_add(int mode, const float *s, const float *w, int64_t n, double *acc) {
    if (mode == SEGC_W_NONE) {
#pragma omp simd
        for (int64_t c = 0; c < n; c++) acc[c] += (double)s[c];
    } else if (mode == SEGC_W_MUL) {
#pragma omp simd
        for (int64_t c = 0; c < n; c++) acc[c] += (double)(s[c] * w[c]);
    } else {
#pragma omp simd
        for (int64_t c = 0; c < n; c++) acc[c] += (double)(s[c] / w[c]);
    }
}

/* n source values at off with stride ss in {0, 1} as f32: the f32 source itself, or the bf16
 * source (src16) widened into buf (n <= COLS) */
static const float *src_at(const segc_bcast_reduce_args *r, int64_t off, int64_t ss, int64_t n, float *buf) {
    if (!r->src16) return r->src + off;
    if (ss) segc_ew_load_bf16(r->src16 + off, buf, n);
    else buf[0] = segc_bf16_to_f32(r->src16[off]);
    return buf;
}

/* multi-index of flat over a subset of the plan dims, and the offsets it gives */
typedef struct {
    int n;
    int dim[SEGC_MAX_DIMS];
    int64_t idx[SEGC_MAX_DIMS];
} walker;

static void walker_set(walker *wk, const segc_bcast *p, int64_t flat) {
    for (int i = wk->n - 1; i >= 0; i--) {
        int64_t size = p->shape[wk->dim[i]];
        wk->idx[i] = flat % size;
        flat /= size;
    }
}
static int64_t walker_off(const walker *wk, const segc_bcast *p, int slot) {
    int64_t off = 0;
    for (int i = 0; i < wk->n; i++) off += wk->idx[i] * p->stride[slot][wk->dim[i]];
    return off;
}
/* advance by step along the last walked dim (step never crosses its end) */
static void walker_step(walker *wk, const segc_bcast *p, int64_t step) {
    int i = wk->n - 1;
    if (i < 0) return;
    wk->idx[i] += step;
    for (; i > 0 && wk->idx[i] == p->shape[wk->dim[i]]; i--) {
        wk->idx[i] = 0;
        wk->idx[i - 1]++;
    }
}

static inline float finish(const segc_bcast_reduce_args *r, int64_t j, double sum) {
    double v = r->scale * sum;
    if (r->div_sq) v /= (double)r->div_sq[j] * (double)r->div_sq[j];
    return r->accumulate ? r->dst[j] + (float)v : (float)v;
}

typedef struct {
    const segc_bcast *p;
    const segc_bcast_reduce_args *r;
    walker kept, red;        /* kept: dst dims (innermost excluded when it is kept); red: summed dims */
    bool inner_kept;
    int64_t T, R, L, nblk, S; /* dst elements, reduced count, innermost size, column blocks, chunks */
    double *part;            /* [S][T] chunk partials when S > 1 */
} job;

/* Innermost dim kept: unit = (outer kept combo, column block, chunk). */
static void unit_cols(const job *jb, int64_t unit) {
    const segc_bcast *p = jb->p;
    const segc_bcast_reduce_args *r = jb->r;
    int last = p->nd - 1;
    int64_t chunk = unit % jb->S, item = unit / jb->S;
    int64_t c0 = (item % jb->nblk) * COLS, cw = jb->L - c0 < COLS ? jb->L - c0 : COLS;
    walker kept = jb->kept, red = jb->red;
    walker_set(&kept, p, item / jb->nblk);
    int64_t ss = p->stride[r->src_slot][last], sw = r->w ? p->stride[r->w_slot][last] : 0;
    int64_t ks = walker_off(&kept, p, r->src_slot) + c0 * ss;
    int64_t kw = r->w ? walker_off(&kept, p, r->w_slot) + c0 * sw : 0;
    int64_t kd = walker_off(&kept, p, r->dst_slot) + c0;
    float v[COLS], sb[COLS];
    if (jb->R == 1) { /* nothing to sum: elementwise in f32 */
        values(r->w_mode, src_at(r, ks, ss, cw, sb), ss, r->w ? r->w + kw : NULL, sw, v, cw);
        float *d = r->dst + kd;
        if (!r->div_sq && r->scale == 1.0f) {
            if (r->accumulate) {
#pragma omp simd
                for (int64_t c = 0; c < cw; c++) d[c] += v[c];
            } else {
                memcpy(d, v, (size_t)cw * sizeof(float));
            }
        } else {
            for (int64_t c = 0; c < cw; c++) d[c] = finish(r, kd + c, v[c]);
        }
        return;
    }
    double acc[COLS];
    for (int64_t c = 0; c < cw; c++) acc[c] = 0.0;
    bool direct = ss == 1 && (r->w_mode == SEGC_W_NONE || sw == 1); /* no staging through v */
    int64_t r0 = chunk * jb->R / jb->S, r1 = (chunk + 1) * jb->R / jb->S;
    walker_set(&red, p, r0);
    for (int64_t q = r0; q < r1; q++) {
        int64_t os = ks + walker_off(&red, p, r->src_slot);
        int64_t ow = r->w ? kw + walker_off(&red, p, r->w_slot) : 0;
        if (direct) {
            row_add(r->w_mode, src_at(r, os, ss, cw, sb), r->w ? r->w + ow : NULL, cw, acc);
        } else {
            values(r->w_mode, src_at(r, os, ss, cw, sb), ss, r->w ? r->w + ow : NULL, sw, v, cw);
#pragma omp simd
            for (int64_t c = 0; c < cw; c++) acc[c] += (double)v[c];
        }
        walker_step(&red, p, 1);
    }
    if (jb->S > 1) {
        double *pt = jb->part + chunk * jb->T + kd;
        for (int64_t c = 0; c < cw; c++) pt[c] = acc[c];
    } else {
        for (int64_t c = 0; c < cw; c++) r->dst[kd + c] = finish(r, kd + c, acc[c]);
    }
}

/* Innermost dim reduced: unit = (dst element, chunk); the reduced range walks
 * contiguous stretches of the innermost dim. */
static void unit_rows(const job *jb, int64_t unit) {
    const segc_bcast *p = jb->p;
    const segc_bcast_reduce_args *r = jb->r;
    int last = p->nd - 1;
    int64_t chunk = unit % jb->S, item = unit / jb->S;
    walker kept = jb->kept, red = jb->red;
    walker_set(&kept, p, item);
    int64_t ks = walker_off(&kept, p, r->src_slot), kw = r->w ? walker_off(&kept, p, r->w_slot) : 0;
    int64_t kd = walker_off(&kept, p, r->dst_slot);
    int64_t ss = p->stride[r->src_slot][last], sw = r->w ? p->stride[r->w_slot][last] : 0;
    double acc[LANES] = {0};
    float v[COLS], sb[COLS];
    bool direct = ss == 1 && (r->w_mode == SEGC_W_NONE || sw == 1); /* no staging through v */
    int64_t r0 = chunk * jb->R / jb->S, r1 = (chunk + 1) * jb->R / jb->S;
    walker_set(&red, p, r0);
    for (int64_t q = r0; q < r1;) {
        int64_t run = jb->L - red.idx[red.n - 1];
        if (run > r1 - q) run = r1 - q;
        int64_t os = ks + walker_off(&red, p, r->src_slot);
        int64_t ow = r->w ? kw + walker_off(&red, p, r->w_slot) : 0;
        if (direct) {
            if (!r->src16) {
                lanes_add(r->w_mode, r->src + os, r->w ? r->w + ow : NULL, run, acc);
            } else {   /* bf16 source: widened COLS at a time (a multiple of LANES: the same lanes) */
                for (int64_t b = 0; b < run; b += COLS) {
                    int64_t n = run - b < COLS ? run - b : COLS;
                    lanes_add(r->w_mode, src_at(r, os + b, 1, n, sb), r->w ? r->w + ow + b : NULL, n, acc);
                }
            }
            q += run;
            walker_step(&red, p, run);
            continue;
        }
        for (int64_t b = 0; b < run; b += COLS) {
            int64_t n = run - b < COLS ? run - b : COLS;
            values(r->w_mode, src_at(r, os + b * ss, ss, n, sb), ss, r->w ? r->w + ow + b * sw : NULL, sw, v, n);
            int64_t c = 0;
            for (; c + LANES <= n; c += LANES) {
#pragma omp simd
                for (int l = 0; l < LANES; l++) acc[l] += (double)v[c + l];
            }
            for (int l = 0; c < n; c++, l++) acc[l] += (double)v[c];
        }
        q += run;
        walker_step(&red, p, run);
    }
    /* fixed pairwise combination of the lanes */
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; l++) acc[l] += acc[l + width];
    if (jb->S > 1) jb->part[chunk * jb->T + kd] = acc[0];
    else r->dst[kd] = finish(r, kd, acc[0]);
}

void segc_bcast_reduce(segc_ctx *ctx, const segc_bcast *p, const segc_bcast_reduce_args *r) {
    job jb = {.p = p, .r = r, .T = 1, .R = 1};
    int nd = p->nd, last = nd - 1;
    const int64_t *ds = p->stride[r->dst_slot];
    jb.inner_kept = ds[last] != 0 || p->shape[last] == 1;
    for (int d = 0; d < nd; d++) {
        bool kept = ds[d] != 0 || p->shape[d] == 1;
        if (kept) {
            jb.T *= p->shape[d];
            if (!(jb.inner_kept && d == last)) jb.kept.dim[jb.kept.n++] = d;
        } else {
            jb.R *= p->shape[d];
            jb.red.dim[jb.red.n++] = d;
        }
    }
    if (jb.T == 0) return;
    if (jb.R == 0) { /* empty sums */
        for (int64_t j = 0; j < jb.T; j++) r->dst[j] = finish(r, j, 0.0);
        return;
    }
    jb.L = p->shape[last];
    jb.nblk = jb.inner_kept ? (jb.L + COLS - 1) / COLS : 1;
    int64_t items = jb.inner_kept ? (jb.T / jb.L) * jb.nblk : jb.T;
    int64_t total = jb.T * jb.R;
    /* split the reduced range when there are too few items to share out */
    jb.S = 1;
    if (items < 32 && total >= 2 * PAR_MIN) {
        int64_t want = (32 + items - 1) / items, cap = total / PAR_MIN;
        jb.S = want < cap ? want : cap;
        if (jb.S > jb.R) jb.S = jb.R;
        if (jb.S < 1) jb.S = 1;
    }
    if (jb.S > 1) jb.part = segc_arena_alloc(&ctx->arena, (size_t)(jb.S * jb.T) * sizeof(double));
    int64_t units = items * jb.S;
#pragma omp parallel for schedule(static) if (total > PAR_MIN && units > 1)
    for (int64_t u = 0; u < units; u++) {
        if (jb.inner_kept) unit_cols(&jb, u);
        else unit_rows(&jb, u);
    }
    if (jb.S > 1) {
#pragma omp parallel for schedule(static) if (jb.T > PAR_MIN)
        for (int64_t j = 0; j < jb.T; j++) {
            double s = 0.0;
            for (int64_t c = 0; c < jb.S; c++) s += jb.part[c * jb.T + j];
            r->dst[j] = finish(r, j, s);
        }
    }
}

/* ------------------------------------------------------------ sum / mean */

typedef struct {
    segc_bcast plan; /* slot 0: x's shape; slots 1, 2: the kept (keepdim) shape */
    double scale;
} reduce_saved;

static void reduce_backward(segc_ctx *ctx, segc_node *nd) {
    const reduce_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0];
    bool fresh;
    segc_bcast_reduce_args r = {.src = nd->out->grad, .src_slot = 1, .w_mode = SEGC_W_NONE, .dst_slot = 0,
                                .scale = sv->scale};
    r.dst = segc_ew_grad_dst(ctx, x, &fresh);
    r.accumulate = !fresh;
    segc_bcast_reduce(ctx, &sv->plan, &r);
}

static segc_tensor *reduce_op(segc_ctx *ctx, const char *name, bool mean, segc_tensor *x, const int *dims,
                              int n_dims, bool keepdim) {
    SEGC_PROF_OP(ctx, name);
    if (!x) return NULL;
    if (!segc_check_float(ctx, name, "x", x)) return NULL;
    char sb[96];
    if (n_dims < 0 || n_dims > x->ndim || (n_dims > 0 && !dims)) {
        segc_set_error(ctx, "%s: expected 0..%d dims for input %s, found n_dims %d%s", name, x->ndim,
                       segc_shape_str(x, sb, sizeof sb), n_dims, n_dims > 0 && !dims ? " with a NULL list" : "");
        return NULL;
    }
    bool reduced[SEGC_MAX_DIMS] = {false};
    for (int i = 0; i < n_dims; i++) {
        int d = dims[i] < 0 ? dims[i] + x->ndim : dims[i];
        if (d < 0 || d >= x->ndim) {
            segc_set_error(ctx, "%s: dim %d out of range for %d-D input %s (expected %d..%d)", name, dims[i],
                           x->ndim, segc_shape_str(x, sb, sizeof sb), -x->ndim, x->ndim - 1);
            return NULL;
        }
        if (reduced[d]) {
            segc_set_error(ctx, "%s: dim %d listed twice for input %s", name, dims[i], segc_shape_str(x, sb, sizeof sb));
            return NULL;
        }
        reduced[d] = true;
    }
    int64_t kshape[SEGC_MAX_DIMS], oshape[SEGC_MAX_DIMS], count = 1;
    int ond = 0;
    for (int d = 0; d < x->ndim; d++) {
        bool red = n_dims == 0 || reduced[d];
        kshape[d] = red ? 1 : x->shape[d];
        if (red) count *= x->shape[d];
        if (keepdim || !red) oshape[ond++] = kshape[d];
    }
    segc_tensor *y = segc_tensor_new(ctx, x->dtype, ond, oshape);
    if (!y) return NULL;
    reduce_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    segc_bcast_plan(&sv->plan, x->ndim, x->shape, x->ndim, kshape, x->ndim, kshape);
    sv->scale = mean ? 1.0 / (double)count : 1.0;
    if (mean && count == 0) sv->scale = NAN; /* mean of nothing, as PyTorch */
    segc_bcast_reduce_args r = {.src = segc_as_f32(ctx, x), .src_slot = 0, .w_mode = SEGC_W_NONE, .dst_slot = 1,
                                .scale = sv->scale};
    float *acc = x->dtype == SEGC_F32 ? segc_f32(y) : segc_arena_alloc(&ctx->arena, (size_t)segc_numel(y) * sizeof(float));
    r.dst = acc;
    segc_bcast_reduce(ctx, &sv->plan, &r);
    segc_store_f32(y, acc);
    if (!segc_check_finite_out(ctx, name, y)) return NULL;
    if (segc_needs_grad(ctx, &x, 1)) segc_record(ctx, name, reduce_backward, y, &x, 1, sv);
    return y;
}

segc_tensor *segc_sum(segc_ctx *ctx, segc_tensor *x, const int *dims, int n_dims, bool keepdim) {
    return reduce_op(ctx, "sum", false, x, dims, n_dims, keepdim);
}
segc_tensor *segc_mean(segc_ctx *ctx, segc_tensor *x, const int *dims, int n_dims, bool keepdim) {
    return reduce_op(ctx, "mean", true, x, dims, n_dims, keepdim);
}
