#!/usr/bin/python3
"""tests/make_fixtures_torch.py: PyTorch's side of the torch.save reader and writers
(core/io/torchfile.c, core/io/torchsave.c, lua/moco/torch.lua): the files CI reads without
torch, and the check, in PyTorch, of what moco-lua writes.

Files in tests/fixtures/torch/ (run from the repository root with Debian's python3-torch):
  views_zip.pth, views_legacy.pth   one dict in both layouts (and views_zip64.pth: the zip
                                    entries again in a zip64 archive, which torch.load reads): float32 views sharing a storage
                                    (transpose, row, column, offset, expanded with stride 0),
                                    float16, bfloat16, float64, int64, int32, int16, int8,
                                    uint8, bool, a 0-d and an empty tensor, an nn.Parameter,
                                    and plain entries (int, float, str, None, bool, nested
                                    list/tuple/dict); views.json lists them
  views.<name>.npy                  each tensor as float32, the expectation
  moco_v2_tiny.pth.tar              an official-MoCo-v2-shaped checkpoint in the legacy layout
                                    main_moco.py's torch 1.x wrote: {'epoch', 'arch':
                                    'resnet50', 'state_dict': module.encoder_q.* /
                                    module.encoder_k.* / module.queue / module.queue_ptr,
                                    'optimizer': SGD's state_dict}; the encoder is torchvision's
                                    ResNet-50 layout at 1/32 of the channels with the v2 MLP head
  moco_v1_tiny.pth.tar              the same for v1 (no MLP head) in the zip layout
  resnet50_tiny.pth                 a torchvision state dict (fc of 10 classes), zip layout
  resnet50_tiny_legacy.pth          the same, legacy layout (as resnet50-0676ba61.pth)
  input.npy (2, 3, 32, 32)          an input batch
  moco_v2_tiny.features.npy         eval-mode pooled features of v2's query encoder on input
  moco_v2_tiny.output.npy           its output (the MLP head), (2, 16)
  resnet50_tiny.features.npy, resnet50_tiny.logits.npy   the torchvision net's on input
  moco_v2_tiny.detectron2.pkl       what the official convert-pretrain-to-detectron2.py writes
                                    for moco_v2_tiny.pth.tar (its renaming, pickle.dump)
  hostile_*.pth, bad_*.pth          hand-made files that must be refused (see HOSTILE below)
  export_check.json                 step 2: what PyTorch says of moco-lua's exports

Step 2 (needs ./moco-lua built; skipped otherwise): moco-lua exports moco_v2_tiny.pth.tar with
recipes/export.lua --format pth and --format detectron2; here torch.load opens the .pth and
its tensors must equal the backbone's (keys without module.encoder_q., no fc), and
pickle.load opens the .pkl, whose object must equal the official conversion's (same keys in
the same order, dtypes, shapes, values, __author__, matching_heuristics); whether the bytes
are identical is recorded too.

    /usr/bin/python3 tests/make_fixtures_torch.py"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures_checkpoint import randomize_batchnorm  # noqa: E402  (random BN statistics)

OUT = "tests/fixtures/torch"


# ------------------------------------------------------------------ tensors of every kind

def views_object():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 4, generator=g)
    base = torch.arange(10, dtype=torch.float32) * 0.5
    p = nn.Parameter(torch.randn(2, 2, generator=g))
    tensors = OrderedDict()
    tensors["a"] = a
    tensors["a_t"] = a.t()                      # strides (1, 4), same storage
    tensors["a_row"] = a[1]                     # offset 4
    tensors["a_col"] = a[:, 2]                  # offset 2, stride 4
    tensors["a_block"] = a[1:, 1:3]             # offset 5, strides (4, 1)
    tensors["base_tail"] = base[7:]             # offset 7 of a 10-element storage
    tensors["expanded"] = base[:1].expand(3, 2)  # strides (0, 0)
    tensors["half"] = torch.tensor([[1.0, -2.5, 65504.0], [6.1e-5, 5.96e-8, 0.0]], dtype=torch.float16)
    tensors["bf16"] = torch.tensor([1.0, -3.140625, 1e20], dtype=torch.bfloat16)
    tensors["double"] = torch.tensor([0.1, -1e-3, 12345.678], dtype=torch.float64)
    tensors["long"] = torch.tensor([0, -7, 16777216, 1 << 40, -(1 << 50)], dtype=torch.int64)
    tensors["int"] = torch.tensor([[1, -2], [3, 2147483520]], dtype=torch.int32)
    tensors["short"] = torch.tensor([-32768, 32767], dtype=torch.int16)
    tensors["char"] = torch.tensor([-128, 127], dtype=torch.int8)
    tensors["byte"] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    tensors["bool"] = torch.tensor([True, False, True])
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 3)
    tensors["param"] = p
    obj = {
        "tensors": tensors,
        "epoch": 7, "lr": 0.03, "arch": "resnet50", "none": None, "flag": True,
        "big": 1 << 40, "neg": -5, "nested": [1, (2.5, "x"), {"k": [None, False]}],
        3: "int key",
    }
    return obj, tensors


# ------------------------------------------------------------------ networks

class TinyResNet50(ResNet):
    """torchvision's ResNet-50 layout (Bottleneck, [3, 4, 6, 3]) with planes 64/width ... so
    torchvision's names and computation at 1/32 of the channels (moco.models.resnet50{width=1/32})."""

    def __init__(self, num_classes=10, width=2):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, width, 3)
        self.layer2 = self._make_layer(Bottleneck, 2 * width, 4, stride=2)
        self.layer3 = self._make_layer(Bottleneck, 4 * width, 6, stride=2)
        self.layer4 = self._make_layer(Bottleneck, 8 * width, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def moco_checkpoint(g, mlp, dim=16, K=32):
    """The dict main_moco.py saves: encoders built as moco/builder.py builds them."""
    enc_q, enc_k = TinyResNet50(num_classes=dim), TinyResNet50(num_classes=dim)
    if mlp:
        for enc in (enc_q, enc_k):
            dim_mlp = enc.fc.weight.shape[1]
            enc.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), enc.fc)
    randomize_batchnorm(enc_q, g)
    enc_k.load_state_dict(enc_q.state_dict())
    sd = OrderedDict()
    for name, enc in (("encoder_q", enc_q), ("encoder_k", enc_k)):
        for k, v in enc.state_dict().items():
            sd[f"module.{name}.{k}"] = v
    sd["module.queue"] = nn.functional.normalize(torch.randn(dim, K, generator=g), dim=0)
    sd["module.queue_ptr"] = torch.tensor([8], dtype=torch.int64)
    params = [p for p in enc_q.parameters()]
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    for p in params[:3]:   # a few momentum buffers: the structure of the official state
        opt.state[p]["momentum_buffer"] = torch.randn(p.shape, generator=g)
    ckpt = {"epoch": 200, "arch": "resnet50", "state_dict": sd, "optimizer": opt.state_dict()}
    return ckpt, enc_q


def detectron2_object(state_dict):
    """The official convert-pretrain-to-detectron2.py's renaming and dict, written anew."""
    renames = [("layer%d" % t, "res%d" % (t + 1)) for t in (1, 2, 3, 4)]
    renames += [("bn%d" % t, "conv%d.norm" % t) for t in (1, 2, 3)]
    renames += [("downsample.0", "shortcut"), ("downsample.1", "shortcut.norm")]
    model = {}
    for key, value in state_dict.items():
        prefix = "module.encoder_q."
        if not key.startswith(prefix):
            continue
        name = key.replace(prefix, "")
        if "layer" not in name:
            name = "stem." + name
        for old, new in renames:
            name = name.replace(old, new)
        model[name] = value.numpy()
    return {"model": model, "__author__": "MOCO", "matching_heuristics": True}


# ------------------------------------------------------------------ hand-made files

def zip_with(path, pickle_bytes, storages=(), prefix="archive/"):
    def entry(name):  # a fixed date, so that the files are the same on every run
        return zipfile.ZipInfo(prefix + name, date_time=(1980, 1, 1, 0, 0, 0))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(entry("data.pkl"), pickle_bytes)
        for key, data in storages:
            z.writestr(entry("data/" + key), data)
        z.writestr(entry("version"), "3\n")


def zip64_copy(src, dst):
    """src's entries again, in a zip that uses zip64 everywhere (sizes and offsets saturated in
    the headers, 64-bit values in zip64 extra fields, a zip64 end record and its locator), as
    large torch.save files are."""
    import zlib
    with zipfile.ZipFile(src) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    out, central = bytearray(), bytearray()
    for name, data in entries:
        offset, crc, n = len(out), zlib.crc32(data), len(data)
        extra = struct.pack("<HHQQ", 1, 16, n, n)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(name), len(extra)) + name.encode() + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, n, n, offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(name), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + name.encode() + cextra
    cd_offset = len(out)
    out += central
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, "wb") as f:
        f.write(out)


def legacy_with(path, main_pickle, keys, records):
    with open(path, "wb") as f:
        f.write(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.")
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(main_pickle)
        pickle.dump(keys, f, protocol=2)
        for numel, data in records:
            f.write(struct.pack("<q", numel) + data)


def tensor_pickle(numel, size, stride, offset=0, key="0"):
    """data.pkl of {'w': tensor} by hand: _rebuild_tensor_v2 on a FloatStorage of numel."""
    def ints(v):
        return b"(" + b"".join(b"J" + struct.pack("<i", x) for x in v) + b"t"
    return (b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX" + struct.pack("<I", len(key)) + key.encode()
            + b"X\x03\x00\x00\x00cpuJ" + struct.pack("<i", numel) + b"tQJ" + struct.pack("<i", offset)
            + ints(size) + ints(stride) + b"\x89ccollections\nOrderedDict\n)RtRs.")


HOSTILE = {
    # a pickle that would run a shell command
    "hostile_os_system.pth": ("zip", b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R."),
    "hostile_os_system_legacy.pth": ("legacy", b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R."),
    "hostile_eval.pth": ("zip", b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x00\x85R."),
    # STACK_GLOBAL (protocol 4) of a disallowed name
    "hostile_stack_global.pth": ("zip", b"\x80\x04\x8c\x02os\x8c\x05popen\x93)R."),
    # REDUCE of things that are not allowed callables
    "hostile_reduce_storage.pth": ("zip", b"\x80\x02ctorch\nFloatStorage\n)R."),
    "hostile_reduce_string.pth": ("zip", b"\x80\x02X\x01\x00\x00\x00x)R."),
    # BUILD on a plain list (setstate of an arbitrary object)
    "hostile_build_list.pth": ("zip", b"\x80\x02]}b."),
    # opcodes that create objects of arbitrary classes
    "hostile_inst.pth": ("zip", b"\x80\x02(ios\nsystem\n."),
    "hostile_newobj.pth": ("zip", b"\x80\x02ccollections\nOrderedDict\n)\x81."),
    # a memo index far past anything the pickle could have stored
    "hostile_memo.pth": ("zip", b"\x80\x02Nr\x00\x00\x00\x80."),
    # 70 000 nested MARKs
    "hostile_marks.pth": ("zip", b"\x80\x02" + b"(" * 70000 + b"N."),
    # lists nested 20 000 deep (legal data; the Lua side refuses the depth)
    "deep_nesting.pth": ("zip", b"\x80\x02" + b"]" * 20000 + b"a" * 19999 + b"."),
    # an int of 9 bytes
    "hostile_long.pth": ("zip", b"\x80\x02\x8a\x09" + b"\x01" * 9 + b"."),
    # a string longer than the file
    "hostile_string.pth": ("zip", b"\x80\x02X\xff\xff\xff\x7fabc."),
}


def write_hostile():
    made = []
    for name, (layout, pkl) in HOSTILE.items():
        path = f"{OUT}/{name}"
        if layout == "zip":
            zip_with(path, pkl)
        else:
            legacy_with(path, pkl, [], [])
        made.append(name)
    floats = struct.pack("<4f", 1, 2, 3, 4)
    # a tensor of 10 elements on a storage of 4
    zip_with(f"{OUT}/bad_tensor_past_storage.pth", tensor_pickle(4, [10], [1]), [("0", floats)])
    # the storage declares 4 elements, the zip entry holds 2
    zip_with(f"{OUT}/bad_storage_short.pth", tensor_pickle(4, [4], [1]), [("0", floats[:8])])
    # legacy: the storage record says 3 elements where the pickle says 4
    legacy_with(f"{OUT}/bad_storage_short_legacy.pth", tensor_pickle(4, [4], [1], key="k1"), ["k1"],
                [(3, floats[:12])])
    # legacy: the storage bytes end before the file does
    legacy_with(f"{OUT}/bad_truncated_storage_legacy.pth", tensor_pickle(4, [4], [1], key="k1"), ["k1"],
                [(4, floats[:10])])
    # views that expand one element to 2^40
    zip_with(f"{OUT}/bad_expand.pth", tensor_pickle(1, [1 << 20, 1 << 20], [0, 0]), [("0", floats[:4])])
    # a storage with no entry in the zip
    zip_with(f"{OUT}/bad_missing_storage.pth", tensor_pickle(4, [4], [1], key="7"), [("0", floats)])
    # an int64 that float32 cannot hold
    torch.save({"n": torch.tensor([16777217], dtype=torch.int64)}, f"{OUT}/bad_inexact_int64.pth")
    # a pickled module (torch.save(model)): classes that are not tensors
    torch.save(nn.Linear(2, 2), f"{OUT}/hostile_module.pth")
    # a zip whose data.pkl entry points past the end of the file
    good = io.BytesIO()
    zip_with(good, tensor_pickle(4, [4], [1]), [("0", floats)])
    raw = bytearray(good.getvalue())
    cd = raw.rfind(b"PK\x01\x02", 0, len(raw))
    first_cd = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, first_cd + 42, len(raw) + 1000)
    with open(f"{OUT}/bad_zip_entry_outside.pth", "wb") as f:
        f.write(raw)
    # a central directory whose size runs past the file
    raw2 = bytearray(good.getvalue())
    eocd = raw2.rfind(b"PK\x05\x06")
    struct.pack_into("<I", raw2, eocd + 12, 1 << 30)
    with open(f"{OUT}/bad_zip_directory.pth", "wb") as f:
        f.write(raw2)
    del cd
    # truncations of the good files, in both layouts
    for src, dst in (("views_zip.pth", "bad_truncated_zip.pth"), ("views_legacy.pth", "bad_truncated_legacy.pth")):
        data = open(f"{OUT}/{src}", "rb").read()
        with open(f"{OUT}/{dst}", "wb") as f:
            f.write(data[: len(data) // 2])
    return made


# ------------------------------------------------------------------ main

def save_npy(name, t):
    np.save(f"{OUT}/{name}.npy", t.detach().to(torch.float32).contiguous().numpy())


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    obj, tensors = views_object()
    torch.save(obj, f"{OUT}/views_zip.pth")
    torch.save(obj, f"{OUT}/views_legacy.pth", _use_new_zipfile_serialization=False)
    info = {}
    for name, t in tensors.items():
        save_npy(f"views.{name}", t)
        info[name] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                      "stride": list(t.stride()), "offset": t.storage_offset()}
    with open(f"{OUT}/views.json", "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    zip64_copy(f"{OUT}/views_zip.pth", f"{OUT}/views_zip64.pth")
    for layout in ("legacy", "zip64"):
        back = torch.load(f"{OUT}/views_{layout}.pth")
        assert all(torch.equal(back["tensors"][k], v) for k, v in tensors.items()), layout

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    np.save(f"{OUT}/input.npy", x.numpy())

    ckpt, enc_q = moco_checkpoint(g, mlp=True)
    torch.save(ckpt, f"{OUT}/moco_v2_tiny.pth.tar", _use_new_zipfile_serialization=False)
    enc_q.eval()
    with torch.no_grad():
        save_npy("moco_v2_tiny.features", enc_q.features(x))
        save_npy("moco_v2_tiny.output", enc_q(x))
    ckpt1, _ = moco_checkpoint(g, mlp=False)
    torch.save(ckpt1, f"{OUT}/moco_v1_tiny.pth.tar")

    tv = TinyResNet50(num_classes=10)
    randomize_batchnorm(tv, g)
    tv.eval()
    torch.save(tv.state_dict(), f"{OUT}/resnet50_tiny.pth")
    torch.save(tv.state_dict(), f"{OUT}/resnet50_tiny_legacy.pth", _use_new_zipfile_serialization=False)
    with torch.no_grad():
        save_npy("resnet50_tiny.features", tv.features(x))
        save_npy("resnet50_tiny.logits", tv(x))

    official = detectron2_object(torch.load(f"{OUT}/moco_v2_tiny.pth.tar", map_location="cpu")["state_dict"])
    with open(f"{OUT}/moco_v2_tiny.detectron2.pkl", "wb") as f:
        pickle.dump(official, f)

    hostile = write_hostile()
    print(f"step 1: views ({len(tensors)} tensors), MoCo v1/v2 and torchvision tiny ResNet-50 checkpoints, "
          f"{len(hostile)} hostile pickles; torch {torch.__version__}")

    exe = os.path.abspath("moco-lua")
    if not os.access(exe, os.X_OK):
        print("step 2 skipped: build ./moco-lua first (make) to check the exports in PyTorch")
        return 0
    report = {"torch": torch.__version__, "numpy": np.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        pth, pkl = f"{tmp}/export.pth", f"{tmp}/export.pkl"
        src = f"{OUT}/moco_v2_tiny.pth.tar"
        subprocess.run([exe, "recipes/export.lua", "--format", "pth", src, pth], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([exe, "recipes/export.lua", "--format", "detectron2", src, pkl], check=True,
                       stdout=subprocess.DEVNULL)
        mine = torch.load(pth)
        sd = ckpt["state_dict"]
        want = OrderedDict((k[len("module.encoder_q."):], v) for k, v in sd.items()
                           if k.startswith("module.encoder_q.") and not k.startswith("module.encoder_q.fc"))
        report["pth_type"] = type(mine).__name__
        report["pth_keys_in_order"] = list(mine.keys()) == list(want.keys())
        report["pth_equal"] = all(mine[k].dtype == v.dtype and torch.equal(mine[k], v) for k, v in want.items())
        net = TinyResNet50(num_classes=16)
        missing, unexpected = net.load_state_dict(mine, strict=False)
        report["pth_load_state_dict"] = {"missing_keys": sorted(missing), "unexpected_keys": sorted(unexpected)}
        with open(pkl, "rb") as f:
            theirs = pickle.load(f, encoding="latin1")
        same_keys = list(theirs["model"].keys()) == list(official["model"].keys())
        same_values = same_keys and all(
            theirs["model"][k].dtype == v.dtype and theirs["model"][k].shape == v.shape
            and np.array_equal(theirs["model"][k], v) for k, v in official["model"].items())
        report["detectron2_keys_in_order"] = same_keys
        report["detectron2_equal"] = same_values
        report["detectron2_fields"] = {k: theirs[k] for k in ("__author__", "matching_heuristics")}
        report["detectron2_bytes_identical"] = open(pkl, "rb").read() == open(f"{OUT}/moco_v2_tiny.detectron2.pkl", "rb").read()
        # Arrays of 64 KiB and more go outside pickle's frames: the same bytes as pickle.dump?
        g = torch.Generator().manual_seed(5)
        big = OrderedDict([("stem.conv1.weight", torch.randn(200, 100, generator=g)),
                           ("res2.0.conv1.norm.num_batches_tracked", torch.tensor(3)),
                           ("res2.0.conv1.weight", torch.randn(17000, generator=g)),
                           ("res2.0.conv1.norm.bias", torch.randn(8, generator=g))])
        torch.save(big, f"{tmp}/big.pth")
        script = (f'local t, d = moco.torch.load("{tmp}/big.pth"); local dts = {{}}\n'
                  f'for _, k in ipairs(moco.torch.keys(t)) do dts[k] = d[t[k]] end\n'
                  f'moco.torch.save_detectron2("{tmp}/big.pkl", t, {{order = moco.torch.keys(t), dtypes = dts}})')
        subprocess.run([exe, "-e", script], check=True)
        expect = io.BytesIO()
        pickle.dump({"model": {k: v.numpy() for k, v in big.items()}, "__author__": "MOCO",
                     "matching_heuristics": True}, expect)
        report["detectron2_large_arrays_bytes_identical"] = open(f"{tmp}/big.pkl", "rb").read() == expect.getvalue()
    print("step 2:", json.dumps(report))
    with open(f"{OUT}/export_check.json", "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    ok = (report["pth_keys_in_order"] and report["pth_equal"] and report["detectron2_equal"]
          and report["detectron2_bytes_identical"] and report["detectron2_large_arrays_bytes_identical"]
          and report["pth_load_state_dict"] == {"missing_keys": ["fc.bias", "fc.weight"], "unexpected_keys": []})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
