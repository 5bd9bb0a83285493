/* uint8 label volumes as NIfTI-1, for writing predictions next to their
 * source images. The header is built by nifticlib from a nifti_image (so
 * quaternion/sform fields stay consistent) and the file is written by us
 * with zlib into a temp file renamed over the target: a reader never sees a
 * half-written prediction and an interrupted run leaves no truncated file. */
#include <errno.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <nifti1_io.h>

#include "ds_internal.h"

static bool write_all(const char *tmp, bool gz, const nifti_1_header *h, const uint8_t *data, size_t nbytes,
                      char *err, size_t errlen) {
    int fd = mkstemp((char *)tmp);
    if (fd < 0) return segc_errorf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    (void)fchmod(fd, 0644);   /* mkstemp's 0600 would make predictions private to the writer */
    gzFile f = gzdopen(fd, gz ? "wb6" : "wbT");
    if (!f) {
        close(fd);
        return segc_errorf(err, errlen, "%s: cannot open for writing", tmp);
    }
    static const uint8_t ext[4] = {0};   /* no extensions: voxels start at 352 */
    bool ok = gzwrite(f, h, sizeof *h) == (int)sizeof *h && gzwrite(f, ext, 4) == 4;
    for (size_t off = 0; ok && off < nbytes;) {
        unsigned chunk = nbytes - off > (1u << 30) ? (1u << 30) : (unsigned)(nbytes - off);
        ok = gzwrite(f, data + off, chunk) == (int)chunk;
        off += chunk;
    }
    int zerr;
    const char *zmsg = gzerror(f, &zerr);
    char msg[128];
    snprintf(msg, sizeof msg, "%s", zerr != Z_OK ? zmsg : "short write");
    if (gzclose(f) != Z_OK) ok = false;
    if (!ok) return segc_errorf(err, errlen, "%s: write failed: %s", tmp, msg);
    return true;
}

bool segc_nifti_write_labels(const char *path, const uint8_t *labels, const int64_t dim[3], const char *ref_path,
                             const double affine[4][4], char *err, size_t errlen) {
    for (int k = 0; k < 3; k++)
        if (dim[k] < 1 || dim[k] > 32767)
            return segc_errorf(err, errlen, "%s: dim[%d] = %lld, expected 1..32767 (NIfTI-1 short)", path, k,
                               (long long)dim[k]);
    if (!ref_path && !affine) return segc_errorf(err, errlen, "%s: neither a reference image nor an affine given", path);
    nifti_image *nim = NULL;
    if (ref_path) {
        int64_t rd[3];
        double ra[4][4];
        if (!segc_nifti_read_geometry(ref_path, rd, ra, NULL, NULL, err, errlen)) return false;
        if (rd[0] != dim[0] || rd[1] != dim[1] || rd[2] != dim[2])
            return segc_errorf(err, errlen, "%s: labels are %lldx%lldx%lld but the reference %s is %lldx%lldx%lld", path,
                               (long long)dim[0], (long long)dim[1], (long long)dim[2], ref_path, (long long)rd[0],
                               (long long)rd[1], (long long)rd[2]);
        nim = nifti_image_read(ref_path, 0);   /* header only: its geometry fields are what we keep */
        if (!nim) return segc_errorf(err, errlen, "%s: nifti: header rejected by nifticlib", ref_path);
        nim->ndim = nim->dim[0] = 3;
        nim->nt = nim->nu = nim->nv = nim->nw = 1;
        for (int k = 4; k < 8; k++) nim->dim[k] = 1;
    } else {
        int dims[8] = {3, (int)dim[0], (int)dim[1], (int)dim[2], 1, 1, 1, 1};
        nim = nifti_make_new_nim(dims, DT_UINT8, 0);
        if (!nim) return segc_errorf(err, errlen, "%s: out of memory", path);
        mat44 m;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) m.m[r][c] = (float)affine[r][c];
        nim->sform_code = nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
        nim->sto_xyz = m;
        float qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
        nifti_mat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
        nim->quatern_b = qb, nim->quatern_c = qc, nim->quatern_d = qd;
        nim->qoffset_x = qx, nim->qoffset_y = qy, nim->qoffset_z = qz;
        nim->qfac = qfac;
        nim->dx = nim->pixdim[1] = dx, nim->dy = nim->pixdim[2] = dy, nim->dz = nim->pixdim[3] = dz;
    }
    nim->nx = nim->dim[1] = (int)dim[0];
    nim->ny = nim->dim[2] = (int)dim[1];
    nim->nz = nim->dim[3] = (int)dim[2];
    nim->nvox = (size_t)(dim[0] * dim[1] * dim[2]);
    nim->datatype = DT_UINT8;
    nim->nbyper = 1;
    nim->scl_slope = 0.f, nim->scl_inter = 0.f;   /* stored class ids are the values */
    nim->cal_min = nim->cal_max = 0.f;
    nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
    nifti_1_header h = nifti_convert_nim2nhdr(nim);
    nifti_image_free(nim);
    if (ref_path) {
        /* nifticlib drops the quaternion of a qform_code 0 header; copy the
         * geometry fields from the reference's raw header so readers that
         * look at them (nibabel's get_qform) see the source's values */
        int swapped = 0;
        nifti_1_header *rh = nifti_read_header(ref_path, &swapped, 1);
        if (!rh) return segc_errorf(err, errlen, "%s: nifti: header rejected by nifticlib", ref_path);
        if (swapped) swap_nifti_header(rh, 1);
        h.qform_code = rh->qform_code, h.sform_code = rh->sform_code;
        h.quatern_b = rh->quatern_b, h.quatern_c = rh->quatern_c, h.quatern_d = rh->quatern_d;
        h.qoffset_x = rh->qoffset_x, h.qoffset_y = rh->qoffset_y, h.qoffset_z = rh->qoffset_z;
        for (int k = 0; k < 4; k++) h.pixdim[k] = rh->pixdim[k];   /* pixdim[0] is qfac */
        memcpy(h.srow_x, rh->srow_x, sizeof h.srow_x);
        memcpy(h.srow_y, rh->srow_y, sizeof h.srow_y);
        memcpy(h.srow_z, rh->srow_z, sizeof h.srow_z);
        h.xyzt_units = rh->xyzt_units;
        free(rh);
    }
    h.vox_offset = 352.f;
    memcpy(h.magic, "n+1", 4);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return segc_errorf(err, errlen, "%s: out of memory", path);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    bool gz = ds_has_suffix(path, ".gz");
    bool ok = write_all(tmp, gz, &h, labels, (size_t)(dim[0] * dim[1] * dim[2]), err, errlen);
    if (ok && rename(tmp, path) != 0) ok = segc_errorf(err, errlen, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (!ok) unlink(tmp);
    free(tmp);
    return ok;
}
