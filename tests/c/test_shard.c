/* tests/c/test_shard.c: dataset sharding per rank in the loader (LoaderOptions.shard_rank,
 * shard_count; see core/data/loader.h), as torch's DistributedSampler does.
 *
 * The property checked: rank r's batch b, row j, is exactly (index, label, both crops,
 * bitwise) the row at epoch position b*B*N + r + N*j (modulo n: the wrap-around padding
 * without drop_last) of one loader with batch_size B*N, the same seed and a random
 * augmentation; every rank has the same number of batches; together the ranks cover every
 * row of the single loader's batches.  Also with on_error = skip, and bad options. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "error.h"

/* ------------------------------------------------------------ a dataset
 * Sample i: a 6x5 RGB image with value (i * 11 + x * 5 + y * 3 + c * 17) mod 256, label
 * i mod 4.  With `fail_mod` > 0, samples with i % fail_mod == 2 fail to decode. */

typedef struct GridDataset {
    Dataset base;
    int fail_mod;
} GridDataset;

static int grid_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    const GridDataset *g = (const GridDataset *)ds;
    if (g->fail_mod > 0 && index % g->fail_mod == 2) return moco_error("grid sample %lld is broken", (long long)index);
    if (image_alloc(out, 6, 5, 3)) return -1;
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 6; x++)
            for (int c = 0; c < 3; c++)
                out->data[(y * 6 + x) * 3 + c] = (uint8_t)((index * 11 + x * 5 + y * 3 + c * 17) % 256);
    *label = index % 4;
    return 0;
}

static int64_t grid_label(const Dataset *ds, int64_t index) {
    (void)ds;
    return index % 4;
}

static const DatasetOps grid_ops = {.get = grid_get, .label = grid_label};

static Dataset *grid_new(int64_t n, int fail_mod) {
    GridDataset *g = (GridDataset *)dataset_alloc(sizeof *g, &grid_ops, "Grid");
    const char *names[4] = {"a", "b", "c", "d"};
    dataset_set_classes(&g->base, 4, names);
    g->base.length = n;
    g->fail_mod = fail_mod;
    return &g->base;
}

/* Random crops, flips and colour changes: every row depends on its sample's stream. */
static Transform *random_aug(void) {
    const double scale[2] = {0.3, 1.0}, ratio[2] = {0.75, 4.0 / 3.0}, jitter[2] = {0.5, 1.5}, hue[2] = {-0.2, 0.2};
    Transform *items[4] = {transform_random_resized_crop(4, 4, scale, ratio), transform_random_horizontal_flip(0.5),
                           transform_color_jitter(jitter, jitter, jitter, hue), transform_to_tensor()};
    Transform *t = transform_compose(items, 4);
    for (int i = 0; i < 4; i++) transform_free(items[i]);
    return t;
}

/* ------------------------------------------------------------ one epoch, row by row */

#define ROW 48 /* 3 x 4 x 4 floats per crop */

typedef struct Rows {
    int64_t n;                 /* rows */
    int64_t *index, *batch_of;
    float *q, *k, *label;
    int64_t batches;
} Rows;

static void rows_free(Rows *r) {
    free(r->index);
    free(r->batch_of);
    free(r->q);
    free(r->k);
    free(r->label);
    memset(r, 0, sizeof *r);
}

/* Epoch `epoch` of loader l (set with loader_set_epoch), every row in order. */
static int take_epoch(Loader *l, int64_t epoch, Rows *out, int64_t cap) {
    memset(out, 0, sizeof *out);
    out->index = malloc((size_t)cap * sizeof *out->index);
    out->batch_of = malloc((size_t)cap * sizeof *out->batch_of);
    out->q = malloc((size_t)cap * ROW * sizeof(float));
    out->k = malloc((size_t)cap * ROW * sizeof(float));
    out->label = malloc((size_t)cap * sizeof(float));
    if (loader_set_epoch(l, epoch)) return -1;
    LoaderBatch b;
    int rc;
    while ((rc = loader_next(l, &b)) == 1) {
        int ok = b.images && b.images_k && b.images->numel == b.count * ROW && out->n + b.count <= cap;
        if (ok) {
            memcpy(out->q + out->n * ROW, b.images->data, (size_t)(b.count * ROW) * sizeof(float));
            memcpy(out->k + out->n * ROW, b.images_k->data, (size_t)(b.count * ROW) * sizeof(float));
            memcpy(out->label + out->n, b.labels->data, (size_t)b.count * sizeof(float));
            for (int64_t j = 0; j < b.count; j++) {
                out->index[out->n + j] = b.indices[j];
                out->batch_of[out->n + j] = out->batches;
            }
            out->n += b.count;
            out->batches++;
        }
        tensor_free(b.images);
        tensor_free(b.images_k);
        tensor_free(b.labels);
        if (!ok) return moco_error("unexpected batch shape or too many rows");
    }
    return rc;
}

static LoaderOptions opts(int64_t batch, int workers, int shuffle, int drop_last, int rank, int count) {
    LoaderOptions o = {.batch_size = batch, .workers = workers, .prefetch = 2, .shuffle = shuffle,
                       .drop_last = drop_last, .seed = 77, .on_error = LOADER_RAISE,
                       .shard_rank = rank, .shard_count = count};
    return o;
}

/* Checks the ranks against the single loader for one configuration; returns the number of
 * rows that differ (0: all good), with a description in why. */
static int64_t compare(Dataset *ds, Transform *t, int64_t B, int N, int shuffle, int drop_last, LoaderOnError on_error,
                       char *why, size_t whysize) {
    int64_t n = ds->length, G = B * N;
    int64_t want_batches = drop_last ? n / G : (n + G - 1) / G;
    int64_t per_rank = drop_last ? n / N : (n + N - 1) / N;
    LoaderOptions o1 = opts(G, 0, shuffle, drop_last, 0, 0);
    o1.on_error = on_error;
    Loader *single = loader_create(ds, &o1, t, 1, LOADER_TENSORS);
    Loader *ranks[3] = {NULL, NULL, NULL};
    for (int r = 0; r < N; r++) {
        LoaderOptions o = opts(B, r % 2 ? 2 : 1, shuffle, drop_last, r, N);
        o.on_error = on_error;
        ranks[r] = loader_create(ds, &o, t, 1, LOADER_TENSORS);
    }
    int64_t bad = 0;
    snprintf(why, whysize, "ok");
    if (!single || !ranks[0] || !ranks[1] || (N == 3 && !ranks[2])) {
        snprintf(why, whysize, "loader_create: %s", moco_last_error());
        bad = 1;
    }
    uint8_t *seen = calloc((size_t)n, 1);
    for (int64_t epoch = 0; epoch < 2 && !bad; epoch++) {
        Rows ref;
        if (take_epoch(single, epoch, &ref, n)) {
            snprintf(why, whysize, "single loader: %s", moco_last_error());
            bad = 1;
            rows_free(&ref);
            break;
        }
        memset(seen, 0, (size_t)n);
        for (int r = 0; r < N && !bad; r++) {
            Rows got;
            if (take_epoch(ranks[r], epoch, &got, per_rank)) {
                snprintf(why, whysize, "rank %d: %s", r, moco_last_error());
                bad = 1;
            } else if (loader_num_batches(ranks[r]) != want_batches || got.batches != want_batches ||
                       ref.batches != want_batches) {
                snprintf(why, whysize, "rank %d: %lld batches (says %lld), single %lld, expected %lld", r,
                         (long long)got.batches, (long long)loader_num_batches(ranks[r]), (long long)ref.batches,
                         (long long)want_batches);
                bad = 1;
            } else if (got.n != (drop_last ? want_batches * B : per_rank)) {
                snprintf(why, whysize, "rank %d: %lld rows, expected %lld", r, (long long)got.n,
                         (long long)(drop_last ? want_batches * B : per_rank));
                bad = 1;
            }
            for (int64_t i = 0; i < got.n && !bad; i++) {
                int64_t b = got.batch_of[i], j = i - b * B; /* local rows: all batches but the last are full */
                int64_t p = b * G + r + N * j, q = p % n;
                if (q >= ref.n) {
                    bad++;
                    continue;
                }
                int same = got.index[i] == ref.index[q] && got.label[i] == ref.label[q] &&
                           memcmp(got.q + i * ROW, ref.q + q * ROW, ROW * sizeof(float)) == 0 &&
                           memcmp(got.k + i * ROW, ref.k + q * ROW, ROW * sizeof(float)) == 0 &&
                           (p < n || !drop_last) && ref.batch_of[q] == (p < n ? b : ref.batch_of[q]);
                if (!same) {
                    if (!bad)
                        snprintf(why, whysize, "epoch %lld rank %d batch %lld row %lld: index %lld, single's position "
                                 "%lld has %lld",
                                 (long long)epoch, r, (long long)b, (long long)j, (long long)got.index[i],
                                 (long long)q, (long long)ref.index[q]);
                    bad++;
                }
                if (p < n) seen[p] = 1;
            }
            rows_free(&got);
        }
        for (int64_t q = 0; q < ref.n && !bad; q++)
            if (!seen[q]) {
                snprintf(why, whysize, "epoch %lld: the single loader's position %lld is on no rank", (long long)epoch,
                         (long long)q);
                bad = 1;
            }
        rows_free(&ref);
    }
    free(seen);
    loader_close(single);
    for (int r = 0; r < N; r++) loader_close(ranks[r]);
    return bad;
}

static void test_shard_matches_single_loader(Transform *t) {
    Dataset *ds = grid_new(23, 0);
    const int64_t batch[2] = {2, 3};
    for (int N = 2; N <= 3; N++)
        for (int bi = 0; bi < 2; bi++)
            for (int shuffle = 0; shuffle <= 1; shuffle++)
                for (int drop_last = 0; drop_last <= 1; drop_last++) {
                    char name[200], why[400];
                    int64_t bad = compare(ds, t, batch[bi], N, shuffle, drop_last, LOADER_RAISE, why, sizeof why);
                    snprintf(name, sizeof name, "%d ranks x batch %lld, shuffle %d, drop_last %d = one loader of %lld",
                             N, (long long)batch[bi], shuffle, drop_last, (long long)(batch[bi] * N));
                    CHECK(name, bad == 0, "%lld bad rows; %s", (long long)bad, why);
                }
    dataset_release(ds);
}

static void test_shard_skip(Transform *t) {
    /* Every 5th sample fails (2, 7, 12, ...): replacements too are the single loader's. */
    Dataset *ds = grid_new(23, 5);
    for (int drop_last = 0; drop_last <= 1; drop_last++) {
        char name[200], why[400];
        int64_t bad = compare(ds, t, 2, 3, 1, drop_last, LOADER_SKIP, why, sizeof why);
        snprintf(name, sizeof name, "on_error = skip, 3 ranks x batch 2, drop_last %d = one loader of 6", drop_last);
        CHECK(name, bad == 0, "%lld bad rows; %s", (long long)bad, why);
    }
    /* The same with on_error = raise fails on a rank that holds a broken sample. */
    LoaderOptions o = opts(2, 1, 0, 0, 0, 3); /* rank 0 of 3, in order: positions 0, 3 | 6, 9 | 12 ... */
    Loader *l = loader_create(ds, &o, t, 1, LOADER_TENSORS);
    LoaderBatch b;
    int rc[4] = {0};
    for (int i = 0; i < 4 && l; i++) {
        rc[i] = loader_next(l, &b);
        if (rc[i] == 1) tensor_free(b.images), tensor_free(b.images_k), tensor_free(b.labels);
    }
    CHECK("on_error = raise, rank 0 of 3: the batch holding sample 12 fails, naming it",
          l && rc[0] == 1 && rc[1] == 1 && rc[2] == -1 && rc[3] == 1 && strstr(moco_last_error(), "sample 12"),
          "rc %d %d %d %d: %s", rc[0], rc[1], rc[2], rc[3], moco_last_error());
    loader_close(l);
    dataset_release(ds);
}

static void test_shard_bad_options(void) {
    Dataset *ds = grid_new(10, 0);
    struct {
        int rank, count, drop_last;
        int64_t batch;
        const char *says;
    } cases[] = {
        {2, 2, 0, 2, "got rank 2 of count 2"},   {-1, 2, 0, 2, "got rank -1 of count 2"},
        {1, 0, 0, 2, "got rank 1 of count 0"},   {0, -3, 0, 2, "got rank 0 of count -3"},
        {0, 3, 1, 4, "10 samples, fewer than batch_size 4 times 3 shards"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        LoaderOptions o = opts(cases[i].batch, 0, 1, cases[i].drop_last, cases[i].rank, cases[i].count);
        Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
        char name[160];
        snprintf(name, sizeof name, "shard rank %d, count %d, batch %lld, drop_last %d is refused", cases[i].rank,
                 cases[i].count, (long long)cases[i].batch, cases[i].drop_last);
        CHECK(name, l == NULL && strstr(moco_last_error(), cases[i].says), "message: %s", l ? "(none)" : moco_last_error());
        loader_close(l);
    }
    /* 0 of 1 and 0 of 0 are the unsharded loader; 9 batches of 1 of rank 2 of 3 without drop_last: ceil(10/3) = 4. */
    LoaderOptions o = opts(1, 0, 1, 0, 0, 1);
    Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    CHECK("shard 0 of 1 is no sharding", l && loader_num_batches(l) == 10, "%s", l ? "wrong count" : moco_last_error());
    loader_close(l);
    o = opts(1, 0, 1, 0, 2, 3);
    l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    CHECK("rank 2 of 3 over 10 samples, batch 1: 4 batches (padded)", l && loader_num_batches(l) == 4, "%s",
          l ? "wrong count" : moco_last_error());
    loader_close(l);
    dataset_release(ds);
}

int main(void) {
    Transform *t = random_aug();
    CHECK("random augmentation builds", t != NULL, "%s", moco_last_error());
    if (t) {
        test_shard_matches_single_loader(t);
        test_shard_skip(t);
    }
    test_shard_bad_options();
    transform_free(t);
    CHECK_DONE();
}
