/* tests/c/test_safetensors.c: core/io/safetensors.c and core/io/atomic.c.
 *
 * Round trips of every dtype; byte-exact files built here for the layout the format
 * specifies and for each malformed case (every one must give an error naming the file, and
 * the tensor when there is one); a fuzz-style pass that opens every truncation of a valid
 * file and thousands of copies with random bytes changed (each must give an error or a
 * consistent load, never a crash: run it under -fsanitize=address to see memory errors);
 * and failed writes (a file-size limit standing in for a full disk, a missing directory),
 * after which the previous file must be byte-for-byte unchanged. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "io/atomic.h"
#include "io/safetensors.h"
#include "rng.h"
#include "tensor.h"

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static char tmp_dir[64];

/* A path inside the test's temporary directory (removed at the end with its files). */
static const char *tmp_path(const char *name) {
    static char paths[8][160];
    static int next = 0;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", tmp_dir, name);
    return p;
}

static void remove_tmp_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
}

static int write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t written = fwrite(bytes, 1, n, f);
    return fclose(f) == 0 && written == n ? 0 : -1;
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
    *n = buf ? fread(buf, 1, (size_t)size, f) : 0;
    fclose(f);
    return buf;
}

/* A file made of an 8-byte length, the header text and the data bytes. */
static int write_st(const char *path, const char *header, const void *data, size_t data_len) {
    size_t hlen = strlen(header);
    unsigned char *buf = malloc(8 + hlen + data_len + 1);
    if (!buf) return -1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (data_len) memcpy(buf + 8 + hlen, data, data_len);
    int status = write_bytes(path, buf, 8 + hlen + data_len);
    free(buf);
    return status;
}

static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

/* ------------------------------------------------------------ round trips */

static void test_round_trip(void) {
    Rng rng;
    rng_seed(&rng, 7, 0);
    Tensor *w = tensor_randn(4, SHAPE(3, 2, 3, 3), &rng);
    Tensor *scalar = tensor_full(0, NULL, 12345.0f);           /* num_batches_tracked */
    Tensor *ptr = tensor_full(1, SHAPE(1), 768.0f);              /* queue_ptr */
    Tensor *bytes = tensor_arange(0, 32, 1);                     /* a generator's state */
    Tensor *dbl = tensor_randn(2, SHAPE(2, 5), &rng);
    Tensor *empty = tensor_zeros(2, SHAPE(0, 4));
    tensor_scalar_(TENSOR_ADD, bytes, 200.0f);
    tensor_clamp_(bytes, 0, 255);
    SafetensorsItem items[] = {
        {"layer1.0.conv1.weight", w, SAFETENSORS_F32},
        {"bn1.num_batches_tracked", scalar, SAFETENSORS_I64},
        {"queue_ptr", ptr, SAFETENSORS_I64},
        {"rng.state", bytes, SAFETENSORS_U8},
        {"double", dbl, SAFETENSORS_F64},
        {"empty", empty, SAFETENSORS_F32},
    };
    const char *keys[] = {"format", "config"};
    const char *values[] = {"moco-lua", "{\"lr\": 0.03, \"name\": \"caf\xc3\xa9\"}"};
    const char *path = tmp_path("round.safetensors");
    int rc = safetensors_save(path, items, 6, keys, values, 2);
    CHECK("save six tensors of four dtypes", rc == 0, "%s", moco_last_error());

    size_t n;
    unsigned char *raw = read_bytes(path, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
    CHECK("header padded to a multiple of 8", hlen % 8 == 0 && raw[8] == '{', "header length %llu",
          (unsigned long long)hlen);
    CHECK("padding is spaces", raw[8 + hlen - 1] == ' ' || raw[8 + hlen - 1] == '}', "last byte 0x%02x",
          raw[8 + hlen - 1]);
    free(raw);

    SafetensorsFile sf;
    rc = safetensors_open(&sf, path);
    CHECK("open the written file", rc == 0, "%s", moco_last_error());
    if (rc) return;
    CHECK("six entries", sf.count == 6, "got %zu", sf.count);
    const SafetensorsEntry *e = safetensors_find(&sf, "bn1.num_batches_tracked");
    CHECK("I64 scalar entry", e && e->dtype == SAFETENSORS_I64 && e->ndim == 0 && e->begin % 8 == 0, "bad entry");
    e = safetensors_find(&sf, "double");
    CHECK("8-byte dtypes are 8-aligned", e && (sf.data_start + e->begin) % 8 == 0, "offset %llu",
          e ? (unsigned long long)e->begin : 0ULL);
    CHECK("metadata kept", safetensors_metadata(&sf, "format") && !strcmp(safetensors_metadata(&sf, "format"), "moco-lua"),
          "format = %s", safetensors_metadata(&sf, "format"));
    CHECK("metadata UTF-8 and JSON text kept", !strcmp(safetensors_metadata(&sf, "config"), values[1]), "config = %s",
          safetensors_metadata(&sf, "config"));
    CHECK("absent metadata is NULL", safetensors_metadata(&sf, "nope") == NULL, "not NULL");

    for (int i = 0; i < 6; i++) {
        e = safetensors_find(&sf, items[i].name);
        Tensor *t = e ? safetensors_read_tensor(&sf, e) : NULL;
        char name[96]; /* F64 included: float -> double -> float is exact */
        snprintf(name, sizeof name, "round trip of %s (%s)", items[i].name, safetensors_dtype_name(items[i].dtype));
        int same = t && tensor_same_shape(t, items[i].tensor);
        double diff = same ? check_max_abs_diff(t->data, items[i].tensor->data, t->numel) : 1;
        CHECK(name, same && diff == 0, "%s; max diff %g", t ? "values differ" : moco_last_error(), diff);
        tensor_free(t);
    }
    safetensors_close(&sf);
    for (int i = 0; i < 6; i++) tensor_free((Tensor *)items[i].tensor);

    /* An empty file (no tensors, no metadata) is valid. */
    rc = safetensors_save(tmp_path("empty.safetensors"), NULL, 0, NULL, NULL, 0);
    CHECK("save with no tensors", rc == 0, "%s", moco_last_error());
    rc = safetensors_open(&sf, tmp_path("empty.safetensors"));
    CHECK("open a file with no tensors", rc == 0 && sf.count == 0, "%s", moco_last_error());
    safetensors_close(&sf);
}

/* A file as the reference writer lays it out, built byte by byte here: F64 converted, and
 * JSON keys in any order with spaces. */
static void test_known_bytes(void) {
    double d[2] = {0.1, -2.5};
    unsigned char data[16 + 8];
    memcpy(data, d, 16);
    float f[2] = {1.5f, -3.0f};
    memcpy(data + 16, f, 8);
    const char *header =
        "{\"__metadata__\":{\"format\":\"pt\"}, \"b\": {\"shape\": [2], \"dtype\": \"F32\", \"data_offsets\": [16, 24]},"
        "\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}   ";
    const char *path = tmp_path("known.safetensors");
    write_st(path, header, data, sizeof data);
    SafetensorsFile sf;
    int rc = safetensors_open(&sf, path);
    CHECK("open a hand-built file", rc == 0, "%s", moco_last_error());
    if (rc) return;
    Tensor *a = safetensors_read_tensor(&sf, safetensors_find(&sf, "a"));
    Tensor *b = safetensors_read_tensor(&sf, safetensors_find(&sf, "b"));
    CHECK("F64 rounded to float32", a && a->data[0] == 0.1f && a->data[1] == -2.5f, "got %g %g",
          a ? a->data[0] : 0.0, a ? a->data[1] : 0.0);
    CHECK("F32 read", b && b->data[0] == 1.5f && b->data[1] == -3.0f, "wrong values");
    CHECK("metadata format=pt", !strcmp(safetensors_metadata(&sf, "format"), "pt"), "missing");
    tensor_free(a);
    tensor_free(b);
    safetensors_close(&sf);
}

/* ------------------------------------------------------------ malformed files */

typedef struct {
    const char *name;
    const char *header;     /* NULL: raw bytes below */
    size_t data_len;        /* zero bytes of data after the header */
    const char *expect;     /* a piece of the message */
} BadCase;

static void test_malformed(void) {
    static const BadCase cases[] = {
        {"malformed JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "malformed JSON header"},
        {"not an object", "[1, 2, 3]", 0, "does not start with '{'"},
        {"duplicate tensor names",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
         "\"data_offsets\":[4,8]}}", 8, "duplicate"},
        {"unknown dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'F33'"},
        {"unsupported dtype named", "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': dtype F16 is not supported"},
        {"dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is not a string"},
        {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing field \"shape\""},
        {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing field \"data_offsets\""},
        {"unexpected field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
         "unexpected field \"x\""},
        {"negative dimension", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape entry 0"},
        {"fractional dimension", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape entry 0"},
        {"too many dimensions", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "7 dimensions"},
        {"huge shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", 4,
         "too large"},
        {"shape x dtype != bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
         "shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] hold 20"},
        {"offsets out of range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
         "go past the end of the data section"},
        {"offsets reversed", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "end before"},
        {"negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets must be"},
        {"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "data_offsets must be"},
        {"overlapping tensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[4,12]}}", 12, "overlap"},
        {"gap between tensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
         "\"data_offsets\":[8,12]}}", 12, "belong to no tensor"},
        {"trailing bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, "longer than its header"},
        {"metadata not strings", "{\"__metadata__\":{\"epoch\":3}}", 0, "'epoch' is not a string"},
        {"metadata not an object", "{\"__metadata__\":[1]}", 0, "not an object of strings"},
        {"entry not an object", "{\"a\":[1,2]}", 0, "tensor 'a': the entry is not a JSON object"},
    };
    const char *path = tmp_path("bad.safetensors");
    static const unsigned char zeros[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_st(path, cases[i].header, zeros, cases[i].data_len);
        SafetensorsFile sf;
        int rc = safetensors_open(&sf, path);
        const char *msg = moco_last_error();
        char name[96];
        snprintf(name, sizeof name, "rejects %s", cases[i].name);
        CHECK(name, rc == -1 && contains(msg, path) && contains(msg, cases[i].expect), "rc %d, message: %s", rc,
              rc ? msg : "(none)");
        safetensors_close(&sf);
    }

    /* Raw byte cases: shorter than the length field, a length past the file, a huge length. */
    SafetensorsFile sf;
    write_bytes(path, "\x10\x00\x00", 3);
    CHECK("rejects a 3-byte file", safetensors_open(&sf, path) == -1 && contains(moco_last_error(), "too short"),
          "%s", moco_last_error());
    write_st(path, "{}", NULL, 0);
    unsigned char raw[10] = {0xF0, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(path, raw, sizeof raw);
    CHECK("rejects a header length larger than the file",
          safetensors_open(&sf, path) == -1 && contains(moco_last_error(), "header length 240 is larger than the rest"),
          "%s", moco_last_error());
    unsigned char huge[10] = {0, 0, 0, 0, 0, 0, 0, 1, '{', '}'};
    write_bytes(path, huge, sizeof huge);
    CHECK("rejects a header length over the format's limit",
          safetensors_open(&sf, path) == -1 && contains(moco_last_error(), "over the format's limit"), "%s",
          moco_last_error());
    CHECK("missing file names it",
          safetensors_open(&sf, tmp_path("nope.safetensors")) == -1 && contains(moco_last_error(), "nope.safetensors") &&
              contains(moco_last_error(), "No such file"),
          "%s", moco_last_error());

    /* An int64 value float32 cannot hold exactly is an error at read time, naming the tensor. */
    int64_t big = ((int64_t)1 << 40) + 1;
    write_st(path, "{\"step\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", &big, 8);
    int rc = safetensors_open(&sf, path);
    Tensor *t = rc ? NULL : safetensors_read_tensor(&sf, safetensors_find(&sf, "step"));
    CHECK("inexact int64 is an error naming the tensor", !rc && !t && contains(moco_last_error(), "tensor 'step'") &&
                                                             contains(moco_last_error(), "1099511627777"),
          "%s", moco_last_error());
    safetensors_close(&sf);
}

/* ------------------------------------------------------------ fuzzing */

/* Opens path and reads every tensor; returns 1 when it loaded, 0 on a clean error, and
 * flags an inconsistency (a load that succeeded with impossible values) as -1. */
static int load_all(const char *path) {
    SafetensorsFile sf;
    if (safetensors_open(&sf, path)) return moco_last_error()[0] ? 0 : -1;
    int result = 1;
    uint64_t covered = 0;
    for (size_t i = 0; i < sf.count; i++) {
        const SafetensorsEntry *e = &sf.entries[i];
        covered += e->end - e->begin;
        Tensor *t = safetensors_read_tensor(&sf, e);
        if (!t) {
            result = 0;
            continue;
        }
        if (t->numel != e->numel) result = -1;
        tensor_free(t);
    }
    if (covered != sf.data_size) result = -1;
    safetensors_close(&sf);
    return result;
}

static void test_fuzz(void) {
    Rng rng;
    rng_seed(&rng, 2024, 1);
    Tensor *a = tensor_randn(2, SHAPE(3, 4), &rng), *b = tensor_full(0, NULL, 42), *c = tensor_arange(0, 7, 1);
    SafetensorsItem items[] = {{"encoder.weight", a, SAFETENSORS_F32},
                               {"encoder.num_batches_tracked", b, SAFETENSORS_I64},
                               {"rng", c, SAFETENSORS_U8}};
    const char *keys[] = {"epoch"}, *values[] = {"3"};
    const char *valid = tmp_path("valid.safetensors"), *fuzzed = tmp_path("fuzzed.safetensors");
    safetensors_save(valid, items, 3, keys, values, 1);
    size_t n;
    unsigned char *bytes = read_bytes(valid, &n);

    int bad = 0, loaded = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(fuzzed, bytes, len);
        int r = load_all(fuzzed);
        if (r != 0) bad++; /* a truncated file never loads */
    }
    CHECK("every truncation is an error", bad == 0, "%d truncations loaded or misbehaved", bad);

    unsigned char *copy = malloc(n);
    int errors = 0, inconsistent = 0;
    const int trials = 3000;
    for (int trial = 0; trial < trials; trial++) {
        memcpy(copy, bytes, n);
        int flips = 1 + (int)rng_below(&rng, 4);
        for (int k = 0; k < flips; k++) {
            uint32_t at = rng_below(&rng, (uint32_t)n);
            /* half the flips aim at the header, where the interesting damage is */
            if (trial % 2 == 0) at = 8 + rng_below(&rng, (uint32_t)(n - 8 < 200 ? n - 8 : 200));
            copy[at] = (unsigned char)rng_below(&rng, 256);
        }
        write_bytes(fuzzed, copy, n);
        int r = load_all(fuzzed);
        if (r == 1) loaded++;
        else if (r == 0) errors++;
        else inconsistent++;
    }
    printf("fuzz: %zu-byte file, %d truncations, %d random corruptions: %d loaded, %d errors, %d inconsistent\n", n,
           (int)n, trials, loaded, errors, inconsistent);
    CHECK("random corruption gives an error or a consistent load", inconsistent == 0 && errors > 0,
          "%d inconsistent, %d errors", inconsistent, errors);
    free(copy);
    free(bytes);
    tensor_free(a);
    tensor_free(b);
    tensor_free(c);
}

/* ------------------------------------------------------------ bad writes */

static void test_bad_writes(void) {
    const char *path = tmp_path("previous.safetensors");
    Tensor *t = tensor_full(1, SHAPE(4), 1.5f);
    SafetensorsItem good = {"w", t, SAFETENSORS_F32};
    safetensors_save(path, &good, 1, NULL, NULL, 0);
    size_t n0, n1;
    unsigned char *before = read_bytes(path, &n0);

    SafetensorsItem frac = {"steps", t, SAFETENSORS_I64};
    CHECK("I64 of a fractional value is refused",
          safetensors_save(path, &frac, 1, NULL, NULL, 0) == -1 && contains(moco_last_error(), "tensor 'steps'") &&
              contains(moco_last_error(), "int64"),
          "%s", moco_last_error());
    Tensor *big = tensor_full(1, SHAPE(2), 300.0f);
    SafetensorsItem u8 = {"state", big, SAFETENSORS_U8};
    CHECK("U8 out of range is refused", safetensors_save(path, &u8, 1, NULL, NULL, 0) == -1 &&
                                            contains(moco_last_error(), "uint8"),
          "%s", moco_last_error());
    SafetensorsItem dup[2] = {{"x", t, SAFETENSORS_F32}, {"x", t, SAFETENSORS_F32}};
    CHECK("duplicate names are refused", safetensors_save(path, dup, 2, NULL, NULL, 0) == -1 &&
                                             contains(moco_last_error(), "two tensors are named 'x'"),
          "%s", moco_last_error());
    SafetensorsItem bad_utf8 = {"caf\xe9", t, SAFETENSORS_F32};
    CHECK("a name that is not UTF-8 is refused", safetensors_save(path, &bad_utf8, 1, NULL, NULL, 0) == -1 &&
                                                     contains(moco_last_error(), "UTF-8"),
          "%s", moco_last_error());
    SafetensorsItem reserved = {"__metadata__", t, SAFETENSORS_F32};
    CHECK("__metadata__ cannot name a tensor", safetensors_save(path, &reserved, 1, NULL, NULL, 0) == -1, "accepted");
    unsigned char *after = read_bytes(path, &n1);
    CHECK("refused saves leave the previous file alone", n0 == n1 && !memcmp(before, after, n0), "file changed");
    free(after);

    CHECK("a missing directory is a clear error",
          safetensors_save("/nonexistent-dir/x.safetensors", &good, 1, NULL, NULL, 0) == -1 &&
              contains(moco_last_error(), "cannot create a file in /nonexistent-dir") &&
              contains(moco_last_error(), "No such file"),
          "%s", moco_last_error());

    /* A full disk, simulated with a file-size limit: writes past it fail with EFBIG, as
     * they would with ENOSPC on a full file system (tests/sh/test_checkpoint.sh fills a
     * real tmpfs when it may mount one). */
    Tensor *large = tensor_zeros(1, SHAPE(1 << 16));
    SafetensorsItem huge = {"w", large, SAFETENSORS_F32};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    int limited = setrlimit(RLIMIT_FSIZE, &lim) == 0;
    int rc = safetensors_save(path, &huge, 1, NULL, NULL, 0);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", moco_last_error());
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    CHECK("a write that runs out of room fails cleanly", limited && rc == -1 && contains(msg, "cannot write") &&
                                                            contains(msg, "is unchanged"),
          "limited %d, rc %d: %s", limited, rc, msg);
    after = read_bytes(path, &n1);
    CHECK("the previous file survives a failed write", n0 == n1 && !memcmp(before, after, n0), "file changed");
    free(after);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '\\.tmp-' > /dev/null", tmp_dir);
    CHECK("no temporary file is left behind", system(cmd) != 0, "a .tmp- file remains in %s", tmp_dir);

    CHECK("atomic copy", atomic_copy_file(path, tmp_path("copy.safetensors")) == 0, "%s", moco_last_error());
    after = read_bytes(tmp_path("copy.safetensors"), &n1);
    CHECK("the copy is identical", n0 == n1 && !memcmp(before, after, n0), "differs");
    free(after);
    CHECK("copy of a missing file names it",
          atomic_copy_file(tmp_path("missing"), tmp_path("c2")) == -1 && contains(moco_last_error(), "missing"), "%s",
          moco_last_error());
    free(before);
    tensor_free(t);
    tensor_free(big);
    tensor_free(large);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_safetensors.XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_known_bytes();
    test_malformed();
    test_fuzz();
    test_bad_writes();
    remove_tmp_dir();
    CHECK_DONE();
}
