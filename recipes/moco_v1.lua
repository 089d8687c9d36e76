-- recipes/moco_v1.lua: MoCo v1 with the official defaults (main_moco.py).
--
-- MoCo v1 with the official defaults (main_moco.py): ResNet-50, lr 0.03
-- for batch 256, weight decay 1e-4, SGD momentum 0.9, 200 epochs with the lr divided by 10 at
-- epochs 120 and 160, dim 128, K 65536, m 0.999, T 0.07, the v1 augmentation.
--   moco-lua recipes/moco_v1.lua --data /path/to/imagenet [--epochs 10 --moco-k 4096 ...]
-- The folder holds train/<class>/<image> (and optionally val/).  --help lists every option.
local pretrain = require "moco.pretrain"

local opts = pretrain.parse(arg, {
  arch = "resnet50", lr = 0.03, ["batch-size"] = 256, wd = 1e-4, momentum = 0.9, epochs = 200,
  schedule = { 120, 160 }, ["moco-dim"] = 128, ["moco-k"] = 65536, ["moco-m"] = 0.999, ["moco-t"] = 0.07,
  mlp = false, ["aug-plus"] = false, cos = false, ["image-size"] = 224,
}, "MoCo v1 pre-training (He et al. 2020) on an ImageNet-style folder")
if not opts then return end
pretrain.run(opts, { check_data = function(data)
  if data == "" then error("--data (or DIR) is required: a folder with train/<class>/<image files>", 0) end
end })
