#!/usr/bin/python3
"""tests/bench/bench_resnet.py: the PyTorch twin of bench_resnet.lua (same models, batch
sizes and step: zero_grad, forward, backward with a fixed output gradient; for the MoCo
step, also the key encoder's forward without gradients), for the ratio that `make bench`
prints.  Uses Debian's python3-torch.

--threads N sets torch.set_num_threads(N) (default: the cores this process may use), the
same count bench_resnet.lua gives moco-lua.  Without it PyTorch would follow
omp_get_max_threads(), which is 1 on some machines, and the comparison would not be fair
to either side.  The reported time is the fastest step, as in bench_resnet.lua."""
import json
import os
import sys
import time

import torch
import torchvision
from torchvision.models.resnet import BasicBlock

quick = "--quick" in sys.argv
json_out = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
threads = (int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv
           else len(os.sched_getaffinity(0)))
torch.set_num_threads(threads)


class ResNet20(torch.nn.Module):
    """moco.models.resnet20: He et al.'s CIFAR ResNet (16/32/64 channels, 3 blocks per
    stage) with torchvision's BasicBlock and 1x1-conv + BN shortcuts, as models.lua."""

    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.relu = torch.nn.ReLU(inplace=True)
        layers, inplanes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(3):
                down = None
                if i == 0 and (stride != 1 or inplanes != planes):
                    down = torch.nn.Sequential(torch.nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                               torch.nn.BatchNorm2d(planes))
                blocks.append(BasicBlock(inplanes, planes, stride if i == 0 else 1, down))
                inplanes = planes
            layers.append(torch.nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def make(arch, cifar, channels):
    if arch == "resnet20":
        return ResNet20(128, channels)
    net = getattr(torchvision.models, arch)(num_classes=128)
    if cifar:  # the official MoCo CIFAR demo's stem
        net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = torch.nn.Identity()
    return net


configs = [
    ("resnet18-cifar b64", "resnet18", True, 3, 64, 32, 2 if quick else 5, False),
    ("resnet18-cifar b256", "resnet18", True, 3, 256, 32, 1 if quick else 3, False),
    ("resnet50 224 b16", "resnet50", False, 3, 16, 224, 1 if quick else 3, False),
    ("resnet20 28x28 b256", "resnet20", False, 1, 256, 28, 2 if quick else 5, False),
    ("moco-step resnet20 b256", "resnet20", False, 1, 256, 28, 2 if quick else 5, True),
]
results = {}
torch.manual_seed(0)
for name, arch, cifar, channels, batch, size, iters, moco in configs:
    if only and only not in name:
        continue
    net = make(arch, cifar, channels).train()
    net_k = None
    if moco:
        net_k = make(arch, cifar, channels).train()
        net_k.load_state_dict(net.state_dict())
        for p in net_k.parameters():
            p.requires_grad = False
    x = torch.randn(batch, channels, size, size)
    gy = torch.randn(batch, 128)

    def step():
        net.zero_grad()
        net(x).backward(gy)
        if net_k is not None:
            with torch.no_grad():
                net_k(x)

    step()
    step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    best, mean = min(times), sum(times) / len(times)
    results[name] = batch / best
    print(f"{name:<24} {batch / best:8.1f} images/s  (best {best:.3f} s, mean {mean:.3f} s per step, "
          f"{torch.get_num_threads()} threads)")
if json_out:
    with open(json_out, "w") as f:
        json.dump(results, f)
