-- tests/lua/test_datasets.lua: data.ImageFiles and data.FileList from Lua: the datasets for collections
-- without class folders, through data.Loader with every transform (C workers, and the
-- Lua path for T.Lambda).  Fixture trees are written to a temporary directory.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local data, T = moco.data, moco.transforms

local tmpdir = check.tmpdir()

local write = check.write_file

-- A 12x10 RGB image whose pixels depend on `seed`.
local function save_image(path, seed)
  local x = moco.rand { 3, 10, 12 }
  moco.image.from_tensor(x:mul(0.5):add(0.25 * (seed % 2))):save(path)
end

-- Every transform of moco.transforms, in pipelines the C workers run.
local function pipelines()
  local mean, std = { 0.5, 0.4, 0.3 }, { 0.2, 0.25, 0.3 }
  return {
    check.moco_v2_aug(8, mean, std),
    T.Compose { T.Resize(9), T.CenterCrop(8), T.Grayscale(3), T.ToTensor() },
    T.TwoCrops(T.Compose { T.RandomResizedCrop(8), T.ToTensor() }),
    T.Compose { T.Resize { 8, 8 }, T.Lambda(function(img) return img end), T.ToTensor() },
  }
end

-- One epoch over ds with each pipeline: every batch (N, C, 8, 8), labels as expected.
local function epoch_with_every_transform(name, ds, want_label)
  for p, t in ipairs(pipelines()) do
    local loader <close> = data.Loader(ds, { batch_size = 2, transform = t, workers = 2, shuffle = true,
                                             drop_last = false, seed = 3 })
    local seen, shapes, labels = 0, true, true
    local two_crops = t.kind == "TwoCrops"
    for a, b, c in loader:iter() do
      -- TwoCrops: im_q, im_k, labels, indices; otherwise images, labels, indices.
      local x, lbl = a, b
      if two_crops then lbl = c end
      local s = x:size()
      if s[2] ~= 3 or s[3] ~= 8 or s[4] ~= 8 then shapes = false end
      for i = 1, s[1] do
        if want_label(lbl[i]) == false then labels = false end
      end
      seen = seen + s[1]
    end
    check.eq(name .. ": pipeline " .. p .. " covers the epoch", seen, #ds)
    check.ok(name .. ": pipeline " .. p .. " batch shape", shapes, "not (N, 3, 8, 8)")
    check.ok(name .. ": pipeline " .. p .. " labels", labels, "a label differs")
  end
end

local tests = {}

function tests.image_files()
  local root = tmpdir .. "/photos"
  assert(os.execute(string.format("mkdir -p '%s/2019/trip' '%s/2020'", root, root)))
  save_image(root .. "/b.png", 1)
  save_image(root .. "/2019/trip/c.jpg", 2)
  save_image(root .. "/2020/a.PNG", 3)
  save_image(root .. "/2019/d.png", 4)
  write(root .. "/index.html", "<html>")
  local ds = data.ImageFiles(root, { quiet = true })
  check.eq("ImageFiles length", #ds, 4)
  check.eq("ImageFiles skipped", ds.skipped, 1)
  check.eq("ImageFiles has no classes", ds.classes, nil)
  local order = {}
  for i = 1, #ds do order[i] = ds:path(i):sub(#root + 2) end
  check.eq("ImageFiles order is sorted(os.walk)", table.concat(order, " "), "b.png 2019/d.png 2019/trip/c.jpg 2020/a.PNG")
  local image, label = ds:get(1)
  check.eq("ImageFiles label", label, -1)
  check.eq("ImageFiles image width", image.width, 12)
  check.ok("ImageFiles tostring", tostring(ds):find("ImageFiles(", 1, true) ~= nil, tostring(ds))
  epoch_with_every_transform("ImageFiles", ds, function(l) return l == -1 end)
  local gray = data.ImageFiles(root, { channels = 1, quiet = true })
  check.eq("ImageFiles channels = 1", select(1, gray:get(1)).channels, 1)
end

function tests.image_files_errors()
  local empty = tmpdir .. "/empty"
  assert(os.execute("mkdir -p " .. empty))
  check.raises("ImageFiles empty root names it", empty, data.ImageFiles, empty)
  check.raises("ImageFiles missing root names it", tmpdir .. "/missing", data.ImageFiles, tmpdir .. "/missing")
  check.raises("ImageFiles unknown option", "chanels", data.ImageFiles, empty, { chanels = 3 })
  check.raises("ImageFiles root must be a path", "root must be a path", data.ImageFiles, 3)
end

function tests.file_list()
  local root = tmpdir .. "/listed"
  assert(os.execute(string.format("mkdir -p '%s/img/a b'", root)))
  for i = 0, 3 do save_image(string.format("%s/img/%s%d.png", root, i == 3 and "a b/" or "", i), i) end
  write(root .. "/train.txt", "img/2.png 2\nimg/0.png 0\n# held out: img/9.png\n\nimg/1.png 1\n")
  local ds = data.FileList(root .. "/train.txt")
  check.eq("FileList length", #ds, 3)
  check.eq("FileList keeps the list's order", ds:path(1), root .. "/img/2.png")
  check.eq("FileList labels", ds:label(2), 0)
  check.eq("FileList classes are nil", ds.classes, nil)
  check.ok("FileList tostring", tostring(ds):find("FileList(", 1, true) ~= nil, tostring(ds))
  epoch_with_every_transform("FileList", ds, function(l) return l >= 0 and l <= 2 end)
  write(tmpdir .. "/elsewhere.csv", "path,label\r\nimg/a b/3.png,7\r\n")
  local csv = data.FileList(tmpdir .. "/elsewhere.csv", { root = root, channels = 1 })
  local image, label = csv:get(1)
  check.eq("FileList CSV with a root: label", label, 7)
  check.eq("FileList channels = 1", image.channels, 1)
  write(root .. "/plain.txt", "img/0.png\nimg/1.png\n")
  local plain = data.FileList(root .. "/plain.txt", { delimiter = "whitespace" })
  check.eq("FileList without labels gives -1", plain:label(2), -1)
  epoch_with_every_transform("FileList unlabeled", plain, function(l) return l == -1 end)
end

function tests.file_list_errors()
  local root = tmpdir .. "/listed"
  local function list(name, text)
    write(root .. "/" .. name, text)
    return root .. "/" .. name
  end
  check.raises("FileList missing file: file and line", root .. "/m.txt:2: listed file", data.FileList,
               list("m.txt", "img/0.png\nimg/nope.png\n"))
  check.raises("FileList escaping path: file and line", root .. "/e.txt:1: \"../listed/img/0.png\" is a path with a '..'",
               data.FileList, list("e.txt", "../listed/img/0.png\n"))
  check.raises("FileList absolute path", "x.txt:1: \"/etc/hostname\" is an absolute path", data.FileList,
               list("x.txt", "/etc/hostname\n"))
  check.raises("FileList bad label", "l.txt:1: label \"cat\" is not a non-negative integer", data.FileList,
               list("l.txt", "img/0.png cat\n"))
  check.raises("FileList mixed labels", "mx.txt:2: no label, but line 1 has one", data.FileList,
               list("mx.txt", "img/0.png 1\nimg/1.png\n"))
  check.raises("FileList bad delimiter", "delimiter must be", data.FileList, root .. "/m.txt", { delimiter = ";" })
  check.raises("FileList unknown option", "rot", data.FileList, root .. "/m.txt", { rot = root })
  check.raises("FileList missing list", tmpdir .. "/none.txt", data.FileList, tmpdir .. "/none.txt")
end

check.run(tests)
