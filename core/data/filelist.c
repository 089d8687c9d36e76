/* core/data/filelist.c: FileList, a dataset from a text or CSV file listing image paths
 * (relative to a root) with optional labels.  See dataset.h for the format.
 *
 * The list is outside input: it is read whole under a size bound, every line is checked
 * (a path may not be absolute or climb out of the root with "..", so the file's content
 * never chooses a path outside the root), and each listed file must exist, before the
 * dataset is returned.  Errors name the list and the 1-based line, as a compiler does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "dataset.h"
#include "error.h"
#include "io/file.h"
#include "samples.h"

#define PATH_SIZE 4096

typedef struct Field {
    const char *start;
    size_t len;
} Field;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

static Field trimmed(const char *start, size_t len) {
    while (len && is_space(start[0])) start++, len--;
    while (len && is_space(start[len - 1])) len--;
    Field f = {start, len};
    return f;
}

/* Splits a line into fields (commas, or runs of white space); fills up to 3 of them and
 * returns how many there are. */
static size_t split_fields(const char *line, size_t len, int comma, Field *out) {
    size_t n = 0, i = 0;
    if (comma) {
        size_t start = 0;
        for (i = 0; i <= len; i++) {
            if (i < len && line[i] != ',') continue;
            if (n < 3) out[n] = trimmed(line + start, i - start);
            n++;
            start = i + 1;
        }
        return n;
    }
    while (i < len) {
        while (i < len && is_space(line[i])) i++;
        if (i == len) break;
        size_t start = i;
        while (i < len && !is_space(line[i])) i++;
        if (n < 3) out[n] = (Field){line + start, i - start};
        n++;
    }
    return n;
}

static int field_is(const Field *f, const char *word) {
    return f->len == strlen(word) && strncasecmp(f->start, word, f->len) == 0;
}

/* Digits only, at most INT_MAX (labels are stored as int). */
static int parse_label(const Field *f, int *label) {
    if (f->len == 0 || f->len > 10) return -1;
    long long v = 0;
    for (size_t i = 0; i < f->len; i++) {
        if (f->start[i] < '0' || f->start[i] > '9') return -1;
        v = 10 * v + (f->start[i] - '0');
    }
    if (v > 2147483647LL) return -1;
    *label = (int)v;
    return 0;
}

/* NULL when the path may be joined to the root, else what is wrong with it. */
static const char *path_problem(const Field *f) {
    if (f->len == 0) return "an empty path";
    if (f->start[0] == '/') return "an absolute path (the listed paths are relative to the root)";
    for (size_t i = 0; i < f->len; i++) {
        size_t start = i;
        while (i < f->len && f->start[i] != '/') i++;
        if (i - start == 2 && f->start[start] == '.' && f->start[start + 1] == '.')
            return "a path with a '..' component (the listed paths must stay inside the root)";
    }
    if (f->len >= PATH_SIZE) return "a path that is too long";
    return NULL;
}

/* The default root: the directory of the list file. */
static void list_directory(const char *list, char *out, size_t size) {
    const char *slash = strrchr(list, '/');
    if (!slash)
        snprintf(out, size, ".");
    else if (slash == list)
        snprintf(out, size, "/");
    else
        snprintf(out, size, "%.*s", (int)(slash - list), list);
}

typedef struct Parse {
    const char *list;     /* the list's path, for messages */
    const char *root;
    int comma;            /* -1: not decided yet (auto) */
    int header_checked;
    int labeled;          /* -1: no sample yet */
    long long first_line; /* the first sample's line */
    SampleList samples;
} Parse;

/* One line without its '\n'.  Returns 0 or -1 with a message naming the line. */
static int parse_line(Parse *p, const char *text, size_t len, long long line_no) {
    const char *list = p->list;
    if (memchr(text, 0, len)) return moco_error("FileList: %s:%lld: the line holds a NUL byte (not a text file?)", list, line_no);
    Field whole = trimmed(text, len);
    if (whole.len == 0 || whole.start[0] == '#') return 0;
    if (p->comma < 0) p->comma = memchr(whole.start, ',', whole.len) != NULL;
    Field f[3];
    size_t n = split_fields(whole.start, whole.len, p->comma, f);
    /* A header (CSV's "path,label", or "path label"), on the first line that is not a comment. */
    if (!p->header_checked) {
        p->header_checked = 1;
        if (field_is(&f[0], "path") && (n == 1 || (n == 2 && field_is(&f[1], "label")))) return 0;
    }
    if (n > 2)
        return moco_error("FileList: %s:%lld: expected a path and an optional label, found %zu fields%s", list,
                          line_no, n, p->comma ? "" : " (a path with spaces needs the comma-separated form: path,label)");
    if (p->comma && ((f[0].len && f[0].start[0] == '"') || (n == 2 && f[1].len && f[1].start[0] == '"')))
        return moco_error("FileList: %s:%lld: quoted CSV fields are not supported", list, line_no);
    const char *problem = path_problem(&f[0]);
    if (problem)
        return moco_error("FileList: %s:%lld: \"%.*s\" is %s", list, line_no, (int)(f[0].len < 200 ? f[0].len : 200),
                          f[0].start, problem);
    int label = -1, labeled = n == 2;
    if (labeled && parse_label(&f[1], &label))
        return moco_error("FileList: %s:%lld: label \"%.*s\" is not a non-negative integer", list, line_no,
                          (int)(f[1].len < 40 ? f[1].len : 40), f[1].start);
    if (p->labeled < 0) {
        p->labeled = labeled;
        p->first_line = line_no;
    } else if (labeled != p->labeled) {
        return moco_error("FileList: %s:%lld: %s, but line %lld %s (give every line a label, or none)", list, line_no,
                          labeled ? "a label" : "no label", p->first_line, labeled ? "has none" : "has one");
    }
    char path[2 * PATH_SIZE];
    snprintf(path, sizeof path, "%s%s%.*s", p->root, p->root[strlen(p->root) - 1] == '/' ? "" : "/", (int)f[0].len,
             f[0].start);
    struct stat st;
    if (stat(path, &st) != 0)
        return moco_error("FileList: %s:%lld: listed file %s: %s", list, line_no, path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return moco_error("FileList: %s:%lld: listed file %s is not a regular file", list, line_no, path);
    if (sample_push(&p->samples, path, label)) return moco_error("FileList: %s: out of memory", list);
    return 0;
}

Dataset *dataset_file_list(const char *list_arg, const char *root_arg, int channels, int delimiter) {
    if (channels != 0 && channels != 1 && channels != 3) {
        moco_error("FileList: channels must be 1, 3 or 0 (as stored), got %d", channels);
        return NULL;
    }
    if (delimiter != 0 && delimiter != ',' && delimiter != ' ') {
        moco_error("FileList: the delimiter must be automatic, a comma or white space");
        return NULL;
    }
    char list[PATH_SIZE], root[PATH_SIZE];
    path_expand_user(list_arg, list, sizeof list);
    if (root_arg && root_arg[0])
        path_expand_user(root_arg, root, sizeof root);
    else
        list_directory(list, root, sizeof root);
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        moco_error("FileList: %s: the root %s is not a directory", list, root);
        return NULL;
    }
    size_t size;
    char *text = (char *)file_read_all(list, FILE_LIST_MAX_BYTES, &size);
    if (!text) {
        moco_error_prefix("FileList: ");
        return NULL;
    }
    Parse p = {list, root, delimiter ? delimiter == ',' : -1, 0, -1, 0, {0}};
    size_t pos = size >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0;   /* a UTF-8 byte-order mark */
    long long line_no = 0;
    int rc = 0;
    while (rc == 0 && pos < size) {
        const char *line = text + pos, *nl = memchr(line, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - line) : size - pos;
        pos += len + (nl != NULL);
        if (++line_no > FILE_LIST_MAX_LINES)
            rc = moco_error("FileList: %s: more than %lld lines", list, (long long)FILE_LIST_MAX_LINES);
        else
            rc = parse_line(&p, line, len, line_no);
    }
    free(text);
    if (rc == 0 && p.samples.count == 0)
        rc = moco_error("FileList: %s: no samples (every line is empty, a comment or the header)", list);
    Dataset *ds = NULL;
    if (rc == 0) {
        char name[PATH_SIZE + 16];
        snprintf(name, sizeof name, "FileList(%s)", list);
        ds = dataset_from_samples(name, channels, &p.samples, 0, NULL);
    }
    samples_free(&p.samples);
    return ds;
}
