-- lua/moco/transforms.lua: image augmentations with torchvision's names and semantics
-- (moco.transforms).
--
--   local T = moco.transforms
--   aug = T.Compose{ T.RandomResizedCrop(224, {scale = {0.2, 1}}),
--                    T.RandomApply(T.ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8),
--                    T.RandomGrayscale(0.2), T.RandomApply(T.GaussianBlur{0.1, 2.0}, 0.5),
--                    T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std) }
--   x = aug(moco.image.load("cat.jpg"), gen)     -- run it from Lua (gen: optional Generator)
--   T.preview(aug, "cat.jpg", {n = 16, out = "preview.png"})
--
-- Every primitive is a C function (core/image): a transform object holds its C pipeline in
-- `handle` (a moco.Transform userdata, freed by its __gc), which the data loader runs in
-- its worker threads without the Lua VM.  The results equal torchvision 0.14 on PIL images
-- (Pillow 9.4) byte for byte for the same parameters; the random parameters follow the
-- same distributions, drawn from our generators instead of torch's.
--
-- Objects are tables with metatable Transform:
--   kind        the torchvision class name ("RandomResizedCrop", "Compose", "Lambda", ...)
--   handle      the moco.Transform, or nil when the pipeline contains a Lambda (a Lua
--               function, so it can only run in Lua: slower, and a loader must call it on
--               the Lua side -- see `lua_only`)
--   lua_only    true exactly when handle is nil
--   the parameters, under torchvision's names (size, scale, ratio, p, transforms, ...)
-- Calling an object, t(input [, gen]), applies it to a moco.Image, a moco.Tensor (for
-- tensor transforms such as Normalize) or an image path; tostring gives torchvision's repr.
--
-- TwoCrops(t) is the marker the loader looks for to produce two views (MoCo's
-- TwoCropsTransform): the plain table {kind = "TwoCrops", transform = t}; calling it
-- returns two views.  It must be the outermost transform.
local core = require "moco.core"

local C = core._image
local image = core.image

local T = {}

local Transform = {}
Transform.__index = Transform
Transform.__name = "moco.transforms.Transform"

local TwoCropsMT = { __name = "moco.transforms.TwoCrops" }
TwoCropsMT.__index = TwoCropsMT

-- ---------------------------------------------------------------- helpers

local function is_transform(x) return getmetatable(x) == Transform end
T.is_transform = is_transform

-- Python's repr of a float: the shortest digits that read back, ".0" on integers.
local function pyfloat(v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
  local s
  for digits = 1, 17 do
    s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then break end
  end
  if not s:find("[%.e]") then s = s .. ".0" end
  return s
end

local function pylist(values)
  local parts = {}
  for i, v in ipairs(values) do parts[i] = pyfloat(v) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local check_options = require("moco.util").check_options

local function check_integer(fname, what, v)
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
    error(string.format("%s: %s must be an integer, got %s", fname, what, tostring(v)), 3)
  end
  if v <= 0 then error(string.format("%s: %s must be positive, got %d", fname, what, v), 3) end
  return math.tointeger(v)
end

-- torchvision's size: an int, {size} or {height, width}.  Returns h, w, and whether it
-- was a single number.
local function parse_size(fname, size)
  if type(size) == "number" then
    local s = check_integer(fname, "size", size)
    return s, s, true
  elseif type(size) == "table" and (#size == 1 or #size == 2) then
    local h = check_integer(fname, "size[1]", size[1])
    local w = #size == 2 and check_integer(fname, "size[2]", size[2]) or h
    return h, w, #size == 1
  end
  error(fname .. ": size must be an integer or a table {height, width}, got " .. tostring(size), 3)
end

local function check_probability(fname, p)
  if type(p) ~= "number" or p < 0 or p > 1 then
    error(string.format("%s: p must be a number in [0, 1], got %s", fname, tostring(p)), 3)
  end
  return p
end

local function check_pair(fname, what, v)
  if type(v) ~= "table" or #v ~= 2 or type(v[1]) ~= "number" or type(v[2]) ~= "number" then
    error(string.format("%s: %s must be a pair {min, max} of numbers", fname, what), 3)
  end
  return { v[1], v[2] }
end

local function check_interpolation(fname, opts)
  local mode = opts.interpolation
  if mode ~= nil and mode ~= "bilinear" then
    error(fname .. ": only interpolation = \"bilinear\" is implemented (torchvision's default), got " ..
          tostring(mode), 3)
  end
end

local function new(kind, handle, fields)
  local obj = fields or {}
  obj.kind = kind
  obj.handle = handle
  obj.lua_only = handle == nil
  return setmetatable(obj, Transform)
end

-- A transform object from a transform or a Lua function (wrapped in a Lambda).
local function as_transform(fname, t, i)
  if is_transform(t) then return t end
  if type(t) == "function" then return T.Lambda(t) end
  if getmetatable(t) == TwoCropsMT then
    error(fname .. ": TwoCrops must be the outermost transform (the loader applies it)", 3)
  end
  error(string.format("%s: entry %d is %s, expected a moco.transforms object or a function", fname, i,
                      type(t)), 3)
end

local function as_list(fname, t_or_list)
  if is_transform(t_or_list) or type(t_or_list) == "function" then return { as_transform(fname, t_or_list, 1) } end
  if type(t_or_list) ~= "table" or getmetatable(t_or_list) ~= nil then
    error(fname .. ": expected a transform or a list of transforms, got " .. type(t_or_list), 3)
  end
  local list = {}
  for i = 1, #t_or_list do list[i] = as_transform(fname, t_or_list[i], i) end
  return list
end

-- The handles of a list, or nil when one of them has none.
local function handles_of(list)
  local handles = {}
  for i, t in ipairs(list) do
    if not t.handle then return nil end
    handles[i] = t.handle
  end
  return handles
end

local function default_generator(gen)
  return gen or core.default_generator()
end

-- Accepts an image path for convenience at the REPL.
local function as_input(x)
  if type(x) == "string" then return image.load(x) end
  return x
end

-- ---------------------------------------------------------------- calling and printing

-- t(input [, gen]) -> output
function Transform.__call(self, input, gen)
  input = as_input(input)
  gen = default_generator(gen)
  if self.handle then return C.apply(self.handle, input, gen) end
  if self.kind == "Lambda" then return self.lambd(input, gen) end
  if self.kind == "RandomApply" then
    -- torchvision: `if self.p < torch.rand(1): return img` (u < p: p = 0 never applies)
    if not (gen:uniform() < self.p) then return input end
  end
  for _, t in ipairs(self.transforms) do input = t(input, gen) end
  return input
end

function Transform.__tostring(self)
  if self.handle then return C.describe(self.handle) end
  if self.kind == "Lambda" then return "Lambda()" end
  local s = self.kind .. "("
  if self.kind == "RandomApply" then s = s .. "\n    p=" .. pyfloat(self.p) end
  for _, t in ipairs(self.transforms) do s = s .. "\n    " .. tostring(t) end
  return s .. "\n)"
end

-- "image", "tensor" or "any": what the pipeline takes and gives (nil for Lua-only ones).
function Transform:kinds()
  if self.handle then return C.kinds(self.handle) end
  return nil
end

-- ---------------------------------------------------------------- containers

-- Compose{t1, t2, ...}: applies the transforms in order.  Functions in the list become
-- Lambdas.  An image transform after ToTensor (or Normalize before it) is an error here.
function T.Compose(transforms)
  local list = as_list("Compose", transforms)
  local handles = handles_of(list)
  return new("Compose", handles and C.compose(handles), { transforms = list })
end

-- RandomApply(t_or_list, p = 0.5): applies the transforms (in order) with probability p.
function T.RandomApply(transforms, p)
  local list = as_list("RandomApply", transforms)
  p = check_probability("RandomApply", p == nil and 0.5 or p)
  local handles = handles_of(list)
  return new("RandomApply", handles and C.random_apply(handles, p), { transforms = list, p = p })
end

-- Lambda(fn): fn(input, gen) -> output, run in Lua (slower; a loader has to call back into
-- Lua for it).  Pipelines that contain one have no C handle.
function T.Lambda(fn)
  if type(fn) ~= "function" and not (getmetatable(fn) and getmetatable(fn).__call) then
    error("Lambda: expected a function, got " .. type(fn), 2)
  end
  return new("Lambda", nil, { lambd = fn })
end

-- TwoCrops(t): two independently augmented views of each sample (the query and the key).
function T.TwoCrops(t)
  t = as_transform("TwoCrops", t, 1)
  return setmetatable({ kind = "TwoCrops", transform = t }, TwoCropsMT)
end

function TwoCropsMT.__call(self, input, gen)
  input = as_input(input)
  gen = default_generator(gen)
  return self.transform(input, gen), self.transform(input, gen)
end

function TwoCropsMT.__tostring(self)
  return "TwoCrops(\n    " .. tostring(self.transform) .. "\n)"
end

-- ---------------------------------------------------------------- geometry

-- RandomResizedCrop(size, {scale = {0.08, 1}, ratio = {3/4, 4/3}, interpolation = "bilinear"})
function T.RandomResizedCrop(size, opts)
  local f = "RandomResizedCrop"
  opts = check_options(f, opts, { scale = true, ratio = true, interpolation = true, antialias = true })
  check_interpolation(f, opts)
  local h, w = parse_size(f, size)
  local scale = check_pair(f, "scale", opts.scale or { 0.08, 1.0 })
  local ratio = check_pair(f, "ratio", opts.ratio or { 3 / 4, 4 / 3 })
  return new(f, C.random_resized_crop(h, w, scale[1], scale[2], ratio[1], ratio[2]),
             { size = { h, w }, scale = scale, ratio = ratio, interpolation = "bilinear" })
end

-- rrc:get_params(img [, gen]) -> top, left, height, width (0-based pixel offsets, as
-- torchvision's RandomResizedCrop.get_params); img may also be {height, width}.
function Transform:get_params(img, gen)
  if self.kind ~= "RandomResizedCrop" then error("get_params: only RandomResizedCrop has random crop parameters", 2) end
  local h, w
  if type(img) == "table" then h, w = img[1], img[2] else h, w = img.height, img.width end
  return C.rrc_params(self.handle, h, w, default_generator(gen))
end

-- Resize(size, {max_size = nil, interpolation = "bilinear"}): an int sets the shorter side
-- (the longer one keeps the aspect ratio, as int(size * long / short)); {h, w} is exact.
function T.Resize(size, opts)
  local f = "Resize"
  opts = check_options(f, opts, { max_size = true, interpolation = true, antialias = true })
  check_interpolation(f, opts)
  local h, w, single = parse_size(f, size)
  if single then
    local max_size = opts.max_size and check_integer(f, "max_size", opts.max_size) or nil
    return new(f, C.resize_shorter(h, max_size), { size = h, max_size = max_size, interpolation = "bilinear" })
  end
  if opts.max_size then error("Resize: max_size is only allowed when size is a single number", 2) end
  return new(f, C.resize(h, w), { size = { h, w }, interpolation = "bilinear" })
end

-- RandomCrop(size, {padding = nil, pad_if_needed = false, fill = 0, padding_mode = "constant"}):
-- torchvision's RandomCrop: pads the image with zeros (padding: an int for every side,
-- {left/right, top/bottom} or {left, top, right, bottom}), pad_if_needed pads an image
-- smaller than the crop up to it, then takes a crop at a uniformly drawn position.  Only
-- fill 0 and padding_mode "constant" are implemented.
function T.RandomCrop(size, opts)
  local f = "RandomCrop"
  opts = check_options(f, opts, { padding = true, pad_if_needed = true, fill = true, padding_mode = true })
  local h, w = parse_size(f, size)
  if opts.fill ~= nil and opts.fill ~= 0 then
    error("RandomCrop: only fill = 0 is implemented, got " .. tostring(opts.fill), 2)
  end
  if opts.padding_mode ~= nil and opts.padding_mode ~= "constant" then
    error("RandomCrop: only padding_mode = \"constant\" is implemented, got " .. tostring(opts.padding_mode), 2)
  end
  local p = opts.padding
  local pad
  if p == nil then
    pad = { 0, 0, 0, 0 }
  elseif type(p) == "number" then
    pad = { p, p, p, p }
  elseif type(p) == "table" and (#p == 2 or #p == 4) then
    pad = #p == 2 and { p[1], p[2], p[1], p[2] } or { p[1], p[2], p[3], p[4] }
  else
    error("RandomCrop: padding must be an int or a list of 2 or 4 ints", 2)
  end
  for i = 1, 4 do
    local v = pad[i]
    if type(v) ~= "number" or v ~= math.floor(v) or v < 0 then
      error("RandomCrop: padding values must be non-negative integers, got " .. tostring(v), 2)
    end
    pad[i] = math.tointeger(v)
  end
  local pad_if_needed = opts.pad_if_needed == true
  return new(f, C.random_crop(h, w, pad[1], pad[2], pad[3], pad[4], pad_if_needed),
             { size = { h, w }, padding = p, pad_if_needed = pad_if_needed, fill = 0, padding_mode = "constant" })
end

-- CenterCrop(size): zero padding when the crop is larger than the image.
function T.CenterCrop(size)
  local h, w = parse_size("CenterCrop", size)
  return new("CenterCrop", C.center_crop(h, w), { size = { h, w } })
end

function T.RandomHorizontalFlip(p)
  p = check_probability("RandomHorizontalFlip", p == nil and 0.5 or p)
  return new("RandomHorizontalFlip", C.random_horizontal_flip(p), { p = p })
end

-- ---------------------------------------------------------------- colour

-- ColorJitter's _check_input: a number v gives [max(center - v, 0), center + v] (hue:
-- [-v, v]); a pair is checked against the bounds; the identity range gives nil (off).
local function jitter_range(name, value, center, lo, hi, clip_first_on_zero)
  if value == nil then return nil end
  local range
  if type(value) == "number" then
    if value < 0 then error(string.format("ColorJitter: if %s is a single number, it must be non negative", name), 3) end
    range = { center - value, center + value }
    if clip_first_on_zero then range[1] = math.max(range[1], 0.0) end
  elseif type(value) == "table" and #value == 2 then
    range = check_pair("ColorJitter", name, value)
  else
    error(string.format("ColorJitter: %s should be a single number or a pair {min, max}", name), 3)
  end
  if not (lo <= range[1] and range[1] <= range[2] and range[2] <= hi) then
    error(string.format("ColorJitter: %s values should be between (%s, %s), got {%s, %s}", name, pyfloat(lo),
                        pyfloat(hi), pyfloat(range[1]), pyfloat(range[2])), 3)
  end
  if range[1] == center and range[2] == center then return nil end
  return range
end

-- ColorJitter(brightness, contrast, saturation, hue) or ColorJitter{brightness = ...}:
-- applies the four adjustments in a random order with factors drawn uniformly from their
-- ranges, each exactly as torchvision's adjust_* on PIL images.
function T.ColorJitter(brightness, contrast, saturation, hue)
  if type(brightness) == "table" and #brightness == 0 and contrast == nil then
    local opts = check_options("ColorJitter", brightness,
                               { brightness = true, contrast = true, saturation = true, hue = true })
    brightness, contrast, saturation, hue = opts.brightness, opts.contrast, opts.saturation, opts.hue
  end
  local b = jitter_range("brightness", brightness, 1, 0, math.huge, true)
  local c = jitter_range("contrast", contrast, 1, 0, math.huge, true)
  local s = jitter_range("saturation", saturation, 1, 0, math.huge, true)
  local h = jitter_range("hue", hue, 0, -0.5, 0.5, false)
  return new("ColorJitter", C.color_jitter(b, c, s, h),
             { brightness = b, contrast = c, saturation = s, hue = h })
end

-- RandomGrayscale(p = 0.1): the output keeps the input's number of channels.
function T.RandomGrayscale(p)
  p = check_probability("RandomGrayscale", p == nil and 0.1 or p)
  return new("RandomGrayscale", C.random_grayscale(p), { p = p })
end

function T.Grayscale(num_output_channels)
  local n = num_output_channels or 1
  return new("Grayscale", C.grayscale(n), { num_output_channels = n })
end

-- GaussianBlur{sigma_min, sigma_max} (MoCo v2's, default {0.1, 2.0}): sigma ~ U[min, max],
-- then PIL's ImageFilter.GaussianBlur(radius = sigma) -- PIL's 3-pass box approximation,
-- reproduced exactly.  Also GaussianBlur(min, max) and GaussianBlur{sigma = {min, max}}.
-- (Not torchvision.transforms.GaussianBlur(kernel_size, sigma), a truncated convolution.)
function T.GaussianBlur(a, b)
  local sigma
  if type(a) == "table" and a.sigma ~= nil then
    check_options("GaussianBlur", a, { sigma = true })
    sigma = a.sigma
  elseif type(a) == "table" and b == nil then
    sigma = #a == 0 and { 0.1, 2.0 } or a
  elseif type(a) == "number" and type(b) == "number" then
    sigma = { a, b }
  elseif a == nil then
    sigma = { 0.1, 2.0 }
  elseif type(a) == "number" and type(b) == "table" then
    error("GaussianBlur: moco.transforms.GaussianBlur is MoCo v2's (PIL's blur with sigma ~ U[min, max]); " ..
          "call it as GaussianBlur{sigma_min, sigma_max}, there is no kernel_size", 2)
  else
    sigma = a
  end
  sigma = check_pair("GaussianBlur", "sigma", sigma)
  return new("GaussianBlur", C.gaussian_blur(sigma[1], sigma[2]), { sigma = sigma })
end

-- ---------------------------------------------------------------- tensors

-- ToTensor(): (H, W, C) uint8 image -> (C, H, W) float tensor in [0, 1].
function T.ToTensor()
  return new("ToTensor", C.to_tensor(), {})
end

-- Normalize(mean, std): (x - mean[c]) / std[c] per channel; numbers or lists of 1 or 3.
function T.Normalize(mean, std)
  if type(mean) == "number" then mean = { mean } end
  if type(std) == "number" then std = { std } end
  if type(mean) ~= "table" or type(std) ~= "table" then error("Normalize: mean and std must be lists of numbers", 2) end
  local m, s = {}, {}
  for i = 1, #mean do m[i] = mean[i] end
  for i = 1, #std do s[i] = std[i] end
  return new("Normalize", C.normalize(m, s), { mean = m, std = s })
end

-- ---------------------------------------------------------------- functional

-- T.functional (also T.F): the deterministic ops, torchvision.transforms.functional's names.
-- Offsets (top, left) are 0-based pixel coordinates, as in torchvision.
local F = {}
T.functional, T.F = F, F

function F.to_tensor(img) return img:to_tensor() end
function F.to_image(t) return image.from_tensor(t) end
function F.normalize(t, mean, std)
  if type(mean) == "number" then mean = { mean } end
  if type(std) == "number" then std = { std } end
  return C.f_normalize(t, mean, std)
end
function F.resize(img, size, opts)
  opts = check_options("resize", opts, { max_size = true, interpolation = true, antialias = true })
  check_interpolation("resize", opts)
  local h, w, single = parse_size("resize", size)
  if single then return C.f_resize_shorter(img, h, opts.max_size) end
  return C.f_resize(img, h, w)
end
function F.crop(img, top, left, height, width) return C.f_crop(img, top, left, height, width) end
function F.center_crop(img, size)
  local h, w = parse_size("center_crop", size)
  return C.f_center_crop(img, h, w)
end
function F.resized_crop(img, top, left, height, width, size)
  local h, w = parse_size("resized_crop", size)
  return C.f_resized_crop(img, top, left, height, width, h, w)
end
function F.hflip(img) return C.f_hflip(img) end
function F.adjust_brightness(img, factor) return C.f_adjust_brightness(img, factor) end
function F.adjust_contrast(img, factor) return C.f_adjust_contrast(img, factor) end
function F.adjust_saturation(img, factor) return C.f_adjust_saturation(img, factor) end
function F.adjust_hue(img, factor) return C.f_adjust_hue(img, factor) end
function F.rgb_to_grayscale(img, num_output_channels) return C.f_rgb_to_grayscale(img, num_output_channels or 1) end
-- PIL's ImageFilter.GaussianBlur(radius = sigma), as MoCo v2 uses it.
function F.gaussian_blur(img, sigma, extra)
  if extra ~= nil then
    error("gaussian_blur(img, sigma): this is PIL's blur (MoCo v2), not torchvision's (img, kernel_size, sigma)", 2)
  end
  return C.f_gaussian_blur(img, sigma)
end

-- ---------------------------------------------------------------- previews

-- The Normalize that ends a pipeline, if any (to undo it for display).
local function final_normalize(t)
  if t == nil then return nil end
  if getmetatable(t) == TwoCropsMT then return final_normalize(t.transform) end
  if t.kind == "Normalize" then return t end
  if t.kind == "Compose" and #t.transforms > 0 then return final_normalize(t.transforms[#t.transforms]) end
  return nil
end

local function userdata_name(x)
  local mt = type(x) == "userdata" and getmetatable(x)
  return type(mt) == "table" and mt.__name or nil
end
local function is_image(x) return userdata_name(x) == "moco.Image" end
local function is_tensor(x) return userdata_name(x) == "moco.Tensor" end

-- A view as an image for the grid: tensors are un-normalised when the pipeline ends with
-- Normalize, then scaled by 255 and clipped to [0, 255].
local function view_to_image(view, norm)
  if is_image(view) then return view end
  if is_tensor(view) then
    if norm then
      local mean, std = {}, {}
      for i = 1, #norm.std do
        mean[i] = -norm.mean[i] / norm.std[i]
        std[i] = 1 / norm.std[i]
      end
      view = C.f_normalize(view, mean, std)  -- x * std + mean
    end
    return image.from_tensor(view)
  end
  error("preview: the transform returned " .. type(view) .. ", expected a moco.Image or a moco.Tensor", 3)
end

-- A function i -> image for the source: an image path, a moco.Image, or a dataset (a table
-- or userdata with a get method: source:get(i) returns image, label; i is 1-based).
local function preview_source(source)
  if type(source) == "string" then
    local img = image.load(source)
    return function() return img end, false
  elseif is_image(source) then
    return function() return source end, false
  elseif (type(source) == "table" or type(source) == "userdata")
         and select(2, pcall(function() return source.get end)) then
    local ok, len = pcall(function() return #source end)
    len = ok and math.type(len) == "integer" and len or nil
    return function(i)
      local index = len and ((i - 1) % len) + 1 or i
      local x = source:get(index)
      if is_tensor(x) then x = image.from_tensor(x) end
      return x
    end, true
  end
  error("preview: source must be an image path, a moco.Image or a dataset with :get(i), got " .. type(source), 3)
end

-- T.preview(transform, source, {n = 16, out = "preview.png", seed = 0, nrow = ceil(sqrt(n)),
-- padding = 2}) -> out, grid
-- Writes a PNG grid of n augmented views of one image (source an image path or a
-- moco.Image), or of the first n samples of a dataset (source with :get(i)).  With
-- TwoCrops each sample gives two adjacent views.  transform may be nil (no augmentation).
function T.preview(transform, source, opts)
  opts = check_options("preview", opts, { n = true, out = true, seed = true, nrow = true, padding = true })
  local n = opts.n and check_integer("preview", "n", opts.n) or 16
  local out = opts.out or "preview.png"
  local gen = core.Generator(opts.seed or 0)
  if transform ~= nil and not is_transform(transform) and getmetatable(transform) ~= TwoCropsMT then
    transform = as_transform("preview", transform, 1)
  end
  local get = preview_source(source)
  local norm = final_normalize(transform)
  local views = {}
  local i = 0
  while #views < n do
    i = i + 1
    local x = get(i)
    if transform == nil then
      views[#views + 1] = view_to_image(x)
    else
      local a, b = transform(x, gen)
      views[#views + 1] = view_to_image(a, norm)
      if b ~= nil and #views < n then views[#views + 1] = view_to_image(b, norm) end
    end
  end
  local nrow = opts.nrow and check_integer("preview", "nrow", opts.nrow) or math.ceil(math.sqrt(n))
  if getmetatable(transform) == TwoCropsMT and not opts.nrow and nrow % 2 == 1 then nrow = nrow + 1 end
  local grid = image.grid(views, { nrow = nrow, padding = opts.padding or 2 })
  grid:save(out)
  return out, grid
end

return T
