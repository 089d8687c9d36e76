/* core/io/npy.c: NumPy .npy reader and writer (format versions 1.0, 2.0, 3.0).
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for v1, uint32 LE for v2/v3),
 * then a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and a newline, then the raw data.  We parse only that dict shape and
 * reject anything else with a message naming the file. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "tensor.h"

#define NPY_MAX_HEADER (1 << 20)

/* Finds 'key' in the header dict and returns a pointer just past the ':' (spaces skipped). */
static const char *npy_find_key(const char *header, const char *key) {
    char quoted[32];
    for (int q = 0; q < 2; q++) {
        snprintf(quoted, sizeof quoted, q ? "\"%s\"" : "'%s'", key);
        const char *p = strstr(header, quoted);
        if (!p) continue;
        p += strlen(quoted);
        while (isspace((unsigned char)*p)) p++;
        if (*p != ':') return NULL;
        p++;
        while (isspace((unsigned char)*p)) p++;
        return p;
    }
    return NULL;
}

static int npy_parse_header(const char *path, const char *header, int *is_f8, int *ndim,
                            int64_t *shape) {
    const char *p = npy_find_key(header, "descr");
    if (!p || (*p != '\'' && *p != '"'))
        return moco_error("%s: .npy header has no 'descr' string", path);
    char quote = *p++;
    const char *end = strchr(p, quote);
    if (!end || end - p > 15) return moco_error("%s: malformed 'descr' in .npy header", path);
    char descr[16];
    memcpy(descr, p, (size_t)(end - p));
    descr[end - p] = 0;
    if (!strcmp(descr, "<f4")) *is_f8 = 0;
    else if (!strcmp(descr, "<f8")) *is_f8 = 1;
    else
        return moco_error("%s: unsupported dtype '%s' (only little-endian float32 '<f4' and float64 '<f8')",
                          path, descr);

    p = npy_find_key(header, "fortran_order");
    if (!p) return moco_error("%s: .npy header has no 'fortran_order'", path);
    if (!strncmp(p, "True", 4))
        return moco_error("%s: Fortran-order arrays are not supported (save with np.ascontiguousarray)", path);
    if (strncmp(p, "False", 5)) return moco_error("%s: malformed 'fortran_order' in .npy header", path);

    p = npy_find_key(header, "shape");
    if (!p || *p != '(') return moco_error("%s: .npy header has no 'shape' tuple", path);
    p++;
    int n = 0;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (*p == ')') break;
        if (!isdigit((unsigned char)*p)) return moco_error("%s: malformed 'shape' in .npy header", path);
        if (n == TENSOR_MAX_DIMS)
            return moco_error("%s: array has more than %d dimensions", path, TENSOR_MAX_DIMS);
        errno = 0;
        char *after;
        long long v = strtoll(p, &after, 10);
        if (errno || v < 0) return moco_error("%s: bad dimension in 'shape' of .npy header", path);
        shape[n++] = v;
        p = after;
        while (isspace((unsigned char)*p)) p++;
        if (*p == ',') p++;
        else if (*p != ')') return moco_error("%s: malformed 'shape' in .npy header", path);
    }
    *ndim = n;
    return 0;
}

Tensor *tensor_load_npy(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return moco_error("%s: cannot open: %s", path, strerror(errno)), NULL;
    Tensor *t = NULL;
    char *header = NULL;
    unsigned char magic[10];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6)) {
        moco_error("%s: not a .npy file (bad magic)", path);
        goto done;
    }
    int major = magic[6];
    uint32_t hlen;
    if (major == 1) {
        if (fread(magic, 1, 2, f) != 2) goto truncated;
        hlen = (uint32_t)magic[0] | (uint32_t)magic[1] << 8;
    } else if (major == 2 || major == 3) {
        if (fread(magic, 1, 4, f) != 4) goto truncated;
        hlen = (uint32_t)magic[0] | (uint32_t)magic[1] << 8 | (uint32_t)magic[2] << 16 |
               (uint32_t)magic[3] << 24;
    } else {
        moco_error("%s: unsupported .npy format version %d.%d", path, major, magic[7]);
        goto done;
    }
    if (hlen > NPY_MAX_HEADER) {
        moco_error("%s: .npy header length %u is implausible", path, hlen);
        goto done;
    }
    header = malloc(hlen + 1);
    if (!header) {
        moco_error("%s: out of memory", path);
        goto done;
    }
    if (fread(header, 1, hlen, f) != hlen) goto truncated;
    header[hlen] = 0;
    int is_f8 = 0, ndim = 0;
    int64_t shape[TENSOR_MAX_DIMS];
    if (npy_parse_header(path, header, &is_f8, &ndim, shape)) goto done;
    t = tensor_empty(ndim, shape);
    if (!t) {
        moco_error_prefix("%s: ", path);
        goto done;
    }
    if (!is_f8) {
        if (fread(t->data, sizeof(float), (size_t)t->numel, f) != (size_t)t->numel) goto truncated;
    } else {
        double buf[1024];
        for (int64_t i = 0; i < t->numel;) {
            size_t want = (size_t)(t->numel - i < 1024 ? t->numel - i : 1024);
            if (fread(buf, sizeof(double), want, f) != want) goto truncated;
            for (size_t j = 0; j < want; j++) t->data[i + (int64_t)j] = (float)buf[j];
            i += (int64_t)want;
        }
    }
    goto done;
truncated:
    moco_error("%s: file is truncated", path);
    tensor_free(t);
    t = NULL;
done:
    free(header);
    fclose(f);
    return t;
}

int tensor_save_npy(const Tensor *t, const char *path) {
    char header[256];
    int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < t->ndim; i++)
        n += snprintf(header + n, sizeof header - (size_t)n, "%lld,%s", (long long)t->shape[i],
                      i + 1 < t->ndim ? " " : "");
    n += snprintf(header + n, sizeof header - (size_t)n, "), }");
    /* Pad so that magic + length + header is a multiple of 64, ending in '\n'. */
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    memset(header + n, ' ', (size_t)pad);
    n += pad;
    header[n++] = '\n';
    /* Write beside the destination and rename, so a failed write (full disk) never
     * leaves a truncated file where a good one was. */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return moco_error("%s: path is too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return moco_error("%s: cannot open for writing: %s", path, strerror(errno));
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff),
                             (unsigned char)(n >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(header, 1, (size_t)n, f) == (size_t)n &&
             fwrite(t->data, sizeof(float), (size_t)t->numel, f) == (size_t)t->numel;
    int saved_errno = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved_errno = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        saved_errno = errno;
    }
    if (!ok) {
        remove(tmp);
        return moco_error("%s: write failed: %s", path, strerror(saved_errno));
    }
    return 0;
}
