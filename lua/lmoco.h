/* lua/lmoco.h: the Lua binding, the only code that sees both libmoco and Lua.
 *
 * One file per thing bound; each name says what it binds:
 *
 *   lua/lmoco.c        the binding kit: errors, boxes, GC accounting, lmoco_newclass,
 *                      argument checks (shapes, labels, options); no Lua-visible function
 *   lua/l_root.c       the module root luaopen_moco_core ("moco.core"): time, isatty,
 *                      load_idx, set/get_num_threads, and the calls of every lmoco_open_*
 *   lua/l_generator.c  moco.Generator, manual_seed, the default generator
 *   lua/l_tensor.c     moco.Tensor and the tensor constructors
 *   lua/l_moco.c       the MoCo primitives of core/moco.h as moco._moco (queue, InfoNCE,
 *                      momentum update, shuffling, the end-to-end and memory-bank baselines)
 *   lua/l_nn.c         the layers of core/nn as moco._nn
 *   lua/l_optim.c      SGD as moco._optim
 *   lua/l_eval.c       kNN and evaluation as moco._eval
 *   lua/l_image.c      moco.Image, moco.Transform; moco.image and moco._image
 *   lua/l_data.c       moco.Dataset, moco.Loader, moco.Bytes as moco._data
 *   lua/l_io.c         save, load, safe_open (moco.SafetensorsFile), json_*, moco._io
 *   lua/l_plot.c       the cairo pictures of core/plot.h as moco._plot
 *   lua/l_torch.c      PyTorch's files (torch.load's pickles, .pth export) as moco._torch
 *   lua/l_dist.c       the process group of core/dist.h as moco._dist
 *   lua/main.c         the moco-lua program: REPL, scripts, recipes, signals
 *
 * (Before issue 16 the root and the Generator were lua/l_moco.c and the MoCo primitives
 * lua/l_contrast.c.)
 *
 * Conventions: a C object goes into a box (userdata) created empty, before the C call
 * that fills it, so that an error on the way leaks nothing; __gc and __close free it.
 * Errors are Lua errors: lmoco_error raises libmoco's last error.  A class's metatable
 * is made by lmoco_newclass and nothing else. */
#ifndef MOCO_LMOCO_H
#define MOCO_LMOCO_H

#include <lua.h>

#define MOCO_LUA_VERSION "0.1.0"

/* Opens the C part of the `moco` module (preloaded as "moco.core"); the Lua file
 * lua/moco/init.lua builds the public `moco` table on top of it. */
int luaopen_moco_core(lua_State *L);

/* ---- the binding kit (lua/lmoco.c) ---- */
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* Raises the current libmoco error (moco_last_error) as a Lua error; never returns. */
int lmoco_error(lua_State *L);

/* Pushes a new userdata of `size` bytes, zero-filled, with nuv user values and the
 * metatable registered under `mt` (by lmoco_newclass): the empty box of a C object, made
 * before the call that creates the object. */
void *lmoco_newudata(lua_State *L, size_t size, int nuv, const char *mt);
/* Pushes a scratch array of n entries of `size` bytes (room for one when n is 0) that the
 * collector frees once it leaves the stack, even when an error unwinds; raises when n *
 * size overflows. */
void *lmoco_newarray(lua_State *L, size_t n, size_t size);
/* Tells the collector that a box now owns `bytes` of C memory (Lua cannot see it), so
 * that dropped temporaries are collected promptly; below 4 KiB it does nothing. */
void lmoco_gcaccount(lua_State *L, size_t bytes);
/* Registers the class `name` (its metatable, luaL_newmetatable's): the metamethods, a
 * methods table in field "methods", and __index = methods unless metamethods has an
 * __index function (which then looks in "methods" itself; the REPL's completion reads
 * "methods" too).  methods and metamethods may be NULL.  Leaves the stack as it was. */
void lmoco_newclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods);

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
/* Generator at idx, or the default generator when idx is none/nil (lua/l_generator.c). */
Rng *lmoco_optgenerator(lua_State *L, int idx);
/* The values of a float tensor of class labels (any shape) as int64_t class numbers into out
 * (numel entries), the one label type of libmoco.  Raises "fn: labels[i] is 2.5, not a class
 * number ..." for a value that is not an integer (NaN, 2.5, beyond int64); the range
 * [0, classes) is checked by the C function the labels go to. */
void lmoco_checklabels(lua_State *L, const char *fn, const Tensor *labels, int64_t *out);
/* Checks the options table at t: nothing when t is none or nil, the argument error "table
 * expected" when it is not a table, and "where: unknown option 'KEY' (known: a, b, c)" for a
 * key (of any type) that is not one of the NULL-terminated names in `known`, so that a typo
 * is an error rather than a silently ignored setting.  Leaves the stack as it was. */
void lmoco_checkoptions(lua_State *L, int t, const char *where, const char *const known[]);
/* Field `key` of the options table at t: dflt when nil, else an integer (a number) or the
 * error "where: key must be an integer (a number), got T"; lmoco_optboolean: its truth. */
lua_Integer lmoco_optinteger(lua_State *L, int t, const char *key, lua_Integer dflt, const char *where);
lua_Number lmoco_optnumber(lua_State *L, int t, const char *key, lua_Number dflt, const char *where);
int lmoco_optboolean(lua_State *L, int t, const char *key);
/* Reads a shape given as a table {2,3} or as integers from idx on. Returns ndim. */
int lmoco_checkshape(lua_State *L, int idx, int64_t *shape);

/* Images and transforms (lua/l_image.c). */
#include "image/image.h"
#include "image/transform.h"
Image *lmoco_toimage(lua_State *L, int idx);      /* NULL when not a live moco.Image */
Image *lmoco_checkimage(lua_State *L, int idx);
Image *lmoco_pushimage(lua_State *L, Image *img); /* moves *img into a new userdata */
void lmoco_accountimage(lua_State *L, const Image *img); /* lmoco_gcaccount of its pixels */
Transform *lmoco_checktransform(lua_State *L, int idx); /* NULL for Lua-only pipelines */

/* Each adds its part to the table on top of the stack (the module, see lua/l_root.c). */
void lmoco_open_tensor(lua_State *L);    /* adds the tensor functions (lua/l_tensor.c) */
void lmoco_open_generator(lua_State *L); /* Generator, manual_seed (lua/l_generator.c) */
void lmoco_open_optim(lua_State *L);     /* sets field _optim (lua/l_optim.c) */
void lmoco_open_moco(lua_State *L);      /* sets field _moco (lua/l_moco.c) */
void lmoco_open_eval(lua_State *L);      /* sets field _eval (lua/l_eval.c) */
void lmoco_open_nn(lua_State *L);        /* sets field _nn (lua/l_nn.c) */
void lmoco_open_image(lua_State *L);     /* sets fields image and _image (lua/l_image.c) */
void lmoco_open_data(lua_State *L);      /* sets field _data (lua/l_data.c) */
void lmoco_open_io(lua_State *L);        /* save, load, safe_open, json_*, _io (lua/l_io.c) */
void lmoco_open_plot(lua_State *L);      /* sets field _plot (lua/l_plot.c) */
void lmoco_open_torch(lua_State *L);     /* sets field _torch (lua/l_torch.c) */
void lmoco_open_dist(lua_State *L);      /* sets field _dist (lua/l_dist.c) */

#endif
