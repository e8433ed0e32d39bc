/**
 * Sweeping stale process locks (soccr.sweepStaleLocks, and a new process's first default-lock
 * checkpoint): only tables named `node_criu_<pid>_<starttime>_<pidns><timens>_<random>` (inet)
 * whose creator, in OUR pid and time namespaces, no longer exists, is a zombie, or has another
 * start time (its pid was reused) are deleted. Live processes' tables, NftablesLock.create()
 * tables, other namespaces' tables, CRIU's and other programs' tables are never touched.
 *
 * Tables are made by hand with the process-lock grammar (so dead, live, reused and zombie
 * creators can be arranged) inside a namespace this test creates.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { NftablesLock, soccr } from '../../lib';
import type { SweptLock } from '../../lib';
import { NetnsLab } from '../helpers/netns';
import { newFds, openFds } from '../helpers/fds';

const FIRST_CHECKPOINT = path.join(__dirname, '..', 'fixtures', 'exit-paused', 'first-checkpoint.js');

/** State and start time (fields 3 and 22) of /proc/<pid>/stat. */
function stat(pid: number): { state: string; startTime: string } {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0], startTime: fields[19] };
}

function nsHex(kind: 'pid' | 'time'): string {
  const inode = /\[([0-9]+)\]/.exec(fs.readlinkSync(`/proc/self/ns/${kind}`))?.[1];
  return Number(inode).toString(16).padStart(8, '0');
}

const OUR_NAMESPACES = nsHex('pid') + nsHex('time');

function processLockName(pid: number, startTime: string, namespaces = OUR_NAMESPACES): string {
  return `node_criu_${pid}_${startTime}_${namespaces}_${randomBytes(4).toString('hex')}`;
}

/** A pid that existed a moment ago and exists no more (its process was reaped). */
function deadPid(): number {
  const result = spawnSync('true');
  expect(result.status).toBe(0);
  expect(fs.existsSync(`/proc/${result.pid}`)).toBe(false);
  return result.pid as number;
}

function byTable(locks: SweptLock[]): SweptLock[] {
  return [...locks].sort((a, b) => a.table.localeCompare(b.table));
}

describe('sweepStaleLocks', () => {
  const lab = new NetnsLab();
  let ns: string;
  const children: ChildProcess[] = [];

  const tables = (family = 'inet'): string[] =>
    lab
      .exec(ns, 'nft', ['list', 'tables', family])
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[2])
      .filter((name): name is string => name !== undefined)
      .sort();
  const addTable = (name: string, family = 'inet'): string => {
    lab.exec(ns, 'nft', ['add', 'table', family, name]);
    return name;
  };
  const sweep = () => soccr.sweepStaleLocks({ netns: lab.path(ns) });

  /** A live process (sleep) to name tables after; killed in afterEach. */
  async function liveChild(): Promise<ChildProcess> {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    children.push(child);
    await new Promise((resolve, reject) => child.once('spawn', resolve).once('error', reject));
    return child;
  }

  beforeEach(() => {
    ns = lab.add(`sweep${randomBytes(2).toString('hex')}`);
  });

  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }
    }
    lab.destroy(); // deleting the namespace deletes its tables
  });

  it("never sweeps a live process's table; sweeps it once that process is gone (reason 'exited')", async () => {
    const child = await liveChild();
    const pid = child.pid as number;
    const childTable = addTable(processLockName(pid, stat(pid).startTime));
    const ownTable = addTable(processLockName(process.pid, stat(process.pid).startTime));

    // Negative control: both creators live, with the start times their names record.
    expect(await sweep()).toEqual([]);
    expect(tables()).toEqual([childTable, ownTable].sort());

    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited; // reaped by Node: /proc/<pid> is gone
    expect(await sweep()).toEqual([{ table: childTable, pid, reason: 'exited' }]);
    expect(tables()).toEqual([ownTable]);
    // Nothing more to do: a second sweep deletes nothing.
    expect(await sweep()).toEqual([]);
  });

  it("sweeps a table named with a live pid but another start time (pid reuse, reason 'pid-reused')", async () => {
    const child = await liveChild();
    const pid = child.pid as number;
    const startTime = stat(pid).startTime;
    const live = addTable(processLockName(pid, startTime));
    const reusedChild = addTable(processLockName(pid, String(BigInt(startTime) - 1n)));
    const reusedOwn = addTable(processLockName(process.pid, '1'));

    expect(byTable(await sweep())).toEqual(
      byTable([
        { table: reusedChild, pid, reason: 'pid-reused' },
        { table: reusedOwn, pid: process.pid, reason: 'pid-reused' },
      ]),
    );
    expect(tables()).toEqual([live]);
  });

  it("sweeps a zombie creator's table (it can never delete it) as 'exited'", async () => {
    // perl forks a child that exits at once and never waits for it: a zombie until perl ends.
    const holder = spawn('perl', ['-e', '$| = 1; my $pid = fork(); exit 0 if $pid == 0; print "$pid\\n"; sleep 30;'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    children.push(holder);
    const zombie = await new Promise<number>((resolve) =>
      holder.stdout?.setEncoding('utf8').once('data', (line: string) => resolve(Number(line.trim()))),
    );
    let state = '';
    for (let i = 0; i < 500 && state !== 'Z'; i++) {
      state = stat(zombie).state;
      if (state !== 'Z') await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(state).toBe('Z');
    const table = addTable(processLockName(zombie, stat(zombie).startTime));
    expect(await sweep()).toEqual([{ table, pid: zombie, reason: 'exited' }]);
    expect(tables()).toEqual([]);
  });

  it("never sweeps NftablesLock.create() tables, other namespaces' tables, CRIU's or other programs' tables", async () => {
    const dead = deadPid();
    const explicitLock = await NftablesLock.create({ netns: lab.path(ns) });
    try {
      const kept = [
        explicitLock.table,
        // NftablesLock.create's form for a dead pid: caller-owned lifetime, never swept.
        addTable(`node_criu_${dead}_${randomBytes(4).toString('hex')}`),
        // A dead pid in another pid namespace, or in another time namespace: not verifiable here.
        addTable(processLockName(dead, '12345', `ffffff00${nsHex('time')}`)),
        addTable(processLockName(dead, '12345', `${nsHex('pid')}ffffff00`)),
        // Not quite the grammar.
        addTable(`${processLockName(dead, '12345')}_x`),
        addTable(`node_criu_${dead}_12345_${OUR_NAMESPACES}_ABCDEF01`),
        addTable('CRIU-1234'),
        addTable('filter'),
      ].sort();
      // The process-lock grammar in another family (we only ever make inet tables).
      const ipTable = addTable(processLockName(dead, '12345'), 'ip');
      const stale = addTable(processLockName(dead, '12345'));

      expect(await sweep()).toEqual([{ table: stale, pid: dead, reason: 'exited' }]);
      expect(tables()).toEqual(kept);
      expect(tables('ip')).toEqual([ipTable]);
    } finally {
      await explicitLock.destroy();
    }
  });

  it("a new process's first default-lock checkpoint in a namespace sweeps that namespace", async () => {
    const dead = deadPid();
    addTable(processLockName(dead, '12345'));
    const explicit = addTable(`node_criu_${dead}_${randomBytes(4).toString('hex')}`);
    const child = spawn('nsenter', [`--net=${lab.path(ns)}`, '--', process.execPath, FIRST_CHECKPOINT], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(child);
    const exit = await new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    expect(exit).toEqual({ code: 0, signal: null });
    // The stale table is gone; the explicit one stays; the child's own lock went at its exit.
    expect(tables()).toEqual([explicit]);
  });

  it('rejects bad arguments with typed errors, leaving nothing behind', async () => {
    const fds = openFds();
    const before = tables();
    await expect(soccr.sweepStaleLocks(null as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(soccr.sweepStaleLocks([] as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(soccr.sweepStaleLocks({ netns: 'relative/path' })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    await expect(soccr.sweepStaleLocks({ netns: 7 } as never)).rejects.toMatchObject({
      code: expect.stringMatching(/^ERR_INVALID_ARG_/),
    });
    await expect(soccr.sweepStaleLocks({ netns: lab.path(ns), force: true } as never)).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    // The internal table-creating static is reachable from outside: its name is checked too.
    await expect(NftablesLock.createTable('x; flush ruleset', lab.path(ns))).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    // A namespace path that does not exist: nsenter fails, a typed NftablesLockError.
    await expect(soccr.sweepStaleLocks({ netns: `/run/netns/${lab.prefix}-missing` })).rejects.toMatchObject({
      name: 'NftablesLockError',
    });
    expect(tables()).toEqual(before);
    expect(newFds(fds)).toEqual([]);
  });
});
