/**
 * CRIU killed mid-dump after its per-connection lock is in place (at post-dump), for the
 * servers Node programs actually run: one listening on `::` (`server.listen(port)`: its IPv4
 * clients are IPv4-mapped IPv6 on the socket, plain IPv4 in CRIU's conns4 set), one on ::1 (CRIU's
 * conns6), one on 127.0.0.1; a dump with freezeCgroup (CRIU froze the cgroup); and a `criu
 * service` worker killed instead of a swrk. Each ends with no CRIU table, no socket of the server
 * in repair mode, and the client's streams byte-exact both ways with no RST.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu, startCriuService, type CriuNotifyHandlers, type CriuRecovery, type CriuService } from '../../lib';
import { childrenOf } from '../criu/helpers';
import { freezerCgroupWith, socketsInRepair } from '../fixtures/fault-helpers';
import { FaultLab, TCP, pidAlive, sleep, type Pair } from './criu-fault-lab';

interface Failure {
  name?: string;
  code?: string;
  recovery?: CriuRecovery;
}

/**
 * The last notification of a dump: every connection is locked (CRIU's conns4/conns6 sets) and in
 * repair mode, and the task still lives.
 */
const STAGE = 'post-dump';

describe('dump recovery after CRIU was killed with the lock in place (CRIU 4.2.1, streaming server)', () => {
  let lab: FaultLab;
  beforeAll(() => {
    lab = new FaultLab();
  });
  afterAll(async () => {
    await lab?.close();
  });
  beforeEach(() => lab.mark());
  afterEach(async () => {
    await lab.killAll();
  });

  /**
   * Handlers that SIGKILL the processes `victims()` names at STAGE, the server SIGSTOPped first
   * (as the client does before its own kill): CRIU's death would otherwise let it run with its
   * sockets in repair mode, and a write failing there closes the connection, which no repair can
   * save (criu-kill.test.ts covers that case).
   */
  function killAt(serverPid: number, victims: () => number[]): { handlers: CriuNotifyHandlers; killed: () => number } {
    let killed = 0;
    return {
      killed: () => killed,
      handlers: {
        default: async (event) => {
          if (event.script !== STAGE) return;
          process.kill(serverPid, 'SIGSTOP');
          const pids = victims();
          for (const pid of pids) process.kill(pid, 'SIGKILL');
          for (let i = 0; i < 500 && pids.some((pid) => pidAlive(pid)); i++) await sleep(5);
          killed = pids.length;
        },
      },
    };
  }

  /** What every case ends with: repaired, nothing in repair mode, both streams exact. */
  async function expectRepaired(pair: Pair, recovery: CriuRecovery | undefined, resumed = 1): Promise<void> {
    expect(recovery).toMatchObject({ request: 'DUMP', taskAlive: true, socketsResumed: resumed, problems: [] });
    expect(recovery?.lockTablesRemoved).toHaveLength(resumed);
    expect(lab.netns.nftTables()).not.toMatch(/CRIU/);
    expect(socketsInRepair(pair.serverPid)).toBe(0);
    expect(pidAlive(pair.serverPid)).toBe(true);
    expect(fs.readFileSync(`/proc/${pair.serverPid}/status`, 'utf8')).not.toMatch(/^State:\s+T/m);
    await pair.expectExact();
  }

  test.each([
    ["'::' (IPv4 client, mapped)", '::', '127.0.0.1'],
    ['::1 (IPv6)', '::1', '::1'],
    ['127.0.0.1 (IPv4)', '127.0.0.1', '127.0.0.1'],
  ])('server on %s, swrk killed: lock removed, repair off, nothing lost', async (_name, listen, connect) => {
    const pair = await lab.startPair({ listen, connect });
    const plan = killAt(pair.serverPid, () => lab.swrkPids());
    const error = (await lab.criu
      .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, plan.handlers)
      .catch((e: unknown) => e)) as Failure;
    expect(plan.killed()).toBe(1);
    expect(error).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_EXITED' });
    await expectRepaired(pair, error.recovery);
    lab.expectNothingLeft();
  });

  test('freezeCgroup: swrk killed while CRIU holds the cgroup frozen; thawed, the server runs again', async () => {
    const pair = await lab.startPair({ listen: '::', connect: '127.0.0.1' });
    const cgroup = freezerCgroupWith(pair.serverPid, 'dump');
    // CRIU freezes the cgroup, seizes its tasks and thaws it again within milliseconds. strace
    // delays each of CRIU's writes to freezer.state, so the frozen state lasts long enough for
    // the kill to land in it on any machine.
    const wrapper = path.join(lab.dir, 'criu-slow-freezer');
    fs.writeFileSync(
      wrapper,
      `#!/bin/sh\nexec strace -qq -o /dev/null -e trace=write -e inject=write:delay_enter=1500000 ` +
        `-P ${cgroup.path}/freezer.state ${lab.netns.criuWrapper(lab.dir)} "$@"\n`,
      { mode: 0o755 },
    );
    const criu = new Criu({ criuPath: wrapper });
    try {
      const dump = criu
        .dump({ imagesDir: pair.images, pid: pair.serverPid, freezeCgroup: cgroup.path, ...TCP })
        .catch((e: unknown) => e);
      let state = cgroup.state();
      for (const until = Date.now() + 30_000; state !== 'FROZEN' && Date.now() < until;) {
        await sleep(5);
        state = cgroup.state();
      }
      // strace is our child; CRIU (behind nsenter's exec) is strace's.
      const victims = lab.swrkPids().flatMap((tracer) => childrenOf(tracer));
      for (const pid of victims) process.kill(pid, 'SIGKILL');
      expect(state).toBe('FROZEN');
      expect(victims).toHaveLength(1);
      const error = (await dump) as Failure;
      expect(error).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_EXITED' });
      expect(cgroup.state()).toBe('THAWED');
      // Killed before CRIU locked anything: nothing else to undo.
      await expectRepaired(pair, error.recovery, 0);
      lab.expectNothingLeft();
    } finally {
      await criu.close();
      await lab.killAll();
      cgroup.remove();
    }
  });

  test('criu service: the worker killed mid-dump; the client repairs after the connection ends', async () => {
    const address = path.join(lab.dir, 'service.sock');
    const service: CriuService = await startCriuService({ address, criuPath: lab.netns.criuWrapper(lab.dir) });
    const criu = new Criu({ mode: 'service', address });
    try {
      const pair = await lab.startPair({ listen: '::', connect: '127.0.0.1' });
      const plan = killAt(pair.serverPid, () => childrenOf(service.pid));
      const error = (await criu
        .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, plan.handlers)
        .catch((e: unknown) => e)) as Failure;
      expect(plan.killed()).toBe(1);
      expect(error).toMatchObject({ name: 'CriuConnectionError' });
      await expectRepaired(pair, error.recovery);
    } finally {
      await criu.close();
      await service.close();
    }
    lab.expectNothingLeft();
  });
});
