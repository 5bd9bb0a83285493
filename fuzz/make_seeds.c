/* Writes seed corpora for the fuzz targets into DIR/{png,jpeg,coco,nifti,
 * safetensors,ckpt,config}: the small PNG/JPEG files of the test fixture,
 * synthetic NIfTI headers and COCO documents, small safetensors files, a real
 * checkpoint state of the fuzz_ckpt model, and the shipped configs with
 * override lines. Usage: make_seeds DIR (from the repository root) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti1.h>

#include "segc/image_io.h"
#include "segc/safetensors.h"
#include "fuzz_ckpt_model.h"

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

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    *n = b ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}

/* small safetensors files from the writer: dtypes, metadata, an empty tensor */
static int safetensors_seeds(const char *dir) {
    char tmp[] = "/tmp/segc_seed_st_XXXXXX", err[256];
    int fd = mkstemp(tmp), bad = 0;
    if (fd < 0) return 1;
    close(fd);
    float v[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    int32_t iv[3] = {1, 2, -3};
    segc_st_writer *w = segc_st_writer_new();
    segc_st_writer_add(w, "w", SEGC_F32, 2, (const int64_t[]){2, 3}, v);
    segc_st_writer_add(w, "i", SEGC_I32, 1, (const int64_t[]){3}, iv);
    segc_st_writer_add(w, "e", SEGC_F32, 2, (const int64_t[]){0, 5}, v);
    segc_st_writer_meta(w, "format", "pt");
    bad |= !segc_st_writer_save(w, tmp, err, sizeof err);
    segc_st_writer_free(w);
    size_t n;
    char *b = slurp(tmp, &n);
    if (b) bad |= write_seed(dir, "safetensors", "small", b, n);
    free(b);
    w = segc_st_writer_new();
    segc_st_writer_add(w, "s", SEGC_BF16, 0, NULL, iv);
    bad |= !segc_st_writer_save(w, tmp, err, sizeof err);
    segc_st_writer_free(w);
    b = slurp(tmp, &n);
    if (b) bad |= write_seed(dir, "safetensors", "scalar_bf16", b, n);
    free(b);
    unlink(tmp);
    return bad || !n;
}

/* a real state file of the fuzz_ckpt model (the hash matches its weights) */
static int ckpt_seed(const char *dir) {
    char tmp[] = "/tmp/segc_seed_ck_XXXXXX", err[512], p[128];
    if (!mkdtemp(tmp)) return 1;
    segc_params P;
    fuzz_ckpt_params(&P);
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 1e-3);
    segc_optimizer *opt = segc_optimizer_new(&P, &oc, err, sizeof err);
    segc_train_state st = {.iter = 3, .best_metric = 0.5, .best_iter = 2, .elapsed_s = 1.5, .loss_ema = 0.7};
    int bad = !opt || !segc_checkpoint_save(tmp, &P, opt, &st, "name: fuzz\nmodel:\n  type: segformer\n", 1, err, sizeof err);
    if (bad) fprintf(stderr, "make_seeds: checkpoint: %s\n", err);
    size_t n = 0;
    snprintf(p, sizeof p, "%s/iter_0000003.state.safetensors", tmp);
    char *b = slurp(p, &n);
    if (b) bad |= write_seed(dir, "ckpt", "state", b, n);
    else bad = 1;
    free(b);
    unlink(p);
    snprintf(p, sizeof p, "%s/iter_0000003.safetensors", tmp);
    unlink(p);
    snprintf(p, sizeof p, "%s/latest", tmp);
    unlink(p);
    rmdir(tmp);
    segc_optimizer_free(opt);
    segc_params_free(&P);
    return bad;
}

/* the shipped configs, alone and followed (after a NUL) by override lines */
static int config_seeds(const char *dir) {
    static const char *const files[] = {"configs/segformer/camvid_b0_cpu.yaml", "configs/segformer/ade20k_b0_512x512_160k.yaml",
                                        "configs/unet2d/brats_mini_cpu.yaml", "configs/unet2d/msd_task01_2d.yaml"};
    static const char overrides[] = "optimizer.lr=1e-4\ntrain.max_iters=10\ndata.crop_size=[64,64]\n"
                                    "optimizer.paramwise.custom_keys={head: {lr_mult: 10}}\nmodel.hidden=[8,16,16,16]\n";
    int bad = 0, found = 0;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        size_t n;
        char *b = slurp(files[i], &n), name[32];
        if (!b) continue;
        found++;
        snprintf(name, sizeof name, "cfg%zu", i);
        bad |= write_seed(dir, "config", name, b, n);
        char *both = malloc(n + 1 + sizeof overrides);
        memcpy(both, b, n);
        both[n] = 0;
        memcpy(both + n + 1, overrides, sizeof overrides - 1);
        snprintf(name, sizeof name, "cfg%zu_ov", i);
        bad |= write_seed(dir, "config", name, both, n + sizeof overrides);
        free(both);
        free(b);
    }
    static const char tiny[] = "name: t\nmodel:\n  type: unet2d\n  filters: [4, 8]\ntrain:\n  max_iters: 5\n";
    bad |= write_seed(dir, "config", "tiny", tiny, sizeof tiny - 1);
    return bad || !found;
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
    bad |= safetensors_seeds(dir);
    bad |= ckpt_seed(dir);
    bad |= config_seeds(dir);
    return bad;
}
