/* TEMPORARY shim until the task evaluator and volume API land (not committed) */
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "segc/task.h"
#include "segc/data.h"
bool segc_dataset_sample_volume(const segc_dataset *ds, int64_t i, int64_t *volume, int *slice);
bool segc_dataset_sample_volume(const segc_dataset *ds, int64_t i, int64_t *volume, int *slice) { *volume = i; *slice = 0; return true; }
struct segc_evaluator { segc_eval_spec s; segc_confusion c; };
segc_evaluator *segc_evaluator_new(const segc_eval_spec *s, char *err, size_t errlen) {
    segc_evaluator *e = calloc(1, sizeof *e); e->s = *s;
    if (!segc_confusion_init(&e->c, s->num_classes, s->ignore_index, err, errlen)) { free(e); return NULL; }
    return e; }
void segc_evaluator_free(segc_evaluator *e) { if (e) { segc_confusion_free(&e->c); free(e);} }
bool segc_evaluator_add(segc_evaluator *e, segc_ctx *ctx, const segc_tensor *pred, const segc_tensor *label, const int64_t *v) { return segc_confusion_add(ctx, &e->c, pred, label); }
bool segc_evaluator_merge(segc_evaluator *d, const segc_evaluator *s, char *err, size_t errlen) { return segc_confusion_merge(&d->c, &s->c, err, errlen); }
bool segc_evaluator_result(const segc_evaluator *e, segc_eval_result *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r); if (!segc_metrics_compute(&e->c, &r->pixel, err, errlen)) return false;
    strcpy(r->primary, "mIoU"); r->primary_value = r->pixel.mIoU; r->n = 1; strcpy(r->names[0], "mIoU"); r->values[0] = r->pixel.mIoU; return true; }
void segc_eval_result_free(segc_eval_result *r) { segc_metrics_free(&r->pixel); }
double segc_eval_result_get(const segc_eval_result *r, const char *name) { for (int i = 0; i < r->n; i++) if (!strcmp(r->names[i], name)) return r->values[i]; return NAN; }
bool segc_metric_lower_is_better(const char *n) { return strstr(n, "loss") != NULL; }
void segc_eval_result_print(FILE *out, const segc_eval_result *r, const char *const *names) { segc_metrics_print(out, &r->pixel, names); }
char *segc_eval_result_json(const segc_eval_result *r, const char *const *names) { return segc_metrics_json(&r->pixel, names); }
void segc_eval_spec_brats_regions(segc_eval_spec *s) {}
