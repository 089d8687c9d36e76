#!/usr/bin/python3
"""tests/make_fixtures_eval.py: the official MoCo CIFAR-10 demo's kNN monitor, run in PyTorch,
as the reference for core/knn.c (moco.eval.knn and moco.eval.neighbours);
tests/lua/test_eval.lua replays the cases.

knn_predict below is the demo's function (colab/moco_cifar10_demo.ipynb), re-typed; as in
the demo, feature_bank is (D, N) and the features rows are L2-normalised.  The inputs are
random; the fixture marks which results are unambiguous, and the test compares those: the
neighbours of a query whose k-th and (k+1)-th similarities differ by at least MARGIN (both
sides then pick the same neighbours despite float32 rounding in different matrix products),
and the class at each rank whose score is positive and at least MARGIN (relative) away from
the scores ranked next to it (zero-score classes tie, and the demo's argsort orders ties
arbitrarily).

Files, in tests/fixtures/eval/, float32 .npy (<c> = case name):
  <c>.query (M, D), <c>.bank (N, D), <c>.bank_labels (N)     the inputs (bank row-major)
  <c>.params        [k, T, classes]
  <c>.pred          (M, classes) the demo's pred_labels (classes ranked best first)
  <c>.scores        (M, classes) the demo's pred_scores sorted the same way
  <c>.compare       (M, classes) 1 where pred is unambiguous (see above), else 0
  <c>.nn_index      (M, k) torch.topk's sim_indices (0-based), <c>.nn_sim its sim_weight
  <c>.nn_ok         (M) 1 where the query's k neighbours are unambiguous, else 0

Run with Debian's python3-torch (CI does not need it; the outputs are committed, ~40 kB):
    /usr/bin/python3 tests/make_fixtures_eval.py"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "eval")
MARGIN = 2e-5


# The official demo's kNN monitor, as written there.
def knn_predict(feature, feature_bank, feature_labels, classes, knn_k, knn_t):
    # compute cos similarity between each feature vector and feature bank ---> [B, N]
    sim_matrix = torch.mm(feature, feature_bank)
    # [B, K]
    sim_weight, sim_indices = sim_matrix.topk(k=knn_k, dim=-1)
    # [B, K]
    sim_labels = torch.gather(feature_labels.expand(feature.size(0), -1), dim=-1, index=sim_indices)
    sim_weight = (sim_weight / knn_t).exp()

    # counts for each class
    one_hot_label = torch.zeros(feature.size(0) * knn_k, classes, device=sim_labels.device)
    # [B*K, C]
    one_hot_label = one_hot_label.scatter(dim=-1, index=sim_labels.view(-1, 1), value=1.0)
    # weighted score ---> [B, C]
    pred_scores = torch.sum(one_hot_label.view(feature.size(0), -1, classes) * sim_weight.unsqueeze(dim=-1), dim=1)

    pred_labels = pred_scores.argsort(dim=-1, descending=True)
    return pred_labels, pred_scores


def masks(sim, scores, pred, k):
    """(compare (M, classes), nn_ok (M)): which predictions and neighbour lists to compare."""
    top = sim.double().topk(min(k + 1, sim.size(1)), dim=-1).values
    if k < sim.size(1):
        nn_ok = (top[:, k - 1] - top[:, k]) >= MARGIN
    else:
        nn_ok = torch.ones(sim.size(0), dtype=torch.bool)
    # neighbours inside the list must be ordered unambiguously too (moco.eval.neighbours sorts them)
    nn_ok &= ((top[:, :k - 1] - top[:, 1:k]) >= MARGIN).all(dim=1)
    s = scores.gather(1, pred).double()
    compare = torch.zeros_like(s)
    for i in range(s.size(0)):
        for r in range(s.size(1)):
            if s[i, r] <= 0:
                continue
            ok = True
            if r > 0 and (s[i, r - 1] - s[i, r]) < MARGIN * s[i, 0]:
                ok = False
            if r + 1 < s.size(1) and (s[i, r] - s[i, r + 1]) < MARGIN * s[i, 0]:
                ok = False
            compare[i, r] = float(ok)
    # a rank is only meaningful when the whole ranking above it is
    compare = compare.cumprod(dim=1)
    return compare, nn_ok


def case(name, seed, M, N, D, classes, k, T):
    gen = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(M, D, generator=gen), dim=1)
    bank = F.normalize(torch.randn(N, D, generator=gen), dim=1)
    labels = torch.randint(0, classes, (N,), generator=gen)
    pred, scores = knn_predict(query, bank.t().contiguous(), labels, classes, k, T)
    sim = query @ bank.t()
    compare, nn_ok = masks(sim, scores, pred, k)
    nn_sim, nn_index = sim.topk(k, dim=-1)
    files = {
        "query": query, "bank": bank, "bank_labels": labels.float(),
        "params": torch.tensor([k, T, classes], dtype=torch.float32),
        "pred": pred.float(), "scores": scores.gather(1, pred), "compare": compare.float(),
        "nn_index": nn_index.float(), "nn_sim": nn_sim, "nn_ok": nn_ok.float(),
    }
    for key, value in files.items():
        np.save(os.path.join(OUT, f"{name}.{key}.npy"), value.numpy().astype(np.float32))
    print(f"{name}: M={M} N={N} D={D} classes={classes} k={k} T={T}: {int(compare.sum())} of "
          f"{compare.numel()} ranks and {int(nn_ok.sum())} of {M} neighbour lists unambiguous")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    case("small", 1, M=24, N=150, D=8, classes=5, k=20, T=0.1)
    case("demo", 2, M=32, N=300, D=16, classes=10, k=200, T=0.1)
    case("hot", 3, M=16, N=120, D=12, classes=7, k=9, T=0.5)
