/* core/data/external.c: the dataset of samples fetched on the loader's calling thread (a
 * dataset written in Lua, see dataset.h), and the decoding of what it fetched, which the
 * workers do with ImageFolder's decoders. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "error.h"

typedef struct ExternalDataset {
    Dataset base;
    int channels;          /* for paths and bytes, as ImageFolder's */
    int64_t index_base;    /* added to 0-based indices in messages */
    DatasetFetchFn fetch;
    void *ctx;
} ExternalDataset;

void sample_source_free(SampleSource *s) {
    if (!s) return;
    image_free(&s->image);
    free(s->path);
    free(s->bytes);
    free(s->error);
    memset(s, 0, sizeof *s);
}

static int external_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    (void)out;
    *label = -1;
    return moco_error("%s: item %lld: its samples are fetched by a data loader only", ds->name,
                      (long long)(index + ((const ExternalDataset *)ds)->index_base));
}

static int64_t external_label(const Dataset *ds, int64_t index) {
    (void)ds;
    (void)index;
    return -1;
}

static int external_fetch(const Dataset *ds, int64_t index, SampleSource *out) {
    const ExternalDataset *e = (const ExternalDataset *)ds;
    memset(out, 0, sizeof *out);
    return e->fetch(e->ctx, index, out);
}

/* The decoded image of a fetched source: a copy of an image, a file read and decoded, or
 * bytes decoded; a message naming the item (and the file) on failure. */
static int external_decode(const Dataset *ds, int64_t index, const SampleSource *src, Image *out, int64_t *label) {
    const ExternalDataset *e = (const ExternalDataset *)ds;
    long long item = (long long)(index + e->index_base);
    memset(out, 0, sizeof *out);
    *label = src->label;
    switch (src->kind) {
    case SAMPLE_IMAGE: {
        const Image *in = &src->image;
        if (!in->data || image_alloc(out, in->width, in->height, in->channels))
            return moco_error("%s: item %lld: out of memory for its %dx%d image", ds->name, item, in->width,
                              in->height);
        memcpy(out->data, in->data, (size_t)in->width * (size_t)in->height * (size_t)in->channels);
        return 0;
    }
    case SAMPLE_PATH:
        /* image_load's message starts with the path. */
        if (image_load(src->path, e->channels, out)) return moco_error_prefix("%s: item %lld: ", ds->name, item);
        return 0;
    case SAMPLE_BYTES: {
        char name[64];
        snprintf(name, sizeof name, "bytes of item %lld", item);
        if (image_decode(src->bytes, src->size, e->channels, out, name)) return moco_error_prefix("%s: ", ds->name);
        return 0;
    }
    case SAMPLE_FAILED:
        return moco_error("%s: %s", ds->name, src->error ? src->error : "fetching it failed (out of memory)");
    case SAMPLE_NONE:
        break;
    }
    return moco_error("%s: item %lld was not fetched", ds->name, item);
}

void dataset_describe_fetched(const Dataset *ds, int64_t index, const SampleSource *src, char *buf, size_t size) {
    long long item = (long long)index;
    if (ds->ops->fetch == external_fetch) item += ((const ExternalDataset *)ds)->index_base;
    if (src && src->kind == SAMPLE_PATH)
        snprintf(buf, size, "%s: item %lld (%s)", ds->name, item, src->path);
    else if (src && src->kind == SAMPLE_BYTES)
        snprintf(buf, size, "%s: bytes of item %lld", ds->name, item);
    else
        snprintf(buf, size, "%s: item %lld", ds->name, item);
}

static const DatasetOps external_ops = {external_get, external_label, NULL, NULL, external_fetch, external_decode};

Dataset *dataset_external(const char *name, int64_t length, int channels, int64_t index_base,
                          DatasetFetchFn fetch, void *ctx) {
    if (length < 0) return moco_error("%s: negative length %lld", name, (long long)length), NULL;
    if (channels != 0 && channels != 1 && channels != 3)
        return moco_error("%s: channels must be 1, 3 or 0 (as stored), got %d", name, channels), NULL;
    if (!fetch) return moco_error("%s: no fetch function", name), NULL;
    ExternalDataset *e = (ExternalDataset *)dataset_alloc(sizeof *e, &external_ops, name);
    if (!e) return NULL;
    e->base.length = length;
    e->channels = channels;
    e->index_base = index_base;
    e->fetch = fetch;
    e->ctx = ctx;
    return &e->base;
}
