-- tests/lua/test_labels.lua: class labels cross the binding as int64_t class numbers, and a
-- value that is not one (2.5, NaN, 1e30, a class out of range) is an error naming the
-- function and the entry, for every C function that takes labels (lmoco_checklabels).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"

local tests = {}

local nan, huge = 0 / 0, 1e30

-- The bad values and the words their message must hold.
local bad = {
  { "2.5", 2.5, "labels%[2%] is 2.5, not a class number" },
  { "NaN", nan, "labels%[2%] is %-?nan, not a class number" },
  { "1e30 (beyond int64)", huge, "labels%[2%] is 1[.0-9]*e%+30, not a class number" },
  { "-1", -1, " %-1[ ,].*%[0, 3%)" },
  { "a class past the last", 3, " 3[ ,].*%[0, 3%)" },
}

local function labels_with(v) return moco.tensor{ 0, v, 1, 2 } end

function tests.knn_predict()
  local g = moco.Generator(5)
  local query = moco.randn({ 2, 4 }, g):normalize()
  local bank = moco.randn({ 4, 4 }, g):normalize()
  local pred = moco._eval.knn_predict(query, bank, moco.tensor{ 0, 2, 1, 2 }, 2, 0.1, 3, 1)
  check.eq("knn_predict with integer labels still works", pred:size(1), 2)
  for _, case in ipairs(bad) do
    local ok, msg = pcall(moco._eval.knn_predict, query, bank, labels_with(case[2]), 2, 0.1, 3, 1)
    check.ok("knn_predict: label " .. case[1] .. " is an error: " .. tostring(msg),
                 not ok and msg:find(case[3]) and msg:find("knn"))
  end
end

function tests.topk_correct()
  local scores = moco.tensor{ { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 }, { 0, 0, 1 } }
  check.eq("topk_correct with integer labels counts", moco._eval.topk_correct(scores, moco.tensor{ 0, 1, 2, 2 }, { 1 }), 4)
  for _, case in ipairs(bad) do
    local ok, msg = pcall(moco._eval.topk_correct, scores, labels_with(case[2]), { 1 })
    check.ok("topk_correct: label " .. case[1] .. " is an error: " .. tostring(msg),
                 not ok and msg:find(case[3]) and msg:find("topk_correct"))
  end
end

function tests.cross_entropy()
  local logits = moco.zeros{ 4, 3 }
  local loss = moco._nn.cross_entropy(logits, moco.tensor{ 0, 1, 2, 2 }, false)
  check.near("cross_entropy of equal logits is log(3)", loss, math.log(3), 1e-6)
  for _, case in ipairs(bad) do
    local ok, msg = pcall(moco._nn.cross_entropy, logits, labels_with(case[2]), false)
    check.ok("cross_entropy: label " .. case[1] .. " is an error: " .. tostring(msg),
                 not ok and msg:find(case[3]) and msg:find("cross_entropy"))
  end
end

check.run(tests)
