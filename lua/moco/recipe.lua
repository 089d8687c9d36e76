-- lua/moco/recipe.lua: command-line options for recipes, with the official MoCo flag names.
--
--   local opts = recipe.parse({...}, {
--     { "arch", "resnet50", "encoder architecture", short = "a" },
--     { "lr", 0.03, "initial learning rate" },
--     { "schedule", { 120, 160 }, "epochs at which the lr drops by 10x" },
--     { "mlp", false, "use an MLP head (MoCo v2)" },
--   }, { description = "..." })
--   opts["batch-size"] and opts.batch_size are the same value.
--
-- The type of each option is its default's: numbers, strings, booleans (flags: `--mlp`,
-- `--no-mlp`, or `--mlp false`) and lists of numbers (`--schedule 120 160`, as argparse's
-- nargs='*').  `--name=value` also works.  An unknown option is an error that names the
-- closest known one, so a typo never silently falls back to a default.  `--help` prints the
-- options and parse() returns nil.
local recipe = {}

local function levenshtein(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end
recipe.levenshtein = levenshtein

local function closest(name, spec)
  local best, best_d
  for _, o in ipairs(spec) do
    local d = levenshtein(name, o[1])
    if not best_d or d < best_d then best, best_d = o[1], d end
  end
  return best
end

local function typename(v)
  if type(v) == "table" then return "list" end
  if math.type(v) == "integer" then return "integer" end
  return type(v)
end

local function convert(name, kind, text)
  if kind == "integer" then
    local v = math.tointeger(tonumber(text))
    if v == nil then error(string.format("option --%s expects an integer, got '%s'", name, text), 0) end
    return v
  elseif kind == "number" then
    local v = tonumber(text)
    if v == nil then error(string.format("option --%s expects a number, got '%s'", name, text), 0) end
    return v
  elseif kind == "boolean" then
    if text == "true" or text == "1" or text == "yes" then return true end
    if text == "false" or text == "0" or text == "no" then return false end
    error(string.format("option --%s expects true or false, got '%s'", name, text), 0)
  end
  return text
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for i, x in ipairs(v) do c[i] = x end
  return c
end

function recipe.usage(spec, info)
  local lines = {}
  if info and info.description then lines[#lines + 1] = info.description; lines[#lines + 1] = "" end
  lines[#lines + 1] = "options (defaults in brackets):"
  for _, o in ipairs(spec) do
    local d = o[2]
    if type(d) == "table" then d = table.concat(d, " ") end
    local flag = "--" .. o[1] .. (o.short and (", -" .. o.short) or "")
    lines[#lines + 1] = string.format("  %-26s %s [%s]", flag, o[3] or "", tostring(d))
  end
  return table.concat(lines, "\n")
end

-- argv: the script's arguments (the `arg` table or {...}).  Returns the options table (with
-- positional arguments in opts._positional), or nil after printing --help.
function recipe.parse(argv, spec, info)
  local by_name, by_short = {}, {}
  local opts = { _positional = {}, _given = {} }
  for _, o in ipairs(spec) do
    by_name[o[1]] = o
    if o.short then by_short[o.short] = o end
    opts[o[1]] = copy(o[2])
  end
  local i = 1
  local n = #argv
  while i <= n do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      print(recipe.usage(spec, info))
      return nil
    elseif a == "--" then
      for j = i + 1, n do opts._positional[#opts._positional + 1] = argv[j] end
      break
    elseif a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      if not name then name = a:match("^%-%-(.+)$") end
      local o
      if name then
        o = by_name[name]
        if not o and name:sub(1, 3) == "no-" and by_name[name:sub(4)] and typename(by_name[name:sub(4)][2]) == "boolean" then
          opts[name:sub(4)] = false
          opts._given[name:sub(4)] = true
          i = i + 1
          goto continue
        end
      else
        o = by_short[a:sub(2)]
        name = a:sub(2)
      end
      if not o then
        error(string.format("unknown option '%s' (did you mean --%s? --help lists them all)", a, closest(name, spec)), 0)
      end
      local kind = typename(o[2])
      if kind == "boolean" and value == nil then
        local nxt = argv[i + 1]
        if nxt == "true" or nxt == "false" then
          opts[o[1]] = nxt == "true"
          i = i + 1
        else
          opts[o[1]] = true
        end
      elseif kind == "list" then
        local list = {}
        if value ~= nil then
          for item in value:gmatch("[^,%s]+") do list[#list + 1] = convert(o[1], "number", item) end
        else
          while i + 1 <= n and tonumber(argv[i + 1]) do
            list[#list + 1] = tonumber(argv[i + 1])
            i = i + 1
          end
        end
        opts[o[1]] = list
      else
        if value == nil then
          if i + 1 > n then error(string.format("option --%s needs a value", o[1]), 0) end
          value = argv[i + 1]
          i = i + 1
        end
        opts[o[1]] = convert(o[1], kind, value)
      end
      opts._given[o[1]] = true
    else
      opts._positional[#opts._positional + 1] = a
    end
    i = i + 1
    ::continue::
  end
  -- snake_case aliases: opts.batch_size == opts["batch-size"]
  for _, o in ipairs(spec) do
    local alias = o[1]:gsub("%-", "_")
    if alias ~= o[1] then opts[alias] = opts[o[1]] end
  end
  return opts
end

-- The options as "name=value" pairs, for logs and checkpoint metadata.
function recipe.describe(opts, spec)
  local parts = {}
  for _, o in ipairs(spec) do
    local v = opts[o[1]]
    if type(v) == "table" then v = table.concat(v, ",") end
    parts[#parts + 1] = o[1] .. "=" .. tostring(v)
  end
  return table.concat(parts, " ")
end

return recipe
