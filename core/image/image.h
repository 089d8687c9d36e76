/* core/image/image.h: 8-bit images and their codecs (PNG through libpng, JPEG through
 * libjpeg-turbo, WebP through libwebp, the first frame of a GIF through giflib).
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

/* Limits on the work a decoder does for one file, so a hostile file cannot take minutes or
 * gigabytes ("decompression bombs").  Process-wide, read by every thread.
 *   max_pixels  width * height above which a file is refused before anything is allocated.
 *               Default IMAGE_DEFAULT_MAX_PIXELS, PIL's Image.MAX_IMAGE_PIXELS (PIL warns
 *               there and refuses twice as much; we refuse).  At most IMAGE_ALLOC_MAX_PIXELS.
 *   max_scans   progressive JPEG scans (each one a pass over the whole image) above which
 *               a file is refused: libjpeg-turbo's advice for its scan limit is 500; real
 *               encoders write about 10.
 * Besides these, a decoder refuses a header that announces more pixels than the file's
 * length could encode (see jpeg.c, png.c), whatever the limits. */
#define IMAGE_DEFAULT_MAX_PIXELS 89478485LL
#define IMAGE_DEFAULT_MAX_SCANS 500
#define IMAGE_ALLOC_MAX_PIXELS (1LL << 30)

typedef struct ImageLimits {
    long long max_pixels;
    int max_scans;
} ImageLimits;

void image_get_limits(ImageLimits *out);
/* Validates (1 <= max_pixels <= IMAGE_ALLOC_MAX_PIXELS, 1 <= max_scans <= 1000000). */
int image_set_limits(const ImageLimits *limits);

/* A decode on this thread stops with an error ("cancelled") soon after *flag becomes
 * non-zero (read atomically); NULL (the default) means moco_interrupt_requested.  The
 * loader's workers point it at their stop flag, so closing a loader never waits for a
 * slow file to finish. */
void image_set_cancel_flag(const int *flag);

/* want_channels: 1 = gray ("L"), 3 = RGB, 0 = 1 for gray sources and 3 otherwise. */
int image_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out, const char *name);
int image_load(const char *path, int want_channels, Image *out);
int image_save_png(const Image *img, const char *path);
int image_save_jpeg(const Image *img, const char *path, int quality);

#endif
