/* tests/c/test_repl.c: drives the moco-lua REPL the way a person does.
 *
 * A pseudo-terminal session (forkpty) types lines, TAB, Ctrl-C and Ctrl-D into
 * ./moco-lua (or argv[1]) and reads what it prints: automatic printing, '=',
 * multi-line input, errors that leave the session alive, tab completion, Ctrl-C
 * while code runs and at the prompt, the exit status and the history file.  A
 * second session feeds the same kind of input through a pipe (no terminal: no
 * prompts, no line editing).  Every wait is bounded by poll timeouts and one
 * overall deadline, so a broken REPL fails the checks instead of hanging. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define OVERALL_SECONDS 120.0
#define STEP_SECONDS 15.0 /* generous: a loaded machine runs a 1.2-CPU-second line for longer */

static double deadline;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    pid_t pid;
    int to_child, from_child; /* the same pty master in a terminal session */
    char *out;                /* everything the child printed so far */
    size_t len, cap;
    size_t seen; /* output before this offset was consumed by earlier expectations */
    int eof;
    int exited, status; /* set once waitpid reported the child */
} Session;

/* Waits until `until` (or the overall deadline) for output and appends it. */
static void pump(Session *s, double until) {
    if (until > deadline) until = deadline;
    double left = until - now();
    if (s->eof || left <= 0) return;
    struct pollfd p = {.fd = s->from_child, .events = POLLIN};
    if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) return;
    if (s->len + 4096 + 1 > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 65536;
        char *grown = realloc(s->out, cap);
        if (grown == NULL) {
            s->eof = 1;
            return;
        }
        s->out = grown;
        s->cap = cap;
    }
    ssize_t n = read(s->from_child, s->out + s->len, 4096);
    if (n > 0) {
        s->len += (size_t)n;
        s->out[s->len] = '\0';
    } else if (n == 0 || errno != EINTR) {
        s->eof = 1; /* a pty master reads EIO once the child has gone */
    }
}

static void pause_reading(Session *s, double seconds) {
    double until = now() + seconds;
    while (now() < until && now() < deadline && !s->eof) pump(s, until);
}

/* Waits for needle in the output not yet consumed; on success consumes up to its end. */
static int expect(Session *s, const char *needle) {
    double until = now() + STEP_SECONDS;
    for (;;) {
        if (s->out != NULL) {
            char *hit = memmem(s->out + s->seen, s->len - s->seen, needle, strlen(needle));
            if (hit != NULL) {
                s->seen = (size_t)(hit - s->out) + strlen(needle);
                return 1;
            }
        }
        if (s->eof || now() >= until || now() >= deadline) return 0;
        pump(s, until);
    }
}

/* Whether the output consumed since offset `from` contains needle. */
static int consumed_has(const Session *s, size_t from, const char *needle) {
    return s->out != NULL && from < s->seen && memmem(s->out + from, s->seen - from, needle, strlen(needle)) != NULL;
}

/* The last bytes of the unconsumed output, control characters escaped, for messages. */
static const char *recent(const Session *s) {
    static char buf[700];
    size_t from = s->len > s->seen + 160 ? s->len - 160 : s->seen, k = 0;
    for (size_t i = from; i < s->len && k + 5 < sizeof buf; i++) {
        unsigned char c = (unsigned char)s->out[i];
        if (c >= 32 && c < 127) buf[k++] = (char)c;
        else k += (size_t)snprintf(buf + k, sizeof buf - k, "\\x%02x", c);
    }
    buf[k] = '\0';
    return buf;
}

/* out[from, to) without terminal escape sequences and control characters: what the
 * user sees on the line, assuming it only grows (true for short edits at the end). */
static char *plain_text(const Session *s, size_t from, size_t to) {
    char *text = malloc(to - from + 1);
    size_t k = 0;
    if (text == NULL) return NULL;
    for (size_t i = from; i < to; i++) {
        unsigned char c = (unsigned char)s->out[i];
        if (c == 0x1b) { /* ESC [ params final, or ESC and one character */
            if (i + 1 < to && s->out[i + 1] == '[') {
                i += 2;
                while (i < to && !((unsigned char)s->out[i] >= 0x40 && (unsigned char)s->out[i] <= 0x7e)) i++;
            } else {
                i++;
            }
        } else if (c >= 32 || c == '\n') {
            text[k++] = (char)c;
        }
    }
    text[k] = '\0';
    return text;
}

static void send_text(Session *s, const char *text) {
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t n = write(s->to_child, text + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        done += (size_t)n;
    }
}

/* libedit prints the prompt a moment before it puts the terminal in raw mode.
 * Keys arriving in between are cooked by the terminal instead of reaching the
 * editor (^D turns into an end-of-file mark the editor never sees), so after a
 * prompt the test waits until the terminal is raw; a pty master reports the
 * terminal settings of its slave. */
static void wait_for_editor(Session *s) {
    double until = now() + STEP_SECONDS;
    struct termios mode;
    while (now() < until && now() < deadline) {
        if (tcgetattr(s->to_child, &mode) == 0 && !(mode.c_lflag & ICANON)) return;
        struct timespec nap = {0, 2 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

/* Waits for the next prompt and the editor behind it, then types text. */
static void type_at_prompt(Session *s, const char *text) {
    expect(s, "> ");
    wait_for_editor(s);
    send_text(s, text);
}

/* Waits for the child to exit, draining its output meanwhile; 1 if it did. */
static int wait_exit(Session *s, double seconds) {
    double until = now() + seconds;
    while (!s->exited) {
        if (waitpid(s->pid, &s->status, WNOHANG) == s->pid) {
            s->exited = 1;
            break;
        }
        if (now() >= until || now() >= deadline) return 0;
        if (s->eof) {
            struct timespec nap = {0, 10 * 1000 * 1000};
            nanosleep(&nap, NULL);
        } else {
            pump(s, now() + 0.05);
        }
    }
    while (!s->eof) pump(s, now() + 0.2); /* output still in flight */
    return 1;
}

static void end_session(Session *s) {
    if (!s->exited) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &s->status, 0);
        s->exited = 1;
    }
    close(s->from_child);
    if (s->to_child != s->from_child && s->to_child >= 0) close(s->to_child);
    free(s->out);
}

static int exited_with(const Session *s, int code) {
    return s->exited && WIFEXITED(s->status) && WEXITSTATUS(s->status) == code;
}

static void child_environment(const char *home, const char *lua_path) {
    setenv("HOME", home, 1);
    setenv("TERM", "xterm", 1);
    setenv("MOCO_LUA_PATH", lua_path, 1);
}

static int start_terminal(Session *s, const char *exe, const char *home, const char *lua_path) {
    /* wide, so that no line wraps and the echo stays readable */
    struct winsize size = {.ws_row = 40, .ws_col = 250};
    int fd;
    memset(s, 0, sizeof *s);
    pid_t pid = forkpty(&fd, NULL, NULL, &size);
    if (pid < 0) return -1;
    if (pid == 0) {
        child_environment(home, lua_path);
        execl(exe, exe, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    s->to_child = s->from_child = fd;
    return 0;
}

static int start_piped(Session *s, const char *exe, const char *home, const char *lua_path) {
    int in[2], out[2];
    memset(s, 0, sizeof *s);
    if (pipe(in) != 0) return -1;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(out[1], STDERR_FILENO);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        child_environment(home, lua_path);
        execl(exe, exe, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    s->pid = pid;
    s->to_child = in[1];
    s->from_child = out[0];
    return 0;
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f == NULL) return -1;
    fputs(text, f);
    return fclose(f);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *text = calloc(1, 1 << 20);
    if (text != NULL) fread(text, 1, (1 << 20) - 1, f);
    fclose(f);
    return text;
}

/* A module whose submodule loads lazily, like moco's: tmod.extra is only a file
 * until first touched, so completing "tmod.ex" must look at package.path. */
static void write_lazy_module(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/tmod", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/tmod/init.lua", dir);
    write_file(path, "return setmetatable({}, {__index = function(t, k)\n"
                     "  local m = require('tmod.' .. k); rawset(t, k, m); return m end})\n");
    snprintf(path, sizeof path, "%s/tmod/extra.lua", dir);
    write_file(path, "return {answer = 4000 + 242}\n");
}

static void remove_temporary(const char *home) {
    const char *files[] = {"/.moco_history", "/tmod/init.lua", "/tmod/extra.lua", "/tmod", ""};
    char path[512];
    for (int i = 0; files[i][0] != '\0'; i++) {
        snprintf(path, sizeof path, "%s%s", home, files[i]);
        remove(path);
    }
    rmdir(home);
}

static void terminal_session(const char *exe, const char *home, const char *lua_path) {
    Session s;
    if (start_terminal(&s, exe, home, lua_path) != 0) {
        CHECK("tty start", 0, "forkpty failed: %s", strerror(errno));
        return;
    }
    CHECK("tty banner", expect(&s, "Ctrl-D exits"), "no banner; output: %s", recent(&s));

    type_at_prompt(&s, "300+33\r");
    CHECK("tty auto-print", expect(&s, "333\r\n"), "no 333 after '300+33'; output: %s", recent(&s));

    type_at_prompt(&s, "=10*10\r");
    CHECK("tty = prefix", expect(&s, "100\r\n"), "no 100 after '=10*10'; output: %s", recent(&s));

    type_at_prompt(&s, "function f(x)\r");
    int continued = expect(&s, ">> ");
    send_text(&s, "return x*2\r");
    continued = continued && expect(&s, ">> ");
    send_text(&s, "end\r");
    type_at_prompt(&s, "f(21)\r");
    CHECK("tty multi-line prompt", continued, "no '>> ' continuation prompt; output: %s", recent(&s));
    CHECK("tty multi-line function", expect(&s, "42\r\n"), "f(21) did not print 42; output: %s",
          recent(&s));

    type_at_prompt(&s, "error(\"bo\"..\"om\")\r");
    CHECK("tty error message", expect(&s, "stdin:1: boom"), "no 'stdin:1: boom'; output: %s",
          recent(&s));
    size_t mark = s.seen;
    type_at_prompt(&s, "6*7+1\r");
    CHECK("tty continues after error", expect(&s, "43\r\n"), "no 43 after the error; output: %s",
          recent(&s));
    CHECK("tty user error: no traceback", !consumed_has(&s, mark, "traceback"),
          "a traceback after error(); output: %s", recent(&s));

    type_at_prompt(&s, "local function g(t) return t.x end; g(nil)\r");
    CHECK("tty runtime error in function", expect(&s, "attempt to index a nil value"),
          "no 'attempt to index'; output: %s", recent(&s));
    type_at_prompt(&s, "=2^10\r");
    CHECK("tty continues after runtime error", expect(&s, "1024.0\r\n"),
          "no 1024.0; output: %s", recent(&s));

    mark = s.seen;
    type_at_prompt(&s, "moco.nn.Linear(2, 3, {bais = false})\r");
    CHECK("tty library error: clean message", expect(&s, "moco-lua: nn.Linear: unknown option 'bais'"),
          "no clean nn.Linear message; output: %s", recent(&s));
    type_at_prompt(&s, "=3*3\r");
    expect(&s, "9\r\n");
    CHECK("tty library error: no lua/moco/ position, no traceback",
          !consumed_has(&s, mark, "lua/moco/") && !consumed_has(&s, mark, "traceback"),
          "output: %s", recent(&s));

    expect(&s, "> ");
    wait_for_editor(&s);
    size_t before = s.len;
    send_text(&s, "string.fo\t");
    pause_reading(&s, 0.3);
    char *line = plain_text(&s, before, s.len);
    CHECK("tty completion echo", line != NULL && strstr(line, "string.format") != NULL,
          "TAB after 'string.fo' shows '%s'", line ? line : "?");
    free(line);
    send_text(&s, "(\"<%d>\", 41+1)\r");
    CHECK("tty completion string.fo -> string.format", expect(&s, "<42>"),
          "completed call did not print <42>; output: %s", recent(&s));

    type_at_prompt(&s, "obj = setmetatable({}, {__index = {greet = function() return \"hi\"..\"!\" end}})\r");
    type_at_prompt(&s, "obj:gr\t()\r");
    CHECK("tty completion of a method through __index", expect(&s, "hi!\r\n"),
          "'obj:gr' TAB did not complete to greet; output: %s", recent(&s));

    type_at_prompt(&s, "tmod = require \"tmod\"\r");
    type_at_prompt(&s, "tmod.ex\t.answer\r");
    CHECK("tty completion of a lazily loaded submodule", expect(&s, "4242\r\n"),
          "'tmod.ex' TAB did not complete to tmod.extra; output: %s", recent(&s));

    /* completion of userdata methods, of a module not loaded yet, and no _private names */
    type_at_prompt(&s, "tz = moco.zeros{3}\r");
    type_at_prompt(&s, "=tz:nu\t() + 7\r");
    CHECK("tty completion of a tensor method (t:nu -> t:numel)", expect(&s, "10\r\n"),
          "'tz:nu' TAB did not complete to numel; output: %s", recent(&s));
    type_at_prompt(&s, "=moco.lincls.evalu\t == moco.lincls.evaluate\r");
    CHECK("tty completion inside a lazily loaded module", expect(&s, "true\r\n"),
          "'moco.lincls.evalu' TAB did not complete; output: %s", recent(&s));
    type_at_prompt(&s, "xx = {_a1 = 1, a2 = 40}\r");
    type_at_prompt(&s, "=xx.\t + 2\r");
    CHECK("tty completion leaves out _private names", expect(&s, "42\r\n"),
          "'xx.' TAB did not complete to the only public field; output: %s", recent(&s));
    type_at_prompt(&s, "ds = moco.data.FashionMNIST{train = false}\r");
    type_at_prompt(&s, "=ds:targ\t():size(1)\r");
    CHECK("tty completion of a dataset method", expect(&s, "10000\r\n"),
          "'ds:targ' TAB did not complete to targets; output: %s", recent(&s));
    type_at_prompt(&s, "ld = moco.data.Loader(ds, {batch_size = 10, workers = 1})\r");
    type_at_prompt(&s, "=ld:reset_st\t() == nil\r");
    CHECK("tty completion of a loader method", expect(&s, "true\r\n"),
          "'ld:reset_st' TAB did not complete; output: %s", recent(&s));

    /* help() and readable values */
    type_at_prompt(&s, "help(moco.zeros)\r");
    CHECK("tty help(function)", expect(&s, "moco.zeros(shape)"), "no signature; output: %s", recent(&s));
    type_at_prompt(&s, "help(tz)\r");
    CHECK("tty help(tensor) names its class", expect(&s, "an instance of moco.Tensor"), "output: %s", recent(&s));
    type_at_prompt(&s, "ds.classes\r");
    CHECK("tty a class list prints as a list", expect(&s, "{\"T-shirt/top\", \"Trouser\""), "output: %s", recent(&s));
    type_at_prompt(&s, "mm = moco.MoCo{arch = 'resnet20', width = 0.25, in_channels = 1, dim = 16, K = 80, bn_splits = 2, lr = 0.05}\r");
    type_at_prompt(&s, "mm\r");
    CHECK("tty a MoCo model prints a summary", expect(&s, "queue      [16, 80] negative keys"), "output: %s", recent(&s));

    /* Ctrl-C inside training: back at the prompt, the interrupted record kept.  An epoch of
     * 500 steps (several seconds) so that the Ctrl-C sent after 1.5 s lands inside epoch 0
     * on a fast machine too (with 125 steps it could come after the epoch had ended). */
    type_at_prompt(&s, "T = moco.transforms; sub = moco.data.Subset(ds, 8000)\r");
    type_at_prompt(&s, "tl = moco.data.Loader(sub, {batch_size = 16, workers = 1, transform = T.TwoCrops(T.Compose{T.RandomResizedCrop(28), T.ToTensor()})})\r");
    type_at_prompt(&s, "tr = moco.train.Trainer(mm, tl, {quiet = true})\r");
    CHECK("tty Trainer refuses an unknown option", expect(&s, "moco.train.Trainer: unknown option 'quiet'"),
          "output: %s", recent(&s));
    type_at_prompt(&s, "tr = moco.train.Trainer(mm, tl)\r");
    type_at_prompt(&s, "tr:run{steps = 3}\r");
    CHECK("tty trainer:run{steps = 3}", expect(&s, "step 3/500"), "output: %s", recent(&s));
    type_at_prompt(&s, "tr:run{epochs = 100}\r");
    pause_reading(&s, 1.5);
    send_text(&s, "\x03");
    CHECK("tty Ctrl-C inside trainer:run stops it", expect(&s, "interrupted!"), "output: %s", recent(&s));
    type_at_prompt(&s, "=#tr.history, tr.history[#tr.history].interrupted, tr.step > 3\r");
    CHECK("tty ... and the trainer keeps the interrupted record", expect(&s, "1\tSIGINT\ttrue\r\n"),
          "output: %s", recent(&s));
    type_at_prompt(&s, "h = tr:run{steps = 2}\r");
    type_at_prompt(&s, "=h[#h].steps == tr.step\r");
    CHECK("tty ... and continues from there", expect(&s, "true\r\n"), "output: %s", recent(&s));
    type_at_prompt(&s, "tl:close(); ld:close()\r");

    type_at_prompt(&s, "local stop = os.clock() + 1.2; while os.clock() < stop do end\r");
    CHECK("tty slow line is timed", expect(&s, " s)"), "no '(N.NN s)' after a slow line; output: %s",
          recent(&s));

    type_at_prompt(&s, "while true do end\r");
    pause_reading(&s, 0.4);
    send_text(&s, "\x03");
    CHECK("tty Ctrl-C interrupts running code", expect(&s, "interrupted!"),
          "no 'interrupted!'; output: %s", recent(&s));
    type_at_prompt(&s, "=5*5+1\r");
    CHECK("tty continues after Ctrl-C", expect(&s, "26\r\n"), "no 26; output: %s", recent(&s));

    type_at_prompt(&s, "xyz");
    pause_reading(&s, 0.2);
    send_text(&s, "\x03");
    type_at_prompt(&s, "7*7+1\r");
    CHECK("tty Ctrl-C at the prompt clears the line", expect(&s, "50\r\n"),
          "no 50 after Ctrl-C on 'xyz'; output: %s", recent(&s));

    type_at_prompt(&s, "function h()\r");
    expect(&s, ">> ");
    wait_for_editor(&s);
    send_text(&s, "\x03");
    type_at_prompt(&s, "8*8+1\r");
    CHECK("tty Ctrl-C cancels an unfinished statement", expect(&s, "65\r\n"),
          "no 65 after Ctrl-C at '>> '; output: %s", recent(&s));

    type_at_prompt(&s, "=#\"\xc3\xa9\xe2\x82\xac\" * 100 + 1\r"); /* "é€": 5 bytes of UTF-8 */
    CHECK("tty UTF-8 input", expect(&s, "501\r\n"), "'#\"é€\"' is not 5 bytes; output: %s",
          recent(&s));

    type_at_prompt(&s, "\x04");
    int gone = wait_exit(&s, STEP_SECONDS);
    CHECK("tty Ctrl-D exits with status 0", gone && exited_with(&s, 0),
          "%s, status 0x%x", gone ? "exited" : "still running", s.status);
    end_session(&s);

    char path[512];
    snprintf(path, sizeof path, "%s/.moco_history", home);
    char *history = read_file(path);
    CHECK("tty history written to ~/.moco_history", history != NULL && strstr(history, "f(21)"),
          "%s", history ? "file lacks 'f(21)'" : "no history file");
    free(history);
}

/* History is optional: an unusable HOME must not disturb the session. */
static void homeless_session(const char *exe, const char *lua_path) {
    Session s;
    if (start_terminal(&s, exe, "/nonexistent/moco-repl-home", lua_path) != 0) return;
    type_at_prompt(&s, "300+33\r");
    int answered = expect(&s, "333\r\n");
    type_at_prompt(&s, "\x04");
    int gone = wait_exit(&s, STEP_SECONDS);
    CHECK("tty without a usable HOME", answered && gone && exited_with(&s, 0) &&
          memmem(s.out, s.len, "istory", 6) == NULL,
          "status 0x%x; output: %s", s.status, recent(&s));
    end_session(&s);
}

static void piped_session(const char *exe, const char *home, const char *lua_path) {
    Session s;
    if (start_piped(&s, exe, home, lua_path) != 0) {
        CHECK("pipe start", 0, "fork/pipe failed: %s", strerror(errno));
        return;
    }
    send_text(&s, "function f(x)\n"
                  "  return x*2\n"
                  "end\n"
                  "f(21)\n"
                  "error(\"bo\"..\"om\")\n"
                  "300+33\n"
                  "=10*10\n"
                  "1, nil, 'three'\n");
    close(s.to_child);
    s.to_child = -1;
    int gone = wait_exit(&s, STEP_SECONDS);
    const char *out = s.out ? s.out : "";
    CHECK("pipe multi-line function", strstr(out, "42\n") != NULL, "output: %s", recent(&s));
    CHECK("pipe error reported", strstr(out, "stdin:1: boom") != NULL, "output: %s", recent(&s));
    const char *after = strstr(out, "boom");
    CHECK("pipe continues after error", after && strstr(after, "333\n") && strstr(after, "100\n"),
          "no 333/100 after the error; output: %s", recent(&s));
    CHECK("pipe prints all values", strstr(out, "1\tnil\tthree\n") != NULL, "output: %s",
          recent(&s));
    CHECK("pipe prints no prompt", strstr(out, "> ") == NULL, "output: %s", recent(&s));
    CHECK("pipe exit status 1 after an error", gone && exited_with(&s, 1), "%s, status 0x%x",
          gone ? "exited" : "still running", s.status);
    end_session(&s);

    if (start_piped(&s, exe, home, lua_path) != 0) return;
    send_text(&s, "x = 1\nx + 1\n");
    close(s.to_child);
    s.to_child = -1;
    gone = wait_exit(&s, STEP_SECONDS);
    CHECK("pipe clean session exits 0", gone && exited_with(&s, 0) && s.out && strstr(s.out, "2\n"),
          "status 0x%x, output: %s", s.status, recent(&s));
    end_session(&s);
}

int main(int argc, char **argv) {
    const char *exe = argc > 1 ? argv[1] : "./moco-lua";
    char home[] = "/tmp/moco-repl-XXXXXX", lua_path[256];
    signal(SIGPIPE, SIG_IGN);
    deadline = now() + OVERALL_SECONDS;
    if (access(exe, X_OK) != 0 || mkdtemp(home) == NULL) {
        CHECK("setup", 0, "%s not executable or no temporary directory", exe);
        CHECK_DONE();
    }
    write_lazy_module(home);
    snprintf(lua_path, sizeof lua_path, "%s/?.lua;%s/?/init.lua", home, home);
    terminal_session(exe, home, lua_path);
    homeless_session(exe, lua_path);
    piped_session(exe, home, lua_path);
    remove_temporary(home);
    CHECK_DONE();
}
