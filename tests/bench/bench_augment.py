#!/usr/bin/python3
"""tests/bench/bench_augment.py: the torchvision twin of bench_augment.lua -- samples/s of
the MoCo v2 augmentation (TwoCropsTransform of the official main_moco.py --aug-plus
pipeline, PIL + torchvision.transforms) through a torch.utils.data.DataLoader with
num_workers = 1 and 2 (worker processes; batch 256 at 32x32, 32 at 224, shuffle,
drop_last), timed like the Lua side: the first batch is not counted, the rest of the
epoch is.

  /usr/bin/python3 tests/bench/bench_augment.py [--quick] [--json out.json]
                   [--cifar DIR] [--folder DIR]

--cifar DIR holds a CIFAR-10 binary test_batch.bin and --folder DIR an ImageFolder of
JPEGs (bench_augment.lua passes the files it made, so both sides read the same data);
without them this script makes its own (random CIFAR-like records; 500x375 JPEGs from
the fixture photos, resized up with grain, quality 90)."""
import json
import os
import random
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision.datasets as datasets
import torchvision.transforms as transforms
from PIL import Image, ImageFilter

quick = "--quick" in sys.argv


def arg(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


class GaussianBlur:
    """MoCo v2's moco/loader.py GaussianBlur: PIL's blur with sigma ~ U[0.1, 2]."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.sigma[0], self.sigma[1])))


class TwoCropsTransform:
    def __init__(self, base):
        self.base = base

    def __call__(self, x):
        return [self.base(x), self.base(x)]


def moco_v2(size, mean, std):
    return TwoCropsTransform(transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([GaussianBlur([0.1, 2.0])], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ]))


class CifarBinary(torch.utils.data.Dataset):
    """A CIFAR-10 binary batch file, each item as torchvision's CIFAR10 gives it
    (Image.fromarray of the HWC uint8 array, then the transform)."""

    def __init__(self, path, transform):
        raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
        self.labels = raw[:, 0].astype(np.int64)
        self.images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def make_data(tmp):
    n_cifar, n_photos = (2048, 96) if quick else (10240, 384)
    os.makedirs(f"{tmp}/cifar")
    rng = np.random.default_rng(1)
    records = rng.integers(0, 256, size=(n_cifar, 3073), dtype=np.uint8)
    records[:, 0] = np.arange(n_cifar) % 10
    records.tofile(f"{tmp}/cifar/test_batch.bin")
    os.makedirs(f"{tmp}/jpeg/photos")
    here = os.path.join(os.path.dirname(__file__), "..", "fixtures", "images")
    sources = [Image.open(os.path.join(here, n)).convert("RGB")
               for n in ("coffee.jpg", "chelsea.png", "astronaut.png", "coffee_progressive.jpg")]
    for i in range(n_photos):
        src = sources[i % len(sources)]
        h = int(src.height * rng.uniform(0.6, 1.0))
        w = min(src.width, int(h * 4 / 3))
        top, left = int((src.height - h) * rng.uniform()), int((src.width - w) * rng.uniform())
        img = src.crop((left, top, left + w, top + h)).resize((500, 375), Image.BILINEAR)
        x = np.asarray(img, dtype=np.float32) + (rng.uniform(size=(375, 500, 3)) - 0.5) * 0.3 * 255
        Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(f"{tmp}/jpeg/photos/{i:04d}.jpg", quality=90)
    return f"{tmp}/cifar", f"{tmp}/jpeg"


def main():
    tmp = None
    cifar_dir, folder = arg("--cifar"), arg("--folder")
    if not cifar_dir or not folder:
        tmp = tempfile.mkdtemp()
        cifar_dir, folder = make_data(tmp)
    workloads = [
        ("cifar32", CifarBinary(f"{cifar_dir}/test_batch.bin",
                                moco_v2(32, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])), 256),
        ("jpeg224", datasets.ImageFolder(folder, moco_v2(224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])), 32),
    ]
    print(f"torch {torch.__version__}, torchvision DataLoader (worker processes), {os.cpu_count()} cores")
    results = {}
    for name, ds, batch in workloads:
        for workers in (1, 2):
            loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True,
                                                 num_workers=workers)
            it = iter(loader)
            next(it)  # warm-up: worker processes start, first reads
            n, t0 = 0, time.perf_counter()
            for (q, _k), _labels in it:
                n += q.shape[0]
            dt = time.perf_counter() - t0
            key = f"augment {name} w{workers}"
            results[key] = n / dt
            print(f"{key:<20} {n / dt:8.1f} samples/s  ({n} samples x 2 views in {dt:.2f} s)")
    if arg("--json"):
        with open(arg("--json"), "w") as f:
            json.dump(results, f)
    if tmp:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
