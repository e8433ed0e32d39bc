/**
 * The SOCK_SEQPACKET transport (csrc/seqpacket.cc + lib/transport/seqpacket.ts) on real sockets:
 * message boundaries, sizes, SCM_RIGHTS both ways, EOF, queued sends, errors with errno codes,
 * close/GC/worker teardown without leaking fds.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { Worker } from 'node:worker_threads';

import { SeqpacketTransport, TransportError, type TransportMessage } from '../../lib';
import { binding } from '../../lib/native';
import { makeTempDir, removeDir, sleep } from './helpers';
import { newFds, openFds } from '../helpers/fds';

function fdFlags(fd: number): number {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  return parseInt(/flags:\s+([0-7]+)/.exec(info)?.[1] ?? '0', 8);
}
const O_CLOEXEC = 0o2000000;

describe('SeqpacketTransport', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir('transport');
  });
  afterEach(() => removeDir(dir));

  function pair(): [SeqpacketTransport, SeqpacketTransport] {
    const { transport, peerFd } = SeqpacketTransport.pair('test');
    return [transport, new SeqpacketTransport(peerFd, 'peer')];
  }

  it('keeps message boundaries and sizes, in order, both ways', async () => {
    const fds = openFds();
    const [a, b] = pair();
    const sizes = [1, 2, 100, 4096, 65536, 200 * 1024];
    const sent = sizes.map((size, i) => Buffer.alloc(size, i + 1));
    for (const message of sent) a.send(message);
    for (const message of sent) expect((await b.receive()).data.equals(message)).toBe(true);
    b.send(Buffer.from('reply'));
    expect((await a.receive()).data.toString()).toBe('reply');
    a.close();
    b.close();
    expect(newFds(fds)).toEqual([]);
  });

  it('refuses an empty message (indistinguishable from EOF) and an oversized one with EMSGSIZE', async () => {
    const [a, b] = pair();
    expect(() => a.send(Buffer.alloc(0))).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    let error: unknown;
    try {
      a.send(Buffer.alloc(16 * 1024 * 1024));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TransportError);
    expect(error).toMatchObject({ code: 'EMSGSIZE', syscall: 'sendmsg' });
    // Still usable afterwards.
    a.send(Buffer.from('ok'));
    expect((await b.receive()).data.toString()).toBe('ok');
    a.close();
    b.close();
  });

  it('passes fds with SCM_RIGHTS both ways; received fds are close-on-exec and owned by the receiver', async () => {
    const fds = openFds();
    const [a, b] = pair();
    const file = path.join(dir, 'payload');
    fs.writeFileSync(file, 'through the socket');
    const fd = fs.openSync(file, 'r');
    a.send(Buffer.from('one fd'), [fd]);
    b.send(Buffer.from('two fds'), [fd, fd]);
    fs.closeSync(fd);
    const atB = await b.receive();
    const atA = await a.receive();
    expect(atB.fds).toHaveLength(1);
    expect(atA.fds).toHaveLength(2);
    for (const received of [...atB.fds, ...atA.fds]) {
      expect(fdFlags(received) & O_CLOEXEC).toBe(O_CLOEXEC);
      const buffer = Buffer.alloc(64);
      expect(buffer.subarray(0, fs.readSync(received, buffer, 0, 64, 0)).toString()).toBe('through the socket');
      fs.closeSync(received);
    }
    a.close();
    b.close();
    expect(newFds(fds)).toEqual([]);
  });

  it('reports EOF once: receive rejects ERR_TRANSPORT_DISCONNECTED, closed() resolves, the iterator ends', async () => {
    const [a, b] = pair();
    a.send(Buffer.from('last words'));
    a.close();
    const seen: TransportMessage[] = [];
    for await (const message of b) seen.push(message);
    expect(seen.map((m) => m.data.toString())).toEqual(['last words']);
    await expect(b.receive()).rejects.toMatchObject({ code: 'ERR_TRANSPORT_DISCONNECTED' });
    await expect(b.closed()).resolves.toBeUndefined();
    expect(() => b.send(Buffer.from('x'))).toThrow(expect.objectContaining({ code: 'ERR_TRANSPORT_DISCONNECTED' }));
    b.close();
  });

  it('close() is idempotent, fails pending receives and closes fds nobody received', async () => {
    const fds = openFds();
    const [a, b] = pair();
    const pending = a.receive();
    a.close();
    a.close();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_TRANSPORT_CLOSED' });
    expect(() => a.send(Buffer.from('x'))).toThrow(expect.objectContaining({ code: 'ERR_TRANSPORT_CLOSED' }));
    await expect(a.closed()).resolves.toBeUndefined();

    const [c, d] = pair();
    const fd = fs.openSync(path.join(dir, 'x'), 'w');
    c.send(Buffer.from('fd nobody takes'), [fd]);
    fs.closeSync(fd);
    // Let d read it into its queue, then close without receiving: the fd must not leak.
    for (let i = 0; i < 100 && newFds(fds).length < 4; i++) await sleep(5);
    c.close();
    d.close();
    b.close();
    expect(newFds(fds)).toEqual([]);
  });

  it('queues sends that would block and flushes them in order once the peer reads', async () => {
    const { SeqpacketSocket, seqpacketPair } = binding();
    const [ours, theirs] = seqpacketPair();
    const received: Buffer[] = [];
    const sender = new SeqpacketSocket(
      ours,
      () => undefined,
      () => undefined,
    );
    const message = (i: number): Buffer => Buffer.alloc(100 * 1024, i);
    let queued = 0;
    // Nobody reads `theirs` yet: the socket buffer fills and later sends are queued.
    for (let i = 0; i < 40; i++) if (!sender.send(message(i))) queued++;
    expect(queued).toBeGreaterThan(0);
    const receiver = new SeqpacketSocket(
      theirs,
      (data) => received.push(data),
      () => undefined,
    );
    for (let i = 0; i < 500 && received.length < 40; i++) await sleep(5);
    expect(received).toHaveLength(40);
    received.forEach((data, i) => expect(data.equals(message(i))).toBe(true));
    sender.close();
    receiver.close();
  });

  it('connect() errors carry errno codes; a non-SEQPACKET fd is refused', () => {
    expect(() => SeqpacketTransport.connect(path.join(dir, 'absent.sock'))).toThrow(
      expect.objectContaining({ name: 'TransportError', code: 'ENOENT', syscall: 'connect' }),
    );
    expect(() => SeqpacketTransport.connect(`/${'x'.repeat(200)}`)).toThrow(
      expect.objectContaining({ code: 'ENAMETOOLONG' }),
    );
    const fd = fs.openSync(path.join(dir, 'plain'), 'w');
    try {
      expect(() => new SeqpacketTransport(fd)).toThrow(
        expect.objectContaining({ code: 'ENOTSOCK', syscall: 'getsockopt' }),
      );
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a dropped, unref()d socket is freed by the GC and its fd closed', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const fds = openFds();
    (() => {
      for (let i = 0; i < 5; i++) {
        const { transport, peerFd } = SeqpacketTransport.pair('gc');
        fs.closeSync(peerFd);
        transport.unref();
      }
    })();
    for (let i = 0; i < 50 && newFds(fds).length > 0; i++) {
      gc();
      await sleep(10);
    }
    expect(newFds(fds)).toEqual([]);
  });

  it('a worker that exits with sockets still open closes them (env cleanup hook)', async () => {
    const fds = openFds();
    const addon = require('node-gyp-build').path(path.join(__dirname, '..', '..')) as string;
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads');
       const b = require(${JSON.stringify(addon)});
       const sockets = [];
       for (let i = 0; i < 4; i++) {
         const [x, y] = b.seqpacketPair();
         sockets.push(new b.SeqpacketSocket(x, () => {}, () => {}), new b.SeqpacketSocket(y, () => {}, () => {}));
       }
       sockets[0].send(Buffer.from('pending'));
       parentPort.postMessage(sockets.length);`,
      { eval: true },
    );
    const opened = await new Promise<number>((resolve) => worker.once('message', resolve));
    expect(opened).toBe(8);
    expect(newFds(fds).length).toBeGreaterThanOrEqual(8);
    await worker.terminate();
    for (let i = 0; i < 100 && newFds(fds).length > 0; i++) await sleep(10);
    expect(newFds(fds)).toEqual([]);
  });
});
