/* tests/fuzz/fuzz_png.c: PNG files as the loader decodes and augments them
 * (image_target.h); corpus: every colour type and bit depth, interlaced, tRNS. */
#include "image_target.h"
