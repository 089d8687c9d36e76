/* core/moco.h: the Momentum Contrast primitives (He et al. 2020; the official moco/builder.py).
 *
 *  - the key queue: a (dim, K) matrix whose columns are L2-normalised keys, as the official
 *    `queue` buffer (so checkpoints keep its name and shape), with a write pointer;
 *  - the InfoNCE loss: logits = [q.k+, q @ queue] / T, cross-entropy with label 0, mean over
 *    the batch; gradient with respect to q only (keys and queue carry no gradient);
 *  - the momentum update of the key encoder over whole parameter blocks;
 *  - batch shuffle / unshuffle permutations for shuffling BN. */
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

/* out[i] = in[index[i]] for rows of row_size floats (out must not alias in). */
void moco_gather_rows(float *out, const float *in, const int64_t *index, int64_t N, int64_t row_size);

#endif
