-- tests/lua/test_reliability.lua: the reliability audit's defects reachable from plain Lua
-- (issue 12; docs/reliability.md), each a regression test:
--   * moco.image.load and moco.load on a FIFO return an error at once (they blocked in open());
--   * a loader closed (or advanced) from inside its own Lua transform;
--   * moco.image.grid and the plot tile grid over a list whose __index makes temporaries,
--     with collections in between (use-after-free before);
--   * loader options beyond 2^31 are refused, not truncated;
--   * an empty sub-directory in a class folder (qsort(NULL, 0) before);
--   * moco.image.set_limits, and image.grid's options: a typo is an error, not ignored.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local data, T = moco.data, moco.transforms

local FIXTURES = "tests/fixtures/data"
local tmpdir = check.tmpdir()

-- Runs a moco-lua snippet in a child with a time limit; returns ok, output.
local function run_child(code, seconds)
  local script = tmpdir .. "/child.lua"
  check.write_file(script, code)
  local exe = arg and arg[-1] or "./moco-lua"
  local p = io.popen(string.format("timeout %d '%s' '%s' 2>&1; echo \"status=$?\"", seconds, exe, script))
  local out = p:read("a")
  p:close()
  return out:match("status=0") ~= nil, out
end

local tests = {}

function tests.fifo_readers()
  local fifo = tmpdir .. "/pipe.safetensors"
  assert(os.execute("mkfifo '" .. fifo .. "'"))
  local code = string.format([[
    local ok, err = pcall(moco.image.load, %q)
    assert(not ok and err:find("FIFO", 1, true), tostring(err))
    ok, err = pcall(moco.load, %q)
    assert(not ok and err:find("FIFO", 1, true), tostring(err))
    ok, err = pcall(moco.load_npy, %q)
    assert(not ok and err:find("FIFO", 1, true), tostring(err))
    print("refused")
  ]], fifo, fifo, fifo)
  local ok, out = run_child(code, 10)
  check.ok("image.load, moco.load and load_npy on a FIFO fail at once with a clear error",
           ok and out:find("refused", 1, true), out)
  os.remove(fifo)
end

local function small_pipeline()
  return T.Compose { T.Resize({ 8, 8 }), T.ToTensor() }
end

function tests.loader_closed_in_its_transform()
  local ds = data.ImageFolder(FIXTURES .. "/folder", { quiet = true })
  local resize = small_pipeline()
  local loader, calls = nil, 0
  loader = data.Loader(ds, { batch_size = 4, workers = 1, shuffle = false, transform = function(img)
    calls = calls + 1
    if calls == 1 then
      loader:close()
      collectgarbage()
      collectgarbage()
    end
    return resize(img)
  end })
  local ok, x = pcall(loader.next, loader)
  check.ok("a loader closed inside its own Lua transform still finishes that batch",
           ok and x and x:size(1) == 4 and x:size(3) == 8, tostring(x))
  check.raises("the closed loader then says so", "loader was closed", loader.next, loader)
end

function tests.loader_advanced_in_its_transform()
  local ds = data.ImageFolder(FIXTURES .. "/folder", { quiet = true })
  local resize = small_pipeline()
  local loader, depth, inner = nil, 0, nil
  loader = data.Loader(ds, { batch_size = 3, workers = 2, shuffle = false, transform = function(img)
    depth = depth + 1
    if depth == 1 then
      inner = select(1, loader:next()) -- recycles the slot the outer call was reading
      loader:set_transform(function(i) return resize(i) end)
      collectgarbage()
    end
    return resize(img)
  end })
  local ok, x = pcall(loader.next, loader)
  check.ok("next() and set_transform() called from inside the Lua transform are safe",
           ok and x and x:size(1) == 3 and inner and inner:size(1) == 3, tostring(x))
  loader:close()
end

function tests.grid_of_temporaries()
  local n = 40
  local list = setmetatable({}, {
    __len = function() return n end,
    __index = function(_, i)
      collectgarbage() -- frees the temporaries of earlier entries, unless grid anchors them
      return moco.image.from_tensor(moco.full({ 3, 4, 4 }, i / 255))
    end,
  })
  local grid = moco.image.grid(list, { nrow = 8, padding = 0 })
  local ok = grid.width == 32 and grid.height == 20
  for i = 1, n do
    local x, y = ((i - 1) % 8) * 4 + 2, ((i - 1) // 8) * 4 + 2
    if select(1, grid:pixel(x, y)) ~= i then ok = false end
  end
  check.ok("image.grid over an __index that makes temporaries keeps each one alive", ok, "wrong pixels")
end

function tests.grid_options()
  local img = moco.image.from_tensor(moco.zeros{ 3, 4, 4 })
  check.raises("a typo in image.grid's options is an error that names the known ones",
               "image.grid: unknown option 'nrows' (known: nrow, padding, pad_value)", moco.image.grid, { img, img },
               { nrows = 4 })
  check.raises("a non-string key is an unknown option too", "image.grid: unknown option '1'", moco.image.grid, { img },
               { 4 })
  local grid = moco.image.grid({ img, img }, { nrow = 1, padding = 0, pad_value = 9 })
  check.eq("the known options still apply", string.format("%dx%d", grid:size()), "4x8")
  check.eq("no options table is the defaults", string.format("%dx%d", moco.image.grid({ img, img }):size()), "14x8")
end

function tests.tile_grid_of_temporaries()
  local tiles = {}
  for i = 1, 12 do
    tiles[i] = setmetatable({}, { __index = function(_, k)
      collectgarbage()
      if k == "image" then return moco.image.from_tensor(moco.full({ 3, 6, 6 }, i / 255)) end
      if k == "caption" then return "tile " .. i end
    end })
  end
  local headers = setmetatable({}, { __len = function() return 4 end,
                                     __index = function(_, i) collectgarbage() return "column " .. i end })
  local img = moco._plot.tile_grid { tiles = tiles, cols = 4, scale = 2, headers = headers, title = "temporaries" }
  check.ok("plot tile_grid over __index temporaries (images, captions, headers) draws", img.width > 48, tostring(img))
end

function tests.loader_options_beyond_int()
  local ds = data.ImageFolder(FIXTURES .. "/folder", { quiet = true })
  check.raises("workers = 2^32 + 2 is refused, not truncated to 2", "workers must be between 0 and",
               data.Loader, ds, { workers = (1 << 32) + 2 })
  check.raises("prefetch = 2^31 + 1 is refused", "prefetch must be between 1 and",
               data.Loader, ds, { prefetch = (1 << 31) + 1 })
end

function tests.empty_subdirectory()
  local root = tmpdir .. "/empty_sub"
  assert(os.execute("mkdir -p " .. root .. "/a/nothing_here " .. root .. "/b"))
  assert(os.execute("cp " .. FIXTURES .. "/folder/Dog/2.png " .. root .. "/a/x.png"))
  assert(os.execute("cp " .. FIXTURES .. "/folder/Dog/2.png " .. root .. "/b/y.png"))
  local ok, ds = pcall(data.ImageFolder, root)
  check.ok("a class folder with an empty sub-directory loads", ok and #ds == 2, tostring(ds))
end

function tests.image_limits()
  local before = moco.image.limits()
  check.eq("default max_pixels is PIL's MAX_IMAGE_PIXELS", before.max_pixels, 89478485)
  check.eq("default max_scans", before.max_scans, 500)
  local prev = moco.image.set_limits { max_pixels = 10 }
  check.eq("set_limits returns the previous limits", prev.max_pixels, 89478485)
  check.raises("an image over the lowered limit is refused", "exceeds the limit of 10 pixels",
               moco.image.load, FIXTURES .. "/folder/Dog/2.png")
  moco.image.set_limits { max_pixels = "default" }
  check.eq("\"default\" restores it", moco.image.limits().max_pixels, 89478485)
  check.raises("unknown limit names are errors", "unknown option 'max_pixel'", moco.image.set_limits, { max_pixel = 5 })
  check.raises("max_scans 0 is refused", "max_scans must be between", moco.image.set_limits, { max_scans = 0 })
  check.raises("an unknown limit names the known ones", "image.set_limits: unknown option '1' (known: max_pixels, max_scans)",
               moco.image.set_limits, { 5 })
  check.raises("a limit's value must be an integer", "max_scans must be an integer or \"default\", got table",
               moco.image.set_limits, { max_scans = {} })
  check.eq("a refused call changes nothing", moco.image.limits().max_scans, 500)
  moco.image.set_limits { max_pixels = 1000, max_scans = 7 }
  local now = moco.image.limits()
  check.eq("set_limits sets both fields in one call", now.max_pixels .. "," .. now.max_scans, "1000,7")
  prev = moco.image.set_limits { max_pixels = "default", max_scans = "default" }
  check.eq("and returns them as the previous limits", prev.max_pixels .. "," .. prev.max_scans, "1000,7")
  now = moco.image.limits()
  check.eq("\"default\" restores both", now.max_pixels .. "," .. now.max_scans, "89478485,500")
end

check.run(tests)
