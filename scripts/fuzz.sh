#!/usr/bin/env bash
# Fuzzes with libFuzzer for a given time: scripts/fuzz.sh [SECONDS [JOBS]] [-- LIBFUZZER_ARGS].
# FUZZ_TARGET=front (the default) fuzzes the front end, FUZZ_TARGET=data the data readers,
# FUZZ_TARGET=ckpt the checkpoint readers, FUZZ_TARGET=codegen fusion, the JIT and training steps.
# Builds build-fuzz (clang, -Dfuzz=true, ASan and UBSan) once, starts from the committed seeds
# (tests/fuzz/corpus, corpus-data, corpus-ckpt; codegen shares the front end's), keeps what it learns in build-fuzz/corpus-TARGET (not
# committed), and writes crashes, leaks and timeouts to build-fuzz/findings/. Minimize one with
#   build-fuzz/tests/fuzz/fuzz-front -minimize_crash=1 -runs=10000 build-fuzz/findings/crash-...
# and commit it to the seeds once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
jobs=${2:-1}
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
if [ ! -d build-fuzz ]; then
	CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
		-Dbuildtype=debug -Doptimization=1
fi
target=${FUZZ_TARGET:-front}
case $target in
front) seeds=tests/fuzz/corpus; extra=(-dict=tests/fuzz/nml.dict) ;;
data) seeds=tests/fuzz/corpus-data; extra=() ;;
ckpt) seeds=tests/fuzz/corpus-ckpt; extra=(-dict=tests/fuzz/ckpt.dict) ;;
# a JIT compile per input: 0.1 s or more (later flags win over earlier ones)
codegen) seeds="tests/fuzz/corpus-codegen tests/fuzz/corpus"; extra=(-dict=tests/fuzz/nml.dict -timeout=60) ;;
*) echo "FUZZ_TARGET is front, data, ckpt or codegen" >&2; exit 2 ;;
esac
ninja -C build-fuzz tests/fuzz/fuzz-$target
mkdir -p build-fuzz/corpus-$target build-fuzz/findings
# Options already set come last and win: UBSAN_OPTIONS=suppressions=FILE, say, to fuzz past a
# finding reported and not fixed yet.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
# With more than one job libFuzzer runs workers that log to fuzz-N.log in the current directory.
par=()
[ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
# -rss_limit_mb and -malloc_limit_mb: a single input asking for gigabytes is a finding, not a swap storm.
exec build-fuzz/tests/fuzz/fuzz-$target build-fuzz/corpus-$target $seeds \
	-max_len=16384 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
	-max_total_time="$secs" "${par[@]}" -print_final_stats=1 \
	-artifact_prefix=build-fuzz/findings/ "${extra[@]}" "$@"
