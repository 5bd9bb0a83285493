/* Durations in iterations or epochs ("80000ba", "80000", "128ep"), byte
 * sizes ("8GiB"), their resolution once the training split's size is known,
 * and the range checks of the recipe.* keys. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/config.h"
#include "segc/recipes.h"

bool segc_parse_duration(const char *s, int64_t *value, bool *epochs) {
    if (!s || !isdigit((unsigned char)s[0])) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || v < 0) return false;
    bool ep = false;
    if (!strcmp(end, "ep")) ep = true;
    else if (*end && strcmp(end, "ba") != 0) return false;
    *value = v;
    *epochs = ep;
    return true;
}

bool segc_parse_bytes(const char *s, int64_t *bytes) {
    if (!s || !isdigit((unsigned char)s[0])) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || !isfinite(v) || v < 0) return false;
    static const struct { const char *suffix; double mult; } units[] = {
        {"", 1}, {"B", 1}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
        {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].suffix)) {
            double b = v * units[i].mult;
            if (!(b < 9.0e18)) return false;
            *bytes = (int64_t)b;
            return true;
        }
    return false;
}

/* the int64 field of duration key k */
static int64_t *dur_field(segc_config *c, int k) {
    switch (k) {
    case SEGC_DUR_MAX_ITERS: return &c->train.max_iters;
    case SEGC_DUR_WARMUP: return &c->schedule.warmup_iters;
    case SEGC_DUR_VAL_INTERVAL: return &c->train.val_interval;
    case SEGC_DUR_CHECKPOINT_INTERVAL: return &c->train.checkpoint_interval;
    case SEGC_DUR_EMA_HALF_LIFE: return &c->recipe.ema.half_life;
    case SEGC_DUR_EMA_INTERVAL: return &c->recipe.ema.update_interval;
    default: return NULL;
    }
}

static const char *const dur_names[SEGC_DUR_N] = {"train.max_iters", "schedule.warmup_iters", "train.val_interval",
                                                  "train.checkpoint_interval", "recipe.ema.half_life",
                                                  "recipe.ema.update_interval"};

bool segc_config_resolve_durations(segc_config *c, int64_t train_samples, char *err, size_t errlen) {
    if (!c->in_epochs) return true;
    if (train_samples < 1)
        return segc_errorf(err, errlen, "durations in epochs need a training split with samples, found %lld",
                           (long long)train_samples);
    int64_t ipe = train_samples / (c->data.batch_size > 0 ? c->data.batch_size : 1);
    if (ipe < 1) ipe = 1;
    for (int k = 0; k < SEGC_DUR_N; k++) {
        if (!(c->in_epochs & (1u << k))) continue;
        int64_t *v = dur_field(c, k);
        if (*v > INT64_MAX / ipe)
            return segc_errorf(err, errlen, "%s: %lld epochs of %lld iterations overflow", dur_names[k], (long long)*v,
                               (long long)ipe);
        *v *= ipe;
    }
    c->in_epochs = 0;
    return segc_config_finish(c, err, errlen);
}

bool segc_config_check_recipe(const segc_config *c, char *err, size_t errlen) {
    const int64_t hl = c->recipe.ema.half_life, ui = c->recipe.ema.update_interval;
    if (hl < 0) return segc_errorf(err, errlen, "recipe.ema.half_life: expected >= 0 (0: off), found %lld", (long long)hl);
    if (hl > 0 && ui < 1)
        return segc_errorf(err, errlen, "recipe.ema.update_interval: expected >= 1 when EMA is on, found %lld", (long long)ui);
    const double rho = c->recipe.sam.rho, eps = c->recipe.sam.epsilon;
    if (!(isfinite(rho) && rho >= 0))
        return segc_errorf(err, errlen, "recipe.sam.rho: expected a finite number >= 0 (0: off), found %g", rho);
    if (!(isfinite(eps) && eps >= 0))
        return segc_errorf(err, errlen, "recipe.sam.epsilon: expected a finite number >= 0, found %g", eps);
    if (c->recipe.sam.interval < 1)
        return segc_errorf(err, errlen, "recipe.sam.interval: expected >= 1, found %lld", (long long)c->recipe.sam.interval);
    const double alpha = c->recipe.mixup.alpha;
    if (!(isfinite(alpha) && alpha >= 0))
        return segc_errorf(err, errlen, "recipe.mixup.alpha: expected a finite number >= 0 (0: off), found %g", alpha);
    int micro = 0;
    if (!segc_recipe_grad_accum(c, &micro))
        return segc_errorf(err, errlen, "recipe.grad_accum: expected auto or a divisor of data.batch_size (%d), found '%s'",
                           c->data.batch_size, c->recipe.grad_accum);
    int64_t bytes;
    if (*c->train.memory_limit && (!segc_parse_bytes(c->train.memory_limit, &bytes) || bytes < 1))
        return segc_errorf(err, errlen, "train.memory_limit: expected a size such as 8GiB, 512MiB or a byte count, "
                           "found '%s'", c->train.memory_limit);
    return true;
}

bool segc_recipe_grad_accum(const segc_config *c, int *n) {
    const char *s = c->recipe.grad_accum;
    if (!strcmp(s, "auto")) { *n = 0; return true; }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < 1 || v > c->data.batch_size || c->data.batch_size % v) return false;
    *n = (int)v;
    return true;
}
