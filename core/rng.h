/* core/rng.h: explicit, seeded random number generators.
 *
 * PCG32 (O'Neill, pcg-random.org: XSH-RR output on a 64-bit LCG), which has 2^63
 * selectable streams: a generator is fixed by (seed, stream).  Normals use the
 * Box-Muller transform and cache the second value; the cache is part of the state,
 * so saving and restoring a state reproduces the exact sequence.  Nothing here uses
 * rand() or the clock. */
#ifndef MOCO_RNG_H
#define MOCO_RNG_H

#include <stdint.h>

typedef struct Rng {
    uint64_t state;
    uint64_t inc;        /* stream selector, always odd */
    uint32_t has_spare;  /* a cached normal from the last Box-Muller pair */
    float spare;
} Rng;

/* Number of uint64 words in a serialized state (see rng_get_state). */
#define RNG_STATE_WORDS 4

/* The reference PCG32 seeding: pcg32_srandom(seed, stream). */
void rng_seed(Rng *r, uint64_t seed, uint64_t stream);

/* A generator for a derived stream, e.g. (seed, epoch, sample index) for the data
 * loader: the ids are mixed with SplitMix64 so nearby ids give unrelated streams. */
void rng_derive(Rng *r, uint64_t seed, uint64_t id1, uint64_t id2);

uint32_t rng_u32(Rng *r);
uint64_t rng_u64(Rng *r);
/* Uniform integer in [0, bound), unbiased (Lemire's method); bound > 0. */
uint32_t rng_below(Rng *r, uint32_t bound);
/* Uniform float in [0, 1) with 24 random bits. */
float rng_uniform(Rng *r);
/* Uniform double in [0, 1) with 53 random bits. */
double rng_uniform_double(Rng *r);
/* Standard normal. */
float rng_normal(Rng *r);
/* perm[0..n) = a uniformly random permutation of 0..n-1 (Fisher-Yates). */
void rng_permutation(Rng *r, int64_t *perm, int64_t n);

/* Serialize / restore the whole state, spare normal included. */
void rng_get_state(const Rng *r, uint64_t out[RNG_STATE_WORDS]);
int rng_set_state(Rng *r, const uint64_t in[RNG_STATE_WORDS]);

#endif
