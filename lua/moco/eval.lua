-- lua/moco/eval.lua: judging representations (moco.eval).
--
--   feats, labels = eval.extract_features(net, dataset_or_loader, {batch_size=256,
--                                          transform=T.ToTensor(), normalize=true, workers=2})
--   top1, top5 = eval.knn{train_features=, train_labels=, test_features=, test_labels=,
--                         k=200, T=0.1, classes=10}
--   top1, top5, pred, features = eval.knn_monitor(net, memory_dataset, test_dataset,
--                                                  {transform=, k=, T=, cache=prefix})
--   x, labels = eval.pixel_features(dataset)          -- raw pixels (N, C*H*W) in [0, 1]
--   xtr, xte = eval.standardize(xtr, xte)            -- with the first set's mean and std
--   index, sim = eval.neighbours(query, bank, k)     -- the k most similar bank rows
--   top1, top5 = eval.accuracy(scores, labels)       -- percent, from (M, C) scores
--   net = eval.load_encoder(path | "random", {arch=, in_channels=, cifar_stem=})  -- recipes
--
-- The kNN classifier is the official MoCo CIFAR-10 demo's monitor: cosine similarity by a
-- matrix product, the k = 200 nearest neighbours, votes weighted by exp(sim / 0.1); the
-- accuracies are percentages, as the demo prints them.  The linear classification protocol
-- is in moco.lincls; pictures (training curves, retrieval grids) in moco.plot.
--
-- extract_features{cache = "feats.safetensors"} keeps the features in a safetensors file
-- (with moco.save/moco.load): a later call with the same network and dataset reads them
-- back instead of running the network.  The file records the dataset size, the feature
-- kind, whether rows were normalised and the transform, and a mismatch recomputes; it
-- cannot know that the network changed, so name the file after the checkpoint.  knn_monitor's cache = prefix
-- keeps <prefix>.bank.safetensors and <prefix>.test.safetensors.
local moco = require "moco"
local nn = require "moco.nn"
local data = require "moco.data"
local progress = require "moco.progress"
local dist = require "moco.dist"

local eval = {}

-- The feature cache (see the header).  moco.save/moco.load come with checkpoints; without
-- them the cache is an error rather than silently ignored.
local function cache_functions()
  local save, load = moco.save, moco.load
  if type(save) ~= "function" or type(load) ~= "function" then
    error("eval.extract_features: cache needs moco.save and moco.load (safetensors), which this build lacks", 3)
  end
  return save, load
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function cache_key(n, opts)
  local transform = opts.transform and tostring(opts.transform):gsub("%s+", " ") or "none"
  return string.format("rows=%d features=%s normalized=%s transform=%s", n, opts.features or "output",
                       tostring(opts.normalize ~= false), transform)
end

local function read_cache(path, n, opts)
  local _, load = cache_functions()
  if not file_exists(path) then return nil end
  local tensors, metadata = load(path)
  if type(tensors) ~= "table" or not tensors.features or not tensors.labels then return nil end
  local key = type(metadata) == "table" and metadata.moco_eval or nil
  if key ~= cache_key(n, opts) then
    io.stderr:write(string.format("eval.extract_features: cache %s is for %s, not %s: recomputing\n", path,
                                  tostring(key), cache_key(n, opts)))
    return nil
  end
  return tensors.features, tensors.labels
end

local function write_cache(path, feats, labels, n, opts)
  local save = cache_functions()
  save(path, { features = feats, labels = labels }, { moco_eval = cache_key(n, opts) })
end

-- The network over every sample of a dataset or loader, in eval mode: features (N, D), not
-- normalised, labels (N) and N.
local function run_network(net, source, opts)
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
  local bar = progress.Bar(opts.label or "features", n)
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
      bar:update(row - 1)
    end
  end)
  bar:finish()
  net:train(was_training)
  if own_loader then loader:close() end
  if not ok then error(err, 0) end
  if row - 1 ~= n then
    error(string.format("eval.extract_features: got %d rows for a dataset of %d (the loader drops the last batch?)", row - 1, n), 3)
  end
  return feats, labels, n
end

-- Over MPI ranks (moco.dist): each rank runs the network over its contiguous share of the
-- dataset, and the rows are gathered, so that every rank holds all the features, in the
-- dataset's order (eval mode: a row depends on its image alone).  Only rank 0 writes the
-- cache.
local function extract_sharded(net, source, opts)
  local n = #source
  local first, count, per = dist.share(n)
  local positions = {}
  for i = 1, count do positions[i] = first + i - 1 end
  local feats, labels
  if count > 0 then feats, labels = run_network(net, data.Subset(source, positions), opts) end
  -- every rank sends per rows (the last shares are padded) and learns the feature width
  local width = dist.max_of(feats and feats:size(2) or 0)
  local fblock, lblock = moco.zeros{ per, width }, moco.zeros{ per }
  if count > 0 then
    fblock:narrow(1, 1, count):copy(feats)
    lblock:narrow(1, 1, count):copy(labels)
  end
  feats = dist.all_gather(fblock):narrow(1, 1, n):clone()
  labels = dist.all_gather(lblock):narrow(1, 1, n):clone()
  if opts.normalize ~= false then feats:normalize_() end
  if opts.cache and dist.is_main() then write_cache(opts.cache, feats, labels, n, opts) end
  return feats, labels
end

-- Runs net in eval mode (running BN statistics, no parameter-gradient work) over a dataset
-- or a loader of (images, labels) batches.  Returns features (N, D), L2-normalised unless
-- normalize == false, and labels (N).  `features = "pooled"` takes the backbone's pooled
-- features (before fc) instead of the network's output.
function eval.extract_features(net, source, opts)
  opts = nn.check_options("eval.extract_features", opts, {
    batch_size = true, transform = true, normalize = true, workers = true, features = true, label = true,
    cache = true,
  })
  if opts.features ~= nil and opts.features ~= "output" and opts.features ~= "pooled" then
    error("eval.extract_features: features must be 'output' or 'pooled', got " .. tostring(opts.features), 2)
  end
  if opts.cache then
    local n = getmetatable(source) ~= nil and source.next ~= nil and #source.dataset or #source
    local feats, labels = read_cache(opts.cache, n, opts)
    if feats then return feats, labels end
  end
  if (getmetatable(source) == nil or source.next == nil) and dist.active() then
    return extract_sharded(net, source, opts)
  end
  local feats, labels, n = run_network(net, source, opts)
  if opts.normalize ~= false then feats:normalize_() end
  if opts.cache then write_cache(opts.cache, feats, labels, n, opts) end
  return feats, labels
end

-- The raw pixels of every image as rows (N, C*H*W) in [0, 1] (ToTensor's scaling unless
-- `transform` says otherwise), with the labels: the baseline representation.
function eval.pixel_features(source, opts)
  opts = nn.check_options("eval.pixel_features", opts, { transform = true, batch_size = true, workers = true, label = true })
  local identity = { training = false, eval = function() end, train = function() end,
                     forward = function(_, images) return images end }
  return eval.extract_features(identity, source, {
    transform = opts.transform, batch_size = opts.batch_size, workers = opts.workers, normalize = false,
    label = opts.label or "pixels",
  })
end

-- Standardises the columns of x (and of each further set) with x's mean and standard
-- deviation (biased, floored at `eps` = 1e-3 so constant border pixels stay finite).
-- Returns new tensors.
function eval.standardize(x, ...)
  local mean = x:mean(1)
  local centered = x - mean
  local std = (centered * centered):mean(1):sqrt():clamp(1e-3)
  local out = { centered / std }
  for i = 1, select("#", ...) do out[i + 1] = (select(i, ...) - mean) / std end
  return table.unpack(out)
end

-- The k most similar rows of bank for each row of query (cosine similarity of
-- L2-normalised rows): index (M, k) of 1-based bank rows and sim (M, k), best first.
function eval.neighbours(query, bank, k)
  return moco._eval.neighbours(query, bank, k)
end

-- The encoder an evaluation recipe judges: the query encoder of a MoCo checkpoint
-- (moco.checkpoint.load_encoder), or for pretrained == "random" a freshly initialised
-- encoder -- the untrained baseline -- built from opts {arch, in_channels, cifar_stem,
-- dim, seed}.
function eval.load_encoder(pretrained, opts)
  opts = nn.check_options("eval.load_encoder", opts, { arch = true, in_channels = true, cifar_stem = true, dim = true, seed = true })
  if pretrained == nil or pretrained == "" then
    error("--pretrained is required: a MoCo checkpoint, or 'random' for an untrained encoder", 0)
  end
  if pretrained == "random" then
    local models = require "moco.models"
    return models.get(opts.arch or "resnet20", {
      num_classes = opts.dim or 128, in_channels = opts.in_channels, cifar_stem = opts.cifar_stem,
      generator = moco.Generator(opts.seed or 0, 0),
    })
  end
  local ok, checkpoint = pcall(require, "moco.checkpoint")
  if not ok then
    error("--pretrained " .. pretrained .. ": cannot load moco.checkpoint: " .. tostring(checkpoint):match("^[^\n]*"), 0)
  end
  return checkpoint.load_encoder(pretrained)
end

-- Top-1 and top-5 accuracy (percent) of class scores (M, C) against labels (M).
function eval.accuracy(scores, labels)
  local m = scores:size(1)
  local c1, c5 = moco._eval.topk_correct(scores, labels, { 1, math.min(5, scores:size(2)) })
  return 100 * c1 / math.max(m, 1), 100 * c5 / math.max(m, 1)
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
    transform = true, k = true, T = true, batch_size = true, workers = true, features = true, cache = true,
  })
  local common = { transform = opts.transform, batch_size = opts.batch_size, workers = opts.workers, features = opts.features }
  common.label = "kNN bank"
  common.cache = opts.cache and opts.cache .. ".bank.safetensors"
  local bank, bank_labels = eval.extract_features(net, memory_dataset, common)
  common.label = "kNN test"
  common.cache = opts.cache and opts.cache .. ".test.safetensors"
  local test, test_labels = eval.extract_features(net, test_dataset, common)
  local top1, top5, pred = eval.knn{
    train_features = bank, train_labels = bank_labels, test_features = test, test_labels = test_labels,
    k = opts.k or 200, T = opts.T or 0.1, classes = memory_dataset.classes and #memory_dataset.classes or nil,
  }
  -- the features too, for pictures (moco.plot.retrieval_grid) and further probes
  return top1, top5, pred, { bank = bank, bank_labels = bank_labels, test = test, test_labels = test_labels }
end

return eval
