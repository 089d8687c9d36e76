/* tests/fuzz/fuzz_cifar.c: CIFAR-10/100 binary files: the input as test_batch.bin
 * (CIFAR-10) and as test.bin (CIFAR-100) in a directory of their own, opened through the
 * datasets, every sample read. */
#include <sys/stat.h>

#include "data/dataset.h"
#include "fuzz.h"

static void read_all(Dataset *ds) {
    if (!ds) return;
    for (int64_t i = 0; i < dataset_length(ds); i++) {
        Image img;
        int64_t label;
        if (dataset_get(ds, i, &img, &label) == 0) image_free(&img);
        if (dataset_label(ds, i) != label) abort();
    }
    dataset_release(ds);
}

static char dir[64];

/* The scratch directory goes with the process (the files are unlinked after every input). */
static void remove_dir(void) { rmdir(dir); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz_cifar_%ld", (long)getpid());
        mkdir(dir, 0700);
        atexit(remove_dir);
    }
    char p10[128], p100[128];
    snprintf(p10, sizeof p10, "%s/test_batch.bin", dir);
    snprintf(p100, sizeof p100, "%s/test.bin", dir);
    FILE *f = fopen(p10, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    unlink(p100);
    if (link(p10, p100) != 0) abort();
    read_all(dataset_cifar10(dir, 0));
    read_all(dataset_cifar100(dir, 0));
    unlink(p10);
    unlink(p100);
    return 0;
}
