-- recipes/knn.lua: kNN accuracy of a checkpoint's features (the official demo's monitor).
--
-- The official CIFAR-10 demo's monitor: cosine similarity, the k = 200 nearest training
-- images, votes weighted by exp(sim / 0.1).  The bank is the training set, the queries the
-- test set.
--   moco-lua knn --pretrained runs/quickstart-20250101-120000/checkpoint_0002.safetensors
--   moco-lua recipes/knn.lua --pretrained ckpt --data cifar10:/data/cifar-10-batches-bin --features pooled
--   moco-lua recipes/knn.lua --pretrained random        (an untrained encoder: the baseline)
-- --features output takes the encoder's output (the projection head, as the demo's monitor
-- does); pooled takes the backbone's pooled features before the head.  See docs/evaluation.md.
local recipe = require "moco.recipe"
local pretrain = require "moco.pretrain"
local eval = require "moco.eval"
local data = require "moco.data"

local spec = pretrain.probe_spec{
  { "knn-k", 200, "number of neighbours" },
  { "knn-t", 0.1, "temperature of the vote weights exp(sim / t)" },
  { "features", "output", "output (the encoder's output, as the demo's monitor) or pooled (before the head)" },
  { "bank-subset", 0, "use only the first N training images as the bank (0 = all)" },
  { "batch-size", 256, "images per forward pass", short = "b" },
  { "seed", 0, "seed of the random encoder" },
  { "cache", "", "keep the features in PREFIX.bank.safetensors / PREFIX.test.safetensors and reuse them", path = true },
  { "quiet", false, "no progress bars" },
}
-- Under mpirun the features are extracted on shards and gathered (moco.eval); rank 0 prints.
local opts = pretrain.probe_start(arg, spec, "kNN accuracy of a checkpoint's features (the official demo's monitor)")
if not opts then return end
local dist = moco.dist
local train_ds, test_ds, kind, test_transform, net, bank_ds
dist.agreed(function()
  if opts.features ~= "output" and opts.features ~= "pooled" then
    error("--features must be output or pooled, got " .. opts.features, 0)
  end
  for _, name in ipairs{ "knn-k", "batch-size" } do
    if opts[name] < 1 then error(string.format("--%s must be at least 1, got %d", name, opts[name]), 0) end
  end
  if not (opts["knn-t"] > 0) then error("--knn-t must be positive, got " .. opts["knn-t"], 0) end
  if opts.threads > 0 then moco.set_num_threads(opts.threads) end

  train_ds, test_ds, kind, test_transform = pretrain.datasets(opts)
  if not test_ds then error("--data " .. opts.data .. ": no val/ folder to evaluate on", 0) end
  net = pretrain.probe_backbone(opts)
  bank_ds = train_ds
  if opts["bank-subset"] > 0 and opts["bank-subset"] < #train_ds then bank_ds = data.Subset(train_ds, opts["bank-subset"]) end
  if opts["test-subset"] > 0 and opts["test-subset"] < #test_ds then test_ds = data.Subset(test_ds, opts["test-subset"]) end
  -- before any feature is computed: k cannot exceed the bank
  if opts["knn-k"] > #bank_ds then
    error(string.format("--knn-k %d is larger than the bank (%d training images%s)", opts["knn-k"], #bank_ds,
                        opts["bank-subset"] > 0 and ", --bank-subset " .. opts["bank-subset"] or ""), 0)
  end
end)

print(string.format("knn: %s on %s: %d bank images, %d test images; %s", opts.pretrained, kind, #bank_ds, #test_ds,
                    recipe.describe(opts, spec)))
local t0 = moco.time()
local top1, top5 = eval.knn_monitor(net, bank_ds, test_ds, {
  transform = test_transform, k = opts["knn-k"], T = opts["knn-t"], batch_size = opts["batch-size"],
  workers = opts.workers, features = opts.features, cache = opts.cache ~= "" and opts.cache or nil,
})
print(string.format("kNN (k=%d, T=%g, cosine, %s features): top-1 %.2f%%  top-5 %.2f%%  (%.1f s)",
                    opts["knn-k"], opts["knn-t"], opts.features, top1, top5, moco.time() - t0))
