#!/usr/bin/python3
"""tests/make_fixtures_layers.py: PyTorch reference tensors for the layers of core/nn.

Writes small float32 .npy files into tests/fixtures/layers/, named <case>.<tensor>.npy:
for every case the inputs and parameters, the forward output, a random grad_output, and
the gradients autograd gives for the input and the parameters (plus running statistics
after the step for batch norm in training mode).  tests/lua/test_layers.lua runs the same
cases through moco._nn and compares.  The case list here and there must agree.

Run with Debian's python3-torch (the interpreter named above; CI does not need it):
    /usr/bin/python3 tests/make_fixtures_layers.py
The outputs are committed (about 0.6 MB)."""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "layers")


class SplitBatchNorm(nn.BatchNorm2d):
    """The official MoCo CIFAR-10 demo's SplitBatchNorm (facebookresearch/moco,
    colab/moco_cifar10_demo.ipynb), re-typed: batch norm over `num_splits` virtual devices.
    input.view(-1, C * S, H, W) puts sample n into channel block n % S, so the splits are
    strided (samples s, s+S, ...), which is what moco-lua reproduces."""

    def __init__(self, num_features, num_splits, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, input):
        N, C, H, W = input.shape
        if self.training or not self.track_running_stats:
            running_mean_split = self.running_mean.repeat(self.num_splits)
            running_var_split = self.running_var.repeat(self.num_splits)
            outcome = nn.functional.batch_norm(
                input.view(-1, C * self.num_splits, H, W), running_mean_split, running_var_split,
                self.weight.repeat(self.num_splits), self.bias.repeat(self.num_splits),
                True, self.momentum, self.eps).view(N, C, H, W)
            self.running_mean.data.copy_(running_mean_split.view(self.num_splits, C).mean(dim=0))
            self.running_var.data.copy_(running_var_split.view(self.num_splits, C).mean(dim=0))
            return outcome
        else:
            return nn.functional.batch_norm(
                input, self.running_mean, self.running_var,
                self.weight, self.bias, False, self.momentum, self.eps)


written = []


def save(case, name, t):
    a = t.detach().cpu().numpy().astype("<f4") if torch.is_tensor(t) else np.asarray(t, dtype="<f4")
    path = os.path.join(OUT, f"{case}.{name}.npy")
    np.save(path, np.ascontiguousarray(a))
    written.append(path)


def run_module(case, module, x, params):
    """Forward x through module, backward a random grad_output; saves everything."""
    x = x.clone().requires_grad_(True)
    y = module(x)
    gy = torch.randn_like(y)
    y.backward(gy)
    save(case, "input", x)
    save(case, "output", y)
    save(case, "grad_output", gy)
    save(case, "grad_input", x.grad)
    for pname in params:
        p = getattr(module, pname)
        save(case, pname, p)
        save(case, "grad_" + pname, p.grad)


def conv_cases():
    # name, N, C, H, W, OC, kernel, stride, padding, bias  (test_layers.lua has the same list)
    cases = [
        ("conv_k3s1p1_bias", 2, 3, 8, 8, 4, 3, 1, 1, True),
        ("conv_k3s2p1", 2, 3, 9, 9, 5, 3, 2, 1, False),
        ("conv_k3s1p0_bias", 3, 2, 6, 7, 3, 3, 1, 0, True),
        ("conv_k1s1p0_bias", 2, 6, 5, 5, 4, 1, 1, 0, True),
        ("conv_k1s2p0", 2, 4, 8, 8, 6, 1, 2, 0, False),
        ("conv_k7s2p3", 2, 3, 16, 16, 4, 7, 2, 3, False),
        ("conv_k3s1p1_big", 2, 2, 24, 24, 3, 3, 1, 1, True),   # one image per sgemm
        ("conv_k1s1p0_big", 2, 3, 24, 24, 4, 1, 1, 0, False),  # the direct 1x1 path
    ]
    for name, N, C, H, W, OC, k, s, p, bias in cases:
        m = nn.Conv2d(C, OC, k, stride=s, padding=p, bias=bias)
        run_module(name, m, torch.randn(N, C, H, W), ["weight", "bias"] if bias else ["weight"])


def randomize_bn(m):
    with torch.no_grad():
        m.weight.copy_(torch.randn_like(m.weight))
        m.bias.copy_(torch.randn_like(m.bias))
        m.running_mean.copy_(0.3 * torch.randn_like(m.running_mean))
        m.running_var.copy_(0.5 + torch.rand_like(m.running_var))


def bn_case(name, m, x, training):
    randomize_bn(m)
    save(name, "running_mean_before", m.running_mean)
    save(name, "running_var_before", m.running_var)
    m.train(training)
    run_module(name, m, x, ["weight", "bias"])
    save(name, "running_mean_after", m.running_mean)
    save(name, "running_var_after", m.running_var)


def check_split_grouping():
    """Asserts what the demo's view(-1, C*S, H, W) means: split s holds samples s, s+S, ...
    (strided), not the contiguous slice s*N/S .. (s+1)*N/S - 1."""
    S, x = 2, torch.randn(8, 3, 4, 4)
    m = SplitBatchNorm(3, S).train()
    with torch.no_grad():
        y = m(x)
        strided = torch.empty_like(x)
        contiguous = torch.empty_like(x)
        for s in range(S):
            strided[s::S] = F.batch_norm(x[s::S], None, None, training=True)
            part = slice(s * 8 // S, (s + 1) * 8 // S)
            contiguous[part] = F.batch_norm(x[part], None, None, training=True)
    d_strided = (y - strided).abs().max().item()
    d_contiguous = (y - contiguous).abs().max().item()
    print(f"SplitBatchNorm S=2: max diff vs strided groups {d_strided:.2e}, "
          f"vs contiguous slices {d_contiguous:.2e}")
    assert d_strided < 1e-5 and d_contiguous > 1e-2


def bn_cases():
    check_split_grouping()
    # a non-zero mean and non-unit scale, as after a conv
    bn_case("bn2d_train", nn.BatchNorm2d(3), 2 * torch.randn(4, 3, 5, 5) + 0.5, True)
    bn_case("bn2d_split2_train", SplitBatchNorm(3, 2), 2 * torch.randn(8, 3, 4, 4) - 0.3, True)
    bn_case("bn2d_split4_train", SplitBatchNorm(2, 4), torch.randn(8, 2, 3, 3) + 1.0, True)
    bn_case("bn2d_split2_eval", SplitBatchNorm(3, 2), torch.randn(4, 3, 5, 5), False)
    bn_case("bn2d_eval", nn.BatchNorm2d(3), torch.randn(4, 3, 5, 5), False)
    # planes of 64 values and more than 64 channels (the other loop shape and blocking in C)
    bn_case("bn2d_split2_train_wide", SplitBatchNorm(70, 2), torch.randn(4, 70, 8, 8) + 0.5, True)
    bn_case("bn1d_train", nn.BatchNorm1d(5), 3 * torch.randn(8, 5) + 1.0, True)
    bn_case("bn1d_train_wide", nn.BatchNorm1d(300), torch.randn(8, 300) - 1.0, True)
    bn_case("bn1d_eval", nn.BatchNorm1d(5), torch.randn(8, 5), False)


def pool_cases():
    x = torch.randn(2, 3, 9, 9)
    m = nn.MaxPool2d(3, 2, 1, return_indices=True)
    xr = x.clone().requires_grad_(True)
    y, idx = m(xr)
    gy = torch.randn_like(y)
    y.backward(gy)
    for k, v in [("input", xr), ("output", y), ("indices", idx.float()), ("grad_output", gy),
                 ("grad_input", xr.grad)]:
        save("maxpool_k3s2p1", k, v)
    # many ties (values from {-1, 0, 1}), and an even size where the last window is cut
    x = torch.randint(-1, 2, (2, 2, 8, 8)).float()
    xr = x.clone().requires_grad_(True)
    y, idx = m(xr)
    gy = torch.randn_like(y)
    y.backward(gy)
    for k, v in [("input", xr), ("output", y), ("indices", idx.float()), ("grad_output", gy),
                 ("grad_input", xr.grad)]:
        save("maxpool_ties", k, v)
    pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1))
    run_module("avgpool", pool, torch.randn(2, 4, 5, 5), [])


def linear_cases():
    run_module("linear_bias", nn.Linear(6, 5), torch.randn(4, 6), ["weight", "bias"])
    run_module("linear", nn.Linear(7, 3, bias=False), torch.randn(5, 7), ["weight"])


def normalize_cases():
    class Normalize(nn.Module):
        def forward(self, x):
            return F.normalize(x, dim=1)

    run_module("normalize", Normalize(), torch.randn(4, 8), [])


def cross_entropy_cases():
    for name, N, K, scale, labels in [
        ("cross_entropy", 6, 10, 2.0, torch.randint(0, 10, (6,))),
        # MoCo's InfoNCE shape: label 0 (the positive), logits divided by T = 0.07
        ("cross_entropy_moco", 4, 33, 1.0 / 0.07, torch.zeros(4, dtype=torch.long)),
    ]:
        logits = (scale * F.normalize(torch.randn(N, K), dim=1) if name.endswith("moco")
                  else scale * torch.randn(N, K)).requires_grad_(True)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        save(name, "logits", logits)
        save(name, "labels", labels.float())
        save(name, "loss", loss)
        save(name, "grad_logits", logits.grad)


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".npy"):
            os.remove(os.path.join(OUT, f))
    conv_cases()
    bn_cases()
    pool_cases()
    linear_cases()
    normalize_cases()
    cross_entropy_cases()
    total = sum(os.path.getsize(p) for p in written)
    print(f"wrote {len(written)} files, {total / 1024:.0f} KiB, into {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
