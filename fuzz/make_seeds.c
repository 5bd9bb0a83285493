/* Writes seed corpora for the fuzz targets into DIR/{png,jpeg,coco,nifti}:
 * the small PNG/JPEG files of the test fixture, and synthetic NIfTI headers
 * and COCO documents. Usage: make_seeds DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nifti1.h>

#include "segc/image_io.h"
#include "segc/safetensors.h"

static int write_seed(const char *dir, const char *kind, const char *name, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, kind);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", dir, kind, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        if (f) fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

static size_t nifti_seed(uint8_t *buf, int dt, int bitpix, int nx, int ny, int nz, int nt, float slope) {
    nifti_1_header h;
    memset(&h, 0, sizeof h);
    h.sizeof_hdr = 348;
    h.dim[0] = (short)(nt > 1 ? 4 : 3), h.dim[1] = (short)nx, h.dim[2] = (short)ny, h.dim[3] = (short)nz;
    h.dim[4] = (short)nt, h.dim[5] = h.dim[6] = h.dim[7] = 1;
    h.datatype = (short)dt, h.bitpix = (short)bitpix, h.vox_offset = 352, h.scl_slope = slope, h.scl_inter = 0.5f;
    memcpy(h.magic, "n+1", 4);
    memcpy(buf, &h, sizeof h);
    size_t data = (size_t)nx * ny * nz * nt * bitpix / 8;
    for (size_t i = 0; i < data; i++) buf[352 + i] = (uint8_t)(i * 31 + 7);
    return 352 + data;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    mkdir(dir, 0755);
    int bad = 0;
    char err[256];
    segc_st_file *f = segc_st_open("tests/fixtures/data/data.safetensors", err, sizeof err);
    if (!f) {
        fprintf(stderr, "make_seeds: %s\n", err);
        return 1;
    }
    for (int i = 0; i < segc_st_count(f); i++) {
        const segc_st_entry *e = segc_st_at(f, i);
        const char *slash = strrchr(e->name, '/');
        if (!slash || strcmp(slash, "/file")) continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(slash - e->name), e->name);
        segc_image_format fmt = segc_image_sniff(e->data, e->nbytes);
        bad |= write_seed(dir, fmt == SEGC_FMT_PNG ? "png" : "jpeg", name, e->data, e->nbytes);
    }
    segc_st_close(f);
    uint8_t buf[4096];
    bad |= write_seed(dir, "nifti", "u8", buf, nifti_seed(buf, DT_UINT8, 8, 3, 2, 2, 1, 0));
    bad |= write_seed(dir, "nifti", "f32_4d", buf, nifti_seed(buf, DT_FLOAT32, 32, 2, 2, 2, 3, 2.f));
    bad |= write_seed(dir, "nifti", "i16", buf, nifti_seed(buf, DT_INT16, 16, 4, 3, 2, 1, 0.25f));
    bad |= write_seed(dir, "nifti", "f64", buf, nifti_seed(buf, DT_FLOAT64, 64, 2, 2, 1, 1, 0));
    static const char *const coco[] = {
        "{\"images\":[{\"id\":1,\"file_name\":\"a.jpg\",\"width\":640,\"height\":480},"
        "{\"id\":2,\"file_name\":\"b.jpg\",\"width\":20,\"height\":10}],"
        "\"annotations\":[{\"id\":5,\"image_id\":1,\"category_id\":3,\"bbox\":[1.5,2,30,40],\"area\":1200,\"iscrowd\":0},"
        "{\"id\":6,\"image_id\":2,\"category_id\":1,\"bbox\":[0,0,5,5],\"area\":25,\"iscrowd\":1}],"
        "\"categories\":[{\"id\":3,\"name\":\"car\"},{\"id\":1,\"name\":\"person\"}]}",
        "{\"images\":[],\"annotations\":[],\"categories\":[{\"id\":1,\"name\":\"x\"}]}",
    };
    for (size_t k = 0; k < sizeof coco / sizeof *coco; k++) {
        char name[16];
        snprintf(name, sizeof name, "doc%zu", k);
        bad |= write_seed(dir, "coco", name, coco[k], strlen(coco[k]));
    }
    return bad;
}
