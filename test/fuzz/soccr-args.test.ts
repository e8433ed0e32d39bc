/**
 * Property tests of the libsoccr half with random arguments, against the real kernel:
 * - soccr.pause(random fds and objects), including real fds of every kind this process holds;
 * - every SoccrHandle call on a paused fresh socket, in random order, with random sk_data,
 *   addresses and queues (the native restore paths and their rollback);
 * - checkpointConnection(random target, random options) and restoreConnection(random image,
 *   random options).
 * Only typed errors come out; afterwards no fd is leaked and no socket is left in repair mode, and
 * a connection that was moved carries data both ways byte-exact.
 *
 * Traffic stays on loopback: addresses the restores may bind or connect are 127.0.0.1, ::1 and
 * ::ffff:127.0.0.1 with ports 20000..29999 (outside the ephemeral range), plus malformed ones.
 * A restored socket is released in repair mode (silent) unless the property resumes it on purpose.
 */
import * as dgram from 'node:dgram';
import * as net from 'node:net';

import * as fc from 'fast-check';

import {
  NftablesLock,
  SoccrError,
  checkpointConnection,
  restoreConnection,
  soccr,
  tcpStateName,
} from '../../lib/soccr';
import type { ConnectionImage, SkData, SocketAddress } from '../../lib/soccr';
import { fdsInRepairMode, tcpPair } from '../helpers/soccr';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';
import { anyValue, count, objectWith, printTally, runs, typedOutcome, typedOutcomeAsync } from './fuzz-helpers';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

let fdsAtStart: FdSnapshot = new Map();
beforeAll(() => {
  fdsAtStart = openFds();
});

afterAll(async () => {
  await NftablesLock.destroyProcessLocks();
  printTally('soccr-args');
  await settle();
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsAtStart)).toEqual([]);
});

/** Lets destroyed net.Sockets close their fds. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

async function expectNothingLeft(before: FdSnapshot): Promise<void> {
  await settle();
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(before)).toEqual([]);
}

/** The pair carries `bytes` each way, exactly, with no reset. */
async function expectWorks(a: net.Socket, b: net.Socket, bytes: number, seed: number): Promise<void> {
  const ea = new TrafficEndpoint({ seed, total: bytes }).attach(a);
  const eb = new TrafficEndpoint({ seed: seed + 1, total: bytes }).attach(b);
  await Promise.all([ea.waitForReceived(bytes), eb.waitForReceived(bytes)]);
  expectExactTwoWay(ea.report(), eb.report(), { aToB: bytes, bToA: bytes });
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const port = fc.integer({ min: 20000, max: 29999 });
const loopback = (family: 4 | 6) =>
  family === 4 ? fc.constant('127.0.0.1') : fc.constantFrom('::1', '::ffff:127.0.0.1');
const addressArb = (family: 4 | 6): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: 8, arbitrary: fc.record({ family: fc.constant(family), address: loopback(family), port }) },
    {
      weight: 1,
      arbitrary: objectWith(
        ['family', 'address', 'port', 'scopeId'],
        fc.constantFrom(4, 6, 0, 70000, -1, '127.0.0.1', '::1', '999.1.1.1', '', 'x', undefined),
      ),
    },
    { weight: 1, arbitrary: anyValue },
  );

const uint32 = fc.nat({ max: 0xffffffff });
const skDataArb = (inqLen: number, outqLen: number): fc.Arbitrary<SkData> =>
  fc
    .record({
      state: fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom(1, 4, 5, 8, 9, 11) },
        { weight: 1, arbitrary: fc.integer({ min: 0, max: 13 }) },
        { weight: 1, arbitrary: uint32 },
      ),
      inqSeq: uint32,
      outqSeq: uint32,
      unsqPick: fc.nat(),
      optMask: fc.oneof(fc.constantFrom(0, 7, 5), fc.integer({ min: 0, max: 15 })),
      mssClamp: fc.oneof(fc.constantFrom(0, 536, 1460, 65483, 65495), uint32),
      sndWscale: fc.integer({ min: 0, max: 15 }),
      rcvWscale: fc.integer({ min: 0, max: 15 }),
      timestamp: uint32,
      flags: fc.constantFrom(0, 1, 1, 2),
      sndWl1: uint32,
      sndWnd: fc.oneof(fc.constantFrom(0, 65535, 1 << 20), uint32),
      maxWindow: fc.oneof(fc.constantFrom(0, 65535, 1 << 20), uint32),
      rcvWnd: fc.oneof(fc.constantFrom(0, 65535, 1 << 20), uint32),
      rcvWupDelta: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 100 }), uint32),
    })
    .map((r) => ({
      state: r.state,
      stateName: tcpStateName(r.state) ?? (`UNKNOWN(${r.state})` as SkData['stateName']),
      inqLen,
      inqSeq: r.inqSeq,
      outqLen,
      outqSeq: r.outqSeq,
      unsqLen: outqLen === 0 ? 0 : r.unsqPick % (outqLen + 1),
      optMask: r.optMask,
      mssClamp: r.mssClamp,
      sndWscale: r.sndWscale,
      rcvWscale: r.rcvWscale,
      timestamp: r.timestamp,
      flags: r.flags,
      sndWl1: r.sndWl1,
      sndWnd: r.sndWnd,
      maxWindow: r.maxWindow,
      rcvWnd: r.rcvWnd,
      // Mostly at or below rcv_nxt (what the kernel accepts), sometimes anywhere.
      rcvWup: (r.inqSeq - r.rcvWupDelta) >>> 0,
    }));

/** sk_data with consistent queues, or (rarely) anything at all. */
const restoreInput = fc
  .tuple(fc.constantFrom<4 | 6>(4, 6), fc.uint8Array({ maxLength: 3000 }), fc.uint8Array({ maxLength: 3000 }))
  .chain(([family, recv, send]) =>
    fc.record({
      family: fc.constant(family),
      data: fc.oneof(
        { weight: 12, arbitrary: skDataArb(recv.length, send.length) as fc.Arbitrary<unknown> },
        { weight: 1, arbitrary: objectWith(['state', 'inqLen', 'outqLen', 'flags']) },
      ),
      local: addressArb(family),
      remote: addressArb(family),
      recv: fc.oneof(
        { weight: 12, arbitrary: fc.constant(Buffer.from(recv)) as fc.Arbitrary<unknown> },
        { weight: 1, arbitrary: anyValue },
      ),
      send: fc.oneof(
        { weight: 12, arbitrary: fc.constant(Buffer.from(send)) as fc.Arbitrary<unknown> },
        { weight: 1, arbitrary: anyValue },
      ),
    }),
  );

type Op =
  | 'restore'
  | 'unbound'
  | 'bind'
  | 'connect'
  | 'noq'
  | 'queueRecv'
  | 'queueSend'
  | 'finish'
  | 'save'
  | 'getQueue'
  | 'addrs'
  | 'resume';
const stagedInOrder: Op[] = ['unbound', 'bind', 'connect', 'noq', 'queueRecv', 'queueSend', 'finish'];
const opsArb: fc.Arbitrary<Op[]> = fc.oneof(
  { weight: 3, arbitrary: fc.constant<Op[]>(['restore']) },
  { weight: 3, arbitrary: fc.constant(stagedInOrder) },
  {
    weight: 3,
    arbitrary: fc.array(fc.constantFrom<Op>(...stagedInOrder, 'restore', 'save', 'getQueue', 'addrs'), {
      minLength: 1,
      maxLength: 8,
    }),
  },
  { weight: 1, arbitrary: fc.constantFrom<Op[]>(['restore', 'resume'], [...stagedInOrder, 'resume']) },
);

// ---------------------------------------------------------------------------------------------

describe('soccr.pause with random arguments', () => {
  it('pauses only connected TCP sockets, else a typed error; nothing left behind', async () => {
    const pair = await tcpPair(4);
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    const before = openFds();
    try {
      const pairFds = [soccr.fdOfSocket(pair.client), soccr.fdOfSocket(pair.accepted)];
      const targets = fc.oneof(
        { weight: 4, arbitrary: fc.integer({ min: 0, max: 64 }) as fc.Arbitrary<unknown> },
        {
          weight: 2,
          arbitrary: fc.constantFrom<unknown>(...pairFds, pair.client, pair.accepted, new net.Socket(), pair.server),
        },
        { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.constantFrom(-1, 2 ** 31, 2 ** 31 - 1, 1.5, NaN)) },
        { weight: 2, arbitrary: anyValue },
      );
      let paused = 0;
      await fc.assert(
        fc.asyncProperty(targets, async (target) => {
          count('soccr.pause: random target');
          const outcome = typedOutcome(() => soccr.pause(target as number), target);
          if (outcome.ok) {
            paused++;
            count('soccr.pause: paused');
            outcome.value.resume();
          }
        }),
        { numRuns: runs(400), examples: [[pair.accepted], [pairFds[0]]] },
      );
      expect(paused).toBeGreaterThan(0);
      await expectNothingLeft(before);
      await expectWorks(pair.client, pair.accepted, 8192, 301);
    } finally {
      udp.close();
      await pair.close();
    }
  });
});

describe('SoccrHandle calls on a paused fresh socket, random order and data', () => {
  it('typed errors only, rollback leaves nothing behind', async () => {
    const before = openFds();
    await fc.assert(
      fc.asyncProperty(restoreInput, opsArb, async (input, ops) => {
        count('SoccrHandle: random call sequences');
        const { fd, handle } = soccr.pauseNewSocket(input.family);
        let restored = false;
        try {
          for (const op of ops) {
            const data = input.data as SkData;
            const outcome = typedOutcome(
              () => {
                switch (op) {
                  case 'restore':
                    return handle.restore(
                      data,
                      input.local as SocketAddress,
                      input.remote as SocketAddress,
                      input.recv as Uint8Array,
                      input.send as Uint8Array,
                    );
                  case 'unbound':
                    return handle.setSkDataUnbound(data);
                  case 'bind':
                    return handle.bind(input.local as SocketAddress);
                  case 'connect':
                    return handle.connect(input.remote as SocketAddress);
                  case 'noq':
                    return handle.setSkDataNoq(data);
                  case 'queueRecv':
                    return (data as { inqLen?: number }).inqLen
                      ? handle.setQueueBytes(data, 'recv', input.recv as Uint8Array)
                      : undefined;
                  case 'queueSend':
                    return (data as { outqLen?: number }).outqLen
                      ? handle.setQueueBytes(data, 'send', input.send as Uint8Array)
                      : undefined;
                  case 'finish':
                    return handle.setSkData(data);
                  case 'save':
                    return handle.getSkData();
                  case 'getQueue':
                    return handle.getQueueBytes(input.family === 4 ? 'recv' : 'send');
                  case 'addrs':
                    return [handle.getLocalAddress(), handle.getRemoteAddress()];
                  case 'resume':
                    // Only after a complete restore: the window probe goes to a loopback port.
                    if (restored) handle.resume();
                    return undefined;
                }
              },
              { input, ops, op },
            );
            if (outcome.ok && (op === 'restore' || op === 'finish')) {
              restored = true;
              count('SoccrHandle: restore completed');
            }
            if (!outcome.ok) count(`SoccrHandle: ${outcome.error.code}`);
          }
        } finally {
          handle.release(); // idempotent after resume
          soccr.closeFd(fd); // repair mode still on unless resumed: silent
        }
      }),
      { numRuns: runs(250) },
    );
    await expectNothingLeft(before);
  });
});

describe('checkpointConnection / restoreConnection with random arguments', () => {
  const checkpointOptions = fc.oneof(
    {
      weight: 6,
      arbitrary: objectWith(
        ['keepRunning', 'lock', 'netns', 'flushTimeoutMs'],
        fc.oneof(
          fc.boolean(),
          fc.constantFrom(
            'filter',
            'none',
            'nftables',
            'bogus',
            '/nonexistent/netns',
            'relative',
            0,
            5000,
            -1,
            NaN,
            Infinity,
          ),
          anyValue,
        ),
      ),
    },
    { weight: 1, arbitrary: anyValue },
  );

  it('checkpointConnection: moves a live connection (exact both ways) or a typed error, the original untouched', async () => {
    const before = openFds();
    let moved = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('live', 'destroyed', 'unconnected', 'random'),
        anyValue,
        checkpointOptions,
        async (kind, randomTarget, options) => {
          count('checkpointConnection: random target/options');
          const pair = await tcpPair(4);
          try {
            let target: unknown = pair.accepted;
            if (kind === 'destroyed') {
              target = new net.Socket();
              (target as net.Socket).destroy();
            } else if (kind === 'unconnected') target = new net.Socket();
            else if (kind === 'random') target = randomTarget;
            // 'none' leaves the peer's packets unblocked: only safe because this pair is idle.
            const outcome = await typedOutcomeAsync(
              () => checkpointConnection(target as net.Socket, options as never),
              { kind, options },
            );
            if (!outcome.ok) {
              count(`checkpointConnection: ${outcome.error.code}`);
              expect(pair.accepted.destroyed).toBe(false);
              await expectWorks(pair.client, pair.accepted, 4096, 11);
              return;
            }
            moved++;
            count('checkpointConnection: checkpointed');
            if ((options as { keepRunning?: boolean } | undefined)?.keepRunning === true) {
              await expectWorks(pair.client, pair.accepted, 4096, 21);
              return;
            }
            const restored = await restoreConnection(outcome.value);
            try {
              await expectWorks(pair.client, restored, 4096, 31);
            } finally {
              restored.destroy();
            }
          } finally {
            await pair.close();
          }
        },
      ),
      // The examples make sure both success paths run in every seed.
      {
        numRuns: runs(40),
        examples: [
          ['live', 0, {}],
          ['live', 0, { keepRunning: true, lock: 'filter' }],
        ],
      },
    );
    expect(moved).toBeGreaterThan(0);
    await NftablesLock.destroyProcessLocks();
    await expectNothingLeft(before);
  });

  /** Images with loopback addresses (restores may succeed), a missing lock table, or broken fields. */
  const restoreImage = restoreInput.chain((input) =>
    fc
      .tuple(
        fc.constant(input),
        fc.option(fc.constant(`ncrfuzz_${process.pid}_${Math.random().toString(16).slice(2, 8)}`), {
          freq: 10,
          nil: undefined,
        }),
        fc.option(
          fc.tuple(fc.constantFrom('version', 'family', 'sendQueueUnsent', 'pendingRead', 'local', 'skData'), anyValue),
          { freq: 3, nil: undefined },
        ),
      )
      .map(([i, table, broken]) => {
        const data = i.data as SkData;
        const image = {
          version: 1,
          family: i.family,
          local: i.local,
          remote: i.remote,
          skData: data,
          recvQueue: i.recv,
          sendQueue: i.send,
          sendQueueUnsent: (data as { unsqLen?: number }).unsqLen,
          // Bytes Node had read: unshifted into the restored socket (the path of the fixed bug
          // reproduced by test/fuzz/repro/restore-pending-read.js).
          pendingRead: Buffer.from('pending'),
        } as Record<string, unknown>;
        if (table) image.lock = { table };
        if (broken) image[broken[0]] = broken[1];
        return image as unknown as ConnectionImage;
      }),
  );
  const restoreOptions = fc.oneof(
    {
      weight: 6,
      arbitrary: objectWith(
        ['netns', 'unlock', 'locks', 'allowHalfOpen'],
        fc.oneof(fc.boolean(), fc.constantFrom('/proc/self/ns/net', '/tmp', '/nonexistent', 'rel', []), anyValue),
      ),
    },
    { weight: 1, arbitrary: anyValue },
  );

  it('restoreConnection: a socket or a typed error, nothing left behind', async () => {
    const before = openFds();
    await fc.assert(
      fc.asyncProperty(restoreImage, restoreOptions, async (image, options) => {
        count('restoreConnection: random image/options');
        const outcome = await typedOutcomeAsync(() => restoreConnection(image, options as never), { image, options });
        if (outcome.ok) {
          count('restoreConnection: restored');
          // Resumed towards a port nobody listens on: the kernel answers with RST; drop it.
          outcome.value.on('error', () => undefined);
          outcome.value.destroy();
        } else {
          count(`restoreConnection: ${outcome.error.code}`);
          if (!(outcome.error instanceof SoccrError)) expect(outcome.error.code).toMatch(/^(ERR_|E[A-Z]+$)/);
        }
      }),
      { numRuns: runs(250) },
    );
    await expectNothingLeft(before);
  });
});
