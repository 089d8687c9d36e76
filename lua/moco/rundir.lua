-- lua/moco/rundir.lua: run directories (moco.rundir).
--
-- Every training run owns one directory (default runs/<recipe>-<YYYYmmdd-HHMMSS>): its
-- checkpoints, config.json (the resolved options, written first, so an unwritable
-- directory fails before any data is loaded), log.jsonl (one JSON object per line: every
-- print-freq step and every epoch), its pictures and report.html.
--
--   run = rundir.create(dir | nil, {recipe=, kind=, options=, command=})   -- a fresh run
--   run = rundir.open(dir)                       -- an existing run directory (config.json)
--   run:save_config(options [, note])            -- rewrite config.json (atomic)
--   run:log(record)                              -- append one line to log.jsonl
--   run:path(name)                               -- dir .. "/" .. name
--   rundir.latest(recipe [, base])               -- the newest runs/<recipe>-* directory
--   rundir.checkpoints(dir)                      -- checkpoint_* files, oldest first
--
-- A directory belongs to one run: config.json holds a random run id, every checkpoint
-- carries it in its metadata, and a fresh run refuses a directory that already holds a run
-- (config.json or checkpoint files) -- continue that one with --resume DIR, or choose
-- another --out.  Nothing read from a file chooses where to write or what to delete: the
-- directory is the one the command line named (or the default); pruning only ever removes
-- checkpoint_NNNN*.safetensors files of that directory.
local moco = require "moco"
local util = require "moco.util"

local rundir = {}

rundir.FORMAT = "moco-lua run 1"
rundir.BASE = "runs"

local function is_directory(path) return moco._io.kind(path) == "directory" end
local function exists(path) return moco._io.kind(path) ~= nil end
rundir.is_directory = is_directory

-- 16 hex digits from the system's random source (a label, not a training randomness).
function rundir.new_id()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(8)
  if f then f:close() end
  if not bytes or #bytes < 8 then
    bytes = string.pack("<d", moco.time()) -- no /dev/urandom: still unique per start
  end
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- "checkpoint_0003.safetensors" (epoch 3 finished) or "checkpoint_0004_step000120.safetensors"
-- (120 batches of epoch 4 done): progress (next epoch, batches done in it), or nil.
function rundir.parse_checkpoint_name(name)
  local e = name:match("^checkpoint_(%d+)%.safetensors$")
  if e then return tonumber(e) + 1, 0 end
  local e2, s = name:match("^checkpoint_(%d+)_step(%d+)%.safetensors$")
  if e2 then return tonumber(e2), tonumber(s) end
  return nil
end

-- The checkpoint files of dir, oldest first: {{name=, path=, epoch=, step=}, ...}.
function rundir.checkpoints(dir)
  local list = {}
  local names = moco._io.listdir(dir)
  if not names then return list end -- no directory: no checkpoints
  for _, name in ipairs(names) do
    local e, s = rundir.parse_checkpoint_name(name)
    if e then list[#list + 1] = { name = name, path = dir .. "/" .. name, epoch = e, step = s } end
  end
  table.sort(list, function(a, b)
    if a.epoch ~= b.epoch then return a.epoch < b.epoch end
    return a.step < b.step
  end)
  return list
end

-- Keeps only the newest `keep` checkpoint files of dir (0 keeps all), never removing the
-- one named `except`; nothing but checkpoint_NNNN*.safetensors is ever removed.
function rundir.prune(dir, keep, except)
  if not keep or keep <= 0 then return end
  local list = rundir.checkpoints(dir)
  for i = 1, #list - keep do
    if list[i].name ~= except then os.remove(list[i].path) end
  end
end

-- JSON with one top-level field per line and one option per line: config.json is read by people.
local function pretty_json(t, order)
  local lines = { "{" }
  local keys = {}
  for _, k in ipairs(order) do if t[k] ~= nil then keys[#keys + 1] = k end end
  for k in pairs(t) do
    local listed = false
    for _, o in ipairs(order) do if o == k then listed = true end end
    if not listed then keys[#keys + 1] = k end
  end
  for i, k in ipairs(keys) do
    local v = t[k]
    local text
    if k == "options" and type(v) == "table" and next(v) ~= nil then
      local names = {}
      for name in pairs(v) do names[#names + 1] = name end
      table.sort(names)
      local items = {}
      for j, name in ipairs(names) do
        items[j] = "    " .. moco.json_encode(name) .. ": " .. moco.json_encode(v[name])
      end
      text = "{\n" .. table.concat(items, ",\n") .. "\n  }"
    else
      text = moco.json_encode(v)
    end
    lines[#lines + 1] = "  " .. moco.json_encode(k) .. ": " .. text .. (i < #keys and "," or "")
  end
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n") .. "\n"
end

local CONFIG_ORDER = { "format", "run_id", "recipe", "kind", "created", "moco_lua", "command", "resumed", "options" }

local Run = {}
Run.__index = Run
Run.__name = "moco.rundir.Run"
rundir.Run = Run

function Run:path(name) return self.dir .. "/" .. name end

function Run:__tostring() return string.format("run %s in %s (%s)", self.id, self.dir, self.recipe or "?") end

-- Rewrites config.json with these options (atomically); note (a table) is added to the
-- "resumed" list when given.
function Run:save_config(options, note)
  local c = self.config
  if options then c.options = options end
  if note then
    c.resumed = c.resumed or {}
    c.resumed[#c.resumed + 1] = note
  end
  local ok, err = pcall(moco._io.write_file, self:path("config.json"), pretty_json(c, CONFIG_ORDER))
  if not ok then
    error(string.format("run directory %s is not writable: %s", self.dir, tostring(err)), 0)
  end
end

-- JSON has no NaN or infinity: such values (an ETA not known yet) are left out.
local function clean(record)
  local t = {}
  for k, v in pairs(record) do
    if type(v) == "number" then
      if util.is_finite(v) then t[k] = v end
    elseif type(v) == "string" or type(v) == "boolean" then
      t[k] = v
    end
  end
  return t
end

-- Appends one JSON object as a line of log.jsonl (opened, written, flushed, closed: a
-- crash loses at most the line being written).
function Run:log(record)
  local f, err = io.open(self:path("log.jsonl"), "a")
  if not f then error(string.format("%s: cannot append to the log: %s", self:path("log.jsonl"), err), 0) end
  local t = clean(record)
  t.time = t.time or os.date("!%Y-%m-%dT%H:%M:%SZ")
  f:write(moco.json_encode(t), "\n")
  f:close()
end

-- The default directory of a new run: runs/<recipe>-<date>, with -2, -3 ... when taken.
function rundir.default_dir(recipe, base)
  base = base or rundir.BASE
  local stem = string.format("%s/%s-%s", base, recipe, os.date("%Y%m%d-%H%M%S"))
  local dir, i = stem, 1
  while exists(dir) do
    i = i + 1
    dir = stem .. "-" .. i
  end
  return dir
end

-- Reads dir/config.json: the table, or nil and why not.
function rundir.read_config(dir)
  local f = io.open(dir .. "/config.json", "rb")
  if not f then return nil, dir .. " has no config.json" end
  local text = f:read(1 << 20) -- a config is a few KB; never read an unbounded file
  f:close()
  local ok, c = pcall(moco.json_decode, text or "")
  if not ok or type(c) ~= "table" or c.format ~= rundir.FORMAT or type(c.run_id) ~= "string" then
    return nil, dir .. "/config.json is not a moco-lua run configuration"
  end
  if type(c.options) ~= "table" then c.options = {} end
  return c
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n or 0
end

-- What a fresh run must not overwrite in dir: nil when dir is free, else a description.
-- A run that has begun training (a checkpoint, or a line in its log.jsonl) owns it; a
-- config.json alone is what a run refused before its first step leaves, and is free.
local function occupant(dir)
  local c = rundir.read_config(dir)
  local list = rundir.checkpoints(dir)
  if c and (#list > 0 or file_size(dir .. "/log.jsonl") > 0) then
    return string.format("the run %s (%s%s)", c.run_id, tostring(c.recipe),
                         #list > 0 and string.format(", %s", list[#list].name) or ", no checkpoint yet")
  end
  if #list > 0 then return string.format("checkpoints of another run (%s)", list[#list].name) end
  return nil
end

-- Removes what a fresh run wrote before it began training (when it was refused), and the
-- directory if that leaves it empty.  Only these names are ever removed.
function Run:abandon()
  if not self.fresh then return end
  for _, name in ipairs{ "config.json", "report.html", "augmentation.png", "log.jsonl" } do os.remove(self:path(name)) end
  os.remove(self.dir) -- succeeds only when empty
end

-- A fresh run in dir (or the default directory): refuses a directory that holds a run,
-- creates it, writes config.json (so an unwritable directory is found now).
-- info: recipe, kind, options, command.
function rundir.create(dir, info)
  local chosen = dir ~= nil and dir ~= ""
  if not chosen then dir = rundir.default_dir(info.recipe) end
  dir = dir:gsub("(.)/+$", "%1")
  if chosen and is_directory(dir) then
    local who = occupant(dir)
    if who then
      error(string.format("--out %s already holds %s: continue it with --resume %s, or choose another --out "
                          .. "(a run directory belongs to one run)", dir, who, dir), 0)
    end
  elseif chosen and exists(dir) then
    error(string.format("--out %s exists and is not a directory", dir), 0)
  end
  local ok, err = pcall(moco._io.makedirs, dir)
  if not ok then error(string.format("run directory %s cannot be created: %s", dir, tostring(err)), 0) end
  local run = setmetatable({ dir = dir, id = rundir.new_id(), recipe = info.recipe, fresh = true }, Run)
  run.config = {
    format = rundir.FORMAT, run_id = run.id, recipe = info.recipe, kind = info.kind,
    created = os.date("%Y-%m-%dT%H:%M:%S"), moco_lua = tostring(moco.version), command = info.command,
  }
  run:save_config(info.options)
  return run
end

-- An existing run directory (to resume it): its config.json decides the run id.
function rundir.open(dir)
  dir = dir:gsub("(.)/+$", "%1")
  local c, why = rundir.read_config(dir)
  if not c then
    error(string.format("--resume %s: %s, so it is not a moco-lua run directory; to start from one of its "
                        .. "checkpoints, give the file (--resume %s/checkpoint_NNNN.safetensors)", dir, why, dir), 0)
  end
  return setmetatable({ dir = dir, id = c.run_id, recipe = c.recipe, config = c, fresh = false }, Run)
end

-- What an MPI rank other than 0 holds in place of its run (moco.dist): the directory and
-- id rank 0 chose, and no writes (rank 0 alone writes config.json, log.jsonl, checkpoints
-- and pictures).
local Follower = setmetatable({}, { __index = Run })
Follower.__index = Follower
Follower.__name = "moco.rundir.Follower"
function Follower.save_config() end
function Follower.log() end
function Follower.abandon() end
function Follower:__tostring() return string.format("run %s in %s (written by rank 0)", self.id, self.dir) end

function rundir.follower(dir, id, info)
  info = info or {}
  return setmetatable({ dir = dir, id = id, recipe = info.recipe, follower = true,
                        config = { run_id = id, recipe = info.recipe, kind = info.kind, options = info.options or {} } },
                      Follower)
end

-- The newest directory base/<recipe>-* with a config.json of that recipe, or nil.
function rundir.latest(recipe, base)
  base = base or rundir.BASE
  local names = moco._io.listdir(base)
  if not names then return nil end
  local best, best_created
  local prefix = recipe .. "-"
  for _, name in ipairs(names) do
    if name:sub(1, #prefix) == prefix then
      local c = rundir.read_config(base .. "/" .. name)
      if c and c.recipe == recipe and (best_created == nil or tostring(c.created) >= best_created) then
        best, best_created = base .. "/" .. name, tostring(c.created)
      end
    end
  end
  return best
end

return rundir
