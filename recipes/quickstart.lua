-- recipes/quickstart.lua: the default demo (`make demo`): MoCo v2 on Fashion-MNIST from the
-- Debian package (dataset-fashion-mnist), with a small ResNet (resnet20: 16/32/64 channels,
-- one input channel), sized to finish in about ten minutes on two cores.  At the end it
-- reports the kNN accuracy (the official demo's monitor: k 200, T 0.1, cosine) of the
-- learned features on the test set, next to the same classifier on standardised raw pixels.
--   moco-lua recipes/quickstart.lua [--epochs 3 --batch-size 256 ...]   (--help lists all)
local pretrain = require "moco.pretrain"
local eval = require "moco.eval"

local opts = pretrain.parse(arg, {
  data = "fashion-mnist", arch = "resnet20", ["in-channels"] = 1, ["image-size"] = 28,
  ["batch-size"] = 256, lr = 0.06, wd = 5e-4, momentum = 0.9, epochs = 3, cos = true, schedule = {},
  ["moco-dim"] = 128, ["moco-k"] = 4096, ["moco-m"] = 0.99, ["moco-t"] = 0.1, mlp = true,
  ["bn-splits"] = 8, ["knn-every"] = 0, ["knn-k"] = 200, ["knn-t"] = 0.1, ["print-freq"] = 20,
  out = "quickstart-out",
}, "MoCo v2 on Fashion-MNIST (the default demo)")
if not opts then return end

local t0 = moco.time()
local model, history = pretrain.run(opts)
local train_seconds = moco.time() - t0

-- The kNN monitor on the learned features: the whole training set is the bank.
local train_ds, test_ds, _, test_transform = pretrain.datasets(opts)
local top1, _, _, features = eval.knn_monitor(model:encoder(), train_ds, test_ds, {
  transform = test_transform, k = opts["knn-k"], T = opts["knn-t"], workers = opts.workers,
})

-- The same classifier on raw pixels standardised with the training set's statistics.
local function pixels(ds)
  local x = moco.zeros{ #ds, 784 }
  local feats = eval.extract_features({ training = false, eval = function() end, train = function() end,
                                        forward = function(_, images) return images end }, ds, { normalize = false })
  x:copy(feats:reshape(#ds, 784))
  return x
end
local xtr, xte = pixels(train_ds), pixels(test_ds)
local mean = xtr:mean(1)
local std = ((xtr - mean) * (xtr - mean)):mean(1):sqrt():clamp(1e-3)
local raw_top1 = eval.knn{
  train_features = ((xtr - mean) / std):normalize_(), train_labels = train_ds:targets(),
  test_features = ((xte - mean) / std):normalize_(), test_labels = test_ds:targets(),
  k = opts["knn-k"], T = opts["knn-t"], classes = 10,
}
print(string.format("kNN accuracy (k=%d, T=%g) on the Fashion-MNIST test set:", opts["knn-k"], opts["knn-t"]))
print(string.format("  MoCo v2 features after %d epoch(s) (%.0f s of training): %.2f%%", opts.epochs, train_seconds, top1))
print(string.format("  standardised raw pixels:                              %.2f%%", raw_top1))
print(string.format("  difference: %+.2f points", top1 - raw_top1))

-- Pictures (moco.plot, drawn with cairo): the training curves, with the final kNN accuracy
-- as the last epoch's monitor value, and for one test image of each class its eight
-- nearest training images in the learned feature space.  --out DIR (default quickstart-out).
local plot = require "moco.plot"
local out = opts.out ~= "" and opts.out or "quickstart-out"
if #history > 0 and history[#history].knn == nil then history[#history].knn = top1 end
local curves = plot.output_path(out, "training-curves.png")
plot.training_curves(history, {
  path = curves, title = string.format("MoCo v2 on Fashion-MNIST (%s, %d epoch%s)", opts.arch, opts.epochs,
                                       opts.epochs == 1 and "" or "s"),
})
local grid = plot.output_path(out, "neighbours.png")
local _, neighbours = plot.retrieval_grid{
  query_dataset = test_ds, query_features = features.test, bank_dataset = train_ds,
  bank_features = features.bank, k = 8, path = grid,
}
print("pictures: " .. curves .. " (training curves), " .. grid ..
      string.format(" (nearest neighbours: %.0f%% share the query's class)", 100 * neighbours.precision))
