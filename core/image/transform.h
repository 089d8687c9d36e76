/* core/image/transform.h: augmentation pipelines that run in C worker threads.
 *
 * A Transform is an immutable tree built once (from Lua) and then applied concurrently by
 * any number of threads: transform_apply touches only its arguments, and all randomness
 * comes from the Rng passed in (one stream per sample), so results do not depend on the
 * thread that ran them.  The names and parameters follow torchvision.transforms.
 *
 * Pipelines work on 8-bit Images until ToTensor, after which they work on float CHW
 * tensors scaled to [0,1] (Normalize, and anything else defined on tensors). */
#ifndef MOCO_TRANSFORM_H
#define MOCO_TRANSFORM_H

#include "image.h"
#include "rng.h"
#include "tensor.h"

typedef struct Transform Transform;

/* A float CHW result buffer owned by the caller, or an image if the pipeline has no ToTensor. */
typedef struct TransformResult {
    Image image;      /* valid when tensor == NULL */
    Tensor *tensor;   /* (C, H, W) float, when the pipeline ends in tensor space */
} TransformResult;

/* Applies t to `in` (not modified) and fills `out` (caller frees with
 * transform_result_free).  Returns 0 or -1 with a message. */
int transform_apply(const Transform *t, const Image *in, Rng *rng, TransformResult *out);
void transform_result_free(TransformResult *r);
void transform_free(Transform *t);
/* A short human-readable description, e.g. "RandomResizedCrop(size=(32, 32), scale=(0.2, 1.0), ...)". */
int transform_describe(const Transform *t, char *buf, size_t size);

/* ---- additions (constructors and helpers) ----
 *
 * Ownership: a Transform is reference counted.  Each constructor returns one reference;
 * transform_free drops one and frees the tree with its last reference.  Compose and
 * RandomApply take their own reference to each child, so the caller keeps (and still
 * frees) its own.  transform_retain adds a reference, e.g. for a loader that must keep a
 * pipeline alive while the Lua object that built it is collected.  The counts are atomic;
 * everything else in a Transform is immutable after construction.
 *
 * Constructors validate their parameters and return NULL with a message (moco_last_error)
 * on bad ones.  Sizes are (height, width) as in torchvision. */
Transform *transform_retain(Transform *t);

Transform *transform_compose(Transform *const *items, int n);               /* n >= 0 */
/* Applies the items (as a Compose) with probability p; they must not turn an image into
 * a tensor, since they may be skipped. */
Transform *transform_random_apply(Transform *const *items, int n, double p);
/* torchvision 0.14's RandomResizedCrop with bilinear interpolation: 10 tries of
 * (area fraction ~ U[scale], log aspect ~ U[log ratio]), then the centre-crop fallback. */
Transform *transform_random_resized_crop(int height, int width, const double scale[2], const double ratio[2]);
Transform *transform_resize(int height, int width);
/* Resize(size) with an int: the shorter side becomes `size`; max_size 0 = none. */
Transform *transform_resize_shorter(int size, int max_size);
Transform *transform_center_crop(int height, int width);
/* torchvision's RandomCrop with padding_mode "constant", fill 0: padding = left, top,
 * right, bottom; pad_if_needed pads a too-small image up to the crop size. */
Transform *transform_random_crop(int height, int width, const int padding[4], int pad_if_needed);
Transform *transform_random_horizontal_flip(double p);
/* Ranges [min, max] of the factors, as ColorJitter stores them after _check_input
 * (brightness, contrast, saturation >= 0; hue within [-0.5, 0.5]); NULL = not jittered. */
Transform *transform_color_jitter(const double brightness[2], const double contrast[2],
                                  const double saturation[2], const double hue[2]);
Transform *transform_random_grayscale(double p);  /* output keeps the input's channels */
Transform *transform_grayscale(int num_output_channels);
/* MoCo v2's GaussianBlur: sigma ~ U[sigma_min, sigma_max], then PIL's
 * ImageFilter.GaussianBlur(radius=sigma). */
Transform *transform_gaussian_blur(double sigma_min, double sigma_max);
Transform *transform_to_tensor(void);
/* n = 1 (one value for every channel) or 3; std must be non-zero. */
Transform *transform_normalize(const double *mean, const double *std, int n);

/* What a transform takes and gives: an Image, a (C, H, W) tensor, or either (a pipeline
 * that is empty or only random no-ops passes its input through). */
enum { TRANSFORM_IMAGE = 1, TRANSFORM_TENSOR = 2, TRANSFORM_ANY = 3 };
int transform_input_kind(const Transform *t);
int transform_output_kind(const Transform *t);
/* transform_apply for a tensor input (pipelines that start after ToTensor, e.g. a lone
 * Normalize).  `in` is not modified. */
int transform_apply_tensor(const Transform *t, const Tensor *in, Rng *rng, TransformResult *out);
/* RandomResizedCrop.get_params: the crop (top, left, crop_height, crop_width), 0-based,
 * that t (a RandomResizedCrop) takes from a height x width image with the next draws of
 * rng -- the same draws transform_apply makes.  Returns -1 when t is something else. */
int transform_random_resized_crop_params(const Transform *t, int height, int width, Rng *rng, int *top, int *left,
                                         int *crop_height, int *crop_width);
/* The torchvision class name of the top node, e.g. "Compose", "Normalize". */
const char *transform_name(const Transform *t);

#endif
