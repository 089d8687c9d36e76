/* core/image/color.c: colour conversions and torchvision's adjust_* on PIL images.
 *
 * torchvision 0.14 implements brightness, contrast and saturation on PIL images with
 * PIL.ImageEnhance, i.e. Image.blend(degenerate, image, factor), and hue with a round trip
 * through PIL's 8-bit HSV mode.  The arithmetic below copies Pillow's (Blend.c,
 * Convert.c) down to the float/double types of each expression, because the results are
 * truncated to integers and a different rounding would move values by one level. */
#include <math.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "functional.h"

/* Pillow's results depend on every float rounding: forbid fusing a*b+c into one FMA
 * instruction, which GCC does under -march=native with its default -ffp-contract=fast. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static int check_input(const Image *in, const char *op) {
    if (!in || !in->data || in->width <= 0 || in->height <= 0 || (in->channels != 1 && in->channels != 3))
        return moco_error("%s: invalid input image (empty, or channels not 1 or 3)", op);
    return 0;
}

static size_t pixel_count(const Image *img) { return (size_t)img->width * (size_t)img->height; }

int image_convert(Image *out, const Image *in, int channels) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "convert")) return -1;
    if (channels != 1 && channels != 3) return moco_error("convert: channels must be 1 or 3, got %d", channels);
    if (image_alloc(out, in->width, in->height, channels)) return -1;
    size_t n = pixel_count(in);
    const uint8_t *s = in->data;
    uint8_t *d = out->data;
    if (in->channels == channels) {
        memcpy(d, s, n * (size_t)channels);
    } else if (channels == 1) {
        for (size_t i = 0; i < n; i++) d[i] = image_luma(s[3 * i], s[3 * i + 1], s[3 * i + 2]);
    } else {
        for (size_t i = 0; i < n; i++) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
    }
    return 0;
}

int image_to_grayscale(Image *out, const Image *in, int num_output_channels) {
    memset(out, 0, sizeof *out);
    if (num_output_channels != 1 && num_output_channels != 3)
        return moco_error("rgb_to_grayscale: num_output_channels should be either 1 or 3, got %d", num_output_channels);
    if (check_input(in, "rgb_to_grayscale")) return -1;
    if (num_output_channels == 1 || in->channels == 1) return image_convert(out, in, num_output_channels);
    /* convert("L"), then the gray plane stacked three times. */
    if (image_alloc(out, in->width, in->height, 3)) return -1;
    size_t n = pixel_count(in);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = in->data + 3 * i;
        out->data[3 * i] = out->data[3 * i + 1] = out->data[3 * i + 2] = image_luma(p[0], p[1], p[2]);
    }
    return 0;
}

/* Pillow's ImagingBlend for one byte: in1 + alpha * (in2 - in1) evaluated in float, then
 * truncated; clipped only on the extrapolation path (alpha outside [0, 1]), exactly as
 * Blend.c branches. */
static inline uint8_t blend_byte(int in1, int in2, float alpha, int extrapolate) {
    float v = (float)in1 + alpha * (float)(in2 - in1);
    if (!extrapolate) return (uint8_t)v;
    if (v <= 0.0f) return 0;
    if (v >= 255.0f) return 255;
    return (uint8_t)v;
}

static int check_factor(float factor, const char *op) {
    if (!(factor >= 0.0f) || isinf(factor)) return moco_error("%s: factor must be a non-negative number, got %g", op, (double)factor);
    return 0;
}

int image_adjust_brightness(Image *out, const Image *in, float factor) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "adjust_brightness") || check_factor(factor, "adjust_brightness")) return -1;
    if (image_alloc(out, in->width, in->height, in->channels)) return -1;
    int extrapolate = !(factor >= 0.0f && factor <= 1.0f);
    size_t n = pixel_count(in) * (size_t)in->channels;
    for (size_t i = 0; i < n; i++) out->data[i] = blend_byte(0, in->data[i], factor, extrapolate);
    return 0;
}

int image_adjust_contrast(Image *out, const Image *in, float factor) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "adjust_contrast") || check_factor(factor, "adjust_contrast")) return -1;
    /* ImageEnhance.Contrast: mean = int(ImageStat.Stat(img.convert("L")).mean[0] + 0.5). */
    size_t n = pixel_count(in);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += in->channels == 1 ? in->data[i] : image_luma(in->data[3 * i], in->data[3 * i + 1], in->data[3 * i + 2]);
    int mean = (int)(sum / (double)n + 0.5);
    if (image_alloc(out, in->width, in->height, in->channels)) return -1;
    int extrapolate = !(factor >= 0.0f && factor <= 1.0f);
    for (size_t i = 0; i < n * (size_t)in->channels; i++) out->data[i] = blend_byte(mean, in->data[i], factor, extrapolate);
    return 0;
}

int image_adjust_saturation(Image *out, const Image *in, float factor) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "adjust_saturation") || check_factor(factor, "adjust_saturation")) return -1;
    if (image_alloc(out, in->width, in->height, in->channels)) return -1;
    int extrapolate = !(factor >= 0.0f && factor <= 1.0f);
    size_t n = pixel_count(in);
    if (in->channels == 1) { /* the degenerate of a gray image is itself */
        for (size_t i = 0; i < n; i++) out->data[i] = blend_byte(in->data[i], in->data[i], factor, extrapolate);
        return 0;
    }
    /* ImageEnhance.Color: the degenerate is convert("L").convert("RGB"). */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = in->data + 3 * i;
        int gray = image_luma(p[0], p[1], p[2]);
        for (int k = 0; k < 3; k++) out->data[3 * i + k] = blend_byte(gray, p[k], factor, extrapolate);
    }
    return 0;
}

/* ------------------------------------------------------------ hue */

static inline uint8_t clip8i(int v) { return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v; }

/* Pillow's rgb2hsv_row (float intermediates, double where the C literals make it so). */
static void rgb_to_hsv(uint8_t hsv[3], const uint8_t rgb[3]) {
    uint8_t r = rgb[0], g = rgb[1], b = rgb[2];
    uint8_t maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
    uint8_t minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    hsv[2] = maxc;
    if (minc == maxc) {
        hsv[0] = hsv[1] = 0;
        return;
    }
    float cr = (float)(maxc - minc);
    float s = cr / (float)maxc;
    float rc = (float)(maxc - r) / cr, gc = (float)(maxc - g) / cr, bc = (float)(maxc - b) / cr;
    float h;
    if (r == maxc)
        h = bc - gc;
    else if (g == maxc)
        h = (float)(2.0 + rc - bc);
    else
        h = (float)(4.0 + gc - rc);
    h = (float)fmod(h / 6.0 + 1.0, 1.0);
    hsv[0] = clip8i((int)(h * 255.0));
    hsv[1] = clip8i((int)(s * 255.0));
}

/* Pillow's hsv2rgb. */
static void hsv_to_rgb(uint8_t rgb[3], const uint8_t hsv[3]) {
    uint8_t h = hsv[0], s = hsv[1], v = hsv[2];
    if (s == 0) {
        rgb[0] = rgb[1] = rgb[2] = v;
        return;
    }
    int i = (int)floor((float)h * 6.0 / 255.0);
    float f = (float)((float)h * 6.0 / 255.0 - (float)i);
    float fs = (float)((float)s / 255.0);
    uint8_t up = clip8i((int)round((float)v * (1.0 - fs)));
    uint8_t uq = clip8i((int)round((float)v * (1.0 - (float)(fs * f))));
    uint8_t ut = clip8i((int)round((float)v * (1.0 - fs * (1.0 - f))));
    switch (i % 6) {
    case 0: rgb[0] = v;  rgb[1] = ut; rgb[2] = up; break;
    case 1: rgb[0] = uq; rgb[1] = v;  rgb[2] = up; break;
    case 2: rgb[0] = up; rgb[1] = v;  rgb[2] = ut; break;
    case 3: rgb[0] = up; rgb[1] = uq; rgb[2] = v;  break;
    case 4: rgb[0] = ut; rgb[1] = up; rgb[2] = v;  break;
    default: rgb[0] = v; rgb[1] = up; rgb[2] = uq; break;
    }
}

int image_adjust_hue(Image *out, const Image *in, double hue_factor) {
    memset(out, 0, sizeof *out);
    if (check_input(in, "adjust_hue")) return -1;
    if (!(hue_factor >= -0.5 && hue_factor <= 0.5))
        return moco_error("adjust_hue: hue_factor (%g) is not in [-0.5, 0.5]", hue_factor);
    if (image_alloc(out, in->width, in->height, in->channels)) return -1;
    size_t n = pixel_count(in);
    if (in->channels == 1) { /* torchvision returns gray images unchanged */
        memcpy(out->data, in->data, n);
        return 0;
    }
    /* np.uint8(hue_factor * 255): the double is truncated toward zero and wraps modulo
     * 256 (so -0.2 gives -51 -> 205); the uint8 addition then wraps as well. */
    uint8_t shift = (uint8_t)(long long)(hue_factor * 255.0);
    for (size_t i = 0; i < n; i++) {
        uint8_t hsv[3];
        rgb_to_hsv(hsv, in->data + 3 * i);
        hsv[0] = (uint8_t)(hsv[0] + shift);
        hsv_to_rgb(out->data + 3 * i, hsv);
    }
    return 0;
}
