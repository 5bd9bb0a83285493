/* segc ops: shape (see ops.h for conventions) */
#ifndef SEGC_OPS_SHAPE_H
#define SEGC_OPS_SHAPE_H
#include "segc/core.h"

#endif
