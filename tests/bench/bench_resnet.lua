-- tests/bench/bench_resnet.lua: forward+backward throughput of the ResNet encoders, with a
-- per-layer breakdown (time and achieved GFLOP/s of the convolutions), and one MoCo step of
-- the small encoder (resnet20 on 28x28 Fashion-MNIST-sized images: query encoder forward
-- and backward, key encoder forward).
--   moco-lua tests/bench/bench_resnet.lua [--quick] [--threads N] [--only NAME] [--json out.json]
-- --threads N: compute threads (default: the cores this process may use); bench_resnet.py
-- takes the same flag, so that both sides of `make bench` run on the same thread count.
-- Wall-clock times (moco.time); the first steps are warm-up and not counted; the reported
-- time is the fastest step (the least disturbed by other processes), the mean is printed too.
local args = { ... }
local quick, json_out, threads, only = false, nil, nil, nil
for i = 1, #args do
  if args[i] == "--quick" then quick = true end
  if args[i] == "--json" then json_out = args[i + 1] end
  if args[i] == "--threads" then threads = math.tointeger(tonumber(args[i + 1])) end
  if args[i] == "--only" then only = args[i + 1] end
end
threads = threads or moco.data.cpu_count()
moco.set_num_threads(threads)                    -- OpenBLAS, for products outside the layers
if moco._nn.set_num_threads then moco._nn.set_num_threads(threads) end -- the layers' pool

local configs = {
  { name = "resnet18-cifar b64", arch = "resnet18", cifar = true, channels = 3, batch = 64, size = 32, iters = quick and 2 or 5 },
  { name = "resnet18-cifar b256", arch = "resnet18", cifar = true, channels = 3, batch = 256, size = 32, iters = quick and 1 or 3 },
  { name = "resnet50 224 b16", arch = "resnet50", cifar = false, channels = 3, batch = 16, size = 224, iters = quick and 1 or 3 },
  { name = "resnet20 28x28 b256", arch = "resnet20", channels = 1, batch = 256, size = 28, iters = quick and 2 or 5 },
  { name = "moco-step resnet20 b256", arch = "resnet20", channels = 1, batch = 256, size = 28, iters = quick and 2 or 5, moco = true },
}

-- Wraps every leaf module's forward/backward with timers keyed by class name and phase
-- (Conv2d is split into fwd / bwd-input / bwd-params, the rest is summed per class).
local function instrument(net, stats)
  net:apply(function(m)
    if #m._children > 0 then return end
    local cls = m._class_name
    -- (Module:backward calls the two halves, so it is not timed itself.)
    for _, fname in ipairs{ "forward", "backward_input", "backward_params" } do
      local key = cls == "Conv2d" and cls .. " " .. fname or cls
      local s = stats[key] or { time = 0, flops = 0 }
      stats[key] = s
      local f = m[fname]
      m[fname] = function(self, x, ...)
        local t0 = moco.time()
        local r = f(self, x, ...)
        s.time = s.time + (moco.time() - t0)
        if cls == "Conv2d" then
          local o = self.output:shape()
          s.flops = s.flops + 2 * o[1] * o[2] * o[3] * o[4] * self.in_channels * self.kernel_size ^ 2
        end
        return r
      end
    end
  end)
end

local results = {}
for _, c in ipairs(configs) do
  if only and not c.name:find(only, 1, true) then goto continue end
  moco.manual_seed(0)
  local net = moco.models[c.arch]{ num_classes = 128, cifar_stem = c.cifar, in_channels = c.channels }
  local net_k
  if c.moco then
    net_k = moco.models[c.arch]{ num_classes = 128, in_channels = c.channels }
    net_k:load_state_dict(net:state_dict())
    net_k:requires_grad(false)
  end
  local x = moco.randn{ c.batch, c.channels, c.size, c.size }
  local gy = moco.randn{ c.batch, 128 }
  local function step()
    net:zero_grad()
    net:forward(x)
    net:backward(x, gy)
    if net_k then net_k:forward(x) end
  end
  step() -- warm-up: allocates buffers and the conv workspace
  step()
  local stats = {}
  instrument(net, stats)
  if net_k then instrument(net_k, stats) end
  local best, total = math.huge, 0
  for _ = 1, c.iters do
    local t0 = moco.time()
    step()
    local dt = moco.time() - t0
    best, total = math.min(best, dt), total + dt
  end
  local mean = total / c.iters
  print(string.format("%-24s %8.1f images/s  (best %.3f s, mean %.3f s per step, %d threads)", c.name,
                      c.batch / best, best, mean, threads))
  local names = {}
  for k, s in pairs(stats) do if s.time > 0 then names[#names + 1] = k end end
  table.sort(names, function(a, b) return stats[a].time > stats[b].time end)
  for _, k in ipairs(names) do
    local s = stats[k]
    local per = s.time / c.iters
    local gf = s.flops > 0 and string.format("  %6.1f GFLOP/s", s.flops / s.time / 1e9) or ""
    print(string.format("    %-24s %7.1f ms  %5.1f%%%s", k, per * 1e3, 100 * per / mean, gf))
  end
  results[#results + 1] = string.format('"%s": %.3f', c.name, c.batch / best)
  ::continue::
end
if json_out then
  local f = assert(io.open(json_out, "w"))
  f:write("{" .. table.concat(results, ", ") .. "}\n")
  f:close()
end
