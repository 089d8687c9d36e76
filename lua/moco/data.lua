-- lua/moco/data.lua: datasets and the parallel batch loader (moco.data).
--
--   ds = data.ImageFolder(root [, {channels = 3, quiet = false}])
--   ds = data.ImageFiles(root [, {channels = 3, quiet = false}])   -- no classes, label -1
--   ds = data.FileList(list_path [, {root = dir, channels = 3, delimiter = "auto"}])
--   ds = data.CIFAR10(root [, {train = true}])        -- also data.CIFAR100 (fine labels)
--   ds = data.IDX(images_path, labels_path [, {classes = {...}}])
--   ds = data.FashionMNIST{train = true [, root = "/usr/share/datasets/fashion-mnist"]}
--   ds = data.Subset(ds, n | {positions})   -- the first n samples, or those positions
--   train, test, kind, test_transform = data.named(name [, {image_size = 224}])
--                                  -- what a recipe's --data names (below); data.STATS
--                                  -- holds each kind's normalisation mean and std
--   ds = any object with #ds and ds:get(i) -> image, label     -- a dataset written in Lua (below)
--   #ds, ds.classes (names; ds.classes[label + 1]; nil for ImageFiles and FileList), ds.class_to_idx, ds.name
--   image, label = ds:get(i)       -- i from 1 to #ds; label is torchvision's 0-based value
--   ds[i]                          -- {image, label} (an index can return one value only)
--   ds:label(i), ds:path(i) (ImageFolder, ImageFiles, FileList), ds:targets() (a tensor of all labels)
--
--   loader = data.Loader(ds, {batch_size = 256, transform = T.TwoCrops(aug), workers = 2,
--                             shuffle = true, drop_last = true, seed = 0, prefetch = 2,
--                             on_error = "raise",    -- or "skip"
--                             shard = {rank = r, count = n}})  -- this rank's part, as below
--   for im_q, im_k, labels, indices in loader:iter() do ... end   -- TwoCrops
--   for images, labels, indices in loader:iter() do ... end       -- any other transform, or none
--   loader:next()  -> the same values, or nil at the end of the epoch
--   (indices: the samples' 0-based dataset indices, a float tensor (N), e.g. memory-bank rows)
--   #loader, loader:set_epoch(e), loader:epoch(), loader:set_transform(t), loader:close()
--   (also __gc and `local loader <close> = ...`), loader:stats() -> {wait_seconds, batches,
--   samples, skipped} (since creation or loader:reset_stats())
--
-- Datasets written in Lua (torch.utils.data.Dataset's map-style protocol: __len__ and
-- __getitem__ become #ds and ds:get(i)).  Any table or userdata the loader can take #ds of
-- (its __len, or a plain table's length) and whose ds:get(i), for i from 1 to #ds, returns
-- image, label, where image is
--   "path/to/file.jpg"   a path string: the loader's worker threads read and decode it,
--                        with ImageFolder's decoders (PNG, JPEG incl. CMYK, GIF, WebP);
--   data.bytes(s)        an encoded file held in a Lua string s (read from a tar, a
--                        database...), decoded by the workers too;
--   a moco.Image         used as it is (what the C datasets' get returns);
--   a moco.Tensor        (C, H, W) or (H, W) with values in [0, 1], made an image as
--                        moco.image.from_tensor does (exact for a to_tensor result).
-- and label an integer: the 0-based class, or -1 for none.  A plain string is always a
-- path and encoded bytes must be wrapped: both are strings, and guessing by content (a
-- file name can look like anything, bytes can be valid file names) would misread one as
-- the other one day; torchvision keeps them apart the same way (read_image(path) and
-- decode_image(data)).  Optional fields: ds.channels (3 by default; 1 or 0 = as stored,
-- as ImageFolder's option, applied to paths and bytes only: a decoded image is yours) and
-- ds.name (for messages; "Lua dataset" by default).  #ds is read once, when the loader is
-- made.  Lua is not thread-safe, so get runs on the calling thread, inside next(): before
-- the workers start a batch, the loader calls get for its samples (in the loader's order,
-- so shuffle, seed, shard and drop_last act as for any dataset) and up to `prefetch`
-- batches ahead; the workers then decode and augment in parallel with the same per-sample
-- streams as for a C dataset, so a Lua dataset returning an ImageFolder's paths gives
-- bitwise that ImageFolder's batches.  get should depend on i alone (it is called again
-- for batches remade after set_epoch or set_transform) and may not use the loader that
-- reads it.  A get that raises, a wrong image or label, a missing or corrupt file and bad
-- bytes make their sample fail with a message naming get(i) or "item i" and the file (or
-- "bytes of item i"), as a corrupt file does: on_error = "raise" fails the batch,
-- on_error = "skip" replaces the sample.  data.bytes(s).data is s; #b its length.
--
-- Images are moco.Image values (8-bit HWC, as PIL images; gray data sets have 1 channel).
-- Batches are float tensors (N, C, H, W) and labels a float tensor (N) of 0-based classes.
-- Without a transform, or when a pipeline ends on an image, the loader applies ToTensor's
-- conversion to [0, 1].
--
-- How the loader behaves (the details are in core/data/loader.h):
--  * Determinism.  Epoch e's order is a permutation drawn from (seed, e); sample i gets the
--    random stream rng_derive(seed, e, i), and TwoCrops draws both crops from it.  Batches
--    are therefore bitwise identical whatever the number of workers.
--  * Epochs.  iter() and next() go through the rest of the current epoch; at its end the
--    loader moves on to the next epoch (a new order).  set_epoch(e) jumps to the start of
--    epoch e (resuming a run); at the start of that epoch already, it changes nothing.
--  * Buffers.  Workers fill a ring of `prefetch + 1` reusable batch buffers.  iter() CLOSES
--    the tensors of a batch when the loop moves on, so the same memory serves the next
--    batches; clone() what must outlive the loop.  A batch from next() is never closed or
--    overwritten: while you hold it, the loader makes new buffers instead.
--  * set_transform(t) takes effect from the next batch that next()/iter() returns: batches
--    already prepared (or in progress) with the old transform are thrown away and made
--    again, so the batch where the switch happens never depends on timing.  It costs up to
--    `prefetch` batches of redone work.
--  * Errors.  With on_error = "raise" (the default) a sample that fails (a corrupt,
--    truncated or unsupported image) fails its batch: next() raises an error naming the
--    file, the batch is dropped, and the next call continues with the following batch.
--    With on_error = "skip", a sample that fails to decode is replaced by the next sample
--    of the epoch order (wrapping around) that decodes, augmented with the failed sample's
--    random stream; batches stay full and still do not depend on the number of workers.
--    Each failing file gives one warning on stderr ("warning: data.Loader: skipped
--    <file>: <reason> ...") and is not read again; stats().skipped counts the replaced
--    samples.  Nothing is ever skipped silently, and the dataset's indices never change
--    (they stay torchvision's).  A failing transform still raises.
--  * Sharding (torch's DistributedSampler).  shard = {rank = r, count = n} (0-based rank;
--    default: none) makes this loader take the epoch positions r, r + n, r + 2n, ... of the
--    shared order (same seed and epoch on every rank), cut into batches of batch_size B.
--    The n ranks' batch b, interleaved (row j of rank r at row r + n*j), is then bitwise
--    the batch b of one loader with batch_size B*n.  #loader is the same on every rank:
--    floor(#ds / (B*n)) with drop_last, else ceil(#ds / (B*n)), the order being padded to a
--    multiple of n by wrapping around to its start (a few samples repeated, as
--    DistributedSampler(drop_last = false) does).
--  * Lua transforms.  A plain function, or a pipeline holding a T.Lambda, cannot run in the
--    C worker threads: the workers then only decode, and the transform runs on the calling
--    thread inside next() (slower: one thread, and the Lua VM), with the same per-sample
--    generator streams (passed as the transform's second argument).
--  * Ctrl-C.  A next() waiting for workers notices moco's interrupt flag within 50 ms and
--    raises "interrupted"; the loader stays usable.
--  * Threads.  The workers run beside the model's BLAS threads.  Rule: workers +
--    moco.get_num_threads() <= cores (data.cpu_count()) when decoding and augmentation are
--    heavy (JPEG, large crops); data.thread_advice(workers) gives the BLAS thread count
--    that fits.  The loader prints a one-time note when a new loader breaks the rule.  For
--    small in-memory datasets (CIFAR, Fashion-MNIST) the workers sleep once the ring is
--    full, and a light overlap is harmless.
local core = require "moco.core"
local C = core._data

local data = {}

-- Options not in `known` are errors: a typo must not silently fall back to a default.
local check_options = require("moco.nn").check_options

local function default(v, d)
  if v == nil then return d end
  return v
end

local function image_tree(name, open)
  return function(root, opts)
    opts = check_options("data." .. name, opts, { channels = true, quiet = true })
    if type(root) ~= "string" then error("data." .. name .. ": root must be a path, got " .. type(root), 2) end
    local ds, skipped, example = open(root, default(opts.channels, 3))
    if skipped > 0 and not opts.quiet then
      io.stderr:write(string.format("data.%s(%s): skipped %d file(s) without an image extension, e.g. %s\n",
                                    name, root, skipped, example))
    end
    return ds
  end
end
data.ImageFolder = image_tree("ImageFolder", C.image_folder)
-- ImageFolder without classes (torchvision has no such dataset): every image under root.
data.ImageFiles = image_tree("ImageFiles", C.image_files)

-- data.FileList(list_path [, {root = dir, channels = 3, delimiter = "auto"}]): a text or CSV
-- file of paths relative to root (default: the list's directory), each optionally followed
-- by a 0-based label; delimiter "auto", "," or "whitespace".
function data.FileList(list_path, opts)
  opts = check_options("data.FileList", opts, { root = true, channels = true, delimiter = true })
  if type(list_path) ~= "string" then error("data.FileList: list_path must be a path, got " .. type(list_path), 2) end
  if opts.root ~= nil and type(opts.root) ~= "string" then
    error("data.FileList: root must be a path, got " .. type(opts.root), 2)
  end
  local delimiter = default(opts.delimiter, "auto")
  if delimiter ~= "auto" and delimiter ~= "," and delimiter ~= "whitespace" then
    error(string.format("data.FileList: delimiter must be \"auto\", \",\" or \"whitespace\", got %s", tostring(delimiter)), 2)
  end
  return C.file_list(list_path, opts.root, default(opts.channels, 3), delimiter)
end

local function cifar(name, open)
  return function(root, opts)
    opts = check_options("data." .. name, opts, { train = true })
    if type(root) ~= "string" then error("data." .. name .. ": root must be a path, got " .. type(root), 2) end
    return open(root, default(opts.train, true))
  end
end
data.CIFAR10 = cifar("CIFAR10", C.cifar10)
data.CIFAR100 = cifar("CIFAR100", C.cifar100)

function data.IDX(images, labels, opts)
  opts = check_options("data.IDX", opts, { classes = true })
  return C.idx(images, labels, opts.classes)
end

-- data.FashionMNIST{train = true, root = ...} or data.FashionMNIST(root [, {train = ...}])
function data.FashionMNIST(root, opts)
  if type(root) == "table" then root, opts = nil, root end
  opts = check_options("data.FashionMNIST", opts, { train = true, root = true })
  return C.fashion_mnist(root or opts.root, default(opts.train, true))
end

-- data.Subset(ds, n) -- the first n samples; data.Subset(ds, {i, j, ...}) -- those positions
-- (1-based), as torch.utils.data.Subset.
function data.Subset(ds, which)
  return C.subset(ds, which)
end

data.bytes = C.bytes
data.cpu_count = C.cpu_count
data.thread_advice = C.thread_advice

-- The function that runs a transform in Lua, for transforms the C workers cannot run.
local function lua_apply_of(t)
  if type(t) == "function" then return t end
  local ok, apply = pcall(function() return t.apply end)
  if ok and type(apply) == "function" then
    return function(image, generator) return apply(t, image, generator) end
  end
  local mt = getmetatable(t)
  if type(mt) == "table" and mt.__call then
    return function(image, generator) return t(image, generator) end
  end
  return nil
end

-- transform, two_crops, lua_apply for the C side.
local function resolve_transform(t)
  local two_crops = false
  if type(t) == "table" and t.kind == "TwoCrops" then
    two_crops = true
    t = t.transform
    if t == nil then error("data.Loader: TwoCrops needs a transform", 3) end
  end
  if t == nil then return nil, two_crops, nil end
  return t, two_crops, lua_apply_of(t)
end

local warned_threads = false

local loader_options = {
  batch_size = true, transform = true, workers = true, shuffle = true, drop_last = true,
  seed = true, prefetch = true, on_error = true, shard = true,
}

-- shard = {rank = r, count = n} -> r, n (0-based rank); nil -> 0, 1 (no sharding).
local function shard_of(shard)
  if shard == nil then return 0, 1 end
  local ok = type(shard) == "table"
  local rank, count = ok and shard.rank, ok and shard.count
  local got = type(shard)
  if ok then
    for k in pairs(shard) do
      if k ~= "rank" and k ~= "count" then ok, got = false, "a table with key " .. tostring(k) end
    end
    ok = ok and math.type(rank) == "integer" and math.type(count) == "integer" and
         count >= 1 and count <= 0x7fffffff and rank >= 0 and rank < count
    if got == "table" then got = string.format("{rank = %s, count = %s}", tostring(rank), tostring(count)) end
  end
  if not ok then
    error("data.Loader: option shard must be {rank = r, count = n} with integers 0 <= r < n, got " .. got, 3)
  end
  return rank, count
end

local function is_moco_dataset(ds)
  local mt = getmetatable(ds)
  return type(ds) == "userdata" and type(mt) == "table" and mt.__name == "moco.Dataset"
end

local function is_callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

-- A dataset written in Lua (see the header): its length, channels and name for the C side.
local function lua_dataset(ds)
  local what = "data.Loader: a dataset is a moco.Dataset or an object with #ds and ds:get(i) -> image, label"
  if type(ds) ~= "table" and type(ds) ~= "userdata" then error(string.format("%s, got %s", what, type(ds)), 3) end
  local ok, n = pcall(function() return #ds end)
  if not ok then error(string.format("%s; #ds raised an error: %s", what, tostring(n)), 3) end
  if math.type(n) ~= "integer" or n < 0 then
    error(string.format("data.Loader: #ds must be the number of samples, a non-negative integer, got %s", tostring(n)), 3)
  end
  local get
  ok, get = pcall(function() return ds.get end)
  if not ok or not is_callable(get) then error(string.format("%s; this one has no get method", what), 3) end
  local channels = default(ds.channels, 3)
  if channels ~= 0 and channels ~= 1 and channels ~= 3 then
    error(string.format("data.Loader: the dataset's channels must be 3 (RGB), 1 (gray) or 0 (as stored), got %s",
                        tostring(channels)), 3)
  end
  local name = type(ds.name) == "string" and ds.name or "Lua dataset"
  return n, channels, name
end

function data.Loader(ds, opts)
  opts = check_options("data.Loader", opts, loader_options)
  local o = {
    batch_size = default(opts.batch_size, 1),
    workers = default(opts.workers, 2),
    prefetch = default(opts.prefetch, 2),
    shuffle = default(opts.shuffle, true),
    drop_last = default(opts.drop_last, true),
    seed = default(opts.seed, 0),
    on_error = default(opts.on_error, "raise"),
  }
  o.shard_rank, o.shard_count = shard_of(opts.shard)
  if not is_moco_dataset(ds) then o.length, o.channels, o.name = lua_dataset(ds) end
  if o.on_error ~= "raise" and o.on_error ~= "skip" then
    error(string.format("data.Loader: on_error must be \"raise\" or \"skip\", got %s", tostring(o.on_error)), 2)
  end
  local t, two_crops, apply = resolve_transform(opts.transform)
  local loader = C.loader(ds, o, t, two_crops, apply, core.Generator())
  local blas, cores = core.get_num_threads(), C.cpu_count()
  -- (under MPI, rank 0 alone says it: every rank has the same share)
  if not warned_threads and o.workers + blas > cores and (not core._dist or core._dist.rank() == 0) then
    warned_threads = true
    io.stderr:write(string.format(
      "note: data.Loader: %d worker(s) + %d BLAS thread(s) > %d core(s); when decoding is heavy, " ..
      "moco.set_num_threads(%d) avoids oversubscription\n", o.workers, blas, cores, C.thread_advice(o.workers)))
  end
  return loader
end

-- loader:set_transform(t): see the header for exactly when it takes effect.
local methods = C.loader_methods()
function methods.set_transform(loader, t)
  local transform, two_crops, apply = resolve_transform(t)
  loader:_set_transform(transform, two_crops, apply)
end

-- The normalisation statistics of each kind of dataset (the mean and std of ToTensor's
-- [0, 1] values per channel), as the official recipes and torchvision's examples use them.
data.STATS = {
  imagenet = { mean = { 0.485, 0.456, 0.406 }, std = { 0.229, 0.224, 0.225 } },
  cifar = { mean = { 0.4914, 0.4822, 0.4465 }, std = { 0.2023, 0.1994, 0.2010 } },
  ["fashion-mnist"] = { mean = { 0.2860 }, std = { 0.3530 } },
}

local function is_directory(p) return core._io.kind(p) == "directory" end

-- The datasets a recipe's --data names: "fashion-mnist" (or ""), "cifar10:ROOT" (the
-- binary batches), or a folder with train/ (and val/) class folders (else the folder itself
-- is the training set).  Returns train, test (or nil: a folder without val/), the kind
-- ("fashion-mnist", "cifar", "imagenet") and the test-time transform (ToTensor + Normalize
-- with data.STATS; for folders Resize(size * 256 / 224) + CenterCrop(size) first, as the
-- official evaluation).  opts.image_size: the folders' crop (224).
function data.named(name, opts)
  opts = opts or {}
  local T = require "moco.transforms"
  local function normalize(kind) return T.Normalize(data.STATS[kind].mean, data.STATS[kind].std) end
  if name == "fashion-mnist" or name == "" or name == nil then
    return data.FashionMNIST{ train = true }, data.FashionMNIST{ train = false }, "fashion-mnist",
           T.Compose{ T.ToTensor(), normalize("fashion-mnist") }
  end
  local root = name:match("^cifar10:(.+)$")
  if root then
    return data.CIFAR10(root, { train = true }), data.CIFAR10(root, { train = false }), "cifar",
           T.Compose{ T.ToTensor(), normalize("cifar") }
  end
  if not is_directory(name) then error(string.format("--data %s: no such directory", name), 0) end
  local train_dir = is_directory(name .. "/train") and name .. "/train" or name
  local val_dir = is_directory(name .. "/val") and name .. "/val" or nil
  local size = opts.image_size or 224
  local resize = math.floor(size * 256 / 224 + 0.5)
  local test_t = T.Compose{ T.Resize(resize), T.CenterCrop(size), T.ToTensor(), normalize("imagenet") }
  return data.ImageFolder(train_dir), val_dir and data.ImageFolder(val_dir) or nil, "imagenet", test_t
end

return data
