-- recipes/moco_v2.lua: MoCo v2 with the official README's settings.
--
-- MoCo v2 (Chen et al. 2020): the v1 defaults plus the MLP head,
-- T 0.2, the v2 augmentation (--aug-plus: colour jitter with p 0.8, grayscale, Gaussian
-- blur with sigma in [0.1, 2]) and the cosine schedule, as the official README's command.
--   moco-lua recipes/moco_v2.lua --data /path/to/imagenet [--epochs 10 --moco-k 4096 ...]
local pretrain = require "moco.pretrain"

local opts = pretrain.parse(arg, {
  arch = "resnet50", lr = 0.03, ["batch-size"] = 256, wd = 1e-4, momentum = 0.9, epochs = 200,
  ["moco-dim"] = 128, ["moco-k"] = 65536, ["moco-m"] = 0.999, ["moco-t"] = 0.2,
  mlp = true, ["aug-plus"] = true, cos = true, ["image-size"] = 224,
}, "MoCo v2 pre-training (Chen et al. 2020) on an ImageNet-style folder")
if not opts then return end
pretrain.run(opts, { check_data = function(data)
  if data == "" then error("--data (or DIR) is required: a folder with train/<class>/<image files>", 0) end
end })
