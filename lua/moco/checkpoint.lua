-- lua/moco/checkpoint.lua: MoCo checkpoints in safetensors, exact resume, and weights in
-- torchvision's names (moco.checkpoint).
--
--   checkpoint.save(path, model, {epoch=, epoch_step=, config=opts, knn=, best_knn=, ...})
--   ckpt = checkpoint.load(path)     -> {tensors=, metadata=, config=, model_options=, epoch=,
--                                        epoch_step=, step=, knn=, best_knn=, arch=, path=}
--   model = checkpoint.build_model(ckpt | path)   -- a moco.MoCo with every state restored
--   checkpoint.restore(model, ckpt)               -- into an existing model (what --resume does)
--   encoder = checkpoint.load_encoder(path)       -- the query encoder (a moco.models ResNet)
--   checkpoint.export_backbone(ckpt_path, out)    -- encoder_q, torchvision names, no fc
--   report = checkpoint.load_torchvision(net, path [, {strict=, prefix=}])
--   path, is_best = checkpoint.save_epoch(dir, model, record_info)   -- names, last N, best
--   ok, why = checkpoint.check_values(model | tensors)  -- finite, |x| < checkpoint.MAX_ABS
--   ckpt, notes = checkpoint.latest_usable(dir, run_id)  -- newest loadable, else the previous
--
-- What a checkpoint holds (names follow the official code's state dict, module.* as
-- DistributedDataParallel writes them; our extras under optimizer.* and rng.*):
--   module.encoder_q.<torchvision name>  every parameter and buffer of the query encoder
--   module.encoder_k.<torchvision name>  the key encoder's
--   module.queue (dim, K), module.queue_ptr (1) I64
--                                        (mechanism "moco"; "memory_bank" has module.memory
--                                        (bank_size, dim) instead, "end_to_end" neither and
--                                        no encoder_k: whatever model:state_dict() holds)
--   *.num_batches_tracked                I64 (PyTorch's dtype)
--   optimizer.momentum_buffer (P)        SGD's buffer over encoder_q's parameters, flat, in
--                                        named_parameters() order (absent with momentum 0)
--   rng.shuffle_generator (32) U8        the key-shuffle generator's state: 4 little-endian
--                                        uint64 words (PCG state, stream, cached normal)
-- and as metadata (strings): format, arch, epoch (the next epoch to run, 0-based, as the
-- official 'epoch' field), epoch_step (batches of that epoch already done; 0 at an epoch
-- boundary), step (global step), optimizer (JSON: steps and hyper-parameters), model (JSON:
-- the moco.MoCo options), config (JSON: the recipe's options), loader (JSON: seed, epoch,
-- position), epoch_sums (JSON: the running sums of a partly done epoch), knn, best_knn,
-- blas_threads (results are bitwise reproducible for a given count), ranks (the MPI ranks
-- of the run, 1 for one process), recipe (the script),
-- run_id (the run directory's, see moco.rundir), history (JSON: train.fit's records of the
-- epochs so far, so the curves survive a resume), created_by.
--
-- Nothing in a checkpoint decides a path, a deletion or an amount of work: `config` is
-- read for settings only (moco.pretrain takes paths from the command line or the run
-- directory), and a checkpoint is written only after check_values found every weight,
-- buffer, queue entry and momentum value finite and below MAX_ABS in magnitude (a diverged
-- run's weights of 1e28 are refused, so "the last good checkpoint" is good).
--
-- The loader needs no state of its own: a batch depends only on (seed, epoch, position)
-- (lua/moco/data.lua), so epoch + epoch_step + the seed in config put it back exactly.
-- The model's other generators (initialisation, queue) are used once, at construction.
local moco = require "moco"
local util = require "moco.util"
local models = require "moco.models"
local nn = require "moco.nn"
local builder = require "moco.builder"
local rundir = require "moco.rundir"

local checkpoint = {}

-- PyTorch's own files (torch.save: official MoCo checkpoints, torchvision's resnet50-*.pth),
-- told by their content, are read by moco.torch (lua/moco/torch.lua); the rest is safetensors.
local function open_weights(path)
  local torchfile = require "moco.torch"
  if torchfile.is_torch_file(path) then return torchfile.open(path) end
  return moco.safe_open(path)
end

checkpoint.FORMAT = "moco-lua checkpoint 1"
local BEST_NAME = "model_best.safetensors"
-- Weights, statistics and the queue of a healthy run stay far below this (|w| ~ 1, BN
-- running variances ~ 100); a diverged run passes it long before float32 overflows.
checkpoint.MAX_ABS = 1e8

local function shape_str(t) return "[" .. table.concat(t:shape(), ", ") .. "]" end

local function same_shape(a, b)
  local x, y = a:shape(), b:shape()
  if #x ~= #y then return false end
  for i = 1, #x do if x[i] ~= y[i] then return false end end
  return true
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function is_integer_buffer(name)
  return name:match("num_batches_tracked$") ~= nil
end

-- A generator's state as 32 bytes (a U8 tensor) and back: exact, whatever float32 can hold.
local function generator_bytes(g)
  local s = g:get_state()
  local bytes = string.pack("<i8i8i8i8", s[1], s[2], s[3], s[4])
  local t = {}
  for i = 1, #bytes do t[i] = bytes:byte(i) end
  return moco.tensor(t)
end

local function set_generator_bytes(g, t, where)
  if t:numel() ~= 32 then error(string.format("%s: rng.shuffle_generator has %d bytes, expected 32", where, t:numel()), 3) end
  local chars = {}
  local flat = t:reshape(32)
  for i = 1, 32 do
    local b = math.tointeger(flat:get(i))
    if b == nil or b < 0 or b > 255 then
      error(string.format("%s: rng.shuffle_generator byte %d is %s, not in 0..255", where, i, tostring(flat:get(i))), 3)
    end
    chars[i] = string.char(b)
  end
  local w1, w2, w3, w4 = string.unpack("<i8i8i8i8", table.concat(chars))
  g:set_state{ w1, w2, w3, w4 }
end

-- The recipe options worth keeping: the spec's names when opts came from moco.recipe
-- (without the options that name files or directories: those belong to the machine, and
-- a checkpoint never chooses a path), else every plain field.
local function config_of(opts)
  if opts == nil then return nil end
  local out = {}
  if opts._spec then
    for _, o in ipairs(opts._spec) do
      if not o.path then out[o[1]] = opts[o[1]] end
    end
  else
    for k, v in pairs(opts) do
      local tv = type(v)
      if type(k) == "string" and k:sub(1, 1) ~= "_" and (tv == "string" or tv == "number" or tv == "boolean" or tv == "table") then
        out[k] = v
      end
    end
  end
  return out
end

-- The moco.MoCo options that rebuild this model (resolved defaults included).
local function model_options(model)
  local o = {}
  for k, v in pairs(model.options or {}) do o[k] = v end
  o.arch, o.dim, o.K, o.m, o.T, o.mlp = model.arch, model.dim, model.K, model.m, model.T, model.mlp
  o.bn_splits, o.symmetric, o.shuffle, o.seed = model.bn_splits, model.symmetric, model.shuffle, model.seed
  o.mechanism = model.mechanism
  return o
end

local function check_model(model, fn)
  if type(model) ~= "table" or not model.encoder_q or type(model.state_dict) ~= "function" then
    error(string.format("checkpoint.%s: expected a moco.MoCo model, got %s", fn, type(model)), 3)
  end
end

-- ------------------------------------------------------------------ value checks

local CHUNK = 1 << 20

-- The largest |x| of t (NaN when t holds a NaN), in chunks so that no copy of a large
-- tensor is ever made.
local function max_abs(t)
  local n = t:numel()
  if n == 0 then return 0 end
  local flat = t:dim() == 1 and t or t:reshape(n)
  local m = 0
  for start = 1, n, CHUNK do
    local c = flat:narrow(1, start, math.min(CHUNK, n - start + 1))
    local hi = c:max()
    local negated <close> = c:neg()
    local lo = negated:max()
    if hi ~= hi or lo ~= lo then return 0 / 0 end
    m = math.max(m, hi, lo)
  end
  return m
end
checkpoint.max_abs = max_abs

-- The tensors a checkpoint of model holds, by their checkpoint names.
local function model_tensors(model)
  local t = {}
  for name, v in pairs(model:state_dict()) do
    if name ~= "queue_ptr" then t["module." .. name] = v end
  end
  local opt = model.optimizer
  if opt and opt.momentum_buffer then t["optimizer.momentum_buffer"] = opt.momentum_buffer end
  return t
end

-- Whether every float tensor of a model (or of a name -> tensor table, as checkpoint.load
-- returns) is finite and below MAX_ABS in magnitude.  Returns true, or false and a
-- sentence naming the first bad tensor.  Integer counters (num_batches_tracked, queue_ptr)
-- and the generator's bytes are not weights and are skipped.
function checkpoint.check_values(src)
  local tensors = (type(src) == "table" and src.encoder_q) and model_tensors(src) or src
  for _, name in ipairs(sorted_keys(tensors)) do
    if not (is_integer_buffer(name) or name == "module.queue_ptr" or name:match("^rng%.")) then
      local m = max_abs(tensors[name])
      if m ~= m then return false, string.format("tensor '%s' holds NaN", name) end
      if m == math.huge then return false, string.format("tensor '%s' holds an infinite value", name) end
      if m >= checkpoint.MAX_ABS then
        return false, string.format("tensor '%s' holds a value of magnitude %.3g (the bound is %g)", name, m,
                                    checkpoint.MAX_ABS)
      end
    end
  end
  return true
end

-- ------------------------------------------------------------------ save

local save_fields = {
  epoch = true, epoch_step = true, config = true, knn = true, best_knn = true, optimizer = true,
  sums = true, loader = true, recipe = true, run_id = true, history = true,
}

-- History records as a checkpoint stores them: the finite numbers and booleans of each
-- (epoch, loss, acc1, lr, knn, complete ...), not the running sums or other tables.
function checkpoint.plain_records(history)
  local out = {}
  for i, r in ipairs(history or {}) do
    local t = {}
    for k, v in pairs(r) do
      if type(k) == "string" and (type(v) == "boolean" or (type(v) == "number" and util.is_finite(v))) then
        t[k] = v
      end
    end
    out[i] = t
  end
  return out
end

-- info: epoch (the next epoch to run), epoch_step (batches of it done, default 0), config
-- (recipe options), knn, best_knn, optimizer (default model.optimizer), sums (the running
-- sums of a partly done epoch), loader ({seed=, epoch=, position=}), recipe (script path).
function checkpoint.save(path, model, info)
  check_model(model, "save")
  info = nn.check_options("checkpoint.save", info, save_fields)
  if type(path) ~= "string" then error("checkpoint.save: path must be a string, got " .. type(path), 2) end
  local healthy, why = checkpoint.check_values(model)
  if not healthy then
    error(string.format("%s: not saved: %s; the model has diverged (every weight must be finite and below %g)",
                        path, why, checkpoint.MAX_ABS), 2)
  end
  local tensors, dtypes = {}, {}
  local function add(name, t, dtype)
    tensors[name] = t
    if dtype then dtypes[name] = dtype end
  end
  for name, t in pairs(model:state_dict()) do
    if name == "queue_ptr" then -- the official 1-element int64 buffer
      add("module.queue_ptr", moco.tensor{ model.queue_ptr }, "I64")
    else
      add("module." .. name, t, is_integer_buffer(name) and "I64" or nil)
    end
  end
  local opt = info.optimizer or model.optimizer
  if opt and opt.momentum_buffer then add("optimizer.momentum_buffer", opt.momentum_buffer) end
  add("rng.shuffle_generator", generator_bytes(model.shuffle_generator), "U8")

  local epoch = info.epoch or 0
  local meta = {
    format = checkpoint.FORMAT,
    created_by = "moco-lua " .. tostring(moco.version),
    arch = model.arch,
    epoch = tostring(math.tointeger(epoch) or epoch),
    epoch_step = tostring(info.epoch_step or 0),
    step = tostring(model.steps or 0),
    model = moco.json_encode(model_options(model)),
    -- Results are bitwise reproducible for one BLAS thread count; a resume can warn.
    blas_threads = tostring(moco.get_num_threads()),
    -- the MPI ranks that trained it (bn_splits in model counts the groups per rank)
    ranks = tostring(require("moco.dist").size()),
  }
  if opt then
    local c = opt.config or {}
    meta.optimizer = moco.json_encode{
      steps = opt.steps or 0, lr = c.lr, momentum = c.momentum, dampening = c.dampening,
      weight_decay = c.weight_decay, nesterov = c.nesterov,
    }
  end
  if info.config then meta.config = moco.json_encode(config_of(info.config)) end
  if info.knn then meta.knn = string.format("%.17g", info.knn) end
  if info.best_knn then meta.best_knn = string.format("%.17g", info.best_knn) end
  if info.sums then meta.epoch_sums = moco.json_encode(info.sums) end
  if info.loader then meta.loader = moco.json_encode(info.loader) end
  if info.recipe then meta.recipe = info.recipe end
  if info.run_id then meta.run_id = info.run_id end
  if info.history then meta.history = moco.json_encode(checkpoint.plain_records(info.history)) end
  moco.save(path, tensors, meta, { dtypes = dtypes })
  return path
end

-- ------------------------------------------------------------------ load

local function decode(path, meta, key)
  local text = meta[key]
  if text == nil then return nil end
  local ok, value = pcall(moco.json_decode, text)
  if not ok then error(string.format("%s: metadata '%s' is not valid JSON: %s", path, key, value), 3) end
  return value
end

local function integer_field(path, meta, key, default)
  local text = meta[key]
  if text == nil then return default end
  local v = math.tointeger(tonumber(text))
  if v == nil or v < 0 then error(string.format("%s: metadata '%s' = '%s' is not a non-negative integer", path, key, text), 3) end
  return v
end

local function number_field(path, meta, key)
  local text = meta[key]
  if text == nil then return nil end
  local v = tonumber(text)
  if v == nil then error(string.format("%s: metadata '%s' = '%s' is not a number", path, key, text), 3) end
  return v
end

-- Reads a checkpoint written by checkpoint.save (every tensor in memory).
function checkpoint.load(path)
  if type(path) ~= "string" then error("checkpoint.load: path must be a string, got " .. type(path), 2) end
  local tensors, meta = moco.load(path)
  if meta.format ~= checkpoint.FORMAT then
    error(string.format("%s: not a moco-lua MoCo checkpoint (metadata 'format' is %s, expected '%s'); "
                        .. "for plain weights use moco.load or checkpoint.load_torchvision", path,
                        meta.format and ("'" .. meta.format .. "'") or "absent", checkpoint.FORMAT), 2)
  end
  local ckpt = {
    path = path, tensors = tensors, metadata = meta, arch = meta.arch,
    epoch = integer_field(path, meta, "epoch", 0), epoch_step = integer_field(path, meta, "epoch_step", 0),
    step = integer_field(path, meta, "step", 0),
    knn = number_field(path, meta, "knn"), best_knn = number_field(path, meta, "best_knn"),
    config = decode(path, meta, "config"), model_options = decode(path, meta, "model"),
    optimizer = decode(path, meta, "optimizer"), epoch_sums = decode(path, meta, "epoch_sums"),
    loader = decode(path, meta, "loader"), recipe = meta.recipe, run_id = meta.run_id,
    history = decode(path, meta, "history"),
    blas_threads = integer_field(path, meta, "blas_threads", nil),
    ranks = integer_field(path, meta, "ranks", 1),
  }
  if ckpt.history ~= nil and type(ckpt.history) ~= "table" then
    error(path .. ": metadata 'history' is not a list of records", 2)
  end
  if type(ckpt.model_options) ~= "table" or type(ckpt.model_options.arch) ~= "string" then
    error(path .. ": the checkpoint has no usable 'model' metadata (the moco.MoCo options)", 2)
  end
  return ckpt
end

local function as_checkpoint(src, fn)
  if type(src) == "string" then return checkpoint.load(src) end
  if type(src) == "table" and src.tensors and src.metadata then return src end
  error(string.format("checkpoint.%s: expected a path or a table from checkpoint.load, got %s", fn, type(src)), 3)
end

-- The model's description, for messages: "resnet18 (dim 128, K 4096, mlp)".
local function describe(o)
  return string.format("%s (%sdim %s, K %s%s%s)", tostring(o.arch),
                       (o.mechanism and o.mechanism ~= "moco") and (o.mechanism .. ", ") or "", tostring(o.dim),
                       tostring(o.K), o.mlp and ", mlp" or "", (o.width and o.width ~= 1) and (", width " .. o.width) or "")
end

-- Copies every state of ckpt into model (a moco.MoCo of the same architecture), after
-- checking all of it: a checkpoint of another architecture, a missing tensor or a shape
-- that differs is an error naming the file and the tensor, and nothing is changed then.
function checkpoint.restore(model, ckpt)
  check_model(model, "restore")
  ckpt = as_checkpoint(ckpt, "restore")
  local path, T = ckpt.path or "checkpoint", ckpt.tensors
  local o = ckpt.model_options
  for _, key in ipairs{ "mechanism", "arch", "dim", "K", "mlp" } do
    if o[key] ~= nil and o[key] ~= model[key] then
      error(string.format("%s: the checkpoint is for another model (architecture or size): it holds %s, the model is %s",
                          path, describe(o), describe(model_options(model))), 2)
    end
  end
  -- Every tensor the model has, with its shape; then nothing the model does not know.
  local wanted = model_tensors(model)
  local has_queue = model.queue_ptr ~= nil
  local opt = model.optimizer
  local missing = {}
  for _, name in ipairs(sorted_keys(wanted)) do
    local src = T[name]
    if src == nil then
      missing[#missing + 1] = name
    elseif not same_shape(src, wanted[name]) then
      error(string.format("%s: tensor '%s' has shape %s in the checkpoint but %s in the model (%s): "
                          .. "another architecture or width?", path, name, shape_str(src), shape_str(wanted[name]),
                          describe(model_options(model))), 2)
    end
  end
  if has_queue and T["module.queue_ptr"] == nil then missing[#missing + 1] = "module.queue_ptr" end
  if T["rng.shuffle_generator"] == nil then missing[#missing + 1] = "rng.shuffle_generator" end
  if #missing > 0 then
    local shown = table.concat(missing, ", ", 1, math.min(#missing, 8))
    error(string.format("%s: missing tensors: %s%s", path, shown,
                        #missing > 8 and string.format(" (and %d more)", #missing - 8) or ""), 2)
  end
  local unexpected = {}
  for _, name in ipairs(sorted_keys(T)) do
    if wanted[name] == nil and not (has_queue and name == "module.queue_ptr") and name ~= "rng.shuffle_generator" then
      unexpected[#unexpected + 1] = name
    end
  end
  if #unexpected > 0 then
    error(string.format("%s: tensors the model does not have: %s%s (another architecture?)", path,
                        table.concat(unexpected, ", ", 1, math.min(#unexpected, 8)),
                        #unexpected > 8 and string.format(" (and %d more)", #unexpected - 8) or ""), 2)
  end
  local ptr_value
  if has_queue then
    local ptr = T["module.queue_ptr"]
    ptr_value = ptr:numel() == 1 and math.tointeger(ptr:item()) or nil
    if ptr_value == nil or ptr_value < 0 or ptr_value >= model.K then
      error(string.format("%s: module.queue_ptr must hold one value in [0, %d)", path, model.K), 2)
    end
  end
  -- All checked: copy.
  for name, t in pairs(wanted) do t:copy(T[name]) end
  if has_queue then model.queue_ptr = ptr_value end
  set_generator_bytes(model.shuffle_generator, T["rng.shuffle_generator"], path)
  local saved_optimizer = ckpt.optimizer or {}
  opt.steps = saved_optimizer.steps or ckpt.step
  model.steps = ckpt.step
  return model
end

local STEM_CHANNELS = models.STEM_CHANNELS

-- The 'model' metadata must describe the tensors the file holds before anything is built
-- from it: otherwise a few bytes of metadata (K = 10^12, width = 1000) could make the
-- loader allocate without bound.  shape_of(name) gives a tensor's shape (a table) or nil.
local function check_options_against_tensors(path, o, shape_of, with_queue)
  local stem = STEM_CHANNELS[o.arch]
  if stem == nil then error(string.format("%s: metadata 'model' names an unknown architecture '%s'", path, tostring(o.arch)), 3) end
  local conv = shape_of("module.encoder_q.conv1.weight")
  local want = math.max(1, math.floor(stem * (o.width or 1) + 0.5))
  if not (conv and #conv == 4 and conv[1] == want and conv[2] == (o.in_channels or 3)) then
    error(string.format("%s: its tensors do not match its metadata 'model' (%s): module.encoder_q.conv1.weight is %s",
                        path, describe(o), conv and ("[" .. table.concat(conv, ", ") .. "]") or "missing"), 3)
  end
  local fc = shape_of(o.mlp and "module.encoder_q.fc.2.weight" or "module.encoder_q.fc.weight")
  if not (fc and #fc == 2 and fc[1] == o.dim) then
    error(string.format("%s: its tensors do not match its metadata 'model' (%s): the encoder's last fc is %s", path,
                        describe(o), fc and ("[" .. table.concat(fc, ", ") .. "]") or "missing"), 3)
  end
  local mech = o.mechanism or "moco"
  if with_queue and mech == "memory_bank" then
    local b = shape_of("module.memory")
    if not (b and #b == 2 and b[1] == o.bank_size and b[2] == o.dim) then
      error(string.format("%s: its tensors do not match its metadata 'model' (%s, bank_size %s): module.memory is %s",
                          path, describe(o), tostring(o.bank_size), b and ("[" .. table.concat(b, ", ") .. "]") or "missing"), 3)
    end
  elseif with_queue and mech == "moco" then
    local q = shape_of("module.queue")
    if not q then error(path .. ": missing tensors: module.queue", 3) end
    if not (#q == 2 and q[1] == o.dim and q[2] == o.K) then
      error(string.format("%s: its tensors do not match its metadata 'model' (%s): module.queue is %s", path, describe(o),
                          q and ("[" .. table.concat(q, ", ") .. "]") or "missing"), 3)
    end
  end
end

-- A moco.MoCo rebuilt from the checkpoint's own options, with every state restored.
function checkpoint.build_model(src)
  local ckpt = as_checkpoint(src, "build_model")
  check_options_against_tensors(ckpt.path, ckpt.model_options, function(name)
    local t = ckpt.tensors[name]
    return t and t:shape() or nil
  end, true)
  local opts = {}
  for k, v in pairs(ckpt.model_options) do opts[k] = v end
  local ok, model = pcall(moco.MoCo, opts)
  if not ok then error(string.format("%s: cannot rebuild the model from its options: %s", ckpt.path, model), 2) end
  checkpoint.restore(model, ckpt)
  return model
end

-- The query encoder of a checkpoint: a moco.models ResNet (its fc, or the MLP head, kept),
-- with plain batch norm (split batch norm is a training device: in eval mode both use the
-- running statistics and agree exactly).  opts.bn_splits overrides that.  Only encoder_q's
-- tensors are read.
function checkpoint.load_encoder(path, opts)
  opts = nn.check_options("checkpoint.load_encoder", opts, { bn_splits = true })
  if require("moco.torch").is_torch_file(path) then return require("moco.torch").load_encoder(path, opts) end
  local f <close> = moco.safe_open(path)
  local meta = f:metadata()
  if meta.format ~= checkpoint.FORMAT then
    error(string.format("%s: not a moco-lua MoCo checkpoint; for torchvision weights build a model and use "
                        .. "checkpoint.load_torchvision", path), 2)
  end
  local o = decode(path, meta, "model")
  if type(o) ~= "table" then error(path .. ": the checkpoint has no 'model' metadata", 2) end
  check_options_against_tensors(path, o, function(name)
    if not f:has(name) then return nil end
    return select(2, f:info(name))
  end, false)
  local enc_opts = {
    arch = o.arch, dim = o.dim, mlp = o.mlp, bn_splits = opts.bn_splits or 1, in_channels = o.in_channels,
    cifar_stem = o.cifar_stem, width = o.width, stem_stride = o.stem_stride,
  }
  local encoder = builder.MoCo.make_encoder(enc_opts, moco.Generator(0, 0))
  local sd = {}
  for name in pairs(encoder:state_dict()) do
    local key = "module.encoder_q." .. name
    if not f:has(key) then error(string.format("%s: missing tensor '%s' for a %s encoder", path, key, describe(o)), 2) end
    sd[name] = f:get_tensor(key)
  end
  local ok, err = pcall(encoder.load_state_dict, encoder, sd)
  if not ok then error(path .. ": " .. tostring(err), 2) end
  encoder:eval()
  return encoder
end

-- ------------------------------------------------------------------ torchvision interop

-- Writes the query encoder's backbone with torchvision's names and no fc, as the official
-- detectron2 conversion keeps only module.encoder_q.* without its prefix: loadable with
-- torchvision.models.resnet50() + safetensors.torch.load_file + load_state_dict(strict=False)
-- (missing keys: fc.weight, fc.bias).  src: a checkpoint path, or any safetensors file with
-- module.encoder_q.* tensors (an official checkpoint's state_dict saved as safetensors).
function checkpoint.export_backbone(src, out_path)
  if type(src) ~= "string" or type(out_path) ~= "string" then
    error("checkpoint.export_backbone(checkpoint_path, out_path): two paths expected", 2)
  end
  local f <close> = open_weights(src)
  local prefix = "module.encoder_q."
  local tensors, dtypes, count = {}, {}, 0
  for _, key in ipairs(f:keys()) do
    if key:sub(1, #prefix) == prefix then
      local name = key:sub(#prefix + 1)
      if name:sub(1, 3) ~= "fc." then
        tensors[name] = f:get_tensor(key)
        if is_integer_buffer(name) then dtypes[name] = "I64" end
        count = count + 1
      end
    end
  end
  if count == 0 then error(string.format("%s: no tensors named module.encoder_q.*: not a MoCo checkpoint", src), 2) end
  local meta = f:metadata()
  -- "format": "pt" is what safetensors.torch.save_file writes; tools look for it.
  moco.save(out_path, tensors, { format = "pt", source = src, arch = meta.arch }, { dtypes = dtypes })
  return count
end

local tv_fields = { strict = true, prefix = true }

-- Initialises net (a moco.models ResNet, or any moco.nn module with torchvision names) from
-- a torchvision state dict saved as safetensors.  Tensors of the file named prefix .. name
-- are copied into net's `name`; the prefix is found by itself when it is "" (torchvision),
-- "module.encoder_q." (a MoCo checkpoint) or "module.".  fc.* may be missing (an exported
-- backbone) or have another shape (torchvision's 1000 classes); both are reported, not
-- errors.  Any other missing tensor or shape difference is an error naming the tensor;
-- tensors of the file that net lacks are an error too unless strict = false.
-- Returns {loaded = n, missing = {...}, skipped = {...}, unexpected = {...}}.
function checkpoint.load_torchvision(net, path, opts)
  opts = nn.check_options("checkpoint.load_torchvision", opts, tv_fields)
  if type(net) ~= "table" or type(net.state_dict) ~= "function" then
    error("checkpoint.load_torchvision: expected a moco.nn module (e.g. moco.models.resnet50{}), got " .. type(net), 2)
  end
  if net.encoder_q then
    error("checkpoint.load_torchvision: pass the encoder (model.encoder_q), not the whole MoCo model", 2)
  end
  local f <close> = open_weights(path)
  local keys = f:keys()
  local have = {}
  for _, k in ipairs(keys) do have[k] = true end
  local prefix = opts.prefix
  if prefix == nil then
    prefix = ""
    if not have["conv1.weight"] then
      for _, p in ipairs{ "module.encoder_q.", "module." } do
        if have[p .. "conv1.weight"] then prefix = p break end
      end
    end
  end
  local own = net:state_dict()
  local report = { loaded = 0, missing = {}, skipped = {}, unexpected = {} }
  local values = {}
  for _, name in ipairs(sorted_keys(own)) do
    local key = prefix .. name
    local is_fc = name:sub(1, 3) == "fc."
    if not have[key] then
      if not is_fc then
        error(string.format("%s: missing tensor '%s' (the model is %s; is the file for another architecture?)",
                            path, key, tostring(net.arch or net._class_name)), 2)
      end
      report.missing[#report.missing + 1] = name
    else
      local _, shape = f:info(key)
      local t = own[name]
      local want = t:shape()
      local same = #shape == #want
      for i = 1, #want do same = same and shape[i] == want[i] end
      -- A 0-d num_batches_tracked may come as shape [] or [1].
      if not same and is_integer_buffer(name) and t:numel() == 1 and #shape <= 1 and (shape[1] or 1) == 1 then
        same = true
      end
      if not same then
        if not is_fc then
          error(string.format("%s: tensor '%s' has shape [%s] in the file but %s in the model", path, key,
                              table.concat(shape, ", "), shape_str(t)), 2)
        end
        report.skipped[#report.skipped + 1] = name
      else
        values[name] = f:get_tensor(key)
      end
    end
  end
  for _, k in ipairs(keys) do
    if k:sub(1, #prefix) == prefix and own[k:sub(#prefix + 1)] == nil then
      -- Other parts of a MoCo checkpoint (encoder_k, queue ...) are not the encoder's.
      if prefix == "" or prefix == "module." then report.unexpected[#report.unexpected + 1] = k end
    end
  end
  if opts.strict ~= false and #report.unexpected > 0 then
    error(string.format("%s: tensors the model does not have: %s (strict = false to ignore them)", path,
                        table.concat(report.unexpected, ", ", 1, math.min(8, #report.unexpected))), 2)
  end
  for name, v in pairs(values) do
    own[name]:copy(v:reshape(own[name]:shape()))
    report.loaded = report.loaded + 1
  end
  return report
end

-- ------------------------------------------------------------------ epoch checkpoints

-- The checkpoints in dir, oldest first: {{name=, path=, epoch=, step=}, ...} (names as
-- moco.rundir.parse_checkpoint_name reads them).
function checkpoint.list(dir) return rundir.checkpoints(dir) end

-- The most advanced checkpoint in dir, or nil.
function checkpoint.latest(dir)
  local list = checkpoint.list(dir)
  return list[#list] and list[#list].path or nil
end

-- The newest checkpoint of dir that loads (with load, default checkpoint.load), belongs to
-- the run run_id (when given) and holds healthy values; a newer one that is corrupt, truncated or diverged is passed
-- over with a note.  Returns ckpt (from checkpoint.load) and the notes, or nil and the
-- notes when none is usable.  A checkpoint of another run is an error: a run directory
-- belongs to one run, so something copied files into it.
function checkpoint.latest_usable(dir, run_id, load)
  load = load or checkpoint.load
  local list = checkpoint.list(dir)
  local notes = {}
  for i = #list, 1, -1 do
    local path = list[i].path
    local ok, ckpt = pcall(load, path)
    local why
    if not ok then
      why = tostring(ckpt)
    else
      if run_id and ckpt.run_id ~= run_id then
        error(string.format("%s belongs to %s, not to the run %s of %s/config.json: a run directory belongs to one "
                            .. "run; move the file away (or resume from it as a file: --resume %s)", path,
                            ckpt.run_id and ("the run " .. ckpt.run_id) or "no run", run_id, dir, path), 0)
      end
      local healthy, bad = true, nil
      if ckpt.tensors then healthy, bad = checkpoint.check_values(ckpt.tensors) end
      if healthy then return ckpt, notes end
      why = bad
    end
    notes[#notes + 1] = string.format("%s cannot be resumed (%s)%s", path, why,
                                      i > 1 and "; trying the previous checkpoint" or "")
  end
  return nil, notes
end

local epoch_fields = {
  epoch = true, record = true, config = true, best_knn = true, keep = true, loader_seed = true, recipe = true,
  run_id = true, history = true,
}

-- Saves the checkpoint of a training epoch into dir (the train.fit on_epoch_end hook of
-- moco.pretrain): info.epoch and info.record (train.fit's record of it) tell whether the
-- epoch finished or was interrupted; info.best_knn is the best kNN accuracy so far.  When
-- record.knn beats it, the file is also copied (atomically) to model_best.safetensors.
-- Then only the newest info.keep (default 3; 0 keeps all) checkpoint_* files stay.
-- Returns the path, whether it is the new best, and the best kNN accuracy.
function checkpoint.save_epoch(dir, model, info)
  info = nn.check_options("checkpoint.save_epoch", info, epoch_fields)
  local epoch, record = info.epoch, info.record or { complete = true }
  local name, next_epoch, epoch_step, sums
  if record.complete then
    name = string.format("checkpoint_%04d.safetensors", epoch)
    next_epoch, epoch_step = epoch + 1, 0
  else
    name = string.format("checkpoint_%04d_step%06d.safetensors", epoch, record.steps or 0)
    next_epoch, epoch_step, sums = epoch, record.steps or 0, record.sums
  end
  local best = info.best_knn
  local is_best = record.knn ~= nil and (best == nil or record.knn > best)
  if is_best then best = record.knn end
  local path = dir .. "/" .. name
  moco._io.makedirs(dir)
  checkpoint.save(path, model, {
    epoch = next_epoch, epoch_step = epoch_step, config = info.config, knn = record.knn, best_knn = best,
    sums = sums, recipe = info.recipe, run_id = info.run_id, history = info.history,
    loader = { seed = info.loader_seed, epoch = next_epoch, position = epoch_step },
  })
  if is_best then moco._io.copy_file(path, dir .. "/" .. BEST_NAME) end
  rundir.prune(dir, info.keep or 3, name)
  return path, is_best, best
end

return checkpoint
