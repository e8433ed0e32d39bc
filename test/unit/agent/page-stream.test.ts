/**
 * The lazy session's page frames (protocol.ts checkPageFrame) and the page stream on the agent's
 * channel (page-stream.ts), over a real loopback TCP connection framed as the agent frames it:
 * bytes exact both ways with control frames interleaved, backpressure that stops the pump,
 * page frames refused before the attach point and after PAGE_END, writes held until attach,
 * the unread control frames bounded, the peer's end held until our own (endAfterOwnEnd), and a
 * lost connection failing the stream.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';

import fc from 'fast-check';

import { PageChannel, type PageChannelOptions } from '../../../lib/agent/page-stream';
import { AGENT_FRAME_FORMAT, AGENT_MAX_PAYLOAD, checkPageFrame, encodeBody, MSG } from '../../../lib/agent/protocol';
import { FramedConnection } from '../../../lib/transport/framed';
import { waitUntil } from '../../helpers/wait';

const open: FramedConnection[] = [];

afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

async function framedPair(): Promise<[FramedConnection, FramedConnection]> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [a, b] = [client, await accepted];
  server.close();
  const pair: [FramedConnection, FramedConnection] = [
    new FramedConnection(a, AGENT_FRAME_FORMAT),
    new FramedConnection(b, AGENT_FRAME_FORMAT),
  ];
  open.push(...pair);
  return pair;
}

async function channels(
  a: PageChannelOptions = {},
  b: PageChannelOptions = {},
): Promise<[PageChannel, PageChannel, FramedConnection, FramedConnection]> {
  const [fa, fb] = await framedPair();
  return [new PageChannel(fa, a), new PageChannel(fb, b), fa, fb];
}

function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

function errorOf(stream: NodeJS.ReadableStream): Promise<Error> {
  return new Promise((resolve) => stream.once('error', resolve));
}

describe('checkPageFrame', () => {
  it('accepts PAGE_DATA of 1..max bytes and an empty PAGE_END, id 0', () => {
    expect(() => checkPageFrame({ type: MSG.PAGE_DATA, id: 0, payload: Buffer.alloc(1) })).not.toThrow();
    expect(() =>
      checkPageFrame({ type: MSG.PAGE_DATA, id: 0, payload: Buffer.alloc(AGENT_MAX_PAYLOAD) }),
    ).not.toThrow();
    expect(() => checkPageFrame({ type: MSG.PAGE_END, id: 0, payload: Buffer.alloc(0) })).not.toThrow();
    expect(AGENT_FRAME_FORMAT.types.has(MSG.PAGE_DATA) && AGENT_FRAME_FORMAT.types.has(MSG.PAGE_END)).toBe(true);
  });

  it('refuses anything else with ERR_AGENT_PROTOCOL only', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        fc.integer({ min: 0, max: AGENT_MAX_PAYLOAD + 8 }),
        (type, id, length) => {
          const frame = { type, id, payload: Buffer.alloc(length) };
          const valid =
            id === 0 &&
            ((type === MSG.PAGE_DATA && length >= 1 && length <= AGENT_MAX_PAYLOAD) ||
              (type === MSG.PAGE_END && length === 0));
          try {
            checkPageFrame(frame);
            return valid;
          } catch (error) {
            return !valid && (error as { code?: string }).code === 'ERR_AGENT_PROTOCOL';
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('PageChannel', () => {
  it('carries pages exactly both ways, control frames beside them, and each end', async () => {
    const [a, b, fa] = await channels();
    a.attach();
    b.attach();
    const toB = randomBytes(3 * 1024 * 1024 + 17);
    const toA = randomBytes(1024 * 1024 + 5);
    const gotB = collect(b.pages);
    const gotA = collect(a.pages);
    a.pages.write(toB.subarray(0, 1000));
    await fa.send(MSG.RESTORED, 0, encodeBody({ pid: 42 }));
    a.pages.end(toB.subarray(1000));
    b.pages.end(toA);
    const control = await b.next();
    expect(control.type).toBe(MSG.RESTORED);
    expect(JSON.parse(control.payload.toString())).toEqual({ pid: 42 });
    expect((await gotB).equals(toB)).toBe(true);
    expect((await gotA).equals(toA)).toBe(true);
    await Promise.all([a.peerEnd, b.peerEnd]);
  });

  it('stops taking frames while the reader does not read, then delivers everything', async () => {
    const [a, b] = await channels();
    a.attach();
    b.attach();
    const data = randomBytes(40 * 1024 * 1024);
    let accepted = 0;
    const write = (offset: number): void => {
      while (offset < data.length) {
        const chunk = data.subarray(offset, offset + 1024 * 1024);
        offset += chunk.length;
        const more = a.pages.write(chunk, () => (accepted += chunk.length));
        if (!more) return void a.pages.once('drain', () => write(offset));
      }
      a.pages.end();
    };
    write(0);
    // Nobody reads b.pages: the writer stalls short of the end, b's buffer stays bounded.
    await waitUntil(() => b.pages.readableLength > 0 && a.pages.writableNeedDrain, { what: 'the pages to back up' });
    expect(b.pages.readableLength).toBeLessThanOrEqual(2 * AGENT_MAX_PAYLOAD);
    expect(accepted).toBeLessThan(data.length);
    const got = await collect(b.pages);
    expect(got.equals(data)).toBe(true);
  });

  it('refuses a page frame before the attach point', async () => {
    const [, b, fa] = await channels();
    const failed = errorOf(b.pages);
    await fa.send(MSG.PAGE_DATA, 0, Buffer.from('early'));
    await expect(b.next()).rejects.toMatchObject({ code: 'ERR_AGENT_PROTOCOL' });
    expect((await failed).message).toMatch(/PAGE_DATA before the page stream was attached/);
  });

  it('refuses PAGE_DATA after PAGE_END', async () => {
    const [, b, fa] = await channels();
    b.attach();
    b.pages.resume();
    const failed = errorOf(b.pages);
    await fa.send(MSG.PAGE_END, 0);
    await fa.send(MSG.PAGE_DATA, 0, Buffer.from('late'));
    await expect(b.next()).rejects.toMatchObject({ code: 'ERR_AGENT_PROTOCOL', message: /after PAGE_END/ });
    await failed.catch(() => undefined);
  });

  it('holds writes until attach()', async () => {
    const [a, b, fa] = await channels();
    b.attach();
    a.pages.write(Buffer.from('held'));
    // Frames arrive in order: a page sent before this control frame would be routed first.
    await fa.send(MSG.IMAGES_OK, 0, encodeBody({}));
    expect((await b.next()).type).toBe(MSG.IMAGES_OK);
    expect(b.pages.readableLength).toBe(0);
    a.attach();
    a.pages.end();
    expect((await collect(b.pages)).toString()).toBe('held');
  });

  it('bounds the control frames that wait unread (0: none allowed)', async () => {
    const [, b, fa] = await channels({}, { maxControlFrames: 0 });
    b.attach();
    const failed = errorOf(b.pages);
    await fa.send(MSG.RESTORE, 0, encodeBody({}));
    expect(await failed).toMatchObject({ code: 'ERR_AGENT_PROTOCOL' });
  });

  it("endAfterOwnEnd: the peer's end comes out only after our own end", async () => {
    const [a, b] = await channels({ endAfterOwnEnd: true });
    a.attach();
    b.attach();
    const order: string[] = [];
    a.pages.on('finish', () => order.push('finish'));
    const got = collect(a.pages).then(() => order.push('end'));
    b.pages.end(Buffer.from('last'));
    await a.peerEnd;
    expect(order).toEqual([]);
    a.pages.end();
    await got;
    expect(order).toEqual(['finish', 'end']);
  });

  it('a lost connection fails the page stream and next()', async () => {
    const [a, b, fa] = await channels();
    a.attach();
    b.attach();
    const failed = errorOf(b.pages);
    b.pages.resume();
    a.pages.write(randomBytes(1000));
    (fa.stream as net.Socket).destroy();
    expect(await failed).toMatchObject({ code: 'ERR_TRANSPORT_DISCONNECTED' });
    await expect(b.next()).rejects.toMatchObject({ code: 'ERR_TRANSPORT_DISCONNECTED' });
  });
});
