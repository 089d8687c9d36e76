-- tests/lua/test_torch.lua: PyTorch's files from Lua (lua/l_torch.c, lua/moco/torch.lua), the
-- hooks that let moco.checkpoint and the recipes read them, and recipes/export.lua --format
-- pth / detectron2.  Fixtures by tests/make_fixtures_torch.py (PyTorch 1.13), committed:
--   - views_{zip,legacy}.pth: every tensor equals PyTorch's exactly, plain entries are data,
--     dict order and shared values survive, None is moco.torch.None;
--   - moco_v2_tiny.pth.tar (the official main_moco.py layout, legacy format) and a torchvision
--     resnet50_tiny.pth: the encoders built from them give PyTorch's eval outputs;
--   - the exports: --format pth reads back (our reader) as the encoder's tensors in the file's
--     order, and export_check.json records that torch.load and load_state_dict accept it;
--     --format detectron2 is byte for byte the file the official conversion writes
--     (moco_v2_tiny.detectron2.pkl, written by pickle.dump).
-- Tolerance for PyTorch outputs: max |moco-lua - PyTorch| <= 1e-5 * max |PyTorch| + 1e-6.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local torchfile = require "moco.torch"
local checkpoint = require "moco.checkpoint"

local DIR = "tests/fixtures/torch/"
local tests = {}

local tmp = check.tmpdir()
local function path(name) return tmp .. "/" .. name end
local read_file = check.read_file

local maxabs = check.maxabs

-- max |got - want| <= 1e-5 * max |want| + 1e-6, compared in order (see the header)
local function compare_ref(label, got, want) check.compare(label, got, want, 1e-5, { flat = true, atol = 1e-6 }) end

local function same_values(a, b)
  if a:numel() ~= b:numel() or table.concat(a:shape(), ",") ~= table.concat(b:shape(), ",") then return false end
  return a:numel() == 0 or maxabs(a - b) == 0
end

local VIEW_NAMES = { "a", "a_t", "a_row", "a_col", "a_block", "base_tail", "expanded", "half", "bf16", "double",
                     "long", "int", "short", "char", "byte", "bool", "scalar", "empty", "param" }

function tests.views_in_both_layouts()
  for _, file in ipairs{ "views_zip.pth", "views_legacy.pth" } do
    local obj, dtypes = torchfile.load(DIR .. file)
    local exact = true
    for _, name in ipairs(VIEW_NAMES) do
      local t = obj.tensors[name]
      if not t or not same_values(t, moco.load_npy(DIR .. "views." .. name .. ".npy")) then exact = false end
    end
    check.ok(file .. ": 19 tensors equal PyTorch's exactly", exact)
    check.eq(file .. ": dict order is the file's", table.concat(torchfile.keys(obj.tensors), ","), table.concat(VIEW_NAMES, ","))
    check.eq(file .. ": dtypes as in the file", table.concat({ dtypes[obj.tensors.half], dtypes[obj.tensors.long],
                                                               dtypes[obj.tensors.bool], dtypes[obj.tensors.a] }, ","),
             "F16,I64,BOOL,F32")
    check.ok(file .. ": plain entries", obj.epoch == 7 and obj.lr == 0.03 and obj.arch == "resnet50" and obj.flag == true
               and obj.big == 1 << 40 and obj.neg == -5 and obj[3] == "int key" and obj.none == torchfile.None
               and tostring(obj.none) == "None" and obj.nested[2][2] == "x" and obj.nested[3].k[1] == torchfile.None
               and obj.nested[3].k[2] == false)
    check.eq(file .. ": an OrderedDict says so", getmetatable(obj.tensors).__name, "OrderedDict")
  end
end

function tests.refusals_name_the_file_and_the_global()
  check.raises("os.system is refused by name", DIR .. "hostile_os_system.pth: pickle byte 2: global 'os.system' is not allowed",
               torchfile.load, DIR .. "hostile_os_system.pth")
  check.raises("a pickled nn.Module is refused", "global 'torch.nn.modules.linear.Linear' is not allowed",
               torchfile.load, DIR .. "hostile_module.pth")
  check.raises("deep nesting is refused by the Lua walk", "nested deeper than 200 levels", torchfile.load,
               DIR .. "deep_nesting.pth")
  check.raises("a storage too short", "the storage is too short", torchfile.load, DIR .. "bad_tensor_past_storage.pth")
  check.raises("an int64 float32 cannot hold names the tensor", "n: I64 value 16777217", torchfile.load,
               DIR .. "bad_inexact_int64.pth")
  check.raises("a file that is no torch file", "not a torch.save file", torchfile.load, DIR .. "input.npy")
  check.eq("format by content", table.concat({ torchfile.format(DIR .. "views_zip.pth"), torchfile.format(DIR .. "views_legacy.pth") }, ","),
           "zip,legacy")
  check.ok("is_torch_file: false for safetensors and missing files",
           not torchfile.is_torch_file("tests/fixtures/checkpoint/torchvision_tiny.safetensors")
             and not torchfile.is_torch_file(path("none.pth")))
end

function tests.official_moco_checkpoint()
  local f <close> = torchfile.open(DIR .. "moco_v2_tiny.pth.tar")
  local meta = f:metadata()
  check.eq("metadata: arch and epoch of the checkpoint", meta.arch .. " " .. meta.epoch, "resnet50 200")
  check.eq("the state dict keeps the file's order", f:order()[1], "module.encoder_q.conv1.weight")
  local dtype, shape = f:info("module.queue_ptr")
  check.eq("queue_ptr is int64 [1]", dtype .. " " .. table.concat(shape, ","), "I64 1")
  local x = moco.load_npy(DIR .. "input.npy")
  for _, how in ipairs{ "moco.torch.load_encoder", "checkpoint.load_encoder", "eval.load_encoder" } do
    local enc
    if how == "moco.torch.load_encoder" then enc = torchfile.load_encoder(DIR .. "moco_v2_tiny.pth.tar")
    elseif how == "checkpoint.load_encoder" then enc = checkpoint.load_encoder(DIR .. "moco_v2_tiny.pth.tar")
    else enc = require("moco.eval").load_encoder(DIR .. "moco_v2_tiny.pth.tar") end
    compare_ref(how .. ": pooled features equal PyTorch's", enc:features(x), moco.load_npy(DIR .. "moco_v2_tiny.features.npy"))
    compare_ref(how .. ": MLP-head output equals PyTorch's", enc:forward(x), moco.load_npy(DIR .. "moco_v2_tiny.output.npy"))
  end
  local tensors, names, _, info = torchfile.encoder_tensors(DIR .. "moco_v1_tiny.pth.tar")
  check.ok("v1 (zip): module.encoder_q. stripped and fc dropped, as main_lincls.py",
           info.prefix == "module.encoder_q." and tensors["conv1.weight"] ~= nil and tensors["fc.weight"] == nil
             and #names == 318)
end

function tests.torchvision_pth()
  local x = moco.load_npy(DIR .. "input.npy")
  for _, file in ipairs{ "resnet50_tiny.pth", "resnet50_tiny_legacy.pth" } do
    local net = moco.models.resnet50{ width = 1 / 32, num_classes = 10 }
    local report = checkpoint.load_torchvision(net, DIR .. file)
    check.eq(file .. ": every tensor loaded", report.loaded, 320)
    net:eval()
    compare_ref(file .. ": features equal torchvision's", net:features(x), moco.load_npy(DIR .. "resnet50_tiny.features.npy"))
    compare_ref(file .. ": logits equal torchvision's", net:forward(x), moco.load_npy(DIR .. "resnet50_tiny.logits.npy"))
  end
  local enc = torchfile.load_encoder(DIR .. "resnet50_tiny.pth")
  compare_ref("load_encoder infers resnet50, width 1/32, 10 classes", enc:forward(x), moco.load_npy(DIR .. "resnet50_tiny.logits.npy"))
  -- A state dict from before PyTorch 0.4.1 (no num_batches_tracked) still loads.
  local old, names = {}, {}
  local f <close> = torchfile.open(DIR .. "resnet50_tiny.pth")
  for _, k in ipairs(f:order()) do
    if not k:match("num_batches_tracked$") then old[k] = f:get_tensor(k); names[#names + 1] = k end
  end
  torchfile.save(path("old.pth"), old, { order = names })
  local net = moco.models.resnet50{ width = 1 / 32, num_classes = 10 }
  local report = checkpoint.load_torchvision(net, path("old.pth"))
  net:eval()
  check.eq("no num_batches_tracked: supplied as 0, as BatchNorm does", report.loaded, 320)
  compare_ref("... and the outputs are the same", net:forward(x), moco.load_npy(DIR .. "resnet50_tiny.logits.npy"))
end

function tests.export_pth_and_detectron2()
  local src = DIR .. "moco_v2_tiny.pth.tar"
  local ok = os.execute(string.format("./moco-lua recipes/export.lua --format pth '%s' '%s' > /dev/null", src, path("e.pth")))
  check.ok("export --format pth runs", ok)
  local back, dtypes = torchfile.load(path("e.pth"))
  local want, names, want_dtypes = torchfile.encoder_tensors(src)
  local same = #torchfile.keys(back) == #names
  for i, k in ipairs(torchfile.keys(back)) do
    same = same and k == names[i] and same_values(back[k], want[k]) and dtypes[back[k]] == want_dtypes[k]
  end
  check.ok("the .pth reads back: the encoder's tensors, order and dtypes, no fc", same and back["fc.0.weight"] == nil)
  local report = moco.json_decode(read_file(DIR .. "export_check.json"))
  check.ok("PyTorch's torch.load and load_state_dict accepted the .pth (export_check.json)",
           report.pth_equal and report.pth_keys_in_order and report.pth_type == "OrderedDict"
             and #report.pth_load_state_dict.missing_keys == 2 and #report.pth_load_state_dict.unexpected_keys == 0)

  ok = os.execute(string.format("./moco-lua recipes/export.lua --format detectron2 '%s' '%s' > /dev/null", src, path("e.pkl")))
  check.ok("export --format detectron2 runs", ok)
  check.ok("the .pkl is byte for byte what the official conversion's pickle.dump writes",
           read_file(path("e.pkl")) == read_file(DIR .. "moco_v2_tiny.detectron2.pkl"))
  check.ok("PyTorch/numpy loaded our .pkl as the official object (export_check.json)",
           report.detectron2_equal and report.detectron2_keys_in_order and report.detectron2_large_arrays_bytes_identical)

  ok = os.execute(string.format("./moco-lua recipes/export.lua '%s' '%s' > /dev/null", src, path("e.safetensors")))
  local st <close> = ok and moco.safe_open(path("e.safetensors")) or nil
  check.ok("export to safetensors reads official checkpoints too", ok and st and #st:keys() == #names)
  ok = os.execute(string.format("./moco-lua recipes/export.lua --format pth '%s' '%s' 2> /dev/null", DIR .. "resnet50_tiny.pth", path("x.pth")))
  check.ok("export of a file that is no MoCo checkpoint fails", not ok)
  ok = os.execute(string.format("./moco-lua recipes/export.lua --format onnx '%s' '%s' 2> /dev/null", src, path("x.onnx")))
  check.ok("an unknown --format fails", not ok)
end

function tests.export_of_a_moco_lua_checkpoint()
  local model = moco.MoCo{ arch = "resnet20", width = 0.25, in_channels = 1, dim = 8, K = 16, mlp = true, seed = 2 }
  checkpoint.save(path("ckpt.safetensors"), model, { epoch = 1 })
  local ok1 = os.execute(string.format("./moco-lua recipes/export.lua '%s' '%s' > /dev/null", path("ckpt.safetensors"), path("m.pth")))
  local ok2 = os.execute(string.format("./moco-lua recipes/export.lua '%s' '%s' > /dev/null", path("ckpt.safetensors"), path("m.pkl")))
  check.ok("exports of a moco-lua checkpoint, format by extension", ok1 and ok2)
  local back, dtypes = torchfile.load(path("m.pth"))
  local sd, same, count = model.encoder_q:state_dict(), true, 0
  for name, t in pairs(sd) do
    if name:sub(1, 3) ~= "fc." then
      count = count + 1
      same = same and back[name] ~= nil and same_values(back[name], t:reshape(back[name]:shape()))
        and dtypes[back[name]] == (name:match("num_batches_tracked$") and "I64" or "F32")
    end
  end
  check.ok("the .pth holds encoder_q without fc, int64 counters", same and #torchfile.keys(back) == count)
  local size = #read_file(path("m.pkl"))
  check.ok("the detectron2 file is a protocol-4 pickle with the head as stem.fc.*",
           read_file(path("m.pkl")):sub(1, 2) == "\x80\x04" and read_file(path("m.pkl")):find("stem.fc.0.weight", 1, true)
             and size > 4 * model.encoder_q:num_parameters())
end

function tests.detectron2_names()
  local cases = {
    ["conv1.weight"] = "stem.conv1.weight", ["bn1.running_var"] = "stem.conv1.norm.running_var",
    ["layer1.0.bn3.weight"] = "res2.0.conv3.norm.weight", ["layer4.2.conv2.weight"] = "res5.2.conv2.weight",
    ["layer2.0.downsample.0.weight"] = "res3.0.shortcut.weight",
    ["layer3.0.downsample.1.num_batches_tracked"] = "res4.0.shortcut.norm.num_batches_tracked",
    ["fc.0.weight"] = "stem.fc.0.weight",
  }
  for from, to in pairs(cases) do check.eq("detectron2 name of " .. from, torchfile.detectron2_name(from), to) end
end

function tests.save_round_trip_and_errors()
  local t = { w = moco.tensor{ { 1, 2 }, { 3, 4 } }, n = moco.tensor(5), z = moco.zeros{ 0, 2 } }
  torchfile.save(path("r.pth"), t, { dtypes = { n = "I64" } })
  local back, dtypes = torchfile.load(path("r.pth"))
  check.ok("save/load: values, dtypes, sorted order by default",
           same_values(back.w, t.w) and back.n:item() == 5 and dtypes[back.n] == "I64" and back.z:numel() == 0
             and table.concat(torchfile.keys(back), ",") == "n,w,z")
  check.raises("a value that is no int64", "is not an int64", torchfile.save, path("bad.pth"), { x = moco.tensor{ 0.5 } },
               { dtypes = { x = "I64" } })
  check.raises("an unknown dtype", "unknown dtype", torchfile.save, path("bad.pth"), { x = moco.tensor{ 1 } },
               { dtypes = { x = "Q8" } })
  check.raises("order must name every tensor", "missing from order", torchfile.save, path("bad.pth"),
               { x = moco.tensor{ 1 }, y = moco.tensor{ 2 } }, { order = { "x" } })
  check.ok("nothing written after the errors", io.open(path("bad.pth")) == nil)
end

check.run(tests)
