-- lua/moco/builder.lua: the MoCo model (moco.MoCo), after the official moco/builder.py and
-- the official CIFAR-10 demo, and the two baselines the MoCo paper compares it with
-- (Fig. 2 and 3: end-to-end and memory bank), behind the same interface.
--
--   model = moco.MoCo{mechanism="moco", arch="resnet18", dim=128, K=65536, m=0.999, T=0.07,
--                     mlp=false, bn_splits=8, symmetric=false, shuffle=true, in_channels=3,
--                     cifar_stem=false, width=1, lr=0.03, momentum=0.9, weight_decay=1e-4,
--                     seed=0, bank_size=nil, bank_m=0.5}
--   loss, acc1, acc5 = model:step(im_q, im_k [, indices])   one full training step
--   model:check_batch(n)                          the errors step() would give for batches of
--                                                 n, raised now (before training)
--   model:encoder()                               the query encoder (for evaluation)
--   model.keep_logits = true                      step() then keeps model.last_logits: the
--                                                 logits of each contrastive term
--
-- mechanism (docs/mechanisms.md):
--   "moco"         the queue of K keys and the momentum encoder (below); the default.
--   "end_to_end"   keys from the query encoder itself, with gradients through both branches;
--                  the dictionary is the batch: logits q @ k^T / T (N, N), the positive on the
--                  diagonal, the other N - 1 keys the negatives.  K and m are not used.
--   "memory_bank"  Wu et al. 2018: bank_size stored features (one per training sample, the
--                  buffer `memory` (bank_size, dim)), a positive = the sample's own stored
--                  feature and K negatives drawn uniformly from the bank for each query;
--                  after the step the batch's rows become normalize(bank_m * row + (1 -
--                  bank_m) * q).  step() needs the samples' dataset indices (data.Loader's
--                  4th value).  im_k is not used (Wu et al. encode one view), nor are m and
--                  shuffle (there is no key encoder).
--
-- One step, as the official code orders it: momentum update of the key encoder from the
-- query encoder's current weights; q = normalize(encoder_q(im_q)); keys without gradient
-- from the shuffled batch (split batch norm over `bn_splits` groups, i.e. shuffling BN on
-- one process), unshuffled and normalised; InfoNCE against [k+, queue] / T with label 0;
-- the gradient flows to q only; SGD step; the keys enter the queue (after the logits were
-- computed with the old queue, as the official code's queue.clone() ensures).
local moco = require "moco"
local nn = require "moco.nn"
local models = require "moco.models"
local optim = require "moco.optim"
local dist = require "moco.dist"

local C = moco._moco
local L = moco._nn

local MoCo = nn.class("MoCo", nn.Module)

local known_options = {
  arch = true, dim = true, K = true, m = true, T = true, mlp = true, bn_splits = true,
  symmetric = true, shuffle = true, in_channels = true, cifar_stem = true, width = true,
  zero_init_residual = true, lr = true, momentum = true, weight_decay = true, seed = true,
  mechanism = true, bank_size = true, bank_m = true, stem_stride = true,
}

MoCo.MECHANISMS = { "moco", "end_to_end", "memory_bank" }

local function default(v, d) if v == nil then return d end return v end

-- Float tensors index the bank (lua/l_moco.c): exact up to 2^24 rows.
local MAX_BANK_ROWS = 1 << 24

-- Bytes of memory the system can still give (Linux's MemAvailable), or nil when unknown.
function MoCo.available_memory()
  local f = io.open("/proc/meminfo", "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local kb = text and text:match("MemAvailable:%s*(%d+)%s*kB")
  return kb and tonumber(kb) * 1024 or nil
end

local function fail(fmt, ...) error("moco.MoCo: " .. string.format(fmt, ...), 0) end

local function is_positive_integer(v) return math.type(v) == "integer" and v >= 1 end

-- Checks a model's configuration c (the resolved fields: mechanism, dim, K, m, T, symmetric,
-- bn_splits, bank_size, bank_m) and, when batch_size is given, what a batch of that size
-- needs; raises one clear line.  The constructor calls it before allocating anything, and
-- recipes can call it for every run of a sweep before the first one trains.
function MoCo.check_config(c, batch_size)
  local mech = c.mechanism
  local known = false
  for _, name in ipairs(MoCo.MECHANISMS) do known = known or name == mech end
  if not known then
    fail("unknown mechanism '%s' (known: %s)", tostring(mech), table.concat(MoCo.MECHANISMS, ", "))
  end
  if not is_positive_integer(c.dim) then fail("dim = %s must be a positive integer", tostring(c.dim)) end
  if not is_positive_integer(c.bn_splits) then fail("bn_splits = %s must be a positive integer", tostring(c.bn_splits)) end
  if type(c.T) ~= "number" or not (c.T > 0) then fail("the temperature T = %s must be > 0", tostring(c.T)) end
  if type(c.m) ~= "number" or not (c.m >= 0 and c.m <= 1) then fail("the momentum m = %s must be in [0, 1]", tostring(c.m)) end
  if mech ~= "end_to_end" and not is_positive_integer(c.K) then
    fail("K = %s (the number of negatives) must be a positive integer", tostring(c.K))
  end
  if mech ~= "moco" and dist.active() then
    fail("mechanism = \"%s\" runs in one process; over MPI ranks only \"moco\" is implemented", mech)
  end
  if c.symmetric and mech ~= "moco" then
    fail("symmetric is the CIFAR-10 demo's loss for mechanism = \"moco\"; %s has no symmetric form here", mech)
  end
  -- The dictionary's storage: the queue (dim, K) or the bank (bank_size, dim), float32.
  local rows, what = c.K, "the queue"
  if mech == "memory_bank" then
    if not is_positive_integer(c.bank_size) then
      fail("mechanism = \"memory_bank\" needs bank_size = the number of training samples (one stored feature "
           .. "each), got %s", tostring(c.bank_size))
    end
    if c.bank_size > MAX_BANK_ROWS then
      fail("a memory bank of %d rows is more than the 2^24 the bank's indices address", c.bank_size)
    end
    if type(c.bank_m) ~= "number" or not (c.bank_m >= 0 and c.bank_m <= 1) then
      fail("the memory bank momentum bank_m = %s must be in [0, 1]", tostring(c.bank_m))
    end
    rows, what = c.bank_size, "the memory bank"
  end
  if mech ~= "end_to_end" then
    local bytes = 4.0 * rows * c.dim
    local available = MoCo.available_memory()
    if available and bytes > available then
      fail("%s needs %.3g GB (%d x %d float32) but only %.3g GB of memory are available: lower %s or dim",
           what, bytes / 1e9, rows, c.dim, available / 1e9,
           mech == "memory_bank" and "the number of training samples (--train-subset)" or "K")
    end
  end
  if batch_size ~= nil then MoCo.check_batch_size(c, batch_size) end
end

-- The batch-size part of check_config: what step() needs from a batch of n.
function MoCo.check_batch_size(c, n)
  if not is_positive_integer(n) then fail("the batch size %s must be a positive integer", tostring(n)) end
  if n % c.bn_splits ~= 0 then
    fail("the batch of %d images cannot be split into bn_splits = %d equal groups "
         .. "(choose --batch-size a multiple of --bn-splits)", n, c.bn_splits)
  end
  if c.mechanism == "moco" then
    local per_step = (c.symmetric and 2 * n or n) * dist.size()
    if c.K % per_step ~= 0 then
      fail("K = %d is not a multiple of the %d keys enqueued per step (batch %d%s%s)", c.K, per_step, n,
           c.symmetric and ", symmetric" or "",
           dist.active() and string.format(" on each of %d ranks", dist.size()) or "")
    end
  elseif c.mechanism == "end_to_end" and n < 2 then
    fail("end_to_end takes its negatives from the other keys of the batch: a batch of %d has none "
         .. "(use --batch-size 2 or more)", n)
  end
end

-- Makes `twin` (an encoder built like `src`) compute with src's state: every parameter,
-- gradient and buffer field of twin's modules becomes the tensor of the module at the same
-- path in src.  Only the activations (module outputs, batch-norm caches, the arena) stay
-- twin's own, so a forward of each can be followed by a backward of each, the gradients
-- accumulating into src's, and batch norm updating src's running statistics in the order of
-- the forwards.  (src must not be re-flattened afterwards: twin would keep the old views.)
local function share_state(twin, src)
  local by_path = {}
  src:apply(function(m, prefix) by_path[prefix] = m end)
  twin:apply(function(m, prefix)
    local s = by_path[prefix]
    if s == nil or s._class_name ~= m._class_name then
      error("moco.MoCo: internal error: the key branch's module " .. prefix .. " has no twin in encoder_q", 0)
    end
    for _, key in ipairs(m._params) do
      m[key], m["grad_" .. key] = s[key], s["grad_" .. key]
    end
    for _, key in ipairs(m._buffers) do m[key] = s[key] end
  end)
  twin._flat_params, twin._flat_grads = src._flat_params, src._flat_grads
  return twin
end

function MoCo:__init(opts)
  nn.Module.__init(self)
  opts = nn.check_options("moco.MoCo", opts or {}, known_options)
  self.mechanism = default(opts.mechanism, "moco")
  self.arch = default(opts.arch, "resnet50")
  self.dim = default(opts.dim, 128)
  self.K = default(opts.K, 65536)
  self.m = default(opts.m, 0.999)
  self.T = default(opts.T, 0.07)
  self.mlp = default(opts.mlp, false)
  self.bn_splits = default(opts.bn_splits, 8)
  self.symmetric = default(opts.symmetric, false)
  self.shuffle = default(opts.shuffle, true)
  self.seed = default(opts.seed, 0)
  self.bank_size = opts.bank_size
  self.bank_m = default(opts.bank_m, 0.5) -- Wu et al.'s (lemniscate.pytorch's --nce-m)
  MoCo.check_config(self)
  -- Streams of one seed: 0 = query encoder init, 1 = key encoder init, 2 = queue (or memory
  -- bank), 3 = the steps' draws (key shuffles; the memory bank's negatives).
  local function gen(stream) return moco.Generator(self.seed, stream) end

  -- The constructor's options as given: checkpoints store them so that moco.checkpoint can
  -- rebuild the same model.
  self.options = {}
  for k, v in pairs(opts) do self.options[k] = v end
  local encoder_options = {
    arch = self.arch, dim = self.dim, mlp = self.mlp, bn_splits = self.bn_splits, in_channels = opts.in_channels,
    cifar_stem = opts.cifar_stem, width = opts.width, zero_init_residual = opts.zero_init_residual,
    stem_stride = opts.stem_stride,
  }
  local function make_encoder(g) return MoCo.make_encoder(encoder_options, g) end
  self:add_module("encoder_q", make_encoder(gen(0)))
  self.encoder_q.need_input_grad = false -- no one uses d loss / d image: skip the stem's input gradient
  self.encoder_q:flatten_parameters()
  if self.mechanism == "moco" then
    self:add_module("encoder_k", make_encoder(gen(1)))
    local flat_k = self.encoder_k:flatten_parameters()
    flat_k:copy(self.encoder_q._flat_params) -- param_k.data.copy_(param_q.data)
    self.encoder_k:requires_grad(false)
    -- no backward ever runs through the key encoder: its forward keeps no activations
    if self.encoder_k.set_keep_activations then self.encoder_k:set_keep_activations(false) end

    self:register_buffer("queue", moco.zeros{ self.dim, self.K })
    C.queue_init(self.queue, gen(2))
    if dist.active() then
      -- every rank starts from rank 0's weights and queue (the official code: DDP broadcasts
      -- the module's state at construction)
      dist.broadcast_(self.encoder_q._flat_params, 0)
      self.encoder_k._flat_params:copy(self.encoder_q._flat_params)
      dist.broadcast_(self.queue, 0)
    end
    self.queue_ptr = 0
  elseif self.mechanism == "end_to_end" then
    -- The keys go through encoder_q too, with gradients, in the same step as the queries:
    -- two forwards before either backward.  A second instance of the encoder shares every
    -- parameter, gradient and batch-norm buffer of encoder_q and keeps its own activations
    -- (see share_state and docs/mechanisms.md).  Not a child: the state dict, the optimizer
    -- and checkpoints see encoder_q alone.
    self._key_branch = share_state(make_encoder(gen(1)), self.encoder_q)
    self.normalize_k = nn.Normalize()
  else
    -- lemniscate.pytorch's initial memory: U(-stdv, stdv) with stdv = 1 / sqrt(dim / 3), so
    -- that rows have unit norm in expectation.
    local stdv = 1 / math.sqrt(self.dim / 3)
    self:register_buffer("memory", moco.rand({ self.bank_size, self.dim }, gen(2)):mul_(2 * stdv):sub_(stdv))
  end
  self.shuffle_generator = gen(3)
  self.normalize_q = nn.Normalize()
  self.optimizer = optim.SGD(self.encoder_q, {
    lr = default(opts.lr, 0.03), momentum = default(opts.momentum, 0.9),
    weight_decay = default(opts.weight_decay, 1e-4),
  })
  self.steps = 0
end

-- The encoder of a MoCo model (shared with moco.checkpoint.load_encoder): a ResNet with
-- num_classes = dim, and with mlp v2's head as the official code builds it: Linear(dim_mlp,
-- dim_mlp), ReLU, then the original fc (so the state dict names are fc.0.* and fc.2.*).
-- o: arch, dim, mlp, bn_splits, in_channels, cifar_stem, width, zero_init_residual, stem_stride.
function MoCo.make_encoder(o, g)
  local enc = models.get(o.arch, {
    num_classes = o.dim, in_channels = o.in_channels, cifar_stem = o.cifar_stem,
    width = o.width, zero_init_residual = o.zero_init_residual, stem_stride = o.stem_stride,
    bn_splits = o.bn_splits, generator = g,
  })
  if o.mlp then
    local fc = enc.fc
    local dim_mlp = fc.in_features
    enc._children[#enc._children] = nil
    enc.fc = nil
    enc:add_module("fc", nn.Sequential{ nn.Linear(dim_mlp, dim_mlp, { generator = g }), nn.ReLU(), fc })
  end
  return enc
end

function MoCo:extra_repr()
  if self.mechanism == "end_to_end" then
    return string.format("mechanism=end_to_end, dim=%d, T=%g, mlp=%s, bn_splits=%d, shuffle=%s", self.dim, self.T,
                         tostring(self.mlp), self.bn_splits, tostring(self.shuffle))
  elseif self.mechanism == "memory_bank" then
    return string.format("mechanism=memory_bank, dim=%d, K=%d, T=%g, mlp=%s, bn_splits=%d, bank_size=%d, bank_m=%g",
                         self.dim, self.K, self.T, tostring(self.mlp), self.bn_splits, self.bank_size, self.bank_m)
  end
  return string.format("dim=%d, K=%d, m=%g, T=%g, mlp=%s, bn_splits=%d, symmetric=%s, shuffle=%s",
                       self.dim, self.K, self.m, self.T, tostring(self.mlp), self.bn_splits,
                       tostring(self.symmetric), tostring(self.shuffle))
end

-- The end-to-end key branch follows the model's mode (it is not a child).
function MoCo:train(mode)
  nn.Module.train(self, mode)
  if self._key_branch then self._key_branch:train(mode) end
  return self
end

-- The official state-dict buffer is a 1-element int64 tensor; here a Lua integer, exposed
-- through state_dict() as a 0-d tensor for checkpoints.  By mechanism: encoder_q.*,
-- encoder_k.*, queue, queue_ptr (moco); encoder_q.* (end_to_end); encoder_q.*, memory
-- (memory_bank).
function MoCo:state_dict()
  local sd = nn.Module.state_dict(self)
  if self.mechanism == "moco" then sd.queue_ptr = moco.tensor(self.queue_ptr) end
  sd.normalize_q = nil
  return sd
end

function MoCo:load_state_dict(sd, strict)
  local copy = {}
  for k, v in pairs(sd) do copy[k] = v end
  local ptr = copy.queue_ptr
  copy.queue_ptr = nil
  local has_queue = self.mechanism == "moco"
  if not has_queue and ptr ~= nil then copy.queue_ptr = ptr end -- unexpected here
  local missing, unexpected = nn.Module.load_state_dict(self, copy, false)
  if strict ~= false and (#missing > 0 or #unexpected > 0 or (has_queue and ptr == nil)) then
    if has_queue and ptr == nil then missing[#missing + 1] = "queue_ptr" end
    error(string.format("MoCo:load_state_dict: missing keys: {%s}; unexpected keys: {%s}",
                        table.concat(missing, ", "), table.concat(unexpected, ", ")), 2)
  end
  if ptr and has_queue then self.queue_ptr = math.tointeger(ptr:item()) end
  return missing, unexpected
end

-- theta_k <- m theta_k + (1 - m) theta_q over the whole parameter blocks.  Batch-norm
-- buffers are left alone, as the official code leaves them (the key encoder's running
-- statistics come from its own forward passes).
function MoCo:momentum_update()
  C.momentum_update(self.encoder_k._flat_params, self.encoder_q._flat_params, self.m)
end

local function keys_distributed(self, im_k)
  local b = im_k:size(1)
  local all = dist.to_global(dist.all_gather(im_k), b) -- the global batch, in global order
  local x, inverse = dist.local_rows(all), nil
  if self.shuffle then
    local perm
    perm, inverse = C.shuffle_indices(all:size(1), self.shuffle_generator)
    dist.broadcast_(perm, 0)
    dist.broadcast_(inverse, 0)
    x = dist.shuffled_slice(all, perm)
  end
  local k = L.normalize_forward(self.encoder_k:forward(x))
  -- this rank's keys are shuffled positions r + N j: gathered rank by rank, to_global puts
  -- position j * N + r back in order, and the inverse permutation un-shuffles
  local keys = dist.to_global(dist.all_gather(k), b)
  if inverse then keys = C.gather_rows(keys, inverse) end
  return dist.local_rows(keys), keys
end

-- Keys for im_k: (N, dim), L2-normalised, computed without any gradient work; and the keys
-- of the whole global batch in global order (the same tensor on one process), which go to
-- the queue.
--
-- Over several ranks (moco.dist), shuffling BN as the official _batch_shuffle_ddp: the key
-- images of every rank are gathered, rank 0 draws the permutation of the global batch and
-- broadcasts it, each rank encodes its slice of the shuffled batch, the keys are gathered
-- and un-shuffled.  The slice of rank r is the shuffled positions r, r + N, r + 2N, ... (the
-- official code takes a contiguous block): with DistributedSampler's interleaved batches,
-- the batch-norm groups are then exactly those of one process with bn_splits x N splits,
-- so an N-rank run reproduces that 1-process run (docs/distributed.md).
function MoCo:keys(im_k)
  if dist.active() then return keys_distributed(self, im_k) end
  local n = im_k:size(1)
  local x, inverse = im_k, nil
  if self.shuffle then
    local perm
    perm, inverse = C.shuffle_indices(n, self.shuffle_generator)
    self._shuffled = C.gather_rows(im_k, perm, self._shuffled and self._shuffled:numel() == im_k:numel()
                                                 and self._shuffled or nil)
    x = self._shuffled
  end
  local k = L.normalize_forward(self.encoder_k:forward(x))
  if inverse then k = C.gather_rows(k, inverse) end
  return k, k
end


-- One contrastive term: forward q, keys, InfoNCE with its gradient, backward through
-- encoder_q (parameter gradients accumulate).  Returns loss, acc1, acc5, keys (this
-- process's) and the global batch's keys (for the queue).
function MoCo:contrastive_loss(im_q, im_k)
  local feat = self.encoder_q:forward(im_q)
  local q = self.normalize_q:forward(feat)
  local k, k_all = self:keys(im_k)
  if self.keep_logits then
    -- core/moco.c overwrites its logits buffer with d loss / d logits when it computes dq, so
    -- the kept logits come from a second, gradient-free call (same code, same numbers).
    local logits = moco.zeros{ q:size(1), self.K + 1 }
    C.infonce(q, k, self.queue, self.T, false, logits)
    self.last_logits[#self.last_logits + 1] = logits
  end
  local loss, acc1, acc5, dq = C.infonce(q, k, self.queue, self.T)
  local g = self.normalize_q:backward_input(feat, dq)
  self.encoder_q:backward(im_q, g)
  return loss, acc1, acc5, k, k_all
end

-- Over several ranks, after the backward: the gradients averaged (DDP's all-reduce), so
-- every rank takes the same SGD step.
local function average_gradients(self)
  if dist.active() then dist.all_reduce_mean_(self.encoder_q._flat_grads) end
end

-- Over several ranks, after the step: the batch-norm running statistics averaged, so they
-- stay the same on every rank and equal the mean over all bn_splits x N groups, as one
-- process's split batch norm keeps them (DDP instead broadcasts rank 0's buffers).
local function sync_batchnorm_buffers(self)
  if not dist.active() then return end
  local bufs = self._bn_buffers
  if not bufs then
    bufs = {}
    for _, enc in ipairs{ self.encoder_q, self.encoder_k } do
      enc:apply(function(m)
        if m.running_mean then bufs[#bufs + 1] = m.running_mean; bufs[#bufs + 1] = m.running_var end
      end)
    end
    local total = 0
    for _, t in ipairs(bufs) do total = total + t:numel() end
    self._bn_buffers, self._bn_flat = bufs, moco.zeros{ total }
  end
  local flat, o = self._bn_flat, 1
  for _, t in ipairs(bufs) do
    flat:narrow(1, o, t:numel()):copy(t:reshape(t:numel()))
    o = o + t:numel()
  end
  dist.all_reduce_mean_(flat)
  o = 1
  for _, t in ipairs(bufs) do
    t:copy(flat:narrow(1, o, t:numel()):reshape(t:shape()))
    o = o + t:numel()
  end
end

-- The end-to-end term: q = normalize(encoder_q(im_q)); k = normalize(encoder_q(shuffled
-- im_k)), unshuffled, through the key branch (encoder_q's state, its own activations);
-- logits q @ k^T / T with the positives on the diagonal; gradients through both branches
-- into encoder_q's.  Returns loss, acc1, acc5.
function MoCo:end_to_end_loss(im_q, im_k)
  local feat_q = self.encoder_q:forward(im_q)
  local q = self.normalize_q:forward(feat_q)
  local x, perm, inverse = im_k, nil, nil
  if self.shuffle then
    perm, inverse = C.shuffle_indices(im_k:size(1), self.shuffle_generator)
    self._shuffled = C.gather_rows(im_k, perm, self._shuffled and self._shuffled:numel() == im_k:numel()
                                                 and self._shuffled or nil)
    x = self._shuffled
  end
  local feat_k = self._key_branch:forward(x)
  local kx = self.normalize_k:forward(feat_k)   -- keys in the order of x
  local k = inverse and C.gather_rows(kx, inverse) or kx
  if self.keep_logits then
    local logits = moco.zeros{ q:size(1), q:size(1) }
    C.infonce_batch(q, k, self.T, false, logits)
    self.last_logits[#self.last_logits + 1] = logits
  end
  local loss, acc1, acc5, dq, dk = C.infonce_batch(q, k, self.T)
  self.encoder_q:backward(im_q, self.normalize_q:backward_input(feat_q, dq))
  -- k = kx[inverse], so d loss / d kx = dk[perm]
  if perm then dk = C.gather_rows(dk, perm) end
  self._key_branch:backward(x, self.normalize_k:backward_input(feat_k, dk))
  return loss, acc1, acc5
end

-- The memory-bank term: q = normalize(encoder_q(im_q)); for each query its own stored feature
-- and K negatives drawn from the bank (with the step generator); InfoNCE with label 0; the
-- gradient to q only.  Returns loss, acc1, acc5, q.
function MoCo:memory_bank_loss(im_q, indices)
  -- drawn first: indices outside the bank are refused before anything changes
  local index = C.bank_sample(indices, self.K, self.bank_size, self.shuffle_generator)
  local feat = self.encoder_q:forward(im_q)
  local q = self.normalize_q:forward(feat)
  if self.keep_logits then
    local logits = moco.zeros{ q:size(1), self.K + 1 }
    C.infonce_bank(q, self.memory, index, self.T, false, logits)
    self.last_logits[#self.last_logits + 1] = logits
  end
  local loss, acc1, acc5, dq = C.infonce_bank(q, self.memory, index, self.T)
  self.encoder_q:backward(im_q, self.normalize_q:backward_input(feat, dq))
  return loss, acc1, acc5, q
end

-- What step() needs from a batch of n images, checked now (recipes call it before training).
function MoCo:check_batch(n)
  MoCo.check_config(self, n)
end

-- One training step; returns loss, acc@1, acc@5 (percent) of the contrastive task.
-- indices: the samples' 0-based dataset indices (N), needed by the memory bank.
function MoCo:step(im_q, im_k, indices)
  if not self.training then error("MoCo:step: the model is in eval mode; call model:train() first", 2) end
  local n = im_q:size(1)
  local ok, err = pcall(MoCo.check_batch_size, self, n)
  if not ok then error("MoCo:step: " .. tostring(err):gsub("^moco%.MoCo: ", ""), 2) end
  if self.mechanism == "memory_bank" and (indices == nil or indices:dim() ~= 1 or indices:size(1) ~= n) then
    error(string.format("MoCo:step: the memory bank needs the %d samples' dataset indices: model:step(im_q, im_k, "
                        .. "indices) with indices (N) as data.Loader yields them (for im_q, im_k, labels, indices "
                        .. "in loader:iter())", n), 2)
  end
  self.encoder_q:zero_grad()
  if self.keep_logits then self.last_logits = {} end
  local loss, acc1, acc5
  if self.mechanism == "end_to_end" then
    loss, acc1, acc5 = self:end_to_end_loss(im_q, im_k)
    self.optimizer:step()
  elseif self.mechanism == "memory_bank" then
    local q
    loss, acc1, acc5, q = self:memory_bank_loss(im_q, indices)
    self.optimizer:step()
    C.bank_update(self.memory, q, indices, self.bank_m)
  elseif self.symmetric then
    self:momentum_update()
    -- loss = loss_12 + loss_21 and k = cat([k1, k2]), as the official CIFAR-10 demo.
    local l12, a12, b12, _, k2 = self:contrastive_loss(im_q, im_k)
    k2 = k2:clone()
    local l21, a21, b21, _, k1 = self:contrastive_loss(im_k, im_q)
    loss, acc1, acc5 = l12 + l21, (a12 + a21) / 2, (b12 + b21) / 2
    average_gradients(self)
    self.optimizer:step()
    self.queue_ptr = C.queue_enqueue(self.queue, k1, self.queue_ptr)
    self.queue_ptr = C.queue_enqueue(self.queue, k2, self.queue_ptr)
  else
    self:momentum_update()
    local k_all
    loss, acc1, acc5, _, k_all = self:contrastive_loss(im_q, im_k)
    average_gradients(self)
    self.optimizer:step()
    self.queue_ptr = C.queue_enqueue(self.queue, k_all, self.queue_ptr)
  end
  sync_batchnorm_buffers(self)
  self.steps = self.steps + 1
  if dist.active() then loss, acc1, acc5 = dist.mean_of(loss, acc1, acc5) end
  return loss, acc1, acc5
end

function MoCo:encoder() return self.encoder_q end

function MoCo:set_lr(lr) self.optimizer:set_lr(lr) end

return { MoCo = MoCo }
