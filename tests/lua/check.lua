-- tests/lua/check.lua: the Lua side of the test harness (same output as tests/c/check.h).
-- Each check prints "PASS name" or "FAIL name: why"; tests/run.sh counts them.
-- Every helper more than one test needs lives here, not in a test file: files and temporary
-- directories, lists and batch fingerprints, tensor comparisons that print their max
-- difference, finite differences and the Jacobian check.
local check = { failures = 0 }

local function report(name, ok, why)
  if ok then
    print("PASS " .. name)
  else
    check.failures = check.failures + 1
    print("FAIL " .. name .. ": " .. tostring(why))
  end
  io.stdout:flush()
end

function check.ok(name, cond, why) report(name, cond, why or "condition is false") end

function check.eq(name, got, want)
  report(name, got == want, string.format("got %s, expected %s", tostring(got), tostring(want)))
end

function check.near(name, got, want, tol)
  local ok = math.abs(got - want) <= tol
  report(name, ok, string.format("got %.9g, expected %.9g (tol %g)", got, want, tol))
end

-- f must raise an error whose message contains `pattern` (plain text).
function check.raises(name, pattern, f, ...)
  local ok, err = pcall(f, ...)
  if ok then
    report(name, false, "no error raised")
  else
    local msg = tostring(err)
    report(name, msg:find(pattern, 1, true) ~= nil,
           string.format("error %q does not mention %q", msg, pattern))
  end
end

-- ---------------------------------------------------------------- files

-- s quoted for the shell (os.execute, io.popen).
function check.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The whole file as a string; an error naming the file when it cannot be opened.
function check.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function check.write_file(path, bytes)
  local f = assert(io.open(path, "wb"))
  assert(f:write(bytes))
  assert(f:close())
end

-- A new empty directory for a test's files.  check.cleanup() removes every one made so far
-- (check.run does so before it returns or exits); removing one earlier is fine.
local tmpdirs = {}
function check.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. check.quote(dir)))
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

function check.cleanup()
  for _, dir in ipairs(tmpdirs) do os.execute("rm -rf " .. check.quote(dir)) end
  tmpdirs = {}
end

-- Run test functions by name, so one that throws is a FAIL, not the end of the file; then
-- remove the temporary directories, and exit with status 1 if any check failed.
function check.run(tests)
  local names = {}
  for k in pairs(tests) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local ok, err = xpcall(tests[k], debug.traceback)
    if not ok then report(k, false, "error: " .. tostring(err)) end
  end
  check.cleanup()
  if check.failures > 0 then os.exit(1) end
end

-- A number field of /proc/self/status ("VmRSS" in kB, "Threads"), or nil where there is none.
function check.proc_status(field)
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local value
  for line in f:lines() do
    value = value or tonumber(line:match("^" .. field .. ":%s+(%d+)"))
  end
  f:close()
  return value
end

-- ---------------------------------------------------------------- lists and batches

-- Whether two lists hold the same values: true, or false and the first difference (each
-- value shown by tostring, cut to 120 characters: a fingerprint is long).
function check.same_list(got, want)
  local function show(v) local s = tostring(v); return #s > 120 and s:sub(1, 120) .. "..." or s end
  for i = 1, math.max(#got, #want) do
    if got[i] ~= want[i] then
      return false, string.format("%d vs %d entries; entry %d is %s, expected %s", #got, #want, i, show(got[i]),
                                  show(want[i]))
    end
  end
  return true
end

-- Every value of its arguments (tensors or numbers: a loader's batch) as one string, each
-- value exact (%a), for bitwise comparisons of batches and states.
function check.fingerprint(...)
  local parts = {}
  for _, t in ipairs({ ... }) do
    if type(t) == "number" then
      parts[#parts + 1] = string.format("%a", t)
    else
      local flat = t:reshape(t:numel())
      for i = 1, flat:numel() do parts[#parts + 1] = string.format("%a", flat[i]) end
    end
  end
  return table.concat(parts, ",")
end

-- The MoCo v2 augmentation (main_moco.py --aug-plus) with crops of size x size and
-- Normalize(mean, std): the loaders' tests run every transform through it.
function check.moco_v2_aug(size, mean, std)
  local T = require("moco").transforms
  return T.Compose {
    T.RandomResizedCrop(size, { scale = { 0.2, 1.0 } }),
    T.RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8),
    T.RandomGrayscale(0.2),
    T.RandomApply(T.GaussianBlur { 0.1, 2.0 }, 0.5),
    T.RandomHorizontalFlip(),
    T.ToTensor(),
    T.Normalize(mean, std),
  }
end

-- ---------------------------------------------------------------- tensor helpers

function check.flat(t) return t:reshape(t:numel()) end
function check.shape_of(t) return "[" .. table.concat(t:shape(), ", ") .. "]" end
function check.maxabs(t)
  if t:numel() == 0 then return 0 end
  return math.max((t:max()), ((-t):max())) -- max() also returns a position: keep the values
end

-- x rounded to float32 (as a float32 tensor stores it).
function check.f32(x) return (string.unpack("<f", string.pack("<f", x))) end

-- ---------------------------------------------------------------- comparisons
--
-- check.diff(label, d, scale, tol[, atol]): a difference d (a max |got - want|) is at most
-- tol * scale + atol (atol default 0); prints d, d relative to scale, and the tolerance.
function check.diff(label, d, scale, tol, atol)
  local bound = tol * scale + (atol or 0)
  local tols = tol == 0 and string.format("%.0e absolute", atol or 0)
               or string.format("%.0e%s", tol, atol and string.format(" + %.0e", atol) or "")
  print(string.format("  %-52s max abs diff %.2e  rel %.1e (tol %s)", label, d, scale > 0 and d / scale or 0, tols))
  report(label, d <= bound, string.format("max abs diff %.3g > %.3g", d, bound))
end

-- check.compare(label, got, want, tol[, opts]): max |got - want| <= tol * max |want|, as
-- check.diff.  The shapes must agree (opts.flat: only the element counts, values compared
-- in order).  opts.floor: the scale is at least this (tol * max(floor, max |want|));
-- opts.atol: added to the bound.
function check.compare(label, got, want, tol, opts)
  opts = opts or {}
  local same = opts.flat and got:numel() == want:numel() or check.shape_of(got) == check.shape_of(want)
  if not same then
    report(label, false, "shape " .. check.shape_of(got) .. ", expected " .. check.shape_of(want))
    return
  end
  local scale = math.max(opts.floor or 0, check.maxabs(want))
  check.diff(label, check.maxabs(check.flat(got) - check.flat(want)), scale, tol, opts.atol)
end

-- Central finite differences of the scalar f() with respect to every element of t (a
-- tensor f reads): d f / d t, the step as stored in float32 (v +- eps rounded).
function check.finite_differences(t, f, eps)
  local moco = require "moco"
  local fd = moco.zeros(t:shape())
  local flat, out = check.flat(t), check.flat(fd)
  for i = 1, flat:numel() do
    local v = flat:get(i)
    flat:set(i, v + eps)
    local up, hi = f(), flat:get(i)
    flat:set(i, v - eps)
    local down, lo = f(), flat:get(i)
    flat:set(i, v)
    out:set(i, (up - down) / (hi - lo))
  end
  return fd
end

-- ---------------------------------------------------------------- Jacobian check
--
-- check.jacobian_errors(module, input, opts) -> list of {name=, worst=, scale=, bound=}
-- check.jacobian(module, input, opts): the same, one PASS/FAIL per tensor.
-- After torch/nn's nn.Jacobian.testJacobian: the scalar is f = sum(forward(x) * P) for a
-- fixed random P (so batch norm in training mode, whose outputs sum to a constant, is
-- tested too), or the loss itself when opts.target is given (a criterion).  backward(x, P)
-- gives df/dx and df/dparameter; each is compared with central differences
-- (f(v + h) - f(v - h)) / (h' ), h' the step as stored in float32, f summed in double.
-- Steps: 1e-2, then 1e-3 and 1e-4 while they disagree (a ReLU or max-pool kink within a step of the
-- point); float32 forwards round at ~1e-7 relative, so 1e-2 keeps the rounding part of
-- the difference near 1e-5 of the gradient.  Tolerance: |fd - backward| <= 1e-2 * max
-- |backward| of that tensor, and at least 1e-4 of the largest gradient of the module (a
-- tensor whose gradient is ~0 sees the float32 noise of f): a wrong formula is off by
-- O(1), and float32 noise is 100x below it.  opts: coords (per tensor, default 24; all
-- when fewer), seed, target, tol (in place of 1e-2).
local STEPS, JTOL = { 1e-2, 1e-3, 1e-4 }, 1e-2

function check.jacobian_errors(module, input, opts)
  opts = opts or {}
  local moco = require "moco"
  local gen = moco.Generator(opts.seed or 1)
  local target = opts.target
  local P
  local function f()
    local x = input:clone()
    local y = module:forward(x, target)
    if type(y) == "number" then return y end
    P = P or moco.randn(y:shape(), gen)
    return (y * P):sum()
  end
  f()
  module:zero_grad()
  local x = input:clone()
  local y = module:forward(x, target)
  local gx = type(y) == "number" and module:backward(x, target) or module:backward(x, P:clone())
  local list = { { name = "input", t = input, g = gx and gx:clone() } }
  for _, p in ipairs(module:named_parameters()) do list[#list + 1] = { name = p.name, t = p.param, g = p.grad:clone() } end
  local largest = 0 -- over every tensor: the floor for a tensor whose gradient is ~0
  for _, e in ipairs(list) do if e.g then largest = math.max(largest, check.maxabs(e.g)) end end
  local results = {}
  for _, e in ipairs(list) do
    local r = { name = e.name, worst = math.huge, scale = 0, bound = 0 }
    if e.g then
      local tf, gf = check.flat(e.t), check.flat(e.g)
      r.scale = check.maxabs(e.g)
      r.bound = (opts.tol or JTOL) * math.max(r.scale, 1e-2 * largest) + 1e-6
      local n, coords = tf:numel(), opts.coords or 24
      local picks = {}
      if n <= coords then for i = 1, n do picks[i] = i end
      else for i = 1, coords do picks[i] = gen:random(n) end end
      r.worst = 0
      for _, i in ipairs(picks) do
        local v, best = tf:get(i), math.huge
        for _, h in ipairs(STEPS) do
          tf:set(i, v + h); local up, hi = f(), tf:get(i)
          tf:set(i, v - h); local down, lo = f(), tf:get(i)
          tf:set(i, v)
          best = math.min(best, math.abs((up - down) / (hi - lo) - gf:get(i)))
          if best <= r.bound then break end
        end
        r.worst = math.max(r.worst, best)
      end
    end
    results[#results + 1] = r
  end
  return results
end

function check.jacobian(module, input, opts)
  opts = opts or {}
  local label = opts.label or module._class_name
  local results = check.jacobian_errors(module, input, opts)
  for _, r in ipairs(results) do
    print(string.format("  %-40s %-28s max |fd - backward| %.2e (max |grad| %.2e, bound %.2e)", label, r.name,
                        r.worst, r.scale, r.bound))
    report(label .. " d/d" .. r.name, r.worst <= r.bound,
           string.format("finite differences differ by %.3g > %.3g", r.worst, r.bound))
  end
  return results
end

return check
