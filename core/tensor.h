/* core/tensor.h: float32 N-d tensors for libmoco.
 *
 * Conventions (fixed once, used everywhere):
 *  - float32 only; at most TENSOR_MAX_DIMS dimensions; row-major ("C order", NCHW for images).
 *  - Every tensor is contiguous.  Several tensors may share one reference-counted storage:
 *    reshape always does; narrow/select do when the result is contiguous in memory (along the
 *    first dimension, or past leading dimensions of size 1) and copy otherwise, as PyTorch's
 *    reshape is a view "when possible".  tensor_is_view() tells which happened.
 *  - Positions in C are 0-based (the Lua binding converts to Lua's 1-based); error messages
 *    count dimensions and positions from 1, as the Lua user who reads them does.
 *  - Functions that can fail return NULL or -1 and set moco_last_error() with a message that
 *    names the operation and both shapes; they validate before they allocate.
 *  - Functions ending in '_' modify their first argument in place. */
#ifndef MOCO_TENSOR_H
#define MOCO_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define TENSOR_MAX_DIMS 6

typedef struct Storage {
    float *data;
    int64_t size;   /* floats */
    int refcount;   /* atomic */
} Storage;

typedef struct Tensor {
    Storage *storage;
    float *data;    /* storage->data + offset */
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t numel;
} Tensor;

/* ---- creation (shape of ndim entries, each >= 0; ndim 0 is a scalar) ---- */
Tensor *tensor_empty(int ndim, const int64_t *shape);          /* uninitialised */
Tensor *tensor_zeros(int ndim, const int64_t *shape);
Tensor *tensor_ones(int ndim, const int64_t *shape);
Tensor *tensor_full(int ndim, const int64_t *shape, float value);
Tensor *tensor_rand(int ndim, const int64_t *shape, Rng *rng);  /* U[0,1) */
Tensor *tensor_randn(int ndim, const int64_t *shape, Rng *rng); /* N(0,1) */
Tensor *tensor_from_data(int ndim, const int64_t *shape, const float *data);
/* [start, end) by step, like torch.arange; step != 0. */
Tensor *tensor_arange(double start, double end, double step);
Tensor *tensor_empty_like(const Tensor *t);
Tensor *tensor_clone(const Tensor *t);
void tensor_free(Tensor *t);  /* NULL is fine; frees the storage with its last tensor */

/* ---- shape ---- */
int tensor_same_shape(const Tensor *a, const Tensor *b);
/* "[2, 3, 4]" into buf (always terminated); returns buf. */
char *tensor_shape_str(const Tensor *t, char *buf, size_t size);
size_t tensor_nbytes(const Tensor *t);
int tensor_is_view(const Tensor *t);          /* storage shared with another tensor */
int tensor_shares_storage(const Tensor *a, const Tensor *b);

/* ---- views and copies ---- */
/* One entry of shape may be -1 (inferred).  Always shares storage. */
Tensor *tensor_reshape(const Tensor *t, int ndim, const int64_t *shape);
Tensor *tensor_narrow(const Tensor *t, int dim, int64_t start, int64_t length);
Tensor *tensor_select(const Tensor *t, int dim, int64_t index);     /* drops dim */
Tensor *tensor_transpose(const Tensor *t, int dim0, int dim1);     /* always a copy */
int tensor_copy_(Tensor *dst, const Tensor *src);                    /* same shape */
void tensor_fill_(Tensor *t, float value);

/* out (n, ...) = rows index[0..n) of src (N, ...): index.select(0) / torch.index_select(src, 0,
 * index), 0-based rows each in [0, N).  out must have src's shape with n rows and a storage of
 * its own.  The one row gatherer: the MoCo batch shuffle and the linear probe's mini-batches
 * both call it.  Returns 0, or -1 (nothing written) naming the bad row or shape. */
int tensor_gather_rows_(Tensor *out, const Tensor *src, const int64_t *index, int64_t n);

/* ---- elementwise ----
 * Binary ops broadcast as NumPy/PyTorch do (align trailing dims; size 1 stretches).
 * The in-place forms require that b broadcast to a's shape. */
typedef enum { TENSOR_ADD, TENSOR_SUB, TENSOR_MUL, TENSOR_DIV } TensorBinaryOp;
Tensor *tensor_binary(TensorBinaryOp op, const Tensor *a, const Tensor *b);
int tensor_binary_(TensorBinaryOp op, Tensor *a, const Tensor *b);
Tensor *tensor_add(const Tensor *a, const Tensor *b);
Tensor *tensor_sub(const Tensor *a, const Tensor *b);
Tensor *tensor_mul(const Tensor *a, const Tensor *b);
Tensor *tensor_div(const Tensor *a, const Tensor *b);
/* Scalar forms: t = t op s;  and t = s op t for the reversed ones. */
void tensor_scalar_(TensorBinaryOp op, Tensor *t, float s);
void tensor_rscalar_(TensorBinaryOp op, Tensor *t, float s);
void tensor_scale_(Tensor *t, float s);
int tensor_axpy_(Tensor *y, float alpha, const Tensor *x);  /* y += alpha * x, same numel */
void tensor_clamp_(Tensor *t, float lo, float hi);           /* NaN bound = no bound */
void tensor_exp_(Tensor *t);
void tensor_log_(Tensor *t);
void tensor_sqrt_(Tensor *t);
void tensor_neg_(Tensor *t);

/* ---- reductions ----
 * Whole-tensor reductions accumulate in double.  Per-dimension ones return a new tensor
 * with that dimension removed (or kept as size 1 when keepdim).  max/argmax of an empty
 * tensor is an error; argmax returns the first maximal position (0-based, as floats in
 * the tensor form).  NaN compares as larger than everything, as in PyTorch. */
double tensor_sum_all(const Tensor *t);
double tensor_mean_all(const Tensor *t);
int tensor_max_all(const Tensor *t, float *value, int64_t *index);
Tensor *tensor_sum(const Tensor *t, int dim, int keepdim);
Tensor *tensor_mean(const Tensor *t, int dim, int keepdim);
/* Values, and positions into *indices when indices != NULL. */
Tensor *tensor_max(const Tensor *t, int dim, int keepdim, Tensor **indices);
Tensor *tensor_argmax(const Tensor *t, int dim, int keepdim);

/* ---- linear algebra ----
 * out = alpha * op(a) @ op(b) + beta * out with op = transpose when trans_* is set; all
 * 2-D.  Through cblas_sgemm. */
int tensor_matmul_into(Tensor *out, const Tensor *a, int trans_a, const Tensor *b, int trans_b,
                       float alpha, float beta);
Tensor *tensor_matmul(const Tensor *a, int trans_a, const Tensor *b, int trans_b);

/* Rows of a 2-D (N, D) tensor divided by max(||row||_2, eps): torch.nn.functional.normalize
 * with dim=1 (its default eps is 1e-12). */
int tensor_normalize_rows_(Tensor *t, float eps);

/* ---- NumPy .npy files ----
 * Reads format versions 1.0-3.0, C order, little-endian float32 or float64 (converted to
 * float32).  Fortran order, big-endian, other dtypes, more than TENSOR_MAX_DIMS dims and
 * truncated files are errors naming the file.  Writes version 1.0 '<f4'. */
Tensor *tensor_load_npy(const char *path);
int tensor_save_npy(const Tensor *t, const char *path);

#endif
