/* segc command-line entry: `segc COMMAND ...` dispatches to one cmd_* per verb. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "segc/dist.h"

static const struct { const char *name; int (*run)(int, char **); const char *help; } commands[] = {
    {"data", segc_cmd_data, "check and summarise datasets (segc data check|stats NAME --root DIR)"},
    {"train", segc_cmd_train, "train a model from a YAML config (segc train CONFIG.yaml [key=value ...])"},
    {"eval", segc_cmd_eval, "evaluate weights on a split (segc eval CONFIG --checkpoint FILE)"},
    {"predict", segc_cmd_predict, "label maps + overlays for images (segc predict --checkpoint F IN... --out DIR)"},
    {"bench", segc_cmd_bench, "training/inference throughput, FLOPs, profile (segc bench CONFIG [--profile A:B])"},
    {"tune", segc_cmd_tune, "hyper-parameter search: grid/random, ASHA, PBT (segc tune SPEC.yaml [key=value ...])"},
    {"models", segc_cmd_models, "list the model families (model.type), their variants and config keys"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: segc COMMAND [ARGS]\n       segc COMMAND -h     help on one command\n"
               "       segc --version     version, build flags, CPU ISA extensions, oneDNN\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  %-8s %s\n", "help", "help on a command (segc help COMMAND)");
}

int main(int argc, char **argv) {
    char derr[256];
    if (!segc_dist_init(derr, sizeof derr)) { fprintf(stderr, "segc: %s\n", derr); return 1; }
    atexit(segc_dist_finalize);   /* MPI only when a launcher (mpirun, srun) started this process */
    if (!segc_dist_is_writer() && !freopen("/dev/null", "w", stdout)) return 1;   /* rank 0 prints results */
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) { usage(argc < 2 ? stderr : stdout); return argc < 2 ? 2 : 0; }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V") || !strcmp(argv[1], "version")) return segc_cli_version();
    /* `segc help COMMAND` is `segc COMMAND --help` */
    if (!strcmp(argv[1], "help")) {
        if (argc < 3) { usage(stdout); return 0; }
        for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
            if (!strcmp(argv[2], commands[i].name)) {
                char *hv[] = {argv[2], "--help", NULL};
                return commands[i].run(2, hv);
            }
        fprintf(stderr, "segc help: unknown command '%s'\n", argv[2]);
        usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "segc: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
