/* core/io/file.h: opening files that come from outside, for every reader in libmoco.
 *
 * A reader must never block on, or endlessly read, something that is not a file: a FIFO
 * named "x.jpg" blocks open() until a writer appears (and ignores Ctrl-C meanwhile), a
 * character device such as /dev/zero never ends.  So every reader opens through here: the
 * path is opened with O_NONBLOCK (which makes open() of a FIFO return at once), checked
 * with fstat to be a regular file, and only then read.  Errors name the path and say what
 * it is instead ("a FIFO", "a directory", ...). */
#ifndef MOCO_IO_FILE_H
#define MOCO_IO_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A read-only descriptor of the regular file at path, or -1 with a message.  *size (may
 * be NULL) receives its length in bytes.  The descriptor is blocking again on return. */
int file_open_regular(const char *path, int64_t *size);

/* The same as a stdio stream ("rb"). */
FILE *file_fopen_regular(const char *path, int64_t *size);

/* The whole regular file at path in a malloc'ed buffer (never NULL for an empty file), or
 * NULL with a message when it is larger than max_bytes or cannot be read. */
uint8_t *file_read_all(const char *path, size_t max_bytes, size_t *size);

#endif
