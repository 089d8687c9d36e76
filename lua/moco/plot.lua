-- lua/moco/plot.lua: pictures of results (moco.plot), drawn by cairo in C (core/plot.c).
--
--   img = plot.figure{width=900, height=600, rows=1, cols=1, title=, panels={
--           {title=, xlabel=, ylabel=, x_integer=, x_min=, x_max=, empty_text=,
--            series={{label=, x={...}, y={...}, color=0xRRGGBB, markers=}, ...}}, ...}}
--   img = plot.line_chart{title=, xlabel=, ylabel=, series={...}, width=, height=, path=}
--   img, path = plot.training_curves(history, {path=, title=, panels=plot.MOCO_PANELS})
--   img, rows = plot.retrieval_grid{query_dataset=, query_features=, bank_dataset=,
--                                   bank_features=, queries=10 | {positions}, k=8,
--                                   scale=, path=, title=}
--   img = plot.augmentation_pairs{dataset=, transform=T.TwoCrops(aug) | aug, n=8, scale=,
--                                 seed=0, path=, title=}
--   path = plot.output_path(dir, "curves.png")     -- creates dir when missing
-- Every function returns a moco.Image (RGB) and, given `path`, also writes it as PNG (or
-- JPEG by the extension).
--
-- training_curves reads train.fit's history records (epoch, loss, acc1, acc5, lr, knn) by
-- default, or moco.lincls's (plot.LINCLS_PANELS); a field missing from a record leaves a
-- gap.  retrieval_grid shows, for each query image, its k nearest neighbours in feature
-- space (cosine similarity; rows should be L2-normalised, as extract_features returns
-- them), bordered green when the neighbour has the query's label and red when it does not.
local moco = require "moco"
local nn = require "moco.nn"

local plot = {}

local C = moco._plot

local GREEN, RED, QUERY_BLUE = 0x2ca02c, 0xd62728, 0x1f4e99

local function save(img, path)
  if path and path ~= "" then img:save(path) end
  return img, path
end

-- dir .. "/" .. name, creating dir (and its parents) when it does not exist: recipes write
-- their pictures under --out.
function plot.output_path(dir, name)
  if dir == nil or dir == "" or dir == "." then return name end
  moco._io.makedirs(dir)
  return dir:gsub("/+$", "") .. "/" .. name
end

function plot.figure(spec)
  local path = spec.path
  local copy = {}
  for k, v in pairs(spec) do if k ~= "path" then copy[k] = v end end
  return save(C.figure(copy), path)
end

-- One panel filling the picture.
function plot.line_chart(spec)
  spec = nn.check_options("plot.line_chart", spec, {
    title = true, xlabel = true, ylabel = true, series = true, x_integer = true, empty_text = true,
    width = true, height = true, path = true,
  })
  return plot.figure{
    width = spec.width or 800, height = spec.height or 500, path = spec.path,
    panels = { { title = spec.title, xlabel = spec.xlabel, ylabel = spec.ylabel, series = spec.series,
                 x_integer = spec.x_integer, empty_text = spec.empty_text } },
  }
end

-- Panels of the MoCo training curves: each lists {field, legend label} of history records.
plot.MOCO_PANELS = {
  { title = "InfoNCE loss", ylabel = "loss", fields = { { "loss", "train loss (epoch mean)" } } },
  { title = "Contrastive accuracy (instance discrimination)", ylabel = "accuracy (%)",
    fields = { { "acc1", "acc@1" }, { "acc5", "acc@5" } } },
  { title = "kNN accuracy on the test set", ylabel = "top-1 (%)", fields = { { "knn", "kNN top-1 (k=200, T=0.1)" } },
    markers = true, empty_text = "no kNN monitor in this run (--knn-every 0)" },
  { title = "Learning rate", ylabel = "lr", fields = { { "lr", "lr" } } },
}

-- Panels of a linear-probe run (moco.lincls's history).
plot.LINCLS_PANELS = {
  { title = "Cross-entropy", ylabel = "loss", fields = { { "loss", "train" }, { "test_loss", "test" } } },
  { title = "Accuracy", ylabel = "accuracy (%)",
    fields = { { "acc1", "train top-1" }, { "test_top1", "test top-1" }, { "test_top5", "test top-5" } } },
  { title = "Learning rate", ylabel = "lr", fields = { { "lr", "lr" } } },
}

function plot.training_curves(history, opts)
  opts = nn.check_options("plot.training_curves", opts, {
    path = true, title = true, panels = true, width = true, height = true,
  })
  if type(history) ~= "table" then error("plot.training_curves: history must be a list of records", 2) end
  local specs = opts.panels or plot.MOCO_PANELS
  local few = #history <= 30 -- sparse curves read better with a dot per epoch
  -- every panel spans the same epochs, even one with a sparse series (the kNN monitor)
  local first, last
  for _, record in ipairs(history) do
    if type(record.epoch) == "number" then
      first, last = math.min(first or record.epoch, record.epoch), math.max(last or record.epoch, record.epoch)
    end
  end
  local panels = {}
  for i, spec in ipairs(specs) do
    local series = {}
    for _, field in ipairs(spec.fields) do
      local x, y = {}, {}
      for _, record in ipairs(history) do
        local v = record[field[1]]
        if type(v) == "number" and type(record.epoch) == "number" then
          x[#x + 1], y[#y + 1] = record.epoch, v
        end
      end
      if #x > 0 then
        -- the legend gives the last value: the number a reader wants from a curve
        series[#series + 1] = { label = string.format("%s: %.4g", field[2], y[#y]), x = x, y = y,
                                markers = spec.markers or few }
      end
    end
    panels[i] = { title = spec.title, xlabel = "epoch", ylabel = spec.ylabel, x_integer = true, series = series,
                  x_min = first, x_max = last, empty_text = spec.empty_text or "no records" }
  end
  local cols = #panels > 1 and 2 or 1
  local rows = (#panels + cols - 1) // cols
  return plot.figure{
    width = opts.width or 1100, height = opts.height or (rows * 380 + 50), rows = rows, cols = cols,
    title = opts.title, panels = panels, path = opts.path,
  }
end

local function class_name(ds, label)
  local names = ds.classes
  if type(names) == "table" and names[label + 1] then return tostring(names[label + 1]) end
  return tostring(label)
end

-- The first position of each class in ds, in class order, until `count` are found.
local function one_per_class(ds, count)
  local seen, positions = {}, {}
  for i = 1, #ds do
    local label = ds:label(i)
    if not seen[label] then
      seen[label] = true
      positions[#positions + 1] = { i, label }
      if #positions == count then break end
    end
  end
  table.sort(positions, function(a, b) return a[2] < b[2] end)
  for i, p in ipairs(positions) do positions[i] = p[1] end
  return positions
end

function plot.retrieval_grid(opts)
  opts = nn.check_options("plot.retrieval_grid", opts, {
    query_dataset = true, query_features = true, bank_dataset = true, bank_features = true, queries = true,
    k = true, scale = true, path = true, title = true,
  })
  local qds, qf, bds, bf = opts.query_dataset, opts.query_features, opts.bank_dataset, opts.bank_features
  if not (qds and qf and bds and bf) then
    error("plot.retrieval_grid: query_dataset, query_features, bank_dataset and bank_features are required", 2)
  end
  if qf:size(1) ~= #qds or bf:size(1) ~= #bds then
    error(string.format("plot.retrieval_grid: %d query features for %d images, %d bank features for %d images",
                        qf:size(1), #qds, bf:size(1), #bds), 2)
  end
  local k = opts.k or 8
  local positions = opts.queries
  if positions == nil or type(positions) == "number" then
    local count = positions or math.min(10, type(qds.classes) == "table" and #qds.classes or 10)
    positions = one_per_class(qds, count)
  end
  local same_set = qds == bds and qf == bf
  local want = same_set and k + 1 or k -- a query found in its own bank is not its neighbour
  local q = moco.zeros{ #positions, qf:size(2) }
  for i, pos in ipairs(positions) do q:narrow(1, i, 1):copy(qf:narrow(1, pos, 1)) end
  local index, sim = moco._eval.neighbours(q, bf, math.min(want, bf:size(1)))
  local tiles, rows, matches = {}, {}, 0
  local first_image = qds:get(positions[1])
  local w, h = first_image:size()
  local scale = opts.scale or math.max(1, math.floor(96 / math.max(w, h) + 0.5))
  for i, pos in ipairs(positions) do
    local image, label = qds:get(pos)
    tiles[#tiles + 1] = { image = image, border = QUERY_BLUE, caption = class_name(qds, label) }
    local row = { query = pos, label = label, neighbours = {} }
    local irow, srow = index[i], sim[i]
    for j = 1, index:size(2) do
      local b = math.tointeger(irow[j])
      if #row.neighbours < k and not (same_set and b == pos) then
        local nimage, nlabel = bds:get(b)
        local match = nlabel == label
        if match then matches = matches + 1 end
        tiles[#tiles + 1] = { image = nimage, border = match and GREEN or RED, caption = class_name(bds, nlabel) }
        row.neighbours[#row.neighbours + 1] = { index = b, label = nlabel, sim = srow[j], match = match }
      end
    end
    rows[i] = row
  end
  local headers = { "query" }
  for j = 1, k do headers[j + 1] = "#" .. j end
  rows.precision = matches / math.max(1, #positions * k)
  local img = C.tile_grid{
    tiles = tiles, cols = k + 1, scale = scale, border = math.max(2, scale), first_column_gap = 14,
    title = opts.title or string.format("Query and its %d nearest neighbours (green: same class, red: other class)", k),
    headers = headers,
  }
  save(img, opts.path)
  return img, rows
end

-- ------------------------------------------------------------------ augmentations

-- The Normalize that ends a pipeline (to undo it for display), or nil.
local function final_normalize(t)
  if type(t) ~= "table" then return nil end
  if t.kind == "TwoCrops" then return final_normalize(t.transform) end
  if t.kind == "Normalize" then return t end
  if t.kind == "Compose" and t.transforms and #t.transforms > 0 then return final_normalize(t.transforms[#t.transforms]) end
  return nil
end

local function is_tensor(x)
  local mt = getmetatable(x)
  return type(x) == "userdata" and type(mt) == "table" and mt.__name == "moco.Tensor"
end

-- A view (an Image, or a tensor in [0, 1] once the final Normalize is undone) as an Image.
local function view_image(view, norm)
  if not is_tensor(view) then return view end
  if norm then
    local mean, std = {}, {}
    for i = 1, #norm.std do mean[i], std[i] = -norm.mean[i] / norm.std[i], 1 / norm.std[i] end
    view = moco.transforms.F.normalize(view, mean, std) -- x * std + mean
  end
  return moco.image.from_tensor(view:clamp(0, 1))
end

-- For each of the first n samples of a dataset: the image, then the two augmented views
-- of the pair MoCo trains on (query and key), one pair per row, enlarged so that a 28-pixel
-- image shows at 112 pixels.  transform: T.TwoCrops(aug), or aug (applied twice).  The
-- draws come from moco.Generator(seed), so the picture is reproducible.
function plot.augmentation_pairs(opts)
  opts = nn.check_options("plot.augmentation_pairs", opts, {
    dataset = true, transform = true, n = true, scale = true, seed = true, path = true, title = true,
  })
  local ds, t = opts.dataset, opts.transform
  if ds == nil or t == nil then error("plot.augmentation_pairs: dataset and transform are required", 2) end
  local aug = (type(t) == "table" and t.kind == "TwoCrops") and t.transform or t
  local norm = final_normalize(aug)
  local n = math.min(opts.n or 8, #ds)
  if n < 1 then error("plot.augmentation_pairs: the dataset is empty", 2) end
  local gen = moco.Generator(opts.seed or 0)
  local tiles, size = {}, nil
  local F = moco.transforms.F
  for i = 1, n do
    local image, label = ds:get(i)
    local q = view_image(aug(image, gen), norm)
    local k = view_image(aug(image, gen), norm)
    local w, h = q:size()
    size = size or math.max(w, h)
    -- the original at the views' size (shorter side, then the centre), so cells stay small
    local shown = image
    local iw, ih = image:size()
    if iw ~= w or ih ~= h then shown = F.center_crop(F.resize(image, math.min(w, h)), { h, w }) end
    local caption = class_name(ds, label)
    tiles[#tiles + 1] = { image = shown, border = 0x808080, caption = caption }
    tiles[#tiles + 1] = { image = q, border = QUERY_BLUE, caption = "query" }
    tiles[#tiles + 1] = { image = k, border = 0xff7f0e, caption = "key" }
  end
  local scale = opts.scale or math.max(1, math.floor(112 / size + 0.5))
  local img = C.tile_grid{
    tiles = tiles, cols = 3, scale = scale, border = math.max(2, scale), first_column_gap = 14,
    title = opts.title or "Augmentation: each row is one image and the two views of its pair",
    headers = { "image", "view 1", "view 2" },
  }
  save(img, opts.path)
  return img
end

return plot
