-- tests/lua/test_docs.lua: every code example of the user documentation runs as written.
--
-- For each file (README.md and the docs/ pages listed below) the fenced blocks run in
-- order, in one temporary directory per file (so a later block can use what an earlier one
-- made, as a reader following the page would), with this build's moco-lua first on PATH:
--   ```lua   a REPL session when its lines start with "> " (continued with ">> "): the input
--            is fed to moco-lua through a pipe, every line of it must succeed, and every
--            line shown without a prompt must appear in the output, in order ("..." in a
--            shown line matches anything); otherwise a script, which must exit 0;
--   ```sh    shell commands, run with sh -e; they must exit 0;
--   ```sh not-run: REASON   shown, not run (make demo takes minutes, make install needs
--            root); each is listed with its reason in this test's output;
--   ```text, ```console, ```python and blocks without a language: output, synopses or
--            code for other programs, never run.
-- Pages owned by others and not covered here: docs/data.md, docs/performance.md,
-- docs/reliability.md, docs/experiments.md.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"

local FILES = { "README.md", "docs/tutorial.md", "docs/cookbook.md", "docs/recipes.md", "docs/checkpoints.md",
                "docs/evaluation.md", "docs/api.md", "docs/architecture.md", "docs/status.md" }
local RUN = { lua = true, sh = true }
local SHOWN = { text = true, console = true, python = true, [""] = true, man = true }

local root = io.popen("pwd"):read("l")
local moco_time = require("moco").time
local sh_quote, read, write = check.quote, check.read_file, check.write_file

-- The fenced blocks of a markdown text: {info=, code=, line=}.
local function blocks_of(text)
  local list, current = {}, nil
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if current then
      if line:match("^```%s*$") then
        list[#list + 1] = current
        current = nil
      else
        current.lines[#current.lines + 1] = line
      end
    else
      local info = line:match("^```(.*)$")
      if info then current = { info = info, lines = {}, line = n } end
    end
  end
  for _, b in ipairs(list) do b.code = table.concat(b.lines, "\n") .. "\n" end
  return list
end

local function is_session(b)
  for _, l in ipairs(b.lines) do if l:match("^> ") then return true end end
  return false
end

-- "..." matches anything; the rest literally.
local function pattern_of(expected)
  local parts = {}
  for piece in (expected .. "..."):gmatch("(.-)%.%.%.") do parts[#parts + 1] = piece:gsub("%p", "%%%0") end
  return "^" .. table.concat(parts, ".-") .. "$"
end

local function run(cmd) -- -> ok, output
  local ok, _, code = os.execute(cmd)
  return ok == true and code == 0
end

local tmp_root = check.tmpdir()
local env = string.format("PATH=%s:$PATH HOME=%s MOCO_LUA_PATH= ", sh_quote(root), sh_quote(tmp_root))

local tests = {}
local not_run, ran = {}, 0

for _, file in ipairs(FILES) do
  tests[file] = function()
    local f = io.open(file, "rb")
    check.ok(file .. " exists", f ~= nil)
    if not f then return end
    f:close()
    local text = read(file)
    local dir = tmp_root .. "/" .. file:gsub("[/.]", "_")
    os.execute("mkdir -p " .. sh_quote(dir))
    for i, b in ipairs(blocks_of(text)) do
      local lang, rest = b.info:match("^(%S*)%s*(.*)$")
      local name = string.format("%s:%d (%s block %d)", file, b.line, lang ~= "" and lang or "plain", i)
      local reason = rest:match("^not%-run:%s*(.+)$")
      if reason then
        not_run[#not_run + 1] = name .. ": " .. reason
      elseif RUN[lang] then
        ran = ran + 1
        local started = moco_time()
        local out = dir .. "/.out"
        if lang == "sh" then
          write(dir .. "/.block.sh", b.code)
          local ok = run(string.format("cd %s && %s sh -e .block.sh > .out 2>&1", sh_quote(dir), env))
          check.ok(name .. " runs", ok, read(out):sub(-1500))
        elseif is_session(b) then
          local input, expected = {}, {}
          for _, l in ipairs(b.lines) do
            local cmd = l:match("^> (.*)$") or l:match("^>> (.*)$")
            if cmd then input[#input + 1] = cmd elseif l:match("%S") then expected[#expected + 1] = l:gsub("%s+$", "") end
          end
          write(dir .. "/.session", table.concat(input, "\n") .. "\n")
          local ok = run(string.format("cd %s && %s moco-lua < .session > .out 2>&1", sh_quote(dir), env))
          local got = read(out)
          check.ok(name .. " runs as written (every line succeeds)", ok, got:sub(-1500))
          local lines = {}
          for l in (got .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l:gsub("%s+$", "") end
          local at = 1
          for _, e in ipairs(expected) do
            local p, found = pattern_of(e), false
            while at <= #lines do
              at = at + 1
              if lines[at - 1]:match(p) then found = true break end
            end
            check.ok(name .. " shows: " .. e:sub(1, 60), found, "not in the output (in order):\n" .. got:sub(1, 3000))
            if not found then break end
          end
        else
          write(dir .. "/.block.lua", b.code)
          local ok = run(string.format("cd %s && %s moco-lua .block.lua > .out 2>&1", sh_quote(dir), env))
          check.ok(name .. " runs", ok, read(out):sub(-1500))
        end
        print(string.format("  %5.1f s  %s", moco_time() - started, name))
      elseif not SHOWN[lang] then
        check.ok(name .. ": a known block kind", false, "```" .. b.info .. ": use lua, sh, sh not-run: REASON, or text")
      end
    end
  end
end

tests.zz_summary = function()
  print(string.format("  %d blocks run; %d shown but not run:", ran, #not_run))
  for _, n in ipairs(not_run) do print("    " .. n) end
  check.ok("the docs have examples to run", ran >= 20, ran .. " blocks")
end

check.run(tests)
