-- lua/moco/pretrain.lua: what the MoCo recipes share (moco.pretrain).
--
--   local opts = pretrain.parse(arg, defaults, description)  -- official flag names
--   pretrain.run(opts)                                       -- data, model, loop, monitor
--
-- The options and their names follow the official main_moco.py and the CIFAR-10 demo
-- (--arch, --lr, --batch-size, --epochs, --schedule, --cos, --wd, --moco-dim, --moco-k,
-- --moco-m, --moco-t, --mlp, --aug-plus, --bn-splits, --symmetric, --knn-k, --knn-t ...);
-- each recipe gives its own defaults.  See docs/recipes.md.
--
-- Checkpoints (docs/checkpoints.md): with --out DIR a checkpoint is written after every epoch
-- (the last --keep-checkpoints of them are kept, the best by kNN as model_best.safetensors);
-- Ctrl-C or SIGTERM finishes the current step, writes one (into --out, or the current
-- directory), prints the command that resumes, and exits with status 130/143.
-- --resume PATH (a checkpoint, or a directory: its latest) continues the run exactly: the
-- checkpoint's options are used, except those given again on the command line.
local moco = require "moco"
local recipe = require "moco.recipe"
local T = require "moco.transforms"
local data = require "moco.data"
local train = require "moco.train"
local eval = require "moco.eval"
local checkpoint = require "moco.checkpoint"

local pretrain = {}

local IMAGENET_MEAN, IMAGENET_STD = { 0.485, 0.456, 0.406 }, { 0.229, 0.224, 0.225 }
local CIFAR_MEAN, CIFAR_STD = { 0.4914, 0.4822, 0.4465 }, { 0.2023, 0.1994, 0.2010 }
local FMNIST_MEAN, FMNIST_STD = { 0.2860 }, { 0.3530 }
-- The per-dataset normalisation statistics, for recipes that build their own pipelines.
pretrain.IMAGENET_MEAN, pretrain.IMAGENET_STD = IMAGENET_MEAN, IMAGENET_STD
pretrain.CIFAR_MEAN, pretrain.CIFAR_STD = CIFAR_MEAN, CIFAR_STD
pretrain.FMNIST_MEAN, pretrain.FMNIST_STD = FMNIST_MEAN, FMNIST_STD

-- Every option a MoCo recipe understands; a recipe overrides the defaults it cares about.
local function spec_with(defaults)
  local spec = {
    { "data", "", "dataset: a folder with train/ (and val/) class folders, 'cifar10:ROOT', or 'fashion-mnist'" },
    { "arch", "resnet50", "encoder: resnet18, resnet34, resnet50, resnet20", short = "a" },
    { "in-channels", 3, "image channels (1 for Fashion-MNIST)" },
    { "cifar-stem", false, "3x3 stride-1 stem without max-pool (small images)" },
    { "width", 1, "channel width multiplier of the encoder" },
    { "image-size", 224, "crop size of the augmentation" },
    { "workers", 2, "data loading threads", short = "j" },
    { "epochs", 200, "number of total epochs to run" },
    { "start-epoch", 0, "epoch to start at (0-based)" },
    { "batch-size", 256, "mini-batch size", short = "b" },
    { "lr", 0.03, "initial learning rate" },
    { "schedule", { 120, 160 }, "epochs at which the lr drops by 10x (ignored with --cos)" },
    { "cos", false, "cosine learning-rate schedule" },
    { "warmup-epochs", 0, "linear warm-up epochs" },
    { "momentum", 0.9, "SGD momentum" },
    { "wd", 1e-4, "weight decay" },
    { "print-freq", 10, "print every N steps", short = "p" },
    { "seed", 0, "seed of every random stream (model, queue, shuffles, data)" },
    { "threads", 0, "BLAS/compute threads (0 = leave the default)" },
    { "moco-dim", 128, "feature dimension" },
    { "moco-k", 65536, "queue size (number of negative keys)" },
    { "moco-m", 0.999, "momentum of the key encoder" },
    { "moco-t", 0.07, "softmax temperature" },
    { "mlp", false, "MLP projection head (MoCo v2)" },
    { "aug-plus", false, "MoCo v2 augmentation (blur, color jitter with p=0.8)" },
    { "bn-splits", 8, "batch-norm groups: shuffling BN on one process" },
    { "no-shuffle", false, "disable the key batch shuffle (to see what shuffling BN prevents)" },
    { "symmetric", false, "symmetric loss (the CIFAR-10 demo's option)" },
    { "mechanism", "moco", "dictionary: moco, end_to_end or memory_bank (the MoCo paper's Fig. 3; docs/mechanisms.md)" },
    { "bank-m", 0.5, "memory_bank: momentum of the stored features (Wu et al.'s 0.5)" },
    { "knn-every", 0, "run the kNN monitor every N epochs (0 = never)" },
    { "knn-k", 200, "k of the kNN monitor" },
    { "knn-t", 0.1, "temperature of the kNN monitor" },
    { "knn-subset", 0, "use only the first N training images as the kNN bank (0 = all)" },
    { "train-subset", 0, "train on the first N images only (0 = all)" },
    { "out", "", "output directory for checkpoints and pictures" },
    { "resume", "", "checkpoint to resume from (or a directory: its latest); its options apply unless given again" },
    { "keep-checkpoints", 3, "epoch checkpoints kept in --out (0 = all); the best by kNN stays as model_best.safetensors" },
  }
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

-- extra (optional): more options of this recipe's own, in recipe.parse's form.
function pretrain.parse(argv, defaults, description, extra)
  local spec = spec_with(defaults or {})
  for _, o in ipairs(extra or {}) do spec[#spec + 1] = o end
  local opts = recipe.parse(argv, spec, { description = description })
  if not opts then return nil end
  if #opts._positional > 0 then
    error("unexpected argument '" .. opts._positional[1] .. "' (options start with --; --help lists them)", 0)
  end
  opts._spec = spec
  -- The command line as given, for the "to resume" hint (argv[0] is the script, negative
  -- indices the interpreter and its options, as moco-lua sets `arg`).
  opts._argv = {}
  for i, v in pairs(argv) do if math.type(i) == "integer" then opts._argv[i] = v end end
  return opts
end

-- Options that change neither the model nor the batches nor the arithmetic: a resumed run
-- may change them and still continue exactly.
local resume_harmless = {
  workers = true, ["print-freq"] = true, out = true, resume = true, ["keep-checkpoints"] = true,
  ["knn-every"] = true, ["knn-k"] = true, ["knn-t"] = true, ["knn-subset"] = true,
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

-- Takes the options of the run that wrote ckpt, except those given on this command line
-- (opts changes in place, so the recipe sees them too).  Returns notes about given options
-- that make the continuation differ from an uninterrupted run.
function pretrain.apply_checkpoint(opts, ckpt)
  local saved = ckpt.config
  if type(saved) ~= "table" then
    error(ckpt.path .. ": the checkpoint has no recipe options ('config' metadata); build the model with "
          .. "moco.checkpoint.build_model instead", 0)
  end
  local notes = {}
  for _, o in ipairs(opts._spec) do
    local name = o[1]
    local v = saved[name]
    if name == "start-epoch" then
      if opts._given[name] then notes[#notes + 1] = "--start-epoch is ignored: the checkpoint says where to start" end
    elseif name ~= "resume" and v ~= nil then
      if not opts._given[name] then
        opts[name] = v
      elseif not same_value(v, opts[name]) then
        if name == "epochs" then
          if opts.cos then
            notes[#notes + 1] = string.format("--epochs %s (was %s) changes the cosine schedule: learning rates "
                                              .. "differ from the original run's", show(opts[name]), show(v))
          end
        elseif not resume_harmless[name] and name ~= "threads" then -- threads: run() compares the real count
          notes[#notes + 1] = string.format("--%s %s differs from the checkpoint's %s: the run will not continue "
                                            .. "exactly as it would have", name, show(opts[name]), show(v))
        end
      end
    end
  end
  for _, o in ipairs(opts._spec) do
    local alias = o[1]:gsub("%-", "_")
    if alias ~= o[1] then opts[alias] = opts[o[1]] end
  end
  return notes
end

local function shell_quote(s)
  if s:match("^[%w%-%._/=:,+@]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- "moco-lua recipe.lua <the same options> --resume PATH"
function pretrain.resume_command(opts, path)
  local argv = opts._argv or {}
  local lowest = 0
  while argv[lowest - 1] ~= nil do lowest = lowest - 1 end
  local words = { lowest < 0 and argv[lowest] or "moco-lua", argv[0] or "recipe.lua" }
  local i = 1
  while argv[i] ~= nil do
    local a = argv[i]
    if a == "--resume" then
      i = i + 1
    elseif not a:match("^%-%-resume=") then
      words[#words + 1] = shell_quote(a)
    end
    i = i + 1
  end
  words[#words + 1] = "--resume"
  words[#words + 1] = shell_quote(path)
  return table.concat(words, " ")
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
  if kind == "cifar" then
    return T.Compose{
      T.RandomResizedCrop(size), T.RandomHorizontalFlip(0.5),
      T.RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), T.RandomGrayscale(0.2),
      T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD),
    }
  elseif kind == "fashion-mnist" then
    -- Gray images: saturation and hue do nothing, grayscale is the identity.
    local list = { T.RandomResizedCrop(size, { scale = { 0.2, 1.0 } }), T.RandomApply(T.ColorJitter(0.4, 0.4, 0, 0), 0.8) }
    -- --aug-plus adds v2's blur (the jitter has p = 0.8 either way)
    if opts["aug-plus"] then list[#list + 1] = T.RandomApply(T.GaussianBlur{ 0.1, 2.0 }, 0.5) end
    for _, t in ipairs{ T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(FMNIST_MEAN, FMNIST_STD) } do
      list[#list + 1] = t
    end
    return T.Compose(list)
  elseif opts["aug-plus"] then
    return T.Compose{
      T.RandomResizedCrop(size, { scale = { 0.2, 1.0 } }),
      T.RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8), T.RandomGrayscale(0.2),
      T.RandomApply(T.GaussianBlur{ 0.1, 2.0 }, 0.5), T.RandomHorizontalFlip(),
      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    }
  end
  return T.Compose{
    T.RandomResizedCrop(size, { scale = { 0.2, 1.0 } }), T.RandomGrayscale(0.2),
    T.ColorJitter(0.4, 0.4, 0.4, 0.4), T.RandomHorizontalFlip(),
    T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
  }
end

-- Datasets named by --data: returns train, test (or nil), kind, test transform.
function pretrain.datasets(opts)
  local d = opts.data
  if d == "fashion-mnist" or d == "" then
    return data.FashionMNIST{ train = true }, data.FashionMNIST{ train = false }, "fashion-mnist",
           T.Compose{ T.ToTensor(), T.Normalize(FMNIST_MEAN, FMNIST_STD) }
  end
  local root = d:match("^cifar10:(.+)$")
  if root then
    return data.CIFAR10(root, { train = true }), data.CIFAR10(root, { train = false }), "cifar",
           T.Compose{ T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD) }
  end
  local function isdir(p)
    local f = io.open(p .. "/.")
    if f then f:close() return true end
    return false
  end
  if not isdir(d) then error(string.format("--data %s: no such directory", d), 0) end
  local train_dir = isdir(d .. "/train") and d .. "/train" or d
  local val_dir = isdir(d .. "/val") and d .. "/val" or nil
  local size = opts["image-size"]
  local resize = math.floor(size * 256 / 224 + 0.5)
  local test_t = T.Compose{ T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD) }
  return data.ImageFolder(train_dir), val_dir and data.ImageFolder(val_dir) or nil, "imagenet", test_t
end

-- The moco.MoCo options of a recipe's opts; dataset_size: the training samples (the memory
-- bank's rows).  moco.MoCo.check_config(pretrain.model_options(opts, n), batch size) checks
-- a run before anything is built (recipes/ablations.lua, for every run of a sweep).
function pretrain.model_options(opts, dataset_size)
  return {
    mechanism = opts.mechanism, bank_size = opts.mechanism == "memory_bank" and dataset_size or nil,
    bank_m = opts["bank-m"], arch = opts.arch, dim = opts["moco-dim"], K = opts["moco-k"], m = opts["moco-m"], T = opts["moco-t"],
    mlp = opts.mlp, bn_splits = opts["bn-splits"], symmetric = opts.symmetric, shuffle = not opts["no-shuffle"],
    in_channels = opts["in-channels"], cifar_stem = opts["cifar-stem"], width = opts.width,
    lr = opts.lr, momentum = opts.momentum, weight_decay = opts.wd, seed = opts.seed,
  }
end

function pretrain.build_model(opts, dataset_size)
  return moco.MoCo(pretrain.model_options(opts, dataset_size))
end

local function is_directory(path)
  return pcall(moco._io.listdir, path)
end

-- Runs pre-training; returns the model, the history and the last kNN accuracy (or nil).
-- hooks (optional): {should_stop = function() ... end} for train.fit (a time budget).
function pretrain.run(opts, hooks)
  local ckpt
  if opts.resume ~= "" then
    local path = opts.resume
    if is_directory(path) then
      path = checkpoint.latest(path)
      if not path then error(string.format("--resume %s: no checkpoint_*.safetensors in that directory", opts.resume), 0) end
    end
    ckpt = checkpoint.load(path)
    for _, note in ipairs(pretrain.apply_checkpoint(opts, ckpt)) do io.stderr:write("note: ", note, "\n") end
  end
  if opts.threads > 0 then moco.set_num_threads(opts.threads) end
  if ckpt and ckpt.blas_threads and ckpt.blas_threads ~= moco.get_num_threads() then
    io.stderr:write(string.format("note: the checkpoint was written with %d BLAS thread(s), this run has %d: the "
                                  .. "results will not be bitwise those of an uninterrupted run (--threads %d)\n",
                                  ckpt.blas_threads, moco.get_num_threads(), ckpt.blas_threads))
  end
  local train_ds, test_ds, kind, test_transform = pretrain.datasets(opts)
  train_ds = take(train_ds, opts["train-subset"])
  local aug = pretrain.augmentation(opts, kind)
  local loader = data.Loader(train_ds, {
    batch_size = opts["batch-size"], transform = T.TwoCrops(aug), workers = opts.workers,
    shuffle = true, drop_last = true, seed = opts.seed,
  })
  local model = pretrain.build_model(opts, #train_ds)
  model:check_batch(opts["batch-size"]) -- what the first step would refuse, said before training
  print(string.format("moco-lua: %s on %s (%d images, %d steps per epoch); %s",
                      opts.arch, kind, #train_ds, #loader, recipe.describe(opts, opts._spec)))
  print(string.format("encoder: %d parameters; augmentation: %s", model.encoder_q:num_parameters(), tostring(aug)))
  local start_epoch, start_step, resume_sums, best_knn = opts["start-epoch"], 0, nil, nil
  local last_checkpoint
  if ckpt then
    checkpoint.restore(model, ckpt)
    start_epoch, start_step, resume_sums, best_knn = ckpt.epoch, ckpt.epoch_step, ckpt.epoch_sums, ckpt.best_knn
    if start_step >= #loader then
      error(string.format("%s: %d batches of epoch %d are done but an epoch now has %d (another --batch-size "
                          .. "or data set?)", ckpt.path, start_step, start_epoch, #loader), 0)
    end
    last_checkpoint = ckpt.path
    print(string.format("resumed from %s: epoch %d%s, global step %d", ckpt.path, start_epoch,
                        start_step > 0 and string.format(" after its step %d", start_step) or "", ckpt.step))
  end
  local out = opts.out
  if out ~= "" then moco._io.makedirs(out) end
  local monitor
  if opts["knn-every"] > 0 and test_ds then
    local bank_ds = take(train_ds, opts["knn-subset"])
    monitor = function()
      local top1 = eval.knn_monitor(model:encoder(), bank_ds, test_ds, {
        transform = test_transform, k = opts["knn-k"], T = opts["knn-t"], workers = opts.workers,
      })
      return top1
    end
  end
  -- After every epoch with --out; after an interrupted one always (into "." without --out).
  local saved_record
  local function on_epoch_end(epoch, record)
    if out == "" and not record.interrupted then return end
    saved_record = record
    local path, is_best, best = checkpoint.save_epoch(out ~= "" and out or ".", model, {
      epoch = epoch, record = record, config = opts, best_knn = best_knn, keep = opts["keep-checkpoints"],
      loader_seed = opts.seed, recipe = opts._argv and opts._argv[0],
    })
    best_knn, last_checkpoint = best, path
    print(string.format("checkpoint: %s%s", path,
                        is_best and string.format(" (best kNN so far, %.2f%%: copied to model_best.safetensors)", best) or ""))
  end
  local function on_interrupt(signal, record)
    if saved_record ~= record then on_epoch_end(record.epoch, record) end -- the signal came after it ran
    io.stdout:flush()
    io.stderr:write(string.format("moco-lua: %s: stopped at epoch %d after step %d of %d; checkpoint saved to %s\n"
                                  .. "to resume: %s\n", signal, record.epoch, record.steps, #loader, last_checkpoint,
                                  pretrain.resume_command(opts, last_checkpoint)))
    io.stderr:flush()
  end
  local function on_diverge(epoch, step, loss)
    error(string.format("training diverged: the loss is %s at epoch %d, step %d; nothing was saved after it. %s",
                        tostring(loss), epoch, step,
                        last_checkpoint and string.format("The last good checkpoint is %s: resume from it with a lower "
                                                          .. "--lr: %s --lr %g", last_checkpoint,
                                                          pretrain.resume_command(opts, last_checkpoint), opts.lr / 2)
                                        or "No checkpoint was written (--out DIR keeps one per epoch); lower --lr."), 0)
  end
  local history = train.fit(model, loader, {
    epochs = opts.epochs, lr = opts.lr, cos = opts.cos, schedule = opts.schedule,
    warmup_epochs = opts["warmup-epochs"], start_epoch = start_epoch, start_step = start_step,
    resume_sums = resume_sums, print_freq = opts["print-freq"], monitor = monitor, monitor_every = opts["knn-every"],
    on_epoch_end = on_epoch_end, on_interrupt = on_interrupt, on_diverge = on_diverge,
    should_stop = hooks and hooks.should_stop,
  })
  loader:close()
  local last = history[#history]
  return model, history, last and last.knn
end

return pretrain
