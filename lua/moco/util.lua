-- lua/moco/util.lua: the small checks the Lua modules share (moco.util), so that each lives
-- in one place: option tables and finite numbers.
local util = {}

-- Options tables: nil (no options) or a table whose keys are all in `known` (a set: name ->
-- true); a typo is an error naming the closest known ones, not a silently ignored setting.
-- The error is raised at the caller of the function that checks (level 3).
function util.check_options(fn, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fn .. ": options must be a table, got " .. type(opts), 3) end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for n in pairs(known) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (known: %s)", fn, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return opts
end

-- Whether x is a finite number: not NaN, +inf or -inf (a diverged loss is any of the three).
function util.is_finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

return util
