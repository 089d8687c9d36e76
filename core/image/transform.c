/* core/image/transform.c: augmentation pipelines (see transform.h).
 *
 * A Transform is a node of an immutable tree: a primitive (crop, jitter, blur, ...) or a
 * container (Compose, RandomApply) holding references to its children.  transform_apply
 * walks the tree with a Value -- an Image until ToTensor, a (C, H, W) tensor after it --
 * replacing it op by op; the caller's input image is never written and intermediate
 * results are freed as soon as the next op has produced its own.
 *
 * The random parameters follow torchvision 0.14's get_params with our Rng in place of
 * torch's generator: same distributions and the same draws in the same order, but of
 * course not torch's numbers. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "functional.h"
#include "transform.h"

/* Pillow's results depend on every float rounding: forbid fusing a*b+c into one FMA
 * instruction, which GCC does under -march=native with its default -ffp-contract=fast. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

typedef enum TransformKind {
    KIND_COMPOSE,
    KIND_RANDOM_APPLY,
    KIND_RANDOM_RESIZED_CROP,
    KIND_RESIZE,
    KIND_CENTER_CROP,
    KIND_RANDOM_HORIZONTAL_FLIP,
    KIND_COLOR_JITTER,
    KIND_RANDOM_GRAYSCALE,
    KIND_GRAYSCALE,
    KIND_GAUSSIAN_BLUR,
    KIND_TO_TENSOR,
    KIND_NORMALIZE,
    KIND_RANDOM_CROP,
} TransformKind;

static const char *const kind_names[] = {
    "Compose",   "RandomApply",     "RandomResizedCrop", "Resize",       "CenterCrop", "RandomHorizontalFlip",
    "ColorJitter", "RandomGrayscale", "Grayscale",       "GaussianBlur", "ToTensor",   "Normalize",
    "RandomCrop"};

enum { JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION, JITTER_HUE };

struct Transform {
    TransformKind kind;
    int refcount;               /* atomic */
    int input, output;          /* TRANSFORM_IMAGE / TENSOR / ANY */
    int height, width;          /* output size; Resize by shorter side: width = 0, height = size */
    int max_size;               /* Resize by shorter side; 0 = none */
    int channels;               /* Grayscale's num_output_channels */
    double p;                   /* probability of the random ops */
    double scale[2], ratio[2];  /* RandomResizedCrop */
    double jitter[4][2];        /* ColorJitter ranges, by JITTER_* */
    int jitter_on[4];
    double sigma[2];            /* GaussianBlur */
    int pad[4];                 /* RandomCrop: left, top, right, bottom */
    int pad_if_needed;          /* RandomCrop */
    int n;                      /* Normalize: number of mean/std values (1 or 3) */
    double mean[3], std[3];
    Transform **children;       /* Compose, RandomApply */
    int nchildren;
};

static Transform *new_node(TransformKind kind, int input, int output) {
    Transform *t = calloc(1, sizeof *t);
    if (!t) {
        moco_error("%s: out of memory", kind_names[kind]);
        return NULL;
    }
    t->kind = kind;
    t->refcount = 1;
    t->input = input;
    t->output = output;
    return t;
}

Transform *transform_retain(Transform *t) {
    if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
    return t;
}

void transform_free(Transform *t) {
    if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    for (int i = 0; i < t->nchildren; i++) transform_free(t->children[i]);
    free(t->children);
    free(t);
}

int transform_input_kind(const Transform *t) { return t->input; }
int transform_output_kind(const Transform *t) { return t->output; }
const char *transform_name(const Transform *t) { return kind_names[t->kind]; }

/* ------------------------------------------------------------ constructors */

static const char *kind_word(int kind) { return kind == TRANSFORM_TENSOR ? "a tensor" : "an image"; }

/* A container's children, with their input/output kinds checked along the chain. */
static Transform *new_container(TransformKind kind, Transform *const *items, int n) {
    if (n < 0 || (n > 0 && !items)) {
        moco_error("%s: invalid list of %d transforms", kind_names[kind], n);
        return NULL;
    }
    int input = TRANSFORM_ANY, current = TRANSFORM_ANY;
    for (int i = 0; i < n; i++) {
        if (!items[i]) {
            moco_error("%s: transform %d is missing", kind_names[kind], i + 1);
            return NULL;
        }
        int in = items[i]->input;
        if (current != TRANSFORM_ANY && in != TRANSFORM_ANY && in != current) {
            moco_error("%s: transform %d (%s) takes %s but receives %s%s", kind_names[kind], i + 1,
                       kind_names[items[i]->kind], kind_word(in), kind_word(current),
                       in == TRANSFORM_TENSOR ? " (add ToTensor() before it)"
                                              : " (image transforms must come before ToTensor())");
            return NULL;
        }
        if (input == TRANSFORM_ANY) input = in;
        if (items[i]->output != TRANSFORM_ANY) current = items[i]->output;
    }
    Transform *t = new_node(kind, input, current);
    if (!t) return NULL;
    if (n > 0) {
        t->children = malloc(sizeof *t->children * (size_t)n);
        if (!t->children) {
            free(t);
            moco_error("%s: out of memory", kind_names[kind]);
            return NULL;
        }
        for (int i = 0; i < n; i++) t->children[i] = transform_retain(items[i]);
    }
    t->nchildren = n;
    return t;
}

static int check_probability(double p, const char *name) {
    if (!(p >= 0.0 && p <= 1.0)) return moco_error("%s: p must be in [0, 1], got %g", name, p);
    return 0;
}

Transform *transform_compose(Transform *const *items, int n) { return new_container(KIND_COMPOSE, items, n); }

Transform *transform_random_apply(Transform *const *items, int n, double p) {
    if (check_probability(p, "RandomApply")) return NULL;
    Transform *t = new_container(KIND_RANDOM_APPLY, items, n);
    if (!t) return NULL;
    if (t->input != TRANSFORM_ANY && t->output != t->input) {
        moco_error("RandomApply: its transforms turn %s into %s, but they may be skipped, so they must not "
                   "change the kind (put ToTensor() outside RandomApply)", kind_word(t->input), kind_word(t->output));
        transform_free(t);
        return NULL;
    }
    t->p = p;
    return t;
}

static int check_size(int height, int width, const char *name) {
    if (height <= 0 || width <= 0 || height > 1 << 16 || width > 1 << 16)
        return moco_error("%s: size must be positive and at most 65536, got (%d, %d)", name, height, width);
    return 0;
}

Transform *transform_random_resized_crop(int height, int width, const double scale[2], const double ratio[2]) {
    const char *name = "RandomResizedCrop";
    if (check_size(height, width, name)) return NULL;
    if (!(scale[0] > 0.0 && scale[0] <= scale[1] && scale[1] <= 1.0)) {
        /* torchvision only warns; a scale outside (0, 1] cannot give a valid crop, so we refuse. */
        moco_error("%s: scale must satisfy 0 < min <= max <= 1, got (%g, %g)", name, scale[0], scale[1]);
        return NULL;
    }
    if (!(ratio[0] > 0.0 && ratio[0] <= ratio[1] && isfinite(ratio[1]))) {
        moco_error("%s: ratio must satisfy 0 < min <= max, got (%g, %g)", name, ratio[0], ratio[1]);
        return NULL;
    }
    Transform *t = new_node(KIND_RANDOM_RESIZED_CROP, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (!t) return NULL;
    t->height = height;
    t->width = width;
    memcpy(t->scale, scale, sizeof t->scale);
    memcpy(t->ratio, ratio, sizeof t->ratio);
    return t;
}

Transform *transform_resize(int height, int width) {
    if (check_size(height, width, "Resize")) return NULL;
    Transform *t = new_node(KIND_RESIZE, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (!t) return NULL;
    t->height = height;
    t->width = width;
    return t;
}

Transform *transform_resize_shorter(int size, int max_size) {
    if (check_size(size, size, "Resize")) return NULL;
    if (max_size != 0 && max_size <= size) {
        moco_error("Resize: max_size = %d must be strictly greater than the requested size for the smaller edge "
                   "size = %d", max_size, size);
        return NULL;
    }
    Transform *t = new_node(KIND_RESIZE, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (!t) return NULL;
    t->height = size;
    t->width = 0;
    t->max_size = max_size;
    return t;
}

Transform *transform_center_crop(int height, int width) {
    if (check_size(height, width, "CenterCrop")) return NULL;
    Transform *t = new_node(KIND_CENTER_CROP, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (!t) return NULL;
    t->height = height;
    t->width = width;
    return t;
}

Transform *transform_random_crop(int height, int width, const int padding[4], int pad_if_needed) {
    if (check_size(height, width, "RandomCrop")) return NULL;
    for (int i = 0; i < 4; i++) {
        if (padding[i] < 0 || padding[i] > 1 << 16) {
            moco_error("RandomCrop: padding must be between 0 and 65536, got %d", padding[i]);
            return NULL;
        }
    }
    Transform *t = new_node(KIND_RANDOM_CROP, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (!t) return NULL;
    t->height = height;
    t->width = width;
    memcpy(t->pad, padding, sizeof t->pad);
    t->pad_if_needed = pad_if_needed != 0;
    return t;
}

Transform *transform_random_horizontal_flip(double p) {
    if (check_probability(p, "RandomHorizontalFlip")) return NULL;
    Transform *t = new_node(KIND_RANDOM_HORIZONTAL_FLIP, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (t) t->p = p;
    return t;
}

Transform *transform_color_jitter(const double brightness[2], const double contrast[2], const double saturation[2],
                                  const double hue[2]) {
    const double *ranges[4] = {brightness, contrast, saturation, hue};
    static const char *const names[4] = {"brightness", "contrast", "saturation", "hue"};
    for (int i = 0; i < 4; i++) {
        const double *r = ranges[i];
        if (!r) continue;
        double lo = i == JITTER_HUE ? -0.5 : 0.0, hi = i == JITTER_HUE ? 0.5 : INFINITY;
        if (!(lo <= r[0] && r[0] <= r[1] && r[1] <= hi && isfinite(r[1]))) {
            moco_error("ColorJitter: %s values should be between (%g, %g) with min <= max, got [%g, %g]", names[i],
                       lo, hi, r[0], r[1]);
            return NULL;
        }
    }
    Transform *t = new_node(KIND_COLOR_JITTER, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (!t) return NULL;
    for (int i = 0; i < 4; i++) {
        if (!ranges[i]) continue;
        t->jitter_on[i] = 1;
        t->jitter[i][0] = ranges[i][0];
        t->jitter[i][1] = ranges[i][1];
    }
    return t;
}

Transform *transform_random_grayscale(double p) {
    if (check_probability(p, "RandomGrayscale")) return NULL;
    Transform *t = new_node(KIND_RANDOM_GRAYSCALE, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (t) t->p = p;
    return t;
}

Transform *transform_grayscale(int num_output_channels) {
    if (num_output_channels != 1 && num_output_channels != 3) {
        moco_error("Grayscale: num_output_channels should be either 1 or 3, got %d", num_output_channels);
        return NULL;
    }
    Transform *t = new_node(KIND_GRAYSCALE, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (t) t->channels = num_output_channels;
    return t;
}

Transform *transform_gaussian_blur(double sigma_min, double sigma_max) {
    if (!(sigma_min >= 0.0 && sigma_min <= sigma_max && sigma_max <= 1000.0)) {
        moco_error("GaussianBlur: sigma must satisfy 0 <= min <= max <= 1000, got [%g, %g]", sigma_min, sigma_max);
        return NULL;
    }
    Transform *t = new_node(KIND_GAUSSIAN_BLUR, TRANSFORM_IMAGE, TRANSFORM_IMAGE);
    if (!t) return NULL;
    t->sigma[0] = sigma_min;
    t->sigma[1] = sigma_max;
    return t;
}

Transform *transform_to_tensor(void) { return new_node(KIND_TO_TENSOR, TRANSFORM_IMAGE, TRANSFORM_TENSOR); }

Transform *transform_normalize(const double *mean, const double *std, int n) {
    if (n != 1 && n != 3) {
        moco_error("Normalize: mean and std need 1 or 3 values, got %d", n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!((float)std[i] != 0.0f) || !isfinite(mean[i]) || !isfinite(std[i])) {
            moco_error("Normalize: std evaluated to zero (or a value is not finite) at position %d, leading to "
                       "division by zero", i + 1);
            return NULL;
        }
    Transform *t = new_node(KIND_NORMALIZE, TRANSFORM_TENSOR, TRANSFORM_TENSOR);
    if (!t) return NULL;
    t->n = n;
    memcpy(t->mean, mean, sizeof *mean * (size_t)n);
    memcpy(t->std, std, sizeof *std * (size_t)n);
    return t;
}

/* ------------------------------------------------------------ random parameters */

/* torch.empty(1).uniform_(lo, hi) draws in float32. */
static float uniform_float(Rng *rng, float lo, float hi) { return rng_uniform(rng) * (hi - lo) + lo; }

/* RandomCrop: torchvision pads (fill 0) by padding, then (pad_if_needed) by the missing
 * width on the left and the right and the missing height on the top and the bottom, then
 * draws i = randint(0, H - th + 1), j = randint(0, W - tw + 1), no draw when the padded
 * image is the crop's size.  The crop of the padded image is the crop of the original at
 * (i - top padding, j - left padding), with zeros outside it (image_crop). */
static int random_crop_params(const Transform *t, int height, int width, Rng *rng, int *top, int *left) {
    int pl = t->pad[0], pt = t->pad[1], pr = t->pad[2], pb = t->pad[3];
    int W = width + pl + pr, H = height + pt + pb;
    if (t->pad_if_needed && W < t->width) {
        int extra = t->width - W;
        pl += extra;
        W += 2 * extra;
    }
    if (t->pad_if_needed && H < t->height) {
        int extra = t->height - H;
        pt += extra;
        H += 2 * extra;
    }
    if (H < t->height || W < t->width)
        return moco_error("RandomCrop: required crop size (%d, %d) is larger than the (padded) input image size (%d, %d)",
                          t->height, t->width, H, W);
    int i = 0, j = 0;
    if (!(H == t->height && W == t->width)) {
        i = (int)rng_below(rng, (uint32_t)(H - t->height + 1));
        j = (int)rng_below(rng, (uint32_t)(W - t->width + 1));
    }
    *top = i - pt;
    *left = j - pl;
    return 0;
}

/* RandomResizedCrop.get_params (torchvision 0.14). */
static void resized_crop_params(const Transform *t, int height, int width, Rng *rng, int *top, int *left, int *h,
                                int *w) {
    double area = (double)height * (double)width;
    /* torch.log(torch.tensor(ratio)): float32 */
    float log_lo = logf((float)t->ratio[0]), log_hi = logf((float)t->ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target_area = area * (double)uniform_float(rng, (float)t->scale[0], (float)t->scale[1]);
        double aspect_ratio = (double)expf(uniform_float(rng, log_lo, log_hi));
        /* int(round(...)): Python rounds half to even, as nearbyint does by default. */
        int cw = (int)nearbyint(sqrt(target_area * aspect_ratio));
        int ch = (int)nearbyint(sqrt(target_area / aspect_ratio));
        if (0 < cw && cw <= width && 0 < ch && ch <= height) {
            *top = (int)rng_below(rng, (uint32_t)(height - ch + 1));
            *left = (int)rng_below(rng, (uint32_t)(width - cw + 1));
            *h = ch;
            *w = cw;
            return;
        }
    }
    /* Fallback to a central crop of the extreme allowed aspect ratio. */
    double in_ratio = (double)width / (double)height;
    if (in_ratio < t->ratio[0]) {
        *w = width;
        *h = (int)nearbyint(*w / t->ratio[0]);
    } else if (in_ratio > t->ratio[1]) {
        *h = height;
        *w = (int)nearbyint(*h * t->ratio[1]);
    } else {
        *w = width;
        *h = height;
    }
    if (*h < 1) *h = 1; /* only for degenerate images such as 1000x1 */
    if (*w < 1) *w = 1;
    *top = (height - *h) / 2;
    *left = (width - *w) / 2;
}

int transform_random_resized_crop_params(const Transform *t, int height, int width, Rng *rng, int *top, int *left,
                                         int *crop_height, int *crop_width) {
    if (!t || t->kind != KIND_RANDOM_RESIZED_CROP)
        return moco_error("random_resized_crop_params: not a RandomResizedCrop (got %s)", t ? kind_names[t->kind] : "NULL");
    if (height <= 0 || width <= 0) return moco_error("random_resized_crop_params: empty image %dx%d", width, height);
    resized_crop_params(t, height, width, rng, top, left, crop_height, crop_width);
    return 0;
}

/* ------------------------------------------------------------ applying */

/* The value flowing through a pipeline. */
typedef struct Value {
    Image image;     /* valid when tensor == NULL */
    Tensor *tensor;
    int owned;       /* image belongs to us (not the caller's input) */
} Value;

static void value_free(Value *v) {
    if (v->owned) image_free(&v->image);
    tensor_free(v->tensor);
    memset(v, 0, sizeof *v);
}

/* Replaces v's image by `next` (a new image that we own). */
static void value_set_image(Value *v, Image *next) {
    if (v->owned) image_free(&v->image);
    v->image = *next;
    v->owned = 1;
}

static int need_image(const Transform *t, const Value *v) {
    if (v->tensor)
        return moco_error("%s expects an image but got a tensor (image transforms must come before ToTensor())",
                          kind_names[t->kind]);
    return 0;
}

static int apply_node(const Transform *t, Value *v, Rng *rng);

static int apply_children(const Transform *t, Value *v, Rng *rng) {
    for (int i = 0; i < t->nchildren; i++)
        if (apply_node(t->children[i], v, rng)) return -1;
    return 0;
}

static int apply_color_jitter(const Transform *t, Value *v, Rng *rng) {
    int64_t order[4];
    float factor[4] = {0};
    rng_permutation(rng, order, 4);
    for (int i = 0; i < 4; i++)
        if (t->jitter_on[i]) factor[i] = uniform_float(rng, (float)t->jitter[i][0], (float)t->jitter[i][1]);
    for (int i = 0; i < 4; i++) {
        int which = (int)order[i];
        if (!t->jitter_on[which]) continue;
        Image next;
        int rc;
        switch (which) {
        case JITTER_BRIGHTNESS: rc = image_adjust_brightness(&next, &v->image, factor[which]); break;
        case JITTER_CONTRAST: rc = image_adjust_contrast(&next, &v->image, factor[which]); break;
        case JITTER_SATURATION: rc = image_adjust_saturation(&next, &v->image, factor[which]); break;
        default: rc = image_adjust_hue(&next, &v->image, factor[which]); break;
        }
        if (rc) return -1;
        value_set_image(v, &next);
    }
    return 0;
}

static int apply_node(const Transform *t, Value *v, Rng *rng) {
    Image next;
    memset(&next, 0, sizeof next);
    int rc = 0;
    if (t->input == TRANSFORM_IMAGE && t->kind != KIND_COMPOSE && t->kind != KIND_RANDOM_APPLY && need_image(t, v))
        return -1;
    switch (t->kind) {
    case KIND_COMPOSE:
        return apply_children(t, v, rng);
    case KIND_RANDOM_APPLY:
        /* torchvision: `if self.p < torch.rand(1): return img`; u < p is the same event up
         * to a measure-zero tie and makes p = 0 mean never. */
        return rng_uniform(rng) < t->p ? apply_children(t, v, rng) : 0;
    case KIND_RANDOM_RESIZED_CROP: {
        int top, left, h, w;
        resized_crop_params(t, v->image.height, v->image.width, rng, &top, &left, &h, &w);
        rc = image_resized_crop(&next, &v->image, top, left, h, w, t->height, t->width);
        break;
    }
    case KIND_RESIZE: {
        int h = t->height, w = t->width;
        if (w == 0) image_resized_shorter_side(v->image.height, v->image.width, t->height, t->max_size, &h, &w);
        if (h == v->image.height && w == v->image.width) return 0; /* torchvision returns the input */
        rc = image_resize(&next, &v->image, h, w);
        break;
    }
    case KIND_CENTER_CROP:
        rc = image_center_crop(&next, &v->image, t->height, t->width);
        break;
    case KIND_RANDOM_CROP: {
        int top = 0, left = 0;
        if (random_crop_params(t, v->image.height, v->image.width, rng, &top, &left)) return -1;
        rc = image_crop(&next, &v->image, top, left, t->height, t->width);
        break;
    }
    case KIND_RANDOM_HORIZONTAL_FLIP:
        if (!(rng_uniform(rng) < t->p)) return 0;
        rc = image_hflip(&next, &v->image);
        break;
    case KIND_COLOR_JITTER:
        return apply_color_jitter(t, v, rng);
    case KIND_RANDOM_GRAYSCALE:
        if (!(rng_uniform(rng) < t->p)) return 0;
        rc = image_to_grayscale(&next, &v->image, v->image.channels);
        break;
    case KIND_GRAYSCALE:
        rc = image_to_grayscale(&next, &v->image, t->channels);
        break;
    case KIND_GAUSSIAN_BLUR: {
        /* MoCo v2: sigma = random.uniform(min, max), a double; PIL takes it as a float. */
        double sigma = t->sigma[0] + (t->sigma[1] - t->sigma[0]) * rng_uniform_double(rng);
        rc = image_gaussian_blur(&next, &v->image, (float)sigma);
        break;
    }
    case KIND_TO_TENSOR: {
        Tensor *x = image_to_tensor(&v->image);
        if (!x) return -1;
        if (v->owned) image_free(&v->image);
        memset(&v->image, 0, sizeof v->image);
        v->owned = 0;
        v->tensor = x;
        return 0;
    }
    case KIND_NORMALIZE: {
        if (!v->tensor) return moco_error("Normalize expects a tensor but got an image (add ToTensor() before it)");
        float mean[3], std[3];
        for (int i = 0; i < t->n; i++) {
            mean[i] = (float)t->mean[i];
            std[i] = (float)t->std[i];
        }
        return image_normalize_tensor_(v->tensor, mean, std, t->n);
    }
    }
    if (rc) return -1;
    value_set_image(v, &next);
    return 0;
}

/* Runs t on v and moves the result into out. */
static int run(const Transform *t, Value *v, Rng *rng, TransformResult *out) {
    if (apply_node(t, v, rng)) {
        value_free(v);
        return moco_error_prefix("%s: ", kind_names[t->kind]);
    }
    if (v->tensor) {
        out->tensor = v->tensor;
        return 0;
    }
    if (!v->owned) { /* nothing was applied: the result is a copy of the input */
        Image copy;
        if (image_alloc(&copy, v->image.width, v->image.height, v->image.channels)) return -1;
        memcpy(copy.data, v->image.data, (size_t)copy.width * copy.height * copy.channels);
        v->image = copy;
    }
    out->image = v->image;
    return 0;
}

int transform_apply(const Transform *t, const Image *in, Rng *rng, TransformResult *out) {
    memset(out, 0, sizeof *out);
    if (!t || !in || !rng) return moco_error("transform_apply: missing transform, image or generator");
    if (!in->data || in->width <= 0 || in->height <= 0 || (in->channels != 1 && in->channels != 3))
        return moco_error("%s: invalid input image (empty, or channels not 1 or 3)", kind_names[t->kind]);
    if (t->input == TRANSFORM_TENSOR)
        return moco_error("%s takes a tensor but was given an image (add ToTensor() before it)", kind_names[t->kind]);
    Value v = {*in, NULL, 0};
    return run(t, &v, rng, out);
}

int transform_apply_tensor(const Transform *t, const Tensor *in, Rng *rng, TransformResult *out) {
    memset(out, 0, sizeof *out);
    if (!t || !in || !rng) return moco_error("transform_apply_tensor: missing transform, tensor or generator");
    if (t->input == TRANSFORM_IMAGE)
        return moco_error("%s takes an image but was given a tensor (image transforms must come before ToTensor())",
                          kind_names[t->kind]);
    Value v = {{0}, tensor_clone(in), 0};
    if (!v.tensor) return -1;
    return run(t, &v, rng, out);
}

void transform_result_free(TransformResult *r) {
    if (!r) return;
    image_free(&r->image);
    tensor_free(r->tensor);
    r->tensor = NULL;
}

/* ------------------------------------------------------------ descriptions */

typedef struct Text {
    char *buf;
    size_t size, len;  /* len counts what would have been written */
} Text;

static void text_add(Text *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(Text *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = s->len < s->size ? s->size - s->len : 0;
    int n = vsnprintf(room ? s->buf + s->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) s->len += (size_t)n;
}

/* Python's repr of a float: the shortest digits that read back, with ".0" on integers. */
static const char *py_float(double v, char out[40]) {
    if (isnan(v)) return "nan";
    if (isinf(v)) return v > 0 ? "inf" : "-inf";
    int digits = 1;
    for (; digits < 17; digits++) {
        snprintf(out, 40, "%.*g", digits, v);
        if (strtod(out, NULL) == v) break;
    }
    double mag = fabs(v);
    if (strchr(out, 'e') && mag >= 1e-4 && mag < 1e16) {
        int exponent = (int)floor(log10(mag));
        int decimals = digits - 1 - exponent;
        snprintf(out, 40, "%.*f", decimals > 0 ? decimals : 0, v);
    }
    if (!strpbrk(out, ".e")) strcat(out, ".0");
    return out;
}

/* Python's round(v, 4), for RandomResizedCrop's repr. */
static double round4(double v) { return nearbyint(v * 1e4) / 1e4; }

static void describe(const Transform *t, Text *s) {
    char a[40], b[40];
    switch (t->kind) {
    case KIND_COMPOSE:
    case KIND_RANDOM_APPLY:
        /* torchvision prints children with four spaces before their first line only. */
        text_add(s, "%s(", kind_names[t->kind]);
        if (t->kind == KIND_RANDOM_APPLY) text_add(s, "\n    p=%s", py_float(t->p, a));
        for (int i = 0; i < t->nchildren; i++) {
            text_add(s, "\n    ");
            describe(t->children[i], s);
        }
        text_add(s, "\n)");
        break;
    case KIND_RANDOM_RESIZED_CROP:
        text_add(s, "RandomResizedCrop(size=(%d, %d), scale=(%s, ", t->height, t->width, py_float(round4(t->scale[0]), a));
        text_add(s, "%s), ratio=(", py_float(round4(t->scale[1]), a));
        text_add(s, "%s, %s), interpolation=bilinear, antialias=None)", py_float(round4(t->ratio[0]), a),
                 py_float(round4(t->ratio[1]), b));
        break;
    case KIND_RESIZE:
        if (t->width == 0) {
            text_add(s, "Resize(size=%d, interpolation=bilinear, max_size=", t->height);
            if (t->max_size) text_add(s, "%d", t->max_size);
            else text_add(s, "None");
            text_add(s, ", antialias=None)");
        } else {
            text_add(s, "Resize(size=[%d, %d], interpolation=bilinear, max_size=None, antialias=None)", t->height,
                     t->width);
        }
        break;
    case KIND_CENTER_CROP:
        text_add(s, "CenterCrop(size=(%d, %d))", t->height, t->width);
        break;
    case KIND_RANDOM_CROP:
        /* torchvision prints padding as given: an int, or the list */
        text_add(s, "RandomCrop(size=(%d, %d), padding=", t->height, t->width);
        if (t->pad[0] == t->pad[1] && t->pad[1] == t->pad[2] && t->pad[2] == t->pad[3]) text_add(s, "%d", t->pad[0]);
        else text_add(s, "[%d, %d, %d, %d]", t->pad[0], t->pad[1], t->pad[2], t->pad[3]);
        text_add(s, ")");
        break;
    case KIND_RANDOM_HORIZONTAL_FLIP:
    case KIND_RANDOM_GRAYSCALE:
        text_add(s, "%s(p=%s)", kind_names[t->kind], py_float(t->p, a));
        break;
    case KIND_COLOR_JITTER: {
        static const char *const names[4] = {"brightness", "contrast", "saturation", "hue"};
        text_add(s, "ColorJitter(");
        for (int i = 0; i < 4; i++) {
            text_add(s, "%s%s=", i ? ", " : "", names[i]);
            if (t->jitter_on[i]) text_add(s, "[%s, %s]", py_float(t->jitter[i][0], a), py_float(t->jitter[i][1], b));
            else text_add(s, "None");
        }
        text_add(s, ")");
        break;
    }
    case KIND_GRAYSCALE:
        text_add(s, "Grayscale(num_output_channels=%d)", t->channels);
        break;
    case KIND_GAUSSIAN_BLUR:
        text_add(s, "GaussianBlur(sigma=[%s, %s])", py_float(t->sigma[0], a), py_float(t->sigma[1], b));
        break;
    case KIND_TO_TENSOR:
        text_add(s, "ToTensor()");
        break;
    case KIND_NORMALIZE:
        text_add(s, "Normalize(mean=[");
        for (int i = 0; i < t->n; i++) text_add(s, "%s%s", i ? ", " : "", py_float(t->mean[i], a));
        text_add(s, "], std=[");
        for (int i = 0; i < t->n; i++) text_add(s, "%s%s", i ? ", " : "", py_float(t->std[i], a));
        text_add(s, "])");
        break;
    }
}

int transform_describe(const Transform *t, char *buf, size_t size) {
    Text s = {buf, size, 0};
    if (buf && size) buf[0] = '\0';
    if (!t) {
        text_add(&s, "(no transform)");
        return (int)s.len;
    }
    describe(t, &s);
    if (buf && size) buf[s.len < size ? s.len : size - 1] = '\0';
    return (int)s.len;
}
