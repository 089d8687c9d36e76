-- lua/moco/train.lua: the MoCo training loop (moco.train).
--
--   trainer = moco.train.Trainer(model, loader, {
--     lr = <the model's>, epochs = N, cos = true | schedule = {120, 160}, warmup_epochs = 0,
--     print_freq = 10, monitor = function(epoch) return knn_top1 end, monitor_every = 1,
--     on_step = function(info) end,                      -- every print_freq steps (log.jsonl)
--     on_epoch_end = function(epoch, record) end,        -- the checkpoint hook
--     on_interrupt = function(signal, record) end,       -- after on_epoch_end saved the work
--     on_diverge = function(epoch, step, loss) end,      -- may raise a fuller error
--     should_stop = function() return false end, log = progress.print,
--     start_epoch = 0, start_step = 0, resume_sums = nil, history = {},   -- resuming
--   })
--   trainer:run{steps = 50}      -- 50 more steps, across epoch boundaries
--   trainer:run{epochs = 1}      -- to the end of the next epoch (the current one, when inside it)
--   trainer:run()                -- until `epochs`
--   trainer.history, trainer.epoch, trainer.step    -- every call continues where the last stopped
--   history = moco.train.fit(model, loader, {epochs = 200, ..., max_steps = nil})
--
-- fit(model, loader, opts) is Trainer(model, loader, opts):run{steps = opts.max_steps}: the
-- official script's loop `for epoch in range(start_epoch, epochs)`.  The learning rate is
-- given once: by default the one the model was made with (moco.MoCo{lr = ...}).  Epochs are
-- 0-based as in the official main_moco.py; the rate is set at the start of each epoch by the
-- official schedule (cosine when cos, else x0.1 at each milestone), optionally after a
-- linear warm-up applied per step.
--
-- history holds one record per epoch begun: epoch, loss, acc1, acc5 (means so far), lr,
-- images_per_s, data_seconds, compute_seconds, seconds (of training, not of time spent at a
-- REPL prompt between two runs), steps (done), complete, knn (when the monitor ran),
-- stopped / interrupted, and sums = {loss=, acc1=, acc5=, count=} (sample-weighted sums, so
-- a stopped epoch can be resumed with the right means).  A record enters the history when
-- its epoch begins and is updated in place, so a run stopped inside an epoch keeps it.
--
-- Output: without a `log` function, a live progress bar on a terminal (epoch, step, loss,
-- acc@1, images/s, the epoch's and the whole run's time left) and the official periodic
-- lines "Epoch: [e][i/n] ..." when stdout is not a terminal (moco.progress; --quiet turns
-- both off).  With `log`, the periodic lines go to it.  Each epoch ends with one line.
--
-- Stopping: train.request_stop() (or should_stop) ends training between two steps.  Under
-- moco-lua, Ctrl-C and SIGTERM are deferred (moco.defer_interrupts): the signal ends the loop
-- after the current step; the record gets `interrupted` ("SIGINT"/"SIGTERM"), on_epoch_end
-- runs (and saves a checkpoint), then on_interrupt, then moco.finish_interrupt() ends a
-- script with status 130/143; at the REPL the line stops with "interrupted!" and the
-- trainer keeps its state (trainer.history has the record; trainer:run() continues; after
-- fit, moco.train.last is its trainer).  A second signal quits at once.
--
-- Resuming inside an epoch: start_step = k skips the first k batches of start_epoch (the
-- loader still prepares them: data work only, so the model sees exactly the batches it would
-- have seen), and resume_sums = record.sums of the interrupted epoch keeps its means.
--
-- A non-finite loss stops training with an error naming the epoch and step (after
-- on_diverge, which can raise a fuller one); nothing is saved after it.
local moco = require "moco"
local nn = require "moco.nn"
local optim = require "moco.optim"
local progress = require "moco.progress"
local dist = require "moco.dist"
local util = require "moco.util"

local train = {}

local stop_requested = false
function train.request_stop() stop_requested = true end
function train.stop_requested() return stop_requested end

-- The learning rate of `epoch` (0-based) under the options' schedule.
function train.learning_rate(opts, epoch)
  if opts.cos then return optim.cosine_lr(opts.lr, epoch, opts.epochs) end
  return optim.step_lr(opts.lr, epoch, opts.schedule or {})
end

local trainer_options = {
  epochs = true, lr = true, cos = true, cos_per_step = true, schedule = true, warmup_epochs = true, start_epoch = true,
  print_freq = true, monitor = true, monitor_every = true, on_epoch_end = true, should_stop = true,
  log = true, history = true, start_step = true, resume_sums = true, on_interrupt = true, on_diverge = true,
  on_step = true,
}

local Trainer = {}
Trainer.__index = Trainer
Trainer.__name = "moco.train.Trainer"
train.Trainer = Trainer

local function positive_integer(fn, name, v, allow_zero)
  if v ~= nil and (math.type(v) ~= "integer" or v < (allow_zero and 0 or 1)) then
    error(string.format("%s: %s must be a%s integer, got %s", fn, name, allow_zero and " non-negative" or " positive",
                        tostring(v)), 3)
  end
end

local function new_trainer(model, loader, opts, fn)
  opts = nn.check_options(fn, opts, trainer_options)
  if type(model) ~= "table" or type(model.step) ~= "function" or not model.optimizer then
    error(fn .. ": expected a moco.MoCo model as the first argument, got " .. type(model), 3)
  end
  if loader == nil or select(2, pcall(function() return loader.next end)) == nil then
    error(fn .. ": expected a moco.data.Loader as the second argument, got " .. type(loader), 3)
  end
  positive_integer(fn, "epochs", opts.epochs)
  positive_integer(fn, "start_epoch", opts.start_epoch, true)
  positive_integer(fn, "start_step", opts.start_step, true)
  positive_integer(fn, "print_freq", opts.print_freq, true)
  if opts.cos and not opts.epochs then error(fn .. ": the cosine schedule (cos = true) needs epochs", 3) end
  local steps_per_epoch = #loader
  if steps_per_epoch == 0 then
    error(fn .. ": the loader yields no batch (dataset smaller than the batch size with drop_last?)", 3)
  end
  local start_step = opts.start_step or 0
  if start_step >= steps_per_epoch then
    error(string.format("%s: start_step %d is outside the %d steps of an epoch", fn, start_step, steps_per_epoch), 3)
  end
  local self = setmetatable({}, Trainer)
  self.model, self.loader = model, loader
  self.lr = opts.lr or model.optimizer.initial_lr
  if type(self.lr) ~= "number" or not (self.lr >= 0) then error(fn .. ": lr must be a non-negative number", 3) end
  self.epochs, self.cos, self.schedule, self.warmup_epochs = opts.epochs, opts.cos, opts.schedule or {}, opts.warmup_epochs
  -- cos_per_step: the cosine at the fractional epoch epoch + step / steps_per_epoch, as MoCo
  -- v3's main_moco.py adjusts it every iteration (the per-epoch form holds one lr per epoch,
  -- a coarse staircase over a run of a few epochs)
  self.cos_per_step = opts.cos_per_step
  if self.cos_per_step and not (self.cos and self.epochs) then
    error(fn .. ": cos_per_step refines the cosine schedule: it needs cos = true and epochs", 3)
  end
  self.print_freq = opts.print_freq or 10
  self.hooks = opts
  self.custom_log = opts.log ~= nil
  self.log = opts.log or progress.print
  self.history = opts.history or {}
  self.epoch = opts.start_epoch or 0
  self.step = 0
  self.steps_per_epoch = steps_per_epoch
  self.skip = start_step               -- batches of self.epoch done before a resume
  self.resume_sums = opts.resume_sums
  return self
end

setmetatable(Trainer, { __call = function(_, model, loader, opts) return new_trainer(model, loader, opts, "moco.train.Trainer") end })

function Trainer:__tostring()
  local last = self.history[#self.history]
  return string.format("moco.train.Trainer: epoch %d, step %d/%d%s, lr %g%s, %d record(s)%s", self.epoch, self.step,
                       self.steps_per_epoch, self.epochs and string.format(" (of %d epochs)", self.epochs) or "", self.lr,
                       self.cos and " cosine" or "", #self.history,
                       last and last.loss and string.format(", last loss %.4f", last.loss) or "")
end

-- Starts epoch self.epoch: its learning rate, the loader's order, a new record.
function Trainer:begin_epoch()
  local epoch = self.epoch
  local lr = train.learning_rate(self, epoch)
  self.model:set_lr(lr)
  self.loader:set_epoch(epoch)
  self.loader:reset_stats()
  local record = {
    epoch = epoch, lr = lr, loss = 0, acc1 = 0, acc5 = 0, steps = 0, complete = false, images_per_s = 0,
    data_seconds = 0, compute_seconds = 0, seconds = 0, sums = { loss = 0, acc1 = 0, acc5 = 0, count = 0 },
  }
  self.resumed_count = 0
  if self.skip > 0 then
    local s = self.resume_sums
    if s then
      record.sums = { loss = s.loss, acc1 = s.acc1, acc5 = s.acc5, count = s.count }
      self.resumed_count = s.count
    end
  end
  self.record = record
  self.history[#self.history + 1] = record
  return record
end


-- The tensors of a batch from loader:next(), freed when the step's scope ends (as
-- loader:iter() does), so that the loader reuses their buffers.
local BATCH_CLOSER = { __close = function(t)
  for i = 1, 4 do if t[i] then t[i]:free() end end
end }
local function batch_closer(a, b, c, d) return setmetatable({ a, b, c, d }, BATCH_CLOSER) end

-- Over MPI ranks, whether to stop is decided together after every step (one tiny
-- collective): mpirun forwards a signal to every rank, but each notices it after its own
-- step, and a rank that stopped alone would leave the others waiting in the next one.
-- Returns the signal's name (or nil) and whether any rank asked to stop.
local SIGNALS = { "SIGINT", "SIGTERM" }
local function agree_stop(interrupted, stop)
  local code = 0
  if interrupted then code = interrupted == "SIGTERM" and 3 or 2 elseif stop then code = 1 end
  code = dist.max_of(code)
  return code >= 2 and SIGNALS[code - 1] or nil, code >= 1
end

-- Updates the record's means and rates from its sums.
function Trainer:update_record(record)
  local s = record.sums
  local c = math.max(s.count, 1)
  record.loss, record.acc1, record.acc5 = s.loss / c, s.acc1 / c, s.acc5 / c
  record.steps = self.step
  record.data_seconds = self.data_seconds_before + self.loader:stats().wait_seconds
  record.images_per_s = (s.count - self.resumed_count) / math.max(record.seconds, 1e-9)
end

-- Seconds of training left: the rest of this epoch, and of the run (to `epochs`, or to
-- this call's limit), from the rate of this call's steps (monitor and checkpoint time
-- included, since they are part of the wall time).
function Trainer:eta(run)
  local rate = run.steps_done / math.max(moco.time() - run.start, 1e-9)
  local epoch_left = (self.steps_per_epoch - self.step) / rate
  local total = run.total_steps and (run.total_steps - run.steps_done) / rate or nil
  return epoch_left, total
end

function Trainer:show_step(run, loss, acc1, acc5)
  local r, i, n = self.record, self.step, self.steps_per_epoch
  local epoch_left, total_left = self:eta(run)
  local periodic = self.print_freq > 0 and (i % self.print_freq == 0 or i == n)
  if periodic and (self.custom_log or run.lines) then
    self.log(string.format("Epoch: [%d][%d/%d]  loss %.4f (%.4f)  Acc@1 %.2f (%.2f)  Acc@5 %.2f (%.2f)  lr %.5f  "
                           .. "%.0f img/s  data %.1fs compute %.1fs  eta %s%s", r.epoch, i, n, loss, r.loss, acc1, r.acc1,
                           acc5, r.acc5, self.model.optimizer:get_lr(), r.images_per_s, r.data_seconds,
                           r.compute_seconds, progress.duration(epoch_left),
                           total_left and string.format(" (run %s)", progress.duration(total_left)) or ""))
  end
  if run.bar and moco.time() - run.last_draw >= 0.1 then
    run.last_draw = moco.time()
    progress.draw(string.format("ep %d%s %s %d/%d loss %.4f @1 %.1f %.0f img/s eta %s%s", r.epoch,
                                self.epochs and ("/" .. self.epochs) or "", progress.gauge(i / n, 12), i, n, r.loss, r.acc1,
                                r.images_per_s, progress.duration(epoch_left),
                                total_left and (" run " .. progress.duration(total_left)) or ""))
  end
  if periodic and self.hooks.on_step then
    self.hooks.on_step{
      epoch = r.epoch, step = i, steps = n, loss = loss, loss_avg = r.loss, acc1 = acc1, acc1_avg = r.acc1,
      acc5 = acc5, acc5_avg = r.acc5, lr = self.model.optimizer:get_lr(), images_per_s = r.images_per_s,
      data_seconds = r.data_seconds, compute_seconds = r.compute_seconds, eta_epoch = epoch_left,
      eta_total = total_left, global_step = self.model.steps,
    }
  end
end

-- One call's limits -> the epoch to stop before (or nil) and the step budget (or nil).
local function limits_of(self, limits)
  limits = nn.check_options("trainer:run", limits, { steps = true, epochs = true })
  positive_integer("trainer:run", "steps", limits.steps)
  positive_integer("trainer:run", "epochs", limits.epochs)
  local stop_epoch = self.epochs
  if limits.epochs then stop_epoch = math.min(stop_epoch or math.huge, self.epoch + limits.epochs) end
  if not limits.steps and not stop_epoch then
    error("trainer:run: give {steps = N} or {epochs = N}, or epochs = N when making the trainer", 3)
  end
  return stop_epoch, limits.steps
end

-- The pieces of Trainer:run, in the order one pass of its loop calls them.  `run` is the
-- call's bookkeeping: start time, steps done, step budget, how progress is shown.

-- Begins the current epoch (or continues a stopped one) and draws, without using them,
-- the batches a resume skips.  Returns the epoch's record.
function Trainer:enter_epoch()
  local record = self.record
  if record == nil then
    record = self:begin_epoch()
    self.data_seconds_before = 0
    -- batches done before a resume: drawn, not used
    while self.skip > 0 do
      local _ <close> = batch_closer(self.loader:next())
      self.skip, self.step = self.skip - 1, self.step + 1
    end
  else
    self.data_seconds_before = record.data_seconds
    self.loader:reset_stats()
  end
  return record
end

-- Steps through the rest of the epoch, or until the budget, a signal or a stop request.
-- Returns the signal's name (or nil) and whether the loop was asked to stop.
function Trainer:run_steps(run, record, max_steps, pending)
  local model, loader, hooks, n = self.model, self.loader, self.hooks, self.steps_per_epoch
  local lr = record.lr
  local segment_start = moco.time()
  local seconds_before = record.seconds
  local interrupted, stopped
  while self.step < n do
    if max_steps and run.steps_done >= max_steps then break end
    if self.cos_per_step then
      lr = optim.cosine_lr(self.lr, self.epoch + self.step / n, self.epochs)
      model:set_lr(lr)
    end
    if self.warmup_epochs and self.warmup_epochs > 0 then
      model:set_lr(optim.warmup_lr(lr, self.epoch + self.step / n, self.warmup_epochs))
    end
    local im_q, im_k, labels, indices = loader:next()
    local _ <close> = batch_closer(im_q, im_k, labels, indices)
    if im_q == nil then error(string.format("moco.train: the loader ended epoch %d after %d of its %d batches",
                                            self.epoch, self.step, n), 0) end
    local t0 = moco.time()
    local loss, acc1, acc5 = model:step(im_q, im_k, indices) -- indices: the memory bank's rows
    record.compute_seconds = record.compute_seconds + (moco.time() - t0)
    if not util.is_finite(loss) then
      if hooks.on_diverge then hooks.on_diverge(self.epoch, self.step + 1, loss) end
      error(string.format("training diverged: the loss is %s at epoch %d, step %d (lower the learning rate?)",
                          tostring(loss), self.epoch, self.step + 1), 0)
    end
    self.step = self.step + 1
    run.steps_done = run.steps_done + 1
    local bsz = im_q:size(1) * dist.size() -- the global batch (the loss is already the mean over the ranks)
    local s = record.sums
    s.loss, s.acc1, s.acc5, s.count = s.loss + loss * bsz, s.acc1 + acc1 * bsz, s.acc5 + acc5 * bsz, s.count + bsz
    record.seconds = seconds_before + (moco.time() - segment_start)
    self:update_record(record)
    self:show_step(run, loss, acc1, acc5)
    interrupted = pending()
    local stop = interrupted or stop_requested or (hooks.should_stop and hooks.should_stop())
    if dist.active() then interrupted, stop = agree_stop(interrupted, stop) end
    if stop then
      stopped = true
      break
    end
  end
  record.seconds = seconds_before + (moco.time() - segment_start)
  self:update_record(record)
  if run.bar then progress.clear() end
  return interrupted, stopped
end

-- After a segment of steps: a finished epoch gets its monitor value; a finished or
-- stopped one its line and on_epoch_end (the checkpoint); a finished one moves the
-- trainer to the next epoch.
function Trainer:end_segment(record, interrupted, stopped)
  local hooks, n = self.hooks, self.steps_per_epoch
  if self.step == n then
    record.complete = true
    if hooks.monitor and not interrupted then
      local every = hooks.monitor_every or 1
      if (self.epoch + 1) % every == 0 or (self.epochs and self.epoch == self.epochs - 1) then
        record.knn = hooks.monitor(self.epoch)
        self.log(string.format("Epoch %d: kNN accuracy %.2f%%", self.epoch, record.knn))
      end
    end
  end
  if record.complete or stopped then
    self.log(string.format("Epoch %d %s in %s: loss %.4f  Acc@1 %.2f  %.0f img/s  (data wait %.1fs, compute %.1fs)",
                           record.epoch, record.complete and "done"
                             or string.format("stopped after step %d/%d", self.step, n),
                           progress.duration(record.seconds), record.loss, record.acc1, record.images_per_s,
                           record.data_seconds, record.compute_seconds))
    if hooks.on_epoch_end then hooks.on_epoch_end(record.epoch, record) end
  end
  if record.complete then
    self.epoch, self.step, self.record = self.epoch + 1, 0, nil
  end
end

-- A signal ended the segment (the work is saved): on_interrupt, then the end of a script
-- (status 130/143) or of the REPL line; the trainer keeps its state for trainer:run().
function Trainer:finish_interrupt(interrupted, record)
  record.interrupted, record.stopped = interrupted, true
  if self.hooks.on_interrupt then
    self.hooks.on_interrupt(interrupted, record)
  else
    local name = self.via_fit and "moco.train.last" or "the trainer"
    self.log(string.format("%s: training stopped at epoch %d after step %d/%d; %s keeps its state "
                           .. "(%s.history has the record, %s:run() continues)", interrupted, record.epoch,
                           record.steps, self.steps_per_epoch, name, self.via_fit and name or "trainer",
                           self.via_fit and name or "trainer"))
  end
  -- over ranks, no rank exits before rank 0 has saved and said how to resume (mpirun
  -- ends the job when the first rank exits)
  if dist.active() then dist.barrier() end
  if moco.finish_interrupt then moco.finish_interrupt() end
  -- over ranks, a rank the signal has not reached yet stops with the others
  if dist.active() and self.hooks.on_interrupt then
    dist.fail_together(string.format("%s: stopped with the other ranks", interrupted))
  end
end

-- Runs the loop; returns self.history.  limits: {steps = N} and/or {epochs = N}.
function Trainer:run(limits)
  local stop_epoch, max_steps = limits_of(self, limits)
  local hooks = self.hooks
  self.model:train()
  stop_requested = false
  local n = self.steps_per_epoch
  local run = { start = moco.time(), steps_done = 0, last_draw = -1,
                bar = not self.custom_log and progress.bar_enabled(), lines = not self.custom_log and progress.lines_enabled() }
  if stop_epoch then run.total_steps = (stop_epoch - self.epoch) * n - self.step - self.skip end
  if max_steps then run.total_steps = math.min(run.total_steps or math.huge, max_steps) end
  -- Ctrl-C and SIGTERM end the loop between steps (see the header); restored on any exit.
  local defer = moco.defer_interrupts
  local deferred_before = defer and defer(true)
  local _ <close> = setmetatable({}, { __close = function()
    if defer then defer(deferred_before) end
    if run.bar then progress.clear() end
  end })
  local pending = moco.interrupt_pending or function() return nil end
  local stopped
  while stop_epoch == nil or self.epoch < stop_epoch do
    if max_steps and run.steps_done >= max_steps then break end
    local record = self:enter_epoch()
    local interrupted
    interrupted, stopped = self:run_steps(run, record, max_steps, pending)
    self:end_segment(record, interrupted, stopped)
    -- A signal may also come during the monitor or the checkpoint: the work is saved, stop.
    interrupted = interrupted or pending()
    if dist.active() then interrupted = agree_stop(interrupted, false) end
    if interrupted then
      self:finish_interrupt(interrupted, record)
      break
    end
    local stop = stopped or stop_requested or (hooks.should_stop and hooks.should_stop())
    if dist.active() then stop = select(2, agree_stop(nil, stop)) end
    if stop then
      record.stopped = true
      stopped = true
      break
    end
  end
  local r = self.record
  if r and max_steps and run.steps_done >= max_steps and not stopped then
    self.log(string.format("Epoch %d: step %d/%d  loss %.4f  Acc@1 %.2f  Acc@5 %.2f  %.0f img/s  (%d steps in %s; "
                           .. "trainer:run continues from here)", r.epoch, self.step, n, r.loss, r.acc1, r.acc5,
                           r.images_per_s, run.steps_done, progress.duration(moco.time() - run.start)))
  end
  return self.history
end

-- The official loop: Trainer(model, loader, opts):run{steps = opts.max_steps}.
function train.fit(model, loader, opts)
  opts = opts or {}
  local max_steps = opts.max_steps
  local trainer_opts = {}
  for k, v in pairs(opts) do if k ~= "max_steps" then trainer_opts[k] = v end end
  if trainer_opts.epochs == nil and max_steps == nil then error("moco.train.fit: epochs (or max_steps) is required", 2) end
  local trainer = new_trainer(model, loader, trainer_opts, "moco.train.fit")
  trainer.via_fit = true
  train.last = trainer
  return trainer:run{ steps = max_steps }
end

return train
