/**
 * Soak (a): one TCP connection streaming at full speed both ways, checkpointed and restored
 * `cycles` times in a row while both ends keep writing (issue 6, item 4). Run by `npm run soak`
 * (scripts/soak.js, 1,000 cycles) and, with small counts, by test/soak/connection-soak.test.ts.
 *
 *   P: peer 10.79.0.1 (soccr-peer.js, another process) ─┐
 *   S: 10.79.0.2 (eth0)  ─── the moving side ───────────┼── bridge (namespace B)
 *   T: 10.79.0.2 (eth0, same MAC, down while S has it) ─┘
 *
 * Our side is a net.Socket in this process, created in S. Each cycle detaches it from its
 * TrafficEndpoint, checkpointConnection()s it (nftables lock in the namespace it lives in, the
 * original closed silently), sends the image through encode/decode, restoreConnection()s it into a
 * new net.Socket and re-attaches the endpoint; every `netnsEvery`-th cycle the restore goes into
 * the other namespace (S <-> T) and the address moves with it (a lock in the target covers the
 * gap). Before the next cycle both directions must have moved on by `progressBytes` (a stall fails
 * the soak). At the end both directions are compared: byte counts and SHA-256 of what each side
 * sent against what the other received; RSTs are counted by nftables counters in P (both hooks)
 * and the OutRsts of P, S and T; reset errors by the endpoints.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';

import {
  NftablesLock,
  checkpointConnection,
  decodeConnectionImage,
  encodeConnectionImage,
  restoreConnection,
} from '../../lib';
import { NetnsLab } from '../helpers/netns';
import { Child, connectFromNetns, fdCount, fdsInRepairMode } from '../helpers/soccr';
import { TrafficEndpoint, type TrafficReport } from '../helpers/traffic';

export interface ConnectionSoakOptions {
  cycles: number;
  /** Every n-th restore goes into the other namespace (0: never). Default 10. */
  netnsEvery?: number;
  /** Bytes each direction must advance between two cycles. Default 64 KiB. */
  progressBytes?: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface ConnectionSoakResult {
  kind: 'connection';
  cycles: number;
  cyclesDone: number;
  crossNetnsMoves: number;
  /** Bytes our side sent and the peer received, and the other way. */
  toPeer: { sent: number; received: number; exact: boolean };
  fromPeer: { sent: number; received: number; exact: boolean };
  /** RST segments counted by nftables in the peer's namespace (in and out). */
  rstPackets: number;
  /** OutRsts of the peer's and both moving namespaces' TCP stacks. */
  outRsts: number;
  /** ECONNRESET/EPIPE/... seen by either end. */
  resetErrors: number;
  /** Checkpoint + restore per cycle, ms (from detaching the endpoint to re-attaching it). */
  pausesMs: number[];
  durationMs: number;
  failures: string[];
}

const SUBNET = '10.79.0';
const PEER_IP = `${SUBNET}.1`;
const MOVING_IP = `${SUBNET}.2`;
const PEER_BUDGET = 16 * 1024 * 1024;
const RST_TABLE = 'ncr_soak_rst';
const OURS_AHEAD = 8 * 1024 * 1024;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted)
    throw new Error(`aborted: ${String((signal.reason as Error | undefined)?.message ?? signal.reason)}`);
}

/** Namespaces P, S, T on a bridge in B; the moving address starts on S. */
function buildTopology(lab: NetnsLab): Record<'P' | 'S' | 'T' | 'B', string> {
  const ns = { P: lab.add('p'), S: lab.add('s'), T: lab.add('t'), B: lab.add('b') };
  lab.ip(ns.B, ['link', 'add', 'br0', 'type', 'bridge']);
  lab.ip(ns.B, ['link', 'set', 'br0', 'up']);
  for (const key of ['P', 'S', 'T'] as const) {
    lab.ip(ns.B, ['link', 'add', `b${key}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns[key]]);
    lab.ip(ns.B, ['link', 'set', `b${key}`, 'master', 'br0', 'up']);
  }
  lab.ip(ns.P, ['addr', 'add', `${PEER_IP}/24`, 'dev', 'eth0']);
  lab.ip(ns.P, ['link', 'set', 'eth0', 'up']);
  // T's interface takes S's MAC, so the peer's neighbour entry stays right wherever the address is;
  // only one of the two is ever up.
  const mac = /link\/ether ([0-9a-f:]{17})/.exec(lab.ip(ns.S, ['link', 'show', 'eth0']))?.[1];
  if (mac === undefined) throw new Error('no MAC on S eth0');
  lab.ip(ns.T, ['link', 'set', 'eth0', 'address', mac]);
  lab.ip(ns.S, ['addr', 'add', `${MOVING_IP}/24`, 'dev', 'eth0']);
  lab.ip(ns.S, ['link', 'set', 'eth0', 'up']);
  lab.exec(
    ns.P,
    'nft',
    ['-f', '-'],
    `table inet ${RST_TABLE} {\n chain in {\n  type filter hook input priority -300;\n  tcp flags & rst == rst counter\n }\n chain out {\n  type filter hook output priority -300;\n  tcp flags & rst == rst counter\n }\n}\n`,
  );
  return ns;
}

function rstPackets(lab: NetnsLab, ns: string): number {
  const text = lab.exec(ns, 'nft', ['list', 'table', 'inet', RST_TABLE]);
  return [...text.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/**
 * Node keeps one /dev/null fd open for the rest of the process from its first spawn with an IPC
 * channel (measured: a second and third spawn add nothing). Spawning one no-op IPC child before
 * the fd baseline keeps that fd out of the leak check (else the peer's spawn shows up as a leak).
 */
function settleNodeIpcFd(): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', ''], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
    child.on('error', () => resolve());
    child.on('close', () => resolve());
  });
}

/** This process's fds as 'fd -> target' (to name a leaked one). */
function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd').map((fd) => {
    try {
      return `${fd} -> ${fs.readlinkSync(`/proc/self/fd/${fd}`)}`;
    } catch {
      return `${fd} -> ?`;
    }
  });
}

export async function runConnectionSoak(options: ConnectionSoakOptions): Promise<ConnectionSoakResult> {
  const { cycles, signal } = options;
  const netnsEvery = options.netnsEvery ?? 10;
  const progressBytes = options.progressBytes ?? 64 * 1024;
  const log = options.log ?? (() => undefined);
  const result: ConnectionSoakResult = {
    kind: 'connection',
    cycles,
    cyclesDone: 0,
    crossNetnsMoves: 0,
    toPeer: { sent: 0, received: 0, exact: false },
    fromPeer: { sent: 0, received: 0, exact: false },
    rstPackets: -1,
    outRsts: -1,
    resetErrors: -1,
    pausesMs: [],
    durationMs: 0,
    failures: [],
  };
  const started = performance.now();
  await settleNodeIpcFd();
  const fdsBefore = fdCount();
  const fdsAtStart = openFds();
  const lab = new NetnsLab();
  const locks: Partial<Record<'S' | 'T', NftablesLock>> = {};
  let socket: net.Socket | undefined;
  // Our side writes as fast as it can but never more than OURS_AHEAD beyond what it has received:
  // without that coupling the side whose process has more CPU to spare takes the whole link (the
  // peer, busy hashing our stream, would hardly write at all).
  let stopping = false;
  // The peer may run PEER_BUDGET ahead of what we received; topped up as we read (the IPC message
  // is not awaited: the reply only acknowledges).
  let peerTotal = 0;
  let peer: Child | undefined;
  const topUp = (): void => {
    if (stopping || peer === undefined || peerTotal - ours.received.bytes > PEER_BUDGET / 2) return;
    peerTotal += PEER_BUDGET;
    peer.request({ cmd: 'sendMore', bytes: PEER_BUDGET }).catch(() => undefined);
  };
  const ours = new TrafficEndpoint({
    seed: 0x50a4 + randomBytes(1)[0],
    total: OURS_AHEAD,
    onProgress: (endpoint) => {
      const want = endpoint.received.bytes + OURS_AHEAD;
      if (!stopping && want > endpoint.total) endpoint.sendMore(want - endpoint.total);
      topUp();
    },
  });
  try {
    const ns = buildTopology(lab);
    peer = new Child(lab.spawnNode(ns.P, path.join(__dirname, '..', 'fixtures', 'soccr-peer.js')));
    const { port } = await peer.request<{ port: number }>({
      cmd: 'listen',
      host: PEER_IP,
      seedBase: 0x9ee4,
      total: PEER_BUDGET,
    });
    locks.S = await NftablesLock.create({ netns: lab.path(ns.S) });
    locks.T = await NftablesLock.create({ netns: lab.path(ns.T) });
    peerTotal = PEER_BUDGET;
    const peerReport = async (): Promise<TrafficReport> =>
      (await (peer as Child).request<{ reports: TrafficReport[] }>({ cmd: 'reports' })).reports[0];

    socket = await connectFromNetns(lab.path(ns.S), 4, PEER_IP, port);
    ours.attach(socket);
    await ours.waitForReceived(1024 * 1024);
    let on: 'S' | 'T' = 'S';
    let lastFds = fdCount();

    for (let i = 0; i < cycles; i++) {
      checkAbort(signal);
      const receivedBefore = ours.received.bytes;
      const peerReceivedBefore = (await peerReport()).received.bytes;
      const cross = netnsEvery > 0 && (i + 1) % netnsEvery === 0;
      const to: 'S' | 'T' = cross ? (on === 'S' ? 'T' : 'S') : on;
      const t0 = performance.now();
      ours.detach();
      const image = await checkpointConnection(socket, { lock: locks[on], netns: lab.path(ns[on]) });
      const carried = decodeConnectionImage(encodeConnectionImage(image));
      if (cross) {
        // The target drops the peer's packets from the moment the address arrives until the
        // restore (else it would answer them with RST); the restore releases that lock too.
        await (locks[to] as NftablesLock).add([{ local: image.local, remote: image.remote }]);
        lab.ip(ns[on], ['addr', 'del', `${MOVING_IP}/24`, 'dev', 'eth0']);
        lab.ip(ns[on], ['link', 'set', 'eth0', 'down']);
        lab.ip(ns[to], ['addr', 'add', `${MOVING_IP}/24`, 'dev', 'eth0']);
        lab.ip(ns[to], ['link', 'set', 'eth0', 'up']);
        socket = await restoreConnection(carried, { netns: lab.path(ns[to]), locks: [locks[to] as NftablesLock] });
        result.crossNetnsMoves++;
        on = to;
      } else {
        socket = await restoreConnection(carried, { netns: lab.path(ns[on]) });
      }
      ours.attach(socket);
      result.pausesMs.push(performance.now() - t0);
      result.cyclesDone++;

      // Both directions flow again before the next cycle (a stall or a reset fails here).
      const deadline = Date.now() + 30000;
      const tw = performance.now();
      for (;;) {
        checkAbort(signal);
        const peerNow = await peerReport();
        if (
          ours.received.bytes >= receivedBefore + progressBytes &&
          peerNow.received.bytes >= peerReceivedBefore + progressBytes
        )
          break;
        if (ours.resets > 0 || peerNow.resets > 0 || ours.errors.length > 0 || peerNow.errors.length > 0) {
          throw new Error(
            `cycle ${i + 1}: errors on the connection: ours ${ours.errors.map((e) => (e as NodeJS.ErrnoException).code ?? e.message).join(',')}, peer ${peerNow.errors.join(',')}`,
          );
        }
        if (Date.now() > deadline) {
          throw new Error(
            `cycle ${i + 1}: the stream stalled (we received ${ours.received.bytes - receivedBefore} B, the peer ${peerNow.received.bytes - peerReceivedBefore} B in 30 s)`,
          );
        }
        await sleep(1);
      }
      if (process.env.SOAK_DEBUG && fdCount() !== lastFds) {
        log(`cycle ${i + 1}: fds ${lastFds} -> ${fdCount()}: ${openFds().join(', ')}`);
        lastFds = fdCount();
      }
      if (process.env.SOAK_DEBUG)
        log(
          `cycle ${i + 1}: pause ${(performance.now() - t0).toFixed(0)} wait ${(performance.now() - tw).toFixed(0)} ms; in ${ours.received.bytes - receivedBefore} out ${ours.sent.bytes}`,
        );
      if ((i + 1) % 100 === 0)
        log(
          `connection soak: ${i + 1}/${cycles} cycles, ${(ours.received.bytes / 1e6).toFixed(0)} MB in, ${(ours.sent.bytes / 1e6).toFixed(0)} MB out`,
        );
    }

    // Stop both writers, drain, compare.
    stopping = true;
    ours.total = ours.sent.bytes;
    await ours.waitForSent(60000);
    await ours.waitForReceived(peerTotal, 120000);
    const { reports } = await peer.request<{ reports: TrafficReport[] }>({
      cmd: 'wait',
      receivedEach: ours.sent.bytes,
      flushed: true,
      timeoutMs: 120000,
    });
    const theirs = reports[0];
    const mine = ours.report();
    result.toPeer = {
      sent: mine.sent.bytes,
      received: theirs.received.bytes,
      exact: mine.sent.bytes === theirs.received.bytes && mine.sent.sha256 === theirs.received.sha256,
    };
    result.fromPeer = {
      sent: theirs.sent.bytes,
      received: mine.received.bytes,
      exact: theirs.sent.bytes === mine.received.bytes && theirs.sent.sha256 === mine.received.sha256,
    };
    if (!result.toPeer.exact)
      result.failures.push(
        `to the peer: sent ${mine.sent.bytes} B (${mine.sent.sha256}), received ${theirs.received.bytes} B (${theirs.received.sha256})`,
      );
    if (!result.fromPeer.exact)
      result.failures.push(
        `from the peer: sent ${theirs.sent.bytes} B (${theirs.sent.sha256}), received ${mine.received.bytes} B (${mine.received.sha256})`,
      );
    if (theirs.sent.bytes !== peerTotal)
      result.failures.push(`the peer sent ${theirs.sent.bytes} B, expected ${peerTotal}`);
    result.resetErrors = mine.resets + theirs.resets;
    if (mine.errors.length + theirs.errors.length > 0)
      result.failures.push(`socket errors: ours [${mine.errors.join(',')}], peer [${theirs.errors.join(',')}]`);
    result.rstPackets = rstPackets(lab, ns.P);
    result.outRsts = ['P', 'S', 'T'].reduce((sum, key) => sum + lab.tcpCounters(ns[key as 'P' | 'S' | 'T']).OutRsts, 0);
    if (result.rstPackets !== 0) result.failures.push(`${result.rstPackets} RST segments in the peer's namespace`);
    if (result.outRsts !== 0) result.failures.push(`OutRsts ${result.outRsts} in P+S+T`);
    if (result.resetErrors !== 0) result.failures.push(`${result.resetErrors} reset errors`);
  } catch (error) {
    result.failures.push(`after ${result.cyclesDone} cycles: ${(error as Error).message}`);
  } finally {
    ours.detach();
    socket?.destroy();
    await peer?.stop();
    for (const lock of Object.values(locks)) await lock?.destroy().catch(() => undefined);
    lab.destroy();
    result.durationMs = performance.now() - started;
  }
  // Nothing left behind in this process either (the peer's IPC pipe closes a moment after its exit).
  for (let i = 0; i < 100 && fdCount() !== fdsBefore; i++) await sleep(20);
  const repair = fdsInRepairMode();
  if (repair.length > 0) result.failures.push(`fds left in repair mode: ${repair.join(',')}`);
  if (fdCount() !== fdsBefore)
    result.failures.push(
      `fd count ${fdsBefore} -> ${fdCount()}: ${openFds()
        .filter((fd) => !fdsAtStart.includes(fd))
        .join(', ')}`,
    );
  return result;
}
