/* Broadcasting binary ops (add/sub/mul/div), scalar ops, copy and fill.
 *
 * A broadcast plan collapses the operands' shapes into at most a few merged
 * dims with element strides (0 where an operand broadcasts); the forward pass
 * then walks the flat output in per-thread ranges and runs a vector loop over
 * each stretch of the innermost dim, where each input is either contiguous or
 * a single repeated value. Gradients are reduced back to each input's shape
 * by segc_bcast_reduce (reduce.c). */
/* FP exception flags are never read: let GCC if-convert selects next to
 * float arithmetic (the clamps in segc_vexpf, activation selects), which
 * -ftrapping-math would keep as branches and so unvectorised. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <omp.h>
#include <stdio.h>

#include "segc/ops.h"
#include "segc/profile.h"

#define PAR_MIN 32768  /* elements below which threads cost more than they save */
#define BF16_CHUNK 512 /* bf16 values converted to f32 per stack block */

/* ---------------------------------------------------------------- plans */

bool segc_bcast_shape(int nda, const int64_t *sa, int ndb, const int64_t *sb, int *nd_out, int64_t *out) {
    int n = nda > ndb ? nda : ndb;
    for (int i = 0; i < n; i++) {
        int64_t da = i < n - nda ? 1 : sa[i - (n - nda)];
        int64_t db = i < n - ndb ? 1 : sb[i - (n - ndb)];
        if (da != db && da != 1 && db != 1) return false;
        out[i] = da == 1 ? db : da;
    }
    *nd_out = n;
    return true;
}

/* row-major strides of an operand right-aligned to the output, 0 where it broadcasts */
static void aligned_strides(int nd, const int64_t *out_shape, int ndk, const int64_t *sk, int64_t *st) {
    int64_t run = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int j = i - (nd - ndk);
        int64_t size = j >= 0 ? sk[j] : 1;
        st[i] = (size == out_shape[i] && size != 1) ? run : 0;
        run *= size;
    }
}

void segc_bcast_plan(segc_bcast *p, int nd, const int64_t *out_shape, int nda, const int64_t *sa, int ndb,
                     const int64_t *sb) {
    int64_t st[3][SEGC_MAX_DIMS];
    aligned_strides(nd, out_shape, nd, out_shape, st[0]);
    aligned_strides(nd, out_shape, nda, sa, st[1]);
    aligned_strides(nd, out_shape, ndb, sb, st[2]);
    memset(p, 0, sizeof *p);
    p->numel = 1;
    for (int i = 0; i < nd; i++) p->numel *= out_shape[i];
    int m = 0;
    for (int i = 0; i < nd; i++) {
        if (out_shape[i] == 1) continue;
        bool merge = m > 0;
        for (int k = 0; k < 3 && merge; k++) merge = st[k][m - 1] == st[k][i] * out_shape[i];
        if (merge) {
            p->shape[m - 1] *= out_shape[i];
            for (int k = 0; k < 3; k++) p->stride[k][m - 1] = st[k][i];
        } else {
            p->shape[m] = out_shape[i];
            for (int k = 0; k < 3; k++) p->stride[k][m] = st[k][i];
            m++;
        }
    }
    if (m == 0) { /* a single element (or scalar shapes): one dim of size 1 */
        p->shape[0] = 1;
        m = 1;
    }
    p->nd = m;
}

/* -------------------------------------------------------- forward kernels */

typedef enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV } binop;
static const char *const binop_names[] = {"add", "sub", "mul", "div"};

/* o[i] = a[i*sa] op b[i*sb] with sa, sb in {0, 1} */
#define BIN_LOOPS(EXPR)                                                                        \
    do {                                                                                       \
        if (sa && sb) {                                                                        \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                              \
                float x = a[i], y = b[i];                                                      \
                o[i] = (EXPR);                                                                 \
            }                                                                                  \
        } else if (sa) {                                                                       \
            float y = b[0];                                                                    \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                              \
                float x = a[i];                                                                \
                o[i] = (EXPR);                                                                 \
            }                                                                                  \
        } else if (sb) {                                                                       \
            float x = a[0];                                                                    \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                              \
                float y = b[i];                                                                \
                o[i] = (EXPR);                                                                 \
            }                                                                                  \
        } else {                                                                               \
            float x = a[0], y = b[0], v = (EXPR);                                              \
            for (int64_t i = 0; i < n; i++) o[i] = v;                                          \
        }                                                                                      \
    } while (0)

static void bin_run_f32(binop op, const float *a, int64_t sa, const float *b, int64_t sb, float *o, int64_t n) {
    switch (op) {
    case BIN_ADD: BIN_LOOPS(x + y); break;
    case BIN_SUB: BIN_LOOPS(x - y); break;
    case BIN_MUL: BIN_LOOPS(x * y); break;
    case BIN_DIV: BIN_LOOPS(x / y); break;
    }
}

/* bf16 in and out, f32 arithmetic, conversions fused into the loops */
#define BIN_LOOPS_BF16(EXPR)                                                                   \
    do {                                                                                       \
        if (sa && sb) {                                                                        \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                              \
                float x = segc_bf16_to_f32(a[i]), y = segc_bf16_to_f32(b[i]);                  \
                o[i] = segc_f32_to_bf16(EXPR);                                                 \
            }                                                                                  \
        } else if (sa) {                                                                       \
            float y = segc_bf16_to_f32(b[0]);                                                  \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                              \
                float x = segc_bf16_to_f32(a[i]);                                              \
                o[i] = segc_f32_to_bf16(EXPR);                                                 \
            }                                                                                  \
        } else if (sb) {                                                                       \
            float x = segc_bf16_to_f32(a[0]);                                                  \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                              \
                float y = segc_bf16_to_f32(b[i]);                                              \
                o[i] = segc_f32_to_bf16(EXPR);                                                 \
            }                                                                                  \
        } else {                                                                               \
            float x = segc_bf16_to_f32(a[0]), y = segc_bf16_to_f32(b[0]);                      \
            uint16_t v = segc_f32_to_bf16(EXPR);                                               \
            for (int64_t i = 0; i < n; i++) o[i] = v;                                          \
        }                                                                                      \
    } while (0)

#ifdef __AVX2__
/* the contiguous part, 16 lanes at a time with the same IEEE operation; returns how far it got */
#define BIN_VEC_BF16(VOP)                                                                      \
    do {                                                                                       \
        const __m256 xs = _mm256_set1_ps(segc_bf16_to_f32(a[0])), ys = _mm256_set1_ps(segc_bf16_to_f32(b[0])); \
        for (; i + 16 <= n; i += 16) {                                                         \
            __m256 x0 = sa ? segc_ew_bf16x8_load(a + i) : xs, x1 = sa ? segc_ew_bf16x8_load(a + i + 8) : xs; \
            __m256 y0 = sb ? segc_ew_bf16x8_load(b + i) : ys, y1 = sb ? segc_ew_bf16x8_load(b + i + 8) : ys; \
            segc_ew_bf16x16_store(o + i, VOP(x0, y0), VOP(x1, y1));                            \
        }                                                                                      \
    } while (0)
static int64_t bin_vec_bf16(binop op, const uint16_t *a, int64_t sa, const uint16_t *b, int64_t sb, uint16_t *o,
                            int64_t n) {
    int64_t i = 0;
    if (!sa && !sb) return 0;
    switch (op) {
    case BIN_ADD: BIN_VEC_BF16(_mm256_add_ps); break;
    case BIN_SUB: BIN_VEC_BF16(_mm256_sub_ps); break;
    case BIN_MUL: BIN_VEC_BF16(_mm256_mul_ps); break;
    case BIN_DIV: BIN_VEC_BF16(_mm256_div_ps); break;
    }
    return i;
}
#endif

static void bin_run_bf16(binop op, const uint16_t *a, int64_t sa, const uint16_t *b, int64_t sb, uint16_t *o,
                         int64_t n) {
#ifdef __AVX2__
    int64_t done = bin_vec_bf16(op, a, sa, b, sb, o, n);
    a += sa ? done : 0;
    b += sb ? done : 0;
    o += done;
    n -= done;
#endif
    switch (op) {
    case BIN_ADD: BIN_LOOPS_BF16(x + y); break;
    case BIN_SUB: BIN_LOOPS_BF16(x - y); break;
    case BIN_MUL: BIN_LOOPS_BF16(x * y); break;
    case BIN_DIV: BIN_LOOPS_BF16(x / y); break;
    }
}

/* output elements [s, e) of the plan, one innermost stretch at a time */
static void bin_range(const segc_bcast *p, binop op, bool bf16, const void *a, const void *b, void *o, int64_t s,
                      int64_t e) {
    int nd = p->nd;
    int64_t idx[SEGC_MAX_DIMS], rem = s;
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = rem % p->shape[d];
        rem /= p->shape[d];
    }
    int64_t inner = p->shape[nd - 1], sa = p->stride[1][nd - 1], sb = p->stride[2][nd - 1];
    for (int64_t pos = s; pos < e;) {
        int64_t oa = 0, ob = 0;
        for (int d = 0; d < nd; d++) {
            oa += idx[d] * p->stride[1][d];
            ob += idx[d] * p->stride[2][d];
        }
        int64_t run = inner - idx[nd - 1];
        if (run > e - pos) run = e - pos;
        if (bf16)
            bin_run_bf16(op, (const uint16_t *)a + oa, sa, (const uint16_t *)b + ob, sb, (uint16_t *)o + pos, run);
        else
            bin_run_f32(op, (const float *)a + oa, sa, (const float *)b + ob, sb, (float *)o + pos, run);
        pos += run;
        idx[nd - 1] += run;
        for (int d = nd - 1; d > 0 && idx[d] == p->shape[d]; d--) {
            idx[d] = 0;
            idx[d - 1]++;
        }
    }
}

static void bin_forward(const segc_bcast *p, binop op, bool bf16, const void *a, const void *b, void *o) {
    int64_t n = p->numel;
#pragma omp parallel if (n > PAR_MIN)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t per = ((n + nt - 1) / nt + 63) / 64 * 64; /* whole cache lines per thread */
        int64_t s = (int64_t)t * per, e = s + per;
        if (s > n) s = n;
        if (e > n) e = n;
        if (s < e) bin_range(p, op, bf16, a, b, o, s, e);
    }
}

/* -------------------------------------------------------------- binary ops */

typedef struct {
    binop op;
    segc_bcast plan;
} bin_saved;

void segc_ew_put_grad_bf16_n(float *v, uint16_t *g, int64_t n, bool fresh) {
    const int64_t chunk = 16384, nch = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t c = 0; c < nch; c++)
        segc_ew_put_grad_bf16(v + c * chunk, g + c * chunk, n - c * chunk < chunk ? n - c * chunk : chunk, fresh);
}

/* a bf16 gradient gx16 (+)= scale * g16, same shape (add / sub pass-through) */
static void copy_bf16_grad(const uint16_t *g16, uint16_t *gx16, float scale, bool fresh, int64_t n) {
    if (fresh && scale == 1.0f) {
        memcpy(gx16, g16, (size_t)n * sizeof *gx16);
    } else if (fresh) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) gx16[i] = g16[i] ^ 0x8000u;   /* scale -1: exact */
    } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            gx16[i] = segc_f32_to_bf16(segc_bf16_to_f32(gx16[i]) + scale * segc_bf16_to_f32(g16[i]));
    }
}

static void bin_backward(segc_ctx *ctx, segc_node *nd) {
    const bin_saved *sv = nd->saved;
    segc_tensor *a = nd->in[0], *b = nd->in[1];
    const float *go = nd->out->grad;
    const uint16_t *go16 = nd->out->grad_bf16;   /* ctx->bf16_grads: instead of go */
    for (int k = 0; k < 2; k++) {
        segc_tensor *t = nd->in[k], *other = nd->in[1 - k];
        if (!t->requires_grad) continue;
        bool same = sv->plan.numel == segc_numel(t);
        /* a same-shape addend passes the output gradient through untouched */
        if (k == 0 && (sv->op == BIN_ADD || sv->op == BIN_SUB) && same &&
            (go16 ? segc_grad_bf16_alias(ctx, t, go16) : segc_ew_grad_alias(ctx, t, go)))
            continue;
        segc_bcast_reduce_args r = {.src = go, .src16 = go16, .src_slot = 0, .dst_slot = 1 + k, .scale = 1.0f,
                                    .w_slot = 2 - k, .w_mode = SEGC_W_NONE};
        switch (sv->op) {
        case BIN_ADD: break;
        case BIN_SUB: if (k == 1) r.scale = -1.0f; break;
        case BIN_MUL:
            r.w = segc_as_f32(ctx, other);
            r.w_mode = SEGC_W_MUL;
            break;
        case BIN_DIV:
            if (k == 0) { /* d(a/b)/da = 1/b */
                r.w = segc_as_f32(ctx, b);
                r.w_mode = SEGC_W_DIV;
            } else { /* d(a/b)/db = -a/b^2; b is constant along its own broadcast dims */
                r.w = segc_as_f32(ctx, a);
                r.w_mode = SEGC_W_MUL;
                r.scale = -1.0f;
                r.div_sq = segc_as_f32(ctx, b);
            }
            break;
        }
        bool fresh;
        uint16_t *gx16 = segc_grad_bf16_dst(ctx, t, &fresh);
        if (gx16 && go16 && same && r.w_mode == SEGC_W_NONE) {
            copy_bf16_grad(go16, gx16, (float)r.scale, fresh, segc_numel(t));
            continue;
        }
        if (gx16 && same && r.w_mode == SEGC_W_NONE) {   /* f32 upstream: rounded in one pass */
            int64_t n = segc_numel(t);
            float sc = (float)r.scale;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
            for (int64_t i = 0; i < n; i++)
                gx16[i] = segc_f32_to_bf16(fresh ? sc * go[i] : segc_bf16_to_f32(gx16[i]) + sc * go[i]);
            continue;
        }
        if (gx16) {   /* reduced in f32 into a temporary, then rounded once into the bf16 gradient */
            int64_t n = segc_numel(t);
            segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
            r.dst = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof(float));
            r.accumulate = false;
            segc_bcast_reduce(ctx, &sv->plan, &r);
            segc_ew_put_grad_bf16_n(r.dst, gx16, n, fresh);
            segc_arena_rewind(&ctx->arena, mark);
            continue;
        }
        r.dst = segc_ew_grad_dst(ctx, t, &fresh);
        r.accumulate = !fresh;
        segc_bcast_reduce(ctx, &sv->plan, &r);
    }
}

static segc_tensor *binary(segc_ctx *ctx, binop op, segc_tensor *a, segc_tensor *b) {
    if (!a || !b) return NULL;
    const char *name = binop_names[op];
    SEGC_PROF_OP(ctx, name);
    if (!segc_check_float(ctx, name, "a", a) || !segc_check_float(ctx, name, "b", b)) return NULL;
    char sa[96], sb[96];
    if (a->dtype != b->dtype) {
        segc_set_error(ctx, "%s: a and b must share a dtype, found %s %s and %s %s", name, segc_dtype_name(a->dtype),
                       segc_shape_str(a, sa, sizeof sa), segc_dtype_name(b->dtype), segc_shape_str(b, sb, sizeof sb));
        return NULL;
    }
    int nd;
    int64_t shape[SEGC_MAX_DIMS];
    if (!segc_bcast_shape(a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) {
        segc_set_error(ctx, "%s: shapes %s and %s are not broadcastable (sizes must match or be 1)", name,
                       segc_shape_str(a, sa, sizeof sa), segc_shape_str(b, sb, sizeof sb));
        return NULL;
    }
    segc_tensor *y = segc_tensor_new(ctx, a->dtype, nd, shape);
    if (!y) return NULL;
    bin_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
    sv->op = op;
    segc_bcast_plan(&sv->plan, nd, shape, a->ndim, a->shape, b->ndim, b->shape);
    bin_forward(&sv->plan, op, a->dtype == SEGC_BF16, a->data, b->data, y->data);
    if (!segc_check_finite_out(ctx, name, y)) return NULL;
    segc_tensor *ins[2] = {a, b};
    if (segc_needs_grad(ctx, ins, 2)) segc_node_reads_bf16_grad(segc_record(ctx, name, bin_backward, y, ins, 2, sv));
    return y;
}

segc_tensor *segc_add(segc_ctx *ctx, segc_tensor *a, segc_tensor *b) { return binary(ctx, BIN_ADD, a, b); }
segc_tensor *segc_sub(segc_ctx *ctx, segc_tensor *a, segc_tensor *b) { return binary(ctx, BIN_SUB, a, b); }
segc_tensor *segc_mul(segc_ctx *ctx, segc_tensor *a, segc_tensor *b) { return binary(ctx, BIN_MUL, a, b); }
segc_tensor *segc_div(segc_ctx *ctx, segc_tensor *a, segc_tensor *b) { return binary(ctx, BIN_DIV, a, b); }

/* -------------------------------------------------------------- scalar ops */

typedef struct {
    bool is_mul;
    float s;
} scalar_saved;

static void scalar_f32(bool is_mul, float s, const float *x, float *y, int64_t n) {
    if (is_mul) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * s;
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] + s;
    }
}

static void scalar_backward(segc_ctx *ctx, segc_node *nd) {
    const scalar_saved *sv = nd->saved;
    segc_tensor *x = nd->in[0];
    if (!sv->is_mul && segc_ew_grad_alias(ctx, x, nd->out->grad)) return;
    bool fresh;
    float *gx = segc_ew_grad_dst(ctx, x, &fresh);
    const float *go = nd->out->grad;
    float m = sv->is_mul ? sv->s : 1.0f;
    int64_t n = segc_numel(x);
    if (fresh) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) gx[i] = m * go[i];
    } else {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) gx[i] += m * go[i];
    }
}

static segc_tensor *scalar_op(segc_ctx *ctx, const char *name, segc_tensor *x, bool is_mul, float s) {
    SEGC_PROF_OP(ctx, name);
    if (!x) return NULL;
    if (!segc_check_float(ctx, name, "x", x)) return NULL;
    segc_tensor *y = segc_tensor_like(ctx, x);
    int64_t n = segc_numel(x);
    int64_t nblk = (n + BF16_CHUNK - 1) / BF16_CHUNK;
    bool bf16 = x->dtype == SEGC_BF16;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t off = blk * BF16_CHUNK, m = n - off < BF16_CHUNK ? n - off : BF16_CHUNK;
        if (bf16) {
            float buf[BF16_CHUNK];
            segc_ew_load_bf16(segc_bf16p(x) + off, buf, m);
            scalar_f32(is_mul, s, buf, buf, m);
            segc_ew_store_bf16(buf, segc_bf16p(y) + off, m);
        } else {
            scalar_f32(is_mul, s, segc_f32(x) + off, segc_f32(y) + off, m);
        }
    }
    if (!segc_check_finite_out(ctx, name, y)) return NULL;
    if (segc_needs_grad(ctx, &x, 1)) {
        scalar_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        sv->is_mul = is_mul;
        sv->s = s;
        segc_record(ctx, name, scalar_backward, y, &x, 1, sv);
    }
    return y;
}

segc_tensor *segc_add_scalar(segc_ctx *ctx, segc_tensor *x, float s) { return scalar_op(ctx, "add_scalar", x, false, s); }
segc_tensor *segc_mul_scalar(segc_ctx *ctx, segc_tensor *x, float s) { return scalar_op(ctx, "mul_scalar", x, true, s); }

/* ------------------------------------------------------------ copy / fill */

static void copy_backward(segc_ctx *ctx, segc_node *nd) {
    segc_tensor *x = nd->in[0];
    const float *go = nd->out->grad;
    if (segc_ew_grad_alias(ctx, x, go)) return;
    float *gx = segc_grad(ctx, x);
    int64_t n = segc_numel(x);
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) gx[i] += go[i];
}

segc_tensor *segc_copy(segc_ctx *ctx, segc_tensor *x) {
    SEGC_PROF_OP(ctx, "copy");
    if (!x) return NULL;
    if ((unsigned)x->dtype >= SEGC_NDTYPES) {
        segc_set_error(ctx, "copy: unknown dtype %d", (int)x->dtype);
        return NULL;
    }
    segc_tensor *y = segc_tensor_like(ctx, x);
    memcpy(y->data, x->data, segc_nbytes(x));
    bool is_float = x->dtype == SEGC_F32 || x->dtype == SEGC_BF16;
    if (is_float && segc_needs_grad(ctx, &x, 1)) segc_record(ctx, "copy", copy_backward, y, &x, 1, NULL);
    return y;
}

segc_tensor *segc_fill(segc_ctx *ctx, segc_dtype dtype, int ndim, const int64_t *shape, float value) {
    SEGC_PROF_OP(ctx, "fill");
    if ((unsigned)dtype >= SEGC_NDTYPES) {
        segc_set_error(ctx, "fill: unknown dtype %d", (int)dtype);
        return NULL;
    }
    if (ndim < 0 || ndim > SEGC_MAX_DIMS || (ndim > 0 && !shape)) {
        segc_set_error(ctx, "fill: expected 0..%d dims with a shape, found ndim %d", SEGC_MAX_DIMS, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            segc_set_error(ctx, "fill: size %lld in dim %d must be >= 0", (long long)shape[i], i);
            return NULL;
        }
    }
    /* integer dtypes take the value truncated toward zero; it must fit */
    double lo = dtype == SEGC_U8 ? 0.0 : dtype == SEGC_I32 ? -2147483648.0 : -9223372036854775808.0;
    double hi = dtype == SEGC_U8 ? 256.0 : dtype == SEGC_I32 ? 2147483648.0 : 9223372036854775808.0;
    bool is_int = dtype == SEGC_U8 || dtype == SEGC_I32 || dtype == SEGC_I64;
    if (is_int && !((double)value > lo - 1.0 && (double)value < hi)) {
        segc_set_error(ctx, "fill: value %g out of range for %s", (double)value, segc_dtype_name(dtype));
        return NULL;
    }
    segc_tensor *y = segc_tensor_new(ctx, dtype, ndim, shape);
    if (!y) return NULL;
    int64_t n = segc_numel(y);
    switch (dtype) {
    case SEGC_F32: {
        float *p = segc_f32(y);
        for (int64_t i = 0; i < n; i++) p[i] = value;
        break;
    }
    case SEGC_BF16: {
        uint16_t *p = segc_bf16p(y), h = segc_f32_to_bf16(value);
        for (int64_t i = 0; i < n; i++) p[i] = h;
        break;
    }
    case SEGC_U8: memset(y->data, (int)(uint8_t)value, (size_t)n); break;
    case SEGC_I32: {
        int32_t *p = y->data, v = (int32_t)value;
        for (int64_t i = 0; i < n; i++) p[i] = v;
        break;
    }
    default: {
        int64_t *p = y->data, v = (int64_t)value;
        for (int64_t i = 0; i < n; i++) p[i] = v;
        break;
    }
    }
    return y;
}
