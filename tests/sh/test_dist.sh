#!/bin/sh
# tests/sh/test_dist.sh: the communication layer (core/dist.h, moco._dist): the single-process
# backend, and, when this build has MPI (make deps installs Open MPI), two ranks on this
# machine over the TCP transport (--mca btl tcp,self, so the network path is exercised):
# allreduce, allgather and broadcast results on both ranks, and a rank that fails ending the
# whole job within seconds with its message shown.
cd "$(dirname "$0")/../.." || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

check() { # name, condition (a shell command), detail
  if eval "$2"; then echo "PASS $1"; else echo "FAIL $1: $3"; fi
}

out=$(./moco-lua -e '
local r, n = moco._dist.init()
local t = moco.tensor{1, 2, 3}
moco._dist.allreduce_sum_(t)
local g = moco._dist.allgather(moco.tensor{{5, 6}})
moco._dist.bcast_(t, 0)
io.write(string.format("%d %d %s %g %d %g\n", r, n, moco._dist.backend(), t:sum(), g:size(1), g:sum()))' 2>&1)
check "single backend: rank 0 of 1, collectives are the identity" '[ "$out" = "0 1 single 6 1 11" ]' "got: $out"

if ! ./moco-lua -e 'os.exit(moco._dist.have_mpi() and 0 or 1)'; then
  echo "  (this moco-lua was built without MPI: the two-rank checks need Open MPI, which make deps installs)"
  exit 0
fi
if ! command -v mpirun >/dev/null 2>&1; then
  echo "FAIL mpirun: built with MPI, but mpirun is not on PATH (apt-get install openmpi-bin)"
  exit 0
fi
# Open MPI refuses to run as root without this (CI runs as root).
MPIRUN="mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl tcp,self"

cat > "$tmp/coll.lua" <<'EOF'
local r, n = moco._dist.init()
local t = moco.tensor{ r + 1, 10 * (r + 1), 0.5 }
moco._dist.allreduce_sum_(t)
local g = moco._dist.allgather(moco.tensor{ { r, r + 100 } })
local b = moco.tensor{ r == 0 and 42 or -1 }
moco._dist.bcast_(b, 0)
local big = moco.ones{ 1000003 }
moco._dist.allreduce_sum_(big)
io.write(string.format("rank %d of %d: %g %g %g | %g %g %g %g | %g | %g\n", r, n, t:get(1), t:get(2), t:get(3),
         g:get(1, 1), g:get(1, 2), g:get(2, 1), g:get(2, 2), b:get(1), big:sum()))
moco._dist.finalize()
EOF
out=$(timeout 120 $MPIRUN ./moco-lua "$tmp/coll.lua" 2>&1)
check "two ranks: allreduce, allgather (rank by rank), broadcast on rank 0" \
  'echo "$out" | grep -q "^rank 0 of 2: 3 30 1 | 0 100 1 101 | 42 | 2.00001e+06$"' "got: $out"
check "two ranks: the same results on rank 1" \
  'echo "$out" | grep -q "^rank 1 of 2: 3 30 1 | 0 100 1 101 | 42 | 2.00001e+06$"' "got: $out"

cat > "$tmp/fail.lua" <<'EOF'
local r = moco._dist.init()
if r == 1 then error("rank 1 fails on purpose") end
moco._dist.barrier() -- rank 0 waits here for a rank that will never come
print("rank 0 passed the barrier")
EOF
start=$(date +%s)
out=$(timeout 60 $MPIRUN ./moco-lua "$tmp/fail.lua" 2>&1); rc=$?
took=$(( $(date +%s) - start ))
check "a failing rank ends the job with a non-zero status" '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]' "status $rc"
check "a failing rank ends the job within seconds (took ${took}s)" '[ "$took" -le 20 ]' "took ${took}s"
check "a failing rank's message is shown" 'echo "$out" | grep -q "rank 1 fails on purpose"' "output: $out"
check "the waiting rank never passed the barrier" '! echo "$out" | grep -q "passed the barrier"' "output: $out"
