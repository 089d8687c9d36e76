#!/bin/sh
# tests/bench/run.sh: `make bench`.  Training compute of moco-lua against PyTorch at its
# best on the same machine, in the same run, then the data pipeline.
#
#   make bench [BENCH_ARGS="--rounds N --threads N --only NAME --quick --no-augment --no-loop"]
#
# Each configuration (see bench_moco.lua / bench_moco.py) runs in its own process, once per
# round, alternating moco-lua, PyTorch with tcmalloc preloaded (its best: glibc's malloc
# makes it page-fault on fresh buffers every step) and PyTorch with glibc's malloc
# (reported, labelled, for reference); the summary gives the range over the rounds (the
# machine is noisy: default 2 rounds), the ratio range, the ratio of each round (moco-lua
# against the PyTorch run right after it), both peak RSS and the GFLOP/s
# moco-lua reaches against the FMA peak measured here (tests/bench/peak.c).  Both sides
# use the same thread count: --threads N, else the cores this process may use.
cd "$(dirname "$0")/../.." || exit 1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
threads=$(nproc); rounds=2; only=""; iters=""; augment=1; loop=1; loop_args=""
while [ $# -gt 0 ]; do
  case $1 in
    --threads) threads=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --only) only=$2; shift ;;
    --quick) rounds=1; iters="--iters 2"; loop_args="--rounds 2" ;;
    --no-augment) augment=0 ;;
    --no-loop) loop=0 ;;
    *) echo "bench: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
configs="moco-r18-cifar-b64 moco-r18-cifar-b256 moco-r20-28-b256 r50-224-b32"
[ -n "$only" ] && configs=$(for c in $configs; do case $c in *"$only"*) echo "$c" ;; esac; done)

cc -O2 -pthread tests/bench/peak.c -o "$tmp/peak" || exit 1
"$tmp/peak" "$threads" > "$tmp/peak.json"
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; FMA peak at $threads threads: $(cat "$tmp/peak.json")"
echo "== moco-lua: $(./moco-lua -e 'io.write(moco._nn.gemm_backend(), "; Winograd: ", select(2, moco._nn.winograd_status()))')"

PY=/usr/bin/python3
TCMALLOC=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal.so.4 /{print $NF; exit}')
torch=0
if [ -x "$PY" ] && "$PY" -c 'import torch, torchvision' 2>/dev/null; then
  torch=1
  echo "== PyTorch $("$PY" -c 'import torch; print(torch.__version__)'), oneDNN $("$PY" -c 'import torch; print(torch.backends.mkldnn.is_available())'); tcmalloc: ${TCMALLOC:-not installed (apt-get install libtcmalloc-minimal4)}"
else
  echo "== PyTorch not installed (apt-get install python3-torch python3-torchvision): moco-lua only"
fi

for r in $(seq "$rounds"); do
  for c in $configs; do
    echo "-- round $r: $c (load $(cut -d' ' -f1 /proc/loadavg))"
    # the per-phase breakdown in the first round only (later rounds: the headline)
    ./moco-lua tests/bench/bench_moco.lua "$c" --threads "$threads" $iters --json "$tmp/moco.$c.$r.json" \
      > "$tmp/out" || { cat "$tmp/out"; exit 1; }
    if [ "$r" = 1 ]; then cat "$tmp/out"; else head -n 1 "$tmp/out"; fi
    if [ "$torch" = 1 ]; then
      if [ -n "$TCMALLOC" ]; then
        LD_PRELOAD=$TCMALLOC "$PY" tests/bench/bench_moco.py "$c" --threads "$threads" $iters \
          --json "$tmp/tcmalloc.$c.$r.json" | sed 's/^/   PyTorch+tcmalloc /' || exit 1
      fi
      "$PY" tests/bench/bench_moco.py "$c" --threads "$threads" $iters --json "$tmp/glibc.$c.$r.json" \
        | sed 's/^/   PyTorch+glibc    /' || exit 1
    fi
  done
done

echo "== summary ($rounds rounds; ranges are min-max over the rounds; ratio = moco-lua / PyTorch+tcmalloc images/s, the range pairing the rounds' extremes, per round each round's own pair)"
./moco-lua tests/bench/summary.lua "$tmp" "$rounds" $configs || exit 1

if [ "$loop" = 1 ]; then
  echo "== the training loop against the compute-only step (tests/bench/bench_loop.lua)"
  for recipe in quickstart cifar10; do
    ./moco-lua tests/bench/bench_loop.lua "$recipe" $loop_args || exit 1
  done
fi

if [ "$augment" = 1 ]; then
  echo "== data pipeline (augmentation throughput)"
  ./moco-lua tests/bench/bench_augment.lua || exit 1
fi
