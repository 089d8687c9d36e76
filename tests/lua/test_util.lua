-- tests/lua/test_util.lua: moco.util, the checks the Lua modules share: the one option
-- checker (the same function as nn.check_options, used by transforms and the models too)
-- and the one finiteness test behind both divergence checks (train.lua, lincls.lua).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local util = require "moco.util"

local tests = {}

function tests.check_options()
  local known = { stride = true, padding = true }
  check.eq("nil options are an empty table", next(util.check_options("f", nil, known)), nil)
  local o = { stride = 2 }
  check.eq("known options pass through", util.check_options("f", o, known), o)
  check.raises("an unknown option names the known ones", "f: unknown option 'strid' (known: padding, stride)",
               util.check_options, "f", { strid = 1 }, known)
  check.raises("options must be a table", "f: options must be a table, got number", util.check_options, "f", 3, known)
  check.eq("nn.check_options is the same checker", moco.nn.check_options, util.check_options)
  -- every user of the checker reports through it (the messages tests elsewhere rely on)
  check.raises("nn.Conv2d", "nn.Conv2d: unknown option 'strid'", moco.nn.Conv2d, 1, 1, 3, { strid = 1 })
  check.raises("nn.BatchNorm2d", "nn.BatchNorm2d: unknown option 'moment'", moco.nn.BatchNorm2d, 2, { moment = 0.1 })
  check.raises("transforms", "RandomResizedCrop: unknown option 'scal' (known:", moco.transforms.RandomResizedCrop, 8,
               { scal = { 0.2, 1 } })
  check.raises("models", "resnet18: unknown option 'widht'", moco.models.resnet18, { widht = 1 })
  -- the defaults are the documented ones, not the old table's placeholder values
  local conv = moco.nn.Conv2d(1, 1, 3, { stride = 1 })
  check.eq("Conv2d's default padding is 0 (as PyTorch)", conv.padding, 0)
end

function tests.is_finite()
  check.ok("1 is finite", util.is_finite(1))
  check.ok("0 is finite", util.is_finite(0.0))
  check.ok("NaN is not", not util.is_finite(0 / 0))
  check.ok("+inf is not", not util.is_finite(math.huge))
  check.ok("-inf is not (lincls used to miss it)", not util.is_finite(-math.huge))
end

-- lincls stops on a non-finite loss, whichever kind: a classifier whose weights are NaN
-- gives a NaN loss at the first step and the error names the epoch.
function tests.lincls_divergence()
  local lincls = moco.lincls
  local g = moco.Generator(3)
  local x, y = moco.randn({ 8, 4 }, g), moco.tensor{ 0, 1, 2, 0, 1, 2, 0, 1 }
  local linear = moco.nn.Linear(4, 3)
  linear.weight:fill(0 / 0)
  local ok, err = pcall(lincls.fit_precomputed, { linear = linear, train_features = x, train_labels = y, epochs = 1,
                                                 lr = 0.1, batch_size = 8, log = false, test_features = x, test_labels = y })
  check.ok("a NaN loss stops lincls", not ok and tostring(err):find("lincls: the loss is", 1, true) ~= nil, tostring(err))
end

check.run(tests)
