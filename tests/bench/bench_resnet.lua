-- tests/bench/bench_resnet.lua: forward+backward throughput of the ResNet encoders, with a
-- per-layer breakdown (time and achieved GFLOP/s of the convolutions).
--   moco-lua tests/bench/bench_resnet.lua [--quick] [--json out.json]
-- Wall-clock times (moco.time); the first iterations are warm-up and not counted.
local args = { ... }
local quick, json_out = false, nil
for i = 1, #args do
  if args[i] == "--quick" then quick = true end
  if args[i] == "--json" then json_out = args[i + 1] end
end

local configs = {
  { name = "resnet18-cifar b64", arch = "resnet18", cifar = true, batch = 64, size = 32, iters = quick and 2 or 5 },
  { name = "resnet18-cifar b256", arch = "resnet18", cifar = true, batch = 256, size = 32, iters = quick and 1 or 3 },
  { name = "resnet50 224 b16", arch = "resnet50", cifar = false, batch = 16, size = 224, iters = quick and 1 or 3 },
}

-- Wraps every leaf module's forward/backward with timers keyed by class name.
local function instrument(net)
  local stats = {}
  net:apply(function(m)
    if #m._children > 0 then return end
    local cls = m._class_name
    local s = stats[cls] or { time = 0, flops = 0 }
    stats[cls] = s
    -- (Module:backward calls the two halves, so it is not timed itself.)
    for _, fname in ipairs{ "forward", "backward_input", "backward_params" } do
      local f = m[fname]
      m[fname] = function(self, x, ...)
        local t0 = moco.time()
        local r = f(self, x, ...)
        s.time = s.time + (moco.time() - t0)
        if cls == "Conv2d" then
          local o = self.output:shape()
          local flops = 2 * o[1] * o[2] * o[3] * o[4] * self.in_channels * self.kernel_size ^ 2
          s.flops = s.flops + flops
        end
        return r
      end
    end
  end)
  return stats
end

local results = {}
for _, c in ipairs(configs) do
  moco.manual_seed(0)
  local net = moco.models[c.arch]{ num_classes = 128, cifar_stem = c.cifar }
  local x = moco.randn{ c.batch, 3, c.size, c.size }
  local gy = moco.randn{ c.batch, 128 }
  local function step()
    net:zero_grad()
    net:forward(x)
    net:backward(x, gy)
  end
  step() -- warm-up: allocates buffers and the conv workspace
  local stats = instrument(net)
  local t0 = moco.time()
  for _ = 1, c.iters do step() end
  local dt = (moco.time() - t0) / c.iters
  local ips = c.batch / dt
  print(string.format("%-22s %8.1f images/s  (%.3f s per step, %d threads)", c.name, ips, dt, moco.get_num_threads()))
  local names = {}
  for k in pairs(stats) do names[#names + 1] = k end
  table.sort(names, function(a, b) return stats[a].time > stats[b].time end)
  for _, k in ipairs(names) do
    local s = stats[k]
    local per = s.time / c.iters
    local gf = s.flops > 0 and string.format("  %6.1f GFLOP/s", s.flops / s.time / 1e9) or ""
    print(string.format("    %-18s %7.1f ms  %5.1f%%%s", k, per * 1e3, 100 * per / dt, gf))
  end
  results[#results + 1] = string.format('"%s": %.3f', c.name, ips)
end
if json_out then
  local f = assert(io.open(json_out, "w"))
  f:write("{" .. table.concat(results, ", ") .. "}\n")
  f:close()
end
