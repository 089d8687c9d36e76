/* lua/lmoco.h: entry points of the Lua binding (the only code that sees both libmoco and Lua). */
#ifndef MOCO_LMOCO_H
#define MOCO_LMOCO_H

#include <lua.h>

#define MOCO_LUA_VERSION "0.1.0"

/* Opens the C part of the `moco` module (preloaded as "moco.core"); the Lua file
 * lua/moco/init.lua builds the public `moco` table on top of it. */
int luaopen_moco_core(lua_State *L);

/* ---- shared helpers for the binding files ---- */
#include "tensor.h"

#define MOCO_TENSOR_MT "moco.Tensor"
#define MOCO_GENERATOR_MT "moco.Generator"

/* The userdata behind a moco.Tensor: a box created empty before anything can fail, so an
 * error while building the tensor never leaks it.  `t` is NULL once closed. */
typedef struct LTensor {
    Tensor *t;
} LTensor;

/* Argument idx as a live tensor (errors name the argument: "moco.Tensor expected, got nil"). */
Tensor *lmoco_checktensor(lua_State *L, int idx);
Tensor *lmoco_totensor(lua_State *L, int idx); /* NULL when not a tensor */
/* Pushes an empty box; fill it with lmoco_settensor. */
LTensor *lmoco_newbox(lua_State *L);
/* box->t = t, or raises moco_last_error() when t is NULL.  Reports new storage to the GC. */
void lmoco_settensor(lua_State *L, LTensor *box, Tensor *t);
/* Raises the current libmoco error as a Lua error. */
int lmoco_error(lua_State *L);
/* Generator at idx, or the default generator when idx is none/nil. */
Rng *lmoco_optgenerator(lua_State *L, int idx);
/* The values of a float tensor of class labels (any shape) as int64_t class numbers into out
 * (numel entries), the one label type of libmoco.  Raises "fn: labels[i] is 2.5, not a class
 * number ..." for a value that is not an integer (NaN, 2.5, beyond int64); the range
 * [0, classes) is checked by the C function the labels go to. */
void lmoco_checklabels(lua_State *L, const char *fn, const Tensor *labels, int64_t *out);
/* Reads a shape given as a table {2,3} or as integers from idx on. Returns ndim. */
int lmoco_checkshape(lua_State *L, int idx, int64_t *shape);

/* Images and transforms (lua/l_image.c). */
#include "image/image.h"
#include "image/transform.h"
Image *lmoco_toimage(lua_State *L, int idx);      /* NULL when not a live moco.Image */
Image *lmoco_checkimage(lua_State *L, int idx);
Image *lmoco_pushimage(lua_State *L, Image *img); /* moves *img into a new userdata */
Transform *lmoco_checktransform(lua_State *L, int idx); /* NULL for Lua-only pipelines */

void lmoco_open_tensor(lua_State *L);    /* adds functions to the table on top */
void lmoco_open_generator(lua_State *L); /* idem */
void lmoco_open_optim(lua_State *L);     /* sets field _optim */
void lmoco_open_contrast(lua_State *L);  /* sets field _moco (lua/l_contrast.c) */
void lmoco_open_eval(lua_State *L);      /* sets field _eval (lua/l_eval.c) */
void lmoco_open_nn(lua_State *L);        /* sets field _nn (lua/l_nn.c) */
void lmoco_open_image(lua_State *L);     /* sets fields image and _image (lua/l_image.c) */
void lmoco_open_data(lua_State *L);      /* sets field _data (lua/l_data.c) */
void lmoco_open_io(lua_State *L);        /* save, load, safe_open, json_*, _io (lua/l_io.c) */
void lmoco_open_plot(lua_State *L);      /* sets field _plot (lua/l_plot.c) */
void lmoco_open_torch(lua_State *L);     /* sets field _torch (lua/l_torch.c) */
void lmoco_open_dist(lua_State *L);      /* sets field _dist (lua/l_dist.c) */

#endif
