/* segc ops: elementwise (see ops.h for conventions) */
#ifndef SEGC_OPS_ELEMENTWISE_H
#define SEGC_OPS_ELEMENTWISE_H
#include "segc/core.h"

#endif
