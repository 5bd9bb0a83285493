/* libFuzzer target: NIfTI-1 header validation and decoding from memory, the
 * header through nifticlib's interpretation, and (for small inputs) the file
 * path through nifti_image_read and our voxel reader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nifti1_io.h>

#include "segc/image_io.h"

#define FUZZ_MAX_VOXELS (1 << 22)

static char tmp_path[64];

static void remove_tmp(void) { unlink(tmp_path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    segc_nifti_info info;
    char err[256] = "";
    if (!segc_nifti_parse_header(data, size, &info, err, sizeof err)) {
        if (!err[0]) __builtin_trap();
        return 0;
    }
    long long nvox = 1;
    for (int i = 0; i < 7; i++) nvox *= info.dim[i];
    if (nvox > FUZZ_MAX_VOXELS) return 0;
    /* nifticlib's view of a header we accepted */
    nifti_1_header hdr;
    memcpy(&hdr, data, sizeof hdr);
    if (info.swapped) swap_nifti_header(&hdr, 1);
    nifti_set_debug_level(0);
    nifti_image *nim = nifti_convert_nhdr2nim(hdr, "fuzz.nii");
    if (nim) nifti_image_free(nim);
    segc_volume v;
    if (segc_nifti_decode(data, size, &v, err, sizeof err)) segc_volume_free(&v);
    /* through a file: nifti_image_read for the header, our reader for the voxels */
    if (size <= 1 << 16 && info.single_file) {
        if (!tmp_path[0]) {
            snprintf(tmp_path, sizeof tmp_path, "/tmp/segc_fuzz_%d.nii", (int)getpid());
            atexit(remove_tmp);
        }
        FILE *f = fopen(tmp_path, "wb");
        if (!f) return 0;
        fwrite(data, 1, size, f);
        fclose(f);
        if (segc_nifti_read(tmp_path, &v, err, sizeof err)) segc_volume_free(&v);
        else if (!err[0]) __builtin_trap();
    }
    return 0;
}
