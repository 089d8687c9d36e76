/* core/io/idx.c: IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
 *
 * Format: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
 * that many big-endian uint32 sizes, then exactly prod(sizes) bytes of data (torchvision
 * asserts the same).  zlib's gzread reads both compressed and plain files, so
 * "train-images-idx3-ubyte.gz" and its unpacked twin both work.
 *
 * The header is outside data, so it never decides an allocation on its own:
 *  - the product of the sizes is computed without overflow and bounded (IDX_MAX_BYTES);
 *  - a raw file must be exactly header + data long, checked before allocating;
 *  - a gzip stream cannot expand more than deflate's 1032:1, so a declared size beyond
 *    that of the compressed length is refused before allocating, and the buffer then grows
 *    only as decompressed data actually arrives (a 2 MB file claiming 10 GB costs 2 MB);
 *  - reading goes on to the end of the gzip stream, so zlib checks the CRC-32 and length
 *    in the trailer: a corrupted byte is an error, not a wrong pixel. */
#include "idx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "error.h"
#include "io/file.h"

/* 4 GiB of pixels: 30 times EMNIST, the largest IDX data set in use. */
#define IDX_MAX_BYTES ((int64_t)1 << 32)
/* The best ratio deflate can reach (258-byte matches in 2 bits), plus room for headers. */
#define DEFLATE_MAX_RATIO 1032
#define DEFLATE_SLACK 4096
/* Decompressed bytes per gzread, and the first buffer size. */
#define IDX_CHUNK ((size_t)1 << 20)

/* "data error: incorrect data check" and friends, or the system error. */
static const char *gz_message(gzFile f) {
    int code;
    const char *msg = gzerror(f, &code);
    if (code == Z_ERRNO) return strerror(errno);
    return msg && msg[0] ? msg : "unexpected end of file";
}

/* Reads exactly n bytes; 1 at the end of the data, -1 on a zlib error. */
static int read_exact(gzFile f, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > IDX_CHUNK ? (unsigned)IDX_CHUNK : (unsigned)(n - done);
        int got = gzread(f, (char *)buf + done, chunk);
        if (got < 0) return -1;
        if (got == 0) return 1;
        done += (size_t)got;
    }
    return 0;
}

/* The data section into a buffer that grows with what arrives, at most `count` bytes. */
static int read_data(gzFile f, const char *path, int64_t count, uint8_t **out) {
    size_t cap = count < (int64_t)IDX_CHUNK ? (size_t)(count ? count : 1) : IDX_CHUNK, have = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) return moco_error("%s: out of memory", path);
    while (have < (size_t)count) {
        if (have == cap) {
            size_t bigger = cap * 2 > (size_t)count ? (size_t)count : cap * 2;
            uint8_t *grown = realloc(buf, bigger);
            if (!grown) {
                free(buf);
                return moco_error("%s: out of memory for %lld bytes", path, (long long)count);
            }
            buf = grown;
            cap = bigger;
        }
        if (moco_interrupt_requested) {
            free(buf);
            return moco_error("%s: interrupted", path);
        }
        size_t want = cap - have > IDX_CHUNK ? IDX_CHUNK : cap - have;
        int got = gzread(f, buf + have, (unsigned)want);
        if (got <= 0) {
            int rc = got < 0 ? moco_error("%s: corrupt IDX data after %zu of %lld bytes: %s", path, have,
                                          (long long)count, gz_message(f))
                             : moco_error("%s: IDX data is truncated (%zu of the %lld bytes its header declares)",
                                          path, have, (long long)count);
            free(buf);
            return rc;
        }
        have += (size_t)got;
    }
    /* Up to the end of the stream, so the gzip trailer (CRC-32, length) is checked. */
    unsigned char extra;
    int got = gzread(f, &extra, 1);
    if (got != 0) {
        int rc = got < 0 ? moco_error("%s: corrupt gzip stream: %s", path, gz_message(f))
                         : moco_error("%s: more data than the IDX header declares (%lld bytes): not an IDX file, "
                                      "or a corrupt one", path, (long long)count);
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

int idx_load(const char *path, IdxArray *out) {
    memset(out, 0, sizeof *out);
    int64_t file_size = 0;
    int fd = file_open_regular(path, &file_size);
    if (fd < 0) return -1;
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        return moco_error("%s: cannot open: out of memory", path);
    }
    unsigned char head[4];
    int rc = -1;
    int got = read_exact(f, head, 4);
    if (got) {
        if (got < 0) moco_error("%s: corrupt gzip stream: %s", path, gz_message(f));
        else moco_error("%s: file is too short to be an IDX file", path);
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
        if ((got = read_exact(f, b, 4)) != 0) {
            if (got < 0) moco_error("%s: corrupt gzip stream: %s", path, gz_message(f));
            else moco_error("%s: truncated IDX header", path);
            goto done;
        }
        out->shape[i] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        if (__builtin_mul_overflow(count, out->shape[i], &count) || count > IDX_MAX_BYTES) {
            moco_error("%s: IDX sizes are implausibly large (more than %lld bytes of data)", path,
                       (long long)IDX_MAX_BYTES);
            goto done;
        }
    }
    int64_t header_bytes = 4 + 4 * (int64_t)out->ndim;
    if (gzdirect(f)) {
        if (header_bytes + count > file_size) {
            moco_error("%s: IDX data is truncated (the header declares %lld bytes of data, the file holds %lld)", path,
                       (long long)count, (long long)(file_size - header_bytes));
            goto done;
        }
        if (header_bytes + count < file_size) {
            moco_error("%s: the IDX header declares %lld bytes of data but the file holds %lld: trailing data (not an "
                       "IDX file, or a corrupt one)", path, (long long)count, (long long)(file_size - header_bytes));
            goto done;
        }
    } else if (count > DEFLATE_MAX_RATIO * file_size + DEFLATE_SLACK) {
        moco_error("%s: the IDX header declares %lld bytes of data, more than a %lld-byte gzip file can hold: the "
                   "file is truncated or corrupt", path, (long long)count, (long long)file_size);
        goto done;
    }
    if (read_data(f, path, count, &out->data)) goto done;
    out->count = count;
    rc = 0;
done:
    gzclose(f);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

void idx_free(IdxArray *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
