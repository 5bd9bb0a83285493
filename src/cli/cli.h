#ifndef SEGC_CLI_H
#define SEGC_CLI_H
/* each returns the process exit code; argv[0] is the verb */
int segc_cmd_data(int argc, char **argv);
#endif
