/** fast-check arbitraries shared by the property tests. */
import * as fc from 'fast-check';

import { CriuReqType } from '../../lib/criu';
import type { CriuResponseMessage } from '../../lib/criu';
import { TcpState, tcpStateName } from '../../lib/soccr';
import type { ConnectionImage, SkData } from '../../lib/soccr';

const uint32 = fc.nat({ max: 0xffffffff });
const restorable = [
  TcpState.ESTABLISHED,
  TcpState.FIN_WAIT1,
  TcpState.FIN_WAIT2,
  TcpState.CLOSE_WAIT,
  TcpState.LAST_ACK,
  TcpState.CLOSING,
  TcpState.CLOSE,
  TcpState.SYN_SENT,
];

const endpoint = (family: 4 | 6) =>
  fc.record(
    {
      family: fc.constant(family),
      address:
        family === 4
          ? fc.ipV4()
          : fc.oneof(
              fc.ipV6(),
              fc.ipV4().map((a) => `::ffff:${a}`),
            ),
      port: fc.integer({ min: 1, max: 65535 }),
      scopeId: family === 6 ? fc.nat({ max: 0xffffffff }) : fc.constant(undefined),
    },
    { requiredKeys: ['family', 'address', 'port'] },
  );

/** Valid images (small queues: the decoder's work does not depend on their size). */
export const imageArb: fc.Arbitrary<ConnectionImage> = fc
  .tuple(
    fc.constantFrom<4 | 6>(4, 6),
    fc.constantFrom(...restorable),
    fc.uint8Array({ maxLength: 48 }),
    fc.uint8Array({ maxLength: 48 }),
    fc.nat(),
    fc.array(uint32, { minLength: 12, maxLength: 12 }),
    fc.constantFrom(0, 1),
    fc.uint8Array({ maxLength: 16 }),
    fc.option(
      fc.record({
        table: fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,20}$/),
        netns: fc.option(fc.constantFrom('/run/netns/x', '/proc/1/ns/net'), { nil: undefined }),
      }),
      { nil: undefined },
    ),
  )
  .chain(([family, state, recv, send, unsentPick, words, flags, pending, lock]) =>
    fc.tuple(endpoint(family), endpoint(family)).map(([local, remote]) => {
      const unsqLen = send.length === 0 ? 0 : unsentPick % (send.length + 1);
      const skData: SkData = {
        state,
        stateName: tcpStateName(state)!,
        inqLen: recv.length,
        inqSeq: words[0],
        outqLen: send.length,
        outqSeq: words[1],
        unsqLen,
        optMask: words[2] & 7,
        mssClamp: words[3],
        sndWscale: words[4] % 15,
        rcvWscale: words[5] % 15,
        timestamp: words[6],
        flags,
        sndWl1: words[7],
        sndWnd: words[8],
        maxWindow: words[9],
        rcvWnd: words[10],
        rcvWup: words[11],
      };
      const image: ConnectionImage = {
        version: 1,
        family,
        local: local as ConnectionImage['local'],
        remote: remote as ConnectionImage['remote'],
        skData,
        recvQueue: Buffer.from(recv),
        sendQueue: Buffer.from(send),
        sendQueueUnsent: unsqLen,
        pendingRead: Buffer.from(pending),
      };
      if (lock) image.lock = lock.netns ? { table: lock.table, netns: lock.netns } : { table: lock.table };
      return image;
    }),
  );

export const int32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
export const text = fc.oneof(fc.string({ maxLength: 24 }), fc.string({ unit: 'binary', maxLength: 12 }));
export const reqType = fc.constantFrom(...(Object.values(CriuReqType) as CriuReqType[]));
export const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

export function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

export const featuresArb = fc
  .record({ memTrack: opt(fc.boolean()), lazyPages: opt(fc.boolean()), pidfdStore: opt(fc.boolean()) })
  .map(compact);
export const psArb = fc.record({ address: opt(text), port: opt(int32), pid: opt(int32), fd: opt(int32) }).map(compact);

/** Valid criu_resp messages; NOTIFY ones carry criu_notify like CRIU's notifications. */
export const responseArb: fc.Arbitrary<CriuResponseMessage> = fc.oneof(
  fc
    .record({
      type: reqType,
      success: fc.boolean(),
      dump: opt(fc.record({ restored: opt(fc.boolean()) }).map(compact)),
      restore: opt(fc.record({ pid: int32 })),
      notify: opt(fc.record({ script: opt(text), pid: opt(int32) }).map(compact)),
      ps: opt(psArb),
      crErrno: opt(int32),
      features: opt(featuresArb),
      crErrmsg: opt(text),
      version: opt(
        fc
          .record({
            majorNumber: int32,
            minorNumber: int32,
            gitid: opt(text),
            sublevel: opt(int32),
            extra: opt(int32),
            name: opt(text),
          })
          .map(compact),
      ),
      status: opt(int32),
    })
    .map((r) => compact(r) as CriuResponseMessage),
  fc
    .record({
      type: fc.constant(CriuReqType.NOTIFY),
      success: fc.constant(true),
      notify: fc
        .record({
          script: fc.constantFrom(
            'pre-dump',
            'post-dump',
            'network-lock',
            'network-unlock',
            'setup-namespaces',
            'post-setup-namespaces',
            'pre-resume',
            'post-resume',
            'orphan-pts-master',
            'status-ready',
          ),
          pid: opt(int32),
        })
        .map(compact),
    })
    .map((r) => r as CriuResponseMessage),
);
