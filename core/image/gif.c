/* core/image/gif.c: the first frame of a GIF through giflib, as PIL opens it.
 *
 * PIL (Pillow 9.4, GifImagePlugin) gives frame 0 of a GIF as a palette image the size of
 * the logical screen: pixels outside the first frame's rectangle hold the frame's
 * transparent index when its graphic control extension has one, else index 0; the
 * frame's own palette (local colour table) wins over the global one; with no palette at
 * all the indices are gray levels (mode "L").  convert("RGB") looks every index up in the
 * palette, ignoring transparency; convert("L") takes the luma of that RGB.  So do we.
 * Indices beyond the palette's entries map to black.
 *
 * Only the records up to the first image are read: a GIF with thousands of frames costs
 * no more than its first.  The screen size is checked against the pixel limit before
 * anything is allocated, and a frame must lie inside the screen; rows check the cancel
 * flag.  giflib reports errors as codes, without long jumps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>

#include "codec.h"
#include "error.h"

typedef struct GifMemory {
    const uint8_t *bytes;
    size_t size, pos;
} GifMemory;

static int read_memory(GifFileType *gif, GifByteType *buf, int n) {
    GifMemory *m = gif->UserData;
    size_t left = m->size - m->pos, want = n > 0 ? (size_t)n : 0;
    if (want > left) want = left;
    memcpy(buf, m->bytes + m->pos, want);
    m->pos += want;
    return (int)want;
}

static int gif_failure(int code) {
    const char *text = GifErrorString(code);
    if (code == D_GIF_ERR_READ_FAILED || code == D_GIF_ERR_EOF_TOO_SOON)
        return moco_error("invalid or corrupt GIF: file is truncated");
    return moco_error("invalid or corrupt GIF: %s", text ? text : "error");
}

/* Reads records up to the first image: its descriptor in gif->Image, its rows (screen
 * coordinates) into canvas, and its transparent index (-1: none). */
static int read_first_frame(GifFileType *gif, uint8_t *canvas, int *transparent) {
    *transparent = -1;
    GifRecordType type;
    for (;;) {
        if (DGifGetRecordType(gif, &type) == GIF_ERROR) return gif_failure(gif->Error);
        if (type == TERMINATE_RECORD_TYPE) return moco_error("invalid or corrupt GIF: no image in the file");
        if (type == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *ext;
            if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR) return gif_failure(gif->Error);
            if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4)
                *transparent = (ext[1] & 1) ? ext[4] : -1;
            while (ext)
                if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR) return gif_failure(gif->Error);
            continue;
        }
        if (type != IMAGE_DESC_RECORD_TYPE) continue;
        if (DGifGetImageDesc(gif) == GIF_ERROR) return gif_failure(gif->Error);
        const GifImageDesc *d = &gif->Image;
        if (d->Left < 0 || d->Top < 0 || d->Width < 1 || d->Height < 1 || d->Left + d->Width > gif->SWidth ||
            d->Top + d->Height > gif->SHeight)
            return moco_error("invalid or corrupt GIF: the first frame (%dx%d at %d,%d) lies outside the %dx%d screen",
                              d->Width, d->Height, d->Left, d->Top, gif->SWidth, gif->SHeight);
        memset(canvas, *transparent >= 0 ? *transparent : 0, (size_t)gif->SWidth * (size_t)gif->SHeight);
        /* Interlaced rows come in four passes: every 8th from 0, every 8th from 4, every
         * 4th from 2, every 2nd from 1. */
        static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
        int passes = d->Interlace ? 4 : 1;
        for (int p = 0; p < passes; p++)
            for (int y = d->Interlace ? start[p] : 0; y < d->Height; y += d->Interlace ? step[p] : 1) {
                if (image_cancelled()) return moco_error("decoding cancelled");
                uint8_t *row = canvas + (size_t)(d->Top + y) * (size_t)gif->SWidth + (size_t)d->Left;
                if (DGifGetLine(gif, row, d->Width) == GIF_ERROR) return gif_failure(gif->Error);
            }
        return 0;
    }
}

int gif_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out) {
    memset(out, 0, sizeof *out);
    GifMemory mem = {bytes, size, 0};
    int err = 0;
    GifFileType *gif = DGifOpen(&mem, read_memory, &err);
    if (!gif) return gif_failure(err);
    int rc = -1;
    uint8_t *canvas = NULL, *rgb = NULL;
    if (image_check_size(gif->SWidth, gif->SHeight)) goto done;
    size_t n = (size_t)gif->SWidth * (size_t)gif->SHeight;
    canvas = malloc(n);
    if (!canvas) {
        moco_error("out of memory for a %dx%d image", gif->SWidth, gif->SHeight);
        goto done;
    }
    int transparent;
    if (read_first_frame(gif, canvas, &transparent)) goto done;
    const ColorMapObject *map = gif->Image.ColorMap ? gif->Image.ColorMap : gif->SColorMap;
    if (!map) { /* no palette: the indices are gray levels (PIL's mode "L") */
        if (image_alloc(out, gif->SWidth, gif->SHeight, want_channels ? want_channels : 1)) goto done;
        image_fill_from(out, canvas, 1);
        rc = 0;
        goto done;
    }
    rgb = malloc(3 * n);
    if (!rgb) {
        moco_error("out of memory for a %dx%d image", gif->SWidth, gif->SHeight);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        int c = canvas[i];
        GifColorType color = c < map->ColorCount ? map->Colors[c] : (GifColorType){0, 0, 0};
        rgb[3 * i] = color.Red;
        rgb[3 * i + 1] = color.Green;
        rgb[3 * i + 2] = color.Blue;
    }
    if (image_alloc(out, gif->SWidth, gif->SHeight, want_channels ? want_channels : 3)) goto done;
    image_fill_from(out, rgb, 3);
    rc = 0;
done:
    DGifCloseFile(gif, &err);
    free(canvas);
    free(rgb);
    return rc;
}
