/* core/data/mnist.c: datasets stored as a pair of IDX files (MNIST, Fashion-MNIST, KMNIST...).
 *
 * Both files are read whole at construction through core/io/idx.c (raw or gzip) and kept
 * in memory; dataset_get copies one image out.  The shapes are checked against each other
 * so a swapped or truncated pair fails at once, naming both paths. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"
#include "error.h"
#include "io/idx.h"

static const char *const fashion_mnist_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

typedef struct IdxDataset {
    Dataset base;
    IdxArray images, labels;
    int height, width, channels;
} IdxDataset;

static int idx_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    const IdxDataset *d = (const IdxDataset *)ds;
    *label = d->labels.data[index];
    if (image_alloc(out, d->width, d->height, d->channels)) return -1;
    size_t n = (size_t)d->height * (size_t)d->width * (size_t)d->channels;
    memcpy(out->data, d->images.data + (size_t)index * n, n);
    return 0;
}

static int64_t idx_label(const Dataset *ds, int64_t index) { return ((const IdxDataset *)ds)->labels.data[index]; }

static void idx_destroy(Dataset *ds) {
    IdxDataset *d = (IdxDataset *)ds;
    idx_free(&d->images);
    idx_free(&d->labels);
}

static const DatasetOps idx_ops = {idx_get, idx_label, NULL, idx_destroy, NULL, NULL};

Dataset *dataset_idx(const char *images_path, const char *labels_path, int num_names,
                     const char *const *class_names) {
    IdxArray images, labels;
    if (idx_load(images_path, &images)) {
        moco_error_prefix("IDX dataset: ");
        return NULL;
    }
    if (idx_load(labels_path, &labels)) {
        idx_free(&images);
        moco_error_prefix("IDX dataset: ");
        return NULL;
    }
    int channels = images.ndim == 4 ? (int)images.shape[3] : 1;
    int rc = 0;
    if (images.ndim != 3 && !(images.ndim == 4 && (channels == 1 || channels == 3)))
        rc = moco_error("IDX dataset: %s: images must have shape (N, H, W) or (N, H, W, 1|3), got %d dimensions%s",
                        images_path, images.ndim, images.ndim == 1 ? " (is this a labels file?)" : "");
    else if (images.shape[1] < 1 || images.shape[2] < 1 || images.shape[1] > 65535 || images.shape[2] > 65535)
        rc = moco_error("IDX dataset: %s: bad image size %lldx%lld", images_path, (long long)images.shape[1],
                        (long long)images.shape[2]);
    else if (labels.ndim != 1)
        rc = moco_error("IDX dataset: %s: labels must have shape (N), got %d dimensions%s", labels_path, labels.ndim,
                        labels.ndim >= 3 ? " (are the images and labels files swapped?)" : "");
    else if (labels.shape[0] != images.shape[0])
        rc = moco_error("IDX dataset: %s has %lld images but %s has %lld labels", images_path,
                        (long long)images.shape[0], labels_path, (long long)labels.shape[0]);
    int max_label = 0;
    for (int64_t i = 0; rc == 0 && i < labels.count; i++)
        if (labels.data[i] > max_label) max_label = labels.data[i];
    if (rc == 0 && class_names && max_label >= num_names)
        rc = moco_error("IDX dataset: %s: label %d but only %d class names were given", labels_path, max_label,
                        num_names);
    IdxDataset *d = NULL;
    if (rc == 0) {
        char name[8400];
        snprintf(name, sizeof name, "IDX(%s, %s)", images_path, labels_path);
        d = (IdxDataset *)dataset_alloc(sizeof *d, &idx_ops, name);
        if (!d) rc = -1;
    }
    if (rc != 0) {
        idx_free(&images);
        idx_free(&labels);
        return NULL;
    }
    d->images = images;
    d->labels = labels;
    d->height = (int)images.shape[1];
    d->width = (int)images.shape[2];
    d->channels = channels;
    d->base.length = images.shape[0];
    if (class_names) {
        rc = dataset_set_classes(&d->base, num_names, class_names);
    } else {
        /* Unnamed classes are their numbers, "0".."K-1". */
        char digits[256][12];
        const char *names[256];
        for (int c = 0; c <= max_label; c++) {
            snprintf(digits[c], sizeof digits[c], "%d", c);
            names[c] = digits[c];
        }
        rc = dataset_set_classes(&d->base, max_label + 1, names);
    }
    if (rc) {
        dataset_release(&d->base);
        return NULL;
    }
    return &d->base;
}

/* dir/name.gz, else dir/name (torchvision's raw/ folder holds the unpacked files);
 * the .gz name when neither exists, so the error names what the package installs. */
static void pick_file(char *out, size_t size, const char *dir, const char *name) {
    struct stat st;
    snprintf(out, size, "%s/%s", dir, name);
    if (stat(out, &st) == 0) {
        snprintf(out, size, "%s/%s.gz", dir, name);
        if (stat(out, &st) != 0) snprintf(out, size, "%s/%s", dir, name);
        return;
    }
    snprintf(out, size, "%s/%s.gz", dir, name);
}

Dataset *dataset_fashion_mnist(const char *root, int train) {
    if (!root) root = FASHION_MNIST_DEFAULT_ROOT;
    const char *split = train ? "train" : "t10k";
    char images[4200], labels[4200], name[256];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    pick_file(images, sizeof images, root, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    pick_file(labels, sizeof labels, root, name);
    struct stat st;
    if (stat(images, &st) != 0 || stat(labels, &st) != 0) {
        moco_error("FashionMNIST: %s: no such file (Debian's dataset-fashion-mnist package installs the files in %s; "
                   "`make deps` installs it)",
                   stat(images, &st) != 0 ? images : labels, FASHION_MNIST_DEFAULT_ROOT);
        return NULL;
    }
    Dataset *ds = dataset_idx(images, labels, 10, fashion_mnist_classes);
    if (!ds) return NULL;
    char *full = malloc(strlen(root) + 64);
    if (full) {
        sprintf(full, "FashionMNIST(%s, %s)", root, train ? "train" : "test");
        free(ds->name);
        ds->name = full;
    }
    return ds;
}
