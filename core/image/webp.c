/* core/image/webp.c: WebP decoding through libwebp, as PIL opens WebP files.
 *
 * PIL (Pillow 9.4, WebPImagePlugin) decodes every WebP through libwebp's animation
 * decoder, as RGB or RGBA, and convert("RGB") drops the alpha channel (no compositing).
 * So do we: the decoded RGBA (libwebp's default, fancy upsampling) with alpha dropped, or
 * its luma for gray.  An animation gives its first frame, drawn at its offset on a canvas
 * of transparent black, as libwebp's animation decoder starts one.
 *
 * Work per file: the canvas size is checked against the pixel limit before anything is
 * allocated; decoding is incremental, in 16 KiB pieces of input, and checks the cancel
 * flag between them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "codec.h"
#include "error.h"

#define WEBP_PIECE 16384

static const char *status_text(VP8StatusCode s) {
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "file is truncated";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "file is truncated (not enough data)";
    default: return "error";
    }
}

/* Decodes one frame's bitstream into rgba (stride bytes per row, w x h). */
static int decode_frame(const uint8_t *bytes, size_t size, uint8_t *rgba, int w, int h, size_t stride) {
    WebPDecBuffer buf;
    if (!WebPInitDecBuffer(&buf)) return moco_error("libwebp version mismatch");
    buf.colorspace = MODE_RGBA;
    buf.is_external_memory = 1;
    buf.u.RGBA.rgba = rgba;
    buf.u.RGBA.stride = (int)stride;
    buf.u.RGBA.size = stride * (size_t)h;
    buf.width = w;
    buf.height = h;
    WebPIDecoder *idec = WebPINewDecoder(&buf);
    if (!idec) return moco_error("out of memory starting libwebp");
    VP8StatusCode status = VP8_STATUS_SUSPENDED;
    for (size_t at = 0; at < size && status == VP8_STATUS_SUSPENDED; at += WEBP_PIECE) {
        if (image_cancelled()) {
            WebPIDelete(idec);
            return moco_error("decoding cancelled");
        }
        size_t n = size - at < WEBP_PIECE ? size - at : WEBP_PIECE;
        status = WebPIAppend(idec, bytes + at, n);
    }
    WebPIDelete(idec);
    WebPFreeDecBuffer(&buf);
    if (status != VP8_STATUS_OK) return moco_error("invalid or corrupt WebP: %s", status_text(status));
    return 0;
}

int webp_decode(const uint8_t *bytes, size_t size, int want_channels, Image *out) {
    memset(out, 0, sizeof *out);
    WebPBitstreamFeatures f;
    VP8StatusCode status = WebPGetFeatures(bytes, size, &f);
    if (status != VP8_STATUS_OK) return moco_error("invalid or corrupt WebP: %s", status_text(status));
    WebPData data = {bytes, size};
    WebPDemuxer *demux = WebPDemux(&data);
    if (!demux) return moco_error("invalid or corrupt WebP: the container cannot be parsed");
    int rc = -1;
    uint8_t *rgba = NULL;
    WebPIterator frame;
    memset(&frame, 0, sizeof frame);
    int w = (int)WebPDemuxGetI(demux, WEBP_FF_CANVAS_WIDTH), h = (int)WebPDemuxGetI(demux, WEBP_FF_CANVAS_HEIGHT);
    if (image_check_size(w, h)) goto done;
    if (!WebPDemuxGetFrame(demux, 1, &frame)) {
        moco_error("invalid or corrupt WebP: no frame");
        goto done;
    }
    if (frame.x_offset < 0 || frame.y_offset < 0 || frame.width < 1 || frame.height < 1 ||
        frame.x_offset + frame.width > w || frame.y_offset + frame.height > h) {
        moco_error("invalid or corrupt WebP: the first frame lies outside the canvas");
        goto done;
    }
    size_t stride = (size_t)w * 4;
    rgba = calloc((size_t)h, stride); /* transparent black around the first frame */
    if (!rgba) {
        moco_error("out of memory for a %dx%d image", w, h);
        goto done;
    }
    uint8_t *at = rgba + (size_t)frame.y_offset * stride + (size_t)frame.x_offset * 4;
    if (decode_frame(frame.fragment.bytes, frame.fragment.size, at, frame.width, frame.height, stride)) goto done;
    int channels = want_channels ? want_channels : 3;
    if (image_alloc(out, w, h, channels)) goto done;
    image_fill_from(out, rgba, 4);
    rc = 0;
done:
    WebPDemuxReleaseIterator(&frame);
    WebPDemuxDelete(demux);
    free(rgba);
    return rc;
}
