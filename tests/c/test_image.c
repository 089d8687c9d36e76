/* tests/c/test_image.c: image codecs, the functional ops and the transforms of core/image.
 *
 * References come from tests/make_fixtures_transforms.py (torchvision 0.14 / Pillow 9.4 on
 * small crops of scikit-image's sample photos, in tests/fixtures/images; tests run from
 * the repository root).  Every comparison prints its max difference in units of 1/255.
 * Tolerances: PNG decoding exact; JPEG decoding 2/255 (IDCT implementations may differ;
 * with the same libjpeg as PIL they are equal); every op 1/255, except Normalize (1e-6,
 * float arithmetic).  The ops reproduce Pillow's integer arithmetic, so the measured
 * difference is expected to be 0 -- the tolerance only absorbs a different libjpeg or
 * compiler.  Random transforms are checked statistically with fixed seeds (KS and 4-sigma
 * bounds), and corrupt or truncated files must give an error naming the file. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "error.h"
#include "image/functional.h"
#include "image/image.h"
#include "image/transform.h"
#include "rng.h"
#include "tensor.h"

#define FIXTURES "tests/fixtures/images/"
#define MAX_TMP_FILES 64

static char tmp_dir[64];
static char tmp_files[MAX_TMP_FILES][160];
static int tmp_count = 0;

static const char *tmp_path(const char *name) {
    if (tmp_count == MAX_TMP_FILES) return "/nonexistent/too-many-test-files";
    snprintf(tmp_files[tmp_count], sizeof tmp_files[0], "%s/%s", tmp_dir, name);
    return tmp_files[tmp_count++];
}

static void remove_tmp_files(void) {
    for (int i = 0; i < tmp_count; i++) unlink(tmp_files[i]);
    rmdir(tmp_dir);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    *n = buf ? fread(buf, 1, (size_t)size, f) : 0;
    fclose(f);
    return buf;
}

static int write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(bytes, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Max |to_tensor(img) - expected| in levels (units of 1/255); -1 on a shape mismatch. */
static double diff_levels(const Image *img, const Tensor *expected) {
    if (!img->data || !expected) return -1;
    Tensor *t = image_to_tensor(img);
    if (!t) return -1;
    double d = tensor_same_shape(t, expected) ? check_max_abs_diff(t->data, expected->data, (long)t->numel) * 255.0 : -1;
    tensor_free(t);
    return d;
}

static Tensor *load_expected(const char *name) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "%s.npy", name);
    Tensor *t = tensor_load_npy(path);
    if (!t) printf("FAIL load %s: %s\n", path, moco_last_error());
    return t;
}

static int load_fixture(const char *file, int channels, Image *out) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "%s", file);
    if (image_load(path, channels, out)) {
        printf("FAIL load %s: %s\n", path, moco_last_error());
        check_failures++;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ decoding */

static void test_decode_against_pil(void) {
    static const char *const files[] = {
        "chelsea.png", "astronaut.png", "camera.png", "coffee.jpg", "coffee_progressive.jpg", "camera_gray.jpg",
        "astronaut_palette4.png", "astronaut_palette_trns.png", "astronaut_rgba.png", "camera_gray_alpha.png",
        "camera_1bit.png", "camera_2bit.png", "chelsea_rgb16.png", "camera_gray16.png", "chelsea_interlaced.png"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        const char *file = files[i];
        int is_jpeg = strstr(file, ".jpg") != NULL;
        double tol = is_jpeg ? 2.0 : 0.0;
        char stem[128], name[160], label[200];
        snprintf(stem, sizeof stem, "%.*s", (int)(strrchr(file, '.') - file), file);
        for (int c = 1; c <= 3; c += 2) {
            Image img;
            if (load_fixture(file, c, &img)) continue;
            snprintf(name, sizeof name, "dec_%s_%s", stem, c == 3 ? "rgb" : "l");
            Tensor *want = load_expected(name);
            double d = diff_levels(&img, want);
            snprintf(label, sizeof label, "decode %s as %s vs PIL (max diff %g/255, tol %g)", file, c == 3 ? "RGB" : "L",
                     d, tol);
            CHECK(label, d >= 0 && d <= tol, "max diff %g levels", d);
            tensor_free(want);
            image_free(&img);
        }
        /* want_channels 0: 1 for gray sources, 3 for the rest (palettes included). */
        Image img;
        if (load_fixture(file, 0, &img) == 0) {
            int gray = strncmp(file, "camera", 6) == 0;
            snprintf(label, sizeof label, "decode %s with channels 0 keeps %s", file, gray ? "gray" : "RGB");
            CHECK(label, img.channels == (gray ? 1 : 3), "got %d channels", img.channels);
            image_free(&img);
        }
    }
}

/* An error that names the file (and contains `what` when given), and a zeroed image. */
static void check_decode_error(const char *label, const uint8_t *bytes, size_t n, const char *name, const char *what) {
    Image img;
    memset(&img, 0xab, sizeof img);
    int rc = image_decode(bytes, n, 3, &img, name);
    const char *msg = moco_last_error();
    CHECK(label, rc == -1 && strstr(msg, name) && (!what || strstr(msg, what)) && img.data == NULL,
          "rc %d, message \"%s\"", rc, msg);
    image_free(&img);
}

static void test_decode_errors(void) {
    Image img;
    CHECK("load of a missing file fails naming it",
          image_load("/nonexistent/dir/x.png", 3, &img) == -1 && strstr(moco_last_error(), "/nonexistent/dir/x.png"),
          "message: %s", moco_last_error());
    /* CMYK JPEGs decode (against PIL in tests/c/test_formats.c), as the ILSVRC ones must. */
    int cmyk = image_load(FIXTURES "chelsea_cmyk.jpg", 3, &img);
    CHECK("a CMYK JPEG decodes to RGB", cmyk == 0 && img.channels == 3 && img.width == 48, "message: %s",
          moco_last_error());
    if (cmyk == 0) image_free(&img);
    check_decode_error("empty data is an error", (const uint8_t *)"", 0, "empty.png", "empty");
    check_decode_error("text is not an image", (const uint8_t *)"hello, world", 12, "notes.txt", "not a PNG, JPEG, WebP or GIF");
    const char *path = tmp_path("garbage.jpg");
    static const char garbage[] = "\xff\xd8\xff garbage that is not a jpeg at all";
    write_bytes(path, garbage, sizeof garbage - 1);
    CHECK("garbage after a JPEG signature is an error naming the file",
          image_load(path, 3, &img) == -1 && strstr(moco_last_error(), path), "message: %s", moco_last_error());
    CHECK("want_channels must be 0, 1 or 3", image_load(FIXTURES "chelsea.png", 2, &img) == -1, "accepted 2");
}

/* Every prefix of a file that stops inside the pixel data must fail with the file's name;
 * random byte corruptions must never crash (an error or an image, both fine). */
static void test_truncated_and_corrupt(void) {
    static const struct {
        const char *file;
        size_t tail;  /* bytes at the end whose loss is harmless (PNG: IEND chunk; JPEG: EOI) */
        int step;
    } cases[] = {{"chelsea.png", 12, 1}, {"coffee.jpg", 2, 1}, {"coffee_progressive.jpg", 2, 1},
                 {"astronaut_palette4.png", 12, 3}, {"chelsea_interlaced.png", 12, 3}, {"camera_gray16.png", 12, 3},
                 {"camera_gray.jpg", 2, 3}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char path[256], label[256];
        snprintf(path, sizeof path, FIXTURES "%s", cases[c].file);
        size_t n;
        uint8_t *bytes = read_bytes(path, &n);
        if (!bytes) {
            CHECK("read fixture", 0, "%s", path);
            continue;
        }
        int bad = 0;
        size_t first_bad = 0;
        for (size_t cut = 0; cut + cases[c].tail < n; cut += (size_t)cases[c].step) {
            Image img;
            int rc = image_decode(bytes, cut, 3, &img, path);
            if (rc != -1 || !strstr(moco_last_error(), path) || img.data) {
                if (!bad++) first_bad = cut;
            }
            image_free(&img);
        }
        snprintf(label, sizeof label, "every truncation of %s is an error naming the file", cases[c].file);
        CHECK(label, bad == 0, "%d prefixes decoded or gave no name, first at %zu bytes of %zu", bad, first_bad, n);
        Image img;
        int rc = image_decode(bytes, n - 3 * (cases[c].tail > 2), 3, &img, path);
        if (rc == -1 && strstr(cases[c].file, ".jpg")) {
            snprintf(label, sizeof label, "truncated %s says so", cases[c].file);
            CHECK(label, strstr(moco_last_error(), "truncated") != NULL, "message: %s", moco_last_error());
        }
        image_free(&img);

        /* Flip random bytes (after the signature): must not crash, errors name the file. */
        Rng rng;
        rng_seed(&rng, 7, c);
        uint8_t *copy = malloc(n);
        int unnamed = 0;
        for (int trial = 0; trial < 150; trial++) {
            memcpy(copy, bytes, n);
            int flips = 1 + (int)rng_below(&rng, 4);
            for (int k = 0; k < flips; k++) copy[8 + rng_below(&rng, (uint32_t)(n - 8))] ^= (uint8_t)(1 + rng_below(&rng, 255));
            Image out;
            if (image_decode(copy, n, 0, &out, path) != 0 && !strstr(moco_last_error(), path)) unnamed++;
            image_free(&out);
        }
        snprintf(label, sizeof label, "150 corrupted copies of %s decode or fail cleanly", cases[c].file);
        CHECK(label, unnamed == 0, "%d errors without the file name (last: %s)", unnamed, moco_last_error());
        free(copy);
        free(bytes);
    }
}

static void test_save_roundtrip(void) {
    Image rgb, gray, back;
    if (load_fixture("chelsea.png", 3, &rgb) || load_fixture("camera.png", 1, &gray)) return;
    const char *p1 = tmp_path("rgb.png"), *p2 = tmp_path("gray.png"), *p3 = tmp_path("rgb.jpg");
    CHECK("save RGB PNG", image_save_png(&rgb, p1) == 0, "%s", moco_last_error());
    CHECK("RGB PNG round trip is exact",
          image_load(p1, 0, &back) == 0 && back.channels == 3 && back.width == 48 && back.height == 36 &&
              memcmp(back.data, rgb.data, 48 * 36 * 3) == 0,
          "%s", moco_last_error());
    image_free(&back);
    CHECK("save gray PNG", image_save_png(&gray, p2) == 0, "%s", moco_last_error());
    CHECK("gray PNG round trip is exact",
          image_load(p2, 0, &back) == 0 && back.channels == 1 && memcmp(back.data, gray.data, 40 * 30) == 0, "%s",
          moco_last_error());
    image_free(&back);
    CHECK("save JPEG quality 95", image_save_jpeg(&rgb, p3, 95) == 0, "%s", moco_last_error());
    double mean_abs = -1;
    if (image_load(p3, 3, &back) == 0 && back.width == 48 && back.height == 36) {
        double s = 0;
        for (int i = 0; i < 48 * 36 * 3; i++) s += fabs((double)back.data[i] - rgb.data[i]);
        mean_abs = s / (48 * 36 * 3);
    }
    CHECK("JPEG round trip is close (mean abs diff < 4 levels)", mean_abs >= 0 && mean_abs < 4, "mean abs diff %g", mean_abs);
    image_free(&back);
    CHECK("JPEG quality out of range is an error", image_save_jpeg(&rgb, p3, 0) == -1, "accepted 0");
    CHECK("saving into a missing directory names the path",
          image_save_png(&rgb, "/nonexistent/dir/a.png") == -1 && strstr(moco_last_error(), "/nonexistent/dir/a.png"),
          "%s", moco_last_error());
    Tensor *t = image_to_tensor(&rgb);
    CHECK("from_tensor(to_tensor(img)) is exact",
          t && image_from_tensor(&back, t) == 0 && memcmp(back.data, rgb.data, 48 * 36 * 3) == 0, "%s", moco_last_error());
    image_free(&back);
    tensor_free(t);
    image_free(&rgb);
    image_free(&gray);
}

/* ------------------------------------------------------------ functional ops vs torchvision */

/* Runs the op described by a line of ops.txt ("resize 20 27", "hue -0.2", ...). */
static int run_op(const char *op, const double *a, int nargs, const Image *in, Image *out, Tensor **tensor_out) {
    *tensor_out = NULL;
    if (!strcmp(op, "resize") && nargs == 2) return image_resize(out, in, (int)a[0], (int)a[1]);
    if (!strcmp(op, "resize_shorter") && nargs == 1) {
        int h, w;
        image_resized_shorter_side(in->height, in->width, (int)a[0], 0, &h, &w);
        return image_resize(out, in, h, w);
    }
    if (!strcmp(op, "resized_crop") && nargs == 6)
        return image_resized_crop(out, in, (int)a[0], (int)a[1], (int)a[2], (int)a[3], (int)a[4], (int)a[5]);
    if (!strcmp(op, "center_crop") && nargs == 2) return image_center_crop(out, in, (int)a[0], (int)a[1]);
    if (!strcmp(op, "hflip")) return image_hflip(out, in);
    if (!strcmp(op, "brightness")) return image_adjust_brightness(out, in, (float)a[0]);
    if (!strcmp(op, "contrast")) return image_adjust_contrast(out, in, (float)a[0]);
    if (!strcmp(op, "saturation")) return image_adjust_saturation(out, in, (float)a[0]);
    if (!strcmp(op, "hue")) return image_adjust_hue(out, in, a[0]);
    if (!strcmp(op, "grayscale")) return image_to_grayscale(out, in, (int)a[0]);
    if (!strcmp(op, "blur")) return image_gaussian_blur(out, in, (float)a[0]);
    if (!strcmp(op, "normalize") && nargs == 6) {
        float mean[3] = {(float)a[0], (float)a[1], (float)a[2]}, std[3] = {(float)a[3], (float)a[4], (float)a[5]};
        memset(out, 0, sizeof *out);
        *tensor_out = image_to_tensor(in);
        return *tensor_out ? image_normalize_tensor_(*tensor_out, mean, std, 3) : -1;
    }
    return moco_error("unknown op line '%s' with %d arguments", op, nargs);
}

static void test_ops_against_torchvision(void) {
    Image rgb, gray;
    if (load_fixture("chelsea.png", 3, &rgb) || load_fixture("camera.png", 1, &gray)) return;
    FILE *f = fopen(FIXTURES "ops.txt", "r");
    CHECK("ops.txt present", f != NULL, "missing " FIXTURES "ops.txt");
    if (!f) return;
    char line[256];
    int count = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64], which[16], op[32];
        int used = 0;
        if (sscanf(line, "%63s %15s %31s%n", name, which, op, &used) != 3) continue;
        double args[8];
        int nargs = 0, k;
        const char *p = line + used;
        while (nargs < 8 && sscanf(p, "%lf%n", &args[nargs], &k) == 1) {
            nargs++;
            p += k;
        }
        char fixture[96], label[200];
        snprintf(fixture, sizeof fixture, "op_%s", name);
        Tensor *want = load_expected(fixture);
        Image out;
        Tensor *tout = NULL;
        int rc = run_op(op, args, nargs, strcmp(which, "rgb") == 0 ? &rgb : &gray, &out, &tout);
        double d = -1, tol = 1.0;
        if (rc == 0 && tout) {
            tol = 1e-6;
            d = tensor_same_shape(tout, want) ? check_max_abs_diff(tout->data, want->data, (long)tout->numel) : -1;
            snprintf(label, sizeof label, "%s (%s) vs torchvision: max diff %.3g (tol %g)", name, which, d, tol);
        } else {
            d = rc == 0 ? diff_levels(&out, want) : -1;
            snprintf(label, sizeof label, "%s (%s) vs torchvision/PIL: max diff %g/255 (tol %g/255)", name, which, d, tol);
        }
        CHECK(label, d >= 0 && d <= tol, "max diff %g (%s)", d, rc ? moco_last_error() : "shape mismatch or ok");
        count++;
        image_free(&out);
        tensor_free(tout);
        tensor_free(want);
    }
    fclose(f);
    CHECK("all op fixtures were compared", count >= 30, "only %d lines", count);
    image_free(&rgb);
    image_free(&gray);
}

static void test_op_errors(void) {
    Image rgb, out;
    if (load_fixture("chelsea.png", 3, &rgb)) return;
    CHECK("resize to 0 is an error", image_resize(&out, &rgb, 0, 5) == -1 && out.data == NULL, "accepted");
    CHECK("resized_crop outside the image is an error", image_resized_crop(&out, &rgb, 30, 0, 10, 10, 4, 4) == -1,
          "accepted");
    CHECK("adjust_hue outside [-0.5, 0.5] is an error",
          image_adjust_hue(&out, &rgb, 0.6) == -1 && strstr(moco_last_error(), "[-0.5, 0.5]"), "%s", moco_last_error());
    CHECK("negative brightness is an error", image_adjust_brightness(&out, &rgb, -1.0f) == -1, "accepted");
    CHECK("negative blur radius is an error", image_gaussian_blur(&out, &rgb, -1.0f) == -1, "accepted");
    CHECK("crop outside the image pads with zeros",
          image_crop(&out, &rgb, -2, -3, 4, 5) == 0 && out.data[0] == 0 && out.data[(2 * 5 + 3) * 3] == rgb.data[0],
          "%s", moco_last_error());
    image_free(&out);
    const Image *cells[3] = {&rgb, &rgb, &rgb};
    CHECK("make_grid lays out 2 per row with padding 2",
          image_make_grid(&out, cells, 3, 2, 2, 0) == 0 && out.width == 2 * (48 + 2) + 2 && out.height == 2 * (36 + 2) + 2,
          "got %dx%d", out.width, out.height);
    image_free(&out);
    image_free(&rgb);
}

/* ------------------------------------------------------------ transforms */

static int same_image(const Image *a, const Image *b) {
    return a->width == b->width && a->height == b->height && a->channels == b->channels &&
           memcmp(a->data, b->data, (size_t)a->width * a->height * a->channels) == 0;
}

static int is_gray_rgb(const Image *img) {
    for (int i = 0; i < img->width * img->height; i++)
        if (img->data[3 * i] != img->data[3 * i + 1] || img->data[3 * i] != img->data[3 * i + 2]) return 0;
    return 1;
}

/* Kolmogorov-Smirnov distance of x[0..n) to U[lo, hi] (sorts x). */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double ks_uniform(double *x, int n, double lo, double hi) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    double d = 0;
    for (int i = 0; i < n; i++) {
        double cdf = (x[i] - lo) / (hi - lo);
        cdf = cdf < 0 ? 0 : cdf > 1 ? 1 : cdf;
        double a = fabs((double)(i + 1) / n - cdf), b = fabs(cdf - (double)i / n);
        d = fmax(d, fmax(a, b));
    }
    return d;
}

static void test_random_resized_crop_stats(void) {
    enum { N = 20000 };
    static double area[N], log_ratio[N], pos[N];
    /* A square 1000x1000 image and scale <= 0.5: no try is ever rejected, so the area
     * fraction is U[0.08, 0.5] and the log aspect U[log 3/4, log 4/3] up to pixel rounding. */
    Transform *t = transform_random_resized_crop(32, 32, (const double[]){0.08, 0.5}, (const double[]){3.0 / 4, 4.0 / 3});
    Rng rng;
    rng_seed(&rng, 1234, 0);
    int in_range = 1;
    for (int i = 0; i < N; i++) {
        int top, left, h, w;
        transform_random_resized_crop_params(t, 1000, 1000, &rng, &top, &left, &h, &w);
        area[i] = (double)h * w / 1e6;
        log_ratio[i] = log((double)w / h);
        pos[i] = 1000 - h ? (double)top / (1000 - h) : 0.5;
        if (top < 0 || left < 0 || top + h > 1000 || left + w > 1000) in_range = 0;
    }
    double crit = 1.95 / sqrt((double)N); /* KS critical value at alpha = 0.001 */
    double d_area = ks_uniform(area, N, 0.08, 0.5), d_ratio = ks_uniform(log_ratio, N, log(0.75), log(4.0 / 3));
    double d_pos = ks_uniform(pos, N, 0, 1);
    char label[200];
    CHECK("RandomResizedCrop crops lie inside the image", in_range, "a crop fell outside");
    snprintf(label, sizeof label, "RandomResizedCrop area fraction ~ U[0.08, 0.5] (KS %.4f < %.4f)", d_area, crit);
    CHECK(label, d_area < crit, "KS distance %g", d_area);
    snprintf(label, sizeof label, "RandomResizedCrop log aspect ~ U[log 3/4, log 4/3] (KS %.4f < %.4f)", d_ratio, crit);
    CHECK(label, d_ratio < crit, "KS distance %g", d_ratio);
    snprintf(label, sizeof label, "RandomResizedCrop top offset ~ U[0, H - h] (KS %.4f < %.4f)", d_pos, crit);
    CHECK(label, d_pos < crit + 0.01, "KS distance %g", d_pos);
    transform_free(t);

    /* Default parameters on a 400x300 image: every crop within the ranges (up to rounding). */
    t = transform_random_resized_crop(224, 224, (const double[]){0.08, 1.0}, (const double[]){3.0 / 4, 4.0 / 3});
    int ok = 1;
    for (int i = 0; i < 5000; i++) {
        int top, left, h, w;
        transform_random_resized_crop_params(t, 300, 400, &rng, &top, &left, &h, &w);
        double a = (double)h * w / (300.0 * 400.0), r = (double)w / h;
        if (a < 0.08 - 0.01 || a > 1.0 || r < 0.75 - 0.01 || r > 4.0 / 3 + 0.01 || top < 0 || left < 0 ||
            top + h > 300 || left + w > 400)
            ok = 0;
    }
    CHECK("RandomResizedCrop(scale 0.08-1) area and aspect stay in range on 400x300", ok, "a crop out of range");
    /* A 1000x100 strip: no try fits (aspect <= 4/3 needs h >= 75 but area >= 8000...) often
     * enough that the fallback shows: a central crop of the widest allowed ratio. */
    int fallbacks = 0, h, w, top, left;
    for (int i = 0; i < 2000; i++) {
        transform_random_resized_crop_params(t, 10, 1000, &rng, &top, &left, &h, &w);
        if (h == 10 && w == 13 && top == 0 && left == (1000 - 13) / 2) fallbacks++;
    }
    CHECK("RandomResizedCrop falls back to the central crop of ratio 4/3 on a 1000x10 strip", fallbacks > 1000,
          "%d of 2000 fallbacks", fallbacks);
    transform_free(t);

    /* Through transform_apply: the output size is the requested one. */
    Image rgb;
    if (load_fixture("chelsea.png", 3, &rgb)) return;
    t = transform_random_resized_crop(20, 30, (const double[]){0.08, 1.0}, (const double[]){3.0 / 4, 4.0 / 3});
    TransformResult r;
    CHECK("RandomResizedCrop output has the requested size",
          transform_apply(t, &rgb, &rng, &r) == 0 && r.image.height == 20 && r.image.width == 30 && !r.tensor, "%s",
          moco_last_error());
    transform_result_free(&r);
    /* Same draws, same result as params + resized_crop. */
    Rng a, b;
    rng_seed(&a, 99, 3);
    rng_seed(&b, 99, 3);
    Image manual;
    transform_random_resized_crop_params(t, rgb.height, rgb.width, &a, &top, &left, &h, &w);
    image_resized_crop(&manual, &rgb, top, left, h, w, 20, 30);
    CHECK("RandomResizedCrop = get_params + resized_crop",
          transform_apply(t, &rgb, &b, &r) == 0 && same_image(&r.image, &manual), "different images");
    image_free(&manual);
    transform_result_free(&r);
    transform_free(t);
    image_free(&rgb);
}

/* Fraction of `n` applications of t for which `applied` says it acted, checked against p
 * within 4 sigma. */
static void check_rate(const char *label, Transform *t, const Image *in, double p, int (*applied)(const Image *, const Image *)) {
    enum { N = 4000 };
    Rng rng;
    rng_seed(&rng, 42, 0);
    int hits = 0, ok = 1;
    for (int i = 0; i < N; i++) {
        TransformResult r;
        if (transform_apply(t, in, &rng, &r)) {
            ok = 0;
            break;
        }
        hits += applied(in, &r.image);
        transform_result_free(&r);
    }
    double sigma = sqrt(N * p * (1 - p)), dev = fabs(hits - N * p);
    char full[200];
    snprintf(full, sizeof full, "%s: %d of %d (expected %.0f, 4 sigma = %.0f)", label, hits, N, N * p, 4 * sigma);
    CHECK(full, ok && dev <= 4 * sigma + 1e-9, "deviation %.1f, %s", dev, ok ? "" : moco_last_error());
}

static int flipped(const Image *in, const Image *out) { return !same_image(in, out); }
static int grayed(const Image *in, const Image *out) { return out->channels == 3 && is_gray_rgb(out) && !is_gray_rgb(in); }

static void test_random_rates(void) {
    Image rgb;
    if (load_fixture("chelsea.png", 3, &rgb)) return;
    Transform *flip = transform_random_horizontal_flip(0.5);
    check_rate("RandomHorizontalFlip(0.5) rate", flip, &rgb, 0.5, flipped);
    Transform *gray = transform_random_grayscale(0.1);
    check_rate("RandomGrayscale(0.1) rate", gray, &rgb, 0.1, grayed);
    Transform *gray_always = transform_grayscale(3);
    Transform *apply = transform_random_apply(&gray_always, 1, 0.8);
    check_rate("RandomApply(Grayscale, 0.8) rate", apply, &rgb, 0.8, grayed);
    Transform *never = transform_random_apply(&gray_always, 1, 0.0);
    check_rate("RandomApply(p=0) never applies", never, &rgb, 0.0, grayed);
    TransformResult r;
    Rng rng;
    rng_seed(&rng, 1, 1);
    Transform *g1 = transform_random_grayscale(1.0);
    CHECK("RandomGrayscale keeps 3 channels", transform_apply(g1, &rgb, &rng, &r) == 0 && r.image.channels == 3, "%d",
          r.image.channels);
    transform_result_free(&r);
    transform_free(g1);
    transform_free(flip);
    transform_free(gray);
    transform_free(apply);
    transform_free(never);
    transform_free(gray_always);
    image_free(&rgb);
}

static void test_jitter_and_blur_wiring(void) {
    Image rgb;
    if (load_fixture("chelsea.png", 3, &rgb)) return;
    Rng rng;
    rng_seed(&rng, 5, 0);
    TransformResult r;
    struct {
        const char *fixture;
        const double *b, *c, *s, *h;
    } cases[] = {{"op_brightness_1.3", (const double[]){1.3, 1.3}, NULL, NULL, NULL},
                 {"op_contrast_0.7", NULL, (const double[]){0.7, 0.7}, NULL, NULL},
                 {"op_saturation_1.5", NULL, NULL, (const double[]){1.5, 1.5}, NULL},
                 {"op_hue_-0.2", NULL, NULL, NULL, (const double[]){-0.2, -0.2}}};
    for (int i = 0; i < 4; i++) {
        Transform *t = transform_color_jitter(cases[i].b, cases[i].c, cases[i].s, cases[i].h);
        Tensor *want = load_expected(cases[i].fixture);
        double d = transform_apply(t, &rgb, &rng, &r) == 0 ? diff_levels(&r.image, want) : -1;
        char label[160];
        snprintf(label, sizeof label, "ColorJitter with a fixed factor = %s (max diff %g/255)", cases[i].fixture + 3, d);
        CHECK(label, d == 0, "max diff %g", d);
        transform_result_free(&r);
        tensor_free(want);
        transform_free(t);
    }
    /* Brightness and contrast both fixed: the two orders give different images, and the
     * random permutation must produce both, about equally often. */
    Transform *t = transform_color_jitter((const double[]){1.4, 1.4}, (const double[]){0.5, 0.5}, NULL, NULL);
    Image bc, cb, tmp;
    image_adjust_brightness(&tmp, &rgb, 1.4f);
    image_adjust_contrast(&bc, &tmp, 0.5f);
    image_free(&tmp);
    image_adjust_contrast(&tmp, &rgb, 0.5f);
    image_adjust_brightness(&cb, &tmp, 1.4f);
    image_free(&tmp);
    int n_bc = 0, n_cb = 0, other = 0;
    for (int i = 0; i < 400; i++) {
        transform_apply(t, &rgb, &rng, &r);
        if (same_image(&r.image, &bc)) n_bc++;
        else if (same_image(&r.image, &cb)) n_cb++;
        else other++;
        transform_result_free(&r);
    }
    CHECK("ColorJitter applies its ops in a random order (both orders seen, ~1/2 each)",
          !same_image(&bc, &cb) && other == 0 && abs(n_bc - 200) <= 40, "b-then-c %d, c-then-b %d, other %d", n_bc, n_cb,
          other);
    image_free(&bc);
    image_free(&cb);
    transform_free(t);
    CHECK("ColorJitter refuses hue outside [-0.5, 0.5]",
          transform_color_jitter(NULL, NULL, NULL, (const double[]){-0.6, 0.1}) == NULL, "accepted");
    CHECK("ColorJitter refuses a negative brightness", transform_color_jitter((const double[]){-0.1, 1}, NULL, NULL, NULL) == NULL,
          "accepted");

    Transform *blur = transform_gaussian_blur(0.8, 0.8);
    Tensor *want = load_expected("op_blur_0.8");
    double d = transform_apply(blur, &rgb, &rng, &r) == 0 ? diff_levels(&r.image, want) : -1;
    CHECK("GaussianBlur{0.8, 0.8} = PIL GaussianBlur(0.8)", d == 0, "max diff %g", d);
    transform_result_free(&r);
    tensor_free(want);
    transform_free(blur);
    image_free(&rgb);
}

/* The MoCo v2 augmentation, as the recipes build it. */
static Transform *moco_v2_pipeline(int size) {
    Transform *rrc = transform_random_resized_crop(size, size, (const double[]){0.2, 1.0}, (const double[]){0.75, 4.0 / 3});
    Transform *jitter = transform_color_jitter((const double[]){0.6, 1.4}, (const double[]){0.6, 1.4},
                                               (const double[]){0.6, 1.4}, (const double[]){-0.1, 0.1});
    Transform *rj = transform_random_apply(&jitter, 1, 0.8);
    Transform *gray = transform_random_grayscale(0.2);
    Transform *blur = transform_gaussian_blur(0.1, 2.0);
    Transform *rb = transform_random_apply(&blur, 1, 0.5);
    Transform *flip = transform_random_horizontal_flip(0.5);
    Transform *tt = transform_to_tensor();
    Transform *norm = transform_normalize((const double[]){0.485, 0.456, 0.406}, (const double[]){0.229, 0.224, 0.225}, 3);
    Transform *items[] = {rrc, rj, gray, rb, flip, tt, norm};
    Transform *t = transform_compose(items, 7);
    Transform *owned[] = {rrc, jitter, rj, gray, blur, rb, flip, tt, norm};
    for (int i = 0; i < 9; i++) transform_free(owned[i]); /* the compose holds its own references */
    return t;
}

typedef struct Worker {
    const Transform *t;
    const Image *img;
    int first, count;
    Tensor **out;
} Worker;

static void *worker_main(void *arg) {
    Worker *w = arg;
    for (int i = w->first; i < w->first + w->count; i++) {
        Rng rng;
        rng_derive(&rng, 2024, 0, (uint64_t)i);
        TransformResult r;
        w->out[i] = transform_apply(w->t, w->img, &rng, &r) == 0 ? r.tensor : NULL;
    }
    return NULL;
}

static void test_pipeline(void) {
    Image rgb;
    if (load_fixture("astronaut.png", 3, &rgb)) return;
    Transform *t = moco_v2_pipeline(24);
    CHECK("MoCo v2 pipeline builds", t != NULL, "%s", moco_last_error());
    if (!t) return;
    CHECK("pipeline kinds: image in, tensor out",
          transform_input_kind(t) == TRANSFORM_IMAGE && transform_output_kind(t) == TRANSFORM_TENSOR, "%d -> %d",
          transform_input_kind(t), transform_output_kind(t));
    enum { SAMPLES = 48 };
    Tensor *serial[SAMPLES] = {0}, *parallel[SAMPLES] = {0};
    Worker one = {t, &rgb, 0, SAMPLES, serial};
    worker_main(&one);
    int shape_ok = 1;
    for (int i = 0; i < SAMPLES; i++)
        if (!serial[i] || serial[i]->ndim != 3 || serial[i]->shape[0] != 3 || serial[i]->shape[1] != 24 ||
            serial[i]->shape[2] != 24)
            shape_ok = 0;
    CHECK("pipeline gives (3, 24, 24) tensors", shape_ok, "%s", moco_last_error());
    pthread_t threads[4];
    Worker workers[4];
    for (int k = 0; k < 4; k++) {
        workers[k] = (Worker){t, &rgb, k * SAMPLES / 4, SAMPLES / 4, parallel};
        pthread_create(&threads[k], NULL, worker_main, &workers[k]);
    }
    for (int k = 0; k < 4; k++) pthread_join(threads[k], NULL);
    int same = 1, distinct = 0;
    for (int i = 0; i < SAMPLES; i++) {
        if (!serial[i] || !parallel[i] || memcmp(serial[i]->data, parallel[i]->data, tensor_nbytes(serial[i])) != 0) same = 0;
        if (i && serial[i] && serial[i - 1] && memcmp(serial[i]->data, serial[i - 1]->data, tensor_nbytes(serial[i])) != 0)
            distinct++;
    }
    CHECK("4 threads give the same results as 1 (same per-sample streams)", same, "results differ");
    CHECK("different streams give different views", distinct >= SAMPLES - 2, "%d distinct neighbours", distinct);
    for (int i = 0; i < SAMPLES; i++) {
        tensor_free(serial[i]);
        tensor_free(parallel[i]);
    }
    /* The input is never modified and the result is the caller's. */
    Image before;
    image_convert(&before, &rgb, 3);
    Rng rng;
    rng_seed(&rng, 3, 0);
    TransformResult r;
    transform_apply(t, &rgb, &rng, &r);
    CHECK("transform_apply leaves its input alone", same_image(&before, &rgb), "input changed");
    transform_result_free(&r);
    image_free(&before);

    char desc[2048];
    transform_describe(t, desc, sizeof desc);
    CHECK("describe starts like torchvision's Compose repr",
          strncmp(desc, "Compose(\n    RandomResizedCrop(size=(24, 24), scale=(0.2, 1.0), ratio=(0.75, 1.3333), "
                        "interpolation=bilinear, antialias=None)\n    RandomApply(\n    p=0.8\n    ColorJitter(brightness=[0.6, 1.4], "
                        "contrast=[0.6, 1.4], saturation=[0.6, 1.4], hue=[-0.1, 0.1])\n)\n    RandomGrayscale(p=0.2)",
                  strlen("Compose(\n    RandomResizedCrop(size=(24, 24), scale=(0.2, 1.0), ratio=(0.75, 1.3333), "
                         "interpolation=bilinear, antialias=None)\n    RandomApply(\n    p=0.8\n    ColorJitter(brightness=[0.6, 1.4], "
                         "contrast=[0.6, 1.4], saturation=[0.6, 1.4], hue=[-0.1, 0.1])\n)\n    RandomGrayscale(p=0.2)")) == 0,
          "got:\n%s", desc);
    CHECK("describe ends with Normalize's repr",
          strstr(desc, "ToTensor()\n    Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])\n)") != NULL,
          "got:\n%s", desc);
    char small[16];
    int need = transform_describe(t, small, sizeof small);
    CHECK("describe truncates safely and reports the full length", need == (int)strlen(desc) && strlen(small) == 15,
          "need %d, got '%s'", need, small);
    transform_free(t);
    image_free(&rgb);
}

static void test_pipeline_errors(void) {
    Transform *tt = transform_to_tensor(), *flip = transform_random_horizontal_flip(0.5);
    Transform *norm = transform_normalize((const double[]){0.5}, (const double[]){0.25}, 1);
    Transform *bad_order[] = {tt, flip};
    CHECK("an image op after ToTensor is refused when composing",
          transform_compose(bad_order, 2) == NULL && strstr(moco_last_error(), "before ToTensor"), "%s",
          moco_last_error());
    CHECK("RandomApply(ToTensor) is refused", transform_random_apply(&tt, 1, 0.5) == NULL, "accepted");
    CHECK("Normalize with std 0 is refused",
          transform_normalize((const double[]){0.5}, (const double[]){0.0}, 1) == NULL && strstr(moco_last_error(), "zero"),
          "%s", moco_last_error());
    CHECK("RandomResizedCrop with scale > 1 is refused",
          transform_random_resized_crop(8, 8, (const double[]){0.5, 1.5}, (const double[]){0.75, 1.33}) == NULL, "accepted");
    CHECK("p outside [0, 1] is refused", transform_random_horizontal_flip(1.5) == NULL, "accepted");
    Image rgb;
    if (load_fixture("camera.png", 0, &rgb)) return;
    Rng rng;
    rng_seed(&rng, 0, 0);
    TransformResult r;
    CHECK("Normalize applied to an image is an error",
          transform_apply(norm, &rgb, &rng, &r) == -1 && strstr(moco_last_error(), "ToTensor"), "%s", moco_last_error());
    /* A lone Normalize on a tensor, with one mean/std for a 1-channel image. */
    Tensor *x = image_to_tensor(&rgb);
    CHECK("Normalize on a tensor works", transform_apply_tensor(norm, x, &rng, &r) == 0 && r.tensor &&
          fabsf(r.tensor->data[0] - (x->data[0] - 0.5f) / 0.25f) < 1e-6f, "%s", moco_last_error());
    transform_result_free(&r);
    tensor_free(x);
    /* Resize by the shorter side, no-op when already that size; an empty Compose copies. */
    Transform *rs = transform_resize_shorter(30, 0);
    CHECK("Resize(30) of a 40x30 image returns it unchanged",
          transform_apply(rs, &rgb, &rng, &r) == 0 && same_image(&r.image, &rgb) && r.image.data != rgb.data, "%s",
          moco_last_error());
    transform_result_free(&r);
    Transform *empty = transform_compose(NULL, 0);
    CHECK("an empty Compose returns a copy", transform_apply(empty, &rgb, &rng, &r) == 0 && same_image(&r.image, &rgb),
          "%s", moco_last_error());
    transform_result_free(&r);
    CHECK("Resize(max_size <= size) is refused", transform_resize_shorter(30, 20) == NULL, "accepted");
    transform_free(empty);
    transform_free(rs);
    transform_free(tt);
    transform_free(flip);
    transform_free(norm);
    image_free(&rgb);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/moco_test_image_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_decode_against_pil();
    test_decode_errors();
    test_truncated_and_corrupt();
    test_save_roundtrip();
    test_ops_against_torchvision();
    test_op_errors();
    test_random_resized_crop_stats();
    test_random_rates();
    test_jitter_and_blur_wiring();
    test_pipeline();
    test_pipeline_errors();
    remove_tmp_files();
    CHECK_DONE();
}
