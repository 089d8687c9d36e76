/* core/rng.c: PCG32 generators (see rng.h). */
#include "rng.h"

#include <math.h>
#include <string.h>

#include "error.h"

#define PCG_MULT 6364136223846793005ULL

uint32_t rng_u32(Rng *r) {
    uint64_t old = r->state;
    r->state = old * PCG_MULT + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

void rng_seed(Rng *r, uint64_t seed, uint64_t stream) {
    r->state = 0;
    r->inc = (stream << 1u) | 1u;
    r->has_spare = 0;
    r->spare = 0;
    rng_u32(r);
    r->state += seed;
    rng_u32(r);
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void rng_derive(Rng *r, uint64_t seed, uint64_t id1, uint64_t id2) {
    uint64_t a = splitmix64(seed ^ splitmix64(id1 ^ splitmix64(id2)));
    uint64_t b = splitmix64(a ^ 0x632be59bd9b4e019ULL);
    rng_seed(r, a, b);
}

uint64_t rng_u64(Rng *r) {
    uint64_t hi = rng_u32(r);
    return (hi << 32) | rng_u32(r);
}

uint32_t rng_below(Rng *r, uint32_t bound) {
    uint64_t m = (uint64_t)rng_u32(r) * bound;
    uint32_t low = (uint32_t)m;
    if (low < bound) {
        uint32_t threshold = (uint32_t)(-bound) % bound;
        while (low < threshold) {
            m = (uint64_t)rng_u32(r) * bound;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

float rng_uniform(Rng *r) { return (float)(rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

double rng_uniform_double(Rng *r) {
    return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

float rng_normal(Rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    /* Box-Muller in double; u1 in (0, 1] so the log is finite. */
    double u1 = 1.0 - rng_uniform_double(r);
    double u2 = rng_uniform_double(r);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 2.0 * M_PI * u2;
    r->spare = (float)(radius * sin(angle));
    r->has_spare = 1;
    return (float)(radius * cos(angle));
}

void rng_permutation(Rng *r, int64_t *perm, int64_t n) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = i + 1 <= (int64_t)UINT32_MAX ? (int64_t)rng_below(r, (uint32_t)(i + 1))
                                                 : (int64_t)(rng_u64(r) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void rng_get_state(const Rng *r, uint64_t out[RNG_STATE_WORDS]) {
    uint32_t spare_bits;
    memcpy(&spare_bits, &r->spare, sizeof spare_bits);
    out[0] = r->state;
    out[1] = r->inc;
    out[2] = r->has_spare;
    out[3] = spare_bits;
}

int rng_set_state(Rng *r, const uint64_t in[RNG_STATE_WORDS]) {
    if ((in[1] & 1u) == 0 || in[2] > 1 || in[3] > UINT32_MAX)
        return moco_error("rng state is invalid (increment must be odd, spare flag 0 or 1)");
    uint32_t spare_bits = (uint32_t)in[3];
    r->state = in[0];
    r->inc = in[1];
    r->has_spare = (uint32_t)in[2];
    memcpy(&r->spare, &spare_bits, sizeof spare_bits);
    return 0;
}
