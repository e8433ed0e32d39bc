/**
 * Servers as services really run: in a mount namespace of their own. (a) `ip netns exec NS node`
 * (own mount namespace, / slave, /sys remounted); (b) what systemd's PrivateTmp= does (own mount
 * namespace, tmpfs on /tmp). Both move from S to T with clients in C streaming both ways: every
 * byte once each way, no RST. The stdio /dev/null they inherited from our namespace is dumped as
 * an external file and handed back on restore. (c) a server holding a log open in its private
 * /tmp cannot be restored where that mount does not exist: ERR_MIGRATION_PRIVATE_MOUNTS before
 * anything is touched, from the library and from the CLI, and the server streams on untouched.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { locateCriu, migrateProcess } from '../../lib';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { ProcessLab, pidAlive, type Launch } from './process-lab';

const STREAM = { connections: 3, total: 2 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };
/** CRIU's fault-injection codes (criu/include/fault-injection.h): dump pages fail, restore root fails. */
const FI_DUMP_PAGES = 3;
const FI_RESTORE_ROOT_ONLY = 2;
const CLI = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

let lab: ProcessLab;
let criuPath: string;

beforeAll(() => {
  criuPath = locateCriu().path;
});

// Status files and images outside /tmp: the PrivateTmp-like servers do not see ours.
beforeEach(() => {
  lab = new ProcessLab('/var/tmp');
});

afterEach(async () => {
  await lab?.destroy();
});

const mntns = (pid: number | 'self'): number => fs.statSync(`/proc/${pid}/ns/mnt`).ino;

function runCli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe.each(['ip-netns-exec', 'private-tmp'] as const)(
  'migrateProcess, a server started with %s',
  (launch: Launch) => {
    it('moves to the target namespace: connections kept, bytes exact both ways, no RST', async () => {
      const pair = await lab.startPair(launch, STREAM, 0, { launch });
      // The server really has a mount namespace of its own (and, for private-tmp, a tmpfs on /tmp).
      expect(mntns(pair.serverPid)).not.toBe(mntns('self'));
      if (launch === 'private-tmp')
        expect(fs.readFileSync(`/proc/${pair.serverPid}/mountinfo`, 'utf8')).toMatch(/ \/tmp .* - tmpfs /);
      await pair.waitFlowing(256 * 1024);
      const before = lab.clientResets();
      const external: string[] = [];
      const result = await migrateProcess(
        lab.migrationOptions(pair, criuPath, {
          onProgress: (e) => {
            if (e.detail?.state === 'external-files') external.push(...(e.detail.files as string[]));
          },
        }),
      );
      lab.track(result.restoredPid);
      expect(result.restoredPid).toBe(pair.serverPid);
      expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.T));
      // Restored in the target's mount namespace (ours on one machine).
      expect(mntns(pair.serverPid)).toBe(mntns('self'));
      // Its stdio came from our namespace (spawn's /dev/null): external at dump, given back at restore.
      expect(external).toContain(`/dev/null (pid ${pair.serverPid} fd 0)`);
      expect(fs.readlinkSync(`/proc/${pair.serverPid}/fd/0`)).toBe('/dev/null');

      const { clients, server } = await pair.reports();
      expect(server.pid).toBe(pair.serverPid);
      expectEveryConnectionExact(clients, server, STREAM);
      expect(lab.clientResets()).toEqual(before);
      expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
      expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
      expect(lab.criuWrapperDirs()).toEqual([]);
    });
  },
);

describe('migrateProcess failures, a server with a private /tmp', () => {
  it('a criu it cannot see is refused; CRIU failing during the dump: the server keeps running in its own namespaces, nothing lost', async () => {
    const pair = await lab.startPair('dump-fails', STREAM, 0, { launch: 'private-tmp' });
    const ns = mntns(pair.serverPid);
    await pair.waitFlowing(256 * 1024);
    // A criu the server's namespace cannot see (ours in /tmp, its /tmp is private): refused too.
    const hidden = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-criu-'));
    try {
      fs.copyFileSync(criuPath, path.join(hidden, 'criu'));
      fs.chmodSync(path.join(hidden, 'criu'), 0o755);
      await expect(
        migrateProcess({
          ...lab.migrationOptions(pair, criuPath),
          criuPath: path.join(hidden, 'criu'),
          imagesDir: path.join(hidden, 'images'),
        }),
      ).rejects.toMatchObject({ code: 'ERR_MIGRATION_CRIU_UNREACHABLE', phase: 'check', serverOn: 'source' });
    } finally {
      fs.rmSync(hidden, { recursive: true, force: true });
    }
    const before = lab.clientResets();
    const error = await migrateProcess(
      lab.migrationOptions(pair, criuPath, { criuPath: lab.faultyCriu(criuPath, FI_DUMP_PAGES, lab.S) }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'ERR_MIGRATION_DUMP_FAILED', serverOn: 'source', pid: pair.serverPid });
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(mntns(pair.serverPid)).toBe(ns);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectEveryConnectionExact(clients, server, STREAM);
    expect(lab.clientResets()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
  });

  it('the target restore fails: restored on the source (in our mount namespace), external files given back', async () => {
    const pair = await lab.startPair('restore-fails', STREAM, 0, { launch: 'private-tmp' });
    await pair.waitFlowing(256 * 1024);
    const before = lab.clientResets();
    const error = await migrateProcess(
      lab.migrationOptions(pair, criuPath, { criuPath: lab.faultyCriu(criuPath, FI_RESTORE_ROOT_ONLY, lab.T) }),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ code: 'ERR_MIGRATION_ROLLED_BACK', phase: 'restore', serverOn: 'source' });
    lab.track(pair.serverPid);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    expect(mntns(pair.serverPid)).toBe(mntns('self'));
    expect(fs.readlinkSync(`/proc/${pair.serverPid}/fd/0`)).toBe('/dev/null');
    const { clients, server } = await pair.reports();
    expectEveryConnectionExact(clients, server, STREAM);
    expect(lab.clientResets()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  });
});

describe('migrateProcess, a server with a file open on its private /tmp', () => {
  it('is refused before anything is touched (library and CLI); the server streams on untouched', async () => {
    const pair = await lab.startPair('private-file', STREAM, 0, { launch: 'private-tmp', keepOpen: '/tmp/server.log' });
    const ns = mntns(pair.serverPid);
    await pair.waitFlowing(128 * 1024);
    const before = lab.clientResets();
    let moved = 0;
    const options = lab.migrationOptions(pair, criuPath, {
      moveAddress: async () => {
        moved++;
      },
    });
    const error = await migrateProcess(options).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toMatchObject({
      code: 'ERR_MIGRATION_PRIVATE_MOUNTS',
      phase: 'check',
      serverOn: 'source',
      pid: pair.serverPid,
    });
    expect((error as Error).message).toContain(`/tmp/server.log (pid ${pair.serverPid} fd `);
    expect((error as Error).message).toMatch(/PrivateTmp/);
    expect(moved).toBe(0);
    expect(fs.existsSync(options.imagesDir)).toBe(false);

    const run = await runCli([
      'migrate',
      '--pid',
      String(pair.serverPid),
      '--images-dir',
      path.join(pair.statusDir, 'cli-images'),
      '--source-netns',
      lab.path(lab.S),
      '--target-netns',
      lab.path(lab.T),
    ]);
    // 5: not migrated, still running on the source.
    expect(run.code).toBe(5);
    expect(run.stderr).toContain('has files open on mounts private to its mount namespace');
    expect(run.stderr).toContain('/tmp/server.log');
    expect(run.stderr).toMatch(/run it without PrivateTmp/);

    // Untouched: same pid, same namespaces, never stopped; every byte still arrives exactly.
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(mntns(pair.serverPid)).toBe(ns);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectEveryConnectionExact(clients, server, STREAM);
    expect(lab.clientResets()).toEqual(before);
    expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
    expect(lab.criuWrapperDirs()).toEqual([]);
  });
});
