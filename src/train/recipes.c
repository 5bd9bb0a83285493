/* The bundled recipe overlays selected by `recipe: mild|medium|hot` (YAML or
 * the override recipe=NAME): MosaicML Composer's DeepLabV3+ ADE20K recipes,
 * as the keys they change on top of a base configuration (the optimizer,
 * DecoupledSGDW lr 0.08 momentum 0.9 wd 5e-5 at global batch 128, belongs to
 * the base: configs/deeplabv3plus/ade20k_r101_baseline.yaml). Keys given after
 * `recipe:` (later in the file, or later overrides) win. */
#include <string.h>

#include "segc/config.h"

static const struct { const char *name, *yaml; } overlays[] = {
    {"mild",
     "train: {max_iters: 25ep}\n"
     "schedule: {policy: cosine}\n"
     "recipe: {ema: {half_life: 1000ba, update_interval: 10ba}}\n"},
    {"medium",
     "train: {max_iters: 90ep}\n"
     "schedule: {policy: cosine}\n"
     "recipe:\n"
     "  ema: {half_life: 1000ba, update_interval: 10ba}\n"
     "  sam: {rho: 0.3, interval: 2}\n"
     "  mixup: {alpha: 0.2}\n"},
    {"hot",
     "train: {max_iters: 240ep}\n"
     "schedule: {policy: cosine}\n"
     "recipe:\n"
     "  ema: {half_life: 2000ba, update_interval: 1ba}\n"
     "  sam: {rho: 0.3, interval: 1}\n"
     "  mixup: {alpha: 0.5}\n"},
};

const char *segc_recipe_overlay(const char *name) {
    for (size_t i = 0; i < sizeof overlays / sizeof overlays[0]; i++)
        if (!strcmp(name, overlays[i].name)) return overlays[i].yaml;
    return NULL;
}

const char *segc_recipe_names(void) { return "mild, medium, hot"; }
