-- lua/moco/doc.lua: the API reference, one entry per public function, class and method
-- (moco.doc).  The single source of both help(x) at the REPL (moco.repl) and docs/api.md
-- (`make docs` writes it with doc.markdown(); tests/lua/test_doc.lua checks that the file
-- is up to date and that every public function of the listed modules has an entry here).
--
--   entry = doc.find(value)        -- the entry documenting a function, class or object
--   entry = doc.lookup("moco.zeros")
--   text = doc.help_text(x)        -- what help(x) prints
--   text = doc.markdown()          -- docs/api.md
--   missing, stale = doc.coverage()
--
-- Entries: {name, signature, summary, details = ..., example = ...}.  Names are the
-- paths a user types ("moco.nn.Conv2d", "moco.Tensor:sum"); classes list their methods
-- after them ("Class:method"); an example is Lua code that runs as it is (the docs test
-- runs every example of docs/*.md, so of api.md too).
local doc = { sections = {}, entries = {} }

local current
local function section(name, title, intro)
  current = { name = name, title = title, intro = intro, entries = {} }
  doc.sections[#doc.sections + 1] = current
end
local function add(kind, t)
  local e = { kind = kind, name = t[1], signature = t[2], summary = t[3], details = t.details, example = t.example,
              parent = t.parent, protocol = t.protocol, instance_only = t.instance_only, section = current }
  current.entries[#current.entries + 1] = e
  doc.entries[#doc.entries + 1] = e
  return e
end
local function F(t) return add("function", t) end
local function C(t) return add("class", t) end
local function M(t) return add("method", t) end

-- ====================================================================== moco (core)
section("moco", "Tensors, random numbers, files", [[
`moco-lua` preloads the module as the global `moco`; in a plain Lua script write
`local moco = require "moco"`.  Tensors are float32 and contiguous, NCHW for images.
Positions are 1-based (dimensions, indices, `narrow` starts, `max` positions); negative
positions count from the end.  Class labels are values, 0-based as torchvision's.
Submodules (`moco.nn`, `moco.data` ...) load on first use.]])

F{ "moco.tensor", "moco.tensor(values) -> Tensor", "A tensor from nested tables of numbers, a number (0-d) or a tensor (a copy).",
   details = "Ragged rows are an error naming the element.", example = [[
local x = moco.tensor{{1, 2}, {3, 4}}
assert(x:size(1) == 2 and x:get(2, 1) == 3)]] }
F{ "moco.zeros", "moco.zeros(shape) | moco.zeros(d1, d2, ...) -> Tensor", "A tensor of zeros; shape is a table {2, 3} or the sizes." }
F{ "moco.ones", "moco.ones(shape) -> Tensor", "A tensor of ones." }
F{ "moco.empty", "moco.empty(shape) -> Tensor", "A new tensor (zeroed, like zeros)." }
F{ "moco.full", "moco.full(shape, value) -> Tensor", "A tensor filled with value." }
F{ "moco.rand", "moco.rand(shape [, generator]) -> Tensor", "Uniform U[0, 1) values from a generator (default: the global one)." }
F{ "moco.randn", "moco.randn(shape [, generator]) -> Tensor", "Standard normal values from a generator (default: the global one)." }
F{ "moco.arange", "moco.arange(n) | moco.arange(a, b [, step]) -> Tensor", "0, 1, ..., n-1; or a, a+step, ... below b (torch.arange's length ceil((b-a)/step))." }
F{ "moco.matmul", "moco.matmul(a, b [, trans_a [, trans_b]]) -> Tensor", "The matrix product of two 2-d tensors (OpenBLAS sgemm), optionally transposing either." }
F{ "moco.load_npy", "moco.load_npy(path) -> Tensor", "A NumPy .npy file: little-endian float32/float64, C order, format 1.0-3.0." }
F{ "moco.load_idx", "moco.load_idx(path) -> Tensor", "An IDX (MNIST-format) unsigned-byte file, gzip or raw, as its raw 0-255 values." }
F{ "moco.save", "moco.save(path, tensors [, metadata [, {dtypes = {name = 'I64'|'U8'|'F64'}}]])",
   "Writes name -> tensor as a safetensors file, atomically (temporary file, fsync, rename).",
   details = "metadata is a table of strings (numbers are converted); encode structures with moco.json_encode." }
F{ "moco.load", "moco.load(path) -> tensors, metadata", "Reads a safetensors file: name -> Tensor, and its string metadata.",
   details = "Everything is checked before it is trusted (header bounds, dtypes, offsets tiling the data); errors name the file and the tensor." }
F{ "moco.safe_open", "moco.safe_open(path) -> SafetensorsFile", "Opens a safetensors file to read only the tensors you ask for (use with <close>)." }
F{ "moco.json_encode", "moco.json_encode(value) -> string", "JSON of a Lua value (tables, strings, finite numbers, booleans); the shortest exact floats." }
F{ "moco.json_decode", "moco.json_decode(text) -> value", "The Lua value of a JSON text (integers stay integers)." }
F{ "moco.manual_seed", "moco.manual_seed(seed)", "Reseeds the default generator (seeded with 0 at start-up, so a session is reproducible)." }
F{ "moco.default_generator", "moco.default_generator() -> Generator", "The global generator used when none is given." }
F{ "moco.set_num_threads", "moco.set_num_threads(n)", "Sets the compute threads (1 to 64, the caller included): libmoco's pool, on which the layers run, and OpenBLAS's count for products outside the layers (contrastive logits, kNN). The default is MOCO_NUM_THREADS, else the cores this process may use." }
F{ "moco.get_num_threads", "moco.get_num_threads() -> n", "The size of the compute pool (what moco.set_num_threads last set)." }
F{ "moco.time", "moco.time() -> seconds", "A monotonic clock in seconds (for timing)." }
F{ "moco.isatty", "moco.isatty('stdin'|'stdout'|'stderr') -> boolean", "Whether that stream is a terminal." }
F{ "moco.defer_interrupts", "moco.defer_interrupts(on) -> previous", "While on, Ctrl-C and SIGTERM are only recorded (train.fit turns it on so a step is never cut in half).",
   details = "Only under the moco-lua executable." }
F{ "moco.interrupt_pending", "moco.interrupt_pending() -> 'SIGINT' | 'SIGTERM' | nil", "The signal recorded in deferred mode, if any." }
F{ "moco.finish_interrupt", "moco.finish_interrupt()", "Acts on a recorded signal once the work is saved: a script exits with 130/143, a REPL line stops with 'interrupted!'." }

C{ "moco.Tensor", "a moco.Tensor (made by moco.tensor, zeros, randn, ...)", "A float32 tensor: shape, a contiguous storage shared by views, arithmetic, reductions.",
   details = "`a + b`, `a - b`, `a * b`, `a / b`, `-a` with tensors or numbers on either side; tensors broadcast as in NumPy. `#t` is the size of dimension 1, `t[i]` a number (1-d) or the i-th sub-tensor (a view), `t[i] = v` fills or copies a row, `tostring(t)` shows the shape and a preview." }
M{ "moco.Tensor:shape", "t:shape() -> {d1, d2, ...}", "The sizes, outermost first." }
M{ "moco.Tensor:size", "t:size([d]) -> n | d1, d2, ...", "The size of dimension d (1-based), or all sizes." }
M{ "moco.Tensor:dim", "t:dim() -> n", "The number of dimensions." }
M{ "moco.Tensor:numel", "t:numel() -> n", "The number of elements." }
M{ "moco.Tensor:is_view", "t:is_view() -> boolean", "Whether t shares its storage with another tensor." }
M{ "moco.Tensor:get", "t:get(i, j, ...) -> number", "One element (1-based positions)." }
M{ "moco.Tensor:set", "t:set(i, j, ..., value)", "Sets one element." }
M{ "moco.Tensor:item", "t:item() -> number", "The value of a one-element tensor." }
M{ "moco.Tensor:totable", "t:totable() -> table", "Nested Lua tables of the values." }
M{ "moco.Tensor:reshape", "t:reshape(shape | d1, d2, ...) -> Tensor", "The same storage with another shape (one -1 allowed)." }
M{ "moco.Tensor:view", "t:view(...) -> Tensor", "The same as reshape." }
M{ "moco.Tensor:narrow", "t:narrow(dim, start, length) -> Tensor", "A slice along dim (a view along dimension 1, a copy elsewhere)." }
M{ "moco.Tensor:select", "t:select(dim, i) -> Tensor", "The i-th slice along dim, without that dimension." }
M{ "moco.Tensor:transpose", "t:transpose(d1, d2) -> Tensor", "A copy with two dimensions swapped." }
M{ "moco.Tensor:t", "t:t() -> Tensor", "The transpose of a 2-d tensor (a copy)." }
M{ "moco.Tensor:clone", "t:clone() -> Tensor", "A copy with its own storage." }
M{ "moco.Tensor:copy", "t:copy(src) -> t", "Copies src (same number of elements) into t." }
M{ "moco.Tensor:fill", "t:fill(value) -> t", "Sets every element." }
M{ "moco.Tensor:zero", "t:zero() -> t", "Sets every element to 0." }
M{ "moco.Tensor:add", "t:add(x) -> Tensor", "t + x (a tensor or a number), a new tensor; also sub, mul, div." }
M{ "moco.Tensor:sub", "t:sub(x) -> Tensor", "t - x, a new tensor." }
M{ "moco.Tensor:mul", "t:mul(x) -> Tensor", "t * x elementwise, a new tensor." }
M{ "moco.Tensor:div", "t:div(x) -> Tensor", "t / x elementwise, a new tensor." }
M{ "moco.Tensor:add_", "t:add_(x) -> t", "t += x in place (x must broadcast to t); also sub_, mul_, div_." }
M{ "moco.Tensor:sub_", "t:sub_(x) -> t", "t -= x in place." }
M{ "moco.Tensor:mul_", "t:mul_(x) -> t", "t *= x in place." }
M{ "moco.Tensor:div_", "t:div_(x) -> t", "t /= x in place." }
M{ "moco.Tensor:scale_", "t:scale_(s) -> t", "t *= s for a number s." }
M{ "moco.Tensor:axpy_", "t:axpy_(alpha, x) -> t", "t += alpha * x." }
M{ "moco.Tensor:neg", "t:neg() -> Tensor", "-t; neg_ in place." }
M{ "moco.Tensor:neg_", "t:neg_() -> t", "t = -t in place." }
M{ "moco.Tensor:exp", "t:exp() -> Tensor", "Elementwise exp; exp_ in place." }
M{ "moco.Tensor:exp_", "t:exp_() -> t", "Elementwise exp in place." }
M{ "moco.Tensor:log", "t:log() -> Tensor", "Elementwise natural log; log_ in place." }
M{ "moco.Tensor:log_", "t:log_() -> t", "Elementwise log in place." }
M{ "moco.Tensor:sqrt", "t:sqrt() -> Tensor", "Elementwise square root; sqrt_ in place." }
M{ "moco.Tensor:sqrt_", "t:sqrt_() -> t", "Elementwise square root in place." }
M{ "moco.Tensor:clamp", "t:clamp(lo [, hi]) -> Tensor", "Values limited to [lo, hi] (nil for no bound); clamp_ in place." }
M{ "moco.Tensor:clamp_", "t:clamp_(lo [, hi]) -> t", "clamp in place." }
M{ "moco.Tensor:sum", "t:sum() -> number | t:sum(dim [, keepdim]) -> Tensor", "The sum of all elements (accumulated in double), or along a dimension." }
M{ "moco.Tensor:mean", "t:mean() -> number | t:mean(dim [, keepdim]) -> Tensor", "The mean of all elements, or along a dimension." }
M{ "moco.Tensor:max", "t:max() -> value, position | t:max(dim [, keepdim]) -> values, positions", "The maximum (NaN propagates) and its 1-based position." }
M{ "moco.Tensor:argmax", "t:argmax(dim) -> Tensor", "The 1-based positions of the maxima along dim." }
M{ "moco.Tensor:matmul", "a:matmul(b [, trans_a [, trans_b]]) -> Tensor", "The matrix product of two 2-d tensors (OpenBLAS sgemm)." }
M{ "moco.Tensor:normalize", "t:normalize([eps]) -> Tensor", "Rows of an (N, D) tensor divided by max(norm, eps), as torch.nn.functional.normalize." }
M{ "moco.Tensor:normalize_", "t:normalize_([eps]) -> t", "normalize in place." }
M{ "moco.Tensor:save_npy", "t:save_npy(path)", "Writes a .npy file NumPy reads, atomically." }
M{ "moco.Tensor:free", "t:free()", "Releases the storage now (also __close: `local t <close> = ...`)." }

C{ "moco.Generator", "moco.Generator(seed [, stream]) -> Generator", "An independent PCG32 random stream; its state can be saved exactly.", example = [[
local g = moco.Generator(42)
local s = g:get_state(); local u = g:uniform(); g:set_state(s)
assert(g:uniform() == u)]] }
M{ "moco.Generator:uniform", "g:uniform([a, b]) -> number", "U[0, 1), or U[a, b)." }
M{ "moco.Generator:normal", "g:normal([mean, std]) -> number", "A normal value (Box-Muller; the second value is cached)." }
M{ "moco.Generator:random", "g:random(n) -> integer", "An integer in 1..n." }
M{ "moco.Generator:permutation", "g:permutation(n) -> {...}", "A random order of 1..n (a table)." }
M{ "moco.Generator:seed", "g:seed(seed [, stream])", "Restarts the stream." }
M{ "moco.Generator:get_state", "g:get_state() -> state", "The exact state (including a cached normal)." }
M{ "moco.Generator:set_state", "g:set_state(state)", "Puts a saved state back." }

C{ "moco.SafetensorsFile", "moco.safe_open(path)", "An open safetensors file (its header parsed and checked)." }
M{ "moco.SafetensorsFile:keys", "f:keys() -> {names}", "The tensor names, sorted." }
M{ "moco.SafetensorsFile:info", "f:info(name) -> dtype, shape", "A tensor's dtype ('F32', 'I64' ...) and shape, without reading it." }
M{ "moco.SafetensorsFile:has", "f:has(name) -> boolean", "Whether the file holds a tensor of that name." }
M{ "moco.SafetensorsFile:get_tensor", "f:get_tensor(name) -> Tensor", "Reads one tensor." }
M{ "moco.SafetensorsFile:metadata", "f:metadata() -> table", "The string metadata." }
M{ "moco.SafetensorsFile:close", "f:close()", "Closes the file (also __close and __gc)." }

-- ====================================================================== moco.nn
section("moco.nn", "Layers (moco.nn)", [[
Torch7's module protocol with PyTorch's names: `y = m:forward(x)` caches what backward
needs; `gx = m:backward(x, gy)` accumulates the parameter gradients and returns the input
gradient; the two halves are `backward_params` and `backward_input`.  Parameter names
follow torchvision (`layer1.0.bn1.running_mean`).  Buffers are reused between calls:
clone what you keep.]])

C{ "moco.nn.Module", "nn.Module (the base class)", "What every layer and network has: parameters, state dicts, modes, gradients." }
M{ "moco.nn.Module:forward", "m:forward(x) -> y", "The output for x (kept in m.output); every layer defines it.", protocol = true }
M{ "moco.nn.Module:backward", "m:backward(x, gy) -> gx", "Accumulates parameter gradients (unless requires_grad(false)) and returns the gradient of x." }
M{ "moco.nn.Module:backward_input", "m:backward_input(x, gy) -> gx", "Only the input gradient; every layer defines it.", protocol = true }
M{ "moco.nn.Module:backward_params", "m:backward_params(x, gy)", "Only the parameter gradients (accumulated into m.grad_weight ...)." }
M{ "moco.nn.Module:parameters", "m:parameters() -> params, grads", "The parameter tensors and their gradients, in registration order (optim.SGD accepts them)." }
M{ "moco.nn.Module:named_parameters", "m:named_parameters() -> {{name=, param=, grad=, module=, key=}, ...}", "The parameters with their torchvision names." }
M{ "moco.nn.Module:num_parameters", "m:num_parameters() -> n", "The number of parameter values." }
M{ "moco.nn.Module:state_dict", "m:state_dict() -> {name = Tensor}", "Every parameter and buffer by torchvision name (the tensors themselves, not copies)." }
M{ "moco.nn.Module:state_dict_keys", "m:state_dict_keys() -> {names}", "The state dict's names, sorted." }
M{ "moco.nn.Module:load_state_dict", "m:load_state_dict(sd [, strict]) -> missing, unexpected", "Copies values in (shapes must match); strict (default) refuses missing or unexpected names." }
M{ "moco.nn.Module:zero_grad", "m:zero_grad() -> m", "Sets every gradient to zero." }
M{ "moco.nn.Module:train", "m:train([mode]) -> m", "Training mode (batch norm uses batch statistics and updates running ones)." }
M{ "moco.nn.Module:eval", "m:eval() -> m", "Eval mode (batch norm uses its running statistics)." }
M{ "moco.nn.Module:requires_grad", "m:requires_grad(flag) -> m", "false: backward skips parameter gradients (a frozen backbone, the key encoder)." }
M{ "moco.nn.Module:flatten_parameters", "m:flatten_parameters() -> params, grads", "Moves every parameter and gradient into one contiguous block each (views into them)." }
M{ "moco.nn.Module:flat_parameters", "m:flat_parameters() -> params, grads", "The flat blocks (flattening first if needed)." }
M{ "moco.nn.Module:children", "m:children() -> {modules}", "The direct children, in order." }
M{ "moco.nn.Module:apply", "m:apply(fn) -> m", "Calls fn(module, prefix) for m and every descendant, parents first." }
M{ "moco.nn.Module:add_module", "m:add_module(name, child) -> child", "Registers a child module." }
M{ "moco.nn.Module:register_parameter", "m:register_parameter(name, t) -> t", "Registers a parameter (and creates grad_<name>)." }
M{ "moco.nn.Module:register_buffer", "m:register_buffer(name, t) -> t", "Registers a buffer (in the state dict, not trained)." }
M{ "moco.nn.Module:repr", "m:repr() -> string", "PyTorch's printout of the module tree (what tostring gives)." }
M{ "moco.nn.Module:extra_repr", "m:extra_repr() -> string", "The arguments shown in the printout." }
C{ "moco.nn.Conv2d", "nn.Conv2d(in_channels, out_channels, kernel_size [, {stride = 1, padding = 0, bias = true, generator = g}])",
   "2-d convolution (NCHW), PyTorch's shapes and initialisation.", parent = "moco.nn.Module", example = [[
local conv = moco.nn.Conv2d(3, 8, 3, {padding = 1, bias = false})
local y = conv:forward(moco.randn{2, 3, 16, 16})
assert(y:size(2) == 8 and y:size(3) == 16)]] }
M{ "moco.nn.Conv2d:output_shape", "conv:output_shape(x) -> {N, C, H, W}", "The shape of the output for x." }
C{ "moco.nn.BatchNorm2d", "nn.BatchNorm2d(num_features [, {eps = 1e-5, momentum = 0.1, affine = true, track_running_stats = true, splits = 1}])",
   "Batch norm over (N, C, H, W); splits > 1 normalises groups of the batch separately (SplitBatchNorm).",
   details = "PyTorch's semantics: the biased variance to normalise, the unbiased one for the running variance.", parent = "moco.nn.Module" }
C{ "moco.nn.BatchNorm1d", "nn.BatchNorm1d(num_features [, opts])", "Batch norm over (N, C).", parent = "moco.nn.Module" }
C{ "moco.nn.ReLU", "nn.ReLU([inplace])", "max(x, 0).", parent = "moco.nn.Module" }
C{ "moco.nn.MaxPool2d", "nn.MaxPool2d(kernel_size [, stride [, padding]])", "Max pooling (NaN propagates, as PyTorch).", parent = "moco.nn.Module" }
C{ "moco.nn.AdaptiveAvgPool2d", "nn.AdaptiveAvgPool2d(1)", "Global average pooling to (N, C, 1, 1) (the only output size supported).", parent = "moco.nn.Module" }
C{ "moco.nn.Flatten", "nn.Flatten()", "(N, ...) -> (N, rest), as torch.flatten(x, 1).", parent = "moco.nn.Module" }
C{ "moco.nn.Identity", "nn.Identity()", "y = x.", parent = "moco.nn.Module" }
C{ "moco.nn.Linear", "nn.Linear(in_features, out_features [, {bias = true, generator = g}])", "y = x W^T + b, PyTorch's initialisation.", parent = "moco.nn.Module" }
C{ "moco.nn.Normalize", "nn.Normalize([eps])", "L2-normalises the rows of (N, D), as F.normalize(x, dim=1).", parent = "moco.nn.Module" }
C{ "moco.nn.Sequential", "nn.Sequential{m1, m2, ...} | nn.Sequential(m1, m2, ...)", "Children applied in order, named '0', '1', ... as in PyTorch.", parent = "moco.nn.Module" }
M{ "moco.nn.Sequential:add", "seq:add(m) -> m", "Appends a child." }
M{ "moco.nn.Sequential:get", "seq:get(i) -> module", "The i-th child (1-based)." }
C{ "moco.nn.CrossEntropyLoss", "nn.CrossEntropyLoss()", "loss = c:forward(logits (N, K), labels (N)) with mean reduction; c:backward() gives d loss / d logits.", parent = "moco.nn.Module" }
C{ "moco.nn.Arena", "nn.Arena()", "Named scratch tensors shared by the modules of one network, so buffers whose lives do not overlap share memory." }
M{ "moco.nn.Arena:get", "arena:get(slot, shape) -> Tensor", "A tensor of that shape over the storage of slot (grown when too small; contents are what the slot last held)." }
M{ "moco.nn.Arena:reserve", "arena:reserve({slots}, n)", "Makes each slot hold at least n values." }
M{ "moco.nn.Arena:bytes", "arena:bytes() -> n", "The bytes the arena holds." }
F{ "moco.nn.class", "nn.class(name [, parent]) -> class", "Makes a module class: calling it constructs an instance through its __init." }
F{ "moco.nn.check_options", "nn.check_options(fn, opts, known) -> opts", "Refuses option names not in known, naming the known ones (a typo never becomes a default)." }
F{ "moco.nn.init.uniform_", "nn.init.uniform_(t, a, b [, generator]) -> t", "Fills t with U[a, b)." }
F{ "moco.nn.init.normal_", "nn.init.normal_(t, mean, std [, generator]) -> t", "Fills t with N(mean, std^2)." }
F{ "moco.nn.init.kaiming_normal_fan_out_", "nn.init.kaiming_normal_fan_out_(t [, generator]) -> t", "torchvision's ResNet convolution initialisation: N(0, 2 / fan_out)." }

-- ====================================================================== moco.models
section("moco.models", "ResNet encoders (moco.models)", [[
torchvision's ResNet-18/34/50 (names, shapes and initialisation), and He et al.'s CIFAR
ResNet-20 with its smaller siblings ResNet-14 and ResNet-8.  Options: `num_classes` (1000),
`in_channels` (3), `cifar_stem` (a 3x3 stride-1 stem, no max-pool), `stem_stride` (1; 2 makes
that 3x3 stem stride 2, halving every stage's map), `width` (channel multiplier),
`zero_init_residual`, `bn_splits` (split batch norm), `generator`.]])
F{ "moco.models.resnet18", "models.resnet18([opts]) -> ResNet", "ResNet-18 (BasicBlock, 2-2-2-2).", example = [[
local net = moco.models.resnet18{num_classes = 10, width = 0.25}
local y = net:forward(moco.randn{2, 3, 32, 32})
assert(y:size(2) == 10)
local gx = net:backward(moco.randn{2, 3, 32, 32}, moco.ones{2, 10}) -- the input gradient
assert(gx:size(2) == 3)]] }
F{ "moco.models.resnet34", "models.resnet34([opts]) -> ResNet", "ResNet-34 (BasicBlock, 3-4-6-3)." }
F{ "moco.models.resnet50", "models.resnet50([opts]) -> ResNet", "ResNet-50 (Bottleneck, stride on the 3x3 as torchvision v1.5)." }
F{ "moco.models.resnet20", "models.resnet20([opts]) -> ResNet", "ResNet-20 for small images: 16/32/64 channels, 3 blocks per stage, 3x3 stem." }
F{ "moco.models.resnet14", "models.resnet14([opts]) -> ResNet", "ResNet-14 for small images: ResNet-20 with 2 blocks per stage." }
F{ "moco.models.resnet8", "models.resnet8([opts]) -> ResNet", "ResNet-8 for small images: ResNet-20 with 1 block per stage." }
F{ "moco.models.get", "models.get(name, opts) -> ResNet", "The constructor by name ('resnet8', 'resnet14', 'resnet18', 'resnet20', 'resnet34', 'resnet50')." }
C{ "moco.models.ResNet", "a ResNet from models.resnet18 ...", "conv1, bn1, relu, maxpool, layer1-4, avgpool, fc, as torchvision.", parent = "moco.nn.Module",
   details = "net.feature_dim is the pooled feature size; backward returns the input gradient unless net.need_input_grad == false (MoCo's query encoder)." }
M{ "moco.models.ResNet:features", "net:features(x) -> (N, feature_dim)", "The pooled representation before fc." }
M{ "moco.models.ResNet:backward_features", "net:backward_features(gf) -> gx", "Backward from the gradient of the pooled features." }
M{ "moco.models.ResNet:set_keep_activations", "net:set_keep_activations(flag) -> net", "false: forward keeps nothing for backward (features only, in a few shared buffers); backward is then an error." }
C{ "moco.models.BasicBlock", "models.BasicBlock(inplanes, planes, stride, downsample, bn)", "torchvision's BasicBlock (two 3x3 convolutions).", parent = "moco.nn.Module" }
C{ "moco.models.Bottleneck", "models.Bottleneck(inplanes, planes, stride, downsample, bn)", "torchvision's Bottleneck (1x1, 3x3, 1x1).", parent = "moco.nn.Module" }

-- ====================================================================== moco.MoCo
section("moco.MoCo", "The MoCo model (moco.MoCo)", [[
After the official `moco/builder.py` and the CIFAR-10 demo: a query encoder trained by SGD,
a key encoder updated as its moving average, a queue of K negative keys, InfoNCE, and
shuffling BN on one process (split batch norm over `bn_splits` groups with the key batch
shuffled across them).]])
C{ "moco.MoCo", "moco.MoCo{arch = 'resnet50', dim = 128, K = 65536, m = 0.999, T = 0.07, mlp = false, bn_splits = 8, symmetric = false, shuffle = true, in_channels = 3, cifar_stem = false, stem_stride = 1, width = 1, lr = 0.03, momentum = 0.9, weight_decay = 1e-4, seed = 0}",
   "A MoCo v1/v2 model with its optimizer; the lr given here is the one train.fit and Trainer use.", parent = "moco.nn.Module", example = [[
local model = moco.MoCo{arch = "resnet20", width = 0.25, in_channels = 1, dim = 16, K = 64, bn_splits = 2, mlp = true}
local x = moco.randn{16, 1, 12, 12}
local loss, acc1, acc5 = model:step(x, x:clone())
assert(loss > 0 and model.queue_ptr == 16)]] }
M{ "moco.MoCo:step", "model:step(im_q, im_k [, indices]) -> loss, acc1, acc5", "One training step: momentum update, keys, InfoNCE, backward, SGD, enqueue (indices: the samples' dataset rows, for mechanism = 'memory_bank')." }
M{ "moco.MoCo:check_batch", "model:check_batch(n)", "Raises the error step() would give a batch of n images (bn_splits, K a multiple of the keys per step)." }
M{ "moco.MoCo:end_to_end_loss", "model:end_to_end_loss(im_q, im_k) -> loss, acc1, acc5", "mechanism = 'end_to_end': keys from encoder_q with gradients, the other keys of the batch as negatives (docs/mechanisms.md)." }
M{ "moco.MoCo:memory_bank_loss", "model:memory_bank_loss(im_q, indices) -> loss, acc1, acc5, q", "mechanism = 'memory_bank': K negatives drawn from the bank of stored features (docs/mechanisms.md)." }
F{ "moco.MoCo.check_config", "MoCo.check_config(options [, batch_size])", "Checks a model's options (and a batch size) before anything is built; one clear error." }
F{ "moco.MoCo.check_batch_size", "MoCo.check_batch_size(options, n)", "The batch-size part of check_config." }
F{ "moco.MoCo.available_memory", "MoCo.available_memory() -> bytes | nil", "Linux's MemAvailable, for the dictionary's memory check." }
M{ "moco.MoCo:encoder", "model:encoder() -> ResNet", "The query encoder (for evaluation)." }
M{ "moco.MoCo:set_lr", "model:set_lr(lr)", "The optimizer's learning rate." }
M{ "moco.MoCo:keys", "model:keys(im_k) -> (N, dim)", "Normalised keys of a batch, without gradients (shuffled across BN groups)." }
M{ "moco.MoCo:momentum_update", "model:momentum_update()", "theta_k <- m theta_k + (1 - m) theta_q." }
M{ "moco.MoCo:contrastive_loss", "model:contrastive_loss(im_q, im_k) -> loss, acc1, acc5, keys", "One InfoNCE term with its backward (no SGD step)." }
M{ "moco.MoCo:state_dict", "model:state_dict() -> {name = Tensor}", "Both encoders, the queue and queue_ptr." }
M{ "moco.MoCo:load_state_dict", "model:load_state_dict(sd [, strict])", "The inverse of state_dict." }
M{ "moco.MoCo:extra_repr", "model:extra_repr() -> string", "The model's settings in one line." }
M{ "moco.MoCo.make_encoder", "MoCo.make_encoder(options, generator) -> ResNet", "An encoder as MoCo builds it (num_classes = dim; with mlp, fc = Linear, ReLU, fc)." }

-- ====================================================================== moco.optim
section("moco.optim", "Optimizer and schedules (moco.optim)", [[
SGD with PyTorch's update rule over the model's flat parameter block, and the official
learning-rate schedules (epochs 0-based).]])
C{ "moco.optim.SGD", "optim.SGD(model | model:parameters(), {lr =, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false})",
   "PyTorch's SGD; the momentum buffer is created from the first gradient, as PyTorch does.", example = [[
local net = moco.nn.Linear(4, 2)
local opt = moco.optim.SGD(net:parameters(), {lr = 0.1, momentum = 0.9})
net:zero_grad(); net:backward(moco.ones{3, 4}, moco.ones{3, 2}); opt:step()
assert(opt.steps == 1)]] }
M{ "moco.optim.SGD:step", "opt:step()", "One update of every parameter." }
M{ "moco.optim.SGD:set_lr", "opt:set_lr(lr)", "Sets the learning rate." }
M{ "moco.optim.SGD:get_lr", "opt:get_lr() -> lr", "The learning rate." }
M{ "moco.optim.SGD:state_dict", "opt:state_dict() -> {momentum_buffer=, steps=, config=}", "The optimizer's state." }
F{ "moco.optim.cosine_lr", "optim.cosine_lr(base_lr, epoch, epochs) -> lr", "The official --cos schedule: base_lr * 0.5 * (1 + cos(pi * epoch / epochs))." }
F{ "moco.optim.step_lr", "optim.step_lr(base_lr, epoch, milestones [, gamma = 0.1]) -> lr", "x gamma for each milestone reached." }
F{ "moco.optim.warmup_lr", "optim.warmup_lr(lr, progress, warmup) -> lr", "Linear warm-up over `warmup` epochs (progress: the fractional epoch)." }

-- ====================================================================== moco.train
section("moco.train", "Training loop (moco.train)", [[
`Trainer` for stepping at the REPL, `fit` for scripts (the official loop).  Histories hold
one record per epoch begun; Ctrl-C ends a run between two steps and keeps the record.]])
C{ "moco.train.Trainer", "train.Trainer(model, loader [, {lr = <the model's>, epochs =, cos =, schedule =, warmup_epochs =, print_freq = 10, monitor =, monitor_every =, on_step =, on_epoch_end =, on_interrupt =, on_diverge =, should_stop =, log =, start_epoch =, start_step =, resume_sums =, history =}])",
   "A training run you can advance in pieces: trainer:run{steps = 50}, run{epochs = 1}, run().",
   details = "trainer.history, trainer.epoch and trainer.step say where it is; each run continues from there (inside an epoch too).", example = [[
local T = moco.transforms
local ds = moco.data.Subset(moco.data.FashionMNIST{train = true}, 64)
local aug = T.Compose{T.RandomResizedCrop(12), T.ToTensor()}
local loader <close> = moco.data.Loader(ds, {batch_size = 16, transform = T.TwoCrops(aug), workers = 1})
local model = moco.MoCo{arch = "resnet20", width = 0.25, in_channels = 1, dim = 16, K = 64, bn_splits = 2, lr = 0.05}
local trainer = moco.train.Trainer(model, loader, {log = function() end})
trainer:run{steps = 2}
trainer:run{steps = 3}
assert(trainer.epoch == 1 and trainer.step == 1 and #trainer.history == 2)]] }
M{ "moco.train.Trainer:run", "trainer:run([{steps = N, epochs = N}]) -> history", "Trains N more steps, or to the end of the next N epochs, or until `epochs`." }
M{ "moco.train.Trainer:begin_epoch", "trainer:begin_epoch() -> record", "Starts epoch trainer.epoch: its lr, the loader's order, a new record (run() calls it)." }
M{ "moco.train.Trainer:enter_epoch", "trainer:enter_epoch() -> record", "Begins (or continues) the current epoch and draws the batches a resume skips (run() calls it)." }
M{ "moco.train.Trainer:run_steps", "trainer:run_steps(run, record, max_steps, pending) -> signal | nil, stopped", "The steps of one segment: to the epoch's end, the budget, a signal or a stop (run() calls it)." }
M{ "moco.train.Trainer:end_segment", "trainer:end_segment(record, signal, stopped)", "The monitor, the epoch line and on_epoch_end after a segment; moves to the next epoch (run() calls it)." }
M{ "moco.train.Trainer:finish_interrupt", "trainer:finish_interrupt(signal, record)", "on_interrupt, then the end of a script (130/143) or of a REPL line (run() calls it)." }
M{ "moco.train.Trainer:update_record", "trainer:update_record(record)", "Recomputes a record's means and rates from its sums." }
M{ "moco.train.Trainer:eta", "trainer:eta(run) -> epoch_seconds, total_seconds", "Time left in the epoch and in the run, from this call's rate." }
M{ "moco.train.Trainer:show_step", "trainer:show_step(run, loss, acc1, acc5)", "The progress bar, periodic line and on_step hook of one step." }
F{ "moco.train.fit", "train.fit(model, loader, {epochs =, lr =, cos =, schedule =, max_steps =, ...}) -> history", "The official loop `for epoch in range(start_epoch, epochs)`; Trainer(...):run{steps = max_steps}.",
   details = "The trainer it made stays in moco.train.last (so a Ctrl-C at the REPL keeps its history)." }
F{ "moco.train.learning_rate", "train.learning_rate(opts, epoch) -> lr", "The epoch's rate under opts' schedule (cos, or schedule milestones)." }
F{ "moco.train.request_stop", "train.request_stop()", "Ends training between two steps." }
F{ "moco.train.stop_requested", "train.stop_requested() -> boolean", "Whether request_stop was called." }

-- ====================================================================== moco.data
section("moco.data", "Datasets and the loader (moco.data)", [[
Datasets read their files in C; the loader runs the augmentation in worker threads with a
per-sample random stream, so batches are bitwise identical whatever the number of workers.
See docs/data.md.]])
F{ "moco.data.ImageFolder", "data.ImageFolder(root [, {channels = 3, quiet = false}]) -> Dataset", "root/<class>/**/<image>, torchvision's class and sample order." }
F{ "moco.data.ImageFiles", "data.ImageFiles(root [, {channels = 3, quiet = false}]) -> Dataset", "Every image under root, recursively, label -1: an ImageFolder without classes.",
   details = "torchvision has no such dataset; the name says what it holds, as ImageFolder's does. The walk, sort order (sorted(os.walk(root))) and extensions are ImageFolder's; ds.classes is nil." }
F{ "moco.data.FileList", "data.FileList(list_path [, {root = dir, channels = 3, delimiter = 'auto'}]) -> Dataset", "One path a line, relative to root (default: the list's directory), optionally with a label.",
   details = "Fields separated by white space or a comma ('auto' decides from the first sample line); a header line path,label is skipped, as are empty lines and lines starting with #. Every line has a label (a non-negative integer) or none does (then -1); ds.classes is nil. Absolute paths, '..', missing files and bad labels are errors naming the file and line; lists above 1 GB are refused." }
F{ "moco.data.CIFAR10", "data.CIFAR10(root [, {train = true}]) -> Dataset", "The official CIFAR-10 binary batches, in memory.",
   details = "The Python version torchvision downloads (cifar-10-batches-py, pickles) is refused, never unpickled, with the address of the binary one: https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz." }
F{ "moco.data.CIFAR100", "data.CIFAR100(root [, {train = true}]) -> Dataset", "CIFAR-100 binary files (fine labels)." }
F{ "moco.data.IDX", "data.IDX(images, labels [, {classes = {...}}]) -> Dataset", "MNIST-format files, raw or gzip." }
F{ "moco.data.FashionMNIST", "data.FashionMNIST{train = true [, root]} -> Dataset", "Fashion-MNIST from Debian's dataset-fashion-mnist (28x28 gray).", example = [[
local ds = moco.data.FashionMNIST{train = false}
local image, label = ds:get(1)
assert(#ds == 10000 and ds.classes[label + 1] == "Ankle boot")]] }
F{ "moco.data.Subset", "data.Subset(ds, n | {positions}) -> Dataset", "The first n samples, or those positions (1-based)." }
F{ "moco.data.named", "data.named(name [, {image_size = 224}]) -> train, test | nil, kind, test_transform", "What a recipe's --data names: 'fashion-mnist', 'cifar10:ROOT' or a folder (train/, val/); normalised with data.STATS." }
F{ "moco.data.Loader", "data.Loader(ds, {batch_size = 1, transform =, workers = 2, shuffle = true, drop_last = true, seed = 0, prefetch = 2, on_error = 'raise', shard = nil}) -> Loader",
   "Batches of (N, C, H, W) tensors and (N) labels; with T.TwoCrops, two views per image.  shard = {rank = r, count = n} (0-based rank) takes this rank's part of the shared epoch order, as torch's DistributedSampler: positions r, r + n, ...; the ranks' batches interleaved are one loader's batches of batch_size * n; #loader is the same on every rank (without drop_last the order is padded by wrapping around)." }
F{ "moco.data.bytes", "data.bytes(s) -> moco.Bytes", "An encoded image file held in the string s, for a Lua dataset's get to return (a plain string is a path); #b, b.data." }
F{ "moco.data.cpu_count", "data.cpu_count() -> n", "The number of cores." }
F{ "moco.data.thread_advice", "data.thread_advice(workers) -> n", "The BLAS thread count that fits beside `workers` loader threads." }
C{ "moco.Dataset", "a dataset (data.ImageFolder, ImageFiles, FileList, CIFAR10, FashionMNIST, IDX, Subset)", "#ds samples; ds.classes (names), ds.class_to_idx, ds.name; ds[i] is {image, label}.  data.Loader also takes a dataset written in Lua: any object with #ds and ds:get(i) -> image (a path, data.bytes(s), a moco.Image or a moco.Tensor), label (docs/data.md)." }
M{ "moco.Dataset:get", "ds:get(i) -> image, label", "Sample i (1-based): a moco.Image and torchvision's 0-based label." }
M{ "moco.Dataset:label", "ds:label(i) -> label", "The label of sample i, without decoding." }
M{ "moco.Dataset:path", "ds:path(i) -> path", "The file of sample i (ImageFolder, ImageFiles, FileList), or nil." }
M{ "moco.Dataset:targets", "ds:targets() -> Tensor", "Every label, as a tensor." }
M{ "moco.Dataset:close", "ds:close()", "Releases the dataset (also __close and __gc)." }
C{ "moco.Loader", "data.Loader(ds, opts)", "#loader batches per epoch; loader.dataset, loader.batch_size, loader.workers, loader.transform." }
M{ "moco.Loader:iter", "for im_q, im_k, labels in loader:iter() do ... end", "The rest of the current epoch; a batch's tensors are closed when the loop moves on." }
M{ "moco.Loader:next", "loader:next() -> im_q, im_k, labels | images, labels | nil", "The next batch, or nil at the end of the epoch." }
M{ "moco.Loader:set_epoch", "loader:set_epoch(e)", "Jumps to the start of epoch e (its order)." }
M{ "moco.Loader:epoch", "loader:epoch() -> e", "The current epoch." }
M{ "moco.Loader:position", "loader:position() -> n", "Batches of the current epoch already returned." }
M{ "moco.Loader:set_transform", "loader:set_transform(t)", "Another augmentation, from the next batch returned (prepared batches are remade)." }
M{ "moco.Loader:stats", "loader:stats() -> {wait_seconds, batches, samples, skipped}", "What the loader did since it was made or reset_stats." }
M{ "moco.Loader:reset_stats", "loader:reset_stats()", "Zeroes the statistics." }
M{ "moco.Loader:close", "loader:close()", "Stops and joins the workers (also __close and __gc)." }
M{ "moco.Loader:_set_transform", "loader:_set_transform(t, two_crops, lua_apply)", "The C side of set_transform (data.lua resolves TwoCrops)." }

-- ====================================================================== moco.image
section("moco.image", "Images (moco.image)", [[
8-bit HWC images with 1 or 3 channels, like PIL's "L" and "RGB".  PNG, JPEG (also CMYK and
YCCK), GIF (the first frame) and WebP are decoded as PIL opens them, recognised by content;
anything else is an error naming the file.  Saving writes PNG or JPEG.]])
F{ "moco.image.load", "image.load(path [, 'RGB' | 'L']) -> Image", "Decodes a PNG, JPEG (also CMYK and YCCK), GIF (first frame) or WebP file; a damaged file is an error naming it." }
F{ "moco.image.decode", "image.decode(bytes [, mode [, name]]) -> Image", "Decodes PNG, JPEG, GIF or WebP bytes." }
F{ "moco.image.limits", "image.limits() -> {max_pixels =, max_scans =}", "The decoders' bounds: images above max_pixels (width x height) and JPEGs above max_scans progressive scans are refused before the work." }
F{ "moco.image.set_limits", "image.set_limits{max_pixels =, max_scans =} -> previous", "Changes the bounds (a field left out keeps its value; \"default\" restores it)." }
F{ "moco.image.from_tensor", "image.from_tensor(t) -> Image", "A (C, H, W) or (H, W) tensor in [0, 1] as an image." }
F{ "moco.image.grid", "image.grid({images} [, {nrow = 8, padding = 2, pad_value = 0}]) -> Image", "Images in a grid (as torchvision.utils.make_grid); an unknown option is an error." }
C{ "moco.Image", "an image (image.load, ds:get)", "img.width, img.height, img.channels, img.mode." }
M{ "moco.Image:save", "img:save(path [, jpeg_quality])", "Writes PNG or JPEG (by the extension)." }
M{ "moco.Image:to_tensor", "img:to_tensor() -> Tensor", "(C, H, W) in [0, 1], as ToTensor." }
M{ "moco.Image:convert", "img:convert('RGB' | 'L') -> Image", "PIL's convert." }
M{ "moco.Image:clone", "img:clone() -> Image", "A copy." }
M{ "moco.Image:size", "img:size() -> width, height", "The size (PIL's order)." }
M{ "moco.Image:pixel", "img:pixel(x, y) -> v | r, g, b", "One pixel (0-based coordinates, as PIL)." }
M{ "moco.Image:free", "img:free()", "Releases the pixels now." }

-- ====================================================================== moco.transforms
section("moco.transforms", "Augmentations (moco.transforms)", [[
torchvision's names, parameters and semantics, every primitive in C; the results equal
torchvision 0.14 on PIL images byte for byte for the same parameters.  `t(image [, gen])`
applies a transform; tostring gives torchvision's repr.]])
F{ "moco.transforms.Compose", "T.Compose{t1, t2, ...}", "The transforms in order." }
F{ "moco.transforms.RandomApply", "T.RandomApply(t | {t...}, p = 0.5)", "Applies the transforms with probability p." }
F{ "moco.transforms.RandomResizedCrop", "T.RandomResizedCrop(size [, {scale = {0.08, 1}, ratio = {3/4, 4/3}}])", "A random crop of random size and aspect, resized (torchvision's 10 tries and fallback)." }
F{ "moco.transforms.Resize", "T.Resize(size [, {max_size =}])", "Shorter side to size (a number), or exactly {h, w}; bilinear." }
F{ "moco.transforms.CenterCrop", "T.CenterCrop(size)", "The centre crop." }
F{ "moco.transforms.RandomCrop", "T.RandomCrop(size [, {padding =, pad_if_needed = false}])", "A crop at a uniformly drawn position of the image padded with zeros (padding: an int, {left/right, top/bottom} or {left, top, right, bottom}); torchvision's RandomCrop with fill 0." }
F{ "moco.transforms.RandomHorizontalFlip", "T.RandomHorizontalFlip([p = 0.5])", "A horizontal flip with probability p." }
F{ "moco.transforms.ColorJitter", "T.ColorJitter(brightness, contrast, saturation, hue)", "Random brightness/contrast/saturation/hue in random order." }
F{ "moco.transforms.RandomGrayscale", "T.RandomGrayscale([p = 0.1])", "Gray (as 3 channels) with probability p." }
F{ "moco.transforms.Grayscale", "T.Grayscale([num_output_channels = 1])", "Always gray." }
F{ "moco.transforms.GaussianBlur", "T.GaussianBlur{sigma_min, sigma_max}", "MoCo v2's blur: PIL's Gaussian blur with sigma ~ U[min, max]." }
F{ "moco.transforms.ToTensor", "T.ToTensor()", "An image as a (C, H, W) tensor in [0, 1]." }
F{ "moco.transforms.Normalize", "T.Normalize(mean, std)", "(x - mean) / std per channel." }
F{ "moco.transforms.Lambda", "T.Lambda(fn)", "A Lua function as a transform (runs on the Lua side: slower)." }
F{ "moco.transforms.TwoCrops", "T.TwoCrops(t)", "Two independent views per image (MoCo's TwoCropsTransform); must be outermost." }
F{ "moco.transforms.is_transform", "T.is_transform(x) -> boolean", "Whether x is a transform object." }
F{ "moco.transforms.preview", "T.preview(t, source [, {n = 16, out = 'preview.png', seed = 0, nrow, padding = 2}]) -> out, grid", "A PNG grid of n augmented views of an image or of a dataset's first samples." }
F{ "moco.transforms.F.to_tensor", "T.F.to_tensor(img) -> Tensor", "ToTensor's conversion." }
F{ "moco.transforms.F.to_image", "T.F.to_image(t) -> Image", "A tensor in [0, 1] as an image." }
F{ "moco.transforms.F.normalize", "T.F.normalize(t, mean, std) -> Tensor", "Normalize's arithmetic." }
F{ "moco.transforms.F.resize", "T.F.resize(img, size [, opts]) -> Image", "torchvision's resize (bilinear)." }
F{ "moco.transforms.F.crop", "T.F.crop(img, top, left, height, width) -> Image", "A crop (0-based offsets, as torchvision)." }
F{ "moco.transforms.F.center_crop", "T.F.center_crop(img, size) -> Image", "The centre crop." }
F{ "moco.transforms.F.resized_crop", "T.F.resized_crop(img, top, left, height, width, size) -> Image", "Crop then resize." }
F{ "moco.transforms.F.hflip", "T.F.hflip(img) -> Image", "A horizontal flip." }
F{ "moco.transforms.F.adjust_brightness", "T.F.adjust_brightness(img, factor) -> Image", "torchvision's brightness adjustment." }
F{ "moco.transforms.F.adjust_contrast", "T.F.adjust_contrast(img, factor) -> Image", "torchvision's contrast adjustment." }
F{ "moco.transforms.F.adjust_saturation", "T.F.adjust_saturation(img, factor) -> Image", "torchvision's saturation adjustment." }
F{ "moco.transforms.F.adjust_hue", "T.F.adjust_hue(img, factor) -> Image", "torchvision's hue adjustment." }
F{ "moco.transforms.F.rgb_to_grayscale", "T.F.rgb_to_grayscale(img [, num_output_channels = 1]) -> Image", "ITU-R 601 luma, as PIL." }
F{ "moco.transforms.F.gaussian_blur", "T.F.gaussian_blur(img, sigma) -> Image", "PIL's Gaussian blur." }
C{ "moco.transforms.Transform", "a transform (T.Compose, T.RandomResizedCrop, ...)", "t.kind (torchvision's class name), its parameters under torchvision's names, t.lua_only." }
M{ "moco.transforms.Transform:kinds", "t:kinds() -> {kinds}", "The primitive kinds of its C pipeline (nil for a Lua-only one)." }
M{ "moco.transforms.Transform:get_params", "rrc:get_params(img | {h, w} [, gen]) -> top, left, height, width", "RandomResizedCrop's random crop, drawn as it would be." }

-- ====================================================================== moco.eval
section("moco.eval", "Evaluation (moco.eval)", [[
Features of a frozen network, the official demo's weighted kNN, nearest neighbours,
accuracies.  See docs/evaluation.md.]])
F{ "moco.eval.extract_features", "eval.extract_features(net, dataset | loader [, {transform =, features = 'output' | 'pooled', normalize = true, batch_size = 256, workers = 2, cache = path, label =}]) -> features, labels",
   "Runs net in eval mode over the data: (N, D) features (L2-normalised unless normalize = false) and (N) labels." }
F{ "moco.eval.knn", "eval.knn{train_features=, train_labels=, test_features=, test_labels=, k = 200, T = 0.1, classes =} -> top1, top5, predictions",
   "The official CIFAR-10 demo's weighted kNN accuracy (percent)." }
F{ "moco.eval.knn_monitor", "eval.knn_monitor(net, bank_ds, test_ds [, {transform =, k =, T =, features =, cache =}]) -> top1, top5, predictions, features",
   "Features of both sets, then kNN: the demo's monitor." }
F{ "moco.eval.neighbours", "eval.neighbours(query, bank, k) -> index, similarity", "The k most similar bank rows (1-based) for each query row, best first." }
F{ "moco.eval.accuracy", "eval.accuracy(scores, labels) -> top1, top5", "Top-1/top-5 accuracy (percent) of class scores." }
F{ "moco.eval.pixel_features", "eval.pixel_features(source [, opts]) -> features, labels", "Raw pixels as rows in [0, 1]: the baseline representation." }
F{ "moco.eval.standardize", "eval.standardize(x, ...) -> x', ...", "Standardises columns with x's mean and std (floored at 1e-3); also the other sets." }
F{ "moco.eval.load_encoder", "eval.load_encoder(pretrained [, {arch =, in_channels =, cifar_stem =, dim =, seed =}]) -> ResNet",
   "A MoCo checkpoint's query encoder, or for 'random' a fresh one (the untrained baseline)." }

-- ====================================================================== moco.lincls
section("moco.lincls", "Linear classification (moco.lincls)", [[
The protocol of the official main_lincls.py: a frozen backbone in eval mode, a new
Linear(feature_dim, classes), SGD lr 30, 100 epochs, the sanity check.]])
F{ "moco.lincls.run", "lincls.run{backbone=, train_dataset=, test_dataset=, train_transform=, test_transform=, precomputed = true, classes=, ...} -> result",
   "The whole protocol; result = {top1, top5, best_top1, best_epoch, history, mode, seconds}.",
   details = "resume = {epoch, steps, momentum_buffer, history, best_top1, best_epoch} continues a saved classifier; on_epoch_end(record, result, sgd, is_best) is called after each epoch." }
F{ "moco.lincls.prepare", "lincls.prepare(backbone, classes [, generator]) -> linear", "Freezes the backbone and replaces its fc by Linear(feature_dim, classes) ~ N(0, 0.01)." }
F{ "moco.lincls.linear_layer", "lincls.linear_layer(in_features, classes [, generator]) -> Linear", "main_lincls.py's classifier initialisation." }
F{ "moco.lincls.snapshot", "lincls.snapshot(backbone) -> {name = Tensor}", "Copies of every tensor but fc's." }
F{ "moco.lincls.sanity_check", "lincls.sanity_check(backbone, snapshot)", "Errors unless nothing but fc changed (weights and BN buffers, bit for bit)." }
F{ "moco.lincls.evaluate", "lincls.evaluate(linear, features, labels) -> top1, top5, loss", "The classifier's accuracy on features." }
F{ "moco.lincls.fit_precomputed", "lincls.fit_precomputed{linear=, train_features=, train_labels=, test_features=, test_labels=, ...} -> result", "Trains on features extracted once." }
F{ "moco.lincls.fit_augmented", "lincls.fit_augmented{backbone=, train_dataset=, train_transform=, test_features=, test_labels=, ...} -> result", "main_lincls.py's protocol: the frozen backbone on augmented images every epoch." }
F{ "moco.lincls.save_checkpoint", "lincls.save_checkpoint(path, backbone, sgd, {epoch=, steps=, best_top1=, best_epoch=, history=, model=, config=, run_id=})", "The whole classifier, its optimizer and records, as safetensors." }
F{ "moco.lincls.load_checkpoint", "lincls.load_checkpoint(path) -> {backbone=, momentum_buffer=, epoch=, best_top1=, history=, ...}", "A saved classifier, rebuilt after its metadata was checked against its tensors." }

-- ====================================================================== moco.plot
section("moco.plot", "Pictures (moco.plot)", [[
Drawn with cairo; every function returns a moco.Image and, given `path`, writes it.]])
F{ "moco.plot.training_curves", "plot.training_curves(history [, {path =, title =, panels = plot.MOCO_PANELS}]) -> Image", "Loss, contrastive accuracy, kNN and learning rate per epoch." }
F{ "moco.plot.retrieval_grid", "plot.retrieval_grid{query_dataset=, query_features=, bank_dataset=, bank_features=, queries = 10, k = 8, path =} -> Image, rows", "Queries and their nearest neighbours, green borders for the same class, red for another." }
F{ "moco.plot.augmentation_pairs", "plot.augmentation_pairs{dataset=, transform=, n = 8, scale =, seed = 0, path =} -> Image", "Each image with the two augmented views MoCo contrasts, one pair per row, enlarged." }
F{ "moco.plot.line_chart", "plot.line_chart{title=, xlabel=, ylabel=, series = {{label=, x=, y=}}, path=} -> Image", "One line-chart panel." }
F{ "moco.plot.figure", "plot.figure{width=, height=, rows=, cols=, title=, panels = {...}, path=} -> Image", "A grid of line-chart panels (the general form)." }
F{ "moco.plot.output_path", "plot.output_path(dir, name) -> path", "dir/name, creating dir when missing." }

-- ====================================================================== moco.checkpoint
section("moco.checkpoint", "Checkpoints (moco.checkpoint)", [[
MoCo checkpoints in safetensors (tensors under the official state dict's names), exact
resume, export to torchvision.  Nothing in a file chooses a path, a deletion or a size.
See docs/checkpoints.md.]])
F{ "moco.checkpoint.save", "checkpoint.save(path, model [, {epoch=, epoch_step=, config=, knn=, best_knn=, history=, run_id=, ...}])", "Every state of a MoCo model, atomically; refused when a value is non-finite or above checkpoint.MAX_ABS." }
F{ "moco.checkpoint.load", "checkpoint.load(path) -> ckpt", "A checkpoint's tensors and decoded metadata ({tensors, config, epoch, epoch_step, history, run_id, ...})." }
F{ "moco.checkpoint.build_model", "checkpoint.build_model(ckpt | path) -> MoCo", "The model rebuilt from the checkpoint's options, every state restored." }
F{ "moco.checkpoint.restore", "checkpoint.restore(model, ckpt | path)", "Every state into an existing model (checked first; nothing changes on error)." }
F{ "moco.checkpoint.load_encoder", "checkpoint.load_encoder(path [, {bn_splits =}]) -> ResNet", "The query encoder, for evaluation." }
F{ "moco.checkpoint.export_backbone", "checkpoint.export_backbone(ckpt_path, out_path) -> count", "encoder_q with torchvision's names and no fc (load_state_dict(strict=False) in PyTorch)." }
F{ "moco.checkpoint.load_torchvision", "checkpoint.load_torchvision(net, path [, {strict =, prefix =}]) -> report", "A torchvision state dict saved as safetensors into a moco.models ResNet." }
F{ "moco.checkpoint.save_epoch", "checkpoint.save_epoch(dir, model, {epoch=, record=, config=, best_knn=, keep = 3, run_id=, history=, ...}) -> path, is_best, best", "An epoch's checkpoint: its name, model_best, pruning to the newest `keep`." }
F{ "moco.checkpoint.list", "checkpoint.list(dir) -> {{name=, path=, epoch=, step=}}", "The checkpoint files of dir, oldest first." }
F{ "moco.checkpoint.latest", "checkpoint.latest(dir) -> path | nil", "The most advanced checkpoint of dir." }
F{ "moco.checkpoint.latest_usable", "checkpoint.latest_usable(dir, run_id [, load]) -> ckpt, notes", "The newest checkpoint that loads and is healthy; corrupt ones are passed over with a note." }
F{ "moco.checkpoint.check_values", "checkpoint.check_values(model | tensors) -> ok, why", "Every weight, buffer, queue and momentum value finite and below checkpoint.MAX_ABS (1e8)." }
F{ "moco.checkpoint.max_abs", "checkpoint.max_abs(t) -> number", "The largest |x| of a tensor (NaN if it holds one), without copying it." }
F{ "moco.checkpoint.plain_records", "checkpoint.plain_records(history) -> records", "History records as stored: their finite numbers and booleans." }

-- ====================================================================== moco.torch
section("moco.torch", "PyTorch files (moco.torch)", [[
torch.save files read without executing anything (as torch.load(weights_only=True)), and
written: official MoCo and main_lincls.py checkpoints, torchvision .pth files, detectron2's
.pkl.  See docs/checkpoints.md.]])
F{ "moco.torch.load", "torch.load(path) -> obj, dtypes", "What torch.save was given: dicts, lists, numbers, strings, tensors (float32); dtypes[tensor] is the file's dtype." }
F{ "moco.torch.keys", "torch.keys(dict) -> {keys}", "A loaded dict's keys in file order." }
F{ "moco.torch.format", "torch.format(path) -> 'zip' | 'legacy' | nil", "The torch.save layout of a file, by content." }
F{ "moco.torch.is_torch_file", "torch.is_torch_file(path) -> boolean", "Whether path is a torch.save file (by content)." }
F{ "moco.torch.open", "torch.open(path) -> TorchStateDict", "A file's state dict, read as moco.safe_open reads safetensors." }
F{ "moco.torch.encoder_tensors", "torch.encoder_tensors(path [, {keep_fc =}]) -> tensors, names, dtypes, info", "The query encoder's tensors in torchvision's names, from a torch.save or safetensors file." }
F{ "moco.torch.load_encoder", "torch.load_encoder(path [, {bn_splits =}]) -> ResNet", "A moco.models ResNet with a file's weights (architecture and sizes from the tensors)." }
F{ "moco.torch.save", "torch.save(path, tensors [, {order =, dtypes =}])", "torch.save(OrderedDict(tensors)) in the zip layout, atomically (torch.load opens it)." }
F{ "moco.torch.save_detectron2", "torch.save_detectron2(path, tensors [, {order =, dtypes =, author =}])", "detectron2's pickle of numpy arrays." }
F{ "moco.torch.detectron2_name", "torch.detectron2_name(name) -> name", "The official convert-pretrain-to-detectron2.py renaming of a torchvision name." }
C{ "moco.TorchStateDict", "moco.torch.open(path)", "An open torch.save state dict (use with <close>).", instance_only = true }
M{ "moco.TorchStateDict:keys", "f:keys() -> {names}", "The tensor names, sorted.", instance_only = true }
M{ "moco.TorchStateDict:order", "f:order() -> {names}", "The tensor names in file order.", instance_only = true }
M{ "moco.TorchStateDict:info", "f:info(name) -> dtype, shape", "A tensor's dtype and shape.", instance_only = true }
M{ "moco.TorchStateDict:get_tensor", "f:get_tensor(name) -> Tensor", "One tensor.", instance_only = true }
M{ "moco.TorchStateDict:metadata", "f:metadata() -> {format=, arch=, epoch=, best_acc1=}", "What the file says besides its tensors.", instance_only = true }
M{ "moco.TorchStateDict:close", "f:close()", "Drops the tensors (also __close).", instance_only = true }

-- ====================================================================== recipes' support
section("moco.pretrain", "What the MoCo recipes share (moco.pretrain)", [[
The official flags, run directories, resume, validation, the report.  A recipe is
`local opts = pretrain.parse(arg, defaults, description); pretrain.run(opts)`.]])
F{ "moco.pretrain.parse", "pretrain.parse(argv, defaults, description) -> opts | nil", "The MoCo options with a recipe's defaults (nil after --help)." }
F{ "moco.pretrain.run", "pretrain.run(opts [, {check_data = fn, should_stop = fn}]) -> model, history, knn, run", "Pre-training in its run directory (checkpoints, log.jsonl, report.html)." }
F{ "moco.pretrain.resume_plan", "pretrain.resume_plan(opts [, {load =, kind =}]) -> plan", "What --resume asks for: {ckpt, run, dir_options, notes}." }
F{ "moco.pretrain.apply_checkpoint", "pretrain.apply_checkpoint(opts, ckpt, dir_options) -> notes", "A checkpoint's settings (never its paths) under the options given again." }
F{ "moco.pretrain.validate", "pretrain.validate(opts)", "Checks the options that need no data." }
F{ "moco.pretrain.probe_spec", "pretrain.probe_spec(own) -> spec", "The options of a recipe that judges a backbone (knn, lincls): --pretrained, --data, its own, the shared rest." }
F{ "moco.pretrain.probe_start", "pretrain.probe_start(arg, spec, description) -> opts | nil", "Such a recipe's start: parse, --quiet, MPI (opts._rank, opts._size)." }
F{ "moco.pretrain.probe_backbone", "pretrain.probe_backbone(opts) -> encoder", "The backbone --pretrained names ('random': --arch, --in-channels, --seed)." }
F{ "moco.pretrain.validate_ranks", "pretrain.validate_ranks(opts, ranks)", "Checks --batch-size (the global batch) and --bn-splits (per rank) against the MPI ranks." }
F{ "moco.pretrain.keep_bn_groups", "pretrain.keep_bn_groups(opts, ckpt, ranks, note)", "Resuming on another number of ranks: --bn-splits that keeps the checkpoint's batch-norm groups." }
F{ "moco.pretrain.validate_data", "pretrain.validate_data(opts, train_ds, test_ds)", "Checks the options against the data sizes." }
F{ "moco.pretrain.datasets", "pretrain.datasets(opts) -> train, test, kind, test_transform", "The datasets --data names." }
F{ "moco.pretrain.augmentation", "pretrain.augmentation(opts, kind) -> transform", "The official v1/v2, CIFAR demo or Fashion-MNIST augmentation." }
F{ "moco.pretrain.build_model", "pretrain.build_model(opts [, dataset_size]) -> MoCo", "The model the options describe (dataset_size: the memory bank's rows)." }
F{ "moco.pretrain.model_options", "pretrain.model_options(opts [, dataset_size]) -> table", "The moco.MoCo options of a recipe's opts (for MoCo.check_config)." }
F{ "moco.pretrain.resume_command", "pretrain.resume_command(opts, dir [, extra]) -> string", "'moco-lua RECIPE --resume DIR'." }
F{ "moco.pretrain.recipe_name", "pretrain.recipe_name(opts) -> name", "'quickstart' for recipes/quickstart.lua." }
F{ "moco.pretrain.write_report", "pretrain.write_report(run)", "Rewrites the curves and report.html of a run." }
F{ "moco.pretrain.refresh_report", "pretrain.refresh_report(run) -> ok", "write_report, a failure only warning." }
F{ "moco.pretrain.atomic_picture", "pretrain.atomic_picture(path, draw) -> path", "draw(tmp) writes a picture that lands at path by a rename." }

section("moco.recipe", "Command-line options (moco.recipe)", [[
argparse's conventions with the official MoCo names: types from the defaults, --no-X for
booleans, lists (--schedule 120 160, 120,160), aliases, choices, a positional, --help.]])
F{ "moco.recipe.parse", "recipe.parse(argv, spec [, {description =, positional = {name =, metavar =, help =}, prog =}]) -> opts | nil", "The options (opts._given, opts._positional); nil after printing --help.", example = [[
local opts = moco.recipe.parse({"--lr", "0.1", "--no-cos", "/data"}, {
  {"lr", 0.03, "learning rate", aliases = {"learning-rate"}},
  {"cos", true, "cosine schedule"},
  {"data", "", "the dataset"},
}, {positional = {name = "data", metavar = "DIR"}})
assert(opts.lr == 0.1 and opts.cos == false and opts.data == "/data")]] }
F{ "moco.recipe.usage", "recipe.usage(spec [, info]) -> text", "The argparse-style help." }
F{ "moco.recipe.program", "recipe.program(argv) -> 'moco-lua NAME'", "The program as the user ran it." }
F{ "moco.recipe.describe", "recipe.describe(opts, spec) -> 'name=value ...'", "The options in one line, for logs." }
F{ "moco.recipe.values", "recipe.values(opts, spec) -> {name = value}", "The options as a plain table (config.json)." }
F{ "moco.recipe.set_aliases", "recipe.set_aliases(opts, spec) -> opts", "opts.batch_size = opts['batch-size'] and so on." }
F{ "moco.recipe.kind_of", "recipe.kind_of(option) -> 'integer' | 'number' | 'string' | 'boolean' | 'list'", "An option's type." }
F{ "moco.recipe.levenshtein", "recipe.levenshtein(a, b) -> n", "Edit distance (for 'did you mean')." }
F{ "moco.recipe.closest", "recipe.closest(name, candidates) -> candidate", "The candidate closest to name." }

section("moco.rundir", "Run directories (moco.rundir)", [[
One directory per run: config.json (with a run id), checkpoints carrying that id, log.jsonl,
pictures, report.html.]])
F{ "moco.rundir.create", "rundir.create(dir | nil, {recipe=, kind=, command=}) -> Run", "A fresh run (refuses a directory that holds a run); writes config.json." }
F{ "moco.rundir.open", "rundir.open(dir) -> Run", "An existing run directory." }
F{ "moco.rundir.follower", "rundir.follower(dir, id [, {recipe=, kind=, options=}]) -> Run", "What MPI ranks other than 0 hold for rank 0's run: the same path and id, no writes." }
F{ "moco.rundir.latest", "rundir.latest(recipe [, base = 'runs']) -> dir | nil", "The newest run directory of a recipe." }
F{ "moco.rundir.checkpoints", "rundir.checkpoints(dir) -> {{name=, path=, epoch=, step=}}", "checkpoint_NNNN*.safetensors files, oldest first." }
F{ "moco.rundir.prune", "rundir.prune(dir, keep [, except])", "Keeps the newest `keep` checkpoint files; removes nothing else." }
F{ "moco.rundir.read_config", "rundir.read_config(dir) -> config | nil, why", "dir/config.json, checked." }
F{ "moco.rundir.default_dir", "rundir.default_dir(recipe [, base]) -> dir", "runs/<recipe>-<date>." }
F{ "moco.rundir.new_id", "rundir.new_id() -> hex", "A random run id." }
F{ "moco.rundir.is_directory", "rundir.is_directory(path) -> boolean", "Whether path is a directory." }
F{ "moco.rundir.parse_checkpoint_name", "rundir.parse_checkpoint_name(name) -> next_epoch, step | nil", "The progress a checkpoint's file name says." }
C{ "moco.rundir.Run", "a run directory (rundir.create, rundir.open)", "run.dir, run.id, run.recipe, run.config." }
M{ "moco.rundir.Run:path", "run:path(name) -> path", "A file of the run directory." }
M{ "moco.rundir.Run:save_config", "run:save_config([options [, note]])", "Rewrites config.json atomically (note: appended to 'resumed')." }
M{ "moco.rundir.Run:log", "run:log(record)", "Appends one JSON line to log.jsonl." }
M{ "moco.rundir.Run:abandon", "run:abandon()", "Removes what a refused fresh run wrote, and the directory if empty." }

section("moco.dist", "Data-parallel training over MPI (moco.dist)", [[
One process per rank, started by mpirun; with one rank every call is the identity or a
no-op, so scripts call them unconditionally.  docs/distributed.md maps it onto the
official DistributedDataParallel code.]])
F{ "moco.dist.init", "dist.init() -> rank, size", "Starts MPI under mpirun (idempotent); each rank gets its share of the cores as threads." }
F{ "moco.dist.start", "dist.start(opts [, what]) -> rank, size", "A recipe's start: init, the official flags (dist.OPTIONS) checked, ranks but 0 silenced." }
F{ "moco.dist.online_cores", "dist.online_cores() -> n | nil", "The machine's online cores (not this process's affinity)." }
F{ "moco.dist.launched_size", "dist.launched_size() -> n", "The processes an MPI launcher started (1 outside one)." }
F{ "moco.dist.rank", "dist.rank() -> r", "This process's rank (0-based)." }
F{ "moco.dist.size", "dist.size() -> n", "The number of ranks." }
F{ "moco.dist.is_main", "dist.is_main() -> boolean", "Whether this is rank 0 (the one that prints and writes)." }
F{ "moco.dist.active", "dist.active() -> boolean", "Whether there is more than one rank." }
F{ "moco.dist.backend", "dist.backend() -> 'single' | 'mpi (...)'", "The backend in use." }
F{ "moco.dist.all_gather", "dist.all_gather(t) -> T", "Every rank's t stacked along dim 1, rank by rank." }
F{ "moco.dist.all_reduce_sum_", "dist.all_reduce_sum_(t) -> t", "t summed over the ranks, in place." }
F{ "moco.dist.all_reduce_mean_", "dist.all_reduce_mean_(t) -> t", "t averaged over the ranks, in place." }
F{ "moco.dist.broadcast_", "dist.broadcast_(t [, root = 0]) -> t", "root's t on every rank, in place." }
F{ "moco.dist.broadcast_string", "dist.broadcast_string(s [, root = 0]) -> s", "root's string on every rank." }
F{ "moco.dist.mean_of", "dist.mean_of(...) -> ...", "Numbers averaged over the ranks." }
F{ "moco.dist.max_of", "dist.max_of(v) -> v", "The largest of every rank's number." }
F{ "moco.dist.barrier", "dist.barrier()", "Waits for every rank." }
F{ "moco.dist.abort", "dist.abort(message [, code = 1])", "Prints message and ends every rank (MPI_Abort); with one rank, raises it." }
F{ "moco.dist.agreed", "dist.agreed(fn, ...) -> ...", "Runs fn on every rank; a failure anywhere ends every rank with one message, never a hang." }
F{ "moco.dist.fail_together", "dist.fail_together(message)", "Raises an error every rank raises at the same point: printed once, no MPI_Abort." }
F{ "moco.dist.share", "dist.share(n) -> first, count, per", "This rank's contiguous share of n items (sharded feature extraction)." }
F{ "moco.dist.to_global", "dist.to_global(stacked, per_rank) -> T", "A rank-by-rank stack in the global batch's order." }
F{ "moco.dist.local_rows", "dist.local_rows(global) -> T", "This rank's rows i * N + r of a global batch." }
F{ "moco.dist.shuffled_slice", "dist.shuffled_slice(global, perm) -> T", "This rank's positions r + N j of a shuffled global batch." }

section("moco.progress", "Progress output (moco.progress)", [[
A live bar on a terminal, plain periodic lines otherwise, nothing with --quiet.]])
C{ "moco.progress.Bar", "progress.Bar(label, total [, {unit = 'img', every = 10, log =}])", "A progress bar over `total` items." }
M{ "moco.progress.Bar:update", "bar:update(done [, extra])", "Redraws (at most 10 times a second) or prints a line (every `every` seconds)." }
M{ "moco.progress.Bar:finish", "bar:finish([summary])", "Clears the bar; in plain-line mode prints the summary." }
M{ "moco.progress.Bar:text", "bar:text(done [, extra]) -> string", "The bar's text." }
F{ "moco.progress.print", "progress.print(line)", "A permanent line (clears a live bar first)." }
F{ "moco.progress.set_quiet", "progress.set_quiet(on)", "No bars and no periodic lines." }
F{ "moco.progress.set_silent", "progress.set_silent(on)", "Nothing at all: MPI ranks other than 0 (moco.dist.start)." }
F{ "moco.progress.bar_enabled", "progress.bar_enabled() -> boolean", "Whether a live bar is shown (stderr is a terminal, not quiet)." }
F{ "moco.progress.lines_enabled", "progress.lines_enabled() -> boolean", "Whether plain lines are printed (stdout is not a terminal, not quiet)." }
F{ "moco.progress.duration", "progress.duration(seconds) -> '12.3s' | '4m05s' | '3h12m'", "A duration for people." }
F{ "moco.progress.gauge", "progress.gauge(fraction [, width = 20]) -> '[====>    ]'", "The bar's gauge." }
F{ "moco.progress.draw", "progress.draw(text)", "Draws text as the live bar." }
F{ "moco.progress.clear", "progress.clear()", "Removes a live bar." }

section("moco.report", "report.html (moco.report)", [[
A self-contained page: images as data: URIs, inline CSS, no script, no network.]])
F{ "moco.report.write", "report.write(path, {title=, status=, results=, pictures=, history=, columns=, options=, facts=})", "Writes the page atomically." }
F{ "moco.report.html", "report.html(spec) -> text", "The page's HTML." }
F{ "moco.report.base64", "report.base64(bytes) -> text", "RFC 4648 base64." }
F{ "moco.report.escape", "report.escape(text) -> html", "HTML escaping." }

section("moco.repl", "The REPL (moco.repl, moco.doc)", [[
What the REPL prints for a value, and help().]])
F{ "moco.repl.print", "repl.print(...)", "What the REPL prints for an expression's values." }
F{ "moco.repl.format", "repl.format(value) -> text", "Readable text for a value: tables, records, modules." }
F{ "moco.repl.summary", "repl.summary(module) -> text", "A module in a few lines with parameter counts (a MoCo model too)." }
F{ "moco.repl.help", "help([x])", "What x is and how to call it; help('word') searches; help() lists the modules." }
F{ "moco.repl.thousands", "repl.thousands(n) -> '1,234,567'", "A count with separators." }
F{ "moco.doc.find", "doc.find(value) -> entry | nil", "The entry documenting a function, class or object." }
F{ "moco.doc.lookup", "doc.lookup(name) -> entry | nil", "The entry of a name ('moco.zeros', 'moco.Tensor:sum')." }
F{ "moco.doc.help_text", "doc.help_text(x [, given]) -> text", "What help(x) prints." }
F{ "moco.doc.markdown", "doc.markdown() -> text", "docs/api.md." }
F{ "moco.doc.coverage", "doc.coverage() -> missing, stale", "Public functions without an entry, and entries without a function." }
F{ "moco.doc.value_of", "doc.value_of(name) -> value", "The value an entry's name designates." }
F{ "moco.doc.search", "doc.search(word) -> {entries}", "Entries whose name or summary contains word." }

-- ====================================================================== lookups

-- Userdata classes: their methods live in the registry's metatable (field methods or __index).
local USERDATA = { ["moco.Tensor"] = "moco.Tensor", ["moco.Generator"] = "moco.Generator",
                   ["moco.Dataset"] = "moco.Dataset", ["moco.Loader"] = "moco.Loader", ["moco.Image"] = "moco.Image",
                   ["moco.SafetensorsFile"] = "moco.SafetensorsFile" }
-- Lua classes whose table is not reachable by name from a module.
local function lua_class(name)
  local moco = require "moco"
  if name == "moco.transforms.Transform" then return getmetatable(moco.transforms.ToTensor()) end
  return nil
end

local function userdata_methods(name)
  local mt = debug.getregistry()[name]
  if type(mt) ~= "table" then return nil end
  if type(mt.methods) == "table" then return mt.methods end
  if type(mt.__index) == "table" then return mt.__index end
  return nil
end

-- The value a name designates: "moco.zeros", "moco.nn.Conv2d", "moco.Tensor:sum", "moco.MoCo.make_encoder".
function doc.value_of(name)
  local moco = require "moco"
  local path, method = name:match("^(.-):([%w_]+)$")
  path = path or name
  local holder
  if USERDATA[path] then
    if method then
      local methods = userdata_methods(path)
      return methods and methods[method]
    end
    if path == "moco.Generator" then return moco.Generator end
    return debug.getregistry()[path]
  end
  holder = lua_class(path)
  if not holder then
    holder = moco
    local first = true
    for part in path:gmatch("[^.]+") do
      if first then
        first = false
        if part ~= "moco" then return nil end
      else
        if type(holder) ~= "table" then return nil end
        holder = holder[part]
      end
    end
  end
  if method then return type(holder) == "table" and rawget(holder, method) or nil end
  return holder
end

local by_name, by_value
local function index()
  if by_name then return end
  by_name, by_value = {}, {}
  for _, e in ipairs(doc.entries) do
    by_name[e.name] = e
    local ok, v = pcall(doc.value_of, e.name)
    if ok and v ~= nil and (type(v) == "function" or type(v) == "table") and by_value[v] == nil then by_value[v] = e end
  end
  for _, s in ipairs(doc.sections) do
    local ok, v = pcall(doc.value_of, s.name)
    if ok and type(v) == "table" and by_value[v] == nil then by_value[v] = { kind = "module", section = s, name = s.name } end
  end
end

function doc.lookup(name)
  index()
  return by_name[name]
end

-- The entry documenting a value: a function, a class or module table, an object (its class).
function doc.find(v)
  index()
  if by_value[v] then return by_value[v] end
  local mt = getmetatable(v)
  if type(mt) == "table" and type(rawget(mt, "__name")) == "string" and by_name[mt.__name] then
    return by_name[mt.__name] -- a userdata, or an object of a class reached only through its instances
  end
  local depth = 0
  while type(mt) == "table" and depth < 16 do -- an instance: its class, or the nearest documented ancestor
    if by_value[mt] then return by_value[mt] end
    local parent = getmetatable(mt)
    mt = type(parent) == "table" and type(parent.__index) == "table" and parent.__index or nil
    depth = depth + 1
  end
  return nil
end

function doc.search(word)
  index()
  local w = word:lower()
  local found = {}
  for _, e in ipairs(doc.entries) do
    if e.name:lower():find(w, 1, true) or (e.summary or ""):lower():find(w, 1, true) then found[#found + 1] = e end
  end
  return found
end

local function indent(text, pad)
  return pad .. tostring(text):gsub("\n", "\n" .. pad)
end

local function wrap(text, width, pad)
  local lines, line = {}, ""
  for word in tostring(text):gmatch("%S+") do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = pad .. line
      line = word
    else
      line = line == "" and word or (line .. " " .. word)
    end
  end
  if line ~= "" then lines[#lines + 1] = pad .. line end
  return table.concat(lines, "\n")
end

local function methods_of(class_entry)
  local list = {}
  local prefix = class_entry.name .. ":"
  local static = class_entry.name .. "."
  for _, e in ipairs(class_entry.section.entries) do
    if e.kind == "method" and (e.name:sub(1, #prefix) == prefix or e.name:sub(1, #static) == static) then list[#list + 1] = e end
  end
  return list
end

local function entry_text(e)
  local out = { e.signature, wrap(e.summary, 76, "    ") }
  if e.details then out[#out + 1] = wrap(e.details, 76, "    ") end
  if e.kind == "class" then
    local ms = methods_of(e)
    if #ms > 0 then
      out[#out + 1] = "  methods:"
      for _, m in ipairs(ms) do
        if #m.signature > 42 then
          out[#out + 1] = "    " .. m.signature .. "\n" .. wrap(m.summary, 72, "        ")
        else
          out[#out + 1] = string.format("    %-42s %s", m.signature, m.summary)
        end
      end
    end
    if e.parent then out[#out + 1] = string.format("  and those of %s (help(%s))", e.parent, e.parent) end
  end
  if e.example then out[#out + 1] = "  example:\n" .. indent(e.example, "    ") end
  return table.concat(out, "\n")
end

local function module_text(s)
  local out = { string.format("%s: %s", s.name, s.title), wrap(s.intro:gsub("`", ""), 76, "    ") }
  for _, e in ipairs(s.entries) do
    if e.kind ~= "method" then out[#out + 1] = string.format("  %-44s %s", e.name, e.summary) end
  end
  out[#out + 1] = "(help(name) for one of them)"
  return table.concat(out, "\n")
end

local OVERVIEW = [[
help(x) explains a function, a class, an object or a module: help(moco.zeros),
help(moco.nn.Conv2d), help(model), help(moco.data).  help("word") searches the names
and summaries.  The same text is docs/api.md; the tutorial is docs/tutorial.md.
Modules:]]

-- What help(x) prints.  given = false for help() with no argument.
function doc.help_text(x, given)
  index()
  if x == nil and not given then
    local out = { OVERVIEW }
    for _, s in ipairs(doc.sections) do out[#out + 1] = string.format("  %-18s %s", s.name, s.title) end
    return table.concat(out, "\n")
  end
  if type(x) == "string" then
    local e = by_name[x] or by_name["moco." .. x]
    if e then return entry_text(e) end
    for _, s in ipairs(doc.sections) do if s.name == x or s.name == "moco." .. x then return module_text(s) end end
    local found = doc.search(x)
    if #found == 0 then return string.format("nothing documented matches '%s' (help() lists the modules)", x) end
    local out = { string.format("%d entr%s mention '%s':", #found, #found == 1 and "y" or "ies", x) }
    for i = 1, math.min(#found, 40) do out[#out + 1] = string.format("  %-44s %s", found[i].name, found[i].summary) end
    if #found > 40 then out[#out + 1] = string.format("  ... and %d more", #found - 40) end
    return table.concat(out, "\n")
  end
  local e = doc.find(x)
  if e and e.kind == "module" then return module_text(e.section) end
  if e then
    local text = entry_text(e)
    if e.kind == "class" and doc.value_of(e.name) ~= x and type(x) ~= "function" then
      text = "an instance of " .. e.name .. "\n" .. text
    end
    return text
  end
  if type(x) == "function" then return "a function without an entry in moco's reference (not part of its API)" end
  return string.format("a %s value, not part of moco's API (help() lists the modules)", type(x))
end

-- ====================================================================== docs/api.md

local HEADER = [[
# Lua API reference

Every public function, class and method of moco-lua, one entry each.  This file is
generated from `lua/moco/doc.lua` (`make docs`), the same source the REPL's `help(x)` reads;
`tests/lua/test_doc.lua` fails when the two disagree or when a public function has no entry.
Examples are executed by the docs test.
]]

local function code_span(s) return "`" .. s:gsub("`", "'") .. "`" end

function doc.markdown()
  local out = { HEADER, "\n## Contents\n" }
  for _, s in ipairs(doc.sections) do
    out[#out + 1] = string.format("- [%s](#%s)", s.title, (s.title:lower():gsub("[^%w%s-]", ""):gsub("%s+", "-")))
  end
  for _, s in ipairs(doc.sections) do
    out[#out + 1] = "\n## " .. s.title .. "\n\n" .. s.intro .. "\n"
    for _, e in ipairs(s.entries) do
      local level = e.kind == "method" and "####" or "###"
      out[#out + 1] = string.format("%s %s\n\n%s%s%s", level, code_span(e.signature), e.summary,
                                    e.details and ("\n" .. e.details) or "",
                                    e.kind == "class" and e.parent and string.format(" Also has the methods of `%s`.", e.parent) or "")
      if e.example then out[#out + 1] = "\n```lua\n" .. e.example .. "\n```" end
      out[#out + 1] = ""
    end
  end
  return (table.concat(out, "\n"):gsub("\n\n\n+", "\n\n"))
end

-- ====================================================================== coverage

-- The modules whose public functions must be documented.
local COVERED = { "moco", "moco.nn", "moco.nn.init", "moco.models", "moco.optim", "moco.train", "moco.data", "moco.image",
                  "moco.transforms", "moco.transforms.F", "moco.eval", "moco.lincls", "moco.plot", "moco.checkpoint", "moco.torch",
                  "moco.pretrain", "moco.recipe", "moco.rundir", "moco.dist", "moco.progress", "moco.report", "moco.repl", "moco.doc" }

local function is_class(v)
  return type(v) == "table" and (rawget(v, "_class_name") ~= nil or type(rawget(v, "__name")) == "string")
end

-- missing: public functions and methods without an entry; stale: entries naming nothing.
function doc.coverage()
  index()
  local missing, stale = {}, {}
  local function need(name, v)
    if by_name[name] == nil and by_value[v] == nil then missing[#missing + 1] = name end
  end
  -- A class's own methods: documented on it, or (an override) on an ancestor's entry.
  local function documented(class_name, k)
    local name, depth = class_name, 0
    while name and depth < 8 do
      if by_name[name .. ":" .. k] or by_name[name .. "." .. k] then return true end
      name = by_name[name] and by_name[name].parent
      depth = depth + 1
    end
    return false
  end
  local function methods(class_name, cls)
    for k, v in pairs(cls) do
      if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" and not documented(class_name, k) then
        missing[#missing + 1] = class_name .. ":" .. k
      end
    end
  end
  for _, mod in ipairs(COVERED) do
    local t = doc.value_of(mod)
    for k, v in pairs(type(t) == "table" and t or {}) do
      if type(k) == "string" and k:sub(1, 1) ~= "_" then
        local name = mod .. "." .. k
        if type(v) == "function" then
          need(name, v)
        elseif is_class(v) then
          need(name, v)
          methods(name, v)
        end
      end
    end
  end
  for name in pairs(USERDATA) do
    for k, v in pairs(userdata_methods(name) or {}) do
      if type(v) == "function" and not by_name[name .. ":" .. k] then missing[#missing + 1] = name .. ":" .. k end
    end
  end
  methods("moco.transforms.Transform", lua_class("moco.transforms.Transform"))
  for _, e in ipairs(doc.entries) do
    local ok, v = pcall(doc.value_of, e.name)
    if not (e.protocol or e.instance_only) and (not ok or v == nil) then stale[#stale + 1] = e.name end
  end
  table.sort(missing)
  table.sort(stale)
  return missing, stale
end

return doc
