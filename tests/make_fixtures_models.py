#!/usr/bin/python3
"""tests/make_fixtures_models.py: PyTorch references for lua/moco/models.lua and optim.lua.

Writes float32 .npy files into tests/fixtures/models/, named <case>.<what>[.<state_dict key>].npy,
and a few text files; tests/lua/test_models.lua reads them.  The cases here and there must agree.

  block cases   torchvision's own BasicBlock / Bottleneck (train mode, default init with the batch
                norms perturbed): keys.txt (sorted state_dict keys), sd.<key> (the state_dict the
                Lua side loads), input, grad_output, output, grad_input, grad.<param>,
                after.<buffer> (running statistics after the forward), eval_output (then in eval
                mode).
  r18, r18s     resnet18(num_classes=10) with the CIFAR stem (r18: conv1 3x3/1, maxpool Identity,
                batch 4 at 32x32) and with the ImageNet stem (r18s: batch 2 at 64x64), train mode,
                cross-entropy on fixed labels, backward.  The 11M weights are not committed: both
                sides compute them from PCG32 (fill_from_formula).  Saved: input, labels, logits,
                loss, grad_input, init_check (per key: sum, first, last of the initial values),
                grad.<param> (whole when <= 4096 entries, else SUMMARY), after.<bn buffer>,
                eval_logits (then in eval mode).
  rule_sgd*     five torch.optim.SGD steps (plain, nesterov, dampening) on resnet20's parameters
                (resnet20 is written below from torchvision's BasicBlock with moco.models' structure
                and names) with the gradients set from PCG32: final.<param> (whole or SUMMARY).
  sgd*          five training steps (forward, cross-entropy, backward, SGD) of resnet20 on inputs
                made from PCG32, labels committed: losses (5), delta.<param> = final - initial
                weights (whole or SUMMARY), after.<buffer>.  See sgd_loop_cases for the setting.
  *_keys.txt    sorted state_dict keys of torchvision's resnet18 / resnet50 and of the resnet20
                twin; num_parameters.txt: "<name> <count>" lines.

SUMMARY of a tensor with more than 4096 entries: a 1-d float32 array of 514 values, its first 512
entries (flat, row-major), then the sum and the sum of absolute values (computed in float64).

Run with Debian's python3-torch (the interpreter named above; CI does not need it):
    /usr/bin/python3 tests/make_fixtures_models.py
The outputs are committed (about 1 MB)."""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "models")

WEIGHT_SEED = 20240601   # PCG32 seed of the weight formula; the stream is the key's index
DATA_SEED = 7            # PCG32 seed of the resnet20 inputs (see loop_input)
SUMMARY_FIRST = 512
WHOLE_MAX = 4096

written = []


def save(name, t):
    a = t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)
    path = os.path.join(OUT, name + ".npy")
    np.save(path, np.array(a, dtype="<f4", order="C"))  # keeps 0-d arrays 0-d
    written.append(path)


def save_text(name, lines):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    written.append(path)


def summary(t):
    a = t.detach().cpu().numpy().astype(np.float64).ravel()
    return np.concatenate([a[:SUMMARY_FIRST], [a.sum(), np.abs(a).sum()]])


def save_whole_or_summary(name, t):
    save(name, t if t.numel() <= WHOLE_MAX else torch.from_numpy(summary(t)))


# ------------------------------------------------------------------ PCG32 as core/rng.c

PCG_MULT = 6364136223846793005
MASK64 = (1 << 64) - 1


def pcg_uniform(seed, stream, n):
    """n floats of rng_uniform after rng_seed(seed, stream): (rng_u32 >> 8) * 2^-24.

    The LCG state after k steps from s is a_k * s + c_k (mod 2^64), so a block of B states is
    one vector multiply-add from the block's first state; blocks are chained sequentially."""
    inc = ((stream << 1) | 1) & MASK64
    state = inc                               # rng_seed: state 0, one step
    state = (state + seed) & MASK64
    state = (state * PCG_MULT + inc) & MASK64  # one more step: the state of the first output
    block = max(1, min(n, 4096))
    a, c = [1], [0]
    for _ in range(block):
        a.append(a[-1] * PCG_MULT & MASK64)
        c.append((c[-1] * PCG_MULT + inc) & MASK64)
    starts = []
    for _ in range((n + block - 1) // block):
        starts.append(state)
        state = (a[block] * state + c[block]) & MASK64
    with np.errstate(over="ignore"):
        av = np.array(a[:block], dtype=np.uint64)
        cv = np.array(c[:block], dtype=np.uint64)
        old = (np.array(starts, dtype=np.uint64)[:, None] * av[None, :] + cv[None, :]).ravel()[:n]
    xorshifted = (((old >> np.uint64(18)) ^ old) >> np.uint64(27)).astype(np.uint32)
    rot = (old >> np.uint64(59)).astype(np.uint32)
    out = (xorshifted >> rot) | (xorshifted << ((np.uint32(32) - rot) & np.uint32(31)))
    return (out >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


def formula_value(key, shape, stream):
    """The reproducible initial value of state_dict entry `key` (float32, same ops as Lua):
    conv/linear weights (2u-1)*bound with bound = float32(1/sqrt(fan_in)); batch-norm weights
    1 + 0.1(2u-1); biases 0.1(2u-1); running statistics left at their defaults (None)."""
    n = int(np.prod(shape)) if len(shape) else 1
    if key.endswith("weight") and len(shape) >= 2:
        bound = np.float32(1.0 / np.sqrt(n // shape[0]))
        u = pcg_uniform(WEIGHT_SEED, stream, n)
        return ((u * np.float32(2) - np.float32(1)) * bound).reshape(shape)
    if key.endswith("weight"):
        u = pcg_uniform(WEIGHT_SEED, stream, n)
        return ((u * np.float32(2) - np.float32(1)) * np.float32(0.1) + np.float32(1)).reshape(shape)
    if key.endswith("bias"):
        u = pcg_uniform(WEIGHT_SEED, stream, n)
        return ((u * np.float32(2) - np.float32(1)) * np.float32(0.1)).reshape(shape)
    return None


def fill_from_formula(model):
    """Every state_dict entry in sorted-key order, stream = its 0-based index.  Returns the
    (sum, first, last) of every entry's value, in that order, so the Lua side can prove it
    computes the same numbers."""
    sd = model.state_dict()
    check = []
    with torch.no_grad():
        for i, key in enumerate(sorted(sd)):
            v = formula_value(key, tuple(sd[key].shape), i)
            if v is not None:
                sd[key].copy_(torch.from_numpy(v))
            a = sd[key].double().cpu().numpy().ravel()
            check.append([a.sum(), a[0], a[-1]])
    return np.array(check)


# ------------------------------------------------------------------ models


def conv1x1(cin, cout, stride):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class ResNet20(nn.Module):
    """moco.models.resnet20's twin: conv1 3x3/1 + bn1 + relu, maxpool Identity, three stages of
    3 torchvision BasicBlocks with 16/32/64 planes (strides 1/2/2, conv1x1+BN downsample where
    the shape changes), global average pool, fc; the same module names."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(16, 3, 1)
        self.layer2 = self._make_layer(32, 3, 2)
        self.layer3 = self._make_layer(64, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def with_cifar_stem(m):
    """moco.models' cifar_stem: conv1 3x3 stride 1 without bias, no max-pool."""
    m.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    m.maxpool = nn.Identity()
    return m


def perturb_bn(module):
    """Batch-norm parameters and running statistics away from their defaults, so that a
    swapped weight/bias or a wrong running-statistics update shows."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)


def save_buffers(prefix, model):
    for key, t in model.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            save(f"{prefix}.after.{key}", t.float())


# ------------------------------------------------------------------ cases

# name, block class, inplanes, planes, stride, downsample out channels (None: no downsample),
# input shape; test_models.lua has the same list.
BLOCK_CASES = [
    ("basic_s2", BasicBlock, 8, 16, 2, 16, (4, 8, 9, 9)),
    ("basic_s1", BasicBlock, 16, 16, 1, None, (4, 16, 6, 6)),
    ("bottleneck_s1", Bottleneck, 16, 4, 1, None, (4, 16, 6, 6)),
    ("bottleneck_s2", Bottleneck, 16, 8, 2, 32, (4, 16, 9, 9)),
]


def block_cases():
    for name, cls, inplanes, planes, stride, ds_out, shape in BLOCK_CASES:
        downsample = None
        if ds_out is not None:
            downsample = nn.Sequential(conv1x1(inplanes, ds_out, stride), nn.BatchNorm2d(ds_out))
        block = cls(inplanes, planes, stride, downsample)
        perturb_bn(block)
        block.train()
        save_text(f"{name}.keys.txt", sorted(block.state_dict()))
        for key, t in block.state_dict().items():
            save(f"{name}.sd.{key}", t.float())
        x = torch.randn(shape, requires_grad=True)
        y = block(x)
        gy = torch.randn(y.shape)
        y.backward(gy)
        save(f"{name}.input", x)
        save(f"{name}.output", y)
        save(f"{name}.grad_output", gy)
        save(f"{name}.grad_input", x.grad)
        for key, p in block.named_parameters():
            save(f"{name}.grad.{key}", p.grad)
        save_buffers(name, block)
        block.eval()
        with torch.no_grad():
            save(f"{name}.eval_output", block(x))


def resnet18_case(name, model, input_shape):
    check = fill_from_formula(model)
    model.train()
    x = torch.randn(input_shape, requires_grad=True)
    labels = torch.randint(0, 10, (input_shape[0],))
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    save(f"{name}.input", x)
    save(f"{name}.labels", labels.float())
    save(f"{name}.init_check", check)
    save(f"{name}.logits", logits)
    save(f"{name}.loss", loss.reshape(1))
    save(f"{name}.grad_input", x.grad)
    for key, p in model.named_parameters():
        save_whole_or_summary(f"{name}.grad.{key}", p.grad)
    save_buffers(name, model)
    model.eval()
    with torch.no_grad():
        save(f"{name}.eval_logits", model(x))
    print(f"{name}: loss {loss.item():.6f}")


SGD_STEPS = 5
# name, torch.optim.SGD options (test_models.lua has the same list)
SGD_CASES = [
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
    ("sgd_nesterov", dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)),
    ("sgd_dampening", dict(lr=0.1, momentum=0.9, weight_decay=5e-4, dampening=0.1)),
]


def rule_gradient(key_index, step, shape):
    """The gradient the update-rule cases feed to the optimiser: 2u-1 from stream
    100000 * step + the key's index (step 1-based) of the weight seed."""
    u = pcg_uniform(WEIGHT_SEED, 100000 * step + key_index, int(np.prod(shape)))
    return torch.from_numpy((u * np.float32(2) - np.float32(1)).reshape(shape))


def sgd_rule_cases():
    """rule_<case>: SGD alone, exactly.  resnet20's parameters from the formula, and at every
    step every gradient set from the formula (no forward or backward), so nothing but the
    update rule (weight decay, momentum buffer, first step, dampening, nesterov) is tested.
    Saved: the final parameters (whole when small, else SUMMARY)."""
    for name, opts in SGD_CASES:
        model = ResNet20()
        fill_from_formula(model)
        index = {key: i for i, key in enumerate(sorted(model.state_dict()))}
        opt = torch.optim.SGD(model.parameters(), **opts)
        for step in range(1, SGD_STEPS + 1):
            for key, p in model.named_parameters():
                p.grad = rule_gradient(index[key], step, tuple(p.shape))
            opt.step()
        for key, p in model.named_parameters():
            save_whole_or_summary(f"rule_{name}.final.{key}", p.detach())


# The training-loop cases.  Five steps at lr 0.1 with momentum 0.9 are chaotic for most data:
# float32 and float64 PyTorch runs of resnet20 on uniform noise with random labels end with
# weight changes that differ by 10-60% and losses by 1e-2, so no implementation could be
# compared there.  The setting below is one where they agree (checked at every run, below):
# small 8x8 images made of one of 10 fixed class templates plus 0.3 * noise (so the labels
# can be learnt and the gradients are consistent from batch to batch), batch 16, and the
# convolution weights at twice the formula's scale (exact in float32), which quarters the
# effective step of these batch-normalised weights.  Even here, float32 runs from weights
# moved by one ulp end up to 7e-3 apart in the weight changes (losses: 5e-6 relative), which
# sets the Lua side's tolerances.
LOOP_BATCH, LOOP_SIZE, LOOP_NOISE, LOOP_CONV_GAIN = 16, 8, 0.3, 2
LOOP_LOSS_TOL, LOOP_DELTA_TOL = 5e-5, 2e-2  # test_models.lua's tolerances (relative)


def loop_templates():
    n = 3 * LOOP_SIZE * LOOP_SIZE
    return [(pcg_uniform(DATA_SEED, 2000 + c, n) * np.float32(2) - np.float32(1)).reshape(3, LOOP_SIZE, LOOP_SIZE)
            for c in range(10)]


def loop_input(step, labels, templates):
    """Batch `step` (0-based): (2u-1) * 0.3 from stream 1000 + step, plus each label's template."""
    n = LOOP_BATCH * 3 * LOOP_SIZE * LOOP_SIZE
    u = pcg_uniform(DATA_SEED, 1000 + step, n)
    x = ((u * np.float32(2) - np.float32(1)) * np.float32(LOOP_NOISE)).reshape(LOOP_BATCH, 3, LOOP_SIZE, LOOP_SIZE)
    for i, c in enumerate(labels.tolist()):
        x[i] += templates[c]
    return torch.from_numpy(x)


def train_loop(opts, labels, dtype):
    model = ResNet20()
    fill_from_formula(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4:
                p.mul_(LOOP_CONV_GAIN)
    model.to(dtype).train()
    initial = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), **opts)
    templates = loop_templates()
    losses = []
    for step in range(SGD_STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(loop_input(step, labels[step], templates).to(dtype)), labels[step])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    deltas = {k: p.detach() - initial[k] for k, p in model.named_parameters()}
    return model, np.array(losses), deltas


def sgd_loop_cases():
    """<case>: forward, cross-entropy, backward and step, five times.  Saved: the labels, the
    losses, the weight changes (final - initial: whole when small, else SUMMARY) and the
    running statistics at the end."""
    labels = torch.randint(0, 10, (SGD_STEPS, LOOP_BATCH), generator=torch.Generator().manual_seed(0))
    save("sgd.labels", labels.float())
    for name, opts in SGD_CASES:
        model, losses, deltas = train_loop(opts, labels, torch.float32)
        save(f"{name}.losses", losses)
        for key, d in deltas.items():
            save_whole_or_summary(f"{name}.delta.{key}", d)
        save_buffers(name, model)
        # The same in float64: how far float32 rounding alone moves the result.
        _, losses64, deltas64 = train_loop(opts, labels, torch.float64)
        loss_diff = np.max(np.abs(losses - losses64) / np.abs(losses64))
        delta_diff = max(((deltas[k].double() - deltas64[k]).abs().max() / deltas64[k].abs().max()).item()
                         for k in deltas)
        print(f"{name}: losses {' '.join(f'{v:.6f}' for v in losses)}; float32 vs float64: "
              f"losses {loss_diff:.1e}, weight changes {delta_diff:.1e} (relative)")
        if loss_diff > LOOP_LOSS_TOL / 5 or delta_diff > LOOP_DELTA_TOL / 5:
            raise SystemExit(f"{name}: the training loop is too sensitive to rounding for a reference")


def key_lists():
    counts = []
    for name, model in [("resnet18", torchvision.models.resnet18()),
                        ("resnet50", torchvision.models.resnet50()),
                        ("resnet20", ResNet20())]:
        save_text(f"{name}_keys.txt", sorted(model.state_dict()))
        counts.append(f"{name} {sum(p.numel() for p in model.parameters())}")
    for name, model in [("resnet18_cifar10", with_cifar_stem(torchvision.models.resnet18(num_classes=10))),
                        ("resnet50_cifar10", with_cifar_stem(torchvision.models.resnet50(num_classes=10)))]:
        counts.append(f"{name} {sum(p.numel() for p in model.parameters())}")
    save_text("num_parameters.txt", counts)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    # A spot check of the PCG32 port (the Lua test checks the same numbers).
    save("pcg_check", pcg_uniform(123, 45, 8))
    block_cases()
    resnet18_case("r18", with_cifar_stem(torchvision.models.resnet18(num_classes=10)), (4, 3, 32, 32))
    resnet18_case("r18s", torchvision.models.resnet18(num_classes=10), (2, 3, 64, 64))
    sgd_rule_cases()
    sgd_loop_cases()
    key_lists()
    total = sum(os.path.getsize(p) for p in written)
    print(f"wrote {len(written)} files, {total / 1e6:.2f} MB, into {OUT}")


if __name__ == "__main__":
    main()
