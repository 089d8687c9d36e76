-- tests/lua/test_moco.lua: moco.MoCo (lua/moco/builder.lua) against the official MoCo, and
-- the primitives of moco._moco (lua/l_moco.c, core/moco.c).
--
-- The reference: tests/make_fixtures_moco.py runs the official moco/builder.py MoCo (re-typed,
-- one process, the CIFAR-10 demo's single-GPU shuffle with moco-lua's own permutations, the
-- demo's SplitBatchNorm and symmetric loss) for two SGD steps of main_moco.py on three configs;
-- the CASES table below must match its CASES.  Here the same model loads the same initial
-- query-encoder state and queue (encoder_k = copy of encoder_q's parameters, its batch-norm
-- buffers at their defaults on both sides), runs model:step twice and compares.
--
-- Tolerances (each comparison prints its max abs diff and the diff relative to the
-- reference's max |value|; float32 sums in other orders than PyTorch's differ by ~1e-6
-- relative per layer, a wrong formula by ~1):
--   permutations, queue_ptr      exact
--   loss                         1e-5 relative;  acc1, acc5: exact (percent of 8 rows)
--   logits (already / T)         1e-4 * max |reference|
--   queue (unit keys)            1e-4 absolute
--   encoder weights after 2 steps   per tensor 1e-5 * max |reference|, and the change from the
--                                   initial weights within 2e-3 * max |reference change| plus
--                                   4 float32 ulps of max |weight| (encoder_k moves by 1% of
--                                   encoder_q's change: near the float32 resolution of its weights)
--   batch-norm running statistics   per tensor 1e-4 * max |reference|
--   num_batches_tracked is not compared: the demo's SplitBatchNorm calls F.batch_norm
--   directly and so never counts (its value stays 0); moco-lua counts as nn.BatchNorm2d.
--   momentum update              exact (float32 rounding of k*m + q*(1-m) emulated in Lua)
--   InfoNCE gradient             central finite differences of the float32 loss, eps 1e-2:
--                                within 1e-3 * max |gradient|
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local C = moco._moco

local F = require "moco_fixture"
local load, maxabs, report, compare, compare_abs = F.load, F.maxabs, F.report, F.compare, F.compare_abs
local read_keys, build, compare_encoder = F.read_keys, F.build, F.compare_encoder
local cross_entropy0 = F.cross_entropy0
local BATCH = F.BATCH

-- The official initialisation from a saved query-encoder state and queue.
local function load_initial(model, case, keys)
  F.load_encoder_q(model, case, keys)
  model.encoder_k._flat_params:copy(model.encoder_q._flat_params) -- param_k.data.copy_(param_q.data)
  model.queue:copy(load(case, "queue0"))
  model.queue_ptr = 0
end

-- name, options of moco.MoCo (as make_fixtures_moco.py's CASES)
local CASES = {
  { "v1", { dim = 16, K = 32, m = 0.99, T = 0.07, mlp = false, bn_splits = 2, symmetric = false,
            in_channels = 1, width = 0.25, seed = 0 } },
  { "v2", { dim = 16, K = 32, m = 0.99, T = 0.1, mlp = true, bn_splits = 2, symmetric = false,
            in_channels = 3, width = 0.25, seed = 11 } },
  { "sym", { dim = 16, K = 32, m = 0.99, T = 0.1, mlp = true, bn_splits = 2, symmetric = true,
             in_channels = 3, width = 0.25, seed = 5 } },
}

local tests = {}

for _, case in ipairs(CASES) do
  local name, opts = case[1], case[2]
  tests["official_" .. name] = function()
    print(name .. ":")
    local keys = read_keys(name)
    -- The permutations: PCG32 stream 3 of the seed, as builder.lua draws them.
    local perms = load(name, "perms")
    local g = moco.Generator(opts.seed, 3)
    local exact = true
    for t = 1, perms:size(1) do
      local perm, inverse = C.shuffle_indices(BATCH, g)
      for i = 1, BATCH do
        exact = exact and perm:get(i) == perms:get(t, i) and inverse:get(perm:get(i) + 1) == i - 1
      end
    end
    check.ok(name .. " permutations", exact,
             "moco.Generator's permutations differ from the script's PCG32 port")

    local model = build(opts)
    load_initial(model, name, keys)
    model.keep_logits = true
    local im_q, im_k = load(name, "im_q"), load(name, "im_k")
    local metrics, want_logits = load(name, "metrics"), load(name, "logits")
    local terms = opts.symmetric and 2 or 1
    for step = 1, 2 do
      local loss, acc1, acc5 = model:step(im_q:select(1, step), im_k:select(1, step))
      local label = string.format("%s step %d", name, step)
      report(label .. " loss", math.abs(loss - metrics:get(step, 1)), math.abs(metrics:get(step, 1)), 1e-5)
      check.eq(label .. " acc1", acc1, metrics:get(step, 2))
      check.eq(label .. " acc5", acc5, metrics:get(step, 3))
      check.eq(label .. " logits kept", #model.last_logits, terms)
      local own_loss = 0
      for t = 1, terms do
        local got = model.last_logits[t]
        local want = want_logits:select(1, (step - 1) * terms + t)
        compare(string.format("%s logits (term %d)", label, t), got, want, 1e-4)
        own_loss = own_loss + cross_entropy0(got)
      end
      check.near(label .. " loss = CE of the kept logits", loss, own_loss, 1e-5 * math.abs(own_loss))
    end
    local init = load(name, "init_q")
    compare_encoder(name .. " encoder_q", model.encoder_q, load(name, "final_q"), init, keys)
    compare_encoder(name .. " encoder_k", model.encoder_k, load(name, "final_k"), init, keys)
    compare_abs(name .. " queue", model.queue, load(name, "queue"), 1e-4)
    check.eq(name .. " queue_ptr", model.queue_ptr, math.tointeger(load(name, "queue_ptr"):get(1)))
  end
end

-- K must be a multiple of the keys enqueued per step (the official assert), said up front.
function tests.k_not_multiple_of_batch()
  local x = moco.randn({ BATCH, 1, 8, 8 }, moco.Generator(1))
  local m = build({ dim = 8, K = 30, bn_splits = 2, in_channels = 1, width = 0.25 })
  check.raises("K = 30, batch 8", "K = 30 is not a multiple of the 8 keys enqueued per step", function()
    m:step(x, x)
  end)
  local s = build({ dim = 8, K = 24, bn_splits = 2, in_channels = 1, width = 0.25, symmetric = true })
  check.raises("K = 24, batch 8, symmetric", "K = 24 is not a multiple of the 16 keys enqueued per step",
               function() s:step(x, x) end)
  check.eq("no step taken", m.queue_ptr + s.queue_ptr + m.steps + s.steps, 0)
  local queue = moco.zeros{ 8, 30 }
  check.raises("queue_enqueue K = 30, N = 8", "K = 30 must be a multiple", function()
    C.queue_enqueue(queue, moco.zeros{ 8, 8 }, 0)
  end)
  check.raises("queue_enqueue pointer 3", "pointer 3 is not a multiple of 8", function()
    C.queue_enqueue(moco.zeros{ 8, 32 }, moco.zeros{ 8, 8 }, 3)
  end)
end

-- theta_k <- theta_k * m + theta_q * (1 - m), with PyTorch's three float32 roundings.
function tests.momentum_update()
  local m = 0.9
  local model = build({ dim = 8, K = 16, m = m, bn_splits = 1, in_channels = 1, width = 0.25, mlp = true })
  local pk, pq = model.encoder_k._flat_params, model.encoder_q._flat_params
  pq:copy(moco.randn(pq:shape(), moco.Generator(2)))
  pk:copy(moco.randn(pk:shape(), moco.Generator(3)))
  local k0, q0 = pk:clone(), pq:clone()
  local rm0 = model.encoder_k.bn1.running_mean:clone()
  model:momentum_update()
  local f32 = check.f32
  local mk, mq = f32(m), f32(1 - m)
  local worst, n = 0, pk:numel()
  for i = 1, n do
    local want = f32(f32(k0:get(i) * mk) + f32(q0:get(i) * mq))
    worst = math.max(worst, math.abs(pk:get(i) - want))
  end
  print(string.format("  momentum update over %d parameters: max abs diff %.2e (exact expected)", n, worst))
  check.eq("momentum update exact", worst, 0)
  check.eq("query parameters unchanged", maxabs(pq - q0), 0)
  check.eq("key batch-norm buffers untouched", maxabs(model.encoder_k.bn1.running_mean - rm0), 0)
  -- the parameter views see the update (they are views into the flat block)
  local last_bias = model.encoder_k.fc:get(3).bias -- fc.2.bias: the last parameter
  check.eq("views follow the flat block", last_bias:get(last_bias:numel()), pk:get(n))
end

-- With one batch-norm group the shuffle only permutes rows, so the loss and the keys are
-- those without it (up to summation order); with two groups it changes the statistics.
function tests.shuffle_on_off()
  local g = moco.Generator(9)
  local im_q, im_k = moco.randn({ BATCH, 3, 8, 8 }, g), moco.randn({ BATCH, 3, 8, 8 }, g)
  local function run(splits, shuffle)
    local model = build({ dim = 8, K = 16, bn_splits = splits, in_channels = 3, width = 0.25,
                          shuffle = shuffle, seed = 4 })
    local loss = model:step(im_q, im_k)
    return loss, model.queue
  end
  local l_on, q_on = run(1, true)
  local l_off, q_off = run(1, false)
  report("bn_splits 1: loss shuffle on vs off", math.abs(l_on - l_off), math.abs(l_off), 1e-5)
  compare_abs("bn_splits 1: keys shuffle on vs off", q_on, q_off, 1e-5)
  local l2_on = run(2, true)
  local l2_off = run(2, false)
  print(string.format("  bn_splits 2: loss shuffle on %.6f, off %.6f", l2_on, l2_off))
  check.ok("bn_splits 2: the shuffle changes the loss", math.abs(l2_on - l2_off) > 1e-4,
           "losses equal: the shuffle had no effect on the split statistics")
end

-- The queue: columns are keys, the pointer advances by N and wraps to 0 at K.
function tests.queue_enqueue_wraps()
  local dim, K, N = 3, 8, 4
  local queue = moco.zeros{ dim, K }
  local function keys(base)
    local t = moco.zeros{ N, dim }
    for i = 1, N do for d = 1, dim do t:set(i, d, base + 10 * i + d) end end
    return t
  end
  local ptr = C.queue_enqueue(queue, keys(100), 0)
  check.eq("pointer 0 -> 4", ptr, 4)
  ptr = C.queue_enqueue(queue, keys(200), ptr)
  check.eq("pointer 4 -> 0 (wraps)", ptr, 0)
  ptr = C.queue_enqueue(queue, keys(300), ptr)
  check.eq("pointer 0 -> 4 again", ptr, 4)
  local ok = true
  for i = 1, N do
    for d = 1, dim do
      ok = ok and queue:get(d, i) == 300 + 10 * i + d      -- overwritten by the third batch
                 and queue:get(d, N + i) == 200 + 10 * i + d -- the second batch
    end
  end
  check.ok("queue[:, ptr:ptr+N] = keys^T, oldest overwritten", ok, "queue columns hold the wrong keys")
  -- through the model: 16 keys per symmetric step, K = 32: 0 -> 16 -> 0
  local model = build({ dim = 8, K = 32, bn_splits = 2, in_channels = 3, width = 0.25, symmetric = true })
  local g = moco.Generator(12)
  local im1, im2 = moco.randn({ BATCH, 3, 8, 8 }, g), moco.randn({ BATCH, 3, 8, 8 }, g)
  model:step(im1, im2)
  check.eq("model pointer after one symmetric step", model.queue_ptr, 16)
  model:step(im1, im2)
  check.eq("model pointer wraps after two", model.queue_ptr, 0)
end

-- The initial queue: columns of unit length (the official normalize(randn(dim, K), dim=0)).
function tests.queue_init_unit_columns()
  local model = build({ dim = 8, K = 16, bn_splits = 1, in_channels = 1, width = 0.25 })
  local worst = 0
  for j = 1, 16 do
    local ss = 0
    for d = 1, 8 do ss = ss + model.queue:get(d, j) ^ 2 end
    worst = math.max(worst, math.abs(math.sqrt(ss) - 1))
  end
  check.ok("queue columns have unit norm", worst < 1e-6, string.format("max |norm - 1| = %.3g", worst))
end

-- d loss / d q of core/moco.c's InfoNCE against central finite differences of its loss, and
-- the loss against a double-precision evaluation of its definition.
function tests.infonce_gradient()
  local N, dim, K, T = 3, 4, 5, 0.5
  local g = moco.Generator(21)
  local q, k, queue = moco.randn({ N, dim }, g), moco.randn({ N, dim }, g), moco.randn({ dim, K }, g)
  local loss, _, _, dq = C.infonce(q, k, queue, T)
  -- definition: logits = [q.k, q @ queue] / T; mean CE with label 0
  local logits = moco.zeros{ N, K + 1 }
  for i = 1, N do
    local pos = 0
    for d = 1, dim do pos = pos + q:get(i, d) * k:get(i, d) end
    logits:set(i, 1, pos / T)
    for j = 1, K do
      local s = 0
      for d = 1, dim do s = s + q:get(i, d) * queue:get(d, j) end
      logits:set(i, j + 1, s / T)
    end
  end
  check.near("infonce loss vs definition", loss, cross_entropy0(logits), 1e-5)
  local kept = moco.zeros{ N, K + 1 }
  C.infonce(q, k, queue, T, false, kept)
  compare("infonce logits buffer (no gradient)", kept, logits, 1e-6)
  local fd = check.finite_differences(q, function() return (C.infonce(q, k, queue, T, false)) end, 1e-2)
  report("infonce dq vs finite differences", maxabs(fd - dq), maxabs(dq), 1e-3)
end

check.run(tests)
