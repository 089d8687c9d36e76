/* core/io/safetensors.c: safetensors reader and writer (format and rules in safetensors.h).
 *
 * The header is parsed by libjansson; this file only checks what the JSON says.  Nothing
 * read from a file is used as a size, an offset or a count before it was checked against
 * the file's real size, so a corrupt or hostile file gives an error, never a crash or a
 * huge allocation. */
#include "io/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "io/atomic.h"
#include "io/file.h"

/* Elements converted per chunk when a dtype is not float32. */
#define CONVERT_CHUNK 8192

/* ------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [SAFETENSORS_F32] = {"F32", 4},
    [SAFETENSORS_F64] = {"F64", 8},
    [SAFETENSORS_I64] = {"I64", 8},
    [SAFETENSORS_U8] = {"U8", 1},
};
#define DTYPE_COUNT (sizeof dtype_info / sizeof dtype_info[0])

/* The format's other dtypes: named as unsupported rather than unknown. */
static const char *const other_format_dtypes[] = {
    "BOOL", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "U64", "F8_E5M2", "F8_E4M3",
    "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64", NULL};

const char *safetensors_dtype_name(SafetensorsDtype dtype) {
    return (unsigned)dtype < DTYPE_COUNT ? dtype_info[dtype].name : "?";
}

size_t safetensors_dtype_size(SafetensorsDtype dtype) {
    return (unsigned)dtype < DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

int safetensors_dtype_parse(const char *name, SafetensorsDtype *out) {
    for (unsigned i = 0; i < DTYPE_COUNT; i++) {
        if (!strcmp(name, dtype_info[i].name)) {
            *out = (SafetensorsDtype)i;
            return 0;
        }
    }
    for (int i = 0; other_format_dtypes[i]; i++)
        if (!strcmp(name, other_format_dtypes[i]))
            return moco_error("dtype %s is not supported (moco-lua reads and writes F32, F64, I64 and U8)", name);
    return moco_error("unknown dtype '%.40s' (moco-lua reads and writes F32, F64, I64 and U8)", name);
}

/* ------------------------------------------------------------ little-endian bytes */

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void store_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t load_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_LITTLE_ENDIAN 1
#else
#define HOST_LITTLE_ENDIAN 0
#endif

/* Whether an int64 value survives a round trip through float32: at most 24 significant
 * bits between its highest and lowest set bit. */
static int int64_fits_float(int64_t v) {
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (m == 0) return 1;
    while (!(m & 1)) m >>= 1;
    return m < (1u << 24);
}

/* ------------------------------------------------------------ reading */

void safetensors_close(SafetensorsFile *sf) {
    if (!sf) return;
    if (sf->f) fclose(sf->f);
    for (size_t i = 0; i < sf->count; i++) free(sf->entries[i].name);
    free(sf->entries);
    for (size_t i = 0; i < sf->metadata_count; i++) {
        free(sf->metadata_keys[i]);
        free(sf->metadata_values[i]);
    }
    free(sf->metadata_keys);
    free(sf->metadata_values);
    free(sf->path);
    memset(sf, 0, sizeof *sf);
}

static int compare_entry_names(const void *a, const void *b) {
    return strcmp(((const SafetensorsEntry *)a)->name, ((const SafetensorsEntry *)b)->name);
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Entries ordered by where their data lies (zero-size ones first at equal begins). */
static int compare_entry_offsets(const void *a, const void *b) {
    const SafetensorsEntry *x = *(const SafetensorsEntry *const *)a, *y = *(const SafetensorsEntry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Reads a non-negative JSON integer; -1 if value is not one. */
static int json_nonnegative(const json_t *value, uint64_t *out) {
    if (!json_is_integer(value)) return -1;
    json_int_t v = json_integer_value(value);
    if (v < 0) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Fills e from the header's entry for e->name.  The message lacks the file name (the
 * caller adds it). */
static int parse_entry(SafetensorsEntry *e, json_t *info, uint64_t data_size) {
    if (!json_is_object(info)) return moco_error("tensor '%.200s': the entry is not a JSON object", e->name);
    const char *key;
    json_t *value;
    json_object_foreach(info, key, value) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return moco_error("tensor '%.200s': unexpected field \"%.40s\" (expected dtype, shape, data_offsets)",
                              e->name, key);
    }
    json_t *dtype = json_object_get(info, "dtype");
    json_t *shape = json_object_get(info, "shape");
    json_t *offsets = json_object_get(info, "data_offsets");
    if (!dtype || !shape || !offsets)
        return moco_error("tensor '%.200s': missing field \"%s\"", e->name,
                          !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!json_is_string(dtype)) return moco_error("tensor '%.200s': dtype is not a string", e->name);
    if (safetensors_dtype_parse(json_string_value(dtype), &e->dtype))
        return moco_error_prefix("tensor '%.200s': ", e->name);

    if (!json_is_array(shape)) return moco_error("tensor '%.200s': shape is not an array", e->name);
    size_t ndim = json_array_size(shape);
    if (ndim > TENSOR_MAX_DIMS)
        return moco_error("tensor '%.200s': %zu dimensions, at most %d are supported", e->name, ndim,
                          TENSOR_MAX_DIMS);
    e->ndim = (int)ndim;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < ndim; d++) {
        uint64_t size;
        if (json_nonnegative(json_array_get(shape, d), &size))
            return moco_error("tensor '%.200s': shape entry %zu is not a non-negative integer", e->name, d);
        e->shape[d] = (int64_t)size;
        if (size > ((uint64_t)1 << 62) || __builtin_mul_overflow(numel, size, &numel) ||
            numel > ((uint64_t)1 << 62))
            overflow = 1;
    }
    uint64_t nbytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)safetensors_dtype_size(e->dtype), &nbytes))
        return moco_error("tensor '%.200s': its shape is too large to be real", e->name);
    e->numel = (int64_t)numel;

    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        json_nonnegative(json_array_get(offsets, 0), &e->begin) ||
        json_nonnegative(json_array_get(offsets, 1), &e->end))
        return moco_error("tensor '%.200s': data_offsets must be two non-negative integers [begin, end]", e->name);
    if (e->begin > e->end)
        return moco_error("tensor '%.200s': data_offsets [%llu, %llu] end before they begin", e->name,
                          (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_size)
        return moco_error("tensor '%.200s': data_offsets [%llu, %llu] go past the end of the data section "
                          "(%llu bytes): the file is truncated or corrupt", e->name,
                          (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)data_size);
    if (e->end - e->begin != nbytes) {
        char shape_text[160] = "[";
        for (int d = 0; d < e->ndim; d++)
            snprintf(shape_text + strlen(shape_text), sizeof shape_text - strlen(shape_text), "%s%lld",
                     d ? ", " : "", (long long)e->shape[d]);
        strncat(shape_text, "]", sizeof shape_text - strlen(shape_text) - 1);
        return moco_error("tensor '%.200s': shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] "
                          "hold %llu", e->name, shape_text, safetensors_dtype_name(e->dtype),
                          (unsigned long long)nbytes, (unsigned long long)e->begin,
                          (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
    }
    return 0;
}

typedef struct {
    char *key, *value;
} MetadataPair;

static int compare_pairs(const void *a, const void *b) {
    return strcmp(((const MetadataPair *)a)->key, ((const MetadataPair *)b)->key);
}

static int parse_metadata(SafetensorsFile *sf, json_t *meta) {
    if (json_is_null(meta)) return 0;
    if (!json_is_object(meta)) return moco_error("\"__metadata__\" is not an object of strings");
    size_t n = json_object_size(meta);
    MetadataPair *pairs = calloc(n ? n : 1, sizeof *pairs);
    sf->metadata_keys = calloc(n ? n : 1, sizeof *sf->metadata_keys);
    sf->metadata_values = calloc(n ? n : 1, sizeof *sf->metadata_values);
    if (!pairs || !sf->metadata_keys || !sf->metadata_values) {
        free(pairs);
        return moco_error("out of memory");
    }
    const char *key;
    json_t *value;
    size_t count = 0;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value)) {
            free(pairs);
            return moco_error("\"__metadata__\" entry '%.100s' is not a string", key);
        }
        pairs[count].key = (char *)key; /* jansson's, valid while meta lives */
        pairs[count].value = (char *)json_string_value(value);
        count++;
    }
    qsort(pairs, count, sizeof *pairs, compare_pairs);
    int status = 0;
    for (size_t i = 0; i < count && !status; i++) {
        sf->metadata_keys[i] = strdup(pairs[i].key);
        sf->metadata_values[i] = strdup(pairs[i].value);
        sf->metadata_count++; /* counted even when a copy failed: close frees both slots */
        if (!sf->metadata_keys[i] || !sf->metadata_values[i]) status = moco_error("out of memory");
    }
    free(pairs);
    return status;
}

/* The tensors must tile [0, data_size) exactly, in some order: no two overlap, no byte
 * belongs to none (the reference implementation's rule; it also makes the file's size
 * match its header, which catches truncation and appended garbage). */
static int check_tiling(const SafetensorsFile *sf) {
    const SafetensorsEntry **order = malloc((sf->count ? sf->count : 1) * sizeof *order);
    if (!order) return moco_error("out of memory");
    for (size_t i = 0; i < sf->count; i++) order[i] = &sf->entries[i];
    qsort(order, sf->count, sizeof *order, compare_entry_offsets);
    uint64_t at = 0;
    int status = 0;
    for (size_t i = 0; i < sf->count && !status; i++) {
        const SafetensorsEntry *e = order[i];
        if (e->begin < at)
            status = moco_error("tensors '%.200s' and '%.200s' overlap (data_offsets [%llu, %llu] and [%llu, %llu])",
                                order[i - 1]->name, e->name, (unsigned long long)order[i - 1]->begin,
                                (unsigned long long)order[i - 1]->end, (unsigned long long)e->begin,
                                (unsigned long long)e->end);
        else if (e->begin > at)
            status = moco_error("bytes [%llu, %llu) of the data section belong to no tensor (before '%.200s'): "
                                "corrupt data_offsets", (unsigned long long)at, (unsigned long long)e->begin, e->name);
        at = e->end;
    }
    if (!status && at != sf->data_size)
        status = moco_error("the data section has %llu bytes but the tensors account for %llu: the file is %s",
                            (unsigned long long)sf->data_size, (unsigned long long)at,
                            at < sf->data_size ? "longer than its header says (trailing garbage?)" : "truncated");
    free(order);
    return status;
}

/* The 8-byte length and the JSON header after it, from sf->f (a file of file_size bytes),
 * into a malloc'd *header of *len bytes; sets where the data section lies.  On error
 * *header stays NULL and the message lacks the file name (the caller adds it). */
static int read_header(SafetensorsFile *sf, uint64_t file_size, char **header, uint64_t *len) {
    unsigned char len_bytes[8];
    if (file_size < 8 || fread(len_bytes, 1, 8, sf->f) != 8)
        return moco_error("not a safetensors file: %llu bytes, too short for the 8-byte header length",
                          (unsigned long long)file_size);
    uint64_t n = load_le64(len_bytes);
    if (n > SAFETENSORS_MAX_HEADER)
        return moco_error("header length %llu is over the format's limit of %d bytes (not a safetensors file, "
                          "or a corrupt one)", (unsigned long long)n, SAFETENSORS_MAX_HEADER);
    if (n > file_size - 8)
        return moco_error("header length %llu is larger than the rest of the file (%llu bytes): the file is "
                          "truncated or not a safetensors file", (unsigned long long)n,
                          (unsigned long long)(file_size - 8));
    if (n < 2) return moco_error("header of %llu bytes cannot hold a JSON object", (unsigned long long)n);
    char *text = malloc(n);
    if (!text) return moco_error("out of memory for a %llu-byte header", (unsigned long long)n);
    if (fread(text, 1, n, sf->f) != n) {
        free(text);
        return moco_error("cannot read the %llu-byte header (truncated?)", (unsigned long long)n);
    }
    *header = text;
    *len = n;
    sf->data_start = 8 + n;
    sf->data_size = file_size - sf->data_start;
    return 0;
}

/* The header object's tensors (every key but "__metadata__") and metadata into sf, the
 * entries sorted by name and checked to tile the data section. */
static int parse_entries(SafetensorsFile *sf, json_t *root) {
    json_t *meta = json_object_get(root, "__metadata__");
    size_t n = json_object_size(root) - (meta ? 1 : 0);
    sf->entries = calloc(n ? n : 1, sizeof *sf->entries);
    if (!sf->entries) return moco_error("out of memory");
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (!strcmp(key, "__metadata__")) continue;
        SafetensorsEntry *e = &sf->entries[sf->count];
        e->name = strdup(key);
        if (!e->name) return moco_error("out of memory");
        sf->count++; /* counted before parsing, so that close frees the name */
        if (parse_entry(e, value, sf->data_size)) return -1;
    }
    if (meta && parse_metadata(sf, meta)) return -1;
    qsort(sf->entries, sf->count, sizeof *sf->entries, compare_entry_names);
    return check_tiling(sf);
}

/* The JSON header of len bytes into sf's entries and metadata.  The message lacks the file
 * name (the caller adds it). */
static int parse_header(SafetensorsFile *sf, const char *header, uint64_t len) {
    if (header[0] != '{') return moco_error("the header does not start with '{' (not a safetensors file)");
    json_error_t jerr;
    json_t *root = json_loadb(header, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return moco_error("malformed JSON header: %s (byte %d of the header)", jerr.text, jerr.position);
    int status = json_is_object(root) ? parse_entries(sf, root) : moco_error("the header is not a JSON object");
    json_decref(root);
    return status;
}

int safetensors_open(SafetensorsFile *sf, const char *path) {
    memset(sf, 0, sizeof *sf);
    sf->path = strdup(path);
    if (!sf->path) return moco_error("%s: out of memory", path);
    int64_t length = 0;
    sf->f = file_fopen_regular(path, &length); /* never blocks on a FIFO; its message names the file */
    if (!sf->f) {
        safetensors_close(sf);
        return -1;
    }
    char *header = NULL;
    uint64_t header_len = 0;
    int status = read_header(sf, (uint64_t)length, &header, &header_len);
    if (!status) status = parse_header(sf, header, header_len);
    free(header);
    if (status) {
        moco_error_prefix("%s: ", path);
        safetensors_close(sf);
        return -1;
    }
    return 0;
}

const SafetensorsEntry *safetensors_find(const SafetensorsFile *sf, const char *name) {
    SafetensorsEntry key;
    key.name = (char *)name;
    return bsearch(&key, sf->entries, sf->count, sizeof *sf->entries, compare_entry_names);
}

const char *safetensors_metadata(const SafetensorsFile *sf, const char *key) {
    char **found = bsearch(&key, sf->metadata_keys, sf->metadata_count, sizeof *sf->metadata_keys, compare_strings);
    return found ? sf->metadata_values[found - sf->metadata_keys] : NULL;
}

static int entry_belongs(const SafetensorsFile *sf, const SafetensorsEntry *e) {
    return sf->f && e >= sf->entries && e < sf->entries + sf->count;
}

/* Positions the stream at byte `offset` of the tensor's data. */
static int seek_entry(SafetensorsFile *sf, const SafetensorsEntry *e, uint64_t offset) {
    uint64_t at = sf->data_start + e->begin + offset;
    if (at > (uint64_t)INT64_MAX || fseeko(sf->f, (off_t)at, SEEK_SET) != 0)
        return moco_error("%s: tensor '%.200s': cannot seek to its data: %s", sf->path, e->name, strerror(errno));
    return 0;
}

static int read_exact(SafetensorsFile *sf, const SafetensorsEntry *e, void *buf, size_t n) {
    if (fread(buf, 1, n, sf->f) != n)
        return moco_error("%s: tensor '%.200s': %s while reading its data (was the file changed or truncated "
                          "after it was opened?)", sf->path, e->name,
                          ferror(sf->f) ? strerror(errno) : "unexpected end of file");
    return 0;
}

int safetensors_read_bytes(SafetensorsFile *sf, const SafetensorsEntry *e, void *buf) {
    if (!entry_belongs(sf, e)) return moco_error("safetensors_read_bytes: the entry is not from this open file");
    if (e->end == e->begin) return 0;
    if (seek_entry(sf, e, 0)) return -1;
    return read_exact(sf, e, buf, (size_t)(e->end - e->begin));
}

Tensor *safetensors_read_tensor(SafetensorsFile *sf, const SafetensorsEntry *e) {
    if (!entry_belongs(sf, e)) {
        moco_error("safetensors_read_tensor: the entry is not from this open file");
        return NULL;
    }
    Tensor *t = tensor_empty(e->ndim, e->shape);
    if (!t) {
        moco_error_prefix("%s: tensor '%.200s': ", sf->path, e->name);
        return NULL;
    }
    if (t->numel == 0) return t;
    if (seek_entry(sf, e, 0)) {
        tensor_free(t);
        return NULL;
    }
    size_t esize = safetensors_dtype_size(e->dtype);
    if (e->dtype == SAFETENSORS_F32 && HOST_LITTLE_ENDIAN) {
        if (read_exact(sf, e, t->data, (size_t)t->numel * 4)) {
            tensor_free(t);
            return NULL;
        }
        return t;
    }
    unsigned char buf[CONVERT_CHUNK * 8];
    for (int64_t done = 0; done < t->numel;) {
        size_t n = (size_t)(t->numel - done < CONVERT_CHUNK ? t->numel - done : CONVERT_CHUNK);
        if (read_exact(sf, e, buf, n * esize)) {
            tensor_free(t);
            return NULL;
        }
        float *out = t->data + done;
        for (size_t i = 0; i < n; i++) {
            const unsigned char *p = buf + i * esize;
            switch (e->dtype) {
            case SAFETENSORS_F32: {
                uint32_t bits = load_le32(p);
                memcpy(&out[i], &bits, 4);
                break;
            }
            case SAFETENSORS_F64: {
                uint64_t bits = load_le64(p);
                double d;
                memcpy(&d, &bits, 8);
                out[i] = (float)d;
                break;
            }
            case SAFETENSORS_I64: {
                int64_t v = (int64_t)load_le64(p);
                if (!int64_fits_float(v)) {
                    moco_error("%s: tensor '%.200s': int64 value %lld (element %lld) cannot be held exactly by a "
                               "float32 tensor", sf->path, e->name, (long long)v, (long long)(done + (int64_t)i));
                    tensor_free(t);
                    return NULL;
                }
                out[i] = (float)v;
                break;
            }
            case SAFETENSORS_U8:
                out[i] = (float)p[0];
                break;
            }
        }
        done += (int64_t)n;
    }
    return t;
}

/* ------------------------------------------------------------ writing */

typedef struct {
    const SafetensorsItem *item;
    uint64_t begin, end;
} WriteSlot;

/* 8-byte dtypes first, then 4, then 1; by name within a size: every tensor stays aligned
 * to its element size once the header is padded to a multiple of 8. */
static int compare_slots(const void *a, const void *b) {
    const SafetensorsItem *x = ((const WriteSlot *)a)->item, *y = ((const WriteSlot *)b)->item;
    size_t sx = safetensors_dtype_size(x->dtype), sy = safetensors_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Checks that every value of item survives its conversion. */
static int check_item_values(const SafetensorsItem *item) {
    const Tensor *t = item->tensor;
    for (int64_t i = 0; i < t->numel; i++) {
        float v = t->data[i];
        if (item->dtype == SAFETENSORS_I64) {
            /* [-2^63, 2^63) and integral; NaN fails the range test */
            if (!(v >= -9.2233720368547758e18f && v < 9.2233720368547758e18f) || v != (float)(int64_t)v)
                return moco_error("tensor '%.200s': element %lld is %g, which int64 (I64) cannot hold", item->name,
                                  (long long)i, (double)v);
        } else if (item->dtype == SAFETENSORS_U8) {
            if (!(v >= 0 && v <= 255) || v != (float)(int)v)
                return moco_error("tensor '%.200s': element %lld is %g, which uint8 (U8) cannot hold", item->name,
                                  (long long)i, (double)v);
        }
    }
    return 0;
}

static int write_item_data(AtomicFile *af, const SafetensorsItem *item) {
    const Tensor *t = item->tensor;
    if (t->numel == 0) return 0;
    if (item->dtype == SAFETENSORS_F32 && HOST_LITTLE_ENDIAN) {
        if (fwrite(t->data, 4, (size_t)t->numel, af->f) != (size_t)t->numel) return atomic_file_write_error(af, errno);
        return 0;
    }
    size_t esize = safetensors_dtype_size(item->dtype);
    unsigned char buf[CONVERT_CHUNK * 8];
    for (int64_t done = 0; done < t->numel;) {
        size_t n = (size_t)(t->numel - done < CONVERT_CHUNK ? t->numel - done : CONVERT_CHUNK);
        const float *in = t->data + done;
        for (size_t i = 0; i < n; i++) {
            unsigned char *p = buf + i * esize;
            switch (item->dtype) {
            case SAFETENSORS_F32: {
                uint32_t bits;
                memcpy(&bits, &in[i], 4);
                store_le32(p, bits);
                break;
            }
            case SAFETENSORS_F64: {
                double d = in[i];
                uint64_t bits;
                memcpy(&bits, &d, 8);
                store_le64(p, bits);
                break;
            }
            case SAFETENSORS_I64:
                store_le64(p, (uint64_t)(int64_t)in[i]);
                break;
            case SAFETENSORS_U8:
                p[0] = (unsigned char)in[i];
                break;
            }
        }
        if (fwrite(buf, esize, n, af->f) != n) return atomic_file_write_error(af, errno);
        done += (int64_t)n;
    }
    return 0;
}

/* The header's JSON text (newly allocated by jansson) for the slots in data order. */
static char *build_header(const char *path, const WriteSlot *slots, size_t count, const char *const *metadata_keys,
                          const char *const *metadata_values, size_t metadata_count) {
    json_t *root = json_object();
    if (!root) {
        moco_error("%s: out of memory", path);
        return NULL;
    }
    if (metadata_count) {
        json_t *meta = json_object();
        if (!meta || json_object_set_new(root, "__metadata__", meta)) {
            json_decref(root);
            moco_error("%s: out of memory", path);
            return NULL;
        }
        for (size_t i = 0; i < metadata_count; i++) {
            json_t *value = json_string(metadata_values[i]);
            if (!value) {
                json_decref(root);
                moco_error("%s: metadata '%.100s': the value is not valid UTF-8", path, metadata_keys[i]);
                return NULL;
            }
            if (json_object_set_new(meta, metadata_keys[i], value)) {
                json_decref(root);
                moco_error("%s: metadata key '%.100s' is not valid UTF-8", path, metadata_keys[i]);
                return NULL;
            }
        }
    }
    for (size_t i = 0; i < count; i++) {
        const SafetensorsItem *item = slots[i].item;
        json_t *shape = json_array();
        for (int d = 0; shape && d < item->tensor->ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)item->tensor->shape[d]));
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", safetensors_dtype_name(item->dtype),
                                  "shape", shape, "data_offsets", (json_int_t)slots[i].begin,
                                  (json_int_t)slots[i].end);
        if (!entry || json_object_set_new(root, item->name, entry)) {
            json_decref(root);
            moco_error("%s: tensor name '%.200s' is not valid UTF-8 (or out of memory)", path, item->name);
            return NULL;
        }
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!text) moco_error("%s: out of memory for the header", path);
    return text;
}

int safetensors_save(const char *path, const SafetensorsItem *items, size_t count,
                     const char *const *metadata_keys, const char *const *metadata_values,
                     size_t metadata_count) {
    /* ---- validate everything before the file is touched ---- */
    for (size_t i = 0; i < count; i++) {
        const SafetensorsItem *item = &items[i];
        if (!item->name || !item->name[0]) return moco_error("%s: tensor %zu has an empty name", path, i + 1);
        if (!strcmp(item->name, "__metadata__"))
            return moco_error("%s: '__metadata__' is reserved and cannot name a tensor", path);
        if (!item->tensor) return moco_error("%s: tensor '%.200s' is missing (NULL)", path, item->name);
        if ((unsigned)item->dtype >= DTYPE_COUNT)
            return moco_error("%s: tensor '%.200s': invalid dtype %d", path, item->name, (int)item->dtype);
        if (check_item_values(item)) return moco_error_prefix("%s: ", path);
    }
    for (size_t i = 0; i < metadata_count; i++) {
        if (!metadata_keys[i] || !metadata_values[i]) return moco_error("%s: metadata entry %zu is NULL", path, i + 1);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(metadata_keys[i], metadata_keys[j]))
                return moco_error("%s: metadata key '%.100s' appears twice", path, metadata_keys[i]);
    }
    WriteSlot *slots = malloc((count ? count : 1) * sizeof *slots);
    if (!slots) return moco_error("%s: out of memory", path);
    for (size_t i = 0; i < count; i++) slots[i].item = &items[i];
    qsort(slots, count, sizeof *slots, compare_slots);
    const char **names = malloc((count ? count : 1) * sizeof *names);
    if (!names) {
        free(slots);
        return moco_error("%s: out of memory", path);
    }
    for (size_t i = 0; i < count; i++) names[i] = items[i].name;
    qsort(names, count, sizeof *names, compare_strings);
    for (size_t i = 1; i < count; i++) {
        if (!strcmp(names[i - 1], names[i])) {
            moco_error("%s: two tensors are named '%.200s'", path, names[i]);
            free(names);
            free(slots);
            return -1;
        }
    }
    free(names);
    uint64_t at = 0;
    for (size_t i = 0; i < count; i++) {
        slots[i].begin = at;
        at += (uint64_t)slots[i].item->tensor->numel * safetensors_dtype_size(slots[i].item->dtype);
        slots[i].end = at;
    }
    char *header = build_header(path, slots, count, metadata_keys, metadata_values, metadata_count);
    if (!header) {
        free(slots);
        return -1;
    }
    size_t text_len = strlen(header);
    uint64_t header_len = (text_len + 7) / 8 * 8; /* spaces after the JSON, as the reference pads */

    /* ---- write under a temporary name, then rename ---- */
    AtomicFile af;
    if (atomic_file_begin(&af, path)) {
        free(header);
        free(slots);
        return -1;
    }
    unsigned char len_bytes[8];
    store_le64(len_bytes, header_len);
    int status = 0;
    if (fwrite(len_bytes, 1, 8, af.f) != 8 || fwrite(header, 1, text_len, af.f) != text_len)
        status = atomic_file_write_error(&af, errno);
    for (uint64_t i = text_len; !status && i < header_len; i++)
        if (fputc(' ', af.f) == EOF) status = atomic_file_write_error(&af, errno);
    for (size_t i = 0; !status && i < count; i++) status = write_item_data(&af, slots[i].item);
    free(header);
    free(slots);
    if (status) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}
