#!/usr/bin/env bash
# Installs NML's dependencies (Debian 12 packages), builds nmlc in build/, and unless --deps-only
# or --build-only is given, trains the default example on Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(build-essential pkg-config meson ninja-build re2c lemon llvm-19-dev libopenblas-dev
	zlib1g-dev libcjson-dev libedit-dev dataset-fashion-mnist python3 python3-numpy python3-torch tmux
	chromium)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	[ -n "${NML_SKIP_APT_UPDATE:-}" ] || $sudo apt-get update
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
[ "${1:-}" = --deps-only ] && exit 0
[ -d build ] || meson setup build
ninja -C build
[ "${1:-}" = --build-only ] && exit 0
./build/compiler/nmlc run examples/fashion_mlp.nml
