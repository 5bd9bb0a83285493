/* safetensors: 8-byte little-endian header length, JSON header, raw data.
 * The reader treats every file as hostile: see st_parse. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "segc/safetensors.h"

struct segc_st_file {
    char *path;
    const unsigned char *buf;   /* the whole file: mapped, or the caller's buffer (open_mem) */
    size_t size;
    bool mapped;
    int n;
    segc_st_entry *e;
    cJSON *meta;
};

static const struct { const char *s; segc_dtype dt; } st_dtypes[] = {
    {"F32", SEGC_F32}, {"BF16", SEGC_BF16}, {"U8", SEGC_U8}, {"I32", SEGC_I32}, {"I64", SEGC_I64}};
static const struct { const char *s; size_t size; } st_other[] = {
    {"F16", 2}, {"F64", 8}, {"I8", 1}, {"I16", 2}, {"U16", 2}, {"U32", 4}, {"U64", 8}, {"BOOL", 1}};

static const char *st_name_of(segc_dtype dt) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof *st_dtypes; i++) if (st_dtypes[i].dt == dt) return st_dtypes[i].s;
    return "F32";
}

#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto fail; } while (0)

/* JSON numbers are doubles: integers above 2^53 are no longer exact, so an
 * offset beyond that cannot be trusted (no real file has one). A shape entry
 * may go up to 2^63, so that an absurd shape is refused by the size check
 * that says why (its elements or bytes do not fit), not as a bad number. */
#define ST_MAX_EXACT 9007199254740992.0
#define ST_MAX_DIM 9223372036854775807.0
static bool json_uint_max(const cJSON *v, uint64_t *out, double max) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < max + 1.0) || d >= 9223372036854775808.0 || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}
static bool json_uint(const cJSON *v, uint64_t *out) { return json_uint_max(v, out, ST_MAX_EXACT); }

static void shape_str(const cJSON *sh, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    int i = 0;
    for (const cJSON *v = sh->child; v && k < n; v = v->next, i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%.0f", i ? ", " : "", cJSON_IsNumber(v) ? v->valuedouble : -1.0);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Parses the header of the file image in f->buf/f->size (every size, shape
 * product and offset checked against overflow and against the file, so that a
 * hostile header can neither allocate huge amounts nor point outside the data). */
static bool st_parse(segc_st_file *f, char *err, size_t errlen) {
    const char *path = f->path;
    cJSON *root = NULL;
    if (f->size < 8) FAIL("%s: not a safetensors file (%zu bytes, header needs 8)", path, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->buf[i];
    if (hlen > f->size - 8) FAIL("%s: header length %llu exceeds file size %zu", path, (unsigned long long)hlen, f->size);
    if (hlen > SEGC_ST_MAX_HEADER)
        FAIL("%s: header length %llu exceeds the %d MiB limit of the format", path, (unsigned long long)hlen,
             SEGC_ST_MAX_HEADER >> 20);
    root = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) FAIL("%s: header is not a JSON object", path);
    size_t data_start = 8 + (size_t)hlen, data_len = f->size - data_start;
    int n = cJSON_GetArraySize(root);
    f->e = calloc((size_t)n + 1, sizeof *f->e);
    if (!f->e) FAIL("%s: out of memory for %d header entries", path, n);
    for (cJSON *it = root->child; it; it = it->next) {
        if (!it->string) FAIL("%s: header entry without a name", path);
        if (strcmp(it->string, "__metadata__") == 0) {
            if (f->meta) FAIL("%s: __metadata__ given twice", path);
            if (!cJSON_IsObject(it)) FAIL("%s: __metadata__ is not an object", path);
            f->meta = cJSON_Duplicate(it, 1);
            if (!f->meta) FAIL("%s: out of memory for __metadata__", path);
            continue;
        }
        segc_st_entry *e = &f->e[f->n];
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
            FAIL("%s: tensor '%s': malformed entry (needs dtype, shape, data_offsets)", path, it->string);
        e->name = strdup(it->string);
        e->dtype_str = strdup(dt->valuestring);
        if (!e->name || !e->dtype_str) FAIL("%s: out of memory reading the header", path);
        size_t esize = 0;
        for (size_t k = 0; k < sizeof st_dtypes / sizeof *st_dtypes; k++)
            if (!strcmp(dt->valuestring, st_dtypes[k].s)) { e->dtype = st_dtypes[k].dt; e->dtype_known = true; esize = segc_dtype_size(e->dtype); }
        for (size_t k = 0; !esize && k < sizeof st_other / sizeof *st_other; k++)
            if (!strcmp(dt->valuestring, st_other[k].s)) esize = st_other[k].size;
        if (!esize) FAIL("%s: tensor '%s': unknown dtype '%s'", path, e->name, dt->valuestring);
        e->ndim = cJSON_GetArraySize(sh);
        if (e->ndim > SEGC_MAX_DIMS) FAIL("%s: tensor '%s': %d dims, at most %d supported", path, e->name, e->ndim, SEGC_MAX_DIMS);
        char shs[256];
        uint64_t numel = 1, nbytes;
        bool overflow = false;
        for (int d = 0; d < e->ndim; d++) {
            uint64_t v;
            if (!json_uint_max(cJSON_GetArrayItem(sh, d), &v, ST_MAX_DIM))
                FAIL("%s: tensor '%s': shape entry %d is not an integer in [0, 2^63)", path, e->name, d);
            e->shape[d] = (int64_t)v;
            overflow |= __builtin_mul_overflow(numel, v, &numel);
        }
        /* the element count and the byte size must both fit: a wrapped product
         * (e.g. [2^62, 4] -> 0) would otherwise match a 0-byte tensor */
        if (overflow || numel > INT64_MAX || __builtin_mul_overflow(numel, (uint64_t)esize, &nbytes)) {
            shape_str(sh, shs, sizeof shs);
            FAIL("%s: tensor '%s': shape %s has more elements or bytes than fit in 64 bits", path, e->name, shs);
        }
        uint64_t b, en;
        if (!json_uint(cJSON_GetArrayItem(off, 0), &b) || !json_uint(cJSON_GetArrayItem(off, 1), &en))
            FAIL("%s: tensor '%s': data_offsets must be two integers in [0, 2^53]", path, e->name);
        if (en < b || en > data_len)
            FAIL("%s: tensor '%s': data_offsets [%llu, %llu] outside the %zu data bytes", path, e->name,
                 (unsigned long long)b, (unsigned long long)en, data_len);
        e->nbytes = (size_t)(en - b);
        if ((uint64_t)e->nbytes != nbytes) {
            shape_str(sh, shs, sizeof shs);
            FAIL("%s: tensor '%s': %zu bytes for shape %s of %llu %s elements (expected %llu)", path, e->name, e->nbytes,
                 shs, (unsigned long long)numel, e->dtype_str, (unsigned long long)nbytes);
        }
        e->data = f->buf + data_start + (size_t)b;
        f->n++;
    }
    /* a name given twice is ambiguous (which one loads?): sorted, so that a
     * header of a million entries is not a quadratic walk */
    if (f->n > 1) {
        const char **names = malloc((size_t)f->n * sizeof *names);
        if (!names) FAIL("%s: out of memory for %d names", path, f->n);
        for (int i = 0; i < f->n; i++) names[i] = f->e[i].name;
        qsort(names, (size_t)f->n, sizeof *names, cmp_name);
        for (int i = 1; i < f->n; i++)
            if (!strcmp(names[i - 1], names[i])) {
                snprintf(err, errlen, "%s: tensor '%s' appears twice in the header", path, names[i]);
                free(names);
                goto fail;
            }
        free(names);
    }
    cJSON_Delete(root);
    return true;
fail:
    cJSON_Delete(root);
    return false;
}

segc_st_file *segc_st_open(const char *path, char *err, size_t errlen) {
    segc_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(f);
        return NULL;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) FAIL("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        FAIL("%s: not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        FAIL("%s: not a safetensors file (%zu bytes, header needs 8)", path, f->size);
    }
    /* mapped, not read: a multi-GiB weight file costs no heap allocation, and
     * only the pages of the tensors used are ever read. Writers replace files
     * by rename (segc_write_file_atomic), so the mapped inode stays intact. */
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) FAIL("%s: cannot map %zu bytes: %s", path, f->size, strerror(errno));
    f->buf = m;
    f->mapped = true;
    if (!st_parse(f, err, errlen)) goto fail;
    return f;
fail:
    segc_st_close(f);
    return NULL;
}

segc_st_file *segc_st_open_mem(const void *data, size_t size, const char *name, char *err, size_t errlen) {
    segc_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name ? name : "(memory)"))) {
        snprintf(err, errlen, "%s: out of memory", name ? name : "(memory)");
        free(f);
        return NULL;
    }
    f->buf = data;
    f->size = size;
    if (!st_parse(f, err, errlen)) {
        segc_st_close(f);
        return NULL;
    }
    return f;
}

int segc_st_count(const segc_st_file *f) { return f->n; }
const segc_st_entry *segc_st_at(const segc_st_file *f, int i) { return i >= 0 && i < f->n ? &f->e[i] : NULL; }
const segc_st_entry *segc_st_get(const segc_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++) if (!strcmp(f->e[i].name, name)) return &f->e[i];
    return NULL;
}
const char *segc_st_meta(const segc_st_file *f, const char *key) {
    cJSON *v = f->meta ? cJSON_GetObjectItemCaseSensitive(f->meta, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
const char *segc_st_path(const segc_st_file *f) { return f->path; }
void segc_st_close(segc_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) { free((char *)f->e[i].name); free((char *)f->e[i].dtype_str); }
    /* an entry that failed half-way may own a name */
    if (f->e && f->e[f->n].name) { free((char *)f->e[f->n].name); free((char *)f->e[f->n].dtype_str); }
    free(f->e);
    cJSON_Delete(f->meta);
    if (f->mapped) munmap((void *)f->buf, f->size);
    free(f->path);
    free(f);
}

/* ---- writer ---- */
typedef struct { char *name; segc_dtype dt; int ndim; int64_t shape[SEGC_MAX_DIMS]; void *data; size_t nbytes; } st_item;
/* failed: the first add that could not be stored; save then refuses (a
 * checkpoint missing a tensor must never be written) */
struct segc_st_writer { st_item *items; int n, cap; cJSON *meta; char failed[256]; };

segc_st_writer *segc_st_writer_new(void) { return calloc(1, sizeof(segc_st_writer)); }

bool segc_st_writer_add(segc_st_writer *w, const char *name, segc_dtype dt, int ndim, const int64_t *shape,
                        const void *data) {
    if (!w || w->failed[0]) return false;   /* NULL: segc_st_writer_new ran out of memory (save says so) */
    size_t numel = 1, nbytes;
    bool over = ndim < 0 || ndim > SEGC_MAX_DIMS;
    for (int i = 0; !over && i < ndim; i++) over = shape[i] < 0 || __builtin_mul_overflow(numel, (size_t)shape[i], &numel);
    if (over || __builtin_mul_overflow(numel, segc_dtype_size(dt), &nbytes)) {
        snprintf(w->failed, sizeof w->failed, "tensor '%s': invalid shape (negative, too many dims or too large)", name);
        return false;
    }
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 32;
        st_item *items = realloc(w->items, (size_t)cap * sizeof *items);
        if (!items) {
            snprintf(w->failed, sizeof w->failed, "out of memory adding tensor '%s' (%d tensors)", name, w->n);
            return false;
        }
        w->items = items;
        w->cap = cap;
    }
    st_item *it = &w->items[w->n];
    it->name = strdup(name);
    it->data = malloc(nbytes ? nbytes : 1);
    if (!it->name || !it->data) {
        free(it->name);
        free(it->data);
        snprintf(w->failed, sizeof w->failed, "out of memory copying tensor '%s' (%zu bytes)", name, nbytes);
        return false;
    }
    it->dt = dt;
    it->ndim = ndim;
    for (int i = 0; i < ndim; i++) it->shape[i] = shape[i];
    it->nbytes = nbytes;
    if (nbytes) memcpy(it->data, data, nbytes);
    w->n++;
    return true;
}

void segc_st_writer_meta(segc_st_writer *w, const char *key, const char *value) {
    if (!w) return;
    if (!w->meta) w->meta = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    cJSON_AddStringToObject(w->meta, key, value);
}

bool segc_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int n_parts, char *err,
                            size_t errlen) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return snprintf(err, errlen, "%s: out of memory (nothing replaced)", path), false;
    snprintf(tmp, plen + 32, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); free(tmp); return false; }
    for (int i = 0; i < n_parts; i++) {
        const unsigned char *p = parts[i];
        size_t left = sizes[i];
        while (left) {
            ssize_t k = write(fd, p, left);
            if (k < 0) {
                if (errno == EINTR) continue;
                snprintf(err, errlen, "%s: write failed: %s (nothing replaced)", path, strerror(errno));
                close(fd); unlink(tmp); free(tmp);
                return false;
            }
            p += k; left -= (size_t)k;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "%s: fsync/close failed: %s (nothing replaced)", path, strerror(errno));
        unlink(tmp); free(tmp);
        return false;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: rename failed: %s (nothing replaced)", path, strerror(errno));
        unlink(tmp); free(tmp);
        return false;
    }
    /* make the rename itself durable */
    char *dir = strdup(path), *slash = strrchr(dir, '/');
    if (slash) { *slash = 0; if (!*dir) strcpy(dir, "/"); } else strcpy(dir, ".");
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(dir);
    free(tmp);
    return true;
}

bool segc_st_writer_save(segc_st_writer *w, const char *path, char *err, size_t errlen) {
    if (!w) return snprintf(err, errlen, "%s: out of memory creating the writer (nothing written)", path), false;
    if (w->failed[0]) return snprintf(err, errlen, "%s: %s (nothing written)", path, w->failed), false;
    cJSON *root = cJSON_CreateObject();
    if (w->meta) cJSON_AddItemToObject(root, "__metadata__", cJSON_Duplicate(w->meta, 1));
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        st_item *it = &w->items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dtype", st_name_of(it->dt));
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < it->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)it->shape[d]));
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + it->nbytes)));
        off += it->nbytes;
        cJSON_AddItemToObject(root, it->name, o);
    }
    char *js = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t jl = js ? strlen(js) : 0, padded = (jl + 7) / 8 * 8;
    char *hdr = js ? malloc(8 + padded) : NULL;
    int np = w->n + 1;
    const void **parts = malloc((size_t)np * sizeof *parts);
    size_t *sizes = malloc((size_t)np * sizeof *sizes);
    if (!hdr || !parts || !sizes) {
        free(js); free(hdr); free(parts); free(sizes);
        return snprintf(err, errlen, "%s: out of memory building the header of %d tensors (nothing written)", path, w->n), false;
    }
    uint64_t h = padded;
    for (int i = 0; i < 8; i++) hdr[i] = (char)((h >> (8 * i)) & 0xff);
    memcpy(hdr + 8, js, jl);
    memset(hdr + 8 + jl, ' ', padded - jl);
    free(js);
    parts[0] = hdr; sizes[0] = 8 + padded;
    for (int i = 0; i < w->n; i++) { parts[i + 1] = w->items[i].data; sizes[i + 1] = w->items[i].nbytes; }
    bool ok = segc_write_file_atomic(path, parts, sizes, np, err, errlen);
    free(parts); free(sizes); free(hdr);
    return ok;
}

void segc_st_writer_free(segc_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) { free(w->items[i].name); free(w->items[i].data); }
    free(w->items);
    cJSON_Delete(w->meta);
    free(w);
}
