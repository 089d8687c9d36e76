-- tests/lua/check.lua: the Lua side of the test harness (same output as tests/c/check.h).
-- Each check prints "PASS name" or "FAIL name: why"; tests/run.sh counts them.
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

-- Run test functions by name, so one that throws is a FAIL, not the end of the file.
-- A new empty directory for a test's files (the caller removes it).
function check.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  return dir
end

function check.run(tests)
  local names = {}
  for k in pairs(tests) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local ok, err = xpcall(tests[k], debug.traceback)
    if not ok then report(k, false, "error: " .. tostring(err)) end
  end
  if check.failures > 0 then os.exit(1) end
end

return check
