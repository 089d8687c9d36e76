#!/usr/bin/python3
"""tests/make_fixtures_images.py: images in every format and colour variant the decoders
take (core/image: JPEG, PNG, WebP, GIF), with PIL's decoding of each as the reference.

Run with Debian's python3 (Pillow 9.4 with libjpeg-turbo 2.1 and libwebp 1.2, numpy):
    /usr/bin/python3 tests/make_fixtures_images.py
CI does not: the outputs are committed (tests/fixtures/images/formats/, about 220 KB).

For each input <file> it writes <file>.rgb.npy and <file>.l.npy: PIL's
Image.open(path).convert("RGB") and .convert("L") (what torchvision's loader and a gray
pipeline see) as float32 arrays of shape (H, W, 3) and (H, W) holding the 0..255 values,
so the tests compare exactly.  manifest.txt lists "<file> <tolerance in levels>".

Inputs (from 25x19 and 21x17 crops of tests/fixtures/images/chelsea.png and camera.png):
  JPEG  CMYK written by PIL (Adobe marker, inverted samples), CMYK without an Adobe
        marker, YCCK (baseline and progressive; libjpeg's encoder, which PIL cannot drive,
        through a 40-line C helper compiled here), RGB without YCbCr (Adobe transform 0),
        gray progressive, 4:2:2 and 4:4:4 subsampling
  PNG   16-bit RGBA and gray+alpha, 4-bit gray, 1-bit and 4-bit palettes, gray and RGB
        with a tRNS colour, interlaced palette
  WebP  lossy, lossless, lossy and lossless with alpha, an animation (its first frame)
  GIF   PIL's (interlaced, global palette), transparency, a grayscale palette (PIL: mode
        L), local palette only, an animation (first frame), a first frame smaller than the
        logical screen and offset in it
  names a PNG named .JPEG and a JPEG named .png (formats are told by content)
"""
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "fixtures", "images")
OUT = os.path.join(SRC, "formats")

# A libjpeg writer for what PIL cannot write: YCCK, CMYK without the Adobe marker, RGB
# without the YCbCr transform.  argv: out.jpg width height components colorspace
# adobe_marker progressive < raw interleaved samples.
JPEG_HELPER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
int main(int argc, char **argv) {
    int w = atoi(argv[2]), h = atoi(argv[3]), c = atoi(argv[4]), space = atoi(argv[5]);
    unsigned char *raw = malloc((size_t)w * h * c);
    if (fread(raw, 1, (size_t)w * h * c, stdin) != (size_t)w * h * c) return 1;
    struct jpeg_compress_struct ci; struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err); jpeg_create_compress(&ci);
    FILE *f = fopen(argv[1], "wb"); jpeg_stdio_dest(&ci, f);
    ci.image_width = w; ci.image_height = h; ci.input_components = c;
    ci.in_color_space = c == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_colorspace(&ci, (J_COLOR_SPACE)space);
    ci.write_Adobe_marker = atoi(argv[6]);
    jpeg_set_quality(&ci, 90, TRUE);
    if (atoi(argv[7])) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = raw + (size_t)ci.next_scanline * w * c;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci); jpeg_destroy_compress(&ci); fclose(f);
    return 0;
}
"""
JCS_RGB, JCS_CMYK, JCS_YCCK = 2, 4, 5

manifest = []


def path(name):
    return os.path.join(OUT, name)


def reference(name, tolerance=0):
    """PIL's decoding of formats/<name>, as the tests read it."""
    im = Image.open(path(name))
    im.seek(0)
    np.save(path(name + ".rgb.npy"), np.asarray(im.convert("RGB"), dtype=np.float32))
    np.save(path(name + ".l.npy"), np.asarray(im.convert("L"), dtype=np.float32))
    manifest.append("%s %d" % (name, tolerance))


def raw_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(name, rows, width, height, bit_depth, color_type, interlace=0, extra=b""):
    """A PNG from packed scanlines (PIL cannot write 16-bit alpha or 4-bit gray)."""
    data = zlib.compress(b"".join(b"\x00" + r for r in rows), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    with open(path(name), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + raw_chunk(b"IHDR", ihdr) + extra + raw_chunk(b"IDAT", data) +
                raw_chunk(b"IEND", b""))


def pack(values, bits):
    s = "".join(format(int(v), "0%db" % bits) for v in values)
    s += "0" * (-len(s) % 8)
    return int(s, 2).to_bytes(len(s) // 8, "big")


def jpegs(chelsea, camera, helper):
    chelsea.convert("CMYK").save(path("cmyk_adobe.jpg"), quality=90)
    reference("cmyk_adobe.jpg")
    # Inverted CMYK samples, as Adobe writes them, for the libjpeg-written variants.
    cmyk = (255 - np.asarray(chelsea.convert("CMYK"))).astype(np.uint8)
    h, w = cmyk.shape[:2]
    for name, space, adobe, prog in [("cmyk_noadobe.jpg", JCS_CMYK, 0, 0), ("ycck.jpg", JCS_YCCK, 1, 0),
                                     ("ycck_progressive.jpg", JCS_YCCK, 1, 1)]:
        subprocess.run([helper, path(name), str(w), str(h), "4", str(space), str(adobe), str(prog)],
                       input=cmyk.tobytes(), check=True)
        reference(name)
    rgb = np.asarray(chelsea).astype(np.uint8)
    subprocess.run([helper, path("rgb_adobe.jpg"), str(w), str(h), "3", str(JCS_RGB), "1", "0"], input=rgb.tobytes(),
                   check=True)
    reference("rgb_adobe.jpg")
    camera.save(path("gray_progressive.jpg"), quality=85, progressive=True)
    reference("gray_progressive.jpg")
    chelsea.save(path("rgb422.jpg"), quality=80, subsampling=1)
    reference("rgb422.jpg")
    chelsea.save(path("rgb444.jpg"), quality=95, subsampling=0)
    reference("rgb444.jpg")


def pngs(chelsea, camera):
    rgba = np.dstack([np.asarray(chelsea), np.asarray(camera.resize(chelsea.size))]).astype(np.uint16)
    rgba16 = (rgba * 257 + np.arange(rgba.size).reshape(rgba.shape) % 200).astype(">u2")
    h, w = rgba.shape[:2]
    raw_png("rgba16.png", [rgba16[y].tobytes() for y in range(h)], w, h, 16, 6)
    reference("rgba16.png")
    la16 = rgba16[:, :, [0, 3]]
    raw_png("gray_alpha16.png", [la16[y].tobytes() for y in range(h)], w, h, 16, 4)
    reference("gray_alpha16.png")
    gray = np.asarray(camera)
    ch, cw = gray.shape
    raw_png("gray4.png", [pack(gray[y] >> 4, 4) for y in range(ch)], cw, ch, 4, 0)
    reference("gray4.png")
    raw_png("gray_trns.png", [gray[y].tobytes() for y in range(ch)], cw, ch, 8, 0,
            extra=raw_chunk(b"tRNS", struct.pack(">H", int(gray[0, 0]))))
    reference("gray_trns.png")
    rgb = np.asarray(chelsea)
    raw_png("rgb_trns.png", [rgb[y].tobytes() for y in range(h)], w, h, 8, 2,
            extra=raw_chunk(b"tRNS", struct.pack(">HHH", *[int(v) for v in rgb[0, 0]])))
    reference("rgb_trns.png")
    chelsea.quantize(2).save(path("palette1.png"), bits=1)
    reference("palette1.png")
    chelsea.quantize(16).save(path("palette4_interlaced.png"))
    # PIL writes palettes in 8 bits; rewrite as 4-bit, Adam7-interlaced, by hand.
    pal_img = chelsea.quantize(16)
    idx = np.asarray(pal_img)
    palette = bytes(pal_img.getpalette()[:48])
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = []
    for x0, y0, dx, dy in passes:
        sub = idx[y0::dy, x0::dx]
        if sub.size:
            rows.extend(pack(sub[i], 4) for i in range(sub.shape[0]))
    raw_png("palette4_interlaced.png", rows, w, h, 4, 3, interlace=1,
            extra=raw_chunk(b"PLTE", palette) + raw_chunk(b"tRNS", bytes([0, 128, 255])))
    reference("palette4_interlaced.png")


def webps(chelsea, camera):
    chelsea.save(path("lossy.webp"), quality=80)
    reference("lossy.webp")
    chelsea.save(path("lossless.webp"), lossless=True)
    reference("lossless.webp")
    rgba = chelsea.copy()
    rgba.putalpha(camera.resize(chelsea.size))
    rgba.save(path("lossy_alpha.webp"), quality=75)
    reference("lossy_alpha.webp")
    rgba.save(path("lossless_alpha.webp"), lossless=True)
    reference("lossless_alpha.webp")
    frames = [chelsea, chelsea.transpose(Image.FLIP_LEFT_RIGHT), chelsea.rotate(180)]
    frames[0].save(path("animated.webp"), save_all=True, append_images=frames[1:], duration=100, lossless=True)
    reference("animated.webp")


def gif_frame_offset(data, screen_w, screen_h, left, top):
    """Makes PIL's one-frame GIF's logical screen larger and moves the frame inside it."""
    b = bytearray(data)
    b[6:10] = struct.pack("<HH", screen_w, screen_h)
    flags = b[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while b[at] == 0x21:  # extensions
        at += 2
        while b[at]:
            at += b[at] + 1
        at += 1
    assert b[at] == 0x2C
    b[at + 1:at + 5] = struct.pack("<HH", left, top)
    return bytes(b)


def gif_local_palette_only(data):
    """Moves PIL's global colour table into the first image descriptor."""
    b = bytearray(data)
    flags = b[10]
    assert flags & 0x80
    size_bits = flags & 7
    table = bytes(b[13:13 + (3 << (size_bits + 1))])
    b[10] = flags & 0x70  # no global table
    rest = b[13 + len(table):]
    at = 0
    while rest[at] == 0x21:
        at += 2
        while rest[at]:
            at += rest[at] + 1
        at += 1
    assert rest[at] == 0x2C
    desc = rest[at:at + 10]
    desc[9] = 0x80 | (desc[9] & 0x40) | size_bits
    return bytes(b[:13]) + bytes(rest[:at]) + bytes(desc) + table + bytes(rest[at + 10:])


def gifs(chelsea, camera):
    chelsea.quantize(64).save(path("palette.gif"))
    reference("palette.gif")
    q = chelsea.quantize(32)
    q.save(path("transparency.gif"), transparency=5)
    reference("transparency.gif")
    camera.save(path("gray.gif"))
    reference("gray.gif")
    buf = io.BytesIO()
    chelsea.quantize(16).save(buf, "GIF", interlace=False)
    with open(path("local_palette.gif"), "wb") as f:
        f.write(gif_local_palette_only(buf.getvalue()))
    reference("local_palette.gif")
    frames = [chelsea.quantize(32), chelsea.rotate(180).quantize(32)]
    frames[0].save(path("animated.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    reference("animated.gif")
    buf = io.BytesIO()
    camera.crop((0, 0, 12, 10)).quantize(16).save(buf, "GIF")
    with open(path("small_frame.gif"), "wb") as f:
        f.write(gif_frame_offset(buf.getvalue(), 21, 17, 5, 4))
    reference("small_frame.gif")
    buf = io.BytesIO()
    camera.crop((0, 0, 12, 10)).quantize(16).save(buf, "GIF", transparency=3)
    with open(path("small_frame_transparency.gif"), "wb") as f:
        f.write(gif_frame_offset(buf.getvalue(), 21, 17, 5, 4))
    reference("small_frame_transparency.gif")


def misnamed(chelsea):
    chelsea.save(path("png_named.JPEG"), "PNG")
    reference("png_named.JPEG")
    chelsea.save(path("jpeg_named.png"), "JPEG", quality=90)
    reference("jpeg_named.png")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    # Odd sizes, so chroma subsampling and interlacing meet partial blocks.
    chelsea = Image.open(os.path.join(SRC, "chelsea.png")).convert("RGB").crop((3, 2, 28, 21))
    camera = Image.open(os.path.join(SRC, "camera.png")).convert("L").crop((5, 4, 26, 21))
    with tempfile.TemporaryDirectory() as tmp:
        helper = os.path.join(tmp, "jpeg_writer")
        with open(helper + ".c", "w") as f:
            f.write(JPEG_HELPER)
        subprocess.run(["cc", "-O1", "-o", helper, helper + ".c", "-ljpeg"], check=True)
        jpegs(chelsea, camera, helper)
    pngs(chelsea, camera)
    webps(chelsea, camera)
    gifs(chelsea, camera)
    misnamed(chelsea)
    with open(path("manifest.txt"), "w") as f:
        f.write("# <file> <max difference to PIL, in levels>; references <file>.rgb.npy, <file>.l.npy\n")
        f.write("\n".join(manifest) + "\n")
    total = sum(os.path.getsize(path(n)) for n in os.listdir(OUT))
    print("wrote %d inputs, %d KB, to %s" % (len(manifest), total // 1024, OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
