/* core/image/resize.c: crops, flips and PIL's bilinear resampling.
 *
 * The resampler is a re-implementation of Pillow's Resample.c (ImagingResample with the
 * BILINEAR filter) for 8-bit images, so the results are byte-identical to PIL's resize:
 * per output pixel a triangle filter of support 1 scaled by max(1, in/out) (antialiasing
 * when shrinking), coefficients normalised in double and rounded to 22-bit fixed point,
 * a horizontal pass over only the rows the vertical pass needs, then the vertical pass,
 * each rounding (+0.5 ulp, then >> 22) and clipping to 0..255.  A pass whose size does
 * not change is skipped, exactly as Pillow skips it. */
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

#define PRECISION_BITS (32 - 8 - 2)

static int check_input(const Image *in, const char *op) {
    if (!in || !in->data || in->width <= 0 || in->height <= 0 || (in->channels != 1 && in->channels != 3))
        return moco_error("%s: invalid input image (empty, or channels not 1 or 3)", op);
    return 0;
}

/* ------------------------------------------------------------ crops and flips */

int image_crop(Image *out, const Image *in, int top, int left, int height, int width) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "crop")) return -1;
    if (height <= 0 || width <= 0) return moco_error("crop: size must be positive, got %dx%d (h x w)", height, width);
    if (image_alloc(out, width, height, in->channels)) return moco_error_prefix("crop: ");
    int c = in->channels;
    memset(out->data, 0, (size_t)width * (size_t)height * (size_t)c);
    /* The part of the crop that overlaps the image; the rest stays zero as in PIL. */
    int x0 = left < 0 ? 0 : left, x1 = left + width > in->width ? in->width : left + width;
    int y0 = top < 0 ? 0 : top, y1 = top + height > in->height ? in->height : top + height;
    if (x0 >= x1 || y0 >= y1) return 0;
    for (int y = y0; y < y1; y++)
        memcpy(out->data + ((size_t)(y - top) * width + (size_t)(x0 - left)) * c,
               in->data + ((size_t)y * in->width + (size_t)x0) * c, (size_t)(x1 - x0) * c);
    return 0;
}

/* (size - crop) / 2 rounded as Python's round(): half to even, which nearbyint does in
 * the default rounding mode. */
static int center_offset(int size, int crop) {
    if (crop > size) return -((crop - size) / 2); /* torchvision pads (crop - size) // 2 first */
    return (int)nearbyint((size - crop) / 2.0);
}

int image_center_crop(Image *out, const Image *in, int height, int width) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "center_crop")) return -1;
    return image_crop(out, in, center_offset(in->height, height), center_offset(in->width, width), height, width);
}

int image_hflip(Image *out, const Image *in) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "hflip")) return -1;
    if (image_alloc(out, in->width, in->height, in->channels)) return -1;
    int c = in->channels, w = in->width;
    for (int y = 0; y < in->height; y++) {
        const uint8_t *src = in->data + (size_t)y * w * c;
        uint8_t *dst = out->data + (size_t)y * w * c;
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) dst[(size_t)x * c + k] = src[(size_t)(w - 1 - x) * c + k];
    }
    return 0;
}

void image_resized_shorter_side(int height, int width, int size, int max_size, int *out_height, int *out_width) {
    int shorter = width <= height ? width : height, longer = width <= height ? height : width;
    /* int(size * long / short): Python's true division, then truncation. */
    int new_short = size, new_long = (int)((double)size * longer / shorter);
    if (max_size > 0 && new_long > max_size) {
        new_short = (int)((double)max_size * new_short / new_long);
        new_long = max_size;
    }
    *out_width = width <= height ? new_short : new_long;
    *out_height = width <= height ? new_long : new_short;
}

/* ------------------------------------------------------------ PIL's resampler */

typedef struct Coeffs {
    int ksize;      /* coefficients per output pixel */
    int *bounds;    /* per output pixel: first input index, count */
    int32_t *k;     /* out_size * ksize fixed-point weights */
} Coeffs;

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs for the box [0, in_size) and normalize_coeffs_8bpc. */
static int precompute_coeffs(Coeffs *c, int in_size, int out_size) {
    const double filter_support = 1.0; /* BILINEAR */
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = malloc(sizeof *c->bounds * 2 * (size_t)out_size);
    c->k = malloc(sizeof *c->k * (size_t)out_size * (size_t)c->ksize);
    double *w = malloc(sizeof *w * (size_t)c->ksize);
    if (!c->bounds || !c->k || !w) {
        free(w);
        return moco_error("resize: out of memory for the filter coefficients");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        int x;
        for (x = 0; x < xmax; x++) {
            w[x] = bilinear_filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) w[x] /= ww;
        for (; x < c->ksize; x++) w[x] = 0;
        int32_t *k = c->k + (size_t)xx * c->ksize;
        for (x = 0; x < c->ksize; x++)
            k[x] = w[x] < 0 ? (int32_t)(-0.5 + w[x] * (1 << PRECISION_BITS))
                            : (int32_t)(0.5 + w[x] * (1 << PRECISION_BITS));
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(w);
    return 0;
}

static void free_coeffs(Coeffs *c) {
    free(c->bounds);
    free(c->k);
}

static inline uint8_t clip8(int v) {
    v >>= PRECISION_BITS; /* arithmetic shift: floor, as Pillow's lookup table */
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* A read-only window on an image: (x0, y0) is its corner inside the full image. */
typedef struct View {
    const uint8_t *data;
    int stride;       /* bytes per full row */
    int x0, y0, width, height, channels;
} View;

/* out (out_w x rows) = horizontal pass over rows [first_row, first_row + rows) of src. */
static void resample_horizontal(uint8_t *out, int out_w, int rows, const View *src, int first_row, const Coeffs *c) {
    int ch = src->channels;
    for (int yy = 0; yy < rows; yy++) {
        const uint8_t *line = src->data + (size_t)(src->y0 + first_row + yy) * src->stride + (size_t)src->x0 * ch;
        uint8_t *dst = out + (size_t)yy * out_w * ch;
        for (int xx = 0; xx < out_w; xx++) {
            int xmin = c->bounds[2 * xx], xmax = c->bounds[2 * xx + 1];
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            for (int kch = 0; kch < ch; kch++) {
                int ss = 1 << (PRECISION_BITS - 1);
                for (int x = 0; x < xmax; x++) ss += line[(size_t)(x + xmin) * ch + kch] * k[x];
                dst[(size_t)xx * ch + kch] = clip8(ss);
            }
        }
    }
}

/* out (src width x out_h) = vertical pass over src; bounds relative to src's first row. */
static void resample_vertical(uint8_t *out, int out_h, const View *src, const Coeffs *c) {
    int ch = src->channels, w = src->width;
    for (int yy = 0; yy < out_h; yy++) {
        int ymin = c->bounds[2 * yy], ymax = c->bounds[2 * yy + 1];
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        uint8_t *dst = out + (size_t)yy * w * ch;
        for (int i = 0; i < w * ch; i++) {
            int ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++)
                ss += src->data[(size_t)(src->y0 + y + ymin) * src->stride + (size_t)src->x0 * ch + i] * k[y];
            dst[i] = clip8(ss);
        }
    }
}

/* Pillow's ImagingResampleInner on the window `src`, as if it were a whole image (which
 * is what torchvision's crop-then-resize gives PIL). */
static int resample(Image *out, const View *src, int out_h, int out_w) {
    int need_h = out_w != src->width, need_v = out_h != src->height;
    if (image_alloc(out, out_w, out_h, src->channels)) return moco_error_prefix("resize: ");
    if (!need_h && !need_v) {
        for (int y = 0; y < out_h; y++)
            memcpy(out->data + (size_t)y * out_w * src->channels,
                   src->data + (size_t)(src->y0 + y) * src->stride + (size_t)src->x0 * src->channels,
                   (size_t)out_w * src->channels);
        return 0;
    }
    Coeffs ch = {0}, cv = {0};
    uint8_t *temp = NULL;
    int rc = -1;
    if (precompute_coeffs(&cv, src->height, out_h)) goto done;
    if (!need_v) {
        /* Horizontal only: the rows map one to one. */
        if (precompute_coeffs(&ch, src->width, out_w)) goto done;
        resample_horizontal(out->data, out_w, out_h, src, 0, &ch);
        rc = 0;
        goto done;
    }
    if (need_h) {
        /* Only the source rows the vertical pass reads: [first, last). */
        int first = cv.bounds[0], last = cv.bounds[2 * out_h - 2] + cv.bounds[2 * out_h - 1];
        if (precompute_coeffs(&ch, src->width, out_w)) goto done;
        temp = malloc((size_t)out_w * (size_t)(last - first) * src->channels);
        if (!temp) {
            moco_error("resize: out of memory");
            goto done;
        }
        resample_horizontal(temp, out_w, last - first, src, first, &ch);
        for (int i = 0; i < out_h; i++) cv.bounds[2 * i] -= first;
        View mid = {temp, out_w * src->channels, 0, 0, out_w, last - first, src->channels};
        resample_vertical(out->data, out_h, &mid, &cv);
    } else {
        resample_vertical(out->data, out_h, src, &cv);
    }
    rc = 0;
done:
    free(temp);
    free_coeffs(&ch);
    free_coeffs(&cv);
    if (rc) image_free(out);
    return rc;
}

static int check_size(int height, int width, const char *op) {
    if (height <= 0 || width <= 0) return moco_error("%s: output size must be positive, got %dx%d (h x w)", op, height, width);
    if ((long long)height * width > (1LL << 28))
        return moco_error("%s: output size %dx%d (h x w) is too large", op, height, width);
    return 0;
}

int image_resize(Image *out, const Image *in, int height, int width) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "resize") || check_size(height, width, "resize")) return -1;
    View v = {in->data, in->width * in->channels, 0, 0, in->width, in->height, in->channels};
    return resample(out, &v, height, width);
}

int image_resized_crop(Image *out, const Image *in, int top, int left, int height, int width, int out_height,
                       int out_width) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "resized_crop") || check_size(out_height, out_width, "resized_crop")) return -1;
    if (top < 0 || left < 0 || height <= 0 || width <= 0 || top + height > in->height || left + width > in->width)
        return moco_error("resized_crop: crop (top %d, left %d, height %d, width %d) is not inside the %dx%d image",
                          top, left, height, width, in->width, in->height);
    View v = {in->data, in->width * in->channels, left, top, width, height, in->channels};
    return resample(out, &v, out_height, out_width);
}
