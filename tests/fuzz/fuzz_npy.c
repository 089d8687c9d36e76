/* tests/fuzz/fuzz_npy.c: .npy files through tensor_load_npy (moco.load_npy). */
#include "fuzz.h"
#include "tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    Tensor *t = tensor_load_npy(path);
    if (t) {
        volatile float sum = 0;
        for (int64_t i = 0; i < t->numel; i++) sum += t->data[i];
        tensor_free(t);
    }
    close(fd);
    return 0;
}
