/* Reverse-mode autodiff over the tape recorded during forward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/core.h"
#include "segc/profile.h"

bool segc_needs_grad(const segc_ctx *c, segc_tensor *const *ins, int n) {
    if (!c->grad_enabled) return false;
    for (int i = 0; i < n; i++) if (ins[i] && ins[i]->requires_grad) return true;
    return false;
}

static segc_profile_entry *prof_slot(segc_ctx *c, const char *op) {
    for (int i = 0; i < SEGC_PROFILE_SLOTS; i++) {
        segc_profile_entry *e = &c->prof[i];
        if (!e->op) { e->op = op; return e; }
        if (e->op == op || strcmp(e->op, op) == 0) return e;
    }
    return &c->prof[SEGC_PROFILE_SLOTS - 1];
}

void segc_profile_mark(segc_ctx *c) {
    c->profile_mark = segc_now_s();
    c->profile_arena_mark = c->arena.used_total;
}

static int prof_cmp(const void *a, const void *b) {
    const segc_profile_entry *x = a, *y = b;
    double tx = x->fwd_s + x->bwd_s, ty = y->fwd_s + y->bwd_s;
    return tx < ty ? 1 : tx > ty ? -1 : 0;
}

void segc_profile_print(const segc_ctx *c, void *file) {
    FILE *f = file;
    segc_profile_entry sorted[SEGC_PROFILE_SLOTS];
    int n = 0;
    double total = 0;
    for (int i = 0; i < SEGC_PROFILE_SLOTS && c->prof[i].op; i++) { sorted[n++] = c->prof[i]; total += c->prof[i].fwd_s + c->prof[i].bwd_s; }
    qsort(sorted, (size_t)n, sizeof *sorted, prof_cmp);
    fprintf(f, "%-24s %8s %10s %10s %7s %9s %9s\n", "op", "calls", "fwd ms", "bwd ms", "share", "fwd MiB", "bwd MiB");
    for (int i = 0; i < n; i++)
        fprintf(f, "%-24s %8lld %10.1f %10.1f %6.1f%% %9.1f %9.1f\n", sorted[i].op, (long long)sorted[i].calls,
                1e3 * sorted[i].fwd_s, 1e3 * sorted[i].bwd_s,
                total > 0 ? 100 * (sorted[i].fwd_s + sorted[i].bwd_s) / total : 0, sorted[i].fwd_mib, sorted[i].bwd_mib);
    fprintf(f, "step arena high water: %.1f MiB\n", (double)c->arena.high_water / (1 << 20));
}

segc_node *segc_record(segc_ctx *c, const char *op, segc_backward_fn bw, segc_tensor *out,
                       segc_tensor *const *ins, int n_in, void *saved) {
    segc_node *nd = segc_arena_calloc(&c->arena, sizeof *nd);
    nd->op = op;
    nd->backward = bw;
    nd->out = out;
    out->producer = nd;
    nd->n_in = n_in < SEGC_MAX_INPUTS ? n_in : SEGC_MAX_INPUTS;
    for (int i = 0; i < nd->n_in; i++) nd->in[i] = ins[i];
    nd->saved = saved;
    nd->prev = c->tape;
    c->tape = nd;
    if (c->profile) {
        double now = segc_now_s();
        segc_profile_entry *e = prof_slot(c, op);
        e->fwd_s += now - c->profile_mark;
        e->fwd_mib += (double)(c->arena.used_total - c->profile_arena_mark) / (1 << 20);
        e->calls++;
        c->profile_mark = now;
        c->profile_arena_mark = c->arena.used_total;
    }
    c->n_nodes++;
    out->requires_grad = true;
    /* with checks on, every recorded op's output is verified here, so the
     * error names the first op that produced a NaN/Inf */
    if (c->check_finite) segc_check_finite_out(c, op, out);
    return nd;
}

/* ---- recycled step buffers: gradients, and with free_activations released activations ----
 * Blocks are step-arena memory with an in-use flag; a request takes the smallest free block that
 * fits (deterministic), else bumps the arena and registers the new block. */

/* every block is tracked, however wide the graph: an untracked block could never be reused, so a
 * graph past a fixed table size would keep all its later buffers alive at once */
static bool pool_track(segc_ctx *c, void *p, size_t cap, bool in_use) {
    if (c->n_grad_blocks == c->cap_grad_blocks) {
        int cap_n = c->cap_grad_blocks ? 2 * c->cap_grad_blocks : 1024;
        segc_grad_block *nb = realloc(c->grad_blocks, (size_t)cap_n * sizeof *nb);
        if (!nb) return false;   /* the block still works, it is only not recycled */
        c->grad_blocks = nb, c->cap_grad_blocks = cap_n;
    }
    c->grad_blocks[c->n_grad_blocks++] = (segc_grad_block){p, cap, in_use};
    return true;
}

static void *pool_take(segc_ctx *c, size_t need) {
    int best = -1;
    for (int i = 0; i < c->n_grad_blocks; i++) {
        const segc_grad_block *b = &c->grad_blocks[i];
        if (!b->in_use && b->cap >= need && (best < 0 || b->cap < c->grad_blocks[best].cap)) best = i;
    }
    if (best >= 0) {
        c->grad_blocks[best].in_use = true;
        /* a recycled block holds an earlier tensor's values: in the arena's poison mode it gets the
         * NaN pattern of fresh memory, so a read before write cannot pass on leftovers */
        if (c->arena.poison) memset(c->grad_blocks[best].ptr, 0xff, need);
        return c->grad_blocks[best].ptr;
    }
    void *p = segc_arena_alloc(&c->arena, need);
    pool_track(c, p, need, true);
    return p;
}

/* p (bytes long) is free for later requests */
static void pool_release(segc_ctx *c, void *p, size_t bytes) {
    for (int i = 0; i < c->n_grad_blocks; i++)
        if (c->grad_blocks[i].ptr == p) { c->grad_blocks[i].in_use = false; return; }
    pool_track(c, p, bytes, false);
}

float *segc_grad_buffer(segc_ctx *c, int64_t numel, bool zero) {
    size_t need = (size_t)(numel > 0 ? numel : 1) * sizeof(float);
    float *p = pool_take(c, need);
    if (zero) memset(p, 0, need);
    return p;
}

/* bytes rounded up to whole floats: pool blocks hold either activations or f32 gradients */
static size_t float_bytes(size_t bytes) { return (bytes + sizeof(float) - 1) / sizeof(float) * sizeof(float); }

/* activations below this stay plain arena allocations (the block list stays short) */
#define ACTIVATION_POOL_MIN ((size_t)64 << 10)

void *segc_activation_buffer(segc_ctx *c, size_t bytes) {
    if (!c->free_activations || !c->grad_enabled || bytes < ACTIVATION_POOL_MIN) return NULL;
    return pool_take(c, float_bytes(bytes));
}

/* t's memory back to the pool; false when it is not t's own */
static bool release_data(segc_ctx *c, segc_tensor *t) {
    if (!t || !t->owns_data || t->is_param || !t->data) return false;
    const size_t bytes = segc_nbytes(t) / sizeof(float) * sizeof(float);
    if (bytes < ACTIVATION_POOL_MIN) return false;
    pool_release(c, t->data, bytes);
    t->owns_data = false;
    return true;
}

void segc_release_recompute(segc_ctx *c, segc_tensor *t) {
    if (!c->free_activations || !t || !t->producer || !t->producer->refill || t->producer->out != t) return;
    if (release_data(c, t)) t->data = NULL;
}

void segc_release_dead(segc_ctx *c, segc_tensor *t) {
    if (!c->free_activations) return;
    if (release_data(c, t)) t->data = NULL, t->producer = NULL;   /* never recomputed */
}

/* free_activations: once the producer of nd->out has run, every node that could read its data
 * (its consumers, recorded later) has run before it, so its memory joins the pool. Not when an
 * input shares the data (an in-place op: the input's producer still reads it), nor for views,
 * wraps and parameters, which do not own theirs. */
static void release_after_backward(segc_ctx *c, const segc_node *nd) {
    for (int k = 0; k < nd->n_in; k++)
        if (nd->in[k] && nd->in[k]->data == nd->out->data) return;
    release_data(c, nd->out);
}

/* inputs of nd that segc_release_recompute dropped are recomputed before nd's backward reads them */
static void refill_inputs(segc_ctx *c, segc_node *nd) {
    for (int k = 0; k < nd->n_in; k++) {
        segc_tensor *t = nd->in[k];
        if (!t || t->data || !t->producer || !t->producer->refill) continue;
        t->data = pool_take(c, float_bytes(segc_nbytes(t)));
        t->owns_data = true;
        t->producer->refill(c, t->producer);
    }
}

/* the block holding p is free for later requests (not a tracked block: nothing to do) */
static void pool_free_ptr(segc_ctx *c, const void *p) {
    for (int i = 0; i < c->n_grad_blocks; i++)
        if ((const void *)c->grad_blocks[i].ptr == p) { c->grad_blocks[i].in_use = false; return; }
}

/* an input of nd holds gradient buffer p as its own (f32 or bf16) */
static bool input_holds(const segc_node *nd, const void *p) {
    for (int k = 0; k < nd->n_in; k++)
        if (nd->in[k] && ((const void *)nd->in[k]->grad == p || (const void *)nd->in[k]->grad_bf16 == p)) return true;
    return false;
}

/* the producer of nd->out has run: its gradient buffer can serve later gradients,
 * unless an input's gradient aliases it (pass-through ops hand the buffer on) */
static void release_out_grad(segc_ctx *c, const segc_node *nd) {
    segc_tensor *o = nd->out;
    if (o->is_param || c->retain_grads) return;
    /* like PyTorch, a non-leaf tensor does not keep its gradient after backward */
    if (o->grad && !input_holds(nd, o->grad)) pool_free_ptr(c, o->grad), o->grad = NULL;
    if (o->grad_bf16 && !input_holds(nd, o->grad_bf16)) pool_free_ptr(c, o->grad_bf16), o->grad_bf16 = NULL;
}

static bool bf16_grad_allowed(const segc_ctx *c, const segc_tensor *t) {
    if (!c->bf16_grads || t->dtype != SEGC_BF16 || t->is_param || t->grad) return false;
    return t->producer ? t->producer->reads_bf16_grad : t->requires_grad;
}

struct segc_leaf_list { segc_tensor *t; struct segc_leaf_list *next; };

/* no producer folds a leaf's gradients: the end of backward does (run_tape) */
static void note_bf16_leaf(segc_ctx *c, segc_tensor *t) {
    struct segc_leaf_list *l = segc_arena_alloc(&c->arena, sizeof *l);
    *l = (struct segc_leaf_list){t, c->bf16_leaves};
    c->bf16_leaves = l;
}

uint16_t *segc_grad_bf16_dst(segc_ctx *c, segc_tensor *t, bool *fresh) {
    *fresh = false;
    if (!bf16_grad_allowed(c, t)) return NULL;
    if (!t->grad_bf16) {
        t->grad_bf16 = pool_take(c, float_bytes((size_t)segc_numel(t) * sizeof(uint16_t)));
        *fresh = true;
        if (!t->producer) note_bf16_leaf(c, t);
    }
    return t->grad_bf16;
}

bool segc_grad_bf16_alias(segc_ctx *c, segc_tensor *t, const uint16_t *g) {
    if (!g || g == c->borrowed_grad_bf16 || c->retain_grads || t->grad_bf16 || !bf16_grad_allowed(c, t)) return false;
    t->grad_bf16 = (uint16_t *)g;
    if (!t->producer) note_bf16_leaf(c, t);
    return true;
}

/* t's bf16 gradient joins its f32 one (widened into a new buffer, or added in): before the
 * backward of a producer that reads f32 gradients, or when both exist */
static void fold_bf16_grad(segc_ctx *c, segc_tensor *t) {
    const uint16_t *h = t->grad_bf16;
    int64_t n = segc_numel(t);
    if (!t->grad) {
        t->grad = segc_grad_buffer(c, n, false);
        segc_bf16_to_f32_n(h, t->grad, n);
    } else {
        float *g = t->grad;
#pragma omp parallel for simd schedule(static) if (n >= 65536)
        for (int64_t i = 0; i < n; i++) g[i] += segc_bf16_to_f32(h[i]);
    }
    if (h != c->borrowed_grad_bf16) pool_free_ptr(c, h);
    t->grad_bf16 = NULL;
}

float *segc_grad(segc_ctx *c, segc_tensor *t) {
    if (t->grad_bf16) fold_bf16_grad(c, t);   /* an f32 gradient from here on */
    if (!t->grad) {
        if (t->is_param) {
            segc_set_error(c, "autograd: parameter '%s' has no gradient buffer bound", t->name ? t->name : "?");
            /* fall through with an arena buffer so callers never write to NULL */
        }
        t->grad = segc_grad_buffer(c, segc_numel(t), true);
    }
    return t->grad;
}

static void check_input_grads(segc_ctx *c, const segc_node *nd) {
    for (int k = 0; k < nd->n_in; k++) {
        const segc_tensor *x = nd->in[k];
        if (!x || (!x->grad && !x->grad_bf16)) continue;
        int64_t n = segc_numel(x);
        for (int64_t i = 0; i < n; i++)
            if ((x->grad && !isfinite(x->grad[i])) || (x->grad_bf16 && !isfinite(segc_bf16_to_f32(x->grad_bf16[i])))) {
                segc_set_error(c, "%s backward: non-finite gradient for input %d at flat index %lld", nd->op, k,
                               (long long)i);
                return;
            }
    }
}

static bool run_tape(segc_ctx *c) {
    for (segc_node *nd = c->tape; nd; nd = nd->prev) {
        if (!nd->out->grad && !nd->out->grad_bf16) {  /* no gradient reached this node */
            if (c->free_activations) release_after_backward(c, nd);
            if (c->node_hook) c->node_hook(c->node_hook_user, nd);
            continue;
        }
        double t0 = c->profile ? segc_now_s() : 0;
        size_t used0 = c->arena.used_total;
        segc_prof_span ps = segc_prof_op_enter_(c, nd->op, SEGC_PROF_BACKWARD);
        refill_inputs(c, nd);
        /* an op that wrote the f32 gradient beside a bf16 one (deciding "fresh" itself) is folded here too */
        if (nd->out->grad_bf16 && (!nd->reads_bf16_grad || nd->out->grad)) fold_bf16_grad(c, nd->out);
        nd->backward(c, nd);
        segc_prof_op_leave_(&ps);
        if (c->profile) {
            segc_profile_entry *e = prof_slot(c, nd->op);
            e->bwd_s += segc_now_s() - t0;
            e->bwd_mib += (double)(c->arena.used_total - used0) / (1 << 20);
        }
        if (c->check_finite) check_input_grads(c, nd);
        if (c->has_err) { c->bf16_leaves = NULL; return false; }
        release_out_grad(c, nd);
        if (c->free_activations) release_after_backward(c, nd);
        if (c->node_hook) c->node_hook(c->node_hook_user, nd);
    }
    /* the graph is consumed (PyTorch's retain_graph=False): a later backward in the same step
     * walks only what was recorded after this one */
    c->tape = NULL;
    /* a leaf that received both an f32 and a bf16 gradient keeps their sum in f32 */
    for (struct segc_leaf_list *l = c->bf16_leaves; l; l = l->next)
        if (l->t->grad && l->t->grad_bf16) fold_bf16_grad(c, l->t);
    c->bf16_leaves = NULL;
    return true;
}

bool segc_backward(segc_ctx *c, segc_tensor *loss) {
    if (!loss) return false;
    if (segc_numel(loss) != 1) {
        char b[96];
        segc_set_error(c, "backward: loss must have one element, found shape %s (use segc_backward_from)",
                       segc_shape_str(loss, b, sizeof b));
        return false;
    }
    if (!loss->requires_grad) {
        segc_set_error(c, "backward: loss does not require grad (no parameter or input on its path?)");
        return false;
    }
    segc_grad(c, loss)[0] += 1.0f;
    return run_tape(c);
}

/* backward from an upstream gradient given in f32 (g) or in bf16 (h) */
static bool backward_seeded(segc_ctx *c, segc_tensor *out, const float *g, const uint16_t *h) {
    if (!out) return false;
    if (!out->requires_grad) { segc_set_error(c, "backward: output does not require grad"); return false; }
    int64_t n = segc_numel(out);
    bool fresh = !out->grad && !out->grad_bf16 && !out->is_param;
    /* a bf16 seed is read as it is only by a producer that takes bf16 gradients */
    if (fresh && !c->retain_grads && (!h || (c->bf16_grads && out->producer && out->producer->reads_bf16_grad))) {
        /* backward reads the caller's buffer in place (no copy): backward functions never
         * write their output's gradient, none aliases it to an input (borrowed_grad), and
         * the tape drops it once consumed */
        if (h) out->grad_bf16 = (uint16_t *)h, c->borrowed_grad_bf16 = h;
        else out->grad = (float *)g, c->borrowed_grad = g;
        bool ok = run_tape(c);
        c->borrowed_grad = NULL;
        c->borrowed_grad_bf16 = NULL;
        if (h && out->grad_bf16 == h) out->grad_bf16 = NULL;
        if (!h && out->grad == g) out->grad = NULL;
        return ok;
    }
    if (fresh) out->grad = segc_grad_buffer(c, n, false);   /* copied into: no zeroing pass */
    float *dst = segc_grad(c, out);
#pragma omp parallel for simd schedule(static) if (n >= 65536)
    for (int64_t i = 0; i < n; i++) {
        float v = h ? segc_bf16_to_f32(h[i]) : g[i];
        dst[i] = fresh ? v : dst[i] + v;
    }
    return run_tape(c);
}

bool segc_backward_from(segc_ctx *c, segc_tensor *out, const float *g) { return backward_seeded(c, out, g, NULL); }
bool segc_backward_from_bf16(segc_ctx *c, segc_tensor *out, const uint16_t *g) {
    return backward_seeded(c, out, NULL, g);
}

bool segc_set_grad_enabled(segc_ctx *c, bool on) {
    bool prev = c->grad_enabled;
    c->grad_enabled = on;
    return prev;
}
