-- tests/lua/test_jacobian.lua: check.jacobian (finite differences against backward, for
-- the input and every parameter) over every module class of moco.nn and moco.models.  The
-- classes are enumerated, so a new class without a case here is a FAIL; tensors are tiny
-- so the whole file runs in seconds.  A module with a deliberately wrong backward must be
-- caught (the check can fail).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local nn, models = moco.nn, moco.models

local tests = {}
local g = moco.Generator(17)
local function randn(shape) return moco.randn(shape, g) end

-- Batch-norm parameters and running statistics away from their defaults, so each matters.
local function perturb_bn(m)
  m:apply(function(b)
    if b.running_var then
      b.running_mean:copy(randn(b.running_mean:shape()):mul_(0.3))
      b.running_var:copy(moco.rand(b.running_var:shape(), g):add_(0.5))
    end
    if b.num_features and b.weight then
      b.weight:copy(moco.rand(b.weight:shape(), g):add_(0.5))
      b.bias:copy(randn(b.bias:shape()):mul_(0.2))
    end
  end)
  return m
end

local function bn_kit(splits) return { generator = g, make = function(c) return nn.BatchNorm2d(c, { splits = splits }) end } end

-- class name -> list of {label, module, input[, opts]}
local CASES = {
  ["nn.Conv2d"] = function() return {
    { "Conv2d k3 s1 p1 bias", nn.Conv2d(2, 3, 3, { padding = 1, generator = g }), randn{ 2, 2, 5, 5 } },
    { "Conv2d k3 s2 p1", nn.Conv2d(2, 3, 3, { stride = 2, padding = 1, bias = false, generator = g }), randn{ 2, 2, 6, 6 } },
    { "Conv2d k1 s1 p0", nn.Conv2d(3, 2, 1, { generator = g }), randn{ 2, 3, 3, 3 } },
  } end,
  ["nn.BatchNorm2d"] = function() return {
    { "BatchNorm2d train", perturb_bn(nn.BatchNorm2d(3)), randn{ 4, 3, 2, 2 } },
    { "BatchNorm2d split 2 train", perturb_bn(nn.BatchNorm2d(3, { splits = 2 })), randn{ 4, 3, 2, 2 } },
    { "BatchNorm2d eval", perturb_bn(nn.BatchNorm2d(3)):eval(), randn{ 4, 3, 2, 2 } },
    { "BatchNorm2d no affine", nn.BatchNorm2d(2, { affine = false }), randn{ 4, 2, 2, 2 } },
  } end,
  ["nn.BatchNorm1d"] = function() return {
    { "BatchNorm1d train", perturb_bn(nn.BatchNorm1d(3)), randn{ 6, 3 } },
    { "BatchNorm1d eval", perturb_bn(nn.BatchNorm1d(3)):eval(), randn{ 6, 3 } },
  } end,
  ["nn.ReLU"] = function() return { { "ReLU", nn.ReLU(), randn{ 3, 4 } }, { "ReLU inplace", nn.ReLU(true), randn{ 3, 4 } } } end,
  ["nn.MaxPool2d"] = function() return {
    { "MaxPool2d 3/2/1", nn.MaxPool2d(3, 2, 1), randn{ 2, 2, 5, 5 } }, { "MaxPool2d 2", nn.MaxPool2d(2), randn{ 1, 2, 4, 4 } },
  } end,
  ["nn.AdaptiveAvgPool2d"] = function() return { { "AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d(1), randn{ 2, 3, 3, 3 } } } end,
  ["nn.Flatten"] = function() return { { "Flatten", nn.Flatten(), randn{ 2, 3, 2, 2 } } } end,
  ["nn.Identity"] = function() return { { "Identity", nn.Identity(), randn{ 2, 3 } } } end,
  ["nn.Linear"] = function() return {
    { "Linear", nn.Linear(4, 3, { generator = g }), randn{ 5, 4 } },
    { "Linear no bias", nn.Linear(4, 3, { bias = false, generator = g }), randn{ 5, 4 } },
  } end,
  ["nn.Normalize"] = function() return { { "Normalize", nn.Normalize(), randn{ 4, 5 } } } end,
  ["nn.Sequential"] = function() return {
    { "Sequential conv-bn-relu-flatten-linear", nn.Sequential{ nn.Conv2d(2, 3, 3, { padding = 1, generator = g }),
      perturb_bn(nn.BatchNorm2d(3)), nn.ReLU(true), nn.Flatten(), nn.Linear(12, 2, { generator = g }) }, randn{ 4, 2, 2, 2 } },
    { "Sequential MLP head (MoCo v2)", nn.Sequential{ nn.Linear(6, 6, { generator = g }), nn.ReLU(),
      nn.Linear(6, 4, { generator = g }) }, randn{ 5, 6 } },
  } end,
  ["nn.CrossEntropyLoss"] = function() return {
    { "CrossEntropyLoss", nn.CrossEntropyLoss(), randn{ 4, 5 }, { target = moco.tensor{ 0, 4, 2, 1 } } },
  } end,
  ["models.BasicBlock"] = function()
    local kit = bn_kit(2)
    local down = nn.Sequential{ nn.Conv2d(2, 4, 1, { stride = 2, bias = false, generator = g }), nn.BatchNorm2d(4, { splits = 2 }) }
    return {
      { "BasicBlock identity", perturb_bn(models.BasicBlock(3, 3, 1, nil, kit)), randn{ 4, 3, 3, 3 } },
      { "BasicBlock downsample split BN", perturb_bn(models.BasicBlock(2, 4, 2, down, kit)), randn{ 4, 2, 4, 4 } },
    }
  end,
  ["models.Bottleneck"] = function()
    local kit = bn_kit(1)
    local down = nn.Sequential{ nn.Conv2d(3, 8, 1, { bias = false, generator = g }), nn.BatchNorm2d(8) }
    return { { "Bottleneck downsample", perturb_bn(models.Bottleneck(3, 2, 1, down, kit)), randn{ 4, 3, 3, 3 } } }
  end,
  ["models.ResNet"] = function()
    local r20 = perturb_bn(models.resnet20{ width = 0.25, in_channels = 1, num_classes = 3, generator = g })
    local r50ish = perturb_bn(models.ResNet(models.Bottleneck, { 1, 1 }, { 2, 2 }, { num_classes = 3, generator = g }, "tiny"))
    local enc = perturb_bn(moco.MoCo.make_encoder(
      { arch = "resnet20", dim = 4, mlp = true, bn_splits = 1, in_channels = 1, width = 0.25 }, g))
    -- Whole networks: a batch-norm bias shifts every pre-ReLU value of its channel, so some
    -- of them cross 0 within each step, and the differences converge on backward only as the
    -- step shrinks (measured, stem bn1.bias: -11.87, -11.16, -11.05 at h = 1e-2, 1e-3, 1e-4
    -- against -11.04), with float32 noise below 1e-4: these cases get 3e-2 instead of 1e-2.
    return {
      { "ResNet-20 (CIFAR stem)", r20, randn{ 8, 1, 8, 8 }, { coords = 4, tol = 3e-2 } },
      { "ResNet Bottleneck (ImageNet stem, max-pool)", r50ish, randn{ 2, 3, 12, 12 }, { coords = 6, tol = 3e-2 } },
      { "ResNet-20 eval", models.resnet20{ width = 0.25, in_channels = 1, num_classes = 3, generator = g }:eval(),
        randn{ 4, 1, 8, 8 }, { coords = 4, tol = 3e-2 } },
      { "MoCo encoder with the MLP head", enc, randn{ 8, 1, 8, 8 }, { coords = 3, tol = 3e-2 } },
      { "ResNet-8, stride-2 stem", perturb_bn(models.resnet8{ width = 0.25, in_channels = 1, num_classes = 3,
                                                               stem_stride = 2, generator = g }),
        randn{ 8, 1, 10, 10 }, { coords = 4, tol = 3e-2 } },
    }
  end,
}

local function is_module_class(v)
  if type(v) ~= "table" or rawget(v, "_class_name") == nil then return false end
  local c = v
  while c do
    if c == nn.Module then return true end
    local mt = getmetatable(c)
    c = mt and mt.__index
  end
  return false
end

function tests.every_class_has_a_case()
  local seen = {}
  for prefix, mod in pairs{ nn = nn, models = models } do
    for name, v in pairs(mod) do
      if is_module_class(v) and v ~= nn.Module then
        local key = prefix .. "." .. name
        seen[key] = true
        check.ok("a Jacobian case for " .. key, CASES[key] ~= nil, "add one to tests/lua/test_jacobian.lua")
      end
    end
  end
  for key in pairs(CASES) do check.ok("case " .. key .. " names a class", seen[key], "no such class") end
end

function tests.jacobians()
  local keys = {}
  for k in pairs(CASES) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    for _, c in ipairs(CASES[k]()) do
      local opts = c[4] or {}
      opts.label = c[1]
      check.jacobian(c[2], c[3], opts)
    end
  end
end

-- The check can fail: a Linear whose input gradient is 10% off, one whose bias gradient is
-- missing, and a batch norm that uses the eval-mode formula in training mode (it drops the
-- batch-statistics terms) are each caught, on the tensor that is wrong only.
function tests.wrong_backward_is_caught()
  local WrongInput = nn.class("WrongInput", nn.Linear)
  function WrongInput:backward_input(x, gy) return nn.Linear.backward_input(self, x, gy):mul_(1.1) end
  local WrongBias = nn.class("WrongBias", nn.Linear)
  function WrongBias:backward_params(x, gy) nn.Linear.backward_params(self, x, gy); self.grad_bias:zero() end
  local WrongBN = nn.class("WrongBN", nn.BatchNorm2d)
  function WrongBN:backward(x, gy)
    self._batch_stats = false
    return nn.BatchNorm2d.backward(self, x, gy)
  end
  local function by_name(results)
    local t = {}
    for _, r in ipairs(results) do t[r.name] = r.worst > r.bound end
    return t
  end
  local r = by_name(check.jacobian_errors(WrongInput(4, 3, { generator = g }), randn{ 5, 4 }))
  check.ok("a 10% wrong input gradient is caught", r.input and not r.weight and not r.bias)
  r = by_name(check.jacobian_errors(WrongBias(4, 3, { generator = g }), randn{ 5, 4 }))
  check.ok("a missing bias gradient is caught", r.bias and not r.input and not r.weight)
  r = by_name(check.jacobian_errors(perturb_bn(WrongBN(3)), randn{ 4, 3, 2, 2 }))
  check.ok("batch norm's training-mode terms are checked", r.input)
end

check.run(tests)
