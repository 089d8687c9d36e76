-- tests/bench/bench_loop.lua: the real training loop against the compute-only step, in one
-- process (issue 10: "the loader, logging and Lua glue must never be what a user waits for").
--   moco-lua tests/bench/bench_loop.lua [quickstart|cifar10] [--rounds N] [--steps N]
--
-- A round runs --steps steps of moco.train.Trainer over the recipe's loader (its dataset,
-- augmentation, TwoCrops, 2 workers; the lr schedule, the meters and the progress lines,
-- written to a function that drops them), then as many model:step calls on one fixed
-- batch: the compute-only step.  Alternating the two in one process puts both under the
-- same drift of this noisy machine; the summary is total time against total time.
--   quickstart  recipes/quickstart.lua's settings on Fashion-MNIST (dataset-fashion-mnist)
--   cifar10     recipes/cifar10.lua's settings on a synthetic CIFAR-10 (random pixels, 10240
--               training images in the binary format, written to a temp dir)
local pretrain = require "moco.pretrain"
local train = require "moco.train"

local args = { ... }
local name = args[1] or "quickstart"
local rounds, steps
for i = 2, #args do
  if args[i] == "--rounds" then rounds = math.tointeger(tonumber(args[i + 1])) end
  if args[i] == "--steps" then steps = math.tointeger(tonumber(args[i + 1])) end
end

-- The recipes' defaults (recipes/quickstart.lua, recipes/cifar10.lua), restated: a recipe
-- is a script, not a table to import.
local CONFIGS = {
  quickstart = {
    steps = 50, rounds = 6,
    defaults = {
      data = "fashion-mnist", arch = "resnet8", ["in-channels"] = 1, ["image-size"] = 28, ["stem-stride"] = 2,
      ["batch-size"] = 128, lr = 0.06, wd = 5e-4, momentum = 0.9, epochs = 25, cos = true, ["cos-per-step"] = true,
      schedule = {}, ["crop-min"] = 0.4, ["moco-dim"] = 128, ["moco-k"] = 1024, ["moco-m"] = 0.99,
      ["moco-t"] = 0.05, mlp = true, ["bn-splits"] = 8, ["print-freq"] = 20,
    },
  },
  cifar10 = {
    steps = 3, rounds = 4,
    defaults = {
      arch = "resnet18", ["cifar-stem"] = true, ["bn-splits"] = 8, ["batch-size"] = 512, lr = 0.06,
      wd = 5e-4, momentum = 0.9, ["moco-dim"] = 128, ["moco-k"] = 4096, ["moco-m"] = 0.99, ["moco-t"] = 0.1,
      cos = true, epochs = 200, ["image-size"] = 32, schedule = {}, symmetric = false, mlp = false,
    },
  },
}
local c = CONFIGS[name] or error("bench_loop.lua: unknown configuration " .. tostring(name) .. " (quickstart, cifar10)")
rounds, steps = rounds or c.rounds, steps or c.steps

local tmp
if name == "cifar10" then
  tmp = os.tmpname()
  os.remove(tmp)
  assert(os.execute("mkdir -p '" .. tmp .. "'"))
  local random = assert(io.open("/dev/urandom", "rb"))
  for _, file in ipairs{ "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch" } do
    local f = assert(io.open(string.format("%s/%s.bin", tmp, file), "wb"))
    for r = 0, 2047 do f:write(string.char(r % 10), random:read(3072)) end
    f:close()
  end
  random:close()
  c.defaults.data = "cifar10:" .. tmp
end

local opts = pretrain.parse({ "--workers", "2" }, c.defaults, "bench_loop")
local train_ds, _, kind = pretrain.datasets(opts)
local function recipe_loader()
  return moco.data.Loader(train_ds, {
    batch_size = opts["batch-size"], transform = moco.transforms.TwoCrops(pretrain.augmentation(opts, kind)),
    workers = opts.workers, shuffle = true, drop_last = true, seed = opts.seed,
  })
end
-- One batch for the compute-only steps, from a loader of its own (the trainer's must yield
-- whole epochs; a loader's batches are recycled, hence the copies).
local first = recipe_loader()
local q0, k0 = first:next()
q0, k0 = q0:clone(), k0:clone()
first:close()

local model = pretrain.build_model(opts, #train_ds)
local loader = recipe_loader()
local trainer = train.Trainer(model, loader, {
  epochs = opts.epochs, cos = opts.cos, cos_per_step = opts["cos-per-step"], lr = opts.lr,
  print_freq = opts["print-freq"], log = function() end,
})
for _ = 1, 2 do model:step(q0, k0) end -- warm-up: workspaces, the arena, the loader's threads
trainer:run{ steps = 2 }

local batch = opts["batch-size"]
print(string.format("%s: %s, batch %d, %d rounds of %d steps (loop, then compute-only), %d threads", name, opts.arch,
                    batch, rounds, steps, moco.get_num_threads()))
local t_loop, t_compute = 0, 0
for r = 1, rounds do
  local t0 = moco.time()
  trainer:run{ steps = steps }
  local t1 = moco.time()
  for _ = 1, steps do model:step(q0, k0) end
  local t2 = moco.time()
  t_loop, t_compute = t_loop + (t1 - t0), t_compute + (t2 - t1)
  print(string.format("  round %d: loop %7.1f img/s, compute-only %7.1f img/s", r, steps * batch / (t1 - t0),
                      steps * batch / (t2 - t1)))
end
local n = rounds * steps * batch
print(string.format("%s: loop %.1f img/s, compute-only %.1f img/s: the loop runs at %.1f%% of the compute-only step",
                    name, n / t_loop, n / t_compute, 100 * t_compute / t_loop))
loader:close()
if tmp then os.execute("rm -rf '" .. tmp .. "'") end
