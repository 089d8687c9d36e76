-- recipes/quickstart.lua: the default demo: MoCo v2 on Fashion-MNIST, then kNN accuracy.
--
-- `make demo` runs it: MoCo v2 on Fashion-MNIST from the Debian package
-- (dataset-fashion-mnist), with a small ResNet (resnet8: 16/32/64 channels, one block a
-- stage, one input channel, a stride-2 stem: see below), sized to finish in five to seven
-- minutes on two cores.
-- At the end it reports the kNN accuracy (the official demo's monitor: k 200, T 0.1,
-- cosine) of the learned features on the test set, next to the same classifier on
-- standardised raw pixels.  Everything lands in the run directory
-- (runs/quickstart-<date>, or --out DIR): checkpoints, log.jsonl, config.json,
-- training-curves.png, neighbours.png, augmentation.png and report.html.
--   moco-lua quickstart [--epochs 25 --batch-size 128 ...]   (--help lists all)
--   moco-lua quickstart --resume runs/quickstart-20250101-120000   (continue it)
local pretrain = require "moco.pretrain"
local eval = require "moco.eval"

-- The settings are MoCo v2's CIFAR-10 demo (lr 0.06, wd 5e-4, m 0.99, mlp, 8 BN splits) with
-- departures that docs/experiments.md measured on Fashion-MNIST at equal wall time:
-- batch 128 (twice the SGD steps in the same time), K 1024 (a short run: a queue of 4096
-- holds keys from a quarter of an epoch ago), T 0.05, a milder crop (--crop-min 0.4: the
-- 28x28 garments lose their shape below it), the cosine per step (--cos-per-step; per
-- epoch, a few epochs hold only a few learning rates), and a faster encoder: resnet8 with
-- a stride-2 stem (--stem-stride 2: stage maps 14/7/4 instead of 28/14/7; about 12x fewer
-- FLOPs than resnet20 with its stride-1 stem), so that 25 epochs fit where 3 did.  At equal
-- wall time more epochs of the small encoder beat fewer of the deep one: 25 epochs of it
-- (403 s) reached 82.85% against 82.46% for 15 epochs of resnet20 (610 s).
local opts = pretrain.parse(arg, {
  data = "fashion-mnist", arch = "resnet8", ["in-channels"] = 1, ["image-size"] = 28,
  ["stem-stride"] = 2,
  ["batch-size"] = 128, lr = 0.06, wd = 5e-4, momentum = 0.9, epochs = 25, cos = true, ["cos-per-step"] = true,
  schedule = {}, ["crop-min"] = 0.4,
  ["moco-dim"] = 128, ["moco-k"] = 1024, ["moco-m"] = 0.99, ["moco-t"] = 0.05, mlp = true,
  ["bn-splits"] = 8, ["knn-every"] = 0, ["knn-k"] = 200, ["knn-t"] = 0.1, ["print-freq"] = 20,
}, "MoCo v2 on Fashion-MNIST (the default demo)")
if not opts then return end

local t0 = moco.time()
local model, history, _, run = pretrain.run(opts)
local train_seconds = moco.time() - t0

-- The kNN monitor on the learned features, on the pooled backbone (what a linear probe or a
-- downstream task takes) and on the head's output (the official CIFAR-10 demo's monitor).
-- The bank is the whole training set, or the images trained on (--train-subset), or the
-- first --knn-subset of those; the test set is whole.
local train_ds, test_ds, _, test_transform = pretrain.datasets(opts)
if opts["train-subset"] > 0 and opts["train-subset"] < #train_ds then train_ds = moco.data.Subset(train_ds, opts["train-subset"]) end
if opts["knn-subset"] > 0 and opts["knn-subset"] < #train_ds then train_ds = moco.data.Subset(train_ds, opts["knn-subset"]) end
local t_eval = moco.time()
local encoder = model:encoder()
encoder:eval()
-- One pass over each set: the pooled features, then the head applied to them.
local function both(ds, label)
  local pooled, labels = eval.extract_features(encoder, ds, { transform = test_transform, workers = opts.workers,
                                                              features = "pooled", normalize = false, label = label })
  local head = encoder.fc and encoder.fc:forward(pooled):clone() or pooled:clone()
  return pooled:normalize_(), head:normalize_(), labels
end
local bank_p, bank_h, bank_labels = both(train_ds, "kNN bank")
local test_p, test_h, test_labels = both(test_ds, "kNN test")
local function knn(bank, test)
  return eval.knn{ train_features = bank, train_labels = bank_labels, test_features = test, test_labels = test_labels,
                   k = opts["knn-k"], T = opts["knn-t"], classes = 10 }
end
local top1, head_top1 = knn(bank_p, test_p), knn(bank_h, test_h)
local features = { bank = bank_p, test = test_p }

-- The same classifier on raw pixels standardised with the bank's statistics.
local xtr = eval.pixel_features(train_ds, { workers = opts.workers, label = "pixels bank" })
local xte = eval.pixel_features(test_ds, { workers = opts.workers, label = "pixels test" })
xtr, xte = eval.standardize(xtr, xte)
local raw_top1 = eval.knn{
  train_features = xtr:normalize_(), train_labels = train_ds:targets(),
  test_features = xte:normalize_(), test_labels = test_ds:targets(),
  k = opts["knn-k"], T = opts["knn-t"], classes = 10,
}
local eval_seconds = moco.time() - t_eval
print(string.format("kNN accuracy (k=%d, T=%g, cosine; bank: %d training images; %d test images), %.0f s:",
                    opts["knn-k"], opts["knn-t"], #train_ds, #test_ds, eval_seconds))
print(string.format("  MoCo v2, pooled backbone (%d epoch(s), %.0f s of training): %.2f%%", opts.epochs, train_seconds, top1))
print(string.format("  MoCo v2, head output:                                  %.2f%%", head_top1))
print(string.format("  standardised raw pixels:                               %.2f%%", raw_top1))
print(string.format("  difference (pooled - pixels): %+.2f points", top1 - raw_top1))

-- Under mpirun every rank has the results (the features were gathered); rank 0 alone
-- draws the pictures and writes the report.
if not moco.dist.is_main() then return end

-- Pictures (moco.plot, drawn with cairo) into the run directory: the training curves,
-- with the final kNN accuracy as the last epoch's monitor value, and for one test image of
-- each class its eight nearest training images in the learned feature space; then the
-- report with the final accuracies.
local plot = require "moco.plot"
local curves_history = {}
for i, r in ipairs(history) do curves_history[i] = r end
if #history > 0 and history[#history].knn == nil then
  local last = {}
  for k, v in pairs(history[#history]) do last[k] = v end
  last.knn = top1
  curves_history[#history] = last
end
run.curves_history = curves_history
run.title = string.format("quickstart: MoCo v2 on Fashion-MNIST (%s, %d epoch%s)", opts.arch, opts.epochs,
                          opts.epochs == 1 and "" or "s")
local grid, neighbours = run:path("neighbours.png"), nil
pretrain.atomic_picture(grid, function(path)
  neighbours = select(2, plot.retrieval_grid{
    query_dataset = test_ds, query_features = features.test, bank_dataset = train_ds,
    bank_features = features.bank, k = 8, path = path,
  })
end)
run.pictures[#run.pictures + 1] = {
  title = "Nearest neighbours", file = grid,
  caption = string.format("a test image of each class and its 8 nearest training images (green: same class, red: "
                          .. "other); %.0f%% share the query's class", 100 * neighbours.precision),
}
run.results[#run.results + 1] = { string.format("kNN top-1 on the test set, pooled backbone (k=%d, T=%g)", opts["knn-k"], opts["knn-t"]),
                                  string.format("%.2f%%", top1) }
run.results[#run.results + 1] = { "the same kNN on the head's output", string.format("%.2f%%", head_top1) }
run.results[#run.results + 1] = { "the same kNN on standardised raw pixels", string.format("%.2f%%", raw_top1) }
run.results[#run.results + 1] = { "training time", string.format("%.0f s", train_seconds) }
run.status = string.format("finished: %d epochs, kNN top-1 %.2f%%", opts.epochs, top1)
pretrain.refresh_report(run)
print("pictures: " .. run:path("training-curves.png") .. " (training curves), " .. grid ..
      string.format(" (nearest neighbours: %.0f%% share the query's class)", 100 * neighbours.precision))
