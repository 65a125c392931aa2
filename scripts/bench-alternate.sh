#!/usr/bin/env bash
# bench-alternate.sh: Gorovod's allreduce and one OpenMPI peer, alternated
# round after round at one size, then the median busbw of each. On a shared
# VM whose speed drifts 2x within minutes, only alternation gives ratios that
# mean something.
#
#   scripts/bench-alternate.sh [-n NP] [-s 16M] [-r ROUNDS] [-t tcp|shm]
#
# -t tcp: gorun --disable-shm against peers.sh mpi-tcp (btl self,tcp);
# -t shm: Gorovod's shared memory against mpi-shm (vader).
set -u
cd "$(dirname "$0")/.."
np=2 size=16M rounds=6 transport=tcp peers=${PEERS_SH:-../shared/bench/peers.sh}
while getopts n:s:r:t: f; do
  case $f in n) np=$OPTARG;; s) size=$OPTARG;; r) rounds=$OPTARG;; t) transport=$OPTARG;;
             *) sed -n 2,11p "$0"; exit 2;; esac
done
case $transport in
  tcp) gflags=(--disable-shm) peer=mpi-tcp ;;
  shm) gflags=() peer=mpi-shm ;;
  *) echo "bench-alternate.sh: -t tcp or shm, not $transport" >&2; exit 2 ;;
esac
[ -x "$peers" ] || { echo "bench-alternate.sh: $peers not found" >&2; exit 1; }
make -s build >/dev/null || exit 1
echo "# $(date -u +%FT%TZ) $(uname -n) $(nproc) cores, np=$np, $size, $transport, $rounds rounds, commit $(git rev-parse --short HEAD)"
for i in $(seq "$rounds"); do
  for mode in -direct -api; do
    m=(); [ "$mode" = -direct ] && m=(--direct)
    v=$(bin/gorun -np "$np" "${gflags[@]}" bin/gorovod-bench allreduce -b "$size" -e "$size" -d float32 -o sum -c 1 -I --reps 5 --target-time 100ms "${m[@]}" 2>/dev/null |
        sed -n 's/^\[0\]<stdout>://p' | grep -v '^#' | awk '{print $11}')
    echo "gorovod-$transport$mode ${v:-nan}"
  done
  "$peers" -n "$np" -s "$size" -p "$peer" | awk '{print $2, $12}'
done | awk '
  { v[$1] = v[$1] " " $2; order[$1] = order[$1] ? order[$1] : ++n; names[n] = $1; print "# round", $1, $2 }
  END {
    for (i = 1; i <= n; i++) {
      k = names[i]; c = split(v[k], x, " ")
      for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (x[b] < x[a]) { t = x[a]; x[a] = x[b]; x[b] = t }
      med = (c % 2) ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2
      printf "%-20s median busbw %.3f GB/s (min %.3f, max %.3f, %d rounds)\n", k, med, x[1], x[c], c
    }
  }'
