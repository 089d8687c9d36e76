-- recipes/ablations.lua: the MoCo paper's comparisons at CPU scale, one named sweep per run:
--   --sweep mechanism   end_to_end, memory_bank, moco (the paper's Fig. 3)
--   --sweep momentum    m of the key encoder: 0, 0.9, 0.99, 0.999 (Table 4; m = 0 fails there)
--   --sweep K           the queue size: 256, 1024, 4096, 8192 (Fig. 3's MoCo curve)
--   --sweep shuffle     shuffling BN on / off (Sec. 3.3: without it the pretext task cheats)
--   --sweep v2          MoCo v2's additions one at a time: v1, +mlp, +aug+, +cos, and all (v2)
-- (--values a,b,c picks other values).  Every run starts from the same seed and options
-- (the recipe's below, then the command line's) and trains for the same number of steps
-- (--budget steps: --epochs over --train-subset images), the same wall time (--budget
-- time: --seconds each, the clock starting after the first step; the learning-rate
-- schedule still spans --epochs) or the same processor time (--budget cpu: --seconds of
-- this process's CPU time, all threads, which other programs on a shared machine do not
-- eat into); then the kNN monitor (k --knn-k, T --knn-t) scores its
-- query encoder: the training images as the bank, the first --test-subset test images as
-- queries.  Every run is checked (moco.MoCo.check_config) before the first one trains.
--
-- Writes into --out (default ablations-out): <sweep>.json and <sweep>.md (one row per
-- value: kNN top-1/top-5, the pretext task's acc@1/acc@5 and loss over the last epoch,
-- steps, wall and CPU seconds of pretrain.run, images/s of the steps' compute), <sweep>.png (kNN and pretext acc@1 against the swept value),
-- and each run's checkpoint under <sweep>/<value>/ (for recipes/lincls.lua).
--   moco-lua recipes/ablations.lua --sweep momentum [--epochs 2 --train-subset 10000 ...]
-- docs/experiments.md has the results and commands; docs/mechanisms.md the mechanisms.
local moco = require "moco"
local pretrain = require "moco.pretrain"
local data = require "moco.data"
local eval = require "moco.eval"
local plot = require "moco.plot"

local opts = pretrain.parse(arg, {
  data = "fashion-mnist", arch = "resnet20", width = 1.0, ["in-channels"] = 1, ["image-size"] = 28, ["batch-size"] = 128,
  lr = 0.06, wd = 5e-4, momentum = 0.9, epochs = 2, cos = true, schedule = {}, ["moco-dim"] = 128,
  ["moco-k"] = 4096, ["moco-m"] = 0.99, ["moco-t"] = 0.1, mlp = true, ["bn-splits"] = 8, ["knn-k"] = 200,
  ["knn-t"] = 0.1, ["print-freq"] = 20, ["train-subset"] = 10000, out = "ablations-out", ["keep-checkpoints"] = 1,
}, "The MoCo paper's ablations at CPU scale: one sweep, a table and a plot", {
  { "sweep", "", "what to sweep: mechanism, momentum, K, shuffle or v2" },
  { "values", "", "the values to sweep, comma-separated (default: the sweep's own)" },
  { "budget", "steps", "steps: every run trains --epochs; time / cpu: every run trains --seconds of wall / CPU time" },
  { "seconds", 120.0, "--budget time or cpu: training seconds per run" },
  { "test-subset", 2000, "kNN queries: the first N test images (0 = all)" },
})
if not opts then return end

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- What each sweep changes.  value(text) parses one --values entry; apply(o, v) sets it.
local function set(o, name, v)
  o[name] = v
  o[(name:gsub("%-", "_"))] = v
end
local function number_of(name, integer)
  return function(text)
    local v = tonumber(text)
    if v ~= nil and integer then v = math.tointeger(v) end
    if v == nil then fail("--sweep %s: '%s' is not %s", name, text, integer and "an integer" or "a number") end
    return v
  end
end
local function one_of(name, known)
  return function(text)
    for _, k in ipairs(known) do if k == text then return text end end
    fail("--sweep %s: unknown value '%s' (known: %s)", name, text, table.concat(known, ", "))
  end
end
local V2_STEPS = { "v1", "mlp", "aug+", "cos", "v2" }
local SWEEPS = {
  mechanism = { values = { "end_to_end", "memory_bank", "moco" }, value = one_of("mechanism", moco.MoCo.MECHANISMS),
                apply = function(o, v) set(o, "mechanism", v) end },
  momentum = { values = { 0, 0.9, 0.99, 0.999 }, value = number_of("momentum"),
               apply = function(o, v) set(o, "moco-m", v) end,
               -- 0, 0.9, 0.99, 0.999 ... evenly: the number of nines
               x = function(v) return v < 1 and -math.log(1 - v, 10) or 6 end, -- m = 1 drawn at 6
               xlabel = "momentum m, as -log10(1 - m): 0 = m 0, 1 = 0.9, 2 = 0.99, 3 = 0.999" },
  K = { values = { 256, 1024, 4096, 8192 }, value = number_of("K", true),
        apply = function(o, v) set(o, "moco-k", v) end,
        x = function(v) return math.log(v, 2) end, xlabel = "queue size K, as log2(K)" },
  shuffle = { values = { "on", "off" }, value = one_of("shuffle", { "on", "off" }),
              apply = function(o, v) set(o, "shuffle", v ~= "off") end },
  v2 = { values = V2_STEPS, value = one_of("v2", V2_STEPS),
         -- v1 is the base: no MLP head, no aug+, the step schedule (x0.1 at 60% and 80% of
         -- the epochs, as 120 and 160 of 200); each value turns one addition on, v2 all.
         apply = function(o, v)
           local all = v == "v2"
           set(o, "mlp", all or v == "mlp")
           set(o, "aug-plus", all or v == "aug+")
           set(o, "cos", all or v == "cos")
           if not o.cos then
             local e = o.epochs
             set(o, "schedule", e >= 2 and { math.max(1, math.floor(0.6 * e + 0.5)), math.max(1, math.floor(0.8 * e + 0.5)) }
                                or {})
           end
         end },
}

local sweep = SWEEPS[opts.sweep]
if opts.sweep == "" then fail("--sweep is required: mechanism, momentum, K, shuffle or v2") end
if not sweep then fail("unknown --sweep '%s' (known: mechanism, momentum, K, shuffle, v2)", opts.sweep) end
local clocks = { time = moco.time, cpu = os.clock }
if opts.budget ~= "steps" and not clocks[opts.budget] then
  fail("--budget must be steps, time or cpu, got '%s'", opts.budget)
end
if opts.budget ~= "steps" and not (opts.seconds > 0) then fail("--seconds must be > 0 with --budget %s", opts.budget) end
if opts.resume ~= "" then fail("a sweep does not resume: run it again (each run's checkpoints are in --out)") end
local values = sweep.values
if opts.values ~= "" then
  values = {}
  for text in opts.values:gmatch("[^,%s]+") do values[#values + 1] = sweep.value(text) end
  if #values == 0 then fail("--values '%s' names no value", opts.values) end
end

-- The options of one run: a copy of the recipe's, with the swept value set.
local function run_options(v)
  local o = {}
  for k, x in pairs(opts) do
    if type(x) == "table" and k:sub(1, 1) ~= "_" then
      local c = {}
      for i, y in ipairs(x) do c[i] = y end
      x = c
    end
    o[k] = x
  end
  sweep.apply(o, v)
  set(o, "out", opts.out ~= "" and string.format("%s/%s/%s", opts.out, opts.sweep, tostring(v)) or "")
  set(o, "knn-every", 0) -- scored once, below, also after a time budget's partial epoch
  return o
end

local train_ds, test_ds, _, test_transform = pretrain.datasets(opts)
if opts["train-subset"] > 0 and opts["train-subset"] < #train_ds then train_ds = data.Subset(train_ds, opts["train-subset"]) end
if not test_ds then fail("--data %s has no test (val/) set for the kNN monitor", opts.data) end
if opts["test-subset"] > 0 and opts["test-subset"] < #test_ds then test_ds = data.Subset(test_ds, opts["test-subset"]) end
local bank_ds = train_ds
if opts["knn-subset"] > 0 and opts["knn-subset"] < #bank_ds then bank_ds = data.Subset(bank_ds, opts["knn-subset"]) end

-- Every run checked before the first trains: a bad value fails now, not an hour in.
for _, v in ipairs(values) do
  local o = run_options(v)
  local ok, err = pcall(moco.MoCo.check_config, pretrain.model_options(o, #train_ds), o["batch-size"])
  if not ok then fail("--sweep %s, value %s: %s", opts.sweep, tostring(v), tostring(err)) end
end

print(string.format("ablations: --sweep %s over %s, %s budget (%s), %d training images, kNN on %d test images",
                    opts.sweep, table.concat((function()
                      local t = {}
                      for i, v in ipairs(values) do t[i] = tostring(v) end
                      return t
                    end)(), ", "), opts.budget,
                    opts.budget ~= "steps" and string.format("%g %s s per run", opts.seconds, opts.budget == "cpu" and "CPU" or "wall")
                      or string.format("%d epochs per run", opts.epochs), #train_ds, #test_ds))

local rows = {}
for _, v in ipairs(values) do
  local o = run_options(v)
  print(string.format("\n== %s = %s ==", opts.sweep, tostring(v)))
  local hooks
  if opts.budget ~= "steps" then
    local clock, t0 = clocks[opts.budget], nil
    hooks = { should_stop = function()
      t0 = t0 or clock()
      return clock() - t0 >= opts.seconds
    end }
  end
  local t_start, cpu_start = moco.time(), os.clock()
  local model, history = pretrain.run(o, hooks)
  local train_seconds, cpu_seconds = moco.time() - t_start, os.clock() - cpu_start
  local steps, images, compute = 0, 0, 0
  for _, r in ipairs(history) do
    steps = steps + r.steps
    images = images + r.sums.count
    compute = compute + r.compute_seconds
  end
  local last = history[#history]
  local top1, top5 = eval.knn_monitor(model:encoder(), bank_ds, test_ds, {
    transform = test_transform, k = opts["knn-k"], T = opts["knn-t"], workers = opts.workers,
  })
  rows[#rows + 1] = {
    value = v, knn_top1 = top1, knn_top5 = top5, pretext_acc1 = last.acc1, pretext_acc5 = last.acc5,
    loss = last.loss, steps = steps, epochs = #history, train_seconds = train_seconds, cpu_seconds = cpu_seconds,
    compute_seconds = compute,
    images_per_s = images / math.max(compute, 1e-9),
  }
  print(string.format("%s = %s: kNN top-1 %.2f%%, pretext acc@1 %.2f%% (last epoch), %d steps in %.0f s",
                      opts.sweep, tostring(v), top1, last.acc1, steps, train_seconds))
end

-- ---------------------------------------------------------------- outputs

-- Under mpirun every rank has the results; rank 0 alone writes them.
if not moco.dist.is_main() then return end

local out = opts.out ~= "" and opts.out or "."
local base = plot.output_path(out, opts.sweep)

local md = {
  string.format("Sweep `%s` (%s budget: %s; %d training images, kNN k=%d T=%g on %d test images; seed %d)", opts.sweep,
                opts.budget, opts.budget ~= "steps" and string.format("%g %s s of training per run", opts.seconds, opts.budget == "cpu" and "CPU" or "wall")
                  or string.format("%d epochs per run", opts.epochs), #train_ds, opts["knn-k"], opts["knn-t"],
                #test_ds, opts.seed),
  "",
  "| " .. opts.sweep .. " | kNN top-1 (%) | kNN top-5 (%) | pretext acc@1 (%) | pretext acc@5 (%) | loss | steps | wall s | CPU s | img/s |",
  "|---|---|---|---|---|---|---|---|---|---|",
}
for _, r in ipairs(rows) do
  md[#md + 1] = string.format("| %s | %.2f | %.2f | %.2f | %.2f | %.4f | %d | %.0f | %.0f | %.0f |", tostring(r.value),
                              r.knn_top1, r.knn_top5, r.pretext_acc1, r.pretext_acc5, r.loss, r.steps, r.train_seconds,
                              r.cpu_seconds, r.images_per_s)
end
local f = assert(io.open(base .. ".md", "w"))
f:write(table.concat(md, "\n"), "\n")
f:close()

local argv = {}
for i = 1, #arg do argv[i] = arg[i] end
local doc = {
  sweep = opts.sweep, budget = opts.budget, seconds = opts.budget ~= "steps" and opts.seconds or nil,
  epochs = opts.epochs, train_images = #train_ds, test_images = #test_ds, knn_k = opts["knn-k"], knn_t = opts["knn-t"],
  command = "moco-lua recipes/ablations.lua " .. table.concat(argv, " "), runs = rows,
}
f = assert(io.open(base .. ".json", "w"))
f:write(moco.json_encode(doc), "\n")
f:close()

-- kNN and the pretext accuracy against the value: a line over numeric values (on the
-- sweep's axis), one marked point per value otherwise (its name in the legend).
local function panel(title, ylabel, field)
  local series = {}
  if sweep.x then
    local x, y = {}, {}
    for i, r in ipairs(rows) do x[i], y[i] = sweep.x(r.value), r[field] end
    series[1] = { label = ylabel, x = x, y = y, markers = true }
  else
    for i, r in ipairs(rows) do
      series[i] = { label = string.format("%d: %s (%.1f)", i, tostring(r.value), r[field]), x = { i }, y = { r[field] },
                    markers = true }
    end
  end
  local categorical = sweep.x == nil
  return { title = title, xlabel = sweep.xlabel or (opts.sweep .. " (run number, names in the legend)"),
           ylabel = ylabel, x_integer = categorical, series = series,
           x_min = categorical and 0.5 or nil, x_max = categorical and #rows + 0.5 or nil }
end
plot.figure{
  width = 1100, height = 450, rows = 1, cols = 2, path = base .. ".png",
  title = string.format("MoCo ablation: %s (%s, %s budget)", opts.sweep, opts.data, opts.budget),
  panels = { panel("kNN accuracy of the query encoder", "kNN top-1 (%)", "knn_top1"),
             panel("Pretext task (instance discrimination), last epoch", "acc@1 (%)", "pretext_acc1") },
}
print("\n" .. table.concat(md, "\n"))
print(string.format("wrote %s.json, %s.md and %s.png", base, base, base))
