/* core/image/png.c: PNG decoding and encoding through libpng, converting like PIL.
 *
 * Every PNG variant is converted as PIL's Image.open(...).convert("RGB" / "L") would:
 * palettes are expanded (a tRNS chunk is ignored), alpha is dropped, 1/2/4-bit gray is
 * scaled to 0..255, 16-bit samples keep their high byte -- except 16-bit gray without
 * alpha, which PIL opens in mode "I" and then *clips* to 255 (Pillow's i2l / i2rgb), so
 * we clip too: a 16-bit gray PNG with values above 255 comes out mostly white in both.
 *
 * Work per file is bounded before the pixels are allocated: the pixel limit (image.h), and
 * the file's length: deflate cannot expand data more than 1032 times, so a header that
 * announces more raw pixel bytes than 1032 * the file length is a truncated file or a
 * bomb.  libpng's own limits cap ancillary chunks (a compressed text or ICC chunk could
 * otherwise inflate without bound), and a row callback stops a cancelled decode.
 *
 * libpng reports errors by longjmp.  Everything that must be freed lives in a PngDecode or
 * PngEncode struct owned by the calling function, and only a small inner function calls
 * setjmp, so a longjmp never skips a free and never reads an indeterminate local. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error.h"

typedef struct MemReader {
    const uint8_t *bytes;
    size_t size, pos;
} MemReader;

typedef struct PngDecode {
    png_structp png;
    png_infop info;
    uint8_t *pixels;        /* libpng's output rows, `height` rows of `rowbytes` */
    png_bytep *rows;
    size_t rowbytes;
    int width, height;
    int src_channels;       /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA, after libpng's transforms */
    int gray16;             /* 16-bit gray kept as 16 bits so it can be clipped like PIL */
    int is_color;           /* the file's colour type has colour (palette or RGB) */
    char msg[200];          /* libpng's message when it long-jumped */
} PngDecode;

static void on_png_error(png_structp png, png_const_charp msg) {
    char *buf = png_get_error_ptr(png);
    snprintf(buf, 200, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary chunks, unknown sRGB profiles...) do not stop PIL either. */
static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Called after each row libpng decodes (each row of each pass when interlaced). */
static void on_png_row(png_structp png, png_uint_32 row, int pass) {
    (void)row;
    (void)pass;
    if (image_cancelled()) png_error(png, "decoding cancelled");
}

/* deflate's best ratio (258-byte matches coded in 2 bits), and room for zlib headers. */
#define DEFLATE_MAX_RATIO 1032
#define DEFLATE_SLACK 1024

static void read_from_memory(png_structp png, png_bytep out, png_size_t n) {
    MemReader *r = png_get_io_ptr(png);
    if (n > r->size - r->pos) png_error(png, "file is truncated (unexpected end of data)");
    memcpy(out, r->bytes + r->pos, n);
    r->pos += n;
}

/* The part that may long-jump: header, transforms and pixel rows into d. */
static int decode_rows(PngDecode *d, MemReader *reader) {
    if (setjmp(png_jmpbuf(d->png))) return -1;
    png_set_read_fn(d->png, reader, read_from_memory);
    png_set_read_status_fn(d->png, on_png_row);
    png_set_chunk_malloc_max(d->png, (png_alloc_size_t)8 << 20); /* one ancillary chunk, decompressed */
    png_set_chunk_cache_max(d->png, 1000);                       /* ancillary chunks kept */
    png_read_info(d->png, d->info);

    png_uint_32 w, h;
    int bit_depth, color_type, interlace;
    png_get_IHDR(d->png, d->info, &w, &h, &bit_depth, &color_type, &interlace, NULL, NULL);
    if (image_check_size((long long)w, (long long)h)) return -1;
    int file_channels = png_get_channels(d->png, d->info);
    unsigned long long raw_bits = (unsigned long long)w * h * (unsigned)file_channels * (unsigned)bit_depth;
    if (raw_bits / 8 > DEFLATE_MAX_RATIO * (unsigned long long)reader->size + DEFLATE_SLACK) {
        snprintf(d->msg, sizeof d->msg, "header announces %ux%u pixels, more than a %zu-byte file can hold (file is "
                 "truncated, or a decompression bomb)", (unsigned)w, (unsigned)h, reader->size);
        return -1;
    }
    d->width = (int)w;
    d->height = (int)h;
    d->is_color = (color_type & PNG_COLOR_MASK_COLOR) != 0;
    d->gray16 = color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16;

    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d->png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(d->png);
    if (bit_depth == 16 && !d->gray16) png_set_strip_16(d->png); /* keeps the high byte, as PIL */
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);

    d->src_channels = png_get_channels(d->png, d->info);
    d->rowbytes = png_get_rowbytes(d->png, d->info);
    size_t expect = (size_t)d->width * (size_t)d->src_channels * (d->gray16 ? 2 : 1);
    if (d->src_channels < 1 || d->src_channels > 4 || d->rowbytes != expect) {
        snprintf(d->msg, sizeof d->msg, "unsupported PNG layout (colour type %d, bit depth %d)", color_type,
                 bit_depth);
        return -1;
    }
    d->pixels = malloc(d->rowbytes * (size_t)d->height);
    d->rows = malloc(sizeof *d->rows * (size_t)d->height);
    if (!d->pixels || !d->rows) {
        snprintf(d->msg, sizeof d->msg, "out of memory for a %dx%d image", d->width, d->height);
        return -1;
    }
    for (int y = 0; y < d->height; y++) d->rows[y] = d->pixels + (size_t)y * d->rowbytes;
    png_read_image(d->png, d->rows);
    /* No png_read_end: chunks after the pixels (text, a missing IEND) do not matter. */
    return 0;
}

/* libpng's rows -> the output image, PIL's convert rules (see the file comment). */
static void convert_rows(const PngDecode *d, Image *out) {
    int sc = d->src_channels, oc = out->channels;
    for (int y = 0; y < d->height; y++) {
        const uint8_t *src = d->rows[y];
        uint8_t *dst = out->data + (size_t)y * d->width * oc;
        for (int x = 0; x < d->width; x++, dst += oc) {
            if (d->gray16) {
                unsigned v = ((unsigned)src[2 * x] << 8) | src[2 * x + 1];
                uint8_t g = v >= 255 ? 255 : (uint8_t)v;
                for (int k = 0; k < oc; k++) dst[k] = g;
            } else if (sc <= 2) { /* gray, maybe with alpha */
                uint8_t g = src[x * sc];
                for (int k = 0; k < oc; k++) dst[k] = g;
            } else { /* RGB, maybe with alpha */
                const uint8_t *p = src + (size_t)x * sc;
                if (oc == 3) {
                    dst[0] = p[0];
                    dst[1] = p[1];
                    dst[2] = p[2];
                } else {
                    dst[0] = image_luma(p[0], p[1], p[2]);
                }
            }
        }
    }
}

int png_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out) {
    PngDecode d;
    memset(&d, 0, sizeof d);
    memset(out, 0, sizeof *out);
    MemReader reader = {bytes, size, 0};
    d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d.msg, on_png_error, on_png_warning);
    if (d.png) d.info = png_create_info_struct(d.png);
    int rc = -1;
    if (!d.png || !d.info) {
        moco_error("out of memory starting libpng");
    } else {
        moco_error("%s", "");
        if (decode_rows(&d, &reader) == 0) {
            int channels = want_channels ? want_channels : d.is_color ? 3 : 1;
            if (image_alloc(out, d.width, d.height, channels) == 0) {
                convert_rows(&d, out);
                rc = 0;
            }
        } else if (d.msg[0]) {
            moco_error("invalid or corrupt PNG: %s", d.msg);
        }
    }
    png_destroy_read_struct(d.png ? &d.png : NULL, d.info ? &d.info : NULL, NULL);
    free(d.rows);
    free(d.pixels);
    return rc;
}

/* ------------------------------------------------------------ encoding */

typedef struct PngEncode {
    png_structp png;
    png_infop info;
    FILE *file;
    char msg[200];
} PngEncode;

static int encode_rows(PngEncode *e, const Image *img) {
    if (setjmp(png_jmpbuf(e->png))) return -1;
    png_init_io(e->png, e->file);
    png_set_IHDR(e->png, e->info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 img->channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(e->png, e->info);
    size_t stride = (size_t)img->width * (size_t)img->channels;
    for (int y = 0; y < img->height; y++) png_write_row(e->png, img->data + (size_t)y * stride);
    png_write_end(e->png, NULL);
    return 0;
}

int png_encode(const Image *img, const char *path) {
    PngEncode e;
    memset(&e, 0, sizeof e);
    e.file = fopen(path, "wb");
    if (!e.file) return moco_error("cannot open for writing");
    e.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e.msg, on_png_error, on_png_warning);
    if (e.png) e.info = png_create_info_struct(e.png);
    int rc = -1;
    if (!e.png || !e.info) {
        moco_error("out of memory starting libpng");
    } else if (encode_rows(&e, img) == 0) {
        rc = 0;
    } else {
        moco_error("writing PNG failed: %s", e.msg);
    }
    png_destroy_write_struct(e.png ? &e.png : NULL, e.info ? &e.info : NULL);
    if (fclose(e.file) != 0 && rc == 0) rc = moco_error("writing PNG failed (disk full?)");
    if (rc) remove(path);
    return rc;
}
