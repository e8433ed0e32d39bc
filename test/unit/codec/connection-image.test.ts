/** The portable connection image: round trip, and strict rejection of anything malformed. */
import * as fs from 'node:fs';
import * as path from 'node:path';

import * as protobuf from 'protobufjs';

import {
  ConnectionImageError,
  decodeConnectionImage,
  encodeConnectionImage,
  validateConnectionImage,
} from '../../../lib';
import type { ConnectionImage } from '../../../lib';
import { addressBytes, addressString } from '../../../lib/soccr/address';

function sampleImage(overrides: Partial<ConnectionImage> = {}): ConnectionImage {
  return {
    version: 1,
    family: 6,
    local: { family: 6, address: '::ffff:127.0.0.1', port: 4000 },
    remote: { family: 6, address: '2001:db8::1:0:0:1', port: 55555 },
    skData: {
      state: 1,
      stateName: 'ESTABLISHED',
      inqLen: 3,
      inqSeq: 0xfffffff0,
      outqLen: 5,
      outqSeq: 12345,
      unsqLen: 2,
      optMask: 7,
      mssClamp: 65495,
      sndWscale: 7,
      rcvWscale: 10,
      timestamp: 0xdeadbeef,
      flags: 1,
      sndWl1: 1,
      sndWnd: 65535,
      maxWindow: 65535,
      rcvWnd: 65536,
      rcvWup: 0xfffffff0,
    },
    recvQueue: Buffer.from('abc'),
    sendQueue: Buffer.from('hello'),
    sendQueueUnsent: 2,
    pendingRead: Buffer.from('pending'),
    lock: { table: 'node_criu_1_abc', netns: '/run/netns/x' },
    ...overrides,
  };
}

const protoFile = path.resolve(__dirname, '..', '..', '..', 'proto', 'connection-image.proto');
// The same schema with every field optional, so the tests can put malformed messages on the wire.
const looseSchema = fs.readFileSync(protoFile, 'utf8').replace(/\brequired\b/g, 'optional');
const wireType = protobuf.parse(looseSchema).root.lookupType('nodecriu.image.ConnectionImage');

/** Re-encodes an image's wire object after `mutate`, bypassing encodeConnectionImage's checks. */
function tamper(mutate: (wire: Record<string, any>) => void): Uint8Array {
  const wire = wireType.toObject(wireType.decode(encodeConnectionImage(sampleImage())), { bytes: Buffer }) as Record<
    string,
    unknown
  >;
  mutate(wire);
  const message = wireType.fromObject(wire);
  return wireType.encode(message).finish();
}

function expectInvalid(fn: () => unknown): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(ConnectionImageError);
  expect((thrown as ConnectionImageError).code).toBe('ERR_CONNECTION_IMAGE_INVALID');
}

describe('connection image codec', () => {
  it('round-trips every field', () => {
    const image = sampleImage();
    const decoded = decodeConnectionImage(encodeConnectionImage(image));
    expect(decoded).toEqual(image);
    const v4 = sampleImage({
      family: 4,
      local: { family: 4, address: '10.1.2.3', port: 1 },
      remote: { family: 4, address: '192.168.0.254', port: 65535 },
      pendingRead: Buffer.alloc(0),
      lock: undefined,
    });
    delete v4.lock;
    expect(decodeConnectionImage(encodeConnectionImage(v4))).toEqual(v4);
  });

  it('formats and parses addresses like Node', () => {
    for (const a of ['::1', '::', '2001:db8::1', 'fe80::1:2', '::ffff:10.0.0.1', '1:2:3:4:5:6:7:8', '2001:db8:0:1::']) {
      const bytes = addressBytes(6, a) as Buffer;
      expect(bytes).toHaveLength(16);
      expect(addressString(bytes)).toBe(a);
    }
    expect(addressBytes(6, '::ffff:1.2.3.4')?.toString('hex')).toBe('00000000000000000000ffff01020304');
    expect(addressBytes(4, '::1')).toBeUndefined();
    expect(addressBytes(6, '1.2.3.4')).toBeUndefined();
  });

  it('rejects bytes that are not an image', () => {
    expectInvalid(() => decodeConnectionImage(Buffer.from('not a protobuf at all, just text')));
    expectInvalid(() => decodeConnectionImage(new Uint8Array([0xff, 0xff, 0xff])));
    expectInvalid(() => decodeConnectionImage(new Uint8Array(0)));
  });

  it('rejects a truncated image', () => {
    const bytes = encodeConnectionImage(sampleImage());
    for (const cut of [1, 10, bytes.length - 1]) expectInvalid(() => decodeConnectionImage(bytes.subarray(0, cut)));
  });

  it('rejects another version', () => {
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.version = 2))));
    expectInvalid(() => validateConnectionImage({ ...sampleImage(), version: 2 }));
  });

  it('rejects missing fields', () => {
    expectInvalid(() => decodeConnectionImage(tamper((w) => delete w.skData)));
    expectInvalid(() => decodeConnectionImage(tamper((w) => delete w.remote)));
    expectInvalid(() => decodeConnectionImage(tamper((w) => delete w.skData.rcvWup)));
    expectInvalid(() => decodeConnectionImage(tamper((w) => delete w.sendQueue)));
  });

  it('rejects queue lengths inconsistent with sk_data', () => {
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.recvQueue = Buffer.from('abcd')))));
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.sendQueue = Buffer.alloc(0)))));
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.skData.unsqLen = 6))));
    expectInvalid(() => validateConnectionImage({ ...sampleImage(), sendQueueUnsent: 1 }));
  });

  it('rejects bad addresses, families, states and lock names', () => {
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.local.address = Buffer.alloc(4)))));
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.remote.port = 0))));
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.remote.port = 70000))));
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.family = 5))));
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.skData.state = 10)))); // LISTEN
    expectInvalid(() => decodeConnectionImage(tamper((w) => (w.lock.table = 'x; flush ruleset'))));
    expectInvalid(() =>
      validateConnectionImage({ ...sampleImage(), local: { family: 6, address: '1.2.3.4', port: 1 } }),
    );
    expectInvalid(() => encodeConnectionImage({ ...sampleImage(), remote: { family: 6, address: 'nope', port: 1 } }));
    expectInvalid(() => validateConnectionImage(null));
  });
});
