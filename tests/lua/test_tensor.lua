-- tests/lua/test_tensor.lua: the moco.Tensor binding seen from Lua.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"

local tmpdir = check.tmpdir()

local tests = {}

function tests.creation()
  local z = moco.zeros{2, 3}
  check.eq("zeros numel", z:numel(), 6)
  check.eq("zeros sum", z:sum(), 0)
  check.eq("zeros varargs shape", #moco.zeros(4, 5), 4)
  check.eq("ones sum", moco.ones{3, 4}:sum(), 12)
  check.eq("full value", moco.full({2, 2}, 7):get(2, 2), 7)
  local a = moco.arange(5)
  check.eq("arange(5) size", a:size(1), 5)
  check.eq("arange(5) last", a[5], 4)
  check.eq("arange(1, 2, 0.25) size", moco.arange(1, 2, 0.25):numel(), 4)
  local t = moco.tensor{{1, 2, 3}, {4, 5, 6}}
  check.eq("tensor{} shape", table.concat(t:shape(), "x"), "2x3")
  check.eq("tensor{} element", t:get(2, 1), 4)
  check.eq("tensor(scalar) dim", moco.tensor(2.5):dim(), 0)
  check.eq("tensor(scalar) item", moco.tensor(2.5):item(), 2.5)
end

function tests.nested_table_errors()
  check.raises("ragged rows", "should be a table of 3 entries", moco.tensor, {{1, 2, 3}, {4, 5}})
  check.raises("non-number element", "expected a number", moco.tensor, {{1, "x"}})
  check.raises("negative size", "non-negative", moco.zeros, {2, -1})
  check.raises("too many dims", "at most 6", moco.zeros, {1, 1, 1, 1, 1, 1, 1})
  check.raises("bad shape type", "shape table or sizes", moco.zeros, "abc")
end

function tests.random_is_seeded()
  moco.manual_seed(123)
  local a = moco.randn{1000}
  moco.manual_seed(123)
  local b = moco.randn{1000}
  check.eq("manual_seed reproduces", (a - b):clamp(0, 0):sum() + (a - b):sum(), 0)
  check.near("randn mean", a:mean(), 0, 0.15)
  local g = moco.Generator(7)
  local u = moco.rand({10000}, g)
  check.ok("rand in [0,1)", u:max() < 1 and -u:max() <= 0 and u:clamp(nil, 0):sum() == 0)
  check.near("rand mean", u:mean(), 0.5, 0.02)
  local s = g:get_state()
  local x1, x2 = g:normal(), g:uniform()
  g:set_state(s)
  check.eq("generator state restore (normal)", g:normal(), x1)
  check.eq("generator state restore (uniform)", g:uniform(), x2)
  local p = moco.Generator(1):permutation(10)
  table.sort(p)
  check.eq("permutation covers 1..n", table.concat(p, ","), "1,2,3,4,5,6,7,8,9,10")
  check.raises("set_state rejects junk", "expected a table of 4", g.set_state, g, {1, 2})
end

function tests.views()
  local t = moco.arange(12):reshape(3, 4)
  check.eq("reshape shape", table.concat(t:shape(), "x"), "3x4")
  check.eq("reshape -1", t:reshape(-1, 6):size(1), 2)
  check.raises("reshape mismatch names both shapes", "[3, 4]", t.reshape, t, 5, 5)
  local row = t[2]
  check.eq("t[i] is a row view", row[1], 4)
  row[1] = 100
  check.eq("writing through a row view", t:get(2, 1), 100)
  local n = t:narrow(1, 2, 2)
  check.eq("narrow dim 1 start is 1-based", n:get(1, 1), 100)
  check.ok("narrow dim 1 is a view", n:is_view())
  local c = t:narrow(2, 2, 2)
  check.eq("narrow dim 2 values", c:get(1, 1), 1)
  check.eq("select", t:select(2, 3)[3], 10)
  local tt = t:t()
  check.eq("transpose", tt:get(4, 3), t:get(3, 4))
  check.raises("select out of range", "out of range", t.select, t, 1, 4)
  check.raises("bad dim", "dimension 3 out of range", t.size, t, 3)
  t[1] = 0
  check.eq("row assignment by number", t[1]:sum(), 0)
  t[3] = moco.ones{4}
  check.eq("row assignment by tensor", t[3]:sum(), 4)
  check.eq("negative index", t:get(-1, -1), 1)
end

function tests.arithmetic()
  local a = moco.tensor{{1, 2, 3}, {4, 5, 6}}
  local b = moco.tensor{10, 20, 30}
  check.eq("broadcast add", (a + b):get(2, 3), 36)
  check.eq("scalar add", (a + 1):get(1, 1), 2)
  check.eq("reversed scalar sub", (1 - a):get(1, 2), -1)
  check.near("reversed scalar div", (12 / a):get(2, 2), 12 / 5, 1e-6)
  check.eq("mul", (a * a):sum(), 91)
  check.eq("unary minus", (-a):get(1, 1), -1)
  check.raises("incompatible broadcast names both shapes", "[2, 3] and [2]", function() return a + moco.ones{2} end)
  local c = a:clone()
  c:add_(b)
  check.eq("add_ in place", c:get(1, 1), 11)
  check.eq("clone leaves the original", a:get(1, 1), 1)
  c:axpy_(-1, b:reshape(1, 3) + moco.zeros{2, 3})
  check.eq("axpy_", c:sum(), a:sum())
  check.near("exp/log", a:exp():log():sum(), 21, 1e-4)
  check.near("sqrt", moco.tensor{4, 9}:sqrt():sum(), 5, 1e-6)
  check.eq("clamp", a:clamp(2, 5):sum(), 2 + 2 + 3 + 4 + 5 + 5)
  check.raises("arith with a string", "number expected", function() return a + "x" end)
end

function tests.reductions()
  local t = moco.arange(24):reshape(2, 3, 4)
  check.eq("sum all", t:sum(), 276)
  check.eq("mean all", t:mean(), 11.5)
  check.eq("sum dim 1 shape", table.concat(t:sum(1):shape(), "x"), "3x4")
  check.eq("sum dim 1 keepdim", table.concat(t:sum(1, true):shape(), "x"), "1x3x4")
  check.eq("mean dim -1", t:mean(-1):get(2, 3), 21.5)
  local v, i = t:max()
  check.eq("max value", v, 23)
  check.eq("max position is 1-based", i, 24)
  local vals, idx = t:max(2)
  check.eq("max over dim values", vals:get(1, 1), 8)
  check.eq("max over dim indices are 1-based", idx:get(1, 1), 3)
  check.eq("argmax over dim", moco.tensor{{1, 9, 3}, {7, 2, 7}}:argmax(2)[2], 1)
end

function tests.matmul_and_normalize()
  local a = moco.tensor{{1, 2}, {3, 4}, {5, 6}}
  local b = moco.tensor{{1, 0, 2}, {0, 1, 3}}
  local c = a:matmul(b)
  check.eq("matmul", c:get(3, 3), 5 * 2 + 6 * 3)
  check.eq("matmul trans_a", a:matmul(a, true):get(1, 1), 35)
  check.eq("matmul trans_b", a:matmul(a, false, true):get(3, 3), 61)
  check.raises("matmul shape error names shapes", "[3, 2]", a.matmul, a, a)
  local n = moco.tensor{{3, 4}, {0, 0}}:normalize()
  check.near("normalize unit row", n:get(1, 1), 0.6, 1e-7)
  check.eq("normalize zero row stays zero", n[2]:sum(), 0)
end

function tests.npy_round_trip()
  local t = moco.randn{2, 3, 4}
  local path = tmpdir .. "/x.npy"
  t:save_npy(path)
  local u = moco.load_npy(path)
  check.eq("npy shape", table.concat(u:shape(), "x"), "2x3x4")
  check.eq("npy values", (t - u):clamp(0, 0):sum() + (t - u):sum(), 0)
  check.raises("missing npy names file", "nope.npy", moco.load_npy, tmpdir .. "/nope.npy")
  check.write_file(tmpdir .. "/bad.npy", "not numpy at all")
  check.raises("malformed npy", "bad magic", moco.load_npy, tmpdir .. "/bad.npy")
  check.raises("load_npy argument type", "string expected", moco.load_npy, {})
end

function tests.userdata_protocol()
  local t = moco.zeros{2, 3}
  check.ok("tostring shows shape", tostring(t):find("[2, 3]", 1, true) ~= nil, tostring(t))
  check.eq("__len", #t, 2)
  check.raises("method on wrong type names moco.Tensor", "moco.Tensor expected", t.sum, {})
  do
    local closed <close> = moco.ones{3}
    check.eq("inside <close> scope", closed:sum(), 3)
    t = closed
  end
  check.raises("use after close", "tensor was closed", t.sum, t)
  check.eq("tostring after close", tostring(t), "moco.Tensor (closed)")
  local totable = moco.tensor{{1, 2}, {3, 4}}:totable()
  check.eq("totable", totable[2][1], 3)
end

function tests.gc_reclaims_large_tensors()
  -- 200 tensors of 16 MiB each would be 3.2 GiB if the collector never ran.
  collectgarbage("collect")
  for _ = 1, 200 do local _ = moco.zeros{4096, 1024} end
  local rss_kb = check.proc_status("VmRSS")
  check.ok("resident memory stays bounded", rss_kb == nil or rss_kb < 1024 * 1024,
           string.format("VmRSS %s kB after 3.2 GiB of temporaries", tostring(rss_kb)))
end

check.run(tests)
