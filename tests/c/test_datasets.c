/* tests/c/test_datasets.c: the datasets for collections without class folders
 * (core/data/dataset.h): ImageFiles (an ImageFolder without classes), with their order,
 * labels and bad input.  Fixture trees are made in a temporary directory here, except the
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
    LoaderOptions o = {3, 2, 2, 0, 0, 7, LOADER_RAISE};
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

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_image_files_fixture();
    test_image_files_order();
    test_image_files_errors();
    test_image_files_loader();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_failures ? 1 : 0;
}
