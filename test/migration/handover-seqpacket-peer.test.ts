/**
 * The SEQPACKET handover channel against a peer that breaks the protocol on purpose, speaking raw
 * frames over the transport: fds on messages that carry none are closed at once, and fragments
 * that never end fail the channel once they add up to more than the frame bound, keeping nothing.
 */
import * as fs from 'node:fs';

import { encodeHeader, MessageType, SeqpacketHandoverChannel } from '../../lib/migration/handover-channel';
import { SeqpacketTransport } from '../../lib/transport';

const fdCount = (): number => fs.readdirSync('/proc/self/fd').length;
const FLAG_MORE = 1;
const FRAGMENT = 64 * 1024;

function frame(type: MessageType, id: number, body: Buffer, more = false): Buffer {
  return Buffer.concat([encodeHeader(type, id, body.length, more ? FLAG_MORE : 0), body]);
}

function channelAndRawPeer(): { channel: SeqpacketHandoverChannel; raw: SeqpacketTransport } {
  const { transport, peerFd } = SeqpacketTransport.pair('test');
  return { channel: new SeqpacketHandoverChannel(transport), raw: new SeqpacketTransport(peerFd, 'raw peer') };
}

it('fds sent with messages that carry none (HELLO, later fragments of CONNECTION_FD) are closed at once', async () => {
  const fds = fdCount();
  const { channel, raw } = channelAndRawPeer();
  const file = fs.openSync('/dev/null', 'r');
  try {
    const before = fdCount();
    raw.send(frame(MessageType.HELLO, 0, Buffer.from('{}')), [file, file, file]);
    const hello = await channel.receive();
    expect(hello.type).toBe(MessageType.HELLO);
    expect(hello.fds).toEqual([]);
    expect(fdCount()).toBe(before);

    // A CONNECTION_FD keeps the fd of its first fragment; fds on a later fragment are closed.
    raw.send(frame(MessageType.CONNECTION_FD, 7, Buffer.from('a'), true), [file]);
    raw.send(frame(MessageType.CONNECTION_FD, 7, Buffer.from('b')), [file, file]);
    const connection = await channel.receive();
    expect(connection.payload.toString()).toBe('ab');
    expect(connection.fds).toHaveLength(1);
    expect(fdCount()).toBe(before + 1);
    connection.fds.forEach((fd) => fs.closeSync(fd));
  } finally {
    fs.closeSync(file);
    channel.close();
    raw.close();
  }
  expect(fdCount()).toBe(fds);
});

it('endless fragments: the channel fails with ERR_HANDOVER_PROTOCOL past the bound, closes, keeps nothing', async () => {
  const fds = fdCount();
  const { channel, raw } = channelAndRawPeer();
  const file = fs.openSync('/dev/null', 'r');
  const failed = channel.receive();
  failed.catch(() => {});
  try {
    const body = Buffer.alloc(FRAGMENT - 16, 0x61);
    raw.send(frame(MessageType.CONNECTION_FD, 1, body, true), [file]);
    let sent = 0;
    // Sends until the channel gives up (a channel without a bound would take them forever), one
    // per loop turn: the socket buffer holds only a few fragments, the rest would queue here.
    while (channel.failed === undefined) {
      try {
        raw.send(frame(MessageType.CONNECTION_FD, 1, body, true));
      } catch {
        break; // the channel closed its end
      }
      sent += 1;
      await new Promise((resolve) => setImmediate(resolve));
      if (sent > 2 * 4096) throw new Error(`still accepting fragments after ${sent} of them`);
    }
    await expect(failed).rejects.toMatchObject({ code: 'ERR_HANDOVER_PROTOCOL' });
    expect(channel.failed?.message).toMatch(/fragments add up to more than/);
    // The channel closed its end: the raw peer sees EOF.
    await expect(raw.closed()).resolves.toBeUndefined();
  } finally {
    fs.closeSync(file);
    channel.close();
    raw.close();
  }
  // The fd that came with the first fragment was closed with the partial message.
  expect(fdCount()).toBe(fds);
}, 120000);
