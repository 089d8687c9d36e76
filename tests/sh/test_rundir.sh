#!/bin/sh
# tests/sh/test_rundir.sh: run directories of the MoCo recipes (lua/moco/rundir.lua,
# lua/moco/pretrain.lua, lua/moco/checkpoint.lua), as a user meets them:
#   - a run directory by default (runs/<recipe>-<date>, printed at start) with config.json,
#     log.jsonl, a checkpoint per epoch and report.html;
#   - --resume DIR alone continues with the data path and every setting of that run;
#     --resume auto starts, then continues;
#   - a checkpoint's metadata never chooses a path or a deletion (issue 12): a crafted
#     config with out=<elsewhere>, keep-checkpoints=1 and data=<elsewhere> changes nothing there;
#   - a fresh run refuses a directory that holds another run; --resume DIR refuses another
#     run's checkpoint; a corrupt newest checkpoint falls back to the previous one;
#   - weights that blew up are never saved; an unwritable --out fails before any data is
#     loaded; options are checked before any training;
#   - --quiet, and the live progress bar on a terminal.
# Run from the repository root: sh tests/sh/test_rundir.sh.  Prints PASS/FAIL lines.
. "$(dirname "$0")/lib.sh"
need_exe

# A tiny MoCo recipe: 256 Fashion-MNIST images, resnet20 at width 0.25, 4 steps per epoch.
cat >"$tmp/tiny.lua" <<'EOF'
local pretrain = require "moco.pretrain"
local opts = pretrain.parse(arg, {
  data = "fashion-mnist", arch = "resnet20", width = 0.25, ["in-channels"] = 1, ["image-size"] = 28,
  ["batch-size"] = 64, ["moco-k"] = 256, ["moco-dim"] = 32, ["train-subset"] = 256, workers = 1,
  ["print-freq"] = 1, lr = 0.06, ["moco-m"] = 0.99, ["moco-t"] = 0.1, mlp = true, ["bn-splits"] = 2,
  threads = 1, cos = true, epochs = 2,
})
if opts then pretrain.run(opts) end
EOF
meta() { # FILE KEY: a checkpoint's metadata field
  "$exe" -e "local f <close> = moco.safe_open('$1'); io.write(tostring(f:metadata()['$2']))"
}
json() { # FILE LUA-EXPRESSION-OF-c: a field of a JSON file
  "$exe" -e "local f = assert(io.open('$1')); local c = moco.json_decode(f:read('a')); f:close(); io.write(tostring($2))"
}

# ---- the default run directory
mkdir -p "$tmp/work"
(cd "$tmp/work" && "$exe" "$tmp/tiny.lua" >"$tmp/d.out" 2>"$tmp/d.err"); rc=$?
ok "a run without --out succeeds" $rc "$(tail -3 "$tmp/d.err")"
dir=$(sed -n 's/^run directory: \([^ ]*\) .*/\1/p' "$tmp/d.out")
case "$dir" in runs/tiny-2[0-9][0-9][0-9][01][0-9][0-3][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]) pass "runs/<recipe>-<date> printed at start" ;;
  *) fail "runs/<recipe>-<date> printed at start" "got '$dir': $(head -2 "$tmp/d.out")" ;; esac
first_line=$(grep -n "^run directory:" "$tmp/d.out" | cut -d: -f1)
data_line=$(grep -n "steps per epoch" "$tmp/d.out" | cut -d: -f1)
ok "the run directory is printed before the data is loaded" "$([ -n "$first_line" ] && [ -n "$data_line" ] && [ "$first_line" -lt "$data_line" ]; echo $?)" "lines $first_line, $data_line"
d="$tmp/work/$dir"
for f in config.json log.jsonl report.html checkpoint_0000.safetensors checkpoint_0001.safetensors training-curves.png augmentation.png; do
  [ -s "$d/$f" ] || missing="$missing $f"
done
ok "a checkpoint per epoch, config.json, log.jsonl, report.html, pictures" "$([ -z "$missing" ]; echo $?)" "missing:$missing"
run_id=$(json "$d/config.json" c.run_id)
ok "config.json: run id, recipe and resolved options" \
  "$([ ${#run_id} -eq 16 ] && [ "$(json "$d/config.json" c.recipe)" = tiny ] && [ "$(json "$d/config.json" 'c.options["moco-k"]')" = 256 ] && [ "$(json "$d/config.json" c.options.out)" = "$dir" ]; echo $?)" \
  "$(head -c 400 "$d/config.json")"
ok "every checkpoint carries the run id" "$([ "$(meta "$d/checkpoint_0001.safetensors" run_id)" = "$run_id" ]; echo $?)" "$(meta "$d/checkpoint_0001.safetensors" run_id) vs $run_id"
steps=$(grep -c '"type":"step"' "$d/log.jsonl"); epochs=$(grep -c '"type":"epoch"' "$d/log.jsonl")
ok "log.jsonl: a line per print-freq step and per epoch" "$([ "$steps" -eq 8 ] && [ "$epochs" -eq 2 ]; echo $?)" "$steps step lines, $epochs epoch lines"
"$exe" -e "for line in io.lines('$d/log.jsonl') do local r = moco.json_decode(line)
  for _, k in ipairs{'epoch', 'loss', 'acc1', 'acc5', 'lr', 'images_per_s', 'data_seconds'} do
    assert(type(r[k]) == 'number', k .. ' missing in ' .. line) end end" >"$tmp/j.err" 2>&1
ok "log.jsonl lines hold loss, acc1, acc5, lr, img/s, data wait" $? "$(cat "$tmp/j.err")"
hist=$("$exe" -e "local c = moco.checkpoint.load('$d/checkpoint_0001.safetensors'); io.write(#c.history, ' ', c.history[1].epoch, ' ', c.history[2].epoch)")
ok "the history is stored in the checkpoint" "$([ "$hist" = "2 0 1" ]; echo $?)" "got '$hist'"

# ---- --resume DIR alone: the data path from config.json, the settings from the checkpoint
make_cifar "$tmp/cifar" 32
"$exe" "$tmp/tiny.lua" "cifar10:$tmp/cifar" --in-channels 3 --image-size 32 --batch-size 32 --moco-k 128 \
  --epochs 1 --out "$tmp/c" >"$tmp/c1.out" 2>&1
ok "a run on a CIFAR-10 folder given as DIR" $? "$(tail -3 "$tmp/c1.out")"
"$exe" "$tmp/tiny.lua" --resume "$tmp/c" --epochs 2 --workers 2 >"$tmp/c2.out" 2>&1
rc=$?
ok "--resume DIR alone continues it" "$([ $rc -eq 0 ] && grep -q "resumed from $tmp/c/checkpoint_0000.safetensors: epoch 1" "$tmp/c2.out" && [ -f "$tmp/c/checkpoint_0001.safetensors" ]; echo $?)" "rc $rc: $(tail -3 "$tmp/c2.out")"
ok "options given again override, with a note" \
  "$(grep -q "note: --workers 2 overrides the checkpoint's 1" "$tmp/c2.out" && grep -q "note: --epochs 2 (was 1) changes the cosine schedule" "$tmp/c2.out"; echo $?)" "$(grep note "$tmp/c2.out")"
ok "... on the data of that run (config.json), with its settings (the checkpoint)" \
  "$(grep -q "resnet20 on cifar (160 images, 5 steps per epoch)" "$tmp/c2.out" && grep -q "in-channels=3 " "$tmp/c2.out"; echo $?)" "$(grep 'steps per epoch' "$tmp/c2.out")"

# ---- --resume auto: starts, then continues (with --out, and with the newest runs/<recipe>-*)
"$exe" "$tmp/tiny.lua" --resume auto --out "$tmp/auto" --epochs 1 >"$tmp/a1.out" 2>&1
rc=$?
ok "--resume auto with nothing to resume starts a run" "$([ $rc -eq 0 ] && grep -q "starting a new run" "$tmp/a1.out" && [ -f "$tmp/auto/checkpoint_0000.safetensors" ]; echo $?)" "rc $rc: $(tail -3 "$tmp/a1.out")"
"$exe" "$tmp/tiny.lua" --resume auto --out "$tmp/auto" --epochs 2 >"$tmp/a2.out" 2>&1
ok "--resume auto again continues it" "$(grep -q "resumed from $tmp/auto/checkpoint_0000.safetensors" "$tmp/a2.out" && [ -f "$tmp/auto/checkpoint_0001.safetensors" ]; echo $?)" "$(tail -3 "$tmp/a2.out")"
(cd "$tmp/work" && "$exe" "$tmp/tiny.lua" --resume auto --epochs 3 >"$tmp/a3.out" 2>&1)
ok "--resume auto without --out continues the newest run of the recipe" \
  "$(grep -q "resumed from $dir/checkpoint_0001.safetensors: epoch 2" "$tmp/a3.out" && [ -f "$d/checkpoint_0002.safetensors" ]; echo $?)" "$(grep -i 'resum\|note' "$tmp/a3.out" | head -3)"

# ---- a checkpoint's metadata never chooses a path or a deletion
mkdir -p "$tmp/evil"
for e in 0 1 2; do cp "$d/checkpoint_0000.safetensors" "$tmp/evil/checkpoint_000$e.safetensors"; done
before=$(ls "$tmp/evil" | wc -l)
cat >"$tmp/craft.lua" <<LUA
  local tensors, meta = moco.load("$d/checkpoint_0001.safetensors")
  local c = moco.json_decode(meta.config)
  c.out, c.resume, c["keep-checkpoints"], c.data = "$tmp/evil", "$tmp/evil", 1, "/nonexistent/data"
  meta.config = moco.json_encode(c)
  local dtypes = {}
  local f <close> = moco.safe_open("$d/checkpoint_0001.safetensors")
  for _, k in ipairs(f:keys()) do local dt = f:info(k); if dt ~= "F32" then dtypes[k] = dt end end
  moco.save("$tmp/shared.safetensors", tensors, meta, { dtypes = dtypes })
LUA
"$exe" "$tmp/craft.lua" >"$tmp/craft.out" 2>&1 || fail "craft a checkpoint" "$(cat "$tmp/craft.out")"
(cd "$tmp/work" && "$exe" "$tmp/tiny.lua" --resume "$tmp/shared.safetensors" --epochs 5 >"$tmp/e.out" 2>&1); rc=$?
newdir=$(sed -n 's/^run directory: \([^ ]*\) .*/\1/p' "$tmp/e.out")
ok "a shared checkpoint resumes into a new run directory of its own" \
  "$([ $rc -eq 0 ] && [ -n "$newdir" ] && [ "$newdir" != "$tmp/evil" ] && [ -f "$tmp/work/$newdir/checkpoint_0004.safetensors" ]; echo $?)" "rc $rc, dir '$newdir': $(tail -3 "$tmp/e.out")"
ok "its stored out/keep-checkpoints touched nothing elsewhere" "$([ "$(ls "$tmp/evil" | wc -l)" -eq "$before" ]; echo $?)" "$(ls "$tmp/evil")"
ok "its stored keep-checkpoints did not prune (the default 3 stay)" "$([ "$(ls "$tmp/work/$newdir" | grep -c '^checkpoint_')" -eq 3 ]; echo $?)" "$(ls "$tmp/work/$newdir")"
ok "its stored data path was not used" "$(grep -q "resnet20 on fashion-mnist" "$tmp/e.out"; echo $?)" "$(grep 'steps per epoch' "$tmp/e.out")"

# ---- a run directory belongs to one run
sum_before=$(md5sum "$tmp/auto/checkpoint_0001.safetensors")
"$exe" "$tmp/tiny.lua" --out "$tmp/auto" >"$tmp/o.out" 2>&1; rc=$?
ok "a fresh run refuses a directory that holds a run" \
  "$([ $rc -eq 1 ] && grep -q "already holds the run .* continue it with --resume $tmp/auto, or choose another --out" "$tmp/o.out"; echo $?)" "rc $rc: $(cat "$tmp/o.out" | head -3)"
ok "... and leaves its checkpoints as they were" "$([ "$(md5sum "$tmp/auto/checkpoint_0001.safetensors")" = "$sum_before" ]; echo $?)" "changed"
cp -r "$tmp/auto" "$tmp/mixed"
cp "$tmp/c/checkpoint_0001.safetensors" "$tmp/mixed/checkpoint_0005.safetensors"
"$exe" "$tmp/tiny.lua" --resume "$tmp/mixed" --epochs 8 >"$tmp/m.out" 2>&1; rc=$?
ok "--resume DIR refuses a checkpoint of another run" \
  "$([ $rc -eq 1 ] && grep -q "checkpoint_0005.safetensors belongs to the run .*, not to the run " "$tmp/m.out"; echo $?)" "rc $rc: $(head -3 "$tmp/m.out")"

# ---- a corrupt newest checkpoint: the previous one, with a note
cp -r "$tmp/auto" "$tmp/cut"
head -c 5000 "$tmp/auto/checkpoint_0001.safetensors" >"$tmp/cut/checkpoint_0001.safetensors"
"$exe" "$tmp/tiny.lua" --resume "$tmp/cut" >"$tmp/cut.out" 2>&1; rc=$?
ok "a truncated newest checkpoint: --resume DIR falls back to the previous one" \
  "$([ $rc -eq 0 ] && grep -q "note: $tmp/cut/checkpoint_0001.safetensors cannot be resumed (.*); trying the previous checkpoint" "$tmp/cut.out" && grep -q "resumed from $tmp/cut/checkpoint_0000.safetensors" "$tmp/cut.out"; echo $?)" "rc $rc: $(grep -i 'note\|resumed\|moco-lua:' "$tmp/cut.out" | head -4)"

# ---- weights that blew up are never saved (the loss may stay finite: features are normalised)
"$exe" "$tmp/tiny.lua" --lr 1e4 --out "$tmp/blow" >"$tmp/b.out" 2>&1; rc=$?
ok "exploding weights: the run stops, nothing is saved" \
  "$([ $rc -eq 1 ] && grep -q "training diverged" "$tmp/b.out" && [ -z "$(ls "$tmp/blow" | grep checkpoint_)" ]; echo $?)" "rc $rc: $(grep -i diverged "$tmp/b.out"; ls "$tmp/blow")"
"$exe" -e "
  local model = moco.MoCo{arch = 'resnet20', width = 0.25, in_channels = 1, dim = 8, K = 16, bn_splits = 1}
  model.encoder_q.layer1:get(1).conv1.weight:set(1, 1, 1, 1, 3e28)
  local ok, err = pcall(moco.checkpoint.save, '$tmp/bad.safetensors', model, {epoch = 1})
  assert(not ok and err:find('not saved: tensor .module.encoder_q.layer1.0.conv1.weight. holds a value of magnitude 3e%+28'), err)
  assert(io.open('$tmp/bad.safetensors') == nil, 'a file was written')" >"$tmp/w.out" 2>&1
ok "checkpoint.save refuses a weight of 3e28 and writes no file" $? "$(cat "$tmp/w.out")"

# ---- an unwritable --out is found at start, before any data is loaded
"$exe" "$tmp/tiny.lua" --out /proc/moco-lua-cannot-write-here >"$tmp/u.out" 2>&1; rc=$?
ok "an --out that cannot be created fails at start" \
  "$([ $rc -eq 1 ] && grep -q "run directory /proc/moco-lua-cannot-write-here cannot be created" "$tmp/u.out" && ! grep -q "steps per epoch" "$tmp/u.out"; echo $?)" "rc $rc: $(cat "$tmp/u.out" | head -3)"
mkdir -p "$tmp/ro"
if mount -t tmpfs -o size=64k,ro tmpfs "$tmp/ro" 2>/dev/null; then
  mnt="$tmp/ro"
  "$exe" "$tmp/tiny.lua" --out "$tmp/ro" >"$tmp/ro.out" 2>&1; rc=$?
  ok "a read-only --out fails at start, before any data is loaded" \
    "$([ $rc -eq 1 ] && grep -q "run directory $tmp/ro is not writable: .*Read-only file system" "$tmp/ro.out" && ! grep -q "steps per epoch" "$tmp/ro.out"; echo $?)" "rc $rc: $(head -3 "$tmp/ro.out")"
  umount "$tmp/ro" && mnt=""
else
  echo "note: cannot mount a read-only tmpfs here (not root?): only the uncreatable --out is checked"
fi

# ---- options checked before training, with the option's name
check_refused() { # name, pattern, args...
  name=$1 pattern=$2
  shift 2
  "$exe" "$tmp/tiny.lua" --out "$tmp/never" "$@" >"$tmp/v.out" 2>&1
  rc=$?
  ok "$name" "$([ $rc -eq 1 ] && grep -q -- "$pattern" "$tmp/v.out" && ! grep -q "^Epoch" "$tmp/v.out" && [ "$(wc -l <"$tmp/v.out")" -le 2 ]; echo $?)" "rc $rc: $(head -3 "$tmp/v.out")"
}
check_refused "--arch is checked" "option --arch: invalid choice 'resnet51' (choose from .*did you mean resnet50?)" --arch resnet51
check_refused "--epochs >= 1" "--epochs must be at least 1, got 0" --epochs 0
check_refused "K against the keys per step" "--moco-k 100 must be a multiple of the 64 keys enqueued per step" --moco-k 100
check_refused "K against the keys per step (symmetric)" "--moco-k 320 must be a multiple of the 128 keys enqueued per step (--batch-size 64, twice with --symmetric)" --moco-k 320 --symmetric
check_refused "batch against the bn splits" "--batch-size 63 cannot be split into --bn-splits 2" --batch-size 63 --moco-k 63
check_refused "batch against the dataset" "--batch-size 512 is larger than the training set (256 images, --train-subset 256)" --batch-size 512 --moco-k 512
check_refused "k against the kNN bank" "--knn-k 200 is larger than the kNN bank (100 training images, --knn-subset 100)" --knn-every 1 --knn-subset 100
[ ! -e "$tmp/never" ]
ok "a refused run leaves no run directory behind" $? "$(ls -A "$tmp/never" 2>&1)"

# ---- output: --quiet, and the live bar on a terminal
"$exe" "$tmp/tiny.lua" --out "$tmp/q" --epochs 1 --quiet >"$tmp/q.out" 2>&1
ok "--quiet: no periodic lines, the epoch line stays" "$(! grep -q '^Epoch: \[' "$tmp/q.out" && grep -q '^Epoch 0 done' "$tmp/q.out"; echo $?)" "$(grep Epoch "$tmp/q.out" | head -3)"
"$exe" "$tmp/tiny.lua" --out "$tmp/p" --epochs 1 >"$tmp/p.out" 2>&1
ok "not a terminal: plain periodic lines with the run's ETA" "$(grep -q '^Epoch: \[0\]\[2/4\]  loss .* eta .* (run ' "$tmp/p.out"; echo $?)" "$(grep Epoch "$tmp/p.out" | head -2)"
if command -v script >/dev/null 2>&1; then
  script -qec "$exe $tmp/tiny.lua --out $tmp/t --epochs 2" /dev/null >"$tmp/t.out" 2>&1
  ok "a terminal: a live bar with the epoch's and the run's time left, no periodic lines" \
    "$(grep -q "$(printf '\r')ep 0/2 \[" "$tmp/t.out" && grep -q ' run [0-9.]*s' "$tmp/t.out" && ! grep -q 'Epoch: \[' "$tmp/t.out"; echo $?)" "$(tr '\r' '\n' <"$tmp/t.out" | grep -m3 'ep 0')"
else
  fail "a terminal: a live bar" "script(1) (util-linux, Debian's bsdutils) is missing"
fi

finish
