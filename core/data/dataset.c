/* core/data/dataset.c: the parts of the Dataset interface every dataset shares
 * (reference counting, class names, range-checked access).  See dataset.h. */
#include "dataset.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

Dataset *dataset_alloc(size_t size, const DatasetOps *ops, const char *name) {
    Dataset *ds = calloc(1, size);
    char *copy = strdup(name);
    if (!ds || !copy) {
        free(ds);
        free(copy);
        moco_error("%s: out of memory", name);
        return NULL;
    }
    ds->ops = ops;
    ds->name = copy;
    ds->refcount = 1;
    return ds;
}

int dataset_set_classes(Dataset *ds, int n, const char *const *names) {
    char **classes = calloc((size_t)(n > 0 ? n : 1), sizeof *classes);
    if (!classes) return moco_error("%s: out of memory", ds->name);
    for (int i = 0; i < n; i++) {
        classes[i] = strdup(names[i]);
        if (!classes[i]) {
            for (int j = 0; j < i; j++) free(classes[j]);
            free(classes);
            return moco_error("%s: out of memory", ds->name);
        }
    }
    ds->classes = classes;
    ds->num_classes = n;
    return 0;
}

int64_t dataset_length(const Dataset *ds) { return ds->length; }

int dataset_num_classes(const Dataset *ds) { return ds->num_classes; }

const char *dataset_class_name(const Dataset *ds, int c) {
    return c >= 0 && c < ds->num_classes ? ds->classes[c] : NULL;
}

int dataset_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    memset(out, 0, sizeof *out);
    if (index < 0 || index >= ds->length)
        return moco_error("%s: index %lld out of range (the dataset has %lld samples, indexed from 0)",
                          ds->name, (long long)index, (long long)ds->length);
    return ds->ops->get(ds, index, out, label);
}

int64_t dataset_label(const Dataset *ds, int64_t index) {
    if (index < 0 || index >= ds->length) return -1;
    return ds->ops->label(ds, index);
}

const char *dataset_sample_path(const Dataset *ds, int64_t index) {
    if (index < 0 || index >= ds->length || !ds->ops->sample_path) return NULL;
    return ds->ops->sample_path(ds, index);
}

Dataset *dataset_retain(Dataset *ds) {
    if (ds) __atomic_add_fetch(&ds->refcount, 1, __ATOMIC_ACQ_REL);
    return ds;
}

void dataset_release(Dataset *ds) {
    if (!ds || __atomic_sub_fetch(&ds->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (ds->ops->destroy) ds->ops->destroy(ds);
    for (int i = 0; i < ds->num_classes; i++) free(ds->classes[i]);
    free(ds->classes);
    free(ds->name);
    free(ds);
}
