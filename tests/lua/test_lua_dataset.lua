-- tests/lua/test_lua_dataset.lua: datasets written in Lua (#ds and ds:get(i)) through data.Loader:
-- paths, encoded bytes, images and tensors; the same batches as ImageFolder over the same files
-- (any number of workers, shards, skipped bad files); and every error, named and governed by
-- on_error.  Fixture files are written to a temporary directory.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local data, T = moco.data, moco.transforms

local tmpdir = check.tmpdir()

local write, read, fingerprint, same_list = check.write_file, check.read_file, check.fingerprint, check.same_list

-- The fingerprints of `epochs` epochs (every value the loader returns, indices included),
-- with "error: <message>" for a batch that fails.
local function epochs_of(ds, opts, epochs)
  local loader <close> = data.Loader(ds, opts)
  local prints = {}
  for _ = 1, epochs or 1 do
    for _ = 1, #loader do
      local r = table.pack(pcall(loader.next, loader))
      if r[1] then
        prints[#prints + 1] = fingerprint(table.unpack(r, 2, r.n))
      else
        prints[#prints + 1] = "error: " .. tostring(r[2])
      end
    end
    check.ok("the epoch ends after #loader batches", loader:next() == nil)
  end
  return prints, loader:stats()
end

-- A Lua dataset: #ds is n, get(i) is fn(i).  A class with __len, as a user writes one.
local Dataset = {}
Dataset.__index = Dataset
Dataset.__len = function(self) return self.n end
function Dataset:get(i)
  self.calls[#self.calls + 1] = i
  return self.fn(i)
end
local function lua_dataset(n, fn, fields)
  local ds = setmetatable({ n = n, fn = fn, calls = {} }, Dataset)
  for k, v in pairs(fields or {}) do ds[k] = v end
  return ds
end

-- A folder of three classes: PNGs and JPEGs of different sizes, a gray PNG, a CMYK JPEG.
local root = tmpdir .. "/folder"
assert(os.execute(string.format("mkdir -p '%s/cat' '%s/dog' '%s/owl'", root, root, root)))
do
  local gen = moco.Generator(3)
  local names = { "cat/a.png", "cat/b.jpg", "cat/c.png", "dog/d.png", "dog/e.jpeg", "dog/f.png", "dog/g.png",
                  "owl/h.png", "owl/i.jpg", "owl/j.png" }
  for k, name in ipairs(names) do
    local t = moco.rand({ 3, 10 + k, 12 + (k % 3) }, gen)
    moco.image.from_tensor(t):save(root .. "/" .. name)
  end
  moco.image.from_tensor(moco.rand({ 1, 14, 11 }, gen)):save(root .. "/owl/k_gray.png")
  write(root .. "/owl/l_cmyk.jpg", read("tests/fixtures/images/chelsea_cmyk.jpg"))
end
local folder = data.ImageFolder(root)

local function moco_v2_aug() return check.moco_v2_aug(8, { 0.485, 0.456, 0.406 }, { 0.229, 0.224, 0.225 }) end

local tests = {}

-- The same files as paths, as bytes, as decoded images and as tensors: bitwise the batches of
-- the ImageFolder, over two shuffled epochs of TwoCrops with MoCo v2's augmentation, with 0, 1
-- and 2 workers.
function tests.same_batches_as_image_folder()
  local kinds = {
    paths = function(i) return folder:path(i), folder:label(i) end,
    bytes = function(i) return data.bytes(read(folder:path(i))), folder:label(i) end,
    images = function(i) return folder:get(i) end,
    tensors = function(i)
      local image, label = folder:get(i)
      return image:to_tensor(), label + 0.0  -- a float label with an integer value is fine
    end,
  }
  local opts = { batch_size = 3, transform = T.TwoCrops(moco_v2_aug()), shuffle = true, drop_last = false, seed = 7,
                 workers = 2 }
  local ref = epochs_of(folder, opts, 2)
  check.eq("ImageFolder: 2 epochs of 4 batches", #ref, 8)
  for _, kind in ipairs({ "paths", "bytes", "images", "tensors" }) do
    for _, workers in ipairs({ 0, 1, 2 }) do
      opts.workers = workers
      local ok, why = same_list(epochs_of(lua_dataset(#folder, kinds[kind]), opts, 2), ref)
      check.ok(string.format("Lua dataset of %s, %d worker(s): ImageFolder's batches bitwise", kind, workers), ok, why)
    end
  end
  -- Without a transform (ToTensor's conversion) and with prefetch 1, drop_last, no shuffle.
  local plain = { batch_size = 4, workers = 2, prefetch = 1, shuffle = false, seed = 1,
                  transform = T.Compose { T.Resize { 6, 6 }, T.ToTensor() } }
  check.ok("paths, no shuffle, prefetch 1, drop_last: ImageFolder's batches",
           same_list(epochs_of(lua_dataset(#folder, kinds.paths), plain, 1), epochs_of(folder, plain, 1)))
  -- A Lua transform (T.Lambda) runs on the calling thread after the workers decoded.
  local lambda = { batch_size = 3, workers = 1, seed = 2, drop_last = false,
                   transform = T.TwoCrops(T.Compose { moco_v2_aug(), T.Lambda(function(x) return x end) }) }
  check.ok("paths, Lua transform: ImageFolder's batches",
           same_list(epochs_of(lua_dataset(#folder, kinds.paths), lambda, 1), epochs_of(folder, lambda, 1)))
  -- ds.channels as ImageFolder's option.
  local gray = { batch_size = 2, workers = 2, seed = 4, transform = T.Compose { T.Resize { 5, 5 }, T.ToTensor() } }
  local gray_prints = epochs_of(lua_dataset(#folder, kinds.paths, { channels = 1 }), gray, 1)
  check.ok("ds.channels = 1: ImageFolder(root, {channels = 1})'s batches",
           same_list(gray_prints, epochs_of(data.ImageFolder(root, { channels = 1 }), gray, 1)))
  -- set_epoch(1) gives what the second epoch gave.
  local ds = lua_dataset(#folder, kinds.paths)
  opts.workers = 2
  local loader <close> = data.Loader(ds, opts)
  loader:set_epoch(1)
  check.ok("set_epoch(1): the first batch of epoch 1", fingerprint(loader:next()) == ref[5])
end

-- get is called on the calling thread for the loader's order: each sample once per epoch, in
-- the order of the batches.
function tests.get_follows_the_loader_order()
  for _, workers in ipairs({ 0, 2 }) do
    local ds = lua_dataset(#folder, function(i) return folder:path(i), folder:label(i) end)
    local loader <close> = data.Loader(ds, { batch_size = 3, workers = workers, seed = 5, drop_last = false,
                                             transform = T.Compose { T.Resize { 4, 4 }, T.ToTensor() } })
    local order = {}
    for _, _, indices in loader:iter() do
      for j = 1, indices:size(1) do order[#order + 1] = math.floor(indices[j]) + 1 end
    end
    check.eq(string.format("%d worker(s): get(i) once per sample, in the loader's (shuffled) order", workers),
             table.concat(ds.calls, " "), table.concat(order, " "))
    check.ok(string.format("%d worker(s): the order is shuffled", workers), table.concat(order, " ") ~=
             "1 2 3 4 5 6 7 8 9 10 11 12")
  end
end

-- shard = {rank, count} takes the same samples with the same streams as for ImageFolder.
function tests.shards()
  local paths = lua_dataset(#folder, function(i) return folder:path(i), folder:label(i) end)
  for _, drop_last in ipairs({ true, false }) do
    for rank = 0, 2 do
      local opts = { batch_size = 2, workers = 2, seed = 3, drop_last = drop_last, shard = { rank = rank, count = 3 },
                     transform = T.TwoCrops(moco_v2_aug()) }
      local ok, why = same_list(epochs_of(paths, opts, 2), epochs_of(folder, opts, 2))
      check.ok(string.format("shard %d of 3, drop_last = %s: ImageFolder's shard", rank, tostring(drop_last)), ok, why)
    end
  end
end

-- A folder holding bad files, and Lua datasets failing in every way at the same positions:
-- with on_error = "skip" they give the ImageFolder's batches (the same replacements), and with
-- "raise" an error naming the item and the file.
local bad_root = tmpdir .. "/bad"
local BAD = { [3] = "empty", [6] = "text", [7] = "truncated", [10] = "empty" }
assert(os.execute(string.format("mkdir -p '%s/a' '%s/b'", bad_root, bad_root)))
do
  local gen = moco.Generator(5)
  local png = read("tests/fixtures/images/chelsea.png")
  for k = 1, 12 do
    local path = string.format("%s/%s/%02d.png", bad_root, k <= 6 and "a" or "b", k)
    if BAD[k] == "empty" then write(path, "")
    elseif BAD[k] == "text" then write(path, "<html>not found</html>")
    elseif BAD[k] == "truncated" then write(path, png:sub(1, #png // 2))
    else moco.image.from_tensor(moco.rand({ 3, 9, 9 }, gen)):save(path)
    end
  end
end
local bad_folder = data.ImageFolder(bad_root)

-- Failing in a different way at each bad position.
local function failing(i)
  local kind = BAD[i]
  if i == 3 then error("no such record")
  elseif i == 6 then return true, 0                        -- not an image
  elseif i == 7 then return data.bytes("\137PNG\r\n\26\n garbage"), 1   -- corrupt bytes
  elseif i == 10 then return tmpdir .. "/missing.png", 1   -- a file that does not exist
  end
  assert(kind == nil)
  return bad_folder:path(i), bad_folder:label(i)
end

function tests.skip_replaces_as_for_image_folder()
  local as_paths = function(i) return bad_folder:path(i), bad_folder:label(i) end
  for _, shuffle in ipairs({ false, true }) do
    local opts = { batch_size = 3, shuffle = shuffle, seed = 6, drop_last = false, on_error = "skip",
                   transform = T.TwoCrops(moco_v2_aug()), workers = 2 }
    local ref, ref_stats = epochs_of(bad_folder, opts, 2)
    check.ok("skip: ImageFolder's batches do not fail", not table.concat(ref, "\n"):find("error: ", 1, true))
    for _, workers in ipairs({ 0, 1, 2 }) do
      opts.workers = workers
      for name, fn in pairs({ paths = as_paths, failing = failing }) do
        local prints, stats = epochs_of(lua_dataset(12, fn), opts, 2)
        local ok, why = same_list(prints, ref)
        check.ok(string.format("skip, shuffle = %s, %d worker(s), %s: ImageFolder's batches", tostring(shuffle),
                               workers, name), ok, why)
        check.eq(string.format("skip, shuffle = %s, %d worker(s), %s: stats().skipped", tostring(shuffle), workers,
                               name), stats.skipped, ref_stats.skipped)
      end
    end
    check.eq("skip: 4 bad samples of 12, twice", ref_stats.skipped, 8)
  end
  -- A bad sample is not read again: the second epoch does not call get for it.
  local ds = lua_dataset(12, failing)
  epochs_of(ds, { batch_size = 4, shuffle = false, on_error = "skip", workers = 1,
                  transform = T.Compose { T.Resize { 4, 4 }, T.ToTensor() } }, 2)
  local threes = 0
  for _, i in ipairs(ds.calls) do if i == 3 then threes = threes + 1 end end
  check.eq("skip: a failed sample's get is not called again", threes, 1)
  -- Nothing decodes: each batch fails with one message instead of looping.
  local hopeless = lua_dataset(5, function() return data.bytes("nope"), 0 end)
  local prints = epochs_of(hopeless, { batch_size = 2, on_error = "skip", workers = 1, drop_last = false }, 1)
  check.ok("skip, nothing decodes: the batches fail saying so",
           #prints == 3 and prints[1]:find("none of its 5 samples could be decoded", 1, true), prints[1])
end

function tests.raise_names_the_item_and_the_file()
  local opts = { batch_size = 3, shuffle = false, drop_last = false, on_error = "raise",
                 transform = T.Compose { T.Resize { 4, 4 }, T.ToTensor() } }
  for _, workers in ipairs({ 0, 2 }) do
    opts.workers = workers
    local prints = epochs_of(lua_dataset(12, failing, { name = "records" }), opts, 1)
    local w = string.format("raise, %d worker(s): ", workers)
    check.eq(w .. "four batches", #prints, 4)
    check.ok(w .. "a raising get names get(i) and says what it raised",
             prints[1]:find("records: get(3) raised an error: ", 1, true) and prints[1]:find("no such record", 1, true),
             prints[1])
    check.ok(w .. "a wrong image names get(i) and the type",
             prints[2]:find("records: get(6) returned boolean as the image; expected a path", 1, true), prints[2])
    check.ok(w .. "bad bytes: 'bytes of item i'", prints[3]:find("records: bytes of item 7: ", 1, true), prints[3])
    check.ok(w .. "a missing file names the item and the file",
             prints[4]:find("records: item 10: " .. tmpdir .. "/missing.png", 1, true), prints[4])
    check.ok(w .. "each error is one line", not table.concat(prints, ""):find("\n", 1, true))
  end
  -- A batch that failed is dropped; the next one comes.
  local loader <close> = data.Loader(lua_dataset(6, function(i)
    if i == 2 then error("no such record") end
    return folder:path(i), 0
  end), opts)
  check.ok("raise: the first batch fails", not pcall(loader.next, loader))
  check.ok("raise: the loader goes on with the next batch", loader:next():size(1) == 3)
  -- The same files through ImageFolder fail the same batches.
  local ref = epochs_of(bad_folder, opts, 1)
  local paths = epochs_of(lua_dataset(12, function(i) return bad_folder:path(i), bad_folder:label(i) end), opts, 1)
  for b = 1, 4 do
    check.eq(string.format("raise, paths: batch %d fails as ImageFolder's does", b),
             paths[b]:sub(1, 6) == "error:", ref[b]:sub(1, 6) == "error:")
  end
  check.ok("raise, paths: the message names the file ImageFolder names",
           paths[1]:find(bad_root .. "/a/03.png: empty file", 1, true), paths[1])
end

function tests.labels()
  local path = folder:path(1)
  local function first_batch_error(label)
    local ds = lua_dataset(2, function() return path, label end)
    local loader <close> = data.Loader(ds, { batch_size = 2, workers = 1, transform = T.Compose { T.Resize { 3, 3 },
                                                                                                    T.ToTensor() } })
    local ok, _, labels = pcall(loader.next, loader)
    if ok then return nil, labels end
    return tostring(_)
  end
  for _, bad in ipairs({ { 2.5, "the label 2.5" }, { "3", 'the label the string "3"' }, { nil, "the label nil" },
                         { -2, "the label -2" }, { 2 ^ 24 + 1, "the label" }, { {}, "the label table" } }) do
    local err = first_batch_error(bad[1])
    check.ok("label " .. tostring(bad[1]) .. " is refused, naming it",
             err and err:find(bad[2], 1, true) and err:find("a label must be an integer", 1, true), err)
  end
  for _, good in ipairs({ 0, 7, -1, 3.0 }) do
    local err, labels = first_batch_error(good)
    check.ok("label " .. tostring(good) .. " is taken", not err and labels[1] == good and labels[2] == good, err)
  end
end

function tests.bad_datasets_and_arguments()
  check.raises("a number is not a dataset", "a dataset is a moco.Dataset or an object with #ds and ds:get(i)",
               data.Loader, 42)
  check.raises("a table without get", "this one has no get method", data.Loader, { 1, 2, 3 })
  check.raises("#ds not an integer", "#ds must be the number of samples", data.Loader,
               setmetatable({ get = function() end }, { __len = function() return 2.5 end }))
  check.raises("#ds raising", "#ds raised an error: boom", data.Loader,
               setmetatable({ get = function() end }, { __len = function() error("boom", 0) end }))
  check.raises("an empty Lua dataset", "Loader: records is empty", data.Loader,
               lua_dataset(0, function() end, { name = "records" }))
  check.raises("drop_last over too few samples", "has 2 samples, fewer than batch_size 4", data.Loader,
               lua_dataset(2, function() end), { batch_size = 4 })
  check.raises("channels must be 0, 1 or 3", "channels must be 3 (RGB), 1 (gray) or 0", data.Loader,
               lua_dataset(2, function() end, { channels = 2 }))
  check.raises("data.bytes of a number", "data.bytes: expected the encoded file as a string, got number",
               data.bytes, 5)
  local b = data.bytes("abc")
  check.ok("data.bytes: #b, b.data, tostring", #b == 3 and b.data == "abc" and tostring(b) == "moco.Bytes (3 bytes)")
  -- A plain table's length works as #ds: the samples in its array part.
  local list = { folder:path(1), folder:path(2), get = function(self, i) return self[i], 0 end }
  local loader <close> = data.Loader(list, { batch_size = 2, workers = 1, transform = T.Compose { T.Resize { 3, 3 },
                                                                                                    T.ToTensor() } })
  check.eq("a plain table: #ds is its length", #loader, 1)
  check.eq("a plain table: one batch of two", loader:next():size(1), 2)
  check.ok("loader.dataset is the Lua dataset", loader.dataset == list)
end

-- get may not use the loader that reads it; other loaders are fine.
function tests.get_cannot_use_its_loader()
  local loader
  local ds = lua_dataset(4, function(i)
    if i == 2 then loader:next() end
    if i == 3 then loader:close() end
    return folder:path(i), 0
  end)
  for _, workers in ipairs({ 0, 2 }) do
    loader = data.Loader(ds, { batch_size = 4, shuffle = false, workers = workers,
                               transform = T.Compose { T.Resize { 3, 3 }, T.ToTensor() } })
    local ok, err = pcall(loader.next, loader)
    check.ok(string.format("%d worker(s): next() from get is an error of that sample", workers),
             not ok and tostring(err):find("get(2) raised an error: ", 1, true) and
             tostring(err):find("next() called from the dataset's get(), on the loader that is reading it", 1, true),
             tostring(err))
    ok, err = pcall(loader.set_epoch, loader, 0)
    check.ok(string.format("%d worker(s): the loader is still usable", workers), ok, err)
    loader:close()
  end
  -- close() from get, with on_error = "skip": the sample is replaced, and the loader stays open.
  loader = data.Loader(lua_dataset(4, function(i)
    if i == 3 then loader:close() end
    return folder:path(i), 0
  end), { batch_size = 4, shuffle = false, workers = 1, on_error = "skip",
          transform = T.Compose { T.Resize { 3, 3 }, T.ToTensor() } })
  local x, _, indices = loader:next()
  check.ok("close() from get: refused, and the sample replaced", x:size(1) == 4 and indices[3] == 3, tostring(indices))
  loader:close()
  -- Another loader inside get works (a dataset reading another one).
  local inner <close> = data.Loader(folder, { batch_size = 1, shuffle = false, workers = 1,
                                              transform = T.Compose { T.Resize { 3, 3 }, T.ToTensor() } })
  local outer <close> = data.Loader(lua_dataset(3, function(i)
    local image = inner:next()
    return image[1], i - 1
  end), { batch_size = 3, shuffle = false, workers = 1 })
  local images, labels = outer:next()
  check.ok("get may use another loader", images:size(1) == 3 and labels[3] == 2)
end

check.run(tests)
