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

local lincls = {}

lincls.defaults = { lr = 30, momentum = 0.9, weight_decay = 0, epochs = 100, schedule = { 60, 80 }, batch_size = 256 }

local hyper_options = {
  lr = true, momentum = true, weight_decay = true, epochs = true, schedule = true, batch_size = true,
  start_epoch = true, seed = true, print_freq = true, log = true,
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
local function fit(linear, batches, steps_per_epoch, opts, mode)
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
  local t_start = moco.time()
  for epoch = opts.start_epoch or 0, epochs - 1 do
    -- main_lincls.py's adjust_learning_rate: x0.1 at each milestone reached
    local lr = optim.step_lr(base_lr, epoch, schedule)
    sgd:set_lr(lr)
    local t0 = moco.time()
    local sum_loss, c1, c5, count, step_index = 0, 0, 0, 0, 0
    batches(epoch, function(x, y)
      local logits = linear:forward(x)
      local a, b = moco._eval.topk_correct(logits, y, { 1, k5 })
      -- the gradient overwrites the logits (linear.output, a reused buffer)
      local loss, grad = moco._nn.cross_entropy(logits, y, logits)
      if loss ~= loss or loss == math.huge then
        error(string.format("lincls: the loss is %s at epoch %d (lower --lr?)", tostring(loss), epoch), 0)
      end
      linear:zero_grad()
      linear:backward_params(x, grad) -- no input gradient: the backbone is frozen
      sgd:step()
      local n = x:size(1)
      sum_loss, c1, c5, count = sum_loss + loss * n, c1 + a, c5 + b, count + n
      step_index = step_index + 1
      if print_freq > 0 and (step_index % print_freq == 0 or step_index == steps_per_epoch) then
        log(string.format("Epoch: [%d][%d/%d]  Loss %.4f (%.4f)  Acc@1 %.2f  Acc@5 %.2f  lr %g", epoch, step_index,
                          steps_per_epoch, loss, sum_loss / count, 100 * c1 / count, 100 * c5 / count, lr))
      end
    end)
    local top1, top5, test_loss = lincls.evaluate(linear, opts.test_features, opts.test_labels)
    local record = {
      epoch = epoch, lr = lr, loss = sum_loss / math.max(count, 1), acc1 = 100 * c1 / math.max(count, 1),
      acc5 = 100 * c5 / math.max(count, 1), test_top1 = top1, test_top5 = top5, test_loss = test_loss,
      seconds = moco.time() - t0,
    }
    result.history[#result.history + 1] = record
    if top1 > result.best_top1 then result.best_top1, result.best_epoch = top1, epoch end
    result.top1, result.top5, result.loss = top1, top5, test_loss
    log(string.format("Epoch %d (%s): lr %g  loss %.4f  train Acc@1 %.2f  |  * Acc@1 %.3f Acc@5 %.3f  (best %.3f)  %.1fs",
                      epoch, mode, lr, record.loss, record.acc1, top1, top5, result.best_top1, record.seconds))
  end
  result.seconds = moco.time() - t_start
  return result
end

-- Trains `linear` on precomputed training features (N, D) with labels (N).
function lincls.fit_precomputed(opts)
  opts = nn.check_options("lincls.fit_precomputed", opts, with(hyper_options, {
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
  opts = nn.check_options("lincls.fit_augmented", opts, with(hyper_options, {
    backbone = true, train_dataset = true, train_transform = true, workers = true,
    test_features = true, test_labels = true,
  }))
  local backbone = opts.backbone
  if not (backbone and backbone.fc and opts.train_dataset) then
    error("lincls.fit_augmented: backbone (prepared by lincls.prepare) and train_dataset are required", 2)
  end
  local loader <close> = data.Loader(opts.train_dataset, {
    batch_size = value(opts, "batch_size"), transform = opts.train_transform, workers = opts.workers or 2,
    shuffle = true, drop_last = false, seed = opts.seed or 0,
  })
  local function batches(epoch, step)
    backbone:eval() -- as main_lincls.py's train(): BN stays on its running statistics
    loader:set_epoch(epoch)
    for images, labels in loader:iter() do step(backbone:features(images), labels) end
  end
  return fit(backbone.fc, batches, #loader, opts, "augmented")
end

-- The whole protocol.  Prints which mode ran; returns the result (with result.mode).
function lincls.run(opts)
  opts = nn.check_options("lincls.run", opts, with(hyper_options, {
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
  local linear = lincls.prepare(backbone, classes, moco.Generator(opts.seed or 0, 0))
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
