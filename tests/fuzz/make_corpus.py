#!/usr/bin/env python3
"""tests/fuzz/make_corpus.py: the seed corpus of every fuzz target (tests/fuzz/corpus/<name>/).

Small valid inputs of each format, in the variants a parser must handle, so libFuzzer
starts from inside the format rather than from random bytes:
  jpeg        baseline 4:4:4 / 4:2:2 / 4:2:0, progressive, gray, CMYK (Adobe), odd sizes,
              restart markers (by libjpeg's cjpeg when available), optimised Huffman tables
  png         every colour type and bit depth, interlaced, palette with tRNS, 16-bit
  safetensors F32/F64/I64/U8 tensors, metadata, empty file list
  checkpoint  NUL-separated metadata values (see fuzz_checkpoint.c)
  npy         float32 / float64, v1 and v2 headers, scalars, empty arrays
  idx         raw and gzip IDX files (a first byte chooses: see fuzz_idx.c)
  cifar       CIFAR-10 and CIFAR-100 records
  recipe      command lines of the MoCo recipes
  webp, gif   lossy, lossless, alpha, animated WebP; palette, transparent, gray, animated GIF
  filelist    text and CSV file lists (a first byte chooses: see fuzz_filelist.c)
Run with Debian's python3 (Pillow, numpy): /usr/bin/python3 tests/fuzz/make_corpus.py.
The outputs are committed; CI does not run this.  Files that already exist are rewritten;
inputs libFuzzer found later can be added to a corpus directory by hand."""
import gzip
import io
import json
import os
import struct

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def picture(w, h, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
    noise = rng.integers(0, 32, size=base.shape)
    rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def encoded(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def jpeg_corpus():
    out("jpeg", "rgb444.jpg", encoded(picture(16, 16), "JPEG", quality=90, subsampling=0))
    out("jpeg", "rgb422.jpg", encoded(picture(24, 8), "JPEG", quality=75, subsampling=1))
    out("jpeg", "rgb420_odd.jpg", encoded(picture(17, 9), "JPEG", quality=60, subsampling=2))
    out("jpeg", "progressive.jpg", encoded(picture(32, 24), "JPEG", quality=80, progressive=True))
    out("jpeg", "optimized.jpg", encoded(picture(16, 16), "JPEG", quality=85, optimize=True))
    out("jpeg", "gray.jpg", encoded(picture(16, 12, "L"), "JPEG", quality=90))
    out("jpeg", "gray_progressive.jpg", encoded(picture(16, 12, "L"), "JPEG", progressive=True))
    out("jpeg", "cmyk.jpg", encoded(picture(16, 16, "CMYK"), "JPEG", quality=90))
    out("jpeg", "one_pixel.jpg", encoded(picture(1, 1), "JPEG"))
    out("jpeg", "tall.jpg", encoded(picture(1, 40), "JPEG"))


def png_corpus():
    out("png", "rgb.png", encoded(picture(12, 10), "PNG"))
    out("png", "rgba.png", encoded(picture(12, 10, "RGBA"), "PNG"))
    out("png", "gray.png", encoded(picture(12, 10, "L"), "PNG"))
    out("png", "gray_alpha.png", encoded(picture(12, 10, "LA"), "PNG"))
    out("png", "palette.png", encoded(picture(12, 10).quantize(16), "PNG"))
    pal = picture(12, 10).quantize(8)
    out("png", "palette_trns.png", encoded(pal, "PNG", transparency=3))
    out("png", "bits1.png", encoded(picture(13, 7, "1"), "PNG"))
    out("png", "interlaced.png", encoded(picture(12, 10), "PNG", interlace=1))
    g16 = Image.fromarray((np.arange(80, dtype=np.uint16).reshape(8, 10) * 800), "I;16")
    out("png", "gray16.png", encoded(g16, "PNG"))
    out("png", "one_pixel.png", encoded(picture(1, 1), "PNG"))
    for name in ["chelsea_rgb16.png", "camera_2bit.png", "astronaut_palette_trns.png"]:
        with open(os.path.join(HERE, "..", "fixtures", "images", name), "rb") as f:
            out("png", "fixture_" + name, f.read())


def safetensors_bytes(tensors, metadata=None):
    header, blobs, at = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def safetensors_corpus():
    out("safetensors", "f32.safetensors", safetensors_bytes({"w": ("F32", np.arange(6, dtype="<f4").reshape(2, 3))}))
    out("safetensors", "mixed.safetensors", safetensors_bytes({
        "a": ("F64", np.array([1.5, -2.0], dtype="<f8")),
        "b": ("I64", np.array([[3, 4]], dtype="<i8")),
        "c": ("U8", np.array([1, 2, 3], dtype="u1")),
        "empty": ("F32", np.zeros((0, 4), dtype="<f4")),
    }, {"format": "pt", "note": "hello"}))
    out("safetensors", "nothing.safetensors", safetensors_bytes({}, {}))


def checkpoint_corpus():
    model = json.dumps({"arch": "resnet18", "dim": 128, "K": 4096, "m": 0.99, "T": 0.1, "mlp": True,
                        "bn_splits": 8, "cifar_stem": True})
    config = json.dumps({"lr": 0.06, "epochs": 200, "batch-size": 512, "schedule": [120, 160]})
    optim = json.dumps({"steps": 10, "lr": 0.06, "momentum": 0.9, "weight_decay": 5e-4})
    loader = json.dumps({"seed": 0, "epoch": 1, "position": 3})
    sums = json.dumps({"loss": 12.5, "top1": 30, "n": 7})
    fields = [model, config, optim, loader, sums, "1", "3", "103", "0.45", "0.5", "resnet18", "2"]
    out("checkpoint", "full.bin", "\0".join(fields).encode())
    out("checkpoint", "model_only.bin", model.encode())
    out("checkpoint", "nested.bin", ("\0".join([json.dumps({"arch": "resnet50", "x": [[[{}]]]}), "[]", "null"])).encode())


def npy_corpus():
    for name in ["arange_2x3_f4.npy", "arange_2x3_f4_v2.npy", "arange_2x3_f8.npy", "scalar_f4.npy"]:
        with open(os.path.join(HERE, "..", "fixtures", "npy", name), "rb") as f:
            out("npy", name, f.read())
    b = io.BytesIO()
    np.save(b, np.zeros((0, 3), dtype="<f4"))
    out("npy", "empty.npy", b.getvalue())
    b = io.BytesIO()
    np.save(b, np.arange(24, dtype="<f8").reshape(2, 3, 4))
    out("npy", "f8_3d.npy", b.getvalue())


def idx_bytes(arr):
    return bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.astype(np.uint8).tobytes()


def idx_corpus():
    images = (np.arange(3 * 4 * 5) % 256).reshape(3, 4, 5)
    labels = np.array([0, 2, 1])
    # First byte: odd = fuzz_idx.c gzips the rest itself, even = the rest is the file.
    out("idx", "raw_images.bin", b"\0" + idx_bytes(images))
    out("idx", "raw_labels.bin", b"\0" + idx_bytes(labels))
    out("idx", "raw_rgb.bin", b"\0" + idx_bytes((np.arange(2 * 3 * 3 * 3) % 256).reshape(2, 3, 3, 3)))
    out("idx", "gz_images.bin", b"\0" + gzip.compress(idx_bytes(images), mtime=0))
    out("idx", "wrap_images.bin", b"\x01" + idx_bytes(images))
    out("idx", "wrap_labels.bin", b"\x01" + idx_bytes(labels))


def cifar_corpus():
    rng = np.random.default_rng(1)
    rec10 = b"".join(bytes([rng.integers(0, 10)]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()
                     for _ in range(2))
    out("cifar", "cifar10_2.bin", rec10)
    rec100 = b"".join(bytes([rng.integers(0, 20), rng.integers(0, 100)]) +
                      rng.integers(0, 256, 3072, dtype=np.uint8).tobytes() for _ in range(2))
    out("cifar", "cifar100_2.bin", rec100)


def webp_corpus():
    out("webp", "lossy.webp", encoded(picture(16, 12), "WEBP", quality=70))
    out("webp", "lossless.webp", encoded(picture(16, 12), "WEBP", lossless=True))
    out("webp", "alpha.webp", encoded(picture(16, 12, "RGBA"), "WEBP", quality=70))
    b = io.BytesIO()
    frames = [picture(12, 8, seed=s) for s in range(3)]
    frames[0].save(b, "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    out("webp", "animated.webp", b.getvalue())


def gif_corpus():
    out("gif", "palette.gif", encoded(picture(20, 18).quantize(16), "GIF"))
    out("gif", "transparency.gif", encoded(picture(12, 10).quantize(8), "GIF", transparency=2))
    out("gif", "gray.gif", encoded(picture(12, 10, "L"), "GIF"))
    b = io.BytesIO()
    frames = [picture(12, 8, seed=s).quantize(8) for s in range(3)]
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out("gif", "animated.gif", b.getvalue())


def filelist_corpus():
    # First byte: even = text list, odd = CSV (see fuzz_filelist.c); the directory holds
    # a.png and "sub/b c.png".
    out("filelist", "text_labels.bin", b"\0a.png 0\nsub/b c.png 1\n# comment\n")
    out("filelist", "text_bare.bin", b"\0a.png\nsub/b c.png\n")
    out("filelist", "csv_header.bin", b'\1path,label\r\na.png,0\r\n"sub/b c.png",1\r\n')
    out("filelist", "csv_quotes.bin", b'\1"a.png",3,extra\n"sub/b c.png","2"\n')


def recipe_corpus():
    lines = [
        ["--arch", "resnet18", "--lr", "0.06", "--batch-size", "512", "--epochs", "200", "--cos"],
        ["--mlp", "--aug-plus", "--moco-t", "0.2", "--schedule", "120", "160", "--no-shuffle"],
        ["--schedule=120,160", "--moco-k=4096", "--mlp", "false", "-j", "4", "-b", "32"],
        ["--help"],
        ["--", "positional", "--arch"],
        ["--moco-kk", "5"],
        ["--lr"],
        ["--resume", "runs/x", "--out", "runs/y", "--keep-checkpoints", "0", "--seed", "-3"],
    ]
    for i, argv in enumerate(lines):
        out("recipe", "argv%d.bin" % i, "\0".join(argv).encode())


if __name__ == "__main__":
    jpeg_corpus()
    png_corpus()
    safetensors_corpus()
    checkpoint_corpus()
    npy_corpus()
    idx_corpus()
    cifar_corpus()
    recipe_corpus()
    webp_corpus()
    gif_corpus()
    filelist_corpus()
