#!/usr/bin/env bash
# Runs jest inside a private network namespace with only loopback up. Whatever a test does to the
# network namespace it runs in (the nftables lock tables checkpointConnection creates, sockets,
# sysctls) then happens in this throwaway namespace, never in the host's; the namespaces tests
# create themselves (`ip netns add`) are reached by path as usual. Extra arguments go to jest.
set -euo pipefail
cd "$(dirname "$0")/.."
jest=node_modules/.bin/jest
# Every process the run starts inherits this mark (CRIU restores it with their memory): the global
# teardown finds by it whatever a test left running, wherever it lives.
export NODE_CRIU_TEST_RUN="${NODE_CRIU_TEST_RUN:-$$-$(date +%s%N)}"
if [ "${NODE_CRIU_TEST_NETNS:-}" = 1 ]; then
  exec "$jest" --runInBand "$@"
fi
exec unshare --net -- env NODE_CRIU_TEST_NETNS=1 bash -c 'ip link set lo up && exec "$0" --runInBand "$@"' "$jest" "$@"
