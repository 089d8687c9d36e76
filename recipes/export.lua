-- recipes/export.lua: a MoCo checkpoint's query encoder as torchvision weights.
--   moco-lua recipes/export.lua CHECKPOINT OUT.safetensors
--
-- Keeps module.encoder_q.* without that prefix and without fc (the projection head), as the
-- official detectron2 conversion does; batch-norm counters stay int64 as PyTorch has them.
-- In PyTorch:
--   import torchvision, safetensors.torch
--   net = torchvision.models.resnet50()
--   missing, unexpected = net.load_state_dict(safetensors.torch.load_file("OUT.safetensors"), strict=False)
--   # missing == ["fc.weight", "fc.bias"], unexpected == []
-- (for resnet18/34/50 at width 1 with the ImageNet stem; a CIFAR-stem or narrower encoder has
-- torchvision's names but other shapes).
local checkpoint = require "moco.checkpoint"

local args = arg or { ... }
if args[1] == "--help" or args[1] == "-h" or #args ~= 2 then
  print("usage: moco-lua recipes/export.lua CHECKPOINT OUT.safetensors\n"
        .. "Writes the query encoder's backbone with torchvision names and no fc.")
  if #args ~= 2 and args[1] ~= "--help" and args[1] ~= "-h" then os.exit(2) end
  return
end
local source, out = args[1], args[2]
local count = checkpoint.export_backbone(source, out)
local written <close> = moco.safe_open(out)
local meta = written:metadata()
print(string.format("%s: %d tensors of the query encoder%s written to %s (torchvision names, no fc)",
                    source, count, meta.arch and (" (" .. meta.arch .. ")") or "", out))
print("PyTorch: model.load_state_dict(safetensors.torch.load_file(\"" .. out .. "\"), strict=False)")
