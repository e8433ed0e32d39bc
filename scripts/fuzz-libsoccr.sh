#!/usr/bin/env bash
# Fuzzes vendor/libsoccr's input checks with libFuzzer + AddressSanitizer + UBSan + LeakSanitizer
# (harness: test/c/fuzz/fuzz_soccr.c). Usage: scripts/fuzz-libsoccr.sh [seconds, default 60]
#
# The fuzzer runs in a new network namespace with only lo (unshare -n): nothing it sends can
# leave the machine, and the harness refuses to start anywhere else. The corpus grows in
# test/c/fuzz/build/corpus (kept between runs, not committed); a crash, leak, sanitizer report or
# contract violation leaves its input in test/c/fuzz/build/artifacts/ and fails the script.
# Reproduce one with: unshare -n sh -c 'ip link set lo up && exec test/c/fuzz/build/fuzz_soccr FILE'
# Last line: "fuzz-libsoccr: N executions in S s, ..." Exit status non-zero on any finding.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/test/c/fuzz"
build="$dir/build"
seconds="${1:-60}"
cc="${FUZZ_CC:-clang}"

if [ "$(id -u)" != 0 ]; then
  echo "fuzz-libsoccr: needs root (unshare -n, TCP_REPAIR)" >&2
  exit 1
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [seconds]" >&2
  exit 2
fi

mkdir -p "$build/corpus" "$build/artifacts" "$build/seeds"
bin="$build/fuzz_soccr"
sources=("$dir/fuzz_soccr.c" "$root"/vendor/libsoccr/soccr*.c "$root"/vendor/libsoccr/*.h)
stale=0
[ -x "$bin" ] || stale=1
for f in "${sources[@]}"; do [ "$f" -nt "$bin" ] && stale=1; done
if [ "$stale" = 1 ]; then
  "$cc" -g -O1 -std=gnu11 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer -I"$root/vendor/libsoccr" \
    "$dir/fuzz_soccr.c" "$root"/vendor/libsoccr/soccr*.c -o "$bin"
fi

# One seed per path and family (first byte: path in bits 0-1, IPv6 in bit 4), plus the staged
# restore in its documented order; libFuzzer grows the rest.
seed() { printf "$2" >"$build/seeds/$1"; }
seed restore-v4 '\x00\x00\x01\x00\x00\x00'
seed restore-v6 '\x10\x00\x01\x00\x00\x00'
seed staged-v4 '\x01\x00\x40\x01\x00\x00\x00'
seed staged-v6 '\x11\x00\x40\x01\x00\x00\x00'
seed save-v4 '\x02\x00\x80\x00\x00\x00\x10\x00\x00\x00\x10\x00\x00\x00'
seed save-v6 '\x12\x01\x80\x00\x00\x00\x10\x00\x00\x00\x10\x00\x00\x00'
seed args-v4 '\x03\x01\x00\x00\x00\x01\x00\x00\x00'
seed args-v6 '\x13\x02\x00\x00\x00\x00\x00\x00\x00'

log="$build/last-run.log"
status=0
# -timeout: an input that blocks 10 s is a finding (libsoccr's own waits are bounded ~1-5 s).
unshare -n sh -c 'ip link set lo up && exec "$@"' fuzz \
  "$bin" -max_total_time="$seconds" -max_len=600 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$build/artifacts/" "$build/corpus" "$build/seeds" \
  >"$log" 2>&1 || status=$?

execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
corpus="$(ls "$build/corpus" | wc -l)"
if [ "$status" != 0 ]; then
  grep -E "ERROR|SUMMARY|runtime error|contract violated|fd leak|Test unit written" "$log" >&2 || tail -40 "$log" >&2
  echo "fuzz-libsoccr: FAILED after ${execs:-?} executions (log: $log, inputs: $build/artifacts/)"
  exit 1
fi
echo "fuzz-libsoccr: ${execs:-0} executions in ${seconds} s, corpus ${corpus} inputs, no finding"
