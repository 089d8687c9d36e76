/* core/image/jpeg.c: JPEG decoding and encoding through libjpeg(-turbo).
 *
 * Decoding uses libjpeg's defaults (islow IDCT, fancy upsampling), which are what PIL
 * uses, so with the same libjpeg the pixels are identical to PIL's.  Colour files are
 * decoded to RGB and, for a gray request, reduced with PIL's luma (not libjpeg's Y
 * channel), as PIL's convert("L") does.
 *
 * Four-component files (CMYK, and YCCK, which libjpeg turns into CMYK) are converted as
 * PIL does, bit for bit: PIL reads every CMYK JPEG as Adobe-inverted ("CMYK;I", the
 * convention Photoshop writes, which ILSVRC's CMYK files follow), so each sample is
 * inverted first, then Pillow's cmyk2rgb: R = 255 - K' - (C * (255 - K')) / 255 with
 * K' = the inverted K, using Pillow's rounded division by 255.  PIL's convert("L") of
 * such an image goes through RGB, so gray is the luma of that RGB.
 *
 * Damaged files are errors, never gray rows.  libjpeg only *warns* when the entropy-coded
 * data is corrupt or ends early (it then pads with zeros, which is how a JPEG cut in half
 * with an end marker appended used to decode "fine"); PIL ignores those warnings.  We turn
 * every corrupt-data warning into an error (see on_jpeg_message), and keep only the
 * harmless ones (extraneous bytes before a marker, which many cameras write; unknown
 * JFIF/Adobe versions; a bad ICC profile).
 *
 * Work per file is bounded before anything large is allocated (image.h, the limits):
 *  - the pixel limit on the header's size;
 *  - the file's length: with Huffman coding every 8x8 block of a component costs at
 *    least one bit in that component's first scan, so a header that announces more blocks
 *    than 8 * the file length (for the component with the fewest blocks) is a truncated
 *    file or a bomb (a 761-byte file announcing 13000x13000), refused before
 *    jpeg_start_decompress allocates the coefficient buffer;
 *  - the number of progressive scans (each a pass over that buffer), counted by a
 *    progress monitor, which also stops the decode when it is cancelled.
 *
 * libjpeg reports errors through error_exit, which must not return: we long-jump out of
 * it.  All allocations live in a JpegDecode/JpegEncode struct owned by the caller of the
 * function that calls setjmp, and are freed there. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "codec.h"
#include "error.h"

typedef struct JpegError {
    struct jpeg_error_mgr mgr;  /* first, so a j_common_ptr's err can be cast back */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} JpegError;

static void on_jpeg_error(j_common_ptr cinfo) {
    JpegError *e = (JpegError *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* Level -1 is a warning.  Those about the compressed data itself mean pixels would be
 * invented, so they stop the decode; the rest (listed) are harmless and ignored, as PIL
 * ignores all of them.  Higher levels are trace messages. */
static void on_jpeg_message(j_common_ptr cinfo, int level) {
    if (level != -1) return;
    JpegError *e = (JpegError *)cinfo->err;
    switch (cinfo->err->msg_code) {
    case JWRN_EXTRANEOUS_DATA: /* bytes between the data and a marker: skipped, pixels unaffected */
    case JWRN_JFIF_MAJOR:
    case JWRN_ADOBE_XFORM:
    case JWRN_NOT_SEQUENTIAL:  /* odd SOS parameters in a baseline file; decoded as baseline */
#ifdef JWRN_BOGUS_ICC
    case JWRN_BOGUS_ICC:
#endif
        return;
    case JWRN_JPEG_EOF:
        snprintf(e->msg, sizeof e->msg, "file is truncated (premature end of JPEG data)");
        break;
    default: /* JWRN_HIT_MARKER, JWRN_HUFF_BAD_CODE, JWRN_MUST_RESYNC, JWRN_BOGUS_PROGRESSION, ... */
        cinfo->err->format_message(cinfo, e->msg);
        break;
    }
    longjmp(e->jump, 1);
}

/* Called by libjpeg at least once per row of 8x8 blocks it reads or outputs. */
static void on_jpeg_progress(j_common_ptr cinfo) {
    JpegError *e = (JpegError *)cinfo->err;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (image_cancelled()) {
        snprintf(e->msg, sizeof e->msg, "decoding cancelled");
        longjmp(e->jump, 1);
    }
    if (cinfo->is_decompressor && d->input_scan_number > image_max_scans()) {
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans (a decompression bomb? "
                 "moco.image.set_limits{max_scans = ...} raises the limit)", image_max_scans());
        longjmp(e->jump, 1);
    }
}

/* The header announces blocks the file is too short to hold (see the file comment). */
static int too_short_for_header(const struct jpeg_decompress_struct *cinfo, size_t size, char *msg, size_t n) {
    if (cinfo->arith_code) return 0; /* arithmetic coding can spend less than a bit per block */
    unsigned long long fewest = 0;
    for (int c = 0; c < cinfo->num_components; c++) {
        unsigned long long blocks = (unsigned long long)cinfo->comp_info[c].width_in_blocks *
                                    cinfo->comp_info[c].height_in_blocks;
        if (c == 0 || blocks < fewest) fewest = blocks;
    }
    if (fewest <= 8ull * size) return 0;
    snprintf(msg, n, "header announces %ux%u pixels, more than a %zu-byte file can hold (file is truncated, or a "
             "decompression bomb)", cinfo->image_width, cinfo->image_height, size);
    return 1;
}

typedef struct JpegDecode {
    struct jpeg_decompress_struct cinfo;
    JpegError err;
    struct jpeg_progress_mgr progress;
    int created;
    uint8_t *pixels;  /* decoded rows, width * out_channels each */
    int width, height, channels;
} JpegDecode;

static int decode_pixels(JpegDecode *d, const uint8_t *bytes, size_t size) {
    if (setjmp(d->err.jump)) return -1;
    jpeg_create_decompress(&d->cinfo);
    d->created = 1;
    d->progress.progress_monitor = on_jpeg_progress;
    d->cinfo.progress = &d->progress;
    jpeg_mem_src(&d->cinfo, bytes, (unsigned long)size);
    jpeg_read_header(&d->cinfo, TRUE);
    switch (d->cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        d->cinfo.out_color_space = JCS_GRAYSCALE;
        d->channels = 1;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        d->cinfo.out_color_space = JCS_RGB;
        d->channels = 3;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        d->cinfo.out_color_space = JCS_CMYK;
        d->channels = 4;
        break;
    default:
        snprintf(d->err.msg, sizeof d->err.msg, "unsupported JPEG colour space %d with %d components",
                 (int)d->cinfo.jpeg_color_space, d->cinfo.num_components);
        return -1;
    }
    if (image_check_size(d->cinfo.image_width, d->cinfo.image_height)) return -1;
    if (too_short_for_header(&d->cinfo, size, d->err.msg, sizeof d->err.msg)) return -1;
    jpeg_start_decompress(&d->cinfo);
    d->width = (int)d->cinfo.output_width;
    d->height = (int)d->cinfo.output_height;
    if (d->cinfo.output_components != d->channels) {
        snprintf(d->err.msg, sizeof d->err.msg, "libjpeg produced %d components, expected %d",
                 d->cinfo.output_components, d->channels);
        return -1;
    }
    size_t stride = (size_t)d->width * (size_t)d->channels;
    d->pixels = malloc(stride * (size_t)d->height);
    if (!d->pixels) {
        snprintf(d->err.msg, sizeof d->err.msg, "out of memory for a %dx%d image", d->width, d->height);
        return -1;
    }
    while (d->cinfo.output_scanline < d->cinfo.output_height) {
        JSAMPROW row = d->pixels + (size_t)d->cinfo.output_scanline * stride;
        jpeg_read_scanlines(&d->cinfo, &row, 1);
    }
    jpeg_finish_decompress(&d->cinfo);
    return 0;
}

/* Pillow's MULDIV255: a * b / 255, rounded, in integers. */
static inline int muldiv255(int a, int b) {
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* libjpeg's CMYK samples (Adobe-inverted) -> RGB, as PIL's "CMYK;I" + convert("RGB"). */
static void cmyk_to_rgb(const uint8_t *in, uint8_t *rgb, size_t n) {
    for (size_t i = 0; i < n; i++, in += 4, rgb += 3) {
        int nk = in[3]; /* 255 - K, K being the inverted sample */
        for (int k = 0; k < 3; k++) {
            int v = nk - muldiv255(255 - in[k], nk);
            rgb[k] = (uint8_t)(v < 0 ? 0 : v);
        }
    }
}

int jpeg_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out) {
    JpegDecode d;
    memset(&d, 0, sizeof d);
    memset(out, 0, sizeof *out);
    d.cinfo.err = jpeg_std_error(&d.err.mgr);
    d.err.mgr.error_exit = on_jpeg_error;
    d.err.mgr.emit_message = on_jpeg_message;
    moco_error("%s", "");
    int rc = -1;
    int decoded = decode_pixels(&d, bytes, size) == 0;
    if (decoded && d.channels == 4) {
        /* CMYK: to RGB in place (3 bytes written per 4 read, never ahead of the reads). */
        cmyk_to_rgb(d.pixels, d.pixels, (size_t)d.width * (size_t)d.height);
        d.channels = 3;
    }
    if (decoded) {
        int channels = want_channels ? want_channels : d.channels;
        if (image_alloc(out, d.width, d.height, channels) == 0) {
            size_t n = (size_t)d.width * (size_t)d.height;
            if (channels == d.channels) {
                memcpy(out->data, d.pixels, n * (size_t)channels);
            } else if (channels == 3) { /* gray file, RGB wanted: replicate */
                for (size_t i = 0; i < n; i++) out->data[3 * i] = out->data[3 * i + 1] = out->data[3 * i + 2] = d.pixels[i];
            } else { /* colour file, gray wanted: PIL's luma on the RGB pixels */
                for (size_t i = 0; i < n; i++)
                    out->data[i] = image_luma(d.pixels[3 * i], d.pixels[3 * i + 1], d.pixels[3 * i + 2]);
            }
            rc = 0;
        }
    } else if (d.err.msg[0]) {
        moco_error("invalid or corrupt JPEG: %s", d.err.msg);
    }
    if (d.created) jpeg_destroy_decompress(&d.cinfo);
    free(d.pixels);
    return rc;
}

/* ------------------------------------------------------------ encoding */

typedef struct JpegEncode {
    struct jpeg_compress_struct cinfo;
    JpegError err;
    int created;
    FILE *file;
} JpegEncode;

static int encode_pixels(JpegEncode *e, const Image *img, int quality) {
    if (setjmp(e->err.jump)) return -1;
    jpeg_create_compress(&e->cinfo);
    e->created = 1;
    jpeg_stdio_dest(&e->cinfo, e->file);
    e->cinfo.image_width = (JDIMENSION)img->width;
    e->cinfo.image_height = (JDIMENSION)img->height;
    e->cinfo.input_components = img->channels;
    e->cinfo.in_color_space = img->channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&e->cinfo);
    jpeg_set_quality(&e->cinfo, quality, TRUE);
    jpeg_start_compress(&e->cinfo, TRUE);
    size_t stride = (size_t)img->width * (size_t)img->channels;
    while (e->cinfo.next_scanline < e->cinfo.image_height) {
        JSAMPROW row = img->data + (size_t)e->cinfo.next_scanline * stride;
        jpeg_write_scanlines(&e->cinfo, &row, 1);
    }
    jpeg_finish_compress(&e->cinfo);
    return 0;
}

int jpeg_encode(const Image *img, const char *path, int quality) {
    JpegEncode e;
    memset(&e, 0, sizeof e);
    e.file = fopen(path, "wb");
    if (!e.file) return moco_error("cannot open for writing");
    e.cinfo.err = jpeg_std_error(&e.err.mgr);
    e.err.mgr.error_exit = on_jpeg_error;
    e.err.mgr.emit_message = on_jpeg_message;
    int rc = encode_pixels(&e, img, quality) == 0 ? 0 : moco_error("writing JPEG failed: %s", e.err.msg);
    if (e.created) jpeg_destroy_compress(&e.cinfo);
    if (fclose(e.file) != 0 && rc == 0) rc = moco_error("writing JPEG failed (disk full?)");
    if (rc) remove(path);
    return rc;
}
