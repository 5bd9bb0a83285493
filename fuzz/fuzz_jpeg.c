/* libFuzzer target: JPEG decoding (libjpeg-turbo behind the setjmp error
 * manager) in every read mode. */
#include "segc/image_io.h"

#define FUZZ_MAX_PIXELS (1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int h, w, c;
    char err[256];
    if (!segc_image_probe(data, size, &h, &w, &c, err, sizeof err)) return 0;
    if ((long long)h * w > FUZZ_MAX_PIXELS) return 0;
    for (int mode = SEGC_READ_NATIVE; mode <= SEGC_READ_LABEL; mode++) {
        segc_image im;
        if (!segc_jpeg_decode(data, size, (segc_read_mode)mode, &im, err, sizeof err)) {
            if (!err[0] || im.data) __builtin_trap();
            continue;
        }
        if (im.h != h || im.w != w || !im.data) __builtin_trap();
        if (mode == SEGC_READ_RGB && im.c != 3) __builtin_trap();
        if (mode == SEGC_READ_GRAY && im.c != 1) __builtin_trap();
        segc_image_free(&im);
    }
    return 0;
}
