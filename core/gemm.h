/* core/gemm.h: the one door through which every matrix product of libmoco passes.
 *
 * All layers, the contrastive loss, kNN and tensor matmul call moco_sgemm (row-major, the
 * cblas_sgemm argument order without the layout argument), so a faster kernel, another
 * BLAS, or a different OpenBLAS core type can be swapped in and verified in one place.
 * It runs libmoco's own packed AVX-512 / AVX2 kernel (core/gemm.c), checked against a
 * double-precision reference on first use, and falls back to OpenBLAS's cblas_sgemm when
 * the check fails, the build has neither instruction set, or MOCO_GEMM=openblas. */
#ifndef MOCO_GEMM_H
#define MOCO_GEMM_H

#include <stddef.h>

/* C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, row-major with leading dimensions
 * lda, ldb, ldc; op = transpose when trans_* is non-zero. */
void moco_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

/* Which kernel moco_sgemm uses, and why (runs the start-up check if it has not run). */
const char *moco_gemm_backend(void);
/* 1 when moco_sgemm runs libmoco's own kernel, 0 when it forwards to OpenBLAS. */
int moco_gemm_uses_own_kernel(void);

/* ---- Products whose operands the caller lays out for the kernel (the Winograd
 * convolution, which computes 36 products per block of tiles and can write its transforms
 * straight into these layouts, so nothing is packed per product).
 *
 * moco_gemm_tile: 0 and the register tile (MR rows, NR columns, and the NR of the narrow
 * tile for 16-column products, which may equal NR) when moco_sgemm runs its own kernel; -1
 * otherwise (the OpenBLAS fallback has no such entry: use moco_sgemm).
 *
 * The packed right operand: op(B) (K, N) in panels of nr columns (NR, or the narrow NR);
 * element (k, j) lives at moco_gemm_packed_b_index(K, N, nr, k, j) of a buffer of
 * moco_gemm_packed_b_floats(K, N, nr) floats (N rounded up to nr, the columns past N zero).
 *
 * moco_gemm_packed: C (M, N) = A (M, K) @ op(B), or C += when accumulate; single-threaded.
 * M must be a multiple of MR and N of nr (pad the operands: the padded rows and columns of
 * C are written too).  A is read in place: a_layout MOCO_GEMM_A_ROWS means A(r, k) =
 * A[r * a_stride + k] (row-major), MOCO_GEMM_A_COLUMNS means A(r, k) = A[k * a_stride + r]
 * (A^T row-major). */
enum { MOCO_GEMM_A_ROWS = 0, MOCO_GEMM_A_COLUMNS = 1 };
int moco_gemm_tile(int *mr, int *nr, int *nr_narrow);
size_t moco_gemm_packed_b_floats(int K, int N, int nr);
size_t moco_gemm_packed_b_index(int K, int N, int nr, int k, int j);
void moco_gemm_packed(int a_layout, int M, int N, int K, const float *A, long a_stride, const float *Bp, int nr,
                      float *C, long ldc, int accumulate);

/* ---- OpenBLAS's own thread count (this file is the only code that calls openblas_*).
 * It is used when a product is computed outside the pool and forwarded to OpenBLAS.  Tasks
 * of the pool that call BLAS concurrently need it at 1 (several threads each running a
 * multi-threaded sgemm would oversubscribe the cores, and OpenBLAS's spinning helpers would
 * steal them from the pool).  begin sets it to 1 and returns the previous count for end to
 * restore; both cost a few nanoseconds when nothing changes.  moco_set_num_threads
 * (core/threads.h) sets it together with the pool. */
int moco_gemm_blas_begin(void);
void moco_gemm_blas_end(int previous);

#endif
