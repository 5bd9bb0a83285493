/* Trace profiler (see segc/profile.h): per-thread event buffers, the Chrome
 * trace writer and the per-op summary. */
#include "segc/profile.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int segc_prof_recording_;
int64_t segc_flops_counter_;

#define MAX_DEPTH 64
/* a runaway window (say, a whole long run) stops recording instead of exhausting memory */
#define MAX_EVENTS_PER_THREAD (16 * 1024 * 1024)

typedef struct prof_event {
    const char *name, *cat;
    int64_t t0_ns, dur_ns, self_ns;
    int64_t bytes, self_bytes, flops, self_flops;
    int64_t iter;
} prof_event;

typedef struct thread_buf {
    struct thread_buf *next;
    long os_tid;
    char name[32];
    prof_event *ev;
    int64_t n, cap, dropped;
    int depth;
    /* what the children of the open slice at each depth took, so a slice's self
     * time / bytes / flops exclude nested slices */
    int64_t child_ns[MAX_DEPTH], child_bytes[MAX_DEPTH], child_flops[MAX_DEPTH];
} thread_buf;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static thread_buf *g_bufs;        /* every thread's buffer of the current run (under g_lock) */
static int g_gen = 1;             /* profiling run; a thread's cached buffer is valid only for its run */
static bool g_started;
static char *g_path;
static int64_t g_t0_ns;
static bool g_has_window;
static int64_t g_first, g_last;
static segc_prof_span g_step;     /* the open "step" slice (control thread) */

static _Thread_local thread_buf *tl_buf;
static _Thread_local int tl_gen;

int64_t segc_prof_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_recording(bool on) { __atomic_store_n(&segc_prof_recording_, on ? 1 : 0, __ATOMIC_RELAXED); }

static thread_buf *this_thread(void) {
    int gen = __atomic_load_n(&g_gen, __ATOMIC_ACQUIRE);
    if (tl_buf && tl_gen == gen) return tl_buf;
    thread_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->os_tid = (long)syscall(SYS_gettid);
    if (b->os_tid == (long)getpid()) snprintf(b->name, sizeof b->name, "main");
    else snprintf(b->name, sizeof b->name, "thread %ld", b->os_tid);
    pthread_mutex_lock(&g_lock);
    b->next = g_bufs;
    g_bufs = b;
    pthread_mutex_unlock(&g_lock);
    tl_buf = b;
    tl_gen = gen;
    return b;
}

void segc_profiler_thread_name(const char *name) {
    thread_buf *b = g_started ? this_thread() : NULL;
    if (b) snprintf(b->name, sizeof b->name, "%s", name);
}

static prof_event *push_event(thread_buf *b) {
    if (b->n == b->cap) {
        if (b->cap >= MAX_EVENTS_PER_THREAD) { b->dropped++; return NULL; }
        int64_t cap = b->cap ? 2 * b->cap : 4096;
        prof_event *e = realloc(b->ev, (size_t)cap * sizeof *e);
        if (!e) { b->dropped++; return NULL; }
        b->ev = e;
        b->cap = cap;
    }
    return &b->ev[b->n++];
}

void segc_prof_begin_(segc_prof_span *s, const char *name, const char *cat, const segc_ctx *ctx) {
    thread_buf *b = this_thread();
    if (!b) return;
    s->name = name;
    s->cat = cat;
    s->ctx = ctx;
    s->arena0 = ctx ? ctx->arena.used_total : 0;
    s->flops0 = segc_flops_read();
    s->gen = tl_gen;
    s->depth = b->depth;
    if (b->depth < MAX_DEPTH) b->child_ns[b->depth] = b->child_bytes[b->depth] = b->child_flops[b->depth] = 0;
    b->depth++;
    s->t0_ns = segc_prof_now_ns();   /* last, so the slice does not include its own bookkeeping */
}

/* appends a finished slice at depth d and charges it to its parent. Arena growth nests (a
 * parent's includes its children's); bytes a caller gives are the slice's own and do not. */
static void finish(thread_buf *b, const segc_prof_span *s, int64_t t1, int64_t bytes, int64_t flops, bool arena) {
    int d = s->depth;
    int64_t dur = t1 - s->t0_ns;
    b->depth = d;   /* a slice left open inside this one is dropped from the nesting here */
    prof_event *e = push_event(b);
    bool tracked = d < MAX_DEPTH;
    if (e)
        *e = (prof_event){.name = s->name, .cat = s->cat, .t0_ns = s->t0_ns, .dur_ns = dur,
                          .self_ns = dur - (tracked ? b->child_ns[d] : 0), .bytes = bytes,
                          .self_bytes = arena ? bytes - (tracked ? b->child_bytes[d] : 0) : bytes, .flops = flops,
                          .self_flops = flops - (tracked ? b->child_flops[d] : 0), .iter = s->iter};
    if (d > 0 && d - 1 < MAX_DEPTH) {
        b->child_ns[d - 1] += dur;
        if (arena) b->child_bytes[d - 1] += bytes;
        b->child_flops[d - 1] += flops;
    }
}

void segc_prof_end_(segc_prof_span *s, int64_t bytes) {
    int64_t t1 = segc_prof_now_ns();
    thread_buf *b = tl_buf;
    /* a slice opened in an earlier profiling run (stopped since) is dropped */
    if (!b || tl_gen != s->gen || s->gen != __atomic_load_n(&g_gen, __ATOMIC_ACQUIRE)) { s->t0_ns = 0; return; }
    if (s->ctx) {
        size_t now = s->ctx->arena.used_total;
        bytes = now > s->arena0 ? (int64_t)(now - s->arena0) : 0;
    }
    finish(b, s, t1, bytes, segc_flops_read() - s->flops0, s->ctx != NULL);
    s->t0_ns = 0;
}

void segc_prof_event(const char *name, const char *cat, int64_t t0_ns, int64_t t1_ns, int64_t bytes) {
    if (!segc_profiler_recording()) return;
    thread_buf *b = this_thread();
    if (!b) return;
    segc_prof_span s = {.name = name, .cat = cat, .t0_ns = t0_ns, .depth = b->depth};
    if (b->depth < MAX_DEPTH) b->child_ns[b->depth] = b->child_bytes[b->depth] = b->child_flops[b->depth] = 0;
    finish(b, &s, t1_ns, bytes, 0, false);
}

/* ---- control ---- */

bool segc_profiler_start(const char *trace_path) {
    if (g_started) return false;
    free(g_path);
    g_path = trace_path ? strdup(trace_path) : NULL;
    g_started = true;
    g_has_window = false;
    g_step = (segc_prof_span){0};
    g_t0_ns = segc_prof_now_ns();
    set_recording(true);
    return true;
}

bool segc_profiler_active(void) { return g_started; }

void segc_profiler_set_window(int64_t first, int64_t last) {
    g_has_window = true;
    g_first = first;
    g_last = last;
    if (g_started) set_recording(false);   /* until segc_profiler_iter enters the window */
}

void segc_profiler_pause(void) {
    segc_prof_end(&g_step, 0);
    set_recording(false);
}

bool segc_profiler_iter(int64_t iter) {
    if (!g_started) return false;
    segc_prof_end(&g_step, 0);
    bool in = !g_has_window || (iter >= g_first && iter <= g_last);
    set_recording(in);
    if (in) {
        g_step = segc_prof_begin("step", SEGC_PROF_STEP);
        g_step.iter = iter;
    }
    return in;
}

int64_t segc_profiler_event_count(void) {
    int64_t n = 0;
    pthread_mutex_lock(&g_lock);
    for (thread_buf *b = g_bufs; b; b = b->next) n += b->n;
    pthread_mutex_unlock(&g_lock);
    return n;
}

bool segc_profiler_parse_window(const char *s, int64_t *first, int64_t *last) {
    if (!s || !*s) return false;
    char *end;
    long long a = strtoll(s, &end, 10), b;
    if (end == s || a < 0) return false;
    if (*end == '\0') b = a;
    else if (*end == ':') {
        const char *t = end + 1;
        b = strtoll(t, &end, 10);
        if (end == t || *end) return false;
    } else return false;
    if (b < a) return false;
    *first = a;
    *last = b;
    return true;
}

/* ---- trace file ---- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static bool write_trace(const char *path, char *err, size_t errlen) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return segc_errorf(err, errlen, "profile: trace path too long");
    FILE *f = fopen(tmp, "w");
    if (!f) return segc_errorf(err, errlen, "profile: cannot write %s", tmp);
    fputs("{\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"segc\"}}", f);
    for (thread_buf *b = g_bufs; b; b = b->next) {
        fprintf(f, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%ld,\"args\":{\"name\":", b->os_tid);
        json_str(f, b->name);
        fputs("}}", f);
        for (int64_t i = 0; i < b->n; i++) {
            const prof_event *e = &b->ev[i];
            fputs(",\n{\"name\":", f);
            json_str(f, e->name);
            fputs(",\"cat\":", f);
            json_str(f, e->cat);
            /* microseconds from the start of the run, ns resolution */
            fprintf(f, ",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":%ld,\"args\":{\"self_us\":%.3f",
                    (double)(e->t0_ns - g_t0_ns) / 1e3, (double)e->dur_ns / 1e3, b->os_tid, (double)e->self_ns / 1e3);
            if (e->bytes) fprintf(f, ",\"bytes\":%lld", (long long)e->bytes);
            if (e->flops) fprintf(f, ",\"flops\":%lld", (long long)e->flops);
            if (e->cat && !strcmp(e->cat, SEGC_PROF_STEP)) fprintf(f, ",\"iter\":%lld", (long long)e->iter);
            fputs("}}", f);
        }
    }
    fputs("\n],\"displayTimeUnit\":\"ms\"}\n", f);
    bool ok = !ferror(f);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return segc_errorf(err, errlen, "profile: writing %s failed", path);
    }
    return true;
}

/* ---- summary ---- */

typedef struct row {
    const char *name, *cat;   /* cat NULL: an op (forward + backward) */
    int64_t fwd_ns, bwd_ns, other_ns, fwd_calls, bwd_calls, calls, bytes, flops;
} row;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static bool is_op_cat(const char *cat) {
    return cat && (!strcmp(cat, SEGC_PROF_FORWARD) || !strcmp(cat, SEGC_PROF_BACKWARD));
}

static int row_cmp(const void *a, const void *b) {
    const row *x = a, *y = b;
    int64_t tx = x->fwd_ns + x->bwd_ns + x->other_ns, ty = y->fwd_ns + y->bwd_ns + y->other_ns;
    return tx < ty ? 1 : tx > ty ? -1 : strcmp(x->name, y->name);
}

static void print_summary(FILE *f) {
    enum { SLOTS = 2048 };
    row *rows = calloc(SLOTS, sizeof *rows);
    if (!rows) return;
    int64_t total = 0, t_lo = INT64_MAX, t_hi = INT64_MIN, dropped = 0, n_ev = 0;
    for (thread_buf *b = g_bufs; b; b = b->next) {
        dropped += b->dropped;
        for (int64_t i = 0; i < b->n; i++) {
            const prof_event *e = &b->ev[i];
            bool op = is_op_cat(e->cat);
            const char *cat = op ? NULL : (e->cat ? e->cat : "");
            uint64_t h = hash_str(e->name) ^ (op ? 0 : hash_str(cat) * 31);
            row *r = NULL;
            for (int k = 0; k < SLOTS; k++) {   /* open addressing; distinct names are few */
                row *c = &rows[(h + (uint64_t)k) % SLOTS];
                if (!c->name) { c->name = e->name; c->cat = cat; r = c; break; }
                if (!strcmp(c->name, e->name) && (op ? !c->cat : c->cat && !strcmp(c->cat, cat))) { r = c; break; }
            }
            if (!r) continue;
            n_ev++;
            if (!op) { r->other_ns += e->self_ns; r->calls++; }
            else if (!strcmp(e->cat, SEGC_PROF_FORWARD)) { r->fwd_ns += e->self_ns; r->fwd_calls++; }
            else { r->bwd_ns += e->self_ns; r->bwd_calls++; }
            r->bytes += e->self_bytes;
            r->flops += e->self_flops;
            total += e->self_ns;
            if (e->t0_ns < t_lo) t_lo = e->t0_ns;
            if (e->t0_ns + e->dur_ns > t_hi) t_hi = e->t0_ns + e->dur_ns;
        }
    }
    int n = 0;
    for (int k = 0; k < SLOTS; k++) if (rows[k].name) rows[n++] = rows[k];
    qsort(rows, (size_t)n, sizeof *rows, row_cmp);
    fprintf(f, "profile: %lld events, %.1f ms wall from first to last, %.1f ms in slices (self times)%s\n",
            (long long)n_ev, n_ev ? (double)(t_hi - t_lo) / 1e6 : 0.0, (double)total / 1e6,
            dropped ? " (events dropped: buffer limit)" : "");
    fprintf(f, "%-28s %10s %10s %7s %7s %10s %9s %7s\n", "op", "fwd ms", "bwd ms", "calls", "share", "MiB", "GFLOP",
            "GFLOP/s");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        int64_t t = r->fwd_ns + r->bwd_ns + r->other_ns;
        char label[64];
        /* other categories are labelled by their category; their time is in the fwd column */
        if (r->cat) snprintf(label, sizeof label, "[%s] %s", r->cat, !strcmp(r->name, "step") ? "(outside slices)" : r->name);
        else snprintf(label, sizeof label, "%s", r->name);
        fprintf(f, "%-28s %10.2f %10.2f %7lld %6.1f%% %10.1f %9.2f %7.1f\n", label,
                (double)(r->fwd_ns + r->other_ns) / 1e6, (double)r->bwd_ns / 1e6,
                (long long)(r->cat ? r->calls : r->fwd_calls ? r->fwd_calls : r->bwd_calls),
                total > 0 ? 100.0 * (double)t / (double)total : 0.0, (double)r->bytes / (1 << 20),
                (double)r->flops / 1e9, t > 0 ? (double)r->flops / (double)t : 0.0);
    }
    free(rows);
}

bool segc_profiler_stop_and_write(FILE *summary, char *err, size_t errlen) {
    if (!g_started) return true;
    segc_prof_end(&g_step, 0);
    set_recording(false);
    g_started = false;
    bool ok = true;
    pthread_mutex_lock(&g_lock);
    if (g_path) ok = write_trace(g_path, err, errlen);
    if (summary) print_summary(summary);
    /* a new run starts with fresh buffers on every thread */
    __atomic_add_fetch(&g_gen, 1, __ATOMIC_RELEASE);
    for (thread_buf *b = g_bufs, *next; b; b = next) {
        next = b->next;
        free(b->ev);
        free(b);
    }
    g_bufs = NULL;
    pthread_mutex_unlock(&g_lock);
    free(g_path);
    g_path = NULL;
    return ok;
}
