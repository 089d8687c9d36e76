/* tests/fuzz/fuzz_jpeg.c: JPEG files as the loader decodes and augments them
 * (image_target.h); corpus: baseline, progressive, gray, restart-marker and CMYK JPEGs. */
#include "image_target.h"
