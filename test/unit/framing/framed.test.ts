import * as net from 'node:net';

import fc from 'fast-check';

import { FrameDecoder, FramedConnection, encodeFrameHeader, type FrameFormat } from '../../../lib/transport/framed';

const FORMAT: FrameFormat = { magic: 0x4e435454, version: 1, maxPayload: 1024, types: new Set([1, 2, 3]) };

function encode(type: number, id: number, payload: Buffer): Buffer {
  return Buffer.concat([encodeFrameHeader(FORMAT, type, id, payload.length), payload]);
}

describe('FrameDecoder', () => {
  test('frames split at any point come out whole and in order', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ type: fc.constantFrom(1, 2, 3), id: fc.nat(), payload: fc.uint8Array({ maxLength: 1024 }) }),
          {
            maxLength: 8,
          },
        ),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }),
        (frames, cuts) => {
          const wire = Buffer.concat(frames.map((f) => encode(f.type, f.id, Buffer.from(f.payload))));
          const decoder = new FrameDecoder(FORMAT);
          const out = [];
          let offset = 0;
          for (let i = 0; offset < wire.length; i++) {
            const size = cuts[i % cuts.length];
            out.push(...decoder.push(wire.subarray(offset, offset + size)));
            offset += size;
          }
          expect(decoder.pending).toBe(0);
          expect(out.map((f) => [f.type, f.id, [...f.payload]])).toEqual(
            frames.map((f) => [f.type, f.id >>> 0, [...f.payload]]),
          );
        },
      ),
    );
  });

  test('a bad header fails before any payload byte is kept, with a code', () => {
    const cases: Array<[Buffer, string]> = [
      [Buffer.concat([Buffer.from('XXXX'), encode(1, 0, Buffer.alloc(0)).subarray(4)]), 'ERR_FRAME_INVALID'],
      [
        (() => {
          const b = encode(1, 0, Buffer.alloc(0));
          b[4] = 9;
          return b;
        })(),
        'ERR_FRAME_VERSION',
      ],
      [
        (() => {
          const b = encode(1, 0, Buffer.alloc(0));
          b[5] = 77;
          return b;
        })(),
        'ERR_FRAME_INVALID',
      ],
      [
        (() => {
          const b = encode(1, 0, Buffer.alloc(0));
          b.writeUInt32BE(0xffffffff, 12);
          return b;
        })(),
        'ERR_FRAME_TOO_LARGE',
      ],
    ];
    for (const [bytes, code] of cases) {
      const decoder = new FrameDecoder(FORMAT);
      expect(() => decoder.push(bytes)).toThrow(expect.objectContaining({ code }));
      expect(() => decoder.push(Buffer.alloc(1))).toThrow(expect.objectContaining({ code: 'ERR_FRAME_INVALID' }));
    }
  });

  test('random bytes only ever give typed errors or frames', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const decoder = new FrameDecoder(FORMAT);
        try {
          for (const frame of decoder.push(Buffer.from(bytes))) expect(frame.payload.length).toBeLessThanOrEqual(1024);
        } catch (error) {
          expect((error as { code?: string }).code).toMatch(/^ERR_FRAME_/);
        }
      }),
    );
  });

  test('the sender refuses a payload over the maximum', () => {
    expect(() => encodeFrameHeader(FORMAT, 1, 0, 1025)).toThrow(
      expect.objectContaining({ code: 'ERR_FRAME_TOO_LARGE' }),
    );
  });
});

describe('FramedConnection over a real socket pair', () => {
  async function pair(): Promise<[net.Socket, net.Socket, net.Server]> {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((r) => client.once('connect', r));
    return [client, await accepted, server];
  }

  test('chunked data arrives whole; the peer end fails pending receives; close is idempotent', async () => {
    const [a, b, server] = await pair();
    const left = new FramedConnection(a, FORMAT);
    const right = new FramedConnection(b, FORMAT, { maxQueuedFrames: 4 });
    const data = Buffer.from(Array.from({ length: 10000 }, (_, i) => i & 0xff));
    const sent = await left.sendChunked(2, 7, data);
    expect(sent).toBe(10);
    const got: Buffer[] = [];
    for (let i = 0; i < sent; i++) got.push((await right.receive()).payload);
    expect(Buffer.concat(got).equals(data)).toBe(true);
    const pending = right.receive();
    left.close();
    left.close();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_TRANSPORT_DISCONNECTED' });
    await expect(left.send(1, 0)).rejects.toMatchObject({ code: 'ERR_TRANSPORT_CLOSED' });
    server.close();
  });

  test('an aborted receive rejects with ABORT_ERR and leaves the connection usable', async () => {
    const [a, b, server] = await pair();
    const left = new FramedConnection(a, FORMAT);
    const right = new FramedConnection(b, FORMAT);
    const controller = new AbortController();
    const waiting = right.receive(controller.signal);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'ABORT_ERR' });
    await left.send(3, 1, Buffer.from('x'));
    expect((await right.receive()).payload.toString()).toBe('x');
    left.close();
    right.close();
    server.close();
  });

  test('frames that arrived before the peer closed are still received, then the end', async () => {
    const [a, b, server] = await pair();
    const left = new FramedConnection(a, FORMAT);
    const right = new FramedConnection(b, FORMAT);
    await left.send(1, 1, Buffer.from('last words'));
    left.close();
    await new Promise((r) => b.once('close', r));
    expect((await right.receive()).payload.toString()).toBe('last words');
    await expect(right.receive()).rejects.toMatchObject({ code: 'ERR_TRANSPORT_DISCONNECTED' });
    server.close();
  });

  test('a peer that sends garbage is cut off with the decoder error', async () => {
    const [a, b, server] = await pair();
    const right = new FramedConnection(b, FORMAT);
    a.write(Buffer.alloc(32, 0x41));
    await expect(right.receive()).rejects.toMatchObject({ code: 'ERR_FRAME_INVALID' });
    await new Promise((r) => a.once('close', r));
    server.close();
  });
});

describe('FramedConnection.release', () => {
  test('hands the raw stream back between frames, and later frames are no longer read', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((r) => client.once('connect', r));
    const left = new FramedConnection(client, FORMAT);
    const right = new FramedConnection(await accepted, FORMAT);
    await left.send(1, 0, Buffer.from('switch'));
    expect((await right.receive()).payload.toString()).toBe('switch');
    const raw = right.release();
    await expect(right.receive()).rejects.toMatchObject({ code: 'ERR_TRANSPORT_CLOSED' });
    const got = new Promise<string>((resolve) => raw.once('data', (d: Buffer) => resolve(d.toString())));
    raw.resume();
    client.write('raw bytes');
    expect(await got).toBe('raw bytes');
    await left.send(2, 0, Buffer.from('x'));
    client.destroy();
    raw.destroy();
    server.close();
  });
});
