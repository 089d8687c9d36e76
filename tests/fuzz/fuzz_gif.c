/* tests/fuzz/fuzz_gif.c: GIF files (their first frame) as the loader decodes and augments
 * them (image_target.h); corpus: palettes, transparency, interlaced, animated, a frame
 * smaller than the screen. */
#include "image_target.h"
