/* core/data/loader.h: the parallel batch loader (torch.utils.data.DataLoader's job).
 *
 * Worker threads (pthreads) decode samples and run the augmentation pipeline into a small
 * ring of reusable batch buffers, `prefetch` batches ahead of the caller.  Work is handed
 * out one sample at a time, so every worker helps with the oldest unfinished batch.
 *
 * Determinism: the order of epoch e is a permutation drawn from rng_derive(seed, e,
 * LOADER_SHUFFLE_STREAM) (or 0..N-1 without shuffling), and dataset sample i gets its own
 * stream rng_derive(seed, e, i) (the two crops of TwoCrops are drawn one after the other
 * from it).  A batch therefore depends only on (seed, epoch, batch index, transform), never
 * on the number of workers or on timing.
 *
 * Sharding (torch.utils.data.DistributedSampler's job): with shard_count = N > 1, the
 * loader of rank r takes the epoch order's positions r, r + N, r + 2N, ... (order[r::N]),
 * cut into batches of batch_size B.  So the N ranks' batch b, interleaved (row j of rank r
 * at row r + N*j), is the batch b that one loader with batch_size B*N and the same seed
 * makes: same samples, same per-sample random streams, bitwise the same rows.  Every rank
 * has the same number of batches: with drop_last floor(n / (B*N)), all full; without it
 * ceil(n / (B*N)), the epoch order being padded to a multiple of N by wrapping around to
 * its start, as DistributedSampler(drop_last=False) does: a position p >= n holds sample
 * order[p % n] (a repeated sample, with its own random stream, so the same view), and the
 * last batch of a rank has ceil(n / N) - (batches - 1) * B rows (never zero).  LOADER_SKIP
 * scans the whole epoch order from the failed sample's global position, so a replacement
 * too is the one the single loader picks.
 *
 * Bad samples: with on_error = LOADER_RAISE (the default) a sample that fails (a corrupt,
 * truncated or unsupported image) fails its batch with a message naming the file.  With
 * LOADER_SKIP, a sample that fails to decode is replaced by the next sample of the epoch
 * order (wrapping around at its end) that decodes, and augmented with the random stream
 * of the sample it replaces (so it is a fresh view, not a copy of its neighbour).  Which
 * samples fail depends only on the files, so batches stay full and identical whatever the
 * number of workers.  Each failing file is read once per loader (later epochs skip it
 * without reading) and gives one warning (loader_take_warning).  Only decoding is
 * skipped: a transform that fails still fails the batch.
 *
 * Ownership: the loader owns its buffers.  loader_next hands out tensors that share a
 * slot's storage; the slot is recycled at the following loader_next (or reset), and when
 * the caller still holds a tensor on it then, the slot lets go of that storage and makes
 * a fresh buffer, so a batch the caller keeps is never overwritten.
 *
 * Threads: the loader runs `workers` threads besides the caller's; together with the BLAS
 * threads of the model they should not exceed the cores (see loader_thread_advice).
 * All functions are for one calling thread (the one that owns the loader). */
#ifndef MOCO_LOADER_H
#define MOCO_LOADER_H

#include <stdint.h>

#include "data/dataset.h"
#include "image/transform.h"
#include "tensor.h"

/* The id2 of the shuffle stream: no dataset index can take it. */
#define LOADER_SHUFFLE_STREAM UINT64_MAX
#define LOADER_MAX_WORKERS 256
#define LOADER_MAX_PREFETCH 64

typedef enum {
    LOADER_RAISE = 0,     /* a failing sample fails its batch */
    LOADER_SKIP,          /* replaced by the next sample that decodes (see above) */
} LoaderOnError;

typedef struct Loader Loader;

typedef struct LoaderOptions {
    int64_t batch_size;   /* >= 1 */
    int workers;          /* 0: everything on the calling thread, inside loader_next */
    int prefetch;         /* batches prepared ahead of the one being used, >= 1 */
    int shuffle;
    int drop_last;        /* drop the last batch when it would be smaller than batch_size */
    uint64_t seed;
    LoaderOnError on_error;
    int shard_rank;       /* this rank's shard, 0 <= shard_rank < shard_count (see above) */
    int shard_count;      /* the number of ranks; 0 or 1: no sharding */
} LoaderOptions;

/* What the workers make of a sample. */
typedef enum {
    LOADER_TENSORS,       /* the transform's (C,H,W) float result; no transform = ToTensor */
    LOADER_IMAGES,        /* the decoded Image, for a transform the caller runs (a Lua function) */
} LoaderMode;

typedef struct LoaderBatch {
    Tensor *images;       /* (n, C, H, W); the first crops with two_crops; NULL in LOADER_IMAGES mode */
    Tensor *images_k;     /* (n, C, H, W) second crops with two_crops, else NULL */
    Tensor *labels;       /* (n) 0-based class values */
    Image *raw;           /* LOADER_IMAGES mode: n images, owned by the loader until the next call
                           * (a caller may take one over by zeroing its entry), else NULL */
    const int64_t *indices; /* n dataset indices of the samples, valid until the next call */
    const int64_t *streams; /* n: the index whose random stream row j uses (rng_derive(seed,
                             * epoch, streams[j])): indices[j], or with LOADER_SKIP the
                             * failed sample that indices[j] replaces; valid until the next call */
    int64_t count;        /* n */
    int64_t batch_index;  /* 0-based position in the epoch */
    int64_t epoch;
    int fresh_storage;    /* the buffers were newly allocated for this batch (the caller held
                           * the slot's previous ones): a binding tells its GC about them */
} LoaderBatch;

typedef struct LoaderStats {
    double wait_seconds;  /* time loader_next spent waiting for workers */
    int64_t batches;      /* batches handed out */
    int64_t samples;
    int64_t skipped;      /* LOADER_SKIP: samples of those batches replaced because they failed */
} LoaderStats;

/* Validates, allocates, takes a reference to ds and to transform, and starts the threads;
 * the first epoch is 0.  transform may be NULL: ToTensor's conversion.  A pipeline that
 * ends on an Image gets ToTensor's conversion after it, and one that starts on tensors
 * (a lone Normalize) gets it before.  Returns NULL with a message. */
Loader *loader_create(Dataset *ds, const LoaderOptions *opt, Transform *transform, int two_crops,
                      LoaderMode mode);

int64_t loader_num_batches(const Loader *l);  /* per epoch (on this rank: the same on every rank) */
int64_t loader_epoch(const Loader *l);
int64_t loader_position(const Loader *l);     /* batches of this epoch already handed out */

/* Fills *out with the next batch of the epoch and returns 1; returns 0 at the end of the
 * epoch, after which the loader has moved on to the start of epoch + 1 (its first batches
 * already being prepared).  Returns -1 with a message when a sample failed (the message
 * names the file; the batch is dropped and the next call continues with the following
 * batch; with LOADER_SKIP only a failing transform, or a dataset where no sample decodes,
 * does this) or when moco_interrupt_requested was set while waiting (the loader is unchanged
 * and can be called again).  The tensors in *out belong to the caller (tensor_free). */
int loader_next(Loader *l, LoaderBatch *out);

/* Starts epoch e at batch 0.  Batches prepared for another position are discarded. */
int loader_set_epoch(Loader *l, int64_t epoch);

/* Replaces the transform (and the TwoCrops flag and mode) from the next batch loader_next
 * returns: batches already prepared or in progress with the old transform are discarded
 * and rebuilt, so which batch first uses the new transform never depends on timing.  It
 * waits until no worker uses the old transform, then drops the loader's reference to it
 * and takes one to the new. */
int loader_set_transform(Loader *l, Transform *transform, int two_crops, LoaderMode mode);

void loader_stats(const Loader *l, LoaderStats *out);
/* LOADER_SKIP: the oldest warning not yet taken ("<file>: <reason>", one per failing
 * file, in the order the workers met them) copied into buf; returns 1, or 0 when there is
 * none.  The loader keeps at most LOADER_MAX_WARNINGS; beyond, it counts them and gives one
 * "N more ..." warning instead.  The caller decides where they go (core never prints). */
#define LOADER_MAX_WARNINGS 1000
int loader_take_warning(Loader *l, char *buf, size_t size);
void loader_reset_stats(Loader *l);

/* Stops and joins the threads, frees the buffers, releases the dataset and the transform.
 * A worker in the middle of decoding a file stops that decode early (the codecs poll a
 * cancel flag, image_set_cancel_flag), so a huge or slow file never delays it; resets
 * (set_epoch, set_transform) cancel the same way.  NULL is fine.
 * Tensors handed out earlier stay valid. */
void loader_close(Loader *l);

/* The cores this process may run on (threadpool_cpu_count, core/threads.h), and a suggestion of how many threads BLAS should use next to
 * `workers` loader threads: max(1, cores - workers). */
int loader_cpu_count(void);
int loader_thread_advice(int workers);

#endif
