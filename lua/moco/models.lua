-- lua/moco/models.lua: ResNet encoders with torchvision's exact architecture and names.
--
--   moco.models.resnet18{num_classes=1000, in_channels=3, cifar_stem=false, width=1,
--                        zero_init_residual=false, bn_splits=1, generator=gen}
--   resnet34, resnet50 (Bottleneck, stride on the 3x3 conv as torchvision v1.5), and
--   resnet20 (He et al. 2016's CIFAR network: 3 stages of 16/32/64 channels, 3 blocks each),
--   and its smaller siblings of the same 6n+2 family: resnet14 (2 blocks a stage) and
--   resnet8 (1 block a stage).
--
-- cifar_stem replaces the 7x7/2 stem and max-pool with a 3x3/1 convolution and no pooling,
-- as the official MoCo CIFAR-10 demo does.  bn_splits > 1 uses split batch norm everywhere
-- (the demo's SplitBatchNorm), the single-process form of shuffling BN.  stem_stride (default
-- 1) is the stride of that 3x3 stem (CIFAR stem and the 3-stage networks only): 2 halves
-- every stage's map (28x28 input: 14/7/4 instead of 28/14/7), about 4x fewer FLOPs.
local moco = require "moco"
local nn = require "moco.nn"
local util = require "moco.util"

local models = {}

local function conv3x3(cin, cout, stride, gen)
  return nn.Conv2d(cin, cout, 3, { stride = stride, padding = 1, bias = false, generator = gen })
end

local function conv1x1(cin, cout, stride, gen)
  return nn.Conv2d(cin, cout, 1, { stride = stride, padding = 0, bias = false, generator = gen })
end

local L = moco._nn

-- ------------------------------------------------------------------ buffers
--
-- Training keeps, per block, what the backward needs and cannot cheaply redo: each conv's
-- output (its BN's input) and the block output (the next block's input, and the mask of
-- its ReLU).  The fused BN + ReLU outputs inside a block are not kept: they go to the
-- network's nn.Arena slot "a" (dead once the next conv has read them) and the backward
-- recomputes them from the conv output and the saved statistics (bit for bit the same
-- values: BatchNorm:recompute), one elementwise pass instead of one activation per block.
-- The gradients live only while the backward passes a block and use three more slots:
--   g  the gradient at the block output after its ReLU (read again for the shortcut)
--   b, c  the gradients between the layers, alternating; the block's grad_input ends in
--        one of them and the block before reads it before it writes either
-- so one set of slots serves every block (a slot's storage takes the largest shape it is
-- asked for).  PyTorch's autograd keeps the BN outputs too; this is where the memory goes.
--
-- Without kept activations (net:set_keep_activations(false): MoCo's key encoder, feature
-- extraction), a forward keeps nothing: a block's values go to three rotating slots
-- "1".."3" with batch norm in place, so the memory is three activations of the largest
-- map.  backward is then an error.

local SLOTS = { "1", "2", "3" }
-- The first slot not among the given ones.
local function free_slot(a, b)
  for _, s in ipairs(SLOTS) do if s ~= a and s ~= b then return s end end
end

local function no_backward(self)
  error(self._class_name .. ":backward: the last forward kept no activations (set_keep_activations(false)); "
        .. "call set_keep_activations(true) and forward again", 3)
end

-- The shortcut branch: identity, or the downsample's conv (output kept for its BN's
-- backward) and BN (output, used once, into `slot` when given).
local function shortcut_forward(self, x, slot)
  if not self.downsample then return x end
  local conv, bn = self.downsample:get(1), self.downsample:get(2)
  local c = conv:forward(x, not self.keep_activations and self._arena:get(slot, conv:output_shape(x)) or nil)
  return bn:forward(c, slot and self._arena:get(slot, c:shape()) or nil)
end

-- The shortcut's gradient for g (slot "g"), added into gm; uses slot `free`.
local function shortcut_backward(self, x, g, gm, free)
  if not self.downsample then
    L.add_into(gm, g)
    return
  end
  local conv, bn = self.downsample:get(1), self.downsample:get(2)
  local gs = bn:backward(conv.output, g, self._arena:get(free, g:shape()))
  gs = conv:backward(x, gs, self._arena:get("g", x:shape())) -- g has been read: its slot is free
  L.add_into(gm, gs)
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
  self._arena = nn.Arena() -- replaced by the network's own when part of a ResNet
  self.keep_activations = true
end

-- out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)): BN1 with its ReLU, and BN2
-- with the residual join and its ReLU, each one pass over the data.  x_slot: the arena slot
-- holding x when activations are not kept.
function BasicBlock:forward(x, x_slot)
  local A = self._arena
  if not self.keep_activations then
    local t1 = free_slot(x_slot)
    local t = A:get(t1, self.conv1:output_shape(x))
    self.conv1:forward(x, t)
    self.bn1:forward(t, t, true)
    local u_slot = free_slot(x_slot, t1)
    local u = A:get(u_slot, self.conv2:output_shape(t))
    self.conv2:forward(t, u)
    local sc = shortcut_forward(self, x, t1) -- t is dead: its slot takes the shortcut
    self.output = self.bn2:forward_add_relu(u, sc, u)
    return self.output, u_slot
  end
  local c1 = self.conv1:forward(x)
  local a1 = self.bn1:forward(c1, A:get("a", c1:shape()), true)
  local c2 = self.conv2:forward(a1)
  self.output = self.bn2:forward_add_relu(c2, shortcut_forward(self, x, "a")) -- a1 is dead
  return self.output
end

function BasicBlock:backward(x, gy)
  if not self.keep_activations then no_backward(self) end
  local A = self._arena
  local g = L.relu_backward_input(gy, self.output, A:get("g", gy:shape()))
  local gm = self.bn2:backward(self.conv2.output, g, A:get("b", g:shape()))
  local c1 = self.conv1.output
  local a1 = self.bn1:recompute(c1, A:get("a", c1:shape()))
  gm = self.conv2:backward(a1, gm, A:get("c", c1:shape()))
  gm = self.bn1:backward(c1, gm, gm)
  gm = self.conv1:backward(x, gm, A:get("b", x:shape()))
  shortcut_backward(self, x, g, gm, "c")
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
  self._arena = nn.Arena()
  self.keep_activations = true
end

function Bottleneck:forward(x, x_slot)
  local A = self._arena
  if not self.keep_activations then
    local s1 = free_slot(x_slot)
    local t1 = A:get(s1, self.conv1:output_shape(x))
    self.conv1:forward(x, t1)
    self.bn1:forward(t1, t1, true)
    local s2 = free_slot(x_slot, s1)
    local t2 = A:get(s2, self.conv2:output_shape(t1))
    self.conv2:forward(t1, t2)
    self.bn2:forward(t2, t2, true)
    local t3 = A:get(s1, self.conv3:output_shape(t2)) -- t1 is dead
    self.conv3:forward(t2, t3)
    local sc = shortcut_forward(self, x, s2)         -- t2 is dead
    self.output = self.bn3:forward_add_relu(t3, sc, t3)
    return self.output, s1
  end
  local c1 = self.conv1:forward(x)
  local a1 = self.bn1:forward(c1, A:get("a", c1:shape()), true)
  local c2 = self.conv2:forward(a1)
  local a2 = self.bn2:forward(c2, A:get("a", c2:shape()), true) -- a1 is dead
  local c3 = self.conv3:forward(a2)
  self.output = self.bn3:forward_add_relu(c3, shortcut_forward(self, x, "a")) -- a2 is dead
  return self.output
end

function Bottleneck:backward(x, gy)
  if not self.keep_activations then no_backward(self) end
  local A = self._arena
  local g = L.relu_backward_input(gy, self.output, A:get("g", gy:shape()))
  local gm = self.bn3:backward(self.conv3.output, g, A:get("b", g:shape()))
  local c1, c2 = self.conv1.output, self.conv2.output
  local a2 = self.bn2:recompute(c2, A:get("a", c2:shape()))
  gm = self.conv3:backward(a2, gm, A:get("c", c2:shape()))
  gm = self.bn2:backward(c2, gm, gm)
  local a1 = self.bn1:recompute(c1, A:get("a", c1:shape()))
  gm = self.conv2:backward(a1, gm, A:get("b", c1:shape()))
  gm = self.bn1:backward(c1, gm, gm)
  gm = self.conv1:backward(x, gm, A:get("c", x:shape()))
  shortcut_backward(self, x, g, gm, "b")
  self.grad_input = gm
  return gm
end

-- ------------------------------------------------------------------ ResNet

local ResNet = nn.class("ResNet", nn.Module)
models.ResNet = ResNet

local resnet_options = {
  num_classes = true, in_channels = true, cifar_stem = true, width = true,
  zero_init_residual = true, bn_splits = true, generator = true, stem_stride = true,
}

-- block: BasicBlock or Bottleneck; layers: blocks per stage; planes: channels per stage.
function ResNet:__init(block, layers, planes, opts, name)
  nn.Module.__init(self)
  opts = util.check_options(name, opts, resnet_options)
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
  local small_stem = opts.cifar_stem or #planes == 3
  local stem_stride = opts.stem_stride or 1
  if stem_stride ~= 1 and stem_stride ~= 2 then
    error(string.format("%s: stem_stride must be 1 or 2, got %s", name, tostring(opts.stem_stride)), 3)
  end
  if stem_stride ~= 1 and not small_stem then
    error(string.format("%s: stem_stride applies to the 3x3 stem only (give cifar_stem = true)", name), 3)
  end

  if small_stem then
    self:add_module("conv1", conv3x3(in_channels, self.inplanes, stem_stride, gen))
  else
    self:add_module("conv1", nn.Conv2d(in_channels, self.inplanes, 7, { stride = 2, padding = 3, bias = false, generator = gen }))
  end
  self:add_module("bn1", bn.make(self.inplanes))
  self:add_module("relu", nn.ReLU(true))
  if small_stem then
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
  -- one arena for the whole network (see "buffers" above)
  self._arena = nn.Arena()
  self.keep_activations = true
  self:apply(function(m) if m._arena then m._arena = self._arena end end)
end

-- Whether forward keeps what backward needs (default true).  false: a forward for
-- features only (MoCo's key encoder, feature extraction) in a few shared buffers; backward
-- is then an error.  Returns self.
function ResNet:set_keep_activations(flag)
  local keep = flag ~= false
  self:apply(function(m) if m.keep_activations ~= nil then m.keep_activations = keep end end)
  self._arena_for = nil
  return self
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

-- The stages after the stem, in the order features flow; fc may be replaced (MoCo's MLP
-- head) or removed.
local function stages(self)
  local list = { self.maxpool }
  for i = 1, 4 do if self["layer" .. i] then list[#list + 1] = self["layer" .. i] end end
  list[#list + 1] = self.avgpool
  return list
end

-- Without kept activations: the stem into slot "1" (BN + ReLU in place), the max-pool
-- (ImageNet stem) into "2", then block by block through the rotating slots.
local function features_inference(self, x)
  local A, slot = self._arena, "1"
  local t = A:get(slot, self.conv1:output_shape(x))
  self.conv1:forward(x, t)
  x = self.bn1:forward(t, t, true)
  if getmetatable(self.maxpool) ~= nn.Identity then
    x = self.maxpool:forward(x) -- the pool's own buffer
    slot = nil
  end
  for i = 1, 4 do
    local layer = self["layer" .. i]
    if layer then
      for _, block in ipairs(layer:children()) do x, slot = block:forward(x, slot) end
    end
  end
  return self.avgpool:forward(x)
end

-- The arena slots, grown once per input size to the largest activation of the network: the
-- stem's output or layer1's (each later stage halves the map and at most doubles the
-- channels), so that no slot grows layer by layer.
local function reserve_arena(self, x)
  local key = table.concat(x:shape(), ",")
  if self._arena_for == key then return end
  self._arena_for = key
  local s = self.conv1:output_shape(x)
  local n, h, w = s[1] * s[2] * s[3] * s[4], s[3], s[4]
  local mp = self.maxpool
  if getmetatable(mp) == nn.MaxPool2d then
    h = (h + 2 * mp.padding - mp.kernel_size) // mp.stride + 1
    w = (w + 2 * mp.padding - mp.kernel_size) // mp.stride + 1
  end
  local blocks = self.layer1:children()
  local last = blocks[#blocks]
  local c = last.bn3 and last.bn3.num_features or last.bn2.num_features
  n = math.max(n, s[1] * c * h * w)
  self._arena:reserve(self.keep_activations and { "a", "g", "b", "c" } or SLOTS, n)
end

-- features(x): the pooled representation (N, feature_dim) before fc.  The stem's BN and
-- ReLU are one pass (relu is a module for torchvision's structure only).
function ResNet:features(x)
  reserve_arena(self, x)
  if not self.keep_activations then
    local pooled = features_inference(self, x)
    self._pooled = pooled:reshape(pooled:size(1), -1)
    return self._pooled
  end
  self._stem_input = x
  x = self.bn1:forward(self.conv1:forward(x), nil, true)
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
  if not self.keep_activations then no_backward(self) end
  local list = stages(self)
  local g = gf:reshape(gf:size(1), self.feature_dim, 1, 1)
  for i = #list, 1, -1 do g = list[i]:backward(self._inputs[i], g) end
  g = self.bn1:backward(self.conv1.output, g, self._arena:get("g", self.conv1.output:shape()))
  local conv = self.conv1
  if self.need_input_grad == false then
    if conv._grad_enabled then conv:backward_params(self._stem_input, g) end
    g = nil
  else
    g = conv:backward(self._stem_input, g)
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
-- The same family with n = 2 and n = 1: fewer blocks a stage, the same stages and widths.
function models.resnet14(opts) return ResNet(BasicBlock, { 2, 2, 2 }, { 16, 32, 64 }, opts, "resnet14") end
function models.resnet8(opts) return ResNet(BasicBlock, { 1, 1, 1 }, { 16, 32, 64 }, opts, "resnet8") end

-- The stem's output channels of each architecture at width 1 (checkpoint readers check a
-- file's conv1 against them before building anything).
models.STEM_CHANNELS = { resnet18 = 64, resnet34 = 64, resnet50 = 64, resnet20 = 16, resnet14 = 16, resnet8 = 16 }

function models.get(name, opts)
  local f = models[name]
  if type(f) ~= "function" or name == "get" then
    error(string.format("moco.models: unknown architecture '%s' (known: resnet8, resnet14, resnet18, resnet20, resnet34, resnet50)", tostring(name)), 2)
  end
  return f(opts)
end

return models
