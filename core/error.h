/* core/error.h: how libmoco reports failure.
 *
 * Every fallible function returns a status (0 ok, -1 error) or NULL, and leaves a
 * message in a thread-local buffer.  The Lua binding turns it into a Lua error; C
 * callers print it.  Library code never exits or aborts on bad input. */
#ifndef MOCO_ERROR_H
#define MOCO_ERROR_H

#include <stdarg.h>

/* Set the message for the current thread; always returns -1 so that
 * `return moco_error(...)` reads naturally. printf-style. */
int moco_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int moco_verror(const char *fmt, va_list ap);

/* The last message set on this thread ("" if none). */
const char *moco_last_error(void);

/* Prefix the current message with context, e.g. the file name:
 * "x.npy: " + "bad magic".  Returns -1. */
int moco_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Set by a SIGINT handler (the REPL's) and polled by long-running C loops, which
 * stop early and report "interrupted" instead of blocking Ctrl-C for minutes. */
extern volatile int moco_interrupt_requested;

#endif
