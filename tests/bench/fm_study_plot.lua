-- tests/bench/fm_study_plot.lua: the picture of docs/experiments.md from the JSON lines that
-- tests/bench/fm_study.lua prints (one run per line).
--   moco-lua tests/bench/fm_study_plot.lua results.jsonl OUT.png RAW_PIXELS_PERCENT
-- One panel per setting swept around the 1-epoch baseline (runs with epochs = 1 and a
-- 20000-image bank): kNN top-1 of the pooled backbone and of the head output against the
-- value, with the raw-pixel classifier on the same bank and test images as a flat line.
local path, out, raw = arg[1], arg[2], tonumber(arg[3])
if not (path and out and raw) then error("usage: fm_study_plot.lua results.jsonl OUT.png RAW_PIXELS_PERCENT", 0) end
local runs = {}
for line in io.lines(path) do
  local r = moco.json_decode(line)
  if r.epochs == 1 and r.bank == 20000 then runs[#runs + 1] = r end
end
local base = runs[1]
local KNOBS = { { "t", "temperature T" }, { "scale", "crop scale minimum" }, { "k", "queue size K (log2)", math.log },
                { "m", "momentum m, as -log10(1 - m)" }, { "lr", "learning rate" }, { "batch", "batch size" } }
local panels = {}
for _, knob in ipairs(KNOBS) do
  local key, label = knob[1], knob[2]
  local pts = {}
  for _, r in ipairs(runs) do
    local only = true
    for k, v in pairs(r) do
      if base[k] ~= nil and k ~= key and type(v) ~= "table" and not k:match("_s$") and not k:match("^knn")
         and k ~= "loss" and k ~= "acc1" and k ~= "steps" and v ~= base[k] then only = false end
    end
    if only then pts[#pts + 1] = r end
  end
  table.sort(pts, function(a, b) return a[key] < b[key] end)
  local x, yp, yo = {}, {}, {}
  for i, r in ipairs(pts) do
    local v = r[key]
    if key == "k" then v = math.log(v, 2) elseif key == "m" then v = -math.log(1 - v, 10) end
    x[i], yp[i], yo[i] = v, r.knn_pooled, r.knn_output
  end
  panels[#panels + 1] = { title = label, xlabel = label, ylabel = "kNN top-1 (%)", series = {
    { label = "pooled backbone", x = x, y = yp, markers = true },
    { label = "head output", x = x, y = yo, markers = true },
    { label = string.format("raw pixels %.2f", raw), x = { x[1], x[#x] }, y = { raw, raw } },
  } }
end
moco.plot.figure{ width = 1200, height = 720, rows = 2, cols = 3, panels = panels, path = out,
                  title = "Fashion-MNIST, resnet20, 1 epoch: one setting changed from the baseline" }
print("wrote " .. out)
