-- lua/moco/repl.lua: what the REPL shows (moco.repl): readable values and help().
--
--   moco.repl.print(...)      what the REPL prints for an expression's values
--   moco.repl.format(v)       the same text for one value
--   moco.repl.summary(m)      a moco.nn module in a few lines: its children and parameter counts
--   help(x)                   (a global in moco-lua) what x is and how to call it: x a function,
--                             a class, an object, a module, or a name ("moco.zeros", "normalize")
--
-- Plain tables print as Lua would write them ({1, 2, 3}, {lr = 0.03, ...}), a list of records
-- (a training history) as a table with one row per record, a class list as a list.  A small
-- module prints its layers and parameter count; a large one (a ResNet-50 has over 200 layers)
-- and a MoCo model print a summary, and tostring(m) still gives every layer.  Objects with
-- __tostring (tensors, transforms, optimizers, trainers) print through it.  help() reads the
-- entries of moco.doc, the same source docs/api.md is generated from.
local moco = require "moco"
local is_finite = require("moco.util").is_finite

local repl = {}

local MAX_ITEMS = 60
local WIDTH = 80

local function thousands(n)
  local s = tostring(math.tointeger(n) or n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end
repl.thousands = thousands

local function class_of(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt or nil
end

local function is_module(v)
  local mt = class_of(v)
  return type(v) == "table" and mt ~= nil and rawget(mt, "_class_name") ~= nil and type(v.num_parameters) == "function"
end

local function scalar(v)
  if type(v) == "string" then return string.format("%q", v) end
  if math.type(v) == "float" then
    if not is_finite(v) then return tostring(v) end
    return string.format("%.6g", v)
  end
  return tostring(v)
end

-- "{...}" for a nested table (shown one level deep only).
local function brief(v)
  if type(v) ~= "table" then return scalar(v) end
  if class_of(v) and class_of(v).__tostring then
    local text = tostring(v)
    return text:find("\n") and (text:match("^[^\n]*") .. " ...") or text
  end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n == 0 then return "{}" end
  if #v == n and n <= 8 then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = type(x) == "table" and "{...}" or scalar(x) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return string.format("{...} (%d %s)", n, n == 1 and "entry" or "entries")
end

local function is_identifier(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil end

-- A list of records that share their fields: a table, one row per record.
local PREFERRED = { "epoch", "step", "loss", "acc1", "acc5", "knn", "test_top1", "test_top5", "lr", "images_per_s",
                    "seconds", "steps", "complete" }
local function records_table(list)
  local seen, columns = {}, {}
  for _, r in ipairs(list) do
    for k, v in pairs(r) do
      if type(k) == "string" and not seen[k] and type(v) ~= "table" and type(v) ~= "function" then
        seen[k] = true
      end
    end
  end
  for _, k in ipairs(PREFERRED) do if seen[k] then columns[#columns + 1] = k; seen[k] = nil end end
  local rest = {}
  for k in pairs(seen) do rest[#rest + 1] = k end
  table.sort(rest)
  for _, k in ipairs(rest) do columns[#columns + 1] = k end
  local cells, widths = {}, {}
  for j, k in ipairs(columns) do widths[j] = #k end
  local shown = math.min(#list, MAX_ITEMS)
  for i = 1, shown do
    cells[i] = {}
    for j, k in ipairs(columns) do
      local v = list[i][k]
      local text = v == nil and "" or (type(v) == "string" and v or scalar(v))
      cells[i][j] = text
      widths[j] = math.max(widths[j], #text)
    end
  end
  -- as many columns as fit the width; the others are named below
  local used, ncols = 0, 0
  for j = 1, #columns do
    if used + widths[j] + 2 > WIDTH and ncols > 0 then break end
    used, ncols = used + widths[j] + 2, j
  end
  local lines = {}
  local head = {}
  for j = 1, ncols do head[j] = string.format("%" .. widths[j] .. "s", columns[j]) end
  lines[1] = table.concat(head, "  ")
  for i = 1, shown do
    local row = {}
    for j = 1, ncols do row[j] = string.format("%" .. widths[j] .. "s", cells[i][j]) end
    lines[#lines + 1] = table.concat(row, "  ")
  end
  local foot = string.format("(%d record%s", #list, #list == 1 and "" or "s")
  if shown < #list then foot = foot .. string.format(", the first %d shown", shown) end
  if ncols < #columns then foot = foot .. "; also " .. table.concat(columns, ", ", ncols + 1) end
  lines[#lines + 1] = foot .. ")"
  return table.concat(lines, "\n")
end

local function plain_table(t)
  local n, count = #t, 0
  for _ in pairs(t) do count = count + 1 end
  if count == 0 then return "{}" end
  if n == count then
    local records = n > 0
    for i = 1, n do if type(t[i]) ~= "table" or class_of(t[i]) ~= nil or #t[i] > 0 then records = false end end
    if records then return records_table(t) end
    local parts, len = {}, 0
    for i = 1, math.min(n, MAX_ITEMS) do
      parts[i] = brief(t[i])
      len = len + #parts[i] + 2
    end
    local more = n > MAX_ITEMS and string.format(", ... (%d in all)", n) or ""
    if len < WIDTH - 2 then return "{" .. table.concat(parts, ", ") .. more .. "}" end
    local lines, line = {}, "{"
    for i, p in ipairs(parts) do
      local piece = p .. (i < #parts and "," or "")
      if #line + #piece + 1 > WIDTH then
        lines[#lines + 1] = line
        line = " " .. piece
      else
        line = line .. (line == "{" and "" or " ") .. piece
      end
    end
    lines[#lines + 1] = line .. more .. "}"
    return table.concat(lines, "\n") .. string.format("\n(%d items)", n)
  end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  local parts, len = {}, 0
  for i = 1, math.min(#keys, MAX_ITEMS) do
    local k = keys[i]
    local key = is_identifier(k) and k or ("[" .. scalar(k) .. "]")
    parts[i] = key .. " = " .. brief(t[k])
    len = len + #parts[i] + 2
  end
  local more = #keys > MAX_ITEMS and string.format("\n  ... (%d keys in all)", #keys) or ""
  if len < WIDTH - 2 and more == "" then return "{" .. table.concat(parts, ", ") .. "}" end
  return "{\n  " .. table.concat(parts, ",\n  ") .. more .. "\n}"
end

local function layer_line(name, m)
  local mt = class_of(m)
  local head = (mt and rawget(mt, "_class_name") or "?")
  local extra = type(m.extra_repr) == "function" and m:extra_repr() or ""
  local kids = m._children and #m._children or 0
  local text
  if kids > 0 and extra == "" then
    local kinds, order = {}, {}
    for _, c in ipairs(m._children) do
      local cm = class_of(m[c])
      local k = cm and rawget(cm, "_class_name") or "?"
      if not kinds[k] then kinds[k] = 0; order[#order + 1] = k end
      kinds[k] = kinds[k] + 1
    end
    local parts = {}
    for _, k in ipairs(order) do parts[#parts + 1] = (kinds[k] > 1 and (kinds[k] .. " ") or "") .. k end
    text = string.format("%s of %s", head, table.concat(parts, ", "))
  else
    text = head .. "(" .. extra .. ")"
  end
  local count = m:num_parameters()
  if #text > 52 then text = text:sub(1, 49) .. "..." end
  return string.format("  %-10s %-52s %12s", name, text, count > 0 and thousands(count) or "")
end

-- A module in a few lines: class, parameter count, mode, then each child with its count.
function repl.summary(m)
  local mt = class_of(m)
  local name = mt and rawget(mt, "_class_name") or "Module"
  if m.encoder_q and m.queue then -- a moco.MoCo model
    local q = m.encoder_q
    local lines = {
      string.format("MoCo %s: %s", tostring(m.arch), m:extra_repr()),
      string.format("  encoder_q  %s %s%s: %s parameters (trained by SGD)", rawget(class_of(q), "_class_name"),
                    tostring(q.arch or ""), m.mlp and " with the MLP head" or "", thousands(q:num_parameters())),
      string.format("  encoder_k  its momentum copy (m = %g): no gradients", m.m),
      string.format("  queue      [%d, %d] negative keys, pointer at %d", m.dim, m.K, m.queue_ptr),
      string.format("  optimizer  %s, %d steps", tostring(m.optimizer), m.optimizer.steps or 0),
      string.format("  mode       %s", m.training and "training" or "eval"),
      "(tostring(model) lists every layer; help(model) shows its methods)",
    }
    return table.concat(lines, "\n")
  end
  local count = m:num_parameters()
  local lines = { string.format("%s%s: %s parameters (%.1f MB), %s mode", name, m.arch and (" " .. m.arch) or "",
                                thousands(count), count * 4 / 1e6, m.training and "training" or "eval") }
  for _, c in ipairs(m._children or {}) do lines[#lines + 1] = layer_line(c, m[c]) end
  lines[#lines + 1] = "(tostring(m) lists every layer)"
  return table.concat(lines, "\n")
end

local SMALL_MODULE_LINES = 24

-- The REPL's text for one value.
function repl.format(v)
  if type(v) == "table" then
    if is_module(v) then
      local full = tostring(v)
      local _, lines = full:gsub("\n", "")
      if lines + 1 <= SMALL_MODULE_LINES and not v.queue then
        return full .. string.format("\n(%s parameters)", thousands(v:num_parameters()))
      end
      return repl.summary(v)
    end
    local mt = class_of(v)
    if mt and mt.__tostring then return tostring(v) end
    return plain_table(v)
  end
  if type(v) == "function" then
    local doc = require "moco.doc"
    local entry = doc.find(v)
    if entry then return string.format("%s  -- %s (help(...) says more)", entry.signature, entry.summary) end
  end
  return tostring(v)
end

function repl.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    parts[i] = type(v) == "string" and v or repl.format(v)
  end
  io.stdout:write(table.concat(parts, "\t"), "\n")
end

-- help(x): see the header.
function repl.help(x, ...)
  local doc = require "moco.doc"
  io.stdout:write(doc.help_text(x, select("#", ...) > 0 or x ~= nil), "\n")
end

return repl
