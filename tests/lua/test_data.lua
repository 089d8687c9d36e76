-- tests/lua/test_data.lua: moco.data seen from Lua: datasets against torchvision's fixtures
-- (tests/make_fixtures_data.py), and the loader's determinism, epochs, buffers, transforms,
-- errors and threads.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local data, T = moco.data, moco.transforms

local FIXTURES = "tests/fixtures/data"
local tmpdir = check.tmpdir()

local write, fingerprint, same_list = check.write_file, check.fingerprint, check.same_list

local function thread_count() return check.proc_status("Threads") end

-- The thread count once it has come down to `want`, or after 2 s.  pthread_join returns when
-- the kernel clears the thread's id, a moment before it takes the thread off the count
-- in /proc/self/status: on a busy machine the count can lag the join by that moment.
local function settled_thread_count(want)
  local deadline = moco.time() + 2
  local n = thread_count()
  while n ~= want and moco.time() < deadline do n = thread_count() end
  return n
end

local function epoch_fingerprints(ds, opts, epochs)
  local loader <close> = data.Loader(ds, opts)
  local prints = {}
  for _ = 1, epochs do
    for a, b, c in loader:iter() do prints[#prints + 1] = fingerprint(a, b, c) end
  end
  return prints
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

-- The MoCo v2 augmentation (scaled down to 16x16 crops).
local function moco_aug() return check.moco_v2_aug(16, { 0.5, 0.5, 0.5 }, { 0.25, 0.25, 0.25 }) end

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
  check.eq("close joins the workers", settled_thread_count(before), before)
  do
    local scoped <close> = data.Loader(ds, { batch_size = 4, workers = 2 })
    scoped:next()
  end
  check.eq("<close> joins the workers", settled_thread_count(before), before)
  local dropped = data.Loader(ds, { batch_size = 4, workers = 2 })
  dropped:next()
  dropped = nil
  collectgarbage()
  collectgarbage()
  check.eq("__gc joins the workers", settled_thread_count(before), before)
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

-- ---------------------------------------------------------------- bad input
-- The issue's list, from Lua: each bad file or dataset gives an error naming the file and
-- saying what is wrong; a loader over bad files never hangs or crashes, in either mode.

-- root/a, root/b with 12 files; good file k (1-based position k) is an 8x8 PNG whose first
-- value is k * 10 / 255, so a batch row tells which sample it holds.
local BAD = {
  { "a/0.png" }, { "a/1.png" }, { "a/2_empty.jpg", "empty file" }, { "a/3_truncated.jpg", "truncated" },
  { "a/4.png" }, { "a/5_gif.jpg", "invalid or corrupt GIF" }, { "b/0.png" }, { "b/1_truncated.png", "truncated" },
  { "b/2_text.jpg", "not a PNG, JPEG, WebP or GIF file (it looks like text" }, { "b/3_fifo.jpg", "FIFO" }, { "b/4.png" },
  { "b/5.png" },
}
local function make_bad_folder()
  local root = tmpdir .. "/bad"
  assert(os.execute("mkdir -p '" .. root .. "/a' '" .. root .. "/b'"))
  local jpeg, png = check.read_file("tests/fixtures/images/coffee.jpg"), check.read_file("tests/fixtures/images/chelsea.png")
  local gen = moco.Generator(11)
  for k, f in ipairs(BAD) do
    local path = root .. "/" .. f[1]
    if not f[2] then
      local t = moco.rand({ 3, 8, 8 }, gen)
      t[1][1][1] = k * 10 / 255
      moco.image.from_tensor(t):save(path)
    elseif f[1]:find("empty") then write(path, "")
    elseif f[1]:find("truncated.jpg") then write(path, jpeg:sub(1, #jpeg // 2))
    elseif f[1]:find("truncated.png") then write(path, png:sub(1, #png // 2))
    elseif f[1]:find("gif") then write(path, "GIF89a\1\0\1\0\128\0\0\255\255\255\0\0\0!\249\4\1")
    elseif f[1]:find("text") then write(path, "<html><body>404 Not Found</body></html>\n")
    elseif f[1]:find("fifo") then assert(os.execute("mkfifo '" .. path .. "'"))
    end
  end
  return root
end
local bad_root = make_bad_folder()

function tests.bad_files_give_clear_errors()
  local ds = data.ImageFolder(bad_root)
  check.eq("a folder with bad files opens (decoding comes later)", #ds, #BAD)
  for k, f in ipairs(BAD) do
    if f[2] then
      local path = bad_root .. "/" .. f[1]
      local ok, err = pcall(ds.get, ds, k)
      check.ok(f[1] .. ": an error naming the file and saying " .. f[2],
               not ok and tostring(err):find(path, 1, true) and tostring(err):find(f[2], 1, true), tostring(err))
    end
  end
  check.raises("moco.image.load of a GIF named .jpg says GIF", "corrupt GIF", moco.image.load, bad_root .. "/a/5_gif.jpg")

  -- Datasets: IDX with a wrong magic or size, CIFAR of the wrong length, empty folders.
  local labels = tmpdir .. "/lbl.idx"
  write(labels, "\0\0\8\1\0\0\0\3\1\0\2")
  local images = tmpdir .. "/img.idx"
  local header = "\0\0\8\3\0\0\0\3\0\0\0\2\0\0\0\2"
  write(images, "\1\2" .. header:sub(3) .. string.rep("\7", 12))
  check.raises("IDX wrong magic names the file", images .. ": not an IDX file (bad magic", data.IDX, images, labels)
  write(images, header .. string.rep("\7", 7))
  check.raises("IDX data shorter than its header names the file", images .. ": IDX data is truncated", data.IDX,
               images, labels)
  write(images, header .. string.rep("\7", 12))
  check.ok("IDX of the right size opens", #data.IDX(images, labels) == 3)
  local cifar = tmpdir .. "/cifar_bad"
  assert(os.execute("mkdir -p '" .. cifar .. "'"))
  write(cifar .. "/test_batch.bin", string.rep("\1", 3073 * 2 + 100))
  check.raises("CIFAR10 file of the wrong length names it", cifar .. "/test_batch.bin: size 6246 is not a positive",
               data.CIFAR10, cifar, { train = false })
  write(cifar .. "/test_batch.bin", "")
  check.raises("CIFAR10 zero-byte file names it", cifar .. "/test_batch.bin", data.CIFAR10, cifar, { train = false })
  local empty = tmpdir .. "/empty_folder"
  assert(os.execute("mkdir -p '" .. empty .. "'"))
  check.raises("ImageFolder of an empty folder", "couldn't find any class folder in " .. empty, data.ImageFolder, empty)
  assert(os.execute("mkdir -p '" .. empty .. "/cats'"))
  write(empty .. "/cats/readme.txt", "no images here")
  check.raises("ImageFolder with a class folder without images names the class", "no valid file for the classes cats",
               data.ImageFolder, empty, { quiet = true })
end

-- The positions (1-based) the rows of one epoch hold (0: a failed batch), the number of
-- failed batches, and whether every error named a bad file.
local function bad_epoch(opts)
  local ds = data.ImageFolder(bad_root)
  local loader <close> = data.Loader(ds, opts)
  local rows, errors, named = {}, 0, true
  for b = 1, #loader do
    local ok, x = pcall(loader.next, loader)
    if ok then
      for j = 1, x:size(1) do rows[#rows + 1] = math.floor(x[j][1][1][1] * 255 / 10 + 0.5) end
    else
      errors = errors + 1
      for _ = 1, opts.batch_size do rows[#rows + 1] = 0 end
      local hit = false
      for _, f in ipairs(BAD) do
        if f[2] and tostring(x):find(bad_root .. "/" .. f[1], 1, true) then hit = true end
      end
      named = named and hit
    end
  end
  check.ok("the epoch ends (no hang, no extra batch)", loader:next() == nil)
  return rows, errors, named, loader:stats()
end

function tests.loader_over_bad_files()
  for _, workers in ipairs({ 1, 2 }) do
    local rows, errors, named = bad_epoch { batch_size = 2, workers = workers, shuffle = false, drop_last = false,
                                            transform = T.ToTensor() }
    check.eq(string.format("raise, %d worker(s): the batches with bad files fail", workers), table.concat(rows, ","),
             "1,2,0,0,0,0,0,0,0,0,11,12")
    check.ok(string.format("raise, %d worker(s): each error names a bad file", workers), errors == 4 and named)
    -- skip: position p holds the first good sample at or after p (wrapping around).
    local st
    rows, errors, named, st = bad_epoch { batch_size = 3, workers = workers, shuffle = false, drop_last = false,
                                          transform = T.ToTensor(), on_error = "skip" }
    check.eq(string.format("skip, %d worker(s): bad samples replaced by the next that decodes", workers),
             table.concat(rows, ","), "1,2,5,5,5,7,7,11,11,11,11,12")
    check.ok(string.format("skip, %d worker(s): no error, stats().skipped counts the replaced", workers),
             errors == 0 and st.skipped == 6 and st.samples == 12, string.format("%d errors, skipped %s", errors,
                                                                                   tostring(st.skipped)))
  end
  check.raises("on_error must be raise or skip", 'on_error must be "raise" or "skip"', data.Loader,
               data.ImageFolder(bad_root), { on_error = "ignore" })
  local loader <close> = data.Loader(data.ImageFolder(bad_root), { on_error = "skip" })
  check.ok("tostring shows on_error = skip", tostring(loader):find("on_error = skip", 1, true))
end

function tests.loader_skip_is_deterministic()
  local ds = data.ImageFolder(bad_root)
  local aug = T.TwoCrops(moco_aug())
  local opts = { batch_size = 4, workers = 1, seed = 9, on_error = "skip", transform = aug }
  local ref = epoch_fingerprints(ds, opts, 2)
  check.eq("skip, TwoCrops: full batches in two epochs", #ref, 6)
  opts.workers = 2
  check.ok("skip, TwoCrops: 2 workers give the batches of 1", same_list(epoch_fingerprints(ds, opts, 2), ref))
  -- A Lua transform runs on the calling thread with the same row streams.
  local lua_aug = T.TwoCrops(T.Compose { moco_aug(), T.Lambda(function(x) return x end) })
  opts.transform, opts.workers = lua_aug, 1
  local lua_ref = epoch_fingerprints(ds, opts, 1)
  opts.workers = 2
  check.ok("skip, Lua transform: 2 workers give the batches of 1", same_list(epoch_fingerprints(ds, opts, 1), lua_ref))
  check.eq("skip, Lua transform: the same batches as the C pipeline", lua_ref[1], ref[1])
end

function tests.loader_skip_warns_once_per_file()
  -- The warnings go to stderr: run a loader in a child moco-lua and read what it prints.
  local exe = arg and arg[-1] or "./moco-lua"
  local code = string.format([[
    local ds = moco.data.ImageFolder(%q)
    local loader = moco.data.Loader(ds, { batch_size = 3, workers = 2, on_error = "skip" })
    for _ = 1, 3 do for x in loader:iter() do end end
    print("skipped " .. loader:stats().skipped)]], bad_root)
  local p = assert(io.popen(exe .. " -e '" .. code:gsub("'", "'\\''") .. "' 2>&1"))
  local out = p:read("a")
  p:close()
  local per_file, all_once = {}, true
  for line in out:gmatch("[^\n]+") do
    local path = line:match("^warning: data%.Loader: skipped (.-): ")
    if path then per_file[path] = (per_file[path] or 0) + 1 end
  end
  for _, f in ipairs(BAD) do
    local n = per_file[bad_root .. "/" .. f[1]]
    if (f[2] ~= nil) ~= (n == 1) then all_once = false end
  end
  check.ok("skip: one warning per bad file over three epochs, naming it", all_once, out)
  check.ok("skip: each warning gives the reason", out:find("a/5_gif.jpg: invalid or corrupt GIF", 1, true) ~= nil, out)
  check.ok("skip: stats().skipped counts every epoch", out:find("skipped 18", 1, true) ~= nil, out)
end

check.run(tests)
