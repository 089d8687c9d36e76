-- lua/moco/eval.lua: judging representations (moco.eval).
--
--   feats, labels = eval.extract_features(net, dataset_or_loader, {batch_size=256,
--                                          transform=T.ToTensor(), normalize=true, workers=2})
--   top1, top5 = eval.knn{train_features=, train_labels=, test_features=, test_labels=,
--                         k=200, T=0.1, classes=10}
--   top1, top5 = eval.knn_monitor(net, memory_dataset, test_dataset, {transform=, k=, T=})
--
-- The kNN classifier is the official MoCo CIFAR-10 demo's monitor: cosine similarity by a
-- matrix product, the k = 200 nearest neighbours, votes weighted by exp(sim / 0.1); the
-- accuracies are percentages, as the demo prints them.
local moco = require "moco"
local nn = require "moco.nn"
local data = require "moco.data"

local eval = {}

local function progress(label, done, total)
  if moco.isatty("stderr") then
    io.stderr:write(string.format("\r%s %d/%d", label, done, total))
    if done >= total then io.stderr:write("\n") end
    io.stderr:flush()
  end
end

-- Runs net in eval mode (running BN statistics, no parameter-gradient work) over a dataset
-- or a loader of (images, labels) batches.  Returns features (N, D), L2-normalised unless
-- normalize == false, and labels (N).  `features = "pooled"` takes the backbone's pooled
-- features (before fc) instead of the network's output.
function eval.extract_features(net, source, opts)
  opts = nn.check_options("eval.extract_features", opts, {
    batch_size = true, transform = true, normalize = true, workers = true, features = true, label = true,
  })
  local loader = source
  local own_loader = false
  if getmetatable(source) == nil or source.next == nil then
    loader = data.Loader(source, {
      batch_size = opts.batch_size or 256, transform = opts.transform, workers = opts.workers or 2,
      shuffle = false, drop_last = false,
    })
    own_loader = true
  end
  local was_training = net.training
  net:eval()
  local n = #loader.dataset
  local feats, labels
  local row = 1
  local ok, err = pcall(function()
    loader:set_epoch(0)
    for images, batch_labels in loader:iter() do
      local out
      if opts.features == "pooled" then out = net:features(images) else out = net:forward(images) end
      out = out:reshape(out:size(1), -1)
      if not feats then
        feats = moco.zeros{ n, out:size(2) }
        labels = moco.zeros{ n }
      end
      local b = out:size(1)
      feats:narrow(1, row, b):copy(out)
      labels:narrow(1, row, b):copy(batch_labels)
      row = row + b
      progress(opts.label or "features", row - 1, n)
    end
  end)
  net:train(was_training)
  if own_loader then loader:close() end
  if not ok then error(err, 0) end
  if row - 1 ~= n then
    error(string.format("eval.extract_features: got %d rows for a dataset of %d (the loader drops the last batch?)", row - 1, n), 2)
  end
  if opts.normalize ~= false then feats:normalize_() end
  return feats, labels
end

local function count_classes(labels)
  local maxv = labels:max()
  return math.tointeger(maxv) + 1
end

-- Weighted kNN accuracy (percent) of test features against a bank of train features.
function eval.knn(opts)
  opts = nn.check_options("eval.knn", opts, {
    train_features = true, train_labels = true, test_features = true, test_labels = true,
    k = true, T = true, classes = true,
  })
  for _, key in ipairs{ "train_features", "train_labels", "test_features", "test_labels" } do
    if opts[key] == nil then error("eval.knn: " .. key .. " is required", 2) end
  end
  local classes = opts.classes or count_classes(opts.train_labels)
  local topn = math.min(5, classes)
  local pred = moco._eval.knn_predict(opts.test_features, opts.train_features, opts.train_labels,
                                      opts.k or 200, opts.T or 0.1, classes, topn)
  local m = pred:size(1)
  local top1, top5 = 0, 0
  local labels = opts.test_labels
  for i = 1, m do
    local y = labels[i]
    local row = pred[i]
    if row[1] == y then top1 = top1 + 1 end
    for j = 1, topn do
      if row[j] == y then top5 = top5 + 1; break end
    end
  end
  return 100 * top1 / m, 100 * top5 / m, pred
end

-- The demo's monitor: features of the memory (train) set and the test set from `net`,
-- then kNN.  transform: the test-time pipeline (e.g. ToTensor + Normalize).
function eval.knn_monitor(net, memory_dataset, test_dataset, opts)
  opts = nn.check_options("eval.knn_monitor", opts, {
    transform = true, k = true, T = true, batch_size = true, workers = true, features = true,
  })
  local common = { transform = opts.transform, batch_size = opts.batch_size, workers = opts.workers, features = opts.features }
  common.label = "kNN bank"
  local bank, bank_labels = eval.extract_features(net, memory_dataset, common)
  common.label = "kNN test"
  local test, test_labels = eval.extract_features(net, test_dataset, common)
  return eval.knn{
    train_features = bank, train_labels = bank_labels, test_features = test, test_labels = test_labels,
    k = opts.k or 200, T = opts.T or 0.1, classes = memory_dataset.classes and #memory_dataset.classes or nil,
  }
end

return eval
