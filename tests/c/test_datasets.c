/* tests/c/test_datasets.c: the datasets for collections without class folders
 * (core/data/dataset.h): ImageFiles (an ImageFolder without classes) and FileList (a list
 * of paths with optional labels), with their order, labels, bad input and the loader; and
 * CIFAR's Python version, which is recognised and refused.  Fixture trees are made in a temporary directory here, except the
 * torchvision-checked ImageFolder tree of tests/fixtures/data/folder. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "error.h"

#define FIXTURES "tests/fixtures/data"

static char tmpdir[] = "/tmp/moco_test_datasets_XXXXXX";

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* An 8x8 PNG whose every byte is `value`. */
static int write_png(const char *path, int value) {
    Image img;
    if (image_alloc(&img, 8, 8, 3)) return -1;
    memset(img.data, value, 8 * 8 * 3);
    int rc = image_save_png(&img, path);
    image_free(&img);
    return rc;
}

/* tmpdir/<name>, and the directories it names, created. */
static void make_dirs(const char *root, const char *const *dirs, int n) {
    char path[1024];
    mkdir(root, 0755);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        mkdir(path, 0755);
    }
}

/* ------------------------------------------------------------ ImageFiles */

static void test_image_files_fixture(void) {
    /* The torchvision fixture's class names are not prefixes of each other, so walking the
     * whole tree as sorted(os.walk(root)) gives ImageFolder's sample order. */
    Dataset *folder = dataset_image_folder(FIXTURES "/folder", 3, NULL);
    ImageFolderReport report;
    Dataset *files = dataset_image_files(FIXTURES "/folder", 3, &report);
    CHECK("ImageFiles opens the fixture tree", folder && files, "%s", moco_last_error());
    if (!folder || !files) return;
    CHECK("ImageFiles finds every image", dataset_length(files) == dataset_length(folder), "%lld vs %lld",
          (long long)dataset_length(files), (long long)dataset_length(folder));
    int same = 1, labels = 1;
    for (int64_t i = 0; i < dataset_length(files) && i < dataset_length(folder); i++) {
        if (strcmp(dataset_sample_path(files, i), dataset_sample_path(folder, i))) same = 0;
        if (dataset_label(files, i) != -1) labels = 0;
    }
    CHECK("ImageFiles order is ImageFolder's on this tree", same, "order differs");
    CHECK("ImageFiles labels are -1", labels, "a label is not -1");
    CHECK("ImageFiles has no classes", dataset_num_classes(files) == 0 && dataset_class_name(files, 0) == NULL,
          "%d classes", dataset_num_classes(files));
    CHECK("ImageFiles counts skipped files", report.skipped_files == 2 && report.first_skipped[0],
          "skipped %lld", (long long)report.skipped_files);
    Image img;
    int64_t label = 0;
    int rc = dataset_get(files, 0, &img, &label);
    CHECK("ImageFiles decodes as RGB with label -1", rc == 0 && img.channels == 3 && label == -1, "rc %d: %s", rc,
          moco_last_error());
    if (rc == 0) image_free(&img);
    CHECK("ImageFiles name", strstr(files->name, "ImageFiles(") == files->name, "%s", files->name);
    dataset_release(folder);
    dataset_release(files);
}

static void test_image_files_order(void) {
    char root[512], path[1024];
    snprintf(root, sizeof root, "%s/flat", tmpdir);
    const char *const dirs[] = {"a", "a b", "a/deeper", "empty"};
    make_dirs(root, dirs, 4);
    /* sorted(os.walk(root)): the directories by their whole path ("a" < "a b" < "a/deeper",
     * since ' ' < '/'), root's own files first; files by name, byte order ("B" < "a"). */
    const char *const expected[] = {"B.JPEG", "z.png", "a/x.png", "a b/y.PNG", "a/deeper/w.webp"};
    const char *const written[] = {"z.png", "B.JPEG", "a/deeper/w.webp", "a b/y.PNG", "a/x.png"};
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", root, written[i]);
        write_file(path, "x", 1);
    }
    snprintf(path, sizeof path, "%s/notes.txt", root);
    write_file(path, "x", 1);
    ImageFolderReport report;
    Dataset *ds = dataset_image_files(root, 3, &report);
    CHECK("ImageFiles opens a tree without class folders", ds != NULL, "%s", moco_last_error());
    if (!ds) return;
    CHECK("ImageFiles length", dataset_length(ds) == 5, "got %lld", (long long)dataset_length(ds));
    int ok = dataset_length(ds) == 5, bad = -1;
    for (int i = 0; ok && i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", root, expected[i]);
        if (strcmp(dataset_sample_path(ds, i), path)) ok = 0, bad = i;
    }
    CHECK("ImageFiles order is sorted(os.walk)", ok, "sample %d is %s", bad, bad >= 0 ? dataset_sample_path(ds, bad) : "");
    CHECK("ImageFiles skips and reports non-images", report.skipped_files == 1 && strstr(report.first_skipped, "notes.txt"),
          "skipped %lld (%s)", (long long)report.skipped_files, report.first_skipped);
    Image img;
    int64_t label;
    int rc = dataset_get(ds, 0, &img, &label);
    CHECK("ImageFiles decoding failure names the file", rc == -1 && strstr(moco_last_error(), "B.JPEG"), "rc %d: %s",
          rc, moco_last_error());
    dataset_release(ds);
}

static void test_image_files_errors(void) {
    Dataset *ds = dataset_image_files("/nonexistent/moco/images", 3, NULL);
    CHECK("ImageFiles missing root fails naming it", ds == NULL && strstr(moco_last_error(), "/nonexistent/moco/images"),
          "message: %s", moco_last_error());
    char root[512], path[1024];
    snprintf(root, sizeof root, "%s/no_images", tmpdir);
    const char *const dirs[] = {"sub"};
    make_dirs(root, dirs, 1);
    ds = dataset_image_files(root, 3, NULL);
    CHECK("ImageFiles empty root fails naming it", ds == NULL && strstr(moco_last_error(), root) &&
          strstr(moco_last_error(), "no image file"), "message: %s", moco_last_error());
    snprintf(path, sizeof path, "%s/sub/readme.md", root);
    write_file(path, "x", 1);
    ds = dataset_image_files(root, 3, NULL);
    CHECK("ImageFiles without images names a skipped file", ds == NULL && strstr(moco_last_error(), "readme.md"),
          "message: %s", moco_last_error());
    ds = dataset_image_files(FIXTURES "/folder", 2, NULL);
    CHECK("ImageFiles rejects channels=2", ds == NULL && strstr(moco_last_error(), "channels"), "message: %s",
          moco_last_error());
}

/* The loader's C workers decode and augment ImageFiles samples; labels come out as -1. */
static void test_image_files_loader(void) {
    char root[512], path[1024];
    snprintf(root, sizeof root, "%s/photos", tmpdir);
    make_dirs(root, NULL, 0);
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%d.png", root, i);
        write_png(path, 10 * i);
    }
    Dataset *ds = dataset_image_files(root, 3, NULL);
    if (!ds) {
        CHECK("ImageFiles for the loader", 0, "%s", moco_last_error());
        return;
    }
    const double scale[2] = {0.5, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    Transform *items[3] = {transform_random_resized_crop(4, 4, scale, ratio), transform_random_horizontal_flip(0.5),
                           transform_to_tensor()};
    Transform *t = transform_compose(items, 3);
    for (int i = 0; i < 3; i++) transform_free(items[i]);
    LoaderOptions o = {.batch_size = 3, .workers = 2, .prefetch = 2, .seed = 7, .on_error = LOADER_RAISE};
    Loader *l = loader_create(ds, &o, t, 1, LOADER_TENSORS);
    LoaderBatch b;
    int batches = 0, labels = 1, pixels = 1, rc;
    while (l && (rc = loader_next(l, &b)) == 1) {
        batches++;
        for (int64_t j = 0; j < b.labels->numel; j++) labels &= b.labels->data[j] == -1.0f;
        /* Sample i is uniformly 10 * i: every pixel of both crops must say so. */
        for (int64_t j = 0; j < b.images->numel; j++) {
            int64_t row = j / (b.images->numel / b.labels->numel);
            float want = (float)(10 * (3 * (batches - 1) + row)) / 255.0f;
            if (fabsf(b.images->data[j] - want) > 1e-6f || fabsf(b.images_k->data[j] - want) > 1e-6f) pixels = 0;
        }
        tensor_free(b.images);
        tensor_free(b.images_k);
        tensor_free(b.labels);
    }
    CHECK("the loader runs over ImageFiles with TwoCrops", l && batches == 2, "%d batches: %s", batches,
          moco_last_error());
    CHECK("ImageFiles batches carry label -1", labels, "a label is not -1");
    CHECK("ImageFiles batches hold the decoded, cropped pixels", pixels, "a pixel differs");
    loader_close(l);
    transform_free(t);
    dataset_release(ds);
}

/* ------------------------------------------------------------ FileList */

/* Opens a list with `text` as tmpdir/lists/<name> (root: that directory). */
static Dataset *open_list(const char *name, const char *text, const char *root, int delimiter, char *list, size_t size) {
    snprintf(list, size, "%s/lists/%s", tmpdir, name);
    write_file(list, text, strlen(text));
    return dataset_file_list(list, root, 3, delimiter);
}

static void make_list_tree(void) {
    char root[512], path[1024];
    snprintf(root, sizeof root, "%s/lists", tmpdir);
    const char *const dirs[] = {"img", "img/sub", "img/a dir"};
    make_dirs(root, dirs, 3);
    const char *const files[] = {"img/0.png", "img/1.png", "img/sub/2.png", "img/a dir/3.png"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        write_png(path, 20 * i);
    }
}

/* The samples' paths relative to tmpdir/lists and their labels, "path=label ...". */
static void describe(const Dataset *ds, char *out, size_t size) {
    size_t prefix = strlen(tmpdir) + strlen("/lists/"), n = 0;
    out[0] = 0;
    for (int64_t i = 0; i < dataset_length(ds) && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%s=%lld", i ? " " : "", dataset_sample_path(ds, i) + prefix,
                              (long long)dataset_label(ds, i));
}

static void test_file_list_formats(void) {
    make_list_tree();
    char list[700], got[2048];
    struct {
        const char *name, *text, *want;
        int delimiter;
    } cases[] = {
        {"plain.txt", "img/1.png\nimg/0.png\n\n# a comment\nimg/sub/2.png", "img/1.png=-1 img/0.png=-1 img/sub/2.png=-1", 0},
        {"labels.txt", "  img/0.png   7\nimg/sub/2.png\t0\r\n#x 1\n", "img/0.png=7 img/sub/2.png=0", 0},
        {"with_header.csv", "\xEF\xBB\xBFpath,label\r\nimg/a dir/3.png, 3\r\n./img/0.png,2147483647\r\n",
         "img/a dir/3.png=3 ./img/0.png=2147483647", 0},
        {"no_labels.csv", "path\nimg/a dir/3.png\n", "img/a dir/3.png=-1", ','},
        {"forced_space.txt", "img/0.png 1\n", "img/0.png=1", ' '},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        Dataset *ds = open_list(cases[c].name, cases[c].text, NULL, cases[c].delimiter, list, sizeof list);
        char name[128];
        snprintf(name, sizeof name, "FileList reads %s", cases[c].name);
        if (!ds) {
            CHECK(name, 0, "%s", moco_last_error());
            continue;
        }
        describe(ds, got, sizeof got);
        CHECK(name, !strcmp(got, cases[c].want), "got \"%s\", expected \"%s\"", got, cases[c].want);
        dataset_release(ds);
    }
    /* root given: paths are relative to it, not to the list's directory. */
    char root[600];
    snprintf(root, sizeof root, "%s/lists/img", tmpdir);
    Dataset *ds = open_list("rooted.txt", "sub/2.png 5\n", root, 0, list, sizeof list);
    CHECK("FileList with a root", ds && dataset_length(ds) == 1 && strstr(dataset_sample_path(ds, 0), "/img/sub/2.png"),
          "%s", ds ? dataset_sample_path(ds, 0) : moco_last_error());
    Image img;
    int64_t label = 0;
    int rc = ds ? dataset_get(ds, 0, &img, &label) : -1;
    CHECK("FileList decodes the listed image", rc == 0 && label == 5 && img.channels == 3 && img.data[0] == 40,
          "rc %d, label %lld: %s", rc, (long long)label, moco_last_error());
    if (rc == 0) image_free(&img);
    CHECK("FileList has no classes", ds && dataset_num_classes(ds) == 0, "classes");
    dataset_release(ds);
}

static void test_file_list_errors(void) {
    char list[700];
    struct {
        const char *name, *text, *message;
    } cases[] = {
        {"missing.txt", "img/0.png\nimg/nothere.png\n", ":2: listed file"},
        {"dir.txt", "img/sub\n", ":1: listed file"},
        {"negative.txt", "img/0.png 1\nimg/1.png -1\n", ":2: label \"-1\" is not a non-negative integer"},
        {"float.csv", "img/0.png,1.5\n", ":1: label \"1.5\""},
        {"huge.txt", "img/0.png 2147483648\n", ":1: label \"2147483648\""},
        {"empty_label.csv", "img/0.png,\n", ":1: label \"\""},
        {"absolute.txt", "# list\n/etc/passwd\n", ":2: \"/etc/passwd\" is an absolute path"},
        {"climb.txt", "img/0.png\nimg/../../lists/img/0.png\n", ":2: \"img/../../lists/img/0.png\" is a path with a '..'"},
        {"climb_end.txt", "img/..\n", ":1: \"img/..\" is a path with a '..'"},
        {"mixed.txt", "img/0.png 1\n\nimg/1.png\n", ":3: no label, but line 1 has one"},
        {"mixed2.txt", "img/0.png\nimg/1.png 1\n", ":2: a label, but line 1 has none"},
        {"fields.txt", "img/a dir/3.png 1\n", ":1: expected a path and an optional label, found 3 fields"},
        {"quoted.csv", "\"img/0.png\",1\n", ":1: quoted CSV fields"},
        {"nul.txt", "img/0.png\n\0img/1.png\n", ":2: the line holds a NUL byte"},
        {"only_comments.txt", "# nothing\n\n", "no samples"},
        {"header_only.csv", "path,label\n", "no samples"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *text = cases[c].text;
        /* nul.txt holds a NUL: its length is written out. */
        size_t len = !strcmp(cases[c].name, "nul.txt") ? 21 : strlen(text);
        snprintf(list, sizeof list, "%s/lists/%s", tmpdir, cases[c].name);
        write_file(list, text, len);
        Dataset *ds = dataset_file_list(list, NULL, 3, 0);
        char name[128], want[800];
        snprintf(name, sizeof name, "FileList refuses %s, naming the file and line", cases[c].name);
        snprintf(want, sizeof want, "%s%s", cases[c].message[0] == ':' ? list : "", cases[c].message);
        CHECK(name, ds == NULL && strstr(moco_last_error(), want), "got %s; expected a message with %s",
              ds ? "a dataset" : moco_last_error(), want);
        dataset_release(ds);
    }
    Dataset *ds = dataset_file_list("/nonexistent/moco/list.txt", "/tmp", 3, 0);
    CHECK("FileList missing list names it", !ds && strstr(moco_last_error(), "/nonexistent/moco/list.txt"), "%s",
          moco_last_error());
    ds = open_list("badroot.txt", "img/0.png\n", "/nonexistent/moco/root", 0, list, sizeof list);
    CHECK("FileList missing root names it", !ds && strstr(moco_last_error(), "/nonexistent/moco/root"), "%s",
          moco_last_error());
    ds = open_list("chan.txt", "img/0.png\n", NULL, 0, list, sizeof list);
    dataset_release(ds);
    ds = dataset_file_list(list, NULL, 2, 0);
    CHECK("FileList rejects channels=2", !ds && strstr(moco_last_error(), "channels"), "%s", moco_last_error());
    ds = dataset_file_list(list, NULL, 3, ';');
    CHECK("FileList rejects another delimiter", !ds && strstr(moco_last_error(), "delimiter"), "%s", moco_last_error());
    /* Above the size bound: a sparse file, refused before anything is read. */
    snprintf(list, sizeof list, "%s/lists/big.txt", tmpdir);
    FILE *f = fopen(list, "wb");
    int sparse = f && ftruncate(fileno(f), (off_t)FILE_LIST_MAX_BYTES + 1) == 0;
    if (f) fclose(f);
    ds = sparse ? dataset_file_list(list, NULL, 3, 0) : NULL;
    CHECK("FileList refuses a list above 1 GB", sparse && !ds && strstr(moco_last_error(), "big.txt") &&
          strstr(moco_last_error(), "larger than"), "%s", moco_last_error());
    unlink(list);
}

/* The loader decodes and augments FileList samples in its workers, with the listed labels. */
static void test_file_list_loader(void) {
    char list[700];
    Dataset *ds = open_list("loader.csv", "img/0.png,4\nimg/1.png,3\nimg/sub/2.png,2\nimg/a dir/3.png,1\n", NULL, 0,
                            list, sizeof list);
    if (!ds) {
        CHECK("FileList for the loader", 0, "%s", moco_last_error());
        return;
    }
    const double scale[2] = {0.5, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    Transform *items[2] = {transform_random_resized_crop(4, 4, scale, ratio), transform_to_tensor()};
    Transform *t = transform_compose(items, 2);
    for (int i = 0; i < 2; i++) transform_free(items[i]);
    LoaderOptions o = {.batch_size = 2, .workers = 2, .prefetch = 2, .shuffle = 1, .seed = 11, .on_error = LOADER_RAISE};
    Loader *l = loader_create(ds, &o, t, 0, LOADER_TENSORS);
    LoaderBatch b;
    int seen = 0, match = 1;
    while (l && loader_next(l, &b) == 1) {
        /* Sample i is uniformly 20 * i and labelled 4 - i. */
        int64_t per = b.images->numel / b.labels->numel;
        for (int64_t r = 0; r < b.labels->numel; r++, seen++) {
            int64_t i = b.indices[r];
            if (b.labels->data[r] != (float)(4 - i)) match = 0;
            for (int64_t j = 0; j < per; j++)
                if (fabsf(b.images->data[r * per + j] - (float)(20 * i) / 255.0f) > 1e-6f) match = 0;
        }
        tensor_free(b.images);
        tensor_free(b.labels);
    }
    CHECK("the loader covers a FileList epoch", seen == 4, "%d samples: %s", seen, moco_last_error());
    CHECK("FileList batches: listed labels and decoded pixels", match, "a label or pixel differs");
    loader_close(l);
    transform_free(t);
    dataset_release(ds);
}

/* ------------------------------------------------------------ CIFAR, Python version */

/* torchvision downloads CIFAR's Python version (pickles): it is recognised and refused with
 * the binary version's address, never unpickled. */
static void test_cifar_python_version(void) {
    static const char pickle[] = "\x80\x02}q\x00(X\x06\x00\x00\x00labelsq\x01]q\x02.";
    char root[512], path[1024];
    snprintf(root, sizeof root, "%s/torchvision_cifar", tmpdir);
    const char *const dirs[] = {"cifar-10-batches-py", "cifar-100-python", "flat10", "flat100"};
    make_dirs(root, dirs, 4);
    const char *const files[] = {"cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch",
                                 "cifar-100-python/train", "flat10/data_batch_1", "flat100/test"};
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        write_file(path, pickle, sizeof pickle - 1);
    }
    struct {
        const char *sub;
        int cifar100, train;
    } cases[] = {{"", 0, 1}, {"cifar-10-batches-py", 0, 0}, {"flat10", 0, 1}, {"cifar-10-batches-py/data_batch_1", 0, 1},
                 {"", 1, 0}, {"cifar-100-python", 1, 1}, {"flat100", 1, 0}, {"cifar-100-python/train", 1, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        snprintf(path, sizeof path, "%s/%s", root, cases[c].sub);
        Dataset *ds = cases[c].cifar100 ? dataset_cifar100(path, cases[c].train) : dataset_cifar10(path, cases[c].train);
        const char *url = cases[c].cifar100 ? "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
                                            : "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
        char name[200];
        snprintf(name, sizeof name, "CIFAR%s at %s: says Python version, where to get the binary one",
                 cases[c].cifar100 ? "100" : "10", cases[c].sub[0] ? cases[c].sub : "the download root");
        CHECK(name, !ds && strstr(moco_last_error(), "Python (pickle) version") && strstr(moco_last_error(), url),
              "%s", ds ? "opened" : moco_last_error());
        dataset_release(ds);
    }
    /* Neither version: the usual message about the missing binary files. */
    snprintf(path, sizeof path, "%s/no_cifar", tmpdir);
    mkdir(path, 0755);
    Dataset *ds = dataset_cifar10(path, 1);
    CHECK("CIFAR10 in an empty directory: the missing-file message", !ds && strstr(moco_last_error(), "no such file") &&
          !strstr(moco_last_error(), "Python"), "%s", moco_last_error());
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_image_files_fixture();
    test_image_files_order();
    test_image_files_errors();
    test_image_files_loader();
    test_file_list_formats();
    test_file_list_errors();
    test_file_list_loader();
    test_cifar_python_version();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_failures ? 1 : 0;
}
