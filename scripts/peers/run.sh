#!/usr/bin/env bash
# run.sh: Gorovod and its peers (OpenMPI, PyTorch's gloo) on this machine, in
# alternating rounds, then the median of each: the tables of
# docs/performance.md, reproducible from a clone.
#
#   scripts/peers/run.sh [-n NP] [-s 4K,64K,1M,16M,64M] [-o OP] [-r ROUNDS] [-t SECONDS]
#                        [-p gorovod,gorovod-api,gorovod-heap,gorovod-api-heap,gorovod-tcp,mpi-shm,mpi-tcp,gloo]
#
# OP: allreduce (default), allgather, broadcast, reducescatter, alltoall (the
# gloo peer does allreduce, allgather and broadcast). float32 sum, in place. Gorovod runs bin/gorovod-bench under
# bin/gorun (make build): gorovod = data plane only (--direct), gorovod-api =
# through negotiation, gorovod-tcp = --direct with --disable-shm. mpi-shm /
# mpi-tcp = OpenMPI with btl vader / tcp (mpi_bench.c); gloo = torch.distributed
# gloo (gloo_bench.py, Debian's python3-torch). Gorovod's buffers come from
# collective.Alloc (shared memory, as MPI_Alloc_mem); gorovod-heap and
# gorovod-api-heap are the same with Go heap buffers (--shared-buffers=false). Every peer prints
#   RESULT label op np bytes iters reps med_us min_us max_us algbw_GBps busbw_GBps wrong
# per size and round; the summary gives, per size and label, the median over
# rounds of busbw (GB/s, nccl-tests convention) and of the time (us).
# Installs openmpi-bin, libopenmpi-dev, python3-torch with apt when missing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
np=2 sizes=4K,64K,1M,16M,64M op=allreduce rounds=3 batch=0.1
peers=gorovod,gorovod-api,mpi-shm,mpi-tcp,gloo
while getopts n:s:o:r:t:p: f; do
  case $f in n) np=$OPTARG;; s) sizes=$OPTARG;; o) op=$OPTARG;; r) rounds=$OPTARG;;
             t) batch=$OPTARG;; p) peers=$OPTARG;; *) sed -n 2,20p "$0"; exit 2;; esac
done
build=${PEERS_BUILD:-${TMPDIR:-/tmp}/gorovod-peers}
mkdir -p "$build"

need=()
case ",$peers," in *,mpi-*)
  echo '#include <mpi.h>' | mpicc -E -x c - >/dev/null 2>&1 || need+=(openmpi-bin libopenmpi-dev build-essential);; esac
case ",$peers," in *,gloo,*) /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null || need+=(python3-torch);; esac
if [ ${#need[@]} -gt 0 ]; then
  echo "# installing ${need[*]}" >&2
  lock=(); command -v flock >/dev/null && lock=(flock /tmp/apt.lock)
  ("${lock[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${lock[@]}" apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 ||
    { echo "run.sh: could not install ${need[*]} (needs root and apt)" >&2; exit 1; }
fi
case ",$peers," in *,mpi-*)
  [ "$build/mpi_bench" -nt "$here/mpi_bench.c" ] || mpicc -O2 -o "$build/mpi_bench" "$here/mpi_bench.c" || exit 1;; esac
case ",$peers," in *,gorovod*) (cd "$root" && make -s build >/dev/null) || exit 1;; esac

mpirun=(mpirun --allow-run-as-root --oversubscribe --mca pml ob1 --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo)
bytes() { awk -v s="$1" 'BEGIN { m = 1; u = toupper(substr(s, length(s)));
  if (u == "K") m = 1024; else if (u == "M") m = 1048576; else if (u == "G") m = 1073741824;
  if (m > 1) s = substr(s, 1, length(s) - 1); printf "%d", s * m }'; }

# gorovod LABEL [gorun flags] -- [bench flags]: one RESULT line per size.
gorovod() {
  local label=$1; shift
  local gflags=() bflags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do gflags+=("$1"); shift; done; shift
  bflags=("$@")
  for s in ${sizes//,/ }; do
    b=$(bytes "$s")
    timeout 300 "$root/bin/gorun" -np "$np" "${gflags[@]}" "$root/bin/gorovod-bench" "$op" -b "$b" -e "$b" \
      -d float32 -o sum -I -c 1 --reps 5 --target-time "${batch}s" "${bflags[@]}" 2>/dev/null |
      sed -n 's/^\[0\]<stdout>://p' | grep -v '^#' |
      awk -v l="$label" -v op="$op" -v np="$np" '{ print "RESULT", l, op, np, $1, "-", 5, $10, "-", "-", $11, $12, $13 }'
  done
}

run_peer() {
  case $1 in
    gorovod)     gorovod gorovod -- --direct ;;
    gorovod-api) gorovod gorovod-api -- ;;
    gorovod-tcp) gorovod gorovod-tcp --disable-shm -- --direct ;;
    gorovod-heap) gorovod gorovod-heap -- --direct --shared-buffers=false ;;
    gorovod-api-heap) gorovod gorovod-api-heap -- --shared-buffers=false ;;
    mpi-shm) timeout 300 "${mpirun[@]}" --mca btl self,vader -np "$np" "$build/mpi_bench" -o "$op" -s "$sizes" -r 5 -t "$batch" -l mpi-shm 2>/dev/null | grep '^RESULT' ;;
    mpi-tcp) timeout 300 "${mpirun[@]}" --mca btl self,tcp -np "$np" "$build/mpi_bench" -o "$op" -s "$sizes" -r 5 -t "$batch" -l mpi-tcp 2>/dev/null | grep '^RESULT' ;;
    gloo) case $op in allreduce|allgather|broadcast) ;; *) return ;; esac; timeout 300 /usr/bin/python3 "$here/gloo_bench.py" -n "$np" -o "$op" -s "$sizes" -r 5 -t "$batch" -l gloo 2>/dev/null | grep '^RESULT' ;;
    *) echo "run.sh: unknown peer $1" >&2; exit 2 ;;
  esac
}

echo "# $(date -u +%FT%TZ) $(uname -n): $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown); $0 -n $np -s $sizes -o $op -r $rounds -t $batch -p $peers"
for i in $(seq "$rounds"); do
  for p in ${peers//,/ }; do run_peer "$p"; done
done | tee /dev/stderr | awk '
  /^RESULT/ { k = $5 SUBSEP $2; bw[k] = bw[k] " " $12; us[k] = us[k] " " $8
              if (!($5 in seen)) { seen[$5] = 1; sizes[++ns] = $5 }
              if (!($2 in lseen)) { lseen[$2] = 1; labels[++nl] = $2 } }
  function med(s,   x, c, a, b, t) { c = split(s, x, " "); if (c == 0) return "-"
    for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (x[b] + 0 < x[a] + 0) { t = x[a]; x[a] = x[b]; x[b] = t }
    return (c % 2) ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2 }
  END {
    printf "# medians over rounds: busbw GB/s (time us)\n# %12s", "bytes"
    for (j = 1; j <= nl; j++) printf " %22s", labels[j]; printf "\n"
    for (i = 1; i <= ns; i++) { printf "  %12s", sizes[i]
      for (j = 1; j <= nl; j++) { k = sizes[i] SUBSEP labels[j]
        printf " %22s", (k in bw) ? sprintf("%.3f (%.1f)", med(bw[k]), med(us[k])) : "-" }
      printf "\n" } }'
