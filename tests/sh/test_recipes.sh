#!/bin/sh
# tests/sh/test_recipes.sh: the MoCo recipes run end to end on tiny data (a few steps each):
# moco_v1/moco_v2 on a small ImageNet-style folder, cifar10 on a synthetic CIFAR-10 binary
# set, and their command lines (official flags, --help, a typo's suggestion).
. "$(dirname "$0")/lib.sh"

tiny="--epochs 1 --batch-size 8 --moco-k 16 --image-size 32 --bn-splits 2 --workers 1 --print-freq 1"
# shellcheck disable=SC2086
./moco-lua recipes/moco_v2.lua --data tests/fixtures/data/folder --arch resnet18 $tiny --out "$tmp/run_v2" >"$tmp/v2" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "Epoch 0 done" "$tmp/v2"; then pass "moco_v2 on an image folder"; else fail "moco_v2 on an image folder" "rc $rc: $(tail -3 "$tmp/v2")"; fi
grep -q "GaussianBlur" "$tmp/v2" && pass "moco_v2 uses the v2 augmentation" || fail "moco_v2 uses the v2 augmentation" "no GaussianBlur in the printed pipeline"
# shellcheck disable=SC2086
./moco-lua recipes/moco_v1.lua --data tests/fixtures/data/folder --arch resnet50 $tiny --out "$tmp/run_v1" >"$tmp/v1" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "Epoch 0 done" "$tmp/v1"; then pass "moco_v1 (resnet50) on an image folder"; else fail "moco_v1 (resnet50) on an image folder" "rc $rc: $(tail -3 "$tmp/v1")"; fi

# A synthetic CIFAR-10 in the official binary format: 16 records per file.
make_cifar "$tmp" 16 2>"$tmp/mk" || fail "make synthetic CIFAR-10" "$(cat "$tmp/mk")"
./moco-lua recipes/cifar10.lua --data "cifar10:$tmp" --epochs 1 --batch-size 16 --moco-k 32 --knn-k 5 --workers 1 \
  --out "$tmp/run_c10" >"$tmp/c10" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "kNN accuracy" "$tmp/c10"; then pass "cifar10 recipe with its kNN monitor"; else fail "cifar10 recipe with its kNN monitor" "rc $rc: $(tail -3 "$tmp/c10")"; fi

./moco-lua recipes/moco_v2.lua --data /nowhere --moco-tt 0.2 >"$tmp/typo" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "did you mean --moco-t?" "$tmp/typo"; then pass "a typo names the closest option"; else fail "a typo names the closest option" "rc $rc: $(cat "$tmp/typo")"; fi
./moco-lua recipes/moco_v2.lua --help >"$tmp/help" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q -- "--moco-k" "$tmp/help" && grep -q "65536" "$tmp/help"; then pass "--help lists the options and defaults"; else fail "--help lists the options and defaults" "rc $rc"; fi
./moco-lua recipes/moco_v1.lua >"$tmp/nodata" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q -- "--data (or DIR) is required" "$tmp/nodata"; then pass "missing --data is a clear error"; else fail "missing --data is a clear error" "rc $rc: $(cat "$tmp/nodata")"; fi
finish
