#!/bin/sh
# tests/bench/run.sh: `make bench`.  Runs the moco-lua benchmarks and, when Debian's
# python3-torch is installed, the same workloads in PyTorch in the same run, then prints
# the ratio (moco-lua / PyTorch images/s; above 1 means moco-lua is faster).
# Both sides use the same thread count: --threads N if given, else the cores this process
# may use (nproc).  Extra arguments (--quick, --only NAME) go to both scripts.
cd "$(dirname "$0")/../.." || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
threads=$(nproc)
prev=""
for a in "$@"; do
  [ "$prev" = "--threads" ] && threads=$a
  prev=$a
done
echo "== moco-lua ($(nproc) cores, $threads threads; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; load: $(cut -d' ' -f1-3 /proc/loadavg))"
./moco-lua tests/bench/bench_resnet.lua --threads "$threads" --json "$tmp/moco.json" "$@" || exit 1
PY=/usr/bin/python3
if [ -x "$PY" ] && "$PY" -c 'import torch, torchvision' 2>/dev/null; then
  echo "== PyTorch $("$PY" -c 'import torch; print(torch.__version__)') ($threads threads; load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$PY" tests/bench/bench_resnet.py --threads "$threads" --json "$tmp/torch.json" "$@" || exit 1
  echo "== ratio (moco-lua / PyTorch, $threads threads)"
  "$PY" - "$tmp/moco.json" "$tmp/torch.json" <<'PYEOF'
import json, sys
m, t = (json.load(open(p)) for p in sys.argv[1:3])
for k in m:
    if k in t:
        print(f"{k:<24} {m[k] / t[k]:6.2f}x  ({m[k]:.1f} vs {t[k]:.1f} images/s)")
PYEOF
else
  echo "== PyTorch not installed (apt-get install python3-torch python3-torchvision): no ratio"
fi

echo "== data pipeline (augmentation throughput)"
./moco-lua tests/bench/bench_augment.lua "$@" || exit 1
