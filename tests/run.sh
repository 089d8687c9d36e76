#!/bin/sh
# tests/run.sh: runs every C test program and every Lua test, counts PASS/FAIL lines,
# and prints one final "N passed, N failed" line.  A program that exits non-zero without
# printing a FAIL line (a crash, an uncaught error) counts as one failure.  Each test's
# line says how long it took; MOCO_TEST_SKIP="name ..." leaves tests out and
# MOCO_TEST_ONLY="name ..." runs only those (the sanitizer run uses both, see the Makefile).
cd "$(dirname "$0")/.." || exit 1
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
passed=0; failed=0

run_one() {  # name, command...
  name=$1; shift
  case " ${MOCO_TEST_SKIP:-} " in *" $name "*) echo "$name: skipped (MOCO_TEST_SKIP)"; return;; esac
  if [ -n "${MOCO_TEST_ONLY:-}" ]; then case " $MOCO_TEST_ONLY " in *" $name "*) ;; *) return;; esac; fi
  start=$(date +%s)
  "$@" >"$log/out" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  p=$(grep -c '^PASS ' "$log/out"); f=$(grep -c '^FAIL ' "$log/out")
  grep '^FAIL ' "$log/out" | sed "s|^|  [$name] |"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "  [$name] FAIL: exited with status $rc; last output:"; tail -n 15 "$log/out" | sed 's/^/    /'
    f=1
  fi
  echo "$name: $p passed, $f failed (${took} s)"
  passed=$((passed + p)); failed=$((failed + f))
}

for t in build/tests/test_*; do
  [ -x "$t" ] || continue
  run_one "$(basename "$t")" "$t"
done
for t in tests/lua/test_*.lua; do
  [ -f "$t" ] || continue
  run_one "$(basename "$t" .lua)" ./moco-lua "$t"
done
for t in tests/sh/test_*.sh; do
  [ -f "$t" ] || continue
  run_one "$(basename "$t" .sh)" sh "$t"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
