-- lua/moco/train.lua: the MoCo training loop (moco.train).
--
--   local history = moco.train.fit(model, loader, {
--     epochs = 200, lr = 0.03, cos = true | schedule = {120, 160}, warmup_epochs = 0,
--     start_epoch = 0, print_freq = 10,
--     monitor = function(epoch) return knn_top1 end, monitor_every = 1,
--     on_epoch_end = function(epoch, record) ... end,   -- the checkpoint hook
--     should_stop = function() return false end,
--     start_step = 0, resume_sums = nil,                 -- resuming inside start_epoch
--     on_interrupt = function(signal, record) ... end,   -- after on_epoch_end saved the work
--     on_diverge = function(epoch, step, loss) ... end,  -- may raise a fuller error
--     log = print,
--   })
--
-- Epochs are 0-based as in the official main_moco.py (`for epoch in range(start_epoch,
-- epochs)`); the learning rate is set at the start of each epoch by the official schedule
-- (cosine when cos, else x0.1 at each milestone), optionally after a linear warm-up applied
-- per step.  Each epoch's record holds loss, acc1, acc5 (means over the epoch), lr,
-- images/s, data-wait and compute seconds, and the monitor's value when it ran.
-- train.request_stop() (or should_stop) ends training between two steps.
--
-- Interruption: under moco-lua, fit() defers Ctrl-C and SIGTERM (moco.defer_interrupts): the
-- signal ends the loop after the current step; the record of that epoch gets `interrupted`
-- ("SIGINT"/"SIGTERM"), on_epoch_end runs (and saves a checkpoint), then on_interrupt, and
-- moco.finish_interrupt() ends a script with status 130/143 (a REPL line returns to the
-- prompt).  A second signal quits at once.
--
-- Resuming inside an epoch: start_step = k skips the first k batches of start_epoch (the
-- loader still prepares them: data work only, so the model sees exactly the batches it
-- would have seen), and resume_sums = record.sums of the interrupted epoch keeps its means.
-- A record always carries sums = {loss=, acc1=, acc5=, count=} (sample-weighted sums).
--
-- A non-finite loss stops training with an error naming the epoch and step (after
-- on_diverge, which can raise a fuller one); nothing is saved after it, so the last
-- checkpoint stays the last good one.
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
    log = true, history = true, start_step = true, resume_sums = true, on_interrupt = true, on_diverge = true,
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
  local first_epoch = opts.start_epoch or 0
  local start_step = opts.start_step or 0
  if start_step < 0 or start_step >= steps_per_epoch then
    error(string.format("moco.train.fit: start_step %d is outside the %d steps of an epoch", start_step,
                        steps_per_epoch), 2)
  end
  -- Ctrl-C and SIGTERM end the loop between steps (see the header); restored on any exit.
  local defer = moco.defer_interrupts
  local deferred_before = defer and defer(true)
  local _ <close> = setmetatable({}, { __close = function() if defer then defer(deferred_before) end end })
  local pending = moco.interrupt_pending or function() return nil end
  for epoch = first_epoch, epochs - 1 do
    local lr = train.learning_rate(opts, epoch)
    model:set_lr(lr)
    loader:set_epoch(epoch)
    loader:reset_stats()
    local sum_loss, sum_acc1, sum_acc5, count = 0, 0, 0, 0
    local skip, resumed_count = 0, 0
    if epoch == first_epoch and start_step > 0 then
      skip = start_step
      local s = opts.resume_sums
      if s then sum_loss, sum_acc1, sum_acc5, count, resumed_count = s.loss, s.acc1, s.acc5, s.count, s.count end
    end
    local resumed_steps = skip
    local compute_time = 0
    local t_epoch = moco.time()
    local i = 0
    local interrupted
    for im_q, im_k, _, indices in loader:iter() do
      if skip > 0 then -- batches done before the checkpoint: drawn, not used
        skip = skip - 1
        i = i + 1
        goto next_batch
      end
      if opts.warmup_epochs and opts.warmup_epochs > 0 then
        model:set_lr(optim.warmup_lr(lr, epoch + i / steps_per_epoch, opts.warmup_epochs))
      end
      local t0 = moco.time()
      local loss, acc1, acc5 = model:step(im_q, im_k, indices) -- indices: the memory bank's rows
      compute_time = compute_time + (moco.time() - t0)
      if loss ~= loss or loss == math.huge or loss == -math.huge then
        if opts.on_diverge then opts.on_diverge(epoch, i + 1, loss) end
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
                          sum_acc5 / count, model.optimizer:get_lr(), (count - resumed_count) / elapsed,
                          loader:stats().wait_seconds, compute_time,
                          fmt_time(elapsed / (i - resumed_steps) * (steps_per_epoch - i))))
      end
      interrupted = pending()
      if interrupted or stop_requested or (opts.should_stop and opts.should_stop()) then break end
      ::next_batch::
    end
    local elapsed = moco.time() - t_epoch
    local record = {
      epoch = epoch, loss = sum_loss / math.max(count, 1), acc1 = sum_acc1 / math.max(count, 1),
      acc5 = sum_acc5 / math.max(count, 1), lr = lr, images_per_s = (count - resumed_count) / elapsed,
      data_seconds = loader:stats().wait_seconds, compute_seconds = compute_time, seconds = elapsed,
      steps = i, complete = i == steps_per_epoch, interrupted = interrupted,
      sums = { loss = sum_loss, acc1 = sum_acc1, acc5 = sum_acc5, count = count },
    }
    if opts.monitor and record.complete and not interrupted then
      local every = opts.monitor_every or 1
      if (epoch + 1) % every == 0 or epoch == epochs - 1 then
        record.knn = opts.monitor(epoch)
        log(string.format("Epoch %d: kNN accuracy %.2f%%", epoch, record.knn))
      end
    end
    history[#history + 1] = record
    log(string.format("Epoch %d %s in %s: loss %.4f  Acc@1 %.2f  %.0f img/s  (data wait %.1fs, compute %.1fs)",
                      epoch, record.complete and "done" or string.format("stopped after step %d/%d", i, steps_per_epoch),
                      fmt_time(elapsed), record.loss, record.acc1, record.images_per_s,
                      record.data_seconds, record.compute_seconds))
    if opts.on_epoch_end then opts.on_epoch_end(epoch, record) end
    -- A signal may also come during the monitor or the checkpoint: the work is saved, stop.
    interrupted = interrupted or pending()
    if interrupted then
      record.interrupted, record.stopped = interrupted, true
      if opts.on_interrupt then opts.on_interrupt(interrupted, record) end
      if moco.finish_interrupt then moco.finish_interrupt() end
      break
    end
    if stop_requested or (opts.should_stop and opts.should_stop()) then
      record.stopped = true
      break
    end
  end
  return history
end

return train
