/* lua/l_root.c: the root of the C part of `require "moco"` (preloaded as "moco.core"):
 * luaopen_moco_core opens every binding file's part (see lua/lmoco.h), and this file adds
 * the functions that belong to no class: the clock, isatty, the threading controls and
 * load_idx. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "io/idx.h"
#include "lmoco.h"
#include "threads.h"

/* ------------------------------------------------------------ threads */

/* moco.set_num_threads(n): one count for both libmoco's compute pool (the layers; they run
 * BLAS single-threaded inside their tasks) and OpenBLAS for the products outside the layers
 * (contrastive logits, kNN), through moco_set_num_threads (core/gemm.c). */
static int l_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= THREADPOOL_MAX, 1, "must be between 1 and 64");
    if (moco_set_num_threads((int)n)) return lmoco_error(L);
    return 0;
}

static int l_get_num_threads(lua_State *L) {
    lua_pushinteger(L, threadpool_size());
    return 1;
}

/* ------------------------------------------------------------ files */

/* moco.load_idx(path) -> tensor of the raw byte values (0..255) with the file's shape. */
static int l_load_idx(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    LTensor *box = lmoco_newbox(L);
    IdxArray a;
    if (idx_load(path, &a)) return lmoco_error(L);
    Tensor *t = tensor_empty(a.ndim, a.shape);
    if (t)
        for (int64_t i = 0; i < a.count; i++) t->data[i] = (float)a.data[i];
    idx_free(&a);
    lmoco_settensor(L, box, t);
    return 1;
}

/* moco.time() -> seconds from a monotonic clock (wall time, unlike os.clock's CPU time,
 * which adds up every thread's time). */
static int l_time(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* moco.isatty("stdout" | "stderr" | "stdin") -> boolean (for progress bars). */
static int l_isatty(lua_State *L) {
    static const char *const names[] = {"stdin", "stdout", "stderr", NULL};
    int fd = luaL_checkoption(L, 1, "stdout", names);
    lua_pushboolean(L, isatty(fd));
    return 1;
}

static const luaL_Reg core_functions[] = {
    {"time", l_time},
    {"isatty", l_isatty},
    {"load_idx", l_load_idx},
    {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads},
    {NULL, NULL}};

int luaopen_moco_core(lua_State *L) {
    luaL_newlib(L, core_functions);
    lmoco_open_tensor(L);
    lmoco_open_generator(L);
    lmoco_open_optim(L);
    lmoco_open_moco(L);
    lmoco_open_eval(L);
    lmoco_open_nn(L);
    lmoco_open_image(L);
    lmoco_open_data(L);
    lmoco_open_io(L);
    lmoco_open_plot(L);
    lmoco_open_torch(L);
    lmoco_open_dist(L);
    lua_pushliteral(L, MOCO_LUA_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
