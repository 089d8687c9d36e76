/* core/tensor.c: float32 tensors with shared reference-counted storage (see tensor.h). */
#include "gemm.h"
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "nn/nn.h"

/* ---------------------------------------------------------------- storage */

static Storage *storage_new(int64_t size) {
    Storage *s = malloc(sizeof *s);
    if (!s) {
        moco_error("out of memory allocating a tensor storage");
        return NULL;
    }
    /* 64-byte alignment keeps SIMD loads and BLAS panels aligned. */
    size_t bytes = (size_t)(size > 0 ? size : 1) * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
    s->data = aligned_alloc(64, bytes);
    if (!s->data) {
        free(s);
        moco_error("out of memory allocating %lld floats (%.1f MiB)", (long long)size,
                   (double)bytes / (1 << 20));
        return NULL;
    }
    s->size = size;
    s->refcount = 1;
    return s;
}

static void storage_release(Storage *s) {
    if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        free(s->data);
        free(s);
    }
}

/* ---------------------------------------------------------------- shapes */

char *tensor_shape_str(const Tensor *t, char *buf, size_t size) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "[");
    for (int i = 0; i < t->ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}

static char *shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
    Tensor tmp;
    tmp.ndim = ndim;
    for (int i = 0; i < ndim; i++) tmp.shape[i] = shape[i];
    return tensor_shape_str(&tmp, buf, size);
}

/* Validates ndim and entries; writes the element count. */
static int check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel) {
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS)
        return moco_error("%s: %d dimensions requested, at most %d are supported", op, ndim,
                          TENSOR_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            char b[128];
            return moco_error("%s: negative size %lld in shape %s", op, (long long)shape[i],
                              shape_str(ndim, shape, b, sizeof b));
        }
        if (shape[i] && n > INT64_MAX / 4 / shape[i]) {
            char b[128];
            return moco_error("%s: shape %s is too large", op, shape_str(ndim, shape, b, sizeof b));
        }
        n *= shape[i];
    }
    *numel = n;
    return 0;
}

int tensor_same_shape(const Tensor *a, const Tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

size_t tensor_nbytes(const Tensor *t) { return (size_t)t->numel * sizeof(float); }

int tensor_is_view(const Tensor *t) {
    return __atomic_load_n(&t->storage->refcount, __ATOMIC_ACQUIRE) > 1;
}

int tensor_shares_storage(const Tensor *a, const Tensor *b) { return a->storage == b->storage; }

int tensor_gather_rows_(Tensor *out, const Tensor *src, const int64_t *index, int64_t n) {
    char a[128], b[128];
    int ok = src->ndim >= 1 && out->ndim == src->ndim && out->shape[0] == n && !tensor_shares_storage(out, src);
    for (int d = 1; ok && d < src->ndim; d++) ok = out->shape[d] == src->shape[d];
    if (!ok)
        return moco_error("gather_rows: out %s must have %lld rows shaped as those of src %s (at least 1-d) and "
                          "not share its memory", tensor_shape_str(out, a, sizeof a), (long long)n,
                          tensor_shape_str(src, b, sizeof b));
    int64_t N = src->shape[0], row_size = N > 0 ? src->numel / N : 0;
    for (int64_t i = 0; i < n; i++)
        if (index[i] < 0 || index[i] >= N)
            return moco_error("gather_rows: row %lld (entry %lld) is outside [0, %lld)", (long long)index[i],
                              (long long)i + 1, (long long)N);
    for (int64_t i = 0; i < n; i++)
        memcpy(out->data + i * row_size, src->data + index[i] * row_size, (size_t)row_size * sizeof(float));
    return 0;
}

/* A tensor header over `storage` (a new reference is taken). */
static Tensor *tensor_wrap(Storage *s, int64_t offset, int ndim, const int64_t *shape,
                           int64_t numel) {
    Tensor *t = malloc(sizeof *t);
    if (!t) {
        moco_error("out of memory allocating a tensor header");
        return NULL;
    }
    __atomic_add_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL);
    t->storage = s;
    t->data = s->data + offset;
    t->ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 0;
    t->numel = numel;
    return t;
}

/* ---------------------------------------------------------------- creation */

Tensor *tensor_empty(int ndim, const int64_t *shape) {
    int64_t numel;
    if (check_shape("tensor", ndim, shape, &numel)) return NULL;
    Storage *s = storage_new(numel);
    if (!s) return NULL;
    Tensor *t = tensor_wrap(s, 0, ndim, shape, numel);
    storage_release(s); /* the tensor holds the only reference */
    return t;
}

Tensor *tensor_full(int ndim, const int64_t *shape, float value) {
    Tensor *t = tensor_empty(ndim, shape);
    if (t) tensor_fill_(t, value);
    return t;
}

Tensor *tensor_zeros(int ndim, const int64_t *shape) { return tensor_full(ndim, shape, 0.0f); }
Tensor *tensor_ones(int ndim, const int64_t *shape) { return tensor_full(ndim, shape, 1.0f); }

Tensor *tensor_rand(int ndim, const int64_t *shape, Rng *rng) {
    Tensor *t = tensor_empty(ndim, shape);
    if (t)
        for (int64_t i = 0; i < t->numel; i++) t->data[i] = rng_uniform(rng);
    return t;
}

Tensor *tensor_randn(int ndim, const int64_t *shape, Rng *rng) {
    Tensor *t = tensor_empty(ndim, shape);
    if (t)
        for (int64_t i = 0; i < t->numel; i++) t->data[i] = rng_normal(rng);
    return t;
}

Tensor *tensor_from_data(int ndim, const int64_t *shape, const float *data) {
    Tensor *t = tensor_empty(ndim, shape);
    if (t && t->numel) memcpy(t->data, data, tensor_nbytes(t));
    return t;
}

Tensor *tensor_arange(double start, double end, double step) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step))
        return moco_error("arange: need finite start/end and a non-zero step (got %g, %g, %g)",
                          start, end, step),
               NULL;
    if ((end - start) / step < 0)
        return moco_error("arange: step %g does not go from %g towards %g", step, start, end), NULL;
    /* torch.arange's length: ceil((end - start) / step). */
    int64_t n = (int64_t)ceil((end - start) / step);
    Tensor *t = tensor_empty(1, &n);
    if (t)
        for (int64_t i = 0; i < n; i++) t->data[i] = (float)(start + (double)i * step);
    return t;
}

Tensor *tensor_empty_like(const Tensor *t) { return tensor_empty(t->ndim, t->shape); }

Tensor *tensor_clone(const Tensor *t) { return tensor_from_data(t->ndim, t->shape, t->data); }

void tensor_free(Tensor *t) {
    if (!t) return;
    storage_release(t->storage);
    free(t);
}

/* ---------------------------------------------------------------- views */

Tensor *tensor_reshape(const Tensor *t, int ndim, const int64_t *shape) {
    char a[128], b[128];
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS)
        return moco_error("reshape: %d dimensions requested, at most %d are supported", ndim,
                          TENSOR_MAX_DIMS),
               NULL;
    int64_t resolved[TENSOR_MAX_DIMS];
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        resolved[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0)
                return moco_error("reshape: only one dimension can be -1, got shape %s",
                                  shape_str(ndim, shape, b, sizeof b)),
                       NULL;
            infer = i;
        } else if (shape[i] < 0) {
            return moco_error("reshape: invalid size %lld in shape %s", (long long)shape[i],
                              shape_str(ndim, shape, b, sizeof b)),
                   NULL;
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || t->numel % known != 0)
            return moco_error("reshape: cannot reshape tensor of shape %s into %s",
                              tensor_shape_str(t, a, sizeof a), shape_str(ndim, shape, b, sizeof b)),
                   NULL;
        resolved[infer] = t->numel / known;
        known *= resolved[infer];
    }
    if (known != t->numel)
        return moco_error("reshape: cannot reshape tensor of shape %s (%lld elements) into %s",
                          tensor_shape_str(t, a, sizeof a), (long long)t->numel,
                          shape_str(ndim, shape, b, sizeof b)),
               NULL;
    return tensor_wrap(t->storage, t->data - t->storage->data, ndim, resolved, known);
}

static int check_dim(const char *op, const Tensor *t, int dim) {
    if (dim < 0 || dim >= t->ndim) {
        char a[128];
        return moco_error("%s: dimension %d out of range for a %d-d tensor of shape %s", op, dim + 1,
                          t->ndim, tensor_shape_str(t, a, sizeof a)); /* 1-based, as Lua sees it */
    }
    return 0;
}

/* Product of shape[from..to). */
static int64_t span(const Tensor *t, int from, int to) {
    int64_t n = 1;
    for (int i = from; i < to; i++) n *= t->shape[i];
    return n;
}

Tensor *tensor_narrow(const Tensor *t, int dim, int64_t start, int64_t length) {
    char a[128];
    if (check_dim("narrow", t, dim)) return NULL;
    if (start < 0 || length < 0 || start + length > t->shape[dim])
        return moco_error("narrow: positions %lld to %lld are outside dimension %d of size %lld (shape %s)",
                          (long long)start + 1, (long long)(start + length), dim + 1,
                          (long long)t->shape[dim], tensor_shape_str(t, a, sizeof a)),
               NULL;
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = length;
    int64_t outer = span(t, 0, dim), inner = span(t, dim + 1, t->ndim);
    int64_t numel = outer * length * inner;
    if (outer == 1 || length == 0)
        return tensor_wrap(t->storage, (t->data - t->storage->data) + start * inner, t->ndim, shape,
                           numel);
    /* Not contiguous in memory: copy the slices out. */
    Tensor *out = tensor_empty(t->ndim, shape);
    if (!out) return NULL;
    for (int64_t o = 0; o < outer; o++)
        memcpy(out->data + o * length * inner, t->data + (o * t->shape[dim] + start) * inner,
               (size_t)(length * inner) * sizeof(float));
    return out;
}

Tensor *tensor_select(const Tensor *t, int dim, int64_t index) {
    char a[128];
    if (check_dim("select", t, dim)) return NULL;
    if (index < 0 || index >= t->shape[dim])
        return moco_error("select: index %lld out of range for dimension %d of size %lld (shape %s)",
                          (long long)index + 1, dim + 1, (long long)t->shape[dim],
                          tensor_shape_str(t, a, sizeof a)),
               NULL;
    Tensor *n = tensor_narrow(t, dim, index, 1);
    if (!n) return NULL;
    /* Drop the dimension in place: the header is ours. */
    for (int i = dim; i < n->ndim - 1; i++) n->shape[i] = n->shape[i + 1];
    n->shape[--n->ndim] = 0;
    return n;
}

Tensor *tensor_transpose(const Tensor *t, int dim0, int dim1) {
    if (check_dim("transpose", t, dim0) || check_dim("transpose", t, dim1)) return NULL;
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim0] = t->shape[dim1];
    shape[dim1] = t->shape[dim0];
    Tensor *out = tensor_empty(t->ndim, shape);
    if (!out || dim0 == dim1 || t->numel == 0) {
        if (out && t->numel) memcpy(out->data, t->data, tensor_nbytes(t));
        return out;
    }
    /* Input strides, then walk the output in order with the swapped strides. */
    int64_t in_stride[TENSOR_MAX_DIMS], stride[TENSOR_MAX_DIMS], idx[TENSOR_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        in_stride[i] = s;
        s *= t->shape[i];
    }
    memcpy(stride, in_stride, sizeof stride);
    stride[dim0] = in_stride[dim1];
    stride[dim1] = in_stride[dim0];
    int nd = t->ndim;
    int64_t src = 0;
    for (int64_t o = 0; o < out->numel; o++) {
        out->data[o] = t->data[src];
        for (int d = nd - 1; d >= 0; d--) {
            idx[d]++;
            src += stride[d];
            if (idx[d] < shape[d]) break;
            src -= stride[d] * shape[d];
            idx[d] = 0;
        }
    }
    return out;
}

int tensor_copy_(Tensor *dst, const Tensor *src) {
    if (!tensor_same_shape(dst, src)) {
        char a[128], b[128];
        return moco_error("copy: destination shape %s does not match source shape %s",
                          tensor_shape_str(dst, a, sizeof a), tensor_shape_str(src, b, sizeof b));
    }
    if (dst->data != src->data && dst->numel) memmove(dst->data, src->data, tensor_nbytes(src));
    return 0;
}

void tensor_fill_(Tensor *t, float value) {
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = value;
}

/* ---------------------------------------------------------------- elementwise */

static const char *op_name(TensorBinaryOp op) {
    static const char *names[] = {"add", "sub", "mul", "div"};
    return names[op];
}

static inline float apply(TensorBinaryOp op, float x, float y) {
    switch (op) {
    case TENSOR_ADD: return x + y;
    case TENSOR_SUB: return x - y;
    case TENSOR_MUL: return x * y;
    default: return x / y;
    }
}

/* Broadcast shape of a and b (aligned to the right) into out. */
static int broadcast_shape(const char *op, const Tensor *a, const Tensor *b, int *ndim,
                           int64_t *shape) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char x[128], y[128];
            return moco_error("%s: shapes %s and %s cannot be broadcast together (dimension %d of the result: "
                              "%lld vs %lld)", op, tensor_shape_str(a, x, sizeof x), tensor_shape_str(b, y, sizeof y),
                              i + 1, (long long)sa, (long long)sb);
        }
        shape[i] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return 0;
}

/* Strides of t as seen through a broadcast to an nd-dim shape (0 where stretched). */
static void broadcast_strides(const Tensor *t, int nd, int64_t *stride) {
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int it = t->ndim - nd + i;
        int64_t size = it >= 0 ? t->shape[it] : 1;
        stride[i] = size == 1 ? 0 : s;
        s *= size;
    }
}

/* out[i] = a[.] op b[.] over the broadcast shape; out may alias a. */
static void binary_kernel(TensorBinaryOp op, float *out, int nd, const int64_t *shape,
                          const Tensor *a, const Tensor *b, int64_t numel) {
    if (a->numel == numel && b->numel == numel) {
        for (int64_t i = 0; i < numel; i++) out[i] = apply(op, a->data[i], b->data[i]);
        return;
    }
    if (b->numel == 1 && a->numel == numel) {
        float y = b->data[0];
        for (int64_t i = 0; i < numel; i++) out[i] = apply(op, a->data[i], y);
        return;
    }
    int64_t sa[TENSOR_MAX_DIMS], sb[TENSOR_MAX_DIMS], idx[TENSOR_MAX_DIMS] = {0};
    broadcast_strides(a, nd, sa);
    broadcast_strides(b, nd, sb);
    /* Innermost dimension as a tight loop, the rest as an odometer. */
    int64_t inner = nd ? shape[nd - 1] : 1, ia = 0, ib = 0;
    int64_t ja = nd ? sa[nd - 1] : 0, jb = nd ? sb[nd - 1] : 0;
    for (int64_t o = 0; o < numel; o += inner) {
        for (int64_t k = 0; k < inner; k++) out[o + k] = apply(op, a->data[ia + k * ja], b->data[ib + k * jb]);
        for (int d = nd - 2; d >= 0; d--) {
            idx[d]++;
            ia += sa[d];
            ib += sb[d];
            if (idx[d] < shape[d]) break;
            ia -= sa[d] * shape[d];
            ib -= sb[d] * shape[d];
            idx[d] = 0;
        }
    }
}

Tensor *tensor_binary(TensorBinaryOp op, const Tensor *a, const Tensor *b) {
    int nd;
    int64_t shape[TENSOR_MAX_DIMS];
    if (broadcast_shape(op_name(op), a, b, &nd, shape)) return NULL;
    Tensor *out = tensor_empty(nd, shape);
    if (out) binary_kernel(op, out->data, nd, shape, a, b, out->numel);
    return out;
}

int tensor_binary_(TensorBinaryOp op, Tensor *a, const Tensor *b) {
    int nd;
    int64_t shape[TENSOR_MAX_DIMS];
    char x[128], y[128];
    if (broadcast_shape(op_name(op), a, b, &nd, shape)) return -1;
    int same = nd == a->ndim;
    for (int i = 0; same && i < nd; i++) same = shape[i] == a->shape[i];
    if (!same)
        return moco_error("%s (in place): result shape would differ from the destination %s (other operand %s)",
                          op_name(op), tensor_shape_str(a, x, sizeof x), tensor_shape_str(b, y, sizeof y));
    binary_kernel(op, a->data, nd, shape, a, b, a->numel);
    return 0;
}

Tensor *tensor_add(const Tensor *a, const Tensor *b) { return tensor_binary(TENSOR_ADD, a, b); }
Tensor *tensor_sub(const Tensor *a, const Tensor *b) { return tensor_binary(TENSOR_SUB, a, b); }
Tensor *tensor_mul(const Tensor *a, const Tensor *b) { return tensor_binary(TENSOR_MUL, a, b); }
Tensor *tensor_div(const Tensor *a, const Tensor *b) { return tensor_binary(TENSOR_DIV, a, b); }

void tensor_scalar_(TensorBinaryOp op, Tensor *t, float s) {
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = apply(op, t->data[i], s);
}

void tensor_rscalar_(TensorBinaryOp op, Tensor *t, float s) {
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = apply(op, s, t->data[i]);
}

void tensor_scale_(Tensor *t, float s) { tensor_scalar_(TENSOR_MUL, t, s); }

int tensor_axpy_(Tensor *y, float alpha, const Tensor *x) {
    if (y->numel != x->numel) {
        char a[128], b[128];
        return moco_error("axpy: x of shape %s has a different number of elements than y of shape %s",
                          tensor_shape_str(x, a, sizeof a), tensor_shape_str(y, b, sizeof b));
    }
    for (int64_t i = 0; i < y->numel; i++) y->data[i] += alpha * x->data[i];
    return 0;
}

void tensor_clamp_(Tensor *t, float lo, float hi) {
    for (int64_t i = 0; i < t->numel; i++) {
        float v = t->data[i];
        if (!isnan(lo) && v < lo) v = lo;
        if (!isnan(hi) && v > hi) v = hi;
        t->data[i] = v;
    }
}

void tensor_exp_(Tensor *t) {
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = expf(t->data[i]);
}
void tensor_log_(Tensor *t) {
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = logf(t->data[i]);
}
void tensor_sqrt_(Tensor *t) {
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = sqrtf(t->data[i]);
}
void tensor_neg_(Tensor *t) {
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = -t->data[i];
}

/* ---------------------------------------------------------------- reductions */

double tensor_sum_all(const Tensor *t) {
    double s = 0;
    for (int64_t i = 0; i < t->numel; i++) s += t->data[i];
    return s;
}

double tensor_mean_all(const Tensor *t) { return t->numel ? tensor_sum_all(t) / (double)t->numel : NAN; }

/* "a is a new maximum over best": NaN wins and stays (PyTorch propagates NaN). */
static inline int greater(float a, float best) { return (a > best) || (isnan(a) && !isnan(best)); }

int tensor_max_all(const Tensor *t, float *value, int64_t *index) {
    if (t->numel == 0) {
        char a[128];
        return moco_error("max_all: the tensor of shape %s is empty", tensor_shape_str(t, a, sizeof a));
    }
    int64_t best = 0;
    for (int64_t i = 1; i < t->numel; i++)
        if (greater(t->data[i], t->data[best])) best = i;
    if (value) *value = t->data[best];
    if (index) *index = best;
    return 0;
}

/* Output shape for a reduction over dim. */
static void reduced_shape(const Tensor *t, int dim, int keepdim, int *nd, int64_t *shape) {
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i != dim) shape[k++] = t->shape[i];
        else if (keepdim) shape[k++] = 1;
    }
    *nd = k;
}

static Tensor *reduce_sum(const char *op, const Tensor *t, int dim, int keepdim, int mean) {
    if (check_dim(op, t, dim)) return NULL;
    int nd;
    int64_t shape[TENSOR_MAX_DIMS];
    reduced_shape(t, dim, keepdim, &nd, shape);
    Tensor *out = tensor_empty(nd, shape);
    if (!out) return NULL;
    int64_t outer = span(t, 0, dim), n = t->shape[dim], inner = span(t, dim + 1, t->ndim);
    double *acc = calloc((size_t)(inner ? inner : 1), sizeof *acc);
    if (!acc) {
        tensor_free(out);
        return moco_error("%s: out of memory", op), NULL;
    }
    for (int64_t o = 0; o < outer; o++) {
        memset(acc, 0, (size_t)inner * sizeof *acc);
        const float *src = t->data + o * n * inner;
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < inner; i++) acc[i] += src[j * inner + i];
        for (int64_t i = 0; i < inner; i++)
            out->data[o * inner + i] = (float)(mean ? (n ? acc[i] / (double)n : NAN) : acc[i]);
    }
    free(acc);
    return out;
}

Tensor *tensor_sum(const Tensor *t, int dim, int keepdim) { return reduce_sum("sum", t, dim, keepdim, 0); }
Tensor *tensor_mean(const Tensor *t, int dim, int keepdim) { return reduce_sum("mean", t, dim, keepdim, 1); }

Tensor *tensor_max(const Tensor *t, int dim, int keepdim, Tensor **indices) {
    if (indices) *indices = NULL;
    if (check_dim("max", t, dim)) return NULL;
    if (t->shape[dim] == 0) {
        char a[128];
        return moco_error("max: dimension %d of shape %s is empty", dim + 1, tensor_shape_str(t, a, sizeof a)),
               NULL;
    }
    int nd;
    int64_t shape[TENSOR_MAX_DIMS];
    reduced_shape(t, dim, keepdim, &nd, shape);
    Tensor *values = tensor_empty(nd, shape);
    Tensor *idx = indices ? tensor_empty(nd, shape) : NULL;
    if (!values || (indices && !idx)) {
        tensor_free(values);
        tensor_free(idx);
        return NULL;
    }
    int64_t outer = span(t, 0, dim), n = t->shape[dim], inner = span(t, dim + 1, t->ndim);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *src = t->data + o * n * inner + i;
            int64_t best = 0;
            for (int64_t j = 1; j < n; j++)
                if (greater(src[j * inner], src[best * inner])) best = j;
            values->data[o * inner + i] = src[best * inner];
            if (idx) idx->data[o * inner + i] = (float)best;
        }
    if (indices) *indices = idx;
    return values;
}

Tensor *tensor_argmax(const Tensor *t, int dim, int keepdim) {
    Tensor *idx = NULL;
    Tensor *values = tensor_max(t, dim, keepdim, &idx);
    tensor_free(values);
    return values ? idx : NULL;
}

/* ---------------------------------------------------------------- linear algebra */

int tensor_matmul_into(Tensor *out, const Tensor *a, int trans_a, const Tensor *b, int trans_b,
                       float alpha, float beta) {
    char x[128], y[128], z[128];
    if (a->ndim != 2 || b->ndim != 2 || out->ndim != 2)
        return moco_error("matmul: expected 2-d tensors, got shapes %s and %s (out %s)",
                          tensor_shape_str(a, x, sizeof x), tensor_shape_str(b, y, sizeof y),
                          tensor_shape_str(out, z, sizeof z));
    int64_t m = trans_a ? a->shape[1] : a->shape[0], k = trans_a ? a->shape[0] : a->shape[1];
    int64_t kb = trans_b ? b->shape[1] : b->shape[0], n = trans_b ? b->shape[0] : b->shape[1];
    if (k != kb)
        return moco_error("matmul: inner dimensions differ: %s%s @ %s%s (%lld vs %lld)",
                          tensor_shape_str(a, x, sizeof x), trans_a ? "^T" : "",
                          tensor_shape_str(b, y, sizeof y), trans_b ? "^T" : "", (long long)k,
                          (long long)kb);
    if (out->shape[0] != m || out->shape[1] != n)
        return moco_error("matmul: output has shape %s, expected [%lld, %lld]",
                          tensor_shape_str(out, z, sizeof z), (long long)m, (long long)n);
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
        return moco_error("matmul: dimensions exceed the BLAS integer range");
    if (m == 0 || n == 0) return 0;
    if (k == 0) {
        tensor_scale_(out, beta);
        return 0;
    }
    moco_sgemm(trans_a ? 1 : 0, trans_b ? 1 : 0,
                (int)m, (int)n, (int)k, alpha, a->data, (int)a->shape[1], b->data, (int)b->shape[1], beta,
                out->data, (int)n);
    return 0;
}

Tensor *tensor_matmul(const Tensor *a, int trans_a, const Tensor *b, int trans_b) {
    char x[128], y[128];
    if (a->ndim != 2 || b->ndim != 2)
        return moco_error("matmul: expected 2-d tensors, got shapes %s and %s",
                          tensor_shape_str(a, x, sizeof x), tensor_shape_str(b, y, sizeof y)),
               NULL;
    int64_t shape[2] = {trans_a ? a->shape[1] : a->shape[0], trans_b ? b->shape[0] : b->shape[1]};
    Tensor *out = tensor_empty(2, shape);
    if (!out) return NULL;
    if (tensor_matmul_into(out, a, trans_a, b, trans_b, 1.0f, 0.0f)) {
        tensor_free(out);
        return NULL;
    }
    return out;
}

int tensor_normalize_rows_(Tensor *t, float eps) {
    if (t->ndim != 2) {
        char a[128];
        return moco_error("normalize: expected a 2-d (N, D) tensor, got shape %s",
                          tensor_shape_str(t, a, sizeof a));
    }
    if (t->shape[0] > INT32_MAX || t->shape[1] > INT32_MAX) {
        char a[128];
        return moco_error("normalize: shape %s exceeds the int range of the row kernel", tensor_shape_str(t, a, sizeof a));
    }
    normalize_forward(t->data, NULL, t->data, (int)t->shape[0], (int)t->shape[1], eps);
    return 0;
}
