/* core/data/dataset.h: datasets that loader worker threads read without the Lua VM.
 *
 * A Dataset is an immutable, reference-counted list of (image, label) samples: once built,
 * dataset_get may be called from any number of threads at once.  Labels are 0-based class
 * values, as in torchvision.  Images come back as 8-bit HWC Images (core/image/image.h):
 * gray datasets (MNIST, Fashion-MNIST) as 1 channel, CIFAR as 3, ImageFolder as the
 * constructor asks (3 by default, like torchvision's loader, which converts to RGB).
 *
 * Constructors validate everything they can (files present, sizes, label ranges) before
 * returning, so a bad path fails at construction with a message naming it; only image
 * decoding (ImageFolder) can fail later, in dataset_get, with a message naming the file. */
#ifndef MOCO_DATASET_H
#define MOCO_DATASET_H

#include <stdint.h>

#include "image/image.h"

typedef struct Dataset Dataset;

/* What a dataset of fetched samples (below) hands the loader for one sample: the sample
 * itself, or where the workers find it, or why it could not be had. */
typedef enum SampleSourceKind {
    SAMPLE_NONE = 0,
    SAMPLE_IMAGE,      /* image: decoded already, used as it is */
    SAMPLE_PATH,       /* path: a file the workers decode with image_load(path, channels) */
    SAMPLE_BYTES,      /* bytes[0, size): an encoded file (PNG, JPEG, ...) they decode with image_decode */
    SAMPLE_FAILED,     /* error: why fetching failed (a per-sample error, as a corrupt file is) */
} SampleSourceKind;

typedef struct SampleSource {
    SampleSourceKind kind;
    Image image;
    char *path;
    uint8_t *bytes;
    size_t size;
    char *error;
    int64_t label;
} SampleSource;

void sample_source_free(SampleSource *s);   /* frees what it owns and zeroes it; NULL is fine */

typedef struct DatasetOps {
    /* Decodes sample `index` (already range-checked) into *out (freed by the caller with
     * image_free) and its label into *label.  Thread-safe.  Returns 0 or -1. */
    int (*get)(const Dataset *ds, int64_t index, Image *out, int64_t *label);
    int64_t (*label)(const Dataset *ds, int64_t index);       /* without decoding */
    const char *(*sample_path)(const Dataset *ds, int64_t index); /* NULL: in memory */
    void (*destroy)(Dataset *ds);                               /* frees the subtype's data */
    /* Datasets of fetched samples only (NULL for the others), see dataset_external:
     * fetch fills *out for sample `index` on the loader's calling thread; decode_fetched
     * turns a fetched source into the image (any thread). */
    int (*fetch)(const Dataset *ds, int64_t index, SampleSource *out);
    int (*decode_fetched)(const Dataset *ds, int64_t index, const SampleSource *src, Image *out, int64_t *label);
} DatasetOps;

struct Dataset {
    const DatasetOps *ops;
    char *name;          /* e.g. "CIFAR10(/data/cifar, train)", for messages */
    int64_t length;
    int num_classes;
    char **classes;      /* num_classes names */
    int refcount;        /* atomic; starts at 1 */
};

int64_t dataset_length(const Dataset *ds);
int dataset_num_classes(const Dataset *ds);
const char *dataset_class_name(const Dataset *ds, int c);   /* NULL when out of range */
/* Sample `index` (0-based) into *out and *label; an out-of-range index is an error. */
int dataset_get(const Dataset *ds, int64_t index, Image *out, int64_t *label);
int64_t dataset_label(const Dataset *ds, int64_t index);   /* -1 when out of range */
/* The file behind a sample (ImageFolder, ImageFiles, FileList), or NULL. */
const char *dataset_sample_path(const Dataset *ds, int64_t index);

Dataset *dataset_retain(Dataset *ds);
void dataset_release(Dataset *ds);  /* frees with the last reference; NULL is fine */

/* ---- torchvision.datasets.ImageFolder ----
 * root/<class>/[subdirs/]<file>: classes are the sorted names of root's sub-directories
 * (symbolic links followed), class c gets label c; files are walked recursively and
 * ordered exactly as torchvision's make_dataset (directories by their path, files by
 * name, byte order).  A file counts as an image when its lower-cased name ends in one of
 * torchvision's IMG_EXTENSIONS; other files are skipped and counted in the report.  Like
 * torchvision, a class without any image file is an error.  channels: 3 (RGB, like
 * torchvision's default loader), 1 (gray) or 0 (as stored). */
#define IMAGE_FOLDER_EXTENSIONS ".jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp"

typedef struct ImageFolderReport {
    int64_t skipped_files;      /* files without an image extension */
    char first_skipped[512];    /* one of them, for the message ("" when none) */
} ImageFolderReport;

Dataset *dataset_image_folder(const char *root, int channels, ImageFolderReport *report);

/* ---- ImageFiles: an ImageFolder without classes ----
 * Every image file under root, recursively, with label -1 and no classes: torchvision has
 * no such dataset (its ImageFolder insists on class folders), so this is ImageFolder's
 * walk applied to root itself.  The order is what sorted(os.walk(root, followlinks=True))
 * then sorted(files) gives, and the extension rules, the link handling and the report of
 * skipped files are ImageFolder's.  A root without any image file is an error naming it. */
Dataset *dataset_image_files(const char *root, int channels, ImageFolderReport *report);

/* ---- FileList: a text or CSV file of image paths with optional labels ----
 * One sample a line: a path relative to root (NULL or "": the list's directory), then
 * optionally a label, a non-negative integer.  Fields are separated by white space or by
 * one comma (delimiter ' ' or ','; 0 decides from the first sample line: a comma makes it
 * CSV).  A first line "path,label" (or "path label", or "path") is a header and skipped;
 * empty lines and lines starting with '#' are skipped; CR LF line ends and a UTF-8 byte
 * order mark are accepted.  Either every sample has a label or none has (then they are
 * -1); there are no class names.  Refused, with the list's path and the 1-based line: an
 * absolute path, a path with a ".." component, a listed file that does not exist or is
 * not a regular file, a label that is not a non-negative integer (at most 2^31 - 1), more
 * than two fields, quoted CSV fields, a NUL byte; a list above FILE_LIST_MAX_BYTES or
 * FILE_LIST_MAX_LINES lines.  channels as ImageFolder. */
#define FILE_LIST_MAX_BYTES ((size_t)1 << 30)
#define FILE_LIST_MAX_LINES 2147483647LL
Dataset *dataset_file_list(const char *list_path, const char *root, int channels, int delimiter);

/* ---- CIFAR-10 / CIFAR-100, the official binary versions ----
 * root is the directory holding the .bin files, or its parent holding
 * cifar-10-batches-bin/ (resp. cifar-100-binary/).  CIFAR-10: data_batch_1..5.bin
 * (train) or test_batch.bin, records of 1 label byte + 3072 pixel bytes (R, G and B
 * planes of 32x32).  CIFAR-100: train.bin or test.bin, records of a coarse and a fine
 * label byte + 3072 pixel bytes; the fine label (100 classes) is used, as torchvision. */
Dataset *dataset_cifar10(const char *root, int train);
Dataset *dataset_cifar100(const char *root, int train);

/* ---- IDX (MNIST format) ----
 * images: (N, H, W) or (N, H, W, C) with C in {1, 3}; labels: (N).  Raw or gzip.
 * class_names may be NULL: the classes are then "0".."K-1" with K = 1 + the largest label. */
Dataset *dataset_idx(const char *images_path, const char *labels_path, int num_names,
                     const char *const *class_names);

/* Fashion-MNIST from root (NULL: FASHION_MNIST_DEFAULT_ROOT, where Debian's
 * dataset-fashion-mnist package installs it): {train,t10k}-{images-idx3,labels-idx1}-ubyte
 * with or without .gz.  Classes as torchvision.datasets.FashionMNIST.classes. */
#define FASHION_MNIST_DEFAULT_ROOT "/usr/share/datasets/fashion-mnist"
Dataset *dataset_fashion_mnist(const char *root, int train);

/* ---- samples fetched on the loader's calling thread (a dataset written in Lua) ----
 * Some samples can only be had on one thread: a Lua dataset's get(i) runs in the Lua
 * state, which is not thread-safe.  Such a dataset is made with the caller's `fetch`
 * function, which the loader calls on its calling thread only (inside loader_next, never
 * from a worker and never with its lock held) for each sample of a batch before the
 * workers start on it.  fetch fills a SampleSource: a decoded image, a path or encoded
 * bytes (which the workers decode, with `channels` as ImageFolder's), or SAMPLE_FAILED
 * with the reason.  fetch returns 0 (also for SAMPLE_FAILED: that sample fails as a
 * corrupt file does, and on_error decides), or -1 with a message to stop the loader_next
 * that called it (an interrupt, out of memory).  `ctx` is fetch's, and must outlive the
 * dataset.  Messages name the sample as "item <index + index_base>" (1 for a caller
 * counting from 1, as Lua's get(i)).  dataset_get on such a dataset is an error: only a
 * loader reads it.  label() is -1: the labels come with the fetched samples. */
typedef int (*DatasetFetchFn)(void *ctx, int64_t index, SampleSource *out);
Dataset *dataset_external(const char *name, int64_t length, int channels, int64_t index_base,
                          DatasetFetchFn fetch, void *ctx);
/* "<name>: item <i> (<path>)" or "<name>: bytes of item <i>" or "<name>: item <i>", for
 * messages about a fetched sample (a failing transform). */
void dataset_describe_fetched(const Dataset *ds, int64_t index, const SampleSource *src, char *buf, size_t size);

/* ---- torch.utils.data.Subset: samples indices[0..n) (0-based) of source ---- */
Dataset *dataset_subset(Dataset *source, const int64_t *indices, int64_t n);

/* ---- for the dataset implementations ----
 * Allocates a zeroed subtype struct of `size` bytes (whose first member is a Dataset)
 * with refcount 1 and the given name; NULL with a message on failure. */
Dataset *dataset_alloc(size_t size, const DatasetOps *ops, const char *name);
/* Copies the names into ds->classes.  Returns 0 or -1. */
int dataset_set_classes(Dataset *ds, int n, const char *const *names);

#endif
