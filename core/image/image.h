/* core/image/image.h: 8-bit images and their codecs (PNG through libpng, JPEG through
 * libjpeg-turbo).
 *
 * An Image is interleaved HWC uint8 with 1 (gray) or 3 (RGB) channels, like a PIL image
 * in mode "L" or "RGB".  Decoding recognises the format by content (magic bytes), never by
 * the file name, and converts like PIL's convert("RGB") / convert("L").  Errors name the
 * file (or the `name` given for in-memory data). */
#ifndef MOCO_IMAGE_H
#define MOCO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct Image {
    uint8_t *data;      /* height * width * channels bytes, row-major HWC */
    int width, height;
    int channels;       /* 1 or 3 */
} Image;

/* Allocates w*h*c bytes (uninitialised).  Returns 0 or -1. */
int image_alloc(Image *img, int width, int height, int channels);
void image_free(Image *img);    /* safe on a zeroed Image */

/* want_channels: 1 = gray ("L"), 3 = RGB, 0 = 1 for gray sources and 3 otherwise. */
int image_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out, const char *name);
int image_load(const char *path, int want_channels, Image *out);
int image_save_png(const Image *img, const char *path);
int image_save_jpeg(const Image *img, const char *path, int quality);

#endif
