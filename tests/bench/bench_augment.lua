-- tests/bench/bench_augment.lua: data-pipeline throughput (samples/s through data.Loader)
-- for the MoCo v2 augmentation, per number of loader workers, and torchvision's figure for
-- the same pipelines (tests/bench/bench_augment.py) when Debian's python3-torchvision is
-- installed.
--   moco-lua tests/bench/bench_augment.lua [--quick] [--json out.json] [--no-torch]
--
-- Two workloads, both T.TwoCrops of RandomResizedCrop(size, {scale = {0.2, 1}}),
-- RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), RandomGrayscale(0.2),
-- RandomApply(GaussianBlur{0.1, 2}, 0.5), RandomHorizontalFlip(), ToTensor(), Normalize:
--   cifar32   a synthetic CIFAR-10 binary file (random pixels) in a temp dir, size 32
--   jpeg224   a temp ImageFolder of ~500x375 JPEGs (quality 90) made from the committed
--             fixture photos (random crops resized up, with grain so that they compress
--             like photos, ~100 KB each), decoded and augmented to 224
-- A sample is one dataset image giving two augmented views.  The first batch (thread
-- start, first reads) is not timed; the rest of the epoch is.  The file system cache is
-- warm (the files were just written), as after the first epoch of a real run.
local args = { ... }
local quick, json_out, torch = false, nil, true
for i = 1, #args do
  if args[i] == "--quick" then quick = true end
  if args[i] == "--json" then json_out = args[i + 1] end
  if args[i] == "--no-torch" then torch = false end
end

local data, T, F = moco.data, moco.transforms, moco.transforms.functional
moco.set_num_threads(1) -- no BLAS work here; keeps the cores for the loader workers

local tmp = os.tmpname()
os.remove(tmp)
assert(os.execute("mkdir -p '" .. tmp .. "/cifar' '" .. tmp .. "/jpeg/photos'"))

-- The MoCo v2 augmentation, the same pipeline the loader tests run (tests/lua/check.lua).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local function moco_v2(size, mean, std) return T.TwoCrops(check.moco_v2_aug(size, mean, std)) end

-- A CIFAR-10 test_batch.bin of n records of random pixels.
local function write_cifar(path, n)
  local random = assert(io.open("/dev/urandom", "rb"))
  local f = assert(io.open(path, "wb"))
  for r = 0, n - 1 do f:write(string.char(r % 10), random:read(3072)) end
  f:close()
  random:close()
end

-- n JPEGs of 500x375 made from the fixture photos.
local function write_photos(dir, n)
  local sources = {}
  for _, name in ipairs { "coffee.jpg", "chelsea.png", "astronaut.png", "coffee_progressive.jpg" } do
    sources[#sources + 1] = moco.image.load("tests/fixtures/images/" .. name)
  end
  local gen = moco.Generator(2)
  local bytes = 0
  for i = 1, n do
    local src = sources[(i - 1) % #sources + 1]
    local h = math.floor(src.height * (0.6 + 0.4 * gen:uniform()))
    local w = math.min(src.width, math.floor(h * 4 / 3))
    local top = math.floor((src.height - h) * gen:uniform())
    local left = math.floor((src.width - w) * gen:uniform())
    local img = F.resized_crop(src, top, left, h, w, { 375, 500 })
    local x = img:to_tensor():add(moco.rand({ 3, 375, 500 }, gen):sub(0.5):mul(0.3)):clamp(0, 1)
    local path = string.format("%s/%04d.jpg", dir, i)
    moco.image.from_tensor(x):save(path, 90)
    local f = assert(io.open(path, "rb"))
    bytes = bytes + f:seek("end")
    f:close()
  end
  return bytes / n
end

local n_cifar = quick and 2048 or 10240
local n_photos = quick and 96 or 384
write_cifar(tmp .. "/cifar/test_batch.bin", n_cifar)
local avg = write_photos(tmp .. "/jpeg/photos", n_photos)
print(string.format("data: %d CIFAR-like records; %d JPEGs of 500x375 (%.0f KB on average); %d cores",
                    n_cifar, n_photos, avg / 1024, data.cpu_count()))

local workloads = {
  { name = "cifar32", ds = data.CIFAR10(tmp .. "/cifar", { train = false }), batch = 256,
    transform = moco_v2(32, { 0.4914, 0.4822, 0.4465 }, { 0.2470, 0.2435, 0.2616 }) },
  { name = "jpeg224", ds = data.ImageFolder(tmp .. "/jpeg"), batch = 32,
    transform = moco_v2(224, { 0.485, 0.456, 0.406 }, { 0.229, 0.224, 0.225 }) },
}

local results, order = {}, {}
for _, w in ipairs(workloads) do
  for _, workers in ipairs { 1, 2 } do
    local loader <close> = data.Loader(w.ds, { batch_size = w.batch, workers = workers, transform = w.transform,
                                               shuffle = true, drop_last = true, seed = 0 })
    loader:next() -- warm-up: threads start, first reads
    local n, t0 = 0, moco.time()
    for q in loader:iter() do n = n + q:size(1) end
    local dt = moco.time() - t0
    local key = string.format("augment %s w%d", w.name, workers)
    results[key] = n / dt
    order[#order + 1] = key
    print(string.format("%-20s %8.1f samples/s  (%d samples x 2 views in %.2f s)", key, n / dt, n, dt))
  end
end

local function write_json(path, values, keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = string.format('"%s": %.3f', k, values[k]) end
  local f = assert(io.open(path, "w"))
  f:write("{" .. table.concat(parts, ", ") .. "}\n")
  f:close()
end
if json_out then write_json(json_out, results, order) end

-- torchvision on the same files, in the same run.
local PY = "/usr/bin/python3"
if torch and os.execute(PY .. " -c 'import torch, torchvision' 2>/dev/null") then
  local out = tmp .. "/torch.json"
  local cmd = string.format("%s tests/bench/bench_augment.py --cifar '%s/cifar' --folder '%s/jpeg' --json '%s'%s", PY,
                            tmp, tmp, out, quick and " --quick" or "")
  print("== torchvision (" .. PY .. ", DataLoader with num_workers = the same counts)")
  if os.execute(cmd) then
    local f = assert(io.open(out))
    local text = f:read("a")
    f:close()
    print("== ratio (moco-lua / torchvision; above 1 means moco-lua is faster)")
    for _, k in ipairs(order) do
      local v = tonumber(text:match('"' .. k:gsub("%p", "%%%0") .. '": ([%d%.]+)'))
      if v then print(string.format("%-20s %6.2fx  (%.1f vs %.1f samples/s)", k, results[k] / v, results[k], v)) end
    end
  else
    print("bench_augment.py failed")
  end
elseif torch then
  print("== torchvision not installed for " .. PY .. " (apt-get install python3-torchvision): no ratio")
end
os.execute("rm -rf '" .. tmp .. "'")
