/** Helpers for the libsoccr tests: loopback pairs, child processes over IPC, fd and repair checks. */
import { execFileSync, fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { soccr } from '../../lib';
import { TransferableEndpoint } from '../fixtures/transferable-endpoint';
import { PatternStream } from '../fixtures/traffic';
import { addressBytes } from '../../lib/soccr/address';

export type PairKind = 4 | 6 | 'mapped';

export interface TcpPair {
  server: net.Server;
  /** The connecting side. */
  client: net.Socket;
  /** The accepted side. */
  accepted: net.Socket;
  close(): Promise<void>;
}

/** A loopback connection. 'mapped': dual-stack listener, IPv4 client: the accepted side is AF_INET6 ::ffff:127.0.0.1. */
export async function tcpPair(kind: PairKind = 4, options: { allowHalfOpen?: boolean } = {}): Promise<TcpPair> {
  const allowHalfOpen = options.allowHalfOpen ?? false;
  const server = net.createServer({ allowHalfOpen });
  const listenHost = kind === 4 ? '127.0.0.1' : kind === 6 ? '::1' : '::';
  await new Promise<void>((resolve) => server.listen(0, listenHost, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ port, host: kind === 6 ? '::1' : '127.0.0.1', allowHalfOpen });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  const acceptedSocket = await accepted;
  return {
    server,
    client,
    accepted: acceptedSocket,
    async close() {
      client.destroy();
      acceptedSocket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Bytes in the kernel receive queue of a connected socket (ss's Recv-Q; -1 if not found). */
export function kernelRecvQueue(socket: net.Socket): number {
  return kernelRecvQueueBetween(
    { address: socket.localAddress as string, port: socket.localPort as number },
    { address: socket.remoteAddress as string, port: socket.remotePort as number },
  );
}

/** The same for a connection known by its two ends (a raw fd that has no net.Socket). */
export function kernelRecvQueueBetween(
  localEnd: { address: string; port: number },
  remoteEnd: { address: string; port: number },
): number {
  const local = `[${localEnd.address}]:${localEnd.port}`;
  const remote = `[${remoteEnd.address}]:${remoteEnd.port}`;
  const out = execFileSync('ss', ['-Htn', 'state', 'established', 'src', local, 'dst', remote], { encoding: 'utf8' });
  const first = out.trim().split(/\s+/)[0];
  return first === undefined || first === '' ? -1 : Number(first);
}

export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** fds of this process that are TCP sockets in repair mode (there must be none after a test). */
export function fdsInRepairMode(): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${name}`);
    } catch {
      continue;
    }
    if (!target.startsWith('socket:')) continue;
    try {
      if (soccr.isInRepairMode(fd)) found.push(fd);
    } catch {
      // not TCP
    }
  }
  return found;
}

/** A fixture process driven by request/reply over IPC. */
export class Child {
  readonly process: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }
  >();

  constructor(proc: ChildProcess) {
    this.process = proc;
    proc.on('message', (msg: { id: number; error?: string }) => {
      const waiter = this.pending.get(msg.id);
      if (!waiter) return;
      this.pending.delete(msg.id);
      if (msg.error) waiter.reject(new Error(`child: ${msg.error}`));
      else waiter.resolve(msg as Record<string, unknown>);
    });
    proc.on('exit', (code, signal) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`child exited (${code ?? signal})`));
      this.pending.clear();
    });
  }

  static fork(fixture: string, options: { uid?: number; gid?: number } = {}): Child {
    return new Child(
      fork(path.join(__dirname, '..', 'fixtures', fixture), [], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        ...options,
      }),
    );
  }

  request<T = Record<string, unknown>>(msg: Record<string, unknown>): Promise<T> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: Record<string, unknown>) => void, reject });
      this.process.send({ ...msg, id });
    });
  }

  async stop(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.process.kill('SIGKILL');
    await exited;
  }
}

/** Connects a new socket created inside `netnsPath` and hands it to a net.Socket once established. */
export async function connectFromNetns(
  netnsPath: string,
  family: 4 | 6,
  address: string,
  port: number,
): Promise<net.Socket> {
  const fd = soccr.createTcpSocket(family, { netns: netnsPath });
  try {
    const { binding } = await import('../../lib/native');
    const ops = binding().socketOps;
    const bytes = addressBytes(family, address);
    if (!bytes) throw new Error(`connectFromNetns: not an IPv${family} address: ${address}`);
    ops.connect(fd, { family, address: new Uint8Array(bytes), port });
    for (let i = 0; i < 2000; i++) {
      const info = ops.socketInfo(fd);
      if (info.pendingError !== 0) throw new Error(`connect failed: errno ${info.pendingError}`);
      if (info.tcpState === 1) return soccr.adoptSocket(fd);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error('connect timed out');
  } catch (error) {
    soccr.closeFd(fd);
    throw error;
  }
}

/**
 * The moved side of a connection, continuing where `sent` (its send pattern, already written up
 * to sent.offset) left off, and expecting the peer's `recvSeed` pattern from its first byte.
 */
export function continuingEndpoint(
  sent: PatternStream,
  seeds: { send: number; recv: number },
  total: number,
): TransferableEndpoint {
  return new TransferableEndpoint({
    sendSeed: seeds.send,
    recvSeed: seeds.recv,
    state: {
      total,
      send: sent.saved(),
      recv: new PatternStream(seeds.recv).saved(),
      mismatchAt: -1,
      resets: 0,
      errors: [],
    },
  });
}
