/* core/nn/vec.h: a fixed-width float vector for the elementwise loops of core/nn.
 *
 * Why not plain loops: at -O2, GCC 12 vectorises a loop only when the vector code needs no
 * scalar remainder and no aliasing check (its "very cheap" cost model), so `for (i < n)`
 * over floats stays scalar, and a data-dependent ?: becomes a mispredicted branch per
 * element (ReLU's backward ran at 0.3 floats per cycle that way).  GCC's vector extension
 * makes the width explicit whatever the flags: 16 floats, one AVX-512 register, two AVX
 * ones or four SSE ones, as the target allows.  Loads and stores go through memcpy, so
 * pointers need no alignment and may alias element for element (an in-place op reads a
 * whole vector before it writes it). */
#ifndef MOCO_NN_VEC_H
#define MOCO_NN_VEC_H

#include <stddef.h>
#include <stdint.h>

#define VEC_WIDTH 16

/* Without AVX-512 GCC warns that passing a 64-byte vector by value "changes the ABI"; these
 * helpers are static inline and never cross a compilation unit, so there is no ABI. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float vecf __attribute__((vector_size(VEC_WIDTH * sizeof(float))));
typedef int32_t veci __attribute__((vector_size(VEC_WIDTH * sizeof(int32_t))));

static inline vecf vec_load(const float *p) {
    vecf v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void vec_store(float *p, vecf v) { __builtin_memcpy(p, &v, sizeof v); }

static inline vecf vec_splat(float x) { return (vecf){0} + x; }

/* a where mask is all ones, 0 where it is zero (mask from a comparison) */
static inline vecf vec_select(veci mask, vecf a) { return (vecf)((veci)a & mask); }

static inline float vec_sum(vecf v) {
    float s = 0;
    for (int j = 0; j < VEC_WIDTH; j++) s += v[j];
    return s;
}

/* d[i] += s[i] for i < n */
static inline void vec_add_into(float *d, const float *s, size_t n) {
    size_t i = 0;
    for (; i + VEC_WIDTH <= n; i += VEC_WIDTH) vec_store(d + i, vec_load(d + i) + vec_load(s + i));
    for (; i < n; i++) d[i] += s[i];
}

/* Transposes the 16 x 16 block held in r[0..15] (row i = r[i]) in place: four rounds, round
 * h swapping the off-diagonal h x h blocks of each pair of rows (i, i+h), one two-input
 * shuffle per row (vpermt2ps with AVX-512; pairs of AVX shuffles otherwise). */
static inline __attribute__((always_inline)) void vec_transpose_round(vecf *r, int h, veci lo, veci hi) {
#pragma GCC unroll 16
    for (int i = 0; i < VEC_WIDTH; i++)
        if (!(i & h)) {
            vecf a = r[i], b = r[i + h];
            r[i] = __builtin_shuffle(a, b, lo);
            r[i + h] = __builtin_shuffle(a, b, hi);
        }
}

static inline __attribute__((always_inline)) void vec_transpose16(vecf *r) {
    vec_transpose_round(r, 8, (veci){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                        (veci){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31});
    vec_transpose_round(r, 4, (veci){0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                        (veci){4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31});
    vec_transpose_round(r, 2, (veci){0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                        (veci){2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31});
    vec_transpose_round(r, 1, (veci){0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
                        (veci){1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31});
}

#endif
