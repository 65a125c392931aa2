#!/usr/bin/env bash
# Fetches CUDA's cuda.h and the libcuda.so link stub once, from Debian's
# non-free nvidia-cuda-dev package, and caches them for `make cuadapter`
# (gorgonia.org/cu needs both at build time; no GPU or driver is needed).
#
# Usage: scripts/cuda-stub.sh DIR   -> DIR/include/cuda.h, DIR/lib/libcuda.so
# Exit status 0 with the files in place; 3 when Debian's non-free archive
# cannot be reached (the caller skips, saying so); 1 on any other failure.
# It uses a private apt configuration under DIR/apt: the machine's apt
# sources are left as they are.
set -euo pipefail
dir=${1:?usage: $0 DIR}
if [[ -f $dir/include/cuda.h && -f $dir/lib/libcuda.so ]]; then
	exit 0
fi
apt=$dir/apt
mkdir -p "$apt/src" "$apt/lists/partial" "$apt/cache/archives/partial" "$dir/include" "$dir/lib"
cat >"$apt/src/non-free.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/src"
	-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
	-o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root")
if ! apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 ||
	! apt-cache "${opts[@]}" show nvidia-cuda-dev >/dev/null 2>&1; then
	echo "cuda-stub: Debian non-free (nvidia-cuda-dev) is not reachable; see $apt/update.log" >&2
	exit 3
fi
(cd "$apt" && apt-get "${opts[@]}" download nvidia-cuda-dev >"$apt/download.log" 2>&1) || {
	echo "cuda-stub: downloading nvidia-cuda-dev failed; see $apt/download.log" >&2
	exit 3
}
deb=$(ls "$apt"/nvidia-cuda-dev_*.deb | head -n1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/include/cuda.h ./usr/lib/x86_64-linux-gnu/stubs/libcuda.so
cp "$tmp/usr/include/cuda.h" "$dir/include/cuda.h"
cp "$tmp/usr/lib/x86_64-linux-gnu/stubs/libcuda.so" "$dir/lib/libcuda.so"
rm -f "$deb" # 774 MB; only the two files are kept
echo "cuda-stub: cuda.h and libcuda.so stub cached in $dir (from $(basename "$deb"))"
