-- recipes/quickstart.lua: the default demo (`make demo`).
--
-- What it does today: loads Fashion-MNIST from the Debian package, standardises the raw
-- pixels, and classifies the test set by cosine similarity to the class means of the
-- training set -- a raw-pixel baseline computed with the tensor core (matmul, normalize,
-- argmax).  MoCo pre-training is not built yet (see the open MoCo issue); when it lands,
-- this recipe trains a small encoder with MoCo v2 and reports kNN accuracy of its features
-- against this kind of raw-pixel baseline.
local dir = os.getenv("FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"

local function load(split)
  local prefix = split == "train" and "train" or "t10k"
  local images = moco.load_idx(dir .. "/" .. prefix .. "-images-idx3-ubyte.gz")
  local labels = moco.load_idx(dir .. "/" .. prefix .. "-labels-idx1-ubyte.gz")
  return images:reshape(images:size(1), -1), labels
end

local t0 = os.clock()
local x_train, y_train = load("train")
local x_test, y_test = load("test")
print(string.format("Fashion-MNIST: %d training and %d test images of %d pixels (%s)",
                    x_train:size(1), x_test:size(1), x_train:size(2), dir))

-- Standardise every pixel with the training set's statistics.
local mean = x_train:mean(1)
local std = ((x_train - mean) * (x_train - mean)):mean(1):sqrt():clamp(1e-3)
x_train = (x_train - mean) / std
x_test = (x_test - mean) / std

-- Class means through a one-hot matrix: centroids = onehot^T @ x / counts.
local classes = 10
local onehot = moco.zeros{x_train:size(1), classes}
for i = 1, #y_train do onehot:set(i, y_train[i] + 1, 1) end
local counts = onehot:sum(1):reshape(classes, 1)
local centroids = onehot:matmul(x_train, true) / counts

-- Cosine similarity to each class mean; the prediction is the most similar class.
local scores = x_test:normalize():matmul(centroids:normalize(), false, true)
local predicted = scores:argmax(2)          -- 1-based class positions
local correct = 0
for i = 1, #y_test do
  if predicted[i] == y_test[i] + 1 then correct = correct + 1 end
end
print(string.format("nearest class mean on raw pixels (cosine): test accuracy %.4f", correct / #y_test))
print(string.format("done in %.1f s of CPU time", os.clock() - t0))
