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

/* C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, row-major with leading dimensions
 * lda, ldb, ldc; op = transpose when trans_* is non-zero. */
void moco_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

/* Which kernel moco_sgemm uses, and why (runs the start-up check if it has not run). */
const char *moco_gemm_backend(void);
/* 1 when moco_sgemm runs libmoco's own kernel, 0 when it forwards to OpenBLAS. */
int moco_gemm_uses_own_kernel(void);

#endif
