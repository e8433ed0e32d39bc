#!/usr/bin/env bash
# npm run test:asan: the addon and vendor/libsoccr built with gcc's AddressSanitizer + UBSan in a
# separate copy of the package (.tmp/asan, incremental; the shared build/ is never touched), then
# jest on that copy with libasan preloaded into node.
#
# Usage: scripts/test-asan.sh [jest args...]   (default: the subset below)
# Default subset: test/soccr (every libsoccr path through the addon), test/criu/transport and
# test/criu/codec (the SEQPACKET transport and the wire codec, no CRIU process), test/fuzz (random
# arguments into every native entry point). The CRIU end-to-end tests are left out: they spend their
# time in CRIU, which is not instrumented.
#
# Choices: detect_leaks=0, because node itself (not instrumented) leaves allocations at exit that
# LeakSanitizer would report; leaks in our code are covered by scripts/valgrind-soccr.sh and the
# leak loops in test/leak. Every ASan/UBSan report (also from child processes, which inherit
# LD_PRELOAD) is written to a log file; the run fails if any exists, whatever jest said. CRIU runs
# through a wrapper without LD_PRELOAD (it is another program, with its own libc).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
copy="$root/.tmp/asan"
reports="$copy/reports"

if [ "$(id -u)" != 0 ]; then
  echo "test-asan: the suite needs root" >&2
  exit 1
fi
libasan="$(gcc -print-file-name=libasan.so)"
if [ ! -e "$libasan" ]; then
  echo "test-asan: gcc's libasan.so not found (apt-get install libasan8)" >&2
  exit 1
fi
node_gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"

# 1. The copy: sources only (no build/, dist/, node_modules/); node_modules is a symlink.
mkdir -p "$copy"
(cd "$root" && tar -cf - --exclude=./build --exclude=./dist --exclude=./node_modules --exclude=./.tmp \
  --exclude=./.git --exclude='./test/c/build' --exclude='./test/c/fuzz/build' --exclude='./bench/c/build' .) |
  (cd "$copy" && tar -xf -)
ln -sfn "$root/node_modules" "$copy/node_modules"

# 2. Addon + libsoccr with ASan/UBSan (node-gyp adds CFLAGS/CXXFLAGS/LDFLAGS to every target).
san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
echo "test-asan: building the addon with ASan+UBSan in $copy/build"
if ! (cd "$copy" && CFLAGS="$san" CXXFLAGS="$san" LDFLAGS="-fsanitize=address,undefined" \
  npm_config_nodedir="${npm_config_nodedir:-/usr}" node "$node_gyp" configure build -j 2 >"$copy/build.log" 2>&1); then
  tail -40 "$copy/build.log" >&2
  echo "test-asan: build failed"
  exit 1
fi
if [ "$(nm -D "$copy/build/Release/node_criu.node" | grep -c __asan_report_)" = 0 ]; then
  echo "test-asan: the addon is not instrumented" >&2
  exit 1
fi
# dist/ for the fixtures that child processes run (they require the package's dist/).
(cd "$copy" && node "$root/node_modules/typescript/bin/tsc" -p tsconfig.build.json >"$copy/tsc.log" 2>&1) || true
if [ ! -f "$copy/dist/index.js" ]; then
  cat "$copy/tsc.log" >&2
  echo "test-asan: dist/ was not built"
  exit 1
fi

# 3. CRIU without the preload.
mkdir -p "$copy/bin"
real_criu="${CRIU_PATH:-/var/cache/node-criu/bin/criu}"
printf '#!/bin/sh\nunset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS\nexec %q "$@"\n' "$real_criu" >"$copy/bin/criu"
chmod 755 "$copy/bin/criu"

# The preload takes: the ASan runtime is in node's address space.
if ! LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0 node -e \
  "process.exit(require('fs').readFileSync('/proc/self/maps', 'utf8').includes('libasan') ? 0 : 1)"; then
  echo "test-asan: LD_PRELOAD=$libasan did not load the ASan runtime into node" >&2
  exit 1
fi

# 4. jest under ASan, in a private network namespace with only lo (as scripts/jest-isolated.sh).
rm -rf "$reports"
mkdir -p "$reports"
if [ "$#" -eq 0 ]; then
  set -- test/soccr test/criu/transport.test.ts test/criu/codec.test.ts test/fuzz
fi
echo "test-asan: jest $* (LD_PRELOAD=$libasan)"
status=0
(
  cd "$copy" &&
    CRIU_PATH="$copy/bin/criu" \
    LD_PRELOAD="$libasan" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$reports/asan:detect_odr_violation=0" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan" \
    NODE_CRIU_TEST_NETNS=1 \
    unshare --net -- bash -c 'ip link set lo up && exec node node_modules/jest/bin/jest.js --runInBand "$@"' jest "$@"
) || status=$?

found="$(ls "$reports" 2>/dev/null | wc -l)"
if [ "$found" -gt 0 ]; then
  for f in "$reports"/*; do
    echo "=== $f" >&2
    head -60 "$f" >&2
  done
  echo "test-asan: $found sanitizer report(s) in $reports"
  exit 1
fi
if [ "$status" != 0 ]; then
  echo "test-asan: jest failed (status $status), no sanitizer report"
  exit "$status"
fi
echo "test-asan: passed, no ASan/UBSan report"
