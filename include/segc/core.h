/* segc core: tensors, arenas, the autodiff tape, RNG, errors, threads.
 *
 * Conventions every layer above relies on:
 *  - Tensors are contiguous, row-major (NCHW for images). Up to 5 dims.
 *  - Gradients are f32, whatever the tensor's dtype (bf16 activations get f32
 *    gradients; parameters keep f32 master weights), except where a context
 *    opts into bf16 activation gradients (ctx->bf16_grads, below).
 *  - Every op takes the context first, allocates its output in the context's
 *    step arena, and records a tape node when gradients are enabled and an
 *    input requires them.
 *  - Errors are sticky: an op that fails sets the context's error (one line
 *    naming the op and the shapes, expected vs found) and returns NULL; an op
 *    given a NULL input returns NULL without touching the message, so the
 *    first error survives to the caller.
 */
#ifndef SEGC_CORE_H
#define SEGC_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SEGC_MAX_DIMS 5
#define SEGC_MAX_INPUTS 6
#define SEGC_ALIGN 64

typedef enum { SEGC_F32 = 0, SEGC_BF16, SEGC_U8, SEGC_I32, SEGC_I64, SEGC_NDTYPES } segc_dtype;

size_t segc_dtype_size(segc_dtype dt);
const char *segc_dtype_name(segc_dtype dt);

typedef struct segc_tensor {
    segc_dtype dtype;
    int ndim;
    int64_t shape[SEGC_MAX_DIMS];
    void *data;          /* contiguous row-major */
    float *grad;         /* f32, same numel; NULL until a gradient flows */
    uint16_t *grad_bf16; /* bf16 gradient of a bf16 activation (ctx->bf16_grads; segc_grad_bf16_dst) */
    bool requires_grad;
    bool is_param;       /* grad lives in a persistent buffer, never arena */
    bool owns_data;      /* data is this tensor's own step-arena allocation (not a view, wrap or parameter) */
    struct segc_node *producer;   /* the node that recorded this tensor as its output (NULL: none) */
    bool nhwc;           /* channels-last: a 4-D tensor of shape [N, C, H, W] whose data (and gradient) is
                          * stored [N, H, W, C]; only ops that say so take one (segc_check_float refuses it) */
    const char *name;    /* optional; parameters carry their checkpoint name */
} segc_tensor;

int64_t segc_numel(const segc_tensor *t);
size_t segc_nbytes(const segc_tensor *t);
/* "[2, 3, 4]" into buf (thread-unsafe static buffers are avoided on purpose) */
const char *segc_shape_str(const segc_tensor *t, char *buf, size_t n);
bool segc_same_shape(const segc_tensor *a, const segc_tensor *b);
static inline float *segc_f32(const segc_tensor *t) { return (float *)t->data; }
static inline uint16_t *segc_bf16p(const segc_tensor *t) { return (uint16_t *)t->data; }

/* ---- bf16 <-> f32 (round to nearest even, NaN kept quiet) ---- */
static inline float segc_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
/* branch-free, so loops calling it vectorise */
static inline uint16_t segc_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint32_t rounded = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16, quiet = (v.u >> 16) | 0x40u;
    return (uint16_t)((v.u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}
void segc_bf16_to_f32_n(const uint16_t *src, float *dst, int64_t n);
void segc_f32_to_bf16_n(const float *src, uint16_t *dst, int64_t n);

/* ---- arena: bump allocator, 64-byte aligned, reset per step ----
 * Growth happens by adding chunks; the first reset after growth replaces the
 * chunks by one block of the high-water size, so a steady-state step makes no
 * heap allocation. */
typedef struct segc_arena_chunk segc_arena_chunk;
typedef struct segc_arena {
    segc_arena_chunk *head;   /* chunk being bumped */
    size_t used_total;        /* bytes handed out since last reset */
    size_t high_water;        /* max used_total ever */
    size_t n_chunks;
    size_t cap_total;         /* bytes held in chunks */
    bool poison;              /* debug: every allocation is filled with 0xFF bytes (see below) */
    /* Growth that fails (malloc, or cap_total would pass `limit` when nonzero) aborts with a
     * message, unless oom_jmp points to a jmp_buf: then it longjmps there (value 1) with
     * failed_need set, leaving the arena as it was before the call. The catcher starts a fresh
     * step (segc_ctx_step_begin) before using the context again. */
    size_t limit;
    size_t max_bytes;         /* SEGC_ARENA_MAX (below): a second cap, from the environment */
    void *oom_jmp;
    size_t failed_need;
} segc_arena;

/* Debug mode, set from the environment at segc_arena_init: SEGC_ARENA_POISON=1
 * fills every segc_arena_alloc with 0xFF bytes -- a NaN in f32 and in bf16, -1
 * in integers -- so a kernel that reads memory it never wrote produces NaN or
 * garbage instead of silently reusing identical leftovers of the previous step
 * (which would keep determinism and parity tests green). Costs one memset per
 * allocation; the determinism and parity tests turn it on. */
bool segc_arena_poison_from_env(void);
/* SEGC_ARENA_MAX=bytes caps every step arena made afterwards as if the machine had no more memory
 * (growth past it fails like a failed malloc); for testing recovery from allocation failure. */
size_t segc_arena_max_from_env(void);

void segc_arena_init(segc_arena *a, size_t initial_bytes);
void *segc_arena_alloc(segc_arena *a, size_t bytes);   /* uninitialised */
void *segc_arena_calloc(segc_arena *a, size_t bytes);  /* zeroed */
void segc_arena_reset(segc_arena *a);
void segc_arena_free(segc_arena *a);
/* Scoped temporaries: everything allocated after a mark is dropped by rewinding to it.
 * Only for buffers nobody reads after the rewind (layout copies, scratchpads); a kernel
 * that keeps something for backward allocates it before taking the mark. */
typedef struct segc_arena_mark { segc_arena_chunk *chunk; size_t used, used_total; } segc_arena_mark;
segc_arena_mark segc_arena_get_mark(const segc_arena *a);
void segc_arena_rewind(segc_arena *a, segc_arena_mark m);

/* ---- RNG: Philox-4x32-10, counter based, so results do not depend on the
 * thread count: element i of a draw uses counter (offset + i/4). State is
 * (seed, offset) and saves/restores trivially. ---- */
typedef struct segc_rng {
    uint64_t seed;
    uint64_t offset;   /* number of 4-word blocks consumed so far */
} segc_rng;

void segc_rng_init(segc_rng *r, uint64_t seed);
/* Philox block: 4 uint32 for (key=seed, counter=ctr) */
void segc_philox(uint64_t seed, uint64_t ctr, uint32_t out[4]);
/* reserve n values; returns base counter (in values) to pass to segc_rng_uniform_at */
uint64_t segc_rng_reserve(segc_rng *r, uint64_t n);
/* uniform in [0,1) for value index idx of a reserved range base */
float segc_rng_uniform_at(uint64_t seed, uint64_t idx);
float segc_rng_normal_at(uint64_t seed, uint64_t idx);
/* sequential convenience draws (serial code only) */
float segc_rng_uniform(segc_rng *r);
float segc_rng_normal(segc_rng *r);
uint32_t segc_rng_u32(segc_rng *r);
void segc_rng_fill_uniform(segc_rng *r, float *dst, int64_t n, float lo, float hi);
void segc_rng_fill_normal(segc_rng *r, float *dst, int64_t n, float mean, float std);

/* ---- autodiff tape ---- */
typedef struct segc_ctx segc_ctx;
typedef struct segc_node segc_node;
typedef void (*segc_backward_fn)(segc_ctx *ctx, segc_node *node);

struct segc_node {
    const char *op;
    segc_backward_fn backward;
    /* recomputes out->data from the inputs and saved state, bitwise as the forward did (NULL:
     * the op cannot); what lets segc_release_recompute drop an activation until backward */
    void (*refill)(segc_ctx *ctx, segc_node *node);
    segc_tensor *out;
    segc_tensor *in[SEGC_MAX_INPUTS];
    int n_in;
    void *saved;       /* op-specific, in the step arena */
    segc_node *prev;
    /* backward takes out->grad_bf16 when that is set (segc_node_reads_bf16_grad); otherwise the
     * tape converts a bf16 gradient to f32 before this node's backward runs */
    bool reads_bf16_grad;
};

/* ---- per-op time profile (ctx->profile): forward time is the wall time since the
 * previous recorded op, so model glue between ops is charged to the next op ---- */
#define SEGC_PROFILE_SLOTS 64
typedef struct segc_profile_entry {
    const char *op;
    double fwd_s, bwd_s;
    int64_t calls;
    double fwd_mib, bwd_mib;   /* step-arena growth charged to this op (memory profile) */
} segc_profile_entry;

typedef struct segc_grad_block { float *ptr; size_t cap; bool in_use; } segc_grad_block;

/* ---- context: one per training process/thread of control. A context is used by one thread
 * at a time, and ops backed by oneDNN run in one thread of the process at a time (the rule and
 * its check: segc/backend.h) ---- */
struct segc_ctx {
    segc_arena arena;       /* step arena: activations, saved state, grads */
    segc_node *tape;        /* last recorded node */
    int64_t n_nodes;
    bool grad_enabled;
    bool training;          /* dropout/drop-path/batch-norm behaviour */
    bool check_finite;      /* ops verify outputs are finite (slow; debugging) */
    bool retain_grads;      /* keep non-leaf gradients after backward (tests, debugging); off:
                             * their buffers are recycled as soon as they are consumed */
    bool free_activations;  /* backward hands an activation's memory to later gradient buffers
                             * once its producer has run (nothing reads it after that), as PyTorch
                             * frees saved tensors; the caller then reads no non-leaf tensor's data
                             * after backward (the trainer and benchmarks; off by default) */
    segc_rng rng;
    int num_threads;
    char err[512];
    bool has_err;
    bool profile;
    double profile_mark;
    size_t profile_arena_mark;   /* arena used_total at the previous recorded op */
    /* gradient buffers of this step, recycled once the node that produced their tensor has run
     * its backward (peak memory: a gradient lives only while it can still be read) */
    segc_grad_block *grad_blocks;
    int n_grad_blocks, cap_grad_blocks;
    /* segc_backward_from's caller-owned seed gradient, read in place during that backward:
     * never aliased to an input's gradient (which later ops may add into) */
    const float *borrowed_grad;
    const uint16_t *borrowed_grad_bf16;
    /* bf16 activation gradients, as PyTorch keeps for bf16 tensors: a bf16 non-parameter tensor
     * whose producer's backward reads bf16 gradients (or a bf16 leaf) gets its gradient in bf16
     * from the ops that can write one, halving the gradient traffic of memory-bound ops. Every
     * other op and tensor keeps f32 gradients; the tape converts where the two meet. Off by default */
    bool bf16_grads;
    struct segc_leaf_list *bf16_leaves;   /* leaves given a bf16 gradient during this backward */
    segc_profile_entry prof[SEGC_PROFILE_SLOTS];
    /* Sharded batches (set by data-parallel training; zero: off). This process's batch holds
     * sample_count samples; its sample j is sample j * sample_stride + sample_first of a global batch
     * sample_stride times larger, and random streams (dropout, drop-path) are drawn for the global
     * batch, so a sample gets the same mask whichever process computes it. Ops with a sample dim
     * expect it outermost (numel divisible by sample_count). */
    int64_t sample_count, sample_stride, sample_first;
    /* SyncBatchNorm: when set, batch_norm in training sums its per-channel statistics and the two
     * backward sums over every process through sum_hook (v[0..n) summed elementwise in place, the
     * same bits on every process). Set by the trainer; ops never talk to other processes. */
    void (*sum_hook)(void *user, double *v, int64_t n);
    void *sum_hook_user;
    /* Called by backward after each tape node (run, or skipped when no gradient reached it), in tape
     * order: data-parallel training learns there which parameter gradients are final and starts
     * their all-reduce while backward goes on (NULL: off). */
    void (*node_hook)(void *user, const segc_node *nd);
    void *node_hook_user;
};

/* Counter of value k of sample j's part (per values each) in a stream reserved for the global batch
 * (base from segc_rng_reserve of per * global samples): the same value for a sample in any shard. */
static inline uint64_t segc_sample_counter(const segc_ctx *ctx, uint64_t base, int64_t j, int64_t per) {
    int64_t g = ctx->sample_stride > 1 ? j * ctx->sample_stride + ctx->sample_first : j;
    return base + (uint64_t)(g * per);
}
/* true when ctx's batch is one shard of a larger global batch */
static inline bool segc_sharded(const segc_ctx *ctx) { return ctx->sample_stride > 1 && ctx->sample_count > 0; }

segc_ctx *segc_ctx_new(uint64_t seed);
void segc_ctx_free(segc_ctx *ctx);
/* Bumped each time the last live context is freed: the backend's one-thread rule
 * (segc/backend.h) releases its owner thread when this changes. */
uint64_t segc_ctx_epoch(void);
/* Start a new step: drops the tape and every arena tensor. */
void segc_ctx_step_begin(segc_ctx *ctx);
void segc_set_num_threads(segc_ctx *ctx, int n);
int segc_get_num_threads(void);

/* errors */
void segc_set_error(segc_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *segc_last_error(const segc_ctx *ctx);
/* printf into a caller's error buffer err[n] (skipped when err is NULL or n is 0); always
 * returns false, so functions reporting through (err, n) can `return segc_errorf(...)` */
bool segc_errorf(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void segc_clear_error(segc_ctx *ctx);
/* Levenshtein distance, case-insensitive, for did-you-mean suggestions (1000 for names over 127 characters). */
int segc_edit_distance(const char *a, const char *b);
/* Validation helpers: return false and set an error naming op/what. */
bool segc_check_dtype(segc_ctx *ctx, const char *op, const char *what, const segc_tensor *t, segc_dtype want);
bool segc_check_ndim(segc_ctx *ctx, const char *op, const char *what, const segc_tensor *t, int ndim);
bool segc_check_float(segc_ctx *ctx, const char *op, const char *what, const segc_tensor *t); /* f32 or bf16, NCHW */
/* f32 or bf16 in either layout, for the ops that take channels-last tensors too */
bool segc_check_float_any_layout(segc_ctx *ctx, const char *op, const char *what, const segc_tensor *t);
/* if ctx->check_finite, scan t and set an error when it has NaN/Inf */
bool segc_check_finite_out(segc_ctx *ctx, const char *op, const segc_tensor *t);

/* tensors in the step arena */
segc_tensor *segc_tensor_new(segc_ctx *ctx, segc_dtype dt, int ndim, const int64_t *shape);
segc_tensor *segc_tensor_zeros(segc_ctx *ctx, segc_dtype dt, int ndim, const int64_t *shape);
segc_tensor *segc_tensor_like(segc_ctx *ctx, const segc_tensor *t);     /* same dtype+shape, uninit */
/* A view-less wrapper around caller-owned memory (no copy, lives in arena). */
segc_tensor *segc_tensor_wrap(segc_ctx *ctx, segc_dtype dt, int ndim, const int64_t *shape, void *data);
/* Copy as f32 into the arena (bf16 converted), for kernels that compute in f32. */
float *segc_as_f32(segc_ctx *ctx, const segc_tensor *t);
/* Store f32 values into t's storage (converting to bf16 where needed). */
void segc_store_f32(segc_tensor *t, const float *src);
/* Heap-owned tensor (for params/buffers/fixtures); free with segc_tensor_free. */
segc_tensor *segc_tensor_heap(segc_dtype dt, int ndim, const int64_t *shape);
void segc_tensor_free(segc_tensor *t);

/* ---- autodiff API ---- */
/* true if gradients are being recorded and any input requires them */
bool segc_needs_grad(const segc_ctx *ctx, segc_tensor *const *ins, int n);
/* Record a node; marks out->requires_grad. Returns the node so the op can attach saved state. */
segc_node *segc_record(segc_ctx *ctx, const char *op, segc_backward_fn bw, segc_tensor *out,
                       segc_tensor *const *ins, int n_in, void *saved);
/* Gradient buffer of t, allocated zeroed in the arena on first use
 * (parameters must have their persistent grad already bound). */
float *segc_grad(segc_ctx *ctx, segc_tensor *t);
/* A gradient buffer of numel floats (zeroed if asked), from the step's recycled gradient
 * buffers when one fits, else from the arena. Kernels that fill every element use zero=false. */
float *segc_grad_buffer(segc_ctx *ctx, int64_t numel, bool zero);
/* Backward from a scalar (seed 1) or from an explicit upstream gradient. grad_out
 * (numel(out) floats) is read in place during the call, not copied: it must stay
 * valid and unchanged until segc_backward_from returns; segc never writes it. */
bool segc_backward(segc_ctx *ctx, segc_tensor *scalar_loss);
bool segc_backward_from(segc_ctx *ctx, segc_tensor *out, const float *grad_out);
/* The same from a bf16 upstream gradient (read in place when out's producer takes bf16 gradients
 * and ctx->bf16_grads is on, else widened into an f32 buffer first). */
bool segc_backward_from_bf16(segc_ctx *ctx, segc_tensor *out, const uint16_t *grad_out);
/* bf16 gradients (ctx->bf16_grads). A backward that can write t's gradient in bf16 asks here
 * first: NULL means "use the f32 gradient" (segc_grad / segc_ew_grad_dst). Granted for a bf16
 * non-parameter tensor that has no f32 gradient yet and whose producer reads bf16 gradients (or
 * which is a leaf). *fresh: a new, uninitialised buffer the caller stores every element of;
 * otherwise the caller adds into it (in f32, rounding the sum once). */
uint16_t *segc_grad_bf16_dst(segc_ctx *ctx, segc_tensor *t, bool *fresh);
/* Pass-through of a bf16 gradient g (add, copy): t's gradient becomes g itself when t may take a
 * bf16 gradient and has none yet (as segc_ew_grad_alias for f32); false: the caller writes it */
bool segc_grad_bf16_alias(segc_ctx *ctx, segc_tensor *t, const uint16_t *g);
/* an op whose backward handles out->grad_bf16 says so on its node at record time */
static inline void segc_node_reads_bf16_grad(segc_node *nd) { if (nd) nd->reads_bf16_grad = true; }
/* Activation memory (only with ctx->free_activations; otherwise both do nothing). The caller
 * promises t is read by nothing recorded after this call except ops that take t itself (not a
 * view of it) as an input.
 * segc_release_recompute: t's memory serves later tensors and gradients now; backward
 * recomputes t (its producer's refill) just before the first node that needs it, and releases
 * it again after its producer has run. Nothing happens when t's producer cannot refill.
 * segc_release_dead: no backward function reads t's data at all (e.g. resize's output feeding a
 * concat): its memory is released for good and t->data becomes NULL. */
void segc_release_recompute(segc_ctx *ctx, segc_tensor *t);
void segc_release_dead(segc_ctx *ctx, segc_tensor *t);
/* free_activations: bytes for a new step tensor from the released/recycled buffers when one
 * fits, else from the arena (NULL when off or too small: the caller takes arena memory) */
void *segc_activation_buffer(segc_ctx *ctx, size_t bytes);

/* Scoped no-grad */
bool segc_set_grad_enabled(segc_ctx *ctx, bool on);  /* returns previous */

/* ---- timing ---- */
double segc_now_s(void);
/* start a profiled region (resets the forward clock); print the table sorted by total time */
void segc_profile_mark(segc_ctx *ctx);
void segc_profile_print(const segc_ctx *ctx, void *file /* FILE* */);

#ifdef __cplusplus
}
#endif
#endif
