/* core/data/folder.c: torchvision.datasets.ImageFolder (root/<class>/<files>), and
 * ImageFiles, the same walk over root itself without classes (every sample labelled -1);
 * also the dataset of listed files they and FileList (filelist.c) share (samples.h).
 *
 * The sample order must be torchvision's exactly, because users compare indices, class
 * numbers and per-sample results with PyTorch runs.  torchvision (datasets/folder.py):
 *   classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
 *   for each class in order:  for dirpath, _, files in sorted(os.walk(root/class,
 *   followlinks=True)):  for f in sorted(files):  keep if f.lower().endswith(IMG_EXTENSIONS)
 * Python sorts str by code point, which for UTF-8 names is byte order (strcmp).  Sorting
 * os.walk's tuples sorts the directories by their whole path, so "a b/" comes before
 * "a/x/" (' ' < '/'), which a depth-first walk would not give: we collect every directory
 * first and sort the paths.  is_dir() and os.walk follow symbolic links; a link that
 * leads back into one of its own ancestors would make os.walk recurse until paths get
 * too long, so such a directory is visited once only.  Broken links are files, as in
 * os.walk (they then fail to load, naming the file). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"
#include "error.h"
#include "samples.h"

static const char *const image_extensions[] = {".jpg", ".jpeg", ".png", ".ppm", ".bmp",
                                               ".pgm", ".tif",  ".tiff", ".webp"};

typedef struct FolderDataset {
    Dataset base;
    int channels;
    char *pool;        /* every sample path, NUL-terminated, one after the other */
    size_t *offsets;   /* length entries into pool */
    int *labels;
} FolderDataset;

/* ------------------------------------------------------------ growable lists */

typedef struct StringList {
    char **items;
    size_t count, cap;
} StringList;

static int list_push(StringList *l, char *s) {
    if (!s) return -1;
    if (l->count == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **items = realloc(l->items, cap * sizeof *items);
        if (!items) {
            free(s);
            return -1;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->count++] = s;
    return 0;
}

static void list_free(StringList *l) {
    for (size_t i = 0; i < l->count; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* os.path.join(dir, name): no doubled slash when dir already ends in one. */
static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir), m = strlen(name);
    int slash = n > 0 && dir[n - 1] != '/';
    char *s = malloc(n + (size_t)slash + m + 1);
    if (!s) return NULL;
    memcpy(s, dir, n);
    if (slash) s[n] = '/';
    memcpy(s + n + slash, name, m + 1);
    return s;
}

static int has_image_extension(const char *name) {
    size_t n = strlen(name);
    for (size_t e = 0; e < sizeof image_extensions / sizeof *image_extensions; e++) {
        size_t m = strlen(image_extensions[e]);
        if (m > n) continue;
        size_t k = 0;
        while (k < m && tolower((unsigned char)name[n - m + k]) == image_extensions[e][k]) k++;
        if (k == m) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ walking */

/* One directory of a class tree: its path and its non-directory entries. */
typedef struct DirRecord {
    char *path;
    StringList files;
} DirRecord;

typedef struct Walk {
    DirRecord *dirs;
    size_t count, cap;
} Walk;

typedef struct Ancestor {
    dev_t dev;
    ino_t ino;
    const struct Ancestor *parent;
} Ancestor;

static int compare_records(const void *a, const void *b) {
    return strcmp(((const DirRecord *)a)->path, ((const DirRecord *)b)->path);
}

static void walk_free(Walk *w) {
    for (size_t i = 0; i < w->count; i++) {
        free(w->dirs[i].path);
        list_free(&w->dirs[i].files);
    }
    free(w->dirs);
    memset(w, 0, sizeof *w);
}

/* Records `path` and everything below it.  Unreadable sub-directories are left out, as
 * os.walk does (its onerror is None in torchvision); only the class directory itself
 * must open.  Returns 0 or -1 (out of memory, or the top directory failed). */
static int walk_dir(Walk *w, const char *path, const Ancestor *parent, int top) {
    DIR *d = opendir(path);
    if (!d) return top ? moco_error("%s: cannot open directory: %s", path, strerror(errno)) : 0;
    struct stat st;
    Ancestor self = {0, 0, parent};
    if (fstat(dirfd(d), &st) == 0) {
        self.dev = st.st_dev;
        self.ino = st.st_ino;
    }
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        DirRecord *dirs = realloc(w->dirs, cap * sizeof *dirs);
        if (!dirs) {
            closedir(d);
            return moco_error("%s: out of memory", path);
        }
        w->dirs = dirs;
        w->cap = cap;
    }
    size_t me = w->count++;
    memset(&w->dirs[me], 0, sizeof w->dirs[me]);
    w->dirs[me].path = strdup(path);
    if (!w->dirs[me].path) {
        closedir(d);
        return moco_error("%s: out of memory", path);
    }
    StringList subdirs = {0};
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *full = join_path(path, e->d_name);
        if (!full) {
            rc = moco_error("%s: out of memory", path);
            break;
        }
        if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
            int loop = 0;
            for (const Ancestor *a = &self; a; a = a->parent)
                if (a->dev == st.st_dev && a->ino == st.st_ino) loop = 1;
            if (loop) {
                free(full);
            } else if (list_push(&subdirs, full)) {
                rc = moco_error("%s: out of memory", path);
                break;
            }
        } else {
            free(full);
            /* w->dirs may move while recursing, so index it afresh each time. */
            if (list_push(&w->dirs[me].files, strdup(e->d_name))) {
                rc = moco_error("%s: out of memory", path);
                break;
            }
        }
    }
    closedir(d);
    for (size_t i = 0; rc == 0 && i < subdirs.count; i++) rc = walk_dir(w, subdirs.items[i], &self, 0);
    list_free(&subdirs);
    return rc;
}

/* ------------------------------------------------------------ the dataset */

static int folder_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    const FolderDataset *f = (const FolderDataset *)ds;
    const char *path = f->pool + f->offsets[index];
    *label = f->labels[index];
    /* image_load refuses FIFOs and devices (core/io/file.c), so a worker never blocks. */
    return image_load(path, f->channels, out);
}

static int64_t folder_label(const Dataset *ds, int64_t index) {
    return ((const FolderDataset *)ds)->labels[index];
}

static const char *folder_sample_path(const Dataset *ds, int64_t index) {
    const FolderDataset *f = (const FolderDataset *)ds;
    return f->pool + f->offsets[index];
}

static void folder_destroy(Dataset *ds) {
    FolderDataset *f = (FolderDataset *)ds;
    free(f->pool);
    free(f->offsets);
    free(f->labels);
}

static const DatasetOps folder_ops = {folder_get, folder_label, folder_sample_path, folder_destroy, NULL, NULL};

/* The sorted names of root's sub-directories (links followed). */
static int find_classes(const char *root, StringList *classes) {
    DIR *d = opendir(root);
    if (!d) return moco_error("ImageFolder: %s: cannot open directory: %s", root, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *full = join_path(root, e->d_name);
        struct stat st;
        int is_dir = full && stat(full, &st) == 0 && S_ISDIR(st.st_mode);
        free(full);
        if (is_dir && list_push(classes, strdup(e->d_name))) {
            rc = moco_error("ImageFolder: %s: out of memory", root);
            break;
        }
    }
    closedir(d);
    if (rc == 0 && classes->count == 0)
        rc = moco_error("ImageFolder: couldn't find any class folder in %s "
                        "(expected %s/<class name>/<image files>)", root, root);
    if (rc == 0) qsort(classes->items, classes->count, sizeof *classes->items, compare_strings);
    return rc;
}

int sample_push(SampleList *s, const char *path, int label) {
    size_t n = strlen(path) + 1;
    if (s->pool_len + n > s->pool_cap) {
        size_t cap = s->pool_cap ? s->pool_cap : 4096;
        while (cap < s->pool_len + n) cap *= 2;
        char *pool = realloc(s->pool, cap);
        if (!pool) return -1;
        s->pool = pool;
        s->pool_cap = cap;
    }
    if (s->count == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        size_t *offsets = realloc(s->offsets, cap * sizeof *offsets);
        if (!offsets) return -1;
        s->offsets = offsets;
        int *labels = realloc(s->labels, cap * sizeof *labels);
        if (!labels) return -1;
        s->labels = labels;
        s->cap = cap;
    }
    memcpy(s->pool + s->pool_len, path, n);
    s->offsets[s->count] = s->pool_len;
    s->labels[s->count] = label;
    s->pool_len += n;
    s->count++;
    return 0;
}

/* Collects the image files under dir (in sorted(os.walk(dir)) order) with `label`;
 * *found says whether there was any.  `what` prefixes the messages. */
static int collect_tree(const char *what, const char *dir, int label, SampleList *samples,
                        ImageFolderReport *report, int *found) {
    Walk w = {0};
    int rc = walk_dir(&w, dir, NULL, 1);
    if (rc) moco_error_prefix("%s: ", what);
    if (rc == 0) qsort(w.dirs, w.count, sizeof *w.dirs, compare_records);
    for (size_t i = 0; rc == 0 && i < w.count; i++) {
        StringList *files = &w.dirs[i].files;
        /* An empty directory has no list at all: qsort(NULL, 0) is undefined behaviour. */
        if (files->count > 1) qsort(files->items, files->count, sizeof *files->items, compare_strings);
        for (size_t j = 0; rc == 0 && j < files->count; j++) {
            char *path = join_path(w.dirs[i].path, files->items[j]);
            if (!path) {
                rc = moco_error("%s: out of memory", what);
            } else if (has_image_extension(files->items[j])) {
                if (sample_push(samples, path, label)) rc = moco_error("%s: out of memory", what);
                *found = 1;
            } else {
                if (report->skipped_files++ == 0)
                    snprintf(report->first_skipped, sizeof report->first_skipped, "%s", path);
            }
            free(path);
        }
    }
    walk_free(&w);
    return rc;
}

/* Collects the samples of one class; *found says whether it had any image file. */
static int collect_class(const char *root, const char *cls, int label, SampleList *samples,
                         ImageFolderReport *report, int *found) {
    char *dir = join_path(root, cls);
    if (!dir) return moco_error("ImageFolder: out of memory");
    int rc = collect_tree("ImageFolder", dir, label, samples, report, found);
    free(dir);
    return rc;
}

void path_expand_user(const char *path, char *out, size_t size) {
    const char *home = getenv("HOME");
    if (path[0] == '~' && (path[1] == '/' || path[1] == 0) && home)
        snprintf(out, size, "%s%s", home, path + 1);
    else
        snprintf(out, size, "%s", path);
}

Dataset *dataset_from_samples(const char *name, int channels, SampleList *samples, int nclasses,
                              const char *const *classes) {
    FolderDataset *f = (FolderDataset *)dataset_alloc(sizeof *f, &folder_ops, name);
    if (!f) return NULL;
    if (dataset_set_classes(&f->base, nclasses, classes)) {
        dataset_release(&f->base);
        return NULL;
    }
    f->channels = channels;
    f->pool = samples->pool;
    f->offsets = samples->offsets;
    f->labels = samples->labels;
    f->base.length = (int64_t)samples->count;
    memset(samples, 0, sizeof *samples);
    return &f->base;
}

/* What both constructors do first: an empty report, the channels checked, root expanded. */
static int tree_begin(const char *what, const char *root_arg, int channels, char *root, size_t size,
                      ImageFolderReport *report) {
    memset(report, 0, sizeof *report);
    path_expand_user(root_arg, root, size);
    if (channels != 0 && channels != 1 && channels != 3)
        return moco_error("%s: channels must be 1, 3 or 0 (as stored), got %d", what, channels);
    return 0;
}

void samples_free(SampleList *s) {
    free(s->pool);
    free(s->offsets);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

Dataset *dataset_image_folder(const char *root_arg, int channels, ImageFolderReport *report) {
    ImageFolderReport local;
    char root[4096];
    if (!report) report = &local;
    if (tree_begin("ImageFolder", root_arg, channels, root, sizeof root, report)) return NULL;

    StringList classes = {0};
    SampleList samples = {0};
    char empty[1024] = "";   /* the classes without an image file, ", "-separated */
    Dataset *ds = NULL;
    int rc = find_classes(root, &classes);
    for (size_t c = 0; rc == 0 && c < classes.count; c++) {
        int found = 0;
        rc = collect_class(root, classes.items[c], (int)c, &samples, report, &found);
        size_t n = strlen(empty);
        if (rc == 0 && !found && n < sizeof empty - 1)
            snprintf(empty + n, sizeof empty - n, "%s%s", n ? ", " : "", classes.items[c]);
    }
    if (rc == 0 && empty[0])
        rc = moco_error("ImageFolder: %s: found no valid file for the classes %s. Supported extensions are: %s",
                        root, empty, IMAGE_FOLDER_EXTENSIONS);
    if (rc == 0 && classes.count > 1000000) rc = moco_error("ImageFolder: %s: too many classes", root);
    if (rc == 0) {
        char name[4200];
        snprintf(name, sizeof name, "ImageFolder(%s)", root);
        ds = dataset_from_samples(name, channels, &samples, (int)classes.count, (const char *const *)classes.items);
    }
    samples_free(&samples);
    list_free(&classes);
    return ds;
}

Dataset *dataset_image_files(const char *root_arg, int channels, ImageFolderReport *report) {
    ImageFolderReport local;
    char root[4096];
    if (!report) report = &local;
    if (tree_begin("ImageFiles", root_arg, channels, root, sizeof root, report)) return NULL;
    SampleList samples = {0};
    Dataset *ds = NULL;
    int found = 0;
    int rc = collect_tree("ImageFiles", root, -1, &samples, report, &found);
    if (rc == 0 && !found)
        rc = moco_error("ImageFiles: %s: found no image file in it or below it%s%s%s. Supported extensions are: %s",
                        root, report->skipped_files ? " (skipped non-image files, e.g. " : "", report->first_skipped,
                        report->skipped_files ? ")" : "", IMAGE_FOLDER_EXTENSIONS);
    if (rc == 0) {
        char name[4200];
        snprintf(name, sizeof name, "ImageFiles(%s)", root);
        ds = dataset_from_samples(name, channels, &samples, 0, NULL);
    }
    samples_free(&samples);
    return ds;
}
