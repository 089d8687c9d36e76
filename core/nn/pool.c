/* core/nn/pool.c: MaxPool2d (kernel, stride, padding; floor mode, dilation 1) and the global
 * average pool (AdaptiveAvgPool2d((1,1)) + flatten) that ends a ResNet.  Planes (one image,
 * one channel) are independent: the thread pool takes them in blocks. */
#include <math.h>
#include <string.h>

#include "error.h"
#include "nn/nn.h"
#include "nn/vec.h"
#include "threads.h"

/* Planes per task: a few tasks per thread even for small batches. */
static int plane_tasks(size_t planes) {
    size_t t = 8 * (size_t)threadpool_size();
    return (int)(planes < t ? planes : t);
}

typedef struct PoolJob {
    float *out;
    int32_t *indices;
    const float *inp;
    const int32_t *cindices;
    const MaxPool2dSize *s;
    size_t planes;
    int tasks;
} PoolJob;

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

/* One output (oh, ow) of plane x: PyTorch's CPU kernel starts at -inf with the first
 * in-bounds position and takes strictly greater values (so ties keep the first) or a NaN;
 * written without branches (the comparisons are unpredictable). */
static inline void max_window(const float *x, const MaxPool2dSize *s, int oh, int ow, float *y, int32_t *idx) {
    const int H = s->H, W = s->W, k = s->kernel;
    int h0 = oh * s->stride - s->padding, h1 = h0 + k < H ? h0 + k : H;
    int w0 = ow * s->stride - s->padding, w1 = w0 + k < W ? w0 + k : W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    int best = h0 * W + w0;
    float maxval = -INFINITY;
    for (int h = h0; h < h1; h++)
        for (int w = w0; w < w1; w++) {
            float v = x[h * W + w];
            int take = (v > maxval) | (v != v);
            maxval = take ? v : maxval;
            best = take ? h * W + w : best;
        }
    *y = maxval, *idx = best;
}

/* VEC_WIDTH outputs ow0 .. ow0+15 of row oh with stride 2, all windows inside the plane
 * and one column to spare (the loads take 32 floats): the same scan order and comparisons
 * as max_window, lane by lane; each tap's inputs are the even elements of 32 loaded ones. */
static inline void max_window16_stride2(const float *x, const MaxPool2dSize *s, int oh, int ow0, float *y,
                                        int32_t *idx) {
    const int W = s->W, k = s->kernel;
    const veci even = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const int h0 = oh * 2 - s->padding, w0 = ow0 * 2 - s->padding;
    vecf best_v = vec_splat(-INFINITY);
    veci best_i = (veci){0} + (h0 * W + w0) + even;
    for (int h = h0; h < h0 + k; h++)
        for (int w = w0; w < w0 + k; w++) {
            const float *p = x + (size_t)h * W + w;
            vecf v = __builtin_shuffle(vec_load(p), vec_load(p + VEC_WIDTH), even);
            veci take = (v > best_v) | (v != v);
            best_v = (vecf)((take & (veci)v) | (~take & (veci)best_v));
            best_i = (take & ((veci){0} + (h * W + w) + even)) | (~take & best_i);
        }
    vec_store(y, best_v);
    memcpy(idx, &best_i, sizeof best_i);
}

static void maxpool_forward_task(void *ctx, int task, int thread) {
    (void)thread;
    const PoolJob *j = ctx;
    const MaxPool2dSize *s = j->s;
    const int H = s->H, W = s->W, OH = s->OH, OW = s->OW, k = s->kernel, pad = s->padding;
    /* outputs whose windows lie inside (the vector path): rows [r0, r1), columns [c0, c1) */
    int r0 = (pad + s->stride - 1) / s->stride, r1 = (H - k + pad) / s->stride + 1;
    int c0 = r0, c1 = (W - 1 - k + pad) / s->stride + 1; /* one column to spare */
    if (r1 > OH) r1 = OH;
    if (c1 > OW) c1 = OW;
    const int vector = s->stride == 2;
    long p0, p1;
    threadpool_split((long)j->planes, j->tasks, task, &p0, &p1);
    for (long pl = p0; pl < p1; pl++) {
        const float *x = j->inp + (size_t)pl * H * W;
        float *y = j->out + (size_t)pl * OH * OW;
        int32_t *idx = j->indices + (size_t)pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            int ow = 0;
            if (vector && oh >= r0 && oh < r1) {
                for (; ow < c0; ow++) max_window(x, s, oh, ow, y + oh * OW + ow, idx + oh * OW + ow);
                for (; ow + VEC_WIDTH <= c1; ow += VEC_WIDTH)
                    max_window16_stride2(x, s, oh, ow, y + oh * OW + ow, idx + oh * OW + ow);
            }
            for (; ow < OW; ow++) max_window(x, s, oh, ow, y + oh * OW + ow, idx + oh * OW + ow);
        }
    }
}

void maxpool2d_forward(float *out, int32_t *indices, const float *inp, const MaxPool2dSize *s) {
    PoolJob j = {.out = out, .indices = indices, .inp = inp, .s = s, .planes = (size_t)s->N * s->C};
    j.tasks = plane_tasks(j.planes);
    threadpool_run(j.tasks, threadpool_size(), maxpool_forward_task, &j);
}

static void maxpool_backward_task(void *ctx, int task, int thread) {
    (void)thread;
    const PoolJob *j = ctx;
    const MaxPool2dSize *s = j->s;
    const size_t in_plane = (size_t)s->H * s->W, out_plane = (size_t)s->OH * s->OW;
    long p0, p1;
    threadpool_split((long)j->planes, j->tasks, task, &p0, &p1);
    for (long pl = p0; pl < p1; pl++) {
        float *dx = j->out + (size_t)pl * in_plane;
        const float *dy = j->inp + (size_t)pl * out_plane;
        const int32_t *idx = j->cindices + (size_t)pl * out_plane;
        memset(dx, 0, in_plane * sizeof *dx);
        for (size_t i = 0; i < out_plane; i++) dx[idx[i]] += dy[i];
    }
}

void maxpool2d_backward_input(float *dinp, const float *dout, const int32_t *indices,
                              const MaxPool2dSize *s) {
    PoolJob j = {.out = dinp, .inp = dout, .cindices = indices, .s = s, .planes = (size_t)s->N * s->C};
    j.tasks = plane_tasks(j.planes);
    threadpool_run(j.tasks, threadpool_size(), maxpool_backward_task, &j);
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
