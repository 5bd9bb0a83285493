/* segc image I/O: JPEG (libjpeg-turbo) and PNG (libspng) decoding from memory
 * or files, PNG encoding, and label-map colouring. Every function is
 * thread-safe (no shared state) and reports a bad or truncated input as false
 * plus a one-line message in err; none of them prints or exits. */
#ifndef SEGC_IMAGE_IO_H
#define SEGC_IMAGE_IO_H
#include "segc/data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How to present the decoded pixels. */
typedef enum {
    SEGC_READ_NATIVE = 0, /* channels as stored (gray 1, gray+alpha 2, RGB 3, RGBA 4); palette PNGs
                             expand to RGB (RGBA with tRNS); 16-bit PNGs give I32 */
    SEGC_READ_RGB,        /* always 3 x U8 (alpha dropped, gray replicated, 16-bit scaled to 8) */
    SEGC_READ_GRAY,       /* always 1 x U8 (ITU-R 601 luma for colour inputs, 16-bit scaled to 8) */
    SEGC_READ_LABEL,      /* label map: palette PNGs give their *index* values; gray gives its
                             values (U8, or I32 for 16-bit); colour images keep their channels
                             so a caller can map colours through a palette */
} segc_read_mode;

/* Images larger than this many pixels are refused before any allocation. */
#define SEGC_IMAGE_MAX_PIXELS (1LL << 28)

typedef enum { SEGC_FMT_UNKNOWN = 0, SEGC_FMT_PNG, SEGC_FMT_JPEG } segc_image_format;
segc_image_format segc_image_sniff(const void *buf, size_t len);

/* Header only: size and stored channel count (palette counts as 1). */
bool segc_image_probe(const void *buf, size_t len, int *h, int *w, int *c, char *err, size_t errlen);

bool segc_png_decode(const void *buf, size_t len, segc_read_mode mode, segc_image *out, char *err, size_t errlen);
bool segc_jpeg_decode(const void *buf, size_t len, segc_read_mode mode, segc_image *out, char *err, size_t errlen);
/* Picks the decoder from the magic bytes. */
bool segc_image_decode(const void *buf, size_t len, segc_read_mode mode, segc_image *out, char *err, size_t errlen);
/* Reads and decodes a file; messages name the path. */
bool segc_image_read(const char *path, segc_read_mode mode, segc_image *out, char *err, size_t errlen);

/* Whole file into a malloc'd buffer (NUL-terminated for text parsers; len excludes the NUL). */
bool segc_read_file(const char *path, void **buf, size_t *len, char *err, size_t errlen);

/* PNG encoding. U8 C=1 with a palette (n_colors <= 256 rgb triplets) gives an
 * indexed PNG, without one an 8-bit gray PNG; U8 C=2/3/4 gives gray+alpha,
 * RGB, RGBA; I32 C=1 with values in 0..65535 gives a 16-bit gray PNG.
 * *png is malloc'd. */
bool segc_png_encode(const segc_image *im, const uint8_t *palette, int n_colors, void **png, size_t *len, char *err,
                     size_t errlen);
bool segc_png_write(const char *path, const segc_image *im, const uint8_t *palette, int n_colors, char *err,
                    size_t errlen);

/* Colour a U8 label map through a palette (n_colors rgb triplets; values not
 * covered, e.g. 255 ignore, become black). out: U8, C=3. */
bool segc_label_colorize(const segc_image *label, const uint8_t *palette, int n_colors, segc_image *out, char *err,
                         size_t errlen);
/* Blend a coloured label map over an image: out = (1-alpha)*rgb + alpha*colour
 * where the label is a known class, the image elsewhere. img: U8 with 1 or 3
 * channels; label: U8 C=1, same size. out: U8, C=3. */
bool segc_label_overlay(const segc_image *img, const segc_image *label, const uint8_t *palette, int n_colors,
                        float alpha, segc_image *out, char *err, size_t errlen);

/* ---- NIfTI-1 volumes (.nii / .nii.gz through nifticlib) ----
 * Any datatype (u8/i8/u16/i16/u32/i32/u64/i64/f32/f64) is converted to f32,
 * with v*scl_slope + scl_inter applied when scl_slope is finite and != 0. */
typedef struct segc_volume {
    int64_t dim[4];   /* nx, ny, nz, nt (unused trailing dims are 1) */
    float *data;      /* malloc'd, x fastest: data[((t*nz + z)*ny + y)*nx + x] */
} segc_volume;

typedef struct segc_nifti_info {
    int ndim;
    int64_t dim[7];
    int datatype;          /* NIfTI DT_* code */
    int bytes_per_voxel;
    float scl_slope, scl_inter;
    int64_t vox_offset;    /* data start in a single-file .nii */
    bool swapped;          /* header is byte-swapped relative to the host */
    bool single_file;      /* magic "n+1" (data in the same file) */
} segc_nifti_info;

/* Validates a NIfTI-1 header (first 348 bytes of the uncompressed stream). */
bool segc_nifti_parse_header(const void *buf, size_t len, segc_nifti_info *info, char *err, size_t errlen);
/* Decodes an uncompressed single-file .nii held in memory. */
bool segc_nifti_decode(const void *buf, size_t len, segc_volume *out, char *err, size_t errlen);
/* Header of a .nii / .nii.gz file only (cheap: 348 bytes decompressed). */
bool segc_nifti_read_info(const char *path, segc_nifti_info *info, char *err, size_t errlen);
/* Reads a .nii or .nii.gz file: header validated first, then nifti_image_read. */
bool segc_nifti_read(const char *path, segc_volume *out, char *err, size_t errlen);
void segc_volume_free(segc_volume *v);

#ifdef __cplusplus
}
#endif
#endif
