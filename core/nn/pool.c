/* core/nn/pool.c: MaxPool2d (kernel, stride, padding; floor mode, dilation 1) and the global
 * average pool (AdaptiveAvgPool2d((1,1)) + flatten) that ends a ResNet. */
#include <math.h>
#include <string.h>

#include "error.h"
#include "nn/nn.h"

int maxpool2d_size_init(MaxPool2dSize *s, int N, int C, int H, int W, int kernel, int stride,
                        int padding) {
    if (N < 1 || C < 1 || H < 1 || W < 1)
        return moco_error("maxpool2d: sizes must be positive (N %d, C %d, H %d, W %d)", N, C, H, W);
    if (kernel < 1 || stride < 1)
        return moco_error("maxpool2d: kernel and stride must be >= 1, got %d and %d", kernel, stride);
    if (padding < 0 || padding > kernel / 2)
        return moco_error("maxpool2d: padding must be between 0 and kernel/2 = %d (as in PyTorch), got %d",
                          kernel / 2, padding);
    if (H + 2 * padding < kernel || W + 2 * padding < kernel)
        return moco_error("maxpool2d: kernel %d is larger than the padded input %dx%d", kernel,
                          H + 2 * padding, W + 2 * padding);
    s->N = N, s->C = C, s->H = H, s->W = W;
    s->kernel = kernel, s->stride = stride, s->padding = padding;
    s->OH = (H + 2 * padding - kernel) / stride + 1;
    s->OW = (W + 2 * padding - kernel) / stride + 1;
    return 0;
}

void maxpool2d_forward(float *out, int32_t *indices, const float *inp, const MaxPool2dSize *s) {
    const int H = s->H, W = s->W, OH = s->OH, OW = s->OW, k = s->kernel, st = s->stride, pad = s->padding;
    const size_t planes = (size_t)s->N * s->C;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * H * W;
        float *y = out + pl * OH * OW;
        int32_t *idx = indices + pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            int h0 = oh * st - pad, h1 = h0 + k < H ? h0 + k : H;
            if (h0 < 0) h0 = 0;
            for (int ow = 0; ow < OW; ow++) {
                int w0 = ow * st - pad, w1 = w0 + k < W ? w0 + k : W;
                if (w0 < 0) w0 = 0;
                /* PyTorch's CPU kernel: start at -inf with the first in-bounds position, take
                 * strictly greater values (so ties keep the first) or a NaN. */
                int best = h0 * W + w0;
                float maxval = -INFINITY;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) {
                        float v = x[h * W + w];
                        if (v > maxval || isnan(v)) {
                            maxval = v;
                            best = h * W + w;
                        }
                    }
                y[oh * OW + ow] = maxval;
                idx[oh * OW + ow] = best;
            }
        }
    }
}

void maxpool2d_backward_input(float *dinp, const float *dout, const int32_t *indices,
                              const MaxPool2dSize *s) {
    const size_t in_plane = (size_t)s->H * s->W, out_plane = (size_t)s->OH * s->OW;
    const size_t planes = (size_t)s->N * s->C;
    memset(dinp, 0, planes * in_plane * sizeof *dinp);
    for (size_t pl = 0; pl < planes; pl++) {
        float *dx = dinp + pl * in_plane;
        const float *dy = dout + pl * out_plane;
        const int32_t *idx = indices + pl * out_plane;
        for (size_t i = 0; i < out_plane; i++) dx[idx[i]] += dy[i];
    }
}

void avgpool_global_forward(float *out, const float *inp, int N, int C, int HW) {
    const size_t planes = (size_t)N * C;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * HW;
        float sum = 0;
        for (int i = 0; i < HW; i++) sum += x[i];
        out[pl] = sum / (float)HW;
    }
}

void avgpool_global_backward_input(float *dinp, const float *dout, int N, int C, int HW) {
    const size_t planes = (size_t)N * C;
    for (size_t pl = 0; pl < planes; pl++) {
        float g = dout[pl] / (float)HW;
        float *dx = dinp + pl * HW;
        for (int i = 0; i < HW; i++) dx[i] = g;
    }
}
