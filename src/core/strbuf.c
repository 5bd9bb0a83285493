#include "segc/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void segc_sb_put(segc_strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1 << 14;
        while (nc < b->len + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = true; return; }
        b->p = np, b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void segc_sb_printf(segc_strbuf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof tmp) { segc_sb_put(b, tmp, (size_t)k); return; }
    char *big = malloc((size_t)k + 1);   /* longer than tmp: format again into a buffer of its size */
    if (!big) { b->oom = true; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)k + 1, fmt, ap);
    va_end(ap);
    segc_sb_put(b, big, (size_t)k);
    free(big);
}

void segc_sb_html(segc_strbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': segc_sb_put(b, "&lt;", 4); break;
        case '>': segc_sb_put(b, "&gt;", 4); break;
        case '&': segc_sb_put(b, "&amp;", 5); break;
        case '"': segc_sb_put(b, "&quot;", 6); break;
        default: segc_sb_put(b, s, 1);
        }
    }
}
