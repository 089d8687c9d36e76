/* tests/fuzz/replay.c: main() for a fuzz target outside libFuzzer (see fuzz.h).
 *
 * build/tests/test_fuzz_<name> replays every file of tests/fuzz/regress/<name>/ and
 * tests/fuzz/corpus/<name>/ (or the files and directories given as arguments) through
 * LLVMFuzzerTestOneInput, and prints one PASS line per directory.  An input that crashes
 * ends the program (the runner counts it; the last line printed names the input); one
 * that takes longer than FUZZ_REPLAY_SECONDS (default 5, times 4 in a sanitizer build) or
 * raises the process's peak memory by more than FUZZ_REPLAY_MB (default 200) is a FAIL: a
 * limit that no longer holds.  (The inputs are small files; before the limits, a 368-byte
 * JPEG took 3 s and 507 MB.) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"
#include "fuzz.h"
#include "io/file.h"

static double limit_seconds = 5, limit_mb = 200;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Replays one file; 0 when within the limits. */
static int replay_file(const char *path, double *slowest) {
    size_t size;
    uint8_t *data = file_read_all(path, (size_t)64 << 20, &size);
    if (!data) {
        printf("FAIL replay %s: %s\n", path, moco_last_error());
        return -1;
    }
    fprintf(stderr, "replaying %s\n", path); /* shown by tests/run.sh if the input crashes */
    double peak0 = peak_mb(), t0 = now();
    LLVMFuzzerTestOneInput(data, size);
    double t = now() - t0, grew = peak_mb() - peak0;
    free(data);
    if (t > *slowest) *slowest = t;
    if (t > limit_seconds) {
        printf("FAIL %s took %.1f s (limit %.0f s)\n", path, t, limit_seconds);
        return -1;
    }
    if (grew > limit_mb) {
        printf("FAIL %s raised the peak memory by %.0f MB (limit %.0f MB)\n", path, grew, limit_mb);
        return -1;
    }
    return 0;
}

/* Replays a directory's files in name order (or a single file); a missing directory is
 * an empty one. */
static void replay(const char *target, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return;
    double slowest = 0;
    int n = 0, bad = 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        char **names = NULL;
        size_t count = 0, cap = 0;
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            if (count == cap) names = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            names[count++] = strdup(e->d_name);
        }
        if (d) closedir(d);
        if (count) qsort(names, count, sizeof *names, compare_names);
        for (size_t i = 0; i < count; i++) {
            char file[4096];
            snprintf(file, sizeof file, "%s/%s", path, names[i]);
            bad += replay_file(file, &slowest) != 0;
            n++;
            free(names[i]);
        }
        free(names);
    } else {
        bad += replay_file(path, &slowest) != 0;
        n = 1;
    }
    char label[4200];
    snprintf(label, sizeof label, "fuzz %s: %d inputs of %s replayed within the limits (slowest %.2f s, peak %.0f MB)",
             target, n, path, slowest, peak_mb());
    CHECK(label, bad == 0, "%d of them failed", bad);
}

int main(int argc, char **argv) {
    const char *s = getenv("FUZZ_REPLAY_SECONDS"), *m = getenv("FUZZ_REPLAY_MB");
    if (getenv("MOCO_SANITIZE")) limit_seconds *= 4;
    if (s) limit_seconds = atof(s);
    if (m) limit_mb = atof(m);
    /* test_fuzz_<name> -> <name> */
    char *copy = strdup(argv[0]);
    const char *base = basename(copy);
    const char *target = strncmp(base, "test_fuzz_", 10) == 0 ? base + 10 : base;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) replay(target, argv[i]);
    } else {
        char dir[512];
        snprintf(dir, sizeof dir, "tests/fuzz/regress/%s", target);
        replay(target, dir);
        snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", target);
        replay(target, dir);
    }
    free(copy);
    CHECK_DONE();
}
