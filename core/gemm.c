/* core/gemm.c: moco_sgemm, libmoco's own packed matrix product (see gemm.h), with OpenBLAS
 * as the fallback.
 *
 * Why our own: OpenBLAS's speed depends on the core type it detects or is told
 * (OPENBLAS_CORETYPE).  On the CPUs this project runs on, 0.3.21 detected one of them as
 * "Prescott" (SSE3: 42 GFLOP/s on 2 cores where the FMA peak is 350), and the environment
 * there may force "Haswell" (AVX2, half the peak) because some AVX-512 kernels of older
 * builds miscompute on newer CPUs.  A product that we compile for the machine and check on
 * it at start-up takes that choice away from the environment.
 *
 * Method (the BLIS/GotoBLAS structure).  C (M,N) = alpha op(A) (M,K) op(B) (K,N) + beta C:
 *     for each block of NC columns of C
 *       for each block of KC of the inner dimension
 *         pack op(B)'s (KC, NC) block into panels of NR columns: Bp[panel][k][NR]
 *         for each block of MC rows
 *           pack op(A)'s (MC, KC) block into panels of MR rows: Ap[panel][k][MR]
 *           for every NR panel, for every MR panel: the micro-kernel
 * The micro-kernel keeps an MR x NR tile of C in vector registers and, for each k, loads
 * NR/16 vectors of B and broadcasts MR values of A: with AVX-512, 12 x 32 (24 accumulators
 * of the 32 registers); with AVX2, 6 x 16.  The Bp panel (KC x NR, 32 KiB) stays in L1
 * while the kernel sweeps the Ap block (MC x KC, in L2).  Packing zero-fills the panels
 * past M and N, so the kernel always computes whole tiles; edge tiles are computed into a
 * small buffer and copied.  The first KC block applies beta (C is not read when beta is 0,
 * as BLAS promises); later blocks add.
 *
 * Threads: a product called from outside the pool's tasks, large enough to pay for it,
 * splits its columns (or, when it has few, its rows) across the pool (core/threads.h);
 * inside a task it runs on the calling thread.  Each thread packs into its own buffers
 * (allocated on first use, freed when the thread ends).  The result does not depend on the
 * split: every element is summed over k in the same order.
 *
 * Start-up check: the first call compares the kernel on a set of shapes (edges, every
 * transpose, alpha and beta) against a double-precision reference; if any element is off
 * by more than 1e-5 of the sum of |a||b| it ran over, every later product goes to OpenBLAS,
 * and moco_gemm_backend() says why.  MOCO_GEMM=openblas forces the fallback. */
#include "gemm.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/vec.h"
#include "threads.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define GEMM_MR 12
#define GEMM_NR 32
#define GEMM_KERNEL_NAME "moco avx512 12x32"
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GEMM_MR 6
#define GEMM_NR 16
#define GEMM_KERNEL_NAME "moco avx2 6x16"
#endif

/* One product's arguments (every build: the OpenBLAS fallback takes them too). */
typedef struct Gemm {
    int trans_a, trans_b;
    long M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
} Gemm;

enum { BACKEND_UNKNOWN, BACKEND_OWN, BACKEND_OPENBLAS };
static void openblas_gemm(const Gemm *g);
static int current_backend(void);

#ifdef GEMM_MR
#define GEMM_KC 256
#define GEMM_MC 144  /* a multiple of GEMM_MR */
#define GEMM_NC 3072 /* a multiple of GEMM_NR */

/* ------------------------------------------------------------------ micro-kernels */

#if defined(__AVX512F__)
/* The register tile: C (12, 32) += or = sum over k of A's 12 values of column k (x) B's
 * row k (32 floats, two vectors).  KERNEL(name, A_SETUP, A_AT, A_NEXT) defines one
 * variant; they differ only in where A's values lie:
 *   packed    a[k * MR + r]      (the panels pack_a makes)
 *   kmajor    a[k * aks + r]     (A^T stored row-major: the Winograd weight gradient)
 *   rowmajor  a[r * ars + k]     (A stored row-major, unpacked: the Winograd products)
 * and B is always a packed panel b[k * NR + j].  C is stored as alpha * sum + beta * C
 * (C unread when beta is 0). */
#define VEC __m512
#define VZERO() _mm512_setzero_ps()
#define VSET1(x) _mm512_set1_ps(x)
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VW 16
#define ALL_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#else
#define VEC __m256
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VW 8
#define ALL_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#endif

#define ROW_DECL(r) VEC c##r##0 = VZERO(), c##r##1 = VZERO();
#define ROW_FMA(r)                        \
    {                                     \
        VEC av = VSET1(A_AT(r));          \
        c##r##0 = VFMA(av, b0, c##r##0);  \
        c##r##1 = VFMA(av, b1, c##r##1);  \
    }
#define ROW_STORE(r)                                                  \
    {                                                                 \
        float *cr = c + (long)(r) * ldc;                              \
        VEC v0 = VMUL(c##r##0, va), v1 = VMUL(c##r##1, va);           \
        if (beta != 0.0f) {                                           \
            v0 = VFMA(VLOAD(cr), vb, v0);                             \
            v1 = VFMA(VLOAD(cr + VW), vb, v1);                        \
        }                                                             \
        VSTORE(cr, v0);                                               \
        VSTORE(cr + VW, v1);                                          \
    }
#define KERNEL_BODY(A_SETUP, A_NEXT)                                  \
    ALL_ROWS(ROW_DECL)                                                \
    A_SETUP                                                           \
    for (long k = 0; k < kc; k++) {                                   \
        _mm_prefetch((const char *)(b + 8 * GEMM_NR), _MM_HINT_T0);   \
        VEC b0 = VLOAD(b), b1 = VLOAD(b + VW);                        \
        ALL_ROWS(ROW_FMA)                                             \
        A_NEXT                                                        \
        b += GEMM_NR;                                                 \
    }                                                                 \
    VEC va = VSET1(alpha), vb = VSET1(beta);                          \
    ALL_ROWS(ROW_STORE)

/* packed A: the panels of pack_a */
static __attribute__((noinline)) void micro_kernel(long kc, const float *restrict a, const float *restrict b, float *c, long ldc,
                         float alpha, float beta) {
#define A_AT(r) a[r]
    KERNEL_BODY(, a += GEMM_MR;)
#undef A_AT
}

/* A^T row-major: row r of A at a[r], column k at a[k * aks] */
static __attribute__((noinline)) void micro_kernel_kmajor(long kc, const float *restrict a, long aks, const float *restrict b, float *c,
                                long ldc, float alpha, float beta) {
#define A_AT(r) a[r]
    KERNEL_BODY(, a += aks;)
#undef A_AT
}

/* A row-major and unpacked: row r at a + r * ars.  Four row pointers (rows 0, 3, 6, 9 of
 * 12; 0 and 3 of 6) and the stride give every row in one addressing mode. */
static __attribute__((noinline)) void micro_kernel_rowmajor(long kc, const float *restrict a, long ars, const float *restrict b, float *c,
                                  long ldc, float alpha, float beta) {
    const float *a0 = a, *a3 = a + 3 * ars;
#if GEMM_MR == 12
    const float *a6 = a + 6 * ars, *a9 = a + 9 * ars;
#define A_NEXT_ROWS a0++, a3++, a6++, a9++;
#else
#define A_NEXT_ROWS a0++, a3++;
#endif
#define A_AT(r) ((r) < 3 ? a0[((r) % 3) * ars] : (r) < 6 ? a3[((r) % 3) * ars] : (r) < 9 ? A6(r) : A9(r))
#if GEMM_MR == 12
#define A6(r) a6[((r) % 3) * ars]
#define A9(r) a9[((r) % 3) * ars]
#else
#define A6(r) 0.0f
#define A9(r) 0.0f
#endif
    KERNEL_BODY(, A_NEXT_ROWS)
#undef A_AT
#undef A6
#undef A9
#undef A_NEXT_ROWS
}

#if defined(__AVX512F__)
/* The narrow tile, MR x 16 (one vector per row, MR accumulators), for products with 16
 * columns (16-channel layers: the wide tile would compute twice the work); B panels are
 * then [k][16]. */
#define GEMM_NR_NARROW 16
#define ROW_DECL1(r) VEC c##r##0 = VZERO();
#define ROW_FMA1(r) c##r##0 = VFMA(VSET1(A_AT(r)), b0, c##r##0);
#define ROW_STORE1(r)                                                 \
    {                                                                 \
        float *cr = c + (long)(r) * ldc;                              \
        VEC v0 = VMUL(c##r##0, va);                                   \
        if (beta != 0.0f) v0 = VFMA(VLOAD(cr), vb, v0);               \
        VSTORE(cr, v0);                                               \
    }
#define KERNEL_BODY1(A_SETUP, A_NEXT)                                 \
    ALL_ROWS(ROW_DECL1)                                               \
    A_SETUP                                                           \
    for (long k = 0; k < kc; k++) {                                   \
        VEC b0 = VLOAD(b);                                            \
        ALL_ROWS(ROW_FMA1)                                            \
        A_NEXT                                                        \
        b += GEMM_NR_NARROW;                                          \
    }                                                                 \
    VEC va = VSET1(alpha), vb = VSET1(beta);                          \
    ALL_ROWS(ROW_STORE1)

static __attribute__((noinline)) void micro_kernel_kmajor_narrow(long kc, const float *restrict a, long aks,
                                                                 const float *restrict b, float *c, long ldc,
                                                                 float alpha, float beta) {
#define A_AT(r) a[r]
    KERNEL_BODY1(, a += aks;)
#undef A_AT
}

static __attribute__((noinline)) void micro_kernel_rowmajor_narrow(long kc, const float *restrict a, long ars,
                                                                   const float *restrict b, float *c, long ldc,
                                                                   float alpha, float beta) {
    const float *a0 = a, *a3 = a + 3 * ars, *a6 = a + 6 * ars, *a9 = a + 9 * ars;
#define A_AT(r) ((r) < 3 ? a0[((r) % 3) * ars] : (r) < 6 ? a3[((r) % 3) * ars] : (r) < 9 ? a6[((r) % 3) * ars] : a9[((r) % 3) * ars])
    KERNEL_BODY1(, a0++; a3++; a6++; a9++;)
#undef A_AT
}
#else
#define GEMM_NR_NARROW GEMM_NR
#endif

/* An edge tile: only m x n of the MR x NR tile exist in C.  ars > 0: A row-major in place
 * (micro_kernel_rowmajor's rows, all MR of them readable), else packed. */
static void micro_kernel_edge(long kc, const float *a, long ars, const float *b, float *c, long ldc, float alpha,
                              float beta, int m, int n) {
    float tile[GEMM_MR * GEMM_NR];
    if (ars > 0)
        micro_kernel_rowmajor(kc, a, ars, b, tile, GEMM_NR, alpha, 0.0f);
    else
        micro_kernel(kc, a, b, tile, GEMM_NR, alpha, 0.0f);
    for (int i = 0; i < m; i++) {
        float *cr = c + (long)i * ldc;
        const float *t = tile + i * GEMM_NR;
        if (beta == 0.0f)
            for (int j = 0; j < n; j++) cr[j] = t[j];
        else
            for (int j = 0; j < n; j++) cr[j] = beta * cr[j] + t[j];
    }
}

/* ------------------------------------------------------------------ packing */

/* Ap[panel][k][MR] <- op(A) rows [i0, i0+mc), columns [k0, k0+kc); zero past row m_end.
 * Row-major A: MR rows at a time, 16 columns of them transposed in registers (rows MR..15 of
 * the 16x16 block zero); each k's MR values are stored as 16 floats, the next k's store
 * overwriting the 16 - MR extra ones (the buffer has a vector of slack after each panel). */
static void pack_a(float *restrict ap, int trans, const float *A, long lda, long i0, long mc, long k0, long kc) {
    for (long p = 0; p < mc; p += GEMM_MR) {
        long rows = mc - p < GEMM_MR ? mc - p : GEMM_MR;
        float *dst = ap + p * kc;
        if (!trans) {
            const float *src[GEMM_MR];
            for (long r = 0; r < rows; r++) src[r] = A + (i0 + p + r) * lda + k0;
            long k = 0;
            if (rows == GEMM_MR && GEMM_MR <= VEC_WIDTH) {
                for (; k + VEC_WIDTH <= kc; k += VEC_WIDTH) {
                    vecf v[VEC_WIDTH];
                    for (int r = 0; r < VEC_WIDTH; r++) v[r] = r < GEMM_MR ? vec_load(src[r] + k) : (vecf){0};
                    vec_transpose16(v);
#if defined(__AVX512F__)
                    /* exactly MR floats per k: wider stores would straddle cache lines */
                    for (int j = 0; j < VEC_WIDTH; j++)
                        _mm512_mask_storeu_ps(dst + (k + j) * GEMM_MR, (__mmask16)((1u << GEMM_MR) - 1), (__m512)v[j]);
#else
                    for (int j = 0; j < VEC_WIDTH; j++) vec_store(dst + (k + j) * GEMM_MR, v[j]);
#endif
                }
            }
            for (; k < kc; k++) {
                long r = 0;
                for (; r < rows; r++) dst[k * GEMM_MR + r] = src[r][k];
                for (; r < GEMM_MR; r++) dst[k * GEMM_MR + r] = 0.0f;
            }
        } else {
            /* op(A)(i, k) = A[k][i]: each k is a contiguous run of rows, copied as one masked
             * vector (the loop below became a memcpy call per k, for 48 bytes; the input
             * gradient of a pointwise conv packs W^T per image or chunk, and in a 1024 -> 256
             * 14x14 layer's profile those calls and the packing fell from 9.1% to 8.0%) */
#if defined(__AVX512F__)
            if (rows == GEMM_MR) {
                const __mmask16 m = (__mmask16)((1u << GEMM_MR) - 1);
                for (long k = 0; k < kc; k++)
                    _mm512_mask_storeu_ps(dst + k * GEMM_MR, m, _mm512_maskz_loadu_ps(m, A + (k0 + k) * lda + i0 + p));
                continue;
            }
#elif defined(__AVX2__)
            if (rows == GEMM_MR) {
                const __m256i m = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
                for (long k = 0; k < kc; k++)
                    _mm256_maskstore_ps(dst + k * GEMM_MR, m, _mm256_maskload_ps(A + (k0 + k) * lda + i0 + p, m));
                continue;
            }
#endif
            for (long k = 0; k < kc; k++) {
                const float *src = A + (k0 + k) * lda + i0 + p;
                long r = 0;
                for (; r < rows; r++) dst[k * GEMM_MR + r] = src[r];
                for (; r < GEMM_MR; r++) dst[k * GEMM_MR + r] = 0.0f;
            }
        }
    }
}

/* Bp[panel][k][NR] <- op(B) rows [k0, k0+kc), columns [j0, j0+nc); zero past column nc.
 * Transposed B: 16 of its rows (panel columns) by 16 k at a time, transposed in registers. */
static void pack_b(float *restrict bp, int trans, const float *B, long ldb, long k0, long kc, long j0, long nc) {
    for (long q = 0; q < nc; q += GEMM_NR) {
        long cols = nc - q < GEMM_NR ? nc - q : GEMM_NR;
        float *dst = bp + q * kc;
        if (!trans) {
            for (long k = 0; k < kc; k++) {
                const float *src = B + (k0 + k) * ldb + j0 + q;
                float *d = dst + k * GEMM_NR;
                if (cols == GEMM_NR) {
                    memcpy(d, src, GEMM_NR * sizeof *d);
                } else {
                    long j = 0;
                    for (; j < cols; j++) d[j] = src[j];
                    for (; j < GEMM_NR; j++) d[j] = 0.0f;
                }
            }
        } else {
            /* op(B)(k, j) = B[j][k]: column j of the panel is a contiguous run of B's row */
            for (long jb = 0; jb < GEMM_NR; jb += VEC_WIDTH) {
                long k = 0;
                if (jb + VEC_WIDTH <= cols) {
                    const float *src = B + (j0 + q + jb) * ldb + k0;
                    for (; k + VEC_WIDTH <= kc; k += VEC_WIDTH) {
                        vecf v[VEC_WIDTH];
                        for (int j = 0; j < VEC_WIDTH; j++) v[j] = vec_load(src + j * ldb + k);
                        vec_transpose16(v);
                        for (int i = 0; i < VEC_WIDTH; i++) vec_store(dst + (k + i) * GEMM_NR + jb, v[i]);
                    }
                }
                for (long kk = k; kk < kc; kk++)
                    for (long j = jb; j < jb + VEC_WIDTH && j < GEMM_NR; j++)
                        dst[kk * GEMM_NR + j] = j < cols ? B[(j0 + q + j) * ldb + k0 + kk] : 0.0f;
            }
        }
    }
}

/* ------------------------------------------------------------------ per-thread buffers */

static pthread_key_t buffer_key;
static pthread_once_t buffer_once = PTHREAD_ONCE_INIT;

static void free_buffer(void *p) { free(p); }
static void make_key(void) { pthread_key_create(&buffer_key, free_buffer); }

/* This thread's packing buffers: Ap (MC x KC) then Bp (KC x NC), 64-byte aligned. */
static float *thread_buffer(void) {
    pthread_once(&buffer_once, make_key);
    float *b = pthread_getspecific(buffer_key);
    if (!b) {
        /* + a vector of slack: pack_a's last stores run past the block */
        size_t floats = (size_t)GEMM_MC * GEMM_KC + VEC_WIDTH + (size_t)GEMM_KC * GEMM_NC;
        b = aligned_alloc(64, floats * sizeof *b);
        if (b) pthread_setspecific(buffer_key, b);
    }
    return b;
}

/* ------------------------------------------------------------------ the product */

/* C rows [m0, m1), columns [n0, n1) on this thread.  Returns -1 when the buffers cannot be
 * allocated (the caller then falls back to OpenBLAS). */
static int gemm_block(const Gemm *g, long m0, long m1, long n0, long n1) {
    float *buf = thread_buffer();
    if (!buf) return -1;
    float *ap = buf, *bp = buf + (size_t)GEMM_MC * GEMM_KC + VEC_WIDTH;
    /* Row-major A is read in place (its packing cost as much as the product when N is small,
     * e.g. a 1x1 conv's weight gradient) unless its row stride is a multiple of 256 floats:
     * then the MR rows the kernel reads at once share a few L1 sets and evict each other. */
    const int direct_a = !g->trans_a && g->lda % 256 != 0;
    if (g->K == 0) { /* C = beta C */
        for (long i = m0; i < m1; i++)
            for (long j = n0; j < n1; j++) g->C[i * g->ldc + j] = g->beta == 0.0f ? 0.0f : g->beta * g->C[i * g->ldc + j];
        return 0;
    }
    for (long jc = n0; jc < n1; jc += GEMM_NC) {
        long nc = n1 - jc < GEMM_NC ? n1 - jc : GEMM_NC;
        for (long pc = 0; pc < g->K; pc += GEMM_KC) {
            long kc = g->K - pc < GEMM_KC ? g->K - pc : GEMM_KC;
            float beta = pc == 0 ? g->beta : 1.0f;
            pack_b(bp, g->trans_b, g->B, g->ldb, pc, kc, jc, nc);
            for (long ic = m0; ic < m1; ic += GEMM_MC) {
                long mc = m1 - ic < GEMM_MC ? m1 - ic : GEMM_MC;
                /* whole MR-row panels of a row-major A are read in place; the rest is packed */
                long in_place = direct_a ? mc / GEMM_MR * GEMM_MR : 0;
                if (mc > in_place) pack_a(ap + in_place * kc, g->trans_a, g->A, g->lda, ic + in_place, mc - in_place, pc, kc);
                for (long jr = 0; jr < nc; jr += GEMM_NR) {
                    int n = nc - jr < GEMM_NR ? (int)(nc - jr) : GEMM_NR;
                    for (long ir = 0; ir < mc; ir += GEMM_MR) {
                        int m = mc - ir < GEMM_MR ? (int)(mc - ir) : GEMM_MR;
                        float *c = g->C + (ic + ir) * g->ldc + jc + jr;
                        if (ir < in_place) {
                            const float *a = g->A + (ic + ir) * g->lda + pc;
                            if (n == GEMM_NR)
                                micro_kernel_rowmajor(kc, a, g->lda, bp + jr * kc, c, g->ldc, g->alpha, beta);
                            else
                                micro_kernel_edge(kc, a, g->lda, bp + jr * kc, c, g->ldc, g->alpha, beta, m, n);
                        } else if (m == GEMM_MR && n == GEMM_NR) {
                            micro_kernel(kc, ap + ir * kc, bp + jr * kc, c, g->ldc, g->alpha, beta);
                        } else {
                            micro_kernel_edge(kc, ap + ir * kc, 0, bp + jr * kc, c, g->ldc, g->alpha, beta, m, n);
                        }
                    }
                }
            }
        }
    }
    return 0;
}

typedef struct GemmSplit {
    const Gemm *g;
    int parts, by_columns;
} GemmSplit;


static void gemm_part(void *ctx, int task, int thread) {
    (void)thread;
    GemmSplit *s = ctx;
    const Gemm *g = s->g;
    long unit = s->by_columns ? GEMM_NR : GEMM_MR, n = s->by_columns ? g->N : g->M;
    long units = (n + unit - 1) / unit, lo, hi;
    threadpool_split(units, s->parts, task, &lo, &hi);
    lo *= unit, hi *= unit;
    if (hi > n) hi = n;
    if (lo >= hi) return;
    if ((s->by_columns ? gemm_block(g, 0, g->M, lo, hi) : gemm_block(g, lo, hi, 0, g->N)) == 0) return;
    /* no packing buffer on this thread (out of memory): this slice goes to OpenBLAS */
    Gemm part = *g;
    if (s->by_columns) {
        part.N = hi - lo, part.C += lo;
        part.B += g->trans_b ? lo * g->ldb : lo;
    } else {
        part.M = hi - lo, part.C += lo * g->ldc;
        part.A += g->trans_a ? lo : lo * g->lda;
    }
    openblas_gemm(&part);
}

/* Products below this many multiply-adds stay on one thread. */
#define GEMM_PARALLEL_MACS (1L << 21)

static int own_gemm(const Gemm *g) {
    double macs = (double)g->M * g->N * g->K;
    int threads = threadpool_inside_task() ? 1 : threadpool_size();
    if (threads > 1 && macs >= GEMM_PARALLEL_MACS) {
        GemmSplit s = {.g = g};
        s.by_columns = g->N >= (long)GEMM_NR * 2 * threads || g->N >= g->M;
        long units = s.by_columns ? (g->N + GEMM_NR - 1) / GEMM_NR : (g->M + GEMM_MR - 1) / GEMM_MR;
        s.parts = units < threads ? (int)units : threads;
        if (s.parts > 1) {
            threadpool_run(s.parts, s.parts, gemm_part, &s);
            return 0;
        }
    }
    return gemm_block(g, 0, g->M, 0, g->N);
}
/* ------------------------------------------------------------------ caller-laid-out products */

size_t moco_gemm_packed_b_floats(int K, int N, int nr) {
    long npad = ((long)N + nr - 1) / nr * nr;
    return (size_t)K * (size_t)npad;
}

size_t moco_gemm_packed_b_index(int K, int N, int nr, int k, int j) {
    long npad = ((long)N + nr - 1) / nr * nr;
    long pc = k / GEMM_KC, kk = k % GEMM_KC, kcur = K - pc * GEMM_KC < GEMM_KC ? K - pc * GEMM_KC : GEMM_KC;
    return (size_t)(pc * GEMM_KC * npad + (j / nr) * kcur * nr + kk * nr + j % nr);
}

void moco_gemm_packed(int a_layout, int M, int N, int K, const float *A, long a_stride, const float *Bp, int nr,
                      float *C, long ldc, int accumulate) {
    long npad = N; /* a multiple of nr (the caller's promise) */
    const int narrow = nr != GEMM_NR;
    for (long pc = 0; pc < K; pc += GEMM_KC) {
        long kc = K - pc < GEMM_KC ? K - pc : GEMM_KC;
        const float *bp = Bp + pc * npad;
        float beta = accumulate || pc > 0 ? 1.0f : 0.0f;
        for (long jr = 0; jr < N; jr += nr)
            for (long ir = 0; ir < M; ir += GEMM_MR) {
                float *c = C + ir * ldc + jr;
                const float *a = a_layout == MOCO_GEMM_A_ROWS ? A + ir * a_stride + pc : A + pc * a_stride + ir;
#if defined(__AVX512F__)
                if (narrow) {
                    if (a_layout == MOCO_GEMM_A_ROWS)
                        micro_kernel_rowmajor_narrow(kc, a, a_stride, bp + jr * kc, c, ldc, 1.0f, beta);
                    else
                        micro_kernel_kmajor_narrow(kc, a, a_stride, bp + jr * kc, c, ldc, 1.0f, beta);
                    continue;
                }
#else
                (void)narrow;
#endif
                if (a_layout == MOCO_GEMM_A_ROWS)
                    micro_kernel_rowmajor(kc, a, a_stride, bp + jr * kc, c, ldc, 1.0f, beta);
                else
                    micro_kernel_kmajor(kc, a, a_stride, bp + jr * kc, c, ldc, 1.0f, beta);
            }
    }
}

int moco_gemm_tile(int *mr, int *nr, int *nr_narrow) {
    if (current_backend() != BACKEND_OWN) return -1;
    *mr = GEMM_MR, *nr = GEMM_NR;
    if (nr_narrow) *nr_narrow = GEMM_NR_NARROW;
    return 0;
}
#endif /* GEMM_MR */

/* ------------------------------------------------------------------ backend choice */

static void openblas_gemm(const Gemm *g) {
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans,
                (int)g->M, (int)g->N, (int)g->K, g->alpha, g->A, (int)g->lda, g->B, (int)g->ldb, g->beta, g->C,
                (int)g->ldc);
}

static atomic_int backend = BACKEND_UNKNOWN;
static char backend_note[256] = "";
static pthread_once_t check_once = PTHREAD_ONCE_INIT;

#ifdef GEMM_MR
/* Deterministic values in [-1, 1). */
static float test_value(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* One shape of the start-up check: 0 when every element is within tolerance. */
static int check_shape(int ta, int tb, long M, long N, long K, float alpha, float beta, char *why, size_t why_size) {
    long lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    long arows = ta ? K : M, brows = tb ? N : K;
    float *A = malloc(sizeof(float) * (size_t)(arows * lda + 1)), *B = malloc(sizeof(float) * (size_t)(brows * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1)), *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    int bad = 0;
    if (!A || !B || !C || !C0) {
        snprintf(why, why_size, "out of memory in the start-up check");
        bad = 1;
        goto done;
    }
    unsigned st = (unsigned)(M * 131 + N * 17 + K * 7 + ta * 3 + tb);
    for (long i = 0; i < arows * lda; i++) A[i] = test_value(&st);
    for (long i = 0; i < brows * ldb; i++) B[i] = test_value(&st);
    for (long i = 0; i < M * ldc; i++) C0[i] = beta == 0.0f ? NAN : test_value(&st); /* beta 0: C unread */
    memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
    Gemm g = {ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C};
    if (own_gemm(&g)) {
        snprintf(why, why_size, "out of memory for the packing buffers");
        bad = 1;
        goto done;
    }
    for (long i = 0; i < M && !bad; i++) {
        for (long j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (long k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k], b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b, mag += fabs(a * b);
            }
            double want = alpha * s + (beta == 0.0f ? 0.0 : beta * (double)C0[i * ldc + j]);
            double tol = 1e-5 * (fabs(alpha) * mag + fabs(beta) + 1e-3);
            double got = C[i * ldc + j];
            if (!(fabs(got - want) <= tol)) {
                snprintf(why, why_size, "start-up check failed: %s%s M %ld N %ld K %ld, C[%ld][%ld] = %.9g, expected %.9g",
                         ta ? "A^T " : "", tb ? "B^T " : "", M, N, K, i, j, got, want);
                bad = 1;
                break;
            }
        }
    }
    /* columns past N in each row of C (the padding of ldc) must be untouched */
    for (long i = 0; i < M && !bad; i++)
        for (long j = N; j < ldc; j++)
            if (memcmp(&C[i * ldc + j], &C0[i * ldc + j], sizeof(float))) {
                snprintf(why, why_size, "start-up check failed: wrote outside C (M %ld N %ld K %ld)", M, N, K);
                bad = 1;
                break;
            }
done:
    free(A), free(B), free(C), free(C0);
    return bad;
}
#endif

static void choose_backend(void) {
    const char *env = getenv("MOCO_GEMM");
    if (env && strcmp(env, "openblas") == 0) {
        snprintf(backend_note, sizeof backend_note, "OpenBLAS %s (MOCO_GEMM=openblas)", openblas_get_corename());
        atomic_store(&backend, BACKEND_OPENBLAS);
        return;
    }
#ifdef GEMM_MR
    static const struct { int ta, tb; long M, N, K; float alpha, beta; } shapes[] = {
        {0, 0, 1, 1, 1, 1.0f, 0.0f},       {0, 0, 12, 32, 256, 1.0f, 0.0f}, {0, 0, 13, 33, 257, 1.0f, 1.0f},
        {1, 0, 50, 70, 300, 0.5f, 0.25f}, {0, 1, 29, 47, 19, 1.0f, 0.0f},  {1, 1, 31, 65, 600, -1.0f, 1.0f},
        {0, 0, 150, 3100, 9, 1.0f, 0.0f}, {0, 1, 7, 5, 1000, 2.0f, 0.0f},  {0, 0, 200, 40, 40, 1.0f, 0.0f},
    };
    char why[200] = "";
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (check_shape(shapes[i].ta, shapes[i].tb, shapes[i].M, shapes[i].N, shapes[i].K, shapes[i].alpha,
                        shapes[i].beta, why, sizeof why)) {
            snprintf(backend_note, sizeof backend_note, "OpenBLAS %s (%s: %s)", openblas_get_corename(),
                     GEMM_KERNEL_NAME, why);
            atomic_store(&backend, BACKEND_OPENBLAS);
            return;
        }
    }
    snprintf(backend_note, sizeof backend_note, "%s (checked at start-up)", GEMM_KERNEL_NAME);
    atomic_store(&backend, BACKEND_OWN);
#else
    snprintf(backend_note, sizeof backend_note, "OpenBLAS %s (no AVX2/AVX-512 kernel in this build)",
             openblas_get_corename());
    atomic_store(&backend, BACKEND_OPENBLAS);
#endif
}

static int current_backend(void) {
    int b = atomic_load_explicit(&backend, memory_order_acquire);
    if (b == BACKEND_UNKNOWN) {
        pthread_once(&check_once, choose_backend);
        b = atomic_load(&backend);
    }
    return b;
}

const char *moco_gemm_backend(void) {
    current_backend();
    return backend_note;
}

int moco_gemm_uses_own_kernel(void) { return current_backend() == BACKEND_OWN; }

#ifndef GEMM_MR
int moco_gemm_tile(int *mr, int *nr, int *nr_narrow) {
    (void)mr, (void)nr, (void)nr_narrow;
    return -1;
}
size_t moco_gemm_packed_b_floats(int K, int N, int nr) {
    (void)nr;
    return (size_t)K * (size_t)N;
}
size_t moco_gemm_packed_b_index(int K, int N, int nr, int k, int j) {
    (void)K, (void)nr;
    return (size_t)k * (size_t)N + (size_t)j;
}
void moco_gemm_packed(int a_layout, int M, int N, int K, const float *A, long a_stride, const float *Bp, int nr,
                      float *C, long ldc, int accumulate) {
    /* never called: moco_gemm_tile reports no kernel */
    (void)a_layout, (void)M, (void)N, (void)K, (void)A, (void)a_stride, (void)Bp, (void)nr, (void)C, (void)ldc,
        (void)accumulate;
}
#endif

void moco_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    Gemm g = {trans_a != 0, trans_b != 0, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C};
#ifdef GEMM_MR
    if (current_backend() == BACKEND_OWN && own_gemm(&g) == 0) return;
#endif
    openblas_gemm(&g);
}

int moco_gemm_blas_begin(void) {
    int previous = openblas_get_num_threads();
    if (previous != 1) openblas_set_num_threads(1);
    return previous;
}

void moco_gemm_blas_end(int previous) {
    if (previous != 1) openblas_set_num_threads(previous);
}

int moco_set_num_threads(int n) {
    if (threadpool_set_size(n)) return -1;
    openblas_set_num_threads(n);
    return 0;
}
