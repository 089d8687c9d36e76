/* core/moco.c: queue, InfoNCE, momentum update, shuffling (see moco.h). */
#include "gemm.h"
#include "moco.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "threads.h"

void moco_queue_init(float *queue, int dim, int K, Rng *rng) {
    for (int64_t i = 0; i < (int64_t)dim * K; i++) queue[i] = rng_normal(rng);
    for (int j = 0; j < K; j++) {
        double ss = 0;
        for (int d = 0; d < dim; d++) ss += (double)queue[(int64_t)d * K + j] * queue[(int64_t)d * K + j];
        float denom = (float)fmax(sqrt(ss), 1e-12);
        for (int d = 0; d < dim; d++) queue[(int64_t)d * K + j] /= denom;
    }
}

int moco_queue_enqueue(float *queue, const float *keys, int dim, int K, int ptr, int N) {
    if (N <= 0 || K % N != 0)
        return moco_error("queue: K = %d must be a multiple of the number of keys per step (%d); "
                          "choose --moco-k or --batch-size so that it is", K, N);
    if (ptr < 0 || ptr >= K || ptr % N != 0)
        return moco_error("queue: pointer %d is not a multiple of %d within K = %d", ptr, N, K);
    /* queue[:, ptr:ptr+N] = keys^T  (dim, N) */
    for (int d = 0; d < dim; d++) {
        float *row = queue + (int64_t)d * K + ptr;
        for (int i = 0; i < N; i++) row[i] = keys[(int64_t)i * dim + d];
    }
    return (ptr + N) % K;
}

/* One row of the contrastive logits (see moco_infonce); rows are independent, so the pool
 * takes them in ranges and the per-row results are summed afterwards in row order. */
typedef struct InfoNceJob {
    float *logits;
    const float *q, *k;
    double *row_loss;
    int *row_rank; /* logits greater than the positive one */
    int N, dim, L, want_grad, tasks;
    float T;
} InfoNceJob;

static void infonce_rows(void *ctx, int task, int thread) {
    (void)thread;
    const InfoNceJob *j = ctx;
    const int L = j->L, dim = j->dim, N = j->N;
    const float T = j->T;
    long i0, i1;
    threadpool_split(N, j->tasks, task, &i0, &i1);
    for (long i = i0; i < i1; i++) {
        float *row = j->logits + (int64_t)i * L;
        /* l_pos = q_i . k_i (einsum 'nc,nc->n') */
        float pos = 0;
        for (int d = 0; d < dim; d++) pos += j->q[(int64_t)i * dim + d] * j->k[(int64_t)i * dim + d];
        row[0] = pos;
        /* logits /= T, as the official code divides the concatenated logits */
        float maxv = -INFINITY;
        for (int c = 0; c < L; c++) {
            row[c] /= T;
            if (row[c] > maxv) maxv = row[c];
        }
        int greater = 0;
        for (int c = 1; c < L; c++) greater += row[c] > row[0];
        j->row_rank[i] = greater;
        double sum = 0;
        for (int c = 0; c < L; c++) sum += exp((double)row[c] - maxv);
        double lse = maxv + log(sum);
        j->row_loss[i] = lse - row[0];
        if (j->want_grad) { /* d loss / d logits = (softmax - onehot(0)) / N, in place */
            for (int c = 0; c < L; c++) row[c] = (float)(exp((double)row[c] - lse) / N);
            row[0] -= 1.0f / (float)N;
        }
    }
}

int moco_infonce(InfoNceResult *out, float *logits, float *dq, const float *q, const float *k,
                 const float *queue, int N, int dim, int K, float T) {
    if (N <= 0 || dim <= 0 || K < 0 || !(T > 0))
        return moco_error("infonce: invalid sizes N=%d dim=%d K=%d or temperature %g", N, dim, K, T);
    const int L = K + 1;
    double *row_loss = malloc((size_t)N * sizeof *row_loss);
    int *row_rank = malloc((size_t)N * sizeof *row_rank);
    if (!row_loss || !row_rank) {
        free(row_loss), free(row_rank);
        return moco_error("infonce: out of memory for %d rows", N);
    }
    /* l_neg (N, K) = q (N, dim) @ queue (dim, K), written into columns 1..K of logits */
    if (K > 0)
        moco_sgemm(0, 0, N, K, dim, 1.0f, q, dim, queue, K, 0.0f,
                    logits + 1, L);
    InfoNceJob j = {.logits = logits, .q = q, .k = k, .row_loss = row_loss, .row_rank = row_rank, .N = N,
                    .dim = dim, .L = L, .want_grad = dq != NULL, .T = T};
    j.tasks = N < 4 * threadpool_size() ? N : 4 * threadpool_size();
    threadpool_run(j.tasks, threadpool_size(), infonce_rows, &j);
    double loss = 0;
    int top1 = 0, top5 = 0;
    for (int i = 0; i < N; i++) {
        loss += row_loss[i];
        top1 += row_rank[i] < 1;
        top5 += row_rank[i] < 5;
    }
    free(row_loss), free(row_rank);
    out->loss = (float)(loss / N);
    out->acc1 = 100.0f * (float)top1 / (float)N;
    out->acc5 = 100.0f * (float)top5 / (float)N;
    if (dq) {
        /* dq = (dlogits[:, 0] * k + dlogits[:, 1:] @ queue^T) / T */
        for (int i = 0; i < N; i++) {
            float g0 = logits[(int64_t)i * L];
            for (int d = 0; d < dim; d++) dq[(int64_t)i * dim + d] = g0 * k[(int64_t)i * dim + d];
        }
        if (K > 0)
            moco_sgemm(0, 1, N, dim, K, 1.0f, logits + 1, L, queue, K,
                        1.0f, dq, dim);
        for (int64_t i = 0; i < (int64_t)N * dim; i++) dq[i] /= T;
    }
    return 0;
}

/* PyTorch computes param_k * m and param_q * (1 - m) as two tensors and adds them: three
 * roundings.  Contraction into an FMA would round once and drift from the reference. */
__attribute__((optimize("fp-contract=off")))
void moco_momentum_update(float *theta_k, const float *theta_q, int64_t n, double m) {
    /* m is a Python float in the reference: both factors are computed in double and then
     * rounded to float, as PyTorch does with a scalar multiplying a float tensor. */
    const float mk = (float)m;
    const float mq = (float)(1.0 - m);
    for (int64_t i = 0; i < n; i++) {
        float a = theta_k[i] * mk;
        float b = theta_q[i] * mq;
        theta_k[i] = a + b;
    }
}

void moco_shuffle_indices(int64_t *perm, int64_t *inverse, int64_t N, Rng *rng) {
    rng_permutation(rng, perm, N);
    for (int64_t i = 0; i < N; i++) inverse[perm[i]] = i;
}

void moco_gather_rows(float *out, const float *in, const int64_t *index, int64_t N, int64_t row_size) {
    for (int64_t i = 0; i < N; i++)
        memcpy(out + i * row_size, in + index[i] * row_size, (size_t)row_size * sizeof(float));
}
