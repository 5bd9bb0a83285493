/* Private to src/train/config*.c: the configuration schema (one entry per YAML key) shared by
 * the parser (config.c) and the resolved-config writer (config_emit.c). */
#ifndef SEGC_TRAIN_CONFIG_SCHEMA_H
#define SEGC_TRAIN_CONFIG_SCHEMA_H

#include <stddef.h>

#include "segc/config.h"

typedef enum { K_INT, K_I64, K_DBL, K_BOOL, K_STR, K_INTS, K_DBLS, K_MULT, K_CUSTOM, K_DUR } kind_t;

typedef struct field {
    const char *key;
    kind_t kind;
    size_t off;
    int n;              /* list length (fixed) or maximum (variable) */
    size_t count_off;   /* variable lists: offset of the int count; NO_COUNT otherwise */
    size_t size;        /* strings: buffer size */
    const char *choices;   /* strings: "a|b|c" or NULL */
    const char *help;
} field;


#define NO_COUNT ((size_t)-1)   /* field.count_off of fixed-length lists */

extern const field segc_cfg_schema[];
extern const int segc_cfg_n_fields;

/* growable text buffer (p NULL until the first write); printf appends, growing as needed (on
 * allocation failure the text is cut short) */
typedef struct segc_cfg_sbuf { char *p; size_t len, cap; } segc_cfg_sbuf;
void segc_cfg_sb_printf(segc_cfg_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
