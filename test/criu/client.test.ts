/**
 * The Criu client against the real CRIU 4.2.1 (swrk mode): VERSION, CHECK, FEATURE_CHECK, and every
 * failure with its code, checking that nothing (fd, child process) is left behind.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu, CriuConnectionError, CriuRequestError, InvalidArgumentError, NodeCriuError } from '../../lib';
import { FIXTURES, childrenOf, killPid, makeTempDir, removeDir, waitForFile } from './helpers';
import { newFds, openFds } from '../helpers/fds';

describe('Criu (swrk) basics against CRIU 4.2.1', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir('client');
  });
  afterEach(() => removeDir(dir));

  it('version() reports 4.2.1 and leaves no fd or child behind', async () => {
    const criu = new Criu();
    const fds = openFds();
    const version = await criu.version();
    expect(version).toMatchObject({ major: 4, minor: 2, sublevel: 1, text: '4.2.1', number: 40201 });
    expect(newFds(fds)).toEqual([]);
    expect(childrenOf(process.pid)).toEqual([]);
    await criu.close();
  });

  it('check() passes on this kernel', async () => {
    const criu = new Criu();
    await expect(criu.check()).resolves.toBeUndefined();
    await criu.close();
  });

  it("featureCheck() returns CRIU's answer, not the question", async () => {
    const criu = new Criu();
    const all = await criu.featureCheck();
    // CONFIG_MEM_SOFT_DIRTY is off on these kernels: CRIU must say memTrack false although we asked true.
    expect(all).toEqual({ memTrack: false, lazyPages: expect.any(Boolean), pidfdStore: expect.any(Boolean) });
    const one = await criu.featureCheck({ memTrack: true });
    expect(one.memTrack).toBe(false);
    await criu.close();
  });

  it('several clients work at once', async () => {
    const clients = [new Criu(), new Criu(), new Criu()];
    const results = await Promise.all(clients.flatMap((c) => [c.version(), c.check().then(() => 'ok')]));
    expect(results.filter((r) => typeof r === 'object').map((v) => (v as { text: string }).text)).toEqual([
      '4.2.1',
      '4.2.1',
      '4.2.1',
    ]);
    await Promise.all(clients.map((c) => c.close()));
  });

  it('dump of a pid that does not exist rejects with ESRCH and the log tail', async () => {
    const criu = new Criu();
    const fds = openFds();
    // pid_max is at most 2^22: this pid cannot exist.
    const error = await criu.dump({ imagesDir: dir, pid: 4194304 + 7 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CriuRequestError);
    const e = error as CriuRequestError;
    expect(e.code).toBe('ESRCH');
    expect(e.crErrno).toBe(3);
    expect(e.requestType).toBe('DUMP');
    expect(e.logFile).toBe(path.join(dir, 'criu-dump.log'));
    expect(e.logTail).toMatch(/4194311/);
    expect(newFds(fds)).toEqual([]);
    expect(childrenOf(process.pid)).toEqual([]);
  });

  it('a missing criu binary is ERR_CRIU_NOT_FOUND; a non-runnable one is a spawn failure', async () => {
    const missing = new Criu({ criuPath: path.join(dir, 'no-such-criu') });
    await expect(missing.version()).rejects.toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_NOT_FOUND' });
    // Executable bit set, but the interpreter does not exist: spawn itself fails (ENOENT).
    const broken = path.join(dir, 'broken-criu');
    fs.writeFileSync(broken, '#!/nonexistent/interpreter\n', { mode: 0o755 });
    const fds = openFds();
    const error = await new Criu({ criuPath: broken }).version().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CriuConnectionError);
    expect((error as CriuConnectionError).code).toBe('ENOENT');
    expect(newFds(fds)).toEqual([]);
  });

  it('swrk dying without a reply reports its exit status and stderr', async () => {
    const fake = path.join(dir, 'dying-criu');
    fs.writeFileSync(fake, '#!/bin/sh\necho "fake criu: giving up" >&2\nexit 7\n', { mode: 0o755 });
    const error = await new Criu({ criuPath: fake }).check().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CriuConnectionError);
    expect(error).toMatchObject({ code: 'ERR_CRIU_EXITED', exitCode: 7, signal: null });
    expect((error as Error).message).toMatch(/exit code 7.*fake criu: giving up/s);
  });

  it('a restore from a missing images directory is ENOENT before anything starts (a dump creates it)', async () => {
    const criu = new Criu();
    const fds = openFds();
    const error = await criu.restore({ imagesDir: path.join(dir, 'missing') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NodeCriuError);
    expect(error).toMatchObject({ code: 'ENOENT', syscall: 'open' });
    expect(newFds(fds)).toEqual([]);
    expect(childrenOf(process.pid)).toEqual([]);
  });

  it('bad options are InvalidArgumentError before any I/O', async () => {
    const criu = new Criu();
    const fds = openFds();
    const bad: unknown[] = [
      () => criu.dump({ imagesDir: dir, pid: -1 }),
      () => criu.dump({ imagesDir: dir, pid: 1, logFile: 'a/b' }),
      () => criu.dump({ imagesDir: dir, pid: 1, networkLock: 'ebpf' as never }),
      () => criu.dump({ imagesDir: dir, pid: 1, bogus: true } as never),
      () => criu.dump({ pid: 1 }),
      () => criu.dump({ imagesDir: dir, pid: 1 }, { 'post-dupm': () => undefined } as never),
      () => criu.dump({ imagesDir: dir, pid: 1 }, undefined, { timeoutMs: -5 }),
      () => criu.featureCheck({ memTrack: 'yes' } as never),
      () => new Criu({ mode: 'service' }),
      () =>
        new Criu({ mode: 'service', address: path.join(dir, 's.sock') }).dump({
          imagesDir: dir,
          pid: 1,
          inheritFds: [{ key: 'k', fd: 0 }],
        }),
      () => new Criu({ mode: 'rpc' as never }),
    ];
    for (const attempt of bad) {
      let error: unknown;
      let result: unknown;
      try {
        result = (attempt as () => unknown)();
      } catch (e) {
        // Only constructors throw synchronously; every call reports through its promise.
        expect(String(attempt)).toMatch(/^\(\) => new \S*Criu\(/);
        error = e;
      }
      if (result instanceof Promise) error = await result.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).code).toMatch(/^ERR_(INVALID_ARG_VALUE|INVALID_ARG_TYPE|OUT_OF_RANGE)$/);
    }
    expect(newFds(fds)).toEqual([]);
    expect(childrenOf(process.pid)).toEqual([]);
  });

  it('timeout kills and reaps swrk and rejects with ERR_CRIU_TIMEOUT', async () => {
    const slow = path.join(dir, 'slow-criu');
    fs.writeFileSync(slow, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
    const criu = new Criu({ criuPath: slow });
    const fds = openFds();
    const error = await criu.version({ timeoutMs: 300 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'CriuTimeoutError', code: 'ERR_CRIU_TIMEOUT', timeoutMs: 300 });
    expect((error as Error).cause).toMatchObject({ name: 'TimeoutError' });
    expect(childrenOf(process.pid)).toEqual([]);
    expect(newFds(fds)).toEqual([]);
  });

  it('abort kills and reaps swrk and rejects with ABORT_ERR carrying the reason', async () => {
    const slow = path.join(dir, 'slow-criu');
    fs.writeFileSync(slow, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
    const criu = new Criu({ criuPath: slow });
    const controller = new AbortController();
    const fds = openFds();
    const pending = criu.check({ signal: controller.signal });
    // Abort once swrk is really running.
    for (let i = 0; i < 500 && childrenOf(process.pid).length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(childrenOf(process.pid).length).toBe(1);
    const reason = new Error('stop now');
    controller.abort(reason);
    const error = await pending.catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR', cause: reason });
    expect(childrenOf(process.pid)).toEqual([]);
    expect(newFds(fds)).toEqual([]);
    // An already aborted signal fails before anything starts.
    await expect(criu.check({ signal: controller.signal })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(childrenOf(process.pid)).toEqual([]);
  });

  it('aborting a real dump while CRIU waits on post-dump: CRIU unwinds, swrk is reaped, the task runs on', async () => {
    const criu = new Criu();
    const ticks = path.join(dir, 'abort-ticks');
    const child = spawn(process.execPath, [path.join(FIXTURES, 'criu-idle.js'), ticks], {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, UV_USE_IO_URING: '0' },
    });
    try {
      await waitForFile(ticks);
      const controller = new AbortController();
      const reason = new Error('changed my mind');
      const error = await criu
        .dump(
          { imagesDir: dir, pid: child.pid, networkLock: 'skip' },
          {
            // The task is frozen and dumped now; CRIU waits for this ack before killing it.
            'post-dump': (event) =>
              new Promise<void>((resolve) => {
                event.signal.addEventListener('abort', () => resolve());
                controller.abort(reason);
              }),
          },
          { signal: controller.signal },
        )
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR', cause: reason });
      // swrk is gone (exited and reaped); only the task itself is still our child, and it runs.
      expect(childrenOf(process.pid)).toEqual([child.pid]);
      const before = Number(fs.readFileSync(ticks, 'utf8'));
      for (let i = 0; i < 200 && Number(fs.readFileSync(ticks, 'utf8')) <= before; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(Number(fs.readFileSync(ticks, 'utf8'))).toBeGreaterThan(before);
    } finally {
      await killPid(child.pid);
      await criu.close();
    }
  });

  it('close() kills a call in flight and later calls fail with ERR_CRIU_CLIENT_CLOSED', async () => {
    const slow = path.join(dir, 'slow-criu');
    fs.writeFileSync(slow, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
    const criu = new Criu({ criuPath: slow });
    const pending = criu.check().catch((e: unknown) => e);
    for (let i = 0; i < 500 && childrenOf(process.pid).length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    await criu.close();
    await criu.close();
    expect(await pending).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_CLIENT_CLOSED' });
    expect(childrenOf(process.pid)).toEqual([]);
    await expect(criu.version()).rejects.toMatchObject({ code: 'ERR_CRIU_CLIENT_CLOSED' });
  });

  it('cpuinfoDump() then cpuinfoCheck() on the same machine', async () => {
    const criu = new Criu();
    await criu.cpuinfoDump({ imagesDir: dir });
    expect(fs.existsSync(path.join(dir, 'cpuinfo.img'))).toBe(true);
    await expect(criu.cpuinfoCheck({ imagesDir: dir })).resolves.toBeUndefined();
  });

  it('dumps and restores an idle process (leave-running off), the restored copy runs on', async () => {
    const criu = new Criu();
    const ticks = path.join(dir, 'ticks');
    const child = spawn(process.execPath, [path.join(FIXTURES, 'criu-idle.js'), ticks], {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, UV_USE_IO_URING: '0' },
    });
    const images = path.join(dir, 'images');
    fs.mkdirSync(images);
    let restoredPid: number | undefined;
    try {
      await waitForFile(ticks);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      // A process in the caller's own network namespace: no TCP, so no lock is needed.
      const dumped = await criu.dump({ imagesDir: images, pid: child.pid, networkLock: 'skip' });
      expect(dumped.restored).toBe(false);
      await exited;
      const restored = await criu.restore({ imagesDir: images, networkLock: 'skip' });
      restoredPid = restored.pid;
      expect(restored.pid).toBe(child.pid);
      const before = Number(fs.readFileSync(ticks, 'utf8'));
      await waitForFile(ticks); // still there
      for (let i = 0; i < 200 && Number(fs.readFileSync(ticks, 'utf8')) <= before; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(Number(fs.readFileSync(ticks, 'utf8'))).toBeGreaterThan(before);
    } finally {
      await killPid(restoredPid);
      await killPid(child.pid);
      await criu.close();
    }
  });
});
