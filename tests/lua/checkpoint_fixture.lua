-- tests/lua/checkpoint_fixture.lua: the MoCo model whose export tests/make_fixtures_checkpoint.py
-- loads in PyTorch, shared with tests/lua/test_checkpoint.lua so both build the same bytes.
--
-- Its query encoder is the fixture's torchvision network (a ResNet-18 layout with 1/16 of the
-- channels) changed by single elementwise float32 operations (each correctly rounded by
-- IEEE 754), so the exported weights are bit-identical on every machine and PyTorch's
-- outputs on them, recorded once, stay the reference.
local moco = require "moco"
local checkpoint = require "moco.checkpoint"

local fixture = {}
fixture.dir = "tests/fixtures/checkpoint"
fixture.torchvision = fixture.dir .. "/torchvision_tiny.safetensors"

function fixture.make_model()
  local model = moco.MoCo{ arch = "resnet18", width = 0.0625, dim = 10, K = 16, in_channels = 3, bn_splits = 1,
                           mlp = false, seed = 5 }
  checkpoint.load_torchvision(model.encoder_q, fixture.torchvision)
  for name, t in pairs(model.encoder_q:state_dict()) do
    if name:match("running_var$") then
      t:mul_(2)
    elseif name:match("num_batches_tracked$") then
      t:add_(3)
    elseif name:match("running_mean$") then
      t:add_(0.25)
    elseif t:dim() > 1 then
      t:mul_(0.75)
    else
      t:add_(0.125)
    end
  end
  return model
end

return fixture
