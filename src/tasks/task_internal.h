/* The detection task's half of the task evaluator (task.h): segmentation.c
 * owns segc_evaluator and hands detection specs to these. */
#ifndef SEGC_TASK_INTERNAL_H
#define SEGC_TASK_INTERNAL_H
#include "segc/coco_eval.h"
#include "segc/task.h"

/* spec->coco_gt, else spec->dataset's ground truth; NULL + message */
segc_coco_eval *det_eval_new(const segc_eval_spec *s, char *err, size_t errlen);
bool det_spec_knows(const segc_eval_spec *s, const char *metric);
bool det_eval_result(const segc_coco_eval *e, const segc_eval_spec *s, segc_eval_result *r, char *err, size_t errlen);
segc_coco_eval *det_of(segc_evaluator *e);   /* NULL for segmentation evaluators */
bool det_result_is(const segc_eval_result *r);
void det_result_print(FILE *out, const segc_eval_result *r, const char *const *class_names);
char *det_result_json(const segc_eval_result *r, const char *const *class_names);
#endif
