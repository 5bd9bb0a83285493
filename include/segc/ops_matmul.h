/* segc ops: matmul (see ops.h for conventions) */
#ifndef SEGC_OPS_MATMUL_H
#define SEGC_OPS_MATMUL_H
#include "segc/core.h"

#endif
