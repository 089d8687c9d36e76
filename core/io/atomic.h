/* core/io/atomic.h: replacing a file so that it is never seen half-written.
 *
 * A checkpoint that is being written when the disk fills up, the process is killed or the
 * machine loses power must not destroy the previous one.  So a file is written under a
 * temporary name in the same directory (".NAME.tmp-XXXXXX", hidden and on the same file
 * system), flushed and fsync'ed, then renamed over NAME (rename(2) is atomic), and the
 * directory is fsync'ed so that the rename itself is durable.  Until the rename, NAME is
 * untouched; after it, NAME is the complete new file.  Any failure removes the temporary
 * file and leaves an error naming NAME, the step that failed and the system's reason.
 *
 * A process killed between the creation of the temporary file and the rename leaves the
 * hidden temporary behind (never NAME damaged); it can be deleted at any time. */
#ifndef MOCO_ATOMIC_H
#define MOCO_ATOMIC_H

#include <stdio.h>

typedef struct AtomicFile {
    FILE *f;          /* write the contents here (buffered stdio) */
    char *path;       /* the final name */
    char *tmp_path;   /* the temporary name; NULL when there is none */
} AtomicFile;

/* Creates the temporary file next to path.  On failure (a read-only or missing directory,
 * no permission) returns -1 with a message and *af is empty. */
int atomic_file_begin(AtomicFile *af, const char *path);

/* fflush + fsync + fclose, rename over path, fsync of the directory.  Returns 0, or -1 with a
 * message (write errors that stdio kept until now, ENOSPC, EIO ...) after removing the
 * temporary file: path is then exactly as it was before atomic_file_begin. */
int atomic_file_commit(AtomicFile *af);

/* Closes and removes the temporary file (after a failed write).  Safe on an empty or
 * committed AtomicFile.  Keeps the current error message. */
void atomic_file_abort(AtomicFile *af);

/* The error message for a failed write to af (errno_value from the failing call):
 * "PATH: cannot write: REASON (the previous PATH, if any, is unchanged)".  Returns -1. */
int atomic_file_write_error(const AtomicFile *af, int errno_value);

/* Copies src to dst atomically (as above): the official code's shutil.copyfile of the best
 * checkpoint, without ever exposing a partial copy. */
int atomic_copy_file(const char *src, const char *dst);

#endif
