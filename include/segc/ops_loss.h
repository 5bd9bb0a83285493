/* segc ops: loss (see ops.h for conventions) */
#ifndef SEGC_OPS_LOSS_H
#define SEGC_OPS_LOSS_H
#include "segc/core.h"

#endif
