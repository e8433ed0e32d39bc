/**
 * Post-copy (lazy pages) through CRIU 4.2.1 with the page stream carried by a real mutual-TLS
 * socket pair: a streaming server (process-server.js, clients in C) moves from S to T.
 *
 * The source tree stays frozen (with its pids) until every page is served, so the target must be
 * another pid namespace, as another host is: T's CRIU runs in a "host" made of a pid + mount
 * namespace (pid 1 a holder, its own /proc) and T's network namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as tls from 'node:tls';

import { connectTls, createTlsServer, Criu, locateCriu, startLazyDump, startLazyRestore } from '../../lib';
import {
  criuInNetns,
  criuLockTables,
  deleteNewLockTables,
  deleteTables,
  holdInTarget,
} from '../../lib/migration/process-criu';
import { copyImages } from '../../lib/migration/process-images';
import { childrenOf, processExists } from '../../lib/sys/proc';
import { makeTestPki, type TestPki } from '../helpers/pki';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';
import { ProcessLab, type Pair } from './process-lab';

const STREAM = { connections: 3, total: 3 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };
const PIPE_MAX = '/proc/sys/fs/pipe-max-size';
const CRIU_OPTIONS = { tcpEstablished: true, networkLock: 'nftables' as const };

let lab: ProcessLab;
let pki: TestPki;
let criuPath: string;
let pipeMaxBefore: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(() => {
  criuPath = locateCriu().path;
  pki = makeTestPki();
  // CRIU serves lazy pages through a 4 MiB pipe; without CAP_SYS_RESOURCE the sysctl must allow it.
  pipeMaxBefore = fs.readFileSync(PIPE_MAX, 'utf8').trim();
  if (Number(pipeMaxBefore) < 4 * 1024 * 1024) fs.writeFileSync(PIPE_MAX, String(4 * 1024 * 1024));
});

afterAll(() => {
  pki?.remove();
  if (pipeMaxBefore !== undefined) fs.writeFileSync(PIPE_MAX, pipeMaxBefore);
});

beforeEach(() => {
  lab = new ProcessLab();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
  await lab?.destroy();
});

/** A target "host": pid 1 of a new pid + mount namespace, and a criu wrapper running inside it and T. */
async function targetHost(): Promise<{ wrapper: string; holder: number }> {
  const unshare: ChildProcess = spawn(
    'unshare',
    ['--pid', '--fork', '--mount', '--mount-proc', '--kill-child', 'sleep', 'infinity'],
    { detached: true, stdio: 'ignore' },
  );
  unshare.on('error', () => undefined);
  cleanups.push(async () => {
    // --kill-child: the holder (pid 1) dies, and with it everything in its pid namespace.
    unshare.kill('SIGKILL');
    await waitUntil(
      () => !processExists(unshare.pid as number) || unshare.exitCode !== null || unshare.signalCode !== null,
      {
        what: 'the target host to be gone',
      },
    );
  });
  await waitUntil(() => childrenOf(unshare.pid as number).length > 0, { what: 'the target host holder' });
  const holder = childrenOf(unshare.pid as number)[0];
  const wrapper = path.join(lab.dir, 'criu-on-target');
  fs.writeFileSync(
    wrapper,
    `#!/bin/sh\nexec nsenter -t ${holder} -p -m "--net=${lab.path(lab.T)}" -- "${criuPath}" "$@"\n`,
    { mode: 0o700 },
  );
  return { wrapper, holder };
}

/** A connected mutual-TLS pair: [source side (client), target side (server)]. */
async function tlsPair(): Promise<[tls.TLSSocket, tls.TLSSocket]> {
  let accepted!: (socket: tls.TLSSocket) => void;
  const got = new Promise<tls.TLSSocket>((resolve) => (accepted = resolve));
  const server = createTlsServer({ tls: pki.server, onSecureConnection: (socket) => accepted(socket) });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const client = await connectTls({ host: '127.0.0.1', port, tls: pki.client, timeoutMs: 10000 });
  const target = await got;
  server.close();
  cleanups.push(() => {
    client.destroy();
    target.destroy();
  });
  return [client, target];
}

async function startMove(pair: Pair): Promise<{
  dump: Awaited<ReturnType<typeof startLazyDump>>;
  restore: Awaited<ReturnType<typeof startLazyRestore>>;
  sourceStream: tls.TLSSocket;
  targetStream: tls.TLSSocket;
  locksBefore: string[];
  hold?: string;
}> {
  const host = await targetHost();
  const [sourceStream, targetStream] = await tlsPair();
  const source = criuInNetns(criuPath, lab.path(lab.S));
  const target = new Criu({ criuPath: host.wrapper });
  cleanups.push(
    () => source.close(),
    () => target.close(),
  );
  const srcDir = path.join(pair.statusDir, 'src');
  const dstDir = path.join(pair.statusDir, 'dst');
  fs.mkdirSync(srcDir, { mode: 0o700 });
  fs.mkdirSync(dstDir, { mode: 0o700 });
  const locksBefore = await criuLockTables(lab.path(lab.S));
  const dump = await startLazyDump({
    criu: source.criu,
    pid: pair.serverPid,
    imagesDir: srcDir,
    stream: sourceStream,
    criuOptions: CRIU_OPTIONS,
    timeoutMs: 120000,
  });
  cleanups.push(() => dump.abort());
  await copyImages(srcDir, dstDir); // the agent sends these over its channel
  const { hold } = await holdInTarget(lab.path(lab.S), lab.path(lab.T), locksBefore, pair.serverPid);
  await lab.moveAddress();
  dump.targetStarted();
  const restore = await startLazyRestore({
    criu: target,
    criuPath: host.wrapper,
    imagesDir: dstDir,
    stream: targetStream,
    criuOptions: CRIU_OPTIONS,
    timeoutMs: 120000,
  });
  cleanups.push(() => restore.abort());
  if (hold !== undefined) await deleteTables(lab.path(lab.T), [hold]);
  return { dump, restore, sourceStream, targetStream, locksBefore, ...(hold !== undefined ? { hold } : {}) };
}

describe('lazy pages over a TLS socket pair', () => {
  it('moves the streaming server: all pages arrive, every byte once both ways, no RST', async () => {
    const pair = await lab.startPair('lazy-ok', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = lab.clientResets();
    const { dump, restore, locksBefore } = await startMove(pair);
    const [arrived, served] = await Promise.all([restore.pagesArrived, dump.finished]);
    expect(arrived.toCriu).toBeGreaterThan(1024 * 1024); // pages came in over the stream
    expect(served.fromCriu).toBe(arrived.toCriu); // the same bytes left the source
    expect(served.toCriu).toBe(arrived.fromCriu);
    expect(processExists(pair.serverPid) && fs.readFileSync(`/proc/${pair.serverPid}/cmdline`, 'utf8')).not.toContain(
      'process-server',
    );
    await deleteNewLockTables(lab.path(lab.S), locksBefore);
    const { clients, server } = await pair.reports();
    expectEveryConnectionExact(clients, server, STREAM);
    expect(lab.clientResets()).toEqual(before);
  }, 180000);

  it('a stream cut before the target started: the server resumes on the source, bytes exact, no RST', async () => {
    const pair = await lab.startPair('lazy-back', STREAM);
    await pair.waitFlowing(256 * 1024);
    const before = lab.clientResets();
    const [sourceStream] = await tlsPair();
    const source = criuInNetns(criuPath, lab.path(lab.S));
    cleanups.push(() => source.close());
    const srcDir = path.join(pair.statusDir, 'src');
    fs.mkdirSync(srcDir, { mode: 0o700 });
    const dump = await startLazyDump({
      criu: source.criu,
      pid: pair.serverPid,
      imagesDir: srcDir,
      stream: sourceStream,
      criuOptions: CRIU_OPTIONS,
      timeoutMs: 120000,
    });
    sourceStream.destroy(); // the target host is lost before it restored anything
    const error = await dump.finished.then(
      () => undefined,
      (e: unknown) => e as { code: string; serverOn: string },
    );
    expect(error?.code).toMatch(/^ERR_LAZY_PAGES_/);
    expect(error?.serverOn).toBe('source');
    expect(await criuLockTables(lab.path(lab.S))).toEqual([]); // CRIU's lock lifted by the repair
    const { clients, server } = await pair.reports();
    expectEveryConnectionExact(clients, server, STREAM);
    expect(server.pid).toBe(pair.serverPid);
    expect(lab.clientResets()).toEqual(before);
  }, 180000);

  it('a stream cut mid-transfer: typed errors, neither copy runs with missing pages', async () => {
    const pair = await lab.startPair('lazy-cut', STREAM);
    await pair.waitFlowing(256 * 1024);
    const { dump, restore, targetStream } = await startMove(pair);
    targetStream.destroy(); // the network between the hosts fails during the transfer
    const [arrived, served] = await Promise.allSettled([restore.pagesArrived, dump.finished]);
    expect(arrived.status).toBe('rejected');
    expect(served.status).toBe('rejected');
    const targetError = (arrived as PromiseRejectedResult).reason as { code: string; serverOn: string };
    const sourceError = (served as PromiseRejectedResult).reason as { code: string; serverOn: string };
    expect(targetError.code).toMatch(/^ERR_LAZY_PAGES_/);
    expect(targetError.serverOn).toBe('none');
    expect(sourceError.code).toMatch(/^ERR_LAZY_PAGES_/);
    expect(sourceError.serverOn).toBe('none');
    // The source copy was killed (its connections are stale once the target ran), the target's too.
    await waitUntil(
      () => !processExists(pair.serverPid) || fs.readFileSync(`/proc/${pair.serverPid}/stat`, 'utf8').includes(' Z '),
      {
        what: 'the source copy to be gone',
      },
    );
    expect(fs.existsSync(path.join(pair.statusDir, 'server.json'))).toBe(false);
  }, 180000);
});
