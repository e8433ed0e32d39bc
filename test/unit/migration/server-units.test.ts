/** The pure parts of the server handover: the per-connection state envelope and the listener backlog from /proc. */
import { decodeServerState, encodeServerState } from '../../../lib/migration/server-common';
import { serviceOf } from '../../../lib/migration/server-listener';
import { listenerBacklog } from '../../../lib/sys/proc';

describe('server state envelope', () => {
  it('carries the kind and the application state both ways', () => {
    for (const kind of ['net', 'http'] as const) {
      const state = Buffer.from([0, 1, 2, 255]);
      expect(decodeServerState(encodeServerState(kind, state))).toEqual({ kind, state });
    }
    expect(decodeServerState(encodeServerState('http', new Uint8Array(0)))).toEqual({
      kind: 'http',
      state: Buffer.alloc(0),
    });
  });

  it('a state without the envelope (a handOverConnections source) is the application state as it is', () => {
    for (const bytes of [Buffer.alloc(0), Buffer.from('NCS'), Buffer.from('hello world')])
      expect(decodeServerState(bytes)).toEqual({ state: bytes });
  });

  it('an envelope of another version or kind is refused with ERR_HANDOVER_PROTOCOL', () => {
    for (const tail of [
      [2, 0],
      [1, 2],
      [1, 255],
    ])
      expect(() => decodeServerState(Buffer.concat([Buffer.from('NCSV'), Buffer.from(tail)]))).toThrow(
        expect.objectContaining({ code: 'ERR_HANDOVER_PROTOCOL' }),
      );
  });
});

describe('listenerBacklog', () => {
  const text = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 4242 1 0000 100 0 0 10 0',
    '   1: 0100007F:1F90 0100007F:9C40 03 00000000:00000000 02:00000064 00000000     0        0 0 0 0000',
    '   2: 0100007F:1F91 0100007F:9C41 03 00000000:00000000 02:00000064 00000000     0        0 0 0 0000',
    '   3: 0100007F:1F90 0100007F:9C42 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000 20 4 30 10 -1',
    '',
  ].join('\n');

  it('reads the accept queue of the LISTEN row by inode and counts SYN_RECV rows on its port', () => {
    expect(listenerBacklog(text, '4242', 0x1f90)).toEqual({ queued: 3, handshakes: 1 });
    expect(listenerBacklog(text, '4242', 0x1f91)).toEqual({ queued: 3, handshakes: 1 });
  });

  it('is undefined when no LISTEN row has the inode', () => {
    expect(listenerBacklog(text, '4343', 0x1f90)).toBeUndefined();
    expect(listenerBacklog('', '4242', 0x1f90)).toBeUndefined();
  });
});

it('serviceOf: a wildcard listener serves every address, a bound one its own', () => {
  expect(serviceOf({ address: '0.0.0.0', port: 80, family: 'IPv4' })).toEqual({ port: 80 });
  expect(serviceOf({ address: '::', port: 80, family: 'IPv6' })).toEqual({ port: 80 });
  expect(serviceOf({ address: '10.0.0.1', port: 80, family: 'IPv4' })).toEqual({ address: '10.0.0.1', port: 80 });
});
