/* lua/l_data.c: the moco.Dataset and moco.Loader userdata, as moco._data (moco.core._data),
 * the base of lua/moco/data.lua.
 *
 *   image_folder(root, channels)      -> dataset, skipped_count, first_skipped_path|nil
 *   image_files(root, channels)       -> the same, for ImageFiles (no classes, label -1)
 *   file_list(list_path, root|nil, channels, "auto"|","|"whitespace")   -> dataset
 *   cifar10(root, train) / cifar100(root, train)                       -> dataset
 *   idx(images_path, labels_path [, class_names])                      -> dataset
 *   fashion_mnist(root|nil, train)                                     -> dataset
 *   loader(dataset, options, transform|nil, two_crops, lua_apply|nil, generator)
 *       options: {batch_size=, workers=, prefetch=, shuffle=, drop_last=, seed=,
 *       on_error = "raise"|"skip", shard_rank=, shard_count=} (defaults are data.lua's business; every field must be
 *       present).  dataset: a moco.Dataset, or a dataset written in Lua (data.lua checked
 *       it), then with options {length = #ds, channels =, name =}: its get(i) runs on this
 *       thread inside next(), and the workers decode what it returns (see lua_fetch).  With "skip", next() writes the loader's warnings (one per file that
 *       failed to decode) to stderr.  transform: a
 *       moco.transforms object.  When it has no C pipeline (it holds a T.Lambda) or is a
 *       plain function, lua_apply(image, generator) -> Image|Tensor runs it on the calling
 *       thread, and the workers only decode.  generator: a moco.Generator the loader
 *       re-derives for each sample in that case.
 *   bytes(s) -> moco.Bytes: the encoded image file s, for a Lua dataset's get to return
 *   cpu_count(), thread_advice(workers), loader_methods()
 *
 * Lua positions are 1-based (ds[1] is torchvision's ds[0]); labels are 0-based class values.
 * A moco.Image comes from lua/l_image.c (lmoco_pushimage and friends). */
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "error.h"
#include "image/functional.h"
#include "lmoco.h"

#define MOCO_DATASET_MT "moco.Dataset"
#define MOCO_LOADER_MT "moco.Loader"

/* ------------------------------------------------------------ datasets */

typedef struct LDataset {
    Dataset *ds;          /* NULL once closed */
    int64_t skipped;      /* ImageFolder, ImageFiles: files without an image extension */
} LDataset;

static LDataset *new_dataset_box(lua_State *L) {
    return lmoco_newudata(L, sizeof(LDataset), 0, MOCO_DATASET_MT);
}

static Dataset *check_dataset(lua_State *L, int idx) {
    LDataset *box = luaL_checkudata(L, idx, MOCO_DATASET_MT);
    if (!box->ds) luaL_argerror(L, idx, "dataset was closed");
    return box->ds;
}

static int set_dataset(lua_State *L, LDataset *box, Dataset *ds) {
    if (!ds) return lmoco_error(L);
    box->ds = ds;
    return 1;
}

/* image_folder and image_files: the dataset, then the report of skipped files. */
static int image_tree(lua_State *L, Dataset *(*open)(const char *, int, ImageFolderReport *)) {
    const char *root = luaL_checkstring(L, 1);
    int channels = (int)luaL_optinteger(L, 2, 3);
    LDataset *box = new_dataset_box(L);
    ImageFolderReport report;
    set_dataset(L, box, open(root, channels, &report));
    box->skipped = report.skipped_files;
    lua_pushinteger(L, (lua_Integer)report.skipped_files);
    if (report.skipped_files)
        lua_pushstring(L, report.first_skipped);
    else
        lua_pushnil(L);
    return 3;
}
static int l_image_folder(lua_State *L) { return image_tree(L, dataset_image_folder); }
static int l_image_files(lua_State *L) { return image_tree(L, dataset_image_files); }

/* file_list(list_path, root|nil, channels, delimiter): delimiter "auto", "," or "whitespace". */
static int l_file_list(lua_State *L) {
    const char *list = luaL_checkstring(L, 1), *root = luaL_optstring(L, 2, NULL);
    int channels = (int)luaL_checkinteger(L, 3);
    static const char *const names[] = {"auto", ",", "whitespace", NULL};
    static const int delimiters[] = {0, ',', ' '};
    int delimiter = delimiters[luaL_checkoption(L, 4, "auto", names)];
    LDataset *box = new_dataset_box(L);
    return set_dataset(L, box, dataset_file_list(list, root, channels, delimiter));
}

static int l_cifar(lua_State *L, int cifar100) {
    const char *root = luaL_checkstring(L, 1);
    int train = lua_toboolean(L, 2);
    LDataset *box = new_dataset_box(L);
    return set_dataset(L, box, cifar100 ? dataset_cifar100(root, train) : dataset_cifar10(root, train));
}
static int l_cifar10(lua_State *L) { return l_cifar(L, 0); }
static int l_cifar100(lua_State *L) { return l_cifar(L, 1); }

static int l_idx(lua_State *L) {
    const char *images = luaL_checkstring(L, 1), *labels = luaL_checkstring(L, 2);
    int n = 0;
    const char *names[256];
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_Integer len = luaL_len(L, 3);
        luaL_argcheck(L, len >= 1 && len <= 256, 3, "expected 1 to 256 class names");
        for (lua_Integer i = 1; i <= len; i++) {
            lua_geti(L, 3, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_argerror(L, 3, lua_pushfstring(L, "class name %d is not a string", (int)i));
            names[n++] = lua_tostring(L, -1); /* kept alive by the table */
            lua_pop(L, 1);
        }
    }
    LDataset *box = new_dataset_box(L);
    return set_dataset(L, box, dataset_idx(images, labels, n, n ? names : NULL));
}

static int l_fashion_mnist(lua_State *L) {
    const char *root = luaL_optstring(L, 1, NULL);
    int train = lua_toboolean(L, 2);
    LDataset *box = new_dataset_box(L);
    return set_dataset(L, box, dataset_fashion_mnist(root, train));
}

/* subset(ds, positions) with a table of 1-based positions, or subset(ds, n) for the first n. */
static int l_subset(lua_State *L) {
    Dataset *source = check_dataset(L, 1);
    int64_t n;
    int64_t *idx;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer first = luaL_checkinteger(L, 2);
        luaL_argcheck(L, first >= 0 && first <= source->length, 2, "must be between 0 and the dataset length");
        n = first;
        idx = lmoco_newarray(L, (size_t)n, sizeof *idx);
        for (int64_t i = 0; i < n; i++) idx[i] = i;
    } else {
        luaL_checktype(L, 2, LUA_TTABLE);
        n = (int64_t)luaL_len(L, 2);
        idx = lmoco_newarray(L, (size_t)n, sizeof *idx);
        for (int64_t i = 0; i < n; i++) {
            lua_geti(L, 2, (lua_Integer)i + 1);
            int isnum;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            if (!isnum || v < 1 || v > source->length)
                return luaL_error(L, "Subset: position %d is %s, not in [1, %d]", (int)i + 1,
                                  luaL_tolstring(L, -1, NULL), (int)source->length);
            lua_pop(L, 1);
            idx[i] = v - 1;
        }
    }
    LDataset *box = new_dataset_box(L);
    return set_dataset(L, box, dataset_subset(source, idx, n));
}

/* A 1-based Lua position as a 0-based index, with an error naming the range. */
static int64_t check_position(lua_State *L, int idx, const Dataset *ds) {
    lua_Integer i = luaL_checkinteger(L, idx);
    if (i < 1 || i > ds->length)
        luaL_error(L, "%s: index %I out of range [1, %I] (Lua positions start at 1)", ds->name, i,
                   (lua_Integer)ds->length);
    return (int64_t)(i - 1);
}

/* ds:get(i) -> image, label */
static int ds_get(lua_State *L) {
    Dataset *ds = check_dataset(L, 1);
    int64_t index = check_position(L, 2, ds);
    Image img;
    int64_t label;
    if (dataset_get(ds, index, &img, &label)) return lmoco_error(L);
    lmoco_pushimage(L, &img); /* moves img; cannot leak it (the box exists before the move) */
    lua_pushinteger(L, (lua_Integer)label);
    return 2;
}

static int ds_label(lua_State *L) {
    Dataset *ds = check_dataset(L, 1);
    lua_pushinteger(L, (lua_Integer)dataset_label(ds, check_position(L, 2, ds)));
    return 1;
}

static int ds_path(lua_State *L) {
    Dataset *ds = check_dataset(L, 1);
    const char *p = dataset_sample_path(ds, check_position(L, 2, ds));
    if (p)
        lua_pushstring(L, p);
    else
        lua_pushnil(L);
    return 1;
}

/* ds:targets() -> tensor (N) of the 0-based labels, without decoding anything */
static int ds_targets(lua_State *L) {
    Dataset *ds = check_dataset(L, 1);
    LTensor *box = lmoco_newbox(L);
    int64_t n = ds->length;
    Tensor *t = tensor_empty(1, &n);
    if (t)
        for (int64_t i = 0; i < n; i++) t->data[i] = (float)dataset_label(ds, i);
    lmoco_settensor(L, box, t);
    return 1;
}

static int ds_len(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)check_dataset(L, 1)->length);
    return 1;
}

static int ds_close(lua_State *L) {
    LDataset *box = luaL_checkudata(L, 1, MOCO_DATASET_MT);
    dataset_release(box->ds); /* a loader holds its own reference */
    box->ds = NULL;
    return 0;
}

static int ds_tostring(lua_State *L) {
    LDataset *box = luaL_checkudata(L, 1, MOCO_DATASET_MT);
    if (!box->ds) {
        lua_pushliteral(L, "moco.Dataset (closed)");
        return 1;
    }
    lua_pushfstring(L, "%s: %I samples, %d classes", box->ds->name, (lua_Integer)box->ds->length,
                    box->ds->num_classes);
    if (box->skipped)
        lua_pushfstring(L, " (%I non-image files skipped)", (lua_Integer)box->skipped);
    else
        lua_pushliteral(L, "");
    lua_concat(L, 2);
    return 1;
}

/* ds[i] -> {image, label} (an index can give one value only); ds.classes, ds.class_to_idx
 * (nil without class names), ds.name, ds.skipped; methods. */
static int ds_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_settop(L, 2);
        lua_createtable(L, 2, 0);
        lua_pushcfunction(L, ds_get);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        lua_call(L, 2, 2);
        lua_rawseti(L, 3, 2);
        lua_rawseti(L, 3, 1);
        return 1;
    }
    const char *key = luaL_checkstring(L, 2);
    if (!strcmp(key, "classes") || !strcmp(key, "class_to_idx")) {
        Dataset *ds = check_dataset(L, 1);
        /* ImageFiles and FileList have no class names: nil, as the attribute torchvision's
         * datasets without classes lack (eval then counts the classes from the labels). */
        if (ds->num_classes == 0) {
            lua_pushnil(L);
            return 1;
        }
        int by_name = !strcmp(key, "class_to_idx");
        lua_createtable(L, by_name ? 0 : ds->num_classes, by_name ? ds->num_classes : 0);
        for (int c = 0; c < ds->num_classes; c++) {
            if (by_name) {
                lua_pushinteger(L, c);
                lua_setfield(L, -2, ds->classes[c]);
            } else {
                lua_pushstring(L, ds->classes[c]);
                lua_rawseti(L, -2, c + 1);
            }
        }
        return 1;
    }
    if (!strcmp(key, "name")) {
        lua_pushstring(L, check_dataset(L, 1)->name);
        return 1;
    }
    if (!strcmp(key, "skipped")) {
        LDataset *box = luaL_checkudata(L, 1, MOCO_DATASET_MT);
        lua_pushinteger(L, (lua_Integer)box->skipped);
        return 1;
    }
    luaL_getmetatable(L, MOCO_DATASET_MT);
    lua_getfield(L, -1, "methods");
    lua_getfield(L, -1, key);
    return 1;
}

static const luaL_Reg dataset_methods[] = {{"get", ds_get},         {"label", ds_label}, {"path", ds_path},
                                           {"targets", ds_targets}, {"close", ds_close}, {NULL, NULL}};

static const luaL_Reg dataset_meta[] = {{"__index", ds_index},       {"__len", ds_len}, {"__gc", ds_close},
                                        {"__close", ds_close},       {"__tostring", ds_tostring},
                                        {NULL, NULL}};

/* ------------------------------------------------------------ loaders */

/* Uservalues of a moco.Loader: what must stay alive as long as it does. */
enum { UV_DATASET = 1, UV_TRANSFORM, UV_LUA_APPLY, UV_GENERATOR, UV_COUNT = UV_GENERATOR };

typedef struct LLoader {
    Loader *l;            /* NULL once closed */
    lua_State *fetch_L;   /* a Lua dataset: the thread inside next(), whose stack slot 1 is this box */
    int in_next;          /* inside loader_next: a get() may not use this loader */
    int two_crops;
    int lua_mode;         /* the transform runs here, in Lua (LOADER_IMAGES) */
    uint64_t seed;
    int64_t batch_size;
    int workers;
    int skip_errors;      /* on_error = "skip" */
} LLoader;

static LLoader *check_loader(lua_State *L, int idx) {
    LLoader *box = luaL_checkudata(L, idx, MOCO_LOADER_MT);
    if (!box->l) luaL_argerror(L, idx, "loader was closed");
    return box;
}

static lua_Integer field_integer(lua_State *L, int idx, const char *name) {
    lua_getfield(L, idx, name);
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    if (!isnum) luaL_error(L, "data.Loader: option %s must be an integer, got %s", name, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}


/* Reads the transform arguments at idx (transform), idx+1 (two_crops), idx+2 (lua_apply):
 * the C pipeline (NULL for none or for Lua mode) and whether it runs in Lua. */
static Transform *check_pipeline(lua_State *L, int idx, int *lua_mode) {
    *lua_mode = 0;
    if (lua_isnoneornil(L, idx)) return NULL;
    if (lua_type(L, idx) != LUA_TFUNCTION) {
        Transform *t = lmoco_checktransform(L, idx);
        if (t) return t;
    }
    /* A function, or a pipeline with a T.Lambda in it: only Lua can run it. */
    if (lua_type(L, idx + 2) != LUA_TFUNCTION)
        luaL_argerror(L, idx + 2, "a function that applies the Lua transform is needed");
    *lua_mode = 1;
    return NULL;
}

/* ---- datasets written in Lua ----
 * The loader calls lua_fetch on this thread, inside next(), for every sample of a batch
 * before its workers start on it: it runs ds:get(i) (i from 1) and copies what get returns
 * into C memory, since the workers cannot touch Lua values.  get returns image, label:
 *   image  a string: the path of an image file, decoded by the workers (as ImageFolder's);
 *          a moco.Bytes (data.bytes(s)): an encoded file in memory, decoded by the workers;
 *          a moco.Image: used as it is; a moco.Tensor (C, H, W) or (H, W) in [0, 1]: made
 *          an image as image.from_tensor does (rounded; exact for a to_tensor result).
 *   label  an integer (a float with an integer value too): the 0-based class, or -1.
 * A get that raises or returns anything else makes that sample fail (its message names
 * get(i)), as a corrupt file does; on_error decides.  Only an interrupt or a memory error
 * stops next() itself. */
#define MOCO_BYTES_MT "moco.Bytes"
/* Labels go into float tensors, exact up to 2^24. */
#define LUA_DATASET_MAX_LABEL (1 << 24)

typedef struct FetchCall {
    SampleSource *out;
    int fatal;            /* out of C memory: stop next() */
} FetchCall;

static char *copy_bytes(const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}

/* A failed sample with a formatted reason (the message is built on the Lua stack). */
static void fetch_failed(lua_State *L, FetchCall *call, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *msg = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    sample_source_free(call->out);
    call->out->kind = SAMPLE_FAILED;
    call->out->error = copy_bytes(msg, strlen(msg));
    if (!call->out->error) call->fatal = 1;
    lua_pop(L, 1);
}

/* Protected: call_get(ds, i, call) runs ds:get(i) and fills call->out from its results. */
static int call_get(lua_State *L) {
    FetchCall *call = lua_touserdata(L, 3);
    SampleSource *out = call->out;
    lua_Integer i = lua_tointeger(L, 2);
    lua_getfield(L, 1, "get");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 2);
    int image = lua_gettop(L) - 1, label = image + 1;
    int isnum = 0, type = lua_type(L, label);
    lua_Integer value = type == LUA_TNUMBER ? lua_tointegerx(L, label, &isnum) : 0;
    if (!isnum || value < -1 || value > LUA_DATASET_MAX_LABEL) {
        const char *what = type == LUA_TSTRING                           ? lua_pushfstring(L, "the string \"%s\"", lua_tostring(L, label))
                           : type == LUA_TNUMBER || type == LUA_TBOOLEAN ? luaL_tolstring(L, label, NULL)
                                                                          : luaL_typename(L, label);
        fetch_failed(L, call, "get(%I) returned the label %s; a label must be an integer: the 0-based class, or -1 "
                     "for none (at most %d)", i, what, LUA_DATASET_MAX_LABEL);
        return 0;
    }
    out->label = (int64_t)value;
    size_t len;
    Image *img;
    Tensor *t;
    if (lua_type(L, image) == LUA_TSTRING) {
        const char *path = lua_tolstring(L, image, &len);
        if (strlen(path) != len) {
            fetch_failed(L, call, "get(%I) returned a path with a NUL byte in it (encoded bytes go in data.bytes(s))", i);
            return 0;
        }
        out->kind = SAMPLE_PATH;
        out->path = copy_bytes(path, len);
        call->fatal = !out->path;
    } else if (luaL_testudata(L, image, MOCO_BYTES_MT)) {
        lua_getiuservalue(L, image, 1);
        const char *bytes = lua_tolstring(L, -1, &len);
        out->kind = SAMPLE_BYTES;
        out->bytes = (uint8_t *)copy_bytes(bytes, len);
        out->size = len;
        call->fatal = !out->bytes;
    } else if ((img = lmoco_toimage(L, image)) != NULL) {
        out->kind = SAMPLE_IMAGE;
        call->fatal = image_alloc(&out->image, img->width, img->height, img->channels) != 0;
        if (!call->fatal)
            memcpy(out->image.data, img->data, (size_t)img->width * (size_t)img->height * (size_t)img->channels);
    } else if ((t = lmoco_totensor(L, image)) != NULL) {
        if (image_from_tensor(&out->image, t)) {
            fetch_failed(L, call, "get(%I) returned a tensor that is not an image: %s", i, moco_last_error());
            return 0;
        }
        out->kind = SAMPLE_IMAGE;
    } else {
        fetch_failed(L, call, "get(%I) returned %s as the image; expected a path (a string), data.bytes(s), a "
                     "moco.Image or a moco.Tensor", i, luaL_typename(L, image));
    }
    return 0;
}

/* The fetch function of a Lua dataset (dataset_external's; ctx is the loader's box). */
static int lua_fetch(void *ctx, int64_t index, SampleSource *out) {
    LLoader *box = ctx;
    lua_State *L = box->fetch_L;
    if (!L) return moco_error("data.Loader: a Lua dataset was read outside next()");
    if (!lua_checkstack(L, 8)) return moco_error("data.Loader: Lua stack overflow while calling the dataset's get");
    int top = lua_gettop(L);
    FetchCall call = {out, 0};
    lua_pushcfunction(L, call_get);
    lua_getiuservalue(L, 1, UV_DATASET);
    lua_pushinteger(L, (lua_Integer)index + 1);
    lua_pushlightuserdata(L, &call);
    int rc = lua_pcall(L, 3, 0, 0);
    if (rc != LUA_OK) {
        const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1);
        /* Ctrl-C raised "interrupted!" inside get: it stops next(), it is not the sample's fault. */
        if (rc == LUA_ERRMEM || moco_interrupt_requested) {
            moco_error("%s", msg);
            lua_settop(L, top);
            return -1;
        }
        fetch_failed(L, &call, "get(%I) raised an error: %s", (lua_Integer)index + 1, msg);
    }
    lua_settop(L, top);
    if (call.fatal) return moco_error("data.Loader: out of memory for the sample get(%lld) returned",
                                      (long long)index + 1);
    return 0;
}

/* bytes(s) -> moco.Bytes holding s (not copied: the string is its uservalue). */
static int l_bytes(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "data.bytes: expected the encoded file as a string, got %s", luaL_typename(L, 1));
    lmoco_newudata(L, 0, 1, MOCO_BYTES_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int bytes_len(lua_State *L) {
    luaL_checkudata(L, 1, MOCO_BYTES_MT);
    lua_getiuservalue(L, 1, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

static int bytes_tostring(lua_State *L) {
    luaL_checkudata(L, 1, MOCO_BYTES_MT);
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "moco.Bytes (%I bytes)", (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

/* b.data: the string itself. */
static int bytes_index(lua_State *L) {
    luaL_checkudata(L, 1, MOCO_BYTES_MT);
    if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "data")) {
        lua_getiuservalue(L, 1, 1);
        return 1;
    }
    return 0;
}

static const luaL_Reg bytes_meta[] = {{"__len", bytes_len}, {"__tostring", bytes_tostring}, {"__index", bytes_index},
                                      {NULL, NULL}};

/* The moco.Dataset at 1, or for a Lua dataset a new external dataset reading it through
 * box (the caller releases either reference once the loader holds its own). */
static Dataset *loader_dataset(lua_State *L, LLoader *box) {
    if (luaL_testudata(L, 1, MOCO_DATASET_MT)) return dataset_retain(check_dataset(L, 1));
    lua_Integer length = field_integer(L, 2, "length"), channels = field_integer(L, 2, "channels");
    lua_getfield(L, 2, "name");
    const char *name = lua_tostring(L, -1);
    Dataset *ds = dataset_external(name ? name : "Lua dataset", (int64_t)length, (int)channels, 1, lua_fetch, box);
    lua_pop(L, 1);
    return ds;
}

static int l_loader(lua_State *L) {
    if (luaL_testudata(L, 1, MOCO_DATASET_MT)) check_dataset(L, 1); /* not closed */
    luaL_checktype(L, 2, LUA_TTABLE);
    LoaderOptions o;
    o.batch_size = field_integer(L, 2, "batch_size");
    /* Range-checked here, before the cast: 2^32 + 2 workers must not become 2. */
    lua_Integer workers = field_integer(L, 2, "workers"), prefetch = field_integer(L, 2, "prefetch");
    if (workers < 0 || workers > LOADER_MAX_WORKERS)
        return luaL_error(L, "data.Loader: workers must be between 0 and %d, got %I", LOADER_MAX_WORKERS, workers);
    if (prefetch < 1 || prefetch > LOADER_MAX_PREFETCH)
        return luaL_error(L, "data.Loader: prefetch must be between 1 and %d batches, got %I", LOADER_MAX_PREFETCH,
                          prefetch);
    o.workers = (int)workers;
    o.prefetch = (int)prefetch;
    o.shuffle = lmoco_optboolean(L, 2, "shuffle");
    o.drop_last = lmoco_optboolean(L, 2, "drop_last");
    o.seed = (uint64_t)field_integer(L, 2, "seed");
    /* data.lua checks shard = {rank, count} and names it; core checks again (0 <= rank < count). */
    lua_Integer shard_rank = field_integer(L, 2, "shard_rank"), shard_count = field_integer(L, 2, "shard_count");
    if (shard_count < 0 || shard_count > INT_MAX || shard_rank < 0 || shard_rank >= (shard_count > 0 ? shard_count : 1))
        return luaL_error(L, "data.Loader: option shard must have 0 <= rank < count, got rank %I of count %I",
                          shard_rank, shard_count);
    o.shard_rank = (int)shard_rank;
    o.shard_count = (int)shard_count;
    lua_getfield(L, 2, "on_error");
    const char *on_error = lua_tostring(L, -1);
    if (!on_error || (strcmp(on_error, "raise") && strcmp(on_error, "skip")))
        return luaL_error(L, "data.Loader: option on_error must be \"raise\" or \"skip\", got %s",
                          on_error ? on_error : luaL_typename(L, -1));
    o.on_error = strcmp(on_error, "skip") ? LOADER_RAISE : LOADER_SKIP;
    lua_pop(L, 1);
    int lua_mode, two_crops = lua_toboolean(L, 4);
    Transform *t = check_pipeline(L, 3, &lua_mode);
    luaL_checkudata(L, 6, MOCO_GENERATOR_MT); /* for Lua transforms, now or after set_transform */

    LLoader *box = lmoco_newudata(L, sizeof *box, UV_COUNT, MOCO_LOADER_MT);
    int self = lua_gettop(L);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, self, UV_DATASET);
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, self, UV_TRANSFORM);
    lua_pushvalue(L, 5);
    lua_setiuservalue(L, self, UV_LUA_APPLY);
    lua_pushvalue(L, 6);
    lua_setiuservalue(L, self, UV_GENERATOR);
    Dataset *ds = loader_dataset(L, box);
    if (!ds) return lmoco_error(L);
    box->l = loader_create(ds, &o, t, two_crops, lua_mode ? LOADER_IMAGES : LOADER_TENSORS);
    dataset_release(ds); /* the loader holds its own reference */
    if (!box->l) return lmoco_error(L);
    box->two_crops = two_crops;
    box->lua_mode = lua_mode;
    box->seed = o.seed;
    box->batch_size = o.batch_size;
    box->workers = o.workers;
    box->skip_errors = o.on_error == LOADER_SKIP;
    return 1;
}

/* Takes over a tensor from the loader into a new box (the tensor is never leaked: the
 * box exists before anything else can fail). */
static void push_tensor(lua_State *L, LTensor *box, Tensor *t, int fresh) {
    box->t = t;
    /* A new buffer: let the collector know, so that batches the caller dropped are freed
     * (and their buffers reused) soon. */
    if (fresh) lmoco_gcaccount(L, tensor_nbytes(t));
}

/* The decoded images of a Lua-mode batch, taken over from the loader (see ld_next). */
#define MOCO_RAW_BATCH_MT "moco.RawBatch"
typedef struct RawBatch {
    int64_t count;
    uint64_t epoch;
    Image *images;    /* count entries; an entry moved into a moco.Image is zeroed */
    int64_t *streams; /* count random-stream indices */
} RawBatch;

static int raw_batch_gc(lua_State *L) {
    RawBatch *r = luaL_checkudata(L, 1, MOCO_RAW_BATCH_MT);
    for (int64_t j = 0; j < r->count; j++) image_free(&r->images[j]);
    r->count = 0;
    return 0;
}

/* An empty RawBatch with room for n images, on the stack. */
static RawBatch *new_raw_batch(lua_State *L, int64_t n) {
    size_t bytes = sizeof(RawBatch) + (size_t)n * (sizeof(Image) + sizeof(int64_t));
    RawBatch *r = lmoco_newudata(L, bytes, 0, MOCO_RAW_BATCH_MT);
    r->images = (Image *)(r + 1);
    r->streams = (int64_t *)(r->images + n);
    return r;
}

/* Moves the batch's images and streams out of the loader's slot.  No Lua allocation may
 * happen between loader_next and this: a collection step can run finalizers, and one
 * that closes the loader would free the slot. */
static void take_raw_batch(RawBatch *r, LoaderBatch *b) {
    r->epoch = (uint64_t)b->epoch;
    for (int64_t j = 0; j < b->count; j++) {
        r->images[j] = b->raw[j];
        memset(&b->raw[j], 0, sizeof b->raw[j]);
        r->streams[j] = b->streams[j];
    }
    r->count = b->count;
}

/* Lua mode: runs lua_apply on each decoded image of the batch and stacks the results into
 * new tensors, which it leaves at out_q (and out_k).  Stack: boxes at out_q/out_k.  The
 * images were taken over from the loader first, so the Lua transform may do anything to
 * the loader (close it, call next() again) without pulling memory from under us. */
static void apply_lua_pipeline(lua_State *L, LLoader *box, RawBatch *raw, LTensor *out_q, LTensor *out_k) {
    int self = 1;
    int64_t count = raw->count;
    uint64_t seed = box->seed;
    int crops = out_k ? 2 : 1;
    lua_getiuservalue(L, self, UV_LUA_APPLY);
    int apply = lua_gettop(L);
    lua_getiuservalue(L, self, UV_GENERATOR);
    int gen = lua_gettop(L);
    Rng *rng = lmoco_optgenerator(L, gen);
    for (int64_t j = 0; j < count; j++) {
        lmoco_pushimage(L, &raw->images[j]); /* the image is Lua's now */
        int image = lua_gettop(L);
        /* The row's stream, as the C workers use: rng_derive(seed, epoch, index), with the
         * index of the failed sample when on_error = "skip" replaced it. */
        rng_derive(rng, seed, raw->epoch, (uint64_t)raw->streams[j]);
        for (int crop = 0; crop < crops; crop++) {
            LTensor *out = crop ? out_k : out_q;
            lua_pushvalue(L, apply);
            lua_pushvalue(L, image);
            lua_pushvalue(L, gen);
            lua_call(L, 2, 1);
            Tensor *x = lmoco_totensor(L, -1);
            if (!x) {
                Image *img = lmoco_toimage(L, -1);
                if (!img)
                    luaL_error(L, "data.Loader: the Lua transform returned %s, expected a moco.Image or moco.Tensor",
                               luaL_typename(L, -1));
                /* A pipeline without ToTensor gets its conversion, as in the C workers. */
                LTensor *tmp = lmoco_newbox(L);
                lmoco_settensor(L, tmp, image_to_tensor(img));
                x = tmp->t;
            }
            if (!out->t) {
                int64_t shape[TENSOR_MAX_DIMS];
                if (x->ndim + 1 > TENSOR_MAX_DIMS) luaL_error(L, "data.Loader: a sample has %d dimensions", x->ndim);
                shape[0] = count;
                memcpy(shape + 1, x->shape, (size_t)x->ndim * sizeof *shape);
                lmoco_settensor(L, out, tensor_empty(x->ndim + 1, shape));
            }
            if (out->t->numel != count * x->numel || out->t->ndim != x->ndim + 1) {
                char a[128], s[128];
                luaL_error(L, "data.Loader: the samples of a batch have different shapes (%s, and %s for the batch); "
                              "add a Resize or crop so that all have the same",
                           tensor_shape_str(x, a, sizeof a), tensor_shape_str(out->t, s, sizeof s));
            }
            memcpy(out->t->data + j * x->numel, x->data, (size_t)x->numel * sizeof(float));
            lua_settop(L, image);
        }
        lua_settop(L, gen);
    }
    lua_settop(L, apply - 1);
}

/* on_error = "skip": the files that failed since the last call, one line each.  Written
 * here, on the thread that runs Lua, so the lines never interleave with a worker's. */
static void print_skip_warnings(LLoader *box) {
    char msg[1100];
    while (loader_take_warning(box->l, msg, sizeof msg))
        fprintf(stderr, "warning: data.Loader: skipped %s (on_error = \"skip\": replaced by the next sample "
                        "that decodes)\n", msg);
    fflush(stderr);
}

/* loader:next() -> im_q, im_k, labels, indices (TwoCrops) | images, labels, indices | nil at
 * the end of the epoch.  indices (N): the samples' 0-based dataset indices (floats, exact to
 * 2^24), e.g. the rows of a memory bank. */
/* A Lua dataset's get runs inside loader_next: it may not use the loader reading it. */
static LLoader *check_loader_outside_get(lua_State *L, const char *what) {
    LLoader *box = check_loader(L, 1);
    if (box->in_next) luaL_error(L, "data.Loader: %s called from the dataset's get(), on the loader that is reading it", what);
    return box;
}

static int ld_next(lua_State *L) {
    LLoader *box = check_loader_outside_get(L, "next()");
    lua_settop(L, 1);
    int two_crops = box->two_crops; /* a Lua transform may call set_transform meanwhile */
    LTensor *bq = lmoco_newbox(L), *bk = two_crops ? lmoco_newbox(L) : NULL, *bl = lmoco_newbox(L);
    LTensor *bi = lmoco_newbox(L);
    RawBatch *raw = box->lua_mode ? new_raw_batch(L, box->batch_size) : NULL;
    LoaderBatch b;
    box->fetch_L = L; /* for a Lua dataset's get (lua_fetch), with this box at 1 */
    box->in_next = 1;
    int rc = loader_next(box->l, &b);
    box->in_next = 0;
    box->fetch_L = NULL;
    if (rc > 0 && raw && b.raw) take_raw_batch(raw, &b);
    if (box->skip_errors) print_skip_warnings(box);
    if (rc < 0) return lmoco_error(L);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    push_tensor(L, bl, b.labels, b.fresh_storage);
    int64_t n = b.count;
    lmoco_settensor(L, bi, tensor_empty(1, &n));
    for (int64_t j = 0; j < n; j++) bi->t->data[j] = (float)b.indices[j];
    if (raw) {
        apply_lua_pipeline(L, box, raw, bq, bk);
        lua_pop(L, 1); /* the RawBatch */
    } else {
        push_tensor(L, bq, b.images, b.fresh_storage);
        if (bk) push_tensor(L, bk, b.images_k, b.fresh_storage);
    }
    return two_crops ? 4 : 3;
}

/* The iterator of loader:iter(): closes the previous batch, then returns the next.
 * Upvalues: the loader, and a table holding the previous batch's tensors. */
static int ld_iter_step(lua_State *L) {
    lua_settop(L, 0);
    lua_pushvalue(L, lua_upvalueindex(2));
    for (int i = 1; i <= 4; i++) {
        lua_rawgeti(L, 1, i);
        LTensor *t = luaL_testudata(L, -1, MOCO_TENSOR_MT);
        if (t) {
            tensor_free(t->t);
            t->t = NULL;
        }
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_rawseti(L, 1, i);
    }
    lua_pushcfunction(L, ld_next);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 1, LUA_MULTRET);
    int n = lua_gettop(L) - 1;
    for (int i = 1; i <= n && i <= 4; i++) {
        lua_pushvalue(L, 1 + i);
        lua_rawseti(L, 1, i);
    }
    return n;
}

/* for images, labels in loader:iter() do ... end: the rest of the current epoch.  The
 * tensors of a batch are closed when the loop moves on (so their buffers are reused);
 * clone what must outlive the iteration. */
static int ld_iter(lua_State *L) {
    check_loader_outside_get(L, "iter()");
    lua_settop(L, 1);
    lua_createtable(L, 4, 0);
    lua_pushcclosure(L, ld_iter_step, 2);
    return 1;
}

static int ld_set_epoch(lua_State *L) {
    LLoader *box = check_loader_outside_get(L, "set_epoch()");
    if (loader_set_epoch(box->l, (int64_t)luaL_checkinteger(L, 2))) return lmoco_error(L);
    return 0;
}

/* loader:_set_transform(transform|nil, two_crops, lua_apply|nil) (data.lua resolves TwoCrops) */
static int ld_set_transform(lua_State *L) {
    LLoader *box = check_loader_outside_get(L, "set_transform()");
    int lua_mode, two_crops = lua_toboolean(L, 3);
    Transform *t = check_pipeline(L, 2, &lua_mode);
    lua_settop(L, 4);
    if (loader_set_transform(box->l, t, two_crops, lua_mode ? LOADER_IMAGES : LOADER_TENSORS)) return lmoco_error(L);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, 1, UV_TRANSFORM);
    lua_pushvalue(L, 4);
    lua_setiuservalue(L, 1, UV_LUA_APPLY);
    box->two_crops = two_crops;
    box->lua_mode = lua_mode;
    return 0;
}

static int ld_stats(lua_State *L) {
    LLoader *box = check_loader(L, 1);
    LoaderStats st;
    loader_stats(box->l, &st);
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, st.wait_seconds);
    lua_setfield(L, -2, "wait_seconds");
    lua_pushinteger(L, (lua_Integer)st.batches);
    lua_setfield(L, -2, "batches");
    lua_pushinteger(L, (lua_Integer)st.samples);
    lua_setfield(L, -2, "samples");
    lua_pushinteger(L, (lua_Integer)st.skipped);
    lua_setfield(L, -2, "skipped");
    return 1;
}

static int ld_reset_stats(lua_State *L) {
    loader_reset_stats(check_loader(L, 1)->l);
    return 0;
}

static int ld_epoch(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)loader_epoch(check_loader(L, 1)->l));
    return 1;
}

static int ld_position(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)loader_position(check_loader(L, 1)->l));
    return 1;
}

static int ld_len(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)loader_num_batches(check_loader(L, 1)->l));
    return 1;
}

static int ld_close(lua_State *L) {
    LLoader *box = luaL_checkudata(L, 1, MOCO_LOADER_MT);
    /* Not under the feet of loader_next (a __gc cannot run then: next() holds the box). */
    if (box->in_next) return luaL_error(L, "data.Loader: close() called from the dataset's get(), on the loader "
                                           "that is reading it");
    loader_close(box->l); /* joins the workers */
    box->l = NULL;
    return 0;
}

static int ld_tostring(lua_State *L) {
    LLoader *box = luaL_checkudata(L, 1, MOCO_LOADER_MT);
    if (!box->l) {
        lua_pushliteral(L, "moco.Loader (closed)");
        return 1;
    }
    lua_pushfstring(L, "moco.Loader: %I batches of %I per epoch, %d workers%s%s%s, epoch %I, batch %I",
                    (lua_Integer)loader_num_batches(box->l), (lua_Integer)box->batch_size, box->workers,
                    box->two_crops ? ", TwoCrops" : "", box->lua_mode ? ", Lua transform on the calling thread" : "",
                    box->skip_errors ? ", on_error = skip" : "",
                    (lua_Integer)loader_epoch(box->l), (lua_Integer)loader_position(box->l));
    return 1;
}

static int ld_index(lua_State *L) {
    LLoader *box = luaL_checkudata(L, 1, MOCO_LOADER_MT);
    const char *key = luaL_checkstring(L, 2);
    if (!strcmp(key, "batch_size")) {
        lua_pushinteger(L, (lua_Integer)box->batch_size);
    } else if (!strcmp(key, "workers")) {
        lua_pushinteger(L, box->workers);
    } else if (!strcmp(key, "dataset")) {
        lua_getiuservalue(L, 1, UV_DATASET);
    } else if (!strcmp(key, "transform")) {
        lua_getiuservalue(L, 1, UV_TRANSFORM);
    } else {
        luaL_getmetatable(L, MOCO_LOADER_MT);
        lua_getfield(L, -1, "methods");
        lua_getfield(L, -1, key);
    }
    return 1;
}

static const luaL_Reg loader_methods[] = {
    {"next", ld_next},         {"iter", ld_iter},     {"set_epoch", ld_set_epoch},
    {"_set_transform", ld_set_transform}, {"stats", ld_stats}, {"reset_stats", ld_reset_stats},
    {"epoch", ld_epoch},       {"position", ld_position}, {"close", ld_close},
    {NULL, NULL}};

static const luaL_Reg loader_meta[] = {{"__index", ld_index}, {"__len", ld_len},           {"__gc", ld_close},
                                       {"__close", ld_close}, {"__tostring", ld_tostring}, {NULL, NULL}};

/* ------------------------------------------------------------ module */

static int l_cpu_count(lua_State *L) {
    lua_pushinteger(L, loader_cpu_count());
    return 1;
}

static int l_thread_advice(lua_State *L) {
    lua_pushinteger(L, loader_thread_advice((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* The methods table of moco.Loader, for data.lua to add the ones written in Lua. */
static int l_loader_methods(lua_State *L) {
    luaL_getmetatable(L, MOCO_LOADER_MT);
    lua_getfield(L, -1, "methods");
    return 1;
}

static const luaL_Reg data_functions[] = {
    {"image_folder", l_image_folder}, {"image_files", l_image_files}, {"file_list", l_file_list},
    {"cifar10", l_cifar10},   {"cifar100", l_cifar100},
    {"idx", l_idx},                   {"fashion_mnist", l_fashion_mnist}, {"loader", l_loader},
    {"subset", l_subset},             {"bytes", l_bytes},
    {"cpu_count", l_cpu_count},       {"thread_advice", l_thread_advice}, {"loader_methods", l_loader_methods},
    {NULL, NULL}};

static const luaL_Reg raw_batch_meta[] = {{"__gc", raw_batch_gc}, {NULL, NULL}};

void lmoco_open_data(lua_State *L) {
    lmoco_newclass(L, MOCO_DATASET_MT, dataset_methods, dataset_meta);
    lmoco_newclass(L, MOCO_LOADER_MT, loader_methods, loader_meta);
    lmoco_newclass(L, MOCO_BYTES_MT, NULL, bytes_meta);
    lmoco_newclass(L, MOCO_RAW_BATCH_MT, NULL, raw_batch_meta);
    luaL_newlib(L, data_functions);
    lua_setfield(L, -2, "_data");
}
