-- lua/moco/train.lua: the MoCo training loop (moco.train).
--
--   local history = moco.train.fit(model, loader, {
--     epochs = 200, lr = 0.03, cos = true | schedule = {120, 160}, warmup_epochs = 0,
--     start_epoch = 0, print_freq = 10,
--     monitor = function(epoch) return knn_top1 end, monitor_every = 1,
--     on_epoch_end = function(epoch, record) ... end,   -- the checkpoint hook
--     should_stop = function() return false end,
--     log = print,
--   })
--
-- Epochs are 0-based as in the official main_moco.py (`for epoch in range(start_epoch,
-- epochs)`); the learning rate is set at the start of each epoch by the official schedule
-- (cosine when cos, else x0.1 at each milestone), optionally after a linear warm-up applied
-- per step.  Each epoch's record holds loss, acc1, acc5 (means over the epoch), lr,
-- images/s, data-wait and compute seconds, and the monitor's value when it ran.
-- train.request_stop() (or should_stop) ends training between two steps.
local moco = require "moco"
local nn = require "moco.nn"
local optim = require "moco.optim"

local train = {}

local stop_requested = false
function train.request_stop() stop_requested = true end
function train.stop_requested() return stop_requested end

-- The learning rate of `epoch` (0-based) under the options' schedule.
function train.learning_rate(opts, epoch)
  if opts.cos then return optim.cosine_lr(opts.lr, epoch, opts.epochs) end
  return optim.step_lr(opts.lr, epoch, opts.schedule or {})
end

local function fmt_time(s)
  if s >= 3600 then return string.format("%dh%02dm", s // 3600, (s % 3600) // 60) end
  if s >= 60 then return string.format("%dm%02ds", s // 60, math.floor(s % 60)) end
  return string.format("%.1fs", s)
end

function train.fit(model, loader, opts)
  opts = nn.check_options("moco.train.fit", opts, {
    epochs = true, lr = true, cos = true, schedule = true, warmup_epochs = true, start_epoch = true,
    print_freq = true, monitor = true, monitor_every = true, on_epoch_end = true, should_stop = true,
    log = true, history = true,
  })
  local epochs = opts.epochs or error("moco.train.fit: epochs is required", 2)
  if opts.lr == nil then error("moco.train.fit: lr is required", 2) end
  local log = opts.log or print
  local print_freq = opts.print_freq or 10
  local history = opts.history or {}
  stop_requested = false
  local steps_per_epoch = #loader
  if steps_per_epoch == 0 then
    error("moco.train.fit: the loader yields no batch (dataset smaller than the batch size with drop_last?)", 2)
  end
  for epoch = opts.start_epoch or 0, epochs - 1 do
    local lr = train.learning_rate(opts, epoch)
    model:set_lr(lr)
    loader:set_epoch(epoch)
    loader:reset_stats()
    local sum_loss, sum_acc1, sum_acc5, count = 0, 0, 0, 0
    local compute_time = 0
    local t_epoch = moco.time()
    local i = 0
    for im_q, im_k in loader:iter() do
      if opts.warmup_epochs and opts.warmup_epochs > 0 then
        model:set_lr(optim.warmup_lr(lr, epoch + i / steps_per_epoch, opts.warmup_epochs))
      end
      local t0 = moco.time()
      local loss, acc1, acc5 = model:step(im_q, im_k)
      compute_time = compute_time + (moco.time() - t0)
      if loss ~= loss or loss == math.huge or loss == -math.huge then
        error(string.format("training diverged: the loss is %s at epoch %d, step %d (lower the learning rate?)",
                            tostring(loss), epoch, i + 1), 0)
      end
      i = i + 1
      local n = im_q:size(1)
      sum_loss, sum_acc1, sum_acc5, count = sum_loss + loss * n, sum_acc1 + acc1 * n, sum_acc5 + acc5 * n, count + n
      if print_freq > 0 and (i % print_freq == 0 or i == steps_per_epoch) then
        local elapsed = moco.time() - t_epoch
        log(string.format("Epoch: [%d][%d/%d]  loss %.4f (%.4f)  Acc@1 %.2f (%.2f)  Acc@5 %.2f (%.2f)  lr %.5f  %.0f img/s  data %.1fs compute %.1fs  eta %s",
                          epoch, i, steps_per_epoch, loss, sum_loss / count, acc1, sum_acc1 / count, acc5,
                          sum_acc5 / count, model.optimizer:get_lr(), count / elapsed,
                          loader:stats().wait_seconds, compute_time,
                          fmt_time(elapsed / i * (steps_per_epoch - i))))
      end
      if stop_requested or (opts.should_stop and opts.should_stop()) then break end
    end
    local elapsed = moco.time() - t_epoch
    local record = {
      epoch = epoch, loss = sum_loss / math.max(count, 1), acc1 = sum_acc1 / math.max(count, 1),
      acc5 = sum_acc5 / math.max(count, 1), lr = lr, images_per_s = count / elapsed,
      data_seconds = loader:stats().wait_seconds, compute_seconds = compute_time, seconds = elapsed,
      steps = i, complete = i == steps_per_epoch,
    }
    if opts.monitor and record.complete then
      local every = opts.monitor_every or 1
      if (epoch + 1) % every == 0 or epoch == epochs - 1 then
        record.knn = opts.monitor(epoch)
        log(string.format("Epoch %d: kNN accuracy %.2f%%", epoch, record.knn))
      end
    end
    history[#history + 1] = record
    log(string.format("Epoch %d done in %s: loss %.4f  Acc@1 %.2f  %.0f img/s  (data wait %.1fs, compute %.1fs)",
                      epoch, fmt_time(elapsed), record.loss, record.acc1, record.images_per_s,
                      record.data_seconds, record.compute_seconds))
    if opts.on_epoch_end then opts.on_epoch_end(epoch, record) end
    if stop_requested or (opts.should_stop and opts.should_stop()) then
      record.stopped = true
      break
    end
  end
  return history
end

return train
