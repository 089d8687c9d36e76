-- tests/bench/bench_dist.lua: the MoCo step with one process or N ranks (mpirun), for
-- docs/distributed.md: images/s of the global batch.
--   moco-lua tests/bench/bench_dist.lua [ARCH [GLOBAL_BATCH [STEPS]]]
--   mpirun -np 2 moco-lua tests/bench/bench_dist.lua ...
-- resnet20 on 1x28x28 (the quickstart's first encoder) by default, K 4096, split BN 8 per rank on
-- one process... bn_splits = 8 / N per rank, so that every run is the same 1-process run.
local dist = moco.dist
local rank, size = dist.init()
local arch, global, steps = arg[1] or "resnet20", tonumber(arg[2] or 256), tonumber(arg[3] or 8)
local b = global // size
local model = moco.MoCo{ arch = arch, in_channels = arch == "resnet20" and 1 or 3, cifar_stem = arch ~= "resnet20",
                         dim = 128, K = 4096, m = 0.99, T = 0.2, mlp = true, bn_splits = 8 // size, lr = 0.06 }
local hw = arch == "resnet20" and 28 or 32
local ch = arch == "resnet20" and 1 or 3
local xq, xk = moco.randn{ global, ch, hw, hw }, moco.randn{ global, ch, hw, hw }
local lq, lk = dist.local_rows(xq), dist.local_rows(xk)
model:step(lq, lk)
model:step(lq, lk)
dist.barrier()
local best = math.huge
for _ = 1, steps do
  local t0 = moco.time()
  model:step(lq, lk)
  dist.barrier()
  best = math.min(best, moco.time() - t0)
end
if dist.is_main() then
  print(string.format("%s global batch %d: %d rank(s) x %d thread(s): %.1f images/s (best step %.3f s)", arch, global,
                      size, moco.get_num_threads(), global / best, best))
end
