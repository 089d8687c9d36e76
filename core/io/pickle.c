/* core/io/pickle.c: the restricted unpickler and the pickle byte writers (see pickle.h).
 *
 * The machine follows CPython's Lib/pickle.py: a stack, a stack of marks (each the height of
 * the stack when MARK ran: the items above the top mark are the "current frame"), and a
 * memo.  Only binary opcodes for plain data are implemented; everything that would make
 * CPython import or call something is either delegated to the caller's hooks (GLOBAL,
 * STACK_GLOBAL, REDUCE, BUILD, BINPERSID) or refused by name. */
#include "io/pickle.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define READ_BUFFER 65536
#define MAX_GLOBAL_NAME 256

typedef struct Block {
    struct Block *next;
    max_align_t data[];
} Block;

struct Unpickler {
    FILE *f;
    uint64_t start, end;      /* the region */
    uint64_t pos;             /* file offset of the next byte */
    unsigned char *buf;       /* bytes [buf_start, buf_start + buf_len) of the file */
    uint64_t buf_start;
    size_t buf_len;
    PickleHooks hooks;

    PickleValue **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t mark_count, marks_cap;
    PickleValue **memo;
    size_t memo_cap, memo_count;
    size_t memo_limit;

    PickleValue *values;      /* every node, for unpickler_free */
    size_t value_count;
    Block *blocks;
    uint64_t ops;
    uint64_t op_offset;       /* file offset of the opcode being run, for messages */
};

/* ------------------------------------------------------------ names */

const char *pickle_kind_name(PickleKind kind) {
    static const char *const names[] = {"None", "bool", "int", "float", "str", "bytes", "tuple",
                                        "list", "dict", "global", "object"};
    return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

/* The opcodes pickle.py knows, by byte, for the message that refuses one. */
static const char *opcode_name(int op) {
    switch (op) {
    case 'I': return "INT (text mode)";
    case 'L': return "LONG (text mode)";
    case 'F': return "FLOAT (text mode)";
    case 'S': return "STRING (text mode)";
    case 'V': return "UNICODE (text mode)";
    case 'g': return "GET (text mode)";
    case 'p': return "PUT (text mode)";
    case 'P': return "PERSID (text mode)";
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

/* ------------------------------------------------------------ errors */

static int fail(Unpickler *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Unpickler *u, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    moco_verror(fmt, ap);
    va_end(ap);
    return moco_error_prefix("pickle byte %llu: ", (unsigned long long)(u->op_offset - u->start));
}

/* ------------------------------------------------------------ memory */

Unpickler *unpickler_new(FILE *f, uint64_t start, uint64_t end, const PickleHooks *hooks) {
    Unpickler *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->buf = malloc(READ_BUFFER);
    if (!u->buf) {
        free(u);
        return NULL;
    }
    u->f = f;
    u->start = u->pos = u->op_offset = start;
    u->end = end < start ? start : end;
    u->buf_start = start;
    u->hooks = *hooks;
    /* A memo index is written by at least two bytes of the pickle, so no valid pickle has
     * one beyond its length: a larger one cannot make us allocate. */
    uint64_t length = u->end - u->start;
    u->memo_limit = length < PICKLE_MAX_OBJECTS ? (size_t)length : PICKLE_MAX_OBJECTS;
    return u;
}

void unpickler_free(Unpickler *u) {
    if (!u) return;
    PickleValue *v = u->values;
    while (v) {
        PickleValue *next = v->next_allocated;
        if (v->kind == PICKLE_STRING || v->kind == PICKLE_BYTES) free(v->u.str.data);
        if (v->kind == PICKLE_TUPLE || v->kind == PICKLE_LIST || v->kind == PICKLE_DICT) free(v->u.seq.items);
        free(v);
        v = next;
    }
    Block *b = u->blocks;
    while (b) {
        Block *next = b->next;
        free(b);
        b = next;
    }
    free(u->stack);
    free(u->marks);
    free(u->memo);
    free(u->buf);
    free(u);
}

PickleValue *pickle_new_value(Unpickler *u, PickleKind kind) {
    if (u->value_count >= PICKLE_MAX_OBJECTS) {
        fail(u, "more than %d objects: not a state dict (a hostile file?)", PICKLE_MAX_OBJECTS);
        return NULL;
    }
    PickleValue *v = calloc(1, sizeof *v);
    if (!v) {
        fail(u, "out of memory");
        return NULL;
    }
    v->kind = kind;
    v->next_allocated = u->values;
    u->values = v;
    u->value_count++;
    return v;
}

void *pickle_alloc(Unpickler *u, size_t size) {
    Block *b = malloc(sizeof *b + (size ? size : 1));
    if (!b) {
        fail(u, "out of memory");
        return NULL;
    }
    b->next = u->blocks;
    u->blocks = b;
    return b->data;
}

/* Appends item to a tuple, list or dict's item array. */
static int seq_push(Unpickler *u, PickleValue *seq, PickleValue *item) {
    if (seq->u.seq.len == seq->u.seq.cap) {
        size_t cap = seq->u.seq.cap ? 2 * seq->u.seq.cap : 4;
        PickleValue **items = realloc(seq->u.seq.items, cap * sizeof *items);
        if (!items) return fail(u, "out of memory");
        seq->u.seq.items = items;
        seq->u.seq.cap = cap;
    }
    seq->u.seq.items[seq->u.seq.len++] = item;
    return 0;
}

PickleValue *pickle_dict_get(const PickleValue *dict, const char *key) {
    if (!dict || dict->kind != PICKLE_DICT) return NULL;
    size_t n = strlen(key);
    for (size_t i = dict->u.seq.len; i >= 2; i -= 2) {
        const PickleValue *k = dict->u.seq.items[i - 2];
        if (k->kind == PICKLE_STRING && k->u.str.len == n && !memcmp(k->u.str.data, key, n))
            return dict->u.seq.items[i - 1];
    }
    return NULL;
}

/* ------------------------------------------------------------ reading bytes */

static int read_bytes(Unpickler *u, void *out, uint64_t n) {
    if (n > u->end - u->pos) {
        return fail(u, "truncated: %llu more bytes needed, %llu left (the file ends too early)",
                    (unsigned long long)n, (unsigned long long)(u->end - u->pos));
    }
    unsigned char *dst = out;
    while (n > 0) {
        if (u->pos >= u->buf_start && u->pos < u->buf_start + u->buf_len) {
            size_t off = (size_t)(u->pos - u->buf_start);
            size_t take = u->buf_len - off;
            if (take > n) take = (size_t)n;
            memcpy(dst, u->buf + off, take);
            dst += take;
            u->pos += take;
            n -= take;
            continue;
        }
        if (n >= READ_BUFFER) { /* a long string: straight into its memory */
            if (fseeko(u->f, (off_t)u->pos, SEEK_SET) != 0 || fread(dst, 1, (size_t)n, u->f) != n)
                return fail(u, "cannot read: %s", ferror(u->f) ? strerror(errno) : "the file ends too early");
            u->pos += n;
            return 0;
        }
        uint64_t want = u->end - u->pos;
        if (want > READ_BUFFER) want = READ_BUFFER;
        if (fseeko(u->f, (off_t)u->pos, SEEK_SET) != 0) return fail(u, "cannot seek: %s", strerror(errno));
        size_t got = fread(u->buf, 1, (size_t)want, u->f);
        if (got == 0) return fail(u, "cannot read: %s", ferror(u->f) ? strerror(errno) : "the file ends too early");
        u->buf_start = u->pos;
        u->buf_len = got;
    }
    return 0;
}

static int read_u8(Unpickler *u, unsigned *v) {
    unsigned char b;
    if (read_bytes(u, &b, 1)) return -1;
    *v = b;
    return 0;
}

static int read_le(Unpickler *u, int nbytes, uint64_t *v) {
    unsigned char b[8];
    if (read_bytes(u, b, (uint64_t)nbytes)) return -1;
    uint64_t x = 0;
    for (int i = nbytes - 1; i >= 0; i--) x = x << 8 | b[i];
    *v = x;
    return 0;
}

/* A text line of GLOBAL ("module\n"), at most MAX_GLOBAL_NAME bytes. */
static int read_line(Unpickler *u, char *out) {
    for (int i = 0; i < MAX_GLOBAL_NAME; i++) {
        unsigned c;
        if (read_u8(u, &c)) return -1;
        if (c == '\n') {
            out[i] = 0;
            return 0;
        }
        out[i] = (char)c;
    }
    return fail(u, "GLOBAL name longer than %d bytes", MAX_GLOBAL_NAME);
}

/* ------------------------------------------------------------ the stack */

static int push(Unpickler *u, PickleValue *v) {
    if (!v) return -1;
    if (u->sp == u->stack_cap) {
        size_t cap = u->stack_cap ? 2 * u->stack_cap : 64;
        PickleValue **s = realloc(u->stack, cap * sizeof *s);
        if (!s) return fail(u, "out of memory");
        u->stack = s;
        u->stack_cap = cap;
    }
    u->stack[u->sp++] = v;
    return 0;
}

/* The height of the current frame's bottom (the top mark, or 0). */
static size_t frame_bottom(const Unpickler *u) { return u->mark_count ? u->marks[u->mark_count - 1] : 0; }

static PickleValue *pop(Unpickler *u) {
    if (u->sp <= frame_bottom(u)) {
        fail(u, "stack underflow (a malformed pickle)");
        return NULL;
    }
    return u->stack[--u->sp];
}

static PickleValue *top(Unpickler *u) {
    if (u->sp <= frame_bottom(u)) {
        fail(u, "stack underflow (a malformed pickle)");
        return NULL;
    }
    return u->stack[u->sp - 1];
}

/* Removes the top mark; *items and *count are the frame above it (still in the stack array,
 * valid until the next push). */
static int pop_mark(Unpickler *u, PickleValue ***items, size_t *count) {
    if (!u->mark_count) return fail(u, "MARK expected (a malformed pickle)");
    size_t bottom = u->marks[--u->mark_count];
    *items = u->stack + bottom;
    *count = u->sp - bottom;
    u->sp = bottom;
    return 0;
}

static PickleValue *new_int(Unpickler *u, PickleKind kind, int64_t v) {
    PickleValue *x = pickle_new_value(u, kind);
    if (x) x->u.integer = v;
    return x;
}

static PickleValue *new_string(Unpickler *u, PickleKind kind, uint64_t len) {
    if (len > u->end - u->pos) {
        fail(u, "a %s of %llu bytes, but only %llu bytes are left (a truncated or corrupt file)",
             pickle_kind_name(kind), (unsigned long long)len, (unsigned long long)(u->end - u->pos));
        return NULL;
    }
    PickleValue *x = pickle_new_value(u, kind);
    if (!x) return NULL;
    x->u.str.data = malloc((size_t)len + 1);
    if (!x->u.str.data) {
        x->kind = PICKLE_NONE;
        fail(u, "out of memory");
        return NULL;
    }
    x->u.str.len = (size_t)len;
    x->u.str.data[len] = 0;
    if (read_bytes(u, x->u.str.data, len)) return NULL;
    return x;
}

static PickleValue *new_seq(Unpickler *u, PickleKind kind, PickleValue **items, size_t count) {
    PickleValue *x = pickle_new_value(u, kind);
    if (!x || count == 0) return x;
    x->u.seq.items = malloc(count * sizeof *items);
    if (!x->u.seq.items) {
        fail(u, "out of memory");
        return NULL;
    }
    memcpy(x->u.seq.items, items, count * sizeof *items);
    x->u.seq.len = x->u.seq.cap = count;
    return x;
}

/* LONG1 / LONG4: n bytes of little-endian two's complement. */
static PickleValue *load_long(Unpickler *u, uint64_t n) {
    if (n > 8) {
        fail(u, "an integer of %llu bytes: larger than 64 bits", (unsigned long long)n);
        return NULL;
    }
    uint64_t v = 0;
    if (n && read_le(u, (int)n, &v)) return NULL;
    if (n && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    return new_int(u, PICKLE_INT, (int64_t)v);
}

static int memo_put(Unpickler *u, uint64_t index) {
    PickleValue *v = top(u);
    if (!v) return -1;
    if (index >= u->memo_limit)
        return fail(u, "memo index %llu beyond what a pickle of this length can use", (unsigned long long)index);
    if (index >= u->memo_cap) {
        size_t cap = u->memo_cap ? u->memo_cap : 64;
        while (cap <= index) cap *= 2;
        if (cap > u->memo_limit) cap = u->memo_limit;
        PickleValue **m = realloc(u->memo, cap * sizeof *m);
        if (!m) return fail(u, "out of memory");
        memset(m + u->memo_cap, 0, (cap - u->memo_cap) * sizeof *m);
        u->memo = m;
        u->memo_cap = cap;
    }
    if (!u->memo[index]) u->memo_count++;
    u->memo[index] = v;
    return 0;
}

static int memo_get(Unpickler *u, uint64_t index) {
    if (index >= u->memo_cap || !u->memo[index])
        return fail(u, "memo index %llu was never stored (a malformed pickle)", (unsigned long long)index);
    return push(u, u->memo[index]);
}

static int global(Unpickler *u, const char *module, const char *name) {
    int id = u->hooks.find_global(u->hooks.ctx, module, name);
    if (id < 0) return moco_error_prefix("pickle byte %llu: ", (unsigned long long)(u->op_offset - u->start));
    PickleValue *g = pickle_new_value(u, PICKLE_GLOBAL);
    if (!g) return -1;
    g->u.global = id;
    return push(u, g);
}

static int hook_failed(Unpickler *u) {
    return moco_error_prefix("pickle byte %llu: ", (unsigned long long)(u->op_offset - u->start));
}

/* ------------------------------------------------------------ the machine */

PickleValue *unpickler_load(Unpickler *u, uint64_t *stop_offset) {
    for (;;) {
        u->op_offset = u->pos;
        if (++u->ops > PICKLE_MAX_OPS) {
            fail(u, "more than %d opcodes: not a state dict (a hostile file?)", PICKLE_MAX_OPS);
            return NULL;
        }
        unsigned op;
        if (read_u8(u, &op)) return NULL;
        uint64_t n;
        unsigned b;
        PickleValue *x, *y, *z, **items = NULL;
        size_t count = 0;
        int status = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if (read_u8(u, &b)) return NULL;
            if (b > 5) {
                fail(u, "pickle protocol %u is newer than 5", b);
                return NULL;
            }
            break;
        case 0x95: /* FRAME: a length hint; the bytes follow as usual */
            if (read_le(u, 8, &n)) return NULL;
            if (n > u->end - u->pos) {
                fail(u, "FRAME of %llu bytes, but only %llu are left", (unsigned long long)n,
                     (unsigned long long)(u->end - u->pos));
                return NULL;
            }
            break;
        case '.': /* STOP */
            x = pop(u);
            if (!x) return NULL;
            if (stop_offset) *stop_offset = u->pos;
            return x;
        case '(': /* MARK */
            if (u->mark_count >= PICKLE_MAX_MARKS) {
                fail(u, "more than %d nested MARKs (a hostile file?)", PICKLE_MAX_MARKS);
                return NULL;
            }
            if (u->mark_count == u->marks_cap) {
                size_t cap = u->marks_cap ? 2 * u->marks_cap : 16;
                size_t *m = realloc(u->marks, cap * sizeof *m);
                if (!m) {
                    fail(u, "out of memory");
                    return NULL;
                }
                u->marks = m;
                u->marks_cap = cap;
            }
            u->marks[u->mark_count++] = u->sp;
            break;
        case '0': /* POP: the top item, or the mark when the frame is empty */
            if (u->sp > frame_bottom(u)) u->sp--;
            else status = pop_mark(u, &items, &count);
            break;
        case '1': /* POP_MARK */
            status = pop_mark(u, &items, &count);
            break;
        case '2': /* DUP */
            x = top(u);
            status = x ? push(u, x) : -1;
            break;
        case 'N':
            status = push(u, pickle_new_value(u, PICKLE_NONE));
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            status = push(u, new_int(u, PICKLE_BOOL, op == 0x88));
            break;
        case 'J': /* BININT: signed 32-bit */
            if (read_le(u, 4, &n)) return NULL;
            status = push(u, new_int(u, PICKLE_INT, (int32_t)(uint32_t)n));
            break;
        case 'K': /* BININT1 */
            if (read_le(u, 1, &n)) return NULL;
            status = push(u, new_int(u, PICKLE_INT, (int64_t)n));
            break;
        case 'M': /* BININT2 */
            if (read_le(u, 2, &n)) return NULL;
            status = push(u, new_int(u, PICKLE_INT, (int64_t)n));
            break;
        case 0x8a: /* LONG1 */
            if (read_le(u, 1, &n)) return NULL;
            status = push(u, load_long(u, n));
            break;
        case 0x8b: /* LONG4 */
            if (read_le(u, 4, &n)) return NULL;
            status = push(u, load_long(u, n));
            break;
        case 'G': { /* BINFLOAT: big-endian IEEE 754 double */
            unsigned char d[8];
            if (read_bytes(u, d, 8)) return NULL;
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | d[i];
            x = pickle_new_value(u, PICKLE_FLOAT);
            if (x) memcpy(&x->u.real, &bits, sizeof bits);
            status = push(u, x);
            break;
        }
        case 'U': /* SHORT_BINSTRING (Python 2 str) */
        case 'C': /* SHORT_BINBYTES */
        case 0x8c: /* SHORT_BINUNICODE */
            if (read_le(u, 1, &n)) return NULL;
            status = push(u, new_string(u, op == 'C' ? PICKLE_BYTES : PICKLE_STRING, n));
            break;
        case 'T': /* BINSTRING */
        case 'B': /* BINBYTES */
        case 'X': /* BINUNICODE */
            if (read_le(u, 4, &n)) return NULL;
            status = push(u, new_string(u, op == 'B' ? PICKLE_BYTES : PICKLE_STRING, n));
            break;
        case 0x8d: /* BINUNICODE8 */
        case 0x8e: /* BINBYTES8 */
            if (read_le(u, 8, &n)) return NULL;
            status = push(u, new_string(u, op == 0x8e ? PICKLE_BYTES : PICKLE_STRING, n));
            break;
        case ')': /* EMPTY_TUPLE */
            status = push(u, pickle_new_value(u, PICKLE_TUPLE));
            break;
        case ']': /* EMPTY_LIST */
            status = push(u, pickle_new_value(u, PICKLE_LIST));
            break;
        case '}': /* EMPTY_DICT */
            status = push(u, pickle_new_value(u, PICKLE_DICT));
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: /* TUPLE3 */
            count = op - 0x84;
            if (u->sp < frame_bottom(u) + count) {
                fail(u, "TUPLE%zu with fewer items on the stack (a malformed pickle)", count);
                return NULL;
            }
            u->sp -= count;
            /* new_seq copies the items before push can move the stack */
            x = new_seq(u, PICKLE_TUPLE, u->stack + u->sp, count);
            status = push(u, x);
            break;
        case 't': /* TUPLE */
        case 'l': /* LIST */
        case 'd': /* DICT */
            if (pop_mark(u, &items, &count)) return NULL;
            if (op == 'd' && count % 2) {
                fail(u, "DICT with an odd number of items");
                return NULL;
            }
            x = new_seq(u, op == 't' ? PICKLE_TUPLE : op == 'l' ? PICKLE_LIST : PICKLE_DICT, items, count);
            status = push(u, x);
            break;
        case 'a': /* APPEND */
            if (!(y = pop(u)) || !(x = top(u))) return NULL;
            if (x->kind != PICKLE_LIST) {
                fail(u, "APPEND to a %s (only lists are allowed)", pickle_kind_name(x->kind));
                return NULL;
            }
            status = seq_push(u, x, y);
            break;
        case 'e': /* APPENDS */
            if (pop_mark(u, &items, &count) || !(x = top(u))) return NULL;
            if (x->kind != PICKLE_LIST) {
                fail(u, "APPENDS to a %s (only lists are allowed)", pickle_kind_name(x->kind));
                return NULL;
            }
            for (size_t i = 0; i < count && !status; i++) status = seq_push(u, x, items[i]);
            break;
        case 's': /* SETITEM */
            if (!(z = pop(u)) || !(y = pop(u)) || !(x = top(u))) return NULL;
            if (x->kind != PICKLE_DICT) {
                fail(u, "SETITEM on a %s (only dicts are allowed)", pickle_kind_name(x->kind));
                return NULL;
            }
            status = seq_push(u, x, y);
            if (!status) status = seq_push(u, x, z);
            break;
        case 'u': /* SETITEMS */
            if (pop_mark(u, &items, &count) || !(x = top(u))) return NULL;
            if (x->kind != PICKLE_DICT) {
                fail(u, "SETITEMS on a %s (only dicts are allowed)", pickle_kind_name(x->kind));
                return NULL;
            }
            if (count % 2) {
                fail(u, "SETITEMS with an odd number of items");
                return NULL;
            }
            for (size_t i = 0; i < count && !status; i++) status = seq_push(u, x, items[i]);
            break;
        case 'q': /* BINPUT */
            if (read_le(u, 1, &n)) return NULL;
            status = memo_put(u, n);
            break;
        case 'r': /* LONG_BINPUT */
            if (read_le(u, 4, &n)) return NULL;
            status = memo_put(u, n);
            break;
        case 0x94: /* MEMOIZE */
            status = memo_put(u, u->memo_count);
            break;
        case 'h': /* BINGET */
            if (read_le(u, 1, &n)) return NULL;
            status = memo_get(u, n);
            break;
        case 'j': /* LONG_BINGET */
            if (read_le(u, 4, &n)) return NULL;
            status = memo_get(u, n);
            break;
        case 'c': { /* GLOBAL module\nname\n */
            char module[MAX_GLOBAL_NAME], name[MAX_GLOBAL_NAME];
            if (read_line(u, module) || read_line(u, name)) return NULL;
            status = global(u, module, name);
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(y = pop(u)) || !(x = pop(u))) return NULL;
            if (x->kind != PICKLE_STRING || y->kind != PICKLE_STRING || x->u.str.len >= MAX_GLOBAL_NAME ||
                y->u.str.len >= MAX_GLOBAL_NAME || strlen(x->u.str.data) != x->u.str.len ||
                strlen(y->u.str.data) != y->u.str.len) {
                fail(u, "STACK_GLOBAL needs two short strings, got a %s and a %s", pickle_kind_name(x->kind),
                     pickle_kind_name(y->kind));
                return NULL;
            }
            status = global(u, x->u.str.data, y->u.str.data);
            break;
        case 'R': /* REDUCE: callable(*args) -- only through the caller's hook */
            if (!(y = pop(u)) || !(x = top(u))) return NULL;
            if (x->kind != PICKLE_GLOBAL) {
                fail(u, "REDUCE of a %s: only allowed globals may be called", pickle_kind_name(x->kind));
                return NULL;
            }
            if (y->kind != PICKLE_TUPLE) {
                fail(u, "REDUCE with %s arguments (a tuple expected)", pickle_kind_name(y->kind));
                return NULL;
            }
            z = u->hooks.reduce(u->hooks.ctx, u, x, y);
            if (!z) {
                hook_failed(u);
                return NULL;
            }
            u->stack[u->sp - 1] = z;
            break;
        case 'b': /* BUILD */
            if (!(y = pop(u)) || !(x = top(u))) return NULL;
            if (u->hooks.build(u->hooks.ctx, u, x, y)) {
                hook_failed(u);
                return NULL;
            }
            break;
        case 'Q': /* BINPERSID */
            if (!(x = pop(u))) return NULL;
            y = u->hooks.persistent_load(u->hooks.ctx, u, x);
            if (!y) {
                hook_failed(u);
                return NULL;
            }
            status = push(u, y);
            break;
        default: {
            const char *name = opcode_name((int)op);
            if (name) fail(u, "opcode %s is not allowed (only plain data and tensors can be read)", name);
            else fail(u, "unknown opcode 0x%02x (not a pickle, or a corrupt one)", op);
            return NULL;
        }
        }
        if (status) return NULL;
    }
}

/* ------------------------------------------------------------ writing */

void pickle_put_bytes(PickleBuffer *b, const void *bytes, size_t n) {
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

void pickle_put_byte(PickleBuffer *b, int byte) {
    unsigned char c = (unsigned char)byte;
    pickle_put_bytes(b, &c, 1);
}

void pickle_put_le(PickleBuffer *b, uint64_t value, int nbytes) {
    unsigned char d[8];
    for (int i = 0; i < nbytes; i++) d[i] = (unsigned char)(value >> (8 * i));
    pickle_put_bytes(b, d, (size_t)nbytes);
}

void pickle_buffer_free(PickleBuffer *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}
