/* Step arena: bump allocation in chunks; the first reset after growth
 * consolidates into one block of the high-water size (no allocation after). */
#include <omp.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/core.h"

struct segc_arena_chunk {
    segc_arena_chunk *next;   /* older chunk */
    size_t cap, used;
    unsigned char *mem;
};

static segc_arena_chunk *chunk_new(size_t cap) {
    segc_arena_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->next = NULL;
    c->cap = cap;
    c->used = 0;
    c->mem = aligned_alloc(SEGC_ALIGN, (cap + SEGC_ALIGN - 1) / SEGC_ALIGN * SEGC_ALIGN);
    if (!c->mem) { free(c); return NULL; }
    return c;
}

bool segc_arena_poison_from_env(void) {
    const char *v = getenv("SEGC_ARENA_POISON");
    return v && *v && strcmp(v, "0") != 0;
}

size_t segc_arena_max_from_env(void) {
    const char *v = getenv("SEGC_ARENA_MAX");
    char *end;
    unsigned long long b = v && *v ? strtoull(v, &end, 10) : 0;
    return v && *v && *end == 0 ? (size_t)b : 0;
}

void segc_arena_init(segc_arena *a, size_t initial_bytes) {
    memset(a, 0, sizeof *a);
    a->poison = segc_arena_poison_from_env();
    a->max_bytes = segc_arena_max_from_env();
    if (a->max_bytes && initial_bytes > a->max_bytes) initial_bytes = a->max_bytes;
    if (initial_bytes) {
        a->head = chunk_new(initial_bytes);
        a->n_chunks = a->head ? 1 : 0;
        a->cap_total = a->head ? initial_bytes : 0;
    }
}

void *segc_arena_alloc(segc_arena *a, size_t bytes) {
    if (bytes > SIZE_MAX / 2) {   /* rounding up would wrap to a tiny block: an overflowed size upstream */
        fprintf(stderr, "segc: step arena asked for %zu bytes (an overflowed tensor size)\n", bytes);
        abort();
    }
    size_t need = (bytes + SEGC_ALIGN - 1) / SEGC_ALIGN * SEGC_ALIGN;
    if (need == 0) need = SEGC_ALIGN;
    if (!a->head || a->head->used + need > a->head->cap) {
        size_t cap = a->head ? a->head->cap * 2 : (size_t)1 << 20;
        if (cap < need) cap = need;
        size_t lim = a->limit && (!a->max_bytes || a->limit < a->max_bytes) ? a->limit : a->max_bytes;
        size_t room = lim > a->cap_total ? lim - a->cap_total : 0;   /* under the cap */
        if (lim && cap > room) cap = room > need ? room : need;
        segc_arena_chunk *c = lim && need > room ? NULL : chunk_new(cap);
        if (!c && cap > need && !(lim && need > room)) c = chunk_new(need);   /* doubling was too greedy */
        if (!c) {
            a->failed_need = need;
            /* a caller that can retry smaller (grad_accum auto) catches the failure; never from
             * inside a parallel region, where jumping out is undefined */
            if (a->oom_jmp && !omp_in_parallel()) longjmp(*(jmp_buf *)a->oom_jmp, 1);
            /* callers do not check arena pointers (a step has hundreds of
             * allocations): stop here, saying how much was needed, rather than
             * hand out NULL and crash somewhere unrelated */
            fprintf(stderr,
                    "segc: out of memory: the step arena could not grow by %zu bytes (%.1f MiB) for a %zu-byte "
                    "allocation; it already holds %zu bytes (%.1f MiB) in %zu chunks, high-water %zu bytes%s. "
                    "Reduce data.batch_size or data.crop_size, or use train.dtype=bf16\n",
                    need, need / 1048576.0, bytes, a->used_total, a->used_total / 1048576.0, a->n_chunks, a->high_water,
                    lim ? " (at its limit)" : "");
            abort();
        }
        a->cap_total += c->cap;
        c->next = a->head;
        a->head = c;
        a->n_chunks++;
    }
    void *p = a->head->mem + a->head->used;
    if (a->poison) memset(p, 0xff, need);
    a->head->used += need;
    a->used_total += need;
    if (a->used_total > a->high_water) a->high_water = a->used_total;
    return p;
}

void *segc_arena_calloc(segc_arena *a, size_t bytes) {
    void *p = segc_arena_alloc(a, bytes);
    memset(p, 0, bytes);
    return p;
}

static void free_chunks(segc_arena *a, segc_arena_chunk *c) {
    while (c) { segc_arena_chunk *n = c->next; a->cap_total -= c->cap; free(c->mem); free(c); c = n; }
}

segc_arena_mark segc_arena_get_mark(const segc_arena *a) {
    return (segc_arena_mark){a->head, a->head ? a->head->used : 0, a->used_total};
}

void segc_arena_rewind(segc_arena *a, segc_arena_mark m) {
    while (a->head && a->head != m.chunk) {   /* chunks added since the mark (first steps only) */
        segc_arena_chunk *c = a->head;
        a->head = c->next;
        a->cap_total -= c->cap;
        free(c->mem);
        free(c);
        a->n_chunks--;
    }
    if (a->head) a->head->used = m.used;
    a->used_total = m.used_total;
}

void segc_arena_reset(segc_arena *a) {
    /* consolidate after growth (a rewind may have dropped the chunks that grew) */
    if (a->n_chunks > 1 || (a->head && a->high_water > a->head->cap)) {
        free_chunks(a, a->head);
        a->head = chunk_new(a->high_water);
        a->n_chunks = a->head ? 1 : 0;
        a->cap_total = a->head ? a->high_water : 0;
    } else if (a->head) {
        a->head->used = 0;
    }
    a->used_total = 0;
}

void segc_arena_free(segc_arena *a) {
    free_chunks(a, a->head);
    memset(a, 0, sizeof *a);
}
