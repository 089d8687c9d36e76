#!/bin/sh
# tests/sh/test_dist_recipes.sh: the recipes under mpirun (docs/distributed.md), with 2 ranks
# on this machine over TCP (--mca btl tcp,self) and a fixed seed:
#   - quickstart on 2 ranks x 32 images x 2 BN splits against its documented 1-process
#     equivalent (batch 64, 4 BN splits): the same loss trajectory, rank 0 alone printing and
#     writing the run directory;
#   - a 2-rank checkpoint resumed on 1 process keeps the batch-norm groups and continues
#     the 1-process run;
#   - Ctrl-C (SIGTERM to mpirun) mid-epoch stops every rank after the same step, with one
#     checkpoint and the command that resumes;
#   - knn and lincls over ranks give the 1-process numbers;
#   - bad input (a batch the ranks cannot split, --world-size against mpirun, K, a missing
#     host) is one clean line before training, never a hang; a killed rank ends the job.
. "$(dirname "$0")/lib.sh"
need_exe

if ! "$exe" -e 'os.exit(moco._dist.have_mpi() and 0 or 1)'; then
  echo "  (this moco-lua was built without MPI: the two-rank checks need Open MPI, which make deps installs)"
  exit 0
fi
if ! command -v mpirun >/dev/null 2>&1; then
  fail "mpirun" "built with MPI, but mpirun is not on PATH (apt-get install openmpi-bin)"
  finish
fi
# As in test_dist.sh: no leak checks inside Open MPI under AddressSanitizer; root needs
# --allow-run-as-root (CI runs as root).
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export ASAN_OPTIONS
MPIRUN="mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl tcp,self"
cd "$tmp" || exit 1 # default run directories (runs/...) would land here

# The step losses of a run directory's log.jsonl, one per line.
cat > losses.lua <<'EOF'
for line in io.lines(arg[1]) do
  local r = moco.json_decode(line)
  if r.type == "step" then print(string.format("%d %.9g", r.step, r.loss)) end
end
EOF
losses() { "$exe" losses.lua "$1/log.jsonl"; }
# Compares two loss lists: the first $3 steps within 1e-5 relative, the rest within $4.
# Prints the worst relative differences; status 0 when both hold.
cat > compare.lua <<'EOF'
local function read(p)
  local t = {}
  for l in io.lines(p) do t[#t + 1] = tonumber(l:match("%d+ (%S+)")) end
  return t
end
local a, b, early, tol = read(arg[1]), read(arg[2]), tonumber(arg[3]), tonumber(arg[4])
if #a ~= #b or #a < 10 then print("steps: " .. #a .. " against " .. #b) os.exit(1) end
local w1, w2 = 0, 0
for i = 1, #a do
  local d = math.abs(a[i] - b[i]) / math.max(math.abs(b[i]), 1e-3)
  if i <= early then w1 = math.max(w1, d) else w2 = math.max(w2, d) end
end
print(string.format("%d steps: worst relative difference %.1e in the first %d, %.1e after", #a, w1, early, w2))
os.exit(w1 <= 1e-5 and w2 <= tol and 0 or 1)
EOF
compare_losses() { "$exe" compare.lua "$1" "$2" "$3" "$4"; }

# --- (a) the loss trajectory against the documented 1-process run -----------------------
# 11 steps of a global batch of 64 (704 images).  The first steps agree to float rounding
# (measured: equal to 7 digits); after that the two runs drift apart as any two runs that
# round differently do (the ranks sum their gradients in another order): measured 2e-3
# relative by step 11, the same as one process with 1 against 2 threads.  A wrong batch
# split, shard or BN grouping differs by 1e-1 from step 2 on.
Q="quickstart --epochs 1 --train-subset 704 --batch-size 64 --print-freq 1 --knn-subset 704 --lr 0.01 -j 1"
out=$(timeout 300 $MPIRUN "$exe" $Q --bn-splits 2 --out two 2>&1); rc=$?
ok "quickstart on 2 ranks runs to the end" $rc "status $rc: $(echo "$out" | tail -5)"
"$exe" $Q --bn-splits 4 --threads 1 --out one > one.log 2>&1
ok "quickstart on 1 process (batch 64, bn-splits 4) runs to the end" $? "$(tail -5 one.log)"
losses two > two.losses; losses one > one.losses
detail=$(compare_losses two.losses one.losses 3 1e-2)
ok "2 ranks x 32 x 2 BN splits = 1 process x 64 x 4 BN splits ($detail)" $? "$detail"
n=$(echo "$out" | grep -c "^run directory: ")
[ "$n" -eq 1 ] && echo "$out" | grep -q "2 ranks x 32 images"
ok "one 'run directory' line (rank 0 alone prints) and the per-rank batch shown" $? "$n lines: $out"
n=$(echo "$out" | grep -c "^Epoch 0 done")
[ "$n" -eq 1 ] && [ "$(echo "$out" | grep -c "standardised raw pixels")" -eq 1 ]
ok "the epoch line and the results once" $? "$out"
[ -f two/config.json ] && [ -f two/checkpoint_0000.safetensors ] && [ -f two/report.html ] && [ -f two/neighbours.png ] &&
  [ ! -e runs ] && [ "$(ls two | grep -c tmp)" -eq 0 ]
ok "rank 0 wrote the run directory, and nothing else was written" $? "$(ls two runs 2>&1)"
cat > ranks.lua <<'EOF'
local c = moco.checkpoint.load(arg[1])
assert(c.ranks == 2 and c.config["bn-splits"] == 2, "ranks " .. tostring(c.ranks))
EOF
"$exe" ranks.lua two/checkpoint_0000.safetensors
ok "the checkpoint records its 2 ranks and the per-rank BN splits" $?

# --- resume on another number of ranks --------------------------------------------------
# 2 ranks train epoch 0; one process resumes for epoch 1 and must get --bn-splits 4 (the 4
# groups of the 2-rank run); its epoch 1 continues the 1-process run of both epochs.  A
# constant lr (no cosine), so that --epochs 2 on resume changes no learning rate.
R="quickstart --train-subset 320 --batch-size 64 --print-freq 1 --knn-subset 320 --lr 0.01 -j 1 --no-cos --no-cos-per-step"
timeout 300 $MPIRUN "$exe" $R --epochs 1 --bn-splits 2 --out resumed > resume1.log 2>&1
ok "2 ranks: epoch 0" $? "$(tail -3 resume1.log)"
"$exe" $R --epochs 2 --resume resumed --threads 1 > resume2.log 2>&1
ok "resumed on 1 process: epoch 1" $? "$(tail -3 resume2.log)"
grep -q "trained on 2 rank(s) with 4 batch-norm groups in all: on 1 rank(s), --bn-splits 4 per rank keeps them" resume2.log
ok "the resume says it keeps the 4 batch-norm groups" $? "$(grep note resume2.log)"
"$exe" $R --epochs 2 --bn-splits 4 --threads 1 --out straight > straight.log 2>&1
ok "1 process: both epochs" $? "$(tail -3 straight.log)"
losses resumed > resumed.losses; losses straight > straight.losses
detail=$(compare_losses resumed.losses straight.losses 2 1e-2)
ok "2 ranks then 1 process = 1 process throughout ($detail)" $? "$detail"

# --- Ctrl-C: SIGTERM to mpirun, which forwards it to every rank ---------------------------
# The ranks notice the signal after their own steps; they agree after every step, stop
# together, rank 0 saves the step's checkpoint and prints the command that resumes.
L="quickstart --epochs 1 --train-subset 12800 --batch-size 64 --print-freq 1 --lr 0.01 -j 1"
$MPIRUN "$exe" $L --bn-splits 2 --out stopped > stopped.log 2>&1 &
job=$!
i=0
while [ $i -lt 120 ] && ! grep -q '"step":3,' stopped/log.jsonl 2>/dev/null; do sleep 0.5; i=$((i + 1)); done
kill -TERM $job
i=0
while [ $i -lt 60 ] && kill -0 $job 2>/dev/null; do sleep 0.5; i=$((i + 1)); done
if kill -0 $job 2>/dev/null; then kill -KILL $job; fi
wait $job; rc=$?
[ "$rc" -ne 0 ] && [ "$i" -lt 60 ]
ok "SIGTERM ends both ranks within seconds with a non-zero status" $? "status $rc after $i half-seconds: $(tail -5 stopped.log)"
ls stopped/checkpoint_0000_step*.safetensors > /dev/null 2>&1 && grep -q "to resume: .*--resume stopped" stopped.log &&
  [ "$(grep -c "^to resume" stopped.log)" -eq 1 ]
ok "one checkpoint of the stopped step and one resume command" $? "$(ls stopped; tail -5 stopped.log)"

# --- knn and lincls over ranks ------------------------------------------------------------
K="knn --pretrained two/checkpoint_0000.safetensors --bank-subset 1000 --test-subset 300"
a=$(timeout 300 $MPIRUN "$exe" $K 2>&1 | grep "^kNN (k=" | sed 's/  (.*//')
b=$("$exe" $K 2>&1 | grep "^kNN (k=" | sed 's/  (.*//')
[ -n "$a" ] && [ "$a" = "$b" ]
ok "knn on 2 ranks (features on shards, gathered) = 1 process: $b" $? "2 ranks: '$a', 1 process: '$b'"
C="lincls --pretrained two/checkpoint_0000.safetensors --train-subset 512 --test-subset 200 --epochs 2 --lr 3 -b 128"
a=$(timeout 300 $MPIRUN "$exe" $C --no-precomputed --out lin2 2>&1 | grep "^Epoch [01] " | sed 's/ *[0-9.]*s  eta.*//')
b=$("$exe" $C --no-precomputed --out lin1 2>&1 | grep "^Epoch [01] " | sed 's/ *[0-9.]*s  eta.*//')
[ -n "$a" ] && [ "$a" = "$b" ] && [ -f lin2/model_best.safetensors ]
ok "lincls --no-precomputed on 2 ranks (sharded batches, averaged gradients) = 1 process" $? "2 ranks:
$a
1 process:
$b"

# --- bad input: one line, before training, no hang, no MPI_Abort ---------------------------
refuse() { # name, expected text, arguments...
  name=$1 want=$2; shift 2
  start=$(date +%s)
  out=$(timeout 60 $MPIRUN "$exe" quickstart --epochs 1 --train-subset 256 "$@" --out refused 2>&1); rc=$?
  took=$(( $(date +%s) - start ))
  n=$(echo "$out" | grep -c "^moco-lua: ")
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$n" -eq 1 ] && echo "$out" | grep -q "^moco-lua: .*$want" &&
    ! echo "$out" | grep -q "MPI_ABORT\|traceback" && [ ! -e refused ] && [ $took -le 30 ]
  ok "$name: one line, status $rc, ${took}s" $? "status $rc, $n lines: $out"
}
refuse "a batch the ranks cannot split" "does not divide evenly over 2 ranks" --batch-size 63
refuse "fewer images than ranks" "smaller than the 2 ranks" --batch-size 1 --bn-splits 1
refuse "BN splits per rank" "32 images per rank, which cannot be split into --bn-splits 64" --batch-size 64 --bn-splits 64
refuse "K against the global keys per step" "multiple of the 64 keys enqueued per step" --batch-size 64 --moco-k 1000
refuse "--world-size against mpirun" "world-size 3, but mpirun started 2 ranks" --world-size 3
out=$("$exe" quickstart --world-size 2 --out refused 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "^moco-lua: --world-size 2: moco-lua starts its processes with MPI: run it under mpirun" &&
  [ ! -e refused ]
ok "--world-size 2 without mpirun says how to start the ranks" $? "status $rc: $out"

# A failure on one rank only, in agreed set-up (dist.agreed): that rank's message, once.
cat > one_fails.lua <<'EOF'
moco.dist.start({})
moco.dist.agreed(function() if moco.dist.rank() == 1 then error("only rank 1 cannot open its data", 0) end end)
print("passed the agreement")
EOF
out=$(timeout 60 $MPIRUN "$exe" one_fails.lua 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(echo "$out" | grep -c "^moco-lua: rank 1 of 2: only rank 1 cannot open its data$")" -eq 1 ] &&
  ! echo "$out" | grep -q "passed the agreement\|MPI_ABORT"
ok "a set-up failure on one rank: its message once, with its rank, and every rank stops" $? "status $rc: $out"

# An unknown host: mpirun itself refuses before any rank starts.
start=$(date +%s)
out=$(timeout 60 mpirun --allow-run-as-root -np 2 --host nosuchhost.invalid:1,localhost:1 --mca btl tcp,self "$exe" \
      quickstart --epochs 1 --train-subset 256 --out refused 2>&1); rc=$?
took=$(( $(date +%s) - start ))
[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ ! -e refused ] && [ $took -le 30 ]
ok "an unknown host: mpirun refuses within seconds (${took}s, status $rc)" $? "status $rc: $(echo "$out" | head -3)"

# A rank killed during training: mpirun ends the other.
$MPIRUN "$exe" $L --bn-splits 2 --out killed > killed.log 2>&1 &
job=$!
i=0
while [ $i -lt 120 ] && ! grep -q '"step":2,' killed/log.jsonl 2>/dev/null; do sleep 0.5; i=$((i + 1)); done
victim=$(grep -l "OMPI_COMM_WORLD_RANK=1" /proc/[0-9]*/environ 2>/dev/null | head -1 | cut -d/ -f3)
[ -n "$victim" ] && kill -KILL "$victim"
i=0
while [ $i -lt 60 ] && kill -0 $job 2>/dev/null; do sleep 0.5; i=$((i + 1)); done
if kill -0 $job 2>/dev/null; then kill -KILL $job; fi
wait $job; rc=$?
[ -n "$victim" ] && [ "$rc" -ne 0 ] && [ "$i" -lt 60 ]
ok "a killed rank ends the job within seconds (pid ${victim:-none}, status $rc)" $? "$(tail -5 killed.log)"
finish
