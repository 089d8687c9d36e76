/* tests/fuzz/fuzz_filelist.c: the FileList parser (core/data/filelist.c): the input as
 * list.txt in a scratch root holding a few files, opened with each delimiter setting.
 * Besides not crashing, every accepted sample must lie inside the root: a path that
 * starts elsewhere or climbs out with ".." is a bug, whatever the list says. */
#include <sys/stat.h>

#include "data/dataset.h"
#include "fuzz.h"

static char dir[64];

static void remove_dir(void) {
    char path[128];
    const char *const files[] = {"a.png", "b.jpg", "sub/c.png", "list.txt"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

static void check_inside(Dataset *ds) {
    if (!ds) return;
    size_t n = strlen(dir);
    for (int64_t i = 0; i < dataset_length(ds); i++) {
        const char *p = dataset_sample_path(ds, i);
        if (!p || strncmp(p, dir, n) != 0 || p[n] != '/' || strstr(p, "/../") || dataset_label(ds, i) < -1) {
            fprintf(stderr, "fuzz_filelist: sample %lld is %s (label %lld), outside %s\n", (long long)i,
                    p ? p : "(null)", (long long)dataset_label(ds, i), dir);
            abort();
        }
    }
    dataset_release(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char list[128];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz_filelist_%ld", (long)getpid());
        mkdir(dir, 0700);
        char path[128];
        snprintf(path, sizeof path, "%s/sub", dir);
        mkdir(path, 0700);
        const char *const files[] = {"a.png", "b.jpg", "sub/c.png"};
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            FILE *f = fopen(path, "wb");
            if (!f) abort();
            fclose(f);
        }
        atexit(remove_dir);
    }
    snprintf(list, sizeof list, "%s/list.txt", dir);
    FILE *f = fopen(list, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    check_inside(dataset_file_list(list, NULL, 3, 0));
    check_inside(dataset_file_list(list, dir, 3, ','));
    check_inside(dataset_file_list(list, NULL, 1, ' '));
    return 0;
}
