/* tests/fuzz/fuzz_torchfile.c: libFuzzer target for the torch.save reader (core/io/pickle.c,
 * core/io/torchfile.c).
 *
 * Each input is a whole file, opened from memory (fmemopen); when it opens, every tensor is
 * read.  Any outcome but a crash, a sanitizer report, a leak or a hang is fine: the reader
 * must refuse what it cannot read with an error.  Seeds: tests/fuzz/corpus/torchfile/ (small
 * files of both layouts, from tests/fixtures/torch/).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore tests/fuzz/fuzz_torchfile.c \
 *     core/io/pickle.c core/io/torchfile.c core/tensor.c core/rng.c core/error.c core/gemm.c \
 *     core/threads.c -lopenblas -lm -lpthread -o build/fuzz_torchfile
 *   build/fuzz_torchfile -max_len=65536 tests/fuzz/corpus/torchfile */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "io/torchfile.h"
#include "tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return 0;
    TorchFile tf;
    if (torch_file_open_stream(&tf, f, "fuzz") != 0) return 0; /* f is closed by the reader */
    for (size_t i = 0; i < tf.tensor_count; i++) tensor_free(torch_file_read_tensor(&tf, tf.tensors[i], NULL));
    torch_file_close(&tf);
    return 0;
}
