/* tests/fuzz/fuzz_recipe.c: the MoCo recipes' command line (moco.pretrain.parse, on top of
 * moco.recipe.parse) on a fuzzed argv: the input split at NUL bytes, one argument each.
 * Unknown options, bad values and missing values are clean errors; Lua's own errors are
 * bugs (fuzz.h).  --help prints the usage (print is silenced). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_State *L = fuzz_lua();
    if (luaL_loadstring(L, "local argv = ...\n"
                           "require('moco.pretrain').parse(argv, {data = 'fashion-mnist'}, 'fuzz')\n") != LUA_OK)
        abort();
    lua_createtable(L, 8, 0);
    size_t at = 0;
    int n = 0;
    while (at < size && n < 256) {
        const uint8_t *end = memchr(data + at, 0, size - at);
        size_t len = end ? (size_t)(end - (data + at)) : size - at;
        lua_pushlstring(L, (const char *)data + at, len);
        lua_rawseti(L, -2, ++n);
        at += len + 1;
    }
    fuzz_lua_call(L, 1);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
