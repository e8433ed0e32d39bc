/**
 * Soak (b): a Node TCP server holding `connections` connections, migrated `moves` times back and
 * forth between two network namespaces with migrateProcess (the whole process through CRIU),
 * while every client streams both ways the whole time (issue 6, item 4). Run by `npm run soak`
 * (1,000 connections x 20 moves) and, small, by test/soak/server-soak.test.ts.
 *
 * Topology and address moves: ProcessLab (test/migration/process-lab.ts): S and T are the two
 * "hosts", C holds the clients (soak-clients.js), the server (soak-server.js) starts in S, the
 * service address moves with it (S -> T -> S ...). After each move the restored process must run
 * in the target namespace, and every connection must have received more data before the next
 * move (the clients' minimum over all connections), with no connection closed or in error. At the
 * end both sides stop writing, drain, and every connection is compared both ways: byte counts and
 * SHA-256 of what each side sent against what the other received. RSTs: nftables counter on C's
 * input (every RST that reaches a client) and C's EstabResets.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { locateCriu, migrateProcess, type ProcessMigrationError, type ProcessMigrationResult } from '../../lib';
import { ProcessLab, sleep, waitForFile } from '../migration/process-lab';
import type { TrafficReport } from '../helpers/traffic';

export interface ServerSoakOptions {
  connections: number;
  moves: number;
  /** Each side of each connection writes paceBytes every paceMs. Defaults 512 / 50 (10 KB/s). */
  paceBytes?: number;
  paceMs?: number;
  transfer?: 'directory' | 'page-server';
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface ServerSoakResult {
  kind: 'server';
  connections: number;
  moves: number;
  movesDone: number;
  /** Connections with both directions exact (counts and SHA-256) and no error at the end. */
  exactConnections: number;
  /** Sums over the connections. */
  clientToServer: { sent: number; received: number };
  serverToClient: { sent: number; received: number };
  /** RST segments that reached the clients' namespace. */
  rstPackets: number;
  /** EstabResets in the clients' namespace. */
  clientEstabResets: number;
  /** ECONNRESET/EPIPE/... seen by either end, over all connections. */
  resetErrors: number;
  /** CRIU downtime per move (dump + transfer + address move + restore), ms. */
  pausesMs: number[];
  /** The longest time any client connection went without data while streaming. */
  maxClientGapMs: number;
  durationMs: number;
  failures: string[];
}

interface ClientsProgress {
  sent: number;
  received: number;
  errors: number;
  closed: number;
  maxGapMs: number;
}

interface SideReport {
  reports: Record<string, TrafficReport>;
  unflushed: number;
  closed: Array<number | string>;
  maxGapMs?: number;
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** CRIU's error lines from the log a migration error names (read before its directory goes). */
function criuErrors(message: string): string {
  const log = /\(log: ([^)\s]+)\)/.exec(message)?.[1];
  if (log === undefined) return '';
  try {
    const lines = fs.readFileSync(log, 'utf8').split('\n');
    // The first real error (CRIU always logs that it cannot raise RLIMIT_NOFILE here: harmless).
    const first = lines.findIndex((line) => /Error/.test(line) && !/RLIMIT_NOFILE/.test(line));
    return first < 0
      ? ''
      : `\n    CRIU log ${log}:\n    ${lines.slice(Math.max(0, first - 12), first + 4).join('\n    ')}`;
  } catch {
    return '';
  }
}

/** What the server holds: memory areas, resident memory, threads and fds (how a move changes it). */
function footprint(pid: number): string {
  try {
    const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').length - 1;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string): string => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '?';
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    return `${maps} VMAs, RSS ${field('VmRSS')}, ${field('Threads')} threads, ${fds} fds`;
  } catch {
    return 'footprint unreadable';
  }
}

/** A move's phases and CRIU's own statistics, for the log line. */
function moveDetails(m: ProcessMigrationResult): string {
  const p = m.phases;
  const r = (v: number | undefined): string => (v === undefined ? '?' : (v / 1000).toFixed(0));
  const s = m.dumpStats;
  const t = m.steps;
  return `dump ${p.dump.toFixed(0)}, transfer ${p.transfer.toFixed(0)}, move ${p.moveAddress.toFixed(0)}, restore ${p.restore.toFixed(0)} (waits ${t.restoreWaits.toFixed(0)}, CRIU ${t.criuRestore.toFixed(0)}) ms; CRIU frozen ${r(s?.frozenTimeUs)}, memdump ${r(s?.memdumpTimeUs)}, memwrite ${r(s?.memwriteTimeUs)}, restore ${r(m.restoreStats?.restoreTimeUs)} ms, ${s?.pagesWritten ?? '?'} pages written`;
}

/** SOAK_KEEP_LOGS=<dir>: CRIU's logs and statistics of each move, copied there. */
function keepLogs(imagesDir: string, move: number): void {
  const keep = process.env.SOAK_KEEP_LOGS;
  if (!keep) return;
  for (const side of ['source', 'target']) {
    const dir = path.join(imagesDir, side, 'dump');
    for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      if (!/\.log$|^stats-/.test(name)) continue;
      fs.mkdirSync(path.join(keep, `move-${move}`, side), { recursive: true });
      fs.copyFileSync(path.join(dir, name), path.join(keep, `move-${move}`, side, name));
    }
  }
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted)
    throw new Error(`aborted: ${String((signal.reason as Error | undefined)?.message ?? signal.reason)}`);
}

/** Both sides' final reports once every connection has received everything the other side sent. */
async function drained(
  statusDir: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<{ clients: SideReport; server: SideReport }> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no reports yet';
  for (;;) {
    checkAbort(signal);
    const clients = readJson<SideReport>(path.join(statusDir, 'clients.json'));
    const server = readJson<SideReport>(path.join(statusDir, 'server.json'));
    if (clients && server) {
      const ports = Object.keys(clients.reports);
      const behind = ports.filter((p) => {
        const s = server.reports[p];
        const c = clients.reports[p];
        return s === undefined || s.received.bytes !== c.sent.bytes || c.received.bytes !== s.sent.bytes;
      });
      if (behind.length === 0 && clients.unflushed === 0 && server.unflushed === 0) return { clients, server };
      last = `${behind.length} connections not drained (e.g. port ${behind[0]}), unflushed ${clients.unflushed}/${server.unflushed}`;
    }
    if (Date.now() > deadline) throw new Error(`the streams did not drain in ${timeoutMs} ms: ${last}`);
    await sleep(100);
  }
}

export async function runServerSoak(options: ServerSoakOptions): Promise<ServerSoakResult> {
  const { connections, moves, signal } = options;
  const paceBytes = options.paceBytes ?? 512;
  const paceMs = options.paceMs ?? 50;
  const log = options.log ?? (() => undefined);
  const result: ServerSoakResult = {
    kind: 'server',
    connections,
    moves,
    movesDone: 0,
    exactConnections: 0,
    clientToServer: { sent: 0, received: 0 },
    serverToClient: { sent: 0, received: 0 },
    rstPackets: -1,
    clientEstabResets: -1,
    resetErrors: -1,
    pausesMs: [],
    maxClientGapMs: 0,
    durationMs: 0,
    failures: [],
  };
  const started = performance.now();
  const lab = new ProcessLab();
  try {
    const criuPath = locateCriu().path;
    const statusDir = path.join(lab.dir, 'soak');
    fs.mkdirSync(statusDir);
    const config = { statusDir, host: lab.serviceIp, port: 7000, connections, paceBytes, paceMs };
    lab.spawnNode(lab.S, 'soak-server.js', config);
    const pid = Number(await waitForFile(path.join(statusDir, 'listening')));
    lab.spawnNode(lab.C, 'soak-clients.js', config);
    await waitForFile(path.join(statusDir, 'clients-connected'), 120000, path.join(statusDir, 'clients-error'));
    await waitForFile(path.join(statusDir, 'all-accepted'), 60000);
    const rstsBefore = lab.rstsIntoClients();
    const estabBefore = lab.netns.tcpCounters(lab.C).EstabResets;

    /** Waits until every connection has received `bytes` (clients' minimum); fails on errors or closes. */
    const flowing = async (bytes: number, what: string): Promise<ClientsProgress> => {
      const deadline = Date.now() + 120000;
      for (;;) {
        checkAbort(signal);
        const progress = readJson<ClientsProgress>(path.join(statusDir, 'clients-progress'));
        if (progress && (progress.errors > 0 || progress.closed > 0)) {
          throw new Error(`${what}: ${progress.errors} client errors, ${progress.closed} connections closed`);
        }
        if (progress && progress.received >= bytes && progress.sent >= bytes) return progress;
        if (Date.now() > deadline)
          throw new Error(
            `${what}: not every connection received ${bytes} B within 120 s (minimum ${progress?.received})`,
          );
        await sleep(50);
      }
    };
    let progress = await flowing(4 * paceBytes, 'before the first move');
    log(`server soak: before the first move, server ${footprint(pid)}`);

    let on: 'S' | 'T' = 'S';
    for (let i = 0; i < moves; i++) {
      checkAbort(signal);
      const to: 'S' | 'T' = on === 'S' ? 'T' : 'S';
      const imagesDir = path.join(lab.dir, `move-${i + 1}`);
      let migration: ProcessMigrationResult;
      try {
        migration = await migrateProcess({
          pid,
          source: { netns: lab.path(lab[on]) },
          target: { netns: lab.path(lab[to]) },
          imagesDir,
          criuPath,
          preDump: false,
          ...(options.transfer !== undefined ? { transfer: options.transfer } : {}),
          // ProcessLab moves the address S -> T (moveAddress) and T -> S (moveAddressBack).
          moveAddress: to === 'T' ? lab.moveAddress : lab.moveAddressBack,
          moveAddressBack: to === 'T' ? lab.moveAddressBack : lab.moveAddress,
          ...(signal !== undefined ? { signal } : {}),
        });
      } catch (error) {
        // A move that failed but put the server back where it was (nothing lost, the peers saw a
        // longer pause) is a failure of the soak, which goes on to prove the bytes anyway.
        const e = error as ProcessMigrationError;
        result.failures.push(`move ${i + 1} (${on} -> ${to}): ${e.code}: ${e.message}${criuErrors(e.message)}`);
        // SOAK_KEEP_FAILED=<dir>: keep the failed move's images and CRIU logs there, to investigate.
        if (process.env.SOAK_KEEP_FAILED)
          fs.cpSync(imagesDir, path.join(process.env.SOAK_KEEP_FAILED, `move-${i + 1}`), { recursive: true });
        fs.rmSync(imagesDir, { recursive: true, force: true });
        if (e.code !== 'ERR_MIGRATION_ROLLED_BACK' && e.code !== 'ERR_MIGRATION_DUMP_FAILED') throw error;
        if (e.serverOn !== 'source' || lab.pidNetnsInode(pid) !== lab.netnsInode(lab[on])) throw error;
        progress = await flowing(progress.received + 2 * paceBytes, `after the failed move ${i + 1}`);
        continue;
      }
      keepLogs(imagesDir, i + 1);
      fs.rmSync(imagesDir, { recursive: true, force: true });
      result.pausesMs.push(migration.downtimeMs);
      result.movesDone++;
      if (migration.restoredPid !== pid)
        throw new Error(`move ${i + 1}: restored as pid ${migration.restoredPid}, not ${pid}`);
      if (lab.pidNetnsInode(pid) !== lab.netnsInode(lab[to]))
        throw new Error(`move ${i + 1}: the server is not in namespace ${to}`);
      on = to;
      progress = await flowing(progress.received + 2 * paceBytes, `after move ${i + 1}`);
      log(
        `server soak: move ${i + 1}/${moves} (${to === 'T' ? 'S -> T' : 'T -> S'}): downtime ${migration.downtimeMs.toFixed(0)} ms (${moveDetails(migration)}), server ${footprint(pid)}; every connection flowing again`,
      );
    }
    for (const ns of [lab.S, lab.T]) {
      const tables = lab.nftTables(ns);
      if (/CRIU|node-criu-hold/.test(tables)) result.failures.push(`lock tables left in ${ns}: ${tables.trim()}`);
    }

    // Stop every writer, wait until everything sent has arrived, compare each connection.
    fs.writeFileSync(path.join(statusDir, 'stop'), '');
    const { clients, server } = await drained(statusDir, 120000, signal);
    result.maxClientGapMs = clients.maxGapMs ?? 0;
    const ports = Object.keys(clients.reports);
    if (ports.length !== connections)
      result.failures.push(`the clients report ${ports.length} connections, expected ${connections}`);
    if (Object.keys(server.reports).length !== connections)
      result.failures.push(
        `the server reports ${Object.keys(server.reports).length} connections, expected ${connections}`,
      );
    if (clients.closed.length + server.closed.length > 0)
      result.failures.push(`connections closed: clients ${clients.closed.length}, server ${server.closed.length}`);
    let resetErrors = 0;
    const inexact: string[] = [];
    for (const port of ports) {
      const c = clients.reports[port];
      const s = server.reports[port];
      resetErrors += c.resets + (s?.resets ?? 0);
      result.clientToServer.sent += c.sent.bytes;
      result.serverToClient.received += c.received.bytes;
      if (s === undefined) {
        inexact.push(port);
        continue;
      }
      result.clientToServer.received += s.received.bytes;
      result.serverToClient.sent += s.sent.bytes;
      const exact =
        c.sent.bytes === s.received.bytes &&
        c.sent.sha256 === s.received.sha256 &&
        s.sent.bytes === c.received.bytes &&
        s.sent.sha256 === c.received.sha256 &&
        c.errors.length === 0 &&
        s.errors.length === 0;
      if (exact) result.exactConnections++;
      else inexact.push(port);
    }
    if (inexact.length > 0)
      result.failures.push(`${inexact.length} connections not exact both ways (e.g. client port ${inexact[0]})`);
    result.resetErrors = resetErrors;
    result.rstPackets = lab.rstsIntoClients() - rstsBefore;
    result.clientEstabResets = lab.netns.tcpCounters(lab.C).EstabResets - estabBefore;
    if (result.rstPackets !== 0) result.failures.push(`${result.rstPackets} RST segments reached the clients`);
    if (result.clientEstabResets !== 0)
      result.failures.push(`${result.clientEstabResets} client connections reset (EstabResets)`);
    if (resetErrors !== 0) result.failures.push(`${resetErrors} reset errors`);
  } catch (error) {
    result.failures.push(`after ${result.movesDone} moves: ${(error as Error).message}`);
  } finally {
    await lab.destroy();
    result.durationMs = performance.now() - started;
  }
  return result;
}
