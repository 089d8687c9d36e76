-- lua/moco/models.lua: ResNet encoders with torchvision's exact architecture and names.
--
--   moco.models.resnet18{num_classes=1000, in_channels=3, cifar_stem=false, width=1,
--                        zero_init_residual=false, bn_splits=1, generator=gen}
--   resnet34, resnet50 (Bottleneck, stride on the 3x3 conv as torchvision v1.5), and
--   resnet20 (He et al. 2016's CIFAR network: 3 stages of 16/32/64 channels, 3 blocks each).
--
-- cifar_stem replaces the 7x7/2 stem and max-pool with a 3x3/1 convolution and no pooling,
-- as the official MoCo CIFAR-10 demo does.  bn_splits > 1 uses split batch norm everywhere
-- (the demo's SplitBatchNorm), the single-process form of shuffling BN.
local moco = require "moco"
local nn = require "moco.nn"

local models = {}

local function conv3x3(cin, cout, stride, gen)
  return nn.Conv2d(cin, cout, 3, { stride = stride, padding = 1, bias = false, generator = gen })
end

local function conv1x1(cin, cout, stride, gen)
  return nn.Conv2d(cin, cout, 1, { stride = stride, padding = 0, bias = false, generator = gen })
end

-- In-place ReLU on a tensor (the output mask is the tensor itself).
local relu_ = function(t) return moco._nn.relu_forward(t, t) end
local relu_grad = function(gy, out, into) return moco._nn.relu_backward_input(gy, out, into) end

-- self._g (the gradient at the block's output ReLU) if its shape is still that of `t`: the
-- buffer is reused between calls, but the batch size may change (an epoch's last batch).
local function grad_buffer(self, t)
  local g = self._g
  if g and g:dim() == t:dim() then
    local a, b = g:shape(), t:shape()
    for i = 1, #a do if a[i] ~= b[i] then return nil end end
    return g
  end
  return nil
end

-- ------------------------------------------------------------------ blocks

local BasicBlock = nn.class("BasicBlock", nn.Module)
models.BasicBlock = BasicBlock
BasicBlock.expansion = 1

function BasicBlock:__init(inplanes, planes, stride, downsample, bn)
  nn.Module.__init(self)
  self:add_module("conv1", conv3x3(inplanes, planes, stride, bn.generator))
  self:add_module("bn1", bn.make(planes))
  self:add_module("relu", nn.ReLU(true))
  self:add_module("conv2", conv3x3(planes, planes, 1, bn.generator))
  self:add_module("bn2", bn.make(planes))
  if downsample then self:add_module("downsample", downsample) end
end

-- out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
function BasicBlock:forward(x)
  local a1 = relu_(self.bn1:forward(self.conv1:forward(x)))
  local out = self.bn2:forward(self.conv2:forward(a1))
  out:add_(self.downsample and self.downsample:forward(x) or x)
  self._a1 = a1
  self.output = relu_(out)
  return self.output
end

function BasicBlock:backward(x, gy)
  local g = relu_grad(gy, self.output, grad_buffer(self, gy))
  self._g = g
  local gm = self.bn2:backward(self.conv2.output, g)
  gm = self.conv2:backward(self._a1, gm)
  gm = relu_grad(gm, self._a1, gm)
  gm = self.bn1:backward(self.conv1.output, gm)
  gm = self.conv1:backward(x, gm)
  gm:add_(self.downsample and self.downsample:backward(x, g) or g)
  self.grad_input = gm
  return gm
end

local Bottleneck = nn.class("Bottleneck", nn.Module)
models.Bottleneck = Bottleneck
Bottleneck.expansion = 4

function Bottleneck:__init(inplanes, planes, stride, downsample, bn)
  nn.Module.__init(self)
  local width = planes -- groups 1, base width 64 (scaled by the model's width multiplier already)
  self:add_module("conv1", conv1x1(inplanes, width, 1, bn.generator))
  self:add_module("bn1", bn.make(width))
  self:add_module("conv2", conv3x3(width, width, stride, bn.generator))
  self:add_module("bn2", bn.make(width))
  self:add_module("conv3", conv1x1(width, planes * 4, 1, bn.generator))
  self:add_module("bn3", bn.make(planes * 4))
  self:add_module("relu", nn.ReLU(true))
  if downsample then self:add_module("downsample", downsample) end
end

function Bottleneck:forward(x)
  local a1 = relu_(self.bn1:forward(self.conv1:forward(x)))
  local a2 = relu_(self.bn2:forward(self.conv2:forward(a1)))
  local out = self.bn3:forward(self.conv3:forward(a2))
  out:add_(self.downsample and self.downsample:forward(x) or x)
  self._a1, self._a2 = a1, a2
  self.output = relu_(out)
  return self.output
end

function Bottleneck:backward(x, gy)
  local g = relu_grad(gy, self.output, grad_buffer(self, gy))
  self._g = g
  local gm = self.bn3:backward(self.conv3.output, g)
  gm = self.conv3:backward(self._a2, gm)
  gm = relu_grad(gm, self._a2, gm)
  gm = self.bn2:backward(self.conv2.output, gm)
  gm = self.conv2:backward(self._a1, gm)
  gm = relu_grad(gm, self._a1, gm)
  gm = self.bn1:backward(self.conv1.output, gm)
  gm = self.conv1:backward(x, gm)
  gm:add_(self.downsample and self.downsample:backward(x, g) or g)
  self.grad_input = gm
  return gm
end

-- ------------------------------------------------------------------ ResNet

local ResNet = nn.class("ResNet", nn.Module)
models.ResNet = ResNet

local resnet_options = {
  num_classes = true, in_channels = true, cifar_stem = true, width = true,
  zero_init_residual = true, bn_splits = true, generator = true,
}

-- block: BasicBlock or Bottleneck; layers: blocks per stage; planes: channels per stage.
function ResNet:__init(block, layers, planes, opts, name)
  nn.Module.__init(self)
  opts = nn.check_options(name, opts, resnet_options)
  local width = opts.width or 1
  local in_channels = opts.in_channels or 3
  local num_classes = opts.num_classes or 1000
  local gen = opts.generator
  local splits = opts.bn_splits or 1
  local bn = { generator = gen, make = function(c) return nn.BatchNorm2d(c, { splits = splits }) end }
  local stage = {}
  for i, p in ipairs(planes) do stage[i] = math.max(1, math.floor(p * width + 0.5)) end
  self.inplanes = stage[1]
  self.arch = name

  if opts.cifar_stem or #planes == 3 then
    self:add_module("conv1", conv3x3(in_channels, self.inplanes, 1, gen))
  else
    self:add_module("conv1", nn.Conv2d(in_channels, self.inplanes, 7, { stride = 2, padding = 3, bias = false, generator = gen }))
  end
  self:add_module("bn1", bn.make(self.inplanes))
  self:add_module("relu", nn.ReLU(true))
  if opts.cifar_stem or #planes == 3 then
    self:add_module("maxpool", nn.Identity())
  else
    self:add_module("maxpool", nn.MaxPool2d(3, 2, 1))
  end
  for i = 1, #stage do
    self:add_module("layer" .. i, self:_make_layer(block, stage[i], layers[i], i == 1 and 1 or 2, bn))
  end
  self:add_module("avgpool", nn.AdaptiveAvgPool2d(1))
  self.feature_dim = stage[#stage] * block.expansion
  self:add_module("fc", nn.Linear(self.feature_dim, num_classes, { generator = gen }))

  -- torchvision's initialisation: kaiming normal (fan_out, relu) for convolutions, BN weight 1
  -- and bias 0 (their defaults), Linear left at PyTorch's default.
  self:apply(function(m)
    if getmetatable(m) == nn.Conv2d then nn.init.kaiming_normal_fan_out_(m.weight, gen) end
  end)
  if opts.zero_init_residual then
    self:apply(function(m)
      local last = getmetatable(m) == Bottleneck and m.bn3 or getmetatable(m) == BasicBlock and m.bn2
      if last then last.weight:zero() end
    end)
  end
end

function ResNet:_make_layer(block, planes, blocks, stride, bn)
  local downsample
  if stride ~= 1 or self.inplanes ~= planes * block.expansion then
    downsample = nn.Sequential{ conv1x1(self.inplanes, planes * block.expansion, stride, bn.generator),
                                bn.make(planes * block.expansion) }
  end
  local layer = nn.Sequential()
  layer:add(block(self.inplanes, planes, stride, downsample, bn))
  self.inplanes = planes * block.expansion
  for _ = 2, blocks do layer:add(block(self.inplanes, planes, 1, nil, bn)) end
  return layer
end

-- The order in which features flow; fc may be replaced (MoCo's MLP head) or removed.
local function stages(self)
  local list = { self.conv1, self.bn1, self.relu, self.maxpool }
  for i = 1, 4 do if self["layer" .. i] then list[#list + 1] = self["layer" .. i] end end
  list[#list + 1] = self.avgpool
  return list
end

-- features(x): the pooled representation (N, feature_dim) before fc.
function ResNet:features(x)
  self._inputs = {}
  for i, m in ipairs(stages(self)) do
    self._inputs[i] = x
    x = m:forward(x)
  end
  self._pooled = x:reshape(x:size(1), -1)
  return self._pooled
end

function ResNet:forward(x)
  local f = self:features(x)
  if self.fc then
    self.output = self.fc:forward(f)
  else
    self.output = f
  end
  return self.output
end

-- Backward from the gradient of the features (N, feature_dim).  Returns the gradient of the
-- input images, as every module's backward does, unless need_input_grad == false (a MoCo
-- encoder: nothing uses it, so the stem's input-gradient work is skipped and nil returned).
function ResNet:backward_features(gf)
  local list = stages(self)
  local g = gf:reshape(gf:size(1), self.feature_dim, 1, 1)
  for i = #list, 1, -1 do
    local m = list[i]
    if i == 1 and self.need_input_grad == false then
      if m._grad_enabled then m:backward_params(self._inputs[i], g) end
      g = nil
    else
      g = m:backward(self._inputs[i], g)
    end
  end
  self.grad_input = g
  return g
end

function ResNet:backward(_, gy)
  local gf = self.fc and self.fc:backward(self._pooled, gy) or gy
  return self:backward_features(gf)
end

-- ------------------------------------------------------------------ constructors

function models.resnet18(opts) return ResNet(BasicBlock, { 2, 2, 2, 2 }, { 64, 128, 256, 512 }, opts, "resnet18") end
function models.resnet34(opts) return ResNet(BasicBlock, { 3, 4, 6, 3 }, { 64, 128, 256, 512 }, opts, "resnet34") end
function models.resnet50(opts) return ResNet(Bottleneck, { 3, 4, 6, 3 }, { 64, 128, 256, 512 }, opts, "resnet50") end
-- He et al. 2016, section 4.2: 6n+2 layers with n = 3.  Shortcuts that change shape use a
-- 1x1 convolution + BN (their option B) so that every block is a torchvision BasicBlock.
function models.resnet20(opts) return ResNet(BasicBlock, { 3, 3, 3 }, { 16, 32, 64 }, opts, "resnet20") end

function models.get(name, opts)
  local f = models[name]
  if type(f) ~= "function" or name == "get" then
    error(string.format("moco.models: unknown architecture '%s' (known: resnet18, resnet20, resnet34, resnet50)", tostring(name)), 2)
  end
  return f(opts)
end

return models
