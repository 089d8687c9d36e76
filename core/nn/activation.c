/* core/nn/activation.c: ReLU, the residual join out = relu(a + b), and the plain sum
 * a += b, vectorised (nn/vec.h) and split over the thread pool in blocks of
 * ELEMENTWISE_BLOCK values.
 *
 * A value that is not > 0 (zero, negative, NaN) gives 0 in the forward, and its gradient is
 * 0, as the comparison is written; the mask comes from the output, which the forward
 * leaves > 0 exactly where the input was. */
#include "nn/nn.h"
#include "nn/vec.h"
#include "threads.h"

/* Values per task: large enough that a task outweighs its hand-out (about a microsecond),
 * small enough that a 2-core machine gets several tasks per layer. */
#define ELEMENTWISE_BLOCK (64 * 1024)

typedef struct ReluJob {
    float *out;
    const float *inp, *dout, *other;
    size_t n;
} ReluJob;

static void block_range(const ReluJob *j, int task, size_t *lo, size_t *hi) {
    *lo = (size_t)task * ELEMENTWISE_BLOCK;
    *hi = *lo + ELEMENTWISE_BLOCK < j->n ? *lo + ELEMENTWISE_BLOCK : j->n;
}

static int block_count(size_t n) { return (int)((n + ELEMENTWISE_BLOCK - 1) / ELEMENTWISE_BLOCK); }

static void relu_forward_task(void *ctx, int task, int thread) {
    (void)thread;
    const ReluJob *j = ctx;
    size_t i, hi;
    block_range(j, task, &i, &hi);
    const vecf zero = {0};
    for (; i + VEC_WIDTH <= hi; i += VEC_WIDTH) {
        vecf x = vec_load(j->inp + i);
        vec_store(j->out + i, vec_select(x > zero, x));
    }
    for (; i < hi; i++) j->out[i] = j->inp[i] > 0.0f ? j->inp[i] : 0.0f;
}

void relu_forward(float *out, const float *inp, size_t n) {
    ReluJob j = {.out = out, .inp = inp, .n = n};
    threadpool_run(block_count(n), threadpool_size(), relu_forward_task, &j);
}

/* here j->inp is the forward's output (the mask) */
static void relu_backward_task(void *ctx, int task, int thread) {
    (void)thread;
    const ReluJob *j = ctx;
    size_t i, hi;
    block_range(j, task, &i, &hi);
    const vecf zero = {0};
    for (; i + VEC_WIDTH <= hi; i += VEC_WIDTH)
        vec_store(j->out + i, vec_select(vec_load(j->inp + i) > zero, vec_load(j->dout + i)));
    for (; i < hi; i++) j->out[i] = j->inp[i] > 0.0f ? j->dout[i] : 0.0f;
}

void relu_backward_input(float *dinp, const float *dout, const float *out, size_t n) {
    ReluJob j = {.out = dinp, .inp = out, .dout = dout, .n = n};
    threadpool_run(block_count(n), threadpool_size(), relu_backward_task, &j);
}

/* out = relu(inp + other); out may alias inp */
static void add_relu_task(void *ctx, int task, int thread) {
    (void)thread;
    const ReluJob *j = ctx;
    size_t i, hi;
    block_range(j, task, &i, &hi);
    const vecf zero = {0};
    for (; i + VEC_WIDTH <= hi; i += VEC_WIDTH) {
        vecf x = vec_load(j->inp + i) + vec_load(j->other + i);
        vec_store(j->out + i, vec_select(x > zero, x));
    }
    for (; i < hi; i++) {
        float x = j->inp[i] + j->other[i];
        j->out[i] = x > 0.0f ? x : 0.0f;
    }
}

void add_relu_forward(float *out, const float *a, const float *b, size_t n) {
    ReluJob j = {.out = out, .inp = a, .other = b, .n = n};
    threadpool_run(block_count(n), threadpool_size(), add_relu_task, &j);
}

static void add_into_task(void *ctx, int task, int thread) {
    (void)thread;
    const ReluJob *j = ctx;
    size_t lo, hi;
    block_range(j, task, &lo, &hi);
    vec_add_into(j->out + lo, j->other + lo, hi - lo);
}

void add_into(float *a, const float *b, size_t n) {
    ReluJob j = {.out = a, .other = b, .n = n};
    threadpool_run(block_count(n), threadpool_size(), add_into_task, &j);
}
