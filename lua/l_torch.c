/* lua/l_torch.c: PyTorch's files for Lua (core/io/torchfile.h); the public face is
 * lua/moco/torch.lua (moco.torch).  Sets the field _torch of the core table:
 *
 *   obj, dtypes = _torch.load(path)   the object torch.save was given, as Lua values: tensors
 *                                     as moco.Tensor (float32), dicts and OrderedDicts as tables
 *                                     whose metatable's __keys lists the keys in file order,
 *                                     tuples and lists as sequences, None as _torch.None;
 *                                     dtypes[tensor] is the tensor's dtype in the file ("F32",
 *                                     "I64" ...).  What the pickle shares stays shared.
 *   _torch.format(path)               "zip", "legacy", or nil (by content, not by name)
 *   _torch.save_pth(path, names, tensors, dtypes)               torch.save of an OrderedDict
 *   _torch.save_detectron2(path, names, tensors, dtypes, author) the official conversion's .pkl
 *     names, tensors, dtypes: sequences of the same length, in the order to write; a dtype
 *     entry may be false for "F32".
 *
 * Errors name the file, and for a tensor its place in the object
 * ("state_dict.module.encoder_q.conv1.weight"). */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <string.h>

#include "error.h"
#include "io/torchfile.h"
#include "lmoco.h"

#define TORCHFILE_MT "moco.TorchFile"
#define PATH_SIZE 384

static const char none_key = 'n';

typedef struct LTorchFile {
    TorchFile tf;
    int open;
} LTorchFile;

static int torchfile_gc(lua_State *L) {
    LTorchFile *box = luaL_checkudata(L, 1, TORCHFILE_MT);
    if (box->open) torch_file_close(&box->tf);
    box->open = 0;
    return 0;
}

/* The walk: cache (node -> Lua value) and dtypes (tensor -> name) are at fixed indices. */
typedef struct Walk {
    LTorchFile *box;
    int cache, dtypes;
    char path[PATH_SIZE];
} Walk;

static void push_value(lua_State *L, Walk *w, PickleValue *v, size_t path_len, int depth);

/* The place of a child: path + ".key" or "[i]"; past 120 bytes a deep place ends in "...". */
static size_t extend_path(Walk *w, size_t len, lua_State *L, int key_idx) {
    if (len >= 120) {
        if (len < 123 || strcmp(w->path + len - 3, "...")) {
            memcpy(w->path + 120, "...", 4);
            return 123;
        }
        return len;
    }
    int n;
    if (lua_type(L, key_idx) == LUA_TSTRING)
        n = snprintf(w->path + len, PATH_SIZE - len, "%s%s", len ? "." : "", lua_tostring(L, key_idx));
    else if (lua_isinteger(L, key_idx))
        n = snprintf(w->path + len, PATH_SIZE - len, "[%lld]", (long long)lua_tointeger(L, key_idx));
    else
        n = snprintf(w->path + len, PATH_SIZE - len, "[%s]", luaL_typename(L, key_idx));
    size_t end = len + (size_t)(n > 0 ? n : 0);
    return end < PATH_SIZE ? end : PATH_SIZE - 1;
}

static void push_tensor(lua_State *L, Walk *w, TorchTensor *t, size_t path_len) {
    w->path[path_len] = 0;
    LTensor *box = lmoco_newbox(L);
    Tensor *x = torch_file_read_tensor(&w->box->tf, t, path_len ? w->path : "the tensor");
    lmoco_settensor(L, box, x); /* raises with the message when x is NULL */
    lua_pushvalue(L, -1);
    lua_pushstring(L, torch_dtype_name(t->storage->dtype));
    lua_rawset(L, w->dtypes);
}

static void push_dict(lua_State *L, Walk *w, PickleValue *v, size_t path_len, int depth) {
    size_t pairs = v->u.seq.len / 2;
    lua_createtable(L, 0, pairs > 1 << 20 ? 1 << 20 : (int)pairs);
    int t = lua_gettop(L);
    lua_pushlightuserdata(L, v);
    lua_pushvalue(L, t);
    lua_rawset(L, w->cache);
    lua_createtable(L, 0, 2); /* metatable: __name, __keys */
    lua_pushstring(L, v->flags & PICKLE_ORDERED ? "OrderedDict" : "dict");
    lua_setfield(L, -2, "__name");
    lua_createtable(L, pairs > 1 << 20 ? 1 << 20 : (int)pairs, 0);
    int keys = lua_gettop(L);
    lua_Integer nkeys = 0;
    for (size_t i = 0; i < pairs; i++) {
        push_value(L, w, v->u.seq.items[2 * i], path_len, depth + 1);
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) && isnan(lua_tonumber(L, -1)))
            luaL_error(L, "%s: %s: a dict key is NaN", w->box->tf.path, path_len ? w->path : "the object");
        if (lua_type(L, -1) == LUA_TTABLE && !lua_rawequal(L, -1, lua_upvalueindex(1)))
            luaL_error(L, "%s: %s: a dict key is a %s; only str, int, float, bool and None keys are read",
                       w->box->tf.path, path_len ? w->path : "the object",
                       pickle_kind_name(v->u.seq.items[2 * i]->kind));
        size_t child = extend_path(w, path_len, L, -1);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, t) == LUA_TNIL) { /* a repeated key keeps its first place, as in Python */
            lua_pushvalue(L, -2);
            lua_rawseti(L, keys, ++nkeys);
        }
        lua_pop(L, 1);
        push_value(L, w, v->u.seq.items[2 * i + 1], child, depth + 1);
        lua_rawset(L, t);
    }
    lua_setfield(L, -2, "__keys");
    lua_setmetatable(L, t);
}

static void push_value(lua_State *L, Walk *w, PickleValue *v, size_t path_len, int depth) {
    w->path[path_len] = 0;
    if (depth > PICKLE_MAX_DEPTH)
        luaL_error(L, "%s: %s: nested deeper than %d levels (a hostile file?)", w->box->tf.path,
                   path_len ? w->path : "the object", PICKLE_MAX_DEPTH);
    luaL_checkstack(L, 8, "torch file");
    switch (v->kind) {
    case PICKLE_NONE: lua_pushvalue(L, lua_upvalueindex(1)); return;
    case PICKLE_BOOL: lua_pushboolean(L, (int)v->u.integer); return;
    case PICKLE_INT: lua_pushinteger(L, (lua_Integer)v->u.integer); return;
    case PICKLE_FLOAT: lua_pushnumber(L, v->u.real); return;
    case PICKLE_STRING:
    case PICKLE_BYTES: lua_pushlstring(L, v->u.str.data, v->u.str.len); return;
    case PICKLE_GLOBAL: lua_pushliteral(L, "<global>"); return;
    default: break;
    }
    lua_pushlightuserdata(L, v);
    if (lua_rawget(L, w->cache) != LUA_TNIL) return; /* shared: the same Lua value */
    lua_pop(L, 1);
    if (v->kind == PICKLE_OBJECT && v->u.object.type == TORCH_OBJECT_TENSOR) {
        push_tensor(L, w, v->u.object.ptr, path_len);
    } else if (v->kind == PICKLE_OBJECT) {
        luaL_error(L, "%s: %s: a bare storage (not a tensor) is not read", w->box->tf.path,
                   path_len ? w->path : "the object");
    } else if (v->kind == PICKLE_DICT) {
        push_dict(L, w, v, path_len, depth);
        return; /* cached inside, before its items (a dict may contain itself) */
    } else { /* tuple, list */
        size_t n = v->u.seq.len;
        lua_createtable(L, n > 1 << 20 ? 1 << 20 : (int)n, 0);
        lua_pushlightuserdata(L, v);
        lua_pushvalue(L, -2);
        lua_rawset(L, w->cache);
        for (size_t i = 0; i < n; i++) {
            lua_pushinteger(L, (lua_Integer)i + 1);
            size_t child = extend_path(w, path_len, L, -1);
            lua_pop(L, 1);
            push_value(L, w, v->u.seq.items[i], child, depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return;
    }
    lua_pushlightuserdata(L, v);
    lua_pushvalue(L, -2);
    lua_rawset(L, w->cache);
}

/* obj, dtypes = _torch.load(path)   (upvalue 1: the None sentinel) */
static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    LTorchFile *box = lmoco_newudata(L, sizeof *box, 0, TORCHFILE_MT);
    if (torch_file_open(&box->tf, path)) return lmoco_error(L);
    box->open = 1;
    Walk w = {.box = box};
    lua_newtable(L);
    w.cache = lua_gettop(L);
    lua_newtable(L);
    w.dtypes = lua_gettop(L);
    push_value(L, &w, box->tf.root, 0, 0);
    torch_file_close(&box->tf);
    box->open = 0;
    lua_pushvalue(L, w.dtypes);
    return 2;
}

static int l_format(lua_State *L) {
    int f = torch_file_format(luaL_checkstring(L, 1));
    if (f < 0) return lmoco_error(L);
    if (f == TORCH_FORMAT_ZIP) lua_pushliteral(L, "zip");
    else if (f == TORCH_FORMAT_LEGACY) lua_pushliteral(L, "legacy");
    else lua_pushnil(L);
    return 1;
}

/* The items of save_pth / save_detectron2 from the sequences at 2, 3, 4 (kept on the stack). */
static TorchSaveItem *check_items(lua_State *L, size_t *count, const char *fn) {
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    if (luaL_len(L, 3) != n) luaL_error(L, "%s: %d names but %d tensors", fn, (int)n, (int)luaL_len(L, 3));
    TorchSaveItem *items = lmoco_newarray(L, (size_t)n, sizeof *items);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        items[i - 1].name = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: name %d is not a string", fn, (int)i);
        lua_pop(L, 1);
        lua_rawgeti(L, 3, i);
        items[i - 1].tensor = lmoco_totensor(L, -1);
        if (!items[i - 1].tensor) luaL_error(L, "%s: '%s' is not a moco.Tensor", fn, items[i - 1].name);
        lua_pop(L, 1);
        items[i - 1].dtype = TORCH_F32;
        if (lua_rawgeti(L, 4, i) == LUA_TSTRING) {
            if (torch_dtype_parse(lua_tostring(L, -1), &items[i - 1].dtype))
                luaL_error(L, "%s: '%s': %s", fn, items[i - 1].name, moco_last_error());
        } else if (lua_toboolean(L, -1)) {
            luaL_error(L, "%s: dtype of '%s' must be a string such as \"I64\"", fn, items[i - 1].name);
        }
        lua_pop(L, 1);
    }
    *count = (size_t)n;
    return items;
}

static int l_save_pth(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t count;
    TorchSaveItem *items = check_items(L, &count, "moco.torch.save");
    if (torch_save_pth(path, items, count)) return lmoco_error(L);
    return 0;
}

static int l_save_detectron2(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    const char *author = luaL_optstring(L, 5, "MOCO");
    size_t count;
    TorchSaveItem *items = check_items(L, &count, "moco.torch.save_detectron2");
    if (torch_save_detectron2(path, items, count, author)) return lmoco_error(L);
    return 0;
}

static int none_tostring(lua_State *L) {
    lua_pushliteral(L, "None");
    return 1;
}

static const luaL_Reg torchfile_meta[] = {{"__gc", torchfile_gc}, {"__close", torchfile_gc}, {NULL, NULL}};

static const luaL_Reg torch_functions[] = {
    {"format", l_format}, {"save_pth", l_save_pth}, {"save_detectron2", l_save_detectron2}, {NULL, NULL}};

void lmoco_open_torch(lua_State *L) {
    lmoco_newclass(L, TORCHFILE_MT, NULL, torchfile_meta);

    lua_newtable(L);
    /* None: one table, shared by every load, printed as "None" */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &none_key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 2);
        lua_pushliteral(L, "None");
        lua_setfield(L, -2, "__name");
        lua_pushcfunction(L, none_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &none_key);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "None");
    lua_pushcclosure(L, l_load, 1);
    lua_setfield(L, -2, "load");
    luaL_setfuncs(L, torch_functions, 0);
    lua_setfield(L, -2, "_torch");
}
