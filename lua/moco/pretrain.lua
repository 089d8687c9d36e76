-- lua/moco/pretrain.lua: what the MoCo recipes share (moco.pretrain).
--
--   local opts = pretrain.parse(arg, defaults, description)  -- official flag names
--   local model, history, knn, run = pretrain.run(opts)      -- data, model, loop, monitor
--   pretrain.write_report(run)                               -- after adding run.results
--
-- The options and their names follow the official main_moco.py and the CIFAR-10 demo
-- (--arch, --lr/--learning-rate, --batch-size/-b, --epochs, --schedule, --cos, --wd/
-- --weight-decay, --moco-dim, --moco-k, --moco-m, --moco-t, --mlp, --aug-plus, --bn-splits,
-- --symmetric, --knn-k, --knn-t ..., and the dataset as a bare argument); each recipe gives
-- its own defaults.  See docs/recipes.md.
--
-- Every run owns a run directory (moco.rundir; --out DIR, default runs/<recipe>-<date>,
-- printed at start): config.json first (so an unwritable directory fails before any data
-- is loaded), a checkpoint after every epoch (the last --keep-checkpoints kept, the best by
-- kNN as model_best.safetensors), log.jsonl, the pictures and report.html (refreshed every
-- epoch).  Ctrl-C or SIGTERM finishes the current step, writes a checkpoint, prints the
-- command that resumes, and exits with status 130/143.
--
-- Resuming (docs/checkpoints.md): --resume DIR continues the run in DIR with nothing else
-- on the command line: the settings come from its newest usable checkpoint (a corrupt,
-- truncated or diverged newer one is passed over with a note), the paths (the data) from
-- DIR/config.json, and options given again on the command line override both, with a note
-- when that changes the results.  --resume FILE starts a new run directory from that
-- checkpoint (unless FILE lies in the run directory it belongs to: then that run goes on).
-- --resume auto continues the newest run of this recipe (or --out DIR) if it has a
-- checkpoint and starts a new run otherwise, so one command can be repeated after a crash.
-- A checkpoint never chooses a path or a deletion: --out, --data, --keep-checkpoints come
-- from the command line or the run directory, never from a file's metadata.
--
-- Options are checked before any data is loaded (--arch, --epochs >= 1, --moco-k against
-- the keys enqueued per step, ...), and against the data sizes right after the datasets
-- are opened (the batch against the training set, --knn-k against the kNN bank).
local moco = require "moco"
local recipe = require "moco.recipe"
local T = require "moco.transforms"
local data = require "moco.data"
local train = require "moco.train"
local eval = require "moco.eval"
local checkpoint = require "moco.checkpoint"
local rundir = require "moco.rundir"
local progress = require "moco.progress"
local dist = require "moco.dist"

local pretrain = {}

-- The per-dataset normalisation statistics live in moco.data (data.STATS).
local IMAGENET_MEAN, IMAGENET_STD = data.STATS.imagenet.mean, data.STATS.imagenet.std
local CIFAR_MEAN, CIFAR_STD = data.STATS.cifar.mean, data.STATS.cifar.std
local FMNIST_MEAN, FMNIST_STD = data.STATS["fashion-mnist"].mean, data.STATS["fashion-mnist"].std
-- The per-dataset normalisation statistics, for recipes that build their own pipelines.
pretrain.IMAGENET_MEAN, pretrain.IMAGENET_STD = IMAGENET_MEAN, IMAGENET_STD
pretrain.CIFAR_MEAN, pretrain.CIFAR_STD = CIFAR_MEAN, CIFAR_STD
pretrain.FMNIST_MEAN, pretrain.FMNIST_STD = FMNIST_MEAN, FMNIST_STD

local ARCHS = { "resnet8", "resnet14", "resnet18", "resnet20", "resnet34", "resnet50" }
pretrain.ARCHS = ARCHS

-- Every option a MoCo recipe understands; a recipe overrides the defaults it cares about.
-- path = true: names a file or directory (never taken from a checkpoint); local_only: a
-- setting of this machine or this invocation, also never taken from a checkpoint.
local function spec_with(defaults)
  local spec = {
    { "data", "", "dataset: a folder with train/ (and val/) class folders, 'cifar10:ROOT', or 'fashion-mnist' "
                  .. "(also as the bare argument DIR)", path = true },
    { "arch", "resnet50", "encoder architecture", short = "a", choices = ARCHS },
    { "in-channels", 3, "image channels (1 for Fashion-MNIST)" },
    { "cifar-stem", false, "3x3 stride-1 stem without max-pool (small images)" },
    { "width", 1, "channel width multiplier of the encoder", type = "number" },
    { "stem-stride", 1, "stride of the 3x3 stem (2: every stage's map halved; resnet8/14/20 or --cifar-stem)" },
    { "image-size", 224, "crop size of the augmentation" },
    { "workers", 2, "data loading threads", short = "j", metavar = "N" },
    { "epochs", 200, "number of total epochs to run", metavar = "N" },
    { "start-epoch", 0, "epoch to start at (0-based; a resumed run starts where its checkpoint says)", metavar = "N" },
    { "batch-size", 256, "mini-batch size", short = "b", metavar = "N" },
    { "lr", 0.03, "initial learning rate", aliases = { "learning-rate" }, metavar = "LR" },
    { "schedule", { 120, 160 }, "epochs at which the lr drops by 10x (ignored with --cos)" },
    { "cos", false, "cosine learning-rate schedule" },
    { "cos-per-step", false, "with --cos: the cosine at every step (MoCo v3), not once per epoch (v1/v2)" },
    { "crop-min", 0, "smallest area fraction of RandomResizedCrop (0: the recipe's official value, 0.2; the CIFAR-10 "
                     .. "demo's 0.08)", metavar = "S", type = "number" },
    { "warmup-epochs", 0, "linear warm-up epochs", metavar = "N" },
    { "momentum", 0.9, "SGD momentum", metavar = "M" },
    { "wd", 1e-4, "weight decay", aliases = { "weight-decay" }, metavar = "W" },
    { "print-freq", 10, "print every N steps when the output is not a terminal (0: never)", short = "p",
      metavar = "N" },
    { "seed", 0, "seed of every random stream (model, queue, shuffles, data)" },
    { "threads", 0, "BLAS/compute threads (0 = leave the default)", metavar = "N" },
    { "moco-dim", 128, "feature dimension", metavar = "DIM" },
    { "moco-k", 65536, "queue size (number of negative keys)", metavar = "K" },
    { "moco-m", 0.999, "momentum of the key encoder", metavar = "M" },
    { "moco-t", 0.07, "softmax temperature", metavar = "T" },
    { "mlp", false, "MLP projection head (MoCo v2)" },
    { "aug-plus", false, "MoCo v2 augmentation (blur, color jitter with p=0.8)" },
    { "bn-splits", 8, "batch-norm groups (of each rank under MPI): shuffling BN on one process", metavar = "N" },
    { "shuffle", true, "shuffle the key batch across the BN groups (--no-shuffle shows what shuffling BN prevents)" },
    { "symmetric", false, "symmetric loss (the CIFAR-10 demo's option)" },
    { "mechanism", "moco", "dictionary: the MoCo queue, or the paper's baselines end_to_end and memory_bank "
                           .. "(docs/mechanisms.md)", choices = { "moco", "end_to_end", "memory_bank" } },
    { "bank-m", 0.5, "memory_bank: momentum of the stored features (Wu et al.'s 0.5)", metavar = "M" },
    { "knn-every", 0, "run the kNN monitor every N epochs (0 = never)", metavar = "N" },
    { "knn-k", 200, "k of the kNN monitor", metavar = "K" },
    { "knn-t", 0.1, "temperature of the kNN monitor", metavar = "T" },
    { "knn-subset", 0, "use only the first N training images as the kNN bank (0 = all)", metavar = "N" },
    { "train-subset", 0, "train on the first N images only (0 = all)", metavar = "N" },
    { "out", "", "run directory (default runs/<recipe>-<date>): checkpoints, log.jsonl, config.json, "
                 .. "pictures, report.html", path = true, metavar = "DIR" },
    { "resume", "", "continue a run: a run directory, a checkpoint file, or 'auto' (the newest run of this recipe, "
                    .. "or --out DIR, if it has a checkpoint; else start)", path = true, metavar = "DIR|FILE|auto" },
    { "keep-checkpoints", 3, "epoch checkpoints kept in the run directory (0 = all); the best by kNN stays as "
                             .. "model_best.safetensors", local_only = true, metavar = "N" },
    { "quiet", false, "no progress bar and no periodic step lines (epoch lines stay)", local_only = true },
  }
  for _, o in ipairs(dist.OPTIONS) do
    local copy = {}
    for k, v in pairs(o) do copy[k] = v end
    spec[#spec + 1] = copy
  end
  for _, o in ipairs(spec) do
    local d = defaults[o[1]]
    if d ~= nil then o[2] = d end
  end
  for k in pairs(defaults) do
    local found = false
    for _, o in ipairs(spec) do if o[1] == k then found = true end end
    if not found then error("pretrain: a recipe default names an unknown option --" .. k, 2) end
  end
  return spec
end

-- recipe.parse with the dataset as the bare argument; keeps the command line as given in
-- opts._argv, for the "to resume" hint and the run's name (argv[0] is the script, negative
-- indices the interpreter and its options, as moco-lua sets `arg`).  nil after --help.
local function parse_recipe(argv, spec, description)
  local opts = recipe.parse(argv, spec, {
    description = description,
    positional = { name = "data", metavar = "DIR", help = "the dataset (the same as --data)" },
  })
  if not opts then return nil end
  if #opts._positional > 0 then
    error("unexpected argument '" .. opts._positional[1] .. "' (options start with --; --help lists them)", 0)
  end
  opts._argv = {}
  for i, v in pairs(argv or {}) do if math.type(i) == "integer" then opts._argv[i] = v end end
  return opts
end

-- extra (optional): more options of this recipe's own, in recipe.parse's form.
function pretrain.parse(argv, defaults, description, extra)
  local spec = spec_with(defaults or {})
  for _, o in ipairs(extra or {}) do spec[#spec + 1] = o end
  return parse_recipe(argv, spec, description)
end

-- The recipe's name, for run directories: "quickstart" for recipes/quickstart.lua.
function pretrain.recipe_name(opts)
  local script = opts._argv and opts._argv[0] or "pretrain"
  return (script:match("([^/]+)$"):gsub("%.lua$", ""))
end

-- Options that change neither the model nor the batches nor the arithmetic: a resumed run
-- may change them and still continue exactly.
local resume_harmless = {
  workers = true, ["print-freq"] = true, out = true, resume = true, ["keep-checkpoints"] = true,
  ["knn-every"] = true, ["knn-k"] = true, ["knn-t"] = true, ["knn-subset"] = true, quiet = true,
}

local function same_value(a, b)
  if type(a) == "table" and type(b) == "table" then
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return true
  end
  return a == b
end

local function show(v)
  if type(v) == "table" then return "{" .. table.concat(v, ",") .. "}" end
  return tostring(v)
end

-- Whether v (read from a file) has the type of option o.
local function fits(o, v)
  local kind = recipe.kind_of(o)
  if kind == "integer" then return math.type(v) == "integer" end
  if kind == "number" then return type(v) == "number" end
  if kind == "list" then
    if type(v) ~= "table" then return false end
    for _, x in ipairs(v) do if type(x) ~= "number" then return false end end
    return true
  end
  return type(v) == kind
end

-- Takes the settings of the run that wrote ckpt, except the options given on this command
-- line (opts changes in place, so the recipe sees them too).  Paths and local settings
-- (path / local_only in the spec) never come from the checkpoint: they come from the
-- command line, else from dir_options (the config.json of the run directory being
-- resumed), else the default.  Returns notes about given options that make the
-- continuation differ from an uninterrupted run.
function pretrain.apply_checkpoint(opts, ckpt, dir_options)
  local saved = ckpt.config
  if type(saved) ~= "table" then
    error(ckpt.path .. ": the checkpoint has no recipe options ('config' metadata); build the model with "
          .. "moco.checkpoint.build_model instead", 0)
  end
  local notes = {}
  for _, o in ipairs(opts._spec) do
    local name = o[1]
    if name == "start-epoch" then
      if opts._given[name] then notes[#notes + 1] = "--start-epoch is ignored: the checkpoint says where to start" end
    elseif o.path or o.local_only then
      local v = dir_options and dir_options[name]
      if not opts._given[name] and name ~= "out" and name ~= "resume" and v ~= nil and fits(o, v) then opts[name] = v end
    else
      local v = saved[name]
      if v ~= nil and not fits(o, v) then
        error(string.format("%s: the checkpoint's option '%s' is %s, not a %s", ckpt.path, name, show(v), recipe.kind_of(o)), 0)
      end
      if v ~= nil and o.choices then
        local known = false
        for _, c in ipairs(o.choices) do if c == v then known = true end end
        if not known then error(string.format("%s: the checkpoint's --%s '%s' is unknown here", ckpt.path, name, show(v)), 0) end
      end
      if not opts._given[name] then
        if v ~= nil then opts[name] = v end
      elseif v ~= nil and not same_value(v, opts[name]) then
        if name == "epochs" and opts.cos then
          notes[#notes + 1] = string.format("--epochs %s (was %s) changes the cosine schedule: learning rates "
                                            .. "differ from the original run's", show(opts[name]), show(v))
        elseif name ~= "epochs" and not resume_harmless[name] and name ~= "threads" then -- threads: run() compares the real count
          notes[#notes + 1] = string.format("--%s %s differs from the checkpoint's %s: the run will not continue "
                                            .. "exactly as it would have", name, show(opts[name]), show(v))
        else
          notes[#notes + 1] = string.format("--%s %s overrides the checkpoint's %s", name, show(opts[name]), show(v))
        end
      end
    end
  end
  recipe.set_aliases(opts, opts._spec)
  return notes
end

local function shell_quote(s)
  if s:match("^[%w%-%._/=:,+@]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- "moco-lua recipe.lua --resume DIR" (with the interpreter's own options, if any): the run
-- directory holds everything else.  extra: more words ("--lr", "0.01").
function pretrain.resume_command(opts, dir, extra)
  local argv = opts._argv or {}
  local lowest = 0
  while argv[lowest - 1] ~= nil do lowest = lowest - 1 end
  local words = {}
  for i = lowest, -1 do words[#words + 1] = shell_quote(argv[i]) end
  if #words == 0 then words[1] = "moco-lua" end
  words[#words + 1] = shell_quote(argv[0] or "recipe.lua")
  words[#words + 1] = "--resume"
  words[#words + 1] = shell_quote(dir)
  for _, w in ipairs(extra or {}) do words[#words + 1] = shell_quote(w) end
  return table.concat(words, " ")
end

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- Checks the options against the number of MPI ranks (before any data is loaded):
-- --batch-size is the global batch, divided evenly over the ranks as main_moco.py divides
-- it over the GPUs, and --bn-splits counts the batch-norm groups of each rank.
function pretrain.validate_ranks(opts, size)
  if size == 1 then return end
  local b, splits = opts["batch-size"], opts["bn-splits"]
  if b < size then
    fail("--batch-size %d is smaller than the %d ranks: each rank needs its share of the global batch (give at least "
         .. "%d, a multiple of %d)", b, size, size, size)
  end
  if b % size ~= 0 then
    fail("--batch-size %d does not divide evenly over %d ranks (it is the global batch, split over the ranks as "
         .. "main_moco.py splits it over the GPUs): give a multiple of %d, e.g. %d", b, size, size, b // size * size)
  end
  local per = b // size
  if splits >= 1 and per % splits ~= 0 then
    fail("--batch-size %d over %d ranks is %d images per rank, which cannot be split into --bn-splits %d groups (with "
         .. "several ranks --bn-splits counts the groups of each rank)", b, size, per, splits)
  end
  if opts.mechanism ~= "moco" then
    fail("--mechanism %s runs on one process; over MPI ranks only the MoCo queue is implemented", opts.mechanism)
  end
end

-- Resuming on another number of ranks: the checkpoint's run had ckpt.ranks x bn-splits
-- batch-norm groups; unless --bn-splits is given, keep that many groups over `size` ranks
-- when they divide evenly, so that the run continues as the one it was (docs/distributed.md).
function pretrain.keep_bn_groups(opts, ckpt, size, note)
  local was = ckpt.ranks or 1
  if was == size then return end
  local groups = was * opts["bn-splits"]
  local per = opts["batch-size"] // size
  if opts._given["bn-splits"] then
    note(string.format("the checkpoint was trained on %d rank(s) with %d batch-norm groups in all; on %d rank(s), "
                       .. "--bn-splits %d makes %d", was, groups, size, opts["bn-splits"], size * opts["bn-splits"]))
  elseif groups % size == 0 and per % (groups // size) == 0 then
    opts["bn-splits"] = groups // size
    note(string.format("the checkpoint was trained on %d rank(s) with %d batch-norm groups in all: on %d rank(s), "
                       .. "--bn-splits %d per rank keeps them", was, groups, size, opts["bn-splits"]))
  else
    note(string.format("the checkpoint was trained on %d rank(s) with %d batch-norm groups in all, which %d rank(s) "
                       .. "of %d images cannot form: --bn-splits %d per rank, so the run does not continue exactly "
                       .. "as it would have", was, groups, size, per, opts["bn-splits"]))
  end
end

-- Checks the options that need no data (before any is loaded).
function pretrain.validate(opts)
  local function at_least(name, lo)
    if opts[name] < lo then fail("--%s must be at least %s, got %s", name, tostring(lo), tostring(opts[name])) end
  end
  at_least("epochs", 1)
  at_least("batch-size", 1)
  at_least("bn-splits", 1)
  at_least("moco-dim", 1)
  at_least("moco-k", 1)
  at_least("workers", 0)
  at_least("print-freq", 0)
  at_least("knn-every", 0)
  at_least("knn-k", 1)
  at_least("knn-subset", 0)
  at_least("train-subset", 0)
  at_least("keep-checkpoints", 0)
  at_least("warmup-epochs", 0)
  at_least("image-size", 1)
  at_least("threads", 0)
  at_least("start-epoch", 0)
  local known = false
  for _, a in ipairs(ARCHS) do if a == opts.arch then known = true end end
  if not known then fail("--arch %s is not known (choose from %s)", tostring(opts.arch), table.concat(ARCHS, ", ")) end
  if opts["start-epoch"] >= opts.epochs then
    fail("--start-epoch %d is not before --epochs %d: nothing to train", opts["start-epoch"], opts.epochs)
  end
  if opts["in-channels"] ~= 1 and opts["in-channels"] ~= 3 then
    fail("--in-channels must be 1 (gray) or 3 (RGB), got %d", opts["in-channels"])
  end
  if not (opts.width > 0) then fail("--width must be positive, got %s", tostring(opts.width)) end
  if not (opts["crop-min"] >= 0 and opts["crop-min"] <= 1) then
    fail("--crop-min must be in (0, 1] (0: the official value), got %s", tostring(opts["crop-min"]))
  end
  if opts["cos-per-step"] and not opts.cos then fail("--cos-per-step refines --cos: give both") end
  if not (opts["moco-t"] > 0) then fail("--moco-t must be positive, got %s", tostring(opts["moco-t"])) end
  if not (opts["knn-t"] > 0) then fail("--knn-t must be positive, got %s", tostring(opts["knn-t"])) end
  if not (opts["moco-m"] >= 0 and opts["moco-m"] <= 1) then fail("--moco-m must be in [0, 1], got %s", tostring(opts["moco-m"])) end
  if not (opts.lr >= 0) then fail("--lr must not be negative, got %s", tostring(opts.lr)) end
  if not (opts.wd >= 0) then fail("--wd must not be negative, got %s", tostring(opts.wd)) end
  if not (opts.momentum >= 0) then fail("--momentum must not be negative, got %s", tostring(opts.momentum)) end
  local b, splits = opts["batch-size"], opts["bn-splits"]
  if b % splits ~= 0 then
    fail("--batch-size %d cannot be split into --bn-splits %d equal groups (choose a multiple of %d)", b, splits, splits)
  end
  local keys = opts.symmetric and 2 * b or b
  local k = opts["moco-k"]
  if k % keys ~= 0 then
    fail("--moco-k %d must be a multiple of the %d keys enqueued per step (--batch-size %d%s), as the official code "
         .. "asserts; e.g. --moco-k %d", k, keys, b, opts.symmetric and ", twice with --symmetric" or "",
         math.max(keys, k // keys * keys))
  end
end

-- Checks the options against the data, right after the datasets are opened.
function pretrain.validate_data(opts, train_ds, test_ds)
  local b = opts["batch-size"]
  if #train_ds > 0 then -- the images' channels (an in-memory dataset answers at once)
    local image = train_ds:get(1)
    local channels = image.channels
    if channels and channels ~= opts["in-channels"] then
      fail("--in-channels %d, but the images of --data %s have %d channel%s (give --in-channels %d)",
           opts["in-channels"], opts.data, channels, channels == 1 and "" or "s", channels)
    end
  end
  if #train_ds < b then
    fail("--batch-size %d is larger than the training set (%d images%s): there is not one full batch to train on "
         .. "(the last incomplete batch is dropped, as in the official code)", b, #train_ds,
         opts["train-subset"] > 0 and ", --train-subset " .. opts["train-subset"] or "")
  end
  if opts["knn-every"] > 0 and test_ds then
    local bank = opts["knn-subset"] > 0 and math.min(opts["knn-subset"], #train_ds) or #train_ds
    if opts["knn-k"] > bank then
      fail("--knn-k %d is larger than the kNN bank (%d training images%s)", opts["knn-k"], bank,
           opts["knn-subset"] > 0 and ", --knn-subset " .. opts["knn-subset"] or "")
    end
  end
end

-- A subset view: the first n samples of ds, for quick experiments.
local function take(ds, n)
  if n <= 0 or n >= #ds then return ds end
  return data.Subset(ds, n)
end

-- The augmentations of the official code (v1 and v2 = aug_plus), the CIFAR demo's, and a
-- gray version for Fashion-MNIST.
function pretrain.augmentation(opts, kind)
  local size = opts["image-size"]
  local crop_min = opts["crop-min"] or 0
  local scale = { crop_min > 0 and crop_min or 0.2, 1.0 }
  if kind == "cifar" then
    return T.Compose{
      T.RandomResizedCrop(size, { scale = { crop_min > 0 and crop_min or 0.08, 1.0 } }), T.RandomHorizontalFlip(0.5),
      T.RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), T.RandomGrayscale(0.2),
      T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD),
    }
  elseif kind == "fashion-mnist" then
    -- Gray images: saturation and hue do nothing, grayscale is the identity.
    local list = { T.RandomResizedCrop(size, { scale = scale }), T.RandomApply(T.ColorJitter(0.4, 0.4, 0, 0), 0.8) }
    -- --aug-plus adds v2's blur (the jitter has p = 0.8 either way)
    if opts["aug-plus"] then list[#list + 1] = T.RandomApply(T.GaussianBlur{ 0.1, 2.0 }, 0.5) end
    for _, t in ipairs{ T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(FMNIST_MEAN, FMNIST_STD) } do
      list[#list + 1] = t
    end
    return T.Compose(list)
  elseif opts["aug-plus"] then
    return T.Compose{
      T.RandomResizedCrop(size, { scale = scale }),
      T.RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), T.RandomGrayscale(0.2),
      T.RandomApply(T.GaussianBlur{ 0.1, 2.0 }, 0.5), T.RandomHorizontalFlip(),
      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    }
  end
  return T.Compose{
    T.RandomResizedCrop(size, { scale = scale }), T.RandomGrayscale(0.2),
    T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.RandomHorizontalFlip(),
    T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
  }
end

-- ------------------------------------------------------------ evaluation recipes
-- What the recipes that judge a backbone (knn, lincls) share: the options that name the
-- backbone and the data, the start (parse, --quiet, MPI) and the backbone itself.

local PROBE_HEAD = {
  { "pretrained", "", "MoCo checkpoint (moco-lua's, or an official / torchvision torch.save file), or 'random' for an "
                      .. "untrained encoder (the baseline)", path = true, metavar = "FILE" },
  { "data", "fashion-mnist", "dataset: 'fashion-mnist', 'cifar10:ROOT', or a folder with train/ and val/ (also as DIR)",
    path = true },
}
local PROBE_TAIL = {
  { "test-subset", 0, "evaluate on the first N test images only (0 = all)", metavar = "N" },
  { "image-size", 224, "crop size of the test transform for folder datasets (small datasets use their native size)" },
  { "workers", 2, "data loading threads", short = "j", metavar = "N" },
  { "threads", 0, "BLAS/compute threads (0 = leave the default)", metavar = "N" },
  { "arch", "resnet20", "encoder architecture for --pretrained random", choices = ARCHS },
  { "in-channels", 0, "image channels for --pretrained random (0: 1 for fashion-mnist, else 3)" },
}

-- The options of an evaluation recipe: --pretrained and --data, then the recipe's own
-- (`own`, recipe.parse's form; an entry named as a shared one replaces it), then the
-- shared rest and the official launcher flags.
function pretrain.probe_spec(own)
  local mine = {}
  for _, o in ipairs(own) do mine[o[1]] = true end
  local spec = {}
  local function add(list)
    for _, o in ipairs(list) do
      if not mine[o[1]] or list == own then spec[#spec + 1] = o end
    end
  end
  add(PROBE_HEAD)
  add(own)
  add(PROBE_TAIL)
  for _, o in ipairs(dist.OPTIONS) do spec[#spec + 1] = o end
  return spec
end

-- The start of an evaluation recipe: the options (nil after --help), the command line in
-- opts._argv, --quiet, and MPI under mpirun (rank, size in opts._rank, opts._size).
function pretrain.probe_start(argv, spec, description)
  local opts = parse_recipe(argv, spec, description)
  if not opts then return nil end
  progress.set_quiet(opts.quiet)
  opts._rank, opts._size = dist.start(opts, pretrain.recipe_name(opts))
  return opts
end

-- The backbone --pretrained names (eval.load_encoder: a checkpoint, or 'random' with --arch,
-- --in-channels (default by the data: 1 for fashion-mnist, else 3) and --seed).
function pretrain.probe_backbone(opts)
  local gray = opts.data == "fashion-mnist" or opts.data == ""
  local in_channels = opts["in-channels"] > 0 and opts["in-channels"] or (gray and 1 or 3)
  return eval.load_encoder(opts.pretrained, { arch = opts.arch, in_channels = in_channels, seed = opts.seed })
end

-- Datasets named by --data: returns train, test (or nil), kind, test transform (the
-- registry is moco.data.named).
function pretrain.datasets(opts)
  return data.named(opts.data, { image_size = opts["image-size"] })
end

-- The moco.MoCo options of a recipe's opts; dataset_size: the training samples (the memory
-- bank's rows).  moco.MoCo.check_config(pretrain.model_options(opts, n), batch size) checks
-- a run before anything is built (recipes/ablations.lua, for every run of a sweep).
function pretrain.model_options(opts, dataset_size)
  return {
    mechanism = opts.mechanism, bank_size = opts.mechanism == "memory_bank" and dataset_size or nil,
    bank_m = opts["bank-m"], arch = opts.arch, dim = opts["moco-dim"], K = opts["moco-k"], m = opts["moco-m"], T = opts["moco-t"],
    mlp = opts.mlp, bn_splits = opts["bn-splits"], symmetric = opts.symmetric, shuffle = opts.shuffle,
    in_channels = opts["in-channels"], cifar_stem = opts["cifar-stem"], width = opts.width,
    stem_stride = opts["stem-stride"] ~= 1 and opts["stem-stride"] or nil,
    lr = opts.lr, momentum = opts.momentum, weight_decay = opts.wd, seed = opts.seed,
  }
end

function pretrain.build_model(opts, dataset_size)
  return moco.MoCo(pretrain.model_options(opts, dataset_size))
end

-- What --resume asks for: {ckpt = (checkpoint.load's table) | nil, run = an existing run
-- (rundir.open) to continue | nil, dir_options = the options of the run directory the
-- settings come from | nil, notes = {...}}.  No ckpt and no run: a fresh run.
-- how.load reads a checkpoint (default checkpoint.load; moco.lincls has its own), how.kind
-- is the kind of run directory expected ("pretrain" by default).
function pretrain.resume_plan(opts, how)
  how = how or {}
  local load, kind = how.load or checkpoint.load, how.kind or "pretrain"
  local resume, notes = opts.resume, {}
  local function open_run(dir)
    local run = rundir.open(dir)
    if run.config.kind ~= nil and run.config.kind ~= kind then
      error(string.format("--resume %s: that is a %s run (recipe %s), not a %s run", dir, tostring(run.config.kind),
                          tostring(run.recipe), kind), 0)
    end
    return run
  end
  local out_given = opts._given.out and opts.out ~= ""
  local function same_dir(a, b) return (a:gsub("/+$", "")) == (b:gsub("/+$", "")) end
  if resume == "" then return { notes = notes } end
  if resume == "auto" then
    local dir = out_given and opts.out or rundir.latest(pretrain.recipe_name(opts))
    if not (dir and rundir.read_config(dir)) then
      notes[1] = string.format("--resume auto: %s: starting a new run",
                               dir and (dir .. " holds no run yet") or ("no earlier run of this recipe in " .. rundir.BASE .. "/"))
      return { notes = notes }
    end
    local run = open_run(dir)
    local ckpt, skipped = checkpoint.latest_usable(dir, run.id, load)
    for _, n in ipairs(skipped) do notes[#notes + 1] = n end
    if not ckpt then
      notes[#notes + 1] = string.format("--resume auto: %s has no usable checkpoint yet: starting its run from the beginning", dir)
      return { run = run, dir_options = run.config.options, notes = notes, restart = true }
    end
    return { ckpt = ckpt, run = run, dir_options = run.config.options, notes = notes }
  end
  if rundir.is_directory(resume) then
    local source = open_run(resume)
    local ckpt, skipped = checkpoint.latest_usable(resume, source.id, load)
    for _, n in ipairs(skipped) do notes[#notes + 1] = n end
    if not ckpt then
      error(string.format("--resume %s: no usable checkpoint in that directory%s", resume,
                          #skipped > 0 and (":\n  " .. table.concat(skipped, "\n  ")) or " (no checkpoint_*.safetensors)"), 0)
    end
    if out_given and not same_dir(opts.out, resume) then
      notes[#notes + 1] = string.format("starting a new run in %s from %s", opts.out, ckpt.path)
      return { ckpt = ckpt, dir_options = source.config.options, notes = notes }
    end
    return { ckpt = ckpt, run = source, dir_options = source.config.options, notes = notes }
  end
  local ckpt = load(resume)
  local healthy, why = true, nil
  if ckpt.tensors then healthy, why = checkpoint.check_values(ckpt.tensors) end
  if not healthy then error(string.format("--resume %s: cannot resume from it: %s", resume, why), 0) end
  local dir = resume:match("^(.*)/[^/]*$") or "."
  local c = rundir.read_config(dir)
  if c and ckpt.run_id == c.run_id and (not out_given or same_dir(opts.out, dir)) then
    local run = open_run(dir)
    return { ckpt = ckpt, run = run, dir_options = run.config.options, notes = notes }
  end
  notes[#notes + 1] = string.format("%s is not in its own run directory: starting a new run from it", resume)
  return { ckpt = ckpt, notes = notes }
end

local function result_line(label, value) return { label, value } end

-- draw(tmp_path) writes a picture; it lands at path by a rename, so that a full disk or a
-- failed encoder never leaves half a PNG where a reader (report.html) looks.
function pretrain.atomic_picture(path, draw)
  local dir, name = path:match("^(.*)/([^/]+)$")
  local tmp = (dir and (dir .. "/.") or ".") .. (name or path) .. ".tmp.png"
  local ok, err = pcall(draw, tmp)
  if ok then ok, err = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    error(err, 0)
  end
  return path
end

-- Rewrites the run's pictures of the curves and its report.html from run.history,
-- run.results (a list of {label, value}) and run.pictures (extra {title, file, caption}).
function pretrain.write_report(run)
  if run.follower then return end -- rank 0 writes it
  local plot = require "moco.plot"
  local report = require "moco.report"
  local history = run.history or {}
  local pictures = {}
  if #history > 0 then
    local curves = run:path("training-curves.png")
    pretrain.atomic_picture(curves, function(p)
      plot.training_curves(run.curves_history or history, { path = p, title = run.title })
    end)
    pictures[#pictures + 1] = { title = "Training curves", file = curves,
                                caption = "InfoNCE loss, contrastive accuracy, kNN monitor and learning rate per epoch" }
  end
  for _, p in ipairs(run.pictures or {}) do pictures[#pictures + 1] = p end
  local results = {}
  local last = history[#history]
  if last then
    results[#results + 1] = result_line("last epoch", string.format("%d (%s)", last.epoch,
                                        last.complete and "complete" or string.format("%d steps", last.steps or 0)))
    results[#results + 1] = result_line("InfoNCE loss (epoch mean)", string.format("%.4f", last.loss))
    results[#results + 1] = result_line("contrastive acc@1 / acc@5", string.format("%.2f%% / %.2f%%", last.acc1, last.acc5))
  end
  local best
  for _, r in ipairs(history) do if r.knn and (not best or r.knn > best) then best = r.knn end end
  if best then results[#results + 1] = result_line("best kNN top-1 during training", string.format("%.2f%%", best)) end
  for _, r in ipairs(run.results or {}) do results[#results + 1] = r end
  report.write(run:path("report.html"), {
    title = run.title, status = run.status, results = results, pictures = pictures, history = history,
    options = run.config.options,
    facts = { { "run directory", run.dir }, { "run id", run.id }, { "recipe", run.recipe }, { "created", run.config.created },
              { "command", run.config.command }, { "resumed", run.config.resumed and #run.config.resumed or 0 } },
  })
end

-- write_report, but a failure (a full disk, say) is a warning: the report must never stop
-- a training run (the next checkpoint will say what is wrong, if anything is).
function pretrain.refresh_report(run)
  if run.follower then return true end -- rank 0 writes it
  local ok, err = pcall(pretrain.write_report, run)
  if not ok then io.stderr:write("warning: ", run:path("report.html"), " not refreshed: ", tostring(err), "\n") end
  return ok
end

-- Runs pre-training; returns the model, the history, the last kNN accuracy (or nil) and
-- the run directory (a moco.rundir run with .history, .results, .pictures for the report).
-- how.check_data(data) may raise a recipe's own message about --data (after the settings
-- of a resumed run are known, so `--resume DIR` alone passes); how.should_stop() ends
-- training between two steps when it returns true (recipes/ablations.lua: a time budget).
function pretrain.run(opts, how)
  how = how or {}
  local name = pretrain.recipe_name(opts)
  -- Under mpirun: one rank per process (docs/distributed.md); rank 0 alone prints and
  -- writes, every rank trains on its shard of the data.
  local rank, size = dist.start(opts, "the recipe " .. name)
  local main = rank == 0
  local function note(text) if main then io.stderr:write("note: ", text, "\n") end end
  progress.set_quiet(opts.quiet)

  -- Everything that can refuse the run, before anything is written; every rank decides
  -- the same (the same options and files), and a refusal is one message (dist.agreed).
  local ckpt, plan, train_ds, test_ds, kind, test_transform = dist.agreed(function()
    local plan = pretrain.resume_plan(opts)
    local ckpt = plan.ckpt
    for _, n in ipairs(plan.notes) do note(n) end
    if ckpt then
      for _, n in ipairs(pretrain.apply_checkpoint(opts, ckpt, plan.dir_options)) do note(n) end
      pretrain.keep_bn_groups(opts, ckpt, size, note)
    elseif plan.run then -- --resume auto restarting a run that has no checkpoint yet: its own settings
      for _, o in ipairs(opts._spec) do
        local v = plan.dir_options[o[1]]
        if not opts._given[o[1]] and o[1] ~= "out" and o[1] ~= "resume" and v ~= nil and fits(o, v) then opts[o[1]] = v end
      end
      recipe.set_aliases(opts, opts._spec)
    end
    if how.check_data then how.check_data(opts.data) end
    pretrain.validate_ranks(opts, size)
    pretrain.validate(opts)
    local tr, te, k, tt = pretrain.datasets(opts)
    tr = take(tr, opts["train-subset"])
    pretrain.validate_data(opts, tr, te)
    moco.MoCo.check_config(pretrain.model_options(opts, #tr), opts["batch-size"] // size)
    return ckpt, plan, tr, te, k, tt
  end)
  if opts.threads > 0 then moco.set_num_threads(opts.threads) end
  if ckpt and ckpt.blas_threads and ckpt.blas_threads ~= moco.get_num_threads() then
    note(string.format("the checkpoint was written with %d BLAS thread(s), this run has %d: the results will not be "
                       .. "bitwise those of an uninterrupted run (--threads %d)", ckpt.blas_threads,
                       moco.get_num_threads(), ckpt.blas_threads))
  end

  -- The run directory, before any training: config.json is written now, so a directory
  -- that cannot be written is found before the first epoch's work.  Rank 0 writes it; the
  -- other ranks learn its name.
  local command = table.concat(opts._argv or {}, " ", 0)
  local run = dist.agreed(function()
    if not main then return nil end
    local run = plan.run
    if run then
      opts.out = run.dir
      recipe.set_aliases(opts, opts._spec)
      run:save_config(recipe.values(opts, opts._spec), {
        at = os.date("%Y-%m-%dT%H:%M:%S"), command = command, from = ckpt and ckpt.path or "the beginning",
      })
    else
      run = rundir.create(opts._given.out and opts.out or nil, { recipe = name, kind = "pretrain", command = command })
      opts.out = run.dir
      recipe.set_aliases(opts, opts._spec)
      run:save_config(recipe.values(opts, opts._spec))
    end
    return run
  end)
  if size > 1 then
    local dir = dist.broadcast_string(main and run.dir or "")
    local id = dist.broadcast_string(main and run.id or "")
    if not main then
      opts.out = dir
      recipe.set_aliases(opts, opts._spec)
      run = rundir.follower(dir, id, { recipe = name, kind = "pretrain", options = recipe.values(opts, opts._spec) })
    end
  end
  print(string.format("run directory: %s (checkpoints, log.jsonl, config.json, report.html)", run.dir))

  if opts["knn-every"] > 0 and not test_ds then
    note("--knn-every: the dataset has no test set (no val/ folder): the kNN monitor is off")
  end
  local aug = pretrain.augmentation(opts, kind)
  -- --batch-size is the global batch: each rank takes its share of it from its shard of
  -- the data (DistributedSampler's order from the shared seed).
  local loader = data.Loader(train_ds, {
    batch_size = opts["batch-size"] // size, transform = T.TwoCrops(aug), workers = opts.workers,
    shuffle = true, drop_last = true, seed = opts.seed, shard = size > 1 and { rank = rank, count = size } or nil,
  })
  local _ <close> = setmetatable({}, { __close = function() loader:close() end })
  local model = pretrain.build_model(opts, #train_ds)
  model:check_batch(opts["batch-size"] // size) -- what the first step would refuse, said before training
  print(string.format("moco-lua: %s on %s (%d images, %d steps per epoch%s); %s",
                      opts.arch, kind, #train_ds, #loader,
                      size > 1 and string.format(", %d ranks x %d images", size, opts["batch-size"] // size) or "",
                      recipe.describe(opts, opts._spec)))
  print(string.format("encoder: %d parameters; augmentation: %s", model.encoder_q:num_parameters(), tostring(aug)))
  local start_epoch, start_step, resume_sums, best_knn = opts["start-epoch"], 0, nil, nil
  local last_checkpoint
  local history = {}
  if ckpt then
    checkpoint.restore(model, ckpt)
    start_epoch, start_step, resume_sums, best_knn = ckpt.epoch, ckpt.epoch_step, ckpt.epoch_sums, ckpt.best_knn
    if start_step >= #loader then
      error(string.format("%s: %d batches of epoch %d are done but an epoch now has %d (another --batch-size "
                          .. "or data set?)", ckpt.path, start_step, start_epoch, #loader), 0)
    end
    -- the curves of the epochs before the resume (a partly done epoch is redone from its sums)
    for _, r in ipairs(ckpt.history or {}) do
      if type(r) == "table" and type(r.epoch) == "number" and r.epoch < start_epoch then history[#history + 1] = r end
    end
    last_checkpoint = ckpt.path
    print(string.format("resumed from %s: epoch %d%s, global step %d", ckpt.path, start_epoch,
                        start_step > 0 and string.format(" after its step %d", start_step) or "", ckpt.step))
  end
  run.history = history
  run.title = string.format("%s: MoCo (%s, %s) on %s", name, opts.arch, opts.mlp and "v2 head" or "v1 head", kind)
  run.results, run.pictures = {}, {}
  local preview = run:path("augmentation.png")
  local plot = require "moco.plot"
  local drawn, why = true, nil
  if main then
    drawn, why = pcall(pretrain.atomic_picture, preview, function(p)
      plot.augmentation_pairs{ dataset = train_ds, transform = aug, n = 8, seed = opts.seed, path = p }
    end)
  end
  if drawn then
    run.pictures[#run.pictures + 1] = { title = "Augmentation", file = preview,
                                        caption = "each row: an image, then the two augmented views MoCo contrasts" }
  else
    io.stderr:write("warning: ", preview, " not written: ", tostring(why), "\n")
  end
  if start_epoch >= opts.epochs then
    print(string.format("nothing to train: the run finished its %d epochs (a larger --epochs continues it)", opts.epochs))
  end
  run.status = string.format("training: epoch %d of %d", start_epoch, opts.epochs)
  pretrain.refresh_report(run)

  local monitor
  if opts["knn-every"] > 0 and test_ds then
    local bank_ds = take(train_ds, opts["knn-subset"])
    monitor = function()
      return (eval.knn_monitor(model:encoder(), bank_ds, test_ds, {
        transform = test_transform, k = opts["knn-k"], T = opts["knn-t"], workers = opts.workers,
      }))
    end
  end
  local function diverged(what)
    local hint
    if last_checkpoint then
      hint = string.format("The last good checkpoint is %s: resume from it with a lower --lr: %s", last_checkpoint,
                           pretrain.resume_command(opts, run.dir, { "--lr", string.format("%g", opts.lr / 2) }))
    else
      hint = "No checkpoint was written before it; lower --lr."
    end
    run:log{ type = "diverged", what = what }
    -- every rank sees the same loss and weights, so every rank stops here together
    dist.fail_together(string.format("training diverged: %s; nothing was saved after it. %s", what, hint))
  end
  -- After every epoch, and after an interrupted one.
  local saved_record
  local function on_epoch_end(epoch, record)
    saved_record = record
    local healthy, why = checkpoint.check_values(model)
    if not healthy then diverged(string.format("after epoch %d, step %d, %s", epoch, record.steps, why)) end
    if not main then return end -- rank 0 alone writes (the weights are the same on every rank)
    local path, is_best, best = checkpoint.save_epoch(run.dir, model, {
      epoch = epoch, record = record, config = opts, best_knn = best_knn, keep = opts["keep-checkpoints"],
      loader_seed = opts.seed, recipe = opts._argv and opts._argv[0], run_id = run.id, history = history,
    })
    best_knn, last_checkpoint = best, path
    local entry = { type = "epoch", checkpoint = path }
    for k, v in pairs(record) do if k ~= "sums" then entry[k] = v end end
    run:log(entry)
    run.status = record.complete and string.format("training: epoch %d of %d done", epoch, opts.epochs)
                 or string.format("stopped in epoch %d after step %d of %d", epoch, record.steps, #loader)
    pretrain.refresh_report(run)
    print(string.format("checkpoint: %s%s", path,
                        is_best and string.format(" (best kNN so far, %.2f%%: copied to model_best.safetensors)", best) or ""))
  end
  local function on_interrupt(signal, record)
    if saved_record ~= record then on_epoch_end(record.epoch, record) end -- the signal came after it ran
    if not main then return end
    run:log{ type = "interrupted", signal = signal, epoch = record.epoch, step = record.steps }
    io.stdout:flush()
    io.stderr:write(string.format("moco-lua: %s: stopped at epoch %d after step %d of %d; checkpoint saved to %s\n"
                                  .. "to resume: %s\n", signal, record.epoch, record.steps, #loader, last_checkpoint,
                                  pretrain.resume_command(opts, run.dir)))
    io.stderr:flush()
  end
  local function on_diverge(epoch, step, loss)
    diverged(string.format("the loss is %s at epoch %d, step %d", tostring(loss), epoch, step))
  end
  local function on_step(info)
    info.type = "step"
    run:log(info)
  end
  if start_epoch < opts.epochs then
    train.fit(model, loader, {
      epochs = opts.epochs, lr = opts.lr, cos = opts.cos, cos_per_step = opts["cos-per-step"], schedule = opts.schedule,
      warmup_epochs = opts["warmup-epochs"], start_epoch = start_epoch, start_step = start_step,
      resume_sums = resume_sums, print_freq = opts["print-freq"], monitor = monitor, monitor_every = opts["knn-every"],
      on_epoch_end = on_epoch_end, on_interrupt = on_interrupt, on_diverge = on_diverge, on_step = on_step,
      should_stop = how.should_stop, history = history,
    })
  end
  local last = history[#history]
  run.status = string.format("finished: %d epoch%s", opts.epochs, opts.epochs == 1 and "" or "s")
  pretrain.refresh_report(run)
  print("report: " .. run:path("report.html"))
  return model, history, last and last.knn, run
end

return pretrain
