#!/usr/bin/env bash
# valgrind memcheck over a checkpoint/restore loop of one connection, through the public API in
# dist/ (test/leak/soccr-cycles.js: each cycle checkpoints and restores the connection, with
# queued data both ways and the low-level soccr calls every tenth cycle; bytes verified both ways).
# Usage: scripts/valgrind-soccr.sh [cycles, default 100]   (npm run build and the addon first)
#
# Fails (exit 1) on any memcheck error or any block definitely lost. No suppressions are needed
# on this machine (node 20.20.2, valgrind 3.19): node itself reports none. The summary names
# how many error contexts and definitely-lost records have a frame in our code (node_criu.node:
# csrc/ and vendor/libsoccr). Runs in a private network namespace (unshare -n, lo only).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cycles="${1:-100}"

if [ "$(id -u)" != 0 ]; then
  echo "valgrind-soccr: needs root (TCP_REPAIR, unshare -n)" >&2
  exit 1
fi
command -v valgrind >/dev/null || { echo "valgrind-soccr: valgrind is not installed" >&2; exit 1; }
[ -f dist/index.js ] || { echo "valgrind-soccr: run npm run build first" >&2; exit 1; }
[ -f build/Release/node_criu.node ] || { echo "valgrind-soccr: run npm run build:addon first" >&2; exit 1; }

log="$(mktemp /tmp/valgrind-soccr.XXXXXX.log)"
status=0
unshare -n sh -c 'ip link set lo up && exec "$@"' valgrind \
  valgrind --tool=memcheck --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
  --errors-for-leak-kinds=definite --num-callers=40 --log-file="$log" \
  node test/leak/soccr-cycles.js "$cycles" 1000 || status=$?

summary="$(grep -E 'ERROR SUMMARY' "$log" | tail -1 | sed 's/^==[0-9]*== //')"
lost="$(grep -E 'definitely lost:' "$log" | tail -1 | sed 's/^==[0-9]*== *//')"
# Error contexts / leak records with a frame in the addon (csrc/ or vendor/libsoccr).
ours="$(awk '/^==[0-9]+== [A-Z]/ {hit=0} /(at|by) 0x[0-9A-F]+: .*(node_criu\.node|soccr|csrc\/)/ {if (!hit) {n++; hit=1}} END {print n+0}' "$log")"
echo "valgrind-soccr: $cycles cycles; $summary; $lost; contexts with a frame in our code: $ours (log: $log)"
exit "$status"
