#!/bin/sh
# tests/sh/test_eval_recipes.sh: recipes/knn.lua and recipes/lincls.lua end to end on a small
# MoCo checkpoint (a resnet20 at width 0.5 saved untrained with moco.checkpoint.save) and on
# subsets of Fashion-MNIST: they print accuracies, report the linear probe's mode, pass the
# sanity check, write a curves picture that decodes, and reject bad options clearly.
cd "$(dirname "$0")/../.." || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass() { echo "PASS $1"; }
failed() { echo "FAIL $1: $2"; fail=1; }

cat >"$tmp/mkckpt.lua" <<'LUA'
  local model = moco.MoCo{ arch = "resnet20", width = 0.5, in_channels = 1, dim = 16, K = 64, mlp = true, bn_splits = 2 }
  moco.checkpoint.save(arg[1], model, { epoch = 1 })
LUA
./moco-lua "$tmp/mkckpt.lua" "$tmp/ckpt.safetensors" >"$tmp/mk" 2>&1 || failed "make a checkpoint" "$(tail -3 "$tmp/mk")"

./moco-lua recipes/knn.lua --pretrained "$tmp/ckpt.safetensors" --bank-subset 300 --test-subset 100 --knn-k 20 \
  --workers 1 --cache "$tmp/feats" >"$tmp/knn" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "kNN (k=20, T=0.1, cosine, output features): top-1" "$tmp/knn"; then
  pass "knn recipe on a checkpoint prints top-1/top-5"
else
  failed "knn recipe on a checkpoint prints top-1/top-5" "rc $rc: $(tail -3 "$tmp/knn")"
fi
if [ -f "$tmp/feats.bank.safetensors" ] && [ -f "$tmp/feats.test.safetensors" ]; then
  pass "knn --cache writes the feature files"
else
  failed "knn --cache writes the feature files" "$(ls "$tmp")"
fi
./moco-lua recipes/knn.lua --pretrained "$tmp/ckpt.safetensors" --bank-subset 300 --test-subset 100 --knn-k 20 \
  --workers 1 --cache "$tmp/feats" >"$tmp/knn2" 2>&1
if [ "$(grep -o 'top-1 [0-9.]*%  top-5 [0-9.]*%' "$tmp/knn")" = "$(grep -o 'top-1 [0-9.]*%  top-5 [0-9.]*%' "$tmp/knn2")" ]; then
  pass "knn run again over its cache gives the same accuracies"
else
  failed "knn run again over its cache gives the same accuracies" "$(tail -1 "$tmp/knn") vs $(tail -1 "$tmp/knn2")"
fi
./moco-lua recipes/knn.lua --pretrained "$tmp/ckpt.safetensors" --features pooled --bank-subset 200 --test-subset 50 \
  --workers 1 >"$tmp/knnp" 2>&1
grep -q "pooled features" "$tmp/knnp" && pass "knn --features pooled" || failed "knn --features pooled" "$(tail -3 "$tmp/knnp")"

./moco-lua recipes/lincls.lua --pretrained "$tmp/ckpt.safetensors" --train-subset 300 --test-subset 100 --epochs 2 \
  --schedule 1 --lr 0.5 --workers 1 --out "$tmp/out" >"$tmp/lin" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "lincls (precomputed mode, 2 epochs, lr 0.5): test top-1" "$tmp/lin"; then
  pass "lincls recipe (precomputed by default) prints top-1/top-5"
else
  failed "lincls recipe (precomputed by default) prints top-1/top-5" "rc $rc: $(tail -3 "$tmp/lin")"
fi
grep -q "=> sanity check passed." "$tmp/lin" && pass "lincls runs the sanity check" || failed "lincls runs the sanity check" "not in the output"
cat >"$tmp/size.lua" <<'LUA'
  local img = moco.image.load(arg[1])
  print(string.format("%dx%d", img:size()))
LUA
size=$(./moco-lua "$tmp/size.lua" "$tmp/out/lincls-curves.png" 2>&1)
[ "$size" = "1100x810" ] && pass "lincls --out writes a curves PNG that decodes" || failed "lincls --out writes a curves PNG that decodes" "$size"

./moco-lua recipes/lincls.lua --pretrained "$tmp/ckpt.safetensors" --no-precomputed --train-subset 128 --test-subset 64 \
  --epochs 1 --lr 0.5 --batch-size 64 --workers 1 >"$tmp/aug" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "lincls (augmented mode" "$tmp/aug" && grep -q "RandomResizedCrop" "$tmp/aug"; then
  pass "lincls --no-precomputed runs the augmented protocol"
else
  failed "lincls --no-precomputed runs the augmented protocol" "rc $rc: $(tail -3 "$tmp/aug")"
fi
./moco-lua recipes/lincls.lua --pretrained random --train-subset 128 --test-subset 64 --epochs 1 --lr 0.01 \
  --workers 1 >"$tmp/rand" 2>&1
grep -q "lincls (precomputed mode" "$tmp/rand" && pass "lincls --pretrained random (the untrained baseline)" ||
  failed "lincls --pretrained random (the untrained baseline)" "$(tail -3 "$tmp/rand")"

./moco-lua recipes/lincls.lua >"$tmp/nopre" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q -- "--pretrained is required" "$tmp/nopre"; then pass "missing --pretrained is a clear error"; else failed "missing --pretrained is a clear error" "rc $rc: $(head -2 "$tmp/nopre")"; fi
./moco-lua recipes/knn.lua --pretrained random --knn-kk 5 >"$tmp/typo" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "did you mean --knn-k?" "$tmp/typo"; then pass "a typo in knn.lua names the closest option"; else failed "a typo in knn.lua names the closest option" "rc $rc"; fi
./moco-lua recipes/knn.lua --pretrained random --features raw >"$tmp/feat" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "features must be output or pooled" "$tmp/feat"; then pass "knn --features checks its value"; else failed "knn --features checks its value" "rc $rc"; fi
./moco-lua recipes/lincls.lua --pretrained "$tmp/nothing.safetensors" >"$tmp/missing" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "nothing.safetensors" "$tmp/missing"; then pass "a missing checkpoint is a clear error"; else failed "a missing checkpoint is a clear error" "rc $rc: $(head -2 "$tmp/missing")"; fi
exit $fail
