/* lua/l_io.c: safetensors files and JSON for Lua (core/io/safetensors.h, libjansson).
 *
 *   moco.save(path, {name = tensor, ...} [, {key = "value", ...} [, {dtypes = {name = "I64"}}]])
 *   tensors, metadata = moco.load(path)
 *   f = moco.safe_open(path)            -- as safetensors' safe_open: read what you need
 *     f:keys(), f:get_tensor(name), f:metadata(), f:info(name) -> dtype, shape; f:close()
 *   moco.json_encode(value), moco.json_decode(text)
 *   moco._io.listdir(dir), moco._io.makedirs(dir), moco._io.copy_file(src, dst)
 *
 * Tensors load as float32 (F64 rounded, I64 and U8 exact).  moco.save stores float32 unless
 * opts.dtypes names another dtype for a tensor (I64 for PyTorch's integer buffers, U8 for
 * bytes); it writes atomically, so a failed save leaves the previous file as it was.
 * Metadata values are strings (numbers are converted); put structured values through
 * moco.json_encode. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "io/atomic.h"
#include "io/safetensors.h"
#include "lmoco.h"

#define MOCO_SAFEFILE_MT "moco.SafetensorsFile"
#define MOCO_JSONHOLDER_MT "moco.JsonHolder"
/* Nesting depth beyond which json_encode assumes a cycle. */
#define JSON_MAX_DEPTH 64

/* ------------------------------------------------------------ open files */

/* The userdata of moco.safe_open, created empty (closed) before the file is opened, so an
 * error never leaks it; __gc and __close close it. */
typedef struct LSafeFile {
    SafetensorsFile sf;
    int open;
} LSafeFile;

static LSafeFile *new_safefile(lua_State *L) {
    return lmoco_newudata(L, sizeof(LSafeFile), 0, MOCO_SAFEFILE_MT);
}

static LSafeFile *check_safefile(lua_State *L, int idx) {
    LSafeFile *box = luaL_checkudata(L, idx, MOCO_SAFEFILE_MT);
    if (!box->open) luaL_argerror(L, idx, "the safetensors file was closed");
    return box;
}

static void open_safefile(lua_State *L, LSafeFile *box, const char *path) {
    if (safetensors_open(&box->sf, path)) lmoco_error(L);
    box->open = 1;
}

static int sf_close(lua_State *L) {
    LSafeFile *box = luaL_checkudata(L, 1, MOCO_SAFEFILE_MT);
    if (box->open) safetensors_close(&box->sf);
    box->open = 0;
    return 0;
}

static const SafetensorsEntry *check_entry(lua_State *L, LSafeFile *box, int idx) {
    const char *name = luaL_checkstring(L, idx);
    const SafetensorsEntry *e = safetensors_find(&box->sf, name);
    if (!e) luaL_error(L, "%s: no tensor named '%s'", box->sf.path, name);
    return e;
}

static void push_metadata(lua_State *L, const SafetensorsFile *sf) {
    lua_createtable(L, 0, (int)sf->metadata_count);
    for (size_t i = 0; i < sf->metadata_count; i++) {
        lua_pushstring(L, sf->metadata_values[i]);
        lua_setfield(L, -2, sf->metadata_keys[i]);
    }
}

/* moco.safe_open(path) */
static int l_safe_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    LSafeFile *box = new_safefile(L);
    open_safefile(L, box, path);
    return 1;
}

/* f:keys() -> sorted names */
static int sf_keys(lua_State *L) {
    LSafeFile *box = check_safefile(L, 1);
    lua_createtable(L, (int)box->sf.count, 0);
    for (size_t i = 0; i < box->sf.count; i++) {
        lua_pushstring(L, box->sf.entries[i].name);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* f:info(name) -> dtype ("F32" ...), shape table */
static int sf_info(lua_State *L) {
    LSafeFile *box = check_safefile(L, 1);
    const SafetensorsEntry *e = check_entry(L, box, 2);
    lua_pushstring(L, safetensors_dtype_name(e->dtype));
    lua_createtable(L, e->ndim, 0);
    for (int d = 0; d < e->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)e->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 2;
}

/* f:has(name) -> boolean: an explicit query, so that callers need no pcall probe. */
static int sf_has(lua_State *L) {
    LSafeFile *box = check_safefile(L, 1);
    lua_pushboolean(L, safetensors_find(&box->sf, luaL_checkstring(L, 2)) != NULL);
    return 1;
}

static int sf_get_tensor(lua_State *L) {
    LSafeFile *box = check_safefile(L, 1);
    const SafetensorsEntry *e = check_entry(L, box, 2);
    LTensor *t = lmoco_newbox(L);
    lmoco_settensor(L, t, safetensors_read_tensor(&box->sf, e));
    return 1;
}

static int sf_metadata(lua_State *L) {
    push_metadata(L, &check_safefile(L, 1)->sf);
    return 1;
}

static int sf_tostring(lua_State *L) {
    LSafeFile *box = luaL_checkudata(L, 1, MOCO_SAFEFILE_MT);
    if (!box->open)
        lua_pushliteral(L, "moco.SafetensorsFile (closed)");
    else
        lua_pushfstring(L, "moco.SafetensorsFile %s: %I tensors, %I metadata entries", box->sf.path,
                        (lua_Integer)box->sf.count, (lua_Integer)box->sf.metadata_count);
    return 1;
}

/* tensors, metadata = moco.load(path) */
static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    LSafeFile *box = new_safefile(L);
    open_safefile(L, box, path);
    lua_createtable(L, 0, (int)box->sf.count);
    for (size_t i = 0; i < box->sf.count; i++) {
        LTensor *t = lmoco_newbox(L);
        lmoco_settensor(L, t, safetensors_read_tensor(&box->sf, &box->sf.entries[i]));
        lua_setfield(L, -2, box->sf.entries[i].name);
    }
    push_metadata(L, &box->sf);
    safetensors_close(&box->sf);
    box->open = 0;
    return 2;
}

/* ------------------------------------------------------------ saving */

/* The dtypes option of moco.save (arg 4) pushed, and its stack index; 0 when absent. */
static int push_dtypes_option(lua_State *L) {
    if (!lua_istable(L, 4)) return 0;
    int type = lua_getfield(L, 4, "dtypes");
    if (type == LUA_TTABLE) return lua_gettop(L);
    if (type != LUA_TNIL) luaL_error(L, "moco.save: dtypes must be a table of name = \"F32\"|\"F64\"|\"I64\"|\"U8\"");
    lua_pop(L, 1);
    return 0;
}

/* The tensors of the table at arg 2 as float32 items, in an array pushed on the stack; the
 * names point into the table's keys, which live as long as arg 2 stays on the stack. */
static SafetensorsItem *collect_items(lua_State *L, size_t *count) {
    *count = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "moco.save: tensor names must be strings, got a %s key", luaL_typename(L, -2));
        if (!lmoco_totensor(L, -1))
            luaL_error(L, "moco.save: '%s' is %s, expected a moco.Tensor", lua_tostring(L, -2),
                       luaL_testudata(L, -1, MOCO_TENSOR_MT) ? "a closed tensor" : luaL_typename(L, -1));
        (*count)++;
        lua_pop(L, 1);
    }
    SafetensorsItem *items = lmoco_newarray(L, *count, sizeof *items);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        items[i].name = lua_tostring(L, -2);
        items[i].tensor = lmoco_totensor(L, -1);
        items[i].dtype = SAFETENSORS_F32;
        i++;
        lua_pop(L, 1);
    }
    return items;
}

/* The dtypes table at stack index dtypes (name = "I64" ...) onto the items it names. */
static void apply_dtypes(lua_State *L, int dtypes, SafetensorsItem *items, size_t count) {
    lua_pushnil(L);
    while (lua_next(L, dtypes)) {
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        size_t k = 0;
        while (name && k < count && strcmp(items[k].name, name)) k++;
        if (!name || k == count)
            luaL_error(L, "moco.save: dtypes names '%s', which is not one of the tensors", luaL_tolstring(L, -2, NULL));
        const char *dtype = lua_tostring(L, -1);
        if (!dtype || safetensors_dtype_parse(dtype, &items[k].dtype))
            luaL_error(L, "moco.save: dtypes['%s']: %s", name,
                       dtype ? moco_last_error() : "expected a string such as \"I64\"");
        lua_pop(L, 1);
    }
}

/* The metadata table at arg 3 (if any) as *keys and *values, numbers written as Lua prints
 * them; pushes a table anchoring the strings, then the two arrays.  Returns their count. */
static size_t collect_metadata(lua_State *L, const char ***keys, const char ***values) {
    size_t count = 0;
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            count++;
            lua_pop(L, 1);
        }
    }
    lua_createtable(L, (int)count * 2, 0);
    int strings = lua_gettop(L);
    *keys = lmoco_newarray(L, count, sizeof **keys);
    *values = lmoco_newarray(L, count, sizeof **values);
    size_t m = 0;
    if (count) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "moco.save: metadata keys must be strings, got a %s key", luaL_typename(L, -2));
            int type = lua_type(L, -1);
            if (type != LUA_TSTRING && type != LUA_TNUMBER)
                luaL_error(L, "moco.save: metadata '%s' is a %s; values are strings (encode tables with "
                              "moco.json_encode)", lua_tostring(L, -2), luaL_typename(L, -1));
            lua_pushvalue(L, -2);
            (*keys)[m] = lua_tostring(L, -1);
            lua_rawseti(L, strings, (lua_Integer)(2 * m + 1));
            (*values)[m] = luaL_tolstring(L, -1, NULL);
            lua_rawseti(L, strings, (lua_Integer)(2 * m + 2));
            m++;
            lua_pop(L, 1);
        }
    }
    return m;
}

/* moco.save(path, tensors [, metadata [, {dtypes = {name = "I64", ...}}]]) */
static int l_save(lua_State *L) {
    static const char *const options[] = {"dtypes", NULL};
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lmoco_checkoptions(L, 4, "moco.save", options);
    lua_settop(L, 4);
    int dtypes = push_dtypes_option(L);
    size_t count;
    SafetensorsItem *items = collect_items(L, &count);
    if (dtypes) apply_dtypes(L, dtypes, items, count);
    const char **keys, **values;
    size_t meta_count = collect_metadata(L, &keys, &values);
    if (safetensors_save(path, items, count, keys, values, meta_count)) return lmoco_error(L);
    return 0;
}

/* ------------------------------------------------------------ JSON */

/* The digits %.Ng needs for x to read back as the same double. */
static int digits_for(double x) {
    char buf[40];
    for (int p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return p;
    }
    return 17;
}

/* First pass: raises on anything JSON cannot hold (so the second pass, which allocates,
 * never raises and never leaks) and grows *precision to what the floats need. */
static void check_json_value(lua_State *L, int idx, int depth, int *precision) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TBOOLEAN:
        return;
    case LUA_TNUMBER:
        if (!lua_isinteger(L, idx)) {
            double x = lua_tonumber(L, idx);
            if (!isfinite(x)) luaL_error(L, "moco.json_encode: %f has no JSON form", x);
            int p = digits_for(x);
            if (p > *precision) *precision = p;
        }
        return;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *j = json_stringn(s, len);
        if (!j) luaL_error(L, "moco.json_encode: string \"%s\" is not valid UTF-8", s);
        json_decref(j);
        return;
    }
    case LUA_TTABLE:
        break;
    default:
        luaL_error(L, "moco.json_encode: a %s has no JSON form", luaL_typename(L, idx));
    }
    if (depth > JSON_MAX_DEPTH) luaL_error(L, "moco.json_encode: tables nested too deep (a cycle?)");
    luaL_checkstack(L, 4, "json_encode");
    /* A sequence 1..n (or an empty table) is an array; only string keys make an object. */
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), keys = 0, strings = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        keys++;
        if (lua_type(L, -2) == LUA_TSTRING) strings++;
        check_json_value(L, -1, depth + 1, precision);
        lua_pop(L, 1);
    }
    if (!(strings == 0 && keys == n) && strings != keys)
        luaL_error(L, "moco.json_encode: a table mixes string and other keys (JSON objects have string keys)");
}

/* Second pass: the value at idx (already checked) as a new jansson value; NULL only when
 * out of memory. */
static json_t *to_json(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
        return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return json_stringn(s, len);
    }
    case LUA_TTABLE:
        break;
    default:
        return json_null();
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        keys++;
        lua_pop(L, 1);
    }
    json_t *out;
    if (keys == n) {
        out = json_array();
        for (lua_Integer i = 1; out && i <= n; i++) {
            lua_rawgeti(L, idx, i);
            json_array_append_new(out, to_json(L, -1));
            lua_pop(L, 1);
        }
        return out;
    }
    out = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (out) json_object_set_new(out, lua_tostring(L, -2), to_json(L, -1));
        lua_pop(L, 1);
    }
    return out;
}

/* A decoded value held by a userdata while Lua may raise, so it is freed either way. */
typedef struct JsonHolder {
    json_t *j;
} JsonHolder;

static int json_holder_gc(lua_State *L) {
    JsonHolder *h = lua_touserdata(L, 1);
    if (h->j) json_decref(h->j);
    h->j = NULL;
    return 0;
}

static JsonHolder *new_json_holder(lua_State *L) {
    return lmoco_newudata(L, sizeof(JsonHolder), 0, MOCO_JSONHOLDER_MT);
}

/* moco.json_encode(value) -> compact JSON with sorted keys; floats with the fewest digits
 * that read back exactly (0.03, not 0.029999999999999999). */
static int l_json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    int precision = 1;
    check_json_value(L, 1, 0, &precision);
    JsonHolder *h = new_json_holder(L);
    h->j = to_json(L, 1);
    char *text = h->j ? json_dumps(h->j, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS |
                                             JSON_REAL_PRECISION(precision))
                      : NULL;
    if (!text) return luaL_error(L, "moco.json_encode: out of memory");
    lua_pushstring(L, text);
    free(text);
    return 1;
}

static void push_json(lua_State *L, json_t *j, int depth) {
    luaL_checkstack(L, 4, "json_decode");
    if (depth > JSON_MAX_DEPTH) luaL_error(L, "moco.json_decode: nested too deep");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(j));
        const char *key;
        json_t *value;
        json_object_foreach(j, key, value) {
            push_json(L, value, depth + 1);
            lua_setfield(L, -2, key);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push_json(L, json_array_get(j, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(j));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(j));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
        lua_pushnil(L);
        break;
    }
}

/* moco.json_decode(text) -> value (null becomes nil) */
static int l_json_decode(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    JsonHolder *h = new_json_holder(L);
    json_error_t err;
    h->j = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!h->j) return luaL_error(L, "moco.json_decode: %s (line %d, column %d)", err.text, err.line, err.column);
    push_json(L, h->j, 0);
    return 1;
}

/* ------------------------------------------------------------ files and directories */

/* _io.listdir(dir) -> sorted names (no "." or "..") */
static int l_listdir(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    lua_newtable(L);
    int t = lua_gettop(L);
    DIR *d = opendir(dir);
    if (!d) return luaL_fileresult(L, 0, dir); /* nil, "dir: reason", errno (liolib's way) */
    /* No Lua call that can raise while the directory is open: names go straight into the
     * table with raw sets (memory errors aside). */
    struct dirent *entry;
    lua_Integer n = 0;
    while ((entry = readdir(d)) != NULL) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        lua_pushstring(L, entry->d_name);
        lua_rawseti(L, t, ++n);
    }
    closedir(d);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, t);
    lua_call(L, 1, 0);
    lua_settop(L, t);
    return 1;
}

/* _io.kind(path) -> "directory" | "file" | "other", or nil, "path: reason", errno (no such
 * file is an expected answer, not an exception: liolib's convention).  Follows links. */
static int l_kind(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) return luaL_fileresult(L, 0, path);
    lua_pushstring(L, S_ISDIR(st.st_mode) ? "directory" : S_ISREG(st.st_mode) ? "file" : "other");
    return 1;
}

/* _io.makedirs(dir): mkdir -p */
static int l_makedirs(lua_State *L) {
    size_t len;
    const char *dir = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *path = luaL_buffinitsize(L, &b, len + 1);
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        char c = path[i];
        path[i] = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return luaL_error(L, "%s: cannot create directory %s: %s", dir, path, strerror(errno));
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return luaL_error(L, "%s: exists and is not a directory", dir);
    return 0;
}

/* _io.copy_file(src, dst): atomic copy */
static int l_copy_file(lua_State *L) {
    if (atomic_copy_file(luaL_checkstring(L, 1), luaL_checkstring(L, 2))) return lmoco_error(L);
    return 0;
}

/* _io.write_file(path, text): replaces path atomically (core/io/atomic.c), so a report or a
 * config.json is never seen half-written; the error names the file and the reason. */
static int l_write_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    AtomicFile af;
    if (atomic_file_begin(&af, path)) return lmoco_error(L);
    if (len > 0 && fwrite(text, 1, len, af.f) != len) {
        int e = errno;
        atomic_file_write_error(&af, e);
        atomic_file_abort(&af);
        return lmoco_error(L);
    }
    if (atomic_file_commit(&af)) return lmoco_error(L);
    return 0;
}

/* ------------------------------------------------------------ registration */

static const luaL_Reg safefile_methods[] = {
    {"keys", sf_keys},         {"info", sf_info},   {"get_tensor", sf_get_tensor}, {"has", sf_has},
    {"metadata", sf_metadata}, {"close", sf_close}, {NULL, NULL}};

static const luaL_Reg io_functions[] = {
    {"listdir", l_listdir}, {"kind", l_kind}, {"makedirs", l_makedirs}, {"copy_file", l_copy_file},
    {"write_file", l_write_file}, {NULL, NULL}};

/* Straight into the module table: moco.save, moco.load, ... */
static const luaL_Reg module_functions[] = {
    {"save", l_save},                 {"load", l_load}, {"safe_open", l_safe_open},
    {"json_encode", l_json_encode}, {"json_decode", l_json_decode}, {NULL, NULL}};

static const luaL_Reg safefile_meta[] = {
    {"__gc", sf_close}, {"__close", sf_close}, {"__tostring", sf_tostring}, {NULL, NULL}};

static const luaL_Reg json_holder_meta[] = {{"__gc", json_holder_gc}, {NULL, NULL}};

void lmoco_open_io(lua_State *L) {
    lmoco_newclass(L, MOCO_SAFEFILE_MT, safefile_methods, safefile_meta);
    lmoco_newclass(L, MOCO_JSONHOLDER_MT, NULL, json_holder_meta);
    luaL_setfuncs(L, module_functions, 0);
    luaL_newlib(L, io_functions);
    lua_setfield(L, -2, "_io");
}
