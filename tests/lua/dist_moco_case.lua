-- tests/lua/dist_moco_case.lua: one MoCo training run for tests/sh/test_dist.sh, either on one
-- process (the reference) or on N ranks under mpirun, on the same global batches.
--   moco-lua tests/lua/dist_moco_case.lua OUT_PREFIX [symmetric | loader]
-- One process: batch GLOBAL, bn_splits SPLITS * 2.  Under mpirun with N ranks (N = 2 here):
-- each rank takes the global batch's rows i * N + r (DistributedSampler's order), batch
-- GLOBAL / N, bn_splits SPLITS (per rank).  docs/distributed.md says why the two are the same
-- run.  Writes OUT_PREFIX.losses.npy (steps, 3: loss, acc1, acc5) and, per rank,
-- OUT_PREFIX.rank<r>.queue.npy / .params.npy / .queues.npy (the queue after every step)
-- after STEPS steps.
local dist = moco.dist
local prefix = arg[1] or error("usage: dist_moco_case.lua OUT_PREFIX [symmetric]")
local symmetric = arg[2] == "symmetric"
-- "loader": the batches come from a data.Loader over Fashion-MNIST images (augmented in its
-- threads), each rank's sharded (shard = {rank, count}: DistributedSampler's order), the
-- 1-process run's not, instead of random tensors cut with dist.local_rows.
local from_loader = arg[2] == "loader"
local rank, size = dist.init()
local GLOBAL, SPLITS, STEPS = 16, 2, 10
local local_batch = GLOBAL // size
local model = moco.MoCo{ arch = "resnet20", width = 0.25, in_channels = 1, dim = 16, K = 64, m = 0.99, T = 0.2,
                         mlp = true, bn_splits = size == 1 and SPLITS * 2 or SPLITS, symmetric = symmetric,
                         lr = 0.05, seed = 3 }
local losses = moco.zeros{ STEPS, 3 }
local queues = moco.zeros{ STEPS, 16 * 64 }
local next_batch
if from_loader then
  local T = moco.transforms
  local ds = moco.data.Subset(moco.data.FashionMNIST{ train = true }, GLOBAL * STEPS // 2) -- 2 epochs
  local aug = T.Compose{ T.RandomResizedCrop(8, { scale = { 0.2, 1.0 } }), T.RandomHorizontalFlip(), T.ToTensor() }
  local loader = moco.data.Loader(ds, { batch_size = local_batch, transform = T.TwoCrops(aug), workers = 1, seed = 4,
                                        shuffle = true, drop_last = true,
                                        shard = size > 1 and { rank = rank, count = size } or nil })
  local epoch, it = -1, nil
  next_batch = function()
    local q, k = nil, nil
    if it then q, k = it() end
    if q == nil then
      epoch = epoch + 1
      loader:set_epoch(epoch)
      it = loader:iter()
      q, k = it()
    end
    return q, k
  end
end
for step = 1, STEPS do
  local loss, acc1, acc5
  if from_loader then
    local q, k = next_batch()
    loss, acc1, acc5 = model:step(q, k)
  else
    local gen = moco.Generator(100, step)
    local xq, xk = moco.randn({ GLOBAL, 1, 8, 8 }, gen), moco.randn({ GLOBAL, 1, 8, 8 }, gen)
    loss, acc1, acc5 = model:step(dist.local_rows(xq), dist.local_rows(xk))
  end
  losses:set(step, 1, loss); losses:set(step, 2, acc1); losses:set(step, 3, acc5)
  queues:narrow(1, step, 1):copy(model.queue:reshape(1, 16 * 64))
end
if rank == 0 then losses:save_npy(prefix .. ".losses.npy") end
model.queue:save_npy(string.format("%s.rank%d.queue.npy", prefix, rank))
queues:save_npy(string.format("%s.rank%d.queues.npy", prefix, rank))
model.encoder_q._flat_params:save_npy(string.format("%s.rank%d.params.npy", prefix, rank))
model.encoder_k._flat_params:save_npy(string.format("%s.rank%d.params_k.npy", prefix, rank))
