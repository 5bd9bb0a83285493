/* `segc models [TYPE]`: the registered model families, their task,
 * variants and config keys (what `model.type` accepts). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "segc/model.h"

static const char *kind_name(segc_key_kind k) {
    static const char *const names[] = {"int", "number", "bool", "string", "ints", "numbers"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

int segc_cmd_models(int argc, char **argv) {
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: segc models [TYPE]\n  lists the model families (model.type) with their task, variants and keys\n");
            return 0;
        }
        if (only) { fprintf(stderr, "segc models: unexpected argument %s\n", argv[i]); return 2; }
        only = argv[i];
    }
    if (only && !segc_model_family_find(only)) {
        char list[256];
        segc_model_type_list(list, sizeof list);
        fprintf(stderr, "segc models: unknown model family '%s' (expected one of %s)\n", only, list);
        return 1;
    }
    for (int f = 0; f < segc_model_n_families(); f++) {
        const segc_model_family *fam = segc_model_family_at(f);
        if (only && strcmp(only, fam->type) != 0) continue;
        printf("%-10s %-12s %s\n", fam->type, segc_task_name(fam->task), fam->summary);
        if (fam->variants) printf("  %-22s %-8s %s (default %s)\n", "model.variant", "string", fam->variants, fam->default_variant);
        for (int k = 0; k < fam->n_keys; k++) {
            const segc_model_key *key = &fam->keys[k];
            char name[80];
            snprintf(name, sizeof name, "model.%s", key->name);
            printf("  %-22s %-8s %s (default %s%s%s)\n", name, kind_name(key->kind), key->help, key->dflt,
                   key->choices ? "; " : "", key->choices ? key->choices : "");
        }
    }
    return 0;
}
