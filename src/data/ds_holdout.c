/* Holding out part of a split (segc_dataset_opts.holdout): the samples of a
 * file-per-sample dataset, in the split's sorted order, lose (or keep only) a
 * contiguous run of round(holdout x n) samples starting at holdout_fold x that
 * count (wrapping at the end). Contiguous because CamVid / Cityscapes samples
 * are video frames: a random draw would put near-identical neighbours on both
 * sides and make the held-out score read like a training score. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds_internal.h"

segc_dataset *ds_apply_holdout(segc_dataset *ds, const segc_dataset_opts *o, char *err, size_t errlen) {
    const int64_t n = ds->n, m = (int64_t)llround(o->holdout * (double)n);
    if (!ds->img_paths) {
        segc_errorf(err, errlen, "data.holdout: %s has no per-file samples to hold out (medical data: data.num_folds)",
                    ds->name);
        segc_dataset_close(ds);
        return NULL;
    }
    if (!(o->holdout > 0 && o->holdout < 1) || m < 1 || m >= n || o->holdout_fold < 0 ||
        (int64_t)o->holdout_fold * m >= n) {
        segc_errorf(err, errlen, "data.holdout %g / data.holdout_fold %d: need 1 .. %lld held-out samples of the "
                    "split's %lld and a fold below %lld", o->holdout, o->holdout_fold, (long long)n - 1, (long long)n,
                    (long long)(m > 0 ? (n + m - 1) / m : 1));
        segc_dataset_close(ds);
        return NULL;
    }
    const int64_t start = (int64_t)o->holdout_fold * m;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const bool held = (i - start + n) % n < m;
        if (held == o->holdout_take) {
            ds->img_paths[k] = ds->img_paths[i];
            if (ds->lbl_paths) ds->lbl_paths[k] = ds->lbl_paths[i];
            k++;
        } else {
            free(ds->img_paths[i]);
            if (ds->lbl_paths) free(ds->lbl_paths[i]);
        }
    }
    ds->n = k;
    return ds;
}
