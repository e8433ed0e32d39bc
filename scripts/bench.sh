#!/usr/bin/env bash
# Runs the project's benchmarks; each prints a markdown table to stdout.
# Sections are independent: add new benchmarks below as their own section.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (TCP_REPAIR, network namespaces)" >&2
  exit 1
fi

# Everything runs in a private network namespace (loopback only) and in namespaces the benches
# create themselves: nothing touches the host's addresses or firewall.
if [ "${NODE_CRIU_BENCH_NETNS:-}" != 1 ]; then
  exec unshare --net -- env NODE_CRIU_BENCH_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi

npx tsc -p tsconfig.build.json
echo "Machine: $(nproc) CPUs, $(uname -r), node $(node -v), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# --- libsoccr (C): dump/restore of one connection vs the same kernel calls made directly ---
make -s -C bench/c >/dev/null
# A private network namespace: loopback only, nothing on the host is touched.
unshare -n sh -c 'ip link set lo up && exec bench/c/build/soccr_bench "${SOCCR_BENCH_ITERS:-3000}"'
echo

# --- CRIU-RPC client: node-criu vs criu CLI vs pycriu (VERSION/CHECK round trips, dump + restore) ---
node bench/criu-rpc-bench.js
echo

# --- libsoccr from JS: one connection (public API and raw addon), 10,000 connections at once ---
unshare -n sh -c 'ip link set lo up && exec node bench/soccr/js-soccr-bench.js "${SOCCR_BENCH_ITERS:-3000}" 10000 "${SOCCR_BENCH_ROUNDS:-7}"'
echo

# --- whole-process migration (CRIU) vs restart+reconnect: longest client pause, 10/100/1000 connections ---
node bench/migration-process-bench.js "${PROCESS_BENCH_COUNTS:-10,100,1000}"
echo

# --- connections-only migration (libsoccr handover) vs restart+reconnect: longest client pause, 10 to 10,000 connections ---
node bench/migration-connections-bench.js "${CONNECTIONS_BENCH_COUNTS:-10,100,1000,10000}"
echo

# --- a peer's recovery after a freeze, its packets dropped vs held (holdPackets), one connection ---
node bench/packet-hold-bench.js
echo

# --- node:http under autocannon moved by the process route: drop vs hold vs restart ---
node bench/http-migration-bench.js "${HTTP_BENCH_ROUTES:-steady,process,restart}"
echo
