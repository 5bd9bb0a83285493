/* A growing text buffer for the HTML / CSV / report writers: appends never
 * fail midway; an allocation failure sets oom and later appends do nothing,
 * so a writer checks once at the end. Free with free(b->p). */
#ifndef SEGC_STRBUF_H
#define SEGC_STRBUF_H
#include <stdbool.h>
#include <stddef.h>

typedef struct segc_strbuf {
    char *p;        /* NUL-terminated text (NULL before the first append) */
    size_t len, cap;
    bool oom;
} segc_strbuf;

void segc_sb_put(segc_strbuf *b, const char *s, size_t n);
/* printf-style append, any length */
void segc_sb_printf(segc_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s with < > & " escaped for HTML text and attributes (NULL: nothing) */
void segc_sb_html(segc_strbuf *b, const char *s);

#endif
