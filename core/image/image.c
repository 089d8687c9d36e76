/* core/image/image.c: the Image type, format detection and file I/O around the codecs
 * (png.c, jpeg.c, webp.c, gif.c), and the conversions between images and tensors (to_tensor,
 * from_tensor, normalize, the preview grid). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "functional.h"
#include "image.h"
#include "io/file.h"

int image_alloc(Image *img, int width, int height, int channels) {
    memset(img, 0, sizeof *img);
    if (width <= 0 || height <= 0 || (channels != 1 && channels != 3))
        return moco_error("image_alloc: invalid image %dx%d with %d channels (sizes must be positive, "
                          "channels 1 or 3)", width, height, channels);
    if ((long long)width * height > IMAGE_ALLOC_MAX_PIXELS)
        return moco_error("image_alloc: %dx%d is more than %lld pixels", width, height, IMAGE_ALLOC_MAX_PIXELS);
    size_t n = (size_t)width * (size_t)height * (size_t)channels;
    img->data = malloc(n);
    if (!img->data) return moco_error("image_alloc: out of memory for a %dx%dx%d image", width, height, channels);
    img->width = width;
    img->height = height;
    img->channels = channels;
    return 0;
}

void image_free(Image *img) {
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------------ limits */

static long long limit_pixels = IMAGE_DEFAULT_MAX_PIXELS;
static int limit_scans = IMAGE_DEFAULT_MAX_SCANS;
static _Thread_local const int *cancel_flag;

long long image_max_pixels(void) { return __atomic_load_n(&limit_pixels, __ATOMIC_RELAXED); }
int image_max_scans(void) { return __atomic_load_n(&limit_scans, __ATOMIC_RELAXED); }

void image_get_limits(ImageLimits *out) {
    out->max_pixels = image_max_pixels();
    out->max_scans = image_max_scans();
}

int image_set_limits(const ImageLimits *limits) {
    if (limits->max_pixels < 1 || limits->max_pixels > IMAGE_ALLOC_MAX_PIXELS)
        return moco_error("image limits: max_pixels must be between 1 and %lld, got %lld", IMAGE_ALLOC_MAX_PIXELS,
                          limits->max_pixels);
    if (limits->max_scans < 1 || limits->max_scans > 1000000)
        return moco_error("image limits: max_scans must be between 1 and 1000000, got %d", limits->max_scans);
    __atomic_store_n(&limit_pixels, limits->max_pixels, __ATOMIC_RELAXED);
    __atomic_store_n(&limit_scans, limits->max_scans, __ATOMIC_RELAXED);
    return 0;
}

void image_set_cancel_flag(const int *flag) { cancel_flag = flag; }

int image_cancelled(void) {
    return cancel_flag ? __atomic_load_n(cancel_flag, __ATOMIC_RELAXED) != 0 : moco_interrupt_requested != 0;
}

int image_check_size(long long width, long long height) {
    if (width <= 0 || height <= 0) return moco_error("image has an empty size %lldx%lld", width, height);
    long long limit = image_max_pixels();
    if (width > limit || height > limit || width * height > limit)
        return moco_error("image size %lldx%lld (%lld pixels) exceeds the limit of %lld pixels (a decompression "
                          "bomb? moco.image.set_limits{max_pixels = ...} raises it)",
                          width, height, width * height, limit);
    return 0;
}

/* ------------------------------------------------------------ decoding */

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* The name of a format we recognise but do not decode, from its magic bytes, or NULL.
 * ImageFolder accepts torchvision's extensions (.bmp, .tif, .webp, ...) and files are often
 * misnamed (a GIF saved as .jpg), so the message says what the file really is. */
static const char *foreign_format(const uint8_t *b, size_t n) {
    static const struct {
        size_t offset, len;
        const char *magic, *name;
    } formats[] = {
        {0, 2, "BM", "BMP image"},
        {0, 4, "II*\0", "TIFF image"},
        {0, 4, "MM\0*", "TIFF image"},
        {4, 8, "ftypheic", "HEIC image"},
        {4, 8, "ftypavif", "AVIF image"},
        {4, 8, "jP  \r\n\x87\n", "JPEG 2000 image"},
        {0, 4, "\0\0\1\0", "ICO image"},
        {0, 4, "8BPS", "Photoshop (PSD) file"},
        {0, 5, "%PDF-", "PDF document"},
        {0, 4, "PK\3\4", "ZIP archive"},
        {0, 2, "\x1f\x8b", "gzip file"},
    };
    for (size_t i = 0; i < sizeof formats / sizeof *formats; i++)
        if (n >= formats[i].offset + formats[i].len &&
            memcmp(b + formats[i].offset, formats[i].magic, formats[i].len) == 0)
            return formats[i].name;
    /* Netpbm: "P1".."P7" then white space. */
    if (n >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7' && (b[2] == ' ' || b[2] == '\n' || b[2] == '\r' || b[2] == '\t'))
        return "Netpbm (PPM/PGM/PBM) image";
    return NULL;
}

/* Whether the first bytes look like text (printable ASCII, white space, UTF-8 bytes):
 * an HTML error page or a note saved under an image name. */
static int looks_like_text(const uint8_t *b, size_t n) {
    if (n > 64) n = 64;
    for (size_t i = 0; i < n; i++)
        if (!(b[i] >= 0x20 || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') || b[i] == 0x7f) return 0;
    return n > 0;
}

/* The error for a file in no format we decode, saying what it is instead. */
static int unknown_format_error(const uint8_t *bytes, size_t size, const char *name) {
    const char *format = foreign_format(bytes, size);
    if (format)
        return moco_error("%s: %s (not supported: only PNG, JPEG, WebP and GIF files are decoded; convert it to one of "
                          "them)",
                          name, format);
    if (looks_like_text(bytes, size)) {
        char head[25];
        size_t n = size < 24 ? size : 24, k = 0;
        for (size_t i = 0; i < n; i++) head[k++] = bytes[i] == '\n' || bytes[i] == '\r' || bytes[i] == '\t' ? ' ' : (char)bytes[i];
        head[k] = 0;
        return moco_error("%s: not a PNG, JPEG, WebP or GIF file (it looks like text: \"%s%s\")", name, head,
                          size > n ? "..." : "");
    }
    char head[3 * 8 + 1] = "";
    for (size_t i = 0; i < size && i < 8; i++) snprintf(head + 3 * i, 4, "%02x ", bytes[i]);
    if (head[0]) head[strlen(head) - 1] = '\0';
    return moco_error("%s: not a PNG, JPEG, WebP or GIF file (it starts with bytes %s)", name, head);
}

int image_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out, const char *name) {
    memset(out, 0, sizeof *out);
    if (!name) name = "(memory)";
    if (want_channels != 0 && want_channels != 1 && want_channels != 3)
        return moco_error("%s: want_channels must be 0, 1 or 3, got %d", name, want_channels);
    int rc;
    if (size >= 8 && memcmp(bytes, png_magic, 8) == 0) {
        rc = png_decode(bytes, size, want_channels, out);
    } else if (size >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) {
        rc = jpeg_decode(bytes, size, want_channels, out);
    } else if (size >= 12 && memcmp(bytes, "RIFF", 4) == 0 && memcmp(bytes + 8, "WEBP", 4) == 0) {
        rc = webp_decode(bytes, size, want_channels, out);
    } else if (size >= 6 && (memcmp(bytes, "GIF87a", 6) == 0 || memcmp(bytes, "GIF89a", 6) == 0)) {
        rc = gif_decode(bytes, size, want_channels, out);
    } else if (size == 0) {
        return moco_error("%s: empty file (0 bytes), not an image", name);
    } else {
        return unknown_format_error(bytes, size, name);
    }
    if (rc) {
        image_free(out);
        return moco_error_prefix("%s: ", name);
    }
    return 0;
}

int image_load(const char *path, int want_channels, Image *out) {
    memset(out, 0, sizeof *out);
    size_t size = 0;
    /* Regular files only (a FIFO named .jpg must not block), and at most 2 GiB. */
    uint8_t *bytes = file_read_all(path, (size_t)1 << 31, &size);
    if (!bytes) return -1;
    int rc = image_decode(bytes, size, want_channels, out, path);
    free(bytes);
    return rc;
}

void image_fill_from(Image *out, const uint8_t *src, int src_channels) {
    size_t n = (size_t)out->width * (size_t)out->height;
    int sc = src_channels, color = sc >= 3;
    if (out->channels == 3 && color) {
        for (size_t i = 0; i < n; i++, src += sc) memcpy(out->data + 3 * i, src, 3);
    } else if (out->channels == 3) {
        for (size_t i = 0; i < n; i++, src += sc) out->data[3 * i] = out->data[3 * i + 1] = out->data[3 * i + 2] = src[0];
    } else if (color) {
        for (size_t i = 0; i < n; i++, src += sc) out->data[i] = image_luma(src[0], src[1], src[2]);
    } else {
        for (size_t i = 0; i < n; i++, src += sc) out->data[i] = src[0];
    }
}

static int check_image(const Image *img, const char *what) {
    if (!img || !img->data || img->width <= 0 || img->height <= 0 || (img->channels != 1 && img->channels != 3))
        return moco_error("%s: invalid image (empty, or channels not 1 or 3)", what);
    return 0;
}

int image_save_png(const Image *img, const char *path) {
    if (check_image(img, path)) return -1;
    if (png_encode(img, path)) return moco_error_prefix("%s: ", path);
    return 0;
}

int image_save_jpeg(const Image *img, const char *path, int quality) {
    if (check_image(img, path)) return -1;
    if (quality < 1 || quality > 100) return moco_error("%s: JPEG quality must be in [1, 100], got %d", path, quality);
    if (jpeg_encode(img, path, quality)) return moco_error_prefix("%s: ", path);
    return 0;
}

/* ------------------------------------------------------------ tensors */

Tensor *image_to_tensor(const Image *in) {
    if (check_image(in, "to_tensor")) return NULL;
    int c = in->channels, h = in->height, w = in->width;
    Tensor *t = tensor_empty(3, (const int64_t[]){c, h, w});
    if (!t) return NULL;
    /* (H, W, C) uint8 -> (C, H, W) float; torch divides by 255 in float32. */
    for (int k = 0; k < c; k++) {
        float *plane = t->data + (size_t)k * h * w;
        const uint8_t *src = in->data + k;
        for (size_t i = 0; i < (size_t)h * w; i++) plane[i] = (float)src[i * c] / 255.0f;
    }
    return t;
}

int image_from_tensor(Image *out, const Tensor *t) {
    memset(out, 0, sizeof *out);
    char shape[128];
    int c, h, w;
    if (t->ndim == 2) {
        c = 1;
        h = (int)t->shape[0];
        w = (int)t->shape[1];
    } else if (t->ndim == 3 && (t->shape[0] == 1 || t->shape[0] == 3)) {
        c = (int)t->shape[0];
        h = (int)t->shape[1];
        w = (int)t->shape[2];
    } else {
        return moco_error("from_tensor: expected a (C, H, W) tensor with C = 1 or 3, or (H, W), got shape %s",
                          tensor_shape_str(t, shape, sizeof shape));
    }
    if (image_alloc(out, w, h, c)) return moco_error_prefix("from_tensor: ");
    for (int k = 0; k < c; k++) {
        const float *plane = t->data + (size_t)k * h * w;
        for (size_t i = 0; i < (size_t)h * w; i++) {
            float v = plane[i] * 255.0f;
            /* NaN compares false both ways and ends up 0. */
            out->data[i * c + k] = v >= 255.0f ? 255 : v > 0.0f ? (uint8_t)lrintf(v) : 0;
        }
    }
    return 0;
}

int image_normalize_tensor_(Tensor *t, const float *mean, const float *std, int n) {
    char shape[128];
    if (t->ndim != 3)
        return moco_error("Normalize: expected a (C, H, W) tensor, got shape %s (add ToTensor() first)",
                          tensor_shape_str(t, shape, sizeof shape));
    int c = (int)t->shape[0];
    if (n != 1 && n != c)
        return moco_error("Normalize: %d mean/std values for a tensor of shape %s (need 1 or %d)", n,
                          tensor_shape_str(t, shape, sizeof shape), c);
    size_t plane = (size_t)t->shape[1] * (size_t)t->shape[2];
    for (int k = 0; k < c; k++) {
        float m = mean[n == 1 ? 0 : k], s = std[n == 1 ? 0 : k];
        float *p = t->data + (size_t)k * plane;
        /* tensor.sub_(mean).div_(std): two float32 roundings, as torch does. */
        for (size_t i = 0; i < plane; i++) p[i] = (p[i] - m) / s;
    }
    return 0;
}

int image_make_grid(Image *out, const Image *const *images, int n, int nrow, int padding, uint8_t pad_value) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return moco_error("make_grid: no images");
    if (nrow <= 0) return moco_error("make_grid: nrow must be positive, got %d", nrow);
    if (padding < 0) return moco_error("make_grid: padding must be >= 0, got %d", padding);
    int cw = 0, ch = 0, channels = 1;
    for (int i = 0; i < n; i++) {
        if (check_image(images[i], "make_grid")) return -1;
        if (images[i]->width > cw) cw = images[i]->width;
        if (images[i]->height > ch) ch = images[i]->height;
        if (images[i]->channels == 3) channels = 3;
    }
    int cols = n < nrow ? n : nrow, rows = (n + nrow - 1) / nrow;
    long long gw = (long long)cols * (cw + padding) + padding, gh = (long long)rows * (ch + padding) + padding;
    if (gw > 1 << 20 || gh > 1 << 20) return moco_error("make_grid: grid of %lldx%lld pixels is too large", gw, gh);
    if (image_alloc(out, (int)gw, (int)gh, channels)) return -1;
    memset(out->data, pad_value, (size_t)gw * (size_t)gh * (size_t)channels);
    for (int i = 0; i < n; i++) {
        const Image *im = images[i];
        int x0 = padding + (i % nrow) * (cw + padding), y0 = padding + (i / nrow) * (ch + padding);
        for (int y = 0; y < im->height; y++) {
            uint8_t *dst = out->data + ((size_t)(y0 + y) * (size_t)gw + (size_t)x0) * (size_t)channels;
            const uint8_t *src = im->data + (size_t)y * im->width * im->channels;
            for (int x = 0; x < im->width; x++)
                for (int k = 0; k < channels; k++)
                    dst[x * channels + k] = src[x * im->channels + (im->channels == 3 ? k : 0)];
        }
    }
    return 0;
}
