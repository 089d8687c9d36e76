-- The demo study (docs/experiments.md): MoCo on Fashion-MNIST with every knob on the command line.
--   moco-lua tests/bench/fm_study.lua key=value ...   (see defaults below)
-- Prints one JSON line with the settings, the wall times and the kNN accuracies of the
-- pooled backbone features and of the head output (k 200, T 0.1, whole train set as bank,
-- whole test set, unless bank= / test= subsets are given).  arch= resnet8/14/20, stem=2 for
-- the stride-2 stem, pad=N for RandomCrop(28, padding = N).
local data, T, eval, optim = moco.data, moco.transforms, moco.eval, moco.optim
local o = {
  epochs = 3, batch = 256, lr = 0.06, wd = 5e-4, t = 0.1, k = 4096, m = 0.99, mlp = 1, splits = 8,
  scale = 0.2, jitter = 0.4, pjitter = 0.8, flip = 1, sym = 0, width = 1, arch = "resnet20", warmup = 0, stem = 1, pad = 0,
  sched = "step", -- "step": cosine per step; "epoch": the official per-epoch cosine; "const"
  subset = 0, bank = 0, test = 0, seed = 0, dim = 128, workers = 2, blur = 0, minlr = 0, final = 0,
}
for _, a in ipairs(arg) do
  local key, v = a:match("^([%w_]+)=(.*)$")
  if not key or o[key] == nil then error("unknown setting " .. a) end
  o[key] = tonumber(v) or v
end
local MEAN, STD = { 0.2860 }, { 0.3530 }
local train_ds = data.FashionMNIST{ train = true }
local test_ds = data.FashionMNIST{ train = false }
if o.subset > 0 then train_ds = data.Subset(train_ds, o.subset) end
-- pad > 0: RandomCrop(28, padding = pad) (a translation by up to pad pixels) first;
-- scale = 0: no RandomResizedCrop
local parts = {}
if o.pad > 0 then parts[#parts + 1] = T.RandomCrop(28, { padding = o.pad }) end
if o.scale > 0 then parts[#parts + 1] = T.RandomResizedCrop(28, { scale = { o.scale, 1.0 } }) end
if o.jitter > 0 then parts[#parts + 1] = T.RandomApply(T.ColorJitter(o.jitter, o.jitter, 0, 0), o.pjitter) end
if o.blur > 0 then parts[#parts + 1] = T.RandomApply(T.GaussianBlur{ 0.1, 1.0 }, o.blur) end
if o.flip > 0 then parts[#parts + 1] = T.RandomHorizontalFlip() end
parts[#parts + 1] = T.ToTensor()
parts[#parts + 1] = T.Normalize(MEAN, STD)
local aug = T.Compose(parts)
local loader = data.Loader(train_ds, { batch_size = o.batch, transform = T.TwoCrops(aug), workers = o.workers,
                                        shuffle = true, drop_last = true, seed = o.seed })
local model = moco.MoCo{ arch = o.arch, dim = o.dim, K = o.k, m = o.m, T = o.t, mlp = o.mlp == 1,
                         bn_splits = o.splits, symmetric = o.sym == 1, in_channels = 1, width = o.width,
                         stem_stride = o.stem,
                         lr = o.lr, momentum = 0.9, weight_decay = o.wd, seed = o.seed }
local spe = #loader
local total = o.epochs * spe
local step = 0
local t0 = moco.time()
local last = { loss = 0, acc1 = 0 }
for epoch = 0, o.epochs - 1 do
  loader:set_epoch(epoch)
  local sl, sa, n = 0, 0, 0
  for im_q, im_k in loader:iter() do
    local lr
    if o.sched == "step" then
      lr = o.minlr + (o.lr - o.minlr) * 0.5 * (1 + math.cos(math.pi * step / total))
    elseif o.sched == "epoch" then
      lr = optim.cosine_lr(o.lr, epoch, o.epochs)
    else
      lr = o.lr
    end
    if o.warmup > 0 and step < o.warmup * spe then lr = lr * (step + 1) / (o.warmup * spe) end
    model:set_lr(lr)
    local loss, acc1 = model:step(im_q, im_k)
    sl, sa, n = sl + loss, sa + acc1, n + 1
    step = step + 1
  end
  last = { loss = sl / n, acc1 = sa / n }
  io.stderr:write(string.format("epoch %d loss %.3f acc1 %.2f  %.0fs\n", epoch, last.loss, last.acc1, moco.time() - t0))
end
local train_s = moco.time() - t0
loader:close()
local enc = model:encoder()
local bank_ds = o.bank > 0 and data.Subset(data.FashionMNIST{ train = true }, o.bank) or data.FashionMNIST{ train = true }
local eval_ds = o.test > 0 and data.Subset(test_ds, o.test) or test_ds
local tt = T.Compose{ T.ToTensor(), T.Normalize(MEAN, STD) }
local t1 = moco.time()
local res = {}
for _, kind in ipairs{ "pooled", "output" } do
  local ftr, ltr = eval.extract_features(enc, bank_ds, { transform = tt, features = kind, workers = o.workers })
  local fte, lte = eval.extract_features(enc, eval_ds, { transform = tt, features = kind, workers = o.workers })
  res[kind] = eval.knn{ train_features = ftr, train_labels = ltr, test_features = fte, test_labels = lte,
                        k = 200, T = 0.1, classes = 10 }
end
local eval_s = moco.time() - t1
local keys = {}
for k in pairs(o) do keys[#keys + 1] = k end
table.sort(keys)
local s = {}
for _, k in ipairs(keys) do s[#s + 1] = string.format('"%s": %s', k, type(o[k]) == "string" and '"' .. o[k] .. '"' or tostring(o[k])) end
print(string.format('{%s, "steps": %d, "train_s": %.1f, "eval_s": %.1f, "loss": %.4f, "acc1": %.2f, "knn_pooled": %.2f, "knn_output": %.2f}',
                    table.concat(s, ", "), step, train_s, eval_s, last.loss, last.acc1, res.pooled, res.output))
