/**
 * The images side of the whole-process route: the directory layout, CRIU's stats-dump image,
 * copying a dump to the target's directory, and the connected TCP pair that carries pages from
 * the dumping CRIU to the target's page server.
 *
 * Layout under imagesDir (0700): source/pre-N and source/dump are what the source side writes;
 * target/pre-N and target/dump what the target side has (copied, or received by its page server).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { NodeCriuError } from '../errors';
import { ensurePrivateDirectory } from '../security';
import { findExecutable, run } from '../sys/exec';

export interface ImagesLayout {
  root: string;
  source: string;
  target: string;
}

export function prepareLayout(imagesDir: string): ImagesLayout {
  // Created 0700; an existing group/world-writable or foreign directory is refused (ERR_UNSAFE_DIRECTORY).
  const root = ensurePrivateDirectory(imagesDir, 'imagesDir');
  const layout = { root, source: path.join(root, 'source'), target: path.join(root, 'target') };
  for (const dir of [layout.source, layout.target]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return layout;
}

/** A fresh, empty 0700 directory (an earlier run's files would mix into a new dump). */
export function freshDir(dir: string): string {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** CRIU's dump statistics (stats.proto dump_stats_entry); times in microseconds. */
export interface CriuDumpStats {
  freezingTimeUs?: number;
  frozenTimeUs?: number;
  memdumpTimeUs?: number;
  memwriteTimeUs?: number;
  pagesScanned?: number;
  pagesSkippedParent?: number;
  pagesWritten?: number;
  /** Time spent resolving inotify/fanotify watches to paths (irmap). */
  irmapResolveUs?: number;
  pagesLazy?: number;
}

/** CRIU's restore statistics (stats.proto restore_stats_entry); times in microseconds. */
export interface CriuRestoreStats {
  pagesCompared?: number;
  pagesSkippedCow?: number;
  forkingTimeUs?: number;
  restoreTimeUs?: number;
  pagesRestored?: number;
}

const DUMP_STATS_FIELDS: Record<number, keyof CriuDumpStats> = {
  1: 'freezingTimeUs',
  2: 'frozenTimeUs',
  3: 'memdumpTimeUs',
  4: 'memwriteTimeUs',
  5: 'pagesScanned',
  6: 'pagesSkippedParent',
  7: 'pagesWritten',
  8: 'irmapResolveUs',
  9: 'pagesLazy',
};

const RESTORE_STATS_FIELDS: Record<number, keyof CriuRestoreStats> = {
  1: 'pagesCompared',
  2: 'pagesSkippedCow',
  3: 'forkingTimeUs',
  4: 'restoreTimeUs',
  5: 'pagesRestored',
};

/** A CRIU image this file reads is not what it expects (callers treat those images as best effort). */
function imageInvalid(what: string): NodeCriuError {
  return new NodeCriuError(`unexpected CRIU image content: ${what}`, { code: 'ERR_CRIU_IMAGE_INVALID' });
}

/** Minimal protobuf reader: enough for stats_entry (varints and one nested message). */
function readVarint(buf: Buffer, at: { pos: number }): number {
  let result = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (at.pos >= buf.length) throw imageInvalid('truncated varint');
    const byte = buf[at.pos++];
    result += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return result;
    scale *= 128;
  }
  throw imageInvalid('varint too long');
}

function skipField(buf: Buffer, wire: number, at: { pos: number }): void {
  if (wire === 0) readVarint(buf, at);
  else if (wire === 1) at.pos += 8;
  else if (wire === 5) at.pos += 4;
  else if (wire === 2) at.pos += readVarint(buf, at);
  else throw imageInvalid(`wire type ${wire}`);
}

/**
 * Reads `<dir>/stats-dump` (two u32 magics, a u32 length, then stats_entry{1: dump_stats_entry});
 * undefined when it is missing or not what we expect (statistics are best effort).
 */
export function readDumpStats(dir: string): CriuDumpStats | undefined {
  return readStats<CriuDumpStats>(path.join(dir, 'stats-dump'), 1, DUMP_STATS_FIELDS);
}

/** Reads `<dir>/stats-restore` (stats_entry{2: restore_stats_entry}), as readDumpStats. */
export function readRestoreStats(dir: string): CriuRestoreStats | undefined {
  return readStats<CriuRestoreStats>(path.join(dir, 'stats-restore'), 2, RESTORE_STATS_FIELDS);
}

function readStats<T extends object>(file: string, field: number, names: Record<number, keyof T>): T | undefined {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  try {
    if (buf.length < 12) return undefined;
    const length = buf.readUInt32LE(8);
    const entry = buf.subarray(12, 12 + length);
    const at = { pos: 0 };
    while (at.pos < entry.length) {
      const key = readVarint(entry, at);
      if (key >>> 3 === field && (key & 7) === 2) {
        const size = readVarint(entry, at);
        const inner = entry.subarray(at.pos, at.pos + size);
        const stats: Record<string, number> = {};
        const ia = { pos: 0 };
        while (ia.pos < inner.length) {
          const k = readVarint(inner, ia);
          const name = names[k >>> 3];
          if (name !== undefined && (k & 7) === 0) stats[name as string] = readVarint(inner, ia);
          else skipField(inner, k & 7, ia);
        }
        return stats as T;
      }
      skipField(entry, key & 7, at);
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** The dumped tree: each task's pid, and every thread id CRIU will recreate (the pids included). */
export interface TreeTasks {
  pids: number[];
  tids: number[];
}

/**
 * The tasks of the dumped tree, from `<dir>/pstree.img` (an 8-byte header, then u32-length
 * prefixed pstree_entry messages: field 1 the pid, field 5 the thread ids, repeated, packed or
 * not); empty lists when unreadable. CRIU restores every thread with its original id (clone3
 * set_tid), so a restore fails ("Unable to create a thread: -17") while any of them is taken.
 */
export function readTreeTasks(dir: string): TreeTasks {
  const tasks: TreeTasks = { pids: [], tids: [] };
  let buf: Buffer;
  try {
    buf = fs.readFileSync(path.join(dir, 'pstree.img'));
  } catch {
    return tasks;
  }
  try {
    for (let pos = 8; pos + 4 <= buf.length;) {
      const length = buf.readUInt32LE(pos);
      const entry = buf.subarray(pos + 4, pos + 4 + length);
      pos += 4 + length;
      const at = { pos: 0 };
      while (at.pos < entry.length) {
        const key = readVarint(entry, at);
        if (key === 0x08) tasks.pids.push(readVarint(entry, at));
        else if (key === 0x28) tasks.tids.push(readVarint(entry, at));
        else if (key === 0x2a) {
          const end = readVarint(entry, at) + at.pos;
          while (at.pos < end) tasks.tids.push(readVarint(entry, at));
        } else skipField(entry, key & 7, at);
      }
    }
  } catch {
    // what was read so far
  }
  tasks.tids = [...new Set([...tasks.pids, ...tasks.tids])];
  return tasks;
}

/** The pids of the dumped tree (see readTreeTasks); [] when unreadable. */
export function readTreePids(dir: string): number[] {
  return readTreeTasks(dir).pids;
}

/** Total size of the pages-*.img files in `dir` (what a dump or pre-dump copied). */
export function pagesBytes(dir: string): number {
  let total = 0;
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith('pages-') && name.endsWith('.img')) total += fs.statSync(path.join(dir, name)).size;
  }
  return total;
}

/**
 * Gives `to` every regular file of `from` it does not have yet (the page server already wrote
 * pagemap/pages there): a hard link where both are on one filesystem (one machine: CRIU only
 * reads images, so both directories may share them), else a copy. A dump has one tcp-stream
 * image per connection, so files go a few at a time. Returns their bytes.
 */
export async function copyImages(from: string, to: string): Promise<number> {
  fs.mkdirSync(to, { recursive: true, mode: 0o700 });
  const names = fs
    .readdirSync(from, { withFileTypes: true })
    .filter((entry) => entry.isFile() && !fs.existsSync(path.join(to, entry.name)))
    .map((entry) => entry.name);
  let bytes = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < names.length) {
      const name = names[next++];
      await fs.promises.link(path.join(from, name), path.join(to, name)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'EXDEV' && error.code !== 'EPERM') throw error;
        return fs.promises.copyFile(path.join(from, name), path.join(to, name));
      });
      const { size } = await fs.promises.stat(path.join(to, name));
      bytes += size;
    }
  };
  await Promise.all(Array.from({ length: Math.min(16, names.length) }, worker));
  return bytes;
}

/**
 * A connected TCP pair on our own loopback, both ends idle (never read by Node), for CRIU's
 * ps.fd: the target's page server gets one end, the dumping CRIU the other, wherever their
 * network namespaces are (a socket keeps the namespace it was created in). On separate hosts this
 * would be a TCP connection between them; here it also needs no route between the namespaces.
 */
export interface PageChannel {
  serverFd: number;
  clientFd: number;
  /**
   * Closes our copy of the page server's end, once the page server has its own: while we hold
   * it, a page server that dies leaves the connection open and the dumping CRIU (with the task
   * frozen) blocks on it forever. Idempotent.
   */
  closeServerEnd(): void;
  /** Closes our copies of both ends (the CRIU processes keep theirs). Idempotent. */
  close(): void;
}

function handleFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0)
    throw new NodeCriuError('the page channel socket has no fd (closed)', { code: 'ERR_SOCKET_DESTROYED' });
  return fd;
}

/**
 * Clears O_NONBLOCK on `fd`'s open file description. CRIU's page transfer expects a blocking
 * socket (with libuv's non-blocking one it fails with EAGAIN), and Node has no fcntl: libuv makes
 * a child's stdin blocking before exec, and the flag lives in the description we share with it.
 */
async function makeBlocking(fd: number): Promise<void> {
  const trueCommand = findExecutable('true', ['/usr/bin', '/bin']);
  if (trueCommand !== undefined) await run(trueCommand, [], { stdinFd: fd, timeoutMs: 10000 });
  else await run(process.execPath, ['-e', ''], { stdinFd: fd, timeoutMs: 10000 });
}

/**
 * Watches `server` from the moment it listens: anyone on the host can connect to a loopback
 * port, so connections are held (paused, unread) until our own client has connected, then the one
 * whose far end is that client is kept and every other one is destroyed, unread and unwritten.
 * A TCP 4-tuple names one connection only, so the accepted socket's remote port equal to our
 * client's local port identifies our own end (SO_PEERCRED does not exist for TCP). The handler
 * stays on until the listener closes, so late strangers are destroyed too.
 */
function ownPeerAcceptor(server: net.Server): (client: net.Socket) => Promise<net.Socket> {
  const pending: net.Socket[] = [];
  let match: ((socket: net.Socket) => boolean) | undefined;
  let onMatch: ((socket: net.Socket) => void) | undefined;
  const settle = (): void => {
    if (match === undefined) return;
    for (const socket of pending.splice(0)) {
      if (onMatch !== undefined && match(socket)) {
        onMatch(socket);
        onMatch = undefined;
      } else {
        socket.destroy();
      }
    }
  };
  server.on('connection', (socket: net.Socket) => {
    socket.on('error', () => {}); // a stranger's reset is no error of ours
    pending.push(socket);
    settle();
  });
  return (client) =>
    new Promise((resolve, reject) => {
      onMatch = resolve;
      client.once('connect', () => {
        match = (socket) => socket.remoteAddress === '127.0.0.1' && socket.remotePort === client.localPort;
        settle();
      });
      client.once('error', (error) => {
        match = () => false; // nothing is ours: destroy whatever came and comes until the close
        settle();
        reject(error);
      });
    });
}

/**
 * A connected TCP pair on our own loopback (see ownPeerAcceptor), both ends paused and unread:
 * `peer` is the accepted end, `client` the connecting one. The caller owns both.
 */
export async function connectLoopbackPair(): Promise<{ peer: net.Socket; client: net.Socket }> {
  const server = net.createServer({ pauseOnConnect: true });
  const acceptOwnPeer = ownPeerAcceptor(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  let client: net.Socket | undefined;
  try {
    client = net.connect({ port, host: '127.0.0.1' });
    client.pause();
    return { peer: await acceptOwnPeer(client), client };
  } catch (error) {
    client?.destroy();
    throw error;
  } finally {
    server.close();
  }
}

/** The fd of a connected socket's handle, made blocking for CRIU (it shares the description). */
export async function blockingFdOf(socket: net.Socket): Promise<number> {
  const fd = handleFd(socket);
  await makeBlocking(fd);
  return fd;
}

export async function openPageChannel(): Promise<PageChannel> {
  const { peer, client } = await connectLoopbackPair();
  let serverFd: number;
  let clientFd: number;
  try {
    serverFd = await blockingFdOf(peer);
    clientFd = await blockingFdOf(client);
  } catch (error) {
    peer.destroy();
    client.destroy();
    throw error;
  }
  // destroy() closes our fd only (no shutdown), so the copies CRIU holds stay connected.
  return {
    serverFd,
    clientFd,
    closeServerEnd: () => {
      if (!peer.destroyed) peer.destroy();
    },
    close: () => {
      if (!peer.destroyed) peer.destroy();
      if (!client.destroyed) client.destroy();
    },
  };
}
