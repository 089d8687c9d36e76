#!/usr/bin/env python3
"""tests/make_fixtures_data.py: the reference fixtures for moco.data (tests/c/test_data.c,
tests/lua/test_data.lua), written by torchvision itself so that our dataset order is checked
against the implementation users compare with.

Writes under tests/fixtures/data/:
  folder/            a tiny ImageFolder tree: class names out of order and differing in case,
                     nested sub-directories whose paths sort differently from a depth-first
                     walk ("a b" < "a/deeper"), upper-case extensions, PNG and JPEG, gray and RGB,
                     and files torchvision skips (no image extension)
  folder_samples.txt what torchvision.datasets.ImageFolder makes of it:
                       classes <n>
                       class <idx> <name>
                       sample <label> <sum of the RGB pixels> <path relative to folder/>
                     (the pixel sum is of PIL's convert("RGB"), torchvision's default loader)
  fashion_mnist.txt  torchvision.datasets.FashionMNIST over the Debian package's files:
                       length <split> <n>
                       sample <split> <0-based index> <label> <sum of the 28x28 pixels>

Run with a Python that has torchvision and Pillow (here: /usr/bin/python3
tests/make_fixtures_data.py).  The outputs are small and committed; CI needs no Python."""
import gzip
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from torchvision import datasets

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "data")
FOLDER = os.path.join(OUT, "folder")
FASHION = "/usr/share/datasets/fashion-mnist"

# (path relative to folder/, kind): kind is an image format, or "text" for a non-image file.
TREE = [
    ("cat/b.png", "png-rgb"),
    ("cat/A.PNG", "png-rgb"),          # upper-case extension, and 'A' < 'b' in byte order
    ("cat/a/x.png", "png-gray"),       # gray PNG: the loader converts it to RGB
    ("cat/a b/y.jpg", "jpeg-rgb"),     # directory "cat/a b" sorts between "cat/a" and
    ("cat/a/deeper/w.png", "png-rgb"),  # "cat/a/deeper" (' ' < '/'): not depth-first order
    ("cat/notes.txt", "text"),         # skipped: not an image extension
    ("Dog/1.jpeg", "jpeg-rgb"),        # 'D' < 'a'..'z': an upper-case class comes first
    ("Dog/10.png", "png-rgb"),         # "10.png" < "2.png" in byte order
    ("Dog/2.png", "png-rgb"),
    ("ant/z.JPG", "jpeg-gray"),
    ("ant/readme", "text"),
    ("bird_2/only.png", "png-rgb"),
]


def make_image(kind, seed):
    rng = np.random.default_rng(seed)
    h, w = 6 + seed % 3, 5 + seed % 4
    if kind.endswith("gray"):
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def write_folder():
    shutil.rmtree(FOLDER, ignore_errors=True)
    for seed, (rel, kind) in enumerate(TREE):
        path = os.path.join(FOLDER, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "text":
            with open(path, "w") as f:
                f.write("not an image\n")
        elif kind.startswith("png"):
            make_image(kind, seed).save(path, format="PNG")
        else:
            make_image(kind, seed).save(path, format="JPEG", quality=90)

    ds = datasets.ImageFolder(FOLDER)
    lines = ["classes %d" % len(ds.classes)]
    for name in ds.classes:
        lines.append("class %d %s" % (ds.class_to_idx[name], name))
    for path, label in ds.samples:
        pixels = np.asarray(ds.loader(path), dtype=np.int64)  # PIL .convert("RGB")
        lines.append("sample %d %d %s" % (label, int(pixels.sum()), os.path.relpath(path, FOLDER)))
    with open(os.path.join(OUT, "folder_samples.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_fashion():
    # torchvision reads the unpacked files from <root>/FashionMNIST/raw/; unpack the package's.
    with tempfile.TemporaryDirectory() as root:
        raw = os.path.join(root, "FashionMNIST", "raw")
        os.makedirs(raw)
        for name in os.listdir(FASHION):
            with gzip.open(os.path.join(FASHION, name), "rb") as src, \
                    open(os.path.join(raw, name[:-len(".gz")]), "wb") as dst:
                shutil.copyfileobj(src, dst)
        lines = []
        for split, train in (("train", True), ("test", False)):
            ds = datasets.FashionMNIST(root, train=train, download=False)
            lines.append("length %s %d" % (split, len(ds)))
            for i in (0, 1, len(ds) - 1):
                img, label = ds[i]
                lines.append("sample %s %d %d %d" % (split, i, label, int(np.asarray(img, dtype=np.int64).sum())))
    with open(os.path.join(OUT, "fashion_mnist.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_folder()
    write_fashion()


if __name__ == "__main__":
    main()
