/**
 * The pure parts of the whole-process route, checked without CRIU: phaul's pre-dump stop rule
 * (pre-dumps cannot run on this kernel: no CONFIG_MEM_SOFT_DIRTY), the stats-dump reader, the
 * failure summary, the image copy, and the page channel's blocking sockets.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { describeFailure, preDumpsAreDone } from '../../../lib/migration/process';
import { copyImages, openPageChannel, readDumpStats, readTreePids } from '../../../lib/migration/process-images';

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

describe('pre-dump stop rule (phaul)', () => {
  it('continues while the copies shrink and stay large', () => {
    expect(preDumpsAreDone(5000, undefined, 64)).toBe(false);
    expect(preDumpsAreDone(800, 5000, 64)).toBe(false);
  });

  it('stops when a copy is small, or no smaller than the one before', () => {
    expect(preDumpsAreDone(63, 800, 64)).toBe(true);
    expect(preDumpsAreDone(800, 800, 64)).toBe(true);
    expect(preDumpsAreDone(900, 800, 64)).toBe(true);
    expect(preDumpsAreDone(10, undefined, 64)).toBe(true);
  });
});

describe('stats-dump reader', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-stats-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads dump_stats_entry from an image laid out like CRIU 4.2 writes it', () => {
    // dump_stats_entry: freezing_time 1, frozen_time 2, pages_scanned 5, pages_written 7 (a
    // 64-bit value over 2^32), plus an unknown field 13 that must be skipped.
    const inner = [
      0x08,
      ...varint(729),
      0x10,
      ...varint(28042),
      0x28,
      ...varint(3184),
      0x38,
      ...varint(2 ** 33 + 5),
      0x68,
      ...varint(1),
    ];
    const entry = [0x0a, ...varint(inner.length), ...inner];
    const header = Buffer.alloc(12);
    header.writeUInt32LE(0x55105940, 0);
    header.writeUInt32LE(0x57093306, 4);
    header.writeUInt32LE(entry.length, 8);
    fs.writeFileSync(path.join(dir, 'stats-dump'), Buffer.concat([header, Buffer.from(entry)]));
    expect(readDumpStats(dir)).toEqual({
      freezingTimeUs: 729,
      frozenTimeUs: 28042,
      pagesScanned: 3184,
      pagesWritten: 2 ** 33 + 5,
    });
  });

  it('returns undefined for a missing, short or corrupt image', () => {
    expect(readDumpStats(dir)).toBeUndefined();
    fs.writeFileSync(path.join(dir, 'stats-dump'), Buffer.alloc(5));
    expect(readDumpStats(dir)).toBeUndefined();
    const header = Buffer.alloc(12);
    header.writeUInt32LE(4, 8);
    fs.writeFileSync(path.join(dir, 'stats-dump'), Buffer.concat([header, Buffer.from([0x0a, 0x05, 0x08, 0xff])]));
    expect(readDumpStats(dir)).toBeUndefined();
  });
});

describe('pstree reader', () => {
  it("lists every task's pid of the dumped tree, and [] when there is no image", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-pstree-'));
    try {
      expect(readTreePids(dir)).toEqual([]);
      // pstree_entry { pid 1, ppid 2, pgid 3, sid 4, threads 5 (repeated) }
      const entry = (pid: number, ppid: number): number[] => [
        0x08,
        ...varint(pid),
        0x10,
        ...varint(ppid),
        0x18,
        ...varint(pid),
        0x20,
        ...varint(pid),
        0x28,
        ...varint(pid),
        0x28,
        ...varint(pid + 1),
      ];
      const chunks = [Buffer.from([0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50])];
      for (const e of [entry(3679, 0), entry(40000, 3679)]) {
        const length = Buffer.alloc(4);
        length.writeUInt32LE(e.length, 0);
        chunks.push(length, Buffer.from(e));
      }
      fs.writeFileSync(path.join(dir, 'pstree.img'), Buffer.concat(chunks));
      expect(readTreePids(dir)).toEqual([3679, 40000]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('describeFailure', () => {
  it("prefers the log's last errors over CRIU's first (the harmless RLIMIT_NOFILE line)", () => {
    const error = Object.assign(
      new Error("CRIU RESTORE failed; Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE"),
      {
        logFile: '/x/criu-restore.log',
        logTail: [
          "(00.08) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
          "(00.09)  123: Error (soccr/soccr.c:529): Can't connect inet socket back: Cannot assign requested address",
          '(00.10) Error (criu/cr-restore.c:2331): Restoring FAILED.',
        ].join('\n'),
      },
    );
    expect(describeFailure(error)).toBe(
      "123: Error (soccr/soccr.c:529): Can't connect inet socket back: Cannot assign requested address / Error (criu/cr-restore.c:2331): Restoring FAILED. (log: /x/criu-restore.log)",
    );
    expect(describeFailure(new Error('plain'))).toBe('plain');
  });
});

describe('image copy and page channel', () => {
  it('copies only what the target lacks', async () => {
    const from = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-copy-'));
    const to = path.join(from, 'to');
    try {
      for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(from, `tcp-stream-${i}.img`), Buffer.alloc(i + 1, i));
      fs.mkdirSync(to);
      fs.writeFileSync(path.join(to, 'tcp-stream-0.img'), 'kept');
      expect(await copyImages(from, to)).toBe(Array.from({ length: 39 }, (_, i) => i + 2).reduce((a, b) => a + b, 0));
      expect(fs.readFileSync(path.join(to, 'tcp-stream-0.img'), 'utf8')).toBe('kept');
      expect(fs.readFileSync(path.join(to, 'tcp-stream-39.img'))).toEqual(Buffer.alloc(40, 39));
    } finally {
      fs.rmSync(from, { recursive: true, force: true });
    }
  });

  it('hands out two connected, blocking loopback sockets and closes our copies', async () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const channel = await openPageChannel();
    const flags = (fd: number): number =>
      parseInt(/^flags:\s+(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? 'x', 8);
    expect(flags(channel.serverFd) & fs.constants.O_NONBLOCK).toBe(0);
    expect(flags(channel.clientFd) & fs.constants.O_NONBLOCK).toBe(0);
    fs.writeSync(channel.clientFd, 'pages');
    const buffer = Buffer.alloc(5);
    expect(fs.readSync(channel.serverFd, buffer)).toBe(5);
    expect(buffer.toString()).toBe('pages');
    channel.close();
    channel.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });

  it('a stranger that connects to the port first is closed unread and gets nothing; our pair still works', async () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const strangerGot: Buffer[] = [];
    let stranger: net.Socket | undefined;
    let strangerClosed: Promise<void> | undefined;
    // The stranger connects as soon as the listener has its port, before openPageChannel's own end.
    // The module object itself: the import's namespace object has read-only bindings.
    const netModule = jest.requireActual<typeof net>('node:net');
    const createServer = netModule.createServer;
    const spy = jest.spyOn(netModule, 'createServer').mockImplementation(((
      ...args: Parameters<typeof createServer>
    ) => {
      const server = createServer(...args);
      server.once('listening', () => {
        const socket = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
        socket.on('data', (d: Buffer) => strangerGot.push(d));
        socket.on('error', () => {});
        strangerClosed = new Promise((resolve) => socket.once('close', () => resolve()));
        socket.write('stranger bytes');
        stranger = socket;
      });
      return server;
    }) as typeof createServer);
    let channel;
    try {
      channel = await openPageChannel();
    } finally {
      spy.mockRestore();
    }
    try {
      expect(stranger).toBeDefined();
      await strangerClosed;
      expect(strangerGot).toEqual([]);
      fs.writeSync(channel.clientFd, 'pages');
      const buffer = Buffer.alloc(5);
      expect(fs.readSync(channel.serverFd, buffer)).toBe(5);
      expect(buffer.toString()).toBe('pages');
    } finally {
      channel.close();
      stranger?.destroy();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });
});
