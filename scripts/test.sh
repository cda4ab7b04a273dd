#!/usr/bin/env bash
# Builds and runs the whole test suite: once normally, once under AddressSanitizer and UBSan (the
# slow suite, a full training run, only in the first). Ends with one line: "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
[ -d build ] || meson setup build || exit 1
ninja -C build || exit 1
meson test -C build --print-errorlogs || status=1
[ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false \
	-Dbuildtype=debug -Doptimization=1 || exit 1
ninja -C build-asan || exit 1
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --no-suite slow || status=1
/usr/bin/python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
