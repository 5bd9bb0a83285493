/* NIfTI-1 volumes: our own header validation (one-line errors, bounded sizes)
 * in front of nifticlib's reader, and conversion of any datatype to f32 with
 * scl_slope/scl_inter applied. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <nifti1_io.h>

#include "ds_internal.h"

#define NIFTI_HDR_SIZE 348
#define NIFTI_MAX_VOXELS (1LL << 30)

static uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }

static int16_t rd16(const uint8_t *p, bool sw) {
    uint16_t v;
    memcpy(&v, p, 2);
    if (sw) v = __builtin_bswap16(v);
    return (int16_t)v;
}

static float rdf32(const uint8_t *p, bool sw) {
    uint32_t v;
    memcpy(&v, p, 4);
    if (sw) v = bswap32(v);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static int nifti_type_size(int dt) {
    switch (dt) {
    case DT_UINT8: case DT_INT8: return 1;
    case DT_INT16: case DT_UINT16: return 2;
    case DT_INT32: case DT_UINT32: case DT_FLOAT32: return 4;
    case DT_INT64: case DT_UINT64: case DT_FLOAT64: return 8;
    }
    return 0;
}

bool segc_nifti_parse_header(const void *buf, size_t len, segc_nifti_info *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    const uint8_t *h = buf;
    if (len < NIFTI_HDR_SIZE)
        return segc_errorf(err, errlen, "nifti: header truncated (%zu of %d bytes)", len, NIFTI_HDR_SIZE);
    uint32_t sz;
    memcpy(&sz, h, 4);
    bool sw;
    if (sz == NIFTI_HDR_SIZE) sw = false;
    else if (bswap32(sz) == NIFTI_HDR_SIZE) sw = true;
    else return segc_errorf(err, errlen, "nifti: bad header: sizeof_hdr is %u, expected 348 (not a NIfTI-1 file?)", sz);
    const char *magic = (const char *)h + 344;
    bool n1 = !memcmp(magic, "n+1\0", 4), ni1 = !memcmp(magic, "ni1\0", 4);
    if (!n1 && !ni1) return segc_errorf(err, errlen, "nifti: bad header: magic is not \"n+1\" or \"ni1\"");
    info->swapped = sw, info->single_file = n1;
    int ndim = rd16(h + 40, sw);
    if (ndim < 1 || ndim > 7) return segc_errorf(err, errlen, "nifti: bad header: dim[0] = %d, expected 1..7", ndim);
    info->ndim = ndim;
    int64_t nvox = 1;
    for (int i = 0; i < 7; i++) {
        int d = i < ndim ? rd16(h + 42 + 2 * i, sw) : 1;
        if (d < 1) return segc_errorf(err, errlen, "nifti: bad header: dim[%d] = %d, expected >= 1", i + 1, d);
        info->dim[i] = d;
        nvox *= d;
        if (nvox > NIFTI_MAX_VOXELS)
            return segc_errorf(err, errlen, "nifti: bad header: more than %lld voxels", (long long)NIFTI_MAX_VOXELS);
    }
    info->datatype = rd16(h + 70, sw);
    info->bytes_per_voxel = nifti_type_size(info->datatype);
    if (!info->bytes_per_voxel)
        return segc_errorf(err, errlen, "nifti: unsupported datatype %d (%s)", info->datatype,
                           nifti_datatype_string(info->datatype));
    int bitpix = rd16(h + 72, sw);
    if (bitpix != 8 * info->bytes_per_voxel)
        return segc_errorf(err, errlen, "nifti: bad header: bitpix %d does not match datatype %s (%d bits)", bitpix,
                           nifti_datatype_string(info->datatype), 8 * info->bytes_per_voxel);
    float off = rdf32(h + 108, sw);
    if (!(off >= 0.f && off < 1e9f)) return segc_errorf(err, errlen, "nifti: bad header: vox_offset %g", off);
    info->vox_offset = (int64_t)off;
    if (n1 && info->vox_offset < NIFTI_HDR_SIZE)
        return segc_errorf(err, errlen, "nifti: bad header: vox_offset %lld inside the header", (long long)info->vox_offset);
    info->scl_slope = rdf32(h + 112, sw);
    info->scl_inter = rdf32(h + 116, sw);
    return true;
}

/* any supported datatype -> f32, optional byte swap, optional scaling */
static void convert_to_f32(const uint8_t *src, int dt, bool sw, int64_t n, float slope, float inter, float *dst) {
    bool scale = isfinite(slope) && slope != 0.f;
    double a = scale ? slope : 1.0, b = scale && isfinite(inter) ? inter : 0.0;
    int bpv = nifti_type_size(dt);
#pragma omp parallel for schedule(static) if (n > (1 << 20))
    for (int64_t i = 0; i < n; i++) {
        uint8_t t[8];
        memcpy(t, src + i * bpv, bpv);
        if (sw)
            for (int k = 0; k < bpv / 2; k++) {
                uint8_t x = t[k];
                t[k] = t[bpv - 1 - k], t[bpv - 1 - k] = x;
            }
        double v;
        switch (dt) {
        case DT_UINT8: v = t[0]; break;
        case DT_INT8: v = (int8_t)t[0]; break;
        case DT_INT16: { int16_t x; memcpy(&x, t, 2); v = x; break; }
        case DT_UINT16: { uint16_t x; memcpy(&x, t, 2); v = x; break; }
        case DT_INT32: { int32_t x; memcpy(&x, t, 4); v = x; break; }
        case DT_UINT32: { uint32_t x; memcpy(&x, t, 4); v = x; break; }
        case DT_FLOAT32: { float x; memcpy(&x, t, 4); v = x; break; }
        case DT_INT64: { int64_t x; memcpy(&x, t, 8); v = (double)x; break; }
        case DT_UINT64: { uint64_t x; memcpy(&x, t, 8); v = (double)x; break; }
        default: { double x; memcpy(&x, t, 8); v = x; break; }
        }
        dst[i] = (float)(scale ? v * a + b : v);
    }
}

static bool volume_from(const segc_nifti_info *info, const void *data, bool swapped, segc_volume *out, char *err,
                        size_t errlen) {
    int64_t nvox = 1;
    for (int i = 0; i < 7; i++) nvox *= info->dim[i];
    out->data = malloc((size_t)nvox * sizeof(float));
    if (!out->data) return segc_errorf(err, errlen, "nifti: out of memory for %lld voxels", (long long)nvox);
    out->dim[0] = info->dim[0], out->dim[1] = info->dim[1], out->dim[2] = info->dim[2];
    out->dim[3] = nvox / (info->dim[0] * info->dim[1] * info->dim[2]);   /* dims 4..7 flattened */
    convert_to_f32(data, info->datatype, swapped, nvox, info->scl_slope, info->scl_inter, out->data);
    return true;
}

bool segc_nifti_decode(const void *buf, size_t len, segc_volume *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    segc_nifti_info info;
    if (!segc_nifti_parse_header(buf, len, &info, err, errlen)) return false;
    if (!info.single_file) return segc_errorf(err, errlen, "nifti: magic \"ni1\" (separate .img file) cannot be read from memory");
    int64_t nvox = 1;
    for (int i = 0; i < 7; i++) nvox *= info.dim[i];
    int64_t need = info.vox_offset + nvox * info.bytes_per_voxel;
    if ((int64_t)len < need)
        return segc_errorf(err, errlen, "nifti: data truncated (%zu of %lld bytes)", len, (long long)need);
    return volume_from(&info, (const uint8_t *)buf + info.vox_offset, info.swapped, out, err, errlen);
}

void segc_volume_free(segc_volume *v) {
    if (!v) return;
    free(v->data);
    memset(v, 0, sizeof *v);
}

static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;
static void nifti_quiet(void) { nifti_set_debug_level(0); }   /* nifticlib otherwise prints to stderr */

bool segc_nifti_read_info(const char *path, segc_nifti_info *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    /* gzread reads plain files too */
    gzFile gz = gzopen(path, "rb");
    if (!gz) return segc_errorf(err, errlen, "%s: cannot open", path);
    uint8_t hdr[NIFTI_HDR_SIZE];
    int got = gzread(gz, hdr, sizeof hdr);
    gzclose(gz);
    char msg[256];
    if (got < 0) return segc_errorf(err, errlen, "%s: corrupt compressed stream", path);
    if (!segc_nifti_parse_header(hdr, (size_t)got, info, msg, sizeof msg)) return segc_errorf(err, errlen, "%s: %s", path, msg);
    return true;
}

/* Reads nbytes of voxel data at offset from a plain or gzip file, failing on
 * a short read and on a corrupt stream (gzip CRC checked at end of stream).
 * nifticlib's own reader zero-fills a truncated file silently. */
static bool read_voxels(const char *path, int64_t offset, size_t nbytes, void *dst, char *err, size_t errlen) {
    gzFile gz = gzopen(path, "rb");
    if (!gz) return segc_errorf(err, errlen, "%s: cannot open", path);
    gzbuffer(gz, 1 << 18);
    bool ok = true;
    if (offset && gzseek(gz, (z_off_t)offset, SEEK_SET) != (z_off_t)offset)
        ok = segc_errorf(err, errlen, "%s: nifti: file ends before the voxel data offset %lld", path, (long long)offset);
    size_t got = 0;
    while (ok && got < nbytes) {
        unsigned chunk = nbytes - got > (1u << 30) ? (1u << 30) : (unsigned)(nbytes - got);
        int r = gzread(gz, (char *)dst + got, chunk);
        if (r <= 0) break;
        got += (size_t)r;
    }
    int zerr = Z_OK;
    if (ok && got == nbytes) {   /* touch the end so gzip verifies its CRC and length */
        char extra;
        (void)gzread(gz, &extra, 1);
    }
    const char *zmsg = gzerror(gz, &zerr);
    if (ok && got < nbytes)
        ok = segc_errorf(err, errlen, "%s: nifti: voxel data truncated (%zu of %zu bytes)%s%s", path, got, nbytes,
                         zerr != Z_OK ? ": " : "", zerr != Z_OK ? zmsg : "");
    else if (ok && zerr != Z_OK && zerr != Z_BUF_ERROR)
        ok = segc_errorf(err, errlen, "%s: nifti: corrupt compressed data: %s", path, zmsg);
    gzclose_r(gz);
    return ok;
}

bool segc_nifti_read(const char *path, segc_volume *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    pthread_once(&quiet_once, nifti_quiet);
    /* our header check first, so a bad file gives our message rather than nifticlib's */
    segc_nifti_info info;
    if (!segc_nifti_read_info(path, &info, err, errlen)) return false;
    /* nifticlib interprets the header (scaling, image file of a .hdr/.img pair) */
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) return segc_errorf(err, errlen, "%s: nifti: header rejected by nifticlib", path);
    int64_t nvox = 1;
    for (int i = 0; i < 7; i++) nvox *= info.dim[i];
    if ((int64_t)nim->nvox != nvox || nim->nbyper != info.bytes_per_voxel || nim->datatype != info.datatype ||
        !nim->iname) {
        nifti_image_free(nim);
        return segc_errorf(err, errlen, "%s: nifti: inconsistent header", path);
    }
    info.scl_slope = nim->scl_slope, info.scl_inter = nim->scl_inter;
    size_t nbytes = (size_t)nvox * info.bytes_per_voxel;
    void *raw = malloc(nbytes);
    bool ok = raw ? read_voxels(nim->iname, nim->iname_offset, nbytes, raw, err, errlen)
                  : segc_errorf(err, errlen, "%s: out of memory for %zu bytes", path, nbytes);
    char msg[256];
    if (ok && !(ok = volume_from(&info, raw, info.swapped, out, msg, sizeof msg)))
        segc_errorf(err, errlen, "%s: %s", path, msg);
    free(raw);
    nifti_image_free(nim);
    return ok;
}

/* nifticlib has already chosen between the forms; we only report its pick:
 * sform when sform_code > 0 (what nibabel's get_best_affine prefers), else
 * qto_xyz (the quaternion form, or pixdim scaling when qform_code is 0). */
bool segc_nifti_read_geometry(const char *path, int64_t dim[3], double affine[4][4], int *sform_code,
                              int *qform_code, char *err, size_t errlen) {
    pthread_once(&quiet_once, nifti_quiet);
    segc_nifti_info info;
    if (!segc_nifti_read_info(path, &info, err, errlen)) return false;
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) return segc_errorf(err, errlen, "%s: nifti: header rejected by nifticlib", path);
    const mat44 *m = nim->sform_code > 0 ? &nim->sto_xyz : &nim->qto_xyz;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) affine[r][c] = m->m[r][c];
    for (int k = 0; k < 3; k++) dim[k] = info.dim[k];
    if (sform_code) *sform_code = nim->sform_code;
    if (qform_code) *qform_code = nim->qform_code;
    nifti_image_free(nim);
    return true;
}
