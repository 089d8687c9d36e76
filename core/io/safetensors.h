/* core/io/safetensors.h: the safetensors format (https://github.com/huggingface/safetensors),
 * read and written without executing anything from the file.
 *
 * Layout: an unsigned 64-bit little-endian N; N bytes of a UTF-8 JSON object (padded with
 * spaces) mapping each tensor name to {"dtype": "F32", "shape": [2, 3], "data_offsets":
 * [begin, end]}, plus an optional "__metadata__" object of string values; then the data
 * section, the tensors' little-endian bytes at [begin, end) relative to its start.
 *
 * Reading validates everything before trusting it: N against the file size (and the
 * reference implementation's bound of 100 MB), the JSON (parsed by libjansson, duplicate
 * keys rejected), each entry's fields and types, known dtypes, shape x dtype size == byte
 * count, offsets inside the data section, and that the tensors tile the data section
 * exactly (no overlap, no gap, nothing after it), as the reference implementation demands.
 * Every error names the file, and the tensor when there is one.
 *
 * Supported dtypes: F32; F64 (rounded to float32 on load); I64 (buffers such as
 * num_batches_tracked and queue_ptr, as PyTorch stores them; loading one whose values float32
 * cannot hold exactly is an error); U8 (bytes, e.g. a generator's state).  Other dtypes of the
 * format (F16, BF16, I32 ...) are reported as unsupported by name.
 *
 * Writing sorts the tensors by alignment (8-byte dtypes first) then name, as the reference
 * does, pads the header to a multiple of 8 so that every tensor is aligned, and replaces the
 * file atomically (core/io/atomic.h): a failed save leaves the previous file intact. */
#ifndef MOCO_SAFETENSORS_H
#define MOCO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tensor.h"

/* The largest header accepted, as in the reference implementation. */
#define SAFETENSORS_MAX_HEADER 100000000

typedef enum {
    SAFETENSORS_F32,
    SAFETENSORS_F64,
    SAFETENSORS_I64,
    SAFETENSORS_U8,
} SafetensorsDtype;

const char *safetensors_dtype_name(SafetensorsDtype dtype);   /* "F32" ... */
size_t safetensors_dtype_size(SafetensorsDtype dtype);        /* bytes per element */
/* 0 and *out for a supported name; -1 with a message otherwise. */
int safetensors_dtype_parse(const char *name, SafetensorsDtype *out);

typedef struct SafetensorsEntry {
    char *name;
    SafetensorsDtype dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;   /* data_offsets, relative to the data section */
} SafetensorsEntry;

typedef struct SafetensorsFile {
    char *path;
    FILE *f;
    uint64_t data_start;          /* 8 + header length */
    uint64_t data_size;
    SafetensorsEntry *entries;    /* sorted by name */
    size_t count;
    char **metadata_keys;         /* sorted by key */
    char **metadata_values;
    size_t metadata_count;
} SafetensorsFile;

/* Opens path and reads and validates its header (not the data).  Returns 0, or -1 with a
 * message naming the file; *sf is then empty (safetensors_close is still safe). */
int safetensors_open(SafetensorsFile *sf, const char *path);

/* The entry called name, or NULL. */
const SafetensorsEntry *safetensors_find(const SafetensorsFile *sf, const char *name);

/* The metadata value of key, or NULL. */
const char *safetensors_metadata(const SafetensorsFile *sf, const char *key);

/* Reads one tensor of the file as float32 (see the dtypes above).  NULL with a message
 * naming the file and the tensor when the data cannot be read or converted. */
Tensor *safetensors_read_tensor(SafetensorsFile *sf, const SafetensorsEntry *e);

/* Reads one tensor's raw little-endian bytes into buf (e->end - e->begin bytes). */
int safetensors_read_bytes(SafetensorsFile *sf, const SafetensorsEntry *e, void *buf);

void safetensors_close(SafetensorsFile *sf);

/* One tensor to write: its name, the values and the dtype to store them as.  Conversions
 * that would change a value are errors found before anything is written: I64 and U8 need
 * integral values (U8 in 0..255); F64 widens exactly. */
typedef struct SafetensorsItem {
    const char *name;
    const Tensor *tensor;
    SafetensorsDtype dtype;
} SafetensorsItem;

/* Writes the tensors and the metadata (string pairs; metadata_count may be 0) to path,
 * atomically.  Names must be unique, non-empty valid UTF-8 and not "__metadata__". */
int safetensors_save(const char *path, const SafetensorsItem *items, size_t count,
                     const char *const *metadata_keys, const char *const *metadata_values,
                     size_t metadata_count);

#endif
