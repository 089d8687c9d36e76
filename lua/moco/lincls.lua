-- lua/moco/lincls.lua: the linear classification protocol of the official main_lincls.py
-- (moco.lincls): a linear classifier trained on the features of a frozen backbone.
--
--   local lincls = moco.lincls
--   result = lincls.run{backbone=, train_dataset=, test_dataset=, train_transform=,
--                       test_transform=, precomputed=true, classes=, workers=2, seed=0,
--                       lr=30, momentum=0.9, weight_decay=0, epochs=100, schedule={60, 80},
--                       batch_size=256, print_freq=10 (augmented mode), log=print}
-- or the pieces:
--   lincls.prepare(backbone, classes [, generator])  freeze it, fc := Linear(feature_dim, classes)
--   snap = lincls.snapshot(backbone)                 the frozen state (every key but fc.*)
--   result = lincls.fit_precomputed{linear=, train_features=, train_labels=, test_features=,
--                                   test_labels=, seed=, <hyper-parameters>}
--   result = lincls.fit_augmented{backbone=, train_dataset=, train_transform=, workers=,
--                                 test_features=, test_labels=, seed=, <hyper-parameters>}
--   lincls.sanity_check(backbone, snap)              error unless nothing but fc changed
--   top1, top5, loss = lincls.evaluate(linear, features, labels)
-- result = {top1=, top5=, loss=, best_top1=, best_epoch=, history={...}, seconds=, mode=};
-- accuracies are percentages, as the official code prints them.  history records hold
-- epoch, lr, loss, acc1, acc5 (training), test_top1, test_top5, test_loss, seconds.
--
-- The protocol, as main_lincls.py: the backbone is frozen in eval mode (batch norm uses
-- its running statistics and never updates them; no parameter gradient is computed, since
-- only the new fc needs one); fc is replaced by Linear(feature_dim, classes) with weight
-- N(0, 0.01) and zero bias; SGD with lr 30, momentum 0.9, weight decay 0, batch 256, 100
-- epochs, lr x0.1 at epochs 60 and 80; top-1/top-5 on the test set after every epoch;
-- finally the sanity check that every backbone tensor (weights and BN buffers) is
-- bit-for-bit what it was.
--
-- Two modes:
--  * augmented (main_lincls.py exactly): every epoch runs the frozen backbone on freshly
--    augmented training images (the recipe's RandomResizedCrop + flip).  The test features
--    are computed once, because the backbone is frozen and the test transform deterministic:
--    the same numbers as validating every epoch, without the repeated forward passes.
--  * precomputed: training features are extracted once (eval mode, test transform, no
--    augmentation) and the classifier trains on them; shuffled mini-batches per epoch from
--    moco.Generator(seed, epoch).  Much faster on a CPU: the backbone runs once instead of
--    once per epoch; it usually scores a little lower than the augmented protocol.
local moco = require "moco"
local nn = require "moco.nn"
local optim = require "moco.optim"
local data = require "moco.data"
local eval = require "moco.eval"
local progress = require "moco.progress"
local util = require "moco.util"
local models = require "moco.models"
local dist = require "moco.dist"

local lincls = {}

lincls.defaults = { lr = 30, momentum = 0.9, weight_decay = 0, epochs = 100, schedule = { 60, 80 }, batch_size = 256 }

local hyper_options = {
  lr = true, momentum = true, weight_decay = true, epochs = true, schedule = true, batch_size = true,
  start_epoch = true, seed = true, print_freq = true, log = true, resume = true, on_epoch_end = true,
}

local function with(known, extra)
  local t = {}
  for k in pairs(known) do t[k] = true end
  for k in pairs(extra) do t[k] = true end
  return t
end

local function value(opts, key)
  if opts[key] == nil then return lincls.defaults[key] end
  return opts[key]
end

-- Linear(in_features, classes) initialised as main_lincls.py: weight N(0, 0.01), bias 0.
function lincls.linear_layer(in_features, classes, generator)
  local linear = nn.Linear(in_features, classes)
  nn.init.normal_(linear.weight, 0, 0.01, generator)
  linear.bias:zero()
  return linear
end

-- Freezes the backbone (eval mode, requires_grad(false)) and replaces its fc (the MoCo
-- projection head, or the classifier) with a fresh linear layer.  Returns the layer.
function lincls.prepare(backbone, classes, generator)
  if type(backbone) ~= "table" or not backbone.features or not backbone.feature_dim then
    error("lincls.prepare: expected a moco.models ResNet (with features() and feature_dim)", 2)
  end
  if math.type(classes) ~= "integer" or classes < 1 then
    error("lincls.prepare: classes must be a positive integer, got " .. tostring(classes), 2)
  end
  backbone:eval()
  backbone:requires_grad(false)
  local linear = lincls.linear_layer(backbone.feature_dim, classes, generator)
  if backbone.fc ~= nil then
    backbone.fc = linear
  else
    backbone:add_module("fc", linear)
  end
  return linear
end

local function is_fc(name) return name == "fc" or name:sub(1, 3) == "fc." end

-- Copies of every backbone tensor except fc's.
function lincls.snapshot(backbone)
  local snap = {}
  for name, t in pairs(backbone:state_dict()) do
    if not is_fc(name) then snap[name] = t:clone() end
  end
  return snap
end

-- The official sanity check: every tensor but fc.* must be exactly as in the snapshot.
function lincls.sanity_check(backbone, snap)
  local now = backbone:state_dict()
  local changed = {}
  for name, before in pairs(snap) do
    local t = now[name]
    if t == nil then
      changed[#changed + 1] = name .. " (missing)"
    elseif t:numel() > 0 then
      local d = t - before
      d:mul_(d)
      if not (d:max() == 0) then changed[#changed + 1] = name end -- NaN counts as a change
    end
  end
  for name in pairs(now) do
    if not is_fc(name) and snap[name] == nil then changed[#changed + 1] = name .. " (new)" end
  end
  table.sort(changed)
  if #changed > 0 then
    error("=> sanity check failed: the frozen backbone changed: " .. table.concat(changed, ", "), 2)
  end
  return true
end

-- Top-1, top-5 (percent) and mean cross-entropy of the linear layer on features (M, D),
-- in chunks of 1024 rows.
function lincls.evaluate(linear, features, labels)
  local m = features:size(1)
  local c1, c5, loss_sum = 0, 0, 0
  local k5 = math.min(5, linear.out_features)
  for start = 1, m, 1024 do
    local n = math.min(1024, m - start + 1)
    local y = labels:narrow(1, start, n)
    local logits = moco._nn.linear_forward(features:narrow(1, start, n), linear.weight, linear.bias)
    local a, b = moco._eval.topk_correct(logits, y, { 1, k5 })
    c1, c5 = c1 + a, c5 + b
    loss_sum = loss_sum + moco._nn.cross_entropy(logits, y, false) * n
  end
  return 100 * c1 / math.max(m, 1), 100 * c5 / math.max(m, 1), loss_sum / math.max(m, 1)
end

-- The training loop both modes share.  batches(epoch, step) calls step(x, y) for each
-- mini-batch of features x (B, D) and labels y (B).
local function fit(linear, batches, steps_per_epoch, opts, mode, sharded)
  local log = opts.log
  if log == nil then log = print end
  if log == false then log = function() end end
  local epochs, base_lr, schedule = value(opts, "epochs"), value(opts, "lr"), value(opts, "schedule")
  local print_freq = opts.print_freq or 0
  if opts.test_features == nil or opts.test_labels == nil then error("lincls: test_features and test_labels are required", 3) end
  local sgd = optim.SGD(linear, {
    lr = base_lr, momentum = value(opts, "momentum"), weight_decay = value(opts, "weight_decay"),
  })
  local k5 = math.min(5, linear.out_features)
  local result = { history = {}, mode = mode, best_top1 = -1 }
  local start_epoch = opts.start_epoch or 0
  local resume = opts.resume
  if resume then -- a classifier checkpoint (lincls.load_checkpoint): its optimizer and records
    if resume.momentum_buffer and sgd.momentum_buffer then sgd.momentum_buffer:copy(resume.momentum_buffer) end
    sgd.steps = resume.steps or 0
    for i, r in ipairs(resume.history or {}) do result.history[i] = r end
    result.best_top1, result.best_epoch = resume.best_top1 or -1, resume.best_epoch
    start_epoch = resume.epoch
  end
  local t_start = moco.time()
  local total_epochs = epochs - start_epoch
  for epoch = start_epoch, epochs - 1 do
    -- main_lincls.py's adjust_learning_rate: x0.1 at each milestone reached
    local lr = optim.step_lr(base_lr, epoch, schedule)
    sgd:set_lr(lr)
    local t0 = moco.time()
    local sum_loss, c1, c5, count, step_index = 0, 0, 0, 0, 0
    -- a bar for the slow (augmented) epochs; a precomputed epoch takes a fraction of a second
    local bar = mode == "augmented" and progress.bar_enabled() and progress.Bar("epoch " .. epoch, steps_per_epoch,
                                                                                 { unit = "batch" }) or nil
    batches(epoch, function(x, y)
      local logits = linear:forward(x)
      local a, b = moco._eval.topk_correct(logits, y, { 1, k5 })
      -- the gradient overwrites the logits (linear.output, a reused buffer)
      local loss, grad = moco._nn.cross_entropy(logits, y, logits)
      if not util.is_finite(loss) then
        error(string.format("lincls: the loss is %s at epoch %d (lower --lr?)", tostring(loss), epoch), 0)
      end
      linear:zero_grad()
      linear:backward_params(x, grad) -- no input gradient: the backbone is frozen
      -- augmented mode over MPI ranks: each rank has its share of the batch; averaged
      -- gradients make the step of the whole batch (DistributedDataParallel's all-reduce)
      if sharded then
        dist.all_reduce_mean_(linear.grad_weight)
        if linear.grad_bias then dist.all_reduce_mean_(linear.grad_bias) end
      end
      sgd:step()
      local n = x:size(1)
      sum_loss, c1, c5, count = sum_loss + loss * n, c1 + a, c5 + b, count + n
      step_index = step_index + 1
      if bar then bar:update(step_index, string.format("loss %.4f", sum_loss / count)) end
      if print_freq > 0 and (step_index % print_freq == 0 or step_index == steps_per_epoch) then
        log(string.format("Epoch: [%d][%d/%d]  Loss %.4f (%.4f)  Acc@1 %.2f  Acc@5 %.2f  lr %g", epoch, step_index,
                          steps_per_epoch, loss, sum_loss / count, 100 * c1 / count, 100 * c5 / count, lr))
      end
    end)
    if bar then progress.clear() end
    if sharded then -- the epoch's numbers over every rank's share
      local t = dist.all_reduce_sum_(moco.tensor{ sum_loss, c1, c5, count })
      sum_loss, c1, c5, count = t:get(1), t:get(2), t:get(3), t:get(4)
    end
    local top1, top5, test_loss = lincls.evaluate(linear, opts.test_features, opts.test_labels)
    local record = {
      epoch = epoch, lr = lr, loss = sum_loss / math.max(count, 1), acc1 = 100 * c1 / math.max(count, 1),
      acc5 = 100 * c5 / math.max(count, 1), test_top1 = top1, test_top5 = top5, test_loss = test_loss,
      seconds = moco.time() - t0,
    }
    result.history[#result.history + 1] = record
    local is_best = top1 > result.best_top1
    if is_best then result.best_top1, result.best_epoch = top1, epoch end
    result.top1, result.top5, result.loss = top1, top5, test_loss
    local done = epoch - start_epoch + 1
    local left = (moco.time() - t_start) / done * (total_epochs - done)
    log(string.format("Epoch %d (%s): lr %g  loss %.4f  train Acc@1 %.2f  |  * Acc@1 %.3f Acc@5 %.3f  (best %.3f)  %.1fs  eta %s",
                      epoch, mode, lr, record.loss, record.acc1, top1, top5, result.best_top1, record.seconds,
                      progress.duration(left)))
    if opts.on_epoch_end then opts.on_epoch_end(record, result, sgd, is_best) end
  end
  result.seconds = moco.time() - t_start
  return result
end

-- ------------------------------------------------------------------ classifier checkpoints
--
-- main_lincls.py saves the whole network (the frozen backbone and the trained fc) with the
-- optimizer and the best accuracy after every epoch; so does this, as safetensors:
--   <torchvision name>            every tensor of the network (fc.weight, fc.bias: the classifier)
--   optimizer.momentum_buffer     SGD's buffer over fc's parameters (absent with momentum 0)
-- metadata: format, arch, model (JSON: arch, in_channels, cifar_stem, width, classes), epoch
-- (the next to run), steps (optimizer), best_top1, best_epoch, history (JSON), config (JSON:
-- the recipe's options without paths), run_id, created_by.  The network is rebuilt from
-- `model` only after its sizes were checked against the file's own tensors, so metadata
-- cannot make the loader build (and allocate) a network the file does not hold.

lincls.FORMAT = "moco-lua lincls checkpoint 1"

local STEM_CHANNELS = models.STEM_CHANNELS

-- info: epoch (next), steps, best_top1, best_epoch, history, model, config, run_id.
function lincls.save_checkpoint(path, backbone, sgd, info)
  local checkpoint = require "moco.checkpoint"
  local tensors, dtypes = {}, {}
  for name, t in pairs(backbone:state_dict()) do
    tensors[name] = t
    if name:match("num_batches_tracked$") then dtypes[name] = "I64" end
  end
  if sgd and sgd.momentum_buffer then tensors["optimizer.momentum_buffer"] = sgd.momentum_buffer end
  local healthy, why = checkpoint.check_values(tensors)
  if not healthy then error(string.format("%s: not saved: %s (the classifier diverged: lower --lr)", path, why), 2) end
  local meta = {
    format = lincls.FORMAT, created_by = "moco-lua " .. tostring(moco.version), arch = info.model and info.model.arch,
    model = moco.json_encode(info.model or {}), epoch = tostring(info.epoch or 0), steps = tostring(info.steps or 0),
    history = moco.json_encode(checkpoint.plain_records(info.history)),
  }
  if info.best_top1 then meta.best_top1 = string.format("%.17g", info.best_top1) end
  if info.best_epoch then meta.best_epoch = tostring(info.best_epoch) end
  if info.config then meta.config = moco.json_encode(info.config) end
  if info.run_id then meta.run_id = info.run_id end
  moco.save(path, tensors, meta, { dtypes = dtypes })
  return path
end

local function field(path, meta, key, kind)
  local text = meta[key]
  if text == nil then return nil end
  local v = tonumber(text)
  if v == nil or (kind == "integer" and (math.tointeger(v) == nil or v < 0)) then
    error(string.format("%s: metadata '%s' = '%s' is not a %s", path, key, text, kind == "integer" and "count" or "number"), 3)
  end
  return kind == "integer" and math.tointeger(v) or v
end

-- Reads a classifier checkpoint: {path=, backbone= (a moco.models ResNet with the trained
-- fc), momentum_buffer=, steps=, epoch=, best_top1=, best_epoch=, history=, config=,
-- run_id=, model=}.
function lincls.load_checkpoint(path)
  local checkpoint = require "moco.checkpoint"
  local tensors, meta = moco.load(path)
  if meta.format ~= lincls.FORMAT then
    error(string.format("%s: not a linear-classifier checkpoint of moco-lua (metadata 'format' is %s); a MoCo "
                        .. "checkpoint goes to --pretrained", path, meta.format and ("'" .. meta.format .. "'") or "absent"), 2)
  end
  local function decode(key)
    local ok, v = pcall(moco.json_decode, meta[key] or "null")
    if not ok then error(string.format("%s: metadata '%s' is not valid JSON", path, key), 3) end
    return v
  end
  local o = decode("model")
  if type(o) ~= "table" or STEM_CHANNELS[o.arch] == nil or math.type(o.classes) ~= "integer"
     or math.type(o.in_channels) ~= "integer" or type(o.width) ~= "number" or type(o.cifar_stem) ~= "boolean" then
    error(path .. ": metadata 'model' does not describe a known network (arch, in_channels, cifar_stem, width, classes)", 2)
  end
  -- the sizes the metadata claims must be those of the file's tensors before anything is built
  local fc, conv = tensors["fc.weight"], tensors["conv1.weight"]
  local stem = math.max(1, math.floor(STEM_CHANNELS[o.arch] * o.width + 0.5))
  if not (fc and conv and fc:dim() == 2 and conv:dim() == 4 and fc:size(1) == o.classes and conv:size(2) == o.in_channels
          and conv:size(1) == stem) then
    error(string.format("%s: its tensors do not match its metadata 'model' (%s, %d classes, %d channels, width %g)", path,
                        o.arch, o.classes, o.in_channels, o.width), 2)
  end
  if o.stem_stride ~= nil and o.stem_stride ~= 1 and o.stem_stride ~= 2 then
    error(string.format("%s: metadata 'model' has stem_stride %s (1 or 2)", path, tostring(o.stem_stride)), 2)
  end
  local net = models.get(o.arch, { num_classes = o.classes, in_channels = o.in_channels, cifar_stem = o.cifar_stem,
                                   width = o.width, stem_stride = o.stem_stride })
  local sd = {}
  for name in pairs(net:state_dict()) do
    if tensors[name] == nil then error(string.format("%s: missing tensor '%s' for a %s classifier", path, name, o.arch), 2) end
    sd[name] = tensors[name]
  end
  local ok, err = pcall(net.load_state_dict, net, sd)
  if not ok then error(path .. ": " .. tostring(err), 2) end
  local healthy, why = checkpoint.check_values(tensors)
  if not healthy then error(string.format("%s: %s", path, why), 2) end
  local history = decode("history")
  net:eval()
  return {
    path = path, backbone = net, momentum_buffer = tensors["optimizer.momentum_buffer"], model = o,
    steps = field(path, meta, "steps", "integer") or 0, epoch = field(path, meta, "epoch", "integer") or 0,
    best_top1 = field(path, meta, "best_top1"), best_epoch = field(path, meta, "best_epoch", "integer"),
    history = type(history) == "table" and history or {}, config = decode("config"), run_id = meta.run_id,
  }
end

-- Trains `linear` on precomputed training features (N, D) with labels (N).
function lincls.fit_precomputed(opts)
  opts = util.check_options("lincls.fit_precomputed", opts, with(hyper_options, {
    linear = true, train_features = true, train_labels = true, test_features = true, test_labels = true,
  }))
  local x, y, linear = opts.train_features, opts.train_labels, opts.linear
  if not (x and y and linear) then error("lincls.fit_precomputed: linear, train_features and train_labels are required", 2) end
  if x:dim() ~= 2 or y:dim() ~= 1 or y:size(1) ~= x:size(1) then
    error("lincls.fit_precomputed: train_features must be (N, D) and train_labels (N)", 2)
  end
  local n, batch_size, seed = x:size(1), value(opts, "batch_size"), opts.seed or 0
  local xbuf, ybuf = moco.zeros{ batch_size, x:size(2) }, moco.zeros{ batch_size }
  local function batches(epoch, step)
    -- a fresh, reproducible order per epoch (a resumed run sees the same batches)
    local perm = moco.Generator(seed, epoch):permutation(n)
    for first = 1, n, batch_size do
      local b = math.min(batch_size, n - first + 1)
      local full = b == batch_size
      step(moco._eval.gather_rows(x, perm, first, b, full and xbuf or nil),
           moco._eval.gather_rows(y, perm, first, b, full and ybuf or nil))
    end
  end
  return fit(linear, batches, (n + batch_size - 1) // batch_size, opts, "precomputed")
end

-- Trains backbone.fc on features of augmented training images, computed every epoch by
-- the frozen backbone (main_lincls.py's protocol).
function lincls.fit_augmented(opts)
  opts = util.check_options("lincls.fit_augmented", opts, with(hyper_options, {
    backbone = true, train_dataset = true, train_transform = true, workers = true,
    test_features = true, test_labels = true,
  }))
  local backbone = opts.backbone
  if not (backbone and backbone.fc and opts.train_dataset) then
    error("lincls.fit_augmented: backbone (prepared by lincls.prepare) and train_dataset are required", 2)
  end
  -- over MPI ranks, batch_size is the global batch: each rank takes its share from its
  -- shard of the data (DistributedSampler), and fit averages the gradients
  local size = dist.size()
  local batch_size = value(opts, "batch_size")
  if size > 1 and batch_size % size ~= 0 then
    error(string.format("lincls: the batch of %d does not divide evenly over %d ranks (give a multiple of %d)", batch_size,
                        size, size), 0)
  end
  local loader <close> = data.Loader(opts.train_dataset, {
    batch_size = batch_size // size, transform = opts.train_transform, workers = opts.workers or 2,
    shuffle = true, drop_last = false, seed = opts.seed or 0,
    shard = size > 1 and { rank = dist.rank(), count = size } or nil,
  })
  local function batches(epoch, step)
    backbone:eval() -- as main_lincls.py's train(): BN stays on its running statistics
    loader:set_epoch(epoch)
    for images, labels in loader:iter() do step(backbone:features(images), labels) end
  end
  return fit(backbone.fc, batches, #loader, opts, "augmented", size > 1)
end

-- The whole protocol.  Prints which mode ran; returns the result (with result.mode).
-- Over MPI ranks (moco.dist): the features are extracted on shards and gathered, so in
-- precomputed mode every rank trains the same classifier on all of them; in augmented mode
-- each rank runs the backbone on its shard and the gradients are averaged.
function lincls.run(opts)
  opts = util.check_options("lincls.run", opts, with(hyper_options, {
    backbone = true, train_dataset = true, test_dataset = true, train_transform = true,
    test_transform = true, precomputed = true, classes = true, workers = true,
  }))
  local log = opts.log
  if log == nil then log = print end
  if log == false then log = function() end end
  local backbone, train_ds, test_ds = opts.backbone, opts.train_dataset, opts.test_dataset
  local classes = opts.classes or (train_ds.classes and #train_ds.classes)
  if not classes then error("lincls.run: classes is required (the dataset has no class list)", 2) end
  local precomputed = opts.precomputed ~= false
  local linear
  if opts.resume then -- the backbone came from a classifier checkpoint: keep its trained fc
    linear = backbone.fc
    if not (linear and linear.out_features == classes and linear.in_features == backbone.feature_dim) then
      error(string.format("lincls.run: resume needs the backbone's fc to be Linear(%d, %d)", backbone.feature_dim, classes), 2)
    end
    backbone:eval()
    backbone:requires_grad(false)
    linear:requires_grad(true)
  else
    linear = lincls.prepare(backbone, classes, moco.Generator(opts.seed or 0, 0))
  end
  local snap = lincls.snapshot(backbone)
  local common = { transform = opts.test_transform, workers = opts.workers, features = "pooled", normalize = false }
  local t0 = moco.time()
  common.label = "test features"
  local test_x, test_y = eval.extract_features(backbone, test_ds, common)
  local hyper = {}
  for k in pairs(hyper_options) do hyper[k] = opts[k] end
  hyper.log = log
  hyper.test_features, hyper.test_labels = test_x, test_y
  local result
  if precomputed then
    log(string.format("lincls: mode precomputed: %d training features extracted once (eval mode, test transform, no augmentation)", #train_ds))
    common.label = "train features"
    local train_x, train_y = eval.extract_features(backbone, train_ds, common)
    hyper.linear, hyper.train_features, hyper.train_labels = linear, train_x, train_y
    hyper.print_freq = nil -- an epoch takes a fraction of a second: one line per epoch is enough
    result = lincls.fit_precomputed(hyper)
  else
    log(string.format("lincls: mode augmented: the frozen backbone runs on augmented training images every epoch (%s)",
                      tostring(opts.train_transform)))
    hyper.backbone, hyper.train_dataset, hyper.train_transform, hyper.workers = backbone, train_ds, opts.train_transform, opts.workers
    result = lincls.fit_augmented(hyper)
  end
  result.seconds = moco.time() - t0
  lincls.sanity_check(backbone, snap)
  log("=> sanity check passed.")
  return result
end

return lincls
