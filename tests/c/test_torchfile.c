/* tests/c/test_torchfile.c: core/io/pickle.c, core/io/torchfile.c and core/io/torchsave.c.
 *
 * Against files written by PyTorch 1.13 (tests/make_fixtures_torch.py, committed): every
 * tensor of views_{zip,legacy}.pth -- views sharing one storage, offsets, strides, stride 0,
 * float16, bfloat16, float64, int64 ... -- equals PyTorch's values (views.<name>.npy, exact),
 * also from a zip64 archive of the same entries,
 * the plain entries come back as data, and shared storages stay shared.  Every hostile or
 * broken file is refused with an error naming the file and what is wrong (the offending
 * global by name).  Every truncation of the good files and thousands of copies with random
 * bytes changed give an error or a consistent load, never a crash (run under
 * -fsanitize=address for memory errors).  The writers: a .pth round trip through the reader
 * for every dtype, and values that do not fit their dtype refused before anything is written. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "io/torchfile.h"
#include "rng.h"
#include "tensor.h"

#define DIR "tests/fixtures/torch/"

static char tmp_dir[64];

static PickleValue *get(PickleValue *dict, const char *key) { return pickle_dict_get(dict, key); }

static int contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

static void check_views(const char *file) {
    char name[160];
    TorchFile tf;
    int rc = torch_file_open(&tf, file);
    snprintf(name, sizeof name, "%s opens", file);
    CHECK(name, rc == 0, "%s", moco_last_error());
    if (rc) return;
    PickleValue *tensors = get(tf.root, "tensors");
    CHECK("views: 'tensors' is an OrderedDict", tensors && tensors->kind == PICKLE_DICT && (tensors->flags & PICKLE_ORDERED),
          "kind %s", tensors ? pickle_kind_name(tensors->kind) : "missing");
    if (!tensors) {
        torch_file_close(&tf);
        return;
    }
    int compared = 0, exact = 1;
    char worst[64] = "";
    for (size_t i = 0; i + 1 < tensors->u.seq.len; i += 2) {
        PickleValue *k = tensors->u.seq.items[i], *v = tensors->u.seq.items[i + 1];
        if (v->kind != PICKLE_OBJECT || v->u.object.type != TORCH_OBJECT_TENSOR) {
            exact = 0;
            snprintf(worst, sizeof worst, "%s is not a tensor", k->u.str.data);
            continue;
        }
        char npy[200];
        snprintf(npy, sizeof npy, DIR "views.%s.npy", k->u.str.data);
        Tensor *want = tensor_load_npy(npy);
        Tensor *got = torch_file_read_tensor(&tf, v->u.object.ptr, k->u.str.data);
        if (!want || !got || !tensor_same_shape(want, got) ||
            (got->numel && check_max_abs_diff(got->data, want->data, (long)got->numel) != 0)) {
            exact = 0;
            snprintf(worst, sizeof worst, "%s differs (%s)", k->u.str.data, got ? "values/shape" : moco_last_error());
        }
        compared++;
        tensor_free(want);
        tensor_free(got);
    }
    snprintf(name, sizeof name, "%s: 19 tensors equal PyTorch's exactly", file);
    CHECK(name, exact && compared == 19, "%d compared; %s", compared, worst);

    TorchTensor *a = get(tensors, "a")->u.object.ptr, *at = get(tensors, "a_t")->u.object.ptr;
    TorchTensor *col = get(tensors, "a_col")->u.object.ptr, *ex = get(tensors, "expanded")->u.object.ptr;
    snprintf(name, sizeof name, "%s: views share one storage, with PyTorch's offsets and strides", file);
    CHECK(name, a->storage == at->storage && a->storage == col->storage && at->stride[0] == 1 && at->stride[1] == 4 &&
                    col->offset == 2 && col->stride[0] == 4 && ex->stride[0] == 0 && ex->stride[1] == 0,
          "a/a_t/a_col storages %p %p %p", (void *)a->storage, (void *)at->storage, (void *)col->storage);
    TorchTensor *h = get(tensors, "half")->u.object.ptr, *l = get(tensors, "long")->u.object.ptr;
    TorchTensor *bf = get(tensors, "bf16")->u.object.ptr, *b = get(tensors, "bool")->u.object.ptr;
    snprintf(name, sizeof name, "%s: storage dtypes F16, I64, BF16, BOOL", file);
    CHECK(name, h->storage->dtype == TORCH_F16 && l->storage->dtype == TORCH_I64 && bf->storage->dtype == TORCH_BF16 &&
                    b->storage->dtype == TORCH_BOOL, "%s %s", torch_dtype_name(h->storage->dtype),
          torch_dtype_name(l->storage->dtype));

    PickleValue *epoch = get(tf.root, "epoch"), *lr = get(tf.root, "lr"), *arch = get(tf.root, "arch");
    PickleValue *none = get(tf.root, "none"), *big = get(tf.root, "big"), *nested = get(tf.root, "nested");
    snprintf(name, sizeof name, "%s: plain entries (int, float, str, None, 2^40, nested list)", file);
    CHECK(name, epoch && epoch->kind == PICKLE_INT && epoch->u.integer == 7 && lr && lr->kind == PICKLE_FLOAT &&
                    lr->u.real == 0.03 && arch && !strcmp(arch->u.str.data, "resnet50") && none &&
                    none->kind == PICKLE_NONE && big && big->u.integer == (int64_t)1 << 40 && nested &&
                    nested->kind == PICKLE_LIST && nested->u.seq.len == 3 &&
                    nested->u.seq.items[1]->kind == PICKLE_TUPLE,
          "epoch %p lr %p", (void *)epoch, (void *)lr);
    torch_file_close(&tf);
}

/* The file must be refused, with its name and `part` in the message. */
static void check_refused(const char *file, const char *part) {
    char path[200], name[260];
    snprintf(path, sizeof path, DIR "%s", file);
    TorchFile tf;
    int rc = torch_file_open(&tf, path);
    const char *msg = moco_last_error();
    snprintf(name, sizeof name, "%s is refused: ...%s...", file, part);
    CHECK(name, rc == -1 && contains(msg, path) && contains(msg, part), "rc %d, message \"%s\"", rc, msg);
    if (rc == 0) torch_file_close(&tf);
}

/* Opens path and reads every tensor; the outcome must be consistent (no crash is the test). */
static int open_and_read(const char *path) {
    TorchFile tf;
    if (torch_file_open(&tf, path)) return -1;
    int status = 0;
    for (size_t i = 0; i < tf.tensor_count; i++) {
        Tensor *t = torch_file_read_tensor(&tf, tf.tensors[i], NULL);
        if (!t) status = -1;
        tensor_free(t);
    }
    torch_file_close(&tf);
    return status;
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size + 1);
    *n = fread(buf, 1, (size_t)size, f);
    fclose(f);
    return buf;
}

/* Every truncation and `mutations` random corruptions of a file, from memory (fmemopen). */
static void check_damaged(const char *file, int mutations) {
    size_t n;
    unsigned char *good = slurp(file, &n);
    if (!good) {
        CHECK("damaged copies: fixture readable", 0, "%s", file);
        return;
    }
    unsigned char *copy = malloc(n);
    int refused = 0, loaded = 0, named = 1;
    for (size_t len = 0; len < n; len += 1 + len / 64) {
        FILE *f = fmemopen(good, len ? len : 1, "rb");
        TorchFile tf;
        if (len == 0 || torch_file_open_stream(&tf, f, "cut") != 0) {
            refused++;
            if (len && !contains(moco_last_error(), "cut")) named = 0;
            if (len == 0) fclose(f);
        } else {
            loaded++;
            torch_file_close(&tf);
        }
    }
    Rng rng;
    rng_seed(&rng, 7, 0);
    for (int m = 0; m < mutations; m++) {
        memcpy(copy, good, n);
        int flips = 1 + (int)rng_below(&rng, 4);
        for (int k = 0; k < flips; k++) copy[rng_below(&rng, (uint32_t)n)] = (unsigned char)rng_below(&rng, 256);
        FILE *f = fmemopen(copy, n, "rb");
        TorchFile tf;
        if (torch_file_open_stream(&tf, f, "mutant")) {
            refused++;
            if (!contains(moco_last_error(), "mutant")) named = 0;
            continue;
        }
        for (size_t i = 0; i < tf.tensor_count; i++) tensor_free(torch_file_read_tensor(&tf, tf.tensors[i], NULL));
        torch_file_close(&tf);
        loaded++;
    }
    char name[200];
    snprintf(name, sizeof name, "%s: truncations and %d corruptions: errors naming the file or loads, no crash",
             file, mutations);
    CHECK(name, named && refused > 0, "%d refused, %d loaded, named %d", refused, loaded, named);
    free(copy);
    free(good);
}

static void test_writers(void) {
    char path[160];
    snprintf(path, sizeof path, "%s/w.pth", tmp_dir);
    int64_t s23[] = {2, 3}, s0[] = {0, 4};
    float v23[] = {1.5f, -2, 0.25f, 1e-3f, 65504, -7};
    float ints[] = {0, -5, 16777216, 3, 255, 1};
    Tensor *a = tensor_from_data(2, s23, v23), *b = tensor_from_data(2, s23, ints);
    Tensor *scalar = tensor_full(0, NULL, 3.0f), *empty = tensor_zeros(2, s0);
    Tensor *bits = tensor_from_data(1, (int64_t[]){2}, (float[]){1, 0});
    Tensor *bytes = tensor_from_data(1, (int64_t[]){3}, (float[]){0, 200, 255});
    TorchSaveItem items[] = {
        {"a.f32", a, TORCH_F32},   {"a.f64", a, TORCH_F64},        {"a.f16", a, TORCH_F16},
        {"b.i64", b, TORCH_I64},   {"b.i32", b, TORCH_I32},        {"scalar", scalar, TORCH_F32},
        {"empty", empty, TORCH_F32}, {"bits", bits, TORCH_BOOL},   {"bytes", bytes, TORCH_U8},
    };
    size_t count = sizeof items / sizeof items[0];
    int rc = torch_save_pth(path, items, count);
    CHECK("torch_save_pth writes every dtype", rc == 0, "%s", moco_last_error());
    TorchFile tf;
    rc = rc ? -1 : torch_file_open(&tf, path);
    CHECK("our .pth opens with our reader (zip, OrderedDict)", rc == 0 && tf.format == TORCH_FORMAT_ZIP &&
                                                                   (tf.root->flags & PICKLE_ORDERED) &&
                                                                   tf.root->u.seq.len == 2 * count,
          "%s", moco_last_error());
    if (rc == 0) {
        int same = 1;
        for (size_t i = 0; i < count; i++) {
            PickleValue *k = tf.root->u.seq.items[2 * i], *v = tf.root->u.seq.items[2 * i + 1];
            TorchTensor *t = v->u.object.ptr;
            Tensor *x = torch_file_read_tensor(&tf, t, k->u.str.data);
            if (strcmp(k->u.str.data, items[i].name) || t->storage->dtype != items[i].dtype || !x ||
                !tensor_same_shape(x, items[i].tensor) ||
                (x->numel && check_max_abs_diff(x->data, items[i].tensor->data, (long)x->numel) > (i == 2 ? 1e-3 : 0)))
                same = 0;
            tensor_free(x);
        }
        CHECK("the round trip keeps names, order, dtypes, shapes and values (F16 within its rounding)", same, "differs");
        torch_file_close(&tf);
    }
    /* values that do not fit: refused, nothing written */
    char bad[160];
    snprintf(bad, sizeof bad, "%s/bad.pth", tmp_dir);
    TorchSaveItem half_int = {"a", a, TORCH_I64}, big_byte = {"b", b, TORCH_U8};
    int r1 = torch_save_pth(bad, &half_int, 1);
    int m1 = contains(moco_last_error(), "is not an int64") && contains(moco_last_error(), bad);
    int r2 = torch_save_detectron2(bad, &big_byte, 1, "MOCO");
    int m2 = contains(moco_last_error(), "is not a uint8");
    CHECK("non-integral int64 and out-of-range uint8 are refused before writing", r1 == -1 && r2 == -1 && m1 && m2 &&
                                                                                     access(bad, F_OK) != 0,
          "%d %d: %s", r1, r2, moco_last_error());
    TorchSaveItem twice[] = {{"x", a, TORCH_F32}, {"x", a, TORCH_F32}};
    CHECK("a repeated name is refused", torch_save_pth(bad, twice, 2) == -1 && contains(moco_last_error(), "twice"),
          "%s", moco_last_error());
    snprintf(bad, sizeof bad, "%s/no/such/dir.pth", tmp_dir);
    CHECK("an unwritable path is a clean error", torch_save_pth(bad, items, 1) == -1 && contains(moco_last_error(), bad),
          "%s", moco_last_error());
    tensor_free(a);
    tensor_free(b);
    tensor_free(scalar);
    tensor_free(empty);
    tensor_free(bits);
    tensor_free(bytes);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_torchfile.XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    check_views(DIR "views_zip.pth");
    check_views(DIR "views_legacy.pth");
    check_views(DIR "views_zip64.pth");

    TorchFile tf;
    CHECK("an official-MoCo-shaped legacy checkpoint opens", torch_file_open(&tf, DIR "moco_v2_tiny.pth.tar") == 0 &&
                                                                 tf.format == TORCH_FORMAT_LEGACY,
          "%s", moco_last_error());
    if (tf.root) {
        PickleValue *sd = get(tf.root, "state_dict"), *opt = get(tf.root, "optimizer");
        PickleValue *groups = opt ? get(opt, "param_groups") : NULL;
        CHECK("... with its state_dict, epoch, arch and optimizer", sd && (sd->flags & PICKLE_ORDERED) &&
                                                                       get(sd, "module.encoder_q.conv1.weight") &&
                                                                       get(tf.root, "epoch")->u.integer == 200 &&
                                                                       groups && groups->kind == PICKLE_LIST,
              "missing entries");
        torch_file_close(&tf);
    }
    CHECK("torch_file_format tells the layouts apart", torch_file_format(DIR "moco_v1_tiny.pth.tar") == TORCH_FORMAT_ZIP &&
                                                           torch_file_format(DIR "moco_v2_tiny.pth.tar") == TORCH_FORMAT_LEGACY &&
                                                           torch_file_format(DIR "input.npy") == TORCH_FORMAT_NONE,
          "%s", moco_last_error());

    check_refused("hostile_os_system.pth", "global 'os.system' is not allowed");
    check_refused("hostile_os_system_legacy.pth", "global 'os.system' is not allowed");
    check_refused("hostile_eval.pth", "global 'builtins.eval' is not allowed");
    check_refused("hostile_stack_global.pth", "global 'os.popen' is not allowed");
    check_refused("hostile_module.pth", "global 'torch.nn.modules.linear.Linear' is not allowed");
    check_refused("hostile_reduce_storage.pth", "REDUCE of FloatStorage is not allowed");
    check_refused("hostile_reduce_string.pth", "REDUCE of a str");
    check_refused("hostile_build_list.pth", "BUILD on a list is not allowed");
    check_refused("hostile_inst.pth", "opcode INST is not allowed");
    check_refused("hostile_newobj.pth", "opcode NEWOBJ is not allowed");
    check_refused("hostile_memo.pth", "memo index");
    check_refused("hostile_marks.pth", "nested MARKs");
    check_refused("hostile_long.pth", "larger than 64 bits");
    check_refused("hostile_string.pth", "bytes are left");
    check_refused("bad_tensor_past_storage.pth", "the storage is too short");
    check_refused("bad_storage_short.pth", "shorter than its 4 elements");
    check_refused("bad_storage_short_legacy.pth", "holds 3 elements in the file, 4 in the pickle");
    check_refused("bad_truncated_storage_legacy.pth", "runs past the end of the file");
    check_refused("bad_expand.pth", "the tensors add up to more than");
    check_refused("bad_missing_storage.pth", "storage '7' has no archive/data/7 entry");
    check_refused("bad_zip_entry_outside.pth", "outside the file");
    check_refused("bad_zip_directory.pth", "outside the file");
    check_refused("bad_truncated_zip.pth", "end-of-central-directory");
    check_refused("bad_truncated_legacy.pth", "truncated");
    check_refused("input.npy", "not a torch.save file");
    check_refused("no_such_file.pth", "cannot open");

    CHECK("deeply nested lists are data: the C reader opens them without recursion",
          torch_file_open(&tf, DIR "deep_nesting.pth") == 0, "%s", moco_last_error());
    if (tf.root) torch_file_close(&tf);
    int rc = torch_file_open(&tf, DIR "bad_inexact_int64.pth");
    Tensor *t = rc == 0 && tf.tensor_count == 1 ? torch_file_read_tensor(&tf, tf.tensors[0], "n") : NULL;
    CHECK("an int64 float32 cannot hold is an error naming the tensor", rc == 0 && !t &&
                                                                            contains(moco_last_error(), "n: I64 value 16777217"),
          "%s", moco_last_error());
    if (rc == 0) torch_file_close(&tf);

    check_damaged(DIR "views_zip.pth", 3000);
    check_damaged(DIR "views_legacy.pth", 3000);
    CHECK("the intact fixtures still read after the damage tests", open_and_read(DIR "views_zip.pth") == 0, "%s",
          moco_last_error());

    test_writers();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    CHECK_DONE();
}
