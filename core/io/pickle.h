/* core/io/pickle.h: a restricted Python unpickler, and the few pickle writers moco-lua needs.
 *
 * The unpickler is the stack machine of Python's pickle module (protocols 2 to 5, the binary
 * opcodes), run on a region of a file, with three differences that make it safe on files
 * from strangers:
 *  - only the opcodes that plain data needs are accepted (no INST/OBJ/NEWOBJ, no EXT, no
 *    text-mode opcodes, no out-of-band buffers); any other is an error naming it;
 *  - a GLOBAL is never imported: the caller's find_global hook maps "module.name" to one of
 *    its own ids, or refuses it, and REDUCE / BUILD / persistent ids are handed to the
 *    caller's hooks, which build values (torch's tensors) or refuse.  Nothing is executed;
 *  - every size read from the file is checked against the bytes left in the region before
 *    it is used, and the number of objects, the memo and the mark stack are bounded, so a
 *    hostile pickle costs at most memory proportional to its length, never a crash.
 *
 * The result is a graph of PickleValue nodes (shared where the pickle shares, through its
 * memo; a pickle can even make a list that contains itself), owned by the Unpickler and freed
 * with it in one call.  Code that walks it recursively must bound its depth
 * (PICKLE_MAX_DEPTH) and remember the nodes it has seen. */
#ifndef MOCO_PICKLE_H
#define MOCO_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Bounds on one pickle (a state dict of a ResNet-50 MoCo checkpoint needs ~25 000 objects). */
#define PICKLE_MAX_OBJECTS (1 << 21)
/* Opcodes run in one pickle (each adds at most one object or one reference). */
#define PICKLE_MAX_OPS (1 << 23)
#define PICKLE_MAX_MARKS (1 << 16)
/* Nesting that a recursive walk of the result may follow before it calls the file hostile. */
#define PICKLE_MAX_DEPTH 200

typedef enum {
    PICKLE_NONE,
    PICKLE_BOOL,    /* u.integer 0 or 1 */
    PICKLE_INT,     /* u.integer; ints beyond 64 bits are an error */
    PICKLE_FLOAT,   /* u.real */
    PICKLE_STRING,  /* u.str, UTF-8 as in the file (Python 2 strings are kept as bytes) */
    PICKLE_BYTES,   /* u.str */
    PICKLE_TUPLE,   /* u.seq */
    PICKLE_LIST,    /* u.seq */
    PICKLE_DICT,    /* u.seq: key0, value0, key1, value1 ... in insertion order; a key may repeat
                       (the later value wins, as in Python) */
    PICKLE_GLOBAL,  /* u.global: the caller's id for an allowed module.name */
    PICKLE_OBJECT,  /* u.object: a value built by the caller's hooks */
} PickleKind;

#define PICKLE_ORDERED 1 /* flags of a PICKLE_DICT made by collections.OrderedDict */

typedef struct PickleValue PickleValue;
struct PickleValue {
    PickleKind kind;
    int flags;
    union {
        int64_t integer;
        double real;
        struct {
            char *data; /* NUL-terminated, len bytes (may contain NULs) */
            size_t len;
        } str;
        struct {
            PickleValue **items;
            size_t len, cap;
        } seq;
        int global;
        struct {
            int type;
            void *ptr;
        } object;
    } u;
    PickleValue *next_allocated;
};

typedef struct Unpickler Unpickler;

/* What the caller allows.  Each hook returns NULL / -1 with a moco_error message to refuse. */
typedef struct PickleHooks {
    void *ctx;
    /* GLOBAL module name: an id >= 0, or -1 (the message should name module.name). */
    int (*find_global)(void *ctx, const char *module, const char *name);
    /* BINPERSID with the persistent id pid (any value). */
    PickleValue *(*persistent_load)(void *ctx, Unpickler *u, PickleValue *pid);
    /* REDUCE: callable is a PICKLE_GLOBAL of an allowed id, args a PICKLE_TUPLE. */
    PickleValue *(*reduce)(void *ctx, Unpickler *u, PickleValue *callable, PickleValue *args);
    /* BUILD: obj.__setstate__(state) */
    int (*build)(void *ctx, Unpickler *u, PickleValue *obj, PickleValue *state);
} PickleHooks;

/* An unpickler for the bytes [start, end) of f (which it does not own).  NULL when out of
 * memory.  Free it (and every value it made) with unpickler_free. */
Unpickler *unpickler_new(FILE *f, uint64_t start, uint64_t end, const PickleHooks *hooks);
void unpickler_free(Unpickler *u);

/* Runs the machine up to STOP and returns the pickled object; *stop_offset (when not NULL) is
 * the file offset just after STOP, where a following pickle starts.  NULL with a message
 * ("pickle byte N: ...") on any error. */
PickleValue *unpickler_load(Unpickler *u, uint64_t *stop_offset);

/* For hooks: a new node of the unpickler (counted against PICKLE_MAX_OBJECTS), and memory
 * that lives as long as the unpickler.  NULL with a message. */
PickleValue *pickle_new_value(Unpickler *u, PickleKind kind);
void *pickle_alloc(Unpickler *u, size_t size);

/* "None", "int", "tuple" ... for messages. */
const char *pickle_kind_name(PickleKind kind);

/* The value of a string-keyed entry of a PICKLE_DICT (the last one when a key repeats), or
 * NULL. */
PickleValue *pickle_dict_get(const PickleValue *dict, const char *key);

/* ---- writing: a growable byte buffer and the opcodes of protocols 2 and 4 ---- */

typedef struct PickleBuffer {
    unsigned char *data;
    size_t len, cap;
    int failed; /* set when out of memory; every later write is ignored */
} PickleBuffer;

void pickle_put_bytes(PickleBuffer *b, const void *bytes, size_t n);
void pickle_put_byte(PickleBuffer *b, int byte);
void pickle_put_le(PickleBuffer *b, uint64_t value, int nbytes);
void pickle_buffer_free(PickleBuffer *b);

#endif
