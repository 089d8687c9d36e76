/* tests/c/test_rng.c: the PCG32 generators of core/rng.h.
 *
 * Known values from the reference implementation (pcg-c-basic's demo), then statistical
 * checks with tolerances derived from the standard error (5 sigma, or a chi-square bound
 * with tail probability below 1e-4), then state save/restore and stream separation.
 * Every generator is seeded explicitly, so each run draws the same numbers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "error.h"
#include "rng.h"

/* pcg-c-basic's pcg32-demo prints these for pcg32_srandom_r(&rng, 42u, 54u). */
static void test_reference_sequence(void) {
    static const uint32_t expected[6] = {0xa15c02b7u, 0x7b47f409u, 0xba1d3330u,
                                         0x83d2f293u, 0xbfa4784bu, 0xcbed606eu};
    Rng r;
    rng_seed(&r, 42, 54);
    for (int i = 0; i < 6; i++) {
        char name[64];
        uint32_t got = rng_u32(&r);
        snprintf(name, sizeof name, "rng_u32 pcg32 demo value %d", i);
        CHECK(name, got == expected[i], "got 0x%08x, expected 0x%08x", got, expected[i]);
    }
}

static void test_same_seed_same_sequence(void) {
    Rng a, b;
    rng_seed(&a, 1234, 5);
    rng_seed(&b, 1234, 5);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= rng_u32(&a) == rng_u32(&b);
    CHECK("rng_seed same (seed, stream) gives the same 1000 values", same, "sequences differ");
}

/* U[0,1): mean 1/2, standard deviation 1/sqrt(12). */
static void test_uniform(void) {
    const int n = 1000000;
    Rng r;
    rng_seed(&r, 7, 0);
    double sum = 0;
    int in_range = 1, grid = 1;
    for (int i = 0; i < n; i++) {
        float u = rng_uniform(&r);
        if (!(u >= 0.0f && u < 1.0f)) in_range = 0;
        /* "24 random bits": every value is a multiple of 2^-24. */
        float scaled = u * 16777216.0f;
        if (scaled != floorf(scaled)) grid = 0;
        sum += u;
    }
    CHECK("rng_uniform always in [0, 1)", in_range, "a draw fell outside [0, 1)");
    CHECK("rng_uniform values are multiples of 2^-24", grid, "a value had more than 24 bits");
    double tol = 5.0 / sqrt(12.0) / sqrt((double)n);
    CHECK_NEAR("rng_uniform mean of 1e6 draws ~ 0.5 (5 sigma)", sum / n, 0.5, tol);

    double dsum = 0;
    int din_range = 1;
    for (int i = 0; i < n; i++) {
        double u = rng_uniform_double(&r);
        if (!(u >= 0.0 && u < 1.0)) din_range = 0;
        dsum += u;
    }
    CHECK("rng_uniform_double always in [0, 1)", din_range, "a draw fell outside [0, 1)");
    CHECK_NEAR("rng_uniform_double mean of 1e6 draws ~ 0.5 (5 sigma)", dsum / n, 0.5, tol);
}

/* N(0,1): the sample mean has standard error 1/sqrt(n), the sample variance sqrt(2/n). */
static void test_normal(void) {
    const int n = 1000000;
    Rng r;
    rng_seed(&r, 99, 3);
    double sum = 0, sumsq = 0;
    int finite = 1;
    for (int i = 0; i < n; i++) {
        double x = rng_normal(&r);
        if (!isfinite(x)) finite = 0;
        sum += x;
        sumsq += x * x;
    }
    double mean = sum / n;
    double var = sumsq / n - mean * mean;
    CHECK("rng_normal always finite", finite, "a draw was inf or NaN");
    CHECK_NEAR("rng_normal mean ~ 0 (5 sigma)", mean, 0.0, 5.0 / sqrt((double)n));
    CHECK_NEAR("rng_normal variance ~ 1 (5 sigma)", var, 1.0, 5.0 * sqrt(2.0 / n));
}

/* Chi-square statistic of observed counts against equal expected counts. */
static double chi_square_uniform(const long *counts, int k, long total) {
    double expected = (double)total / k, chi2 = 0;
    for (int i = 0; i < k; i++) {
        double d = counts[i] - expected;
        chi2 += d * d / expected;
    }
    return chi2;
}

static void test_below(void) {
    /* bound 7 does not divide 2^32, so a biased multiply-shift would show up here.
     * P(chi2 with 6 dof > 30) ~ 4e-5. */
    const long n = 700000;
    long counts[7] = {0};
    int in_range = 1;
    Rng r;
    rng_seed(&r, 2024, 11);
    for (long i = 0; i < n; i++) {
        uint32_t v = rng_below(&r, 7);
        if (v >= 7) in_range = 0;
        else counts[v]++;
    }
    CHECK("rng_below(7) always < 7", in_range, "a draw was >= 7");
    double chi2 = chi_square_uniform(counts, 7, n);
    CHECK("rng_below(7) chi-square (6 dof) < 30", chi2 < 30.0, "chi2 = %.2f", chi2);

    int one_ok = 1;
    for (int i = 0; i < 100; i++) one_ok &= rng_below(&r, 1) == 0;
    CHECK("rng_below(1) always 0", one_ok, "a draw was not 0");

    /* A bound just above 2^31 rejects almost half of the raw values. */
    const uint32_t big = 0x80000001u;
    int big_ok = 1;
    long upper_half = 0;
    for (int i = 0; i < 100000; i++) {
        uint32_t v = rng_below(&r, big);
        if (v >= big) big_ok = 0;
        if (v >= big / 2) upper_half++;
    }
    CHECK("rng_below(2^31+1) always < bound", big_ok, "a draw was >= bound");
    /* Binomial(1e5, ~1/2): sd ~ 158, 5 sigma ~ 790. */
    CHECK("rng_below(2^31+1) upper half ~ 50% (5 sigma)", labs(upper_half - 50000) < 790,
          "upper half count %ld of 100000", upper_half);
}

static void test_permutation(void) {
    enum { N = 1000 };
    int64_t perm[N];
    int seen[N] = {0};
    Rng r;
    rng_seed(&r, 5, 6);
    rng_permutation(&r, perm, N);
    int ok = 1, moved = 0;
    for (int i = 0; i < N; i++) {
        if (perm[i] < 0 || perm[i] >= N || seen[perm[i]]) ok = 0;
        else seen[perm[i]] = 1;
        if (perm[i] != i) moved++;
    }
    CHECK("rng_permutation(1000) holds every 0..999 exactly once", ok, "not a permutation");
    CHECK("rng_permutation(1000) is not the identity", moved > 900, "only %d moved", moved);

    int64_t one = -7;
    rng_permutation(&r, &one, 1);
    CHECK("rng_permutation(1) is {0}", one == 0, "got %lld", (long long)one);

    /* n = 3: each of the 6 orders with probability 1/6.  P(chi2 with 5 dof > 30) ~ 1.5e-5. */
    const long trials = 60000;
    long counts[6] = {0};
    for (long t = 0; t < trials; t++) {
        int64_t p[3];
        rng_permutation(&r, p, 3);
        int code = (int)(p[0] * 9 + p[1] * 3 + p[2]);
        /* The six permutations of {0,1,2} in base 3. */
        static const int codes[6] = {0 * 9 + 1 * 3 + 2, 0 * 9 + 2 * 3 + 1, 1 * 9 + 0 * 3 + 2,
                                     1 * 9 + 2 * 3 + 0, 2 * 9 + 0 * 3 + 1, 2 * 9 + 1 * 3 + 0};
        int found = -1;
        for (int k = 0; k < 6; k++)
            if (codes[k] == code) found = k;
        if (found >= 0) counts[found]++;
    }
    long total = 0;
    int all_seen = 1;
    for (int k = 0; k < 6; k++) {
        total += counts[k];
        if (counts[k] == 0) all_seen = 0;
    }
    CHECK("rng_permutation(3) always yields a permutation", total == trials,
          "%ld of %ld results were not permutations", trials - total, trials);
    CHECK("rng_permutation(3) yields all 6 orders", all_seen,
          "counts %ld %ld %ld %ld %ld %ld", counts[0], counts[1], counts[2], counts[3], counts[4],
          counts[5]);
    double chi2 = chi_square_uniform(counts, 6, total);
    CHECK("rng_permutation(3) orders equally likely: chi-square (5 dof) < 30", chi2 < 30.0,
          "chi2 = %.2f, counts %ld %ld %ld %ld %ld %ld", chi2, counts[0], counts[1], counts[2],
          counts[3], counts[4], counts[5]);
}

/* Saving after one normal leaves the second of the Box-Muller pair cached: restoring must
 * give it back first, then the same continuation. */
static void test_state_round_trip(void) {
    Rng r;
    rng_seed(&r, 31337, 1);
    (void)rng_normal(&r);

    uint64_t saved[RNG_STATE_WORDS];
    rng_get_state(&r, saved);
    float first[8];
    uint32_t first_u[4];
    for (int i = 0; i < 8; i++) first[i] = rng_normal(&r);
    for (int i = 0; i < 4; i++) first_u[i] = rng_u32(&r);

    Rng restored;
    rng_seed(&restored, 1, 2); /* unrelated state, overwritten below */
    (void)rng_normal(&restored);
    int rc = rng_set_state(&restored, saved);
    CHECK("rng_set_state accepts a state from rng_get_state", rc == 0, "rc %d: %s", rc,
          moco_last_error());
    int same = 1;
    for (int i = 0; i < 8; i++) same &= rng_normal(&restored) == first[i];
    for (int i = 0; i < 4; i++) same &= first_u[i] == rng_u32(&restored);
    CHECK("rng state round trip reproduces normals (cached spare included) and u32s", same,
          "sequence after restore differs");

    /* The same state restored into the original generator as well. */
    rng_set_state(&r, saved);
    float again = rng_normal(&r);
    CHECK("rng state restore: first normal is the cached spare", again == first[0],
          "got %.9g, expected %.9g", again, first[0]);

    /* A state without a pending normal round-trips too. */
    Rng fresh;
    rng_seed(&fresh, 8, 9);
    rng_get_state(&fresh, saved);
    float x = rng_normal(&fresh), y = rng_normal(&fresh);
    rng_set_state(&fresh, saved);
    float x2 = rng_normal(&fresh), y2 = rng_normal(&fresh);
    CHECK("rng state round trip without a cached normal", x == x2 && y == y2,
          "got %g %g, expected %g %g", x2, y2, x, y);
}

/* The increment must be odd.  The word layout is not part of the contract, but an all-zero
 * state has an even increment whatever the layout. */
static void test_state_rejects_even_increment(void) {
    uint64_t zeros[RNG_STATE_WORDS] = {0};
    Rng r;
    rng_seed(&r, 1, 1);
    moco_error("%s", "");
    int rc = rng_set_state(&r, zeros);
    CHECK("rng_set_state rejects an even increment", rc == -1, "rc %d", rc);
    CHECK("rng_set_state even increment sets an error message", moco_last_error()[0] != '\0',
          "message is empty");
}

static int sequences_differ(Rng *a, Rng *b) {
    int differ = 0;
    for (int i = 0; i < 16; i++) differ += rng_u32(a) != rng_u32(b);
    return differ >= 15; /* independent streams agree on a word with probability 2^-32 */
}

static void test_streams(void) {
    Rng a, b;
    rng_seed(&a, 42, 54);
    rng_seed(&b, 42, 55);
    CHECK("rng_seed streams 54 and 55 differ", sequences_differ(&a, &b), "sequences agree");
    rng_seed(&a, 42, 54);
    rng_seed(&b, 43, 54);
    CHECK("rng_seed seeds 42 and 43 differ", sequences_differ(&a, &b), "sequences agree");

    rng_derive(&a, 100, 0, 0);
    rng_derive(&b, 100, 0, 1);
    CHECK("rng_derive ids (0,0) and (0,1) differ", sequences_differ(&a, &b), "sequences agree");
    rng_derive(&a, 100, 1, 0);
    rng_derive(&b, 100, 0, 1);
    CHECK("rng_derive ids (1,0) and (0,1) differ", sequences_differ(&a, &b), "sequences agree");
    rng_derive(&a, 100, 3, 7);
    rng_derive(&b, 101, 3, 7);
    CHECK("rng_derive seeds 100 and 101 differ", sequences_differ(&a, &b), "sequences agree");

    rng_derive(&a, 100, 3, 7);
    rng_derive(&b, 100, 3, 7);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= rng_u32(&a) == rng_u32(&b);
    CHECK("rng_derive same (seed, ids) gives the same 1000 values", same, "sequences differ");

    /* Nearby ids (consecutive sample indices) must not give shifted copies of one sequence:
     * the first output of id2 = i must not appear among the first outputs of id2 = i + 1. */
    rng_derive(&a, 100, 0, 10);
    uint32_t head[64];
    for (int i = 0; i < 64; i++) head[i] = rng_u32(&a);
    rng_derive(&b, 100, 0, 11);
    uint32_t first = rng_u32(&b);
    int shifted = 0;
    for (int i = 0; i < 64; i++) shifted |= head[i] == first;
    CHECK("rng_derive neighbouring ids are not shifted copies", !shifted, "found overlap");
}

int main(void) {
    test_reference_sequence();
    test_same_seed_same_sequence();
    test_uniform();
    test_normal();
    test_below();
    test_permutation();
    test_state_round_trip();
    test_state_rejects_even_increment();
    test_streams();
    CHECK_DONE();
}
