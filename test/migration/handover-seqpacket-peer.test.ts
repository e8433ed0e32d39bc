/**
 * The SEQPACKET handover channel against a peer that breaks the protocol on purpose, speaking raw
 * frames over the transport: fds on messages that carry none are closed at once, and continued
 * frames that never end fail the channel once they add up to more than the message bound, keeping
 * nothing. The receiving end checks its peer's uid (SO_PEERCRED) like the connecting end.
 */
import * as fs from 'node:fs';

import { SeqpacketHandoverChannel } from '../../lib/migration/handover-channel';
import { channelOver } from '../../lib/migration/handover-connect';
import { MessageType, encodeConnection, encodeHeader } from '../../lib/migration/handover-messages';
import { SeqpacketTransport } from '../../lib/transport';
import { newFds, openFds } from '../helpers/fds';

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
  const fds = openFds();
  const { channel, raw } = channelAndRawPeer();
  const file = fs.openSync('/dev/null', 'r');
  try {
    const before = openFds();
    raw.send(frame(MessageType.HELLO, 0, Buffer.from('{}')), [file, file, file]);
    const hello = await channel.expect([MessageType.HELLO]);
    expect(hello.fds).toEqual([]);
    expect(newFds(before)).toEqual([]);

    // A CONNECTION_FD keeps the fd of its first frame; fds on a continuation are closed.
    const body = encodeConnection(Buffer.from('a'), Buffer.from('b'));
    raw.send(frame(MessageType.CONNECTION_FD, 7, body.subarray(0, 9), true), [file]);
    raw.send(frame(MessageType.CONNECTION_FD, 7, body.subarray(9)), [file, file]);
    const connection = await channel.expect([MessageType.CONNECTION_FD]);
    expect(connection.payload.equals(body)).toBe(true);
    expect(connection.fds).toHaveLength(1);
    expect(newFds(before)).toHaveLength(1);
    connection.fds.forEach((fd) => fs.closeSync(fd));
  } finally {
    fs.closeSync(file);
    channel.close();
    raw.close();
  }
  expect(newFds(fds)).toEqual([]);
});

it('endless continuation frames: the channel fails with ERR_HANDOVER_PROTOCOL past the bound, closes, keeps nothing', async () => {
  const fds = openFds();
  const { channel, raw } = channelAndRawPeer();
  const file = fs.openSync('/dev/null', 'r');
  const failed = channel.expect([MessageType.HELLO]);
  failed.catch(() => {});
  try {
    const body = Buffer.alloc(FRAGMENT - 16, 0x61);
    raw.send(frame(MessageType.HELLO, 1, body, true), [file]);
    let sent = 0;
    // Sends until the channel gives up (a channel without a bound would take them forever), one
    // per loop turn: the socket buffer holds only a few frames, the rest would queue here.
    while (channel.failed === undefined) {
      try {
        raw.send(frame(MessageType.HELLO, 1, body, true));
      } catch {
        break; // the channel closed its end
      }
      sent += 1;
      await new Promise((resolve) => setImmediate(resolve));
      if (sent > 4096) throw new Error(`still accepting frames after ${sent} of them`);
    }
    await expect(failed).rejects.toMatchObject({ code: 'ERR_HANDOVER_PROTOCOL' });
    expect(channel.failed?.message).toMatch(/HELLO of more than/);
    // The channel closed its end: the raw peer sees EOF.
    await expect(raw.closed()).resolves.toBeUndefined();
  } finally {
    fs.closeSync(file);
    channel.close();
    raw.close();
  }
  // The fd that came with the first frame was closed at once.
  expect(newFds(fds)).toEqual([]);
}, 120000);

it('a SEQPACKET end of ours (or root) is accepted; the check runs where the channel is taken', () => {
  const { transport, peerFd } = SeqpacketTransport.pair('test');
  const peer = new SeqpacketTransport(peerFd, 'peer');
  try {
    expect(transport.peerCredentials().uid).toBe(process.geteuid?.());
    const channel = channelOver(transport, 'test');
    expect(channel.canPassFds).toBe(true);
    channel.close();
  } finally {
    transport.close();
    peer.close();
  }
});
