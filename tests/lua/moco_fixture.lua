-- tests/lua/moco_fixture.lua: what the tests against tests/make_fixtures_moco.py share
-- (test_moco.lua: the official MoCo; test_mechanisms.lua: the end-to-end and memory-bank
-- baselines): loading a case's files, the comparisons that print their max difference, and
-- an encoder state compared per tensor group.
local check = require "check"
local moco = require "moco"

local M = {}

local DIR = "tests/fixtures/moco/"
local FLT_EPSILON = 2 ^ -23
M.DIR, M.FLT_EPSILON, M.BATCH = DIR, FLT_EPSILON, 8

function M.load(case, what) return moco.load_npy(DIR .. case .. "." .. what .. ".npy") end

M.maxabs, M.shape_of, M.flat = check.maxabs, check.shape_of, check.flat -- tests/lua/check.lua's

M.report = check.diff -- d <= tol * scale

-- max |got - want| <= tol * max |want|, the values compared in order (the fixture's shapes may differ)
function M.compare(label, got, want, tol) check.compare(label, got, want, tol, { flat = true }) end

-- max |got - want| <= tol
function M.compare_abs(label, got, want, tol) check.compare(label, got, want, 0, { flat = true, atol = tol }) end

-- "<key> <numel>" lines of make_fixtures_moco.py: the sorted state_dict keys of one encoder.
function M.read_keys(case)
  local keys = {}
  for line in io.lines(DIR .. case .. ".keys.txt") do
    local key, n = line:match("^(%S+) (%d+)$")
    keys[#keys + 1] = { key = key, numel = tonumber(n) }
  end
  return keys
end

-- name -> tensor (shaped as in `like`) of a state flattened in the order of `keys`.
function M.unflatten(flat_state, keys, like)
  local sd, offset = {}, 1
  for _, e in ipairs(keys) do
    local own = like[e.key]
    if own == nil then error("fixture key " .. e.key .. " is not in the model") end
    if own:dim() == 0 then
      sd[e.key] = moco.tensor(flat_state:get(offset))
    else
      sd[e.key] = flat_state:narrow(1, offset, e.numel):reshape(own:shape())
    end
    offset = offset + e.numel
  end
  if offset - 1 ~= flat_state:numel() then error("fixture state has entries beyond its keys") end
  return sd
end

function M.build(opts, extra)
  local o = { arch = "resnet20", lr = 0.03, momentum = 0.9, weight_decay = 1e-4 }
  for k, v in pairs(opts) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return moco.MoCo(o)
end

-- The official initialisation from a saved query-encoder state and queue.
-- encoder_q from a case's saved initial state (init_q).
function M.load_encoder_q(model, case, keys)
  model.encoder_q:load_state_dict(M.unflatten(M.load(case, "init_q"), keys, model.encoder_q:state_dict()))
end

function M.is_bn_buffer(key) return key:find("running_", 1, true) ~= nil end
function M.is_parameter(key) return not M.is_bn_buffer(key) and not key:find("num_batches", 1, true) end

-- Compares an encoder's state after the steps with the reference, per tensor; one check per
-- group (weights, weight changes, running statistics), printing the worst tensor of each.
-- tols (optional): {weights =, change =, stats =} in place of 1e-5, 2e-3, 1e-4.
function M.compare_encoder(label, encoder, want_flat, init_flat, keys, tols)
  tols = tols or {}
  local own = encoder:state_dict()
  local want = M.unflatten(want_flat, keys, own)
  local init = M.unflatten(init_flat, keys, own)
  local groups = {
    { name = "weights", tol = tols.weights or 1e-5, pick = M.is_parameter,
      diff = function(k) return own[k] - want[k], want[k] end },
    { name = "weight change", tol = tols.change or 2e-3, pick = M.is_parameter,
      diff = function(k) return (own[k] - init[k]) - (want[k] - init[k]), want[k] - init[k] end,
      floor = function(k) return 4 * FLT_EPSILON * M.maxabs(want[k]) end },
    { name = "running stats", tol = tols.stats or 1e-4, pick = M.is_bn_buffer,
      diff = function(k) return own[k] - want[k], want[k] end },
  }
  for _, g in ipairs(groups) do
    local worst, worst_key, worst_abs, bad = -1, nil, 0, {}
    for _, e in ipairs(keys) do
      if g.pick(e.key) then
        local d, ref = g.diff(e.key)
        local abs, scale = M.maxabs(d), M.maxabs(ref)
        local rel = scale > 0 and abs / scale or abs
        if rel > worst then worst, worst_key, worst_abs = rel, e.key, abs end
        if abs > g.tol * scale + (g.floor and g.floor(e.key) or 0) then
          bad[#bad + 1] = string.format("%s (%.2e rel)", e.key, rel)
        end
      end
    end
    local name = label .. " " .. g.name
    print(string.format("  %-44s worst %s: max abs diff %.2e  rel %.1e (tol %.0e)", name,
                        tostring(worst_key), worst_abs, worst, g.tol))
    check.ok(name, #bad == 0, "over tolerance: " .. table.concat(bad, ", "))
  end
end

-- Cross-entropy of logits (N, L), in double, the mean over rows; the label of row i is
-- target(i) (1-based column), default 1 (label 0: the positive first).
function M.cross_entropy0(logits, target)
  local n, l = logits:size(1), logits:size(2)
  local total = 0
  for i = 1, n do
    local maxv = -math.huge
    for j = 1, l do maxv = math.max(maxv, logits:get(i, j)) end
    local s = 0
    for j = 1, l do s = s + math.exp(logits:get(i, j) - maxv) end
    total = total + maxv + math.log(s) - logits:get(i, target and target(i) or 1)
  end
  return total / n
end

return M
