/* core/knn.c: weighted kNN over cosine similarities (see knn.h). */
#include "gemm.h"
#include "knn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* A min-heap of (similarity, index) pairs keeps the k largest similarities seen. */
typedef struct Neighbour {
    float sim;
    int64_t index;
} Neighbour;

static void sift_down(Neighbour *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].sim < h[m].sim) m = l;
        if (r < n && h[r].sim < h[m].sim) m = r;
        if (m == i) return;
        Neighbour t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static int top_k(Neighbour *heap, const float *sims, int64_t N, int k) {
    int n = 0;
    for (int64_t j = 0; j < N; j++) {
        float s = sims[j];
        if (n < k) {
            heap[n].sim = s;
            heap[n].index = j;
            n++;
            if (n == k)
                for (int i = k / 2 - 1; i >= 0; i--) sift_down(heap, k, i);
        } else if (s > heap[0].sim) {
            heap[0].sim = s;
            heap[0].index = j;
            sift_down(heap, k, 0);
        }
    }
    return n;
}

/* Rows of similarities per chunk so that a chunk holds at most 64 MiB. */
static int64_t chunk_rows(int64_t M, int64_t N) {
    int64_t chunk = (int64_t)(((size_t)64 << 20) / sizeof(float) / (size_t)N);
    if (chunk < 1) chunk = 1;
    if (chunk > M) chunk = M > 0 ? M : 1;
    return chunk;
}

/* The part both classifiers share: for each query row (in chunks of chunk_rows rows, one
 * sgemm per chunk), the k most similar bank rows, handed to visit(ctx, row, heap, n) in heap
 * order.  Returns 0, or -1 naming `fn` when memory runs out or visit fails. */
typedef int (*NeighbourVisit)(void *ctx, int64_t row, Neighbour *heap, int n);

static int scan_neighbours(const char *fn, const float *query, const float *bank, int64_t M, int64_t N, int D,
                           int k, NeighbourVisit visit, void *ctx) {
    int64_t chunk = chunk_rows(M, N);
    float *sims = malloc((size_t)chunk * (size_t)N * sizeof(float));
    Neighbour *heap = malloc((size_t)k * sizeof *heap);
    int rc = 0;
    if (!sims || !heap) {
        rc = moco_error("%s: out of memory", fn);
        goto done;
    }
    for (int64_t start = 0; start < M && rc == 0; start += chunk) {
        int64_t rows = M - start < chunk ? M - start : chunk;
        /* sims (rows, N) = query (rows, D) @ bank^T */
        moco_sgemm(0, 1, (int)rows, (int)N, D, 1.0f, query + start * D, D, bank, D, 0.0f, sims, (int)N);
        for (int64_t r = 0; r < rows && rc == 0; r++) rc = visit(ctx, start + r, heap, top_k(heap, sims + r * N, N, k));
    }
done:
    free(sims);
    free(heap);
    return rc;
}

typedef struct PredictContext {
    int64_t *pred;
    const int64_t *bank_labels;
    double *scores;
    float T;
    int classes, topn;
} PredictContext;

/* Votes weighted by exp(sim / T); classes ranked by score, ties to the smaller index. */
static int predict_row(void *ctx, int64_t row, Neighbour *heap, int n) {
    PredictContext *c = ctx;
    memset(c->scores, 0, (size_t)c->classes * sizeof *c->scores);
    for (int i = 0; i < n; i++) c->scores[c->bank_labels[heap[i].index]] += exp((double)(heap[i].sim / c->T));
    int64_t *out = c->pred + row * c->topn;
    for (int t = 0; t < c->topn; t++) {
        int best = -1;
        for (int cl = 0; cl < c->classes; cl++) {
            int taken = 0;
            for (int u = 0; u < t; u++) taken |= out[u] == cl;
            if (!taken && (best < 0 || c->scores[cl] > c->scores[best])) best = cl;
        }
        out[t] = best;
    }
    return 0;
}

int knn_predict(int64_t *pred, const float *query, const float *bank, const int64_t *bank_labels, int64_t M,
                int64_t N, int D, int k, float T, int classes, int topn) {
    if (M < 0 || N <= 0 || D <= 0 || k <= 0 || classes <= 0 || topn <= 0 || !(T > 0))
        return moco_error("knn: invalid arguments (M=%lld N=%lld D=%d k=%d classes=%d topn=%d T=%g)",
                          (long long)M, (long long)N, D, k, classes, topn, T);
    if (N > INT32_MAX) return moco_error("knn: feature bank of %lld rows is too large", (long long)N);
    for (int64_t j = 0; j < N; j++)
        if (bank_labels[j] < 0 || bank_labels[j] >= classes)
            return moco_error("knn: bank label %lld at row %lld is outside [0, %d)", (long long)bank_labels[j], (long long)j + 1,
                              classes);
    if (k > N) k = (int)N;
    if (topn > classes) topn = classes;
    PredictContext c = {pred, bank_labels, malloc((size_t)classes * sizeof(double)), T, classes, topn};
    if (!c.scores) return moco_error("knn: out of memory");
    int rc = scan_neighbours("knn", query, bank, M, N, D, k, predict_row, &c);
    free(c.scores);
    return rc;
}

/* Most similar first; equal similarities by ascending index (a deterministic order). */
static int by_similarity(const void *a, const void *b) {
    const Neighbour *x = a, *y = b;
    if (x->sim != y->sim) return x->sim > y->sim ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

typedef struct NeighboursContext {
    int64_t *index;
    float *sim;
    int k;
} NeighboursContext;

static int neighbours_row(void *ctx, int64_t row, Neighbour *heap, int n) {
    NeighboursContext *c = ctx;
    qsort(heap, (size_t)n, sizeof *heap, by_similarity);
    for (int i = 0; i < n; i++) {
        c->index[row * c->k + i] = heap[i].index;
        c->sim[row * c->k + i] = heap[i].sim;
    }
    return 0;
}

int knn_neighbours(int64_t *index, float *sim, const float *query, const float *bank, int64_t M, int64_t N, int D,
                   int k) {
    if (M < 0 || N <= 0 || D <= 0 || k <= 0 || k > N)
        return moco_error("knn_neighbours: invalid arguments (M=%lld N=%lld D=%d k=%d; need 1 <= k <= N)",
                          (long long)M, (long long)N, D, k);
    if (N > INT32_MAX) return moco_error("knn_neighbours: feature bank of %lld rows is too large", (long long)N);
    NeighboursContext c = {index, sim, k};
    return scan_neighbours("knn_neighbours", query, bank, M, N, D, k, neighbours_row, &c);
}
