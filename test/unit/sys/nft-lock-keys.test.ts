/** The lock's pure parts: set keys of 4-tuples, and which process-lock tables are stale. */
import { setKeys, type ConnectionTuple } from '../../../lib/soccr/nft/keys';
import { processLockTableName, staleAmong } from '../../../lib/soccr/nft/sweep';

const v4 = (address: string, port: number) => ({ family: 4 as const, address, port });
const v6 = (address: string, port: number) => ({ family: 6 as const, address, port });
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

describe('setKeys', () => {
  it('IPv4: remote . rport . local . lport, each padded to 4 bytes', () => {
    const { v4: keys, v6: keys6 } = setKeys([{ local: v4('10.0.0.1', 5000), remote: v4('192.0.2.7', 40000) }]);
    expect(hex(keys)).toBe('c0000207' + '9c400000' + '0a000001' + '13880000');
    expect(keys6.length).toBe(0);
  });

  it('IPv4-mapped pairs go to the IPv4 set; a real IPv6 pair to the IPv6 set (40 bytes)', () => {
    const tuples: ConnectionTuple[] = [
      { local: v6('::ffff:10.0.0.1', 1), remote: v4('10.0.0.2', 2) },
      { local: v6('fd00::1', 80), remote: v4('10.0.0.3', 3) },
    ];
    const { v4: keys, v6: keys6 } = setKeys(tuples);
    expect(hex(keys)).toBe('0a000002' + '00020000' + '0a000001' + '00010000');
    expect(keys6.length).toBe(40);
    expect(hex(keys6.subarray(0, 20))).toBe('00000000000000000000ffff0a000003' + '00030000');
    expect(hex(keys6.subarray(20))).toBe('fd000000000000000000000000000001' + '00500000');
  });

  it('refuses malformed tuples with InvalidArgumentError', () => {
    const bad: unknown[] = [
      null,
      { local: v4('10.0.0.256', 1), remote: v4('10.0.0.1', 1) },
      { local: v4('10.0.0.1', 65536), remote: v4('10.0.0.1', 1) },
      { local: v4('10.0.0.1', 1.5), remote: v4('10.0.0.1', 1) },
      { local: { family: 5, address: '10.0.0.1', port: 1 }, remote: v4('10.0.0.1', 1) },
      { local: undefined, remote: v4('10.0.0.1', 1) },
    ];
    for (const tuple of bad)
      expect(() => setKeys([tuple as ConnectionTuple])).toThrow(
        expect.objectContaining({ name: 'InvalidArgumentError' }),
      );
  });
});

describe('staleAmong', () => {
  const self = { startTime: '5000', namespaces: '0000000a0000000b' };
  const inet = (name: string) => ({ family: 'inet', name });
  const table = (pid: number, start: string, ns = self.namespaces) =>
    processLockTableName(pid, { startTime: start, namespaces: ns }, 'deadbeef');

  it('gone, zombie or reused creators are stale; live ones, other namespaces and other tables are not', () => {
    const procs = new Map([
      [10, { state: 'S', startTime: '100' }],
      [11, { state: 'Z', startTime: '200' }],
      [12, { state: 'R', startTime: '999' }],
    ]);
    const lookup = (pid: number) => {
      if (pid === 14) throw new Error('EACCES');
      return procs.get(pid);
    };
    const tables = [
      inet(table(10, '100')),
      inet(table(11, '200')),
      inet(table(12, '300')),
      inet(table(13, '400')),
      inet(table(14, '500')),
      inet(table(13, '400', '000000010000000b')),
      { family: 'ip', name: table(13, '400') },
      inet('node_criu_13_deadbeef'),
      inet('CRIU-0123456789abcdef'),
    ];
    expect(staleAmong(tables, self, lookup)).toEqual([
      { table: table(11, '200'), pid: 11, reason: 'exited' },
      { table: table(12, '300'), pid: 12, reason: 'pid-reused' },
      { table: table(13, '400'), pid: 13, reason: 'exited' },
    ]);
  });
});
