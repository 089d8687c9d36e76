#!/bin/sh
# tests/sh/test_eval_recipes.sh: recipes/knn.lua and recipes/lincls.lua end to end on a small
# MoCo checkpoint (a resnet20 at width 0.5 saved untrained with moco.checkpoint.save) and on
# subsets of Fashion-MNIST: they print accuracies, report the linear probe's mode, pass the
# sanity check, write a curves picture that decodes, and reject bad options clearly.
. "$(dirname "$0")/lib.sh"

cat >"$tmp/mkckpt.lua" <<'LUA'
  local model = moco.MoCo{ arch = "resnet20", width = 0.5, in_channels = 1, dim = 16, K = 64, mlp = true, bn_splits = 2 }
  moco.checkpoint.save(arg[1], model, { epoch = 1 })
LUA
./moco-lua "$tmp/mkckpt.lua" "$tmp/ckpt.safetensors" >"$tmp/mk" 2>&1 || fail "make a checkpoint" "$(tail -3 "$tmp/mk")"

./moco-lua recipes/knn.lua --pretrained "$tmp/ckpt.safetensors" --bank-subset 300 --test-subset 100 --knn-k 20 \
  --workers 1 --cache "$tmp/feats" >"$tmp/knn" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "kNN (k=20, T=0.1, cosine, output features): top-1" "$tmp/knn"; then
  pass "knn recipe on a checkpoint prints top-1/top-5"
else
  fail "knn recipe on a checkpoint prints top-1/top-5" "rc $rc: $(tail -3 "$tmp/knn")"
fi
if [ -f "$tmp/feats.bank.safetensors" ] && [ -f "$tmp/feats.test.safetensors" ]; then
  pass "knn --cache writes the feature files"
else
  fail "knn --cache writes the feature files" "$(ls "$tmp")"
fi
./moco-lua recipes/knn.lua --pretrained "$tmp/ckpt.safetensors" --bank-subset 300 --test-subset 100 --knn-k 20 \
  --workers 1 --cache "$tmp/feats" >"$tmp/knn2" 2>&1
if [ "$(grep -o 'top-1 [0-9.]*%  top-5 [0-9.]*%' "$tmp/knn")" = "$(grep -o 'top-1 [0-9.]*%  top-5 [0-9.]*%' "$tmp/knn2")" ]; then
  pass "knn run again over its cache gives the same accuracies"
else
  fail "knn run again over its cache gives the same accuracies" "$(tail -1 "$tmp/knn") vs $(tail -1 "$tmp/knn2")"
fi
./moco-lua recipes/knn.lua --pretrained "$tmp/ckpt.safetensors" --features pooled --bank-subset 200 --test-subset 50 \
  --workers 1 >"$tmp/knnp" 2>&1
grep -q "pooled features" "$tmp/knnp" && pass "knn --features pooled" || fail "knn --features pooled" "$(tail -3 "$tmp/knnp")"

./moco-lua recipes/lincls.lua --pretrained "$tmp/ckpt.safetensors" --train-subset 300 --test-subset 100 --epochs 2 \
  --schedule 1 --lr 0.5 --workers 1 --out "$tmp/out" >"$tmp/lin" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "lincls (precomputed mode, 2 epochs, lr 0.5): test top-1" "$tmp/lin"; then
  pass "lincls recipe (precomputed by default) prints top-1/top-5"
else
  fail "lincls recipe (precomputed by default) prints top-1/top-5" "rc $rc: $(tail -3 "$tmp/lin")"
fi
grep -q "=> sanity check passed." "$tmp/lin" && pass "lincls runs the sanity check" || fail "lincls runs the sanity check" "not in the output"
cat >"$tmp/size.lua" <<'LUA'
  local img = moco.image.load(arg[1])
  print(string.format("%dx%d", img:size()))
LUA
size=$(./moco-lua "$tmp/size.lua" "$tmp/out/lincls-curves.png" 2>&1)
[ "$size" = "1100x810" ] && pass "lincls --out writes a curves PNG that decodes" || fail "lincls --out writes a curves PNG that decodes" "$size"

# main_lincls.py's checkpoints: the classifier saved every epoch, --resume, -e/--evaluate.
lin="--pretrained $tmp/ckpt.safetensors --train-subset 300 --test-subset 100 --schedule 2 --lr 0.5 --workers 1"
# shellcheck disable=SC2086
./moco-lua recipes/lincls.lua $lin --epochs 4 --out "$tmp/l4" >"$tmp/l4.out" 2>&1
# shellcheck disable=SC2086
./moco-lua recipes/lincls.lua $lin --epochs 2 --out "$tmp/l2" >"$tmp/l2a.out" 2>&1
if [ -f "$tmp/l2/checkpoint_0001.safetensors" ] && [ -f "$tmp/l2/model_best.safetensors" ] && [ -f "$tmp/l2/report.html" ]; then
  pass "lincls saves its classifier every epoch, and the best"
else
  fail "lincls saves its classifier every epoch, and the best" "$(ls "$tmp/l2"; tail -3 "$tmp/l2a.out")"
fi
./moco-lua recipes/lincls.lua --resume "$tmp/l2" --epochs 4 >"$tmp/l2b.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "resumed from $tmp/l2/checkpoint_0001.safetensors: epoch 2" "$tmp/l2b.out"; then
  pass "lincls --resume DIR continues the classifier"
else
  fail "lincls --resume DIR continues the classifier" "rc $rc: $(tail -3 "$tmp/l2b.out")"
fi
# the same classifier, bit for bit: fc and the optimizer's momentum (metadata such as the run id differ)
same_classifier=$(./moco-lua -e "local a = moco.load('$tmp/l4/checkpoint_0003.safetensors')
  local b = moco.load('$tmp/l2/checkpoint_0003.safetensors')
  local same = true
  for _, k in ipairs{'fc.weight', 'fc.bias', 'optimizer.momentum_buffer'} do
    local d = a[k] - b[k]
    if d:numel() == 0 or (d * d):sum() ~= 0 then same = false end
  end
  io.write(tostring(same))" 2>&1)
if [ "$(grep -o 'test top-1 [0-9.]*%  top-5 [0-9.]*%' "$tmp/l4.out")" = "$(grep -o 'test top-1 [0-9.]*%  top-5 [0-9.]*%' "$tmp/l2b.out")" ] &&
   [ "$same_classifier" = true ]; then
  pass "lincls 2 epochs + --resume + 2 == 4 epochs (the same classifier, bitwise)"
else
  fail "lincls 2 epochs + --resume + 2 == 4 epochs (the same classifier, bitwise)" "$same_classifier; $(grep 'test top-1' "$tmp/l4.out" "$tmp/l2b.out")"
fi
./moco-lua recipes/lincls.lua -e --resume "$tmp/l4/model_best.safetensors" --test-subset 100 --workers 1 >"$tmp/ev.out" 2>&1
rc=$?
best=$(sed -n 's/.*best top-1 \([0-9.]*\)%.*/\1/p' "$tmp/l4.out")
if [ $rc -eq 0 ] && grep -q "^ \* Acc@1 $best" "$tmp/ev.out"; then
  pass "lincls -e --resume model_best evaluates the best classifier ($best%)"
else
  fail "lincls -e --resume model_best evaluates the best classifier ($best%)" "rc $rc: $(tail -2 "$tmp/ev.out")"
fi
./moco-lua recipes/lincls.lua -e --pretrained "$tmp/ckpt.safetensors" >"$tmp/ev2.out" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q -- "--evaluate needs --resume" "$tmp/ev2.out"; then pass "lincls -e without --resume is a clear error"; else fail "lincls -e without --resume is a clear error" "rc $rc: $(cat "$tmp/ev2.out")"; fi
./moco-lua recipes/lincls.lua --resume "$tmp/ckpt.safetensors" >"$tmp/ev3.out" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "not a linear-classifier checkpoint of moco-lua .* a MoCo checkpoint goes to --pretrained" "$tmp/ev3.out"; then
  pass "lincls --resume of a MoCo checkpoint says what to do"
else
  fail "lincls --resume of a MoCo checkpoint says what to do" "rc $rc: $(cat "$tmp/ev3.out")"
fi

./moco-lua recipes/lincls.lua --pretrained "$tmp/ckpt.safetensors" --no-precomputed --train-subset 128 --test-subset 64 --out "$tmp/aug_run" \
  --epochs 1 --lr 0.5 --batch-size 64 --workers 1 >"$tmp/aug" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "lincls (augmented mode" "$tmp/aug" && grep -q "RandomResizedCrop" "$tmp/aug"; then
  pass "lincls --no-precomputed runs the augmented protocol"
else
  fail "lincls --no-precomputed runs the augmented protocol" "rc $rc: $(tail -3 "$tmp/aug")"
fi
./moco-lua recipes/lincls.lua --pretrained random --train-subset 128 --test-subset 64 --epochs 1 --lr 0.01 --out "$tmp/rand_run" \
  --workers 1 >"$tmp/rand" 2>&1
grep -q "lincls (precomputed mode" "$tmp/rand" && pass "lincls --pretrained random (the untrained baseline)" ||
  fail "lincls --pretrained random (the untrained baseline)" "$(tail -3 "$tmp/rand")"

./moco-lua recipes/lincls.lua >"$tmp/nopre" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q -- "--pretrained is required" "$tmp/nopre"; then pass "missing --pretrained is a clear error"; else fail "missing --pretrained is a clear error" "rc $rc: $(head -2 "$tmp/nopre")"; fi
./moco-lua recipes/knn.lua --pretrained random --knn-kk 5 >"$tmp/typo" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "did you mean --knn-k?" "$tmp/typo"; then pass "a typo in knn.lua names the closest option"; else fail "a typo in knn.lua names the closest option" "rc $rc"; fi
./moco-lua recipes/knn.lua --pretrained "$tmp/ckpt.safetensors" --bank-subset 50 --knn-k 200 >"$tmp/kbank" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q -- "--knn-k 200 is larger than the bank (50 training images, --bank-subset 50)" "$tmp/kbank" &&
   ! grep -q "features" "$tmp/kbank"; then
  pass "knn --knn-k is checked against the bank before any feature is computed"
else
  fail "knn --knn-k is checked against the bank before any feature is computed" "rc $rc: $(cat "$tmp/kbank")"
fi
./moco-lua recipes/knn.lua --pretrained random --features raw >"$tmp/feat" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "features must be output or pooled" "$tmp/feat"; then pass "knn --features checks its value"; else fail "knn --features checks its value" "rc $rc"; fi
./moco-lua recipes/lincls.lua --pretrained "$tmp/nothing.safetensors" --out "$tmp/never" >"$tmp/missing" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "nothing.safetensors" "$tmp/missing" && [ ! -e "$tmp/never" ]; then
  pass "a missing checkpoint is a clear error, before any run directory"
else
  fail "a missing checkpoint is a clear error, before any run directory" "rc $rc: $(head -2 "$tmp/missing"); $(ls "$tmp/never" 2>&1)"
fi
finish
