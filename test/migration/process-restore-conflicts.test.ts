/**
 * What a namespace can hold that makes CRIU's restore of the moved server fail, made on purpose,
 * and how migrateProcess must get through it (the server ends up running, every connection exact
 * both ways by counts and SHA-256, no RST into the clients' namespace):
 * - A socket that already has the 4-tuple of a moved connection (a lingering or orphaned copy):
 *   libsoccr's repair-mode connect fails with EADDRNOTAVAIL and CRIU reports "Unable to open
 *   fd=19 id=0x1c", the soak's intermittent failure. One that goes away is waited for; one that
 *   stays is named, and the server is rolled back without a CRIU attempt into it.
 * - A thread id of the server taken by another process: CRIU restores every thread with its own
 *   id (clone3 set_tid); once the dump has killed the server its ids are free, and with pid_max
 *   32768 a busy machine wraps around within minutes, so a short-lived process can hold one at
 *   the restore ("Unable to create a thread: -17"). The rollback on the source failed the same way
 *   while it lived: ERR_MIGRATION_LOST with the images intact. The condition is made with
 *   ns_last_pid (a `sleep` gets one of the server's thread ids); the restore on the target, and
 *   the rollback on the source, must wait for the id.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { locateCriu, migrateProcess, type ProcessMigrationOptions, type ProcessMigrationProgress } from '../../lib';
import { readTreeTasks } from '../../lib/migration/process-images';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { ProcessLab, pidAlive, sleep, type ClientsReport, type Pair, type ServerReport } from './process-lab';

const STREAM = { connections: 3, total: 2 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };
/** CRIU's fault injection: the restore of the root task fails (criu/include/fault-injection.h). */
const FI_RESTORE_ROOT_ONLY = 2;
/** How long the process that takes the server's thread id lives. */
const HOLD_SECONDS = 3;

let lab: ProcessLab;
let criuPath: string;
const holders: ChildProcess[] = [];

beforeAll(() => {
  criuPath = locateCriu().path;
});

beforeEach(() => {
  lab = new ProcessLab();
});

afterEach(async () => {
  for (const holder of holders.splice(0)) holder.kill('SIGKILL');
  await lab?.destroy();
});

const rsts = (): { rstsIntoClients: number; clientEstabResets: number } => lab.clientResets();
const expectAllExact = (clients: ClientsReport, server: ServerReport): void =>
  expectEveryConnectionExact(clients, server, STREAM);
const options = (pair: Pair, extra: Partial<ProcessMigrationOptions> = {}): ProcessMigrationOptions =>
  lab.migrationOptions(pair, criuPath, extra);

function threadIds(pid: number): number[] {
  return fs
    .readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .filter((tid) => tid !== pid);
}

function idTaken(id: number): boolean {
  try {
    process.kill(id, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts a `sleep HOLD_SECONDS` whose pid is `id` (ns_last_pid = id - 1, then fork; other
 * processes on the machine may win the race, so it tries again). Waits first until the id is
 * free (the dumped server reaped). Throws if it never gets the id: the test must not pass
 * without the condition it is about.
 */
async function takeId(id: number): Promise<ChildProcess> {
  for (let i = 0; i < 500 && idTaken(id); i++) await sleep(10);
  for (let attempt = 0; attempt < 50; attempt++) {
    if (idTaken(id)) throw new Error(`task id ${id} was taken by another process`);
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(id - 1));
    const holder = spawn('sleep', [String(HOLD_SECONDS)], { stdio: 'ignore' });
    holders.push(holder);
    if (holder.pid === id) return holder;
    holder.kill('SIGKILL');
  }
  throw new Error(`could not give task id ${id} to a process`);
}

describe('migrateProcess when a thread id of the server is taken at the restore', () => {
  it('the target restore waits for the id: the server runs on the target, bytes exact both ways, no RST', async () => {
    const pair = await lab.startPair('tid-target', STREAM);
    await pair.waitFlowing(256 * 1024);
    const tids = threadIds(pair.serverPid);
    expect(tids.length).toBeGreaterThan(0);
    const id = tids[tids.length - 1];
    const before = rsts();
    const events: ProcessMigrationProgress[] = [];
    let holder: ChildProcess | undefined;
    const result = await migrateProcess(
      options(pair, {
        moveAddress: async () => {
          await lab.moveAddress();
          holder = await takeId(id);
        },
        onProgress: (e) => events.push(e),
      }),
    );
    lab.track(result.restoredPid);
    // The condition was there: a process held the id when the restore started.
    expect(holder?.pid).toBe(id);
    const waited = events.find((e) => e.phase === 'restore' && e.detail?.state === 'waiting-for-ids');
    expect(waited?.detail?.taken).toEqual([expect.stringMatching(new RegExp(`^${id} \\(sleep`))]);
    expect(result.restoredPid).toBe(pair.serverPid);
    expect(lab.pidNetnsInode(result.restoredPid)).toBe(lab.netnsInode(lab.T));
    // Every thread came back with its own id (the one the sleep had held included).
    expect(threadIds(result.restoredPid)).toEqual(expect.arrayContaining([id]));
    const { clients, server } = await pair.reports();
    expect(server.pid).toBe(pair.serverPid);
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  });

  it('the target restore fails and the id is taken during the rollback: the rollback waits for it, the server is back on the source, bytes exact', async () => {
    const pair = await lab.startPair('tid-rollback', STREAM);
    await pair.waitFlowing(256 * 1024);
    const tids = threadIds(pair.serverPid);
    const id = tids[tids.length - 1];
    const before = rsts();
    let taking: Promise<ChildProcess> | undefined;
    const events: ProcessMigrationProgress[] = [];
    const error = await migrateProcess(
      options(pair, {
        criuPath: lab.faultyCriu(criuPath, FI_RESTORE_ROOT_ONLY, lab.T),
        onProgress: (e) => {
          events.push(e);
          // The failed target restore has just ended: the id is free; a process takes it now.
          if (e.phase === 'rollback' && e.detail?.state === 'start') taking = takeId(id);
        },
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    const holder = await taking;
    expect(holder?.pid).toBe(id);
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_ROLLED_BACK',
      phase: 'restore',
      serverOn: 'source',
      pid: pair.serverPid,
    });
    lab.track(pair.serverPid);
    const waited = events.find((e) => e.phase === 'rollback' && e.detail?.state === 'waiting-for-ids');
    expect(waited?.detail?.taken).toEqual([expect.stringMatching(new RegExp(`^${id} \\(sleep`))]);
    expect(events.find((e) => e.phase === 'rollback' && e.detail?.state === 'end')?.detail?.attempts).toBe(1);
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    expect(threadIds(pair.serverPid)).toEqual(expect.arrayContaining([id]));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  });
});

/**
 * A socket in `ns` with the 4-tuple of one of the server's connections (the first one the clients
 * report), made in TCP_REPAIR mode so it sends nothing, living `seconds` (then closed silently, in
 * repair mode). CRIU cannot restore a connection whose 4-tuple exists: "Can't connect inet socket
 * back: Cannot assign requested address", then "Unable to open fd=19 id=0x1c", the signature of
 * the soak's failures.
 */
async function holdTuple(ns: string, seconds: number): Promise<ChildProcess> {
  const line = lab.netns
    .exec(lab.C, 'ss', ['-tnH', 'state', 'established', 'dst', `${lab.serviceIp}:7000`])
    .trim()
    .split('\n')[0];
  const [clientIp, clientPort] = line.trim().split(/\s+/)[2].split(':');
  const script = [
    'import socket, sys, time',
    's = socket.socket()',
    's.setsockopt(socket.IPPROTO_TCP, 19, 1)  # TCP_REPAIR',
    `s.bind(('${lab.serviceIp}', 7000))`,
    `s.connect(('${clientIp}', ${Number(clientPort)}))`,
    "print('held', flush=True)",
    `time.sleep(${seconds})`,
  ].join('\n');
  const holder = spawn('nsenter', [`--net=${lab.path(ns)}`, '--', 'python3', '-c', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  holders.push(holder);
  await new Promise<void>((resolve, reject) => {
    holder.stdout?.once('data', () => resolve());
    holder.once('exit', (code) => reject(new Error(`the 4-tuple holder exited with ${String(code)}`)));
  });
  return holder;
}

describe('migrateProcess when a socket in the target already has the 4-tuple of a moved connection', () => {
  it('one that goes away within the wait: the restore waits for it, the server runs on the target, bytes exact, no RST', async () => {
    const pair = await lab.startPair('tuple-passing', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const events: ProcessMigrationProgress[] = [];
    const result = await migrateProcess(
      options(pair, {
        moveAddress: async () => {
          await lab.moveAddress();
          await holdTuple(lab.T, HOLD_SECONDS);
        },
        onProgress: (e) => events.push(e),
      }),
    );
    lab.track(result.restoredPid);
    expect(
      events.find((e) => e.phase === 'restore' && e.detail?.state === 'conflicting-sockets')?.detail?.sockets,
    ).toEqual(['ESTABLISHED x1']);
    expect(result.restoredPid).toBe(pair.serverPid);
    expect(lab.pidNetnsInode(result.restoredPid)).toBe(lab.netnsInode(lab.T));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  });

  it('one that stays: no restore is tried there, the server is rolled back onto the source with a code naming it, bytes exact', async () => {
    const pair = await lab.startPair('tuple-stays', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const error = await migrateProcess(
      options(pair, {
        moveAddress: async () => {
          await lab.moveAddress();
          await holdTuple(lab.T, 60);
        },
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_ROLLED_BACK',
      phase: 'restore',
      serverOn: 'source',
      pid: pair.serverPid,
      cause: { code: 'ERR_MIGRATION_TUPLE_IN_USE' },
    });
    expect((error as Error).message).toMatch(/ESTABLISHED x1/);
    lab.track(pair.serverPid);
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  });
});

describe('readTreeTasks', () => {
  it('reads every pid and thread id of a pstree image, packed or not', () => {
    const dir = fs.mkdtempSync(path.join(lab.dir, 'pstree-'));
    // pstree_entry{pid 100, ppid 1, pgid 100, sid 100, threads [100, 101, 102] (unpacked)},
    // pstree_entry{pid 200, ppid 100, pgid 100, sid 100, threads packed [200, 300]}.
    const varint = (n: number): number[] => {
      const out: number[] = [];
      for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n & 0x7f) | 0x80);
      out.push(n);
      return out;
    };
    const first = [
      0x08,
      ...varint(100),
      0x10,
      1,
      0x18,
      ...varint(100),
      0x20,
      ...varint(100),
      0x28,
      ...varint(100),
      0x28,
      ...varint(101),
      0x28,
      ...varint(102),
    ];
    const packed = [...varint(200), ...varint(300)];
    const second = [
      0x08,
      ...varint(200),
      0x10,
      ...varint(100),
      0x18,
      ...varint(100),
      0x20,
      ...varint(100),
      0x2a,
      packed.length,
      ...packed,
    ];
    const frame = (entry: number[]): Buffer => {
      const length = Buffer.alloc(4);
      length.writeUInt32LE(entry.length);
      return Buffer.concat([length, Buffer.from(entry)]);
    };
    fs.writeFileSync(path.join(dir, 'pstree.img'), Buffer.concat([Buffer.alloc(8), frame(first), frame(second)]));
    expect(readTreeTasks(dir)).toEqual({ pids: [100, 200], tids: [100, 200, 101, 102, 300] });
    expect(readTreeTasks(path.join(dir, 'missing'))).toEqual({ pids: [], tids: [] });
  });
});
