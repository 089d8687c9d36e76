#!/usr/bin/python3
"""tests/make_fixtures_transforms.py: reference images and expected outputs for the image
codecs and the transforms (core/image, lua/moco/transforms.lua).

Needs Debian's python3-torch, python3-torchvision (0.14), python3-pil (9.4) and
python3-skimage; run from anywhere with /usr/bin/python3 (CI does not: the outputs are
committed).  Writes tests/fixtures/images/:

  inputs      small crops of scikit-image's sample photos (astronaut, chelsea, coffee,
              camera) in every format variant the decoder handles: RGB / gray / palette /
              palette with tRNS / RGBA / gray+alpha / 1-bit / 2-bit / 16-bit RGB / 16-bit
              gray / Adam7-interlaced PNGs, baseline / progressive / gray / CMYK JPEGs
  dec_*.npy   PIL's decoding of each input, convert("RGB") and convert("L"), as
              torchvision's to_tensor gives it: (C, H, W) float32 in [0, 1]
  op_*.npy    to_tensor of a deterministic torchvision op applied to chelsea.png (RGB
              48x36) or camera.png (L 40x30), parameters in the name and in OPS below
  ops.txt     one line per op fixture: name, input, description (read by the tests)

Everything is deterministic; rerunning gives the same bytes (except PNG/JPEG encoder
versions).  Total size stays well under 2 MB.
"""
import os
import struct
import zlib

import numpy as np
import skimage.data
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "images")


# ---------------------------------------------------------------- a raw PNG writer
# PIL cannot write 16-bit RGB, 2-bit gray or interlaced PNGs; this writes them directly.
def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_raw_png(path, rows, width, height, bit_depth, color_type, interlace=0, extra=b""):
    """rows: a list of packed scanlines (without filter bytes), already in pass order
    for interlaced images."""
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
    data += _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def adam7_rows(pixels):
    """Scanlines of the 7 Adam7 passes of an (H, W, C) uint8 array."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = []
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        rows.extend(sub[i].tobytes() for i in range(sub.shape[0]))
    return rows


def pack_bits(values, bits):
    """One scanline of `bits`-bit samples, MSB first, padded to a byte."""
    s = "".join(format(int(v), "0%db" % bits) for v in values)
    s += "0" * (-len(s) % 8)
    return int(s, 2).to_bytes(len(s) // 8, "big")


# ---------------------------------------------------------------- helpers
def to_tensor(img):
    return F.to_tensor(img).numpy().astype(np.float32)


def save_npy(name, array):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(array, dtype=np.float32))


def small(array, size):
    """A sample photo shrunk with PIL (any filter will do: this is just the input)."""
    return Image.fromarray(array).resize(size, Image.BICUBIC)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    path = lambda name: os.path.join(OUT, name)

    chelsea = small(skimage.data.chelsea(), (48, 36))        # RGB, w x h
    astronaut = small(skimage.data.astronaut(), (40, 40))
    coffee = small(skimage.data.coffee(), (64, 48))
    camera = small(skimage.data.camera(), (40, 30))          # L

    # ---- inputs
    chelsea.save(path("chelsea.png"))
    astronaut.save(path("astronaut.png"))
    camera.save(path("camera.png"))
    coffee.save(path("coffee.jpg"), quality=90)
    coffee.save(path("coffee_progressive.jpg"), quality=90, progressive=True)
    camera.save(path("camera_gray.jpg"), quality=90)
    chelsea.convert("CMYK").save(path("chelsea_cmyk.jpg"), quality=90)
    astronaut.quantize(16).save(path("astronaut_palette4.png"), bits=4)
    pal = astronaut.quantize(64)
    pal.info.pop("transparency", None)
    pal.save(path("astronaut_palette_trns.png"), transparency=bytes(range(0, 256, 4)))
    rgba = astronaut.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(astronaut.size))
    rgba.save(path("astronaut_rgba.png"))
    la = camera.convert("LA")
    la.putalpha(Image.linear_gradient("L").resize(camera.size))
    la.save(path("camera_gray_alpha.png"))
    camera.convert("1").save(path("camera_1bit.png"))
    cam = np.asarray(camera)
    write_raw_png(path("camera_2bit.png"), [pack_bits(r >> 6, 2) for r in cam], cam.shape[1], cam.shape[0], 2, 0)
    rng = np.random.default_rng(5)
    ch = np.asarray(chelsea).astype(np.uint16)
    rgb16 = (ch * 257 + rng.integers(-128, 128, ch.shape)).clip(0, 65535).astype(">u2")
    write_raw_png(path("chelsea_rgb16.png"), [r.tobytes() for r in rgb16], 48, 36, 16, 2)
    gray16 = (cam.astype(np.uint16) * 4).astype(">u2")     # 0..1020: PIL clips above 255
    write_raw_png(path("camera_gray16.png"), [r.tobytes() for r in gray16], 40, 30, 16, 0)
    write_raw_png(path("chelsea_interlaced.png"), adam7_rows(np.asarray(chelsea)), 48, 36, 8, 2, interlace=1)

    # ---- decoding as PIL does it
    inputs = ["chelsea.png", "astronaut.png", "camera.png", "coffee.jpg", "coffee_progressive.jpg",
              "camera_gray.jpg", "astronaut_palette4.png", "astronaut_palette_trns.png", "astronaut_rgba.png",
              "camera_gray_alpha.png", "camera_1bit.png", "camera_2bit.png", "chelsea_rgb16.png",
              "camera_gray16.png", "chelsea_interlaced.png"]
    import warnings
    warnings.simplefilter("ignore")   # "Palette images with Transparency expressed in bytes..."
    for name in inputs:
        im = Image.open(path(name))
        stem = os.path.splitext(name)[0]
        save_npy("dec_%s_rgb" % stem, to_tensor(im.convert("RGB")))
        save_npy("dec_%s_l" % stem, to_tensor(im.convert("L")))

    # ---- deterministic ops
    rgb = Image.open(path("chelsea.png")).convert("RGB")
    gray = Image.open(path("camera.png")).convert("L")
    ops = [
        # name, input, description (parsed by the tests), function
        ("resize_down", "rgb", "resize 20 27", lambda im: F.resize(im, [20, 27])),
        ("resize_shorter", "rgb", "resize_shorter 24", lambda im: T.Resize(24)(im)),
        ("resize_up", "rgb", "resize 50 70", lambda im: F.resize(im, [50, 70])),
        ("resize_width_only", "rgb", "resize 36 30", lambda im: F.resize(im, [36, 30])),
        ("resize_height_only", "rgb", "resize 50 48", lambda im: F.resize(im, [50, 48])),
        ("resize_gray", "gray", "resize 17 23", lambda im: F.resize(im, [17, 23])),
        ("resized_crop", "rgb", "resized_crop 5 7 20 30 32 32", lambda im: F.resized_crop(im, 5, 7, 20, 30, [32, 32])),
        ("resized_crop_up", "rgb", "resized_crop 10 3 9 13 40 40", lambda im: F.resized_crop(im, 10, 3, 9, 13, [40, 40])),
        ("center_crop", "rgb", "center_crop 23 27", lambda im: T.CenterCrop((23, 27))(im)),
        ("center_crop_pad", "rgb", "center_crop 41 55", lambda im: T.CenterCrop((41, 55))(im)),
        ("center_crop_mixed", "rgb", "center_crop 20 61", lambda im: T.CenterCrop((20, 61))(im)),
        ("hflip", "rgb", "hflip", lambda im: F.hflip(im)),
        ("brightness_1.3", "rgb", "brightness 1.3", lambda im: F.adjust_brightness(im, 1.3)),
        ("brightness_0.6", "rgb", "brightness 0.6", lambda im: F.adjust_brightness(im, 0.6)),
        ("contrast_0.7", "rgb", "contrast 0.7", lambda im: F.adjust_contrast(im, 0.7)),
        ("contrast_1.4", "rgb", "contrast 1.4", lambda im: F.adjust_contrast(im, 1.4)),
        ("saturation_1.5", "rgb", "saturation 1.5", lambda im: F.adjust_saturation(im, 1.5)),
        ("saturation_0.5", "rgb", "saturation 0.5", lambda im: F.adjust_saturation(im, 0.5)),
        ("hue_0.1", "rgb", "hue 0.1", lambda im: F.adjust_hue(im, 0.1)),
        ("hue_-0.2", "rgb", "hue -0.2", lambda im: F.adjust_hue(im, -0.2)),
        ("hue_0.5", "rgb", "hue 0.5", lambda im: F.adjust_hue(im, 0.5)),
        ("hue_-0.5", "rgb", "hue -0.5", lambda im: F.adjust_hue(im, -0.5)),
        ("grayscale_3", "rgb", "grayscale 3", lambda im: F.rgb_to_grayscale(im, 3)),
        ("grayscale_1", "rgb", "grayscale 1", lambda im: F.rgb_to_grayscale(im, 1)),
        ("blur_0.8", "rgb", "blur 0.8", lambda im: im.filter(ImageFilter.GaussianBlur(radius=0.8))),
        ("blur_2.0", "rgb", "blur 2.0", lambda im: im.filter(ImageFilter.GaussianBlur(radius=2.0))),
        ("blur_0.1", "rgb", "blur 0.1", lambda im: im.filter(ImageFilter.GaussianBlur(radius=0.1))),
        ("brightness_gray", "gray", "brightness 1.3", lambda im: F.adjust_brightness(im, 1.3)),
        ("contrast_gray", "gray", "contrast 0.7", lambda im: F.adjust_contrast(im, 0.7)),
        ("saturation_gray", "gray", "saturation 1.5", lambda im: F.adjust_saturation(im, 1.5)),
        ("blur_gray_1.7", "gray", "blur 1.7", lambda im: im.filter(ImageFilter.GaussianBlur(radius=1.7))),
        ("blur_gray_30", "gray", "blur 30", lambda im: im.filter(ImageFilter.GaussianBlur(radius=30))),
    ]
    lines = []
    for name, which, desc, fn in ops:
        out = fn(rgb if which == "rgb" else gray)
        save_npy("op_" + name, to_tensor(out))
        lines.append("%s %s %s" % (name, which, desc))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    save_npy("op_normalize", F.normalize(F.to_tensor(rgb), mean, std).numpy())
    lines.append("normalize rgb normalize 0.485 0.456 0.406 0.229 0.224 0.225")
    with open(path("ops.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print("wrote %d files, %.0f KB, to %s" % (len(os.listdir(OUT)), total / 1024, OUT))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
