#!/bin/sh
# tests/sh/test_ablations.sh: recipes/ablations.lua and the three dictionary mechanisms in a
# real moco-lua process, on tiny Fashion-MNIST subsets (seconds):
#   - a short --sweep mechanism (all three mechanisms through the real loader) and a
#     --sweep shuffle on a time budget write their table (JSON, markdown) and plot; a CPU
#     time budget stops a run too;
#   - memory_bank and end_to_end runs with the kNN monitor, resumed from a checkpoint, end
#     bitwise where an uninterrupted run ends; lincls reads their checkpoints;
#   - bad input (unknown sweep or value, a bank larger than memory, end-to-end with batches
#     of one) is one clear error before any training step.
. "$(dirname "$0")/lib.sh"

tiny="--train-subset 64 --test-subset 48 --batch-size 16 --bn-splits 2 --moco-k 32 --moco-dim 16 --width 0.25
      --epochs 1 --knn-k 5 --workers 1 --print-freq 0 --threads 1"

# ---- a sweep over the three mechanisms
# shellcheck disable=SC2086
"$exe" recipes/ablations.lua --sweep mechanism $tiny --out "$tmp/abl" >"$tmp/mech" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ -f "$tmp/abl/mechanism.json" ] && [ -f "$tmp/abl/mechanism.md" ] && [ -f "$tmp/abl/mechanism.png" ]; then
  pass "sweep mechanism writes mechanism.json, .md and .png"
else
  fail "sweep mechanism writes mechanism.json, .md and .png" "rc $rc: $(tail -5 "$tmp/mech")"
fi
cat >"$tmp/table.lua" <<'LUA'
  local f = assert(io.open(arg[1])); local doc = moco.json_decode(f:read("a")); f:close()
  local parts = {}
  for _, r in ipairs(doc.runs) do
    assert(type(r.knn_top1) == "number" and r.knn_top1 >= 0 and r.knn_top1 <= 100, "kNN not a percentage")
    assert(type(r.pretext_acc1) == "number" and r.steps > 0, "no pretext accuracy or steps")
    parts[#parts + 1] = tostring(r.value) .. ":" .. r.steps
  end
  io.write(doc.sweep, " ", doc.budget, " ", table.concat(parts, ","))
LUA
got=$("$exe" "$tmp/table.lua" "$tmp/abl/mechanism.json" 2>&1)
[ "$got" = "mechanism steps end_to_end:4,memory_bank:4,moco:4" ] && pass "mechanism.json: one row per mechanism, equal steps" \
  || fail "mechanism.json: one row per mechanism, equal steps" "$got"
rows=$(grep -c '^| \(end_to_end\|memory_bank\|moco\) |' "$tmp/abl/mechanism.md")
[ "$rows" -eq 3 ] && pass "mechanism.md: a markdown row per run" || fail "mechanism.md: a markdown row per run" "$rows rows"
size=$("$exe" -e "local img = moco.image.load('$tmp/abl/mechanism.png'); io.write(img:size())" 2>&1)
[ "$size" = "1100450" ] && pass "mechanism.png decodes (1100x450)" || fail "mechanism.png decodes (1100x450)" "$size"
ls "$tmp"/abl/mechanism/memory_bank/checkpoint_0000.safetensors >/dev/null 2>&1 \
  && pass "each run keeps its checkpoint" || fail "each run keeps its checkpoint" "$(ls -R "$tmp/abl")"

# ---- the shuffle sweep on a time budget: the clock stops each run
# shellcheck disable=SC2086
"$exe" recipes/ablations.lua --sweep shuffle $tiny --epochs 50 --budget time --seconds 0.5 --out "$tmp/abl" \
  >"$tmp/shuf" 2>&1
rc=$?
got=$("$exe" "$tmp/table.lua" "$tmp/abl/shuffle.json" 2>&1)
case "$got" in
  "shuffle time on:"*",off:"*) pass "sweep shuffle --budget time: two runs, stopped by the clock" ;;
  *) fail "sweep shuffle --budget time: two runs, stopped by the clock" "rc $rc: $got $(tail -3 "$tmp/shuf")" ;;
esac
steps=$(echo "$got" | sed 's/.*on:\([0-9]*\),.*/\1/')
[ -n "$steps" ] && [ "$steps" -lt 200 ] && pass "the time budget ends the run before --epochs 50 (200 steps)" \
  || fail "the time budget ends the run before --epochs 50 (200 steps)" "$got"

# shellcheck disable=SC2086
"$exe" recipes/ablations.lua --sweep mechanism --values moco $tiny --epochs 50 --budget cpu --seconds 0.5 \
  --out "$tmp/abl-cpu" >"$tmp/cpu" 2>&1
got=$("$exe" "$tmp/table.lua" "$tmp/abl-cpu/mechanism.json" 2>&1)
case "$got" in
  "mechanism cpu moco:"*) steps=${got#mechanism cpu moco:}
    if [ "$steps" -lt 200 ]; then pass "--budget cpu ends the run on the process's CPU clock"
    else fail "--budget cpu ends the run on the process's CPU clock" "$got"; fi ;;
  *) fail "--budget cpu ends the run on the process's CPU clock" "$got $(tail -3 "$tmp/cpu")" ;;
esac

# ---- memory bank and end-to-end: kNN monitor, exact resume, lincls
cat >"$tmp/recipe.lua" <<'EOF'
local pretrain = require "moco.pretrain"
local opts = pretrain.parse(arg, {
  data = "fashion-mnist", arch = "resnet20", width = 0.25, ["in-channels"] = 1, ["image-size"] = 28,
  ["batch-size"] = 16, ["moco-k"] = 32, ["moco-dim"] = 16, ["train-subset"] = 64, workers = 1, ["print-freq"] = 0,
  lr = 0.06, ["moco-t"] = 0.1, mlp = true, ["bn-splits"] = 2, threads = 1, schedule = {}, epochs = 2,
  ["knn-every"] = 1, ["knn-k"] = 5, ["knn-subset"] = 64,
})
if opts then pretrain.run(opts) end
EOF
for mech in memory_bank end_to_end; do
  "$exe" "$tmp/recipe.lua" --mechanism $mech --out "$tmp/$mech-ref" >"$tmp/$mech-ref.out" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q "Epoch 1: kNN accuracy" "$tmp/$mech-ref.out"; then
    pass "$mech: two epochs with the kNN monitor"
  else
    fail "$mech: two epochs with the kNN monitor" "rc $rc: $(tail -3 "$tmp/$mech-ref.out")"
  fi
  "$exe" "$tmp/recipe.lua" --mechanism $mech --epochs 1 --out "$tmp/$mech-half" >"$tmp/$mech-half.out" 2>&1
  "$exe" "$tmp/recipe.lua" --epochs 2 --resume "$tmp/$mech-half" >"$tmp/$mech-res.out" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q "resumed from" "$tmp/$mech-res.out" && grep -q "mechanism=$mech" "$tmp/$mech-res.out"; then
    pass "$mech: --resume continues the run with its mechanism"
  else
    fail "$mech: --resume continues the run with its mechanism" "rc $rc: $(tail -3 "$tmp/$mech-res.out")"
  fi
  ref=$(data_of "$tmp/$mech-ref/checkpoint_0001.safetensors")
  got=$(data_of "$tmp/$mech-half/checkpoint_0001.safetensors")
  [ "$ref" = "$got" ] && pass "$mech: 1 epoch + resume + 1 epoch = 2 epochs, bitwise (bank, generator, encoder)" \
    || fail "$mech: 1 epoch + resume + 1 epoch = 2 epochs, bitwise (bank, generator, encoder)" "tensors differ"
  "$exe" recipes/lincls.lua --pretrained "$tmp/$mech-ref/checkpoint_0001.safetensors" --train-subset 64 \
    --test-subset 32 --epochs 1 --workers 1 >"$tmp/$mech-lin" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q "test top-1" "$tmp/$mech-lin"; then
    pass "$mech: lincls on its checkpoint"
  else
    fail "$mech: lincls on its checkpoint" "rc $rc: $(tail -3 "$tmp/$mech-lin")"
  fi
done

# ---- bad input: one line, before any training step
refused() { # name, pattern, args...
  name=$1 pattern=$2
  shift 2
  "$exe" "$@" >"$tmp/bad" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && grep -qF -- "$pattern" "$tmp/bad" && ! grep -q "^Epoch" "$tmp/bad"; then
    pass "$name"
  else
    fail "$name" "rc $rc: $(head -3 "$tmp/bad")"
  fi
}
# shellcheck disable=SC2086
refused "unknown sweep" "unknown --sweep 'temperature' (known: mechanism, momentum, K, shuffle, v2)" \
  recipes/ablations.lua --sweep temperature $tiny --out "$tmp/bad-out"
refused "--sweep is required" "--sweep is required" recipes/ablations.lua --out "$tmp/bad-out"
# shellcheck disable=SC2086
refused "unknown mechanism in --values" "unknown value 'queue' (known: moco, end_to_end, memory_bank)" \
  recipes/ablations.lua --sweep mechanism --values moco,queue $tiny --out "$tmp/bad-out"
# shellcheck disable=SC2086
refused "a momentum outside [0, 1], before the first run" "value 1.5: moco.MoCo: the momentum m = 1.5 must be in [0, 1]" \
  recipes/ablations.lua --sweep momentum --values 0.9,1.5 $tiny --out "$tmp/bad-out"
# shellcheck disable=SC2086
refused "a memory bank larger than memory" "the memory bank needs" \
  recipes/ablations.lua --sweep mechanism $tiny --moco-dim 10000000000 --out "$tmp/bad-out"
# shellcheck disable=SC2086
refused "end-to-end with batches of one" "a batch of 1 has none" \
  recipes/ablations.lua --sweep mechanism --values moco,end_to_end $tiny --batch-size 1 --bn-splits 1 --moco-k 4 \
  --out "$tmp/bad-out"
refused "pretrain: unknown --mechanism" "invalid choice 'bank' (choose from moco, end_to_end, memory_bank" "$tmp/recipe.lua" --mechanism bank
finish
