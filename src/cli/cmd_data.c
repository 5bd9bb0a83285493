/* `segc data ...` — filled in by the data pipeline work. */
#include <stdio.h>

#include "cli.h"

int segc_cmd_data(int argc, char **argv) {
    fprintf(stderr, "segc data: no dataset support in this build yet\n");
    return 2;
}
