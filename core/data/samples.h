/* core/data/samples.h: the list of sample files that ImageFolder, ImageFiles and FileList
 * build (core/data/folder.c) and the dataset that decodes them.  Private to core/data. */
#ifndef MOCO_DATA_SAMPLES_H
#define MOCO_DATA_SAMPLES_H

#include <stddef.h>

#include "dataset.h"

typedef struct SampleList {
    char *pool;          /* every sample path, NUL-terminated, one after the other */
    size_t pool_len, pool_cap;
    size_t *offsets;     /* count entries into pool */
    int *labels;
    size_t count, cap;
} SampleList;

/* Appends (path, label).  Returns 0, or -1 when out of memory (no message). */
int sample_push(SampleList *s, const char *path, int label);
void samples_free(SampleList *s);

/* A dataset that decodes the listed files with image_load(path, channels), taking over
 * the samples (emptied on success); NULL with a message on failure. */
Dataset *dataset_from_samples(const char *name, int channels, SampleList *samples, int nclasses,
                              const char *const *classes);

/* os.path.expanduser, as torchvision's VisionDataset applies it to its root. */
void path_expand_user(const char *path, char *out, size_t size);

#endif
