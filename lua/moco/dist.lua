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
--
-- Recipes (moco.pretrain, moco.lincls, recipes/knn.lua) start with dist.start(opts): MPI
-- under mpirun, the official launcher flags (dist.OPTIONS) checked, and every rank but 0
-- silenced, as main_moco.py silences print on the other GPUs.  Set-up that can fail runs
-- in dist.agreed(fn): every rank runs it, the ranks agree on the outcome, and a failure
-- ends every rank with one message instead of leaving the others waiting.
local moco = require "moco"

local D = moco._dist
local dist = {}

local started = false

function dist.init()
  if not started then
    D.init()
    started = true
    local n = D.size()
    if n > 1 or dist.launched_size() > 1 or os.getenv("OMPI_COMM_WORLD_SIZE") then
      -- Ranks x threads must not oversubscribe the cores: the ranks on this machine share
      -- its cores (Open MPI tells how many ranks run here), and a rank runs on the cores
      -- mpirun bound it to (its affinity).
      local here = tonumber(os.getenv("OMPI_COMM_WORLD_LOCAL_SIZE") or os.getenv("MPI_LOCALNRANKS") or "") or n
      local bound = moco.data and moco.data.cpu_count and moco.data.cpu_count() or 1
      local online = dist.online_cores() or bound
      local share = math.max(1, online // here)
      local per_rank = math.max(1, math.min(bound, share))
      if not os.getenv("MOCO_NUM_THREADS") then moco.set_num_threads(per_rank) end
      if bound < share and D.rank() == 0 then
        io.stderr:write(string.format("note: mpirun bound each rank to %d core(s), but this machine has %d for its %d "
                                      .. "rank(s): give mpirun --bind-to none (or --map-by ppr:%d:node:pe=%d) so that "
                                      .. "each rank runs %d threads\n", bound, online, here, here, share, share))
      end
    end
  end
  return D.rank(), D.size()
end

-- The machine's online cores (not this process's affinity), or nil when unknown.
function dist.online_cores()
  local f = io.open("/sys/devices/system/cpu/online", "r")
  if not f then return nil end
  local text = f:read("l") or ""
  f:close()
  local count = 0
  for part in text:gmatch("[^,]+") do
    local a, b = part:match("^%s*(%d+)%-(%d+)%s*$")
    if a then count = count + tonumber(b) - tonumber(a) + 1
    elseif part:match("^%s*%d+%s*$") then count = count + 1 end
  end
  return count > 0 and count or nil
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

-- The official launcher flags (main_moco.py's), accepted by every recipe; each maps onto
-- MPI as docs/distributed.md says.  local_only: settings of this invocation, never taken
-- from a checkpoint (a run resumes on another number of ranks).
dist.OPTIONS = {
  { "world-size", -1, "number of processes (the official: nodes, times GPUs with --multiprocessing-distributed); "
                      .. "mpirun -np starts them, and a different value here is an error", metavar = "N",
    local_only = true },
  { "rank", -1, "the official node rank: MPI numbers the ranks itself (ignored under mpirun)", metavar = "R",
    local_only = true },
  { "dist-url", "tcp://224.66.41.62:23456", "the official rendezvous address: mpirun connects the ranks (ignored)",
    metavar = "URL", local_only = true },
  { "dist-backend", "nccl", "the official backend (nccl, gloo, mpi): moco-lua always uses MPI", metavar = "NAME",
    local_only = true },
  { "multiprocessing-distributed", false, "the official one process per GPU: here mpirun starts one process per rank",
    local_only = true },
}

local silenced = false

-- Every rank but 0 prints nothing on stdout (print, the progress lines and bars), as the
-- official main_moco.py replaces print on the other GPUs; errors still reach stderr.
local function silence_other_ranks()
  if silenced or D.rank() == 0 then return end
  silenced = true
  _G.print = function() end
  require("moco.progress").set_silent(true)
end

-- Starts a recipe's processes: under an MPI launcher (or MOCO_DIST=mpi), MPI with one rank
-- per process and each rank's share of the cores as threads; the official flags in opts
-- (dist.OPTIONS) checked against what the launcher started.  Returns rank, size.  Without
-- a launcher, one process, and --world-size N > 1 or --multiprocessing-distributed is an
-- error that says how to start the ranks.
function dist.start(opts, what)
  opts = opts or {}
  what = what or "this recipe"
  local want = opts["world-size"] or -1
  local launched = dist.launched_size() > 1 or os.getenv("MOCO_DIST") == "mpi"
  if not launched then
    if want > 1 or opts["multiprocessing-distributed"] then
      local n = want > 1 and want or 2
      error(string.format("%s: moco-lua starts its processes with MPI: run it under mpirun (mpirun -np %d moco-lua "
                          .. "...), which sets the world size and the ranks (docs/distributed.md)",
                          want > 1 and ("--world-size " .. want) or "--multiprocessing-distributed", n), 0)
    end
    return dist.init()
  end
  local rank, size = dist.init()
  silence_other_ranks()
  if want > 0 and want ~= size then
    dist.fail_together(string.format("--world-size %d, but mpirun started %d rank%s: give mpirun -np %d, or leave "
                                      .. "--world-size out", want, size, size == 1 and "" or "s", want))
  end
  if rank == 0 and size > 1 then
    local notes = {}
    if (opts.rank or -1) >= 0 then notes[#notes + 1] = "--rank is ignored: MPI numbers the ranks (hostfile order)" end
    if opts["dist-url"] and opts["dist-url"] ~= dist.OPTIONS[3][2] then
      notes[#notes + 1] = "--dist-url is ignored: mpirun connects the ranks (--host / --hostfile)"
    end
    if opts["dist-backend"] and opts["dist-backend"] ~= "mpi" and opts["dist-backend"] ~= dist.OPTIONS[4][2] then
      notes[#notes + 1] = "--dist-backend " .. tostring(opts["dist-backend"]) .. " is ignored: the backend is MPI"
    end
    for _, n in ipairs(notes) do io.stderr:write("note: ", n, "\n") end
    io.stderr:write(string.format("note: %s on %d ranks (%s), %d thread%s each\n", what, size, D.backend(),
                                  moco.get_num_threads(), moco.get_num_threads() == 1 and "" or "s"))
  end
  return rank, size
end

-- The largest of every rank's integer v (a collective: every rank calls it); v itself with
-- one rank.
function dist.max_of(v)
  if D.size() == 1 then return v end
  local all = D.allgather(moco.tensor{ v })
  local m = v
  for i = 1, all:numel() do m = math.max(m, math.tointeger(all:get(i)) or all:get(i)) end
  return m
end

-- Raises message on this rank as an error that every rank raises at the same point (the
-- same options refused by all): rank 0 prints it, the others end quietly, and none aborts
-- the job.  Only for failures every rank meets together; any other error ends the job
-- through MPI_Abort (lua/main.c).
function dist.fail_together(message)
  if D.size() == 1 then error(message, 0) end
  D.mark_agreed_failure()
  error(D.rank() == 0 and message or "", 0)
end

-- Runs fn(...) on every rank and agrees on the outcome (a collective): its results when it
-- succeeded everywhere; else every rank raises, the lowest failing rank's message is
-- printed once (with its rank when that is not rank 0), and the job ends without a hang.
-- fn must not call collectives that a failing rank would skip.
function dist.agreed(fn, ...)
  local results = table.pack(pcall(fn, ...))
  if D.size() == 1 then
    if not results[1] then error(results[2], 0) end
    return table.unpack(results, 2, results.n)
  end
  local flags = D.allgather(moco.tensor{ results[1] and 0 or 1 })
  local first
  for r = 0, D.size() - 1 do
    if flags:get(r + 1) ~= 0 then first = r break end
  end
  if first == nil then return table.unpack(results, 2, results.n) end
  D.mark_agreed_failure()
  if D.rank() == first then
    local message = tostring(results[2])
    error(first == 0 and message or string.format("rank %d of %d: %s", first, D.size(), message), 0)
  end
  error("", 0)
end

-- A string from root on every rank (a collective).
function dist.broadcast_string(s, root)
  if D.size() == 1 then return s end
  root = root or 0
  local n = moco.tensor{ D.rank() == root and #s or 0 }
  D.bcast_(n, root)
  local len = math.tointeger(n:get(1))
  local t = moco.zeros{ math.max(len, 1) }
  if D.rank() == root then for i = 1, len do t:set(i, s:byte(i)) end end
  D.bcast_(t, root)
  local bytes = {}
  for i = 1, len do bytes[i] = string.char(math.tointeger(t:get(i))) end
  return table.concat(bytes)
end

-- This rank's contiguous share of n items for sharded work that is gathered afterwards
-- (feature extraction): first, count (1-based first index; count may be 0) and the padded
-- share every rank gathers, ceil(n / size).
function dist.share(n)
  local size, r = D.size(), D.rank()
  local per = (n + size - 1) // size
  local first = r * per + 1
  local count = math.max(0, math.min(n, first + per - 1) - first + 1)
  return first, count, per
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
