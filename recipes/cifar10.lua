-- recipes/cifar10.lua: MoCo on CIFAR-10 with the official demo's settings.
--
-- The official MoCo CIFAR-10 demo's settings: ResNet-18 with the CIFAR
-- stem, split batch norm over 8 groups (shuffling BN on one process), batch 512, lr 0.06,
-- weight decay 5e-4, K 4096, m 0.99, T 0.1, cosine schedule, 200 epochs, and the kNN
-- monitor (k 200, T 0.1) every epoch.
--   moco-lua recipes/cifar10.lua --data cifar10:/path/to/cifar-10-batches-bin
local pretrain = require "moco.pretrain"

local opts = pretrain.parse(arg, {
  arch = "resnet18", ["cifar-stem"] = true, ["bn-splits"] = 8, ["batch-size"] = 512, lr = 0.06,
  wd = 5e-4, momentum = 0.9, ["moco-dim"] = 128, ["moco-k"] = 4096, ["moco-m"] = 0.99, ["moco-t"] = 0.1,
  cos = true, epochs = 200, ["knn-every"] = 1, ["knn-k"] = 200, ["knn-t"] = 0.1, ["image-size"] = 32,
  schedule = {}, symmetric = false, mlp = false,
}, "MoCo on CIFAR-10 with the official demo's settings")
if not opts then return end
pretrain.run(opts, { check_data = function(data)
  if not data:match("^cifar10:") then
    error("--data must be cifar10:/path/to/cifar-10-batches-bin (the official binary version)", 0)
  end
end })
