-- tests/lua/test_checkpoint.lua: safetensors from Lua (moco.save, moco.load, moco.safe_open),
-- MoCo checkpoints (lua/moco/checkpoint.lua), exact resume through moco.pretrain, and
-- interop with torchvision (fixtures by tests/make_fixtures_checkpoint.py).
--
-- "Bitwise" below compares the data sections of two checkpoint files byte for byte: the
-- tensors are laid out by name, so equal bytes mean every tensor (weights, batch-norm
-- statistics, queue, momentum buffer, generator state) is bit-identical.  The resume tests
-- run with one BLAS thread (--threads 1) and two loader workers (the loader's batches do not
-- depend on the worker count).
--
-- Tolerances for PyTorch outputs: max |moco-lua - PyTorch| <= 1e-5 * max |PyTorch| + 1e-6 (float32
-- convolutions summed in another order; a wrong name or layout gives differences of order 1).
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local checkpoint = require "moco.checkpoint"
local pretrain = require "moco.pretrain"
local train = require "moco.train"
local fixture = require "checkpoint_fixture"

local tests = {}

local tmp = check.tmpdir()
local function path(name) return tmp .. "/" .. name end
local read_file, write_file = check.read_file, check.write_file

-- The bytes after the header: every tensor, in the file's (deterministic) order.
local function data_section(p)
  local s = read_file(p)
  local n = string.unpack("<I8", s)
  return s:sub(9 + n), s:sub(9, 8 + n)
end

local maxabs = check.maxabs

-- max |got - want| <= 1e-5 * max |want| + 1e-6, compared in order (see the header)
local function compare_ref(label, got, want) check.compare(label, got, want, 1e-5, { flat = true, atol = 1e-6 }) end

local function tiny_model(opts)
  local o = { arch = "resnet20", width = 0.25, in_channels = 1, dim = 16, K = 64, m = 0.99, T = 0.2,
              mlp = true, bn_splits = 2, lr = 0.05, seed = 3 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return moco.MoCo(o)
end

-- Two training steps on fixed random images, so every state differs from its initial value.
local function train_steps(model, n, seed)
  local g = moco.Generator(seed or 1)
  local last
  for _ = 1, n do
    local im_q, im_k = moco.randn({ 16, 1, 12, 12 }, g), moco.randn({ 16, 1, 12, 12 }, g)
    last = model:step(im_q, im_k)
  end
  return last
end

-- ------------------------------------------------------------------ moco.save / moco.load

function tests.save_load_round_trip()
  local t = { w = moco.randn{ 3, 4 }, ["bn.num_batches_tracked"] = moco.tensor(42), state = moco.tensor{ 0, 7, 255 },
              d = moco.tensor{ 0.1, -2 }, scalar = moco.tensor(1.5), empty = moco.zeros{ 0, 3 } }
  moco.save(path("a.safetensors"), t, { epoch = "3", note = "caf\u{e9}", number = 7 },
            { dtypes = { ["bn.num_batches_tracked"] = "I64", state = "U8", d = "F64" } })
  local back, meta = moco.load(path("a.safetensors"))
  local same = true
  for k, v in pairs(t) do
    local b = back[k]
    if not b or b:numel() ~= v:numel() or (v:numel() > 0 and maxabs(b - v) ~= 0) then same = false end
  end
  check.ok("every dtype round-trips", same)
  check.eq("0-d tensor stays 0-d", back.scalar:dim(), 0)
  check.eq("metadata string", meta.epoch, "3")
  check.eq("metadata UTF-8", meta.note, "caf\u{e9}")
  check.eq("metadata number converted", meta.number, "7")
  local f <close> = moco.safe_open(path("a.safetensors"))
  local dtype, shape = f:info("bn.num_batches_tracked")
  check.eq("I64 stored", dtype, "I64")
  check.eq("0-d shape", #shape, 0)
  check.eq("U8 stored", (f:info("state")), "U8")
  check.eq("keys sorted", table.concat(f:keys(), ","), "bn.num_batches_tracked,d,empty,scalar,state,w")
  check.eq("get_tensor", f:get_tensor("state"):get(3), 255)
  check.raises("unknown tensor named", "no tensor named 'nope'", f.get_tensor, f, "nope")
end

function tests.save_load_errors()
  check.raises("non-tensor value", "'x' is number, expected a moco.Tensor", moco.save, path("b"), { x = 1 })
  check.raises("table metadata", "encode tables with moco.json_encode", moco.save, path("b"), {}, { x = {} })
  check.raises("dtype of a missing tensor", "dtypes names 'y'", moco.save, path("b"), { x = moco.zeros{ 1 } }, nil,
               { dtypes = { y = "I64" } })
  check.raises("unknown dtype", "unknown dtype 'F8'", moco.save, path("b"), { x = moco.zeros{ 1 } }, nil,
               { dtypes = { x = "F8" } })
  check.raises("fraction as I64", "cannot hold", moco.save, path("b"), { x = moco.tensor{ 0.5 } }, nil,
               { dtypes = { x = "I64" } })
  check.raises("unknown option", "unknown option 'dtype'", moco.save, path("b"), {}, nil, { dtype = {} })
  check.raises("an unknown option is named with the known ones", "moco.save: unknown option 'dtypez' (known: dtypes)",
               moco.save, path("c"), { x = moco.zeros{ 1 } }, nil, { dtypez = { x = "I64" } })
  check.raises("a non-string option key is unknown too", "moco.save: unknown option '1'", moco.save, path("c"),
               { x = moco.zeros{ 1 } }, nil, { "I64" })
  check.ok("a refused save writes nothing", io.open(path("c")) == nil)
  check.raises("missing file", path("nothing") .. ": cannot open", moco.load, path("nothing"))
  -- a truncated file and a corrupt header name the file and the problem
  moco.save(path("good.safetensors"), { w = moco.randn{ 8 } })
  local s = read_file(path("good.safetensors"))
  write_file(path("cut.safetensors"), s:sub(1, #s - 5))
  check.raises("truncated file", path("cut.safetensors") .. ": tensor 'w': data_offsets [0, 32] go past the end",
               moco.load, path("cut.safetensors"))
  write_file(path("cut2.safetensors"), s:sub(1, 20))
  check.raises("header cut", "is larger than the rest of the file", moco.load, path("cut2.safetensors"))
  write_file(path("json.safetensors"), s:gsub('"dtype"', '"dtype":'))
  check.raises("malformed JSON", "malformed JSON header", moco.load, path("json.safetensors"))
  write_file(path("dtype.safetensors"), (s:gsub('"F32"', '"F16"')))
  check.raises("unsupported dtype names the tensor", "tensor 'w': dtype F16 is not supported", moco.load,
               path("dtype.safetensors"))
end

function tests.json()
  local v = { lr = 0.03, schedule = { 120, 160 }, mlp = true, name = "x\"y", empty = {}, k = 65536, wd = 1e-4 }
  local text = moco.json_encode(v)
  check.ok("shortest exact floats", text:find('"lr":0.03', 1, true) ~= nil and text:find('"wd":0.0001', 1, true) ~= nil, text)
  local back = moco.json_decode(text)
  check.ok("round trip", back.lr == 0.03 and back.schedule[2] == 160 and back.mlp == true and back.name == "x\"y"
                          and math.type(back.k) == "integer" and back.wd == 1e-4, text)
  check.raises("NaN refused", "no JSON form", moco.json_encode, { x = 0 / 0 })
  check.raises("functions refused", "a function has no JSON form", moco.json_encode, { f = print })
  check.raises("bad JSON", "moco.json_decode", moco.json_decode, "{")
end

-- ------------------------------------------------------------------ MoCo checkpoints

function tests.checkpoint_round_trip()
  local model = tiny_model()
  train_steps(model, 3)
  model.shuffle_generator:normal() -- leave a cached Box-Muller value in the state
  local p = path("ckpt.safetensors")
  checkpoint.save(p, model, { epoch = 2, epoch_step = 1, config = { lr = 0.05, arch = "resnet20" }, knn = 55.5 })
  local ckpt = checkpoint.load(p)
  check.eq("epoch", ckpt.epoch, 2)
  check.eq("epoch_step", ckpt.epoch_step, 1)
  check.eq("global step", ckpt.step, 3)
  check.eq("knn", ckpt.knn, 55.5)
  check.eq("config decoded", ckpt.config.lr, 0.05)
  check.eq("arch metadata", ckpt.metadata.arch, "resnet20")
  check.ok("official names", ckpt.tensors["module.encoder_q.conv1.weight"] ~= nil and ckpt.tensors["module.queue"] ~= nil
                             and ckpt.tensors["module.encoder_k.fc.0.weight"] ~= nil, "names")
  local f <close> = moco.safe_open(p)
  check.eq("queue_ptr is int64 of shape [1] (official)", (f:info("module.queue_ptr")), "I64")
  check.eq("num_batches_tracked is int64", (f:info("module.encoder_q.bn1.num_batches_tracked")), "I64")
  check.eq("generator state is 32 bytes", (f:info("rng.shuffle_generator")), "U8")

  -- The rebuilt model continues exactly as the original does.
  local copy = checkpoint.build_model(p)
  check.eq("queue_ptr restored", copy.queue_ptr, model.queue_ptr)
  check.eq("optimizer steps restored", copy.optimizer.steps, model.optimizer.steps)
  check.eq("generator continues", copy.shuffle_generator:normal(), model.shuffle_generator:normal())
  local la = train_steps(model, 2, 9)
  local lb = train_steps(copy, 2, 9)
  check.eq("same loss after two more steps", lb, la)
  checkpoint.save(path("a2.safetensors"), model, {})
  checkpoint.save(path("b2.safetensors"), copy, {})
  check.ok("bitwise-identical state after two more steps",
           data_section(path("a2.safetensors")) == data_section(path("b2.safetensors")), "differs")

  -- The query encoder alone, for evaluation.
  local enc = checkpoint.load_encoder(p)
  local ref = checkpoint.build_model(p).encoder_q:eval()
  local x = moco.randn({ 4, 1, 12, 12 }, moco.Generator(4))
  check.eq("load_encoder gives a ResNet", enc._class_name, "ResNet")
  local d = maxabs(enc:forward(x) - ref:forward(x))
  check.ok("load_encoder matches encoder_q (eval)", d == 0, "max diff " .. d)
end

function tests.checkpoint_bad_input()
  local model = tiny_model()
  local p = path("c.safetensors")
  checkpoint.save(p, model, { epoch = 1 })
  local other = tiny_model{ arch = "resnet18", cifar_stem = true }
  check.raises("another architecture", "for another model (architecture or size): it holds resnet20", checkpoint.restore, other, p)
  local wider = tiny_model{ width = 0.5 }
  check.raises("shape mismatch names the tensor",
               "tensor 'module.encoder_k.bn1.bias' has shape [4] in the checkpoint but [8] in the model",
               checkpoint.restore, wider, p)
  -- a checkpoint with a tensor removed
  local tensors, meta = moco.load(p)
  tensors["module.queue"] = nil
  moco.save(path("missing.safetensors"), tensors, meta)
  check.raises("missing tensor named", "missing tensors: module.queue", checkpoint.build_model, path("missing.safetensors"))
  local tensors2 = moco.load(p)
  tensors2["module.encoder_q.extra.weight"] = moco.zeros{ 1 }
  moco.save(path("extra.safetensors"), tensors2, meta)
  check.raises("unexpected tensor named", "tensors the model does not have: module.encoder_q.extra.weight",
               checkpoint.build_model, path("extra.safetensors"))
  check.raises("plain weights are not a checkpoint", "not a moco-lua MoCo checkpoint", checkpoint.load, fixture.torchvision)
  check.raises("load_encoder too", "not a moco-lua MoCo checkpoint", checkpoint.load_encoder, fixture.torchvision)
  -- nothing changed by a refused restore
  local before = model.queue:clone()
  model.queue:fill(7)
  pcall(checkpoint.restore, model, path("missing.safetensors"))
  check.eq("a refused restore changes nothing", model.queue:get(1, 1), 7)
  check.ok("(queue was random)", before:get(1, 1) ~= 7)
end

-- Metadata cannot make a loader build what the file does not hold (issue 12: file content
-- never decides an unbounded amount of work).
function tests.metadata_cannot_inflate_the_model()
  local model = tiny_model()
  local p = path("honest.safetensors")
  checkpoint.save(p, model, { epoch = 1 })
  local tensors, meta = moco.load(p)
  local dtypes = {}
  do
    local f <close> = moco.safe_open(p)
    for _, k in ipairs(f:keys()) do local dt = f:info(k); if dt ~= "F32" then dtypes[k] = dt end end
  end
  local function craft(name, change)
    local o = moco.json_decode(meta.model)
    change(o)
    local m = {}
    for k, v in pairs(meta) do m[k] = v end
    m.model = moco.json_encode(o)
    moco.save(path(name), tensors, m, { dtypes = dtypes })
    return path(name)
  end
  local huge_k = craft("huge_k.safetensors", function(o) o.K = 1 << 40 end)
  check.raises("a K the queue does not have is refused before building", "module.queue is [16, 64]",
               checkpoint.build_model, huge_k)
  local wide = craft("wide.safetensors", function(o) o.width = 1000 end)
  check.raises("a width the weights do not have is refused", "module.encoder_q.conv1.weight is [4, 1, 3, 3]",
               checkpoint.build_model, wide)
  check.raises("... by load_encoder too", "module.encoder_q.conv1.weight is [4, 1, 3, 3]", checkpoint.load_encoder, wide)
  local big_dim = craft("dim.safetensors", function(o) o.dim = 1 << 30 end)
  check.raises("a dim the head does not have is refused by load_encoder", "the encoder's last fc is [16, 16]",
               checkpoint.load_encoder, big_dim)
  check.ok("the honest checkpoint still loads", pcall(checkpoint.build_model, p))
end

function tests.check_values_and_fallback()
  local model = tiny_model()
  check.ok("a fresh model is healthy", checkpoint.check_values(model))
  local w = model.encoder_q.conv1.weight
  local keep = w:get(1, 1, 1, 1)
  for _, case in ipairs{ { 0 / 0, "holds NaN" }, { math.huge, "holds an infinite value" },
                         { 2e8, "holds a value of magnitude 2e+08 (the bound is 1e+08)" } } do
    w:set(1, 1, 1, 1, case[1])
    local ok, why = checkpoint.check_values(model)
    check.ok("check_values: " .. case[2], not ok and why:find("tensor 'module.encoder_q.conv1.weight' " .. case[2], 1, true), why)
    check.raises("save refuses it: " .. case[2], "not saved: tensor 'module.encoder_q.conv1.weight'", checkpoint.save,
                 path("refused.safetensors"), model, {})
  end
  check.ok("nothing written by a refused save", io.open(path("refused.safetensors")) == nil)
  w:set(1, 1, 1, 1, keep)
  -- a directory whose newest checkpoint is truncated, and whose next one diverged
  local dir = path("fallback")
  moco._io.makedirs(dir)
  checkpoint.save_epoch(dir, model, { epoch = 0, record = { complete = true }, run_id = "r1", keep = 0 })
  local tensors, meta = moco.load(dir .. "/checkpoint_0000.safetensors")
  tensors["module.queue"]:fill(1e30)
  meta.epoch = "2"
  local dtypes = { ["module.queue_ptr"] = "I64", ["rng.shuffle_generator"] = "U8" }
  for k in pairs(tensors) do if k:match("num_batches_tracked$") then dtypes[k] = "I64" end end
  moco.save(dir .. "/checkpoint_0001.safetensors", tensors, meta, { dtypes = dtypes })
  local good = read_file(dir .. "/checkpoint_0000.safetensors")
  write_file(dir .. "/checkpoint_0002.safetensors", good:sub(1, #good // 2))
  local ckpt, notes = checkpoint.latest_usable(dir, "r1")
  check.eq("the newest usable checkpoint is the oldest one", ckpt and ckpt.path, dir .. "/checkpoint_0000.safetensors")
  check.ok("a note for the truncated one", notes[1] and notes[1]:find("checkpoint_0002.safetensors cannot be resumed", 1, true), notes[1])
  check.ok("a note for the diverged one", notes[2] and notes[2]:find("checkpoint_0001.safetensors cannot be resumed (tensor 'module.queue' holds a value of magnitude 1e+30", 1, true), notes[2])
  check.raises("another run's checkpoint is refused", "belongs to the run r1, not to the run r2", checkpoint.latest_usable, dir, "r2")
end

function tests.epoch_files_rotation_and_best()
  local dir = path("rot")
  moco._io.makedirs(dir)
  local model = tiny_model()
  local best, bests = nil, {}
  local knns = { 10, 30, 20, 25, 40 }
  for epoch = 0, 4 do
    local p, is_best, b = checkpoint.save_epoch(dir, model, {
      epoch = epoch, record = { complete = true, knn = knns[epoch + 1], steps = 4 }, best_knn = best, keep = 2,
    })
    best = b
    if is_best then bests[#bests + 1] = epoch end
  end
  check.eq("best epochs", table.concat(bests, ","), "0,1,4")
  local names = moco._io.listdir(dir)
  check.eq("last two kept, plus the best", table.concat(names, ","),
           "checkpoint_0003.safetensors,checkpoint_0004.safetensors,model_best.safetensors")
  check.eq("model_best is a copy of the best", read_file(dir .. "/model_best.safetensors"),
           read_file(dir .. "/checkpoint_0004.safetensors"))
  check.eq("best kNN recorded", checkpoint.load(dir .. "/checkpoint_0004.safetensors").best_knn, 40)
  -- a mid-epoch (interrupted) file sorts by progress and is the latest
  checkpoint.save_epoch(dir, model, { epoch = 5, record = { complete = false, steps = 3, sums = { loss = 1, acc1 = 2, acc5 = 3, count = 4 } }, keep = 2 })
  check.eq("latest is the interrupted one", checkpoint.latest(dir), dir .. "/checkpoint_0005_step000003.safetensors")
  local c = checkpoint.load(checkpoint.latest(dir))
  check.eq("interrupted epoch resumes inside it", c.epoch .. "/" .. c.epoch_step, "5/3")
  check.eq("its running sums are kept", c.epoch_sums.count, 4)
end

-- ------------------------------------------------------------------ exact resume

local function run_pretrain(args)
  local argv = { [0] = "tests/lua/test_checkpoint.lua" }
  for i, a in ipairs(args) do argv[i] = a end
  local opts = pretrain.parse(argv, {
    data = "fashion-mnist", arch = "resnet20", width = 0.25, ["in-channels"] = 1, ["image-size"] = 28,
    ["batch-size"] = 64, ["moco-k"] = 256, ["moco-dim"] = 32, ["train-subset"] = 512, workers = 2,
    ["print-freq"] = 0, lr = 0.06, ["moco-m"] = 0.99, ["moco-t"] = 0.1, mlp = true, ["bn-splits"] = 2,
    threads = 1, schedule = { 3 }, cos = false,
  })
  local _, history = pretrain.run(opts)
  return history, opts
end

-- 4 epochs == 2 epochs + --resume + 2 epochs: the same losses, bitwise-identical final state.
function tests.resume_is_exact()
  local t0 = moco.time()
  local full = run_pretrain{ "--epochs", "4", "--out", path("full") }
  local first = run_pretrain{ "--epochs", "2", "--out", path("split") }
  local second, opts = run_pretrain{ "--epochs", "4", "--resume", path("split") }
  check.eq("resumed run writes into the directory it resumes", opts.out, path("split"))
  check.ok("the history came back from the checkpoint", #second == 4 and second[1].loss == first[1].loss
                                                         and second[2].loss == first[2].loss, "history differs")
  check.eq("resumed run starts at epoch 2", second[3] and second[3].epoch, 2)
  local losses_equal = #first == 2 and #second == 4
  for e = 1, 4 do
    local r = e <= 2 and first[e] or second[e]
    print(string.format("  epoch %d: loss %.17g (4-epoch run) %.17g (2 + resume + 2)", e - 1, full[e].loss, r and r.loss or 0 / 0))
    losses_equal = losses_equal and r and r.loss == full[e].loss
  end
  check.ok("same epoch losses, bitwise", losses_equal)
  local a, ha = data_section(path("full") .. "/checkpoint_0003.safetensors")
  local b, hb = data_section(path("split") .. "/checkpoint_0003.safetensors")
  check.ok("final weights, queue, optimizer and generator bitwise identical", a == b, "data sections differ")
  local layout_a, layout_b = moco.json_decode(ha), moco.json_decode(hb)
  layout_a.__metadata__, layout_b.__metadata__ = nil, nil
  check.eq("(and laid out the same)", moco.json_encode(layout_a), moco.json_encode(layout_b))
  print(string.format("  three runs in %.1f s", moco.time() - t0))
end

-- Resuming inside an epoch (what an interrupted run does): stop after 3 steps, save, rebuild
-- everything from the file, continue: the same as never stopping.
function tests.resume_inside_an_epoch()
  local ds = moco.data.Subset(moco.data.FashionMNIST{ train = true }, 128)
  local T = moco.transforms
  local aug = T.Compose{ T.RandomResizedCrop(12, { scale = { 0.2, 1 } }), T.ToTensor() }
  local function loader() return moco.data.Loader(ds, { batch_size = 16, transform = T.TwoCrops(aug), workers = 2, seed = 4 }) end
  local quiet = function() end
  local la, lb = loader(), loader()
  local a = tiny_model()
  local ha = train.fit(a, la, { epochs = 2, lr = 0.05, cos = true, print_freq = 0, log = quiet })
  local b = tiny_model()
  local calls = 0
  local hb = train.fit(b, lb, { epochs = 2, lr = 0.05, cos = true, print_freq = 0, log = quiet,
                                should_stop = function() calls = calls + 1 return calls == 12 end })
  check.ok("stopped inside epoch 1", #hb == 2 and hb[2].steps == 3 and not hb[2].complete)
  local p = checkpoint.save_epoch(path("mid"), b, { epoch = 1, record = hb[2], keep = 0 })
  local ckpt = checkpoint.load(p)
  local c = checkpoint.build_model(ckpt)
  local hc = train.fit(c, lb, { epochs = 2, lr = 0.05, cos = true, print_freq = 0, log = quiet,
                                start_epoch = ckpt.epoch, start_step = ckpt.epoch_step, resume_sums = ckpt.epoch_sums })
  check.eq("epoch loss mean kept across the stop", hc[1].loss, ha[2].loss)
  checkpoint.save(path("mid_a.safetensors"), a, {})
  checkpoint.save(path("mid_c.safetensors"), c, {})
  check.ok("state bitwise identical to the uninterrupted run",
           data_section(path("mid_a.safetensors")) == data_section(path("mid_c.safetensors")), "differs")
  la:close()
  lb:close()
end

-- ------------------------------------------------------------------ torchvision interop

function tests.torchvision_into_moco_lua()
  local net = moco.models.resnet18{ width = 0.0625, num_classes = 10 }
  local report = checkpoint.load_torchvision(net, fixture.torchvision)
  check.eq("every tensor loaded", report.loaded, #net:state_dict_keys())
  net:eval()
  local x = moco.load_npy(fixture.dir .. "/input.npy")
  compare_ref("features equal torchvision's", net:features(x), moco.load_npy(fixture.dir .. "/tv_features.npy"))
  compare_ref("logits equal torchvision's", net:forward(x), moco.load_npy(fixture.dir .. "/tv_logits.npy"))
  -- fc of another size is skipped and reported; a backbone tensor of another shape is an error
  local net2 = moco.models.resnet18{ width = 0.0625, num_classes = 7 }
  local r2 = checkpoint.load_torchvision(net2, fixture.torchvision)
  check.eq("fc of another shape skipped", table.concat(r2.skipped, ","), "fc.bias,fc.weight")
  local net3 = moco.models.resnet18{ width = 0.125, num_classes = 10 }
  check.raises("backbone shape mismatch", "tensor 'bn1.bias' has shape [4] in the file but [8] in the model",
               checkpoint.load_torchvision, net3, fixture.torchvision)
  local net4 = moco.models.resnet34{ width = 0.0625, num_classes = 10 }
  check.raises("another architecture", "missing tensor 'layer1.2.bn1.bias'", checkpoint.load_torchvision, net4,
               fixture.torchvision)
end

function tests.export_for_torchvision()
  local model = fixture.make_model()
  local ckpt = path("export_src.safetensors")
  checkpoint.save(ckpt, model, { epoch = 1 })
  local out = path("export.safetensors")
  local ok, how, code = os.execute(string.format("./moco-lua recipes/export.lua '%s' '%s' > /dev/null", ckpt, out))
  check.ok("recipes/export.lua runs", ok, tostring(how) .. " " .. tostring(code))
  local f <close> = moco.safe_open(out)
  local tv <close> = moco.safe_open(fixture.torchvision)
  local want = {}
  for _, k in ipairs(tv:keys()) do if k:sub(1, 3) ~= "fc." then want[#want + 1] = k end end
  check.eq("torchvision's names, no fc", table.concat(f:keys(), ","), table.concat(want, ","))
  local dtypes_ok = true
  for _, k in ipairs(f:keys()) do
    if (f:info(k)) ~= (tv:info(k)) then dtypes_ok = false end
  end
  check.ok("torchvision's dtypes (int64 counters)", dtypes_ok)
  check.eq("format=pt metadata", f:metadata().format, "pt")
  local load = read_file(fixture.dir .. "/export_load.json")
  check.ok("PyTorch reported only fc missing (at fixture time)",
           load:find('"fc.bias"', 1, true) and load:find('"unexpected_keys": %[%]'), load)
  -- PyTorch's features with this export loaded, recorded by the fixture script
  local net = moco.models.resnet18{ width = 0.0625, num_classes = 10 }
  local r = checkpoint.load_torchvision(net, out)
  check.eq("the export loads back (fc missing)", table.concat(r.missing, ","), "fc.bias,fc.weight")
  net:eval()
  local x = moco.load_npy(fixture.dir .. "/input.npy")
  compare_ref("export: features equal PyTorch's on it", net:features(x), moco.load_npy(fixture.dir .. "/export_features.npy"))
  local ok2 = os.execute("./moco-lua recipes/export.lua " .. fixture.torchvision .. " " .. path("x.safetensors") .. " 2> /dev/null")
  check.ok("export of a non-MoCo file fails", not ok2)
end

check.run(tests)
