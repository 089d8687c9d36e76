#!/bin/sh
# tests/sh/test_torch_recipes.sh: recipes/knn.lua and recipes/lincls.lua on an official-MoCo-
# shaped checkpoint (tests/fixtures/torch/moco_v2_tiny.pth.tar: main_moco.py's layout, legacy
# torch.save format, module.encoder_q.* keys) and on a torchvision state dict
# (resnet50_tiny.pth), over a tiny image folder with train/ and val/ made here from the
# committed test images: both recipes run to their accuracy line and lincls passes its sanity
# check; a hostile file is refused with the file and the global named, before any work.
. "$(dirname "$0")/lib.sh"

img=tests/fixtures/images
for split in train val; do
  mkdir -p "$tmp/data/$split/cat" "$tmp/data/$split/cup"
  for i in 1 2 3; do
    cp "$img/chelsea.png" "$tmp/data/$split/cat/$i.png"
    cp "$img/coffee.jpg" "$tmp/data/$split/cup/$i.jpg"
  done
  cp "$img/astronaut.png" "$tmp/data/$split/cat/4.png"
done
ckpt=tests/fixtures/torch/moco_v2_tiny.pth.tar

./moco-lua recipes/knn.lua --pretrained "$ckpt" --data "$tmp/data" --image-size 32 --knn-k 3 --workers 1 >"$tmp/knn" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "kNN (k=3, T=0.1, cosine, output features): top-1" "$tmp/knn"; then
  pass "knn.lua on an official MoCo v2 checkpoint (legacy .pth.tar)"
else
  fail "knn.lua on an official MoCo v2 checkpoint (legacy .pth.tar)" "rc $rc: $(tail -3 "$tmp/knn")"
fi

./moco-lua recipes/lincls.lua --pretrained "$ckpt" --data "$tmp/data" --image-size 32 --epochs 2 --schedule 1 \
  --lr 0.5 --batch-size 4 --workers 1 --out "$tmp/lin_run" >"$tmp/lin" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "lincls (precomputed mode, 2 epochs, lr 0.5): test top-1" "$tmp/lin" &&
   grep -q "=> sanity check passed." "$tmp/lin"; then
  pass "lincls.lua on an official MoCo v2 checkpoint, sanity check passed"
else
  fail "lincls.lua on an official MoCo v2 checkpoint, sanity check passed" "rc $rc: $(tail -3 "$tmp/lin")"
fi

./moco-lua recipes/knn.lua --pretrained tests/fixtures/torch/resnet50_tiny.pth --data "$tmp/data" --image-size 32 \
  --knn-k 3 --features pooled --workers 1 >"$tmp/tv" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "pooled features): top-1" "$tmp/tv"; then
  pass "knn.lua on a torchvision resnet50 .pth"
else
  fail "knn.lua on a torchvision resnet50 .pth" "rc $rc: $(tail -3 "$tmp/tv")"
fi

./moco-lua recipes/lincls.lua --pretrained tests/fixtures/torch/hostile_os_system.pth --data "$tmp/data" \
  --image-size 32 --epochs 1 --workers 1 --out "$tmp/bad_run" >"$tmp/bad" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "hostile_os_system.pth: pickle byte 2: global 'os.system' is not allowed" "$tmp/bad" &&
   ! grep -q "lincls:" "$tmp/bad"; then
  pass "a hostile checkpoint is an error naming the file and the global, before any work"
else
  fail "a hostile checkpoint is an error naming the file and the global, before any work" "rc $rc: $(head -3 "$tmp/bad")"
fi
finish
