/* lua/l_image.c: the moco.Image and moco.Transform userdata.
 *
 *   moco.image            public: load, decode, from_tensor, grid (and the Image methods)
 *   moco._image           for lua/moco/transforms.lua only: the C transform constructors,
 *                         apply, describe, and the functional ops behind T.functional
 *
 * A moco.Image box holds an Image by value and a moco.Transform box a Transform pointer;
 * both are created empty before anything is allocated in C, so a failure leaks nothing,
 * and both have __gc and __close.  Functions exported for the other binding files (the
 * data loader needs them; declarations to be added to lmoco.h):
 *
 *   Image *lmoco_toimage(lua_State *L, int idx);       NULL when not a live moco.Image
 *   Image *lmoco_checkimage(lua_State *L, int idx);
 *   Image *lmoco_pushimage(lua_State *L, Image *img);  moves *img (zeroed after) into a new
 *                                                      moco.Image; the pointer is the box's
 *   Transform *lmoco_checktransform(lua_State *L, int idx);
 *       the C pipeline of a moco.transforms object (a table with a `handle` field) or of a
 *       bare moco.Transform; NULL when the object has no C pipeline (it contains a Lambda,
 *       so it can only run in Lua); raises for anything else.  The pointer is borrowed
 *       from the Lua object: keep that alive, or transform_retain it. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "error.h"
#include "image/functional.h"
#include "image/image.h"
#include "image/transform.h"
#include "lmoco.h"

#define MOCO_IMAGE_MT "moco.Image"
#define MOCO_TRANSFORM_MT "moco.Transform"

typedef struct LImage {
    Image img;  /* data == NULL once freed */
} LImage;

typedef struct LTransform {
    Transform *t;
} LTransform;


/* ------------------------------------------------------------ images */

static LImage *new_image_box(lua_State *L) {
    return lmoco_newudata(L, sizeof(LImage), 0, MOCO_IMAGE_MT);
}

/* After filling a box: tell the collector about the C memory. */
void lmoco_accountimage(lua_State *L, const Image *img) {
    lmoco_gcaccount(L, (size_t)img->width * (size_t)img->height * (size_t)img->channels);
}

Image *lmoco_toimage(lua_State *L, int idx) {
    LImage *box = luaL_testudata(L, idx, MOCO_IMAGE_MT);
    return box && box->img.data ? &box->img : NULL;
}

Image *lmoco_checkimage(lua_State *L, int idx) {
    LImage *box = luaL_checkudata(L, idx, MOCO_IMAGE_MT);
    if (!box->img.data) luaL_argerror(L, idx, "image was freed");
    return &box->img;
}

Image *lmoco_pushimage(lua_State *L, Image *img) {
    LImage *box = new_image_box(L);
    box->img = *img;
    memset(img, 0, sizeof *img);
    lmoco_accountimage(L, &box->img);
    return &box->img;
}

/* A PIL mode ("RGB", "L") or a channel count (1, 3) at idx; `dflt` when absent. */
static int check_mode(lua_State *L, int idx, int dflt) {
    if (lua_isnoneornil(L, idx)) return dflt;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer c = luaL_checkinteger(L, idx);
        if (c != 1 && c != 3) luaL_argerror(L, idx, "channels must be 1 or 3");
        return (int)c;
    }
    const char *mode = luaL_checkstring(L, idx);
    if (strcmp(mode, "RGB") == 0) return 3;
    if (strcmp(mode, "L") == 0) return 1;
    return luaL_argerror(L, idx, lua_pushfstring(L, "mode must be \"RGB\" or \"L\", got \"%s\"", mode));
}

/* moco.image.load(path [, mode]) */
static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int channels = check_mode(L, 2, 0);
    LImage *box = new_image_box(L);
    if (image_load(path, channels, &box->img)) return lmoco_error(L);
    lmoco_accountimage(L, &box->img);
    return 1;
}

/* moco.image.decode(bytes [, mode [, name]]) */
static int l_decode(lua_State *L) {
    size_t size;
    const char *bytes = luaL_checklstring(L, 1, &size);
    int channels = check_mode(L, 2, 0);
    const char *name = luaL_optstring(L, 3, "(string)");
    LImage *box = new_image_box(L);
    if (image_decode((const uint8_t *)bytes, size, channels, &box->img, name)) return lmoco_error(L);
    lmoco_accountimage(L, &box->img);
    return 1;
}

/* moco.image.from_tensor(t): (C,H,W) or (H,W) in [0,1] -> Image */
static int l_from_tensor(lua_State *L) {
    Tensor *t = lmoco_checktensor(L, 1);
    LImage *box = new_image_box(L);
    if (image_from_tensor(&box->img, t)) return lmoco_error(L);
    lmoco_accountimage(L, &box->img);
    return 1;
}

static lua_Integer grid_option(lua_State *L, const char *name, lua_Integer dflt) {
    return lua_isnoneornil(L, 2) ? dflt : lmoco_optinteger(L, 2, name, dflt, "image.grid");
}

/* moco.image.grid({img, ...} [, {nrow = 8, padding = 2, pad_value = 0}]) -> Image */
static int l_grid(lua_State *L) {
    static const char *const options[] = {"nrow", "padding", "pad_value", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    lmoco_checkoptions(L, 2, "image.grid", options);
    lua_Integer n = luaL_len(L, 1);
    if (n < 1 || n > 100000) return luaL_argerror(L, 1, "expected a list of 1 to 100000 images");
    lua_Integer nrow = grid_option(L, "nrow", 8), padding = grid_option(L, "padding", 2);
    lua_Integer pad_value = grid_option(L, "pad_value", 0);
    if (nrow < 1 || nrow > 100000) return luaL_error(L, "grid: nrow must be in [1, 100000]");
    if (padding < 0 || padding > 1000) return luaL_error(L, "grid: padding must be in [0, 1000]");
    if (pad_value < 0 || pad_value > 255) return luaL_error(L, "grid: pad_value must be in [0, 255]");
    /* Pointers into the boxes, each anchored in a table of ours for the call: the list
     * may hand out temporaries (an __index that builds images), which the collector could
     * otherwise free while we still point at them. */
    const Image **images = lmoco_newarray(L, (size_t)n, sizeof *images);
    lua_createtable(L, (int)n, 0);
    int anchor = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        images[i - 1] = lmoco_toimage(L, -1);
        if (!images[i - 1]) return luaL_error(L, "grid: entry %d is %s, expected a moco.Image", (int)i, luaL_typename(L, -1));
        lua_rawseti(L, anchor, i);
    }
    LImage *box = new_image_box(L);
    if (image_make_grid(&box->img, images, (int)n, (int)nrow, (int)padding, (uint8_t)pad_value)) return lmoco_error(L);
    lmoco_accountimage(L, &box->img);
    return 1;
}

/* moco.image.limits() -> {max_pixels =, max_scans =} */
static int l_limits(lua_State *L) {
    ImageLimits lim;
    image_get_limits(&lim);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)lim.max_pixels);
    lua_setfield(L, -2, "max_pixels");
    lua_pushinteger(L, lim.max_scans);
    lua_setfield(L, -2, "max_scans");
    return 1;
}

/* Field `key` of set_limits's table into *v: an integer, or `fallback` for "default".
 * Returns whether the field is there. */
static int limit_option(lua_State *L, const char *key, lua_Integer fallback, lua_Integer *v) {
    int type = lua_getfield(L, 1, key);
    if (type == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "default")) {
        *v = fallback;
    } else if (type != LUA_TNIL) {
        int isnum;
        *v = lua_tointegerx(L, -1, &isnum);
        if (!isnum) luaL_error(L, "image.set_limits: %s must be an integer or \"default\", got %s", key,
                               luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return type != LUA_TNIL;
}

/* moco.image.set_limits{max_pixels =, max_scans =} -> the previous limits; a field left
 * out keeps its value, and "default" restores the default. */
static int l_set_limits(lua_State *L) {
    static const char *const options[] = {"max_pixels", "max_scans", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    lmoco_checkoptions(L, 1, "image.set_limits", options);
    lua_settop(L, 1);
    l_limits(L); /* 2: the previous limits, returned */
    ImageLimits lim;
    image_get_limits(&lim);
    lua_Integer v;
    if (limit_option(L, "max_pixels", IMAGE_DEFAULT_MAX_PIXELS, &v)) lim.max_pixels = (long long)v;
    if (limit_option(L, "max_scans", IMAGE_DEFAULT_MAX_SCANS, &v)) lim.max_scans = v < 0 || v > 1000000 ? -1 : (int)v;
    if (image_set_limits(&lim)) return lmoco_error(L);
    lua_settop(L, 2);
    return 1;
}

/* img:save(path [, quality]): PNG or JPEG by the file's extension. */
static int m_save(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    size_t len;
    const char *path = luaL_checklstring(L, 2, &len);
    const char *dot = strrchr(path, '.');
    char ext[8] = "";
    if (dot && strlen(dot) < sizeof ext)
        for (size_t i = 0; dot[i]; i++) ext[i] = (char)(dot[i] >= 'A' && dot[i] <= 'Z' ? dot[i] + 32 : dot[i]);
    int rc;
    if (strcmp(ext, ".png") == 0) {
        rc = image_save_png(img, path);
    } else if (strcmp(ext, ".jpg") == 0 || strcmp(ext, ".jpeg") == 0) {
        lua_Integer q = luaL_optinteger(L, 3, 75); /* PIL's default quality */
        luaL_argcheck(L, q >= 1 && q <= 100, 3, "JPEG quality must be in [1, 100]");
        rc = image_save_jpeg(img, path, (int)q);
    } else {
        return luaL_error(L, "%s: cannot tell the format from the extension (use .png, .jpg or .jpeg)", path);
    }
    if (rc) return lmoco_error(L);
    lua_settop(L, 1);
    return 1;
}

static int m_to_tensor(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, image_to_tensor(img));
    return 1;
}

/* img:convert("L" | "RGB") */
static int m_convert(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    int channels = check_mode(L, 2, -1);
    if (channels < 0) return luaL_argerror(L, 2, "mode \"RGB\" or \"L\" expected");
    LImage *box = new_image_box(L);
    if (image_convert(&box->img, img, channels)) return lmoco_error(L);
    lmoco_accountimage(L, &box->img);
    return 1;
}

static int m_clone(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    LImage *box = new_image_box(L);
    if (image_convert(&box->img, img, img->channels)) return lmoco_error(L);
    lmoco_accountimage(L, &box->img);
    return 1;
}

/* img:size() -> width, height (PIL's order) */
static int m_size(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    lua_pushinteger(L, img->width);
    lua_pushinteger(L, img->height);
    return 2;
}

/* img:pixel(x, y) with 1-based x (column) and y (row) -> the channel values */
static int m_pixel(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    lua_Integer x = luaL_checkinteger(L, 2), y = luaL_checkinteger(L, 3);
    if (x < 1 || x > img->width || y < 1 || y > img->height)
        return luaL_error(L, "pixel (%d, %d) is outside the %dx%d image", (int)x, (int)y, img->width, img->height);
    const uint8_t *p = img->data + ((size_t)(y - 1) * img->width + (size_t)(x - 1)) * img->channels;
    for (int k = 0; k < img->channels; k++) lua_pushinteger(L, p[k]);
    return img->channels;
}

static int m_free(lua_State *L) {
    LImage *box = luaL_checkudata(L, 1, MOCO_IMAGE_MT);
    image_free(&box->img);
    return 0;
}

static int m_tostring(lua_State *L) {
    LImage *box = luaL_checkudata(L, 1, MOCO_IMAGE_MT);
    if (!box->img.data)
        lua_pushliteral(L, "moco.Image (freed)");
    else
        lua_pushfstring(L, "moco.Image %dx%d %s", box->img.width, box->img.height, box->img.channels == 3 ? "RGB" : "L");
    return 1;
}

static const luaL_Reg image_methods[] = {
    {"save", m_save},   {"to_tensor", m_to_tensor}, {"convert", m_convert}, {"clone", m_clone},
    {"size", m_size},   {"pixel", m_pixel},         {"free", m_free},       {NULL, NULL}};

/* img.width / img.height / img.channels / img.mode, and the methods. */
static int m_index(lua_State *L) {
    LImage *box = luaL_checkudata(L, 1, MOCO_IMAGE_MT);
    const char *key = lua_tostring(L, 2);
    if (key && box->img.data) {
        if (strcmp(key, "width") == 0) return lua_pushinteger(L, box->img.width), 1;
        if (strcmp(key, "height") == 0) return lua_pushinteger(L, box->img.height), 1;
        if (strcmp(key, "channels") == 0) return lua_pushinteger(L, box->img.channels), 1;
        if (strcmp(key, "mode") == 0) return lua_pushstring(L, box->img.channels == 3 ? "RGB" : "L"), 1;
    }
    luaL_getmetatable(L, MOCO_IMAGE_MT);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* ------------------------------------------------------------ transforms */

static LTransform *new_transform_box(lua_State *L) {
    return lmoco_newudata(L, sizeof(LTransform), 0, MOCO_TRANSFORM_MT);
}

static int set_transform(lua_State *L, LTransform *box, Transform *t) {
    if (!t) return lmoco_error(L);
    box->t = t;
    return 1;
}

static Transform *check_handle(lua_State *L, int idx) {
    LTransform *box = luaL_checkudata(L, idx, MOCO_TRANSFORM_MT);
    if (!box->t) luaL_argerror(L, idx, "transform was freed");
    return box->t;
}

Transform *lmoco_checktransform(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_getfield(L, idx, "handle");
        Transform *t = lua_isnil(L, -1) ? NULL : check_handle(L, -1);
        lua_pop(L, 1);
        return t;
    }
    if (!luaL_testudata(L, idx, MOCO_TRANSFORM_MT)) luaL_typeerror(L, idx, "moco.transforms object");
    return check_handle(L, idx);
}

static double check_number_field(lua_State *L, int idx, lua_Integer i, const char *what) {
    lua_geti(L, idx, i);
    int isnum;
    double v = lua_tonumberx(L, -1, &isnum);
    if (!isnum) luaL_error(L, "%s: entry %d must be a number, got %s", what, (int)i, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* A {min, max} pair at idx into out; returns NULL for nil. */
static const double *opt_range(lua_State *L, int idx, double out[2], const char *what) {
    if (lua_isnoneornil(L, idx)) return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    if (luaL_len(L, idx) != 2) luaL_error(L, "%s must be a pair {min, max}", what);
    out[0] = check_number_field(L, idx, 1, what);
    out[1] = check_number_field(L, idx, 2, what);
    return out;
}

/* A list of moco.Transform handles at idx, pushed as a userdata array; returns count. */
static Transform **check_handles(lua_State *L, int idx, int *n) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer len = luaL_len(L, idx);
    if (len > 10000) luaL_argerror(L, idx, "too many transforms");
    Transform **items = lmoco_newarray(L, (size_t)len, sizeof *items);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        items[i - 1] = check_handle(L, -1);
        lua_pop(L, 1);
    }
    *n = (int)len;
    return items;
}

static int check_int(lua_State *L, int idx) {
    lua_Integer v = luaL_checkinteger(L, idx);
    luaL_argcheck(L, v >= -(1 << 30) && v <= (1 << 30), idx, "integer out of range");
    return (int)v;
}

static int t_compose(lua_State *L) {
    int n;
    Transform **items = check_handles(L, 1, &n);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_compose(items, n));
}

static int t_random_apply(lua_State *L) {
    int n;
    Transform **items = check_handles(L, 1, &n);
    double p = luaL_checknumber(L, 2);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_random_apply(items, n, p));
}

static int t_random_resized_crop(lua_State *L) {
    int h = check_int(L, 1), w = check_int(L, 2);
    double scale[2] = {luaL_checknumber(L, 3), luaL_checknumber(L, 4)};
    double ratio[2] = {luaL_checknumber(L, 5), luaL_checknumber(L, 6)};
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_random_resized_crop(h, w, scale, ratio));
}

static int t_resize(lua_State *L) {
    int h = check_int(L, 1), w = check_int(L, 2);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_resize(h, w));
}

static int t_resize_shorter(lua_State *L) {
    int size = check_int(L, 1), max_size = lua_isnoneornil(L, 2) ? 0 : check_int(L, 2);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_resize_shorter(size, max_size));
}

static int t_center_crop(lua_State *L) {
    int h = check_int(L, 1), w = check_int(L, 2);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_center_crop(h, w));
}

/* random_crop(h, w, left, top, right, bottom, pad_if_needed) */
static int t_random_crop(lua_State *L) {
    int h = check_int(L, 1), w = check_int(L, 2);
    int pad[4] = {check_int(L, 3), check_int(L, 4), check_int(L, 5), check_int(L, 6)};
    int pad_if_needed = lua_toboolean(L, 7);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_random_crop(h, w, pad, pad_if_needed));
}

static int t_random_horizontal_flip(lua_State *L) {
    double p = luaL_checknumber(L, 1);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_random_horizontal_flip(p));
}

/* color_jitter(brightness, contrast, saturation, hue), each {min, max} or nil */
static int t_color_jitter(lua_State *L) {
    double r[4][2];
    const double *b = opt_range(L, 1, r[0], "brightness"), *c = opt_range(L, 2, r[1], "contrast");
    const double *s = opt_range(L, 3, r[2], "saturation"), *h = opt_range(L, 4, r[3], "hue");
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_color_jitter(b, c, s, h));
}

static int t_random_grayscale(lua_State *L) {
    double p = luaL_checknumber(L, 1);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_random_grayscale(p));
}

static int t_grayscale(lua_State *L) {
    int n = check_int(L, 1);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_grayscale(n));
}

static int t_gaussian_blur(lua_State *L) {
    double lo = luaL_checknumber(L, 1), hi = luaL_checknumber(L, 2);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_gaussian_blur(lo, hi));
}

static int t_to_tensor(lua_State *L) {
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_to_tensor());
}

/* A list of 1 or 3 numbers at idx. */
static int check_values(lua_State *L, int idx, double out[3], const char *what) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    if (n != 1 && n != 3) luaL_error(L, "Normalize: %s must have 1 or 3 values, got %d", what, (int)n);
    for (lua_Integer i = 1; i <= n; i++) out[i - 1] = check_number_field(L, idx, i, what);
    return (int)n;
}

static int t_normalize(lua_State *L) {
    double mean[3], std[3];
    int n = check_values(L, 1, mean, "mean"), m = check_values(L, 2, std, "std");
    if (n != m) return luaL_error(L, "Normalize: mean has %d values but std has %d", n, m);
    LTransform *box = new_transform_box(L);
    return set_transform(L, box, transform_normalize(mean, std, n));
}

/* apply(handle, image_or_tensor [, generator]) -> Image or Tensor */
static int t_apply(lua_State *L) {
    Transform *t = check_handle(L, 1);
    Image *img = lmoco_toimage(L, 2);
    Tensor *x = img ? NULL : lmoco_totensor(L, 2);
    if (!img && !x) return luaL_typeerror(L, 2, "moco.Image or moco.Tensor");
    Rng *rng = lmoco_optgenerator(L, 3);
    /* Both possible result boxes exist before the C call, so nothing can leak. */
    LImage *ibox = new_image_box(L);
    LTensor *tbox = lmoco_newbox(L);
    TransformResult res;
    if ((img ? transform_apply(t, img, rng, &res) : transform_apply_tensor(t, x, rng, &res)) != 0) return lmoco_error(L);
    if (res.tensor) {
        lmoco_settensor(L, tbox, res.tensor);
        return 1;
    }
    ibox->img = res.image;
    lmoco_accountimage(L, &ibox->img);
    lua_pop(L, 1);
    return 1;
}

/* rrc_params(handle, height, width [, generator]) -> top, left, height, width (0-based),
 * RandomResizedCrop.get_params with the same draws transform_apply makes. */
static int t_rrc_params(lua_State *L) {
    Transform *t = check_handle(L, 1);
    int h = check_int(L, 2), w = check_int(L, 3);
    Rng *rng = lmoco_optgenerator(L, 4);
    int top, left, ch, cw;
    if (transform_random_resized_crop_params(t, h, w, rng, &top, &left, &ch, &cw)) return lmoco_error(L);
    lua_pushinteger(L, top);
    lua_pushinteger(L, left);
    lua_pushinteger(L, ch);
    lua_pushinteger(L, cw);
    return 4;
}

static int t_describe(lua_State *L) {
    Transform *t = check_handle(L, 1);
    int n = transform_describe(t, NULL, 0);
    luaL_Buffer b;
    char *s = luaL_buffinitsize(L, &b, (size_t)n + 1);
    transform_describe(t, s, (size_t)n + 1);
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static const char *kind_string(int kind) {
    return kind == TRANSFORM_IMAGE ? "image" : kind == TRANSFORM_TENSOR ? "tensor" : "any";
}

/* kinds(handle) -> input, output: "image", "tensor" or "any" */
static int t_kinds(lua_State *L) {
    Transform *t = check_handle(L, 1);
    lua_pushstring(L, kind_string(transform_input_kind(t)));
    lua_pushstring(L, kind_string(transform_output_kind(t)));
    return 2;
}

static int t_gc(lua_State *L) {
    LTransform *box = luaL_checkudata(L, 1, MOCO_TRANSFORM_MT);
    transform_free(box->t);
    box->t = NULL;
    return 0;
}

static int t_tostring(lua_State *L) {
    LTransform *box = luaL_checkudata(L, 1, MOCO_TRANSFORM_MT);
    if (!box->t) {
        lua_pushliteral(L, "moco.Transform (freed)");
        return 1;
    }
    return t_describe(L);
}

/* ------------------------------------------------------------ functional ops */

/* Pushes a new image box, runs op into it, raises on error. */
#define IMAGE_OP(call)                                        \
    do {                                                      \
        LImage *out_ = new_image_box(L);                      \
        Image *dst = &out_->img;                              \
        if ((call) != 0) return lmoco_error(L);               \
        lmoco_accountimage(L, dst);                           \
        return 1;                                             \
    } while (0)

static int f_resize(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    int h = check_int(L, 2), w = check_int(L, 3);
    IMAGE_OP(image_resize(dst, img, h, w));
}

/* resize_shorter(img, size [, max_size]) -> image, following torchvision's int size. */
static int f_resize_shorter(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    int size = check_int(L, 2), max_size = lua_isnoneornil(L, 3) ? 0 : check_int(L, 3);
    luaL_argcheck(L, size > 0, 2, "size must be positive");
    luaL_argcheck(L, max_size == 0 || max_size > size, 3, "max_size must be greater than size");
    int h, w;
    image_resized_shorter_side(img->height, img->width, size, max_size, &h, &w);
    if (h == img->height && w == img->width) IMAGE_OP(image_convert(dst, img, img->channels));
    IMAGE_OP(image_resize(dst, img, h, w));
}

static int f_crop(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    int top = check_int(L, 2), left = check_int(L, 3), h = check_int(L, 4), w = check_int(L, 5);
    IMAGE_OP(image_crop(dst, img, top, left, h, w));
}

static int f_center_crop(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    int h = check_int(L, 2), w = check_int(L, 3);
    IMAGE_OP(image_center_crop(dst, img, h, w));
}

static int f_resized_crop(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    int top = check_int(L, 2), left = check_int(L, 3), h = check_int(L, 4), w = check_int(L, 5);
    int oh = check_int(L, 6), ow = check_int(L, 7);
    IMAGE_OP(image_resized_crop(dst, img, top, left, h, w, oh, ow));
}

static int f_hflip(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    IMAGE_OP(image_hflip(dst, img));
}

static int f_adjust_brightness(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    float f = (float)luaL_checknumber(L, 2);
    IMAGE_OP(image_adjust_brightness(dst, img, f));
}

static int f_adjust_contrast(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    float f = (float)luaL_checknumber(L, 2);
    IMAGE_OP(image_adjust_contrast(dst, img, f));
}

static int f_adjust_saturation(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    float f = (float)luaL_checknumber(L, 2);
    IMAGE_OP(image_adjust_saturation(dst, img, f));
}

static int f_adjust_hue(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    double f = luaL_checknumber(L, 2);
    IMAGE_OP(image_adjust_hue(dst, img, f));
}

static int f_rgb_to_grayscale(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    int n = lua_isnoneornil(L, 2) ? 1 : check_int(L, 2);
    IMAGE_OP(image_to_grayscale(dst, img, n));
}

static int f_gaussian_blur(lua_State *L) {
    Image *img = lmoco_checkimage(L, 1);
    float radius = (float)luaL_checknumber(L, 2);
    IMAGE_OP(image_gaussian_blur(dst, img, radius));
}

/* normalize(t, mean, std) -> a new tensor */
static int f_normalize(lua_State *L) {
    Tensor *x = lmoco_checktensor(L, 1);
    double mean[3], std[3];
    int n = check_values(L, 2, mean, "mean"), m = check_values(L, 3, std, "std");
    if (n != m) return luaL_error(L, "normalize: mean has %d values but std has %d", n, m);
    float fm[3], fs[3];
    for (int i = 0; i < n; i++) {
        fm[i] = (float)mean[i];
        fs[i] = (float)std[i];
        if (fs[i] == 0.0f) return luaL_error(L, "normalize: std evaluated to zero, leading to division by zero");
    }
    LTensor *box = lmoco_newbox(L);
    lmoco_settensor(L, box, tensor_clone(x));
    if (image_normalize_tensor_(box->t, fm, fs, n)) return lmoco_error(L);
    return 1;
}

static const luaL_Reg internal_functions[] = {
    {"compose", t_compose},
    {"random_apply", t_random_apply},
    {"random_resized_crop", t_random_resized_crop},
    {"resize", t_resize},
    {"resize_shorter", t_resize_shorter},
    {"center_crop", t_center_crop},
    {"random_horizontal_flip", t_random_horizontal_flip},
    {"random_crop", t_random_crop},
    {"color_jitter", t_color_jitter},
    {"random_grayscale", t_random_grayscale},
    {"grayscale", t_grayscale},
    {"gaussian_blur", t_gaussian_blur},
    {"to_tensor", t_to_tensor},
    {"normalize", t_normalize},
    {"apply", t_apply},
    {"describe", t_describe},
    {"rrc_params", t_rrc_params},
    {"kinds", t_kinds},
    {"f_resize", f_resize},
    {"f_resize_shorter", f_resize_shorter},
    {"f_crop", f_crop},
    {"f_center_crop", f_center_crop},
    {"f_resized_crop", f_resized_crop},
    {"f_hflip", f_hflip},
    {"f_adjust_brightness", f_adjust_brightness},
    {"f_adjust_contrast", f_adjust_contrast},
    {"f_adjust_saturation", f_adjust_saturation},
    {"f_adjust_hue", f_adjust_hue},
    {"f_rgb_to_grayscale", f_rgb_to_grayscale},
    {"f_gaussian_blur", f_gaussian_blur},
    {"f_normalize", f_normalize},
    {NULL, NULL}};

static const luaL_Reg public_functions[] = {
    {"load", l_load},     {"decode", l_decode},         {"from_tensor", l_from_tensor}, {"grid", l_grid},
    {"limits", l_limits}, {"set_limits", l_set_limits}, {NULL, NULL}};

static const luaL_Reg image_meta[] = {
    {"__index", m_index}, {"__gc", m_free}, {"__close", m_free}, {"__tostring", m_tostring}, {NULL, NULL}};

static const luaL_Reg transform_meta[] = {
    {"__gc", t_gc}, {"__close", t_gc}, {"__tostring", t_tostring}, {NULL, NULL}};

/* Adds `image` and `_image` to the table on top of the stack. */
void lmoco_open_image(lua_State *L) {
    lmoco_newclass(L, MOCO_IMAGE_MT, image_methods, image_meta);
    lmoco_newclass(L, MOCO_TRANSFORM_MT, NULL, transform_meta);

    luaL_newlib(L, public_functions);
    lua_setfield(L, -2, "image");
    luaL_newlib(L, internal_functions);
    lua_setfield(L, -2, "_image");
}
