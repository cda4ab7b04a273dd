#!/usr/bin/env bash
# Builds and runs the whole test suite: once normally, once under AddressSanitizer and UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d build ] || meson setup build
ninja -C build
meson test -C build --print-errorlogs
[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false \
	-Dbuildtype=debug -Doptimization=1
ninja -C build-asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --no-suite slow
