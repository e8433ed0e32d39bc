/**
 * `criu service` mode and page servers, against the real CRIU 4.2.1 inside a private network
 * namespace: a service the test starts and kills, dump/restore through it, PAGE_SERVER_CHLD +
 * dump to it + WAIT_PID, PAGE_SERVER (daemon), and the connection errors of a service that is down.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu, CriuConnectionError } from '../../lib';
import { FIXTURES, Netns, childrenOf, killPid, makeTempDir, pidAlive, removeDir, sleep, waitForFile } from './helpers';
import { newFds, openFds } from '../helpers/fds';

describe('Criu service mode and page servers (CRIU 4.2.1, private netns)', () => {
  let netns: Netns;
  let dir: string;
  let wrapper: string;
  const pids: (number | undefined)[] = [];

  beforeAll(() => {
    netns = new Netns();
    dir = makeTempDir('service');
    wrapper = netns.criuWrapper(dir);
  });

  afterEach(async () => {
    for (const pid of pids.splice(0)) await killPid(pid);
  });

  afterAll(() => {
    netns?.remove();
    removeDir(dir);
  });

  async function startIdle(label: string): Promise<{ pid: number; ticks: string; exited: Promise<unknown> }> {
    const ticks = path.join(dir, `${label}.ticks`);
    const child = netns.spawnNode(path.join(FIXTURES, 'criu-idle.js'), [ticks]);
    pids.push(child.pid);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    await waitForFile(ticks);
    return { pid: child.pid as number, ticks, exited };
  }

  async function expectTicking(ticks: string): Promise<void> {
    const before = Number(fs.readFileSync(ticks, 'utf8'));
    for (let i = 0; i < 300 && Number(fs.readFileSync(ticks, 'utf8')) <= before; i++) await sleep(20);
    expect(Number(fs.readFileSync(ticks, 'utf8'))).toBeGreaterThan(before);
  }

  function mkdir(name: string): string {
    const images = path.join(dir, name);
    fs.mkdirSync(images);
    return images;
  }

  async function startService(name: string): Promise<{ service: ChildProcess; address: string }> {
    const address = path.join(dir, `${name}.sock`);
    // --status-fd: CRIU writes one byte there once the socket listens (the file exists a little
    // earlier: connecting on its appearance alone raced with listen() on a loaded machine).
    const service = spawn(wrapper, ['service', '--address', address, '--status-fd', '3'], {
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    });
    pids.push(service.pid);
    const ready = await new Promise<boolean>((resolve) => {
      const status = service.stdio[3] as NodeJS.ReadableStream;
      status.once('data', () => resolve(true));
      status.once('end', () => resolve(false));
      service.once('exit', () => resolve(false));
    });
    expect(ready).toBe(true);
    expect(fs.existsSync(address)).toBe(true);
    return { service, address };
  }

  it('service: version, check, dump and restore through a running criu service', async () => {
    const { service, address } = await startService('svc');
    const criu = new Criu({ mode: 'service', address });
    try {
      expect((await criu.version()).text).toBe('4.2.1');
      await criu.check();
      const idle = await startIdle('svc');
      const images = mkdir('svc-images');
      const dumped = await criu.dump({ imagesDir: images, pid: idle.pid });
      expect(dumped.restored).toBe(false);
      await idle.exited;
      const restored = await criu.restore({ imagesDir: images });
      pids.push(restored.pid);
      expect(restored.pid).toBe(idle.pid);
      await expectTicking(idle.ticks);
      // A service-side failure is a CriuRequestError like in swrk mode.
      await expect(criu.dump({ imagesDir: images, pid: 4194304 + 9 })).rejects.toMatchObject({ code: 'ESRCH' });
    } finally {
      await criu.close();
      service.kill('SIGKILL');
    }
  });

  it('service down: ENOENT without a socket, ECONNREFUSED with a stale one, as CriuConnectionError', async () => {
    const fds = openFds();
    const missing = new Criu({ mode: 'service', address: path.join(dir, 'nobody.sock') });
    const noSocket = await missing.version().catch((e: unknown) => e);
    expect(noSocket).toBeInstanceOf(CriuConnectionError);
    expect(noSocket).toMatchObject({ code: 'ENOENT', syscall: 'connect' });

    const { service, address } = await startService('stale');
    const exited = new Promise((resolve) => service.once('exit', resolve));
    service.kill('SIGKILL');
    await exited;
    const refused = await new Criu({ mode: 'service', address }).check().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(CriuConnectionError);
    expect(refused).toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect' });
    expect(newFds(fds)).toEqual([]);
  });

  it('pageServerChld + a dump sending its pages there + waitPid, then restore from the pages', async () => {
    const criu = new Criu({ criuPath: wrapper });
    const idle = await startIdle('ps-chld');
    const pagesDir = mkdir('ps-chld-pages');
    const imagesDir = mkdir('ps-chld-images');
    try {
      const server = await criu.pageServerChld({ imagesDir: pagesDir, ps: { address: '127.0.0.1', port: 0 } });
      expect(server.port).toBeGreaterThan(0);
      expect(pidAlive(server.pid)).toBe(true);
      await criu.dump({ imagesDir: imagesDir, pid: idle.pid, ps: { address: '127.0.0.1', port: server.port } });
      await idle.exited;
      const status = await server.waitPid();
      expect(status).toEqual({ status: 0, exitCode: 0, signal: null });
      expect(fs.readdirSync(pagesDir).some((name) => name.startsWith('pages-'))).toBe(true);
      expect(fs.readdirSync(imagesDir).some((name) => name.startsWith('pages-'))).toBe(false);
      for (const name of fs.readdirSync(pagesDir)) {
        if (name.endsWith('.img')) fs.copyFileSync(path.join(pagesDir, name), path.join(imagesDir, name));
      }
      const restored = await criu.restore({ imagesDir });
      pids.push(restored.pid);
      await expectTicking(idle.ticks);
      expect(childrenOf(process.pid)).toEqual([]);
    } finally {
      await criu.close();
    }
  });

  it('pageServer (daemon): receives the pages of one dump', async () => {
    const criu = new Criu({ criuPath: wrapper });
    try {
      const idle = await startIdle('ps-daemon');
      const pagesDir = mkdir('ps-daemon-pages');
      const daemon = await criu.pageServer({ imagesDir: pagesDir, ps: { address: '127.0.0.1', port: 0 } });
      expect(daemon.port).toBeGreaterThan(0);
      // CRIU 4.2.1 reports pid 0 for the daemon; the client leaves pid out rather than pass 0 on.
      if (daemon.pid !== undefined) pids.push(daemon.pid);
      await criu.dump({
        imagesDir: mkdir('ps-daemon-images'),
        pid: idle.pid,
        leaveRunning: true,
        ps: { address: '127.0.0.1', port: daemon.port },
      });
      expect(fs.readdirSync(pagesDir).some((name) => name.startsWith('pages-'))).toBe(true);
      await expectTicking(idle.ticks);
    } finally {
      await criu.close();
    }
  });
});
