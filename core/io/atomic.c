/* core/io/atomic.c: atomic file replacement (see atomic.h). */
#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

/* The directory part of path ("." when there is none), newly allocated. */
static char *directory_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    size_t n = (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (dir) {
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    return dir;
}

int atomic_file_write_error(const AtomicFile *af, int errno_value) {
    return moco_error("%s: cannot write: %s (the previous %s, if any, is unchanged)", af->path,
                      strerror(errno_value), af->path);
}

int atomic_file_begin(AtomicFile *af, const char *path) {
    memset(af, 0, sizeof *af);
    if (!path || !path[0]) return moco_error("atomic write: empty file name");
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!base[0]) return moco_error("%s: is a directory name, expected a file name", path);
    size_t dir_len = (size_t)(base - path);
    size_t n = dir_len + strlen(base) + 16;
    af->path = strdup(path);
    af->tmp_path = malloc(n);
    if (!af->path || !af->tmp_path) {
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return moco_error("%s: out of memory", path);
    }
    snprintf(af->tmp_path, n, "%.*s.%s.tmp-XXXXXX", (int)dir_len, path, base);
    int fd = mkstemp(af->tmp_path);
    if (fd < 0) {
        int e = errno;
        char *dir = directory_of(path);
        moco_error("%s: cannot create a file in %s: %s (the previous %s, if any, is unchanged)", path,
                   dir ? dir : "its directory", strerror(e), path);
        free(dir);
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return -1;
    }
    /* mkstemp makes the file 0600; give it the mode a plain fopen would (0666 less the
     * umask).  umask() can only be read by setting it, so it is set back at once. */
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask); /* a failure only leaves the file private: not fatal */
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        int e = errno;
        close(fd);
        unlink(af->tmp_path);
        moco_error("%s: cannot open a stream: %s", path, strerror(e));
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return -1;
    }
    return 0;
}

void atomic_file_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

int atomic_file_commit(AtomicFile *af) {
    if (!af->f) return moco_error("atomic write: no file is open");
    /* Errors of earlier buffered writes surface here (ENOSPC, EDQUOT, EIO, EFBIG). */
    if (fflush(af->f) != 0 || ferror(af->f)) {
        int e = errno ? errno : EIO;
        atomic_file_write_error(af, e);
        atomic_file_abort(af);
        return -1;
    }
    if (fsync(fileno(af->f)) != 0) {
        int e = errno;
        atomic_file_write_error(af, e);
        atomic_file_abort(af);
        return -1;
    }
    FILE *f = af->f;
    af->f = NULL;
    if (fclose(f) != 0) {
        int e = errno;
        atomic_file_write_error(af, e);
        atomic_file_abort(af);
        return -1;
    }
    if (rename(af->tmp_path, af->path) != 0) {
        int e = errno;
        moco_error("%s: cannot rename the new file into place: %s (the previous %s, if any, is unchanged)",
                   af->path, strerror(e), af->path);
        atomic_file_abort(af);
        return -1;
    }
    free(af->tmp_path);
    af->tmp_path = NULL; /* renamed: nothing to remove any more */
    /* Make the rename durable.  The new file is in place whatever happens here, so there is
     * nothing to undo; file systems that cannot sync a directory (EINVAL) are fine. */
    int status = 0;
    char *dir = directory_of(af->path);
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY) : -1;
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL && errno != EROFS)
            status = moco_error("%s: written, but syncing directory %s failed: %s", af->path, dir, strerror(errno));
        close(dfd);
    }
    free(dir);
    free(af->path);
    memset(af, 0, sizeof *af);
    return status;
}

int atomic_copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb");
    if (!in) return moco_error("%s: cannot open: %s", src, strerror(errno));
    AtomicFile af;
    if (atomic_file_begin(&af, dst)) {
        fclose(in);
        return -1;
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, af.f) != n) {
            atomic_file_write_error(&af, errno);
            atomic_file_abort(&af);
            fclose(in);
            return -1;
        }
    }
    int read_failed = ferror(in);
    fclose(in);
    if (read_failed) {
        moco_error("%s: read error while copying to %s", src, dst);
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}
