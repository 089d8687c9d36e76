/* core/data/cifar.c: CIFAR-10 and CIFAR-100 in their official binary formats
 * (cs.toronto.edu/~kriz/cifar.html, the "binary version" archives).  The Python version
 * (what torchvision downloads) is recognised and refused with directions, never unpickled.
 *
 * Every record is its label byte(s) then 3072 pixel bytes: the red, green and blue
 * planes of a 32x32 image, rows first.  The files are read whole at construction (150 MB
 * for the training set) and kept as records; dataset_get interleaves one into HWC. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"
#include "error.h"
#include "io/file.h"

#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE)

static const char *const cifar10_classes[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                "dog",      "frog",       "horse", "ship", "truck"};

/* fine_label_names.txt of cifar-100-binary, in label order. */
static const char *const cifar100_classes[100] = {
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee",
    "beetle", "bicycle", "bottle", "bowl", "boy", "bridge", "bus",
    "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair",
    "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile",
    "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower",
    "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter",
    "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper",
    "table", "tank", "telephone", "television", "tiger", "tractor", "train",
    "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm",
};

typedef struct CifarDataset {
    Dataset base;
    uint8_t *records;
    int record_size;   /* label bytes + CIFAR_PIXELS */
    int label_offset;  /* the byte used as label: 0 (CIFAR-10) or 1 (CIFAR-100 fine) */
} CifarDataset;

static int cifar_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    const CifarDataset *c = (const CifarDataset *)ds;
    const uint8_t *rec = c->records + (size_t)index * (size_t)c->record_size;
    *label = rec[c->label_offset];
    if (image_alloc(out, CIFAR_SIDE, CIFAR_SIDE, 3)) return -1;
    const uint8_t *planes = rec + c->record_size - CIFAR_PIXELS;
    const int plane = CIFAR_SIDE * CIFAR_SIDE;
    for (int p = 0; p < plane; p++)
        for (int ch = 0; ch < 3; ch++) out->data[3 * p + ch] = planes[ch * plane + p];
    return 0;
}

static int64_t cifar_label(const Dataset *ds, int64_t index) {
    const CifarDataset *c = (const CifarDataset *)ds;
    return c->records[(size_t)index * (size_t)c->record_size + (size_t)c->label_offset];
}

static void cifar_destroy(Dataset *ds) { free(((CifarDataset *)ds)->records); }

static const DatasetOps cifar_ops = {cifar_get, cifar_label, NULL, cifar_destroy, NULL, NULL};

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Appends the records of one file to *buf (growing it) after checking its size and labels. */
static int read_records(const char *path, const char *what, int record_size, int label_bytes,
                        const int *label_limits, uint8_t **buf, int64_t *count) {
    int64_t size = 0;
    FILE *f = file_fopen_regular(path, &size);
    if (!f) return moco_error_prefix("%s: ", what);
    if (size == 0 || size % record_size != 0) {
        fclose(f);
        return moco_error("%s: %s: size %lld is not a positive multiple of the %d-byte record "
                          "(is this the binary version of the dataset?)",
                          what, path, (long long)size, record_size);
    }
    int64_t n = size / record_size;
    uint8_t *grown = realloc(*buf, (size_t)((*count + n) * record_size));
    if (!grown) {
        fclose(f);
        return moco_error("%s: %s: out of memory", what, path);
    }
    *buf = grown;
    uint8_t *dst = grown + (size_t)(*count * record_size);
    size_t got = fread(dst, 1, (size_t)size, f);
    fclose(f);
    if ((int64_t)got != size) return moco_error("%s: %s: read error (got %zu of %lld bytes)", what, path, got, (long long)size);
    for (int64_t r = 0; r < n; r++)
        for (int b = 0; b < label_bytes; b++)
            if (dst[r * record_size + b] >= label_limits[b])
                return moco_error("%s: %s: record %lld has label %d, expected 0..%d (is the file corrupt?)", what,
                                  path, (long long)r, dst[r * record_size + b], label_limits[b] - 1);
    *count += n;
    return 0;
}

/* Whether root is (or holds) the Python version, as torchvision downloads it: a directory
 * cifar-10-batches-py / cifar-100-python, pickled batches named without .bin (data_batch_1,
 * test_batch; train, test), or root itself a pickle (protocol 2+ starts with 0x80).  It is
 * never unpickled: a pickle can run code.  Fills `found` with what gave it away. */
static int is_python_version(const char *root, int cifar100, char *found, size_t size) {
    const char *pydir = cifar100 ? "cifar-100-python" : "cifar-10-batches-py";
    static const char *const names10[] = {"data_batch_1", "test_batch"}, *const names100[] = {"train", "test"};
    const char *const *names = cifar100 ? names100 : names10;
    struct stat st;
    snprintf(found, size, "%s/%s", root, pydir);
    if (stat(found, &st) == 0 && S_ISDIR(st.st_mode)) return 1;
    for (int i = 0; i < 2; i++) {
        snprintf(found, size, "%s/%s", root, names[i]);
        if (is_file(found)) return 1;
        snprintf(found, size, "%s/%s/%s", root, pydir, names[i]);
        if (is_file(found)) return 1;
    }
    snprintf(found, size, "%s", root);
    if (!is_file(root)) return 0;
    FILE *f = file_fopen_regular(root, NULL);
    int first = f ? fgetc(f) : EOF;
    if (f) fclose(f);
    return first == 0x80;
}

static Dataset *cifar_open(const char *root, int train, int cifar100) {
    const char *what = cifar100 ? "CIFAR100" : "CIFAR10";
    const char *subdir = cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";
    const char *probe = cifar100 ? (train ? "train.bin" : "test.bin") : (train ? "data_batch_1.bin" : "test_batch.bin");
    char dir[4096], path[4200];
    /* root may be the directory with the .bin files or the one the archive unpacked into. */
    snprintf(dir, sizeof dir, "%s", root);
    snprintf(path, sizeof path, "%s/%s", root, probe);
    if (!is_file(path)) {
        snprintf(path, sizeof path, "%s/%s/%s", root, subdir, probe);
        if (is_file(path)) snprintf(dir, sizeof dir, "%s/%s", root, subdir);
    }
    const char *files[5];
    int nfiles = 0;
    if (cifar100) {
        files[nfiles++] = probe;
    } else if (train) {
        static const char *const batches[5] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                               "data_batch_4.bin", "data_batch_5.bin"};
        for (int i = 0; i < 5; i++) files[nfiles++] = batches[i];
    } else {
        files[nfiles++] = "test_batch.bin";
    }
    const int limits10[1] = {10}, limits100[2] = {20, 100};
    int label_bytes = cifar100 ? 2 : 1, record_size = label_bytes + CIFAR_PIXELS;
    uint8_t *records = NULL;
    int64_t count = 0;
    for (int i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        char python[4200];
        if (!is_file(path) && is_python_version(root, cifar100, python, sizeof python)) {
            free(records);
            moco_error("%s: %s is the Python (pickle) version of %s, as torchvision downloads it; moco-lua reads "
                       "the binary version only (it never unpickles: a pickle can run code). Get "
                       "https://www.cs.toronto.edu/~kriz/%s, unpack it and pass the directory holding %s",
                       what, python, cifar100 ? "CIFAR-100" : "CIFAR-10",
                       cifar100 ? "cifar-100-binary.tar.gz" : "cifar-10-binary.tar.gz", subdir);
            return NULL;
        }
        if (!is_file(path)) {
            free(records);
            moco_error("%s: %s: no such file (expected the binary version, %s from %s, in %s or %s/%s)", what,
                       path, cifar100 ? "train.bin and test.bin" : "data_batch_1..5.bin and test_batch.bin",
                       cifar100 ? "cifar-100-binary.tar.gz" : "cifar-10-binary.tar.gz", root, root, subdir);
            return NULL;
        }
        if (read_records(path, what, record_size, label_bytes, cifar100 ? limits100 : limits10, &records, &count)) {
            free(records);
            return NULL;
        }
    }
    char name[4300];
    snprintf(name, sizeof name, "%s(%s, %s)", what, dir, train ? "train" : "test");
    CifarDataset *c = (CifarDataset *)dataset_alloc(sizeof *c, &cifar_ops, name);
    if (!c) {
        free(records);
        return NULL;
    }
    c->records = records;
    c->record_size = record_size;
    c->label_offset = cifar100 ? 1 : 0;
    c->base.length = count;
    if (dataset_set_classes(&c->base, cifar100 ? 100 : 10, cifar100 ? cifar100_classes : cifar10_classes)) {
        dataset_release(&c->base);
        return NULL;
    }
    return &c->base;
}

Dataset *dataset_cifar10(const char *root, int train) { return cifar_open(root, train, 0); }
Dataset *dataset_cifar100(const char *root, int train) { return cifar_open(root, train, 1); }
