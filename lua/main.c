/* lua/main.c: the moco-lua executable.
 *
 * Owns the command line, running scripts and -e chunks, and the REPL (automatic
 * printing of results, multi-line input, libedit line editing with history and
 * tab completion, per-line timing).  Everything that touches Lua runs under
 * lua_pcall with a traceback message handler, so no Lua error ends the process;
 * it ends at the end of input, through os.exit, on a second Ctrl-C while the
 * first is still pending (see on_sigint), after a deferred Ctrl-C or SIGTERM once
 * the training loop saved its work (status 130 or 143, see deferred mode), or when
 * a script or -e chunk fails (exit status 1). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <editline/readline.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "error.h"
#include "dist.h"
#include "lmoco.h"

#define PROGNAME "moco-lua"
#define HISTORY_FILE ".moco_history"
#define HISTORY_MAX 1000
#define SLOW_LINE_SECONDS 1.0
/* Chunk name of REPL input, so errors read "stdin:1: ...". */
#define REPL_CHUNKNAME "=stdin"
/* The tail luaL_loadbuffer's message has when the chunk merely ended too early. */
#define INCOMPLETE_MARK "<eof>"

/* The interpreter state, for the SIGINT handler and the completion callback,
 * neither of which gets it as an argument. */
static lua_State *global_L;

/* --- Ctrl-C -------------------------------------------------------------------
 *
 * Lua cannot be stopped from a signal handler directly, so the handler only
 * installs a hook that raises "interrupted!" at the next instruction, call or
 * return (the interpreter's safe points), and sets moco_interrupt_requested so
 * that long C loops in libmoco can stop early too.  docall() removes the hook and
 * clears both flags when the call returns.
 *
 * If a second Ctrl-C arrives while the first is still pending (the hook has not
 * fired: the program is stuck in C code that does not poll the flag), the default
 * action is restored and re-raised, so the process is killed as a plain C program
 * would be: lua.c's escape hatch.  A pure Lua loop never gets there, since its
 * hook fires at once and clears the pending state.
 *
 * As in lua.c the hook is set on the main Lua thread only: a loop running inside
 * a coroutine is stopped when it yields or returns, or by C code polling
 * moco_interrupt_requested.
 *
 * At the prompt no Lua code runs; there Ctrl-C only marks the line as cancelled
 * (prompt_interrupted) and the reader throws the partial input away.
 *
 * Deferred mode (moco.defer_interrupts(true), turned on by the training loop): Ctrl-C
 * and SIGTERM only record the signal (deferred_signal); the loop polls it between
 * steps (moco.interrupt_pending), saves a checkpoint and calls moco.finish_interrupt,
 * which ends a script with status 128 + signal (130, 143) and returns a REPL line to
 * the prompt.  A script does not exit() from inside Lua: finish_interrupt records the
 * status (exit_status) and raises "interrupted!"; every docall re-raises it, so it unwinds
 * to main, which closes the Lua state (to-be-closed variables and finalizers run: loaders
 * join their threads, files close) and then returns the status.  A second signal in that mode ends the process at once with that status
 * (_exit): checkpoints are written atomically, so the last one stays whole.  The mode
 * ends with the call that turned it on (docall resets it). */
static volatile sig_atomic_t lua_is_running = 0;
static volatile sig_atomic_t defer_mode = 0;
static volatile sig_atomic_t deferred_signal = 0;
static volatile sig_atomic_t interrupt_pending = 0;
static volatile sig_atomic_t prompt_interrupted = 0;
/* Whether Ctrl-C was pressed during the last docall (the REPL then starts its
 * message on a fresh line, after the terminal's "^C"). */
static int last_call_interrupted = 0;
/* The thread that runs Lua.  Worker threads (libmoco's pool, OpenBLAS) inherit
 * the signal disposition, and the kernel may deliver SIGINT to any of them; the
 * handler passes it on to this thread, which owns the Lua state. */
static pthread_t lua_thread;
/* In the REPL the handler stays installed between lines; a script run gets the
 * default action back after each call. */
static int keep_sigint_handler = 0;
/* 128 + signal once finish_interrupt has ended a script (see deferred mode), else 0. */
static int exit_status = 0;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    interrupt_pending = 0;
    luaL_error(L, "interrupted!");
}

static void on_sigint(int sig) {
    if (!pthread_equal(pthread_self(), lua_thread)) {
        pthread_kill(lua_thread, sig); /* async-signal-safe */
        return;
    }
    if (sig == SIGTERM && !defer_mode) { /* the handler outlived deferred mode */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (defer_mode && lua_is_running) {
        static const char first[] = "\n" PROGNAME ": stopping after the current step (signal again to quit "
                                    "at once)\n";
        static const char second[] = "\n" PROGNAME ": second signal: quitting now\n";
        if (deferred_signal) {
            (void)!write(STDERR_FILENO, second, sizeof second - 1);
            _exit(128 + sig);
        }
        deferred_signal = sig;
        if (dist_rank() == 0) /* under mpirun every rank gets the signal: one says so */
            (void)!write(STDERR_FILENO, first, sizeof first - 1);
        return;
    }
    if (!lua_is_running) {
        prompt_interrupted = 1;
        return;
    }
    if (interrupt_pending) {
        signal(sig, SIG_DFL);
        raise(sig); /* delivered, and fatal, once this handler returns */
        return;
    }
    interrupt_pending = 1;
    moco_interrupt_requested = 1;
    lua_sethook(global_L, interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* restart: whether interrupted system calls resume.  While Lua runs they do (C
 * code in libmoco need not handle EINTR); at the prompt they must not, so that the
 * blocked read returns and the line can be cancelled. */
static void install_sigint(int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGINT, &sa, NULL);
}

/* moco.defer_interrupts(on) -> the previous setting (see deferred mode above). */
static int l_defer_interrupts(lua_State *L) {
    int on = lua_toboolean(L, 1);
    lua_pushboolean(L, defer_mode);
    if (on && !defer_mode) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        sigaction(SIGTERM, &sa, NULL);
        defer_mode = 1;
    } else if (!on && defer_mode) {
        defer_mode = 0; /* a signal already recorded stays pending for finish_interrupt */
        signal(SIGTERM, SIG_DFL);
    }
    return 1;
}

/* moco.interrupt_pending() -> "SIGINT" | "SIGTERM" | nil */
static int l_interrupt_pending(lua_State *L) {
    if (deferred_signal == SIGINT) lua_pushliteral(L, "SIGINT");
    else if (deferred_signal == SIGTERM) lua_pushliteral(L, "SIGTERM");
    else lua_pushnil(L);
    return 1;
}

/* moco.finish_interrupt(): does what the recorded signal asked, now that the work is
 * saved: a script exits with status 128 + signal, as if the signal had ended it; a REPL
 * line stops with "interrupted!".  Does nothing when no signal is pending. */
static int l_finish_interrupt(lua_State *L) {
    int sig = deferred_signal;
    if (!sig) return 0;
    deferred_signal = 0;
    if (defer_mode) signal(SIGTERM, SIG_DFL);
    defer_mode = 0;
    if (!keep_sigint_handler) exit_status = 128 + sig; /* main exits, after lua_close */
    return luaL_error(L, "interrupted!");
}

static const luaL_Reg interrupt_functions[] = {
    {"defer_interrupts", l_defer_interrupts},
    {"interrupt_pending", l_interrupt_pending},
    {"finish_interrupt", l_finish_interrupt},
    {NULL, NULL}};

/* --- running Lua code ------------------------------------------------------- */

/* --- error messages -------------------------------------------------------------
 *
 * A user's mistake (a bad option, a missing file, a wrong shape, a damaged checkpoint)
 * must read as one line saying what was wrong; a bug of moco-lua must keep its traceback
 * so that it can be reported.  The message handler tells them apart by who raised the
 * error (level 1 of the stack when the handler runs):
 *  - a C function (error(), assert(), a binding's luaL_error): a deliberate check, so a
 *    user error.  Positions that point into moco's own Lua modules ("lua/moco/nn.lua:30: ")
 *    are removed: they say where the check lives, not what the user did.
 *  - the Lua VM itself (indexing nil, calling a nil value ...): a programming error.
 *    Inside moco's modules or recipes it is an internal error and keeps its position and
 *    traceback; in the user's own code (a script, a REPL line) the message names the
 *    user's file and line, which is all they need.
 *  - "interrupted!" (Ctrl-C) is never traced.
 * MOCO_DEBUG=1 (any value but "" and "0") traces every error, unchanged. */

/* Where moco's own Lua files live: <exedir> in a build tree, <exedir>/../share/moco-lua when
 * installed (set by set_module_path); "" when unknown. */
static char moco_home[PATH_MAX];

static int debug_errors(void) {
    const char *v = getenv("MOCO_DEBUG");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

static int is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* If s starts with "lua/moco/<name>.lua:<line>: ", returns its length, else 0. */
static size_t library_position_length(const char *s) {
    static const char mark[] = "lua/moco/";
    size_t n = sizeof mark - 1;
    if (strncmp(s, mark, n) != 0) return 0;
    size_t name = n;
    while (is_name_char(s[n])) n++;
    if (n == name || strncmp(s + n, ".lua:", 5) != 0) return 0;
    n += 5;
    size_t digits = n;
    while (s[n] >= '0' && s[n] <= '9') n++;
    if (n == digits || s[n] != ':' || s[n + 1] != ' ') return 0;
    return n + 2;
}

/* Pushes msg without the positions inside moco's Lua modules (with whatever path or
 * "..." precedes "lua/moco/" in the same word).  Sets *vm_error when such a position is
 * followed by a Lua VM message ("attempt to ..."), i.e. a bug re-raised by error(e, 0). */
static void push_without_library_positions(lua_State *L, const char *msg, int *vm_error) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *word = msg; /* the start of the current word */
    const char *p = msg;
    while (*p != '\0') {
        size_t len = library_position_length(p);
        if (len > 0) {
            if (strncmp(p + len, "attempt to ", 11) == 0) *vm_error = 1;
            luaL_addlstring(&b, msg, (size_t)(word - msg)); /* up to the word holding it */
            msg = word = p = p + len;
            continue;
        }
        if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\'' || *p == '"' || *p == '(') word = p + 1;
        p++;
    }
    luaL_addstring(&b, msg);
    luaL_pushresult(&b);
}

/* Whether a chunk source ("@path") is one of moco's Lua modules or recipes. */
static int is_moco_source(const char *source) {
    if (source == NULL || source[0] != '@' || moco_home[0] == '\0') return 0;
    char real[PATH_MAX];
    if (realpath(source + 1, real) == NULL) return 0;
    size_t n = strlen(moco_home);
    if (strncmp(real, moco_home, n) != 0 || real[n] != '/') return 0;
    return strncmp(real + n, "/lua/moco/", 10) == 0 || strncmp(real + n, "/recipes/", 9) == 0;
}

static int ends_with(const char *s, const char *tail) {
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

/* The message handler of every protected call (see above). */
static int message_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) { /* an error object that is not a string: nobody's check made it */
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        luaL_traceback(L, L, msg, 1);
        return 1;
    }
    if (debug_errors()) {
        luaL_traceback(L, L, msg, 1);
        return 1;
    }
    int internal = 0;
    lua_Debug ar;
    if (!ends_with(msg, "interrupted!") && lua_getstack(L, 1, &ar) && lua_getinfo(L, "S", &ar))
        internal = strcmp(ar.what, "C") != 0 && is_moco_source(ar.source);
    int vm_error = 0;
    if (!internal) {
        push_without_library_positions(L, msg, &vm_error);
        if (!vm_error) return 1;
        lua_pop(L, 1);
    }
    luaL_traceback(L, L, msg, 1);
    lua_pushliteral(L, "\n(an internal error of moco-lua: please report it with this traceback)");
    lua_concat(L, 2);
    return 1;
}

/* Calls the function lying below its nargs arguments, protected, with Ctrl-C
 * armed.  Same results and status as lua_pcall. */
static int docall(lua_State *L, int nargs, int nresults) {
    int base = lua_gettop(L) - nargs; /* the function's slot */
    lua_pushcfunction(L, message_handler);
    lua_insert(L, base);
    moco_interrupt_requested = 0;
    interrupt_pending = 0;
    install_sigint(1);
    lua_is_running = 1;
    int status = lua_pcall(L, nargs, nresults, base);
    lua_is_running = 0;
    last_call_interrupted = moco_interrupt_requested;
    /* A Ctrl-C that came too late for the hook to fire must not leak into the
     * next call. */
    lua_sethook(L, NULL, 0, 0);
    interrupt_pending = 0;
    moco_interrupt_requested = 0;
    if (defer_mode) signal(SIGTERM, SIG_DFL);
    defer_mode = 0;
    deferred_signal = 0;
    if (!keep_sigint_handler) signal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    if (exit_status) { /* the script is over even if a pcall caught the error: on to main */
        lua_pushliteral(L, "interrupted!");
        lua_error(L);
    }
    return status;
}

/* Prints and pops the error message on top of the stack if status is an error. */
static int report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        /* An error all ranks raised together (moco.dist.agreed): one rank prints it, the
         * others raise it empty, and every rank ends normally. */
        int agreed = dist_take_agreed_failure() && dist_size() > 1;
        fflush(stdout); /* keep stdout and stderr in order when both are one pipe */
        if (!(agreed && msg && *msg == '\0'))
            fprintf(stderr, "%s: %s\n", PROGNAME, msg ? msg : "(error object is not a string)");
        fflush(stderr);
        lua_pop(L, 1);
        /* under mpirun the other ranks may be waiting for this one in a collective: end the
         * whole job now (MPI_Finalize at exit would wait for them forever) */
        if (dist_size() > 1 && !agreed) dist_abort(1);
    }
    return status;
}

static int run_string(lua_State *L, const char *code, const char *chunkname) {
    int status = luaL_loadbuffer(L, code, strlen(code), chunkname);
    if (status == LUA_OK) status = docall(L, 0, 0);
    return report(L, status);
}

/* -l name: global name = require(name). */
static int run_require(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    int status = docall(L, 1, 1);
    if (status == LUA_OK) lua_setglobal(L, name);
    return report(L, status);
}

/* --- setup ------------------------------------------------------------------ */

static void print_version(void) {
    printf("%s %s (%s)\n", PROGNAME, MOCO_LUA_VERSION, LUA_RELEASE);
    fflush(stdout);
}

static void print_usage(FILE *out) {
    fprintf(out,
        "usage: %s [options] [script [args]]\n"
        "Runs a Lua script with the moco module loaded as the global 'moco',\n"
        "or starts the interactive REPL.\n"
        "\n"
        "Options:\n"
        "  -e code     run the Lua code (may be repeated; runs before the script)\n"
        "  -l name     require library 'name' into the global 'name'\n"
        "  -i          enter the REPL after running the script\n"
        "  -v          print version information\n"
        "  -h, --help  print this help and exit\n"
        "  --          stop handling options\n"
        "  -           run the script read from standard input\n"
        "\n"
        "Arguments after the script go to it, in the table 'arg' and as '...', e.g.\n"
        "  %s recipe.lua --option value\n"
        "\n"
        "A recipe shipped with moco-lua runs by its name: '%s quickstart [options]' or\n"
        "'%s run NAME [options]'; '%s run' lists them, 'NAME --help' shows its options.\n"
        "\n"
        "With no script and no -e, %s starts the REPL: expressions print their\n"
        "values ('1+2', or '=expr'), unfinished statements continue on the next line,\n"
        "TAB completes names ('moco.tr' TAB), Ctrl-C interrupts the running line,\n"
        "Ctrl-D exits; lines taking over a second print their time.  History is kept\n"
        "in ~/%s.\n"
        "\n"
        "Errors print one line; an internal error of moco-lua also prints its traceback.\n"
        "\n"
        "Environment: MOCO_LUA_PATH is put in front of package.path; MOCO_DEBUG=1 prints\n"
        "the traceback of every error.  See also: man moco-lua.\n",
        PROGNAME, PROGNAME, PROGNAME, PROGNAME, PROGNAME, PROGNAME, HISTORY_FILE);
}

/* Directory of the running executable (not of argv[0], which may be a symlink or
 * a bare name found through PATH).  0 on success. */
static int executable_dir(char *buf, size_t size) {
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n <= 0 || (size_t)n >= size - 1) return -1;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash == NULL) return -1;
    *slash = '\0'; /* "/moco-lua" gives "", which the "%s/lua" patterns handle */
    return 0;
}

/* package.path = $MOCO_LUA_PATH ; <the moco Lua modules> ; <default path>.
 * The modules are found next to the executable: <exedir>/lua in a build tree,
 * <exedir>/../share/moco-lua/lua when installed (see `make install`). */
static void set_module_path(lua_State *L) {
    char dir[PATH_MAX], probe[PATH_MAX + 32];
    int pieces = 0;
    lua_getglobal(L, "package");
    const char *env = getenv("MOCO_LUA_PATH");
    if (env != NULL && env[0] != '\0') {
        size_t len = strlen(env);
        while (len > 0 && env[len - 1] == ';') len--;
        lua_pushlstring(L, env, len);
        lua_pushliteral(L, ";");
        pieces += 2;
    }
    if (executable_dir(dir, sizeof dir) == 0) {
        snprintf(probe, sizeof probe, "%s/lua/moco/init.lua", dir);
        if (access(probe, R_OK) == 0)
            lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", dir, dir);
        else
            lua_pushfstring(L, "%s/../share/moco-lua/lua/?.lua;"
                               "%s/../share/moco-lua/lua/?/init.lua;", dir, dir);
        pieces++;
    }
    lua_getfield(L, -1 - pieces, "path");
    lua_concat(L, pieces + 1);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

/* Sets moco_home: the directory holding lua/moco/ and recipes/ (a build tree: the
 * executable's directory; installed: <prefix>/share/moco-lua), resolved, or "". */
static void find_moco_home(void) {
    char dir[PATH_MAX], probe[PATH_MAX + 48];
    moco_home[0] = '\0';
    if (executable_dir(dir, sizeof dir) != 0) return;
    snprintf(probe, sizeof probe, "%s/lua/moco/init.lua", dir);
    if (access(probe, R_OK) != 0) snprintf(probe, sizeof probe, "%s/../share/moco-lua", dir);
    else snprintf(probe, sizeof probe, "%s", dir);
    if (realpath(probe, moco_home) == NULL) moco_home[0] = '\0';
}

/* --- recipes by name ------------------------------------------------------------
 *
 * `moco-lua quickstart` and `moco-lua run quickstart` run <moco_home>/recipes/quickstart.lua
 * (a file of that name in the current directory wins over a recipe); `moco-lua run` lists
 * the recipes with the first line of their header comment. */

/* Fills path with the recipe file for name ("quickstart" or "quickstart.lua"); 0 if found. */
static int find_recipe(const char *name, char *path, size_t size) {
    if (moco_home[0] == '\0' || name[0] == '\0' || strchr(name, '/') != NULL) return -1;
    size_t len = strlen(name);
    int has_ext = len > 4 && strcmp(name + len - 4, ".lua") == 0;
    int n = snprintf(path, size, "%s/recipes/%s%s", moco_home, name, has_ext ? "" : ".lua");
    if (n < 0 || (size_t)n >= size) return -1;
    return access(path, R_OK) == 0 ? 0 : -1;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

#define MAX_RECIPES 256

/* Prints the recipes and what each does (the text after "-- recipes/NAME.lua: " on the
 * first line of the file).  0 on success. */
static int list_recipes(FILE *out) {
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/recipes", moco_home);
    DIR *d = moco_home[0] ? opendir(dir) : NULL;
    if (d == NULL) {
        fprintf(stderr, "%s: cannot find the recipes directory (%s)\n", PROGNAME, moco_home[0] ? dir : "unknown");
        return 1;
    }
    char *names[MAX_RECIPES];
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL && count < MAX_RECIPES) {
        size_t len = strlen(entry->d_name);
        if (len > 4 && strcmp(entry->d_name + len - 4, ".lua") == 0 && entry->d_name[0] != '.') {
            names[count] = strdup(entry->d_name);
            if (names[count] != NULL) count++;
        }
    }
    closedir(d);
    qsort(names, (size_t)count, sizeof *names, compare_names);
    fprintf(out, "recipes in %s (run one with '%s NAME [options]'; 'NAME --help' lists its options):\n",
            dir, PROGNAME);
    for (int i = 0; i < count; i++) {
        char path[2 * PATH_MAX], line[512] = "";
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(line, sizeof line, f) == NULL) line[0] = '\0';
            fclose(f);
        }
        line[strcspn(line, "\r\n")] = '\0';
        const char *what = strstr(line, ".lua: ");
        what = what ? what + 6 : "";
        names[i][strlen(names[i]) - 4] = '\0';
        fprintf(out, "  %-12s %.*s%s\n", names[i], 72, what, strlen(what) > 72 ? "..." : "");
        free(names[i]);
    }
    return 0;
}

/* Makes arg[0] the script, arg[1..] its arguments and negative indices the
 * interpreter and its options; with no script, arg[0] is the interpreter. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    if (script >= argc) script = 0;
    lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int load_moco(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_moco_core);
    lua_setfield(L, -2, "moco.core");
    lua_pop(L, 1);
    set_module_path(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moco");
    int status = docall(L, 1, 1);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        lua_pushfstring(L, "cannot load the moco module: %s", msg ? msg : "?");
        lua_remove(L, -2);
        return report(L, status);
    }
    luaL_setfuncs(L, interrupt_functions, 0);
    lua_setglobal(L, "moco");
    /* help(x): moco.repl.help, loaded on first use (moco.doc is large) */
    static const char help_global[] = "function help(...) return moco.repl.help(...) end";
    if (luaL_loadbuffer(L, help_global, sizeof help_global - 1, "=help") == LUA_OK) docall(L, 0, 0);
    else lua_pop(L, 1);
    return LUA_OK;
}

/* --- command line ------------------------------------------------------------ */

enum { OPT_E = 1, OPT_L = 2, OPT_I = 4, OPT_V = 8, OPT_HELP = 16 };

/* Scans the interpreter's options (no Lua involved, so --help and usage errors
 * work even when the moco module is broken).  Returns the index of the script
 * (argc when there is none) and sets *flags; on a bad option returns -1 with
 * *bad its index. */
static int scan_options(int argc, char **argv, int *flags, int *bad) {
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || strcmp(a, "-") == 0) return i; /* the script ("-" is stdin) */
        if (strcmp(a, "--") == 0) return i + 1;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *flags |= OPT_HELP;
        } else if (strcmp(a, "-i") == 0) {
            *flags |= OPT_I;
        } else if (strcmp(a, "-v") == 0) {
            *flags |= OPT_V;
        } else if (a[1] == 'e' || a[1] == 'l') {
            *flags |= a[1] == 'e' ? OPT_E : OPT_L;
            if (a[2] == '\0' && ++i >= argc) { /* "-e code" or "-ecode" */
                *bad = i - 1;
                return -1;
            }
        } else {
            *bad = i;
            return -1;
        }
    }
    return i;
}

/* Runs the -e and -l options in command-line order; 0 if one failed. */
static int run_inline_options(lua_State *L, char **argv, int script) {
    for (int i = 1; i < script; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l')) continue;
        const char *value = a[2] != '\0' ? a + 2 : argv[++i];
        int status = a[1] == 'e' ? run_string(L, value, "=(command line)")
                                 : run_require(L, value);
        if (status != LUA_OK) return 0;
    }
    return 1;
}

/* The file of a recipe named on the command line ("moco-lua quickstart"); "" when the
 * script argument is a path. */
static char recipe_path[PATH_MAX + 64];

static int run_script(lua_State *L, char **argv, int argc, int script) {
    const char *name = recipe_path[0] ? recipe_path : argv[script];
    /* "-" is standard input, unless it came after "--" (then it is a file name) */
    if (strcmp(name, "-") == 0 && strcmp(argv[script - 1], "--") != 0) name = NULL;
    int status = luaL_loadfile(L, name);
    if (status == LUA_OK) {
        int nargs = argc - script - 1;
        luaL_checkstack(L, nargs, "too many arguments to script");
        for (int i = script + 1; i < argc; i++) lua_pushstring(L, argv[i]);
        status = docall(L, nargs, 0);
    }
    return report(L, status);
}

/* --- REPL: reading input -----------------------------------------------------
 *
 * With a terminal on stdin, lines come from libedit (prompts, editing, history,
 * completion).  Otherwise (a pipe or a file, as when a test or another program
 * drives moco-lua) lines are read with getline and no prompt is printed, so the
 * output holds only results and errors; everything else (auto-print, multi-line
 * chunks, surviving errors) is the same.  Such a session ends with status 1 if
 * any chunk failed, so `moco-lua < session.lua` still tells its caller. */
static int repl_on_tty = 0;
static char history_path[PATH_MAX];

static void history_save(void) {
    if (history_path[0] != '\0') write_history(history_path); /* unwritable: skip */
}

static void history_open(void) {
    const char *home = getenv("HOME");
    using_history();
    stifle_history(HISTORY_MAX);
    if (home == NULL || home[0] == '\0') return;
    int n = snprintf(history_path, sizeof history_path, "%s/%s", home, HISTORY_FILE);
    if (n < 0 || (size_t)n >= sizeof history_path) {
        history_path[0] = '\0';
        return;
    }
    read_history(history_path); /* a missing file is a fresh history */
    atexit(history_save);       /* also runs on os.exit */
}

/* libedit's own reader retries a read that a signal interrupted, so Ctrl-C would
 * only take effect after the next key.  This one reports end of input instead,
 * readline returns, and read_line sees prompt_interrupted.  It hands libedit
 * whole characters (wide), decoding multibyte input in the locale's encoding as
 * libedit's reader would; a byte that does not decode is passed on as is. */
static int tty_getc(FILE *in) {
    (void)in;
    char bytes[MB_LEN_MAX];
    size_t count = 0;
    for (;;) {
        if (prompt_interrupted) return -1; /* Ctrl-C came before the read began */
        ssize_t n = read(STDIN_FILENO, &bytes[count], 1);
        if (n < 0 && errno == EINTR) continue;
        if (n != 1) return -1;
        count++;
        mbstate_t state;
        memset(&state, 0, sizeof state);
        wchar_t wc;
        size_t used = mbrtowc(&wc, bytes, count, &state);
        if (used == (size_t)-2 && count < sizeof bytes) continue; /* more bytes to come */
        if (used == (size_t)-1 || used == (size_t)-2) return (unsigned char)bytes[count - 1];
        return (int)wc;
    }
}

/* The line last returned by read_line, freed on the next call: pushing it can
 * raise a memory error, and that must not leak it. */
static char *last_line = NULL;

/* Reads a line without its newline into last_line.  Returns 1 on a line, 0 at
 * the end of input, -1 when Ctrl-C cancelled the input. */
static int read_line(int first) {
    free(last_line);
    last_line = NULL;
    fflush(stdout);
    prompt_interrupted = 0;
    install_sigint(0);
    if (repl_on_tty) {
        last_line = readline(first ? "> " : ">> ");
    } else {
        size_t cap = 0;
        if (getline(&last_line, &cap, stdin) < 0) {
            free(last_line);
            last_line = NULL;
            clearerr(stdin);
        }
    }
    if (prompt_interrupted) {
        if (repl_on_tty) fputs("\n", stdout);
        return -1;
    }
    if (last_line == NULL) return 0;
    size_t len = strlen(last_line);
    while (len > 0 && (last_line[len - 1] == '\n' || last_line[len - 1] == '\r'))
        last_line[--len] = '\0';
    if (repl_on_tty && strspn(last_line, " \t") < len) add_history(last_line);
    return 1;
}

static int is_incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return 0;
    size_t len, mark = sizeof(INCOMPLETE_MARK) - 1;
    const char *msg = lua_tolstring(L, -1, &len);
    return msg != NULL && len >= mark && strcmp(msg + len - mark, INCOMPLETE_MARK) == 0;
}

enum { INPUT_END = -1, INPUT_CANCELLED = -2 };

/* Reads one statement and compiles it, pushing the function or an error message.
 * A line that compiles as `return <line>` is an expression whose values will be
 * printed; otherwise lines are joined while the chunk is merely unfinished.
 * Returns the load status, INPUT_END or INPUT_CANCELLED (nothing pushed). */
static int read_statement(lua_State *L) {
    int r = read_line(1);
    if (r <= 0) return r == 0 ? INPUT_END : INPUT_CANCELLED;
    if (last_line[0] == '=') /* "=expr" is "return expr", as in Lua 5.1 */
        lua_pushfstring(L, "return %s", last_line + 1);
    else
        lua_pushstring(L, last_line);
    const char *as_return = lua_pushfstring(L, "return %s;", lua_tostring(L, -1));
    if (luaL_loadbuffer(L, as_return, strlen(as_return), REPL_CHUNKNAME) == LUA_OK) {
        lua_remove(L, -2); /* the "return" text */
        lua_remove(L, -2); /* the line */
        return LUA_OK;
    }
    lua_pop(L, 2); /* error message, "return" text; the chunk is on top */
    for (;;) {
        size_t len;
        const char *chunk = lua_tolstring(L, -1, &len);
        int status = luaL_loadbuffer(L, chunk, len, REPL_CHUNKNAME);
        if (!is_incomplete(L, status)) {
            lua_remove(L, -2);
            return status;
        }
        r = read_line(0);
        if (r == 0) { /* input ended inside a statement: report it as it stands */
            lua_remove(L, -2);
            return status;
        }
        if (r < 0) {
            lua_pop(L, 2);
            return INPUT_CANCELLED;
        }
        lua_pop(L, 1); /* the "<eof>" message */
        lua_pushliteral(L, "\n");
        lua_pushstring(L, last_line);
        lua_concat(L, 3);
    }
}

/* --- REPL: tab completion ----------------------------------------------------
 *
 * The word before the cursor ('.' and ':' are not word breaks) is split into a
 * path, e.g. "moco.transforms.Ra" or "t:sh"; each part but the last is looked up
 * from _G, and the last is completed from the keys of the value found: its own
 * keys when it is a table, then those of its metatable's __index table, and so
 * on up the chain (that is where userdata such as tensors keep their methods).
 * A module whose submodules load lazily on first access (moco's __index function)
 * has them only as files, so for a value that is in package.loaded the Lua files
 * of its submodules on package.path are offered too: "moco.tr" finds
 * moco/transforms.lua before moco.transforms was ever touched.
 * Only raw lookups are made, so no metamethod runs and nothing the user defined
 * can loop or fail; the whole walk also runs under lua_pcall, so even a memory
 * error stays inside the completion. */

static const char *const lua_keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
    "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
    "true", "until", "while", NULL};

static int is_identifier(const char *s, size_t len) {
    if (len == 0) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && (i == 0 || c < '0' || c > '9')) return 0;
    }
    return 1;
}

/* Replaces the value on top by the __index table of its metatable and returns 1;
 * returns 0 and leaves the stack as it was when there is none.  moco's userdata
 * (tensors, datasets, loaders, images) index through a C function that looks their
 * methods up in the metatable's "methods" table: that table stands for __index then. */
static int step_to_index_table(lua_State *L) {
    if (!lua_getmetatable(L, -1)) return 0;
    lua_pushliteral(L, "__index");
    int kind = lua_rawget(L, -2);
    if (kind != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_pushliteral(L, "methods");
        if (kind != LUA_TFUNCTION || lua_rawget(L, -2) != LUA_TTABLE) {
            lua_pop(L, 2);
            return 0;
        }
    }
    lua_remove(L, -2); /* the metatable */
    lua_remove(L, -2); /* the previous holder */
    return 1;
}

/* The chain of __index tables is bounded so that a cycle cannot hang the REPL. */
#define MAX_INDEX_DEPTH 16

/* Replaces the value on top by its field key, found as described above, or nil. */
static void raw_field(lua_State *L, const char *key, size_t len) {
    for (int depth = 0; depth < MAX_INDEX_DEPTH; depth++) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_pushlstring(L, key, len);
            if (lua_rawget(L, -2) != LUA_TNIL) {
                lua_remove(L, -2);
                return;
            }
            lua_pop(L, 1);
        }
        if (!step_to_index_table(L)) break;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

/* Appends text[0..prefix_len) .. name to the results at index 2 unless index 3
 * (the set of names offered so far) already has it; name is on top, kept. */
static void offer(lua_State *L, const char *text, size_t prefix_len) {
    lua_pushvalue(L, -1);
    if (lua_rawget(L, 3) != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, 3);
    lua_pushlstring(L, text, prefix_len);
    lua_pushvalue(L, -2);
    lua_concat(L, 2);
    lua_rawseti(L, 2, (lua_Integer)lua_rawlen(L, 2) + 1);
}

/* Pushes the key under which the value at idx is in package.loaded and returns 1;
 * returns 0 (nothing pushed) when it is not a loaded module. */
static int loaded_module_name(lua_State *L, int idx) {
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, idx)) {
            lua_pop(L, 1);
            lua_remove(L, -2);
            return 1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

#define MAX_SUBMODULES 128
#define MAX_SUBMODULE_NAME 64

/* Offers the submodules of module modname (on top of the stack, kept) whose
 * files lie where package.path's templates put them: for "D/?.lua" the files
 * D/<modname as a path>/<name>.lua, for "D/?/init.lua" the directories
 * D/<modname as a path>/<name>/ holding init.lua.  Names are gathered in a fixed
 * buffer so that no directory is open while Lua may raise. */
static void offer_submodules(lua_State *L, const char *text, size_t prefix_len,
                             const char *part, size_t part_len) {
    static char names[MAX_SUBMODULES][MAX_SUBMODULE_NAME];
    char modpath[PATH_MAX], dir[PATH_MAX], file[2 * PATH_MAX];
    int count = 0;
    snprintf(modpath, sizeof modpath, "%s", lua_tostring(L, -1));
    for (char *c = modpath; *c; c++)
        if (*c == '.') *c = '/';
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushliteral(L, "package");
    if (lua_rawget(L, -2) != LUA_TTABLE) {
        lua_pop(L, 2);
        return;
    }
    lua_pushliteral(L, "path");
    if (lua_rawget(L, -2) != LUA_TSTRING) {
        lua_pop(L, 3);
        return;
    }
    const char *path = lua_tostring(L, -1);
    while (*path != '\0' && count < MAX_SUBMODULES) {
        size_t template_len = strcspn(path, ";");
        const char *mark = memchr(path, '?', template_len);
        const char *suffix = mark ? mark + 1 : NULL;
        size_t suffix_len = mark ? template_len - (size_t)(suffix - path) : 0;
        int n = mark ? snprintf(dir, sizeof dir, "%.*s%s/", (int)(mark - path), path, modpath) : -1;
        DIR *d = (n > 0 && (size_t)n < sizeof dir && !memchr(suffix, '?', suffix_len))
                     ? opendir(dir) : NULL;
        struct dirent *entry;
        while (d != NULL && count < MAX_SUBMODULES && (entry = readdir(d)) != NULL) {
            const char *name = entry->d_name;
            size_t name_len = strlen(name);
            if (suffix[0] == '/') { /* D/?/init.lua: the entry must be a directory holding it */
                snprintf(file, sizeof file, "%s%s%.*s", dir, name, (int)suffix_len, suffix);
                if (access(file, R_OK) != 0) continue;
            } else { /* D/?.lua: the entry is the file, named <name><suffix> */
                if (name_len <= suffix_len ||
                    memcmp(name + name_len - suffix_len, suffix, suffix_len) != 0)
                    continue;
                name_len -= suffix_len;
            }
            if (name_len == 4 && memcmp(name, "init", 4) == 0) continue; /* the package itself */
            if (name_len >= MAX_SUBMODULE_NAME || name_len < part_len ||
                memcmp(name, part, part_len) != 0 || !is_identifier(name, name_len))
                continue;
            memcpy(names[count], name, name_len);
            names[count++][name_len] = '\0';
        }
        if (d != NULL) closedir(d);
        path += template_len;
        if (*path == ';') path++;
    }
    lua_pop(L, 3);
    for (int i = 0; i < count; i++) {
        lua_pushstring(L, names[i]);
        offer(L, text, prefix_len);
        lua_pop(L, 1);
    }
}

/* The holder on top is a loaded module whose field `part` is missing: if the module
 * has a submodule file of that name on package.path (moco's lazily loaded ones),
 * requires it and replaces the holder by it; otherwise by nil.  Runs Lua code (the
 * module's own loading), inside the completion's protected call. */
static void load_submodule(lua_State *L, const char *part, size_t len) {
    if (!is_identifier(part, len) || !loaded_module_name(L, lua_gettop(L))) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return;
    }
    lua_pushliteral(L, ".");
    lua_pushlstring(L, part, len);
    lua_concat(L, 3); /* "moco.nn" */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushvalue(L, -3);
    lua_getfield(L, -3, "path");
    int found = lua_pcall(L, 2, 1, 0) == LUA_OK && lua_isstring(L, -1);
    lua_pop(L, 2); /* the file name or error, package */
    if (found) {
        lua_getglobal(L, "require");
        lua_pushvalue(L, -2);
        found = lua_pcall(L, 1, 1, 0) == LUA_OK;
        if (!found) lua_pop(L, 1);
    }
    if (!found) lua_pushnil(L);
    lua_remove(L, -2); /* the module's name */
    lua_remove(L, -2); /* the holder */
}

/* lua_pcall'ed with the word (a light userdata C string); returns an array of
 * the full completions. */
static int collect_completions(lua_State *L) {
    const char *text = lua_touserdata(L, 1);
    lua_newtable(L);         /* 2: results */
    lua_newtable(L);         /* 3: names offered */
    lua_pushglobaltable(L);  /* 4: the value whose keys complete the last part */
    const char *dot = strrchr(text, '.'), *colon = strrchr(text, ':');
    const char *sep = dot; /* the last separator; NULL when there is none */
    if (colon != NULL && (dot == NULL || colon > dot)) sep = colon;
    const char *part = text;
    while (sep != NULL && part <= sep) {
        size_t len = strcspn(part, ".:");
        if (!is_identifier(part, len)) return 1;
        if (part[len] == ':' && part + len != sep) return 1; /* a:b.c is no Lua */
        lua_pushvalue(L, 4);
        raw_field(L, part, len);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushvalue(L, 4);
            load_submodule(L, part, len); /* "moco.nn." before moco.nn was ever used */
        }
        lua_replace(L, 4);
        if (lua_isnil(L, 4)) return 1;
        part += len + 1;
    }
    size_t part_len = strlen(part);
    size_t prefix_len = (size_t)(part - text);
    int methods_only = sep != NULL && *sep == ':';
    /* _private and __meta names only when asked for ("t._" TAB) */
    int show_private = part_len > 0 && part[0] == '_';

    lua_pushvalue(L, 4);
    for (int depth = 0; depth < MAX_INDEX_DEPTH; depth++) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_pushnil(L);
            while (lua_next(L, -2)) { /* key at -2, value at -1 */
                size_t len;
                if (lua_type(L, -2) == LUA_TSTRING &&
                    (!methods_only || lua_type(L, -1) == LUA_TFUNCTION)) {
                    const char *key = lua_tolstring(L, -2, &len);
                    if (len >= part_len && memcmp(key, part, part_len) == 0 &&
                        is_identifier(key, len) && (show_private || key[0] != '_')) {
                        lua_pushvalue(L, -2);
                        offer(L, text, prefix_len);
                        lua_pop(L, 1);
                    }
                }
                lua_pop(L, 1);
            }
        }
        if (!step_to_index_table(L)) break;
    }
    lua_pop(L, 1);
    if (sep != NULL && !methods_only && loaded_module_name(L, 4)) {
        offer_submodules(L, text, prefix_len, part, part_len);
        lua_pop(L, 1);
    }
    if (sep == NULL) {
        for (int i = 0; lua_keywords[i] != NULL; i++) {
            if (strncmp(lua_keywords[i], part, part_len) != 0) continue;
            lua_pushstring(L, lua_keywords[i]);
            offer(L, text, 0);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, 2);
    return 1;
}

/* The completions of the current TAB press, handed one by one to libedit, which
 * takes ownership of each string it receives. */
static char **completion_list = NULL;
static size_t completion_count = 0, completion_next = 0;

static char *next_completion(const char *text, int state) {
    (void)text;
    (void)state;
    if (completion_next >= completion_count) return NULL;
    char *s = completion_list[completion_next];
    completion_list[completion_next++] = NULL;
    return s;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **complete_lua(const char *text, int start, int end) {
    (void)start;
    (void)end;
    char **matches = NULL;
    lua_State *L = global_L;
    int top = lua_gettop(L);
    rl_attempted_completion_over = 1; /* never fall back to file names */
    if (!lua_checkstack(L, 4)) return NULL;
    lua_pushcfunction(L, collect_completions);
    lua_pushlightuserdata(L, (void *)text);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE) {
        size_t n = (size_t)lua_rawlen(L, -1);
        completion_list = calloc(n + 1, sizeof *completion_list);
        completion_count = completion_next = 0;
        for (size_t i = 1; completion_list != NULL && i <= n; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            const char *s = lua_tostring(L, -1);
            char *copy = s ? strdup(s) : NULL;
            if (copy != NULL) completion_list[completion_count++] = copy;
            lua_pop(L, 1);
        }
        if (completion_count > 0) {
            qsort(completion_list, completion_count, sizeof *completion_list, compare_strings);
            matches = rl_completion_matches(text, next_completion);
        }
        for (size_t i = completion_next; i < completion_count; i++) free(completion_list[i]);
        free(completion_list);
        completion_list = NULL;
        completion_count = completion_next = 0;
    }
    lua_settop(L, top);
    return matches;
}

/* Word breaks for completion: Lua's operators and brackets, but not '.' or ':',
 * so that "moco.transforms.Ra" is one word. */
static char completion_word_breaks[] = " \t\n\"'`@$><=;|&{}()[],+-*/%^~#";

static void setup_line_editing(void) {
    /* libedit edits characters, not bytes: without a multibyte locale, typing 'é'
     * would give two meta keys.  Only the character type is set (number formatting
     * stays "C"); a single-byte locale falls back to UTF-8, what terminals send. */
    setlocale(LC_CTYPE, "");
    if (MB_CUR_MAX == 1) setlocale(LC_CTYPE, "C.UTF-8");
    rl_readline_name = PROGNAME;
    rl_getc_function = tty_getc;
    rl_attempted_completion_function = complete_lua;
    rl_basic_word_break_characters = completion_word_breaks;
    rl_completer_word_break_characters = completion_word_breaks;
    rl_completion_append_character = '\0';
    history_open();
}

/* --- REPL: the loop --------------------------------------------------------- */

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prints its arguments with moco.repl.print (readable tables, module summaries: see
 * lua/moco/repl.lua) when there is one, else with the global print.  Runs protected. */
static int print_with_repl_printer(lua_State *L) {
    int n = lua_gettop(L);
    lua_getglobal(L, "moco");
    if (lua_type(L, -1) == LUA_TTABLE && lua_getfield(L, -1, "repl") == LUA_TTABLE &&
        lua_getfield(L, -1, "print") == LUA_TFUNCTION) {
        lua_insert(L, 1);
        lua_settop(L, n + 1);
    } else {
        lua_settop(L, n);
        lua_getglobal(L, "print");
        lua_insert(L, 1);
    }
    lua_call(L, n, 0);
    return 0;
}

/* Prints the n values on top of the stack (see print_with_repl_printer), and pops them. */
static int print_values(lua_State *L, int n) {
    if (n <= 0) return LUA_OK;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_pushcfunction(L, print_with_repl_printer);
    lua_insert(L, -n - 1);
    int status = docall(L, n, 0);
    if (status != LUA_OK) {
        lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1));
        lua_remove(L, -2);
    }
    return status;
}

/* Returns 1 when the session ended normally (end of input), 0 when it was not
 * a terminal session and some chunk failed. */
static int repl(lua_State *L, int banner) {
    int failures = 0;
    repl_on_tty = isatty(STDIN_FILENO);
    keep_sigint_handler = 1;
    if (repl_on_tty) {
        if (banner) print_version();
        printf("Expressions print their value; help(x) explains x; TAB completes, Ctrl-C interrupts, "
               "Ctrl-D exits.\n");
        setup_line_editing();
    }
    for (;;) {
        int top = lua_gettop(L);
        int status = read_statement(L);
        if (status == INPUT_END) break;
        if (status == INPUT_CANCELLED) continue;
        double start = seconds_now();
        if (status == LUA_OK) {
            status = docall(L, 0, LUA_MULTRET);
            if (status == LUA_OK) status = print_values(L, lua_gettop(L) - top);
        }
        fflush(stdout);
        if (status != LUA_OK) {
            if (repl_on_tty && last_call_interrupted) fputs("\n", stderr);
            report(L, status);
            failures++;
        }
        double elapsed = seconds_now() - start;
        if (elapsed > SLOW_LINE_SECONDS) {
            fprintf(stderr, "(%.2f s)\n", elapsed);
            fflush(stderr);
        }
        lua_settop(L, top);
    }
    if (repl_on_tty) fputs("\n", stdout);
    fflush(stdout);
    free(last_line);
    last_line = NULL;
    return repl_on_tty || failures == 0;
}

/* --- main ---------------------------------------------------------------------- */

/* Everything that can raise runs in here, protected by main's lua_pcall.
 * Arguments: argc, argv, the script's index, the option flags.  Returns a
 * boolean: whether everything succeeded. */
static int protected_main(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    int script = (int)lua_tointeger(L, 3);
    int flags = (int)lua_tointeger(L, 4);
    lua_settop(L, 0);
    luaL_checkversion(L);
    if (flags & OPT_V) print_version();
    luaL_openlibs(L);
    create_arg_table(L, argv, argc, script);
    int ok = load_moco(L) == LUA_OK && run_inline_options(L, argv, script) &&
             (script >= argc || run_script(L, argv, argc, script) == LUA_OK);
    if (ok) {
        if (flags & OPT_I)
            ok = repl(L, !(flags & OPT_V));
        else if (script >= argc && !(flags & (OPT_E | OPT_V)))
            ok = repl(L, 1);
    }
    lua_pushboolean(L, ok);
    return 1;
}

int main(int argc, char **argv) {
    int flags = 0, bad = 0;
    int script = scan_options(argc, argv, &flags, &bad);
    if (script < 0) {
        const char *a = argv[bad];
        if (a[1] == 'e' || a[1] == 'l')
            fprintf(stderr, "%s: '%s' needs an argument\n", PROGNAME, a);
        else
            fprintf(stderr, "%s: unrecognized option '%s'\n", PROGNAME, a);
        print_usage(stderr);
        return 1;
    }
    if (flags & OPT_HELP) {
        print_usage(stdout);
        return 0;
    }
    find_moco_home();
    if (script < argc && strcmp(argv[script], "-") != 0 && access(argv[script], R_OK) != 0) {
        const char *name = argv[script];
        if (strcmp(name, "run") == 0) { /* moco-lua run [NAME|PATH] */
            if (script + 1 >= argc) return list_recipes(stdout);
            name = argv[++script];
            if (access(name, R_OK) == 0) name = NULL; /* a path: run it as it is */
        }
        if (name != NULL && find_recipe(name, recipe_path, sizeof recipe_path) != 0) {
            recipe_path[0] = '\0';
            if (script > 0 && strcmp(argv[script - 1], "run") == 0) {
                fprintf(stderr, "%s: no recipe named '%s'\n", PROGNAME, name);
                list_recipes(stderr);
                return 1;
            }
            /* not a recipe either: luaL_loadfile reports the missing file */
        }
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create the Lua state: not enough memory\n", PROGNAME);
        return 1;
    }
    global_L = L;
    lua_thread = pthread_self();
    lua_pushcfunction(L, protected_main);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    lua_pushinteger(L, script);
    lua_pushinteger(L, flags);
    int status = lua_pcall(L, 4, 1, 0);
    if (exit_status) { /* moco.finish_interrupt: the signal's status, nothing to report */
        lua_close(L);
        return exit_status;
    }
    int ok = status == LUA_OK && lua_toboolean(L, -1);
    report(L, status);
    lua_close(L);
    return ok ? 0 : 1;
}
