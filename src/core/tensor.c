/* Tensor allocation, dtype helpers, bf16 conversion, context and errors. */
#include <ctype.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "segc/core.h"

static const size_t dtype_sizes[SEGC_NDTYPES] = {4, 2, 1, 4, 8};
static const char *const dtype_names[SEGC_NDTYPES] = {"f32", "bf16", "u8", "i32", "i64"};

size_t segc_dtype_size(segc_dtype dt) { return (unsigned)dt < SEGC_NDTYPES ? dtype_sizes[dt] : 0; }
const char *segc_dtype_name(segc_dtype dt) { return (unsigned)dt < SEGC_NDTYPES ? dtype_names[dt] : "?"; }

int64_t segc_numel(const segc_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}
size_t segc_nbytes(const segc_tensor *t) { return (size_t)segc_numel(t) * segc_dtype_size(t->dtype); }

const char *segc_shape_str(const segc_tensor *t, char *buf, size_t n) {
    if (!t) { snprintf(buf, n, "(null)"); return buf; }
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

bool segc_same_shape(const segc_tensor *a, const segc_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++) if (a->shape[i] != b->shape[i]) return false;
    return true;
}

/* segc_bf16_to_f32_n / segc_f32_to_bf16_n: bf16_cvt.c (one kernel per ISA level) */

/* ---- context ---- */
static int g_live_ctx;       /* atomics: contexts may be created in any thread */
static uint64_t g_ctx_epoch;

uint64_t segc_ctx_epoch(void) { return __atomic_load_n(&g_ctx_epoch, __ATOMIC_ACQUIRE); }

segc_ctx *segc_ctx_new(uint64_t seed) {
    segc_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    segc_arena_init(&c->arena, (size_t)1 << 20);
    c->grad_enabled = true;
    c->training = true;
    segc_rng_init(&c->rng, seed);
    c->num_threads = omp_get_max_threads();
    /* the table grows on demand (segc_grad_buffer); steps after the widest keep its capacity */
    c->cap_grad_blocks = 1024;
    c->grad_blocks = calloc((size_t)c->cap_grad_blocks, sizeof *c->grad_blocks);
    if (!c->grad_blocks) {
        segc_arena_free(&c->arena);
        free(c);
        return NULL;
    }
    __atomic_add_fetch(&g_live_ctx, 1, __ATOMIC_ACQ_REL);
    return c;
}
void segc_ctx_free(segc_ctx *c) {
    if (!c) return;
    segc_arena_free(&c->arena);
    free(c->grad_blocks);
    free(c);
    if (__atomic_sub_fetch(&g_live_ctx, 1, __ATOMIC_ACQ_REL) == 0) __atomic_add_fetch(&g_ctx_epoch, 1, __ATOMIC_ACQ_REL);
}
void segc_ctx_step_begin(segc_ctx *c) {
    segc_arena_reset(&c->arena);
    c->tape = NULL;
    c->n_nodes = 0;
    c->n_grad_blocks = 0;
    c->bf16_leaves = NULL;
}
void segc_set_num_threads(segc_ctx *c, int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    if (c) c->num_threads = n;
}
int segc_get_num_threads(void) { return omp_get_max_threads(); }

void segc_set_error(segc_ctx *c, const char *fmt, ...) {
    if (!c || c->has_err) return;   /* first error wins */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    c->has_err = true;
}
bool segc_errorf(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return false;
}
const char *segc_last_error(const segc_ctx *c) { return c && c->has_err ? c->err : ""; }
void segc_clear_error(segc_ctx *c) { c->has_err = false; c->err[0] = 0; }

bool segc_check_dtype(segc_ctx *c, const char *op, const char *what, const segc_tensor *t, segc_dtype want) {
    if (t->dtype == want) return true;
    segc_set_error(c, "%s: %s must be %s, found %s", op, what, segc_dtype_name(want), segc_dtype_name(t->dtype));
    return false;
}
bool segc_check_ndim(segc_ctx *c, const char *op, const char *what, const segc_tensor *t, int ndim) {
    if (t->ndim == ndim) return true;
    char b[96];
    segc_set_error(c, "%s: %s must be %d-D, found %d-D %s", op, what, ndim, t->ndim, segc_shape_str(t, b, sizeof b));
    return false;
}
bool segc_check_float_any_layout(segc_ctx *c, const char *op, const char *what, const segc_tensor *t) {
    if (t->dtype == SEGC_F32 || t->dtype == SEGC_BF16) return true;
    segc_set_error(c, "%s: %s must be f32 or bf16, found %s", op, what, segc_dtype_name(t->dtype));
    return false;
}
bool segc_check_float(segc_ctx *c, const char *op, const char *what, const segc_tensor *t) {
    if (!segc_check_float_any_layout(c, op, what, t)) return false;
    if (!t->nhwc) return true;
    segc_set_error(c, "%s: %s is channels-last (NHWC), which %s does not take; convert it with segc_to_channels_first",
                   op, what, op);
    return false;
}
bool segc_check_finite_out(segc_ctx *c, const char *op, const segc_tensor *t) {
    if (!c->check_finite || (t->dtype != SEGC_F32 && t->dtype != SEGC_BF16)) return true;
    int64_t n = segc_numel(t), bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) {
        float v = t->dtype == SEGC_F32 ? segc_f32(t)[i] : segc_bf16_to_f32(segc_bf16p(t)[i]);
        if (!isfinite(v)) bad = i;
    }
    if (bad < 0) return true;
    char b[96];
    segc_set_error(c, "%s: non-finite value in output %s at flat index %lld", op, segc_shape_str(t, b, sizeof b),
                   (long long)bad);
    return false;
}

/* ---- tensors ---- */
static segc_tensor *tensor_header(segc_ctx *c, segc_dtype dt, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > SEGC_MAX_DIMS) {
        segc_set_error(c, "tensor: %d dims requested, at most %d supported", ndim, SEGC_MAX_DIMS);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) { segc_set_error(c, "tensor: negative size %lld in dim %d", (long long)shape[i], i); return NULL; }
    segc_tensor *t = segc_arena_calloc(&c->arena, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    return t;
}
segc_tensor *segc_tensor_new(segc_ctx *c, segc_dtype dt, int ndim, const int64_t *shape) {
    segc_tensor *t = tensor_header(c, dt, ndim, shape);
    if (!t) return NULL;
    t->data = segc_activation_buffer(c, segc_nbytes(t));
    if (!t->data) t->data = segc_arena_alloc(&c->arena, segc_nbytes(t));
    t->owns_data = true;
    return t;
}
segc_tensor *segc_tensor_zeros(segc_ctx *c, segc_dtype dt, int ndim, const int64_t *shape) {
    segc_tensor *t = tensor_header(c, dt, ndim, shape);
    if (!t) return NULL;
    t->data = segc_activation_buffer(c, segc_nbytes(t));
    if (t->data) memset(t->data, 0, segc_nbytes(t));
    else t->data = segc_arena_calloc(&c->arena, segc_nbytes(t));
    t->owns_data = true;
    return t;
}
segc_tensor *segc_tensor_like(segc_ctx *c, const segc_tensor *t) { return segc_tensor_new(c, t->dtype, t->ndim, t->shape); }
segc_tensor *segc_tensor_wrap(segc_ctx *c, segc_dtype dt, int ndim, const int64_t *shape, void *data) {
    segc_tensor *t = tensor_header(c, dt, ndim, shape);
    if (t) t->data = data;
    return t;
}
float *segc_as_f32(segc_ctx *c, const segc_tensor *t) {
    if (t->dtype == SEGC_F32) return segc_f32(t);
    int64_t n = segc_numel(t);
    float *f = segc_arena_alloc(&c->arena, (size_t)n * sizeof(float));
    if (t->dtype == SEGC_BF16) segc_bf16_to_f32_n(segc_bf16p(t), f, n);
    else if (t->dtype == SEGC_U8) for (int64_t i = 0; i < n; i++) f[i] = ((const uint8_t *)t->data)[i];
    else if (t->dtype == SEGC_I32) for (int64_t i = 0; i < n; i++) f[i] = (float)((const int32_t *)t->data)[i];
    else for (int64_t i = 0; i < n; i++) f[i] = (float)((const int64_t *)t->data)[i];
    return f;
}
void segc_store_f32(segc_tensor *t, const float *src) {
    int64_t n = segc_numel(t);
    if (t->dtype == SEGC_F32) { if (segc_f32(t) != src) memcpy(t->data, src, (size_t)n * 4); }
    else if (t->dtype == SEGC_BF16) segc_f32_to_bf16_n(src, segc_bf16p(t), n);
}
segc_tensor *segc_tensor_heap(segc_dtype dt, int ndim, const int64_t *shape) {
    segc_tensor *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    size_t nb = segc_nbytes(t);
    t->data = aligned_alloc(SEGC_ALIGN, (nb + SEGC_ALIGN - 1) / SEGC_ALIGN * SEGC_ALIGN + SEGC_ALIGN);
    if (!t->data) { free(t); return NULL; }
    memset(t->data, 0, nb);
    return t;
}
void segc_tensor_free(segc_tensor *t) {
    if (!t) return;
    free(t->data);
    free(t);
}

double segc_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int segc_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 127 || lb > 127) return 1000;
    int row[128];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int sub = diag + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int best = sub < up + 1 ? sub : up + 1;
            row[j] = best < row[j - 1] + 1 ? best : row[j - 1] + 1;
            diag = up;
        }
    }
    return row[lb];
}
