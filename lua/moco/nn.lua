-- lua/moco/nn.lua: neural-network modules composed from the C layers in moco._nn.
--
-- Torch7's module protocol with PyTorch's names:
--   y = m:forward(x)                  caches what backward needs (m.output, statistics)
--   gx = m:backward(x, gy)            = m:backward_params(x, gy) (accumulates into
--                                      m.grad_weight ...) then m:backward_input(x, gy)
--   m:parameters(), m:named_parameters(), m:state_dict(), m:load_state_dict(sd)
--   m:zero_grad(), m:train(), m:eval(), m:num_parameters(), m:requires_grad(false)
-- Parameter names follow torchvision (conv1.weight, layer1.0.bn1.running_mean, fc.weight),
-- with Sequential children named "0", "1", ... as in PyTorch.
--
-- Buffers are reused between calls (as Torch7 did): m.output and m.grad_input are
-- overwritten by the next forward/backward of the same module.  Clone what you keep.
local moco = require "moco"
local C = moco._nn

local nn = {}

-- ------------------------------------------------------------------ classes

-- A class is a table of methods; calling it constructs an instance via __init.
local function class(name, parent)
  local cls = {}
  cls.__index = cls
  cls.__name = "nn." .. name
  cls.__tostring = function(self) return self:repr() end
  cls._class_name = name
  setmetatable(cls, {
    __index = parent,
    __call = function(c, ...)
      local obj = setmetatable({}, c)
      obj:__init(...)
      return obj
    end,
  })
  return cls
end
nn.class = class

local function same_shape(t, shape)
  if not t then return false end
  local s = t:shape()
  if #s ~= #shape then return false end
  for i = 1, #s do if s[i] ~= shape[i] then return false end end
  return true
end

-- The tensor in self[field] if it already has `shape`, else nil (the C call allocates).
local function reuse(self, field, shape)
  local t = self[field]
  if same_shape(t, shape) then return t end
  return nil
end

local function shape_str(shape) return "[" .. table.concat(shape, ", ") .. "]" end

-- One option checker for every module (moco.util); nn.check_options is its public name.
local check_options = require("moco.util").check_options
nn.check_options = check_options

local function opt(opts, key, default)
  local v = opts[key]
  if v == nil then return default end
  return v
end

-- ------------------------------------------------------------------ Module

local Module = class("Module")
nn.Module = Module

function Module:__init()
  self.training = true
  self._params = {}    -- ordered parameter names (fields of self; gradients in grad_<name>)
  self._buffers = {}   -- ordered buffer names
  self._children = {}  -- ordered child names
  self._grad_enabled = true
end

function Module:register_parameter(name, t)
  self[name] = t
  self["grad_" .. name] = moco.zeros(t:shape())
  self._params[#self._params + 1] = name
  return t
end

function Module:register_buffer(name, t)
  self[name] = t
  self._buffers[#self._buffers + 1] = name
  return t
end

function Module:add_module(name, m)
  name = tostring(name)
  self[name] = m
  self._children[#self._children + 1] = name
  return m
end

function Module:children()
  local list = {}
  for i, name in ipairs(self._children) do list[i] = self[name] end
  return list
end

-- Calls fn(module, prefix) for this module and every descendant, parents first.
function Module:apply(fn, prefix)
  prefix = prefix or ""
  fn(self, prefix)
  for _, name in ipairs(self._children) do
    local child = self[name]
    if child then child:apply(fn, prefix .. name .. ".") end
  end
  return self
end

-- List of {name=, param=, grad=, module=, key=} in registration order.
function Module:named_parameters()
  local list = {}
  self:apply(function(m, prefix)
    for _, key in ipairs(m._params) do
      list[#list + 1] = { name = prefix .. key, param = m[key], grad = m["grad_" .. key], module = m, key = key }
    end
  end)
  return list
end

-- The parameter tensors and their gradients, in registration order.  Both lists remember
-- their module (field _module), so that optim.SGD(net:parameters(), ...) works as in PyTorch.
function Module:parameters()
  local params, grads = { _module = self }, { _module = self }
  for i, p in ipairs(self:named_parameters()) do params[i], grads[i] = p.param, p.grad end
  return params, grads
end

function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:named_parameters()) do n = n + p.param:numel() end
  return n
end

-- name -> tensor for every parameter and buffer (torchvision's state_dict keys).
function Module:state_dict()
  local sd = {}
  self:apply(function(m, prefix)
    for _, key in ipairs(m._params) do sd[prefix .. key] = m[key] end
    for _, key in ipairs(m._buffers) do sd[prefix .. key] = m[key] end
  end)
  return sd
end

-- Sorted keys of state_dict(), for printing and saving in a stable order.
function Module:state_dict_keys()
  local keys = {}
  for k in pairs(self:state_dict()) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- Copies values in; shapes must match.  strict (default true): missing or unexpected keys
-- are an error.  Returns the lists of missing and unexpected keys.
function Module:load_state_dict(sd, strict)
  if strict == nil then strict = true end
  local own = self:state_dict()
  local missing, unexpected = {}, {}
  for name, t in pairs(own) do
    local src = sd[name]
    if src == nil then
      missing[#missing + 1] = name
    else
      if not same_shape(src, t:shape()) then
        error(string.format("load_state_dict: %s has shape %s in the model but %s in the state dict",
                            name, shape_str(t:shape()), shape_str(src:shape())), 2)
      end
    end
  end
  for name in pairs(sd) do
    if own[name] == nil then unexpected[#unexpected + 1] = name end
  end
  table.sort(missing)
  table.sort(unexpected)
  if strict and (#missing > 0 or #unexpected > 0) then
    error(string.format("load_state_dict: missing keys: {%s}; unexpected keys: {%s}",
                        table.concat(missing, ", "), table.concat(unexpected, ", ")), 2)
  end
  for name, t in pairs(own) do
    if sd[name] ~= nil then t:copy(sd[name]) end
  end
  return missing, unexpected
end

function Module:zero_grad()
  if self._flat_grads then
    self._flat_grads:zero()
  else
    for _, p in ipairs(self:named_parameters()) do p.grad:zero() end
  end
  return self
end

function Module:train(mode)
  if mode == nil then mode = true end
  self:apply(function(m) m.training = mode end)
  return self
end

function Module:eval() return self:train(false) end

-- requires_grad(false): backward skips parameter gradients (frozen backbone, momentum encoder).
function Module:requires_grad(flag)
  if flag == nil then flag = true end
  self:apply(function(m) m._grad_enabled = flag end)
  return self
end

-- Moves every parameter and gradient into one contiguous block each (views into them), so
-- an optimiser step, the momentum update and checkpointing are single passes.  Returns the
-- flat parameter and gradient tensors.  Call again after adding modules.
function Module:flatten_parameters()
  local list = self:named_parameters()
  local total = 0
  for _, p in ipairs(list) do total = total + p.param:numel() end
  local flat, flat_grad = moco.zeros{total}, moco.zeros{total}
  local offset = 1
  for _, p in ipairs(list) do
    local n, shape = p.param:numel(), p.param:shape()
    local view = flat:narrow(1, offset, n):reshape(shape)
    local gview = flat_grad:narrow(1, offset, n):reshape(shape)
    view:copy(p.param)
    gview:copy(p.grad)
    p.module[p.key] = view
    p.module["grad_" .. p.key] = gview
    offset = offset + n
  end
  self._flat_params, self._flat_grads = flat, flat_grad
  return flat, flat_grad
end

function Module:flat_parameters()
  if not self._flat_params then self:flatten_parameters() end
  return self._flat_params, self._flat_grads
end

function Module:backward(x, grad_output)
  if self._grad_enabled then self:backward_params(x, grad_output) end
  return self:backward_input(x, grad_output)
end

function Module:backward_params() end

function Module:extra_repr() return "" end

function Module:repr(indent)
  indent = indent or ""
  local head = self._class_name .. "(" .. self:extra_repr()
  if #self._children == 0 then return head .. ")" end
  local lines = { head }
  for _, name in ipairs(self._children) do
    local child = self[name]
    lines[#lines + 1] = indent .. "  (" .. name .. "): " .. child:repr(indent .. "  ")
  end
  lines[#lines + 1] = indent .. ")"
  return table.concat(lines, "\n")
end

-- ------------------------------------------------------------------ Arena

-- nn.Arena(): named scratch tensors shared by the modules of one network, so that buffers
-- whose lives do not overlap share memory (ggml's arena, by name instead of by offset).
-- arena:get(slot, shape) returns a tensor of that shape over the storage of `slot`, grown
-- when too small; its contents are whatever the slot last held.  Whoever picks the slots
-- must know which values are still live (the ResNet blocks do: see models.lua).
local Arena = {}
Arena.__index = Arena
Arena.__name = "nn.Arena"
nn.Arena = setmetatable(Arena, { __call = function(cls) return setmetatable({ _store = {}, _views = {} }, cls) end })

function Arena:get(slot, shape)
  local key = slot .. "|" .. table.concat(shape, ",")
  local v = self._views[key]
  if v then return v end
  local n = 1
  for i = 1, #shape do n = n * shape[i] end
  local st = self._store[slot]
  if not st or st:numel() < n then
    st = moco.empty{ n }
    self._store[slot] = st
    for k in pairs(self._views) do -- views of the old storage are handed out no more
      if k:sub(1, #slot + 1) == slot .. "|" then self._views[k] = nil end
    end
  end
  v = st:narrow(1, 1, n):reshape(shape)
  self._views[key] = v
  return v
end

-- Grows each named slot to at least n floats now, so that the first pass through a network
-- does not grow them layer by layer (each outgrown storage would be garbage until collected).
function Arena:reserve(slots, n)
  for _, slot in ipairs(slots) do
    local st = self._store[slot]
    if not st or st:numel() < n then
      self._store[slot] = moco.empty{ n }
      for k in pairs(self._views) do
        if k:sub(1, #slot + 1) == slot .. "|" then self._views[k] = nil end
      end
    end
  end
end

-- Bytes held.
function Arena:bytes()
  local b = 0
  for _, st in pairs(self._store) do b = b + 4 * st:numel() end
  return b
end

function Arena:__tostring() return string.format("nn.Arena (%.1f MB)", self:bytes() / 1e6) end

-- ------------------------------------------------------------------ initialisation

-- PyTorch's default for Conv2d/Linear (kaiming_uniform_ with a = sqrt(5)): U(-b, b) with
-- b = 1/sqrt(fan_in), and the same bound for the bias.
local function uniform_(t, bound, gen)
  local u = moco.rand(t:shape(), gen)
  t:copy(u:mul_(2 * bound):sub_(bound))
  return t
end
nn.init = {}
function nn.init.uniform_(t, a, b, gen)
  local u = moco.rand(t:shape(), gen)
  t:copy(u:mul_(b - a):add_(a))
  return t
end
function nn.init.normal_(t, mean, std, gen)
  t:copy(moco.randn(t:shape(), gen):mul_(std):add_(mean))
  return t
end
-- kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / fan_out) with
-- fan_out = out_channels * kernel area, as torchvision's ResNet initialises convolutions.
function nn.init.kaiming_normal_fan_out_(t, gen)
  local s = t:shape()
  local fan_out = s[1]
  for i = 3, #s do fan_out = fan_out * s[i] end
  return nn.init.normal_(t, 0, math.sqrt(2 / fan_out), gen)
end

-- ------------------------------------------------------------------ Conv2d

local Conv2d = class("Conv2d", Module)
nn.Conv2d = Conv2d

function Conv2d:__init(in_channels, out_channels, kernel_size, opts)
  Module.__init(self)
  opts = check_options("nn.Conv2d", opts, { stride = true, padding = true, bias = true, generator = true })
  self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
  self.stride, self.padding = opt(opts, "stride", 1), opt(opts, "padding", 0)
  local fan_in = in_channels * kernel_size * kernel_size
  local bound = 1 / math.sqrt(fan_in)
  self:register_parameter("weight", uniform_(moco.zeros{out_channels, in_channels, kernel_size, kernel_size}, bound, opts.generator))
  if opt(opts, "bias", true) then
    self:register_parameter("bias", uniform_(moco.zeros{out_channels}, bound, opts.generator))
  end
end

function Conv2d:output_shape(x)
  local s = x:shape()
  local k, st, p = self.kernel_size, self.stride, self.padding
  return { s[1], self.out_channels, (s[3] + 2 * p - k) // st + 1, (s[4] + 2 * p - k) // st + 1 }
end

-- out / into (optional): the tensor to write the output / input gradient to, instead of
-- the module's own buffer (the ResNet blocks pass buffers of their nn.Arena).
function Conv2d:forward(x, out)
  self.output = C.conv2d_forward(x, self.weight, self.bias, self.stride, self.padding,
                                 out or reuse(self, "output", self:output_shape(x)))
  return self.output
end

function Conv2d:backward_input(x, gy, into)
  self.grad_input = C.conv2d_backward_input(gy, self.weight, x, self.stride, self.padding,
                                            into or reuse(self, "grad_input", x:shape()))
  return self.grad_input
end

function Conv2d:backward(x, gy, into)
  if self._grad_enabled then self:backward_params(x, gy) end
  return self:backward_input(x, gy, into)
end

function Conv2d:backward_params(x, gy)
  C.conv2d_backward_params(gy, x, self.grad_weight, self.grad_bias, self.stride, self.padding)
end

function Conv2d:extra_repr()
  local s = string.format("%d, %d, kernel_size=(%d, %d), stride=(%d, %d)", self.in_channels,
                          self.out_channels, self.kernel_size, self.kernel_size, self.stride, self.stride)
  if self.padding ~= 0 then s = s .. string.format(", padding=(%d, %d)", self.padding, self.padding) end
  if not self.bias then s = s .. ", bias=False" end
  return s
end

-- ------------------------------------------------------------------ BatchNorm

local BatchNorm = class("BatchNorm", Module)

function BatchNorm:__init(num_features, opts, name)
  Module.__init(self)
  opts = check_options(name, opts, { eps = true, momentum = true, affine = true, track_running_stats = true, splits = true })
  self.num_features = num_features
  self.eps, self.momentum = opt(opts, "eps", 1e-5), opt(opts, "momentum", 0.1)
  self.splits = opt(opts, "splits", 1)
  self.affine = opt(opts, "affine", true)
  self.track_running_stats = opt(opts, "track_running_stats", true)
  if self.affine then
    self:register_parameter("weight", moco.ones{num_features})
    self:register_parameter("bias", moco.zeros{num_features})
  end
  if self.track_running_stats then
    self:register_buffer("running_mean", moco.zeros{num_features})
    self:register_buffer("running_var", moco.ones{num_features})
    -- An int64 counter in PyTorch; kept as a 0-d float tensor (exact to 2^24 steps).
    self:register_buffer("num_batches_tracked", moco.tensor(0))
  end
end

-- out (optional): where to write the output (x itself: in place).  relu: a ReLU follows,
-- fused into this pass (the ResNet blocks' bn1; the backward then takes the gradient
-- through it, its mask being this output, which must stay untouched until then).
local function batchnorm_forward(self, x, out, relu, residual)
  local use_batch_stats = self.training or not self.track_running_stats
  if self.training and self.track_running_stats then
    self.num_batches_tracked:add_(1)
  end
  self._batch_stats = use_batch_stats
  self._relu = relu
  self.output, self.save_mean, self.save_invstd = C.batchnorm_forward(
    x, self.weight, self.bias, self.running_mean, self.running_var, use_batch_stats,
    self.momentum, self.eps, use_batch_stats and self.splits or 1, out or reuse(self, "output", x:shape()),
    relu, residual)
  return self.output
end

function BatchNorm:forward(x, out, relu) return batchnorm_forward(self, x, out, relu and true or false) end

-- out = max(0, bn(x) + residual): a ResNet block's join (the residual add and its ReLU)
-- fused into this pass, bit for bit the separate join.  The backward then takes gy as the
-- gradient of bn(x) itself: the block takes the gradient through the join, which the
-- shortcut needs as well.  out (optional) may be x or residual.
function BatchNorm:forward_add_relu(x, residual, out) return batchnorm_forward(self, x, out, false, residual) end

-- The last forward's output again, into out (default: that forward's output tensor), from
-- its input x and the statistics it saved: bit for bit the same values.  Lets a network
-- drop a fused BN + ReLU output after its use and recompute it for the backward.
function BatchNorm:recompute(x, out)
  self.output = C.batchnorm_forward_saved(x, self.save_mean, self.save_invstd, self.weight, self.bias,
                                          out or self.output, self._relu)
  return self.output
end

-- into (optional): where to write the input gradient (gy itself: in place).
function BatchNorm:backward_input(x, gy, into)
  self.grad_input = C.batchnorm_backward_input(gy, x, self.save_mean, self.save_invstd, self.weight,
                                               self._batch_stats, into or reuse(self, "grad_input", x:shape()),
                                               self._relu and self.output or nil)
  return self.grad_input
end

-- Both gradients in one pass over the data (train mode computes the parameter gradients'
-- sums for the input gradient anyway).
function BatchNorm:backward(x, gy, into)
  if not (self._grad_enabled and self.affine) then return self:backward_input(x, gy, into) end
  self.grad_input = C.batchnorm_backward(gy, x, self.save_mean, self.save_invstd, self.weight,
                                         self._batch_stats, self.grad_weight, self.grad_bias,
                                         into or reuse(self, "grad_input", x:shape()),
                                         self._relu and self.output or nil)
  return self.grad_input
end

function BatchNorm:backward_params(x, gy)
  if self.affine then
    if self._relu then gy = C.relu_backward_input(gy, self.output) end
    C.batchnorm_backward_params(gy, x, self.save_mean, self.save_invstd, self.grad_weight, self.grad_bias)
  end
end

function BatchNorm:extra_repr()
  local s = string.format("%d, eps=%g, momentum=%g, affine=%s", self.num_features, self.eps, self.momentum,
                          self.affine and "True" or "False")
  if self.splits ~= 1 then s = s .. ", splits=" .. self.splits end
  return s
end

nn.BatchNorm2d = class("BatchNorm2d", BatchNorm)
function nn.BatchNorm2d:__init(num_features, opts) BatchNorm.__init(self, num_features, opts, "nn.BatchNorm2d") end
nn.BatchNorm1d = class("BatchNorm1d", BatchNorm)
function nn.BatchNorm1d:__init(num_features, opts) BatchNorm.__init(self, num_features, opts, "nn.BatchNorm1d") end

-- ------------------------------------------------------------------ ReLU, pooling, flatten

local ReLU = class("ReLU", Module)
nn.ReLU = ReLU

-- inplace = true (torchvision's choice) overwrites the input; backward uses the output mask.
function ReLU:__init(inplace)
  Module.__init(self)
  self.inplace = inplace and true or false
end

function ReLU:forward(x)
  self.output = C.relu_forward(x, self.inplace and x or reuse(self, "output", x:shape()))
  return self.output
end

function ReLU:backward_input(_, gy)
  self.grad_input = C.relu_backward_input(gy, self.output, reuse(self, "grad_input", gy:shape()))
  return self.grad_input
end

function ReLU:extra_repr() return self.inplace and "inplace=True" or "" end

local MaxPool2d = class("MaxPool2d", Module)
nn.MaxPool2d = MaxPool2d

function MaxPool2d:__init(kernel_size, stride, padding)
  Module.__init(self)
  self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding or 0
end

function MaxPool2d:forward(x)
  local s = x:shape()
  local k, st, p = self.kernel_size, self.stride, self.padding
  local shape = { s[1], s[2], (s[3] + 2 * p - k) // st + 1, (s[4] + 2 * p - k) // st + 1 }
  self.output, self.indices = C.maxpool2d_forward(x, k, st, p, reuse(self, "output", shape))
  return self.output
end

function MaxPool2d:backward_input(x, gy)
  self.grad_input = C.maxpool2d_backward_input(gy, self.indices, x, self.kernel_size, self.stride,
                                               self.padding, reuse(self, "grad_input", x:shape()))
  return self.grad_input
end

function MaxPool2d:extra_repr()
  return string.format("kernel_size=%d, stride=%d, padding=%d", self.kernel_size, self.stride, self.padding)
end

-- AdaptiveAvgPool2d((1, 1)): (N,C,H,W) -> (N,C,1,1).
local AdaptiveAvgPool2d = class("AdaptiveAvgPool2d", Module)
nn.AdaptiveAvgPool2d = AdaptiveAvgPool2d

function AdaptiveAvgPool2d:__init(output_size)
  Module.__init(self)
  output_size = output_size or 1
  local o = type(output_size) == "table" and output_size or { output_size, output_size }
  if o[1] ~= 1 or o[2] ~= 1 then
    error("nn.AdaptiveAvgPool2d: only output_size (1, 1) is supported (global average pooling)", 2)
  end
end

function AdaptiveAvgPool2d:forward(x)
  local s = x:shape()
  local pooled = C.avgpool_global_forward(x, self._pooled and same_shape(self._pooled, { s[1], s[2] }) and self._pooled or nil)
  self._pooled = pooled
  self.output = pooled:reshape(s[1], s[2], 1, 1)
  return self.output
end

function AdaptiveAvgPool2d:backward_input(x, gy)
  local s = gy:shape()
  self.grad_input = C.avgpool_global_backward_input(gy:reshape(s[1], s[2]), x, reuse(self, "grad_input", x:shape()))
  return self.grad_input
end

function AdaptiveAvgPool2d:extra_repr() return "output_size=(1, 1)" end

-- Flatten(start_dim=2 in Lua's 1-based count, i.e. torch.flatten(x, 1)): (N, ...) -> (N, rest).
local Flatten = class("Flatten", Module)
nn.Flatten = Flatten

function Flatten:forward(x)
  self.output = x:reshape(x:size(1), -1)
  return self.output
end

function Flatten:backward_input(x, gy)
  self.grad_input = gy:reshape(x:shape())
  return self.grad_input
end

local Identity = class("Identity", Module)
nn.Identity = Identity
function Identity:forward(x) self.output = x; return x end
function Identity:backward_input(_, gy) self.grad_input = gy; return gy end

-- ------------------------------------------------------------------ Linear

local Linear = class("Linear", Module)
nn.Linear = Linear

function Linear:__init(in_features, out_features, opts)
  Module.__init(self)
  opts = check_options("nn.Linear", opts, { bias = true, generator = true })
  self.in_features, self.out_features = in_features, out_features
  local bound = 1 / math.sqrt(in_features)
  self:register_parameter("weight", uniform_(moco.zeros{out_features, in_features}, bound, opts.generator))
  if opt(opts, "bias", true) then
    self:register_parameter("bias", uniform_(moco.zeros{out_features}, bound, opts.generator))
  end
end

function Linear:forward(x)
  self.output = C.linear_forward(x, self.weight, self.bias, reuse(self, "output", { x:size(1), self.out_features }))
  return self.output
end

function Linear:backward_input(x, gy)
  self.grad_input = C.linear_backward_input(gy, self.weight, reuse(self, "grad_input", x:shape()))
  return self.grad_input
end

function Linear:backward_params(x, gy)
  C.linear_backward_params(gy, x, self.grad_weight, self.grad_bias)
end

function Linear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s", self.in_features, self.out_features,
                       self.bias and "True" or "False")
end

-- ------------------------------------------------------------------ Normalize (L2)

local Normalize = class("Normalize", Module)
nn.Normalize = Normalize

-- F.normalize(x, dim=1, eps=1e-12) on (N, D) rows.
function Normalize:__init(eps)
  Module.__init(self)
  self.eps = eps or 1e-12
end

function Normalize:forward(x)
  self.output, self.norms = C.normalize_forward(x, self.eps, reuse(self, "output", x:shape()))
  return self.output
end

function Normalize:backward_input(_, gy)
  self.grad_input = C.normalize_backward_input(gy, self.output, self.norms, self.eps,
                                               reuse(self, "grad_input", gy:shape()))
  return self.grad_input
end

-- ------------------------------------------------------------------ Sequential

local Sequential = class("Sequential", Module)
nn.Sequential = Sequential

-- nn.Sequential{m1, m2, ...} or nn.Sequential(m1, m2, ...); children are named "0", "1", ...
function Sequential:__init(...)
  Module.__init(self)
  local mods = select("#", ...) == 1 and getmetatable((...)) == nil and type((...)) == "table" and (...) or { ... }
  for _, m in ipairs(mods) do self:add(m) end
end

function Sequential:add(m)
  return self:add_module(tostring(#self._children), m)
end

function Sequential:__len() return #self._children end

function Sequential:get(i) return self[self._children[i]] end

function Sequential:forward(x)
  self._inputs = self._inputs or {}
  for i, name in ipairs(self._children) do
    self._inputs[i] = x
    x = self[name]:forward(x)
  end
  self.output = x
  return x
end

function Sequential:backward(x, gy)
  for i = #self._children, 1, -1 do
    gy = self[self._children[i]]:backward(self._inputs[i], gy)
  end
  self.grad_input = gy
  return gy
end

function Sequential:backward_input(x, gy)
  for i = #self._children, 1, -1 do
    gy = self[self._children[i]]:backward_input(self._inputs[i], gy)
  end
  self.grad_input = gy
  return gy
end

function Sequential:backward_params(x, gy)
  -- Parameter gradients need each child's output gradient, so the input pass runs too.
  return self:backward(x, gy)
end

-- ------------------------------------------------------------------ losses

local CrossEntropyLoss = class("CrossEntropyLoss", Module)
nn.CrossEntropyLoss = CrossEntropyLoss

-- loss = criterion:forward(logits (N,K), labels (N) of 0-based class values), mean reduction.
function CrossEntropyLoss:forward(logits, labels)
  self.output, self._grad = C.cross_entropy(logits, labels, reuse(self, "_grad", logits:shape()) or nil)
  return self.output
end

-- The gradient for the last forward's logits.
function CrossEntropyLoss:backward()
  self.grad_input = self._grad
  return self._grad
end

return nn
