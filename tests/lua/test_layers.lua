-- tests/lua/test_layers.lua: moco._nn (lua/l_nn.c over core/nn) against PyTorch.
--
-- The reference tensors come from tests/make_fixtures_layers.py (torch 1.13, float32, seed 0):
-- inputs, parameters, forward output, a random grad_output, and autograd's gradients.  The
-- case lists below must match that script.  Every tensor's max absolute difference is printed
-- and checked against  TOL * max(1, max |reference|)  with TOL = 1e-4 (float32 sums in a
-- different order differ by ~1e-6 relative; a wrong formula differs by ~1).  Max-pool indices
-- must match exactly (ties pick the same element as PyTorch).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local F = moco._nn

local DIR = "tests/fixtures/layers/"
local TOL = 1e-4

local function load(case, name) return moco.load_npy(DIR .. case .. "." .. name .. ".npy") end

local shape_of = check.shape_of

-- max |got - want| <= tol * max(1, max |want|), tol default TOL (see the header)
local function compare(case, name, got, want, tol)
  check.compare(case .. " " .. name, got, want, tol or TOL, { floor = 1 })
end

local tests = {}

-- name, kernel, stride, padding, bias (as in make_fixtures_layers.py)
local conv_cases = {
  {"conv_k3s1p1_bias", 3, 1, 1, true},
  {"conv_k3s2p1", 3, 2, 1, false},
  {"conv_k3s1p0_bias", 3, 1, 0, true},
  {"conv_k1s1p0_bias", 1, 1, 0, true},
  {"conv_k1s2p0", 1, 2, 0, false},
  {"conv_k7s2p3", 7, 2, 3, false},
  {"conv_k3s1p1_big", 3, 1, 1, true},
  {"conv_k1s1p0_big", 1, 1, 0, false},
}

function tests.conv2d()
  for _, c in ipairs(conv_cases) do
    local name, stride, padding, has_bias = c[1], c[3], c[4], c[5]
    local x, w = load(name, "input"), load(name, "weight")
    local b = has_bias and load(name, "bias") or nil
    local gy = load(name, "grad_output")
    local y = F.conv2d_forward(x, w, b, stride, padding)
    compare(name, "output", y, load(name, "output"))
    local gx = F.conv2d_backward_input(gy, w, x, stride, padding)
    compare(name, "grad_input", gx, load(name, "grad_input"))
    local gw = moco.zeros(w:shape())
    local gb = has_bias and moco.zeros(b:shape()) or nil
    F.conv2d_backward_params(gy, x, gw, gb, stride, padding)
    compare(name, "grad_weight", gw, load(name, "grad_weight"))
    if has_bias then compare(name, "grad_bias", gb, load(name, "grad_bias")) end
    -- into preallocated outputs, and with the shape given as a table
    local out = moco.full(y:shape(), 7)
    check.ok(name .. " forward into out", F.conv2d_forward(x, w, b, stride, padding, out) == out)
    compare(name, "output (into out)", out, y, 0)
    local gx2 = F.conv2d_backward_input(gy, w, x:shape(), stride, padding, moco.full(x:shape(), 3))
    compare(name, "grad_input (into)", gx2, gx, 0)
  end
end

-- name, splits, training
local bn_cases = {
  {"bn2d_train", 1, true},
  {"bn2d_split2_train", 2, true},
  {"bn2d_split4_train", 4, true},
  {"bn2d_split2_eval", 2, false},
  {"bn2d_eval", 1, false},
  {"bn2d_split2_train_wide", 2, true},
  {"bn1d_train", 1, true},
  {"bn1d_train_wide", 1, true},
  {"bn1d_eval", 1, false},
}

function tests.batchnorm()
  for _, c in ipairs(bn_cases) do
    local name, splits, training = c[1], c[2], c[3]
    local x, w, b = load(name, "input"), load(name, "weight"), load(name, "bias")
    local rm, rv = load(name, "running_mean_before"), load(name, "running_var_before")
    local gy = load(name, "grad_output")
    local y, mean, invstd = F.batchnorm_forward(x, w, b, rm, rv, training, 0.1, 1e-5, splits)
    compare(name, "output", y, load(name, "output"))
    compare(name, "running_mean after", rm, load(name, "running_mean_after"))
    compare(name, "running_var after", rv, load(name, "running_var_after"))
    check.eq(name .. " cache shape", shape_of(mean),
             string.format("[%d, %d]", training and splits or 1, x:size(2)))
    local gx = F.batchnorm_backward_input(gy, x, mean, invstd, w, training)
    compare(name, "grad_input", gx, load(name, "grad_input"))
    local gw, gb = moco.zeros(w:shape()), moco.zeros(b:shape())
    F.batchnorm_backward_params(gy, x, mean, invstd, gw, gb)
    compare(name, "grad_weight", gw, load(name, "grad_weight"))
    compare(name, "grad_bias", gb, load(name, "grad_bias"))
    -- both at once, accumulating onto the gradients above: twice the reference
    local gx2 = F.batchnorm_backward(gy, x, mean, invstd, w, training, gw, gb)
    compare(name, "grad_input (combined)", gx2, gx, 0)
    compare(name, "2 x grad_weight (combined)", gw, load(name, "grad_weight"):scale_(2))
    compare(name, "2 x grad_bias (combined)", gb, load(name, "grad_bias"):scale_(2))
  end
end

function tests.maxpool2d()
  for _, name in ipairs{"maxpool_k3s2p1", "maxpool_ties"} do
    local x, gy = load(name, "input"), load(name, "grad_output")
    local y, idx = F.maxpool2d_forward(x, 3, 2, 1)
    compare(name, "output", y, load(name, "output"))
    compare(name, "indices", idx, load(name, "indices"), 0)
    local gx = F.maxpool2d_backward_input(gy, idx, x, 3, 2, 1)
    compare(name, "grad_input", gx, load(name, "grad_input"))
  end
end

function tests.avgpool()
  local x, gy = load("avgpool", "input"), load("avgpool", "grad_output")
  compare("avgpool", "output", F.avgpool_global_forward(x), load("avgpool", "output"))
  compare("avgpool", "grad_input", F.avgpool_global_backward_input(gy, x), load("avgpool", "grad_input"))
end

function tests.linear()
  for _, name in ipairs{"linear_bias", "linear"} do
    local x, w, gy = load(name, "input"), load(name, "weight"), load(name, "grad_output")
    local b = name == "linear_bias" and load(name, "bias") or nil
    compare(name, "output", F.linear_forward(x, w, b), load(name, "output"))
    compare(name, "grad_input", F.linear_backward_input(gy, w), load(name, "grad_input"))
    local gw = moco.zeros(w:shape())
    local gb = b and moco.zeros(b:shape()) or nil
    F.linear_backward_params(gy, x, gw, gb)
    compare(name, "grad_weight", gw, load(name, "grad_weight"))
    if b then compare(name, "grad_bias", gb, load(name, "grad_bias")) end
  end
end

function tests.normalize()
  local x, gy = load("normalize", "input"), load("normalize", "grad_output")
  local y, norms = F.normalize_forward(x)
  compare("normalize", "output", y, load("normalize", "output"))
  compare("normalize", "grad_input", F.normalize_backward_input(gy, y, norms), load("normalize", "grad_input"))
end

function tests.cross_entropy()
  for _, name in ipairs{"cross_entropy", "cross_entropy_moco"} do
    local logits, labels = load(name, "logits"), load(name, "labels")
    local loss, g = F.cross_entropy(logits, labels)
    local want = load(name, "loss"):item()
    local d = math.abs(loss - want)
    print(string.format("  %-34s %-20s max abs diff %.2e (tol %.1e)", name, "loss", d, TOL * math.max(1, want)))
    check.ok(name .. " loss", d <= TOL * math.max(1, want), string.format("loss %.7g, expected %.7g", loss, want))
    compare(name, "grad_logits", g, load(name, "grad_logits"))
    local l2, none = F.cross_entropy(logits, labels, false)
    check.ok(name .. " without gradient", l2 == loss and none == nil)
  end
end

-- ---------------------------------------------------------------- binding behaviour

function tests.shape_errors()
  local x = moco.randn{2, 1, 8, 8}
  local w = moco.randn{4, 3, 3, 3}
  check.raises("conv2d channel mismatch", "conv2d_forward: weight [4, 3, 3, 3] has 3 input channels but input [2, 1, 8, 8] has 1",
               F.conv2d_forward, x, w, nil, 1, 1)
  check.raises("conv2d bias size", "bias [3] should be [4]", F.conv2d_forward, moco.randn{2, 3, 8, 8}, w, moco.zeros{3}, 1, 1)
  check.raises("conv2d input rank", "input should be 4-d", F.conv2d_forward, moco.randn{3, 8, 8}, w)
  check.raises("conv2d out shape", "out [2, 4, 8, 7] should be [2, 4, 8, 8]",
               F.conv2d_forward, moco.randn{2, 3, 8, 8}, w, nil, 1, 1, moco.zeros{2, 4, 8, 7})
  check.raises("conv2d grad_out shape", "grad_out [2, 4, 4, 4] should be [2, 4, 8, 8]",
               F.conv2d_backward_input, moco.zeros{2, 4, 4, 4}, w, {2, 3, 8, 8}, 1, 1)
  check.raises("conv2d negative padding", "padding must be a non-negative integer",
               F.conv2d_forward, moco.randn{2, 3, 8, 8}, w, nil, 1, -1)
  local big = moco.randn{2, 3, 8, 8}
  check.raises("conv2d out overlapping input", "out shares memory with input",
               F.conv2d_forward, big, moco.randn{3, 3, 1, 1}, nil, 1, 0, big)
  check.raises("batchnorm splits must divide N", "not divisible by splits 4",
               F.batchnorm_forward, moco.randn{6, 3, 2, 2}, nil, nil, nil, nil, true, 0.1, 1e-5, 4)
  check.raises("batchnorm weight size", "weight [4] should be [3]",
               F.batchnorm_forward, moco.randn{6, 3, 2, 2}, moco.ones{4}, nil, nil, nil, true)
  check.raises("batchnorm eval needs running stats", "eval mode needs running_mean",
               F.batchnorm_forward, moco.randn{6, 3}, nil, nil, nil, nil, false)
  check.raises("batchnorm one value per channel", "more than 1 value per channel",
               F.batchnorm_forward, moco.randn{1, 3}, nil, nil, nil, nil, true)
  check.raises("linear feature mismatch", "weight [5, 7] has 7 input features but input [4, 6] has 6",
               F.linear_forward, moco.randn{4, 6}, moco.randn{5, 7})
  check.raises("cross_entropy label range", "labels[2] is 10", F.cross_entropy, moco.randn{2, 10}, moco.tensor{1, 10})
  check.raises("cross_entropy fractional label", "labels[1] is 0.5", F.cross_entropy, moco.randn{2, 10}, moco.tensor{0.5, 1})
  check.raises("cross_entropy labels shape", "labels [3] should be [2]", F.cross_entropy, moco.randn{2, 10}, moco.tensor{1, 2, 3})
  local y, idx = F.maxpool2d_forward(moco.randn{1, 1, 4, 4}, 2)
  idx:set(1, 1, 1, 1, 99)
  check.raises("maxpool2d bad index", "not a position in a 4x4 plane", F.maxpool2d_backward_input, y, idx, {1, 1, 4, 4}, 2, 2, 0)
  check.raises("maxpool2d padding", "padding must be between 0 and kernel/2", F.maxpool2d_forward, moco.randn{1, 1, 4, 4}, 3, 2, 2)
end

function tests.in_place_and_workspace()
  local x = moco.tensor{{-1, 2}, {3, -4}}
  local y = F.relu_forward(x, x)
  check.ok("relu in place returns its input", y == x and x:get(1, 1) == 0 and x:get(1, 2) == 2)
  local g = moco.tensor{{5, 6}, {7, 8}}
  F.relu_backward_input(g, x, g)
  check.ok("relu backward in place", g:get(1, 1) == 0 and g:get(1, 2) == 6 and g:get(2, 2) == 0)
  local n = moco.tensor{{3, 4}}
  local out, norms = F.normalize_forward(n, 1e-12, n)
  check.ok("normalize in place", out == n and math.abs(n:get(1, 1) - 0.6) < 1e-7 and norms[1] == 5)
  F.conv2d_forward(moco.randn{2, 3, 8, 8}, moco.randn{4, 3, 3, 3}, nil, 1, 1)
  check.ok("conv workspace allocated", F.workspace_bytes() > 0)
  F.free_workspace()
  check.eq("free_workspace releases it", F.workspace_bytes(), 0)
  -- the split grouping: with splits = 2, samples 1 and 3 (Lua positions) share statistics
  local xb = moco.tensor{{0}, {10}, {2}, {30}}
  local yb, mean = F.batchnorm_forward(xb, nil, nil, nil, nil, true, 0.1, 1e-5, 2)
  check.ok("split batchnorm groups samples n mod S", mean:get(1, 1) == 1 and mean:get(2, 1) == 20,
           "means " .. mean:get(1, 1) .. ", " .. mean:get(2, 1))
  check.ok("split batchnorm normalises within a split", math.abs(yb:get(1, 1) + 1) < 1e-4 and math.abs(yb:get(4, 1) - 1) < 1e-4)
end

-- The ResNet join fused into batch norm (residual argument): bit for bit BN followed by
-- add_relu_forward, in train mode (split statistics) and eval mode, on large planes (the
-- vector path) and small ones (1x1, 3x3), in place on the input or on the residual.
function tests.batchnorm_joined()
  for _, case in ipairs{ { 8, 6, 9, 9, 2 }, { 8, 5, 3, 3, 4 }, { 6, 7, 1, 1, 1 }, { 4, 3, 20, 17, 2 } } do
    local n, c, h, w, splits = table.unpack(case)
    local x, r = moco.randn{ n, c, h, w }, moco.randn{ n, c, h, w }
    local wt, b = moco.randn{ c }, moco.randn{ c }
    for _, training in ipairs{ true, false } do
      local rm1, rv1 = moco.randn{ c }, moco.rand{ c } + 0.5
      local rm2, rv2 = rm1:clone(), rv1:clone()
      local y = F.batchnorm_forward(x, wt, b, rm1, rv1, training, 0.1, 1e-5, splits)
      local want = F.add_relu_forward(y, r)
      local got, mean = F.batchnorm_forward(x, wt, b, rm2, rv2, training, 0.1, 1e-5, splits, nil, false, r)
      local label = string.format("batchnorm joined %s %s", check.shape_of(x), training and "train" or "eval")
      check.eq(label .. ": max difference to BN then add_relu", check.maxabs(got - want), 0)
      check.eq(label .. ": same running mean", check.maxabs(rm1 - rm2), 0)
      check.eq(label .. ": statistics per split", mean:size(1), training and splits or 1)
      local into_x = x:clone()
      F.batchnorm_forward(into_x, wt, b, rm2:clone(), rv2:clone(), training, 0.1, 1e-5, splits, into_x, false, r)
      local into_r = r:clone()
      F.batchnorm_forward(x, wt, b, rm2:clone(), rv2:clone(), training, 0.1, 1e-5, splits, into_r, false, into_r)
      check.eq(label .. ": in place on the input", check.maxabs(into_x - want), 0)
      check.eq(label .. ": in place on the residual", check.maxabs(into_r - want), 0)
    end
  end
  check.raises("batchnorm residual shape", "residual [2, 3, 4, 4] should have the shape of input [2, 3, 4, 5]",
               F.batchnorm_forward, moco.randn{ 2, 3, 4, 5 }, nil, nil, nil, nil, true, 0.1, 1e-5, 1, nil, false,
               moco.randn{ 2, 3, 4, 4 })
  local bn, twin = moco.nn.BatchNorm2d(3, { splits = 2 }), moco.nn.BatchNorm2d(3, { splits = 2 })
  local x, r = moco.randn{ 4, 3, 5, 5 }, moco.randn{ 4, 3, 5, 5 }
  local want = F.add_relu_forward(twin:forward(x), r)
  check.eq("BatchNorm2d:forward_add_relu is bn then the join", check.maxabs(bn:forward_add_relu(x, r) - want), 0)
  check.eq("forward_add_relu updates the running statistics", check.maxabs(bn.running_var - twin.running_var), 0)
end

check.run(tests)
