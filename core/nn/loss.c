/* core/nn/loss.c: softmax cross-entropy over class logits (nn.CrossEntropyLoss, mean). */
#include <math.h>

#include "error.h"
#include "nn/nn.h"

int cross_entropy_forward_backward(float *loss, float *dlogits, const float *logits,
                                   const int64_t *labels, int N, int K) {
    for (int n = 0; n < N; n++)
        if (labels[n] < 0 || labels[n] >= K)
            return moco_error("cross_entropy: labels[%d] is %lld, outside [0, %d) (labels are "
                              "0-based class numbers)", n + 1, (long long)labels[n], K);
    double total = 0;
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * K;
        /* log-sum-exp around the row maximum, so exp never overflows */
        float max = x[0];
        for (int j = 1; j < K; j++) max = x[j] > max ? x[j] : max;
        double sum = 0;
        for (int j = 0; j < K; j++) sum += expf(x[j] - max);
        double lse = max + log(sum);
        total += lse - x[labels[n]];
        if (dlogits) {
            float *d = dlogits + (size_t)n * K;
            float scale = (float)(1.0 / (sum * N));
            for (int j = 0; j < K; j++) d[j] = expf(x[j] - max) * scale;
            d[labels[n]] -= 1.0f / (float)N;
        }
    }
    *loss = (float)(total / N);
    return 0;
}
