/* Strided batched GEMM (oneDNN matmul), matmul and linear, forward and backward.
 *
 * Every GEMM goes through segc_gemm_run: transposes are strides, never copies;
 * primitives are cached by shape/stride/dtype key. bf16 operand pairs use
 * oneDNN's native bf16 matmul (f32 accumulation) where the CPU has one and are
 * widened to f32 in the arena where it has not, so the numerics are the same
 * on both: bf16 operands, f32 accumulation, upstream gradients of bf16 ops
 * rounded to bf16 before their GEMMs (as PyTorch's bf16 autograd does). */
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dnnl_backend.h"
#include "segc/ops.h"
#include "segc/profile.h"
#include "activation_internal.h"
#include "matmul_internal.h"

/* ------------------------------------------------------------------------- */
/* native bf16 detection: one probe primitive descriptor, once */

static bool g_bf16_native;
static pthread_once_t g_bf16_once = PTHREAD_ONCE_INIT;

static void probe_bf16(void) {
    dnnl_engine_t eng = segc_dnnl_engine();
    if (!eng) return;
    int64_t d[2] = {64, 64};
    dnnl_memory_desc_t a = segc_dnnl_md(2, d, dnnl_bf16), c = segc_dnnl_md(2, d, dnnl_f32);
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    if (dnnl_matmul_desc_init(&md, &a, &a, NULL, &c) != dnnl_success) return;
    if (dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) != dnnl_success) return;
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    /* a reference implementation would be far slower than widening to f32 */
    g_bf16_native = impl && strncmp(impl, "ref", 3) != 0;
    dnnl_primitive_desc_destroy(pd);
}

bool segc_gemm_native_bf16(void) {
    pthread_once(&g_bf16_once, probe_bf16);
    return g_bf16_native;
}

void *segc_gemm_round_grad(segc_ctx *ctx, const float *g, int64_t n, segc_dtype *dtype_out) {
    if (segc_gemm_native_bf16()) {
        uint16_t *r = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof *r);
        segc_f32_to_bf16_n(g, r, n);
        *dtype_out = SEGC_BF16;
        return r;
    }
    float *r = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof *r);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) r[i] = segc_bf16_to_f32(segc_f32_to_bf16(g[i]));
    *dtype_out = SEGC_F32;
    return r;
}

/* ------------------------------------------------------------------------- */
/* segc_gemm_run */

typedef struct {
    char tag[8];
    /* nthr: oneDNN sizes a primitive's blocking for the thread count at creation and does not
     * promise it works under another (the conv key holds it too) */
    int32_t nd, a_dt, b_dt, c_dt, bias_dt, accumulate, nthr, pack_b;
    float alpha;
    int64_t a_dims[3], a_str[3], b_dims[3], b_str[3], c_dims[3], c_str[3];
} gemm_key;

static bool is_float(segc_dtype dt) { return dt == SEGC_F32 || dt == SEGC_BF16; }

/* elements spanned by a strided [bat, rows, cols] operand */
static int64_t extent(int64_t bat, int64_t bs, int64_t rows, int64_t rs, int64_t cols, int64_t cs) {
    return (bat - 1) * bs + (rows - 1) * rs + (cols - 1) * cs + 1;
}

float *segc_mm_widen(segc_ctx *ctx, const void *p, int64_t n) {
    float *f = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof *f);
    segc_bf16_to_f32_n(p, f, n);
    return f;
}

/* K == 0: the product is empty, C gets the bias (or zero) */
static void gemm_empty_k(const segc_gemm *g, const float *bias) {
    for (int64_t i = 0; i < g->batch; i++)
        for (int64_t m = 0; m < g->M; m++) {
            int64_t off = i * g->c_bs + m * g->c_rs;
            for (int64_t n = 0; n < g->N; n++) {
                float v = bias ? bias[n] : 0.0f;
                if (g->c_dtype == SEGC_BF16) ((uint16_t *)g->c)[off + n] = segc_f32_to_bf16(v);
                else if (g->accumulate) ((float *)g->c)[off + n] += v;
                else ((float *)g->c)[off + n] = v;
            }
        }
}

static void strided_md(dnnl_memory_desc_t *md, int nd, const int64_t *dims, const int64_t *strides, int32_t dt) {
    dnnl_dims_t d, st;
    for (int i = 0; i < nd; i++) d[i] = dims[i], st[i] = strides[i];
    dnnl_memory_desc_init_by_strides(md, nd, d, (dnnl_data_type_t)dt, st);
}

/* A tall bf16 GEMM with a row-major B runs ~1.3x faster on oneDNN's AMX kernel
 * when B is first reordered into the kernel's own blocked layout (otherwise the
 * kernel repacks B as it goes): worth one K x N reorder when M is large. Only
 * for a bf16 C (measured: an f32 C gains little) and whole-call GEMMs (not plans). */
static bool want_pack_b(const segc_gemm *g) {
    return g->a_dtype == SEGC_BF16 && g->b_dtype == SEGC_BF16 && g->c_dtype == SEGC_BF16 && g->batch == 1 &&
           g->b_cs == 1 && !g->accumulate && !g->bias && g->M >= 1024 && g->K >= 64 && g->N >= 64 &&
           g->K * g->N >= ((int64_t)1 << 18);
}

/* The cached oneDNN matmul primitive for a validated problem whose operands
 * share a supported dtype combination (pointers in g are not used). With
 * pack_b, B is declared in oneDNN's preferred layout (want_pack_b). */
static void gemm_key_fill(gemm_key *kp, const segc_gemm *g, bool pack_b) {
    gemm_key key;
    memset(&key, 0, sizeof key);
    memcpy(key.tag, "gemm", 4);
    key.pack_b = pack_b;
    int nd = g->batch > 1 ? 3 : 2, o = nd - 2;
    key.nd = nd;
    key.a_dt = segc_dnnl_dt(g->a_dtype);
    key.b_dt = segc_dnnl_dt(g->b_dtype);
    key.c_dt = segc_dnnl_dt(g->c_dtype);
    key.bias_dt = g->bias ? segc_dnnl_dt(g->bias_dtype) : 0;
    key.accumulate = g->accumulate;
    key.alpha = g->alpha;
    key.nthr = omp_get_max_threads();
    if (nd == 3) {
        key.a_dims[0] = g->a_bs ? g->batch : 1;
        key.a_str[0] = g->a_bs ? g->a_bs : extent(1, 0, g->M, g->a_rs, g->K, g->a_cs);
        key.b_dims[0] = g->b_bs ? g->batch : 1;
        key.b_str[0] = g->b_bs ? g->b_bs : extent(1, 0, g->K, g->b_rs, g->N, g->b_cs);
        key.c_dims[0] = g->batch;
        key.c_str[0] = g->c_bs;
    }
    key.a_dims[o] = g->M, key.a_dims[o + 1] = g->K, key.a_str[o] = g->a_rs, key.a_str[o + 1] = g->a_cs;
    key.b_dims[o] = g->K, key.b_dims[o + 1] = g->N, key.b_str[o] = g->b_rs, key.b_str[o + 1] = g->b_cs;
    key.c_dims[o] = g->M, key.c_dims[o + 1] = g->N, key.c_str[o] = g->c_rs, key.c_str[o + 1] = 1;
    *kp = key;
}

/* For f32, oneDNN 2.6 ranks its brgemm matmul first, but on some shapes that kernel runs at
 * under half of its GEMM driver ("gemm:jit", what dnnl_sgemm runs): ViT-B's MLP backward,
 * dY[1025x768] W[768x3072], 28 ms against 11 ms; elsewhere the two are within a few percent.
 * So an f32 matmul takes the first "gemm:" implementation oneDNN offers (a function of the
 * problem only, so the choice, and the numbers, are the same every run). */
static segc_dnnl_prim *gemm_prim(segc_ctx *ctx, const char *op, const segc_gemm *g, bool pack_b) {
    gemm_key key;
    gemm_key_fill(&key, g, pack_b);
    int nd = key.nd;
    segc_dnnl_prim *p = segc_dnnl_cache_get(&key, sizeof key);
    if (!p) {
        dnnl_memory_desc_t amd, bmd, cmd, biasmd;
        strided_md(&amd, nd, key.a_dims, key.a_str, key.a_dt);
        if (pack_b) {
            dnnl_dims_t bd = {key.b_dims[0], key.b_dims[1], key.b_dims[2]};
            dnnl_memory_desc_init_by_tag(&bmd, nd, bd, (dnnl_data_type_t)key.b_dt, dnnl_format_tag_any);
        } else {
            strided_md(&bmd, nd, key.b_dims, key.b_str, key.b_dt);
        }
        strided_md(&cmd, nd, key.c_dims, key.c_str, key.c_dt);
        if (g->bias) {
            int64_t bd[3] = {1, 1, 1};
            bd[nd - 1] = g->N;
            biasmd = segc_dnnl_md(nd, bd, key.bias_dt);
        }
        dnnl_matmul_desc_t md;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = segc_dnnl_attr();
        if (g->alpha != 1.0f) dnnl_primitive_attr_set_output_scales(attr, 1, 0, &g->alpha);
        if (g->accumulate) {
            dnnl_post_ops_t po;
            dnnl_post_ops_create(&po);
            dnnl_post_ops_append_sum(po, 1.0f);
            dnnl_primitive_attr_set_post_ops(attr, po);
            dnnl_post_ops_destroy(po);
        }
        dnnl_status_t st = dnnl_matmul_desc_init(&md, &amd, &bmd, g->bias ? &biasmd : NULL, &cmd);
        if (st == dnnl_success && key.a_dt == dnnl_f32 && key.b_dt == dnnl_f32 && key.c_dt == dnnl_f32)
            pd = segc_dnnl_pd_pick(&md, attr, NULL, "gemm:", NULL);
        if (st == dnnl_success && !pd) st = dnnl_primitive_desc_create(&pd, &md, attr, segc_dnnl_engine(), NULL);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success) {
            segc_set_error(ctx, "%s: oneDNN has no matmul for batch %lld, M %lld, N %lld, K %lld (%s x %s -> %s), status %d",
                           op, (long long)g->batch, (long long)g->M, (long long)g->N, (long long)g->K,
                           segc_dtype_name(g->a_dtype), segc_dtype_name(g->b_dtype), segc_dtype_name(g->c_dtype), (int)st);
            return NULL;
        }
        p = segc_dnnl_cache_put(ctx, op, &key, sizeof key, pd);
    }
    return p;
}

/* the cached reorder of a row-major (strided) B into the layout matmul primitive mp expects;
 * keyed by the whole GEMM, as the layout oneDNN picks depends on all of it (M, threads...) */
static segc_dnnl_prim *pack_b_prim(segc_ctx *ctx, const char *op, const segc_gemm *g, const segc_dnnl_prim *mp) {
    gemm_key key;
    gemm_key_fill(&key, g, true);
    memcpy(key.tag, "gemmpkb", 7);
    segc_dnnl_prim *p = segc_dnnl_cache_get(&key, sizeof key);
    if (p) return p;
    dnnl_memory_desc_t src;
    strided_md(&src, 2, (int64_t[]){g->K, g->N}, (int64_t[]){g->b_rs, 1}, dnnl_bf16);
    const dnnl_memory_desc_t *dst = dnnl_primitive_desc_query_md(mp->pd, dnnl_query_weights_md, 0);
    dnnl_primitive_attr_t attr = segc_dnnl_attr();
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st = dst ? dnnl_reorder_primitive_desc_create(&pd, &src, segc_dnnl_engine(), dst, segc_dnnl_engine(), attr)
                           : dnnl_invalid_arguments;
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) {
        segc_set_error(ctx, "%s: oneDNN has no reorder of a %lld x %lld bf16 B into its GEMM layout (status %d)", op,
                       (long long)g->K, (long long)g->N, (int)st);
        return NULL;
    }
    return segc_dnnl_cache_put(ctx, op, &key, sizeof key, pd);
}

/* B reordered into an arena buffer (live for the caller's arena mark), then the GEMM */
static bool gemm_exec_packed(segc_ctx *ctx, const char *op, segc_dnnl_prim *p, const segc_gemm *g) {
    segc_dnnl_prim *r = pack_b_prim(ctx, op, g, p);
    if (!r) return false;
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(p->pd, dnnl_query_weights_md, 0);
    void *bp = segc_arena_alloc(&ctx->arena, dnnl_memory_desc_get_size(wmd));
    int rids[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
    void *rptrs[2] = {(void *)g->b, bp};
    if (!segc_dnnl_run(ctx, op, r, 2, rids, rptrs)) return false;
    int ids[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    void *ptrs[3] = {(void *)g->a, bp, g->c};
    return segc_dnnl_run(ctx, op, p, 3, ids, ptrs);
}

static bool prim_is_ref(const segc_dnnl_prim *p) {
    const char *impl = NULL;
    dnnl_primitive_desc_query(p->pd, dnnl_query_impl_info_str, 0, &impl);
    return impl && strncmp(impl, "ref", 3) == 0;
}

static bool gemm_exec(segc_ctx *ctx, const char *op, segc_dnnl_prim *p, const segc_gemm *g) {
    int ids[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
    void *ptrs[4] = {(void *)g->a, (void *)g->b, g->c, (void *)g->bias};
    return segc_dnnl_run(ctx, op, p, g->bias ? 4 : 3, ids, ptrs);
}

static bool gemm_dnnl(segc_ctx *ctx, const char *op, const segc_gemm *g) {
    segc_dnnl_prim *p = gemm_prim(ctx, op, g, false);
    return p && gemm_exec(ctx, op, p, g);
}

/* For a size-1 row or column dimension the stride is free: pick one that
 * makes the operand a valid row-major (cs 1, rs >= cols) or column-major
 * (rs 1, cs >= rows) matrix for the backend. */
static void canon_strides(int64_t rows, int64_t cols, int64_t *rs, int64_t *cs) {
    if (cols == 1) *cs = 1;
    if (rows == 1) {
        if (*cs == 1) *rs = cols;
        else *rs = 1;
    }
}
static bool valid_strides(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    return (cs == 1 && rs >= cols) || (rs == 1 && cs >= rows);
}

/* argument checks shared by segc_gemm_run and plans; canonicalises strides.
 * Returns false with the error set, or true (*empty when there is nothing to do). */
static bool gemm_check(segc_ctx *ctx, const char *op, segc_gemm *g, bool *empty) {
    if (g->batch < 0 || g->M < 0 || g->N < 0 || g->K < 0 || !is_float(g->a_dtype) || !is_float(g->b_dtype) ||
        !is_float(g->c_dtype) || (g->bias && !is_float(g->bias_dtype)) || (g->accumulate && g->c_dtype != SEGC_F32) ||
        (g->bias && g->alpha != 1.0f)) {
        segc_set_error(ctx, "%s: gemm arguments expected non-negative sizes, float dtypes, f32 C when accumulating, "
                       "no alpha with bias; found batch %lld M %lld N %lld K %lld", op, (long long)g->batch,
                       (long long)g->M, (long long)g->N, (long long)g->K);
        return false;
    }
    *empty = g->batch == 0 || g->M == 0 || g->N == 0;
    if (*empty) return true;
    canon_strides(g->M, g->K, &g->a_rs, &g->a_cs);
    canon_strides(g->K, g->N, &g->b_rs, &g->b_cs);
    if (g->M == 1) g->c_rs = g->N;
    if (!valid_strides(g->M, g->K, g->a_rs, g->a_cs) || !valid_strides(g->K, g->N, g->b_rs, g->b_cs) ||
        g->c_rs < g->N) {
        segc_set_error(ctx, "%s: gemm operands need a unit row or column stride and a leading stride covering the "
                       "other dim; found A strides (%lld, %lld), B strides (%lld, %lld), C row stride %lld for N %lld",
                       op, (long long)g->a_rs, (long long)g->a_cs, (long long)g->b_rs, (long long)g->b_cs,
                       (long long)g->c_rs, (long long)g->N);
        return false;
    }
    return true;
}

static bool gemm_run_temps(segc_ctx *ctx, const char *op, const segc_gemm *gin);

/* widened operands and a widened C live only for the call */
bool segc_gemm_run(segc_ctx *ctx, const char *op, const segc_gemm *gin) {
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);
    bool ok = gemm_run_temps(ctx, op, gin);
    segc_arena_rewind(&ctx->arena, mark);
    return ok;
}

static bool gemm_run_temps(segc_ctx *ctx, const char *op, const segc_gemm *gin) {
    segc_gemm g = *gin;
    bool empty;
    if (!gemm_check(ctx, op, &g, &empty)) return false;
    if (empty) return true;
    if (g.batch == 1) g.a_bs = g.b_bs = g.c_bs = 0;
    /* B shared and A's rows run on across the batch: one tall GEMM */
    if (g.batch > 1 && g.b_bs == 0 && g.a_bs == g.M * g.a_rs && g.c_bs == g.M * g.c_rs) {
        g.M *= g.batch;
        g.batch = 1;
        g.a_bs = g.c_bs = 0;
    }
    /* C shared (c_bs 0): sum over the batch. If A's columns and B's rows run
     * on across the batch it is one GEMM with a longer K. */
    if (g.batch > 1 && g.c_bs == 0) {
        if (g.a_bs == g.K * g.a_cs && g.b_bs == g.K * g.b_rs) {
            g.K *= g.batch;
            g.batch = 1;
            g.a_bs = g.b_bs = 0;
        } else {
            segc_gemm one = g;
            one.batch = 1;
            for (int64_t i = 0; i < g.batch; i++) {
                one.a = (const char *)g.a + i * g.a_bs * (int64_t)segc_dtype_size(g.a_dtype);
                one.b = (const char *)g.b + i * g.b_bs * (int64_t)segc_dtype_size(g.b_dtype);
                one.accumulate = g.accumulate || i > 0;
                one.bias = i == 0 ? g.bias : NULL;
                if (!segc_gemm_run(ctx, op, &one)) return false;
            }
            return true;
        }
    }
    if (g.K == 0) {
        const float *bias = NULL;
        if (g.bias) bias = g.bias_dtype == SEGC_F32 ? g.bias : segc_mm_widen(ctx, g.bias, g.N);
        gemm_empty_k(&g, bias);
        return true;
    }
    if (g.a_dtype == SEGC_F32 && g.b_dtype == SEGC_F32 && g.c_dtype == SEGC_F32 && (!g.bias || g.bias_dtype == SEGC_F32))
        return gemm_dnnl(ctx, op, &g);
    if (g.a_dtype == SEGC_BF16 && g.b_dtype == SEGC_BF16 && segc_gemm_native_bf16()) {
        if (want_pack_b(&g)) {
            segc_dnnl_prim *p = gemm_prim(ctx, op, &g, true);
            if (p && !prim_is_ref(p)) return gemm_exec_packed(ctx, op, p, &g);
            segc_clear_error(ctx);
        }
        segc_dnnl_prim *p = gemm_prim(ctx, op, &g, false);
        if (!p) return false;
        /* a layout only oneDNN's reference kernel takes runs faster widened */
        if (!prim_is_ref(p)) return gemm_exec(ctx, op, p, &g);
    }

    /* widen bf16 operands to f32; a bf16 C is produced in f32 and rounded */
    int64_t abat = g.a_bs ? g.batch : 1, bbat = g.b_bs ? g.batch : 1;
    if (g.a_dtype == SEGC_BF16) g.a = segc_mm_widen(ctx, g.a, extent(abat, g.a_bs, g.M, g.a_rs, g.K, g.a_cs));
    if (g.b_dtype == SEGC_BF16) g.b = segc_mm_widen(ctx, g.b, extent(bbat, g.b_bs, g.K, g.b_rs, g.N, g.b_cs));
    if (g.bias && g.bias_dtype == SEGC_BF16) g.bias = segc_mm_widen(ctx, g.bias, g.N);
    g.a_dtype = g.b_dtype = g.bias_dtype = SEGC_F32;
    if (g.c_dtype == SEGC_F32) return gemm_dnnl(ctx, op, &g);
    uint16_t *cb = g.c;
    int64_t cbs = g.c_bs, crs = g.c_rs;
    float *cf = segc_arena_alloc(&ctx->arena, (size_t)(g.batch * g.M * g.N) * sizeof *cf);
    g.c = cf;
    g.c_dtype = SEGC_F32;
    g.c_bs = g.batch > 1 ? g.M * g.N : 0;
    g.c_rs = g.N;
    if (!gemm_dnnl(ctx, op, &g)) return false;
    int64_t rows = g.batch * g.M, N = g.N, M = g.M;
#pragma omp parallel for schedule(static) if (rows * N > 65536)
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *dst = cb + (r / M) * cbs + (r % M) * crs;
        const float *src = cf + r * N;
        segc_ew_store_bf16(src, dst, N);
    }
    return true;
}

/* ------------------------------------------------------------------------- */
/* per-thread GEMM plans: one primitive executed by every thread of a parallel
 * region, each with its own memory objects (segc_dnnl_run's are shared by all
 * callers), stream and scratchpad */

#define PLAN_MAX_THREADS 256

static const int k_plan_args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD};
static dnnl_stream_t g_tstream[PLAN_MAX_THREADS];
static pthread_mutex_t g_tmem_lock = PTHREAD_MUTEX_INITIALIZER;

/* thread t's memory objects for p, created on first use and owned by p, so they go when the
 * cache evicts it (caller holds the lock) */
static bool thread_mem_get(segc_dnnl_prim *p, int t, dnnl_memory_t out[4]) {
    if (!g_tstream[t] && dnnl_stream_create(&g_tstream[t], segc_dnnl_engine(), dnnl_stream_default_flags) != dnnl_success)
        return false;
    if (t >= p->n_tmem) {
        dnnl_memory_t (*n)[4] = realloc(p->tmem, (size_t)(t + 1) * sizeof *n);
        if (!n) return false;
        memset(n + p->n_tmem, 0, (size_t)(t + 1 - p->n_tmem) * sizeof *n);
        p->tmem = n, p->n_tmem = t + 1;
    }
    dnnl_memory_t *tm = p->tmem[t];
    for (int i = 0; i < 4; i++) {
        if (tm[i] || (k_plan_args[i] == DNNL_ARG_SCRATCHPAD && !p->scratch_bytes)) continue;
        const dnnl_memory_desc_t *md = k_plan_args[i] == DNNL_ARG_SCRATCHPAD
                                           ? dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0)
                                           : dnnl_primitive_desc_query_md(p->pd, dnnl_query_exec_arg_md, k_plan_args[i]);
        if (!md || dnnl_memory_create(&tm[i], md, segc_dnnl_engine(), DNNL_MEMORY_NONE) != dnnl_success)
            return false;
    }
    memcpy(out, tm, 4 * sizeof *tm);
    return true;
}

struct segc_gemm_plan {
    const segc_dnnl_prim *prim;   /* NULL: empty problem */
    int nthreads;
    size_t scratch_stride;
    char *scratch;
    dnnl_memory_t (*mem)[4];
};

segc_gemm_plan *segc_gemm_plan_new(segc_ctx *ctx, const char *op, const segc_gemm *gin, int nthreads) {
    segc_gemm g = *gin;
    bool empty;
    if (!gemm_check(ctx, op, &g, &empty)) return NULL;
    bool f32 = g.a_dtype == SEGC_F32 && g.b_dtype == SEGC_F32 && g.c_dtype == SEGC_F32;
    bool bf16 = g.a_dtype == SEGC_BF16 && g.b_dtype == SEGC_BF16 && segc_gemm_native_bf16();
    if (g.batch > 1 || g.K == 0 || g.bias || !(f32 || bf16) || nthreads < 1 || nthreads > PLAN_MAX_THREADS) {
        segc_set_error(ctx, "%s: gemm plan expected batch 1, K > 0, no bias, f32 or native bf16 operands, 1..%d "
                       "threads; found batch %lld K %lld, %s x %s -> %s, %d threads", op, PLAN_MAX_THREADS,
                       (long long)g.batch, (long long)g.K, segc_dtype_name(g.a_dtype), segc_dtype_name(g.b_dtype),
                       segc_dtype_name(g.c_dtype), nthreads);
        return NULL;
    }
    segc_gemm_plan *p = segc_arena_calloc(&ctx->arena, sizeof *p);
    p->nthreads = nthreads;
    if (empty) return p;
    g.a_bs = g.b_bs = g.c_bs = 0;
    segc_dnnl_prim *prim = gemm_prim(ctx, op, &g, false);
    if (!prim) return NULL;
    p->prim = prim;
    p->scratch_stride = (prim->scratch_bytes + SEGC_ALIGN - 1) / SEGC_ALIGN * SEGC_ALIGN;
    if (p->scratch_stride) p->scratch = segc_arena_alloc(&ctx->arena, p->scratch_stride * (size_t)nthreads);
    p->mem = segc_arena_alloc(&ctx->arena, sizeof *p->mem * (size_t)nthreads);
    bool ok = true;
    pthread_mutex_lock(&g_tmem_lock);
    for (int t = 0; t < nthreads && ok; t++) ok = thread_mem_get(prim, t, p->mem[t]);
    pthread_mutex_unlock(&g_tmem_lock);
    if (!ok) {
        segc_set_error(ctx, "%s: oneDNN could not create per-thread memory objects or streams", op);
        return NULL;
    }
    return p;
}

bool segc_gemm_plan_run(const segc_gemm_plan *p, int thread, const void *a, const void *b, void *c) {
    if (!p->prim) return true;
    if (thread < 0 || thread >= p->nthreads) return false;
    void *ptrs[4] = {(void *)a, (void *)b, c, p->scratch + (size_t)thread * p->scratch_stride};
    dnnl_exec_arg_t args[4];
    int n = 0;
    for (int i = 0; i < 4; i++) {
        if (!p->mem[thread][i]) continue;
        dnnl_memory_set_data_handle(p->mem[thread][i], ptrs[i]);
        args[n++] = (dnnl_exec_arg_t){k_plan_args[i], p->mem[thread][i]};
    }
    dnnl_status_t st = dnnl_primitive_execute(p->prim->prim, g_tstream[thread], n, args);
    if (st == dnnl_success) st = dnnl_stream_wait(g_tstream[thread]);
    return st == dnnl_success;
}

/* ------------------------------------------------------------------------- */
/* the backward GEMMs' operands and gradient destinations (matmul_internal.h) */

bool segc_mm_views_dt(segc_ctx *ctx, const char *op, int64_t batch, int64_t M, int64_t N, int64_t K, segc_mm_view a,
                      segc_mm_view b, void *c, segc_dtype c_dt, int64_t c_bs, int64_t c_rs, bool acc) {
    segc_gemm g = {.batch = batch, .M = M, .N = N, .K = K,
                   .a = a.p, .a_dtype = a.dt, .a_bs = a.bs, .a_rs = a.rs, .a_cs = a.cs,
                   .b = b.p, .b_dtype = b.dt, .b_bs = b.bs, .b_rs = b.rs, .b_cs = b.cs,
                   .c = c, .c_dtype = c_dt, .c_bs = c_bs, .c_rs = c_rs, .alpha = 1.0f, .accumulate = acc};
    return segc_gemm_run(ctx, op, &g);
}
bool segc_mm_views(segc_ctx *ctx, const char *op, int64_t batch, int64_t M, int64_t N, int64_t K, segc_mm_view a,
                   segc_mm_view b, float *c, int64_t c_bs, int64_t c_rs, bool acc) {
    return segc_mm_views_dt(ctx, op, batch, M, N, K, a, b, c, SEGC_F32, c_bs, c_rs, acc);
}

const void *segc_mm_dy(segc_ctx *ctx, const segc_tensor *out, bool bf16_op, int64_t n, segc_dtype *dt) {
    if (out->grad_bf16) {
        if (segc_gemm_native_bf16()) {
            *dt = SEGC_BF16;
            return out->grad_bf16;
        }
        *dt = SEGC_F32;
        return segc_mm_widen(ctx, out->grad_bf16, n);
    }
    if (bf16_op) return segc_gemm_round_grad(ctx, out->grad, n, dt);
    *dt = SEGC_F32;
    return out->grad;
}

segc_mm_grad_dst segc_mm_grad_dst_of(segc_ctx *ctx, segc_tensor *t) {
    segc_mm_grad_dst d = {0};
    if (!t->requires_grad) return d;
    d.h = segc_grad_bf16_dst(ctx, t, &d.fresh);
    if (!d.h) d.f = segc_ew_grad_dst(ctx, t, &d.fresh);
    return d;
}
void *segc_mm_grad_dst_c(segc_ctx *ctx, segc_mm_grad_dst *d, int64_t n, segc_dtype *dt, bool *acc) {
    if (d->h && !d->fresh && !d->tmp) d->tmp = segc_arena_alloc(&ctx->arena, (size_t)n * sizeof(float));
    *dt = d->h && !d->tmp ? SEGC_BF16 : SEGC_F32;
    *acc = d->f && !d->fresh;
    return d->f ? (void *)d->f : d->tmp ? (void *)d->tmp : (void *)d->h;
}
void segc_mm_grad_dst_finish(segc_mm_grad_dst *d, int64_t n) {
    if (d->tmp) segc_ew_put_grad_bf16_n(d->tmp, d->h, n, false);
}

/* ------------------------------------------------------------------------- */
/* matmul */

typedef struct {
    int64_t batch, M, N, K;
    bool trans_a, trans_b, shared_b;
} matmul_saved;

/* op(A) as an M x K view, op(B) as a K x N view of the stored operands */
static segc_mm_view view_op_a(const void *p, segc_dtype dt, const matmul_saved *s) {
    return s->trans_a ? (segc_mm_view){p, dt, s->M * s->K, 1, s->M} : (segc_mm_view){p, dt, s->M * s->K, s->K, 1};
}
static segc_mm_view view_op_b(const void *p, segc_dtype dt, const matmul_saved *s) {
    int64_t bs = s->shared_b ? 0 : s->K * s->N;
    return s->trans_b ? (segc_mm_view){p, dt, bs, 1, s->K} : (segc_mm_view){p, dt, bs, s->N, 1};
}

static void matmul_backward(segc_ctx *ctx, segc_node *nd) {
    const matmul_saved *s = nd->saved;
    segc_tensor *a = nd->in[0], *b = nd->in[1];
    int64_t n_out = s->batch * s->M * s->N;
    segc_mm_view opa = view_op_a(a->data, a->dtype, s), opb = view_op_b(b->data, b->dtype, s);
    /* a gradient buffer the GEMM fills alone is taken unzeroed and written, not added to (a dB
     * summed over a broadcast batch always accumulates; b == a finds dA's buffer and adds) */
    segc_mm_grad_dst da = segc_mm_grad_dst_of(ctx, a), db = {0};
    if (b->requires_grad && s->shared_b && s->batch > 1) db.f = segc_grad(ctx, b);
    else db = segc_mm_grad_dst_of(ctx, b);
    segc_arena_mark mark = segc_arena_get_mark(&ctx->arena);   /* the bf16-rounded dC is temporary */
    bool ga = a->requires_grad, gb = b->requires_grad;
    segc_flops_add(2 * s->batch * s->M * s->N * s->K * (ga + gb));
    segc_mm_view dc = {NULL, SEGC_F32, s->M * s->N, s->N, 1};
    dc.p = segc_mm_dy(ctx, nd->out, a->dtype == SEGC_BF16, n_out, &dc.dt);
    segc_dtype cdt;
    bool acc;
    if (ga) {
        void *c = segc_mm_grad_dst_c(ctx, &da, segc_numel(a), &cdt, &acc);
        const int64_t abs_ = s->M * s->K;
        if (!s->trans_a) /* dA = dC op(B)^T */
            segc_mm_views_dt(ctx, "matmul", s->batch, s->M, s->K, s->N, dc, segc_mm_t(opb), c, cdt, abs_, s->K, acc);
        else /* dA (K x M) = op(B) dC^T */
            segc_mm_views_dt(ctx, "matmul", s->batch, s->K, s->M, s->N, opb, segc_mm_t(dc), c, cdt, abs_, s->M, acc);
        segc_mm_grad_dst_finish(&da, segc_numel(a));
    }
    if (gb) {
        int64_t gbs = s->shared_b ? 0 : s->K * s->N;   /* 0: summed over the batch */
        void *c = segc_mm_grad_dst_c(ctx, &db, segc_numel(b), &cdt, &acc);
        if (s->shared_b && s->batch > 1) acc = true;
        if (!s->trans_b) /* dB = op(A)^T dC */
            segc_mm_views_dt(ctx, "matmul", s->batch, s->K, s->N, s->M, segc_mm_t(opa), dc, c, cdt, gbs, s->N, acc);
        else /* dB (N x K) = dC^T op(A) */
            segc_mm_views_dt(ctx, "matmul", s->batch, s->N, s->K, s->M, segc_mm_t(dc), opa, c, cdt, gbs, s->K, acc);
        segc_mm_grad_dst_finish(&db, segc_numel(b));
    }
    segc_arena_rewind(&ctx->arena, mark);
}

segc_tensor *segc_matmul(segc_ctx *ctx, segc_tensor *a, segc_tensor *b, bool trans_a, bool trans_b) {
    SEGC_PROF_OP(ctx, "matmul");
    if (!a || !b) return NULL;
    if (!segc_check_float(ctx, "matmul", "a", a) || !segc_check_float(ctx, "matmul", "b", b)) return NULL;
    char sa[96], sb[96];
    segc_shape_str(a, sa, sizeof sa);
    segc_shape_str(b, sb, sizeof sb);
    if (a->dtype != b->dtype) {
        segc_set_error(ctx, "matmul: a and b expected the same dtype, found %s and %s", segc_dtype_name(a->dtype),
                       segc_dtype_name(b->dtype));
        return NULL;
    }
    if (a->ndim < 2 || b->ndim < 2 || (b->ndim != 2 && b->ndim != a->ndim)) {
        segc_set_error(ctx, "matmul: expected a with >= 2 dims and b 2-D or with a's dims, found a %s b %s", sa, sb);
        return NULL;
    }
    matmul_saved s = {.batch = 1, .trans_a = trans_a, .trans_b = trans_b, .shared_b = b->ndim == 2 && a->ndim > 2};
    for (int i = 0; i < a->ndim - 2; i++) {
        if (!s.shared_b && a->shape[i] != b->shape[i]) {
            segc_set_error(ctx, "matmul: batch dims of a %s and b %s expected equal, found %lld vs %lld at dim %d", sa,
                           sb, (long long)a->shape[i], (long long)b->shape[i], i);
            return NULL;
        }
        s.batch *= a->shape[i];
    }
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    s.M = trans_a ? ac : ar;
    s.K = trans_a ? ar : ac;
    s.N = trans_b ? br : bc;
    int64_t kb = trans_b ? bc : br;
    if (kb != s.K) {
        segc_set_error(ctx, "matmul: inner dims expected equal, found a %s%s (K=%lld) and b %s%s (K=%lld)", sa,
                       trans_a ? "^T" : "", (long long)s.K, sb, trans_b ? "^T" : "", (long long)kb);
        return NULL;
    }
    int64_t shape[SEGC_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 2] = s.M;
    shape[a->ndim - 1] = s.N;
    segc_tensor *y = segc_tensor_new(ctx, a->dtype, a->ndim, shape);
    if (!y) return NULL;
    segc_mm_view opa = view_op_a(a->data, a->dtype, &s), opb = view_op_b(b->data, b->dtype, &s);
    segc_gemm g = {.batch = s.batch, .M = s.M, .N = s.N, .K = s.K,
                   .a = opa.p, .a_dtype = opa.dt, .a_bs = opa.bs, .a_rs = opa.rs, .a_cs = opa.cs,
                   .b = opb.p, .b_dtype = opb.dt, .b_bs = opb.bs, .b_rs = opb.rs, .b_cs = opb.cs,
                   .c = y->data, .c_dtype = y->dtype, .c_bs = s.M * s.N, .c_rs = s.N, .alpha = 1.0f};
    if (!segc_gemm_run(ctx, "matmul", &g)) return NULL;
    segc_flops_add(2 * s.batch * s.M * s.N * s.K);
    segc_tensor *ins[2] = {a, b};
    if (segc_needs_grad(ctx, ins, 2)) {
        matmul_saved *sv = segc_arena_alloc(&ctx->arena, sizeof *sv);
        *sv = s;
        segc_node_reads_bf16_grad(segc_record(ctx, "matmul", matmul_backward, y, ins, 2, sv));
    }
    return y;
}

