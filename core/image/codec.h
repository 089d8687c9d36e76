/* core/image/codec.h: what the codec files (png.c, jpeg.c, webp.c, gif.c) share with image.c.  Internal to
 * core/image; the public API is image.h.
 *
 * Decoders receive the whole file in memory and a name for messages.  They leave the
 * message unprefixed; image_decode adds "<name>: ". */
#ifndef MOCO_IMAGE_CODEC_H
#define MOCO_IMAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* Checks the size an image header announces against the limits (image.h), before the
 * decoder allocates anything.  Returns 0 or -1 with a message. */
int image_check_size(long long width, long long height);

/* The current limits (image_get_limits without the copy). */
long long image_max_pixels(void);
int image_max_scans(void);

/* Whether the decode running on this thread should stop (image_set_cancel_flag). */
int image_cancelled(void);

/* want_channels as in image_decode (0, 1 or 3). */
int png_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out);
int jpeg_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out);
int webp_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out);
int gif_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out);
int png_encode(const Image *img, const char *path);
int jpeg_encode(const Image *img, const char *path, int quality);

/* Fills an allocated image (1 or 3 channels) from interleaved pixels of src_channels (1
 * gray, 2 gray+alpha, 3 RGB, 4 RGBA), as PIL's convert("RGB") / convert("L"): alpha is
 * dropped, gray replicated, colour reduced with image_luma. */
void image_fill_from(Image *out, const uint8_t *src, int src_channels);

/* PIL's ITU-R 601-2 luma, L = R*299/1000 + G*587/1000 + B*114/1000, computed exactly as
 * Pillow's Convert.c does it: 16-bit fixed point with rounding. */
static inline uint8_t image_luma(uint8_t r, uint8_t g, uint8_t b) {
    return (uint8_t)(((uint32_t)r * 19595u + (uint32_t)g * 38470u + (uint32_t)b * 7471u + 0x8000u) >> 16);
}

#endif
