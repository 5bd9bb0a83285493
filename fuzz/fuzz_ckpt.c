/* libFuzzer target: the checkpoint state reader. The input is a state file
 * (safetensors with the "segc_train_state" JSON, the stored configuration and
 * the optimizer's tensors) loaded beside fixed weights into a small model.
 * Accepted or not, the call must return cleanly with a message on refusal,
 * and a refusal must leave the weights untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_ckpt_model.h"

static char dir[64], weights[128], state[128];
static segc_params P;
static segc_optimizer *opt;
static float *initial;

static void cleanup(void) {
    unlink(weights);
    unlink(state);
    rmdir(dir);
}

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/segc_fuzz_ckpt_%d", (int)getpid());
    if (mkdir(dir, 0700) != 0) abort();
    atexit(cleanup);
    fuzz_ckpt_params(&P);
    char err[512];
    segc_optim_cfg oc = segc_optim_defaults(SEGC_OPT_ADAMW, 1e-3);
    opt = segc_optimizer_new(&P, &oc, err, sizeof err);
    if (!opt) abort();
    segc_train_state st = {.iter = 3, .best_metric = -1, .best_iter = -1};
    if (!segc_checkpoint_save(dir, &P, opt, &st, "name: fuzz\n", 1, err, sizeof err)) abort();
    snprintf(weights, sizeof weights, "%s/iter_0000003.safetensors", dir);
    snprintf(state, sizeof state, "%s/fuzz_state.safetensors", dir);
    char w2[128];   /* the saved state is not needed: the input takes its place */
    snprintf(w2, sizeof w2, "%s/iter_0000003.state.safetensors", dir);
    unlink(w2);
    snprintf(w2, sizeof w2, "%s/latest", dir);
    unlink(w2);
    initial = malloc((size_t)P.total * sizeof(float));
    memcpy(initial, P.data, (size_t)P.total * sizeof(float));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!opt) setup();
    FILE *f = fopen(state, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    memcpy(P.data, initial, (size_t)P.total * sizeof(float));
    char err[640] = "", *yaml = NULL;
    segc_train_state st;
    bool ok = segc_checkpoint_load(weights, state, &P, opt, &st, &yaml, err, sizeof err);
    if (!ok && !err[0]) __builtin_trap();
    if (!ok && memcmp(P.data, initial, (size_t)P.total * sizeof(float)) != 0) __builtin_trap();
    if (ok && st.iter < 0) __builtin_trap();
    free(yaml);
    char *cy = segc_checkpoint_config(state, err, sizeof err);
    free(cy);
    return 0;
}
