/* Checkpoint pairs (weights + training state), the `latest` pointer, pruning,
 * best weights. Every file is replaced atomically; see checkpoint.h. */
#include "segc/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "segc/nn.h"

uint64_t segc_params_hash(const segc_params *p) {
    uint64_t h = 0xcbf29ce484222325ull;
    const uint32_t *w = (const uint32_t *)p->data;
    for (int64_t i = 0; i < p->total; i++) h = (h ^ w[i]) * 0x100000001b3ull;
    return h;
}

static void stem_of(int64_t iter, char *buf, size_t n) { snprintf(buf, n, "iter_%07" PRId64, iter); }

static void pair_paths(const char *dir, const char *stem, char *w, size_t wn, char *s, size_t sn) {
    snprintf(w, wn, "%s/%s.safetensors", dir, stem);
    snprintf(s, sn, "%s/%s.state.safetensors", dir, stem);
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* iteration of "iter_NNNN.safetensors" (weights files only), -1 otherwise */
static int64_t weights_iter(const char *name) {
    int64_t it;
    int used = 0;
    if (sscanf(name, "iter_%" SCNd64 ".safetensors%n", &it, &used) == 1 && name[used] == 0 && it >= 0) return it;
    return -1;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Keeps the keep_last newest pairs up to `current`; newer leftovers of an
 * interrupted run are left alone (they are overwritten when reached). */
static void prune(const char *dir, int64_t current, int keep_last) {
    DIR *d = opendir(dir);
    if (!d) return;
    int64_t *its = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int64_t it = weights_iter(e->d_name);
        if (it < 0 || it > current) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *ni = realloc(its, cap * sizeof *its);
            if (!ni) break;
            its = ni;
        }
        its[n++] = it;
    }
    closedir(d);
    if (n > (size_t)keep_last) {
        qsort(its, n, sizeof *its, cmp_i64);
        for (size_t i = 0; i + (size_t)keep_last < n; i++) {
            char stem[32], w[4096], s[4096];
            stem_of(its[i], stem, sizeof stem);
            pair_paths(dir, stem, w, sizeof w, s, sizeof s);
            unlink(s);   /* state first: a weights file without state is never taken for a checkpoint */
            unlink(w);
        }
    }
    free(its);
}

static char *state_json(const segc_train_state *st, uint64_t weights_hash) {
    cJSON *j = cJSON_CreateObject();
    char buf[32];
    cJSON_AddNumberToObject(j, "iter", (double)st->iter);
    /* 64-bit values as strings: JSON numbers are doubles */
    snprintf(buf, sizeof buf, "%" PRIu64, st->rng.seed);
    cJSON_AddStringToObject(j, "rng_seed", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, st->rng.offset);
    cJSON_AddStringToObject(j, "rng_offset", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, st->sampler.seed);
    cJSON_AddStringToObject(j, "sampler_seed", buf);
    cJSON_AddNumberToObject(j, "sampler_epoch", (double)st->sampler.epoch);
    cJSON_AddNumberToObject(j, "sampler_position", (double)st->sampler.position);
    cJSON_AddNumberToObject(j, "best_metric", st->best_metric);
    cJSON_AddNumberToObject(j, "best_iter", (double)st->best_iter);
    cJSON_AddNumberToObject(j, "elapsed_s", st->elapsed_s);
    cJSON_AddNumberToObject(j, "loss_ema", isfinite(st->loss_ema) ? st->loss_ema : 0.0);
    snprintf(buf, sizeof buf, "%016" PRIx64, weights_hash);
    cJSON_AddStringToObject(j, "weights_hash", buf);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

bool segc_checkpoint_save(const char *dir, const segc_params *p, const segc_optimizer *opt, const segc_train_state *st,
                          const char *config_yaml, int keep_last, char *err, size_t errlen) {
    return segc_checkpoint_save_ex(dir, p, opt, st, config_yaml, keep_last, NULL, err, errlen);
}

bool segc_checkpoint_save_ex(const char *dir, const segc_params *p, const segc_optimizer *opt, const segc_train_state *st,
                             const char *config_yaml, int keep_last, const segc_ckpt_extra *extra, char *err,
                             size_t errlen) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return segc_errorf(err, errlen, "checkpoint: cannot create %s: %s", dir, strerror(errno));
    char stem[32], w[4096], s[4096], iter[32];
    stem_of(st->iter, stem, sizeof stem);
    pair_paths(dir, stem, w, sizeof w, s, sizeof s);
    snprintf(iter, sizeof iter, "%" PRId64, st->iter);
    const char *meta[] = {"segc_iter", iter, "segc_config", config_yaml ? config_yaml : ""};
    char e2[512];
    if (!segc_params_save(p, w, meta, 2, e2, sizeof e2))
        return segc_errorf(err, errlen, "checkpoint: saving weights failed, previous checkpoint kept: %s", e2);
    segc_st_writer *sw = segc_st_writer_new();
    if (opt) segc_optimizer_save(opt, sw, "optimizer.");
    if (extra && extra->save) extra->save(extra->user, sw);
    char *js = state_json(st, segc_params_hash(p));
    if (!js) {   /* a state without its JSON could never be resumed: write none */
        segc_st_writer_free(sw);
        unlink(w);
        return segc_errorf(err, errlen, "checkpoint: out of memory writing the training state, previous checkpoint kept");
    }
    segc_st_writer_meta(sw, "segc_train_state", js);
    segc_st_writer_meta(sw, "segc_config", config_yaml ? config_yaml : "");
    segc_st_writer_meta(sw, "segc_weights", strrchr(w, '/') + 1);
    cJSON_free(js);
    bool ok = segc_st_writer_save(sw, s, e2, sizeof e2);
    segc_st_writer_free(sw);
    if (!ok) {
        unlink(w);   /* never referenced by `latest`: drop the half pair */
        return segc_errorf(err, errlen, "checkpoint: saving training state failed, previous checkpoint kept: %s", e2);
    }
    char latest[4096], line[48];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    snprintf(line, sizeof line, "%s\n", stem);
    const void *parts[1] = {line};
    size_t sizes[1] = {strlen(line)};
    if (!segc_write_file_atomic(latest, parts, sizes, 1, e2, sizeof e2))
        return segc_errorf(err, errlen, "checkpoint: updating %s failed, previous checkpoint kept: %s", latest, e2);
    prune(dir, st->iter, keep_last);
    return true;
}

bool segc_checkpoint_latest(const char *dir, char *weights, size_t wn, char *state, size_t sn, char *err,
                            size_t errlen) {
    if (errlen) err[0] = 0;
    char latest[4096];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    FILE *f = fopen(latest, "r");
    if (!f) {
        if (errno == ENOENT) return false;
        return segc_errorf(err, errlen, "checkpoint: cannot read %s: %s", latest, strerror(errno));
    }
    char line[128] = "";
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    int64_t it;
    int used = 0;
    if (!got || sscanf(line, "iter_%" SCNd64 "%n", &it, &used) != 1 || line[used] != 0)
        return segc_errorf(err, errlen, "checkpoint: %s does not name a checkpoint (found '%.40s')", latest, line);
    pair_paths(dir, line, weights, wn, state, sn);
    if (!file_exists(weights) || !file_exists(state))
        return segc_errorf(err, errlen, "checkpoint: %s names %s, but %s is missing", latest, line,
                           file_exists(weights) ? state : weights);
    return true;
}

static bool json_i64(const cJSON *j, const char *k, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    /* a double outside int64's range does not convert (undefined behaviour) */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= -9.2e18 && v->valuedouble <= 9.2e18)) return false;
    *out = (int64_t)v->valuedouble;
    return true;
}
static bool json_dbl(const cJSON *j, const char *k, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!cJSON_IsNumber(v)) return false;
    *out = v->valuedouble;
    return true;
}
static bool json_u64str(const cJSON *j, const char *k, uint64_t *out, int base) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!cJSON_IsString(v) || !*v->valuestring) return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v->valuestring, &end, base);
    if (*end || errno) return false;
    *out = x;
    return true;
}

static bool parse_state(const char *path, const char *js, segc_train_state *st, uint64_t *hash, char *err,
                        size_t errlen) {
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    segc_train_state t;
    memset(&t, 0, sizeof t);
    bool ok = j && json_i64(j, "iter", &t.iter) && json_u64str(j, "rng_seed", &t.rng.seed, 10) &&
              json_u64str(j, "rng_offset", &t.rng.offset, 10) && json_u64str(j, "sampler_seed", &t.sampler.seed, 10) &&
              json_i64(j, "sampler_epoch", &t.sampler.epoch) && json_i64(j, "sampler_position", &t.sampler.position) &&
              json_dbl(j, "best_metric", &t.best_metric) && json_i64(j, "best_iter", &t.best_iter) &&
              json_dbl(j, "elapsed_s", &t.elapsed_s) && json_dbl(j, "loss_ema", &t.loss_ema) &&
              json_u64str(j, "weights_hash", hash, 16) && t.iter >= 0 && t.sampler.epoch >= 0 &&
              t.sampler.position >= 0 && t.best_iter >= -1;
    cJSON_Delete(j);
    if (!ok) return segc_errorf(err, errlen, "checkpoint: %s: missing or malformed 'segc_train_state' metadata", path);
    *st = t;
    return true;
}

bool segc_checkpoint_load(const char *weights, const char *state, segc_params *p, segc_optimizer *opt,
                          segc_train_state *st, char **config_yaml, char *err, size_t errlen) {
    return segc_checkpoint_load_ex(weights, state, p, opt, st, config_yaml, NULL, err, errlen);
}

bool segc_checkpoint_load_ex(const char *weights, const char *state, segc_params *p, segc_optimizer *opt,
                             segc_train_state *st, char **config_yaml, const segc_ckpt_extra *extra, char *err,
                             size_t errlen) {
    if (config_yaml) *config_yaml = NULL;
    char e2[640];
    /* read and check the state before touching the model, so a bad pair changes nothing */
    segc_st_file *sf = NULL;
    segc_train_state t;
    uint64_t want_hash = 0;
    if (state) {
        sf = segc_st_open(state, e2, sizeof e2);
        if (!sf) return segc_errorf(err, errlen, "checkpoint: %s", e2);
        if (!parse_state(state, segc_st_meta(sf, "segc_train_state"), &t, &want_hash, err, errlen)) {
            segc_st_close(sf);
            return false;
        }
    }
    float *backup = malloc((size_t)(p->total ? p->total : 1) * sizeof(float));
    if (!backup) { segc_st_close(sf); return segc_errorf(err, errlen, "checkpoint: out of memory"); }
    memcpy(backup, p->data, (size_t)p->total * sizeof(float));
    bool ok = segc_params_load(p, weights, true, NULL, e2, sizeof e2);
    if (!ok) segc_errorf(err, errlen, "checkpoint: %s", e2);
    if (ok && state && segc_params_hash(p) != want_hash)
        ok = segc_errorf(err, errlen, "checkpoint: %s does not belong to %s (weights hash differs)", state, weights);
    if (ok && state && opt && !segc_optimizer_load(opt, sf, "optimizer.", e2, sizeof e2))
        ok = segc_errorf(err, errlen, "checkpoint: %s", e2);
    if (ok && state && extra && extra->load && !extra->load(extra->user, sf, e2, sizeof e2))
        ok = segc_errorf(err, errlen, "checkpoint: %s", e2);
    if (!ok) memcpy(p->data, backup, (size_t)p->total * sizeof(float));
    free(backup);
    if (ok && state) {
        if (st) *st = t;
        const char *cy = segc_st_meta(sf, "segc_config");
        if (config_yaml && cy) *config_yaml = strdup(cy);
    }
    segc_st_close(sf);
    return ok;
}

bool segc_checkpoint_save_best(const char *dir, const segc_params *p, int64_t iter, double metric,
                               const char *config_yaml, char *err, size_t errlen) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return segc_errorf(err, errlen, "checkpoint: cannot create %s: %s", dir, strerror(errno));
    char path[4096], it[32], m[48];
    snprintf(path, sizeof path, "%s/best.safetensors", dir);
    snprintf(it, sizeof it, "%" PRId64, iter);
    snprintf(m, sizeof m, "%.17g", metric);
    const char *meta[] = {"segc_iter", it, "segc_best_metric", m, "segc_config", config_yaml ? config_yaml : ""};
    char e2[512];
    if (!segc_params_save(p, path, meta, 3, e2, sizeof e2))
        return segc_errorf(err, errlen, "checkpoint: saving best weights failed, previous best kept: %s", e2);
    return true;
}

char *segc_checkpoint_config(const char *path, char *err, size_t errlen) {
    segc_st_file *f = segc_st_open(path, err, errlen);
    if (!f) return NULL;
    const char *c = segc_st_meta(f, "segc_config");
    char *out = c && *c ? strdup(c) : NULL;
    if (!out) segc_errorf(err, errlen, "%s: no 'segc_config' metadata (not a segc training checkpoint; pass --config)", path);
    segc_st_close(f);
    return out;
}
