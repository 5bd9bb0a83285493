/* report.html: a self-contained run report (no network): inline SVG curves
 * from metrics.jsonl, the latest per-class metrics, and validation
 * predictions beside the ground truth as inline base64 PNGs. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segc/augment.h"
#include "segc/image_io.h"
#include "segc/strbuf.h"
#include "segc/trainer.h"

static void sb_base64(segc_strbuf *b, const unsigned char *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        out[0] = tab[v >> 18 & 63];
        out[1] = tab[v >> 12 & 63];
        out[2] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[3] = i + 2 < n ? tab[v & 63] : '=';
        segc_sb_put(b, out, 4);
    }
}

/* ---- curves ---- */
typedef struct series { double *x, *y; int n, cap; } series;

static void series_add(series *s, double x, double y) {
    if (!isfinite(x) || !isfinite(y)) return;
    if (s->n == s->cap) {
        int nc = s->cap ? 2 * s->cap : 256;
        double *nx = realloc(s->x, (size_t)nc * sizeof *nx);
        if (!nx) return;
        s->x = nx;
        double *ny = realloc(s->y, (size_t)nc * sizeof *ny);
        if (!ny) return;
        s->y = ny;
        s->cap = nc;
    }
    s->x[s->n] = x, s->y[s->n] = y, s->n++;
}

static void series_free(series *s) { free(s->x); free(s->y); }

static void svg_chart(segc_strbuf *b, const char *title, const series *s, const char *color, bool sci) {
    const double W = 440, H = 230, L = 62, R = 12, T = 26, B = 30;
    segc_sb_printf(b, "<svg class=\"chart\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
              "xmlns=\"http://www.w3.org/2000/svg\">", W, H, W, H);
    segc_sb_printf(b, "<text x=\"%.0f\" y=\"17\" font-size=\"13\" font-weight=\"bold\">", L);
    segc_sb_html(b, title);
    segc_sb_printf(b, "</text>");
    if (s->n == 0) {
        segc_sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" fill=\"#888\">no data yet</text></svg>", L, H / 2);
        return;
    }
    double x0 = s->x[0], x1 = s->x[0], y0 = s->y[0], y1 = s->y[0];
    for (int i = 1; i < s->n; i++) {
        x0 = fmin(x0, s->x[i]), x1 = fmax(x1, s->x[i]);
        y0 = fmin(y0, s->y[i]), y1 = fmax(y1, s->y[i]);
    }
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) { y1 += fabs(y1) > 0 ? 0.05 * fabs(y1) : 1; y0 -= fabs(y0) > 0 ? 0.05 * fabs(y0) : 0; }
    double pw = W - L - R, ph = H - T - B;
    segc_sb_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#bbb\"/>", L, T, pw, ph);
    for (int k = 0; k <= 4; k++) {   /* y grid and labels */
        double yv = y0 + (y1 - y0) * k / 4.0, py = T + ph - ph * k / 4.0;
        segc_sb_printf(b, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", L, L + pw, py, py);
        segc_sb_printf(b, sci ? "<text x=\"%.0f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.2e</text>"
                         : "<text x=\"%.0f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.4g</text>",
                  L - 4, py + 3, yv);
    }
    for (int k = 0; k <= 4; k++) {   /* x labels: iterations */
        double xv = x0 + (x1 - x0) * k / 4.0, px = L + pw * k / 4.0;
        segc_sb_printf(b, "<text x=\"%.1f\" y=\"%.0f\" font-size=\"10\" text-anchor=\"middle\">%.0f</text>", px, H - B + 14, xv);
    }
    segc_sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\" text-anchor=\"middle\" fill=\"#666\">iteration</text>",
              L + pw / 2, H - 3);
    segc_sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" points=\"", color);
    for (int i = 0; i < s->n; i++)
        segc_sb_printf(b, "%.1f,%.1f ", L + pw * (s->x[i] - x0) / (x1 - x0), T + ph - ph * (s->y[i] - y0) / (y1 - y0));
    segc_sb_printf(b, "\"/>");
    if (s->n <= 40)
        for (int i = 0; i < s->n; i++)
            segc_sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>", L + pw * (s->x[i] - x0) / (x1 - x0),
                      T + ph - ph * (s->y[i] - y0) / (y1 - y0), color);
    segc_sb_printf(b, "</svg>");
}

static void read_curves(const char *path, series *loss, series *lr, series *miou, const char *primary) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue;
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, "iter");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "loss"), *r = cJSON_GetObjectItemCaseSensitive(j, "lr");
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "eval");
        if (cJSON_IsNumber(it)) {
            if (cJSON_IsNumber(l)) series_add(loss, it->valuedouble, l->valuedouble);
            if (cJSON_IsNumber(r)) series_add(lr, it->valuedouble, r->valuedouble);
            const cJSON *m = ev ? cJSON_GetObjectItemCaseSensitive(ev, primary) : NULL;
            if (cJSON_IsNumber(m)) series_add(miou, it->valuedouble, m->valuedouble);
        }
        cJSON_Delete(j);
    }
    fclose(f);
}

/* ---- prediction thumbnails ---- */
static bool png_inline(segc_strbuf *b, const segc_image *im, const uint8_t *palette, int n_colors, int max_w) {
    segc_image shown = *im, tmp = {0}, col = {0};
    char e[256];
    bool ok = true;
    if (im->c == 1) {   /* label map: colour it */
        ok = segc_label_colorize(im, palette, n_colors, &col, e, sizeof e);
        shown = col;
    }
    if (ok && shown.w > max_w) {   /* shrink for the page */
        int nw = max_w, nh = (int)((double)shown.h * max_w / shown.w + 0.5);
        if (nh < 1) nh = 1;
        ok = segc_image_alloc(&tmp, nh, nw, 3, SEGC_U8);
        if (ok) {
            segc_arena ar;
            segc_arena_init(&ar, 1 << 16);
            if (im->c == 1)
                segc_resize_nearest_u8(shown.data, shown.h, shown.w, 3, nh, nw, 0, 0, nh, nw, tmp.data, &ar);
            else
                segc_resize_bilinear_u8(shown.data, shown.h, shown.w, 3, nh, nw, 0, 0, nh, nw, tmp.data, &ar);
            segc_arena_free(&ar);
            shown = tmp;
        }
    }
    void *png = NULL;
    size_t len = 0;
    if (ok) ok = segc_png_encode(&shown, NULL, 0, &png, &len, e, sizeof e);
    if (ok) {
        segc_sb_printf(b, "<img src=\"data:image/png;base64,");
        sb_base64(b, png, len);
        segc_sb_printf(b, "\"/>");
    }
    free(png);
    segc_image_free(&tmp);
    segc_image_free(&col);
    return ok;
}

static const char *css =
    "body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{font-size:22px}h2{font-size:17px;margin-top:28px}"
    ".charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fafafa;border:1px solid #ddd}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}"
    "th{background:#f0f0f0}td:first-child{text-align:left}.samples td{vertical-align:top;text-align:center}"
    ".samples img{display:block;image-rendering:auto}.legend span{display:inline-block;margin:2px 10px 2px 0;font-size:12px}"
    ".legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle;border:1px solid #999}"
    "pre{background:#f6f6f6;padding:10px;font-size:12px}.muted{color:#666}";

static void metric_cell(segc_strbuf *b, double v) {
    if (isnan(v)) segc_sb_printf(b, "<td class=\"muted\">nan</td>");
    else segc_sb_printf(b, "<td>%.2f</td>", segc_metric_percent(v));
}

/* The final evaluation sits between these markers, so segc eval can replace it in place. */
#define FINAL_BEGIN "<!--segc:final-eval-->"
#define FINAL_END "<!--/segc:final-eval-->"

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (s = malloc((size_t)n + 1))) s[fread(s, 1, (size_t)n, f)] = 0;
    }
    fclose(f);
    return s;
}

/* "iteration 400, 24 of 101 images of the val split" */
static void eval_scope(char *buf, size_t n, const segc_report *r) {
    size_t k = 0;
    if (r->eval_iter > 0) k += (size_t)snprintf(buf + k, n - k, "after iteration %lld, ", (long long)r->eval_iter);
    if (k >= n) return;
    if (r->split_images > 0)
        k += (size_t)snprintf(buf + k, n - k, "%lld of %lld images", (long long)r->eval_images, (long long)r->split_images);
    else
        k += (size_t)snprintf(buf + k, n - k, "%lld images", (long long)r->eval_images);
    if (k < n && r->split) snprintf(buf + k, n - k, " of the %s split", r->split);
    if (k < n && r->split_images > 0 && r->eval_images < r->split_images)
        snprintf(buf + strlen(buf), n - strlen(buf), " (a subset: train.val_max_samples)");
}

/* heading, what the evaluation covered, the headline metrics and the per-class table */
static void eval_section(segc_strbuf *b, const char *heading, const char *what, const segc_report *r) {
    const segc_metrics *m = r->metrics;
    segc_sb_printf(b, "<h2>%s</h2><p class=\"muted\">", heading);
    segc_sb_html(b, what);
    if (m->num_classes == 0) {   /* detection: the COCO numbers (fractions, as pycocotools prints them) */
        segc_sb_printf(b, "</p><p>");
        for (int i = 0; i < r->n_extra; i++) {
            segc_sb_printf(b, i ? " &middot; " : "");
            segc_sb_html(b, r->extra_names[i]);
            segc_sb_printf(b, i ? " %.3f" : " <b>%.3f</b>", r->extra_values[i]);
        }
        segc_sb_printf(b, "</p>");
        return;
    }
    segc_sb_printf(b, "</p><p>mIoU <b>%.2f</b> &middot; mAcc %.2f &middot; aAcc %.2f", segc_metric_percent(m->mIoU),
              segc_metric_percent(m->mAcc), segc_metric_percent(m->aAcc));
    for (int i = 0; i < r->n_extra; i++) {
        segc_sb_printf(b, " &middot; ");
        segc_sb_html(b, r->extra_names[i]);
        segc_sb_printf(b, " %.2f", segc_metric_percent(r->extra_values[i]));
    }
    segc_sb_printf(b, "</p>");
    segc_sb_printf(b, "<table><tr><th>Class</th><th>IoU</th><th>Acc</th></tr>");
    for (int k = 0; k < m->num_classes; k++) {
        segc_sb_printf(b, "<tr><td>");
        if (r->palette && k < r->n_classes)
            segc_sb_printf(b, "<i style=\"display:inline-block;width:10px;height:10px;margin-right:6px;"
                      "background:rgb(%d,%d,%d)\"></i>", r->palette[3 * k], r->palette[3 * k + 1], r->palette[3 * k + 2]);
        if (r->class_names && k < r->n_classes && r->class_names[k]) segc_sb_html(b, r->class_names[k]);
        else segc_sb_printf(b, "%d", k);
        segc_sb_printf(b, "</td>");
        metric_cell(b, m->iou[k]);
        metric_cell(b, m->acc[k]);
        segc_sb_printf(b, "</tr>");
    }
    segc_sb_printf(b, "</table>");
}

void segc_report_set_extras(segc_report *rep, const segc_eval_result *r) {
    rep->n_extra = 0;
    for (int i = 0; i < r->n && rep->n_extra < 8; i++)
        if (!strcmp(r->names[i], "mDice") || !strncmp(r->names[i], "Dice_", 5) ||
            (!strcmp(r->names[i], r->primary) && strcmp(r->primary, "mIoU") != 0) ||
            (!strncmp(r->names[i], "bbox_", 5) && !strchr(r->names[i], '.') && rep->n_extra < 6)) {   /* detection */
            bool dup = false;
            for (int j = 0; j < rep->n_extra && !dup; j++) dup = !strcmp(rep->extra_names[j], r->names[i]);
            if (dup) continue;
            rep->extra_names[rep->n_extra] = r->names[i];
            rep->extra_values[rep->n_extra++] = r->values[i];
        }
}

bool segc_report_add_final(const char *run_dir, const segc_report *r, const char *checkpoint, char *err, size_t errlen) {
    if (!r->metrics) return snprintf(err, errlen, "report: no metrics for the final evaluation"), false;
    segc_strbuf b = {0};
    char what[1024], scope[256] = "";
    eval_scope(scope, sizeof scope, r);
    snprintf(what, sizeof what, "segc eval of %s: %s", checkpoint ? checkpoint : "the final weights", scope);
    eval_section(&b, "Final evaluation", what, r);
    if (b.oom) {
        free(b.p);
        return snprintf(err, errlen, "report: out of memory"), false;
    }
    char fpath[4096], rpath[4096];
    snprintf(fpath, sizeof fpath, "%s/final_eval.html", run_dir);
    snprintf(rpath, sizeof rpath, "%s/report.html", run_dir);
    const void *parts[3] = {b.p};
    size_t sizes[3] = {b.len};
    bool ok = segc_write_file_atomic(fpath, parts, sizes, 1, err, errlen);
    /* splice into the existing report between the markers (no report yet: the
     * next one the trainer writes picks final_eval.html up) */
    char *rep = ok ? read_all(rpath) : NULL;
    char *s0 = rep ? strstr(rep, FINAL_BEGIN) : NULL, *s1 = s0 ? strstr(s0, FINAL_END) : NULL;
    if (s1) {
        s0 += strlen(FINAL_BEGIN);
        parts[0] = rep, sizes[0] = (size_t)(s0 - rep);
        parts[1] = b.p, sizes[1] = b.len;
        parts[2] = s1, sizes[2] = strlen(s1);
        ok = segc_write_file_atomic(rpath, parts, sizes, 3, err, errlen);
    }
    free(rep);
    free(b.p);
    return ok;
}

bool segc_report_write(const char *run_dir, const segc_report *r, char *err, size_t errlen) {
    char path[4096], mpath[4096];
    snprintf(path, sizeof path, "%s/report.html", run_dir);
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", run_dir);
    series loss = {0}, lr = {0}, miou = {0};
    const char *primary = r->primary && *r->primary ? r->primary : "mIoU";
    read_curves(mpath, &loss, &lr, &miou, primary);
    segc_strbuf b = {0};
    segc_sb_printf(&b, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>segc: ");
    segc_sb_html(&b, r->title);
    segc_sb_printf(&b, "</title><style>%s</style></head><body><h1>segc run: ", css);
    segc_sb_html(&b, r->title);
    segc_sb_printf(&b, "</h1><p class=\"muted\">");
    segc_sb_html(&b, r->status);
    segc_sb_printf(&b, "</p><h2>Curves</h2><div class=\"charts\">");
    svg_chart(&b, "training loss", &loss, "#c0392b", false);
    svg_chart(&b, "learning rate", &lr, "#2471a3", true);
    char ctitle[96];
    snprintf(ctitle, sizeof ctitle, strncmp(primary, "bbox_", 5) ? "validation %s (%%)" : "validation %s", primary);
    svg_chart(&b, ctitle, &miou, "#1e8449", false);
    segc_sb_printf(&b, "</div>");
    /* the final evaluation (segc eval), when one was made for this run */
    segc_sb_printf(&b, "%s", FINAL_BEGIN);
    char fpath[4096];
    snprintf(fpath, sizeof fpath, "%s/final_eval.html", run_dir);
    char *fin = read_all(fpath);
    if (fin) segc_sb_printf(&b, "%s", fin);
    free(fin);
    segc_sb_printf(&b, "%s", FINAL_END);
    if (r->metrics) {
        char what[256] = "";
        eval_scope(what, sizeof what, r);
        eval_section(&b, "Latest evaluation during training", what, r);
    }
    if (r->n_samples > 0) {
        segc_sb_printf(&b, "<h2>Validation predictions</h2><div class=\"legend\">");
        for (int k = 0; k < r->n_classes && r->palette; k++) {
            segc_sb_printf(&b, "<span><i style=\"background:rgb(%d,%d,%d)\"></i>", r->palette[3 * k], r->palette[3 * k + 1],
                      r->palette[3 * k + 2]);
            if (r->class_names && r->class_names[k]) segc_sb_html(&b, r->class_names[k]);
            else segc_sb_printf(&b, "%d", k);
            segc_sb_printf(&b, "</span>");
        }
        segc_sb_printf(&b, "</div><table class=\"samples\"><tr><th>image</th><th>ground truth</th><th>prediction</th></tr>");
        for (int i = 0; i < r->n_samples; i++) {
            const segc_eval_sample *s = &r->samples[i];
            segc_sb_printf(&b, "<tr><td>");
            png_inline(&b, &s->img, NULL, 0, 320);
            segc_sb_html(&b, s->name);
            segc_sb_printf(&b, "</td><td>");
            png_inline(&b, &s->gt, r->palette, r->n_classes, 320);
            segc_sb_printf(&b, "</td><td>");
            png_inline(&b, &s->pred, r->palette, r->n_classes, 320);
            segc_sb_printf(&b, "</td></tr>");
        }
        segc_sb_printf(&b, "</table>");
    }
    if (r->config_yaml) {
        segc_sb_printf(&b, "<h2>Configuration</h2><details><summary>resolved config.yaml</summary><pre>");
        segc_sb_html(&b, r->config_yaml);
        segc_sb_printf(&b, "</pre></details>");
    }
    segc_sb_printf(&b, "<p class=\"muted\">written by segc</p></body></html>\n");
    series_free(&loss);
    series_free(&lr);
    series_free(&miou);
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "report: out of memory");
        return false;
    }
    const void *parts[1] = {b.p};
    size_t sizes[1] = {b.len};
    bool ok = segc_write_file_atomic(path, parts, sizes, 1, err, errlen);
    free(b.p);
    return ok;
}
