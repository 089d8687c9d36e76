#!/bin/sh
# tests/sh/test_checkpoint_cli.sh: checkpoints of a real moco-lua process (lua/main.c's deferred
# interrupts, lua/moco/train.lua, lua/moco/pretrain.lua, core/io/atomic.c):
#   - Ctrl-C (SIGINT) after the first step: the step finishes, a checkpoint is written, the
#     resume command is printed, the exit status is 130; running the printed command ends
#     with exactly the state of an uninterrupted run (tensor bytes compared);
#   - SIGTERM: the same with status 143;
#   - a second Ctrl-C quits at once (130) and leaves every checkpoint on disk loadable and
#     the earlier ones untouched;
#   - a diverging run (non-finite loss) stops with a message naming the last good checkpoint,
#     which stays as it was;
#   - a full disk (a 400 KB tmpfs) and a read-only directory: a clear error, the previous
#     checkpoint intact (skipped with a note when this user may not mount);
#   - resuming with another architecture is refused.
# Run from the repository root: sh tests/sh/test_checkpoint_cli.sh.  Prints PASS/FAIL lines.
. "$(dirname "$0")/lib.sh"

# A tiny MoCo recipe: 512 Fashion-MNIST images, resnet20 at width 0.25, 8 steps per epoch.
cat >"$tmp/recipe.lua" <<'EOF'
local pretrain = require "moco.pretrain"
local opts = pretrain.parse(arg, {
  data = "fashion-mnist", arch = "resnet20", width = 0.25, ["in-channels"] = 1, ["image-size"] = 28,
  ["batch-size"] = 64, ["moco-k"] = 256, ["moco-dim"] = 32, ["train-subset"] = 512, workers = 2,
  ["print-freq"] = 1, lr = 0.06, ["moco-m"] = 0.99, ["moco-t"] = 0.1, mlp = true, ["bn-splits"] = 2,
  threads = 1, cos = true, epochs = 2,
})
if opts then pretrain.run(opts) end
EOF

loads() { "$exe" -e "moco.checkpoint.build_model('$1')" >/dev/null 2>&1; }

# start_run OUT_FILE ERR_FILE ARGS...: starts the recipe in the background, sets $pid.
start_run() {
  out=$1 err=$2
  shift 2
  "$exe" "$tmp/recipe.lua" "$@" >"$out" 2>"$err" &
  pid=$!
}
# wait_for FILE PATTERN: until PATTERN appears in FILE (at most ~60 s).
wait_for() {
  i=0
  while ! grep -q -- "$2" "$1" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 3000 ] || ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.02
  done
  return 0
}

need_exe

# ---- reference: two uninterrupted epochs
"$exe" "$tmp/recipe.lua" --out "$tmp/ref" >"$tmp/ref.out" 2>&1
ok "uninterrupted run" $? "$(tail -3 "$tmp/ref.out")"
ref=$(data_of "$tmp/ref/checkpoint_0001.safetensors")

# ---- Ctrl-C after the first step
start_run "$tmp/int.out" "$tmp/int.err" --out "$tmp/int"
wait_for "$tmp/int.out" 'Epoch: \[0\]\[1/8\]'
kill -INT "$pid"
wait "$pid"
rc=$?
ok "SIGINT exits with 130" "$([ "$rc" -eq 130 ]; echo $?)" "status $rc; $(tail -3 "$tmp/int.err")"
grep -q "moco-lua: SIGINT: stopped at epoch 0 after step [1-7] of 8; checkpoint saved to $tmp/int/checkpoint_0000_step" "$tmp/int.err"
ok "SIGINT message names the checkpoint" $? "$(cat "$tmp/int.err")"
resume=$(sed -n 's/^to resume: //p' "$tmp/int.err")
case "$resume" in
  *"moco-lua $tmp/recipe.lua --resume $tmp/int") pass "resume command printed (--resume DIR alone)" ;;
  *) fail "resume command printed (--resume DIR alone)" "got: $resume" ;;
esac
ckpt=$(ls "$tmp"/int/checkpoint_0000_step*.safetensors 2>/dev/null | head -n 1)
loads "$ckpt"
ok "interrupted checkpoint loads" $? "$ckpt"
eval "$resume" >"$tmp/res.out" 2>&1
ok "the printed command resumes" $? "$(tail -3 "$tmp/res.out")"
grep -q "resumed from $ckpt: epoch 0 after its step" "$tmp/res.out"
ok "resumed inside epoch 0" $? "$(grep resumed "$tmp/res.out")"
got=$(data_of "$tmp/int/checkpoint_0001.safetensors")
ok "interrupt + resume == uninterrupted (bitwise)" "$([ "$got" = "$ref" ]; echo $?)" "final tensors differ"

# ---- SIGTERM
start_run "$tmp/term.out" "$tmp/term.err" --out "$tmp/term"
wait_for "$tmp/term.out" 'Epoch: \[0\]\[1/8\]'
kill -TERM "$pid"
wait "$pid"
rc=$?
ok "SIGTERM exits with 143" "$([ "$rc" -eq 143 ]; echo $?)" "status $rc; $(tail -3 "$tmp/term.err")"
grep -q "moco-lua: SIGTERM: stopped at epoch 0" "$tmp/term.err"
ok "SIGTERM message" $? "$(cat "$tmp/term.err")"
ls "$tmp"/term/checkpoint_0000_step*.safetensors >/dev/null 2>&1
ok "SIGTERM checkpoint written" $? "$(ls "$tmp/term")"

# ---- a second Ctrl-C quits at once; what is on disk stays whole (longer steps: batch 256)
start_run "$tmp/sec.out" "$tmp/sec.err" --epochs 3 --batch-size 256 --train-subset 1024 --moco-k 1024 \
  --out "$tmp/second"
wait_for "$tmp/sec.out" 'Epoch: \[1\]\[1/4\]'
before=$(md5sum "$tmp/second/checkpoint_0000.safetensors" | cut -d' ' -f1)
kill -INT "$pid"
wait_for "$tmp/sec.err" 'stopping after the current step'
kill -INT "$pid"
wait "$pid"
rc=$?
ok "second SIGINT exits with 130" "$([ "$rc" -eq 130 ]; echo $?)" "status $rc"
grep -q "second signal: quitting now" "$tmp/sec.err"
ok "second SIGINT quits at once" $? "$(cat "$tmp/sec.err")"
after=$(md5sum "$tmp/second/checkpoint_0000.safetensors" | cut -d' ' -f1)
ok "earlier checkpoint untouched" "$([ "$before" = "$after" ]; echo $?)" "checksum changed"
all_load=0
for f in "$tmp"/second/checkpoint_*.safetensors; do loads "$f" || all_load=1; done
ok "every checkpoint on disk loads" $all_load "$(ls -a "$tmp/second")"

# ---- divergence keeps the last good checkpoint
cp -r "$tmp/ref" "$tmp/div"
before=$(md5sum "$tmp/div/checkpoint_0001.safetensors" | cut -d' ' -f1)
"$exe" "$tmp/recipe.lua" --epochs 3 --resume "$tmp/div" --lr 1e30 >"$tmp/div.out" 2>&1
rc=$?
ok "diverging run fails" "$([ "$rc" -eq 1 ]; echo $?)" "status $rc"
grep -q "training diverged: the loss is .* at epoch 2, step .*The last good checkpoint is $tmp/div/checkpoint_0001.safetensors" "$tmp/div.out"
ok "divergence names the last good checkpoint" $? "$(grep -i diverged "$tmp/div.out")"
after=$(md5sum "$tmp/div/checkpoint_0001.safetensors" | cut -d' ' -f1)
ok "last good checkpoint untouched" "$([ "$before" = "$after" ]; echo $?)" "checksum changed"
[ ! -e "$tmp/div/checkpoint_0002.safetensors" ]
ok "nothing saved after divergence" $? "$(ls "$tmp/div")"

# ---- another architecture
"$exe" "$tmp/recipe.lua" --resume "$tmp/ref" --arch resnet18 >"$tmp/arch.out" 2>&1
rc=$?
ok "another architecture is refused" \
  "$([ "$rc" -ne 0 ] && grep -q "checkpoint_0001.safetensors: the checkpoint is for another model (architecture or size): it holds resnet20 (dim 32, K 256, mlp, width 0.25), the model is resnet18" "$tmp/arch.out"; echo $?)" \
  "status $rc: $(grep -i arch "$tmp/arch.out" | tail -2)"

# ---- full and read-only destinations (a tmpfs: needs permission to mount)
mkdir -p "$tmp/small"
# Room for everything epoch 0 writes (the reference run's directory less its second
# checkpoint) and half a checkpoint more: the checkpoint of epoch 1 cannot fit.
ckpt_kb=$(( $(wc -c <"$tmp/ref/checkpoint_0001.safetensors") / 1024 ))
size_kb=$(( $(du -sk "$tmp/ref" | cut -f1) - ckpt_kb / 2 ))
if mount -t tmpfs -o size=${size_kb}k tmpfs "$tmp/small" 2>/dev/null; then
  mnt="$tmp/small"
  "$exe" "$tmp/recipe.lua" --out "$tmp/small" >"$tmp/full.out" 2>&1
  rc=$?
  grep -q "checkpoint_0001.safetensors: cannot write: No space left on device (the previous" "$tmp/full.out"
  ok "full disk: clear error" "$([ "$rc" -ne 0 ] && grep -q 'No space left on device' "$tmp/full.out"; echo $?)" \
    "status $rc: $(grep -i 'space\|error' "$tmp/full.out" | head -3)"
  loads "$tmp/small/checkpoint_0000.safetensors"
  ok "full disk: previous checkpoint intact" $? "$(ls -la "$tmp/small")"
  [ -z "$(ls -A "$tmp/small" | grep -e '\.tmp' -e '^checkpoint_0001')" ]
  ok "full disk: no partial file left" $? "$(ls -A "$tmp/small")"
  before=$(md5sum "$tmp/small/checkpoint_0000.safetensors" | cut -d' ' -f1)
  mount -o remount,ro "$tmp/small"
  "$exe" -e "local m = moco.checkpoint.build_model('$tmp/small/checkpoint_0000.safetensors')
             moco.checkpoint.save('$tmp/small/checkpoint_0000.safetensors', m, {epoch = 1})" >"$tmp/ro.out" 2>&1
  rc=$?
  grep -q "checkpoint_0000.safetensors: cannot create a file in $tmp/small: Read-only file system" "$tmp/ro.out"
  ok "read-only directory: clear error" "$([ "$rc" -ne 0 ] && grep -q 'Read-only file system' "$tmp/ro.out"; echo $?)" \
    "status $rc: $(head -2 "$tmp/ro.out")"
  after=$(md5sum "$tmp/small/checkpoint_0000.safetensors" | cut -d' ' -f1)
  ok "read-only directory: previous checkpoint intact" "$([ "$before" = "$after" ]; echo $?)" "changed"
  umount "$tmp/small" && mnt=""
else
  echo "note: cannot mount a tmpfs here (not root?): the full-disk and read-only checks are skipped;"
  echo "      tests/c/test_safetensors.c still checks a write that runs out of room"
fi

finish
