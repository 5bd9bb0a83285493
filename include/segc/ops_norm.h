/* segc ops: norm (see ops.h for conventions) */
#ifndef SEGC_OPS_NORM_H
#define SEGC_OPS_NORM_H
#include "segc/core.h"

#endif
