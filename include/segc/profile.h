/* segc trace profiler: a process-wide recorder of timed slices that writes a
 * Chrome / Perfetto trace (open it in chrome://tracing or ui.perfetto.dev) and
 * prints a per-op summary table; plus a process-wide FLOP counter.
 *
 *   segc_profiler_start("trace.json");
 *   segc_profiler_set_window(2, 4);        // only iterations 2..4 are recorded
 *   for (it = 1; ...; it++) {
 *       segc_profiler_iter(it);            // opens a "step" slice when it is in the window
 *       segc_prof_span d = segc_prof_begin("loader_next", SEGC_PROF_DATA);
 *       ... segc_loader_next(...) ...
 *       segc_prof_end(&d, 0);
 *       ... forward / backward (ops and autograd record themselves) ...
 *   }
 *   segc_profiler_stop_and_write(stderr, err, sizeof err);
 *
 * What is recorded, and how honest it is:
 *  - forward: every op front end opens a scope (SEGC_PROF_OP) at its first line
 *    that closes when the function returns, so a forward slice is exactly the
 *    op's own call (argument checks, output allocation, kernel), with or
 *    without gradients. An op that calls another op nests: the trace shows
 *    both, the summary charges each op its self time (children subtracted).
 *    Model glue between ops (e.g. pointer shuffling in a layer) is inside no op
 *    slice; it shows as the self time of the enclosing "step" slice.
 *  - backward: autograd wraps each node's backward function in a slice named
 *    by the node's op, category "backward".
 *  - data / optimizer / eval: slices the training loop opens itself.
 *  - bytes of an op slice: growth of the context's step arena across the
 *    slice (outputs and state kept for backward; scoped temporaries the op
 *    rewinds are not counted). flops: the FLOP counter's growth across it.
 *
 * Cost when off: each op front end does one relaxed load of a global flag and
 * one predictable branch on entry, and one more branch (on the zeroed span)
 * on exit; autograd the same per node; nothing else. When on, events go into per-thread
 * buffers without locks (a mutex is taken once per thread per profiling run,
 * at its first event). Events are kept in memory until
 * segc_profiler_stop_and_write, which must run when no other thread is inside
 * a profiled region. Slices opened on a thread close on that thread.
 *
 * The FLOP counter is always on (one relaxed atomic add per GEMM / conv op):
 * convolution (2*N*Cout*Hout*Wout*Cin/groups*kh*kw; backward: that once per
 * input and weight gradient), matmul / linear (2*M*N*K per GEMM), attention
 * (its two GEMMs forward, four backward). Element-wise ops, norms and
 * reductions are not counted: FLOPs are the GEMM-like work that compute
 * throughput is judged by. */
#ifndef SEGC_PROFILE_H
#define SEGC_PROFILE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "segc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* categories (any string works; these are the ones segc emits) */
#define SEGC_PROF_FORWARD "forward"
#define SEGC_PROF_BACKWARD "backward"
#define SEGC_PROF_DATA "data"
#define SEGC_PROF_OPTIMIZER "optimizer"
#define SEGC_PROF_EVAL "eval"
#define SEGC_PROF_STEP "step"

/* `--profile` without a window: training iterations 2..4 (the first one builds
 * primitive caches and grows the arena, so it is not representative) */
#define SEGC_PROFILE_DEFAULT_FIRST 2
#define SEGC_PROFILE_DEFAULT_LAST 4

/* ---- control (call from the thread that runs the training loop) ---- */
/* Starts a profiling run; the trace goes to trace_path at stop (NULL: no
 * trace file, summary only). Records at once unless a window is set. false
 * when already started. */
bool segc_profiler_start(const char *trace_path);
bool segc_profiler_active(void);   /* started (whether or not in the window) */
/* Record only iterations first..last (inclusive), as announced by
 * segc_profiler_iter; recording pauses until the first of them. */
void segc_profiler_set_window(int64_t first, int64_t last);
/* Announces iteration `iter`: closes the previous "step" slice, sets
 * recording on when iter is inside the window (or no window is set) and then
 * opens a "step" slice for it. Returns whether it is recording. Call at top
 * level (inside no other slice). */
bool segc_profiler_iter(int64_t iter);
/* Closes an open "step" slice and pauses recording (e.g. after the loop,
 * before checkpoint writing). segc_profiler_iter resumes. */
void segc_profiler_pause(void);
/* Stops recording, writes the trace (atomically: temp file + rename) and
 * prints the summary table to summary (NULL: none), frees the buffers.
 * false + message when the trace could not be written (the summary is still
 * printed). Harmless when not started (returns true). */
bool segc_profiler_stop_and_write(FILE *summary, char *err, size_t errlen);
/* Events recorded so far in this run, over all threads (0 when not started). */
int64_t segc_profiler_event_count(void);
/* "A:B" -> [A, B]; "A" -> [A, A]. false on anything else or A > B or A < 0. */
bool segc_profiler_parse_window(const char *s, int64_t *first, int64_t *last);
/* Name shown for the calling thread in the trace (copied; default "main" for
 * the process's first thread, else "thread N"). */
void segc_profiler_thread_name(const char *name);

/* ---- hot path ---- */
/* nonzero while a run is started and inside its window */
extern int segc_prof_recording_;
static inline bool segc_profiler_recording(void) {
    return __builtin_expect(__atomic_load_n(&segc_prof_recording_, __ATOMIC_RELAXED), 0);
}

/* An open slice: t0_ns == 0 means "not recording" and makes segc_prof_end a no-op. */
typedef struct segc_prof_span {
    const char *name, *cat;
    int64_t t0_ns;
    const segc_ctx *ctx;   /* for the arena-growth bytes (NULL: bytes as given) */
    size_t arena0;
    int64_t flops0;
    int depth, gen;        /* nesting level on its thread; profiling run it belongs to */
    int64_t iter;          /* "step" slices: the iteration */
} segc_prof_span;

void segc_prof_begin_(segc_prof_span *s, const char *name, const char *cat, const segc_ctx *ctx);
void segc_prof_end_(segc_prof_span *s, int64_t bytes);

/* Open / close a slice on the calling thread (names and categories must stay
 * valid until the profiler stops: string literals). */
static inline segc_prof_span segc_prof_begin(const char *name, const char *cat) {
    segc_prof_span s = {0};
    if (segc_profiler_recording()) segc_prof_begin_(&s, name, cat, NULL);
    return s;
}
/* bytes: a size to show with the slice (0: none); spans of an op use the arena growth instead */
static inline void segc_prof_end(segc_prof_span *s, int64_t bytes) {
    if (s->t0_ns) segc_prof_end_(s, bytes);
}
/* A slice whose times the caller measured (segc_prof_now_ns clock). */
void segc_prof_event(const char *name, const char *cat, int64_t t0_ns, int64_t t1_ns, int64_t bytes);
int64_t segc_prof_now_ns(void);   /* CLOCK_MONOTONIC */

static inline segc_prof_span segc_prof_op_enter_(const segc_ctx *ctx, const char *name, const char *cat) {
    segc_prof_span s = {0};
    if (segc_profiler_recording()) segc_prof_begin_(&s, name, cat, ctx);
    return s;
}
static inline void segc_prof_op_leave_(segc_prof_span *s) {
    if (s->t0_ns) segc_prof_end_(s, 0);
}
/* First line of an op front end: a forward slice named `name` that closes
 * when the enclosing block is left, whichever return is taken (GCC/Clang
 * cleanup attribute, as the rest of segc assumes GCC-compatible compilers). */
#define SEGC_PROF_OP(ctx, name)                                                                           \
    __attribute__((cleanup(segc_prof_op_leave_), unused)) segc_prof_span segc_prof_op_scope_ =           \
        segc_prof_op_enter_((ctx), (name), SEGC_PROF_FORWARD)

/* ---- FLOP counter (process-wide, always on) ---- */
extern int64_t segc_flops_counter_;
static inline void segc_flops_add(int64_t n) { __atomic_fetch_add(&segc_flops_counter_, n, __ATOMIC_RELAXED); }
static inline int64_t segc_flops_read(void) { return __atomic_load_n(&segc_flops_counter_, __ATOMIC_RELAXED); }

#ifdef __cplusplus
}
#endif
#endif
