/* lua/l_generator.c: moco.Generator (a PCG stream, core/rng.h), moco.manual_seed and the
 * default generator every function without a generator argument draws from. */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "error.h"
#include "lmoco.h"
#include "rng.h"

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
    LGenerator *g = lmoco_newudata(L, sizeof *g, 0, MOCO_GENERATOR_MT);
    rng_seed(&g->rng, seed, stream);
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
    int64_t *perm = lmoco_newarray(L, (size_t)n, sizeof *perm);
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

static const luaL_Reg generator_meta[] = {{"__tostring", g_tostring}, {NULL, NULL}};

/* moco.default_generator() -> the generator of every call given none */
static int l_default_generator(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &default_generator_key);
    return 1;
}

static const luaL_Reg generator_functions[] = {
    {"Generator", l_generator}, {"manual_seed", l_manual_seed}, {"default_generator", l_default_generator},
    {NULL, NULL}};

void lmoco_open_generator(lua_State *L) {
    lmoco_newclass(L, MOCO_GENERATOR_MT, generator_methods, generator_meta);
    LGenerator *g = lmoco_newudata(L, sizeof *g, 0, MOCO_GENERATOR_MT);
    rng_seed(&g->rng, 0, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &default_generator_key);
    luaL_setfuncs(L, generator_functions, 0);
}
