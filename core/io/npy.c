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
#include "io/file.h"
#include "tensor.h"

#define NPY_MAX_HEADER (1 << 20)

/* The header is a Python dict literal; numpy's reader accepts exactly the keys descr,
 * fortran_order and shape, so we parse it as a literal (strings, True/False, a tuple of
 * integers) rather than searching for substrings: a key's name inside a string value is
 * just part of that string. */
typedef struct NpyCursor {
    const char *p, *path;
} NpyCursor;

static void npy_skip_space(NpyCursor *c) {
    while (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r') c->p++;
}

/* A quoted string without escapes into out (at most size - 1 characters). */
static int npy_string(NpyCursor *c, char *out, size_t size, const char *what) {
    char quote = *c->p;
    if (quote != '\'' && quote != '"') return moco_error("%s: .npy header: %s must be a string", c->path, what);
    const char *start = ++c->p;
    while (*c->p && *c->p != quote) {
        if (*c->p == '\\') return moco_error("%s: .npy header: escapes in %s are not supported", c->path, what);
        c->p++;
    }
    if (*c->p != quote) return moco_error("%s: .npy header: unterminated string in %s", c->path, what);
    size_t n = (size_t)(c->p - start);
    c->p++;
    if (n >= size) return moco_error("%s: .npy header: %s is too long", c->path, what);
    memcpy(out, start, n);
    out[n] = 0;
    return 0;
}

static int npy_shape(NpyCursor *c, int *ndim, int64_t *shape) {
    if (*c->p != '(') return moco_error("%s: .npy header: 'shape' must be a tuple", c->path);
    c->p++;
    int n = 0;
    for (;;) {
        npy_skip_space(c);
        if (*c->p == ')') break;
        if (!isdigit((unsigned char)*c->p)) return moco_error("%s: malformed 'shape' in .npy header", c->path);
        if (n == TENSOR_MAX_DIMS) return moco_error("%s: array has more than %d dimensions", c->path, TENSOR_MAX_DIMS);
        errno = 0;
        char *after;
        long long v = strtoll(c->p, &after, 10);
        if (errno) return moco_error("%s: bad dimension in 'shape' of .npy header", c->path);
        shape[n++] = v;
        c->p = after;
        if (*c->p == 'L') c->p++; /* Python 2's long literals, as numpy's reader allows */
        npy_skip_space(c);
        if (*c->p == ',') c->p++;
        else if (*c->p != ')') return moco_error("%s: malformed 'shape' in .npy header", c->path);
    }
    c->p++;
    *ndim = n;
    return 0;
}

static int npy_parse_header(const char *path, const char *header, int *is_f8, int *ndim, int64_t *shape) {
    NpyCursor c = {header, path};
    int seen_descr = 0, seen_order = 0, seen_shape = 0;
    char descr[16] = "";
    npy_skip_space(&c);
    if (*c.p++ != '{') return moco_error("%s: .npy header is not a dict literal", path);
    for (;;) {
        npy_skip_space(&c);
        if (*c.p == '}') break;
        char key[32];
        if (npy_string(&c, key, sizeof key, "a key")) return -1;
        npy_skip_space(&c);
        if (*c.p++ != ':') return moco_error("%s: .npy header: expected ':' after '%s'", path, key);
        npy_skip_space(&c);
        int *seen = !strcmp(key, "descr") ? &seen_descr : !strcmp(key, "fortran_order") ? &seen_order
                  : !strcmp(key, "shape") ? &seen_shape : NULL;
        if (!seen) return moco_error("%s: .npy header has an unexpected key '%s' (numpy writes descr, "
                                     "fortran_order and shape only)", path, key);
        if (*seen) return moco_error("%s: .npy header has the key '%s' twice", path, key);
        *seen = 1;
        if (seen == &seen_descr) {
            if (npy_string(&c, descr, sizeof descr, "'descr'")) return -1;
        } else if (seen == &seen_order) {
            if (!strncmp(c.p, "True", 4))
                return moco_error("%s: Fortran-order arrays are not supported (save with np.ascontiguousarray)", path);
            if (strncmp(c.p, "False", 5)) return moco_error("%s: malformed 'fortran_order' in .npy header", path);
            c.p += 5;
        } else if (npy_shape(&c, ndim, shape)) {
            return -1;
        }
        npy_skip_space(&c);
        if (*c.p == ',') c.p++;
        else if (*c.p != '}') return moco_error("%s: .npy header: expected ',' or '}' after '%s'", path, key);
    }
    c.p++;
    npy_skip_space(&c);
    if (*c.p) return moco_error("%s: .npy header: unexpected text after the dict", path);
    if (!seen_descr || !seen_order || !seen_shape)
        return moco_error("%s: .npy header has no '%s'", path,
                          !seen_descr ? "descr" : !seen_order ? "fortran_order" : "shape");
    if (!strcmp(descr, "<f4")) *is_f8 = 0;
    else if (!strcmp(descr, "<f8")) *is_f8 = 1;
    else
        return moco_error("%s: unsupported dtype '%s' (only little-endian float32 '<f4' and float64 '<f8')",
                          path, descr);
    return 0;
}

Tensor *tensor_load_npy(const char *path) {
    int64_t file_size = 0;
    FILE *f = file_fopen_regular(path, &file_size);
    if (!f) return NULL;
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
    /* The data must be in the file before we allocate for it. */
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(numel, shape[d], &numel)) numel = INT64_MAX;
    int64_t have = file_size - (int64_t)ftello(f);
    if (numel > have / (is_f8 ? 8 : 4)) {
        moco_error("%s: file is truncated (the header announces %s%lld elements, the file holds %lld bytes of data)",
                   path, numel == INT64_MAX ? "more than " : "", (long long)numel, (long long)have);
        goto done;
    }
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
