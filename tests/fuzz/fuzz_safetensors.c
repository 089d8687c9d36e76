/* tests/fuzz/fuzz_safetensors.c: safetensors files (moco.load, moco.safe_open,
 * checkpoints): the header, every tensor's data, and the metadata lookups. */
#include "fuzz.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    SafetensorsFile sf;
    if (safetensors_open(&sf, path) == 0) {
        for (size_t i = 0; i < sf.count; i++) {
            Tensor *t = safetensors_read_tensor(&sf, &sf.entries[i]);
            tensor_free(t);
            if (safetensors_find(&sf, sf.entries[i].name) != &sf.entries[i]) abort();
        }
        for (size_t i = 0; i < sf.metadata_count; i++)
            if (safetensors_metadata(&sf, sf.metadata_keys[i]) != sf.metadata_values[i]) abort();
        safetensors_close(&sf);
    }
    close(fd);
    return 0;
}
