/* The timing protocol every op benchmark uses: 2 warm-up runs, then runs until at least
 * 300 ms and 3 runs have passed (at most 1000), reporting the median in ms. */
#ifndef SEGC_BENCH_COMMON_H
#define SEGC_BENCH_COMMON_H
#include <stdlib.h>

typedef double (*bench_run_fn)(void *user);   /* one timed run, in ms */

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median_ms(bench_run_fn once, void *user) {
    static double t[1000];
    for (int i = 0; i < 2; i++) once(user);
    int runs = 0;
    double total = 0;
    while ((total < 300 || runs < 3) && runs < 1000) total += t[runs++] = once(user);
    qsort(t, (size_t)runs, sizeof *t, bench_cmp_double);
    return t[runs / 2];
}
#endif
