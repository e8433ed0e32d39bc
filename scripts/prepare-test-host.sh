#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine and does nothing when it is already there:
# nftables (connection locks), iproute2 (namespaces), CRIU 4.2+ (scripts/install-criu.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "prepare-test-host: not root; the suite needs root and will refuse to run" >&2
  exit 0
fi

need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "prepare-test-host: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -x scripts/install-criu.sh ]; then
  scripts/install-criu.sh --quiet
fi
