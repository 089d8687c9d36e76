#!/usr/bin/python3
"""tests/bench/bench_moco.py: the PyTorch side of `make bench` for training compute.

One configuration per process (so that the peak RSS it reports is that configuration's):
    bench_moco.py CONFIG [--threads N] [--iters N] [--json out.json]
CONFIG is one of the names in CONFIGS below; bench_moco.lua takes the same names.

The MoCo v2 step is the official one (moco/builder.py + main_moco.py, re-typed in
tests/make_fixtures_moco.py, whose MoCo class is imported here): momentum update, query
encoder forward, shuffled key encoder forward without gradients (the CIFAR demo's
single-process shuffle, torch.randperm), InfoNCE against the queue, cross-entropy, backward,
SGD (momentum 0.9, weight decay 1e-4), enqueue.  Both encoders use the demo's
SplitBatchNorm with 8 splits, the v2 MLP head, dim 128, K 4096, T 0.2.  resnet50-224 is a
plain torchvision ResNet-50 forward + backward with a fixed output gradient.

Timing: wall clock per step; the first two steps are warm-up; the reported time is the
fastest of --iters steps (the mean is printed too).  Run it with tcmalloc preloaded
(LD_PRELOAD=libtcmalloc_minimal.so.4) for PyTorch at its best: tests/bench/run.sh does."""
import json
import os
import resource
import sys
import time
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402

from make_fixtures_layers import SplitBatchNorm  # noqa: E402
from make_fixtures_moco import MoCo, ResNet20  # noqa: E402

# name: (kind, arch, channels, image size, batch)
CONFIGS = {
    "moco-r18-cifar-b64": ("moco", "resnet18", 3, 32, 64),
    "moco-r18-cifar-b256": ("moco", "resnet18", 3, 32, 256),
    "moco-r20-28-b256": ("moco", "resnet20", 1, 28, 256),
    "r50-224-b32": ("plain", "resnet50", 3, 224, 32),
}
BN_SPLITS, DIM, K, M, T = 8, 128, 4096, 0.99, 0.2


class RandPerm:
    """The shuffle's permutation source for make_fixtures_moco.MoCo: torch.randperm, as the
    official CIFAR demo draws it."""

    def permutation(self, n):
        return torch.randperm(n).tolist()


def encoder_factory(arch, channels):
    norm = partial(SplitBatchNorm, num_splits=BN_SPLITS)
    if arch == "resnet20":
        return lambda num_classes: ResNet20(num_classes, channels, 1, norm)

    def make(num_classes):
        net = getattr(torchvision.models, arch)(num_classes=num_classes, norm_layer=norm)
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()  # the official CIFAR demo's stem
        return net
    return make


def main():
    args = sys.argv[1:]
    name = args[0]
    threads = int(args[args.index("--threads") + 1]) if "--threads" in args else len(os.sched_getaffinity(0))
    iters = int(args[args.index("--iters") + 1]) if "--iters" in args else 3
    json_out = args[args.index("--json") + 1] if "--json" in args else None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kind, arch, channels, size, batch = CONFIGS[name]
    if kind == "moco":
        model = MoCo(encoder_factory(arch, channels), dim=DIM, K=K, m=M, T=T, mlp=True,
                     shuffle_generator=RandPerm()).train()
        opt = torch.optim.SGD(model.encoder_q.parameters(), 0.06, momentum=0.9, weight_decay=1e-4)
        crit = nn.CrossEntropyLoss()
        im_q = torch.randn(batch, channels, size, size)
        im_k = torch.randn(batch, channels, size, size)

        def step():
            outputs, labels = model(im_q, im_k)
            loss = crit(outputs[0], labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        net = getattr(torchvision.models, arch)(num_classes=1000).train()
        x = torch.randn(batch, channels, size, size)
        gy = torch.randn(batch, 1000)

        def step():
            net.zero_grad()
            net(x).backward(gy)

    step()
    step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    best = min(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = {"name": name, "images_per_s": batch / best, "best_s": best, "mean_s": sum(times) / len(times),
           "peak_rss": rss, "threads": torch.get_num_threads()}
    print(f"{name:<22} {batch / best:8.1f} images/s  (best {best:.3f} s, mean {res['mean_s']:.3f} s, "
          f"peak RSS {rss / 2**20:.0f} MiB, {res['threads']} threads)")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
