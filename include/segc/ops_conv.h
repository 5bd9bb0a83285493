/* segc ops: conv (see ops.h for conventions) */
#ifndef SEGC_OPS_CONV_H
#define SEGC_OPS_CONV_H
#include "segc/core.h"

#endif
