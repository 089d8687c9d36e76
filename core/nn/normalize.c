/* core/nn/normalize.c: L2 normalisation of rows, F.normalize(x, dim=1, eps): the one row
 * normaliser of libmoco (tensor_normalize_rows_ and the memory bank update call it too). */
#include <math.h>

#include "nn/nn.h"

void normalize_forward(float *out, float *norms, const float *inp, int N, int D, float eps) {
    for (int r = 0; r < N; r++) {
        const float *x = inp + (size_t)r * D;
        float *y = out + (size_t)r * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)x[j] * x[j];
        float norm = (float)sqrt(ss);
        if (norms) norms[r] = norm;
        /* Divide (not multiply by the reciprocal) to round as F.normalize does. */
        float denom = norm > eps ? norm : eps;
        for (int j = 0; j < D; j++) y[j] = x[j] / denom;
    }
}

void normalize_backward_input(float *dinp, const float *dout, const float *out, const float *norms,
                              int N, int D, float eps) {
    for (int r = 0; r < N; r++) {
        const float *dy = dout + (size_t)r * D, *y = out + (size_t)r * D;
        float *dx = dinp + (size_t)r * D;
        float norm = norms[r];
        if (norm >= eps) {
            /* y = x / |x|:  dx = (dy - y * <y, dy>) / |x|.  At norm == eps PyTorch's clamp_min
             * still passes the gradient to the norm, hence >=. */
            double dot = 0;
            for (int j = 0; j < D; j++) dot += (double)y[j] * dy[j];
            float d = (float)dot;
            for (int j = 0; j < D; j++) dx[j] = (dy[j] - y[j] * d) / norm;
        } else {
            /* the denominator is the constant eps */
            for (int j = 0; j < D; j++) dx[j] = dy[j] / eps;
        }
    }
}
