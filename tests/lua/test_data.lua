-- tests/lua/test_data.lua: moco.data seen from Lua: datasets against torchvision's fixtures
-- (tests/make_fixtures_data.py), and the loader's determinism, epochs, buffers, transforms,
-- errors and threads.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local data, T = moco.data, moco.transforms

local FIXTURES = "tests/fixtures/data"
local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute("mkdir -p " .. tmpdir))

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local function thread_count()
  for line in io.lines("/proc/self/status") do
    local n = line:match("^Threads:%s+(%d+)")
    if n then return tonumber(n) end
  end
end

-- Every value of a batch, for bitwise comparisons (tostring of a float is exact enough
-- with %a).
local function fingerprint(...)
  local parts = {}
  for _, t in ipairs({ ... }) do
    local flat = t:reshape(t:numel())
    for i = 1, flat:numel() do parts[#parts + 1] = string.format("%a", flat[i]) end
  end
  return table.concat(parts, ",")
end

local function epoch_fingerprints(ds, opts, epochs)
  local loader <close> = data.Loader(ds, opts)
  local prints = {}
  for _ = 1, epochs do
    for a, b, c in loader:iter() do prints[#prints + 1] = fingerprint(a, b, c) end
  end
  return prints
end

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- A small in-memory dataset: CIFAR-10's binary format, written here.  Record r: label
-- r % 10, red plane r * 5, green plane = pixel index mod 256, blue plane 255 - r.
local function write_cifar(path, n)
  local records = {}
  for r = 0, n - 1 do
    local pixels = {}
    for k = 0, 1023 do pixels[#pixels + 1] = string.char((r * 5) % 256) end
    for k = 0, 1023 do pixels[#pixels + 1] = string.char(k % 256) end
    for k = 0, 1023 do pixels[#pixels + 1] = string.char(255 - r) end
    records[#records + 1] = string.char(r % 10) .. table.concat(pixels)
  end
  write(path, table.concat(records))
end
write_cifar(tmpdir .. "/test_batch.bin", 20)

local tests = {}

function tests.image_folder_matches_torchvision()
  local want_classes, want = {}, {}
  for line in io.lines(FIXTURES .. "/folder_samples.txt") do
    local idx, name = line:match("^class (%d+) (.+)$")
    if idx then want_classes[tonumber(idx) + 1] = name end
    local label, sum, path = line:match("^sample (%d+) (%d+) (.+)$")
    if label then want[#want + 1] = { label = tonumber(label), sum = tonumber(sum), path = path } end
  end
  local ds = data.ImageFolder(FIXTURES .. "/folder", { quiet = true })
  check.eq("ImageFolder classes", table.concat(ds.classes, "|"), table.concat(want_classes, "|"))
  check.eq("ImageFolder class_to_idx", ds.class_to_idx[want_classes[2]], 1)
  check.eq("ImageFolder length", #ds, #want)
  check.eq("ImageFolder skipped non-image files", ds.skipped, 2)
  local order, labels, pixels = true, true, true
  for i, s in ipairs(want) do
    if ds:path(i) ~= FIXTURES .. "/folder/" .. s.path then order = false end
    local img, label = ds:get(i)
    if label ~= s.label or ds:label(i) ~= s.label then labels = false end
    -- PNGs decode exactly as PIL; JPEGs within a small tolerance.
    local sum = img:to_tensor():sum() * 255
    local tol = s.path:lower():find("%.png$") and 0.5 or 0.01 * s.sum
    if math.abs(sum - s.sum) > tol or img.channels ~= 3 then pixels = false end
  end
  check.ok("ImageFolder sample order as torchvision", order)
  check.ok("ImageFolder labels as torchvision", labels)
  check.ok("ImageFolder pixels as PIL's convert('RGB')", pixels)
  local pair = ds[1]
  check.ok("ds[i] is {image, label}", tostring(pair[1]):find("moco.Image") and pair[2] == want[1].label)
  check.raises("ds:get out of range", "out of range", ds.get, ds, #ds + 1)
  check.raises("ImageFolder unknown option", "unknown option", data.ImageFolder, FIXTURES .. "/folder", { chanels = 1 })
  check.raises("ImageFolder missing root", "/nonexistent/x", data.ImageFolder, "/nonexistent/x")
end

function tests.cifar_and_fashion_mnist()
  local ds = data.CIFAR10(tmpdir, { train = false })
  check.eq("CIFAR10 length", #ds, 20)
  check.eq("CIFAR10 classes", ds.classes[1] .. "," .. ds.classes[10], "airplane,truck")
  local img, label = ds:get(4)
  local r, g, b = img:pixel(3, 2)
  check.ok("CIFAR10 sample", label == 3 and img.width == 32 and img.channels == 3 and r == 15 and b == 252,
           string.format("label %d pixel %s %s %s", label, r, g, b))
  check.raises("CIFAR10 train without the batches names the file", "data_batch_1.bin", data.CIFAR10, tmpdir)

  local want = {}
  for line in io.lines(FIXTURES .. "/fashion_mnist.txt") do
    local split, n = line:match("^length (%a+) (%d+)$")
    if split then want[split] = { n = tonumber(n) } end
    local s, i, l, sum = line:match("^sample (%a+) (%d+) (%d+) (%d+)$")
    if s then want[s][#want[s] + 1] = { index = tonumber(i), label = tonumber(l), sum = tonumber(sum) } end
  end
  for _, split in ipairs({ "train", "test" }) do
    local fm = data.FashionMNIST { train = split == "train" }
    check.eq("FashionMNIST " .. split .. " length", #fm, want[split].n)
    for _, s in ipairs(want[split]) do
      local im, lab = fm:get(s.index + 1) -- Lua positions are 1-based
      check.ok(string.format("FashionMNIST %s sample %d", split, s.index),
               lab == s.label and im.channels == 1 and im.width == 28 and
                 math.abs(im:to_tensor():sum() * 255 - s.sum) < 0.5,
               string.format("label %d (torchvision %d)", lab, s.label))
    end
  end
  check.eq("FashionMNIST classes", data.FashionMNIST().classes[10], "Ankle boot")
  check.raises("FashionMNIST missing root", "/nonexistent/fm", data.FashionMNIST, "/nonexistent/fm")
end

-- The MoCo v2 augmentation (scaled down), in TwoCrops.
local function moco_aug()
  return T.Compose {
    T.RandomResizedCrop(16, { scale = { 0.2, 1.0 } }),
    T.RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8),
    T.RandomGrayscale(0.2),
    T.RandomApply(T.GaussianBlur { 0.1, 2.0 }, 0.5),
    T.RandomHorizontalFlip(),
    T.ToTensor(),
    T.Normalize({ 0.5, 0.5, 0.5 }, { 0.25, 0.25, 0.25 }),
  }
end

function tests.loader_determinism_across_workers()
  local ds = data.CIFAR10(tmpdir, { train = false })
  for _, case in ipairs({ { "ToTensor", nil }, { "TwoCrops(MoCo v2 augmentation)", T.TwoCrops(moco_aug()) } }) do
    local ref = epoch_fingerprints(ds, { batch_size = 6, workers = 1, drop_last = false, seed = 7,
                                         transform = case[2] }, 2)
    for _, w in ipairs({ 2, 4 }) do
      local got = epoch_fingerprints(ds, { batch_size = 6, workers = w, drop_last = false, seed = 7,
                                           transform = case[2] }, 2)
      check.ok(string.format("loader %s: %d workers give the batches of 1", case[1], w), same_list(got, ref))
    end
    check.eq("loader " .. case[1] .. ": batches in two epochs", #ref, 8)
    check.ok("loader " .. case[1] .. ": epochs differ", ref[1] ~= ref[5])
  end
  local a = epoch_fingerprints(ds, { batch_size = 6, seed = 1 }, 1)
  local b = epoch_fingerprints(ds, { batch_size = 6, seed = 2 }, 1)
  check.ok("loader: another seed, another order", a[1] ~= b[1])
end

function tests.loader_lua_transform()
  local ds = data.CIFAR10(tmpdir, { train = false })
  -- A Lambda inside a Compose: the pipeline has no C handle and runs on the calling thread,
  -- with the same per-sample generators.
  local aug = T.Compose {
    T.RandomResizedCrop(8),
    T.ToTensor(),
    T.Lambda(function(x, gen) return x:add(gen:uniform()) end),
  }
  check.ok("a Lambda makes the pipeline Lua-only", aug.lua_only)
  local opts = { batch_size = 5, workers = 1, transform = T.TwoCrops(aug), seed = 3 }
  local ref = epoch_fingerprints(ds, opts, 2)
  opts.workers = 3
  check.ok("Lua transform: batches independent of workers", same_list(epoch_fingerprints(ds, opts, 2), ref))
  local loader <close> = data.Loader(ds, { batch_size = 4, transform = function(img) return img end })
  local x, labels = loader:next()
  check.eq("plain function transform: ToTensor's conversion after it", table.concat(x:shape(), "x"), "4x3x32x32")
  check.eq("labels are a tensor", labels:numel(), 4)
  check.ok("tostring says where the transform runs", tostring(loader):find("calling thread"))
end

function tests.loader_epochs_and_drop_last()
  local ds = data.CIFAR10(tmpdir, { train = false }) -- 20 samples
  local loader = data.Loader(ds, { batch_size = 8, workers = 2, shuffle = true, drop_last = true })
  check.eq("#loader with drop_last", #loader, 2)
  local seen = {}
  local function epoch_labels()
    local labels, sizes = {}, {}
    for _, y in loader:iter() do
      sizes[#sizes + 1] = y:numel()
      for i = 1, y:numel() do labels[#labels + 1] = y[i] end
    end
    return table.concat(labels, ","), table.concat(sizes, ",")
  end
  local e0, s0 = epoch_labels()
  check.eq("drop_last: full batches only", s0, "8,8")
  check.eq("after an epoch the loader is at the next", loader:epoch(), 1)
  local e1 = epoch_labels()
  check.ok("each epoch reshuffles", e0 ~= e1)
  loader:set_epoch(0)
  check.eq("set_epoch(0) repeats epoch 0", (epoch_labels()), e0)
  loader:close()
  local keep = data.Loader(ds, { batch_size = 8, drop_last = false, shuffle = false, workers = 1 })
  check.eq("#loader without drop_last", #keep, 3)
  local sizes = {}
  for x, y in keep:iter() do sizes[#sizes + 1] = x:size(1) .. "/" .. y:numel() end
  check.eq("without drop_last the last batch is partial", table.concat(sizes, ","), "8/8,8/8,4/4")
  check.raises("unknown Loader option", "unknown option", data.Loader, ds, { batchsize = 4 })
  keep:close()
  check.raises("a closed loader says so", "closed", function() return keep:next() end)
end

function tests.loader_buffers()
  local ds = data.CIFAR10(tmpdir, { train = false })
  local loader <close> = data.Loader(ds, { batch_size = 4, workers = 2, prefetch = 1, drop_last = false })
  local first
  for x in loader:iter() do
    if not first then first = x else break end
  end
  check.raises("iter() closes the previous batch", "closed", function() return first:sum() end)
  local a = loader:next()
  local copy = a:clone()
  for _ = 1, 2 do loader:next() end
  check.eq("a batch from next() is never overwritten", (a - copy):sum(), 0)
  local st = loader:stats()
  check.ok("stats", st.batches == 5 and st.samples == 20 and st.wait_seconds >= 0,
           string.format("batches %d samples %d", st.batches, st.samples))
end

function tests.loader_set_transform()
  local ds = data.CIFAR10(tmpdir, { train = false })
  local small = T.Compose { T.CenterCrop(8), T.ToTensor() }
  local opts = { batch_size = 4, workers = 2, seed = 5, transform = small }
  local loader <close> = data.Loader(ds, opts)
  local x = loader:next()
  check.eq("before set_transform", x:size(3), 8)
  loader:next()
  loader:set_transform(T.TwoCrops(moco_aug()))
  local q, k, labels = loader:next()
  check.ok("set_transform: the next batch uses the new transform", q:size(3) == 16 and k:size(3) == 16 and labels)
  -- It is batch 3 of epoch 0 as a loader built with the new transform makes it.
  opts.transform = T.TwoCrops(moco_aug())
  local ref <close> = data.Loader(ds, opts)
  ref:next(); ref:next()
  local rq, rk = ref:next()
  check.eq("set_transform: deterministic switch point", fingerprint(q, k), fingerprint(rq, rk))
  loader:set_transform(nil)
  local y = loader:next()
  check.eq("set_transform(nil): ToTensor", y:size(3), 32)
end

function tests.loader_corrupt_file()
  local root = tmpdir .. "/folder"
  assert(os.execute("mkdir -p '" .. root .. "/a' '" .. root .. "/b'"))
  local img = moco.image.from_tensor(moco.rand { 3, 8, 8 })
  for i = 1, 5 do img:save(string.format("%s/a/%d.png", root, i)) end
  for i = 1, 3 do img:save(string.format("%s/b/%d.png", root, i)) end
  local bad = root .. "/a/3.png"
  write(bad, "\137PNG\r\n\26\n this is not a png")
  local ds = data.ImageFolder(root)
  local loader <close> = data.Loader(ds, { batch_size = 2, shuffle = false, workers = 2 })
  local results = {}
  for _ = 1, #loader do
    local ok, err = pcall(loader.next, loader)
    results[#results + 1] = ok and "ok" or "error"
    if not ok then check.ok("the error names the corrupt file", tostring(err):find(bad, 1, true), err) end
  end
  check.eq("only the batch with the corrupt file fails", table.concat(results, ","), "ok,error,ok,ok")
  loader:set_epoch(0)
  check.ok("the loader is usable after the error", loader:next() ~= nil)
end

function tests.loader_threads_are_joined()
  local ds = data.CIFAR10(tmpdir, { train = false })
  local before = thread_count()
  local loader = data.Loader(ds, { batch_size = 4, workers = 3 })
  check.eq("workers started", thread_count(), before + 3)
  loader:next()
  loader:close()
  check.eq("close joins the workers", thread_count(), before)
  do
    local scoped <close> = data.Loader(ds, { batch_size = 4, workers = 2 })
    scoped:next()
  end
  check.eq("<close> joins the workers", thread_count(), before)
  local dropped = data.Loader(ds, { batch_size = 4, workers = 2 })
  dropped:next()
  dropped = nil
  collectgarbage()
  collectgarbage()
  check.eq("__gc joins the workers", thread_count(), before)
end

function tests.loader_throughput()
  local ds = data.FashionMNIST { train = true }
  for _, workers in ipairs({ 1, 2 }) do
    local loader <close> = data.Loader(ds, { batch_size = 256, workers = workers, transform = T.ToTensor() })
    local n = 0
    for x in loader:iter() do n = n + x:size(1) end
    local st = loader:stats()
    -- The loop does nothing but wait, so the wait is the wall time of the epoch.
    print(string.format("throughput: Fashion-MNIST train, T.ToTensor(), batch 256, %d worker(s): %.0f images/s "
                          .. "(%d images, %.3f s waiting for data)", workers, n / st.wait_seconds, n, st.wait_seconds))
  end
end

check.run(tests)
os.execute("rm -rf '" .. tmpdir .. "'")
