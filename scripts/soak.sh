#!/usr/bin/env bash
# npm run soak: the long soak of issue 6 (scripts/soak.js; the short version runs in npm test,
# test/soak/). Extra arguments go to scripts/soak.js (--cycles, --netns-every, --connections,
# --moves, --only connection|server). Prints a markdown table; exits nonzero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "soak: needs root (TCP_REPAIR, CRIU, network namespaces)" >&2
  exit 1
fi

# A private network namespace (loopback only) for the soak process itself: its lock tables and
# sockets never reach the host's; the namespaces it makes are its own (ncr-<pid>-...), removed at
# the end, also on failure and on SIGINT/SIGTERM.
if [ "${NODE_CRIU_SOAK_NETNS:-}" != 1 ]; then
  exec unshare --net -- env NODE_CRIU_SOAK_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi

# The fixtures run by child processes (and the processes CRIU moves) load dist/.
npx tsc -p tsconfig.build.json
# Under a subreaper that reaps at once (test/soak/subreaper.pl): each move waits for the previous
# copy's pid to be free, and some inits reap orphans late. SOAK_NO_SUBREAPER=1 runs without it.
if [ "${SOAK_NO_SUBREAPER:-}" = 1 ]; then
  exec node scripts/soak.js "$@"
fi
exec perl test/soak/subreaper.pl node scripts/soak.js "$@"
