#!/usr/bin/python3
"""tests/make_fixtures_moco.py: the official MoCo, run in PyTorch, as the reference for
lua/moco/builder.lua (moco.MoCo); tests/lua/test_moco.lua replays the same cases.

The model below is the official moco/builder.py MoCo class (facebookresearch/moco), re-typed,
for one process: concat_all_gather is the identity and the DDP batch shuffle is the CIFAR-10
demo's single-GPU one (colab/moco_cifar10_demo.ipynb: x[idx_shuffle], idx_unshuffle =
argsort(idx_shuffle)), with one change: idx_shuffle is not torch.randperm but the permutation
moco-lua draws, rng_permutation of core/rng.c from moco.Generator(seed, 3) (PCG32, Fisher-Yates
with Lemire's rng_below), re-implemented exactly below.  One permutation per contrastive term,
in order.  The symmetric loss is the demo's (loss_12 + loss_21, enqueue cat([k1, k2])).  Both
encoders use the demo's SplitBatchNorm.  Training is main_moco.py's: CrossEntropyLoss on
(logits, zeros), accuracy(output, target, topk=(1, 5)), SGD(lr 0.03, momentum 0.9, wd 1e-4).

Encoder: a resnet20 twin of moco.models.resnet20 (torchvision BasicBlocks, width 0.25: 4/8/16
channels), so the fixtures stay small.  The query encoder's initial state (batch-norm affine
parameters perturbed away from 1/0) and the initial queue are saved; the Lua side loads them
into encoder_q, copies encoder_q's parameters into encoder_k as the official __init__ does,
and leaves encoder_k's batch-norm buffers at their defaults (as both sides construct them).
The torch seed of a case is the first of seed, seed + 1000, ... whose run keeps every ReLU
input of encoder_q at least RELU_MARGIN away from 0 (see there).

Files, in tests/fixtures/moco/, float32 .npy unless said (<c> = case name):
  <c>.keys.txt          sorted state_dict keys of one encoder, "<key> <numel>" per line
  <c>.init_q            encoder_q's state_dict at the start, flattened in that key order
  <c>.queue0            the initial queue (dim, K): not the official randn init (only easy
                        negatives: the first loss would be ~0) but keys of the key encoder
                        for other random images, as a queue that training has filled
  <c>.im_q, <c>.im_k    the inputs of both steps (2, N, C, H, W)
  <c>.perms             the permutations drawn (2 * terms, N), 0-based (checks the PCG32 port)
  <c>.metrics           (2, 3): loss, acc1, acc5 per step (symmetric: loss_12 + loss_21 and
                        the mean of both terms' accuracies)
  <c>.logits            (2 * terms, N, 1 + K): the logits (already divided by T) of every
                        contrastive term of both steps, in order
  <c>.final_q, <c>.final_k   both encoders' state_dicts after two steps, flattened as init_q
  <c>.queue, <c>.queue_ptr   the queue (dim, K) and the pointer after two steps

The two baselines of the MoCo paper (Fig. 2 and 3), re-typed in the same way, for
tests/lua/test_mechanisms.lua:
  end-to-end (EndToEnd below; no official code exists): builder.py with encoder_k replaced by
  encoder_q itself and with gradients: q = normalize(encoder_q(im_q)), k = normalize(encoder_q(
  im_k[idx_shuffle]))[idx_unshuffle] (two forwards of one module, autograd through both),
  logits = q @ k^T / T, CrossEntropyLoss against arange(N) (the positives on the diagonal).
  memory bank (MemoryBank below): Wu et al. 2018's official lemniscate.pytorch NCEAverage as
  the MoCo paper uses it, with InfoNCE (CMC's use_softmax form: bmm of the gathered memory
  rows with q, / T, cross-entropy with label 0): column 0 of the index is the sample's own row,
  then K uniform draws (moco-lua's PCG32 stream 3 in place of the AliasMethod); after the
  forward, memory[y] = normalize(memory[y] * m + q * (1 - m)) with m = bank_m (index_copy_).
Their files (<c> = e2e, bank): keys.txt, init_q, im_q, im_k, metrics, logits, final_q as
above; perms (e2e: one permutation per step); grads (2, P): d loss / d parameters of each
step before the SGD update, the parameters in sorted key order, flattened; bank only:
memory0 (M, dim) the initial bank (features of other images, as queue0), indices (2, N) the
samples' bank rows, draws (2, N, 1 + K) the index rows used, memory the bank after two steps.

Run with Debian's python3-torch (CI does not need it; the outputs are committed, ~1 MB):
    /usr/bin/python3 tests/make_fixtures_moco.py"""
import copy
import math
import os
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock

from make_fixtures_layers import SplitBatchNorm  # the demo's SplitBatchNorm, re-typed there

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "moco")

# name, options of moco.MoCo (the same table is in test_moco.lua), input (C, H, W), torch seed.
CASES = [
    ("v1", dict(dim=16, K=32, m=0.99, T=0.07, mlp=False, bn_splits=2, symmetric=False,
                in_channels=1, width=0.25, seed=0), (1, 16, 16), 1),
    ("v2", dict(dim=16, K=32, m=0.99, T=0.1, mlp=True, bn_splits=2, symmetric=False,
                in_channels=3, width=0.25, seed=11), (3, 8, 8), 2),
    ("sym", dict(dim=16, K=32, m=0.99, T=0.1, mlp=True, bn_splits=2, symmetric=True,
                 in_channels=3, width=0.25, seed=5), (3, 8, 8), 3),
]
# The baselines (test_mechanisms.lua has the same table).
E2E_CASE = ("e2e", dict(mechanism="end_to_end", dim=16, T=0.1, mlp=False, bn_splits=2, shuffle=True,
                        in_channels=3, width=0.25, seed=3), (3, 8, 8), 4)
BANK_CASE = ("bank", dict(mechanism="memory_bank", dim=16, K=32, T=0.1, mlp=True, bn_splits=2,
                          bank_size=24, bank_m=0.5, in_channels=1, width=0.25, seed=7), (1, 8, 8), 5)
BATCH = 8
STEPS = 2
LR, MOMENTUM, WEIGHT_DECAY = 0.03, 0.9, 1e-4
SHUFFLE_STREAM = 3  # builder.lua: streams of one seed, 3 = the batch shuffles

written = []

# ------------------------------------------------------------------ PCG32 as core/rng.c

PCG_MULT = 6364136223846793005
MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1


class Pcg32:
    """rng_seed / rng_u32 / rng_below / rng_permutation of core/rng.c, bit for bit."""

    def __init__(self, seed, stream):
        self.inc = ((stream << 1) | 1) & MASK64
        self.state = 0
        self.u32()
        self.state = (self.state + seed) & MASK64
        self.u32()

    def u32(self):
        old = self.state
        self.state = (old * PCG_MULT + self.inc) & MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & MASK32
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & MASK32

    def below(self, bound):
        """Lemire's nearly divisionless bounded integer, as rng_below."""
        m = self.u32() * bound
        low = m & MASK32
        if low < bound:
            threshold = ((-bound) & MASK32) % bound
            while low < threshold:
                m = self.u32() * bound
                low = m & MASK32
        return m >> 32

    def permutation(self, n):
        """rng_permutation: identity, then Fisher-Yates from the end."""
        perm = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            perm[i], perm[j] = perm[j], perm[i]
        return perm


# ------------------------------------------------------------------ encoder


class ResNet20(nn.Module):
    """moco.models.resnet20's twin (conv1 3x3/1 + bn1 + relu, maxpool Identity, three stages of
    3 torchvision BasicBlocks, 1x1 conv + BN downsample where the shape changes, global average
    pool, fc), with in_channels, a width multiplier (stage channels floor(c * width + 0.5)) and
    the norm layer as parameters; the same state_dict names."""

    def __init__(self, num_classes, in_channels, width, norm_layer):
        super().__init__()
        planes = [max(1, int(math.floor(p * width + 0.5))) for p in (16, 32, 64)]
        self.inplanes = planes[0]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(planes[0], 3, 1, norm_layer)
        self.layer2 = self._make_layer(planes[1], 3, 2, norm_layer)
        self.layer3 = self._make_layer(planes[2], 3, 2, norm_layer)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[2], num_classes)

    def _make_layer(self, planes, blocks, stride, norm_layer):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       norm_layer(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, norm_layer=norm_layer)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def base_encoder(num_classes, in_channels, width, bn_splits):
    norm_layer = partial(SplitBatchNorm, num_splits=bn_splits) if bn_splits > 1 else nn.BatchNorm2d
    enc = ResNet20(num_classes, in_channels, width, norm_layer)
    # Batch-norm weights and biases away from 1 and 0, so a swapped or ignored one shows.
    with torch.no_grad():
        for mod in enc.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return enc


# ------------------------------------------------------------------ the official MoCo


class MoCo(nn.Module):
    """moco/builder.py's MoCo on one process (see the file header for what changed)."""

    def __init__(self, base_encoder, dim=128, K=65536, m=0.999, T=0.07, mlp=False,
                 symmetric=False, shuffle_generator=None):
        super().__init__()
        self.K = K
        self.m = m
        self.T = T
        self.symmetric = symmetric
        self.shuffle_generator = shuffle_generator
        self.perms = []

        # num_classes is the output fc dimension
        self.encoder_q = base_encoder(num_classes=dim)
        self.encoder_k = base_encoder(num_classes=dim)

        if mlp:  # hack: brute-force replacement
            dim_mlp = self.encoder_q.fc.weight.shape[1]
            self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
            self.encoder_k.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_k.fc)

        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)  # initialize
            param_k.requires_grad = False  # not update by gradient

        self.register_buffer("queue", torch.randn(dim, K))
        self.queue = nn.functional.normalize(self.queue, dim=0)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.mul_(self.m).add_(param_q.mul(1. - self.m))

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        keys = concat_all_gather(keys)
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        assert self.K % batch_size == 0  # for simplicity
        # replace the keys at ptr (dequeue and enqueue)
        self.queue[:, ptr:ptr + batch_size] = keys.T
        ptr = (ptr + batch_size) % self.K  # move pointer
        self.queue_ptr[0] = ptr

    @torch.no_grad()
    def _batch_shuffle_single_gpu(self, x):
        # the demo's torch.randperm(x.shape[0]), replaced by moco-lua's generator
        idx_shuffle = torch.tensor(self.shuffle_generator.permutation(x.shape[0]), dtype=torch.long)
        self.perms.append(idx_shuffle.clone())
        # index for restoring
        idx_unshuffle = torch.argsort(idx_shuffle)
        return x[idx_shuffle], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_single_gpu(self, x, idx_unshuffle):
        return x[idx_unshuffle]

    def contrastive_logits(self, im_q, im_k):
        """builder.py's forward from the query features to the logits; returns logits, k."""
        q = self.encoder_q(im_q)  # queries: NxC
        q = nn.functional.normalize(q, dim=1)

        with torch.no_grad():  # no gradient to keys
            im_k, idx_unshuffle = self._batch_shuffle_single_gpu(im_k)
            k = self.encoder_k(im_k)  # keys: NxC
            k = nn.functional.normalize(k, dim=1)
            k = self._batch_unshuffle_single_gpu(k, idx_unshuffle)

        # positive logits: Nx1
        l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
        # negative logits: NxK
        l_neg = torch.einsum("nc,ck->nk", [q, self.queue.clone().detach()])
        # logits: Nx(1+K)
        logits = torch.cat([l_pos, l_neg], dim=1)
        # apply temperature
        logits /= self.T
        return logits, k

    def forward(self, im_q, im_k):
        """Returns the list of logits (one per contrastive term) and the labels."""
        with torch.no_grad():
            self._momentum_update_key_encoder()  # update the key encoder
        if self.symmetric:  # the demo's symmetric loss: both crops are queries
            logits_12, k2 = self.contrastive_logits(im_q, im_k)
            logits_21, k1 = self.contrastive_logits(im_k, im_q)
            outputs, k = [logits_12, logits_21], torch.cat([k1, k2], dim=0)
        else:
            logits, k = self.contrastive_logits(im_q, im_k)
            outputs = [logits]
        # labels: positive key indicators
        labels = torch.zeros(outputs[0].shape[0], dtype=torch.long)
        self._dequeue_and_enqueue(k)
        return outputs, labels


def query_encoder(base_encoder, dim, mlp):
    """base_encoder(num_classes=dim) with builder.py's MLP head hack when mlp."""
    enc = base_encoder(num_classes=dim)
    if mlp:
        dim_mlp = enc.fc.weight.shape[1]
        enc.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), enc.fc)
    return enc


class EndToEnd(nn.Module):
    """The end-to-end mechanism (the MoCo paper's Fig. 2a) in builder.py's terms: the keys come
    from encoder_q itself, with gradients; the dictionary is the batch."""

    def __init__(self, base_encoder, dim=128, T=0.07, mlp=False, shuffle=True, shuffle_generator=None):
        super().__init__()
        self.T = T
        self.shuffle = shuffle
        self.shuffle_generator = shuffle_generator
        self.perms = []
        self.encoder_q = query_encoder(base_encoder, dim, mlp)

    def forward(self, im_q, im_k):
        q = nn.functional.normalize(self.encoder_q(im_q), dim=1)
        if self.shuffle:  # the demo's single-GPU shuffle, with moco-lua's permutation, and gradients
            idx_shuffle = torch.tensor(self.shuffle_generator.permutation(im_k.shape[0]), dtype=torch.long)
            self.perms.append(idx_shuffle.clone())
            idx_unshuffle = torch.argsort(idx_shuffle)
            k = nn.functional.normalize(self.encoder_q(im_k[idx_shuffle]), dim=1)[idx_unshuffle]
        else:
            k = nn.functional.normalize(self.encoder_q(im_k), dim=1)
        logits = torch.einsum("nc,mc->nm", [q, k]) / self.T
        labels = torch.arange(logits.shape[0], dtype=torch.long)
        return [logits], labels


class MemoryBank(nn.Module):
    """Wu et al.'s memory bank (lemniscate.pytorch's NCEAverage) with InfoNCE, as the MoCo paper's
    Fig. 2b baseline; draws from moco-lua's generator (see the file header)."""

    def __init__(self, base_encoder, dim, K, T, mlp, bank_size, bank_m, generator):
        super().__init__()
        self.K, self.T, self.bank_m = K, T, bank_m
        self.generator = generator
        self.draws = []
        self.encoder_q = query_encoder(base_encoder, dim, mlp)
        stdv = 1. / math.sqrt(dim / 3)
        self.register_buffer("memory", torch.rand(bank_size, dim).mul_(2 * stdv).add_(-stdv))

    def forward(self, im_q, y):
        q = nn.functional.normalize(self.encoder_q(im_q), dim=1)
        B, dim = q.shape
        M = self.memory.shape[0]
        idx = torch.tensor([[int(y[i])] + [self.generator.below(M) for _ in range(self.K)] for i in range(B)],
                           dtype=torch.long)
        self.draws.append(idx.clone())
        weight = torch.index_select(self.memory, 0, idx.view(-1)).detach().view(B, self.K + 1, dim)
        logits = torch.bmm(weight, q.view(B, dim, 1)).squeeze(2) / self.T
        with torch.no_grad():  # NCEFunction.backward's update, with the forward's q
            pos = torch.index_select(self.memory, 0, y.view(-1))
            pos.mul_(self.bank_m)
            pos.add_(torch.mul(q.detach(), 1 - self.bank_m))
            norm = pos.pow(2).sum(1, keepdim=True).pow(0.5)
            self.memory.index_copy_(0, y, pos.div(norm))
        return [logits], torch.zeros(B, dtype=torch.long)


@torch.no_grad()
def concat_all_gather(tensor):
    """One process: the gather of all processes' tensors is the tensor itself."""
    return tensor


def accuracy(output, target, topk=(1,)):
    """main_moco.py's accuracy: top-k precision in percent."""
    with torch.no_grad():
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
            res.append(correct_k.mul_(100.0 / batch_size))
        return res


# ------------------------------------------------------------------ cases


def save(name, a):
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    path = os.path.join(OUT, name + ".npy")
    np.save(path, np.array(a, dtype="<f4", order="C"))
    written.append(path)


def save_text(name, lines):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    written.append(path)


def flat_state(module, keys):
    sd = module.state_dict()
    return torch.cat([sd[k].detach().float().reshape(-1) for k in keys])


def simulate(opts, input_shape, torch_seed):
    """Two training steps; returns the files to write ({name: array or list of lines}) and
    the smallest |input| any ReLU of encoder_q saw (see run_case)."""
    torch.manual_seed(torch_seed)
    encoder = partial(base_encoder, in_channels=opts["in_channels"], width=opts["width"],
                      bn_splits=opts["bn_splits"])
    model = MoCo(encoder, dim=opts["dim"], K=opts["K"], m=opts["m"], T=opts["T"], mlp=opts["mlp"],
                 symmetric=opts["symmetric"], shuffle_generator=Pcg32(opts["seed"], SHUFFLE_STREAM))
    model.train()
    # The queue as training fills it: keys of the (same) key encoder for other images.  The
    # official randn init has only easy negatives, the first loss would be ~0 and its
    # gradient too small to test anything.  A copy of the encoder computes them, so that
    # encoder_k's batch-norm buffers stay at their defaults.
    with torch.no_grad():
        filler = copy.deepcopy(model.encoder_k)
        model.queue.copy_(nn.functional.normalize(filler(torch.randn(opts["K"], *input_shape)), dim=1).T)
    out = {}
    keys = sorted(model.encoder_q.state_dict())
    sd = model.encoder_q.state_dict()
    out["keys.txt"] = [f"{k} {sd[k].numel()}" for k in keys]
    out["init_q"] = flat_state(model.encoder_q, keys)
    out["queue0"] = model.queue.clone()

    # Two views of the same "images": a shared base plus independent noise.
    base = torch.randn(STEPS, BATCH, *input_shape)
    im_q = base + 0.5 * torch.randn(base.shape)
    im_k = base + 0.5 * torch.randn(base.shape)
    out["im_q"], out["im_k"] = im_q, im_k

    relu_margin = [math.inf]

    def record(module, inputs):  # before the (in-place) ReLU
        relu_margin[0] = min(relu_margin[0], inputs[0].detach().abs().min().item())

    for mod in model.encoder_q.modules():
        if isinstance(mod, nn.ReLU):
            mod.register_forward_pre_hook(record)

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    metrics, all_logits = [], []
    for step in range(STEPS):
        outputs, target = model(im_q=im_q[step], im_k=im_k[step])
        loss = sum(criterion(output, target) for output in outputs)
        accs = [accuracy(output, target, topk=(1, 5)) for output in outputs]
        acc1 = sum(a[0].item() for a in accs) / len(accs)
        acc5 = sum(a[1].item() for a in accs) / len(accs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        metrics.append([loss.item(), acc1, acc5])
        all_logits += [o.detach() for o in outputs]

    out["perms"] = torch.stack(model.perms).float()
    out["metrics"] = metrics
    out["logits"] = torch.stack(all_logits)
    out["final_q"] = flat_state(model.encoder_q, keys)
    out["final_k"] = flat_state(model.encoder_k, keys)
    out["queue"] = model.queue
    out["queue_ptr"] = model.queue_ptr.float()
    return out, relu_margin[0]


def flat_grads(module, keys):
    params = dict(module.named_parameters())
    return torch.cat([params[k].grad.detach().reshape(-1) for k in keys if k in params])


def relu_recorder(module):
    relu_margin = [math.inf]

    def record(mod, inputs):  # before the (in-place) ReLU
        relu_margin[0] = min(relu_margin[0], inputs[0].detach().abs().min().item())

    for mod in module.modules():
        if isinstance(mod, nn.ReLU):
            mod.register_forward_pre_hook(record)
    return relu_margin


def simulate_baseline(opts, input_shape, torch_seed):
    """Two training steps of EndToEnd or MemoryBank; returns the files and the ReLU margin."""
    torch.manual_seed(torch_seed)
    encoder = partial(base_encoder, in_channels=opts["in_channels"], width=opts["width"],
                      bn_splits=opts["bn_splits"])
    gen = Pcg32(opts["seed"], SHUFFLE_STREAM)
    bank = opts["mechanism"] == "memory_bank"
    if bank:
        model = MemoryBank(encoder, dim=opts["dim"], K=opts["K"], T=opts["T"], mlp=opts["mlp"],
                           bank_size=opts["bank_size"], bank_m=opts["bank_m"], generator=gen)
    else:
        model = EndToEnd(encoder, dim=opts["dim"], T=opts["T"], mlp=opts["mlp"], shuffle=opts["shuffle"],
                         shuffle_generator=gen)
    model.train()
    out = {}
    keys = sorted(model.encoder_q.state_dict())
    sd = model.encoder_q.state_dict()
    out["keys.txt"] = [f"{k} {sd[k].numel()}" for k in keys]
    out["init_q"] = flat_state(model.encoder_q, keys)
    base = torch.randn(STEPS, BATCH, *input_shape)
    im_q = base + 0.5 * torch.randn(base.shape)
    im_k = base + 0.5 * torch.randn(base.shape)
    out["im_q"], out["im_k"] = im_q, im_k
    if bank:
        M = opts["bank_size"]
        # A bank as training fills it (features of other images; the official uniform init has
        # random positives), and batches whose rows overlap, so that step 2 reads rows step 1 wrote.
        with torch.no_grad():
            filler = copy.deepcopy(model.encoder_q)
            model.memory.copy_(nn.functional.normalize(filler(torch.randn(M, *input_shape)), dim=1))
        out["memory0"] = model.memory.clone()
        perm = torch.randperm(M)
        indices = torch.stack([perm[:BATCH], torch.cat([perm[BATCH // 2:BATCH], perm[BATCH:BATCH + BATCH // 2]])])
        out["indices"] = indices.float()
    relu_margin = relu_recorder(model.encoder_q)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    metrics, all_logits, grads = [], [], []
    for step in range(STEPS):
        if bank:
            outputs, target = model(im_q[step], indices[step])
        else:
            outputs, target = model(im_q[step], im_k[step])
        loss = sum(criterion(output, target) for output in outputs)
        acc1, acc5 = accuracy(outputs[0], target, topk=(1, 5))
        optimizer.zero_grad()
        loss.backward()
        grads.append(flat_grads(model.encoder_q, keys))
        optimizer.step()
        metrics.append([loss.item(), acc1.item(), acc5.item()])
        all_logits += [o.detach() for o in outputs]
    out["metrics"] = metrics
    out["logits"] = torch.stack(all_logits)
    out["grads"] = torch.stack(grads)
    out["final_q"] = flat_state(model.encoder_q, keys)
    if bank:
        out["draws"] = torch.stack(model.draws).float()
        out["memory"] = model.memory
    else:
        out["perms"] = torch.stack(model.perms).float()
    return out, relu_margin[0]


# A ReLU input within float32 noise of 0 (activations agree to ~1e-6 after 20 layers) may take
# the other side in moco-lua: its gradient mask flips and the second step's gradients differ
# by percents (seen with a ReLU input of 7.6e-6), a property of the data, not of either code.
RELU_MARGIN = 2e-5


def run_case(name, opts, input_shape, torch_seed, simulate=simulate):
    for attempt in range(50):
        seed = torch_seed + 1000 * attempt
        out, margin = simulate(opts, input_shape, seed)
        if margin >= RELU_MARGIN:
            break
    else:
        raise RuntimeError(f"{name}: no seed keeps every ReLU input {RELU_MARGIN} away from 0")
    for what, value in out.items():
        if what.endswith(".txt"):
            save_text(f"{name}.{what}", value)
        else:
            save(f"{name}.{what}", value)
    for step, (loss, acc1, acc5) in enumerate(out["metrics"]):
        print(f"{name} step {step + 1}: loss {loss:.6f} acc1 {acc1:.1f} acc5 {acc5:.1f}")
    print(f"{name}: torch seed {seed}, smallest ReLU input of encoder_q {margin:.2e}")


def check_pcg():
    """Pcg32 against the values core/rng.c produces (tests/c/test_rng.c's reference), by way
    of the uniform floats make_fixtures_models.py's vectorised port yields."""
    try:
        from make_fixtures_models import pcg_uniform
    except ImportError:
        return
    g = Pcg32(123, 45)
    mine = np.array([(g.u32() >> 8) * 2.0 ** -24 for _ in range(8)], dtype=np.float32)
    assert np.array_equal(mine, pcg_uniform(123, 45, 8)), "Pcg32 disagrees with pcg_uniform"


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    torch.set_num_threads(1)
    check_pcg()
    for name, opts, shape, seed in CASES:
        run_case(name, opts, shape, seed)
    for name, opts, shape, seed in (E2E_CASE, BANK_CASE):
        run_case(name, opts, shape, seed, simulate=simulate_baseline)
    total = sum(os.path.getsize(p) for p in written)
    print(f"wrote {len(written)} files, {total / 1e6:.2f} MB, into {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
