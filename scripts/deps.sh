#!/usr/bin/env bash
# deps.sh: install the Debian packages a target needs, only those missing.
#   scripts/deps.sh run    # the data set for make run
#   scripts/deps.sh test   # what the tests need (sshd, iproute2, OpenMPI, protoc-free)
set -u
want=()
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || want+=("$1"); }
case "${1:-test}" in
  run)  need dataset-fashion-mnist ;;
  test) need dataset-fashion-mnist; need openssh-server; need openssh-client; need iproute2
        need openmpi-bin; need procps; need gcc ;;
  *) echo "deps.sh: unknown target $1" >&2; exit 2 ;;
esac
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "deps.sh: missing packages ${want[*]} and cannot install them (need root and apt-get); continuing" >&2
  exit 0
fi
echo "deps.sh: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}"; } >/tmp/gorovod-deps.log 2>&1 \
  || { echo "deps.sh: apt-get failed (see /tmp/gorovod-deps.log); continuing without ${want[*]}" >&2; exit 0; }
