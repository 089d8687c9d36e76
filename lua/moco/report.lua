-- lua/moco/report.lua: report.html, one self-contained page per run directory (moco.report).
--
--   moco.report.write(path, {
--     title = "quickstart: MoCo v2 on Fashion-MNIST", status = "epoch 3 of 10 done",
--     results = {{"kNN top-1", "75.90%"}, ...},            -- the final accuracies
--     pictures = {{title = "Training curves", file = "dir/training-curves.png", caption = "..."}, ...},
--     history = history,                                  -- train.fit's (or lincls') records
--     columns = report.MOCO_COLUMNS,                      -- which record fields to tabulate
--     options = {name = value, ...}, facts = {{"run id", "..."}, ...},
--   })
--
-- The page needs nothing else: pictures are embedded as data: URIs (base64 PNG), the style
-- is inline CSS, and there is no script and no network access, so it opens from a copied
-- directory, an e-mail attachment or a machine without internet.  It is rewritten
-- atomically (a reader never sees half a page); recipes refresh it after every epoch.
local moco = require "moco"

local report = {}

local function escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                           ["'"] = "&#39;" }))
end
report.escape = escape

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_CHARS = {}
for i = 1, 64 do B64_CHARS[i - 1] = B64:sub(i, i) end

-- RFC 4648 base64 of a byte string.
function report.base64(bytes)
  local out, n = {}, #bytes
  for i = 1, n - 2, 3 do
    local a, b, c = bytes:byte(i, i + 2)
    local v = a << 16 | b << 8 | c
    out[#out + 1] = B64_CHARS[v >> 18 & 63] .. B64_CHARS[v >> 12 & 63] .. B64_CHARS[v >> 6 & 63] .. B64_CHARS[v & 63]
  end
  local rest = n % 3
  if rest == 1 then
    local v = bytes:byte(n) << 16
    out[#out + 1] = B64_CHARS[v >> 18 & 63] .. B64_CHARS[v >> 12 & 63] .. "=="
  elseif rest == 2 then
    local a, b = bytes:byte(n - 1, n)
    local v = a << 16 | b << 8
    out[#out + 1] = B64_CHARS[v >> 18 & 63] .. B64_CHARS[v >> 12 & 63] .. B64_CHARS[v >> 6 & 63] .. "="
  end
  return table.concat(out)
end

local MAX_PICTURE_BYTES = 32 << 20

-- A picture file as a data: URI, or nil (and why) when it cannot be read.
local function data_uri(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local bytes = f:read(MAX_PICTURE_BYTES + 1) or ""
  f:close()
  if #bytes > MAX_PICTURE_BYTES then return nil, path .. " is larger than 32 MB" end
  local kind = bytes:sub(1, 8) == "\137PNG\r\n\26\n" and "png" or (bytes:sub(1, 2) == "\255\216" and "jpeg" or nil)
  if not kind then return nil, path .. " is neither PNG nor JPEG" end
  return "data:image/" .. kind .. ";base64," .. report.base64(bytes)
end

-- Columns of a MoCo history: {field, header, format}.
report.MOCO_COLUMNS = {
  { "epoch", "epoch", "%d" }, { "loss", "loss", "%.4f" }, { "acc1", "acc@1", "%.2f" }, { "acc5", "acc@5", "%.2f" },
  { "knn", "kNN top-1", "%.2f" }, { "lr", "lr", "%.5g" }, { "images_per_s", "img/s", "%.0f" },
  { "seconds", "seconds", "%.1f" },
}
-- Columns of a linear-probe history (moco.lincls).
report.LINCLS_COLUMNS = {
  { "epoch", "epoch", "%d" }, { "loss", "train loss", "%.4f" }, { "acc1", "train acc@1", "%.2f" },
  { "test_top1", "test top-1", "%.2f" }, { "test_top5", "test top-5", "%.2f" }, { "lr", "lr", "%.5g" },
  { "seconds", "seconds", "%.1f" },
}

local CSS = [[
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.status { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: left; }
th { background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.results td { font-size: 1.1em; }
.results td.value { font-weight: 600; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
.missing { color: #a00; }
.options { columns: 2; }
]]

local function format_value(v, fmt)
  if type(v) == "number" then
    if fmt == "%d" then return string.format("%d", math.tointeger(v) or math.floor(v)) end
    return string.format(fmt or "%.6g", v)
  end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = tostring(x) end
    return table.concat(parts, ", ")
  end
  if v == nil then return "" end
  return tostring(v)
end

-- The page's HTML text (see the header for spec).
function report.html(spec)
  local out = {}
  local function add(...) for i = 1, select("#", ...) do out[#out + 1] = select(i, ...) end end
  local title = spec.title or "moco-lua run"
  add("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>", escape(title), "</title>\n",
      "<style>\n", CSS, "</style>\n</head>\n<body>\n")
  add("<h1>", escape(title), "</h1>\n")
  if spec.status then add("<p class=\"status\">", escape(spec.status), "</p>\n") end
  if spec.results and #spec.results > 0 then
    add("<h2>Results</h2>\n<table class=\"results\">\n")
    for _, r in ipairs(spec.results) do
      add("<tr><td>", escape(r[1]), "</td><td class=\"value\">", escape(r[2]), "</td></tr>\n")
    end
    add("</table>\n")
  end
  for _, p in ipairs(spec.pictures or {}) do
    add("<h2>", escape(p.title or p.file), "</h2>\n")
    local uri, why = data_uri(p.file)
    if uri then
      add("<figure><img src=\"", uri, "\" alt=\"", escape(p.title or p.file), "\">")
      if p.caption then add("<figcaption>", escape(p.caption), "</figcaption>") end
      add("</figure>\n")
    else
      add("<p class=\"missing\">picture not available: ", escape(why), "</p>\n")
    end
  end
  local history = spec.history or {}
  if #history > 0 then
    local columns = spec.columns or report.MOCO_COLUMNS
    add("<h2>Epochs</h2>\n<table>\n<tr>")
    for _, c in ipairs(columns) do add("<th>", escape(c[2]), "</th>") end
    add("</tr>\n")
    for _, r in ipairs(history) do
      add("<tr>")
      for _, c in ipairs(columns) do
        local v = r[c[1]]
        local text = format_value(v, c[3])
        if c[1] == "epoch" and r.complete == false then text = text .. string.format(" (%d steps)", r.steps or 0) end
        add("<td class=\"num\">", escape(text), "</td>")
      end
      add("</tr>\n")
    end
    add("</table>\n")
  end
  if spec.facts and #spec.facts > 0 then
    add("<h2>Run</h2>\n<table>\n")
    for _, f in ipairs(spec.facts) do add("<tr><th>", escape(f[1]), "</th><td>", escape(format_value(f[2])), "</td></tr>\n") end
    add("</table>\n")
  end
  if spec.options then
    local names = {}
    for k in pairs(spec.options) do names[#names + 1] = k end
    table.sort(names)
    add("<h2>Configuration</h2>\n<div class=\"options\"><table>\n")
    for _, k in ipairs(names) do
      add("<tr><th>--", escape(k), "</th><td>", escape(format_value(spec.options[k])), "</td></tr>\n")
    end
    add("</table></div>\n")
  end
  add("<p class=\"status\">Written by moco-lua ", escape(tostring(moco.version)), " on ",
      escape(os.date("%Y-%m-%d %H:%M:%S")), ".</p>\n</body>\n</html>\n")
  return table.concat(out)
end

-- Writes the page to path, atomically.
function report.write(path, spec)
  moco._io.write_file(path, report.html(spec))
  return path
end

return report
