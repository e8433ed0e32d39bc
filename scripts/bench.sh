#!/usr/bin/env bash
# Runs the project's benchmarks; each prints a markdown table to stdout.
# Sections are independent: add new benchmarks below as their own section.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (TCP_REPAIR, network namespaces)" >&2
  exit 1
fi

# --- libsoccr (C): dump/restore of one connection vs the same kernel calls made directly ---
make -s -C bench/c >/dev/null
# A private network namespace: loopback only, nothing on the host is touched.
unshare -n sh -c 'ip link set lo up && exec bench/c/build/soccr_bench "${SOCCR_BENCH_ITERS:-3000}"'
echo

# --- CRIU-RPC client: node-criu vs criu CLI vs pycriu (VERSION/CHECK round trips, dump + restore) ---
npx tsc -p tsconfig.build.json
node bench/criu-rpc-bench.js
echo

# --- libsoccr from JS: one connection (public API and raw addon), 10,000 connections at once ---
npx tsc -p tsconfig.build.json
unshare -n sh -c 'ip link set lo up && exec node bench/soccr/js-soccr-bench.js "${SOCCR_BENCH_ITERS:-3000}" 10000'
echo

# --- whole-process migration (CRIU) vs restart+reconnect: longest client pause, 10/100/1000 connections ---
npx tsc -p tsconfig.build.json
node bench/migration-process-bench.js "${PROCESS_BENCH_COUNTS:-10,100,1000}"
echo
