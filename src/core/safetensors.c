/* safetensors: 8-byte little-endian header length, JSON header, raw data. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "segc/safetensors.h"

struct segc_st_file {
    char *path;
    unsigned char *buf;
    size_t size;
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

segc_st_file *segc_st_open(const char *path, char *err, size_t errlen) {
    segc_st_file *f = calloc(1, sizeof *f);
    cJSON *root = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) { snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno)); free(f); return NULL; }
    f->path = strdup(path);
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (sz < 8) { fclose(fp); FAIL("%s: not a safetensors file (%ld bytes, header needs 8)", path, sz); }
    f->size = (size_t)sz;
    f->buf = aligned_alloc(SEGC_ALIGN, (f->size + SEGC_ALIGN - 1) / SEGC_ALIGN * SEGC_ALIGN);
    size_t got = fread(f->buf, 1, f->size, fp);
    fclose(fp);
    if (got != f->size) FAIL("%s: short read (%zu of %zu bytes)", path, got, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->buf[i];
    if (hlen > f->size - 8) FAIL("%s: header length %llu exceeds file size %zu", path, (unsigned long long)hlen, f->size);
    root = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) FAIL("%s: header is not a JSON object", path);
    size_t data_start = 8 + (size_t)hlen, data_len = f->size - data_start;
    int n = cJSON_GetArraySize(root);
    f->e = calloc((size_t)n + 1, sizeof *f->e);
    for (cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) { f->meta = cJSON_Duplicate(it, 1); continue; }
        segc_st_entry *e = &f->e[f->n];
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
            FAIL("%s: tensor '%s': malformed entry (needs dtype, shape, data_offsets)", path, it->string);
        e->name = strdup(it->string);
        e->dtype_str = strdup(dt->valuestring);
        size_t esize = 0;
        for (size_t k = 0; k < sizeof st_dtypes / sizeof *st_dtypes; k++)
            if (!strcmp(dt->valuestring, st_dtypes[k].s)) { e->dtype = st_dtypes[k].dt; e->dtype_known = true; esize = segc_dtype_size(e->dtype); }
        for (size_t k = 0; !esize && k < sizeof st_other / sizeof *st_other; k++)
            if (!strcmp(dt->valuestring, st_other[k].s)) esize = st_other[k].size;
        if (!esize) FAIL("%s: tensor '%s': unknown dtype '%s'", path, e->name, dt->valuestring);
        e->ndim = cJSON_GetArraySize(sh);
        if (e->ndim > SEGC_MAX_DIMS) FAIL("%s: tensor '%s': %d dims, at most %d supported", path, e->name, e->ndim, SEGC_MAX_DIMS);
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            cJSON *v = cJSON_GetArrayItem(sh, d);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0) FAIL("%s: tensor '%s': bad shape entry %d", path, e->name, d);
            e->shape[d] = (int64_t)v->valuedouble;
            numel *= (size_t)e->shape[d];
        }
        double b = cJSON_GetArrayItem(off, 0)->valuedouble, en = cJSON_GetArrayItem(off, 1)->valuedouble;
        if (b < 0 || en < b || (size_t)en > data_len)
            FAIL("%s: tensor '%s': data_offsets [%.0f, %.0f] outside the %zu data bytes", path, e->name, b, en, data_len);
        e->nbytes = (size_t)en - (size_t)b;
        if (e->nbytes != numel * esize)
            FAIL("%s: tensor '%s': %zu bytes for shape of %zu %s elements (expected %zu)", path, e->name, e->nbytes,
                 numel, e->dtype_str, numel * esize);
        e->data = f->buf + data_start + (size_t)b;
        f->n++;
    }
    cJSON_Delete(root);
    return f;
fail:
    cJSON_Delete(root);
    segc_st_close(f);
    return NULL;
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
    free(f->buf);
    free(f->path);
    free(f);
}

/* ---- writer ---- */
typedef struct { char *name; segc_dtype dt; int ndim; int64_t shape[SEGC_MAX_DIMS]; void *data; size_t nbytes; } st_item;
struct segc_st_writer { st_item *items; int n, cap; cJSON *meta; };

segc_st_writer *segc_st_writer_new(void) { return calloc(1, sizeof(segc_st_writer)); }

void segc_st_writer_add(segc_st_writer *w, const char *name, segc_dtype dt, int ndim, const int64_t *shape,
                        const void *data) {
    if (w->n == w->cap) { w->cap = w->cap ? w->cap * 2 : 32; w->items = realloc(w->items, (size_t)w->cap * sizeof *w->items); }
    st_item *it = &w->items[w->n++];
    it->name = strdup(name);
    it->dt = dt;
    it->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) { it->shape[i] = shape[i]; numel *= (size_t)shape[i]; }
    it->nbytes = numel * segc_dtype_size(dt);
    it->data = malloc(it->nbytes ? it->nbytes : 1);
    if (it->nbytes) memcpy(it->data, data, it->nbytes);
}

void segc_st_writer_meta(segc_st_writer *w, const char *key, const char *value) {
    if (!w->meta) w->meta = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    cJSON_AddStringToObject(w->meta, key, value);
}

bool segc_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int n_parts, char *err,
                            size_t errlen) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
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
    size_t jl = strlen(js), padded = (jl + 7) / 8 * 8;
    char *hdr = malloc(8 + padded);
    uint64_t h = padded;
    for (int i = 0; i < 8; i++) hdr[i] = (char)((h >> (8 * i)) & 0xff);
    memcpy(hdr + 8, js, jl);
    memset(hdr + 8 + jl, ' ', padded - jl);
    free(js);
    int np = w->n + 1;
    const void **parts = malloc((size_t)np * sizeof *parts);
    size_t *sizes = malloc((size_t)np * sizeof *sizes);
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
