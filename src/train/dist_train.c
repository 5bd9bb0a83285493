/* The trainer's side of data-parallel training (segc/dist.h has the MPI
 * side): the start-up checks every rank must pass together, the weights
 * every rank starts from, and buffer averaging. No MPI here. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "segc/dist.h"
#include "segc/dist_train.h"
#include "segc/version.h"

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t segc_dist_build_hash(void) {
    static const char id[] = SEGC_VERSION " " __DATE__ " " __TIME__;
    uint64_t h = fnv1a(0xcbf29ce484222325ull, id, sizeof id);
    size_t sz[2] = {sizeof(segc_config), sizeof(segc_ctx)};
    return fnv1a(h, sz, sizeof sz);
}

bool segc_dist_train_start(bool setup_ok, const char *config_yaml, segc_params *params, segc_train_state *st, char *err,
                           size_t errlen) {
    if (!segc_dist_agree(setup_ok, err, errlen)) return false;
    char e2[512];
    uint64_t hc = fnv1a(0xcbf29ce484222325ull, config_yaml ? config_yaml : "", config_yaml ? strlen(config_yaml) : 0);
    bool same = segc_dist_same(segc_dist_build_hash(), "segc build", e2, sizeof e2) &&
                segc_dist_same(hc, "resolved configuration", e2, sizeof e2);
    if (!same) return segc_errorf(err, errlen, "train: %s", e2);
    /* the weights, buffers and trajectory state of rank 0 (equal anyway after the same seeded init or
     * checkpoint; this makes it so when a rank read another file) */
    segc_dist_bcast_f32(params->data, params->total, "parameter broadcast");
    double s[1] = {(double)st->iter};
    segc_dist_sum_f64(s, 1);
    if (s[0] != (double)st->iter * segc_dist_world())
        return segc_errorf(err, errlen, "train: the ranks resumed from different iterations (is train.work_dir on a "
                           "file system every host sees?)");
    return true;
}

void segc_dist_average_buffers(segc_params *p, bool synced) {
    if (segc_dist_world() == 1 || synced) return;   /* SyncBatchNorm keeps them equal on every rank */
    for (int i = 0; i < p->n; i++)
        if (!p->trainable[i]) segc_dist_allreduce_mean_f32(p->data + p->offset[i], segc_numel(p->t[i]));
}

double segc_dist_global_loss(double lv) {
    if (segc_dist_world() == 1) return lv;
    double v[2] = {isfinite(lv) ? lv : 0, isfinite(lv) ? 0 : 1};
    segc_dist_sum_f64(v, 2);
    return v[1] > 0 ? NAN : v[0] / segc_dist_world();
}

void segc_dist_any(bool *a, bool *b) {
    if (segc_dist_world() == 1) return;
    double v[2] = {*a, *b};
    segc_dist_sum_f64(v, 2);
    *a = v[0] > 0, *b = v[1] > 0;
}

void segc_dist_end_on_failure(const char *msg) {
    if (segc_dist_world() > 1) segc_dist_fail(msg);
}
