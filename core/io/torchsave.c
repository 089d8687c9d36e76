/* core/io/torchsave.c: weights out in PyTorch's own formats (see torchfile.h).
 *
 * torch_save_pth: the zip layout of torch.save -- ARCHIVE/data.pkl (protocol 2, as torch.save
 * writes it: an OrderedDict() filled by SETITEMS, each tensor a REDUCE of
 * torch._utils._rebuild_tensor_v2 on a persistent id ('storage', torch.FloatStorage, key,
 * 'cpu', numel)), ARCHIVE/byteorder, ARCHIVE/data/KEY, ARCHIVE/version ("3").  Entries are
 * stored, their data aligned to 64 bytes by an extra field, as PyTorch's writer does (so
 * torch.load(mmap=True) works too).
 *
 * torch_save_detectron2: the bytes CPython's pickle.dump (protocol 4) writes for the official
 * conversion's dict of numpy arrays: numpy arrays reduce to numpy.core.multiarray._reconstruct
 * (numpy.ndarray, (0,), b'b') with the state (1, shape, dtype, False, raw bytes); the dtype
 * reduces to numpy.dtype('f4', False, True) with the state (3, '<', None, None, None, -1, -1,
 * 0).  What pickle memoizes (every str, tuple, global, the dtype, the one-byte b'b') and its
 * 64 KiB framing, with large byte strings outside frames, follow CPython's _pickle.c, so the
 * file is byte for byte what the Python script writes for the same arrays. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "error.h"
#include "io/atomic.h"
#include "io/torchfile.h"

/* ------------------------------------------------------------ values */

static uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { /* subnormal or zero, round to nearest even */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t half = mant >> shift, rest = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = (uint32_t)e << 10 | mant >> 13, rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) half++; /* may carry into the exponent: right */
    return (uint16_t)(sign | half);
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

int torch_encode_values(const TorchSaveItem *item, unsigned char *out) {
    const Tensor *t = item->tensor;
    size_t es = torch_dtype_size(item->dtype);
    for (int64_t i = 0; i < t->numel; i++) {
        float v = t->data[i];
        unsigned char *p = out + (size_t)i * es;
        uint32_t bits;
        double d;
        uint64_t b64;
        int integral = v == floorf(v);
        switch (item->dtype) {
        case TORCH_F32:
            memcpy(&bits, &v, 4);
            put_le(p, bits, 4);
            break;
        case TORCH_F64:
            d = v;
            memcpy(&b64, &d, 8);
            put_le(p, b64, 8);
            break;
        case TORCH_F16:
            if (isfinite(v) && fabsf(v) > 65504.0f)
                return moco_error("tensor '%s': value %g at position %lld overflows float16", item->name, v, (long long)i);
            put_le(p, float_to_half(v), 2);
            break;
        case TORCH_I64:
            if (!integral || v >= 9.2233720368547758e18f || v < -9.2233720368547758e18f)
                return moco_error("tensor '%s': value %g at position %lld is not an int64", item->name, v, (long long)i);
            put_le(p, (uint64_t)(int64_t)v, 8);
            break;
        case TORCH_I32:
            if (!integral || v >= 2147483648.0f || v < -2147483648.0f)
                return moco_error("tensor '%s': value %g at position %lld is not an int32", item->name, v, (long long)i);
            put_le(p, (uint32_t)(int32_t)v, 4);
            break;
        case TORCH_U8:
            if (!integral || v < 0 || v > 255)
                return moco_error("tensor '%s': value %g at position %lld is not a uint8", item->name, v, (long long)i);
            p[0] = (unsigned char)v;
            break;
        case TORCH_BOOL:
            if (v != 0 && v != 1)
                return moco_error("tensor '%s': value %g at position %lld is not a bool (0 or 1)", item->name, v, (long long)i);
            p[0] = v != 0;
            break;
        default:
            return moco_error("tensor '%s': dtype %s cannot be written", item->name, torch_dtype_name(item->dtype));
        }
    }
    return 0;
}

/* Checks and converts every item first, so that a bad value stops the save before any byte is
 * written.  *bytes[i] is item i's encoding (free with free_encoded). */
static int encode_all(const TorchSaveItem *items, size_t count, unsigned char ***bytes, int detectron2) {
    *bytes = calloc(count ? count : 1, sizeof **bytes);
    if (!*bytes) return moco_error("out of memory");
    for (size_t i = 0; i < count; i++) {
        TorchDtype d = items[i].dtype;
        if (!items[i].name || !items[i].tensor) return moco_error("item %zu has no name or no tensor", i);
        if (detectron2 && d != TORCH_F32 && d != TORCH_F64 && d != TORCH_I64 && d != TORCH_I32 && d != TORCH_U8)
            return moco_error("tensor '%s': dtype %s is not written to detectron2 files (F32, F64, I64, I32, U8)",
                              items[i].name, torch_dtype_name(d));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(items[i].name, items[j].name)) return moco_error("tensor name '%s' appears twice", items[i].name);
        size_t n = (size_t)items[i].tensor->numel * torch_dtype_size(d);
        (*bytes)[i] = malloc(n ? n : 1);
        if (!(*bytes)[i]) return moco_error("out of memory for tensor '%s'", items[i].name);
        if (torch_encode_values(&items[i], (*bytes)[i])) return -1;
    }
    return 0;
}

static void free_encoded(unsigned char **bytes, size_t count) {
    if (!bytes) return;
    for (size_t i = 0; i < count; i++) free(bytes[i]);
    free(bytes);
}

/* ------------------------------------------------------------ protocol 2 pieces */

static void put_memo(PickleBuffer *b, unsigned index) {
    if (index < 256) {
        pickle_put_byte(b, 'q');
        pickle_put_byte(b, (int)index);
    } else {
        pickle_put_byte(b, 'r');
        pickle_put_le(b, index, 4);
    }
}

static void get_memo(PickleBuffer *b, unsigned index) {
    if (index < 256) {
        pickle_put_byte(b, 'h');
        pickle_put_byte(b, (int)index);
    } else {
        pickle_put_byte(b, 'j');
        pickle_put_le(b, index, 4);
    }
}

/* An int as CPython writes it: BININT1, BININT2, BININT, or LONG1 beyond 32 bits. */
static void put_int(PickleBuffer *b, int64_t v) {
    if (v >= 0 && v <= 0xff) {
        pickle_put_byte(b, 'K');
        pickle_put_byte(b, (int)v);
    } else if (v >= 0 && v <= 0xffff) {
        pickle_put_byte(b, 'M');
        pickle_put_le(b, (uint64_t)v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        pickle_put_byte(b, 'J');
        pickle_put_le(b, (uint64_t)(uint32_t)(int32_t)v, 4);
    } else { /* LONG1: the fewest little-endian two's complement bytes */
        int n = 1;
        while (n < 8 && !(v >= -((int64_t)1 << (8 * n - 1)) && v < ((int64_t)1 << (8 * n - 1)))) n++;
        pickle_put_byte(b, 0x8a);
        pickle_put_byte(b, n);
        pickle_put_le(b, (uint64_t)v, n);
    }
}

static void put_unicode(PickleBuffer *b, const char *s) {
    size_t n = strlen(s);
    pickle_put_byte(b, 'X');
    pickle_put_le(b, n, 4);
    pickle_put_bytes(b, s, n);
}

static void put_int_tuple(PickleBuffer *b, const int64_t *v, int n) {
    if (n == 0) {
        pickle_put_byte(b, ')');
        return;
    }
    if (n > 3) pickle_put_byte(b, '(');
    for (int i = 0; i < n; i++) put_int(b, v[i]);
    pickle_put_byte(b, n > 3 ? 't' : 0x84 + n);
}

static const char *storage_type_name(TorchDtype d) {
    switch (d) {
    case TORCH_F32: return "FloatStorage";
    case TORCH_F64: return "DoubleStorage";
    case TORCH_F16: return "HalfStorage";
    case TORCH_I64: return "LongStorage";
    case TORCH_I32: return "IntStorage";
    case TORCH_U8: return "ByteStorage";
    case TORCH_BOOL: return "BoolStorage";
    default: return NULL;
    }
}

/* The data.pkl of torch.save(OrderedDict(items)): storage i holds item i. */
static void pth_pickle(PickleBuffer *b, const TorchSaveItem *items, size_t count) {
    enum { MEMO_ORDERED_DICT = 0, MEMO_STATE_DICT = 1, MEMO_REBUILD = 2 };
    int storage_memo[TORCH_DTYPE_COUNT];
    for (int d = 0; d < TORCH_DTYPE_COUNT; d++) storage_memo[d] = -1;
    unsigned next_memo = 3;
    pickle_put_byte(b, 0x80);
    pickle_put_byte(b, 2);
    pickle_put_bytes(b, "ccollections\nOrderedDict\n", 25);
    put_memo(b, MEMO_ORDERED_DICT);
    pickle_put_bytes(b, ")R", 2);
    put_memo(b, MEMO_STATE_DICT);
    if (count) pickle_put_byte(b, '(');
    for (size_t i = 0; i < count; i++) {
        const Tensor *t = items[i].tensor;
        put_unicode(b, items[i].name);
        if (i == 0) {
            pickle_put_bytes(b, "ctorch._utils\n_rebuild_tensor_v2\n", 33);
            put_memo(b, MEMO_REBUILD);
        } else {
            get_memo(b, MEMO_REBUILD);
        }
        pickle_put_byte(b, '('); /* the arguments */
        pickle_put_byte(b, '('); /* the persistent id */
        put_unicode(b, "storage");
        TorchDtype d = items[i].dtype;
        if (storage_memo[d] < 0) {
            char global[64];
            int n = snprintf(global, sizeof global, "ctorch\n%s\n", storage_type_name(d));
            pickle_put_bytes(b, global, (size_t)n);
            storage_memo[d] = (int)next_memo;
            put_memo(b, next_memo++);
        } else {
            get_memo(b, (unsigned)storage_memo[d]);
        }
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        put_unicode(b, key);
        put_unicode(b, "cpu");
        put_int(b, t->numel);
        pickle_put_bytes(b, "tQ", 2);
        put_int(b, 0); /* storage_offset */
        int64_t stride[TENSOR_MAX_DIMS], step = 1;
        for (int k = t->ndim - 1; k >= 0; k--) {
            stride[k] = step;
            step *= t->shape[k];
        }
        put_int_tuple(b, t->shape, t->ndim);
        put_int_tuple(b, stride, t->ndim);
        pickle_put_byte(b, 0x89); /* requires_grad = False */
        get_memo(b, MEMO_ORDERED_DICT);
        pickle_put_bytes(b, ")R", 2); /* backward_hooks = OrderedDict() */
        pickle_put_bytes(b, "tR", 2);
    }
    if (count) pickle_put_byte(b, 'u');
    pickle_put_byte(b, '.');
}

/* ------------------------------------------------------------ zip writing */

typedef struct ZipWriter {
    AtomicFile *af;
    uint64_t offset;
    PickleBuffer central;
    unsigned entries;
} ZipWriter;

static int zip_write(ZipWriter *z, const void *data, size_t n) {
    if (n && fwrite(data, 1, n, z->af->f) != n) return atomic_file_write_error(z->af, errno);
    z->offset += n;
    return 0;
}

/* A stored entry whose data starts at a multiple of 64 (the extra field "FB" pads). */
static int zip_add(ZipWriter *z, const char *name, const void *data, uint64_t size) {
    size_t name_len = strlen(name);
    uint64_t start = z->offset + 30 + name_len + 4;
    size_t pad = (size_t)((64 - start % 64) % 64);
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    const unsigned char *p = data;
    for (uint64_t done = 0; done < size;) { /* crc32 takes a uInt length */
        uInt chunk = size - done > (1u << 30) ? (1u << 30) : (uInt)(size - done);
        crc = (uint32_t)crc32(crc, p + done, chunk);
        done += chunk;
    }
    unsigned char h[30 + 4 + 64];
    put_le(h, 0x04034b50, 4);
    put_le(h + 4, 20, 2);      /* version needed: 2.0 */
    put_le(h + 6, 0, 2);       /* flags */
    put_le(h + 8, 0, 2);       /* stored */
    put_le(h + 10, 0, 2);      /* time */
    put_le(h + 12, 0x21, 2);   /* date: 1980-01-01 */
    put_le(h + 14, crc, 4);
    put_le(h + 18, size, 4);
    put_le(h + 22, size, 4);
    put_le(h + 26, name_len, 2);
    put_le(h + 28, 4 + pad, 2);
    unsigned char extra[4 + 64];
    extra[0] = 'F';
    extra[1] = 'B';
    put_le(extra + 2, pad, 2);
    memset(extra + 4, 'Z', pad);
    uint64_t local = z->offset;
    if (zip_write(z, h, 30) || zip_write(z, name, name_len) || zip_write(z, extra, 4 + pad) || zip_write(z, data, (size_t)size))
        return -1;
    unsigned char c[46];
    put_le(c, 0x02014b50, 4);
    put_le(c + 4, 20, 2);
    put_le(c + 6, 20, 2);
    put_le(c + 8, 0, 2);
    put_le(c + 10, 0, 2);
    put_le(c + 12, 0, 2);
    put_le(c + 14, 0x21, 2);
    put_le(c + 16, crc, 4);
    put_le(c + 20, size, 4);
    put_le(c + 24, size, 4);
    put_le(c + 28, name_len, 2);
    memset(c + 30, 0, 12); /* extra, comment, disk, attributes */
    put_le(c + 42, local, 4);
    pickle_put_bytes(&z->central, c, sizeof c);
    pickle_put_bytes(&z->central, name, name_len);
    z->entries++;
    return 0;
}

static int zip_finish(ZipWriter *z) {
    if (z->central.failed) return moco_error("%s: out of memory", z->af->path);
    uint64_t cd_offset = z->offset;
    if (zip_write(z, z->central.data, z->central.len)) return -1;
    unsigned char e[22];
    put_le(e, 0x06054b50, 4);
    put_le(e + 4, 0, 4);
    put_le(e + 8, z->entries, 2);
    put_le(e + 10, z->entries, 2);
    put_le(e + 12, z->central.len, 4);
    put_le(e + 16, cd_offset, 4);
    put_le(e + 20, 0, 2);
    return zip_write(z, e, sizeof e);
}

int torch_save_pth(const char *path, const TorchSaveItem *items, size_t count) {
    unsigned char **bytes = NULL;
    uint64_t total = 0;
    if (count > 65000) return moco_error("%s: %zu tensors: more than a plain zip can hold", path, count);
    for (size_t i = 0; i < count; i++)
        if (items[i].tensor && !storage_type_name(items[i].dtype))
            return moco_error("%s: tensor '%s': dtype %s cannot be written to a .pth", path, items[i].name,
                              torch_dtype_name(items[i].dtype));
    if (encode_all(items, count, &bytes, 0)) {
        free_encoded(bytes, count);
        return moco_error_prefix("%s: ", path);
    }
    PickleBuffer pkl = {0};
    pth_pickle(&pkl, items, count);
    total = pkl.len;
    for (size_t i = 0; i < count; i++) total += (uint64_t)items[i].tensor->numel * torch_dtype_size(items[i].dtype) + 256;
    if (pkl.failed || total >= 0xFFFF0000u) {
        pickle_buffer_free(&pkl);
        free_encoded(bytes, count);
        return pkl.failed ? moco_error("%s: out of memory", path)
                          : moco_error("%s: more than 4 GiB of tensors; this writer does not write zip64", path);
    }
    AtomicFile af;
    if (atomic_file_begin(&af, path)) {
        pickle_buffer_free(&pkl);
        free_encoded(bytes, count);
        return -1;
    }
    ZipWriter z = {.af = &af};
    int status = zip_add(&z, "archive/data.pkl", pkl.data, pkl.len);
    if (!status) status = zip_add(&z, "archive/byteorder", "little", 6);
    for (size_t i = 0; i < count && !status; i++) {
        char name[48];
        snprintf(name, sizeof name, "archive/data/%zu", i);
        status = zip_add(&z, name, bytes[i], (uint64_t)items[i].tensor->numel * torch_dtype_size(items[i].dtype));
    }
    if (!status) status = zip_add(&z, "archive/version", "3\n", 2);
    if (!status) status = zip_finish(&z);
    pickle_buffer_free(&z.central);
    pickle_buffer_free(&pkl);
    free_encoded(bytes, count);
    if (status) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}

/* ------------------------------------------------------------ protocol 4, as CPython frames it */

#define FRAME_HEADER 9
#define FRAME_TARGET 65536
#define FRAME_MIN 4

typedef struct Pickler4 {
    PickleBuffer out;
    long frame_start; /* offset of the open frame's header, or -1 */
    int framing;
    unsigned memo_count;
} Pickler4;

static void p4_write(Pickler4 *p, const void *bytes, size_t n) {
    if (p->framing && p->frame_start < 0) {
        p->frame_start = (long)p->out.len;
        static const unsigned char placeholder[FRAME_HEADER] = {0};
        pickle_put_bytes(&p->out, placeholder, FRAME_HEADER);
    }
    pickle_put_bytes(&p->out, bytes, n);
}

static void p4_byte(Pickler4 *p, int byte) {
    unsigned char c = (unsigned char)byte;
    p4_write(p, &c, 1);
}

static void p4_commit_frame(Pickler4 *p) {
    if (!p->framing || p->frame_start < 0 || p->out.failed) return;
    size_t start = (size_t)p->frame_start, len = p->out.len - start - FRAME_HEADER;
    if (len >= FRAME_MIN) {
        p->out.data[start] = 0x95;
        put_le(p->out.data + start + 1, len, 8);
    } else {
        memmove(p->out.data + start, p->out.data + start + FRAME_HEADER, len);
        p->out.len -= FRAME_HEADER;
    }
    p->frame_start = -1;
}

/* What CPython's save() does first for every object it pickles, atoms included. */
static void p4_save_begins(Pickler4 *p) {
    if (p->framing && p->frame_start >= 0 && p->out.len - (size_t)p->frame_start - FRAME_HEADER >= FRAME_TARGET)
        p4_commit_frame(p);
}

/* A header and a payload; payloads of 64 KiB or more go outside any frame. */
static void p4_write_bytes(Pickler4 *p, const unsigned char *header, size_t header_len, const void *data, size_t n) {
    int framing = p->framing;
    if (n >= FRAME_TARGET) {
        p4_commit_frame(p);
        p->framing = 0;
    }
    p4_write(p, header, header_len);
    p4_write(p, data, n);
    p->framing = framing;
}

static unsigned p4_memoize(Pickler4 *p) {
    p4_byte(p, 0x94);
    return p->memo_count++;
}

static void p4_get(Pickler4 *p, unsigned index) {
    unsigned char op[5];
    if (index < 256) {
        op[0] = 'h';
        op[1] = (unsigned char)index;
        p4_write(p, op, 2);
    } else {
        op[0] = 'j';
        put_le(op + 1, index, 4);
        p4_write(p, op, 5);
    }
}

/* save(str): memo *slot when given (-1: not yet pickled). */
static void p4_str(Pickler4 *p, const char *s, long *slot) {
    p4_save_begins(p);
    if (slot && *slot >= 0) {
        p4_get(p, (unsigned)*slot);
        return;
    }
    size_t n = strlen(s);
    unsigned char h[9];
    size_t hl;
    if (n < 256) {
        h[0] = 0x8c;
        h[1] = (unsigned char)n;
        hl = 2;
    } else {
        h[0] = 'X';
        put_le(h + 1, n, 4);
        hl = 5;
    }
    p4_write_bytes(p, h, hl, s, n);
    unsigned m = p4_memoize(p);
    if (slot) *slot = m;
}

static void p4_bytes(Pickler4 *p, const void *data, size_t n, long *slot) {
    p4_save_begins(p);
    if (slot && *slot >= 0) {
        p4_get(p, (unsigned)*slot);
        return;
    }
    unsigned char h[9];
    size_t hl;
    if (n < 256) {
        h[0] = 'C';
        h[1] = (unsigned char)n;
        hl = 2;
    } else if (n <= 0xffffffffu) {
        h[0] = 'B';
        put_le(h + 1, n, 4);
        hl = 5;
    } else {
        h[0] = 0x8e;
        put_le(h + 1, n, 8);
        hl = 9;
    }
    p4_write_bytes(p, h, hl, data, n);
    unsigned m = p4_memoize(p);
    if (slot) *slot = m;
}

static void p4_int(Pickler4 *p, int64_t v) {
    p4_save_begins(p);
    PickleBuffer tmp = {0};
    put_int(&tmp, v);
    p4_write(p, tmp.data, tmp.len);
    pickle_buffer_free(&tmp);
}

static void p4_atom(Pickler4 *p, int opcode) {
    p4_save_begins(p);
    p4_byte(p, opcode);
}

/* save(global): module and name strings, STACK_GLOBAL, memoized as *slot. */
static void p4_global(Pickler4 *p, const char *module, long *module_slot, const char *name, long *slot) {
    p4_save_begins(p);
    if (*slot >= 0) {
        p4_get(p, (unsigned)*slot);
        return;
    }
    p4_str(p, module, module_slot);
    p4_str(p, name, NULL);
    p4_byte(p, 0x93);
    *slot = p4_memoize(p);
}

/* The objects numpy reuses between arrays, by memo index (-1 until pickled). */
typedef struct NumpyMemo {
    long reconstruct, reconstruct_module, numpy_module, ndarray, dtype_class, b_char, little_endian, not_endian;
    long dtype[TORCH_DTYPE_COUNT];
} NumpyMemo;

/* save(numpy.dtype(kind + size)) */
static void p4_dtype(Pickler4 *p, NumpyMemo *m, TorchDtype d) {
    p4_save_begins(p);
    if (m->dtype[d] >= 0) {
        p4_get(p, (unsigned)m->dtype[d]);
        return;
    }
    const char *code = d == TORCH_F32 ? "f4" : d == TORCH_F64 ? "f8" : d == TORCH_I64 ? "i8" : d == TORCH_I32 ? "i4" : "u1";
    p4_global(p, "numpy", &m->numpy_module, "dtype", &m->dtype_class);
    p4_save_begins(p); /* the arguments (code, False, True) */
    p4_str(p, code, NULL);
    p4_atom(p, 0x89);
    p4_atom(p, 0x88);
    p4_byte(p, 0x87);
    p4_memoize(p);
    p4_byte(p, 'R');
    m->dtype[d] = p4_memoize(p);
    p4_save_begins(p); /* the state (3, endian, None, None, None, -1, -1, 0) */
    p4_byte(p, '(');
    p4_int(p, 3);
    p4_str(p, d == TORCH_U8 ? "|" : "<", d == TORCH_U8 ? &m->not_endian : &m->little_endian);
    p4_atom(p, 'N');
    p4_atom(p, 'N');
    p4_atom(p, 'N');
    p4_int(p, -1);
    p4_int(p, -1);
    p4_int(p, 0);
    p4_byte(p, 't');
    p4_memoize(p);
    p4_byte(p, 'b');
}

/* save(a tuple of ints) */
static void p4_int_tuple(Pickler4 *p, const int64_t *v, int n) {
    p4_save_begins(p);
    if (n == 0) {
        p4_byte(p, ')');
        return;
    }
    if (n > 3) p4_byte(p, '(');
    for (int i = 0; i < n; i++) p4_int(p, v[i]);
    p4_byte(p, n > 3 ? 't' : 0x84 + n);
    p4_memoize(p);
}

/* save(numpy array of item's values) */
static void p4_array(Pickler4 *p, NumpyMemo *m, const TorchSaveItem *item, const unsigned char *bytes) {
    const Tensor *t = item->tensor;
    p4_save_begins(p);
    p4_global(p, "numpy.core.multiarray", &m->reconstruct_module, "_reconstruct", &m->reconstruct);
    p4_save_begins(p); /* (numpy.ndarray, (0,), b'b') */
    p4_global(p, "numpy", &m->numpy_module, "ndarray", &m->ndarray);
    p4_save_begins(p);
    p4_int(p, 0);
    p4_byte(p, 0x85);
    p4_memoize(p);
    p4_bytes(p, "b", 1, &m->b_char);
    p4_byte(p, 0x87);
    p4_memoize(p);
    p4_byte(p, 'R');
    p4_memoize(p);
    p4_save_begins(p); /* (1, shape, dtype, False, data) */
    p4_byte(p, '(');
    p4_int(p, 1);
    p4_int_tuple(p, t->shape, t->ndim);
    p4_dtype(p, m, item->dtype);
    p4_atom(p, 0x89);
    p4_bytes(p, bytes, (size_t)t->numel * torch_dtype_size(item->dtype), NULL);
    p4_byte(p, 't');
    p4_memoize(p);
    p4_byte(p, 'b');
}

/* save(dict) of len n with CPython's batches of 1000 (a single item uses SETITEM). */
static void p4_dict_items(Pickler4 *p, size_t n, void (*item)(Pickler4 *, size_t, void *), void *ctx) {
    if (n == 0) return;
    if (n == 1) {
        item(p, 0, ctx);
        p4_byte(p, 's');
        return;
    }
    size_t i = 0, in_batch;
    do {
        p4_byte(p, '(');
        for (in_batch = 0; i < n && in_batch < 1000; in_batch++, i++) item(p, i, ctx);
        p4_byte(p, 'u');
    } while (in_batch == 1000);
}

typedef struct Detectron2 {
    const TorchSaveItem *items;
    unsigned char **bytes;
    NumpyMemo memo;
    const char *author;
} Detectron2;

static void model_item(Pickler4 *p, size_t i, void *ctx) {
    Detectron2 *d = ctx;
    p4_str(p, d->items[i].name, NULL);
    p4_array(p, &d->memo, &d->items[i], d->bytes[i]);
}

int torch_save_detectron2(const char *path, const TorchSaveItem *items, size_t count, const char *author) {
    unsigned char **bytes = NULL;
    if (encode_all(items, count, &bytes, 1)) {
        free_encoded(bytes, count);
        return moco_error_prefix("%s: ", path);
    }
    Detectron2 d = {.items = items, .bytes = bytes, .author = author ? author : "MOCO"};
    long *slots = (long *)&d.memo;
    for (size_t i = 0; i < sizeof d.memo / sizeof(long); i++) slots[i] = -1;
    Pickler4 p = {.frame_start = -1};
    pickle_put_byte(&p.out, 0x80);
    pickle_put_byte(&p.out, 4);
    p.framing = 1;
    p4_save_begins(&p); /* the outer dict */
    p4_byte(&p, '}');
    p4_memoize(&p);
    p4_byte(&p, '(');
    p4_str(&p, "model", NULL);
    p4_save_begins(&p);
    p4_byte(&p, '}');
    p4_memoize(&p);
    p4_dict_items(&p, count, model_item, &d);
    p4_str(&p, "__author__", NULL);
    p4_str(&p, d.author, NULL);
    p4_str(&p, "matching_heuristics", NULL);
    p4_atom(&p, 0x88);
    p4_byte(&p, 'u');
    p4_byte(&p, '.');
    p4_commit_frame(&p);
    free_encoded(bytes, count);
    if (p.out.failed) {
        pickle_buffer_free(&p.out);
        return moco_error("%s: out of memory", path);
    }
    AtomicFile af;
    if (atomic_file_begin(&af, path)) {
        pickle_buffer_free(&p.out);
        return -1;
    }
    int status = 0;
    if (fwrite(p.out.data, 1, p.out.len, af.f) != p.out.len) status = atomic_file_write_error(&af, errno);
    pickle_buffer_free(&p.out);
    if (status) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}
