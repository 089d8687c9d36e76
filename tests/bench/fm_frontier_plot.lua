-- tests/bench/fm_frontier_plot.lua: the frontier picture of docs/experiments.md ("Longer runs
-- of a smaller encoder"): kNN top-1 of the full quickstart runs (bank: all 60000 training
-- images, all 10000 test images, k 200, T 0.1) against the epochs trained, one series per
-- encoder (seed 0 unless the label says), with standardised raw pixels as a flat line.
--   moco-lua tests/bench/fm_frontier_plot.lua OUT.png
-- The points are the runs measured in docs/experiments.md (each with its command there); a
-- new full run goes into RUNS by hand, since the runs' directories are not kept.
local out = arg[1]
if not out then error("usage: fm_frontier_plot.lua OUT.png", 0) end
local RAW = 82.58
local RUNS = {
  { label = "resnet20, stride-1 stem", epochs = { 3 }, pooled = { 79.57 }, head = { 78.33 } },
  { label = "resnet20, stride-2 stem", epochs = { 6, 15 }, pooled = { 80.84, 82.46 }, head = { 80.28, 82.22 } },
  { label = "resnet8, stride-2 stem", epochs = { 25 }, pooled = { 82.85 }, head = { 83.27 } },
  { label = "resnet8, stride-2 stem, --seed 1", epochs = { 25 }, pooled = { 82.92 }, head = { 83.47 } },
}
local function panel(title, field)
  local series = {}
  for _, r in ipairs(RUNS) do
    series[#series + 1] = { label = r.label, x = r.epochs, y = r[field], markers = true }
  end
  series[#series + 1] = { label = string.format("standardised raw pixels %.2f", RAW), x = { 0, 26 }, y = { RAW, RAW } }
  return { title = title, xlabel = "epochs", ylabel = "kNN top-1 (%)", series = series }
end
moco.plot.figure{ width = 1200, height = 500, rows = 1, cols = 2, path = out,
                  title = "Fashion-MNIST quickstart, full bank and test set: MoCo v2 features against raw pixels",
                  panels = { panel("pooled backbone", "pooled"), panel("head output", "head") } }
print("wrote " .. out)
