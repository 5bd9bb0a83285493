/* safetensors reader/writer: the weight and fixture format (HF compatible).
 * Writes are atomic: temporary file, fsync, rename. */
#ifndef SEGC_SAFETENSORS_H
#define SEGC_SAFETENSORS_H
#include "segc/core.h"

typedef struct segc_st_entry {
    const char *name;
    segc_dtype dtype;
    bool dtype_known;       /* false for F16/F64/... : readable name in dtype_str */
    const char *dtype_str;
    int ndim;
    int64_t shape[SEGC_MAX_DIMS];
    const void *data;       /* points into the loaded file */
    size_t nbytes;
} segc_st_entry;

typedef struct segc_st_file segc_st_file;

/* Largest JSON header accepted (the format's own limit, 100 MB), so a
 * corrupt length cannot make the parser walk gigabytes. */
#define SEGC_ST_MAX_HEADER (100 << 20)

/* NULL on failure with a one-line message in err naming the file. The file is
 * memory-mapped (read-only); entries point into the mapping until close.
 * Every shape product, byte size and offset is checked for overflow and
 * against the file size. */
segc_st_file *segc_st_open(const char *path, char *err, size_t errlen);
/* The same over a caller's buffer (kept alive until close; nothing copied);
 * name is used in messages. For fuzzing and in-memory checks. */
segc_st_file *segc_st_open_mem(const void *data, size_t size, const char *name, char *err, size_t errlen);
int segc_st_count(const segc_st_file *f);
const segc_st_entry *segc_st_at(const segc_st_file *f, int i);
const segc_st_entry *segc_st_get(const segc_st_file *f, const char *name);
const char *segc_st_meta(const segc_st_file *f, const char *key);  /* __metadata__ string value */
const char *segc_st_path(const segc_st_file *f);
void segc_st_close(segc_st_file *f);

typedef struct segc_st_writer segc_st_writer;
segc_st_writer *segc_st_writer_new(void);
/* data is copied at add time so callers may reuse buffers; false when it
 * could not be (out of memory, bad shape), and segc_st_writer_save then fails
 * with that message */
bool segc_st_writer_add(segc_st_writer *w, const char *name, segc_dtype dt, int ndim, const int64_t *shape,
                        const void *data);
void segc_st_writer_meta(segc_st_writer *w, const char *key, const char *value);
bool segc_st_writer_save(segc_st_writer *w, const char *path, char *err, size_t errlen);
void segc_st_writer_free(segc_st_writer *w);

/* atomic whole-file write helper used by checkpoints too */
bool segc_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int n_parts, char *err,
                            size_t errlen);
#endif
