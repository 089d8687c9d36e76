/* tests/fuzz/fuzz.h: what the fuzz targets share.
 *
 * Every tests/fuzz/fuzz_<name>.c defines LLVMFuzzerTestOneInput for one parser of outside
 * input.  It is built twice (see the Makefile):
 *   - `make fuzz`: with clang's libFuzzer, ASan and UBSan, run for FUZZ_SECONDS on the
 *     committed corpus tests/fuzz/corpus/<name>/;
 *   - `make test`: with the normal compiler and tests/fuzz/replay.c as main(), as
 *     build/tests/test_fuzz_<name>, which replays tests/fuzz/regress/<name>/ (every input
 *     that ever crashed or blew a limit) and the corpus, with time and memory limits.
 * A target must return 0 for every input; a parser's clean error is a success.  Anything
 * that is a bug aborts: a crash, a sanitizer report, or (Lua targets) an error raised by
 * Lua itself inside our code ("attempt to index a nil value", ...), which means a parser
 * did not check something.
 * Targets run from the repository root (the Lua targets find lua/moco there). */
#ifndef MOCO_FUZZ_H
#define MOCO_FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "image/image.h"
#include "lmoco.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Under libFuzzer (MOCO_FUZZING) decoded images are capped lower than the default: a
 * valid 89-megapixel file is not a bug, only a slow input.  The replay keeps the
 * defaults, so the regression corpus checks the limits users get. */
#define FUZZ_MAX_PIXELS (4LL << 20)

static inline void fuzz_set_limits(void) {
#ifdef MOCO_FUZZING
    ImageLimits lim = {FUZZ_MAX_PIXELS, IMAGE_DEFAULT_MAX_SCANS};
    image_set_limits(&lim);
#endif
}

/* The input as a file: a memfd, reachable by path (/proc/self/fd/N) like any file.
 * Returns the fd (close it after use) and fills path. */
static inline int fuzz_file(const uint8_t *data, size_t size, char *path, size_t path_size) {
    int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
    if (fd < 0) {
        perror("memfd_create");
        abort();
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            perror("write");
            abort();
        }
        done += (size_t)n;
    }
    snprintf(path, path_size, "/proc/self/fd/%d", fd);
    return fd;
}

/* One Lua state for the whole run, with the moco module loaded from lua/ (as moco-lua
 * does), `moco` global and print silenced. */
static inline lua_State *fuzz_lua(void) {
    static lua_State *L;
    if (L) return L;
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_moco_core);
    lua_setfield(L, -2, "moco.core");
    lua_pop(L, 1);
    if (luaL_dostring(L, "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path\n"
                         "moco = require 'moco'\n"
                         "print = function() end\n") != LUA_OK) {
        fprintf(stderr, "fuzz: cannot load the moco module (run from the repository root): %s\n",
                lua_tostring(L, -1));
        abort();
    }
    return L;
}

/* The message handler of fuzz_lua_call: marks errors that Lua itself raised while running
 * Lua code (level 1 is a Lua function: "attempt to index a nil value", "stack overflow"),
 * as opposed to error() or a C function's clean error (level 1 is a C function). */
static inline int fuzz_msgh(lua_State *L) {
    lua_Debug ar;
    int vm = lua_getstack(L, 1, &ar) && lua_getinfo(L, "S", &ar) && ar.what[0] != 'C';
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(a %s as error)", luaL_typename(L, 1));
    /* A library function called wrongly by our Lua code ("bad argument #2 to 'format'"):
     * the text starts so (after a "chunk:line: " position), whatever the input echoes. */
    const char *text = msg, *colon = strstr(msg, ": ");
    if (colon && colon - msg < 200 && strncmp(msg, "bad argument", 12) != 0) text = colon + 2;
    if (!vm && strncmp(text, "bad argument", 12) == 0) vm = 1;
    if (!vm && !lua_isstring(L, 1)) vm = 1;
    lua_pushfstring(L, "%s%s", vm ? "\x01" : "", msg);
    return 1;
}

/* Calls the function below its nargs arguments, protected.  A clean error (error(), or a
 * binding's message) is fine; an error Lua raised by itself inside moco's Lua code, or a
 * library function misused by it, is a bug: abort, so libFuzzer records the input. */
static inline void fuzz_lua_call(lua_State *L, int nargs) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, fuzz_msgh);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, 0, base);
    lua_remove(L, base);
    if (status == LUA_OK) return;
    const char *msg = lua_tostring(L, -1);
    if (msg[0] == '\x01') {
        fprintf(stderr, "fuzz: Lua raised an internal error: %s\n", msg + 1);
        abort();
    }
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "fuzz: clean error: %s\n", msg);
    lua_pop(L, 1);
}

#endif
