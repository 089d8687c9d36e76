-- recipes/lincls.lua: linear classification on a frozen MoCo backbone (main_lincls.py).
--
-- The protocol of the official main_lincls.py on a MoCo checkpoint: the backbone frozen in
-- eval mode, a new Linear(feature_dim, classes) initialised N(0, 0.01), SGD lr 30, momentum
-- 0.9, weight decay 0, batch 256, 100 epochs with the lr x0.1 at 60 and 80; top-1/top-5 on the
-- test set; the check that the backbone did not change.  Flags keep the official names.
--   moco-lua lincls --pretrained runs/quickstart-.../checkpoint_0009.safetensors
--   moco-lua lincls --pretrained ckpt --no-precomputed        (augmented protocol)
--   moco-lua lincls --pretrained random --epochs 10          (untrained baseline)
--   moco-lua lincls --resume runs/lincls-...                 (continue a stopped run)
--   moco-lua lincls -e --resume runs/lincls-.../model_best.safetensors   (evaluate only)
--
-- As main_lincls.py, a run saves the whole classifier (backbone and fc), its optimizer and
-- the best accuracy after every epoch, into its run directory (runs/lincls-<date>, or --out):
-- checkpoint_NNNN.safetensors (the last --keep-checkpoints), model_best.safetensors (the
-- best test top-1), config.json, log.jsonl, lincls-curves.png and report.html.
--
-- Modes (docs/evaluation.md):
--   --precomputed (the default: this toolkit runs on CPUs): features of the training images
--       are extracted once (eval mode, test transform, no augmentation) and the classifier
--       trains on them; the backbone runs once instead of 100 times.
--   --no-precomputed: main_lincls.py's protocol, the frozen backbone on augmented images every
--       epoch.  Training augmentation: RandomResizedCrop + horizontal flip.  For folder datasets
--       as the official (crop 224, scale (0.08, 1); test Resize 256 + CenterCrop 224).  For the
--       small-image datasets (fashion-mnist 28x28, cifar10 32x32) the crop is at the native size
--       with scale (0.2, 1) -- the pre-training augmentation's range: (0.08, 1) would leave 8-pixel
--       crops of a 28-pixel image -- and the test images are used as they are (no resize, no
--       crop), as the kNN monitor uses them.
local recipe = require "moco.recipe"
local pretrain = require "moco.pretrain"
local eval = require "moco.eval"
local lincls = require "moco.lincls"
local plot = require "moco.plot"
local T = require "moco.transforms"
local data = require "moco.data"
local rundir = require "moco.rundir"
local report = require "moco.report"
local dist = require "moco.dist"

local IMAGENET_MEAN, IMAGENET_STD = pretrain.IMAGENET_MEAN, pretrain.IMAGENET_STD

local spec = pretrain.probe_spec{
  { "precomputed", true, "train on features extracted once without augmentation (--no-precomputed: the official augmented protocol)" },
  { "epochs", 100, "number of total epochs to run", metavar = "N" },
  { "start-epoch", 0, "epoch to start at (0-based)", metavar = "N" },
  { "batch-size", 256, "mini-batch size", short = "b", metavar = "N" },
  { "lr", 30.0, "initial learning rate", aliases = { "learning-rate" }, metavar = "LR" },
  { "schedule", { 60, 80 }, "epochs at which the lr drops by 10x" },
  { "momentum", 0.9, "SGD momentum", metavar = "M" },
  { "wd", 0.0, "weight decay", aliases = { "weight-decay" }, metavar = "W" },
  { "print-freq", 10, "print every N steps (augmented mode)", short = "p", metavar = "N" },
  { "train-subset", 0, "train on the first N training images only (0 = all)", metavar = "N" },
  { "seed", 0, "seed of the classifier's initialisation and of the batch order" },
  { "out", "", "run directory (default runs/lincls-<date>)", path = true, metavar = "DIR" },
  { "resume", "", "continue a classifier: its run directory or a checkpoint file ('auto': the newest lincls run)",
    path = true, metavar = "DIR|FILE|auto" },
  { "evaluate", false, "only evaluate the classifier of --resume on the test set", short = "e", local_only = true },
  { "keep-checkpoints", 2, "epoch checkpoints kept (0 = all); the best stays as model_best.safetensors",
    local_only = true, metavar = "N" },
  { "quiet", false, "no progress bars and no periodic step lines", local_only = true },
}
-- Under mpirun (docs/distributed.md): the features are extracted on shards and gathered;
-- rank 0 alone prints and writes.  What can refuse the run is agreed by every rank.
local opts = pretrain.probe_start(arg, spec, "Linear classification on a frozen MoCo backbone (main_lincls.py)")
if not opts then return end
local main = opts._rank == 0
local function note(text) if main then io.stderr:write("note: ", text, "\n") end end

-- What to resume, and the settings that come with it (paths never from a checkpoint).
local plan, ckpt, pretrained_backbone, model_options
local STEM_CHANNELS = moco.models.STEM_CHANNELS
dist.agreed(function()
  plan = pretrain.resume_plan(opts, { load = lincls.load_checkpoint, kind = "lincls" })
  ckpt = plan.ckpt
  for _, n in ipairs(plan.notes) do note(n) end
  if ckpt then
    for _, n in ipairs(pretrain.apply_checkpoint(opts, ckpt, plan.dir_options)) do note(n) end
  end
  if ckpt and not opts.evaluate and ckpt.epoch >= opts.epochs then
    note(string.format("%s finished its %d epochs (a larger --epochs continues it): evaluating it", ckpt.path, opts.epochs))
    opts.evaluate = true
  end
  if opts.evaluate and not ckpt then
    error("--evaluate needs --resume: a classifier checkpoint of this recipe, or its run directory", 0)
  end
  if not ckpt and opts.pretrained == "" then
    error("--pretrained is required: a MoCo checkpoint, or 'random' for an untrained encoder", 0)
  end
  -- options checked before any data is loaded
  for _, name in ipairs{ "epochs", "batch-size" } do
    if opts[name] < 1 then error(string.format("--%s must be at least 1, got %d", name, opts[name]), 0) end
  end
  for _, name in ipairs{ "start-epoch", "print-freq", "train-subset", "test-subset", "workers", "threads", "keep-checkpoints" } do
    if opts[name] < 0 then error(string.format("--%s must not be negative, got %d", name, opts[name]), 0) end
  end
  if not (opts.lr >= 0 and opts.wd >= 0 and opts.momentum >= 0) then
    error("--lr, --wd and --momentum must not be negative", 0)
  end
  if opts["start-epoch"] >= opts.epochs and not ckpt then
    error(string.format("--start-epoch %d is not before --epochs %d: nothing to train", opts["start-epoch"], opts.epochs), 0)
  end
  if opts.threads > 0 then moco.set_num_threads(opts.threads) end

  -- The backbone, read before anything is written (a missing or hostile --pretrained file
  -- fails here): a MoCo checkpoint of moco-lua, an official or torchvision torch.save file, or
  -- 'random'.  Its options, stored in the classifier's checkpoints to rebuild it, are read
  -- off the network itself, whatever file it came from.
  if ckpt then
    model_options = ckpt.model
  else
    pretrained_backbone = pretrain.probe_backbone(opts)
    local conv = pretrained_backbone.conv1
    model_options = {
      arch = pretrained_backbone.arch, in_channels = conv.in_channels,
      cifar_stem = pretrained_backbone.arch ~= "resnet20" and conv.kernel_size == 3,
      width = conv.out_channels / (STEM_CHANNELS[pretrained_backbone.arch] or conv.out_channels),
      -- a 3x3 stem's stride (the quickstart's is 2): the classifier's checkpoints rebuild it
      stem_stride = conv.kernel_size == 3 and conv.stride or nil,
    }
  end
end)

-- The datasets, then the run directory (not for --evaluate, which writes nothing):
-- config.json first.  Rank 0 writes it; the other ranks learn its name.
local train_ds, test_ds, kind, test_transform = dist.agreed(function()
  local tr, te, k, tt = pretrain.datasets(opts)
  if not te then error("--data " .. opts.data .. ": no val/ folder to evaluate on", 0) end
  return tr, te, k, tt
end)
local run
if not opts.evaluate then
  local command = table.concat(opts._argv, " ", 0)
  run = dist.agreed(function()
    if not main then return nil end
    local run
    if plan.run then
      run = plan.run
      opts.out = run.dir
      run:save_config(recipe.values(opts, spec), { at = os.date("%Y-%m-%dT%H:%M:%S"), command = command, from = ckpt and ckpt.path })
    else
      run = rundir.create(opts._given.out and opts.out or nil, { recipe = "lincls", kind = "lincls", command = command })
      opts.out = run.dir
      run:save_config(recipe.values(opts, spec))
    end
    return run
  end)
  if dist.active() then
    local dir, id = dist.broadcast_string(main and run.dir or ""), dist.broadcast_string(main and run.id or "")
    if not main then run = rundir.follower(dir, id, { recipe = "lincls", kind = "lincls" }) end
  end
  print(string.format("run directory: %s (checkpoints, log.jsonl, config.json, report.html)", run.dir))
end

if opts["train-subset"] > 0 and opts["train-subset"] < #train_ds then train_ds = data.Subset(train_ds, opts["train-subset"]) end
if opts["test-subset"] > 0 and opts["test-subset"] < #test_ds then test_ds = data.Subset(test_ds, opts["test-subset"]) end
local classes = train_ds.classes and #train_ds.classes or math.tointeger(train_ds:targets():max()) + 1

if opts.evaluate then -- main_lincls.py -e: validate the saved classifier and stop
  local net = ckpt.backbone
  if net.fc.out_features ~= classes then
    error(string.format("%s: the classifier has %d classes, the dataset %d", ckpt.path, net.fc.out_features, classes), 0)
  end
  local t0 = moco.time()
  local x, y = eval.extract_features(net, test_ds, { transform = test_transform, workers = opts.workers,
                                                     features = "pooled", normalize = false, label = "test features" })
  local top1, top5, loss = lincls.evaluate(net.fc, x, y)
  print(string.format(" * Acc@1 %.3f Acc@5 %.3f  (loss %.4f; %s, epoch %d, %d test images, %.1f s)", top1, top5, loss,
                      ckpt.path, ckpt.epoch - 1, #test_ds, moco.time() - t0))
  return
end

local train_transform
if kind == "imagenet" then
  train_transform = T.Compose{
    T.RandomResizedCrop(opts["image-size"]), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
  }
else
  -- crop + flip, then the test transform's steps (ToTensor, Normalize with the dataset's statistics)
  local size = train_ds:get(1):size()
  local steps = { T.RandomResizedCrop(size, { scale = { 0.2, 1.0 } }), T.RandomHorizontalFlip() }
  for _, t in ipairs(test_transform.transforms) do steps[#steps + 1] = t end
  train_transform = T.Compose(steps)
end
model_options.classes = classes
local backbone, resume
if ckpt then
  backbone = ckpt.backbone
  if backbone.fc.out_features ~= classes then
    error(string.format("%s: the classifier has %d classes, the dataset %d", ckpt.path, backbone.fc.out_features, classes), 0)
  end
  resume = { epoch = ckpt.epoch, steps = ckpt.steps, momentum_buffer = ckpt.momentum_buffer, history = ckpt.history,
             best_top1 = ckpt.best_top1, best_epoch = ckpt.best_epoch }
  print(string.format("resumed from %s: epoch %d (best top-1 so far %.2f%%)", ckpt.path, ckpt.epoch, ckpt.best_top1 or 0))
else
  backbone = pretrained_backbone
end
local source = ckpt and ckpt.path or opts.pretrained

print(string.format("lincls: %s on %s (%d train, %d test images, %d classes); %s", source, kind, #train_ds,
                    #test_ds, classes, recipe.describe(opts, spec)))
local title = string.format("Linear probe of %s on %s", source:match("[^/]*$"), kind)
local curves = run:path("lincls-curves.png")
local results = {}
local function write_report(status, history)
  if not main then return end -- rank 0 writes
  local ok, err = pcall(function()
    local pictures = {}
    if #history > 0 then
      pretrain.atomic_picture(curves, function(p)
        plot.training_curves(history, { path = p, panels = plot.LINCLS_PANELS, title = title })
      end)
      pictures[1] = { title = "Curves", file = curves, caption = "cross-entropy, accuracies and learning rate per epoch" }
    end
    report.write(run:path("report.html"), {
      title = "lincls: " .. title, status = status, results = results, pictures = pictures, history = history,
      columns = report.LINCLS_COLUMNS, options = run.config.options,
      facts = { { "run directory", run.dir }, { "run id", run.id }, { "backbone", source }, { "command", run.config.command } },
    })
  end)
  if not ok then io.stderr:write("warning: ", run:path("report.html"), " not refreshed: ", tostring(err), "\n") end
end

local last_saved
local function on_epoch_end(record, result, sgd, is_best)
  if not main then return end -- rank 0 writes (every rank holds the same classifier)
  local path = run:path(string.format("checkpoint_%04d.safetensors", record.epoch))
  lincls.save_checkpoint(path, backbone, sgd, {
    epoch = record.epoch + 1, steps = sgd.steps, best_top1 = result.best_top1, best_epoch = result.best_epoch,
    history = result.history, model = model_options, config = (function()
      local c = {}
      for _, o in ipairs(spec) do if not (o.path or o.local_only) then c[o[1]] = opts[o[1]] end end
      return c
    end)(), run_id = run.id,
  })
  if is_best then moco._io.copy_file(path, run:path("model_best.safetensors")) end
  rundir.prune(run.dir, opts["keep-checkpoints"], path:match("[^/]*$"))
  last_saved = path
  local entry = { type = "epoch", checkpoint = path, best_top1 = result.best_top1 }
  for k, v in pairs(record) do entry[k] = v end
  run:log(entry)
  write_report(string.format("training: epoch %d of %d done (best test top-1 %.2f%% at epoch %d)", record.epoch,
                             opts.epochs, result.best_top1, result.best_epoch), result.history)
end

write_report("starting", resume and resume.history or {})
local result = lincls.run{
  backbone = backbone, train_dataset = train_ds, test_dataset = test_ds, train_transform = train_transform,
  test_transform = test_transform, precomputed = opts.precomputed, classes = classes, workers = opts.workers,
  seed = opts.seed, lr = opts.lr, momentum = opts.momentum, weight_decay = opts.wd, epochs = opts.epochs,
  start_epoch = opts["start-epoch"], schedule = opts.schedule, batch_size = opts["batch-size"],
  print_freq = opts["print-freq"], resume = resume, on_epoch_end = on_epoch_end,
}
print(string.format("lincls (%s mode, %d epochs, lr %g): test top-1 %.2f%%  top-5 %.2f%%  (best top-1 %.2f%% at epoch %s; %.1f s)",
                    result.mode, opts.epochs, opts.lr, result.top1 or 0, result.top5 or 0, result.best_top1,
                    tostring(result.best_epoch), result.seconds))
results = {
  { "test top-1 (last epoch)", string.format("%.2f%%", result.top1 or 0) },
  { "test top-5 (last epoch)", string.format("%.2f%%", result.top5 or 0) },
  { "best test top-1", string.format("%.2f%% (epoch %s)", result.best_top1, tostring(result.best_epoch)) },
  { "mode", result.mode },
}
write_report(string.format("finished: %d epochs; the classifier is in %s", opts.epochs, tostring(last_saved)), result.history)
print("classifier: " .. tostring(last_saved) .. (result.best_epoch and (", best: " .. run:path("model_best.safetensors")) or ""))
print("curves: " .. curves)
print("report: " .. run:path("report.html"))
