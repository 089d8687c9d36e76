-- lua/moco/dist.lua: data-parallel training over MPI (moco.dist), on core/dist.h.
--
--   local dist = moco.dist
--   dist.init()              -> rank, size; starts MPI under mpirun (idempotent), and gives
--                               each rank its share of the machine's cores as threads
--   dist.rank(), dist.size(), dist.is_main(), dist.active()  (active: more than one rank)
--   dist.all_gather(t)       -> every rank's t stacked along dim 1, rank by rank
--   dist.all_reduce_sum_(t), dist.all_reduce_mean_(t), dist.broadcast_(t [, root = 0])
--   dist.barrier(), dist.abort(message)
--   dist.to_global(stacked, per_rank) / dist.local_rows(t_global)   (see "batch order")
--
-- Batch order.  DistributedSampler gives rank r the samples r, r + N, r + 2N, ... of the
-- epoch order, so the global batch of a step, in the order one process would see it, has
-- rank r's local row i at position g = i * N + r.  All-gathers come rank by rank
-- (r * B + i); to_global reorders such a stack into global order and local_rows takes this
-- rank's rows back out of a global tensor.
--
-- With one rank every function is the identity (or a no-op), so recipes call them
-- unconditionally.  See docs/distributed.md for how this maps onto the official DDP code.
local moco = require "moco"

local D = moco._dist
local dist = {}

local started = false

function dist.init()
  if not started then
    D.init()
    started = true
    local n = D.size()
    if n > 1 then
      -- Ranks x threads must not oversubscribe the cores: the ranks on this machine share
      -- its cores (Open MPI tells how many ranks run here).
      local here = tonumber(os.getenv("OMPI_COMM_WORLD_LOCAL_SIZE") or os.getenv("MPI_LOCALNRANKS") or "") or n
      local cores = moco.data and moco.data.cpu_count and moco.data.cpu_count() or 1
      local per_rank = math.max(1, cores // here)
      if not os.getenv("MOCO_NUM_THREADS") then moco.set_num_threads(per_rank) end
    end
  end
  return D.rank(), D.size()
end

-- The number of processes a launcher (mpirun, srun, hydra) started for this job, from its
-- environment, whether or not dist.init() ran; 1 outside a launcher.
function dist.launched_size()
  for _, name in ipairs{ "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS" } do
    local n = math.tointeger(tonumber(os.getenv(name) or ""))
    if n and n >= 1 then return n end
  end
  return 1
end

-- Raises one clean line when this process is one of several ranks: the recipes train on
-- one process (they would each read the whole dataset and write the same run directory);
-- moco.MoCo over ranks is the library-level API (docs/distributed.md).
function dist.refuse_ranks(what)
  local n = dist.launched_size()
  if n > 1 then
    error(string.format("%s runs on one process; this is one of %d ranks started by an MPI launcher. Data-parallel "
                        .. "training over ranks is the library API (moco.dist with moco.MoCo, docs/distributed.md); "
                        .. "the recipes do not shard their data or their run directory yet", what, n), 0)
  end
end

function dist.rank() return D.rank() end
function dist.size() return D.size() end
function dist.is_main() return D.rank() == 0 end
function dist.active() return D.size() > 1 end
function dist.backend() return D.backend() end

function dist.all_gather(t)
  if D.size() == 1 then return t end
  return D.allgather(t:clone())
end

function dist.all_reduce_sum_(t)
  if D.size() > 1 then D.allreduce_sum_(t) end
  return t
end

function dist.all_reduce_mean_(t)
  if D.size() > 1 then
    D.allreduce_sum_(t)
    t:scale_(1 / D.size())
  end
  return t
end

function dist.broadcast_(t, root)
  if D.size() > 1 then D.bcast_(t, root or 0) end
  return t
end

-- Numbers summed / averaged over the ranks (losses and accuracies for the logs).
function dist.mean_of(...)
  if D.size() == 1 then return ... end
  local t = moco.tensor{ ... }
  dist.all_reduce_mean_(t)
  local out = {}
  for i = 1, t:numel() do out[i] = t:get(i) end
  return table.unpack(out)
end

function dist.barrier()
  if D.size() > 1 then D.barrier() end
end

-- Ends every rank (MPI_Abort) after printing message on this one; with one rank, raises
-- the message as an error instead.
function dist.abort(message, code)
  if D.size() > 1 then
    io.stderr:write(string.format("moco-lua: rank %d of %d: %s\n", D.rank(), D.size(), tostring(message)))
    io.stderr:flush()
    D.abort(code or 1)
  end
  error(message, 0)
end

-- Index tensors for the reorderings, cached per (N, B).
local orders = {}
local function order(n, b)
  local key = n .. "x" .. b
  local o = orders[key]
  if not o then
    -- global position g = i * N + r  <-  stacked row r * B + i
    local to_global = moco.zeros{ n * b }
    for g = 0, n * b - 1 do
      local i, r = g // n, g % n
      to_global:set(g + 1, r * b + i)
    end
    o = { to_global = to_global, locals = {} }
    orders[key] = o
  end
  return o
end

-- stacked (N * B, ...) rank by rank  ->  (N * B, ...) in global order.
function dist.to_global(stacked, per_rank)
  local n = D.size()
  if n == 1 then return stacked end
  return moco._moco.gather_rows(stacked, order(n, per_rank).to_global)
end

-- This rank's rows i * N + r of a global (N * B, ...) tensor  ->  (B, ...).
function dist.local_rows(global)
  local n = D.size()
  if n == 1 then return global end
  local b = global:size(1) // n
  local o = order(n, b)
  local r = D.rank()
  local idx = o.locals[r]
  if not idx then
    idx = moco.zeros{ b }
    for i = 0, b - 1 do idx:set(i + 1, i * n + r) end
    o.locals[r] = idx
  end
  return moco._moco.gather_rows(global, idx)
end

-- This rank's positions p = r + N * j (j < B) of a shuffled global batch: the rows
-- global[perm[p]] (perm a 0-based float tensor of N * B entries).
function dist.shuffled_slice(global, perm)
  local n, r = D.size(), D.rank()
  local b = global:size(1) // n
  local idx = moco.zeros{ b }
  for j = 0, b - 1 do idx:set(j + 1, perm:get(r + n * j + 1)) end
  return moco._moco.gather_rows(global, idx)
end

return dist
