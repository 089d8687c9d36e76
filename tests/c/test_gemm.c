/* tests/c/test_gemm.c: moco_sgemm (core/gemm.c) against a double-precision reference, on
 * shapes that exercise every edge of the packed kernel (partial MR x NR tiles, several KC,
 * MC and NC blocks, every transpose, alpha and beta, leading dimensions wider than the
 * matrices), on one thread and split over the pool, and the OpenBLAS fallback. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gemm.h"
#include "threads.h"

static float value(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Max over C of |got - want| / (sum |a b| + 1), and whether C's padding stayed intact. */
static double run_case(int ta, int tb, int M, int N, int K, float alpha, float beta, int *pad_ok) {
    int lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 3, ldc = N + 4;
    int arows = ta ? K : M, brows = tb ? N : K;
    float *A = malloc(sizeof(float) * ((size_t)arows * lda + 1)), *B = malloc(sizeof(float) * ((size_t)brows * ldb + 1));
    float *C = malloc(sizeof(float) * ((size_t)M * ldc + 1)), *C0 = malloc(sizeof(float) * ((size_t)M * ldc + 1));
    unsigned s = (unsigned)(M * 7 + N * 13 + K);
    for (long i = 0; i < (long)arows * lda; i++) A[i] = value(&s);
    for (long i = 0; i < (long)brows * ldb; i++) B[i] = value(&s);
    for (long i = 0; i < (long)M * ldc; i++) C0[i] = beta == 0.0f ? NAN : value(&s);
    memcpy(C, C0, sizeof(float) * (size_t)M * ldc);
    moco_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(long)k * lda + i] : A[(long)i * lda + k];
                double b = tb ? B[(long)j * ldb + k] : B[(long)k * ldb + j];
                acc += a * b, mag += fabs(a * b);
            }
            double want = alpha * acc + (beta == 0.0f ? 0.0 : beta * C0[(long)i * ldc + j]);
            double err = fabs(C[(long)i * ldc + j] - want) / (mag + 1);
            if (!(err <= worst)) worst = err; /* NaN propagates */
        }
    *pad_ok = 1;
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++)
            if (memcmp(&C[(long)i * ldc + j], &C0[(long)i * ldc + j], sizeof(float))) *pad_ok = 0;
    free(A), free(B), free(C), free(C0);
    return worst;
}

static void sweep(const char *label) {
    static const int dims[][3] = {
        {1, 1, 1},     {12, 32, 256},  {13, 33, 257}, {11, 31, 255},  {25, 65, 513},
        {145, 97, 40}, {64, 3100, 27}, {300, 17, 9},  {7, 3073, 300}, {289, 130, 700},
    };
    static const float ab[][2] = {{1, 0}, {1, 1}, {0.5f, -0.25f}};
    char name[160];
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t k = 0; k < sizeof ab / sizeof ab[0]; k++) {
                    int pad_ok;
                    double err = run_case(ta, tb, dims[d][0], dims[d][1], dims[d][2], ab[k][0], ab[k][1], &pad_ok);
                    snprintf(name, sizeof name, "%s %s%sM %d N %d K %d alpha %g beta %g", label, ta ? "A^T " : "",
                             tb ? "B^T " : "", dims[d][0], dims[d][1], dims[d][2], ab[k][0], ab[k][1]);
                    CHECK(name, err <= 1e-6, "relative error %.3g (tol 1e-6)", err);
                    if (!pad_ok) CHECK(name, pad_ok, "wrote past N into C's padding");
                }
}

int main(void) {
    const char *backend = moco_gemm_backend();
    printf("backend: %s\n", backend);
    CHECK("backend reported", backend && *backend, "empty backend description");
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    /* On a machine with the kernel compiled in, the start-up check must pass (if it does
     * not, the kernel is wrong on this CPU and the note says where). */
    if (!getenv("MOCO_GEMM"))
        CHECK("own kernel in use after its start-up check", moco_gemm_uses_own_kernel(), "%s", backend);
#endif
    threadpool_set_size(1);
    sweep("1 thread");
    threadpool_set_size(3); /* an odd split of rows and columns */
    sweep("3 threads");
    /* K = 0: C = beta C */
    float c[4] = {1, 2, 3, 4}, a[1] = {0}, b[1] = {0};
    moco_sgemm(0, 0, 2, 2, 0, 1.0f, a, 1, b, 2, 0.5f, c, 2);
    CHECK("K 0 scales C by beta", c[0] == 0.5f && c[3] == 2.0f, "C = %g %g %g %g", c[0], c[1], c[2], c[3]);
    threadpool_shutdown();
    CHECK_DONE();
}
