-- tests/lua/test_messages.lua: what a user reads when something is wrong counts dimensions
-- and positions from 1, as Lua does (core/tensor.c and the binding), whichever layer
-- raises the message.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"

local tests = {}

function tests.dimensions_and_positions_are_1_based()
  local x = moco.zeros{ 3, 4 }
  check.raises("narrow: the second dimension is dimension 2, positions from 1",
               "narrow: positions 3 to 7 are outside dimension 2 of size 4", x.narrow, x, 2, 3, 5)
  check.raises("select: the index as given", "select: index 9 out of range for dimension 1 of size 3", x.select, x, 1, 9)
  check.raises("broadcasting names the dimension from 1", "(dimension 2 of the result: 4 vs 5)",
               function() return x + moco.ones{ 5 } end)
  check.raises("max over an empty dimension", "max: dimension 1 of shape [0, 3] is empty", moco.zeros{ 0, 3 }.max,
               moco.zeros{ 0, 3 }, 1)
  check.raises("a dimension out of range, as given", "dimension 3 out of range", x.size, x, 3)
  check.raises("an element index, as given", "index 5 out of range for dimension 2 of size 4", x.get, x, 1, 5)
  check.raises("a row index", "index 4 out of range for dimension 1", function() return x[4] end)
end

check.run(tests)
