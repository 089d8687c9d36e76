/* tests/fuzz/fuzz_idx.c: IDX files (MNIST format), raw and gzip, through idx_load and the
 * IDX dataset.  The first byte of the input chooses how the rest becomes the file: odd,
 * gzip-compressed here (so the fuzzer explores the IDX structure behind a valid gzip
 * layer); even, as it is (a raw IDX file, or gzip bytes for the fuzzer to damage). */
#include <zlib.h>

#include "data/dataset.h"
#include "fuzz.h"
#include "io/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    char path[64];
    int fd;
    if (data[0] & 1) {
        fd = memfd_create("fuzz-idx", MFD_CLOEXEC);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        gzFile g = gzdopen(dup(fd), "wb1");
        if (!g) abort();
        if (size > 1) gzwrite(g, data + 1, (unsigned)(size - 1));
        gzclose(g);
    } else {
        fd = fuzz_file(data + 1, size - 1, path, sizeof path);
    }
    IdxArray a;
    if (idx_load(path, &a) == 0) idx_free(&a);
    /* The same file as images and as labels: exercises the shape checks. */
    Dataset *ds = dataset_idx(path, path, 0, NULL);
    if (ds) {
        for (int64_t i = 0; i < dataset_length(ds) && i < 8; i++) {
            Image img;
            int64_t label;
            if (dataset_get(ds, i, &img, &label) == 0) image_free(&img);
        }
        dataset_release(ds);
    }
    close(fd);
    return 0;
}
