#!/usr/bin/env bash
# bench-compare.sh: Gorovod's allreduce beside OpenMPI's and Gloo's, in one run
# on this machine, with the same sizes (figures here drift 2x between runs, so
# only ratios from one run mean anything).
#
#   scripts/bench-compare.sh [-n NP] [-s 4K,1M,16M,64M] [-p PEERS_SH]
#
# Rows: gorovod-bench (nccl-tests layout, in-place columns) over shared memory
# and over TCP only, direct (data plane alone) and through the public API,
# then ../shared/bench/peers.sh RESULT lines (mpi-shm, mpi-tcp, gloo-ring).
set -u
cd "$(dirname "$0")/.."
np=2 sizes=4K,1M,16M,64M peers=${PEERS_SH:-../shared/bench/peers.sh}
while getopts n:s:p: f; do
  case $f in n) np=$OPTARG;; s) sizes=$OPTARG;; p) peers=$OPTARG;; *) sed -n 2,10p "$0"; exit 2;; esac
done
make -s build >/dev/null || exit 1
echo "# $(date -u +%FT%TZ) $(uname -n) $(nproc) cores, np=$np, sizes $sizes, commit $(git rev-parse --short HEAD)"
run() { # label, gorun flags..., -- bench flags...
  local label=$1; shift
  local g=() b=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do g+=("$1"); shift; done; shift
  for s in ${sizes//,/ }; do
    bin/gorun -np "$np" "${g[@]}" bin/gorovod-bench allreduce -b "$s" -e "$s" -d float32 -o sum -c 1 -I --reps 5 --target-time 100ms "$@" 2>/dev/null |
      sed -n 's/^\[0\]<stdout>://p' | grep -v '^#' | sed "s/^/$label /"
  done
}
echo "# label size count type redop root - - - - time_us algbw busbw #wrong (in place)"
run gorovod-shm-direct -- --direct
run gorovod-shm-api --
run gorovod-tcp-direct --disable-shm -- --direct
run gorovod-tcp-api --disable-shm --
echo "# peers: RESULT label op np bytes iters reps med_us min_us max_us algbw busbw check"
if [ -x "$peers" ]; then
  "$peers" -n "$np" -s "$sizes"
else
  echo "# $peers not found: peers not run"
fi
