/* tests/c/test_data.c: datasets (core/data/dataset.h) and the parallel loader
 * (core/data/loader.h), without Lua.
 *
 * Reference values come from torchvision (tests/make_fixtures_data.py writes
 * tests/fixtures/data/); CIFAR and IDX files are tiny synthetic ones written here.  The
 * loader tests use a synthetic in-memory dataset whose pixels encode the sample index, so
 * the order, the contents and the failures of every batch can be checked exactly. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "error.h"

#define FIXTURES "tests/fixtures/data"

static char tmpdir[] = "/tmp/moco_test_data_XXXXXX";

/* ------------------------------------------------------------ helpers */

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    fclose(f);
    return n;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long long image_sum(const Image *img) {
    long long s = 0;
    for (size_t i = 0; i < (size_t)img->width * img->height * img->channels; i++) s += img->data[i];
    return s;
}

/* ------------------------------------------------------------ a synthetic dataset
 * Sample i: a 3x4 RGB image whose pixel p of channel c is (i * 7 + p * 3 + c) mod 256, and
 * label i mod 3.  Optionally sleeps in get (to test waiting) or fails for one index. */

typedef struct SynthDataset {
    Dataset base;
    int sleep_ms;
    int64_t fail_index;
} SynthDataset;

static int synth_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    const SynthDataset *s = (const SynthDataset *)ds;
    if (s->sleep_ms) usleep((useconds_t)s->sleep_ms * 1000);
    if (index == s->fail_index) return moco_error("synthetic failure at sample %lld", (long long)index);
    if (image_alloc(out, 4, 3, 3)) return -1;
    for (int p = 0; p < 12; p++)
        for (int c = 0; c < 3; c++) out->data[p * 3 + c] = (uint8_t)((index * 7 + p * 3 + c) % 256);
    *label = index % 3;
    return 0;
}

static int64_t synth_label(const Dataset *ds, int64_t index) {
    (void)ds;
    return index % 3;
}

static const DatasetOps synth_ops = {.get = synth_get, .label = synth_label};

static Dataset *synth_new(int64_t n, int sleep_ms, int64_t fail_index) {
    SynthDataset *s = (SynthDataset *)dataset_alloc(sizeof *s, &synth_ops, "Synthetic");
    const char *names[3] = {"zero", "one", "two"};
    dataset_set_classes(&s->base, 3, names);
    s->base.length = n;
    s->sleep_ms = sleep_ms;
    s->fail_index = fail_index;
    return &s->base;
}

/* The dataset index a ToTensor'd synthetic sample came from: its first value is i * 7 / 255,
 * unambiguous while i * 7 < 256 (the datasets here have at most 32 samples). */
static int64_t synth_index_of(const float *row) { return (int64_t)(row[0] * 255.0f + 0.5f) / 7; }

/* ------------------------------------------------------------ ImageFolder */

typedef struct FolderSample {
    int label;
    long long sum;
    char path[256];
} FolderSample;

static void test_image_folder_order(void) {
    FILE *f = fopen(FIXTURES "/folder_samples.txt", "r");
    CHECK("folder fixture present", f != NULL, "cannot open %s/folder_samples.txt", FIXTURES);
    if (!f) return;
    char names[16][64];
    FolderSample samples[32];
    int nclasses = 0, nsamples = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        int idx, n;
        long long sum;
        if (sscanf(line, "class %d %n", &idx, &n) == 1 && idx < 16) {
            snprintf(names[idx], sizeof names[idx], "%s", line + n);
            nclasses++;
        } else if (sscanf(line, "sample %d %lld %n", &idx, &sum, &n) == 2 && nsamples < 32) {
            samples[nsamples].label = idx;
            samples[nsamples].sum = sum;
            snprintf(samples[nsamples].path, sizeof samples[nsamples].path, "%s", line + n);
            nsamples++;
        }
    }
    fclose(f);

    ImageFolderReport report;
    Dataset *ds = dataset_image_folder(FIXTURES "/folder", 3, &report);
    CHECK("ImageFolder opens", ds != NULL, "%s", moco_last_error());
    if (!ds) return;
    CHECK("ImageFolder class count", dataset_num_classes(ds) == nclasses, "got %d, torchvision %d",
          dataset_num_classes(ds), nclasses);
    int same = 1;
    for (int c = 0; c < nclasses && c < dataset_num_classes(ds); c++)
        if (strcmp(dataset_class_name(ds, c), names[c])) same = 0;
    CHECK("ImageFolder classes as torchvision (sorted, case-sensitive)", same, "class 0 is %s, torchvision %s",
          dataset_class_name(ds, 0), names[0]);
    CHECK("ImageFolder length", dataset_length(ds) == nsamples, "got %lld, torchvision %d",
          (long long)dataset_length(ds), nsamples);
    int order_ok = 1, labels_ok = 1, bad = -1;
    const size_t prefix = strlen(FIXTURES "/folder/");
    for (int i = 0; i < nsamples && i < dataset_length(ds); i++) {
        const char *p = dataset_sample_path(ds, i);
        if (!p || strlen(p) < prefix || strcmp(p + prefix, samples[i].path)) order_ok = 0, bad = bad < 0 ? i : bad;
        if (dataset_label(ds, i) != samples[i].label) labels_ok = 0;
    }
    CHECK("ImageFolder sample order as torchvision (sorted os.walk)", order_ok, "sample %d is %s, torchvision %s", bad,
          bad >= 0 ? dataset_sample_path(ds, bad) : "", bad >= 0 ? samples[bad].path : "");
    CHECK("ImageFolder labels as torchvision", labels_ok, "a label differs");
    CHECK("ImageFolder counts skipped non-image files", report.skipped_files == 2, "got %lld, expected 2 (%s)",
          (long long)report.skipped_files, report.first_skipped);

    /* Decoded pixels: PNG is lossless, so the sums must match PIL's exactly; JPEG decoders
     * may round differently, so a small relative tolerance there. */
    double worst_png = 0, worst_jpeg = 0;
    int decoded = 1;
    for (int i = 0; i < nsamples && i < dataset_length(ds); i++) {
        Image img;
        int64_t label;
        if (dataset_get(ds, i, &img, &label)) {
            decoded = 0;
            printf("  %s\n", moco_last_error());
            continue;
        }
        double rel = fabs((double)image_sum(&img) - (double)samples[i].sum) / (double)samples[i].sum;
        int is_png = strcasestr(samples[i].path, ".png") != NULL;
        if (is_png && rel > worst_png) worst_png = rel;
        if (!is_png && rel > worst_jpeg) worst_jpeg = rel;
        if (img.channels != 3) decoded = 0;
        image_free(&img);
    }
    CHECK("ImageFolder decodes every sample as RGB", decoded, "see above");
    CHECK("ImageFolder PNG pixels equal PIL's", worst_png == 0, "relative sum difference %g", worst_png);
    CHECK("ImageFolder JPEG pixels near PIL's", worst_jpeg < 0.01, "relative sum difference %g", worst_jpeg);
    printf("ImageFolder: max relative pixel-sum difference vs PIL: png %g, jpeg %g\n", worst_png, worst_jpeg);
    dataset_release(ds);
}

static void test_image_folder_errors(void) {
    Dataset *ds = dataset_image_folder("/nonexistent/moco/dir", 3, NULL);
    CHECK("ImageFolder missing root fails", ds == NULL && strstr(moco_last_error(), "/nonexistent/moco/dir"),
          "message: %s", moco_last_error());

    char root[512], path[600];
    snprintf(root, sizeof root, "%s/folder_empty", tmpdir);
    mkdir(root, 0755);
    ds = dataset_image_folder(root, 3, NULL);
    CHECK("ImageFolder without class folders fails", ds == NULL && strstr(moco_last_error(), "class folder"),
          "message: %s", moco_last_error());

    snprintf(path, sizeof path, "%s/zeta", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/zeta/readme.txt", root);
    write_file(path, "x", 1);
    ds = dataset_image_folder(root, 3, NULL);
    CHECK("ImageFolder class without images fails naming it", ds == NULL && strstr(moco_last_error(), "zeta"),
          "message: %s", moco_last_error());
    ds = dataset_image_folder(FIXTURES "/folder", 2, NULL);
    CHECK("ImageFolder rejects channels=2", ds == NULL, "accepted");
}

/* ------------------------------------------------------------ CIFAR */

/* n records; record r: label (r % 10) [and fine label (r * 7) % 100 for CIFAR-100], R plane
 * = r, G plane = pixel index mod 256, B plane = 255 - r. */
static int write_cifar(const char *path, int n, int cifar100, int first) {
    int label_bytes = cifar100 ? 2 : 1, rec = label_bytes + 3072;
    uint8_t *buf = malloc((size_t)n * rec);
    for (int i = 0; i < n; i++) {
        int r = first + i;
        uint8_t *p = buf + (size_t)i * rec;
        p[0] = (uint8_t)(cifar100 ? r % 20 : r % 10);
        if (cifar100) p[1] = (uint8_t)((r * 7) % 100);
        for (int k = 0; k < 1024; k++) {
            p[label_bytes + k] = (uint8_t)r;
            p[label_bytes + 1024 + k] = (uint8_t)(k % 256);
            p[label_bytes + 2048 + k] = (uint8_t)(255 - r);
        }
    }
    int rc = write_file(path, buf, (size_t)n * rec);
    free(buf);
    return rc;
}

static void test_cifar(void) {
    char dir[512], path[700];
    snprintf(dir, sizeof dir, "%s/cifar-10-batches-bin", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    write_cifar(path, 5, 0, 0);
    for (int b = 1; b <= 5; b++) {
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, b);
        write_cifar(path, 3, 0, 100 + 3 * (b - 1));
    }
    Dataset *ds = dataset_cifar10(tmpdir, 0); /* found through cifar-10-batches-bin/ */
    CHECK("CIFAR10 test split opens", ds != NULL, "%s", moco_last_error());
    if (ds) {
        CHECK("CIFAR10 length", dataset_length(ds) == 5, "got %lld", (long long)dataset_length(ds));
        CHECK("CIFAR10 class names", dataset_num_classes(ds) == 10 && !strcmp(dataset_class_name(ds, 0), "airplane") &&
                                         !strcmp(dataset_class_name(ds, 9), "truck"),
              "got %d classes", dataset_num_classes(ds));
        Image img;
        int64_t label;
        int rc = dataset_get(ds, 3, &img, &label);
        CHECK("CIFAR10 get", rc == 0, "%s", moco_last_error());
        if (rc == 0) {
            CHECK("CIFAR10 label", label == 3, "got %lld", (long long)label);
            CHECK("CIFAR10 is 32x32 RGB", img.width == 32 && img.height == 32 && img.channels == 3, "got %dx%dx%d",
                  img.width, img.height, img.channels);
            /* pixel (row 1, col 2) = plane index 34: R = 3, G = 34, B = 252 */
            const uint8_t *px = img.data + (1 * 32 + 2) * 3;
            CHECK("CIFAR10 planes interleaved to HWC", px[0] == 3 && px[1] == 34 && px[2] == 252, "got %d %d %d",
                  px[0], px[1], px[2]);
            image_free(&img);
        }
        dataset_release(ds);
    }
    ds = dataset_cifar10(dir, 1);
    CHECK("CIFAR10 train split reads the 5 batches in order", ds && dataset_length(ds) == 15 && dataset_label(ds, 14) == (100 + 14) % 10,
          "%s", ds ? "wrong length or label" : moco_last_error());
    dataset_release(ds);

    snprintf(path, sizeof path, "%s/data_batch_3.bin", dir);
    write_file(path, "abc", 3);
    ds = dataset_cifar10(dir, 1);
    CHECK("CIFAR10 wrong size fails naming the file", ds == NULL && strstr(moco_last_error(), "data_batch_3.bin"),
          "message: %s", moco_last_error());
    unlink(path);
    ds = dataset_cifar10(dir, 1);
    CHECK("CIFAR10 missing file fails naming it", ds == NULL && strstr(moco_last_error(), "data_batch_3.bin"),
          "message: %s", moco_last_error());
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    uint8_t bad[3073] = {42};
    write_file(path, bad, sizeof bad);
    ds = dataset_cifar10(dir, 0);
    CHECK("CIFAR10 label out of range fails", ds == NULL && strstr(moco_last_error(), "label 42"), "message: %s",
          moco_last_error());

    char dir100[512];
    snprintf(dir100, sizeof dir100, "%s/c100", tmpdir);
    mkdir(dir100, 0755);
    snprintf(path, sizeof path, "%s/train.bin", dir100);
    write_cifar(path, 4, 1, 0);
    ds = dataset_cifar100(dir100, 1);
    CHECK("CIFAR100 opens", ds != NULL, "%s", moco_last_error());
    if (ds) {
        CHECK("CIFAR100 uses the fine label", dataset_label(ds, 3) == 21, "got %lld", (long long)dataset_label(ds, 3));
        CHECK("CIFAR100 has 100 fine classes", dataset_num_classes(ds) == 100 &&
                                                   !strcmp(dataset_class_name(ds, 0), "apple") &&
                                                   !strcmp(dataset_class_name(ds, 99), "worm"),
              "got %d", dataset_num_classes(ds));
        dataset_release(ds);
    }
}

/* ------------------------------------------------------------ IDX / Fashion-MNIST */

static void test_idx(void) {
    char images[512], labels[512];
    snprintf(images, sizeof images, "%s/img.idx", tmpdir);
    snprintf(labels, sizeof labels, "%s/lbl.idx", tmpdir);
    uint8_t img[16 + 3 * 2 * 2] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
    for (int i = 0; i < 12; i++) img[16 + i] = (uint8_t)(i * 10);
    uint8_t lbl[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 4, 0, 2};
    write_file(images, img, sizeof img);
    write_file(labels, lbl, sizeof lbl);
    Dataset *ds = dataset_idx(images, labels, 0, NULL);
    CHECK("IDX dataset opens", ds != NULL, "%s", moco_last_error());
    if (ds) {
        Image im;
        int64_t label;
        dataset_get(ds, 2, &im, &label);
        CHECK("IDX sample 2", label == 2 && im.channels == 1 && im.width == 2 && im.data[3] == 110,
              "label %lld channels %d last pixel %d", (long long)label, im.channels, im.data[3]);
        image_free(&im);
        CHECK("IDX unnamed classes 0..max", dataset_num_classes(ds) == 5 && !strcmp(dataset_class_name(ds, 4), "4"),
              "got %d", dataset_num_classes(ds));
        int rc = dataset_get(ds, 3, &im, &label);
        CHECK("IDX index out of range is an error", rc == -1 && strstr(moco_last_error(), "out of range"), "rc %d", rc);
        dataset_release(ds);
    }
    lbl[7] = 2; /* 2 labels, 3 images */
    write_file(labels, lbl, sizeof lbl - 1);
    ds = dataset_idx(images, labels, 0, NULL);
    CHECK("IDX count mismatch names both files", ds == NULL && strstr(moco_last_error(), images) &&
                                                     strstr(moco_last_error(), labels),
          "message: %s", moco_last_error());
    ds = dataset_idx(labels, images, 0, NULL);
    CHECK("IDX swapped files fail", ds == NULL, "accepted");
}

static void test_fashion_mnist(void) {
    FILE *f = fopen(FIXTURES "/fashion_mnist.txt", "r");
    CHECK("fashion-mnist fixture present", f != NULL, "cannot open " FIXTURES "/fashion_mnist.txt");
    if (!f) return;
    Dataset *train = dataset_fashion_mnist(NULL, 1), *test = dataset_fashion_mnist(NULL, 0);
    CHECK("FashionMNIST train opens (package dataset-fashion-mnist)", train != NULL, "%s", train ? "" : moco_last_error());
    CHECK("FashionMNIST test opens", test != NULL, "%s", test ? "" : moco_last_error());
    char line[256], split[16];
    long long a, b, c;
    int checked = 0;
    while (train && test && fgets(line, sizeof line, f)) {
        Dataset *ds = NULL;
        if (sscanf(line, "length %15s %lld", split, &a) == 2) {
            ds = strcmp(split, "train") ? test : train;
            char name[64];
            snprintf(name, sizeof name, "FashionMNIST %s length", split);
            CHECK(name, dataset_length(ds) == a, "got %lld, torchvision %lld", (long long)dataset_length(ds), a);
        } else if (sscanf(line, "sample %15s %lld %lld %lld", split, &a, &b, &c) == 4) {
            ds = strcmp(split, "train") ? test : train;
            Image img;
            int64_t label;
            char name[96];
            snprintf(name, sizeof name, "FashionMNIST %s sample %lld label and pixel sum", split, a);
            int rc = dataset_get(ds, a, &img, &label);
            CHECK(name, rc == 0 && label == b && image_sum(&img) == c && img.channels == 1 && img.width == 28,
                  "label %lld (torchvision %lld), sum %lld (torchvision %lld)", (long long)label, b,
                  rc ? -1 : image_sum(&img), c);
            if (rc == 0) image_free(&img);
            checked++;
        }
    }
    fclose(f);
    CHECK("FashionMNIST samples compared", checked == 6, "compared %d", checked);
    if (train)
        CHECK("FashionMNIST class names", !strcmp(dataset_class_name(train, 0), "T-shirt/top") &&
                                              !strcmp(dataset_class_name(train, 9), "Ankle boot"),
              "got %s", dataset_class_name(train, 0));
    dataset_release(train);
    dataset_release(test);
    Dataset *missing = dataset_fashion_mnist("/nonexistent/fmnist", 1);
    CHECK("FashionMNIST missing root names the path", missing == NULL && strstr(moco_last_error(), "/nonexistent/fmnist"),
          "message: %s", moco_last_error());
}

/* ------------------------------------------------------------ loader */

static LoaderOptions options(int64_t batch, int workers, int shuffle, int drop_last) {
    LoaderOptions o = {batch, workers, 2, shuffle, drop_last, 1234, LOADER_RAISE, 0, 0};
    return o;
}

/* All batches of `epochs` epochs, images and labels one after the other. */
static float *run_epochs(Dataset *ds, LoaderOptions o, Transform *t, int two_crops, int epochs, size_t *n) {
    Loader *l = loader_create(ds, &o, t, two_crops, LOADER_TENSORS);
    if (!l) return NULL;
    size_t cap = 1 << 16;
    float *all = malloc(cap * sizeof *all);
    *n = 0;
    for (int e = 0; e < epochs; e++) {
        LoaderBatch b;
        int rc;
        while ((rc = loader_next(l, &b)) == 1) {
            const Tensor *parts[3] = {b.images, b.images_k, b.labels};
            for (int p = 0; p < 3; p++) {
                if (!parts[p]) continue;
                while (*n + (size_t)parts[p]->numel > cap) all = realloc(all, (cap *= 2) * sizeof *all);
                memcpy(all + *n, parts[p]->data, (size_t)parts[p]->numel * sizeof(float));
                *n += (size_t)parts[p]->numel;
            }
            tensor_free(b.images);
            tensor_free(b.images_k);
            tensor_free(b.labels);
        }
        if (rc < 0) {
            free(all);
            loader_close(l);
            return NULL;
        }
    }
    loader_close(l);
    return all;
}

/* MoCo v2's augmentation, scaled down: every random step of it draws from the sample's stream. */
static Transform *moco_v2_like(void) {
    const double scale[2] = {0.2, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    const double jitter[2] = {0.6, 1.4}, hue[2] = {-0.1, 0.1};
    const double mean[3] = {0.5, 0.4, 0.3}, std[3] = {0.2, 0.25, 0.3};
    Transform *jitter_t = transform_color_jitter(jitter, jitter, jitter, hue);
    Transform *items[6] = {transform_random_resized_crop(8, 8, scale, ratio),
                           transform_random_apply(&jitter_t, 1, 0.8), transform_random_grayscale(0.2),
                           transform_random_horizontal_flip(0.5), transform_to_tensor(),
                           transform_normalize(mean, std, 3)};
    Transform *t = transform_compose(items, 6);
    transform_free(jitter_t);
    for (int i = 0; i < 6; i++) transform_free(items[i]);
    return t;
}

static void test_loader_determinism(void) {
    Dataset *ds = synth_new(30, 0, -1);
    Transform *aug = moco_v2_like();
    CHECK("augmentation pipeline builds", aug != NULL, "%s", moco_last_error());
    Transform *pipelines[2] = {NULL, aug};
    const char *names[2] = {"ToTensor", "TwoCrops(RandomResizedCrop, ColorJitter, ...)"};
    for (int p = 0; p < 2; p++) {
        size_t n0, n;
        float *ref = run_epochs(ds, options(4, 0, 1, 0), pipelines[p], p, 2, &n0);
        char name[160];
        snprintf(name, sizeof name, "loader runs with workers=0, %s", names[p]);
        CHECK(name, ref != NULL, "%s", moco_last_error());
        int workers[3] = {1, 2, 4};
        for (int i = 0; i < 3 && ref; i++) {
            float *got = run_epochs(ds, options(4, workers[i], 1, 0), pipelines[p], p, 2, &n);
            snprintf(name, sizeof name, "loader batches bitwise equal with %d worker(s), %s", workers[i], names[p]);
            CHECK(name, got && n == n0 && memcmp(got, ref, n * sizeof *ref) == 0, "%s",
                  got ? "batches differ" : moco_last_error());
            free(got);
        }
        free(ref);
    }
    if (aug) {
        /* The randomness is really there: the two crops of a sample differ, and so do the
         * crops of the same sample in two epochs. */
        LoaderOptions o = options(30, 2, 0, 0);
        Loader *l = loader_create(ds, &o, aug, 1, LOADER_TENSORS);
        LoaderBatch b0, b1;
        loader_next(l, &b0);
        loader_next(l, &b1); /* end of epoch 0 */
        loader_next(l, &b1);
        CHECK("random pipeline: batch shape", b0.images->ndim == 4 && b0.images->shape[1] == 3 && b0.images->shape[2] == 8,
              "ndim %d", b0.images->ndim);
        CHECK("random pipeline: the two crops differ",
              check_max_abs_diff(b0.images->data, b0.images_k->data, b0.images->numel) > 0.1, "identical crops");
        CHECK("random pipeline: epochs differ", check_max_abs_diff(b0.images->data, b1.images->data, b0.images->numel) > 0.1,
              "identical epochs");
        LoaderBatch *bs[2] = {&b0, &b1};
        for (int i = 0; i < 2; i++) tensor_free(bs[i]->images), tensor_free(bs[i]->images_k), tensor_free(bs[i]->labels);
        loader_close(l);
    }
    transform_free(aug);
    dataset_release(ds);
}

static void test_loader_epochs(void) {
    Dataset *ds = synth_new(10, 0, -1);
    LoaderOptions o = options(4, 2, 1, 0);
    Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    CHECK("loader created", l != NULL, "%s", moco_last_error());
    if (!l) return;
    CHECK("batches per epoch without drop_last", loader_num_batches(l) == 3, "got %lld", (long long)loader_num_batches(l));
    int64_t order[3][10];
    int sizes_ok = 1, perm_ok = 1;
    for (int e = 0; e < 3; e++) {
        LoaderBatch b;
        int k = 0, rc;
        while ((rc = loader_next(l, &b)) == 1) {
            if (b.count != (b.batch_index < 2 ? 4 : 2) || b.images->shape[0] != b.count) sizes_ok = 0;
            for (int64_t j = 0; j < b.count; j++) {
                order[e][k] = synth_index_of(b.images->data + j * b.images->numel / b.count);
                if (order[e][k] != b.indices[j] || b.labels->data[j] != (float)(b.indices[j] % 3)) perm_ok = 0;
                k++;
            }
            tensor_free(b.images);
            tensor_free(b.labels);
        }
        int seen[10] = {0};
        for (int i = 0; i < k; i++)
            if (order[e][i] >= 0 && order[e][i] < 10) seen[order[e][i]]++;
        for (int i = 0; i < 10; i++)
            if (seen[i] != 1) perm_ok = 0;
        if (k != 10) perm_ok = 0;
        if (e < 2) CHECK("loader moves to the next epoch", loader_epoch(l) == e + 1, "epoch %lld", (long long)loader_epoch(l));
    }
    CHECK("last batch is partial without drop_last", sizes_ok, "a batch has the wrong size");
    CHECK("every epoch is a permutation, labels and indices match the pixels", perm_ok, "not a permutation");
    CHECK("epochs are shuffled differently", memcmp(order[0], order[1], sizeof order[0]) != 0 &&
                                                 memcmp(order[1], order[2], sizeof order[0]) != 0,
          "two epochs have the same order");
    loader_set_epoch(l, 0);
    LoaderBatch b;
    loader_next(l, &b);
    int same = 1;
    for (int j = 0; j < 4; j++) same &= synth_index_of(b.images->data + j * 12 * 3) == order[0][j];
    CHECK("set_epoch(0) gives epoch 0 again", same, "first batch differs");
    tensor_free(b.images);
    tensor_free(b.labels);
    loader_close(l);

    o = options(4, 1, 0, 1);
    l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    int count = 0, rc;
    while ((rc = loader_next(l, &b)) == 1) {
        count++;
        if (b.count != 4) count = -100;
        if (count == 1) CHECK("no shuffle: samples in order", synth_index_of(b.images->data + 36) == 1, "second sample differs");
        tensor_free(b.images);
        tensor_free(b.labels);
    }
    CHECK("drop_last drops the partial batch", count == 2 && loader_num_batches(l) == 2, "got %d batches", count);
    loader_close(l);
    o = options(11, 1, 0, 1);
    CHECK("drop_last with batch_size > length is an error", loader_create(ds, &o, NULL, 0, LOADER_TENSORS) == NULL,
          "accepted");
    dataset_release(ds);
}

static void test_loader_buffers(void) {
    Dataset *ds = synth_new(32, 0, -1);
    LoaderOptions o = options(4, 2, 1, 0);
    o.prefetch = 1; /* two slots: batch b and b + 2 share one */
    Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    LoaderBatch b0, b;
    loader_next(l, &b0);
    Tensor *keep = tensor_clone(b0.images);
    float *first_data = b0.images->data;
    for (int i = 0; i < 4; i++) {
        loader_next(l, &b);
        if (i == 1) CHECK("a batch the caller holds gets a new buffer", b.images->data != first_data, "overwritten");
        tensor_free(b.images);
        tensor_free(b.labels);
    }
    CHECK("a batch the caller holds is never overwritten",
          check_max_abs_diff(keep->data, b0.images->data, keep->numel) == 0, "batch 0 changed");
    tensor_free(keep);
    tensor_free(b0.images);
    tensor_free(b0.labels);
    /* Released batches are reused: batch 7 lands in the buffer batch 5 had (slot 1 of 2). */
    loader_next(l, &b);
    float *data5 = b.images->data;
    tensor_free(b.images);
    tensor_free(b.labels);
    loader_next(l, &b);
    tensor_free(b.images);
    tensor_free(b.labels);
    loader_next(l, &b);
    CHECK("released buffers are reused", b.images->data == data5, "a new buffer was made");
    tensor_free(b.images);
    tensor_free(b.labels);
    LoaderStats st;
    loader_stats(l, &st);
    CHECK("stats count batches", st.batches == 8 && st.samples == 32 && st.wait_seconds >= 0, "batches %lld",
          (long long)st.batches);
    loader_close(l);
    dataset_release(ds);
}

static void test_loader_set_transform(void) {
    Dataset *ds = synth_new(24, 0, -1);
    LoaderOptions o = options(4, 2, 1, 0);
    Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    Loader *ref = loader_create(ds, &o, NULL, 1, LOADER_TENSORS);
    LoaderBatch b, r;
    for (int i = 0; i < 2; i++) {
        loader_next(l, &b);
        loader_next(ref, &r);
        CHECK("before set_transform: one crop", b.images_k == NULL && r.images_k != NULL, "unexpected images_k");
        tensor_free(b.images);
        tensor_free(b.labels);
        tensor_free(r.images);
        tensor_free(r.images_k);
        tensor_free(r.labels);
    }
    usleep(20000); /* let the workers prefetch batches 2 and 3 with the old transform */
    loader_set_transform(l, NULL, 1, LOADER_TENSORS);
    int rc = loader_next(l, &b);
    loader_next(ref, &r);
    CHECK("set_transform applies from the next batch", rc == 1 && b.images_k != NULL && b.batch_index == 2,
          "rc %d batch %lld", rc, (long long)b.batch_index);
    if (rc == 1 && b.images_k)
        CHECK("the batch after set_transform is the one a fresh loader makes",
              check_max_abs_diff(b.images->data, r.images->data, b.images->numel) == 0 &&
                  check_max_abs_diff(b.images_k->data, r.images_k->data, b.images_k->numel) == 0,
              "batches differ");
    tensor_free(b.images);
    tensor_free(b.images_k);
    tensor_free(b.labels);
    tensor_free(r.images);
    tensor_free(r.images_k);
    tensor_free(r.labels);
    loader_set_transform(l, NULL, 0, LOADER_IMAGES);
    rc = loader_next(l, &b);
    CHECK("images mode hands out decoded images", rc == 1 && b.raw && b.images == NULL && b.raw[0].width == 4 &&
                                                      b.raw[0].data[0] == (uint8_t)(b.indices[0] * 7 % 256),
          "rc %d", rc);
    tensor_free(b.labels);
    loader_close(l);
    loader_close(ref);
    dataset_release(ds);
}

static void test_loader_errors(void) {
    Dataset *ds = synth_new(16, 0, 5);
    LoaderOptions o = options(4, 2, 0, 0);
    Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    LoaderBatch b;
    int rc0 = loader_next(l, &b);
    tensor_free(b.images);
    tensor_free(b.labels);
    int rc1 = loader_next(l, &b);
    CHECK("a failing sample fails its batch", rc0 == 1 && rc1 == -1, "rc %d %d", rc0, rc1);
    CHECK("the message says which sample", strstr(moco_last_error(), "synthetic failure at sample 5") != NULL,
          "message: %s", moco_last_error());
    int rc2 = loader_next(l, &b);
    CHECK("the loader continues with the next batch", rc2 == 1 && b.batch_index == 2, "rc %d", rc2);
    tensor_free(b.images);
    tensor_free(b.labels);
    loader_close(l);
    dataset_release(ds);

    /* A corrupt file in an ImageFolder: the error names the file. */
    char root[512], path[700];
    snprintf(root, sizeof root, "%s/corrupt", tmpdir);
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/c", root);
    mkdir(path, 0755);
    Image img;
    image_alloc(&img, 8, 8, 3);
    memset(img.data, 100, 8 * 8 * 3);
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/c/%d.png", root, i);
        image_save_png(&img, path);
    }
    image_free(&img);
    snprintf(path, sizeof path, "%s/c/3.png", root);
    write_file(path, "\x89PNG\r\n\x1a\n garbage garbage", 24);
    ds = dataset_image_folder(root, 3, NULL);
    CHECK("corrupt-file folder opens (decoding happens later)", ds != NULL, "%s", moco_last_error());
    if (!ds) return;
    o = options(2, 2, 0, 0);
    l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    int rcs[4];
    for (int i = 0; i < 4; i++) {
        rcs[i] = loader_next(l, &b);
        if (rcs[i] == -1) CHECK("corrupt file error names the file", strstr(moco_last_error(), path) != NULL, "message: %s", moco_last_error());
        if (rcs[i] == 1) tensor_free(b.images), tensor_free(b.labels);
    }
    CHECK("only the batch with the corrupt file fails", rcs[0] == 1 && rcs[1] == -1 && rcs[2] == 1 && rcs[3] == 0,
          "rc %d %d %d %d", rcs[0], rcs[1], rcs[2], rcs[3]);
    loader_close(l);
    dataset_release(ds);
}

static void test_loader_interrupt_and_threads(void) {
    int before = thread_count();
    Dataset *ds = synth_new(64, 200, -1); /* 200 ms per sample */
    LoaderOptions o = options(8, 4, 0, 0);
    Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    CHECK("threads started", thread_count() == before + 4, "before %d, now %d", before, thread_count());
    moco_interrupt_requested = 1;
    double t0 = seconds();
    LoaderBatch b;
    int rc = loader_next(l, &b);
    double dt = seconds() - t0;
    moco_interrupt_requested = 0;
    CHECK("Ctrl-C interrupts a wait", rc == -1 && strstr(moco_last_error(), "interrupted") && dt < 0.2,
          "rc %d after %.3f s: %s", rc, dt, moco_last_error());
    rc = loader_next(l, &b);
    CHECK("the loader works after an interrupt", rc == 1 && b.batch_index == 0, "rc %d", rc);
    if (rc == 1) tensor_free(b.images), tensor_free(b.labels);
    t0 = seconds();
    loader_close(l); /* must not wait for the whole prefetch ring, only for samples in flight */
    dt = seconds() - t0;
    CHECK("close joins every worker", thread_count() == before, "before %d, after %d", before, thread_count());
    CHECK("close waits only for samples in flight", dt < 1.0, "took %.2f s", dt);
    dataset_release(ds);
}

static void test_loader_throughput(void) {
    Dataset *ds = dataset_fashion_mnist(NULL, 1);
    if (!ds) return; /* already reported by test_fashion_mnist */
    for (int workers = 1; workers <= 2; workers++) {
        LoaderOptions o = options(256, workers, 1, 1);
        Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
        LoaderBatch b;
        int batches = 60;
        double t0 = seconds();
        for (int i = 0; i < batches && loader_next(l, &b) == 1; i++) tensor_free(b.images), tensor_free(b.labels);
        double dt = seconds() - t0;
        LoaderStats st;
        loader_stats(l, &st);
        printf("throughput: Fashion-MNIST, ToTensor, batch 256, %d worker(s): %.0f images/s (waited %.3f s of %.3f s)\n",
               workers, batches * 256 / dt, st.wait_seconds, dt);
        loader_close(l);
    }
    dataset_release(ds);
}

/* ------------------------------------------------------------ bad input
 * The list: a zero-byte, truncated or corrupt image, a GIF or text file named
 * .jpg (and a FIFO, which must not block a worker), IDX files with a wrong magic or size,
 * CIFAR files of the wrong length, empty folders.  Each gives a clear error naming the
 * file; a loader over bad files never hangs or crashes, and on_error = skip replaces them
 * by the rule of loader.h. */

static uint8_t *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size);
    *n = buf ? fread(buf, 1, (size_t)size, f) : 0;
    fclose(f);
    return buf;
}

/* root/a and root/b: 12 files, 6 of them bad.  Good file k (dataset index k) is an 8x8
 * RGB PNG whose first byte is 10 * k, so a row tells which sample it holds. */
#define BAD_FOLDER_N 12
static const int bad_folder_is_bad[BAD_FOLDER_N] = {0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0};
static const char *const bad_folder_files[BAD_FOLDER_N] = {
    "a/0.png", "a/1.png", "a/2_empty.jpg", "a/3_truncated.jpg", "a/4.png", "a/5_gif.jpg",
    "b/0.png", "b/1_truncated.png", "b/2_text.jpg", "b/3_fifo.jpg", "b/4.png", "b/5.png"};
static const char *const bad_folder_reasons[BAD_FOLDER_N] = {
    NULL, NULL, "empty file", "truncated", NULL, "corrupt GIF", NULL, "truncated", "looks like text", "FIFO", NULL, NULL};

static int make_bad_folder(char *root, size_t size) {
    snprintf(root, size, "%s/bad_folder", tmpdir);
    char path[700];
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/a", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/b", root);
    mkdir(path, 0755);
    size_t njpeg = 0, npng = 0;
    uint8_t *jpeg = read_whole("tests/fixtures/images/coffee.jpg", &njpeg);
    uint8_t *png = read_whole("tests/fixtures/images/chelsea.png", &npng);
    int rc = jpeg && png ? 0 : -1;
    for (int k = 0; rc == 0 && k < BAD_FOLDER_N; k++) {
        snprintf(path, sizeof path, "%s/%s", root, bad_folder_files[k]);
        const char *name = bad_folder_files[k] + 2;
        if (!bad_folder_is_bad[k]) {
            Image img;
            image_alloc(&img, 8, 8, 3);
            for (int i = 0; i < 8 * 8 * 3; i++) img.data[i] = (uint8_t)((10 * k + 37 * i) % 256);
            rc = image_save_png(&img, path);
            image_free(&img);
        } else if (!strcmp(name, "2_empty.jpg")) {
            rc = write_file(path, "", 0);
        } else if (!strcmp(name, "3_truncated.jpg")) {
            rc = write_file(path, jpeg, njpeg / 2);
        } else if (!strcmp(name, "5_gif.jpg")) {
            rc = write_file(path, "GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01", 21);
        } else if (!strcmp(name, "1_truncated.png")) {
            rc = write_file(path, png, npng / 2);
        } else if (!strcmp(name, "2_text.jpg")) {
            rc = write_file(path, "<html><body>404 Not Found</body></html>\n", 40);
        } else if (!strcmp(name, "3_fifo.jpg")) {
            rc = mkfifo(path, 0644);
        }
    }
    free(jpeg);
    free(png);
    return rc;
}

static void test_bad_image_files(void) {
    char root[512];
    int made = make_bad_folder(root, sizeof root);
    CHECK("bad-file folder written", made == 0, "cannot write %s", root);
    if (made) return;
    ImageFolderReport report;
    Dataset *ds = dataset_image_folder(root, 3, &report);
    CHECK("a folder with bad files opens (files are decoded later)", ds && dataset_length(ds) == BAD_FOLDER_N, "%s",
          ds ? "wrong length" : moco_last_error());
    if (!ds) return;
    for (int k = 0; k < BAD_FOLDER_N; k++) {
        if (!bad_folder_is_bad[k]) continue;
        Image img;
        int64_t label;
        memset(&img, 0xab, sizeof img);
        int rc = dataset_get(ds, k, &img, &label);
        const char *msg = moco_last_error();
        char name[160];
        snprintf(name, sizeof name, "%s: an error naming the file and saying '%s'", bad_folder_files[k],
                 bad_folder_reasons[k]);
        CHECK(name, rc == -1 && strstr(msg, bad_folder_files[k]) && strstr(msg, bad_folder_reasons[k]) && !img.data,
              "rc %d, message: %s", rc, msg);
        if (rc == 0) image_free(&img);
    }
    dataset_release(ds);

    /* Each format is named by its content, whatever the file is called. */
    static const struct {
        const char *bytes;
        size_t n;
        const char *what;
    } formats[] = {{"GIF87a\x01\x00\x01\x00", 10, "invalid or corrupt GIF"},
                   {"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00", 14, "BMP image"},
                   {"II*\x00\x08\x00\x00\x00", 8, "TIFF image"},
                   {"RIFF\x24\x00\x00\x00WEBPVP8 ", 16, "invalid or corrupt WebP"},
                   {"\x00\x00\x01\x00\x01\x00", 6, "ICO image (not supported"},
                   {"P6\n8 8\n255\n", 11, "Netpbm"},
                   {"just some notes\n", 16, "not a PNG, JPEG, WebP or GIF file (it looks like text"},
                   {"\x00\x01\x02\x03\x04\x05\x06\x07\x08", 9, "not a PNG, JPEG, WebP or GIF file (it starts with bytes 00 01"}};
    for (size_t i = 0; i < sizeof formats / sizeof *formats; i++) {
        Image img;
        int rc = image_decode((const uint8_t *)formats[i].bytes, formats[i].n, 3, &img, "photo.jpg");
        char name[160];
        snprintf(name, sizeof name, "content detection: %s", formats[i].what);
        CHECK(name, rc == -1 && strstr(moco_last_error(), "photo.jpg") && strstr(moco_last_error(), formats[i].what),
              "message: %s", moco_last_error());
        if (rc == 0) image_free(&img);
    }
}

static void test_bad_dataset_files(void) {
    char images[512], labels[512];
    snprintf(images, sizeof images, "%s/bad_img.idx", tmpdir);
    snprintf(labels, sizeof labels, "%s/bad_lbl.idx", tmpdir);
    uint8_t lbl[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 0, 2};
    write_file(labels, lbl, sizeof lbl);
    uint8_t img[16 + 12] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
    img[0] = 0x1f; /* wrong magic */
    write_file(images, img, sizeof img);
    Dataset *ds = dataset_idx(images, labels, 0, NULL);
    CHECK("IDX wrong magic: an error naming the file", ds == NULL && strstr(moco_last_error(), images) &&
                                                           strstr(moco_last_error(), "magic"),
          "message: %s", moco_last_error());
    img[0] = 0;
    write_file(images, img, sizeof img - 5); /* the header says 3x2x2 bytes, fewer follow */
    ds = dataset_idx(images, labels, 0, NULL);
    CHECK("IDX data shorter than its header says: an error naming the file",
          ds == NULL && strstr(moco_last_error(), images) && strstr(moco_last_error(), "truncated"), "message: %s",
          moco_last_error());
    write_file(images, img, 10);
    ds = dataset_idx(images, labels, 0, NULL);
    CHECK("IDX header cut short: an error naming the file", ds == NULL && strstr(moco_last_error(), images),
          "message: %s", moco_last_error());
    write_file(images, "", 0);
    ds = dataset_idx(images, labels, 0, NULL);
    CHECK("IDX zero-byte file: an error naming the file", ds == NULL && strstr(moco_last_error(), images),
          "message: %s", moco_last_error());
    dataset_release(ds);

    char dir[512], path[700];
    snprintf(dir, sizeof dir, "%s/bad_cifar", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    write_cifar(path, 2, 0, 0);
    FILE *f = fopen(path, "ab");
    fputs("one record and a bit", f);
    fclose(f);
    ds = dataset_cifar10(dir, 0);
    CHECK("CIFAR10 file of the wrong length: an error naming the file and the record size",
          ds == NULL && strstr(moco_last_error(), path) && strstr(moco_last_error(), "3073"), "message: %s",
          moco_last_error());
    write_file(path, "", 0);
    ds = dataset_cifar10(dir, 0);
    CHECK("CIFAR10 zero-byte file: an error naming the file", ds == NULL && strstr(moco_last_error(), path),
          "message: %s", moco_last_error());
    snprintf(path, sizeof path, "%s/test.bin", dir);
    write_cifar(path, 2, 0, 0); /* CIFAR-10 records are one byte short of CIFAR-100's */
    ds = dataset_cifar100(dir, 0);
    CHECK("CIFAR100 reading a CIFAR-10 file: an error naming it", ds == NULL && strstr(moco_last_error(), path),
          "message: %s", moco_last_error());
    dataset_release(ds);
}

/* All batches of one epoch over the bad folder: the failing batches' messages and the
 * dataset indices of the rows (-1 in failed batches).  Returns the number of batches. */
static int run_bad_epoch(Dataset *ds, LoaderOptions o, Transform *t, int64_t *rows, float **data, size_t *ndata,
                         int *errors, int *named) {
    Loader *l = loader_create(ds, &o, t, 0, LOADER_TENSORS);
    if (!l) return -1;
    int batches = 0, rc;
    LoaderBatch b;
    *errors = *named = 0;
    if (ndata) *ndata = 0;
    for (int64_t i = 0; i < BAD_FOLDER_N; i++) rows[i] = -1;
    while ((rc = loader_next(l, &b)) != 0) {
        if (rc < 0) {
            (*errors)++;
            for (int k = 0; k < BAD_FOLDER_N; k++)
                if (bad_folder_is_bad[k] && strstr(moco_last_error(), bad_folder_files[k])) (*named)++;
        } else {
            for (int64_t j = 0; j < b.count; j++) rows[b.batch_index * o.batch_size + j] = b.indices[j];
            if (data) {
                *data = realloc(*data, (*ndata + (size_t)b.images->numel) * sizeof **data);
                memcpy(*data + *ndata, b.images->data, (size_t)b.images->numel * sizeof **data);
                *ndata += (size_t)b.images->numel;
            }
            tensor_free(b.images);
            tensor_free(b.labels);
        }
        if (++batches > 100) break; /* never loops forever */
    }
    loader_close(l);
    return batches;
}

static void test_loader_bad_files(void) {
    char root[512];
    snprintf(root, sizeof root, "%s/bad_folder", tmpdir);
    Dataset *ds = dataset_image_folder(root, 3, NULL);
    if (!ds) return; /* reported by test_bad_image_files */
    Transform *items[2] = {transform_center_crop(8, 8), transform_to_tensor()};
    Transform *crop = transform_compose(items, 2);
    Transform *aug = moco_v2_like();
    transform_free(items[0]);
    transform_free(items[1]);
    int64_t rows[BAD_FOLDER_N];
    int errors, named;
    char name[200];

    /* raise: every batch with a bad file fails naming one, the others come through. */
    for (int workers = 1; workers <= 2; workers++) {
        LoaderOptions o = options(2, workers, 0, 0); /* {0,1} ok, then 4 batches with bad files, {10,11} ok */
        int batches = run_bad_epoch(ds, o, crop, rows, NULL, NULL, &errors, &named);
        snprintf(name, sizeof name, "raise, %d worker(s): each batch with a bad file fails naming it", workers);
        CHECK(name, batches == 6 && errors == 4 && named == 4 && rows[0] == 0 && rows[1] == 1 && rows[2] == -1 &&
                        rows[9] == -1 && rows[10] == 10 && rows[11] == 11,
              "%d batches, %d errors, %d named", batches, errors, named);
    }

    /* skip: the rule of loader.h, checked row by row in epoch order (no shuffle). */
    int64_t want[BAD_FOLDER_N];
    for (int p = 0; p < BAD_FOLDER_N; p++) {
        int q = p;
        while (bad_folder_is_bad[q % BAD_FOLDER_N]) q++;
        want[p] = q % BAD_FOLDER_N;
    }
    for (int workers = 0; workers <= 2; workers++) {
        LoaderOptions o = options(3, workers, 0, 0);
        o.on_error = LOADER_SKIP;
        Loader *l = loader_create(ds, &o, crop, 0, LOADER_TENSORS);
        int ok = l != NULL, full = 1, pixels = 1, streams = 1, rc;
        LoaderBatch b;
        for (int epoch = 0; ok && epoch < 2; epoch++)
            while ((rc = loader_next(l, &b)) != 0) {
                if (rc < 0) {
                    ok = 0;
                    break;
                }
                if (b.count != 3) full = 0;
                for (int64_t j = 0; j < b.count; j++) {
                    int64_t p = b.batch_index * 3 + j;
                    if (b.indices[j] != want[p]) ok = 0;
                    if (b.streams[j] != p) streams = 0;
                    if (fabsf(b.images->data[j * 192] * 255.0f - 10.0f * (float)want[p]) > 0.01f) pixels = 0;
                }
                tensor_free(b.images);
                tensor_free(b.labels);
            }
        snprintf(name, sizeof name, "skip, %d worker(s): each bad sample is replaced by the next that decodes", workers);
        CHECK(name, ok && full && pixels, "%s", ok ? "wrong pixels or partial batch" : moco_last_error());
        snprintf(name, sizeof name, "skip, %d worker(s): a replacement uses the failed sample's stream", workers);
        CHECK(name, streams, "streams[j] is not the scheduled sample");
        if (!l) continue;
        LoaderStats st;
        loader_stats(l, &st);
        snprintf(name, sizeof name, "skip, %d worker(s): stats count the replaced samples of both epochs", workers);
        CHECK(name, st.skipped == 12 && st.samples == 24, "skipped %lld of %lld", (long long)st.skipped,
              (long long)st.samples);
        char msg[1100];
        int warnings = 0, each_named = 1;
        int seen[BAD_FOLDER_N] = {0};
        while (loader_take_warning(l, msg, sizeof msg)) {
            warnings++;
            int found = 0;
            for (int k = 0; k < BAD_FOLDER_N; k++)
                if (bad_folder_is_bad[k] && strstr(msg, bad_folder_files[k]) && strstr(msg, bad_folder_reasons[k]))
                    found = 1, seen[k]++;
            if (!found) each_named = 0, printf("  unexpected warning: %s\n", msg);
        }
        for (int k = 0; k < BAD_FOLDER_N; k++)
            if (bad_folder_is_bad[k] && seen[k] != 1) each_named = 0;
        snprintf(name, sizeof name, "skip, %d worker(s): one warning per bad file (file and reason) over two epochs",
                 workers);
        CHECK(name, warnings == 6 && each_named, "%d warnings", warnings);
        loader_close(l);
    }

    /* skip with the random pipeline and shuffling: batches identical whatever the workers. */
    float *ref = NULL;
    size_t nref = 0;
    LoaderOptions o = options(4, 0, 1, 0);
    o.on_error = LOADER_SKIP;
    int batches = run_bad_epoch(ds, o, aug, rows, &ref, &nref, &errors, &named);
    int full = batches == 3 && errors == 0;
    for (int p = 0; p < BAD_FOLDER_N; p++)
        if (rows[p] < 0 || bad_folder_is_bad[rows[p]]) full = 0;
    CHECK("skip, shuffled, MoCo-like augmentation: full batches of good samples", full, "%d batches, %d errors",
          batches, errors);
    /* A replacement is another view of its sample (the failed sample's stream), not a copy. */
    int pairs = 0, copies = 0;
    for (int p = 0; full && nref == BAD_FOLDER_N * 192 && p < BAD_FOLDER_N; p++)
        for (int q = p + 1; q < BAD_FOLDER_N; q++)
            if (rows[p] == rows[q]) {
                pairs++;
                if (check_max_abs_diff(ref + p * 192, ref + q * 192, 192) < 1e-3) copies++;
            }
    CHECK("skip: a sample and its replacement copy are different augmented views", pairs > 0 && copies == 0,
          "%d pairs, %d identical", pairs, copies);
    for (int workers = 1; workers <= 4; workers *= 2) {
        float *got = NULL;
        size_t n = 0;
        o.workers = workers;
        run_bad_epoch(ds, o, aug, rows, &got, &n, &errors, &named);
        snprintf(name, sizeof name, "skip, shuffled, augmented: %d worker(s) give the batches of 0", workers);
        CHECK(name, n == nref && nref > 0 && memcmp(got, ref, n * sizeof *ref) == 0, "batches differ (%zu vs %zu values)",
              n, nref);
        free(got);
    }
    free(ref);
    transform_free(crop);
    transform_free(aug);
    dataset_release(ds);

    /* The last sample fails: its replacement wraps around to the start of the order. */
    ds = synth_new(8, 0, 7);
    o = options(4, 2, 0, 0);
    o.on_error = LOADER_SKIP;
    Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
    LoaderBatch b;
    loader_next(l, &b);
    tensor_free(b.images), tensor_free(b.labels);
    int rc = loader_next(l, &b);
    CHECK("skip: the replacement of the last sample wraps around to the first", rc == 1 && b.indices[3] == 0 &&
                                                                                     synth_index_of(b.images->data + 3 * 36) == 0,
          "rc %d, index %lld", rc, rc == 1 ? (long long)b.indices[3] : -1LL);
    if (rc == 1) tensor_free(b.images), tensor_free(b.labels);
    loader_close(l);
    dataset_release(ds);
}

/* A folder where nothing decodes: skip cannot fill a batch, so it fails, quickly, naming
 * a file -- and never spins. */
static void test_loader_nothing_decodes(void) {
    char root[512], path[700];
    snprintf(root, sizeof root, "%s/all_bad", tmpdir);
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/c", root);
    mkdir(path, 0755);
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/c/%d.jpg", root, i);
        write_file(path, "not an image", 12);
    }
    Dataset *ds = dataset_image_folder(root, 3, NULL);
    if (!ds) {
        CHECK("all-bad folder opens", 0, "%s", moco_last_error());
        return;
    }
    for (int workers = 1; workers <= 2; workers++) {
        LoaderOptions o = options(2, workers, 1, 0);
        o.on_error = LOADER_SKIP;
        Loader *l = loader_create(ds, &o, NULL, 0, LOADER_TENSORS);
        LoaderBatch b;
        double t0 = seconds();
        int rc1 = loader_next(l, &b);
        int said = strstr(moco_last_error(), "none of its 5 samples could be decoded") &&
                   strstr(moco_last_error(), "not a PNG, JPEG, WebP or GIF");
        int rc2 = loader_next(l, &b), rc3 = loader_next(l, &b), rc4 = loader_next(l, &b);
        double dt = seconds() - t0;
        char name[160];
        snprintf(name, sizeof name, "skip, %d worker(s), nothing decodes: every batch fails saying so, then the epoch ends",
                 workers);
        CHECK(name, rc1 == -1 && said && rc2 == -1 && rc3 == -1 && rc4 == 0 && dt < 5.0, "rc %d %d %d %d in %.2f s: %s",
              rc1, rc2, rc3, rc4, dt, moco_last_error());
        loader_close(l);
    }
    dataset_release(ds);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_image_folder_order();
    test_image_folder_errors();
    test_cifar();
    test_idx();
    test_fashion_mnist();
    test_loader_determinism();
    test_loader_epochs();
    test_loader_buffers();
    test_loader_set_transform();
    test_loader_errors();
    test_loader_interrupt_and_threads();
    test_loader_throughput();
    test_bad_image_files();
    test_bad_dataset_files();
    test_loader_bad_files();
    test_loader_nothing_decodes();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    CHECK_DONE();
}
