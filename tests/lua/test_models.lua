-- tests/lua/test_models.lua: moco.models (BasicBlock, Bottleneck, ResNet) and moco.optim.SGD
-- against PyTorch 1.13 / torchvision 0.14.
--
-- The references come from tests/make_fixtures_models.py (see its header for the files); the
-- case lists below must match that script.  The resnet weights are not committed: both sides
-- compute them from PCG32 streams (fill_from_formula), and init_check proves the numbers agree.
--
-- Tolerances (every comparison prints its max abs diff and the diff relative to the
-- reference's max |value|; float32 sums in another order than oneDNN's differ by ~1e-6
-- relative per layer, a wrong formula by ~1):
--   blocks                    max abs diff <= 1e-4 * max |reference|
--   resnet18 (20 layers)      2e-4 * max |reference|; summarised gradients: the first 512 entries
--                             as above, the sum within 2e-4 * sum |reference|, and sum |.| within
--                             2e-4 relative; the loss within 1e-5 relative
--   SGD update rule           5 steps with given gradients: 1e-6 * max |reference| (a few roundings)
--   5 training steps          losses within 5e-5 relative; weight changes (final - initial) and
--   (resnet20)                running statistics within 2e-2 * max |reference| (rounding
--                             differences grow over the steps: see tests.sgd_training_loop)
--   finite differences        float32, central, eps 1e-3: |fd - backward| within 1% of the
--                             tensor's max |gradient| (see tests.finite_differences)
--   resnet18 by Winograd      the 64+ channel 3x3 convolutions by F(4x4, 3x3), the default
--                             path (core/nn/winograd.c), which rounds to ~1e-5 of a layer's
--                             largest value instead of ~1e-7: the ImageNet-stem case meets the
--                             tolerances above (measured worst 4.9e-5); in the CIFAR-stem case
--                             one ReLU input lies 1.5e-6 from 0 and changes side, which moves
--                             the gradients under it by up to 3% of their max, so there the
--                             logits and loss keep the tolerances above and every gradient is
--                             held to 1e-2 in relative L2 norm (measured worst 6.9e-3); a wrong
--                             transform is off by O(1)
-- The exact cases run with moco._nn.set_winograd(false) (direct kernels and im2col only).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local nn = moco.nn
local models = moco.models

local DIR = "tests/fixtures/models/"
local WEIGHT_SEED = 20240601  -- as make_fixtures_models.py
local DATA_SEED = 7
local SUMMARY_FIRST = 512
local WHOLE_MAX = 4096

local function load(name) return moco.load_npy(DIR .. name .. ".npy") end

local function read_lines(name)
  local lines = {}
  for line in io.lines(DIR .. name) do lines[#lines + 1] = line end
  return lines
end

local maxabs, flat = check.maxabs, check.flat

local function sumabs(t) return t:clamp(0):sum() - t:clamp(nil, 0):sum() end


-- report: d <= tol * scale; compare: got and want of the same shape, max |got - want| <= tol * max |want|.
local report, compare = check.diff, check.compare

-- want is the script's SUMMARY of a large tensor: first 512 entries, sum, sum of |.|.  One
-- check: the first entries within tol * their max |value|, both sums within tol * sum |.|.
local function compare_summary(label, got, want, tol)
  local g = flat(got)
  local n = math.min(SUMMARY_FIRST, g:numel())
  local first = want:narrow(1, 1, n)
  local want_sum, want_abs = want:get(n + 1), want:get(n + 2)
  local d_first, scale = maxabs(g:narrow(1, 1, n) - first), maxabs(first)
  local d_sum, d_abs = math.abs(g:sum() - want_sum), math.abs(sumabs(g) - want_abs)
  local r_first, r_sum, r_abs = d_first / scale, d_sum / want_abs, d_abs / want_abs
  print(string.format("  %-52s max abs diff %.2e  rel %.1e; sum rel %.1e, sum |.| rel %.1e (tol %.0e)",
                      label, d_first, r_first, r_sum, r_abs, tol))
  check.ok(label, r_first <= tol and r_sum <= tol and r_abs <= tol,
           string.format("relative diffs %.3g (first %d), %.3g (sum), %.3g (sum |.|) > %.3g", r_first, n, r_sum, r_abs, tol))
end

local function compare_whole_or_summary(label, got, want, tol)
  if got:numel() <= WHOLE_MAX then compare(label, got, want, tol) else compare_summary(label, got, want, tol) end
end

local function same_list(label, got, want) check.ok(label, check.same_list(got, want)) end

-- The script's fill_from_formula: every state_dict entry in sorted-key order, stream = the
-- 0-based index; conv/linear weights (2u-1) * float32(1/sqrt(fan_in)), batch-norm weights
-- 1 + 0.1(2u-1), biases 0.1(2u-1), running statistics untouched.  The tensor ops below round
-- to float32 after each step, as numpy does there.
local function fill_from_formula(net)
  local sd = net:state_dict()
  for i, key in ipairs(net:state_dict_keys()) do
    local t = sd[key]
    local function u() return moco.rand(t:shape(), moco.Generator(WEIGHT_SEED, i - 1)):mul_(2):sub_(1) end
    if key:match("weight$") and t:dim() >= 2 then
      t:copy(u():mul_(1 / math.sqrt(t:numel() // t:size(1))))
    elseif key:match("weight$") then
      t:copy(u():mul_(0.1):add_(1))
    elseif key:match("bias$") then
      t:copy(u():mul_(0.1))
    end
  end
end

-- init_check: per sorted key, the sum, first and last value of the initial entry.
local function check_formula(case, net, want)
  local sd, worst, bad = net:state_dict(), 0, nil
  for i, key in ipairs(net:state_dict_keys()) do
    local t = flat(sd[key])
    local ws, wf, wl = want:get(i, 1), want:get(i, 2), want:get(i, 3)
    local d = math.abs(t:sum() - ws) / math.max(1, math.abs(ws))
    if t:get(1) ~= wf or t:get(t:numel()) ~= wl then d = math.huge end
    if d > worst then worst, bad = d, key end
  end
  print(string.format("  %-52s worst rel diff of a sum %.1e", case .. " initial weights", worst))
  check.ok(case .. " initial weights match the script's formula", worst <= 1e-6,
           tostring(bad) .. " differs (" .. worst .. ")")
end

local tests = {}

-- ------------------------------------------------------------------ PCG32

function tests.pcg_port()
  compare("PCG32 stream (123, 45)", moco.rand({ 8 }, moco.Generator(123, 45)), load("pcg_check"), 0)
end

-- ------------------------------------------------------------------ blocks

-- name, block, inplanes, planes, stride, downsample out channels (nil: none), input shape
local block_cases = {
  { "basic_s2", models.BasicBlock, 8, 16, 2, 16 },
  { "basic_s1", models.BasicBlock, 16, 16, 1, nil },
  { "bottleneck_s1", models.Bottleneck, 16, 4, 1, nil },
  { "bottleneck_s2", models.Bottleneck, 16, 8, 2, 32 },
}

local function make_block(c, bn_opts)
  local _, block, inplanes, planes, stride, ds_out = table.unpack(c)
  local bn = { make = function(ch) return nn.BatchNorm2d(ch, bn_opts) end }
  local downsample
  if ds_out then
    downsample = nn.Sequential{ nn.Conv2d(inplanes, ds_out, 1, { stride = stride, padding = 0, bias = false }),
                                bn.make(ds_out) }
  end
  return block(inplanes, planes, stride, downsample, bn)
end

local function compare_buffers(case, net, tol)
  for key, t in pairs(net:state_dict()) do
    if key:match("running_mean$") or key:match("running_var$") or key:match("num_batches_tracked$") then
      compare(case .. " " .. key, t, load(case .. ".after." .. key), tol)
    end
  end
end

function tests.blocks()
  for _, c in ipairs(block_cases) do
    local case = c[1]
    local block = make_block(c)
    same_list(case .. " state_dict keys", block:state_dict_keys(), read_lines(case .. ".keys.txt"))
    local sd = {}
    for _, key in ipairs(block:state_dict_keys()) do sd[key] = load(case .. ".sd." .. key) end
    block:load_state_dict(sd)
    block:train()
    local x, gy = load(case .. ".input"), load(case .. ".grad_output")
    local y = block:forward(x)
    compare(case .. " output", y, load(case .. ".output"), 1e-4)
    local gx = block:backward(x, gy)
    compare(case .. " grad_input", gx, load(case .. ".grad_input"), 1e-4)
    for _, p in ipairs(block:named_parameters()) do
      compare(case .. " grad " .. p.name, p.grad, load(case .. ".grad." .. p.name), 1e-4)
    end
    compare_buffers(case, block, 1e-5)
    block:eval()
    compare(case .. " output in eval mode", block:forward(x), load(case .. ".eval_output"), 1e-4)
  end
end

-- The batch size may change between calls (an epoch's last, smaller batch): buffers kept from
-- the larger batch must not be reused, and the results must be those of a fresh module.
function tests.batch_size_change()
  local function run(net, x, gy)
    net:zero_grad()
    local y = net:forward(x):clone()
    local gx = net:backward(x, gy):clone()
    local grads = {}
    for _, p in ipairs(net:named_parameters()) do grads[p.name] = p.grad:clone() end
    return y, gx, grads
  end
  local function same_results(label, a, b)
    local worst = math.max(maxabs(a[1] - b[1]), maxabs(a[2] - b[2]))
    for name, g in pairs(a[3]) do worst = math.max(worst, maxabs(g - b[3][name])) end
    check.ok(label, worst == 0, "differs from a fresh module by " .. worst)
  end
  local function check_net(label, make, x, gy, half)
    local net, fresh = make(), make()
    fresh:load_state_dict(net:state_dict())
    net:train(); fresh:train()
    run(net, x, gy)
    local xs, gys = x:narrow(1, 1, half):clone(), gy:narrow(1, 1, half):clone()
    local ok, got = pcall(function() return { run(net, xs, gys) } end)
    check.ok(label .. ": forward/backward with a smaller batch", ok, got)
    if ok then same_results(label .. ": smaller batch as a fresh module", got, { run(fresh, xs, gys) }) end
  end
  for _, c in ipairs(block_cases) do
    check_net(c[1], function() return make_block(c) end, load(c[1] .. ".input"), load(c[1] .. ".grad_output"), 2)
  end
  local gen = moco.Generator(5, 0)
  local function resnet20()
    local net = models.resnet20{ num_classes = 10 }
    net.conv1.skip_input_grad = false
    return net
  end
  check_net("resnet20", resnet20,
            moco.randn({ 6, 3, 8, 8 }, gen), moco.randn({ 6, 10 }, gen), 3)
end

-- ------------------------------------------------------------------ resnet18

-- Relative L2 distance, for the Winograd case whose ReLU flip is described at the top.
local function compare_l2(label, got, want, tol)
  local d = (got - want)
  local r = math.sqrt((d * d):sum()) / math.max(math.sqrt((want * want):sum()), 1e-30)
  print(string.format("  %-52s rel L2 diff %.1e (tol %.0e)", label, r, tol))
  check.ok(label, r <= tol, string.format("relative L2 difference %.3g > %.3g", r, tol))
end

-- mode: "exact" (Winograd off), "winograd" (the default path, same tolerances) or
-- "winograd-l2" (the default path, gradients by relative L2 norm).
local function resnet18_case(case, make, mode)
  local previous = moco._nn.set_winograd(mode ~= "exact") -- read by every convolution call
  local net = make()
  local label = case .. (mode == "exact" and "" or " winograd")
  fill_from_formula(net)
  check_formula(case, net, load(case .. ".init_check"))
  net.conv1.skip_input_grad = false  -- the reference includes the gradient for the image
  net:train()
  net:zero_grad()
  local x, labels = load(case .. ".input"), load(case .. ".labels")
  local criterion = nn.CrossEntropyLoss()
  local logits = net:forward(x)
  compare(label .. " logits", logits, load(case .. ".logits"), 2e-4)
  local loss = criterion:forward(logits, labels)
  local want_loss = load(case .. ".loss"):get(1)
  report(label .. " loss", math.abs(loss - want_loss), math.abs(want_loss), 1e-5)
  local gx = net:backward(x, criterion:backward())
  local function grad(name, got, want)
    if mode == "winograd-l2" then
      if want:numel() ~= got:numel() then -- summarised in the fixture: its first entries
        got, want = flat(got):narrow(1, 1, SUMMARY_FIRST), want:narrow(1, 1, SUMMARY_FIRST)
      end
      compare_l2(label .. " " .. name, got, want, 1e-2)
    elseif want:numel() == got:numel() then
      compare(label .. " " .. name, got, want, 2e-4)
    else
      compare_summary(label .. " " .. name, got, want, 2e-4)
    end
  end
  grad("grad_input", gx, load(case .. ".grad_input"))
  for _, p in ipairs(net:named_parameters()) do grad("grad " .. p.name, p.grad, load(case .. ".grad." .. p.name)) end
  if mode ~= "winograd-l2" then compare_buffers(case, net, 1e-4) end
  net:eval()
  compare(label .. " logits in eval mode", net:forward(x), load(case .. ".eval_logits"), 2e-4)
  moco._nn.set_winograd(previous)
end

local function r18_cifar() return models.resnet18{ num_classes = 10, cifar_stem = true } end
local function r18_imagenet() return models.resnet18{ num_classes = 10 } end

function tests.resnet18_cifar_stem()
  resnet18_case("r18", r18_cifar, "exact")
end

function tests.resnet18_imagenet_stem()
  resnet18_case("r18s", r18_imagenet, "exact")
end

function tests.resnet18_winograd()
  local ok, why = moco._nn.winograd_status()
  if moco._nn.gemm_backend():find("no AVX2/AVX-512 kernel in this build", 1, true) then
    -- a portable build (make ARCH=-march=x86-64): no Winograd, and the status says why
    check.ok("Winograd off without the own matrix kernel: " .. why, not ok and why:find("own matrix kernel", 1, true), why)
    return
  end
  check.ok("Winograd path available: " .. why, ok, why)
  resnet18_case("r18", r18_cifar, "winograd-l2")
  resnet18_case("r18s", r18_imagenet, "winograd")
end

-- ------------------------------------------------------------------ SGD

local SGD_STEPS = 5
-- name, moco.optim.SGD options (as make_fixtures_models.py's SGD_CASES)
local sgd_cases = {
  { "sgd", { lr = 0.1, momentum = 0.9, weight_decay = 5e-4 } },
  { "sgd_nesterov", { lr = 0.1, momentum = 0.9, weight_decay = 5e-4, nesterov = true } },
  { "sgd_dampening", { lr = 0.1, momentum = 0.9, weight_decay = 5e-4, dampening = 0.1 } },
}

local function sorted_index(net)
  local index = {}
  for i, key in ipairs(net:state_dict_keys()) do index[key] = i - 1 end
  return index
end

-- The update rule alone: gradients set from PCG32 (stream 100000 * step + the key's index),
-- five steps, final parameters.  Same float32 operations in the same order as PyTorch's
-- (fused multiply-adds where it has them), so the tolerance is a few float32 roundings.
function tests.sgd_update_rule()
  for _, c in ipairs(sgd_cases) do
    local case, opts = "rule_" .. c[1], c[2]
    local net = models.resnet20{ num_classes = 10 }
    fill_from_formula(net)
    local index = sorted_index(net)
    local opt = moco.optim.SGD(net, opts)
    for step = 1, SGD_STEPS do
      for _, p in ipairs(net:named_parameters()) do
        p.grad:copy(moco.rand(p.grad:shape(), moco.Generator(WEIGHT_SEED, 100000 * step + index[p.name])):mul_(2):sub_(1))
      end
      opt:step()
    end
    for _, p in ipairs(net:named_parameters()) do
      compare_whole_or_summary(case .. " final " .. p.name, p.param, load(case .. ".final." .. p.name), 1e-6)
    end
  end
end

-- The training loop (make_fixtures_models.py's sgd_loop_cases, which explains the setting):
-- resnet20 with the convolutions at twice the formula's scale, batches of 16 8x8 images made
-- of a class template plus 0.3 * noise.  Five steps at lr 0.1 amplify rounding differences
-- (the script measures float32 against float64 PyTorch), hence the looser tolerances here:
-- losses within 5e-5 relative, weight changes and running statistics within 2e-2 of the
-- reference's max |value|.
local LOOP_BATCH, LOOP_SIZE, LOOP_NOISE, LOOP_CONV_GAIN = 16, 8, 0.3, 2

local function loop_input(step, labels, templates)
  local x = moco.rand({ LOOP_BATCH, 3, LOOP_SIZE, LOOP_SIZE }, moco.Generator(DATA_SEED, 1000 + step - 1))
  x:mul_(2):sub_(1):mul_(LOOP_NOISE)
  for i = 1, LOOP_BATCH do x:select(1, i):add_(templates[labels:get(i) + 1]) end
  return x
end

function tests.sgd_training_loop()
  local labels = load("sgd.labels")
  local templates = {}
  for c = 0, 9 do
    templates[c + 1] = moco.rand({ 3, LOOP_SIZE, LOOP_SIZE }, moco.Generator(DATA_SEED, 2000 + c)):mul_(2):sub_(1)
  end
  for _, c in ipairs(sgd_cases) do
    local case, opts = c[1], c[2]
    local net = models.resnet20{ num_classes = 10 }
    fill_from_formula(net)
    for _, p in ipairs(net:named_parameters()) do
      if p.param:dim() == 4 then p.param:mul_(LOOP_CONV_GAIN) end
    end
    local initial = {}
    for _, p in ipairs(net:named_parameters()) do initial[p.name] = p.param:clone() end
    local opt = moco.optim.SGD(net, opts)
    local criterion = nn.CrossEntropyLoss()
    net:train()
    local want = load(case .. ".losses")
    for step = 1, SGD_STEPS do
      local step_labels = labels:select(1, step)
      local x = loop_input(step, step_labels, templates)
      net:zero_grad()
      local loss = criterion:forward(net:forward(x), step_labels)
      net:backward(x, criterion:backward())
      opt:step()
      report(string.format("%s loss at step %d", case, step), math.abs(loss - want:get(step)),
             math.abs(want:get(step)), 5e-5)
    end
    for _, p in ipairs(net:named_parameters()) do
      compare_whole_or_summary(case .. " change of " .. p.name, p.param - initial[p.name],
                               load(case .. ".delta." .. p.name), 2e-2)
    end
    compare_buffers(case, net, 2e-2)
  end
end

-- ------------------------------------------------------------------ names and counts

function tests.state_dict_keys_and_counts()
  local counts = {}
  for _, line in ipairs(read_lines("num_parameters.txt")) do
    local name, n = line:match("^(%S+) (%d+)$")
    counts[name] = tonumber(n)
  end
  local nets = {
    resnet18 = models.resnet18(), resnet50 = models.resnet50(), resnet20 = models.resnet20{ num_classes = 10 },
    resnet18_cifar10 = models.resnet18{ num_classes = 10, cifar_stem = true },
    resnet50_cifar10 = models.resnet50{ num_classes = 10, cifar_stem = true },
  }
  for _, name in ipairs{ "resnet18", "resnet50", "resnet20" } do
    same_list(name .. " state_dict keys = torchvision's", nets[name]:state_dict_keys(), read_lines(name .. "_keys.txt"))
  end
  same_list("resnet18 cifar_stem keeps the keys", nets.resnet18_cifar10:state_dict_keys(), read_lines("resnet18_keys.txt"))
  for _, name in ipairs{ "resnet18", "resnet50", "resnet20", "resnet18_cifar10", "resnet50_cifar10" } do
    check.eq(name .. " num_parameters", nets[name]:num_parameters(), counts[name])
  end
end

-- The smaller members of He et al.'s 6n+2 family (resnet8: n = 1, resnet14: n = 2) and the
-- stride-2 stem.  Parameter counts worked out by hand for 3 input channels and 10 classes
-- (stem conv 432 + bn 32; per stage: the first block with its 1x1 downsample + BN, then
-- n - 1 plain blocks of 4672 / 18560 / 73984; fc 650); the same sum for n = 3 gives the
-- fixture's resnet20 count (272474), which checks the arithmetic.
function tests.small_resnets_and_stem_stride()
  check.eq("resnet8 num_parameters", models.resnet8{ num_classes = 10 }:num_parameters(), 78042)
  check.eq("resnet14 num_parameters", models.resnet14{ num_classes = 10 }:num_parameters(), 175258)
  check.eq("the same count for resnet20", 78042 + 2 * (4672 + 18560 + 73984), 272474)
  local r8 = models.resnet8{ num_classes = 10 }
  check.eq("resnet8 has one block a stage", #r8.layer1:children() + #r8.layer2:children() + #r8.layer3:children(), 3)
  check.eq("resnet14 has two blocks a stage", #models.resnet14{ num_classes = 10 }.layer3:children(), 2)
  check.ok("resnet8 via models.get", models.get("resnet8", { num_classes = 10 }).arch == "resnet8")

  -- stem_stride = 2: the same parameters, every map halved (28 -> 14 -> 7 -> 4).
  local g = moco.Generator(5, 0)
  local s1 = models.resnet20{ num_classes = 4, in_channels = 1, generator = moco.Generator(5, 0) }
  local s2 = models.resnet20{ num_classes = 4, in_channels = 1, stem_stride = 2, generator = moco.Generator(5, 0) }
  check.eq("stem_stride keeps the parameter count", s2:num_parameters(), s1:num_parameters())
  same_list("stem_stride keeps the state dict keys", s2:state_dict_keys(), s1:state_dict_keys())
  check.eq("stem conv stride", s2.conv1.stride, 2)
  local x = moco.randn({ 6, 1, 28, 28 }, g)
  s2:eval()
  local y = s2:forward(x):clone()
  check.eq("output shape", table.concat(y:shape(), "x"), "6x4")
  local stem = s2.conv1:forward(x)
  check.eq("stem map 14x14", table.concat(stem:shape(), "x"), "6x16x14x14")
  local m = s2.layer3:forward(s2.layer2:forward(s2.layer1:forward(s2.bn1:forward(stem:clone()):clamp(0))))
  check.eq("last stage map 4x4", table.concat(m:shape(), "x"), "6x64x4x4")
  -- the features-only path (shared buffers) gives the same output as the kept-activations one
  s2:set_keep_activations(false)
  compare("stem_stride 2, inference path = training path (eval)", s2:forward(x), y, 1e-5)
  s2:set_keep_activations(true)
  -- train mode: forward then backward runs through the strided stem
  s2:train()
  s2:zero_grad()
  s2:forward(x)
  s2:backward(x, moco.ones{ 6, 4 })
  local stem_grad
  for _, p in ipairs(s2:named_parameters()) do if p.name == "conv1.weight" then stem_grad = p.grad end end
  check.ok("stem gradient is non-zero", stem_grad ~= nil and (stem_grad:clamp(0):sum() - stem_grad:clamp(nil, 0):sum()) > 0)

  check.raises("stem_stride 3 is refused", "stem_stride must be 1 or 2, got 3", models.resnet20, { stem_stride = 3 })
  check.raises("stem_stride needs the 3x3 stem", "stem_stride applies to the 3x3 stem only", models.resnet18,
               { stem_stride = 2 })
  check.ok("stem_stride with cifar_stem on resnet18", models.resnet18{ cifar_stem = true, stem_stride = 2, num_classes = 2 }.conv1.stride == 2)
  check.raises("unknown arch lists the small ones", "resnet8, resnet14", models.get, "resnet9")

  -- moco.MoCo passes it to both encoders, and a checkpoint's encoder comes back with it.
  local checkpoint = require "moco.checkpoint"
  local model = moco.MoCo{ arch = "resnet8", width = 0.25, in_channels = 1, dim = 8, K = 16, m = 0.99, T = 0.2,
                           bn_splits = 1, stem_stride = 2 }
  check.eq("MoCo query encoder stem stride", model.encoder_q.conv1.stride, 2)
  check.eq("MoCo key encoder stem stride", model.encoder_k.conv1.stride, 2)
  local path = os.tmpname()
  checkpoint.save(path, model, { epoch = 1 })
  local enc = checkpoint.load_encoder(path)
  os.remove(path)
  check.eq("checkpoint.load_encoder keeps the stem stride", enc.conv1.stride, 2)
  enc:eval()
  local xe = moco.randn({ 2, 1, 28, 28 }, g)
  local qe = model:encoder()
  qe:eval()
  compare("the loaded encoder computes what the saved one does", enc:forward(xe), qe:forward(xe):clone(), 1e-5)
end

function tests.load_state_dict_errors()
  local net = models.resnet20{ num_classes = 10 }
  local function copy_sd()
    local sd = {}
    for k, t in pairs(net:state_dict()) do sd[k] = t:clone() end
    return sd
  end
  local before = net.conv1.weight:clone()

  local sd = copy_sd()
  sd["conv1.weight"] = moco.zeros{ 16, 3, 5, 5 }
  sd["fc.weight"]:fill(7)
  check.raises("wrong shape names the key", "conv1.weight", net.load_state_dict, net, sd)
  check.raises("wrong shape gives the model's shape", "[16, 3, 3, 3]", net.load_state_dict, net, sd)
  check.raises("wrong shape gives the state dict's shape", "[16, 3, 5, 5]", net.load_state_dict, net, sd)
  check.raises("wrong shape is an error when not strict", "[16, 3, 5, 5]", net.load_state_dict, net, sd, false)
  check.ok("a failed load changes nothing", maxabs(net.conv1.weight - before) == 0 and net.fc.weight:max() < 7)

  sd = copy_sd()
  sd["fc.bias"] = nil
  sd["layer1.0.bn1.running_var"] = nil
  check.raises("missing keys are listed", "missing keys: {fc.bias, layer1.0.bn1.running_var}",
               net.load_state_dict, net, sd)
  sd = copy_sd()
  sd["fc.extra"] = moco.zeros{ 1 }
  check.raises("unexpected keys are listed", "unexpected keys: {fc.extra}", net.load_state_dict, net, sd)
  check.raises("strict = true is the default", "unexpected keys", net.load_state_dict, net, sd, true)

  sd = copy_sd()
  sd["fc.bias"] = nil
  sd["fc.extra"] = moco.zeros{ 1 }
  sd["fc.weight"]:fill(0.5)
  local missing, unexpected = net:load_state_dict(sd, false)
  check.ok("strict = false returns the missing keys", #missing == 1 and missing[1] == "fc.bias")
  check.ok("strict = false returns the unexpected keys", #unexpected == 1 and unexpected[1] == "fc.extra")
  check.ok("strict = false loads the rest", net.fc.weight:max() == 0.5 and maxabs(net.fc.weight - 0.5) == 0)
end

-- ------------------------------------------------------------------ finite differences

-- BasicBlock 8 -> 16, stride 2, with downsample, split batch norm (2 splits of 4 samples),
-- train mode.  f = sum(block(x) * P) for a fixed random P; backward(x, P) gives df/dx and
-- df/dparams.  Central differences in float32 on 12 random coordinates of the input and of each
-- of the 10 parameters.  eps = 1e-3: with 1e-2 batch norm's curvature (4 samples per split)
-- alone gives errors of several %; the float32 rounding of f (|f| ~ 30, summed in double)
-- contributes ~1e-3 absolute (1e-2 at eps = 1e-4).  Allowed error: 1% of the tensor's max
-- |gradient| (a coordinate's own gradient may be near zero).  A perturbation that moves some
-- pre-activation across a ReLU kink makes f non-smooth there; that shows as one-sided slopes
-- that disagree, and the coordinate is retried with eps = 1e-4, then skipped: at most a quarter
-- of them per tensor.
function tests.finite_differences()
  local gen = moco.Generator(99, 0)
  local block = make_block(block_cases[1], { splits = 2 })
  -- away from the default batch-norm parameters, so that each one matters
  for _, p in ipairs(block:named_parameters()) do
    if p.param:dim() == 1 then
      p.param:copy(moco.rand(p.param:shape(), gen):mul_(0.5):add_(p.name:match("weight$") and 0.75 or -0.25))
    end
  end
  block:train()
  local x = moco.randn({ 8, 8, 6, 6 }, gen)
  local P = moco.randn(block:forward(x):shape(), gen)
  local function f() return (block:forward(x) * P):sum() end
  block:zero_grad()
  local f0 = f()
  local grads = { input = block:backward(x, P):clone() }
  local kink_scale
  for _, p in ipairs(block:named_parameters()) do grads[p.name] = p.grad:clone() end

  local TOL, COORDS = 1e-2, 12
  -- The central difference at coordinate i of t, or nil when the one-sided slopes disagree
  -- (a kink between v - eps and v + eps): then retried with a 10x smaller step.
  local function central(tf, i)
    local v = tf:get(i)
    for _, eps in ipairs{ 1e-3, 1e-4 } do
      tf:set(i, v + eps); local fp = f()
      tf:set(i, v - eps); local fm = f()
      tf:set(i, v)
      local right, left = (fp - f0) / eps, (f0 - fm) / eps
      if math.abs(right - left) <= TOL * kink_scale then return (fp - fm) / (2 * eps) end
    end
    return nil
  end
  local function probe(label, t, grad)
    local scale, worst, skipped = maxabs(grad), 0, 0
    local tf, gf = flat(t), flat(grad)
    kink_scale = scale
    for _ = 1, COORDS do
      local i = gen:random(t:numel())
      local fd = central(tf, i)
      if fd then
        worst = math.max(worst, math.abs(fd - gf:get(i)))
      else
        skipped = skipped + 1
      end
    end
    print(string.format("  finite differences %s: %d of %d coordinates skipped at a ReLU kink", label, skipped, COORDS))
    if skipped > COORDS // 4 then
      check.ok("finite differences " .. label, false, skipped .. " of " .. COORDS .. " coordinates at a kink")
    else
      report("finite differences " .. label, worst, scale, TOL)
    end
  end
  probe("input", x, grads.input)
  for _, p in ipairs(block:named_parameters()) do probe(p.name, p.param, grads[p.name]) end
end

check.run(tests)
