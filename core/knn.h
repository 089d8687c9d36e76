/* core/knn.h: the weighted k-nearest-neighbour classifier of the official MoCo CIFAR-10
 * demo's monitor (knn_predict): cosine similarities by one matrix product, the top-k
 * neighbours of each query, votes weighted by exp(sim / T), classes ranked by total vote. */
#ifndef MOCO_KNN_H
#define MOCO_KNN_H

#include <stdint.h>

/* query (M, D) and bank (N, D) hold L2-normalised rows; bank_labels (N) 0-based classes in
 * [0, classes).  pred (M, topn) receives the classes ranked by score, best first.  Queries
 * are processed in chunks so memory stays at chunk * N floats.  k is clamped to N.
 * Returns 0 or -1 (bad sizes, a label out of range, out of memory). */
int knn_predict(int64_t *pred, const float *query, const float *bank, const int64_t *bank_labels, int64_t M,
                int64_t N, int D, int k, float T, int classes, int topn);

/* The k nearest bank rows of each query by cosine similarity (rows L2-normalised), for
 * retrieval pictures: index (M, k) 0-based bank rows and sim (M, k) their similarities,
 * most similar first (equal similarities: the smaller index first).  k <= N.  Queries are
 * processed in chunks as above.  Returns 0 or -1. */
int knn_neighbours(int64_t *index, float *sim, const float *query, const float *bank, int64_t M, int64_t N, int D,
                   int k);

#endif
