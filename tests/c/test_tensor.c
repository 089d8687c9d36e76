/* tests/c/test_tensor.c: every op of core/tensor.h against hand-computed values.
 *
 * Written from the contracts in tensor.h, not from the implementation.  Inputs are built
 * with iota() (0, 1, 2, ... written straight into t->data) so that a broken tensor_arange
 * does not break every other test.  Errors are checked for a NULL / -1 result and for a
 * message naming the shapes involved. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "rng.h"
#include "tensor.h"

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define COUNT(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* A tensor of the given shape, e.g. T_IOTA(2, 3). */
#define T_IOTA(...) iota(COUNT(__VA_ARGS__), SHAPE(__VA_ARGS__))
/* A tensor from a float array literal, e.g. T_DATA(((float[]){1, 2, 3, 4}), 2, 2). */
#define T_DATA(values, ...) tensor_from_data(COUNT(__VA_ARGS__), SHAPE(__VA_ARGS__), values)

/* ---- helpers ---- */

/* 0, 1, 2, ... in row-major order: torch.arange(numel).reshape(shape). */
static Tensor *iota(int ndim, const int64_t *shape) {
    Tensor *t = tensor_empty(ndim, shape);
    if (t)
        for (int64_t i = 0; i < t->numel; i++) t->data[i] = (float)i;
    return t;
}

static void clear_error(void) { moco_error("%s", ""); }

static void format_shape(const Tensor *t, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; t && d < t->ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld",
                                 (long long)t->shape[d]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* t is non-NULL and has exactly this shape (numel included). */
static int has_shape(const Tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return 0;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (t->shape[d] != shape[d]) return 0;
        numel *= shape[d];
    }
    return t->numel == numel;
}

static void check_shape(const char *name, const Tensor *t, int ndim, const int64_t *shape) {
    char got[128];
    format_shape(t, got, sizeof got);
    CHECK(name, has_shape(t, ndim, shape), "got %s (ndim %d)%s", t ? got : "NULL",
          t ? t->ndim : -1, t ? "" : moco_last_error());
}
#define CHECK_SHAPE(name, t, ...) check_shape(name, t, COUNT(__VA_ARGS__), SHAPE(__VA_ARGS__))

/* numel == n and max |t - expected| <= tol; prints the max difference on failure. */
static void check_values(const char *name, const Tensor *t, const float *expected, long n,
                         double tol) {
    if (!t) {
        CHECK(name, 0, "tensor is NULL: %s", moco_last_error());
        return;
    }
    if (t->numel != n) {
        CHECK(name, 0, "numel %lld, expected %ld", (long long)t->numel, n);
        return;
    }
    double diff = check_max_abs_diff(t->data, expected, n);
    CHECK(name, diff <= tol, "max abs diff %g (tol %g)", diff, tol);
}
#define CHECK_VALUES(name, t, tol, ...)                                                 \
    do {                                                                                \
        const float expected_[] = {__VA_ARGS__};                                        \
        check_values(name, t, expected_, (long)(sizeof expected_ / sizeof(float)), tol); \
    } while (0)

/* The last error mentions every non-NULL fragment (e.g. both shapes). */
static void check_error_mentions(const char *name, const char *a, const char *b) {
    const char *msg = moco_last_error();
    int ok = msg[0] != '\0' && (!a || strstr(msg, a)) && (!b || strstr(msg, b));
    CHECK(name, ok, "message \"%s\" should mention \"%s\"%s%s%s", msg, a ? a : "",
          b ? " and \"" : "", b ? b : "", b ? "\"" : "");
}

/* ---- creation ---- */

static void test_creation(void) {
    Tensor *z = tensor_zeros(2, SHAPE(2, 3));
    CHECK_SHAPE("zeros (2,3) shape", z, 2, 3);
    CHECK_VALUES("zeros (2,3) values", z, 0, 0, 0, 0, 0, 0, 0);
    Tensor *o = tensor_ones(3, SHAPE(1, 2, 2));
    CHECK_SHAPE("ones (1,2,2) shape", o, 1, 2, 2);
    CHECK_VALUES("ones (1,2,2) values", o, 0, 1, 1, 1, 1);
    Tensor *f = tensor_full(1, SHAPE(3), 2.5f);
    CHECK_VALUES("full (3,) 2.5", f, 0, 2.5f, 2.5f, 2.5f);

    /* () scalar: one element, no dims. */
    Tensor *s = tensor_full(0, SHAPE(0), -4.0f);
    CHECK("full 0-d: ndim 0, numel 1", s && s->ndim == 0 && s->numel == 1, "ndim %d numel %lld",
          s ? s->ndim : -1, s ? (long long)s->numel : -1LL);
    CHECK_VALUES("full 0-d value", s, 0, -4.0f);

    /* (2,0): an empty dimension is legal. */
    Tensor *e = tensor_zeros(2, SHAPE(2, 0));
    CHECK_SHAPE("zeros (2,0) shape, numel 0", e, 2, 0);

    Tensor *six = tensor_zeros(6, SHAPE(1, 2, 1, 2, 1, 2));
    CHECK_SHAPE("zeros with 6 dims", six, 1, 2, 1, 2, 1, 2);

    clear_error();
    Tensor *seven = tensor_zeros(7, SHAPE(1, 1, 1, 1, 1, 1, 1));
    CHECK("zeros with 7 dims is an error", seven == NULL, "got a tensor");
    check_error_mentions("zeros with 7 dims sets a message", NULL, NULL);

    clear_error();
    Tensor *neg = tensor_zeros(2, SHAPE(2, -1));
    CHECK("zeros with a negative size is an error", neg == NULL, "got a tensor");
    check_error_mentions("zeros with a negative size sets a message", NULL, NULL);

    tensor_free(z);
    tensor_free(o);
    tensor_free(f);
    tensor_free(s);
    tensor_free(e);
    tensor_free(six);
    tensor_free(seven);
    tensor_free(neg);
    tensor_free(NULL); /* documented as fine */
}

/* torch.arange: length ceil((end - start) / step), values start + i * step. */
static void test_arange(void) {
    Tensor *a = tensor_arange(0, 5, 1);
    CHECK_SHAPE("arange(0,5,1) shape (5,)", a, 5);
    CHECK_VALUES("arange(0,5,1) values", a, 0, 0, 1, 2, 3, 4);
    tensor_free(a);

    a = tensor_arange(0, 1, 0.25);
    CHECK_VALUES("arange(0,1,0.25) values", a, 1e-7, 0, 0.25f, 0.5f, 0.75f);
    tensor_free(a);

    /* (1 - 0) / 0.3 = 3.33 -> 4 elements, the last one 0.9 < 1. */
    a = tensor_arange(0, 1, 0.3);
    CHECK_VALUES("arange(0,1,0.3) has 4 values", a, 1e-6, 0, 0.3f, 0.6f, 0.9f);
    tensor_free(a);

    /* Negative step: (0 - 5) / -1.5 = 3.33 -> 4 elements. */
    a = tensor_arange(5, 0, -1.5);
    CHECK_VALUES("arange(5,0,-1.5) values", a, 1e-6, 5, 3.5f, 2, 0.5f);
    tensor_free(a);

    a = tensor_arange(-2.5, 1, 1);
    CHECK_VALUES("arange(-2.5,1,1) values", a, 1e-6, -2.5f, -1.5f, -0.5f, 0.5f);
    tensor_free(a);

    a = tensor_arange(3, -3, -2);
    CHECK_VALUES("arange(3,-3,-2) values (end excluded)", a, 0, 3, 1, -1);
    tensor_free(a);

    a = tensor_arange(1, 1, 1);
    CHECK_SHAPE("arange(1,1,1) is empty (0,)", a, 0);
    tensor_free(a);

    clear_error();
    a = tensor_arange(0, 5, 0);
    CHECK("arange step 0 is an error", a == NULL, "got a tensor");
    check_error_mentions("arange step 0 sets a message", NULL, NULL);
    tensor_free(a);

    /* torch raises here; an empty result would also be defensible, elements are not. */
    a = tensor_arange(0, 5, -1);
    CHECK("arange(0,5,-1) is an error or empty", a == NULL || a->numel == 0, "numel %lld",
          (long long)a->numel);
    tensor_free(a);
}

static void test_from_data_and_clone(void) {
    float src[6] = {1, -2, 3, -4, 5, -6};
    Tensor *t = tensor_from_data(2, SHAPE(3, 2), src);
    CHECK_SHAPE("from_data (3,2) shape", t, 3, 2);
    CHECK_VALUES("from_data (3,2) values", t, 0, 1, -2, 3, -4, 5, -6);
    src[0] = 100; /* the tensor owns a copy */
    CHECK_VALUES("from_data copies its input", t, 0, 1, -2, 3, -4, 5, -6);

    Tensor *c = tensor_clone(t);
    CHECK_SHAPE("clone shape", c, 3, 2);
    CHECK_VALUES("clone values", c, 0, 1, -2, 3, -4, 5, -6);
    CHECK("clone does not share storage", !tensor_shares_storage(t, c) && !tensor_is_view(c),
          "clone shares storage");
    c->data[1] = 42;
    CHECK("writing a clone leaves the original", t->data[1] == -2, "original became %g",
          t->data[1]);

    Tensor *e = tensor_empty_like(t);
    CHECK_SHAPE("empty_like shape", e, 3, 2);
    CHECK("empty_like does not share storage", !tensor_shares_storage(t, e), "shares");

    tensor_free(t);
    tensor_free(c);
    tensor_free(e);
}

static void test_random_creation(void) {
    Rng r1, r2, r3;
    rng_seed(&r1, 7, 1);
    rng_seed(&r2, 7, 1);
    rng_seed(&r3, 8, 1);
    Tensor *a = tensor_rand(2, SHAPE(30, 40), &r1);
    Tensor *b = tensor_rand(2, SHAPE(30, 40), &r2);
    Tensor *c = tensor_rand(2, SHAPE(30, 40), &r3);
    CHECK_SHAPE("rand (30,40) shape", a, 30, 40);
    int in_range = a != NULL;
    for (int64_t i = 0; a && i < a->numel; i++) in_range &= a->data[i] >= 0 && a->data[i] < 1;
    CHECK("rand values in [0, 1)", in_range, "a value outside [0, 1)");
    CHECK("rand same seed gives the same tensor",
          a && b && memcmp(a->data, b->data, tensor_nbytes(a)) == 0, "tensors differ");
    CHECK("rand different seed gives a different tensor",
          a && c && memcmp(a->data, c->data, tensor_nbytes(a)) != 0, "tensors equal");
    /* Mean of 1200 U[0,1): standard error 0.0083; 5 sigma. */
    double mean = a ? tensor_mean_all(a) : -1;
    CHECK_NEAR("rand mean ~ 0.5 (5 sigma)", mean, 0.5, 5 * 0.2887 / sqrt(1200.0));
    tensor_free(a);
    tensor_free(b);
    tensor_free(c);

    rng_seed(&r1, 11, 2);
    rng_seed(&r2, 11, 2);
    Tensor *n = tensor_randn(3, SHAPE(10, 10, 100), &r1);
    Tensor *m = tensor_randn(3, SHAPE(10, 10, 100), &r2);
    CHECK_SHAPE("randn (10,10,100) shape", n, 10, 10, 100);
    CHECK("randn same seed gives the same tensor",
          n && m && memcmp(n->data, m->data, tensor_nbytes(n)) == 0, "tensors differ");
    double sum = 0, sumsq = 0;
    int finite = n != NULL;
    for (int64_t i = 0; n && i < n->numel; i++) {
        finite &= isfinite(n->data[i]);
        sum += n->data[i];
        sumsq += (double)n->data[i] * n->data[i];
    }
    double mu = sum / 1e4, var = sumsq / 1e4 - mu * mu;
    CHECK("randn values finite", finite, "inf or NaN");
    CHECK_NEAR("randn mean ~ 0 (5 sigma)", mu, 0, 5 / sqrt(1e4));
    CHECK_NEAR("randn variance ~ 1 (5 sigma)", var, 1, 5 * sqrt(2 / 1e4));
    tensor_free(n);
    tensor_free(m);
}

/* ---- shape queries ---- */

static void test_shape_queries(void) {
    Tensor *t = T_IOTA(2, 3, 4);
    char buf[64];
    char *ret = tensor_shape_str(t, buf, sizeof buf);
    CHECK("shape_str (2,3,4) is \"[2, 3, 4]\"", strcmp(buf, "[2, 3, 4]") == 0, "got \"%s\"", buf);
    CHECK("shape_str returns buf", ret == buf, "returned another pointer");
    char small[5];
    tensor_shape_str(t, small, sizeof small);
    CHECK("shape_str truncates and terminates", strlen(small) < sizeof small &&
          strncmp(small, "[2, 3, 4]", strlen(small)) == 0, "got \"%s\"", small);
    CHECK("nbytes (2,3,4) float32 = 96", tensor_nbytes(t) == 96, "got %zu", tensor_nbytes(t));

    Tensor *s = tensor_zeros(0, SHAPE(0));
    tensor_shape_str(s, buf, sizeof buf);
    CHECK("shape_str of a 0-d tensor is \"[]\"", strcmp(buf, "[]") == 0, "got \"%s\"", buf);

    Tensor *u = tensor_zeros(3, SHAPE(2, 3, 4));
    Tensor *v = tensor_zeros(3, SHAPE(2, 4, 3));
    CHECK("same_shape (2,3,4) (2,3,4)", tensor_same_shape(t, u), "said different");
    CHECK("same_shape (2,3,4) (2,4,3) is false", !tensor_same_shape(t, v), "said same");
    tensor_free(t);
    tensor_free(s);
    tensor_free(u);
    tensor_free(v);
}

/* ---- reshape ---- */

static void test_reshape(void) {
    Tensor *t = T_IOTA(2, 3);
    CHECK("a fresh tensor is not a view", !tensor_is_view(t), "is_view");

    Tensor *r = tensor_reshape(t, 2, SHAPE(3, 2));
    CHECK_SHAPE("reshape (2,3)->(3,2) shape", r, 3, 2);
    CHECK_VALUES("reshape (2,3)->(3,2) keeps row-major order", r, 0, 0, 1, 2, 3, 4, 5);
    CHECK("reshape shares storage", r && tensor_shares_storage(t, r), "does not share");
    CHECK("reshape: both are views", r && tensor_is_view(r) && tensor_is_view(t), "is_view 0");
    if (r) r->data[5] = 50;
    CHECK("writing through a reshape changes the parent", t->data[5] == 50, "parent[5] = %g",
          t->data[5]);
    tensor_free(r);
    CHECK("after its only view is freed, a tensor is not a view", !tensor_is_view(t), "is_view");
    t->data[5] = 5;

    r = tensor_reshape(t, 1, SHAPE(-1));
    CHECK_SHAPE("reshape (2,3)->(-1) infers (6,)", r, 6);
    tensor_free(r);
    r = tensor_reshape(t, 3, SHAPE(3, -1, 1));
    CHECK_SHAPE("reshape (2,3)->(3,-1,1) infers (3,2,1)", r, 3, 2, 1);
    tensor_free(r);

    Tensor *one = T_IOTA(1, 1);
    r = tensor_reshape(one, 0, SHAPE(0));
    CHECK("reshape (1,1)->() gives a 0-d tensor", r && r->ndim == 0 && r->numel == 1,
          "ndim %d", r ? r->ndim : -1);
    tensor_free(r);
    tensor_free(one);

    clear_error();
    r = tensor_reshape(t, 2, SHAPE(4, 2));
    CHECK("reshape (2,3)->(4,2) is an error", r == NULL, "got a tensor");
    check_error_mentions("reshape numel error names both shapes", "[2, 3]", "[4, 2]");
    tensor_free(r);

    clear_error();
    r = tensor_reshape(t, 3, SHAPE(-1, -1, 2));
    CHECK("reshape with two -1 is an error", r == NULL, "got a tensor");
    check_error_mentions("reshape with two -1 sets a message", NULL, NULL);
    tensor_free(r);

    clear_error();
    r = tensor_reshape(t, 2, SHAPE(4, -1));
    CHECK("reshape (2,3)->(4,-1) is an error (6 not divisible by 4)", r == NULL, "got a tensor");
    tensor_free(r);

    clear_error();
    r = tensor_reshape(t, 7, SHAPE(1, 1, 1, 1, 1, 2, 3));
    CHECK("reshape to 7 dims is an error", r == NULL, "got a tensor");
    check_error_mentions("reshape to 7 dims sets a message", NULL, NULL);
    tensor_free(r);

    tensor_free(t);
}

/* ---- narrow / select: views along the first dim (or past size-1 dims), copies otherwise ---- */

static void test_narrow(void) {
    Tensor *t = T_IOTA(4, 3); /* (4,3) */

    /* dim 0: rows 1..2 are contiguous, so a view. */
    Tensor *n = tensor_narrow(t, 0, 1, 2);
    CHECK_SHAPE("narrow (4,3) dim0 start1 len2 shape (2,3)", n, 2, 3);
    CHECK_VALUES("narrow dim0 values", n, 0, 3, 4, 5, 6, 7, 8);
    CHECK("narrow dim0 is a view", n && tensor_is_view(n) && tensor_shares_storage(n, t),
          "not a view");
    if (n) n->data[0] = -1;
    CHECK("writing through a dim-0 narrow changes the parent", t->data[3] == -1,
          "parent[1][0] = %g", t->data[3]);
    t->data[3] = 3;
    tensor_free(n);

    /* dim 1: columns 1..2 of every row are not contiguous, so a copy. */
    n = tensor_narrow(t, 1, 1, 2);
    CHECK_SHAPE("narrow (4,3) dim1 start1 len2 shape (4,2)", n, 4, 2);
    CHECK_VALUES("narrow dim1 values", n, 0, 1, 2, 4, 5, 7, 8, 10, 11);
    CHECK("narrow dim1 is a copy", n && !tensor_is_view(n) && !tensor_shares_storage(n, t),
          "shares storage");
    if (n) n->data[0] = -1;
    CHECK("writing a dim-1 narrow leaves the parent", t->data[1] == 1, "parent[0][1] = %g",
          t->data[1]);
    tensor_free(n);

    /* (1,4,2) narrow dim 1: past a leading size-1 dim the result is contiguous: a view. */
    Tensor *u = T_IOTA(1, 4, 2);
    n = tensor_narrow(u, 1, 1, 2);
    CHECK_SHAPE("narrow (1,4,2) dim1 shape (1,2,2)", n, 1, 2, 2);
    CHECK_VALUES("narrow (1,4,2) dim1 values", n, 0, 2, 3, 4, 5);
    CHECK("narrow past leading size-1 dims is a view", n && tensor_shares_storage(n, u),
          "not a view");
    tensor_free(n);
    tensor_free(u);

    n = tensor_narrow(t, 0, 1, 0);
    CHECK_SHAPE("narrow length 0 gives (0,3)", n, 0, 3);
    tensor_free(n);

    clear_error();
    n = tensor_narrow(t, 0, 3, 2);
    CHECK("narrow start 3 length 2 on size 4 is an error", n == NULL, "got a tensor");
    check_error_mentions("narrow out of range names the shape", "[4, 3]", NULL);
    tensor_free(n);
    clear_error();
    n = tensor_narrow(t, 0, -1, 2);
    CHECK("narrow negative start is an error", n == NULL, "got a tensor");
    tensor_free(n);
    clear_error();
    n = tensor_narrow(t, 2, 0, 1);
    CHECK("narrow dim 2 of a 2-D tensor is an error", n == NULL, "got a tensor");
    check_error_mentions("narrow bad dim sets a message", NULL, NULL);
    tensor_free(n);

    tensor_free(t);
}

static void test_select(void) {
    Tensor *t = T_IOTA(3, 4); /* (3,4) */
    Tensor *s = tensor_select(t, 0, 1);
    CHECK_SHAPE("select (3,4) dim0 index1 shape (4,)", s, 4);
    CHECK_VALUES("select dim0 values", s, 0, 4, 5, 6, 7);
    CHECK("select dim0 is a view", s && tensor_shares_storage(s, t), "not a view");
    if (s) s->data[2] = -6;
    CHECK("writing through a dim-0 select changes the parent", t->data[6] == -6,
          "parent[1][2] = %g", t->data[6]);
    t->data[6] = 6;
    tensor_free(s);

    s = tensor_select(t, 1, 2);
    CHECK_SHAPE("select (3,4) dim1 index2 shape (3,)", s, 3);
    CHECK_VALUES("select dim1 values", s, 0, 2, 6, 10);
    CHECK("select dim1 is a copy", s && !tensor_shares_storage(s, t) && !tensor_is_view(s),
          "shares storage");
    tensor_free(s);

    Tensor *u = T_IOTA(1, 4, 2);
    s = tensor_select(u, 1, 2);
    CHECK_SHAPE("select (1,4,2) dim1 shape (1,2)", s, 1, 2);
    CHECK_VALUES("select (1,4,2) dim1 values", s, 0, 4, 5);
    CHECK("select past leading size-1 dims is a view", s && tensor_shares_storage(s, u),
          "not a view");
    tensor_free(s);
    tensor_free(u);

    Tensor *v = T_IOTA(5);
    s = tensor_select(v, 0, 3);
    CHECK("select of a 1-D tensor is 0-d", s && s->ndim == 0 && s->numel == 1, "ndim %d",
          s ? s->ndim : -1);
    CHECK_VALUES("select of a 1-D tensor value", s, 0, 3);
    tensor_free(s);
    tensor_free(v);

    clear_error();
    s = tensor_select(t, 0, 3);
    CHECK("select index 3 on size 3 is an error", s == NULL, "got a tensor");
    check_error_mentions("select out of range names the shape", "[3, 4]", NULL);
    tensor_free(s);
    clear_error();
    s = tensor_select(t, 2, 0);
    CHECK("select dim 2 of a 2-D tensor is an error", s == NULL, "got a tensor");
    tensor_free(s);
    tensor_free(t);
}

/* ---- transpose (always a copy) ---- */

static void test_transpose(void) {
    Tensor *t = T_IOTA(2, 3); /* [[0,1,2],[3,4,5]] */
    Tensor *tt = tensor_transpose(t, 0, 1);
    CHECK_SHAPE("transpose (2,3) shape (3,2)", tt, 3, 2);
    CHECK_VALUES("transpose (2,3) values", tt, 0, 0, 3, 1, 4, 2, 5);
    CHECK("transpose is a copy", tt && !tensor_shares_storage(t, tt), "shares storage");
    tensor_free(tt);
    tt = tensor_transpose(t, 1, 0);
    CHECK_VALUES("transpose (2,3) dims (1,0) same values", tt, 0, 0, 3, 1, 4, 2, 5);
    tensor_free(tt);

    /* (2,3,4), value 12i + 4j + k. */
    Tensor *c = T_IOTA(2, 3, 4);
    Tensor *a = tensor_transpose(c, 0, 2); /* (4,3,2): a[k][j][i] */
    CHECK_SHAPE("transpose (2,3,4) dims 0,2 shape (4,3,2)", a, 4, 3, 2);
    float expected[24];
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++) expected[(k * 3 + j) * 2 + i] = 12 * i + 4 * j + k;
    check_values("transpose (2,3,4) dims 0,2 values", a, expected, 24, 0);
    tensor_free(a);

    a = tensor_transpose(c, 1, 2); /* (2,4,3): a[i][k][j] */
    CHECK_SHAPE("transpose (2,3,4) dims 1,2 shape (2,4,3)", a, 2, 4, 3);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 3; j++) expected[(i * 4 + k) * 3 + j] = 12 * i + 4 * j + k;
    check_values("transpose (2,3,4) dims 1,2 values", a, expected, 24, 0);
    tensor_free(a);

    clear_error();
    a = tensor_transpose(c, 0, 3);
    CHECK("transpose dim 3 of a 3-D tensor is an error", a == NULL, "got a tensor");
    check_error_mentions("transpose bad dim sets a message", NULL, NULL);
    tensor_free(a);
    tensor_free(c);
    tensor_free(t);
}

/* ---- copy_ / fill_ ---- */

static void test_copy_fill(void) {
    Tensor *dst = tensor_zeros(2, SHAPE(2, 3));
    Tensor *src = T_IOTA(2, 3);
    int rc = tensor_copy_(dst, src);
    CHECK("copy_ (2,3) <- (2,3) returns 0", rc == 0, "rc %d: %s", rc, moco_last_error());
    CHECK_VALUES("copy_ values", dst, 0, 0, 1, 2, 3, 4, 5);

    Tensor *wrong = tensor_zeros(2, SHAPE(3, 2));
    clear_error();
    rc = tensor_copy_(wrong, src);
    CHECK("copy_ (3,2) <- (2,3) is an error", rc == -1, "rc %d", rc);
    check_error_mentions("copy_ error names both shapes", "[3, 2]", "[2, 3]");
    CHECK_VALUES("failed copy_ leaves dst unchanged", wrong, 0, 0, 0, 0, 0, 0, 0);

    /* copy_ into a dim-0 view writes the parent's rows. */
    Tensor *parent = tensor_zeros(2, SHAPE(3, 3));
    Tensor *row = tensor_narrow(parent, 0, 1, 1); /* (1,3) view */
    Tensor *vals = T_DATA(((float[]){7, 8, 9}), 1, 3);
    rc = row ? tensor_copy_(row, vals) : -1;
    CHECK_VALUES("copy_ into a dim-0 narrow view writes the parent", parent, 0, 0, 0, 0, 7, 8, 9,
                 0, 0, 0);

    tensor_fill_(dst, -1.5f);
    CHECK_VALUES("fill_ -1.5", dst, 0, -1.5f, -1.5f, -1.5f, -1.5f, -1.5f, -1.5f);

    tensor_free(dst);
    tensor_free(src);
    tensor_free(wrong);
    tensor_free(parent);
    tensor_free(row);
    tensor_free(vals);
}

/* ---- broadcasting binary ops ---- */

static void test_binary_broadcast(void) {
    Tensor *a = T_IOTA(2, 3);                                 /* [[0,1,2],[3,4,5]] */
    Tensor *row = T_DATA(((float[]){10, 20, 30}), 3);         /* (3,) */
    Tensor *col = T_DATA(((float[]){10, 20}), 2, 1);          /* (2,1) */
    Tensor *r13 = T_DATA(((float[]){1, 2, 3}), 1, 3);         /* (1,3) */

    Tensor *c = tensor_add(a, row);
    CHECK_SHAPE("add (2,3)+(3,) shape (2,3)", c, 2, 3);
    CHECK_VALUES("add (2,3)+(3,) values", c, 0, 10, 21, 32, 13, 24, 35);
    tensor_free(c);

    c = tensor_add(row, a);
    CHECK_SHAPE("add (3,)+(2,3) shape (2,3)", c, 2, 3);
    CHECK_VALUES("add (3,)+(2,3) values", c, 0, 10, 21, 32, 13, 24, 35);
    tensor_free(c);

    c = tensor_add(col, r13);
    CHECK_SHAPE("add (2,1)+(1,3) shape (2,3)", c, 2, 3);
    CHECK_VALUES("add (2,1)+(1,3) values", c, 0, 11, 12, 13, 21, 22, 23);
    tensor_free(c);

    c = tensor_sub(a, col);
    CHECK_VALUES("sub (2,3)-(2,1) values", c, 0, -10, -9, -8, -17, -16, -15);
    tensor_free(c);

    c = tensor_div(a, row);
    CHECK_VALUES("div (2,3)/(3,) values", c, 1e-7, 0, 0.05f, 2.0f / 30, 0.3f, 0.2f, 5.0f / 30);
    tensor_free(c);

    c = tensor_binary(TENSOR_SUB, r13, col);
    CHECK_SHAPE("binary SUB (1,3)-(2,1) shape (2,3)", c, 2, 3);
    CHECK_VALUES("binary SUB (1,3)-(2,1) values", c, 0, -9, -8, -7, -19, -18, -17);
    tensor_free(c);

    /* (4,1,3) * (2,1) -> (4,2,3): out[i][j][k] = x[i][0][k] * y[j][0]. */
    Tensor *x = T_IOTA(4, 1, 3);
    Tensor *y = T_DATA(((float[]){2, -1}), 2, 1);
    c = tensor_mul(x, y);
    CHECK_SHAPE("mul (4,1,3)*(2,1) shape (4,2,3)", c, 4, 2, 3);
    float expected[24];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++)
                expected[(i * 2 + j) * 3 + k] = (float)(i * 3 + k) * (j == 0 ? 2.0f : -1.0f);
    check_values("mul (4,1,3)*(2,1) values", c, expected, 24, 0);
    tensor_free(c);

    /* A 0-d tensor broadcasts against anything. */
    Tensor *s = tensor_full(0, SHAPE(0), 3.0f);
    c = tensor_mul(a, s);
    CHECK_SHAPE("mul (2,3)*() shape (2,3)", c, 2, 3);
    CHECK_VALUES("mul (2,3)*() values", c, 0, 0, 3, 6, 9, 12, 15);
    tensor_free(c);

    Tensor *bad = tensor_zeros(2, SHAPE(2, 2));
    clear_error();
    c = tensor_add(a, bad);
    CHECK("add (2,3)+(2,2) is an error", c == NULL, "got a tensor");
    check_error_mentions("broadcast error names both shapes", "[2, 3]", "[2, 2]");
    tensor_free(c);
    Tensor *bad3 = tensor_zeros(1, SHAPE(4));
    clear_error();
    c = tensor_binary(TENSOR_MUL, x, bad3);
    CHECK("mul (4,1,3)*(4,) is an error", c == NULL, "got a tensor");
    check_error_mentions("broadcast error names both shapes (3-D)", "[4, 1, 3]", "[4]");
    tensor_free(c);

    tensor_free(a);
    tensor_free(row);
    tensor_free(col);
    tensor_free(r13);
    tensor_free(x);
    tensor_free(y);
    tensor_free(s);
    tensor_free(bad);
    tensor_free(bad3);
}

static void test_binary_inplace(void) {
    Tensor *a = T_IOTA(2, 3);
    Tensor *row = T_DATA(((float[]){10, 20, 30}), 3);
    Tensor *col = T_DATA(((float[]){1, 2}), 2, 1);

    int rc = tensor_binary_(TENSOR_ADD, a, row);
    CHECK("binary_ ADD (2,3)+=(3,) returns 0", rc == 0, "rc %d: %s", rc, moco_last_error());
    CHECK_VALUES("binary_ ADD (2,3)+=(3,) values", a, 0, 10, 21, 32, 13, 24, 35);
    rc = tensor_binary_(TENSOR_DIV, a, col);
    CHECK_VALUES("binary_ DIV (2,3)/=(2,1) values", a, 1e-6, 10, 21, 32, 6.5f, 12, 17.5f);
    rc = tensor_binary_(TENSOR_MUL, a, a);
    CHECK_VALUES("binary_ MUL a*=a (aliasing) values", a, 1e-3, 100, 441, 1024, 42.25f, 144,
                 306.25f);

    /* b bigger than a: the result would not fit in a. */
    Tensor *small = T_DATA(((float[]){1, 2, 3}), 3);
    Tensor *big = T_IOTA(2, 3);
    clear_error();
    rc = tensor_binary_(TENSOR_ADD, small, big);
    CHECK("binary_ (3,)+=(2,3) is an error", rc == -1, "rc %d", rc);
    check_error_mentions("binary_ error names both shapes", "[3]", "[2, 3]");
    CHECK_VALUES("failed binary_ leaves a unchanged", small, 0, 1, 2, 3);

    /* (2,1) op= (1,3) broadcasts to (2,3), larger than a. */
    Tensor *c21 = T_DATA(((float[]){1, 2}), 2, 1);
    Tensor *r13 = T_DATA(((float[]){1, 2, 3}), 1, 3);
    clear_error();
    rc = tensor_binary_(TENSOR_SUB, c21, r13);
    CHECK("binary_ (2,1)-=(1,3) is an error", rc == -1, "rc %d", rc);
    check_error_mentions("binary_ (2,1)-=(1,3) names both shapes", "[2, 1]", "[1, 3]");

    tensor_free(a);
    tensor_free(row);
    tensor_free(col);
    tensor_free(small);
    tensor_free(big);
    tensor_free(c21);
    tensor_free(r13);
}

static void test_scalar_ops(void) {
    Tensor *t = T_DATA(((float[]){1, 2, 4}), 3);
    tensor_scalar_(TENSOR_ADD, t, 1);
    CHECK_VALUES("scalar_ ADD 1", t, 0, 2, 3, 5);
    tensor_scalar_(TENSOR_SUB, t, 3); /* t - 3 */
    CHECK_VALUES("scalar_ SUB 3 is t - 3", t, 0, -1, 0, 2);
    tensor_scalar_(TENSOR_MUL, t, -2);
    CHECK_VALUES("scalar_ MUL -2", t, 0, 2, 0, -4);
    tensor_scalar_(TENSOR_DIV, t, 4); /* t / 4 */
    CHECK_VALUES("scalar_ DIV 4 is t / 4", t, 0, 0.5f, 0, -1);
    tensor_free(t);

    t = T_DATA(((float[]){1, 2, 4}), 3);
    tensor_rscalar_(TENSOR_SUB, t, 10); /* 10 - t */
    CHECK_VALUES("rscalar_ SUB 10 is 10 - t", t, 0, 9, 8, 6);
    tensor_rscalar_(TENSOR_DIV, t, 72); /* 72 / t */
    CHECK_VALUES("rscalar_ DIV 72 is 72 / t", t, 1e-6, 8, 9, 12);
    tensor_rscalar_(TENSOR_ADD, t, 1);
    CHECK_VALUES("rscalar_ ADD 1", t, 1e-6, 9, 10, 13);
    tensor_rscalar_(TENSOR_MUL, t, 2);
    CHECK_VALUES("rscalar_ MUL 2", t, 1e-6, 18, 20, 26);
    tensor_free(t);

    t = T_DATA(((float[]){1, 2, 4}), 3);
    tensor_rscalar_(TENSOR_DIV, t, 1); /* 1 / t */
    CHECK_VALUES("rscalar_ DIV 1 is 1 / t", t, 0, 1, 0.5f, 0.25f);
    tensor_scale_(t, 4);
    CHECK_VALUES("scale_ 4", t, 0, 4, 2, 1);
    tensor_free(t);
}

static void test_axpy(void) {
    Tensor *y = T_IOTA(2, 3);
    Tensor *x = T_DATA(((float[]){1, 1, 1, 2, 2, 2}), 6); /* same numel, other shape */
    int rc = tensor_axpy_(y, -0.5f, x);
    CHECK("axpy_ (2,3) += -0.5 * (6,) returns 0", rc == 0, "rc %d: %s", rc, moco_last_error());
    CHECK_VALUES("axpy_ values", y, 0, -0.5f, 0.5f, 1.5f, 2, 3, 4);

    Tensor *z = T_IOTA(5);
    clear_error();
    rc = tensor_axpy_(y, 1, z);
    CHECK("axpy_ with numel 6 vs 5 is an error", rc == -1, "rc %d", rc);
    check_error_mentions("axpy_ error names both shapes", "[2, 3]", "[5]");
    CHECK_VALUES("failed axpy_ leaves y unchanged", y, 0, -0.5f, 0.5f, 1.5f, 2, 3, 4);
    tensor_free(y);
    tensor_free(x);
    tensor_free(z);
}

static void test_clamp(void) {
    Tensor *t = T_DATA(((float[]){-2, -0.5f, 0, 0.5f, 2}), 5);
    tensor_clamp_(t, -1, 1);
    CHECK_VALUES("clamp_ [-1, 1]", t, 0, -1, -0.5f, 0, 0.5f, 1);
    tensor_free(t);

    t = T_DATA(((float[]){-2, -0.5f, 0, 0.5f, 2}), 5);
    tensor_clamp_(t, NAN, 0);
    CHECK_VALUES("clamp_ (NaN, 0]: no lower bound", t, 0, -2, -0.5f, 0, 0, 0);
    tensor_free(t);

    t = T_DATA(((float[]){-2, -0.5f, 0, 0.5f, 2}), 5);
    tensor_clamp_(t, 0, NAN);
    CHECK_VALUES("clamp_ [0, NaN): no upper bound", t, 0, 0, 0, 0, 0.5f, 2);
    tensor_free(t);

    t = T_DATA(((float[]){-2, -0.5f, 0, 0.5f, 2}), 5);
    tensor_clamp_(t, NAN, NAN);
    CHECK_VALUES("clamp_ (NaN, NaN) changes nothing", t, 0, -2, -0.5f, 0, 0.5f, 2);
    tensor_free(t);
}

static void test_unary(void) {
    Tensor *t = T_DATA(((float[]){0, 1, -1, 2}), 4);
    tensor_exp_(t);
    CHECK_VALUES("exp_ [0,1,-1,2]", t, 1e-6, 1, 2.7182818f, 0.36787944f, 7.3890561f);
    tensor_free(t);

    t = T_DATA(((float[]){1, 2.7182818f, 0.5f, 100}), 4);
    tensor_log_(t);
    CHECK_VALUES("log_ [1,e,0.5,100]", t, 1e-6, 0, 1, -0.69314718f, 4.6051702f);
    tensor_free(t);
    t = T_DATA(((float[]){0}), 1);
    tensor_log_(t);
    CHECK("log_ 0 is -inf", isinf(t->data[0]) && t->data[0] < 0, "got %g", t->data[0]);
    tensor_free(t);

    t = T_DATA(((float[]){0, 4, 2, 0.25f}), 4);
    tensor_sqrt_(t);
    CHECK_VALUES("sqrt_ [0,4,2,0.25]", t, 1e-7, 0, 2, 1.4142135f, 0.5f);
    tensor_free(t);

    t = T_DATA(((float[]){1, -2, 0, 3.5f}), 2, 2);
    tensor_neg_(t);
    CHECK_VALUES("neg_ [1,-2,0,3.5]", t, 0, -1, 2, 0, -3.5f);
    CHECK_SHAPE("neg_ keeps the shape", t, 2, 2);
    tensor_free(t);
}

/* ---- whole-tensor reductions ---- */

static void test_reduce_all(void) {
    Tensor *t = T_IOTA(2, 3, 4);
    CHECK_NEAR("sum_all of 0..23 = 276", tensor_sum_all(t), 276, 0);
    CHECK_NEAR("mean_all of 0..23 = 11.5", tensor_mean_all(t), 11.5, 0);
    tensor_free(t);

    /* 1e7 copies of 0.1f: a float accumulator drifts far (about 1.09e6);
     * in double the sum is 1e7 * 0.100000001490116 = 1000000.0149. */
    Tensor *big = tensor_full(1, SHAPE(10000000), 0.1f);
    double sum = big ? tensor_sum_all(big) : 0;
    CHECK("sum_all of 1e7 x 0.1f within 1e-5 relative of 1e6 (double accumulation)",
          fabs(sum - 1e6) <= 10, "got %.6f", sum);
    double mean = big ? tensor_mean_all(big) : 0;
    CHECK_NEAR("mean_all of 1e7 x 0.1f", mean, 0.1, 1e-6);
    tensor_free(big);

    /* First maximum wins. */
    Tensor *m = T_DATA(((float[]){3, 7, 1, 7, 2}), 5);
    float value = 0;
    int64_t index = -1;
    int rc = tensor_max_all(m, &value, &index);
    CHECK("max_all [3,7,1,7,2] = 7 at 1 (first)", rc == 0 && value == 7 && index == 1,
          "rc %d value %g index %lld", rc, value, (long long)index);
    tensor_free(m);

    m = T_DATA(((float[]){-INFINITY, -5, -INFINITY}), 3);
    rc = tensor_max_all(m, &value, &index);
    CHECK("max_all [-inf,-5,-inf] = -5 at 1", rc == 0 && value == -5 && index == 1,
          "rc %d value %g index %lld", rc, value, (long long)index);
    tensor_free(m);

    m = T_DATA(((float[]){1, NAN, 5, NAN}), 4);
    rc = tensor_max_all(m, &value, &index);
    CHECK("max_all [1,NaN,5,NaN] is NaN at 1", rc == 0 && isnan(value) && index == 1,
          "rc %d value %g index %lld", rc, value, (long long)index);
    tensor_free(m);

    Tensor *empty = tensor_zeros(2, SHAPE(2, 0));
    clear_error();
    rc = tensor_max_all(empty, &value, &index);
    CHECK("max_all of an empty tensor is an error", rc == -1, "rc %d", rc);
    check_error_mentions("max_all empty names the shape", "[2, 0]", NULL);
    tensor_free(empty);
}

/* ---- per-dimension reductions of the (2,3,4) tensor with value 12i + 4j + k ---- */

/* Fills the expected (P,Q) results of reducing over `dim` from closed forms; returns P*Q. */
static int expected_reduction(int dim, float *sum, float *mean, float *max, float *argmax) {
    int n = 0;
    switch (dim) {
    case 0: /* (3,4): over i of 12i + 4j + k */
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++, n++) {
                sum[n] = 12 + 2 * (4 * j + k);
                mean[n] = 6 + 4 * j + k;
                max[n] = 12 + 4 * j + k;
                argmax[n] = 1;
            }
        break;
    case 1: /* (2,4): over j */
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 4; k++, n++) {
                sum[n] = 36 * i + 12 + 3 * k;
                mean[n] = 12 * i + 4 + k;
                max[n] = 12 * i + 8 + k;
                argmax[n] = 2;
            }
        break;
    default: /* (2,3): over k */
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++, n++) {
                sum[n] = 48 * i + 16 * j + 6;
                mean[n] = 12 * i + 4 * j + 1.5f;
                max[n] = 12 * i + 4 * j + 3;
                argmax[n] = 3;
            }
        break;
    }
    return n;
}

static void test_reduce_dims(void) {
    static const int64_t full[3] = {2, 3, 4};
    Tensor *t = T_IOTA(2, 3, 4);
    for (int dim = 0; dim < 3; dim++) {
        float sum[12], mean[12], max[12], argmax[12];
        int count = expected_reduction(dim, sum, mean, max, argmax);
        for (int keepdim = 0; keepdim < 2; keepdim++) {
            int64_t shape[3];
            int ndim = 0;
            for (int d = 0; d < 3; d++) {
                if (d != dim) shape[ndim++] = full[d];
                else if (keepdim) shape[ndim++] = 1;
            }
            char name[96];
            const char *kd = keepdim ? "keepdim" : "no keepdim";

            Tensor *s = tensor_sum(t, dim, keepdim);
            snprintf(name, sizeof name, "sum (2,3,4) dim %d %s shape", dim, kd);
            check_shape(name, s, ndim, shape);
            snprintf(name, sizeof name, "sum (2,3,4) dim %d %s values", dim, kd);
            check_values(name, s, sum, count, 0);
            tensor_free(s);

            s = tensor_mean(t, dim, keepdim);
            snprintf(name, sizeof name, "mean (2,3,4) dim %d %s shape", dim, kd);
            check_shape(name, s, ndim, shape);
            snprintf(name, sizeof name, "mean (2,3,4) dim %d %s values", dim, kd);
            check_values(name, s, mean, count, 1e-6);
            tensor_free(s);

            Tensor *idx = NULL;
            s = tensor_max(t, dim, keepdim, &idx);
            snprintf(name, sizeof name, "max (2,3,4) dim %d %s shape", dim, kd);
            check_shape(name, s, ndim, shape);
            snprintf(name, sizeof name, "max (2,3,4) dim %d %s values", dim, kd);
            check_values(name, s, max, count, 0);
            snprintf(name, sizeof name, "max (2,3,4) dim %d %s indices shape", dim, kd);
            check_shape(name, idx, ndim, shape);
            snprintf(name, sizeof name, "max (2,3,4) dim %d %s indices", dim, kd);
            check_values(name, idx, argmax, count, 0);
            tensor_free(s);
            tensor_free(idx);

            s = tensor_argmax(t, dim, keepdim);
            snprintf(name, sizeof name, "argmax (2,3,4) dim %d %s shape", dim, kd);
            check_shape(name, s, ndim, shape);
            snprintf(name, sizeof name, "argmax (2,3,4) dim %d %s values", dim, kd);
            check_values(name, s, argmax, count, 0);
            tensor_free(s);
        }
    }

    /* max without indices is fine. */
    Tensor *s = tensor_max(t, 2, 0, NULL);
    CHECK_SHAPE("max with indices NULL still gives values", s, 2, 3);
    tensor_free(s);

    clear_error();
    s = tensor_sum(t, 3, 0);
    CHECK("sum over dim 3 of a 3-D tensor is an error", s == NULL, "got a tensor");
    check_error_mentions("sum bad dim names the shape", "[2, 3, 4]", NULL);
    tensor_free(s);
    clear_error();
    s = tensor_argmax(t, -1, 0);
    CHECK("argmax over dim -1 (C positions are 0-based) is an error", s == NULL, "got a tensor");
    tensor_free(s);
    tensor_free(t);
}

static void test_max_argmax_cases(void) {
    /* The maximum is not always last: [[3,-1,2],[-5,-4,-6]]. */
    Tensor *t = T_DATA(((float[]){3, -1, 2, -5, -4, -6}), 2, 3);
    Tensor *idx = NULL;
    Tensor *m = tensor_max(t, 1, 0, &idx);
    CHECK_VALUES("max dim1 of [[3,-1,2],[-5,-4,-6]]", m, 0, 3, -4);
    CHECK_VALUES("max dim1 indices", idx, 0, 0, 1);
    tensor_free(m);
    tensor_free(idx);
    m = tensor_max(t, 0, 0, NULL);
    CHECK_VALUES("max dim0 of [[3,-1,2],[-5,-4,-6]]", m, 0, 3, -1, 2);
    tensor_free(m);
    tensor_free(t);

    /* Ties go to the first position. */
    t = T_DATA(((float[]){1, 5, 5, 2, 2, 2}), 2, 3);
    m = tensor_argmax(t, 1, 0);
    CHECK_VALUES("argmax ties -> first: [[1,5,5],[2,2,2]] dim1", m, 0, 1, 0);
    tensor_free(m);
    m = tensor_argmax(t, 0, 1);
    CHECK_SHAPE("argmax dim0 keepdim shape (1,3)", m, 1, 3);
    CHECK_VALUES("argmax ties -> first: [[1,5,5],[2,2,2]] dim0", m, 0, 1, 0, 0);
    tensor_free(m);
    tensor_free(t);

    /* NaN is the maximum; the first NaN wins. */
    t = T_DATA(((float[]){1, NAN, 3, NAN, NAN, 0}), 2, 3);
    idx = NULL;
    m = tensor_max(t, 1, 0, &idx);
    CHECK("max with NaN gives NaN", m && m->numel == 2 && isnan(m->data[0]) && isnan(m->data[1]),
          "got %g %g", m ? m->data[0] : 0.0, m ? m->data[1] : 0.0);
    CHECK_VALUES("max with NaN indices (first NaN)", idx, 0, 1, 0);
    tensor_free(m);
    tensor_free(idx);
    m = tensor_argmax(t, 1, 0);
    CHECK_VALUES("argmax with NaN (first NaN)", m, 0, 1, 0);
    tensor_free(m);
    tensor_free(t);

    /* 1-D over dim 0 without keepdim: a 0-d result. */
    t = T_DATA(((float[]){4, 9, 2}), 3);
    m = tensor_argmax(t, 0, 0);
    CHECK("argmax of a 1-D tensor is 0-d", m && m->ndim == 0 && m->numel == 1, "ndim %d",
          m ? m->ndim : -1);
    CHECK_VALUES("argmax of [4,9,2] = 1", m, 0, 1);
    tensor_free(m);
    m = tensor_sum(t, 0, 1);
    CHECK_SHAPE("sum of a 1-D tensor keepdim shape (1,)", m, 1);
    CHECK_VALUES("sum of [4,9,2] = 15", m, 0, 15);
    tensor_free(m);
    tensor_free(t);

    t = tensor_zeros(2, SHAPE(2, 0));
    clear_error();
    m = tensor_max(t, 1, 0, NULL);
    CHECK("max over an empty dim is an error", m == NULL, "got a tensor");
    check_error_mentions("max over an empty dim sets a message", NULL, NULL);
    tensor_free(m);
    clear_error();
    m = tensor_argmax(t, 1, 0);
    CHECK("argmax over an empty dim is an error", m == NULL, "got a tensor");
    tensor_free(m);
    tensor_free(t);
}

/* ---- matmul ---- */

/* ref = op(a) @ op(b) in double; op(a) is (M,K), op(b) is (K,N). */
static void naive_matmul(float *ref, const float *a, int trans_a, const float *b, int trans_b,
                         int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                double av = trans_a ? a[k * M + i] : a[i * K + k];
                double bv = trans_b ? b[j * K + k] : b[k * N + j];
                acc += av * bv;
            }
            ref[i * N + j] = (float)acc;
        }
}

static void check_matmul_case(Rng *rng, int M, int K, int N, int trans_a, int trans_b,
                              double tol) {
    Tensor *a = trans_a ? tensor_randn(2, SHAPE(K, M), rng) : tensor_randn(2, SHAPE(M, K), rng);
    Tensor *b = trans_b ? tensor_randn(2, SHAPE(N, K), rng) : tensor_randn(2, SHAPE(K, N), rng);
    float *ref = malloc(sizeof(float) * M * N);
    naive_matmul(ref, a->data, trans_a, b->data, trans_b, M, K, N);
    Tensor *c = tensor_matmul(a, trans_a, b, trans_b);
    char name[96];
    snprintf(name, sizeof name, "matmul (%d,%d)@(%d,%d) trans_a %d trans_b %d shape", M, K, K, N,
             trans_a, trans_b);
    check_shape(name, c, 2, SHAPE(M, N));
    snprintf(name, sizeof name, "matmul (%d,%d)@(%d,%d) trans_a %d trans_b %d vs naive", M, K, K,
             N, trans_a, trans_b);
    check_values(name, c, ref, (long)M * N, tol);
    free(ref);
    tensor_free(a);
    tensor_free(b);
    tensor_free(c);
}

static void test_matmul(void) {
    Rng rng;
    rng_seed(&rng, 2718, 0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_matmul_case(&rng, 5, 7, 3, ta, tb, 1e-5);
            check_matmul_case(&rng, 33, 65, 17, ta, tb, 1e-4);
        }

    /* Hand-computed: [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]. */
    Tensor *a = T_DATA(((float[]){1, 2, 3, 4}), 2, 2);
    Tensor *b = T_DATA(((float[]){5, 6, 7, 8}), 2, 2);
    Tensor *c = tensor_matmul(a, 0, b, 0);
    CHECK_VALUES("matmul [[1,2],[3,4]]@[[5,6],[7,8]]", c, 0, 19, 22, 43, 50);
    tensor_free(c);
    c = tensor_matmul(a, 1, b, 0); /* a^T = [[1,3],[2,4]] */
    CHECK_VALUES("matmul a^T@b", c, 0, 26, 30, 38, 44);
    tensor_free(c);
    c = tensor_matmul(a, 0, b, 1); /* b^T = [[5,7],[6,8]] */
    CHECK_VALUES("matmul a@b^T", c, 0, 17, 23, 39, 53);
    tensor_free(c);

    /* matmul_into: out = alpha * a @ b + beta * out. */
    Tensor *out = T_DATA(((float[]){1, -1, 2, 0}), 2, 2);
    int rc = tensor_matmul_into(out, a, 0, b, 0, 2.0f, 0.5f);
    CHECK("matmul_into returns 0", rc == 0, "rc %d: %s", rc, moco_last_error());
    CHECK_VALUES("matmul_into alpha 2 beta 0.5", out, 0, 38.5f, 43.5f, 87, 100);
    rc = tensor_matmul_into(out, a, 0, b, 0, 1.0f, 0.0f);
    CHECK_VALUES("matmul_into beta 0 overwrites", out, 0, 19, 22, 43, 50);
    rc = tensor_matmul_into(out, a, 0, b, 0, -1.0f, 1.0f);
    CHECK_VALUES("matmul_into alpha -1 beta 1 cancels", out, 0, 0, 0, 0, 0);
    tensor_free(out);
    tensor_free(a);
    tensor_free(b);

    /* Shape errors name both shapes. */
    Tensor *x = tensor_zeros(2, SHAPE(5, 7));
    Tensor *y = tensor_zeros(2, SHAPE(6, 3));
    clear_error();
    c = tensor_matmul(x, 0, y, 0);
    CHECK("matmul (5,7)@(6,3) is an error", c == NULL, "got a tensor");
    check_error_mentions("matmul mismatch names both shapes", "[5, 7]", "[6, 3]");
    tensor_free(c);

    Tensor *y73 = tensor_zeros(2, SHAPE(7, 3));
    clear_error();
    c = tensor_matmul(x, 1, y73, 0); /* (7,5) @ (7,3) */
    CHECK("matmul (5,7)^T@(7,3) is an error", c == NULL, "got a tensor");
    check_error_mentions("matmul trans mismatch names both shapes", "[5, 7]", "[7, 3]");
    tensor_free(c);

    Tensor *x3 = tensor_zeros(3, SHAPE(1, 5, 7));
    clear_error();
    c = tensor_matmul(x3, 0, y73, 0);
    CHECK("matmul of a 3-D tensor is an error", c == NULL, "got a tensor");
    check_error_mentions("matmul 3-D names the shape", "[1, 5, 7]", NULL);
    tensor_free(c);

    Tensor *bad_out = tensor_zeros(2, SHAPE(5, 4));
    clear_error();
    rc = tensor_matmul_into(bad_out, x, 0, y73, 0, 1, 0);
    CHECK("matmul_into with out (5,4) for (5,7)@(7,3) is an error", rc == -1, "rc %d", rc);
    check_error_mentions("matmul_into bad out names its shape", "[5, 4]", NULL);

    tensor_free(x);
    tensor_free(y);
    tensor_free(y73);
    tensor_free(x3);
    tensor_free(bad_out);
}

/* ---- normalize_rows_ (F.normalize(x, dim=1, eps)) ---- */

static void test_normalize_rows(void) {
    Tensor *t = T_DATA(((float[]){3, 4, 0, 0,       /* norm 5 */
                                  0, 0, 0, 0,       /* zero row: stays zero */
                                  1e-13f, 0, 0, 0,  /* norm < eps: divided by eps */
                                  1, -2, 3, -4}),   /* norm sqrt(30) */
                       4, 4);
    int rc = tensor_normalize_rows_(t, 1e-12f);
    CHECK("normalize_rows_ returns 0", rc == 0, "rc %d: %s", rc, moco_last_error());
    const float s = 1.0f / sqrtf(30.0f);
    CHECK_VALUES("normalize_rows_ values", t, 1e-6, 0.6f, 0.8f, 0, 0, 0, 0, 0, 0, 0.1f, 0, 0, 0,
                 s, -2 * s, 3 * s, -4 * s);

    Rng rng;
    rng_seed(&rng, 3, 3);
    Tensor *r = tensor_randn(2, SHAPE(8, 128), &rng);
    tensor_normalize_rows_(r, 1e-12f);
    double worst = 0;
    for (int i = 0; i < 8; i++) {
        double sq = 0;
        for (int j = 0; j < 128; j++) sq += (double)r->data[i * 128 + j] * r->data[i * 128 + j];
        if (fabs(sqrt(sq) - 1) > worst) worst = fabs(sqrt(sq) - 1);
    }
    CHECK("normalize_rows_ random (8,128): every row has unit norm", worst < 1e-5,
          "max | ||row|| - 1 | = %g", worst);

    Tensor *three = tensor_ones(3, SHAPE(2, 2, 2));
    clear_error();
    rc = tensor_normalize_rows_(three, 1e-12f);
    CHECK("normalize_rows_ of a 3-D tensor is an error", rc == -1, "rc %d", rc);
    check_error_mentions("normalize_rows_ 3-D names the shape", "[2, 2, 2]", NULL);
    tensor_free(t);
    tensor_free(r);
    tensor_free(three);
}

/* ---- gather_rows_ (index_select along dim 0): the one checked row gatherer ---- */

static void test_gather_rows(void) {
    Tensor *src = T_IOTA(4, 3); /* rows 0..3 hold 0-2, 3-5, 6-8, 9-11 */
    Tensor *out = tensor_empty(2, SHAPE(3, 3));
    int rc = tensor_gather_rows_(out, src, (int64_t[]){3, 0, 3}, 3);
    CHECK("gather_rows_ returns 0", rc == 0, "rc %d: %s", rc, moco_last_error());
    CHECK_VALUES("gather_rows_ picks rows 3, 0, 3", out, 0, 9.f, 10.f, 11.f, 0.f, 1.f, 2.f, 9.f, 10.f, 11.f);

    tensor_fill_(out, -1);
    clear_error();
    rc = tensor_gather_rows_(out, src, (int64_t[]){1, 4, 0}, 3);
    CHECK("gather_rows_ with a row past the end is an error", rc == -1, "rc %d", rc);
    check_error_mentions("gather_rows_ names the row and the range", "row 4 (entry 2) is outside [0, 4)", NULL);
    CHECK("gather_rows_ writes nothing when a row is bad", out->data[0] == -1, "out[0] = %g", out->data[0]);
    clear_error();
    rc = tensor_gather_rows_(out, src, (int64_t[]){-1, 0, 0}, 3);
    CHECK("gather_rows_ with a negative row is an error", rc == -1, "rc %d", rc);

    Tensor *wide = tensor_empty(2, SHAPE(3, 4));
    clear_error();
    rc = tensor_gather_rows_(wide, src, (int64_t[]){0, 1, 2}, 3);
    CHECK("gather_rows_ into rows of another width is an error", rc == -1, "rc %d", rc);
    check_error_mentions("gather_rows_ shape error names both shapes", "[3, 4]", "[4, 3]");
    Tensor *view = tensor_narrow(src, 0, 0, 2);
    clear_error();
    rc = tensor_gather_rows_(view, src, (int64_t[]){1, 0}, 2);
    CHECK("gather_rows_ into src's own storage is an error", rc == -1, "rc %d", rc);
    tensor_free(src);
    tensor_free(out);
    tensor_free(wide);
    tensor_free(view);
}

/* ---- shared storage: views may be freed in any order (valgrind checks the rest) ---- */

static void test_free_views_any_order(void) {
    Tensor *t = T_IOTA(4, 3);
    Tensor *flat = tensor_reshape(t, 1, SHAPE(12));
    Tensor *rows = tensor_narrow(t, 0, 1, 2);   /* (2,3) view: 3..8 */
    Tensor *row = tensor_select(rows, 0, 1);    /* (3,) view of a view: 6..8 */
    tensor_free(t);                             /* parent first */
    CHECK_VALUES("view of a view outlives its parent", row, 0, 6, 7, 8);
    tensor_free(rows);
    CHECK_VALUES("reshape outlives the parent and a sibling", flat, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
                 9, 10, 11);
    CHECK("views share storage after the parent is gone", tensor_shares_storage(flat, row),
          "not shared");
    tensor_free(flat);
    CHECK("the last view is no longer a view", !tensor_is_view(row), "is_view");
    tensor_free(row);

    /* Children first, parent last. */
    t = T_IOTA(2, 2, 2);
    Tensor *a = tensor_reshape(t, 2, SHAPE(4, 2));
    Tensor *b = tensor_reshape(a, 1, SHAPE(-1));
    Tensor *c = tensor_narrow(b, 0, 2, 4);
    tensor_free(c);
    tensor_free(b);
    tensor_free(a);
    CHECK_VALUES("parent intact after its views are freed", t, 0, 0, 1, 2, 3, 4, 5, 6, 7);
    tensor_free(t);
}

int main(void) {
    test_creation();
    test_arange();
    test_from_data_and_clone();
    test_random_creation();
    test_shape_queries();
    test_reshape();
    test_narrow();
    test_select();
    test_transpose();
    test_copy_fill();
    test_binary_broadcast();
    test_binary_inplace();
    test_scalar_ops();
    test_axpy();
    test_clamp();
    test_unary();
    test_reduce_all();
    test_reduce_dims();
    test_max_argmax_cases();
    test_matmul();
    test_normalize_rows();
    test_gather_rows();
    test_free_views_any_order();
    CHECK_DONE();
}
