-- lua/moco/init.lua: the public `moco` table.
-- The C binding ("moco.core") provides tensors, generators and threading controls;
-- Lua submodules (moco/<name>.lua next to this file) load on first use, so
-- `moco.nn` works without an explicit require and startup stays fast.
local core = require "moco.core"

local moco = {}
for k, v in pairs(core) do moco[k] = v end

-- Classes that live in a submodule of another name (the official code's file names).
local classes = { MoCo = { "moco.builder", "MoCo" } }

setmetatable(moco, {
  __index = function(t, name)
    if type(name) ~= "string" then return nil end
    local class = classes[name]
    if class then
      local value = require(class[1])[class[2]]
      rawset(t, name, value)
      return value
    end
    local modname = "moco." .. name
    if package.searchpath(modname, package.path) then
      local m = require(modname)
      rawset(t, name, m)
      return m
    end
    return nil
  end,
})

return moco
