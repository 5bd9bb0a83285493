/* libFuzzer target: PNG decoding in every read mode, and encode/decode round
 * trips of what decodes. Any crash, sanitizer report or round-trip mismatch is
 * a finding. */
#include <stdlib.h>
#include <string.h>

#include "segc/image_io.h"

#define FUZZ_MAX_PIXELS (1 << 22)   /* keep allocations inside libFuzzer's rss limit */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int h, w, c;
    char err[256];
    if (!segc_image_probe(data, size, &h, &w, &c, err, sizeof err)) return 0;
    if ((long long)h * w > FUZZ_MAX_PIXELS) return 0;
    for (int mode = SEGC_READ_NATIVE; mode <= SEGC_READ_LABEL; mode++) {
        segc_image im;
        if (!segc_png_decode(data, size, (segc_read_mode)mode, &im, err, sizeof err)) {
            if (!err[0] || im.data) __builtin_trap();   /* failures must explain themselves and own nothing */
            continue;
        }
        if (im.h != h || im.w != w || !im.data) __builtin_trap();
        if (mode == SEGC_READ_NATIVE && im.dtype == SEGC_U8) {   /* what decodes re-encodes losslessly */
            void *png;
            size_t len;
            segc_image back;
            if (!segc_png_encode(&im, NULL, 0, &png, &len, err, sizeof err)) __builtin_trap();
            if (!segc_png_decode(png, len, SEGC_READ_NATIVE, &back, err, sizeof err)) __builtin_trap();
            if (back.c != im.c || memcmp(back.data, im.data, (size_t)h * w * im.c)) __builtin_trap();
            segc_image_free(&back);
            free(png);
        }
        segc_image_free(&im);
    }
    return 0;
}
