/**
 * Whole-process live migration through CRIU 4.2.1 (migrateProcess) between network namespaces,
 * with clients in a third namespace streaming both ways the whole time (see process-lab.ts):
 * connections kept, every byte exact both ways (counts and SHA-256), no reset seen by any client,
 * no RST sent from the source or target namespace. Failure paths: CRIU failing during the dump,
 * the target's restore failing, the target refusing (no address), a client leaving mid-migration.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu, locateCriu, migrateProcess, type ProcessMigrationOptions, type ProcessMigrationResult } from '../../lib';
import { expectEveryConnectionExact } from '../helpers/traffic';
import {
  ProcessLab,
  criuWrapperOnRestored,
  pidAlive,
  type ClientsReport,
  type Pair,
  type ServerReport,
} from './process-lab';
import { newFds, openFds } from '../helpers/fds';

const STREAM = { connections: 3, total: 3 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };
/** CRIU's fault-injection codes (criu/include/fault-injection.h): dump pages fail, restore root fails. */
const FI_DUMP_PAGES = 3;
const FI_RESTORE_ROOT_ONLY = 2;

let lab: ProcessLab;
let criuPath: string;
let memTrack: boolean;

beforeAll(async () => {
  criuPath = locateCriu().path;
  const criu = new Criu({ criuPath });
  try {
    memTrack = (await criu.featureCheck({ memTrack: true })).memTrack === true;
  } finally {
    await criu.close();
  }
});

// A fresh topology per test, so no test's late packets (or RST counts) leak into the next.
beforeEach(() => {
  lab = new ProcessLab();
});

afterEach(async () => {
  await lab?.destroy();
});

const rsts = (): { rstsIntoClients: number; clientEstabResets: number } => lab.clientResets();
const expectAllExact = (clients: ClientsReport, server: ServerReport): void =>
  expectEveryConnectionExact(clients, server, STREAM);
const options = (pair: Pair, extra: Partial<ProcessMigrationOptions> = {}): ProcessMigrationOptions =>
  lab.migrationOptions(pair, criuPath, extra);

describe.each(['directory', 'page-server'] as const)('migrateProcess, transfer %s', (transfer) => {
  it('moves the streaming server to the target: connections kept, bytes exact both ways, no RST', async () => {
    const pair = await lab.startPair(`ok-${transfer}`, STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const events: string[] = [];
    let held: unknown;
    const result: ProcessMigrationResult = await migrateProcess(
      options(pair, {
        transfer,
        onProgress: (e) => {
          events.push(`${e.phase}:${String(e.detail?.state)}`);
          if (e.detail?.state === 'released') held = e.detail.heldPackets;
        },
      }),
    );
    lab.track(result.restoredPid);

    // CRIU restores the original pid, now inside the target namespace.
    expect(result.restoredPid).toBe(pair.serverPid);
    expect(lab.pidNetnsInode(result.restoredPid)).toBe(lab.netnsInode(lab.T));
    expect(result.transfer).toBe(transfer);
    expect(result.memoryTracking).toBe(memTrack);
    if (!memTrack) expect(result.iterations).toEqual([]);
    for (const phase of ['dump', 'transfer', 'moveAddress', 'restore', 'total'] as const)
      expect(result.phases[phase]).toBeGreaterThan(0);
    expect(result.pagesBytes).toBeGreaterThan(0);
    // The images hold the server's memory: private to root.
    for (const dir of ['', 'source', 'target'])
      expect(fs.statSync(path.join(pair.statusDir, 'images', dir)).mode & 0o777).toBe(0o700);
    expect(result.imagesDir).toBe(path.join(pair.statusDir, 'images', 'target', 'dump'));
    expect(result.dumpStats?.pagesWritten).toBeGreaterThan(0);
    // The target held the connections from the address move to the restore, the peers' packets in
    // a queue: released onto the restored sockets, none lost to a flushed queue.
    expect(held).toEqual({ accepted: expect.any(Number), dropped: 0 });
    expect(events).toEqual(
      expect.arrayContaining([
        'dump:start',
        'dump:end',
        'transfer:end',
        'moveAddress:hold',
        'moveAddress:end',
        'restore:end',
        'done:undefined',
      ]),
    );
    expect(events.indexOf('moveAddress:hold')).toBeLessThan(events.indexOf('moveAddress:start'));
    expect(events.indexOf('moveAddress:start')).toBeGreaterThan(events.indexOf('dump:end'));
    expect(events.indexOf('restore:start')).toBeGreaterThan(events.indexOf('moveAddress:end'));

    const { clients, server } = await pair.reports();
    expect(server.pid).toBe(pair.serverPid);
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    // No CRIU lock left behind in either namespace.
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold|node_criu_hold|node_criu_migrate/);
  });
});

describe('migrateProcess, a process tree', () => {
  it('moves the root and its child together into the target namespace', async () => {
    const pair = await lab.startPair('tree', STREAM, 0, { child: true });
    const child = Number(fs.readFileSync(path.join(pair.statusDir, 'child'), 'utf8'));
    lab.track(child);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const result = await migrateProcess(options(pair));
    lab.track(result.restoredPid);
    expect(result.restoredPid).toBe(pair.serverPid);
    for (const pid of [pair.serverPid, child]) {
      expect(pidAlive(pid)).toBe(true);
      expect(lab.pidNetnsInode(pid)).toBe(lab.netnsInode(lab.T));
    }
    expect(fs.readFileSync(`/proc/${child}/stat`, 'utf8').split(') ')[1].split(' ')[1]).toBe(String(pair.serverPid));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
  });
});

describe('migrateProcess failure paths', () => {
  it('CRIU fails during the dump: the server keeps running on the source, the address stays, nothing is lost', async () => {
    const pair = await lab.startPair('dump-fails', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    let moved = 0;
    const error = await migrateProcess(
      options(pair, {
        criuPath: lab.faultyCriu(criuPath, FI_DUMP_PAGES, lab.S),
        moveAddress: async () => {
          moved++;
        },
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_DUMP_FAILED',
      phase: 'dump',
      serverOn: 'source',
      pid: pair.serverPid,
    });
    expect(moved).toBe(0);
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
  });

  it('the target restore fails midway: the server is restored on the source, nothing is lost', async () => {
    const pair = await lab.startPair('restore-fails', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const phases: string[] = [];
    const error = await migrateProcess(
      options(pair, {
        criuPath: lab.faultyCriu(criuPath, FI_RESTORE_ROOT_ONLY, lab.T),
        onProgress: (e) => phases.push(e.phase),
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
    });
    expect(phases).toContain('rollback');
    lab.track(pair.serverPid);
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  });

  it("the target's CRIU dies late in the restore: the half-restored copy is removed, the server comes back on the source", async () => {
    const pair = await lab.startPair('target-criu-dies', STREAM);
    // Inside T only: kill CRIU as soon as the restored task has its memory back, before CRIU
    // resumes it and replies. That leaves the copy in T.
    const killer = criuWrapperOnRestored(path.join(lab.dir, 'criu-killed-late'), {
      netns: lab.T,
      pid: pair.serverPid,
      criuPath,
      actions: ['kill -9 $$'],
    });
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const events: Array<{ phase: string; detail?: Record<string, unknown> }> = [];
    const error = await migrateProcess(options(pair, { criuPath: killer, onProgress: (e) => events.push(e) })).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_ROLLED_BACK',
      phase: 'restore',
      serverOn: 'source',
      pid: pair.serverPid,
    });
    expect(events).toContainEqual({
      phase: 'rollback',
      detail: { state: 'removed-target-leftovers', pids: [pair.serverPid] },
    });
    lab.track(pair.serverPid);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  });

  it('the target refuses (its address never arrived), page-server transfer: rolled back onto the source', async () => {
    const pair = await lab.startPair('target-refuses', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const error = await migrateProcess(
      options(pair, {
        transfer: 'page-server',
        moveAddress: async () => undefined,
        moveAddressBack: async () => undefined,
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'ERR_MIGRATION_ROLLED_BACK', phase: 'restore', serverOn: 'source' });
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    lab.track(pair.serverPid);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
  });

  it('the target dies during a page-server transfer: the dump fails, the server keeps running on the source', async () => {
    const pair = await lab.startPair('page-server-dies', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    let pageServer: number | undefined;
    const error = await migrateProcess(
      options(pair, {
        transfer: 'page-server',
        onProgress: (e) => {
          if (e.phase === 'transfer' && e.detail?.state === 'page-server') pageServer = e.detail.pid as number;
          // The target's page server dies just as the source starts sending it pages.
          if (e.phase === 'dump' && e.detail?.state === 'start' && pageServer !== undefined)
            process.kill(pageServer, 'SIGKILL');
        },
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(pageServer).toBeDefined();
    expect(error).toMatchObject({ code: 'ERR_MIGRATION_DUMP_FAILED', serverOn: 'source', pid: pair.serverPid });
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(fs.readFileSync(`/proc/${pair.serverPid}/status`, 'utf8')).not.toMatch(/^State:\s+[Tt]/m);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
  });

  it('a client that disconnects mid-migration does not break it; the others lose nothing', async () => {
    const pair = await lab.startPair('client-leaves', STREAM, 1);
    await pair.waitFlowing(256 * 1024);
    const [leaver] = pair.leaverPids;
    const rstsBefore = lab.rstsIntoClients();
    const result = await migrateProcess(
      options(pair, {
        onProgress: (e) => {
          // The leaver dies while the server is frozen and its connections are locked.
          if (e.phase === 'dump' && e.detail?.state === 'start') process.kill(leaver, 'SIGKILL');
        },
      }),
    );
    lab.track(result.restoredPid);
    expect(pidAlive(leaver)).toBe(false);
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(server.closed).toHaveLength(1);
    // The server side never reset anyone (the dead client's own kernel answers with RSTs; those leave C).
    expect(lab.rstsIntoClients()).toBe(rstsBefore);
  });
});

describe('migrateProcess argument and environment errors (nothing touched)', () => {
  it('rejects a missing pid, a missing namespace, a bogus criu and bad options with codes', async () => {
    const fds = openFds();
    const base = { imagesDir: path.join(lab.dir, 'neg'), criuPath };
    await expect(migrateProcess({ ...base, pid: 0x3ffffff0 })).rejects.toMatchObject({ code: 'ERR_PID_NOT_FOUND' });
    await expect(
      migrateProcess({ ...base, pid: process.pid, target: { netns: '/run/netns/ncr-does-not-exist' } }),
    ).rejects.toMatchObject({
      code: 'ERR_NETNS_NOT_FOUND',
    });
    await expect(
      migrateProcess({ ...base, pid: process.pid, source: { netns: '/etc/hostname' } }),
    ).rejects.toMatchObject({ code: 'ERR_NETNS_NOT_FOUND' });
    await expect(migrateProcess({ ...base, pid: process.pid, criuPath: '/nonexistent/criu' })).rejects.toMatchObject({
      code: 'ERR_CRIU_NOT_FOUND',
    });
    // We run in the host's namespace, not in S: CRIU would dump our namespace along with us.
    await expect(
      migrateProcess({ ...base, pid: process.pid, source: { netns: lab.path(lab.S) } }),
    ).rejects.toMatchObject({ code: 'ERR_NETNS_MISMATCH' });
    await expect(migrateProcess({ ...base, pid: -1 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(
      migrateProcess({ ...base, pid: process.pid, transfer: 'carrier-pigeon' as 'directory' }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(
      migrateProcess({ ...base, pid: process.pid, criuOptions: { leaveRunning: true } }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(
      migrateProcess({ ...base, pid: process.pid, bogus: 1 } as unknown as ProcessMigrationOptions),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(fs.existsSync(base.imagesDir)).toBe(false);
    expect(newFds(fds)).toEqual([]);
  });

  it('an aborted signal stops it before the dump: the server never paused', async () => {
    const pair = await lab.startPair('aborted', STREAM);
    await pair.waitFlowing(128 * 1024);
    const controller = new AbortController();
    controller.abort(new Error('operator changed their mind'));
    await expect(migrateProcess(options(pair, { signal: controller.signal }))).rejects.toMatchObject({
      code: 'ERR_MIGRATION_ABORTED',
      serverOn: 'source',
    });
    expect(fs.existsSync(path.join(pair.statusDir, 'images', 'source', 'dump', 'inventory.img'))).toBe(false);
    // timeoutMs elapses during the preparation (the feature check spawns CRIU): same outcome.
    await expect(migrateProcess(options(pair, { timeoutMs: 1 }))).rejects.toMatchObject({
      code: 'ERR_MIGRATION_ABORTED',
      serverOn: 'source',
    });
    expect(fs.existsSync(path.join(pair.statusDir, 'images', 'source', 'dump', 'inventory.img'))).toBe(false);
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
  });

  it('an abort that arrives during the dump rolls the server back onto the source after it', async () => {
    const pair = await lab.startPair('aborted-mid-dump', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = rsts();
    const controller = new AbortController();
    let moved = 0;
    const error = await migrateProcess(
      options(pair, {
        signal: controller.signal,
        moveAddress: async () => {
          moved++;
        },
        onProgress: (e) => {
          if (e.phase === 'dump' && e.detail?.state === 'start') controller.abort(new Error('operator pressed Ctrl-C'));
        },
      }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_ROLLED_BACK',
      phase: 'moveAddress',
      serverOn: 'source',
      pid: pair.serverPid,
    });
    expect(moved).toBe(0);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    lab.track(pair.serverPid);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(rsts()).toEqual(before);
  });
});
