/* core/io/torchfile.h: PyTorch's own files, read without executing anything, and written.
 *
 * Reading torch.save files, in both of PyTorch's layouts:
 *  - zip (PyTorch >= 1.6): ARCHIVE/data.pkl (the pickle), ARCHIVE/data/KEY (each storage's
 *    raw little-endian bytes), ARCHIVE/version, ARCHIVE/byteorder; stored (uncompressed)
 *    entries, zip64 included.  The central directory is parsed here; every entry must lie
 *    inside the file.
 *  - legacy (before 1.6; the official MoCo checkpoints): five pickles in a row -- the magic
 *    number, the protocol version (1001), the system info (little_endian must be true), the
 *    object, the list of storage keys -- then, for each key in that order, an int64 element
 *    count followed by the storage's bytes.
 * The pickle runs on core/io/pickle.c with an allow-list, as torch.load(weights_only=True):
 * collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_tensor /
 * _rebuild_parameter / _rebuild_parameter_with_state, torch.Size, and the storage types
 * (Float, Double, Half, BFloat16, Long, Int, Short, Char, Byte, Bool) inside persistent ids;
 * BUILD only on an OrderedDict (a state dict's _metadata, dropped).  Every other global is
 * refused by name, before anything is done with it.
 *
 * Before a file counts as open, every tensor is checked against its storage (offset, shape
 * and strides reach no element past the storage's end), every storage against the file (its
 * bytes are inside it), and the tensors' element count against the file's size (a view
 * with stride 0 could otherwise ask for terabytes).  Every error names the file.
 *
 * Tensors come out as moco's float32 Tensors (contiguous; views with offsets and strides are
 * gathered): float64 is rounded, float16 / bfloat16 widen exactly, integer and bool values
 * must be exactly representable in float32 (num_batches_tracked, queue_ptr are), else an
 * error naming the tensor.
 *
 * Writing (torchsave.c): torch_save_pth writes what torch.save(OrderedDict) writes in the zip
 * layout (torch.load opens it); torch_save_detectron2 writes what pickle.dump writes for
 * {"model": {name: numpy array}, "__author__": AUTHOR, "matching_heuristics": True}, the
 * file of the official convert-pretrain-to-detectron2.py.  Both replace the file atomically
 * (core/io/atomic.h). */
#ifndef MOCO_TORCHFILE_H
#define MOCO_TORCHFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "io/pickle.h"
#include "tensor.h"

typedef enum {
    TORCH_F32,
    TORCH_F64,
    TORCH_F16,
    TORCH_BF16,
    TORCH_I64,
    TORCH_I32,
    TORCH_I16,
    TORCH_I8,
    TORCH_U8,
    TORCH_BOOL,
    TORCH_DTYPE_COUNT
} TorchDtype;

/* safetensors' names ("F32", "I64", "BOOL" ...), as moco.save uses them. */
const char *torch_dtype_name(TorchDtype dtype);
size_t torch_dtype_size(TorchDtype dtype);
/* 0 and *out for a known name; -1 with a message otherwise. */
int torch_dtype_parse(const char *name, TorchDtype *out);

typedef enum { TORCH_FORMAT_NONE = 0, TORCH_FORMAT_ZIP = 1, TORCH_FORMAT_LEGACY = 2 } TorchFormat;

/* The types of the PICKLE_OBJECT values the reader makes. */
enum { TORCH_OBJECT_STORAGE = 1, TORCH_OBJECT_TENSOR = 2 };

typedef struct TorchStorage {
    char *key;
    TorchDtype dtype;
    int64_t numel;
    uint64_t data_offset; /* file offset of element 0 */
    int located;          /* data_offset is known and the bytes are inside the file */
} TorchStorage;

typedef struct TorchTensor {
    TorchStorage *storage;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t stride[TENSOR_MAX_DIMS];
    int64_t offset; /* in elements of the storage */
    int64_t numel;
    int64_t extent; /* storage elements from offset to the last one used, inclusive (0 if empty) */
} TorchTensor;

typedef struct TorchFile {
    char *path;
    FILE *f;
    uint64_t file_size;
    TorchFormat format;
    PickleValue *root;       /* the object torch.save was given */
    Unpickler *unpickler;    /* owns root and every value under it */
    TorchStorage **storages; /* hash table of storage_cap slots (NULL = empty) */
    size_t storage_count, storage_cap;
    TorchTensor **tensors;   /* every tensor the pickle built, in order */
    size_t tensor_count, tensor_cap;
    int64_t tensor_elements; /* their total element count */
    struct TorchZip *zip;
} TorchFile;

/* The layout of path by its first bytes: TORCH_FORMAT_ZIP ("PK\3\4"), TORCH_FORMAT_LEGACY
 * (the pickled magic number), TORCH_FORMAT_NONE; -1 with a message when it cannot be read. */
int torch_file_format(const char *path);

/* Opens, unpickles and validates (see above); reads no tensor data.  0, or -1 with a message
 * naming the file (*tf is then empty; torch_file_close is still safe). */
int torch_file_open(TorchFile *tf, const char *path);
/* The same on an open stream (a file or an fmemopen buffer), which *tf then owns (it is
 * closed on failure too); name is used in messages. */
int torch_file_open_stream(TorchFile *tf, FILE *f, const char *name);

/* One tensor as a new float32 tensor of its shape.  name (may be NULL) is for messages. */
Tensor *torch_file_read_tensor(TorchFile *tf, const TorchTensor *t, const char *name);

void torch_file_close(TorchFile *tf);

/* ---- writing ---- */

/* One tensor to write: the values and the dtype to store them as (F32, F64, F16, I64, I32,
 * U8, BOOL).  Integer dtypes need integral values in range, BOOL needs 0 or 1, F16 values
 * that fit: errors found before anything is written. */
typedef struct TorchSaveItem {
    const char *name;
    const Tensor *tensor;
    TorchDtype dtype;
} TorchSaveItem;

/* torch.save(OrderedDict(items), path) in the zip layout, in the given order. */
int torch_save_pth(const char *path, const TorchSaveItem *items, size_t count);

/* pickle.dump({"model": {name: numpy array}, "__author__": author, "matching_heuristics":
 * True}, f) with the default protocol (4), in the given order. */
int torch_save_detectron2(const char *path, const TorchSaveItem *items, size_t count, const char *author);

/* The shared conversion of the writers: n values of t as dtype, little-endian, into out
 * (n * torch_dtype_size(dtype) bytes).  -1 with a message naming the tensor when a value
 * does not fit the dtype. */
int torch_encode_values(const TorchSaveItem *item, unsigned char *out);

#endif
