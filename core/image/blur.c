/* core/image/blur.c: PIL's ImageFilter.GaussianBlur, which MoCo v2 uses as its blur.
 *
 * PIL does not convolve with a Gaussian: it runs three passes of an "extended box" blur in
 * each direction, whose fractional radius is chosen so that the three passes have the
 * Gaussian's variance (Gwosdek, Grewenig, Bruhn, Weickert, SSVM 2011).  This file follows
 * Pillow's BoxBlur.c step by step -- the float radius arithmetic, the 24-bit fixed-point
 * weights, the edge handling that repeats the border pixel, the rounding after every pass
 * and the order (all horizontal passes, then all vertical ones) -- so the output is the
 * same bytes as PIL's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "functional.h"

/* Pillow's results depend on every float rounding: forbid fusing a*b+c into one FMA
 * instruction, which GCC does under -march=native with its default -ffp-contract=fast. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define BLUR_PASSES 3

/* Pillow's _gaussian_blur_radius: the extended-box radius for one of `passes` passes. */
static float box_radius_for_sigma(float sigma, int passes) {
    float sigma2 = sigma * sigma / (float)passes;
    float big_l = (float)sqrt(12.0 * sigma2 + 1.0);          /* box length, eq. [7] */
    float l = (float)floor((big_l - 1.0) / 2.0);             /* integer radius, eq. [11] */
    float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);      /* fractional part, eq. [14] */
    a /= 6 * (sigma2 - (l + 1) * (l + 1));
    return l + a;
}

/* One pass of Pillow's ImagingLineBoxBlur8 over `n` samples spaced `step` bytes apart in
 * `in`, written contiguously to `out` (a line buffer, as Pillow's in-place passes use). */
static void box_blur_line(uint8_t *out, const uint8_t *in, int n, size_t step, int radius, uint32_t ww, uint32_t fw) {
    int lastx = n - 1;
    int edge_a = radius + 1 < n ? radius + 1 : n;
    int edge_b = n - radius - 1 > 0 ? n - radius - 1 : 0;
#define AT(i) ((uint32_t)in[(size_t)(i) * step])
#define MOVE_ACC(sub, add) acc += AT(add) - AT(sub)
#define SAVE(x, left, right)                                             \
    do {                                                                 \
        uint32_t bulk = acc * ww + (AT(left) + AT(right)) * fw;          \
        out[x] = (uint8_t)((bulk + (1u << 23)) >> 24);                    \
    } while (0)
    /* The accumulator for pixel -1: the first pixel repeated radius+1 times (the virtual
     * pixels left of the image), then pixels 0 .. radius-1, clamped to the last pixel. */
    uint32_t acc = AT(0) * (uint32_t)(radius + 1);
    int x;
    for (x = 0; x < edge_a - 1; x++) acc += AT(x);
    acc += AT(lastx) * (uint32_t)(radius - edge_a + 1);
    if (edge_a <= edge_b) {
        for (x = 0; x < edge_a; x++) {
            MOVE_ACC(0, x + radius);
            SAVE(x, 0, x + radius + 1);
        }
        for (x = edge_a; x < edge_b; x++) {
            MOVE_ACC(x - radius - 1, x + radius);
            SAVE(x, x - radius - 1, x + radius + 1);
        }
        for (x = edge_b; x <= lastx; x++) {
            MOVE_ACC(x - radius - 1, lastx);
            SAVE(x, x - radius - 1, lastx);
        }
    } else {
        for (x = 0; x < edge_b; x++) {
            MOVE_ACC(0, x + radius);
            SAVE(x, 0, x + radius + 1);
        }
        for (x = edge_b; x < edge_a; x++) {
            MOVE_ACC(0, lastx);
            SAVE(x, 0, lastx);
        }
        for (x = edge_a; x <= lastx; x++) {
            MOVE_ACC(x - radius - 1, lastx);
            SAVE(x, x - radius - 1, lastx);
        }
    }
#undef AT
#undef MOVE_ACC
#undef SAVE
}

int image_gaussian_blur(Image *out, const Image *in, float radius) {
    memset(out, 0, sizeof *out);
    if (!in || !in->data || in->width <= 0 || in->height <= 0 || (in->channels != 1 && in->channels != 3))
        return moco_error("gaussian_blur: invalid input image (empty, or channels not 1 or 3)");
    if (!(radius >= 0.0f) || isinf(radius)) return moco_error("gaussian_blur: radius must be >= 0, got %g", (double)radius);
    if (image_alloc(out, in->width, in->height, in->channels)) return -1;
    int w = in->width, h = in->height, c = in->channels;
    size_t row = (size_t)w * c;
    memcpy(out->data, in->data, row * h);

    float box = box_radius_for_sigma(radius, BLUR_PASSES);
    int iradius = (int)box;
    /* Pillow: ww = (UINT32)(1 << 24) / (r * 2 + 1) in float, fw the remainder split over
     * the two fractional end pixels. */
    uint32_t ww = (uint32_t)((float)(uint32_t)(1 << 24) / (box * 2 + 1));
    uint32_t fw = ((1u << 24) - (uint32_t)(iradius * 2 + 1) * ww) / 2;

    /* Pillow blurs rows in place through a line buffer; the same here, one channel at a
     * time (channels never mix). */
    int longest = w > h ? w : h;
    uint8_t *line = malloc((size_t)longest);
    if (!line) {
        image_free(out);
        return moco_error("gaussian_blur: out of memory");
    }
    for (int pass = 0; pass < BLUR_PASSES; pass++)
        for (int y = 0; y < h; y++)
            for (int k = 0; k < c; k++) {
                uint8_t *start = out->data + (size_t)y * row + k;
                box_blur_line(line, start, w, (size_t)c, iradius, ww, fw);
                for (int x = 0; x < w; x++) start[(size_t)x * c] = line[x];
            }
    for (int pass = 0; pass < BLUR_PASSES; pass++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                uint8_t *start = out->data + (size_t)x * c + k;
                box_blur_line(line, start, h, row, iradius, ww, fw);
                for (int y = 0; y < h; y++) start[(size_t)y * row] = line[y];
            }
    free(line);
    return 0;
}
