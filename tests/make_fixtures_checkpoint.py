#!/usr/bin/python3
"""tests/make_fixtures_checkpoint.py: PyTorch side of the checkpoint interop tests
(tests/lua/test_checkpoint.lua): torchvision weights into moco-lua, and moco-lua's export
(recipes/export.lua) into torchvision.

The network is torchvision's own ResNet class (its BasicBlock, _make_layer and forward) in
the ResNet-18 layout with 1/16 of the channels (4, 8, 16, 32), so the names and the
computation are torchvision's while the file stays ~200 KB; moco-lua's twin is
moco.models.resnet18{width = 0.0625}.  Batch-norm statistics and affine parameters are
random, so eval-mode outputs depend on every tensor.

Steps:
 1. torchvision -> moco-lua: save the state dict (fc included, num_batches_tracked int64) as
    torchvision_tiny.safetensors, an input batch and the eval-mode outputs (pooled features
    before fc, and logits).
 2. moco-lua -> torchvision (needs ./moco-lua built; skipped otherwise): moco-lua builds the
    MoCo model of tests/lua/checkpoint_fixture.lua (encoder_q = the step-1 weights changed by
    exact elementwise steps), saves a checkpoint and exports it with recipes/export.lua; here
    PyTorch loads the export with load_state_dict(strict=False), which must report exactly
    fc.weight and fc.bias missing and nothing unexpected, and records its features and
    logits-free outputs as export_features.npy.  The max difference from moco-lua's own
    features for the same weights is printed (it must be float32 rounding).

Files in tests/fixtures/checkpoint/:
  torchvision_tiny.safetensors   the state dict of step 1
  input.npy                      (4, 3, 32, 32) float32
  tv_features.npy, tv_logits.npy (4, 32), (4, 10): torchvision's eval outputs on input
  export_features.npy            (4, 32): PyTorch's eval features with moco-lua's export loaded
  export_load.json               what load_state_dict(strict=False) reported for the export

safetensors: Debian 12 has no python3-safetensors; when the package is missing, the small
reader and writer below follow the published format (little-endian u64 header length, JSON
header, data) and are used instead of safetensors.torch.load_file/save_file.

    /usr/bin/python3 tests/make_fixtures_checkpoint.py      (from the repository root)"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

OUT = "tests/fixtures/checkpoint"

try:
    from safetensors.torch import load_file, save_file
    SAFETENSORS = "safetensors " + __import__("safetensors").__version__
except ImportError:
    SAFETENSORS = "the format reader/writer in this script"
    DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.uint8: "U8"}
    TORCH_DTYPES = {v: k for k, v in DTYPES.items()}

    def save_file(tensors, path, metadata=None):
        header, offset, blobs = {}, 0, []
        if metadata:
            header["__metadata__"] = metadata
        for name in sorted(tensors):
            t = tensors[name].contiguous()
            data = t.numpy().tobytes()
            header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                            "data_offsets": [offset, offset + len(data)]}
            offset += len(data)
            blobs.append(data)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))

    def load_file(path):
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        data = raw[8 + n:]
        out = {}
        for name, info in header.items():
            b, e = info["data_offsets"]
            dtype = TORCH_DTYPES[info["dtype"]]
            out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=dtype).reshape(info["shape"]) \
                if e > b else torch.zeros(info["shape"], dtype=dtype)
        return out


class TinyResNet(ResNet):
    """torchvision.models.resnet18's layout with `width` channels in the first stage instead of
    64: torchvision's BasicBlock, _make_layer and forward, and so torchvision's names."""

    def __init__(self, num_classes=10, width=4):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, width, 2)
        self.layer2 = self._make_layer(BasicBlock, 2 * width, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def randomize_batchnorm(net, g):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean.data = 0.3 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)
            m.num_batches_tracked.data = torch.tensor(17, dtype=torch.int64)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    net = TinyResNet()
    randomize_batchnorm(net, g)
    net.eval()
    x = torch.randn(4, 3, 32, 32, generator=g)
    with torch.no_grad():
        feats, logits = net.features(x), net(x)
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    save_file(sd, f"{OUT}/torchvision_tiny.safetensors", metadata={"format": "pt"})
    np.save(f"{OUT}/input.npy", x.numpy())
    np.save(f"{OUT}/tv_features.npy", feats.numpy())
    np.save(f"{OUT}/tv_logits.npy", logits.numpy())
    print(f"step 1: {len(sd)} tensors, {sum(v.numel() for v in sd.values())} values; safetensors via {SAFETENSORS}")

    exe = os.path.abspath("moco-lua")
    if not os.access(exe, os.X_OK):
        print("step 2 skipped: build ./moco-lua first (make) to check the export in PyTorch")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, export, lua_feats = f"{tmp}/ckpt.safetensors", f"{tmp}/export.safetensors", f"{tmp}/feats.npy"
        script = f"""
package.path = "tests/lua/?.lua;" .. package.path
local fixture = require "checkpoint_fixture"
local model = fixture.make_model()
moco.checkpoint.save("{ckpt}", model, {{epoch = 1}})
local enc = model.encoder_q:eval()
enc:features(moco.load_npy("{OUT}/input.npy")):clone():save_npy("{lua_feats}")
"""
        subprocess.run([exe, "-e", script], check=True)
        subprocess.run([exe, "recipes/export.lua", ckpt, export], check=True)
        tv = TinyResNet()
        result = tv.load_state_dict(load_file(export), strict=False)
        report = {"missing_keys": sorted(result.missing_keys), "unexpected_keys": sorted(result.unexpected_keys)}
        print("step 2: load_state_dict(strict=False) of the export:", report)
        assert report == {"missing_keys": ["fc.bias", "fc.weight"], "unexpected_keys": []}, report
        tv.eval()
        with torch.no_grad():
            ef = tv.features(x).numpy()
        mine = np.load(lua_feats)
        print(f"step 2: max |PyTorch - moco-lua| features on the export: {np.abs(ef - mine).max():.3g} "
              f"(max |feature| {np.abs(ef).max():.3g})")
        np.save(f"{OUT}/export_features.npy", ef)
        with open(f"{OUT}/export_load.json", "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
