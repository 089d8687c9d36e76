-- tests/lua/test_eval.lua: moco.eval (kNN, neighbours, accuracy, features), moco.lincls (the
-- linear classification protocol) and moco.plot (pictures).
--
--  * kNN against a brute-force Lua reference on random features (the same predictions),
--    and against the official demo's knn_predict run in PyTorch (tests/make_fixtures_eval.py);
--    the chunked path (a bank too large for one chunk) against query-by-query calls.
--  * A linear probe on raw Fashion-MNIST pixels (standardised, 784-d, from the Debian
--    package) with moco.lincls's classifier code: at least 83% test accuracy (the published
--    logistic-regression baseline is 84.2%).  Settings: precomputed features, SGD lr 0.01,
--    momentum 0.9, batch 256, 10 epochs with x0.1 steps at 6 and 8, weight decay 0
--    (about 84.6%, a few seconds).
--  * The protocol's pieces: the new fc's initialisation, the frozen backbone (BN running
--    statistics untouched), the sanity check catching a change, both modes end to end.
--  * Pictures: the files exist, decode with moco.image.load, have the expected size, and
--    the retrieval grid's borders have the right colours.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local eval = moco.eval
local lincls = moco.lincls
local plot = moco.plot

local FIXTURES = "tests/fixtures/eval/"
local TMP = os.getenv("TMPDIR") or "/tmp"

-- ------------------------------------------------------------------ references in Lua

local function rows_of(t)
  local out = {}
  for i = 1, t:size(1) do out[i] = t[i]:totable() end
  return out
end

local function normalized_randn(n, d, gen)
  return moco.randn({ n, d }, gen):normalize_()
end

-- The demo's knn_predict, by brute force in double precision: classes ranked by score,
-- ties to the smaller class (core/knn.c's documented order).
local function knn_reference(query, bank, labels, k, T, classes)
  local q, b, y = rows_of(query), rows_of(bank), labels:totable()
  local preds = {}
  for i = 1, #q do
    local sims = {}
    for j = 1, #b do
      local s = 0
      for d = 1, #q[i] do s = s + q[i][d] * b[j][d] end
      sims[j] = { s, j }
    end
    table.sort(sims, function(u, v) if u[1] ~= v[1] then return u[1] > v[1] end return u[2] < v[2] end)
    local scores = {}
    for c = 1, classes do scores[c] = 0 end
    for r = 1, math.min(k, #b) do
      local c = math.tointeger(y[sims[r][2]]) + 1
      scores[c] = scores[c] + math.exp(sims[r][1] / T)
    end
    local order = {}
    for c = 1, classes do order[c] = c end
    table.sort(order, function(u, v) if scores[u] ~= scores[v] then return scores[u] > scores[v] end return u < v end)
    preds[i] = { order = order, sims = sims }
  end
  return preds
end

local function labels_tensor(n, classes, gen)
  local t = moco.zeros{ n }
  for i = 1, n do t[i] = gen:random(classes) - 1 end
  return t
end

-- ------------------------------------------------------------------ tests

local tests = {}

function tests.knn_matches_brute_force_reference()
  local gen = moco.Generator(11, 0)
  for _, c in ipairs{ { M = 30, N = 200, D = 8, classes = 6, k = 15, T = 0.1 },
                      { M = 20, N = 50, D = 4, classes = 3, k = 50, T = 0.07 },
                      { M = 10, N = 40, D = 16, classes = 10, k = 200, T = 0.5 } } do
    local query, bank = normalized_randn(c.M, c.D, gen), normalized_randn(c.N, c.D, gen)
    local labels = labels_tensor(c.N, c.classes, gen)
    local topn = math.min(5, c.classes)
    local pred = moco._eval.knn_predict(query, bank, labels, c.k, c.T, c.classes, topn)
    local ref = knn_reference(query, bank, labels, c.k, c.T, c.classes)
    local same, total = 0, 0
    for i = 1, c.M do
      for r = 1, topn do
        total = total + 1
        if pred[i][r] == ref[i].order[r] - 1 then same = same + 1 end
      end
    end
    check.eq(string.format("knn M=%d N=%d k=%d: predictions (top-%d) equal the brute-force reference", c.M, c.N, c.k, topn),
             same, total)
  end
end

function tests.knn_accuracy_counts()
  -- eval.knn's percentages from its own predictions
  local gen = moco.Generator(12, 0)
  local bank, query = normalized_randn(100, 6, gen), normalized_randn(40, 6, gen)
  local bank_labels, test_labels = labels_tensor(100, 4, gen), labels_tensor(40, 4, gen)
  local top1, top5, pred = eval.knn{ train_features = bank, train_labels = bank_labels, test_features = query,
                                     test_labels = test_labels, k = 10, T = 0.1, classes = 4 }
  local c1, c4 = 0, 0
  for i = 1, 40 do
    if pred[i][1] == test_labels[i] then c1 = c1 + 1 end
    for r = 1, 4 do if pred[i][r] == test_labels[i] then c4 = c4 + 1 end end
  end
  check.near("eval.knn top-1 is the share of first predictions that match", top1, 100 * c1 / 40, 1e-9)
  check.near("eval.knn top-5 with 4 classes counts every class", top5, 100 * c4 / 40, 1e-9)
  check.near("eval.knn top-5 with 4 classes is 100%", top5, 100, 1e-9)
end

function tests.knn_matches_pytorch_demo()
  for _, name in ipairs{ "small", "demo", "hot" } do
    local f = function(key) return moco.load_npy(FIXTURES .. name .. "." .. key .. ".npy") end
    local query, bank, labels, params = f("query"), f("bank"), f("bank_labels"), f("params")
    local k, T, classes = math.tointeger(params[1]), params[2], math.tointeger(params[3])
    local want, compare = f("pred"), f("compare")
    local pred = moco._eval.knn_predict(query, bank, labels, k, T, classes, classes)
    local same, total = 0, 0
    for i = 1, want:size(1) do
      for r = 1, classes do
        if compare[i][r] == 1 then
          total = total + 1
          if pred[i][r] == want[i][r] then same = same + 1 end
        end
      end
    end
    check.ok(name .. ": the fixture compares at least half of the ranks", total >= want:numel() / 2,
             string.format("%d of %d", total, want:numel()))
    check.eq(string.format("%s (k=%d, T=%g): ranked classes equal the demo's knn_predict (%d ranks)", name, k, T, total),
             same, total)
    -- top-1 through the public API against the demo's first choice
    local test_labels = moco.zeros{ want:size(1) }
    for i = 1, want:size(1) do test_labels[i] = want[i][1] end
    local top1 = eval.knn{ train_features = bank, train_labels = labels, test_features = query,
                           test_labels = test_labels, k = k, T = T, classes = classes }
    check.near(name .. ": eval.knn top-1 against the demo's predictions is 100%", top1, 100, 1e-9)

    local nn_index, nn_sim, nn_ok = f("nn_index"), f("nn_sim"), f("nn_ok")
    local index, sim = eval.neighbours(query, bank, k)
    local rows, equal, max_diff = 0, 0, 0
    for i = 1, query:size(1) do
      if nn_ok[i] == 1 then
        rows = rows + 1
        local ok = true
        for j = 1, k do
          ok = ok and index[i][j] == nn_index[i][j] + 1
          max_diff = math.max(max_diff, math.abs(sim[i][j] - nn_sim[i][j]))
        end
        if ok then equal = equal + 1 end
      end
    end
    check.eq(string.format("%s: eval.neighbours equals torch.topk's indices (%d rows)", name, rows), equal, rows)
    check.ok(string.format("%s: neighbour similarities match (max diff %.2g)", name, max_diff), max_diff < 1e-5)
  end
end

function tests.knn_chunks_match_single_queries()
  -- 300000 bank rows: core/knn.c holds 64 MiB of similarities, 55 query rows per chunk
  local gen = moco.Generator(13, 0)
  local N, M, D = 300000, 120, 4
  local bank, query = normalized_randn(N, D, gen), normalized_randn(M, D, gen)
  local labels = labels_tensor(N, 7, gen)
  local all = moco._eval.knn_predict(query, bank, labels, 50, 0.1, 7, 3)
  local index_all = eval.neighbours(query, bank, 5)
  local same, same_nn = 0, 0
  for i = 1, M do
    local one = moco._eval.knn_predict(query:narrow(1, i, 1), bank, labels, 50, 0.1, 7, 3)
    local ok = true
    for r = 1, 3 do ok = ok and one[1][r] == all[i][r] end
    if ok then same = same + 1 end
    local idx = eval.neighbours(query:narrow(1, i, 1), bank, 5)
    ok = true
    for r = 1, 5 do ok = ok and idx[1][r] == index_all[i][r] end
    if ok then same_nn = same_nn + 1 end
  end
  check.eq("knn over 3 chunks equals one query at a time", same, M)
  check.eq("neighbours over 3 chunks equal one query at a time", same_nn, M)
end

function tests.neighbours_brute_force_and_errors()
  local gen = moco.Generator(14, 0)
  local bank, query = normalized_randn(60, 5, gen), normalized_randn(7, 5, gen)
  local index, sim = eval.neighbours(query, bank, 6)
  local ref = knn_reference(query, bank, moco.zeros{ 60 }, 6, 1, 1)
  local same = 0
  for i = 1, 7 do
    local ok = true
    for j = 1, 6 do
      ok = ok and index[i][j] == ref[i].sims[j][2] and math.abs(sim[i][j] - ref[i].sims[j][1]) < 1e-5
    end
    if ok then same = same + 1 end
  end
  check.eq("neighbours equal the brute-force order and similarities", same, 7)
  check.raises("neighbours: k larger than the bank is an error", "k = 61", eval.neighbours, query, bank, 61)
  check.raises("neighbours: mismatched widths are an error", "same D", eval.neighbours, moco.zeros{ 2, 4 }, bank, 1)
  check.raises("knn_predict: a label out of range is an error", "outside [0, 3)",
               moco._eval.knn_predict, query, bank, moco.full({ 60 }, 5), 3, 0.1, 3, 1)
end

function tests.accuracy_and_gather()
  local scores = moco.tensor{ { 0.1, 0.9, 0.3 }, { 0.5, 0.5, 0.1 }, { 0.2, 0.3, 0.4 }, { 1, 1, 1 } }
  local labels = moco.tensor{ 1, 1, 0, 2 }
  -- row 2: classes 0 and 1 tie, the smaller index ranks first, so label 1 is second;
  -- row 4: everything ties, label 2 is third
  local c1, c2 = moco._eval.topk_correct(scores, labels, { 1, 2 })
  check.eq("topk_correct: top-1 count with ties ranked by class index", c1, 1)
  check.eq("topk_correct: top-2 count", c2, 2)
  local top1, top5 = eval.accuracy(scores, labels)
  check.near("eval.accuracy: top-1 percent", top1, 25, 1e-9)
  check.near("eval.accuracy: top-5 with 3 classes is 100%", top5, 100, 1e-9)
  check.raises("topk_correct: a label outside the classes is an error", "not a class",
               moco._eval.topk_correct, scores, moco.tensor{ 1, 1, 0, 3 }, { 1 })

  local src = moco.tensor{ { 1, 2 }, { 3, 4 }, { 5, 6 } }
  local g = moco._eval.gather_rows(src, { 9, 3, 1, 2 }, 2, 3)
  local got = {}
  for i, v in ipairs(g:reshape(6):totable()) do got[i] = string.format("%g", v) end
  check.eq("gather_rows takes positions[first..first+count-1]", table.concat(got, ","), "5,6,1,2,3,4")
  check.raises("gather_rows: a position outside the rows is an error", "outside [1, 3]",
               moco._eval.gather_rows, src, { 4 }, 1, 1)
  check.raises("gather_rows: a range past the list is an error", "outside the list",
               moco._eval.gather_rows, src, { 1 }, 1, 2)
end

-- ------------------------------------------------------------------ linear probe

function tests.raw_pixel_linear_probe()
  local t0 = moco.time()
  local train_ds, test_ds = moco.data.FashionMNIST{ train = true }, moco.data.FashionMNIST{ train = false }
  local xtr, ytr = eval.pixel_features(train_ds)
  local xte, yte = eval.pixel_features(test_ds)
  check.eq("pixel_features: one 784-d row per image", table.concat(xtr:shape(), "x"), "60000x784")
  xtr, xte = eval.standardize(xtr, xte)
  local linear = lincls.linear_layer(784, 10, moco.Generator(0, 0))
  local result = lincls.fit_precomputed{
    linear = linear, train_features = xtr, train_labels = ytr, test_features = xte, test_labels = yte,
    lr = 0.01, momentum = 0.9, weight_decay = 0, epochs = 10, schedule = { 6, 8 }, batch_size = 256, log = false,
  }
  local seconds = moco.time() - t0
  print(string.format("# raw-pixel linear probe: test top-1 %.2f%%, top-5 %.2f%% in %.1f s (published logistic regression: 84.2%%)",
                      result.top1, result.top5, seconds))
  check.ok(string.format("linear probe on standardised raw pixels reaches 83%% (got %.2f%%)", result.top1), result.top1 >= 83)
  check.eq("the probe's history has one record per epoch", #result.history, 10)
  check.eq("the probe followed the step schedule (lr at epoch 9)", string.format("%.6g", result.history[10].lr), "0.0001")
  check.eq("the probe reports its mode", result.mode, "precomputed")
end

-- ------------------------------------------------------------------ the protocol

local function tiny_backbone(seed)
  return moco.models.resnet20{ num_classes = 16, in_channels = 1, width = 0.5, generator = moco.Generator(seed, 0) }
end

function tests.prepare_freezes_and_replaces_fc()
  local net = tiny_backbone(1)
  local linear = lincls.prepare(net, 10, moco.Generator(3, 0))
  check.ok("prepare: fc is the new linear layer", net.fc == linear)
  check.eq("prepare: fc maps feature_dim to the classes", table.concat(linear.weight:shape(), "x"), "10x32")
  check.ok("prepare: the backbone is in eval mode", net.training == false and net.layer1.training == false)
  check.ok("prepare: the backbone skips parameter gradients", net.conv1._grad_enabled == false)
  local w = linear.weight
  local std = math.sqrt((w * w):mean() - w:mean() ^ 2)
  check.near("prepare: fc weight ~ N(0, 0.01)", std, 0.01, 0.003)
  check.eq("prepare: fc bias is zero", linear.bias:max() == 0 and (-linear.bias):max() == 0, true)
  local sd = net:state_dict()
  check.ok("prepare: state dict names fc.weight and fc.bias", sd["fc.weight"] ~= nil and sd["fc.bias"] ~= nil)
  check.raises("prepare: classes must be a positive integer", "classes", lincls.prepare, net, 0)
end

-- A classifier checkpoint rebuilds the network it was saved from, a stride-2 stem too (a
-- stride-1 rebuild would load the same tensors and compute other features).
function tests.classifier_checkpoint_keeps_the_stem_stride()
  local net = moco.models.resnet20{ num_classes = 16, in_channels = 1, width = 0.5, stem_stride = 2,
                                    generator = moco.Generator(4, 0) }
  lincls.prepare(net, 10, moco.Generator(5, 0))
  local path = check.tmpdir() .. "/classifier.safetensors"
  lincls.save_checkpoint(path, net, nil, {
    epoch = 1, model = { arch = "resnet20", in_channels = 1, cifar_stem = false, width = 0.5, classes = 10, stem_stride = 2 },
  })
  local back = lincls.load_checkpoint(path).backbone
  check.eq("the reloaded stem has stride 2", back.conv1.stride, 2)
  local x = moco.randn({ 4, 1, 28, 28 }, moco.Generator(6, 0))
  net:eval()
  local want = net:forward(x):clone()
  check.eq("the reloaded classifier computes the same logits", check.maxabs(back:forward(x) - want), 0)
end

function tests.sanity_check_catches_changes()
  local net = tiny_backbone(2)
  lincls.prepare(net, 4)
  local snap = lincls.snapshot(net)
  check.ok("snapshot leaves fc out", snap["fc.weight"] == nil and snap["conv1.weight"] ~= nil)
  net.fc.weight:fill(1) -- fc may change
  check.ok("sanity check passes when only fc changed", lincls.sanity_check(net, snap))
  net.layer1["0"].bn1.running_mean[1] = 0.5
  check.raises("sanity check names a changed BN buffer", "layer1.0.bn1.running_mean", lincls.sanity_check, net, snap)
end

function tests.protocol_end_to_end_both_modes()
  local T = moco.transforms
  local train_ds = moco.data.Subset(moco.data.FashionMNIST{ train = true }, 300)
  local test_ds = moco.data.Subset(moco.data.FashionMNIST{ train = false }, 200)
  local test_t = T.Compose{ T.ToTensor(), T.Normalize({ 0.2860 }, { 0.3530 }) }
  local train_t = T.Compose{ T.RandomResizedCrop(28, { scale = { 0.2, 1 } }), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize({ 0.2860 }, { 0.3530 }) }
  for _, precomputed in ipairs{ true, false } do
    local net = tiny_backbone(5)
    local before = net.layer2["0"].bn1.running_var:clone()
    local lines = {}
    local result = lincls.run{
      backbone = net, train_dataset = train_ds, test_dataset = test_ds, train_transform = train_t,
      test_transform = test_t, precomputed = precomputed, classes = 10, workers = 1, epochs = 2, schedule = { 1 },
      lr = 0.1, batch_size = 64, log = function(s) lines[#lines + 1] = s end,
    }
    local mode = precomputed and "precomputed" or "augmented"
    check.eq(mode .. ": the result names the mode", result.mode, mode)
    check.ok(mode .. ": the log says which mode ran", table.concat(lines, "\n"):find("mode " .. mode, 1, true) ~= nil)
    check.ok(mode .. ": the sanity check ran and passed", lines[#lines] == "=> sanity check passed.")
    check.ok(mode .. ": top-1 and top-5 are percentages", result.top1 >= 0 and result.top1 <= 100 and result.top5 >= result.top1)
    check.eq(mode .. ": two epochs recorded", #result.history, 2)
    local d = net.layer2["0"].bn1.running_var - before
    check.ok(mode .. ": BN running statistics untouched", (d * d):max() == 0)
  end
end

function tests.feature_cache()
  local ds = moco.data.Subset(moco.data.FashionMNIST{ train = false }, 64)
  local net = tiny_backbone(6)
  local path = TMP .. "/moco-test-eval-cache.safetensors"
  os.remove(path)
  if type(moco.save) ~= "function" then
    check.raises("extract_features: cache without moco.save is a clear error", "moco.save",
                 eval.extract_features, net, ds, { cache = path })
    return
  end
  local a = eval.extract_features(net, ds, { cache = path, workers = 1 })
  local f = io.open(path, "rb")
  check.ok("extract_features: the cache file was written", f ~= nil)
  if f then f:close() end
  net.conv1.weight:zero() -- a cache hit must not run the network
  local b = eval.extract_features(net, ds, { cache = path, workers = 1 })
  local d = a - b
  check.ok("extract_features: a cache hit returns the same features", (d * d):max() == 0)
  local c = eval.extract_features(net, ds, { cache = path, workers = 1, features = "pooled" })
  check.eq("extract_features: another feature kind recomputes", c:size(2), 32)
  os.remove(path)
end

-- ------------------------------------------------------------------ pictures

function tests.training_curves_png()
  local history = {}
  for e = 0, 9 do
    history[#history + 1] = { epoch = e, loss = 8 - 0.5 * e, acc1 = 5 * e, acc5 = 8 * e, lr = 0.03 * (1 - e / 10),
                              knn = e % 3 == 2 and 60 + e or nil }
  end
  local path = TMP .. "/moco-test-curves.png"
  os.remove(path)
  local img = plot.training_curves(history, { path = path, title = "test curves" })
  check.eq("training_curves returns the picture", tostring(img), "moco.Image 1100x810 RGB")
  local back = moco.image.load(path)
  check.eq("training_curves PNG decodes with the expected size", string.format("%dx%d", back:size()), "1100x810")
  -- the picture is not blank: the first curve's colour (tab10 blue) appears
  local blue = false
  for y = 100, 300, 2 do
    for x = 60, 500, 2 do
      local r, g, b = back:pixel(x, y)
      if r == 0x1f and g == 0x77 and b == 0xb4 then blue = true break end
    end
    if blue then break end
  end
  check.ok("training_curves draws the loss curve", blue)
  local lincls_img = plot.training_curves({ { epoch = 0, loss = 1, test_loss = 1.2, acc1 = 50, test_top1 = 48, test_top5 = 90, lr = 30 } },
                                          { panels = plot.LINCLS_PANELS })
  check.eq("lincls curves: three panels in two rows", string.format("%dx%d", lincls_img:size()), "1100x810")
  os.remove(path)
end

function tests.retrieval_grid_png()
  local ds = moco.data.Subset(moco.data.FashionMNIST{ train = false }, 200)
  local x = eval.pixel_features(ds)
  x = eval.standardize(x)
  x:normalize_()
  local path = TMP .. "/moco-test-neighbours.png"
  os.remove(path)
  local img, rows = plot.retrieval_grid{ query_dataset = ds, query_features = x, bank_dataset = ds, bank_features = x,
                                          queries = { 1, 2, 3 }, k = 4, path = path, title = "t" }
  -- cells of 28 * 3 + 2 * 3 = 90 pixels; 5 columns, 3 rows (layout of core/plot.c)
  local want_w, want_h = 2 * 10 + 5 * 90 + 4 * 6 + 14, 2 * 10 + 30 + 20 + 3 * (90 + 18) + 2 * 6
  local back = moco.image.load(path)
  check.eq("retrieval grid PNG decodes with the expected size", string.format("%dx%d", back:size()),
           string.format("%dx%d", want_w, want_h))
  check.eq("retrieval_grid returns the same picture", string.format("%dx%d", img:size()), string.format("%dx%d", want_w, want_h))
  check.eq("three query rows of four neighbours", #rows .. "x" .. #rows[1].neighbours, "3x4")
  local self_found = false
  for _, row in ipairs(rows) do
    for _, n in ipairs(row.neighbours) do self_found = self_found or n.index == row.query end
  end
  check.ok("a query is not its own neighbour when bank = queries", not self_found)
  -- border colours: the query (blue), then green/red by label match (top-left pixel of each cell)
  local grid_top = 10 + 30 + 20
  local function cell_color(r, c)
    local cx = 10 + c * (90 + 6) + (c > 0 and 14 or 0)
    local cy = grid_top + r * (90 + 18 + 6)
    local red, green, blue = back:pixel(cx + 2, cy + 2) -- 1-based pixel coordinates, inside the border
    return red * 65536 + green * 256 + blue
  end
  local right = cell_color(0, 0) == 0x1f4e99
  for r = 0, 2 do
    for c = 1, 4 do
      local want = rows[r + 1].neighbours[c].match and 0x2ca02c or 0xd62728
      right = right and cell_color(r, c) == want
    end
  end
  check.ok("retrieval grid borders: blue query, green same class, red other class", right)
  check.ok("retrieval_grid reports the share of matching neighbours", rows.precision >= 0 and rows.precision <= 1)
  os.remove(path)
end

function tests.plot_errors_are_errors()
  check.raises("figure: x and y lengths must agree", "x has 2 entries but y has 1",
               plot.figure, { panels = { { series = { { x = { 1, 2 }, y = { 1 } } } } } })
  check.raises("figure: y entries must be numbers", "expected a number",
               plot.figure, { panels = { { series = { { x = { 1 }, y = { "a" } } } } } })
  check.raises("figure: more panels than the grid holds", "do not fit",
               plot.figure, { rows = 1, cols = 1, panels = { {}, {} } })
  check.raises("figure: a tiny picture is refused", "width", plot.figure, { width = 10, panels = {} })
  check.raises("tile_grid: a tile's image must be a moco.Image", "expected a moco.Image",
               moco._plot.tile_grid, { tiles = { { image = 3 } } })
  local img = plot.line_chart{ series = { { x = { 0, 1 }, y = { 0 / 0, 0 / 0 } } }, empty_text = "nothing", width = 200, height = 150 }
  check.eq("line_chart with only gaps still draws", tostring(img), "moco.Image 200x150 RGB")
end

check.run(tests)
