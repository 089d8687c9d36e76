/* core/io/file.c: opening outside files without blocking on FIFOs or devices (file.h). */
#define _GNU_SOURCE
#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

static const char *file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "not a plain file";
}

int file_open_regular(const char *path, int64_t *size) {
    int fd;
    do {
        fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return moco_error("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return moco_error("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return moco_error("%s: not a regular file (%s), refusing to read it", path, file_kind(st.st_mode));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    if (size) *size = (int64_t)st.st_size;
    return fd;
}

FILE *file_fopen_regular(const char *path, int64_t *size) {
    int fd = file_open_regular(path, size);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        moco_error("%s: cannot open a stream: %s", path, strerror(e));
    }
    return f;
}

uint8_t *file_read_all(const char *path, size_t max_bytes, size_t *size) {
    *size = 0;
    int64_t length;
    int fd = file_open_regular(path, &length);
    if (fd < 0) return NULL;
    if ((uint64_t)length > max_bytes) {
        close(fd);
        moco_error("%s: file of %lld bytes is larger than the %zu bytes this reader accepts", path,
                   (long long)length, max_bytes);
        return NULL;
    }
    uint8_t *buf = malloc(length > 0 ? (size_t)length : 1);
    if (!buf) {
        close(fd);
        moco_error("%s: out of memory for %lld bytes", path, (long long)length);
        return NULL;
    }
    /* Read what fstat announced; a file that shrinks meanwhile gives fewer bytes, one that
     * grows is read up to its announced size (a bounded amount of work either way). */
    size_t got = 0;
    while (got < (size_t)length) {
        ssize_t n = read(fd, buf + got, (size_t)length - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            free(buf);
            moco_error("%s: read error: %s", path, strerror(e));
            return NULL;
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    close(fd);
    *size = got;
    return buf;
}
