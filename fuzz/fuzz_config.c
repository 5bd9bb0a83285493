/* libFuzzer target: the YAML config loader with dotted overrides. The input is
 * YAML text, then (after the first NUL byte) override lines "key=value"
 * separated by newlines; defaults, the YAML, each override and the cross-field
 * checks run in order, as `segc train CONFIG key=value ...` does. Every
 * refusal must carry a message; an accepted config must serialise and load
 * back (the resolved YAML that checkpoints store). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    size_t yl = strlen(buf);   /* YAML up to the first NUL */
    static segc_config c;
    char err[1024] = "";
    segc_config_defaults(&c);
    bool ok = segc_config_load_string(&c, buf, "fuzz.yaml", err, sizeof err);
    for (char *line = yl < size ? buf + yl + 1 : NULL; ok && line && line < buf + size;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (*line) ok = segc_config_override(&c, line, err, sizeof err);
        line = nl ? nl + 1 : NULL;
    }
    if (ok) ok = segc_config_finish(&c, err, sizeof err);
    if (!ok && !err[0]) __builtin_trap();
    if (ok) {
        char *y = segc_config_to_yaml(&c);
        if (!y) __builtin_trap();
        static segc_config d;
        segc_config_defaults(&d);
        if (!segc_config_load_string(&d, y, "resolved.yaml", err, sizeof err)) {
            fprintf(stderr, "resolved YAML does not load back: %s\n%s\n", err, y);
            __builtin_trap();
        }
        free(y);
    }
    free(buf);
    return 0;
}
