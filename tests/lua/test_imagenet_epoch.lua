-- tests/lua/test_imagenet_epoch.lua: a whole epoch over an ImageNet-like folder holding the
-- files real collections hold (CMYK, YCCK and progressive JPEGs, a PNG named .JPEG and a
-- JPEG named .png, every PNG colour type, GIF and WebP), with the MoCo v2 augmentation and
-- the loader's defaults (on_error = "raise": one bad file would end the epoch).  Issue 15.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"
local pretrain = require "moco.pretrain"

local tests = {}
local FIX = "tests/fixtures/images/formats/"

function tests.an_epoch_over_every_oddity()
  local root = check.tmpdir()
  local files = {}
  for line in io.popen("ls " .. FIX):lines() do
    if not line:match("%.npy$") and line ~= "manifest.txt" then files[#files + 1] = line end
  end
  check.ok("the fixtures hold GIF, WebP, CMYK and YCCK files", #files >= 20, #files .. " files")
  -- two classes, as ImageNet's train/<wnid>/ folders
  for i, name in ipairs(files) do
    local dir = string.format("%s/train/n%08d", root, i % 2)
    assert(os.execute("mkdir -p " .. dir))
    assert(os.execute(string.format("cp %s%s %s/", FIX, name, dir)))
  end
  local ds = moco.data.ImageFolder(root .. "/train", { quiet = true })
  -- torchvision's IMG_EXTENSIONS has .webp but not .gif: ImageFolder skips GIFs, as torchvision does
  local images = 0
  for _, name in ipairs(files) do if not name:lower():match("%.gif$") then images = images + 1 end end
  check.eq("every file with an image extension is a sample (GIFs skipped, as torchvision)", #ds, images)
  local opts = pretrain.parse({ "--aug-plus", "--image-size", "32" }, {})
  local aug = pretrain.augmentation(opts, "imagenet")
  local flat = moco.data.Loader(moco.data.ImageFiles(root, { quiet = true }), { batch_size = 4, workers = 1, drop_last = false,
                                                    transform = aug })
  local n_flat = 0
  for im in flat:iter() do n_flat = n_flat + im:size(1) end
  flat:close()
  check.eq("the same folder through data.ImageFiles: every image-extension file again", n_flat, images)
  local loader = moco.data.Loader(ds, { batch_size = 4, transform = moco.transforms.TwoCrops(aug), workers = 2,
                                        drop_last = false, seed = 1 })
  local seen = 0
  local ok, err = pcall(function()
    for im_q, im_k in loader:iter() do
      assert(im_q:size(2) == 3 and im_q:size(3) == 32 and im_k:size(4) == 32)
      seen = seen + im_q:size(1)
    end
  end)
  check.ok("the epoch completes with the default on_error", ok, tostring(err))
  check.eq("every image decoded and augmented into two RGB 32x32 views", seen, images)
  loader:close()
  os.execute("rm -rf " .. root)
end

check.run(tests)
