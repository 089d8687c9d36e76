-- lua/moco/recipe.lua: command-line options for recipes, with the official MoCo flag names
-- and argparse's conventions (moco.recipe).
--
--   local opts = recipe.parse(arg, {
--     { "arch", "resnet50", "encoder architecture", short = "a", choices = {"resnet18", "resnet50"} },
--     { "lr", 0.03, "initial learning rate", aliases = { "learning-rate" }, metavar = "LR" },
--     { "schedule", { 120, 160 }, "epochs at which the lr drops by 10x" },
--     { "mlp", false, "use an MLP head (MoCo v2)" },
--     { "width", 1, "channel width multiplier", type = "number" },
--     { "data", "", "the dataset", path = true },
--   }, { description = "...", positional = { name = "data", metavar = "DIR", help = "..." } })
--   opts["batch-size"] and opts.batch_size are the same value.
--
-- The type of each option is its default's (or `type`): integers, numbers, strings, booleans
-- (`--mlp`, `--no-mlp`, `--mlp=false`, `--mlp false`) and lists of numbers (`--schedule 120 160`,
-- `--schedule 120,160`, as argparse's nargs='*').  `--name=value` works for all.  `choices`
-- limits the values.  `path = true` marks options that name files or directories: a resumed
-- run never takes those from a checkpoint.  info.positional lets one option be given as a
-- bare argument (the official `main_moco.py [options] DIR`).  An unknown option is an error
-- that names the closest known one, so a typo never silently falls back to a default.
-- `--help` prints an argparse-style help (usage line, then each option with its type,
-- default and help) and parse() returns nil.
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

-- The candidate closest to name (by edit distance), or nil.
local function closest_of(name, candidates)
  local best, best_d
  for _, c in ipairs(candidates) do
    local d = levenshtein(name, c)
    if not best_d or d < best_d then best, best_d = c, d end
  end
  return best
end
recipe.closest = closest_of

local function option_names(spec)
  local names = {}
  for _, o in ipairs(spec) do
    names[#names + 1] = o[1]
    for _, a in ipairs(o.aliases or {}) do names[#names + 1] = a end
  end
  return names
end

-- "integer", "number", "string", "boolean" or "list".
local function kind_of(o)
  if o.type then return o.type end
  local v = o[2]
  if type(v) == "table" then return "list" end
  if math.type(v) == "integer" then return "integer" end
  return type(v)
end
recipe.kind_of = kind_of

local TYPE_NAMES = { integer = "int", number = "float", string = "str", boolean = "bool", list = "list of numbers" }

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

-- "120,160" or "120" -> {120, 160}; nil when text is not a list of numbers.
local function number_list(name, text)
  local list = {}
  for item in text:gmatch("[^,%s]+") do
    local v = tonumber(item)
    if v == nil then return nil end
    list[#list + 1] = math.tointeger(v) or v
  end
  return list
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for i, x in ipairs(v) do c[i] = x end
  return c
end

local function show_default(o)
  local d = o[2]
  if type(d) == "table" then return #d > 0 and table.concat(d, " ") or "none" end
  if d == "" then return "none" end
  return tostring(d)
end

local function metavar(o)
  if o.metavar then return o.metavar end
  return (o[1]:gsub("%-", "_"):upper())
end

-- Splits text into lines of at most width characters.
local function wrap(text, width)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = word
    else
      line = line == "" and word or (line .. " " .. word)
    end
  end
  if line ~= "" then lines[#lines + 1] = line end
  return lines
end

-- The invocation of an option as --help shows it: "-a ARCH, --arch ARCH", "--mlp, --no-mlp".
local function invocation(o)
  local kind = kind_of(o)
  local parts = {}
  local function add(flag)
    if kind == "boolean" then
      parts[#parts + 1] = flag
    elseif kind == "list" then
      parts[#parts + 1] = flag .. " [N ...]"
    else
      parts[#parts + 1] = flag .. " " .. metavar(o)
    end
  end
  if o.short then add("-" .. o.short) end
  add("--" .. o[1])
  for _, a in ipairs(o.aliases or {}) do add("--" .. a) end
  if kind == "boolean" then parts[#parts + 1] = "--no-" .. o[1] end
  return table.concat(parts, ", ")
end

local function usage_item(o)
  local kind = kind_of(o)
  local flag = o.short and ("-" .. o.short) or ("--" .. o[1])
  if kind == "boolean" then return "[--" .. o[1] .. " | --no-" .. o[1] .. "]" end
  if kind == "list" then return "[" .. flag .. " [N ...]]" end
  return "[" .. flag .. " " .. metavar(o) .. "]"
end

-- The program as the user ran it: "moco-lua quickstart", "moco-lua run quickstart",
-- "moco-lua recipes/moco_v2.lua".
function recipe.program(argv)
  argv = argv or {}
  local name = argv[0] or "recipe.lua"
  if argv[-1] == "run" then return "moco-lua run " .. name end
  return "moco-lua " .. name
end

-- The argparse-style help text.
function recipe.usage(spec, info)
  info = info or {}
  local width = 79
  local prog = info.prog or "moco-lua recipe.lua"
  local items = { "[-h]" }
  for _, o in ipairs(spec) do items[#items + 1] = usage_item(o) end
  if info.positional then items[#items + 1] = "[" .. (info.positional.metavar or "ARG") .. "]" end
  local lines = {}
  local head = "usage: " .. prog .. " "
  local line = head
  -- continuation lines under the first option, unless one would not fit there (then
  -- under "usage: ", as argparse does for a long program name)
  local indent = #head
  for _, item in ipairs(items) do
    if indent + #item > width then indent = #"usage: " end
  end
  for i, item in ipairs(items) do
    if #line + #item > width and line ~= head then
      lines[#lines + 1] = line:gsub("%s+$", "")
      line = string.rep(" ", indent)
    end
    line = line .. item .. (i < #items and " " or "")
  end
  lines[#lines + 1] = line
  if info.description then
    lines[#lines + 1] = ""
    for _, l in ipairs(wrap(info.description, width)) do lines[#lines + 1] = l end
  end
  local function entry(left, help)
    local col = 24
    local text = wrap(help, width - col)
    if #left + 2 <= col - 2 then
      lines[#lines + 1] = string.format("  %-" .. (col - 2) .. "s%s", left, text[1] or "")
      for i = 2, #text do lines[#lines + 1] = string.rep(" ", col) .. text[i] end
    else
      lines[#lines + 1] = "  " .. left
      for _, l in ipairs(text) do lines[#lines + 1] = string.rep(" ", col) .. l end
    end
  end
  if info.positional then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "positional arguments:"
    entry(info.positional.metavar or "ARG", info.positional.help or "")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options:"
  entry("-h, --help", "show this help message and exit")
  for _, o in ipairs(spec) do
    local kind = kind_of(o)
    local extra
    if kind == "boolean" then
      extra = string.format("(default: %s)", o[2] and "on" or "off")
    else
      extra = string.format("(%s, default: %s)", TYPE_NAMES[kind], show_default(o))
    end
    local help = (o[3] or "")
    if o.choices then help = help .. " {" .. table.concat(o.choices, ", ") .. "}" end
    entry(invocation(o), help .. " " .. extra)
  end
  return table.concat(lines, "\n")
end

local function check_choice(o, value)
  if not o.choices then return end
  for _, c in ipairs(o.choices) do if c == value then return end end
  error(string.format("option --%s: invalid choice '%s' (choose from %s; did you mean %s?)", o[1], tostring(value),
                      table.concat(o.choices, ", "), closest_of(tostring(value), o.choices)), 0)
end

-- argv: the script's arguments (the `arg` table or {...}).  Returns the options table, with
-- opts._given[name] = true for the options on the command line, opts._positional the other
-- bare arguments and opts._spec the spec; nil after printing --help.
function recipe.parse(argv, spec, info)
  info = info or {}
  local by_name, by_short = {}, {}
  local opts = { _positional = {}, _given = {}, _spec = spec }
  for _, o in ipairs(spec) do
    by_name[o[1]] = o
    for _, a in ipairs(o.aliases or {}) do by_name[a] = o end
    if o.short then by_short[o.short] = o end
    opts[o[1]] = copy(o[2])
  end
  local function set(o, value)
    check_choice(o, value)
    opts[o[1]] = value
    opts._given[o[1]] = true
  end
  local i = 1
  local n = #argv
  while i <= n do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      print(recipe.usage(spec, { prog = info.prog or recipe.program(argv), description = info.description,
                                 positional = info.positional }))
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
        local negated = not o and name:sub(1, 3) == "no-" and by_name[name:sub(4)]
        if negated and kind_of(negated) == "boolean" then
          if value ~= nil then error(string.format("option --%s takes no value", name), 0) end
          set(negated, false)
          i = i + 1
          goto continue
        end
      else
        o = by_short[a:sub(2, 2)]
        name = a:sub(2)
        if o and #a > 2 then value = a:sub(3) end -- -b64, as argparse allows
      end
      if not o then
        error(string.format("unknown option '%s' (did you mean --%s? --help lists them all)", a,
                            closest_of(name, option_names(spec))), 0)
      end
      local kind = kind_of(o)
      if kind == "boolean" then
        if value ~= nil then
          set(o, convert(o[1], kind, value))
        else
          local nxt = argv[i + 1]
          if nxt == "true" or nxt == "false" then
            set(o, nxt == "true")
            i = i + 1
          else
            set(o, true)
          end
        end
      elseif kind == "list" then
        local list
        if value ~= nil then
          list = number_list(o[1], value)
          if not list then error(string.format("option --%s expects numbers, got '%s'", o[1], value), 0) end
        else
          list = {}
          while i + 1 <= n do
            local more = number_list(o[1], argv[i + 1])
            if not more or argv[i + 1] == "" then break end
            for _, v in ipairs(more) do list[#list + 1] = v end
            i = i + 1
          end
        end
        set(o, list)
      else
        if value == nil then
          if i + 1 > n then error(string.format("option --%s needs a value", o[1]), 0) end
          value = argv[i + 1]
          i = i + 1
        end
        set(o, convert(o[1], kind, value))
      end
    else
      opts._positional[#opts._positional + 1] = a
    end
    i = i + 1
    ::continue::
  end
  local pos = info.positional
  if pos and #opts._positional > 0 then
    local o = by_name[pos.name]
    if opts._given[pos.name] then
      error(string.format("%s is given twice: as '%s' and as --%s %s", pos.metavar or pos.name, opts._positional[1],
                          pos.name, tostring(opts[pos.name])), 0)
    end
    set(o, convert(o[1], kind_of(o), table.remove(opts._positional, 1)))
  end
  recipe.set_aliases(opts, spec)
  return opts
end

-- snake_case aliases: opts.batch_size == opts["batch-size"] (call again after changing opts).
function recipe.set_aliases(opts, spec)
  for _, o in ipairs(spec) do
    local alias = o[1]:gsub("%-", "_")
    if alias ~= o[1] then opts[alias] = opts[o[1]] end
  end
  return opts
end

-- The options as "name=value" pairs, for logs.
function recipe.describe(opts, spec)
  local parts = {}
  for _, o in ipairs(spec) do
    local v = opts[o[1]]
    if type(v) == "table" then v = table.concat(v, ",") end
    parts[#parts + 1] = o[1] .. "=" .. tostring(v)
  end
  return table.concat(parts, " ")
end

-- The options as a plain table name -> value (lists copied), for config.json and checkpoints.
function recipe.values(opts, spec)
  local t = {}
  for _, o in ipairs(spec) do t[o[1]] = copy(opts[o[1]]) end
  return t
end

return recipe
