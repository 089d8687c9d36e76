/* core/data/subset.c: torch.utils.data.Subset -- a dataset of chosen samples of another. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "error.h"

typedef struct SubsetDataset {
    Dataset base;
    Dataset *source;
    int64_t *indices;
} SubsetDataset;

static int subset_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    const SubsetDataset *s = (const SubsetDataset *)ds;
    return dataset_get(s->source, s->indices[index], out, label);
}

static int64_t subset_label(const Dataset *ds, int64_t index) {
    const SubsetDataset *s = (const SubsetDataset *)ds;
    return dataset_label(s->source, s->indices[index]);
}

static const char *subset_path(const Dataset *ds, int64_t index) {
    const SubsetDataset *s = (const SubsetDataset *)ds;
    return dataset_sample_path(s->source, s->indices[index]);
}

static void subset_destroy(Dataset *ds) {
    SubsetDataset *s = (SubsetDataset *)ds;
    dataset_release(s->source);
    free(s->indices);
}

static const DatasetOps subset_ops = {subset_get, subset_label, subset_path, subset_destroy, NULL, NULL};

Dataset *dataset_subset(Dataset *source, const int64_t *indices, int64_t n) {
    if (n < 0) return moco_error("Subset: negative length %lld", (long long)n), NULL;
    for (int64_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= source->length)
            return moco_error("Subset of %s: index %lld out of range [0, %lld)", source->name,
                              (long long)indices[i], (long long)source->length),
                   NULL;
    char name[512];
    snprintf(name, sizeof name, "Subset(%s, %lld)", source->name, (long long)n);
    int64_t *copy = malloc((size_t)(n ? n : 1) * sizeof *copy);
    if (!copy) return moco_error("Subset: out of memory"), NULL;
    memcpy(copy, indices, (size_t)n * sizeof *copy);
    SubsetDataset *s = (SubsetDataset *)dataset_alloc(sizeof *s, &subset_ops, name);
    if (!s) {
        free(copy);
        return NULL;
    }
    s->base.length = n;
    s->source = dataset_retain(source);
    s->indices = copy;
    const char *names[1024];
    int nc = source->num_classes < 1024 ? source->num_classes : 1024;
    for (int c = 0; c < nc; c++) names[c] = source->classes[c];
    if (nc && dataset_set_classes(&s->base, nc, names)) {
        dataset_release(&s->base);
        return NULL;
    }
    return &s->base;
}
