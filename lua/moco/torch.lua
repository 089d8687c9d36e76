-- lua/moco/torch.lua: PyTorch's own files, in and out (moco.torch).  Nothing in a file is
-- ever executed: the reader (core/io/torchfile.c) rebuilds tensors and plain data only, as
-- torch.load(weights_only=True), and refuses any other global by name.
--
--   obj, dtypes = moco.torch.load(path)      -- what torch.save was given: dicts, lists, numbers,
--                                            -- strings, moco.Tensor (float32); None is
--                                            -- moco.torch.None; dtypes[tensor] = "I64" ...
--   moco.torch.keys(dict)                    -- a loaded dict's keys in file order
--   moco.torch.format(path)                  -- "zip", "legacy" or nil, by content
--   f = moco.torch.open(path)                -- the file's state dict, as moco.safe_open:
--     f:keys() (sorted), f:order() (file order), f:info(name) -> dtype, shape,
--     f:get_tensor(name), f:metadata() -> {format=, arch=, epoch=}, f:close()
--   tensors, names, dtypes, info = moco.torch.encoder_tensors(path, {keep_fc=})
--                                            -- the query encoder in torchvision names
--   encoder = moco.torch.load_encoder(path)  -- a moco.models ResNet with the file's weights
--   moco.torch.save(path, tensors, {order=, dtypes=})        -- torch.load opens it
--   moco.torch.save_detectron2(path, tensors, {order=, dtypes=, author=})
--   moco.torch.detectron2_name("layer1.0.bn1.weight")  -- "res2.0.conv1.norm.weight"
--
-- What counts as the state dict of a file: its 'state_dict' entry when it has one (MoCo's
-- main_moco.py and main_lincls.py checkpoints), else its 'model' entry when that is a dict
-- of tensors, else the file itself (a torchvision resnet50-*.pth).  The encoder's tensors
-- are module.encoder_q.* of a MoCo checkpoint (as main_lincls.py takes them), module.* of a
-- DataParallel checkpoint, or the names as they are.  A state dict saved before PyTorch 0.4.1
-- has no num_batches_tracked: as PyTorch's BatchNorm does on load, open() then supplies 0.
local moco = require "moco"
local C = moco._torch

local torch = {}

torch.None = C.None

function torch.format(path)
  if type(path) ~= "string" then error("moco.torch.format: path must be a string, got " .. type(path), 2) end
  return C.format(path)
end

-- True when path is a torch.save file (by content); false for anything else, unreadable
-- files included (their own loader then reports them).
function torch.is_torch_file(path)
  if type(path) ~= "string" then return false end
  local ok, f = pcall(C.format, path)
  return ok and f ~= nil
end

function torch.load(path)
  if type(path) ~= "string" then error("moco.torch.load: path must be a string, got " .. type(path), 2) end
  return C.load(path)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  return keys
end

function torch.keys(dict)
  local mt = getmetatable(dict)
  if type(mt) == "table" and type(mt.__keys) == "table" then return mt.__keys end
  return sorted_keys(dict)
end

local function is_tensor(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__name == "moco.Tensor"
end

local function all_tensors(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _, v in pairs(t) do
    if not is_tensor(v) then return false end
    n = n + 1
  end
  return n > 0
end

-- The state dict of a loaded object (see the header), its keys in file order, and where it was.
local function state_dict_of(obj, path)
  if type(obj) == "table" and all_tensors(obj.state_dict) then return obj.state_dict, "state_dict" end
  if type(obj) == "table" and all_tensors(obj.model) then return obj.model, "model" end
  if all_tensors(obj) then return obj, nil end
  error(string.format("%s: no state dict of tensors in the file (neither its 'state_dict' entry, its 'model' "
                      .. "entry, nor the file itself is a dict of tensors)", path), 3)
end

-- ------------------------------------------------------------------ open

local File = {}
File.__index = File
File.__name = "moco.TorchStateDict"

function torch.open(path)
  local obj, dtypes = torch.load(path)
  local sd, where = state_dict_of(obj, path)
  local f = setmetatable({ path = path, tensors = {}, dtypes = {}, _order = {}, where = where }, File)
  for _, k in ipairs(torch.keys(sd)) do
    f.tensors[k] = sd[k]
    f.dtypes[k] = dtypes[sd[k]]
    f._order[#f._order + 1] = k
  end
  -- PyTorch < 0.4.1 state dicts: BatchNorm fills in num_batches_tracked = 0 on load.
  for _, k in ipairs(f._order) do
    local base = k:match("^(.*)%.running_mean$")
    if base and f.tensors[base .. ".running_var"] and not f.tensors[base .. ".num_batches_tracked"] then
      f.tensors[base .. ".num_batches_tracked"] = moco.zeros{}
      f.dtypes[base .. ".num_batches_tracked"] = "I64"
    end
  end
  local meta = { format = "torch " .. tostring(C.format(path)) }
  if type(obj) == "table" and sd ~= obj then
    for _, key in ipairs{ "arch", "epoch", "best_acc1" } do
      local v = obj[key]
      if type(v) == "string" or type(v) == "number" then meta[key] = tostring(v)
      elseif is_tensor(v) and v:numel() == 1 then meta[key] = tostring(v:item()) end
    end
  end
  f.meta = meta
  return f
end

local function check_open(f)
  if not f.tensors then error("the torch file was closed", 3) end
end

function File:keys()
  check_open(self)
  return sorted_keys(self.tensors)
end

function File:order()
  check_open(self)
  return self._order
end

function File:info(name)
  check_open(self)
  local t = self.tensors[name]
  if not t then error(string.format("%s: no tensor named '%s'", self.path, tostring(name)), 2) end
  return self.dtypes[name] or "F32", t:shape()
end

function File:get_tensor(name)
  check_open(self)
  local t = self.tensors[name]
  if not t then error(string.format("%s: no tensor named '%s'", self.path, tostring(name)), 2) end
  return t
end

function File:metadata()
  local copy = {}
  for k, v in pairs(self.meta) do copy[k] = v end
  return copy
end

function File:close() self.tensors = nil end
File.__close = File.close

function File:__tostring()
  return string.format("moco.TorchStateDict %s: %d tensors", self.path, self.tensors and #self._order or 0)
end

-- ------------------------------------------------------------------ the encoder

-- The encoder's prefix in a state dict: MoCo's, DataParallel's, or none.
local function encoder_prefix(has, path)
  for _, p in ipairs{ "module.encoder_q.", "module.", "" } do
    if has[p .. "conv1.weight"] then return p end
  end
  error(string.format("%s: no ResNet encoder in the state dict (no module.encoder_q.conv1.weight, "
                      .. "module.conv1.weight or conv1.weight)", path), 3)
end

local function open_any(path)
  if torch.is_torch_file(path) then return torch.open(path) end
  return moco.safe_open(path)
end

-- The query encoder's tensors in torchvision's names, from a torch.save file or a
-- safetensors file (a moco-lua checkpoint or weights): tensors (name -> tensor), names (file
-- order; sorted for safetensors), dtypes (name -> dtype) and info {arch=, epoch=, prefix=}.
-- fc.* (the head) is dropped unless opts.keep_fc, as main_lincls.py drops it.
function torch.encoder_tensors(path, opts)
  opts = opts or {}
  local f <close> = open_any(path)
  local order = f.order and f:order() or f:keys()
  local has = {}
  for _, k in ipairs(f:keys()) do has[k] = true end
  local prefix = encoder_prefix(has, path)
  local tensors, names, dtypes = {}, {}, {}
  for _, key in ipairs(order) do
    if key:sub(1, #prefix) == prefix then
      local name = key:sub(#prefix + 1)
      if opts.keep_fc or name:sub(1, 3) ~= "fc." then
        tensors[name] = f:get_tensor(key)
        dtypes[name] = (f:info(key))
        names[#names + 1] = name
      end
    end
  end
  local meta = f:metadata()
  return tensors, names, dtypes, { arch = meta.arch, epoch = tonumber(meta.epoch), prefix = prefix }
end

-- The torchvision ResNet a state dict describes: blocks per stage, block kind, width,
-- input channels, stem, head.
local ARCHS = {
  ["basic 2,2,2,2"] = "resnet18", ["basic 3,4,6,3"] = "resnet34", ["bottleneck 3,4,6,3"] = "resnet50",
  ["basic 3,3,3"] = "resnet20",
}

local function describe_resnet(tensors, path)
  local blocks = {}
  for name in pairs(tensors) do
    local l, b = name:match("^layer(%d+)%.(%d+)%.")
    if l then
      l, b = tonumber(l), tonumber(b)
      blocks[l] = math.max(blocks[l] or 0, b + 1)
    end
  end
  local kind = tensors["layer1.0.conv3.weight"] and "bottleneck" or "basic"
  local key = kind .. " " .. table.concat(blocks, ",")
  local arch = ARCHS[key]
  if not arch then
    error(string.format("%s: a ResNet of %s blocks (%s per stage) is not one of moco.models' resnet18, resnet20, "
                        .. "resnet34, resnet50", path, kind, table.concat(blocks, ", ")), 3)
  end
  local conv1 = tensors["conv1.weight"]:shape()
  local base = arch == "resnet20" and 16 or 64
  local o = { arch = arch, width = conv1[1] / base, in_channels = conv1[2],
              cifar_stem = arch ~= "resnet20" and conv1[3] == 3 or nil }
  if tensors["fc.0.weight"] and tensors["fc.2.weight"] then
    o.mlp, o.dim = true, tensors["fc.2.weight"]:shape()[1]
  elseif tensors["fc.weight"] then
    o.mlp, o.dim = false, tensors["fc.weight"]:shape()[1]
  end
  return o
end

-- A moco.models ResNet initialised from a torch.save file: a MoCo checkpoint gives its query
-- encoder with its head (fc, or the v2 MLP as fc.0 / fc.2), a torchvision state dict the
-- network with its fc.  Architecture, width, input channels and head size come from the
-- tensors (the 'arch' entry must agree).  In eval mode, as checkpoint.load_encoder.
function torch.load_encoder(path, opts)
  opts = opts or {}
  local tensors, _, _, info = torch.encoder_tensors(path, { keep_fc = true })
  local o = describe_resnet(tensors, path)
  if info.arch and info.arch ~= o.arch then
    error(string.format("%s: 'arch' says %s but the tensors are a %s", path, info.arch, o.arch), 2)
  end
  local builder = require "moco.builder"
  local no_head = o.dim == nil
  local encoder = builder.MoCo.make_encoder({
    arch = o.arch, dim = o.dim or 128, mlp = o.mlp, bn_splits = opts.bn_splits or 1, in_channels = o.in_channels,
    cifar_stem = o.cifar_stem, width = o.width,
  }, moco.Generator(0, 0))
  local own = encoder:state_dict()
  for name, t in pairs(own) do
    local src = tensors[name]
    if src == nil and not (no_head and name:sub(1, 3) == "fc.") and not name:match("num_batches_tracked$") then
      error(string.format("%s: missing tensor '%s%s' for a %s", path, info.prefix, name, o.arch), 2)
    end
    if src then
      if src:numel() ~= t:numel() then
        error(string.format("%s: tensor '%s%s' has shape [%s] in the file but [%s] in a %s", path, info.prefix, name,
                            table.concat(src:shape(), ", "), table.concat(t:shape(), ", "), o.arch), 2)
      end
      t:copy(src:reshape(t:shape()))
    end
  end
  for name in pairs(tensors) do
    if own[name] == nil then
      error(string.format("%s: tensor '%s%s' is not part of a %s encoder", path, info.prefix, name, o.arch), 2)
    end
  end
  if no_head then
    io.stderr:write(string.format("%s: no fc in the file: the head is left at its initialisation "
                                  .. "(use the pooled features)\n", path))
  end
  encoder:eval()
  return encoder
end

-- ------------------------------------------------------------------ writing

local function items_of(fn, tensors, opts)
  if type(tensors) ~= "table" then error(fn .. ": tensors must be a table of name = moco.Tensor", 3) end
  opts = opts or {}
  local order = opts.order or sorted_keys(tensors)
  local names, list, dts, seen = {}, {}, {}, {}
  for i, name in ipairs(order) do
    if tensors[name] == nil then error(string.format("%s: order names '%s', which is not one of the tensors", fn, name), 3) end
    names[i], list[i], dts[i] = name, tensors[name], (opts.dtypes or {})[name] or false
    seen[name] = true
  end
  for name in pairs(tensors) do
    if not seen[name] then error(string.format("%s: tensor '%s' is missing from order", fn, tostring(name)), 3) end
  end
  return names, list, dts
end

-- torch.save(OrderedDict(tensors)) in the zip layout; opts.order (default: sorted names),
-- opts.dtypes {name = "I64", ...} (default F32).  Atomic.
function torch.save(path, tensors, opts)
  local names, list, dts = items_of("moco.torch.save", tensors, opts)
  C.save_pth(path, names, list, dts)
end

-- pickle.dump({"model": {name: numpy array}, "__author__": author, "matching_heuristics":
-- True}) with names as given (see detectron2_name); opts as torch.save, plus author (MOCO).
function torch.save_detectron2(path, tensors, opts)
  local names, list, dts = items_of("moco.torch.save_detectron2", tensors, opts)
  C.save_detectron2(path, names, list, dts, (opts or {}).author or "MOCO")
end

local function replace_all(s, old, new)
  local out, i = {}, 1
  while true do
    local a, b = s:find(old, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1) .. new
    i = b + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

-- The official convert-pretrain-to-detectron2.py's renaming of a torchvision name: stem.*
-- for what is not in a layer, layerN -> res(N+1), bnN -> convN.norm, downsample.0 ->
-- shortcut, downsample.1 -> shortcut.norm (each replacement over the whole name, in that order).
function torch.detectron2_name(name)
  if not name:find("layer", 1, true) then name = "stem." .. name end
  for t = 1, 4 do name = replace_all(name, "layer" .. t, "res" .. (t + 1)) end
  for t = 1, 3 do name = replace_all(name, "bn" .. t, "conv" .. t .. ".norm") end
  name = replace_all(name, "downsample.0", "shortcut")
  name = replace_all(name, "downsample.1", "shortcut.norm")
  return name
end

return torch
