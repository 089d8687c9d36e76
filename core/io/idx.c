/* core/io/idx.c: IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
 *
 * Format: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
 * that many big-endian uint32 sizes, then the data.  zlib's gzread reads both compressed
 * and plain files, so "train-images-idx3-ubyte.gz" and its unpacked twin both work. */
#include "idx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "error.h"

#define IDX_MAX_BYTES ((int64_t)1 << 34)

static int read_exact(gzFile f, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > (1u << 30) ? (1u << 30) : (unsigned)(n - done);
        int got = gzread(f, (char *)buf + done, chunk);
        if (got <= 0) return -1;
        done += (size_t)got;
    }
    return 0;
}

int idx_load(const char *path, IdxArray *out) {
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f) return moco_error("%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    unsigned char head[4];
    int rc = -1;
    if (read_exact(f, head, 4)) {
        moco_error("%s: file is too short to be an IDX file", path);
        goto done;
    }
    if (head[0] != 0 || head[1] != 0) {
        moco_error("%s: not an IDX file (bad magic %02x %02x)", path, head[0], head[1]);
        goto done;
    }
    if (head[2] != 0x08) {
        moco_error("%s: IDX element type 0x%02x is not supported (only 0x08, unsigned byte)", path, head[2]);
        goto done;
    }
    if (head[3] < 1 || head[3] > IDX_MAX_DIMS) {
        moco_error("%s: IDX file has %d dimensions (1 to %d supported)", path, head[3], IDX_MAX_DIMS);
        goto done;
    }
    out->ndim = head[3];
    int64_t count = 1;
    for (int i = 0; i < out->ndim; i++) {
        unsigned char b[4];
        if (read_exact(f, b, 4)) {
            moco_error("%s: truncated IDX header", path);
            goto done;
        }
        out->shape[i] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        count *= out->shape[i];
        if (count > IDX_MAX_BYTES) {
            moco_error("%s: IDX sizes are implausibly large", path);
            goto done;
        }
    }
    out->data = malloc((size_t)(count ? count : 1));
    if (!out->data) {
        moco_error("%s: out of memory for %lld bytes", path, (long long)count);
        goto done;
    }
    if (count && read_exact(f, out->data, (size_t)count)) {
        moco_error("%s: IDX data is truncated (expected %lld bytes)", path, (long long)count);
        free(out->data);
        out->data = NULL;
        goto done;
    }
    out->count = count;
    rc = 0;
done:
    gzclose(f);
    return rc;
}

void idx_free(IdxArray *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
