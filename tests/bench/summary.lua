-- tests/bench/summary.lua: the table at the end of `make bench` (tests/bench/run.sh), from
-- the JSON files its rounds wrote into DIR:
--   moco-lua tests/bench/summary.lua DIR ROUNDS CONFIG...
-- Files: DIR/<side>.<config>.<round>.json, side = moco | tcmalloc | glibc (bench_moco.lua
-- and bench_moco.py write them); DIR/peak.json from tests/bench/peak.c.
local args = { ... }
local dir, rounds = args[1], math.tointeger(tonumber(args[2]))
local configs = {}
for i = 3, #args do configs[#configs + 1] = args[i] end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return moco.json_decode(text)
end

local peak = read(dir .. "/peak.json") or {}

-- min and max of field over the rounds of one side and config (nil when none ran).
local function range(side, config, field)
  local lo, hi
  for r = 1, rounds do
    local j = read(string.format("%s/%s.%s.%d.json", dir, side, config, r))
    if j and j[field] then
      lo = lo and math.min(lo, j[field]) or j[field]
      hi = hi and math.max(hi, j[field]) or j[field]
    end
  end
  return lo, hi
end

local function fmt(lo, hi, f)
  if not lo then return "-" end
  f = f or "%.1f"
  if string.format(f, lo) == string.format(f, hi) then return string.format(f, lo) end
  return string.format(f .. "-" .. f, lo, hi)
end

-- The ratio of each round, moco-lua against the PyTorch run right after it: the two sides
-- of a round are minutes apart, so a slow minute of this machine lands on one round, where
-- the range above pairs the slowest round of one side with the fastest of the other.
local function round_ratios(config)
  local parts = {}
  for r = 1, rounds do
    local m = read(string.format("%s/moco.%s.%d.json", dir, config, r))
    local t = read(string.format("%s/tcmalloc.%s.%d.json", dir, config, r))
    if m and t and m.images_per_s and t.images_per_s then
      parts[#parts + 1] = string.format("%.2fx", m.images_per_s / t.images_per_s)
    end
  end
  return #parts > 0 and table.concat(parts, "; ") or "-"
end

print("| config | moco-lua img/s | PyTorch+tcmalloc img/s | ratio | ratio per round | PyTorch+glibc img/s | peak RSS moco-lua / PyTorch (MiB) | moco-lua GFLOP/s (peak " ..
      string.format("%.0f", peak.avx512_gflops or peak.avx2_gflops or 0) .. ") |")
print("|---|---|---|---|---|---|---|---|")
for _, c in ipairs(configs) do
  local mlo, mhi = range("moco", c, "images_per_s")
  local tlo, thi = range("tcmalloc", c, "images_per_s")
  local glo, ghi = range("glibc", c, "images_per_s")
  local ratio = "-"
  if mlo and tlo then ratio = fmt(mlo / thi, mhi / tlo, "%.2fx") end
  local rm = select(2, range("moco", c, "peak_rss"))
  local rt = select(2, range("tcmalloc", c, "peak_rss"))
  local rss = string.format("%s / %s", rm and string.format("%.0f", rm / 2 ^ 20) or "-",
                            rt and string.format("%.0f", rt / 2 ^ 20) or "-")
  -- GFLOP/s of the convolutions and linear layers over the best step, per round
  local flo, fhi
  for r = 1, rounds do
    local j = read(string.format("%s/moco.%s.%d.json", dir, c, r))
    if j and j.flops and j.best_s then
      local g = j.flops / j.best_s / 1e9
      flo, fhi = flo and math.min(flo, g) or g, fhi and math.max(fhi, g) or g
    end
  end
  print(string.format("| %s | %s | %s | %s | %s | %s | %s | %s |", c, fmt(mlo, mhi), fmt(tlo, thi), ratio,
                      round_ratios(c), fmt(glo, ghi), rss, fmt(flo, fhi, "%.0f")))
end
