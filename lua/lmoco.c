/* lua/lmoco.c: the binding kit, what every lua/l_*.c file uses (declared in lmoco.h):
 *
 *   errors     lmoco_error raises the current libmoco error (moco_last_error) as a Lua error
 *   boxes      lmoco_newudata: a zero-filled userdata with its class's metatable, created
 *              before the C call that fills it, so an error on the way leaks nothing;
 *              lmoco_newarray: a scratch array the collector frees (error or not);
 *              the moco.Tensor box (lmoco_newbox, lmoco_settensor, lmoco_checktensor)
 *   GC         lmoco_gcaccount tells the collector about memory C allocated for a box
 *   classes    lmoco_newclass builds a metatable, the one way (after liolib's createmeta)
 *   arguments  lmoco_checkshape, lmoco_checklabels, option tables (lmoco_checkoptions refuses
 *              unknown keys) and their fields (lmoco_optinteger ...) */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "lmoco.h"

/* ------------------------------------------------------------ errors */

int lmoco_error(lua_State *L) { return luaL_error(L, "%s", moco_last_error()); }

/* ------------------------------------------------------------ boxes */

void *lmoco_newudata(lua_State *L, size_t size, int nuv, const char *mt) {
    void *p = lua_newuserdatauv(L, size, nuv);
    memset(p, 0, size);
    luaL_setmetatable(L, mt);
    return p;
}

void *lmoco_newarray(lua_State *L, size_t n, size_t size) {
    if (n == 0) n = 1;
    if (size && n > SIZE_MAX / size) luaL_error(L, "an array of %I entries does not fit in memory", (lua_Integer)n);
    return lua_newuserdatauv(L, n * size, 0);
}

void lmoco_gcaccount(lua_State *L, size_t bytes) {
    /* Lua cannot see C allocations: a step of collection worth the new memory lets a REPL
     * session or a training loop that drops large temporaries free them promptly. */
    if (bytes < 4096) return;
    size_t kib = bytes >> 10;
    lua_gc(L, LUA_GCSTEP, (int)(kib < (size_t)1 << 30 ? kib : (size_t)1 << 30));
}

Tensor *lmoco_totensor(lua_State *L, int idx) {
    LTensor *box = luaL_testudata(L, idx, MOCO_TENSOR_MT);
    return box ? box->t : NULL;
}

Tensor *lmoco_checktensor(lua_State *L, int idx) {
    LTensor *box = luaL_checkudata(L, idx, MOCO_TENSOR_MT);
    if (!box->t) luaL_argerror(L, idx, "tensor was closed");
    return box->t;
}

LTensor *lmoco_newbox(lua_State *L) { return lmoco_newudata(L, sizeof(LTensor), 0, MOCO_TENSOR_MT); }

void lmoco_settensor(lua_State *L, LTensor *box, Tensor *t) {
    if (!t) {
        lmoco_error(L);
        return;
    }
    box->t = t;
    if (!tensor_is_view(t)) lmoco_gcaccount(L, tensor_nbytes(t));
}

/* ------------------------------------------------------------ classes */

void lmoco_newclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods) {
    luaL_newmetatable(L, name); /* sets __name */
    if (metamethods) luaL_setfuncs(L, metamethods, 0);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "methods");
        if (lua_getfield(L, -2, "__index") == LUA_TNIL) {
            lua_pop(L, 1);
            lua_setfield(L, -2, "__index"); /* metatable.__index = the methods */
        } else {
            lua_pop(L, 2); /* a function __index looks in "methods" itself */
        }
    }
    lua_pop(L, 1);
}

/* ------------------------------------------------------------ arguments */

/* Whether the string key on top of the stack is one of the NULL-terminated names. */
static int is_known_option(lua_State *L, const char *const known[]) {
    if (lua_type(L, -1) != LUA_TSTRING) return 0;
    const char *key = lua_tostring(L, -1);
    for (int i = 0; known[i]; i++)
        if (!strcmp(key, known[i])) return 1;
    return 0;
}

void lmoco_checkoptions(lua_State *L, int t, const char *where, const char *const known[]) {
    if (lua_isnoneornil(L, t)) return;
    luaL_checktype(L, t, LUA_TTABLE);
    t = lua_absindex(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1); /* the value: only the key is checked, and lua_next needs it on top */
        if (is_known_option(L, known)) continue;
        const char *key = luaL_tolstring(L, -1, NULL); /* a copy: never convert lua_next's key */
        luaL_Buffer names;
        luaL_buffinit(L, &names);
        for (int i = 0; known[i]; i++) {
            if (i) luaL_addstring(&names, ", ");
            luaL_addstring(&names, known[i]);
        }
        luaL_pushresult(&names);
        luaL_error(L, "%s: unknown option '%s' (known: %s)", where, key, lua_tostring(L, -1));
    }
}

lua_Integer lmoco_optinteger(lua_State *L, int t, const char *key, lua_Integer dflt, const char *where) {
    lua_Integer v = dflt;
    if (lua_getfield(L, t, key) != LUA_TNIL) {
        int isnum;
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum) luaL_error(L, "%s: %s must be an integer, got %s", where, key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

lua_Number lmoco_optnumber(lua_State *L, int t, const char *key, lua_Number dflt, const char *where) {
    lua_Number v = dflt;
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    else if (type != LUA_TNIL)
        luaL_error(L, "%s: %s must be a number, got %s", where, key, lua_typename(L, type));
    lua_pop(L, 1);
    return v;
}

int lmoco_optboolean(lua_State *L, int t, const char *key) {
    lua_getfield(L, t, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

void lmoco_checklabels(lua_State *L, const char *fn, const Tensor *labels, int64_t *out) {
    for (int64_t i = 0; i < labels->numel; i++) {
        float v = labels->data[i];
        /* 2^63 is a float; NaN fails both comparisons */
        if (!(v >= -9223372036854775808.0f && v < 9223372036854775808.0f) || v != floorf(v))
            luaL_error(L, "%s: labels[%I] is %f, not a class number (labels are 0-based integers)", fn,
                       (lua_Integer)i + 1, (lua_Number)v);
        out[i] = (int64_t)v;
    }
}

int lmoco_checkshape(lua_State *L, int idx, int64_t *shape) {
    int ndim = 0;
    if (lua_istable(L, idx)) {
        lua_Integer n = luaL_len(L, idx);
        if (n > TENSOR_MAX_DIMS)
            luaL_argerror(L, idx, lua_pushfstring(L, "shape has %d dimensions, at most %d are supported",
                                                  (int)n, TENSOR_MAX_DIMS));
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, idx, i);
            int isnum;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            if (!isnum || v < 0)
                luaL_argerror(L, idx, lua_pushfstring(L, "shape entry %d must be a non-negative integer, got %s",
                                                      (int)i, luaL_tolstring(L, -1, NULL)));
            lua_pop(L, 1);
            shape[ndim++] = v;
        }
        return ndim;
    }
    int top = lua_gettop(L);
    for (int i = idx; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
        if (ndim == TENSOR_MAX_DIMS)
            luaL_argerror(L, i, lua_pushfstring(L, "at most %d dimensions are supported", TENSOR_MAX_DIMS));
        lua_Integer v = luaL_checkinteger(L, i);
        if (v < 0) luaL_argerror(L, i, "sizes must be non-negative");
        shape[ndim++] = v;
    }
    if (ndim == 0 && !lua_isnoneornil(L, idx) && lua_type(L, idx) != LUA_TUSERDATA)
        luaL_typeerror(L, idx, "shape table or sizes");
    return ndim;
}
