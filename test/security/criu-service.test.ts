/**
 * startCriuService against the real CRIU 4.2.1: a Criu client in service mode works through it;
 * it listens only on the socket asked for, with the mode asked for (0600 by default); another
 * uid cannot connect with the default mode (EACCES) but can with 0666 (the control); the parent
 * directory it creates is 0700; close() leaves no process and no socket file; failures to start
 * leave nothing either.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Criu, startCriuService, type CriuService } from '../../lib';
import { SeqpacketTransport } from '../../lib/transport';
import { readableCopy } from '../helpers/other-uid';

const DIST = path.join(__dirname, '..', '..', 'dist');
const CLI = path.join(DIST, 'cli', 'main.js');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Processes in the service's process group (it and the CRIUs it forked per connection). */
function groupMembers(pgid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) === pgid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Tries to connect to `address` as uid/gid 65534 with no groups; returns the error code or 'connected'. */
function connectAsNobody(address: string): string {
  // uid 65534 may not be able to read the checkout (a clone under /root): it loads a copy.
  const copy = readableCopy();
  try {
    const script = `
      const { SeqpacketTransport } = require(${JSON.stringify(copy.at('dist'))});
      try { SeqpacketTransport.connect(${JSON.stringify(address)}).close(); process.stdout.write('connected'); }
      catch (e) { process.stdout.write(String(e.code)); }`;
    const run = spawnSync(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script],
      { encoding: 'utf8', timeout: 30000, cwd: copy.root },
    );
    expect(run.stderr).toBe('');
    return run.stdout;
  } finally {
    copy.dispose();
  }
}

describe('startCriuService', () => {
  let dir: string;
  const started: CriuService[] = [];

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-svc-'));
    // Searchable by other users, so only the socket's own mode decides who may connect.
    fs.chmodSync(dir, 0o755);
  });

  afterAll(async () => {
    for (const service of started) await service.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves a Criu client; the socket is 0600; another uid gets EACCES; close() leaves nothing', async () => {
    const address = path.join(dir, 'svc.sock');
    const service = await startCriuService({ address });
    started.push(service);
    expect(service.address).toBe(address);
    expect(fs.lstatSync(address).isSocket()).toBe(true);
    expect(fs.statSync(address).mode & 0o777).toBe(0o600);
    expect(alive(service.pid)).toBe(true);

    const criu = new Criu({ mode: 'service', address });
    try {
      expect((await criu.version()).text).toBe('4.2.1');
      await criu.check();
      expect(await criu.featureCheck({ lazyPages: true })).toHaveProperty('lazyPages');
    } finally {
      await criu.close();
    }
    expect(connectAsNobody(address)).toBe('EACCES');

    await service.close();
    await service.close(); // idempotent
    expect(service.closed).toBe(true);
    expect(alive(service.pid)).toBe(false);
    expect(groupMembers(service.pid)).toEqual([]);
    expect(fs.existsSync(address)).toBe(false);
  });

  it('socketMode is applied (0666 lets another uid connect: the control for the EACCES above)', async () => {
    const address = path.join(dir, 'open.sock');
    const service = await startCriuService({ address, socketMode: 0o666 });
    started.push(service);
    try {
      expect(fs.statSync(address).mode & 0o777).toBe(0o666);
      expect(connectAsNobody(address)).toBe('connected');
    } finally {
      await service.close();
    }
    expect(fs.existsSync(address)).toBe(false);
  });

  it('creates a missing parent directory 0700 and listens nowhere else', async () => {
    const parent = path.join(dir, 'new', 'deeper');
    const address = path.join(parent, 'criu.sock');
    const previousUmask = process.umask(0); // the 0700 must not depend on the caller's umask
    let service: CriuService;
    try {
      service = await startCriuService({ address });
    } finally {
      process.umask(previousUmask);
    }
    started.push(service);
    try {
      expect(fs.statSync(parent).mode & 0o777).toBe(0o700);
      expect(fs.statSync(path.dirname(parent)).mode & 0o777).toBe(0o700);
      expect(fs.readdirSync(parent)).toEqual(['criu.sock']);
      // Every socket the service holds is a unix socket, and the only one with a path is ours.
      const inodes = fs
        .readdirSync(`/proc/${service.pid}/fd`)
        .map((fd) => /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${service.pid}/fd/${fd}`))?.[1])
        .filter((inode): inode is string => inode !== undefined);
      const unix = new Map(
        fs
          .readFileSync('/proc/net/unix', 'utf8')
          .split('\n')
          .slice(1)
          .map((line) => line.trim().split(/\s+/))
          .filter((fields) => fields.length >= 7)
          .map((fields) => [fields[6], fields[7] ?? ''] as const),
      );
      expect(inodes.length).toBeGreaterThan(0);
      for (const inode of inodes) expect(unix.has(inode)).toBe(true);
      expect(inodes.map((inode) => unix.get(inode)).filter(Boolean)).toEqual([address]);
    } finally {
      await service.close();
    }
  });

  it('node-criu service: listens on --address (with metacharacters, literally) until SIGTERM, then leaves nothing', async () => {
    // Run from `dir`: a shell would create `P` there.
    const address = path.join(dir, '`touch P`;$(touch P)|P.sock');
    const child = spawn(process.execPath, [CLI, 'service', '--address', address, '--socket-mode', '0640', '--json'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      for (let i = 0; i < 3000 && !stdout.includes('\n') && child.exitCode === null; i++)
        await new Promise((resolve) => setTimeout(resolve, 10));
      const doc = JSON.parse(stdout.trim());
      expect(doc).toMatchObject({ ok: true, command: 'service', address, socketMode: '0640' });
      expect(fs.statSync(address).mode & 0o777).toBe(0o640);
      const criu = new Criu({ mode: 'service', address });
      try {
        expect((await criu.version()).text).toBe('4.2.1');
      } finally {
        await criu.close();
      }
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(stderr).toContain('stopping criu service');
      expect(alive(doc.pid)).toBe(false);
      // The worker criu forked for our connection may still be on its way out, or an orphaned
      // zombie until init reaps it (every ~2 s here): the group must be empty within 5 s.
      for (let i = 0; i < 500 && groupMembers(doc.pid).length > 0; i++)
        await new Promise((resolve) => setTimeout(resolve, 10));
      expect(groupMembers(doc.pid)).toEqual([]);
      expect(fs.existsSync(address)).toBe(false);
      expect(fs.existsSync(path.join(dir, 'P'))).toBe(false);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('an existing address is refused and left alone; a CRIU that exits at once and an abort leave nothing', async () => {
    const existing = path.join(dir, 'taken.sock');
    fs.writeFileSync(existing, 'not ours');
    await expect(startCriuService({ address: existing })).rejects.toMatchObject({
      code: 'ERR_CRIU_SERVICE_ADDRESS_IN_USE',
    });
    expect(fs.readFileSync(existing, 'utf8')).toBe('not ours');

    const fds = fs.readdirSync('/proc/self/fd').length;
    const failing = path.join(dir, 'false.sock');
    await expect(startCriuService({ address: failing, criuPath: '/bin/false' })).rejects.toMatchObject({
      code: 'ERR_CRIU_EXITED',
    });
    expect(fs.existsSync(failing)).toBe(false);

    const aborted = path.join(dir, 'aborted.sock');
    const controller = new AbortController();
    const starting = startCriuService({ address: aborted, signal: controller.signal });
    controller.abort();
    await expect(starting).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(fs.existsSync(aborted)).toBe(false);
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fds);
  });

  it('a service socket served by uid 65534 is refused (SO_PEERCRED): ERR_CRIU_UNTRUSTED_SERVICE, nothing sent, nothing left', async () => {
    const home = fs.mkdtempSync(path.join(dir, 'fake-'));
    fs.chownSync(home, 65534, 65534);
    const address = path.join(home, 'fake.sock');
    const received = path.join(home, 'fake.received');
    // A SEQPACKET listener only python reaches without an addon; it records what it is sent.
    const script = [
      'import os, socket, sys',
      'l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)',
      `l.bind(${JSON.stringify(address)})`,
      `os.chmod(${JSON.stringify(address)}, 0o666)`,
      'l.listen(8)',
      'sys.stdout.write("ready\\n"); sys.stdout.flush()',
      'while True:',
      '    c, _ = l.accept()',
      '    data = c.recv(65536)',
      `    open(${JSON.stringify(received)}, "ab").write(data)`,
    ].join('\n');
    const fake = spawn(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', script],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        cwd: dir,
      },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        fake.stdout.once('data', () => resolve());
        fake.once('exit', (code) => reject(new Error(`fake service exited with ${code}`)));
      });
      const fds = fs.readdirSync('/proc/self/fd').length;
      expect(() => SeqpacketTransport.connect(address)).toThrow(
        expect.objectContaining({ code: 'ERR_TRANSPORT_UNTRUSTED_PEER' }) as unknown as Error,
      );
      const criu = new Criu({ mode: 'service', address });
      try {
        await expect(criu.check({ timeoutMs: 5000 })).rejects.toMatchObject({ code: 'ERR_CRIU_UNTRUSTED_SERVICE' });
      } finally {
        await criu.close();
      }
      expect(fs.readdirSync('/proc/self/fd').length).toBe(fds);
      // What the client would have sent (a criu_req) never reached the stranger.
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(fs.existsSync(received) ? fs.readFileSync(received).length : 0).toBe(0);
    } finally {
      fake.kill('SIGKILL');
      await new Promise((resolve) =>
        fake.exitCode !== null || fake.signalCode !== null ? resolve(undefined) : fake.once('exit', resolve),
      );
      fs.rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('the handover channel on a unix path (lib/migration/handover-listen.ts, handover-connect.ts)', () => {
  it('listens 0600 (another uid gets EACCES), refuses abstract (NUL) and over-long paths', async () => {
    const { checkListenSpec, listenForSource } =
      require('../../lib/migration/handover-listen') as typeof import('../../lib/migration/handover-listen');
    const { checkChannelSpec, openChannel } =
      require('../../lib/migration/handover-connect') as typeof import('../../lib/migration/handover-connect');
    const { MessageType } =
      require('../../lib/migration/handover-messages') as typeof import('../../lib/migration/handover-messages');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-hc-'));
    fs.chmodSync(dir, 0o755);
    const signal = AbortSignal.timeout(20000);
    try {
      const readHello = async () => ({
        method: 'repair' as const,
        count: 0,
        addressMoves: false,
        lock: 'filter' as const,
        pid: 0,
      });
      expect(() => checkListenSpec({ path: '\0ncr-abstract' }, undefined)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
      );
      expect(() => checkChannelSpec({ path: '\0ncr-abstract' }, 'to')).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
      );
      expect(() => checkChannelSpec({ path: `/${'p'.repeat(120)}` }, 'to')).toThrow(
        expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }),
      );
      const address = path.join(dir, 'handover.sock');
      let listening!: () => void;
      const ready = new Promise<void>((resolve) => (listening = resolve));
      const accepting = listenForSource({ path: address }, undefined, {
        signal,
        onListening: () => listening(),
        readHello: async (channel, s) => (await channel.expect([MessageType.HELLO], s), readHello()),
      });
      await ready;
      expect(fs.statSync(address).mode & 0o777).toBe(0o600);
      const script = `require('net').connect(${JSON.stringify(address)}).on('error', (e) => process.stdout.write(e.code)).on('connect', () => process.stdout.write('connected'))`;
      const nobody = spawnSync(
        'setpriv',
        ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script],
        { encoding: 'utf8', timeout: 30000, cwd: os.tmpdir() },
      );
      expect(nobody.stdout).toBe('EACCES');
      const ours = await openChannel({ path: address }, signal);
      await ours.send(MessageType.HELLO, 0, Buffer.from('{}'));
      const accepted = await accepting;
      ours.close();
      accepted.channel.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
