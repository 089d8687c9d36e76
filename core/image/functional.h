/* core/image/functional.h: the deterministic image operations behind the transforms, with
 * the semantics of torchvision.transforms.functional on PIL images (torchvision 0.14,
 * Pillow 9.4).  Each one reproduces Pillow's integer arithmetic, so on the same input the
 * result is the same bytes as PIL's (see tests/c/test_image.c for the measured differences).
 *
 * Conventions: the output comes first and is allocated here (free it with image_free; it
 * is left zeroed on error); the input is never modified and may not alias the output;
 * every function returns 0 or -1 with a message (moco_last_error).  Images are HWC uint8
 * with 1 or 3 channels.  Nothing here keeps state, so all of it is thread-safe. */
#ifndef MOCO_IMAGE_FUNCTIONAL_H
#define MOCO_IMAGE_FUNCTIONAL_H

#include "image.h"
#include "tensor.h"

/* ---- geometry (resize.c) ---- */

/* A copy of rows [top, top+height) and columns [left, left+width); parts outside the image
 * are zero, as PIL's Image.crop pads. */
int image_crop(Image *out, const Image *in, int top, int left, int height, int width);
/* torchvision's center_crop: zero padding when the crop is larger than the image, and
 * the offset int(round((size - crop) / 2.0)) with Python's round-half-to-even. */
int image_center_crop(Image *out, const Image *in, int height, int width);
/* PIL's Image.resize(size, BILINEAR): a triangle filter stretched by the scale factor
 * (antialiased when shrinking), separable, horizontal pass first, 22-bit fixed-point
 * coefficients and rounding after each pass. */
int image_resize(Image *out, const Image *in, int height, int width);
/* torchvision's resized_crop: crop (top, left, height, width), then image_resize to
 * (out_height, out_width).  The crop must lie inside the image. */
int image_resized_crop(Image *out, const Image *in, int top, int left, int height, int width,
                       int out_height, int out_width);
int image_hflip(Image *out, const Image *in);
/* torchvision's Resize sizes: `size` for the shorter side, the longer one
 * int(size * long / short), then capped at max_size (0 = no cap) as torchvision does. */
void image_resized_shorter_side(int height, int width, int size, int max_size, int *out_height,
                                int *out_width);

/* ---- colour (color.c) ---- */

/* PIL's convert("L") / convert("RGB"): channels 1 or 3 (a copy when it is already so). */
int image_convert(Image *out, const Image *in, int channels);
/* torchvision's rgb_to_grayscale(img, num_output_channels) (1 or 3). */
int image_to_grayscale(Image *out, const Image *in, int num_output_channels);
/* PIL ImageEnhance: Image.blend(degenerate, img, factor) with float32 arithmetic,
 * truncation, and clipping when extrapolating.  The degenerate image is black for
 * brightness, the mean of the grayscale image (rounded) for contrast, and the grayscale
 * image for saturation.  factor >= 0. */
int image_adjust_brightness(Image *out, const Image *in, float factor);
int image_adjust_contrast(Image *out, const Image *in, float factor);
int image_adjust_saturation(Image *out, const Image *in, float factor);
/* torchvision's adjust_hue on PIL: RGB -> HSV (Pillow's 8-bit HSV), H += uint8(factor*255)
 * modulo 256, HSV -> RGB.  factor in [-0.5, 0.5]; gray images come back unchanged.  A double,
 * because torchvision computes factor * 255 in double (ColorJitter's factors are float32
 * values, which convert exactly). */
int image_adjust_hue(Image *out, const Image *in, double hue_factor);

/* ---- blur (blur.c) ---- */

/* PIL's ImageFilter.GaussianBlur(radius): three passes of an extended box blur
 * (Gwosdek et al. 2011) per direction, 8-bit fixed-point rounding after each pass. */
int image_gaussian_blur(Image *out, const Image *in, float radius);

/* ---- tensors and grids (image.c) ---- */

/* torchvision's to_tensor: (C, H, W) float32, value / 255. */
Tensor *image_to_tensor(const Image *in);
/* The reverse, for previews: a (C, H, W) tensor with C 1 or 3, or an (H, W) tensor, with
 * values in [0, 1], times 255, rounded and clipped to [0, 255] (torchvision's ToPILImage
 * truncates instead; rounding makes to_tensor -> from_tensor an exact round trip). */
int image_from_tensor(Image *out, const Tensor *t);
/* (x - mean[c]) / std[c] in place on a (C, H, W) tensor, in float32 as torch does; n is 1
 * (one value for all channels) or C. */
int image_normalize_tensor_(Tensor *t, const float *mean, const float *std, int n);
/* torchvision's make_grid layout: `nrow` images per row, cells the size of the largest
 * image, `padding` pixels of `pad_value` around every cell.  RGB if any image is. */
int image_make_grid(Image *out, const Image *const *images, int n, int nrow, int padding,
                    uint8_t pad_value);

#endif
