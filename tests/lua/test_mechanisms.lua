-- tests/lua/test_mechanisms.lua: the MoCo paper's two baselines in moco.MoCo
-- (lua/moco/builder.lua: mechanism = "end_to_end" | "memory_bank") and their primitives
-- (lua/l_moco.c, core/moco.c), against PyTorch references written by
-- tests/make_fixtures_moco.py (E2E_CASE, BANK_CASE: the options below must match).
--
-- The reference runs two SGD steps of main_moco.py; here the same model loads the same
-- initial encoder_q (and bank), runs model:step twice and compares, with the tolerances of
-- test_moco.lua (loss 1e-5 relative, acc exact, logits 1e-4 of max |reference|, weights
-- 1e-5, their change 2e-3, running statistics 1e-4; end-to-end: see E2E_TOL) and:
--   gradients of each step (before SGD)   per tensor 1e-4 * max |reference gradient|
--   permutations and memory-bank draws    exact (the PCG32 streams are ported bit for bit)
--   memory bank after two steps           1e-5 absolute (unit rows)
-- Also: finite differences of both losses against their gradients, the bank's update rule
-- with float32 rounding emulated, the bank's initialisation, exact checkpoint/resume of each
-- mechanism, the loader's sample indices, and the errors for bad configurations.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local F = require "moco_fixture"
local C = moco._moco

local load, maxabs, report, compare, compare_abs = F.load, F.maxabs, F.report, F.compare, F.compare_abs
local read_keys, build, compare_encoder, cross_entropy0 = F.read_keys, F.build, F.compare_encoder, F.cross_entropy0
local BATCH = F.BATCH

local E2E = { mechanism = "end_to_end", dim = 16, T = 0.1, mlp = false, bn_splits = 2, shuffle = true,
              in_channels = 3, width = 0.25, seed = 3 }
-- End-to-end takes the loss's gradient through both branches of the same encoder, and float32
-- noise grows faster over its two steps (measured: loss 9.6e-6, weights 2.2e-5 relative,
-- their change 4.6e-5): its loss and weights get 5e-5 instead of 1e-5.
local E2E_TOL = { loss = 5e-5, grads = 1e-4, weights = 5e-5 }
local BANK = { mechanism = "memory_bank", dim = 16, K = 32, T = 0.1, mlp = true, bn_splits = 2, bank_size = 24,
               bank_m = 0.5, in_channels = 1, width = 0.25, seed = 7 }

-- The gradients of encoder_q's parameters against a row of the reference's grads (P): the
-- parameters in sorted key order, one check per step, printing the worst tensor.
local function compare_grads(label, encoder, want_row, keys, tol)
  local grads = {}
  for _, p in ipairs(encoder:named_parameters()) do grads[p.name] = p.grad end
  local offset, worst, worst_key, bad = 1, -1, nil, {}
  for _, e in ipairs(keys) do
    if F.is_parameter(e.key) then
      local got = grads[e.key]
      local want = want_row:narrow(1, offset, e.numel)
      offset = offset + e.numel
      local d, scale = maxabs(F.flat(got) - want), maxabs(want)
      local rel = scale > 0 and d / scale or d
      if rel > worst then worst, worst_key = rel, e.key end
      if d > tol * scale then bad[#bad + 1] = string.format("%s (%.2e rel)", e.key, rel) end
    end
  end
  check.eq(label .. " gradient entries", offset - 1, want_row:numel())
  print(string.format("  %-44s worst %s: rel %.1e (tol %.0e)", label .. " gradients", tostring(worst_key), worst, tol))
  check.ok(label .. " gradients", #bad == 0, "over tolerance: " .. table.concat(bad, ", "))
end

-- acc@k of logits (N, L) with the positive of row i in column target(i): the rows with
-- fewer than k logits strictly greater (moco-lua's rule), and with ties counted against
-- the row (topk may rank a tie either side): the reference's topk lies between them.
local function accuracy_bounds(logits, target, k)
  local n, l = logits:size(1), logits:size(2)
  local strict, pessimistic = 0, 0
  for i = 1, n do
    local pos, greater, ties = logits:get(i, target(i)), 0, 0
    for j = 1, l do
      local v = logits:get(i, j)
      if v > pos then greater = greater + 1 elseif v == pos and j ~= target(i) then ties = ties + 1 end
    end
    if greater < k then strict = strict + 1 end
    if greater + ties < k then pessimistic = pessimistic + 1 end
  end
  return 100 * strict / n, 100 * pessimistic / n
end

-- tol: {loss =, grads =} (relative).
local function check_step(label, model, step, metrics, want_logits, grads, keys, target, tol)
  return function(loss, acc1, acc5)
    report(label .. " loss", math.abs(loss - metrics:get(step, 1)), math.abs(metrics:get(step, 1)), tol.loss)
    check.eq(label .. " logits kept", #model.last_logits, 1)
    local got, want = model.last_logits[1], want_logits:select(1, step)
    compare(label .. " logits", got, want, 1e-4)
    -- accuracies: moco-lua's rule on the reference's logits, exactly, and the reference's
    -- own topk between the bounds (the bank's draws can repeat the positive's row: ties)
    for i, k in ipairs{ 1, 5 } do
      local strict, pessimistic = accuracy_bounds(want, target, k)
      local mine, ref = i == 1 and acc1 or acc5, metrics:get(step, 1 + i)
      check.eq(string.format("%s acc%d (ties in the query's favour)", label, k), mine, strict)
      check.ok(string.format("%s reference acc%d within the tie bounds", label, k), ref <= strict and ref >= pessimistic,
               string.format("reference %g outside [%g, %g]", ref, pessimistic, strict))
    end
    check.near(label .. " loss = CE of the kept logits", loss, cross_entropy0(got, target), 1e-5 * math.abs(loss))
    compare_grads(label, model.encoder_q, grads:select(1, step), keys, tol.grads)
  end
end

local function first(_) return 1 end
local function diagonal(i) return i end

local tests = {}

function tests.official_end_to_end()
  local name = "e2e"
  local keys = read_keys(name)
  local model = build(E2E)
  F.load_encoder_q(model, name, keys)
  model.keep_logits = true
  -- the permutations of both steps: stream 3 of the seed
  local perms, g, exact = load(name, "perms"), moco.Generator(E2E.seed, 3), true
  for t = 1, perms:size(1) do
    local perm = C.shuffle_indices(BATCH, g)
    for i = 1, BATCH do exact = exact and perm:get(i) == perms:get(t, i) end
  end
  check.ok("e2e permutations", exact, "moco.Generator's permutations differ from the script's PCG32 port")
  local im_q, im_k = load(name, "im_q"), load(name, "im_k")
  local metrics, logits, grads = load(name, "metrics"), load(name, "logits"), load(name, "grads")
  for step = 1, 2 do
    local label = string.format("e2e step %d", step)
    check_step(label, model, step, metrics, logits, grads, keys, diagonal, E2E_TOL)(
      model:step(im_q:select(1, step), im_k:select(1, step)))
    check.eq(label .. " logits are (N, N)", table.concat(model.last_logits[1]:shape(), "x"), BATCH .. "x" .. BATCH)
  end
  -- both forwards updated the running statistics, in order (shared with the key branch)
  compare_encoder("e2e encoder_q", model.encoder_q, load(name, "final_q"), load(name, "init_q"), keys,
                  { weights = E2E_TOL.weights })
  check.eq("e2e: no key encoder, no queue", tostring(model.encoder_k) .. " " .. tostring(model.queue), "nil nil")
end

function tests.official_memory_bank()
  local name = "bank"
  local keys = read_keys(name)
  local model = build(BANK)
  F.load_encoder_q(model, name, keys)
  model.memory:copy(load(name, "memory0"))
  model.keep_logits = true
  -- the draws: positives in column 0, then K uniform rows from stream 3 of the seed
  local indices, draws = load(name, "indices"), load(name, "draws")
  local g = moco.Generator(BANK.seed, 3)
  for step = 1, 2 do
    local index = C.bank_sample(indices:select(1, step), BANK.K, BANK.bank_size, g)
    check.eq(string.format("bank step %d draws (exact)", step), maxabs(index - draws:select(1, step)), 0)
  end
  local im_q, im_k = load(name, "im_q"), load(name, "im_k")
  local metrics, logits, grads = load(name, "metrics"), load(name, "logits"), load(name, "grads")
  for step = 1, 2 do
    local label = string.format("bank step %d", step)
    check_step(label, model, step, metrics, logits, grads, keys, first, { loss = 1e-5, grads = 1e-4 })(
      model:step(im_q:select(1, step), im_k:select(1, step), indices:select(1, step)))
  end
  compare_encoder("bank encoder_q", model.encoder_q, load(name, "final_q"), load(name, "init_q"), keys)
  compare_abs("bank memory after two steps", model.memory, load(name, "memory"), 1e-5)
end

-- The update rule, against Lua arithmetic with float32 rounding after each operation (as
-- PyTorch's mul_, mul and add_), the norm in double: rows of the batch only, the rest
-- untouched, every new row computed from the old bank (a repeated index: the last wins).
function tests.bank_update_rule()
  local M, dim, m = 6, 5, 0.5
  local g = moco.Generator(31)
  local bank, q = moco.randn({ M, dim }, g), moco.randn({ 4, dim }, g)
  local index = moco.tensor{ 4, 1, 4, 0 } -- row 4 twice
  local old = bank:clone()
  C.bank_update(bank, q, index, m)
  local f32 = check.f32
  local function expected(i) -- the new row for q's row i (1-based)
    local row, ss = {}, 0
    local r = math.tointeger(index:get(i)) + 1
    for d = 1, dim do
      row[d] = f32(f32(old:get(r, d) * f32(m)) + f32(q:get(i, d) * f32(1 - m)))
      ss = ss + row[d] * row[d]
    end
    local norm = f32(math.sqrt(ss))
    for d = 1, dim do row[d] = f32(row[d] / norm) end
    return r, row
  end
  local want = old:clone()
  for i = 1, 4 do
    local r, row = expected(i)
    for d = 1, dim do want:set(r, d, row[d]) end
  end
  local d = maxabs(bank - want)
  print(string.format("  bank update vs float32 formula: max abs diff %.2e (tol 1e-7)", d))
  check.ok("bank update rule", d <= 1e-7, string.format("max abs diff %.3g", d))
  local untouched = true
  for _, r in ipairs{ 3, 4, 6 } do
    for c = 1, dim do untouched = untouched and bank:get(r, c) == old:get(r, c) end
  end
  check.ok("bank rows outside the batch untouched", untouched, "rows 2, 3, 5 changed")
  local _, row3 = expected(3) -- the repeated index takes q's third row, from the old value
  check.ok("repeated index: the last row wins", math.abs(bank:get(5, 1) - row3[1]) <= 1e-7,
           string.format("bank[4][0] = %g, expected %g", bank:get(5, 1), row3[1]))
  -- m = 0: the bank row becomes normalize(q)
  local b2 = moco.randn({ 3, dim }, g)
  local q2 = moco.randn({ 1, dim }, g)
  C.bank_update(b2, q2, moco.tensor{ 2 }, 0)
  local n2 = 0
  for c = 1, dim do n2 = n2 + q2:get(1, c) ^ 2 end
  local worst = 0
  for c = 1, dim do worst = math.max(worst, math.abs(b2:get(3, c) - q2:get(1, c) / math.sqrt(n2))) end
  check.ok("m = 0 stores normalize(q)", worst <= 1e-6, string.format("max abs diff %.3g", worst))
  check.raises("index outside the bank", "not a row in [0, 3)", C.bank_update, b2, q2, moco.tensor{ 3 }, 0.5)
  check.raises("momentum outside [0, 1]", "momentum 1.5 is not in [0, 1]", C.bank_update, b2, q2, moco.tensor{ 0 }, 1.5)
end

-- lemniscate's initial memory: U(-stdv, stdv), stdv = 1/sqrt(dim/3): inside the bounds, and
-- rows of unit squared norm on average.
function tests.bank_initialisation()
  local model = build({ mechanism = "memory_bank", dim = 48, K = 8, bn_splits = 1, in_channels = 1, width = 0.25,
                        bank_size = 500 })
  local stdv = 1 / math.sqrt(48 / 3)
  check.ok("initial bank inside (-stdv, stdv)", maxabs(model.memory) <= stdv,
           string.format("max |entry| %g > stdv %g", maxabs(model.memory), stdv))
  local mean_sq = (model.memory * model.memory):sum() / 500
  check.near("initial bank rows: mean squared norm ~ 1", mean_sq, 1, 0.05)
end

-- Each loss against a double-precision evaluation of its definition, and its gradients
-- against central finite differences of the float32 loss.
local finite_differences = check.finite_differences

function tests.end_to_end_loss_gradient()
  local N, dim, T = 4, 3, 0.5
  local g = moco.Generator(41)
  local q, k = moco.randn({ N, dim }, g), moco.randn({ N, dim }, g)
  local loss, acc1, _, dq, dk = C.infonce_batch(q, k, T)
  local logits, top1 = moco.zeros{ N, N }, 0
  local total = 0
  for i = 1, N do
    local maxv, row = -math.huge, {}
    for j = 1, N do
      local s = 0
      for d = 1, dim do s = s + q:get(i, d) * k:get(j, d) end
      row[j] = s / T
      logits:set(i, j, row[j])
      maxv = math.max(maxv, row[j])
    end
    local sum, greater = 0, 0
    for j = 1, N do
      sum = sum + math.exp(row[j] - maxv)
      if row[j] > row[i] then greater = greater + 1 end
    end
    total = total + maxv + math.log(sum) - row[i]
    if greater == 0 then top1 = top1 + 1 end
  end
  check.near("end-to-end loss vs definition (labels on the diagonal)", loss, total / N, 1e-5)
  check.near("end-to-end acc1 vs definition", acc1, 100 * top1 / N, 1e-4)
  local kept = moco.zeros{ N, N }
  C.infonce_batch(q, k, T, false, kept)
  compare("end-to-end logits buffer", kept, logits, 1e-6)
  local function f() return (C.infonce_batch(q, k, T, false)) end
  report("end-to-end dq vs finite differences", maxabs(finite_differences(q, f, 1e-2) - dq), maxabs(dq), 1e-3)
  report("end-to-end dk vs finite differences", maxabs(finite_differences(k, f, 1e-2) - dk), maxabs(dk), 1e-3)
  check.raises("a batch of one has no negative", "a batch of 1 has no negative", C.infonce_batch,
               moco.zeros{ 1, dim }, moco.zeros{ 1, dim }, T)
end

function tests.memory_bank_loss_gradient()
  local N, dim, K, M, T = 3, 4, 5, 7, 0.5
  local g = moco.Generator(43)
  local q, bank = moco.randn({ N, dim }, g), moco.randn({ M, dim }, g)
  local index = C.bank_sample(moco.tensor{ 6, 0, 3 }, K, M, g)
  check.eq("bank_sample: (N, 1 + K)", table.concat(index:shape(), "x"), N .. "x" .. (K + 1))
  check.ok("bank_sample: the positives first", index:get(1, 1) == 6 and index:get(2, 1) == 0 and index:get(3, 1) == 3,
           "column 0 is not the positives")
  local loss, _, _, dq = C.infonce_bank(q, bank, index, T)
  local logits = moco.zeros{ N, K + 1 }
  for i = 1, N do
    for j = 1, K + 1 do
      local r, s = math.tointeger(index:get(i, j)) + 1, 0
      for d = 1, dim do s = s + q:get(i, d) * bank:get(r, d) end
      logits:set(i, j, s / T)
    end
  end
  check.near("memory-bank loss vs definition", loss, cross_entropy0(logits), 1e-5)
  local function f() return (C.infonce_bank(q, bank, index, T, false)) end
  report("memory-bank dq vs finite differences", maxabs(finite_differences(q, f, 1e-2) - dq), maxabs(dq), 1e-3)
  local bad = index:clone()
  bad:set(2, 3, M)
  check.raises("bank index outside the bank", "not a row in [0, 7)", C.infonce_bank, q, bank, bad, T)
  -- the draws are uniform over the bank: 20000 of them over 7 rows
  local many = C.bank_sample(moco.zeros{ 1 }, 20000, M, moco.Generator(44))
  local counts = {}
  for j = 2, 20001 do
    local r = math.tointeger(many:get(1, j))
    counts[r] = (counts[r] or 0) + 1
  end
  local lo, hi = math.huge, 0
  for r = 0, M - 1 do
    lo, hi = math.min(lo, counts[r] or 0), math.max(hi, counts[r] or 0)
  end
  check.ok("bank draws cover every row uniformly", lo > 2500 and hi < 3200,
           string.format("row counts from %d to %d (expected ~2857 each)", lo, hi))
end

-- The sample indices the loader yields (the memory bank's rows): the dataset positions of
-- the batch's samples, so labels[j] = ds:label(indices[j] + 1).
function tests.loader_indices()
  local data, T = moco.data, moco.transforms
  local ds = data.Subset(data.FashionMNIST{ train = true }, 40)
  local loader <close> = data.Loader(ds, { batch_size = 8, transform = T.TwoCrops(T.ToTensor()), workers = 1,
                                           shuffle = true, seed = 2 })
  local seen, consistent, count = {}, true, 0
  for _, _, labels, indices in loader:iter() do
    for j = 1, indices:numel() do
      local i = math.tointeger(indices:get(j))
      consistent = consistent and i ~= nil and labels:get(j) == ds:label(i + 1)
      seen[i] = true
      count = count + 1
    end
  end
  local distinct = 0
  for _ in pairs(seen) do distinct = distinct + 1 end
  check.ok("loader indices name the batch's samples", consistent, "a label differs from ds:label(index + 1)")
  check.eq("an epoch's indices are its samples, each once", distinct .. "/" .. count, "40/40")
end

-- A model that ran 1 step, saved and restored into a new model, then 2 more, is bitwise the
-- model that ran 3 (the bank, its draws' generator, the shared batch-norm buffers).
local function state_bytes(model)
  local sd, tensors = model:state_dict(), {}
  for _, key in ipairs(model:state_dict_keys()) do tensors[#tensors + 1] = sd[key] end
  tensors[#tensors + 1] = model.optimizer.momentum_buffer -- nil (no entry) before the first step
  return check.fingerprint(table.unpack(tensors))
end

function tests.checkpoint_resume_exact()
  local checkpoint = require "moco.checkpoint"
  local dir = check.tmpdir()
  local g = moco.Generator(50)
  local batches = {}
  for i = 1, 3 do
    batches[i] = { moco.randn({ BATCH, 1, 8, 8 }, g), moco.randn({ BATCH, 1, 8, 8 }, g),
                   moco.tensor{ (i * 3) % 20, 1 + i, 4, 5 + i, 9, 10, 11 + i, 19 } }
  end
  for _, mech in ipairs{ "end_to_end", "memory_bank", "moco" } do
    local opts = { mechanism = mech, dim = 8, K = 16, bn_splits = 2, in_channels = 1, width = 0.25, mlp = true,
                   seed = 9, bank_size = 20 }
    local a = build(opts)
    for i = 1, 3 do a:step(table.unpack(batches[i])) end
    local b = build(opts)
    b:step(table.unpack(batches[1]))
    local path = dir .. "/" .. mech .. ".safetensors"
    checkpoint.save(path, b, { epoch = 0, epoch_step = 1 })
    local c = checkpoint.build_model(path)
    check.eq(mech .. ": checkpoint rebuilds the mechanism", c.mechanism, mech)
    check.ok(mech .. ": restored state bitwise", state_bytes(c) == state_bytes(b), "the restored state differs")
    for i = 2, 3 do c:step(table.unpack(batches[i])) end
    check.ok(mech .. ": 1 step + resume + 2 steps = 3 steps, bitwise", state_bytes(c) == state_bytes(a),
             "the resumed model differs from the uninterrupted one")
    local names = {}
    for _, n in ipairs(moco.safe_open(path):keys()) do
      if not n:match("^module%.encoder_q%.") then names[#names + 1] = n end
    end
    table.sort(names)
    print("  " .. mech .. " checkpoint tensors besides encoder_q: " .. table.concat(names, " ", 1, math.min(#names, 6))
          .. (#names > 6 and " ..." or ""))
    if mech == "memory_bank" then
      local f <close> = moco.safe_open(path)
      local _, shape = f:info("module.memory")
      check.eq("memory bank saved as module.memory", table.concat(shape, "x"), "20x8")
    elseif mech == "end_to_end" then
      check.ok("end-to-end saves encoder_q only", #names == 2, "extra tensors: " .. table.concat(names, ", "))
    end
    -- a checkpoint of one mechanism does not restore into another
    local other = build({ mechanism = mech == "moco" and "end_to_end" or "moco", dim = 8, K = 16, bn_splits = 2,
                          in_channels = 1, width = 0.25, mlp = true })
    check.raises(mech .. ": refused by another mechanism", "the checkpoint is for another model", checkpoint.restore,
                 other, checkpoint.load(path))
    -- the query encoder alone (kNN monitor, lincls) loads from every mechanism's checkpoint
    local enc = checkpoint.load_encoder(path)
    check.ok(mech .. ": load_encoder reads encoder_q", maxabs(enc.conv1.weight - b.encoder_q.conv1.weight) == 0,
             "encoder weights differ")
    os.remove(path)
  end
  os.remove(dir)
end

function tests.bad_configurations()
  local base = { dim = 8, K = 16, bn_splits = 2, in_channels = 1, width = 0.25 }
  local function with(extra)
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end
  check.raises("unknown mechanism", "unknown mechanism 'queue' (known: moco, end_to_end, memory_bank)", build,
               with{ mechanism = "queue" })
  check.raises("memory bank without bank_size", "needs bank_size = the number of training samples", build,
               with{ mechanism = "memory_bank" })
  check.raises("a bank larger than memory", "the memory bank needs", build,
               with{ mechanism = "memory_bank", bank_size = 1000000, dim = 1000000 })
  check.raises("a bank beyond 2^24 rows", "more than the 2^24", build,
               with{ mechanism = "memory_bank", bank_size = (1 << 24) + 1 })
  check.raises("symmetric end-to-end", "has no symmetric form", build, with{ mechanism = "end_to_end", symmetric = true })
  check.raises("m outside [0, 1]", "the momentum m = 1.5 must be in [0, 1]", build, with{ m = 1.5 })
  check.raises("bank_m outside [0, 1]", "bank_m = -0.1 must be in [0, 1]", build,
               with{ mechanism = "memory_bank", bank_size = 10, bank_m = -0.1 })
  local e2e = build(with{ mechanism = "end_to_end", bn_splits = 1 })
  check.raises("end-to-end, batch of 1 (before training)", "a batch of 1 has none", e2e.check_batch, e2e, 1)
  local x = moco.randn({ 1, 1, 8, 8 }, moco.Generator(3))
  check.raises("end-to-end, batch of 1 (step)", "a batch of 1 has none", e2e.step, e2e, x, x)
  check.eq("no step taken", e2e.steps, 0)
  check.raises("the static check names the batch", "a batch of 1 has none", moco.MoCo.check_config,
               { mechanism = "end_to_end", dim = 8, bn_splits = 1, T = 0.1, m = 0.9 }, 1)
  local bank = build(with{ mechanism = "memory_bank", bank_size = 10 })
  local x8 = moco.randn({ 8, 1, 8, 8 }, moco.Generator(4))
  check.raises("memory bank without indices", "the memory bank needs the 8 samples' dataset indices", bank.step, bank,
               x8, x8)
  local bank_before = state_bytes(bank)
  check.raises("memory bank, index outside the bank", "not a row in [0, 10)", bank.step, bank, x8, x8,
               moco.tensor{ 0, 1, 2, 3, 4, 5, 6, 10 })
  check.ok("a refused step changes nothing", state_bytes(bank) == bank_before and bank.steps == 0, "the state changed")
  -- m = 0 is allowed (the paper's failing case): the key encoder becomes a copy of encoder_q
  local m0 = build(with{ m = 0 })
  local before = m0.encoder_q._flat_params:clone()
  m0:step(x8, x8)
  check.eq("m = 0: the key encoder is the step's query encoder", maxabs(m0.encoder_k._flat_params - before), 0)
end

check.run(tests)
