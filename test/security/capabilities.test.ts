/**
 * EPERM guidance with real capability drops: test/fixtures/security-capabilities.js runs as root
 * under `setpriv --bounding-set=-CAP` (so exec gives it every capability but CAP), calls one
 * privileged operation, and reports the error. Each case checks the code, that the missing
 * capability is named (property and message), and that nothing was left behind (fd count, repair
 * mode, the connection still carries data, the dumped process still runs). The same fixture with
 * nothing dropped succeeds, so each assertion can fail.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  capabilityProblem,
  criuCapabilityProblem,
  effectiveCapabilityMask,
  missingCapabilities,
} from '../../lib/capabilities';
import { NftablesLock } from '../../lib';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'security-capabilities.js');
const CLI = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

interface FixtureResult {
  error: {
    name: string;
    code: string;
    syscall?: string;
    capability?: string;
    missingCapabilities?: string[];
    message: string;
  } | null;
  fdsBefore: number;
  fdsAfter: number;
  children: string[];
  inRepair?: boolean;
  stillWorks?: boolean;
  checkpointedState?: string;
  crashed?: string;
}

/** Runs the fixture as root without `drop` (e.g. 'net_admin' or 'sys_admin,checkpoint_restore'). */
function runWithout(drop: string | undefined, args: string[]): FixtureResult {
  const bounding =
    drop === undefined
      ? []
      : [
          `--bounding-set=${drop
            .split(',')
            .map((c) => `-${c}`)
            .join(',')}`,
        ];
  const out = execFileSync(
    'setpriv',
    ['--inh-caps=-all', '--ambient-caps=-all', ...bounding, process.execPath, FIXTURE, ...args],
    {
      encoding: 'utf8',
      timeout: 60000,
    },
  );
  const result = JSON.parse(out) as FixtureResult;
  expect(result.crashed).toBeUndefined();
  return result;
}

function expectMissing(result: FixtureResult, capability: string, name: string): void {
  expect(result.error).toMatchObject({ code: 'EPERM', name, capability });
  expect(result.error?.missingCapabilities).toEqual([capability]);
  expect(result.error?.message).toContain(`lacks ${capability}`);
  expect(result.fdsAfter).toBe(result.fdsBefore);
  expect(result.children).toEqual([]);
}

describe('capabilities: what this process has', () => {
  it('reads CapEff and names what an operation lacks', () => {
    const mask = effectiveCapabilityMask();
    expect(typeof mask).toBe('bigint');
    // The test runs as root with everything that matters here.
    expect(missingCapabilities(['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_ADMIN', 'CAP_SYS_PTRACE'])).toEqual([]);
    expect(criuCapabilityProblem()).toBeUndefined();
    // A mask without CAP_NET_ADMIN (bit 12) and CAP_SYS_ADMIN (bit 21).
    const without = (mask as bigint) & ~(1n << 12n) & ~(1n << 21n);
    expect(capabilityProblem('tcp-repair', without)).toMatchObject({
      capability: 'CAP_NET_ADMIN',
      missing: ['CAP_NET_ADMIN'],
    });
    expect(capabilityProblem('netns', without)).toMatchObject({
      capability: 'CAP_SYS_ADMIN',
      missing: ['CAP_SYS_ADMIN'],
    });
    expect(criuCapabilityProblem(without)).toMatchObject({
      capability: 'CAP_SYS_ADMIN',
      missing: ['CAP_SYS_ADMIN', 'CAP_NET_ADMIN'],
    });
    // Has them but was refused anyway (a user namespace...): the hint says so instead of guessing.
    expect(capabilityProblem('tcp-repair', mask).hint).toMatch(/this process has them/);
  });
});

describe('EPERM guidance with a capability dropped (setpriv --bounding-set)', () => {
  it('soccr.pause without CAP_NET_ADMIN: EPERM naming CAP_NET_ADMIN; not in repair mode, still carries data', () => {
    const control = runWithout(undefined, ['pause']);
    expect(control.error).toBeNull();
    const result = runWithout('net_admin', ['pause']);
    expectMissing(result, 'CAP_NET_ADMIN', 'SoccrError');
    expect(result.error?.syscall).toBe('libsoccr_pause');
    expect(result.error?.message).toMatch(/TCP_REPAIR/);
    expect(result.inRepair).toBe(false);
    expect(result.stillWorks).toBe(true);
  });

  it("checkpointConnection without CAP_NET_ADMIN: the 'nftables' and 'filter' locks say so; nothing changed", () => {
    for (const lock of ['nftables', 'filter']) {
      expect(runWithout(undefined, [lock]).error).toBeNull();
      const result = runWithout('net_admin', [lock]);
      expectMissing(result, 'CAP_NET_ADMIN', lock === 'nftables' ? 'NftablesLockError' : 'SoccrError');
      expect(result.error?.message).toContain(lock === 'nftables' ? 'nftables' : 'socket filter');
      expect(result.inRepair).toBe(false);
      expect(result.stillWorks).toBe(true);
    }
    const lock = runWithout('net_admin', ['lock']);
    expectMissing(lock, 'CAP_NET_ADMIN', 'NftablesLockError');
  });

  it('NftablesLock.add (netlink) without CAP_NET_ADMIN: EPERM naming CAP_NET_ADMIN, no fd left, set unchanged', async () => {
    const table = await NftablesLock.create();
    try {
      expect(runWithout(undefined, ['lock-add', table.table]).error).toBeNull();
      const elements = () =>
        execFileSync('nft', ['-j', 'list', 'set', 'inet', table.table, 'v4'], { encoding: 'utf8' }).match(/"concat"/g)
          ?.length ?? 0;
      expect(elements()).toBe(1); // the control's tuple
      const result = runWithout('net_admin', ['lock-add', table.table]);
      expectMissing(result, 'CAP_NET_ADMIN', 'NftablesLockError');
      expect(result.error?.syscall).toBe('nftables');
      expect(result.inRepair).toBe(false);
      expect(result.stillWorks).toBe(true);
      expect(elements()).toBe(1);
    } finally {
      await table.destroy();
    }
  });

  it('a socket in another network namespace without CAP_SYS_ADMIN: EPERM naming CAP_SYS_ADMIN, no fd left', () => {
    const name = `ncr-sec-${process.pid}-${Math.random().toString(16).slice(2, 8)}`;
    execFileSync('ip', ['netns', 'add', name]);
    try {
      const netns = `/run/netns/${name}`;
      expect(runWithout(undefined, ['netns', netns]).error).toBeNull();
      const result = runWithout('sys_admin', ['netns', netns]);
      expectMissing(result, 'CAP_SYS_ADMIN', 'SoccrError');
      expect(result.error?.syscall).toBe('setns');
    } finally {
      execFileSync('ip', ['netns', 'del', name]);
    }
  });

  it("restoring a CLOSE_WAIT connection without CAP_NET_RAW (the peer's FIN is rebuilt): EPERM naming CAP_NET_RAW, no fd left", () => {
    const control = runWithout(undefined, ['fin']);
    expect(control.checkpointedState).toBe('CLOSE_WAIT');
    expect(control.error).toBeNull();
    const result = runWithout('net_raw', ['fin']);
    expect(result.checkpointedState).toBe('CLOSE_WAIT');
    expectMissing(result, 'CAP_NET_RAW', 'SoccrError');
    expect(result.error?.message).toMatch(/FIN/);
  });

  describe('CRIU', () => {
    let dir: string;
    let target: ChildProcess;

    beforeAll(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-caps-'));
      // Its own session, no pipes to us: dumpable as a tree of its own.
      target = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    });

    afterAll(() => {
      target?.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('Criu.dump without CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE: EPERM naming CAP_SYS_ADMIN; the process keeps running', () => {
      const images = path.join(dir, 'denied');
      fs.mkdirSync(images, { mode: 0o700 });
      const result = runWithout('sys_admin,checkpoint_restore', ['dump', String(target.pid), images]);
      expect(result.error).toMatchObject({ code: 'EPERM', name: 'CriuRequestError', capability: 'CAP_SYS_ADMIN' });
      expect(result.error?.missingCapabilities).toEqual(['CAP_SYS_ADMIN']);
      expect(result.error?.message).toMatch(
        /CRIU .*needs CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_ADMIN; this process lacks CAP_SYS_ADMIN/,
      );
      expect(result.fdsAfter).toBe(result.fdsBefore);
      expect(result.children).toEqual([]); // swrk reaped
      expect(target.exitCode).toBeNull();
      expect(() => process.kill(target.pid as number, 0)).not.toThrow();

      const ptrace = runWithout('sys_ptrace', ['dump', String(target.pid), images]);
      expect(ptrace.error).toMatchObject({ code: 'EPERM', capability: 'CAP_SYS_PTRACE' });
      expect(() => process.kill(target.pid as number, 0)).not.toThrow();

      // Control: with every capability the same dump works.
      const ok = path.join(dir, 'ok');
      fs.mkdirSync(ok, { mode: 0o700 });
      expect(runWithout(undefined, ['dump', String(target.pid), ok]).error).toBeNull();
      expect(fs.existsSync(path.join(ok, 'inventory.img'))).toBe(true);
    });

    it('node-criu dump as root without CAP_SYS_ADMIN: exit 3, code EPERM, the capability named, nothing created', () => {
      const images = path.join(dir, 'cli-never');
      const run = spawnSync(
        'setpriv',
        [
          '--inh-caps=-all',
          '--ambient-caps=-all',
          '--bounding-set=-sys_admin',
          process.execPath,
          CLI,
          'dump',
          '--pid',
          String(target.pid),
          '--images-dir',
          images,
          '--json',
        ],
        { encoding: 'utf8', timeout: 60000 },
      );
      expect(run.status).toBe(3);
      const doc = JSON.parse(run.stdout.trim());
      expect(doc).toMatchObject({
        ok: false,
        error: { code: 'EPERM', exitCode: 3, capability: 'CAP_SYS_ADMIN', missingCapabilities: ['CAP_SYS_ADMIN'] },
      });
      expect(run.stderr).toContain('CAP_SYS_ADMIN');
      expect(fs.existsSync(images)).toBe(false);
    });
  });
});
