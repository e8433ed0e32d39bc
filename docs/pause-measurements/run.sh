#!/bin/bash
# usage: run.sh MODE FREEZE_MS RUNS [NETEM_DELAY_MS]
#   MODE paced|bulk; FREEZE_MS < 0 = no checkpoint (baseline); a fresh namespace pair per run,
#   so nstat -az (absolute counters of a new netns) are the run's deltas.
set -u
MODE=$1; FREEZE=$2; RUNS=$3; DELAY=${4:-0}
OUT=/tmp/pausemeas/results.jsonl
for i in $(seq 1 $RUNS); do
  A=pm-$$-$i-a; B=pm-$$-$i-b
  cleanup() { [ -n "${SP:-}" ] && kill $SP 2>/dev/null; ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; }
  trap "cleanup; exit 1" INT TERM; trap cleanup EXIT
  ip netns add $A; ip netns add $B
  ip link add pmva netns $A type veth peer name pmvb netns $B
  ip -n $A addr add 10.77.0.1/24 dev pmva; ip -n $B addr add 10.77.0.2/24 dev pmvb
  for n in $A $B; do ip -n $n link set lo up; done
  ip -n $A link set pmva up; ip -n $B link set pmvb up
  if [ -n "${TBF:-}" ]; then ip netns exec $B tc qdisc add dev pmvb root tbf rate $TBF burst 32k latency 300ms; fi
  if [ "$DELAY" != 0 ]; then ip netns exec $A tc qdisc add dev pmva root netem delay ${DELAY}ms limit 100000; ip netns exec $B tc qdisc add dev pmvb root netem delay ${DELAY}ms limit 100000; fi
  MODE=$MODE FREEZE=$FREEZE CLIENT_NS=$A ip netns exec $B node /tmp/pausemeas/server.js > /tmp/pausemeas/srv.out 2>/tmp/pausemeas/srv.err &
  SP=$!
  for k in $(seq 100); do grep -q listening /tmp/pausemeas/srv.err 2>/dev/null && break; sleep 0.05; done
  ip netns exec $A node /tmp/pausemeas/client.js > /tmp/pausemeas/cli.out 2>/tmp/pausemeas/cli.err
  wait $SP; SP=
  CN=$(ip netns exec $A nstat -az 2>/dev/null | grep -E "^(Tcp|TcpExt)" | awk '{printf "\"%s\":%s,", $1, $2}')
  SN=$(ip netns exec $B nstat -az 2>/dev/null | grep -E "^(Tcp|TcpExt)" | awk '{printf "\"%s\":%s,", $1, $2}')
  echo "{\"run\":$i,\"tbf\":\"${TBF:-}\",\"mode\":\"$MODE\",\"freeze\":$FREEZE,\"delay\":$DELAY,\"server\":$(tail -1 /tmp/pausemeas/srv.out || echo null),$(tail -1 /tmp/pausemeas/cli.out | sed 's/^{//;s/}$//'),\"nstatClient\":{${CN%,}},\"nstatServer\":{${SN%,}}}" >> $OUT
  grep -v listening /tmp/pausemeas/srv.err /tmp/pausemeas/cli.err >&2
  cleanup; trap - EXIT INT TERM
done
