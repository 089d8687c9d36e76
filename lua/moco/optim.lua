-- lua/moco/optim.lua: SGD with PyTorch's update rule, and learning-rate schedules.
--
--   opt = moco.optim.SGD(model, {lr=0.03, momentum=0.9, weight_decay=1e-4, dampening=0, nesterov=false})
--   opt = moco.optim.SGD(model:parameters(), {...})    -- PyTorch's spelling, the same thing
--   model:zero_grad(); ... backward ...; opt:step()
--   opt:set_lr(moco.optim.cosine_lr(base_lr, epoch, epochs))
--
-- The model's parameters are flattened into one block (model:flatten_parameters()), so a
-- step is a single pass in C over parameters, gradients and the momentum buffer.
local moco = require "moco"
local nn = require "moco.nn"

local optim = {}

local SGD = {}
SGD.__index = SGD
SGD.__name = "optim.SGD"
optim.SGD = SGD

setmetatable(SGD, { __call = function(cls, model, opts)
  opts = nn.check_options("optim.SGD", opts, { lr = true, momentum = true, dampening = true, weight_decay = true, nesterov = true })
  -- net:parameters() (a list that knows its module) means the module's parameters
  if type(model) == "table" and not model.flat_parameters and type(model._module) == "table" then model = model._module end
  if type(model) ~= "table" or not model.flat_parameters then
    error("optim.SGD: expected a moco.nn module or its :parameters() as the first argument, got "
          .. (type(model) == "table" and "a table of another kind" or type(model)), 2)
  end
  if opts.lr == nil then error("optim.SGD: lr is required", 2) end
  local self = setmetatable({}, cls)
  self.model = model
  self.params, self.grads = model:flat_parameters()
  self.config = {
    lr = opts.lr, momentum = opts.momentum or 0, dampening = opts.dampening or 0,
    weight_decay = opts.weight_decay or 0, nesterov = opts.nesterov or false,
  }
  self.initial_lr = opts.lr
  if self.config.momentum ~= 0 then self.momentum_buffer = moco.zeros{ self.params:numel() } end
  self.steps = 0
  -- validate now rather than at the first step
  moco._optim.sgd_step(moco.zeros{0}, self.config.momentum ~= 0 and moco.zeros{0} or nil, moco.zeros{0}, self.config, true)
  return self
end })

function SGD:step()
  local params, grads = self.model:flat_parameters()
  if params ~= self.params then
    error("optim.SGD: the model's parameters were re-flattened after the optimiser was made", 2)
  end
  -- PyTorch creates the momentum buffer from the first gradient (no dampening on step 1).
  moco._optim.sgd_step(params, self.momentum_buffer, grads, self.config, self.steps == 0)
  self.steps = self.steps + 1
end

function SGD:set_lr(lr) self.config.lr = lr end
function SGD:get_lr() return self.config.lr end

function SGD:state_dict()
  return { momentum_buffer = self.momentum_buffer, steps = self.steps, config = self.config }
end

function SGD:__tostring()
  local c = self.config
  return string.format("SGD(lr=%g, momentum=%g, dampening=%g, weight_decay=%g, nesterov=%s)",
                       c.lr, c.momentum, c.dampening, c.weight_decay, tostring(c.nesterov))
end

-- ------------------------------------------------------------------ schedules
-- Epochs are 0-based here, as in the official main_moco.py's adjust_learning_rate.

-- The official --cos schedule: lr * 0.5 * (1 + cos(pi * epoch / epochs)), per epoch.
function optim.cosine_lr(base_lr, epoch, epochs)
  return base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
end

-- The official step schedule: lr * 0.1 for each milestone reached (epoch >= milestone).
function optim.step_lr(base_lr, epoch, milestones, gamma)
  gamma = gamma or 0.1
  local lr = base_lr
  for _, m in ipairs(milestones) do if epoch >= m then lr = lr * gamma end end
  return lr
end

-- Linear warm-up (as MoCo v3's adjust_learning_rate): lr * progress / warmup while
-- progress < warmup, where progress is the fractional epoch (epoch + step / steps_per_epoch),
-- so it can be applied every step; lr unchanged afterwards.
function optim.warmup_lr(lr, progress, warmup)
  if warmup and warmup > 0 and progress < warmup then return lr * progress / warmup end
  return lr
end

return optim
