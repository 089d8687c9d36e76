/* core/io/idx.h: reading IDX (MNIST-format) files of unsigned bytes, gzip or raw. */
#ifndef MOCO_IDX_H
#define MOCO_IDX_H

#include <stdint.h>

#define IDX_MAX_DIMS 4

typedef struct IdxArray {
    uint8_t *data;                /* count bytes, row-major */
    int ndim;
    int64_t shape[IDX_MAX_DIMS];
    int64_t count;
} IdxArray;

/* Returns 0, or -1 with a message naming the file. */
int idx_load(const char *path, IdxArray *out);
void idx_free(IdxArray *a);

#endif
