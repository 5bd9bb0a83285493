#ifndef SEGC_CLI_H
#define SEGC_CLI_H
/* each returns the process exit code; argv[0] is the verb */
int segc_cmd_data(int argc, char **argv);
int segc_cmd_train(int argc, char **argv);
int segc_cmd_eval(int argc, char **argv);
int segc_cmd_predict(int argc, char **argv);
int segc_cmd_bench(int argc, char **argv);
int segc_cmd_models(int argc, char **argv);
int segc_cmd_tune(int argc, char **argv);
/* `segc --version`: version, build flags, CPU ISA extensions, oneDNN (version.c) */
int segc_cli_version(void);

/* config assembly shared by train/eval/predict (cmd_train.c, cmd_eval.c):
 * defaults, CONFIG file, key=value overrides, [work_dir], validation */
#include "segc/config.h"
bool segc_cli_config(segc_config *c, const char *path, char **overrides, int n_overrides, const char *work_dir,
                     char *err, size_t errlen);
/* the same from CONFIG, or without one from the checkpoint's stored configuration */
bool segc_cli_config_for(segc_config *c, const char *config, const char *checkpoint, char **overrides,
                         int n_overrides, char *err, size_t errlen);

/* `--profile [A:B]` / `--profile=A:B` at argv[*i] (cmd_bench.c; for train/eval too): 0 when argv[*i]
 * is another option; 1 when taken (*on set; a window, when given, into *first and *last, *i
 * advanced past it); -1 after printing a message for a bad window */
int segc_cli_profile_opt(int argc, char **argv, int *i, const char *cmd, bool *on, int64_t *first, int64_t *last);
#endif
