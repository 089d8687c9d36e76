/* core/nn/batchnorm.c: BatchNorm2d / BatchNorm1d with PyTorch's semantics, and the split
 * ("virtual devices") batch norm of the official MoCo CIFAR-10 demo.
 *
 * A group is one (split s, channel c): the samples n = s, s+S, s+2S, ... of channel c, each
 * contributing HW contiguous values.  Why strided: the demo's SplitBatchNorm calls
 * F.batch_norm(input.view(-1, C*S, H, W), ...), and in that view sample n = S*m + s becomes
 * row m, channel s*C + c; so the statistics of "channel" s*C + c are over the samples with
 * n mod S == s.  Its running statistics are then averaged over the S copies, which equals
 * one update with the mean over splits of the batch statistics:
 *     running = (1 - m) * running + m * mean_s(batch_stat_s).
 *
 * Numerics: two passes (mean, then squared deviations, so no cancellation), accumulated in
 * double across rows.  Speed: a group's rows are normalised right after its statistics,
 * while they are still in cache.  Two loop shapes:
 *  - planes (HW >= PLANE_MIN): one channel at a time, sums along its HW values with LANES
 *    independent float accumulators; a single running float sum would be a serial chain the
 *    compiler may not reorder (no -ffast-math), several times slower;
 *  - rows (small HW, BatchNorm1d's HW = 1): a block of channels at a time, walking the
 *    samples with elementwise accumulators over the block's contiguous cb*HW values.
 * Threads: the channel blocks are the thread pool's tasks (a few per thread); a block's
 * statistics, outputs and parameter gradients belong to it alone, and no sum crosses
 * blocks, so results do not depend on the number of threads. */
#include <math.h>

#include "error.h"
#include "nn/nn.h"
#include "nn/vec.h"
#include "threads.h"

#define LANES (2 * VEC_WIDTH) /* float accumulators per plane sum (two vectors) */
#define PLANE_MIN 16      /* HW from which the planes shape is used */
#define PLANE_CHANNELS 64 /* channels per block on the planes shape */
#define ROW_ELEMS 256     /* values (channels * HW) per block on the rows shape */
#define MAX_BLOCK 256     /* channels per block, either shape */
#define BLOCK_BYTES (768.0 * 1024) /* a block's values (planes shape), see block_size */

int batchnorm_size_init(BatchNormSize *s, int N, int C, int HW, int splits) {
    if (N < 1 || C < 1 || HW < 1)
        return moco_error("batchnorm: sizes must be positive (N %d, C %d, H*W %d)", N, C, HW);
    if (splits < 1) return moco_error("batchnorm: splits must be >= 1, got %d", splits);
    if (N % splits)
        return moco_error("batchnorm: batch size %d is not divisible by splits %d (each split is a "
                          "virtual device with N/splits samples)", N, splits);
    s->N = N, s->C = C, s->HW = HW, s->splits = splits;
    s->relu = 0;
    return 0;
}

/* Channels per block (the last block may be smaller).  Blocks are the tasks handed to the
 * thread pool, so there should be a few per thread; the results do not depend on the
 * blocking (every sum is per channel, or per value position within a channel). */
static int block_size(const BatchNormSize *s) {
    int cb = s->HW >= PLANE_MIN ? PLANE_CHANNELS : ROW_ELEMS / s->HW;
    /* The passes over a block (statistics, then normalisation; dout sums, then dx) re-read
     * its values: keep a block within BLOCK_BYTES so that the later passes find them in L2
     * rather than in memory (a 64-channel block of a 256-image 32x32 layer is 64 MB). */
    double per_channel = 4.0 * s->N * s->HW;
    if (s->HW >= PLANE_MIN && per_channel * cb > BLOCK_BYTES) cb = (int)(BLOCK_BYTES / per_channel);
    int per_task = (s->C + 4 * threadpool_size() - 1) / (4 * threadpool_size());
    if (cb > per_task) cb = per_task;
    return cb < 1 ? 1 : cb;
}

static int block_count(const BatchNormSize *s) { return (s->C + block_size(s) - 1) / block_size(s); }

/* Channels in block `task`, starting at *c0. */
static int block_channels(const BatchNormSize *s, int task, int *c0) {
    int cb = block_size(s);
    *c0 = task * cb;
    return s->C - *c0 < cb ? s->C - *c0 : cb;
}

/* Offset of the HW values of sample n, channel c. */
static inline size_t at(const BatchNormSize *s, int n, int c) { return ((size_t)n * s->C + c) * s->HW; }

/* ------------------------------------------------------------ plane kernels */

/* The plane sums keep LANES = 32 running sums in two vectors (lane j of the pair adds the
 * values at i + j, i a multiple of 32), then add the tail and the lanes in a fixed order.
 * Named vector variables rather than an array: GCC keeps an array of accumulators in memory
 * and the sums then wait on store-to-load forwarding. */
static float lanes_total(vecf lo, vecf hi, float tail) {
    float s = tail;
    for (int j = 0; j < VEC_WIDTH; j++) s += lo[j];
    for (int j = 0; j < VEC_WIDTH; j++) s += hi[j];
    return s;
}

static float plane_sum(const float *x, int n) {
    vecf lo = {0}, hi = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        lo += vec_load(x + i);
        hi += vec_load(x + i + VEC_WIDTH);
    }
    float s = 0;
    for (; i < n; i++) s += x[i];
    return lanes_total(lo, hi, s);
}

/* sum of (x - mean)^2 */
static float plane_ssd(const float *x, int n, float mean) {
    vecf lo = {0}, hi = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        vecf d0 = vec_load(x + i) - mean, d1 = vec_load(x + i + VEC_WIDTH) - mean;
        lo += d0 * d0;
        hi += d1 * d1;
    }
    float s = 0;
    for (; i < n; i++) s += (x[i] - mean) * (x[i] - mean);
    return lanes_total(lo, hi, s);
}

/* sum of dy, and of dy * (x - mean) */
static void plane_dy_sums(const float *dy, const float *x, int n, float mean, float *sum_dy, float *sum_dy_xmu) {
    vecf alo = {0}, ahi = {0}, blo = {0}, bhi = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        vecf g0 = vec_load(dy + i), g1 = vec_load(dy + i + VEC_WIDTH);
        alo += g0;
        ahi += g1;
        blo += g0 * (vec_load(x + i) - mean);
        bhi += g1 * (vec_load(x + i + VEC_WIDTH) - mean);
    }
    float sa = 0, sb = 0;
    for (; i < n; i++) {
        sa += dy[i];
        sb += dy[i] * (x[i] - mean);
    }
    *sum_dy = lanes_total(alo, ahi, sa);
    *sum_dy_xmu = lanes_total(blo, bhi, sb);
}

/* ------------------------------------------------------------ statistics of one split
 * For split sp and channels c0 .. c0+cb-1: the groups' mean and sum of squared deviations
 * (double), with the means also rounded into m[j] (float, what normalisation uses). */
static void split_stats(double *mean, double *ssd, float *m, const float *inp, const BatchNormSize *s, int sp,
                        int c0, int cb) {
    const int S = s->splits, HW = s->HW;
    const double count = (double)(s->N / S) * HW;
    if (HW >= PLANE_MIN) {
        for (int j = 0; j < cb; j++) {
            double sum = 0, sq = 0;
            for (int n = sp; n < s->N; n += S) sum += plane_sum(inp + at(s, n, c0 + j), HW);
            m[j] = (float)(sum / count);
            for (int n = sp; n < s->N; n += S) sq += plane_ssd(inp + at(s, n, c0 + j), HW, m[j]);
            mean[j] = sum / count;
            ssd[j] = sq;
        }
        return;
    }
    const int width = cb * HW;
    double acc[ROW_ELEMS] = {0};
    float me[ROW_ELEMS]; /* each value's channel mean */
    for (int n = sp; n < s->N; n += S) {
        const float *x = inp + at(s, n, c0);
        for (int e = 0; e < width; e++) acc[e] += x[e];
    }
    for (int j = 0; j < cb; j++) {
        double sum = 0;
        for (int i = 0; i < HW; i++) sum += acc[j * HW + i], acc[j * HW + i] = 0;
        mean[j] = sum / count;
        m[j] = (float)mean[j];
        for (int i = 0; i < HW; i++) me[j * HW + i] = m[j];
    }
    for (int n = sp; n < s->N; n += S) {
        const float *x = inp + at(s, n, c0);
        for (int e = 0; e < width; e++) {
            float d = x[e] - me[e];
            acc[e] += d * d;
        }
    }
    for (int j = 0; j < cb; j++) {
        double sq = 0;
        for (int i = 0; i < HW; i++) sq += acc[j * HW + i];
        ssd[j] = sq;
    }
}

/* The ResNet blocks' join fused into the affine pass: y = max(0, x * scale + shift + r),
 * the same float operations in the same order as the affine pass followed by
 * add_relu_forward, so the same bits. */
static void joined_affine(float *y, const float *x, const float *r, float a, float b, int len) {
    const vecf zero = {0};
    int i = 0;
    for (; i + VEC_WIDTH <= len; i += VEC_WIDTH) {
        vecf v = vec_load(x + i) * a + b;
        v = v + vec_load(r + i);
        vec_store(y + i, vec_select(v > zero, v));
    }
    for (; i < len; i++) {
        float v = x[i] * a + b;
        v = v + r[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

/* y = x * scale + shift (then max(0, y) with s->relu, or max(0, y + residual) when residual
 * is not NULL) for split sp (every S-th sample from sp; S = 1 and sp = 0 for all) and
 * channels c0 .. c0+cb-1. */
static void split_affine(float *out, const float *inp, const float *residual, const float *scale,
                         const float *shift, const BatchNormSize *s, int S, int sp, int c0, int cb) {
    const int HW = s->HW, relu = s->relu;
    const vecf zero = {0};
    if (residual) {
        for (int n = sp; n < s->N; n += S)
            for (int j = 0; j < cb; j++) {
                const size_t o = at(s, n, c0 + j);
                joined_affine(out + o, inp + o, residual + o, scale[j], shift[j], HW);
            }
        return;
    }
    if (HW >= PLANE_MIN) {
        for (int n = sp; n < s->N; n += S)
            for (int j = 0; j < cb; j++) {
                const float *x = inp + at(s, n, c0 + j);
                float *y = out + at(s, n, c0 + j);
                const float a = scale[j], b = shift[j];
                int i = 0;
                if (relu) {
                    for (; i + VEC_WIDTH <= HW; i += VEC_WIDTH) {
                        vecf v = vec_load(x + i) * a + b;
                        vec_store(y + i, vec_select(v > zero, v));
                    }
                    for (; i < HW; i++) {
                        float v = x[i] * a + b;
                        y[i] = v > 0.0f ? v : 0.0f;
                    }
                } else {
                    for (; i + VEC_WIDTH <= HW; i += VEC_WIDTH) vec_store(y + i, vec_load(x + i) * a + b);
                    for (; i < HW; i++) y[i] = x[i] * a + b;
                }
            }
        return;
    }
    const int width = cb * HW;
    float ae[ROW_ELEMS], be[ROW_ELEMS];
    for (int j = 0; j < cb; j++)
        for (int i = 0; i < HW; i++) ae[j * HW + i] = scale[j], be[j * HW + i] = shift[j];
    for (int n = sp; n < s->N; n += S) {
        const float *x = inp + at(s, n, c0);
        float *y = out + at(s, n, c0);
        for (int e = 0; e < width; e++) {
            float v = x[e] * ae[e] + be[e];
            y[e] = relu && !(v > 0.0f) ? 0.0f : v;
        }
    }
}

/* dst = dout where relu_out > 0, else 0, over channels c0 .. c0+cb-1 of every sample (the
 * fused ReLU's backward; dst may alias dout). */
static void mask_block(float *dst, const float *dout, const float *relu_out, const BatchNormSize *s, int c0,
                       int cb) {
    const size_t len = (size_t)cb * s->HW;
    const vecf zero = {0};
    for (int n = 0; n < s->N; n++) {
        const size_t o = at(s, n, c0);
        const float *dy = dout + o, *y = relu_out + o;
        float *d = dst + o;
        size_t i = 0;
        for (; i + VEC_WIDTH <= len; i += VEC_WIDTH) vec_store(d + i, vec_select(vec_load(y + i) > zero, vec_load(dy + i)));
        for (; i < len; i++) d[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

typedef struct BnJob {
    float *out, *save_mean, *save_invstd, *running_mean, *running_var, *dweight, *dbias;
    const float *inp, *residual, *dout, *relu_out, *weight, *bias, *mean_in, *invstd_in, *rmean_in, *rvar_in;
    const BatchNormSize *s;
    float momentum, eps;
    int training;
} BnJob;

static void forward_train_block(void *ctx, int task, int thread) {
    (void)thread;
    const BnJob *jb = ctx;
    const BatchNormSize *s = jb->s;
    const int S = s->splits, C = s->C;
    const double count = (double)(s->N / S) * s->HW;
    const float *weight = jb->weight, *bias = jb->bias;
    int c0, cb = block_channels(s, task, &c0); /* at most MAX_BLOCK */
    double mean[MAX_BLOCK], ssd[MAX_BLOCK], mean_over_splits[MAX_BLOCK] = {0}, var_over_splits[MAX_BLOCK] = {0};
    float m[MAX_BLOCK], scale[MAX_BLOCK], shift[MAX_BLOCK];
    for (int sp = 0; sp < S; sp++) {
        split_stats(mean, ssd, m, jb->inp, s, sp, c0, cb);
        for (int j = 0; j < cb; j++) {
            int c = c0 + j;
            float invstd = (float)(1.0 / sqrt(ssd[j] / count + jb->eps));
            jb->save_mean[sp * C + c] = m[j];
            jb->save_invstd[sp * C + c] = invstd;
            scale[j] = (weight ? weight[c] : 1.0f) * invstd;
            shift[j] = (bias ? bias[c] : 0.0f) - m[j] * scale[j];
            mean_over_splits[j] += mean[j] / S;
            var_over_splits[j] += ssd[j] / (count - 1) / S; /* unbiased, for the running estimate */
        }
        split_affine(jb->out, jb->inp, jb->residual, scale, shift, s, S, sp, c0, cb);
    }
    if (jb->running_mean) {
        const double momentum = jb->momentum;
        for (int j = 0; j < cb; j++) {
            int c = c0 + j;
            jb->running_mean[c] = (float)((1.0 - momentum) * jb->running_mean[c] + momentum * mean_over_splits[j]);
            jb->running_var[c] = (float)((1.0 - momentum) * jb->running_var[c] + momentum * var_over_splits[j]);
        }
    }
}

int batchnorm_forward_train(float *out, float *save_mean, float *save_invstd, float *running_mean,
                            float *running_var, const float *inp, const float *residual, const float *weight,
                            const float *bias, const BatchNormSize *s, float momentum, float eps) {
    const double count = (double)(s->N / s->splits) * s->HW;
    if (count < 2)
        return moco_error("batchnorm: expected more than 1 value per channel when training, got %d "
                          "(batch %d, splits %d, H*W %d)", (int)count, s->N, s->splits, s->HW);
    BnJob jb = {.out = out, .save_mean = save_mean, .save_invstd = save_invstd, .running_mean = running_mean,
                .running_var = running_var, .inp = inp, .residual = residual, .weight = weight, .bias = bias, .s = s,
                .momentum = momentum, .eps = eps};
    threadpool_run(block_count(s), threadpool_size(), forward_train_block, &jb);
    return 0;
}

static void forward_eval_block(void *ctx, int task, int thread) {
    (void)thread;
    const BnJob *jb = ctx;
    const BatchNormSize *s = jb->s;
    int c0, cb = block_channels(s, task, &c0);
    float scale[MAX_BLOCK], shift[MAX_BLOCK];
    for (int j = 0; j < cb; j++) {
        int c = c0 + j;
        jb->save_mean[c] = jb->rmean_in[c];
        jb->save_invstd[c] = (float)(1.0 / sqrt((double)jb->rvar_in[c] + jb->eps));
        scale[j] = (jb->weight ? jb->weight[c] : 1.0f) * jb->save_invstd[c];
        shift[j] = (jb->bias ? jb->bias[c] : 0.0f) - jb->rmean_in[c] * scale[j];
    }
    split_affine(jb->out, jb->inp, jb->residual, scale, shift, s, 1, 0, c0, cb);
}

void batchnorm_forward_eval(float *out, float *save_mean, float *save_invstd, const float *inp,
                            const float *residual, const float *running_mean, const float *running_var,
                            const float *weight, const float *bias, const BatchNormSize *s,
                            float eps) {
    BnJob jb = {.out = out, .save_mean = save_mean, .save_invstd = save_invstd, .inp = inp, .residual = residual,
                .rmean_in = running_mean, .rvar_in = running_var, .weight = weight, .bias = bias,
                .s = s, .eps = eps};
    threadpool_run(block_count(s), threadpool_size(), forward_eval_block, &jb);
}

/* out = the forward's output again, from inp and the statistics the forward saved (S rows,
 * S = s->splits; eval caches have one): the same scale and shift in float, so the same bits.
 * Used to recompute a fused BN + ReLU output in the backward instead of keeping it. */
static void forward_saved_block(void *ctx, int task, int thread) {
    (void)thread;
    const BnJob *jb = ctx;
    const BatchNormSize *s = jb->s;
    const int S = s->splits, C = s->C;
    int c0, cb = block_channels(s, task, &c0);
    float scale[MAX_BLOCK], shift[MAX_BLOCK];
    for (int sp = 0; sp < S; sp++) {
        for (int j = 0; j < cb; j++) {
            int c = c0 + j;
            float m = jb->mean_in[sp * C + c];
            scale[j] = (jb->weight ? jb->weight[c] : 1.0f) * jb->invstd_in[sp * C + c];
            shift[j] = (jb->bias ? jb->bias[c] : 0.0f) - m * scale[j];
        }
        split_affine(jb->out, jb->inp, NULL, scale, shift, s, S, sp, c0, cb);
    }
}

void batchnorm_forward_saved(float *out, const float *inp, const float *save_mean, const float *save_invstd,
                             const float *weight, const float *bias, const BatchNormSize *s) {
    BnJob jb = {.out = out, .inp = inp, .mean_in = save_mean, .invstd_in = save_invstd, .weight = weight,
                .bias = bias, .s = s};
    threadpool_run(block_count(s), threadpool_size(), forward_saved_block, &jb);
}

/* ------------------------------------------------------------ backward
 * For split sp (of S) and channels c0 .. c0+cb-1:
 *     sum_dy[j] = sum of dy,  sum_dy_xhat[j] = sum of dy * (x - mean) * invstd. */
static void split_dy_sums(double *sum_dy, double *sum_dy_xhat, const float *dout, const float *inp,
                          const float *mean, const float *invstd, const BatchNormSize *s, int S, int sp,
                          int c0, int cb) {
    const int C = s->C, HW = s->HW;
    const float *m = mean + sp * C + c0;
    if (HW >= PLANE_MIN) {
        for (int j = 0; j < cb; j++) {
            double a = 0, b = 0;
            for (int n = sp; n < s->N; n += S) {
                float pa, pb;
                plane_dy_sums(dout + at(s, n, c0 + j), inp + at(s, n, c0 + j), HW, m[j], &pa, &pb);
                a += pa, b += pb;
            }
            sum_dy[j] = a;
            sum_dy_xhat[j] = b * invstd[sp * C + c0 + j];
        }
        return;
    }
    const int width = cb * HW;
    double a[ROW_ELEMS] = {0}, b[ROW_ELEMS] = {0};
    float me[ROW_ELEMS];
    for (int j = 0; j < cb; j++)
        for (int i = 0; i < HW; i++) me[j * HW + i] = m[j];
    for (int n = sp; n < s->N; n += S) {
        const float *x = inp + at(s, n, c0), *dy = dout + at(s, n, c0);
        for (int e = 0; e < width; e++) {
            a[e] += dy[e];
            b[e] += dy[e] * (x[e] - me[e]);
        }
    }
    for (int j = 0; j < cb; j++) {
        double sa = 0, sb = 0;
        for (int i = 0; i < HW; i++) sa += a[j * HW + i], sb += b[j * HW + i];
        sum_dy[j] = sa;
        sum_dy_xhat[j] = sb * invstd[sp * C + c0 + j];
    }
}

/* dx = k * dy - shift - slope * (x - mean) for split sp and channels c0 .. c0+cb-1. */
static void split_dx(float *dinp, const float *dout, const float *inp, const float *m, const float *k,
                     const float *shift, const float *slope, const BatchNormSize *s, int S, int sp, int c0,
                     int cb) {
    const int HW = s->HW;
    if (HW >= PLANE_MIN) {
        for (int n = sp; n < s->N; n += S)
            for (int j = 0; j < cb; j++) {
                const float *x = inp + at(s, n, c0 + j), *dy = dout + at(s, n, c0 + j);
                float *dx = dinp + at(s, n, c0 + j);
                const float kj = k[j], sh = shift[j], sl = slope[j], mj = m[j];
                int i = 0;
                for (; i + VEC_WIDTH <= HW; i += VEC_WIDTH)
                    vec_store(dx + i, kj * vec_load(dy + i) - sh - sl * (vec_load(x + i) - mj));
                for (; i < HW; i++) dx[i] = kj * dy[i] - sh - sl * (x[i] - mj);
            }
        return;
    }
    const int width = cb * HW;
    float ke[ROW_ELEMS], she[ROW_ELEMS], sle[ROW_ELEMS], me[ROW_ELEMS];
    for (int j = 0; j < cb; j++)
        for (int i = 0; i < HW; i++) {
            int e = j * HW + i;
            ke[e] = k[j], she[e] = shift[j], sle[e] = slope[j], me[e] = m[j];
        }
    for (int n = sp; n < s->N; n += S) {
        const float *x = inp + at(s, n, c0), *dy = dout + at(s, n, c0);
        float *dx = dinp + at(s, n, c0);
        for (int e = 0; e < width; e++) dx[e] = ke[e] * dy[e] - she[e] - sle[e] * (x[e] - me[e]);
    }
}

/* One channel block of the backward (see backward below). */
static void backward_block(void *ctx, int task, int thread) {
    (void)thread;
    const BnJob *jb = ctx;
    const BatchNormSize *s = jb->s;
    float *dinp = jb->out, *dweight = jb->dweight, *dbias = jb->dbias;
    const float *dout = jb->dout, *inp = jb->inp, *save_mean = jb->mean_in, *save_invstd = jb->invstd_in;
    const float *weight = jb->weight;
    const int training = jb->training;
    const int C = s->C, S = training ? s->splits : 1;
    const double count = (double)(s->N / S) * s->HW;
    const int need_sums = training || dweight || dbias;
    int c0, cb = block_channels(s, task, &c0);
    if (s->relu && jb->relu_out && dinp) {
        /* through the fused ReLU first, in place in dinp: the block's values stay in cache */
        mask_block(dinp, dout, jb->relu_out, s, c0, cb);
        dout = dinp;
    }
    double dw[MAX_BLOCK] = {0}, db[MAX_BLOCK] = {0};
    for (int sp = 0; sp < S; sp++) {
        double a[MAX_BLOCK] = {0}, b[MAX_BLOCK] = {0};
        if (need_sums) split_dy_sums(a, b, dout, inp, save_mean, save_invstd, s, S, sp, c0, cb);
        for (int j = 0; j < cb; j++) db[j] += a[j], dw[j] += b[j];
        if (!dinp) continue;
        float k[MAX_BLOCK], shift[MAX_BLOCK], slope[MAX_BLOCK];
        for (int j = 0; j < cb; j++) {
            int c = c0 + j;
            float invstd = save_invstd[sp * C + c];
            k[j] = (weight ? weight[c] : 1.0f) * invstd;
            /* train: dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) with
             * xhat = (x - mean) * invstd; eval: the statistics are constants, dx = k * dy */
            shift[j] = training ? (float)(k[j] * (a[j] / count)) : 0.0f;
            slope[j] = training ? (float)(k[j] * invstd * (b[j] / count)) : 0.0f;
        }
        /* dinp may alias dout: each value is read just before it is overwritten, and the
         * sums above were taken over this split's values first */
        split_dx(dinp, dout, inp, save_mean + sp * C + c0, k, shift, slope, s, S, sp, c0, cb);
    }
    for (int j = 0; j < cb; j++) {
        if (dweight) dweight[c0 + j] += (float)dw[j];
        if (dbias) dbias[c0 + j] += (float)db[j];
    }
}

/* The three backward entry points in one: dinp when non-NULL (overwritten), dweight / dbias
 * when non-NULL (accumulated).  In train mode the parameter gradients are by-products of the
 * input gradient's sums, which is why batchnorm_backward exists.  Tasks are channel blocks. */
static void backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *relu_out,
                     const float *inp, const float *save_mean, const float *save_invstd, const float *weight,
                     const BatchNormSize *s, int training) {
    BnJob jb = {.out = dinp, .dweight = dweight, .dbias = dbias, .dout = dout, .relu_out = relu_out, .inp = inp,
                .mean_in = save_mean, .invstd_in = save_invstd, .weight = weight, .s = s,
                .training = training};
    threadpool_run(block_count(s), threadpool_size(), backward_block, &jb);
}

void batchnorm_backward_input(float *dinp, const float *dout, const float *relu_out, const float *inp,
                              const float *save_mean, const float *save_invstd,
                              const float *weight, const BatchNormSize *s, int training) {
    backward(dinp, NULL, NULL, dout, relu_out, inp, save_mean, save_invstd, weight, s, training);
}

void batchnorm_backward_params(float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *save_mean, const float *save_invstd,
                               const BatchNormSize *s, int training) {
    backward(NULL, dweight, dbias, dout, NULL, inp, save_mean, save_invstd, NULL, s, training);
}

void batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *relu_out,
                        const float *inp, const float *save_mean, const float *save_invstd,
                        const float *weight, const BatchNormSize *s, int training) {
    backward(dinp, dweight, dbias, dout, relu_out, inp, save_mean, save_invstd, weight, s, training);
}
