#!/usr/bin/python3
"""tests/bench/bench_resnet.py: the PyTorch twin of bench_resnet.lua (same models, batch
sizes and step: zero_grad, forward, backward with a fixed output gradient), for the
ratio that `make bench` prints.  Uses Debian's python3-torch; threads as the environment
says (OMP_NUM_THREADS), like moco-lua's OpenBLAS."""
import json
import sys
import time

import torch
import torchvision

quick = "--quick" in sys.argv
json_out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
configs = [
    ("resnet18-cifar b64", "resnet18", True, 64, 32, 2 if quick else 5),
    ("resnet18-cifar b256", "resnet18", True, 256, 32, 1 if quick else 3),
    ("resnet50 224 b16", "resnet50", False, 16, 224, 1 if quick else 3),
]
results = {}
torch.manual_seed(0)
for name, arch, cifar, batch, size, iters in configs:
    net = getattr(torchvision.models, arch)(num_classes=128)
    if cifar:  # the official MoCo CIFAR demo's stem
        net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = torch.nn.Identity()
    net.train()
    x = torch.randn(batch, 3, size, size)
    gy = torch.randn(batch, 128)

    def step():
        net.zero_grad()
        net(x).backward(gy)

    step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dt = (time.perf_counter() - t0) / iters
    results[name] = batch / dt
    print(f"{name:<22} {batch / dt:8.1f} images/s  ({dt:.3f} s per step, {torch.get_num_threads()} threads)")
if json_out:
    with open(json_out, "w") as f:
        json.dump(results, f)
