/* core/io/torchfile.c: the torch.save reader (format, allow-list and limits in torchfile.h).
 *
 * Order of work in torch_file_open: find the pickle (zip central directory, or the legacy
 * header pickles), run it with the hooks below (which refuse every global not in the
 * allow-list and check each tensor against its storage's declared size), then locate every
 * storage's bytes in the file and check they are all there.  Only then is the file open;
 * torch_file_read_tensor reads one tensor's bytes on demand. */
#include "io/torchfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Tensors may gather more elements than the file has bytes (an expanded view) by this many. */
#define EXPANSION_ALLOWANCE ((int64_t)1 << 24)
#define MAX_STORAGE_KEY 128
#define MAX_ZIP_ENTRIES (1 << 20)

/* ------------------------------------------------------------ dtypes */

static const struct {
    const char *name, *storage;
    size_t size;
} dtypes[TORCH_DTYPE_COUNT] = {
    [TORCH_F32] = {"F32", "FloatStorage", 4},    [TORCH_F64] = {"F64", "DoubleStorage", 8},
    [TORCH_F16] = {"F16", "HalfStorage", 2},     [TORCH_BF16] = {"BF16", "BFloat16Storage", 2},
    [TORCH_I64] = {"I64", "LongStorage", 8},     [TORCH_I32] = {"I32", "IntStorage", 4},
    [TORCH_I16] = {"I16", "ShortStorage", 2},    [TORCH_I8] = {"I8", "CharStorage", 1},
    [TORCH_U8] = {"U8", "ByteStorage", 1},       [TORCH_BOOL] = {"BOOL", "BoolStorage", 1},
};

const char *torch_dtype_name(TorchDtype d) { return (unsigned)d < TORCH_DTYPE_COUNT ? dtypes[d].name : "?"; }
size_t torch_dtype_size(TorchDtype d) { return (unsigned)d < TORCH_DTYPE_COUNT ? dtypes[d].size : 0; }

int torch_dtype_parse(const char *name, TorchDtype *out) {
    for (int i = 0; i < TORCH_DTYPE_COUNT; i++) {
        if (!strcmp(name, dtypes[i].name)) {
            *out = (TorchDtype)i;
            return 0;
        }
    }
    return moco_error("unknown dtype '%.40s' (known: F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL)", name);
}

/* ------------------------------------------------------------ little-endian loads */

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Reads n bytes at offset; -1 with a message when they are not all in the file. */
static int read_at(TorchFile *tf, uint64_t offset, void *out, size_t n) {
    if (offset > tf->file_size || n > tf->file_size - offset)
        return moco_error("bytes %llu..%llu are past the end of the file (%llu bytes): truncated or corrupt",
                          (unsigned long long)offset, (unsigned long long)(offset + n),
                          (unsigned long long)tf->file_size);
    if (fseeko(tf->f, (off_t)offset, SEEK_SET) != 0) return moco_error("cannot seek: %s", strerror(errno));
    if (n && fread(out, 1, n, tf->f) != n)
        return moco_error("cannot read: %s", ferror(tf->f) ? strerror(errno) : "the file ends too early");
    return 0;
}

/* ------------------------------------------------------------ zip */

typedef struct ZipEntry {
    char *name;
    uint64_t local_offset, size, compressed_size;
    int method;
} ZipEntry;

typedef struct TorchZip {
    ZipEntry *entries; /* sorted by name */
    size_t count;
    char *prefix;      /* "archive/" */
} TorchZip;

static void zip_free(TorchZip *z) {
    if (!z) return;
    for (size_t i = 0; i < z->count; i++) free(z->entries[i].name);
    free(z->entries);
    free(z->prefix);
    free(z);
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const ZipEntry *)a)->name, ((const ZipEntry *)b)->name);
}

static const ZipEntry *zip_find(const TorchZip *z, const char *name) {
    ZipEntry key = {.name = (char *)name};
    return bsearch(&key, z->entries, z->count, sizeof key, entry_cmp);
}

/* The end-of-central-directory record: its offset, or -1. */
static int find_eocd(TorchFile *tf, uint64_t *eocd) {
    uint64_t tail = tf->file_size < 22 + 65535 ? tf->file_size : 22 + 65535;
    if (tail < 22) return moco_error("a zip file too short for its central directory");
    unsigned char *buf = malloc((size_t)tail);
    if (!buf) return moco_error("out of memory");
    if (read_at(tf, tf->file_size - tail, buf, (size_t)tail)) {
        free(buf);
        return -1;
    }
    for (uint64_t i = tail - 22 + 1; i-- > 0;) {
        if (le(buf + i, 4) == 0x06054b50 && i + 22 + le(buf + i + 20, 2) <= tail) {
            *eocd = tf->file_size - tail + i;
            free(buf);
            return 0;
        }
    }
    free(buf);
    return moco_error("no zip end-of-central-directory record: a truncated or corrupt zip");
}

static int zip_open(TorchFile *tf) {
    uint64_t eocd = 0;
    if (find_eocd(tf, &eocd)) return -1;
    unsigned char e[22];
    if (read_at(tf, eocd, e, sizeof e)) return -1;
    uint64_t count = le(e + 10, 2), cd_size = le(e + 12, 4), cd_offset = le(e + 16, 4);
    if (le(e + 4, 2) != 0 || le(e + 6, 2) != 0) return moco_error("multi-disk zip archives are not supported");
    if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
        /* zip64: a locator just before the record points at the zip64 end record */
        unsigned char loc[20], z[56];
        if (eocd < 20 || read_at(tf, eocd - 20, loc, sizeof loc) || le(loc, 4) != 0x07064b50)
            return moco_error("a zip64 archive without its zip64 locator: corrupt");
        uint64_t z_offset = le(loc + 8, 8);
        if (read_at(tf, z_offset, z, sizeof z) || le(z, 4) != 0x06064b50)
            return moco_error("the zip64 end record is missing or outside the file: corrupt");
        count = le(z + 32, 8);
        cd_size = le(z + 40, 8);
        cd_offset = le(z + 48, 8);
    }
    if (cd_offset > tf->file_size || cd_size > tf->file_size - cd_offset)
        return moco_error("the zip central directory (offset %llu, %llu bytes) is outside the file (%llu bytes)",
                          (unsigned long long)cd_offset, (unsigned long long)cd_size,
                          (unsigned long long)tf->file_size);
    if (count > cd_size / 46 || count > MAX_ZIP_ENTRIES)
        return moco_error("the zip central directory claims %llu entries in %llu bytes: corrupt",
                          (unsigned long long)count, (unsigned long long)cd_size);
    if (count == 0) return moco_error("an empty zip archive: not a torch.save file");
    unsigned char *cd = malloc((size_t)cd_size);
    TorchZip *z = calloc(1, sizeof *z);
    if (z) z->entries = calloc((size_t)count, sizeof *z->entries);
    if (!cd || !z || !z->entries) {
        free(cd);
        zip_free(z);
        return moco_error("out of memory");
    }
    tf->zip = z;
    if (read_at(tf, cd_offset, cd, (size_t)cd_size)) {
        free(cd);
        return -1;
    }
    uint64_t p = 0;
    int status = 0;
    for (uint64_t i = 0; i < count && !status; i++) {
        if (cd_size - p < 46 || le(cd + p, 4) != 0x02014b50) {
            status = moco_error("zip central directory entry %llu is malformed", (unsigned long long)i);
            break;
        }
        unsigned char *h = cd + p;
        uint64_t name_len = le(h + 28, 2), extra_len = le(h + 30, 2), comment_len = le(h + 32, 2);
        if (cd_size - p - 46 < name_len + extra_len + comment_len) {
            status = moco_error("zip central directory entry %llu runs past the directory", (unsigned long long)i);
            break;
        }
        ZipEntry *en = &z->entries[i];
        en->method = (int)le(h + 10, 2);
        en->compressed_size = le(h + 20, 4);
        en->size = le(h + 24, 4);
        en->local_offset = le(h + 42, 4);
        en->name = malloc((size_t)name_len + 1);
        if (!en->name) {
            status = moco_error("out of memory");
            break;
        }
        memcpy(en->name, h + 46, (size_t)name_len);
        en->name[name_len] = 0;
        z->count = (size_t)i + 1;
        if (strlen(en->name) != name_len) {
            status = moco_error("zip entry %llu has a NUL in its name", (unsigned long long)i);
            break;
        }
        /* zip64 extra field: the 64-bit values of the fields that are saturated, in order */
        const unsigned char *x = h + 46 + name_len, *x_end = x + extra_len;
        while (x_end - x >= 4) {
            uint64_t id = le(x, 2), len = le(x + 2, 2);
            if ((uint64_t)(x_end - x - 4) < len) break;
            if (id == 0x0001) {
                const unsigned char *q = x + 4, *q_end = x + 4 + len;
                if (en->size == 0xFFFFFFFF && q_end - q >= 8) en->size = le(q, 8), q += 8;
                if (en->compressed_size == 0xFFFFFFFF && q_end - q >= 8) en->compressed_size = le(q, 8), q += 8;
                if (en->local_offset == 0xFFFFFFFF && q_end - q >= 8) en->local_offset = le(q, 8), q += 8;
            }
            x += 4 + len;
        }
        p += 46 + name_len + extra_len + comment_len;
    }
    free(cd);
    if (status) return -1;
    /* The archive's directory is the first entry's (as PyTorch's reader takes it). */
    const char *slash = strchr(z->entries[0].name, '/');
    if (!slash) return moco_error("zip entry '%.100s' is not in a directory: not a torch.save file", z->entries[0].name);
    size_t plen = (size_t)(slash - z->entries[0].name) + 1;
    z->prefix = malloc(plen + 1);
    if (!z->prefix) return moco_error("out of memory");
    memcpy(z->prefix, z->entries[0].name, plen);
    z->prefix[plen] = 0;
    qsort(z->entries, z->count, sizeof *z->entries, entry_cmp);
    for (size_t i = 1; i < z->count; i++)
        if (!strcmp(z->entries[i - 1].name, z->entries[i].name))
            return moco_error("zip entry '%.100s' appears twice: ambiguous", z->entries[i].name);
    return 0;
}

/* The file offset of an entry's bytes, checked: stored (not compressed), inside the file. */
static int zip_data(TorchFile *tf, const ZipEntry *en, uint64_t *offset) {
    if (en->method != 0)
        return moco_error("zip entry '%.100s' is compressed (method %d); torch.save stores entries uncompressed",
                          en->name, en->method);
    if (en->compressed_size != en->size)
        return moco_error("zip entry '%.100s': stored sizes differ (%llu, %llu): corrupt", en->name,
                          (unsigned long long)en->compressed_size, (unsigned long long)en->size);
    unsigned char h[30];
    if (read_at(tf, en->local_offset, h, sizeof h) || le(h, 4) != 0x04034b50)
        return moco_error("zip entry '%.100s': no local header at offset %llu (outside the file or corrupt)",
                          en->name, (unsigned long long)en->local_offset);
    uint64_t start = en->local_offset + 30 + le(h + 26, 2) + le(h + 28, 2);
    if (start > tf->file_size || en->size > tf->file_size - start)
        return moco_error("zip entry '%.100s' (%llu bytes at offset %llu) points outside the file (%llu bytes)",
                          en->name, (unsigned long long)en->size, (unsigned long long)start,
                          (unsigned long long)tf->file_size);
    *offset = start;
    return 0;
}

static const ZipEntry *zip_record(const TorchZip *z, const char *record) {
    char name[MAX_STORAGE_KEY + 512];
    snprintf(name, sizeof name, "%s%s", z->prefix, record);
    return zip_find(z, name);
}

/* ------------------------------------------------------------ the allow-list */

enum {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_TENSOR,
    G_REBUILD_PARAMETER,
    G_REBUILD_PARAMETER_WITH_STATE,
    G_TORCH_SIZE,
    G_STORAGE, /* + dtype */
};

static int find_global(void *ctx, const char *module, const char *name) {
    (void)ctx;
    if (!strcmp(module, "collections") && !strcmp(name, "OrderedDict")) return G_ORDERED_DICT;
    if (!strcmp(module, "torch._utils")) {
        if (!strcmp(name, "_rebuild_tensor_v2")) return G_REBUILD_TENSOR_V2;
        if (!strcmp(name, "_rebuild_tensor")) return G_REBUILD_TENSOR;
        if (!strcmp(name, "_rebuild_parameter")) return G_REBUILD_PARAMETER;
        if (!strcmp(name, "_rebuild_parameter_with_state")) return G_REBUILD_PARAMETER_WITH_STATE;
    }
    if (!strcmp(module, "torch")) {
        if (!strcmp(name, "Size")) return G_TORCH_SIZE;
        for (int d = 0; d < TORCH_DTYPE_COUNT; d++)
            if (!strcmp(name, dtypes[d].storage)) return G_STORAGE + d;
    }
    return moco_error("global '%.100s.%.100s' is not allowed: only tensors and plain data are read, never code "
                      "(allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage ...)",
                      module, name);
}

static const char *global_name(int id) {
    switch (id) {
    case G_ORDERED_DICT: return "collections.OrderedDict";
    case G_REBUILD_TENSOR_V2: return "torch._utils._rebuild_tensor_v2";
    case G_REBUILD_TENSOR: return "torch._utils._rebuild_tensor";
    case G_REBUILD_PARAMETER: return "torch._utils._rebuild_parameter";
    case G_REBUILD_PARAMETER_WITH_STATE: return "torch._utils._rebuild_parameter_with_state";
    case G_TORCH_SIZE: return "torch.Size";
    default: return id >= G_STORAGE && id < G_STORAGE + TORCH_DTYPE_COUNT ? dtypes[id - G_STORAGE].storage : "?";
    }
}

/* ------------------------------------------------------------ storages (a hash table by key) */

static uint64_t hash_key(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static TorchStorage **storage_slot(TorchFile *tf, const char *key, size_t n) {
    size_t mask = tf->storage_cap - 1, i = (size_t)hash_key(key, n) & mask;
    while (tf->storages[i] && strcmp(tf->storages[i]->key, key)) i = (i + 1) & mask;
    return &tf->storages[i];
}

static TorchStorage *storage_find(TorchFile *tf, const char *key) {
    if (!tf->storage_cap) return NULL;
    return *storage_slot(tf, key, strlen(key));
}

static int storage_grow(TorchFile *tf) {
    size_t cap = tf->storage_cap ? 2 * tf->storage_cap : 64;
    TorchStorage **old = tf->storages;
    size_t old_cap = tf->storage_cap;
    tf->storages = calloc(cap, sizeof *tf->storages);
    if (!tf->storages) {
        tf->storages = old;
        return moco_error("out of memory");
    }
    tf->storage_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i]) *storage_slot(tf, old[i]->key, strlen(old[i]->key)) = old[i];
    free(old);
    return 0;
}

/* ------------------------------------------------------------ hooks */

static int want(PickleValue *v, PickleKind kind, const char *what) {
    if (v->kind == kind) return 0;
    return moco_error("%s must be a %s, got a %s", what, pickle_kind_name(kind), pickle_kind_name(v->kind));
}

/* ('storage', StorageType, key, location, numel[, view_metadata]) */
static PickleValue *persistent_load(void *ctx, Unpickler *u, PickleValue *pid) {
    TorchFile *tf = ctx;
    if (pid->kind != PICKLE_TUPLE || pid->u.seq.len < 5 || pid->u.seq.len > 6) {
        moco_error("persistent id must be a ('storage', type, key, location, size) tuple, got a %s of %zu",
                   pickle_kind_name(pid->kind), pid->kind == PICKLE_TUPLE ? pid->u.seq.len : (size_t)0);
        return NULL;
    }
    PickleValue **it = pid->u.seq.items;
    if (it[0]->kind != PICKLE_STRING || strcmp(it[0]->u.str.data, "storage")) {
        moco_error("persistent id of kind other than 'storage'");
        return NULL;
    }
    if (it[1]->kind != PICKLE_GLOBAL || it[1]->u.global < G_STORAGE) {
        moco_error("persistent id: the storage type must be a torch.*Storage, got %s",
                   it[1]->kind == PICKLE_GLOBAL ? global_name(it[1]->u.global) : pickle_kind_name(it[1]->kind));
        return NULL;
    }
    if (want(it[2], PICKLE_STRING, "storage key") || want(it[3], PICKLE_STRING, "storage location") ||
        want(it[4], PICKLE_INT, "storage size"))
        return NULL;
    if (pid->u.seq.len == 6 && it[5]->kind != PICKLE_NONE) {
        moco_error("storage views (the view_metadata of very old files) are not supported");
        return NULL;
    }
    TorchDtype dtype = (TorchDtype)(it[1]->u.global - G_STORAGE);
    const char *key = it[2]->u.str.data;
    size_t key_len = it[2]->u.str.len;
    int64_t numel = it[4]->u.integer;
    if (key_len == 0 || key_len > MAX_STORAGE_KEY || strlen(key) != key_len) {
        moco_error("storage key of %zu bytes (expected a short name)", key_len);
        return NULL;
    }
    if (numel < 0 || (uint64_t)numel > tf->file_size / dtypes[dtype].size) {
        moco_error("storage '%s' declares %lld elements of %zu bytes, more than the file's %llu bytes", key,
                   (long long)numel, dtypes[dtype].size, (unsigned long long)tf->file_size);
        return NULL;
    }
    TorchStorage *s = storage_find(tf, key);
    if (s) {
        if (s->dtype != dtype || s->numel != numel) {
            moco_error("storage '%s' is declared twice, as %s[%lld] and %s[%lld]", key, dtypes[s->dtype].storage,
                       (long long)s->numel, dtypes[dtype].storage, (long long)numel);
            return NULL;
        }
    } else {
        if ((tf->storage_count + 1) * 2 > tf->storage_cap && storage_grow(tf)) return NULL;
        s = pickle_alloc(u, sizeof *s);
        if (!s) return NULL;
        memset(s, 0, sizeof *s);
        s->key = it[2]->u.str.data; /* lives as long as the unpickler */
        s->dtype = dtype;
        s->numel = numel;
        *storage_slot(tf, key, key_len) = s;
        tf->storage_count++;
    }
    PickleValue *v = pickle_new_value(u, PICKLE_OBJECT);
    if (!v) return NULL;
    v->u.object.type = TORCH_OBJECT_STORAGE;
    v->u.object.ptr = s;
    return v;
}

static int is_object(const PickleValue *v, int type) {
    return v->kind == PICKLE_OBJECT && v->u.object.type == type;
}

/* A tuple of ndim non-negative ints into out. */
static int int_tuple(PickleValue *v, const char *what, int64_t *out, int *ndim) {
    if (v->kind != PICKLE_TUPLE && v->kind != PICKLE_LIST)
        return moco_error("tensor %s must be a tuple, got a %s", what, pickle_kind_name(v->kind));
    if (v->u.seq.len > TENSOR_MAX_DIMS)
        return moco_error("a tensor of %zu dimensions (moco-lua tensors have at most %d)", v->u.seq.len, TENSOR_MAX_DIMS);
    for (size_t i = 0; i < v->u.seq.len; i++) {
        PickleValue *x = v->u.seq.items[i];
        if (x->kind != PICKLE_INT || x->u.integer < 0)
            return moco_error("tensor %s entry %zu must be a non-negative int", what, i);
        out[i] = x->u.integer;
    }
    *ndim = (int)v->u.seq.len;
    return 0;
}

/* torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...) */
static PickleValue *rebuild_tensor(TorchFile *tf, Unpickler *u, PickleValue *args) {
    PickleValue **a = args->u.seq.items;
    if (!is_object(a[0], TORCH_OBJECT_STORAGE)) {
        moco_error("_rebuild_tensor: the first argument must be a storage, got a %s", pickle_kind_name(a[0]->kind));
        return NULL;
    }
    if (want(a[1], PICKLE_INT, "tensor storage_offset")) return NULL;
    TorchStorage *s = a[0]->u.object.ptr;
    TorchTensor *t = pickle_alloc(u, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->storage = s;
    t->offset = a[1]->u.integer;
    int ndim_stride;
    if (int_tuple(a[2], "size", t->shape, &t->ndim) || int_tuple(a[3], "stride", t->stride, &ndim_stride)) return NULL;
    if (ndim_stride != t->ndim) {
        moco_error("tensor size has %d entries but stride %d", t->ndim, ndim_stride);
        return NULL;
    }
    if (t->offset < 0) {
        moco_error("negative storage offset %lld", (long long)t->offset);
        return NULL;
    }
    /* numel and the last element used, without overflow (each term checked against numel of
     * the storage, which is bounded by the file size) */
    int64_t numel = 1, last = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0) numel = 0;
        else if (numel && __builtin_mul_overflow(numel, t->shape[d], &numel)) numel = INT64_MAX;
    }
    if (numel > 0) {
        for (int d = 0; d < t->ndim; d++) {
            int64_t span;
            if (__builtin_mul_overflow(t->shape[d] - 1, t->stride[d], &span) || __builtin_add_overflow(last, span, &last))
                last = INT64_MAX;
        }
    }
    if (numel > 0 && last >= s->numel) {
        char shape[96] = "", stride[96] = "";
        size_t ps = 0, pt = 0;
        for (int d = 0; d < t->ndim; d++) {
            ps += (size_t)snprintf(shape + ps, sizeof shape - (ps < sizeof shape ? ps : sizeof shape), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
            pt += (size_t)snprintf(stride + pt, sizeof stride - (pt < sizeof stride ? pt : sizeof stride), "%s%lld", d ? ", " : "", (long long)t->stride[d]);
            if (ps >= sizeof shape || pt >= sizeof stride) break;
        }
        moco_error("a tensor of shape [%s] (offset %lld, strides [%s]) reaches element %lld of storage '%s', which has "
                   "only %lld: the storage is too short (a truncated or hostile file)",
                   shape, (long long)t->offset, stride, last == INT64_MAX ? -1LL : (long long)last, s->key,
                   (long long)s->numel);
        return NULL;
    }
    t->numel = numel;
    t->extent = numel > 0 ? last - t->offset + 1 : 0;
    int64_t budget = (int64_t)tf->file_size + EXPANSION_ALLOWANCE;
    if (numel > budget - tf->tensor_elements) {
        moco_error("the tensors add up to more than %lld elements, far more than the file's %llu bytes hold "
                   "(views that expand a storage: a hostile file?)", (long long)budget,
                   (unsigned long long)tf->file_size);
        return NULL;
    }
    tf->tensor_elements += numel;
    if (tf->tensor_count == tf->tensor_cap) {
        size_t cap = tf->tensor_cap ? 2 * tf->tensor_cap : 64;
        TorchTensor **list = realloc(tf->tensors, cap * sizeof *list);
        if (!list) {
            moco_error("out of memory");
            return NULL;
        }
        tf->tensors = list;
        tf->tensor_cap = cap;
    }
    tf->tensors[tf->tensor_count++] = t;
    PickleValue *v = pickle_new_value(u, PICKLE_OBJECT);
    if (!v) return NULL;
    v->u.object.type = TORCH_OBJECT_TENSOR;
    v->u.object.ptr = t;
    return v;
}

static PickleValue *reduce(void *ctx, Unpickler *u, PickleValue *callable, PickleValue *args) {
    TorchFile *tf = ctx;
    size_t n = args->u.seq.len;
    int id = callable->u.global;
    switch (id) {
    case G_ORDERED_DICT: {
        if (n != 0) {
            moco_error("collections.OrderedDict called with arguments (only OrderedDict() is allowed)");
            return NULL;
        }
        PickleValue *d = pickle_new_value(u, PICKLE_DICT);
        if (d) d->flags = PICKLE_ORDERED;
        return d;
    }
    case G_REBUILD_TENSOR_V2:
    case G_REBUILD_TENSOR:
        /* v2: (storage, offset, size, stride, requires_grad, backward_hooks[, metadata]) */
        if (id == G_REBUILD_TENSOR_V2 ? (n < 6 || n > 7) : n != 4) {
            moco_error("%s called with %zu arguments", global_name(id), n);
            return NULL;
        }
        return rebuild_tensor(tf, u, args);
    case G_REBUILD_PARAMETER:
    case G_REBUILD_PARAMETER_WITH_STATE:
        /* (data, requires_grad, backward_hooks[, state]): the parameter is its data */
        if (n < 3 || n > 4 || !is_object(args->u.seq.items[0], TORCH_OBJECT_TENSOR)) {
            moco_error("%s needs a tensor and 2 or 3 more arguments", global_name(id));
            return NULL;
        }
        return args->u.seq.items[0];
    case G_TORCH_SIZE:
        if (n != 1 || args->u.seq.items[0]->kind != PICKLE_TUPLE) {
            moco_error("torch.Size needs one tuple");
            return NULL;
        }
        return args->u.seq.items[0];
    default:
        moco_error("REDUCE of %s is not allowed (it is not a function that builds data)", global_name(id));
        return NULL;
    }
}

static int build(void *ctx, Unpickler *u, PickleValue *obj, PickleValue *state) {
    (void)ctx;
    (void)u;
    (void)state;
    /* A state dict's OrderedDict carries _metadata (module versions) as its __dict__. */
    if (obj->kind == PICKLE_DICT && (obj->flags & PICKLE_ORDERED)) return 0;
    return moco_error("BUILD on a %s is not allowed (only an OrderedDict's attributes are accepted)",
                      pickle_kind_name(obj->kind));
}

static int refuse_global(void *ctx, const char *module, const char *name) {
    (void)ctx;
    return moco_error("global '%.100s.%.100s' in a header pickle (only plain data is expected there)", module, name);
}

static PickleValue *refuse_persistent(void *ctx, Unpickler *u, PickleValue *pid) {
    (void)ctx, (void)u, (void)pid;
    moco_error("a persistent id in a header pickle (only plain data is expected there)");
    return NULL;
}

static PickleValue *refuse_reduce(void *ctx, Unpickler *u, PickleValue *c, PickleValue *a) {
    (void)ctx, (void)u, (void)c, (void)a;
    moco_error("REDUCE in a header pickle (only plain data is expected there)");
    return NULL;
}

static int refuse_build(void *ctx, Unpickler *u, PickleValue *o, PickleValue *s) {
    (void)ctx, (void)u, (void)o, (void)s;
    return moco_error("BUILD in a header pickle (only plain data is expected there)");
}

static const PickleHooks plain_data = {NULL, refuse_global, refuse_persistent, refuse_reduce, refuse_build};

/* ------------------------------------------------------------ opening */

/* The legacy magic number 0x1950a86a20f9469cfc6c pickled with protocol 2 (LONG1 of 10 bytes). */
static const unsigned char legacy_magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                             0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

static TorchFormat sniff(const unsigned char *head, size_t n) {
    if (n >= 4 && !memcmp(head, "PK\3\4", 4)) return TORCH_FORMAT_ZIP;
    if (n >= sizeof legacy_magic && !memcmp(head, legacy_magic, sizeof legacy_magic)) return TORCH_FORMAT_LEGACY;
    return TORCH_FORMAT_NONE;
}

int torch_file_format(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return moco_error("%s: cannot open: %s", path, strerror(errno));
    unsigned char head[sizeof legacy_magic];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return sniff(head, n);
}

static int run_main_pickle(TorchFile *tf, uint64_t start, uint64_t end, uint64_t *stop) {
    PickleHooks hooks = {tf, find_global, persistent_load, reduce, build};
    tf->unpickler = unpickler_new(tf->f, start, end, &hooks);
    if (!tf->unpickler) return moco_error("out of memory");
    tf->root = unpickler_load(tf->unpickler, stop);
    return tf->root ? 0 : -1;
}

/* A header pickle of plain data; *value is copied out for the two kinds used here. */
static int plain_pickle(TorchFile *tf, uint64_t *pos, const char *what, PickleKind kind, int64_t *integer,
                        int *little_endian) {
    Unpickler *u = unpickler_new(tf->f, *pos, tf->file_size, &plain_data);
    if (!u) return moco_error("out of memory");
    PickleValue *v = unpickler_load(u, pos);
    int status = 0;
    if (!v) {
        status = moco_error_prefix("%s: ", what);
    } else if (v->kind != kind) {
        status = moco_error("%s: a %s, expected a %s", what, pickle_kind_name(v->kind), pickle_kind_name(kind));
    } else if (integer) {
        *integer = v->u.integer;
    } else if (little_endian) {
        PickleValue *e = pickle_dict_get(v, "little_endian");
        *little_endian = e && e->kind == PICKLE_BOOL ? (int)e->u.integer : -1;
    }
    unpickler_free(u);
    return status;
}

static int open_legacy(TorchFile *tf) {
    uint64_t pos = sizeof legacy_magic;
    int64_t protocol = 0;
    int little = -1;
    if (plain_pickle(tf, &pos, "protocol version", PICKLE_INT, &protocol, NULL)) return -1;
    if (protocol != 1001) return moco_error("legacy protocol version %lld (expected 1001)", (long long)protocol);
    if (plain_pickle(tf, &pos, "system info", PICKLE_DICT, NULL, &little)) return -1;
    if (little != 1)
        return moco_error("the file was written on a %s machine; only little-endian files are read",
                          little == 0 ? "big-endian" : "machine of unknown byte order (no little_endian in its system info)");
    if (run_main_pickle(tf, pos, tf->file_size, &pos)) return -1;
    /* The storage keys, in the order their bytes follow. */
    Unpickler *u = unpickler_new(tf->f, pos, tf->file_size, &plain_data);
    if (!u) return moco_error("out of memory");
    PickleValue *keys = unpickler_load(u, &pos);
    int status = 0;
    if (!keys) status = moco_error_prefix("storage key list: ");
    else if (keys->kind != PICKLE_LIST) status = moco_error("storage key list: a %s, expected a list", pickle_kind_name(keys->kind));
    for (size_t i = 0; !status && i < keys->u.seq.len; i++) {
        PickleValue *k = keys->u.seq.items[i];
        TorchStorage *s = k->kind == PICKLE_STRING ? storage_find(tf, k->u.str.data) : NULL;
        if (!s) {
            status = moco_error("storage key %zu of the key list is not a storage of the object", i);
            break;
        }
        if (s->located) {
            status = moco_error("storage '%s' is listed twice", s->key);
            break;
        }
        unsigned char count[8];
        if (read_at(tf, pos, count, 8)) {
            status = moco_error_prefix("storage '%s': ", s->key);
            break;
        }
        uint64_t n = le(count, 8), bytes = (uint64_t)s->numel * dtypes[s->dtype].size;
        if (n != (uint64_t)s->numel) {
            status = moco_error("storage '%s' holds %llu elements in the file, %lld in the pickle: corrupt", s->key,
                                (unsigned long long)n, (long long)s->numel);
            break;
        }
        if (bytes > tf->file_size - pos - 8) {
            status = moco_error("storage '%s' (%llu bytes at offset %llu) runs past the end of the file (%llu bytes): "
                                "truncated", s->key, (unsigned long long)bytes, (unsigned long long)(pos + 8),
                                (unsigned long long)tf->file_size);
            break;
        }
        s->data_offset = pos + 8;
        s->located = 1;
        pos += 8 + bytes;
    }
    unpickler_free(u);
    return status;
}

static int open_zip(TorchFile *tf) {
    if (zip_open(tf)) return -1;
    const ZipEntry *pkl = zip_record(tf->zip, "data.pkl");
    if (!pkl) return moco_error("no %sdata.pkl in the zip: not a torch.save file", tf->zip->prefix);
    const ZipEntry *order = zip_record(tf->zip, "byteorder");
    if (order) {
        char text[16] = "";
        uint64_t at;
        if (zip_data(tf, order, &at) || read_at(tf, at, text, order->size < 15 ? (size_t)order->size : 15)) return -1;
        if (strcmp(text, "little"))
            return moco_error("byteorder '%.15s': only little-endian files are read", text);
    }
    uint64_t start;
    if (zip_data(tf, pkl, &start)) return -1;
    uint64_t stop;
    if (run_main_pickle(tf, start, start + pkl->size, &stop)) return -1;
    for (size_t i = 0; i < tf->storage_cap; i++) {
        TorchStorage *s = tf->storages[i];
        if (!s) continue;
        char record[MAX_STORAGE_KEY + 8];
        snprintf(record, sizeof record, "data/%s", s->key);
        const ZipEntry *en = zip_record(tf->zip, record);
        if (!en) return moco_error("storage '%s' has no %s%s entry in the zip", s->key, tf->zip->prefix, record);
        if (zip_data(tf, en, &s->data_offset)) return -1;
        uint64_t bytes = (uint64_t)s->numel * dtypes[s->dtype].size;
        if (en->size < bytes)
            return moco_error("storage '%s' is %llu bytes in the zip, shorter than its %lld elements of %s (%llu bytes)",
                              s->key, (unsigned long long)en->size, (long long)s->numel, dtypes[s->dtype].storage,
                              (unsigned long long)bytes);
        s->located = 1;
    }
    return 0;
}

int torch_file_open_stream(TorchFile *tf, FILE *f, const char *name) {
    memset(tf, 0, sizeof *tf);
    tf->path = strdup(name ? name : "?");
    tf->f = f;
    if (!tf->path) {
        torch_file_close(tf);
        return moco_error("%s: out of memory", name);
    }
    int status = -1;
    off_t size;
    unsigned char head[sizeof legacy_magic];
    size_t n;
    if (fseeko(f, 0, SEEK_END) != 0 || (size = ftello(f)) < 0 || fseeko(f, 0, SEEK_SET) != 0) {
        moco_error("cannot find the file size: %s", strerror(errno));
    } else {
        tf->file_size = (uint64_t)size;
        n = fread(head, 1, sizeof head, f);
        tf->format = sniff(head, n);
        if (tf->format == TORCH_FORMAT_ZIP) status = open_zip(tf);
        else if (tf->format == TORCH_FORMAT_LEGACY) status = open_legacy(tf);
        else moco_error("not a torch.save file (neither a zip archive nor the legacy magic number)");
    }
    if (!status) {
        for (size_t i = 0; i < tf->storage_cap; i++) {
            if (tf->storages[i] && !tf->storages[i]->located) {
                status = moco_error("storage '%s' has no data in the file", tf->storages[i]->key);
                break;
            }
        }
    }
    if (status) {
        moco_error_prefix("%s: ", tf->path);
        torch_file_close(tf);
        return -1;
    }
    return 0;
}

int torch_file_open(TorchFile *tf, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        memset(tf, 0, sizeof *tf);
        return moco_error("%s: cannot open: %s", path, strerror(errno));
    }
    return torch_file_open_stream(tf, f, path);
}

void torch_file_close(TorchFile *tf) {
    if (tf->f) fclose(tf->f);
    unpickler_free(tf->unpickler);
    free(tf->storages);
    free(tf->tensors);
    zip_free(tf->zip);
    free(tf->path);
    memset(tf, 0, sizeof *tf);
}

/* ------------------------------------------------------------ tensor data */

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Element i of raw (little-endian, dtype) as a float; -1 when an integer is not exact. */
static int element(TorchDtype dtype, const unsigned char *p, float *out, int64_t *bad) {
    uint64_t v;
    switch (dtype) {
    case TORCH_F32: {
        uint32_t b = (uint32_t)le(p, 4);
        memcpy(out, &b, 4);
        return 0;
    }
    case TORCH_F64: {
        double d;
        v = le(p, 8);
        memcpy(&d, &v, 8);
        *out = (float)d;
        return 0;
    }
    case TORCH_F16: *out = half_to_float((uint16_t)le(p, 2)); return 0;
    case TORCH_BF16: {
        uint32_t b = (uint32_t)le(p, 2) << 16;
        memcpy(out, &b, 4);
        return 0;
    }
    case TORCH_I64: *bad = (int64_t)le(p, 8); break;
    case TORCH_I32: *bad = (int32_t)(uint32_t)le(p, 4); break;
    case TORCH_I16: *out = (float)(int16_t)(uint16_t)le(p, 2); return 0;
    case TORCH_I8: *out = (float)(int8_t)p[0]; return 0;
    case TORCH_U8: *out = (float)p[0]; return 0;
    case TORCH_BOOL: *out = p[0] ? 1.0f : 0.0f; return 0;
    default: return -1;
    }
    float f = (float)*bad;
    /* exact when the float converts back to the same integer (2^63 itself is out of range) */
    if (f >= 9.2233720368547758e18f || f < -9.2233720368547758e18f || (int64_t)f != *bad) return -1;
    *out = f;
    return 0;
}

Tensor *torch_file_read_tensor(TorchFile *tf, const TorchTensor *t, const char *name) {
    const char *what = name ? name : "a tensor";
    TorchStorage *s = t->storage;
    Tensor *out = tensor_empty(t->ndim, t->shape);
    if (!out) {
        moco_error_prefix("%s: %s: ", tf->path, what);
        return NULL;
    }
    if (t->numel == 0) return out;
    size_t es = dtypes[s->dtype].size;
    size_t bytes = (size_t)t->extent * es;
    unsigned char *raw = malloc(bytes);
    if (!raw) {
        tensor_free(out);
        moco_error("%s: %s: out of memory for %zu bytes", tf->path, what, bytes);
        return NULL;
    }
    if (read_at(tf, s->data_offset + (uint64_t)t->offset * es, raw, bytes)) {
        free(raw);
        tensor_free(out);
        moco_error_prefix("%s: %s (storage '%s'): ", tf->path, what, s->key);
        return NULL;
    }
    /* float32 in C order (the usual case): the bytes are the values. */
    int64_t expected = 1;
    int contiguous = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expected) contiguous = 0;
        expected *= t->shape[d];
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (contiguous && s->dtype == TORCH_F32) {
        memcpy(out->data, raw, bytes);
        free(raw);
        return out;
    }
#endif
    /* Walk the elements in C order: index[] counts, pos is the storage position. */
    int64_t index[TENSOR_MAX_DIMS] = {0}, pos = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t bad = 0;
        if (element(s->dtype, raw + (size_t)pos * es, &out->data[i], &bad)) {
            moco_error("%s: %s: %s value %lld at position %lld cannot be held exactly by float32", tf->path, what,
                       dtypes[s->dtype].name, (long long)bad, (long long)i);
            free(raw);
            tensor_free(out);
            return NULL;
        }
        for (int d = t->ndim - 1; d >= 0; d--) {
            pos += t->stride[d];
            if (++index[d] < t->shape[d]) break;
            pos -= t->stride[d] * t->shape[d];
            index[d] = 0;
        }
    }
    free(raw);
    return out;
}
