/* core/moco.h: the Momentum Contrast primitives (He et al. 2020; the official moco/builder.py).
 *
 *  - the key queue: a (dim, K) matrix whose columns are L2-normalised keys, as the official
 *    `queue` buffer (so checkpoints keep its name and shape), with a write pointer;
 *  - the InfoNCE loss: logits = [q.k+, q @ queue] / T, cross-entropy with label 0, mean over
 *    the batch; gradient with respect to q only (keys and queue carry no gradient);
 *  - the momentum update of the key encoder over whole parameter blocks;
 *  - batch shuffle / unshuffle permutations for shuffling BN;
 *  - the two baselines of the MoCo paper's Fig. 2 and 3: the end-to-end loss over the keys of
 *    the batch (gradients to q and k), and the memory bank of Wu et al. 2018 (one stored
 *    feature per training sample, negatives drawn from it, rows updated with a momentum). */
#ifndef MOCO_MOCO_H
#define MOCO_MOCO_H

#include <stdint.h>

#include "rng.h"

/* queue (dim, K) = columns of N(0,1) noise, each normalised to unit length (the official
 * init: randn(dim, K) then F.normalize(dim=0)). */
void moco_queue_init(float *queue, int dim, int K, Rng *rng);

/* Writes keys (N, dim) into columns [ptr, ptr + N) of queue (dim, K) and returns the new
 * pointer (ptr + N) mod K, or -1 (with a message) unless K is a multiple of N and ptr is a
 * multiple of N, as the official code asserts. */
int moco_queue_enqueue(float *queue, const float *keys, int dim, int K, int ptr, int N);

typedef struct InfoNceResult {
    float loss;      /* mean cross-entropy */
    float acc1;      /* % of rows whose positive logit is the largest (top-1), as the official
                      * accuracy(): counted as fewer than 1 logit strictly greater */
    float acc5;      /* % with fewer than 5 logits strictly greater */
} InfoNceResult;

/* q, k (N, dim) normalised; queue (dim, K).  logits (N, 1 + K) receives the scaled logits
 * (the caller's buffer; it is then overwritten by d loss / d logits when dq != NULL).
 * dq (N, dim) = d loss / d q, or NULL to skip the gradient. */
int moco_infonce(InfoNceResult *out, float *logits, float *dq, const float *q, const float *k,
                 const float *queue, int N, int dim, int K, float T);

/* theta_k = theta_k * m + theta_q * (1 - m), rounded as PyTorch's separate mul/mul/add. */
void moco_momentum_update(float *theta_k, const float *theta_q, int64_t n, double m);

/* perm (N) = a random permutation (the shuffle); inverse (N) = its inverse (the unshuffle). */
void moco_shuffle_indices(int64_t *perm, int64_t *inverse, int64_t N, Rng *rng);

/* Applying perm / inverse to a batch: tensor_gather_rows_ (core/tensor.h). */

/* ---- end-to-end (the paper's Fig. 2a): the keys come from the query encoder, with gradients,
 * and the dictionary is the batch.  logits (N, N) = q @ k^T / T, cross-entropy with label i
 * for row i (the positive is on the diagonal, the other N - 1 keys are the negatives), mean
 * over the batch.  logits is the caller's buffer (overwritten by d loss / d logits when a
 * gradient is asked for); dq, dk (N, dim) = d loss / d q and d loss / d k, or both NULL.
 * N must be at least 2 (a batch of one has no negative). */
int moco_infonce_batch(InfoNceResult *out, float *logits, float *dq, float *dk, const float *q, const float *k,
                       int N, int dim, float T);

/* ---- memory bank (Wu et al. 2018, as the MoCo paper's Fig. 2b baseline).
 * bank (M, dim): one feature per training sample.  index (N, 1 + K): row i holds the bank row
 * of sample i's positive (its own stored feature) in column 0 and K negatives after it, as
 * moco_bank_sample draws them.  logits (N, 1 + K) = [q_i . bank[index[i][j]]] / T,
 * cross-entropy with label 0 (InfoNCE, as the MoCo paper uses for all three mechanisms);
 * dq (N, dim) = d loss / d q or NULL (the bank carries no gradient).  Indices must lie in
 * [0, M) (checked). */
int moco_infonce_bank(InfoNceResult *out, float *logits, float *dq, const float *q, const float *bank,
                      const int64_t *index, int N, int dim, int K, int64_t M, float T);

/* index (N, 1 + K): column 0 = positives[i], columns 1..K = uniform draws in [0, M) with
 * replacement, row by row (rng_below; the sample itself may be drawn, as in Wu et al.'s
 * uniform AliasMethod).  M must be in [1, 2^32). */
int moco_bank_sample(int64_t *index, const int64_t *positives, int N, int K, int64_t M, Rng *rng);

/* bank[index[i]] = normalize(bank[index[i]] * m + q_i * (1 - m)) for the N rows of q (N, dim),
 * Wu et al.'s update (lemniscate.pytorch's NCEAverage: mul_(m), add_(x * (1 - m)), divide by
 * the L2 norm).  Every new row is computed from the bank as it was before the call, then
 * written in order (a sample twice in the batch: the last row wins, as index_copy_). */
int moco_bank_update(float *bank, const float *q, const int64_t *index, int N, int dim, int64_t M, double m);

#endif
