-- tests/bench/bench_layers.lua: every distinct convolution of ResNet-50 (224x224, batch 32)
-- timed alone in its three passes (forward, input gradient, weight gradient), with its count
-- in the network, and the sums over the network: which layers the r50-224-b32 step spends
-- its convolution time on.  Outputs are preallocated, as the network's arena does (a fresh
-- 100 MB tensor per call would time the kernel's page zeroing instead).
--   moco-lua tests/bench/bench_layers.lua      (best of 3 calls per pass)
local F = moco._nn
local N = 32
-- (C, OC, k, stride, H, count): input channels, output channels, kernel, stride, input size,
-- and how many times the network has it
local layers = {
  {3, 64, 7, 2, 224, 1},
  {64, 64, 1, 1, 56, 1}, {64, 64, 3, 1, 56, 3}, {64, 256, 1, 1, 56, 4}, {256, 64, 1, 1, 56, 2},
  {256, 128, 1, 1, 56, 1}, {128, 128, 3, 2, 56, 1}, {128, 512, 1, 1, 28, 4}, {256, 512, 1, 2, 56, 1},
  {512, 128, 1, 1, 28, 3}, {128, 128, 3, 1, 28, 3},
  {512, 256, 1, 1, 28, 1}, {256, 256, 3, 2, 28, 1}, {256, 1024, 1, 1, 14, 6}, {512, 1024, 1, 2, 28, 1},
  {1024, 256, 1, 1, 14, 5}, {256, 256, 3, 1, 14, 5},
  {1024, 512, 1, 1, 14, 1}, {512, 512, 3, 2, 14, 1}, {512, 2048, 1, 1, 7, 3}, {1024, 2048, 1, 2, 14, 1},
  {2048, 512, 1, 1, 7, 2}, {512, 512, 3, 1, 7, 2},
}
local tot = {0, 0, 0}
local function best(f) local b = 1e9; for i = 1, 3 do local t0 = moco.time(); f(); b = math.min(b, moco.time() - t0) end; return b end
for _, l in ipairs(layers) do
  local C, OC, k, s, H, count = table.unpack(l)
  local pad = k // 2
  local x = moco.randn{N, C, H, H}
  local w = moco.randn{OC, C, k, k}
  local y = F.conv2d_forward(x, w, nil, s, pad)
  local gy = moco.randn(y:shape())
  local gw = moco.zeros{OC, C, k, k}
  local OH = y:size(3)
  local flops = 2 * N * OC * OH * OH * C * k * k
  local tf = best(function() F.conv2d_forward(x, w, nil, s, pad, y) end)
  local gx = moco.zeros(x:shape())
  local ti = best(function() F.conv2d_backward_input(gy, w, x, s, pad, gx) end)
  local tp = best(function() F.conv2d_backward_params(gy, x, gw, nil, s, pad) end)
  tot[1], tot[2], tot[3] = tot[1] + tf * count, tot[2] + ti * count, tot[3] + tp * count
  print(string.format("%4d->%4d k%d s%d %3dpx x%d: fwd %6.1f ms %4.0f GF/s  bwd-in %6.1f ms %4.0f  bwd-w %6.1f ms %4.0f",
    C, OC, k, s, H, count, tf*1e3, flops/tf/1e9, ti*1e3, flops/ti/1e9, tp*1e3, flops/tp/1e9))
end
print(string.format("sum over the net: fwd %.0f ms, bwd-in %.0f ms, bwd-w %.0f ms", tot[1]*1e3, tot[2]*1e3, tot[3]*1e3))
