/** lib/sys/netstat: nstat-style names from /proc/net/netstat and /proc/net/snmp text, deltas. */
import { counterDelta, parseNetCounters, recoveryCounters } from '../../../lib/sys/netstat';

const NETSTAT = `TcpExt: SyncookiesSent TCPTimeouts TCPLossProbes TCPSpuriousRTOs
TcpExt: 0 7 3 1
IpExt: InNoRoutes InOctets
IpExt: 0 123456789012
`;
const SNMP = `Ip: Forwarding DefaultTTL
Ip: 2 64
Tcp: RtoAlgorithm RtoMin ActiveOpens RetransSegs OutRsts MaxConn
Tcp: 1 200 5 42 2 -1
`;

describe('parseNetCounters', () => {
  it('names each counter <Group><Name> as nstat does, from both files', () => {
    const counters = parseNetCounters(`${NETSTAT}${SNMP}`);
    expect(counters).toMatchObject({
      TcpExtTCPTimeouts: 7,
      TcpExtTCPLossProbes: 3,
      TcpExtTCPSpuriousRTOs: 1,
      IpExtInOctets: 123456789012,
      TcpRetransSegs: 42,
      TcpOutRsts: 2,
      TcpMaxConn: -1,
      IpDefaultTTL: 64,
    });
  });

  it('skips lines that are not a header/value pair of one group and one length', () => {
    const text = 'garbage\nTcpExt: A B\nTcpExt: 1\nTcp: X Y\nUdp: 1 2\nTcpExt: C\nTcpExt: x\nIp: D\nIp: 4\n';
    expect(parseNetCounters(text)).toEqual({ IpD: 4 });
    expect(parseNetCounters('')).toEqual({});
  });
});

describe('counterDelta and recoveryCounters', () => {
  it('subtracts, counting a counter missing before from 0, and picks the recovery counters (0 when absent)', () => {
    const delta = counterDelta(
      { TcpExtTCPTimeouts: 5, TcpRetransSegs: 10 },
      { TcpExtTCPTimeouts: 9, TcpRetransSegs: 10, TcpOutRsts: 1 },
    );
    expect(delta).toEqual({ TcpExtTCPTimeouts: 4, TcpRetransSegs: 0, TcpOutRsts: 1 });
    expect(recoveryCounters(delta)).toEqual({
      TcpExtTCPTimeouts: 4,
      TcpExtTCPLossProbes: 0,
      TcpExtTCPSpuriousRTOs: 0,
      TcpRetransSegs: 0,
      TcpOutRsts: 1,
      TcpExtTCPFastRetrans: 0,
    });
  });
});
