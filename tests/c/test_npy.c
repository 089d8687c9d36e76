/* tests/c/test_npy.c: the .npy reader and writer of core/tensor.h.
 *
 * Three sources of files: our own writer (round trips), byte-exact files built here in a
 * mkdtemp directory (other versions, float64, and every malformed case), and fixtures
 * written by real NumPy (tests/fixtures/npy/make.py; tests run from the repository root).
 * Every malformed file must give NULL and an error naming the file, never a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "tensor.h"

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define COUNT(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

#define MAX_TMP_FILES 64

static char tmp_dir[64];
static char tmp_files[MAX_TMP_FILES][128];
static int tmp_count = 0;

/* A path inside the test's temporary directory; the file is removed at the end. */
static const char *tmp_path(const char *name) {
    if (tmp_count == MAX_TMP_FILES) return "/nonexistent/too-many-test-files";
    snprintf(tmp_files[tmp_count], sizeof tmp_files[0], "%s/%s", tmp_dir, name);
    return tmp_files[tmp_count++];
}

static void remove_tmp_files(void) {
    for (int i = 0; i < tmp_count; i++) unlink(tmp_files[i]);
    rmdir(tmp_dir);
}

static void clear_error(void) { moco_error("%s", ""); }

static int write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t written = fwrite(bytes, 1, n, f);
    return fclose(f) == 0 && written == n ? 0 : -1;
}

/* Reads a whole file into a malloc'ed buffer; *n gets its size. */
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0, got;
    do {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            unsigned char *grown = realloc(buf, cap);
            if (!grown) break;
            buf = grown;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    fclose(f);
    *n = len;
    return buf;
}

/* An .npy file as the format describes it: magic, version, little-endian header length
 * (2 bytes for 1.0, 4 for 2.0 and 3.0), the dict padded with spaces and ended by '\n' so
 * that magic + length + header is a multiple of 64, then `data_bytes` raw bytes. */
static int write_npy(const char *path, int major, const char *dict, const void *data,
                     size_t data_bytes) {
    unsigned char buf[4096];
    size_t len_bytes = major == 1 ? 2 : 4;
    size_t prefix = 8 + len_bytes;
    size_t header_len = strlen(dict) + 1;
    header_len += (64 - (prefix + header_len) % 64) % 64;
    if (prefix + header_len + data_bytes > sizeof buf) return -1;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    for (size_t i = 0; i < len_bytes; i++) buf[8 + i] = (unsigned char)(header_len >> (8 * i));
    memset(buf + prefix, ' ', header_len);
    memcpy(buf + prefix, dict, strlen(dict));
    buf[prefix + header_len - 1] = '\n';
    if (data_bytes) memcpy(buf + prefix + header_len, data, data_bytes);
    return write_bytes(path, buf, prefix + header_len + data_bytes);
}

/* t has this shape and exactly these values. */
static void check_tensor(const char *name, const Tensor *t, int ndim, const int64_t *shape,
                         const float *values) {
    if (!t) {
        CHECK(name, 0, "load failed: %s", moco_last_error());
        return;
    }
    int64_t numel = 1;
    int same_shape = t->ndim == ndim;
    for (int d = 0; same_shape && d < ndim; d++) {
        same_shape = t->shape[d] == shape[d];
        numel *= shape[d];
    }
    if (!same_shape || t->numel != numel) {
        char got[96];
        tensor_shape_str(t, got, sizeof got);
        CHECK(name, 0, "shape %s (ndim %d), expected ndim %d", got, t->ndim, ndim);
        return;
    }
    double diff = numel ? check_max_abs_diff(t->data, values, (long)numel) : 0;
    CHECK(name, diff == 0, "max abs diff %g", diff);
}

/* Loading `path` fails and the message names the file. */
static void check_load_fails(const char *name, const char *path) {
    clear_error();
    Tensor *t = tensor_load_npy(path);
    const char *msg = moco_last_error();
    CHECK(name, t == NULL && strstr(msg, path) != NULL,
          "%s; message \"%s\" should name \"%s\"", t ? "loaded a tensor" : "NULL", msg, path);
    tensor_free(t);
}

/* ---- our writer, our reader ---- */

static void round_trip(const char *label, int ndim, const int64_t *shape) {
    Tensor *t = tensor_empty(ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++) t->data[i] = (float)i * 0.75f - 3.0f;
    char file[64], name[128];
    snprintf(file, sizeof file, "round_trip_%s.npy", label);
    const char *path = tmp_path(file);
    int rc = tensor_save_npy(t, path);
    snprintf(name, sizeof name, "save_npy %s returns 0", label);
    CHECK(name, rc == 0, "rc %d: %s", rc, moco_last_error());
    Tensor *back = tensor_load_npy(path);
    snprintf(name, sizeof name, "save_npy then load_npy %s: same shape and values", label);
    check_tensor(name, back, ndim, shape, t ? t->data : NULL);
    tensor_free(t);
    tensor_free(back);
}

static void test_round_trips(void) {
    round_trip("0d", 0, SHAPE(0));
    round_trip("1d_5", 1, SHAPE(5));
    round_trip("4d_2x3x1x2", 4, SHAPE(2, 3, 1, 2));
    round_trip("empty_2x0x3", 3, SHAPE(2, 0, 3));
    round_trip("6d", 6, SHAPE(1, 2, 1, 2, 1, 2));

    /* Special values survive bit for bit. */
    Tensor *t = tensor_from_data(1, SHAPE(4), (const float[]){INFINITY, -INFINITY, -0.0f, 1e-45f});
    const char *path = tmp_path("special.npy");
    tensor_save_npy(t, path);
    Tensor *back = tensor_load_npy(path);
    CHECK("save/load keeps inf, -inf, -0 and denormals bit for bit",
          back && back->numel == 4 && memcmp(back->data, t->data, 16) == 0, "values differ");
    tensor_free(t);
    tensor_free(back);
}

/* The header without spaces, e.g. {'descr':'<f4','fortran_order':False,'shape':(5,),}. */
static void header_without_spaces(const unsigned char *file, size_t n, char *out, size_t size) {
    size_t len = n >= 10 ? (size_t)(file[8] | file[9] << 8) : 0;
    size_t j = 0;
    for (size_t i = 10; i < 10 + len && i < n && j + 1 < size; i++)
        if (file[i] != ' ') out[j++] = (char)file[i];
    out[j] = '\0';
}

/* What we write must be a file NumPy reads: version 1.0, '<f4', C order, 64-byte alignment,
 * and a shape that is a Python tuple (one element needs its trailing comma). */
static void check_written_format(const char *label, const Tensor *t, const char *shape_text) {
    const char *path = tmp_path(label);
    tensor_save_npy(t, path);
    size_t n = 0;
    unsigned char *file = read_bytes(path, &n);
    char name[128], header[512];
    snprintf(name, sizeof name, "saved %s starts with \\x93NUMPY 1.0", label);
    CHECK(name, file && n >= 10 && memcmp(file, "\x93NUMPY\x01\x00", 8) == 0, "bad prefix");
    if (!file || n < 10) {
        free(file);
        return;
    }
    size_t header_len = (size_t)(file[8] | file[9] << 8);
    snprintf(name, sizeof name, "saved %s: header ends with \\n, 64-byte aligned", label);
    CHECK(name, (10 + header_len) % 64 == 0 && 10 + header_len <= n && file[9 + header_len] == '\n',
          "header length %zu", header_len);
    snprintf(name, sizeof name, "saved %s: file size = header + 4 * numel", label);
    CHECK(name, n == 10 + header_len + 4 * (size_t)t->numel, "size %zu, header %zu, numel %lld",
          n, header_len, (long long)t->numel);
    header_without_spaces(file, n, header, sizeof header);
    snprintf(name, sizeof name, "saved %s: header has '<f4', C order and %s", label, shape_text);
    CHECK(name, strstr(header, "'descr':'<f4'") && strstr(header, "'fortran_order':False") &&
          strstr(header, shape_text), "header %s", header);
    snprintf(name, sizeof name, "saved %s: data is the raw little-endian floats", label);
    CHECK(name, n == 10 + header_len + tensor_nbytes(t) &&
          memcmp(file + 10 + header_len, t->data, tensor_nbytes(t)) == 0, "data differs");
    free(file);
}

static void test_written_format(void) {
    Tensor *t1 = tensor_from_data(1, SHAPE(5), (const float[]){1, 2, 3, 4, 5});
    check_written_format("fmt_1d.npy", t1, "'shape':(5,)");
    Tensor *t0 = tensor_full(0, SHAPE(0), 7.0f);
    check_written_format("fmt_0d.npy", t0, "'shape':()");
    Tensor *t4 = tensor_zeros(4, SHAPE(2, 3, 1, 2));
    check_written_format("fmt_4d.npy", t4, "'shape':(2,3,1,2");
    Tensor *te = tensor_zeros(2, SHAPE(0, 3));
    check_written_format("fmt_empty.npy", te, "'shape':(0,3");
    tensor_free(t1);
    tensor_free(t0);
    tensor_free(t4);
    tensor_free(te);

    clear_error();
    Tensor *t = tensor_zeros(1, SHAPE(2));
    const char *bad = "/nonexistent-dir-for-moco-tests/x.npy";
    int rc = tensor_save_npy(t, bad);
    CHECK("save_npy into a missing directory fails naming the file",
          rc == -1 && strstr(moco_last_error(), bad), "rc %d, message \"%s\"", rc,
          moco_last_error());
    tensor_free(t);
}

/* ---- hand-built files that are valid ---- */

static void test_valid_hand_built(void) {
    /* '<f8' (2,2) is converted to float32. */
    const double f8[4] = {1.5, -2.25, 1e-3, 1.0 / 3.0};
    const char *path = tmp_path("f8.npy");
    write_npy(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", f8,
              sizeof f8);
    Tensor *t = tensor_load_npy(path);
    const float f8_as_f4[4] = {1.5f, -2.25f, (float)1e-3, (float)(1.0 / 3.0)};
    check_tensor("load '<f8' (2,2) converts to float32", t, 2, SHAPE(2, 2), f8_as_f4);
    tensor_free(t);

    const float three[3] = {1, -2, 3.5f};
    path = tmp_path("v2.npy");
    write_npy(path, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", three,
              sizeof three);
    t = tensor_load_npy(path);
    check_tensor("load format version 2.0 (4-byte header length)", t, 1, SHAPE(3), three);
    tensor_free(t);

    path = tmp_path("v3.npy");
    write_npy(path, 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", three,
              sizeof three);
    t = tensor_load_npy(path);
    check_tensor("load format version 3.0", t, 1, SHAPE(3), three);
    tensor_free(t);

    /* Any dict literal is valid; NumPy happens to sort the keys, other writers may not. */
    path = tmp_path("key_order.npy");
    write_npy(path, 1, "{'shape': (3,), 'fortran_order': False, 'descr': '<f4'}", three,
              sizeof three);
    t = tensor_load_npy(path);
    check_tensor("load a header with keys in another order", t, 1, SHAPE(3), three);
    tensor_free(t);

    path = tmp_path("scalar.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", three, 4);
    t = tensor_load_npy(path);
    check_tensor("load shape () as a 0-d tensor", t, 0, SHAPE(0), three);
    tensor_free(t);

    path = tmp_path("empty.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 0), }", NULL, 0);
    t = tensor_load_npy(path);
    check_tensor("load shape (4, 0): empty, no data", t, 2, SHAPE(4, 0), NULL);
    tensor_free(t);
}

/* ---- malformed files: NULL and a message naming the file ---- */

static void test_malformed(void) {
    const float data[6] = {0, 1, 2, 3, 4, 5};
    const char *path;

    path = tmp_path("bad_magic.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", data,
              sizeof data);
    {
        size_t n = 0;
        unsigned char *bytes = read_bytes(path, &n);
        if (bytes) {
            bytes[1] = 'M'; /* "\x93MUMPY" */
            write_bytes(path, bytes, n);
            free(bytes);
        }
    }
    check_load_fails("load bad magic fails naming the file", path);

    path = tmp_path("tiny.npy");
    write_bytes(path, "\x93NUM", 4);
    check_load_fails("load a 4-byte file fails naming the file", path);

    path = tmp_path("empty_file.npy");
    write_bytes(path, "", 0);
    check_load_fails("load an empty file fails naming the file", path);

    /* Header length says 118 bytes; the file ends 26 bytes into it. */
    static const char truncated[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_";
    path = tmp_path("truncated_header.npy");
    write_bytes(path, truncated, sizeof truncated - 1);
    check_load_fails("load truncated header fails naming the file", path);

    path = tmp_path("truncated_data.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", data, 8);
    check_load_fails("load truncated data (8 of 16 bytes) fails naming the file", path);

    path = tmp_path("fortran.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data,
              sizeof data);
    check_load_fails("load fortran_order True fails naming the file", path);

    path = tmp_path("big_endian.npy");
    write_npy(path, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", data,
              sizeof data);
    check_load_fails("load '>f4' (big-endian) fails naming the file", path);

    path = tmp_path("int32.npy");
    write_npy(path, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (6,), }", data,
              sizeof data);
    check_load_fails("load '<i4' fails naming the file", path);

    path = tmp_path("no_shape.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, }", data, sizeof data);
    check_load_fails("load header without 'shape' fails naming the file", path);

    path = tmp_path("no_descr.npy");
    write_npy(path, 1, "{'fortran_order': False, 'shape': (6,), }", data, sizeof data);
    check_load_fails("load header without 'descr' fails naming the file", path);

    path = tmp_path("seven_dims.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 2, 3), }",
              data, sizeof data);
    check_load_fails("load 7 dims fails naming the file", path);

    path = tmp_path("negative_dim.npy");
    write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-6,), }", data,
              sizeof data);
    check_load_fails("load shape (-6,) fails naming the file", path);

    path = tmp_path("version4.npy");
    write_npy(path, 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", data,
              sizeof data);
    check_load_fails("load format version 4.0 fails naming the file", path);

    char missing[160];
    snprintf(missing, sizeof missing, "%s/does_not_exist.npy", tmp_dir);
    check_load_fails("load a nonexistent file fails naming the file", missing);
}

/* ---- fixtures written by NumPy itself (tests/fixtures/npy/make.py) ---- */

static void test_numpy_fixtures(void) {
    const float arange6[6] = {0, 1, 2, 3, 4, 5};
    Tensor *t = tensor_load_npy("tests/fixtures/npy/arange_2x3_f4.npy");
    check_tensor("numpy fixture arange_2x3_f4.npy", t, 2, SHAPE(2, 3), arange6);
    tensor_free(t);

    t = tensor_load_npy("tests/fixtures/npy/arange_2x3_f4_v2.npy");
    check_tensor("numpy fixture arange_2x3_f4_v2.npy (version 2.0)", t, 2, SHAPE(2, 3), arange6);
    tensor_free(t);

    float thirds[6];
    for (int i = 0; i < 6; i++) thirds[i] = (float)(i / 3.0);
    t = tensor_load_npy("tests/fixtures/npy/arange_2x3_f8.npy");
    check_tensor("numpy fixture arange_2x3_f8.npy (float64 i/3 -> float32)", t, 2, SHAPE(2, 3),
                 thirds);
    tensor_free(t);

    const float scalar[1] = {-2.5f};
    t = tensor_load_npy("tests/fixtures/npy/scalar_f4.npy");
    check_tensor("numpy fixture scalar_f4.npy (shape ())", t, 0, SHAPE(0), scalar);
    tensor_free(t);

    /* Our writer produces the same bytes NumPy does for the same array. */
    size_t n_ref = 0, n_ours = 0;
    unsigned char *ref = read_bytes("tests/fixtures/npy/arange_2x3_f4.npy", &n_ref);
    Tensor *ours = tensor_from_data(2, SHAPE(2, 3), arange6);
    const char *path = tmp_path("ours_2x3.npy");
    tensor_save_npy(ours, path);
    unsigned char *mine = read_bytes(path, &n_ours);
    /* Header text may differ in spacing; the data block (the last 24 bytes) may not. */
    CHECK("saved (2,3) data block matches NumPy's",
          ref && mine && n_ref >= 24 && n_ours >= 24 &&
              memcmp(ref + n_ref - 24, mine + n_ours - 24, 24) == 0,
          "sizes %zu (numpy) and %zu (ours)", n_ref, n_ours);
    free(ref);
    free(mine);
    tensor_free(ours);
}

int main(void) {
    strcpy(tmp_dir, "/tmp/moco_test_npy_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trips();
    test_written_format();
    test_valid_hand_built();
    test_malformed();
    test_numpy_fixtures();
    remove_tmp_files();
    CHECK_DONE();
}
