/**
 * openPageRelay with real sockets and a stand-in for CRIU: a child process holding CRIU's end as
 * its fd 3 (as swrk and the lazy-pages daemon do) that echoes what it gets and ends after `total`
 * bytes, or reports how its socket ended. Bytes exact both ways, a clean end only from CRIU's side,
 * an early end of the Duplex never passed on (CRIU sees a RST after reset()), no fd left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import type * as net from 'node:net';

import { openPageRelay } from '../../lib';
import { connectLoopbackPair } from '../../lib/migration/process-images';
import { waitUntil } from '../helpers/wait';
import { newFds, openFds } from '../helpers/fds';

const FAKE_CRIU = `
const net = require('node:net');
const total = Number(process.argv[1]);
const s = new net.Socket({ fd: 3, readable: true, writable: true });
let got = 0;
s.on('data', (chunk) => {
  got += chunk.length;
  s.write(chunk);
  if (got >= total) s.end();
});
s.on('end', () => console.log('eof'));
s.on('error', (e) => console.log(e.code));
s.on('close', () => process.exit(0));
`;

const children: ChildProcess[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  }
});

function fakeCriu(fd: number, total: number): { child: ChildProcess; output: Promise<string> } {
  const child = spawn(process.execPath, ['-e', FAKE_CRIU, String(total)], { stdio: ['ignore', 'pipe', 'inherit', fd] });
  children.push(child);
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const output = new Promise<string>((resolve) => child.once('exit', () => resolve(text.trim())));
  return { child, output };
}

async function remotePair(): Promise<{ relayed: net.Socket; remote: net.Socket }> {
  const { peer, client } = await connectLoopbackPair();
  sockets.push(peer, client);
  peer.resume();
  client.resume();
  return { relayed: peer, remote: client };
}

describe('openPageRelay', () => {
  it('copies both ways exactly and ends cleanly when CRIU ends; no fd left', async () => {
    const baseline = openFds();
    const { relayed, remote } = await remotePair();
    const relay = await openPageRelay(relayed);
    const total = 16 * 1024 * 1024;
    const fake = fakeCriu(relay.criuFd, total);
    relay.handOver();
    const data = randomBytes(total);
    const received = createHash('sha256');
    let receivedBytes = 0;
    remote.on('data', (chunk: Buffer) => {
      received.update(chunk);
      receivedBytes += chunk.length;
    });
    const remoteEnded = new Promise((resolve) => remote.once('end', resolve));
    remote.write(data);
    const stats = await relay.done;
    await remoteEnded;
    expect(stats).toEqual({ toCriu: total, fromCriu: total });
    expect(receivedBytes).toBe(total);
    expect(received.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(await fake.output).toBe('eof'); // our close, only after CRIU's own end
    remote.destroy();
    await waitUntil(() => newFds(baseline).length === 0, {
      what: 'the fds to be closed',
      detail: () => newFds(baseline).join(', '),
    });
  });

  it('an early end of the stream is a failure, never passed on: CRIU sees a RST after reset()', async () => {
    const baseline = openFds();
    const { relayed, remote } = await remotePair();
    const relay = await openPageRelay(relayed);
    const fake = fakeCriu(relay.criuFd, 1024 * 1024);
    relay.handOver();
    remote.write(randomBytes(4096));
    await waitUntil(() => relay.stats.fromCriu === 4096, { what: 'the echo' });
    remote.end();
    await expect(relay.done).rejects.toMatchObject({ code: 'ERR_LAZY_PAGES_STREAM_ENDED' });
    // CRIU's side is still open (no EOF reached it) until the owner resets it.
    expect(fake.child.exitCode).toBeNull();
    relay.reset();
    expect(await fake.output).toBe('ECONNRESET');
    relay.reset(); // idempotent
    await waitUntil(() => newFds(baseline).length === 0, {
      what: 'the fds to be closed',
      detail: () => newFds(baseline).join(', '),
    });
  });

  it('an abort and a timeout end it with typed codes', async () => {
    for (const [options, code] of [
      [{ signal: AbortSignal.abort(new Error('stop')) }, 'ABORT_ERR'],
      [{ timeoutMs: 50 }, 'ERR_LAZY_PAGES_TIMEOUT'],
    ] as const) {
      const { relayed } = await remotePair();
      const relay = await openPageRelay(relayed, options);
      await expect(relay.done).rejects.toMatchObject({ code });
      relay.reset();
    }
  });

  it('validates its arguments', async () => {
    await expect(openPageRelay({} as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    const { relayed } = await remotePair();
    await expect(openPageRelay(relayed, { timeoutMs: -1 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(openPageRelay(relayed, { streamEndGraceMs: 1e9 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
  });
});
