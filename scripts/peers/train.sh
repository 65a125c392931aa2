#!/usr/bin/env bash
# train.sh: the training-step benchmark, Gorovod (gorovod-bench train) against
# PyTorch DDP with gloo (ddp_step.py), np 1, 2 and 4 in alternating rounds; the
# summary gives per label and np the median step time, the communication not
# hidden by compute, and the scaling efficiency (np 1 step time / step time).
#
#   scripts/peers/train.sh [-m resnet50|transformer] [-c 150ms] [-r ROUNDS] [-n "1 2 4"] [-s]
#
# -c: backward compute per step (a Go duration); -s: compute by spinning a core
# instead of sleeping. Installs python3-torch with apt when missing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
model=resnet50 compute=150ms rounds=3 nps="1 2 4" spin=
while getopts m:c:r:n:s f; do
  case $f in m) model=$OPTARG;; c) compute=$OPTARG;; r) rounds=$OPTARG;; n) nps=$OPTARG;; s) spin=1;;
             *) sed -n 2,11p "$0"; exit 2;; esac
done
if ! /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null; then
  lock=(); command -v flock >/dev/null && lock=(flock /tmp/apt.lock)
  ("${lock[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${lock[@]}" apt-get install -y -qq python3-torch) >/dev/null 2>&1 ||
    { echo "train.sh: could not install python3-torch (needs root and apt)" >&2; exit 1; }
fi
(cd "$root" && make -s build >/dev/null) || exit 1
secs=$(awk -v d="$compute" 'BEGIN { if (d ~ /ms$/) print substr(d, 1, length(d) - 2) / 1000; else if (d ~ /s$/) print substr(d, 1, length(d) - 1); else print d }')
gspin=(); pspin=(); [ -n "$spin" ] && gspin=(-spin) && pspin=(-spin)
echo "# $(date -u +%FT%TZ) $(uname -n): $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null)"
echo "# $0 -m $model -c $compute -r $rounds -n \"$nps\" ${spin:+-s}"
for i in $(seq "$rounds"); do
  for np in $nps; do
    timeout 600 "$root/bin/gorun" -np "$np" "$root/bin/gorovod-bench" train -model "$model" -compute "$compute" "${gspin[@]}" 2>/dev/null |
      sed -n 's/^\[0\]<stdout>://p' | grep '^TRAIN'
    timeout 600 /usr/bin/python3 "$here/ddp_step.py" -n "$np" -model "$model" -compute "$secs" "${pspin[@]}" 2>/dev/null | grep '^TRAIN'
  done
done | tee /dev/stderr | awk '
  { k = $2 SUBSEP $4; st[k] = st[k] " " $5; ex[k] = ex[k] " " $7
    if (!($2 in ls)) { ls[$2] = 1; labels[++nl] = $2 } if (!($4 in ns)) { ns[$4] = 1; nps[++nn] = $4 } }
  function med(s,   x, c, a, b, t) { c = split(s, x, " ")
    for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (x[b] + 0 < x[a] + 0) { t = x[a]; x[a] = x[b]; x[b] = t }
    return (c % 2) ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2 }
  END {
    printf "# medians over rounds\n# %-10s %4s %10s %12s %10s\n", "label", "np", "step_ms", "exposed_ms", "efficiency"
    for (i = 1; i <= nl; i++) for (j = 1; j <= nn; j++) { k = labels[i] SUBSEP nps[j]; if (!(k in st)) continue
      b = labels[i] SUBSEP 1; e = (b in st) ? sprintf("%.3f", med(st[b]) / med(st[k])) : "-"
      printf "  %-10s %4s %10.2f %12.2f %10s\n", labels[i], nps[j], med(st[k]), med(ex[k]), e } }'
