/* core/data/loader.c: worker threads, the ring of batch slots, and the scheduling rules
 * that keep batches independent of the number of workers (see loader.h).
 *
 * Who owns what:
 *  - Everything in Loader and in the slots is guarded by `mu`, except the rows of a slot's
 *    buffers, which the worker that "stored" sample j fills without the lock: row j is
 *    written by exactly one worker, and nobody else touches a slot's buffers while `busy`
 *    counts a worker (resets wait for busy == 0 first).
 *  - The calling thread holds at most one slot (the batch it was handed last); the workers
 *    may work on the `nslots - 1` batches after it.  Batch b always lives in slot b % nslots.
 *  - A reset (new epoch, new transform, close) bumps `generation`; a worker that finishes
 *    a sample taken under an older generation throws it away.
 *  - Batch b, row j of this rank is position shard_rank + shard_count * (b * batch_size + j)
 *    of the epoch order, modulo its length (the padding of DistributedSampler; see loader.h).
 *  - `order` changes only in a reset, which waits for busy == 0, so workers read it
 *    without the lock.  `failed` (LOADER_SKIP) is a byte per dataset sample that workers
 *    set and read with atomics: 1 once the sample failed to decode.  It only saves reading
 *    a bad file again and says who warns about it; results never depend on it.
 *  - Fetched datasets (dataset_external, e.g. a Lua dataset): the calling thread fetches the
 *    samples of batch `fetched` into its slot's `sources`, without the lock, and then
 *    increments `fetched`; workers only take batches below it, so nobody else touches those
 *    sources meanwhile (the slot's previous batch was handed out: fetching stays inside the
 *    window of work_available).  The worker of row j frees source j once it is decoded.
 *    With LOADER_SKIP, a row that fails is not replaced by the worker (which cannot fetch)
 *    but marked in `replace`; loader_next replaces it on the calling thread, by the same
 *    rule and with the same random stream, before it hands the batch out. */
#define _GNU_SOURCE
#include "loader.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "image/functional.h"
#include "rng.h"
#include "threads.h"

#define LOADER_ERROR_SIZE 1024

typedef struct LoaderSlot {
    int64_t batch;          /* the batch it holds or is being filled with; -1: none */
    int64_t count;          /* samples in that batch */
    int64_t stored;         /* samples whose rows are claimed (shape checked) */
    int64_t done;           /* samples finished, failed ones included */
    Tensor *images, *images_k, *labels;   /* batch_size rows; NULL until first needed */
    Image *raw;             /* batch_size entries (LOADER_IMAGES mode) */
    int64_t *indices;       /* batch_size dataset indices */
    int64_t *streams;       /* batch_size indices whose random streams the rows use */
    int64_t skipped;        /* rows whose sample failed and was replaced (LOADER_SKIP) */
    SampleSource *sources;  /* fetched datasets: batch_size samples fetched for the workers */
    uint8_t *replace;       /* fetched datasets, LOADER_SKIP: rows that failed, to replace */
    int64_t replacements;   /* rows marked in `replace` */
    int fresh;              /* a buffer was (re)allocated for this batch */
    int64_t error_sample;   /* the first failed sample of the batch, -1: none */
    char error[LOADER_ERROR_SIZE];
} LoaderSlot;

struct Loader {
    Dataset *ds;
    LoaderOptions opt;
    Transform *transform;   /* a reference of our own */
    int two_crops;
    LoaderMode mode;

    int64_t epoch, num_batches;
    int64_t *order;         /* the whole epoch's sample order (all ranks'), ds->length */
    int shard_rank, shard_count; /* 0 and 1 without sharding */
    int64_t shard_length;   /* positions of the epoch order this rank takes (padding included) */
    int nslots;
    LoaderSlot *slots;
    int64_t next_batch;     /* the batch loader_next returns next */
    int64_t held_batch;     /* the batch the caller holds, -1: none */
    int64_t sched_batch, sched_sample;  /* the next sample to hand to a worker */
    uint64_t generation;
    int busy;               /* workers inside a sample */
    int resetting;          /* no new work is handed out while a reset waits for busy == 0 */
    int stop;
    int cancel;             /* atomic: set while a reset or close waits, so that decodes in
                             * flight stop early (image_set_cancel_flag); their results are
                             * discarded anyway */

    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* work became available, or stop */
    pthread_cond_t done_cv;   /* a batch was completed */
    pthread_cond_t idle_cv;   /* busy dropped to 0 */
    pthread_t *threads;
    int nthreads;
    LoaderStats stats;

    uint8_t *failed;        /* LOADER_SKIP: ds->length flags, atomic (see the top) */
    int nothing_decodes;    /* atomic: a scan went round the whole order without success */
    int fetches;            /* ds has a fetch op: its samples are fetched on the calling thread */
    int64_t fetched;        /* fetched datasets: batches below it have their sources */
    int in_fetch;           /* the calling thread is inside ds's fetch (no re-entry) */
    char **warnings;        /* LOADER_SKIP: pending messages, oldest first, guarded by mu */
    int nwarnings;
    int64_t warnings_dropped; /* beyond LOADER_MAX_WARNINGS */
};

/* ------------------------------------------------------------ one sample */

typedef struct Sample {
    Tensor *q, *k;          /* LOADER_TENSORS */
    Image image;            /* LOADER_IMAGES */
    int64_t label;
    int64_t index;          /* the dataset sample it holds */
    int replaced;           /* the scheduled sample failed and `index` replaces it */
} Sample;

static void sample_free(Sample *s) {
    tensor_free(s->q);
    tensor_free(s->k);
    image_free(&s->image);
    memset(s, 0, sizeof *s);
}

static Tensor *apply_transform(const Transform *t, const Image *img, Rng *rng) {
    if (!t) return image_to_tensor(img);
    TransformResult res;
    memset(&res, 0, sizeof res);
    if (transform_input_kind(t) == TRANSFORM_TENSOR) {
        /* A pipeline that starts after ToTensor (e.g. a lone Normalize). */
        Tensor *in = image_to_tensor(img);
        int rc = in ? transform_apply_tensor(t, in, rng, &res) : -1;
        tensor_free(in);
        if (rc) return NULL;
    } else if (transform_apply(t, img, rng, &res)) {
        return NULL;
    }
    Tensor *out = res.tensor;
    if (out)
        res.tensor = NULL;
    else
        out = image_to_tensor(&res.image); /* a pipeline without ToTensor gets its conversion */
    transform_result_free(&res);
    return out;
}

typedef struct Job {
    const Dataset *ds;
    const Transform *transform;
    int two_crops;
    LoaderMode mode;
    uint64_t seed;
    int64_t epoch;
    int64_t position;       /* in the epoch order */
    int64_t index;          /* order[position]: the scheduled sample, whose stream the row uses */
    SampleSource *source;   /* fetched datasets: the sample to decode (freed once made), else NULL */
} Job;

/* The worker's message, with the file (or dataset and index) when it does not say it. */
static void describe_failure(const Dataset *ds, int64_t index, const SampleSource *source, char *buf, size_t size) {
    const char *msg = moco_last_error();
    if (ds->ops->fetch) {
        char what[LOADER_ERROR_SIZE / 2];
        dataset_describe_fetched(ds, index, source, what, sizeof what);
        snprintf(buf, size, "%s: %s", what, msg);
        return;
    }
    const char *path = dataset_sample_path(ds, index);
    if (path && strstr(msg, path))
        snprintf(buf, size, "%s", msg);
    else if (path)
        snprintf(buf, size, "%s: %s", path, msg);
    else
        snprintf(buf, size, "%s, sample %lld: %s", ds->name, (long long)index, msg);
}

static void push_warning_locked(Loader *l, const char *msg) {
    if (l->nwarnings == LOADER_MAX_WARNINGS) {
        l->warnings_dropped++;
        return;
    }
    if (!l->warnings) l->warnings = calloc(LOADER_MAX_WARNINGS, sizeof *l->warnings);
    char *copy = l->warnings ? strdup(msg) : NULL;
    if (copy)
        l->warnings[l->nwarnings++] = copy;
    else
        l->warnings_dropped++;
}

/* A decode that failed with LOADER_SKIP marks the sample, and the worker that marks it
 * first queues its warning. */
static void mark_failed(Loader *l, int64_t index, const char *msg) {
    if (__atomic_exchange_n(&l->failed[index], 1, __ATOMIC_RELAXED) == 0) {
        pthread_mutex_lock(&l->mu);
        push_warning_locked(l, msg);
        pthread_mutex_unlock(&l->mu);
    }
}

/* Decodes the scheduled sample into *img, or with LOADER_SKIP the first sample after it in
 * the epoch order (wrapping around) that decodes.  Runs without the lock.  Returns 0, or -1
 * with the message in err. */
static int decode_sample(Loader *l, const Job *job, Image *img, Sample *s, char *err, size_t errsize) {
    memset(img, 0, sizeof *img);
    s->index = job->index;
    if (l->opt.on_error != LOADER_SKIP) {
        if (dataset_get(job->ds, job->index, img, &s->label) == 0) return 0;
        describe_failure(job->ds, job->index, NULL, err, errsize);
        return -1;
    }
    int64_t n = job->ds->length;
    char first[LOADER_ERROR_SIZE] = "";
    if (!__atomic_load_n(&l->nothing_decodes, __ATOMIC_RELAXED))
        for (int64_t k = 0; k < n; k++) {
            int64_t index = l->order[(job->position + k) % n];
            if (__atomic_load_n(&l->failed[index], __ATOMIC_RELAXED)) continue;
            if (dataset_get(job->ds, index, img, &s->label) == 0) {
                s->index = index;
                s->replaced = index != job->index;
                return 0;
            }
            /* A decode stopped by a reset or close says nothing about the file. */
            if (__atomic_load_n(&l->cancel, __ATOMIC_RELAXED)) {
                snprintf(err, errsize, "loader: cancelled");
                return -1;
            }
            char msg[LOADER_ERROR_SIZE];
            describe_failure(job->ds, index, NULL, msg, sizeof msg);
            if (!first[0]) snprintf(first, sizeof first, "%s", msg);
            mark_failed(l, index, msg);
        }
    __atomic_store_n(&l->nothing_decodes, 1, __ATOMIC_RELAXED);
    snprintf(err, errsize, "%.200s: on_error = skip, but none of its %lld samples could be decoded%s%.700s",
             job->ds->name, (long long)n, first[0] ? "; e.g. " : "", first);
    return -1;
}

/* Fetched datasets: decodes job->source.  Returns 0, or -1 with the message in err, or 1
 * with LOADER_SKIP when the row is to be replaced on the calling thread (which can fetch). */
static int decode_fetched(Loader *l, const Job *job, Image *img, Sample *s, char *err, size_t errsize) {
    s->index = job->index;
    if (job->ds->ops->decode_fetched(job->ds, job->index, job->source, img, &s->label) == 0) return 0;
    snprintf(err, errsize, "%s", moco_last_error());
    if (l->opt.on_error != LOADER_SKIP) return -1;
    /* A decode stopped by a reset or close says nothing about the file. */
    if (__atomic_load_n(&l->cancel, __ATOMIC_RELAXED)) {
        snprintf(err, errsize, "loader: cancelled");
        return -1;
    }
    mark_failed(l, job->index, err);
    return 1;
}

/* The row's tensors (or image) from the decoded image, which it takes over. */
static int finish_sample(const Job *job, Image *img, Sample *s, char *err, size_t errsize) {
    if (job->mode == LOADER_IMAGES) {
        s->image = *img;
        return 0;
    }
    /* Every row has its own stream, so results do not depend on which thread ran it.  A
     * replacement uses the stream of the sample it replaces: another view, not a copy. */
    Rng rng;
    rng_derive(&rng, job->seed, (uint64_t)job->epoch, (uint64_t)job->index);
    s->q = apply_transform(job->transform, img, &rng);
    if (s->q && job->two_crops) s->k = apply_transform(job->transform, img, &rng);
    image_free(img);
    if (!s->q || (job->two_crops && !s->k)) {
        describe_failure(job->ds, s->index, job->source, err, errsize);
        sample_free(s);
        return -1;
    }
    return 0;
}

/* Returns 0, -1 with the message in err, or 1: a fetched row to replace (decode_fetched). */
static int make_sample(Loader *l, const Job *job, Sample *s, char *err, size_t errsize) {
    memset(s, 0, sizeof *s);
    Image img;
    int rc = job->source ? decode_fetched(l, job, &img, s, err, errsize) : decode_sample(l, job, &img, s, err, errsize);
    if (rc == 0) rc = finish_sample(job, &img, s, err, errsize);
    sample_source_free(job->source);
    return rc;
}

/* ------------------------------------------------------------ slots */

/* Lets go of buffers the caller still holds (they keep their storage) and of raw images. */
static void slot_recycle(Loader *l, LoaderSlot *s) {
    Tensor **bufs[3] = {&s->images, &s->images_k, &s->labels};
    for (int i = 0; i < 3; i++)
        if (*bufs[i] && tensor_is_view(*bufs[i])) {
            tensor_free(*bufs[i]);
            *bufs[i] = NULL;
        }
    for (int64_t j = 0; j < l->opt.batch_size; j++) image_free(&s->raw[j]);
}

static void slot_begin(Loader *l, LoaderSlot *s, int64_t batch) {
    int64_t n = l->shard_length - batch * l->opt.batch_size;
    for (int64_t j = 0; j < l->opt.batch_size; j++) image_free(&s->raw[j]);
    s->batch = batch;
    s->count = n < l->opt.batch_size ? n : l->opt.batch_size;
    s->stored = 0;
    s->done = 0;
    s->skipped = 0;
    s->fresh = 0;
    s->error_sample = -1;
    s->error[0] = 0;
    if (s->replace) memset(s->replace, 0, (size_t)l->opt.batch_size);
    s->replacements = 0;
}

/* Makes sure *buf is a (batch_size, sample shape) tensor.  A buffer of another shape is
 * replaced only while no row of this batch is stored, so a batch whose samples all share
 * a shape always works and one whose samples differ always fails, whatever the order in
 * which workers finish. */
static int slot_buffer(Loader *l, LoaderSlot *s, Tensor **buf, const Tensor *sample, char *err, size_t errsize) {
    int64_t shape[TENSOR_MAX_DIMS];
    if (sample->ndim + 1 > TENSOR_MAX_DIMS) {
        snprintf(err, errsize, "loader: a sample has %d dimensions; at most %d fit in a batch", sample->ndim,
                 TENSOR_MAX_DIMS - 1);
        return -1;
    }
    shape[0] = l->opt.batch_size;
    memcpy(shape + 1, sample->shape, (size_t)sample->ndim * sizeof *shape);
    if (*buf) {
        int same = (*buf)->ndim == sample->ndim + 1;
        for (int d = 0; same && d < sample->ndim; d++) same = (*buf)->shape[d + 1] == sample->shape[d];
        if (same) return 0;
        if (s->stored > 0) {
            char a[128], b[128];
            Tensor *row = tensor_select(*buf, 0, 0);
            snprintf(err, errsize,
                     "loader: the samples of batch %lld have different shapes (%s and %s); add a Resize, CenterCrop "
                     "or RandomResizedCrop to the transform so that all have the same",
                     (long long)s->batch, tensor_shape_str(sample, a, sizeof a),
                     row ? tensor_shape_str(row, b, sizeof b) : "?");
            tensor_free(row);
            return -1;
        }
        tensor_free(*buf); /* a caller still holding it keeps its storage */
        *buf = NULL;
    }
    *buf = tensor_empty(sample->ndim + 1, shape);
    s->fresh = 1;
    if (!*buf) {
        snprintf(err, errsize, "loader: %s", moco_last_error());
        return -1;
    }
    return 0;
}

static int slot_labels(Loader *l, LoaderSlot *s, char *err, size_t errsize) {
    if (s->labels) return 0;
    int64_t n = l->opt.batch_size;
    s->labels = tensor_zeros(1, &n);
    s->fresh = 1;
    if (s->labels) return 0;
    snprintf(err, errsize, "loader: %s", moco_last_error());
    return -1;
}

static int work_available(const Loader *l) {
    if (l->resetting) return 0;
    int64_t start = l->held_batch >= 0 ? l->held_batch : l->next_batch;
    return l->sched_batch < l->num_batches && l->sched_batch < start + l->nslots &&
           (!l->fetches || l->sched_batch < l->fetched);
}

/* Row j of batch b of this rank: its global position in the epoch order, wrapped around
 * the order's end for the padding without drop_last. */
static int64_t row_position(const Loader *l, int64_t b, int64_t j) {
    return (l->shard_rank + l->shard_count * (b * l->opt.batch_size + j)) % l->ds->length;
}

/* Makes sure the slot's buffers fit the sample and counts its row as stored.  Called with
 * the lock held.  Returns 0 or -1 with the message in err. */
static int claim_row_locked(Loader *l, LoaderSlot *s, int64_t j, const Sample *sample, LoaderMode mode, char *err,
                            size_t errsize) {
    int rc = slot_labels(l, s, err, errsize);
    if (rc == 0 && mode == LOADER_TENSORS) {
        rc = slot_buffer(l, s, &s->images, sample->q, err, errsize);
        if (rc == 0 && sample->k) rc = slot_buffer(l, s, &s->images_k, sample->k, err, errsize);
    }
    if (rc) return -1;
    s->stored++;
    s->indices[j] = sample->index;
    if (sample->replaced) s->skipped++;
    return 0;
}

/* Copies a claimed sample into row j (without the lock: row j is the caller's alone). */
static void fill_row(LoaderSlot *s, int64_t j, Sample *sample, LoaderMode mode) {
    s->labels->data[j] = (float)sample->label;
    if (mode == LOADER_IMAGES) {
        s->raw[j] = sample->image;
        memset(&sample->image, 0, sizeof sample->image);
    } else {
        memcpy(s->images->data + j * sample->q->numel, sample->q->data, (size_t)sample->q->numel * sizeof(float));
        if (sample->k)
            memcpy(s->images_k->data + j * sample->k->numel, sample->k->data, (size_t)sample->k->numel * sizeof(float));
    }
    sample_free(sample);
}

/* Takes the next sample, makes it without the lock, and stores it.  Called with the lock
 * held and work_available(l); returns with the lock held. */
static void run_one_locked(Loader *l) {
    int64_t b = l->sched_batch, j = l->sched_sample;
    LoaderSlot *s = &l->slots[b % l->nslots];
    if (j == 0) slot_begin(l, s, b);
    if (++l->sched_sample == s->count) {
        l->sched_batch++;
        l->sched_sample = 0;
    }
    int64_t position = row_position(l, b, j);
    Job job = {l->ds, l->transform, l->two_crops, l->mode, l->opt.seed, l->epoch, position, l->order[position],
               l->fetches ? &s->sources[j] : NULL};
    s->indices[j] = s->streams[j] = job.index;
    uint64_t generation = l->generation;
    l->busy++;
    pthread_mutex_unlock(&l->mu);

    Sample sample;
    char err[LOADER_ERROR_SIZE] = "";
    /* Also on the calling thread (workers = 0): there Ctrl-C is noticed between samples,
     * and must not make a good file fail to decode. */
    image_set_cancel_flag(&l->cancel);
    int rc = make_sample(l, &job, &sample, err, sizeof err);
    image_set_cancel_flag(NULL);

    pthread_mutex_lock(&l->mu);
    int current = generation == l->generation;
    if (current && rc == 1) {
        /* A fetched sample that failed, with LOADER_SKIP: loader_next replaces it. */
        s->replace[j] = 1;
        s->replacements++;
        rc = 0;
    } else if (current && rc == 0 && claim_row_locked(l, s, j, &sample, job.mode, err, sizeof err) == 0) {
        pthread_mutex_unlock(&l->mu);
        fill_row(s, j, &sample, job.mode);
        pthread_mutex_lock(&l->mu);
        current = generation == l->generation;
    } else if (current && rc == 0) {
        rc = -1; /* the message is in err */
    }
    sample_free(&sample);
    if (current) {
        if (rc && (s->error_sample < 0 || j < s->error_sample)) {
            s->error_sample = j; /* the first failing sample of the batch, whatever the timing */
            snprintf(s->error, sizeof s->error, "%s", err);
        }
        if (++s->done == s->count) pthread_cond_broadcast(&l->done_cv);
    }
    if (--l->busy == 0) pthread_cond_broadcast(&l->idle_cv);
}

/* ------------------------------------------------------------ fetched datasets */

/* Whether the calling thread may fetch batch l->fetched now: inside the window the
 * workers may fill (so its slot is free, see the top). */
static int can_fetch(const Loader *l) {
    int64_t start = l->held_batch >= 0 ? l->held_batch : l->next_batch;
    return l->fetches && l->fetched < l->num_batches && l->fetched < start + l->nslots;
}

/* ds's fetch for one sample, on the calling thread without the lock.  A sample already
 * known to fail (LOADER_SKIP) is not fetched again.  Called and returns with the lock held;
 * 0, or -1 when fetch stopped the call (its message is set). */
static int fetch_one_locked(Loader *l, int64_t index, SampleSource *src) {
    sample_source_free(src);
    if (l->failed && __atomic_load_n(&l->failed[index], __ATOMIC_RELAXED)) {
        src->kind = SAMPLE_FAILED;
        src->error = strdup("failed before (on_error = skip)");
        return 0;
    }
    l->in_fetch = 1;
    pthread_mutex_unlock(&l->mu);
    int rc = l->ds->ops->fetch(l->ds, index, src);
    pthread_mutex_lock(&l->mu);
    l->in_fetch = 0;
    if (rc) sample_source_free(src);
    return rc ? -1 : 0;
}

/* Fetches the samples of batch l->fetched into its slot and hands the batch to the
 * workers.  Called with the lock held and can_fetch(l); returns with it held.  0, or -1
 * when fetch stopped the call: nothing changed. */
static int fetch_batch_locked(Loader *l) {
    int64_t b = l->fetched;
    LoaderSlot *s = &l->slots[b % l->nslots];
    int64_t n = l->shard_length - b * l->opt.batch_size;
    if (n > l->opt.batch_size) n = l->opt.batch_size;
    for (int64_t j = 0; j < n; j++)
        if (fetch_one_locked(l, l->order[row_position(l, b, j)], &s->sources[j])) {
            for (int64_t k = 0; k < j; k++) sample_source_free(&s->sources[k]);
            return -1;
        }
    l->fetched++;
    pthread_cond_broadcast(&l->work_cv);
    return 0;
}

/* LOADER_SKIP on a fetched dataset: replaces the rows of the finished batch b that failed,
 * as decode_sample does in the workers for other datasets: by the next sample of the epoch
 * order that decodes, with the failed sample's random stream.  On the calling thread, with
 * the lock held (released while fetching and decoding; no worker touches the slot of the
 * batch loader_next is about to hand out).  Returns 0 (a failure is left in the slot's
 * error, as a worker's), or -1 when fetch stopped the call: replaced rows stay replaced,
 * and the next call goes on with the others. */
static int replace_failed_rows_locked(Loader *l, LoaderSlot *s, int64_t b) {
    int64_t n = l->ds->length;
    for (int64_t j = 0; j < s->count && s->error_sample < 0; j++) {
        if (!s->replace[j]) continue;
        int64_t p = row_position(l, b, j);
        char err[LOADER_ERROR_SIZE] = "", first[LOADER_ERROR_SIZE] = "";
        int found = 0;
        for (int64_t k = 1; k < n && !found && !err[0]; k++) {
            int64_t index = l->order[(p + k) % n];
            if (__atomic_load_n(&l->failed[index], __ATOMIC_RELAXED)) continue;
            SampleSource src;
            memset(&src, 0, sizeof src);
            if (fetch_one_locked(l, index, &src)) return -1;
            pthread_mutex_unlock(&l->mu);
            /* The replacement uses the stream of the sample it replaces (s->streams[j]). */
            Job job = {l->ds, l->transform, l->two_crops, l->mode, l->opt.seed, l->epoch, (p + k) % n, s->streams[j],
                       &src};
            Sample sample;
            memset(&sample, 0, sizeof sample);
            Image img;
            int rc = l->ds->ops->decode_fetched(l->ds, index, &src, &img, &sample.label);
            if (rc && moco_interrupt_requested) {
                /* Ctrl-C stopped the decode: it says nothing about the file. */
                sample_source_free(&src);
                pthread_mutex_lock(&l->mu);
                return moco_error("interrupted while the data loader replaced a failed sample");
            }
            if (rc) {
                char msg[LOADER_ERROR_SIZE];
                snprintf(msg, sizeof msg, "%s", moco_last_error());
                if (!first[0]) snprintf(first, sizeof first, "%s", msg);
                mark_failed(l, index, msg);
            } else {
                sample.index = index;
                sample.replaced = 1;
                if (finish_sample(&job, &img, &sample, err, sizeof err) == 0) found = 1;
            }
            sample_source_free(&src);
            pthread_mutex_lock(&l->mu);
            if (found && claim_row_locked(l, s, j, &sample, l->mode, err, sizeof err) == 0)
                fill_row(s, j, &sample, l->mode);
            sample_free(&sample);
        }
        if (!found && !err[0])
            snprintf(err, sizeof err, "%.200s: on_error = skip, but none of its %lld samples could be decoded%s%.700s",
                     l->ds->name, (long long)n, first[0] ? "; e.g. " : "", first);
        if (err[0]) {
            s->error_sample = j;
            snprintf(s->error, sizeof s->error, "%s", err);
        }
        s->replace[j] = 0;
        s->replacements--;
    }
    return 0;
}

static void *worker_main(void *arg) {
    Loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && !work_available(l)) pthread_cond_wait(&l->work_cv, &l->mu);
        if (l->stop) break;
        run_one_locked(l);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ------------------------------------------------------------ resets */

/* Cancels all work in flight and frees every slot; the caller then moves the cursor. */
static void reset_locked(Loader *l) {
    l->generation++;
    l->resetting = 1;
    __atomic_store_n(&l->cancel, 1, __ATOMIC_RELAXED);
    while (l->busy) pthread_cond_wait(&l->idle_cv, &l->mu);
    __atomic_store_n(&l->cancel, 0, __ATOMIC_RELAXED);
    l->resetting = 0;
    for (int i = 0; i < l->nslots; i++) {
        LoaderSlot *s = &l->slots[i];
        slot_recycle(l, s);
        s->batch = -1;
        s->done = s->stored = 0;
        s->error_sample = -1;
        if (s->sources)
            for (int64_t j = 0; j < l->opt.batch_size; j++) sample_source_free(&s->sources[j]);
    }
    l->held_batch = -1;
    l->sched_batch = l->next_batch;
    l->sched_sample = 0;
    l->fetched = l->next_batch;
}

static void start_epoch_locked(Loader *l, int64_t epoch) {
    reset_locked(l);
    l->epoch = epoch;
    l->next_batch = 0;
    l->sched_batch = 0;
    l->fetched = 0;
    int64_t n = l->ds->length;
    if (l->opt.shuffle) {
        Rng rng;
        rng_derive(&rng, l->opt.seed, (uint64_t)epoch, LOADER_SHUFFLE_STREAM);
        rng_permutation(&rng, l->order, n);
    } else {
        for (int64_t i = 0; i < n; i++) l->order[i] = i;
    }
    pthread_cond_broadcast(&l->work_cv);
}

/* The slot the caller was using goes back to the workers. */
static void release_held_locked(Loader *l) {
    if (l->held_batch < 0) return;
    LoaderSlot *s = &l->slots[l->held_batch % l->nslots];
    slot_recycle(l, s);
    s->batch = -1;
    l->held_batch = -1;
    pthread_cond_broadcast(&l->work_cv);
}

/* ------------------------------------------------------------ public API */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int loader_cpu_count(void) { return threadpool_cpu_count(); }

int loader_thread_advice(int workers) {
    int n = loader_cpu_count() - workers;
    return n > 1 ? n : 1;
}

static int check_options(const Dataset *ds, const LoaderOptions *opt) {
    if (opt->batch_size < 1) return moco_error("Loader: batch_size must be at least 1, got %lld", (long long)opt->batch_size);
    if (opt->workers < 0 || opt->workers > LOADER_MAX_WORKERS)
        return moco_error("Loader: workers must be between 0 and %d, got %d", LOADER_MAX_WORKERS, opt->workers);
    if (opt->prefetch < 1 || opt->prefetch > LOADER_MAX_PREFETCH)
        return moco_error("Loader: prefetch must be between 1 and %d batches, got %d", LOADER_MAX_PREFETCH,
                          opt->prefetch);
    if (opt->on_error != LOADER_RAISE && opt->on_error != LOADER_SKIP)
        return moco_error("Loader: on_error must be LOADER_RAISE or LOADER_SKIP, got %d", (int)opt->on_error);
    if (opt->shard_count < 0 || (opt->shard_count == 0 && opt->shard_rank != 0) ||
        (opt->shard_count > 0 && (opt->shard_rank < 0 || opt->shard_rank >= opt->shard_count)))
        return moco_error("Loader: shard rank must be between 0 and count - 1, got rank %d of count %d",
                          opt->shard_rank, opt->shard_count);
    if (ds->length == 0) return moco_error("Loader: %s is empty", ds->name);
    int64_t ranks = opt->shard_count > 1 ? opt->shard_count : 1;
    if (opt->batch_size > INT64_MAX / ranks)
        return moco_error("Loader: batch_size %lld times %lld shards overflows", (long long)opt->batch_size,
                          (long long)ranks);
    if (opt->drop_last && ds->length < opt->batch_size * ranks) {
        if (ranks == 1)
            return moco_error("Loader: %s has %lld samples, fewer than batch_size %lld, so drop_last leaves no batch",
                              ds->name, (long long)ds->length, (long long)opt->batch_size);
        return moco_error("Loader: %s has %lld samples, fewer than batch_size %lld times %lld shards, so drop_last "
                          "leaves no batch",
                          ds->name, (long long)ds->length, (long long)opt->batch_size, (long long)ranks);
    }
    return 0;
}

static void loader_free(Loader *l) {
    if (l->slots)
        for (int i = 0; i < l->nslots; i++) {
            LoaderSlot *s = &l->slots[i];
            tensor_free(s->images);
            tensor_free(s->images_k);
            tensor_free(s->labels);
            if (s->raw)
                for (int64_t j = 0; j < l->opt.batch_size; j++) image_free(&s->raw[j]);
            if (s->sources)
                for (int64_t j = 0; j < l->opt.batch_size; j++) sample_source_free(&s->sources[j]);
            free(s->raw);
            free(s->sources);
            free(s->replace);
            free(s->indices);
            free(s->streams);
        }
    free(l->slots);
    for (int i = 0; i < l->nwarnings; i++) free(l->warnings[i]);
    free(l->warnings);
    free(l->failed);
    free(l->order);
    free(l->threads);
    transform_free(l->transform);
    dataset_release(l->ds);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->done_cv);
    pthread_cond_destroy(&l->idle_cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void stop_threads(Loader *l) {
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    __atomic_store_n(&l->cancel, 1, __ATOMIC_RELAXED); /* a worker inside a slow file stops now */
    l->generation++;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nthreads; i++) pthread_join(l->threads[i], NULL);
    l->nthreads = 0;
}

Loader *loader_create(Dataset *ds, const LoaderOptions *opt, Transform *transform, int two_crops,
                      LoaderMode mode) {
    if (check_options(ds, opt)) return NULL;
    Loader *l = calloc(1, sizeof *l);
    if (!l) {
        moco_error("Loader: out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->done_cv, NULL);
    pthread_cond_init(&l->idle_cv, NULL);
    l->ds = dataset_retain(ds);
    l->opt = *opt;
    l->transform = transform_retain(transform);
    l->two_crops = two_crops;
    l->mode = mode;
    l->fetches = ds->ops->fetch != NULL;
    l->shard_rank = opt->shard_count > 1 ? opt->shard_rank : 0;
    l->shard_count = opt->shard_count > 1 ? opt->shard_count : 1;
    /* DistributedSampler's num_samples: floor(n / N) with drop_last, else ceil(n / N) (the
     * order padded by wrapping around); then the batches of this rank cut from it.  Both
     * give the same count on every rank: floor(n / (B*N)) or ceil(n / (B*N)). */
    int64_t n = ds->length, ranks = l->shard_count, b = opt->batch_size;
    l->shard_length = opt->drop_last ? n / ranks : (n + ranks - 1) / ranks;
    l->num_batches = opt->drop_last ? l->shard_length / b : (l->shard_length + b - 1) / b;
    l->nslots = opt->prefetch + 1;
    l->held_batch = -1;
    l->order = malloc((size_t)ds->length * sizeof *l->order);
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    l->threads = calloc((size_t)(opt->workers ? opt->workers : 1), sizeof *l->threads);
    int ok = l->order && l->slots && l->threads;
    for (int i = 0; ok && i < l->nslots; i++) {
        l->slots[i].batch = -1;
        l->slots[i].error_sample = -1;
        l->slots[i].raw = calloc((size_t)opt->batch_size, sizeof *l->slots[i].raw);
        l->slots[i].indices = calloc((size_t)opt->batch_size, sizeof *l->slots[i].indices);
        l->slots[i].streams = calloc((size_t)opt->batch_size, sizeof *l->slots[i].streams);
        ok = l->slots[i].raw && l->slots[i].indices && l->slots[i].streams;
        if (ok && l->fetches) {
            l->slots[i].sources = calloc((size_t)opt->batch_size, sizeof *l->slots[i].sources);
            l->slots[i].replace = calloc((size_t)opt->batch_size, 1);
            ok = l->slots[i].sources && l->slots[i].replace;
        }
    }
    if (ok && opt->on_error == LOADER_SKIP) {
        l->failed = calloc((size_t)ds->length, 1);
        ok = l->failed != NULL;
    }
    if (!ok) {
        loader_free(l);
        moco_error("Loader: out of memory for a ring of %d batches of %lld", opt->prefetch + 1,
                   (long long)opt->batch_size);
        return NULL;
    }
    pthread_mutex_lock(&l->mu);
    start_epoch_locked(l, 0);
    pthread_mutex_unlock(&l->mu);

    /* Workers block every signal, so SIGINT always reaches the thread that runs Lua. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (int i = 0; i < opt->workers && !err; i++) {
        err = pthread_create(&l->threads[i], NULL, worker_main, l);
        if (!err) l->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        stop_threads(l);
        loader_free(l);
        moco_error("Loader: cannot start worker thread %d of %d: %s", l->nthreads + 1, opt->workers, strerror(err));
        return NULL;
    }
    return l;
}

int64_t loader_num_batches(const Loader *l) { return l->num_batches; }
int64_t loader_epoch(const Loader *l) { return l->epoch; }
int64_t loader_position(const Loader *l) { return l->next_batch; }

/* The calling thread, inside its dataset's fetch, must not use the loader that fetches. */
static int check_not_fetching(const Loader *l, const char *what) {
    if (l->in_fetch)
        return moco_error("Loader: %s called from inside the fetch of its own dataset %s (a dataset's get may not "
                          "use the loader that reads it)", what, l->ds->name);
    return 0;
}

int loader_next(Loader *l, LoaderBatch *out) {
    memset(out, 0, sizeof *out);
    if (check_not_fetching(l, "next")) return -1;
    pthread_mutex_lock(&l->mu);
    release_held_locked(l);
    if (l->next_batch >= l->num_batches) {
        start_epoch_locked(l, l->epoch + 1);
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    int64_t b = l->next_batch;
    LoaderSlot *s = &l->slots[b % l->nslots];
    double t0 = now_seconds();
    while (!(s->batch == b && s->done == s->count)) {
        if (moco_interrupt_requested) {
            l->stats.wait_seconds += now_seconds() - t0;
            pthread_mutex_unlock(&l->mu);
            return moco_error("interrupted while waiting for the data loader");
        }
        /* Fetched datasets: this batch first; then, while the workers work, the next ones. */
        if (can_fetch(l) && (l->fetched <= b || l->nthreads > 0)) {
            if (fetch_batch_locked(l)) {
                l->stats.wait_seconds += now_seconds() - t0;
                pthread_mutex_unlock(&l->mu);
                return -1;
            }
            continue;
        }
        if (l->nthreads == 0) {
            run_one_locked(l); /* workers = 0: the caller does the work */
            continue;
        }
        /* Wake up now and then to notice Ctrl-C. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->done_cv, &l->mu, &until);
    }
    /* Before the batch is handed out (next_batch moves on), so no worker can reuse its
     * slot: the replacements of failed fetched rows, and the fetching of the batches the
     * workers prepare while the caller uses this one. */
    int rc = s->replacements > 0 ? replace_failed_rows_locked(l, s, b) : 0;
    while (rc == 0 && l->nthreads > 0 && can_fetch(l)) rc = fetch_batch_locked(l);
    l->stats.wait_seconds += now_seconds() - t0;
    if (rc) {
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    l->next_batch++;
    if (s->error_sample >= 0) {
        char msg[LOADER_ERROR_SIZE];
        snprintf(msg, sizeof msg, "%s", s->error);
        slot_recycle(l, s);
        s->batch = -1;
        pthread_cond_broadcast(&l->work_cv);
        pthread_mutex_unlock(&l->mu);
        return moco_error("%s", msg);
    }
    l->held_batch = b;
    out->count = s->count;
    out->batch_index = b;
    out->epoch = l->epoch;
    out->indices = s->indices;
    out->streams = s->streams;
    out->fresh_storage = s->fresh;
    out->labels = tensor_narrow(s->labels, 0, 0, s->count);
    if (!out->labels) rc = -1;
    if (rc == 0 && l->mode == LOADER_IMAGES) {
        out->raw = s->raw;
    } else if (rc == 0) {
        out->images = tensor_narrow(s->images, 0, 0, s->count);
        if (!out->images) rc = -1;
        if (rc == 0 && l->two_crops) {
            out->images_k = tensor_narrow(s->images_k, 0, 0, s->count);
            if (!out->images_k) rc = -1;
        }
    }
    if (rc) {
        tensor_free(out->images);
        tensor_free(out->images_k);
        tensor_free(out->labels);
        memset(out, 0, sizeof *out);
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    l->stats.batches++;
    l->stats.samples += s->count;
    l->stats.skipped += s->skipped;
    pthread_mutex_unlock(&l->mu);
    return 1;
}

int loader_set_epoch(Loader *l, int64_t epoch) {
    if (check_not_fetching(l, "set_epoch")) return -1;
    if (epoch < 0) return moco_error("Loader: epoch must be non-negative, got %lld", (long long)epoch);
    pthread_mutex_lock(&l->mu);
    /* Already at the start of that epoch: keep the batches being prepared. */
    if (!(epoch == l->epoch && l->next_batch == 0 && l->held_batch < 0)) start_epoch_locked(l, epoch);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int loader_set_transform(Loader *l, Transform *transform, int two_crops, LoaderMode mode) {
    if (check_not_fetching(l, "set_transform")) return -1;
    pthread_mutex_lock(&l->mu);
    reset_locked(l);  /* waits until no worker uses the old transform */
    transform_retain(transform);
    transform_free(l->transform);
    l->transform = transform;
    l->two_crops = two_crops;
    l->mode = mode;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

void loader_stats(const Loader *l, LoaderStats *out) {
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    *out = l->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
}

int loader_take_warning(Loader *l, char *buf, size_t size) {
    pthread_mutex_lock(&l->mu);
    int got = 1;
    if (l->nwarnings > 0) {
        snprintf(buf, size, "%s", l->warnings[0]);
        free(l->warnings[0]);
        memmove(l->warnings, l->warnings + 1, (size_t)(l->nwarnings - 1) * sizeof *l->warnings);
        l->nwarnings--;
    } else if (l->warnings_dropped > 0) {
        snprintf(buf, size, "%lld more samples failed to decode (their warnings were dropped)",
                 (long long)l->warnings_dropped);
        l->warnings_dropped = 0;
    } else {
        got = 0;
    }
    pthread_mutex_unlock(&l->mu);
    return got;
}

void loader_reset_stats(Loader *l) {
    pthread_mutex_lock(&l->mu);
    memset(&l->stats, 0, sizeof l->stats);
    pthread_mutex_unlock(&l->mu);
}

void loader_close(Loader *l) {
    if (!l) return;
    stop_threads(l);
    loader_free(l);
}
