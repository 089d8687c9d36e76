-- tests/lua/test_transforms.lua: moco.image and moco.transforms seen from Lua.
--
-- References: tests/fixtures/images (tests/make_fixtures_transforms.py, torchvision 0.14 /
-- Pillow 9.4).  Comparisons print their max difference in levels (1/255); tolerance 1
-- level for the image ops (measured: 0), 1e-6 for Normalize.  Random transforms are
-- checked with fixed seeds: rates within 4 sigma, RandomResizedCrop's area fraction and
-- log aspect in 10 bins each within 25% of the uniform count.
package.path = "tests/lua/?.lua;" .. package.path
local check = require "check"
local moco = require "moco"

local T = moco.transforms
local I = moco.image
local FIX = "tests/fixtures/images/"

local tmpdir = check.tmpdir()

local MEAN, STD = { 0.485, 0.456, 0.406 }, { 0.229, 0.224, 0.225 }

-- max |a - b| over two tensors of the same shape, or math.huge
local function maxdiff(a, b)
  if table.concat(a:shape(), "x") ~= table.concat(b:shape(), "x") then return math.huge end
  local d1, d2 = (a - b):max(), (b - a):max()  -- max() also returns a position
  return math.max(d1, d2)
end

local function levels(img, npy)
  return maxdiff(img:to_tensor(), moco.load_npy(FIX .. npy .. ".npy")) * 255
end

local function same_image(a, b) return maxdiff(a:to_tensor(), b:to_tensor()) == 0 end

local tests = {}

function tests.image_basics()
  local img = I.load(FIX .. "chelsea.png")
  check.eq("width", img.width, 48)
  check.eq("height", img.height, 36)
  check.eq("channels", img.channels, 3)
  check.eq("mode", img.mode, "RGB")
  check.eq("tostring", tostring(img), "moco.Image 48x36 RGB")
  local w, h = img:size()
  check.ok("size() is width, height", w == 48 and h == 36)
  local gray = I.load(FIX .. "chelsea.png", "L")
  check.eq("load as L", gray.channels, 1)
  check.eq("load auto-detects gray", I.load(FIX .. "camera.png").channels, 1)
  check.eq("convert to RGB", gray:convert("RGB").channels, 3)
  local r, g, b = img:pixel(1, 1)
  local t = img:to_tensor()
  check.eq("to_tensor shape", table.concat(t:shape(), "x"), "3x36x48")
  check.near("pixel(1,1) red = 255 * t[1][1][1]", r, t:get(1, 1, 1) * 255, 1e-3)
  check.ok("pixel returns three values", g ~= nil and b ~= nil)
  check.ok("from_tensor(to_tensor(img)) is exact", same_image(I.from_tensor(t), img))
  check.near("decode against PIL: chelsea.png", levels(img, "dec_chelsea_rgb"), 0, 0)
  check.near("decode against PIL: coffee_progressive.jpg (tol 2)",
             levels(I.load(FIX .. "coffee_progressive.jpg"), "dec_coffee_progressive_rgb"), 0, 2)
  check.near("decode against PIL: palette with tRNS as L",
             levels(I.load(FIX .. "astronaut_palette_trns.png", "L"), "dec_astronaut_palette_trns_l"), 0, 0)
  check.ok("decode from a string", same_image(I.decode(check.read_file(FIX .. "coffee.jpg")), I.load(FIX .. "coffee.jpg")))
  local img2 <close> = I.load(FIX .. "astronaut.png")
  check.eq("close works", img2.width, 40)
end

function tests.save_and_errors()
  local img = I.load(FIX .. "chelsea.png")
  local png, jpg = tmpdir .. "/a.png", tmpdir .. "/a.JPG"
  img:save(png)
  check.ok("PNG save/load round trip", same_image(I.load(png), img))
  img:save(jpg, 90)
  check.ok("JPEG save/load keeps the size", I.load(jpg).width == 48)
  check.raises("unknown extension", "cannot tell the format", function() img:save(tmpdir .. "/a.bmp") end)
  check.raises("missing file names the file", tmpdir .. "/missing.png", I.load, tmpdir .. "/missing.png")
  check.ok("a CMYK JPEG loads as RGB (PIL's convert(\"RGB\"))", I.load(FIX .. "chelsea_cmyk.jpg").mode == "RGB")
  check.raises("bad mode", "mode must be", I.load, FIX .. "chelsea.png", "RGBA")
  -- truncated and corrupt files: errors naming the file, never a crash
  local bytes = check.read_file(FIX .. "chelsea.png")
  local cut = tmpdir .. "/cut.png"
  for _, n in ipairs({ 0, 7, 8, 30, 60, 200, #bytes // 2, #bytes - 20 }) do
    check.write_file(cut, bytes:sub(1, n))
    check.raises("truncated PNG (" .. n .. " bytes) names the file", cut, I.load, cut)
  end
  local corrupt = bytes:sub(1, 100) .. string.rep("\0", 50) .. bytes:sub(151)
  check.raises("corrupt PNG data is an error naming the source", "corrupt.png", I.decode, corrupt, nil, "corrupt.png")
  check.raises("text is not an image", "not a PNG, JPEG, WebP or GIF", I.decode, "hello world")
end

function tests.functional_against_torchvision()
  local F = T.functional
  local rgb, gray = I.load(FIX .. "chelsea.png"), I.load(FIX .. "camera.png")
  local cases = {
    { "resize_down", F.resize(rgb, { 20, 27 }) },
    { "resize_shorter", F.resize(rgb, 24) },
    { "resize_up", F.resize(rgb, { 50, 70 }) },
    { "resized_crop", F.resized_crop(rgb, 5, 7, 20, 30, { 32, 32 }) },
    { "center_crop", F.center_crop(rgb, { 23, 27 }) },
    { "center_crop_pad", F.center_crop(rgb, { 41, 55 }) },
    { "hflip", F.hflip(rgb) },
    { "brightness_1.3", F.adjust_brightness(rgb, 1.3) },
    { "contrast_0.7", F.adjust_contrast(rgb, 0.7) },
    { "saturation_1.5", F.adjust_saturation(rgb, 1.5) },
    { "hue_0.1", F.adjust_hue(rgb, 0.1) },
    { "hue_-0.2", F.adjust_hue(rgb, -0.2) },
    { "grayscale_3", F.rgb_to_grayscale(rgb, 3) },
    { "blur_2.0", F.gaussian_blur(rgb, 2.0) },
    { "blur_gray_1.7", F.gaussian_blur(gray, 1.7) },
    { "contrast_gray", F.adjust_contrast(gray, 0.7) },
  }
  for _, c in ipairs(cases) do
    local d = levels(c[2], "op_" .. c[1])
    check.ok(string.format("F.%s vs torchvision: max diff %g/255 (tol 1/255)", c[1], d), d <= 1, "max diff " .. d)
  end
  local n = F.normalize(rgb:to_tensor(), MEAN, STD)
  local d = maxdiff(n, moco.load_npy(FIX .. "op_normalize.npy"))
  check.ok(string.format("F.normalize vs torchvision: max diff %g (tol 1e-6)", d), d <= 1e-6, "max diff " .. d)
  check.raises("F.gaussian_blur refuses torchvision's signature", "not torchvision", F.gaussian_blur, rgb, 3, 1.0)
end

function tests.transforms_match_functional()
  local rgb = I.load(FIX .. "chelsea.png")
  local g = moco.Generator(1)
  check.near("Resize(24) = torchvision", levels(T.Resize(24)(rgb, g), "op_resize_shorter"), 0, 1)
  check.near("CenterCrop{23, 27} = torchvision", levels(T.CenterCrop({ 23, 27 })(rgb, g), "op_center_crop"), 0, 1)
  check.near("ColorJitter{hue = {0.1, 0.1}} = adjust_hue(0.1)",
             levels(T.ColorJitter { hue = { 0.1, 0.1 } }(rgb, g), "op_hue_0.1"), 0, 1)
  check.near("GaussianBlur{2.0, 2.0} = PIL blur 2.0", levels(T.GaussianBlur { 2.0, 2.0 }(rgb, g), "op_blur_2.0"), 0, 1)
  check.near("Grayscale(3) = torchvision", levels(T.Grayscale(3)(rgb, g), "op_grayscale_3"), 0, 1)
  local x = T.Compose { T.ToTensor(), T.Normalize(MEAN, STD) }(rgb, g)
  check.ok("ToTensor + Normalize = torchvision", maxdiff(x, moco.load_npy(FIX .. "op_normalize.npy")) <= 1e-6)
  check.ok("Normalize alone works on a tensor", maxdiff(T.Normalize(MEAN, STD)(rgb:to_tensor()), x) == 0)
  check.ok("a transform accepts an image path", T.ToTensor()(FIX .. "chelsea.png"):size(1) == 3)
end

function tests.reprs()
  check.eq("RandomResizedCrop repr", tostring(T.RandomResizedCrop(224, { scale = { 0.2, 1 } })),
           "RandomResizedCrop(size=(224, 224), scale=(0.2, 1.0), ratio=(0.75, 1.3333), interpolation=bilinear, antialias=None)")
  check.eq("Resize repr", tostring(T.Resize(256)), "Resize(size=256, interpolation=bilinear, max_size=None, antialias=None)")
  check.eq("CenterCrop repr", tostring(T.CenterCrop(224)), "CenterCrop(size=(224, 224))")
  check.eq("ColorJitter repr", tostring(T.ColorJitter(0.4, 0.4, 0.4, 0.1)),
           "ColorJitter(brightness=[0.6, 1.4], contrast=[0.6, 1.4], saturation=[0.6, 1.4], hue=[-0.1, 0.1])")
  check.eq("ColorJitter clips at 0", tostring(T.ColorJitter(1.5)),
           "ColorJitter(brightness=[0.0, 2.5], contrast=None, saturation=None, hue=None)")
  check.eq("RandomHorizontalFlip repr", tostring(T.RandomHorizontalFlip()), "RandomHorizontalFlip(p=0.5)")
  check.eq("RandomGrayscale repr", tostring(T.RandomGrayscale(0.2)), "RandomGrayscale(p=0.2)")
  check.eq("GaussianBlur repr", tostring(T.GaussianBlur { 0.1, 2.0 }), "GaussianBlur(sigma=[0.1, 2.0])")
  check.eq("Normalize repr", tostring(T.Normalize(MEAN, STD)),
           "Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])")
  check.eq("RandomApply repr", tostring(T.RandomApply(T.GaussianBlur { 0.1, 2.0 }, 0.5)),
           "RandomApply(\n    p=0.5\n    GaussianBlur(sigma=[0.1, 2.0])\n)")
  check.eq("Compose repr", tostring(T.Compose { T.RandomHorizontalFlip(), T.ToTensor() }),
           "Compose(\n    RandomHorizontalFlip(p=0.5)\n    ToTensor()\n)")
  check.eq("Lua-only Compose repr", tostring(T.Compose { T.ToTensor(), function(x) return x end }),
           "Compose(\n    ToTensor()\n    Lambda()\n)")
  check.eq("TwoCrops repr", tostring(T.TwoCrops(T.ToTensor())), "TwoCrops(\n    ToTensor()\n)")
end

function tests.construction_errors()
  check.raises("unknown option", "unknown option 'scal'", T.RandomResizedCrop, 32, { scal = { 0.2, 1 } })
  check.raises("bad size", "size must be", T.CenterCrop, "big")
  check.raises("zero size", "positive", T.Resize, 0)
  check.raises("std zero", "zero", T.Normalize, { 0.5 }, { 0 })
  check.raises("image op after ToTensor", "before ToTensor", T.Compose, { T.ToTensor(), T.RandomHorizontalFlip() })
  check.raises("Normalize before ToTensor", "takes an image but receives a tensor", T.Compose, { T.Normalize(MEAN, STD), T.ToTensor() })
  check.raises("RandomApply(ToTensor)", "may be skipped", T.RandomApply, T.ToTensor(), 0.5)
  check.raises("p > 1", "p must be", T.RandomHorizontalFlip, 1.5)
  check.raises("hue > 0.5", "hue values should be between", T.ColorJitter, 0, 0, 0, 0.6)
  check.raises("negative brightness", "non negative", T.ColorJitter, -0.1)
  check.raises("torchvision-style GaussianBlur", "no kernel_size", T.GaussianBlur, 23, { 0.1, 2.0 })
  check.raises("only bilinear", "only interpolation", T.Resize, 32, { interpolation = "nearest" })
  check.raises("TwoCrops inside Compose", "outermost", T.Compose, { T.TwoCrops(T.ToTensor()) })
  check.raises("Lambda needs a function", "expected a function", T.Lambda, 3)
  check.raises("Compose of a number", "expected a moco.transforms object", T.Compose, { 3 })
  check.raises("Normalize applied to an image", "ToTensor", function()
    T.Normalize(MEAN, STD)(I.load(FIX .. "chelsea.png"))
  end)
end

function tests.determinism_and_lambda()
  local img = I.load(FIX .. "astronaut.png")
  local aug = check.moco_v2_aug(24, MEAN, STD)
  check.eq("kinds", table.concat({ aug:kinds() }, "->"), "image->tensor")
  check.ok("C pipeline has a handle", aug.handle ~= nil and not aug.lua_only)
  local a, b = aug(img, moco.Generator(7)), aug(img, moco.Generator(7))
  check.eq("same generator seed, same view", maxdiff(a, b), 0)
  check.ok("different seeds, different views", maxdiff(a, aug(img, moco.Generator(8))) > 0)
  moco.manual_seed(3)
  local c = aug(img)
  moco.manual_seed(3)
  check.eq("default generator follows manual_seed", maxdiff(c, aug(img)), 0)
  local calls = 0
  local lam = T.Lambda(function(x) calls = calls + 1; return x:convert("L") end)
  local mixed = T.Compose { T.Resize(20), lam, T.ToTensor() }
  check.ok("a Lambda makes the pipeline Lua-only", mixed.handle == nil and mixed.lua_only)
  local y = mixed(img)
  check.ok("Lua-only pipeline runs", calls == 1 and y:size(1) == 1 and y:size(2) == 20)
  local q, k = T.TwoCrops(aug)(img, moco.Generator(1))
  check.ok("TwoCrops gives two different views", q ~= nil and k ~= nil and maxdiff(q, k) > 0)
  local ra = T.RandomApply({ T.Lambda(function(x) return x:convert("L") end) }, 0.3)
  local g, hits = moco.Generator(11), 0
  for _ = 1, 2000 do if ra(img, g).channels == 1 then hits = hits + 1 end end
  local sigma = math.sqrt(2000 * 0.3 * 0.7)
  check.ok(string.format("Lua-side RandomApply rate %d/2000 within 4 sigma of 600", hits), math.abs(hits - 600) <= 4 * sigma)
end

function tests.random_rates()
  local img = I.load(FIX .. "chelsea.png")
  local flipped = T.functional.hflip(img)
  local function rate(t, n, pred)
    local g, hits = moco.Generator(99), 0
    for _ = 1, n do if pred(t(img, g)) then hits = hits + 1 end end
    return hits
  end
  local function within(name, hits, n, p)
    local sigma = math.sqrt(n * p * (1 - p))
    check.ok(string.format("%s: %d of %d, expected %.0f +- %.0f (4 sigma)", name, hits, n, n * p, 4 * sigma),
             math.abs(hits - n * p) <= 4 * sigma)
  end
  local n = 3000
  within("RandomHorizontalFlip(0.3)", rate(T.RandomHorizontalFlip(0.3), n, function(x) return same_image(x, flipped) end), n, 0.3)
  local function is_gray(x)
    local r, g, b = x:pixel(10, 10)
    local r2, g2, b2 = x:pixel(30, 20)
    return r == g and g == b and r2 == g2 and g2 == b2
  end
  within("RandomGrayscale(0.1)", rate(T.RandomGrayscale(0.1), n, is_gray), n, 0.1)
  within("RandomApply(Grayscale(3), 0.8)", rate(T.RandomApply(T.Grayscale(3), 0.8), n, is_gray), n, 0.8)
  check.eq("RandomGrayscale keeps 3 channels", T.RandomGrayscale(1)(img).channels, 3)
  check.eq("RandomGrayscale of a gray image stays gray", T.RandomGrayscale(1)(img:convert("L")).channels, 1)
end

function tests.random_resized_crop_distribution()
  -- scale <= 0.5 on a square image: no try is rejected, so area ~ U[0.08, 0.5] and
  -- log aspect ~ U[log 3/4, log 4/3]; 10 bins each, every bin within 25% of N/10.
  local rrc = T.RandomResizedCrop(32, { scale = { 0.08, 0.5 } })
  local g, N = moco.Generator(5), 10000
  local area_bins, ratio_bins, inside = {}, {}, true
  for i = 1, 10 do area_bins[i], ratio_bins[i] = 0, 0 end
  local lo, hi = math.log(3 / 4), math.log(4 / 3)
  for _ = 1, N do
    local top, left, h, w = rrc:get_params({ 1000, 1000 }, g)
    if top < 0 or left < 0 or top + h > 1000 or left + w > 1000 then inside = false end
    local a = (h * w / 1e6 - 0.08) / 0.42
    local r = (math.log(w / h) - lo) / (hi - lo)
    local ab, rb = math.min(10, math.max(1, math.floor(a * 10) + 1)), math.min(10, math.max(1, math.floor(r * 10) + 1))
    area_bins[ab] = area_bins[ab] + 1
    ratio_bins[rb] = ratio_bins[rb] + 1
  end
  check.ok("crops lie inside the image", inside)
  local function flat(bins)
    local worst = 0
    for i = 1, 10 do worst = math.max(worst, math.abs(bins[i] - N / 10) / (N / 10)) end
    return worst
  end
  local fa, fr = flat(area_bins), flat(ratio_bins)
  check.ok(string.format("area fraction roughly uniform (worst bin off by %.1f%%)", 100 * fa), fa < 0.25)
  check.ok(string.format("log aspect roughly uniform (worst bin off by %.1f%%)", 100 * fr), fr < 0.25)
  local out = rrc(I.load(FIX .. "chelsea.png"), g)
  check.ok("RandomResizedCrop output size", out.width == 32 and out.height == 32)
  check.raises("get_params only on RandomResizedCrop", "only RandomResizedCrop", function()
    T.ToTensor():get_params({ 10, 10 })
  end)
end

-- RandomCrop(size, {padding}): each view is a window of the zero-padded image at an offset
-- (i, j) with 0 <= i <= H - h, 0 <= j <= W - w of the padded size, every offset about
-- equally often (within 4 sigma of N / offsets); no padding and the full size is the image.
function tests.random_crop()
  local H0, W0 = 5, 6
  local src = moco.zeros{ 1, H0, W0 }
  for y = 1, H0 do for x = 1, W0 do src:set(1, y, x, (10 * y + x) / 255) end end
  local img = I.from_tensor(src)
  -- the padded reference (left, top, right, bottom) and the offset a view came from
  local function window_offset(view, pl, pt, pr, pb)
    local v = view:to_tensor()
    local h, w = v:size(2), v:size(3)
    local H, W = H0 + pt + pb, W0 + pl + pr
    local found
    for i = 0, H - h do
      for j = 0, W - w do
        local same = true
        for y = 1, h do
          for x = 1, w do
            local sy, sx = i + y - pt, j + x - pl
            local want = (sy >= 1 and sy <= H0 and sx >= 1 and sx <= W0) and src:get(1, sy, sx) or 0
            if math.abs(v:get(1, y, x) - want) > 1e-6 then same = false break end
          end
          if not same then break end
        end
        if same then
          if found then return "ambiguous" end
          found = i .. "," .. j
        end
      end
    end
    return found
  end
  local function distribution(label, t, pads, n_offsets)
    local g, N, counts, bad = moco.Generator(21), 1800, {}, 0
    for _ = 1, N do
      local off = window_offset(t(img, g), table.unpack(pads))
      if off == nil or off == "ambiguous" then bad = bad + 1 else counts[off] = (counts[off] or 0) + 1 end
    end
    check.eq(label .. ": every view is a window of the padded image", bad, 0)
    local seen, worst = 0, 0
    local p = 1 / n_offsets
    for _, c in pairs(counts) do
      seen = seen + 1
      worst = math.max(worst, math.abs(c - N * p) / math.sqrt(N * p * (1 - p)))
    end
    check.eq(label .. ": offsets reached", seen, n_offsets)
    check.ok(string.format("%s: offsets uniform (worst %.1f sigma)", label, worst), worst <= 4)
  end
  -- padding 1 on every side, crop of the original size: 3 x 3 offsets
  distribution("RandomCrop({5, 6}, padding 1)", T.RandomCrop({ 5, 6 }, { padding = 1 }), { 1, 1, 1, 1 }, 9)
  -- {left/right, top/bottom} = {2, 0}, crop 3x4: (5 - 3 + 1) x (10 - 4 + 1) offsets
  distribution("RandomCrop({3, 4}, padding {2, 0})", T.RandomCrop({ 3, 4 }, { padding = { 2, 0 } }), { 2, 0, 2, 0 }, 21)
  -- {left, top, right, bottom}
  distribution("RandomCrop({5, 6}, padding {0, 1, 2, 0})", T.RandomCrop({ 5, 6 }, { padding = { 0, 1, 2, 0 } }),
               { 0, 1, 2, 0 }, 6)
  check.eq("full-size crop without padding is the image",
           maxdiff(T.RandomCrop({ 5, 6 })(img, moco.Generator(1)):to_tensor(), src), 0)
  -- pad_if_needed: 7x8 from 5x6 pads 2 on each side of both axes (torchvision), 3 x 3 offsets
  distribution("RandomCrop({7, 8}, pad_if_needed)", T.RandomCrop({ 7, 8 }, { pad_if_needed = true }), { 2, 2, 2, 2 }, 9)
  check.raises("too large without pad_if_needed", "required crop size (7, 8) is larger than the (padded) input image size (5, 6)",
               T.RandomCrop({ 7, 8 }), img)
  check.eq("RandomCrop repr", tostring(T.RandomCrop(28, { padding = 4 })), "RandomCrop(size=(28, 28), padding=4)")
  check.eq("RandomCrop repr, 4 paddings", tostring(T.RandomCrop(28, { padding = { 1, 2, 3, 4 } })),
           "RandomCrop(size=(28, 28), padding=[1, 2, 3, 4])")
  check.raises("negative padding", "padding values must be non-negative integers", T.RandomCrop, 28, { padding = -1 })
  check.raises("padding of 3 values", "padding must be an int or a list of 2 or 4 ints", T.RandomCrop, 28, { padding = { 1, 2, 3 } })
  check.raises("fill other than 0", "only fill = 0", T.RandomCrop, 28, { padding = 4, fill = 1 })
  check.raises("reflect padding", "only padding_mode = \"constant\"", T.RandomCrop, 28, { padding_mode = "reflect" })
  check.raises("unknown option", "unknown", T.RandomCrop, 28, { pad = 4 })
  local aug = T.Compose{ T.RandomCrop({ 5, 6 }, { padding = 4 }), T.RandomHorizontalFlip(), T.ToTensor() }
  check.ok("RandomCrop runs in a C pipeline (loader workers)", aug.handle ~= nil and not aug.lua_only)
  local a, b = aug(img:convert("L"), moco.Generator(4)), aug(img:convert("L"), moco.Generator(4))
  check.eq("same seed, same RandomCrop view", maxdiff(a, b), 0)
end

function tests.preview()
  local aug = T.Compose { T.RandomResizedCrop(16), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD) }
  local out = tmpdir .. "/preview.png"
  local path, grid = T.preview(aug, FIX .. "astronaut.png", { n = 6, out = out, seed = 1, nrow = 3 })
  check.eq("preview returns the path", path, out)
  local back = I.load(out)
  check.ok("preview grid size (3x2 cells of 16 + padding 2)", back.width == 3 * 18 + 2 and back.height == 2 * 18 + 2)
  check.ok("preview file equals the returned grid", same_image(back, grid))
  local _, again = T.preview(aug, FIX .. "astronaut.png", { n = 6, out = out, seed = 1, nrow = 3 })
  check.ok("preview is reproducible with a seed", same_image(again, grid))
  -- Un-normalisation: ToTensor + Normalize on an unchanged image shows the image itself.
  local img = I.load(FIX .. "chelsea.png")
  local _, one = T.preview(T.Compose { T.ToTensor(), T.Normalize(MEAN, STD) }, img,
                           { n = 1, out = out, nrow = 1, padding = 0 })
  local d = maxdiff(one:to_tensor(), img:to_tensor()) * 255
  check.ok(string.format("preview undoes Normalize (max diff %g/255)", d), d <= 1)
  -- A dataset-like source: get(i) returns image, label.
  local ds = { items = { img, I.load(FIX .. "astronaut.png") } }
  function ds:get(i) return self.items[i], i - 1 end
  setmetatable(ds, { __len = function(self) return #self.items end })
  local _, g2 = T.preview(T.Compose { T.Resize({ 20, 20 }) }, ds, { n = 2, out = out, nrow = 2 })
  check.ok("preview of a dataset shows its samples", g2.width == 2 * 22 + 2 and g2.height == 24)
  local _, g3 = T.preview(T.TwoCrops(aug), img, { n = 4, out = out })
  check.ok("preview of TwoCrops shows pairs", g3.width == 2 * 18 + 2 and g3.height == 2 * 18 + 2)
  check.raises("preview rejects unknown options", "unknown option", T.preview, aug, img, { count = 3 })
  check.raises("preview rejects bad sources", "source must be", T.preview, aug, 42, { out = out })
end

check.run(tests)
