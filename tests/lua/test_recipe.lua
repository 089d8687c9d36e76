-- tests/lua/test_recipe.lua: recipe options (official flag names), the training loop and the
-- schedules, on a tiny MoCo run.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local recipe = require "moco.recipe"
local pretrain = require "moco.pretrain"
local optim = require "moco.optim"

local spec = {
  { "lr", 0.03, "learning rate" },
  { "batch-size", 256, "batch", short = "b" },
  { "moco-t", 0.07, "temperature" },
  { "moco-k", 65536, "queue" },
  { "schedule", { 120, 160 }, "milestones" },
  { "mlp", false, "head" },
  { "cos", false, "cosine" },
  { "data", "", "data" },
}

local tests = {}

function tests.parse_types_and_aliases()
  local o = recipe.parse({ "--lr", "0.015", "-b", "128", "--moco-k=4096", "--schedule", "30", "40",
                           "--mlp", "--data", "/x", "extra" }, spec)
  check.eq("number option", o.lr, 0.015)
  check.eq("short alias", o["batch-size"], 128)
  check.eq("snake_case alias", o.batch_size, 128)
  check.eq("integer stays integer", math.type(o["moco-k"]), "integer")
  check.eq("--name=value", o["moco-k"], 4096)
  check.eq("list option", table.concat(o.schedule, ","), "30,40")
  check.eq("boolean flag", o.mlp, true)
  check.eq("string option", o.data, "/x")
  check.eq("positional kept", o._positional[1], "extra")
  check.eq("defaults untouched", o["moco-t"], 0.07)
  local n = recipe.parse({ "--no-mlp", "--cos", "false" }, spec)
  check.eq("--no-flag", n.mlp, false)
  check.eq("flag with explicit false", n.cos, false)
end

function tests.parse_errors()
  check.raises("unknown option suggests the closest", "did you mean --moco-t?", recipe.parse, { "--moco-tt", "0.2" }, spec)
  check.raises("unknown short option", "unknown option '-z'", recipe.parse, { "-z" }, spec)
  check.raises("bad number names the option", "option --lr expects a number, got 'fast'", recipe.parse, { "--lr", "fast" }, spec)
  check.raises("integer option rejects fractions", "option --moco-k expects an integer", recipe.parse, { "--moco-k", "1.5" }, spec)
  check.raises("missing value", "option --data needs a value", recipe.parse, { "--data" }, spec)
  check.eq("levenshtein", recipe.levenshtein("moco-tt", "moco-t"), 1)
end

function tests.pretrain_options_are_official()
  local o = pretrain.parse({ "--lr", "0.015", "--batch-size", "128", "--moco-k", "4096", "--moco-t", "0.2",
                             "--epochs", "10", "--data", "PATH" }, { arch = "resnet50" })
  check.eq("--lr", o.lr, 0.015)
  check.eq("--batch-size", o["batch-size"], 128)
  check.eq("--moco-k", o["moco-k"], 4096)
  check.eq("--moco-t", o["moco-t"], 0.2)
  check.eq("--epochs", o.epochs, 10)
  check.eq("--data", o.data, "PATH")
  check.raises("positional arguments are refused", "unexpected argument 'oops'", pretrain.parse, { "oops" }, {})
end

function tests.schedules()
  check.eq("cosine at 0", optim.cosine_lr(0.06, 0, 200), 0.06)
  check.near("cosine at half", optim.cosine_lr(0.06, 100, 200), 0.03, 1e-12)
  check.near("step before milestones", optim.step_lr(0.03, 119, { 120, 160 }), 0.03, 1e-12)
  check.near("step after first", optim.step_lr(0.03, 120, { 120, 160 }), 0.003, 1e-12)
  check.near("step after second", optim.step_lr(0.03, 199, { 120, 160 }), 0.0003, 1e-12)
  check.near("warm-up halfway", optim.warmup_lr(0.1, 2.5, 5), 0.05, 1e-12)
  check.eq("after warm-up", optim.warmup_lr(0.1, 5, 5), 0.1)
end

function tests.tiny_training_run()
  local ds = moco.data.Subset(moco.data.FashionMNIST{ train = true }, 128)
  local T = moco.transforms
  local aug = T.Compose{ T.RandomResizedCrop(16, { scale = { 0.2, 1 } }), T.ToTensor() }
  local loader = moco.data.Loader(ds, { batch_size = 32, transform = T.TwoCrops(aug), workers = 1 })
  local model = moco.MoCo{ arch = "resnet20", width = 0.25, in_channels = 1, dim = 16, K = 64, m = 0.99,
                           T = 0.2, mlp = true, bn_splits = 2, lr = 0.05 }
  local lines = {}
  local history = moco.train.fit(model, loader, {
    epochs = 2, lr = 0.05, cos = true, print_freq = 2, log = function(l) lines[#lines + 1] = l end,
    monitor = function() return 42 end, monitor_every = 2,
  })
  check.eq("two epochs recorded", #history, 2)
  check.eq("steps per epoch", history[1].steps, 4)
  check.ok("loss finite", history[2].loss == history[2].loss and history[2].loss < math.huge)
  check.near("cosine lr of epoch 1", history[2].lr, optim.cosine_lr(0.05, 1, 2), 1e-12)
  check.eq("monitor ran on the last epoch only", tostring(history[1].knn) .. "," .. tostring(history[2].knn), "nil,42")
  check.ok("log lines name the epoch and loss", lines[1]:find("Epoch: [0][2/4]", 1, true) ~= nil, lines[1])
  check.ok("images/s measured", history[1].images_per_s > 0)
  check.eq("queue pointer advanced", model.queue_ptr, (8 * 32) % 64)
  -- the stop flag ends training between steps
  local calls = 0
  local h2 = moco.train.fit(model, loader, { epochs = 5, lr = 0.05, print_freq = 0, log = function() end,
                                             should_stop = function() calls = calls + 1; return calls >= 3 end })
  check.eq("stop flag ends the run", #h2, 1)
  check.eq("stopped after three steps", h2[1].steps, 3)
  check.ok("stopped run is marked", h2[1].stopped == true and h2[1].complete == false)
  loader:close()
end

check.run(tests)
