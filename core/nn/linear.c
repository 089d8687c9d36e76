/* core/nn/linear.c: the fully connected layer (nn.Linear), weight (OUT,IN) as in PyTorch. */

#include "gemm.h"
#include "nn/nn.h"

void linear_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int IN, int OUT) {
    if (bias)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) out[(size_t)n * OUT + o] = bias[o];
    /* out (N,OUT) = inp (N,IN) @ weight^T (IN,OUT) [+ out] */
    moco_sgemm(0, 1, N, OUT, IN, 1.0f, inp, IN, weight, IN,
                bias ? 1.0f : 0.0f, out, OUT);
}

void linear_backward_input(float *dinp, const float *dout, const float *weight, int N, int IN,
                           int OUT) {
    /* dinp (N,IN) = dout (N,OUT) @ weight (OUT,IN) */
    moco_sgemm(0, 0, N, IN, OUT, 1.0f, dout, OUT, weight, IN,
                0.0f, dinp, IN);
}

void linear_backward_params(float *dweight, float *dbias, const float *dout, const float *inp,
                            int N, int IN, int OUT) {
    /* dweight (OUT,IN) += dout^T (OUT,N) @ inp (N,IN) */
    moco_sgemm(1, 0, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f,
                dweight, IN);
    if (dbias) {
        for (int o = 0; o < OUT; o++) {
            double acc = 0;
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * OUT + o];
            dbias[o] += (float)acc;
        }
    }
}
