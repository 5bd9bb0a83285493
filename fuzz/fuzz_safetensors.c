/* libFuzzer target: the safetensors reader (header JSON, shapes, dtypes,
 * offsets) over arbitrary bytes. An accepted file must describe tensors that
 * lie inside the input with byte sizes matching their shapes: every byte of
 * every tensor is read (ASan flags any out-of-range pointer). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "segc/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512] = "";
    segc_st_file *f = segc_st_open_mem(data, size, "fuzz.safetensors", err, sizeof err);
    if (!f) {
        if (!err[0]) __builtin_trap();   /* every refusal says why */
        return 0;
    }
    volatile unsigned sum = 0;
    for (int i = 0; i < segc_st_count(f); i++) {
        const segc_st_entry *e = segc_st_at(f, i);
        const uint8_t *p = e->data;
        if (e->nbytes && (p < data || p + e->nbytes > data + size)) __builtin_trap();
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= (uint64_t)e->shape[d];
        if (e->dtype_known && numel * segc_dtype_size(e->dtype) != e->nbytes) __builtin_trap();
        for (size_t k = 0; k < e->nbytes; k++) sum += p[k];
        if (segc_st_get(f, e->name) != e) __builtin_trap();   /* names are unique */
    }
    (void)segc_st_meta(f, "format");
    segc_st_close(f);
    return 0;
}
