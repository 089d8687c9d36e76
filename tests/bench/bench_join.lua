-- tests/bench/bench_join.lua: a ResNet block's join (residual add + ReLU) fused into its last
-- batch norm against batch norm followed by add_relu_forward, on the shapes of resnet20's
-- first and last stages (batch 256) and ResNet-50's first (batch 32); train mode, split BN 8.
--   moco-lua tests/bench/bench_join.lua      (best of 5 rounds of 20 calls each)
local F = moco._nn
for _, shp in ipairs{ {256, 16, 28, 28}, {256, 64, 7, 7}, {32, 256, 56, 56} } do
  local x, r, out = moco.randn(shp), moco.randn(shp), moco.randn(shp)
  local w, b, rm, rv = moco.randn{shp[2]}, moco.randn{shp[2]}, moco.zeros{shp[2]}, moco.ones{shp[2]}
  local function sep() F.batchnorm_forward(x, w, b, rm, rv, true, 0.1, 1e-5, 8, out); F.add_relu_forward(out, r, out) end
  local function joined() F.batchnorm_forward(x, w, b, rm, rv, true, 0.1, 1e-5, 8, out, false, r) end
  local best = {}
  for rep = 1, 5 do
    for name, f in pairs{ separate = sep, joined = joined } do
      local t0 = moco.time(); for i = 1, 20 do f() end; local t = (moco.time() - t0) / 20
      best[name] = math.min(best[name] or 1e9, t)
    end
  end
  print(string.format("%-16s separate %.3f ms, joined %.3f ms (%.0f%% saved)", table.concat(shp, "x"), best.separate * 1e3, best.joined * 1e3, 100 * (1 - best.joined / best.separate)))
end
