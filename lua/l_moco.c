/* lua/l_moco.c: the C part of `require "moco"` (preloaded as "moco.core"): generators,
 * threading controls, and the tensor functions from l_tensor.c. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "io/idx.h"
#include "lmoco.h"
#include "rng.h"
#include "threads.h"

/* ------------------------------------------------------------ generators */

typedef struct LGenerator {
    Rng rng;
} LGenerator;

static LGenerator *check_generator(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, MOCO_GENERATOR_MT);
}

/* The default generator lives in the registry; seeded with 0 until moco.manual_seed, so
 * a fresh session is reproducible (never a clock seed). */
static const char default_generator_key = 'g';

static Rng *default_generator(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &default_generator_key);
    LGenerator *g = lua_touserdata(L, -1);
    lua_pop(L, 1); /* still referenced from the registry */
    return &g->rng;
}

Rng *lmoco_optgenerator(lua_State *L, int idx) {
    if (!lua_isnoneornil(L, idx)) return &check_generator(L, idx)->rng;
    return default_generator(L);
}

static lua_Integer check_u64(lua_State *L, int idx) { return luaL_checkinteger(L, idx); }

/* moco.Generator([seed [, stream]]) */
static int l_generator(lua_State *L) {
    uint64_t seed = (uint64_t)luaL_optinteger(L, 1, 0), stream = (uint64_t)luaL_optinteger(L, 2, 0);
    LGenerator *g = lua_newuserdatauv(L, sizeof *g, 0);
    rng_seed(&g->rng, seed, stream);
    luaL_setmetatable(L, MOCO_GENERATOR_MT);
    return 1;
}

/* moco.manual_seed(seed): reseeds the default generator. */
static int l_manual_seed(lua_State *L) {
    uint64_t seed = (uint64_t)check_u64(L, 1);
    rng_seed(default_generator(L), seed, 0);
    return 0;
}

static int g_seed(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    rng_seed(&g->rng, (uint64_t)check_u64(L, 2), (uint64_t)luaL_optinteger(L, 3, 0));
    lua_settop(L, 1);
    return 1;
}

/* g:uniform() in [0,1); g:uniform(a, b) in [a, b) */
static int g_uniform(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    double u = rng_uniform_double(&g->rng);
    if (lua_isnoneornil(L, 2)) {
        lua_pushnumber(L, u);
    } else {
        double a = luaL_checknumber(L, 2), b = luaL_checknumber(L, 3);
        lua_pushnumber(L, a + (b - a) * u);
    }
    return 1;
}

/* g:normal([mean [, std]]) */
static int g_normal(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    double mean = luaL_optnumber(L, 2, 0), std = luaL_optnumber(L, 3, 1);
    lua_pushnumber(L, mean + std * rng_normal(&g->rng));
    return 1;
}

/* g:random(n) -> integer in [1, n], like math.random(n) */
static int g_random(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1 && n <= UINT32_MAX, 2, "must be in [1, 2^32]");
    lua_pushinteger(L, (lua_Integer)rng_below(&g->rng, (uint32_t)n) + 1);
    return 1;
}

/* g:permutation(n) -> table with a random order of 1..n */
static int g_permutation(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n <= (1 << 28), 2, "must be in [0, 2^28]");
    int64_t *perm = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *perm, 0);
    rng_permutation(&g->rng, perm, n);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_pushinteger(L, perm[i] + 1);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* g:get_state() -> table of RNG_STATE_WORDS integers (64-bit words) */
static int g_get_state(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    uint64_t words[RNG_STATE_WORDS];
    rng_get_state(&g->rng, words);
    lua_createtable(L, RNG_STATE_WORDS, 0);
    for (int i = 0; i < RNG_STATE_WORDS; i++) {
        lua_pushinteger(L, (lua_Integer)words[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int g_set_state(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (luaL_len(L, 2) != RNG_STATE_WORDS)
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected a table of %d integers", RNG_STATE_WORDS));
    uint64_t words[RNG_STATE_WORDS];
    for (int i = 0; i < RNG_STATE_WORDS; i++) {
        lua_geti(L, 2, i + 1);
        int isnum;
        words[i] = (uint64_t)lua_tointegerx(L, -1, &isnum);
        if (!isnum) return luaL_argerror(L, 2, "state entries must be integers");
        lua_pop(L, 1);
    }
    if (rng_set_state(&g->rng, words)) return lmoco_error(L);
    lua_settop(L, 1);
    return 1;
}

static int g_tostring(lua_State *L) {
    LGenerator *g = check_generator(L, 1);
    lua_pushfstring(L, "moco.Generator (%p)", (void *)g);
    return 1;
}

static const luaL_Reg generator_methods[] = {
    {"seed", g_seed},           {"uniform", g_uniform},     {"normal", g_normal},
    {"random", g_random},       {"permutation", g_permutation}, {"get_state", g_get_state},
    {"set_state", g_set_state}, {NULL, NULL}};

void lmoco_open_generator(lua_State *L) {
    luaL_newmetatable(L, MOCO_GENERATOR_MT);
    luaL_newlib(L, generator_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, g_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    LGenerator *g = lua_newuserdatauv(L, sizeof *g, 0);
    rng_seed(&g->rng, 0, 0);
    luaL_setmetatable(L, MOCO_GENERATOR_MT);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &default_generator_key);

    lua_pushcfunction(L, l_generator);
    lua_setfield(L, -2, "Generator");
    lua_pushcfunction(L, l_manual_seed);
    lua_setfield(L, -2, "manual_seed");
}

static int l_default_generator(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &default_generator_key);
    return 1;
}

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
    {"default_generator", l_default_generator},
    {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads},
    {NULL, NULL}};

int luaopen_moco_core(lua_State *L) {
    luaL_newlib(L, core_functions);
    lmoco_open_tensor(L);
    lmoco_open_generator(L);
    lmoco_open_optim(L);
    lmoco_open_contrast(L);
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
