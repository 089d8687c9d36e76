-- recipes/export.lua: a MoCo checkpoint's query encoder as weights for PyTorch.
--   moco-lua recipes/export.lua [--format F] CHECKPOINT OUT
--
-- CHECKPOINT: a moco-lua checkpoint (safetensors) or an official MoCo checkpoint
-- (moco_v2_800ep_pretrain.pth.tar, read by moco.torch without executing anything).
-- --format (default: by OUT's extension, .pth/.pt/.tar -> pth, .pkl -> detectron2, else
-- safetensors):
--   safetensors  module.encoder_q.* without that prefix and without fc (the projection
--                head); batch-norm counters stay int64.  PyTorch:
--                  net.load_state_dict(safetensors.torch.load_file(OUT), strict=False)
--   pth          the same tensors, in the file's order, as torch.save writes an OrderedDict
--                (zip layout); plain torch.load opens it:
--                  net.load_state_dict(torch.load(OUT), strict=False)
--                  # missing == ["fc.weight", "fc.bias"], unexpected == []
--   detectron2   what the official moco/detection/convert-pretrain-to-detectron2.py writes:
--                a pickle of {"model": {name: numpy array}, "__author__": "MOCO",
--                "matching_heuristics": True} with its renaming (stem.*, res2..res5,
--                convN.norm, shortcut), every module.encoder_q.* tensor included; use it as
--                MODEL.WEIGHTS of the detection configs.
-- (for resnet18/34/50 at width 1 with the ImageNet stem; a CIFAR-stem or narrower encoder has
-- torchvision's names but other shapes).
local recipe = require "moco.recipe"
local checkpoint = require "moco.checkpoint"
local torchfile = require "moco.torch"

local spec = {
  { "format", "", "safetensors, pth or detectron2 (default: by OUT's extension)" },
}
local opts = recipe.parse(arg, spec, {
  description = "Writes the query encoder of CHECKPOINT to OUT (usage: export.lua [--format F] CHECKPOINT OUT)",
})
if not opts then return end
-- Under mpirun, rank 0 alone writes OUT (there is nothing to share out).
if moco.dist.start(opts, "export") ~= 0 then return end
if #opts._positional ~= 2 then
  error("usage: moco-lua recipes/export.lua [--format safetensors|pth|detectron2] CHECKPOINT OUT", 0)
end
local source, out = opts._positional[1], opts._positional[2]
local format = opts.format
if format == "" then
  format = (out:match("%.pth$") or out:match("%.pt$") or out:match("%.tar$")) and "pth"
           or out:match("%.pkl$") and "detectron2" or "safetensors"
end

if format == "safetensors" then
  local count = checkpoint.export_backbone(source, out)
  local written <close> = moco.safe_open(out)
  local meta = written:metadata()
  print(string.format("%s: %d tensors of the query encoder%s written to %s (torchvision names, no fc)",
                      source, count, meta.arch and (" (" .. meta.arch .. ")") or "", out))
  print("PyTorch: model.load_state_dict(safetensors.torch.load_file(\"" .. out .. "\"), strict=False)")
elseif format == "pth" or format == "detectron2" then
  local detectron2 = format == "detectron2"
  local tensors, names, dtypes, info = torchfile.encoder_tensors(source, { keep_fc = detectron2 })
  if info.prefix ~= "module.encoder_q." then
    error(string.format("%s: no tensors named module.encoder_q.*: not a MoCo checkpoint", source), 0)
  end
  if detectron2 then
    local renamed, order, renamed_dtypes = {}, {}, {}
    for i, name in ipairs(names) do
      local new = torchfile.detectron2_name(name)
      renamed[new], order[i], renamed_dtypes[new] = tensors[name], new, dtypes[name]
    end
    torchfile.save_detectron2(out, renamed, { order = order, dtypes = renamed_dtypes })
    print(string.format("%s: %d tensors of the query encoder%s written to %s (detectron2 names, as "
                        .. "convert-pretrain-to-detectron2.py)", source, #order,
                        info.arch and (" (" .. info.arch .. ")") or "", out))
  else
    torchfile.save(out, tensors, { order = names, dtypes = dtypes })
    print(string.format("%s: %d tensors of the query encoder%s written to %s (torchvision names, no fc)", source,
                        #names, info.arch and (" (" .. info.arch .. ")") or "", out))
    print("PyTorch: model.load_state_dict(torch.load(\"" .. out .. "\"), strict=False)")
  end
else
  error("--format must be safetensors, pth or detectron2, got '" .. format .. "'", 0)
end
