/* tests/c/check.h: the tiny harness every C test uses.
 *
 * Each CHECK prints "PASS name" or "FAIL name: why" on its own line; tests/run.sh
 * counts those lines over all test programs and prints the final summary.  A test
 * program that crashes or exits non-zero is counted as a failure by the runner. */
#ifndef MOCO_CHECK_H
#define MOCO_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_failures = 0;

#define CHECK(name, cond, ...)                                   \
    do {                                                         \
        if (cond) {                                              \
            printf("PASS %s\n", name);                           \
        } else {                                                 \
            printf("FAIL %s: ", name);                           \
            printf(__VA_ARGS__);                                 \
            printf("  (%s:%d)\n", __FILE__, __LINE__);           \
            check_failures++;                                    \
        }                                                        \
        fflush(stdout);                                          \
    } while (0)

/* |a - b| <= tol, printing both values on failure. */
#define CHECK_NEAR(name, a, b, tol)                                               \
    do {                                                                          \
        double check_a_ = (a), check_b_ = (b);                                    \
        CHECK(name, fabs(check_a_ - check_b_) <= (tol) || (check_a_ == check_b_), \
              "got %.9g, expected %.9g (tol %g)", check_a_, check_b_, (double)(tol)); \
    } while (0)

/* Largest |a[i] - b[i]| over n floats. */
static inline double check_max_abs_diff(const float *a, const float *b, long n) {
    double m = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) m = d;
    }
    return m;
}

#define CHECK_DONE() return check_failures ? 1 : 0

#endif
