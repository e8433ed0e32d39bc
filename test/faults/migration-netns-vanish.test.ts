/**
 * The target network namespace vanishes during a migration (`ip netns del`, and the processes
 * holding it killed, as when the target host dies), at each phase, while clients in their own
 * namespace stream both ways:
 *   whole process (migrateProcess, CRIU 4.2.1): before the dump, after the dump, after the
 *     address moved (before the restore), during the restore (CRIU and the half-restored copy in
 *     the target die with it);
 *   connections (handOverConnections/acceptHandover, libsoccr): the control channel runs through
 *     a relay in this process that reads the frame types, so the target is removed at an exact
 *     protocol point: before the checkpoint (WELCOME), after it (STAGE_END), once the target has
 *     staged everything (STAGED), and after the address moved to it (COMMIT).
 * Each: a typed error with a code, the server back (or never gone) on the source, every byte exact
 * both ways (counts and SHA-256), no RST into the clients' namespace (nftables counter), and
 * nothing left: no process in the deleted namespace, no lock table, no CRIU wrapper directory.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  ProcessMigrationError,
  locateCriu,
  migrateProcess,
  type ProcessMigrationOptions,
  type ProcessMigrationProgress,
} from '../../lib';
import { MessageType } from '../../lib/migration/handover-channel';
import { RstCounter } from '../fixtures/fault-helpers';
import { NetnsLab, run } from '../helpers/netns';
import { expectEveryConnectionExact } from '../helpers/traffic';
import {
  CLIENTS_FIXTURE,
  FixtureProcess,
  SERVER_FIXTURE,
  expectAllExact,
  waitForAccepted,
  waitForExactTraffic,
} from '../migration/connections-helpers';
import { ProcessLab, criuWrapperOnRestored, pidAlive, type Pair } from '../migration/process-lab';
import { newFds, openFds } from '../helpers/fds';

/** Seconds since boot (the clock of /proc/PID/stat's start times). */
function uptime(): number {
  return Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
}

/**
 * Processes still in the deleted namespace with inode `ino`: those in a namespace of that inode
 * that started before it was deleted at `deletedAt` (uptime seconds). The kernel reuses a freed
 * namespace's inode number at once, and other tests create namespaces all the time: a process
 * started later is in a new namespace, not in ours.
 */
function processesInNetns(ino: number, deletedAt: number): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.statSync(`/proc/${name}/ns/net`).ino !== ino) continue;
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const startedAt = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) / 100; // clock ticks (USER_HZ 100)
      if (startedAt <= deletedAt) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

describe('migrateProcess: the target namespace vanishes', () => {
  const STREAM = { connections: 2, total: 3 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };
  let lab: ProcessLab;
  let criuPath: string;
  let targetIno: number;
  let deletedAt = 0;

  beforeAll(() => {
    criuPath = locateCriu().path;
  });
  beforeEach(() => {
    lab = new ProcessLab();
    targetIno = lab.netnsInode(lab.T);
  });
  afterEach(async () => {
    await lab?.destroy();
  });

  const targetExists = () => fs.existsSync(lab.path(lab.T));
  const addr = () => `${lab.serviceIp}/24`;
  const hasAddress = (ns: string) =>
    lab.netns.ip(ns, ['-o', 'addr', 'show', 'dev', 'eth0']).includes(`${lab.serviceIp}/`);

  /** The address goes to T (which fails once T is gone), then leaves S. */
  const moveAddress = async (): Promise<void> => {
    lab.netns.ip(lab.T, ['addr', 'add', addr(), 'dev', 'eth0']);
    lab.netns.ip(lab.S, ['addr', 'del', addr(), 'dev', 'eth0']);
    lab.netns.ip(lab.C, ['neigh', 'flush', 'dev', 'eth0']);
  };
  /** Back on S, wherever it was (a deleted T took its copy with it). */
  const moveAddressBack = async (): Promise<void> => {
    if (targetExists() && hasAddress(lab.T)) lab.netns.ip(lab.T, ['addr', 'del', addr(), 'dev', 'eth0']);
    if (!hasAddress(lab.S)) lab.netns.ip(lab.S, ['addr', 'add', addr(), 'dev', 'eth0']);
    lab.netns.ip(lab.C, ['neigh', 'flush', 'dev', 'eth0']);
  };

  function deleteTarget(): void {
    run('ip', ['netns', 'delete', lab.T]);
    deletedAt = uptime();
  }

  function options(pair: Pair, extra: Partial<ProcessMigrationOptions> = {}): ProcessMigrationOptions {
    return lab.migrationOptions(pair, criuPath, { moveAddress, moveAddressBack, ...extra });
  }

  async function migrateAndFail(
    pair: Pair,
    extra: Partial<ProcessMigrationOptions>,
  ): Promise<{ error: ProcessMigrationError; events: ProcessMigrationProgress[] }> {
    const events: ProcessMigrationProgress[] = [];
    const onProgress = extra.onProgress;
    const fds = openFds();
    const error = await migrateProcess(
      options(pair, { ...extra, onProgress: (e) => (events.push(e), onProgress?.(e)) }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ProcessMigrationError);
    expect(newFds(fds)).toEqual([]);
    return { error: error as ProcessMigrationError, events };
  }

  async function expectServedOnSource(pair: Pair, rstsBefore: number): Promise<void> {
    lab.track(pair.serverPid);
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    expect(hasAddress(lab.S)).toBe(true);
    const { clients, server } = await pair.reports();
    expectEveryConnectionExact(clients, server, STREAM);
    expect(lab.rstsIntoClients()).toBe(rstsBefore);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(targetExists()).toBe(false);
    expect(processesInNetns(targetIno, deletedAt)).toEqual([]);
    expect(lab.criuWrapperDirs()).toEqual([]);
  }

  it('before the dump: ERR_NETNS_NOT_FOUND, the server was never stopped, nothing lost', async () => {
    const pair = await lab.startPair('vanish-before-dump', STREAM);
    await pair.waitFlowing(256 * 1024);
    const rstsBefore = lab.rstsIntoClients();
    let deleted = false;
    const { error, events } = await migrateAndFail(pair, {
      onProgress: (e) => {
        // The last event before the dump: the pre-dump phase (skipped here: no soft-dirty tracking).
        if (e.phase === 'preDump' && !deleted) {
          deleted = true;
          deleteTarget();
        }
      },
    });
    expect(deleted).toBe(true);
    expect(error).toMatchObject({ code: 'ERR_NETNS_NOT_FOUND', serverOn: 'source' });
    expect(events.some((e) => e.phase === 'dump')).toBe(false);
    expect(fs.existsSync(path.join(pair.statusDir, 'images', 'source', 'dump', 'inventory.img'))).toBe(false);
    await expectServedOnSource(pair, rstsBefore);
  });

  it('after the dump: the address cannot move, ERR_MIGRATION_ROLLED_BACK, the server restored on the source, nothing lost', async () => {
    const pair = await lab.startPair('vanish-after-dump', STREAM);
    await pair.waitFlowing(256 * 1024);
    const rstsBefore = lab.rstsIntoClients();
    const { error } = await migrateAndFail(pair, {
      onProgress: (e) => {
        if (e.phase === 'dump' && e.detail?.state === 'end') deleteTarget();
      },
    });
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_ROLLED_BACK',
      phase: 'moveAddress',
      serverOn: 'source',
      pid: pair.serverPid,
    });
    await expectServedOnSource(pair, rstsBefore);
  });

  it('after the address moved, before the restore: the restore cannot start, rolled back onto the source, nothing lost', async () => {
    const pair = await lab.startPair('vanish-after-move', STREAM);
    await pair.waitFlowing(256 * 1024);
    const rstsBefore = lab.rstsIntoClients();
    const { error } = await migrateAndFail(pair, {
      onProgress: (e) => {
        if (e.phase === 'moveAddress' && e.detail?.state === 'end') deleteTarget();
      },
    });
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_ROLLED_BACK',
      phase: 'restore',
      serverOn: 'source',
      pid: pair.serverPid,
    });
    await expectServedOnSource(pair, rstsBefore);
  });

  it('during the restore (namespace deleted, CRIU killed, the half-restored copy left in it): the copy is removed, rolled back, nothing lost', async () => {
    const pair = await lab.startPair('vanish-during-restore', STREAM);
    const deletedFile = path.join(lab.dir, 'target-deleted-at');
    // Inside T only: once the restored task has its memory back (its cmdline is the server's
    // again), stop CRIU, delete T and kill CRIU, leaving the copy alone in the deleted namespace.
    const wrapper = criuWrapperOnRestored(path.join(lab.dir, 'criu-target-vanishes'), {
      netns: lab.T,
      pid: pair.serverPid,
      criuPath,
      actions: [
        'kill -STOP $$',
        `ip netns delete ${lab.T}`,
        `cut -d' ' -f1 /proc/uptime > ${deletedFile}`,
        'kill -9 $$',
      ],
    });
    await pair.waitFlowing(256 * 1024);
    const rstsBefore = lab.rstsIntoClients();
    const { error, events } = await migrateAndFail(pair, { criuPath: wrapper });
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
    deletedAt = Number(fs.readFileSync(deletedFile, 'utf8'));
    await expectServedOnSource(pair, rstsBefore);
  });
});

describe('handOverConnections/acceptHandover: the target namespace vanishes', () => {
  const COUNT = 4;
  const TOTAL = 2_000_000;
  const SUBNET = 80 + (process.pid % 20);
  const VIP = `10.${SUBNET}.0.100`;
  let lab: NetnsLab;
  const ns = { A: '', B: '', C: '', BR: '' };
  let vipOn: 'A' | 'B' = 'A';
  let started: FixtureProcess[] = [];
  let dir: string;
  let targetIno = 0;
  let deletedAt = 0;

  beforeEach(() => {
    lab = new NetnsLab();
    vipOn = 'A';
    ns.BR = lab.add('br');
    lab.ip(ns.BR, ['link', 'add', 'br0', 'type', 'bridge']);
    lab.ip(ns.BR, ['link', 'set', 'br0', 'up']);
    for (const [key, host] of [
      ['A', 2],
      ['B', 3],
      ['C', 9],
    ] as const) {
      ns[key] = lab.add(key.toLowerCase());
      const dev = `v${key.toLowerCase()}`;
      lab.ip(ns.BR, ['link', 'add', `p${key.toLowerCase()}`, 'type', 'veth', 'peer', 'name', dev, 'netns', ns[key]]);
      lab.ip(ns.BR, ['link', 'set', `p${key.toLowerCase()}`, 'master', 'br0', 'up']);
      lab.ip(ns[key], ['addr', 'add', `10.${SUBNET}.0.${host}/24`, 'dev', dev]);
      lab.ip(ns[key], ['link', 'set', dev, 'up']);
    }
    lab.ip(ns.A, ['addr', 'add', `${VIP}/32`, 'dev', 'va']);
    targetIno = fs.statSync(lab.path(ns.B)).ino;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `ncr-fault-${process.pid}-relay-`));
  });

  afterEach(async () => {
    await Promise.all(started.map((p) => p.stop()));
    started = [];
    lab.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const targetExists = () => fs.existsSync(lab.path(ns.B));

  function moveVip(to: 'A' | 'B'): void {
    if (to === 'B') {
      lab.ip(ns.B, ['addr', 'add', `${VIP}/32`, 'dev', 'vb']);
      lab.ip(ns.A, ['addr', 'del', `${VIP}/32`, 'dev', 'va']);
    } else {
      if (targetExists() && vipOn === 'B') lab.ip(ns.B, ['addr', 'del', `${VIP}/32`, 'dev', 'vb']);
      if (vipOn === 'B') lab.ip(ns.A, ['addr', 'add', `${VIP}/32`, 'dev', 'va']);
    }
    lab.ip(ns.C, ['neigh', 'flush', 'to', `${VIP}/32`]);
    vipOn = to;
  }

  function start(key: 'A' | 'B' | 'C', script: string): FixtureProcess {
    const child = FixtureProcess.start(lab, ns[key], script);
    started.push(child);
    return child;
  }

  /**
   * The control channel, relayed frame by frame (16-byte header, type at byte 5, length at 12);
   * at the frame `cutAt`, `onCut` runs and both sides lose the channel as if the target died.
   */
  async function relay(
    listenPath: string,
    targetPath: string,
    cutAt: MessageType,
    onCut: () => Promise<void>,
  ): Promise<{ cut: Promise<void>; close: () => void }> {
    let cutDone!: () => void;
    const cut = new Promise<void>((resolve) => (cutDone = resolve));
    const sockets: net.Socket[] = [];
    const server = net.createServer((source) => {
      const target = net.connect(targetPath);
      sockets.push(source, target);
      let cutting = false;
      const pipe = (from: net.Socket, to: net.Socket) => {
        let pending = Buffer.alloc(0);
        from.on('data', (chunk: Buffer) => {
          if (cutting) return;
          pending = Buffer.concat([pending, chunk]);
          while (pending.length >= 16 && pending.length >= 16 + pending.readUInt32BE(12)) {
            const frame = pending.subarray(0, 16 + pending.readUInt32BE(12));
            pending = pending.subarray(frame.length);
            if (frame[5] === cutAt) {
              cutting = true;
              void onCut().then(() => {
                source.destroy();
                target.destroy();
                cutDone();
              });
              return;
            }
            to.write(frame);
          }
        });
        from.on('error', () => undefined);
        from.on('close', () => {
          if (!cutting) to.end();
        });
      };
      pipe(source, target);
      pipe(target, source);
    });
    await new Promise<void>((resolve) => server.listen(listenPath, resolve));
    return {
      cut,
      close: () => {
        sockets.forEach((s) => s.destroy());
        server.close();
      },
    };
  }

  it.each([
    ['before the checkpoint (WELCOME)', MessageType.WELCOME, 0],
    ['after the checkpoint, before the target confirmed staging (STAGE_END)', MessageType.STAGE_END, COUNT],
    ['after the connections were staged (STAGED)', MessageType.STAGED, COUNT],
    ['after the address moved to it, before the restore (COMMIT)', MessageType.COMMIT, COUNT],
    ['after it restored everything, before its RESULT reached the source (RESULT)', MessageType.RESULT, COUNT],
  ] as const)(
    '%s: ERR_HANDOVER_CHANNEL_CLOSED, every connection back on the source, nothing lost',
    async (_name, cutAt, resumed) => {
      const clientRsts = RstCounter.incoming(lab.path(ns.C));
      try {
        const source = start('A', SERVER_FIXTURE);
        const target = start('B', SERVER_FIXTURE);
        const { port } = await source.request<{ port: number }>({ cmd: 'listen', host: VIP, port: 0, total: TOTAL });
        const clients = start('C', CLIENTS_FIXTURE);
        await clients.request({ cmd: 'connect', host: VIP, port, count: COUNT, total: TOTAL });
        await waitForAccepted(source, COUNT);
        const targetPath = path.join(dir, 'target.sock');
        const relayPath = path.join(dir, 'relay.sock');
        await target.request({ cmd: 'accept', listen: { path: targetPath } });
        const channel = await relay(relayPath, targetPath, cutAt, async () => {
          await target.stop();
          run('ip', ['netns', 'delete', ns.B]);
          deletedAt = uptime();
        });
        source.onEvent((e) => {
          if (e.event === 'moveAddress') moveVip('B');
          else if (e.event === 'moveAddressBack') moveVip('A');
          else return;
          source.process.send({ cmd: 'addressMoved' });
        });
        try {
          const reply = await source.request<{ failed?: boolean; code?: string; resumed?: number; lost?: number }>({
            cmd: 'handover',
            to: { path: relayPath },
            method: 'repair',
            moveAddress: true,
          });
          await channel.cut;
          expect(reply).toMatchObject({ failed: true, code: 'ERR_HANDOVER_CHANNEL_CLOSED', resumed, lost: 0 });
        } finally {
          channel.close();
        }
        expect(vipOn).toBe('A');
        expect(targetExists()).toBe(false);

        const { clientReports, serverReports } = await waitForExactTraffic(clients, [source], TOTAL, 30000);
        expectAllExact(clientReports, serverReports, TOTAL, COUNT);
        expect(clientRsts.counts()).toEqual({ in: 0 });
        expect(lab.exec(ns.A, 'nft', ['list', 'tables']).trim()).toBe('');
        expect(processesInNetns(targetIno, deletedAt)).toEqual([]);
      } finally {
        clientRsts.destroy();
      }
    },
  );
});
