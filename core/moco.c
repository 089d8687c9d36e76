/* core/moco.c: queue, InfoNCE, momentum update, shuffling, and the end-to-end and memory-bank
 * baselines (see moco.h). */
#include "gemm.h"
#include "moco.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "nn/nn.h"
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

/* One row of logits (L) already holding the dot products: divides by T (as the official code
 * divides the concatenated logits), stores in *rank how many logits are strictly greater than
 * the one of column `target` (a top-k hit is rank < k, as the official accuracy()), and
 * returns the cross-entropy lse - row[target].  With grad, the row becomes d loss / d logits
 * of a mean over N rows: (softmax - onehot(target)) / N, in place. */
static double cross_entropy_row(float *row, int L, int target, float T, int N, int grad, int *rank) {
    float maxv = -INFINITY;
    for (int j = 0; j < L; j++) {
        row[j] /= T;
        if (row[j] > maxv) maxv = row[j];
    }
    int greater = 0;
    for (int j = 0; j < L; j++) greater += row[j] > row[target];
    *rank = greater;
    double sum = 0;
    for (int j = 0; j < L; j++) sum += exp((double)row[j] - maxv);
    double lse = maxv + log(sum);
    double loss = lse - row[target];
    if (grad) {
        for (int j = 0; j < L; j++) row[j] = (float)(exp((double)row[j] - lse) / N);
        row[target] -= 1.0f / (float)N;
    }
    return loss;
}

static void set_result(InfoNceResult *out, double loss, int top1, int top5, int N) {
    out->loss = (float)(loss / N);
    out->acc1 = 100.0f * (float)top1 / (float)N;
    out->acc5 = 100.0f * (float)top5 / (float)N;
}

/* Rows of the queue logits (see moco_infonce); rows are independent, so the pool takes them
 * in ranges and the per-row results are summed afterwards in row order. */
typedef struct InfoNceJob {
    float *logits;
    const float *q, *k;
    double *row_loss;
    int *row_rank;
    int N, dim, L, want_grad, tasks;
    float T;
} InfoNceJob;

static void infonce_rows(void *ctx, int task, int thread) {
    (void)thread;
    const InfoNceJob *j = ctx;
    const int L = j->L, dim = j->dim;
    long i0, i1;
    threadpool_split(j->N, j->tasks, task, &i0, &i1);
    for (long i = i0; i < i1; i++) {
        float *row = j->logits + (int64_t)i * L;
        /* l_pos = q_i . k_i (einsum 'nc,nc->n') */
        float pos = 0;
        for (int d = 0; d < dim; d++) pos += j->q[(int64_t)i * dim + d] * j->k[(int64_t)i * dim + d];
        row[0] = pos;
        j->row_loss[i] = cross_entropy_row(row, L, 0, j->T, j->N, j->want_grad, &j->row_rank[i]);
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
    set_result(out, loss, top1, top5, N);
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

int moco_infonce_batch(InfoNceResult *out, float *logits, float *dq, float *dk, const float *q, const float *k,
                       int N, int dim, float T) {
    if (N < 2)
        return moco_error("end-to-end loss: a batch of %d has no negative key (the negatives are the other keys "
                          "of the batch): use a batch of at least 2", N);
    if (dim <= 0 || !(T > 0)) return moco_error("end-to-end loss: invalid dim=%d or temperature %g", dim, T);
    if ((dq == NULL) != (dk == NULL)) return moco_error("end-to-end loss: dq and dk go together");
    /* logits (N, N) = q (N, dim) @ k^T (dim, N) */
    moco_sgemm(0, 1, N, N, dim, 1.0f, q, dim, k, dim, 0.0f, logits, N);
    double loss = 0;
    int top1 = 0, top5 = 0;
    for (int i = 0; i < N; i++) {
        int rank;
        loss += cross_entropy_row(logits + (int64_t)i * N, N, i, T, N, dq != NULL, &rank);
        top1 += rank < 1;
        top5 += rank < 5;
    }
    set_result(out, loss, top1, top5, N);
    if (dq) {
        /* G = d loss / d logits (N, N); dq = G @ k / T, dk = G^T @ q / T */
        moco_sgemm(0, 0, N, dim, N, 1.0f, logits, N, k, dim, 0.0f, dq, dim);
        moco_sgemm(1, 0, N, dim, N, 1.0f, logits, N, q, dim, 0.0f, dk, dim);
        for (int64_t i = 0; i < (int64_t)N * dim; i++) {
            dq[i] /= T;
            dk[i] /= T;
        }
    }
    return 0;
}

static int check_bank_index(const int64_t *index, int64_t n, int64_t M, const char *fn) {
    for (int64_t i = 0; i < n; i++)
        if (index[i] < 0 || index[i] >= M)
            return moco_error("%s: bank index %lld at position %lld is outside the bank's %lld rows", fn,
                              (long long)index[i], (long long)i, (long long)M);
    return 0;
}

int moco_infonce_bank(InfoNceResult *out, float *logits, float *dq, const float *q, const float *bank,
                      const int64_t *index, int N, int dim, int K, int64_t M, float T) {
    if (N <= 0 || dim <= 0 || K < 1 || M <= 0 || !(T > 0))
        return moco_error("memory-bank loss: invalid sizes N=%d dim=%d K=%d bank rows %lld or temperature %g", N,
                          dim, K, (long long)M, T);
    const int L = K + 1;
    if (check_bank_index(index, (int64_t)N * L, M, "memory-bank loss")) return -1;
    double loss = 0;
    int top1 = 0, top5 = 0;
    for (int i = 0; i < N; i++) {
        const float *qi = q + (int64_t)i * dim;
        float *row = logits + (int64_t)i * L;
        /* out = bmm(bank[index] (N, 1+K, dim), q (N, dim, 1)): the positive, then K negatives */
        for (int j = 0; j < L; j++) {
            const float *b = bank + index[(int64_t)i * L + j] * dim;
            float s = 0;
            for (int d = 0; d < dim; d++) s += qi[d] * b[d];
            row[j] = s;
        }
        int rank;
        loss += cross_entropy_row(row, L, 0, T, N, dq != NULL, &rank);
        top1 += rank < 1;
        top5 += rank < 5;
        if (dq) { /* dq_i = sum_j dlogits[i][j] * bank[index[i][j]] / T */
            float *g = dq + (int64_t)i * dim;
            for (int d = 0; d < dim; d++) g[d] = 0;
            for (int j = 0; j < L; j++) {
                const float *b = bank + index[(int64_t)i * L + j] * dim;
                float w = row[j];
                for (int d = 0; d < dim; d++) g[d] += w * b[d];
            }
            for (int d = 0; d < dim; d++) g[d] /= T;
        }
    }
    set_result(out, loss, top1, top5, N);
    return 0;
}

int moco_bank_sample(int64_t *index, const int64_t *positives, int N, int K, int64_t M, Rng *rng) {
    if (N <= 0 || K < 1) return moco_error("memory bank: invalid sizes N=%d K=%d", N, K);
    if (M < 1 || M > (int64_t)UINT32_MAX)
        return moco_error("memory bank: %lld rows: the sampler draws from 1 to 2^32 - 1 rows", (long long)M);
    if (check_bank_index(positives, N, M, "memory bank")) return -1;
    for (int i = 0; i < N; i++) {
        int64_t *row = index + (int64_t)i * (K + 1);
        row[0] = positives[i];
        for (int j = 1; j <= K; j++) row[j] = rng_below(rng, (uint32_t)M);
    }
    return 0;
}

/* As moco_momentum_update: the products and the sum rounded separately, as PyTorch's
 * mul_ / mul / add_ do. */
__attribute__((optimize("fp-contract=off")))
int moco_bank_update(float *bank, const float *q, const int64_t *index, int N, int dim, int64_t M, double m) {
    if (N <= 0 || dim <= 0) return moco_error("memory bank update: invalid sizes N=%d dim=%d", N, dim);
    if (!(m >= 0 && m <= 1)) return moco_error("memory bank update: momentum %g is not in [0, 1]", m);
    if (check_bank_index(index, N, M, "memory bank update")) return -1;
    float *rows = malloc((size_t)N * (size_t)dim * sizeof *rows);
    if (!rows) return moco_error("memory bank update: out of memory for %d x %d floats", N, dim);
    const float mk = (float)m, mq = (float)(1.0 - m);
    for (int i = 0; i < N; i++) {
        const float *old = bank + index[i] * dim;
        float *r = rows + (int64_t)i * dim;
        for (int d = 0; d < dim; d++) {
            float a = old[d] * mk;
            float b = q[(int64_t)i * dim + d] * mq;
            r[d] = a + b;
        }
    }
    /* weight_pos.div(norm): a zero row would be 0/0 there; F.normalize's eps here */
    normalize_forward(rows, NULL, rows, N, dim, 1e-12f);
    for (int i = 0; i < N; i++) memcpy(bank + index[i] * dim, rows + (int64_t)i * dim, (size_t)dim * sizeof *rows);
    free(rows);
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
