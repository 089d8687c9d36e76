-- tests/bench/bench_moco.lua: the moco-lua side of `make bench` for training compute, the
-- twin of bench_moco.py (same configurations, same step, one configuration per process so
-- that the peak RSS it reports is that configuration's).
--   moco-lua tests/bench/bench_moco.lua CONFIG [--threads N] [--iters N] [--json out.json]
--
-- moco-*: one MoCo v2 step, model:step(im_q, im_k) (momentum update, query encoder forward,
-- shuffled key encoder forward, InfoNCE, backward, SGD, enqueue) with split BN 8, the MLP
-- head, dim 128, K 4096, T 0.2.  r50-224-b32: ResNet-50 forward + backward with a fixed
-- output gradient.  The first two steps are warm-up; the reported time is the fastest of
-- --iters steps.  Per-phase times are summed over the timed steps by wrapping the model's
-- pieces (leaf modules' forward / backward_input / backward_params, the loss, the
-- optimiser, the momentum update, the enqueue); "Lua and glue" is what is left of the step.
local args = { ... }
local name = args[1]
local threads, iters, json_out
for i = 2, #args do
  if args[i] == "--threads" then threads = math.tointeger(tonumber(args[i + 1])) end
  if args[i] == "--iters" then iters = math.tointeger(tonumber(args[i + 1])) end
  if args[i] == "--json" then json_out = args[i + 1] end
end
threads = threads or moco.data.cpu_count()
iters = iters or 3
moco.set_num_threads(threads)

local CONFIGS = {
  ["moco-r18-cifar-b64"] = { kind = "moco", arch = "resnet18", channels = 3, size = 32, batch = 64 },
  ["moco-r18-cifar-b256"] = { kind = "moco", arch = "resnet18", channels = 3, size = 32, batch = 256 },
  ["moco-r20-28-b256"] = { kind = "moco", arch = "resnet20", channels = 1, size = 28, batch = 256 },
  ["r50-224-b32"] = { kind = "plain", arch = "resnet50", channels = 3, size = 224, batch = 32 },
}
local c = CONFIGS[name] or error("bench_moco.lua: unknown configuration " .. tostring(name))

-- Phase timers.  `flops` counts the convolution and linear arithmetic of a phase.
local phases, order = {}, {}
local function phase(key)
  if not phases[key] then phases[key] = { time = 0, flops = 0 }; order[#order + 1] = key end
  return phases[key]
end
local function timed(key, f)
  local p = phase(key)
  return function(...)
    local t0 = moco.time()
    local a, b, d, e = f(...)
    p.time = p.time + (moco.time() - t0)
    return a, b, d, e
  end
end
local function conv_flops(m)
  if m._class_name == "Conv2d" and m.output then
    local o = m.output:shape()
    return 2 * o[1] * o[2] * o[3] * o[4] * m.in_channels * m.kernel_size ^ 2
  elseif m._class_name == "Linear" and m.output then
    return 2 * m.output:numel() * m.in_features
  end
  return 0
end
-- Wraps every leaf module of net: forward (and batch norm's forward_add_relu, the blocks'
-- fused join) into `prefix fwd`, the two backward halves; batch norm's backward (input and
-- parameter gradients in one pass, not through backward_input) into `prefix bwd-input`, and
-- its recompute (a fused BN + ReLU output rebuilt for the backward) into `prefix recompute`.
local function instrument(net, prefix)
  net:apply(function(m)
    if #m._children > 0 then return end
    local names = { forward = "fwd", forward_add_relu = "fwd", backward_input = "bwd-input",
                    backward_params = "bwd-params" }
    if m._class_name == "BatchNorm2d" or m._class_name == "BatchNorm1d" then
      names.backward, names.recompute = "bwd-input", "recompute"
    end
    for fname, label in pairs(names) do
      local f = m[fname]
      if f then
        local p = phase(prefix .. " " .. label)
        m[fname] = function(self, ...)
          local t0 = moco.time()
          local r = f(self, ...)
          p.time = p.time + (moco.time() - t0)
          p.flops = p.flops + conv_flops(self)
          return r
        end
      end
    end
  end)
end

moco.manual_seed(0)
local step
if c.kind == "moco" then
  local model = moco.MoCo{ arch = c.arch, in_channels = c.channels, cifar_stem = c.arch == "resnet18",
                           dim = 128, K = 4096, m = 0.99, T = 0.2, mlp = true, bn_splits = 8, lr = 0.06 }
  local im_q = moco.randn{ c.batch, c.channels, c.size, c.size }
  local im_k = moco.randn{ c.batch, c.channels, c.size, c.size }
  step = function() model:step(im_q, im_k) end
  step()
  step()
  instrument(model.encoder_q, "encoder_q")
  instrument(model.encoder_k, "encoder_k")
  local Cm = moco._moco
  Cm.infonce = timed("loss (InfoNCE)", Cm.infonce)
  Cm.queue_enqueue = timed("enqueue", Cm.queue_enqueue)
  model.momentum_update = timed("momentum update", model.momentum_update)
  local opt = model.optimizer
  opt.step = timed("SGD", opt.step)
  local zg = model.encoder_q.zero_grad
  model.encoder_q.zero_grad = timed("zero_grad", zg)
else
  local net = moco.models[c.arch]{ num_classes = 1000 }
  -- PyTorch's side backpropagates from a fixed gradient to an input that does not require
  -- one, so autograd skips the stem's input gradient; so does this side.
  net.need_input_grad = false
  local x = moco.randn{ c.batch, c.channels, c.size, c.size }
  local gy = moco.randn{ c.batch, 1000 }
  step = function()
    net:zero_grad()
    net:forward(x)
    net:backward(x, gy)
  end
  step()
  step()
  instrument(net, "net")
end

local best, total = math.huge, 0
for _ = 1, iters do
  local t0 = moco.time()
  step()
  local dt = moco.time() - t0
  best, total = math.min(best, dt), total + dt
end
local mean = total / iters

local function peak_rss()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) * 1024 or 0
end
local rss = peak_rss()

print(string.format("%-22s %8.1f images/s  (best %.3f s, mean %.3f s, peak RSS %.0f MiB, %d threads)", name,
                    c.batch / best, best, mean, rss / 2 ^ 20, threads))
local step_flops = 0
for _, k in ipairs(order) do step_flops = step_flops + phases[k].flops / iters end
print(string.format("    %-26s %8.1f GFLOP per step, %.1f GFLOP/s at the best step", "convolutions + linear",
                    step_flops / 1e9, step_flops / best / 1e9))
local accounted = 0
for _, k in ipairs(order) do
  local p = phases[k]
  local per = p.time / iters
  accounted = accounted + per
  local gf = p.flops > 0 and string.format("  %6.1f GFLOP/s", p.flops / p.time / 1e9) or ""
  print(string.format("    %-26s %8.1f ms  %5.1f%%%s", k, per * 1e3, 100 * per / mean, gf))
end
print(string.format("    %-26s %8.1f ms  %5.1f%%", "Lua and glue (the rest)", (mean - accounted) * 1e3,
                    100 * (mean - accounted) / mean))

if json_out then
  local f = assert(io.open(json_out, "w"))
  local parts = {}
  for _, k in ipairs(order) do parts[#parts + 1] = string.format('"%s": %.6f', k, phases[k].time / iters) end
  f:write(string.format('{"name": "%s", "images_per_s": %.4f, "best_s": %.6f, "mean_s": %.6f, "peak_rss": %d, '
                        .. '"threads": %d, "flops": %.0f, "gemm": "%s", "winograd": "%s", "phases": {%s}}\n', name,
                        c.batch / best, best, mean, rss, threads, step_flops, moco._nn.gemm_backend and
                        moco._nn.gemm_backend() or "", select(2, moco._nn.winograd_status()), table.concat(parts, ", ")))
  f:close()
end
