/* core/error.c: thread-local error messages (see error.h). */
#include "error.h"

#include <stdio.h>
#include <string.h>

#define MOCO_ERROR_SIZE 1024

static _Thread_local char error_message[MOCO_ERROR_SIZE];

volatile int moco_interrupt_requested = 0;

int moco_verror(const char *fmt, va_list ap) {
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    return -1;
}

int moco_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    moco_verror(fmt, ap);
    va_end(ap);
    return -1;
}

const char *moco_last_error(void) { return error_message; }

int moco_error_prefix(const char *fmt, ...) {
    char prefix[MOCO_ERROR_SIZE / 2], old[MOCO_ERROR_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    /* Keep the prefix (the file name, usually) and as much of the message as fits. */
    size_t n = strlen(prefix);
    memcpy(error_message, prefix, n);
    size_t room = sizeof error_message - n - 1;
    size_t m = strlen(old);
    if (m > room) m = room;
    memcpy(error_message + n, old, m);
    error_message[n + m] = 0;
    return -1;
}
