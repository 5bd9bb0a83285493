#ifndef SEGC_CLI_H
#define SEGC_CLI_H
/* each returns the process exit code; argv[0] is the verb */
int segc_cmd_data(int argc, char **argv);
int segc_cmd_train(int argc, char **argv);
int segc_cmd_eval(int argc, char **argv);
int segc_cmd_predict(int argc, char **argv);
int segc_cmd_bench(int argc, char **argv);
int segc_cmd_models(int argc, char **argv);

/* config assembly shared by train/eval/predict (cmd_train.c, cmd_eval.c):
 * defaults, CONFIG file, key=value overrides, [work_dir], validation */
#include "segc/config.h"
bool segc_cli_config(segc_config *c, const char *path, char **overrides, int n_overrides, const char *work_dir,
                     char *err, size_t errlen);
/* the same from CONFIG, or without one from the checkpoint's stored configuration */
bool segc_cli_config_for(segc_config *c, const char *config, const char *checkpoint, char **overrides,
                         int n_overrides, char *err, size_t errlen);
#endif
