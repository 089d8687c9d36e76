-- tests/lua/test_learning.lua: MoCo learns.  A short run on a Fashion-MNIST subset (from the
-- Debian package): the contrastive loss falls over training, and the kNN accuracy of the
-- learned features clearly beats the same encoder at its random initialisation (20 short
-- epochs: at 10, the margin over random varied from -0.1 to +6 points across seeds).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local T, data, eval = moco.transforms, moco.data, moco.eval

local tests = {}

function tests.moco_learns_on_fashion_mnist()
  local train_ds = data.Subset(data.FashionMNIST{ train = true }, 2048)
  local test_ds = data.Subset(data.FashionMNIST{ train = false }, 1000)
  local norm = T.Normalize({ 0.286 }, { 0.353 })
  local aug = T.Compose{ T.RandomResizedCrop(28, { scale = { 0.2, 1.0 } }), T.RandomApply(T.ColorJitter(0.4, 0.4, 0, 0), 0.8),
                         T.RandomHorizontalFlip(), T.ToTensor(), norm }
  local test_t = T.Compose{ T.ToTensor(), norm }
  local loader = data.Loader(train_ds, { batch_size = 128, transform = T.TwoCrops(aug), workers = 1, seed = 1 })
  local model = moco.MoCo{ arch = "resnet20", width = 0.5, in_channels = 1, dim = 64, K = 256, m = 0.99, T = 0.2,
                           mlp = true, bn_splits = 4, lr = 0.03, weight_decay = 5e-4, seed = 1 }
  local function knn()
    return eval.knn_monitor(model:encoder(), train_ds, test_ds, { transform = test_t, k = 50, T = 0.1, workers = 1,
                                                                  features = "pooled" })
  end
  local random_top1 = knn()
  local history = moco.train.fit(model, loader, { epochs = 20, lr = 0.03, cos = true, print_freq = 0, log = function() end })
  local learned_top1 = knn()
  print(string.format("loss by epoch: %s", table.concat((function()
    local t = {}
    for i, r in ipairs(history) do t[i] = string.format("%.3f", r.loss) end
    return t
  end)(), " ")))
  print(string.format("kNN top-1: random encoder %.1f%%, after MoCo %.1f%%", random_top1, learned_top1))
  -- The loss first rises while the queue fills with real keys, then falls: compare the
  -- second epoch (queue full) with the last.
  check.ok("contrastive loss falls", history[#history].loss < history[2].loss - 0.3,
           string.format("epoch 2 %.3f, last %.3f", history[2].loss, history[#history].loss))
  check.ok("kNN clearly beats a random encoder", learned_top1 > random_top1 + 5,
           string.format("random %.1f%%, learned %.1f%%", random_top1, learned_top1))
  loader:close()
end

check.run(tests)
