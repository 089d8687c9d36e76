/* tests/c/test_reliability.c: hostile and damaged input files against every reader of
 * libmoco, each a regression test for a defect found by the reliability audit (issue 12;
 * docs/reliability.md lists them with the expected behaviour).
 *
 *   - FIFOs and devices named like data files: every reader refuses them at once
 *     (a SIGALRM watchdog turns a blocking open() into a FAIL instead of a hang);
 *   - decompression bombs: JPEG and PNG headers announcing more pixels than the limit or
 *     than the file can hold, a JPEG with too many progressive scans, IDX headers
 *     announcing gigabytes (raw and gzip), overflowing IDX dimensions;
 *   - silent corruption: a JPEG cut in half with an end marker appended, corrupt entropy
 *     data, a gzip IDX file with a wrong CRC, an .npy header with 'descr' inside a string;
 *   - a loader closed while a worker decodes a slow file returns at once.
 * The files are made here, from the small fixtures in tests/fixtures/images. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>

#include "check.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "error.h"
#include "image/image.h"
#include "io/file.h"
#include "io/idx.h"
#include "io/safetensors.h"
#include "tensor.h"

#define FIXTURES "tests/fixtures/images/"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static char tmpdir[] = "/tmp/moco_test_reliability_XXXXXX";

static const char *tmp(const char *name) {
    static char paths[16][600];
    static int next = 0;
    char *p = paths[next++ % 16];
    snprintf(p, sizeof paths[0], "%s/%s", tmpdir, name);
    return p;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static uint8_t *read_file(const char *path, size_t *n) {
    uint8_t *b = file_read_all(path, (size_t)1 << 30, n);
    if (!b) printf("FAIL read %s: %s\n", path, moco_last_error());
    return b;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int has(const char *needle) { return strstr(moco_last_error(), needle) != NULL; }

/* ------------------------------------------------------------ FIFOs */

static volatile sig_atomic_t watchdog_label_set = 0;
static char watchdog_label[200];

static void on_watchdog(int sig) {
    (void)sig;
    static const char msg[] = "FAIL a reader blocked on a FIFO for 5 seconds: ";
    (void)!write(STDOUT_FILENO, msg, sizeof msg - 1);
    if (watchdog_label_set) (void)!write(STDOUT_FILENO, watchdog_label, strlen(watchdog_label));
    (void)!write(STDOUT_FILENO, "\n", 1);
    _exit(1);
}

static void arm(const char *label) {
    snprintf(watchdog_label, sizeof watchdog_label, "%s", label);
    watchdog_label_set = 1;
    alarm(5);
}

static void test_fifos(void) {
    signal(SIGALRM, on_watchdog);
    const char *fifo = tmp("fifo.jpg");
    if (mkfifo(fifo, 0600) != 0) {
        CHECK("mkfifo", 0, "%s", strerror(errno));
        return;
    }
    Image img;
    arm("image_load");
    CHECK("image_load refuses a FIFO at once, naming it",
          image_load(fifo, 3, &img) == -1 && has(fifo) && has("FIFO"), "message: %s", moco_last_error());
    arm("tensor_load_npy");
    CHECK("tensor_load_npy refuses a FIFO", tensor_load_npy(fifo) == NULL && has(fifo) && has("FIFO"),
          "message: %s", moco_last_error());
    SafetensorsFile sf;
    arm("safetensors_open");
    CHECK("safetensors_open refuses a FIFO", safetensors_open(&sf, fifo) == -1 && has(fifo) && has("FIFO"),
          "message: %s", moco_last_error());
    IdxArray a;
    arm("idx_load");
    CHECK("idx_load refuses a FIFO", idx_load(fifo, &a) == -1 && has(fifo) && has("FIFO"), "message: %s",
          moco_last_error());
    arm("dataset_cifar10");
    const char *dir = tmp("cifar_fifo");
    mkdir(dir, 0700);
    char path[700];
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    mkfifo(path, 0600);
    Dataset *ds = dataset_cifar10(dir, 0);
    CHECK("CIFAR10 with a FIFO for its batch file fails, naming it", ds == NULL && has(path), "message: %s",
          moco_last_error());
    unlink(path);
    rmdir(dir);
    arm("a directory");
    CHECK("image_load of a directory says so", image_load(tmpdir, 3, &img) == -1 && has("a directory"),
          "message: %s", moco_last_error());
    arm("/dev/zero");
    size_t n;
    CHECK("file_read_all refuses /dev/zero (it would never end)",
          file_read_all("/dev/zero", 1 << 20, &n) == NULL && has("character device"), "message: %s",
          moco_last_error());
    alarm(0);
    unlink(fifo);
}

/* ------------------------------------------------------------ JPEG */

/* The offset of the first marker `code` (0xFFxx) after the SOI, or 0. */
static size_t find_marker(const uint8_t *b, size_t n, uint8_t code) {
    for (size_t i = 2; i + 1 < n; i++)
        if (b[i] == 0xff && b[i + 1] == code) return i;
    return 0;
}

/* The first SOF (baseline or progressive) marker. */
static size_t find_sof(const uint8_t *b, size_t n) {
    size_t a = find_marker(b, n, 0xc0), p = find_marker(b, n, 0xc2);
    return a && (!p || a < p) ? a : p;
}

/* Sets the height and width a JPEG's SOF announces. */
static void patch_jpeg_size(uint8_t *b, size_t n, unsigned w, unsigned h) {
    size_t sof = find_sof(b, n);
    b[sof + 5] = (uint8_t)(h >> 8);
    b[sof + 6] = (uint8_t)h;
    b[sof + 7] = (uint8_t)(w >> 8);
    b[sof + 8] = (uint8_t)w;
}

/* A gray gradient image, encoded by libjpeg with the given scan script (NULL: baseline). */
static uint8_t *encode_jpeg(int w, int h, const jpeg_scan_info *scans, int nscans, size_t *size) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long out_size = 0;
    jpeg_mem_dest(&c, &out, &out_size);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 1;
    c.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    if (scans) {
        c.scan_info = scans;
        c.num_scans = nscans;
    }
    jpeg_start_compress(&c, TRUE);
    JSAMPLE *row = malloc((size_t)w);
    while (c.next_scanline < c.image_height) {
        for (int x = 0; x < w; x++) row[x] = (JSAMPLE)((x * 7 + c.next_scanline * 3) & 0xff);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    *size = out_size;
    return out;
}

/* A valid progressive scan script with the most scans libjpeg allows for one component:
 * successive approximation from Al = 10 down to 0 for the DC and for each AC coefficient
 * on its own: 64 * 11 = 704 scans. */
static jpeg_scan_info *many_scans(int *n) {
    jpeg_scan_info *s = calloc(64 * 11, sizeof *s);
    int k = 0;
    for (int band = 0; band < 64; band++)
        for (int al = 10; al >= 0; al--) {
            s[k].comps_in_scan = 1;
            s[k].component_index[0] = 0;
            s[k].Ss = band;
            s[k].Se = band;
            s[k].Ah = al == 10 ? 0 : al + 1;
            s[k].Al = al;
            k++;
        }
    *n = k;
    return s;
}

static void test_jpeg_bombs(void) {
    ImageLimits lim;
    image_get_limits(&lim);
    CHECK("the default pixel limit is PIL's MAX_IMAGE_PIXELS", lim.max_pixels == 89478485LL && lim.max_scans == 500,
          "max_pixels %lld, max_scans %d", lim.max_pixels, lim.max_scans);

    size_t n;
    uint8_t *small = encode_jpeg(16, 16, NULL, 0, &n);
    Image img;
    /* 13000 x 13000 = 169 Mpx: over the limit, refused from the header. */
    patch_jpeg_size(small, n, 13000, 13000);
    double t0 = seconds();
    int rc = image_decode(small, n, 3, &img, "bomb13000.jpg");
    CHECK("a tiny JPEG announcing 13000x13000 is refused by the pixel limit, at once",
          rc == -1 && has("bomb13000.jpg") && has("exceeds the limit") && seconds() - t0 < 0.5,
          "rc %d after %.2f s: %s", rc, seconds() - t0, moco_last_error());
    /* 8000 x 8000 = 64 Mpx: within the limit, but a ~300-byte file cannot hold 1M blocks. */
    patch_jpeg_size(small, n, 8000, 8000);
    t0 = seconds();
    rc = image_decode(small, n, 3, &img, "bomb8000.jpg");
    CHECK("a tiny JPEG announcing 8000x8000 is refused by its length, before allocating",
          rc == -1 && has("bomb8000.jpg") && has("more than a") && seconds() - t0 < 0.5, "rc %d after %.2f s: %s", rc,
          seconds() - t0, moco_last_error());
    free(small);

    /* The pixel limit is an option. */
    ImageLimits low = {100, 500};
    CHECK("set_limits accepts a lower pixel limit", image_set_limits(&low) == 0, "%s", moco_last_error());
    rc = image_load(FIXTURES "coffee.jpg", 3, &img);
    CHECK("a lowered pixel limit refuses an ordinary file", rc == -1 && has("exceeds the limit of 100 pixels"),
          "rc %d: %s", rc, moco_last_error());
    ImageLimits bad = {0, 500};
    CHECK("set_limits refuses max_pixels 0", image_set_limits(&bad) == -1 && has("max_pixels"), "%s",
          moco_last_error());
    image_set_limits(&lim);

    /* 704 valid progressive scans: more than the default limit of 500. */
    int nscans;
    jpeg_scan_info *script = many_scans(&nscans);
    uint8_t *prog = encode_jpeg(64, 64, script, nscans, &n);
    rc = image_decode(prog, n, 0, &img, "scans.jpg");
    CHECK("a progressive JPEG with 704 scans is refused by the scan limit",
          rc == -1 && has("scans.jpg") && has("more than 500 progressive scans"), "rc %d: %s", rc, moco_last_error());
    ImageLimits more = {lim.max_pixels, 1000};
    image_set_limits(&more);
    rc = image_decode(prog, n, 0, &img, "scans.jpg");
    CHECK("the same file decodes with max_scans = 1000", rc == 0 && img.width == 64, "rc %d: %s", rc,
          moco_last_error());
    image_free(&img);
    image_set_limits(&lim);
    free(prog);
    free(script);
}

static void test_jpeg_corruption(void) {
    static const char *const files[] = {"coffee.jpg", "coffee_progressive.jpg", "camera_gray.jpg"};
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        char path[256], label[300];
        snprintf(path, sizeof path, FIXTURES "%s", files[f]);
        size_t n;
        uint8_t *bytes = read_file(path, &n);
        if (!bytes) continue;
        size_t sos = find_marker(bytes, n, 0xda);
        /* Cut in the middle of the entropy-coded data, and give it an end marker. */
        size_t cut = sos + (n - sos) / 2;
        uint8_t *half = malloc(cut + 2);
        memcpy(half, bytes, cut);
        half[cut] = 0xff;
        half[cut + 1] = 0xd9;
        Image img;
        int rc = image_decode(half, cut + 2, 3, &img, path);
        snprintf(label, sizeof label, "%s cut in half with an EOI appended is an error naming the file", files[f]);
        CHECK(label, rc == -1 && has(path) && has("Corrupt JPEG data"), "rc %d: %s", rc, moco_last_error());
        image_free(&img);
        free(half);

        /* 32 bytes of stuffed 0xFF (all one-bits) in the data: no valid Huffman code. */
        uint8_t *bad = malloc(n);
        memcpy(bad, bytes, n);
        size_t at = sos + 40;
        for (size_t i = 0; i < 32 && at + i + 1 < n - 2; i += 2) {
            bad[at + i] = 0xff;
            bad[at + i + 1] = 0x00;
        }
        rc = image_decode(bad, n, 3, &img, path);
        snprintf(label, sizeof label, "%s with corrupt entropy data is an error naming the file", files[f]);
        CHECK(label, rc == -1 && has(path) && has("Corrupt JPEG data"), "rc %d: %s", rc, moco_last_error());
        image_free(&img);
        free(bad);

        /* Extraneous bytes before a marker are harmless (many cameras write them; PIL reads them). */
        uint8_t *extra = malloc(n + 4);
        memcpy(extra, bytes, n - 2);
        memcpy(extra + n - 2, "\x12\x34\x56\x78\xff\xd9", 6);
        Image want, got;
        rc = image_decode(bytes, n, 3, &want, path);
        int rc2 = image_decode(extra, n + 4, 3, &got, path);
        snprintf(label, sizeof label, "%s with extraneous bytes before the EOI still decodes, identically", files[f]);
        CHECK(label, rc == 0 && rc2 == 0 && !memcmp(want.data, got.data, (size_t)want.width * want.height * 3),
              "rc %d %d: %s", rc, rc2, moco_last_error());
        image_free(&want);
        image_free(&got);
        free(extra);
        free(bytes);
    }
}

/* ------------------------------------------------------------ PNG */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Sets the size in a PNG's IHDR (the first chunk) and fixes its CRC. */
static void patch_png_size(uint8_t *b, uint32_t w, uint32_t h) {
    put_be32(b + 16, w);
    put_be32(b + 20, h);
    put_be32(b + 29, (uint32_t)crc32(0, b + 12, 17));
}

static void test_png_bombs(void) {
    size_t n;
    uint8_t *bytes = read_file(FIXTURES "camera.png", &n);
    if (!bytes) return;
    Image img;
    patch_png_size(bytes, 9000, 9000); /* 81 Mpx, under the pixel limit; 81 MB of raw data in 901 bytes? */
    double t0 = seconds();
    int rc = image_decode(bytes, n, 3, &img, "bomb.png");
    CHECK("a small PNG announcing 9000x9000 is refused by its length, before allocating",
          rc == -1 && has("bomb.png") && has("more than a") && seconds() - t0 < 0.5, "rc %d after %.2f s: %s", rc,
          seconds() - t0, moco_last_error());
    patch_png_size(bytes, 20000, 20000);
    rc = image_decode(bytes, n, 3, &img, "bomb.png");
    CHECK("a PNG announcing 20000x20000 is refused by the pixel limit", rc == -1 && has("exceeds the limit"),
          "rc %d: %s", rc, moco_last_error());
    free(bytes);

    /* A real, valid 1-bit bomb: 8000x8000 zeros compress 1000:1, so the length allows it;
     * the pixel limit is then the bound, and lowering it refuses the file. */
    int w = 8000, h = 8000;
    size_t rowbytes = (size_t)w / 8 + 1, raw_n = rowbytes * (size_t)h;
    uint8_t *raw = calloc(raw_n, 1);
    uLongf zn = compressBound((uLong)raw_n);
    uint8_t *z = malloc(zn);
    compress2(z, &zn, raw, (uLong)raw_n, 9);
    free(raw);
    size_t png_n = 8 + 25 + 12 + zn + 12;
    uint8_t *png = malloc(png_n), *p = png;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    p += 8;
    put_be32(p, 13);
    memcpy(p + 4, "IHDR", 4);
    put_be32(p + 8, (uint32_t)w);
    put_be32(p + 12, (uint32_t)h);
    memcpy(p + 16, "\x01\x00\x00\x00\x00", 5); /* 1-bit gray */
    put_be32(p + 21, (uint32_t)crc32(0, p + 4, 17));
    p += 25;
    put_be32(p, (uint32_t)zn);
    memcpy(p + 4, "IDAT", 4);
    memcpy(p + 8, z, zn);
    put_be32(p + 8 + zn, (uint32_t)crc32(0, p + 4, (uInt)(zn + 4)));
    p += 12 + zn;
    put_be32(p, 0);
    memcpy(p + 4, "IEND", 4);
    put_be32(p + 8, (uint32_t)crc32(0, p + 4, 4));
    free(z);
    ImageLimits lim, low;
    image_get_limits(&lim);
    low = lim;
    low.max_pixels = 16000000;
    image_set_limits(&low);
    rc = image_decode(png, png_n, 1, &img, "zeros.png");
    CHECK("a valid 8000x8000 1-bit PNG of a few KB is refused under a 16 Mpx limit",
          rc == -1 && has("zeros.png") && has("exceeds the limit"), "rc %d (%zu bytes): %s", rc, png_n,
          moco_last_error());
    image_set_limits(&lim);
    free(png);
}

/* ------------------------------------------------------------ IDX */

/* An IDX header of unsigned bytes with the given dimensions, followed by `data`. */
static size_t idx_bytes(uint8_t *out, int ndim, const uint32_t *dims, const uint8_t *data, size_t n) {
    out[0] = out[1] = 0;
    out[2] = 8;
    out[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) put_be32(out + 4 + 4 * i, dims[i]);
    memcpy(out + 4 + 4 * ndim, data, n);
    return 4 + 4 * (size_t)ndim + n;
}

static int write_gz(const char *path, const void *data, size_t n) {
    gzFile g = gzopen(path, "wb9");
    if (!g) return -1;
    int ok = gzwrite(g, data, (unsigned)n) == (int)n;
    return gzclose(g) == Z_OK && ok ? 0 : -1;
}

/* A gzip file of `data` made of stored deflate blocks, whose 8-byte trailer starts at a
 * multiple of 8192 (padding the optional file name of the header). */
static uint8_t *gzip_aligned(const uint8_t *data, size_t n, size_t *out_n) {
    size_t blocks = (n + 65534) / 65535, deflated = n + 5 * blocks;
    size_t name = (8192 - (10 + 1 + deflated) % 8192) % 8192;
    size_t total = 10 + name + 1 + deflated + 8;
    uint8_t *g = calloc(total, 1), *p = g;
    memcpy(p, "\x1f\x8b\x08\x08\0\0\0\0\0\x03", 10);
    p += 10;
    memset(p, 'a', name);
    p += name + 1;
    for (size_t at = 0; at < n; at += 65535) {
        size_t len = n - at < 65535 ? n - at : 65535;
        p[0] = at + len == n; /* BFINAL, BTYPE 00 */
        p[1] = (uint8_t)len;
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)~len;
        p[4] = (uint8_t)(~len >> 8);
        memcpy(p + 5, data + at, len);
        p += 5 + len;
    }
    uint32_t crc = (uint32_t)crc32(0, data, (uInt)n);
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(crc >> (8 * i)), p[4 + i] = (uint8_t)(n >> (8 * i));
    *out_n = total;
    return g;
}

/* idx_load in a child whose address space is capped, so that an allocation of the size a
 * header announces fails there instead of succeeding lazily.  Returns the child's message
 * through a pipe ("" on success). */
static void idx_load_capped(const char *path, size_t cap_bytes, char *msg, size_t size) {
    int fds[2];
    msg[0] = 0;
    if (pipe(fds) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        /* On top of what the process already maps (libraries, BLAS buffers). */
        long long vm_kb = 0;
        char line[256];
        FILE *st = fopen("/proc/self/status", "r");
        while (st && fgets(line, sizeof line, st))
            if (sscanf(line, "VmSize: %lld", &vm_kb) == 1) break;
        if (st) fclose(st);
        struct rlimit rl;
        getrlimit(RLIMIT_AS, &rl);
        rl.rlim_cur = (rlim_t)vm_kb * 1024 + cap_bytes;
        setrlimit(RLIMIT_AS, &rl);
        IdxArray a;
        const char *m = idx_load(path, &a) == 0 ? "loaded" : moco_last_error();
        (void)!write(fds[1], m, strlen(m));
        _exit(0);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], msg, size - 1);
    msg[got > 0 ? got : 0] = 0;
    close(fds[0]);
    waitpid(pid, NULL, 0);
}

static void test_idx(void) {
    static uint8_t buf[1 << 16];
    IdxArray a;
    /* Dimensions whose product overflows int64 (signed overflow, undefined before). */
    uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 2};
    size_t n = idx_bytes(buf, 3, huge, (const uint8_t *)"xy", 2);
    write_file(tmp("overflow.idx"), buf, n);
    CHECK("IDX dimensions whose product overflows are refused",
          idx_load(tmp("overflow.idx"), &a) == -1 && has("implausibly large"), "message: %s", moco_last_error());

    /* A raw header announcing 1 GiB in a 40-byte file: refused before allocating. */
    uint32_t gig[3] = {16384, 256, 256};
    n = idx_bytes(buf, 3, gig, (const uint8_t *)"0123456789012345678901234", 24);
    write_file(tmp("raw_bomb.idx"), buf, n);
    CHECK("a raw IDX header announcing 1 GiB in 40 bytes is an error (truncated)",
          idx_load(tmp("raw_bomb.idx"), &a) == -1 && has("truncated"), "message: %s", moco_last_error());

    /* gzip: 4 GiB announced, 64 KiB of zeros compressed: more than deflate can expand to. */
    uint32_t four[3] = {65536, 256, 256};
    static uint8_t zeros[1 << 16];
    n = idx_bytes(buf, 3, four, zeros, sizeof buf - 16);
    write_gz(tmp("gz_bomb.idx.gz"), buf, n);
    CHECK("a gzip IDX file announcing 4 GiB in a few hundred bytes is refused before allocating",
          idx_load(tmp("gz_bomb.idx.gz"), &a) == -1 && has("more than a") && has("gzip"), "message: %s",
          moco_last_error());

    /* gzip: 1 GiB announced, 2 MiB of random bytes (incompressible, so the ratio test
     * passes): the buffer must grow with the data, not be the header's size. */
    size_t noise_n = (size_t)2 << 20;
    uint8_t *noise = malloc(noise_n + 16);
    uint32_t x = 12345;
    for (size_t i = 0; i < noise_n + 16; i++) {
        x = x * 1103515245u + 12345u;
        noise[i] = (uint8_t)(x >> 24);
    }
    idx_bytes(noise, 3, gig, noise + 16, 0); /* header in place over the first 16 bytes */
    write_gz(tmp("gz_short.idx.gz"), noise, noise_n + 16);
    free(noise);
    if (!UNDER_ASAN) { /* ASan reserves terabytes of address space; no cap possible */
        char msg[1200];
        idx_load_capped(tmp("gz_short.idx.gz"), (size_t)512 << 20, msg, sizeof msg);
        CHECK("a gzip IDX file announcing 1 GiB but holding 2 MiB fails as truncated with 512 MiB of address space to spare",
              strstr(msg, "truncated") != NULL, "child said: %s", msg);
    }

    /* A gzip file whose CRC no longer matches: the data is wrong, so loading must fail.
     * 48 KiB, more than zlib decompresses ahead, so the trailer is met only if reading goes
     * on past the data. */
    uint32_t dims[3] = {3, 128, 128};
    static uint8_t pixels[3 * 128 * 128];
    for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (uint8_t)(i * 37 / 5);
    n = idx_bytes(buf, 3, dims, pixels, sizeof pixels);
    const char *good = tmp("good.idx.gz");
    write_gz(good, buf, n);
    CHECK("a good gzip IDX file loads",
          idx_load(good, &a) == 0 && a.count == (int64_t)sizeof pixels && !memcmp(a.data, pixels, sizeof pixels), "%s",
          moco_last_error());
    idx_free(&a);
    /* The same data by hand: stored (uncompressed) deflate blocks, and a file name in the
     * gzip header sized so that the trailer starts at a multiple of zlib's 8 KiB read
     * buffer.  A reader that stops at the last data byte then never sees the trailer, and
     * a byte flipped in the data is a wrong pixel, not an error. */
    size_t gz_n;
    uint8_t *gz = gzip_aligned(buf, n, &gz_n);
    gz[gz_n - 8 - 100] ^= 0x55; /* a pixel in the last stored block */
    write_file(tmp("badcrc.idx.gz"), gz, gz_n);
    CHECK("a gzip IDX file with a corrupted byte is an error (reading goes on to the CRC in the trailer)",
          idx_load(tmp("badcrc.idx.gz"), &a) == -1 && has(tmp("badcrc.idx.gz")) && has("corrupt"), "message: %s",
          moco_last_error());
    idx_free(&a);
    gz[gz_n - 8 - 100] ^= 0x55;
    write_file(tmp("aligned.idx.gz"), gz, gz_n);
    CHECK("the same file uncorrupted loads", idx_load(tmp("aligned.idx.gz"), &a) == 0 &&
                                                 !memcmp(a.data, pixels, sizeof pixels),
          "%s", moco_last_error());
    idx_free(&a);
    free(gz);
    /* More data than the header declares, raw and gzip (torchvision asserts the same). */
    n = idx_bytes(buf, 3, dims, pixels, 256);
    put_be32(buf + 4, 1);
    put_be32(buf + 8, 16);
    put_be32(buf + 12, 16);
    memcpy(buf + n, "trailing", 8);
    write_file(tmp("long.idx"), buf, n + 8);
    CHECK("a raw IDX file longer than its header says is an error", idx_load(tmp("long.idx"), &a) == -1 &&
                                                                        has("trailing data"),
          "message: %s", moco_last_error());
    write_gz(tmp("long.idx.gz"), buf, n + 8);
    CHECK("a gzip IDX file longer than its header says is an error",
          idx_load(tmp("long.idx.gz"), &a) == -1 && has("more data than"), "message: %s", moco_last_error());
}

/* ------------------------------------------------------------ .npy */

static int write_npy(const char *path, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(h & 0xff), (uint8_t)(h >> 8)};
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(pre, 1, 10, f);
    fwrite(header, 1, h, f);
    fwrite(data, 1, n, f);
    return fclose(f);
}

static void test_npy(void) {
    double values[2] = {1.5, -2.25};
    const char *path = tmp("descr.npy");
    /* 'descr' inside a string value before the real key: a substring search read '<f4'. */
    write_npy(path, "{'note': \"'descr': '<f4',\", 'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n",
              values, sizeof values);
    Tensor *t = tensor_load_npy(path);
    CHECK("an .npy header with 'descr' inside a string value is not misread (numpy refuses the extra key)",
          t == NULL && has("unexpected key 'note'"), "loaded %s", t ? "a tensor" : moco_last_error());
    tensor_free(t);
    write_npy(path, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'descr': '<f4', }\n", values,
              sizeof values);
    t = tensor_load_npy(path);
    CHECK("an .npy header with 'descr' twice is an error", t == NULL && has("twice"), "%s",
          t ? "loaded" : moco_last_error());
    tensor_free(t);
    write_npy(path, "{'shape': (2,), 'fortran_order': False, 'descr': '<f8'}\n", values, sizeof values);
    t = tensor_load_npy(path);
    CHECK("keys in any order, without a trailing comma", t && t->numel == 2 && t->data[1] == -2.25f, "%s",
          t ? "wrong values" : moco_last_error());
    tensor_free(t);
    write_npy(path, "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }\n", values,
              sizeof values);
    t = tensor_load_npy(path);
    CHECK("an .npy header announcing 40 GB in a 16-byte data section is refused before allocating",
          t == NULL && has("truncated"), "%s", t ? "loaded" : moco_last_error());
    tensor_free(t);
}

/* ------------------------------------------------------------ a slow file and close */

typedef struct SlowDataset {
    Dataset base;
    const uint8_t *bytes;
    size_t size;
} SlowDataset;

static int slow_get(const Dataset *ds, int64_t index, Image *out, int64_t *label) {
    const SlowDataset *s = (const SlowDataset *)ds;
    *label = index % 2;
    return image_decode(s->bytes, s->size, 1, out, "slow.jpg");
}

static int64_t slow_label(const Dataset *ds, int64_t index) {
    (void)ds;
    return index % 2;
}

static const DatasetOps slow_ops = {.get = slow_get, .label = slow_label};

static void test_close_during_slow_decode(void) {
    /* A 4000x4000 progressive gray JPEG: decoding it takes a good fraction of a second. */
    int nscans;
    jpeg_scan_info *script = many_scans(&nscans);
    size_t n;
    uint8_t *bytes = encode_jpeg(3000, 3000, script, 40, &n);
    free(script);
    Image img;
    double t0 = seconds();
    int rc = image_decode(bytes, n, 1, &img, "slow.jpg");
    double decode = seconds() - t0;
    image_free(&img);
    CHECK("the slow file decodes", rc == 0, "%s", moco_last_error());

    SlowDataset *ds = (SlowDataset *)dataset_alloc(sizeof *ds, &slow_ops, "Slow");
    const char *names[2] = {"a", "b"};
    dataset_set_classes(&ds->base, 2, names);
    ds->base.length = 8;
    ds->bytes = bytes;
    ds->size = n;
    LoaderOptions o = {.batch_size = 2, .workers = 2, .prefetch = 1, .seed = 1};
    Loader *l = loader_create(&ds->base, &o, NULL, 0, LOADER_IMAGES);
    usleep((useconds_t)(decode * 0.3e6)); /* the workers are inside their first files */
    t0 = seconds();
    loader_close(l);
    double closing = seconds() - t0;
    char label[200];
    snprintf(label, sizeof label, "loader_close while workers decode a slow file returns at once (%.3f s; a decode "
             "takes %.3f s)", closing, decode);
    CHECK(label, l != NULL && closing < decode * 0.5, "took %.3f s", closing);
    dataset_release(&ds->base);

    /* The flag works for any thread's decode. */
    int flag = 1;
    image_set_cancel_flag(&flag);
    rc = image_decode(bytes, n, 1, &img, "slow.jpg");
    image_set_cancel_flag(NULL);
    CHECK("a decode whose cancel flag is set stops with an error saying so", rc == -1 && has("cancelled"), "rc %d: %s",
          rc, moco_last_error());
    free(bytes);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_fifos();
    test_jpeg_bombs();
    test_jpeg_corruption();
    test_png_bombs();
    test_idx();
    test_npy();
    test_close_during_slow_decode();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    CHECK_DONE();
}
