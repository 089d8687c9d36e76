-- lua/moco/builder.lua: the MoCo model (moco.MoCo), after the official moco/builder.py and
-- the official CIFAR-10 demo.
--
--   model = moco.MoCo{arch="resnet18", dim=128, K=65536, m=0.999, T=0.07, mlp=false,
--                     bn_splits=8, symmetric=false, shuffle=true, in_channels=3,
--                     cifar_stem=false, width=1, lr=0.03, momentum=0.9, weight_decay=1e-4,
--                     seed=0}
--   loss, acc1, acc5 = model:step(im_q, im_k)     one full training step
--   model:encoder()                               the query encoder (for evaluation)
--   model.keep_logits = true                      step() then keeps model.last_logits: the
--                                                 logits (N, 1 + K) of each contrastive term
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
}

local function default(v, d) if v == nil then return d end return v end

function MoCo:__init(opts)
  nn.Module.__init(self)
  opts = nn.check_options("moco.MoCo", opts or {}, known_options)
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
  -- Streams of one seed: 0 = query encoder init, 1 = key encoder init, 2 = queue, 3 = shuffles.
  local function gen(stream) return moco.Generator(self.seed, stream) end

  -- The constructor's options as given: checkpoints store them so that moco.checkpoint can
  -- rebuild the same model.
  self.options = {}
  for k, v in pairs(opts) do self.options[k] = v end
  local encoder_options = {
    arch = self.arch, dim = self.dim, mlp = self.mlp, bn_splits = self.bn_splits, in_channels = opts.in_channels,
    cifar_stem = opts.cifar_stem, width = opts.width, zero_init_residual = opts.zero_init_residual,
  }
  local function make_encoder(g) return MoCo.make_encoder(encoder_options, g) end
  self:add_module("encoder_q", make_encoder(gen(0)))
  self:add_module("encoder_k", make_encoder(gen(1)))
  self.encoder_q.need_input_grad = false -- no one uses d loss / d image: skip the stem's input gradient
  self.encoder_q:flatten_parameters()
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
-- o: arch, dim, mlp, bn_splits, in_channels, cifar_stem, width, zero_init_residual.
function MoCo.make_encoder(o, g)
  local enc = models.get(o.arch, {
    num_classes = o.dim, in_channels = o.in_channels, cifar_stem = o.cifar_stem,
    width = o.width, zero_init_residual = o.zero_init_residual,
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
  return string.format("dim=%d, K=%d, m=%g, T=%g, mlp=%s, bn_splits=%d, symmetric=%s, shuffle=%s",
                       self.dim, self.K, self.m, self.T, tostring(self.mlp), self.bn_splits,
                       tostring(self.symmetric), tostring(self.shuffle))
end

-- The official state-dict buffer is a 1-element int64 tensor; here a Lua integer, exposed
-- through state_dict() as a 0-d tensor for checkpoints.
function MoCo:state_dict()
  local sd = nn.Module.state_dict(self)
  sd.queue_ptr = moco.tensor(self.queue_ptr)
  sd.normalize_q = nil
  return sd
end

function MoCo:load_state_dict(sd, strict)
  local copy = {}
  for k, v in pairs(sd) do copy[k] = v end
  local ptr = copy.queue_ptr
  copy.queue_ptr = nil
  local missing, unexpected = nn.Module.load_state_dict(self, copy, false)
  if strict ~= false and (#missing > 0 or #unexpected > 0 or ptr == nil) then
    if ptr == nil then missing[#missing + 1] = "queue_ptr" end
    error(string.format("MoCo:load_state_dict: missing keys: {%s}; unexpected keys: {%s}",
                        table.concat(missing, ", "), table.concat(unexpected, ", ")), 2)
  end
  if ptr then self.queue_ptr = math.tointeger(ptr:item()) end
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

-- One training step; returns loss, acc@1, acc@5 (percent) of the contrastive task.
function MoCo:step(im_q, im_k)
  if not self.training then error("MoCo:step: the model is in eval mode; call model:train() first", 2) end
  local n = im_q:size(1)
  if n % self.bn_splits ~= 0 then
    error(string.format("MoCo:step: the batch of %d images cannot be split into bn_splits = %d equal groups "
                        .. "(choose --batch-size a multiple of --bn-splits)", n, self.bn_splits), 2)
  end
  local per_step = (self.symmetric and 2 * n or n) * dist.size()
  if self.K % per_step ~= 0 then
    error(string.format("MoCo:step: K = %d is not a multiple of the %d keys enqueued per step (batch %d%s%s)",
                        self.K, per_step, n, self.symmetric and ", symmetric" or "",
                        dist.active() and string.format(" on each of %d ranks", dist.size()) or ""), 2)
  end
  self.encoder_q:zero_grad()
  if self.keep_logits then self.last_logits = {} end
  self:momentum_update()
  local loss, acc1, acc5
  if self.symmetric then
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
