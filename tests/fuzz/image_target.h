/* tests/fuzz/image_target.h: the body of the image fuzz targets (fuzz_jpeg.c, fuzz_png.c,
 * and one per format), which differ only in their corpus: the input is a file as
 * ImageFolder meets it, decoded by content as the loader does (image_decode), in RGB, gray
 * or as stored (chosen by the input's length, so a given input always takes one path),
 * then put through a MoCo v2 augmentation (the loader's worker path) so odd sizes (1xN,
 * huge aspect ratios) reach the transforms too. */
#ifndef MOCO_FUZZ_IMAGE_TARGET_H
#define MOCO_FUZZ_IMAGE_TARGET_H

#include "fuzz.h"
#include "image/transform.h"
#include "rng.h"

static Transform *fuzz_pipeline(void) {
    static Transform *pipeline;
    if (pipeline) return pipeline;
    const double scale[2] = {0.2, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    const double b[2] = {0.6, 1.4}, h[2] = {-0.1, 0.1}, mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    Transform *jitter = transform_color_jitter(b, b, b, h), *blur = transform_gaussian_blur(0.1, 2.0);
    Transform *items[] = {transform_random_resized_crop(24, 24, scale, ratio),
                          transform_random_apply(&jitter, 1, 0.8),
                          transform_random_grayscale(0.2),
                          transform_random_apply(&blur, 1, 0.5),
                          transform_random_horizontal_flip(0.5),
                          transform_to_tensor(),
                          transform_normalize(mean, std, 3)};
    pipeline = transform_compose(items, 7);
    for (int i = 0; i < 7; i++) transform_free(items[i]);
    transform_free(jitter);
    transform_free(blur);
    if (!pipeline) {
        fprintf(stderr, "fuzz: cannot build the pipeline: %s\n", moco_last_error());
        abort();
    }
    return pipeline;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_set_limits();
    static const int channels[3] = {3, 1, 0};
    Image img;
    if (image_decode(data, size, channels[size % 3], &img, "fuzz") != 0) return 0;
    Rng rng;
    rng_seed(&rng, size, 0);
    TransformResult res;
    if (transform_apply(fuzz_pipeline(), &img, &rng, &res) == 0) transform_result_free(&res);
    image_free(&img);
    return 0;
}

#endif
