-- recipes/lincls.lua: the linear classification protocol of the official main_lincls.py on a
-- MoCo checkpoint: the backbone frozen in eval mode, a new Linear(feature_dim, classes)
-- initialised N(0, 0.01), SGD lr 30, momentum 0.9, weight decay 0, batch 256, 100 epochs with
-- the lr x0.1 at 60 and 80; top-1/top-5 on the test set; the check that the backbone did not
-- change.  Flags keep the official names.
--   moco-lua recipes/lincls.lua --pretrained quickstart-out/checkpoint.safetensors
--   moco-lua recipes/lincls.lua --pretrained ckpt --no-precomputed        (augmented protocol)
--   moco-lua recipes/lincls.lua --pretrained random --epochs 10          (untrained baseline)
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

local IMAGENET_MEAN, IMAGENET_STD = pretrain.IMAGENET_MEAN, pretrain.IMAGENET_STD

local spec = {
  { "pretrained", "", "MoCo checkpoint, or 'random' for an untrained encoder (the baseline)" },
  { "data", "fashion-mnist", "dataset: 'fashion-mnist', 'cifar10:ROOT', or a folder with train/ and val/" },
  { "precomputed", true, "train on features extracted once without augmentation (--no-precomputed: the official augmented protocol)" },
  { "epochs", 100, "number of total epochs to run" },
  { "start-epoch", 0, "epoch to start at (0-based)" },
  { "batch-size", 256, "mini-batch size", short = "b" },
  { "lr", 30.0, "initial learning rate" },
  { "schedule", { 60, 80 }, "epochs at which the lr drops by 10x" },
  { "momentum", 0.9, "SGD momentum" },
  { "wd", 0.0, "weight decay" },
  { "print-freq", 10, "print every N steps (augmented mode)", short = "p" },
  { "train-subset", 0, "train on the first N training images only (0 = all)" },
  { "test-subset", 0, "evaluate on the first N test images only (0 = all)" },
  { "image-size", 224, "crop size for folder datasets (small datasets use their native size)" },
  { "workers", 2, "data loading threads", short = "j" },
  { "threads", 0, "BLAS/compute threads (0 = leave the default)" },
  { "seed", 0, "seed of the classifier's initialisation and of the batch order" },
  { "arch", "resnet20", "encoder architecture for --pretrained random" },
  { "in-channels", 0, "image channels for --pretrained random (0: 1 for fashion-mnist, else 3)" },
  { "out", "", "directory for the curves picture (lincls-curves.png); empty: none" },
}
local opts = recipe.parse(arg, spec, { description = "Linear classification on a frozen MoCo backbone (main_lincls.py)" })
if not opts then return end
if #opts._positional > 0 then error("unexpected argument '" .. opts._positional[1] .. "' (--help lists the options)", 0) end
if opts.threads > 0 then moco.set_num_threads(opts.threads) end

local train_ds, test_ds, kind, test_transform = pretrain.datasets(opts)
if not test_ds then error("--data " .. opts.data .. ": no val/ folder to evaluate on", 0) end
if opts["train-subset"] > 0 and opts["train-subset"] < #train_ds then train_ds = data.Subset(train_ds, opts["train-subset"]) end
if opts["test-subset"] > 0 and opts["test-subset"] < #test_ds then test_ds = data.Subset(test_ds, opts["test-subset"]) end
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
local in_channels = opts["in-channels"] > 0 and opts["in-channels"] or (kind == "fashion-mnist" and 1 or 3)
local backbone = eval.load_encoder(opts.pretrained, { arch = opts.arch, in_channels = in_channels, seed = opts.seed })
local classes = train_ds.classes and #train_ds.classes or math.tointeger(train_ds:targets():max()) + 1

print(string.format("lincls: %s on %s (%d train, %d test images, %d classes); %s", opts.pretrained, kind, #train_ds,
                    #test_ds, classes, recipe.describe(opts, spec)))
local result = lincls.run{
  backbone = backbone, train_dataset = train_ds, test_dataset = test_ds, train_transform = train_transform,
  test_transform = test_transform, precomputed = opts.precomputed, classes = classes, workers = opts.workers,
  seed = opts.seed, lr = opts.lr, momentum = opts.momentum, weight_decay = opts.wd, epochs = opts.epochs,
  start_epoch = opts["start-epoch"], schedule = opts.schedule, batch_size = opts["batch-size"],
  print_freq = opts["print-freq"],
}
print(string.format("lincls (%s mode, %d epochs, lr %g): test top-1 %.2f%%  top-5 %.2f%%  (best top-1 %.2f%% at epoch %s; %.1f s)",
                    result.mode, opts.epochs, opts.lr, result.top1 or 0, result.top5 or 0, result.best_top1,
                    tostring(result.best_epoch), result.seconds))
if opts.out ~= "" then
  local path = plot.output_path(opts.out, "lincls-curves.png")
  plot.training_curves(result.history, {
    path = path, panels = plot.LINCLS_PANELS,
    title = string.format("Linear probe (%s mode) of %s on %s", result.mode, opts.pretrained:match("[^/]*$"), kind),
  })
  print("curves: " .. path)
end
