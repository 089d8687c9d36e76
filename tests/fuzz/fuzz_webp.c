/* tests/fuzz/fuzz_webp.c: WebP files as the loader decodes and augments them
 * (image_target.h); corpus: lossy, lossless, with alpha, animated. */
#include "image_target.h"
