/**
 * The demo's TCP server (run as `node dist/demo/server-main.js '<json config>'`): keeps
 * per-connection state (demo/traffic.ts), streams to every client at a steady pace and checks
 * every byte it receives. Roles:
 *   standalone  the whole process migrates with CRIU; driven by signals (SIGUSR1: stop sending,
 *               SIGUSR2: write <statusDir>/report.json) since it must hold no connection to us
 *   source      hands its connections over ('repair' to a target over TCP, or 'fd' to a successor
 *               it spawns with a SEQPACKET pair), then exits; driven over the control socket
 *   target      takes connections over (TCP listen, or the inherited SEQPACKET fd 3), then serves
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { ControlLink } from './control';
import { DemoError } from './errors';
import { clientSeed, PatternStream, RESET_CODES, serverSeed } from './traffic';
import type { ServerConnectionReport, ServerConnectionState } from './traffic';

export interface ServerConfig {
  role: 'standalone' | 'source' | 'target';
  vip: string;
  port: number;
  paceBytes: number;
  paceMs: number;
  statusDir: string;
  control?: string;
  /** target: where to listen for the source's control channel (one host, unix socket). */
  handoverListen?: { path: string };
  /** target: register with the migration agent at this socket instead (two hosts, through the agent). */
  agentSocket?: string;
  /** target: an inherited SEQPACKET fd to take the handover from. */
  channelFd?: number;
}

interface Connection {
  socket: net.Socket | null;
  send: PatternStream;
  recv: PatternStream;
  state: ServerConnectionState;
  onData: (data: Buffer) => void;
  onEnd: () => void;
}

const config = JSON.parse(process.argv[2] ?? '{}') as ServerConfig;
const connections = new Map<number, Connection>();
let stopped = false;
let listener: net.Server | undefined;

function attach(socket: net.Socket, state: ServerConnectionState): void {
  const conn: Connection = {
    socket,
    send: new PatternStream(serverSeed(state.port), state.send),
    recv: new PatternStream(clientSeed(state.port), state.recv),
    state,
    onData: (data) => {
      const offset = conn.recv.offset;
      const expected = conn.recv.next(data.length);
      if (conn.state.mismatchAt < 0 && !expected.equals(data)) {
        let i = 0;
        while (expected[i] === data[i]) i++;
        conn.state.mismatchAt = offset + i;
      }
    },
    onEnd: () => {
      conn.state.ended = true;
      socket.end();
    },
  };
  connections.set(state.port, conn);
  socket.on('data', conn.onData);
  socket.on('end', conn.onEnd);
  socket.on('error', (error: NodeJS.ErrnoException) => {
    conn.state.errors.push(error.code ?? error.message);
    if (RESET_CODES.has(error.code ?? '')) conn.state.resets++;
  });
  if (socket.destroyed) conn.state.ended = true;
  socket.resume();
}

function freshState(port: number): ServerConnectionState {
  return {
    port,
    send: { state: serverSeed(port), offset: 0 },
    recv: { state: clientSeed(port), offset: 0 },
    mismatchAt: -1,
    ended: false,
    resets: 0,
    errors: [],
  };
}

/** serializeState: the application lets go of the socket and returns its state for it. */
function detach(socket: net.Socket): Buffer {
  const port = socket.remotePort as number;
  const conn = connections.get(port);
  if (!conn) return Buffer.from(JSON.stringify(freshState(port)));
  socket.pause();
  socket.off('data', conn.onData);
  socket.off('end', conn.onEnd);
  conn.socket = null;
  connections.delete(port);
  conn.state.send = conn.send.saved();
  conn.state.recv = conn.recv.saved();
  return Buffer.from(JSON.stringify(conn.state));
}

function adopt(socket: net.Socket, state: Buffer): void {
  attach(socket, JSON.parse(state.toString('utf8')) as ServerConnectionState);
}

function reports(): ServerConnectionReport[] {
  return [...connections.values()].map((c) => ({
    port: c.state.port,
    sentBytes: c.send.offset,
    receivedBytes: c.recv.offset,
    mismatchAt: c.state.mismatchAt,
    ended: c.state.ended,
    resets: c.state.resets,
    errors: c.state.errors,
  }));
}

setInterval(() => {
  if (stopped) return;
  for (const conn of connections.values()) {
    const socket = conn.socket;
    if (!socket || socket.destroyed || conn.state.ended || socket.writableLength > 65536) continue;
    socket.write(conn.send.next(config.paceBytes));
  }
}, config.paceMs);

function listen(): Promise<void> {
  listener = net.createServer((socket) => attach(socket, freshState(socket.remotePort as number)));
  listener.maxConnections = 100000;
  return new Promise((resolve, reject) => {
    listener?.once('error', reject);
    listener?.listen({ host: config.vip, port: config.port, backlog: 4096 }, () => resolve());
  });
}

function writeAtomic(name: string, text: string): void {
  const file = path.join(config.statusDir, name);
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

async function handOver(link: ControlLink, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  // Loaded only here: the standalone (CRIU-migrated) server never maps the addon.

  const { handOverConnections } = require('../migration/connections') as typeof import('../migration/connections');

  const { SeqpacketTransport } = require('../transport/seqpacket') as typeof import('../transport/seqpacket');
  const method = body.method as 'repair' | 'fd';
  // Stop accepting (close's callback would wait for every connection to end: don't wait for it).
  listener?.close();
  listener = undefined;
  let to: import('../migration/connections').HandoverChannelSpec;
  if (method === 'fd') {
    // Same host: our successor inherits one end of a SEQPACKET pair as its fd 3.
    const { transport, peerFd } = SeqpacketTransport.pair('handover');
    const successor = spawn(
      process.execPath,
      [__filename, JSON.stringify({ ...config, role: 'target', channelFd: 3 })],
      {
        stdio: ['ignore', 'ignore', 'ignore', peerFd],
        detached: true,
      },
    );
    fs.closeSync(peerFd);
    successor.unref();
    to = transport;
  } else {
    const spec = body.to as { path: string } | { host: string; port: number; tlsFiles: Record<string, string> };
    to =
      'tlsFiles' in spec
        ? {
            host: spec.host,
            port: spec.port,
            tls: {
              cert: fs.readFileSync(spec.tlsFiles.cert, 'utf8'),
              key: fs.readFileSync(spec.tlsFiles.key, 'utf8'),
              ca: fs.readFileSync(spec.tlsFiles.ca, 'utf8'),
            },
          }
        : spec;
  }
  const sockets = [...connections.values()]
    .map((c) => c.socket)
    .filter((s): s is net.Socket => s !== null && !s.destroyed);
  try {
    const result = await handOverConnections(sockets, {
      to,
      method,
      serializeState: detach,
      onResumed: adopt,
      ...(method === 'repair'
        ? {
            moveAddress: async () => void (await link.request({ cmd: 'moveAddress' })),
            moveAddressBack: async () => void (await link.request({ cmd: 'moveAddressBack' })),
          }
        : {}),
    });
    setTimeout(() => process.exit(0), 200);
    return { result };
  } catch (error) {
    const e = error as { code?: string; message: string; resumed?: number; lost?: number };
    await listen().catch(() => undefined);
    return { failed: true, code: e.code, message: e.message, resumed: e.resumed, lost: e.lost };
  }
}

async function main(): Promise<void> {
  if (config.role === 'standalone') {
    process.on('SIGUSR1', () => (stopped = true));
    process.on('SIGUSR2', () => writeAtomic('report.json', JSON.stringify({ pid: process.pid, reports: reports() })));
    await listen();
    writeAtomic('ready', String(process.pid));
    return;
  }
  let link: ControlLink | undefined;
  const handler = (body: Record<string, unknown>): unknown => {
    if (body.cmd === 'report') return { reports: reports() };
    if (body.cmd === 'stop') {
      stopped = true;
      return {};
    }
    if (body.cmd === 'exit') {
      setTimeout(() => process.exit(0), 50);
      return {};
    }
    if (body.cmd === 'handover' && link) return handOver(link, body);
    throw new DemoError(`unknown command ${String(body.cmd)}`, 'ERR_DEMO_UNKNOWN_COMMAND');
  };
  if (config.role === 'source') {
    await listen();
    link = await ControlLink.connect(config.control as string, handler);
    await link.request({ cmd: 'hello', role: 'source', pid: process.pid });
    link.socket.on('close', () => process.exit(0));
    return;
  }
  // target

  const { acceptHandover } = require('../migration/connections') as typeof import('../migration/connections');

  const { acceptHandoverViaAgent } = require('../agent/app-link') as typeof import('../agent/app-link');

  const { SeqpacketTransport } = require('../transport/seqpacket') as typeof import('../transport/seqpacket');
  link = await ControlLink.connect(config.control as string, handler);
  link.socket.on('close', () => process.exit(0));
  const from =
    config.channelFd !== undefined
      ? new SeqpacketTransport(config.channelFd, 'handover')
      : { listen: config.handoverListen as { path: string } };
  let announced: Promise<unknown> | undefined;
  const announce = () =>
    (announced ??= (link as ControlLink).request({ cmd: 'hello', role: 'target', pid: process.pid }));
  if (config.channelFd !== undefined) await announce();
  try {
    const result =
      config.agentSocket !== undefined
        ? await acceptHandoverViaAgent({
            agent: config.agentSocket,
            ports: [config.port],
            onConnection: adopt,
            onRegistered: () => void announce(),
          })
        : await acceptHandover({ from, onConnection: adopt, onListening: () => void announce() });
    await announced;
    // The service address is here now: accept new clients too.
    await listen().catch(() => undefined);
    await link.request({ cmd: 'handoverDone', result });
  } catch (error) {
    process.stderr.write(`target: ${(error as Error).stack ?? String(error)}\n`);
    await link
      .request({
        cmd: 'handoverDone',
        failed: true,
        code: (error as { code?: string }).code,
        message: (error as Error).message,
      })
      .catch(() => undefined);
    process.exit(1);
  }
}

main().catch((error) => {
  try {
    writeAtomic(`error-${process.pid}`, String((error as Error).stack ?? error));
  } catch {
    // statusDir gone: nothing to report to
  }
  process.exit(1);
});
