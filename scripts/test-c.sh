#!/usr/bin/env bash
# Builds and runs the libsoccr C tests (test/c, AddressSanitizer + UBSan) with cc and make only.
# Every test runs in its own network namespace; named namespaces the suite creates carry the
# prefix below and are deleted on exit, also after a failure or a signal.
# Then, when run without arguments, a bounded libFuzzer smoke over vendor/libsoccr's input checks
# (scripts/fuzz-libsoccr.sh, NODE_CRIU_FUZZ_SECONDS seconds, default 25; 0 turns it off; full-length
# runs stay manual). It prints "fuzz-libsoccr: N executions ..." and fails the run on any finding.
# Prints "c-tests: N passed, N failed". Exit status non-zero on any failure of either.
# NODE_CRIU_LIBSOCCR=<dir> (see vendor/libsoccr/README.md) runs the tests written against CRIU's
# API with CRIU's libsoccr linked instead (test/c/Makefile); the fuzz smoke, which fuzzes
# vendor/libsoccr, is then skipped.
set -uo pipefail
cd "$(dirname "$0")/../test/c"

export NCR_NETNS_PREFIX="ncr-c$$-"
cleanup() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NCR_NETNS_PREFIX}" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
  echo "test-c: the libsoccr tests need root (TCP_REPAIR, network namespaces)" >&2
  echo "c-tests: 0 passed, 1 failed"
  exit 1
fi

if ! make -s -j2 CC="${CC:-cc}" >/tmp/ncr-test-c-build.$$ 2>&1; then
  cat /tmp/ncr-test-c-build.$$ >&2
  rm -f /tmp/ncr-test-c-build.$$
  echo "c-tests: 0 passed, 1 failed"
  exit 1
fi
rm -f /tmp/ncr-test-c-build.$$

# LeakSanitizer reports leaks at exit; abort_on_error makes a sanitizer report fail the test.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
status=0
if [ -n "${NODE_CRIU_LIBSOCCR:-}" ]; then
  echo "test-c: CRIU's libsoccr from NODE_CRIU_LIBSOCCR=$NODE_CRIU_LIBSOCCR (extension tests left out)"
  ./build/upstream/soccr_test "$@" || status=$?
  exit "$status"
fi
./build/soccr_test "$@" || status=$?

fuzz_seconds="${NODE_CRIU_FUZZ_SECONDS:-25}"
if [ "$#" -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then
  # The fuzzer takes its own sanitizer settings (libFuzzer handles crashes and leaks itself).
  env -u ASAN_OPTIONS -u UBSAN_OPTIONS bash ../../scripts/fuzz-libsoccr.sh "$fuzz_seconds" || status=1
fi
exit "$status"
