/**
 * migrateProcess (whole process through CRIU 4.2.1) with its images on a full filesystem: small
 * tmpfs mounts in a private mount namespace (PrivateMounts), filled up. Clients in their own
 * namespace stream both ways throughout (process-lab.ts):
 *   - the whole images directory full: CRIU's dump fails, the server never stopped serving;
 *   - only the target side full, images copied: the dump succeeds, the copy fails with ENOSPC,
 *     the server is restored on the source;
 *   - only the target side full, pages streamed to its page server: the page server fails, so
 *     does the dump, the server keeps running;
 *   - no inode left for the layout: ENOSPC before anything is touched.
 * Each: a typed error with a code, the server on the source with every byte exact both ways
 * (counts and SHA-256), no RST into the clients' namespace, no CRIU table or wrapper directory
 * left behind.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  CriuRequestError,
  ProcessMigrationError,
  locateCriu,
  migrateProcess,
  type ProcessMigrationOptions,
} from '../../lib';
import { criuInNetns } from '../../lib/migration/process-criu';
import { PrivateMounts, fillFilesystem } from '../fixtures/fault-helpers';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { ProcessLab, pidAlive, type Pair } from '../migration/process-lab';
import { newFds, openFds } from '../helpers/fds';

const STREAM = { connections: 2, total: 3 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };

let lab: ProcessLab;
let mounts: PrivateMounts;
let criuPath: string;

beforeAll(() => {
  criuPath = locateCriu().path;
});

beforeEach(async () => {
  lab = new ProcessLab();
  mounts = await PrivateMounts.start();
});

afterEach(async () => {
  await mounts?.close();
  await lab?.destroy();
});

function options(pair: Pair, imagesDir: string, extra: Partial<ProcessMigrationOptions> = {}): ProcessMigrationOptions {
  return lab.migrationOptions(pair, criuPath, { imagesDir, ...extra });
}

/** The server runs on the source (same pid, namespace S), every byte exact, no RST, nothing left. */
async function expectServedOnSource(pair: Pair, rstsBefore: number): Promise<void> {
  lab.track(pair.serverPid);
  expect(pidAlive(pair.serverPid)).toBe(true);
  expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  expect(lab.rstsIntoClients()).toBe(rstsBefore);
  expect(lab.nftTables(lab.S)).not.toMatch(/CRIU/);
  expect(lab.nftTables(lab.T)).not.toMatch(/CRIU|node-criu-hold/);
  expect(lab.criuWrapperDirs()).toEqual([]);
}

/** Runs the migration that must fail; our fd count is the same afterwards. */
async function failure(migrate: () => Promise<unknown>): Promise<ProcessMigrationError> {
  const fds = openFds();
  const error = await migrate().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ProcessMigrationError);
  expect(newFds(fds)).toEqual([]);
  return error as ProcessMigrationError;
}

it('the images directory is on a full tmpfs: ERR_MIGRATION_DUMP_FAILED, the server never stopped serving, nothing lost', async () => {
  const full = mounts.mountTmpfs(mounts.freshDir('images'), 256 * 1024);
  fillFilesystem(full);
  const pair = await lab.startPair('full-images', STREAM);
  await pair.waitFlowing(256 * 1024);
  const rstsBefore = lab.rstsIntoClients();
  let moved = 0;
  const error = await failure(() =>
    migrateProcess(options(pair, path.join(full, 'migration'), { moveAddress: async () => void moved++ })),
  );
  expect(error).toMatchObject({
    code: 'ERR_MIGRATION_DUMP_FAILED',
    phase: 'dump',
    serverOn: 'source',
    pid: pair.serverPid,
  });
  expect(error.cause).toMatchObject({ code: expect.any(String) });
  expect(moved).toBe(0);
  await expectServedOnSource(pair, rstsBefore);
});

it('Criu.dump straight into a full images directory: a typed CriuRequestError, CRIU resumes the server, nothing lost', async () => {
  const full = mounts.mountTmpfs(mounts.freshDir('criu'), 256 * 1024);
  fillFilesystem(full);
  const pair = await lab.startPair('criu-dump-full', STREAM);
  await pair.waitFlowing(256 * 1024);
  const rstsBefore = lab.rstsIntoClients();
  const fds = openFds();
  const source = criuInNetns(criuPath, lab.path(lab.S));
  try {
    const error = await source.criu
      .dump({ pid: pair.serverPid, imagesDir: full, tcpEstablished: true, networkLock: 'nftables' })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(CriuRequestError);
    expect(error).toMatchObject({ code: expect.any(String) });
  } finally {
    await source.close();
  }
  expect(newFds(fds)).toEqual([]);
  await expectServedOnSource(pair, rstsBefore);
});

it('the target side is full, images copied: the copy fails with ENOSPC, the server is restored on the source, nothing lost', async () => {
  const images = mounts.freshDir('images');
  fs.mkdirSync(path.join(images, 'target'), { mode: 0o700 });
  fillFilesystem(mounts.mountTmpfs(path.join(images, 'target'), 256 * 1024));
  const pair = await lab.startPair('full-target', STREAM);
  await pair.waitFlowing(256 * 1024);
  const rstsBefore = lab.rstsIntoClients();
  const error = await failure(() => migrateProcess(options(pair, mounts.view(images))));
  expect(error).toMatchObject({
    code: 'ERR_MIGRATION_ROLLED_BACK',
    phase: 'transfer',
    serverOn: 'source',
    pid: pair.serverPid,
  });
  expect(error.cause).toMatchObject({ code: 'ENOSPC' });
  await expectServedOnSource(pair, rstsBefore);
});

it("the target side is full, pages to the target's page server: the page server fails, so does the dump; the server keeps running", async () => {
  const images = mounts.freshDir('images');
  fs.mkdirSync(path.join(images, 'target'), { mode: 0o700 });
  fillFilesystem(mounts.mountTmpfs(path.join(images, 'target'), 256 * 1024));
  const pair = await lab.startPair('full-page-server', STREAM);
  await pair.waitFlowing(256 * 1024);
  const rstsBefore = lab.rstsIntoClients();
  const error = await failure(() => migrateProcess(options(pair, mounts.view(images), { transfer: 'page-server' })));
  expect(error).toMatchObject({
    code: 'ERR_MIGRATION_DUMP_FAILED',
    phase: 'dump',
    serverOn: 'source',
    pid: pair.serverPid,
  });
  expect(fs.readFileSync(`/proc/${pair.serverPid}/status`, 'utf8')).not.toMatch(/^State:\s+[Tt]/m);
  await expectServedOnSource(pair, rstsBefore);
});

it('no inode left for the images layout: a typed ENOSPC before anything is touched', async () => {
  // A tmpfs whose only inode is its root directory: any mkdir fails with ENOSPC.
  const view = mounts.mountTmpfs(mounts.freshDir('inodes'), 64 * 1024, { inodes: 1 });
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    const error = await failure(() =>
      migrateProcess({ pid: sleeper.pid as number, imagesDir: path.join(view, 'a', 'b'), criuPath }),
    );
    expect(error).toMatchObject({ code: 'ENOSPC', phase: 'check', serverOn: 'source' });
    expect(pidAlive(sleeper.pid as number)).toBe(true);
  } finally {
    sleeper.kill('SIGKILL');
  }
});
