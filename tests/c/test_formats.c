/* tests/c/test_formats.c: every image format and colour variant the decoders take, held to
 * PIL's pixels (issue 15).
 *
 * tests/make_fixtures_images.py writes tests/fixtures/images/formats/: CMYK, YCCK and
 * Adobe-RGB JPEGs, PNGs of every colour type and bit depth with and without tRNS, WebP
 * (lossy, lossless, alpha, animated) and GIF (palettes, transparency, first frame of an
 * animation, a frame smaller than the screen), and files whose extension lies, with PIL's
 * Image.open(f).convert("RGB") and .convert("L") of each.  The tolerance per file is in
 * manifest.txt; all are 0 (exact), since we decode with the same libraries as Debian's PIL
 * and reproduce its conversions in integer arithmetic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "image/image.h"
#include "tensor.h"

#define DIR "tests/fixtures/images/formats/"

/* Max |img - reference| over all samples (the reference holds 0..255 as float32, HWC);
 * -1 when the shapes differ. */
static double max_diff(const Image *img, const Tensor *ref) {
    int c = ref->ndim == 3 ? (int)ref->shape[2] : 1;
    if (ref->shape[0] != img->height || ref->shape[1] != img->width || c != img->channels) return -1;
    double m = 0;
    for (int64_t i = 0; i < ref->numel; i++) {
        double d = fabs((double)img->data[i] - ref->data[i]);
        if (d > m) m = d;
    }
    return m;
}

static void check_file(const char *file, double tol) {
    char path[512], ref_path[512], label[700];
    snprintf(path, sizeof path, DIR "%s", file);
    static const struct {
        int channels;
        const char *suffix, *mode;
    } modes[] = {{3, "rgb", "RGB"}, {1, "l", "L"}};
    for (int m = 0; m < 2; m++) {
        snprintf(ref_path, sizeof ref_path, DIR "%s.%s.npy", file, modes[m].suffix);
        Tensor *ref = tensor_load_npy(ref_path);
        Image img;
        int rc = image_load(path, modes[m].channels, &img);
        double d = rc == 0 && ref ? max_diff(&img, ref) : -1;
        snprintf(label, sizeof label, "%s as %s equals PIL's convert(\"%s\") (max diff %g, tol %g)", file,
                 modes[m].mode, modes[m].mode, d, tol);
        CHECK(label, rc == 0 && ref && d >= 0 && d <= tol, "%s", rc ? moco_last_error() : ref ? "shape or pixels differ"
                                                                                      : "no reference");
        image_free(&img);
        tensor_free(ref);
    }
}

int main(void) {
    FILE *f = fopen(DIR "manifest.txt", "r");
    CHECK("the format fixtures' manifest exists", f != NULL, "run /usr/bin/python3 tests/make_fixtures_images.py");
    if (!f) CHECK_DONE();
    char line[512];
    int files = 0;
    while (fgets(line, sizeof line, f)) {
        char name[300];
        double tol;
        if (line[0] == '#' || sscanf(line, "%299s %lf", name, &tol) != 2) continue;
        check_file(name, tol);
        files++;
    }
    fclose(f);
    CHECK("every format fixture was checked", files >= 29, "%d files", files);

    /* Content, not the name, decides: a PNG named .JPEG and a JPEG named .png decode. */
    Image img;
    int rc = image_load(DIR "png_named.JPEG", 0, &img);
    CHECK("a PNG named .JPEG decodes (as RGB, PIL's mode)", rc == 0 && img.channels == 3, "%s", moco_last_error());
    image_free(&img);
    /* Gray sources stay gray with channels 0 (PIL's mode L): a gray GIF palette, a gray JPEG. */
    rc = image_load(DIR "gray_progressive.jpg", 0, &img);
    CHECK("a gray JPEG with channels 0 stays gray", rc == 0 && img.channels == 1, "%s", moco_last_error());
    image_free(&img);
    rc = image_load(DIR "ycck.jpg", 0, &img);
    CHECK("a YCCK JPEG with channels 0 is RGB", rc == 0 && img.channels == 3, "%s", moco_last_error());
    image_free(&img);

    /* Truncated WebP and GIF files are errors naming the file.  (A GIF cut after its
     * first frame's pixels is a whole first frame, so GIFs are cut in their first 80%.) */
    static const char *const damaged[] = {"lossy.webp", "lossless.webp", "lossy_alpha.webp", "palette.gif",
                                          "transparency.gif"};
    for (size_t i = 0; i < sizeof damaged / sizeof *damaged; i++) {
        char path[256], label[300];
        snprintf(path, sizeof path, DIR "%s", damaged[i]);
        FILE *in = fopen(path, "rb");
        uint8_t buf[1 << 16];
        size_t n = in ? fread(buf, 1, sizeof buf, in) : 0;
        if (in) fclose(in);
        int bad = 0;
        size_t end = strstr(damaged[i], ".gif") ? n * 4 / 5 : n - 1;
        for (size_t cut = 0; cut < end; cut += 1 + n / 64) {
            if (image_decode(buf, cut, 3, &img, path) == 0 || !strstr(moco_last_error(), path)) bad++;
            image_free(&img);
        }
        snprintf(label, sizeof label, "every truncation of %s is an error naming the file", damaged[i]);
        CHECK(label, n > 0 && bad == 0, "%d of the prefixes decoded or gave no name (%s)", bad, moco_last_error());
    }
    CHECK_DONE();
}
