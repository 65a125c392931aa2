#!/usr/bin/env bash
# deps.sh: install the Debian packages a target needs, only those missing.
#   scripts/deps.sh run    # the data set for make run
#   scripts/deps.sh test   # what the tests need (sshd, iproute2, OpenMPI, Slurm and munge)
#   scripts/deps.sh slurm  # Slurm and munge alone (test/slurm runs it when they are missing)
set -u
want=()
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || want+=("$1"); }
case "${1:-test}" in
  run)  need dataset-fashion-mnist ;;
  test) need dataset-fashion-mnist; need openssh-server; need openssh-client; need iproute2
        need openmpi-bin; need procps; need gcc
        need slurmctld; need slurmd; need slurm-client; need munge ;;
  slurm) need slurmctld; need slurmd; need slurm-client; need munge ;;
  *) echo "deps.sh: unknown target $1" >&2; exit 2 ;;
esac
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "deps.sh: missing packages ${want[*]} and cannot install them (need root and apt-get); continuing" >&2
  exit 0
fi
echo "deps.sh: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Several checkouts may install at once on one machine: one apt at a time.
lock=(); command -v flock >/dev/null && lock=(flock /tmp/apt.lock)
{ "${lock[@]}" apt-get update -qq && "${lock[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}"; } >/tmp/gorovod-deps.log 2>&1 \
  || { echo "deps.sh: apt-get failed (see /tmp/gorovod-deps.log); continuing without ${want[*]}" >&2; exit 0; }
