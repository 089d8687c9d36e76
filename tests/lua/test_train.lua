-- tests/lua/test_train.lua: moco.train.Trainer (lua/moco/train.lua) as a REPL user drives it,
-- and PyTorch's conventions that cost nothing: optim.SGD(net:parameters(), ...) and
-- net:backward(x, gy) returning the input gradient (through the ResNet stem too).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local train = moco.train
local T = moco.transforms

local tests = {}
local quiet = function() end

local ds = moco.data.Subset(moco.data.FashionMNIST{ train = true }, 64)
local aug = T.Compose{ T.RandomResizedCrop(12, { scale = { 0.2, 1 } }), T.ToTensor() }
local function loader() return moco.data.Loader(ds, { batch_size = 16, transform = T.TwoCrops(aug), workers = 1, seed = 3 }) end
local function model(lr)
  return moco.MoCo{ arch = "resnet20", width = 0.25, in_channels = 1, dim = 16, K = 64, bn_splits = 2, lr = lr or 0.05, seed = 2 }
end
local function weights(m)
  local p = m.encoder_q:flat_parameters()
  return p:clone()
end

function tests.stepping_continues_where_it_stopped()
  local la, lb = loader(), loader()
  local a, b = model(), model()
  local ta = train.Trainer(a, la, { log = quiet })
  ta:run{ steps = 9 }
  local tb = train.Trainer(b, lb, { log = quiet })
  tb:run{ steps = 3 }
  check.eq("after 3 steps: epoch 0, step 3", tb.epoch .. "/" .. tb.step, "0/3")
  tb:run{ steps = 6 }
  check.eq("after 3 + 6 steps: epoch 2, step 1 (4 steps an epoch)", tb.epoch .. "/" .. tb.step, "2/1")
  check.eq("one history across the calls: 3 records", #tb.history, 3)
  check.ok("the first two epochs complete, the third begun", tb.history[1].complete and tb.history[2].complete
           and not tb.history[3].complete and tb.history[3].steps == 1)
  local d = weights(a) - weights(b)
  check.eq("3 + 6 steps == 9 steps, bit for bit", (d * d):sum(), 0)
  check.eq("the same losses", tb.history[2].loss, ta.history[2].loss)
  tb:run{ epochs = 1 }
  check.eq("run{epochs = 1} finishes the current epoch", tb.epoch .. "/" .. tb.step .. "/" .. #tb.history, "3/0/3")
  la:close()
  lb:close()
end

function tests.the_lr_is_given_once()
  local l = loader()
  local m = model(0.125)
  local t = train.Trainer(m, l, { log = quiet })
  t:run{ steps = 1 }
  check.eq("the trainer takes the model's lr", t.history[1].lr, 0.125)
  check.eq("... and sets it", m.optimizer:get_lr(), 0.125)
  local t2 = train.Trainer(m, l, { log = quiet, epochs = 4, cos = true })
  t2:run{ steps = 5 }
  check.near("a cosine schedule from the model's lr", t2.history[2].lr, moco.optim.cosine_lr(0.125, 1, 4), 1e-15)
  check.raises("run() needs a limit without epochs", "give {steps = N} or {epochs = N}", t.run, t)
  check.raises("cos needs epochs", "the cosine schedule (cos = true) needs epochs", train.Trainer, m, l, { cos = true })
  check.raises("unknown options are refused", "unknown option 'lr_'", train.Trainer, m, l, { lr_ = 1 })
  check.raises("steps must be a positive integer", "steps must be a positive integer", t.run, t, { steps = 0 })
  l:close()
end

function tests.cosine_per_step()
  local l = loader()
  local m = model(0.125)
  local seen = {}
  local step = m.step
  m.step = function(self, ...) seen[#seen + 1] = self.optimizer:get_lr(); return step(self, ...) end
  local t = train.Trainer(m, l, { log = quiet, epochs = 2, cos = true, cos_per_step = true })
  t:run{ epochs = 2 }
  check.eq("8 steps (4 an epoch)", #seen, 8)
  local worst = 0
  for i, lr in ipairs(seen) do
    local e = (i - 1) / 4
    worst = math.max(worst, math.abs(lr - 0.125 * 0.5 * (1 + math.cos(math.pi * e / 2))))
  end
  check.ok("every step's lr is the cosine at epoch + step / steps_per_epoch", worst < 1e-12, "off by " .. worst)
  check.ok("... so it falls within an epoch", seen[4] < seen[2] and seen[2] < seen[1])
  check.raises("cos_per_step needs cos", "cos_per_step refines the cosine schedule", train.Trainer, m, l,
               { epochs = 2, cos_per_step = true })
  l:close()
end

function tests.fit_max_steps_keeps_its_trainer()
  local l = loader()
  local m = model()
  local h = train.fit(m, l, { epochs = 10, max_steps = 5, log = quiet })
  check.eq("fit{max_steps = 5}: two records", #h, 2)
  check.eq("... the second after one step", h[2].steps, 1)
  check.ok("moco.train.last is its trainer", train.last and train.last.history == h and train.last.step == 1)
  train.last:run{ steps = 3 }
  check.eq("it continues", train.last.epoch, 2)
  check.raises("fit needs epochs or max_steps", "epochs (or max_steps) is required", train.fit, m, l, { log = quiet })
  l:close()
end

function tests.sgd_takes_parameters()
  local net = moco.nn.Linear(4, 3)
  local params, grads = net:parameters()
  check.eq("parameters() still returns the tensors in order", #params .. "," .. #grads, "2,2")
  local opt = moco.optim.SGD(net:parameters(), { lr = 0.5 })
  check.ok("optim.SGD(net:parameters(), ...) uses the module", opt.model == net)
  net:zero_grad()
  local before = net.bias:clone()
  net:backward(moco.ones{ 2, 4 }, moco.ones{ 2, 3 })
  opt:step()
  local d = net.bias - before
  check.near("and updates it (bias -= lr * 2)", d:get(1), -1.0, 1e-6)
  check.raises("another table is refused", "expected a moco.nn module or its :parameters()", moco.optim.SGD, { 1, 2 }, { lr = 1 })
end

-- d/dx of sum(w * net(x)) by backward, against central differences in float32.
function tests.backward_returns_the_input_gradient()
  local net = moco.models.resnet20{ num_classes = 3, in_channels = 1, width = 0.25, generator = moco.Generator(1) }
  net:eval() -- running statistics: a smooth function of x
  local g = moco.Generator(2)
  local x = moco.randn({ 1, 1, 8, 8 }, g)
  local w = moco.randn({ 1, 3 }, g)
  net:forward(x)
  local gx = net:backward(x, w)
  check.ok("ResNet:backward returns the input gradient", gx ~= nil and gx:numel() == 64)
  if not gx then return end
  local function f(t) return (net:forward(t) * w):sum() end
  local worst = 0
  for _, pos in ipairs{ { 1, 1, 3, 3 }, { 1, 1, 5, 2 }, { 1, 1, 8, 8 } } do
    local eps = 3e-3 -- small enough that no ReLU changes side (1e-2 crosses kinks here)
    local xp, xm = x:clone(), x:clone()
    xp:set(pos[1], pos[2], pos[3], pos[4], x:get(table.unpack(pos)) + eps)
    xm:set(pos[1], pos[2], pos[3], pos[4], x:get(table.unpack(pos)) - eps)
    local fd = (f(xp) - f(xm)) / (2 * eps)
    local an = gx:get(table.unpack(pos))
    worst = math.max(worst, math.abs(fd - an) / math.max(1e-3, math.abs(fd)))
  end
  print(string.format("  input gradient vs finite differences: worst relative difference %.2e", worst))
  check.ok("... and it is right (finite differences, 3 pixels)", worst < 5e-2, "relative difference " .. worst)
  local m = moco.MoCo{ arch = "resnet20", width = 0.25, in_channels = 1, dim = 8, K = 16, bn_splits = 1 }
  check.eq("a MoCo query encoder opts out (no one uses it)", m.encoder_q.need_input_grad, false)
end

check.run(tests)
