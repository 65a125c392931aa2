#!/usr/bin/env bash
# bench-compare.sh: Gorovod's allreduce beside OpenMPI's and Gloo's, in one run
# on this machine, with the same sizes (figures here drift 2x between runs, so
# only ratios from one run mean anything).
#
#   scripts/bench-compare.sh [-n NP] [-s 4K,1M,16M,64M] [-p PEERS_SH] [-o DIR]
#
# Rows: gorovod-bench (nccl-tests layout, in-place columns) over shared memory
# and over TCP only, direct (data plane alone) and through the public API,
# then ../shared/bench/peers.sh RESULT lines (mpi-shm, mpi-tcp, gloo-ring).
# -o DIR also writes DIR/gorovod.csv, DIR/peers.csv and DIR/busbw.svg (busbw
# against size, every series of the run; gorovod-bench plot draws it).
set -u
cd "$(dirname "$0")/.."
np=2 sizes=4K,1M,16M,64M peers=${PEERS_SH:-../shared/bench/peers.sh} out=
while getopts n:s:p:o: f; do
  case $f in n) np=$OPTARG;; s) sizes=$OPTARG;; p) peers=$OPTARG;; o) out=$OPTARG;; *) sed -n 2,12p "$0"; exit 2;; esac
done
[ -z "$out" ] || mkdir -p "$out" || exit 1
make -s build >/dev/null || exit 1
echo "# $(date -u +%FT%TZ) $(uname -n) $(nproc) cores, np=$np, sizes $sizes, commit $(git rev-parse --short HEAD)"
run() { # label, gorun flags..., -- bench flags...
  local label=$1; shift
  local g=() csv=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do g+=("$1"); shift; done; shift
  for s in ${sizes//,/ }; do
    [ -z "$out" ] || csv=(--csv "$out/.part.csv" --label "${label%-*}") # the mode column tells direct from api
    bin/gorun -np "$np" "${g[@]}" bin/gorovod-bench allreduce -b "$s" -e "$s" -d float32 -o sum -c 1 -I --reps 5 --target-time 100ms "${csv[@]}" "$@" 2>/dev/null |
      sed -n 's/^\[0\]<stdout>://p' | grep -v '^#' | sed "s/^/$label /"
    if [ -n "$out" ] && [ -f "$out/.part.csv" ]; then
      [ -f "$out/gorovod.csv" ] || head -1 "$out/.part.csv" >"$out/gorovod.csv"
      tail -n +2 "$out/.part.csv" >>"$out/gorovod.csv"; rm -f "$out/.part.csv"
    fi
  done
}
[ -z "$out" ] || rm -f "$out/gorovod.csv" "$out/peers.csv"
echo "# label size count type redop root - - - - time_us algbw busbw #wrong (in place)"
run gorovod-shm-direct -- --direct
run gorovod-shm-api --
run gorovod-tcp-direct --disable-shm -- --direct
run gorovod-tcp-api --disable-shm --
echo "# peers: RESULT label op np bytes iters reps med_us min_us max_us algbw busbw check"
if [ -x "$peers" ]; then
  if [ -z "$out" ]; then
    "$peers" -n "$np" -s "$sizes"
  else # RESULT label op np bytes iters reps med_us min_us max_us algbw busbw check, also as CSV
    "$peers" -n "$np" -s "$sizes" | tee "$out/peers.txt"
    { echo "label,collective,np,size_bytes,time_us,algbw_GBps,busbw_GBps"
      awk '$1 == "RESULT" { print $2 "," $3 "," $4 "," $5 "," $8 "," $11 "," $12 }' "$out/peers.txt"; } >"$out/peers.csv"
  fi
else
  echo "# $peers not found: peers not run"
fi
if [ -n "$out" ]; then
  files=("$out/gorovod.csv"); [ -s "$out/peers.csv" ] && files+=("$out/peers.csv")
  bin/gorovod-bench plot "${files[@]}" -o "$out/busbw.svg" --title "allreduce float32 sum in place, np $np" &&
    echo "# wrote ${files[*]} and $out/busbw.svg"
fi
