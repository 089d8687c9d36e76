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

function tests.official_cli_forms()
  local o = pretrain.parse({ "--learning-rate", "0.015", "--weight-decay", "1e-5", "-b64", "-j", "3", "-p", "5",
                             "--schedule", "30,40", "/data/imagenet" }, {})
  check.eq("--learning-rate is --lr", o.lr, 0.015)
  check.eq("--weight-decay is --wd", o.wd, 1e-5)
  check.eq("-b64 (a short option with its value attached)", o["batch-size"], 64)
  check.eq("-j is --workers", o.workers, 3)
  check.eq("-p is --print-freq", o["print-freq"], 5)
  check.eq("--schedule 30,40", table.concat(o.schedule, " "), "30 40")
  check.eq("the dataset as the bare DIR", o.data, "/data/imagenet")
  check.ok("aliases count as given under the option's own name", o._given.lr and o._given.wd)
  check.eq("--schedule 120 160", table.concat(pretrain.parse({ "--schedule", "120", "160" }, {}).schedule, " "), "120 160")
  check.eq("--schedule=120,160", table.concat(pretrain.parse({ "--schedule=120,160" }, {}).schedule, " "), "120 160")
  check.eq("--schedule with nothing: an empty list", #pretrain.parse({ "--schedule", "--cos" }, {}).schedule, 0)
  -- every boolean has its --no- form
  local spec = pretrain.parse({}, {})._spec
  local argv = {}
  for _, opt in ipairs(spec) do
    if type(opt[2]) == "boolean" then argv[#argv + 1] = "--no-" .. opt[1] end
  end
  local n = pretrain.parse(argv, { shuffle = true, cos = true })
  local all_false = #argv >= 7
  for _, opt in ipairs(spec) do if type(opt[2]) == "boolean" and n[opt[1]] ~= false then all_false = false end end
  check.ok("--no-X works for every boolean (" .. #argv .. " of them)", all_false)
  check.eq("--no-shuffle (the official flag)", pretrain.parse({ "--no-shuffle" }, {}).shuffle, false)
  check.raises("--arch checks its choices", "option --arch: invalid choice 'resnet51' (choose from resnet8, resnet14, "
               .. "resnet18, resnet20, resnet34, resnet50; did you mean resnet50?)", pretrain.parse, { "--arch", "resnet51" }, {})
  check.raises("--no-X takes no value", "option --no-mlp takes no value", pretrain.parse, { "--no-mlp=1" }, {})
end

function tests.crop_min_and_cos_per_step()
  local function crop_of(argv, kind)
    local o = pretrain.parse(argv, { ["image-size"] = 28 })
    return tostring(pretrain.augmentation(o, kind)):match("RandomResizedCrop%(size=%(28, 28%), scale=%(([^)]*)%)")
  end
  check.eq("the official crop by default", crop_of({}, "fashion-mnist"), "0.2, 1.0")
  check.eq("the CIFAR-10 demo's default crop", crop_of({}, "cifar"), "0.08, 1.0")
  check.eq("--crop-min 0.4", crop_of({ "--crop-min", "0.4" }, "fashion-mnist"), "0.4, 1.0")
  check.eq("--crop-min on ImageNet v2", crop_of({ "--crop-min", "0.3", "--aug-plus" }, "imagenet"), "0.3, 1.0")
  check.raises("--crop-min above 1", "--crop-min must be in (0, 1]", pretrain.validate,
               pretrain.parse({ "--crop-min", "1.5" }, {}))
  check.raises("--cos-per-step without --cos", "--cos-per-step refines --cos", pretrain.validate,
               pretrain.parse({ "--cos-per-step" }, {}))
end

function tests.argparse_help()
  local text = recipe.usage(pretrain.parse({}, { arch = "resnet18" })._spec, {
    prog = "moco-lua moco_v2", description = "MoCo v2.",
    positional = { name = "data", metavar = "DIR", help = "the dataset" },
  })
  local lines = {}
  for line in text:gmatch("[^\n]*") do lines[#lines + 1] = line end
  check.ok("usage line first", lines[1]:find("^usage: moco%-lua moco_v2 %[%-h%] %[%-%-data DATA%] %[%-a ARCH%]") ~= nil, lines[1])
  check.ok("usage ends with the positional", text:find("%[DIR%]\n\nMoCo v2%.") ~= nil, text:sub(1, 300))
  check.ok("a positional section", text:find("\npositional arguments:\n  DIR +the dataset\n", 1) ~= nil, text)
  check.ok("an options section with -h", text:find("\noptions:\n  %-h, %-%-help +show this help message and exit\n") ~= nil, text)
  check.ok("types and defaults", text:find("%-%-epochs N +number of total epochs to run %(int, default: 200%)") ~= nil
           and text:find("%(float, default: 0%.03%)") ~= nil and text:find("default: resnet18%)") ~= nil, text)
  check.ok("aliases listed", text:find("%-%-lr LR, %-%-learning%-rate LR") ~= nil, text)
  check.ok("booleans with their --no- form", text:find("%-%-mlp, %-%-no%-mlp +MLP projection head %(MoCo v2%) %(default: off%)") ~= nil, text)
  local longest = 0
  for _, line in ipairs(lines) do longest = math.max(longest, #line) end
  check.ok("lines fit 80 columns", longest <= 80, "a line of " .. longest)
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
  check.eq("the dataset as a bare argument (main_moco.py's DIR)", pretrain.parse({ "/data/in" }, {}).data, "/data/in")
  check.raises("a second bare argument is refused", "unexpected argument 'oops'", pretrain.parse, { "/data/in", "oops" }, {})
  check.raises("DIR and --data together are refused", "given twice", pretrain.parse, { "/a", "--data", "/b" }, {})
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
