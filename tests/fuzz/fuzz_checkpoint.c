/* tests/fuzz/fuzz_checkpoint.c: a checkpoint's metadata, as checkpoint.load parses it.
 *
 * The input is the metadata: NUL-separated values for the keys below, in this order (a
 * missing value leaves the key out).  It is written into a real safetensors checkpoint
 * (format "moco-lua checkpoint 1", one tensor; written plainly rather than through
 * moco.save, whose fsync would make each run take milliseconds), then read back with
 * checkpoint.load, which decodes the JSON fields (model, config, optimizer, loader,
 * epoch_sums) with moco.json_decode and checks the numbers.  moco.json_decode also gets
 * the whole input as one text.  Errors are fine; Lua's own errors are bugs (fuzz.h). */
#include "fuzz.h"

static const char *const keys[] = {"model", "config", "optimizer", "loader", "epoch_sums", "epoch",
                                   "epoch_step", "step", "knn", "best_knn", "arch", "blas_threads"};
#define NKEYS (sizeof keys / sizeof *keys)

static const char *const script =
    "local path, meta, text = ...\n"
    "pcall(moco.json_decode, text)\n"
    "local checkpoint = require 'moco.checkpoint'\n"
    "meta.format = checkpoint.FORMAT\n"
    "local header = moco.json_encode{__metadata__ = meta,\n"
    "  ['module.queue_ptr'] = {dtype = 'F32', shape = {1}, data_offsets = {0, 4}}}\n"
    "local f = assert(io.open(path, 'wb'))\n"
    "f:write(string.pack('<I8', #header), header, string.rep('\\0', 4))\n"
    "f:close()\n"
    "local ckpt = checkpoint.load(path)\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lua_State *L = fuzz_lua();
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz_checkpoint_%ld.safetensors", (long)getpid());
    if (luaL_loadstring(L, script) != LUA_OK) abort();
    lua_pushstring(L, path);
    lua_createtable(L, 0, NKEYS);
    size_t at = 0;
    for (size_t k = 0; k < NKEYS && at < size; k++) {
        const uint8_t *end = memchr(data + at, 0, size - at);
        size_t n = end ? (size_t)(end - (data + at)) : size - at;
        lua_pushlstring(L, (const char *)data + at, n);
        lua_setfield(L, -2, keys[k]);
        at += n + 1;
    }
    lua_pushlstring(L, (const char *)data, size);
    fuzz_lua_call(L, 3);
    lua_gc(L, LUA_GCCOLLECT, 0);
    unlink(path);
    return 0;
}
