/* The detection task's evaluator (task.h): COCO box mAP through coco_eval.h,
 * metric names as mmdet's CocoMetric (bbox_mAP, bbox_mAP_50, ...), the
 * pycocotools summary table and a JSON object. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "segc/data.h"
#include "task_internal.h"

static const char *class_label(const char *const *names, int j, char *buf, size_t n) {
    if (names && names[j]) return names[j];
    snprintf(buf, n, "%d", j);
    return buf;
}

/* the 12 stats, then bbox_AP.<class> */
static bool det_names(const segc_eval_spec *s, segc_eval_result *r) {
    char nb[32];
    const char *ds_names[256];
    const char *const *names = s->class_names;
    if (!names && s->coco_gt) names = s->coco_gt->class_names;
    if (!names && s->dataset && s->num_classes <= 256 && segc_dataset_num_classes(s->dataset) >= s->num_classes) {
        for (int k = 0; k < s->num_classes; k++) ds_names[k] = segc_dataset_class_name(s->dataset, k);
        names = ds_names;
    }
    if (SEGC_COCO_N_STATS + s->num_classes > SEGC_TASK_MAX_METRICS) return false;
    r->n = 0;
    for (int i = 0; i < SEGC_COCO_N_STATS; i++) {
        snprintf(r->names[r->n], sizeof r->names[r->n], "%s", segc_coco_stat_names[i]);
        r->values[r->n++] = -1;
    }
    for (int k = 0; k < s->num_classes; k++) {
        snprintf(r->names[r->n], sizeof r->names[r->n], "bbox_AP.%.38s", class_label(names, k, nb, sizeof nb));
        r->values[r->n++] = -1;
    }
    return true;
}

bool det_spec_knows(const segc_eval_spec *s, const char *metric) {
    segc_eval_result *r = malloc(sizeof *r);
    if (!r) return false;
    bool ok = det_names(s, r);
    bool found = false;
    for (int i = 0; ok && i < r->n && !found; i++) found = !strcmp(r->names[i], metric);
    free(r);
    return found;
}

segc_coco_eval *det_eval_new(const segc_eval_spec *s, char *err, size_t errlen) {
    segc_coco_gt gt;
    const segc_coco_gt *g = s->coco_gt;
    if (!g && s->dataset) {
        if (!segc_dataset_coco_gt(s->dataset, &gt)) {
            snprintf(err, errlen, "evaluator_new: detection needs a COCO dataset, found '%s'",
                     segc_dataset_name(s->dataset));
            return NULL;
        }
        g = &gt;
    }
    if (!g) {
        snprintf(err, errlen, "evaluator_new: detection needs the split's ground truth (spec.coco_gt or spec.dataset)");
        return NULL;
    }
    if (g->n_classes != s->num_classes) {
        snprintf(err, errlen, "evaluator_new: the model predicts %d classes but the ground truth has %d categories",
                 s->num_classes, g->n_classes);
        return NULL;
    }
    if (s->primary[0] && !det_spec_knows(s, s->primary)) {
        snprintf(err, errlen,
                 "evaluator_new: unknown primary metric \"%.31s\" for detection (bbox_mAP|bbox_mAP_50|bbox_mAP_75|"
                 "bbox_mAP_s|bbox_mAP_m|bbox_mAP_l|bbox_AR@1|bbox_AR@10|bbox_AR@100|bbox_AR_s@100|bbox_AR_m@100|"
                 "bbox_AR_l@100|bbox_AP.<class>)",
                 s->primary);
        return NULL;
    }
    return segc_coco_eval_new(g, err, errlen);
}

bool det_eval_result(const segc_coco_eval *e, const segc_eval_spec *s, segc_eval_result *r, char *err,
                     size_t errlen) {
    memset(r, 0, sizeof *r);
    if (!det_names(s, r)) {
        snprintf(err, errlen, "evaluator_result: %d classes give more than %d metrics", s->num_classes,
                 SEGC_TASK_MAX_METRICS);
        return false;
    }
    segc_coco_summary sm;
    if (!segc_coco_eval_run(e, &sm, err, errlen)) return false;
    for (int i = 0; i < SEGC_COCO_N_STATS; i++) r->values[i] = sm.stats[i];
    for (int k = 0; k < s->num_classes; k++) r->values[SEGC_COCO_N_STATS + k] = sm.class_ap[k];
    r->n_images = sm.n_images;
    segc_coco_summary_free(&sm);
    snprintf(r->primary, sizeof r->primary, "%s", s->primary[0] ? s->primary : "bbox_mAP");
    r->primary_value = segc_eval_result_get(r, r->primary);
    return true;
}

bool det_result_is(const segc_eval_result *r) { return r->n >= SEGC_COCO_N_STATS && !strcmp(r->names[0], "bbox_mAP"); }

void det_result_print(FILE *out, const segc_eval_result *r, const char *const *class_names) {
    double st[SEGC_COCO_N_STATS];
    for (int i = 0; i < SEGC_COCO_N_STATS; i++) st[i] = r->values[i];
    segc_coco_print_stats(out, st);
    /* mmdet's classwise table: AP@[.5:.95] per category, "nan" where undefined */
    const int k = r->n - SEGC_COCO_N_STATS;
    char(*cells)[48] = calloc((size_t)(k + 1) * 2, sizeof *cells);
    if (cells && k > 0) {
        snprintf(cells[0], 48, "category"), snprintf(cells[1], 48, "AP");
        for (int j = 0; j < k; j++) {
            double v = r->values[SEGC_COCO_N_STATS + j];
            snprintf(cells[2 * (j + 1)], 48, "%s", r->names[SEGC_COCO_N_STATS + j] + 8);
            if (v < 0) snprintf(cells[2 * (j + 1) + 1], 48, "nan");
            else snprintf(cells[2 * (j + 1) + 1], 48, "%.3f", v);
        }
        fprintf(out, "per category bbox AP:\n");
        segc_print_table(out, cells, k + 1, 2);
    }
    free(cells);
    (void)class_names;
    fprintf(out, "bbox_mAP_copypaste: %.3f %.3f %.3f %.3f %.3f %.3f\n", st[0], st[1], st[2], st[3], st[4], st[5]);
}

static cJSON *num4(double v) { return cJSON_CreateNumber(v < 0 ? -1.0 : round(v * 10000.0) / 10000.0); }

char *det_result_json(const segc_eval_result *r, const char *const *class_names) {
    cJSON *root = cJSON_CreateObject(), *ap = cJSON_CreateObject();
    char *s = NULL;
    if (!root || !ap) {
        cJSON_Delete(root), cJSON_Delete(ap);
        return NULL;
    }
    for (int i = 0; i < SEGC_COCO_N_STATS; i++) cJSON_AddItemToObject(root, r->names[i], num4(r->values[i]));
    for (int i = SEGC_COCO_N_STATS; i < r->n; i++) cJSON_AddItemToObject(ap, r->names[i] + 8, num4(r->values[i]));
    cJSON_AddItemToObject(root, "bbox_AP", ap);
    cJSON_AddItemToObject(root, "n_images", cJSON_CreateNumber((double)r->n_images));
    cJSON_AddItemToObject(root, "primary", cJSON_CreateString(r->primary));
    (void)class_names;
    s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

bool segc_evaluator_add_results_file(segc_evaluator *e, const char *path, bool skip_bad, int64_t *n_read,
                                     int64_t *n_skipped, char *err, size_t errlen) {
    segc_coco_eval *d = det_of(e);
    if (!d) return snprintf(err, errlen, "%s: results files need a detection evaluator", path), false;
    return segc_coco_results_read(d, path, skip_bad, n_read, n_skipped, err, errlen);
}
