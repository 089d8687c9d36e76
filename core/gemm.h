/* core/gemm.h: the one door through which every matrix product of libmoco passes.
 *
 * All layers, the contrastive loss, kNN and tensor matmul call moco_sgemm (row-major, the
 * cblas_sgemm argument order without the layout argument), so a faster kernel, another
 * BLAS, or a different OpenBLAS core type can be swapped in and verified in one place.
 * Today it forwards to OpenBLAS's cblas_sgemm. */
#ifndef MOCO_GEMM_H
#define MOCO_GEMM_H

/* C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, row-major with leading dimensions
 * lda, ldb, ldc; op = transpose when trans_* is non-zero. */
void moco_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

#endif
